//! Payload capture on one node: with `[payloads] enabled`, an event's `input` and
//! `output` reach the write-ahead log only as redacted (read from the log's own bytes),
//! cut at the cap, each rule's replacements counted; with capture off, they never reach
//! it; a payload of the wrong type is refused, naming the field. Distributed: payloads
//! go through Kafka and `ais stream` into ClickHouse, and `ais query` returns and
//! searches them as the posted events say.

mod common;

use std::path::Path;

use common::cluster::Cluster;
use common::*;
use serde_json::{json, Value};

const KEYS: &str = "acme:acme-key";
const EMAIL: &str = "ada.lovelace@example.com";
const CARD: &str = "4111 1111 1111 1111";
const TICKET: &str = "TICKET-90210";

/// Every byte of every file under `dir` (the write-ahead log's segments).
fn bytes_under(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("readable dir").flatten() {
                pending.push(entry.path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn counter(client: &reqwest::blocking::Client, server: &Server, rule: &str) -> Option<u64> {
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .expect("metrics");
    let prefix = format!("ais_payload_redactions_total{{rule=\"{rule}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|value| value.trim().parse().ok())
}

fn event(id: &str, input: Value, output: Value) -> Value {
    json!({"event_id": id, "timestamp": now_ms(), "model": "gpt-4o", "latency_ms": 10,
           "input": input, "output": output})
}

fn start(dir: &Path, config: &str) -> Server {
    let path = dir.join("ais.toml");
    std::fs::write(&path, config).expect("config");
    Server::start_with(
        &dir.join("data"),
        &[("AIS_API_KEYS", KEYS)],
        &["--config", &path.display().to_string()],
        None,
    )
}

#[test]
fn payloads_reach_the_log_only_redacted_and_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(
        dir.path(),
        "[payloads]\nenabled = true\nmax_bytes = 256\n[[payloads.rules]]\nname = \"ticket\"\npattern = \"TICKET-[0-9]+\"\n",
    );
    let client = client();
    let long = "word ".repeat(200);
    let events = json!([
        event(
            "sent",
            json!(format!("Write to {EMAIL} about {TICKET}")),
            json!([{"role": "assistant", "content": format!("Charged card {CARD}.")}]),
        ),
        event("long", json!(long), Value::Null),
    ]);
    let (status, body) = post_json(&client, &server, Some("acme-key"), &events);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");

    // Acknowledged means durable: the log's bytes hold the payloads as redacted.
    let log = bytes_under(&dir.path().join("data").join("wal"));
    for secret in [EMAIL, CARD, TICKET] {
        assert!(!contains(&log, secret), "{secret:?} reached the log");
    }
    for placeholder in ["[EMAIL]", "[CARD]", "[TICKET]", "Write to ", "\"role\""] {
        assert!(contains(&log, placeholder), "{placeholder:?} is in the log");
    }
    // The long input is cut to the cap, with the marker.
    let cut = format!("{}…[truncated]", &long[..256 - "…[truncated]".len()]);
    assert!(
        contains(&log, &cut),
        "the input cut at 256 bytes is in the log"
    );
    assert!(!contains(&log, &long), "the whole input is not");
    for rule in ["email", "card", "ticket"] {
        assert_eq!(
            counter(&client, &server, rule),
            Some(1),
            "{rule} counted once"
        );
    }

    // A payload that is neither text nor messages is refused, naming the field; the
    // rest of the body is accepted.
    let (status, body) = post_json(
        &client,
        &server,
        Some("acme-key"),
        &json!([
            event("numeric", json!(42), Value::Null),
            event("fine", json!("ok"), json!("ok"))
        ]),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    assert!(
        body.to_string().contains("input:"),
        "names the field: {body}"
    );
}

#[test]
fn with_capture_off_payloads_never_reach_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path(), "");
    let client = client();
    let (status, body) = post_json(
        &client,
        &server,
        Some("acme-key"),
        &json!([event(
            "sent",
            json!(format!("Write to {EMAIL}")),
            json!("an answer")
        )]),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    let log = bytes_under(&dir.path().join("data").join("wal"));
    // The event is in the log; its payload is not, in any form.
    assert!(contains(&log, "gpt-4o"), "the event is in the log");
    for text in [EMAIL, "Write to", "[EMAIL]", "an answer"] {
        assert!(!contains(&log, text), "{text:?} reached the log");
    }
}

/// The gateway of `ais serve` fills a call's payload while capture is on: the request's
/// messages and the answer's text, whole and streamed, redacted before the log like
/// ingest's (the test upstream's answer repeats the prompt, address included).
#[test]
fn the_gateway_records_its_calls_payloads_redacted() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let upstream = ais_testkit::upstream::Upstream::start(runtime.handle());
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(
        dir.path(),
        &format!(
            "[payloads]\nenabled = true\n[gateway]\nlisten = \"127.0.0.1:0\"\n[[gateway.upstreams]]\nmodel = \"gpt-4o\"\nprovider = \"openai\"\nurls = [\"{}\"]\n",
            upstream.base
        ),
    );
    let gateway = server
        .gateway
        .clone()
        .expect("the ready line names the gateway");
    let client = client();
    for (stream, prompt) in [
        (false, format!("whole: mail {EMAIL}")),
        (true, format!("streamed: mail {EMAIL}")),
    ] {
        let response = client
            .post(format!("{gateway}/v1/chat/completions"))
            .bearer_auth("acme-key")
            .json(&json!({"model": "gpt-4o", "stream": stream,
                          "messages": [{"role": "user", "content": prompt}]}))
            .send()
            .and_then(|response| response.text())
            .expect("the gateway answers");
        // The caller gets the answer as it was (a stream in pieces of five characters).
        let whole_answer = !stream && response.contains(EMAIL);
        let streamed_answer = stream && response.ends_with("data: [DONE]\n\n");
        assert!(whole_answer || streamed_answer, "{response}");
    }
    // Both calls' events reach the log with their payloads, redacted.
    let redacted_reply = |kind: &str| {
        ais_testkit::upstream::reply(&format!("{kind}: mail {EMAIL}")).replace(EMAIL, "[EMAIL]")
    };
    eventually("both calls' payloads in the log", || {
        let log = bytes_under(&dir.path().join("data").join("wal"));
        let wanted = [
            "whole: mail [EMAIL]".to_string(),
            "streamed: mail [EMAIL]".to_string(),
            redacted_reply("whole"),
            redacted_reply("streamed"),
        ];
        match wanted.iter().find(|text| !contains(&log, text)) {
            None => Ok(log),
            Some(missing) => Err(format!("{missing:?} not in the log yet")),
        }
    });
    let log = bytes_under(&dir.path().join("data").join("wal"));
    assert!(!contains(&log, EMAIL), "the address reached the log");
    drop(runtime);
}

#[test]
fn payloads_go_through_kafka_into_clickhouse_and_are_searched_by_ais_query() {
    let Some(cluster) = Cluster::create("payloads", 2) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    std::fs::write(&config, "[payloads]\nenabled = true\n").expect("config");
    let config_arg = config.display().to_string();
    let env = [("AIS_API_KEYS", KEYS), ("AIS_CONFIG", config_arg.as_str())];
    let ingest = cluster.ingest(&env);
    let _stream = cluster.stream_with(&[("AIS_CONFIG", config_arg.as_str())], None);
    let query = cluster.query(&env);
    let client = client();

    let topics = [
        "Refund for order",
        "shipping DELAY",
        "Größe über alles",
        "refund?",
    ];
    let now = now_ms();
    let events: Vec<Value> = (0..40)
        .map(|n| {
            let input = format!("{} {n} (mail {EMAIL})", topics[n % 4]);
            let output = if n % 3 == 0 {
                Value::Null
            } else {
                json!(format!("Answer {n}"))
            };
            let mut posted = event(&format!("p-{n:02}"), json!(input), output);
            // One a second, in id order: newest first is the ids' reverse order.
            posted["timestamp"] = json!(now - (40 - n as i64) * 1_000);
            posted
        })
        .collect();
    let (status, body) = post_json(&client, &ingest, Some("acme-key"), &json!(events));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 40, "{body}");

    // What a search must answer: the posted events whose redacted payloads hold the
    // text, ignoring case, newest first (equal times by id).
    let stored_input = |event: &Value| {
        event["input"]
            .as_str()
            .map(|input| input.replace(EMAIL, "[EMAIL]"))
    };
    let brute_force = |text: &str| -> Vec<String> {
        let wanted = text.to_lowercase();
        let mut ids: Vec<String> = events
            .iter()
            .filter(|event| {
                [
                    stored_input(event),
                    event["output"].as_str().map(String::from),
                ]
                .into_iter()
                .flatten()
                .any(|payload| payload.to_lowercase().contains(&wanted))
            })
            .map(|event| event["event_id"].as_str().unwrap_or("").to_string())
            .collect();
        ids.sort_by(|a, b| b.cmp(a));
        ids
    };
    let all = eventually("every posted event in ClickHouse with its payloads", || {
        let (status, body) = get_json(
            &client,
            &query,
            Some("acme-key"),
            "/v1/events?include=payloads&limit=1000",
        );
        let listed = body["events"].as_array().cloned().unwrap_or_default();
        if status == 200 && listed.len() == events.len() {
            Ok(listed)
        } else {
            Err(format!(
                "{status}: {} of {} events",
                listed.len(),
                events.len()
            ))
        }
    });
    for listed in &all {
        let posted = events
            .iter()
            .find(|event| event["event_id"] == listed["event_id"])
            .expect("a posted event");
        assert_eq!(
            listed["input"].as_str().map(String::from),
            stored_input(posted),
            "input as stored, redacted: {listed}"
        );
        assert_eq!(
            listed.get("output").cloned().unwrap_or(Value::Null),
            posted["output"]
        );
    }
    assert!(!all.iter().any(|event| event.to_string().contains(EMAIL)));
    assert!(
        brute_force("REFUND").len() > 1,
        "the searches find something"
    );
    for text in ["REFUND", "über", "[email]", "answer 1", "nowhere at all"] {
        let encoded = prometheus::form_encoded(text);
        let (status, body) = get_json(
            &client,
            &query,
            Some("acme-key"),
            &format!("/v1/events?q={encoded}&limit=1000"),
        );
        assert_eq!(status, 200, "{body}");
        let found: Vec<String> = body["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|event| event["event_id"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(found, brute_force(text), "q={text}");
    }
}
