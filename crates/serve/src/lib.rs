//! What the pipeline serves to people and monitors: the tenant-scoped query API over
//! the store, the built-in web dashboard on top of it, health and readiness, and
//! Prometheus metrics of the process itself.
//!
//! - [`query`]: `/v1/query/summary`, merging rollup partials, and what every read route
//!   shares (the caller, its tenant).
//! - [`timeseries`]: `/v1/query/timeseries`, one metric per step, per model from the
//!   rollups, or filtered or per value of one dimension from a scan of raw events.
//! - [`breakdown`]: `/v1/query/breakdown`, every metric per value of one or two
//!   dimensions, from a bounded scan of raw events, and the scan's bounds.
//! - [`anomalies`]: `/v1/anomalies`, the evaluator's alerts.
//! - [`incidents`]: `/v1/incidents`, the same alerts grouped into incidents per
//!   (tenant, model).
//! - [`events`]: `/v1/events`, the raw events (drill-down).
//! - [`ledger`]: `/v1/ledger`, what became of every acknowledged record, per hour.
//! - [`usage`]: `/v1/usage`, exact usage per user, model, tenant or listed attribute
//!   and day, ranked or as a CSV export for billing.
//! - [`dlq`]: `/v1/dlq` and `/v1/dlq/replay`, the dead letters (from any
//!   `ais_model::dead_letter::DeadLetterSource`) and their replay into the log.
//! - [`objectives`]: `/v1/slos` and `/v1/budgets`, from the evaluator's state.
//! - [`reserve`]: `/v1/budgets/check` and `/v1/budgets/reserve`, spend checked and held
//!   before a call, in the [`book`] (this process's memory, or Redis shared by the
//!   distributed pipeline's servers).
//! - [`report`]: `/v1/ingest/report`, the ingest edge's counters of unpriced models,
//!   events without usage and deprecated attributes, per source.
//! - [`params`]: time ranges, steps and filters from query strings.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`dashboard`]: the built-in web dashboard at `/`, embedded at build time.
//! - [`error`]: the one mapping from query errors to HTTP answers.

pub mod anomalies;
pub mod book;
pub mod breakdown;
pub mod dashboard;
pub mod dlq;
pub mod error;
pub mod events;
pub mod incidents;
pub mod ledger;
pub mod objectives;
pub mod ops;
pub mod params;
pub mod query;
pub mod report;
pub mod reserve;
pub mod timeseries;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use ais_model::auth::Keyring;
use ais_store::QueryStore;
use axum::routing::get;
use axum::Router;

/// State of the query routes.
#[derive(Clone)]
pub struct QueryState {
    pub store: Arc<dyn QueryStore>,
    pub keyring: Arc<Keyring>,
    /// Bounds of the queries that scan raw events.
    pub limits: breakdown::QueryLimits,
    /// Anomalies of one (tenant, model) this close are one incident (`[anomaly]
    /// incident_gap_secs`; default `ais_evaluate::incident::DEFAULT_GAP`).
    pub incident_gap: Duration,
    /// The key kinds that may read payloads (`[payloads] readers`).
    pub payload_readers: events::PayloadReaders,
}

/// `/v1/query/*`.
pub fn query_router(state: QueryState) -> Router {
    Router::new()
        .route("/v1/query/summary", get(query::summary))
        .route("/v1/query/timeseries", get(timeseries::timeseries))
        .route("/v1/query/breakdown", get(breakdown::breakdown))
        .route("/v1/anomalies", get(anomalies::list))
        .route("/v1/incidents", get(incidents::list))
        .route("/v1/events", get(events::list))
        .with_state(state)
}

/// `/v1/slos` and `/v1/budgets`.
pub fn objectives_router(state: objectives::ObjectivesState) -> Router {
    Router::new()
        .route("/v1/slos", get(objectives::slos))
        .route("/v1/budgets", get(objectives::budgets))
        .with_state(state)
}

pub use dashboard::dashboard_router;
pub use dlq::{dlq_router, DlqState};
pub use ledger::{ledger_router, LedgerState};
pub use ops::{ops_router, Readiness, ReadinessCheck};
pub use report::{report_router, ReportState};
pub use reserve::{reserve_router, reserve_unavailable_router, ReserveState};
pub use usage::{usage_router, UsageState};
