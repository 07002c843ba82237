//! Every refusal of the ingest and query API, with its status and a message that names
//! what is wrong: a table of requests and what each answer must say, sent over HTTP to
//! the real `ais` binary. One runner sends every case and reports each that fails by
//! name. (The ingest router's own table, in process: `crates/ingest/tests/router.rs`.)

mod common;

use common::*;
use serde_json::{json, Value};
use Check::{ErrorContains, ErrorStartsWith, JsonAt, RejectedIndexes, Rejection, TextContains};

/// Ingests and reads tenant `acme`.
const KEY: &str = "good-key";
/// Ingests only (`acme:w:write`).
const WRITE_KEY: &str = "w";
const JSON: &str = "application/json";

/// What an answer must say besides its status.
#[derive(Debug)]
enum Check {
    /// `error` of the JSON body contains this.
    ErrorContains(&'static str),
    /// `error` of the JSON body starts with this.
    ErrorStartsWith(&'static str),
    /// The JSON body holds this value at this pointer (RFC 6901).
    JsonAt(&'static str, Value),
    /// `index` of every rejection of a 202 body, in order.
    RejectedIndexes(&'static [u64]),
    /// The rejection of the event at this index starts with this (the field it names).
    Rejection(u64, &'static str),
    /// The body, as text, contains this.
    TextContains(&'static str),
}

impl Check {
    /// `None` when the answer says what it must; else what is wrong.
    fn problem(&self, answer: &ApiAnswer, body: &Value) -> Option<String> {
        let error = || body["error"].as_str();
        let holds = match self {
            ErrorContains(part) => error().is_some_and(|error| error.contains(part)),
            ErrorStartsWith(start) => error().is_some_and(|error| error.starts_with(start)),
            JsonAt(pointer, value) => body.pointer(pointer) == Some(value),
            RejectedIndexes(indexes) => {
                rejections(body).is_some_and(|found| found.iter().map(|(at, _)| at).eq(*indexes))
            }
            Rejection(index, field) => rejections(body).is_some_and(|found| {
                found
                    .iter()
                    .any(|(at, message)| at == index && message.starts_with(field))
            }),
            TextContains(part) => answer.text().contains(part),
        };
        (!holds).then(|| format!("{self:?} does not hold: {}", answer.text()))
    }
}

/// (index, error) of every rejection of a 202 body; `None` without a `rejected` list.
fn rejections(body: &Value) -> Option<Vec<(u64, &str)>> {
    let list = body["rejected"].as_array()?;
    Some(
        list.iter()
            .map(|rejection| {
                (
                    rejection["index"].as_u64().unwrap_or(u64::MAX),
                    rejection["error"].as_str().unwrap_or(""),
                )
            })
            .collect(),
    )
}

struct Case {
    name: &'static str,
    request: ApiRequest<'static>,
    status: u16,
    checks: Vec<Check>,
    /// Sent only once the stream has processed everything in the log.
    after_catch_up: bool,
}

fn case(name: &'static str, request: ApiRequest<'static>, status: u16, checks: Vec<Check>) -> Case {
    Case {
        name,
        request,
        status,
        checks,
        after_catch_up: false,
    }
}

impl Case {
    fn after_catch_up(self) -> Self {
        Self {
            after_catch_up: true,
            ..self
        }
    }
}

/// Sends every case, in order, and panics once, naming each case that failed and how.
fn run(server: &Server, cases: Vec<Case>) {
    assert!(!cases.is_empty(), "a table without cases proves nothing");
    let client = client();
    let total = cases.len();
    let mut failures = Vec::new();
    for case in cases {
        if case.after_catch_up {
            server.wait_caught_up(&client);
        }
        let answer = send_request(&client, server, case.request);
        let body = answer.json();
        if answer.status != case.status {
            failures.push(format!(
                "{}: status {} instead of {}: {}",
                case.name,
                answer.status,
                case.status,
                answer.text()
            ));
        }
        for check in &case.checks {
            if let Some(problem) = check.problem(&answer, &body) {
                failures.push(format!("{}: {problem}", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures in {total} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `POST /v1/events` of `body` as `content_type`.
fn post_events(
    key: Option<&'static str>,
    content_type: &'static str,
    content_encoding: Option<&'static str>,
    body: impl Into<Vec<u8>>,
) -> ApiRequest<'static> {
    ApiRequest {
        key,
        content_type: Some(content_type),
        content_encoding,
        ..ApiRequest::post("/v1/events", body.into())
    }
}

/// `POST /v1/events` of `body` as JSON.
fn post_event_json(key: Option<&'static str>, body: &Value) -> ApiRequest<'static> {
    post_events(key, JSON, None, body.to_string())
}

fn get(key: Option<&'static str>, path_and_query: &'static str) -> ApiRequest<'static> {
    ApiRequest {
        key,
        ..ApiRequest::get(path_and_query)
    }
}

fn ingest_cases(now: i64) -> Vec<Case> {
    let event = json!({"timestamp": now, "model": "m", "latency_ms": 1});
    // A small zstd body that inflates past the limit.
    let bomb = zstd::encode_all(&vec![b' '; 20 * 1024 * 1024][..], 19).expect("zstd");
    assert!(bomb.len() < 64 * 1024, "the bomb is {} bytes", bomb.len());
    let mixed = json!([
        event,
        {"timestamp": now, "model": "m", "latency_ms": "slow"},
        {"timestamp": now, "latency_ms": 1},
        {"timestamp": now + 3_600_000, "model": "m", "latency_ms": 1},
        {"timestamp": now, "model": "m", "latency_ms": 1, "input_tokens": -3},
        {"timestamp": now, "model": "m", "latency_ms": 1, "status": "meh"},
        {"timestamp": now, "model": "m", "latency_ms": 1, "attributes": {"k": 1}},
        "not an object"
    ]);
    // One bad line rejects only itself, index = line number.
    let ndjson = format!(
        "{}\n{{\"timestamp\": {now}, \"model\": \"m\"\n{}\n",
        json!({"timestamp": now, "model": "m", "latency_ms": 1}),
        json!({"timestamp": now, "model": "m", "latency_ms": 2})
    );
    vec![
        // 401: no key, unknown key.
        case(
            "no key",
            post_event_json(None, &event),
            401,
            vec![ErrorContains("missing API key")],
        ),
        case(
            "unknown key",
            post_event_json(Some("wrong"), &event),
            401,
            vec![ErrorContains("unknown API key")],
        ),
        // 415: media type and encoding.
        case(
            "text/plain",
            post_events(Some(KEY), "text/plain", None, event.to_string()),
            415,
            vec![ErrorContains("text/plain")],
        ),
        case(
            "brotli",
            post_events(Some(KEY), JSON, Some("br"), event.to_string()),
            415,
            vec![ErrorContains("br")],
        ),
        // 400: a body that does not parse says where.
        case(
            "an array that does not parse",
            post_events(
                Some(KEY),
                JSON,
                None,
                "[{\"model\": \"m\",\n  \"latency_ms\": }]",
            ),
            400,
            vec![ErrorContains("line 2")],
        ),
        case(
            "a number",
            post_events(Some(KEY), JSON, None, "42"),
            400,
            vec![],
        ),
        case(
            "gzip that is not",
            post_events(Some(KEY), JSON, Some("gzip"), "not gzip"),
            400,
            vec![ErrorContains("gzip")],
        ),
        // 413: too many events, too many bytes.
        case(
            "10,001 events",
            post_event_json(Some(KEY), &Value::Array(vec![event.clone(); 10_001])),
            413,
            vec![ErrorContains("10000")],
        ),
        case(
            "16 MiB + 1 byte",
            post_events(Some(KEY), JSON, None, vec![b' '; 16 * 1024 * 1024 + 1]),
            413,
            vec![],
        ),
        case(
            "a small zstd body that inflates past the limit",
            post_events(Some(KEY), JSON, Some("zstd"), bomb),
            413,
            vec![],
        ),
        // Per-event rejections: the rest of the body goes through.
        case(
            "per-event rejections",
            post_event_json(Some(KEY), &mixed),
            202,
            vec![
                JsonAt("/accepted", json!(1)),
                RejectedIndexes(&[1, 2, 3, 4, 5, 6, 7]),
                Rejection(1, "latency_ms"),
                Rejection(2, "model"),
                Rejection(3, "timestamp"),
                Rejection(4, "input_tokens"),
                Rejection(5, "status"),
                Rejection(6, "attributes"),
            ],
        ),
        case(
            "NDJSON with one bad line",
            post_events(Some(KEY), "application/x-ndjson", None, ndjson),
            202,
            vec![
                JsonAt("/accepted", json!(2)),
                JsonAt("/rejected/0/index", json!(1)),
            ],
        ),
    ]
}

#[test]
fn ingest_refusals_carry_status_and_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[("AIS_API_KEYS", "acme:good-key")]);
    run(&server, ingest_cases(now_ms()));
}

fn query_cases(now: i64) -> Vec<Case> {
    vec![
        case("no key", get(None, "/v1/query/summary"), 401, vec![]),
        case(
            "a write-only key",
            get(Some(WRITE_KEY), "/v1/query/summary"),
            403,
            vec![],
        ),
        case(
            "from is no time",
            get(Some(KEY), "/v1/query/summary?from=tomorrow"),
            400,
            vec![ErrorStartsWith("from must be")],
        ),
        case(
            "an unknown metric",
            get(Some(KEY), "/v1/query/timeseries?metric=vibes"),
            400,
            vec![ErrorContains("latency_p99")],
        ),
        case(
            "a step of 45 s",
            get(Some(KEY), "/v1/query/timeseries?metric=requests&step=45"),
            400,
            vec![ErrorContains("multiple of 60")],
        ),
        // Health needs no key; metrics are Prometheus text with the pipeline's counters.
        case(
            "an event from a write-only key",
            post_event_json(
                Some(WRITE_KEY),
                &json!({"timestamp": now, "model": "m", "latency_ms": 1}),
            ),
            202,
            vec![],
        ),
        case("health without a key", get(None, "/healthz"), 200, vec![]).after_catch_up(),
        case(
            "metrics",
            get(None, "/metrics"),
            200,
            vec![
                TextContains("ais_ingest_requests_total"),
                TextContains("ais_ingest_events_total"),
                TextContains("ais_stream_events_total"),
            ],
        )
        .after_catch_up(),
    ]
}

#[test]
fn query_refusals_carry_status_and_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(
        dir.path(),
        &[("AIS_API_KEYS", "acme:good-key,acme:w:write")],
    );
    run(&server, query_cases(now_ms()));
}
