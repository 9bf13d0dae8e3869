//! Undoing a run and the history of one row: the application-layer side of the changelog
//! the snapshot commit keeps per run (see `state` and `sync::plan::undo`).

use super::{run_sync, App, AppError};
use crate::authz::{authorize, Action, Actor};
use crate::domain::{Delivered, RunRecord};
use crate::state::PendingRow;
use crate::sync::{self, RunOptions, UndoReport, UndoTarget};
use backflow_plugin_sdk::{Column, Value, ValueType};
use serde::Serialize;

/// Sample rows per change shown before an undo.
const UNDO_SAMPLES: usize = 5;
/// Runs of a sync searched for a row's history (changelogs are kept for fewer).
const HISTORY_RUNS: usize = 1000;

/// Everything backflow knows about one row of a sync.
#[derive(Debug, Clone, Serialize)]
pub struct RowHistory {
    /// The sync asked about.
    pub sync: String,
    /// The row's key, as given.
    pub key: String,
    /// What the destination has from us now (the snapshot entry), if anything.
    pub current: Option<serde_json::Value>,
    /// The destination's last refusal, if the row is waiting to be retried.
    pub pending: Option<PendingRow>,
    /// Every retained run that touched the row, newest first.
    pub runs: Vec<RowEvent>,
}

/// What one run did with one row.
#[derive(Debug, Clone, Serialize)]
pub struct RowEvent {
    /// The run's id.
    pub run_id: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// Why the run started.
    pub trigger: String,
    /// Who the run was recorded under.
    pub user: String,
    /// `inserted`, `updated`, `deleted` (acknowledged) or `rejected`.
    pub operation: String,
    /// The values sent (none for a delete or a refusal whose values are not kept).
    pub sent: Option<serde_json::Value>,
    /// What the destination had from us before (none when it was new).
    pub before: Option<serde_json::Value>,
    /// `accepted`, or the destination's answer when it refused the row.
    pub answer: String,
}

impl App {
    /// The inverse plan of a run, as `runs undo` shows it before `--yes`. Sends nothing.
    pub async fn plan_undo(
        &self,
        actor: &Actor,
        run_id: &str,
        force: bool,
    ) -> Result<UndoReport, AppError> {
        authorize(actor, Action::PlanSync)?;
        let run = self.run_record(actor, run_id)?;
        let ws = self.workspace_for(run.draft, std::slice::from_ref(&run.sync))?;
        let target = UndoTarget {
            run_id: run_id.to_string(),
            force,
        };
        sync::plan_undo(
            &self.host,
            &ws,
            &self.state,
            &run.sync,
            &state_key(&run),
            &target,
            UNDO_SAMPLES,
        )
        .await
        .map_err(|e| AppError::Refused(e.to_string()))
    }

    /// Undoes a run: its inverse goes through checks, the approval gate, delivery and
    /// history like any run, recorded as an undo by `actor`.
    pub async fn undo_run(
        &self,
        actor: &Actor,
        run_id: &str,
        force: bool,
    ) -> Result<RunRecord, AppError> {
        authorize(actor, Action::UndoRun)?;
        let run = self.run_record(actor, run_id)?;
        let ws = self.workspace_for(run.draft, std::slice::from_ref(&run.sync))?;
        let options = RunOptions {
            user: actor.user.clone(),
            trigger: format!("undo of run {run_id}"),
            approved_run: None,
            full_resync: false,
            draft: run.draft,
            undo: Some(UndoTarget {
                run_id: run_id.to_string(),
                force,
            }),
            stop: None,
            run_id: None,
        };
        run_sync(&self.host, &ws, &self.state, &run.sync, &options)
            .await
            .map_err(|e| AppError::Failed(e.to_string()))
    }

