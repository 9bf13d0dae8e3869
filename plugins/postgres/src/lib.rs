//! `postgres`: a source that streams any SQL query from PostgreSQL.
//!
//! The plugin speaks the wire protocol itself over a WASI TCP socket; the host lets that
//! socket reach only the `host:port` the workspace grants. The query runs in a read-only
//! transaction as an unnamed portal fetched `fetch_rows` rows at a time, so neither the
//! server nor the plugin holds the whole result. Values are typed by the columns' type OIDs
//! (see `types`); integers, booleans, `float8`, `numeric`, dates, timestamps and `bytea` come
//! in the binary format, everything else as text. TLS (`sslmode`) runs inside the plugin
//! too (see `tls`).

mod warehouse;

use backflow_plugin_sdk::*;
use pg_protocol::{tls, types, wire};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use serde::Deserialize;
use tls::SslMode;
use types::Format;
use wire::{ConnectParams, Connection};

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "postgres",
  "type": "object",
  "additionalProperties": false,
  "required": ["host", "user"],
  "properties": {
    "host": { "type": "string", "description": "Server address; an IP address, or a name together with hostaddr (the sandbox has no DNS)." },
    "hostaddr": { "type": "string", "description": "IP address to connect to when host is a name." },
    "port": { "type": "integer", "minimum": 1, "maximum": 65535, "description": "Server port (default 5432)." },
    "user": { "type": "string" },
    "password": { "type": "string", "description": "Password; use ${env.NAME} and grant NAME with grants.env." },
    "database": { "type": "string", "description": "Database (default: the user name)." },
    "sslmode": { "enum": ["disable", "require", "verify-ca", "verify-full"], "description": "disable (default); require: encryption only, the server is not authenticated (anyone in between can pose as it); verify-ca: chain checked against sslrootcert; verify-full: chain and host name checked. No fallback to plain text." },
    "password_over_unverified_tls": { "type": "boolean", "description": "Answer a cleartext or MD5 password request over sslmode = require (default false: refused, since the server was not authenticated). SCRAM is always allowed." },
    "ssl_ciphers": { "enum": ["chacha20", "any"], "description": "chacha20 (default): offer only ChaCha20-Poly1305, 2.4x faster than AES-GCM without AES hardware in Wasm; any: every suite rustls supports." },
    "sslrootcert": { "type": "string", "description": "PEM file of CA certificates, in a directory granted with grants.files: required by verify-ca; for verify-full the default is the Mozilla roots." },
    "fetch_rows": { "type": "integer", "minimum": 1, "description": "Rows per fetch from the server-side portal; two fetches are in flight (default 20000)." },
    "binary_results": { "type": "boolean", "description": "Read integers, booleans, float8, numeric, dates, timestamps and bytea in PostgreSQL's binary format (default true: the server formats nothing and the plugin parses nothing; the values are the same either way). false reads every column as text, for servers that speak the protocol without binary output." },
    "application_name": { "type": "string", "description": "Shown in pg_stat_activity (default backflow)." }
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    host: String,
    hostaddr: Option<String>,
    port: Option<u16>,
    user: String,
    password: Option<String>,
    database: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    ssl_ciphers: Option<String>,
    fetch_rows: Option<u32>,
    binary_results: Option<bool>,
    application_name: Option<String>,
    password_over_unverified_tls: Option<bool>,
}

