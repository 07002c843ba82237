//! Every route of the query side in process (`tower::ServiceExt::oneshot`, no socket),
//! over an in-memory store that answers empty or is down: the status and error of each
//! way a request can fail, as one table. The answers' contents are checked against the
//! real stores elsewhere (`tests/breakdown.rs`, the store's conformance suite, the
//! binary's end-to-end tests).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ais_evaluate::incident::DEFAULT_GAP;
use ais_model::auth::Keyring;
use ais_model::report::IngestReport;
use ais_rollup::breakdown::Grouper;
use ais_serve::breakdown::QueryLimits;
use ais_serve::objectives::ObjectivesState;
use ais_serve::{
    dlq_router, objectives_router, ops_router, query_router, report_router, DlqState, QueryState,
    Readiness, ReportState,
};
use ais_store::evaluation::{AnomalyQuery, AnomalyRecord, EvaluationCommit, EvaluationStore};
use ais_store::{
    BreakdownQuery, EventQuery, PartitionState, Positions, QueryStore, RollupQuery, RollupRow,
    StoreError, StoredEvent,
};
use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A store with nothing in it, or down.
#[derive(Default)]
struct Memory {
    down: AtomicBool,
}

impl Memory {
    fn answer<T: Default>(&self) -> Result<T, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("the test took it down".to_string()))
        } else {
            Ok(T::default())
        }
    }
}

#[async_trait]
impl QueryStore for Memory {
    async fn rollups(&self, _query: RollupQuery) -> Result<Vec<RollupRow>, StoreError> {
        self.answer()
    }
    async fn tenants(&self, _from_ms: i64, _to_ms: i64) -> Result<Vec<String>, StoreError> {
        self.answer()
    }
    async fn events(&self, _query: EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self.answer()
    }
    async fn anomalies(&self, _query: AnomalyQuery) -> Result<Vec<AnomalyRecord>, StoreError> {
        self.answer()
    }
    async fn breakdown(&self, query: BreakdownQuery) -> Result<Grouper, StoreError> {
        self.answer::<()>()?;
        Ok(query.grouper())
    }
    async fn ledger(
        &self,
        _query: ais_store::ledger::LedgerQuery,
    ) -> Result<Vec<ais_store::ledger::LedgerRow>, StoreError> {
        self.answer()
    }
    async fn usage(
        &self,
        _query: ais_store::usage::UsageQuery,
        _ranking: ais_store::usage::UsageRanking,
    ) -> Result<ais_store::usage::UsageTop, StoreError> {
        self.answer()
    }
    async fn usage_export(
        &self,
        _query: ais_store::usage::UsageQuery,
    ) -> Result<ais_store::usage::UsageRows, StoreError> {
        self.answer::<()>()?;
        Ok(tokio::sync::mpsc::channel(1).1)
    }
}

#[async_trait]
impl Positions for Memory {
    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError> {
        self.answer()
    }
}

#[async_trait]
impl EvaluationStore for Memory {
    async fn rollups_all_tenants(
        &self,
        _from_ms: i64,
        _to_ms: i64,
    ) -> Result<Vec<(String, RollupRow)>, StoreError> {
        self.answer()
    }
    async fn dimension_windows(
        &self,
        _dimensions: &[String],
        _from_ms: i64,
        _to_ms: i64,
    ) -> Result<Vec<ais_store::evaluation::DimensionWindow>, StoreError> {
        self.answer()
    }
    async fn evaluation_state(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        self.answer()
    }
    async fn commit_evaluation(&self, _commit: EvaluationCommit) -> Result<(), StoreError> {
        self.answer()
    }
}

const KEYS: &str = "acme:acme-key,acme:acme-write:write,acme:acme-read:read,root:root-key:admin";

fn app(store: Arc<Memory>, ready: bool) -> Router {
    let keyring = Arc::new(Keyring::parse_plain(KEYS).expect("keys"));
    let query = QueryState {
        store: store.clone(),
        keyring: keyring.clone(),
        limits: QueryLimits::default(),
        incident_gap: DEFAULT_GAP,
        payload_readers: Default::default(),
    };
    Router::new()
        .merge(query_router(query.clone()))
        .merge(objectives_router(ObjectivesState {
            query,
            evaluation: store,
            slos: Arc::new(Vec::new()),
            budgets: Arc::new(Vec::new()),
        }))
        .merge(report_router(ReportState {
            report: Arc::new(IngestReport::new(0)),
            keyring: keyring.clone(),
        }))
        .merge(dlq_router(DlqState {
            letters: None,
            log: None,
            keyring: keyring.clone(),
            unavailable: "start the server with a dead-letter source".to_string(),
        }))
        .merge(ops_router(
            Arc::new(move || {
                vec![Readiness {
                    component: "store",
                    ready,
                    detail: String::new(),
                    facts: [("raw_bytes", 4096)].into_iter().collect(),
                    counts: [("raw_events", 12), ("lag_records", 3)]
                        .into_iter()
                        .collect(),
                }]
            }),
            None,
            keyring,
        ))
}

