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

/// One network grant, `host:port` or `host:*` (any port): the host a name (`db.internal`),
/// an IP address (`10.0.0.5`, an IPv6 one in brackets: `[::1]:5432`) or an address range
/// (`10.0.0.0/8:*`, `[fd00::/8]:443`). Parsed once, when the workspace loads
/// ([`str::parse`]); it shows as it was written. A granted *name* may lead to a private
/// address (RFC 1918, ULA, 100.64/10) only when a grant names that address or its range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetworkGrant {
    /// As written, for messages and comparisons between configurations.
    text: String,
    /// The host as written, without IPv6 brackets.
    host: String,
    /// The host's address, when it is written as one (or as a range) rather than as a name.
    address: Option<IpAddr>,
    /// The prefix length of a range (`10.0.0.0/8`); `None` for one address or a name.
    prefix: Option<u8>,
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

    /// The host's IP address, or `None` when the grant names a host (resolved when used)
    /// or a range of addresses.
    pub fn address(&self) -> Option<IpAddr> {
        self.address.filter(|_| self.prefix.is_none())
    }

    /// A grant of one address (on `port`, or any port): what a granted name resolved to.
    pub fn for_address(ip: IpAddr, port: Option<u16>) -> NetworkGrant {
        let host = ip.to_string();
        let shown = if ip.is_ipv6() {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let port_text = port.map_or("*".to_string(), |p| p.to_string());
        NetworkGrant {
            text: format!("{shown}:{port_text}"),
            host,
            address: Some(ip),
            prefix: None,
            port,
        }
    }

    /// Whether the grant names a host (resolved when used) rather than addresses.
    pub fn is_name(&self) -> bool {
        self.address.is_none()
    }

    /// Whether the grant names `ip`, as its address or within its range (any port).
    pub fn covers(&self, ip: IpAddr) -> bool {
        match (self.address, self.prefix) {
            (Some(base), Some(prefix)) => in_range(ip, base, prefix),
            (Some(address), None) => canonical(address) == canonical(ip),
            (None, _) => false,
        }
    }

    /// The granted port, or `None` when any port is (`host:*`).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether this grant covers `host` (without brackets) on `port`. Hosts compare as
    /// text, case-insensitively.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host_matches = match (self.prefix, host.parse::<IpAddr>()) {
            (Some(_), Ok(ip)) => self.covers(ip),
            _ => self.host.eq_ignore_ascii_case(host),
        };
        host_matches && self.port.is_none_or(|p| p == port)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is in `base/prefix` (an IPv4-mapped IPv6 address counts as its IPv4 one).
pub fn in_range(ip: IpAddr, base: IpAddr, prefix: u8) -> bool {
    match (canonical(ip), canonical(base)) {
        (IpAddr::V4(ip), IpAddr::V4(base)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(ip) & mask == u32::from(base) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(base)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(ip) & mask == u128::from(base) & mask
        }
        _ => false,
    }
}

/// Whether `ip` is in a private network: RFC 1918 (10/8, 172.16/12, 192.168/16), shared
/// address space (100.64/10, carrier-grade NAT and some clouds' metadata) or IPv6 unique
/// local addresses (fc00::/7).
pub fn is_private(ip: IpAddr) -> bool {
    const RANGES: [(IpAddr, u8); 5] = [
        (IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 0)), 8),
        (IpAddr::V4(std::net::Ipv4Addr::new(172, 16, 0, 0)), 12),
        (IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 0, 0)), 16),
        (IpAddr::V4(std::net::Ipv4Addr::new(100, 64, 0, 0)), 10),
        (
            IpAddr::V6(std::net::Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)),
            7,
        ),
    ];
    RANGES
        .iter()
        .any(|(base, prefix)| in_range(ip, *base, *prefix))
}

/// The conventional range a private address belongs to, for messages ("10.0.0.0/8").
pub fn private_range_of(ip: IpAddr) -> Option<&'static str> {
    [
        ("10.0.0.0", 8, "10.0.0.0/8"),
        ("172.16.0.0", 12, "172.16.0.0/12"),
        ("192.168.0.0", 16, "192.168.0.0/16"),
        ("100.64.0.0", 10, "100.64.0.0/10"),
        ("fc00::", 7, "[fc00::/7]"),
    ]
    .into_iter()
    .find(|(base, prefix, _)| base.parse().is_ok_and(|b| in_range(ip, b, *prefix)))
    .map(|(_, _, text)| text)
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
        let (address, prefix) = match host.split_once('/') {
            Some((base, prefix)) => {
                let base: IpAddr = base.parse().map_err(|_| invalid())?;
                let bits = if base.is_ipv4() { 32 } else { 128 };
                let prefix = prefix
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= bits)
                    .ok_or_else(invalid)?;
                (Some(base), Some(prefix))
            }
            None => (host.parse().ok(), None),
        };
        Ok(NetworkGrant {
            text: text.to_string(),
            host: host.to_string(),
            address,
            prefix,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(text: &str) -> NetworkGrant {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_range_grant_covers_its_addresses_and_allows_them_as_hosts() {
        let g = grant("10.0.0.0/8:*");
        assert!(!g.is_name());
        assert_eq!(g.address(), None, "a range is not one address");
        assert!(g.covers(ip("10.200.1.2")));
        assert!(g.covers(ip("::ffff:10.0.0.1")));
        assert!(!g.covers(ip("11.0.0.1")));
        assert!(g.allows("10.1.2.3", 443));
        assert!(!g.allows("11.1.2.3", 443));
        let v6 = grant("[fd00::/8]:443");
        assert!(v6.covers(ip("fd12::1")) && !v6.covers(ip("fe80::1")));
        assert!(v6.allows("[fd12::1]".trim_matches(['[', ']']), 443));
        assert!(!v6.allows("fd12::1", 80));
        assert!(grant("10.1.2.3:5432").covers(ip("10.1.2.3")));
        assert!(!grant("db.internal:5432").covers(ip("10.1.2.3")));
        assert_eq!(grant("10.0.0.0/8:*").to_string(), "10.0.0.0/8:*");
    }

    #[test]
    fn a_range_that_is_not_one_is_refused() {
        for text in [
            "10.0.0.0/33:*",
            "db.internal/8:*",
            "10.0.0.0/x:1",
            "[fd00::/129]:1",
        ] {
            assert!(text.parse::<NetworkGrant>().is_err(), "{text}");
        }
    }

    #[test]
    fn private_networks_are_rfc_1918_shared_and_unique_local() {
        for private in [
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "100.100.100.200",
            "fd00::1",
        ] {
            assert!(is_private(ip(private)), "{private}");
        }
        for public in [
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "127.0.0.1",
        ] {
            assert!(!is_private(ip(public)), "{public}");
        }
        assert_eq!(private_range_of(ip("10.9.9.9")), Some("10.0.0.0/8"));
        assert_eq!(private_range_of(ip("fd00::1")), Some("[fc00::/7]"));
    }
}
