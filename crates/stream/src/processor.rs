//! The stream loop: poll → roll up → commit → release, exactly once in effect.
//!
//! Pipelined by one batch: a batch's commit is started and left in flight while the
//! next batch is polled and rolled up (on an embedded store, the commit's Parquet
//! encode and SQLite transaction run on the store's own thread meanwhile), then the
//! loop waits for it before anything else is written: one commit in flight at a time,
//! so batches land in order and the position check still sees every one. The next
//! batch's roll-up reads only memory the committed batch already moved (the dedup
//! window, the watermark); if the commit in flight ends in isolation instead (below),
//! the next batch rolls up again against the reloaded window. Two batches are held at
//! once, at most.
//!
//! Positions and watermarks come from the store at start, dedup ids too; the store's
//! commit moves the position atomically with the partials (per model, and per value of
//! each rolled-up dimension when the store keeps those), so a crash anywhere replays
//! from the last commit and counts nothing twice. A commit that fails is retried
//! as-is (the batch is never rolled up twice: its dedup ids are already learnt) with
//! backoff until it lands or shutdown is asked; a store that refuses the position
//! (another writer moved it) stops the processor.
//!
//! The stream never stalls on one bad record. Records that do not decode or break a v1
//! rule are dead-lettered by the batch that reads them ([`crate::letters`]). A record
//! the store itself refuses is found by isolation: when the store refuses a batch
//! [`POISON_REFUSALS`] times in a row while it accepts a commit that only restates the
//! position, the dedup window is reloaded from the store and the batch is committed in
//! halves, recursively; a single record still refused is dead-lettered as `poison` and
//! the rest flows past it. A store that refuses everything is an outage, not poison:
//! the batch waits for it.
//!
//! `run` does CPU-bound work between awaits: run it on a thread of its own (e.g. a
//! current-thread runtime), not on the runtime that serves HTTP.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ais_log::{AssignmentEvent, FetchedBatch, Log, LogConsumer, LogError, StartPosition};
use ais_model::dead_letter::{DeadLetter, DeadLetterSink, LetterId, Reason};
use ais_model::time::{Clock, SystemClock};
use ais_rollup::dimensions::DimensionRollupConfig;
use ais_rollup::usage::{Settlement, UsageConfig, UsageCounts, UsageKey};
use ais_store::{BatchCommit, BatchSink, DimensionPartials, StoreError};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::batch::{roll_up, BatchCounts, BatchOutput, RollUpPlan};
use crate::dedup::{Dedup, DedupConfig};
use crate::letters;
use crate::watermark::Watermark;

/// Refusals in a row of a commit holding events before the store is probed and, if it
/// accepts other writes, the batch is searched for the records it refuses. Transient
/// failures (a busy database) rarely last this long, and a wrong suspicion costs only
/// a batch committed in parts.
pub const POISON_REFUSALS: u32 = 3;

/// Bounds one batch's memory and one store transaction; large enough that a commit's
/// fixed cost is small beside the batch.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 65_536;

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
    /// Dimensions rolled up per value and minute beside the (tenant, model, minute)
    /// rollups, when the store keeps them.
    pub dimensions: DimensionRollupConfig,
    /// The scopes the usage ledger counts per (every engine keeps it).
    pub usage: UsageConfig,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
            poll_wait: Duration::from_millis(100),
            allowed_lateness: Duration::from_secs(120),
            idle_commit_interval: Duration::from_secs(10),
            dedup: DedupConfig::default(),
            max_backoff: Duration::from_secs(5),
            dimensions: DimensionRollupConfig::default(),
            usage: UsageConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store keeps no dead letters and the stream has no dead-letter sink: give it one (the dead-letter topic)")]
    NoDeadLetterQueue,
}

/// How a commit ended.
enum Landed {
    Committed,
    /// Shutdown was asked while it failed: the log keeps the batch.
    Shutdown,
    /// The store refused it [`POISON_REFUSALS`] times while accepting other writes.
    Refused(StoreError),
}

/// A batch's commit as built, and what moves once it lands.
struct Prepared {
    commit: BatchCommit,
    counts: BatchCounts,
    by_reason: [u64; Reason::ALL.len()],
    /// The reservations its events settle: told the usage observer, not stored.
    settled: Vec<Settlement>,
}

