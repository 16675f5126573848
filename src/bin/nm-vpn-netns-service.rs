//! NetworkManager VPN plugin shim: owns the bus name NM gives it and proxies the stock
//! nm-openvpn service, isolating connections that ask for it.

#![deny(clippy::too_many_lines)]

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use nm_vpn_netns::report::chain;
use nm_vpn_netns::shim;

#[derive(Parser)]
#[command(
    version,
    about = "NetworkManager VPN plugin that isolates OpenVPN connections in a network namespace"
)]
struct Args {
    /// D-Bus name to own, as NetworkManager passes it (`<service>.Connection_N`).
    #[arg(long, default_value = shim::SERVICE)]
    bus_name: String,
    /// The stock nm-openvpn service to run; by default `program=` of the diverted stock
    /// `.name` file, or Debian's path. (`--inner-program` is its old name.)
    #[arg(long, alias = "inner-program")]
    stock_program: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    nm_vpn_netns::logging::init("nm-vpn-netns-service");
    let program = match args.stock_program {
        Some(program) => program,
        None => shim::stock_program(Path::new(shim::STOCK_NAME_FILE)).map_err(flat)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(shim::run(shim::Options {
            bus_name: args.bus_name,
            program,
        }))
        .map_err(flat)?;
    Ok(())
}

/// The error with its causes on one line, as everywhere the shim reports one.
fn flat(e: shim::ShimError) -> anyhow::Error {
    anyhow::anyhow!(chain(&e))
}
