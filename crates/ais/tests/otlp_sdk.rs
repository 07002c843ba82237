//! The real OpenTelemetry Python SDK exports GenAI spans to a running `ais serve`, over
//! OTLP/HTTP (protobuf, gzip) and OTLP/gRPC, through a loopback proxy that forwards the
//! first export to `ais` and then answers the exporter 503 / UNAVAILABLE, so the SDK
//! sends the same spans again. The summary must show exactly what the spans carry,
//! each span once.
//!
//! The interpreter is `AIS_OTEL_PYTHON` (a venv with `opentelemetry-sdk` and the OTLP
//! exporters; `.ci/run` makes it). Without it the tests say why and pass, except with
//! `CI=true`, where they fail.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

const KEY: &str = "otel-key";

fn python() -> Option<String> {
    let python = std::env::var("AIS_OTEL_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    let usable = python.as_ref().is_some_and(|python| {
        Command::new(python)
            .args(["-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.otlp.proto.grpc"])
            .status()
            .is_ok_and(|status| status.success())
    });
    if usable {
        return python;
    }
    let why = format!(
        "AIS_OTEL_PYTHON ({python:?}) is not a python with opentelemetry-sdk and the OTLP exporters; .ci/run creates one"
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipping the OpenTelemetry SDK test: {why}");
    None
}

/// What the test sends: per model, spans with known tokens, errors and TTFT.
fn spec(service: &str) -> Value {
    let mut spans = Vec::new();
    for n in 0..5 {
        let mut attributes = json!({
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 100 + n,
            "gen_ai.usage.output_tokens": 20,
            "gen_ai.usage.cache_read.input_tokens": 10,
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.response.time_to_first_chunk": 0.05,
            "server.address": "api.openai.com",
            "user.id": format!("user-{}", n % 2),
        });
        let error = n == 4;
        if error {
            attributes["error.type"] = json!("timeout");
        }
        spans.push(json!({"name": "chat gpt-4o", "attributes": attributes, "error": error, "duration_ms": 200 + 10 * n}));
    }
    // An older instrumentation: gen_ai.system and the deprecated token names.
    for _ in 0..3 {
        spans.push(json!({"name": "anthropic.chat", "attributes": {
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4",
            "gen_ai.usage.prompt_tokens": 50,
            "gen_ai.usage.completion_tokens": 7,
        }, "error": false, "duration_ms": 300}));
    }
    // An agent span without a model: skipped, like the parent HTTP spans.
    spans.push(json!({"name": "invoke_agent planner", "attributes": {
        "gen_ai.operation.name": "invoke_agent",
    }, "error": false, "duration_ms": 900}));
    json!({"service": service, "spans": spans})
}

fn check_summary(server: &Server) {
    let client = client();
    server.wait_caught_up(&client);
    let (status, summary) = get_json(&client, server, Some(KEY), "/v1/query/summary");
    assert_eq!(status, 200, "{summary}");
    let models = summary["models"].as_array().expect("models");
    assert_eq!(models.len(), 2, "exactly the two models sent: {summary}");
    let gpt = model_entry(&summary, "gpt-4o");
    assert_eq!(gpt["requests"], 5, "{gpt}");
    assert_eq!(gpt["errors"], 1, "{gpt}");
    assert_eq!(gpt["input_tokens"], 100 + 101 + 102 + 103 + 104, "{gpt}");
    assert_eq!(gpt["output_tokens"], 100, "{gpt}");
    assert_eq!(gpt["cache_read_input_tokens"], 50, "{gpt}");
    assert_eq!(gpt["unique_users"], 2, "{gpt}");
    let ttft = gpt["ttft_ms"]["p50"]
        .as_f64()
        .expect("ttft from time_to_first_chunk");
    assert!((ttft - 50.0).abs() <= 1.0, "TTFT is seconds × 1000: {gpt}");
    let latency = gpt["latency_ms"]["p50"].as_f64().expect("latency");
    assert!(
        (latency - 220.0).abs() <= 3.0,
        "latency from start and end: {gpt}"
    );
    let claude = model_entry(&summary, "claude-sonnet-4");
    assert_eq!(claude["requests"], 3, "{claude}");
    assert_eq!(claude["errors"], 0, "{claude}");
    assert_eq!(claude["input_tokens"], 150, "{claude}");
    assert_eq!(claude["output_tokens"], 21, "{claude}");

    assert_eq!(gpt["errors_by_type"], json!({"timeout": 1}), "{gpt}");
}

