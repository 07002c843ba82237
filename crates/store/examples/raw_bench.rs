//! Raw-event benchmark of the embedded store, printing figures for `bench/RESULTS.md`:
//!
//! 1. Parquet encode ceiling: wire records → columns → one zstd Parquet file in
//!    memory, one thread, batches of 65,536 (the stream's batch size).
//! 2. An hour at the seed rate (default 60 M events, 1 M a minute): committed through
//!    `SqliteStore::commit` in stream-sized batches (decode, columns, durable file,
//!    SQLite registration), then compacted; bytes per event before and after.
//! 3. Drill-down latency by `trace_id` over that hour (p50, p99, max over random
//!    existing traces and some absent ones), after compaction.
//! 4. Breakdown scans of that hour (the scan path of `GET /v1/query/breakdown`): by
//!    `user_id` (100,000 users) for one tenant and for every tenant, by `endpoint`, by
//!    `attr.feature`, by `model` and `region` together, and by `endpoint` with a filter
//!    on `region`: time, and events scanned per second in all and per core.
//! 5. The decode ceiling of those scans: the same row groups and columns decoded on
//!    the same threads, and nothing done with them (`raw::breakdown::decode_only`).
//!
//! `cargo run --release -p ais-store --example raw_bench -- [EVENTS] [DIR] [scan]`
//! (DIR default: a temporary directory, removed at the end). With `scan`, DIR holds
//! the hour an earlier run with the same EVENTS left there, and only the scans and
//! their decode ceiling run: A/B runs of two builds over the same files.

use std::time::Instant;

use std::sync::Arc;

use ais_model::dimension::Dimension;
use ais_model::wire;
use ais_store::prelude::*;
use ais_store::raw::catalog::RawFile;
use ais_store::raw::columns::EventColumns;
use ais_store::raw::file::{writer_properties, BATCH_FILE};
use ais_store::sqlite::SqliteStore;
use ais_store::{BreakdownQuery, EventQuery};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;

mod common;

use common::{anyhow_free, batch_commit, batch_records, mix, BATCH, HOUR_START_MS};

