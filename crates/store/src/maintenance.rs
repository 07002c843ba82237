//! Retention and compaction, run periodically beside the pipeline ([`Maintenance`]).

use async_trait::async_trait;

use crate::batch::Positions;
use crate::StoreError;

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

/// What the periodic maintenance task runs.
#[async_trait]
pub trait Maintenance: Positions {
    /// Deletes what [`Retention`] says: old rollups, raw events by whole hours, and
    /// dedup ids far behind the newest (the stream's dedup window is relative to event
    /// time, so a backfill of old events keeps its ids).
    async fn apply_retention(&self, retention: Retention) -> Result<(), StoreError>;

    /// Merges the raw events of hours that are final (ending at or before
    /// `final_before_ms`) into fewer, larger units where the engine needs it; queries
    /// see the same events before, during and after.
    async fn compact(&self, final_before_ms: i64) -> Result<CompactionReport, StoreError>;
}
