//! The application layer: every operation a user can perform, as one function that takes an
//! authenticated [`Actor`] and returns typed results. The CLI calls these now; the service
//! and its HTTP API call the same functions. Each operation first goes through
//! [`authz::authorize`](crate::authz::authorize), the one authorization table.
//!
//! An [`App`] is one workspace: its directory, the plugin host, and its state. It is `Sync`:
//! many operations may run at once in one process.

mod changes;
mod debugger;
mod drift;
mod error;
mod failed_start;
mod health;
mod held;
mod identity;
mod live;
mod plugins;
mod published;
mod queue;
mod readiness;
mod service;
mod state_ops;
mod undo;
mod unwritten;

pub use changes::{AuditFilter, AuditLog};
pub use debugger::RunRequests;
pub use drift::run_reconcile;
pub use error::AppError;
pub use failed_start::{failed_start_record, record_runs_of_unloadable_workspace, PREPARE_PHASE};
pub use health::SyncHealth;
pub use identity::{parse_lifetime, InvalidLifetime};
pub use plugins::{PluginFileState, PluginListing, PluginStatus, ServedSpec};
pub use queue::{Accepted, Queued, RunQueue, Trigger};
pub use service::{RunFilter, ServiceRunError, SessionGrant, MAX_RUNS_PAGE};
pub use undo::{RowEvent, RowHistory};

use crate::authz::{authorize, Action, Actor};
use crate::domain::RunRecord;
use crate::governance::{self, PolicyGate, RunGate};
use crate::host::PluginHost;
use crate::state::StateStore;
use crate::sync::{self, PlanReport, RunEnv, RunOptions, TestReport};
use crate::workspace::Workspace;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One workspace, ready to serve operations.
pub struct App {
    root: PathBuf,
    /// The working copy, read once when the app opens.
    working: Arc<Workspace>,
    host: crate::plugins::Registry,
    state: StateStore,
    /// The published configuration, parsed once per publication.
    published: published::PublishedCache,
    /// What the service did with each plugin file (empty outside `backflow serve`).
    plugin_files: plugins::PluginTable,
    /// The service's runs queued or going on, with their live progress.
    live: live::LiveRuns,
}

/// How a run is asked for.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Re-send every model row, not only what changed.
    pub full_resync: bool,
    /// Run the working copy (towards published staging destinations only).
    pub draft: bool,
    /// Why the run starts (`manual`, `schedule`, `api`…); `manual` when empty.
    pub trigger: String,
    /// A service's shutdown signal (see [`sync::StopSignal`]).
    pub stop: Option<sync::StopSignal>,
    /// The service's runs: the id the trigger was answered with.
    pub run_id: Option<String>,
    /// The service's runs: release this approved held run (its plan, if unchanged).
    pub approved_run: Option<String>,
    /// The service's runs: undo this run.
    pub undo: Option<sync::UndoTarget>,
}

/// What became of one sync asked to run.
#[derive(Debug)]
pub enum RunResult {
    /// The run happened (whatever its status).
    Ran(Box<RunRecord>),
    /// The run could not start: nothing was read or written.
    NotStarted {
        /// The sync asked for.
        sync: String,
        /// Why it could not start.
        error: String,
    },
}

/// A sync as listed: its definition and its last run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncSummary {
    /// The sync's name.
    pub name: String,
    /// The model it reads.
    pub model: String,
    /// The destination it writes to.
    pub destination: String,
    /// How it writes (`upsert`, `mirror`, …).
    pub mode: crate::workspace::SyncMode,
    /// Its newest run, if any.
    pub last_run: Option<RunRecord>,
    /// The cron pattern `backflow serve` runs it on, and its time zone.
    pub schedule: Option<String>,
    /// The time zone of `schedule`.
    pub timezone: Option<String>,
    /// Syncs it runs after.
    pub after: Vec<String>,
    /// When its schedule fires next (RFC 3339, UTC), if it has one: the service runs it then.
    pub next_run: Option<String>,
    /// `ok`, `failing`, `blocked`, `awaiting_approval` or `stale`, from its latest runs.
    pub health: SyncHealth,
    /// Since when it has been so (RFC 3339), if it ever ran.
    pub health_since: Option<String>,
}

/// The result of approving a held run.
#[derive(Debug)]
pub enum RunApproval {
    /// Recorded; more approvals are needed.
    NeedsMore(Box<RunGate>),
    /// Every requirement is met and the approved plan was run again.
    Released(Box<RunRecord>),
    /// Every requirement is met and the approved plan's run is queued under this id.
    Queued(String),
}

