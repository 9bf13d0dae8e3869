//! Finding plugins: a workspace names a plugin by its spec name (looked up among the `.wasm`
//! files of the plugins directory) or by a path to a `.wasm` file.
//!
//! A CLI run reads the plugins directory when it starts. A service instead serves the
//! versions it has loaded and checked ([`Served`], kept up to date by the service's watcher):
//! a broken file dropped into the directory never replaces a working plugin, and a run
//! keeps the version it started with.

use crate::host::{Plugin, PluginHost};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// The result of scanning a plugins directory: usable plugins and the files that are not.
pub struct Scan {
    /// The files that loaded as plugins.
    pub plugins: Vec<Plugin>,
    /// Every other file, with why it is not a usable plugin.
    pub problems: Vec<(PathBuf, String)>,
}

/// Loads every `.wasm` file in `dir` (and notes any other file that is not a plugin).
pub async fn scan(host: &PluginHost, dir: &Path) -> Scan {
    let mut plugins = Vec::new();
    let mut problems = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for file in files {
        let is_wasm_name = file.extension().is_some_and(|e| e == "wasm");
        match host.load(&file).await {
            Ok(p) => plugins.push(p),
            Err(e) if is_wasm_name => problems.push((file, format!("{e:#}"))),
            Err(_) => problems.push((
                file,
                "not a plugin (plugins are WebAssembly components ending in .wasm)".into(),
            )),
        }
    }
    Scan { plugins, problems }
}

