//! What the service's watch judges between runs: a run going on for longer than a route's
//! `run_longer_than` (fired while it runs, once per episode, ended by the run's end), and
//! when the stale clock of a sync that never succeeded started. The watch looks as often as
//! its shortest limit needs ([`check_every`]).

use super::conditions::Condition;
use super::episode::Observation;
use super::{advance, message, post, routes_for, Notice};
use crate::domain::{RunRecord, RunStatus};
use crate::state::StateStore;
use crate::workspace::Workspace;
use std::time::Duration;

/// The longest time between two looks of the watch.
const LONGEST_CHECK: Duration = Duration::from_secs(30);

/// How long the watch waits between looks for `ws`: a quarter of the shortest
/// `stale_after` or `run_longer_than`, between 1 and 30 seconds.
pub fn check_every(ws: &Workspace) -> Duration {
    check_every_for(
        ws.alerts
            .iter()
            .flat_map(|a| [a.conditions.stale_after_s, a.conditions.run_longer_than_s])
            .flatten(),
    )
}

fn check_every_for(limits_s: impl Iterator<Item = u64>) -> Duration {
    limits_s
        .map(|s| Duration::from_secs((s / 4).max(1)))
        .min()
        .unwrap_or(LONGEST_CHECK)
        .min(LONGEST_CHECK)
}

fn started_at(run: &RunRecord) -> Option<i64> {
    run.started_at
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// What a run going on for `elapsed_s` says about a route's `run_longer_than` of `limit_s`.
pub fn long_run_while_running(run_id: &str, elapsed_s: i64, limit_s: u64) -> Observation {
    if elapsed_s > i64::try_from(limit_s).unwrap_or(i64::MAX) {
        Observation::Active(format!(
            "run {run_id} has been running for {elapsed_s} s, longer than {limit_s} s"
        ))
    } else {
        Observation::Unknown
    }
}

/// What a finished run says about `run_longer_than`, given the episode stored for it: an
/// episode the watch opened while this run went on ends with the run; otherwise the run's
/// duration judges (`seen`).
pub fn long_run_at_end(
    episode: Option<&crate::state::AlertEpisode>,
    run: &RunRecord,
    seen: Observation,
) -> Observation {
    let opened_during_run = episode
        .filter(|e| e.open)
        .zip(started_at(run))
        .is_some_and(|(e, started)| e.since >= started);
    if opened_during_run && run.status != RunStatus::Running {
        Observation::Inactive
    } else {
        seen
    }
}

/// Fires `long_run` for every run of `ws`'s syncs going on (in this process or another)
/// for longer than a route's `run_longer_than`; reminders at most every `repeat_after`.
pub async fn check_long_runs(http: &reqwest::Client, ws: &Workspace, state: &StateStore) {
    let now = jiff::Timestamp::now().as_second();
    let running = match state.running_runs() {
        Ok(running) => running,
        Err(e) => return tracing::warn!("long-run alerts: {e}"),
    };
    let mut sends = Vec::new();
    for (_, run_id) in running {
        let Ok(Some(run)) = state.run(&run_id) else {
            continue;
        };
        if run.draft || run.status != RunStatus::Running {
            continue;
        }
        let Some(started) = started_at(&run) else {
            continue;
        };
        for (route, alert) in routes_for(ws, &run.sync) {
            let Some(limit) = alert.conditions.run_longer_than_s else {
                continue;
            };
            let seen = long_run_while_running(&run.run_id, now - started, limit);
            let Observation::Active(detail) = &seen else {
                continue;
            };
            let key = format!("{route} {} {}", run.sync, Condition::LongRun.as_str());
            let repeat = alert.conditions.repeat_after_s;
            let Some((st, episode)) = advance(state, &key, &seen, now, repeat) else {
                continue;
            };
            let notice = Notice {
                sync: &run.sync,
                condition: Condition::LongRun,
                state: st,
                episode: &episode,
                detail,
                run: Some(&run),
            };
            sends.push((alert, message(ws, &notice)));
        }
    }
    futures::future::join_all(sends.iter().map(|(alert, body)| post(http, alert, body))).await;
}

/// Since when `sync` has gone without a success, and how to say it: its last success's end,
/// or, for a sync without a success in its recent history, when the watch first saw it so
/// or its oldest run kept started, whichever was first (kept in the state).
pub fn stale_since(
    state: &StateStore,
    sync: &str,
    now: i64,
) -> Option<(jiff::Timestamp, &'static str)> {
    if let Some(at) = super::last_success(state, sync) {
        return Some((at, "no successful run since"));
    }
    // The oldest run kept, if it started earlier than now: its first failed attempt.
    let oldest_run = || {
        let runs = state.runs(Some(sync), crate::workspace::DEFAULT_KEEP_RUNS as usize);
        runs.ok()
            .and_then(|runs| runs.last().and_then(started_at))
            .map_or(now, |t| t.min(now))
    };
    let first = match state.first_seen_unsucceeded(sync, oldest_run) {
        Ok(first) => first,
        Err(e) => {
            tracing::warn!(sync, "stale alerts: {e}");
            return None;
        }
    };
    jiff::Timestamp::from_second(first).ok().map(|at| {
        (
            at,
            "no successful run in its history; failing or not run since",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::AlertEpisode;

    fn run(status: RunStatus, started: &str) -> RunRecord {
        let mut r = crate::app::failed_start_record("s", "t", "u", false, "x");
        r.status = status;
        r.started_at = started.into();
        r
    }

    #[test]
    fn a_long_run_fires_while_it_goes_on_and_its_end_ends_the_episode() {
        assert_eq!(long_run_while_running("r", 60, 60), Observation::Unknown);
        assert!(matches!(
            long_run_while_running("r", 61, 60),
            Observation::Active(m) if m.contains("61 s, longer than 60 s")
        ));
        // 2026-01-01T00:00:00Z
        let start = 1_767_225_600;
        let opened = AlertEpisode {
            number: 1,
            open: true,
            since: start + 61,
            last_sent: start + 61,
        };
        let slow = Observation::Active("took 90 s".into());
        let done = run(RunStatus::Succeeded, "2026-01-01T00:00:00Z");
        assert_eq!(
            long_run_at_end(Some(&opened), &done, slow.clone()),
            Observation::Inactive,
            "the episode the watch opened during the run ends with it"
        );
        // An episode of an earlier run, or none: the run's own duration judges.
        let earlier = AlertEpisode {
            since: start - 10,
            ..opened.clone()
        };
        assert_eq!(long_run_at_end(Some(&earlier), &done, slow.clone()), slow);
        assert_eq!(long_run_at_end(None, &done, slow.clone()), slow);
    }

    #[test]
    fn the_watch_looks_as_often_as_its_shortest_limit_needs() {
        assert_eq!(check_every_for([].into_iter()), LONGEST_CHECK);
        assert_eq!(check_every_for([3600].into_iter()), LONGEST_CHECK);
        assert_eq!(
            check_every_for([3600, 20].into_iter()),
            Duration::from_secs(5)
        );
        assert_eq!(check_every_for([2].into_iter()), Duration::from_secs(1));
    }
}
