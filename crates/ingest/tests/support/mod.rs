//! The harness of the router tests: the router as the binary builds it, over an
//! in-memory log, at the edge a case asks for; the table's case type and its runner.

mod http;
mod memory_log;

use std::collections::HashMap;
use std::sync::Arc;

use ais_ingest::pressure::{Held, Pressure, PressureLimits};
use ais_ingest::ratelimit::{RateLimit, TenantLimiter};
use ais_ingest::{IngestConfig, IngestState};
use ais_log::Log;
use ais_model::auth::Keyring;
use ais_model::price::PriceTable;
use ais_model::report::IngestReport;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

pub use ais_model::time::ManualClock;
pub use http::{Call, Check, Reply};
pub use memory_log::{LogMode, MemoryLog};

/// The tenant of every key but `OTHER_KEY`.
pub const TENANT: &str = "acme";
/// May ingest and read.
pub const KEY: &str = "good-key";
/// May ingest only.
pub const WRITE_KEY: &str = "w";
/// May read only: refused by ingest.
pub const READ_KEY: &str = "r";
/// Another tenant's key, with a bucket of its own.
pub const OTHER_KEY: &str = "globex-key";
const KEYS: &str = "acme:good-key,acme:w:write,acme:r:read,globex:globex-key";

/// `TENANT`'s rate limit: small enough for a test to exhaust with one charge.
const TENANT_LIMIT: RateLimit = RateLimit {
    events_per_second: 10.0,
    burst: 10.0,
};

/// `IngestConfig::default()`'s limits, as the messages state them.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_EVENTS: usize = 10_000;

pub const PROTOBUF: &str = "application/x-protobuf";
pub const JSON: &str = "application/json";

/// The state of the edge when a case's request arrives.
#[derive(Debug, Clone, Copy)]
pub enum Edge {
    /// As the binary builds it, the log durable.
    Open,
    /// The log fails every append this way.
    Log(LogMode),
    /// `TENANT` has spent 30 events of its 10-event burst at 10 events/s: 20 in debt,
    /// so 2.1 s from admission.
    InDebt,
    /// Every request slot (one) is held by another request.
    NoRequestSlot,
    /// The edge holds at most this many body bytes.
    ByteBudget(usize),
}

/// One router with the handles a test needs to look behind it.
pub struct Ingest {
    router: Router,
    pub log: Arc<MemoryLog>,
    pub pressure: Arc<Pressure>,
    pub report: Arc<IngestReport>,
    pub clock: ManualClock,
    /// The slot an `Edge::NoRequestSlot` holds for as long as the case runs.
    _held: Option<Held>,
}

impl Ingest {
    /// The router as `ais serve` builds it (`serve::ingest_state`): the keyring, the
    /// default prices and limits, a rate limiter per tenant, the edge's pressure.
    pub fn new(edge: Edge) -> Self {
        let log = Arc::new(MemoryLog::new(match edge {
            Edge::Log(mode) => mode,
            _ => LogMode::Durable,
        }));
        let clock = ManualClock::at(0);
        let limiter = TenantLimiter::new(
            None,
            HashMap::from([(TENANT.to_string(), TENANT_LIMIT)]),
            Box::new(clock.clone()),
        );
        if matches!(edge, Edge::InDebt) {
            limiter.charge(TENANT, 30);
        }
        let defaults = PressureLimits::default();
        let pressure = Arc::new(Pressure::new(match edge {
            Edge::NoRequestSlot => PressureLimits {
                max_requests: 1,
                ..defaults
            },
            Edge::ByteBudget(max_bytes) => PressureLimits {
                max_bytes,
                ..defaults
            },
            _ => defaults,
        }));
        let held = match edge {
            Edge::NoRequestSlot => Some(pressure.enter().expect("the only slot")),
            _ => None,
        };
        let log_dyn: Arc<dyn Log> = log.clone();
        let report = Arc::new(IngestReport::new(0));
        let state = IngestState {
            log: log_dyn,
            keyring: Arc::new(Keyring::parse_plain(KEYS).expect("keys")),
            prices: Arc::new(PriceTable::with_defaults()),
            config: Arc::new(IngestConfig::default()),
            limiter: Arc::new(limiter),
            pressure: pressure.clone(),
            report: report.clone(),
        };
        Self {
            router: ais_ingest::router(state),
            log,
            pressure,
            report,
            clock,
            _held: held,
        }
    }

    /// The router itself, to serve on a socket or send a hand-built request.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    pub async fn send(&self, call: &Call) -> Reply {
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(call.path);
        if let Some(key) = call.key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        if let Some(content_type) = call.content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(encoding) = call.encoding {
            request = request.header(header::CONTENT_ENCODING, encoding);
        }
        let request = request
            .body(Body::from(call.body.clone()))
            .expect("a valid request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the body is read")
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// One row of a table: a request, the edge it meets, and what must come of it.
pub struct Case {
    name: &'static str,
    edge: Edge,
    call: Call,
    status: StatusCode,
    checks: Vec<Check>,
    /// Models of the records that must reach the log, in order, all `TENANT`'s.
    logged: &'static [&'static str],
}

pub fn case(name: &'static str, call: Call, status: StatusCode, checks: Vec<Check>) -> Case {
    Case {
        name,
        edge: Edge::Open,
        call,
        status,
        checks,
        logged: &[],
    }
}

impl Case {
    pub fn at(self, edge: Edge) -> Self {
        Self { edge, ..self }
    }

    pub fn logs(self, logged: &'static [&'static str]) -> Self {
        Self { logged, ..self }
    }

    /// Every way this case's answer or log differs from what it expects.
    async fn problems(&self) -> Vec<String> {
        let ingest = Ingest::new(self.edge);
        let reply = ingest.send(&self.call).await;
        let mut problems = Vec::new();
        if reply.status != self.status {
            problems.push(format!(
                "status {} instead of {}: {}",
                reply.status,
                self.status,
                String::from_utf8_lossy(&reply.body)
            ));
        }
        problems.extend(
            self.checks
                .iter()
                .filter_map(|check| check.verify(&reply).err()),
        );
        let logged = ingest.log.keys();
        let expected: Vec<(String, String)> = self
            .logged
            .iter()
            .map(|model| (TENANT.to_string(), model.to_string()))
            .collect();
        if logged != expected {
            problems.push(format!("the log holds {logged:?}, not {expected:?}"));
        }
        problems
    }
}

/// Runs every case and panics once, naming each that failed and how.
pub async fn run(cases: Vec<Case>) {
    assert!(!cases.is_empty(), "a table without cases proves nothing");
    let mut failures = Vec::new();
    for case in &cases {
        for problem in case.problems().await {
            failures.push(format!("{}: {problem}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems in {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