fn encode_ceiling(total: u64) -> anyhow_free::Result {
    let batches = 16;
    let records: Vec<Vec<Bytes>> = (0..batches)
        .map(|b| batch_records(b * BATCH, BATCH, total))
        .collect();
    let started = Instant::now();
    let mut bytes = 0;
    for batch in &records {
        let mut columns = EventColumns::with_capacity(batch.len());
        for record in batch {
            let (tenant, event) = wire::decode(record).map_err(|e| e.to_string())?;
            columns.push(tenant, &event).map_err(|e| e.to_string())?;
        }
        let rows = columns.finish().map_err(|e| e.to_string())?;
        let mut sink = Vec::new();
        let properties = writer_properties(BATCH_FILE).map_err(|e| e.to_string())?;
        let mut writer = ArrowWriter::try_new(&mut sink, rows.schema(), Some(properties))
            .map_err(|e| e.to_string())?;
        writer.write(&rows).map_err(|e| e.to_string())?;
        writer.close().map_err(|e| e.to_string())?;
        bytes += sink.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    let events = (batches * BATCH) as f64;
    println!(
        "encode ceiling (decode + columns + zstd-1 Parquet in memory, 1 thread): {:.0} events/s, {:.1} bytes/event",
        events / seconds,
        bytes as f64 / events
    );
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn drill_down(store: &SqliteStore, total: u64, label: &str) -> anyhow_free::Result {
    let mut latencies = Vec::new();
    let mut found = 0;
    for probe in 0..60u64 {
        let trace = if probe % 6 == 5 {
            "0000000000000000000000000000dead".to_string()
        } else {
            format!("{:032x}", mix(mix(probe) % (total / 2)))
        };
        for tenant in ["acme", "globex", "initech"] {
            let started = Instant::now();
            let events = store
                .events(EventQuery {
                    tenant: tenant.to_string(),
                    from_ms: HOUR_START_MS,
                    to_ms: HOUR_START_MS + 3_600_000,
                    trace_id: Some(trace.clone()),
                    user_id: None,
                    model: None,
                    status: None,
                    min_latency_ms: None,
                    filters: Default::default(),
                    limit: 100,
                    payloads: Default::default(),
                })
                .await
                .map_err(|e| e.to_string())?;
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            found += events.len();
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "drill-down by trace_id over the hour ({label}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} queries, {found} spans found)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0),
        latencies.len()
    );
    Ok(())
}

/// Every Parquet file under `dir` (a store's events directory), as the catalog would
/// list them; pruning reads the files' own statistics, so the spans are left open.
fn files_under(dir: &std::path::Path, into: &mut Vec<Arc<RawFile>>) -> anyhow_free::Result {
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            files_under(&path, into)?;
        } else if path.extension().is_some_and(|ext| ext == "parquet") {
            let bytes = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
            let id = into.len() as i64;
            into.push(Arc::new(RawFile::new(
                id,
                path,
                HOUR_START_MS,
                (i64::MIN, i64::MAX),
                0,
                bytes,
                true,
            )));
        }
    }
    Ok(())
}

/// The decode ceiling of the breakdowns by `user_id` and by `endpoint` (the columns
/// each reads, one tenant): every row group in range decoded, nothing grouped.
fn decode_ceiling(store: &SqliteStore, total: u64) -> anyhow_free::Result {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut files = Vec::new();
    files_under(store.events_dir(), &mut files)?;
    for by in ["user_id", "endpoint"] {
        let query = BreakdownQuery {
            tenant: Some("acme".to_string()),
            from_ms: HOUR_START_MS,
            to_ms: HOUR_START_MS + 3_600_000,
            by: vec![Dimension::parse(by).map_err(|e| e.to_string())?],
            filters: Default::default(),
            step_ms: None,
            max_groups: 1_000_000,
            deadline: Instant::now() + std::time::Duration::from_secs(3_600),
        };
        let mut columns = query.grouper().fields_read();
        columns.extend(["tenant", "timestamp"]);
        let columns = columns.len();
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let rows = ais_store::raw::breakdown::decode_only(files.clone(), &query)
            .map_err(|e| e.to_string())?;
        let seconds = started.elapsed().as_secs_f64();
        let cpu = cpu_before
            .zip(cpu_seconds())
            .map_or(f64::NAN, |(before, after)| after - before);
        println!(
            "decode ceiling of the breakdown by {by} ({columns} columns, {rows} rows decoded): {seconds:.2} s, {cpu:.2} CPU s, {:.0} events/s ({:.0} per core, {cores} cores; {:.0} per CPU second)",
            total as f64 / seconds,
            total as f64 / seconds / cores as f64,
            total as f64 / cpu,
        );
    }
    Ok(())
}

/// CPU seconds this process has used (user and system, all threads), from
/// `/proc/self/stat`; `None` where there is no such file.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after its `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // The kernel's USER_HZ, 100 on every Linux build this runs on.
    Some(ticks / 100.0)
}

/// A breakdown timed: label, tenant, dimensions, filter.
type Case = (
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
    Option<&'static str>,
);

