//! The stream's side of the store: where each batch lands, all or nothing, with the
//! partition's new position ([`BatchSink`]), and the positions themselves
//! ([`Positions`]), which the evaluator and maintenance read too.

use ais_model::dead_letter::DeadLetter;
use ais_rollup::dimensions::DimensionKey;
use ais_rollup::usage::{UsageCounts, UsageKey};
use ais_rollup::RollupPartial;
use async_trait::async_trait;
use bytes::Bytes;

use crate::StoreError;

/// A partition's committed position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: u32,
    /// First offset not yet applied.
    pub next_offset: u64,
    /// Event-time watermark (unix ms): windows ending at or before it are final.
    pub watermark_ms: i64,
}

/// Identity of a rollup window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollupKey {
    pub tenant: String,
    pub model: String,
    /// Window start, unix ms, aligned to the minute.
    pub minute_ms: i64,
}

/// A client-set event id seen by the stream, kept so dedup survives a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupEntry {
    /// xxh3-128 of (tenant, event_id).
    pub hash: u128,
    /// Minute of the event's timestamp, unix ms.
    pub minute_ms: i64,
}

/// Everything one stream batch changes, applied all or nothing.
#[derive(Debug, Clone)]
pub struct BatchCommit {
    pub partition: u32,
    /// First offset of the batch; must equal the stored `next_offset` of the partition
    /// (a batch starting earlier was already applied and is refused).
    pub first_offset: u64,
    /// Offset after the batch's last record. Equal to `first_offset` for a commit that
    /// only moves the watermark of an idle partition.
    pub next_offset: u64,
    pub watermark_ms: i64,
    pub partials: Vec<(RollupKey, RollupPartial)>,
    pub dedup: Vec<DedupEntry>,
    /// The batch's events to keep raw: the wire records (`ais_model::wire`),
    /// duplicates and undecodable records left out, slices of the fetched buffers
    /// rather than copies.
    pub events: Vec<LoggedRecord>,
    /// Records of the batch the stream could not process. An engine that
    /// [keeps dead letters](Store::keeps_dead_letters) stores them in the same
    /// all-or-nothing step as the position, so a letter is never lost nor kept twice;
    /// for the others the stream delivers them elsewhere first and leaves this empty.
    pub dead_letters: Vec<DeadLetter>,
    /// The batch's dimension rollups; empty for an engine that keeps none
    /// ([`BatchSink::keep_dimension_rollups`]).
    pub dimensions: DimensionPartials,
    /// What became of each of the batch's records, per tenant and hour
    /// ([`crate::ledger`]), added to the ledger with the batch.
    pub ledger: Vec<(crate::ledger::LedgerKey, crate::ledger::LedgerCounts)>,
    /// What the batch's committed events used, per (tenant, scope, value, day)
    /// (`ais_rollup::usage`), added to the usage ledger with the batch.
    pub usage: Vec<(UsageKey, UsageCounts)>,
}

/// Dimension rollup partials of one batch, and the bound the store places them against
/// (`ais_rollup::dimensions`): at most `max_values_per_minute` values per (tenant,
/// dimension, minute), the rest merged into that minute's overflow.
#[derive(Debug, Clone, Default)]
pub struct DimensionPartials {
    pub max_values_per_minute: usize,
    pub partials: Vec<(DimensionKey, RollupPartial)>,
}

impl BatchCommit {
    /// A commit with no records: it keeps `partition` at `next_offset` and stores
    /// `watermark_ms` (an idle partition's advancing watermark).
    pub fn position(partition: u32, next_offset: u64, watermark_ms: i64) -> Self {
        Self {
            partition,
            first_offset: next_offset,
            next_offset,
            watermark_ms,
            partials: Vec::new(),
            dedup: Vec::new(),
            events: Vec::new(),
            dead_letters: Vec::new(),
            dimensions: DimensionPartials::default(),
            ledger: Vec::new(),
            usage: Vec::new(),
        }
    }
}

/// One log record and where it was read: engines that cannot commit raw events and
/// the position in one transaction (ClickHouse) keep the offset with the event, so
/// what an unfinished commit left behind can be told apart from what counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRecord {
    pub offset: u64,
    pub bytes: Bytes,
}

