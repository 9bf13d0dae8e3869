//! Absent fields (contract 0.3.0 `row-batch.present`, capability `field-presence`): a batch
//! may leave some fields of some rows out, meaning "leave this field as it is". The webhook
//! leaves them out of each row's JSON object (a present null is still sent as `null`).

use crate::WebhookWriter;
use backflow_plugin_sdk::warehouse::present_bit;
use backflow_plugin_sdk::{Batch, Capability, Operation, PluginError, RowOutcome};

/// What the webhook declares beyond a destination's basics.
pub(crate) const CAPABILITIES: [Capability; 1] = [Capability::FieldPresence];

/// Whether cell (`row`, `column`) of a batch of `columns` columns is present.
pub(crate) fn is_present(
    present: &Option<Vec<u8>>,
    columns: usize,
    row: usize,
    column: usize,
) -> bool {
    present
        .as_deref()
        .is_none_or(|bits| present_bit(bits, columns, row, column))
}

/// Writes a batch whose absent cells are left out of the JSON objects sent: the general
/// (object by object) path builds them, knowing the bitmap while it does.
pub(crate) fn write_present(
    writer: &mut WebhookWriter,
    op: Operation,
    batch: Batch,
    present: Option<Vec<u8>>,
) -> Result<Vec<RowOutcome>, PluginError> {
    use backflow_plugin_sdk::DestinationWriter;
    writer.present = present;
    let written = writer.write(op, batch);
    writer.present = None;
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_bitmap_every_cell_is_present() {
        assert!(is_present(&None, 3, 7, 2));
        let bits = Some(vec![0b0000_0101]);
        assert!(is_present(&bits, 3, 0, 0));
        assert!(!is_present(&bits, 3, 0, 1));
        assert!(is_present(&bits, 3, 0, 2));
    }
}
