//! Who runs what, when: cron schedules, `after` sequences and API triggers all come here.
//!
//! A sync runs at most once at a time: a trigger that arrives while it runs is folded into
//! one follow-up run (a full resync if any of the folded triggers asked for one); a released
//! approval or an undo waits its turn as a run of its own. Every trigger is answered with
//! the id of the run it started or was folded into, chosen before that run starts. Each sync
//! runs on its own task, so one slow or failing destination holds up nobody else. On
//! shutdown no new run starts, and running ones are asked to stop after their in-flight
//! batches.

use super::repeated::{RepeatedMessage, REPEAT_EVERY};
use crate::app::{App, Queued, RunQueue, RunRequest, ServiceRunError};
use crate::domain::RunStatus;
use crate::schedule::rfc3339;
use crate::sync::{RunError, StopSignal};
use jiff::Timestamp;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::app::{Accepted, Trigger};

#[derive(Default)]
struct Slot {
    running: bool,
    /// Runs waiting for the one going on, in order, each with its id.
    follow_ups: VecDeque<(Trigger, String)>,
}

/// How often a trigger waiting for a sync's lease (held by another process) tries again.
const LEASE_RETRY: Duration = Duration::from_secs(2);

pub use crate::domain::SERVICE_USER;

/// The service's runs: one slot per sync, follow-ups folded, a stop signal for shutdown.
pub struct Scheduler {
    app: Arc<App>,
    slots: Mutex<HashMap<String, Slot>>,
    accepting: std::sync::atomic::AtomicBool,
    stop: StopSignal,
    idle: tokio::sync::Notify,
}

impl Scheduler {
    /// A scheduler running `app`'s syncs.
    pub fn new(app: Arc<App>) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            app,
            slots: Mutex::new(HashMap::new()),
            accepting: true.into(),
            stop: StopSignal::default(),
            idle: tokio::sync::Notify::new(),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a run of `sync`: starts it, or folds it into the follow-up of the run going on
    /// (a release or an undo is queued as a run of its own). Answers with the run's id.
    pub fn trigger(self: &Arc<Self>, sync: &str, trigger: Trigger) -> Queued {
        // Checked under the slots lock, which `shut_down` also takes to stop accepting: a run
        // is either counted by the shutdown or never started.
        let mut slots = self.slots();
        if !self.accepting.load(std::sync::atomic::Ordering::SeqCst) {
            return Queued {
                accepted: Accepted::ShuttingDown,
                run_id: None,
            };
        }
        let slot = slots.entry(sync.to_string()).or_default();
        if slot.running {
            let folded = if trigger.is_plain() {
                slot.follow_ups.iter_mut().find(|(t, _)| t.is_plain())
            } else {
                None
            };
            let run_id = match folded {
                Some((earlier, id)) => {
                    *earlier = merge(earlier.clone(), trigger);
                    id.clone()
                }
                None => {
                    let id = ulid::Ulid::new().to_string();
                    self.app.expect_run(&id);
                    slot.follow_ups.push_back((trigger, id.clone()));
                    id
                }
            };
            tracing::info!(
                sync,
                run_id,
                "run requested while one is going on: it starts when that one ends"
            );
            return Queued {
                accepted: Accepted::Coalesced,
                run_id: Some(run_id),
            };
        }
        slot.running = true;
        drop(slots);
        let run_id = ulid::Ulid::new().to_string();
        self.app.expect_run(&run_id);
        let this = self.clone();
        let (sync, id) = (sync.to_string(), run_id.clone());
        tokio::spawn(async move { this.run_until_caught_up(sync, trigger, id).await });
        Queued {
            accepted: Accepted::Started,
            run_id: Some(run_id),
        }
    }

    /// Whether a run of `sync` is going on, and whether one is queued after it.
    pub fn status(&self, sync: &str) -> (bool, bool) {
        self.slots()
            .get(sync)
            .map(|s| (s.running, !s.follow_ups.is_empty()))
            .unwrap_or((false, false))
    }

    /// How many syncs are running.
    pub fn runs_in_flight(&self) -> usize {
        self.slots().values().filter(|s| s.running).count()
    }

