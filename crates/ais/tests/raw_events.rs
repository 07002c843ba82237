//! Raw events through the real `ais serve`: `GET /v1/events` with every filter and
//! tenant isolation, compaction of final hours while serving, and the Parquet files
//! read back by an independent reader (pyarrow, from the venv `.ci/run` makes; its
//! interpreter is `AIS_PYARROW_PYTHON`).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const KEYS: &str = "acme:key-acme,globex:key-globex";
const HOUR_MS: i64 = 3_600_000;

/// Which sent events a query should return.
type Filter = Box<dyn Fn(&Value) -> bool>;

/// A deterministic v1 event; `n` decides every field, `at` the time.
fn event(n: u64, at: i64) -> Value {
    let model = ["gpt-4o", "claude-3", "llama-3"][(n % 3) as usize];
    let mut event = json!({
        "event_id": format!("ev-{n:05}"),
        "timestamp": at,
        "model": model,
        "latency_ms": (n * 37 % 4_000) as f64 + 0.5,
        "input_tokens": n * 10,
        "output_tokens": n % 500,
        "user_id": format!("user-{}", n % 13),
        "trace_id": format!("trace-{}", n / 3),
        "span_id": format!("span-{n}"),
        "provider": "openai",
    });
    if n.is_multiple_of(7) {
        event["status"] = json!("error");
        event["error_type"] = json!("timeout");
    }
    if n.is_multiple_of(4) {
        event["ttft_ms"] = json!((n % 300) as f64 * 1.25);
        event["cost_usd"] = json!(n as f64 * 0.000_123);
        event["attributes"] = json!({"service.name": format!("svc-{}", n % 2), "zone": "b"});
    }
    if n.is_multiple_of(3) {
        event["reasoning_output_tokens"] = json!(n % 500 / 2);
        event["cache_creation_input_tokens"] = json!(n * 3);
    }
    if n.is_multiple_of(5) {
        event["region"] = json!("eu-west");
        event["session_id"] = json!(format!("s-{}", n % 3));
    }
    event
}

fn events_of(body: &Value) -> Vec<Value> {
    body["events"].as_array().cloned().unwrap_or_default()
}

fn store_facts(client: &reqwest::blocking::Client, server: &Server) -> Value {
    server.readiness_facts(client, "store")
}

