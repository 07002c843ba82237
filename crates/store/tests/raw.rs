//! Raw events in the embedded store, against real Parquet files and SQLite: every
//! committed event found exactly once by every filter, across many files, compaction,
//! retention, reopen and orphan sweeps. The expected answers come from a plain model:
//! the list of events committed, filtered and sorted in the test.

use std::borrow::Cow;
use std::path::Path;

use ais_model::{wire, Event, EventId, Status};
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::{
    BatchCommit, EventQuery, LoggedRecord, PayloadRead, PayloadSearch, Retention, StoreError,
    StoredEvent,
};
use bytes::Bytes;

const HOUR_MS: i64 = 3_600_000;
/// 2026-11-22T10:00:00Z.
const BASE_MS: i64 = 1_795_341_600_000;

/// A deterministic event: `n` decides every field.
fn event(n: u64) -> (String, Event<'static>) {
    let tenant = ["acme", "globex"][(n % 2) as usize].to_string();
    let model = ["gpt-4o", "claude", "llama"][(n % 3) as usize];
    let owned = |text: String| Some(Cow::Owned(text));
    let event = Event {
        provider: owned("openai".to_string()),
        ttft_ms: (!n.is_multiple_of(4)).then_some((n % 97) as f64 * 1.5),
        input_tokens: Some(n * 3),
        output_tokens: (!n.is_multiple_of(5)).then_some(n % 1000),
        cost_micros: Some(n * 7),
        status: if n.is_multiple_of(11) {
            Status::Error
        } else {
            Status::Ok
        },
        error_type: n.is_multiple_of(11).then_some(Cow::Borrowed("timeout")),
        user_id: owned(format!("user-{}", n % 37)),
        trace_id: owned(format!("trace-{}", n / 4)),
        span_id: owned(format!("span-{n}")),
        attributes: if n.is_multiple_of(6) {
            vec![(
                Cow::Borrowed("service.name"),
                Cow::Owned(format!("svc-{}", n % 3)),
            )]
        } else {
            Vec::new()
        },
        input: payload_input(n),
        output: payload_output(n),
        // Spread over three hours, not in time order within a batch.
        ..Event::new(
            model,
            EventId::Client(Cow::Owned(format!("id-{n:08}"))),
            BASE_MS + ((n * 2_654_435_761) % (3 * HOUR_MS as u64)) as i64,
            ((n * 31) % 5_000) as f64 + 0.25,
        )
    };
    (tenant, event)
}

/// What event `n` was sent, when it carries a payload: words in mixed case.
fn payload_input(n: u64) -> Option<Cow<'static, str>> {
    let topic = ["Refund", "refund please", "SHIPPING", "Straße Über"][(n % 4) as usize];
    (!n.is_multiple_of(5)).then(|| Cow::Owned(format!("{topic} for order-{}", n % 50)))
}

/// What event `n` answered, when it carries a payload.
fn payload_output(n: u64) -> Option<Cow<'static, str>> {
    let answer = ["Done.", "We issued a REFUND", "über-fast shipping"][(n % 3) as usize];
    (!n.is_multiple_of(7)).then(|| Cow::Owned(answer.to_string()))
}

struct Fixture {
    store: SqliteStore,
    committed: Vec<(String, Event<'static>)>,
    next_offset: u64,
}

impl Fixture {
    fn open(dir: &Path) -> Self {
        Self {
            store: SqliteStore::open(&dir.join("ais.sqlite")).expect("open store"),
            committed: Vec::new(),
            next_offset: 0,
        }
    }

    /// A store in `dir` with `batches` batches of `size` events committed.
    async fn committed(dir: &Path, batches: u64, size: u64) -> Self {
        let mut fixture = Self::open(dir);
        for batch in 0..batches {
            fixture.commit(batch * size..(batch + 1) * size).await;
        }
        fixture
    }

