//! Reading the destination back: one writer of the sync's destination, asked for batches of
//! keys (`writer.read`, contract 0.3.0), paced by the sync's rate limit like a delivery, with
//! rate-limited and retryable answers tried again a few times.

use super::report::DriftError;
use crate::host::{CallError, DestinationInstance, PluginHost};
use crate::sync::deliver::pacer::Pacer;
use crate::sync::prepare::{open_error, primary_key_fields, PreparedSync};
use backflow_plugin_sdk::warehouse::ReadResult;
use backflow_plugin_sdk::{Batch, Capability, PluginError, SyncContext};
use std::time::Duration;

/// Tries of one read before the report gives up.
const TRIES: u32 = 5;

/// The destination of one sync, open for reading.
pub(crate) struct ReadBack {
    instance: DestinationInstance,
    pacer: Pacer,
}

impl ReadBack {
    /// Opens a writer of the sync's destination for reading; a destination whose plugin does
    /// not declare `read-back` is refused, naming it.
    pub(crate) async fn open(
        host: &PluginHost,
        p: &PreparedSync,
        purpose: &str,
    ) -> Result<ReadBack, DriftError> {
        let plugin = p
            .destination_plugin
            .as_ref()
            .filter(|d| d.capabilities.contains(&Capability::ReadBack))
            .ok_or_else(|| DriftError::CannotRead {
                sync: p.sync.name.clone(),
                destination: p.destination.name.clone(),
                plugin: p
                    .destination_plugin
                    .as_ref()
                    .map(|d| d.spec.name.clone())
                    .unwrap_or_else(|| crate::domain::BUILTIN_NOOP.into()),
            })?;
        let context = SyncContext {
            sync_name: p.sync.name.clone(),
            primary_key: primary_key_fields(p),
            run_id: format!("{purpose}-{}", ulid::Ulid::new()),
        };
        let instance = DestinationInstance::open(
            host,
            plugin,
            &p.destination.grants,
            p.destination.limits,
            &p.destination.config_json,
            &context,
        )
        .await
        .map_err(|e| DriftError::Destination(open_error(p, &p.destination, &e)))?;
        Ok(ReadBack {
            instance,
            pacer: Pacer::new(p.rate_limit),
        })
    }

    /// What the destination holds for `keys`: paced, and tried again when the destination
    /// is busy or answers a retryable error.
    pub(crate) async fn read(&mut self, keys: Batch) -> Result<ReadResult, DriftError> {
        let rows = keys.row_count as usize;
        let mut tries = 0;
        loop {
            tries += 1;
            self.pacer.wait(rows).await;
            let wait = match self.instance.read(keys.clone()).await {
                Ok(result) if result.held.len() == rows => return Ok(result),
                Ok(result) => {
                    return Err(DriftError::Destination(format!(
                        "the destination answered a read of {rows} keys with {} entries (one per key expected)",
                        result.held.len()
                    )))
                }
                Err(CallError::Plugin(PluginError::RateLimited { retry_after_ms, .. }))
                    if tries < TRIES =>
                {
                    Duration::from_millis(retry_after_ms.unwrap_or(1000).min(30_000))
                }
                Err(CallError::Plugin(PluginError::Retryable { .. })) if tries < TRIES => {
                    Duration::from_millis(500 * u64::from(tries))
                }
                Err(e) => {
                    return Err(DriftError::Destination(format!(
                        "reading back from destination: {e}"
                    )))
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Releases the writer (nothing was written through it).
    pub(crate) async fn close(self) {
        let _ = self.instance.finish().await;
    }
}
