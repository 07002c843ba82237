//! Budget check and reserve in the distributed pipeline: two `ais query` servers hold
//! against one set of holds in Redis, so concurrent reservations on both never pass a
//! budget together; an event through `ais ingest`, Kafka and `ais stream` settles its
//! hold, and its real cost counts in its place, on every server. Needs the shared test
//! broker, ClickHouse and Redis (`AIS_TEST_KAFKA`, `AIS_TEST_CLICKHOUSE`,
//! `AIS_TEST_REDIS`); without them it says why and passes, except under `CI=true`.

mod common;

use common::cluster::Cluster;
use common::*;
use serde_json::{json, Value};

const KEYS: &str = "acme:acme-key,globex:globex-key";
const BUDGET: &str = "[[budgets]]\ntenant = \"acme\"\ndaily_usd = 1.0\n";

fn counter(client: &reqwest::blocking::Client, server: &Server, line: &str) -> Option<u64> {
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .ok()?;
    metrics
        .lines()
        .find_map(|found| found.strip_prefix(line))
        .and_then(|value| value.trim().parse::<u64>().ok())
}

#[test]
fn servers_share_the_holds_and_the_stream_settles_them() {
    let Some(redis) = test_redis() else {
        return;
    };
    let Some(cluster) = Cluster::create("reserve", 1) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    std::fs::write(&config, BUDGET).expect("config");
    let config = config.display().to_string();
    let env = [
        ("AIS_API_KEYS", KEYS),
        ("AIS_CONFIG", config.as_str()),
        ("AIS_REDIS", redis.as_str()),
    ];
    let _stream = cluster.stream_with(&env, None);
    let stream_metrics = _stream.url("/metrics");
    let ingest = cluster.ingest(&[("AIS_API_KEYS", KEYS)]);
    let servers = [cluster.query(&env), cluster.query(&env)];
    let client = client();

    // 64 concurrent reservations of $0.10 against $1.00, half on each server: ten fit.
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..64)
            .map(|n| {
                let server = &servers[n % 2];
                scope.spawn(move || {
                    post_api(
                        &common::client(),
                        server,
                        "acme-key",
                        "/v1/budgets/reserve",
                        &json!({"model": "m", "cost_usd": 0.10, "ttl_secs": 600}),
                    )
                })
            })
            .collect();
        calls
            .into_iter()
            .map(|call| call.join().expect("a reservation"))
            .collect()
    });
    let granted: Vec<&str> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body
        })
        .filter(|body| body["allowed"] == true)
        .map(|body| body["reservation_id"].as_str().expect("an id"))
        .collect();
    assert_eq!(granted.len(), 10, "{answers:?}");
    let mut ids = granted.clone();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10, "each hold its own id");
    for server in &servers {
        assert!(
            remaining_usd(&client, server, "acme-key").abs() < 1e-9,
            "every server sees all ten holds"
        );
    }
    // Another tenant's call is not limited by acme's budget.
    let (status, body) = post_api(
        &client,
        &servers[0],
        "globex-key",
        "/v1/budgets/reserve",
        &json!({"model": "m", "cost_usd": 5.0}),
    );
    assert_eq!(
        (status, body["allowed"].clone()),
        (200, json!(true)),
        "{body}"
    );

    // One call's event settles its hold: its real cost ($0.04) counts instead of the
    // $0.10 held, on both servers, once its batch has landed. An id that names no hold,
    // or names acme's from another tenant, settles nothing.
    let events = json!([
        {"event_id": "settles", "timestamp": now_ms(), "model": "m", "latency_ms": 10,
         "cost_usd": 0.04, "reservation_id": granted[0]},
        {"event_id": "names-nothing", "timestamp": now_ms(), "model": "m", "latency_ms": 10,
         "cost_usd": 0.0, "reservation_id": "res-made-up"},
    ]);
    let (status, body) = post_json(&client, &ingest, Some("acme-key"), &events);
    assert_eq!(status, 202, "{body}");
    let foreign = json!([{"event_id": "foreign", "timestamp": now_ms(), "model": "m",
        "latency_ms": 10, "cost_usd": 0.0, "reservation_id": granted[1]}]);
    let (status, body) = post_json(&client, &ingest, Some("globex-key"), &foreign);
    assert_eq!(status, 202, "{body}");
    let expected = 1.0 - 0.9 - 0.04;
    for server in &servers {
        eventually("the settled hold to count as its real cost", || {
            let left = remaining_usd(&client, server, "acme-key");
            // Never more room than the holds and spend leave: a call counted zero
            // times would show $0.10 here.
            assert!(
                left <= expected + 1e-9,
                "${left} left: spend went uncounted"
            );
            if (left - expected).abs() < 1e-9 {
                Ok(())
            } else {
                Err(format!("${left} left"))
            }
        });
    }
    let settled = eventually("the stream to count its settlements", || {
        let read = |outcome: &str| {
            counter(
                &client,
                &_stream,
                &format!("ais_budget_settlements_total{{outcome=\"{outcome}\"}} "),
            )
        };
        match (read("settled"), read("unknown")) {
            (Some(settled), Some(unknown)) if settled + unknown >= 3 => Ok((settled, unknown)),
            other => Err(format!("{other:?} at {stream_metrics}")),
        }
    });
    assert_eq!(
        settled,
        (1, 2),
        "one hold settled; a made-up id and a foreign one not"
    );
    // The foreign event left acme's other hold in place.
    assert!((remaining_usd(&client, &servers[1], "acme-key") - expected).abs() < 1e-9);
}

#[test]
fn a_query_server_with_budgets_and_no_redis_says_how_to_hold() {
    let Some(cluster) = Cluster::create("reserve_off", 1) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    std::fs::write(&config, BUDGET).expect("config");
    let config = config.display().to_string();
    let server = cluster.query(&[("AIS_API_KEYS", KEYS), ("AIS_CONFIG", config.as_str())]);
    let (status, body) = post_api(
        &client(),
        &server,
        "acme-key",
        "/v1/budgets/reserve",
        &json!({"model": "m", "cost_usd": 0.10}),
    );
    assert_eq!(status, 501, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("--redis"),
        "{body}"
    );
}
