//! The destination's `config` table: where to connect (the same keys and rules as the
//! postgres source: see its README section) and which table to write.

use backflow_plugin_sdk::{expand_secrets, parse_config, ConfigError, PluginError};
use pg_protocol::tls::SslMode;
use pg_protocol::wire::ConnectParams;
use serde::Deserialize;

pub const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "postgres-destination",
  "type": "object",
  "additionalProperties": false,
  "required": ["host", "user", "table"],
  "properties": {
    "host": { "type": "string", "description": "Server address; an IP address, or a name together with hostaddr (the sandbox has no DNS)." },
    "hostaddr": { "type": "string", "description": "IP address to connect to when host is a name." },
    "port": { "type": "integer", "minimum": 1, "maximum": 65535, "description": "Server port (default 5432)." },
    "user": { "type": "string" },
    "password": { "type": "string", "description": "Password; use ${env.NAME} and grant NAME with grants.env." },
    "database": { "type": "string", "description": "Database (default: the user name)." },
    "sslmode": { "enum": ["disable", "require", "verify-ca", "verify-full"], "description": "As the postgres source's: disable (default), require (encryption only), verify-ca, verify-full. No fallback to plain text." },
    "password_over_unverified_tls": { "type": "boolean", "description": "Answer a cleartext or MD5 password request over sslmode = require (default false)." },
    "ssl_ciphers": { "enum": ["chacha20", "any"], "description": "chacha20 (default) or any." },
    "sslrootcert": { "type": "string", "description": "PEM file of CA certificates, in a directory granted with grants.files." },
    "application_name": { "type": "string", "description": "Shown in pg_stat_activity (default backflow)." },
    "schema": { "type": "string", "description": "Schema of the table (default public)." },
    "table": { "type": "string", "description": "The table rows are written into; the sync's mapped field names are its column names and its primary key must be the sync's key (a primary key or unique index on those columns)." },
    "create_table": { "type": "boolean", "description": "Create the table from the first batch's columns, the sync's key as its primary key, when it does not exist (default false)." },
    "deletes": { "type": "boolean", "description": "Whether rows may be deleted (default true); false refuses mirror syncs and undos of inserts at load." }
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub host: String,
    pub hostaddr: Option<String>,
    pub port: Option<u16>,
    pub user: String,
    pub password: Option<String>,
    pub database: Option<String>,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub ssl_ciphers: Option<String>,
    pub application_name: Option<String>,
    pub password_over_unverified_tls: Option<bool>,
    pub schema: Option<String>,
    pub table: String,
    pub create_table: Option<bool>,
    pub deletes: Option<bool>,
}

/// Parses and validates a config; every problem found, each naming its field.
pub fn check(config: &str) -> Result<Config, Vec<ConfigError>> {
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
    if cfg.user.is_empty() {
        errors.push(ConfigError::new("user", "is empty"));
    }
    if cfg.table.is_empty() {
        errors.push(ConfigError::new("table", "is empty"));
    }
    if cfg.schema.as_deref() == Some("") {
        errors.push(ConfigError::new(
            "schema",
            "is empty (leave it out for public)",
        ));
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// What `connect` needs that the config only names: the password with its secrets expanded,
/// the root certificates read from their file.
pub struct Resolved {
    pub password: Option<String>,
    pub root_cert: Option<Vec<u8>>,
}

impl Config {
    pub fn resolve(&self) -> Result<Resolved, PluginError> {
        let password = match &self.password {
            Some(p) => Some(
                expand_secrets(p, "destination")
                    .map_err(|m| PluginError::bad_config("password", m))?,
            ),
            None => None,
        };
        let root_cert = match &self.sslrootcert {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                PluginError::bad_config("sslrootcert", format!("cannot read {path}: {e} (is its directory granted to this destination with grants.files?)"))
            })?),
            None => None,
        };
        Ok(Resolved {
            password,
            root_cert,
        })
    }

    pub fn connect_params<'a>(&'a self, resolved: &'a Resolved) -> ConnectParams<'a> {
        ConnectParams {
            host: &self.host,
            hostaddr: self.hostaddr.as_deref(),
            port: self.port.unwrap_or(5432),
            user: &self.user,
            password: resolved.password.as_deref(),
            database: self.database.as_deref().unwrap_or(&self.user),
            application_name: self.application_name.as_deref().unwrap_or("backflow"),
            sslmode: self
                .sslmode
                .as_deref()
                .and_then(SslMode::parse)
                .unwrap_or(SslMode::Disable),
            root_cert: resolved.root_cert.as_deref(),
            chacha_only: self.ssl_ciphers.as_deref() != Some("any"),
            password_over_unverified_tls: self.password_over_unverified_tls.unwrap_or(false),
            read_only: false,
            role: "destination",
            notice: |m| backflow_plugin_sdk::host::info(m),
        }
    }

    pub fn schema(&self) -> &str {
        self.schema.as_deref().unwrap_or("public")
    }
}
