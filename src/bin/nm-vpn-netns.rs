//! Command-line tool for users and admins of nm-vpn-netns.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Inspect and use VPNs that NetworkManager isolated in network namespaces"
)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    Ok(())
}
