//! The stream loop: poll → roll up → commit → release, exactly once in effect.
//!
//! Positions and watermarks come from the store at start, dedup ids too; the store's
//! commit moves the position atomically with the partials, so a crash anywhere replays
//! from the last commit and counts nothing twice. A commit that fails is retried
//! as-is (the batch is never rolled up twice: its dedup ids are already learnt) with
//! backoff until it lands or shutdown is asked; a store that refuses the position
//! (another writer moved it) stops the processor.
//!
//! `run` does CPU-bound work between awaits: run it on a thread of its own (e.g. a
//! current-thread runtime), not on the runtime that serves HTTP.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ais_log::{AssignmentEvent, Log, LogConsumer, LogError, StartPosition};
use ais_store::{BatchCommit, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::batch::{roll_up, BatchOutput};
use crate::dedup::{Dedup, DedupConfig};
use crate::watermark::Watermark;

/// Wall-clock time in unix ms, injectable for tests.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Records per batch (soft: the log returns whole frames). Bounds the memory of one
    /// batch and the size of one store transaction.
    pub max_batch_records: usize,
    /// How long one poll waits for records.
    pub poll_wait: Duration,
    pub allowed_lateness: Duration,
    /// A partition without input this long still commits its advancing watermark.
    pub idle_commit_interval: Duration,
    pub dedup: DedupConfig,
    /// Longest pause between retries of a failing commit.
    pub max_backoff: Duration,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            max_batch_records: 65_536,
            poll_wait: Duration::from_millis(100),
            allowed_lateness: Duration::from_secs(120),
            idle_commit_interval: Duration::from_secs(10),
            dedup: DedupConfig::default(),
            max_backoff: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the processor has committed, per partition: the offset after the last record
/// the store holds. Shared with whoever reports readiness and lag.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    committed: Arc<Mutex<BTreeMap<u32, u64>>>,
}

impl Progress {
    pub fn committed_offsets(&self) -> BTreeMap<u32, u64> {
        self.committed
            .lock()
            .map(|map| map.clone())
            .unwrap_or_default()
    }

    fn set(&self, partition: u32, next_offset: u64) {
        if let Ok(mut map) = self.committed.lock() {
            map.insert(partition, next_offset);
        }
    }

    fn remove(&self, partition: u32) {
        if let Ok(mut map) = self.committed.lock() {
            map.remove(&partition);
        }
    }

    /// Partitions this processor owns now.
    pub fn owned_partitions(&self) -> Vec<u32> {
        self.committed_offsets().into_keys().collect()
    }

    /// Records durable in the log (`end_offsets`) but not yet in the store.
    pub fn lag_records(&self, end_offsets: &[(u32, u64)]) -> u64 {
        let committed = self.committed_offsets();
        end_offsets
            .iter()
            .map(|(partition, end)| {
                end.saturating_sub(committed.get(partition).copied().unwrap_or(0))
            })
            .sum()
    }
}

/// Sets the lag gauges: in total, and per partition this processor reads (bounded: one
/// series per partition of the log).
fn report_lag(consumer: &dyn LogConsumer) {
    let lags = consumer.lag();
    let total: u64 = lags.iter().map(|(_, lag)| lag).sum();
    metrics::gauge!("ais_stream_lag_records").set(total as f64);
    for (partition, lag) in &lags {
        metrics::gauge!("ais_stream_partition_lag_records", "partition" => partition.to_string())
            .set(*lag as f64);
    }
}

/// Per-partition state of the loop.
struct PartitionState {
    next_offset: u64,
    watermark: Watermark,
    last_commit_ms: i64,
}

pub struct Processor {
    config: ProcessorConfig,
    progress: Progress,
    clock: Arc<dyn Clock>,
}

