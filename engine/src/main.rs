//! The `backflow` command line: parses the arguments, sets up logging and the async runtime,
//! and hands the command to [`cli`], which has one module per command group.

use clap::Parser;
use std::process::ExitCode;

mod cli;

/// See the `mimalloc` entry in Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::args::Cli::parse();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if terminal {
        backflow::sync::progress::enable_bars();
    }
    init_logging(cli.log_format, terminal);
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
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            cli::report_failure(&e, json);
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (above the progress bars), as text or as one JSON object per line.
fn init_logging(format: cli::args::LogFormat, terminal: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "backflow=info,warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(backflow::sync::progress::LogWriter)
        .with_target(false);
    match format {
        cli::args::LogFormat::Text => logs.with_ansi(terminal).init(),
        // `span` is the innermost span and `spans` every span around the event, each with
        // its fields: a log collector can group a run's lines by its sync and run id.
        cli::args::LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_ansi(false)
            .init(),
    }
}
