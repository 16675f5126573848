//! The `nm-vpn-netns` command's interface, self-contained so that man pages and completions can
//! be generated from it, and the generator of those ([`docs`]).

pub mod docs;
pub mod doctor;
pub mod enable;
pub mod exec;
pub mod list;
pub mod profiles;
pub mod status;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{value_parser, Arg, CommandFactory, FromArgMatches, Parser, Subcommand};

const ABOUT: &str = "Inspect and use VPNs that NetworkManager isolated in network namespaces";

const LONG_ABOUT: &str = "\
nm-vpn-netns puts an OpenVPN or OpenConnect connection of NetworkManager into a network namespace
of its own.
Add netns-isolate=yes to the connection's vpn.data (see nm-vpn-netns(5)) and bring it up as
usual, with nmcli or the VPN switch of the desktop. The VPN's tunnel, addresses, routes and DNS
servers then live in the namespace, which is named after the connection by default. Programs
started there, with ip netns exec NAME COMMAND, go through the VPN; nothing else on the machine
does. If the tunnel drops, programs in the namespace have no way out: the VPN fails closed.

This command is the user's side of nm-vpn-netns. Two programs that users never start do the
work: nm-vpn-netns-service(8), the plugin NetworkManager runs in place of the stock OpenVPN and
OpenConnect plugins, and nm-vpn-netns-agent(8), the privileged helper that D-Bus starts for it.";

/// The documented interface: the man page and the completions are rendered from this alone.
#[derive(Debug, Parser)]
#[command(name = "nm-vpn-netns", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands, each with its arguments and its code in a module of its own.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    Exec(exec::Args),
    Status(status::Args),
    Doctor(doctor::Args),
    Enable(enable::EnableArgs),
    Disable(enable::DisableArgs),
    List(list::ListArgs),
    Delete(list::DeleteArgs),
}

/// Runs the subcommand; an error is rendered once, with its causes, on stderr.
pub fn run(command: Cmd) -> ExitCode {
    match command {
        Cmd::Exec(args) => exec::run(args),
        Cmd::Status(args) => finish(status::run(args)),
        Cmd::Doctor(args) => finish(doctor::run(args)),
        Cmd::Enable(args) => finish(enable::run_enable(args)),
        Cmd::Disable(args) => finish(enable::run_disable(args)),
        Cmd::List(args) => finish(list::run_list(args)),
        Cmd::Delete(args) => finish(list::run_delete(args)),
    }
}

/// The exit status of a subcommand that failed before it could decide one (see each page's EXIT
/// STATUS).
pub const EXIT_FAILURE: u8 = 1;

fn finish<E: std::error::Error>(result: Result<ExitCode, E>) -> ExitCode {
    result.unwrap_or_else(|e| fail(&e, EXIT_FAILURE))
}

/// Renders `e` once, with its causes, on stderr, and gives exit status `status`.
fn fail(e: &dyn std::error::Error, status: u8) -> ExitCode {
    eprintln!("nm-vpn-netns: {}", crate::report::chain(e));
    ExitCode::from(status)
}

/// Runs `future` on a runtime of the calling thread alone: the subcommands talk to D-Bus, and
/// `exec` must stay single-threaded to enter a mount namespace (setns(2), EINVAL).
pub fn block_on<F: Future>(future: F) -> std::io::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future))
}

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
    let matches = cli
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
