//! Grants and limits: what a plugin may reach (files, network, environment) and use (memory,
//! CPU, wall time).

use std::net::IpAddr;
use std::path::PathBuf;

/// What the operator grants one plugin. Everything defaults to nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Directories the plugin may read, mounted read-only at the same path they are
    /// written with in the workspace (relative paths resolved against the workspace).
    pub files: Vec<(PathBuf, String)>,
    /// Hosts (with a port, or any port) the plugin may reach, through host HTTP or sockets.
    pub network: Vec<NetworkGrant>,
    /// Environment variables the plugin may read.
    pub env: Vec<String>,
}

impl Grants {
    /// Whether `host:port` is granted. Host names compare case-insensitively.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.network.iter().any(|g| g.allows(host, port))
    }
}

/// One network grant, `host:port` or `host:*` (any port): the host a name (`db.internal`)
/// or an IP address (`10.0.0.5`, an IPv6 one in brackets: `[::1]:5432`). Parsed once, when
/// the workspace loads ([`str::parse`]); it shows as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkGrant {
    /// As written, for messages and comparisons between configurations.
    text: String,
    /// The host as written, without IPv6 brackets.
    host: String,
    /// The host's address, when it is written as one rather than as a name.
    address: Option<IpAddr>,
    /// The port; `None` for `host:*`.
    port: Option<u16>,
}

/// A network grant that is not `host:port` (or `host:*`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not host:port (or host:*)")]
pub struct InvalidNetworkGrant(pub String);

impl NetworkGrant {
    /// The host as written, without IPv6 brackets: a name or an address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host's IP address, or `None` when the grant names a host (resolved when used).
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// The granted port, or `None` when any port is (`host:*`).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether this grant covers `host` (without brackets) on `port`. Hosts compare as
    /// text, case-insensitively.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.host.eq_ignore_ascii_case(host) && self.port.is_none_or(|p| p == port)
    }
}

impl std::str::FromStr for NetworkGrant {
    type Err = InvalidNetworkGrant;

    fn from_str(text: &str) -> Result<NetworkGrant, InvalidNetworkGrant> {
        let invalid = || InvalidNetworkGrant(text.to_string());
        let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
        if host.is_empty() {
            return Err(invalid());
        }
        let port = match port {
            "*" => None,
            port => Some(port.parse::<u16>().map_err(|_| invalid())?),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(NetworkGrant {
            text: text.to_string(),
            host: host.to_string(),
            address: host.parse().ok(),
            port,
        })
    }
}

impl std::fmt::Display for NetworkGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Per-instance resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory the instance may grow to, in MiB (also bounds its host resources).
    pub memory_mb: u64,
    /// CPU time the guest may run in one call.
    pub call_timeout_ms: u64,
    /// Wall-clock time one call may take, including waits on the network or sleeps.
    pub wall_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 256,
            call_timeout_ms: 30_000,
            wall_timeout_ms: 300_000,
        }
    }
}