fn check(config: &str) -> Result<Config, Vec<ConfigError>> {
    let cfg: Config = parse_config(config).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    pg_protocol::tls::check_connection(
        &pg_protocol::tls::ConnectionSettings {
            sslmode: cfg.sslmode.as_deref(),
            ssl_ciphers: cfg.ssl_ciphers.as_deref(),
            sslrootcert: cfg.sslrootcert.is_some(),
            password_over_unverified_tls: cfg.password_over_unverified_tls.is_some(),
            hostaddr: cfg.hostaddr.as_deref(),
            port: cfg.port,
        },
        &mut errors,
    );
    if cfg.fetch_rows == Some(0) {
        errors.push(ConfigError::new("fetch_rows", "must be at least 1"));
    }
    if cfg.user.is_empty() {
        errors.push(ConfigError::new("user", "is empty"));
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

struct Postgres;

impl SourcePlugin for Postgres {
    type Reader = QueryReader;

    fn spec() -> PluginSpec {
        PluginSpec {
            name: "postgres".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Source,
            description:
                "Streams a SQL query from PostgreSQL (trust, password, md5, SCRAM-SHA-256; TLS)."
                    .into(),
            config_schema: SCHEMA.into(),
            operations: vec![],
            max_batch_size: 0,
            default_rate_limit: None,
        }
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        check(config).err().unwrap_or_default()
    }

    fn open(config: &str, query: &str) -> Result<QueryReader, PluginError> {
        let cfg = check(config).map_err(|mut e| PluginError::BadConfig(e.remove(0)))?;
        let conn = connect(&cfg)?;
        QueryReader::start(
            conn,
            query,
            cfg.fetch_rows.unwrap_or(DEFAULT_FETCH_ROWS),
            cfg.binary_results.unwrap_or(true),
        )
    }

    fn capabilities() -> Vec<Capability> {
        vec![Capability::WarehouseDiff]
    }

    fn warehouse_prepare(
        config: &str,
        snapshot: backflow_plugin_sdk::warehouse::SnapshotTable,
        key_columns: Vec<Column>,
    ) -> Result<Vec<Column>, PluginError> {
        warehouse::prepare(config, &snapshot, &key_columns)
    }

    fn warehouse_diff(
        config: &str,
        request: backflow_plugin_sdk::warehouse::DiffRequest,
        include_unchanged: bool,
    ) -> Result<Box<dyn WarehouseDiffer>, PluginError> {
        Ok(Box::new(warehouse::Differ::open(
            config,
            request,
            include_unchanged,
        )?))
    }

    fn warehouse_write_back(
        config: &str,
        write_back: backflow_plugin_sdk::warehouse::WriteBack,
    ) -> Result<(), PluginError> {
        warehouse::write_back(config, write_back)
    }
}

/// Connects with a checked config: the password's secrets expanded, the root certificate
/// read.
fn connect(cfg: &Config) -> Result<Connection, PluginError> {
    let password = match &cfg.password {
        Some(p) => {
            Some(expand_secrets(p, "source").map_err(|m| PluginError::bad_config("password", m))?)
        }
        None => None,
    };
    let root_cert = match &cfg.sslrootcert {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                PluginError::bad_config("sslrootcert", format!("cannot read {path}: {e} (is its directory granted to this source with grants.files?)"))
            })?),
            None => None,
        };
    let params = ConnectParams {
        host: &cfg.host,
        hostaddr: cfg.hostaddr.as_deref(),
        port: cfg.port.unwrap_or(5432),
        user: &cfg.user,
        password: password.as_deref(),
        database: cfg.database.as_deref().unwrap_or(&cfg.user),
        application_name: cfg.application_name.as_deref().unwrap_or("backflow"),
        sslmode: cfg
            .sslmode
            .as_deref()
            .and_then(SslMode::parse)
            .unwrap_or(SslMode::Disable),
        root_cert: root_cert.as_deref(),
        chacha_only: cfg.ssl_ciphers.as_deref() != Some("any"),
        password_over_unverified_tls: cfg.password_over_unverified_tls.unwrap_or(false),
        read_only: true,
        role: "source",
        notice: |m| host::info(m),
    };
    Connection::connect(&params)
}

pub struct QueryReader {
    conn: Connection,
    query: String,
    columns: Vec<Column>,
    /// Per column, the format its values come in and how they are read.
    formats: Vec<Format>,
    fetch_rows: i32,
    rows_read: u64,
    done: bool,
    scratch: String,
}

