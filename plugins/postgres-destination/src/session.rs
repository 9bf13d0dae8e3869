//! Statements pipelined over one connection: the writer queues simple queries, COPY data
//! and extended-protocol rows into the connection's buffer, sends them at once, and reads
//! the answers until as many `ReadyForQuery` as it queued. A failed COPY is safe to
//! pipeline behind: the server ignores copy data outside copy-in mode.

use backflow_plugin_sdk::PluginError;
use bytes::BufMut;
use fallible_iterator::FallibleIterator;
use pg_protocol::postgres_protocol::message::backend::Message;
use pg_protocol::postgres_protocol::message::frontend;
use pg_protocol::postgres_protocol::IsNull;
use pg_protocol::wire::{Connection, ServerError};

/// What a pipeline answered.
#[derive(Default)]
pub struct Outcome {
    /// The first error; the statements after it in its transaction did nothing.
    pub error: Option<ServerError>,
    /// Command tags in order (`INSERT 0 5`, `UPDATE 1`, `COPY 5`, ...).
    pub tags: Vec<String>,
    /// The last result's columns: name and type OID.
    pub fields: Vec<(String, u32)>,
    /// The last result's rows, each value in the text format, `None` for NULL.
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
}

/// COPY data is sent in messages of about this size.
const COPY_CHUNK: usize = 64 * 1024;
/// The buffer is written to the socket once it holds this much.
const SEND_AT: usize = 1024 * 1024;

pub struct Session {
    pub conn: Connection,
    /// `ReadyForQuery` messages the queued statements will bring.
    pending: usize,
    copy: Vec<u8>,
}

fn encode(e: impl std::fmt::Display) -> PluginError {
    PluginError::fatal(format!("cannot encode a message for PostgreSQL: {e}"))
}

impl Session {
    pub fn new(conn: Connection) -> Session {
        Session {
            conn,
            pending: 0,
            copy: Vec::with_capacity(COPY_CHUNK + 4096),
        }
    }

    /// Queues a simple query (one or more statements separated by `;`).
    pub fn query(&mut self, sql: &str) -> Result<(), PluginError> {
        frontend::query(sql, &mut self.conn.write_buf).map_err(encode)?;
        self.pending += 1;
        Ok(())
    }

    /// Queues one COPY row (already escaped, fields tab-separated, without the newline).
    pub fn copy_row(&mut self, row: &[u8]) -> Result<(), PluginError> {
        self.copy.extend_from_slice(row);
        self.copy.push(b'\n');
        if self.copy.len() >= COPY_CHUNK {
            self.flush_copy()?;
        }
        Ok(())
    }

    fn flush_copy(&mut self) -> Result<(), PluginError> {
        if self.copy.is_empty() {
            return Ok(());
        }
        let buf = &mut self.conn.write_buf;
        buf.put_u8(b'd');
        buf.put_i32(self.copy.len() as i32 + 4);
        buf.put_slice(&self.copy);
        self.copy.clear();
        if self.conn.write_buf.len() >= SEND_AT {
            self.conn.flush()?;
        }
        Ok(())
    }

    /// Ends the COPY data.
    pub fn copy_done(&mut self) -> Result<(), PluginError> {
        self.flush_copy()?;
        frontend::copy_done(&mut self.conn.write_buf);
        Ok(())
    }

    /// Queues `statement` (prepared by [`Session::prepare`]) with text parameters, then a Sync.
    pub fn execute(
        &mut self,
        statement: &str,
        params: &[Option<String>],
    ) -> Result<(), PluginError> {
        frontend::bind(
            "",
            statement,
            std::iter::empty(),
            params.iter(),
            |v, buf| match v {
                None => Ok(IsNull::Yes),
                Some(s) => {
                    buf.put_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
            },
            std::iter::empty(),
            &mut self.conn.write_buf,
        )
        .map_err(|_| PluginError::fatal("cannot encode a row's parameters for PostgreSQL"))?;
        frontend::execute("", 0, &mut self.conn.write_buf).map_err(encode)?;
        frontend::sync(&mut self.conn.write_buf);
        self.pending += 1;
        Ok(())
    }

    /// Queues the (re)definition of a named statement, its parameter types left to the server.
    pub fn prepare(&mut self, name: &str, sql: &str) -> Result<(), PluginError> {
        frontend::close(b'S', name, &mut self.conn.write_buf).map_err(encode)?;
        frontend::parse(name, sql, std::iter::empty(), &mut self.conn.write_buf).map_err(encode)?;
        frontend::sync(&mut self.conn.write_buf);
        self.pending += 1;
        Ok(())
    }

    /// Sends what is queued and reads every answer.
    pub fn run(&mut self) -> Result<Outcome, PluginError> {
        self.conn.flush()?;
        let mut outcome = Outcome::default();
        while self.pending > 0 {
            match self.conn.recv()? {
                Message::ReadyForQuery(_) => self.pending -= 1,
                Message::ErrorResponse(body) => {
                    let e = ServerError::parse(&body);
                    if e.is_connection_loss() {
                        return Err(PluginError::retryable(format!(
                            "the connection to PostgreSQL at {} was lost: {}",
                            self.conn.peer,
                            e.describe()
                        )));
                    }
                    outcome.error.get_or_insert(e);
                }
                Message::CommandComplete(body) => {
                    outcome
                        .tags
                        .push(body.tag().map(str::to_string).unwrap_or_default());
                }
                Message::RowDescription(body) => {
                    outcome.fields.clear();
                    outcome.rows.clear();
                    let mut fields = body.fields();
                    while let Some(f) = fields.next().map_err(|e| {
                        PluginError::fatal(format!("malformed row description: {e}"))
                    })? {
                        outcome.fields.push((f.name().to_string(), f.type_oid()));
                    }
                }
                Message::DataRow(body) => {
                    let buffer = body.buffer();
                    let mut row = Vec::with_capacity(outcome.fields.len());
                    let mut ranges = body.ranges();
                    while let Some(range) = ranges
                        .next()
                        .map_err(|e| PluginError::fatal(format!("malformed data row: {e}")))?
                    {
                        row.push(range.map(|r| buffer[r].to_vec()));
                    }
                    outcome.rows.push(row);
                }
                Message::CopyInResponse(_)
                | Message::ParseComplete
                | Message::BindComplete
                | Message::CloseComplete
                | Message::NoData
                | Message::ParameterDescription(_)
                | Message::EmptyQueryResponse => {}
                _ => {
                    return Err(PluginError::fatal(
                        "PostgreSQL protocol error: unexpected message",
                    ))
                }
            }
        }
        Ok(outcome)
    }

    /// Runs `sql` alone; its error, if any, is the caller's to classify.
    pub fn simple(&mut self, sql: &str) -> Result<Outcome, PluginError> {
        self.query(sql)?;
        self.run()
    }
}

/// The row count of a command tag (`UPDATE 3` → 3, `INSERT 0 5` → 5).
pub fn tag_rows(tag: &str) -> u64 {
    tag.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
