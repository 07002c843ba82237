//! Events in over real HTTP, rollups out: exact counts and sums, out-of-order and late
//! events, every body form, tenant isolation.

mod common;

use std::collections::BTreeMap;
use std::io::Write;

use common::*;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Default, Debug, PartialEq)]
struct Expected {
    requests: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_input_tokens: u64,
    cost_micros: u64,
    users: std::collections::BTreeSet<String>,
}

const MODELS: &[&str] = &["alpha-model", "beta-model", "gamma-model"];

/// Random events spread over the last `minutes` minutes, with exact expectations.
fn make_events(
    rng: &mut SmallRng,
    count: usize,
    now: i64,
    max_age_ms: i64,
    id_prefix: &str,
    expected: &mut BTreeMap<String, Expected>,
    per_minute: &mut BTreeMap<(String, i64), u64>,
) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let model = MODELS[rng.random_range(0..MODELS.len())];
            let timestamp = now - rng.random_range(0..max_age_ms);
            let input = rng.random_range(0..5_000u64);
            let output = rng.random_range(0..2_000u64);
            let cache = rng.random_range(0..=input);
            let cost_micros = rng.random_range(0..5_000_000u64);
            let failed = rng.random_bool(0.1);
            let user = format!("u{}", rng.random_range(0..50));
            let entry = expected.entry(model.to_string()).or_default();
            entry.requests += 1;
            entry.errors += u64::from(failed);
            entry.input_tokens += input;
            entry.output_tokens += output;
            entry.cache_read_input_tokens += cache;
            entry.cost_micros += cost_micros;
            entry.users.insert(user.clone());
            *per_minute
                .entry((model.to_string(), minute_floor(timestamp)))
                .or_default() += 1;
            let mut event = json!({
                "event_id": format!("{id_prefix}-{i}"),
                "timestamp": timestamp,
                "model": model,
                "latency_ms": rng.random_range(1.0..10_000.0),
                "ttft_ms": rng.random_range(1.0..500.0),
                "input_tokens": input,
                "output_tokens": output,
                "cache_read_input_tokens": cache,
                "cost_usd": cost_micros as f64 / 1e6,
                "user_id": user,
                "status": if failed { "error" } else { "ok" },
            });
            if failed {
                event["error_type"] = json!("timeout");
            }
            event
        })
        .collect()
}

fn assert_summary_matches(summary: &Value, expected: &BTreeMap<String, Expected>) {
    let models = summary["models"].as_array().expect("models array");
    assert_eq!(models.len(), expected.len(), "summary: {summary}");
    for (model, want) in expected {
        let got = model_entry(summary, model);
        assert_eq!(got["requests"], want.requests, "{model} requests");
        assert_eq!(got["errors"], want.errors, "{model} errors");
        assert_eq!(
            got["input_tokens"], want.input_tokens,
            "{model} input tokens"
        );
        assert_eq!(
            got["output_tokens"], want.output_tokens,
            "{model} output tokens"
        );
        assert_eq!(
            got["cache_read_input_tokens"], want.cache_read_input_tokens,
            "{model} cache-read tokens"
        );
        let cost_micros =
            (got["cost_usd"].as_f64().expect("cost is a number") * 1e6).round() as u64;
        assert_eq!(cost_micros, want.cost_micros, "{model} cost");
        // Few users: the HyperLogLog is exact or within 1 at this size.
        let users = got["unique_users"].as_u64().expect("unique users");
        assert!(
            users.abs_diff(want.users.len() as u64) <= 1,
            "{model} unique users {users} vs {}",
            want.users.len()
        );
        for quantile in ["p50", "p95", "p99"] {
            assert!(
                got["latency_ms"][quantile].as_f64().is_some(),
                "{model} latency {quantile}"
            );
        }
    }
}