/// One request and what must come back.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    key: Option<&'static str>,
    store_down: bool,
    ready: bool,
    status: StatusCode,
    /// Text the `error` of the body must contain ("" for any).
    error: &'static str,
}

fn case(
    name: &'static str,
    path: impl Into<String>,
    key: Option<&'static str>,
    status: StatusCode,
) -> Case {
    Case {
        name,
        method: Method::GET,
        path: path.into(),
        key,
        store_down: false,
        ready: true,
        status,
        error: "",
    }
}

/// The tenant-scoped read routes, each with a query that is valid.
const READ_ROUTES: &[&str] = &[
    "/v1/query/summary",
    "/v1/query/summary?filter=region:eu",
    "/v1/query/timeseries?metric=requests",
    "/v1/query/timeseries?metric=requests&filter=region:eu",
    "/v1/query/timeseries?metric=latency_p99&by=endpoint&top=5",
    "/v1/query/breakdown?by=endpoint",
    "/v1/anomalies",
    "/v1/incidents",
    "/v1/events",
    "/v1/events?filter=attr.feature:search",
    "/v1/slos",
    "/v1/budgets",
];

fn with_param(path: &str, param: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{param}")
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for route in READ_ROUTES {
        cases.push(case(
            "a read key reads",
            *route,
            Some("acme-read"),
            StatusCode::OK,
        ));
        cases.push(Case {
            error: "missing",
            ..case("no key", *route, None, StatusCode::UNAUTHORIZED)
        });
        cases.push(Case {
            error: "unknown",
            ..case(
                "an unknown key",
                *route,
                Some("nobody"),
                StatusCode::UNAUTHORIZED,
            )
        });
        cases.push(case(
            "a write key cannot read",
            *route,
            Some("acme-write"),
            StatusCode::FORBIDDEN,
        ));
        cases.push(Case {
            error: "admin",
            ..case(
                "another tenant needs an admin key",
                with_param(route, "tenant=root"),
                Some("acme-key"),
                StatusCode::FORBIDDEN,
            )
        });
        cases.push(case(
            "an admin reads another tenant",
            with_param(route, "tenant=acme"),
            Some("root-key"),
            StatusCode::OK,
        ));
        cases.push(Case {
            store_down: true,
            error: "unavailable",
            ..case(
                "the store is down",
                *route,
                Some("acme-key"),
                StatusCode::SERVICE_UNAVAILABLE,
            )
        });
    }
    // The ingest report: authenticated and tenant-scoped like the read routes, but
    // from the ingest edge's counters in memory, so a store that is down does not
    // matter to it.
    let report = "/v1/ingest/report";
    cases.extend([
        case(
            "a read key reads the report",
            report,
            Some("acme-read"),
            StatusCode::OK,
        ),
        case(
            "a key of all kinds reads the report",
            report,
            Some("acme-key"),
            StatusCode::OK,
        ),
        Case {
            error: "missing",
            ..case(
                "no key for the report",
                report,
                None,
                StatusCode::UNAUTHORIZED,
            )
        },
        Case {
            error: "unknown",
            ..case(
                "an unknown key for the report",
                report,
                Some("nobody"),
                StatusCode::UNAUTHORIZED,
            )
        },
        case(
            "a write key cannot read the report",
            report,
            Some("acme-write"),
            StatusCode::FORBIDDEN,
        ),
        Case {
            error: "admin",
            ..case(
                "another tenant's report needs an admin key",
                with_param(report, "tenant=root"),
                Some("acme-key"),
                StatusCode::FORBIDDEN,
            )
        },
        case(
            "an admin reads another tenant's report",
            with_param(report, "tenant=acme"),
            Some("root-key"),
            StatusCode::OK,
        ),
        Case {
            store_down: true,
            ..case(
                "the report does not need the store",
                report,
                Some("acme-key"),
                StatusCode::OK,
            )
        },
        Case {
            method: Method::POST,
            ..case(
                "the report refuses POST",
                report,
                Some("acme-key"),
                StatusCode::METHOD_NOT_ALLOWED,
            )
        },
    ]);
    let bad = |name, path: &str, error| Case {
        error,
        ..case(name, path, Some("acme-key"), StatusCode::BAD_REQUEST)
    };
    cases.extend([
        bad(
            "from after to",
            "/v1/query/summary?from=120000&to=60000",
            "from",
        ),
        bad(
            "a time that is neither form",
            "/v1/events?from=yesterday",
            "from must be",
        ),
        bad(
            "incidents from a time that is neither form",
            "/v1/incidents?from=yesterday",
            "from must be",
        ),
        bad(
            "incidents over an empty range",
            "/v1/incidents?from=120000&to=60000",
            "from",
        ),
        bad(
            "an unknown metric",
            "/v1/query/timeseries?metric=vibes",
            "metric",
        ),
        bad(
            "a step that is not whole minutes",
            "/v1/query/timeseries?metric=requests&step=90",
            "60",
        ),
        bad("a limit past the bound", "/v1/events?limit=100000", "limit"),
        bad("a malformed filter", "/v1/events?filter=region", "filter"),
        bad(
            "a timeseries by an unknown dimension",
            "/v1/query/timeseries?metric=requests&by=colour",
            "by: unknown dimension",
        ),
        bad(
            "a timeseries by two dimensions",
            "/v1/query/timeseries?metric=requests&by=model,region",
            "by names 2 dimensions",
        ),
        bad(
            "a timeseries with two by parameters",
            "/v1/query/timeseries?metric=requests&by=model&by=region",
            "by is given 2 times",
        ),
        bad(
            "a timeseries top of 0",
            "/v1/query/timeseries?metric=requests&by=model&top=0",
            "top must be",
        ),
        bad(
            "a timeseries top past the bound",
            "/v1/query/timeseries?metric=requests&by=model&top=1001",
            "top must be",
        ),
        bad(
            "a timeseries answer of too many points",
            "/v1/query/timeseries?metric=requests&by=model&top=1000&from=0&to=172800000",
            "top: 1001 series of 2880 points",
        ),
        bad(
            "a timeseries with a malformed filter",
            "/v1/query/timeseries?metric=requests&filter=region",
            "filter:",
        ),
        Case {
            error: "admin keys",
            ..case(
                "a timeseries by tenant needs an admin key",
                "/v1/query/timeseries?metric=requests&by=tenant",
                Some("acme-key"),
                StatusCode::FORBIDDEN,
            )
        },
        Case {
            error: "admin keys",
            ..case(
                "a timeseries filtered by tenant needs an admin key",
                "/v1/query/timeseries?metric=requests&filter=tenant:acme",
                Some("acme-key"),
                StatusCode::FORBIDDEN,
            )
        },
        case(
            "an admin plots a timeseries by tenant",
            "/v1/query/timeseries?metric=requests&by=tenant",
            Some("root-key"),
            StatusCode::OK,
        ),
        bad(
            "a breakdown without by",
            "/v1/query/breakdown",
            "by is required",
        ),
        bad(
            "an unknown order",
            "/v1/query/breakdown?by=model&order=vibes",
            "order",
        ),
        Case {
            error: "admin keys",
            ..case(
                "tenant as a dimension needs an admin key",
                "/v1/query/breakdown?by=tenant",
                Some("acme-key"),
                StatusCode::FORBIDDEN,
            )
        },
        case(
            "an admin breaks down by tenant",
            "/v1/query/breakdown?by=tenant",
            Some("root-key"),
            StatusCode::OK,
        ),
        Case {
            error: "dead-letter source",
            ..case(
                "no dead-letter source",
                "/v1/dlq",
                Some("acme-key"),
                StatusCode::NOT_IMPLEMENTED,
            )
        },
        case("alive", "/healthz", None, StatusCode::OK),
        case("ready", "/readyz", None, StatusCode::OK),
        Case {
            ready: false,
            ..case(
                "not ready",
                "/readyz",
                None,
                StatusCode::SERVICE_UNAVAILABLE,
            )
        },
        Case {
            method: Method::POST,
            ..case(
                "a read route refuses POST",
                "/v1/query/summary",
                Some("acme-key"),
                StatusCode::METHOD_NOT_ALLOWED,
            )
        },
        case(
            "an unknown path",
            "/v1/nothing",
            Some("acme-key"),
            StatusCode::NOT_FOUND,
        ),
    ]);
    cases
}

