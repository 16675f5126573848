//! `nm-vpn-netns doctor`: not written yet (issue 10).

use std::process::ExitCode;

/// Check the installation, and say how to fix what is broken.
#[derive(Debug, clap::Args)]
pub struct Args {}

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("not implemented yet")]
    Unimplemented,
}

pub fn run(_args: Args) -> Result<ExitCode, DoctorError> {
    Err(DoctorError::Unimplemented)
}
