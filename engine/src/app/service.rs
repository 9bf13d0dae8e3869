//! Operations the service adds: API tokens and web sessions, pages of run history, runs
//! held for approval, confirmations before a run or an undo, and runs it starts on its own
//! (schedules, sequences), which the published configuration authorizes.

use super::{App, AppError, RunRequest};
use crate::authz::{authorize, Action, Actor};
use crate::domain::{RunRecord, RunStatus};
use crate::governance::{GateStatus, RunGate};
use crate::state::{ApiToken, AuditEvent, NewToken, TokenRejected, DEFAULT_TOKEN_LIFETIME};
use crate::sync::{PlanReport, RunError, RunOptions, UndoReport};

/// Filters of `GET /api/v1/runs`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of this sync.
    pub sync: Option<String>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs older than this run id (pagination).
    pub before: Option<String>,
    /// The most runs returned (clamped to 1..=[`MAX_RUNS_PAGE`]).
    pub limit: usize,
}

/// A web session's sign-in: the token's user and the token it was made with.
#[derive(Debug, Clone)]
pub struct SessionGrant {
    /// The user the session acts as.
    pub user: String,
    /// The API token signed in with: revoking it ends the session.
    pub token_id: String,
}

/// Runs listed on the approvals page at most.
const HELD_RUNS: usize = 200;

