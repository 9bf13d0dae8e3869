//! Alert episodes: for each alert route, sync and condition, whether the condition is firing,
//! since when, which episode it is and when the route last heard of it. Kept in the state so
//! that a restarted service neither fires again what it already reported nor forgets to
//! report a recovery. Beside them, the same table keeps when the stale watch first saw a
//! sync that never succeeded (its staleness counts from then).

use super::{StateError, StateOp, StateStore};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

/// episode key (route, sync, condition) → JSON [`AlertEpisode`]; `first-seen SYNC` → JSON
/// Unix seconds.
const ALERT_EPISODES: TableDefinition<&str, &[u8]> = TableDefinition::new("alert_episodes");

/// The latest episode of one condition of one sync, as one route saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEpisode {
    /// Counts the episodes of this condition, from 1.
    pub number: u64,
    /// Whether the condition is firing (the episode is not over).
    pub open: bool,
    /// When the episode began (Unix seconds).
    pub since: i64,
    /// When the route was last told (firing, reminder or recovered; Unix seconds).
    pub last_sent: i64,
}

impl StateStore {
    /// The latest episode stored under `key`, if any.
    pub fn alert_episode(&self, key: &str) -> Result<Option<AlertEpisode>, StateError> {
        self.read_table(
            StateOp::ReadAlertEpisodes,
            ALERT_EPISODES,
            || None,
            |t, doing| {
                let v = t.get(key).map_err(|e| doing.err(e))?;
                v.map(|v| serde_json::from_slice(v.value()).map_err(|e| doing.corrupt(e)))
                    .transpose()
            },
        )
    }

    /// Stores the latest episode under `key`.
    pub fn set_alert_episode(&self, key: &str, episode: &AlertEpisode) -> Result<(), StateError> {
        let doing = self.doing(StateOp::WriteAlertEpisodes);
        let bytes = serde_json::to_vec(episode).map_err(|e| doing.other(e))?;
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        {
            let mut t = txn.open_table(ALERT_EPISODES).map_err(|e| doing.err(e))?;
            t.insert(key, bytes.as_slice()).map_err(|e| doing.err(e))?;
        }
        txn.commit().map_err(|e| doing.err(e))
    }

    /// When a sync that never succeeded was first seen by the stale watch (Unix seconds): the
    /// stored time, or `first` (called only then) stored as that time.
    pub fn first_seen_unsucceeded(
        &self,
        sync: &str,
        first: impl FnOnce() -> i64,
    ) -> Result<i64, StateError> {
        let key = format!("first-seen {sync}");
        let stored = self.read_table(
            StateOp::ReadAlertEpisodes,
            ALERT_EPISODES,
            || None,
            |t, doing| {
                let v = t.get(key.as_str()).map_err(|e| doing.err(e))?;
                v.map(|v| serde_json::from_slice::<i64>(v.value()).map_err(|e| doing.corrupt(e)))
                    .transpose()
            },
        )?;
        if let Some(at) = stored {
            return Ok(at);
        }
        let now = first();
        let doing = self.doing(StateOp::WriteAlertEpisodes);
        let bytes = serde_json::to_vec(&now).map_err(|e| doing.other(e))?;
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        {
            let mut t = txn.open_table(ALERT_EPISODES).map_err(|e| doing.err(e))?;
            t.insert(key.as_str(), bytes.as_slice())
                .map_err(|e| doing.err(e))?;
        }
        txn.commit().map_err(|e| doing.err(e))?;
        Ok(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_survives_reopening_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let ep = AlertEpisode {
            number: 2,
            open: true,
            since: 10,
            last_sent: 20,
        };
        {
            let state = StateStore::open(dir.path()).unwrap();
            assert_eq!(state.alert_episode("k").unwrap(), None);
            state.set_alert_episode("k", &ep).unwrap();
        }
        let state = StateStore::open(dir.path()).unwrap();
        assert_eq!(state.alert_episode("k").unwrap(), Some(ep));
    }

    #[test]
    fn a_sync_is_first_seen_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        assert_eq!(state.first_seen_unsucceeded("s", || 100).unwrap(), 100);
        assert_eq!(state.first_seen_unsucceeded("s", || 200).unwrap(), 100);
        assert_eq!(state.first_seen_unsucceeded("t", || 200).unwrap(), 200);
    }
}
