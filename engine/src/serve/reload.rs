//! Hot reload of plugins: the service watches its plugins directory and, when a `.wasm` file
//! is added, replaced or removed, compiles and checks the new file off the request path and
//! swaps it in for runs that start afterwards. Runs in flight keep the version they started
//! with. A file that does not load, or is no longer the same kind of plugin, is refused and
//! the version before keeps serving. With reviews on, a new hash the published
//! configuration does not pin is loaded but not used until a change publishes it.

use crate::app::{App, PluginFileState, PluginStatus};
use crate::domain::now_rfc3339 as now;
use crate::host::Plugin;
use crate::plugins::canonical_file;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a file must be quiet before it is loaded: a copy lands in several writes.
const SETTLE: Duration = Duration::from_millis(250);

/// Loads every plugin file at start, recording each one's status in the app.
pub async fn load_all(app: &Arc<App>) {
    let dir = app.plugins_dir().to_path_buf();
    app.serve_plugins();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_plugin_file(p))
        .collect();
    files.sort();
    for file in files {
        load_one(app, &file).await;
    }
}

fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
        && !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Looks at every plugin file again (SIGHUP; a watcher can miss events, on network file
/// systems for one): loads what differs from what serves, retries refused files, withdraws
/// what is gone.
pub async fn rescan(app: &Arc<App>) {
    let mut files: BTreeSet<PathBuf> = std::fs::read_dir(app.plugins_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_plugin_file(p))
        .map(|p| canonical_file(&p))
        .collect();
    files.extend(app.with_plugin_statuses(|st| {
        st.iter()
            .filter(|(_, status)| status.status != PluginFileState::Removed)
            .map(|(file, _)| file.clone())
            .collect::<Vec<_>>()
    }));
    for file in files {
        let on_disk = std::fs::read(&file)
            .ok()
            .map(|b| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&b)));
        let refused = app.with_plugin_statuses(|st| {
            st.get(&file)
                .is_some_and(|s| s.status == PluginFileState::Refused)
        });
        let served = app.newest_served(&file).map(|p| p.hash);
        if on_disk.is_some() && on_disk == served && !refused {
            continue;
        }
        load_one(app, &file).await;
    }
}

/// Loads (or withdraws) one file and records what happened.
pub async fn load_one(app: &Arc<App>, file: &Path) {
    // The table, the served versions and the watcher's events know a file by one path.
    let file = &canonical_file(file);
    if !file.exists() {
        app.withdraw_plugin(file);
        app.with_plugin_statuses(|st| {
            if let Some(status) = st.get_mut(file) {
                tracing::warn!(file = %file.display(), "plugin file removed: runs starting from now cannot use it");
                status.status = PluginFileState::Removed;
                status.loaded_at = now();
            }
        });
        return;
    }
    let started = Instant::now();
    // Compiling is CPU work measured in seconds for a large plugin: keep it off the
    // runtime's worker threads that serve requests and drive runs.
    let loaded = {
        let app = app.clone();
        let path = file.to_path_buf();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || handle.block_on(app.load_plugin(&path))).await
    };
    let compile_ms = started.elapsed().as_millis() as u64;
    let previous = app.newest_served(file);
    let result = match loaded {
        Ok(Ok(plugin)) => same_kind(previous.as_ref(), &plugin)
            .map(|()| plugin)
            .map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(e) => Err(format!("loading stopped: {e}")),
    };
    // Reads the configuration: before the lock that `/healthz` and the API also take.
    let awaiting = result
        .as_ref()
        .ok()
        .and_then(|plugin| app.published_pin(plugin));
    match result {
        Ok(plugin) => serving(app, file, plugin, awaiting, compile_ms),
        Err(error) => refused(app, file, previous.as_ref(), error, compile_ms),
    }
}

/// Serves a file that loaded, and records it.
fn serving(app: &App, file: &Path, plugin: Plugin, awaiting: Option<String>, compile_ms: u64) {
    app.with_plugin_statuses(|st| {
            app.offer_plugin(plugin.clone());
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
                    status: PluginFileState::Serving,
                    name: Some(plugin.spec.name.clone()),
                    kind: Some(plugin.spec.kind.as_str().to_string()),
                    version: Some(plugin.spec.version.clone()),
                    sha256: Some(plugin.hash.clone()),
                    error: None,
                    awaiting_publish: awaiting.is_some().then(|| plugin.hash.clone()),
                    published_pin: awaiting,
                    loaded_at: now(),
                    compile_ms,
                },
            );
    });
}

/// Records a file that did not load; the version before, if any, keeps serving.
fn refused(app: &App, file: &Path, previous: Option<&Plugin>, error: String, compile_ms: u64) {
    app.with_plugin_statuses(|st| {
        crate::metrics::record_reload(&file.display().to_string(), false);
        let keeps = previous
            .map(|p| format!("sha256 {} keeps serving", crate::governance::short(&p.hash)))
            .unwrap_or_else(|| "nothing was serving from this file".into());
        tracing::error!(file = %file.display(), "plugin file refused ({keeps}): {error}");
        let entry = st
            .entry(file.to_path_buf())
            .or_insert_with(|| PluginStatus {
                file: file.to_path_buf(),
                status: PluginFileState::Refused,
                name: None,
                kind: None,
                version: None,
                sha256: None,
                error: None,
                awaiting_publish: None,
                published_pin: None,
                loaded_at: now(),
                compile_ms,
            });
        // Refused even while an older build serves: the status is about the newest file
        // (`sha256` still names the build that serves, `/healthz` counts it).
        entry.status = PluginFileState::Refused;
        entry.error = Some(error);
        entry.loaded_at = now();
        entry.compile_ms = compile_ms;
    });
}

/// A file keeps its role: a destination replaced by a source (or another plugin's name)
/// would break every sync using it mid-flight.
fn same_kind(previous: Option<&Plugin>, new: &Plugin) -> Result<(), NotTheSamePlugin> {
    let Some(prev) = previous else { return Ok(()) };
    if prev.spec.kind != new.spec.kind || prev.spec.name != new.spec.name {
        return Err(NotTheSamePlugin {
            was_kind: prev.spec.kind.as_str(),
            was_name: prev.spec.name.clone(),
            now_kind: new.spec.kind.as_str(),
            now_name: new.spec.name.clone(),
        });
    }
    Ok(())
}

/// A file replaced by another kind of plugin, or another plugin's name.
#[derive(Debug, thiserror::Error)]
#[error("the file served {was_kind} plugin {was_name:?} and now holds {now_kind} plugin {now_name:?}; a replacement must be the same plugin (add a new file for another one)")]
struct NotTheSamePlugin {
    was_kind: &'static str,
    was_name: String,
    now_kind: &'static str,
    now_name: String,
}

/// Watches the plugins directory until the process ends, loading what changes.
pub fn watch(app: Arc<App>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = app.plugins_dir().to_path_buf();
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
                let file = canonical_file(&file);
                let on_disk = std::fs::read(&file)
                    .ok()
                    .map(|b| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&b)));
                let served = app.newest_served(&file).map(|p| p.hash);
                // The build that serves, back in place of a refused one, clears the refusal.
                let refused = app.with_plugin_statuses(|st| {
                    st.get(&file)
                        .is_some_and(|s| s.status == PluginFileState::Refused)
                });
                let unchanged = (on_disk.is_some() && served == on_disk && !refused)
                    || last_looked.get(&file) == Some(&on_disk);
                last_looked.insert(file.clone(), on_disk);
                if !unchanged {
                    load_one(&app, &file).await;
                }
            }
        }
    });
    Ok(watcher)
}
