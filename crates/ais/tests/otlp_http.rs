//! OTLP over real HTTP and gRPC with hand-built bodies: protobuf, JSON, gzip, the
//! answers the OTLP specification prescribes, and malformed input (truncated protobuf,
//! wrong types, huge attribute values, invalid UTF-8), after which the server keeps
//! serving.

mod common;

use std::io::Write;

use ais_model::otlp::common::{any_value::Value as AttrValue, AnyValue, KeyValue};
use ais_model::otlp::resource::Resource;
use ais_model::otlp::trace::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use ais_model::otlp::{ExportTraceServiceRequest, ExportTraceServiceResponse, RpcStatus};
use common::*;
use prost::Message;
use serde_json::{json, Value};

const KEY: &str = "otlp-key";

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(AttrValue::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(AttrValue::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// A span of `model` with `input` and `output` tokens; `n` makes its id unique.
fn genai_span(n: u64, model: &str, input: i64, output: i64, error: bool) -> Span {
    let start = now_ms() as u64 * 1_000_000;
    Span {
        trace_id: [7u8; 16].to_vec(),
        span_id: (n + 1).to_be_bytes().to_vec(),
        name: format!("chat {model}"),
        start_time_unix_nano: start,
        end_time_unix_nano: start + 250_000_000,
        attributes: vec![
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.request.model", model),
            int("gen_ai.usage.input_tokens", input),
            int("gen_ai.usage.output_tokens", output),
        ],
        status: error.then(|| Status {
            code: StatusCode::Error as i32,
            message: "boom".to_string(),
        }),
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "checkout")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

struct Answer {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Vec<u8>,
}

fn post_traces(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: Option<&str>,
    content_type: &str,
    content_encoding: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let mut request = client
        .post(server.url("/v1/traces"))
        .header("content-type", content_type)
        .body(body);
    if let Some(encoding) = content_encoding {
        request = request.header("content-encoding", encoding);
    }
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().expect("answered");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    Answer {
        status: response.status().as_u16(),
        content_type: header("content-type").unwrap_or_default(),
        retry_after: header("retry-after"),
        body: response.bytes().expect("body").to_vec(),
    }
}

fn protobuf(client: &reqwest::blocking::Client, server: &Server, body: Vec<u8>) -> Answer {
    post_traces(
        client,
        server,
        Some(KEY),
        "application/x-protobuf",
        None,
        body,
    )
}

fn partial(answer: &Answer) -> Option<(i64, String)> {
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.content_type, "application/x-protobuf");
    let response = ExportTraceServiceResponse::decode(answer.body.as_slice()).expect("response");
    response
        .partial_success
        .map(|partial| (partial.rejected_spans, partial.error_message))
}

fn rpc_status(answer: &Answer) -> RpcStatus {
    RpcStatus::decode(answer.body.as_slice()).expect("a google.rpc.Status body")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

#[test]
fn otlp_http_accepts_protobuf_json_and_gzip_and_counts_retries_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[("AIS_API_KEYS", &format!("acme:{KEY}"))]);
    let client = client();

    // Protobuf: three GenAI spans, one non-GenAI span.
    let mut spans = vec![
        genai_span(0, "gpt-4o", 100, 10, false),
        genai_span(1, "gpt-4o", 200, 20, true),
        genai_span(2, "o4-mini", 300, 30, false),
    ];
    spans.push(Span {
        attributes: vec![text("http.request.method", "GET")],
        ..genai_span(3, "unused", 0, 0, false)
    });
    spans[3]
        .attributes
        .retain(|kv| !kv.key.starts_with("gen_ai."));
    let body = request(spans).encode_to_vec();
    let answer = protobuf(&client, &server, body.clone());
    let (rejected, message) = partial(&answer).expect("the HTTP span is reported");
    assert_eq!(rejected, 1);
    assert!(message.contains("1 spans skipped"), "{message}");

    // The exporter's retry of the same export, gzip this time: counted once.
    let answer = post_traces(
        &client,
        &server,
        Some(KEY),
        "application/x-protobuf",
        Some("gzip"),
        gzip(&body),
    );
    assert_eq!(partial(&answer).map(|p| p.0), Some(1));

    // OTLP/JSON: hex ids, string nanoseconds; the answer is JSON, `{}` when all went in.
    let start = now_ms() as u64 * 1_000_000;
    let json_body = json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "checkout"}}]},
      "scopeSpans": [{"spans": [{
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
        "name": "chat", "kind": 3,
        "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + 500_000_000).to_string(),
        "attributes": [
          {"key": "gen_ai.system", "value": {"stringValue": "anthropic"}},
          {"key": "gen_ai.request.model", "value": {"stringValue": "claude-sonnet-4"}},
          {"key": "gen_ai.usage.prompt_tokens", "value": {"intValue": "40"}},
          {"key": "gen_ai.usage.completion_tokens", "value": {"intValue": 4}}]}]}]}]});
    let answer = post_traces(
        &client,
        &server,
        Some(KEY),
        "application/json",
        None,
        json_body.to_string().into_bytes(),
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(answer.body, b"{}");

    server.wait_caught_up(&client);
    let (status, summary) = get_json(&client, &server, Some(KEY), "/v1/query/summary");
    assert_eq!(status, 200);
    let gpt = model_entry(&summary, "gpt-4o");
    assert_eq!(
        (gpt["requests"].clone(), gpt["errors"].clone()),
        (json!(2), json!(1)),
        "{summary}"
    );
    assert_eq!(gpt["input_tokens"], 300);
    assert_eq!(gpt["output_tokens"], 30);
    assert_eq!(model_entry(&summary, "o4-mini")["requests"], 1);
    let claude = model_entry(&summary, "claude-sonnet-4");
    assert_eq!(
        (
            claude["input_tokens"].clone(),
            claude["output_tokens"].clone()
        ),
        (json!(40), json!(4))
    );
    assert_eq!(
        summary["models"].as_array().map(Vec::len),
        Some(3),
        "{summary}"
    );
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .expect("metrics");
    assert!(
        metrics.contains("ais_otlp_spans_total{outcome=\"skipped\"} 2"),
        "{metrics}"
    );
}

