//! Security properties over real HTTP: tenant isolation on every endpoint, key kinds,
//! hashed keys and rotation, no secret in logs, hostile inputs refused while the
//! process keeps serving.

mod common;

use std::io::Write;

use common::*;
use serde_json::{json, Value};

const KEY_A: &str = "key-of-acme-1234567890";
const KEY_B: &str = "key-of-globex-0987654321";
const KEY_B_READ: &str = "globex-reader-key";
const KEY_B_WRITE: &str = "globex-writer-key";
const KEY_ADMIN: &str = "operator-admin-key";

fn keys() -> String {
    format!("acme:{KEY_A},globex:{KEY_B},globex:{KEY_B_READ}:read,globex:{KEY_B_WRITE}:write,ops:{KEY_ADMIN}:admin")
}

fn sha256_hex(text: &str) -> String {
    let output = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum runs");
    String::from_utf8_lossy(&output.stdout)[..64].to_string()
}

#[test]
fn every_endpoint_keeps_tenants_apart_and_kinds_apply() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("ais.log");
    let server = Server::start_with(
        &dir.path().join("data"),
        &[("AIS_API_KEYS", &keys()), ("RUST_LOG", "debug")],
        &[],
        Some(&log),
    );
    let client = client();
    let now = now_ms();
    // Tenant A tries to write into tenant B through the payload: ignored.
    let sneaky = json!([{
        "timestamp": now, "model": "acme-model", "latency_ms": 5, "tenant": "globex",
        "attributes": {"tenant": "globex", "service.name": "globex"}
    }]);
    let (status, body) = post_json(&client, &server, Some(KEY_A), &sneaky);
    assert_eq!(status, 202, "{body}");
    let (status, _) = post_json(
        &client,
        &server,
        Some(KEY_B_WRITE),
        &json!({"timestamp": now, "model": "globex-model", "latency_ms": 5}),
    );
    assert_eq!(status, 202);
    server.wait_caught_up(&client);

    let read_paths = [
        "/v1/query/summary",
        "/v1/query/summary?filter=status:ok",
        "/v1/query/timeseries?metric=requests",
        "/v1/query/timeseries?metric=latency_p99&step=300",
        "/v1/events",
        "/v1/events?status=ok&limit=10",
        "/v1/events?filter=status:ok&filter=region:null",
        "/v1/query/breakdown?by=model",
        "/v1/query/breakdown?by=model,status&filter=status:ok",
    ];
    for path in read_paths {
        let (status, a) = get_json(&client, &server, Some(KEY_A), path);
        assert_eq!(status, 200, "{path}");
        let text = a.to_string();
        assert!(
            text.contains("acme-model") && !text.contains("globex-model"),
            "{path} for acme: {text}"
        );
        let (status, b) = get_json(&client, &server, Some(KEY_B_READ), path);
        assert_eq!(status, 200, "{path}");
        let text = b.to_string();
        assert!(
            text.contains("globex-model") && !text.contains("acme-model"),
            "{path} for globex: {text}"
        );
        // Another tenant by parameter: only admin keys.
        let foreign = if path.contains('?') {
            format!("{path}&tenant=acme")
        } else {
            format!("{path}?tenant=acme")
        };
        let (status, _) = get_json(&client, &server, Some(KEY_B), &foreign);
        assert_eq!(status, 403, "{foreign}");
        let (status, admin) = get_json(&client, &server, Some(KEY_ADMIN), &foreign);
        assert_eq!(status, 200, "{foreign}");
        assert!(
            admin.to_string().contains("acme-model"),
            "{foreign}: {admin}"
        );
        // Kinds: a write key cannot read; no key, no data.
        let (status, _) = get_json(&client, &server, Some(KEY_B_WRITE), path);
        assert_eq!(status, 403, "{path} with a write key");
        let (status, _) = get_json(&client, &server, None, path);
        assert_eq!(status, 401, "{path} without a key");
    }
    // Anomalies: scoped the same way (none have fired in this short run).
    for (key, path, want) in [
        (Some(KEY_A), "/v1/anomalies", 200),
        (Some(KEY_B_READ), "/v1/anomalies?tenant=acme", 403),
        (Some(KEY_ADMIN), "/v1/anomalies?tenant=acme", 200),
        (Some(KEY_ADMIN), "/v1/anomalies", 200),
        (Some(KEY_B_WRITE), "/v1/anomalies", 403),
        (None, "/v1/anomalies", 401),
        // Breaking down or filtering by tenant crosses tenants: admin keys only.
        (Some(KEY_A), "/v1/query/breakdown?by=tenant", 403),
        (
            Some(KEY_B_READ),
            "/v1/query/breakdown?by=model&filter=tenant:acme",
            403,
        ),
        (Some(KEY_ADMIN), "/v1/query/breakdown?by=tenant", 200),
        (Some(KEY_A), "/v1/events?filter=tenant:acme", 403),
    ] {
        let (status, body) = get_json(&client, &server, key, path);
        assert_eq!(status, want, "{path}: {body}");
    }
    // A read key cannot ingest, an admin key neither (admins read).
    for key in [KEY_B_READ, KEY_ADMIN] {
        let (status, _) = post_json(
            &client,
            &server,
            Some(key),
            &json!({"timestamp": now, "model": "x", "latency_ms": 1}),
        );
        assert_eq!(status, 403);
    }
    // Metrics carry no tenant or model labels.
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    for name in ["acme", "globex", "acme-model", "globex-model"] {
        assert!(!metrics.contains(name), "/metrics mentions {name}");
    }
    // Unknown and malformed keys are refused the same way.
    for header in ["Bearer nope", "Basic abc", "Bearer ", KEY_A] {
        let response = client
            .get(server.url("/v1/query/summary"))
            .header("authorization", header)
            .send()
            .expect("answer");
        assert_eq!(response.status().as_u16(), 401, "{header}");
    }
    drop(server);

    // No key, digest prefix or Authorization header in the log.
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("DEBUG") || text.contains("INFO"),
        "the log was captured at debug level"
    );
    for key in [KEY_A, KEY_B, KEY_B_READ, KEY_B_WRITE, KEY_ADMIN, "nope"] {
        assert!(!text.contains(key), "the log contains a key");
        assert!(
            !text.contains(&sha256_hex(key)[..12]),
            "the log contains a key digest"
        );
    }
    assert!(
        !text.to_ascii_lowercase().contains("bearer"),
        "the log contains an Authorization header"
    );
}

