//! Records the stream cannot process become dead letters and the rest flows past them:
//! undecodable and invalid records are caught by the batch that reads them; a record
//! the store refuses is found by committing the batch in parts; a store that refuses
//! everything is waited for, not blamed on a record; with a sink, letters are durable
//! there before the commit that skips their records.

mod common;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ais_log::wal::{Wal, WalConfig};
use ais_log::{Log, RecordBatch};
use ais_model::dead_letter::{
    DeadLetter, DeadLetterError, DeadLetterQuery, DeadLetterSink, Reason,
};
use ais_model::{wire, Event, EventId};
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::{BatchCommit, RollupQuery, StoreError};
use ais_stream::processor::{ProcessorError, POISON_REFUSALS};
use ais_stream::{Processor, ProcessorConfig};
use async_trait::async_trait;
use common::{wait_caught_up, CommitHook, Hooked};
use tokio_util::sync::CancellationToken;

const NOW: i64 = 1_795_339_620_000;

fn good(id: &str) -> Vec<u8> {
    let event = Event {
        input_tokens: Some(3),
        ..Event::new("m", EventId::Client(Cow::Owned(id.to_string())), NOW, 5.0)
    };
    let mut bytes = Vec::new();
    wire::encode_into("t", &event, &mut bytes);
    bytes
}

fn config() -> ProcessorConfig {
    ProcessorConfig {
        max_batch_records: 7,
        max_backoff: Duration::from_millis(5),
        ..ProcessorConfig::default()
    }
}

/// A WAL in `dir` holding `records`, one append per record.
async fn wal_with(dir: &std::path::Path, records: &[Vec<u8>]) -> Arc<Wal> {
    let wal = Arc::new(Wal::open(WalConfig::new(dir.join("wal"))).expect("wal"));
    for record in records {
        let mut batch = RecordBatch::default();
        batch.push(record);
        wal.append(batch).await.expect("append");
    }
    wal
}

async fn requests(store: &SqliteStore) -> u64 {
    store
        .rollups(RollupQuery {
            tenant: "t".to_string(),
            from_ms: 0,
            to_ms: i64::MAX,
            model: None,
        })
        .await
        .expect("rollups")
        .iter()
        .map(|row| row.partial.requests)
        .sum()
}

async fn stored_letters(store: &SqliteStore) -> Vec<DeadLetter> {
    store
        .dead_letters(DeadLetterQuery {
            tenant: None,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            limit: 1_000,
            oldest_first: true,
        })
        .await
        .expect("letters")
}

/// Runs a processor over `wal` into `store` until it has caught up, then stops it.
async fn run_until_caught_up(
    processor: Processor,
    wal: &Arc<Wal>,
    store: Arc<dyn BatchSink>,
) -> Result<(), ProcessorError> {
    let progress = processor.progress();
    let stop = CancellationToken::new();
    let log: Arc<dyn Log> = wal.clone();
    let task = tokio::spawn(processor.run(log, store, stop.clone()));
    wait_caught_up(&progress, wal.as_ref(), &task).await;
    stop.cancel();
    task.await.expect("join")
}

