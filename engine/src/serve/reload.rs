//! Hot reload of plugins: the service watches its plugins directory and, when a `.wasm` file
//! is added, replaced or removed, compiles and checks the new file off the request path and
//! swaps it in for runs that start afterwards. Runs in flight keep the version they started
//! with. A file that does not load, or is no longer the same kind of plugin, is refused and
//! the version before keeps serving. With reviews on, a new hash the published
//! configuration does not pin is loaded but not used until a change publishes it.

use crate::app::App;
use crate::host::Plugin;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a file must be quiet before it is loaded: a copy lands in several writes.
const SETTLE: Duration = Duration::from_millis(250);

/// What the service did with one plugin file, for `GET /api/v1/plugins` and the log.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub file: PathBuf,
    /// `serving`, `refused`, `removed`.
    pub status: &'static str,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub version: Option<String>,
    /// The hash runs starting now use (without a pin).
    pub sha256: Option<String>,
    /// Why the newest file was refused (the previous version, if any, keeps serving).
    pub error: Option<String>,
    /// The published configuration pins another hash: the new file is loaded but runs use
    /// the pinned one until a change publishing the new hash is approved.
    pub awaiting_publish: Option<String>,
    pub loaded_at: String,
    pub compile_ms: u64,
}

/// Every plugin file the service knows, by path.
pub type Statuses = Arc<Mutex<BTreeMap<PathBuf, PluginStatus>>>;

use crate::domain::now_rfc3339 as now;

/// Loads every plugin file at start; returns the statuses.
pub async fn load_all(app: &Arc<App>) -> Statuses {
    let dir = app.working().plugins_dir.clone();
    app.host().serve_plugins_from(&dir);
    let statuses: Statuses = Arc::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_plugin_file(p))
        .collect();
    files.sort();
    for file in files {
        load_one(app, &statuses, &file).await;
    }
    statuses
}

fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
        && !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Loads (or withdraws) one file and records what happened.
pub async fn load_one(app: &Arc<App>, statuses: &Statuses, file: &Path) {
    if !file.exists() {
        app.host().with_served(|s| s.withdraw(file));
        let mut st = statuses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(status) = st.get_mut(file) {
            tracing::warn!(file = %file.display(), "plugin file removed: runs starting from now cannot use it");
            status.status = "removed";
            status.loaded_at = now();
        }
        return;
    }
    let started = Instant::now();
    // Compiling is CPU work measured in seconds for a large plugin: keep it off the
    // runtime's worker threads that serve requests and drive runs.
    let loaded = {
        let app = app.clone();
        let path = file.to_path_buf();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || handle.block_on(app.host().load(&path))).await
    };
    let compile_ms = started.elapsed().as_millis() as u64;
    let previous = app
        .host()
        .with_served(|s| s.versions(file).last().cloned())
        .flatten();
    let result = match loaded {
        Ok(Ok(plugin)) => same_kind(previous.as_ref(), &plugin).map(|()| plugin),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(e) => Err(format!("loading stopped: {e}")),
    };
    // Reads the configuration: before the lock that `/healthz` and the API also take.
    let awaiting = result
        .as_ref()
        .ok()
        .and_then(|plugin| pinned_elsewhere(app, plugin));
    let mut st = statuses.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(plugin) => {
            app.host().with_served(|s| s.offer(plugin.clone()));
            crate::metrics::record_reload(&file.display().to_string(), true);
            match &awaiting {
                Some(pin) => tracing::warn!(
                    file = %file.display(), plugin = plugin.spec.name, sha256 = plugin.hash, published = pin,
                    "plugin loaded, but the published configuration pins another hash: runs keep the pinned version until a change publishing this one is approved"
                ),
                None => {
                    tracing::info!(file = %file.display(), plugin = plugin.spec.name, sha256 = plugin.hash, compile_ms, "plugin serving for runs that start from now")
                }
            }
            st.insert(
                file.to_path_buf(),
                PluginStatus {
                    file: file.to_path_buf(),
                    status: "serving",
                    name: Some(plugin.spec.name.clone()),
                    kind: Some(plugin.spec.kind.as_str().to_string()),
                    version: Some(plugin.spec.version.clone()),
                    sha256: Some(plugin.hash.clone()),
                    error: None,
                    awaiting_publish: awaiting,
                    loaded_at: now(),
                    compile_ms,
                },
            );
        }
        Err(error) => {
            crate::metrics::record_reload(&file.display().to_string(), false);
            let keeps = previous
                .as_ref()
                .map(|p| format!("sha256 {} keeps serving", crate::governance::short(&p.hash)))
                .unwrap_or_else(|| "nothing was serving from this file".into());
            tracing::error!(file = %file.display(), "plugin file refused ({keeps}): {error}");
            let entry = st
                .entry(file.to_path_buf())
                .or_insert_with(|| PluginStatus {
                    file: file.to_path_buf(),
                    status: "refused",
                    name: None,
                    kind: None,
                    version: None,
                    sha256: None,
                    error: None,
                    awaiting_publish: None,
                    loaded_at: now(),
                    compile_ms,
                });
            if previous.is_none() {
                entry.status = "refused";
            }
            entry.error = Some(error);
            entry.loaded_at = now();
        }
    }
}

