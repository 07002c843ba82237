//! The gateway in process, in front of the project's test upstreams, over real HTTP:
//! what callers receive, which replica served each call (the upstreams count their
//! hits), and the event each call leaves in the log (an in-memory sink that decodes
//! what the log would hold). No test waits a fixed time: each waits for the thing it
//! checks, up to the shared patience.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ais_gateway::breaker::BreakerState;
use ais_gateway::budget::{BudgetGate, Budgets, Caller, Reserved, Spend};
use ais_gateway::call::{SEMANTIC_CACHE_PURPOSE, UNREAD_MODEL};
use ais_gateway::config::GatewaySection;
use ais_gateway::record::{EventSink, Recorder, Usage, Validation};
use ais_gateway::GatewayState;
use ais_ingest::ratelimit::TenantLimiter;
use ais_log::RecordBatch;
use ais_model::auth::Keyring;
use ais_model::price::PriceTable;
use ais_model::time::{Clock, SystemClock};
use ais_model::wire;
use ais_testkit::eventually_async;
use ais_testkit::upstream::{
    embedding_of, reply, reply_chunks, usage_of, Mode, Upstream, ANTHROPIC_CACHE_READ_TOKENS,
};
use axum::serve::ListenerExt;
use serde_json::{json, Value};

const KEY: &str = "gateway-test-key";

/// One recorded event, as the log would hold it.
#[derive(Debug, Clone)]
struct Recorded {
    tenant: String,
    model: String,
    operation: Option<String>,
    response_model: Option<String>,
    status: &'static str,
    error_type: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cost_micros: Option<u64>,
    ttft_ms: Option<f64>,
    latency_ms: f64,
    user_id: Option<String>,
    /// The caller's key as usage names it.
    key: Option<String>,
    attributes: Vec<(String, String)>,
}

impl Recorded {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Default)]
struct MemorySink {
    events: Mutex<Vec<Recorded>>,
}

#[async_trait::async_trait]
impl EventSink for MemorySink {
    async fn append(&self, batch: RecordBatch) -> Result<(), String> {
        let mut events = self.events.lock().expect("lock");
        for record in batch.iter() {
            let (tenant, event) = wire::decode(record).map_err(|error| error.to_string())?;
            events.push(Recorded {
                tenant: tenant.to_string(),
                model: event.model.to_string(),
                operation: event.operation.map(|o| o.to_string()),
                response_model: event.response_model.map(|m| m.to_string()),
                status: event.status.as_str(),
                error_type: event.error_type.map(|e| e.to_string()),
                input_tokens: event.input_tokens,
                output_tokens: event.output_tokens,
                cache_read_input_tokens: event.cache_read_input_tokens,
                cost_micros: event.cost_micros,
                ttft_ms: event.ttft_ms,
                latency_ms: event.latency_ms,
                user_id: event.user_id.map(|u| u.to_string()),
                key: event.key.map(|k| k.to_string()),
                attributes: event
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            });
        }
        Ok(())
    }
}

struct Harness {
    url: String,
    state: GatewayState,
    sink: Arc<MemorySink>,
    http: reqwest::Client,
}

/// A gateway with `config` (a `[gateway]` TOML text; `{N}` stands for the base URL of
/// `upstreams[N]`) on a free port.
async fn harness(config: &str, upstreams: &[&Upstream]) -> Harness {
    harness_with(config, upstreams, TenantLimiter::unlimited()).await
}

async fn harness_with(config: &str, upstreams: &[&Upstream], limiter: TenantLimiter) -> Harness {
    harness_full(config, upstreams, limiter, None).await
}

async fn harness_full(
    config: &str,
    upstreams: &[&Upstream],
    limiter: TenantLimiter,
    budgets: Option<Budgets>,
) -> Harness {
    harness_clocked(config, upstreams, limiter, budgets, Arc::new(SystemClock)).await
}

async fn harness_clocked(
    config: &str,
    upstreams: &[&Upstream],
    limiter: TenantLimiter,
    budgets: Option<Budgets>,
    clock: Arc<dyn Clock>,
) -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut text = config.to_string();
    for (index, upstream) in upstreams.iter().enumerate() {
        text = text.replace(&format!("{{{index}}}"), &upstream.base);
    }
    #[derive(serde::Deserialize)]
    struct File {
        gateway: GatewaySection,
    }
    let section = toml::from_str::<File>(&text)
        .expect("config parses")
        .gateway;
    let config = section
        .resolve(&|name| (name == "TEST_UPSTREAM_CREDENTIAL").then(|| "sk-upstream".to_string()))
        .expect("config resolves");
    let sink = Arc::new(MemorySink::default());
    let (recorder, _writer) = Recorder::spawn(
        sink.clone(),
        Validation {
            prices: Arc::new(PriceTable::with_defaults()),
            max_event_age: Duration::from_secs(3600),
            max_event_future: Duration::from_secs(300),
            payloads: None,
        },
        1024,
        clock.clone(),
    );
    let keyring = Keyring::parse_plain(&format!("acme:{KEY}")).expect("keys");
    let state = GatewayState::new(
        &config,
        Arc::new(keyring),
        Arc::new(limiter),
        recorder,
        clock,
    )
    .expect("state");
    let state = match budgets {
        Some(budgets) => state.with_budgets(budgets),
        None => state,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = ais_gateway::router(state.clone());
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Harness {
        url: format!("http://{address}"),
        state,
        sink,
        http: reqwest::Client::new(),
    }
}

impl Harness {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .expect("gateway answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn chat(&self, model: &str, prompt: &str) -> (u16, Value) {
        self.post(
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": prompt}]}),
        )
        .await
    }

    /// A streamed chat: the raw text the caller received.
    async fn stream_chat(&self, body: &Value) -> String {
        let mut response = self
            .http
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .expect("gateway answers");
        assert_eq!(response.status(), 200);
        let mut text = Vec::new();
        while let Some(chunk) = response.chunk().await.expect("stream reads") {
            text.extend_from_slice(&chunk);
        }
        String::from_utf8(text).expect("utf-8")
    }

    async fn events(&self, count: usize) -> Vec<Recorded> {
        eventually_async(&format!("{count} events recorded"), || async {
            let events = self.sink.events.lock().expect("lock").clone();
            if events.len() >= count {
                Ok(events)
            } else {
                Err(format!("{} events", events.len()))
            }
        })
        .await
    }
}

/// The `data:` payloads of an SSE text, `[DONE]` aside.
fn sse_payloads(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).expect("each event is JSON"))
        .collect()
}

