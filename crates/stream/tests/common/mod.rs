//! The real SQLite store with a hook around each commit (the stream's role only), for tests that make the store
//! lose answers or refuse writes; and a wait for the processor to catch up.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use ais_log::Log;
use ais_store::sqlite::SqliteStore;
use ais_store::{BatchCommit, BatchSink, DedupEntry, PartitionState, Positions, StoreError};
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
impl<H: CommitHook> Positions for Hooked<H> {
    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError> {
        self.inner.partition_states().await
    }
}

/// Only the stream's role: what the processor is handed. Queries go to `inner`.
#[async_trait]
impl<H: CommitHook> BatchSink for Hooked<H> {
    fn keeps_dead_letters(&self) -> bool {
        self.hook.keeps_dead_letters() && self.inner.keeps_dead_letters()
    }
    async fn commit(&self, batch: BatchCommit) -> Result<(), StoreError> {
        self.hook.before(&batch)?;
        self.inner.commit(batch.clone()).await?;
        self.hook.after(&batch)
    }
    async fn dedup_entries(&self, since: i64) -> Result<Vec<DedupEntry>, StoreError> {
        self.inner.dedup_entries(since).await
    }
}

pub use ais_testkit::PATIENCE;

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
