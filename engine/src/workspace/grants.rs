//! `grants` tables, checked and parsed once at load: granted directories must exist, and
//! network grants become typed [`NetworkGrant`]s (`host:port` or `host:*`), so the host never
//! parses grant text again.

use super::definitions::Origin;
use super::errors::ConfigError;
use super::schema::GrantsFile;
use crate::domain::{Grants, NetworkGrant};
use std::path::{Path, PathBuf};

/// A plugin's grants: every directory (relative ones against `root`) must exist, every
/// network grant must be `host:port` or `host:*`. Errors name `grants.files[i]` or
/// `grants.network[i]` under `origin`; what is wrong is left out of the result.
pub(super) fn grants(
    root: &Path,
    file: GrantsFile,
    origin: &Origin,
    errors: &mut Vec<ConfigError>,
) -> Grants {
    let mut files = Vec::new();
    for (i, dir) in file.files.iter().enumerate() {
        let host_path = if Path::new(dir).is_absolute() {
            PathBuf::from(dir)
        } else {
            root.join(dir)
        };
        if !host_path.is_dir() {
            errors.push(origin.error(
                &format!("grants.files[{i}]"),
                format!("{} is not a directory", host_path.display()),
            ));
            continue;
        }
        files.push((host_path, dir.trim_end_matches('/').to_string()));
    }
    let mut network = Vec::new();
    for (i, text) in file.network.iter().enumerate() {
        match text.parse::<NetworkGrant>() {
            Ok(grant) => network.push(grant),
            Err(e) => errors.push(origin.error(&format!("grants.network[{i}]"), e.to_string())),
        }
    }
    Grants {
        files,
        network,
        env: file.env,
    }
}

/// The network grants of `[approvals.grants]`, which only `notify_url` is checked against.
/// They have never been refused at load: one that is not `host:port` grants nothing.
pub(super) fn notification_network(network: &[String]) -> Vec<NetworkGrant> {
    network.iter().filter_map(|g| g.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(text: &str) -> NetworkGrant {
        text.parse().unwrap()
    }

    #[test]
    fn a_grant_is_a_host_and_a_port_or_any_port() {
        let g = grant("db.internal:5432");
        assert_eq!(
            (g.host(), g.address(), g.port()),
            ("db.internal", None, Some(5432))
        );
        let g = grant("10.0.0.5:*");
        assert_eq!(g.address(), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(g.port(), None);
        let g = grant("[::1]:8080");
        assert_eq!((g.host(), g.port()), ("::1", Some(8080)));
        assert_eq!(g.address(), Some("::1".parse().unwrap()));
    }

    #[test]
    fn a_grant_shows_as_written() {
        for text in ["Example.COM:443", "[::1]:*", "127.0.0.1:9", "h:0080"] {
            assert_eq!(grant(text).to_string(), text);
        }
    }

    #[test]
    fn what_is_not_host_port_is_refused_with_the_text_quoted() {
        for text in ["example.com", ":80", "h:", "h:x", "h:65536", "h:-1", ""] {
            let e = text.parse::<NetworkGrant>().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{text:?} is not host:port (or host:*)")
            );
        }
    }

    #[test]
    fn hosts_compare_case_insensitively_and_ports_exactly() {
        let grants = Grants {
            network: vec![grant("API.example.com:443"), grant("[::1]:*")],
            ..Grants::default()
        };
        assert!(grants.allows_host("api.example.com", 443));
        assert!(!grants.allows_host("api.example.com", 80));
        assert!(!grants.allows_host("example.com", 443));
        assert!(grants.allows_host("[::1]", 1));
        assert!(grants.allows_host("::1", 65535));
    }

    #[test]
    fn grants_name_each_bad_entry_and_keep_the_good_ones() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("data")).unwrap();
        let origin = Origin {
            file: root.path().join("backflow.toml"),
            key: "sources.files".into(),
        };
        let file = GrantsFile {
            files: vec!["data/".into(), "missing".into()],
            network: vec!["h:1".into(), "nope".into()],
            env: vec!["TOKEN".into()],
        };
        let mut errors = Vec::new();
        let g = grants(root.path(), file, &origin, &mut errors);
        assert_eq!(
            g.files,
            vec![(root.path().join("data/"), "data".to_string())]
        );
        assert_eq!(g.network, vec![grant("h:1")]);
        assert_eq!(g.env, vec!["TOKEN".to_string()]);
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "sources.files.grants.files[1]",
                "sources.files.grants.network[1]"
            ]
        );
        assert_eq!(errors[1].message, "\"nope\" is not host:port (or host:*)");
    }

    #[test]
    fn notification_grants_skip_what_grants_nothing() {
        let network = notification_network(&["hooks.slack.com:443".into(), "bad".into()]);
        assert_eq!(network, vec![grant("hooks.slack.com:443")]);
    }
}
