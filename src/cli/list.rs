//! `nm-vpn-netns list` and `delete`: not written yet (issue 10).

use std::process::ExitCode;

/// List the namespaces the agent keeps: persistent ones, and those left without a connection.
#[derive(Debug, clap::Args)]
pub struct ListArgs {}

/// Delete a namespace the agent keeps.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("not implemented yet")]
    Unimplemented,
}

pub fn run_list(_args: ListArgs) -> Result<ExitCode, ListError> {
    Err(ListError::Unimplemented)
}

pub fn run_delete(_args: DeleteArgs) -> Result<ExitCode, ListError> {
    Err(ListError::Unimplemented)
}
