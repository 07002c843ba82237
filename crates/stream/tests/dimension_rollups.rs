//! Dimension rollups end to end on both engines: events through the WAL and the stream
//! processor into SQLite (and Parquet), or into ClickHouse (a fresh database on the
//! server named by `AIS_TEST_CLICKHOUSE`), then breakdowns by every rolled-up
//! dimension, answered from the rollups where they cover the query and from a scan of
//! raw events always, each equal to brute force over what was sent. The events come
//! out of order, with retries and late arrivals, across an hour boundary; the checks
//! run after a restart, after compaction and after retention, with a bound large
//! enough never to overflow and one so small that most minutes do.
//!
//! Without `AIS_TEST_CLICKHOUSE` the ClickHouse walks say so and run nothing; with
//! `CI=true` that is a failure.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ais_log::wal::{Wal, WalConfig};
use ais_log::{Log, RecordBatch};
use ais_model::dead_letter::{DeadLetter, DeadLetterError, DeadLetterSink};
use ais_model::dimension::{Dimension, Filter, Filters};
use ais_model::time::{minute_floor, ManualClock, MINUTE_MS};
use ais_model::{wire, Event, EventId, Status};
use ais_rollup::breakdown::{GroupKey, OrderBy};
use ais_rollup::dimensions::DimensionRollupConfig;
use ais_rollup::RollupPartial;
use ais_store::clickhouse::{ClickhouseConfig, ClickhouseStore};
use ais_store::prelude::*;
use ais_store::raw::file::{hour_of, HOUR_MS};
use ais_store::sqlite::SqliteStore;
use ais_store::{BreakdownQuery, Retention};
use ais_stream::{Processor, ProcessorConfig};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

/// 2026-11-22T10:00:00Z. Events fall from 10:50 to 11:10, across the hour.
const T0: i64 = 1_795_341_600_000;
const FIRST_MS: i64 = T0 + 50 * MINUTE_MS;
const SPAN_MS: i64 = 20 * MINUTE_MS;
const TENANTS: [&str; 2] = ["a", "b"];

/// (tenant, event), with client ids: a retry repeats one.
type Sent = (&'static str, Event<'static>);

fn random_events(rng: &mut StdRng, count: usize) -> Vec<Sent> {
    (0..count)
        .map(|n| {
            let mut event = Event::new(
                format!("m{}", rng.random_range(0..3u8)),
                EventId::Client(Cow::Owned(format!("id-{n}"))),
                FIRST_MS + rng.random_range(0..SPAN_MS),
                f64::from(rng.random_range(1..2_000u32)),
            );
            let endpoint = rng.random_range(0..8u8);
            event.endpoint = (endpoint < 7).then(|| Cow::Owned(format!("/e{endpoint}")));
            if rng.random_bool(0.7) {
                let feature = rng.random_range(0..4u8);
                event.attributes =
                    vec![(Cow::Borrowed("feature"), Cow::Owned(format!("f{feature}")))];
            }
            if rng.random_bool(0.1) {
                event.status = Status::Error;
                event.error_type = rng.random_bool(0.5).then_some(Cow::Borrowed("timeout"));
            }
            event.ttft_ms = rng
                .random_bool(0.5)
                .then(|| f64::from(rng.random_range(1..500u32)));
            event.input_tokens = Some(rng.random_range(0..5_000));
            event.cost_micros = Some(rng.random_range(0..100_000));
            event.user_id = Some(Cow::Owned(format!("u{}", rng.random_range(0..50u8))));
            (TENANTS[n % 2], event)
        })
        .collect()
}

fn dimensions(max_values_per_minute: usize) -> DimensionRollupConfig {
    DimensionRollupConfig {
        dimensions: ["endpoint", "attr.feature", "status", "model", "error_type"]
            .iter()
            .map(|name| Dimension::parse(name).expect("a dimension"))
            .collect(),
        max_values_per_minute,
    }
}

/// Where the pipeline commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EngineKind {
    Sqlite,
    Clickhouse,
}

/// How to open the engine's store again.
enum Engine {
    Sqlite,
    Clickhouse(ClickhouseConfig),
}

struct Pipeline {
    dir: tempfile::TempDir,
    wal: Arc<Wal>,
    engine: Engine,
    store: Arc<dyn Store>,
    clock: ManualClock,
    config: DimensionRollupConfig,
}

