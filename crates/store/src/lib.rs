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

    /// Deletes rollups of windows before `rollups_before_ms`, and dedup ids more than
    /// `dedup_horizon_ms` of event time behind the newest kept (the stream's dedup
    /// window is relative to event time, so a backfill of old events keeps its ids).
    async fn apply_retention(
        &self,
        rollups_before_ms: i64,
        dedup_horizon_ms: i64,
    ) -> Result<(), StoreError>;
}