impl QueryReader {
    /// Parses and describes the query as the unnamed statement; once its columns are known,
    /// binds it as the unnamed portal, asking for each column in the format it is read in,
    /// and asks for the first rows.
    fn start(
        mut conn: Connection,
        query: &str,
        fetch_rows: u32,
        binary_results: bool,
    ) -> Result<QueryReader, PluginError> {
        let encode =
            |e: std::io::Error| PluginError::fatal(format!("cannot encode the query: {e}"));
        frontend::parse("", query, std::iter::empty(), &mut conn.write_buf).map_err(encode)?;
        frontend::describe(b'S', "", &mut conn.write_buf).map_err(encode)?;
        frontend::flush(&mut conn.write_buf);
        conn.flush()?;
        let mut reader = QueryReader {
            conn,
            query: query.to_string(),
            columns: Vec::new(),
            formats: Vec::new(),
            fetch_rows: fetch_rows.min(i32::MAX as u32) as i32,
            rows_read: 0,
            done: false,
            scratch: String::new(),
        };
        loop {
            match reader.conn.recv()? {
                Message::ParseComplete | Message::ParameterDescription(_) => {}
                Message::RowDescription(body) => {
                    use fallible_iterator::FallibleIterator;
                    let mut fields = body.fields();
                    while let Some(field) = fields.next().map_err(|e| PluginError::fatal(format!("malformed row description: {e}")))? {
                        let kind = types::kind_for_oid(field.type_oid());
                        reader.columns.push(Column::new(field.name(), kind.value_type()));
                        let binary = types::binary_for_oid(field.type_oid()).filter(|_| binary_results);
                        reader.formats.push(binary.map_or(Format::Text(kind), Format::Binary));
                    }
                    break;
                }
                Message::NoData => {
                    return Err(PluginError::bad_config("query", "the query returns no rows (a model is a SELECT, VALUES, TABLE or ... RETURNING query)"))
                }
                Message::ErrorResponse(body) => return Err(reader.query_error(&wire::ServerError::parse(&body))),
                _ => return Err(PluginError::fatal("PostgreSQL protocol error: unexpected message before the row description")),
            }
        }
        let conn = &mut reader.conn;
        // No parameters; per result column 1 (binary) or 0 (text).
        let formats: Vec<i16> = reader
            .formats
            .iter()
            .map(|f| i16::from(matches!(f, Format::Binary(_))))
            .collect();
        frontend::bind(
            "",
            "",
            std::iter::empty(),
            std::iter::empty::<()>(),
            |_, _| Ok(postgres_protocol::IsNull::Yes),
            formats,
            &mut conn.write_buf,
        )
        .map_err(|_| PluginError::fatal("cannot encode the query's bind message"))?;
        // Two fetches in flight: the server produces the next rows while the plugin encodes
        // these (one at a time leaves it idle for a round trip per fetch). A fetch after the
        // portal is done just completes again; `finish_query` skips it.
        frontend::execute("", reader.fetch_rows, &mut conn.write_buf).map_err(encode)?;
        frontend::execute("", reader.fetch_rows, &mut conn.write_buf).map_err(encode)?;
        frontend::flush(&mut conn.write_buf);
        conn.flush()?;
        Ok(reader)
    }

    /// An error while running the query: the query's fault (with the position shown as
    /// line and column) or the connection's.
    fn query_error(&self, e: &wire::ServerError) -> PluginError {
        if e.is_connection_loss() {
            return PluginError::retryable(format!(
                "the connection to PostgreSQL at {} was lost after {} rows: {}",
                self.conn.peer,
                self.rows_read,
                e.describe()
            ));
        }
        let mut message = format!("PostgreSQL error: {}", e.describe());
        if let Some(position) = e.position {
            let before: String = self
                .query
                .chars()
                .take(position.saturating_sub(1))
                .collect();
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            message.push_str(&format!(" at line {line}, column {column} of the query"));
        }
        // Errors in the SQL itself (syntax, undefined objects: class 42) point at the query;
        // the rest (data exceptions mid-stream, permissions, ...) are the run's.
        if e.code.starts_with("42") {
            PluginError::bad_config("query", message)
        } else {
            PluginError::fatal(if self.rows_read > 0 {
                format!("{message} (after {} rows)", self.rows_read)
            } else {
                message
            })
        }
    }

