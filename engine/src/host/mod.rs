//! The Wasm host: one wasmtime [`Engine`] per process, a compiled-component cache, and a
//! sandboxed [`Store`] per plugin instance.
//!
//! What a plugin may touch is decided here and nowhere else:
//! - no files, network or environment unless the workspace grants them ([`Grants`]);
//! - a memory limit per instance ([`Limits::memory_mb`]) enforced by a store limiter;
//! - a CPU-time budget per call ([`Limits::call_timeout_ms`]), enforced with epoch
//!   interruption: a background thread ticks the engine's epoch every [`EPOCH_TICK`] and
//!   each store's deadline callback checks the CPU time the call has used (see
//!   [`cpu_clock`]: waits on the network and time the process was descheduled are not
//!   charged to the guest).
//!
//! A trap, a timeout or an exhausted memory limit poisons only that instance and surfaces as
//! [`CallError::Trap`]; the engine process carries on.

pub mod bindings;
mod cache_dir;
pub(crate) mod call;
pub mod capture;
mod compiled_cache;
mod cpu_clock;
mod imports;
pub mod instance;
mod network;
mod request_gate;
mod stderr;
mod warehouse;

use anyhow::{anyhow, bail, Context as _};
use backflow_plugin_sdk::{Capability, PluginKind, PluginSpec, RowEncoding};
use cpu_clock::CallClock;
pub(crate) use network::Resolver;
use network::{checked_http_client, resolve_network_grants, system_resolver, AddressGrants};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

pub use crate::domain::{Grants, Limits};
pub use bindings::ContractVersion;
pub use cache_dir::{user_cache_dir, CACHE_DIR_ENV, CACHE_MAX_MB_ENV};
pub use call::CallError;
pub use capture::RequestCapture;
pub use instance::{
    destination_operations, evaluate_policy, evaluate_policy_decision, CheckInstance,
    DestinationInstance, SourceInstance,
};
pub use warehouse::WarehouseInstance;

/// An HTTP client like [`PluginHost::http`] (no proxy, no redirects, names checked as
/// plugins' are) whose names may also lead to the addresses and ranges among `grants` (an
/// alert's `grants.network`).
pub fn checked_client_granting(
    grants: &[crate::domain::NetworkGrant],
) -> anyhow::Result<reqwest::Client> {
    let resolver: Resolver = Arc::new(system_resolver);
    checked_http_client(&resolver, AddressGrants::of(grants))
}

/// How often the epoch advances. Deadlines are checked at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Linear memories one plugin instance may have; each is bounded by `limits.memory_mb`.
const MAX_MEMORIES: usize = 4;

/// Tables one plugin instance may have.
const MAX_TABLES: usize = 64;

