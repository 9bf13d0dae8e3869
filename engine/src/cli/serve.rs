//! `backflow serve`: the workspace as a long-running service.

use super::args::ServeExposureArgs;
use backflow::serve::listener::ConnectionLimits;
use backflow::serve::Exposure;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Serves the workspace on `listen` until a shutdown signal; runs get `shutdown_grace_s`
/// seconds to finish their in-flight batches.
pub(crate) async fn run(
    workspace: &Path,
    listen: std::net::SocketAddr,
    shutdown_grace_s: u64,
    exposure: ServeExposureArgs,
) -> anyhow::Result<ExitCode> {
    let options = backflow::serve::ServeOptions {
        listen,
        shutdown_grace: Duration::from_secs(shutdown_grace_s),
        tick: Duration::from_millis(250),
        exposure: Exposure {
            tls_cert: exposure.tls_cert,
            tls_key: exposure.tls_key,
            metrics_listen: exposure.metrics_listen,
            limits: ConnectionLimits {
                max_connections: exposure.max_connections,
                header_read_timeout: Duration::from_secs(exposure.header_read_timeout_s.max(1)),
                body_timeout: Duration::from_secs(exposure.body_timeout_s.max(1)),
            },
            write_requests_per_minute: exposure.write_requests_per_minute,
        },
    };
    backflow::serve::serve(workspace, options).await?;
    Ok(ExitCode::SUCCESS)
}