/// The ledger summed over every hour, checking on the way that each hour balances.
async fn ledger_totals(store: &SqliteStore) -> ais_store::ledger::LedgerCounts {
    let rows = store
        .ledger(ais_store::ledger::LedgerQuery {
            tenant: None,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
        })
        .await
        .expect("ledger");
    let mut total = ais_store::ledger::LedgerCounts::default();
    for row in rows {
        assert!(row.counts.balanced(), "unbalanced: {row:?}");
        total.add(&row.counts);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_invalid_records_are_dead_lettered_and_the_rest_flows_past() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut future = good("future");
    future[0] = wire::VERSION_4 + 1;
    let empty_model = {
        let mut bytes = Vec::new();
        wire::encode_into(
            "t",
            &Event::new("", EventId::Generated(1), NOW, 1.0),
            &mut bytes,
        );
        bytes
    };
    let ancient = {
        let mut bytes = Vec::new();
        let event = Event::new("m", EventId::Generated(2), i64::MIN, 1.0);
        wire::encode_into("t", &event, &mut bytes);
        bytes
    };
    // (offset, record, what it becomes: None for an event, else the letter's reason).
    let mut records: Vec<(Vec<u8>, Option<Reason>)> =
        (0..20).map(|i| (good(&format!("id-{i}")), None)).collect();
    let bad = [
        (3, vec![1, 200, 200, 200], Reason::Undecodable),
        (4, Vec::new(), Reason::Undecodable),
        (9, future, Reason::UnsupportedVersion),
        (10, empty_model, Reason::Invalid),
        (16, ancient, Reason::Invalid),
    ];
    for (at, record, reason) in bad {
        records.insert(at, (record, Some(reason)));
    }
    let bytes: Vec<Vec<u8>> = records.iter().map(|(record, _)| record.clone()).collect();
    let wal = wal_with(dir.path(), &bytes).await;
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    run_until_caught_up(Processor::new(config()), &wal, Arc::new(store.clone()))
        .await
        .expect("the processor kept going");

    assert_eq!(requests(&store).await, 20, "every good record counted once");
    let letters = stored_letters(&store).await;
    let expected: BTreeMap<u64, Reason> = records
        .iter()
        .enumerate()
        .filter_map(|(offset, (_, reason))| reason.map(|reason| (offset as u64, reason)))
        .collect();
    let got: BTreeMap<u64, Reason> = letters
        .iter()
        .map(|letter| (letter.id.offset, letter.reason))
        .collect();
    assert_eq!(got, expected);
    for letter in &letters {
        let offset = usize::try_from(letter.id.offset).expect("offset");
        assert_eq!(
            letter.record, records[offset].0,
            "the original bytes of {}",
            letter.id
        );
        let tenant_readable = matches!(letter.reason, Reason::Invalid);
        assert_eq!(letter.tenant.is_some(), tenant_readable, "{letter:?}");
    }
    assert!(letters
        .iter()
        .any(|letter| letter.detail.starts_with("timestamp:")));

    // The ledger accounts for every record once: accepted, then committed or
    // dead-lettered, each hour balanced.
    let ledger = ledger_totals(&store).await;
    assert_eq!(ledger.accepted, records.len() as u64);
    assert_eq!(ledger.committed, 20);
    assert_eq!(ledger.dead_lettered, expected.len() as u64);

    // Run again: nothing is read twice, no letter is written twice.
    run_until_caught_up(Processor::new(config()), &wal, Arc::new(store.clone()))
        .await
        .expect("second run");
    assert_eq!(requests(&store).await, 20);
    assert_eq!(stored_letters(&store).await, letters);
    assert_eq!(ledger_totals(&store).await, ledger);
}

/// Refuses every commit holding the event read at `offset`.
struct RefusesOffset {
    offset: u64,
    refusals: AtomicUsize,
}

impl CommitHook for RefusesOffset {
    fn before(&self, batch: &BatchCommit) -> Result<(), StoreError> {
        if batch.events.iter().any(|event| event.offset == self.offset) {
            self.refusals.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Backend(
                "this row cannot be written".to_string(),
            ));
        }
        Ok(())
    }
}

/// Runs a processor over `records` in batches of `batch` into a store that refuses the
/// record at offset `poison`, until it has gone past it.
async fn run_past_poison(
    dir: &std::path::Path,
    records: &[Vec<u8>],
    poison: u64,
    batch: usize,
) -> (SqliteStore, Arc<Hooked<RefusesOffset>>) {
    let wal = wal_with(dir, records).await;
    let inner = SqliteStore::open(&dir.join("s.sqlite")).expect("store");
    let store = Arc::new(Hooked {
        inner: inner.clone(),
        hook: RefusesOffset {
            offset: poison,
            refusals: AtomicUsize::new(0),
        },
    });
    let processor = Processor::new(ProcessorConfig {
        max_batch_records: batch,
        ..config()
    });
    run_until_caught_up(processor, &wal, store.clone())
        .await
        .expect("the processor went past the poison record");
    (inner, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_store_refuses_is_isolated_as_poison_and_dedup_still_holds() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Ids repeat after 30 records: records 30 to 39 are client retries of 0 to 9.
    let records: Vec<Vec<u8>> = (0..40).map(|i| good(&format!("id-{}", i % 30))).collect();
    let poison = 17;
    let (inner, store) = run_past_poison(dir.path(), &records, poison, 64).await;

    // 30 distinct ids, one of them poison.
    assert_eq!(requests(&inner).await, 29);
    let letters = stored_letters(&inner).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].id.offset, poison);
    assert_eq!(letters[0].reason, Reason::Poison);
    assert_eq!(letters[0].record, records[17]);
    assert!(
        letters[0].detail.contains("this row cannot be written"),
        "{}",
        letters[0].detail
    );
    assert!(store.hook.refusals.load(Ordering::SeqCst) >= POISON_REFUSALS as usize);
    let position = inner.partition_states().await.expect("states")[0].next_offset;
    assert_eq!(position, 40);
    // Isolating the poison record in halves counts every record once all the same.
    let ledger = ledger_totals(&inner).await;
    assert_eq!(
        (
            ledger.accepted,
            ledger.committed,
            ledger.duplicates,
            ledger.dead_lettered
        ),
        (40, 29, 10, 1)
    );
}

