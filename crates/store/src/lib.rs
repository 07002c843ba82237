//! The store: what the stream processor commits and the query API reads.
//!
//! One [`BatchSink::commit`] applies one stream batch atomically: its rollup partials,
//! the dedup ids it saw, and the partition's new position and watermark. Because the
//! position moves in the same commit, replaying the log from the stored position after
//! a crash neither loses nor double-counts (DESIGN.md, "Exactly-once effect").
//!
//! A commit also carries the batch's raw events, stored in the same all-or-nothing
//! step, so `GET /v1/events` finds every acknowledged event exactly once, and the
//! records the stream could not process (dead letters), which an engine that
//! [keeps them](BatchSink::keeps_dead_letters) stores in that step too; such an engine
//! is also a `DeadLetterSource` (the trait is `ais_model::dead_letter`'s), and store
//! errors reach its readers as `DeadLetterError::Store`.
//!
//! The store serves five roles, one trait each, and every caller takes only its own:
//! - [`batch`]: [`BatchSink`] (the stream) and [`Positions`] (read by all that follow);
//! - [`query`]: [`QueryStore`] (the query API and dashboard);
//! - [`evaluation`]: [`EvaluationStore`] (the evaluator; the SLO and budget views read
//!   its state);
//! - [`outbox`]: [`AlertOutbox`] (alert delivery);
//! - [`maintenance`]: [`Maintenance`] (retention and compaction).
//!
//! [`Store`] is all of them at once, what an engine is. Engines: [`sqlite`], the
//! embedded store of a single node (SQLite for rollups, positions and the catalog of
//! [`raw`] Parquet files), and [`clickhouse`], the store of the distributed pipeline;
//! each lays its files out by the same roles. One conformance suite
//! (`tests/conformance.rs`) runs the same scenarios against both.
//!
//! Features: the embedded engine is always built; `clickhouse` adds the [`clickhouse`]
//! module and its client. A single node does not need it, so it is off by default.

pub mod batch;
#[cfg(feature = "clickhouse")]
pub mod clickhouse;
mod error;
pub mod evaluation;
pub mod ledger;
pub mod maintenance;
pub mod outbox;
pub mod query;
pub mod raw;
pub mod sqlite;
pub mod usage;

pub use batch::{
    record_commit, BatchCommit, BatchSink, DedupEntry, DimensionPartials, LoggedRecord,
    PartitionState, Positions, RollupKey,
};
pub use error::StoreError;
pub use evaluation::EvaluationStore;
pub use maintenance::{CompactionReport, Maintenance, Retention};
pub use outbox::AlertOutbox;
pub use query::{
    BreakdownQuery, EventQuery, PayloadRead, PayloadSearch, QueryStore, RollupQuery, RollupRow,
    StoredEvent, DEFAULT_MAX_SEARCH_ROWS,
};

/// Exports the store's counters at zero from start-up: a counter that first appears at
/// 1 shows Prometheus no increase, so an alert on the first commit failure or the first
/// dropped alert would miss it.
pub fn register_metrics() {
    metrics::counter!("ais_store_commits_total").increment(0);
    metrics::counter!("ais_store_commit_errors_total").increment(0);
    metrics::counter!("ais_alert_outbox_dropped_total").increment(0);
}

/// Every role trait, for code that drives a whole engine (tests, benchmarks): a role's
/// methods are callable on a concrete engine only with its trait in scope.
pub mod prelude {
    pub use crate::{
        AlertOutbox, BatchSink, EvaluationStore, Maintenance, Positions, QueryStore, Store,
    };
}

/// Every role at once: what an engine implements, and what the binary holds before it
/// hands each part of the pipeline the role it needs.
pub trait Store: BatchSink + QueryStore + EvaluationStore + AlertOutbox + Maintenance {}

impl<T: BatchSink + QueryStore + EvaluationStore + AlertOutbox + Maintenance> Store for T {}
