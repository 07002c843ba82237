//! Retention and compaction, run periodically beside the pipeline ([`Maintenance`],
//! and the loop that runs them, [`run`]).

use std::sync::Arc;
use std::time::Duration;

use ais_model::time::{duration_ms, unix_now_ms};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::batch::Positions;
use crate::StoreError;

/// What retention deletes (all times unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Rollups of windows before this.
    pub rollups_before_ms: i64,
    /// Raw events of whole hours that end at or before this.
    pub raw_before_ms: i64,
    /// The payloads (`input`, `output`) of raw events of whole hours that end at or
    /// before this: the events stay, without them.
    pub payloads_before_ms: i64,
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

/// How long each kind of data is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retain {
    pub raw: Duration,
    /// Payloads of raw events: at most as long as the events themselves.
    pub payloads: Duration,
    pub rollups: Duration,
    /// Dedup ids kept behind the newest in event time: the stream's own dedup horizon
    /// (`ProcessorConfig::dedup`), so retention never deletes an id the stream checks.
    pub dedup_horizon_ms: i64,
}

/// Every `interval` until `stop`: retention, then compaction of the raw hours that
/// every partition's watermark has passed (an hour is final once no on-time event can
/// still arrive for it). A failed pass is logged and tried again at the next tick.
pub async fn run(
    store: Arc<dyn Maintenance>,
    retain: Retain,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = unix_now_ms();
        let retention = Retention {
            rollups_before_ms: now - duration_ms(retain.rollups),
            raw_before_ms: now - duration_ms(retain.raw),
            payloads_before_ms: now - duration_ms(retain.payloads.min(retain.raw)),
            dedup_horizon_ms: retain.dedup_horizon_ms,
        };
        if let Err(error) = store.apply_retention(retention).await {
            tracing::warn!(%error, "retention pass failed; will retry");
        }
        let final_before = match store.partition_states().await {
            Ok(states) => states.iter().map(|state| state.watermark_ms).min(),
            Err(error) => {
                tracing::warn!(%error, "cannot read watermarks for compaction; will retry");
                continue;
            }
        };
        let Some(final_before) = final_before else {
            continue;
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            outcome = store.compact(final_before) => {
                if let Err(error) = outcome {
                    tracing::warn!(%error, "compaction failed; the small files stay and it will retry");
                }
            }
        }
    }
}
