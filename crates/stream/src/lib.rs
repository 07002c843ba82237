//! The stream processor: from the log to the store, exactly once in effect.
//!
//! - [`dedup`]: client-set `event_id`s seen recently, per tenant, bounded in event time
//!   and entries.
//! - [`watermark`]: per-partition event-time watermark with allowed lateness and the
//!   idle rule; decides which windows are final.
//! - [`batch`]: the pure core: one fetched batch of records into rollup partials keyed
//!   by (tenant, model, minute), new dedup ids and counts. No I/O, so it is tested
//!   against an exact model.
//! - [`letters`]: the records a batch rejected as dead letters, and their metric.
//! - [`processor`]: the loop: poll the log, run the core, commit partials + dedup ids +
//!   dead letters + position + watermark in one store commit, release the log, repeat;
//!   idle partitions still move their watermark; records the store refuses are
//!   isolated and dead-lettered; shutdown drains what is durable.
//! - [`thread`]: the processor on a thread and runtime of its own, away from the HTTP
//!   workers; watching it, and joining it with bounded patience at shutdown.

pub mod batch;
pub mod dedup;
pub mod letters;
pub mod processor;
pub mod thread;
pub mod watermark;

pub use processor::{
    Processor, ProcessorConfig, Progress, UsageObserver, DEFAULT_MAX_BATCH_RECORDS,
};
