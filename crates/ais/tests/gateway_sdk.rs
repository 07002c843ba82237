//! The official OpenAI Python SDK (and Anthropic's, on `/v1/messages`) calls `ais
//! serve --gateway-listen` in front of the project's test upstreams: what the SDK receives must be exactly what the
//! upstreams sent (streamed and not, the usage chunk only when asked for), errors must
//! be OpenAI's, and every call of the tenant must show in the summary with its tokens,
//! TTFT and status, and in the raw events with its user, mapped header and replica.
//!
//! The interpreter is `AIS_OPENAI_PYTHON` (a venv with `openai` and `anthropic`;
//! `.ci/run` makes it).
//! Without it the test says why and passes, except with `CI=true`, where it fails.

mod common;

use std::process::Command;
use std::time::Duration;

use ais_testkit::upstream::{embedding_of, reply, usage_of, Upstream, ANTHROPIC_CACHE_READ_TOKENS};
use common::*;
use serde_json::{json, Value};

const KEY: &str = "gateway-sdk-key";

fn python() -> Option<String> {
    let python = std::env::var("AIS_OPENAI_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    let usable = python.as_ref().is_some_and(|python| {
        Command::new(python)
            .args(["-c", "import openai, anthropic"])
            .status()
            .is_ok_and(|status| status.success())
    });
    if usable {
        return python;
    }
    let why = format!(
        "AIS_OPENAI_PYTHON ({python:?}) is not a python with the openai and anthropic packages; .ci/run creates one"
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipping the OpenAI SDK test: {why}");
    None
}