impl App {
    /// Opens the workspace at `root`: its state, and a plugin host caching compiled plugins
    /// in the per-user cache every workspace shares (`host::user_cache_dir`; without one,
    /// under the state directory).
    pub fn open(root: &Path) -> Result<App, AppError> {
        let working = load_working(root)?;
        let cache =
            crate::host::user_cache_dir().unwrap_or_else(|| working.state_dir.join("cache"));
        let host = PluginHost::new(Some(cache))
            .map_err(|e| AppError::Failed(format!("{e:#}")))?
            .into();
        let state =
            StateStore::open(&working.state_dir).map_err(|e| AppError::Failed(e.to_string()))?;
        // Runs a killed process left `running` are marked now, not when their sync next runs.
        if let Err(e) = sync::recover_dead_runs(&state, &working.state_dir, working.keep_runs) {
            tracing::warn!("marking runs of dead processes as interrupted: {e}");
        }
        prune_audit(&state, working.keep_audit_days);
        Ok(App {
            root: root.to_path_buf(),
            working: Arc::new(working),
            host,
            state,
            published: Default::default(),
            plugin_files: Default::default(),
            live: Default::default(),
        })
    }

    /// The names of the working copy's syncs (what `sync run --all` runs).
    pub fn working_sync_names(&self) -> Vec<String> {
        self.working.syncs.keys().cloned().collect()
    }

    /// The state directory (one service per state directory locks it).
    pub fn state_dir(&self) -> &Path {
        &self.working.state_dir
    }

    /// Resolves a user name (`--as`, `BACKFLOW_USER`, an API token's user) against the users
    /// of the published configuration, or of the working copy until something is published.
    pub fn actor(&self, user: Option<&str>) -> Result<Actor, AppError> {
        let authority = self.authority()?;
        let actor = governance::identify(&authority, user)
            .map_err(|e| AppError::Unauthenticated(e.to_string()))?;
        // Each identification notes who is declared now: a user removed and declared again
        // gets a new id, whatever happened in between (see `identity`).
        if let Err(e) = self.declared_user_ids(&authority) {
            tracing::warn!("recording the declared users' ids: {e}");
        }
        Ok(actor)
    }

    /// The syncs with their definitions and last runs.
    pub fn list_syncs(&self, actor: &Actor) -> Result<Vec<SyncSummary>, AppError> {
        authorize(actor, Action::ListSyncs)?;
        // Schedules are what the service runs: the published configuration's.
        let runnable = self
            .runnable_workspace()
            .unwrap_or_else(|_| self.working.clone());
        let now = jiff::Timestamp::now();
        let mut out = Vec::new();
        // Every sync of the working copy and of what runs: a service opened before a publish
        // lists the syncs that publish added too.
        let names: std::collections::BTreeSet<&String> = self
            .working
            .syncs
            .keys()
            .chain(runnable.syncs.keys())
            .collect();
        for sync in names
            .into_iter()
            .filter_map(|n| self.working.syncs.get(n).or_else(|| runnable.syncs.get(n)))
        {
            let last_run = self
                .state
                .runs(Some(&sync.name), 1)
                .map_err(|e| AppError::Failed(e.to_string()))?
                .into_iter()
                .next();
            let running = runnable.syncs.get(&sync.name).unwrap_or(sync);
            let (health, health_since) = self.sync_health(&runnable, &sync.name);
            let schedule = running.schedule.as_ref();
            out.push(SyncSummary {
                name: sync.name.clone(),
                model: sync.model.clone(),
                destination: sync.destination.clone(),
                mode: sync.mode,
                last_run,
                schedule: schedule.map(|s| s.pattern.clone()),
                timezone: schedule.map(|s| s.timezone.clone()),
                after: running.after.clone(),
                next_run: schedule
                    .and_then(|s| s.next_after(now))
                    .map(crate::schedule::rfc3339),
                health,
                health_since,
            });
        }
        Ok(out)
    }

    /// A dry run: what a run would send now. Sends and records nothing.
    pub async fn plan(
        &self,
        actor: &Actor,
        sync: &str,
        full_resync: bool,
        draft: bool,
        samples: usize,
    ) -> Result<PlanReport, AppError> {
        authorize(actor, Action::PlanSync)?;
        let ws = if draft {
            self.working.clone()
        } else {
            self.workspace_for(false, &[sync.to_string()])?
        };
        sync::plan_sync(
            &self.host,
            &ws,
            &self.state,
            sync,
            sync::plan::PlanOptions {
                full_resync,
                sort_first: false,
            },
            samples,
        )
        .await
        .map_err(|e| AppError::Failed(e.to_string()))
    }

