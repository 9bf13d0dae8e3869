//! Finding plugins: a workspace names a plugin by its spec name (looked up among the `.wasm`
//! files of the plugins directory) or by a path to a `.wasm` file.

use crate::host::{Plugin, PluginHost};
use std::path::{Path, PathBuf};

/// The result of scanning a plugins directory: usable plugins and the files that are not.
pub struct Scan {
    pub plugins: Vec<Plugin>,
    pub problems: Vec<(PathBuf, String)>,
}

/// Loads every `.wasm` file in `dir` (and notes any other file that is not a plugin).
pub async fn scan(host: &PluginHost, dir: &Path) -> Scan {
    let mut plugins = Vec::new();
    let mut problems = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    for file in files {
        let is_wasm_name = file.extension().is_some_and(|e| e == "wasm");
        match host.load(&file).await {
            Ok(p) => plugins.push(p),
            Err(e) if is_wasm_name => problems.push((file, format!("{e:#}"))),
            Err(_) => problems.push((file, "not a plugin (plugins are WebAssembly components ending in .wasm)".into())),
        }
    }
    Scan { plugins, problems }
}

/// Resolves a workspace's `plugin = "..."` value.
pub async fn resolve(host: &PluginHost, root: &Path, plugins_dir: &Path, reference: &str) -> anyhow::Result<Plugin> {
    if reference.ends_with(".wasm") || reference.contains('/') {
        let path = if Path::new(reference).is_absolute() { PathBuf::from(reference) } else { root.join(reference) };
        return host.load(&path).await;
    }
    // Fast path: a file named after the plugin (`webhook.wasm`, `file_source.wasm`).
    for candidate in [format!("{reference}.wasm"), format!("{}.wasm", reference.replace('-', "_"))] {
        let path = plugins_dir.join(candidate);
        if path.is_file() {
            if let Ok(p) = host.load(&path).await {
                if p.spec.name == reference {
                    return Ok(p);
                }
            }
        }
    }
    let scan = scan(host, plugins_dir).await;
    let names: Vec<String> = scan.plugins.iter().map(|p| p.spec.name.clone()).collect();
    scan.plugins.into_iter().find(|p| p.spec.name == reference).ok_or_else(|| {
        anyhow::anyhow!(
            "no plugin named {reference:?} in {} (found: {})",
            plugins_dir.display(),
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )
    })
}