    fn finish_query(&mut self) -> Result<(), PluginError> {
        self.done = true;
        frontend::sync(&mut self.conn.write_buf);
        self.conn.flush()?;
        loop {
            match self.conn.recv()? {
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(body) => {
                    return Err(self.query_error(&wire::ServerError::parse(&body)))
                }
                _ => {}
            }
        }
        self.conn.terminate();
        Ok(())
    }
}

/// Rows per fetch: large enough that round trips do not show, small enough that the rows
/// in flight (two fetches) stay a few megabytes.
const DEFAULT_FETCH_ROWS: u32 = 20_000;

/// A batch stops growing at this many bytes even when `max_rows` allows more.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

impl SourceReader for QueryReader {
    fn columns(&self) -> Vec<Column> {
        self.columns.clone()
    }

    fn next_batch(&mut self, max_rows: u32) -> Result<Option<Batch>, PluginError> {
        if self.done {
            return Ok(None);
        }
        let width = self.columns.len() as u32;
        let mut batch =
            BatchBuilder::with_capacity(self.columns.clone(), (max_rows as usize).min(8192) * 64);
        while batch.len() < max_rows && batch.byte_len() < MAX_BATCH_BYTES {
            let QueryReader {
                conn,
                columns,
                formats,
                rows_read,
                scratch,
                ..
            } = self;
            let full = conn.drain_data_rows(|body| {
                encode_row(
                    body, width, formats, columns, *rows_read, scratch, &mut batch,
                )?;
                *rows_read += 1;
                Ok(batch.len() < max_rows && batch.byte_len() < MAX_BATCH_BYTES)
            })?;
            if full {
                break;
            }
            if self.conn.has_partial_message() {
                self.conn.fill()?;
                continue;
            }
            match self.conn.recv()? {
                Message::BindComplete => {}
                Message::PortalSuspended => {
                    frontend::execute("", self.fetch_rows, &mut self.conn.write_buf)
                        .map_err(|e| PluginError::fatal(format!("cannot encode a fetch: {e}")))?;
                    frontend::flush(&mut self.conn.write_buf);
                    self.conn.flush()?;
                }
                Message::CommandComplete(_) | Message::EmptyQueryResponse => {
                    self.finish_query()?;
                    break;
                }
                Message::ErrorResponse(body) => {
                    return Err(self.query_error(&wire::ServerError::parse(&body)))
                }
                _ => {
                    return Err(PluginError::fatal(
                        "PostgreSQL protocol error: unexpected message while reading rows",
                    ))
                }
            }
        }
        if batch.is_empty() {
            return Ok(None);
        }
        Ok(Some(batch.finish()))
    }
}

/// Encodes one `DataRow` body (a count, then per value a length, -1 for NULL, and the bytes
/// in the column's format) as a batch row.
fn encode_row(
    body: &[u8],
    width: u32,
    formats: &[Format],
    columns: &[Column],
    rows_read: u64,
    scratch: &mut String,
    batch: &mut BatchBuilder,
) -> Result<(), PluginError> {
    let malformed = || PluginError::fatal("PostgreSQL protocol error: malformed data row");
    if body.len() < 2 || u32::from(u16::from_be_bytes([body[0], body[1]])) != width {
        return Err(PluginError::fatal(
            "PostgreSQL protocol error: a row's width does not match its columns",
        ));
    }
    let buf = batch.start_row(width);
    let mut pos = 2;
    for (index, &format) in formats.iter().enumerate() {
        let len_bytes = body.get(pos..pos + 4).ok_or_else(malformed)?;
        let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        pos += 4;
        if len < 0 {
            codec::write_null(buf);
            continue;
        }
        let data = body.get(pos..pos + len as usize).ok_or_else(malformed)?;
        pos += len as usize;
        match format {
            Format::Binary(kind) => types::write_binary_cell(buf, kind, data, scratch),
            Format::Text(kind) => types::write_cell(buf, kind, data, scratch),
        }
        .map_err(|e| {
            PluginError::fatal(format!(
                "row {} column {:?}: {e}",
                rows_read + 1,
                columns[index].name
            ))
        })?;
    }
    Ok(())
}

export_source!(Postgres);