    /// Sends one model row (the one with primary key `key`, or the first in key order) to
    /// the destination and reports its answer with the HTTP requests it took; records
    /// nothing in the sync's state or history, and audits the test (`sync.test`).
    pub async fn test_row(
        &self,
        actor: &Actor,
        sync: &str,
        key: Option<&str>,
        draft: bool,
    ) -> Result<TestReport, AppError> {
        authorize(actor, Action::TestRow)?;
        // A test row is a real delivery: a draft may only go to a staging destination.
        let ws = self.workspace_for(draft, &[sync.to_string()])?;
        let report = sync::test_row(&self.host, &ws, sync, key)
            .await
            .map_err(|e| AppError::Failed(e.to_string()))?;
        let detail = serde_json::json!({
            "key": report.key,
            "operation": report.operation,
            "outcome": report.outcome,
            "draft": draft,
        });
        self.audit_event(actor, "sync.test", sync, detail)?;
        Ok(report)
    }

    /// Runs syncs, each on its own task: one failing or slow destination does not hold up
    /// the others. A name given twice runs once.
    pub async fn run(
        &self,
        actor: &Actor,
        names: &[String],
        request: &RunRequest,
    ) -> Result<Vec<RunResult>, AppError> {
        authorize(actor, Action::RunSync)?;
        let mut unique: Vec<String> = Vec::new();
        for name in names {
            if !unique.contains(name) {
                unique.push(name.clone());
            }
        }
        let ws = self.workspace_for(request.draft, &unique)?;
        for name in &unique {
            ws.sync(name)
                .map_err(|e| AppError::NotFound(e.to_string()))?;
        }
        let options = RunOptions {
            user: actor.user.clone(),
            trigger: if request.trigger.is_empty() {
                "manual".into()
            } else {
                request.trigger.clone()
            },
            approved_run: None,
            full_resync: request.full_resync,
            draft: request.draft,
            undo: None,
            stop: request.stop.clone(),
            run_id: None,
        };
        let runs = unique.iter().map(|name| {
            let (options, ws) = (&options, &ws);
            async move {
                match run_sync(&self.host, ws, &self.state, name, options).await {
                    Ok(record) => RunResult::Ran(Box::new(record)),
                    Err(e) if !options.draft && failed_start::is_failed_start(&e) => {
                        let error = e.to_string();
                        let (trigger, user) = (&options.trigger, &options.user);
                        self.record_failed_start(name, trigger, user, options.full_resync, &error)
                            .await;
                        RunResult::NotStarted {
                            sync: name.clone(),
                            error,
                        }
                    }
                    Err(e) => RunResult::NotStarted {
                        sync: name.clone(),
                        error: e.to_string(),
                    },
                }
            }
        });
        Ok(futures::future::join_all(runs).await)
    }

    /// Approves a run held by an approval policy; once every requirement is met, exactly the
    /// reviewed plan is delivered (if the data moved meanwhile, it plans and asks again).
    pub async fn approve_run(
        &self,
        actor: &Actor,
        run_id: &str,
        comment: Option<&str>,
    ) -> Result<RunApproval, AppError> {
        authorize(actor, Action::ApproveRun)?;
        if let Ok(Some(gate)) = self.state.run_gate::<RunGate>(run_id) {
            self.approvals_need_declared_users(&gate.requirements.iter().collect::<Vec<_>>())?;
        }
        let gate = self.record_approval(actor, run_id, comment)?;
        if gate.status != governance::GateStatus::Approved {
            return Ok(RunApproval::NeedsMore(Box::new(gate)));
        }
        let ws = self.workspace_for(false, std::slice::from_ref(&gate.sync))?;
        let release_id = ulid::Ulid::new().to_string();
        self.mark_approved(&gate, &release_id)?;
        let options = RunOptions {
            user: gate.requested_by.clone(),
            trigger: format!("approved run {run_id}"),
            approved_run: Some(run_id.to_string()),
            full_resync: gate.full_resync,
            draft: false,
            undo: gate.undo.clone(),
            stop: None,
            run_id: Some(release_id),
        };
        let started = if gate.reconcile {
            run_reconcile(&self.host, &ws, &self.state, &gate.sync, &options).await
        } else {
            run_sync(&self.host, &ws, &self.state, &gate.sync, &options).await
        };
        let record = match started {
            Ok(record) => record,
            // The release could not start: a failed run (alerted), and the held run says so.
            Err(e) if failed_start::is_failed_start(&e) => {
                let request = RunRequest {
                    full_resync: options.full_resync,
                    trigger: options.trigger.clone(),
                    run_id: options.run_id.clone(),
                    approved_run: options.approved_run.clone(),
                    ..RunRequest::default()
                };
                let error = e.to_string();
                let user = &options.user;
                self.record_failed_queued_start(&gate.sync, &request, user, &error)
                    .await;
                return Err(AppError::Failed(error));
            }
            Err(e) => return Err(AppError::Failed(e.to_string())),
        };
        self.release_failed(run_id, &record);
        Ok(RunApproval::Released(Box::new(record)))
    }