/// The batch whose commit is in flight while the next batch is polled and rolled up.
struct InFlight {
    fetched: FetchedBatch,
    prepared: Prepared,
    /// The commit's first attempt.
    attempt: tokio::task::JoinHandle<Result<(), StoreError>>,
    /// The partition's watermark before the batch moved it (restored to isolate it).
    watermark_before: Watermark,
    now: i64,
    started: Instant,
}

/// What the loop holds from batch to batch.
struct LoopState {
    partitions: BTreeMap<u32, PartitionState>,
    dedup: Dedup,
    /// The batch whose commit is in flight while the next one rolls up.
    in_flight: Option<InFlight>,
}

/// What every batch of a run shares.
struct Shared<'a> {
    store: &'a Arc<dyn BatchSink>,
    plan: &'a RollUpPlan<'a>,
    shutdown: &'a CancellationToken,
}

/// How the batch in flight ended.
enum Finish {
    /// Committed (or nothing was in flight).
    Done,
    /// Committed in parts around records the store refuses: the dedup window was
    /// reloaded from the store.
    Isolated,
    /// Shutdown was asked before it landed: the log keeps it.
    Stop,
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

/// Counts of a committed batch in `/metrics` (per batch, never per event).
fn record_counts(counts: &BatchCounts) {
    metrics::counter!("ais_stream_events_total").increment(counts.events);
    metrics::counter!("ais_stream_duplicates_total").increment(counts.duplicates);
    metrics::counter!("ais_stream_late_events_total").increment(counts.late);
    metrics::counter!("ais_stream_dedup_unchecked_total").increment(counts.unchecked);
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
    /// Where dead letters go when the store does not keep them in its commit.
    dead_letter_sink: Option<Arc<dyn DeadLetterSink>>,
    /// Told each batch's usage once its commit has landed.
    usage_observer: Option<UsageObserver>,
}

/// Called with a batch's usage once its commit has landed, exactly once per landed
/// commit (whichever attempt landed it): what an in-process reader of spend (the budget
/// reservations of `ais serve`) keeps up to date with.
pub type UsageObserver = Arc<dyn Fn(&LandedUsage) + Send + Sync>;

/// What a landed batch tells the usage observer.
#[derive(Debug, Clone, Default)]
pub struct LandedUsage {
    /// Its usage ledger entries.
    pub entries: Vec<(UsageKey, UsageCounts)>,
    /// The reservations its committed events settle.
    pub settled: Vec<Settlement>,
}

impl Prepared {
    /// What the usage observer is told when this batch lands (`None` without one).
    fn landed_usage(&self, observer: Option<&UsageObserver>) -> Option<LandedUsage> {
        observer.map(|_| LandedUsage {
            entries: self.commit.usage.clone(),
            settled: self.settled.clone(),
        })
    }
}

/// The records of one batch as fetched.
#[derive(Clone, Copy)]
struct Records<'a> {
    partition: u32,
    first_offset: u64,
    records: &'a [Bytes],
}

impl<'a> Records<'a> {
    fn next_offset(&self) -> u64 {
        self.first_offset + self.records.len() as u64
    }

    /// Records `start..end` of the batch.
    fn slice(&self, start: usize, end: usize) -> Records<'a> {
        Records {
            partition: self.partition,
            first_offset: self.first_offset + start as u64,
            records: &self.records[start..end],
        }
    }
}

