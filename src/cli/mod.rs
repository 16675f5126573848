//! The `nm-vpn-netns` command's interface, self-contained so that man pages and completions can
//! be generated from it.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "nm-vpn-netns",
    version,
    about = "Inspect and use VPNs that NetworkManager isolated in network namespaces"
)]
pub struct Cli {}