#[test]
fn the_openai_sdk_through_the_gateway_gets_exact_answers_and_every_call_is_an_event() {
    let Some(python) = python() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let upstreams = [
        Upstream::start(runtime.handle()),
        Upstream::start(runtime.handle()),
    ];
    let ttft = Duration::from_millis(80);
    for upstream in &upstreams {
        upstream.set_ttft(ttft);
        upstream.set_split_events(true);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [gateway]
            headers = {{ "x-feature" = "feature" }}
            [[gateway.upstreams]]
            model = "gpt-4o"
            provider = "openai"
            urls = ["{}", "{}"]
            api_key_env = "AIS_TEST_UPSTREAM_KEY"
            aliases = ["smart"]
            "#,
            upstreams[0].base, upstreams[1].base
        ),
    )
    .expect("config file");
    let log = dir.path().join("ais.log");
    let server = Server::start_with(
        &dir.path().join("data"),
        &[
            ("AIS_API_KEYS", &format!("acme:{KEY}")),
            ("AIS_TEST_UPSTREAM_KEY", "sk-upstream"),
        ],
        &[
            "--config",
            &config.display().to_string(),
            "--gateway-listen",
            "127.0.0.1:0",
        ],
        Some(&log),
    );
    let gateway = server
        .gateway
        .clone()
        .expect("the ready line names the gateway");

    let spec = json!({
        "model": "gpt-4o",
        "whole": "a whole answer please",
        "streamed": "stream it",
        "streamed_usage": "stream it with usage",
        "completion": "complete this",
        "embedding": "embed these words",
    });
    let output = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/gateway/openai_calls.py"
        ))
        .args([&format!("{gateway}/v1"), KEY, &spec.to_string()])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "the SDK's calls failed: {}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        log_tail(&log, 40)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    let prompt = |name: &str| spec[name].as_str().expect("prompt").to_string();
    let usage = |name: &str| {
        let (input, output) = usage_of(&prompt(name));
        json!([input, output])
    };

    assert_eq!(seen["whole"]["content"], reply(&prompt("whole")), "{seen}");
    assert_eq!(seen["whole"]["usage"], usage("whole"));
    assert_eq!(
        seen["streamed"]["content"],
        reply(&prompt("streamed")),
        "{seen}"
    );
    assert_eq!(
        seen["streamed"]["usage_chunks"], 0,
        "no usage chunk for a caller that did not ask"
    );
    assert_eq!(
        seen["streamed_usage"]["content"],
        reply(&prompt("streamed_usage"))
    );
    assert_eq!(seen["streamed_usage"]["usage"], usage("streamed_usage"));
    assert_eq!(seen["completion"]["text"], reply(&prompt("completion")));
    assert_eq!(
        seen["embedding"]["vector"],
        json!(embedding_of(&prompt("embedding")))
    );
    assert_eq!(seen["models"], json!(["gpt-4o", "smart"]));
    assert_eq!(
        seen["unknown_model"],
        json!({"status": 404, "code": "model_not_found"})
    );
    assert_eq!(
        seen["bad_key"],
        json!({"status": 401, "code": "invalid_api_key"})
    );
    assert_eq!(
        upstreams.iter().map(Upstream::hits).sum::<u64>(),
        5,
        "the five good calls went upstream, each once"
    );
    assert!(upstreams.iter().all(|upstream| upstream.hits() == 0
        || upstream.last_authorization().as_deref() == Some("Bearer sk-upstream")));

    // Every call of the tenant is an event: five answered, one for an unknown model.
    let client = client();
    let input_tokens: u64 = [
        "whole",
        "streamed",
        "streamed_usage",
        "completion",
        "embedding",
    ]
    .iter()
    .map(|name| usage_of(&prompt(name)).0)
    .sum();
    let output_tokens: u64 = ["whole", "streamed", "streamed_usage", "completion"]
        .iter()
        .map(|name| usage_of(&prompt(name)).1)
        .sum();
    let summary = eventually("the gateway's six calls in the summary", || {
        let (status, summary) = get_json(&client, &server, Some(KEY), "/v1/query/summary");
        if status != 200 {
            return Err(format!("{status}: {summary}"));
        }
        let requests = |model: &str| model_entry(&summary, model)["requests"].as_u64();
        if requests("gpt-4o") == Some(5) && requests("no-such-model") == Some(1) {
            Ok(summary)
        } else {
            Err(summary.to_string())
        }
    });
    let gpt = model_entry(&summary, "gpt-4o");
    assert_eq!(gpt["errors"], 0, "{gpt}");
    assert_eq!(gpt["input_tokens"], input_tokens, "{gpt}");
    assert_eq!(gpt["output_tokens"], output_tokens, "{gpt}");
    let ttft_p50 = gpt["ttft_ms"]["p50"].as_f64().expect("the streams' TTFT");
    let latency_p99 = gpt["latency_ms"]["p99"].as_f64().expect("latency");
    assert!(
        ttft_p50 >= ttft.as_millis() as f64 && ttft_p50 <= latency_p99,
        "TTFT is the first content chunk, after the upstream's {ttft:?}: {gpt}"
    );
    let unknown = model_entry(&summary, "no-such-model");
    assert_eq!(unknown["errors"], 1, "{unknown}");
    assert_eq!(unknown["errors_by_type"], json!({"model_not_found": 1}));

    let (status, events) = get_json(&client, &server, Some(KEY), "/v1/events?model=gpt-4o");
    assert_eq!(status, 200, "{events}");
    let events = events["events"].as_array().cloned().unwrap_or_default();
    let whole = events
        .iter()
        .find(|event| event["user_id"] == "user-whole")
        .unwrap_or_else(|| panic!("the whole call's event: {events:?}"));
    assert_eq!(whole["attributes"]["feature"], "search", "{whole}");
    assert_eq!(whole["provider"], "openai");
    assert_eq!(whole["operation"], "chat");
    assert!(
        upstreams
            .iter()
            .any(|upstream| whole["attributes"]["upstream"] == upstream.base.as_str()),
        "{whole}"
    );
    assert!(whole.get("ttft_ms").is_none_or(Value::is_null), "{whole}");

    let ready = server.readiness(&client);
    let component = readiness_component(&ready, "gateway");
    assert_eq!(component["ready"], true, "{ready}");
    assert_eq!(component["facts"]["replicas"], 2, "{ready}");
    assert_eq!(component["facts"]["replicas_open"], 0, "{ready}");

    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .expect("metrics");
    for upstream in &upstreams {
        let series = format!(
            "ais_gateway_upstream_ewma_seconds{{model=\"gpt-4o\",upstream=\"{}\"}}",
            upstream.base
        );
        assert!(metrics.contains(&series), "{series} in /metrics");
    }
    assert!(
        metrics.contains("ais_gateway_events_total{outcome=\"recorded\"} 6"),
        "{metrics}"
    );
    // The call with a bad key had no tenant, so no event: it is counted instead.
    assert!(
        metrics.contains("ais_gateway_calls_without_tenant_total{code=\"invalid_api_key\"} 1"),
        "{metrics}"
    );
    drop(runtime);
}