#[test]
fn malformed_otlp_gets_a_clean_answer_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[("AIS_API_KEYS", &format!("acme:{KEY}"))]);
    let client = client();
    let good = request(vec![genai_span(0, "gpt-4o", 1, 1, false)]).encode_to_vec();

    // Truncated protobuf: 400 with a google.rpc.Status, INVALID_ARGUMENT.
    for cut in [1, good.len() / 2, good.len() - 1] {
        let answer = protobuf(&client, &server, good[..cut].to_vec());
        assert_eq!(answer.status, 400);
        assert_eq!(answer.content_type, "application/x-protobuf");
        let status = rpc_status(&answer);
        assert_eq!(status.code, 3);
        assert!(
            status
                .message
                .starts_with("body is not a valid OTLP protobuf"),
            "{}",
            status.message
        );
    }
    // Invalid UTF-8 inside a protobuf string.
    let mut bad_utf8 = request(vec![genai_span(0, "zzzz", 1, 1, false)]).encode_to_vec();
    let at = bad_utf8
        .windows(4)
        .position(|w| w == b"zzzz")
        .expect("model");
    bad_utf8[at] = 0xC0;
    assert_eq!(protobuf(&client, &server, bad_utf8).status, 400);
    // Random bytes.
    assert_eq!(protobuf(&client, &server, vec![0xFF; 64]).status, 400);

    // JSON: syntax, wrong types, invalid UTF-8: 400 with code, message and error.
    for body in [
        b"{\"resourceSpans\": [".to_vec(),
        br#"{"resourceSpans": "many"}"#.to_vec(),
        br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": true}]}]}]}"#
            .to_vec(),
        b"{\"resourceSpans\": [], \"x\": \"\xff\"}".to_vec(),
    ] {
        let answer = post_traces(&client, &server, Some(KEY), "application/json", None, body);
        assert_eq!(answer.status, 400);
        let status: Value = serde_json::from_slice(&answer.body).expect("JSON status");
        assert_eq!(status["code"], 3, "{status}");
        assert!(
            status["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("body is not a valid OTLP/JSON")),
            "{status}"
        );
    }

    // Wrong attribute types and huge values reject those spans alone: partial success.
    let mut huge = genai_span(1, "gpt-4o", 1, 1, false);
    huge.attributes[1] = text("gen_ai.request.model", &"m".repeat(1 << 20));
    let mut wrong = genai_span(2, "gpt-4o", 1, 1, false);
    wrong.attributes[2] = text("gen_ai.usage.input_tokens", "a lot");
    let mut huge_other = genai_span(3, "gpt-4o", 1, 1, false);
    huge_other
        .attributes
        .push(text("gen_ai.prompt.0.content", &"p".repeat(4 << 20)));
    let answer = protobuf(
        &client,
        &server,
        request(vec![
            huge,
            wrong,
            huge_other,
            genai_span(4, "gpt-4o", 5, 5, false),
        ])
        .encode_to_vec(),
    );
    let (rejected, message) = partial(&answer).expect("two spans rejected");
    assert_eq!(rejected, 2, "{message}");
    assert!(
        message
            .contains("model: longer than 128 bytes (1048576 bytes) (from gen_ai.request.model)"),
        "{message}"
    );
    assert!(
        message.contains("input_tokens: expected an integer >= 0, found \"a lot\""),
        "{message}"
    );

    // Limits: too many spans and too large a body are 413, other refusals as for events.
    let many = request(
        (0..10_001)
            .map(|n| genai_span(n, "m", 1, 1, false))
            .collect(),
    );
    let answer = protobuf(&client, &server, many.encode_to_vec());
    assert_eq!(answer.status, 413);
    assert!(rpc_status(&answer)
        .message
        .contains("more than 10000 spans"));
    assert_eq!(
        protobuf(&client, &server, vec![0; (16 << 20) + 1]).status,
        413
    );
    let answer = post_traces(
        &client,
        &server,
        Some(KEY),
        "text/plain",
        None,
        good.clone(),
    );
    assert_eq!(answer.status, 415);
    let answer = post_traces(
        &client,
        &server,
        Some(KEY),
        "application/x-protobuf",
        Some("gzip"),
        good.clone(),
    );
    assert_eq!(answer.status, 400, "not gzip");
    let answer = post_traces(
        &client,
        &server,
        None,
        "application/x-protobuf",
        None,
        good.clone(),
    );
    assert_eq!((answer.status, rpc_status(&answer).code), (401, 16));
    let answer = post_traces(
        &client,
        &server,
        Some("nope"),
        "application/json",
        None,
        b"{}".to_vec(),
    );
    assert_eq!(answer.status, 401);

    // Still serving: the good export goes in and is counted.
    assert_eq!(partial(&protobuf(&client, &server, good)), None);
    server.wait_caught_up(&client);
    let (_, summary) = get_json(&client, &server, Some(KEY), "/v1/query/summary");
    // The span with a 4 MiB prompt attribute went in: unmapped attributes are ignored.
    assert_eq!(model_entry(&summary, "gpt-4o")["requests"], 3, "{summary}");
    assert_eq!(
        model_entry(&summary, "gpt-4o")["input_tokens"],
        7,
        "{summary}"
    );
    assert!(server.stop().success());
}