/// Elements one table may hold, so that all of an instance's tables together (a funcref
/// or externref is at most 16 bytes) fit in its memory budget too: tables are memory the
/// linear-memory limit does not see. At the default 256 MiB, 262,144 per table; at least
/// 10,000 (components built from interpreters have tables of a few thousand functions).
fn table_elements_for(memory_mb: u64) -> usize {
    let budget = usize::try_from(memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    (budget / (16 * MAX_TABLES)).clamp(10_000, 1_000_000)
}

/// Host resources (WASI streams, pollables, sockets, directory handles) one plugin instance
/// may hold at once. They live in the host's [`ResourceTable`], outside the plugin's linear
/// memory, so wasmtime's default cap (a million entries, hundreds of MiB of host memory a
/// plugin could pin by leaking handles) is replaced by one that follows the memory budget:
/// 64 per MiB, i.e. 16,384 at the default 256 MiB, which at up to 1 KiB of host memory per
/// entry stays within a sixteenth of the budget. A plugin normally holds a few dozen.
fn resource_entries_for(memory_mb: u64) -> usize {
    usize::try_from(memory_mb.saturating_mul(64))
        .unwrap_or(usize::MAX)
        .clamp(1_024, 65_536)
}

/// A compiled plugin: its component, content hash and spec.
#[derive(Clone)]
pub struct Plugin {
    /// The `.wasm` file it was loaded from.
    pub path: PathBuf,
    /// The SHA-256 of the file's bytes, hex: what a workspace pins.
    pub hash: String,
    /// What the plugin says it is (its `spec()`).
    pub spec: PluginSpec,
    /// The contract version the component implements: which bindings every call goes through.
    pub contract: ContractVersion,
    /// How batches cross its boundary (JSON for 0.2.0 plugins that ask for it); the bindings
    /// convert, so the rest of the engine sees MessagePack batches whatever the plugin speaks.
    pub row_encoding: RowEncoding,
    /// What it implements beyond its kind's basics (its spec's `capabilities`, 0.3.0; none
    /// for older plugins), checked against its kind and exports at load.
    pub capabilities: Vec<Capability>,
    /// The compiled component.
    pub component: Component,
    /// The component with its imports resolved against the host's linker, once per load:
    /// each instance (one per run reader, per writer in flight) then only instantiates.
    pub(crate) pre: wasmtime::component::InstancePre<PluginState>,
    /// How long compiling it took, when this load compiled it (not for code read from the
    /// cache or a plugin loaded before).
    pub compiled_ms: Option<u64>,
    /// Whether the component imports any of `wasi:sockets`. One that does not reaches the
    /// network only through the host's `http-send`, where a delivery can meter its requests
    /// (see `request_gate`).
    pub uses_sockets: bool,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("hash", &self.hash)
            .field("contract", &self.contract)
            .field("spec", &self.spec)
            .finish()
    }
}

/// Everything a plugin's store holds.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    pub(crate) plugin_name: String,
    pub(crate) grants: Arc<Grants>,
    pub(crate) http: reqwest::Client,
    /// Values of granted environment variables, redacted from the plugin's log lines.
    pub(crate) secrets: Vec<String>,
    pub(crate) clock: CallClock,
    pub(crate) stderr: stderr::StderrTail,
    /// For a delivery's writers: the turn its HTTP requests wait for (see `request_gate`).
    pub(crate) request_gate: Option<request_gate::RequestGate>,
    /// For a delivery's writers, when the run keeps requests: the delivery debugger's
    /// recorder (see `capture`).
    pub(crate) capture: Option<capture::WriterCapture>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Owns the wasmtime engine, the linker and the compiled-component cache.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<PluginState>,
    cache: Option<compiled_cache::CompiledCache>,
    loaded: Mutex<HashMap<String, Plugin>>,
    /// The engine's own HTTP client (notifications, alerts): names checked like plugins'.
    http: reqwest::Client,
    /// Plugins' host HTTP: resolves names only through `network::CheckedResolver`, never a proxy.
    plugin_http: reqwest::Client,
    /// Host HTTP clients of plugins granted addresses or ranges their names may lead to.
    granted_http: Mutex<HashMap<AddressGrants, reqwest::Client>>,
    /// Resolves granted host names (the system resolver; tests replace it).
    resolver: Resolver,
    _ticker: Arc<EpochTicker>,
}

struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl PluginHost {
    /// `cache_dir` holds compiled components; `None` disables the disk cache.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<PluginHost> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Epoch interruption bounds CPU time per call at ~1% overhead, unlike fuel, which
        // counts every instruction. The deadline callback (see `instantiate`) decides.
        config.epoch_interruption(true);
        // Instances are few and long-lived (one per reader/writer), so the default on-demand
        // allocator is enough; the pooling allocator pays off only at high instantiation rates.
        // Fail memory.grow beyond the limit with a trap, so an out-of-memory guest stops with
        // a clear error instead of misbehaving on a failed allocation.
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // One memory per core module: with multi-memory a module could multiply its memory
        // limit by declaring many memories.
        config.wasm_multi_memory(false);
        // Profiling: `BACKFLOW_PERF_MAP=1` writes /tmp/perf-PID.map so `perf report` names
        // plugin functions (build the plugin without `strip` to get its own names).
        if std::env::var_os("BACKFLOW_PERF_MAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("backflow-epoch".into())
                .spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })?;
        }

        let mut linker: Linker<PluginState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::add_to_linker(&mut linker)?;

        // reqwest is built without a bundled crypto provider (aws-lc builds C, slowly); use
        // ring's. Installing twice is harmless: the first provider stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resolver: Resolver = Arc::new(system_resolver);
        let http = checked_http_client(&resolver, AddressGrants::default())?;
        let plugin_http = checked_http_client(&resolver, AddressGrants::default())?;

        let cache = cache_dir
            .as_deref()
            .map(compiled_cache::CompiledCache::open)
            .transpose()?;
        Ok(PluginHost {
            engine,
            linker,
            cache,
            loaded: Mutex::new(HashMap::new()),
            http,
            plugin_http,
            granted_http: Mutex::default(),
            resolver,
            _ticker: Arc::new(EpochTicker { stop }),
        })
    }

    /// The host's HTTP client (no redirects, no proxy, names checked as plugins' are), for
    /// the engine's own requests (notifications, alerts).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The host HTTP client of a plugin with `grants`: the shared one, or, when the grants
    /// name addresses or ranges its names may lead to, one that allows them (kept for reuse).
    fn plugin_http_for(&self, grants: &Grants) -> anyhow::Result<reqwest::Client> {
        let granted = AddressGrants::of(&grants.network);
        if granted.is_empty() {
            return Ok(self.plugin_http.clone());
        }
        let mut clients = self.granted_http.lock().unwrap();
        if let Some(client) = clients.get(&granted) {
            return Ok(client.clone());
        }
        let client = checked_http_client(&self.resolver, granted.clone())?;
        clients.insert(granted, client.clone());
        Ok(client)
    }

    #[cfg(test)]
    pub(crate) fn set_resolver(&mut self, resolver: Resolver) {
        self.plugin_http =
            checked_http_client(&resolver, AddressGrants::default()).expect("an HTTP client");
        self.http = self.plugin_http.clone();
        self.granted_http.lock().unwrap().clear();
        self.resolver = resolver;
    }

    /// The wasmtime engine every plugin of this host is compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads (compiling or reading from cache) a plugin file and reads its spec.
    pub async fn load(&self, path: &Path) -> anyhow::Result<Plugin> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading plugin {}", path.display()))?;
        let hash = hex::encode(Sha256::digest(&bytes));
        if let Some(p) = self.loaded.lock().unwrap().get(&hash) {
            let mut p = p.clone();
            p.path = path.to_path_buf();
            return Ok(p);
        }
        check_component_bytes(&bytes).with_context(|| format!("{}", path.display()))?;
        let started = Instant::now();
        let (component, compiled) = self
            .compile_cached(path, &bytes, &hash)
            .with_context(|| format!("compiling plugin {}", path.display()))?;
        let compiled_ms = compiled.then(|| started.elapsed().as_millis() as u64);
        let contract = ContractVersion::of(&self.engine, &component)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            let detail = format!("{e:#}");
            match explain_missing_import(&detail) {
                Some(explained) => anyhow!("plugin {}: {explained}", path.display()),
                None => anyhow!(
                    "plugin {}: its imports do not match what the host provides: {detail}",
                    path.display()
                ),
            }
        })?;
        let (spec, row_encoding, capabilities) = self
            .read_spec(contract, &pre)
            .await
            .with_context(|| format!("reading the spec of plugin {}", path.display()))?;
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        bindings::check_capabilities(spec.kind, &capabilities, &exports)
            .map_err(|e| anyhow!("plugin {}: {e}", path.display()))?;
        let uses_sockets = component
            .component_type()
            .imports(&self.engine)
            .any(|(name, _)| name.starts_with("wasi:sockets/"));
        let plugin = Plugin {
            path: path.to_path_buf(),
            hash: hash.clone(),
            spec,
            contract,
            row_encoding,
            capabilities,
            component,
            pre,
            compiled_ms: None,
            uses_sockets,
        };
        self.loaded.lock().unwrap().insert(hash, plugin.clone());
        Ok(Plugin {
            compiled_ms,
            ..plugin
        })
    }

    /// The component, and whether it had to be compiled (not read from the cache).
    fn compile_cached(
        &self,
        path: &Path,
        bytes: &[u8],
        hash: &str,
    ) -> anyhow::Result<(Component, bool)> {
        let Some(cache) = &self.cache else {
            return Ok((self.compile(path, bytes)?, true));
        };
        // The key covers the plugin's bytes and everything about this engine that affects
        // compiled code (wasmtime version, target, settings).
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let file = cache.entry(hash, hasher.finish());
        match cache.read(&file) {
            // SAFETY: these are the bytes this cache wrote (their keyed hash, under a secret
            // only the cache's owner can read, matched just now), serialized by an engine
            // with the same compatibility hash. wasmtime still validates the header.
            Ok(compiled) => match unsafe { Component::deserialize(&self.engine, &compiled) } {
                Ok(c) => {
                    cache_dir::touch(&file);
                    return Ok((c, false));
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "ignoring unusable cached component")
                }
            },
            Err(compiled_cache::EntryRefused::Unreadable(_)) => {}
            Err(refused) => {
                tracing::warn!(file = %file.display(), "not loading a cached component: {refused}; compiling the plugin again")
            }
        }
        let component = self.compile(path, bytes)?;
        if let Err(e) = component
            .serialize()
            .and_then(|compiled| Ok(cache.write(&file, &compiled)?))
        {
            tracing::warn!(file = %file.display(), error = %e, "could not cache compiled component");
        } else if let Some(dir) = file.parent() {
            for removed in cache_dir::evict(dir, cache_dir::max_bytes(), &file) {
                tracing::info!(file = %removed.display(), "removed a compiled plugin used least recently (the cache is over BACKFLOW_CACHE_MAX_MB)");
            }
        }
        Ok((component, true))
    }

    /// Compiles a component, saying so: a large component (an interpreter inside) takes
    /// 10-30 s the first time, and a silent pause that long looks like a hang.
    fn compile(&self, path: &Path, bytes: &[u8]) -> anyhow::Result<Component> {
        let started = Instant::now();
        tracing::info!(plugin = %path.display(), size_kib = bytes.len() / 1024, "compiling plugin (first use of this file; the compiled code is cached)");
        let component = Component::new(&self.engine, bytes)?;
        tracing::info!(plugin = %path.display(), compile_ms = started.elapsed().as_millis() as u64, "compiled plugin");
        Ok(component)
    }

    async fn read_spec(
        &self,
        contract: ContractVersion,
        pre: &wasmtime::component::InstancePre<PluginState>,
    ) -> Result<(PluginSpec, RowEncoding, Vec<Capability>), CallError> {
        let mut store = self
            .new_store("(spec)", &Grants::default(), Limits::default())
            .map_err(|e| CallError::Host(format!("{e:#}")))?;
        let pre = pre.clone();
        match contract {
            ContractVersion::V0_1_0 => {
                bindings::v0_1_0::Base::instantiate(&mut store, pre)
                    .await?
                    .spec(&mut store)
                    .await
            }
            ContractVersion::V0_2_0 => {
                bindings::v0_2_0::Base::instantiate(&mut store, pre)
                    .await?
                    .spec(&mut store)
                    .await
            }
            ContractVersion::V0_3_0 => {
                bindings::v0_3_0::Base::instantiate(&mut store, pre)
                    .await?
                    .spec(&mut store)
                    .await
            }
        }
    }

    /// Runs the plugin's own config check. Returns every problem it reports.
    pub async fn check_config(
        &self,
        plugin: &Plugin,
        config_json: &str,
        limits: Limits,
    ) -> Result<Vec<backflow_plugin_sdk::ConfigError>, CallError> {
        let mut store = self
            .new_store(&plugin.spec.name, &Grants::default(), limits)
            .map_err(|e| CallError::Host(e.to_string()))?;
        let pre = plugin.pre.clone();
        match plugin.contract {
            ContractVersion::V0_1_0 => {
                bindings::v0_1_0::Base::instantiate(&mut store, pre)
                    .await?
                    .check_config(&mut store, config_json)
                    .await
            }
            ContractVersion::V0_2_0 => {
                bindings::v0_2_0::Base::instantiate(&mut store, pre)
                    .await?
                    .check_config(&mut store, config_json)
                    .await
            }
            ContractVersion::V0_3_0 => {
                bindings::v0_3_0::Base::instantiate(&mut store, pre)
                    .await?
                    .check_config(&mut store, config_json)
                    .await
            }
        }
    }

    /// A fresh store with exactly the granted capabilities.
    pub(crate) fn new_store(
        &self,
        plugin_name: &str,
        grants: &Grants,
        limits: Limits,
    ) -> anyhow::Result<Store<PluginState>> {
        let mut wasi = WasiCtx::builder();
        let mut secrets = Vec::new();
        for name in &grants.env {
            if let Ok(value) = std::env::var(name) {
                if value.len() >= 4 {
                    secrets.push(value.clone());
                }
                wasi.env(name, value);
            }
        }
        let stderr = stderr::StderrTail::new(16 * 1024, plugin_name, secrets.clone());
        wasi.stderr(stderr.clone());
        wasi.stdout(stderr::StderrTail::stdout(plugin_name, secrets.clone()));
        for (host_path, guest_path) in &grants.files {
            wasi.preopened_dir(host_path, guest_path, FsPerms::ReadOnly)
                .map_err(|e| anyhow!("granting directory {}: {e}", host_path.display()))?;
        }
        // Sockets: only granted host:port pairs. Names in grants are resolved once, here,
        // through the same check as host HTTP (see `checked_addresses`).
        let allowed = resolve_network_grants(&grants.network, &self.resolver);
        wasi.socket_addr_check(move |addr: SocketAddr, address_use| {
            let ok = match address_use {
                // A connect first checks the implicit bind to an ephemeral local port
                // (0.0.0.0:0); allowing it lets a client connect, not listen (TcpListen is
                // checked on its own and refused below).
                SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                SocketAddrUse::TcpConnect => allowed
                    .iter()
                    .any(|g| g.covers(addr.ip()) && g.port().is_none_or(|p| p == addr.port())),
                // No servers and no UDP inside the sandbox.
                _ => false,
            };
            Box::pin(async move { ok })
        });
        // DNS inside the sandbox only for a plugin granted a host *name*: it needs to resolve
        // that name to connect its own socket (a database driver). WASI has no per-name filter,
        // so such a plugin could look up other names too (a DNS side channel); it still cannot
        // connect anywhere but the granted addresses. Plugins granted only IP addresses, or
        // nothing, get no DNS; host HTTP is checked by name and needs none.
        let names_granted = grants.network.iter().any(|g| g.is_name());
        wasi.allow_ip_name_lookup(names_granted);
        wasi.allow_udp(false);
        // TCP is off in WASI by default; turn it on only for a plugin with network grants,
        // and then only the checks above decide where it may connect.
        wasi.allow_tcp(!grants.network.is_empty());

        let mut table = ResourceTable::new();
        table.set_max_capacity(resource_entries_for(limits.memory_mb));
        let state = PluginState {
            wasi: wasi.build(),
            table,
            limits: StoreLimitsBuilder::new()
                .memory_size((limits.memory_mb as usize).saturating_mul(1024 * 1024))
                .trap_on_grow_failure(true)
                // The memory limit applies to each memory; bound how many there may be (a
                // wasip2 component has one, plus at most a few from adapters), and tables.
                .memories(MAX_MEMORIES)
                .instances(16)
                .tables(MAX_TABLES)
                .table_elements(table_elements_for(limits.memory_mb))
                .build(),
            plugin_name: plugin_name.to_string(),
            grants: Arc::new(grants.clone()),
            http: self.plugin_http_for(grants)?,
            secrets,
            clock: CallClock::new(
                Duration::from_millis(limits.call_timeout_ms),
                Duration::from_millis(limits.wall_timeout_ms),
            ),
            stderr,
            request_gate: None,
            capture: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let clock = &mut ctx.data_mut().clock;
            if clock.over_budget() {
                clock.timed_out = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            // Yield so a busy guest never monopolises a runtime thread.
            Ok(UpdateDeadline::Yield(1))
        });
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_fit_in_the_memory_budget() {
        for mb in [16u64, 64, 256, 1024] {
            let elements = table_elements_for(mb);
            assert!(elements >= 10_000);
            assert!(
                elements * 16 * MAX_TABLES
                    <= (mb as usize * 1024 * 1024).max(10_000 * 16 * MAX_TABLES),
                "{mb} MiB"
            );
        }
        assert_eq!(table_elements_for(256), 262_144);
        assert_eq!(table_elements_for(u64::MAX), 1_000_000);
    }

    #[test]
    fn a_missing_import_is_named_with_what_to_do_instead() {
        let wasmtime = "component imports instance `wasi:http/outgoing-handler@0.2.3`, but a matching implementation was not found in the linker: instance export `handle` has the wrong type";
        let m = explain_missing_import(wasmtime).unwrap();
        assert!(
            m.starts_with(
                "it imports `wasi:http/outgoing-handler@0.2.3`, which backflow does not provide"
            ),
            "{m}"
        );
        assert!(
            m.contains("http-send") && m.contains("--disable http --disable fetch-event"),
            "{m}"
        );
        let other = explain_missing_import("component imports instance `acme:crm/api`, but a matching implementation was not found in the linker").unwrap();
        assert!(other.contains("WASI 0.2 and its own contract"), "{other}");
        assert_eq!(explain_missing_import("some other failure"), None);
    }

    #[test]
    fn host_resources_follow_the_memory_budget() {
        assert_eq!(resource_entries_for(256), 16_384);
        assert_eq!(resource_entries_for(1), 1_024);
        assert_eq!(resource_entries_for(u64::MAX), 65_536);
    }
}

