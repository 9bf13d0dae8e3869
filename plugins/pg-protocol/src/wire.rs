//! One PostgreSQL connection over a WASI TCP socket: startup, authentication (trust,
//! cleartext password, MD5, SCRAM-SHA-256) and message exchange. The host decides which
//! addresses the socket may reach; a refused connect comes back as an error naming the grant.

use crate::tls::{SslMode, Stream};
use backflow_plugin_sdk::PluginError;
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

/// Where and as whom to connect.
pub struct ConnectParams<'a> {
    pub host: &'a str,
    pub hostaddr: Option<&'a str>,
    pub port: u16,
    pub user: &'a str,
    pub password: Option<&'a str>,
    pub database: &'a str,
    pub application_name: &'a str,
    pub sslmode: SslMode,
    /// Offer only ChaCha20-Poly1305 (fast in Wasm) rather than every suite.
    pub chacha_only: bool,
    /// PEM CA certificates for `verify-ca`/`verify-full` (`sslrootcert`).
    pub root_cert: Option<&'a [u8]>,
    /// Answer cleartext/MD5 password requests over `require` (an unauthenticated server).
    pub password_over_unverified_tls: bool,
    /// Every transaction read-only (`default_transaction_read_only`): a source only reads.
    pub read_only: bool,
    /// What the plugin is, for messages naming the grant (`source`, `destination`).
    pub role: &'a str,
    /// Where server notices go (the plugin's log: `host::info`).
    pub notice: fn(&str),
}

pub struct Connection {
    stream: Stream,
    notice: fn(&str),
    read_buf: BytesMut,
    chunk: Box<[u8]>,
    pub write_buf: BytesMut,
    /// `host:port`, for messages.
    pub peer: String,
}

/// A server error, with the fields a user needs to fix the query.
pub struct ServerError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// 1-based character offset into the query.
    pub position: Option<usize>,
    /// The constraint a violation names (`n`), e.g. `contacts_email_key`.
    pub constraint: Option<String>,
    /// The column a not-null or data error names (`c`).
    pub column: Option<String>,
}

impl ServerError {
    pub fn parse(body: &ErrorResponseBody) -> ServerError {
        let mut e = ServerError {
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
            position: None,
            constraint: None,
            column: None,
        };
        let mut fields = body.fields();
        while let Ok(Some(f)) = fields.next() {
            let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                b'P' => e.position = value.parse().ok(),
                b'n' => e.constraint = Some(value),
                b'c' => e.column = Some(value),
                _ => {}
            }
        }
        e
    }

    /// `message (SQLSTATE code)`, then detail and hint when the server gave them.
    pub fn describe(&self) -> String {
        let mut s = format!("{} (SQLSTATE {})", self.message, self.code);
        if let Some(d) = &self.detail {
            s.push_str(&format!("; detail: {d}"));
        }
        if let Some(h) = &self.hint {
            s.push_str(&format!("; hint: {h}"));
        }
        s
    }

    /// Errors that mean the connection or server went away rather than the query being wrong:
    /// class 08 (connection exception), 57P01-57P03 (shutdown, crash, cannot connect now).
    pub fn is_connection_loss(&self) -> bool {
        self.code.starts_with("08") || matches!(self.code.as_str(), "57P01" | "57P02" | "57P03")
    }
}

