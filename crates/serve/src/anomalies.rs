//! `GET /v1/anomalies?from&to[&model][&tenant]`: alerts of the caller's tenant; with an
//! admin key, of `?tenant=T`, or of every tenant plus the cross-tenant ones (`"*"`).

use std::collections::HashMap;

use ais_evaluate::alert::AlertLocation;
use ais_model::auth::{KeyKind, Principal};
use ais_model::time::unix_now_ms;
use ais_store::evaluation::{AnomalyQuery, AnomalyRecord};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use crate::error::QueryError;
use crate::query::{authorize, tenant_of};
use crate::{params, QueryState};

#[derive(Debug, Serialize)]
pub struct AnomalyBody {
    pub tenant: String,
    pub model: String,
    /// Where in the tenant's traffic, for an anomaly of a dimension's value
    /// (`[anomaly] dimensions`); absent for an anomaly of a model as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<AlertLocation>,
    pub detector: String,
    pub metric: String,
    pub window_start: i64,
    pub observed: f64,
    pub baseline: f64,
    pub score: f64,
    pub state: &'static str,
    pub resolved_window: Option<i64>,
}

impl From<AnomalyRecord> for AnomalyBody {
    fn from(record: AnomalyRecord) -> Self {
        Self {
            tenant: record.tenant,
            model: record.model,
            location: record.location.map(Into::into),
            detector: record.detector,
            metric: record.metric,
            window_start: record.window_start_ms,
            observed: record.observed,
            baseline: record.baseline,
            score: record.score,
            state: record.state.as_str(),
            resolved_window: record.resolved_window_ms,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AnomaliesResponse {
    pub from: i64,
    pub to: i64,
    pub anomalies: Vec<AnomalyBody>,
    /// More anomalies than [`MAX_ANOMALIES`] are in range: the newest are answered.
    pub truncated: bool,
}

/// Most anomalies one request reads (here and for `/v1/incidents`). An anomaly is a
/// few hundred bytes in memory and in the answer, so this keeps one answer to a few
/// MB; a deployment that fires more than this in a range has an alerting problem the
/// answer should show (`truncated`), not hide.
pub const MAX_ANOMALIES: usize = 10_000;

/// The newest anomalies `query` selects, at most [`MAX_ANOMALIES`] (its own limit is
/// replaced), and whether more were in range.
pub(crate) async fn read_bounded(
    state: &QueryState,
    query: AnomalyQuery,
) -> Result<(Vec<AnomalyRecord>, bool), QueryError> {
    let mut records = state
        .store
        .anomalies(AnomalyQuery {
            // One more than answered tells a full read from a cut one.
            limit: Some(MAX_ANOMALIES + 1),
            ..query
        })
        .await?;
    let truncated = records.len() > MAX_ANOMALIES;
    records.truncate(MAX_ANOMALIES);
    Ok((records, truncated))
}

/// Whose anomalies a caller reads: its own tenant's, or for an admin without
/// `?tenant=`, every tenant's and the cross-tenant ones (`None`).
pub(crate) fn tenant_scope(
    principal: &Principal,
    params: &HashMap<String, String>,
) -> Result<Option<String>, QueryError> {
    if principal.kind == KeyKind::Admin && !params.contains_key("tenant") {
        Ok(None)
    } else {
        tenant_of(principal, params).map(Some)
    }
}

pub async fn list(
    State(state): State<QueryState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<AnomaliesResponse>, QueryError> {
    let principal = authorize(&state, &headers)?;
    let tenant = tenant_scope(&principal, &params)?;
    let range = params::range(&params, unix_now_ms())?;
    let (records, truncated) = read_bounded(
        &state,
        AnomalyQuery {
            tenant,
            from_ms: range.from_ms,
            to_ms: range.to_ms,
            model: params.get("model").cloned(),
            limit: None,
        },
    )
    .await?;
    Ok(Json(AnomaliesResponse {
        from: range.from_ms,
        to: range.to_ms,
        anomalies: records.into_iter().map(Into::into).collect(),
        truncated,
    }))
}
