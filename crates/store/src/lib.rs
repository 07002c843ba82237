//! The store: what the stream processor commits and the query API reads.
//!
//! One [`Store::commit`] applies one stream batch atomically: its rollup partials, the
//! dedup ids it saw, and the partition's new position and watermark. Because the
//! position moves in the same commit, replaying the log from the stored position after
//! a crash neither loses nor double-counts (DESIGN.md, "Exactly-once effect").
//!
//! A commit also carries the batch's raw events, stored in the same all-or-nothing
//! step, so `GET /v1/events` finds every acknowledged event exactly once, and the
//! records the stream could not process (dead letters), which an engine that
//! [keeps them](Store::keeps_dead_letters) stores in that step too.
//!
//! Engines: [`sqlite`], the embedded store of a single node (SQLite for rollups,
//! positions and the catalog of [`raw`] Parquet files), and [`clickhouse`], the store
//! of the distributed pipeline. One conformance suite (`tests/conformance.rs`) runs
//! the same scenarios against both.
//!
//! Features: the embedded engine is always built; `clickhouse` adds the [`clickhouse`]
//! module and its client. A single node does not need it, so it is off by default.

use async_trait::async_trait;

use ais_model::dead_letter::DeadLetter;
use ais_model::{Event, Status};
use ais_rollup::RollupPartial;
use bytes::Bytes;

#[cfg(feature = "clickhouse")]
pub mod clickhouse;
pub mod raw;
pub mod sqlite;

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
    /// The batch's events to keep raw: wire records (`ais_model::wire`), duplicates
    /// and undecodable records left out. Slices of the fetched buffers, not copies.
    pub events: Vec<LoggedRecord>,
    /// Records of the batch the stream could not process. An engine that
    /// [keeps dead letters](Store::keeps_dead_letters) stores them in the same
    /// all-or-nothing step as the position, so a letter is never lost nor kept twice;
    /// for the others the stream delivers them elsewhere first and leaves this empty.
    pub dead_letters: Vec<DeadLetter>,
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
        }
    }
}

/// Dead letters by the time they were dead-lettered, `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQuery {
    /// Only the letters whose record names this tenant; `None`: every letter, those
    /// with no readable tenant included (admin views).
    pub tenant: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Most letters returned.
    pub limit: usize,
    /// Oldest first (a replay keeps the log's order) rather than newest first.
    pub oldest_first: bool,
}

/// One log record and where it was read: engines that cannot commit raw events and
/// the position in one transaction (ClickHouse) keep the offset with the event, so
/// what an unfinished commit left behind can be told apart from what counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRecord {
    pub offset: u64,
    pub bytes: Bytes,
}

/// Raw events of one tenant, newest first (`GET /v1/events`).
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    pub tenant: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub trace_id: Option<String>,
    pub user_id: Option<String>,
    pub model: Option<String>,
    pub status: Option<Status>,
    pub min_latency_ms: Option<f64>,
    /// Most events returned.
    pub limit: usize,
}

/// One stored raw event. The event id reads back as a string: the client's id, or the
/// UUIDv7 generated at ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub tenant: String,
    pub event: Event<'static>,
}

/// What retention deletes (all times unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Rollups of windows before this.
    pub rollups_before_ms: i64,
    /// Raw events of whole hours that end at or before this.
    pub raw_before_ms: i64,
    /// Dedup ids more than this far of event time behind the newest kept.
    pub dedup_horizon_ms: i64,
}

/// What one compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub hours: u64,
    pub files_in: u64,
    pub files_out: u64,
    pub rows: u64,
}

/// Rollups of one tenant over `[from_ms, to_ms)`.
#[derive(Debug, Clone)]
pub struct RollupQuery {
    pub tenant: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub model: Option<String>,
}

/// One window's merged partial.
#[derive(Debug, Clone)]
pub struct RollupRow {
    pub model: String,
    pub minute_ms: i64,
    pub partial: RollupPartial,
}

/// Tenant of anomalies computed across all tenants (visible to admin keys only).
pub const ALL_TENANTS: &str = "*";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyState {
    Firing,
    Resolved,
}

impl AnomalyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One alert. Its identity is (tenant, model, detector, window_start_ms): storing it
/// twice stores it once.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyRecord {
    /// The tenant, or [`ALL_TENANTS`] for a model's anomaly across tenants.
    pub tenant: String,
    pub model: String,
    pub detector: String,
    pub metric: String,
    /// The window where it fired.
    pub window_start_ms: i64,
    pub observed: f64,
    pub baseline: f64,
    pub score: f64,
    pub state: AnomalyState,
    /// The window where it resolved.
    pub resolved_window_ms: Option<i64>,
}

/// An alert that resolved: the open (firing) record of this key gets resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub tenant: String,
    pub model: String,
    pub detector: String,
    pub window_start_ms: i64,
}