    /// Runs, newest first, optionally of one sync.
    pub fn runs(
        &self,
        actor: &Actor,
        sync: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, AppError> {
        authorize(actor, Action::ReadRuns)?;
        self.state
            .runs(sync, limit)
            .map_err(|e| AppError::Failed(e.to_string()))
    }

    /// One run by id.
    pub fn run_record(&self, actor: &Actor, run_id: &str) -> Result<RunRecord, AppError> {
        authorize(actor, Action::ReadRuns)?;
        self.state
            .run(run_id)
            .map_err(|e| AppError::Failed(e.to_string()))?
            .ok_or_else(|| AppError::NotFound(format!("no run with id {run_id}")))
    }

    /// The schema and first rows of a model, read through its source; nothing is recorded.
    pub async fn preview_model(
        &self,
        actor: &Actor,
        model: &str,
        limit: u32,
    ) -> Result<crate::preview::ModelPreview, AppError> {
        authorize(actor, Action::PreviewModel)?;
        crate::preview::preview_model(&self.host, &self.working, model, limit)
            .await
            .map_err(|e| AppError::Failed(e.to_string()))
    }

    /// The plugins in the workspace's plugins directory, and the files that are not plugins.
    pub async fn list_plugins(&self, actor: &Actor) -> Result<crate::plugins::Scan, AppError> {
        authorize(actor, Action::ListPlugins)?;
        Ok(crate::plugins::scan(&self.host, &self.working.plugins_dir).await)
    }
}

fn load_working(root: &Path) -> Result<Workspace, AppError> {
    Workspace::load(root).map_err(|e| AppError::Invalid(format!("invalid workspace:\n{e}")))
}

/// Runs one sync of a loaded workspace through the workspace's approval gate. For callers
/// that hold a workspace and have authorized the run themselves (the [`App`], tests,
/// benchmarks). An `Err` means the run could not start.
pub async fn run_sync(
    host: &crate::plugins::Registry,
    ws: &Workspace,
    state: &StateStore,
    name: &str,
    options: &RunOptions,
) -> Result<RunRecord, sync::RunError> {
    let gate = PolicyGate { host, ws, state };
    // The id is chosen here so that a run folded into a held one (another id) is told apart.
    let mut options = options.clone();
    let run_id = options
        .run_id
        .get_or_insert_with(|| ulid::Ulid::new().to_string())
        .clone();
    let options = &options;
    // Every line logged while the run goes on (its stages, its plugins' host calls, its
    // alerts) carries its id, sync and phase (`--log-format json`: `span` and `spans`).
    let span = tracing::info_span!(
        "run",
        run_id = %run_id,
        sync = %name,
        trigger = %options.trigger,
        phase = tracing::field::Empty
    );
    let run = async {
        let _in_flight = crate::metrics::run_in_flight();
        let record = sync::run_sync(
            RunEnv {
                host,
                ws,
                state,
                gate: &gate,
            },
            name,
            options,
        )
        .await?;
        // A run folded into a held one was not a run: the held one was counted and alerted.
        if record.run_id == run_id {
            crate::metrics::record_run(&record);
            crate::alerts::dispatch(host.http(), ws, state, &record).await;
        }
        // A service runs for months: its audit log is pruned as it goes, not only at start.
        prune_audit(state, ws.keep_audit_days);
        Ok::<RunRecord, sync::RunError>(record)
    };
    tracing::Instrument::instrument(run, span).await
}

/// Removes audit entries older than `keep_days` days (`[state] keep_audit_days`); a failure
/// is logged and leaves them for the next time.
fn prune_audit(state: &StateStore, keep_days: u64) {
    let days = i64::try_from(keep_days).unwrap_or(i64::MAX).min(1_000_000);
    let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(days);
    let Ok(cutoff) = cutoff.format(&time::format_description::well_known::Rfc3339) else {
        return;
    };
    match state.prune_audit(&cutoff) {
        Ok(0) => {}
        Ok(removed) => tracing::info!(
            removed,
            cutoff,
            "audit entries older than [state] keep_audit_days pruned"
        ),
        Err(e) => tracing::warn!("pruning the audit log: {e}"),
    }
}
