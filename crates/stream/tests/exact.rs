//! The stream core and loop against exact models: out-of-order events, duplicates and
//! late events, split into arbitrary batches; then the real WAL and SQLite store end to
//! end, including a restart that must not count anything twice.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ais_log::wal::{Wal, WalConfig};
use ais_log::{Log, RecordBatch};
use ais_model::dimension::Dimension;
use ais_model::time::{minute_floor, MINUTE_MS};
use ais_model::{wire, Event, EventId, Status};
use ais_rollup::dimensions::{DimensionRollupConfig, DimensionValue};
use ais_rollup::usage::UsageConfig;
use ais_rollup::RollupPartial;
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::RollupQuery;
use ais_stream::batch::{roll_up, RollUpPlan};
use ais_stream::dedup::{Dedup, DedupConfig};
use ais_stream::watermark::Watermark;
use ais_stream::{Processor, ProcessorConfig};
use bytes::Bytes;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

const LATENESS: i64 = 120_000;
const BASE: i64 = 1_795_339_620_000;

#[derive(Debug, Clone)]
struct Spec {
    tenant: usize,
    model: usize,
    offset_ms: i64,
    id: Option<u32>,
    tokens: u64,
    failed: bool,
}

fn event(spec: &Spec) -> Event<'static> {
    Event {
        input_tokens: Some(spec.tokens),
        output_tokens: Some(1),
        cost_micros: Some(spec.tokens * 3),
        status: if spec.failed {
            Status::Error
        } else {
            Status::Ok
        },
        ..Event::new(
            format!("model-{}", spec.model),
            match spec.id {
                Some(id) => EventId::Client(Cow::Owned(format!("id-{id}"))),
                None => EventId::Generated(0),
            },
            BASE + spec.offset_ms,
            10.0 + spec.tokens as f64,
        )
    }
}

fn record(spec: &Spec) -> Bytes {
    let mut buf = Vec::new();
    wire::encode_into(&format!("tenant-{}", spec.tenant), &event(spec), &mut buf);
    Bytes::from(buf)
}

#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct Totals {
    requests: u64,
    errors: u64,
    tokens: u64,
    cost: u64,
    late: u64,
}

type Key = (String, String, i64);

fn key_of(spec: &Spec) -> Key {
    (
        format!("tenant-{}", spec.tenant),
        format!("model-{}", spec.model),
        minute_floor(BASE + spec.offset_ms),
    )
}

fn specs() -> impl Strategy<Value = Vec<Spec>> {
    proptest::collection::vec(
        (
            0usize..2,
            0usize..3,
            -1_200_000i64..60_000,
            proptest::option::of(0u32..150),
            0u64..1000,
            any::<bool>(),
        )
            .prop_map(|(tenant, model, offset_ms, id, tokens, failed)| Spec {
                tenant,
                model,
                offset_ms,
                id,
                tokens,
                failed,
            }),
        1..300,
    )
}

