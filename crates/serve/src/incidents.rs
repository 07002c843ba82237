//! `GET /v1/incidents?from&to[&model][&tenant]`: the anomalies of `/v1/anomalies`,
//! scoped to the caller the same way, grouped into incidents
//! ([`ais_evaluate::incident`]): one per (tenant, model) and run of anomalies within
//! the server's gap of each other.
//!
//! With `?model=`, an incident of locations (model `"*"`) still says whether it is
//! `wider`: the anomalies of the tenant's models as a whole are read beside.
//!
//! An incident that started before `from` is shown whole: the anomalies are read from
//! [`LOOKBACK`] before `from`, grouped, and the incidents active in `[from, to)` are
//! kept. The read stops at [`MAX_ANOMALIES`], the newest first; past it the answer says
//! `"truncated": true`, since its oldest incidents may then miss members or be missing.

use std::collections::HashMap;

use ais_evaluate::alert::AlertLocation;
use ais_evaluate::incident::{self, Incident, LOOKBACK};
use ais_model::time::unix_now_ms;
use ais_store::evaluation::AnomalyQuery;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use crate::anomalies::{read_bounded, tenant_scope, AnomalyBody};
use crate::error::QueryError;
use crate::query::authorize;
use crate::{params, QueryState};

pub use crate::anomalies::MAX_ANOMALIES;

#[derive(Debug, Serialize)]
pub struct PeakBody {
    pub score: f64,
    pub detector: String,
    pub metric: String,
}

#[derive(Debug, Serialize)]
pub struct IncidentBody {
    pub id: String,
    pub tenant: String,
    pub model: String,
    pub state: &'static str,
    pub start: i64,
    /// The latest member's resolution window; `null` while any member fires.
    pub end: Option<i64>,
    pub peak: PeakBody,
    pub detectors: Vec<String>,
    pub metrics: Vec<String>,
    /// Where its anomalies of locations fired; absent when none is of a location.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<AlertLocation>,
    /// `"wider"` (a model of the tenant was anomalous as a whole too, see `wider`) or
    /// `"narrower"` (confined to its locations); absent without locations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extent: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wider: Vec<String>,
    pub anomalies: Vec<AnomalyBody>,
}

impl From<Incident> for IncidentBody {
    fn from(incident: Incident) -> Self {
        let extent = incident.extent();
        Self {
            id: incident.id,
            tenant: incident.tenant,
            model: incident.model,
            state: incident.state.as_str(),
            start: incident.start_ms,
            end: incident.end_ms,
            peak: PeakBody {
                score: incident.peak.score,
                detector: incident.peak.detector,
                metric: incident.peak.metric,
            },
            detectors: incident.detectors,
            metrics: incident.metrics,
            locations: incident.locations.into_iter().map(Into::into).collect(),
            extent,
            wider: incident.wider,
            anomalies: incident.members.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct IncidentsResponse {
    pub from: i64,
    pub to: i64,
    pub gap_secs: u64,
    pub incidents: Vec<IncidentBody>,
    /// The read stopped at [`MAX_ANOMALIES`]: the oldest incidents may be partial or
    /// missing.
    pub truncated: bool,
}

pub async fn list(
    State(state): State<QueryState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<IncidentsResponse>, QueryError> {
    let principal = authorize(&state, &headers)?;
    // As `/v1/anomalies`: an admin without `?tenant=` sees every tenant and `"*"`.
    let tenant = tenant_scope(&principal, &params)?;
    let range = params::range(&params, unix_now_ms())?;
    let lookback_ms = i64::try_from(LOOKBACK.as_millis()).unwrap_or(i64::MAX);
    let query = AnomalyQuery {
        tenant,
        from_ms: range.from_ms.saturating_sub(lookback_ms),
        to_ms: range.to_ms,
        model: params.get("model").cloned(),
        limit: None,
    };
    let (records, truncated) = read_bounded(&state, query.clone()).await?;
    // Whether an incident of locations (model "*") is wider is said by the anomalies
    // of the tenant's models as a whole, which a filter on the model leaves out: read
    // them beside, in the same scope and range.
    let located = query.model.is_some() && records.iter().any(|r| r.location.is_some());
    let (beside, beside_truncated) = if located {
        read_bounded(
            &state,
            AnomalyQuery {
                model: None,
                ..query
            },
        )
        .await?
    } else {
        (Vec::new(), false)
    };
    let truncated = truncated || beside_truncated;
    let incidents = incident::group_beside(&records, &beside, state.incident_gap)
        .into_iter()
        .filter(|incident| incident.overlaps(range.from_ms, range.to_ms))
        .map(Into::into)
        .collect();
    Ok(Json(IncidentsResponse {
        from: range.from_ms,
        to: range.to_ms,
        gap_secs: state.incident_gap.as_secs(),
        incidents,
        truncated,
    }))
}
