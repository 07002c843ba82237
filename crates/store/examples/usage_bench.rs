//! The usage ledger on the embedded store at the usage issue's scale, printing figures
//! for `bench/RESULTS.md`: `DAYS` days (default 30) of `USERS` distinct users a day
//! (default 1,000,000), each user's day committed as one ledger entry in batches of
//! 65,536 entries (the stream's largest batch): the commit rate of ledger entries; then
//! the billing export of the whole range (`usage_export`, every (day, user) row
//! streamed), its time and the process's peak RSS during it; then the top 20 users by
//! cost over the last day and over the whole range.
//!
//! `cargo run --release -p ais-store --example usage_bench -- [DAYS] [USERS]`

use std::time::Instant;

use ais_rollup::usage::{UsageCounts, UsageKey, DAY_MS};
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::usage::{UsageOrder, UsageQuery, UsageRanking};
use ais_store::BatchCommit;

/// 2026-11-01T00:00:00Z.
const FIRST_DAY_MS: i64 = 1_793_491_200_000;
const ENTRIES_PER_BATCH: usize = 65_536;

/// Peak resident memory of this process, in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Resets the peak so the next reading covers only what follows (Linux 4.0 and later).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let days: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let users: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");

    let started = Instant::now();
    let mut offset = 0u64;
    let mut entries_written = 0u64;
    for day in 0..days {
        let day_ms = FIRST_DAY_MS + day * DAY_MS;
        let mut user = 0usize;
        while user < users {
            let end = (user + ENTRIES_PER_BATCH).min(users);
            let usage: Vec<(UsageKey, UsageCounts)> = (user..end)
                .map(|n| {
                    (
                        UsageKey {
                            tenant: "acme".into(),
                            scope: "user_id".into(),
                            day_ms,
                            value: Some(format!("user-{n:07}")),
                        },
                        UsageCounts {
                            requests: 1 + (n % 7) as u64,
                            errors: (n % 13 == 0) as u64,
                            input_tokens: 100 + (n % 4_000) as u64,
                            output_tokens: 10 + (n % 900) as u64,
                            cache_read_input_tokens: (n % 50) as u64,
                            cost_micros: 1 + (n as u64 * 7_919) % 90_000,
                        },
                    )
                })
                .collect();
            let records = (end - user) as u64;
            entries_written += records;
            // One record per entry, as if each were one event.
            store
                .commit(BatchCommit {
                    first_offset: offset,
                    usage,
                    ..BatchCommit::position(0, offset + records, 0)
                })
                .await
                .expect("a commit");
            offset += records;
            user = end;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "commit: {entries_written} ledger entries ({days} days × {users} users) in {seconds:.1} s = {:.0} entries/s; store {:.0} MiB",
        entries_written as f64 / seconds,
        dir_size_mib(dir.path())
    );

    let query = UsageQuery {
        tenant: Some("acme".to_string()),
        scope: "user_id".to_string(),
        from_day_ms: FIRST_DAY_MS,
        to_day_ms: FIRST_DAY_MS + days * DAY_MS,
        filter: None,
    };
    reset_peak_rss();
    let before = peak_rss_mib();
    let started = Instant::now();
    let mut rows = store.usage_export(query.clone()).await.expect("an export");
    let mut exported = 0u64;
    let mut cost = 0u64;
    while let Some(chunk) = rows.recv().await {
        for row in chunk.expect("a chunk") {
            exported += 1;
            cost += row.counts.cost_micros;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "export: {exported} rows in {seconds:.1} s = {:.0} rows/s; peak RSS {:.0} MiB during it ({before:.0} MiB at its start); cost sum {cost} µ$",
        exported as f64 / seconds,
        peak_rss_mib()
    );
    assert_eq!(exported, entries_written, "every row exported once");

    for (name, from_day_ms) in [
        ("the last day", FIRST_DAY_MS + (days - 1) * DAY_MS),
        ("the whole range", FIRST_DAY_MS),
    ] {
        let started = Instant::now();
        let top = store
            .usage(
                UsageQuery {
                    from_day_ms,
                    ..query.clone()
                },
                UsageRanking {
                    order: UsageOrder::CostUsd,
                    ascending: false,
                    top: 20,
                },
            )
            .await
            .expect("top users");
        println!(
            "top 20 users by cost over {name}: {:.2} s ({} groups, total {} requests)",
            started.elapsed().as_secs_f64(),
            top.groups.len(),
            top.total.requests
        );
    }
}

fn dir_size_mib(dir: &std::path::Path) -> f64 {
    let mut bytes = 0u64;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            bytes += entry.metadata().map(|meta| meta.len()).unwrap_or(0);
        }
    }
    bytes as f64 / (1024.0 * 1024.0)
}
