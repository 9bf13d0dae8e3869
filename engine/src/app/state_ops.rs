//! Operations on the state as a whole: backing it up while the service runs.

use super::{App, AppError};
use crate::authz::{authorize, Action, Actor};
use crate::state::{AuditEvent, BackupError, BackupReport};
use std::path::Path;

impl App {
    /// Writes a consistent copy of the state to `file` (which must not exist); audited.
    pub fn backup_state(&self, actor: &Actor, file: &Path) -> Result<BackupReport, AppError> {
        authorize(actor, Action::BackupState)?;
        let report = self.state.backup(file).map_err(|e| match e {
            BackupError::Exists(_) => AppError::Invalid(e.to_string()),
            BackupError::Copy { .. } => AppError::Failed(e.to_string()),
        })?;
        let event = AuditEvent {
            user: actor.user.clone(),
            action: "state.backup".into(),
            target: file.display().to_string(),
            config_hash: None,
            detail: serde_json::json!({"tables": report.tables, "entries": report.entries}),
        };
        self.state
            .write_governance(Vec::new(), vec![event])
            .map_err(|e| AppError::Failed(e.to_string()))?;
        Ok(report)
    }
}
