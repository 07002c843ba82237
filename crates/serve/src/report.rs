//! `GET /v1/ingest/report[?tenant=T]`: why the caller's events had no cost or did not
//! go in, per source (`http_json`, `otlp_http`, `otlp_grpc`): events accepted, rejected
//! and skipped, unpriced models by name (bounded), events without usage, and spans
//! carrying deprecated GenAI attribute names.
//!
//! The counters are the ingest edge's own ([`ais_model::report`]), kept in memory since
//! the process started (`since` in the answer), so the route is served by the processes
//! that ingest: `ais serve` and each `ais ingest` (which counts only its own requests).
//! A key sees its own tenant; an admin key any tenant's with `?tenant=`.

use std::collections::HashMap;
use std::sync::Arc;

use ais_model::auth::Keyring;
use ais_model::report::{IngestReport, TenantReport};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::routing::get;
use axum::{Json, Router};

use crate::error::QueryError;
use crate::query::tenant_of;

/// State of the report route: the counters the ingest edge feeds and the keys.
#[derive(Clone)]
pub struct ReportState {
    pub report: Arc<IngestReport>,
    pub keyring: Arc<Keyring>,
}

/// `/v1/ingest/report`.
pub fn report_router(state: ReportState) -> Router {
    Router::new()
        .route("/v1/ingest/report", get(report))
        .with_state(state)
}

pub async fn report(
    State(state): State<ReportState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<TenantReport>, QueryError> {
    let principal = state.keyring.authorize_read(
        headers
            .get(header::AUTHORIZATION)
            .map(|value| value.as_bytes()),
    )?;
    let tenant = tenant_of(&principal, &params)?;
    Ok(Json(state.report.of_tenant(&tenant)))
}
