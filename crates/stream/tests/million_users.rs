//! A million distinct users in one day through the stream's roll-up and the embedded
//! store: the usage ledger holds each user's day exactly, and neither the stream nor
//! the billing export holds memory in proportion to the number of users.
//!
//! Memory is what this test binary allocates through Rust's allocator (counted by
//! `peak_alloc`), so the store's own page cache, bounded by
//! SQLite's settings, is not part of it. The roll-up of each batch is bounded by the
//! batch; a stream that kept entries across batches, or an export that built its rows
//! before sending them, would grow with the users and fail the bounds below.

use ais_model::{wire, Event, EventId};
use ais_rollup::dimensions::DimensionRollupConfig;
use ais_rollup::usage::{UsageConfig, UsageScope, DAY_MS};
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::usage::UsageQuery;
use ais_store::BatchCommit;
use ais_stream::batch::{roll_up, RollUpPlan};
use ais_stream::dedup::{Dedup, DedupConfig};
use ais_stream::watermark::Watermark;
use bytes::Bytes;
use peak_alloc::PeakAlloc;

/// Counts the bytes live on the heap and the most there have been.
#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const MIB: usize = 1 << 20;
const USERS: usize = 1_000_000;
/// The stream's largest batch.
const BATCH: usize = 65_536;
/// 2026-11-01T00:00:00Z.
const DAY: i64 = 1_793_491_200_000;

/// The most bytes live since the last call; the count starts again from now.
fn take_peak() -> usize {
    let peak = HEAP.peak_usage();
    HEAP.reset_peak_usage();
    peak
}

/// User `n`'s one call: its own cost, so each user's total is known.
fn cost_of(n: usize) -> u64 {
    1 + (n as u64 * 7_919) % 90_000
}

fn records(from: usize, to: usize) -> Vec<Bytes> {
    (from..to)
        .map(|n| {
            let event = Event {
                user_id: Some(format!("user-{n:07}").into()),
                cost_micros: Some(cost_of(n)),
                input_tokens: Some(n as u64 % 1_000),
                ..Event::new(
                    "gpt-4o",
                    EventId::Generated(n as u128 + 1),
                    DAY + (n as i64 * 80) % DAY_MS,
                    12.0,
                )
            };
            let mut bytes = Vec::new();
            wire::encode_into("acme", &event, &mut bytes);
            Bytes::from(bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_users_in_a_day_are_each_exact_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    let usage = UsageConfig {
        scopes: vec![UsageScope::Tenant, UsageScope::UserId],
    };
    let dimensions = DimensionRollupConfig {
        dimensions: Vec::new(),
        ..DimensionRollupConfig::default()
    };
    let mut dedup = Dedup::new(DedupConfig::default());
    let watermark = Watermark::new(120_000, 10_000, i64::MIN);

    // Each batch is built, rolled up and committed, then dropped: what stays live
    // between batches is the stream's state, which users must not grow.
    let mut first_batches_peak = 0;
    let mut largest_entries = 0;
    take_peak();
    for (index, start) in (0..USERS).step_by(BATCH).enumerate() {
        let end = (start + BATCH).min(USERS);
        let batch = records(start, end);
        let output = roll_up(
            &batch,
            start as u64,
            &mut dedup,
            &watermark,
            &RollUpPlan {
                dimensions: &dimensions,
                usage: &usage,
            },
            DAY + DAY_MS,
        );
        assert_eq!(output.counts.events, (end - start) as u64);
        largest_entries = largest_entries.max(output.usage.len());
        store
            .commit(BatchCommit {
                first_offset: start as u64,
                partials: output.partials,
                events: output.events,
                ledger: output.ledger,
                usage: output.usage,
                ..BatchCommit::position(0, end as u64, 0)
            })
            .await
            .expect("a commit");
        if index == 1 {
            first_batches_peak = take_peak();
        }
    }
    let whole_peak = take_peak().max(first_batches_peak);
    // One entry per user of the batch and one for the tenant: bounded by the batch.
    assert_eq!(largest_entries, BATCH + 1);
    assert!(
        whole_peak <= first_batches_peak + first_batches_peak / 2,
        "the stream's memory grew with the users: {} MiB over a million users against {} MiB over the first two batches",
        whole_peak / MIB,
        first_batches_peak / MIB
    );

    // The day's billing export: every user once and exact, streamed in chunks.
    let mut rows = store
        .usage_export(UsageQuery {
            tenant: Some("acme".to_string()),
            scope: "user_id".to_string(),
            from_day_ms: DAY,
            to_day_ms: DAY + DAY_MS,
            filter: None,
        })
        .await
        .expect("an export");
    let before = HEAP.current_usage();
    take_peak();
    let mut exported = 0;
    while let Some(chunk) = rows.recv().await {
        for row in chunk.expect("a chunk") {
            let value = row.value.expect("every event has a user");
            let n: usize = value
                .strip_prefix("user-")
                .and_then(|n| n.parse().ok())
                .expect("a user this test sent");
            assert_eq!(row.day_ms, DAY);
            assert_eq!(
                (row.counts.requests, row.counts.cost_micros),
                (1, cost_of(n)),
                "{value}"
            );
            assert_eq!(n, exported, "in value order, each once");
            exported += 1;
        }
    }
    assert_eq!(exported, USERS);
    let export_peak = take_peak().saturating_sub(before);
    // A million rows built in memory would be over 60 MiB.
    assert!(
        export_peak <= 16 * MIB,
        "the export held {} MiB at once",
        export_peak / MIB
    );
}