/// What the processing of a batch needs besides the records.
struct Context<'a> {
    store: &'a dyn BatchSink,
    /// What the batch rolls up into (no dimension when the store keeps none).
    plan: &'a RollUpPlan<'a>,
    shutdown: &'a CancellationToken,
    now: i64,
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
            dead_letter_sink: None,
            usage_observer: None,
        }
    }

    /// Tells `observer` each landed batch's usage.
    pub fn with_usage_observer(mut self, observer: UsageObserver) -> Self {
        self.usage_observer = Some(observer);
        self
    }

    /// Sends dead letters to `sink` (durably, before the commit that skips their
    /// records) instead of into the store's commit.
    pub fn with_dead_letter_sink(mut self, sink: Arc<dyn DeadLetterSink>) -> Self {
        self.dead_letter_sink = Some(sink);
        self
    }

    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    fn duration_ms(duration: Duration) -> i64 {
        i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
    }

    /// The dimensions to roll up: the configured ones if the store keeps dimension
    /// rollups (it learns which, and from when), none otherwise.
    async fn dimensions_kept(
        &self,
        store: &dyn BatchSink,
    ) -> Result<DimensionRollupConfig, StoreError> {
        let configured = &self.config.dimensions;
        let names: Vec<String> = configured.dimensions.iter().map(|d| d.name()).collect();
        let kept = store
            .keep_dimension_rollups(&names, self.clock.now_ms())
            .await?;
        Ok(if kept {
            configured.clone()
        } else {
            DimensionRollupConfig {
                dimensions: Vec::new(),
                ..configured.clone()
            }
        })
    }

    /// Creates the state of `assigned` partitions from the store's positions and
    /// watermarks; returns where to read each from.
    async fn load_partitions(
        &self,
        store: &dyn BatchSink,
        assigned: &[u32],
        partitions: &mut BTreeMap<u32, PartitionState>,
    ) -> Result<Vec<StartPosition>, StoreError> {
        let lateness_ms = Self::duration_ms(self.config.allowed_lateness);
        let idle_ms = Self::duration_ms(self.config.idle_commit_interval);
        let now = self.clock.now_ms();
        // Claimed before the positions are read: from here on a previous owner that
        // stalled mid-commit can no longer move them (fencing, `BatchSink::claim`).
        store.claim(assigned, now).await?;
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
        store: &dyn BatchSink,
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
        store: Arc<dyn BatchSink>,
        shutdown: CancellationToken,
    ) -> Result<(), ProcessorError> {
        if self.dead_letter_sink.is_none() && !store.keeps_dead_letters() {
            return Err(ProcessorError::NoDeadLetterQueue);
        }
        letters::register_metrics();
        let grouped = log.assigns_partitions();
        let mut partitions: BTreeMap<u32, PartitionState> = BTreeMap::new();
        // Everything the store kept: its retention and the rebuild both bound the window
        // by event time behind the newest id, not by the wall clock.
        let entries = store.dedup_entries(i64::MIN).await?;
        let dedup = Dedup::rebuild(self.config.dedup, &entries);
        let dimensions = self.dimensions_kept(store.as_ref()).await?;
        tracing::info!(
            dedup_ids = dedup.len(),
            grouped,
            dimensions = ?dimensions.dimensions,
            "stream processor starting"
        );
        let plan = RollUpPlan {
            dimensions: &dimensions,
            usage: &self.config.usage,
        };
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
        let shared = Shared {
            store: &store,
            plan: &plan,
            shutdown: &shutdown,
        };
        let mut looped = LoopState {
            partitions,
            dedup,
            in_flight: None,
        };
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
                if let Finish::Stop = self.finish(&mut looped, &shared, consumer.as_mut()).await? {
                    return Ok(());
                }
                self.follow_assignment(
                    events,
                    &mut looped.partitions,
                    consumer.as_mut(),
                    store.as_ref(),
                    &mut looped.dedup,
                )
                .await?;
            }
            let now = self.clock.now_ms();
            report_lag(consumer.as_ref());
            let Some(fetched) = fetched else {
                if let Finish::Stop = self.finish(&mut looped, &shared, consumer.as_mut()).await? {
                    return Ok(());
                }
                if draining {
                    break;
                }
                self.commit_idle(
                    &mut looped.partitions,
                    store.as_ref(),
                    now,
                    &shutdown,
                    consumer.as_mut(),
                )
                .await?;
                continue;
            };
            if !looped.partitions.contains_key(&fetched.partition) {
                // Revoked while the batch was read: its new owner reads it again.
                tracing::debug!(
                    partition = fetched.partition,
                    "records of a partition this processor does not own"
                );
                continue;
            }
            let started = Instant::now();
            // Rolled up while the previous batch's commit is in flight: the roll-up
            // reads only memory (the dedup window, the watermark), which the previous
            // batch already moved.
            let mut output = self.roll_up_fetched(&fetched, &mut looped, &plan);
            match self.finish(&mut looped, &shared, consumer.as_mut()).await? {
                Finish::Stop => return Ok(()),
                // Isolating the previous batch reloaded the dedup window from the store
                // and moved the watermark again: this batch rolls up again against them.
                Finish::Isolated => {
                    output = self.roll_up_fetched(&fetched, &mut looped, &plan);
                }
                Finish::Done => {}
            }
            let Some(state) = looped.partitions.get_mut(&fetched.partition) else {
                continue;
            };
            let context = Context {
                store: store.as_ref(),
                plan: &plan,
                shutdown: &shutdown,
                now,
            };
            let watermark_before = state.watermark.clone();
            let batch = Records {
                partition: fetched.partition,
                first_offset: fetched.first_offset,
                records: &fetched.records,
            };
            let Some(prepared) = self
                .prepare_commit(batch, output, state, &context, consumer.as_mut())
                .await?
            else {
                return Ok(());
            };
            // The first attempt starts now and runs while the next batch is polled and
            // rolled up; one commit is in flight at a time, so batches land in order.
            let attempt = {
                let store = Arc::clone(&store);
                let commit = prepared.commit.clone();
                let (counts, by_reason) = (prepared.counts, prepared.by_reason);
                let progress = self.progress.clone();
                let observer = self.usage_observer.clone();
                let usage = prepared.landed_usage(observer.as_ref());
                tokio::spawn(async move {
                    let (partition, next_offset) = (commit.partition, commit.next_offset);
                    let outcome = store.commit(commit).await;
                    // Counted the moment it lands, as a commit awaited in place is: the
                    // batch's data, its metrics and its progress appear together.
                    if outcome.is_ok() {
                        record_counts(&counts);
                        letters::record(by_reason);
                        progress.set(partition, next_offset);
                        if let (Some(observer), Some(usage)) = (observer, usage) {
                            observer(&usage);
                        }
                    }
                    outcome
                })
            };
            // Lets the attempt start (a store hands its work to a thread of its own on
            // the first poll) before this thread goes back to rolling up.
            tokio::task::yield_now().await;
            looped.in_flight = Some(InFlight {
                fetched,
                prepared,
                attempt,
                watermark_before,
                now,
                started,
            });
        }
        if let Finish::Stop = self.finish(&mut looped, &shared, consumer.as_mut()).await? {
            return Ok(());
        }
        tracing::info!("stream processor drained and stopped");
        Ok(())
    }

    /// Rolls up a fetched batch of an owned partition against its watermark.
    fn roll_up_fetched(
        &self,
        fetched: &FetchedBatch,
        looped: &mut LoopState,
        plan: &RollUpPlan<'_>,
    ) -> BatchOutput {
        let Some(state) = looped.partitions.get(&fetched.partition) else {
            return BatchOutput::default();
        };
        roll_up(
            &fetched.records,
            fetched.first_offset,
            &mut looped.dedup,
            &state.watermark,
            plan,
            self.clock.now_ms(),
        )
    }

    /// Waits for the batch in flight to land (retrying its commit if the first attempt
    /// failed, isolating what the store refuses), then releases it from the log.
    async fn finish(
        &self,
        looped: &mut LoopState,
        shared: &Shared<'_>,
        consumer: &mut dyn LogConsumer,
    ) -> Result<Finish, ProcessorError> {
        let LoopState {
            partitions,
            dedup,
            in_flight,
        } = looped;
        let Some(flight) = in_flight.take() else {
            return Ok(Finish::Done);
        };
        let first_attempt = flight.attempt.await.unwrap_or_else(|error| {
            Err(StoreError::Unavailable(format!(
                "the commit task failed: {error}"
            )))
        });
        let partition = flight.fetched.partition;
        let Some(state) = partitions.get_mut(&partition) else {
            return Ok(Finish::Done);
        };
        let context = Context {
            store: shared.store.as_ref(),
            plan: shared.plan,
            shutdown: shared.shutdown,
            now: flight.now,
        };
        let batch = Records {
            partition,
            first_offset: flight.fetched.first_offset,
            records: &flight.fetched.records,
        };
        let finish = match self
            .land(
                flight.prepared,
                Some(first_attempt),
                state,
                &context,
                consumer,
            )
            .await?
        {
            Landed::Committed => Finish::Done,
            Landed::Shutdown => return Ok(Finish::Stop),
            Landed::Refused(error) => {
                tracing::warn!(
                    partition,
                    first_offset = batch.first_offset,
                    next_offset = batch.next_offset(),
                    %error,
                    "the store refuses this batch but accepts other writes: committing it in parts to find the records it refuses"
                );
                state.watermark = flight.watermark_before;
                if !self
                    .isolate(batch, state, dedup, &context, consumer)
                    .await?
                {
                    return Ok(Finish::Stop);
                }
                Finish::Isolated
            }
        };
        consumer.release(partition, state.next_offset).await?;
        metrics::counter!("ais_stream_dedup_evictions_total").increment(dedup.take_evicted());
        metrics::histogram!("ais_stream_batch_seconds")
            .record(flight.started.elapsed().as_secs_f64());
        metrics::gauge!("ais_stream_watermark_lag_seconds")
            .set(flight.now.saturating_sub(state.watermark.current_ms()) as f64 / 1000.0);
        Ok(finish)
    }

    /// Commits the advancing watermark of partitions idle for the interval.
    async fn commit_idle(
        &self,
        partitions: &mut BTreeMap<u32, PartitionState>,
        store: &dyn BatchSink,
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
            let commit = BatchCommit::position(*partition, state.next_offset, watermark_ms);
            // Holding no events, it is never refused as poison: it lands or waits.
            self.commit_with_retry(store, commit, shutdown, consumer)
                .await?;
        }
        Ok(())
    }

    /// Stores one rolled-up batch: its dead letters to the sink first (if the store
    /// does not keep them), then the commit; on success the partition's state moves to
    /// the batch's end.
    async fn store_batch(
        &self,
        batch: Records<'_>,
        output: BatchOutput,
        state: &mut PartitionState,
        context: &Context<'_>,
        consumer: &mut dyn LogConsumer,
    ) -> Result<Landed, ProcessorError> {
        let Some(prepared) = self
            .prepare_commit(batch, output, state, context, consumer)
            .await?
        else {
            return Ok(Landed::Shutdown);
        };
        self.land(prepared, None, state, context, consumer).await
    }

    /// A rolled-up batch made a commit: its dead letters placed (delivered to the sink
    /// first, if the store does not keep them), the partition's watermark moved by it.
    /// `None` when shutdown was asked while the sink failed.
    async fn prepare_commit(
        &self,
        batch: Records<'_>,
        output: BatchOutput,
        state: &mut PartitionState,
        context: &Context<'_>,
        consumer: &mut dyn LogConsumer,
    ) -> Result<Option<Prepared>, ProcessorError> {
        let BatchOutput {
            partials,
            dimensions,
            dedup: new_ids,
            events,
            rejected,
            newest_event_ms,
            counts,
            ledger,
            usage,
            settled,
        } = output;
        state.watermark.observe_batch(newest_event_ms, context.now);
        let letters = letters::letters_of(
            batch.partition,
            batch.first_offset,
            batch.records,
            &rejected,
            context.now,
        );
        letters::log(&letters);
        let by_reason = letters::count_by_reason(&letters);
        let dead_letters = self
            .place_letters(letters, context.shutdown, consumer)
            .await?;
        let Some(dead_letters) = dead_letters else {
            return Ok(None);
        };
        let commit = BatchCommit {
            partition: batch.partition,
            first_offset: batch.first_offset,
            next_offset: batch.next_offset(),
            watermark_ms: state.watermark.current_ms(),
            partials,
            dedup: new_ids,
            events,
            dead_letters,
            dimensions: DimensionPartials {
                max_values_per_minute: context.plan.dimensions.max_values_per_minute,
                partials: dimensions,
            },
            ledger,
            usage,
        };
        Ok(Some(Prepared {
            commit,
            counts,
            by_reason,
            settled,
        }))
    }

    /// Lands a prepared commit: `first_attempt` is the outcome of an attempt already
    /// made (the pipeline's, in flight while the next batch rolled up, which counted
    /// the batch if it landed); without one, or when it failed, the commit is made with
    /// retries. On success the partition's state moves to the batch's end.
    async fn land(
        &self,
        prepared: Prepared,
        first_attempt: Option<Result<(), StoreError>>,
        state: &mut PartitionState,
        context: &Context<'_>,
        consumer: &mut dyn LogConsumer,
    ) -> Result<Landed, ProcessorError> {
        let Prepared {
            commit,
            counts,
            by_reason,
            settled,
        } = prepared;
        let next_offset = commit.next_offset;
        let partition = commit.partition;
        let landed = match first_attempt {
            // The attempt counted it when it landed.
            Some(Ok(())) => Landed::Committed,
            // Failed, or never made: retried as every commit is (an attempt that landed
            // but whose answer was lost is found by the position it moved).
            Some(Err(_)) | None => {
                let usage = self.usage_observer.as_ref().map(|_| LandedUsage {
                    entries: commit.usage.clone(),
                    settled,
                });
                let landed = self
                    .commit_with_retry(context.store, commit, context.shutdown, consumer)
                    .await?;
                if let Landed::Committed = landed {
                    record_counts(&counts);
                    letters::record(by_reason);
                    self.progress.set(partition, next_offset);
                    if let (Some(observer), Some(usage)) = (&self.usage_observer, usage) {
                        observer(&usage);
                    }
                }
                landed
            }
        };
        if let Landed::Committed = landed {
            state.next_offset = next_offset;
            state.last_commit_ms = context.now;
        }
        Ok(landed)
    }

    /// Where `letters` go: delivered to the sink now (none left for the commit), or
    /// into the commit when there is no sink. `None` when shutdown was asked while the
    /// sink failed.
    async fn place_letters(
        &self,
        letters: Vec<DeadLetter>,
        shutdown: &CancellationToken,
        consumer: &mut dyn LogConsumer,
    ) -> Result<Option<Vec<DeadLetter>>, ProcessorError> {
        let Some(sink) = &self.dead_letter_sink else {
            return Ok(Some(letters));
        };
        if letters.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match sink.deliver(&letters).await {
                Ok(()) => return Ok(Some(Vec::new())),
                Err(error) => {
                    tracing::warn!(%error, letters = letters.len(), retry_in = ?backoff, "dead letters could not be delivered; retrying before the batch commits");
                    consumer.refresh_lag();
                    report_lag(consumer);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => {
                            let delivered = sink.deliver(&letters).await.is_ok();
                            return Ok(delivered.then(Vec::new));
                        }
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    /// Commits a batch the store refused in parts: halves, recursively, each rolled up
    /// again against the dedup window reloaded from the store (the refused attempt
    /// taught it the batch's ids); a single record still refused becomes a `poison`
    /// dead letter. `false` when shutdown interrupted it (the log keeps the rest).
    async fn isolate(
        &self,
        batch: Records<'_>,
        state: &mut PartitionState,
        dedup: &mut Dedup,
        context: &Context<'_>,
        consumer: &mut dyn LogConsumer,
    ) -> Result<bool, ProcessorError> {
        let Some(reloaded) = self.reload_dedup(context).await else {
            return Ok(false);
        };
        *dedup = reloaded;
        // Ranges still to commit, the next one last; halves keep offset order.
        let mut pending = vec![(0, batch.records.len())];
        while let Some((start, end)) = pending.pop() {
            let part = batch.slice(start, end);
            let watermark_before = state.watermark.clone();
            let output = roll_up(
                part.records,
                part.first_offset,
                dedup,
                &state.watermark,
                context.plan,
                context.now,
            );
            let error = match self
                .store_batch(part, output, state, context, consumer)
                .await?
            {
                Landed::Committed => continue,
                Landed::Shutdown => return Ok(false),
                Landed::Refused(error) => error,
            };
            state.watermark = watermark_before;
            let Some(reloaded) = self.reload_dedup(context).await else {
                return Ok(false);
            };
            *dedup = reloaded;
            if end - start > 1 {
                let middle = start + (end - start) / 2;
                pending.push((middle, end));
                pending.push((start, middle));
                continue;
            }
            if !self
                .commit_poison(part, &error, state, context, consumer)
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Moves the position past the one record of `part`, which the store refuses, with
    /// its `poison` dead letter.
    async fn commit_poison(
        &self,
        part: Records<'_>,
        error: &StoreError,
        state: &mut PartitionState,
        context: &Context<'_>,
        consumer: &mut dyn LogConsumer,
    ) -> Result<bool, ProcessorError> {
        let Some(record) = part.records.first() else {
            return Ok(true);
        };
        let letter = DeadLetter::new(
            LetterId {
                partition: part.partition,
                offset: part.first_offset,
            },
            Reason::Poison,
            &format!("the store refuses this record: {error}"),
            record,
            context.now,
        );
        letters::log(std::slice::from_ref(&letter));
        let by_reason = letters::count_by_reason(std::slice::from_ref(&letter));
        let Some(dead_letters) = self
            .place_letters(vec![letter], context.shutdown, consumer)
            .await?
        else {
            return Ok(false);
        };
        // Keyed as a roll-up keys it (the store refusing it says nothing about its
        // bytes).
        let key = crate::batch::ledger_key(record, context.now);
        let accounted = ais_store::ledger::LedgerCounts {
            accepted: 1,
            dead_lettered: 1,
            ..Default::default()
        };
        let commit = BatchCommit {
            first_offset: part.first_offset,
            dead_letters,
            ledger: vec![(key, accounted)],
            ..BatchCommit::position(
                part.partition,
                part.next_offset(),
                state.watermark.current_ms(),
            )
        };
        match self
            .commit_with_retry(context.store, commit, context.shutdown, consumer)
            .await?
        {
            Landed::Committed => {
                letters::record(by_reason);
                state.next_offset = part.next_offset();
                state.last_commit_ms = context.now;
                self.progress.set(part.partition, state.next_offset);
                Ok(true)
            }
            Landed::Shutdown | Landed::Refused(_) => Ok(false),
        }
    }

    /// The dedup window as the store holds it, asked again until it answers; `None`
    /// when shutdown is asked meanwhile.
    async fn reload_dedup(&self, context: &Context<'_>) -> Option<Dedup> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match context.store.dedup_entries(i64::MIN).await {
                Ok(entries) => return Some(Dedup::rebuild(self.config.dedup, &entries)),
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "cannot reload the dedup window; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = context.shutdown.cancelled() => return None,
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    /// Whether the store accepts a commit of `partition` that restates its stored
    /// position and watermark (a partition never committed: offset 0, no watermark): it
    /// does when it is up and only refuses what a batch holds.
    async fn store_accepts_writes(&self, store: &dyn BatchSink, partition: u32) -> bool {
        let Ok(states) = store.partition_states().await else {
            return false;
        };
        let (next_offset, watermark_ms) = states
            .iter()
            .find(|state| state.partition == partition)
            .map_or((0, i64::MIN), |stored| {
                (stored.next_offset, stored.watermark_ms)
            });
        store
            .commit(BatchCommit::position(partition, next_offset, watermark_ms))
            .await
            .is_ok()
    }

    /// Commits, retrying failures with backoff. A commit holding events that the store
    /// refuses [`POISON_REFUSALS`] times in a row while it accepts other writes comes
    /// back [`Landed::Refused`], for the caller to isolate what it refuses.
    async fn commit_with_retry(
        &self,
        store: &dyn BatchSink,
        commit: BatchCommit,
        shutdown: &CancellationToken,
        consumer: &mut dyn LogConsumer,
    ) -> Result<Landed, ProcessorError> {
        let mut backoff = Duration::from_millis(50);
        let mut refusals = 0;
        loop {
            match store.commit(commit.clone()).await {
                Ok(()) => return Ok(Landed::Committed),
                // A commit that landed but whose answer was lost: the retry finds the
                // position already moved to this batch's end. That is success.
                Err(StoreError::OutOfOrder { expected, .. })
                    if expected == commit.next_offset
                        && commit.next_offset > commit.first_offset =>
                {
                    return Ok(Landed::Committed)
                }
                // Another process owns the partition now (or moved it past this
                // batch): stop rather than fight it; restarted, the process rejoins.
                Err(error @ (StoreError::OutOfOrder { .. } | StoreError::Fenced { .. })) => {
                    return Err(error.into())
                }
                Err(error) => {
                    // The store answered and said no (not: could not be reached).
                    let refused =
                        matches!(error, StoreError::Backend(_) | StoreError::Malformed(_));
                    refusals = if refused { refusals + 1 } else { 0 };
                    if refusals >= POISON_REFUSALS && !commit.events.is_empty() {
                        if self.store_accepts_writes(store, commit.partition).await {
                            return Ok(Landed::Refused(error));
                        }
                        // It refuses everything: an outage, not this batch.
                        refusals = 0;
                    }
                    tracing::warn!(%error, retry_in = ?backoff, "store commit failed; retrying the same batch");
                    // The lag keeps being reported while the store holds the stream back.
                    consumer.refresh_lag();
                    report_lag(consumer);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => {
                            // One last try, then leave the batch to the log.
                            return Ok(if store.commit(commit).await.is_ok() {
                                Landed::Committed
                            } else {
                                Landed::Shutdown
                            });
                        }
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }
}