/// What one evaluation pass changes, applied all or nothing.
#[derive(Debug, Clone)]
pub struct EvaluationCommit {
    /// The first window start not yet evaluated.
    pub next_window_ms: i64,
    /// The detectors' state, opaque to the store.
    pub state: Vec<u8>,
    pub fired: Vec<AnomalyRecord>,
    pub resolved: Vec<Resolution>,
    /// Alert transitions to deliver, added to the outbox in the same commit, so a
    /// transition is queued exactly when the state that produced it is stored.
    pub outbox: Vec<OutboxAlert>,
    /// Most entries the outbox keeps: past it, the oldest are dropped (a newer
    /// transition of an alert supersedes an older one) and counted in
    /// `ais_alert_outbox_dropped_total`.
    pub outbox_limit: usize,
}

/// An alert transition for one receiver (`sink`: "webhook", "alertmanager").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxAlert {
    pub sink: String,
    /// The transition's idempotency key: queued once per (sink, key).
    pub key: String,
    /// The alert, opaque to the store.
    pub payload: Vec<u8>,
}

/// A queued transition as the delivery task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Increasing in queue order.
    pub id: i64,
    pub sink: String,
    pub key: String,
    pub payload: Vec<u8>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this (unix ms).
    pub next_attempt_ms: i64,
}

/// What became of a delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxOutcome {
    /// The receiver took it: the entry leaves the outbox.
    Delivered,
    /// It failed: try again at `next_attempt_ms`, with `attempts` failures so far.
    Retry { attempts: u32, next_attempt_ms: i64 },
    /// It failed for good (too many attempts, or unreadable): the entry leaves.
    Abandoned,
}

/// Anomalies of one tenant (or of all, for admin views) whose window is in range.
#[derive(Debug, Clone)]
pub struct AnomalyQuery {
    /// `None`: every tenant and the cross-tenant ones.
    pub tenant: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub model: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("batch of partition {partition} starts at offset {first_offset} but the store expects {expected}")]
    OutOfOrder {
        partition: u32,
        first_offset: u64,
        expected: u64,
    },
    #[error("store is unavailable: {0}")]
    Unavailable(String),
    #[error("store holds malformed data: {0}")]
    Malformed(String),
    #[error("store error: {0}")]
    Backend(String),
}

/// Exports the store's counters at zero from start-up: a counter that first appears at
/// 1 shows Prometheus no increase, so an alert on the first commit failure or the first
/// dropped alert would miss it.
pub fn register_metrics() {
    metrics::counter!("ais_store_commits_total").increment(0);
    metrics::counter!("ais_store_commit_errors_total").increment(0);
    metrics::counter!("ais_alert_outbox_dropped_total").increment(0);
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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether [`Store::commit`] stores [`BatchCommit::dead_letters`]. An engine that
    /// does not (ClickHouse: the distributed stream produces them to the dead-letter
    /// topic instead) must never be handed any: the stream checks this at start.
    fn keeps_dead_letters(&self) -> bool {
        false
    }

    /// Committed position and watermark of every partition that has one.
    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError>;

    /// Applies one batch atomically (see [`BatchCommit`]).
    async fn commit(&self, batch: BatchCommit) -> Result<(), StoreError>;

    /// Dedup ids of events whose minute is at or after `since_minute_ms`, to rebuild the
    /// stream's dedup window at start.
    async fn dedup_entries(&self, since_minute_ms: i64) -> Result<Vec<DedupEntry>, StoreError>;

    /// Merged rollups per (model, minute) of one tenant, ordered by model then minute.
    async fn rollups(&self, query: RollupQuery) -> Result<Vec<RollupRow>, StoreError>;

    /// Tenants with rollups in the range (for admin views).
    async fn tenants(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>, StoreError>;

    /// Merged rollups of every tenant for windows in `[from_ms, to_ms)`: (tenant, row).
    async fn rollups_all_tenants(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, RollupRow)>, StoreError>;

    /// The evaluator's persisted position and state, if it ever committed.
    async fn evaluation_state(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError>;

    /// Stores fired and resolved anomalies with the evaluator's new position and state.
    async fn commit_evaluation(&self, commit: EvaluationCommit) -> Result<(), StoreError>;

    async fn anomalies(&self, query: AnomalyQuery) -> Result<Vec<AnomalyRecord>, StoreError>;

    /// The oldest `limit` outbox entries of `sink`, in queue order (whatever their
    /// `next_attempt_ms`: delivery keeps each receiver's order, so a resolution never
    /// overtakes its firing).
    async fn outbox_pending(
        &self,
        sink: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Records the outcome of delivering entry `id`; an entry already gone (dropped at
    /// the limit) is not an error.
    async fn outbox_settle(&self, id: i64, outcome: OutboxOutcome) -> Result<(), StoreError>;

    /// Deletes what [`Retention`] says: old rollups, raw events by whole hours, and
    /// dedup ids far behind the newest (the stream's dedup window is relative to event
    /// time, so a backfill of old events keeps its ids).
    async fn apply_retention(&self, retention: Retention) -> Result<(), StoreError>;

    /// Raw events matching `query`, newest first, at most `query.limit`.
    async fn events(&self, query: EventQuery) -> Result<Vec<StoredEvent>, StoreError>;

    /// Merges the raw events of hours that are final (ending at or before
    /// `final_before_ms`) into fewer, larger units where the engine needs it; queries
    /// see the same events before, during and after.
    async fn compact(&self, final_before_ms: i64) -> Result<CompactionReport, StoreError>;
}
