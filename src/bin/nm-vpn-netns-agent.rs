//! Privileged agent: creates namespaces and configures VPN links inside them on behalf of the shim.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Privileged helper of nm-vpn-netns; started by D-Bus activation"
)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    nm_vpn_netns::logging::init("nm-vpn-netns-agent");
    anyhow::bail!("the agent is not implemented yet")
}