#[test]
fn otlp_refusals_under_pressure_carry_retry_after_and_grpc_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(
        dir.path(),
        &[("AIS_API_KEYS", &format!("acme:{KEY},acme:reader:read"))],
        &["--rate-limit-eps", "1", "--rate-limit-burst", "1"],
        None,
    );
    let client = client();
    let two = request(vec![
        genai_span(0, "m", 1, 1, false),
        genai_span(1, "m", 1, 1, false),
    ])
    .encode_to_vec();
    assert_eq!(partial(&protobuf(&client, &server, two.clone())), None);
    // The bucket is in debt now: 429 with Retry-After, before the body is read.
    let answer = protobuf(&client, &server, two.clone());
    assert_eq!(answer.status, 429);
    assert!(answer.retry_after.is_some());
    assert_eq!(rpc_status(&answer).code, 8, "RESOURCE_EXHAUSTED");

    // gRPC: the same refusals as status codes.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let target = server.otlp_grpc.clone().expect("OTLP/gRPC listens");
    runtime.block_on(async move {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        let mut grpc = TraceServiceClient::connect(target).await.expect("connects");
        let decoded = |bytes: &[u8]| {
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(bytes)
                .expect("same message")
        };
        let unauthenticated = grpc
            .export(tonic::Request::new(decoded(&two)))
            .await
            .expect_err("no key");
        assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
        let mut request = tonic::Request::new(decoded(&two));
        request
            .metadata_mut()
            .insert("authorization", "Bearer reader".parse().expect("metadata"));
        let denied = grpc.export(request).await.expect_err("read key");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let mut request = tonic::Request::new(decoded(&two));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {KEY}").parse().expect("metadata"));
        let limited = grpc.export(request).await.expect_err("over the limit");
        assert_eq!(limited.code(), tonic::Code::ResourceExhausted);
        assert!(
            limited.metadata().get_bin("google.rpc.retryinfo-bin").is_some(),
            "RetryInfo for the exporter"
        );
    });
}

