//! The distributed pipeline end to end over real servers: events into `ais ingest`,
//! through Kafka (Tansu) to two `ais stream` processes, into ClickHouse, out of
//! `ais query`. Its answers must equal the exact aggregates computed here and what
//! `ais serve` answers for the same events (all but `late_events`, which depends on
//! partitioning and timing).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{send_all, Cluster};
use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const MODELS: &[&str] = &["gpt-4o", "claude-sonnet", "llama-70b", "mistral-large"];
const TENANTS: &[(&str, &str)] = &[("acme", "key-acme"), ("globex", "key-globex")];
const KEYS: &str = "acme:key-acme,globex:key-globex";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    requests: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
}

/// `count` events of one tenant over the last 40 minutes (at most 3,000: 800 ms
/// apart), with client ids.
fn make_events(rng: &mut SmallRng, tenant: &str, count: usize, now: i64) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let failed = rng.random_bool(0.05);
            let mut event = json!({
                "event_id": format!("{tenant}-{i}"),
                // Distinct times, so "newest first" has one order.
                "timestamp": now - 2_400_000 + i as i64 * 800 + rng.random_range(0..800i64),
                "model": MODELS[rng.random_range(0..MODELS.len())],
                "latency_ms": rng.random_range(5.0..9_000.0),
                "ttft_ms": rng.random_range(1.0..800.0),
                "input_tokens": rng.random_range(0..4_000u64),
                "output_tokens": rng.random_range(0..1_500u64),
                "cost_usd": rng.random_range(0..3_000_000u64) as f64 / 1e6,
                "user_id": format!("user-{}", rng.random_range(0..40)),
                "status": if failed { "error" } else { "ok" },
            });
            if failed {
                event["error_type"] = json!("rate_limited");
            }
            event
        })
        .collect()
}

/// Usage per value of the event field `field`, from what was sent.
fn usage_tally(events: &[Value], field: &str) -> UsageTally {
    let mut tally = UsageTally::new();
    for event in events {
        let entry = tally
            .entry(event[field].as_str().map(str::to_string))
            .or_default();
        entry.0 += 1;
        entry.1 += event["input_tokens"].as_u64().unwrap_or(0);
        entry.2 += (event["cost_usd"].as_f64().unwrap_or(0.0) * 1e6).round() as u64;
    }
    tally
}

fn expected_totals(events: &[Value]) -> BTreeMap<String, Totals> {
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    for event in events {
        let entry = totals
            .entry(event["model"].as_str().unwrap_or_default().to_string())
            .or_default();
        entry.requests += 1;
        entry.errors += u64::from(event["status"] == "error");
        entry.input_tokens += event["input_tokens"].as_u64().unwrap_or(0);
        entry.output_tokens += event["output_tokens"].as_u64().unwrap_or(0);
        entry.cost_micros += (event["cost_usd"].as_f64().unwrap_or(0.0) * 1e6).round() as u64;
    }
    totals
}