#[test]
fn hashed_keys_from_the_config_rotate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    let write_config = |keys: &[&str]| {
        let mut text = String::new();
        for key in keys {
            text.push_str(&format!(
                "[[keys]]\ntenant = \"acme\"\nsha256 = \"{}\"\nkind = \"all\"\n\n",
                sha256_hex(key)
            ));
        }
        std::fs::write(&config, text).expect("config");
    };
    write_config(&["old-key", "new-key"]);
    let config_arg = config.to_string_lossy().to_string();
    let server = Server::start_with(
        &dir.path().join("data"),
        &[],
        &["--config", &config_arg],
        None,
    );
    let client = client();
    for key in ["old-key", "new-key"] {
        let (status, _) = get_json(&client, &server, Some(key), "/v1/query/summary");
        assert_eq!(status, 200, "{key} works during rotation");
    }
    let (status, _) = get_json(
        &client,
        &server,
        Some(&sha256_hex("old-key")),
        "/v1/query/summary",
    );
    assert_eq!(status, 401, "the digest itself is not a key");
    drop(server);

    write_config(&["new-key"]);
    let server = Server::start_with(
        &dir.path().join("data"),
        &[],
        &["--config", &config_arg],
        None,
    );
    let (status, _) = get_json(&client, &server, Some("old-key"), "/v1/query/summary");
    assert_eq!(status, 401, "a removed key fails");
    let (status, _) = get_json(&client, &server, Some("new-key"), "/v1/query/summary");
    assert_eq!(status, 200);
}

#[test]
fn hostile_inputs_get_4xx_and_the_process_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let client = client();
    let now = now_ms();
    let mut cases: Vec<(&str, &str, Option<&str>, Vec<u8>)> = Vec::new();
    // Deep nesting, as a body and inside one event.
    cases.push((
        "deep array",
        "application/json",
        None,
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
    ));
    let deep_field = format!(
        r#"[{{"timestamp":{now},"model":"m","latency_ms":1,"attributes":{}{}}}]"#,
        "{\"a\":".repeat(5_000),
        "}".repeat(5_000)
    );
    cases.push((
        "deep attribute",
        "application/json",
        None,
        deep_field.into_bytes(),
    ));
    // Huge strings.
    let huge = format!(
        r#"{{"timestamp":{now},"model":"{}","latency_ms":1}}"#,
        "m".repeat(8 << 20)
    );
    cases.push(("huge string", "application/json", None, huge.into_bytes()));
    // Invalid UTF-8 inside a string and as a line.
    let mut invalid = format!(r#"{{"timestamp":{now},"model":""#).into_bytes();
    invalid.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    invalid.extend_from_slice(br#"","latency_ms":1}"#);
    cases.push(("invalid utf-8", "application/json", None, invalid.clone()));
    cases.push(("invalid utf-8 line", "application/x-ndjson", None, invalid));
    // Compression bombs and garbage.
    let zeros = vec![b'0'; 64 << 20];
    cases.push((
        "zstd bomb",
        "application/json",
        Some("zstd"),
        zstd::encode_all(&zeros[..], 19).expect("zstd"),
    ));
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gzip.write_all(&zeros).expect("gzip");
    cases.push((
        "gzip bomb",
        "application/json",
        Some("gzip"),
        gzip.finish().expect("gzip"),
    ));
    cases.push((
        "truncated zstd",
        "application/json",
        Some("zstd"),
        zstd::encode_all(&b"[{}]".repeat(1000)[..], 3).expect("zstd")[..20].to_vec(),
    ));

    for (name, content_type, encoding, body) in cases {
        let (status, answer) = post_raw(&client, &server, None, content_type, encoding, body);
        // A body readable as a whole may still reject every event (202, accepted 0).
        let refused = (400..500).contains(&status) || (status == 202 && answer["accepted"] == 0);
        assert!(refused, "{name}: {status} {answer}");
        if status == 202 {
            assert!(
                answer["rejected"].as_array().is_some_and(|r| !r.is_empty()),
                "{name}: {answer}"
            );
        } else {
            assert!(answer["error"].is_string(), "{name}: error body {answer}");
        }
        let health = client
            .get(server.url("/healthz"))
            .send()
            .expect("still serving");
        assert_eq!(health.status().as_u16(), 200, "after {name}");
    }
    let (status, body) = post_json(
        &client,
        &server,
        None,
        &json!({"timestamp": now, "model": "m", "latency_ms": 1}),
    );
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(1)),
        "normal traffic still flows"
    );
    let _: Value = body;
}
