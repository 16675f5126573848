//! Privileged agent: creates namespaces and configures VPN links inside them on behalf of the
//! plugin, which NetworkManager's sandbox keeps from doing so itself. Started by D-Bus activation.

#![deny(clippy::too_many_lines)]

use anyhow::Context;
use clap::Parser;
use log::{info, warn};
use nm_vpn_netns::agent::executor::{Executor, Paths};
use nm_vpn_netns::agent::lifecycle::{self, Exe};
use nm_vpn_netns::agent::linux::RealSys;
use nm_vpn_netns::agent::{Agent, Args};
use nm_vpn_netns::contract::BUS_NAME;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    nm_vpn_netns::logging::init("nm-vpn-netns-agent");
    let executor =
        Executor::new(RealSys::new()?, Paths::default()).context("cannot start the executor")?;
    let mut agent = Agent::new(executor).context("cannot start the executor thread")?;
    agent.watch_links(nm_vpn_netns::agent::linux::link_watch);
    // Without it the agent just never exits by itself, as before.
    let exe = Exe::current()
        .inspect_err(|e| warn!("cannot tell whether this binary gets replaced: {e}"))
        .ok();
    let builder = match &args.address {
        Some(address) => zbus::connection::Builder::address(address.as_str()),
        None => zbus::connection::Builder::system(),
    };
    let conn = builder.build().await.context("cannot connect to the bus")?;
    lifecycle::run(conn, agent, exe)
        .await
        .with_context(|| format!("cannot serve {BUS_NAME} on the bus"))?;
    info!("exiting");
    Ok(())
}
