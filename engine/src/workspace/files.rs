//! Reading the configuration files: `backflow.toml` and the one-definition-per-file
//! `models/*.toml` and `syncs/*.toml` ([`ConfigFiles`]), and parsing them, with TOML's
//! errors turned into [`ConfigError`]s naming the file.

use super::definitions::Origin;
use super::errors::{ConfigError, ConfigErrors};
use indexmap::IndexMap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The workspace's main file, at its root.
pub const WORKSPACE_FILE: &str = "backflow.toml";

/// A TOML error in `file`, as a configuration error about the file as a whole.
pub(super) fn toml_error(file: &Path, e: toml::de::Error) -> ConfigError {
    // toml's message carries the line, column and, for unknown keys, the expected ones.
    ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        message: e.to_string().trim_end().to_string(),
    }
}

fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        message: format!("cannot read: {e}"),
    })
}

/// Files in `dir` ending in `.toml`, sorted; none if the directory does not exist.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// The configuration files of a workspace, by path relative to its root (`backflow.toml`,
/// `models/NAME.toml`, `syncs/NAME.toml`): what a change request reviews and what is
/// published. Data files (CSV and the like) are not configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigFiles(pub BTreeMap<String, String>);

impl ConfigFiles {
    /// Reads the working copy's configuration files.
    pub fn read(root: &Path) -> Result<ConfigFiles, ConfigErrors> {
        let main_file = root.join(WORKSPACE_FILE);
        if !main_file.exists() {
            return Err(ConfigErrors(vec![ConfigError {
                file: main_file,
                key: String::new(),
                message: "no workspace here (create one with `backflow init DIR`, or pass --workspace DIR)".into(),
            }]));
        }
        let mut files = BTreeMap::new();
        files.insert(
            WORKSPACE_FILE.to_string(),
            read(&main_file).map_err(|e| ConfigErrors(vec![e]))?,
        );
        for kind in ["models", "syncs"] {
            for file in toml_files(&root.join(kind)) {
                let name = file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                files.insert(
                    format!("{kind}/{name}"),
                    read(&file).map_err(|e| ConfigErrors(vec![e]))?,
                );
            }
        }
        Ok(ConfigFiles(files))
    }

    /// SHA-256 over every file's path and content: what a reviewer approved.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (path, content) in &self.0 {
            h.update((path.len() as u64).to_be_bytes());
            h.update(path.as_bytes());
            h.update((content.len() as u64).to_be_bytes());
            h.update(content.as_bytes());
        }
        format!("{:x}", h.finalize())
    }
}

/// Definitions of one kind: the `[KIND.NAME]` tables of the main file, then one per file in
/// `KIND/` (named after the file), each with where it came from.
pub(super) fn definitions<T: serde::de::DeserializeOwned>(
    inline: IndexMap<String, T>,
    kind: &str,
    root: &Path,
    files: &ConfigFiles,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, T, Origin)> {
    let main_file = root.join(WORKSPACE_FILE);
    let mut out: Vec<(String, T, Origin)> = inline
        .into_iter()
        .map(|(name, def)| {
            let origin = Origin {
                file: main_file.clone(),
                key: format!("{kind}.{name}"),
            };
            (name, def, origin)
        })
        .collect();
    let prefix = format!("{kind}/");
    for (rel, text) in files
        .0
        .range(prefix.clone()..)
        .take_while(|(rel, _)| rel.starts_with(&prefix))
    {
        let file = root.join(rel);
        let name = Path::new(rel)
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match toml::from_str::<T>(text).map_err(|e| toml_error(&file, e)) {
            Ok(def) => out.push((
                name,
                def,
                Origin {
                    file,
                    key: String::new(),
                },
            )),
            Err(e) => errors.push(e),
        }
    }
    out
}
