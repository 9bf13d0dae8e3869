//! The loader's errors: [`ConfigError`] (one problem, naming the file and the key),
//! [`ConfigErrors`] (everything a load found), and the typed errors of looking things up in a
//! loaded workspace ([`UnknownSync`], [`PluginChanged`]).

use std::fmt;
use std::path::PathBuf;

/// A configuration error, always naming the file and, where it applies, the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Dotted key path, e.g. `syncs.crm.model`; empty for the file as a whole.
    pub key: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// All errors found while loading, reported together.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// No sync has this name ([`Workspace::sync`](super::Workspace::sync)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", unknown("sync", name, known.iter()))]
pub struct UnknownSync {
    /// The name asked for.
    pub name: String,
    /// The syncs the workspace defines, in order.
    pub known: Vec<String>,
}

/// A plugin file whose content is not the one the published configuration was reviewed
/// with ([`Workspace::check_pin`](super::Workspace::check_pin)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "plugin {reference} ({}) changed since the configuration was published (published sha256 {}, now {}): publish a change request to use it",
    path.display(),
    short_hash(pinned),
    short_hash(found)
)]
pub struct PluginChanged {
    /// The `plugin = "..."` value.
    pub reference: String,
    /// The file the reference resolved to.
    pub path: PathBuf,
    /// The SHA-256 the configuration was published with.
    pub pinned: String,
    /// The file's SHA-256 now.
    pub found: String,
}

/// The first 12 characters of a hash, as messages show it.
fn short_hash(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// `no sync named "x" (defined: a, b)`: the message for a name that refers to nothing.
pub(super) fn unknown<'a>(
    what: &str,
    name: &str,
    known: impl Iterator<Item = &'a String>,
) -> String {
    let known: Vec<&String> = known.collect();
    if known.is_empty() {
        format!("no {what} named {name:?} (none are defined)")
    } else {
        format!(
            "no {what} named {name:?} (defined: {})",
            known
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}
