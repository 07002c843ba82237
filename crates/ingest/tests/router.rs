//! The ingest router in process: every route and every answer it gives, sent with
//! `tower::ServiceExt::oneshot` (no socket) to the router `ais serve` and `ais ingest`
//! build, over an in-memory `ais_log::Log` (`support`).
//!
//! Each case of a table names its request, the edge it meets (the log failing, the
//! tenant over its rate limit, the edge out of request slots or body bytes), the status
//! and what the answer must say, and the records that must reach the log: none for a
//! refusal. One runner sends them all and reports every failing case by name. The rate
//! limiter's time is a `ManualClock`: nothing here sleeps.
//!
//! A refusal must also reach a client still sending its body: that one case runs on a
//! real socket (hyper between the client and the router), the bounds of it in process.

mod support;

use std::io::Write;
use std::time::Duration;

use ais_model::otlp::common::{any_value::Value as AttributeValue, AnyValue, KeyValue};
use ais_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use ais_model::otlp::ExportTraceServiceRequest;
use ais_model::time::unix_now_ms;
use axum::http::{Method, StatusCode};
use prost::Message;
use serde_json::{json, Value};
use support::Check::{
    Accepted, Error, Header, PartialSuccess, RejectedIndexes, Rejection, RpcCode,
};
use support::*;

// ---------------------------------------------------------------------------------
// Bodies.

fn event(model: &str) -> Value {
    json!({"timestamp": unix_now_ms(), "model": model, "latency_ms": 1})
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).expect("zstd")
}

/// Spaces, decompressed past the body limit.
fn bomb() -> Vec<u8> {
    vec![b' '; MAX_BODY_BYTES + 1024]
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(AttributeValue::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// A chat span of `model` that ended now; without a model, a span of no GenAI call.
fn span(n: u8, model: Option<&str>) -> Span {
    let end = unix_now_ms() as u64 * 1_000_000;
    let attributes = match model {
        Some(model) => vec![
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.request.model", model),
        ],
        None => vec![text("http.request.method", "GET")],
    };
    Span {
        trace_id: [7; 16].to_vec(),
        span_id: [n; 8].to_vec(),
        name: "chat".to_string(),
        start_time_unix_nano: end - 250_000_000,
        end_time_unix_nano: end,
        attributes,
        ..Default::default()
    }
}

fn export(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The same GenAI span in OTLP/JSON: hex ids, string nanoseconds.
fn export_json(model: &str) -> Vec<u8> {
    let end = unix_now_ms() as u64 * 1_000_000;
    json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
        "name": "chat",
        "startTimeUnixNano": (end - 250_000_000).to_string(),
        "endTimeUnixNano": end.to_string(),
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": model}}
        ]
    }]}]}]})
    .to_string()
    .into_bytes()
}

// ---------------------------------------------------------------------------------
// The cases.

/// The error and headers of a 429 to a tenant 2.1 s from admission (`Edge::InDebt`):
/// `Retry-After` and `RateLimit-Reset` in whole seconds, rounded up.
fn rate_limited() -> Vec<Check> {
    vec![
        Error("rate limit of 10 events/s"),
        Header("retry-after", "3"),
        Header("ratelimit-limit", "10"),
        Header("ratelimit-remaining", "0"),
        Header("ratelimit-reset", "3"),
    ]
}

/// How a route words a refusal.
#[derive(Debug, Clone, Copy)]
enum Refusals {
    /// `{"error": "…"}`.
    Json,
    /// A protobuf `google.rpc.Status` with the gRPC code OTLP assigns to the status.
    RpcStatus,
}

impl Refusals {
    /// What every refusal of `status` carries besides its message.
    fn checks(self, status: StatusCode) -> Vec<Check> {
        let code = match status {
            StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
            StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
            StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
            _ => tonic::Code::InvalidArgument,
        };
        match self {
            Refusals::Json => vec![Header("content-type", JSON)],
            Refusals::RpcStatus => vec![Header("content-type", PROTOBUF), RpcCode(code)],
        }
    }
}

