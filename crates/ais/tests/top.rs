//! `ais top --once` against a running `ais serve`: the table lists each model with the
//! number of requests the test sent, scoped to the key's tenant.

mod common;

use std::process::Command;

use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Sends a random number of events per model (timestamps within the last minute);
/// returns the counts sent.
fn send_traffic(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: Option<&str>,
    models: &[&str],
    rng: &mut SmallRng,
) -> Vec<(String, u64)> {
    let now = now_ms();
    let mut sent = Vec::new();
    let mut events = Vec::new();
    for model in models {
        let count = rng.random_range(5..80u64);
        for _ in 0..count {
            let failed = rng.random_bool(0.1);
            events.push(json!({
                "timestamp": now - rng.random_range(0..50_000),
                "model": model,
                "latency_ms": rng.random_range(50.0..3000.0),
                "input_tokens": rng.random_range(10..2000),
                "output_tokens": rng.random_range(1..500),
                "status": if failed { "error" } else { "ok" },
            }));
        }
        sent.push((model.to_string(), count));
    }
    let (status, body) = post_json(client, server, key, &Value::Array(events));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rejected"], json!([]), "{body}");
    server.wait_caught_up(client);
    sent
}

/// Runs `ais top --once`; returns its exit success, stdout and stderr.
fn top_once(server: &Server, key: Option<&str>) -> (bool, String, String) {
    top_once_with(server, key, &[])
}

/// Runs `ais top --once` with more arguments.
fn top_once_with(server: &Server, key: Option<&str>, more: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ais"));
    command
        .args(["top", "--once", "--window", "10m", "--url", &server.base])
        .args(more)
        .env_remove("AIS_API_KEY");
    if let Some(key) = key {
        command.env("AIS_API_KEY", key);
    }
    let output = command.output().expect("ais top runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The REQUESTS column of the row whose first column is `model`.
fn requests_of(table: &str, model: &str) -> Option<u64> {
    table.lines().find_map(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        match columns.as_slice() {
            [name, requests, ..] if *name == model => requests.parse().ok(),
            _ => None,
        }
    })
}

#[test]
fn top_once_prints_each_model_with_its_request_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let client = client();
    let mut rng = SmallRng::seed_from_u64(now_ms() as u64);
    let sent = send_traffic(
        &client,
        &server,
        None,
        &["gpt-4o", "claude-sonnet-4", "llama-3.1-8b-instruct"],
        &mut rng,
    );

    let (success, table, stderr) = top_once(&server, None);
    assert!(success, "ais top failed: {stderr}");
    println!("{table}");
    assert!(table
        .lines()
        .nth(1)
        .is_some_and(|header| header.contains("REQUESTS")));
    for (model, count) in &sent {
        assert_eq!(
            requests_of(&table, model),
            Some(*count),
            "{model} in:\n{table}"
        );
    }
    let total: u64 = sent.iter().map(|(_, count)| count).sum();
    assert_eq!(requests_of(&table, "TOTAL"), Some(total), "{table}");
}

#[test]
fn top_shows_only_the_keys_tenant_and_says_when_a_key_is_needed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(
        dir.path(),
        &[("AIS_API_KEYS", "acme:acme-key,globex:globex-key")],
    );
    let client = client();
    let mut rng = SmallRng::seed_from_u64(now_ms() as u64 ^ 0x5eed);
    let acme = send_traffic(
        &client,
        &server,
        Some("acme-key"),
        &["gpt-4o-mini", "o4-mini"],
        &mut rng,
    );
    let globex = send_traffic(
        &client,
        &server,
        Some("globex-key"),
        &["gemini-2.5-flash"],
        &mut rng,
    );

    let (success, table, stderr) = top_once(&server, Some("acme-key"));
    assert!(success, "{stderr}");
    for (model, count) in &acme {
        assert_eq!(requests_of(&table, model), Some(*count), "{table}");
    }
    for (model, _) in &globex {
        assert_eq!(
            requests_of(&table, model),
            None,
            "another tenant's model: {table}"
        );
    }

    let (success, table, stderr) = top_once(&server, Some("globex-key"));
    assert!(success, "{stderr}");
    assert_eq!(
        requests_of(&table, "gemini-2.5-flash"),
        Some(globex[0].1),
        "{table}"
    );
    assert_eq!(requests_of(&table, "gpt-4o-mini"), None, "{table}");

    let (success, _, stderr) = top_once(&server, None);
    assert!(!success, "no key is refused");
    assert!(
        stderr.contains("--api-key"),
        "the error says how to pass a key: {stderr}"
    );
}

#[test]
fn top_by_a_dimension_with_a_filter_counts_each_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let client = client();
    let mut rng = SmallRng::seed_from_u64(now_ms() as u64);
    let now = now_ms();
    // Per endpoint (one of them absent), how many events of region eu were sent.
    let endpoints = [Some("/chat"), Some("/embed|v2"), None];
    let mut want: Vec<(String, u64)> = Vec::new();
    let mut events = Vec::new();
    for endpoint in endpoints {
        let eu = rng.random_range(3..40u64);
        let us = rng.random_range(1..10u64);
        for index in 0..eu + us {
            let mut event = json!({
                "timestamp": now - rng.random_range(0..50_000),
                "model": "gpt-4o",
                "latency_ms": 100,
                "region": if index < eu { "eu" } else { "us" },
            });
            if let Some(endpoint) = endpoint {
                event["endpoint"] = json!(endpoint);
            }
            events.push(event);
        }
        want.push((endpoint.unwrap_or("(none)").to_string(), eu));
    }
    let (status, body) = post_json(&client, &server, None, &Value::Array(events));
    assert_eq!(status, 202, "{body}");
    server.wait_caught_up(&client);

    let (success, table, stderr) = top_once_with(
        &server,
        None,
        &["--by", "endpoint", "--filter", "region:eu"],
    );
    assert!(success, "ais top failed: {stderr}");
    println!("{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|header| header.starts_with("ENDPOINT")),
        "{table}"
    );
    for (endpoint, count) in &want {
        assert_eq!(
            requests_of(&table, endpoint),
            Some(*count),
            "{endpoint} in:\n{table}"
        );
    }
    let total: u64 = want.iter().map(|(_, count)| count).sum();
    assert_eq!(requests_of(&table, "TOTAL"), Some(total), "{table}");

    let (success, _, stderr) = top_once_with(&server, None, &["--by", "colour"]);
    assert!(!success, "an unknown dimension fails");
    assert!(stderr.contains("unknown dimension"), "{stderr}");
}
