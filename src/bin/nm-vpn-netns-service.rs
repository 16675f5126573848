//! NetworkManager VPN plugin shim: owns the bus name NM gives it and proxies the stock
//! nm-openvpn service, isolating connections that ask for it.

#![deny(clippy::too_many_lines)]

use anyhow::Context;
use clap::Parser;
use nm_vpn_netns::report::chain;
use nm_vpn_netns::shim::{self, Args};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    nm_vpn_netns::logging::init("nm-vpn-netns-service");
    let options = args.options().map_err(flat)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(shim::run(options)).map_err(flat)?;
    Ok(())
}

/// The error with its causes on one line, as everywhere the shim reports one.
fn flat(e: shim::ShimError) -> anyhow::Error {
    anyhow::anyhow!(chain(&e))
}
