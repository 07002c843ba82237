//! A store commit that lands but whose answer is lost (the store errs after writing):
//! the processor retries, finds the position already moved, takes it as done, and keeps
//! going; every event counts once.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ais_log::wal::{Wal, WalConfig};
use ais_log::{Log, RecordBatch};
use ais_model::{wire, Event, EventId};
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::{BatchCommit, EventQuery, RollupQuery, StoreError};
use ais_stream::{Processor, ProcessorConfig};
use common::{CommitHook, Hooked};
use tokio_util::sync::CancellationToken;

/// Loses the answers of the first three commits holding records, after they were
/// applied.
struct LosesAnswers {
    lost: AtomicUsize,
}

impl CommitHook for LosesAnswers {
    fn after(&self, batch: &BatchCommit) -> Result<(), StoreError> {
        let has_records = batch.next_offset > batch.first_offset;
        if has_records && self.lost.load(Ordering::SeqCst) < 3 {
            self.lost.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable(
                "connection reset after commit".to_string(),
            ));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_is_neither_fatal_nor_double_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Arc::new(Wal::open(WalConfig::new(dir.path().join("wal"))).expect("wal"));
    let inner = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    let store = Arc::new(Hooked {
        inner: inner.clone(),
        hook: LosesAnswers {
            lost: AtomicUsize::new(0),
        },
    });
    let processor = Processor::new(ProcessorConfig {
        max_batch_records: 50,
        ..ProcessorConfig::default()
    });
    let progress = processor.progress();
    let stop = CancellationToken::new();
    let log: Arc<dyn Log> = wal.clone();
    let store_dyn: Arc<dyn BatchSink> = store.clone();
    let task = tokio::spawn(processor.run(log, store_dyn, stop.clone()));

    let now = 1_795_339_620_000;
    for request in 0..10u32 {
        let mut batch = RecordBatch::default();
        for index in 0..50u32 {
            let event = Event {
                input_tokens: Some(u64::from(index)),
                ..Event::new(
                    "m",
                    EventId::Generated(u128::from(request * 100 + index)),
                    now,
                    5.0,
                )
            };
            batch.push_with(|buf| wire::encode_into("t", &event, buf));
        }
        wal.append(batch).await.expect("append");
    }
    for _ in 0..1_000 {
        if progress.lag_records(&wal.status().end_offsets) == 0 {
            break;
        }
        assert!(
            !task.is_finished(),
            "the processor stopped: {:?}",
            task.await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        progress.lag_records(&wal.status().end_offsets),
        0,
        "caught up"
    );
    assert_eq!(
        store.hook.lost.load(Ordering::SeqCst),
        3,
        "three answers were lost"
    );
    stop.cancel();
    task.await
        .expect("join")
        .expect("the processor survived lost answers");
    let rows = inner
        .rollups(RollupQuery {
            tenant: "t".to_string(),
            from_ms: 0,
            to_ms: i64::MAX,
            model: None,
        })
        .await
        .expect("rollups");
    let requests: u64 = rows.iter().map(|row| row.partial.requests).sum();
    let tokens: u64 = rows.iter().map(|row| row.partial.input_tokens).sum();
    assert_eq!(requests, 500, "each event once");
    assert_eq!(tokens, 10 * (0..50).sum::<u64>());

    let raw = inner
        .events(EventQuery {
            tenant: "t".to_string(),
            from_ms: 0,
            to_ms: i64::MAX,
            trace_id: None,
            user_id: None,
            model: None,
            status: None,
            min_latency_ms: None,
            filters: Default::default(),
            limit: 1_000,
            payloads: Default::default(),
        })
        .await
        .expect("raw events");
    let mut ids: Vec<String> = raw
        .iter()
        .map(|stored| match &stored.event.event_id {
            EventId::Client(id) => id.to_string(),
            EventId::Generated(id) => id.to_string(),
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(raw.len(), 500, "each raw event stored once");
    assert_eq!(ids.len(), 500, "and no id twice");
    assert_eq!(inner.raw_stats().rows, 500);
}
