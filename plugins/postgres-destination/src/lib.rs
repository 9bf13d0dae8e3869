//! `postgres-destination`: writes a sync's rows into a PostgreSQL table, and reads them back.
//!
//! Connection, TLS and authentication are the postgres source's (`pg_protocol`), with
//! read-write transactions. Each batch is one transaction: COPY into a temporary stage
//! table, then one statement applies it (`insert` as `INSERT … ON CONFLICT (key) DO UPDATE`,
//! so a replayed batch changes nothing; `update`; `delete`; `append` as an insert that skips
//! rows a unique index already holds). Rows the database refuses are rejected one by one
//! (see `writer`). `writer.read` answers what the table holds for given keys (see `read`).

mod config;
mod read;
mod session;
mod sql;
mod text;
mod writer;

use backflow_plugin_sdk::warehouse::ReadResult;
use backflow_plugin_sdk::*;
use pg_protocol::wire::Connection;
use session::Session;
use writer::Writer;

struct PostgresDestination;

const ALL_OPERATIONS: [Operation; 4] = [
    Operation::Insert,
    Operation::Update,
    Operation::Delete,
    Operation::Append,
];

impl DestinationPlugin for PostgresDestination {
    type Writer = Writer;

    fn spec() -> PluginSpec {
        PluginSpec {
            name: "postgres-destination".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Destination,
            description: "Writes rows into a PostgreSQL table (upsert, update, insert, delete, append; COPY-staged batches in transactions) and reads them back by key.".into(),
            config_schema: config::SCHEMA.into(),
            operations: ALL_OPERATIONS.to_vec(),
            max_batch_size: 0,
            default_rate_limit: None,
        }
    }

    fn capabilities() -> Vec<Capability> {
        vec![Capability::ReadBack]
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        config::check(config).err().unwrap_or_default()
    }

    fn operations_for(config: &str) -> Result<OperationSupport, PluginError> {
        let cfg = config::check(config).map_err(|mut e| PluginError::BadConfig(e.remove(0)))?;
        if cfg.deletes.unwrap_or(true) {
            return Ok(OperationSupport::all_of(&Self::spec()));
        }
        Ok(OperationSupport {
            operations: ALL_OPERATIONS
                .into_iter()
                .filter(|op| *op != Operation::Delete)
                .collect(),
            hints: vec![(
                Operation::Delete,
                "this destination is configured with deletes = false; remove it (or set deletes = true) to let backflow delete rows".into(),
            )],
        })
    }

    fn open(config: &str, context: SyncContext) -> Result<Writer, PluginError> {
        let cfg = config::check(config).map_err(|mut e| PluginError::BadConfig(e.remove(0)))?;
        let resolved = cfg.resolve()?;
        let conn = Connection::connect(&cfg.connect_params(&resolved))?;
        Ok(Writer::new(Session::new(conn), &cfg, context.primary_key))
    }
}

impl DestinationWriter for Writer {
    fn write(&mut self, op: Operation, batch: Batch) -> Result<Vec<RowOutcome>, PluginError> {
        self.write_batch(op, batch)
    }

    fn finish(&mut self) -> Result<(), PluginError> {
        self.session.conn.terminate();
        Ok(())
    }

    fn read(&mut self, keys: Batch) -> Result<ReadResult, PluginError> {
        self.read_keys(keys)
    }
}

export_destination!(PostgresDestination);
