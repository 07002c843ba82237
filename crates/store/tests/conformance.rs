//! One suite, every engine: the same scenarios run against the embedded store (SQLite
//! and Parquet in a temp dir) and ClickHouse (a fresh database on the server named by
//! `AIS_TEST_CLICKHOUSE`). Expected values are computed here from the events the test
//! commits, never read back from an engine.
//!
//! Without `AIS_TEST_CLICKHOUSE` the ClickHouse half says so and runs nothing; with
//! `CI=true` that is a failure. Without the `clickhouse` feature only the embedded
//! engine is built and tested (`cargo test --workspace` has the feature on).

use std::borrow::Cow;
use std::collections::BTreeMap;
#[cfg(feature = "clickhouse")]
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use ais_model::dimension::{Dimension, Filter, Filters};
use ais_model::event::dedup_hash;
use ais_model::time::minute_floor;
use ais_model::{wire, Event, EventId, Status};
use ais_rollup::breakdown::OrderBy;
use ais_rollup::usage::{UsageBatch, UsageConfig, UsageCounts, UsageKey, UsageScope};
use ais_rollup::RollupPartial;
#[cfg(feature = "clickhouse")]
use ais_store::clickhouse::{ClickhouseConfig, ClickhouseStore};
use ais_store::evaluation::{
    AnomalyQuery, AnomalyRecord, AnomalyState, EvaluationCommit, Resolution, ALL_TENANTS,
};
use ais_store::ledger::{LedgerCounts, LedgerKey, LedgerQuery};
use ais_store::outbox::{OutboxAlert, OutboxOutcome};
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::usage::{UsageOrder, UsageQuery, UsageRanking};
use ais_store::{
    BatchCommit, BreakdownQuery, DedupEntry, EventQuery, LoggedRecord, PayloadRead, PayloadSearch,
    Retention, RollupKey, RollupQuery, StoreError,
};
use bytes::Bytes;

/// One engine under test; holds what must live as long as the store.
struct Engine {
    name: &'static str,
    store: Arc<dyn Store>,
    /// The ClickHouse database, for a test that writes to it around the store.
    #[cfg_attr(not(feature = "clickhouse"), allow(dead_code))]
    database: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// Every engine available here, each empty.
async fn engines() -> Vec<Engine> {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = SqliteStore::open(&dir.path().join("s.sqlite")).expect("open sqlite");
    let mut engines = vec![Engine {
        name: "sqlite",
        store: Arc::new(sqlite),
        database: None,
        _dir: Some(dir),
    }];
    engines.extend(clickhouse_engine().await);
    engines
}

#[cfg(feature = "clickhouse")]
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// A fresh database on the server named by `AIS_TEST_CLICKHOUSE`, when there is one.
#[cfg(feature = "clickhouse")]
async fn clickhouse_engine() -> Option<Engine> {
    let Ok(url) = std::env::var("AIS_TEST_CLICKHOUSE") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "AIS_TEST_CLICKHOUSE is not set under CI=true: the ClickHouse engine must be tested"
        );
        eprintln!("AIS_TEST_CLICKHOUSE is not set: testing the embedded engine only");
        return None;
    };
    // A database per test: tests run in parallel and never see each other.
    let database = format!(
        "ais_conformance_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    let config =
        ClickhouseConfig::from_url(&format!("{url}/?database={database}")).expect("ClickHouse URL");
    ais_store::clickhouse::migrate(&config)
        .await
        .expect("migrate ClickHouse");
    let store = ClickhouseStore::connect(config)
        .await
        .expect("connect ClickHouse");
    Some(Engine {
        name: "clickhouse",
        store: Arc::new(store),
        database: Some(database),
        _dir: None,
    })
}

#[cfg(not(feature = "clickhouse"))]
async fn clickhouse_engine() -> Option<Engine> {
    eprintln!("built without the clickhouse feature: testing the embedded engine only");
    None
}

/// An event at `timestamp_ms` whose fields vary with `n`.
fn event(n: u64, model: &str, timestamp_ms: i64, client_id: bool) -> Event<'static> {
    let event_id = if client_id {
        EventId::Client(Cow::Owned(format!("id-{n}")))
    } else {
        EventId::Generated(0x0190_0000_0000_7000_8000_0000_0000_0000 | u128::from(n))
    };
    Event {
        input_tokens: Some(n % 7 * 100),
        output_tokens: Some(n % 5 * 10),
        cost_micros: Some(n * 13),
        status: if n.is_multiple_of(4) {
            Status::Error
        } else {
            Status::Ok
        },
        error_type: n.is_multiple_of(4).then_some(Cow::Borrowed("timeout")),
        user_id: Some(Cow::Owned(format!("user-{}", n % 6))),
        trace_id: Some(Cow::Owned(format!("trace-{}", n % 3))),
        ttft_ms: n.is_multiple_of(2).then_some(5.0 + n as f64),
        provider: Some(Cow::Borrowed("openai")),
        attributes: vec![(Cow::Borrowed("k"), Cow::Owned(format!("v{n}")))],
        ..Event::new(
            model.to_string(),
            event_id,
            timestamp_ms,
            100.0 + (n * 37 % 1000) as f64,
        )
    }
}