/// The one path a service knows a plugin file by: its directory resolved (symbolic links,
/// `.`, relative paths) and its own name, so the file need not exist any more (a removal is
/// recorded under the same path as the load before it). The path as given when the
/// directory cannot be resolved.
pub fn canonical_file(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.canonicalize()
                .map(|d| d.join(name))
                .unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// Versions of a plugin file a service keeps, newest last: the newest serves unpinned
/// references, an older one serves a published configuration pinned to it until a change
/// publishes the new hash.
const VERSIONS_KEPT: usize = 4;

/// The plugins a service serves: for each file of its plugins directory, the versions that
/// loaded and passed their checks.
#[derive(Default)]
pub struct Served {
    dir: PathBuf,
    files: BTreeMap<PathBuf, Vec<Plugin>>,
}

impl Served {
    /// A version that loaded and passed its checks: runs starting from now may use it.
    pub fn offer(&mut self, plugin: Plugin) {
        let versions = self.files.entry(plugin.path.clone()).or_default();
        versions.retain(|p| p.hash != plugin.hash);
        versions.push(plugin);
        if versions.len() > VERSIONS_KEPT {
            versions.remove(0);
        }
    }

    /// The file is gone: runs starting from now cannot use it (runs holding it finish).
    pub fn withdraw(&mut self, path: &Path) {
        self.files.remove(path);
    }

    /// The newest version of every served file.
    pub fn current(&self) -> Vec<Plugin> {
        self.files
            .values()
            .filter_map(|v| v.last().cloned())
            .collect()
    }

    /// Every served version of the file at `path`, oldest first.
    pub fn versions(&self, path: &Path) -> &[Plugin] {
        self.files.get(path).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The version `reference` means: by path or by spec name; the pinned hash if any
    /// version has it, else the newest.
    fn pick(&self, path: Option<&Path>, name: &str, pin: Option<&str>) -> Option<Plugin> {
        let candidates: Vec<&Vec<Plugin>> = match path {
            Some(path) => self.files.get(path).into_iter().collect(),
            None => self
                .files
                .values()
                .filter(|v| v.iter().any(|p| p.spec.name == name))
                .collect(),
        };
        let matching = |p: &&Plugin| path.is_some() || p.spec.name == name;
        if let Some(pin) = pin {
            if let Some(p) = candidates
                .iter()
                .flat_map(|v| v.iter())
                .filter(matching)
                .find(|p| p.hash == pin)
            {
                return Some(p.clone());
            }
        }
        candidates
            .iter()
            .filter_map(|v| v.iter().rev().find(matching))
            .next()
            .cloned()
    }
}

/// The plugin registry: the host, and in a service the versions it serves. It sits above the
/// host (which only loads, compiles and instantiates): whoever resolves a workspace's plugin
/// references holds one. It dereferences to its [`PluginHost`], so code that only loads or
/// instantiates takes `&PluginHost` and is handed a `&Registry` unchanged.
pub struct Registry {
    host: PluginHost,
    /// In a service: the plugin versions it serves (see [`Served`]); `None` in a CLI run,
    /// which reads the plugins directory.
    served: RwLock<Option<Served>>,
}

impl Registry {
    /// A registry over `host` that serves nothing yet: plugin references are resolved from
    /// the plugins directory until [`Registry::serve_plugins_from`] is called.
    pub fn new(host: PluginHost) -> Registry {
        Registry {
            host,
            served: RwLock::new(None),
        }
    }

    /// The host that loads and instantiates plugins.
    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// Turns on serving from the registry for plugins under `dir` (a service calls this once,
    /// then offers what it loads).
    pub fn serve_plugins_from(&self, dir: &Path) {
        let mut served = self.served.write().unwrap_or_else(|e| e.into_inner());
        *served = Some(Served {
            dir: dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
            files: BTreeMap::new(),
        });
    }

    /// Changes what the service serves.
    pub fn with_served<T>(&self, f: impl FnOnce(&mut Served) -> T) -> Option<T> {
        let mut served = self.served.write().unwrap_or_else(|e| e.into_inner());
        served.as_mut().map(f)
    }
}

impl From<PluginHost> for Registry {
    fn from(host: PluginHost) -> Registry {
        Registry::new(host)
    }
}

impl std::ops::Deref for Registry {
    type Target = PluginHost;

    fn deref(&self) -> &PluginHost {
        &self.host
    }
}

/// Resolves a workspace's `plugin = "..."` value (the newest version).
pub async fn resolve(
    plugins: &Registry,
    root: &Path,
    plugins_dir: &Path,
    reference: &str,
) -> anyhow::Result<Plugin> {
    resolve_pinned(plugins, root, plugins_dir, reference, None).await
}

/// Resolves a workspace's `plugin = "..."` value. In a service, the version pinned by the
/// published configuration is preferred while it is still served.
pub async fn resolve_pinned(
    plugins: &Registry,
    root: &Path,
    plugins_dir: &Path,
    reference: &str,
    pin: Option<&str>,
) -> anyhow::Result<Plugin> {
    let by_path = reference.ends_with(".wasm") || reference.contains('/');
    let path = by_path.then(|| {
        if Path::new(reference).is_absolute() {
            PathBuf::from(reference)
        } else {
            root.join(reference)
        }
    });
    {
        let served = plugins.served.read().unwrap_or_else(|e| e.into_inner());
        if let Some(served) = served.as_ref() {
            let path = path.as_deref().map(canonical_file);
            let in_dir = path
                .as_ref()
                .is_none_or(|p| p.parent() == Some(served.dir.as_path()));
            if in_dir {
                return served.pick(path.as_deref(), reference, pin).ok_or_else(|| {
                    let names: Vec<String> = served.current().iter().map(|p| p.spec.name.clone()).collect();
                    anyhow::anyhow!(
                        "no plugin {reference:?} is served from {} (serving: {}; a file that failed to load is in the service log and `GET /api/v1/plugins`)",
                        served.dir.display(),
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    )
                });
            }
        }
    }
    let host = plugins.host();
    if let Some(path) = path {
        return host.load(&path).await;
    }
    // Fast path: a file named after the plugin (`webhook.wasm`, `file_source.wasm`).
    for candidate in [
        format!("{reference}.wasm"),
        format!("{}.wasm", reference.replace('-', "_")),
    ] {
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
    scan.plugins
        .into_iter()
        .find(|p| p.spec.name == reference)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no plugin named {reference:?} in {} (found: {})",
                plugins_dir.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        })
}
