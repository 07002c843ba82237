//! `ais gateway` as its own process in the distributed pipeline: calls through it reach
//! a test upstream, and their events go through Kafka (`ais stream` into ClickHouse) to
//! the summary `ais query` serves. Needs the shared test broker and ClickHouse
//! (`AIS_TEST_KAFKA`, `AIS_TEST_CLICKHOUSE`); without them it says why and passes,
//! except under `CI=true`.

mod common;

use std::time::Duration;

use ais_testkit::upstream::{reply, usage_of, Upstream};
use common::cluster::Cluster;
use common::*;
use serde_json::{json, Value};

const KEY: &str = "gateway-distributed-key";

#[test]
fn calls_through_ais_gateway_reach_the_summary_through_kafka() {
    let Some(cluster) = Cluster::create("gateway", 1) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let upstream = Upstream::start(runtime.handle());
    upstream.set_ttft(Duration::from_millis(40));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [gateway]
            [[gateway.upstreams]]
            model = "gpt-4o-mini"
            provider = "openai"
            urls = ["{}"]
            "#,
            upstream.base
        ),
    )
    .expect("config file");
    let keys = format!("acme:{KEY}");
    let args: Vec<String> = [
        "gateway",
        "--kafka",
        &cluster.kafka,
        "--topic",
        &cluster.topic,
        "--gateway-listen",
        "127.0.0.1:0",
        "--config",
        &config.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let gateway = Server::start_command(&args, &[("AIS_API_KEYS", &keys)], None);
    let gateway_url = gateway
        .gateway
        .clone()
        .expect("the ready line names the gateway");
    let _stream = cluster.stream(None);
    let query = cluster.query(&[("AIS_API_KEYS", &keys)]);

    let client = client();
    let prompts = ["one", "two words", "three more words"];
    for prompt in prompts {
        let answer: Value = client
            .post(format!("{gateway_url}/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(
                &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}),
            )
            .send()
            .and_then(|response| response.json())
            .expect("the gateway answers");
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            reply(prompt),
            "{answer}"
        );
    }
    let streamed = client
        .post(format!("{gateway_url}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "stream"}]}))
        .send()
        .and_then(|response| response.text())
        .expect("the gateway streams");
    assert!(streamed.ends_with("data: [DONE]\n\n"), "{streamed}");

    let input: u64 = prompts
        .iter()
        .chain(["stream"].iter())
        .map(|p| usage_of(p).0)
        .sum();
    let output: u64 = prompts
        .iter()
        .chain(["stream"].iter())
        .map(|p| usage_of(p).1)
        .sum();
    let summary = eventually("the four calls in the summary of ais query", || {
        let (status, summary) = get_json(&client, &query, Some(KEY), "/v1/query/summary");
        if status == 200 && model_entry(&summary, "gpt-4o-mini")["requests"] == 4 {
            Ok(summary)
        } else {
            Err(format!("{status}: {summary}"))
        }
    });
    let entry = model_entry(&summary, "gpt-4o-mini");
    assert_eq!(entry["errors"], 0, "{entry}");
    assert_eq!(entry["input_tokens"], input, "{entry}");
    assert_eq!(entry["output_tokens"], output, "{entry}");
    assert!(
        entry["ttft_ms"]["p50"]
            .as_f64()
            .is_some_and(|ttft| ttft >= 40.0),
        "the stream's TTFT: {entry}"
    );
    let metrics = client
        .get(gateway.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .expect("metrics");
    assert!(
        metrics.contains("ais_gateway_events_total{outcome=\"recorded\"} 4"),
        "{metrics}"
    );
    drop(runtime);
}