#[test]
fn the_anthropic_sdk_through_the_gateway_gets_exact_answers_and_every_call_is_an_event() {
    let Some(python) = python() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let upstream = Upstream::start(runtime.handle());
    let ttft = Duration::from_millis(60);
    upstream.set_ttft(ttft);
    upstream.set_split_events(true);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [gateway]
            [[gateway.upstreams]]
            model = "claude-sonnet-4"
            provider = "anthropic"
            urls = ["{}"]
            api_key_env = "AIS_TEST_UPSTREAM_KEY"
            "#,
            upstream.base
        ),
    )
    .expect("config file");
    let log = dir.path().join("ais.log");
    let server = Server::start_with(
        &dir.path().join("data"),
        &[
            ("AIS_API_KEYS", &format!("acme:{KEY}")),
            ("AIS_TEST_UPSTREAM_KEY", "sk-ant-upstream"),
        ],
        &[
            "--config",
            &config.display().to_string(),
            "--gateway-listen",
            "127.0.0.1:0",
        ],
        Some(&log),
    );
    let gateway = server
        .gateway
        .clone()
        .expect("the ready line names the gateway");
    let spec =
        json!({"model": "claude-sonnet-4", "whole": "hello there", "streamed": "stream it please"});
    let output = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/gateway/anthropic_calls.py"
        ))
        .args([gateway.as_str(), KEY, &spec.to_string()])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "the SDK's calls failed: {}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        log_tail(&log, 40)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    let anthropic_usage = |prompt: &str| {
        let (input, output) = usage_of(prompt);
        json!([input - ANTHROPIC_CACHE_READ_TOKENS, output])
    };
    assert_eq!(seen["whole"]["text"], reply("hello there"), "{seen}");
    assert_eq!(seen["whole"]["usage"], anthropic_usage("hello there"));
    assert_eq!(
        seen["streamed"]["text"],
        reply("stream it please"),
        "{seen}"
    );
    assert_eq!(
        seen["streamed"]["usage"],
        anthropic_usage("stream it please")
    );
    assert_eq!(
        seen["unknown_model"],
        json!({"status": 404, "type": "not_found_error"})
    );
    assert_eq!(upstream.last_api_key().as_deref(), Some("sk-ant-upstream"));

    let client = client();
    let summary = eventually("the three calls in the summary", || {
        let (status, summary) = get_json(&client, &server, Some(KEY), "/v1/query/summary");
        let requests = |model: &str| model_entry(&summary, model)["requests"].as_u64();
        if status == 200
            && requests("claude-sonnet-4") == Some(2)
            && requests("no-such-claude") == Some(1)
        {
            Ok(summary)
        } else {
            Err(format!("{status}: {summary}"))
        }
    });
    let claude = model_entry(&summary, "claude-sonnet-4");
    let input = usage_of("hello there").0 + usage_of("stream it please").0;
    let output = usage_of("hello there").1 + usage_of("stream it please").1;
    assert_eq!(claude["errors"], 0, "{claude}");
    assert_eq!(
        claude["input_tokens"], input,
        "cache reads are part of the input: {claude}"
    );
    assert_eq!(
        claude["cache_read_input_tokens"],
        2 * ANTHROPIC_CACHE_READ_TOKENS
    );
    assert_eq!(claude["output_tokens"], output, "{claude}");
    let ttft_p50 = claude["ttft_ms"]["p50"]
        .as_f64()
        .expect("the stream's TTFT");
    assert!(ttft_p50 >= ttft.as_millis() as f64, "{claude}");
    drop(runtime);
}