#[tokio::test]
async fn every_route_answers_every_way_it_can_fail_with_its_status_and_error() {
    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let store = Arc::new(Memory::default());
        store.down.store(case.store_down, Ordering::SeqCst);
        let mut request = Request::builder()
            .method(case.method.clone())
            .uri(&case.path);
        if let Some(key) = case.key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let response = app(store, case.ready)
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        let status = response.status();
        let retry_after = response.headers().contains_key("retry-after");
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let error = body["error"].as_str().unwrap_or_default();
        let mut wrong = Vec::new();
        if status != case.status {
            wrong.push(format!("status {status}, wanted {}", case.status));
        }
        if !error.contains(case.error) {
            wrong.push(format!("error {error:?} lacks {:?}", case.error));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE && case.path != "/readyz" && !retry_after {
            wrong.push("a 503 without Retry-After".to_string());
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{} ({} {}): {}",
                case.name,
                case.method,
                case.path,
                wrong.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// `/readyz` of `app`, with `key` if any: its status and the store component's facts.
async fn readyz_facts(app: Router, key: Option<&str>) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().uri("/readyz");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = app
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON readiness");
    (status, body["components"][0]["facts"].clone())
}

#[tokio::test]
async fn readyz_shows_counts_to_admin_keys_and_open_servers_only() {
    let counts = ["raw_events", "lag_records"];
    for (key, shows_counts) in [
        (None, false),
        (Some("nobody"), false),
        (Some("acme-key"), false),
        (Some("acme-read"), false),
        (Some("acme-write"), false),
        (Some("root-key"), true),
    ] {
        let (status, facts) = readyz_facts(app(Arc::new(Memory::default()), true), key).await;
        assert_eq!(status, StatusCode::OK, "{key:?}: probes need no key");
        assert_eq!(facts["raw_bytes"], 4096, "{key:?}: sizes are for anyone");
        for name in counts {
            assert_eq!(
                facts.get(name).is_some(),
                shows_counts,
                "{key:?} and {name}: {facts}"
            );
        }
    }
    // Open (no keys, loopback only): everyone is the operator.
    let open = Router::new().merge(ops_router(
        Arc::new(|| {
            vec![Readiness {
                component: "stream",
                ready: true,
                detail: String::new(),
                facts: Default::default(),
                counts: [("lag_records", 0)].into_iter().collect(),
            }]
        }),
        None,
        Arc::new(Keyring::default()),
    ));
    let (_, facts) = readyz_facts(open, None).await;
    assert_eq!(facts["lag_records"], 0, "{facts}");
}

/// Query parameters of the read routes, each route with the ones it reads.
const PARAMETERS: &[(&str, &[&str])] = &[
    (
        "/v1/query/summary",
        &["from", "to", "model", "tenant", "filter"],
    ),
    (
        "/v1/query/timeseries?metric=requests",
        &[
            "from", "to", "step", "model", "tenant", "metric", "filter", "by", "top",
        ],
    ),
    (
        "/v1/query/timeseries?metric=cost_usd&by=endpoint",
        &["from", "to", "step", "model", "tenant", "filter", "top"],
    ),
    (
        "/v1/query/breakdown?by=endpoint",
        &[
            "from", "to", "by", "filter", "top", "order", "asc", "tenant",
        ],
    ),
    ("/v1/anomalies", &["from", "to", "model", "tenant"]),
    ("/v1/incidents", &["from", "to", "model", "tenant"]),
    (
        "/v1/events",
        &[
            "from",
            "to",
            "trace_id",
            "user_id",
            "model",
            "status",
            "min_latency_ms",
            "limit",
            "filter",
            "tenant",
        ],
    ),
    ("/v1/slos", &["tenant"]),
    ("/v1/budgets", &["tenant"]),
    ("/v1/ingest/report", &["tenant"]),
];

/// Every byte but letters and digits percent-encoded: any value makes a valid URI.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

fn hostile_value() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        any::<i64>().prop_map(|number| number.to_string()),
        any::<u64>().prop_map(|number| number.to_string()),
        Just("-9223372036854775808".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("NaN".to_string()),
        Just("1e309".to_string()),
        ".{0,40}",
        "[a-z_.:!|\\\\]{0,24}",
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Whatever a parameter holds, a read route answers 200 or a 400 that names what
    /// is wrong: never a panic, a 500 or an answer over an unchecked range.
    #[test]
    fn any_value_of_any_parameter_is_answered_200_or_400(
        route in 0..PARAMETERS.len(),
        parameter in 0usize..16,
        value in hostile_value(),
    ) {
        let (path, names) = PARAMETERS[route];
        let name = names[parameter % names.len()];
        let uri = with_param(path, &format!("{name}={}", encode(&value)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (status, body) = runtime.block_on(async {
            let response = app(Arc::new(Memory::default()), true)
                .oneshot(
                    Request::get(&uri)
                        .header("authorization", "Bearer root-key")
                        .body(Body::empty())
                        .expect("request"),
                )
                .await
                .expect("answer");
            let status = response.status();
            let bytes = response.into_body().collect().await.expect("body").to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        });
        proptest::prop_assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "{} {}: {}", uri, status, body
        );
        if status == StatusCode::BAD_REQUEST {
            proptest::prop_assert!(body.contains("\"error\""), "{}: {}", uri, body);
        }
    }
}
