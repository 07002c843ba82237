//! The ingest edge: `POST /v1/events`, OTLP/HTTP `POST /v1/traces` and OTLP/gRPC
//! ([`grpc`]), each from bearer key to durable log append.
//!
//! A request is authenticated (key → tenant), checked against the tenant's rate limit
//! ([`ratelimit`]; refused with 429 before its body is read), given a slot at the
//! edge ([`pressure`]; 503 when the edge holds its limit of requests or body bytes),
//! checked for media type and encoding,
//! read within the body limit, decompressed within the decompressed limit, decoded and
//! validated by `ais_model::decode` (bad events are rejected one by one), encoded into
//! one [`ais_log::RecordBatch`], and appended to the [`ais_log::Log`]. The answer, 202,
//! is sent only once the log says the batch is durable. Errors map to HTTP statuses in
//! one place, [`error::IngestError`].
//!
//! OTLP requests take the same steps; only decoding differs (`ais_model::otlp`: spans
//! with GenAI attributes become the same validated events).
//!
//! The handler never writes the store: ingest and stream meet only through the log.

pub mod error;
pub mod grpc;
mod handler;
mod otlp_http;
pub mod payloads;
pub mod pressure;
pub mod ratelimit;

use std::sync::Arc;
use std::time::Duration;

use ais_log::Log;
use ais_model::auth::{Keyring, Principal};
use ais_model::price::PriceTable;
use ais_model::report::IngestReport;
use axum::routing::post;
use axum::Router;

pub use handler::{IngestResponse, DRAIN_MAX_BYTES, DRAIN_PATIENCE};
pub use payloads::PayloadCapture;

/// Limits and clocks of the ingest edge.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Largest body, compressed or not, and largest decompressed body (16 MiB).
    pub max_body_bytes: usize,
    /// Most events in one request (10,000).
    pub max_events: usize,
    /// Oldest accepted event relative to now: the raw-event retention.
    pub max_event_age: Duration,
    /// Furthest accepted event in the future (5 minutes): a clock far ahead would close
    /// windows early for nobody's benefit.
    pub max_event_future: Duration,
    /// `Retry-After` when the log is full or unavailable.
    pub retry_after: Duration,
    /// Payload capture (`[payloads]`); `None`: off, and events' `input` and `output`
    /// are dropped as they are decoded.
    pub payloads: Option<Arc<PayloadCapture>>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_events: 10_000,
            max_event_age: Duration::from_secs(7 * 24 * 3600),
            max_event_future: Duration::from_secs(5 * 60),
            retry_after: Duration::from_secs(1),
            payloads: None,
        }
    }
}

/// What the handler needs; cheap to clone (all shared).
#[derive(Clone)]
pub struct IngestState {
    pub log: Arc<dyn Log>,
    pub keyring: Arc<Keyring>,
    pub prices: Arc<PriceTable>,
    pub config: Arc<IngestConfig>,
    pub limiter: Arc<ratelimit::TenantLimiter>,
    pub pressure: Arc<pressure::Pressure>,
    /// Why accepted events cost nothing, what was refused or skipped: per tenant and
    /// source, each request added once its events are durable.
    pub report: Arc<IngestReport>,
}

/// Authenticates a caller whose requests become events (a key that may ingest) and
/// checks its tenant's rate limit, before anything of the request is read: the first
/// step of every ingest route, and of each call through the gateway (one call, one
/// event). Refusals are [`IngestError::Auth`] and [`IngestError::RateLimited`].
pub fn admit_caller(
    keyring: &Keyring,
    limiter: &ratelimit::TenantLimiter,
    authorization: Option<&[u8]>,
) -> Result<Principal, error::IngestError> {
    let principal = keyring.authorize_ingest(authorization)?;
    if let Err(refusal) = limiter.admit(&principal.tenant) {
        return Err(error::IngestError::RateLimited {
            limit: refusal.limit,
            retry_after_s: refusal.retry_after.as_secs_f64().ceil().max(1.0) as u64,
            reset_s: refusal.reset.as_secs_f64().ceil() as u64,
        });
    }
    Ok(principal)
}

/// The ingest routes. The body limit is enforced inside the handler (so an oversize
/// body gets our 413 message rather than a generic one).
pub fn router(state: IngestState) -> Router {
    // Every refusal reason is a series from start-up, so dashboards and alerts see 0.
    for reason in error::REFUSAL_REASONS {
        metrics::counter!("ais_ingest_rejected_total", "reason" => reason).increment(0);
    }
    Router::new()
        .route("/v1/events", post(handler::post_events))
        .route("/v1/traces", post(otlp_http::post_traces))
        .with_state(state)
}
