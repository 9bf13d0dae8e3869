//! A writer: one destination plugin instance (or the native no-op used to measure the Wasm
//! boundary), owned by one batch at a time.

use crate::host::{CallError, DestinationInstance};
use backflow_plugin_sdk::{Batch, Operation, RowOutcome};

/// Where one batch is written: a destination plugin instance or the native no-op.
pub(crate) enum Writer {
    Wasm(DestinationInstance),
    /// Native no-op, to measure what the Wasm boundary costs.
    Noop,
}

impl Writer {
    pub(crate) async fn write(
        &mut self,
        op: Operation,
        batch: Batch,
        present: Option<Vec<u8>>,
    ) -> Result<Vec<RowOutcome>, CallError> {
        match self {
            Writer::Wasm(d) => d.write_present(op, batch, present).await,
            Writer::Noop => Ok(vec![RowOutcome::Accepted; batch.row_count as usize]),
        }
    }

    /// What the destination holds for `keys` (`None` for the native no-op, which holds
    /// nothing to protect).
    pub(crate) async fn read(
        &mut self,
        keys: backflow_plugin_sdk::Batch,
    ) -> Result<Option<backflow_plugin_sdk::warehouse::ReadResult>, CallError> {
        match self {
            Writer::Wasm(d) => d.read(keys).await.map(Some),
            Writer::Noop => Ok(None),
        }
    }

    /// Gives the writer's turn to send back (see `host::request_gate`): its batch is recorded.
    pub(crate) fn end_turn(&mut self) {
        if let Writer::Wasm(d) = self {
            d.end_turn();
        }
    }

    pub(crate) async fn finish(self) -> Result<(), CallError> {
        match self {
            Writer::Wasm(d) => d.finish().await,
            Writer::Noop => Ok(()),
        }
    }
}
