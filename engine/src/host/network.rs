//! The host's network: how granted host names are resolved and checked, for WASI sockets
//! (at store creation) and for the host's `http-send` (at each request), and the HTTP
//! clients built on that check.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why a granted host name leads nowhere a plugin may connect.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NameRefused {
    /// The name did not resolve.
    #[error("cannot resolve {name}: {error}")]
    Unresolvable { name: String, error: std::io::Error },
    /// Every address of the name is loopback or link-local.
    #[error("{name} resolves to {addresses} (loopback or link-local), which a granted host name may not lead to; grant the address itself if that is intended")]
    LocalOnly { name: String, addresses: String },
}

/// Resolves a host name to its addresses.
pub(crate) type Resolver =
    Arc<dyn Fn(&str) -> std::io::Result<Vec<std::net::IpAddr>> + Send + Sync>;

pub(super) fn system_resolver(name: &str) -> std::io::Result<Vec<std::net::IpAddr>> {
    use std::net::ToSocketAddrs;
    Ok((name, 0).to_socket_addrs()?.map(|a| a.ip()).collect())
}

/// What a granted host *name* may lead to. A grant names a service; whoever controls that
/// name's DNS must not be able to point it at this machine (`backflow serve`'s own API, a
/// database on 127.0.0.1) or at link-local addresses (cloud metadata at 169.254.169.254).
/// So a name's loopback, link-local and unspecified addresses are dropped, unless the name
/// is `localhost`; such an address can still be granted by writing the address itself.
/// Each connection goes to addresses checked here, in the same resolution (DNS rebinding
/// between a check and the connection is not possible).
fn checked_addresses(
    name: &str,
    resolver: &Resolver,
) -> Result<Vec<std::net::IpAddr>, NameRefused> {
    let ips = resolver(name).map_err(|error| NameRefused::Unresolvable {
        name: name.to_string(),
        error,
    })?;
    if name.eq_ignore_ascii_case("localhost") {
        return Ok(ips);
    }
    let special = |ip: &std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_link_local())
        }
    };
    let (refused, allowed): (Vec<_>, Vec<_>) = ips.into_iter().partition(special);
    if allowed.is_empty() && !refused.is_empty() {
        return Err(NameRefused::LocalOnly {
            name: name.to_string(),
            addresses: refused
                .iter()
                .map(|ip| ip.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(allowed)
}

pub(super) fn resolve_network_grants(
    grants: &[crate::domain::NetworkGrant],
    resolver: &Resolver,
) -> Vec<(std::net::IpAddr, Option<u16>)> {
    let mut out = Vec::new();
    for g in grants {
        let (host, port) = (g.host(), g.port());
        if let Some(ip) = g.address() {
            out.push((ip, port));
        } else {
            match checked_addresses(host, resolver) {
                Ok(ips) => out.extend(ips.into_iter().map(|ip| (ip, port))),
                Err(e) => tracing::warn!(host, "{e}; the plugin cannot connect to it"),
            }
        }
    }
    out
}

/// The DNS of plugins' host HTTP: the same check as for sockets ([`checked_addresses`]). The
/// client connects to exactly the addresses returned here.
struct CheckedResolver(Resolver);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        let name = name.as_str().to_string();
        Box::pin(async move {
            let ips = tokio::task::spawn_blocking(move || checked_addresses(&name, &resolver))
                .await
                .map_err(|e| e.to_string())??;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Settings every HTTP client of the host shares: no redirects (a redirect could leave the
/// granted host), a bounded connect.
pub(super) fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
}

/// Plugins' host HTTP client. No proxy from the environment: a proxy would resolve the
/// granted name itself, out of reach of the check.
pub(super) fn plugin_http_client(resolver: &Resolver) -> anyhow::Result<reqwest::Client> {
    http_client_builder()
        .no_proxy()
        .dns_resolver(Arc::new(CheckedResolver(resolver.clone())))
        .build()
        .context("building the plugins' HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_names_never_lead_to_loopback_or_link_local_addresses() {
        let answer = |ips: &'static [&'static str]| -> Resolver {
            Arc::new(move |_: &str| Ok(ips.iter().map(|ip| ip.parse().unwrap()).collect()))
        };
        let metadata = checked_addresses("metadata.example.test", &answer(&["169.254.169.254"]))
            .unwrap_err()
            .to_string();
        assert!(
            metadata.contains("resolves to 169.254.169.254 (loopback or link-local)"),
            "{metadata}"
        );
        assert!(checked_addresses(
            "x.example.test",
            &answer(&["::1", "fe80::1", "::ffff:127.0.0.1"])
        )
        .is_err());
        // Mixed answers keep the public addresses only; localhost is what it says.
        assert_eq!(
            checked_addresses("x.example.test", &answer(&["127.0.0.1", "203.0.113.7"])).unwrap(),
            vec!["203.0.113.7".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            checked_addresses("LocalHost", &answer(&["127.0.0.1"]))
                .unwrap()
                .len(),
            1
        );
        assert!(
            checked_addresses("private.example.test", &answer(&["10.1.2.3"])).is_ok(),
            "private networks are where internal APIs live"
        );
    }
}
