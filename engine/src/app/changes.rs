//! Governance operations: the diff against the published configuration, change requests
//! (submit, review, publish) and the audit log.

use super::{App, AppError};
use crate::authz::{authorize, Action, Actor};
use crate::governance::{self, ChangeRequest, ConfigDiff};
use crate::state::AuditEntry;
use crate::workspace::ConfigFiles;

/// The audit log with the result of checking its hash chain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditLog {
    /// The entries: oldest first from [`App::audit`], newest first from
    /// [`App::audit_filtered`].
    pub entries: Vec<AuditEntry>,
    /// The sequence number of the first entry whose hash does not verify, if any (only
    /// [`App::audit`] checks; a page is not checked).
    pub broken_at: Option<u64>,
    /// The last entry pruned (`[state] keep_audit_days`): the first kept entry chains to it.
    pub anchor: Option<crate::state::AuditAnchor>,
}

/// Which audit entries to show (`GET /api/v1/audit`, the UI's audit page).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only entries after this sequence number.
    pub after: Option<u64>,
    /// Only entries before this sequence number (the previous page's last entry).
    pub before: Option<u64>,
    /// Only entries by this user.
    pub user: Option<String>,
    /// Only entries with this action (or, with `action_prefix`, actions starting with it).
    pub action: Option<String>,
    /// Match `action` as a prefix (the UI's `change.` shows every change event).
    pub action_prefix: bool,
    /// The most entries returned, newest first.
    pub limit: usize,
}

impl AuditFilter {
    fn matches(&self, e: &AuditEntry) -> bool {
        self.after.is_none_or(|a| e.seq > a)
            && self.user.as_ref().is_none_or(|u| &e.event.user == u)
            && self.action.as_ref().is_none_or(|a| {
                if self.action_prefix {
                    e.event.action.starts_with(a.as_str())
                } else {
                    &e.event.action == a
                }
            })
    }
}

impl App {
    /// The whole audit log, oldest first, with the result of checking its hash chain (from
    /// the anchor the pruning left, if any).
    pub fn audit(&self, actor: &Actor) -> Result<AuditLog, AppError> {
        authorize(actor, Action::ReadAudit)?;
        let failed = |e: crate::state::StateError| AppError::Failed(e.to_string());
        let anchor = self.state.audit_anchor().map_err(failed)?;
        let entries = self.state.audit_log().map_err(failed)?;
        let mut prev = anchor.as_ref().map(|a| a.hash.clone()).unwrap_or_default();
        let mut broken_at = None;
        for e in &entries {
            if !e.verifies(&prev) {
                broken_at = Some(e.seq);
                break;
            }
            prev = e.hash.clone();
        }
        Ok(AuditLog {
            entries,
            broken_at,
            anchor,
        })
    }

    /// A page of the audit entries `filter` selects, newest first. Reads only as far as the
    /// page needs and does not check the chain ([`App::audit`] does).
    pub fn audit_filtered(
        &self,
        actor: &Actor,
        filter: &AuditFilter,
    ) -> Result<AuditLog, AppError> {
        authorize(actor, Action::ReadAudit)?;
        let entries = self
            .state
            .audit_page(filter.after, filter.before, filter.limit, |e| {
                filter.matches(e)
            })
            .map_err(|e| AppError::Failed(e.to_string()))?;
        Ok(AuditLog {
            entries,
            broken_at: None,
            anchor: None,
        })
    }

    /// What the working copy changes against the published configuration.
    pub async fn diff(&self, actor: &Actor) -> Result<ConfigDiff, AppError> {
        authorize(actor, Action::Diff)?;
        let files = ConfigFiles::read(&self.root).map_err(|e| AppError::Invalid(e.to_string()))?;
        governance::diff(&self.host, &self.state, &files, &self.working)
            .await
            .map_err(|e| AppError::Failed(e.to_string()))
    }

    /// Submits the working copy as a change request.
    pub async fn submit_change(
        &self,
        actor: &Actor,
        message: &str,
    ) -> Result<ChangeRequest, AppError> {
        authorize(actor, Action::SubmitChange)?;
        governance::submit(&self.host, &self.root, &self.state, actor, message)
            .await
            .map_err(|e| AppError::Refused(e.to_string()))
    }

    /// Whether the working copy (files and plugin builds) is exactly an approved change
    /// request, or with `published_only` the published configuration (`change verify`).
    pub async fn verify_change(
        &self,
        actor: &Actor,
        published_only: bool,
    ) -> Result<governance::Verification, AppError> {
        authorize(actor, Action::ReadChanges)?;
        governance::verify(&self.host, &self.root, &self.state, published_only)
            .await
            .map_err(|e| AppError::Invalid(e.to_string()))
    }

    /// Change requests, newest first.
    pub fn list_changes(
        &self,
        actor: &Actor,
        limit: usize,
    ) -> Result<Vec<ChangeRequest>, AppError> {
        authorize(actor, Action::ReadChanges)?;
        governance::list_changes(&self.state, limit).map_err(|e| AppError::Failed(e.to_string()))
    }

    /// One change request by id.
    pub fn change(&self, actor: &Actor, id: u64) -> Result<ChangeRequest, AppError> {
        authorize(actor, Action::ReadChanges)?;
        governance::show_change(&self.state, id).map_err(|e| AppError::NotFound(e.to_string()))
    }

    /// Approves (`approve = true`) or rejects a change request.
    pub fn review_change(
        &self,
        actor: &Actor,
        id: u64,
        approve: bool,
        comment: Option<&str>,
    ) -> Result<ChangeRequest, AppError> {
        authorize(
            actor,
            if approve {
                Action::ApproveChange
            } else {
                Action::RejectChange
            },
        )?;
        if approve {
            self.approvals_need_declared_users(&self.change(actor, id)?.unmet())?;
        }
        governance::review(&self.state, actor, id, approve, comment)
            .map_err(|e| AppError::Refused(e.to_string()))
    }

    /// Publishes an approved change; runs starting afterwards use it.
    pub async fn publish_change(&self, actor: &Actor, id: u64) -> Result<ChangeRequest, AppError> {
        authorize(actor, Action::PublishChange)?;
        let change = governance::publish(&self.host, &self.root, &self.state, actor, id)
            .await
            .map_err(|e| AppError::Refused(e.to_string()))?;
        // Load what was just published now rather than on the next run. A failure here is
        // reported again by whatever next needs the configuration.
        if let Err(e) = self.reload_published() {
            tracing::warn!("loading the published configuration: {e}");
        }
        Ok(change)
    }
}
