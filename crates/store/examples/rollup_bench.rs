//! Breakdowns answered from dimension rollups on the embedded store, printing figures
//! for `bench/RESULTS.md`: 24 hours of dimension rollups at the seed rate's shape (3
//! tenants; 50 endpoints, 5 models, 8 regions, 2 statuses and an `attr.feature` of 30
//! values per minute), committed a minute per batch, then `rolled_up_breakdown` by each
//! dimension over the last hour and the whole day, timed over repeated runs (p50, p99,
//! max); then again once maintenance merged each final hour's minute rows into hour
//! rows, while another partition commits as fast as it can (its commit latency is
//! what merging costs ingest). Each partial is built from 200 events, so its sketches
//! hold as many bins as a busy minute's.
//!
//! `cargo run --release -p ais-store --example rollup_bench -- [HOURS] [RUNS]`
//! (default 24 hours, 50 runs per query).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use ais_model::dimension::{Dimension, Filters};
use ais_model::time::MINUTE_MS;
use ais_model::{Event, EventId, Status};
use ais_rollup::dimensions::{DimensionKey, DimensionValue};
use ais_rollup::RollupPartial;
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::{BatchCommit, BreakdownQuery, DimensionPartials};

/// 2026-11-22T00:00:00Z.
const DAY_START_MS: i64 = 1_795_305_600_000;
const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const EVENTS_PER_PARTIAL: u64 = 200;

/// A cheap deterministic mixer, so every run writes the same data.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn dimensions() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("endpoint", (0..50).map(|n| format!("/v1/e{n}")).collect()),
        ("model", (0..5).map(|n| format!("model-{n}")).collect()),
        ("region", (0..8).map(|n| format!("region-{n}")).collect()),
        ("status", vec!["ok".to_string(), "error".to_string()]),
        (
            "attr.feature",
            (0..30).map(|n| format!("feature-{n}")).collect(),
        ),
    ]
}

fn partial(seed: u64) -> RollupPartial {
    let mut partial = RollupPartial::new();
    for n in 0..EVENTS_PER_PARTIAL {
        let x = mix(seed ^ n);
        let mut event = Event::new("m", EventId::Generated(1), 0, (50 + x % 5_000) as f64);
        event.ttft_ms = Some((10 + (x >> 16) % 800) as f64);
        event.input_tokens = Some(x % 4_000);
        event.output_tokens = Some((x >> 8) % 1_000);
        event.cost_micros = Some((x >> 20) % 10_000);
        event.user_id = Some(Cow::Owned(format!("user-{}", (x >> 24) % 100_000)));
        if x.is_multiple_of(50) {
            event.status = Status::Error;
        }
        partial.add(&event, false);
    }
    partial
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let hours: i64 = args.next().and_then(|text| text.parse().ok()).unwrap_or(24);
    let runs: usize = args.next().and_then(|text| text.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    let dimensions = dimensions();
    let names: Vec<String> = dimensions
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    store
        .keep_dimension_rollups(&names, DAY_START_MS - 3_600_000)
        .await
        .expect("dimension list");

    // A few distinct partials, reused: building 200 events per partial for every row
    // would take longer than the benchmark itself.
    let pool: Vec<RollupPartial> = (0..64).map(partial).collect();
    let minutes = hours * 60;
    let started = Instant::now();
    let mut rows = 0u64;
    for minute in 0..minutes {
        let minute_ms = DAY_START_MS + minute * MINUTE_MS;
        let mut partials = Vec::new();
        for tenant in TENANTS {
            for (name, values) in &dimensions {
                for value in values {
                    let pick = mix(minute as u64 ^ rows) % pool.len() as u64;
                    partials.push((
                        DimensionKey {
                            tenant: tenant.to_string(),
                            dimension: name.to_string(),
                            minute_ms,
                            value: DimensionValue::Value(value.clone()),
                        },
                        pool[pick as usize].clone(),
                    ));
                    rows += 1;
                }
            }
        }
        partials.sort_by(|a, b| a.0.cmp(&b.0));
        let offset = u64::try_from(minute).expect("positive");
        store
            .commit(BatchCommit {
                first_offset: offset,
                dimensions: DimensionPartials {
                    max_values_per_minute: 1_000,
                    partials,
                },
                ..BatchCommit::position(0, offset + 1, minute_ms)
            })
            .await
            .expect("commit");
    }
    println!(
        "committed {rows} dimension rollup rows ({hours} h × 60 min × 3 tenants × 95 values) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let end_ms = DAY_START_MS + minutes * MINUTE_MS;
    measure(&store, &dimensions, end_ms, runs, "minute rows").await;
    let started = Instant::now();
    // Every hour is final: maintenance merges each hour's minute rows into hour rows,
    // up to a day of hours per pass. Meanwhile a stream commits (empty batches of
    // another partition) as fast as it can: how long its commits wait is what merging
    // costs ingest.
    let done = std::sync::atomic::AtomicBool::new(false);
    let compaction = async {
        for _ in 0..(hours + 23) / 24 {
            store.compact(end_ms).await.expect("compaction");
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let commits = async {
        let mut latencies = Vec::new();
        let mut offset = 0u64;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let started = Instant::now();
            store
                .commit(BatchCommit {
                    first_offset: offset,
                    ..BatchCommit::position(1, offset + 1, end_ms)
                })
                .await
                .expect("commit");
            latencies.push(started.elapsed());
            offset += 1;
        }
        latencies
    };
    let ((), mut latencies) = tokio::join!(compaction, commits);
    println!(
        "merged the minute rows into hour rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    latencies.sort();
    if !latencies.is_empty() {
        println!(
            "meanwhile {} commits of another partition: p50 {:?}, p99 {:?}, max {:?}",
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0)
        );
    }
    measure(&store, &dimensions, end_ms, runs, "hour rows").await;
}

async fn measure(
    store: &SqliteStore,
    dimensions: &[(&'static str, Vec<String>)],
    end_ms: i64,
    runs: usize,
    rows: &str,
) {
    for (name, values) in dimensions {
        for (label, from_ms) in [
            ("last hour", end_ms - 3_600_000),
            ("whole range", DAY_START_MS),
        ] {
            let mut times = Vec::with_capacity(runs);
            let mut groups = 0;
            for _ in 0..runs {
                let query = BreakdownQuery {
                    tenant: Some("acme".to_string()),
                    from_ms,
                    to_ms: end_ms,
                    by: vec![Dimension::parse(name).expect("a dimension")],
                    filters: Filters::default(),
                    step_ms: None,
                    max_groups: 200_000,
                    deadline: Instant::now() + Duration::from_secs(60),
                };
                let started = Instant::now();
                let grouper = store
                    .rolled_up_breakdown(query)
                    .await
                    .expect("breakdown")
                    .expect("answered from rollups");
                times.push(started.elapsed());
                groups = grouper.len();
            }
            assert_eq!(groups, values.len());
            times.sort();
            println!(
                "{rows}: by {name:<12} over the {label:<11}: p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  ({groups} groups)",
                percentile(&times, 0.5).as_secs_f64() * 1e3,
                percentile(&times, 0.99).as_secs_f64() * 1e3,
                times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            );
        }
    }
}