/// A batch built from events the way the stream builds one: partials per (tenant,
/// model, minute), dedup ids of client-set ids, the wire records with their offsets.
fn batch_of(
    partition: u32,
    first_offset: u64,
    watermark_ms: i64,
    events: &[(&str, Event<'static>)],
) -> BatchCommit {
    let mut partials: BTreeMap<RollupKey, RollupPartial> = BTreeMap::new();
    let mut dedup = Vec::new();
    let mut records = Vec::new();
    for (index, (tenant, event)) in events.iter().enumerate() {
        let key = RollupKey {
            tenant: tenant.to_string(),
            model: event.model.to_string(),
            minute_ms: minute_floor(event.timestamp_ms),
        };
        partials.entry(key).or_default().add(event, false);
        if let EventId::Client(id) = &event.event_id {
            dedup.push(DedupEntry {
                hash: dedup_hash(tenant, id),
                minute_ms: minute_floor(event.timestamp_ms),
            });
        }
        let mut bytes = Vec::new();
        wire::encode_into(tenant, event, &mut bytes);
        records.push(LoggedRecord {
            offset: first_offset + index as u64,
            bytes: Bytes::from(bytes),
        });
    }
    BatchCommit {
        partition,
        first_offset,
        next_offset: first_offset + events.len() as u64,
        watermark_ms,
        partials: partials.into_iter().collect(),
        dedup,
        events: records,
        dead_letters: Vec::new(),
        dimensions: Default::default(),
        ledger: ledger_of(events).into_iter().collect(),
        usage: usage_of(events, &UsageConfig::default()),
    }
}

/// The usage of `events` in `config`'s scopes, as the stream sums a batch.
fn usage_of(
    events: &[(&str, Event<'static>)],
    config: &UsageConfig,
) -> Vec<(UsageKey, UsageCounts)> {
    let mut usage = UsageBatch::new(config, events.len());
    for (tenant, event) in events {
        usage.add(tenant, event);
    }
    usage.into_entries()
}

/// The ledger of `events` all committed: each accepted and committed once, under its
/// tenant and hour.
fn ledger_of(events: &[(&str, Event<'static>)]) -> BTreeMap<LedgerKey, LedgerCounts> {
    let mut ledger: BTreeMap<LedgerKey, LedgerCounts> = BTreeMap::new();
    for (tenant, event) in events {
        let counts = ledger
            .entry(LedgerKey {
                tenant: tenant.to_string(),
                hour_ms: ais_store::ledger::hour_of(event.timestamp_ms),
            })
            .or_default();
        counts.accepted += 1;
        counts.committed += 1;
    }
    ledger
}

/// The engine's ledger of every tenant, summed over partitions.
async fn stored_ledger(store: &dyn Store) -> BTreeMap<LedgerKey, LedgerCounts> {
    let rows = store
        .ledger(LedgerQuery {
            tenant: None,
            from_ms: 0,
            to_ms: 4_000_000_000_000,
        })
        .await
        .expect("ledger");
    let mut ledger: BTreeMap<LedgerKey, LedgerCounts> = BTreeMap::new();
    for row in rows {
        ledger
            .entry(LedgerKey {
                tenant: row.tenant,
                hour_ms: row.hour_ms,
            })
            .or_default()
            .add(&row.counts);
    }
    ledger
}

/// The expected merged partial of each (model, minute) of `tenant`.
fn expected_rollups(
    tenant: &str,
    events: &[(&str, Event<'static>)],
) -> BTreeMap<(String, i64), RollupPartial> {
    let mut want: BTreeMap<(String, i64), RollupPartial> = BTreeMap::new();
    for (event_tenant, event) in events {
        if *event_tenant == tenant {
            want.entry((event.model.to_string(), minute_floor(event.timestamp_ms)))
                .or_default()
                .add(event, false);
        }
    }
    want
}

fn all_time(tenant: &str) -> RollupQuery {
    RollupQuery {
        tenant: tenant.to_string(),
        from_ms: 0,
        to_ms: 4_000_000_000_000,
        model: None,
    }
}

/// Asserts that the engine's rollups of `tenant` equal the merge of `events`.
async fn assert_rollups(engine: &Engine, tenant: &str, events: &[(&str, Event<'static>)]) {
    let want = expected_rollups(tenant, events);
    let rows = engine
        .store
        .rollups(all_time(tenant))
        .await
        .unwrap_or_else(|error| panic!("{}: rollups: {error}", engine.name));
    let got: Vec<(String, i64)> = rows
        .iter()
        .map(|row| (row.model.clone(), row.minute_ms))
        .collect();
    let want_keys: Vec<(String, i64)> = want.keys().cloned().collect();
    assert_eq!(got, want_keys, "{}: windows of {tenant}", engine.name);
    for row in rows {
        let expected = &want[&(row.model.clone(), row.minute_ms)];
        let context = format!("{} {tenant}/{}@{}", engine.name, row.model, row.minute_ms);
        assert_eq!(row.partial.requests, expected.requests, "{context}");
        assert_eq!(row.partial.errors, expected.errors, "{context}");
        assert_eq!(
            row.partial.errors_by_type, expected.errors_by_type,
            "{context}"
        );
        assert_eq!(row.partial.input_tokens, expected.input_tokens, "{context}");
        assert_eq!(
            row.partial.output_tokens, expected.output_tokens,
            "{context}"
        );
        assert_eq!(row.partial.cost_micros, expected.cost_micros, "{context}");
        assert_eq!(row.partial.late_events, expected.late_events, "{context}");
        assert_eq!(
            row.partial.latency_quantiles(),
            expected.latency_quantiles(),
            "{context}"
        );
        assert_eq!(
            row.partial.ttft_quantiles(),
            expected.ttft_quantiles(),
            "{context}"
        );
        assert_eq!(
            row.partial.unique_users(),
            expected.unique_users(),
            "{context}"
        );
    }
}

/// Every raw event of `tenant`.
fn all_events(tenant: &str) -> EventQuery {
    EventQuery {
        tenant: tenant.to_string(),
        from_ms: 0,
        to_ms: 4_000_000_000_000,
        trace_id: None,
        user_id: None,
        model: None,
        status: None,
        min_latency_ms: None,
        filters: Default::default(),
        limit: 1000,
        payloads: Default::default(),
    }
}

/// 2026-11-22T10:00:00Z.
const T0: i64 = 1_795_341_600_000;

#[tokio::test]
async fn batches_merge_per_window_and_move_the_position() {
    for engine in engines().await {
        assert!(engine
            .store
            .partition_states()
            .await
            .expect("states")
            .is_empty());
        let first: Vec<(&str, Event<'static>)> = (0..30)
            .map(|n| {
                (
                    if n % 3 == 0 { "b" } else { "a" },
                    event(n, "m1", T0 + n as i64 * 5_000, false),
                )
            })
            .collect();
        let second: Vec<(&str, Event<'static>)> = (30..50)
            .map(|n| {
                (
                    "a",
                    event(
                        n,
                        if n % 2 == 0 { "m1" } else { "m2" },
                        T0 + n as i64 * 3_000,
                        false,
                    ),
                )
            })
            .collect();
        engine
            .store
            .commit(batch_of(0, 0, T0, &first))
            .await
            .expect("first batch");
        engine
            .store
            .commit(batch_of(0, 30, T0 + 60_000, &second))
            .await
            .expect("second batch");
        // Another partition's position is its own.
        engine
            .store
            .commit(batch_of(3, 0, T0 - 5, &[]))
            .await
            .expect("idle partition");
        let all: Vec<(&str, Event<'static>)> = first.iter().chain(&second).cloned().collect();
        assert_rollups(&engine, "a", &all).await;
        assert_rollups(&engine, "b", &all).await;

        let filtered = engine
            .store
            .rollups(RollupQuery {
                model: Some("m2".to_string()),
                ..all_time("a")
            })
            .await
            .expect("filtered");
        assert!(filtered.iter().all(|row| row.model == "m2") && !filtered.is_empty());
        assert_eq!(
            engine
                .store
                .tenants(0, 4_000_000_000_000)
                .await
                .expect("tenants"),
            vec!["a", "b"],
            "{}",
            engine.name
        );
        let everyone = engine
            .store
            .rollups_all_tenants(0, 4_000_000_000_000)
            .await
            .expect("all tenants");
        let total: u64 = everyone.iter().map(|(_, row)| row.partial.requests).sum();
        assert_eq!(total, all.len() as u64, "{}", engine.name);

        let states: Vec<(u32, u64, i64)> = engine
            .store
            .partition_states()
            .await
            .expect("states")
            .iter()
            .map(|state| (state.partition, state.next_offset, state.watermark_ms))
            .collect();
        assert_eq!(
            states,
            vec![(0, 50, T0 + 60_000), (3, 0, T0 - 5)],
            "{}",
            engine.name
        );
    }
}

#[tokio::test]
async fn a_replayed_or_skipping_batch_is_refused_and_writes_nothing() {
    for engine in engines().await {
        let events: Vec<(&str, Event<'static>)> =
            (0..10).map(|n| ("a", event(n, "m", T0, true))).collect();
        engine
            .store
            .commit(batch_of(0, 0, T0, &events))
            .await
            .expect("first");
        let later: Vec<(&str, Event<'static>)> =
            (100..104).map(|n| ("a", event(n, "m", T0, true))).collect();
        for first in [0, 5, 11] {
            let error = engine
                .store
                .commit(batch_of(0, first, T0, &later))
                .await
                .expect_err("out of order");
            assert!(
                matches!(error, StoreError::OutOfOrder { expected: 10, .. }),
                "{}: {error}",
                engine.name
            );
        }
        assert_rollups(&engine, "a", &events).await;
        assert_eq!(
            stored_ledger(engine.store.as_ref()).await,
            ledger_of(&events),
            "{}: refused batches left nothing in the ledger",
            engine.name
        );
        assert_usage(&engine, &events).await;
        let raw = engine.store.events(all_events("a")).await.expect("events");
        assert_eq!(
            raw.len(),
            events.len(),
            "{}: refused batches left no raw events",
            engine.name
        );
        assert_eq!(
            engine
                .store
                .dedup_entries(i64::MIN)
                .await
                .expect("dedup")
                .len(),
            events.len(),
            "{}",
            engine.name
        );
        // An empty commit only moves the watermark.
        engine
            .store
            .commit(batch_of(0, 10, T0 + 99_000, &[]))
            .await
            .expect("idle commit");
        let state = engine.store.partition_states().await.expect("states")[0];
        assert_eq!((state.next_offset, state.watermark_ms), (10, T0 + 99_000));
    }
}

#[tokio::test]
async fn raw_events_and_dedup_ids_read_back_as_committed() {
    for engine in engines().await {
        let events: Vec<(&str, Event<'static>)> = (0..200)
            .map(|n| {
                let tenant = if n % 5 == 0 { "other" } else { "a" };
                let model = if n % 2 == 0 { "m1" } else { "m2" };
                (tenant, event(n, model, T0 + n as i64 * 15_000, n % 3 != 0))
            })
            .collect();
        for (index, chunk) in events.chunks(64).enumerate() {
            let first = index as u64 * 64;
            engine
                .store
                .commit(batch_of(1, first, T0, chunk))
                .await
                .expect("commit");
        }
        let mut want_ids: Vec<(u128, i64)> = events
            .iter()
            .filter_map(|(tenant, event)| match &event.event_id {
                EventId::Client(id) => {
                    Some((dedup_hash(tenant, id), minute_floor(event.timestamp_ms)))
                }
                EventId::Generated(_) => None,
            })
            .collect();
        let mut got_ids: Vec<(u128, i64)> = engine
            .store
            .dedup_entries(i64::MIN)
            .await
            .expect("dedup")
            .iter()
            .map(|entry| (entry.hash, entry.minute_ms))
            .collect();
        want_ids.sort_unstable();
        got_ids.sort_unstable();
        assert_eq!(got_ids, want_ids, "{}: dedup ids", engine.name);

        let base = EventQuery {
            from_ms: T0 + 400_000,
            to_ms: T0 + 3_000_000,
            ..all_events("a")
        };
        let queries = [
            base.clone(),
            EventQuery {
                limit: 7,
                ..base.clone()
            },
            EventQuery {
                trace_id: Some("trace-1".to_string()),
                ..base.clone()
            },
            EventQuery {
                user_id: Some("user-2".to_string()),
                model: Some("m1".to_string()),
                ..base.clone()
            },
            EventQuery {
                status: Some(Status::Error),
                ..base.clone()
            },
            EventQuery {
                min_latency_ms: Some(700.0),
                ..base.clone()
            },
        ];
        for query in queries {
            let mut want: Vec<(i64, String)> = events
                .iter()
                .filter(|(tenant, event)| {
                    *tenant == query.tenant
                        && event.timestamp_ms >= query.from_ms
                        && event.timestamp_ms < query.to_ms
                        && query
                            .trace_id
                            .as_deref()
                            .is_none_or(|t| event.trace_id.as_deref() == Some(t))
                        && query
                            .user_id
                            .as_deref()
                            .is_none_or(|u| event.user_id.as_deref() == Some(u))
                        && query.model.as_deref().is_none_or(|m| event.model == m)
                        && query.status.is_none_or(|s| event.status == s)
                        && query.min_latency_ms.is_none_or(|l| event.latency_ms >= l)
                })
                .map(|(_, event)| (event.timestamp_ms, event.latency_ms.to_string()))
                .collect();
            want.sort_by(|a, b| b.cmp(a));
            want.truncate(query.limit);
            let found = engine.store.events(query.clone()).await.expect("events");
            let got: Vec<(i64, String)> = found
                .iter()
                .map(|stored| {
                    (
                        stored.event.timestamp_ms,
                        stored.event.latency_ms.to_string(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{}: {query:?}", engine.name);
            assert!(
                !got.is_empty(),
                "{}: the query matches something: {query:?}",
                engine.name
            );
        }
        // One event read back whole, every field.
        let (_, sample) = &events[7];
        let found = engine
            .store
            .events(EventQuery {
                from_ms: sample.timestamp_ms,
                to_ms: sample.timestamp_ms + 1,
                ..base
            })
            .await
            .expect("one event");
        assert_eq!(found.len(), 1, "{}", engine.name);
        assert_eq!(found[0].tenant, "a");
        let mut want = sample.clone();
        if let EventId::Client(id) = &sample.event_id {
            want.event_id = EventId::Client(Cow::Owned(id.to_string()));
        }
        assert_eq!(found[0].event, want, "{}", engine.name);
    }
}

#[tokio::test]
async fn anomalies_are_stored_once_resolved_and_scoped_by_tenant() {
    for engine in engines().await {
        let store = &engine.store;
        assert!(store.evaluation_state().await.expect("state").is_none());
        let anomaly = |tenant: &str, window_start_ms: i64| AnomalyRecord {
            location: None,
            tenant: tenant.to_string(),
            model: "m".to_string(),
            detector: "latency_zscore".to_string(),
            metric: "latency_p95".to_string(),
            window_start_ms,
            observed: 4000.0,
            baseline: 800.0,
            score: 40.0,
            state: AnomalyState::Firing,
            resolved_window_ms: None,
        };
        let fired = EvaluationCommit {
            next_window_ms: 120_000,
            state: b"state-1".to_vec(),
            fired: vec![anomaly("a", 60_000), anomaly(ALL_TENANTS, 60_000)],
            resolved: Vec::new(),
            outbox: Vec::new(),
            outbox_limit: 100,
        };
        store
            .commit_evaluation(fired.clone())
            .await
            .expect("commit");
        // A replayed pass stores nothing twice.
        store.commit_evaluation(fired).await.expect("replay");
        let all = AnomalyQuery {
            tenant: None,
            from_ms: 0,
            to_ms: 1_000_000,
            model: None,
            limit: None,
        };
        assert_eq!(
            store.anomalies(all.clone()).await.expect("all").len(),
            2,
            "{}",
            engine.name
        );
        // A limit keeps the first rows of the order: the cross-tenant "*" sorts first.
        let limited = store
            .anomalies(AnomalyQuery {
                limit: Some(1),
                ..all.clone()
            })
            .await
            .expect("limited");
        assert_eq!(
            limited,
            vec![anomaly(ALL_TENANTS, 60_000)],
            "{}",
            engine.name
        );
        let a_only = store
            .anomalies(AnomalyQuery {
                tenant: Some("a".to_string()),
                ..all.clone()
            })
            .await
            .expect("a");
        assert_eq!(a_only, vec![anomaly("a", 60_000)], "{}", engine.name);
        assert!(store
            .anomalies(AnomalyQuery {
                tenant: Some("b".to_string()),
                ..all.clone()
            })
            .await
            .expect("b")
            .is_empty());
        store
            .commit_evaluation(EvaluationCommit {
                next_window_ms: 300_000,
                state: b"state-2".to_vec(),
                fired: Vec::new(),
                resolved: vec![Resolution {
                    location: None,
                    tenant: "a".to_string(),
                    model: "m".to_string(),
                    detector: "latency_zscore".to_string(),
                    window_start_ms: 240_000,
                }],
                outbox: Vec::new(),
                outbox_limit: 100,
            })
            .await
            .expect("resolve");
        let a_only = store
            .anomalies(AnomalyQuery {
                tenant: Some("a".to_string()),
                ..all
            })
            .await
            .expect("a");
        assert_eq!(a_only[0].state, AnomalyState::Resolved, "{}", engine.name);
        assert_eq!(a_only[0].resolved_window_ms, Some(240_000));
        assert_eq!(
            store.evaluation_state().await.expect("state"),
            Some((300_000, b"state-2".to_vec())),
            "{}",
            engine.name
        );
    }
}

#[tokio::test]
async fn anomalies_of_locations_are_stored_once_per_location_and_read_with_the_models() {
    use ais_store::evaluation::Location;
    for engine in engines().await {
        let store = &engine.store;
        let anomaly = |tenant: &str, location: Option<Location>| AnomalyRecord {
            tenant: tenant.to_string(),
            model: if location.is_some() { "*" } else { "m" }.to_string(),
            location,
            detector: "latency_p95_zscore".to_string(),
            metric: "latency_p95".to_string(),
            window_start_ms: 60_000,
            observed: 4000.0,
            baseline: 800.0,
            score: 40.0,
            state: AnomalyState::Firing,
            resolved_window_ms: None,
        };
        let chat = Some(Location::new("endpoint", "/chat"));
        let search = Some(Location::new("endpoint", "/search"));
        // One detector, one window: a model's anomaly and two locations' are three.
        let fired = EvaluationCommit {
            next_window_ms: 120_000,
            state: b"state-1".to_vec(),
            fired: vec![
                anomaly("a", None),
                anomaly("a", chat.clone()),
                anomaly("a", search.clone()),
                anomaly("b", chat.clone()),
            ],
            resolved: Vec::new(),
            outbox: Vec::new(),
            outbox_limit: 100,
        };
        store
            .commit_evaluation(fired.clone())
            .await
            .expect("commit");
        store.commit_evaluation(fired).await.expect("replay");
        let of_a = AnomalyQuery {
            tenant: Some("a".to_string()),
            from_ms: 0,
            to_ms: 1_000_000,
            model: None,
            limit: None,
        };
        assert_eq!(
            store.anomalies(of_a.clone()).await.expect("a"),
            vec![
                anomaly("a", chat.clone()),
                anomaly("a", search.clone()),
                anomaly("a", None),
            ],
            "{}: stored once each, tenant a's only, in the read order",
            engine.name
        );
        // Resolving /chat of tenant a resolves that location alone.
        store
            .commit_evaluation(EvaluationCommit {
                next_window_ms: 300_000,
                state: b"state-2".to_vec(),
                fired: Vec::new(),
                resolved: vec![Resolution {
                    tenant: "a".to_string(),
                    model: "*".to_string(),
                    location: chat.clone(),
                    detector: "latency_p95_zscore".to_string(),
                    window_start_ms: 240_000,
                }],
                outbox: Vec::new(),
                outbox_limit: 100,
            })
            .await
            .expect("resolve");
        let states: Vec<(Option<Location>, AnomalyState)> = store
            .anomalies(of_a.clone())
            .await
            .expect("a")
            .into_iter()
            .map(|record| (record.location, record.state))
            .collect();
        assert_eq!(
            states,
            vec![
                (chat.clone(), AnomalyState::Resolved),
                (search.clone(), AnomalyState::Firing),
                (None, AnomalyState::Firing),
            ],
            "{}",
            engine.name
        );
        let of_b = store
            .anomalies(AnomalyQuery {
                tenant: Some("b".to_string()),
                ..of_a.clone()
            })
            .await
            .expect("b");
        assert_eq!(of_b, vec![anomaly("b", chat.clone())], "{}", engine.name);
        let limited = store
            .anomalies(AnomalyQuery {
                tenant: None,
                limit: Some(2),
                ..of_a
            })
            .await
            .expect("limited");
        assert_eq!(limited.len(), 2, "{}", engine.name);
    }
}

#[tokio::test]
async fn dimension_rollups_of_windows_are_read_merged_per_group_for_the_evaluator() {
    use ais_rollup::dimensions::DimensionValue;
    for engine in engines().await {
        let at = |n: u64, tenant: &'static str, minute: i64| {
            let endpoint = match n % 3 {
                0 => None,
                1 => Some(Cow::Borrowed("/chat")),
                _ => Some(Cow::Borrowed("/search")),
            };
            (
                tenant,
                Event {
                    endpoint,
                    ..event(n, "m", T0 + minute * 60_000 + n as i64, false)
                },
            )
        };
        let first: Vec<_> = (0..12).map(|n| at(n, "a", 0)).collect();
        let second: Vec<_> = (12..20)
            .map(|n| at(n, "a", 0))
            .chain((20..26).map(|n| at(n, "b", 1)))
            .chain((26..29).map(|n| at(n, "a", 2)))
            .collect();
        // Two batches write groups of the same minute: the read merges them.
        for (first_offset, events) in [(0, &first), (first.len() as u64, &second)] {
            engine
                .store
                .commit(with_endpoint_rollups(
                    batch_of(0, first_offset, T0, events),
                    events,
                ))
                .await
                .expect("commit");
        }
        let mut want: BTreeMap<(i64, String, DimensionValue), (u64, u64, u64)> = BTreeMap::new();
        for (tenant, event) in first.iter().chain(&second) {
            let minute = minute_floor(event.timestamp_ms);
            if minute >= T0 + 2 * 60_000 {
                continue;
            }
            let group = event
                .endpoint
                .as_ref()
                .map_or(DimensionValue::Missing, |value| {
                    DimensionValue::Value(value.to_string())
                });
            let sums = want.entry((minute, tenant.to_string(), group)).or_default();
            sums.0 += 1;
            sums.1 += u64::from(event.status == Status::Error);
            sums.2 += event.cost_micros.unwrap_or(0);
        }
        let endpoint = vec!["endpoint".to_string()];
        let read = engine
            .store
            .dimension_windows(&endpoint, T0, T0 + 2 * 60_000)
            .await
            .expect("read");
        let got: BTreeMap<(i64, String, DimensionValue), (u64, u64, u64)> = read
            .into_iter()
            .map(|window| {
                assert_eq!(window.dimension, "endpoint");
                (
                    (window.minute_ms, window.tenant, window.group),
                    (
                        window.partial.requests,
                        window.partial.errors,
                        window.partial.cost_micros,
                    ),
                )
            })
            .collect();
        assert_eq!(got.len(), 6, "{}: a's three groups, b's three", engine.name);
        assert_eq!(got, want, "{}", engine.name);
        let other = vec!["region".to_string()];
        assert!(engine
            .store
            .dimension_windows(&other, T0, T0 + 3 * 60_000)
            .await
            .expect("read")
            .is_empty());
        assert!(engine
            .store
            .dimension_windows(&[], T0, T0 + 3 * 60_000)
            .await
            .expect("read")
            .is_empty());
    }
}

#[tokio::test]
async fn retention_deletes_older_windows_and_whole_days_of_raw_events() {
    const DAY: i64 = 86_400_000;
    for engine in engines().await {
        // Three days of events, one batch.
        let events: Vec<(&str, Event<'static>)> = (0..6)
            .map(|n| ("a", event(n, "m", T0 + (n as i64 / 2) * DAY, false)))
            .collect();
        engine
            .store
            .commit(batch_of(0, 0, T0, &events))
            .await
            .expect("commit");
        let day_start = T0 - T0.rem_euclid(DAY);
        engine
            .store
            .apply_retention(Retention {
                rollups_before_ms: T0 + DAY,
                // Everything of the first day, nothing of the second.
                raw_before_ms: day_start + DAY + 1,
                payloads_before_ms: day_start + DAY + 1,
                dedup_horizon_ms: 3_600_000,
            })
            .await
            .expect("retention");
        let kept: Vec<(&str, Event<'static>)> = events
            .iter()
            .filter(|(_, event)| event.timestamp_ms >= T0 + DAY)
            .cloned()
            .collect();
        assert_rollups(&engine, "a", &kept).await;
        let raw = engine.store.events(all_events("a")).await.expect("events");
        let mut days: Vec<i64> = raw
            .iter()
            .map(|stored| (stored.event.timestamp_ms - T0) / DAY)
            .collect();
        days.sort_unstable();
        assert_eq!(
            days,
            vec![1, 1, 2, 2],
            "{}: whole first day gone",
            engine.name
        );
        // The position survives retention.
        assert_eq!(
            engine.store.partition_states().await.expect("states")[0].next_offset,
            6
        );
    }
}

fn outbox_alert(sink: &str, key: &str) -> OutboxAlert {
    OutboxAlert {
        sink: sink.to_string(),
        key: key.to_string(),
        payload: format!("payload of {key}").into_bytes(),
    }
}

fn evaluation_with_alerts(
    next_window_ms: i64,
    alerts: Vec<OutboxAlert>,
    limit: usize,
) -> EvaluationCommit {
    EvaluationCommit {
        next_window_ms,
        state: Vec::new(),
        fired: Vec::new(),
        resolved: Vec::new(),
        outbox: alerts,
        outbox_limit: limit,
    }
}

#[tokio::test]
async fn the_outbox_queues_once_per_key_and_keeps_order() {
    for engine in engines().await {
        let store = &engine.store;
        let alerts = vec![
            outbox_alert("webhook", "k1"),
            outbox_alert("alertmanager", "k1"),
            outbox_alert("webhook", "k2"),
        ];
        store
            .commit_evaluation(evaluation_with_alerts(60_000, alerts.clone(), 100))
            .await
            .expect("commit");
        // A replayed pass queues nothing twice.
        store
            .commit_evaluation(evaluation_with_alerts(60_000, alerts, 100))
            .await
            .expect("replay");
        let webhook = store.outbox_pending("webhook", 10).await.expect("pending");
        assert_eq!(
            webhook.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            vec!["k1", "k2"]
        );
        assert_eq!(webhook[0].payload, b"payload of k1".to_vec());
        assert_eq!((webhook[0].attempts, webhook[0].next_attempt_ms), (0, 0));

        store
            .outbox_settle(
                webhook[0].id,
                OutboxOutcome::Retry {
                    attempts: 1,
                    next_attempt_ms: 5_000,
                },
            )
            .await
            .expect("retry");
        store
            .outbox_settle(webhook[1].id, OutboxOutcome::Delivered)
            .await
            .expect("delivered");
        let webhook = store.outbox_pending("webhook", 10).await.expect("pending");
        assert_eq!(webhook.len(), 1);
        assert_eq!(
            (
                webhook[0].key.as_str(),
                webhook[0].attempts,
                webhook[0].next_attempt_ms
            ),
            ("k1", 1, 5_000)
        );
        store
            .outbox_settle(webhook[0].id, OutboxOutcome::Abandoned)
            .await
            .expect("abandoned");
        assert!(store
            .outbox_pending("webhook", 10)
            .await
            .expect("pending")
            .is_empty());
        assert_eq!(
            store
                .outbox_pending("alertmanager", 10)
                .await
                .expect("pending")
                .len(),
            1
        );
        // Settling an entry that is gone is fine.
        store
            .outbox_settle(webhook[0].id, OutboxOutcome::Delivered)
            .await
            .expect("settling twice");
    }
}

/// A commit may queue thousands of transitions (a budget's users crossing at once):
/// each is queued once, a replay of the commit included, whatever the number.
#[tokio::test]
async fn the_outbox_queues_thousands_of_transitions_of_one_commit_once() {
    for engine in engines().await {
        // Keys as long as renewals' (an id and a suffix), past any one query's size.
        let alerts: Vec<OutboxAlert> = (0..9_000)
            .map(|n| outbox_alert("webhook", &format!("{n:032x}-renewed-1795341600000")))
            .collect();
        for _ in 0..2 {
            engine
                .store
                .commit_evaluation(evaluation_with_alerts(60_000, alerts.clone(), 100_000))
                .await
                .expect("commit");
        }
        let pending = engine
            .store
            .outbox_pending("webhook", 100_000)
            .await
            .expect("pending");
        let keys: Vec<&str> = pending.iter().map(|entry| entry.key.as_str()).collect();
        let expected: Vec<&str> = alerts.iter().map(|alert| alert.key.as_str()).collect();
        assert_eq!(keys, expected, "{}: once each, in order", engine.name);
    }
}

#[tokio::test]
async fn a_full_outbox_drops_its_oldest_entries() {
    for engine in engines().await {
        let store = &engine.store;
        for batch in 0..3 {
            let alerts = (0..4)
                .map(|index| outbox_alert("webhook", &format!("k{}", batch * 4 + index)))
                .collect();
            store
                .commit_evaluation(evaluation_with_alerts(batch * 60_000, alerts, 5))
                .await
                .expect("commit");
        }
        let kept = store.outbox_pending("webhook", 100).await.expect("pending");
        assert_eq!(
            kept.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            vec!["k7", "k8", "k9", "k10", "k11"],
            "{}",
            engine.name
        );
    }
}

/// Brute force of a breakdown: per group key, the partial of the events of `tenant`
/// (all when `None`) in `[from_ms, to_ms)` that pass `filters`.
fn brute_partials(
    events: &[(&str, Event<'static>)],
    tenant: Option<&str>,
    from_ms: i64,
    to_ms: i64,
    by: &[Dimension],
    filters: &Filters,
) -> BTreeMap<Vec<Option<String>>, RollupPartial> {
    let mut groups: BTreeMap<Vec<Option<String>>, RollupPartial> = BTreeMap::new();
    for (event_tenant, event) in events {
        let in_scope = tenant.is_none_or(|wanted| wanted == *event_tenant)
            && event.timestamp_ms >= from_ms
            && event.timestamp_ms < to_ms
            && filters.matches(event_tenant, event);
        if !in_scope {
            continue;
        }
        let key = by
            .iter()
            .map(|dimension| dimension.value(event_tenant, event).map(str::to_string))
            .collect();
        groups.entry(key).or_default().add(event, false);
    }
    groups
}

/// [`brute_partials`] as (requests, errors, cost micro-dollars) per group.
fn brute_breakdown(
    events: &[(&str, Event<'static>)],
    tenant: Option<&str>,
    from_ms: i64,
    to_ms: i64,
    by: &[Dimension],
    filters: &Filters,
) -> BTreeMap<Vec<Option<String>>, (u64, u64, u64)> {
    brute_partials(events, tenant, from_ms, to_ms, by, filters)
        .into_iter()
        .map(|(key, partial)| (key, (partial.requests, partial.errors, partial.cost_micros)))
        .collect()
}

/// Every metric of a partial that does not depend on the order its events were added
/// in: counts, sums, errors by type, quantiles (read from the sketch's bins) and
/// unique users. A breakdown's group must equal brute force in all of them.
fn metrics_of(partial: &RollupPartial) -> String {
    format!(
        "requests {} errors {} {:?} tokens {}/{}/{} cost {} latency {:?} {:?} {} ttft {} {:?} {:?} users {}",
        partial.requests,
        partial.errors,
        partial.errors_by_type,
        partial.input_tokens,
        partial.output_tokens,
        partial.cache_read_input_tokens,
        partial.cost_micros,
        partial.latency_ms.quantile(0.5),
        partial.latency_ms.quantile(0.99),
        partial.latency_ms.count(),
        partial.ttft_ms.count(),
        partial.ttft_ms.quantile(0.5),
        partial.ttft_ms.quantile(0.99),
        partial.unique_users(),
    )
}

#[tokio::test]
async fn breakdowns_scan_raw_events_by_any_dimension_exactly() {
    for engine in engines().await {
        let events: Vec<(&str, Event<'static>)> = (0..300)
            .map(|n| {
                let tenant = if n % 7 == 0 { "other" } else { "a" };
                let mut event = event(
                    n,
                    if n % 3 == 0 { "m1" } else { "m2" },
                    T0 + n as i64 * 20_000,
                    false,
                );
                event.endpoint = (n % 5 != 0).then(|| Cow::Owned(format!("/e{}", n % 4)));
                event.region = (n % 2 == 0).then_some(Cow::Borrowed("eu"));
                event.attributes = if n % 3 == 1 {
                    Vec::new()
                } else {
                    vec![(Cow::Borrowed("feature"), Cow::Owned(format!("f{}", n % 3)))]
                };
                (tenant, event)
            })
            .collect();
        for (index, chunk) in events.chunks(64).enumerate() {
            engine
                .store
                .commit(batch_of(2, index as u64 * 64, T0, chunk))
                .await
                .expect("commit");
        }
        let dimensions = |names: &[&str]| -> Vec<Dimension> {
            names
                .iter()
                .map(|name| Dimension::parse(name).expect("dimension"))
                .collect()
        };
        let filter = |texts: &[&str]| {
            Filters(
                texts
                    .iter()
                    .map(|text| Filter::parse(text).expect("filter"))
                    .collect(),
            )
        };
        let cases = [
            (Some("a"), dimensions(&["endpoint"]), Filters::default()),
            (
                Some("a"),
                dimensions(&["user_id"]),
                filter(&["status:error"]),
            ),
            (
                Some("a"),
                dimensions(&["region", "attr.feature"]),
                filter(&["endpoint:!/e1|null"]),
            ),
            (
                None,
                dimensions(&["tenant", "model"]),
                filter(&["attr.feature:null"]),
            ),
        ];
        // A range that cuts the events: the first and last few minutes are out.
        let (from_ms, to_ms) = (T0 + 600_000, T0 + 5_400_000);
        for (tenant, by, filters) in cases {
            let want: BTreeMap<Vec<Option<String>>, String> =
                brute_partials(&events, tenant, from_ms, to_ms, &by, &filters)
                    .iter()
                    .map(|(key, partial)| (key.clone(), metrics_of(partial)))
                    .collect();
            assert!(!want.is_empty(), "{}: the case selects events", engine.name);
            let grouper = engine
                .store
                .breakdown(BreakdownQuery {
                    tenant: tenant.map(str::to_string),
                    from_ms,
                    to_ms,
                    by: by.clone(),
                    filters: filters.clone(),
                    step_ms: None,
                    max_groups: 1_000,
                    deadline: std::time::Instant::now() + ais_testkit::PATIENCE,
                })
                .await
                .expect("breakdown");
            let ranked = grouper.rank(OrderBy::Requests, false, usize::MAX);
            let got: BTreeMap<Vec<Option<String>>, String> = ranked
                .groups
                .iter()
                .map(|(key, partial)| (key.clone(), metrics_of(partial)))
                .collect();
            assert_eq!(got, want, "{}: by {by:?} with {filters:?}", engine.name);
        }

        // Exactly as many groups as the bound: the answer, however the scan splits its
        // work (a scan on several threads holds a share of the bound each).
        let every_user = brute_partials(
            &events,
            Some("a"),
            T0,
            T0 + 86_400_000,
            &dimensions(&["user_id"]),
            &Filters::default(),
        );
        let by_user = |max_groups: usize| BreakdownQuery {
            tenant: Some("a".to_string()),
            from_ms: T0,
            to_ms: T0 + 86_400_000,
            by: dimensions(&["user_id"]),
            filters: Filters::default(),
            step_ms: None,
            max_groups,
            deadline: std::time::Instant::now() + ais_testkit::PATIENCE,
        };
        let grouper = engine
            .store
            .breakdown(by_user(every_user.len()))
            .await
            .expect("as many groups as the bound allows");
        assert_eq!(grouper.len(), every_user.len(), "{}", engine.name);

        // Past the group bound the answer is an error that says so, not a part.
        let error = engine
            .store
            .breakdown(by_user(2))
            .await
            .expect_err("more users than groups allowed");
        assert!(
            matches!(error, StoreError::Limit(_)),
            "{}: {error}",
            engine.name
        );

        // A breakdown past its deadline is an error that names the timeout.
        let error = engine
            .store
            .breakdown(BreakdownQuery {
                deadline: std::time::Instant::now(),
                ..by_user(every_user.len())
            })
            .await
            .expect_err("no time left");
        assert!(
            matches!(&error, StoreError::Limit(message) if message.contains("query timeout")),
            "{}: {error}",
            engine.name
        );
    }
}

#[tokio::test]
async fn breakdowns_per_step_add_up_to_every_step_exactly() {
    for engine in engines().await {
        // Events every 17 s over about 85 minutes, so steps hold several of them and
        // the range cuts some off at both ends.
        let events: Vec<(&str, Event<'static>)> = (0..300)
            .map(|n| {
                let tenant = if n % 7 == 0 { "other" } else { "a" };
                let mut event = event(n, "m", T0 + n as i64 * 17_000, false);
                event.endpoint = (n % 5 != 0).then(|| Cow::Owned(format!("/e{}", n % 4)));
                event.region = (n % 2 == 0).then_some(Cow::Borrowed("eu"));
                (tenant, event)
            })
            .collect();
        for (index, chunk) in events.chunks(64).enumerate() {
            engine
                .store
                .commit(batch_of(2, index as u64 * 64, T0, chunk))
                .await
                .expect("commit");
        }
        let (from_ms, to_ms, step_ms) = (T0 + 300_000, T0 + 4_500_000, 300_000);
        let filters = Filters(vec![Filter::parse("region:!eu").expect("filter")]);
        let query = |by: Vec<Dimension>, max_groups: usize| BreakdownQuery {
            tenant: Some("a".to_string()),
            from_ms,
            to_ms,
            by,
            filters: filters.clone(),
            step_ms: Some(step_ms),
            max_groups,
            deadline: std::time::Instant::now() + ais_testkit::PATIENCE,
        };
        let steps = (to_ms - from_ms) / step_ms;
        for by in [vec![Dimension::Endpoint], Vec::new()] {
            let ranked = engine
                .store
                .breakdown(query(by.clone(), 1_000))
                .await
                .expect("breakdown per step")
                .rank_series(OrderBy::Requests, 2);
            for step in 0..steps {
                let start = from_ms + step * step_ms;
                let want =
                    brute_breakdown(&events, Some("a"), start, start + step_ms, &by, &filters);
                assert!(!want.is_empty(), "{}: step {step} has events", engine.name);
                let sums = |partial: Option<&RollupPartial>| {
                    partial.map_or((0, 0, 0), |partial| {
                        (partial.requests, partial.errors, partial.cost_micros)
                    })
                };
                let index = step as usize;
                for (key, slots) in &ranked.groups {
                    assert_eq!(
                        sums(slots.get(&index)),
                        want.get(key).copied().unwrap_or_default(),
                        "{}: group {key:?} at step {step}",
                        engine.name
                    );
                }
                let parts = ranked
                    .groups
                    .iter()
                    .map(|(_, slots)| slots)
                    .chain(ranked.other.as_ref());
                let got = parts.fold((0, 0, 0), |sum, slots| {
                    let part = sums(slots.get(&index));
                    (sum.0 + part.0, sum.1 + part.1, sum.2 + part.2)
                });
                let total = want.values().fold((0, 0, 0), |sum, group| {
                    (sum.0 + group.0, sum.1 + group.1, sum.2 + group.2)
                });
                assert_eq!(got, total, "{}: by {by:?}, step {step}", engine.name);
            }
            assert_eq!(ranked.groups.len(), if by.is_empty() { 1 } else { 2 });
            assert_eq!(ranked.other.is_some(), !by.is_empty(), "{}", engine.name);
        }

        // Each step of each group counts toward the bound: one endpoint over every step
        // is more groups than steps allow.
        let error = engine
            .store
            .breakdown(BreakdownQuery {
                filters: Filters(vec![Filter::parse("endpoint:/e1").expect("filter")]),
                ..query(vec![Dimension::Endpoint], steps as usize - 1)
            })
            .await
            .expect_err("more steps than groups allowed");
        assert!(
            matches!(&error, StoreError::Limit(message) if message.contains("one per value and step")),
            "{}: {error}",
            engine.name
        );
    }
}

#[tokio::test]
async fn raw_events_filtered_by_any_dimension_come_newest_first_up_to_the_limit() {
    for engine in engines().await {
        let events: Vec<(&str, Event<'static>)> = (0..150)
            .map(|n| {
                let mut event = event(n, "m1", T0 + n as i64 * 10_000, true);
                event.region = (n % 3 != 0).then(|| Cow::Owned(format!("r{}", n % 2)));
                // Values SQL must carry as data: quotes, backslashes, '?', '|'.
                const ENDPOINTS: [&str; 4] = ["it's", "back\\slash", "a|b", "?"];
                event.endpoint = (n % 5 != 0).then_some(Cow::Borrowed(ENDPOINTS[n as usize % 4]));
                (if n % 10 == 0 { "other" } else { "a" }, event)
            })
            .collect();
        engine
            .store
            .commit(batch_of(3, 0, T0, &events))
            .await
            .expect("commit");
        for (texts, limit) in [
            (vec!["region:r1"], 1_000),
            (vec!["region:!r1"], 7),
            (vec!["region:null", "status:error"], 1_000),
            (vec!["attr.k:v5|v50|v149"], 1_000),
            (vec!["attr.k:!v5|v51|null"], 1_000),
            (vec!["endpoint:it's|back\\\\slash"], 1_000),
            (vec!["endpoint:a\\|b|?", "region:!r0"], 1_000),
            (vec!["endpoint:!it's|null"], 1_000),
        ] {
            let filters = Filters(
                texts
                    .iter()
                    .map(|text| Filter::parse(text).expect("filter"))
                    .collect(),
            );
            let mut want: Vec<(i64, String)> = events
                .iter()
                .filter(|(tenant, event)| *tenant == "a" && filters.matches(tenant, event))
                .map(|(_, event)| (event.timestamp_ms, event_id_of(event)))
                .collect();
            want.sort_by(|left, right| right.cmp(left));
            want.truncate(limit);
            assert!(!want.is_empty(), "{texts:?} selects events");
            let got: Vec<(i64, String)> = engine
                .store
                .events(EventQuery {
                    filters: filters.clone(),
                    limit,
                    ..all_events("a")
                })
                .await
                .expect("events")
                .iter()
                .map(|stored| (stored.event.timestamp_ms, event_id_of(&stored.event)))
                .collect();
            assert_eq!(got, want, "{}: {texts:?}", engine.name);
        }
    }
}

fn event_id_of(event: &Event<'_>) -> String {
    match &event.event_id {
        EventId::Client(id) => id.to_string(),
        EventId::Generated(id) => id.to_string(),
    }
}

/// An event with every field set. The struct literal names every field of [`Event`]
/// (no `..` base), so a field added to the event does not compile here until it is set,
/// and then [`every_field_of_an_event_reads_back_from_every_engine`] fails on any engine
/// whose schema, writer or reader leaves it out.
fn event_with_every_field() -> Event<'static> {
    Event {
        model: Cow::Borrowed("claude-sonnet-4"),
        event_id: EventId::Client(Cow::Borrowed("every-field")),
        timestamp_ms: T0 + 1_234,
        response_model: Some(Cow::Borrowed("claude-sonnet-4-20250514")),
        provider: Some(Cow::Borrowed("anthropic")),
        operation: Some(Cow::Borrowed("chat")),
        latency_ms: 812.5,
        ttft_ms: Some(140.25),
        input_tokens: Some(7_000),
        output_tokens: Some(900),
        reasoning_output_tokens: Some(600),
        cache_read_input_tokens: Some(2_000),
        cache_creation_input_tokens: Some(4_000),
        cost_micros: Some(20_100),
        status: Status::Error,
        error_type: Some(Cow::Borrowed("timeout")),
        user_id: Some(Cow::Borrowed("user-1")),
        session_id: Some(Cow::Borrowed("session-1")),
        trace_id: Some(Cow::Borrowed("trace-1")),
        span_id: Some(Cow::Borrowed("span-1")),
        endpoint: Some(Cow::Borrowed("api.anthropic.com:443")),
        region: Some(Cow::Borrowed("eu-west-1")),
        attributes: vec![
            (Cow::Borrowed("team"), Cow::Borrowed("search")),
            (Cow::Borrowed("empty"), Cow::Borrowed("")),
        ],
        // Not raw-event fields: the usage ledger counts per key, and the stream settles
        // the reservation; neither is kept with the stored call.
        key: None,
        reservation_id: None,
        input: None,
        output: None,
    }
}

#[tokio::test]
async fn every_field_of_an_event_reads_back_from_every_engine() {
    for engine in engines().await {
        let full = event_with_every_field();
        let bare = Event::new("m", EventId::Client(Cow::Borrowed("bare")), T0, 1.0);
        engine
            .store
            .commit(batch_of(
                0,
                0,
                T0,
                &[("a", full.clone()), ("a", bare.clone())],
            ))
            .await
            .expect("commit");
        let read = engine.store.events(all_events("a")).await.expect("events");
        let by_id: BTreeMap<String, &Event<'_>> = read
            .iter()
            .map(|stored| (event_id_of(&stored.event), &stored.event))
            .collect();
        assert_eq!(by_id.len(), 2, "{}: both events", engine.name);
        assert_eq!(by_id["every-field"], &full, "{}: every field", engine.name);
        assert_eq!(
            by_id["bare"], &bare,
            "{}: absent fields stay absent",
            engine.name
        );
    }
}

/// A database migrated by an older binary (schema version 2, before the reasoning and
/// cache-creation columns), holding a row: `ais migrate` adds the columns, twice without
/// harm, and the old row reads with both counts absent.
#[cfg(feature = "clickhouse")]
#[tokio::test]
async fn a_clickhouse_database_of_schema_version_2_upgrades_and_its_rows_still_read() {
    use ais_store::clickhouse::schema::{migrations, Statement};
    use ais_store::clickhouse::Dialect;
    let Ok(url) = std::env::var("AIS_TEST_CLICKHOUSE") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "AIS_TEST_CLICKHOUSE is not set under CI=true"
        );
        eprintln!("AIS_TEST_CLICKHOUSE is not set: the ClickHouse upgrade is not tested");
        return;
    };
    let database = format!(
        "ais_upgrade_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    let client = clickhouse::Client::default()
        .with_url(&url)
        .with_validation(false);
    let version: String = client
        .query("SELECT version()")
        .fetch_one()
        .await
        .expect("server version");
    let older: Vec<Statement> = migrations(&database, Dialect::for_version(&version))
        .into_iter()
        .take(2)
        .flatten()
        .collect();
    assert!(
        older
            .iter()
            .all(|statement| matches!(statement, Statement::Sql(_))),
        "versions 1 and 2 add no columns"
    );
    for statement in &older {
        client
            .query(&statement.to_string())
            .execute()
            .await
            .expect("an older migration");
    }
    for (version, sql) in [
        (
            1u32,
            format!("INSERT INTO {database}.schema_migrations VALUES (1, 0)"),
        ),
        (
            2,
            format!("INSERT INTO {database}.schema_migrations VALUES (2, 0)"),
        ),
        (
            0,
            format!(
                "INSERT INTO {database}.events (tenant, event_id, client_id, timestamp_ms, model, \
                 latency_ms, input_tokens, output_tokens, cache_read_input_tokens, cost_micros, \
                 status, attribute_keys, attribute_values, log_partition, log_offset) \
                 VALUES ('a', 'old', 1, {T0}, 'm', 5, 10, 20, 3, 7, 'ok', [], [], 0, 0)"
            ),
        ),
    ] {
        client
            .query(&sql)
            .execute()
            .await
            .unwrap_or_else(|error| panic!("version {version}: {error}"));
    }
    let config =
        ClickhouseConfig::from_url(&format!("{url}/?database={database}")).expect("ClickHouse URL");
    assert!(
        ClickhouseStore::connect(config.clone()).await.is_err(),
        "version 2 is refused until migrated"
    );
    // A migration to version 3 interrupted after its first column: run again, it adds
    // only what is missing.
    let newer = migrations(&database, Dialect::for_version(&version)).remove(2);
    client
        .query(&newer[0].to_string())
        .execute()
        .await
        .expect("the first column, as an interrupted run left it");
    let report = ais_store::clickhouse::migrate(&config)
        .await
        .expect("migrate");
    assert_eq!(
        (report.from_version, report.to_version),
        (2, ais_store::clickhouse::SCHEMA_VERSION)
    );
    let again = ais_store::clickhouse::migrate(&config)
        .await
        .expect("migrate again");
    assert_eq!(again.from_version, ais_store::clickhouse::SCHEMA_VERSION);
    let store = ClickhouseStore::connect(config).await.expect("connect");
    let read = store.events(all_events("a")).await.expect("events");
    let want = Event {
        input_tokens: Some(10),
        output_tokens: Some(20),
        cache_read_input_tokens: Some(3),
        cost_micros: Some(7),
        ..Event::new("m", EventId::Client(Cow::Borrowed("old")), T0, 5.0)
    };
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].event, want);
}

/// `batch` with its events' dimension rollups by `endpoint`, as the stream adds them.
fn with_endpoint_rollups(mut batch: BatchCommit, events: &[(&str, Event<'static>)]) -> BatchCommit {
    use ais_rollup::dimensions::{DimensionKey, DimensionValue};
    let mut partials: BTreeMap<DimensionKey, RollupPartial> = BTreeMap::new();
    for (tenant, event) in events {
        let key = DimensionKey {
            tenant: tenant.to_string(),
            dimension: "endpoint".to_string(),
            minute_ms: minute_floor(event.timestamp_ms),
            value: event
                .endpoint
                .as_ref()
                .map_or(DimensionValue::Missing, |value| {
                    DimensionValue::Value(value.to_string())
                }),
        };
        partials.entry(key).or_default().add(event, false);
    }
    batch.dimensions = ais_store::DimensionPartials {
        max_values_per_minute: 1_000,
        partials: partials.into_iter().collect(),
    };
    batch
}

/// The breakdown of tenant `a` by endpoint over the minute from `T0`.
#[cfg(feature = "clickhouse")]
fn endpoint_breakdown_of_tenant_a() -> (Vec<Dimension>, BreakdownQuery) {
    let by_endpoint = vec![Dimension::parse("endpoint").expect("dimension")];
    let query = BreakdownQuery {
        tenant: Some("a".to_string()),
        from_ms: T0,
        to_ms: T0 + 60_000,
        by: by_endpoint.clone(),
        filters: Filters::default(),
        step_ms: None,
        max_groups: 100,
        deadline: std::time::Instant::now() + std::time::Duration::from_secs(60),
    };
    (by_endpoint, query)
}

/// Requests, errors and cost per group of a breakdown.
#[cfg(feature = "clickhouse")]
fn requests_errors_cost(
    grouper: ais_rollup::breakdown::Grouper,
) -> BTreeMap<ais_rollup::breakdown::GroupKey, (u64, u64, u64)> {
    grouper
        .rank(OrderBy::Requests, false, 100)
        .groups
        .into_iter()
        .map(|(key, partial)| (key, (partial.requests, partial.errors, partial.cost_micros)))
        .collect()
}

/// ClickHouse writes a batch's dimension rollups before the INSERT that commits it:
/// rows of a commit that never landed count for nothing, and a committed batch
/// without dimension rollups makes its range scan rather than undercount.
#[cfg(feature = "clickhouse")]
#[tokio::test]
async fn clickhouse_dimension_rollups_count_only_committed_batches_that_cover_their_range() {
    let Some(engine) = clickhouse_engine().await else {
        return;
    };
    let database = engine.database.clone().expect("a ClickHouse database");
    let url = std::env::var("AIS_TEST_CLICKHOUSE").expect("the server");
    let client = clickhouse::Client::default()
        .with_url(&url)
        .with_validation(false);
    let events: Vec<(&str, Event<'static>)> = (0..40)
        .map(|n| {
            let mut event = event(n, "m1", T0 + n as i64 * 1_000, false);
            event.endpoint = (n % 4 != 0).then(|| Cow::Owned(format!("/e{}", n % 3)));
            ("a", event)
        })
        .collect();
    let (first, second) = events.split_at(25);
    engine
        .store
        .commit(with_endpoint_rollups(batch_of(0, 0, T0, first), first))
        .await
        .expect("commit");
    let (by_endpoint, query) = endpoint_breakdown_of_tenant_a();
    let want = brute_breakdown(
        first,
        Some("a"),
        T0,
        T0 + 60_000,
        &by_endpoint,
        &Filters::default(),
    );
    let answer = engine
        .store
        .rolled_up_breakdown(query.clone())
        .await
        .expect("rollups")
        .expect("a committed batch with rollups answers from them");
    assert_eq!(requests_errors_cost(answer), want);

    // The rows of a batch that wrote its dimension rollups and died before its commit
    // INSERT: the same rows under offsets no marker has.
    client
        .query(&format!(
            "INSERT INTO {database}.dimension_rollups
             SELECT tenant, dimension, minute, kind, value, log_partition, 25, 31, requests,
                    partial, written_ms
             FROM {database}.dimension_rollups"
        ))
        .execute()
        .await
        .expect("rows of an unfinished commit");
    let answer = engine
        .store
        .rolled_up_breakdown(query.clone())
        .await
        .expect("rollups")
        .expect("still answered from the committed rows");
    assert_eq!(
        requests_errors_cost(answer),
        want,
        "unfinished rows counted"
    );

    // A batch committed without dimension rollups (a stream that did not roll the
    // dimension up): the rollups no longer cover the range, so the answer scans.
    engine
        .store
        .commit(batch_of(0, 25, T0, second))
        .await
        .expect("commit");
    assert!(
        engine
            .store
            .rolled_up_breakdown(query.clone())
            .await
            .expect("rollups")
            .is_none(),
        "answered from rollups that miss a batch"
    );
    let scanned = engine.store.breakdown(query).await.expect("scan");
    assert_eq!(
        requests_errors_cost(scanned),
        brute_breakdown(
            &events,
            Some("a"),
            T0,
            T0 + 60_000,
            &by_endpoint,
            &Filters::default()
        )
    );
}

/// A second handle on the same store, as a second stream process would hold.
async fn another_handle(engine: &Engine) -> Arc<dyn Store> {
    if let Some(dir) = &engine._dir {
        return Arc::new(SqliteStore::open(&dir.path().join("s.sqlite")).expect("open sqlite"));
    }
    another_clickhouse_handle(engine).await
}

#[cfg(feature = "clickhouse")]
async fn another_clickhouse_handle(engine: &Engine) -> Arc<dyn Store> {
    let url = std::env::var("AIS_TEST_CLICKHOUSE").expect("the server");
    let database = engine.database.clone().expect("a ClickHouse database");
    let config =
        ClickhouseConfig::from_url(&format!("{url}/?database={database}")).expect("ClickHouse URL");
    Arc::new(
        ClickhouseStore::connect(config)
            .await
            .expect("connect ClickHouse"),
    )
}

#[cfg(not(feature = "clickhouse"))]
async fn another_clickhouse_handle(_engine: &Engine) -> Arc<dyn Store> {
    unreachable!("only the embedded engine is built")
}

/// The position of partition 0 as `store` reads it.
async fn position_of_partition_0(store: &dyn Store) -> u64 {
    store
        .partition_states()
        .await
        .expect("positions")
        .iter()
        .find(|state| state.partition == 0)
        .map_or(0, |state| state.next_offset)
}

/// A stream process that lost its partition to a newer claim cannot commit to it any
/// more, even a batch that continues the position; the new owner continues from the
/// position and counts every event once.
#[tokio::test]
async fn a_stale_owner_is_refused_once_another_process_claims_its_partition() {
    for engine in engines().await {
        let old_owner = &engine.store;
        let new_owner = another_handle(&engine).await;
        let events: Vec<(&str, Event<'static>)> = (0..9)
            .map(|n| ("a", event(n, "m1", T0 + n as i64 * 1_000, false)))
            .collect();
        old_owner.claim(&[0], T0).await.expect("claim");
        old_owner
            .commit(batch_of(0, 0, T0, &events[..3]))
            .await
            .expect("the owner commits");
        new_owner.claim(&[0], T0).await.expect("claim");
        let refused = old_owner
            .commit(batch_of(0, 3, T0, &events[3..6]))
            .await
            .expect_err("a stale owner's batch is refused");
        assert!(
            matches!(refused, StoreError::Fenced { partition: 0, .. }),
            "{}: {refused}",
            engine.name
        );
        assert_eq!(
            position_of_partition_0(new_owner.as_ref()).await,
            3,
            "{}",
            engine.name
        );
        new_owner
            .commit(batch_of(0, 3, T0, &events[3..9]))
            .await
            .expect("the new owner continues");
        assert_rollups(&engine, "a", &events).await;
        assert_eq!(
            stored_ledger(engine.store.as_ref()).await,
            ledger_of(&events),
            "{}: the ledger counts each committed batch once",
            engine.name
        );
        assert_usage(&engine, &events).await;
        // The old owner claiming again (rejoined) takes the partition back.
        old_owner.claim(&[0], T0).await.expect("claim");
        assert!(matches!(
            new_owner.commit(BatchCommit::position(0, 9, T0)).await,
            Err(StoreError::Fenced { .. })
        ));
        old_owner
            .commit(BatchCommit::position(0, 9, T0 + 60_000))
            .await
            .expect("the newest claim commits");
    }
}

/// A ClickHouse engine and a scratch database beside it, where a test runs the real
/// commit path to produce rows it then copies into the engine's database.
#[cfg(feature = "clickhouse")]
struct Scratch {
    engine: Engine,
    scratch: Engine,
}

#[cfg(feature = "clickhouse")]
impl Scratch {
    async fn new() -> Option<Scratch> {
        Some(Scratch {
            engine: clickhouse_engine().await?,
            scratch: clickhouse_engine().await?,
        })
    }

    /// Copies the rows of `table` matching `rows` from `from`'s database to `to`'s.
    async fn copy(from: &Engine, to: &Engine, table: &str, rows: &str) {
        let url = std::env::var("AIS_TEST_CLICKHOUSE").expect("the server");
        let database = |engine: &Engine| engine.database.clone().expect("a ClickHouse database");
        clickhouse::Client::default()
            .with_url(&url)
            .with_validation(false)
            .query(&format!(
                "INSERT INTO {}.{table} SELECT * FROM {}.{table} WHERE {rows}",
                database(to),
                database(from)
            ))
            .execute()
            .await
            .expect("rows copied");
    }
}

/// ClickHouse checks a batch's claim and writes the batch in separate steps, so a
/// stalled writer can land a batch it checked before a newer claim was taken. Such a
/// batch is void: its marker does not move the position, and neither its rollups nor
/// its dimension rollups count, whether they land before or after the new owner's.
///
/// The late batch is the real commit path's rows: the stalled writer's commit runs
/// against a scratch database holding the same history and claim, and its rows are
/// copied over once the new owner has claimed.
#[cfg(feature = "clickhouse")]
#[tokio::test]
async fn clickhouse_a_batch_landing_after_a_newer_claim_counts_for_nothing() {
    let Some(Scratch { engine, scratch }) = Scratch::new().await else {
        return;
    };
    let events: Vec<(&str, Event<'static>)> = (0..12)
        .map(|n| {
            let mut event = event(
                n,
                if n % 3 == 0 { "m2" } else { "m1" },
                T0 + n as i64 * 1_000,
                false,
            );
            event.endpoint = Some(Cow::Owned(format!("/e{}", n % 2)));
            ("a", event)
        })
        .collect();
    let stalled = &engine.store;
    // The same claim in both databases: claims are the clock's when nothing was
    // claimed before.
    stalled.claim(&[0], T0).await.expect("claim");
    scratch.store.claim(&[0], T0).await.expect("claim");
    for store in [stalled, &scratch.store] {
        store
            .commit(with_endpoint_rollups(
                batch_of(0, 0, T0, &events[..3]),
                &events[..3],
            ))
            .await
            .expect("commit");
    }
    let new_owner = another_handle(&engine).await;
    new_owner.claim(&[0], T0).await.expect("claim");
    let owned: Vec<(&str, Event<'static>)> = events[3..5].to_vec();
    new_owner
        .commit(with_endpoint_rollups(batch_of(0, 3, T0, &owned), &owned))
        .await
        .expect("the new owner continues from the position");
    // The batch the stalled writer had checked before the claim, landing after the
    // new owner's (so written later, too): it reaches past what the new owner
    // committed, shares its keys and holds a model the new owner's batch does not.
    scratch
        .store
        .commit(with_endpoint_rollups(
            batch_of(0, 3, T0, &events[3..10]),
            &events[3..10],
        ))
        .await
        .expect("the stalled writer's batch");
    for table in ["events", "dimension_rollups", "ledger", "usage", "rollups"] {
        let rows = if table == "events" {
            "log_offset >= 3"
        } else {
            "first_offset = 3"
        };
        Scratch::copy(&scratch, &engine, table, rows).await;
    }
    assert_eq!(
        position_of_partition_0(new_owner.as_ref()).await,
        5,
        "a void batch moved the position"
    );
    let committed: Vec<(&str, Event<'static>)> = events[..5].to_vec();
    assert_rollups(&engine, "a", &committed).await;
    assert_eq!(
        stored_ledger(engine.store.as_ref()).await,
        ledger_of(&committed)
    );
    assert_usage(&engine, &committed).await;
    let (by_endpoint, query) = endpoint_breakdown_of_tenant_a();
    let answer = engine
        .store
        .rolled_up_breakdown(query)
        .await
        .expect("rollups")
        .expect("the committed batches roll the dimension up");
    assert_eq!(
        requests_errors_cost(answer),
        brute_breakdown(
            &committed,
            Some("a"),
            T0,
            T0 + 60_000,
            &by_endpoint,
            &Filters::default()
        )
    );
}

/// An old ClickHouse keeps the rows of an INSERT whose client went away mid-body, so a
/// stream process killed mid-commit can leave the first rows of a batch's commit INSERT
/// without the marker that ends it. They count for nothing until the batch's replay
/// lands, and then once. The cut-off rows are the real commit path's, written to a
/// scratch database and copied without their marker.
#[cfg(feature = "clickhouse")]
#[tokio::test]
async fn clickhouse_rows_of_a_commit_cut_off_before_its_marker_count_for_nothing() {
    let Some(Scratch { engine, scratch }) = Scratch::new().await else {
        return;
    };
    let events: Vec<(&str, Event<'static>)> = (0..7)
        .map(|n| {
            let model = if n % 2 == 0 { "m1" } else { "m2" };
            let mut event = event(n, model, T0 + n as i64 * 1_000, false);
            event.endpoint = Some(Cow::Owned(format!("/e{}", n % 3)));
            ("a", event)
        })
        .collect();
    let (first, second) = events.split_at(3);
    for store in [&engine.store, &scratch.store] {
        store
            .commit(with_endpoint_rollups(batch_of(0, 0, T0, first), first))
            .await
            .expect("commit");
    }
    scratch
        .store
        .commit(with_endpoint_rollups(batch_of(0, 3, T0, second), second))
        .await
        .expect("commit");
    for (table, rows) in [
        ("dimension_rollups", "first_offset = 3"),
        ("ledger", "first_offset = 3"),
        ("usage", "first_offset = 3"),
        ("rollups", "first_offset = 3 AND tenant != ''"),
    ] {
        Scratch::copy(&scratch, &engine, table, rows).await;
    }
    assert_rollups(&engine, "a", first).await;
    assert_eq!(stored_ledger(engine.store.as_ref()).await, ledger_of(first));
    assert_usage(&engine, first).await;
    assert_eq!(position_of_partition_0(engine.store.as_ref()).await, 3);
    let (by_endpoint, query) = endpoint_breakdown_of_tenant_a();
    let brute = |events: &[(&str, Event<'static>)]| {
        brute_breakdown(
            events,
            Some("a"),
            T0,
            T0 + 60_000,
            &by_endpoint,
            &Filters::default(),
        )
    };
    let answer = engine
        .store
        .rolled_up_breakdown(query.clone())
        .await
        .expect("rollups")
        .expect("the committed batch rolls the dimension up");
    assert_eq!(requests_errors_cost(answer), brute(first));
    // The replay lands whole.
    engine
        .store
        .commit(with_endpoint_rollups(batch_of(0, 3, T0, second), second))
        .await
        .expect("the replay");
    assert_rollups(&engine, "a", &events).await;
    assert_eq!(
        stored_ledger(engine.store.as_ref()).await,
        ledger_of(&events)
    );
    assert_usage(&engine, &events).await;
    let answer = engine
        .store
        .rolled_up_breakdown(query)
        .await
        .expect("rollups")
        .expect("both batches roll the dimension up");
    assert_eq!(requests_errors_cost(answer), brute(&events));
}

/// One scope's usage as counted independently of `ais_rollup::usage`: per (day,
/// tenant, value), from the events themselves.
type UsageModel = BTreeMap<(i64, String, Option<String>), UsageCounts>;

fn brute_usage(events: &[(&str, Event<'static>)], scope: &str) -> UsageModel {
    const DAY: i64 = 86_400_000;
    let mut model = UsageModel::new();
    for (tenant, event) in events {
        let value = match scope {
            "tenant" => Some(tenant.to_string()),
            "model" => Some(event.model.to_string()),
            "user_id" => event.user_id.as_ref().map(|user| user.to_string()),
            attribute => event
                .attributes
                .iter()
                .find(|(key, _)| Some(key.as_ref()) == attribute.strip_prefix("attr."))
                .map(|(_, value)| value.to_string()),
        };
        let day = event.timestamp_ms.div_euclid(DAY) * DAY;
        let counts = model.entry((day, tenant.to_string(), value)).or_default();
        counts.requests += 1;
        counts.errors += u64::from(event.status == Status::Error);
        counts.input_tokens += event.input_tokens.unwrap_or(0);
        counts.output_tokens += event.output_tokens.unwrap_or(0);
        counts.cache_read_input_tokens += event.cache_read_input_tokens.unwrap_or(0);
        counts.cost_micros += event.cost_micros.unwrap_or(0);
    }
    model
}

fn every_day(tenant: Option<&str>, scope: &str) -> UsageQuery {
    UsageQuery {
        tenant: tenant.map(str::to_string),
        scope: scope.to_string(),
        from_day_ms: i64::MIN,
        to_day_ms: i64::MAX,
        filter: None,
    }
}

/// One scope's usage as the engine exports it.
async fn stored_usage(store: &dyn Store, query: UsageQuery) -> UsageModel {
    let mut rows = store.usage_export(query).await.expect("an export");
    let mut model = UsageModel::new();
    let mut previous: Option<(i64, String, bool, Option<String>)> = None;
    while let Some(chunk) = rows.recv().await {
        for row in chunk.expect("a chunk") {
            // The missing group after the values.
            let order = (
                row.day_ms,
                row.tenant.clone(),
                row.value.is_none(),
                row.value.clone(),
            );
            assert!(
                previous.as_ref().is_none_or(|previous| *previous < order),
                "rows come once each, in (day, tenant, value) order: {previous:?} then {order:?}"
            );
            previous = Some(order);
            model.insert((row.day_ms, row.tenant, row.value), row.counts);
        }
    }
    model
}

/// The default scopes' usage the engine holds, against the events' own.
async fn assert_usage(engine: &Engine, events: &[(&str, Event<'static>)]) {
    for scope in ["tenant", "model", "user_id"] {
        assert_eq!(
            stored_usage(engine.store.as_ref(), every_day(None, scope)).await,
            brute_usage(events, scope),
            "{}: usage per {scope}",
            engine.name
        );
    }
}

#[tokio::test]
async fn usage_adds_up_per_scope_and_day_and_ranks_filters_exports_and_expires() {
    const DAY: i64 = 86_400_000;
    let config = UsageConfig {
        scopes: vec![
            UsageScope::Tenant,
            UsageScope::Model,
            UsageScope::UserId,
            UsageScope::Attribute("customer".to_string()),
        ],
    };
    for engine in engines().await {
        // Three days, two tenants, users and customers that repeat, some events
        // without either.
        let events: Vec<(&str, Event<'static>)> = (0..60)
            .map(|n| {
                let tenant = if n % 5 == 0 { "b" } else { "a" };
                let mut event = event(
                    n,
                    if n % 3 == 0 { "m2" } else { "m1" },
                    T0 + (n as i64 % 3) * DAY + n as i64,
                    false,
                );
                if n % 7 == 0 {
                    event.user_id = None;
                }
                event.attributes = match n % 4 {
                    0 => Vec::new(),
                    customer => vec![(
                        Cow::Borrowed("customer"),
                        Cow::Owned(format!("c{customer}")),
                    )],
                };
                (tenant, event)
            })
            .collect();
        for (index, chunk) in events.chunks(25).enumerate() {
            let first = index as u64 * 25;
            let mut batch = batch_of(0, first, T0, chunk);
            batch.usage = usage_of(chunk, &config);
            engine.store.commit(batch).await.expect("commit");
        }
        for scope in ["tenant", "model", "user_id", "attr.customer"] {
            assert_eq!(
                stored_usage(engine.store.as_ref(), every_day(None, scope)).await,
                brute_usage(&events, scope),
                "{}: export of {scope}",
                engine.name
            );
        }
        // Ranked: one tenant, the second and third days, by cost, top 2.
        let day0 = T0.div_euclid(DAY) * DAY;
        let of_a: Vec<(&str, Event<'static>)> = events
            .iter()
            .filter(|(tenant, event)| *tenant == "a" && event.timestamp_ms >= day0 + DAY)
            .cloned()
            .collect();
        let totals = |events: &[(&str, Event<'static>)], scope: &str| {
            let mut totals: BTreeMap<Option<String>, UsageCounts> = BTreeMap::new();
            for ((_, _, value), counts) in brute_usage(events, scope) {
                totals.entry(value).or_default().add(&counts);
            }
            totals
        };
        let query = UsageQuery {
            tenant: Some("a".to_string()),
            scope: "user_id".to_string(),
            from_day_ms: day0 + DAY,
            to_day_ms: day0 + 3 * DAY,
            filter: None,
        };
        let expected = totals(&of_a, "user_id");
        for (order, ascending) in [(UsageOrder::CostUsd, false), (UsageOrder::Requests, true)] {
            let ranking = UsageRanking {
                order,
                ascending,
                top: 2,
            };
            let answer = engine
                .store
                .usage(query.clone(), ranking)
                .await
                .expect("usage");
            let mut ranked: Vec<(Option<String>, UsageCounts)> =
                expected.clone().into_iter().collect();
            // By the metric, ties by value with the missing group last.
            ranked.sort_by(|(a_value, a), (b_value, b)| {
                let by_metric = order.of(a).cmp(&order.of(b));
                let by_metric = if ascending {
                    by_metric
                } else {
                    by_metric.reverse()
                };
                by_metric
                    .then(a_value.is_none().cmp(&b_value.is_none()))
                    .then(a_value.cmp(b_value))
            });
            ranked.truncate(2);
            assert_eq!(answer.groups, ranked, "{}: {order:?}", engine.name);
            let mut total = UsageCounts::default();
            for counts in expected.values() {
                total.add(counts);
            }
            assert_eq!(answer.total, total, "{}", engine.name);
            assert_eq!(
                answer.since_ms, None,
                "{}: counted from the start",
                engine.name
            );
        }
        // Filters on the scope's values: listed, negated, the missing group.
        for text in [
            "user_id:user-1|user-2",
            "user_id:!user-1|null",
            "user_id:null",
        ] {
            let filter = Filter::parse(text).expect("a filter");
            let answer = engine
                .store
                .usage(
                    UsageQuery {
                        filter: Some(filter.clone()),
                        ..query.clone()
                    },
                    UsageRanking {
                        order: UsageOrder::Requests,
                        ascending: false,
                        top: 1_000,
                    },
                )
                .await
                .expect("usage");
            let passing: BTreeMap<Option<String>, UsageCounts> = expected
                .iter()
                .filter(|(value, _)| filter.matches_value(value.as_deref()))
                .map(|(value, counts)| (value.clone(), *counts))
                .collect();
            assert!(!passing.is_empty(), "{text} selects something");
            let mut total = UsageCounts::default();
            for counts in passing.values() {
                total.add(counts);
            }
            assert_eq!(answer.total, total, "{}: total of {text}", engine.name);
            let answered: BTreeMap<Option<String>, UsageCounts> =
                answer.groups.into_iter().collect();
            assert_eq!(answered, passing, "{}: {text}", engine.name);
        }
        // A replayed batch adds nothing.
        let mut replay = batch_of(0, 25, T0, &events[25..50]);
        replay.usage = usage_of(&events[25..50], &config);
        assert!(engine.store.commit(replay).await.is_err());
        assert_eq!(
            stored_usage(engine.store.as_ref(), every_day(None, "attr.customer")).await,
            brute_usage(&events, "attr.customer"),
            "{}: a refused batch adds no usage",
            engine.name
        );
        // Retention: the first day ends before the cut, the second does not.
        engine
            .store
            .apply_retention(Retention {
                rollups_before_ms: day0 + DAY + 1,
                raw_before_ms: day0,
                payloads_before_ms: day0,
                dedup_horizon_ms: 3_600_000,
            })
            .await
            .expect("retention");
        let kept: Vec<(&str, Event<'static>)> = events
            .iter()
            .filter(|(_, event)| event.timestamp_ms >= day0 + DAY)
            .cloned()
            .collect();
        assert_eq!(
            stored_usage(engine.store.as_ref(), every_day(None, "model")).await,
            brute_usage(&kept, "model"),
            "{}: retention removes whole days",
            engine.name
        );
    }
}

/// A budget's spend read: each user's spend in the day read and in its month up to that
/// day, cut in the engine at the floor and the bound, as computed here from the events.
#[tokio::test]
async fn a_budget_spend_read_sums_the_day_and_the_month_and_cuts_at_the_floor_and_bound() {
    use ais_store::usage::{SpendLimits, SpendQuery, ValueSpend};
    const DAY: i64 = 86_400_000;
    /// 2026-03-01T00:00:00Z.
    const MARCH_1: i64 = 1_772_323_200_000;
    let today = MARCH_1 + 2 * DAY;
    let config = UsageConfig {
        scopes: vec![UsageScope::Tenant, UsageScope::UserId],
    };
    // (tenant, user, day, cost micros, tokens): the first and third day of March, the
    // last day of February, another tenant, and events without a user.
    let spends: [(&str, Option<&str>, i64, u64, u64); 10] = [
        ("a", Some("u-a"), MARCH_1, 900, 10),
        ("a", Some("u-a"), today, 100, 10),
        ("a", Some("u-b"), today, 600, 1),
        ("a", Some("u-b"), MARCH_1 - DAY, 50_000, 1),
        ("a", Some("u-c"), today, 499, 100),
        ("a", Some("u-d"), MARCH_1, 10_000, 1),
        ("a", Some("u-e"), today, 500, 0),
        ("b", Some("u-a"), today, 90_000, 0),
        ("a", None, today, 80_000, 0),
        ("a", Some("u-f"), today + DAY, 70_000, 0),
    ];
    let events: Vec<(&str, Event<'static>)> = spends
        .iter()
        .enumerate()
        .map(|(n, (tenant, user, day, cost, tokens))| {
            let mut event = event(n as u64, "m", day + 3_600_000 + n as i64, false);
            event.user_id = user.map(|user| Cow::Owned(user.to_string()));
            event.cost_micros = Some(*cost);
            event.input_tokens = Some(*tokens);
            event.output_tokens = Some(0);
            (*tenant, event)
        })
        .collect();
    // What each user of tenant "a" spent today and this month up to today.
    let brute = |limits: &SpendLimits, floor: u32| -> Vec<ValueSpend> {
        let mut by_user: BTreeMap<String, ValueSpend> = BTreeMap::new();
        for (tenant, user, day, cost, tokens) in spends {
            let (Some(user), "a") = (user, tenant) else {
                continue;
            };
            if !(MARCH_1..=today).contains(&day) {
                continue;
            }
            let spend = by_user
                .entry(user.to_string())
                .or_insert_with(|| ValueSpend {
                    value: user.to_string(),
                    ..ValueSpend::default()
                });
            spend.month_micros += cost;
            spend.month_tokens += tokens;
            if day == today {
                spend.day_micros += cost;
                spend.day_tokens += tokens;
            }
        }
        let terms = |spend: &ValueSpend| {
            [
                (spend.day_micros, limits.day_micros),
                (spend.day_tokens, limits.day_tokens),
                (spend.month_micros, limits.month_micros),
                (spend.month_tokens, limits.month_tokens),
            ]
        };
        let share = |spend: &ValueSpend| {
            terms(spend)
                .iter()
                .filter_map(|(spent, limit)| limit.map(|limit| *spent as f64 / limit as f64))
                .fold(0.0, f64::max)
        };
        let mut over: Vec<ValueSpend> = by_user
            .into_values()
            .filter(|spend| {
                terms(spend).iter().any(|(spent, limit)| {
                    limit.is_some_and(|limit| spent * 100 >= limit * u64::from(floor))
                })
            })
            .collect();
        over.sort_by(|a, b| share(b).total_cmp(&share(a)).then(a.value.cmp(&b.value)));
        over
    };
    let query = |limits: SpendLimits, value: Option<&str>, limit: usize| SpendQuery {
        tenant: "a".to_string(),
        scope: "user_id".to_string(),
        value: value.map(str::to_string),
        day_ms: today,
        month_from_ms: MARCH_1,
        limits,
        floor_percent: 50,
        limit,
    };
    // A floor below the thresholds (a budget with a forecast reads its values from
    // there): more values, still the highest share first and cut at the bound.
    let below = |limits: SpendLimits, floor_percent: u32, limit: usize| SpendQuery {
        floor_percent,
        ..query(limits, None, limit)
    };
    for engine in engines().await {
        let mut batch = batch_of(0, 0, today, &events);
        batch.usage = usage_of(&events, &config);
        engine.store.commit(batch).await.expect("commit");
        let daily = SpendLimits {
            day_micros: Some(1_000),
            ..SpendLimits::default()
        };
        let monthly = SpendLimits {
            month_micros: Some(1_000),
            day_tokens: Some(150),
            ..SpendLimits::default()
        };
        for (limits, bound) in [(daily, 10), (monthly, 10), (monthly, 2)] {
            let answer = engine
                .store
                .budget_spend(query(limits, None, bound))
                .await
                .expect("a spend read");
            let mut expected = brute(&limits, 50);
            assert!(
                !expected.is_empty(),
                "the scenario has users past the floor"
            );
            let cut = expected.len() > bound;
            expected.truncate(bound);
            assert_eq!(answer.values, expected, "{}: {limits:?}", engine.name);
            assert_eq!(answer.cut, cut, "{}: {limits:?}", engine.name);
        }
        for (limits, floor, bound) in [(daily, 10, 10), (daily, 0, 10), (daily, 10, 3)] {
            let answer = engine
                .store
                .budget_spend(below(limits, floor, bound))
                .await
                .expect("a spend read");
            let mut expected = brute(&limits, floor);
            assert!(
                expected.len() > brute(&limits, 50).len(),
                "the scenario has users between the floor and 50%"
            );
            let cut = expected.len() > bound;
            expected.truncate(bound);
            assert_eq!(answer.values, expected, "{}: {floor}%", engine.name);
            assert_eq!(answer.cut, cut, "{}: {floor}%", engine.name);
        }
        // One value is read whatever it spent, below the floor too.
        let answer = engine
            .store
            .budget_spend(query(daily, Some("u-c"), 10))
            .await
            .expect("a spend read");
        assert_eq!(
            answer.values,
            [ValueSpend {
                value: "u-c".to_string(),
                day_micros: 499,
                day_tokens: 100,
                month_micros: 499,
                month_tokens: 100,
            }],
            "{}",
            engine.name
        );
        let nobody = engine
            .store
            .budget_spend(query(daily, Some("u-z"), 10))
            .await
            .expect("a spend read");
        assert!(nobody.values.is_empty(), "{}", engine.name);
    }
}

/// Event `n` of [`payload_events`]: its input names it, mixed case; some lack one.
fn with_payloads(n: u64) -> Event<'static> {
    let topic = ["Refund", "refund please", "SHIPPING", "Größe Über"][(n % 4) as usize];
    Event {
        input: (!n.is_multiple_of(5)).then(|| Cow::Owned(format!("q{n}: {topic}"))),
        output: (!n.is_multiple_of(3)).then(|| {
            Cow::Borrowed(["Done.", "We issued a REFUND", "über-fast shipping"][(n % 3) as usize])
        }),
        // Two hours from T0, one event every two minutes.
        ..event(n, "m", T0 + n as i64 * 120_000, true)
    }
}

fn payload_events() -> Vec<(&'static str, Event<'static>)> {
    (0..60)
        .map(|n| (if n % 6 == 0 { "b" } else { "a" }, with_payloads(n)))
        .collect()
}

/// Tenant `a`'s event ids whose payloads hold `text` (any case), newest first: the
/// model of a search.
fn searched(events: &[(&str, Event<'static>)], text: &str) -> Vec<String> {
    let mut found: Vec<&Event<'static>> = events
        .iter()
        .filter(|(tenant, event)| {
            *tenant == "a"
                && ais_testkit::payload_holds(
                    [event.input.as_deref(), event.output.as_deref()],
                    text,
                )
        })
        .map(|(_, event)| event)
        .collect();
    found.sort_by_key(|event| std::cmp::Reverse(event.timestamp_ms));
    found.into_iter().map(event_id_of).collect()
}

/// Every event of `tenant`, with its payloads.
fn with_payloads_of(tenant: &str) -> EventQuery {
    EventQuery {
        payloads: PayloadRead {
            include: true,
            search: None,
        },
        ..all_events(tenant)
    }
}

fn search_query(text: &str, max_rows: u64) -> EventQuery {
    EventQuery {
        payloads: PayloadRead {
            include: true,
            search: Some(PayloadSearch::new(text, max_rows)),
        },
        ..all_events("a")
    }
}

#[tokio::test]
async fn payloads_are_kept_searched_bounded_and_retained_by_every_engine() {
    let events = payload_events();
    for engine in engines().await {
        let name = engine.name;
        engine
            .store
            .commit(batch_of(0, 0, T0, &events))
            .await
            .expect("commit");
        // Asked for, each event's payloads as committed; not asked for, none.
        let included = engine
            .store
            .events(with_payloads_of("a"))
            .await
            .expect("events");
        let committed: BTreeMap<String, &Event<'static>> = events
            .iter()
            .filter(|(tenant, _)| *tenant == "a")
            .map(|(_, event)| (event_id_of(event), event))
            .collect();
        assert_eq!(included.len(), committed.len(), "{name}");
        for stored in &included {
            let want = committed[&event_id_of(&stored.event)];
            assert_eq!(&stored.event, want, "{name}: payloads as committed");
        }
        let plain = engine.store.events(all_events("a")).await.expect("events");
        assert!(
            plain
                .iter()
                .all(|stored| stored.event.input.is_none() && stored.event.output.is_none()),
            "{name}: no payloads unless asked"
        );
        // Searches against brute force, in other cases than the events'.
        assert!(!searched(&events, "refund").is_empty());
        for text in [
            "REFUND",
            "über",
            "q12:",
            "shipping",
            "nowhere in any payload",
        ] {
            let found: Vec<String> = engine
                .store
                .events(search_query(text, 1_000_000))
                .await
                .expect("search")
                .iter()
                .map(|stored| event_id_of(&stored.event))
                .collect();
            assert_eq!(found, searched(&events, text), "{name}: q={text}");
        }
        // A search past its bound is refused, naming it.
        match engine.store.events(search_query("nowhere", 1)).await {
            Err(StoreError::Limit(message)) => {
                assert!(message.contains("more than 1 events"), "{name}: {message}")
            }
            other => panic!("{name}: a search past its bound answered {other:?}"),
        }
        // Payload retention: the first hour's payloads go, every event stays.
        engine
            .store
            .apply_retention(Retention {
                rollups_before_ms: 0,
                raw_before_ms: 0,
                payloads_before_ms: T0 + 3_600_000,
                dedup_horizon_ms: i64::MAX,
            })
            .await
            .expect("retention");
        let kept = engine
            .store
            .events(with_payloads_of("a"))
            .await
            .expect("events");
        assert_eq!(kept.len(), committed.len(), "{name}: events stay");
        for stored in &kept {
            let committed = committed[&event_id_of(&stored.event)];
            let want = if committed.timestamp_ms < T0 + 3_600_000 {
                Event {
                    input: None,
                    output: None,
                    ..committed.clone()
                }
            } else {
                committed.clone()
            };
            assert_eq!(stored.event, want, "{name}: after payload retention");
        }
        assert!(
            kept.iter().any(|stored| stored.event.input.is_some()),
            "{name}: the second hour keeps its payloads"
        );
    }
}