/// A file keeps its role: a destination replaced by a source (or another plugin's name)
/// would break every sync using it mid-flight.
fn same_kind(previous: Option<&Plugin>, new: &Plugin) -> Result<(), String> {
    let Some(prev) = previous else { return Ok(()) };
    if prev.spec.kind != new.spec.kind || prev.spec.name != new.spec.name {
        return Err(format!(
            "the file served {} plugin {:?} and now holds {} plugin {:?}; a replacement must be the same plugin (add a new file for another one)",
            prev.spec.kind.as_str(),
            prev.spec.name,
            new.spec.kind.as_str(),
            new.spec.name
        ));
    }
    Ok(())
}

/// The published pin of a reference that resolves to this plugin, when it differs.
fn pinned_elsewhere(app: &App, plugin: &Plugin) -> Option<String> {
    let ws = app.runnable_workspace().ok()?;
    let file_name = plugin.path.file_name()?.to_string_lossy().into_owned();
    ws.plugin_pins
        .iter()
        .chain(ws.governance.plugin_pins.iter())
        .find(|(reference, pin)| {
            (**reference == plugin.spec.name || reference.ends_with(&file_name))
                && **pin != plugin.hash
        })
        .map(|(_, pin)| pin.clone())
}

/// Watches the plugins directory until the process ends, loading what changes.
pub fn watch(app: Arc<App>, statuses: Statuses) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = app.working().plugins_dir.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                for path in event.paths {
                    if is_plugin_file(&path) {
                        let _ = tx.send(path);
                    }
                }
            }
            Err(e) => tracing::warn!("watching the plugins directory: {e}"),
        })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        // The content last looked at per file: one change often arrives as several events.
        let mut last_looked: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
        loop {
            let Some(first) = rx.recv().await else { return };
            // Wait until the directory has been quiet for SETTLE, gathering every file touched.
            let mut touched = BTreeSet::from([first]);
            loop {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some(path)) => {
                        touched.insert(path);
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            for file in touched {
                let on_disk = std::fs::read(&file)
                    .ok()
                    .map(|b| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&b)));
                let served = app
                    .host()
                    .with_served(|s| s.versions(&file).last().map(|p| p.hash.clone()))
                    .flatten();
                let unchanged = (on_disk.is_some() && served == on_disk)
                    || last_looked.get(&file) == Some(&on_disk);
                last_looked.insert(file.clone(), on_disk);
                if !unchanged {
                    load_one(&app, &statuses, &file).await;
                }
            }
        }
    });
    Ok(watcher)
}