proptest! {
    #[test]
    fn batches_roll_up_exactly(
        specs in specs(),
        cuts in proptest::collection::vec(1usize..60, 1..40),
        step_ms in 0i64..5_000,
    ) {
        // Split into batches of the given sizes; the clock moves `step_ms` per batch.
        let records: Vec<Bytes> = specs.iter().map(record).collect();
        let mut bounds = Vec::new();
        let mut start = 0;
        for cut in cuts.iter().cycle() {
            if start >= specs.len() { break; }
            let end = (start + cut).min(specs.len());
            bounds.push((start, end));
            start = end;
        }

        let mut dedup = Dedup::new(DedupConfig { horizon_ms: i64::MAX / 4, max_entries: usize::MAX });
        let mut watermark = Watermark::new(LATENESS, 10_000, i64::MIN);
        let mut got: BTreeMap<Key, RollupPartial> = BTreeMap::new();
        // The `model` dimension rollup must equal the model rollup, late events and all.
        let dimensions = DimensionRollupConfig {
            dimensions: vec![Dimension::Model],
            max_values_per_minute: 1_000,
        };
        let mut by_dimension: BTreeMap<Key, RollupPartial> = BTreeMap::new();
        // Usage per (tenant, model, day), from the ledger's `model` scope.
        let mut usage: BTreeMap<Key, Totals> = BTreeMap::new();
        for (batch, (start, end)) in bounds.iter().enumerate() {
            let now = BASE + batch as i64 * step_ms;
            let output = roll_up(&records[*start..*end], *start as u64, &mut dedup, &watermark, &RollUpPlan { dimensions: &dimensions, usage: &UsageConfig::default(), }, now);
            // Every record of the batch is in the ledger once, and each hour balances.
            let accepted: u64 = output.ledger.iter().map(|(_, counts)| counts.accepted).sum();
            prop_assert_eq!(accepted, (*end - *start) as u64);
            prop_assert!(output.ledger.iter().all(|(_, counts)| counts.balanced()));
            let committed: u64 = output.ledger.iter().map(|(_, counts)| counts.committed).sum();
            prop_assert_eq!(committed, output.events.len() as u64);
            watermark.observe_batch(output.newest_event_ms, now);
            for (key, counts) in output.usage.iter().filter(|(key, _)| &*key.scope == "model") {
                let model = key.value.clone().unwrap_or_default();
                let totals = usage.entry((key.tenant.to_string(), model, key.day_ms)).or_default();
                totals.requests += counts.requests;
                totals.errors += counts.errors;
                totals.tokens += counts.input_tokens;
                totals.cost += counts.cost_micros;
            }
            for (key, partial) in output.partials {
                got.entry((key.tenant, key.model, key.minute_ms)).or_default().merge(&partial);
            }
            for (key, partial) in output.dimensions {
                prop_assert_eq!(&key.dimension, "model");
                let DimensionValue::Value(model) = key.value else {
                    prop_assert!(false, "every event has a model: {:?}", key.value);
                    continue;
                };
                by_dimension.entry((key.tenant, model, key.minute_ms)).or_default().merge(&partial);
            }
        }

        // The model: first occurrence of a client id per tenant wins; an event is late
        // when its window ended at or before the watermark of the batches before it,
        // where that watermark is max over earlier batches j of
        // min(newest event time up to j, now_j) − lateness.
        let mut want: BTreeMap<Key, Totals> = BTreeMap::new();
        let mut seen = HashSet::new();
        let mut newest = i64::MIN;
        let mut watermark_before = i64::MIN;
        for (batch, (start, end)) in bounds.iter().enumerate() {
            let now = BASE + batch as i64 * step_ms;
            for spec in &specs[*start..*end] {
                if let Some(id) = spec.id {
                    if !seen.insert((spec.tenant, id)) { continue; }
                }
                let key = key_of(spec);
                let totals = want.entry(key.clone()).or_default();
                totals.requests += 1;
                totals.errors += u64::from(spec.failed);
                totals.tokens += spec.tokens;
                totals.cost += spec.tokens * 3;
                totals.late += u64::from(key.2 + MINUTE_MS <= watermark_before);
                newest = newest.max(BASE + spec.offset_ms);
            }
            if newest > i64::MIN {
                watermark_before = watermark_before.max(newest.min(now) - LATENESS);
            }
        }
        let totals = |partials: BTreeMap<Key, RollupPartial>| -> BTreeMap<Key, Totals> {
            partials.into_iter().map(|(key, partial)| (key, Totals {
                requests: partial.requests,
                errors: partial.errors,
                tokens: partial.input_tokens,
                cost: partial.cost_micros,
                late: partial.late_events,
            })).collect()
        };
        prop_assert_eq!(totals(by_dimension), want.clone());
        let mut daily: BTreeMap<Key, Totals> = BTreeMap::new();
        for ((tenant, model, minute_ms), minute) in &want {
            let day = daily.entry((tenant.clone(), model.clone(), ais_rollup::usage::day_of(*minute_ms))).or_default();
            day.requests += minute.requests;
            day.errors += minute.errors;
            day.tokens += minute.tokens;
            day.cost += minute.cost;
        }
        prop_assert_eq!(usage, daily);
        prop_assert_eq!(totals(got), want);
    }
}

fn append_specs(specs: &[Spec]) -> RecordBatch {
    let mut batch = RecordBatch::default();
    for spec in specs {
        batch.push(&record(spec));
    }
    batch
}

