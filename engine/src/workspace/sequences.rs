//! Sequences: a sync's `after` names the syncs that must succeed before it runs. Checked at
//! load: every name is another existing sync, and no chain of `after` comes back to where
//! it started (the syncs of a cycle would wait for each other forever).

use super::definitions::SyncConfig;
use super::errors::{unknown, ConfigError};
use std::collections::BTreeMap;

/// `after` names existing syncs, not the sync itself, and no chain comes back to where it
/// started (a cycle would never run). Only the first cycle found is reported.
pub(super) fn check_sequences(syncs: &BTreeMap<String, SyncConfig>, errors: &mut Vec<ConfigError>) {
    for sync in syncs.values() {
        for (i, upstream) in sync.after.iter().enumerate() {
            if upstream == &sync.name {
                errors.push(
                    sync.origin
                        .error(&format!("after[{i}]"), "a sync cannot run after itself"),
                );
            } else if !syncs.contains_key(upstream) {
                errors.push(sync.origin.error(
                    &format!("after[{i}]"),
                    unknown("sync", upstream, syncs.keys()),
                ));
            }
        }
    }
    for start in syncs.values() {
        let mut path = vec![start.name.clone()];
        if cycle_back_to(syncs, &start.name, &mut path) {
            errors.push(start.origin.error(
                "after",
                format!(
                    "syncs run after each other in a cycle: {}",
                    path.join(" → ")
                ),
            ));
            return;
        }
    }
}

/// Whether following `after` from the last sync of `path` comes back to `start` through at
/// least one other sync; `path` then holds the cycle. (A sync after itself is reported on
/// its own above.)
fn cycle_back_to(
    syncs: &BTreeMap<String, SyncConfig>,
    start: &str,
    path: &mut Vec<String>,
) -> bool {
    let Some(current) = path.last().and_then(|name| syncs.get(name)) else {
        return false;
    };
    for up in &current.after {
        if up == start && path.len() > 1 {
            path.push(up.clone());
            return true;
        }
        if up != start && syncs.contains_key(up) && !path.contains(up) {
            path.push(up.clone());
            if cycle_back_to(syncs, start, path) {
                return true;
            }
            path.pop();
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::definitions::Origin;

    /// Syncs named by the first element of each entry, each after the others listed.
    fn syncs(after: &[(&str, &[&str])]) -> BTreeMap<String, SyncConfig> {
        after
            .iter()
            .map(|(name, after)| {
                let sync = SyncConfig {
                    name: name.to_string(),
                    model: "m".into(),
                    destination: "d".into(),
                    mode: crate::domain::SyncMode::Upsert,
                    mapping: vec![],
                    field_rules: Default::default(),
                    batch_size: None,
                    event_id_field: "event_id".into(),
                    checks: vec![],
                    rate_limit: Default::default(),
                    time_budget_s: None,
                    max_in_flight: 1,
                    description: None,
                    schedule: None,
                    after: after.iter().map(|s| s.to_string()).collect(),
                    catch_up: true,
                    origin: Origin {
                        file: "backflow.toml".into(),
                        key: format!("syncs.{name}"),
                    },
                };
                (name.to_string(), sync)
            })
            .collect()
    }

    fn errors_of(after: &[(&str, &[&str])]) -> Vec<String> {
        let mut errors = Vec::new();
        check_sequences(&syncs(after), &mut errors);
        errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_chain_without_a_cycle_is_fine() {
        assert!(errors_of(&[("a", &[]), ("b", &["a"]), ("c", &["a", "b"])]).is_empty());
    }

    #[test]
    fn a_sync_after_itself_or_after_nothing_known_is_refused() {
        assert_eq!(
            errors_of(&[("a", &["a", "zz"])]),
            [
                "backflow.toml: syncs.a.after[0]: a sync cannot run after itself",
                "backflow.toml: syncs.a.after[1]: no sync named \"zz\" (defined: a)",
            ]
        );
    }

    #[test]
    fn a_cycle_is_reported_once_with_its_path() {
        assert_eq!(
            errors_of(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &["a"])]),
            ["backflow.toml: syncs.a.after: syncs run after each other in a cycle: a → c → b → a"]
        );
    }
}