/// The claims a store handle holds, per partition (see [`BatchSink::claim`]); 0 for a
/// partition it never claimed, which passes only while nobody has claimed it.
#[derive(Debug, Default)]
pub(crate) struct HeldClaims(std::sync::Mutex<std::collections::HashMap<u32, u64>>);

impl HeldClaims {
    pub(crate) fn of(&self, partition: u32) -> u64 {
        self.0
            .lock()
            .map(|held| held.get(&partition).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub(crate) fn hold(&self, partitions: &[u32], claim: u64) {
        if let Ok(mut held) = self.0.lock() {
            for &partition in partitions {
                held.insert(partition, claim);
            }
        }
    }
}

/// The claim a handle takes: above every claim stored (`highest`), and the wall clock
/// in ms when that is higher, so claims also order after rows written before claims
/// existed (whose version is their write time).
pub(crate) fn next_claim(highest: u64, now_ms: i64) -> u64 {
    highest
        .saturating_add(1)
        .max(u64::try_from(now_ms).unwrap_or(0))
}

/// Counts a commit's outcome in `/metrics` (every engine the same way); `started` is
/// when the commit was asked for, so the time includes any wait for the writer.
pub fn record_commit(outcome: &Result<(), StoreError>, started: std::time::Instant) {
    match outcome {
        Ok(()) => {
            metrics::counter!("ais_store_commits_total").increment(1);
            metrics::histogram!("ais_store_commit_seconds").record(started.elapsed().as_secs_f64());
        }
        Err(error) => {
            metrics::counter!("ais_store_commit_errors_total").increment(1);
            tracing::debug!(%error, "store commit refused or failed");
        }
    }
}

/// Where every partition stands: read by the stream (to resume), the evaluator (the
/// minimum watermark says which windows are final) and maintenance (what is final
/// enough to compact).
#[async_trait]
pub trait Positions: Send + Sync + 'static {
    /// Committed position and watermark of every partition that has one.
    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError>;
}

/// What the stream processor writes: one batch at a time, exactly once.
#[async_trait]
pub trait BatchSink: Positions {
    /// Whether [`BatchSink::commit`] stores [`BatchCommit::dead_letters`]. An engine
    /// that does not (ClickHouse) must never be handed any: the stream checks this at
    /// start, and then needs a
    /// [`DeadLetterSink`](ais_model::dead_letter::DeadLetterSink) (the distributed
    /// stream's is the dead-letter topic) to deliver them to first.
    fn keeps_dead_letters(&self) -> bool {
        false
    }

    /// Starts keeping dimension rollups of `dimensions` (names as a breakdown writes
    /// them) and stops keeping any other, so queries read rollups of a dimension only
    /// from the first minute whose every event was rolled up; `now_ms` dates that
    /// start. Answers whether the engine keeps dimension rollups at all: when it does
    /// not, the stream builds none and breakdowns scan raw events.
    async fn keep_dimension_rollups(
        &self,
        dimensions: &[String],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let _ = (dimensions, now_ms);
        Ok(false)
    }

    /// Makes this store handle the writer of `partitions` (fencing): each gets a claim
    /// above every earlier one, and from then on a commit of the partition through a
    /// handle holding an older claim is refused ([`StoreError::Fenced`]), whenever it
    /// arrives. Called when the stream is given partitions, before it reads their
    /// positions; `now_ms` seeds the claim. Engines without fencing accept every writer.
    async fn claim(&self, partitions: &[u32], now_ms: i64) -> Result<(), StoreError> {
        let _ = (partitions, now_ms);
        Ok(())
    }

    /// Applies one batch atomically (see [`BatchCommit`]).
    async fn commit(&self, batch: BatchCommit) -> Result<(), StoreError>;

    /// Dedup ids of events whose minute is at or after `since_minute_ms`, to rebuild the
    /// stream's dedup window at start.
    async fn dedup_entries(&self, since_minute_ms: i64) -> Result<Vec<DedupEntry>, StoreError>;
}
