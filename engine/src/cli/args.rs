//! The command line's arguments: the clap definitions of every command and flag, and what
//! `main` needs to know about a command before running it (whether it only reads, whether
//! it answers in JSON).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "backflow",
    version,
    about = "Reverse-ETL sync engine with sandboxed WebAssembly plugins"
)]
pub(crate) struct Cli {
    /// The workspace directory (holding backflow.toml).
    #[arg(long, global = true, env = "BACKFLOW_WORKSPACE", default_value = ".")]
    pub(crate) workspace: PathBuf,
    /// Act as this user, one of the workspace's `[users]` (or set BACKFLOW_USER).
    #[arg(long = "as", global = true, env = "BACKFLOW_USER")]
    pub(crate) user: Option<String>,
    /// Log lines as `text` or `json` (one JSON object per line, with the span fields).
    #[arg(long, global = true, env = "BACKFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How log lines are written (stderr).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: time, level, message, fields, and the spans.
    Json,
}

/// How `backflow serve` is exposed: TLS, a separate metrics address, and the limits that keep
/// one client from holding the service.
#[derive(Args)]
pub(crate) struct ServeExposureArgs {
    /// Serve HTTPS with this PEM certificate (chain); needs --tls-key. SIGHUP re-reads both.
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Serve /metrics and /healthz on this address (plain HTTP) instead of --listen.
    #[arg(long)]
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    /// Connections open at once per address; past it, new ones wait to be accepted.
    #[arg(long, default_value_t = 256)]
    pub(crate) max_connections: usize,
    /// Seconds a client has to send a request's headers (and finish a TLS handshake); also
    /// how long a keep-alive connection may stay idle.
    #[arg(long, default_value_t = 10)]
    pub(crate) header_read_timeout_s: u64,
    /// Seconds reading a request's body may take.
    #[arg(long, default_value_t = 30)]
    pub(crate) body_timeout_s: u64,
    /// State-changing API requests (triggers, approvals, reviews, undo) per minute and token;
    /// past it, 429 with Retry-After. 0: no limit.
    #[arg(long, default_value_t = 120)]
    pub(crate) write_requests_per_minute: u32,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create a working example workspace in DIR.
    Init {
        /// The directory to write the workspace into (created if missing).
        dir: PathBuf,
        /// Where to copy first-party plugins from (default: the `plugins` directory next to
        /// the backflow binary's directory, e.g. target/plugins, or $BACKFLOW_PLUGINS).
        #[arg(long, env = "BACKFLOW_PLUGINS")]
        plugins: Option<PathBuf>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Plugins: list and inspect them, create one from a template, check one against the
    /// contract.
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
        /// Print the diff and the dry-run counts as JSON.
        #[arg(long)]
        json: bool,
        /// `markdown`: one Markdown comment for a pull request (plugin builds, dry-run counts
        /// and samples, check verdicts, the diff).
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
    },
    /// Change requests: submit the working copy, review, publish.
    Change {
        #[command(subcommand)]
        command: ChangeCommand,
    },
    /// The audit log: every submit, decision, publish, run start and run approval.
    Audit {
        /// Print the log's records as JSON.
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
    /// Run history, newest first; its subcommands show, approve or undo one run.
    Runs {
        /// Only runs of this sync.
        #[arg(long)]
        sync: Option<String>,
        /// Show at most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the runs as JSON.
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
    Receiver(ReceiverArgs),
    /// Run the workspace as a service: schedules, sequences, the HTTP API, plugin hot reload.
    Serve {
        /// Address for the HTTP API (port 0 picks a free port; the first stdout line says which).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for runs to finish their in-flight batches.
        #[arg(long, default_value_t = 30)]
        shutdown_grace_s: u64,
        #[command(flatten)]
        exposure: ServeExposureArgs,
    },
    /// API tokens for `backflow serve` (each acts as one user).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The state as a whole: back it up while the service runs.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum StateCommand {
    /// Write a consistent copy of the state to FILE (a new file), even while `backflow
    /// serve` or runs use it. To restore: stop the service, put the copy in place of
    /// STATE_DIR/state.redb, start it.
    Backup {
        /// The file to write (must not exist).
        file: PathBuf,
        /// Print what was copied as JSON.
        #[arg(long)]
        json: bool,
    },
}

// No `///` on the struct: the `Receiver` variant's doc comment is the command's help text.
#[derive(Args)]
pub(crate) struct ReceiverArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 8085)]
    pub(crate) port: u16,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Append every request as a JSON line to FILE.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Wait this many milliseconds before answering each request.
    #[arg(long, default_value_t = 0)]
    pub(crate) latency_ms: u64,
    /// Answer this fraction of requests (0..1) with 500.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) error_rate: f64,
    /// Answer 429 with Retry-After above this many requests per second.
    #[arg(long)]
    pub(crate) rate_limit: Option<u32>,
    /// Answer 422 to requests with a row whose FIELD equals VALUE (FIELD=VALUE).
    #[arg(long)]
    pub(crate) reject: Option<String>,
    /// Verify X-Backflow-Signature with this HMAC-SHA256 secret; 401 when wrong.
    #[arg(long, env = "BACKFLOW_RECEIVER_HMAC_SECRET")]
    pub(crate) hmac_secret: Option<String>,
    /// Answer 503 to everything for this many milliseconds after starting.
    #[arg(long, default_value_t = 0)]
    pub(crate) down_for_ms: u64,
    /// Parse every body but keep and print only counts (for benchmarks).
    #[arg(long)]
    pub(crate) discard: bool,
    /// Keep records keyed by this field: accepted rows merge into them field by field,
    /// deletes remove them; read and edit them under /_records.
    #[arg(long, value_name = "KEY")]
    pub(crate) records: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token and print it (once: only its hash is kept).
    Create {
        /// Who the token acts as (default: you; someone else needs an admin).
        #[arg(long = "for")]
        for_user: Option<String>,
        /// What the token is for.
        #[arg(long, default_value = "api")]
        name: String,
        /// How long the token authenticates: a number and a unit, s, m, h, d or w.
        #[arg(long, default_value = "90d")]
        expires_in: String,
        /// Print the token with its id, user and name as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Your tokens (an admin sees everyone's).
    List {
        /// Print the tokens as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id: requests with it are refused from now on.
    Revoke {
        /// The token's id (as `token list` prints it).
        id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum PluginCommand {
    /// List the plugins in the workspace's plugins directory.
    List {
        /// Print the plugins (and the files that failed to load) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a plugin's kind, spec, config schema and contract version.
    Inspect {
        /// The plugin file (.wasm).
        file: PathBuf,
        /// Print the plugin's description as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a plugin project from a template: buildable with one command, with a README
    /// and a test that runs it through `backflow plugin conformance`.
    New {
        /// The plugin's name (lowercase letters, digits and '-'); also the directory created.
        name: String,
        /// The language of the project.
        #[arg(long, value_enum)]
        lang: backflow::toolkit::scaffold::Lang,
        /// The kind of plugin: the contract world it implements.
        #[arg(long, value_enum)]
        kind: backflow::toolkit::scaffold::Kind,
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
        /// The plugin file (.wasm) to check.
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
        grant_network: Vec<backflow::domain::NetworkGrant>,
        /// Grant an environment variable (repeatable), as `grants.env` does.
        #[arg(long = "grant-env")]
        grant_env: Vec<String>,
        /// Destinations and checks: your own sample rows (FILE.csv with a header, or
        /// FILE.jsonl), the first column the primary key, instead of the built-in sample.
        #[arg(long)]
        rows: Option<PathBuf>,
        /// Destinations: a config (JSON or @FILE) pointing at the suite's fault-injecting
        /// endpoint, written `${faults.url}` (429, 5xx storms, slow answers, a lost
        /// acknowledgement; retries must keep the idempotency key).
        #[arg(long)]
        fault_config: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum ChangeCommand {
    /// Record the working copy as a change request; the approval policies decide what it needs.
    Submit {
        /// The change request's message: what it changes.
        #[arg(long, short, default_value = "")]
        message: String,
        /// Print the recorded change request as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the change requests, newest first (the last 100): id, status, author, message.
    List {
        /// Print the change requests as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a change request: policy answers, the approvals it still needs, reviews, and its
    /// diff with dry-run counts per affected sync.
    Show {
        /// The change request's number (as `change list` prints it).
        id: u64,
        /// Print the change request as JSON.
        #[arg(long)]
        json: bool,
        /// `markdown`: one Markdown comment for the pull request carrying the change (plugin
        /// builds, dry-run counts and samples, check verdicts, policy decisions, the
        /// requirements still open, the diff).
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
    },
    /// Exit 0 only if the working copy (files and plugin builds) is exactly an approved change
    /// request (or with --published the published configuration); otherwise say which files
    /// differ and exit 1. For CI: fail a pull request whose configuration was never approved.
    Verify {
        /// Compare with the published configuration only.
        #[arg(long)]
        published: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a change request (nobody approves their own change unless a policy allows it).
    Approve {
        /// The change request's number (as `change list` prints it).
        id: u64,
        /// A comment recorded with the approval.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a change request, saying why.
    Reject {
        /// The change request's number (as `change list` prints it).
        id: u64,
        /// Why it is rejected (required; recorded with the review).
        #[arg(long)]
        comment: String,
    },
    /// Make an approved change the published configuration (the working copy must still be
    /// exactly what was reviewed).
    Publish {
        /// The change request's number (as `change list` prints it).
        id: u64,
    },
}

/// How a report is rendered (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReportFormat {
    /// Text for a terminal (the default).
    Text,
    /// JSON (as `--json`).
    Json,
    /// One Markdown comment, for a pull request.
    Markdown,
}

#[derive(Subcommand)]
pub(crate) enum ModelCommand {
    /// The schema and first rows of a model, read through its source (nothing is recorded).
    Preview {
        /// The model's name (as in backflow.toml).
        name: String,
        /// How many rows to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print the schema and rows as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum SyncCommand {
    /// List the workspace's syncs.
    List {
        /// Print the syncs as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run syncs now: plan, then deliver what changed since the last run. Several names (or
    /// --all) run in parallel, each on its own; one failing or slow destination does not
    /// hold up the others.
    Run {
        /// The syncs to run (or --all).
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
        /// The sync to plan.
        name: String,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Sample rows per change.
        #[arg(long, default_value_t = 5)]
        samples: usize,
        /// Plan re-sending every model row, not only what changed.
        #[arg(long)]
        full_resync: bool,
        /// Plan the working copy instead of the published configuration.
        #[arg(long)]
        draft: bool,
    },
    /// Send one model row (by primary key) to the destination as an added row and show its
    /// answer. The snapshot and run history are left untouched.
    Test {
        /// The sync to test.
        name: String,
        /// The primary key value (`a|b` for composite keys); the model's first row in key
        /// order without it.
        #[arg(long)]
        row: Option<String>,
        /// Print the row sent and the destination's answer as JSON.
        #[arg(long)]
        json: bool,
        /// Use the working copy instead of the published configuration.
        #[arg(long)]
        draft: bool,
    },
    /// Compare what the destination holds with what backflow sent: rows missing, fields that
    /// differ, deleted rows still there. Reads the destination (its plugin must be able to
    /// read back); changes nothing.
    Drift {
        /// The sync to check.
        name: String,
        /// Check about N delivered rows spread over all keys instead of all of them.
        #[arg(long, value_name = "N")]
        sample: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore what drifted: re-send missing rows, re-apply differing fields, delete again
    /// what the destination still holds; a run through checks, approvals and the audit.
    Reconcile {
        /// The sync to reconcile.
        name: String,
        /// Print the run record as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum RunsCommand {
    /// Approve a run held by an approval policy; once approved, exactly the reviewed plan is
    /// delivered (if the data moved meanwhile, it plans again and asks again).
    Approve {
        /// The held run's id (as `runs` prints it).
        id: String,
        /// A comment recorded with the approval.
        #[arg(long)]
        comment: Option<String>,
        /// Print the delivered run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reject a run held for approval (approvers): nothing is sent, and it is recorded as
    /// `rejected`, with the comment, in its history and the audit log.
    Reject {
        /// The held run's id (as `runs` prints it).
        id: String,
        /// Why, recorded with the rejection.
        #[arg(long)]
        comment: Option<String>,
        /// Print the rejected run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run held for approval (whoever started it, or an admin): nothing is sent, and
    /// it is recorded as `cancelled`.
    Cancel {
        /// The held run's id (as `runs` prints it).
        id: String,
        /// Print the cancelled run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one run, with its rejected rows.
    Show {
        /// The run's id (as `runs` prints it).
        id: String,
        /// Print the run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The delivery debugger: the HTTP requests a run's destination made that the run kept
    /// (`[debug] capture`), with status and timing; `runs request RUN N` shows one in full.
    Requests {
        /// The run's id (as `runs` prints it).
        id: String,
        /// Only requests that failed (no answer, or a status of 400 or above).
        #[arg(long)]
        failed: bool,
        /// Print the requests as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One kept request of a run in full: headers (secrets redacted), bodies (cut at
    /// `[debug] max_body_bytes`), the answer and the rows of its batch.
    Request {
        /// The run's id (as `runs` prints it).
        id: String,
        /// The request's number (as `runs requests` prints it).
        number: u64,
        /// Print the request as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put the destination back as it was before a run: plans the inverse of the run (its
    /// inserts deleted, its updates set back, its deletes inserted again) and shows it; with
    /// --yes, runs it like any run (checks, approvals, delivery, history).
    Undo {
        /// The id of the run to undo (as `runs` prints it).
        id: String,
        /// Run the undo (without it, only show what it would send).
        #[arg(long)]
        yes: bool,
        /// Also set back rows a later run changed (they are left alone by default).
        #[arg(long)]
        force: bool,
        /// Print the inverse plan (with --yes, the undo's run) as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum RowsCommand {
    /// Every retained run that touched one row: when, the operation, the values sent, the
    /// values before and the destination's answer; and what the destination has now.
    History {
        /// The sync that delivered the row.
        sync: String,
        /// The row's primary key as `sync plan` prints it (`42`, or `42|eu` for several columns).
        key: String,
        /// The history of the sync's draft runs.
        #[arg(long)]
        draft: bool,
        /// Print the history as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// Whether the command changes nothing (no state, no files, nothing sent).
    pub(crate) fn only_reads(&self) -> bool {
        matches!(
            self,
            Command::Plugin {
                command: PluginCommand::List { .. }
                    | PluginCommand::Inspect { .. }
                    | PluginCommand::Conformance { .. }
            } | Command::Sync {
                command: SyncCommand::List { .. }
                    | SyncCommand::Plan { .. }
                    | SyncCommand::Drift { .. }
            } | Command::Diff { .. }
                | Command::Audit { .. }
                | Command::Model { .. }
                | Command::Rows { .. }
        )
    }

    /// Whether the command was asked for JSON output.
    pub(crate) fn wants_json(&self) -> bool {
        match self {
            Command::Init { .. } | Command::Receiver(_) | Command::Serve { .. } => false,
            Command::State {
                command: StateCommand::Backup { json, .. },
            } => *json,
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
                | SyncCommand::Test { json, .. }
                | SyncCommand::Drift { json, .. }
                | SyncCommand::Reconcile { json, .. } => *json,
            },
            Command::Diff { json, .. } | Command::Audit { json, .. } => *json,
            Command::Change { command } => match command {
                ChangeCommand::Submit { json, .. }
                | ChangeCommand::List { json }
                | ChangeCommand::Show { json, .. }
                | ChangeCommand::Verify { json, .. } => *json,
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
                    | RunsCommand::Reject { json, .. }
                    | RunsCommand::Cancel { json, .. }
                    | RunsCommand::Show { json, .. }
                    | RunsCommand::Requests { json, .. }
                    | RunsCommand::Request { json, .. }
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
