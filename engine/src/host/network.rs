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
    /// The name's addresses are in private networks no grant names.
    #[error("{name} resolves to {addresses} (a private network: RFC 1918, unique local or 100.64.0.0/10), which a granted host name may lead to only when a grant names the address or its range: add \"{first}:*\" (or \"{range}:*\") to grants.network")]
    PrivateUngranted {
        name: String,
        addresses: String,
        first: String,
        range: String,
    },
}

/// Addresses a granted name may lead to although they are private or local: those that a
/// grant names itself (`10.1.2.3:5432`) or by range (`10.0.0.0/8:*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct AddressGrants(Vec<crate::domain::NetworkGrant>);

impl AddressGrants {
    /// The address and range grants among `grants` (names grant no address).
    pub(crate) fn of(grants: &[crate::domain::NetworkGrant]) -> AddressGrants {
        AddressGrants(grants.iter().filter(|g| !g.is_name()).cloned().collect())
    }

    fn covers(&self, ip: std::net::IpAddr) -> bool {
        self.0.iter().any(|g| g.covers(ip))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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
/// Nor at a private network (RFC 1918, ULA, 100.64/10: the internal services a name's
/// owner should not reach through this host) unless a grant names the address or its
/// range (`granted`).
/// Each connection goes to addresses checked here, in the same resolution (DNS rebinding
/// between a check and the connection is not possible).
fn checked_addresses(
    name: &str,
    resolver: &Resolver,
    granted: &AddressGrants,
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
    let (allowed, refused): (Vec<_>, Vec<_>) = ips
        .into_iter()
        .partition(|ip| granted.covers(*ip) || !special(ip));
    let (private, allowed): (Vec<_>, Vec<_>) = allowed
        .into_iter()
        .partition(|ip| !granted.covers(*ip) && crate::domain::is_private(*ip));
    let list = |ips: &[std::net::IpAddr]| {
        ips.iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if allowed.is_empty() && !private.is_empty() {
        let first = match private[0] {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        return Err(NameRefused::PrivateUngranted {
            name: name.to_string(),
            addresses: list(&private),
            first,
            range: crate::domain::private_range_of(private[0])
                .unwrap_or_default()
                .to_string(),
        });
    }
    if allowed.is_empty() && !refused.is_empty() {
        return Err(NameRefused::LocalOnly {
            name: name.to_string(),
            addresses: list(&refused),
        });
    }
    Ok(allowed)
}

/// Where a plugin's sockets may connect: each grant's address or range as it is, each granted
/// name's checked addresses (as single-address grants), with the grant's port.
pub(super) fn resolve_network_grants(
    grants: &[crate::domain::NetworkGrant],
    resolver: &Resolver,
) -> Vec<crate::domain::NetworkGrant> {
    let granted = AddressGrants::of(grants);
    let mut out = granted.0.clone();
    for g in grants.iter().filter(|g| g.is_name()) {
        let (host, port) = (g.host(), g.port());
        match checked_addresses(host, resolver, &granted) {
            Ok(ips) => out.extend(
                ips.into_iter()
                    .map(|ip| crate::domain::NetworkGrant::for_address(ip, port)),
            ),
            Err(e) => tracing::warn!(host, "{e}; the plugin cannot connect to it"),
        }
    }
    out
}

/// The DNS of plugins' host HTTP: the same check as for sockets ([`checked_addresses`]). The
/// client connects to exactly the addresses returned here.
struct CheckedResolver(Resolver, Arc<AddressGrants>);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        let granted = self.1.clone();
        let name = name.as_str().to_string();
        Box::pin(async move {
            let ips =
                tokio::task::spawn_blocking(move || checked_addresses(&name, &resolver, &granted))
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
fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
}

/// An HTTP client whose names lead only where [`checked_addresses`] allows (with `granted`
/// addresses and ranges), for plugins' host HTTP and the engine's own requests (alerts,
/// notifications). No proxy from the environment: a proxy would resolve the name itself,
/// out of reach of the check. A URL written with an address connects to that address: it
/// is configured, not resolved.
pub(crate) fn checked_http_client(
    resolver: &Resolver,
    granted: AddressGrants,
) -> anyhow::Result<reqwest::Client> {
    http_client_builder()
        .no_proxy()
        .dns_resolver(Arc::new(CheckedResolver(
            resolver.clone(),
            Arc::new(granted),
        )))
        .build()
        .context("building a checked HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(ips: &'static [&'static str]) -> Resolver {
        Arc::new(move |_: &str| Ok(ips.iter().map(|ip| ip.parse().unwrap()).collect()))
    }

    fn none() -> AddressGrants {
        AddressGrants::default()
    }

    #[test]
    fn granted_names_never_lead_to_loopback_or_link_local_addresses() {
        let metadata = checked_addresses(
            "metadata.example.test",
            &answer(&["169.254.169.254"]),
            &none(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            metadata.contains("resolves to 169.254.169.254 (loopback or link-local)"),
            "{metadata}"
        );
        assert!(checked_addresses(
            "x.example.test",
            &answer(&["::1", "fe80::1", "::ffff:127.0.0.1"]),
            &none()
        )
        .is_err());
        // Mixed answers keep the public addresses only; localhost is what it says.
        assert_eq!(
            checked_addresses(
                "x.example.test",
                &answer(&["127.0.0.1", "10.0.0.1", "203.0.113.7"]),
                &none()
            )
            .unwrap(),
            vec!["203.0.113.7".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            checked_addresses("LocalHost", &answer(&["127.0.0.1"]), &none())
                .unwrap()
                .len(),
            1
        );
    }

    /// Issue 35: a granted name whose DNS answers with an internal address (RFC 1918, ULA,
    /// 100.64/10) is refused, saying how to grant it; a grant naming the address or its
    /// range lets it through.
    #[test]
    fn granted_names_lead_to_private_networks_only_when_a_grant_names_them() {
        for private in [
            "10.1.2.3",
            "172.20.0.9",
            "192.168.0.10",
            "100.100.100.200",
            "fd00::1",
        ] {
            let ips: &'static [&'static str] = Box::leak(Box::new([private]));
            let refused = checked_addresses("crm.example.test", &answer(ips), &none())
                .unwrap_err()
                .to_string();
            assert!(
                refused.contains(&format!(
                    "crm.example.test resolves to {private} (a private network"
                )),
                "{refused}"
            );
            assert!(refused.contains("to grants.network"), "{refused}");
        }
        let refused = checked_addresses("crm.example.test", &answer(&["10.1.2.3"]), &none())
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains(r#"add "10.1.2.3:*" (or "10.0.0.0/8:*") to grants.network"#),
            "{refused}"
        );
        let grants = |texts: &[&str]| {
            AddressGrants::of(
                &texts
                    .iter()
                    .map(|t| t.parse().unwrap())
                    .collect::<Vec<crate::domain::NetworkGrant>>(),
            )
        };
        let ten: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        for granted in [&["10.1.2.3:443"][..], &["10.0.0.0/8:*"], &["10.1.0.0/16:1"]] {
            assert_eq!(
                checked_addresses("crm.example.test", &answer(&["10.1.2.3"]), &grants(granted))
                    .unwrap(),
                vec![ten],
                "{granted:?}"
            );
        }
        // Another range, or a name, grants nothing here.
        for granted in [&["192.168.0.0/16:*"][..], &["crm.example.test:*"]] {
            assert!(
                checked_addresses("crm.example.test", &answer(&["10.1.2.3"]), &grants(granted))
                    .is_err(),
                "{granted:?}"
            );
        }
    }

    /// A plugin's sockets may connect to a granted name's checked addresses and to granted
    /// addresses and ranges; a name leading to an ungranted private address gives nothing.
    #[test]
    fn socket_grants_resolve_names_through_the_same_check() {
        let grants: Vec<crate::domain::NetworkGrant> = ["db.example.test:5432", "10.9.0.0/16:*"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let allowed = resolve_network_grants(&grants, &answer(&["10.1.2.3"]));
        assert_eq!(
            allowed.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            ["10.9.0.0/16:*"]
        );
        let allowed = resolve_network_grants(&grants, &answer(&["10.9.8.7"]));
        assert_eq!(
            allowed.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            ["10.9.0.0/16:*", "10.9.8.7:5432"]
        );
    }
}