/// The refusals both routes give the same way, for `call` (a valid request of the
/// route): the key, the encoding, the body limit, the rate limit, the edge's pressure
/// and the log; and a GET, which no route takes.
fn refusals_of_every_route(call: &Call, refusals: Refusals) -> Vec<Case> {
    let refused = |name, call: Call, status, mut checks: Vec<Check>| {
        checks.extend(refusals.checks(status));
        case(name, call, status, checks)
    };
    let unavailable = |name, error, retry_after, edge| {
        refused(
            name,
            call.clone(),
            StatusCode::SERVICE_UNAVAILABLE,
            vec![Error(error), Header("retry-after", retry_after)],
        )
        .at(edge)
    };
    vec![
        // 401, 403.
        refused(
            "no key",
            call.clone().key(None),
            StatusCode::UNAUTHORIZED,
            vec![Error("missing API key")],
        ),
        refused(
            "unknown key",
            call.clone().key(Some("wrong")),
            StatusCode::UNAUTHORIZED,
            vec![Error("unknown API key")],
        ),
        refused(
            "a read-only key",
            call.clone().key(Some(READ_KEY)),
            StatusCode::FORBIDDEN,
            vec![Error("may not ingest")],
        ),
        // 415, 400, 413: the encoding.
        refused(
            "brotli",
            call.clone().encoding("br"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            vec![Error("\"br\"")],
        ),
        refused(
            "gzip that is not",
            call.clone().encoding("gzip"),
            StatusCode::BAD_REQUEST,
            vec![Error("could not be decompressed as gzip")],
        ),
        refused(
            "a small gzip body that inflates past the limit",
            call.clone().encoding("gzip").body(gzip(&bomb())),
            StatusCode::PAYLOAD_TOO_LARGE,
            vec![Error("larger than 16777216 bytes decompressed")],
        ),
        // 429, before the body is read.
        refused(
            "a tenant in debt",
            call.clone().body("not even a body of this route"),
            StatusCode::TOO_MANY_REQUESTS,
            rate_limited(),
        )
        .at(Edge::InDebt),
        // 503, with Retry-After.
        unavailable(
            "the log is full",
            "saturated (wal holds",
            "5",
            Edge::Log(LogMode::Full),
        ),
        unavailable(
            "the log and its overflow are full",
            "overflow buffer is full",
            "7",
            Edge::Log(LogMode::OverflowFull),
        ),
        unavailable(
            "the log is unavailable",
            "broker unreachable",
            "1",
            Edge::Log(LogMode::Unavailable),
        ),
        unavailable(
            "the log is shutting down",
            "shutting down",
            "1",
            Edge::Log(LogMode::Closed),
        ),
        unavailable(
            "every request slot is taken",
            "1 requests are in flight",
            "1",
            Edge::NoRequestSlot,
        ),
        unavailable(
            "the body bytes exceed the edge's budget",
            "8 bytes of request bodies",
            "1",
            Edge::ByteBudget(8),
        ),
        // Routing.
        case(
            "GET",
            call.clone().method(Method::GET),
            StatusCode::METHOD_NOT_ALLOWED,
            vec![],
        ),
    ]
}

fn event_cases() -> Vec<Case> {
    let now = unix_now_ms();
    let one = event("m");
    let mut cases = vec![
        // 202.
        case(
            "one object",
            Call::events(&one),
            StatusCode::ACCEPTED,
            vec![
                Accepted(1),
                RejectedIndexes(&[]),
                Header("content-type", JSON),
            ],
        )
        .logs(&["m"]),
        case(
            "an array, with a write-only key",
            Call::events(&json!([event("a"), event("b")])).key(Some(WRITE_KEY)),
            StatusCode::ACCEPTED,
            vec![Accepted(2)],
        )
        .logs(&["a", "b"]),
        case(
            "gzip",
            Call::events_body(gzip(one.to_string().as_bytes())).encoding("gzip"),
            StatusCode::ACCEPTED,
            vec![Accepted(1)],
        )
        .logs(&["m"]),
        case(
            "zstd",
            Call::events_body(zstd(one.to_string().as_bytes())).encoding("zstd"),
            StatusCode::ACCEPTED,
            vec![Accepted(1)],
        )
        .logs(&["m"]),
        case(
            "per-event rejections: the rest goes through",
            Call::events(&json!([
                one,
                {"timestamp": now, "model": "m", "latency_ms": "slow"},
                {"timestamp": now, "latency_ms": 1},
                {"timestamp": now + 3_600_000, "model": "m", "latency_ms": 1},
                {"timestamp": now, "model": "m", "latency_ms": 1, "input_tokens": -3},
                "not an object"
            ])),
            StatusCode::ACCEPTED,
            vec![
                Accepted(1),
                RejectedIndexes(&[1, 2, 3, 4, 5]),
                Rejection(1, "latency_ms"),
                Rejection(2, "model"),
                Rejection(3, "timestamp"),
                Rejection(4, "input_tokens"),
            ],
        )
        .logs(&["m"]),
        case(
            "NDJSON: a bad line rejects itself, index = line",
            Call::events_body(format!(
                "{}\n{{\"model\": \"m\"\n{}\n",
                event("a"),
                event("b")
            ))
            .content_type(Some("application/x-ndjson")),
            StatusCode::ACCEPTED,
            vec![Accepted(2), RejectedIndexes(&[1])],
        )
        .logs(&["a", "b"]),
        case(
            "nothing valid never waits on the log, even a failing one",
            Call::events(&json!([{"model": "m"}])),
            StatusCode::ACCEPTED,
            vec![Accepted(0), RejectedIndexes(&[0])],
        )
        .at(Edge::Log(LogMode::Unavailable)),
        // 415.
        case(
            "text/plain",
            Call::events(&one).content_type(Some("text/plain")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            vec![Error("\"text/plain\"")],
        ),
        case(
            "no content type",
            Call::events(&one).content_type(None),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            vec![Error("application/x-ndjson")],
        ),
        // 400, saying where.
        case(
            "an array that does not parse",
            Call::events_body("[{\"model\": \"m\",\n  \"latency_ms\": }]"),
            StatusCode::BAD_REQUEST,
            vec![Error("line 2")],
        ),
        case(
            "a number",
            Call::events(&json!(42)),
            StatusCode::BAD_REQUEST,
            vec![Error("found a number")],
        ),
        case(
            "zstd that is not",
            Call::events(&one).encoding("zstd"),
            StatusCode::BAD_REQUEST,
            vec![Error("could not be decompressed as zstd")],
        ),
        // 413.
        case(
            "too many events",
            Call::events(&Value::Array(vec![one.clone(); MAX_EVENTS + 1])),
            StatusCode::PAYLOAD_TOO_LARGE,
            vec![Error("more than 10000 events")],
        ),
        case(
            "too many bytes",
            Call::events_body(vec![b' '; MAX_BODY_BYTES + 1]),
            StatusCode::PAYLOAD_TOO_LARGE,
            vec![Error("larger than 16777216 bytes")],
        ),
        case(
            "a small zstd body that inflates past the limit",
            Call::events_body(zstd(&bomb())).encoding("zstd"),
            StatusCode::PAYLOAD_TOO_LARGE,
            vec![Error("larger than 16777216 bytes decompressed")],
        ),
    ];
    cases.extend(refusals_of_every_route(&Call::events(&one), Refusals::Json));
    cases
}

fn trace_cases() -> Vec<Case> {
    let one = export(vec![span(1, Some("gpt-4o"))]);
    let mut cases = vec![
        // 200, in the request's encoding.
        case(
            "protobuf",
            Call::traces(&export(vec![
                span(1, Some("gpt-4o")),
                span(2, Some("o4-mini")),
            ])),
            StatusCode::OK,
            vec![Header("content-type", PROTOBUF), PartialSuccess(None)],
        )
        .logs(&["gpt-4o", "o4-mini"]),
        case(
            "protobuf, gzip",
            Call::traces(&one)
                .encoding("gzip")
                .body(gzip(&one.encode_to_vec())),
            StatusCode::OK,
            vec![PartialSuccess(None)],
        )
        .logs(&["gpt-4o"]),
        case(
            "OTLP/JSON",
            Call::traces(&one)
                .content_type(Some(JSON))
                .body(export_json("claude")),
            StatusCode::OK,
            vec![Header("content-type", JSON), PartialSuccess(None)],
        )
        .logs(&["claude"]),
        case(
            "a span of no GenAI call is skipped and reported",
            Call::traces(&export(vec![span(1, Some("gpt-4o")), span(2, None)])),
            StatusCode::OK,
            vec![PartialSuccess(Some((1, "1 spans skipped")))],
        )
        .logs(&["gpt-4o"]),
        // Refusals of OTLP/JSON are OTLP/JSON, with the `error` key of the other routes.
        case(
            "no key, OTLP/JSON",
            Call::traces(&one)
                .key(None)
                .content_type(Some(JSON))
                .body(export_json("claude")),
            StatusCode::UNAUTHORIZED,
            vec![
                Header("content-type", JSON),
                RpcCode(tonic::Code::Unauthenticated),
                Error("missing API key"),
            ],
        ),
        // Without a media type of OTLP, the refusal is protobuf, the OTLP default.
        case(
            "text/plain",
            Call::traces(&one).content_type(Some("text/plain")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [
                Refusals::RpcStatus.checks(StatusCode::UNSUPPORTED_MEDIA_TYPE),
                vec![Error("\"text/plain\"")],
            ]
            .concat(),
        ),
        case(
            "protobuf that does not decode",
            Call::traces(&one).body(vec![0xff; 16]),
            StatusCode::BAD_REQUEST,
            vec![
                RpcCode(tonic::Code::InvalidArgument),
                Error("not a valid OTLP protobuf"),
            ],
        ),
        case(
            "OTLP/JSON that does not parse, saying where",
            Call::traces(&one)
                .content_type(Some(JSON))
                .body("{\"resourceSpans\":\n [}"),
            StatusCode::BAD_REQUEST,
            vec![Header("content-type", JSON), Error("at line 2, column")],
        ),
        case(
            "too many spans",
            Call::traces(&export(vec![Span::default(); MAX_EVENTS + 1])),
            StatusCode::PAYLOAD_TOO_LARGE,
            vec![
                RpcCode(tonic::Code::InvalidArgument),
                Error("more than 10000 spans"),
            ],
        ),
    ];
    cases.extend(refusals_of_every_route(
        &Call::traces(&one),
        Refusals::RpcStatus,
    ));
    cases
}

#[tokio::test]
async fn events_route_answers_every_case_as_documented() {
    run(event_cases()).await;
}

#[tokio::test]
async fn traces_route_answers_every_case_as_documented() {
    run(trace_cases()).await;
}

#[tokio::test]
async fn an_unknown_path_is_not_found() {
    let ingest = Ingest::new(Edge::Open);
    let call = Call {
        path: "/v1/metrics",
        ..Call::events(&event("m"))
    };
    assert_eq!(ingest.send(&call).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_tenant_in_debt_is_admitted_once_the_clock_pays_it_back_and_others_never_wait() {
    let ingest = Ingest::new(Edge::InDebt);
    let call = Call::events(&event("m"));
    assert_eq!(
        ingest.send(&call).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another tenant has a bucket of its own (and no limit).
    let other = ingest.send(&call.clone().key(Some(OTHER_KEY))).await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    // 20 events of debt at 10 events/s: still refused at 2 s, admitted after 2.1 s.
    ingest.clock.advance(Duration::from_secs(2));
    let early = ingest.send(&call).await;
    assert_eq!(early.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(early.header("retry-after"), Some("1"));
    ingest.clock.advance(Duration::from_millis(150));
    assert_eq!(ingest.send(&call).await.status, StatusCode::ACCEPTED);
    assert_eq!(
        ingest.log.keys(),
        vec![
            ("globex".to_string(), "m".to_string()),
            (TENANT.to_string(), "m".to_string()),
        ]
    );
}

#[tokio::test]
async fn slots_and_body_bytes_come_back_once_a_request_is_answered() {
    let ingest = Ingest::new(Edge::Open);
    let batch = json!([event("a"), event("b")]).to_string();
    let accepted = ingest
        .send(&Call::events_body(gzip(batch.as_bytes())).encoding("gzip"))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let refused = ingest.send(&Call::events_body("[}")).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(ingest.pressure.requests_in_flight(), 0);
    assert_eq!(ingest.pressure.bytes_held(), 0);
}

#[tokio::test]
async fn the_report_counts_each_source_once_its_events_are_durable() {
    let ingest = Ingest::new(Edge::Open);
    let body = json!([
        {"timestamp": unix_now_ms(), "model": "gpt-4o", "latency_ms": 1, "input_tokens": 10},
        {"timestamp": unix_now_ms(), "model": "my-finetune", "latency_ms": 1},
        {"timestamp": unix_now_ms(), "model": "gpt-4o", "latency_ms": -1},
    ]);
    let reply = ingest.send(&Call::events(&body)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let mut deprecated = span(1, Some("my-finetune"));
    deprecated
        .attributes
        .push(text("gen_ai.usage.prompt_tokens", "12"));
    let reply = ingest
        .send(&Call::traces(&export(vec![deprecated, span(2, None)])))
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    let report = ingest.report.of_tenant(TENANT);
    let json = &report.sources["http_json"];
    assert_eq!((json.accepted, json.rejected, json.skipped), (2, 1, 0));
    assert_eq!(json.missing_usage, 1, "my-finetune sent no tokens");
    assert_eq!(json.unpriced.events, 1);
    assert_eq!(json.unpriced.models[0].model, "my-finetune");
    let otlp = &report.sources["otlp_http"];
    assert_eq!((otlp.accepted, otlp.rejected, otlp.skipped), (1, 0, 1));
    assert_eq!(otlp.missing_usage, 0, "a string count is usage");
    assert_eq!(otlp.deprecated_attributes["gen_ai.usage.prompt_tokens"], 1);
    assert_eq!(report.sources["otlp_grpc"].accepted, 0);

    // A request the log refused counts nowhere: its retry will.
    let refused = Ingest::new(Edge::Log(LogMode::Unavailable));
    let reply = refused.send(&Call::events(&body)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let report = refused.report.of_tenant(TENANT);
    assert!(report
        .sources
        .values()
        .all(|source| source.accepted == 0 && source.rejected == 0));
}

// ---------------------------------------------------------------------------------
// Refusals of requests whose bodies are still arriving.

/// Reads one HTTP/1.1 answer with a `Content-Length` from `stream`: its head, lower
/// case, and its body.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .expect("an answer with a content-length");
            let body_start = end + 4;
            while received.len() < body_start + length {
                let read = stream.read(&mut buffer).await.expect("the answer's body");
                assert!(read > 0, "closed in the answer's body");
                received.extend_from_slice(&buffer[..read]);
            }
            return (head, received[body_start..body_start + length].to_vec());
        }
        let read = stream
            .read(&mut buffer)
            .await
            .unwrap_or_else(|error| panic!("no answer: {error}; got {received:?}"));
        assert!(read > 0, "closed before an answer");
        received.extend_from_slice(&buffer[..read]);
    }
}

fn request_head(length: usize) -> String {
    format!(
        "POST /v1/events HTTP/1.1\r\nhost: ingest\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_client_still_uploading_a_large_body_receives_the_refusal_on_a_connection_it_can_reuse() {
    use tokio::io::AsyncWriteExt;
    // Every request slot is held: each request is refused as soon as its head is read.
    let ingest = Ingest::new(Edge::NoRequestSlot);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("its address");
    let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener,
        ingest.router(),
    )));

    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connected");
    // A 600 KB body (batches of 1,000 events with short prompts), sent in 16 KiB
    // pieces with a pause between them, as a client on a slow link: the refusal is
    // decided long before the last piece leaves.
    let length = 600 * 1024;
    stream
        .write_all(request_head(length).as_bytes())
        .await
        .expect("the head is sent");
    let piece = vec![b' '; 16 * 1024];
    let mut sent = 0;
    while sent < length {
        let size = piece.len().min(length - sent);
        stream
            .write_all(&piece[..size])
            .await
            .unwrap_or_else(|error| panic!("the upload broke after {sent} bytes: {error}"));
        sent += size;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (head, body) = read_answer(&mut stream).await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("\r\nretry-after: "), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("requests are in flight"),
        "{body:?}"
    );

    // The connection is clean: the retry goes on it and is answered.
    let small = b"[]";
    stream
        .write_all(request_head(small.len()).as_bytes())
        .await
        .expect("a second request on the same connection");
    stream.write_all(small).await.expect("its body");
    let (again, _) = read_answer(&mut stream).await;
    assert!(again.starts_with("http/1.1 503"), "{again}");
    server.abort();
}

/// A body that never ends, counting the bytes read from it.
fn endless_body(read: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> axum::body::Body {
    let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
    axum::body::Body::from_stream(tokio_stream::iter(std::iter::repeat_with(move || {
        read.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
        Ok::<_, std::io::Error>(chunk.clone())
    })))
}

#[tokio::test]
async fn a_refused_body_is_read_no_further_than_the_drain_cap() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tower::ServiceExt;
    let ingest = Ingest::new(Edge::NoRequestSlot);
    let cap = ais_ingest::DRAIN_MAX_BYTES;

    // Declared longer than the cap: answered at once, not a byte read.
    let read = Arc::new(AtomicUsize::new(0));
    let request = axum::http::Request::post("/v1/events")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", JSON)
        .header("content-length", (cap + 1).to_string())
        .body(endless_body(read.clone()))
        .expect("a request");
    let answer = ingest.router().oneshot(request).await.expect("an answer");
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    assert_eq!(answer.headers()["connection"], "close");
    assert_eq!(read.load(Ordering::Relaxed), 0);

    // Of unknown length and endless: read up to the cap, then the connection closes.
    let read = Arc::new(AtomicUsize::new(0));
    let request = axum::http::Request::post("/v1/events")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", JSON)
        .body(endless_body(read.clone()))
        .expect("a request");
    let answer = ingest.router().oneshot(request).await.expect("an answer");
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers()["connection"], "close");
    let drained = read.load(Ordering::Relaxed);
    assert!(
        drained > cap / 2 && drained <= cap + 64 * 1024,
        "read {drained} bytes against a cap of {cap}"
    );
}