    async fn run_until_caught_up(self: Arc<Self>, sync: String, first: Trigger, first_id: String) {
        // Frees the slot if this panics: a sync left "running" for ever would fold every later
        // trigger into a follow-up that never starts. (On a normal end the loop frees it under
        // the lock; freeing it again here could clear a run started since.)
        struct SlotGuard<'a>(&'a Scheduler, &'a str);
        impl Drop for SlotGuard<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    if let Some(slot) = self.0.slots().get_mut(self.1) {
                        slot.running = false;
                        slot.follow_ups.clear();
                    }
                }
                self.0.idle.notify_waiters();
            }
        }
        let _guard = SlotGuard(&self, &sync);
        let (mut trigger, mut run_id) = (first, first_id);
        loop {
            let request = RunRequest {
                full_resync: trigger.full_resync,
                draft: false,
                trigger: trigger.reason.clone(),
                stop: Some(self.stop.clone()),
                run_id: Some(run_id.clone()),
                approved_run: trigger.approved_run.clone(),
                undo: trigger.undo.clone(),
            };
            let succeeded = match self
                .app
                .run_for_service(&sync, &request, &trigger.user)
                .await
            {
                // Another process (a CLI run, a released approval) holds the sync's lease: the
                // trigger waits for it instead of being dropped.
                Err(ServiceRunError::Run(RunError::LeaseBusy { .. }))
                    if self.accepting.load(std::sync::atomic::Ordering::SeqCst) =>
                {
                    tracing::info!(
                        sync,
                        trigger = trigger.reason,
                        "the sync is running elsewhere; this run starts when it ends"
                    );
                    tokio::time::sleep(LEASE_RETRY).await;
                    continue;
                }
                // The run logged its own "run finished" line (with its trigger).
                Ok(record) => record.status == RunStatus::Succeeded,
                // The service is shutting down while the sync runs elsewhere: not a failure.
                Err(ServiceRunError::Run(e @ RunError::LeaseBusy { .. })) => {
                    tracing::info!(sync, trigger = trigger.reason, "run not started: {e}");
                    false
                }
                // Recorded as a failed run (and alerted) under the id the trigger was answered
                // with, not only logged; a released approval's held run says so too.
                Err(e) => {
                    let error = e.to_string();
                    self.app
                        .record_failed_queued_start(&sync, &request, &trigger.user, &error)
                        .await;
                    false
                }
            };
            if succeeded {
                self.start_dependents(&sync);
            }
            let next = {
                let mut slots = self.slots();
                let slot = slots.entry(sync.clone()).or_default();
                let next = if self.accepting.load(std::sync::atomic::Ordering::SeqCst) {
                    slot.follow_ups.pop_front()
                } else {
                    None
                };
                if next.is_none() {
                    slot.running = false;
                }
                next
            };
            match next {
                Some((t, id)) => {
                    run_id = id;
                    trigger = if t.is_plain() {
                        Trigger {
                            reason: format!("{} (coalesced)", t.reason),
                            ..t
                        }
                    } else {
                        t
                    };
                }
                None => break,
            }
        }
    }

    /// After `upstream` succeeded: starts every sync that runs after it and whose other
    /// upstream syncs have all succeeded since it last ran. A failed upstream stops its chain.
    fn start_dependents(self: &Arc<Self>, upstream: &str) {
        let ws = match self.app.runnable_workspace() {
            Ok(ws) => ws,
            Err(e) => return tracing::error!("sequences after {upstream}: {e}"),
        };
        for sync in ws
            .syncs
            .values()
            .filter(|s| s.after.iter().any(|u| u == upstream))
        {
            let last_own = self.app.last_run(&sync.name).map(|(id, _)| id);
            let ready = sync.after.iter().all(|u| match self.app.last_run(u) {
                Some((id, status)) => {
                    status == RunStatus::Succeeded && last_own.as_ref().is_none_or(|own| id > *own)
                }
                None => false,
            });
            if ready {
                self.trigger(
                    &sync.name,
                    Trigger::run(format!("after {upstream}"), SERVICE_USER, false),
                );
            } else {
                tracing::info!(
                    sync = sync.name,
                    upstream,
                    "not started: not every upstream sync has succeeded since its last run"
                );
            }
        }
    }

    /// Fires cron schedules until shutdown. The last fire handled per sync is kept in the
    /// state, so a restart knows what it missed.
    pub async fn run_schedules(self: Arc<Self>, tick: Duration) {
        let mut seen: BTreeMap<String, i64> = BTreeMap::new();
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A configuration that cannot run is said at start, then every few minutes.
        let mut unusable = RepeatedMessage::new(REPEAT_EVERY);
        while self.accepting.load(std::sync::atomic::Ordering::SeqCst) {
            interval.tick().await;
            // Read each tick: a publish changes schedules without a restart.
            let ws = match self.app.runnable_workspace() {
                Ok(ws) => {
                    unusable.clear();
                    ws
                }
                Err(e) => {
                    self.say_unusable(&mut unusable, &e);
                    continue;
                }
            };
            let now = Timestamp::now();
            // A schedule removed by a publish and added back later starts over (catch-up rules
            // apply again), rather than firing at once from a stale mark.
            seen.retain(|name, _| ws.syncs.get(name).is_some_and(|s| s.schedule.is_some()));
            for sync in ws.syncs.values() {
                let Some(schedule) = &sync.schedule else {
                    continue;
                };
                let first_look = !seen.contains_key(&sync.name);
                let fire = match seen.get(&sync.name) {
                    // First look at this sync since the service started: anything missed?
                    None => {
                        let mark = match self.app.schedule_mark(&sync.name) {
                            Ok(mark) => mark,
                            Err(e) => {
                                // Try again next tick rather than overwrite a mark we could not read.
                                tracing::warn!(sync = sync.name, "reading the schedule mark: {e}");
                                continue;
                            }
                        };
                        let missed = mark
                            .and_then(|m| Timestamp::from_second(m).ok())
                            .and_then(|m| schedule.missed(m, now));
                        match missed {
                            Some(at) if sync.catch_up => {
                                Some(format!("schedule (missed at {})", rfc3339(at)))
                            }
                            Some(at) => {
                                tracing::info!(sync = sync.name, missed = rfc3339(at), "a schedule fire was missed while the service was down; catch_up = false skips it");
                                None
                            }
                            None => None,
                        }
                    }
                    Some(mark) => {
                        let due = Timestamp::from_second(*mark)
                            .ok()
                            .and_then(|m| schedule.next_after(m))
                            .is_some_and(|next| next <= now);
                        due.then(|| "schedule".to_string())
                    }
                };
                seen.insert(sync.name.clone(), now.as_second());
                // Stored only when something happened (a durable write per tick would be an
                // fsync four times a second): fires after the stored mark are the ones missed.
                if first_look || fire.is_some() {
                    if let Err(e) = self.app.set_schedule_mark(&sync.name, now.as_second()) {
                        tracing::warn!(sync = sync.name, "could not record the schedule mark: {e}");
                    }
                }
                if let Some(reason) = fire {
                    self.trigger(&sync.name, Trigger::run(reason, SERVICE_USER, false));
                }
            }
        }
    }

    /// Logs why the configuration cannot run, unless it was just said: a governed workspace
    /// with nothing published gets the commands that publish its first change.
    fn say_unusable(&self, unusable: &mut RepeatedMessage, e: &crate::app::AppError) {
        let every = REPEAT_EVERY.as_secs() / 60;
        if self.app.awaiting_first_publish() {
            let message = format!("nothing is published yet: this workspace requires approvals ([users] is set), so the service runs nothing until a change is published. Run `backflow change submit -m MESSAGE`, have an admin other than its author approve it (`backflow --as ADMIN change approve ID`), then `backflow change publish ID`; the service picks it up without a restart (said again every {every} minutes until then)");
            if unusable.due(&message, std::time::Instant::now()) {
                tracing::warn!("{message}");
            }
        } else {
            let message =
                format!("schedules: {e} (said again every {every} minutes while it lasts)");
            if unusable.due(&message, std::time::Instant::now()) {
                tracing::error!("{message}");
            }
        }
    }

    /// Stops starting runs, asks running ones to stop after their in-flight batches, and
    /// waits for them up to `grace`. Returns how many were still running.
    pub async fn shut_down(&self, grace: Duration) -> usize {
        {
            let _slots = self.slots();
            self.accepting
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
        self.stop.stop();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.idle.notified();
            let running = self.runs_in_flight();
            if running == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.runs_in_flight();
            }
        }
    }
}

