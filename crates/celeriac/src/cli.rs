//! The `celeriac` command line.
use crate::Registry;

/// Runs the command line with these tasks registered.
pub async fn run_with_registry(_registry: Option<Registry>) -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