fn summary_totals(summary: &Value) -> BTreeMap<String, Totals> {
    summary["models"]
        .as_array()
        .map(|models| {
            models
                .iter()
                .map(|model| {
                    let number = |field: &str| model[field].as_u64().unwrap_or(0);
                    (
                        model["model"].as_str().unwrap_or_default().to_string(),
                        Totals {
                            requests: number("requests"),
                            errors: number("errors"),
                            input_tokens: number("input_tokens"),
                            output_tokens: number("output_tokens"),
                            cost_micros: (model["cost_usd"].as_f64().unwrap_or(0.0) * 1e6).round()
                                as u64,
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The summary with `late_events` removed (it depends on partitioning and timing).
fn without_late_events(mut summary: Value) -> Value {
    if let Some(models) = summary["models"].as_array_mut() {
        for model in models {
            if let Some(fields) = model.as_object_mut() {
                fields.remove("late_events");
            }
        }
    }
    summary
}

#[test]
fn ais_query_equals_the_exact_aggregates_and_ais_serve_for_the_same_events() {
    let Some(cluster) = Cluster::create("e2e", 4) else {
        return;
    };
    let env = [("AIS_API_KEYS", KEYS)];
    let ingest = cluster.ingest(&env);
    let streams = [cluster.stream(None), cluster.stream(None)];
    let query = cluster.query(&env);
    let dir = tempfile::tempdir().expect("temp dir");
    let serve = Server::start(dir.path(), &env);
    let client = client();

    let mut rng = SmallRng::seed_from_u64(7);
    let now = now_ms();
    let mut expected: BTreeMap<&str, BTreeMap<String, Totals>> = BTreeMap::new();
    let mut sent: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (tenant, key) in TENANTS {
        let events = make_events(&mut rng, tenant, 3_000, now);
        expected.insert(tenant, expected_totals(&events));
        sent.insert(tenant, events.clone());
        for server in [&ingest, &serve] {
            send_all(&client, server, Some(key), &events, 500);
            // A client retry of requests already acknowledged: deduplicated by id.
            send_all(&client, server, Some(key), &events[..700], 350);
        }
    }

    // Both pipelines have everything once their totals reach the expected requests.
    serve.wait_caught_up(&client);
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    for (tenant, key) in TENANTS {
        let want: u64 = expected[tenant]
            .values()
            .map(|totals| totals.requests)
            .sum();
        loop {
            let (status, summary) = get_json(&client, &query, Some(key), "/v1/query/summary");
            assert_eq!(status, 200, "{summary}");
            let got: u64 = summary_totals(&summary).values().map(|t| t.requests).sum();
            assert!(
                got <= want,
                "{tenant}: {got} requests counted, only {want} were sent"
            );
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{tenant}: ais query shows {got} of {want} requests after {:?}",
                ais_testkit::PATIENCE
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    // The same range for both, so "the last hour" cannot move between the two calls.
    let to = minute_floor(now_ms()) + 60_000;
    let from = to - 3_600_000;
    for (tenant, key) in TENANTS {
        let path = format!("/v1/query/summary?from={from}&to={to}");
        let (_, distributed) = get_json(&client, &query, Some(key), &path);
        let (_, single) = get_json(&client, &serve, Some(key), &path);
        assert_eq!(
            summary_totals(&distributed),
            expected[tenant],
            "{tenant}: exact totals"
        );
        assert_eq!(
            without_late_events(distributed),
            without_late_events(single),
            "{tenant}: ais query and ais serve differ"
        );
        for metric in [
            "requests",
            "error_rate",
            "latency_p99",
            "ttft_p50",
            "cost_usd",
            "unique_users",
        ] {
            let path = format!("/v1/query/timeseries?metric={metric}&from={from}&to={to}&step=300");
            let (status, distributed) = get_json(&client, &query, Some(key), &path);
            assert_eq!(status, 200, "{distributed}");
            let (_, single) = get_json(&client, &serve, Some(key), &path);
            assert_eq!(
                distributed, single,
                "{tenant}: timeseries of {metric} differ"
            );
        }
        // Raw events: the same newest events, each once.
        let path = format!("/v1/events?from={from}&to={to}&model=gpt-4o&limit=200");
        let (status, distributed) = get_json(&client, &query, Some(key), &path);
        assert_eq!(status, 200, "{distributed}");
        let (_, single) = get_json(&client, &serve, Some(key), &path);
        let ids = |body: &Value| -> Vec<String> {
            body["events"]
                .as_array()
                .map(|events| {
                    events
                        .iter()
                        .map(|event| event["event_id"].as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            ids(&distributed).len(),
            200,
            "{tenant}: a full page of raw events"
        );
        assert_eq!(
            ids(&distributed),
            ids(&single),
            "{tenant}: raw events differ"
        );
    }

    // The usage ledger: per user and per model, exact, on both engines.
    for (tenant, key) in TENANTS {
        for server in [&query, &serve] {
            for field in ["user_id", "model"] {
                assert_usage(
                    &client,
                    server,
                    Some(key),
                    field,
                    (now - 2_400_000, now),
                    &usage_tally(&sent[tenant], field),
                );
            }
        }
    }

    // Without a budget configured, the query server allows a reservation and says why,
    // as `ais serve` does (with budgets, holds are shared in Redis:
    // `reserve_distributed.rs`).
    let allowed = send_request(
        &client,
        &query,
        ApiRequest {
            key: Some(TENANTS[0].1),
            content_type: Some("application/json"),
            ..ApiRequest::post(
                "/v1/budgets/reserve",
                br#"{"model":"m","tokens":1}"#.to_vec(),
            )
        },
    );
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let answer = allowed.json();
    assert_eq!(answer["allowed"], true, "{answer}");
    assert_eq!(answer["reservation_id"], Value::Null, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("no budget applies")),
        "{answer}"
    );

    // Tenant isolation holds in the distributed query API too.
    let (_, acme) = get_json(&client, &query, Some("key-acme"), "/v1/query/summary");
    let (_, globex) = get_json(&client, &query, Some("key-globex"), "/v1/query/summary");
    assert_ne!(summary_totals(&acme), summary_totals(&globex));

    // Every stream process reports its lag, and those owning partitions report each
    // one's (which member holds which partition is the group's choice at any moment).
    let mut partitions_reported = std::collections::BTreeSet::new();
    for stream in &streams {
        let response = client.get(stream.url("/metrics")).send().expect("metrics");
        assert_eq!(response.status().as_u16(), 200);
        let metrics_text = response.text().unwrap_or_default();
        assert!(
            metrics_text.contains("\nais_stream_lag_records "),
            "the lag is exported: {metrics_text}"
        );
        for line in metrics_text.lines() {
            if let Some(rest) = line.strip_prefix("ais_stream_partition_lag_records{partition=\"") {
                partitions_reported.insert(rest.split('"').next().unwrap_or_default().to_string());
            }
        }
    }
    assert!(
        !partitions_reported.is_empty(),
        "per-partition lag is exported by the members that own partitions"
    );
    drop(streams);
}
