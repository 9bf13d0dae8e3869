//! The episode state machine of one condition (pure): what an observation of the condition
//! does to its stored episode, and what the route is told.

use crate::state::AlertEpisode;

/// What one look at a condition found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The condition holds; the text says how.
    Active(String),
    /// The condition does not hold.
    Inactive,
    /// This run says nothing about the condition (it stopped before it could be judged).
    Unknown,
}

/// What a route is told of an episode; `state` in the posted JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// A new episode: the condition started holding.
    Firing,
    /// The episode goes on, and `repeat_after` has passed since the route last heard of it.
    Reminder,
    /// The episode is over.
    Recovered,
}

impl AlertState {
    /// The name posted (`firing`, `reminder`, `recovered`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Reminder => "reminder",
            AlertState::Recovered => "recovered",
        }
    }
}

/// The result of one observation: the episode to store (when it changed) and what to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The episode to store, when anything about it changed.
    pub store: Option<AlertEpisode>,
    /// What to tell the route, if anything, with the episode it is about.
    pub send: Option<(AlertState, AlertEpisode)>,
}

/// Applies `seen` at `now` (Unix seconds) to the latest episode `last`: a new episode fires
/// when the condition starts holding, a reminder goes out at most every `repeat_after_s`
/// while it holds, and one `recovered` when it stops.
pub fn step(
    last: Option<&AlertEpisode>,
    seen: &Observation,
    now: i64,
    repeat_after_s: u64,
) -> Step {
    let nothing = Step {
        store: None,
        send: None,
    };
    let open = last.filter(|e| e.open);
    match (seen, open) {
        (Observation::Unknown, _) | (Observation::Inactive, None) => nothing,
        (Observation::Active(_), None) => {
            let episode = AlertEpisode {
                number: last.map_or(1, |e| e.number + 1),
                open: true,
                since: now,
                last_sent: now,
            };
            Step {
                store: Some(episode.clone()),
                send: Some((AlertState::Firing, episode)),
            }
        }
        (Observation::Active(_), Some(e)) => {
            let due = now.saturating_sub(e.last_sent)
                >= i64::try_from(repeat_after_s).unwrap_or(i64::MAX);
            if !due {
                return nothing;
            }
            let episode = AlertEpisode {
                last_sent: now,
                ..e.clone()
            };
            Step {
                store: Some(episode.clone()),
                send: Some((AlertState::Reminder, episode)),
            }
        }
        (Observation::Inactive, Some(e)) => {
            let episode = AlertEpisode {
                open: false,
                last_sent: now,
                ..e.clone()
            };
            Step {
                store: Some(episode.clone()),
                send: Some((AlertState::Recovered, episode)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active() -> Observation {
        Observation::Active("failed: boom".into())
    }

    /// Runs observations through the machine, storing as it says; returns what was sent.
    fn run(observations: &[(i64, Observation)], repeat: u64) -> Vec<(i64, AlertState, u64)> {
        let mut stored: Option<AlertEpisode> = None;
        let mut sent = Vec::new();
        for (now, seen) in observations {
            let s = step(stored.as_ref(), seen, *now, repeat);
            if let Some(e) = s.store {
                stored = Some(e);
            }
            if let Some((state, e)) = s.send {
                sent.push((*now, state, e.number));
            }
        }
        sent
    }

    #[test]
    fn a_lasting_failure_fires_once_then_reminds_only_past_repeat_after_then_recovers_once() {
        let mut seen: Vec<(i64, Observation)> = (0..30).map(|t| (t, active())).collect();
        seen.push((30, Observation::Unknown));
        seen.extend((31..40).map(|t| (t, Observation::Inactive)));
        assert_eq!(
            run(&seen, 3600),
            vec![(0, AlertState::Firing, 1), (31, AlertState::Recovered, 1)]
        );
        assert_eq!(
            run(&seen, 10),
            vec![
                (0, AlertState::Firing, 1),
                (10, AlertState::Reminder, 1),
                (20, AlertState::Reminder, 1),
                (31, AlertState::Recovered, 1)
            ]
        );
    }

    #[test]
    fn a_new_failure_after_a_recovery_is_the_next_episode() {
        let seen = [
            (0, Observation::Inactive),
            (1, active()),
            (2, Observation::Inactive),
            (3, Observation::Unknown),
            (4, active()),
            (5, active()),
            (6, Observation::Inactive),
        ];
        assert_eq!(
            run(&seen, 3600),
            vec![
                (1, AlertState::Firing, 1),
                (2, AlertState::Recovered, 1),
                (4, AlertState::Firing, 2),
                (6, AlertState::Recovered, 2)
            ]
        );
    }

    #[test]
    fn nothing_is_stored_while_nothing_changes() {
        let open = AlertEpisode {
            number: 1,
            open: true,
            since: 0,
            last_sent: 0,
        };
        assert_eq!(step(Some(&open), &active(), 5, 60).store, None);
        assert_eq!(step(None, &Observation::Inactive, 5, 60).store, None);
        assert_eq!(
            step(Some(&open), &Observation::Unknown, 500, 60).store,
            None
        );
    }
}
