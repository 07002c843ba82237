//! Every refusal of the ingest and query API, with its status and a message that names
//! what is wrong.

mod common;

use common::*;
use serde_json::{json, Value};

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("error body: {body}"))
}

#[test]
fn ingest_refusals_carry_status_and_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[("AIS_API_KEYS", "acme:good-key")]);
    let client = client();
    let now = now_ms();
    let event = json!({"timestamp": now, "model": "m", "latency_ms": 1});

    // 401: no key, unknown key.
    let (status, body) = post_json(&client, &server, None, &event);
    assert_eq!(status, 401);
    assert!(error_of(&body).contains("missing API key"), "{body}");
    let (status, body) = post_json(&client, &server, Some("wrong"), &event);
    assert_eq!(status, 401);
    assert!(error_of(&body).contains("unknown API key"), "{body}");

    // 415: media type and encoding.
    let (status, body) = post_raw(
        &client,
        &server,
        Some("good-key"),
        "text/plain",
        None,
        event.to_string().into_bytes(),
    );
    assert_eq!(status, 415);
    assert!(error_of(&body).contains("text/plain"), "{body}");
    let (status, body) = post_raw(
        &client,
        &server,
        Some("good-key"),
        "application/json",
        Some("br"),
        event.to_string().into_bytes(),
    );
    assert_eq!(status, 415);
    assert!(error_of(&body).contains("br"), "{body}");

    // 400: an array that does not parse says where.
    let (status, body) = post_raw(
        &client,
        &server,
        Some("good-key"),
        "application/json",
        None,
        b"[{\"model\": \"m\",\n  \"latency_ms\": }]".to_vec(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("line 2"), "{body}");
    let (status, body) = post_raw(
        &client,
        &server,
        Some("good-key"),
        "application/json",
        None,
        b"42".to_vec(),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_raw(
        &client,
        &server,
        Some("good-key"),
        "application/json",
        Some("gzip"),
        b"not gzip".to_vec(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("gzip"), "{body}");

    // 413: too many events, too many bytes.
    let many = Value::Array(vec![event.clone(); 10_001]);
    let (status, body) = post_json(&client, &server, Some("good-key"), &many);
    assert_eq!(status, 413, "{body}");
    assert!(error_of(&body).contains("10000"), "{body}");
    let huge = vec![b' '; 16 * 1024 * 1024 + 1];
    let (status, body) = post_raw(
        &client,
        &server,
        Some("good-key"),
        "application/json",
        None,
        huge,
    );
    assert_eq!(status, 413, "{body}");
    // A small zstd body that inflates past the limit is refused the same way.
    let bomb = zstd::encode_all(&vec![b' '; 20 * 1024 * 1024][..], 19).expect("zstd");
    assert!(bomb.len() < 64 * 1024);
    let (status, body) = post_raw(
        &client,
        &server,
        Some("good-key"),
        "application/json",
        Some("zstd"),
        bomb,
    );
    assert_eq!(status, 413, "{body}");

    // Per-event rejections: the rest of the body goes through.
    let mixed = json!([
        event,
        {"timestamp": now, "model": "m", "latency_ms": "slow"},
        {"timestamp": now, "latency_ms": 1},
        {"timestamp": now + 3_600_000, "model": "m", "latency_ms": 1},
        {"timestamp": now, "model": "m", "latency_ms": 1, "input_tokens": -3},
        {"timestamp": now, "model": "m", "latency_ms": 1, "status": "meh"},
        {"timestamp": now, "model": "m", "latency_ms": 1, "attributes": {"k": 1}},
        "not an object"
    ]);
    let (status, body) = post_json(&client, &server, Some("good-key"), &mixed);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    let rejected = body["rejected"].as_array().expect("rejected list");
    let by_index: Vec<(u64, String)> = rejected
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap_or(99),
                r["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let indexes: Vec<u64> = by_index.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, vec![1, 2, 3, 4, 5, 6, 7], "{body}");
    for (index, field) in [
        (1, "latency_ms"),
        (2, "model"),
        (3, "timestamp"),
        (4, "input_tokens"),
        (5, "status"),
        (6, "attributes"),
    ] {
        let message = &by_index[index - 1].1;
        assert!(
            message.starts_with(field),
            "rejection {index} should name {field}: {message}"
        );
    }

    // NDJSON: one bad line rejects only itself, index = line number.
    let ndjson = format!(
        "{}\n{{\"timestamp\": {now}, \"model\": \"m\"\n{}\n",
        json!({"timestamp": now, "model": "m", "latency_ms": 1}),
        json!({"timestamp": now, "model": "m", "latency_ms": 2})
    );
    let (status, body) = post_raw(
        &client,
        &server,
        Some("good-key"),
        "application/x-ndjson",
        None,
        ndjson.into_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["rejected"][0]["index"], 1, "{body}");
}

#[test]
fn query_refusals_carry_status_and_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(
        dir.path(),
        &[("AIS_API_KEYS", "acme:good-key,acme:w:write")],
    );
    let client = client();
    let (status, _) = get_json(&client, &server, None, "/v1/query/summary");
    assert_eq!(status, 401);
    let (status, body) = get_json(&client, &server, Some("w"), "/v1/query/summary");
    assert_eq!(status, 403, "{body}");
    let (status, body) = get_json(
        &client,
        &server,
        Some("good-key"),
        "/v1/query/summary?from=tomorrow",
    );
    assert_eq!(status, 400);
    assert!(error_of(&body).starts_with("from must be"), "{body}");
    let (status, body) = get_json(
        &client,
        &server,
        Some("good-key"),
        "/v1/query/timeseries?metric=vibes",
    );
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("latency_p99"), "{body}");
    let (status, body) = get_json(
        &client,
        &server,
        Some("good-key"),
        "/v1/query/timeseries?metric=requests&step=45",
    );
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("multiple of 60"), "{body}");
    // Health needs no key; metrics are Prometheus text with the pipeline's counters.
    let (status, _) = post_json(
        &client,
        &server,
        Some("w"),
        &json!({"timestamp": now_ms(), "model": "m", "latency_ms": 1}),
    );
    assert_eq!(status, 202);
    server.wait_caught_up(&client);
    let response = client.get(server.url("/healthz")).send().expect("healthz");
    assert_eq!(response.status().as_u16(), 200);
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    for name in [
        "ais_ingest_requests_total",
        "ais_ingest_events_total",
        "ais_stream_events_total",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
}