#[test]
fn events_in_every_body_form_come_out_exact_including_out_of_order_and_late() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let client = client();
    let mut rng = SmallRng::seed_from_u64(11);
    let now = now_ms();
    let mut expected = BTreeMap::new();
    let mut per_minute = BTreeMap::new();

    // Current traffic first: the watermark moves to about now − 2 min.
    let mut events = make_events(
        &mut rng,
        1_500,
        now,
        90_000,
        "fresh",
        &mut expected,
        &mut per_minute,
    );
    events.shuffle(&mut rng);
    let (status, body) = post_json(
        &client,
        &server,
        None,
        &Value::Array(events[..500].to_vec()),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 500);
    assert_eq!(body["rejected"], json!([]));

    // The same kind of events as NDJSON, gzip and zstd.
    let ndjson: String = events[500..900].iter().map(|e| format!("{e}\n")).collect();
    let (status, body) = post_raw(
        &client,
        &server,
        None,
        "application/x-ndjson",
        None,
        ndjson.into_bytes(),
    );
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(400)),
        "{body}"
    );

    let array = Value::Array(events[900..1_200].to_vec()).to_string();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(array.as_bytes()).expect("gzip");
    let gzip = gzip.finish().expect("gzip");
    let (status, body) = post_raw(
        &client,
        &server,
        None,
        "application/json",
        Some("gzip"),
        gzip,
    );
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(300)),
        "{body}"
    );

    let array = Value::Array(events[1_200..].to_vec()).to_string();
    let zstd = zstd::encode_all(array.as_bytes(), 3).expect("zstd");
    let (status, body) = post_raw(
        &client,
        &server,
        None,
        "application/json",
        Some("zstd"),
        zstd,
    );
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(300)),
        "{body}"
    );

    // Single objects, one at a time.
    for event in make_events(
        &mut rng,
        5,
        now,
        60_000,
        "single",
        &mut expected,
        &mut per_minute,
    ) {
        let (status, body) = post_json(&client, &server, None, &event);
        assert_eq!(
            (status, body["accepted"].as_u64()),
            (202, Some(1)),
            "{body}"
        );
    }
    server.wait_caught_up(&client);

    // Late events: 10 to 20 minutes old, for windows the watermark has passed.
    let mut late_expected = BTreeMap::new();
    let late = make_events(
        &mut rng,
        200,
        now - 600_000,
        600_000,
        "late",
        &mut late_expected,
        &mut per_minute,
    );
    let (status, body) = post_json(&client, &server, None, &Value::Array(late));
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(200)),
        "{body}"
    );
    for (model, extra) in late_expected {
        let entry = expected.entry(model).or_default();
        entry.requests += extra.requests;
        entry.errors += extra.errors;
        entry.input_tokens += extra.input_tokens;
        entry.output_tokens += extra.output_tokens;
        entry.cache_read_input_tokens += extra.cache_read_input_tokens;
        entry.cost_micros += extra.cost_micros;
        entry.users.extend(extra.users);
    }

    // Retries of already-acknowledged events (same event_id) count once.
    let (status, _) = post_json(
        &client,
        &server,
        None,
        &Value::Array(events[..100].to_vec()),
    );
    assert_eq!(status, 202);
    server.wait_caught_up(&client);

    let from = minute_floor(now) - 30 * 60_000;
    let to = minute_floor(now) + 60_000;
    let (status, summary) = get_json(
        &client,
        &server,
        None,
        &format!("/v1/query/summary?from={from}&to={to}"),
    );
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["from"], from);
    assert_eq!(summary["to"], to);
    assert_summary_matches(&summary, &expected);
    let late_total: u64 = MODELS
        .iter()
        .map(|model| {
            model_entry(&summary, model)["late_events"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(
        late_total, 200,
        "every late event is counted as a correction"
    );

    // Per-minute request counts in the timeseries equal the events' minutes.
    let (status, series) = get_json(
        &client,
        &server,
        None,
        &format!("/v1/query/timeseries?metric=requests&from={from}&to={to}&step=60"),
    );
    assert_eq!(status, 200, "{series}");
    for entry in series["series"].as_array().expect("series") {
        let model = entry["model"].as_str().expect("model");
        for point in entry["points"].as_array().expect("points") {
            let t = point[0].as_i64().expect("time");
            let want = per_minute
                .get(&(model.to_string(), t))
                .copied()
                .unwrap_or(0);
            assert_eq!(point[1].as_f64(), Some(want as f64), "{model} at {t}");
        }
    }
    // A model filter narrows both endpoints.
    let (_, only) = get_json(
        &client,
        &server,
        None,
        &format!("/v1/query/summary?from={from}&to={to}&model=beta-model"),
    );
    assert_eq!(only["models"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        only["models"][0]["requests"],
        expected["beta-model"].requests
    );

    // A clean restart keeps everything, and nothing is counted twice.
    let exit = server.stop();
    assert!(exit.success(), "graceful exit: {exit:?}");
    let server = Server::start(dir.path(), &[]);
    server.wait_caught_up(&client);
    let (_, summary) = get_json(
        &client,
        &server,
        None,
        &format!("/v1/query/summary?from={from}&to={to}"),
    );
    assert_summary_matches(&summary, &expected);
}

#[test]
fn a_tenant_sees_only_its_own_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = "acme:key-a,globex:key-b,globex:key-b-read:read,ops:key-admin:admin";
    let server = Server::start(dir.path(), &[("AIS_API_KEYS", keys)]);
    let client = client();
    let now = now_ms();
    let event = |model: &str, id: &str| json!({"event_id": id, "timestamp": now, "model": model, "latency_ms": 10, "input_tokens": 5});
    let (status, _) = post_json(
        &client,
        &server,
        Some("key-a"),
        &json!([event("acme-model", "1"), event("acme-model", "2")]),
    );
    assert_eq!(status, 202);
    let (status, _) = post_json(
        &client,
        &server,
        Some("key-b"),
        &json!([event("globex-model", "1")]),
    );
    assert_eq!(status, 202);
    server.wait_caught_up(&client);

    let (_, a) = get_json(&client, &server, Some("key-a"), "/v1/query/summary");
    assert_eq!(a["models"].as_array().map(Vec::len), Some(1), "{a}");
    assert_eq!(a["models"][0]["model"], "acme-model");
    assert_eq!(a["models"][0]["requests"], 2);
    let (_, b) = get_json(&client, &server, Some("key-b-read"), "/v1/query/summary");
    assert_eq!(b["models"].as_array().map(Vec::len), Some(1), "{b}");
    assert_eq!(b["models"][0]["model"], "globex-model");
    let (_, b_series) = get_json(
        &client,
        &server,
        Some("key-b"),
        "/v1/query/timeseries?metric=requests",
    );
    assert!(b_series["series"]
        .as_array()
        .expect("series")
        .iter()
        .all(|s| s["model"] == "globex-model"));

    // Asking for another tenant needs an admin key.
    let (status, body) = get_json(
        &client,
        &server,
        Some("key-b"),
        "/v1/query/summary?tenant=acme",
    );
    assert_eq!(status, 403, "{body}");
    let (status, admin) = get_json(
        &client,
        &server,
        Some("key-admin"),
        "/v1/query/summary?tenant=acme",
    );
    assert_eq!(status, 200);
    assert_eq!(admin["models"][0]["requests"], 2);
    // Same event ids in two tenants are two events: dedup is per tenant.
    let (_, b) = get_json(&client, &server, Some("key-b"), "/v1/query/summary");
    assert_eq!(b["models"][0]["requests"], 1);
    // A read key cannot ingest.
    let (status, body) = post_json(
        &client,
        &server,
        Some("key-b-read"),
        &json!([event("x", "9")]),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("may not ingest"),
        "{body}"
    );
}