impl RunQueue for Arc<Scheduler> {
    fn trigger(&self, sync: &str, trigger: Trigger) -> Queued {
        Scheduler::trigger(self, sync, trigger)
    }
}

/// Two triggers folded into one run: a full resync if either asked for one, recorded under
/// the user who asked for it (the run's approval gate must see who wanted the full resync,
/// not whoever came last), else under the later user; both reasons are noted.
fn merge(earlier: Trigger, later: Trigger) -> Trigger {
    let reason = if earlier.reason == later.reason || later.reason.len() > 200 {
        later.reason
    } else if earlier.reason.split(" + ").any(|r| r == later.reason) {
        earlier.reason
    } else {
        format!("{} + {}", earlier.reason, later.reason)
    };
    let user = if earlier.full_resync && !later.full_resync {
        earlier.user
    } else {
        later.user
    };
    Trigger {
        full_resync: earlier.full_resync || later.full_resync,
        ..Trigger::run(reason, user, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(reason: &str, user: &str, full: bool) -> Trigger {
        Trigger::run(reason, user, full)
    }

    #[test]
    fn folded_triggers_keep_a_full_resync_and_who_asked_for_it() {
        assert_eq!(
            merge(t("api", "ann", true), t("api", "bob", false)),
            t("api", "ann", true),
            "the full resync stays ann's"
        );
        assert_eq!(
            merge(t("api", "ann", false), t("api", "bob", true)),
            t("api", "bob", true)
        );
        assert_eq!(
            merge(
                t("schedule", "backflow-serve", false),
                t("api", "bob", false)
            ),
            t("schedule + api", "bob", false)
        );
        assert_eq!(
            merge(t("schedule + api", "bob", false), t("api", "cy", false)),
            t("schedule + api", "cy", false),
            "reasons do not pile up"
        );
    }
}
