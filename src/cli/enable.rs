//! `nm-vpn-netns enable` and `disable`: not written yet (issue 10).

use std::process::ExitCode;

/// Turn isolation on for a connection, in vpn.data and in its mirror.
#[derive(Debug, clap::Args)]
pub struct EnableArgs {}

/// Turn isolation off for a connection.
#[derive(Debug, clap::Args)]
pub struct DisableArgs {}

#[derive(Debug, thiserror::Error)]
pub enum EnableError {
    #[error("not implemented yet")]
    Unimplemented,
}

pub fn run_enable(_args: EnableArgs) -> Result<ExitCode, EnableError> {
    Err(EnableError::Unimplemented)
}

pub fn run_disable(_args: DisableArgs) -> Result<ExitCode, EnableError> {
    Err(EnableError::Unimplemented)
}
