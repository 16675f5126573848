//! Command-line tool for users and admins of nm-vpn-netns.

#![deny(clippy::too_many_lines)]

use std::process::ExitCode;

use nm_vpn_netns::cli::{self, docs, Invocation, EXIT_FAILURE};
use nm_vpn_netns::report;

fn main() -> ExitCode {
    match cli::parse() {
        Invocation::Run(cli) => cli::run(cli.command),
        Invocation::GenerateDocs(dir) => match docs::generate(&dir) {
            Ok(written) => {
                for path in written {
                    println!("{}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "nm-vpn-netns: cannot generate the docs in {}: {}",
                    dir.display(),
                    report::chain(&e)
                );
                ExitCode::from(EXIT_FAILURE)
            }
        },
    }
}