/// Why a run the service starts did not happen: the configuration (`App`), or the run
/// itself could not start (`Run`: the scheduler waits out a [`RunError::LeaseBusy`]).
#[derive(Debug, thiserror::Error)]
pub enum ServiceRunError {
    /// The workspace or the sync could not be loaded.
    #[error(transparent)]
    App(#[from] AppError),
    /// The run could not start.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// The most runs one page returns.
pub const MAX_RUNS_PAGE: usize = 1000;

fn failed(e: impl std::fmt::Display) -> AppError {
    AppError::Failed(e.to_string())
}

impl App {
    /// Creates an API token acting as `for_user` (default: the actor). Creating one for
    /// someone else needs an admin. The secret is in the result and nowhere else.
    /// It lives `lifetime` (default [`DEFAULT_TOKEN_LIFETIME`]) and acts as the user who has
    /// the name now: a user declared later under the same name is not its user.
    pub fn create_token(
        &self,
        actor: &Actor,
        for_user: Option<&str>,
        name: &str,
        lifetime: Option<std::time::Duration>,
    ) -> Result<NewToken, AppError> {
        let user = for_user.unwrap_or(&actor.user);
        authorize(
            actor,
            if user == actor.user {
                Action::ManageOwnTokens
            } else {
                Action::ManageTokens
            },
        )?;
        // The token's user must be one the configuration knows (or will, when none are declared).
        let target = self.actor(Some(user))?;
        if name.trim().is_empty() || name.len() > 100 {
            return Err(AppError::Invalid(
                "--name: give the token a name of 1 to 100 characters (what it is for)".into(),
            ));
        }
        let user_id = self
            .user_id(&target.user)?
            .ok_or_else(|| AppError::Invalid(format!("{} is not a declared user", target.user)))?;
        let new = self
            .state
            .create_token(
                &target.user,
                &user_id,
                name.trim(),
                &actor.user,
                lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME),
            )
            .map_err(failed)?;
        self.audit_event(
            actor,
            "token.create",
            &new.record.id,
            serde_json::json!({"for": target.user, "name": new.record.name, "expires_at": new.record.expires_at}),
        )?;
        Ok(new)
    }

    /// The actor's tokens, or everyone's for an admin.
    pub fn list_tokens(&self, actor: &Actor) -> Result<Vec<ApiToken>, AppError> {
        authorize(actor, Action::ManageOwnTokens)?;
        let all = self.state.tokens().map_err(failed)?;
        Ok(if crate::authz::allowed(actor, Action::ManageTokens) {
            all
        } else {
            all.into_iter().filter(|t| t.user == actor.user).collect()
        })
    }

    /// Revokes an API token (one's own, or anyone's for an admin).
    pub fn revoke_token(&self, actor: &Actor, id: &str) -> Result<ApiToken, AppError> {
        authorize(actor, Action::ManageOwnTokens)?;
        let token = self.state.token(id).map_err(failed)?.ok_or_else(|| {
            AppError::NotFound(format!(
                "no API token with id {id} (see `backflow token list`)"
            ))
        })?;
        authorize(
            actor,
            if token.user == actor.user {
                Action::ManageOwnTokens
            } else {
                Action::ManageTokens
            },
        )?;
        let revoked = self
            .state
            .revoke_token(id, &actor.user)
            .map_err(failed)?
            .ok_or_else(|| AppError::NotFound(format!("no API token with id {id}")))?;
        self.audit_event(
            actor,
            "token.revoke",
            id,
            serde_json::json!({"for": revoked.user}),
        )?;
        Ok(revoked)
    }

    /// The user an API token acts as, checked against the users of the configuration in
    /// force now (a user removed since the token was made is refused).
    pub fn authenticate(&self, token_text: &str) -> Result<Actor, AppError> {
        let token = self
            .state
            .authenticate_token(token_text)
            .map_err(|e| match e {
                TokenRejected::Storage(m) => AppError::Failed(m),
                other => AppError::Unauthenticated(format!("invalid API token: {other}")),
            })?;
        self.token_actor(&token)
    }

    /// Appends one event by `actor` to the audit log.
    pub fn audit_event(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), AppError> {
        let event = AuditEvent {
            user: actor.user.clone(),
            action: action.into(),
            target: target.into(),
            config_hash: None,
            detail,
        };
        self.state
            .write_governance(Vec::new(), vec![event])
            .map(|_| ())
            .map_err(failed)
    }

    /// A page of run history, newest first.
    pub fn runs_page(&self, actor: &Actor, filter: &RunFilter) -> Result<Vec<RunRecord>, AppError> {
        authorize(actor, Action::ReadRuns)?;
        if let Some(sync) = &filter.sync {
            // Known from the working copy, from what runs now (a service opened before a
            // publish that added the sync), or from its history.
            let known = self.working.syncs.contains_key(sync)
                || self
                    .runnable_workspace()
                    .is_ok_and(|ws| ws.syncs.contains_key(sync));
            if !known && self.state.runs(Some(sync), 1).map_err(failed)?.is_empty() {
                return Err(AppError::NotFound(format!("no sync named {sync:?}")));
            }
        }
        let limit = filter.limit.clamp(1, MAX_RUNS_PAGE);
        self.state
            .runs_page(
                filter.sync.as_deref(),
                filter.status,
                filter.before.as_deref(),
                limit,
            )
            .map_err(failed)
    }

    /// A run the service starts on its own (a schedule fired, upstream syncs succeeded), or
    /// one it queued for a user (a trigger, a released approval, an undo): the published
    /// configuration that declares the schedule, or the user's authorization checked when it
    /// was queued, is its authorization. `user` is who asked; the service's name otherwise.
    /// The run reports its progress under `request.run_id` while it goes on.
    pub async fn run_for_service(
        &self,
        name: &str,
        request: &RunRequest,
        user: &str,
    ) -> Result<RunRecord, ServiceRunError> {
        let run_id = request
            .run_id
            .clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
        let live = self.expect_run(&run_id);
        let result = self.run_queued(name, request, user, &run_id, live).await;
        // A released approval whose run failed: the held run says so, not `approved`.
        if let (Ok(record), Some(held)) = (&result, &request.approved_run) {
            self.release_failed(held, record);
        }
        self.forget_run(
            &run_id,
            result.as_ref().ok().map(|record| record.run_id.as_str()),
        );
        result
    }

    async fn run_queued(
        &self,
        name: &str,
        request: &RunRequest,
        user: &str,
        run_id: &str,
        live: std::sync::Arc<crate::sync::progress::LiveRun>,
    ) -> Result<RunRecord, ServiceRunError> {
        // An undo goes to the workspace its run was made with (a draft's, or the published).
        let draft = match &request.undo {
            Some(u) => self
                .state
                .run(&u.run_id)
                .map_err(failed)?
                .is_some_and(|r| r.draft),
            None => false,
        };
        let ws = self.workspace_for(draft, &[name.to_string()])?;
        ws.sync(name)
            .map_err(|e| AppError::NotFound(e.to_string()))?;
        let mut reconcile = false;
        if let Some(approved) = &request.approved_run {
            // Decided again since it was queued (rejected, cancelled, superseded, or already
            // released by a run of the same plan): nothing to release.
            let gate = self.state.run_gate::<RunGate>(approved).map_err(failed)?;
            match gate {
                Some(g) if g.status == GateStatus::Approved => reconcile = g.reconcile,
                _ => {
                    return Err(AppError::Refused(format!(
                    "run {approved} is no longer approved and waiting for release: nothing to run"
                ))
                    .into())
                }
            }
        }
        let options = RunOptions {
            user: user.to_string(),
            trigger: request.trigger.clone(),
            approved_run: request.approved_run.clone(),
            full_resync: request.full_resync,
            draft,
            undo: request.undo.clone(),
            stop: request.stop.clone(),
            run_id: Some(run_id.to_string()),
        };
        // A held reconcile's approval releases a reconcile (its plan is the drift's).
        let run = async {
            if reconcile {
                super::run_reconcile(&self.host, &ws, &self.state, name, &options).await
            } else {
                super::run_sync(&self.host, &ws, &self.state, name, &options).await
            }
        };
        Ok(crate::sync::progress::reporting_to(Some(live), run).await?)
    }

    /// Signs a browser in with an API token: the token must be valid and its user one the
    /// configuration in force knows. Every refusal reads as the token's or the user's problem.
    pub fn authenticate_session(&self, token_text: &str) -> Result<SessionGrant, AppError> {
        let record = self
            .state
            .authenticate_token(token_text)
            .map_err(|e| AppError::Unauthenticated(e.to_string()))?;
        self.token_actor(&record)?;
        Ok(SessionGrant {
            user: record.user,
            token_id: record.id,
        })
    }

    /// The actor of a signed-in session, while its token is not revoked or expired and its
    /// user (by id) is still known to the configuration in force.
    pub fn session_actor(&self, grant: &SessionGrant) -> Option<Actor> {
        let token = self.state.token_in_force(&grant.token_id).ok().flatten()?;
        self.token_actor(&token).ok()
    }

    /// One run and, if an approval policy held it, its approval gate.
    pub fn run_detail(
        &self,
        actor: &Actor,
        run_id: &str,
    ) -> Result<(RunRecord, Option<RunGate>), AppError> {
        // A trigger folded into a held run shows the held run.
        let run = match self.run_record(actor, run_id) {
            Err(AppError::NotFound(m)) => match self.folded_into(run_id) {
                Some(held) => self.run_record(actor, &held)?,
                None => return Err(AppError::NotFound(m)),
            },
            other => other?,
        };
        let gate = self.state.run_gate::<RunGate>(&run.run_id).ok().flatten();
        Ok((run, gate))
    }

    /// Runs waiting for approvals, newest first, with their gates.
    pub fn held_runs(&self, actor: &Actor) -> Result<Vec<(RunRecord, RunGate)>, AppError> {
        let held = self.runs_page(
            actor,
            &RunFilter {
                sync: None,
                status: Some(RunStatus::AwaitingApproval),
                before: None,
                limit: HELD_RUNS,
            },
        )?;
        Ok(held
            .into_iter()
            .filter_map(|run| {
                let gate = self.state.run_gate::<RunGate>(&run.run_id).ok().flatten()?;
                (gate.status == GateStatus::Waiting).then_some((run, gate))
            })
            .collect())
    }

    /// The plan shown before a run is asked for: the actor must be allowed to run the sync,
    /// not only to plan it.
    pub async fn confirm_run(
        &self,
        actor: &Actor,
        sync: &str,
        full_resync: bool,
        samples: usize,
    ) -> Result<PlanReport, AppError> {
        authorize(actor, Action::RunSync)?;
        self.plan(actor, sync, full_resync, false, samples).await
    }

    /// The inverse plan shown before an undo: the actor must be allowed to undo the run.
    pub async fn confirm_undo(
        &self,
        actor: &Actor,
        run_id: &str,
        force: bool,
    ) -> Result<UndoReport, AppError> {
        authorize(actor, Action::UndoRun)?;
        self.plan_undo(actor, run_id, force).await
    }

    /// The id (ULIDs sort by start time) and status of the last run of `sync`.
    pub fn last_run(&self, sync: &str) -> Option<(String, RunStatus)> {
        self.state
            .runs(Some(sync), 1)
            .ok()?
            .into_iter()
            .next()
            .map(|r| (r.run_id, r.status))
    }

    /// When the service last looked at `sync`'s schedule (Unix seconds), if ever.
    pub fn schedule_mark(&self, sync: &str) -> Result<Option<i64>, AppError> {
        self.state.schedule_mark(sync).map_err(failed)
    }

    /// Records when the service looked at `sync`'s schedule (Unix seconds).
    pub fn set_schedule_mark(&self, sync: &str, at: i64) -> Result<(), AppError> {
        self.state.set_schedule_mark(sync, at).map_err(failed)
    }
}
