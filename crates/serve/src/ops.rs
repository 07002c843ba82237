//! Operations endpoints: `/healthz` (the process is alive), `/readyz` (it can accept
//! writes; the body says which parts are degraded) and `/metrics` (Prometheus text).
//!
//! `/readyz` answers probes that carry no key, so what it tells everyone is limited to
//! each component's readiness, its state and sizes in bytes. Counts of events, records
//! and offsets say how much traffic the tenants send: with keys configured they go only
//! to a request with an `admin` key; an open server (no keys, loopback only) shows them
//! to every caller.

use std::collections::BTreeMap;
use std::sync::Arc;

use ais_model::auth::{KeyKind, Keyring};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
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
    /// The component's state for anyone to read: no count of events, records or
    /// offsets goes here (those are `counts`).
    pub detail: String,
    /// Sizes (bytes) and other numbers anyone may read, e.g. `raw_bytes`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<&'static str, i64>,
    /// Counts of events, records and offsets, e.g. `lag_records`: shown (among the
    /// `facts`) only to admin keys, or to everyone on an open server.
    #[serde(skip)]
    pub counts: BTreeMap<&'static str, i64>,
}

impl Readiness {
    /// The component as `/readyz` shows it: `counts` among the facts when `privileged`.
    fn shown(&self, privileged: bool) -> Readiness {
        let mut facts = self.facts.clone();
        if privileged {
            facts.extend(self.counts.iter().map(|(name, value)| (*name, *value)));
        }
        Readiness {
            facts,
            counts: BTreeMap::new(),
            ..self.clone()
        }
    }
}

/// Asks the running components how they are; called per `/readyz` request.
pub type ReadinessCheck = Arc<dyn Fn() -> Vec<Readiness> + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    readiness: ReadinessCheck,
    metrics: Option<PrometheusHandle>,
    keyring: Arc<Keyring>,
}

/// `/healthz`, `/readyz` and `/metrics`. `keyring` decides who sees the counts of
/// `/readyz`: admin keys, or everyone when it is open.
pub fn ops_router(
    readiness: ReadinessCheck,
    metrics: Option<PrometheusHandle>,
    keyring: Arc<Keyring>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(OpsState {
            readiness,
            metrics,
            keyring,
        })
}

/// Whether the caller may see counts. A missing, unknown or non-admin key is not an
/// error here: probes send no key and still get the readiness answer.
fn sees_counts(keyring: &Keyring, headers: &HeaderMap) -> bool {
    if keyring.is_open() {
        return true;
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    keyring
        .authenticate(authorization)
        .is_ok_and(|principal| principal.kind == KeyKind::Admin)
}

async fn readyz(State(state): State<OpsState>, headers: HeaderMap) -> Response {
    let privileged = sees_counts(&state.keyring, &headers);
    let components: Vec<Readiness> = (state.readiness)()
        .iter()
        .map(|component| component.shown(privileged))
        .collect();
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
