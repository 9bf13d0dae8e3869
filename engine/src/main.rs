//! The `backflow` command line.

use anyhow::{bail, Context as _};
use backflow::config::Workspace;
use backflow::host::PluginHost;
use backflow::pipeline::{self, RunOptions};
use backflow::state::{RunRecord, RunStatus, StateStore};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod governance_cli;

#[derive(Parser)]
#[command(name = "backflow", version, about = "Reverse-ETL sync engine with sandboxed WebAssembly plugins")]
struct Cli {
    /// The workspace directory (holding backflow.toml).
    #[arg(long, global = true, env = "BACKFLOW_WORKSPACE", default_value = ".")]
    workspace: PathBuf,
    /// Act as this user (one of the workspace's `[users]`).
    #[arg(long = "as", global = true, env = "BACKFLOW_USER")]
    user: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a working example workspace in DIR.
    Init {
        dir: PathBuf,
        /// Where to copy first-party plugins from (default: the `plugins` directory next to
        /// the backflow binary's directory, e.g. target/plugins, or $BACKFLOW_PLUGINS).
        #[arg(long, env = "BACKFLOW_PLUGINS")]
        plugins: Option<PathBuf>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Inspect plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// List and run syncs.
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// What the working copy changes against the published configuration, with dry-run
    /// counts for every affected sync.
    Diff {
        #[arg(long)]
        json: bool,
    },
    /// Change requests: submit the working copy, review, publish.
    Change {
        #[command(subcommand)]
        command: ChangeCommand,
    },
    /// The audit log: every submit, decision, publish, run start and run approval.
    Audit {
        #[arg(long)]
        json: bool,
        /// Check the log's hash chain.
        #[arg(long)]
        verify: bool,
    },
    /// Look at models.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Run history.
    Runs {
        /// Only runs of this sync.
        #[arg(long)]
        sync: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<RunsCommand>,
    },
    /// A local webhook receiver that prints or stores what it receives.
    Receiver {
        #[arg(long, default_value_t = 8085)]
        port: u16,
        /// Address to listen on (loopback by default).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Append every request as a JSON line to FILE.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Wait this many milliseconds before answering each request.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Answer this fraction of requests (0..1) with 500.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Answer 429 with Retry-After above this many requests per second.
        #[arg(long)]
        rate_limit: Option<u32>,
        /// Answer 422 to requests with a row whose FIELD equals VALUE (FIELD=VALUE).
        #[arg(long)]
        reject: Option<String>,
        /// Verify X-Backflow-Signature with this HMAC-SHA256 secret; 401 when wrong.
        #[arg(long, env = "BACKFLOW_RECEIVER_HMAC_SECRET")]
        hmac_secret: Option<String>,
        /// Answer 503 to everything for this many milliseconds after starting.
        #[arg(long, default_value_t = 0)]
        down_for_ms: u64,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// List the plugins in the workspace's plugins directory.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a plugin's kind, spec, config schema and contract version.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ChangeCommand {
    /// Record the working copy as a change request; the approval policies decide what it needs.
    Submit {
        #[arg(long, short, default_value = "")]
        message: String,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    Approve {
        id: u64,
        #[arg(long)]
        comment: Option<String>,
    },
    Reject {
        id: u64,
        #[arg(long)]
        comment: String,
    },
    /// Make an approved change the published configuration (the working copy must still be
    /// exactly what was reviewed).
    Publish { id: u64 },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// The schema and first rows of a model, read through its source (nothing is recorded).
    Preview {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
    /// List the workspace's syncs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Run syncs now: plan, then deliver what changed since the last run. Several names (or
    /// --all) run in parallel, each on its own; one failing or slow destination does not
    /// hold up the others.
    Run {
        #[arg(required_unless_present = "all")]
        names: Vec<String>,
        /// Run every sync of the workspace.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Print JSON: one object for one sync, an array of them for several.
        #[arg(long)]
        json: bool,
        /// Re-send every model row, not only what changed.
        #[arg(long)]
        full_resync: bool,
        /// Run the working copy instead of the published configuration (only towards
        /// destinations marked `staging = true`).
        #[arg(long)]
        draft: bool,
    },
    /// Dry run: what a run would send now, with sample rows. Sends and records nothing.
    Plan {
        name: String,
        #[arg(long)]
        json: bool,
        /// Sample rows per change.
        #[arg(long, default_value_t = 5)]
        samples: usize,
        #[arg(long)]
        full_resync: bool,
        /// Plan the working copy instead of the published configuration.
        #[arg(long)]
        draft: bool,
    },
    /// Send one model row (by primary key) to the destination as an added row and show its
    /// answer. The snapshot and run history are left untouched.
    Test {
        name: String,
        /// The primary key value (`a|b` for composite keys).
        #[arg(long)]
        row: String,
        #[arg(long)]
        json: bool,
        /// Use the working copy instead of the published configuration.
        #[arg(long)]
        draft: bool,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Approve a run held by an approval policy; once approved, exactly the reviewed plan is
    /// delivered (if the data moved meanwhile, it plans again and asks again).
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one run, with its rejected rows.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "backflow=info,warn".into()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_workspace(dir: &Path) -> anyhow::Result<Workspace> {
    Workspace::load(dir).map_err(|e| anyhow::anyhow!("invalid workspace:\n{e}"))
}

/// Who is acting, checked against the users of the published configuration (or of the
/// working copy until something is published).
fn identity(root: &Path, user: Option<&str>, working: &Workspace, state: &StateStore) -> anyhow::Result<backflow::governance::Identity> {
    let authority = backflow::governance::authority(root, working, state).map_err(anyhow::Error::msg)?;
    backflow::governance::identify(&authority, user).map_err(anyhow::Error::msg)
}

fn host_for(ws: &Workspace) -> anyhow::Result<PluginHost> {
    PluginHost::new(Some(ws.state_dir.join("cache")))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init { dir, plugins, force } => init(&dir, plugins, force),
        Command::Receiver { port, host, out, latency_ms, error_rate, rate_limit, reject, hmac_secret, down_for_ms } => {
            let addr: std::net::SocketAddr = format!("{host}:{port}").parse().with_context(|| format!("bad address {host}:{port}"))?;
            let reject = match reject {
                Some(r) => Some(r.split_once('=').map(|(f, v)| (f.to_string(), v.to_string())).context("--reject takes FIELD=VALUE")?),
                None => None,
            };
            if !(0.0..=1.0).contains(&error_rate) {
                bail!("--error-rate must be between 0 and 1");
            }
            let options = backflow::receiver::ReceiverOptions { out, print: true, latency_ms, error_rate, rate_limit, reject, hmac_secret, down_for_ms };
            let receiver = backflow::receiver::start(addr, options).await?;
            eprintln!("receiving on http://{} (Ctrl-C to stop)", receiver.addr);
            tokio::signal::ctrl_c().await?;
            eprintln!("received {} requests, {} rows", receiver.received().len(), receiver.rows());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { command: PluginCommand::Inspect { file, json } } => {
            let host = PluginHost::new(None)?;
            let plugin = host.load(&file).await?;
            let schema: serde_json::Value = serde_json::from_str(&plugin.spec.config_schema).unwrap_or(serde_json::Value::String(plugin.spec.config_schema.clone()));
            let info = serde_json::json!({
                "file": plugin.path,
                "name": plugin.spec.name,
                "version": plugin.spec.version,
                "kind": plugin.spec.kind,
                "description": plugin.spec.description,
                "wit": backflow::host::WIT_PACKAGE,
                "sha256": plugin.hash,
                "operations": plugin.spec.operations,
                "max_batch_size": plugin.spec.max_batch_size,
                "default_rate_limit": plugin.spec.default_rate_limit,
                "config_schema": schema,
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!("{} {} ({} plugin)", plugin.spec.name, plugin.spec.version, plugin.spec.kind);
                println!("  {}", plugin.spec.description);
                println!("  file:      {}", plugin.path.display());
                println!("  contract:  {}", backflow::host::WIT_PACKAGE);
                println!("  sha256:    {}", plugin.hash);
                if plugin.spec.kind == backflow_plugin_sdk::PluginKind::Destination {
                    println!("  operations: {}", plugin.spec.operations.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(", "));
                    let max = if plugin.spec.max_batch_size == 0 { "unlimited".to_string() } else { plugin.spec.max_batch_size.to_string() };
                    println!("  max batch:  {max}");
                }
                println!("  config schema:\n{}", indent(&serde_json::to_string_pretty(&schema)?, 4));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { command: PluginCommand::List { json } } => {
            let ws = load_workspace(&cli.workspace)?;
            let host = host_for(&ws)?;
            let scan = backflow::plugins::scan(&host, &ws.plugins_dir).await;
            if json {
                let plugins: Vec<_> = scan
                    .plugins
                    .iter()
                    .map(|p| serde_json::json!({"name": p.spec.name, "version": p.spec.version, "kind": p.spec.kind, "file": p.path, "sha256": p.hash}))
                    .collect();
                let problems: Vec<_> = scan.problems.iter().map(|(f, m)| serde_json::json!({"file": f, "error": m})).collect();
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"plugins": plugins, "problems": problems}))?);
            } else {
                println!("{:<20} {:<16} {:<9} FILE", "NAME", "KIND", "VERSION");
                for p in &scan.plugins {
                    println!("{:<20} {:<16} {:<9} {}", p.spec.name, p.spec.kind.as_str(), p.spec.version, p.path.display());
                }
                for (file, problem) in &scan.problems {
                    eprintln!("skipped {}: {problem}", file.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { command: SyncCommand::List { json } } => {
            let ws = load_workspace(&cli.workspace)?;
            let state = StateStore::open(&ws.state_dir)?;
            identity(&cli.workspace, cli.user.as_deref(), &ws, &state)?.require(backflow::governance::Role::Viewer, "list syncs").map_err(anyhow::Error::msg)?;
            let mut rows = Vec::new();
            for sync in ws.syncs.values() {
                let last = state.runs(Some(&sync.name), 1)?.into_iter().next();
                rows.push((sync, last));
            }
            if json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|(s, last)| {
                        serde_json::json!({
                            "name": s.name, "model": s.model, "destination": s.destination, "mode": s.mode,
                            "last_run": last.as_ref().map(|r| serde_json::json!({"run_id": r.run_id, "status": r.status, "started_at": r.started_at})),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24} {:<20} {:<20} {:<8} LAST RUN", "SYNC", "MODEL", "DESTINATION", "MODE");
                for (s, last) in rows {
                    let last = last.map(|r| format!("{} {}", r.status.as_str(), r.started_at)).unwrap_or_else(|| "never".into());
                    println!("{:<24} {:<20} {:<20} {:<8} {last}", s.name, s.model, s.destination, s.mode.as_str());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { command: SyncCommand::Plan { name, json, samples, full_resync, draft } } => {
            let working = load_workspace(&cli.workspace)?;
            let host = host_for(&working)?;
            let state = StateStore::open(&working.state_dir)?;
            identity(&cli.workspace, cli.user.as_deref(), &working, &state)?.require(backflow::governance::Role::Viewer, "plan syncs").map_err(anyhow::Error::msg)?;
            let ws = if draft { working } else { backflow::governance::workspace_for_run(&cli.workspace, &state, working, false, &[name.clone()]).map_err(anyhow::Error::msg)? };
            let report = pipeline::plan_sync(&host, &ws, &state, &name, pipeline::PlanOptions { full_resync }, samples).await.map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("plan for {} (mode {}): {} model rows, {} in snapshot", report.sync, report.mode.as_str(), report.model_rows, report.snapshot_rows);
                println!("  diff       added {:>8}  changed {:>8}  removed {:>8}  unchanged {:>8}", report.diff.added, report.diff.changed, report.diff.removed, report.diff.unchanged);
                println!("  would send added {:>8}  changed {:>8}  removed {:>8}", report.planned.added, report.planned.changed, report.planned.removed);
                print_checks(&report.checks);
                if report.blocked {
                    println!("  a run now would be BLOCKED by a failing check");
                }
                for change in ["added", "changed", "removed"] {
                    let rows = report.samples[change].as_array().cloned().unwrap_or_default();
                    if rows.is_empty() {
                        continue;
                    }
                    let op = report.operations[change].as_str().unwrap_or("not sent in this mode");
                    println!("  {change} ({op}):");
                    for r in rows {
                        println!("    {r}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Model { command: ModelCommand::Preview { name, limit, json } } => {
            let ws = load_workspace(&cli.workspace)?;
            let host = host_for(&ws)?;
            {
                let state = StateStore::open(&ws.state_dir)?;
                identity(&cli.workspace, cli.user.as_deref(), &ws, &state)?.require(backflow::governance::Role::Viewer, "preview models").map_err(anyhow::Error::msg)?;
            }
            let preview = backflow::preview::preview_model(&host, &ws, &name, limit).await.map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string(&preview)?);
            } else {
                print_preview(&preview);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { command: SyncCommand::Test { name, row, json, draft } } => {
            let working = load_workspace(&cli.workspace)?;
            let host = host_for(&working)?;
            let state = StateStore::open(&working.state_dir)?;
            let who = identity(&cli.workspace, cli.user.as_deref(), &working, &state)?;
            who.require(backflow::governance::Role::Contributor, "send test rows").map_err(anyhow::Error::msg)?;
            // A test row is a real delivery: a draft may only go to a staging destination.
            let ws = backflow::governance::workspace_for_run(&cli.workspace, &state, working, draft, &[name.clone()]).map_err(anyhow::Error::msg)?;
            drop(state);
            let report = pipeline::test_row(&host, &ws, &name, &row).await.map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("sent {} {} to {}: {}", report.operation, report.row, report.sync, report.outcome);
                if let Some(m) = &report.message {
                    println!("  {m}");
                }
            }
            Ok(if report.outcome == "accepted" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Sync { command: SyncCommand::Run { names, all, json, full_resync, draft } } => {
            let working = load_workspace(&cli.workspace)?;
            let host = host_for(&working)?;
            let state = StateStore::open(&working.state_dir)?;
            let who = identity(&cli.workspace, cli.user.as_deref(), &working, &state)?;
            who.require(backflow::governance::Role::Contributor, "run syncs").map_err(anyhow::Error::msg)?;
            let names: Vec<String> = if all { working.syncs.keys().cloned().collect() } else { names };
            let ws = backflow::governance::workspace_for_run(&cli.workspace, &state, working, draft, &names).map_err(anyhow::Error::msg)?;
            let options = pipeline::PlanOptions { full_resync };
            let run_options = RunOptions { user: who.user.clone(), ..RunOptions::default() };
            if names.len() == 1 {
                let record = pipeline::run_sync_with(&host, &ws, &state, &names[0], &run_options, options).await?;
                if json {
                    println!("{}", serde_json::to_string(&record)?);
                } else {
                    print_run(&record);
                }
                return Ok(exit_code(&record));
            }
            for name in &names {
                ws.sync(name).map_err(anyhow::Error::msg)?;
            }
            let (host, ws, state) = (std::sync::Arc::new(host), std::sync::Arc::new(ws), std::sync::Arc::new(state));
            let tasks: Vec<_> = names
                .iter()
                .map(|name| {
                    let (host, ws, state, name, run_options) = (host.clone(), ws.clone(), state.clone(), name.clone(), run_options.clone());
                    tokio::spawn(async move { pipeline::run_sync_with(&host, &ws, &state, &name, &run_options, options).await })
                })
                .collect();
            let mut records = Vec::new();
            let mut not_started = Vec::new();
            for (name, task) in names.iter().zip(tasks) {
                match task.await {
                    Ok(Ok(record)) => records.push(record),
                    Ok(Err(e)) => not_started.push((name.clone(), e.to_string())),
                    Err(e) => not_started.push((name.clone(), format!("the run's task failed: {e}"))),
                }
            }
            if json {
                let mut out: Vec<serde_json::Value> = records.iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
                out.extend(not_started.iter().map(|(name, e)| serde_json::json!({"sync": name, "status": "not_started", "error": e})));
                println!("{}", serde_json::to_string(&out)?);
            } else {
                println!("{:<24} {:<12} {:>9} {:>9} {:>9}  ERROR", "SYNC", "STATUS", "PLANNED", "DELIVERED", "FAILED");
                for r in &records {
                    println!(
                        "{:<24} {:<12} {:>9} {:>9} {:>9}  {}",
                        r.sync,
                        r.status.as_str(),
                        r.planned.total(),
                        r.delivered.total(),
                        r.failed.total(),
                        r.error.as_deref().unwrap_or("")
                    );
                }
                for (name, e) in &not_started {
                    println!("{name:<24} {:<12} {:>9} {:>9} {:>9}  {}", "not started", "-", "-", "-", e.replace('\n', "; "));
                }
            }
            let worst = |s: RunStatus| records.iter().any(|r| r.status == s);
            Ok(if !not_started.is_empty() || worst(RunStatus::Failed) {
                ExitCode::FAILURE
            } else if worst(RunStatus::Blocked) || worst(RunStatus::Rejected) {
                ExitCode::from(3)
            } else if worst(RunStatus::AwaitingApproval) {
                ExitCode::from(4)
            } else if worst(RunStatus::Partial) {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Runs { command: Some(RunsCommand::Approve { id, comment, json }), .. } => {
            let working = load_workspace(&cli.workspace)?;
            let host = host_for(&working)?;
            let state = StateStore::open(&working.state_dir)?;
            let who = identity(&cli.workspace, cli.user.as_deref(), &working, &state)?;
            let gate = backflow::governance::approve_run(&state, &who, &id, comment.as_deref()).map_err(anyhow::Error::msg)?;
            if gate.status != backflow::governance::GateStatus::Approved {
                println!("approval of run {id} recorded; it still needs more approvals");
                return Ok(ExitCode::SUCCESS);
            }
            // Deliver exactly the approved plan: the run plans again, and goes ahead only if the
            // plan is the same; otherwise it is held again.
            let ws = backflow::governance::workspace_for_run(&cli.workspace, &state, working, false, &[gate.sync.clone()]).map_err(anyhow::Error::msg)?;
            let run_options = RunOptions { user: gate.requested_by.clone(), trigger: format!("approved run {id}"), approved_run: Some(id.clone()) };
            let record = pipeline::run_sync_with(&host, &ws, &state, &gate.sync, &run_options, pipeline::PlanOptions { full_resync: gate.full_resync }).await?;
            if json {
                println!("{}", serde_json::to_string(&record)?);
            } else {
                print_run(&record);
            }
            Ok(exit_code(&record))
        }
        Command::Diff { json } => {
            let working_files = backflow::config::ConfigFiles::read(&cli.workspace).map_err(|e| anyhow::anyhow!("{e}"))?;
            let working = load_workspace(&cli.workspace)?;
            let host = host_for(&working)?;
            let state = StateStore::open(&working.state_dir)?;
            identity(&cli.workspace, cli.user.as_deref(), &working, &state)?.require(backflow::governance::Role::Viewer, "see the diff").map_err(anyhow::Error::msg)?;
            let diff = backflow::governance::diff(&host, &state, &working_files, &working).await.map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string(&diff)?);
            } else {
                governance_cli::print_diff(&diff);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Change { command } => {
            let working = load_workspace(&cli.workspace)?;
            let host = host_for(&working)?;
            let state = StateStore::open(&working.state_dir)?;
            let who = identity(&cli.workspace, cli.user.as_deref(), &working, &state)?;
            governance_cli::change(&cli.workspace, &host, &state, &who, command).await
        }
        Command::Audit { json, verify } => {
            let working = load_workspace(&cli.workspace)?;
            let state = StateStore::open(&working.state_dir)?;
            let who = identity(&cli.workspace, cli.user.as_deref(), &working, &state)?;
            who.require(backflow::governance::Role::Viewer, "read the audit log").map_err(anyhow::Error::msg)?;
            governance_cli::audit(&state, json, verify)
        }
        Command::Runs { sync, limit, json, command } => {
            let ws = load_workspace(&cli.workspace)?;
            let state = StateStore::open(&ws.state_dir)?;
            identity(&cli.workspace, cli.user.as_deref(), &ws, &state)?.require(backflow::governance::Role::Viewer, "read run history").map_err(anyhow::Error::msg)?;
            match command {
                Some(RunsCommand::Approve { .. }) => unreachable!("handled above"),
                Some(RunsCommand::Show { id, json }) => {
                    let Some(run) = state.run(&id)? else { bail!("no run with id {id}") };
                    if json {
                        println!("{}", serde_json::to_string_pretty(&run)?);
                    } else {
                        print_run(&run);
                        for r in &run.rejected {
                            println!("  rejected {} ({}): {}", r.key, r.change, r.error);
                        }
                    }
                }
                None => {
                    let runs = state.runs(sync.as_deref(), limit)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&runs)?);
                    } else {
                        println!("{:<28} {:<24} {:<10} {:>9} {:>9} STARTED", "RUN", "SYNC", "STATUS", "DELIVERED", "FAILED");
                        for r in runs {
                            println!("{:<28} {:<24} {:<10} {:>9} {:>9} {}", r.run_id, r.sync, r.status.as_str(), r.delivered.total(), r.failed.total(), r.started_at);
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn exit_code(record: &RunRecord) -> ExitCode {
    match record.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Partial => ExitCode::from(2),
        RunStatus::Blocked | RunStatus::Rejected => ExitCode::from(3),
        RunStatus::AwaitingApproval => ExitCode::from(4),
        RunStatus::Failed | RunStatus::Running | RunStatus::Interrupted => ExitCode::FAILURE,
    }
}

fn print_preview(p: &backflow::preview::ModelPreview) {
    println!("model {} (source {}, primary key {})", p.model, p.source, p.primary_key.join(", "));
    for c in &p.columns {
        let key = if p.primary_key.contains(&c.name) { "  (key)" } else { "" };
        println!("  {:<24} {}{key}", c.name, c.value_type);
    }
    if !p.missing_key_columns.is_empty() {
        println!("warning: the query does not return primary key column(s) {}; syncs of this model will refuse it", p.missing_key_columns.join(", "));
    }
    println!("{} row(s):", p.rows.len());
    for row in &p.rows {
        println!("  {}", serde_json::Value::Object(row.clone()));
    }
}

fn print_run(r: &RunRecord) {
    println!("run {} of {}: {} in {} ms", r.run_id, r.sync, r.status.as_str(), r.duration_ms);
    println!(
        "  model {} rows, snapshot {} rows; diff: added {}, changed {}, removed {}, unchanged {}{}",
        r.model_rows, r.snapshot_rows, r.diff.added, r.diff.changed, r.diff.removed, r.diff.unchanged,
        if r.full_resync { " (full resync)" } else { "" }
    );
    let line = |label: &str, c: &backflow::state::OpCounts| println!("  {label:<10} added {:>8}  changed {:>8}  removed {:>8}", c.added, c.changed, c.removed);
    line("planned", &r.planned);
    line("delivered", &r.delivered);
    line("failed", &r.failed);
    print_checks(&r.checks);
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    if !r.rejected.is_empty() {
        println!("  {} rejected rows (see `backflow runs show {}`)", r.failed.total(), r.run_id);
    }
}

fn print_checks(checks: &[backflow::state::CheckReport]) {
    for c in checks {
        let severity = match c.severity {
            backflow::config::Severity::Fail => "fail",
            backflow::config::Severity::Warn => "warn",
        };
        println!("  check {:<28} {:<5} (severity {severity}): {}", c.name, c.verdict, c.message);
        for sample in c.samples.iter().take(5) {
            println!("      {sample}");
        }
    }
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| format!("{pad}{l}")).collect::<Vec<_>>().join("\n")
}

const EXAMPLE_WORKSPACE: &str = include_str!("../../examples/quickstart/backflow.toml");
const EXAMPLE_CUSTOMERS: &str = include_str!("../../examples/quickstart/data/customers.csv");
/// First-party plugins `init` copies into a new workspace.
const FIRST_PARTY_PLUGINS: &[&str] = &["file_source.wasm", "webhook.wasm", "noop_destination.wasm", "checks.wasm"];

fn init(dir: &Path, plugins: Option<PathBuf>, force: bool) -> anyhow::Result<ExitCode> {
    let plugins_from = match plugins {
        Some(p) => p,
        None => {
            let exe = std::env::current_exe().context("locating the backflow binary")?;
            exe.parent().and_then(|d| d.parent()).map(|d| d.join("plugins")).context("locating the default plugins directory")?
        }
    };
    for name in FIRST_PARTY_PLUGINS {
        if !plugins_from.join(name).is_file() {
            bail!(
                "plugin {name} not found in {} (build the plugins with scripts/build-plugins, or pass --plugins DIR)",
                plugins_from.display()
            );
        }
    }
    let main_file = dir.join("backflow.toml");
    if main_file.exists() && !force {
        bail!("{} already exists (use --force to overwrite)", main_file.display());
    }
    std::fs::create_dir_all(dir.join("data"))?;
    std::fs::create_dir_all(dir.join("plugins"))?;
    std::fs::write(&main_file, EXAMPLE_WORKSPACE)?;
    std::fs::write(dir.join("data/customers.csv"), EXAMPLE_CUSTOMERS)?;
    std::fs::write(dir.join(".gitignore"), ".backflow/\n")?;
    for name in FIRST_PARTY_PLUGINS {
        std::fs::copy(plugins_from.join(name), dir.join("plugins").join(name)).with_context(|| format!("copying {name}"))?;
    }
    println!("created a workspace in {}", dir.display());
    println!("next:");
    println!("  backflow receiver --port 8085 &            # a local endpoint to sync into");
    println!("  CRM_TOKEN=demo backflow --workspace {} sync run customers_to_crm", dir.display());
    Ok(ExitCode::SUCCESS)
}
