//! A store commit that lands but whose answer is lost (the store errs after writing):
//! the processor retries, finds the position already moved, takes it as done, and keeps
//! going; every event counts once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ais_log::wal::{Wal, WalConfig};
use ais_log::{Log, RecordBatch};
use ais_model::{wire, Event, EventId};
use ais_store::sqlite::SqliteStore;
use ais_store::{
    AnomalyQuery, AnomalyRecord, BatchCommit, CompactionReport, DedupEntry, EvaluationCommit,
    EventQuery, OutboxEntry, OutboxOutcome, PartitionState, Retention, RollupQuery, RollupRow,
    Store, StoreError, StoredEvent,
};
use ais_stream::{Processor, ProcessorConfig};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

/// The real SQLite store, except that the answers of some commits are lost after they
/// were applied.
struct LosesAnswers {
    inner: SqliteStore,
    lost: AtomicUsize,
}

#[async_trait]
impl Store for LosesAnswers {
    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError> {
        self.inner.partition_states().await
    }
    async fn commit(&self, batch: BatchCommit) -> Result<(), StoreError> {
        let has_records = batch.next_offset > batch.first_offset;
        self.inner.commit(batch).await?;
        if has_records && self.lost.load(Ordering::SeqCst) < 3 {
            self.lost.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable(
                "connection reset after commit".to_string(),
            ));
        }
        Ok(())
    }
    async fn dedup_entries(&self, since: i64) -> Result<Vec<DedupEntry>, StoreError> {
        self.inner.dedup_entries(since).await
    }
    async fn rollups(&self, query: RollupQuery) -> Result<Vec<RollupRow>, StoreError> {
        self.inner.rollups(query).await
    }
    async fn tenants(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>, StoreError> {
        self.inner.tenants(from_ms, to_ms).await
    }
    async fn rollups_all_tenants(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, RollupRow)>, StoreError> {
        self.inner.rollups_all_tenants(from_ms, to_ms).await
    }
    async fn evaluation_state(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        self.inner.evaluation_state().await
    }
    async fn commit_evaluation(&self, commit: EvaluationCommit) -> Result<(), StoreError> {
        self.inner.commit_evaluation(commit).await
    }
    async fn anomalies(&self, query: AnomalyQuery) -> Result<Vec<AnomalyRecord>, StoreError> {
        self.inner.anomalies(query).await
    }
    async fn outbox_pending(
        &self,
        sink: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_pending(sink, limit).await
    }
    async fn outbox_settle(&self, id: i64, outcome: OutboxOutcome) -> Result<(), StoreError> {
        self.inner.outbox_settle(id, outcome).await
    }
    async fn apply_retention(&self, retention: Retention) -> Result<(), StoreError> {
        self.inner.apply_retention(retention).await
    }
    async fn events(&self, query: EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.events(query).await
    }
    async fn compact(&self, final_before_ms: i64) -> Result<CompactionReport, StoreError> {
        self.inner.compact(final_before_ms).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_is_neither_fatal_nor_double_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Arc::new(Wal::open(WalConfig::new(dir.path().join("wal"))).expect("wal"));
    let inner = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    let store = Arc::new(LosesAnswers {
        inner: inner.clone(),
        lost: AtomicUsize::new(0),
    });
    let processor = Processor::new(ProcessorConfig {
        max_batch_records: 50,
        ..ProcessorConfig::default()
    });
    let progress = processor.progress();
    let stop = CancellationToken::new();
    let log: Arc<dyn Log> = wal.clone();
    let store_dyn: Arc<dyn Store> = store.clone();
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
        store.lost.load(Ordering::SeqCst),
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
            limit: 1_000,
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