/// A fresh ClickHouse database on the server named by `AIS_TEST_CLICKHOUSE`, when
/// there is one.
async fn clickhouse_database() -> Option<ClickhouseConfig> {
    let Ok(url) = std::env::var("AIS_TEST_CLICKHOUSE") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "AIS_TEST_CLICKHOUSE is not set under CI=true: the ClickHouse engine must be tested"
        );
        eprintln!("AIS_TEST_CLICKHOUSE is not set: the ClickHouse walk runs nothing");
        return None;
    };
    static DATABASES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let database = format!(
        "ais_stream_dimensions_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let config =
        ClickhouseConfig::from_url(&format!("{url}/?database={database}")).expect("ClickHouse URL");
    ais_store::clickhouse::migrate(&config)
        .await
        .expect("migrate ClickHouse");
    Some(config)
}

impl Pipeline {
    /// `None`: the engine is not available here (and not required).
    async fn new(kind: EngineKind, config: DimensionRollupConfig) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal = Arc::new(Wal::open(WalConfig::new(dir.path().join("wal"))).expect("wal"));
        let engine = match kind {
            EngineKind::Sqlite => Engine::Sqlite,
            EngineKind::Clickhouse => Engine::Clickhouse(clickhouse_database().await?),
        };
        let store = Self::open(&engine, &dir).await;
        Some(Self {
            dir,
            wal,
            engine,
            store,
            // Before the events: the rollups cover every minute they fall in.
            clock: ManualClock::at(T0 - HOUR_MS),
            config,
        })
    }

    async fn open(engine: &Engine, dir: &tempfile::TempDir) -> Arc<dyn Store> {
        match engine {
            Engine::Sqlite => {
                Arc::new(SqliteStore::open(&dir.path().join("s.sqlite")).expect("store"))
            }
            Engine::Clickhouse(config) => Arc::new(
                ClickhouseStore::connect(config.clone())
                    .await
                    .expect("connect ClickHouse"),
            ),
        }
    }

    /// Compaction with every hour of the walk final: raw files, and the dimension
    /// rollups' minute rows into hour rows.
    async fn compact_final_hours(&self) {
        self.store
            .compact(T0 + 3 * HOUR_MS)
            .await
            .expect("compaction");
    }

    /// Sends `events` through a processor started for them (a restart each call) and
    /// waits until it committed everything in the log.
    async fn process(&self, events: &[Sent]) {
        let mut processor = Processor::with_clock(
            ProcessorConfig {
                max_batch_records: 97,
                dimensions: self.config.clone(),
                ..ProcessorConfig::default()
            },
            Arc::new(self.clock.clone()),
        );
        if !self.store.keeps_dead_letters() {
            processor = processor.with_dead_letter_sink(Arc::new(NoLetters));
        }
        let progress = processor.progress();
        let stop = CancellationToken::new();
        let log: Arc<dyn Log> = self.wal.clone();
        let store: Arc<dyn BatchSink> = self.store.clone();
        let task = tokio::spawn(processor.run(log, store, stop.clone()));
        for chunk in events.chunks(50) {
            let mut batch = RecordBatch::default();
            for (tenant, event) in chunk {
                let mut bytes = Vec::new();
                wire::encode_into(tenant, event, &mut bytes);
                batch.push(&bytes);
            }
            self.wal.append(batch).await.expect("append");
        }
        ais_testkit::eventually_async("the processor to commit everything in the log", || async {
            match progress.lag_records(&self.wal.status().end_offsets) {
                0 => Ok(()),
                lag => Err(format!("{lag} records behind")),
            }
        })
        .await;
        stop.cancel();
        task.await.expect("join").expect("processor");
    }

    /// Reopens the store, as a restarted server does.
    async fn reopen(&mut self) {
        self.store = Self::open(&self.engine, &self.dir).await;
    }
}

/// Where dead letters would go for an engine that keeps none: every record of the walk
/// is valid, so one arriving fails the walk.
struct NoLetters;

#[async_trait::async_trait]
impl DeadLetterSink for NoLetters {
    async fn deliver(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
        panic!("the walk sends only valid records, yet got dead letters: {letters:?}");
    }
}

/// (requests, errors, cost, input tokens) per group.
type Sums = (u64, u64, u64, u64);

fn sums_of(partial: &RollupPartial) -> Sums {
    (
        partial.requests,
        partial.errors,
        partial.cost_micros,
        partial.input_tokens,
    )
}

