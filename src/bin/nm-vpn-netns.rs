//! Command-line tool for users and admins of nm-vpn-netns.

use clap::Parser;
use nm_vpn_netns::cli::Cli;

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
