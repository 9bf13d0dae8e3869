//! What the benchmarks share: the generated customers model and peak RSS.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// Writes `rows` rows of the 7-column customers model (`id, email, name, plan, mrr,
/// signed_up, active`) as CSV.
pub fn write_customers(path: &Path, rows: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    writeln!(f, "id,email,name,plan,mrr,signed_up,active").unwrap();
    let plans = ["free", "pro", "enterprise"];
    for i in 0..rows {
        writeln!(
            f,
            "{i},user{i}@example.com,User {i},{},{}.{:02},2023-{:02}-{:02},{}",
            plans[(i % 3) as usize],
            i % 2000,
            i % 100,
            1 + i % 12,
            1 + i % 28,
            i % 2 == 0
        )
        .unwrap();
    }
}

/// This process's peak resident set size (VmHWM), in MiB.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
