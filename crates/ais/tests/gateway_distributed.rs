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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A config file in `dir`: `extra`, then a gateway whose one model is `upstream`'s.
fn config_file(dir: &std::path::Path, extra: &str, upstream: &Upstream) -> String {
    let config = dir.join("ais.toml");
    std::fs::write(
        &config,
        format!(
            "{extra}\n[gateway]\n[[gateway.upstreams]]\nmodel = \"gpt-4o-mini\"\nprovider = \"openai\"\nurls = [\"{}\"]\n",
            upstream.base
        ),
    )
    .expect("config file");
    config.display().to_string()
}

/// `ais gateway` on the cluster's topic, with `args` and `env` besides: the server
/// and the URL its ready line names for the gateway.
fn start_gateway(cluster: &Cluster, args: &[&str], env: &[(&str, &str)]) -> (Server, String) {
    let mut all: Vec<String> = [
        "gateway",
        "--kafka",
        &cluster.kafka,
        "--topic",
        &cluster.topic,
        "--gateway-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    all.extend(args.iter().map(|arg| arg.to_string()));
    let gateway = Server::start_command(&all, env, None);
    let url = gateway
        .gateway
        .clone()
        .expect("the ready line names the gateway");
    (gateway, url)
}

#[test]
fn calls_through_ais_gateway_reach_the_summary_through_kafka() {
    let Some(cluster) = Cluster::create("gateway", 1) else {
        return;
    };
    let runtime = runtime();
    let upstream = Upstream::start(runtime.handle());
    upstream.set_ttft(Duration::from_millis(40));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config_file(dir.path(), "", &upstream);
    let keys = format!("acme:{KEY}");
    let (gateway, gateway_url) =
        start_gateway(&cluster, &["--config", &config], &[("AIS_API_KEYS", &keys)]);
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

/// `ais gateway` with budgets holds against the same shared holds as `ais query`: a
/// hold taken through the query API leaves the gateway too little room for a large
/// call (429, naming the budget), a small one goes through, and its event, through
/// Kafka and `ais stream`, settles the gateway's hold.
#[test]
fn ais_gateway_reserves_against_the_holds_ais_query_shares() {
    let Some(redis) = test_redis() else {
        return;
    };
    let Some(cluster) = Cluster::create("gateway_budgets", 1) else {
        return;
    };
    let runtime = runtime();
    let upstream = Upstream::start(runtime.handle());
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config_file(
        dir.path(),
        "[[budgets]]\ntenant = \"acme\"\ndaily_tokens = 1000\n",
        &upstream,
    );
    let keys = format!("acme:{KEY}");
    let env = [
        ("AIS_API_KEYS", keys.as_str()),
        ("AIS_CONFIG", config.as_str()),
        ("AIS_REDIS", redis.as_str()),
    ];
    let stream = cluster.stream_with(&env, None);
    let query = cluster.query(&env);
    let (_gateway, gateway_url) =
        start_gateway(&cluster, &["--clickhouse", &cluster.clickhouse], &env);
    let client = client();
    let reserve = |body: Value| -> Value {
        client
            .post(query.url("/v1/budgets/reserve"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .and_then(|response| response.json())
            .expect("ais query answers")
    };
    let held = reserve(json!({"model": "gpt-4o-mini", "tokens": 900, "ttl_secs": 600}));
    assert_eq!(held["allowed"], true, "{held}");
    let call = |max_tokens: u64, prompt: &str| {
        let response = client
            .post(format!("{gateway_url}/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": max_tokens,
                          "messages": [{"role": "user", "content": prompt}]}))
            .send()
            .expect("the gateway answers");
        let status = response.status().as_u16();
        (status, response.json::<Value>().expect("a JSON answer"))
    };
    // 100 tokens are left: a call that may write 200 does not fit.
    let (status, refused) = call(200, "long");
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["type"], "insufficient_quota", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("acme"),
        "names the budget: {refused}"
    );
    assert_eq!(upstream.hits(), 0, "a refused call does not go upstream");
    // A small call fits, goes upstream, and its event settles its hold.
    let (status, answer) = call(10, "hi");
    assert_eq!(status, 200, "{answer}");
    let (input, output) = usage_of("hi");
    let settled_line = "ais_budget_settlements_total{outcome=\"settled\"} 1";
    eventually("the stream to settle the gateway's hold", || {
        let metrics = client
            .get(stream.url("/metrics"))
            .send()
            .and_then(|response| response.text())
            .map_err(|error| error.to_string())?;
        if metrics.lines().any(|line| line == settled_line) {
            Ok(())
        } else {
            Err("not yet settled".to_string())
        }
    });
    // The query server sees the call's real tokens counted, beside the 900 held.
    eventually("the call's tokens in the query server's room", || {
        let room: Value = client
            .post(query.url("/v1/budgets/check"))
            .bearer_auth(KEY)
            .json(&json!({"model": "gpt-4o-mini"}))
            .send()
            .and_then(|response| response.json())
            .map_err(|error| error.to_string())?;
        let left = room["budgets"][0]["remaining_tokens"].as_u64();
        if left == Some(100 - input - output) {
            Ok(())
        } else {
            Err(format!("{room}"))
        }
    });
    drop(runtime);
}
