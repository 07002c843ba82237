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

use std::borrow::Cow;
use std::time::Instant;

use ais_model::dimension::{Dimension, Filter, Filters};
use ais_model::{wire, Event, EventId, Status};
use ais_store::prelude::*;
use ais_store::raw::columns::EventColumns;
use ais_store::raw::file::{writer_properties, BATCH_FILE};
use ais_store::sqlite::SqliteStore;
use ais_store::{BatchCommit, BreakdownQuery, EventQuery, LoggedRecord};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;

const BATCH: u64 = 65_536;
/// 2026-11-22T10:00:00Z.
const HOUR_START_MS: i64 = 1_795_341_600_000;
const MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "claude-sonnet",
    "llama-3-70b",
    "text-embedding-3",
];

const USERS: u64 = 100_000;
const REGIONS: [&str; 8] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-south-1",
    "ap-northeast-1",
    "sa-east-1",
    "ca-central-1",
];

/// A cheap deterministic mixer, so every run writes the same data.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Event `n` of `total` spread over one hour in arrival order; about two spans per
/// trace, 3 tenants, and the breakdowns benchmark's dimensions: 5 models, 50
/// endpoints, 8 regions, 100,000 users and an `attr.feature` of 30 values.
fn record(n: u64, total: u64) -> Bytes {
    let random = mix(n);
    let tenant = ["acme", "globex", "initech"][(random % 3) as usize];
    let input = 50 + random % 4_000;
    let output = 1 + (random >> 12) % 800;
    let event = Event {
        provider: Some(Cow::Borrowed("openai")),
        operation: Some(Cow::Borrowed("chat")),
        ttft_ms: Some(((random >> 20) % 900) as f64 + 20.0),
        input_tokens: Some(input),
        output_tokens: Some(output),
        cost_micros: Some(input * 3 + output * 10),
        status: if random.is_multiple_of(50) {
            Status::Error
        } else {
            Status::Ok
        },
        error_type: (random.is_multiple_of(50)).then_some(Cow::Borrowed("timeout")),
        user_id: Some(Cow::Owned(format!("user-{}", (random >> 24) % USERS))),
        trace_id: Some(Cow::Owned(format!("{:032x}", mix(n / 2)))),
        span_id: Some(Cow::Owned(format!("{:016x}", random))),
        endpoint: Some(Cow::Owned(format!("/v1/endpoint-{}", (random >> 41) % 50))),
        region: Some(Cow::Borrowed(REGIONS[((random >> 47) % 8) as usize])),
        attributes: vec![(
            Cow::Borrowed("feature"),
            Cow::Owned(format!("feature-{}", (random >> 51) % 30)),
        )],
        ..Event::new(
            MODELS[(random >> 8) as usize % MODELS.len()],
            EventId::Generated(u128::from(random) << 64 | u128::from(n)),
            HOUR_START_MS + (n as i128 * 3_600_000 / total as i128) as i64,
            ((random >> 30) % 5_000) as f64 + 100.0,
        )
    };
    let mut buffer = Vec::with_capacity(256);
    wire::encode_into(tenant, &event, &mut buffer);
    Bytes::from(buffer)
}

fn batch_records(first: u64, count: u64, total: u64) -> Vec<Bytes> {
    (first..first + count).map(|n| record(n, total)).collect()
}

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

mod anyhow_free {
    pub type Result = std::result::Result<(), String>;
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
        let events = batch_records(next, count, total);
        generate_seconds += generating.elapsed().as_secs_f64();
        store
            .commit(BatchCommit {
                partition: 0,
                first_offset: next,
                next_offset: next + count,
                watermark_ms: 0,
                partials: Vec::new(),
                dedup: Vec::new(),
                events: events
                    .into_iter()
                    .zip(next..)
                    .map(|(bytes, offset)| LoggedRecord { offset, bytes })
                    .collect(),
                dead_letters: Vec::new(),
                dimensions: Default::default(),
            })
            .await
            .map_err(|e| e.to_string())?;
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
    breakdown_scan(&store, total).await
}

async fn breakdown_scan(store: &SqliteStore, total: u64) -> anyhow_free::Result {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let region_filter = Filters(vec![
        Filter::parse("region:eu-west-1|eu-central-1").map_err(|e| e.to_string())?
    ]);
    let cases: [(&str, Option<&str>, &[&str], Filters); 6] = [
        ("user_id", Some("acme"), &["user_id"], Filters::default()),
        ("user_id", None, &["user_id"], Filters::default()),
        ("endpoint", Some("acme"), &["endpoint"], Filters::default()),
        (
            "attr.feature",
            Some("acme"),
            &["attr.feature"],
            Filters::default(),
        ),
        (
            "model, region",
            Some("acme"),
            &["model", "region"],
            Filters::default(),
        ),
        (
            "endpoint, region in eu",
            Some("acme"),
            &["endpoint"],
            region_filter,
        ),
    ];
    for (label, tenant, by, filters) in cases {
        let by = by
            .iter()
            .map(|name| Dimension::parse(name).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
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
        let groups = grouper.len();
        let ranked = grouper.rank(ais_rollup::breakdown::OrderBy::Requests, false, 20);
        println!(
            "breakdown scan by {label} over the hour ({}): {:.2} s, {} groups, {} events matched, {:.0} events scanned/s ({:.0} per core, {cores} cores)",
            tenant.unwrap_or("every tenant"),
            seconds,
            groups,
            ranked.total.requests,
            total as f64 / seconds,
            total as f64 / seconds / cores as f64,
        );
    }
    Ok(())
}