    /// Commits events `range` as one batch.
    async fn commit(&mut self, range: std::ops::Range<u64>) {
        let mut records = Vec::new();
        for n in range {
            let (tenant, event) = event(n);
            let mut buffer = Vec::new();
            wire::encode_into(&tenant, &event, &mut buffer);
            records.push(LoggedRecord {
                offset: self.next_offset + records.len() as u64,
                bytes: Bytes::from(buffer),
            });
            self.committed.push((tenant, event));
        }
        let count = records.len() as u64;
        self.store
            .commit(BatchCommit {
                partition: 0,
                first_offset: self.next_offset,
                next_offset: self.next_offset + count,
                watermark_ms: 0,
                partials: Vec::new(),
                dedup: Vec::new(),
                events: records,
                dead_letters: Vec::new(),
                dimensions: Default::default(),
                ledger: Vec::new(),
                usage: Vec::new(),
            })
            .await
            .expect("commit");
        self.next_offset += count;
    }
}

fn query(tenant: &str) -> EventQuery {
    EventQuery {
        tenant: tenant.to_string(),
        from_ms: BASE_MS - HOUR_MS,
        to_ms: BASE_MS + 4 * HOUR_MS,
        trace_id: None,
        user_id: None,
        model: None,
        status: None,
        min_latency_ms: None,
        filters: Default::default(),
        limit: 1_000,
        payloads: Default::default(),
    }
}

fn id_of(event: &Event<'_>) -> String {
    match &event.event_id {
        EventId::Client(id) => id.to_string(),
        EventId::Generated(id) => id.to_string(),
    }
}

/// What `query` must answer, from the model.
fn expected(committed: &[(String, Event<'static>)], query: &EventQuery) -> Vec<StoredEvent> {
    let mut matching: Vec<StoredEvent> = committed
        .iter()
        .filter(|(tenant, event)| {
            *tenant == query.tenant
                && event.timestamp_ms >= query.from_ms
                && event.timestamp_ms < query.to_ms
                && query
                    .model
                    .as_deref()
                    .is_none_or(|model| event.model == model)
                && query
                    .trace_id
                    .as_deref()
                    .is_none_or(|trace| event.trace_id.as_deref() == Some(trace))
                && query
                    .user_id
                    .as_deref()
                    .is_none_or(|user| event.user_id.as_deref() == Some(user))
                && query.status.is_none_or(|status| event.status == status)
                && query
                    .min_latency_ms
                    .is_none_or(|min| event.latency_ms >= min)
                && query
                    .payloads
                    .search
                    .as_ref()
                    .is_none_or(|search| brute_force_search(search.text(), event))
        })
        .map(|(tenant, event)| StoredEvent {
            tenant: tenant.clone(),
            event: if query.payloads.include {
                event.clone()
            } else {
                Event {
                    input: None,
                    output: None,
                    ..event.clone()
                }
            },
        })
        .collect();
    matching.sort_by(|a, b| {
        b.event
            .timestamp_ms
            .cmp(&a.event.timestamp_ms)
            .then_with(|| id_of(&b.event).cmp(&id_of(&a.event)))
    });
    matching.truncate(query.limit);
    matching
}

/// The model of a payload search: either payload, lowercased, holds the text.
fn brute_force_search(lowercase: &str, event: &Event<'_>) -> bool {
    ais_testkit::payload_holds([event.input.as_deref(), event.output.as_deref()], lowercase)
}

fn searching(text: &str, include: bool) -> PayloadRead {
    PayloadRead {
        include,
        search: Some(PayloadSearch::new(text, 1_000_000)),
    }
}

/// A spread of queries: every filter alone and together, small limits.
fn queries() -> Vec<EventQuery> {
    let mut all = Vec::new();
    for tenant in ["acme", "globex", "nobody"] {
        all.push(query(tenant));
        all.push(EventQuery {
            filters: Default::default(),
            limit: 7,
            ..query(tenant)
        });
        all.push(EventQuery {
            trace_id: Some("trace-1234".to_string()),
            ..query(tenant)
        });
        all.push(EventQuery {
            trace_id: Some("trace-does-not-exist".to_string()),
            ..query(tenant)
        });
        all.push(EventQuery {
            user_id: Some("user-5".to_string()),
            filters: Default::default(),
            limit: 50,
            ..query(tenant)
        });
        all.push(EventQuery {
            model: Some("claude".to_string()),
            status: Some(Status::Error),
            ..query(tenant)
        });
        all.push(EventQuery {
            min_latency_ms: Some(4_900.0),
            ..query(tenant)
        });
        all.push(EventQuery {
            from_ms: BASE_MS + HOUR_MS,
            to_ms: BASE_MS + HOUR_MS + 5 * 60_000,
            ..query(tenant)
        });
        all.push(EventQuery {
            payloads: PayloadRead {
                include: true,
                search: None,
            },
            limit: 300,
            ..query(tenant)
        });
        for (text, include) in [
            ("REFUND", true),
            ("refund", false),
            ("über", true),
            ("order-7", true),
            ("no such text", true),
        ] {
            all.push(EventQuery {
                payloads: searching(text, include),
                ..query(tenant)
            });
        }
        all.push(EventQuery {
            model: Some("claude".to_string()),
            payloads: searching("Shipping", true),
            limit: 20,
            ..query(tenant)
        });
    }
    all
}

async fn check_every_query(fixture: &Fixture, context: &str) {
    for query in queries() {
        let found = fixture.store.events(query.clone()).await.expect("events");
        let want = expected(&fixture.committed, &query);
        assert_eq!(found.len(), want.len(), "{context}: count for {query:?}");
        assert!(found == want, "{context}: events differ for {query:?}");
    }
}

fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(parquet_files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn total_rows(store: &SqliteStore) -> u64 {
    store.raw_stats().rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_is_found_once_by_every_filter_across_many_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 120 batches of 100: each batch spans three hours, so 360 files.
    let fixture = Fixture::committed(dir.path(), 120, 100).await;
    assert_eq!(fixture.store.raw_stats().files, 360);
    assert_eq!(total_rows(&fixture.store), 12_000);
    check_every_query(&fixture, "before compaction").await;

    // A drill-down by trace id finds exactly the spans of that trace, in both tenants.
    let trace = EventQuery {
        trace_id: Some("trace-2001".to_string()),
        ..query("acme")
    };
    let spans: Vec<String> = fixture
        .store
        .events(trace)
        .await
        .expect("trace")
        .iter()
        .map(|stored| id_of(&stored.event))
        .collect();
    let mut sorted = spans.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["id-00008004", "id-00008006"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_retention_keep_exact_counts_and_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fixture = Fixture::committed(dir.path(), 40, 250).await;
    let files_before = fixture.store.raw_stats().files;
    assert_eq!(files_before, 120);

    // Only the first hour is final: its 40 files become one.
    let report = fixture
        .store
        .compact(BASE_MS + HOUR_MS)
        .await
        .expect("compact");
    assert_eq!(report.hours, 1);
    assert_eq!(report.files_in, 40);
    assert_eq!(report.files_out, 1);
    assert_eq!(fixture.store.raw_stats().files, files_before - 40 + 1);
    assert_eq!(total_rows(&fixture.store), 10_000);
    check_every_query(&fixture, "after compacting one hour").await;

    // Late events for the compacted hour land in new small files; compacting again
    // merges them with the compacted file, still exact.
    fixture.commit(10_000..10_300).await;
    let report = fixture
        .store
        .compact(BASE_MS + 3 * HOUR_MS)
        .await
        .expect("compact all");
    assert_eq!(report.hours, 3);
    assert_eq!(fixture.store.raw_stats().files, 3);
    assert_eq!(total_rows(&fixture.store), 10_300);
    check_every_query(&fixture, "after compacting every hour").await;
    // What is on disk is what the catalog lists: replaced files are gone.
    assert_eq!(parquet_files(&dir.path().join("events")).len(), 3);

    // Reopening reads the same catalog.
    drop(fixture.store);
    let committed = std::mem::take(&mut fixture.committed);
    let mut fixture = Fixture::open(dir.path());
    fixture.committed = committed;
    fixture.next_offset = 10_300;
    check_every_query(&fixture, "after reopening").await;

    // Retention by whole hours: a cut inside the second hour keeps it whole.
    fixture
        .store
        .apply_retention(Retention {
            rollups_before_ms: 0,
            raw_before_ms: BASE_MS + HOUR_MS + 30 * 60_000,
            payloads_before_ms: BASE_MS + HOUR_MS + 30 * 60_000,
            dedup_horizon_ms: i64::MAX,
        })
        .await
        .expect("retention");
    fixture
        .committed
        .retain(|(_, event)| event.timestamp_ms >= BASE_MS + HOUR_MS);
    assert_eq!(total_rows(&fixture.store), fixture.committed.len() as u64);
    assert_eq!(fixture.store.raw_stats().files, 2);
    check_every_query(&fixture, "after retention").await;
    assert_eq!(parquet_files(&dir.path().join("events")).len(), 2);
    assert!(
        !dir.path().join("events/dt=2026-11-22/hour=10").exists(),
        "the expired hour's directory is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_no_commit_registered_are_deleted_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fixture = Fixture::open(dir.path());
    fixture.commit(0..500).await;
    let events_dir = dir.path().join("events");
    let registered = parquet_files(&events_dir);
    assert_eq!(registered.len(), 3);
    // What a crash can leave: a batch file written before its commit, a temporary
    // file, a compaction output never swapped in.
    let hour = events_dir.join("dt=2026-11-22/hour=11");
    std::fs::write(hour.join("p0-00000000000000000500.parquet"), b"PAR1").expect("orphan");
    std::fs::write(hour.join("p0-00000000000000000600.parquet.tmp"), b"x").expect("tmp");
    std::fs::create_dir_all(events_dir.join("dt=2026-11-23/hour=00")).expect("dir");
    std::fs::copy(
        &registered[0],
        events_dir.join("dt=2026-11-23/hour=00/c-x.parquet"),
    )
    .expect("copy");
    drop(fixture.store);

    let committed = std::mem::take(&mut fixture.committed);
    let mut fixture = Fixture::open(dir.path());
    fixture.committed = committed;
    let mut left = parquet_files(&events_dir);
    left.sort();
    let mut want = registered.clone();
    want.sort();
    assert_eq!(left, want, "only registered files remain");
    assert!(!events_dir.join("dt=2026-11-23").exists());
    check_every_query(&fixture, "after the sweep").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_are_returned_and_searched_only_when_asked_and_a_search_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Fixture::committed(dir.path(), 10, 200).await;
    // The model finds payloads to return and matches to search: no check is vacuous.
    let included = EventQuery {
        payloads: PayloadRead {
            include: true,
            search: None,
        },
        ..query("acme")
    };
    let want = expected(&fixture.committed, &included);
    assert!(want.iter().any(|stored| stored.event.input.is_some()));
    assert!(!expected(
        &fixture.committed,
        &EventQuery {
            payloads: searching("über", false),
            ..query("acme")
        }
    )
    .is_empty());
    check_every_query(&fixture, "with payloads").await;

    // A search examines the payloads of every event of the tenant in the range that
    // passes the other filters: with a text no event holds, all of them.
    let in_scope = expected(&fixture.committed, &query("globex")).len() as u64;
    let bounded = |max_rows| EventQuery {
        payloads: PayloadRead {
            include: false,
            search: Some(PayloadSearch::new("no such text", max_rows)),
        },
        ..query("globex")
    };
    let found = fixture
        .store
        .events(bounded(in_scope))
        .await
        .expect("within the bound");
    assert!(found.is_empty());
    match fixture.store.events(bounded(in_scope - 1)).await {
        Err(StoreError::Limit(message)) => {
            assert!(
                message.contains(&format!("more than {} events", in_scope - 1))
                    && message.contains("narrow the range"),
                "{message}"
            )
        }
        other => panic!("a search past its bound must answer the limit, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_retention_deletes_payloads_but_keeps_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 20 batches over three hours: 20 files per hour, more than one pass rewrites.
    let mut fixture = Fixture::committed(dir.path(), 20, 150).await;
    let rows = total_rows(&fixture.store);
    let cut = BASE_MS + HOUR_MS + 30 * 60_000;
    let retention = Retention {
        rollups_before_ms: 0,
        raw_before_ms: 0,
        payloads_before_ms: cut,
        dedup_horizon_ms: i64::MAX,
    };
    let first_hour_payloads = |fixture: &Fixture| {
        fixture
            .committed
            .iter()
            .any(|(_, event)| event.timestamp_ms < BASE_MS + HOUR_MS && event.input.is_some())
    };
    assert!(
        first_hour_payloads(&fixture),
        "the first hour has payloads to drop"
    );
    // Each pass rewrites a bounded number of files; a few passes finish the hour.
    let mut passes = 0;
    loop {
        let files_before = parquet_files(&dir.path().join("events")).len();
        fixture
            .store
            .apply_retention(retention)
            .await
            .expect("retention");
        passes += 1;
        assert_eq!(total_rows(&fixture.store), rows, "events stay");
        assert_eq!(
            parquet_files(&dir.path().join("events")).len(),
            files_before
        );
        let searched = fixture
            .store
            .events(EventQuery {
                to_ms: BASE_MS + HOUR_MS,
                payloads: searching("order-", true),
                ..query("acme")
            })
            .await
            .expect("search");
        if searched.is_empty() {
            break;
        }
        assert!(passes < 10, "payload retention makes no progress");
    }
    assert!(
        passes > 1,
        "one pass is bounded: it rewrote every file at once"
    );
    // The model: payloads of the whole hours before the cut are gone, the rest stay.
    for (_, event) in &mut fixture.committed {
        if event.timestamp_ms < BASE_MS + HOUR_MS {
            event.input = None;
            event.output = None;
        }
    }
    assert!(!first_hour_payloads(&fixture));
    check_every_query(&fixture, "after payload retention").await;

    // Late events with payloads for that hour, compacted with the rewritten files.
    fixture.commit(3_000..3_300).await;
    fixture
        .store
        .compact(BASE_MS + 3 * HOUR_MS)
        .await
        .expect("compact");
    assert_eq!(fixture.store.raw_stats().files, 3);
    check_every_query(&fixture, "after compacting rewritten files").await;
    drop(fixture.store);
    let committed = std::mem::take(&mut fixture.committed);
    let mut fixture = Fixture::open(dir.path());
    fixture.committed = committed;
    check_every_query(&fixture, "after reopening").await;
}
