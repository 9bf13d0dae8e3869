//! A run's delivery debugger: the recorder its destination writers share (see
//! [`crate::host::capture`]), the task that stores what it keeps in the state, off the
//! delivery's path, and the retention applied once the run's requests are stored.

use crate::domain::{CaptureMode, CapturedRequest, DebugSettings};
use crate::host::capture::CAPTURE_QUEUE;
use crate::host::RequestCapture;
use crate::state::StateStore;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Kept requests stored together in one state transaction, at most.
const STORE_BATCH: usize = 64;

/// One run's capture: the recorder, and the task storing what it keeps.
pub(crate) struct CaptureSession {
    recorder: Option<Arc<RequestCapture>>,
    task: Option<tokio::task::JoinHandle<()>>,
    state: StateStore,
    settings: DebugSettings,
    run_id: String,
    history_key: String,
}

impl CaptureSession {
    /// Starts capturing run `run_id` (filed under `history_key`) as `settings` say; nothing
    /// is recorded with `capture = "off"`.
    pub(crate) fn start(
        state: &StateStore,
        settings: &DebugSettings,
        run_id: &str,
        history_key: &str,
    ) -> CaptureSession {
        let mut session = CaptureSession {
            recorder: None,
            task: None,
            state: state.clone(),
            settings: settings.clone(),
            run_id: run_id.to_string(),
            history_key: history_key.to_string(),
        };
        if settings.capture != CaptureMode::Off {
            let (recorder, receiver) = RequestCapture::new(
                settings.capture,
                settings.max_body_bytes,
                run_id,
                CAPTURE_QUEUE,
            );
            session.recorder = Some(recorder);
            session.task = Some(tokio::spawn(store_captured(
                receiver,
                state.clone(),
                run_id.to_string(),
                history_key.to_string(),
                settings.max_bytes,
            )));
        }
        session
    }

    /// The recorder the run's writers are given, unless capture is off.
    pub(crate) fn recorder(&self) -> Option<&Arc<RequestCapture>> {
        self.recorder.as_ref()
    }

    /// Waits until every kept request is stored (the writers must be gone: they hold the
    /// recorder too), counts the dropped ones, then applies retention. A failure is logged:
    /// the debugger never fails a run.
    pub(crate) async fn finish(mut self) {
        let dropped = self.recorder.take().map_or(0, |r| r.dropped());
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let (state, s) = (self.state.clone(), self.settings.clone());
        let (run_id, key) = (self.run_id.clone(), self.history_key.clone());
        let stored = tokio::task::spawn_blocking(move || {
            if dropped > 0 {
                tracing::warn!(
                    run_id,
                    dropped,
                    "the delivery debugger could not keep up and dropped captured requests"
                );
                state.append_debug_requests(&run_id, &key, &[], dropped, now_ms())?;
            }
            state.prune_debug_requests(s.keep_debug_runs, s.keep_debug_days, s.max_bytes, now_ms())
        })
        .await;
        match stored {
            Ok(Err(e)) => tracing::warn!(run_id = %self.run_id, "delivery debugger: {e}"),
            Err(e) => tracing::warn!(run_id = %self.run_id, "delivery debugger: {e}"),
            Ok(Ok(_)) => {}
        }
    }
}

/// Stores kept requests as they come, several per transaction, until the recorder is gone.
/// Beyond `max_bytes` for this run alone, requests are counted as dropped instead.
async fn store_captured(
    mut receiver: mpsc::Receiver<CapturedRequest>,
    state: StateStore,
    run_id: String,
    history_key: String,
    max_bytes: u64,
) {
    let mut stored = 0u64;
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < STORE_BATCH {
            match receiver.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (state, run_id, key) = (state.clone(), run_id.clone(), history_key.clone());
        let over = stored >= max_bytes;
        let result = tokio::task::spawn_blocking(move || {
            if over {
                state.append_debug_requests(&run_id, &key, &[], batch.len() as u64, now_ms())
            } else {
                state.append_debug_requests(&run_id, &key, &batch, 0, now_ms())
            }
        })
        .await;
        match result {
            Ok(Ok(bytes)) => stored += bytes,
            Ok(Err(e)) => tracing::warn!("delivery debugger: {e}"),
            Err(e) => tracing::warn!("delivery debugger: {e}"),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
