//! The delivery debugger on the command line: `runs requests RUN [--failed]`, `runs request
//! RUN N`, and the requests `sync test` shows.

use backflow::app::RunRequests;
use backflow::domain::CapturedRequest;

/// `runs requests`: one line per kept request.
pub(crate) fn print_requests(listed: &RunRequests, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(listed)?);
        return Ok(());
    }
    println!(
        "run {} of {}: {} request(s) kept, {} dropped",
        listed.run_id, listed.sync, listed.kept, listed.dropped
    );
    if listed.requests.is_empty() {
        println!("  (none shown; [debug] capture decides which requests a run keeps)");
    }
    for r in &listed.requests {
        println!("  {}", request_line(r));
    }
    Ok(())
}

/// `runs request`: one request in full.
pub(crate) fn print_request(request: &CapturedRequest, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(request)?);
    } else {
        print_full(request);
    }
    Ok(())
}

/// `#N METHOD URL → STATUS, N ms, batch …`.
pub(crate) fn request_line(r: &CapturedRequest) -> String {
    let answer = match (&r.status, &r.error) {
        (Some(status), _) => status.to_string(),
        (None, Some(e)) => format!("no answer ({e})"),
        (None, None) => "no answer".into(),
    };
    let batch = r
        .batch
        .as_ref()
        .map(|b| format!(", batch {} ({} of {} row(s))", b.index, b.operation, b.rows))
        .unwrap_or_default();
    let failed = if r.failed { "  FAILED" } else { "" };
    format!(
        "#{} {} {} → {answer}, {} ms{batch}{failed}",
        r.seq, r.method, r.url, r.duration_ms
    )
}

/// A request in full: the request, the answer and the rows it carried.
pub(crate) fn print_full(r: &CapturedRequest) {
    println!(
        "request #{} of run {} ({}), sent {}, {} ms",
        r.seq,
        r.run_id,
        r.plugin,
        rfc3339(r.started_at_ms),
        r.duration_ms
    );
    println!("{} {}", r.method, r.url);
    for (name, value) in &r.request_headers {
        println!("{name}: {value}");
    }
    println!();
    print_body(&r.request_body, r.request_bytes);
    println!();
    match (&r.status, &r.error) {
        (Some(status), _) => println!("answer: {status}"),
        (None, Some(e)) => println!("no answer: {e}"),
        (None, None) => println!("no answer"),
    }
    for (name, value) in &r.response_headers {
        println!("{name}: {value}");
    }
    if r.status.is_some() {
        println!();
        print_body(&r.response_body, r.response_bytes);
    }
    if let Some(b) = &r.batch {
        println!();
        println!(
            "batch {}: {} of {} row(s), keys: {}",
            b.index,
            b.operation,
            b.rows,
            if b.keys.is_empty() {
                "(unknown)".to_string()
            } else {
                b.keys.join(", ")
            }
        );
    }
}

fn print_body(body: &str, bytes: u64) {
    if bytes == 0 {
        println!("(empty body)");
    } else {
        println!("{body}");
        println!("({bytes} bytes)");
    }
}

fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}