fn run_sdk(python: &str, protocol: &str, endpoint: &str) {
    let output = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/otel/send_spans.py"
        ))
        .args([protocol, endpoint, KEY, &spec("otel-test-app").to_string()])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "the SDK's exports failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn start_server(dir: &std::path::Path) -> Server {
    Server::start(dir, &[("AIS_API_KEYS", &format!("acme:{KEY}"))])
}

/// A loopback OTLP/HTTP proxy: forwards every export to `ais`; answers the first one
/// 503 with `Retry-After: 1` after `ais` has taken it.
fn http_proxy(
    target: String,
    runtime: &tokio::runtime::Runtime,
    seen: Arc<AtomicUsize>,
) -> SocketAddr {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;

    install_tls_provider();
    let client = reqwest::Client::new();
    let forward = move |headers: HeaderMap, body: Bytes| {
        let client = client.clone();
        let target = target.clone();
        let seen = seen.clone();
        async move {
            let mut request = client.post(format!("{target}/v1/traces")).body(body);
            for name in ["content-type", "content-encoding", "authorization"] {
                if let Some(value) = headers.get(name) {
                    request = request.header(name, value.as_bytes());
                }
            }
            let answer = request.send().await.expect("ais answers the proxy");
            let status = answer.status().as_u16();
            let content_type = answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/x-protobuf")
                .to_string();
            let body = answer.bytes().await.expect("ais's answer");
            assert_eq!(status, 200, "ais accepts the export");
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "1".to_string())],
                    Vec::new(),
                )
                    .into_response();
            }
            (
                StatusCode::OK,
                [("content-type", content_type)],
                body.to_vec(),
            )
                .into_response()
        }
    };
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(forward));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("proxy binds");
    let address = listener.local_addr().expect("proxy address");
    runtime.spawn(async move { axum::serve(listener, app).await });
    address
}

#[test]
fn sdk_http_exports_count_once_through_a_retrying_proxy() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let seen = Arc::new(AtomicUsize::new(0));
    let proxy = http_proxy(server.base.clone(), &runtime, seen.clone());
    run_sdk(&python, "http", &format!("http://{proxy}/v1/traces"));
    assert!(
        seen.load(Ordering::SeqCst) >= 2,
        "the SDK retried after the 503 ({} exports)",
        seen.load(Ordering::SeqCst)
    );
    check_summary(&server);
}

mod grpc_proxy {
    //! A loopback OTLP/gRPC proxy: forwards every export to `ais`, answers the first
    //! one UNAVAILABLE after `ais` has taken it.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use tonic::{Request, Response, Status};

    pub struct Proxy {
        pub target: String,
        pub seen: Arc<AtomicUsize>,
    }

    #[tonic::async_trait]
    impl TraceService for Proxy {
        async fn export(
            &self,
            request: Request<ExportTraceServiceRequest>,
        ) -> Result<Response<ExportTraceServiceResponse>, Status> {
            let mut client = TraceServiceClient::connect(self.target.clone())
                .await
                .map_err(|error| Status::internal(error.to_string()))?;
            let mut forwarded = Request::new(request.get_ref().clone());
            if let Some(key) = request.metadata().get("authorization") {
                forwarded
                    .metadata_mut()
                    .insert("authorization", key.clone());
            }
            let answer = client.export(forwarded).await?;
            if self.seen.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(Status::unavailable("proxy: try again"));
            }
            Ok(answer)
        }
    }
}

#[test]
fn sdk_grpc_exports_count_once_through_a_retrying_proxy() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;

    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path());
    let target = server.otlp_grpc.clone().expect("ais serves OTLP/gRPC");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let seen = Arc::new(AtomicUsize::new(0));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("proxy binds");
    let proxy = listener.local_addr().expect("proxy address");
    let service = TraceServiceServer::new(grpc_proxy::Proxy {
        target,
        seen: seen.clone(),
    });
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    run_sdk(&python, "grpc", &proxy.to_string());
    assert!(
        seen.load(Ordering::SeqCst) >= 2,
        "the SDK retried after UNAVAILABLE ({} exports)",
        seen.load(Ordering::SeqCst)
    );
    check_summary(&server);
}

#[test]
fn sdk_exports_straight_to_ais_over_both_protocols() {
    let Some(python) = python() else { return };
    for protocol in ["http", "grpc"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = start_server(dir.path());
        let endpoint = match protocol {
            "http" => server.url("/v1/traces"),
            _ => server
                .otlp_grpc
                .clone()
                .expect("ais serves OTLP/gRPC")
                .trim_start_matches("http://")
                .to_string(),
        };
        run_sdk(&python, protocol, &endpoint);
        check_summary(&server);
        assert!(
            server.stop().success(),
            "clean shutdown with both listeners"
        );
    }
}