/// Says which import the engine lacks and what to do instead, from wasmtime's "component
/// imports instance `NAME`, but a matching implementation was not found" error.
fn explain_missing_import(error: &str) -> Option<String> {
    let rest = &error[error.find("component imports ")?..];
    let name = rest.split('`').nth(1)?;
    if !rest.contains("was not found") {
        return None;
    }
    let interface = name.split('@').next().unwrap_or(name);
    let advice = if interface.starts_with("wasi:http/") {
        "a plugin reaches the network through the host's `http-send` (backflow:plugin/host), checked against its grants.network. \
         componentize-js imports wasi:http unless built with `--disable http --disable fetch-event`"
    } else if interface.starts_with("wasi:") {
        "this WASI interface is not among those backflow provides (wit/README.md lists them); build the plugin without it"
    } else if interface.starts_with("backflow:") {
        "this interface is not part of any contract version this backflow knows: the plugin may be built against a newer wit/ than this engine"
    } else {
        "backflow provides WASI 0.2 and its own contract (backflow:plugin) only; build the plugin without this import"
    };
    Some(format!(
        "it imports `{name}`, which backflow does not provide: {advice}"
    ))
}

/// Rejects files that are not Wasm components, with a message saying what they are.
fn check_component_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        bail!("not a WebAssembly file (it does not start with the \\0asm magic bytes)");
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => bail!(
            "a core WebAssembly module, not a component: build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
        ),
        _ => bail!("an unsupported WebAssembly binary version"),
    }
}

/// A plugin used in a role of another kind (a source named where a destination belongs).
#[derive(Debug, thiserror::Error)]
#[error("plugin {name} ({path}) is a {actual} plugin, not a {expected}")]
pub struct WrongKind {
    name: String,
    path: String,
    actual: PluginKind,
    expected: PluginKind,
}

/// The kind a plugin must have for a role: [`WrongKind`] if it does not.
pub fn expect_kind(plugin: &Plugin, kind: PluginKind) -> Result<(), WrongKind> {
    if plugin.spec.kind == kind {
        Ok(())
    } else {
        Err(WrongKind {
            name: plugin.spec.name.clone(),
            path: plugin.path.display().to_string(),
            actual: plugin.spec.kind,
            expected: kind,
        })
    }
}