impl Connection {
    pub fn connect(params: &ConnectParams) -> Result<Connection, PluginError> {
        let peer = format!("{}:{}", params.host, params.port);
        let addrs: Vec<SocketAddr> = match params.hostaddr.unwrap_or(params.host).parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, params.port)],
            Err(_) => (params.host, params.port).to_socket_addrs().map(|a| a.collect()).map_err(|e| {
                PluginError::bad_config(
                    "host",
                    format!(
                        "cannot resolve {}: {e}. The sandbox resolves names only for a {} granted a host name (grants.network = [\"{}:{}\"]); or set hostaddr to the server's IP address and grant that",
                        params.host, params.role, params.host, params.port
                    ),
                )
            })?,
        };
        let mut last_error = None;
        let mut stream = None;
        for addr in &addrs {
            match TcpStream::connect(addr) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = Some((addr, e)),
            }
        }
        let stream = match stream {
            Some(s) => s,
            None => {
                let (addr, e) = last_error.expect("at least one address");
                return Err(if e.kind() == ErrorKind::PermissionDenied {
                    PluginError::bad_config(
                        "host",
                        format!("the sandbox refused a connection to {addr}: grant it to this {} with grants.network = [\"{addr}\"]", params.role),
                    )
                } else {
                    PluginError::retryable(format!(
                        "cannot connect to PostgreSQL at {peer} ({addr}): {e}"
                    ))
                });
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = match params.sslmode {
            SslMode::Disable => Stream::Plain(stream),
            mode => crate::tls::upgrade(
                stream,
                mode,
                params.chacha_only,
                params.host,
                params.root_cert,
                &peer,
            )?,
        };
        let mut conn = Connection {
            stream,
            notice: params.notice,
            read_buf: BytesMut::with_capacity(256 * 1024),
            chunk: vec![0u8; 256 * 1024].into_boxed_slice(),
            write_buf: BytesMut::with_capacity(8 * 1024),
            peer,
        };
        conn.startup(params)?;
        Ok(conn)
    }

    fn startup(&mut self, p: &ConnectParams) -> Result<(), PluginError> {
        // Session settings that make the text format unambiguous: UTF-8, ISO dates, UTC
        // timestamps, hex bytea, shortest exact floats. A source's transactions are all
        // read-only: a model only reads.
        let read_only = if p.read_only { "on" } else { "off" };
        let params = [
            ("user", p.user),
            ("database", p.database),
            ("application_name", p.application_name),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, YMD"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "iso_8601"),
            ("bytea_output", "hex"),
            ("extra_float_digits", "3"),
            ("default_transaction_read_only", read_only),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.write_buf).map_err(io_fatal)?;
        self.flush()?;
        let mut scram: Option<sasl::ScramSha256> = None;
        let need_password = |what: &str| {
            p.password.ok_or_else(|| {
                PluginError::bad_config("password", format!("the server asks for a {what} password for user {:?} and none is configured", p.user))
            })
        };
        // Over `require` the server was not authenticated: whoever answered could be a
        // relay collecting passwords. A cleartext password (or an MD5 hash, crackable
        // offline) goes only to a verified server, unless the user accepted the risk.
        let may_reveal = |what: &str| {
            if p.sslmode == SslMode::Require && !p.password_over_unverified_tls {
                return Err(PluginError::bad_config(
                    "sslmode",
                    format!(
                        "the server asks for a {what} password, and sslmode = \"require\" encrypts without checking who the server is, so the password is not sent; \
                         use sslmode = \"verify-full\" (or verify-ca with sslrootcert), a SCRAM password on the server, or set password_over_unverified_tls = true to accept the risk"
                    ),
                ));
            }
            Ok(())
        };
        loop {
            match self.recv()? {
                Message::AuthenticationOk => break,
                Message::AuthenticationCleartextPassword => {
                    let pw = need_password("cleartext")?;
                    may_reveal("cleartext")?;
                    frontend::password_message(pw.as_bytes(), &mut self.write_buf).map_err(io_fatal)?;
                    self.flush()?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = need_password("MD5")?;
                    may_reveal("MD5")?;
                    let hash = md5_hash(p.user.as_bytes(), pw.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf).map_err(io_fatal)?;
                    self.flush()?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut offered = Vec::new();
                    while let Ok(Some(m)) = mechanisms.next() {
                        offered.push(m.to_string());
                    }
                    if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(PluginError::fatal(format!(
                            "the server offers SASL mechanisms {offered:?}; this plugin supports SCRAM-SHA-256 (channel binding needs TLS, which it does not have)"
                        )));
                    }
                    let pw = need_password("SCRAM-SHA-256")?;
                    let s = sasl::ScramSha256::new(pw.as_bytes(), sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), &mut self.write_buf).map_err(io_fatal)?;
                    self.flush()?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| protocol("SASL continue before SASL start"))?;
                    s.update(body.data()).map_err(|e| PluginError::fatal(format!("SCRAM exchange with {} failed: {e}", self.peer)))?;
                    frontend::sasl_response(s.message(), &mut self.write_buf).map_err(io_fatal)?;
                    self.flush()?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| protocol("SASL final before SASL start"))?;
                    s.finish(body.data()).map_err(|e| {
                        PluginError::fatal(format!("the server at {} failed SCRAM verification (is it the server you meant?): {e}", self.peer))
                    })?;
                }
                Message::ErrorResponse(body) => return Err(self.startup_error(ServerError::parse(&body), p)),
                Message::AuthenticationGss | Message::AuthenticationSspi | Message::AuthenticationKerberosV5 => {
                    return Err(PluginError::fatal(
                        "the server asks for GSSAPI/SSPI/Kerberos authentication; this plugin supports trust, password, md5 and scram-sha-256",
                    ))
                }
                _ => return Err(protocol("unexpected message during authentication")),
            }
        }
        loop {
            match self.recv()? {
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    return Err(self.startup_error(ServerError::parse(&body), p))
                }
                _ => {}
            }
        }
    }

    fn startup_error(&self, e: ServerError, p: &ConnectParams) -> PluginError {
        let what = format!(
            "PostgreSQL at {} refused the connection: {}",
            self.peer,
            e.describe()
        );
        match e.code.as_str() {
            // invalid_password, invalid_authorization_specification
            "28P01" => PluginError::bad_config("password", what),
            "28000" => PluginError::bad_config("user", format!("{what} (user {:?})", p.user)),
            // invalid_catalog_name: no such database
            "3D000" => PluginError::bad_config("database", what),
            _ if e.is_connection_loss() || e.code == "53300" => PluginError::retryable(what),
            _ => PluginError::fatal(what),
        }
    }

    /// Writes everything queued in `write_buf`.
    pub fn flush(&mut self) -> Result<(), PluginError> {
        let result = self.stream.write_all(&self.write_buf);
        self.write_buf.clear();
        result.map_err(|e| self.lost(e))
    }

    /// The next message that matters; notices go to the log, parameter reports are dropped.
    pub fn recv(&mut self) -> Result<Message, PluginError> {
        loop {
            match Message::parse(&mut self.read_buf) {
                Ok(Some(Message::NoticeResponse(body))) => {
                    let mut fields = body.fields();
                    while let Ok(Some(f)) = fields.next() {
                        if f.type_() == b'M' {
                            (self.notice)(&format!(
                                "server notice: {}",
                                String::from_utf8_lossy(f.value_bytes())
                            ));
                        }
                    }
                }
                Ok(Some(Message::ParameterStatus(_)))
                | Ok(Some(Message::NotificationResponse(_))) => {}
                Ok(Some(message)) => return Ok(message),
                Ok(None) => self.fill()?,
                Err(e) => return Err(protocol(&format!("malformed message from the server: {e}"))),
            }
        }
    }

    /// Reads whatever the server has sent next into `read_buf` (at least one byte).
    pub fn fill(&mut self) -> Result<(), PluginError> {
        let n = self
            .stream
            .read(&mut self.chunk)
            .map_err(|e| self.lost(e))?;
        if n == 0 {
            return Err(PluginError::retryable(format!(
                "the connection to PostgreSQL at {} was closed by the server",
                self.peer
            )));
        }
        self.read_buf.extend_from_slice(&self.chunk[..n]);
        Ok(())
    }

    /// The complete `DataRow` messages at the front of the buffer, without parsing them into
    /// messages one by one (the hot path: one call per row otherwise allocates). `each` gets
    /// every row's body; returns whether it stopped because `each` said so (`false`).
    pub fn drain_data_rows(
        &mut self,
        mut each: impl FnMut(&[u8]) -> Result<bool, PluginError>,
    ) -> Result<bool, PluginError> {
        let buf = &self.read_buf[..];
        let mut pos = 0;
        let mut stopped = false;
        while buf.len() - pos >= 5 && buf[pos] == b'D' {
            let len = u32::from_be_bytes([buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]])
                as usize;
            if len < 4 || buf.len() - pos < 1 + len {
                break;
            }
            let more = each(&buf[pos + 5..pos + 1 + len]);
            pos += 1 + len;
            match more {
                Ok(true) => {}
                Ok(false) => {
                    stopped = true;
                    break;
                }
                Err(e) => {
                    bytes::Buf::advance(&mut self.read_buf, pos);
                    return Err(e);
                }
            }
        }
        bytes::Buf::advance(&mut self.read_buf, pos);
        Ok(stopped)
    }

    /// Whether the buffer holds the start of a message that is not complete yet.
    pub fn has_partial_message(&self) -> bool {
        let buf = &self.read_buf[..];
        buf.len() < 5
            || buf.len() < 1 + u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize
    }

    fn lost(&self, e: std::io::Error) -> PluginError {
        PluginError::retryable(format!(
            "the connection to PostgreSQL at {} was lost: {e}",
            self.peer
        ))
    }

    /// Ends the session politely; errors do not matter any more.
    pub fn terminate(&mut self) {
        frontend::terminate(&mut self.write_buf);
        let _ = self.stream.write_all(&self.write_buf);
        self.write_buf.clear();
    }
}

fn io_fatal(e: std::io::Error) -> PluginError {
    PluginError::fatal(format!("cannot encode a message: {e}"))
}

fn protocol(what: &str) -> PluginError {
    PluginError::fatal(format!("PostgreSQL protocol error: {what}"))
}
