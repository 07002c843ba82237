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
//!
//! `cargo run --release -p ais-store --example raw_bench -- [EVENTS] [DIR]`
//! (DIR default: a temporary directory, removed at the end).

use std::time::Instant;

use ais_model::wire;
use ais_store::prelude::*;
use ais_store::raw::columns::EventColumns;
use ais_store::raw::file::{writer_properties, BATCH_FILE};
use ais_store::sqlite::SqliteStore;
use ais_store::EventQuery;
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
    common::breakdown_scan(&store, total).await
}
