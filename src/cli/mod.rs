//! The `nm-vpn-netns` command's interface, self-contained so that man pages and completions can
//! be generated from it, and the generator of those ([`docs`]).

pub mod docs;

use std::path::PathBuf;

use clap::{value_parser, Arg, CommandFactory, FromArgMatches, Parser};

const ABOUT: &str = "Inspect and use VPNs that NetworkManager isolated in network namespaces";

const LONG_ABOUT: &str = "\
nm-vpn-netns puts an OpenVPN connection of NetworkManager into a network namespace of its own.
Add netns-isolate=yes to the connection's vpn.data (see nm-vpn-netns(5)) and bring it up as
usual, with nmcli or the VPN switch of the desktop. The VPN's tunnel, addresses, routes and DNS
servers then live in the namespace, which is named after the connection by default. Programs
started there, with ip netns exec NAME COMMAND, go through the VPN; nothing else on the machine
does. If the tunnel drops, programs in the namespace have no way out: the VPN fails closed.

This command is the user's side of nm-vpn-netns. Two programs that users never start do the
work: nm-vpn-netns-service(8), the plugin NetworkManager runs in place of the stock OpenVPN
plugin, and nm-vpn-netns-agent(8), the privileged helper that D-Bus starts for it.";

/// The documented interface: the man page and the completions are rendered from this alone.
#[derive(Debug, Parser)]
#[command(name = "nm-vpn-netns", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    Run(Cli),
    /// `generate-docs DIR`: hidden, for `make man` (see [`docs`]).
    GenerateDocs(PathBuf),
}

const GENERATE_DOCS: &str = "generate-docs";

/// Parses the command line, exiting with clap's message on a bad one.
///
/// `generate-docs` is added here rather than to [`Cli`]: clap_complete would complete a hidden
/// subcommand, and clap_mangen would announce one in the synopsis.
pub fn parse() -> Invocation {
    let cli = Cli::command();
    // Without subcommands of its own, `Cli` must not grow a `help` one because of ours.
    let own_subcommands = cli.has_subcommands();
    let matches = cli
        .disable_help_subcommand(!own_subcommands)
        .subcommand(
            clap::Command::new(GENERATE_DOCS)
                .hide(true)
                .about("Write the man pages and shell completions into DIR (man/, completions/)")
                .arg(
                    Arg::new("dir")
                        .value_name("DIR")
                        .required(true)
                        .value_parser(value_parser!(PathBuf)),
                ),
        )
        .get_matches();
    match matches.subcommand() {
        Some((GENERATE_DOCS, sub)) => Invocation::GenerateDocs(
            sub.get_one::<PathBuf>("dir")
                .expect("clap requires DIR")
                .clone(),
        ),
        _ => Invocation::Run(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())),
    }
}