impl Processor {
    pub fn new(config: ProcessorConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: ProcessorConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            progress: Progress::default(),
            clock,
        }
    }

    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    fn duration_ms(duration: Duration) -> i64 {
        i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
    }

    /// Creates the state of `assigned` partitions from the store's positions and
    /// watermarks; returns where to read each from.
    async fn load_partitions(
        &self,
        store: &dyn Store,
        assigned: &[u32],
        partitions: &mut BTreeMap<u32, PartitionState>,
    ) -> Result<Vec<StartPosition>, StoreError> {
        let lateness_ms = Self::duration_ms(self.config.allowed_lateness);
        let idle_ms = Self::duration_ms(self.config.idle_commit_interval);
        let now = self.clock.now_ms();
        let stored = store.partition_states().await?;
        let mut positions = Vec::with_capacity(assigned.len());
        for &partition in assigned {
            let found = stored.iter().find(|state| state.partition == partition);
            let mut watermark = Watermark::new(
                lateness_ms,
                idle_ms,
                found.map_or(i64::MIN, |state| state.watermark_ms),
            );
            watermark.observe_batch(None, now);
            let next_offset = found.map_or(0, |state| state.next_offset);
            self.progress.set(partition, next_offset);
            partitions.insert(
                partition,
                PartitionState {
                    next_offset,
                    watermark,
                    last_commit_ms: now,
                },
            );
            positions.push(StartPosition {
                partition,
                next_offset,
            });
        }
        Ok(positions)
    }

    /// Follows a consumer-group rebalance: revoked partitions are forgotten (nothing of
    /// them is committed any more); assigned ones start at the store's positions, with
    /// the dedup window reloaded so it holds what their previous owner committed.
    async fn follow_assignment(
        &self,
        events: Vec<AssignmentEvent>,
        partitions: &mut BTreeMap<u32, PartitionState>,
        consumer: &mut dyn LogConsumer,
        store: &dyn Store,
        dedup: &mut Dedup,
    ) -> Result<(), ProcessorError> {
        for event in events {
            match event {
                AssignmentEvent::Revoked(revoked) => {
                    tracing::info!(?revoked, "partitions revoked");
                    for partition in revoked {
                        partitions.remove(&partition);
                        self.progress.remove(partition);
                    }
                }
                AssignmentEvent::Assigned(assigned) => {
                    // The store may be down for a while: keep asking, as commits do.
                    let mut backoff = Duration::from_millis(50);
                    let (positions, entries) = loop {
                        let loaded = async {
                            let positions =
                                self.load_partitions(store, &assigned, partitions).await?;
                            let entries = store.dedup_entries(i64::MIN).await?;
                            Ok::<_, StoreError>((positions, entries))
                        };
                        match loaded.await {
                            Ok(loaded) => break loaded,
                            Err(error) => {
                                tracing::warn!(%error, retry_in = ?backoff, "cannot read the positions of assigned partitions; retrying");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(self.config.max_backoff);
                            }
                        }
                    };
                    *dedup = Dedup::rebuild(self.config.dedup, &entries);
                    consumer.assign_positions(&positions).await?;
                    tracing::info!(?positions, dedup_ids = dedup.len(), "partitions assigned");
                }
            }
        }
        Ok(())
    }

    /// Runs until `shutdown`, then drains what is durable in the log and returns. A
    /// log whose consumers are assigned partitions by a group is not drained (others
    /// keep writing to it): the batch in hand is committed and the processor leaves.
    pub async fn run(
        self,
        log: Arc<dyn Log>,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> Result<(), ProcessorError> {
        let grouped = log.assigns_partitions();
        let mut partitions: BTreeMap<u32, PartitionState> = BTreeMap::new();
        // Everything the store kept: its retention and the rebuild both bound the window
        // by event time behind the newest id, not by the wall clock.
        let entries = store.dedup_entries(i64::MIN).await?;
        let mut dedup = Dedup::rebuild(self.config.dedup, &entries);
        tracing::info!(
            dedup_ids = dedup.len(),
            grouped,
            "stream processor starting"
        );
        let mut consumer = if grouped {
            log.consumer(&[]).await?
        } else {
            let all: Vec<u32> = (0..log.partitions()).collect();
            let positions = self
                .load_partitions(store.as_ref(), &all, &mut partitions)
                .await?;
            log.consumer(&positions).await?
        };

        let mut draining = false;
        loop {
            if !draining && shutdown.is_cancelled() {
                if grouped {
                    break;
                }
                // The log is closed by now: what is durable is all there will be.
                draining = true;
            }
            let wait = if draining {
                Duration::from_millis(10)
            } else {
                self.config.poll_wait
            };
            let fetched = consumer.poll(self.config.max_batch_records, wait).await?;
            let events = consumer.take_assignment_events();
            if !events.is_empty() {
                self.follow_assignment(
                    events,
                    &mut partitions,
                    consumer.as_mut(),
                    store.as_ref(),
                    &mut dedup,
                )
                .await?;
            }
            let now = self.clock.now_ms();
            report_lag(consumer.as_ref());
            let Some(fetched) = fetched else {
                if draining {
                    break;
                }
                self.commit_idle(
                    &mut partitions,
                    store.as_ref(),
                    now,
                    &shutdown,
                    consumer.as_mut(),
                )
                .await?;
                continue;
            };
            let Some(state) = partitions.get_mut(&fetched.partition) else {
                // Revoked while the batch was read: its new owner reads it again.
                tracing::debug!(
                    partition = fetched.partition,
                    "records of a partition this processor does not own"
                );
                continue;
            };
            let started = Instant::now();
            let BatchOutput {
                partials,
                dedup: new_ids,
                events,
                newest_event_ms,
                counts,
            } = roll_up(
                &fetched.records,
                fetched.first_offset,
                &mut dedup,
                &state.watermark,
            );
            state.watermark.observe_batch(newest_event_ms, now);
            let commit = BatchCommit {
                partition: fetched.partition,
                first_offset: fetched.first_offset,
                next_offset: fetched.next_offset(),
                watermark_ms: state.watermark.current_ms(),
                partials,
                dedup: new_ids,
                events,
            };
            if !self
                .commit_with_retry(store.as_ref(), commit, &shutdown, consumer.as_mut())
                .await?
            {
                // Shutdown while the store was failing: the log keeps the batch.
                return Ok(());
            }
            state.next_offset = fetched.next_offset();
            state.last_commit_ms = now;
            self.progress.set(fetched.partition, state.next_offset);
            consumer
                .release(fetched.partition, state.next_offset)
                .await?;

            metrics::counter!("ais_stream_events_total").increment(counts.events);
            metrics::counter!("ais_stream_duplicates_total").increment(counts.duplicates);
            metrics::counter!("ais_stream_late_events_total").increment(counts.late);
            metrics::counter!("ais_stream_undecodable_total").increment(counts.undecodable);
            metrics::counter!("ais_stream_dedup_unchecked_total").increment(counts.unchecked);
            metrics::counter!("ais_stream_dedup_evictions_total").increment(dedup.take_evicted());
            metrics::histogram!("ais_stream_batch_seconds").record(started.elapsed().as_secs_f64());
            metrics::gauge!("ais_stream_watermark_lag_seconds")
                .set(now.saturating_sub(state.watermark.current_ms()) as f64 / 1000.0);
        }
        tracing::info!("stream processor drained and stopped");
        Ok(())
    }

    /// Commits the advancing watermark of partitions idle for the interval.
    async fn commit_idle(
        &self,
        partitions: &mut BTreeMap<u32, PartitionState>,
        store: &dyn Store,
        now: i64,
        shutdown: &CancellationToken,
        consumer: &mut dyn LogConsumer,
    ) -> Result<(), ProcessorError> {
        let interval = Self::duration_ms(self.config.idle_commit_interval);
        for (partition, state) in partitions.iter_mut() {
            if now.saturating_sub(state.last_commit_ms) < interval {
                continue;
            }
            let before = state.watermark.current_ms();
            let watermark_ms = state.watermark.advance(now);
            state.last_commit_ms = now;
            if watermark_ms == before {
                continue;
            }
            let commit = BatchCommit {
                partition: *partition,
                first_offset: state.next_offset,
                next_offset: state.next_offset,
                watermark_ms,
                partials: Vec::new(),
                dedup: Vec::new(),
                events: Vec::new(),
            };
            self.commit_with_retry(store, commit, shutdown, consumer)
                .await?;
        }
        Ok(())
    }

    /// Commits, retrying transient failures with backoff. `Ok(false)` when shutdown was
    /// asked while retrying.
    async fn commit_with_retry(
        &self,
        store: &dyn Store,
        commit: BatchCommit,
        shutdown: &CancellationToken,
        consumer: &mut dyn LogConsumer,
    ) -> Result<bool, ProcessorError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match store.commit(commit.clone()).await {
                Ok(()) => return Ok(true),
                // A commit that landed but whose answer was lost: the retry finds the
                // position already moved to this batch's end. That is success.
                Err(StoreError::OutOfOrder { expected, .. })
                    if expected == commit.next_offset
                        && commit.next_offset > commit.first_offset =>
                {
                    return Ok(true)
                }
                Err(error @ StoreError::OutOfOrder { .. }) => return Err(error.into()),
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "store commit failed; retrying the same batch");
                    // The lag keeps being reported while the store holds the stream back.
                    consumer.refresh_lag();
                    report_lag(consumer);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => {
                            // One last try, then leave the batch to the log.
                            return Ok(store.commit(commit).await.is_ok());
                        }
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }
}