fn groups_of(
    grouper: ais_rollup::breakdown::Grouper,
) -> (BTreeMap<GroupKey, RollupPartial>, RollupPartial) {
    let ranked = grouper.rank(OrderBy::Requests, false, 10_000);
    assert!(ranked.other.is_none(), "every group is in the top");
    (ranked.groups.into_iter().collect(), ranked.total)
}

/// What every check compares: each group's sums, and the total's.
fn summed(
    groups: &BTreeMap<GroupKey, RollupPartial>,
    total: &RollupPartial,
) -> (BTreeMap<GroupKey, Sums>, Sums) {
    (
        groups
            .iter()
            .map(|(key, partial)| (key.clone(), sums_of(partial)))
            .collect(),
        sums_of(total),
    )
}

/// Checks every breakdown by every rolled-up dimension against brute force over
/// `kept` (the events the store should count). Answers how many were answered from
/// the rollups and how many scanned.
/// `merged_from`: hours from this one on have their minute rows merged into hour rows
/// (`None`: no hour is).
/// Ranges starting before `from_at_least` are left out.
async fn check(
    pipeline: &Pipeline,
    kept: &[Sent],
    merged_from: Option<i64>,
    from_at_least: i64,
) -> (usize, usize) {
    let config = &pipeline.config;
    let ranges = [
        (FIRST_MS, FIRST_MS + SPAN_MS),
        (FIRST_MS + 7_123, FIRST_MS + SPAN_MS - 13_456),
        (T0 + 58 * MINUTE_MS + 1, T0 + 62 * MINUTE_MS + 59_999),
        (T0 + 61 * MINUTE_MS, T0 + 62 * MINUTE_MS),
        (T0 + 61 * MINUTE_MS + 5, T0 + 61 * MINUTE_MS + 50_000),
        (T0, T0 + 120 * MINUTE_MS),
        (T0 + 60 * MINUTE_MS, T0 + 120 * MINUTE_MS),
        (T0 + 30 * MINUTE_MS + 1, T0 + 125 * MINUTE_MS),
    ];
    let (mut rolled_up, mut scanned) = (0, 0);
    for dimension in &config.dimensions {
        let name = dimension.name();
        let sample = kept
            .iter()
            .find_map(|(tenant, event)| dimension.value(tenant, event).map(str::to_string))
            .expect("some event has the dimension");
        let filters = [
            Filters::default(),
            Filters(vec![
                Filter::parse(&format!("{name}:{sample}|null")).expect("filter")
            ]),
            Filters(vec![
                Filter::parse(&format!("{name}:!{sample}")).expect("filter")
            ]),
        ];
        for tenant in [Some("a"), Some("b"), None] {
            for &(from_ms, to_ms) in ranges.iter().filter(|(from, _)| *from >= from_at_least) {
                for filters in &filters {
                    let query = BreakdownQuery {
                        tenant: tenant.map(str::to_string),
                        from_ms,
                        to_ms,
                        by: vec![dimension.clone()],
                        filters: filters.clone(),
                        step_ms: None,
                        max_groups: 10_000,
                        deadline: Instant::now() + Duration::from_secs(60),
                    };
                    let what =
                        format!("{name} of {tenant:?} over [{from_ms}, {to_ms}) with {filters:?}, hours merged from {merged_from:?}");
                    // Brute force.
                    let in_scope: Vec<&Sent> = kept
                        .iter()
                        .filter(|(t, event)| {
                            tenant.is_none_or(|wanted| wanted == *t)
                                && event.timestamp_ms >= from_ms
                                && event.timestamp_ms < to_ms
                        })
                        .collect();
                    let mut want: BTreeMap<GroupKey, Sums> = BTreeMap::new();
                    let mut want_total: Sums = (0, 0, 0, 0);
                    for (t, event) in in_scope.iter().copied() {
                        if !filters.matches(t, event) {
                            continue;
                        }
                        let mut partial = RollupPartial::new();
                        partial.add(event, false);
                        let sums = sums_of(&partial);
                        let key = vec![dimension.value(t, event).map(str::to_string)];
                        let entry = want.entry(key).or_default();
                        *entry = (
                            entry.0 + sums.0,
                            entry.1 + sums.1,
                            entry.2 + sums.2,
                            entry.3 + sums.3,
                        );
                        want_total = (
                            want_total.0 + sums.0,
                            want_total.1 + sums.1,
                            want_total.2 + sums.2,
                            want_total.3 + sums.3,
                        );
                    }
                    let (scan_groups, scan_total) =
                        groups_of(pipeline.store.breakdown(query.clone()).await.expect("scan"));
                    assert_eq!(
                        summed(&scan_groups, &scan_total),
                        (want.clone(), want_total),
                        "scan: {what}"
                    );

                    // The rollups answer exactly when no minute they would read overflowed:
                    // a (tenant, minute) in range with more distinct values than the bound.
                    let from_whole = from_ms.div_euclid(MINUTE_MS) * MINUTE_MS
                        + if from_ms % MINUTE_MS == 0 {
                            0
                        } else {
                            MINUTE_MS
                        };
                    let to_whole = to_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
                    // A partial hour at either end whose minutes were merged is scanned.
                    let merged = |ms: i64| merged_from.is_some_and(|from| hour_of(ms) >= from);
                    let from_whole = if from_whole % HOUR_MS != 0 && merged(from_whole) {
                        hour_of(from_whole) + HOUR_MS
                    } else {
                        from_whole
                    };
                    let to_whole = if to_whole % HOUR_MS != 0 && merged(to_whole) {
                        hour_of(to_whole)
                    } else {
                        to_whole
                    };
                    let mut values: BTreeMap<(&str, i64), BTreeSet<&str>> = BTreeMap::new();
                    for (t, event) in pipeline_sent_in(kept, tenant, from_whole, to_whole) {
                        let minute = minute_floor(event.timestamp_ms);
                        let set = values.entry((t, minute)).or_default();
                        if let Some(value) = dimension.value(t, event) {
                            set.insert(value);
                        }
                    }
                    let overflowed = values
                        .values()
                        .any(|set| set.len() > config.max_values_per_minute);
                    let answerable = from_whole < to_whole;
                    let rollup = pipeline
                        .store
                        .rolled_up_breakdown(query)
                        .await
                        .expect("rollup");
                    match rollup {
                        Some(grouper) => {
                            assert!(
                                answerable && !overflowed,
                                "answered from rollups past an overflow or gap: {what}"
                            );
                            let (groups, total) = groups_of(grouper);
                            assert_eq!(
                                summed(&groups, &total),
                                (want, want_total),
                                "rollup: {what}"
                            );
                            // Sketches merge the same whatever the order.
                            for (key, partial) in &groups {
                                let scanned = &scan_groups[key];
                                assert_eq!(
                                    partial.latency_quantiles(),
                                    scanned.latency_quantiles(),
                                    "p50/p95/p99 of {key:?}: {what}"
                                );
                                assert_eq!(
                                    partial.ttft_quantiles(),
                                    scanned.ttft_quantiles(),
                                    "ttft of {key:?}: {what}"
                                );
                                assert_eq!(
                                    partial.unique_users(),
                                    scanned.unique_users(),
                                    "users of {key:?}: {what}"
                                );
                            }
                            rolled_up += 1;
                        }
                        None => {
                            assert!(
                                !answerable || overflowed,
                                "not answered from rollups that cover it: {what}"
                            );
                            scanned += 1;
                        }
                    }
                }
            }
        }
    }
    (rolled_up, scanned)
}