async fn wait_committed(processor_progress: &ais_stream::Progress, wal: &Wal) {
    ais_testkit::eventually_async("the processor to commit everything in the log", || async {
        match processor_progress.lag_records(&wal.status().end_offsets) {
            0 => Ok(()),
            lag => Err(format!("{lag} records behind")),
        }
    })
    .await;
}

async fn totals(store: &SqliteStore, tenant: &str) -> BTreeMap<(String, i64), (u64, u64)> {
    store
        .rollups(RollupQuery {
            tenant: tenant.to_string(),
            from_ms: 0,
            to_ms: i64::MAX,
            model: None,
        })
        .await
        .expect("rollups")
        .into_iter()
        .map(|row| {
            (
                (row.model, row.minute_ms),
                (row.partial.requests, row.partial.input_tokens),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_to_sqlite_end_to_end_with_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Arc::new(
        Wal::open(WalConfig {
            segment_bytes: 4096,
            ..WalConfig::new(dir.path().join("wal"))
        })
        .expect("wal"),
    );
    let store = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite")).expect("store"));
    let specs: Vec<Spec> = (0..2_000u32)
        .map(|i| Spec {
            tenant: (i % 2) as usize,
            model: (i % 3) as usize,
            offset_ms: -i64::from(i % 600) * 1_000,
            id: Some(i % 1_500),
            tokens: u64::from(i),
            failed: i % 10 == 0,
        })
        .collect();
    let mut want: BTreeMap<(String, i64), (u64, u64)> = BTreeMap::new();
    let mut seen = HashSet::new();
    for spec in specs.iter().filter(|spec| spec.tenant == 0) {
        if seen.insert(spec.id) {
            let (_, model, minute) = key_of(spec);
            let entry = want.entry((model, minute)).or_default();
            entry.0 += 1;
            entry.1 += spec.tokens;
        }
    }

    let run = |wal: Arc<Wal>, store: Arc<SqliteStore>| {
        let processor = Processor::new(ProcessorConfig {
            max_batch_records: 300,
            ..ProcessorConfig::default()
        });
        let progress = processor.progress();
        let stop = CancellationToken::new();
        let log: Arc<dyn Log> = wal;
        let store: Arc<dyn BatchSink> = store;
        let task = tokio::spawn(processor.run(log, store, stop.clone()));
        (progress, stop, task)
    };

    let (progress, stop, task) = run(Arc::clone(&wal), Arc::clone(&store));
    for chunk in specs[..1_200].chunks(100) {
        wal.append(append_specs(chunk)).await.expect("append");
    }
    wait_committed(&progress, &wal).await;
    stop.cancel();
    task.await.expect("join").expect("processor");

    // Restart on the same log and store: the rest goes through, nothing twice, and the
    // retries of the first 1,200 (same ids) are dropped by the rebuilt dedup window.
    let (progress, stop, task) = run(Arc::clone(&wal), Arc::clone(&store));
    for chunk in specs[1_200..].chunks(100) {
        wal.append(append_specs(chunk)).await.expect("append");
    }
    wal.append(append_specs(&specs[..300]))
        .await
        .expect("retries");
    wait_committed(&progress, &wal).await;
    stop.cancel();
    task.await.expect("join").expect("processor");

    assert_eq!(totals(&store, "tenant-0").await, want);
    // The usage ledger per model of the day: the same events, each once.
    let mut rows = store
        .usage_export(ais_store::usage::UsageQuery {
            tenant: Some("tenant-0".to_string()),
            scope: "model".to_string(),
            from_day_ms: i64::MIN,
            to_day_ms: i64::MAX,
            filter: None,
        })
        .await
        .expect("usage");
    let mut usage: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    while let Some(chunk) = rows.recv().await {
        for row in chunk.expect("usage rows") {
            let entry = usage.entry(row.value.unwrap_or_default()).or_default();
            entry.0 += row.counts.requests;
            entry.1 += row.counts.input_tokens;
        }
    }
    let mut want_usage: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for ((model, _), (requests, tokens)) in &want {
        let entry = want_usage.entry(model.clone()).or_default();
        entry.0 += requests;
        entry.1 += tokens;
    }
    assert_eq!(usage, want_usage);
    assert!(
        wal.segment_files().len() <= 2,
        "consumed segments released: {:?}",
        wal.segment_files()
    );
}
