//! `backflow serve`: the workspace as a long-running service.

use std::path::Path;
use std::process::ExitCode;

/// Serves the workspace on `listen` until a shutdown signal; runs get `shutdown_grace_s`
/// seconds to finish their in-flight batches.
pub(crate) async fn run(
    workspace: &Path,
    listen: std::net::SocketAddr,
    shutdown_grace_s: u64,
) -> anyhow::Result<ExitCode> {
    let options = backflow::serve::ServeOptions {
        listen,
        shutdown_grace: std::time::Duration::from_secs(shutdown_grace_s),
        tick: std::time::Duration::from_millis(250),
    };
    backflow::serve::serve(workspace, options).await?;
    Ok(ExitCode::SUCCESS)
}