/// The batch after a refused one is rolled up while the refused one's commit is in
/// flight, against a dedup window that already learnt the refused batch's ids. Once
/// the refused batch is isolated, the next one rolls up again against the window the
/// store holds: a retry of the poison record's event, in the next batch, is that
/// event's first and only count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_poison_event_in_the_next_batch_counts_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let poison = 7;
    // Two batches of 20: the first holds the poison record (id-7), the second a
    // retry of it at offset 25 and new ids otherwise.
    let records: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            if i == 25 {
                good(&format!("id-{poison}"))
            } else {
                good(&format!("id-{i}"))
            }
        })
        .collect();
    let (inner, _) = run_past_poison(dir.path(), &records, poison, 20).await;

    // Ids 0 to 39 less id-25 (whose record carries id-7): 39 distinct, every one
    // counted once; id-7's only count is its retry.
    assert_eq!(requests(&inner).await, 39);
    let letters = stored_letters(&inner).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].id.offset, poison);
    let ledger = ledger_totals(&inner).await;
    assert_eq!(
        (
            ledger.accepted,
            ledger.committed,
            ledger.duplicates,
            ledger.dead_lettered
        ),
        (40, 39, 0, 1)
    );
}

/// Refuses every commit, probes included, while `down`.
struct Outage {
    down: AtomicBool,
    refusals: AtomicUsize,
}

impl CommitHook for Outage {
    fn before(&self, _batch: &BatchCommit) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            self.refusals.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Backend("disk full".to_string()));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refusing_everything_is_waited_for_not_blamed_on_a_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let records: Vec<Vec<u8>> = (0..30).map(|i| good(&format!("id-{i}"))).collect();
    let wal = wal_with(dir.path(), &records).await;
    let inner = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    let store = Arc::new(Hooked {
        inner: inner.clone(),
        hook: Outage {
            down: AtomicBool::new(true),
            refusals: AtomicUsize::new(0),
        },
    });
    let processor = Processor::new(config());
    let progress = processor.progress();
    let stop = CancellationToken::new();
    let log: Arc<dyn Log> = wal.clone();
    let store_dyn: Arc<dyn BatchSink> = store.clone();
    let task = tokio::spawn(processor.run(log, store_dyn, stop.clone()));
    // Several rounds of refusals, probes included, then the store comes back.
    let enough = 4 * POISON_REFUSALS as usize;
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while store.hook.refusals.load(Ordering::SeqCst) < enough {
        assert!(
            !task.is_finished(),
            "the processor stopped during the outage"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the processor stopped trying"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store.hook.down.store(false, Ordering::SeqCst);
    wait_caught_up(&progress, wal.as_ref(), &task).await;
    stop.cancel();
    task.await.expect("join").expect("processor");
    assert_eq!(requests(&inner).await, 30, "nothing lost to the outage");
    assert!(stored_letters(&inner).await.is_empty(), "no record blamed");
}

/// A sink that fails its first deliveries, then records what it got and where the
/// store's position stood at that moment.
struct Recording {
    store: SqliteStore,
    failures_left: AtomicUsize,
    delivered: Mutex<Vec<(u64, DeadLetter)>>,
}

#[async_trait]
impl DeadLetterSink for Recording {
    async fn deliver(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok()
        {
            return Err(DeadLetterError::Unavailable("broker away".to_string()));
        }
        let position = self
            .store
            .partition_states()
            .await?
            .first()
            .map_or(0, |state| state.next_offset);
        if let Ok(mut delivered) = self.delivered.lock() {
            delivered.extend(letters.iter().map(|letter| (position, letter.clone())));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_sink_letters_are_durable_there_before_the_commit_that_skips_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut records: Vec<Vec<u8>> = (0..20).map(|i| good(&format!("id-{i}"))).collect();
    for at in [2, 8, 15] {
        records[at] = format!("garbage {at}").into_bytes();
    }
    let wal = wal_with(dir.path(), &records).await;
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    let sink = Arc::new(Recording {
        store: store.clone(),
        failures_left: AtomicUsize::new(2),
        delivered: Mutex::new(Vec::new()),
    });
    let processor = Processor::new(config()).with_dead_letter_sink(sink.clone());
    run_until_caught_up(processor, &wal, Arc::new(store.clone()))
        .await
        .expect("processor");
    let delivered = sink.delivered.lock().expect("lock").clone();
    let offsets: Vec<u64> = delivered
        .iter()
        .map(|(_, letter)| letter.id.offset)
        .collect();
    assert_eq!(offsets, vec![2, 8, 15]);
    for (position, letter) in &delivered {
        assert!(
            *position <= letter.id.offset,
            "letter {} delivered after the position moved to {position}",
            letter.id
        );
    }
    assert!(
        stored_letters(&store).await.is_empty(),
        "with a sink the store keeps none"
    );
    assert_eq!(requests(&store).await, 17);
}

/// A store that keeps no dead letters.
struct KeepsNone;

impl CommitHook for KeepsNone {
    fn keeps_dead_letters(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn without_a_place_for_letters_the_processor_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = wal_with(dir.path(), &[]).await;
    let store = Arc::new(Hooked {
        inner: SqliteStore::open(&dir.path().join("s.sqlite")).expect("store"),
        hook: KeepsNone,
    });
    let log: Arc<dyn Log> = wal;
    let outcome = Processor::new(config())
        .run(log, store, CancellationToken::new())
        .await;
    assert!(
        matches!(outcome, Err(ProcessorError::NoDeadLetterQueue)),
        "{outcome:?}"
    );
}