#[test]
fn otlp_grpc_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &[], &["--otlp-grpc-listen", "off"], None);
    assert_eq!(server.otlp_grpc, None, "no otlp_grpc in the ready line");
    let client = client();
    let answer = protobuf(
        &client,
        &server,
        request(vec![genai_span(0, "m", 1, 1, false)]).encode_to_vec(),
    );
    assert_eq!(
        partial(&answer),
        None,
        "no keys: tenant default, as for events"
    );
}

#[test]
fn the_ingest_report_says_per_source_why_events_cost_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(
        dir.path(),
        &[(
            "AIS_API_KEYS",
            &format!("acme:{KEY},globex:globex-key,root:root-key:admin"),
        )],
    );
    let client = client();
    let (status, _) = post_json(
        &client,
        &server,
        Some(KEY),
        &json!([
            {"timestamp": now_ms(), "model": "gpt-4o", "latency_ms": 5, "input_tokens": 10},
            {"timestamp": now_ms(), "model": "house-model", "latency_ms": 5, "output_tokens": 3},
            {"timestamp": now_ms(), "model": "gpt-4o", "latency_ms": 5},
        ]),
    );
    assert_eq!(status, 202);
    // OTLP/HTTP: an unpriced model whose counts come as deprecated attributes, one of
    // them a string, and a span of no model call.
    let mut older = genai_span(0, "house-model", 1, 1, false);
    older
        .attributes
        .retain(|kv| !kv.key.starts_with("gen_ai.usage."));
    older.attributes.push(int("gen_ai.usage.prompt_tokens", 40));
    older
        .attributes
        .push(text("gen_ai.usage.completion_tokens", "12"));
    let mut http_span = genai_span(1, "unused", 0, 0, false);
    http_span.attributes = vec![text("http.request.method", "GET")];
    let answer = protobuf(
        &client,
        &server,
        request(vec![older, http_span]).encode_to_vec(),
    );
    assert_eq!(answer.status, 200);
    // OTLP/gRPC: one priced span.
    let grpc_body = request(vec![genai_span(2, "gpt-4o", 5, 5, false)]).encode_to_vec();
    let target = server.otlp_grpc.clone().expect("OTLP/gRPC listens");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async move {
            use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
            let mut grpc = TraceServiceClient::connect(target).await.expect("connects");
            let message =
                opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                    grpc_body.as_slice(),
                )
                .expect("same message");
            let mut call = tonic::Request::new(message);
            call.metadata_mut().insert(
                "authorization",
                format!("Bearer {KEY}").parse().expect("metadata"),
            );
            grpc.export(call).await.expect("exported");
        });

    let (status, report) = get_json(&client, &server, Some(KEY), "/v1/ingest/report");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["tenant"], "acme");
    assert!(report["since"]
        .as_i64()
        .is_some_and(|since| since <= now_ms()));
    let json = &report["sources"]["http_json"];
    assert_eq!(json["accepted"], 3, "{report}");
    assert_eq!(json["missing_usage"], 1);
    assert_eq!(
        json["unpriced"]["models"],
        json!([{"model": "house-model", "events": 1}])
    );
    let otlp = &report["sources"]["otlp_http"];
    assert_eq!(
        (otlp["accepted"].as_u64(), otlp["skipped"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(otlp["unpriced"]["events"], 1);
    assert_eq!(otlp["missing_usage"], 0);
    assert_eq!(
        otlp["deprecated_attributes"]["gen_ai.usage.prompt_tokens"],
        1
    );
    assert_eq!(
        otlp["deprecated_attributes"]["gen_ai.usage.completion_tokens"],
        1
    );
    let grpc = &report["sources"]["otlp_grpc"];
    assert_eq!(
        (
            grpc["accepted"].as_u64(),
            grpc["unpriced"]["events"].as_u64()
        ),
        (Some(1), Some(0))
    );

    // Tenant-scoped: another tenant sees zeros; an admin reads acme's.
    let (_, globex) = get_json(&client, &server, Some("globex-key"), "/v1/ingest/report");
    assert_eq!(globex["sources"]["http_json"]["accepted"], 0);
    let (status, _) = get_json(
        &client,
        &server,
        Some("globex-key"),
        "/v1/ingest/report?tenant=acme",
    );
    assert_eq!(status, 403);
    let (_, by_admin) = get_json(
        &client,
        &server,
        Some("root-key"),
        "/v1/ingest/report?tenant=acme",
    );
    assert_eq!(by_admin["sources"], report["sources"]);
}
