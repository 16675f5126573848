//! `nm-vpn-netns exec`: not written yet (issue 10).

use std::process::ExitCode;

/// Run a command in an isolated VPN's namespace, as yourself.
#[derive(Debug, clap::Args)]
pub struct Args {}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("not implemented yet")]
    Unimplemented,
}

pub fn run(_args: Args) -> Result<ExitCode, ExecError> {
    Err(ExecError::Unimplemented)
}