/// What `/v1/events` must answer for the events sent: filter, newest first (then by
/// id), as the API renders them.
fn expected(sent: &[Value], keep: impl Fn(&Value) -> bool, limit: usize) -> Vec<String> {
    let mut matching: Vec<&Value> = sent.iter().filter(|event| keep(event)).collect();
    matching.sort_by(|a, b| {
        b["timestamp"]
            .as_i64()
            .cmp(&a["timestamp"].as_i64())
            .then_with(|| b["event_id"].as_str().cmp(&a["event_id"].as_str()))
    });
    matching
        .into_iter()
        .take(limit)
        .map(|event| event["event_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `[[a, b], …]` as string pairs (missing or non-string parts read as "").
fn string_pairs(value: &Value) -> Vec<(String, String)> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|pair| {
            (
                pair[0].as_str().unwrap_or_default().to_string(),
                pair[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A dollar amount in whole micro-dollars, as the pipeline keeps it.
fn micros(usd: &Value) -> Option<i64> {
    usd.as_f64().map(|usd| (usd * 1e6).round() as i64)
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["event_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn events_endpoint_filters_isolates_tenants_and_survives_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        dir.path(),
        &[("AIS_API_KEYS", KEYS)],
        &["--maintenance-interval-ms", "200"],
        None,
    );
    let client = client();
    let now = now_ms();
    // Three past hours (final at once: the current events move the watermark past
    // them), sent in separate requests so each hour gets several batch files.
    let base_hour = (now / HOUR_MS - 3) * HOUR_MS;
    let mut sent = Vec::new();
    for round in 0..6u64 {
        let batch: Vec<Value> = (round * 100..(round + 1) * 100)
            .map(|n| {
                event(
                    n,
                    base_hour + ((n * 2_654_435_761) % (3 * HOUR_MS as u64)) as i64,
                )
            })
            .collect();
        let (status, body) = post_json(&client, &server, Some("key-acme"), &json!(batch));
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["accepted"], 100);
        sent.extend(batch);
        server.wait_caught_up(&client);
    }
    let current: Vec<Value> = (600..620).map(|n| event(n, now - 1_000)).collect();
    let (status, _) = post_json(&client, &server, Some("key-acme"), &json!(current));
    assert_eq!(status, 202);
    sent.extend(current);
    server.wait_caught_up(&client);
    // Another tenant's events with the same trace ids.
    let foreign: Vec<Value> = (0..50)
        .map(|n| event(n, base_hour + 1_000 * n as i64))
        .collect();
    let (status, _) = post_json(&client, &server, Some("key-globex"), &json!(foreign));
    assert_eq!(status, 202);
    server.wait_caught_up(&client);

    let range = format!("from={}&to={}", base_hour, now + 60_000);
    let check = |context: &str| {
        let cases: Vec<(String, Filter, usize)> = vec![
            (String::new(), Box::new(|_: &Value| true), 100),
            ("&limit=1000".to_string(), Box::new(|_: &Value| true), 1000),
            ("&limit=3".to_string(), Box::new(|_: &Value| true), 3),
            (
                "&trace_id=trace-40".to_string(),
                Box::new(|e: &Value| e["trace_id"] == "trace-40"),
                100,
            ),
            (
                "&user_id=user-4&limit=1000".to_string(),
                Box::new(|e: &Value| e["user_id"] == "user-4"),
                1000,
            ),
            (
                "&model=claude-3&status=error&limit=1000".to_string(),
                Box::new(|e: &Value| e["model"] == "claude-3" && e["status"] == "error"),
                1000,
            ),
            (
                "&status=ok&min_latency_ms=3900&limit=1000".to_string(),
                Box::new(|e: &Value| {
                    e["status"] != "error" && e["latency_ms"].as_f64().unwrap_or(0.0) >= 3900.0
                }),
                1000,
            ),
        ];
        for (filters, keep, limit) in cases {
            let (status, body) = get_json(
                &client,
                &server,
                Some("key-acme"),
                &format!("/v1/events?{range}{filters}"),
            );
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                ids(&events_of(&body)),
                expected(&sent, keep, limit),
                "{context}: /v1/events?{filters}"
            );
        }
        // Every field comes back as sent (times as RFC 3339, absent fields absent).
        let (_, body) = get_json(
            &client,
            &server,
            Some("key-acme"),
            &format!("/v1/events?{range}&trace_id=trace-4"),
        );
        let returned: BTreeMap<String, Value> = events_of(&body)
            .into_iter()
            .map(|event| {
                (
                    event["event_id"].as_str().unwrap_or_default().to_string(),
                    event,
                )
            })
            .collect();
        assert_eq!(returned.len(), 3, "{context}: {body}");
        for original in sent.iter().filter(|e| e["trace_id"] == "trace-4") {
            let id = original["event_id"].as_str().unwrap_or_default();
            let got = &returned[id];
            for (field, value) in original.as_object().into_iter().flatten() {
                if field == "timestamp" {
                    let at = value.as_i64().unwrap_or_default();
                    let text = got["timestamp"].as_str().unwrap_or_default();
                    assert_eq!(
                        time::OffsetDateTime::parse(
                            text,
                            &time::format_description::well_known::Rfc3339
                        )
                        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                        .ok(),
                        Some(at),
                        "{context}: timestamp of {id}"
                    );
                } else if field == "cost_usd" {
                    assert_eq!(
                        micros(&got[field]),
                        micros(value),
                        "{context}: cost of {id}"
                    );
                } else {
                    assert_eq!(&got[field], value, "{context}: {field} of {id}");
                }
            }
        }
        // The other tenant sees its own events only, even for the same trace.
        let (_, body) = get_json(
            &client,
            &server,
            Some("key-globex"),
            &format!("/v1/events?{range}&trace_id=trace-4"),
        );
        assert_eq!(
            ids(&events_of(&body)),
            expected(&foreign, |e| e["trace_id"] == "trace-4", 100),
            "{context}: globex's view"
        );
        let (status, _) = get_json(
            &client,
            &server,
            Some("key-globex"),
            &format!("/v1/events?{range}&tenant=acme"),
        );
        assert_eq!(
            status, 403,
            "{context}: a tenant key cannot read another tenant"
        );
    };

    // Compaction runs every 200 ms: wait until each past hour is one file, checking
    // the answers meanwhile (a query during the swap must see the same events).
    // An hour is final once the watermark (now − 2 min lateness) passes its end.
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    let mut checked_while_compacting = 0;
    loop {
        let facts = store_facts(&client, &server);
        assert_eq!(
            facts["raw_events"].as_u64(),
            Some(sent.len() as u64 + 50),
            "{facts}"
        );
        // Three compacted hours, the current hour's file, globex's files (in the first
        // of the past hours, merged with acme's there).
        if facts["raw_files"].as_u64().is_some_and(|files| files <= 4) {
            break;
        }
        check("during compaction");
        checked_while_compacting += 1;
        assert!(
            Instant::now() < deadline,
            "compaction did not finish: {facts}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("checked {checked_while_compacting} times before compaction finished");
    check("after compaction");

    let bad = [
        ("status=maybe", "status"),
        ("limit=0", "limit"),
        ("min_latency_ms=-3", "min_latency_ms"),
    ];
    for (query, named) in bad {
        let (status, body) = get_json(
            &client,
            &server,
            Some("key-acme"),
            &format!("/v1/events?{query}"),
        );
        assert_eq!(status, 400, "{query}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|error| error.starts_with(named)),
            "{query}: {body}"
        );
    }
    let (status, _) = get_json(&client, &server, None, "/v1/events");
    assert_eq!(status, 401);
}

#[test]
fn parquet_files_read_back_with_pyarrow_with_the_documented_schema() {
    let python = match std::env::var("AIS_PYARROW_PYTHON") {
        Ok(python) if std::path::Path::new(&python).exists() => python,
        other => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but AIS_PYARROW_PYTHON is {other:?}: .ci/run makes the pyarrow venv"
            );
            eprintln!("skipping: set AIS_PYARROW_PYTHON to a python with pyarrow");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let client = client();
    let now = now_ms();
    let sent: Vec<Value> = (0..300).map(|n| event(n, now - 1_000 * n as i64)).collect();
    for chunk in sent.chunks(100) {
        let (status, _) = post_json(&client, &server, None, &json!(chunk));
        assert_eq!(status, 202);
    }
    server.wait_caught_up(&client);
    let events_dir = dir.path().join("events");
    let output = std::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/parquet/read_events.py"
        ))
        .arg(&events_dir)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: Value = serde_json::from_slice(&output.stdout).expect("script prints JSON");

    // The schema the README documents, in order, then the Hive partition columns.
    let schema: Vec<(String, String)> = string_pairs(&read["schema"]);
    let documented = [
        ("tenant", "string"),
        ("event_id", "string"),
        ("timestamp", "timestamp[ms, tz=UTC]"),
        ("model", "string"),
        ("response_model", "string"),
        ("provider", "string"),
        ("operation", "string"),
        ("latency_ms", "double"),
        ("ttft_ms", "double"),
        ("input_tokens", "uint64"),
        ("output_tokens", "uint64"),
        ("reasoning_output_tokens", "uint64"),
        ("cache_read_input_tokens", "uint64"),
        ("cache_creation_input_tokens", "uint64"),
        ("cost_usd", "decimal128(18, 6)"),
        ("status", "string"),
        ("error_type", "string"),
        ("user_id", "string"),
        ("session_id", "string"),
        ("trace_id", "string"),
        ("span_id", "string"),
        ("endpoint", "string"),
        ("region", "string"),
        ("attributes", "map<string, string ('attributes')>"),
        ("dt", "string"),
        ("hour", "int32"),
    ];
    let documented: Vec<(String, String)> = documented
        .iter()
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect();
    assert_eq!(schema, documented);

    // The exact events: every field of every row against what was sent.
    let rows = read["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), sent.len());
    let by_id: BTreeMap<&str, &Value> = rows
        .iter()
        .map(|row| (row["event_id"].as_str().unwrap_or_default(), row))
        .collect();
    assert_eq!(by_id.len(), sent.len(), "each event once");
    for original in &sent {
        let id = original["event_id"].as_str().unwrap_or_default();
        let row = by_id[id];
        assert_eq!(row["tenant"], "default");
        assert_eq!(row["timestamp"], original["timestamp"], "{id}");
        for field in [
            "model",
            "latency_ms",
            "input_tokens",
            "output_tokens",
            "reasoning_output_tokens",
            "cache_creation_input_tokens",
            "user_id",
            "trace_id",
            "span_id",
            "provider",
            "error_type",
            "region",
            "session_id",
            "ttft_ms",
        ] {
            let want = original.get(field).cloned().unwrap_or(Value::Null);
            assert_eq!(row[field], want, "{field} of {id}");
        }
        assert_eq!(
            row["status"],
            original.get("status").cloned().unwrap_or(json!("ok"))
        );
        // Sent costs come back exact to the micro-dollar (absent ones are priced).
        if original.get("cost_usd").is_some() {
            let stored = row["cost_usd"]
                .as_str()
                .and_then(|text| text.parse::<f64>().ok());
            assert_eq!(
                stored.map(|usd| (usd * 1e6).round() as i64),
                micros(&original["cost_usd"]),
                "cost of {id}"
            );
        }
        let attributes: BTreeMap<String, String> =
            string_pairs(&row["attributes"]).into_iter().collect();
        let want: BTreeMap<String, String> = original["attributes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_string()))
            .collect();
        assert_eq!(attributes, want, "attributes of {id}");
    }
    server.stop();
}
