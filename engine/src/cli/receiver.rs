//! `backflow receiver`: runs the toolkit's local webhook receiver until Ctrl-C.

use super::args::ReceiverArgs;
use anyhow::{bail, Context as _};
use backflow::toolkit::receiver::{self, ReceiverOptions};
use std::process::ExitCode;

/// Checks the flags, starts the receiver and waits for Ctrl-C; then prints what it received.
pub(crate) async fn run(args: ReceiverArgs) -> anyhow::Result<ExitCode> {
    let ReceiverArgs {
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
        records,
    } = args;
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
    let options = ReceiverOptions {
        out,
        print: !discard,
        latency_ms,
        error_rate,
        rate_limit,
        reject,
        multi_status: None,
        hmac_secret,
        down_for_ms,
        echo_headers_status: None,
        status_for_method: None,
        fail_requests: None,
        discard,
        records,
    };
    let receiver = receiver::start(addr, options).await?;
    eprintln!("receiving on http://{} (Ctrl-C to stop)", receiver.addr);
    tokio::signal::ctrl_c().await?;
    eprintln!(
        "received {} requests, {} rows",
        receiver.received().len(),
        receiver.rows()
    );
    Ok(ExitCode::SUCCESS)
}
