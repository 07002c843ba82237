//! The evaluator's side of the store: final windows of every tenant (the (tenant,
//! model) rollups and the dimension rollups), the evaluator's own position and state,
//! and the alerts it fires and resolves, committed together ([`EvaluationStore`]).
//!
//! An anomaly of a dimension's value (a [`Location`]: `endpoint` `/chat`) is kept
//! apart from the (tenant, model) ones, in a table of its own keyed by its location
//! as well (`location_anomalies` on both engines), so the identity of every anomaly
//! stored before locations existed, and the table that holds it, are left as they
//! were; reads return both kinds together.

use ais_rollup::dimensions::DimensionValue;
use ais_rollup::RollupPartial;
use async_trait::async_trait;

use crate::batch::Positions;
use crate::outbox::OutboxAlert;
use crate::query::RollupRow;
use crate::StoreError;

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

/// Where in a tenant's traffic an anomaly is: one value of one dimension, as the
/// dimension rollups hold it (`endpoint` = `/chat`, `attr.feature` = `search`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The dimension's name as a breakdown writes it.
    pub dimension: String,
    pub value: String,
}

impl Location {
    pub fn new(dimension: &str, value: &str) -> Self {
        Self {
            dimension: dimension.to_string(),
            value: value.to_string(),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} {}", self.dimension, self.value)
    }
}

/// One alert. Its identity is (tenant, model, location, detector, window_start_ms):
/// storing it twice stores it once.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyRecord {
    /// The tenant, or [`ALL_TENANTS`] for a model's anomaly across tenants.
    pub tenant: String,
    /// The model, or `"*"` for a tenant's models together (its spend, and every
    /// location: dimension rollups are per tenant, not per model).
    pub model: String,
    /// `None` for an anomaly of the model as a whole; `Some` for one of a dimension's
    /// value (`[anomaly] dimensions`).
    pub location: Option<Location>,
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
    pub location: Option<Location>,
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

/// Anomalies of one tenant (or of all, for admin views) whose window is in range.
#[derive(Debug, Clone)]
pub struct AnomalyQuery {
    /// `None`: every tenant and the cross-tenant ones.
    pub tenant: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub model: Option<String>,
    /// Most anomalies to return, the newest first; `None`: every one in range.
    pub limit: Option<usize>,
}

/// The merged dimension rollup of one (tenant, dimension, minute, group): what the
/// evaluator's per-location detectors read. Every group comes back, the missing-field
/// group and the overflow too, so the reader can tell a minute whose groups add up to
/// the tenant's traffic from one they do not cover.
#[derive(Debug, Clone)]
pub struct DimensionWindow {
    pub tenant: String,
    pub dimension: String,
    pub minute_ms: i64,
    pub group: DimensionValue,
    pub partial: RollupPartial,
}

/// What the evaluator reads and commits. The SLO and budget views of the query API read
/// its persisted state too ([`EvaluationStore::evaluation_state`]).
#[async_trait]
pub trait EvaluationStore: Positions {
    /// Merged rollups of every tenant for windows in `[from_ms, to_ms)`: (tenant, row).
    async fn rollups_all_tenants(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, RollupRow)>, StoreError>;

    /// Merged dimension rollups of every tenant, for `dimensions` and the windows in
    /// `[from_ms, to_ms)`, each (tenant, dimension, minute, group) once, ordered by
    /// minute. Only minute rows are read: a minute an engine no longer holds as such
    /// (merged into an hour) is absent, and the reader finds it uncovered.
    async fn dimension_windows(
        &self,
        dimensions: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DimensionWindow>, StoreError>;

    /// The spend of one scope of the usage ledger in a UTC day and its month, per value
    /// ([`crate::usage::SpendQuery`]): what budgets of a user, key or attribute value are
    /// compared with. An engine without a usage ledger says so.
    async fn budget_spend(
        &self,
        query: crate::usage::SpendQuery,
    ) -> Result<crate::usage::SpendAnswer, StoreError> {
        let _ = query;
        Err(StoreError::Unavailable(
            "this store keeps no usage ledger to read budgets' spend from".to_string(),
        ))
    }

    /// The evaluator's persisted position and state, if it ever committed.
    async fn evaluation_state(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError>;

    /// Stores fired and resolved anomalies with the evaluator's new position and state.
    async fn commit_evaluation(&self, commit: EvaluationCommit) -> Result<(), StoreError>;
}