/// The breakdowns of `common::breakdown_scan`, each also with the CPU time it took:
/// on a machine shared with other work, CPU seconds move less than wall time.
async fn scans_with_cpu_time(store: &SqliteStore, total: u64) -> anyhow_free::Result {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let cases: [Case; 6] = [
        ("user_id", Some("acme"), &["user_id"], None),
        ("user_id", None, &["user_id"], None),
        ("endpoint", Some("acme"), &["endpoint"], None),
        ("attr.feature", Some("acme"), &["attr.feature"], None),
        ("model, region", Some("acme"), &["model", "region"], None),
        (
            "endpoint, region in eu",
            Some("acme"),
            &["endpoint"],
            Some("region:eu-west-1|eu-central-1"),
        ),
    ];
    for (label, tenant, by, filter) in cases {
        let by = by
            .iter()
            .map(|name| Dimension::parse(name).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let filters =
            match filter {
                Some(text) => ais_model::dimension::Filters(vec![
                    ais_model::dimension::Filter::parse(text).map_err(|e| e.to_string())?,
                ]),
                None => Default::default(),
            };
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let grouper = store
            .breakdown(BreakdownQuery {
                tenant: tenant.map(str::to_string),
                from_ms: HOUR_START_MS,
                to_ms: HOUR_START_MS + 3_600_000,
                by,
                filters,
                step_ms: None,
                max_groups: 1_000_000,
                deadline: Instant::now() + std::time::Duration::from_secs(3_600),
            })
            .await
            .map_err(|e| e.to_string())?;
        let seconds = started.elapsed().as_secs_f64();
        let cpu = cpu_before
            .zip(cpu_seconds())
            .map_or(f64::NAN, |(before, after)| after - before);
        let groups = grouper.len();
        let ranked = grouper.rank(ais_rollup::breakdown::OrderBy::Requests, false, 20);
        println!(
            "breakdown scan by {label} over the hour ({}): {seconds:.2} s, {cpu:.2} CPU s, {groups} groups, {} events matched, {:.0} events scanned/s ({:.0} per core, {cores} cores; {:.0} per CPU second)",
            tenant.unwrap_or("every tenant"),
            ranked.total.requests,
            total as f64 / seconds,
            total as f64 / seconds / cores as f64,
            total as f64 / cpu,
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow_free::Result {
    let mut args = std::env::args().skip(1);
    let total: u64 = args
        .next()
        .map(|text| {
            text.parse()
                .map_err(|_| format!("EVENTS must be a count, got {text:?}"))
        })
        .transpose()?
        .unwrap_or(60_000_000);
    let temporary = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temporary.path().to_path_buf());
    if args.next().as_deref() == Some("scan") {
        let store = SqliteStore::open(&dir.join("ais.sqlite")).map_err(|e| e.to_string())?;
        let held = store.raw_stats();
        if held.rows != total {
            return Err(format!(
                "{} holds {} events, not {total}: run once without `scan` first",
                dir.display(),
                held.rows
            ));
        }
        println!(
            "scans only, over {} ({} files, {:.1} bytes/event)",
            dir.display(),
            held.files,
            held.bytes as f64 / held.rows.max(1) as f64
        );
        decode_ceiling(&store, total)?;
        return scans_with_cpu_time(&store, total).await;
    }

    encode_ceiling(total)?;

    let store = SqliteStore::open(&dir.join("ais.sqlite")).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut next = 0u64;
    let mut generate_seconds = 0.0;
    while next < total {
        let count = BATCH.min(total - next);
        let generating = Instant::now();
        let batch = batch_commit(next, count, total);
        generate_seconds += generating.elapsed().as_secs_f64();
        store.commit(batch).await.map_err(|e| e.to_string())?;
        next += count;
    }
    let commit_seconds = started.elapsed().as_secs_f64() - generate_seconds;
    let before = store.raw_stats();
    println!(
        "commit through the store (decode + columns + durable Parquet + SQLite catalog): {:.0} events/s; {} files, {:.1} bytes/event",
        total as f64 / commit_seconds,
        before.files,
        before.bytes as f64 / before.rows.max(1) as f64
    );
    drill_down(&store, total, "per-batch files").await?;

    let compacting = Instant::now();
    let mut report = store
        .compact(HOUR_START_MS + 3_600_000)
        .await
        .map_err(|e| e.to_string())?;
    while report.hours > 0 {
        report = store
            .compact(HOUR_START_MS + 3_600_000)
            .await
            .map_err(|e| e.to_string())?;
    }
    let after = store.raw_stats();
    println!(
        "compaction: {:.1} s ({:.0} events/s); {} files, {:.1} bytes/event",
        compacting.elapsed().as_secs_f64(),
        total as f64 / compacting.elapsed().as_secs_f64(),
        after.files,
        after.bytes as f64 / after.rows.max(1) as f64
    );
    assert_eq!(after.rows, total, "compaction keeps every row");
    drill_down(&store, total, "compacted").await?;
    decode_ceiling(&store, total)?;
    common::breakdown_scan(&store, total).await
}