    /// Every retained run that touched one row of a sync (`key` as `sync plan` prints it:
    /// `42`, or `42|eu` for a composite key), its snapshot entry and any pending refusal.
    pub fn row_history(
        &self,
        actor: &Actor,
        sync: &str,
        key: &str,
        draft: bool,
    ) -> Result<RowHistory, AppError> {
        authorize(actor, Action::ReadRowHistory)?;
        let failed = |e: crate::state::StateError| AppError::Failed(e.to_string());
        let state_key = if draft {
            crate::state::draft_key(sync)
        } else {
            sync.to_string()
        };
        let runs = self
            .state
            .runs(Some(&state_key), HISTORY_RUNS)
            .map_err(failed)?;
        if runs.is_empty() && !self.working.syncs.contains_key(sync) {
            return Err(AppError::NotFound(format!(
                "no sync named {sync} and no runs of one"
            )));
        }
        // The key's fields and types come from the newest changelog (what was last delivered).
        let mut header = None;
        for run in &runs {
            if let Some(h) = self
                .state
                .changelog_header(&state_key, &run.run_id)
                .map_err(failed)?
            {
                header = Some(h);
                break;
            }
        }
        let (columns, key_columns) = header
            .map(|h| (h.columns, h.key_columns))
            .unwrap_or_default();
        let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
        // A key typed as text in one place may be an integer in the state: try each reading.
        let mut chosen = None;
        for candidate in key_candidates(key, &key_columns) {
            let current = self
                .state
                .snapshot_entries(&state_key, &[candidate.as_slice()])
                .map_err(failed)?
                .pop()
                .flatten();
            let changes = self
                .state
                .changelog_entries(&state_key, &ids, &candidate)
                .map_err(failed)?;
            let pending = self
                .state
                .pending_row(&state_key, &candidate)
                .map_err(failed)?;
            if current.is_some() || pending.is_some() || changes.iter().any(Option::is_some) {
                chosen = Some((current, pending, changes));
                break;
            }
        }
        let (current, pending, changes) = chosen.unwrap_or((None, None, vec![None; ids.len()]));
        let json = |d: &Delivered| sync::plan::row_json(&columns, &d.row);
        let rules = self.working.syncs.get(sync).map(|s| &s.field_rules);
        let rules = rules.cloned().unwrap_or_default();
        // Runs newest first. The values a run sent are what the snapshot held after it: the
        // `before` of the next (newer) run that changed the row, or the snapshot entry now.
        let mut after_this: Option<Delivered> = current.clone();
        let mut events = Vec::new();
        for (run, change) in runs.iter().zip(changes) {
            let base = |operation: &str,
                        sent: Option<serde_json::Value>,
                        before: Option<serde_json::Value>,
                        answer: String| RowEvent {
                run_id: run.run_id.clone(),
                started_at: run.started_at.clone(),
                trigger: run.trigger.clone(),
                user: run.user.clone(),
                operation: operation.into(),
                sent,
                before,
                answer,
            };
            if let Some(change) = change {
                let sent = change
                    .sent()
                    .and_then(|fp| after_this.as_ref().filter(|d| d.fp == fp))
                    .map(|after| sent_values(&rules, (&columns, &key_columns), &change, after));
                events.push(base(
                    change.as_str(),
                    sent,
                    change.before().map(json),
                    "accepted".into(),
                ));
                after_this = change.before().cloned();
            } else if let Some(r) = run.rejected.iter().find(|r| r.key == key) {
                events.push(base("rejected", None, None, r.error.clone()));
            }
        }
        Ok(RowHistory {
            sync: sync.into(),
            key: key.into(),
            current: current.as_ref().map(json),
            pending,
            runs: events,
        })
    }
}

/// What a run sent of a row it left as `after`: the row less the fields the sync's field
/// rules left out (issue 36).
fn sent_values(
    rules: &crate::workspace::FieldRules,
    (columns, key_columns): (&[Column], &[Column]),
    change: &crate::domain::RowChange,
    after: &Delivered,
) -> serde_json::Value {
    let (kind, before) = match change.before() {
        Some(b) => (sync::Change::Changed, b.row.as_slice()),
        None => (sync::Change::Added, &[][..]),
    };
    sync::plan::sent_json(rules, columns, key_columns, kind, &after.row, before)
}

/// Where a run's sync keeps its state: the sync's name, or `draft/NAME` for a draft run.
fn state_key(run: &RunRecord) -> String {
    if run.draft {
        crate::state::draft_key(&run.sync)
    } else {
        run.sync.clone()
    }
}

/// Encoded keys a key as text may stand for: each part read as its column's type first, then
/// the whole key read as integers where they parse, then as text.
fn key_candidates(text: &str, key_columns: &[Column]) -> Vec<Vec<u8>> {
    let parts: Vec<&str> = text.split('|').collect();
    let encode = |values: Vec<Value>| {
        let mut out = Vec::new();
        backflow_plugin_sdk::codec::write_row_header(&mut out, values.len() as u32);
        for v in &values {
            backflow_plugin_sdk::codec::write_value(&mut out, v);
        }
        out
    };
    let as_int_or_text = |p: &str| {
        p.parse::<i64>()
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Text(p.to_string()))
    };
    let typed: Vec<Value> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| match key_columns.get(i).map(|c| c.value_type) {
            Some(ValueType::Integer) => as_int_or_text(p),
            Some(ValueType::Decimal) => Value::Decimal(p.to_string()),
            Some(ValueType::Text) => Value::Text(p.to_string()),
            _ => as_int_or_text(p),
        })
        .collect();
    let mut out = vec![encode(typed)];
    for candidate in [
        encode(parts.iter().map(|p| as_int_or_text(p)).collect()),
        encode(parts.iter().map(|p| Value::Text(p.to_string())).collect()),
    ] {
        if !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_tried_as_its_columns_types_then_as_integers_then_as_text() {
        let int = vec![Column::new("id", ValueType::Integer)];
        let c = key_candidates("42", &int);
        assert_eq!(c.len(), 2, "typed (= integers) and text");
        let text = vec![Column::new("id", ValueType::Text)];
        let c2 = key_candidates("42", &text);
        assert_eq!(c2[0], c[1], "a text column reads 42 as text first");
        assert_eq!(key_candidates("a|7", &[]).len(), 2);
    }
}