/// The kept events of `tenant` (or all) in `[from_ms, to_ms)`.
fn pipeline_sent_in<'a>(
    kept: &'a [Sent],
    tenant: Option<&'a str>,
    from_ms: i64,
    to_ms: i64,
) -> impl Iterator<Item = (&'a str, &'a Event<'static>)> + 'a {
    kept.iter()
        .filter(move |(t, event)| {
            tenant.is_none_or(|wanted| wanted == *t)
                && event.timestamp_ms >= from_ms
                && event.timestamp_ms < to_ms
        })
        .map(|(t, event)| (*t, event))
}

/// Sends, restarts, compacts and retains, checking everything after each step.
/// `None` when the engine is not available here.
async fn walk(
    kind: EngineKind,
    max_values_per_minute: usize,
    seed: u64,
) -> Option<Vec<(usize, usize)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events = random_events(&mut rng, 3_000);
    events.shuffle(&mut rng);
    let mut pipeline = Pipeline::new(kind, dimensions(max_values_per_minute)).await?;
    // Hours whose minute rows compaction merged, from this one on.
    let merged = |from: i64| pipeline_merges(kind).then_some(from);
    let mut checks = Vec::new();

    let (first, rest) = events.split_at(2_000);
    pipeline.process(first).await;
    checks.push(check(&pipeline, first, None, i64::MIN).await);

    // A restart hours later: the rest arrive late (their minutes are final), with
    // retries of events already counted.
    pipeline.reopen().await;
    pipeline.clock.advance(Duration::from_secs(4 * 3600));
    let mut second: Vec<Sent> = rest.to_vec();
    second.extend(first.choose_multiple(&mut rng, 300).cloned());
    second.shuffle(&mut rng);
    pipeline.process(&second).await;
    let mut seen = HashSet::new();
    let kept: Vec<Sent> = first
        .iter()
        .chain(&second)
        .filter(|(tenant, event)| seen.insert((*tenant, format!("{:?}", event.event_id))))
        .cloned()
        .collect();
    assert_eq!(kept.len(), events.len(), "retries are duplicates");
    checks.push(check(&pipeline, &kept, None, i64::MIN).await);

    // Compaction: raw files, and the dimension rollups' final hours into hour rows.
    pipeline.compact_final_hours().await;
    checks.push(check(&pipeline, &kept, merged(T0), i64::MIN).await);

    // Late events into the merged hours: minute rows beside the hour rows, until a
    // later pass merges them too.
    let late: Vec<Sent> = random_events(&mut rng, 400)
        .into_iter()
        .enumerate()
        .map(|(n, (tenant, mut event))| {
            event.event_id = EventId::Client(Cow::Owned(format!("late-{n}")));
            (tenant, event)
        })
        .collect();
    pipeline.process(&late).await;
    let mut kept = kept;
    kept.extend(late);
    checks.push(check(&pipeline, &kept, merged(T0), i64::MIN).await);
    pipeline.compact_final_hours().await;
    checks.push(check(&pipeline, &kept, merged(T0), i64::MIN).await);

    // Retention takes the hour before 11:00, raw events and dimension rollups alike.
    let cut = T0 + 60 * MINUTE_MS;
    pipeline
        .store
        .apply_retention(Retention {
            rollups_before_ms: cut,
            raw_before_ms: cut,
            payloads_before_ms: cut,
            dedup_horizon_ms: i64::MAX,
        })
        .await
        .expect("retention");
    let retained: Vec<Sent> = kept
        .into_iter()
        .filter(|(_, event)| event.timestamp_ms >= cut)
        .collect();
    // ClickHouse drops raw events by whole days (its partitions), and this day has not
    // ended: there, ranges after the cut only, where raw events and rollups agree.
    let from_at_least = match kind {
        EngineKind::Sqlite => i64::MIN,
        EngineKind::Clickhouse => cut,
    };
    checks.push(check(&pipeline, &retained, merged(cut), from_at_least).await);
    Some(checks)
}

