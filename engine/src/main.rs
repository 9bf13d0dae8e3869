//! The `backflow` command line.

use anyhow::{bail, Context as _};
use backflow::app::{App, AppError, RunApproval, RunRequest, RunResult};
use backflow::authz::Actor;
use backflow::domain::RunStatus;
use backflow::host::PluginHost;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod cli;
mod governance_cli;

/// See the `mimalloc` entry in Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "backflow",
    version,
    about = "Reverse-ETL sync engine with sandboxed WebAssembly plugins"
)]
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
    /// Look at rows: what backflow delivered of one row, run by run.
    Rows {
        #[command(subcommand)]
        command: RowsCommand,
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
        /// Parse every body but keep and print only counts (for benchmarks).
        #[arg(long)]
        discard: bool,
    },
    /// Run the workspace as a service: schedules, sequences, the HTTP API, plugin hot reload.
    Serve {
        /// Address for the HTTP API (port 0 picks a free port; the first stdout line says which).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for runs to finish their in-flight batches.
        #[arg(long, default_value_t = 30)]
        shutdown_grace_s: u64,
    },
    /// API tokens for `backflow serve` (each acts as one user).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once: only its hash is kept).
    Create {
        /// Who the token acts as (default: you; someone else needs an admin).
        #[arg(long = "for")]
        for_user: Option<String>,
        /// What the token is for.
        #[arg(long, default_value = "api")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Your tokens (an admin sees everyone's).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id: requests with it are refused from now on.
    Revoke { id: String },
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
    /// Create a plugin project from a template: buildable with one command, with a README
    /// and a test that runs it through `backflow plugin conformance`.
    New {
        /// The plugin's name (lowercase letters, digits and '-'); also the directory created.
        name: String,
        #[arg(long, value_enum)]
        lang: backflow::scaffold::Lang,
        #[arg(long, value_enum)]
        kind: backflow::scaffold::Kind,
        /// The directory to create the project in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Rust only: the backflow-plugin-sdk crate to depend on (default: this checkout's
        /// plugin-sdk directory, when backflow was built from one).
        #[arg(long, env = "BACKFLOW_SDK")]
        sdk: Option<PathBuf>,
    },
    /// Check that a plugin file keeps the contract: spec, config errors naming fields,
    /// errors as values rather than traps, batches of 0, 1 and many rows with every value
    /// type, and (destinations) retryable failures. Exit code 0 when every check passes.
    Conformance {
        file: PathBuf,
        /// A working config: JSON text, or @FILE to read it from a file.
        #[arg(long, default_value = "{}")]
        config: String,
        /// Sources: the query to read.
        #[arg(long, default_value = "")]
        query: String,
        /// Destinations: a config whose remote cannot be reached (JSON or @FILE); the write
        /// must then fail as retryable.
        #[arg(long)]
        offline_config: Option<String>,
        /// Grant host:port to the plugin (repeatable), as `grants.network` does.
        #[arg(long = "grant-network")]
        grant_network: Vec<String>,
        /// Grant an environment variable (repeatable), as `grants.env` does.
        #[arg(long = "grant-env")]
        grant_env: Vec<String>,
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
    /// Put the destination back as it was before a run: plans the inverse of the run (its
    /// inserts deleted, its updates set back, its deletes inserted again) and shows it; with
    /// --yes, runs it like any run (checks, approvals, delivery, history).
    Undo {
        id: String,
        /// Run the undo (without it, only show what it would send).
        #[arg(long)]
        yes: bool,
        /// Also set back rows a later run changed (they are left alone by default).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RowsCommand {
    /// Every retained run that touched one row: when, the operation, the values sent, the
    /// values before and the destination's answer; and what the destination has now.
    History {
        sync: String,
        /// The row's primary key as `sync plan` prints it (`42`, or `42|eu` for several columns).
        key: String,
        /// The history of the sync's draft runs.
        #[arg(long)]
        draft: bool,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if terminal {
        backflow::sync::progress::enable_bars();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "backflow=info,warn".into()),
        )
        .with_writer(backflow::sync::progress::LogWriter)
        .with_target(false)
        .with_ansi(terminal)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.command.wants_json();
    if cli.command.only_reads() {
        // A command that only reads, whose reader went away (`backflow runs | head`), ends
        // quietly as other command-line tools do instead of panicking in `println!`. Only
        // those: a command that changes state (a run between an acknowledged batch and its
        // commit) must never die of a closed pipe; Rust's default (SIGPIPE ignored) keeps
        // a write error there, and servers keep it for their sockets.
        // SAFETY: restores the default action of one signal; no handler is installed.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if json {
                // With --json, every failure is one JSON object on stdout.
                let kind = e
                    .downcast_ref::<AppError>()
                    .map(error_kind)
                    .unwrap_or("failed");
                println!(
                    "{}",
                    serde_json::json!({"error": format!("{e:#}"), "kind": kind})
                );
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The kind of an application error, as `--json` reports it.
fn error_kind(e: &AppError) -> &'static str {
    match e {
        AppError::Unauthenticated(_) => "unauthenticated",
        AppError::Denied(_) => "denied",
        AppError::NotFound(_) => "not_found",
        AppError::Invalid(_) => "invalid",
        AppError::Refused(_) => "refused",
        AppError::Failed(_) => "failed",
    }
}

impl Command {
    /// Whether the command changes nothing (no state, no files, nothing sent).
    fn only_reads(&self) -> bool {
        matches!(
            self,
            Command::Plugin {
                command: PluginCommand::List { .. }
                    | PluginCommand::Inspect { .. }
                    | PluginCommand::Conformance { .. }
            } | Command::Sync {
                command: SyncCommand::List { .. } | SyncCommand::Plan { .. }
            } | Command::Diff { .. }
                | Command::Audit { .. }
                | Command::Model { .. }
                | Command::Rows { .. }
        )
    }

    /// Whether the command was asked for JSON output.
    fn wants_json(&self) -> bool {
        match self {
            Command::Init { .. } | Command::Receiver { .. } | Command::Serve { .. } => false,
            Command::Token {
                command: TokenCommand::Create { json, .. } | TokenCommand::List { json },
            } => *json,
            Command::Token {
                command: TokenCommand::Revoke { .. },
            } => false,
            Command::Plugin {
                command:
                    PluginCommand::List { json }
                    | PluginCommand::Inspect { json, .. }
                    | PluginCommand::Conformance { json, .. },
            } => *json,
            Command::Plugin {
                command: PluginCommand::New { .. },
            } => false,
            Command::Sync { command } => match command {
                SyncCommand::List { json }
                | SyncCommand::Run { json, .. }
                | SyncCommand::Plan { json, .. }
                | SyncCommand::Test { json, .. } => *json,
            },
            Command::Diff { json } | Command::Audit { json, .. } => *json,
            Command::Change { command } => match command {
                ChangeCommand::Submit { json, .. }
                | ChangeCommand::List { json }
                | ChangeCommand::Show { json, .. } => *json,
                ChangeCommand::Approve { .. }
                | ChangeCommand::Reject { .. }
                | ChangeCommand::Publish { .. } => false,
            },
            Command::Model {
                command: ModelCommand::Preview { json, .. },
            } => *json,
            Command::Runs { json, command, .. } => match command {
                Some(
                    RunsCommand::Approve { json, .. }
                    | RunsCommand::Show { json, .. }
                    | RunsCommand::Undo { json, .. },
                ) => *json,
                None => *json,
            },
            Command::Rows {
                command: RowsCommand::History { json, .. },
            } => *json,
        }
    }
}

/// Opens the workspace and resolves who is acting: every command below goes through the
/// application layer with this actor.
fn open_app(cli_workspace: &Path, user: Option<&str>) -> anyhow::Result<(App, Actor)> {
    let app = App::open(cli_workspace)?;
    let actor = app.actor(user)?;
    Ok((app, actor))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let user = cli.user.as_deref();
    match cli.command {
        Command::Init {
            dir,
            plugins,
            force,
        } => init(&dir, plugins, force),
        Command::Receiver {
            port,
            host,
            out,
            latency_ms,
            error_rate,
            rate_limit,
            reject,
            hmac_secret,
            down_for_ms,
            discard,
        } => {
            let addr: std::net::SocketAddr = format!("{host}:{port}")
                .parse()
                .with_context(|| format!("bad address {host}:{port}"))?;
            let reject = match reject {
                Some(r) => Some(
                    r.split_once('=')
                        .map(|(f, v)| (f.to_string(), v.to_string()))
                        .context("--reject takes FIELD=VALUE")?,
                ),
                None => None,
            };
            if !(0.0..=1.0).contains(&error_rate) {
                bail!("--error-rate must be between 0 and 1");
            }
            let options = backflow::receiver::ReceiverOptions {
                out,
                print: !discard,
                latency_ms,
                error_rate,
                rate_limit,
                reject,
                hmac_secret,
                down_for_ms,
                echo_headers_status: None,
                status_for_method: None,
                fail_requests: None,
                discard,
            };
            let receiver = backflow::receiver::start(addr, options).await?;
            eprintln!("receiving on http://{} (Ctrl-C to stop)", receiver.addr);
            tokio::signal::ctrl_c().await?;
            eprintln!(
                "received {} requests, {} rows",
                receiver.received().len(),
                receiver.rows()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            listen,
            shutdown_grace_s,
        } => {
            let options = backflow::serve::ServeOptions {
                listen,
                shutdown_grace: std::time::Duration::from_secs(shutdown_grace_s),
                tick: std::time::Duration::from_millis(250),
            };
            backflow::serve::serve(&cli.workspace, options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { command } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            match command {
                TokenCommand::Create {
                    for_user,
                    name,
                    json,
                } => {
                    let new = app.create_token(&actor, for_user.as_deref(), &name)?;
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"token": new.secret_text, "id": new.record.id, "user": new.record.user, "name": new.record.name})
                        );
                    } else {
                        eprintln!(
                            "token {} for {} ({}); it is shown once, keep it secret:",
                            new.record.id, new.record.user, new.record.name
                        );
                        println!("{}", new.secret_text);
                    }
                }
                TokenCommand::List { json } => {
                    let tokens = app.list_tokens(&actor)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&tokens)?);
                    } else {
                        println!(
                            "{:<28} {:<16} {:<16} {:<22} STATUS",
                            "ID", "USER", "NAME", "CREATED"
                        );
                        for t in tokens {
                            let status = match (&t.revoked_at, &t.revoked_by) {
                                (Some(at), by) => {
                                    format!("revoked {at} by {}", by.as_deref().unwrap_or("?"))
                                }
                                _ => "active".into(),
                            };
                            println!(
                                "{:<28} {:<16} {:<16} {:<22} {status}",
                                t.id, t.user, t.name, t.created_at
                            );
                        }
                    }
                }
                TokenCommand::Revoke { id } => {
                    let t = app.revoke_token(&actor, &id)?;
                    println!("revoked token {} of {}", t.id, t.user);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin {
            command: PluginCommand::Inspect { file, json },
        } => {
            // Compiled code is cached (a large component takes 10-30 s to compile): in the
            // workspace's state directory when there is a workspace, else the user's cache.
            let host = PluginHost::new(compile_cache_dir(&cli.workspace))?;
            let plugin = host.load(&file).await?;
            cli::print_plugin(&plugin, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin {
            command:
                PluginCommand::New {
                    name,
                    lang,
                    kind,
                    dir,
                    sdk,
                },
        } => {
            let sdk = sdk.or_else(backflow::scaffold::default_sdk_path);
            let root = backflow::scaffold::create(lang, kind, &name, &dir, sdk.as_deref())?;
            println!("created {}", root.display());
            let steps = match lang {
                backflow::scaffold::Lang::Rust => {
                    "./test.sh (it builds, then runs the conformance suite)"
                }
                backflow::scaffold::Lang::Js => "npm install && npm run build, then npm test",
                backflow::scaffold::Lang::Python => "./build.sh, then ./test.sh",
            };
            println!(
                "next: cd {} && {steps}; its README.md says more",
                root.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin {
            command:
                PluginCommand::Conformance {
                    file,
                    config,
                    query,
                    offline_config,
                    grant_network,
                    grant_env,
                    json,
                },
        } => {
            let read = |text: &str, what: &str| -> anyhow::Result<String> {
                let text = match text.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path)
                        .with_context(|| format!("--{what}: reading {path}"))?,
                    None => text.to_string(),
                };
                serde_json::from_str::<serde_json::Value>(&text)
                    .with_context(|| format!("--{what}: not JSON"))?;
                Ok(text)
            };
            let options = backflow::conformance::Options {
                config: read(&config, "config")?,
                query,
                offline_config: offline_config
                    .as_deref()
                    .map(|c| read(c, "offline-config"))
                    .transpose()?,
                grants: backflow::domain::Grants {
                    files: vec![],
                    network: grant_network,
                    env: grant_env,
                },
                limits: backflow::domain::Limits::default(),
            };
            let host = PluginHost::new(compile_cache_dir(&cli.workspace))?;
            let report = backflow::conformance::run(&host, &file, &options).await;
            cli::print_conformance(&report, json)?;
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Plugin {
            command: PluginCommand::List { json },
        } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            let scan = app.list_plugins(&actor).await?;
            cli::print_plugin_list(&scan, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync {
            command: SyncCommand::List { json },
        } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            let syncs = app.list_syncs(&actor)?;
            cli::print_sync_list(&syncs, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync {
            command:
                SyncCommand::Plan {
                    name,
                    json,
                    samples,
                    full_resync,
                    draft,
                },
        } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            let report = app.plan(&actor, &name, full_resync, draft, samples).await?;
            cli::print_plan(&report, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Model {
            command: ModelCommand::Preview { name, limit, json },
        } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            let preview = app.preview_model(&actor, &name, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&preview)?);
            } else {
                cli::print_preview(&preview);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync {
            command:
                SyncCommand::Test {
                    name,
                    row,
                    json,
                    draft,
                },
        } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            let report = app.test_row(&actor, &name, &row, draft).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "sent {} {} to {}: {}",
                    report.operation, report.row, report.sync, report.outcome
                );
                if let Some(m) = &report.message {
                    println!("  {m}");
                }
            }
            Ok(if report.outcome == "accepted" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Sync {
            command:
                SyncCommand::Run {
                    names,
                    all,
                    json,
                    full_resync,
                    draft,
                },
        } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            let names: Vec<String> = if all { app.working_sync_names() } else { names };
            let request = RunRequest {
                full_resync,
                draft,
                trigger: String::new(),
                stop: None,
            };
            let mut results = app.run(&actor, &names, &request).await?;
            if results.len() == 1 {
                let record = match results.pop() {
                    Some(RunResult::Ran(record)) => record,
                    Some(RunResult::NotStarted { error, .. }) => bail!("{error}"),
                    None => bail!("no sync ran"),
                };
                if json {
                    println!("{}", serde_json::to_string(&record)?);
                } else {
                    cli::print_run(&record);
                }
                return Ok(exit_code(&[record.status], false));
            }
            cli::print_run_summary(&results, json)?;
            let statuses: Vec<RunStatus> = results
                .iter()
                .filter_map(|r| {
                    if let RunResult::Ran(r) = r {
                        Some(r.status)
                    } else {
                        None
                    }
                })
                .collect();
            Ok(exit_code(
                &statuses,
                results
                    .iter()
                    .any(|r| matches!(r, RunResult::NotStarted { .. })),
            ))
        }
        Command::Runs {
            command: Some(RunsCommand::Approve { id, comment, json }),
            ..
        } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            match app.approve_run(&actor, &id, comment.as_deref()).await? {
                RunApproval::NeedsMore(_) => {
                    println!("approval of run {id} recorded; it still needs more approvals");
                    Ok(ExitCode::SUCCESS)
                }
                RunApproval::Released(record) => {
                    if json {
                        println!("{}", serde_json::to_string(&record)?);
                    } else {
                        cli::print_run(&record);
                    }
                    Ok(exit_code(&[record.status], false))
                }
            }
        }
        Command::Diff { json } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            let diff = app.diff(&actor).await?;
            if json {
                println!("{}", serde_json::to_string(&diff)?);
            } else {
                governance_cli::print_diff(&diff);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Change { command } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            governance_cli::change(&app, &actor, command).await
        }
        Command::Audit { json, verify } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            governance_cli::audit(&app.audit(&actor)?, json, verify)
        }
        Command::Rows {
            command:
                RowsCommand::History {
                    sync,
                    key,
                    draft,
                    json,
                },
        } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            cli::print_row_history(&app.row_history(&actor, &sync, &key, draft)?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs {
            sync,
            limit,
            json,
            command,
        } => {
            let (app, actor) = open_app(&cli.workspace, user)?;
            match command {
                Some(RunsCommand::Approve { .. }) => {
                    bail!("internal error: runs approve is handled above")
                }
                Some(RunsCommand::Undo {
                    id,
                    yes,
                    force,
                    json,
                }) => {
                    if !yes {
                        let report = app.plan_undo(&actor, &id, force).await?;
                        cli::print_undo_report(&report, json)?;
                        return Ok(ExitCode::SUCCESS);
                    }
                    let record = app.undo_run(&actor, &id, force).await?;
                    if json {
                        println!("{}", serde_json::to_string(&record)?);
                    } else {
                        cli::print_run(&record);
                    }
                    return Ok(exit_code(&[record.status], false));
                }
                Some(RunsCommand::Show { id, json }) => {
                    let run = app.run_record(&actor, &id)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&run)?);
                    } else {
                        cli::print_run(&run);
                        for r in &run.rejected {
                            println!(
                                "  rejected {} ({}): {}",
                                cli::shown(&r.key),
                                r.change,
                                cli::shown(&r.error)
                            );
                        }
                    }
                }
                None => {
                    let runs = app.runs(&actor, sync.as_deref(), limit)?;
                    cli::print_runs(&runs, json)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where `plugin inspect` caches compiled plugins: the workspace's, or
/// `$XDG_CACHE_HOME/backflow` (`~/.cache/backflow`), or nowhere if neither can be found.
fn compile_cache_dir(workspace: &Path) -> Option<PathBuf> {
    if let Ok(ws) = backflow::workspace::Workspace::load(workspace) {
        return Some(ws.state_dir.join("cache"));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("backflow").join("compiled"))
}

/// The exit code for runs: 1 if any failed or did not start, 3 if one was blocked or
/// rejected, 4 if one awaits approval, 2 if one was partial, 0 otherwise.
fn exit_code(statuses: &[RunStatus], not_started: bool) -> ExitCode {
    let any = |s: RunStatus| statuses.contains(&s);
    if not_started
        || any(RunStatus::Failed)
        || any(RunStatus::Running)
        || any(RunStatus::Interrupted)
    {
        ExitCode::FAILURE
    } else if any(RunStatus::Blocked) || any(RunStatus::Rejected) {
        ExitCode::from(3)
    } else if any(RunStatus::AwaitingApproval) {
        ExitCode::from(4)
    } else if any(RunStatus::Partial) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

const EXAMPLE_WORKSPACE: &str = include_str!("../../examples/quickstart/backflow.toml");
const EXAMPLE_CUSTOMERS: &str = include_str!("../../examples/quickstart/data/customers.csv");
/// First-party plugins `init` copies into a new workspace.
const FIRST_PARTY_PLUGINS: &[&str] = &[
    "file_source.wasm",
    "webhook.wasm",
    "noop_destination.wasm",
    "checks.wasm",
];

fn init(dir: &Path, plugins: Option<PathBuf>, force: bool) -> anyhow::Result<ExitCode> {
    let plugins_from = match plugins {
        Some(p) => p,
        None => {
            let exe = std::env::current_exe().context("locating the backflow binary")?;
            exe.parent()
                .and_then(|d| d.parent())
                .map(|d| d.join("plugins"))
                .context("locating the default plugins directory")?
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
        bail!(
            "{} already exists (use --force to overwrite)",
            main_file.display()
        );
    }
    std::fs::create_dir_all(dir.join("data"))?;
    std::fs::create_dir_all(dir.join("plugins"))?;
    std::fs::write(&main_file, EXAMPLE_WORKSPACE)?;
    std::fs::write(dir.join("data/customers.csv"), EXAMPLE_CUSTOMERS)?;
    std::fs::write(dir.join(".gitignore"), ".backflow/\n")?;
    for name in FIRST_PARTY_PLUGINS {
        std::fs::copy(plugins_from.join(name), dir.join("plugins").join(name))
            .with_context(|| format!("copying {name}"))?;
    }
    println!("created a workspace in {}", dir.display());
    println!("next:");
    println!("  backflow receiver --port 8085 &            # a local endpoint to sync into");
    println!(
        "  CRM_TOKEN=demo backflow --workspace {} sync run customers_to_crm",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
