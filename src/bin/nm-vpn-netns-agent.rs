//! Privileged agent: creates namespaces and configures VPN links inside them on behalf of the
//! plugin, which NetworkManager's sandbox keeps from doing so itself. Started by D-Bus activation.

#![deny(clippy::too_many_lines)]

use anyhow::Context;
use clap::Parser;
use log::info;
use nm_vpn_netns::agent::executor::{Executor, Paths};
use nm_vpn_netns::agent::linux::RealSys;
use nm_vpn_netns::agent::{self, Agent, Args};
use nm_vpn_netns::contract::{BUS_NAME, OBJECT_PATH};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    nm_vpn_netns::logging::init("nm-vpn-netns-agent");
    let executor =
        Executor::new(RealSys::new()?, Paths::default()).context("cannot start the executor")?;
    let agent = Agent::new(executor).context("cannot start the executor thread")?;
    let builder = match &args.address {
        Some(address) => zbus::connection::Builder::address(address.as_str()),
        None => zbus::connection::Builder::system(),
    };
    let conn = builder
        .serve_at(OBJECT_PATH, agent)
        .name(BUS_NAME)
        .build()
        .await
        .with_context(|| format!("cannot own {BUS_NAME} on the bus"))?;
    info!("serving {BUS_NAME} at {OBJECT_PATH}");
    agent::watch_callers(conn).await?;
    Ok(())
}