/// Whether compaction merges the dimension rollups' final hours into hour rows
/// (ClickHouse keeps its rows per batch).
fn pipeline_merges(kind: EngineKind) -> bool {
    kind == EngineKind::Sqlite
}

/// Every check of a walk with a bound that never overflows answered from rollups.
async fn rollups_answer_every_step(kind: EngineKind) {
    let Some(checks) = walk(kind, 1_000, 7).await else {
        return;
    };
    for (step, (rolled_up, _)) in checks.iter().enumerate() {
        assert!(
            *rolled_up > 0,
            "step {step} answered nothing from rollups: {checks:?}"
        );
    }
}

/// With a bound of 2 values a minute, every step both scans and rolls up.
async fn tiny_bound_takes_both_paths(kind: EngineKind) {
    let Some(checks) = walk(kind, 2, 11).await else {
        return;
    };
    for (step, (rolled_up, scanned)) in checks.iter().enumerate() {
        assert!(
            *rolled_up > 0 && *scanned > 0,
            "step {step} took only one path: {checks:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakdowns_from_rollups_equal_brute_force_through_restarts_compaction_and_retention() {
    rollups_answer_every_step(EngineKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_tiny_bound_overflowed_ranges_scan_and_the_rest_still_roll_up() {
    tiny_bound_takes_both_paths(EngineKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_breakdowns_from_rollups_equal_brute_force_through_restarts_and_retention() {
    rollups_answer_every_step(EngineKind::Clickhouse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_with_a_tiny_bound_overflowed_ranges_scan_and_the_rest_still_roll_up() {
    tiny_bound_takes_both_paths(EngineKind::Clickhouse).await;
}
