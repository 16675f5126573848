//! Command-line tool for users and admins of nm-vpn-netns.

#![deny(clippy::too_many_lines)]

use clap::Parser;
use nm_vpn_netns::cli::Cli;

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