fn content_of(payloads: &[Value]) -> String {
    payloads
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn one_model(urls: &str, extra: &str) -> String {
    format!(
        r#"[gateway]
           {extra}
           [[gateway.upstreams]]
           model = "gpt-4o"
           provider = "openai"
           urls = [{urls}]
           api_key_env = "TEST_UPSTREAM_CREDENTIAL"
           aliases = ["smart"]"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_whole_and_streamed_are_relayed_exactly_and_each_call_is_an_event() {
    let runtime = tokio::runtime::Handle::current();
    let upstream = Upstream::start(&runtime);
    upstream.set_split_events(true);
    upstream.set_ttft(Duration::from_millis(50));
    let gateway = harness(&one_model("\"{0}\"", ""), &[&upstream]).await;

    let prompt = "tell me something";
    let (status, whole) = gateway
        .post(
            "/v1/chat/completions",
            &json!({"model": "smart", "user": "user-7", "messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["choices"][0]["message"]["content"], reply(prompt));
    assert_eq!(
        upstream.last_authorization().as_deref(),
        Some("Bearer sk-upstream"),
        "the upstream's credential goes upstream, never the caller's key"
    );
    assert_eq!(
        upstream.last_body().expect("body")["model"],
        "gpt-4o",
        "alias resolved"
    );

    let streamed = gateway
        .stream_chat(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": prompt}]}))
        .await;
    let payloads = sse_payloads(&streamed);
    assert_eq!(content_of(&payloads), reply(prompt));
    assert!(
        payloads.iter().all(|chunk| chunk.get("usage").is_none()),
        "the usage chunk the caller did not ask for is taken out: {streamed}"
    );
    assert!(streamed.ends_with("data: [DONE]\n\n"), "{streamed}");
    assert_eq!(
        upstream.last_body().expect("body")["stream_options"]["include_usage"],
        true,
        "the gateway asks for usage upstream"
    );

    let asked = gateway
        .stream_chat(
            &json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
    let usage: Vec<Value> = sse_payloads(&asked)
        .into_iter()
        .filter_map(|chunk| chunk.get("usage").cloned())
        .collect();
    let (input, output) = usage_of(prompt);
    assert_eq!(
        usage,
        vec![
            json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
        ]
    );

    let events = gateway.events(3).await;
    assert_eq!(events.len(), 3);
    for event in &events {
        assert_eq!(event.tenant, "acme");
        assert_eq!(event.model, "gpt-4o");
        assert_eq!(event.status, "ok");
        assert_eq!(event.input_tokens, Some(input), "{event:?}");
        assert_eq!(event.output_tokens, Some(output), "{event:?}");
        assert_eq!(event.attribute("upstream"), Some(upstream.base.as_str()));
        assert_eq!(event.response_model.as_deref(), Some("gpt-4o"));
    }
    assert_eq!(events[0].user_id.as_deref(), Some("user-7"));
    assert_eq!(events[0].ttft_ms, None, "no TTFT for an answer sent whole");
    for streamed in &events[1..] {
        let ttft = streamed.ttft_ms.expect("a stream has a TTFT");
        assert!(
            ttft >= 50.0 && ttft <= streamed.latency_ms,
            "TTFT is the first content chunk, after the upstream's 50 ms: {streamed:?}"
        );
    }
    assert_eq!(reply_chunks(prompt).len() as u64, output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_gets_at_most_one_call_in_ten_and_traffic_again_once_it_recovers() {
    let runtime = tokio::runtime::Handle::current();
    let replicas: Vec<Upstream> = (0..3).map(|_| Upstream::start(&runtime)).collect();
    for replica in &replicas {
        replica.set_latency(Duration::from_millis(25));
    }
    let slow = &replicas[0];
    slow.set_latency(Duration::from_millis(250));
    let gateway = harness(
        &one_model("\"{0}\", \"{1}\", \"{2}\"", "ewma_decay_ms = 1000"),
        &replicas.iter().collect::<Vec<_>>(),
    )
    .await;
    for n in 0..10 {
        let (status, body) = gateway.chat("gpt-4o", &format!("warm-up {n}")).await;
        assert_eq!(status, 200, "{body}");
    }
    let before = slow.hits();
    let calls = 60;
    for n in 0..calls {
        let (status, body) = gateway.chat("gpt-4o", &format!("call {n}")).await;
        assert_eq!(status, 200, "{body}");
    }
    let to_slow = slow.hits() - before;
    assert!(
        to_slow * 10 <= calls,
        "the 10× slower replica got {to_slow} of {calls} calls after warm-up"
    );

    // Recovered: its estimate decays and the probes it gets find it fast again.
    slow.set_latency(Duration::from_millis(25));
    eventually_async(
        "the recovered replica serving at least 1 call in 10 again",
        || async {
            let before = slow.hits();
            for n in 0..30 {
                let (status, body) = gateway.chat("gpt-4o", &format!("after {n}")).await;
                if status != 200 {
                    return Err(format!("a call failed: {body}"));
                }
            }
            let share = slow.hits() - before;
            if share >= 3 {
                Ok(())
            } else {
                Err(format!("{share} of 30"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_fails_no_call() {
    let runtime = tokio::runtime::Handle::current();
    let mut replicas: Vec<Upstream> = (0..3).map(|_| Upstream::start(&runtime)).collect();
    let gateway = harness(
        &one_model("\"{0}\", \"{1}\", \"{2}\"", ""),
        &replicas.iter().collect::<Vec<_>>(),
    )
    .await;
    for n in 0..6 {
        assert_eq!(gateway.chat("gpt-4o", &format!("before {n}")).await.0, 200);
    }
    replicas[0].stop().await;
    // Calls go on until one has met the dead replica (the balancer picks it by chance
    // and load, so how many calls that takes varies); every one of them succeeds on a
    // live replica.
    let deadline = std::time::Instant::now() + ais_testkit::PATIENCE;
    let mut calls = 0;
    loop {
        let (status, body) = gateway.chat("gpt-4o", &format!("after {calls}")).await;
        assert_eq!(status, 200, "call {calls} after the kill: {body}");
        calls += 1;
        let events = gateway.events(6 + calls).await;
        assert!(events[6..].iter().all(|event| event.status == "ok"
            && event.attribute("upstream") != Some(replicas[0].base.as_str())));
        if events[6..]
            .iter()
            .any(|event| event.attribute("attempts") == Some("2"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no call met the dead replica in {calls} calls"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_before_its_first_byte_is_retried_on_another_replica() {
    let runtime = tokio::runtime::Handle::current();
    let broken = Upstream::start(&runtime);
    broken.set_mode(Mode::ResetBeforeFirstChunk);
    let healthy = Upstream::start(&runtime);
    let gateway = harness(&one_model("\"{0}\", \"{1}\"", ""), &[&broken, &healthy]).await;
    eventually_async("a stream that met the broken replica first", || async {
        let text = gateway
            .stream_chat(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        if content_of(&sse_payloads(&text)) != reply("hi") {
            panic!("content differs: {text}");
        }
        if broken.hits() > 0 {
            Ok(())
        } else {
            Err("the broken replica has not been tried yet".to_string())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_replica_is_isolated_by_its_breaker() {
    let runtime = tokio::runtime::Handle::current();
    let replicas: Vec<Upstream> = (0..3).map(|_| Upstream::start(&runtime)).collect();
    let failing = &replicas[1];
    failing.set_status(500);
    let gateway = harness(
        &one_model(
            "\"{0}\", \"{1}\", \"{2}\"",
            "[gateway.breaker]\nconsecutive_failures = 3\nopen_ms = 600000",
        ),
        &replicas.iter().collect::<Vec<_>>(),
    )
    .await;
    let model = gateway.state.registry.get("gpt-4o").expect("model").clone();
    let mut n = 0;
    eventually_async("the failing replica's circuit open", || {
        n += 1;
        let call = n;
        let gateway = &gateway;
        let model = model.clone();
        async move {
            let (status, body) = gateway.chat("gpt-4o", &format!("call {call}")).await;
            assert_eq!(
                status, 200,
                "every call succeeds through the others: {body}"
            );
            match model.replicas[1].breaker.state() {
                BreakerState::Open => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(
        failing.hits(),
        3,
        "it took exactly the failures that opened it"
    );
    for call in 0..30 {
        let (status, body) = gateway.chat("gpt-4o", &format!("isolated {call}")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(failing.hits(), 3, "an open circuit gets no calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_going_away_mid_stream_cancels_the_upstream_and_the_call_is_recorded() {
    let runtime = tokio::runtime::Handle::current();
    let upstream = Upstream::start(&runtime);
    upstream.set_mode(Mode::HoldAfterFirstChunk);
    let gateway = harness(&one_model("\"{0}\"", ""), &[&upstream]).await;
    let mut response = gateway
        .http
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hold"}]}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    while !seen.contains(&reply_chunks("hold")[0]) {
        let chunk = response
            .chunk()
            .await
            .expect("reads")
            .expect("the stream is held open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);
    eventually_async("the upstream seeing its caller gone", || async {
        match upstream.cancelled() {
            1 => Ok(()),
            other => Err(format!("{other} cancelled")),
        }
    })
    .await;
    let events = gateway.events(1).await;
    assert_eq!(events[0].status, "error");
    assert_eq!(events[0].error_type.as_deref(), Some("cancelled"));
    assert!(
        events[0].ttft_ms.is_some(),
        "content had arrived: {:?}",
        events[0]
    );
    assert_eq!(upstream.finished(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallbacks_answer_when_every_replica_failed_and_502_when_they_fail_too() {
    let runtime = tokio::runtime::Handle::current();
    let primary = Upstream::start(&runtime);
    primary.set_status(503);
    let fallback = Upstream::start(&runtime);
    let config = r#"[gateway]
        [[gateway.upstreams]]
        model = "big"
        provider = "openai"
        urls = ["{0}"]
        fallbacks = ["small"]
        [[gateway.upstreams]]
        model = "small"
        provider = "openai"
        urls = ["{1}"]"#;
    let gateway = harness(config, &[&primary, &fallback]).await;
    let (status, body) = gateway.chat("big", "hello").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], reply("hello"));
    assert_eq!(fallback.last_body().expect("body")["model"], "small");

    fallback.set_status(500);
    let (status, body) = gateway.chat("big", "hello").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert!(body["error"]["type"].is_string() && body["error"]["message"].is_string());

    let events = gateway.events(2).await;
    assert_eq!(events[0].model, "big");
    assert_eq!(
        events[0].response_model.as_deref(),
        Some("small"),
        "which model answered"
    );
    assert_eq!(events[0].attribute("attempts"), Some("2"));
    assert_eq!(events[1].status, "error");
    assert_eq!(
        events[1].error_type.as_deref(),
        Some("upstream_unavailable")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_openai_errors_and_the_gateway_keeps_serving() {
    let runtime = tokio::runtime::Handle::current();
    let upstream = Upstream::start(&runtime);
    let gateway = harness(&one_model("\"{0}\"", "max_body_bytes = 2048"), &[&upstream]).await;
    let url = format!("{}/v1/chat/completions", gateway.url);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "malformed JSON",
            gateway.http.post(&url).bearer_auth(KEY).body("{\"model\": "),
            400,
            "invalid_json",
        ),
        (
            "unknown model",
            gateway
                .http
                .post(&url)
                .bearer_auth(KEY)
                .json(&json!({"model": "gpt-9", "messages": []})),
            404,
            "model_not_found",
        ),
        (
            "oversized body",
            gateway.http.post(&url).bearer_auth(KEY).json(
                &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(4096)}]}),
            ),
            413,
            "request_too_large",
        ),
        (
            "missing key",
            gateway.http.post(&url).json(&json!({"model": "gpt-4o", "messages": []})),
            401,
            "invalid_api_key",
        ),
        (
            "unknown key",
            gateway
                .http
                .post(&url)
                .bearer_auth("not-a-key")
                .json(&json!({"model": "gpt-4o", "messages": []})),
            401,
            "invalid_api_key",
        ),
    ];
    for (what, request, status, code) in cases {
        let response = request.send().await.expect("answers");
        assert_eq!(response.status().as_u16(), status, "{what}");
        let body: Value = response.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(
            body["error"]["message"].is_string() && body["error"]["type"].is_string(),
            "{what}: {body}"
        );
    }
    assert_eq!(upstream.hits(), 0, "nothing bad went upstream");
    let (status, body) = gateway.chat("gpt-4o", "still there?").await;
    assert_eq!(status, 200, "{body}");
    // Each refusal of the known tenant is an event saying why; the calls without a
    // valid key have no tenant and leave none (the last event is the call that passed).
    let events = gateway.events(4).await;
    let outcomes: Vec<(&str, Option<&str>, &str)> = events
        .iter()
        .map(|event| {
            (
                event.model.as_str(),
                event.error_type.as_deref(),
                event.status,
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (UNREAD_MODEL, Some("invalid_json"), "error"),
            ("gpt-9", Some("model_not_found"), "error"),
            (UNREAD_MODEL, Some("request_too_large"), "error"),
            ("gpt-4o", None, "ok"),
        ],
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_no_replica_answers_in_time_is_a_504_and_an_event() {
    let runtime = tokio::runtime::Handle::current();
    let replicas: Vec<Upstream> = (0..2).map(|_| Upstream::start(&runtime)).collect();
    for replica in &replicas {
        replica.set_latency(Duration::from_secs(5));
    }
    let gateway = harness(
        &one_model("\"{0}\", \"{1}\"", "attempt_timeout_ms = 200"),
        &replicas.iter().collect::<Vec<_>>(),
    )
    .await;
    let (status, body) = gateway.chat("gpt-4o", "anyone?").await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    assert_eq!(
        replicas.iter().map(Upstream::hits).sum::<u64>(),
        2,
        "each replica was tried once"
    );
    let events = gateway.events(1).await;
    assert_eq!(events[0].error_type.as_deref(), Some("timeout"));
    assert_eq!(events[0].attribute("attempts"), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_limit_gets_an_openai_429() {
    use ais_ingest::ratelimit::RateLimit;
    use ais_model::time::ManualClock;

    let runtime = tokio::runtime::Handle::current();
    let upstream = Upstream::start(&runtime);
    // Time stands still: the bucket of one call never refills during the test.
    let limiter = TenantLimiter::new(
        Some(RateLimit {
            events_per_second: 1.0,
            burst: 1.0,
        }),
        Default::default(),
        Box::new(ManualClock::at(0)),
    );
    let gateway = harness_with(&one_model("\"{0}\"", ""), &[&upstream], limiter).await;
    assert_eq!(gateway.chat("gpt-4o", "first").await.0, 200);
    let response = gateway
        .http
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-4o", "messages": []}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(upstream.hits(), 1);
    let events = gateway.events(2).await;
    let refused = &events[1];
    assert_eq!(refused.status, "error", "{refused:?}");
    assert_eq!(refused.error_type.as_deref(), Some("rate_limit_exceeded"));
    assert_eq!(refused.tenant, "acme");
    assert_eq!(refused.model, UNREAD_MODEL, "its body was never read");
    assert_eq!((refused.input_tokens, refused.output_tokens), (None, None));
    assert_eq!(refused.key, events[0].key, "stamped with the caller's key");
    assert!(refused.key.is_some());
    assert!(refused.latency_ms >= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_gateway_refuses_at_once_and_serves_again_when_a_call_ends() {
    let runtime = tokio::runtime::Handle::current();
    let upstream = Upstream::start(&runtime);
    upstream.set_mode(Mode::HoldAfterFirstChunk);
    let gateway = harness(
        &one_model("\"{0}\"", "max_in_flight_calls = 1"),
        &[&upstream],
    )
    .await;
    let mut held = gateway
        .http
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hold"}]}))
        .send()
        .await
        .expect("answers");
    assert_eq!(held.status(), 200);
    let first = held.chunk().await.expect("reads");
    assert!(first.is_some(), "the held stream has begun");
    let (status, body) = gateway.chat("gpt-4o", "one more").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(upstream.hits(), 1, "the refused call never went upstream");
    // The held stream is still going: the first event is the refused call's.
    let events = gateway.events(1).await;
    assert_eq!(events[0].status, "error", "{events:?}");
    assert_eq!(events[0].error_type.as_deref(), Some("overloaded"));
    assert_eq!(events[0].model, UNREAD_MODEL);
    assert_eq!(events[0].tenant, "acme");
    assert_eq!(events[0].input_tokens, None);
    drop(held);
    upstream.set_mode(Mode::Normal);
    eventually_async("a call served once the held stream is gone", || async {
        match gateway.chat("gpt-4o", "again").await {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status}: {body}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_answers_repeated_requests_whole_and_streamed_and_each_hit_is_an_event() {
    let runtime = tokio::runtime::Handle::current();
    let upstream = Upstream::start(&runtime);
    upstream.set_split_events(true);
    let gateway = harness(
        &one_model("\"{0}\"", "[gateway.cache]\nttl_secs = 600"),
        &[&upstream],
    )
    .await;
    let chat = |user: &str, prompt: &str| json!({"model": "gpt-4o", "user": user, "messages": [{"role": "user", "content": prompt}]});
    let (status, first) = gateway
        .post("/v1/chat/completions", &chat("a", "cache me"))
        .await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = gateway
        .post("/v1/chat/completions", &chat("b", "cache me"))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first, "the same answer, from the cache");
    assert_eq!(upstream.hits(), 1);
    let opted_out = gateway
        .http
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(KEY)
        .header("cache-control", "no-cache")
        .json(&chat("a", "cache me"))
        .send()
        .await
        .expect("answers");
    assert_eq!(opted_out.status(), 200);
    assert_eq!(upstream.hits(), 2, "Cache-Control: no-cache goes upstream");

    let streamed = json!({"model": "smart", "stream": true, "messages": [{"role": "user", "content": "stream me"}]});
    let live = gateway.stream_chat(&streamed).await;
    assert_eq!(upstream.hits(), 3);
    let replayed = gateway.stream_chat(&streamed).await;
    assert_eq!(upstream.hits(), 3, "the stream is replayed from the cache");
    assert_eq!(
        replayed, live,
        "replayed exactly, the usage chunk still taken out"
    );
    assert_eq!(content_of(&sse_payloads(&replayed)), reply("stream me"));
    let with_usage = gateway
        .stream_chat(
            &json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "stream me"}]}),
        )
        .await;
    assert_eq!(upstream.hits(), 3);
    let (input, output) = usage_of("stream me");
    assert!(
        sse_payloads(&with_usage)
            .iter()
            .any(|chunk| chunk["usage"]["prompt_tokens"] == input),
        "a caller that asks gets the usage chunk from the cache too: {with_usage}"
    );

    let events = gateway.events(6).await;
    let hits: Vec<&Recorded> = events
        .iter()
        .filter(|event| event.attribute("cache") == Some("hit"))
        .collect();
    assert_eq!(hits.len(), 3, "{events:?}");
    for hit in &hits {
        assert_eq!(hit.status, "ok");
        assert_eq!(hit.attribute("upstream"), None, "no replica served it");
    }
    assert_eq!(hits[0].user_id.as_deref(), Some("b"));
    assert_eq!(hits[0].input_tokens, Some(usage_of("cache me").0));
    assert_eq!(hits[1].output_tokens, Some(output));
    assert!(hits[1].ttft_ms.is_some(), "a replayed stream has a TTFT");

    // Off unless configured.
    let plain = Upstream::start(&runtime);
    let uncached = harness(&one_model("\"{0}\"", ""), &[&plain]).await;
    for _ in 0..2 {
        assert_eq!(uncached.chat("gpt-4o", "same").await.0, 200);
    }
    assert_eq!(plain.hits(), 2);
}

/// A book that grants holds, or refuses them all when told to, and remembers both.
#[derive(Default)]
struct Book {
    refuse: std::sync::atomic::AtomicBool,
    reserved: Mutex<Vec<(String, String, Spend)>>,
    settled: Mutex<Vec<(String, Spend)>>,
}

#[async_trait::async_trait]
impl BudgetGate for Book {
    async fn reserve(&self, caller: &Caller<'_>, estimate: Spend) -> Reserved {
        let (tenant, model) = (caller.tenant, caller.model);
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Reserved::Refused(format!(
                "budget {tenant} has no room left in its daily USD limit"
            ));
        }
        let mut reserved = self.reserved.lock().expect("lock");
        reserved.push((tenant.to_string(), model.to_string(), estimate));
        Reserved::Granted(Some(format!("hold-{}", reserved.len())))
    }

    fn settle(&self, hold: &str, actual: Spend) {
        self.settled
            .lock()
            .expect("lock")
            .push((hold.to_string(), actual));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_hold_their_estimate_before_going_upstream_and_settle_with_their_usage() {
    let runtime = tokio::runtime::Handle::current();
    let upstream = Upstream::start(&runtime);
    let book = Arc::new(Book::default());
    let gateway = harness_full(
        &one_model("\"{0}\"", ""),
        &[&upstream],
        TenantLimiter::unlimited(),
        Some(Budgets {
            gate: book.clone(),
            prices: Arc::new(PriceTable::with_defaults()),
        }),
    )
    .await;
    let (status, body) = gateway
        .post(
            "/v1/chat/completions",
            &json!({"model": "smart", "max_tokens": 40, "messages": [{"role": "user", "content": "budgeted"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let streamed = gateway
        .stream_chat(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "streamed"}]}))
        .await;
    assert_eq!(content_of(&sse_payloads(&streamed)), reply("streamed"));
    gateway.events(2).await;
    {
        let reserved = book.reserved.lock().expect("lock");
        assert_eq!(reserved.len(), 2);
        assert_eq!(
            (reserved[0].0.as_str(), reserved[0].1.as_str()),
            ("acme", "gpt-4o")
        );
        assert!(
            reserved[0].2.tokens >= 40,
            "the allowed output is held: {:?}",
            reserved[0]
        );
        assert!(reserved[0].2.micros > 0, "gpt-4o is priced");
        let settled = book.settled.lock().expect("lock");
        let tokens = |prompt: &str| {
            let (input, output) = usage_of(prompt);
            input + output
        };
        assert_eq!(settled.len(), 2, "{settled:?}");
        assert_eq!(settled[0].0, "hold-1");
        assert_eq!(settled[0].1.tokens, tokens("budgeted"));
        assert_eq!(settled[1].0, "hold-2");
        assert_eq!(
            settled[1].1.tokens,
            tokens("streamed"),
            "the stream's usage chunk"
        );
    }

    book.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = gateway.chat("gpt-4o", "too much").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "over_budget");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("budget acme")),
        "the budget is named: {body}"
    );
    assert_eq!(upstream.hits(), 2, "a refused call does not go upstream");
    let events = gateway.events(3).await;
    assert_eq!(events[2].error_type.as_deref(), Some("over_budget"));

    book.refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);
    upstream.set_status(500);
    assert_eq!(gateway.chat("gpt-4o", "fails").await.0, 502);
    let settled = book.settled.lock().expect("lock");
    assert_eq!(
        settled.last().map(|(_, spend)| *spend),
        Some(Spend::default()),
        "a call nothing answered spent nothing"
    );
}

/// A stream cut short after its first content chunk, by the caller going away or by
/// its upstream: the hold keeps what the stream is known to have spent, the event
/// carries the same counts, marked as estimates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_short_holds_what_it_spent_and_its_event_says_so() {
    let runtime = tokio::runtime::Handle::current();
    let upstream = Upstream::start(&runtime);
    let book = Arc::new(Book::default());
    let gateway = harness_full(
        &one_model("\"{0}\"", ""),
        &[&upstream],
        TenantLimiter::unlimited(),
        Some(Budgets {
            gate: book.clone(),
            prices: Arc::new(PriceTable::with_defaults()),
        }),
    )
    .await;
    // The request's size at the documented one token per 4 bytes, and the one content
    // chunk relayed before the cut: what the stream is known to have spent.
    let spent = |body: &Value| {
        let bytes = serde_json::to_vec(body).expect("JSON").len() as u64;
        (
            bytes.div_ceil(ais_gateway::budget::BYTES_PER_TOKEN as u64),
            1u64,
        )
    };
    let first_chunk = reply_chunks("cut me short")[0].clone();

    // The caller goes away after the first content chunk.
    upstream.set_mode(Mode::HoldAfterFirstChunk);
    let left = json!({"model": "gpt-4o", "stream": true, "max_tokens": 500,
        "messages": [{"role": "user", "content": "cut me short"}]});
    let mut response = gateway
        .http
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(KEY)
        .json(&left)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    while !seen.contains(&first_chunk) {
        let chunk = response.chunk().await.expect("reads").expect("held open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);
    let events = gateway.events(1).await;
    let cancelled = &events[0];
    assert_eq!(cancelled.error_type.as_deref(), Some("cancelled"));
    let (input, output) = spent(&left);
    assert_eq!(
        (cancelled.input_tokens, cancelled.output_tokens),
        (Some(input), Some(output)),
        "{cancelled:?}"
    );
    assert_eq!(cancelled.attribute("usage"), Some("estimated"));

    // The upstream cuts the stream after its first content chunk.
    upstream.set_mode(Mode::CutAfterFirstChunk);
    let cut = json!({"model": "gpt-4o", "stream": true,
        "messages": [{"role": "user", "content": "cut me short"}]});
    let mut response = gateway
        .http
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(KEY)
        .json(&cut)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    while !seen.contains(&first_chunk) {
        let chunk = response.chunk().await.expect("reads").expect("held open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    upstream.cut_stream();
    while let Ok(Some(_)) = response.chunk().await {}
    let events = gateway.events(2).await;
    let reset = &events[1];
    assert_eq!(
        reset.error_type.as_deref(),
        Some("upstream_reset"),
        "{reset:?}"
    );
    let (input_cut, output_cut) = spent(&cut);
    assert_eq!(
        (reset.input_tokens, reset.output_tokens),
        (Some(input_cut), Some(output_cut))
    );
    assert_eq!(reset.attribute("usage"), Some("estimated"));

    let reserved = book.reserved.lock().expect("lock").clone();
    let settled = book.settled.lock().expect("lock").clone();
    assert_eq!(reserved.len(), 2);
    assert!(
        reserved[0].2.tokens >= 500 && reserved[0].2.tokens > input + output,
        "the estimate held the allowed output: {reserved:?}"
    );
    assert_eq!(
        settled
            .iter()
            .map(|(hold, spend)| (hold.as_str(), spend.tokens))
            .collect::<Vec<_>>(),
        vec![
            ("hold-1", input + output),
            ("hold-2", input_cut + output_cut)
        ],
        "each hold keeps only what its stream spent"
    );
    assert!(settled[0].1.micros > 0, "priced: {settled:?}");
}

/// A call answered whole whose caller goes away while the upstream works on it: its
/// hold is settled at once with what it is known to have spent (its request read, no
/// answer), not left holding the estimate until the hold expires, and its event
/// carries the same counts, marked as estimates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_its_caller_left_before_the_answer_settles_its_hold_with_what_it_spent() {
    let runtime = tokio::runtime::Handle::current();
    let upstream = Upstream::start(&runtime);
    // Longer than any test: the answer never comes while the caller waits.
    upstream.set_latency(Duration::from_secs(3600));
    let book = Arc::new(Book::default());
    let budgets = Budgets {
        gate: book.clone(),
        prices: Arc::new(PriceTable::with_defaults()),
    };
    let gateway = harness_full(
        &one_model("\"{0}\"", ""),
        &[&upstream],
        TenantLimiter::unlimited(),
        Some(budgets.clone()),
    )
    .await;
    let body = json!({"model": "gpt-4o", "max_tokens": 500,
        "messages": [{"role": "user", "content": "leave before the answer"}]});
    let request = gateway
        .http
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(KEY)
        .json(&body)
        .send();
    let caller = tokio::spawn(request);
    eventually_async("the call upstream", || async {
        match upstream.hits() {
            1 => Ok(()),
            other => Err(format!("{other} hits")),
        }
    })
    .await;
    caller.abort();

    let events = gateway.events(1).await;
    let cancelled = &events[0];
    assert_eq!(cancelled.error_type.as_deref(), Some("cancelled"));
    // The request's size at the documented one token per 4 bytes; no answer came.
    let request_bytes = serde_json::to_vec(&body).expect("JSON").len() as u64;
    let input = request_bytes.div_ceil(ais_gateway::budget::BYTES_PER_TOKEN as u64);
    assert_eq!(
        (cancelled.input_tokens, cancelled.output_tokens),
        (Some(input), Some(0)),
        "{cancelled:?}"
    );
    assert_eq!(cancelled.attribute("usage"), Some("estimated"));

    // The hold is settled before the event is queued: in the book once the event is in.
    let reserved = book.reserved.lock().expect("lock").clone();
    let settled = book.settled.lock().expect("lock").clone();
    assert_eq!(reserved.len(), 1);
    let known = budgets.actual(
        "gpt-4o",
        Some(Usage {
            prompt_tokens: Some(input),
            completion_tokens: Some(0),
            ..Usage::default()
        }),
    );
    assert!(
        reserved[0].2.tokens >= 500 && reserved[0].2.tokens > known.tokens,
        "the estimate held the allowed output: {reserved:?}"
    );
    assert_eq!(settled, vec![("hold-1".to_string(), known)]);
    assert!(known.micros > 0, "priced: {known:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_messages_are_relayed_whole_and_streamed_and_counted_with_cached_input() {
    let runtime = tokio::runtime::Handle::current();
    let anthropic = Upstream::start(&runtime);
    let openai = Upstream::start(&runtime);
    let config = r#"[gateway]
        [[gateway.upstreams]]
        model = "claude-sonnet-4"
        provider = "anthropic"
        urls = ["{0}"]
        api_key_env = "TEST_UPSTREAM_CREDENTIAL"
        [[gateway.upstreams]]
        model = "gpt-4o"
        provider = "openai"
        urls = ["{1}"]"#;
    let gateway = harness(config, &[&anthropic, &openai]).await;
    let messages = |prompt: &str, stream: bool| {
        gateway
            .http
            .post(format!("{}/v1/messages", gateway.url))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .json(
                &json!({"model": "claude-sonnet-4", "max_tokens": 64, "stream": stream,
                "metadata": {"user_id": "user-9"},
                "messages": [{"role": "user", "content": prompt}]}),
            )
    };
    let whole: Value = messages("hello claude", false)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    assert_eq!(
        whole["content"][0]["text"],
        reply("hello claude"),
        "{whole}"
    );
    assert_eq!(anthropic.last_api_key().as_deref(), Some("sk-upstream"));
    assert_eq!(
        anthropic.last_authorization(),
        None,
        "the caller's key stays here"
    );

    let streamed = messages("stream claude", true)
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("text");
    let text: String = streamed
        .split("\n\n")
        .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter(|event| event["type"] == "content_block_delta")
        .filter_map(|event| event["delta"]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, reply("stream claude"), "{streamed}");
    assert!(streamed.contains("event: message_stop"), "{streamed}");

    // Each API to the upstreams that speak it; errors in the route's own format.
    let wrong = gateway
        .http
        .post(format!("{}/v1/messages", gateway.url))
        .header("x-api-key", KEY)
        .json(&json!({"model": "gpt-4o", "max_tokens": 8, "messages": []}))
        .send()
        .await
        .expect("answers");
    assert_eq!(wrong.status(), 400);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["type"], "error", "Anthropic's error format: {body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = gateway.chat("claude-sonnet-4", "hi").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "wrong_api");
    assert_eq!(openai.hits() + anthropic.hits(), 2);

    let events = gateway.events(4).await;
    for (event, prompt) in events[..2].iter().zip(["hello claude", "stream claude"]) {
        let (input, output) = usage_of(prompt);
        assert_eq!(event.model, "claude-sonnet-4");
        assert_eq!(event.status, "ok", "{event:?}");
        assert_eq!(
            event.input_tokens,
            Some(input),
            "cache reads counted in the input: {event:?}"
        );
        assert_eq!(
            event.cache_read_input_tokens,
            Some(ANTHROPIC_CACHE_READ_TOKENS)
        );
        assert_eq!(event.output_tokens, Some(output), "{event:?}");
        assert_eq!(event.user_id.as_deref(), Some("user-9"));
    }
    assert_eq!(events[0].ttft_ms, None);
    assert!(events[1].ttft_ms.is_some(), "{:?}", events[1]);
    assert_eq!(events[2].error_type.as_deref(), Some("wrong_api"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_going_away_before_the_first_byte_cancels_the_upstream_request_too() {
    let runtime = tokio::runtime::Handle::current();
    let upstream = Upstream::start(&runtime);
    // Longer than any test: the answer never comes while the caller waits.
    upstream.set_latency(Duration::from_secs(3600));
    let gateway = harness(&one_model("\"{0}\"", ""), &[&upstream]).await;
    let request = gateway
        .http
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "wait"}]}))
        .send();
    let caller = tokio::spawn(request);
    eventually_async("the call upstream", || async {
        match upstream.hits() {
            1 => Ok(()),
            other => Err(format!("{other} hits")),
        }
    })
    .await;
    caller.abort();
    eventually_async("the upstream request cancelled with the caller", || async {
        match upstream.cancelled() {
            1 => Ok(()),
            other => Err(format!("{other} cancelled")),
        }
    })
    .await;
    let events = gateway.events(1).await;
    assert_eq!(
        events[0].error_type.as_deref(),
        Some("cancelled"),
        "{events:?}"
    );
    assert_eq!(events[0].ttft_ms, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_semantic_cache_answers_a_paraphrase_and_nothing_else() {
    use ais_model::time::ManualClock;

    let runtime = tokio::runtime::Handle::current();
    let chat_upstream = Upstream::start(&runtime);
    let embedder = Upstream::start(&runtime);
    let clock = Arc::new(ManualClock::at(SystemClock.now_ms()));
    let config = r#"[gateway]
        [gateway.semantic_cache]
        embedding_model = "embed-small"
        similarity = 0.8
        ttl_secs = 60
        [[gateway.upstreams]]
        model = "gpt-4o"
        provider = "openai"
        urls = ["{0}"]
        [[gateway.upstreams]]
        model = "text-embedding-3-small"
        provider = "openai"
        urls = ["{1}"]
        aliases = ["embed-small"]"#;
    let gateway = harness_clocked(
        config,
        &[&chat_upstream, &embedder],
        TenantLimiter::unlimited(),
        None,
        clock.clone(),
    )
    .await;
    let ask = |prompt: &str, temperature: f64| {
        json!({"model": "gpt-4o", "temperature": temperature,
            "messages": [{"role": "system", "content": "Answer briefly."},
                         {"role": "user", "content": prompt}]})
    };
    let answer_of = |body: &Value| body["choices"][0]["message"]["content"].clone();
    let original = "What is the capital city of France";
    let paraphrase = "what's the capital city of France?";
    let unrelated = "How do I bake sourdough bread";
    let similarity = |left: &str, right: &str| {
        let (a, b) = (embedding_of(left), embedding_of(right));
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (norm(&a) * norm(&b))
    };
    // The test upstream's embeddings make the paraphrase near and the other far.
    assert!(similarity(original, paraphrase) >= 0.8);
    assert!(similarity(original, unrelated) < 0.8);

    let (status, first) = gateway
        .post("/v1/chat/completions", &ask(original, 0.0))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(answer_of(&first), json!(reply(original)));
    assert_eq!((chat_upstream.hits(), embedder.hits()), (1, 1));
    assert_eq!(
        embedder.last_body().map(|body| body["input"].clone()),
        Some(json!(original)),
        "the prompt alone is embedded"
    );

    let (status, again) = gateway
        .post("/v1/chat/completions", &ask(paraphrase, 0.0))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        answer_of(&again),
        json!(reply(original)),
        "the cached answer"
    );
    assert_eq!(chat_upstream.hits(), 1, "a paraphrase does not go upstream");
    assert_eq!(embedder.hits(), 2);

    let (status, other) = gateway
        .post("/v1/chat/completions", &ask(unrelated, 0.0))
        .await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(answer_of(&other), json!(reply(unrelated)));
    assert_eq!(chat_upstream.hits(), 2, "another question goes upstream");

    let (status, sampled) = gateway
        .post("/v1/chat/completions", &ask(original, 0.7))
        .await;
    assert_eq!(status, 200, "{sampled}");
    assert_eq!(chat_upstream.hits(), 3, "a sampled request goes upstream");
    assert_eq!(embedder.hits(), 3, "and is not embedded");

    let opted_out = gateway
        .http
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(KEY)
        .header("cache-control", "no-cache")
        .json(&ask(paraphrase, 0.0))
        .send()
        .await
        .expect("answers");
    assert_eq!(opted_out.status(), 200);
    assert_eq!(
        chat_upstream.hits(),
        4,
        "Cache-Control: no-cache goes upstream"
    );

    // A streamed answer is kept as a stream, and replayed to a paraphrase.
    let streamed = |prompt: &str| {
        json!({"model": "gpt-4o", "temperature": 0, "stream": true,
            "messages": [{"role": "user", "content": prompt}]})
    };
    let live = gateway
        .stream_chat(&streamed("Name the largest planet"))
        .await;
    assert_eq!(chat_upstream.hits(), 5);
    let replayed = gateway
        .stream_chat(&streamed("name the largest planet please"))
        .await;
    assert_eq!(
        chat_upstream.hits(),
        5,
        "the stream is replayed from the cache"
    );
    assert_eq!(replayed, live);

    clock.advance(Duration::from_secs(61));
    let (status, expired) = gateway
        .post("/v1/chat/completions", &ask(paraphrase, 0.0))
        .await;
    assert_eq!(status, 200, "{expired}");
    assert_eq!(answer_of(&expired), json!(reply(paraphrase)));
    assert_eq!(chat_upstream.hits(), 6, "an expired entry goes upstream");

    // Each call is an event, and so is each embedding the cache asked for.
    let events = gateway.events(8 + embedder.hits() as usize).await;
    let embeddings = events
        .iter()
        .filter(|event| event.attribute("purpose") == Some(SEMANTIC_CACHE_PURPOSE))
        .count();
    assert_eq!(embeddings as u64, embedder.hits(), "{events:?}");
    let hits: Vec<&Recorded> = events
        .iter()
        .filter(|event| event.attribute("cache") == Some("semantic_hit"))
        .collect();
    assert_eq!(hits.len(), 2, "{events:?}");
    assert_eq!(
        hits[0].input_tokens,
        Some(usage_of(original).0),
        "the replayed answer's"
    );
    assert_eq!(hits[0].attribute("upstream"), None);
    let similarity_seen: f64 = hits[0]
        .attribute("cache_similarity")
        .and_then(|value| value.parse().ok())
        .expect("the similarity is recorded");
    assert!((similarity_seen - similarity(original, paraphrase)).abs() < 1e-3);
}

/// The embeddings the semantic cache asks for spend the tenant's money: each is an
/// event of the caller's tenant and user, told apart from the caller's own embeddings
/// by `attributes.purpose`; one that fails or times out is an error event, and the
/// call goes upstream all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_semantic_cache_embeddings_are_events_of_the_caller() {
    let runtime = tokio::runtime::Handle::current();
    let chat_upstream = Upstream::start(&runtime);
    let embedder = Upstream::start(&runtime);
    let config = r#"[gateway]
        attempt_timeout_ms = 500
        [gateway.semantic_cache]
        embedding_model = "embed-small"
        ttl_secs = 60
        [[gateway.upstreams]]
        model = "gpt-4o"
        provider = "openai"
        urls = ["{0}"]
        [[gateway.upstreams]]
        model = "text-embedding-3-small"
        provider = "openai"
        urls = ["{1}"]
        aliases = ["embed-small"]"#;
    let gateway = harness(config, &[&chat_upstream, &embedder]).await;
    let ask = |prompt: &str| {
        json!({"model": "gpt-4o", "temperature": 0, "user": "user-5",
            "messages": [{"role": "user", "content": prompt}]})
    };
    let purpose_of = |event: &Recorded| event.attribute("purpose").map(str::to_string);

    let embedded = "How far away is the moon";
    let (status, body) = gateway.post("/v1/chat/completions", &ask(embedded)).await;
    assert_eq!(status, 200, "{body}");
    let events = gateway.events(2).await;
    let (embedding, call) = (&events[0], &events[1]);
    assert_eq!(embedding.tenant, "acme");
    assert_eq!(
        embedding.model, "text-embedding-3-small",
        "the canonical name"
    );
    assert_eq!(embedding.operation.as_deref(), Some("embeddings"));
    assert_eq!(embedding.status, "ok", "{embedding:?}");
    assert_eq!(
        (embedding.input_tokens, embedding.output_tokens),
        (Some(usage_of(embedded).0), None),
        "the upstream's usage block: {embedding:?}"
    );
    assert!(embedding.cost_micros.is_some(), "priced: {embedding:?}");
    assert_eq!(
        embedding.attribute("upstream"),
        Some(embedder.base.as_str())
    );
    assert_eq!(embedding.user_id.as_deref(), Some("user-5"));
    assert_eq!(embedding.key, call.key, "stamped with the caller's key");
    assert_eq!(
        purpose_of(embedding).as_deref(),
        Some(SEMANTIC_CACHE_PURPOSE)
    );
    assert_eq!(call.model, "gpt-4o");
    assert_eq!(call.status, "ok");
    assert_eq!(purpose_of(call), None, "the caller's own call");
    assert_eq!(call.input_tokens, Some(usage_of(embedded).0));

    // A failing embedding model: an error event, and the call goes upstream.
    embedder.set_status(500);
    let failed = "How hot is the sun";
    let (status, body) = gateway.post("/v1/chat/completions", &ask(failed)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], reply(failed));
    // A slow one: the attempt times out, and the call goes upstream.
    embedder.set_status(0);
    embedder.set_latency(Duration::from_secs(3600));
    let slow = "How cold is space";
    let (status, body) = gateway.post("/v1/chat/completions", &ask(slow)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(chat_upstream.hits(), 3);

    let events = gateway.events(6).await;
    let outcomes: Vec<(Option<String>, &str, Option<&str>)> = events[2..]
        .iter()
        .map(|event| (purpose_of(event), event.status, event.error_type.as_deref()))
        .collect();
    let purpose = Some(SEMANTIC_CACHE_PURPOSE.to_string());
    assert_eq!(
        outcomes,
        vec![
            (purpose.clone(), "error", Some("upstream_unavailable")),
            (None, "ok", None),
            (purpose, "error", Some("timeout")),
            (None, "ok", None),
        ],
        "{events:?}"
    );
    for embedding in [&events[2], &events[4]] {
        assert_eq!(embedding.model, "text-embedding-3-small");
        assert_eq!(
            embedding.attribute("upstream"),
            Some(embedder.base.as_str())
        );
        assert_eq!(
            embedding.input_tokens, None,
            "nothing answered: {embedding:?}"
        );
    }
}

/// An upstream that answers one streamed call with exactly the bytes the test sends it,
/// each piece in one write to its socket, and ends the answer when the test's sender is
/// dropped: the test decides which events arrive together and when the next one comes.
async fn scripted_upstream() -> (String, tokio::sync::mpsc::Sender<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (sender, mut pieces) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let _ = socket.set_nodelay(true);
        // The request: its head, then as many body bytes as it says it has.
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let Ok(read) = socket.read(&mut buffer).await else {
                return;
            };
            if read == 0 {
                return;
            }
            request.extend_from_slice(&buffer[..read]);
            let Some(head_end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            if request.len() >= head_end + 4 + length {
                break;
            }
        }
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        while let Some(piece) = pieces.recv().await {
            if socket.write_all(&piece).await.is_err() {
                return;
            }
        }
        let _ = socket.shutdown().await;
    });
    (format!("http://{address}/v1"), sender)
}

fn content_event(text: &str) -> String {
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    format!("data: {chunk}\n\n")
}

/// Reads the caller's stream until what it received ends with `wanted`; everything read.
async fn read_until(response: &mut reqwest::Response, received: &mut String, wanted: &str) {
    tokio::time::timeout(ais_testkit::PATIENCE, async {
        while !received.ends_with(wanted) {
            let chunk = response
                .chunk()
                .await
                .expect("stream reads")
                .unwrap_or_else(|| panic!("the stream ended before {wanted:?}; got {received:?}"));
            received.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{wanted:?} never reached the caller; got {received:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_events_in_one_write_reaches_the_caller_complete_and_in_order() {
    let (base, upstream) = scripted_upstream().await;
    let gateway = harness(&one_model(&format!("\"{base}\""), ""), &[]).await;
    let tokens: Vec<String> = (0..40).map(|index| format!("token {index} ")).collect();
    let events: Vec<String> = tokens.iter().map(|token| content_event(token)).collect();
    let usage = "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":40}}\n\n";
    let done = "data: [DONE]\n\n";
    let call = tokio::spawn(async move {
        gateway
            .stream_chat(&json!({"model": "smart", "stream": true,
                "messages": [{"role": "user", "content": "burst"}]}))
            .await
    });
    // Every event, the usage chunk among them, in one write.
    let burst = [events.concat().as_str(), usage, done].concat();
    upstream.send(burst.into_bytes()).await.expect("upstream");
    drop(upstream);
    let received = call.await.expect("call");
    assert_eq!(
        received,
        [events.concat().as_str(), done].concat(),
        "every event once, in order, the usage chunk the caller did not ask for taken out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_arriving_alone_reaches_the_caller_before_the_next_is_sent() {
    let (base, upstream) = scripted_upstream().await;
    let gateway = harness(&one_model(&format!("\"{base}\""), ""), &[]).await;
    let first = content_event("first");
    let second = content_event("second");
    upstream
        .send(first.clone().into_bytes())
        .await
        .expect("upstream");
    let mut response = gateway
        .http
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "smart", "stream": true,
            "messages": [{"role": "user", "content": "one at a time"}]}))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 200);
    let mut received = String::new();
    // The upstream sends nothing more until the first event has reached the caller.
    read_until(&mut response, &mut received, &first).await;
    assert_eq!(received, first);
    upstream
        .send(second.clone().into_bytes())
        .await
        .expect("upstream");
    read_until(&mut response, &mut received, &second).await;
    assert_eq!(received, [first.as_str(), second.as_str()].concat());
    drop(upstream);
    assert!(
        response.chunk().await.expect("stream reads").is_none(),
        "the stream ends when the upstream's does"
    );
}
