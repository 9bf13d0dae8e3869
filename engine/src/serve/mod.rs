//! `backflow serve`: one long-running process per workspace. It owns the workspace's state
//! for scheduling (one instance per state directory), runs the published configuration on
//! its schedules, sequences and API triggers, answers the HTTP API, and hot-reloads plugins.
//!
//! - [`lock`]: one service per state directory;
//! - [`scheduler`]: schedules, `after` sequences, coalesced triggers, graceful stop;
//! - [`reload`]: watching the plugins directory;
//! - [`http`]: what the API and the UI share (state, errors, request parsing, limits);
//! - [`api`]: the HTTP API, `/healthz` and `/metrics`;
//! - [`ui`]: the web UI under `/ui`, on the same application layer as the API.
//!
//! CLI commands keep working beside the service: they open the same state directly (redb
//! in multi-writer mode, per-sync leases), so a `sync run` from a terminal and a scheduled
//! run of the same sync never overlap: the second is refused by the lease.

pub mod api;
pub mod http;
pub mod lock;
pub mod reload;
mod repeated;
pub mod scheduler;
pub mod ui;

use crate::app::App;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use http::{ApiError, ApiState, MAX_BODY_BYTES};
use std::net::SocketAddr;
use std::path::Path;
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
}

/// Runs the service until SIGTERM or SIGINT.
pub async fn serve(root: &Path, options: ServeOptions) -> anyhow::Result<()> {
    let app = Arc::new(App::open(root)?);
    let _lock = lock::InstanceLock::acquire(app.state_dir(), &options.listen.to_string())?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", options.listen))?;
    let addr = listener.local_addr()?;

    reload::load_all(&app).await;
    let _watcher = reload::watch(app.clone())
        .map_err(|e| anyhow::anyhow!("watching {}: {e}", app.plugins_dir().display()))?;
    let scheduler = scheduler::Scheduler::new(app.clone());
    let schedules = tokio::spawn(scheduler.clone().run_schedules(options.tick));
    let stale_watch = tokio::spawn(app.clone().watch_stale());

    let router = router(Arc::new(ApiState {
        app: app.clone(),
        scheduler: scheduler.clone(),
        sessions: http::Sessions::default(),
    }));
    // The one line a supervisor (or a test) reads to find the service.
    println!("backflow serve: listening on http://{addr}");
    tracing::info!(%addr, workspace = %root.display(), "service started");

    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await
    });

    shutdown_signal().await;
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
    let _ = stop_http.send(());
    // Requests in flight get a moment to finish; the process ends either way.
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    tracing::info!("service stopped");
    Ok(())
}

/// Every route the service answers: the API, the UI, `/healthz` and `/metrics`.
fn router(state: Arc<ApiState>) -> axum::Router {
    api::router()
        .merge(ui::router())
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "not found".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
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
