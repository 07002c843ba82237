//! The gateway: an OpenAI-compatible HTTP endpoint in front of model servers, that
//! routes each call to a healthy, lightly loaded replica and turns every call into a
//! v1 event in the pipeline's log.
//!
//! Callers send `Authorization: Bearer <ais key>` (or `x-api-key`) to `POST
//! /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `GET /v1/models`, or
//! Anthropic's `POST /v1/messages`; the tenant comes from the
//! key and its rate limit applies, as at ingest. The modules, in the order a call
//! meets them:
//!
//! - [`config`]: the `[gateway]` section (models, replicas, credentials, aliases,
//!   fallbacks, timeouts, breakers), checked with errors naming the key at fault.
//! - [`call`]: the handlers: admission, the bounded body, the model, the attempts and
//!   retries, the answer.
//! - [`registry`]: models → replicas, and the choice of a replica (power of two
//!   choices over Peak-EWMA costs, [`ewma`]), each replica behind its own circuit
//!   [`breaker`].
//! - [`relay`]: a streamed answer passed on chunk by chunk, read on the way by [`sse`]
//!   (time to first token, usage); dropping it drops the upstream request.
//! - [`record`]: each call's event, validated like ingest's, queued without blocking
//!   and appended to the log through an [`record::EventSink`].
//! - [`budget`]: the call's estimated spend held against the tenant's budgets before
//!   it goes upstream, settled with its real spend.
//! - [`cache`]: the exact-match response cache, off unless configured.
//! - [`semantic`]: the semantic response cache (prompts that mean nearly the same,
//!   by their embeddings), off unless configured.
//! - [`error`]: every failure as OpenAI's error format.
//!
//! The credential of each upstream comes from the environment variable the config
//! names (read by the binary and handed in); the caller's key never goes upstream.

pub mod breaker;
pub mod budget;
pub mod cache;
pub mod call;
pub mod config;
pub mod error;
pub mod ewma;
pub mod record;
pub mod registry;
pub mod relay;
pub mod semantic;
pub mod sse;

use std::sync::Arc;

use ais_ingest::ratelimit::TenantLimiter;
use ais_model::auth::Keyring;
use ais_model::time::Clock;
use axum::http::HeaderName;
use axum::routing::{get, post};
use axum::Router;

use crate::config::{CallLimits, GatewayConfig};
use crate::record::Recorder;
use crate::registry::Registry;

/// What the handlers share; cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    pub registry: Arc<Registry>,
    pub keyring: Arc<Keyring>,
    pub limiter: Arc<TenantLimiter>,
    pub recorder: Arc<Recorder>,
    pub client: reqwest::Client,
    pub limits: CallLimits,
    pub header_attributes: Arc<Vec<(HeaderName, String)>>,
    pub clock: Arc<dyn Clock>,
    /// One permit per call in flight (`max_in_flight_calls`), held until its answer
    /// is sent whole or its stream ends.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// The exact-match cache, when configured.
    pub cache: Option<Arc<cache::ResponseCache>>,
    /// The semantic cache, when configured.
    pub semantic_cache: Option<Arc<semantic::SemanticCache>>,
    /// The budgets calls reserve against, when there are any.
    pub budgets: Option<budget::Budgets>,
}

impl GatewayState {
    /// The state of a gateway with `config`'s upstreams; the keyring and the rate
    /// limiter are ingest's, so one tenant's limit covers both.
    pub fn new(
        config: &GatewayConfig,
        keyring: Arc<Keyring>,
        limiter: Arc<TenantLimiter>,
        recorder: Arc<Recorder>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ClientError> {
        let https = config
            .models
            .iter()
            .flat_map(|model| &model.replicas)
            .any(|(url, _)| url.starts_with("https://"));
        Ok(Self {
            cache: config
                .cache
                .map(|cache| Arc::new(cache::ResponseCache::new(cache, clock.clone()))),
            semantic_cache: config
                .semantic_cache
                .clone()
                .map(|semantic| Arc::new(semantic::SemanticCache::new(semantic, clock.clone()))),
            registry: Arc::new(Registry::new(config, clock.clone())),
            keyring,
            limiter,
            recorder,
            client: http_client(https)?,
            limits: config.limits,
            header_attributes: Arc::new(config.header_attributes.clone()),
            clock,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_in_flight_calls,
            )),
            budgets: None,
        })
    }

    /// Calls reserve their estimated spend against `budgets` before going upstream.
    pub fn with_budgets(mut self, budgets: budget::Budgets) -> Self {
        self.budgets = Some(budgets);
        self
    }
}

/// The routes of the gateway.
pub fn router(state: GatewayState) -> Router {
    for code in [
        "200", "400", "401", "404", "413", "429", "502", "503", "504",
    ] {
        metrics::counter!("ais_gateway_requests_total", "code" => code).increment(0);
    }
    for code in ["invalid_api_key", "insufficient_permissions"] {
        metrics::counter!("ais_gateway_calls_without_tenant_total", "code" => code).increment(0);
    }
    Router::new()
        .route("/v1/chat/completions", post(call::chat))
        .route("/v1/completions", post(call::completion))
        .route("/v1/embeddings", post(call::embeddings))
        .route("/v1/messages", post(call::messages))
        .route("/v1/models", get(call::models))
        .with_state(state)
}

/// How often the per-replica gauges are refreshed between calls: an estimate decays
/// and an open circuit turns half-open with no call to tell.
pub const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Refreshes every replica's gauges each [`GAUGE_REFRESH`] on the current runtime,
/// until the registry is dropped (the task holds it only weakly).
pub fn spawn_gauge_refresh(registry: &Arc<Registry>) -> tokio::task::JoinHandle<()> {
    let registry = Arc::downgrade(registry);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(GAUGE_REFRESH);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            registry.publish();
        }
    })
}

/// The upstream HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the gateway's HTTP client: {0}")]
pub struct ClientError(String);

/// One client for every upstream (its pool keeps connections per replica). HTTPS
/// upstreams are checked against the system's roots, read only when one is configured.
fn http_client(https: bool) -> Result<reqwest::Client, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    if https {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "cannot read some of the system's CA certificates");
        }
        let _ = roots.add_parsable_certificates(found.certs);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| ClientError(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        // Idle connections kept per replica: enough for bursts, bounded.
        .pool_max_idle_per_host(256)
        // Upstream calls carry their own credentials; no proxy from the environment.
        .no_proxy()
        .build()
        .map_err(|error| ClientError(error.to_string()))
}
