//! `nm-vpn-netns status`: not written yet (issue 10).

use std::process::ExitCode;

/// Show every isolated VPN, and check it for leaks.
#[derive(Debug, clap::Args)]
pub struct Args {}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("not implemented yet")]
    Unimplemented,
}

pub fn run(_args: Args) -> Result<ExitCode, StatusError> {
    Err(StatusError::Unimplemented)
}
