//! The real SQLite store with a hook around each commit, for tests that make the store
//! lose answers or refuse writes; and a wait for the processor to catch up.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use ais_log::Log;
use ais_store::sqlite::SqliteStore;
use ais_store::{
    AnomalyQuery, AnomalyRecord, BatchCommit, CompactionReport, DedupEntry, EvaluationCommit,
    EventQuery, OutboxEntry, OutboxOutcome, PartitionState, Retention, RollupQuery, RollupRow,
    Store, StoreError, StoredEvent,
};
use ais_stream::{processor::ProcessorError, Progress};
use async_trait::async_trait;

/// What happens around a commit of [`Hooked`].
pub trait CommitHook: Send + Sync + 'static {
    /// Before the commit is applied; an error refuses it, nothing applied.
    fn before(&self, _batch: &BatchCommit) -> Result<(), StoreError> {
        Ok(())
    }

    /// After it was applied; an error loses the answer.
    fn after(&self, _batch: &BatchCommit) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the store says it keeps dead letters (as SQLite does).
    fn keeps_dead_letters(&self) -> bool {
        true
    }
}

/// The real SQLite store, every commit passed through `hook`.
pub struct Hooked<H> {
    pub inner: SqliteStore,
    pub hook: H,
}

#[async_trait]
impl<H: CommitHook> Store for Hooked<H> {
    fn keeps_dead_letters(&self) -> bool {
        self.hook.keeps_dead_letters() && self.inner.keeps_dead_letters()
    }
    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError> {
        self.inner.partition_states().await
    }
    async fn commit(&self, batch: BatchCommit) -> Result<(), StoreError> {
        self.hook.before(&batch)?;
        self.inner.commit(batch.clone()).await?;
        self.hook.after(&batch)
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

/// How long a test waits for the processor before it fails instead of hanging: far
/// beyond what the work takes, so it never decides a passing run.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until the processor has committed everything durable in `log`, or fails
/// (the processor stopped, or [`PATIENCE`] ran out).
pub async fn wait_caught_up(
    progress: &Progress,
    log: &dyn Log,
    task: &tokio::task::JoinHandle<Result<(), ProcessorError>>,
) {
    let deadline = Instant::now() + PATIENCE;
    while progress.lag_records(&log.status().end_offsets) > 0 {
        assert!(!task.is_finished(), "the processor stopped early");
        assert!(Instant::now() < deadline, "the processor did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
