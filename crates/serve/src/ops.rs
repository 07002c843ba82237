//! Operations endpoints: `/healthz` (the process is alive), `/readyz` (it can accept
//! writes; the body says which parts are degraded) and `/metrics` (Prometheus text).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

/// One component's readiness.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub component: &'static str,
    pub ready: bool,
    pub detail: String,
    /// Numbers a monitor or test can act on, e.g. `lag_records`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub facts: std::collections::BTreeMap<&'static str, i64>,
}

/// Asks the running components how they are; called per `/readyz` request.
pub type ReadinessCheck = Arc<dyn Fn() -> Vec<Readiness> + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    readiness: ReadinessCheck,
    metrics: Option<PrometheusHandle>,
}

pub fn ops_router(readiness: ReadinessCheck, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(OpsState { readiness, metrics })
}

async fn readyz(State(state): State<OpsState>) -> Response {
    let components = (state.readiness)();
    let ready = components.iter().all(|component| component.ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "ready": ready, "components": components })),
    )
        .into_response()
}

async fn metrics_text(State(state): State<OpsState>) -> Response {
    match state.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}
