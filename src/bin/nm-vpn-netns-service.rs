//! NetworkManager VPN plugin shim: owns the bus name NM gives it and proxies the stock
//! nm-openvpn service, isolating connections that ask for it.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "NetworkManager VPN plugin that isolates OpenVPN connections in a network namespace"
)]
struct Args {
    /// D-Bus name to own, as NetworkManager passes it (`<service>.Connection_N`).
    #[arg(long)]
    bus_name: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    nm_vpn_netns::logging::init("nm-vpn-netns-service");
    anyhow::bail!("the plugin shim is not implemented yet")
}
