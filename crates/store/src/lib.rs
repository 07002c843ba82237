//! The store: what the stream processor commits and the query API reads.
//!
//! One [`Store::commit`] applies one stream batch atomically: its rollup partials, the
//! dedup ids it saw, and the partition's new position and watermark. Because the
//! position moves in the same commit, replaying the log from the stored position after
//! a crash neither loses nor double-counts (DESIGN.md, "Exactly-once effect").
//!
//! Engines: [`sqlite`], the embedded store of a single node. The ClickHouse engine
//! follows the same trait.

use async_trait::async_trait;

use ais_rollup::RollupPartial;

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

#[async_trait]
pub trait Store: Send + Sync + 'static {
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

    /// Deletes rollups of windows before `rollups_before_ms`, and dedup ids more than
    /// `dedup_horizon_ms` of event time behind the newest kept (the stream's dedup
    /// window is relative to event time, so a backfill of old events keeps its ids).
    async fn apply_retention(
        &self,
        rollups_before_ms: i64,
        dedup_horizon_ms: i64,
    ) -> Result<(), StoreError>;
}
