//! `backflow serve`: one long-running process per workspace. It owns the workspace's state
//! for scheduling (one instance per state directory), runs the published configuration on
//! its schedules, sequences and API triggers, answers the HTTP API, and hot-reloads plugins.
//!
//! - [`lock`]: one service per state directory;
//! - [`scheduler`]: schedules, `after` sequences, coalesced triggers, graceful stop;
//! - [`reload`]: watching the plugins directory (and re-reading it on SIGHUP);
//! - [`listener`]: accepting connections under limits, TLS;
//! - [`http`]: what the API and the UI share (state, errors, request parsing, limits);
//! - [`api`]: the HTTP API, `/healthz` and `/metrics`;
//! - [`ui`]: the web UI under `/ui`, on the same application layer as the API.
//!
//! CLI commands keep working beside the service: they open the same state directly (redb
//! in multi-writer mode, per-sync leases), so a `sync run` from a terminal and a scheduled
//! run of the same sync never overlap: the second is refused by the lease.

pub mod api;
pub mod http;
pub mod listener;
pub mod lock;
pub mod reload;
mod repeated;
pub mod scheduler;
pub mod ui;

use crate::app::App;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use http::{ApiError, ApiState, WriteLimiter, MAX_BODY_BYTES};
use listener::tls::TlsConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How `backflow serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address the HTTP API and the UI listen on.
    pub listen: SocketAddr,
    /// How long a shutdown waits for runs to finish their in-flight batches.
    pub shutdown_grace: Duration,
    /// How often schedules are looked at (a 6-field schedule fires to the second).
    pub tick: Duration,
    /// TLS, a separate metrics address, connection and request limits.
    pub exposure: Exposure,
}

/// How the service's listeners are exposed and limited.
#[derive(Debug, Clone)]
pub struct Exposure {
    /// Serve HTTPS with this PEM certificate chain and [`Exposure::tls_key`].
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of [`Exposure::tls_cert`].
    pub tls_key: Option<PathBuf>,
    /// Serve `/metrics` and `/healthz` on this address instead of the main one.
    pub metrics_listen: Option<SocketAddr>,
    /// Connection cap and timeouts, for every listener.
    pub limits: listener::ConnectionLimits,
    /// State-changing requests per minute and API token (0: no limit).
    pub write_requests_per_minute: u32,
}

impl Default for Exposure {
    fn default() -> Self {
        Exposure {
            tls_cert: None,
            tls_key: None,
            metrics_listen: None,
            limits: listener::ConnectionLimits::default(),
            write_requests_per_minute: 120,
        }
    }
}

/// Runs the service until SIGTERM or SIGINT.
pub async fn serve(root: &Path, options: ServeOptions) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // First: SIGHUP's default action ends the process.
    let hangups =
        signal(SignalKind::hangup()).map_err(|e| anyhow::anyhow!("listening for SIGHUP: {e}"))?;
    // One path per file whether the workspace was given as `.` or in full: the plugin table,
    // the watcher's events and the runs' references all agree.
    let root = root
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("--workspace {}: {e}", root.display()))?;
    let root = root.as_path();
    let exposure = options.exposure.clone();
    let tls = match (&exposure.tls_cert, &exposure.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(TlsConfig::load(cert, key)?)),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let app = Arc::new(App::open(root)?);
    let _lock = lock::InstanceLock::acquire(app.state_dir(), &options.listen.to_string())?;
    let listener = bind(options.listen, "--listen").await?;
    let addr = listener.local_addr()?;
    let probes_listener = match exposure.metrics_listen {
        Some(at) => Some(bind(at, "--metrics-listen").await?),
        None => None,
    };

    reload::load_all(&app).await;
    let _watcher = reload::watch(app.clone())
        .map_err(|e| anyhow::anyhow!("watching {}: {e}", app.plugins_dir().display()))?;
    let scheduler = scheduler::Scheduler::new(app.clone());
    let schedules = tokio::spawn(scheduler.clone().run_schedules(options.tick));
    let stale_watch = tokio::spawn(app.clone().watch_stale());

    let state = Arc::new(ApiState {
        app: app.clone(),
        scheduler: scheduler.clone(),
        sessions: http::Sessions::default(),
        write_limiter: WriteLimiter::new(exposure.write_requests_per_minute),
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The one line a supervisor (or a test) reads to find the service.
    println!("backflow serve: listening on {scheme}://{addr}");
    println!("backflow serve: web UI at {scheme}://{addr}/ui");
    tracing::info!(%addr, workspace = %root.display(), tls = tls.is_some(), "service started");
    if let Some(warning) = listener::plaintext_exposure_warning(addr, tls.is_some()) {
        tracing::warn!("{warning}");
    }

    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(listener::serve(
        listener,
        router(state.clone(), probes_listener.is_none()),
        exposure.limits.clone(),
        tls.clone(),
        http_stopped.clone(),
    ));
    let probes = match probes_listener {
        Some(probes_listener) => {
            let at = probes_listener.local_addr()?;
            println!("backflow serve: /metrics and /healthz on http://{at}");
            Some(tokio::spawn(listener::serve(
                probes_listener,
                api::probes_router().with_state(state.clone()),
                exposure.limits.clone(),
                None,
                http_stopped,
            )))
        }
        None => None,
    };
    let hangup = tokio::spawn(on_hangup(hangups, app.clone(), tls));

    shutdown_signal().await;
    hangup.abort();
    tracing::info!(
        grace_s = options.shutdown_grace.as_secs(),
        "shutting down: no new runs; running ones stop after their in-flight batches"
    );
    schedules.abort();
    stale_watch.abort();
    let left = scheduler.shut_down(options.shutdown_grace).await;
    if left > 0 {
        // Their acknowledged batches are journaled: the next run recovers them, as after a
        // crash. Exit at once, as a crash would: unwinding would cancel those runs and release
        // their leases, and the next run could no longer tell that they were interrupted.
        tracing::warn!(
            runs = left,
            "runs still going after the grace period are left to the journal; exiting now"
        );
        std::process::exit(0);
    }
    let _ = stop_http.send(true);
    // Requests in flight get a moment to finish (the listener's drain); the process ends
    // either way.
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    if let Some(probes) = probes {
        let _ = tokio::time::timeout(Duration::from_secs(10), probes).await;
    }
    tracing::info!("service stopped");
    Ok(())
}

async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{flag} {addr}: {e}"))
}

/// SIGHUP re-reads what can change under a running service: the TLS certificate and the
/// plugins directory (the configuration is read by every run anyway; flags need a restart).
async fn on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    app: Arc<App>,
    tls: Option<Arc<TlsConfig>>,
) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: re-reading the TLS certificate and the plugins directory");
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => tracing::error!(
                    "TLS certificate not reloaded, the previous one keeps serving: {e}"
                ),
            }
        }
        reload::rescan(&app).await;
    }
}

/// Every route the service answers: the API, the UI, `/` (to the UI), and `/healthz` and
/// `/metrics` unless they have their own address.
fn router(state: Arc<ApiState>, with_probes: bool) -> axum::Router {
    let routes = if with_probes {
        api::router()
    } else {
        api::api_routes()
    };
    routes
        .merge(ui::router())
        .route("/", axum::routing::get(|| async { Redirect::to("/ui") }))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A page under `/ui` that does not exist is an HTML page; anything else a JSON error.
async fn not_found(uri: Uri) -> Response {
    let path = uri.path();
    if path == "/ui" || path.starts_with("/ui/") {
        return ui::not_found(path);
    }
    ApiError(StatusCode::NOT_FOUND, "not found".into()).into_response()
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
