//! Security properties over real HTTP: tenant isolation on every endpoint, key kinds,
//! hashed keys and rotation, no secret in logs, hostile inputs refused while the
//! process keeps serving, and a `/readyz` that shows counts to operators only.

mod common;

use std::io::Write;

use ais_model::otlp::common::{any_value::Value as AttrValue, AnyValue, KeyValue};
use ais_model::otlp::resource::Resource;
use ais_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use ais_model::otlp::ExportTraceServiceRequest;
use ais_model::{wire, Event, EventId};
use common::*;
use prost::Message;
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

/// One tenant of the isolation walk: its keys and the models only its data carries.
struct Tenant {
    name: &'static str,
    /// Ingests (kind `all` or `write`).
    writer: &'static str,
    /// Reads its own tenant (kind `all` or `read`).
    reader: &'static str,
    /// Events through `/v1/events`, spans through OTLP/HTTP and OTLP/gRPC.
    models: [&'static str; 3],
}

const ACME: Tenant = Tenant {
    name: "acme",
    writer: KEY_A,
    reader: KEY_A,
    models: ["acme-model", "acme-otlp-http", "acme-otlp-grpc"],
};
const GLOBEX: Tenant = Tenant {
    name: "globex",
    writer: KEY_B_WRITE,
    reader: KEY_B_READ,
    models: ["globex-model", "globex-otlp-http", "globex-otlp-grpc"],
};

/// Latency anomalies after a short baseline, one window enough to fire, of each model
/// and of each endpoint, and one SLO and one budget per tenant: every tenant-scoped
/// route has something to show.
const WALK_CONFIG: &str = r#"
[anomaly]
dimensions = ["endpoint"]

[anomaly.latency]
min_baseline_windows = 5
k = 1
n = 1

[[slos]]
name = "acme-availability"
model = "acme-model"
objective = "availability"
target = 0.99

[[slos]]
name = "globex-availability"
model = "globex-model"
objective = "availability"
target = 0.99

[[budgets]]
tenant = "acme"
daily_tokens = 1000000

[[budgets]]
tenant = "globex"
daily_tokens = 1000000

[payloads]
enabled = true
"#;

/// Begins every payload of the walk: what must never show outside its own tenant's
/// answers (each payload names its model too, so the foreign-model check catches it),
/// nor in the log or the metrics.
const PAYLOAD_MARK: &str = "Confidential-payload";

/// The payloads of an event of `model`: (input, output).
fn payloads_of(model: &str) -> (String, String) {
    (
        format!("{PAYLOAD_MARK} prompt of {model}"),
        format!("{PAYLOAD_MARK} answer of {model}"),
    )
}

/// Events per minute and tenant: at the detectors' default `min_requests` (20).
const WALK_PER_MINUTE: i64 = 20;

/// A GenAI span of `model`. Both tenants send the same ids: dedup is per tenant, so
/// neither tenant's span may hide the other's.
fn genai_span(id: u64, model: &str) -> Span {
    let text = |key: &str, value: &str| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(AttrValue::StringValue(value.to_string())),
        }),
        ..Default::default()
    };
    let start = now_ms() as u64 * 1_000_000;
    Span {
        trace_id: [9u8; 16].to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        name: format!("chat {model}"),
        start_time_unix_nano: start,
        end_time_unix_nano: start + 120_000_000,
        attributes: vec![
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.request.model", model),
        ],
        ..Default::default()
    }
}

fn export_request(span: Span) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource::default()),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Writes into the WAL at `data_dir`, before `ais serve` opens it, one invalid event
/// (empty model) per tenant, each to become a dead letter naming its tenant, and each
/// tenant's steady latency with a spike ([`steady_then_a_spike`]). The spike goes in
/// the WAL rather than over HTTP because windows become final by a watermark all
/// tenants share, which moves with the clock too (a partition idle for 10 s finalizes
/// everything older than the allowed lateness): events sent after the server started
/// could meet their windows already evaluated without them. In the WAL they are the
/// stream's first batch, so every window holds its events before it is final.
fn seed_the_wal(data_dir: &std::path::Path, tenants: &[&Tenant], now: i64) {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            use ais_log::Log;
            let wal = ais_log::wal::Wal::open(ais_log::wal::WalConfig::new(data_dir.join("wal")))
                .expect("wal");
            let mut batch = ais_log::RecordBatch::default();
            let mut push = |tenant: &str, event: &Event<'_>| {
                let mut bytes = Vec::new();
                wire::encode_into(tenant, event, &mut bytes);
                batch.push(&bytes);
            };
            for (index, tenant) in tenants.iter().enumerate() {
                let poison = Event::new("", EventId::Generated(index as u128 + 1), now, 9.0);
                push(tenant.name, &poison);
            }
            let series: Vec<Vec<Vec<Event<'static>>>> = tenants
                .iter()
                .map(|tenant| steady_then_a_spike(tenant.models[0], now))
                .collect();
            // Time order across the tenants, as they would arrive.
            for minute in 0..series[0].len() {
                for (tenant, minutes) in tenants.iter().zip(&series) {
                    for event in &minutes[minute] {
                        push(tenant.name, event);
                    }
                }
            }
            wal.append(batch).await.expect("append");
            wal.close().await.expect("close");
        });
}

/// Steady latency for 16 minutes, ×10 in one of them: a latency anomaly per tenant,
/// of its model and of its endpoint ([`endpoint_of`]). The events of each minute,
/// oldest minute first.
fn steady_then_a_spike(model: &str, now: i64) -> Vec<Vec<Event<'static>>> {
    let last_minute = minute_floor(now) - 60_000;
    let spike_minute = minute_floor(now) - 6 * 60_000;
    let mut minutes = Vec::new();
    let mut minute = last_minute - 15 * 60_000;
    let mut id = 1_000;
    while minute <= last_minute {
        let factor = if minute == spike_minute { 10.0 } else { 1.0 };
        let events: Vec<Event<'static>> = (0..WALK_PER_MINUTE)
            .map(|index| {
                id += 1;
                let (input, output) = payloads_of(model);
                Event {
                    endpoint: Some(endpoint_of(model).into()),
                    input: Some(input.into()),
                    output: Some(output.into()),
                    ..Event::new(
                        model.to_string(),
                        EventId::Generated(id),
                        minute + index * 2_000,
                        factor * (100.0 + (index % 7) as f64),
                    )
                }
            })
            .collect();
        minutes.push(events);
        minute += 60_000;
    }
    minutes
}

/// The endpoint that serves `model`: it names the model, so the check for a foreign
/// model's name in an answer catches a foreign endpoint too.
fn endpoint_of(model: &str) -> String {
    format!("/{model}/chat")
}

/// The `/v1/dlq` letters `key` sees: id → tenant.
fn dlq_letters(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: &str,
) -> std::collections::BTreeMap<String, Value> {
    let (status, body) = get_json(client, server, Some(key), "/v1/dlq?limit=1000");
    assert_eq!(status, 200, "{body}");
    body["letters"]
        .as_array()
        .expect("letters")
        .iter()
        .map(|letter| {
            let id = letter["id"].as_str().expect("id").to_string();
            (id, letter["tenant"].clone())
        })
        .collect()
}

fn replay(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: &str,
    request: &Value,
) -> Value {
    let (status, answer) = post_api(client, server, key, "/v1/dlq/replay", request);
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Asserts `text` (one tenant's answer) names every model of `own` in `must`, and no
/// model of `foreign`.
fn assert_own_data_only(path: &str, text: &str, own: &Tenant, must: &[&str], foreign: &Tenant) {
    for model in must {
        assert!(
            text.contains(model),
            "{path} for {}: its own {model} is missing: {text}",
            own.name
        );
    }
    for model in foreign.models {
        assert!(
            !text.contains(model),
            "{path} for {} shows {}'s {model}: {text}",
            own.name,
            foreign.name
        );
    }
}

#[test]
fn every_endpoint_keeps_tenants_apart_and_kinds_apply() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let now = now_ms();
    seed_the_wal(&data, &[&ACME, &GLOBEX], now);
    let config = dir.path().join("ais.toml");
    std::fs::write(&config, WALK_CONFIG).expect("config");
    let config_arg = config.to_string_lossy().to_string();
    let log = dir.path().join("ais.log");
    let server = Server::start_with(
        &data,
        &[("AIS_API_KEYS", &keys()), ("RUST_LOG", "debug")],
        &["--config", &config_arg, "--evaluate-interval-ms", "200"],
        Some(&log),
    );
    let client = client();
    // Tenant A tries to write into tenant B through the payload: ignored.
    let (input, output) = payloads_of("acme-model");
    let sneaky = json!([{
        "timestamp": now, "model": "acme-model", "latency_ms": 5, "tenant": "globex",
        "attributes": {"tenant": "globex", "service.name": "globex"},
        "input": input, "output": output
    }]);
    let (status, body) = post_json(&client, &server, Some(KEY_A), &sneaky);
    assert_eq!(status, 202, "{body}");

    // OTLP/HTTP and OTLP/gRPC with each tenant's key, the same span ids for both.
    for tenant in [&ACME, &GLOBEX] {
        let answer = send_request(
            &client,
            &server,
            ApiRequest {
                key: Some(tenant.writer),
                content_type: Some("application/x-protobuf"),
                ..ApiRequest::post(
                    "/v1/traces",
                    export_request(genai_span(1, tenant.models[1])).encode_to_vec(),
                )
            },
        );
        assert_eq!(answer.status, 200, "OTLP/HTTP for {}", tenant.name);
    }
    let target = server.otlp_grpc.clone().expect("OTLP/gRPC listens");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async move {
            use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
            use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest as GrpcRequest;
            let mut grpc = TraceServiceClient::connect(target).await.expect("connects");
            for tenant in [&ACME, &GLOBEX] {
                let bytes = export_request(genai_span(2, tenant.models[2])).encode_to_vec();
                let mut request =
                    tonic::Request::new(GrpcRequest::decode(bytes.as_slice()).expect("same message"));
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {}", tenant.writer).parse().expect("metadata"),
                );
                let answer = grpc.export(request).await;
                assert!(answer.is_ok(), "OTLP/gRPC for {}: {answer:?}", tenant.name);
            }
        });
    server.wait_caught_up(&client);

    // Anomalies exist in both tenants before any tenant's view of them is checked.
    let anomalies_from = minute_floor(now) - 20 * 60_000;
    let anomalies_to = minute_floor(now) + 60_000;
    let anomalies_path = format!("/v1/anomalies?from={anomalies_from}&to={anomalies_to}");
    eventually("an anomaly in each tenant", || {
        let (status, body) = get_json(&client, &server, Some(KEY_ADMIN), &anomalies_path);
        assert_eq!(status, 200, "{body}");
        // (tenant, whether of a location), cross-tenant and located ones included.
        let seen: Vec<(&str, bool)> = body["anomalies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|anomaly| {
                let tenant = anomaly["tenant"].as_str()?;
                Some((tenant, anomaly["location"].is_object()))
            })
            .collect();
        let complete = ["acme", "globex"]
            .iter()
            .all(|tenant| seen.contains(&(tenant, false)) && seen.contains(&(tenant, true)));
        if complete {
            Ok(())
        } else {
            Err(body.to_string())
        }
    });
    for (own, foreign) in [(&ACME, &GLOBEX), (&GLOBEX, &ACME)] {
        let (status, body) = get_json(&client, &server, Some(own.reader), &anomalies_path);
        assert_eq!(status, 200, "{body}");
        let anomalies = body["anomalies"].as_array().cloned().unwrap_or_default();
        assert!(
            !anomalies.is_empty(),
            "{} sees its own anomaly: {body}",
            own.name
        );
        let endpoint = endpoint_of(own.models[0]);
        for anomaly in &anomalies {
            assert_eq!(anomaly["tenant"], own.name, "{}: {body}", own.name);
            if anomaly["location"].is_object() {
                // Its endpoint's, for its models together.
                assert_eq!(anomaly["model"], "*", "{}: {body}", own.name);
                assert_eq!(anomaly["location"]["dimension"], "endpoint", "{body}");
                assert_eq!(anomaly["location"]["value"], endpoint.as_str(), "{body}");
            } else {
                assert_eq!(anomaly["model"], own.models[0], "{}: {body}", own.name);
            }
        }
        assert!(
            anomalies
                .iter()
                .any(|anomaly| anomaly["location"].is_object()),
            "{} sees its endpoint's anomaly: {body}",
            own.name
        );
        assert_own_data_only(&anomalies_path, &body.to_string(), own, &[], foreign);
        // The same anomalies grouped: its own incidents only, of its own model.
        let incidents_path = anomalies_path.replace("/v1/anomalies", "/v1/incidents");
        let (status, body) = get_json(&client, &server, Some(own.reader), &incidents_path);
        assert_eq!(status, 200, "{body}");
        let incidents = body["incidents"].as_array().cloned().unwrap_or_default();
        assert!(
            !incidents.is_empty(),
            "{} sees its own incident: {body}",
            own.name
        );
        for incident in &incidents {
            assert_eq!(incident["tenant"], own.name, "{}: {body}", own.name);
            if incident["model"] == "*" {
                // Its endpoint's incident: where, and wider (its model fired too).
                assert_eq!(
                    incident["locations"],
                    json!([{"dimension": "endpoint", "value": endpoint}]),
                    "{body}"
                );
                assert_eq!(incident["extent"], "wider", "{body}");
                assert_eq!(incident["wider"], json!([own.models[0]]), "{body}");
            } else {
                assert_eq!(incident["model"], own.models[0], "{}: {body}", own.name);
            }
        }
        assert!(
            incidents.iter().any(|incident| incident["model"] == "*"),
            "{} sees its endpoint's incident: {body}",
            own.name
        );
        assert_own_data_only(&incidents_path, &body.to_string(), own, &[], foreign);
    }

    let read_paths = [
        "/v1/query/summary".to_string(),
        "/v1/query/summary?filter=status:ok".to_string(),
        "/v1/query/timeseries?metric=requests".to_string(),
        "/v1/query/timeseries?metric=requests&by=model&filter=status:ok".to_string(),
        "/v1/query/timeseries?metric=latency_p99&step=300".to_string(),
        "/v1/events".to_string(),
        "/v1/events?status=ok&limit=10".to_string(),
        "/v1/events?filter=status:ok&filter=region:null".to_string(),
        "/v1/events?include=payloads".to_string(),
        format!("/v1/events?q={PAYLOAD_MARK}&include=payloads&limit=1000"),
        "/v1/query/breakdown?by=model".to_string(),
        "/v1/query/breakdown?by=model,status&filter=status:ok".to_string(),
        "/v1/usage?by=model".to_string(),
        anomalies_path.clone(),
        "/v1/slos".to_string(),
    ];
    for path in &read_paths {
        let path = path.as_str();
        for (own, foreign) in [(&ACME, &GLOBEX), (&GLOBEX, &ACME)] {
            let (status, body) = get_json(&client, &server, Some(own.reader), path);
            assert_eq!(status, 200, "{path}");
            assert_own_data_only(path, &body.to_string(), own, &own.models[..1], foreign);
        }
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
        assert_own_data_only(
            &foreign,
            &admin.to_string(),
            &ACME,
            &ACME.models[..1],
            &GLOBEX,
        );
        // Kinds: a write key cannot read; no key, no data.
        let (status, _) = get_json(&client, &server, Some(KEY_B_WRITE), path);
        assert_eq!(status, 403, "{path} with a write key");
        let (status, _) = get_json(&client, &server, None, path);
        assert_eq!(status, 401, "{path} without a key");
    }
    // Every span landed in its own tenant: each sees all three of its models, and the
    // same span ids sent by both tenants were not taken for duplicates of each other.
    for (own, foreign) in [(&ACME, &GLOBEX), (&GLOBEX, &ACME)] {
        for path in [
            "/v1/query/summary",
            "/v1/query/breakdown?by=model",
            "/v1/events",
        ] {
            let (status, body) = get_json(&client, &server, Some(own.reader), path);
            assert_eq!(status, 200, "{path}");
            assert_own_data_only(path, &body.to_string(), own, &own.models, foreign);
        }
    }
    // The ledger: each key reads its own tenant's hours, dead letter included, and
    // another tenant's only as an admin.
    let ledger_path = format!(
        "/v1/ledger?from={}&to={}",
        now - 3 * 3_600_000,
        now + 60_000
    );
    for (own, foreign) in [(&ACME, &GLOBEX), (&GLOBEX, &ACME)] {
        let (status, body) = get_json(&client, &server, Some(own.reader), &ledger_path);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["tenant"], own.name, "{body}");
        assert!(
            !body.to_string().contains(&format!("\"{}\"", foreign.name)),
            "{body}"
        );
        let totals = ledger_totals(
            &client,
            &server,
            Some(own.reader),
            (now - 3 * 3_600_000, now + 60_000),
        );
        assert!(
            totals.committed > 0 && totals.dead_lettered == 1,
            "{}: {totals:?}",
            own.name
        );
    }
    for (key, path, want) in [
        (Some(KEY_B_READ), format!("{ledger_path}&tenant=acme"), 403),
        (Some(KEY_B_WRITE), ledger_path.clone(), 403),
        (None, ledger_path.clone(), 401),
        (Some(KEY_ADMIN), format!("{ledger_path}&tenant=acme"), 200),
    ] {
        let (status, body) = get_json(&client, &server, key, &path);
        assert_eq!(status, want, "{path}: {body}");
        if want == 200 {
            assert_eq!(body["tenant"], "acme", "{body}");
        }
    }

    // Objectives and budgets: each key sees its own tenant's instances alone.
    for (own, foreign) in [(&ACME, &GLOBEX), (&GLOBEX, &ACME)] {
        for (path, field) in [("/v1/slos", "slos"), ("/v1/budgets", "budgets")] {
            let (status, body) = get_json(&client, &server, Some(own.reader), path);
            assert_eq!(status, 200, "{path}: {body}");
            let entries = body[field].as_array().cloned().unwrap_or_default();
            assert!(!entries.is_empty(), "{path} for {}: {body}", own.name);
            for entry in &entries {
                assert_eq!(entry["tenant"], own.name, "{path}: {body}");
            }
            assert!(
                !body.to_string().contains(&format!("\"{}\"", foreign.name)),
                "{path} for {} names {}: {body}",
                own.name,
                foreign.name
            );
        }
    }

    // Dead letters: one per tenant; each key lists its own, and a replay with acme's
    // key re-drives acme's letters only.
    let all_letters = eventually("a dead letter in each tenant", || {
        let letters = dlq_letters(&client, &server, KEY_ADMIN);
        let tenants: Vec<&Value> = letters.values().collect();
        if tenants.contains(&&json!("acme")) && tenants.contains(&&json!("globex")) {
            Ok(letters)
        } else {
            Err(format!("{letters:?}"))
        }
    });
    let letters_of = |tenant: &str| -> Vec<String> {
        all_letters
            .iter()
            .filter(|(_, owner)| **owner == json!(tenant))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let (acme_ids, globex_ids) = (letters_of("acme"), letters_of("globex"));
    assert_eq!(
        (acme_ids.len(), globex_ids.len()),
        (1, 1),
        "{all_letters:?}"
    );
    for (key, want) in [(KEY_A, &acme_ids), (KEY_B_READ, &globex_ids)] {
        let seen: Vec<String> = dlq_letters(&client, &server, key).into_keys().collect();
        assert_eq!(&seen, want, "a tenant lists its own letters only");
    }
    let (status, _) = get_json(&client, &server, Some(KEY_B), "/v1/dlq?tenant=acme");
    assert_eq!(status, 403, "another tenant's letters need an admin key");
    let by_id = replay(&client, &server, KEY_A, &json!({"ids": globex_ids}));
    assert_eq!(by_id["replayed"], json!([]), "{by_id}");
    assert_eq!(by_id["not_found"], json!(globex_ids), "{by_id}");
    let by_range = replay(&client, &server, KEY_A, &json!({}));
    assert_eq!(by_range["replayed"], json!(acme_ids), "{by_range}");
    // The replayed record is still invalid: a second acme letter, globex's untouched.
    let acme_after = eventually("acme's replayed letter", || {
        let letters = dlq_letters(&client, &server, KEY_A);
        if letters.len() == 2 {
            Ok(letters)
        } else {
            Err(format!("{letters:?}"))
        }
    });
    assert!(acme_after.values().all(|owner| *owner == json!("acme")));
    let globex_after: Vec<String> = dlq_letters(&client, &server, KEY_B_READ)
        .into_keys()
        .collect();
    assert_eq!(
        globex_after, globex_ids,
        "globex's letters are as they were"
    );
    let every_letter = dlq_letters(&client, &server, KEY_ADMIN);
    assert_eq!(every_letter.len(), 3, "{every_letter:?}");

    // Anomalies, incidents and breakdowns across tenants: admin keys only.
    for (key, path, want) in [
        (Some(KEY_B_READ), "/v1/anomalies?tenant=acme", 403),
        (Some(KEY_ADMIN), "/v1/anomalies?tenant=acme", 200),
        (Some(KEY_ADMIN), "/v1/anomalies", 200),
        (Some(KEY_B_WRITE), "/v1/anomalies", 403),
        (None, "/v1/anomalies", 401),
        (Some(KEY_B_READ), "/v1/incidents?tenant=acme", 403),
        (Some(KEY_ADMIN), "/v1/incidents?tenant=acme", 200),
        (Some(KEY_ADMIN), "/v1/incidents", 200),
        (Some(KEY_B_WRITE), "/v1/incidents", 403),
        (None, "/v1/incidents", 401),
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
    let (_, by_tenant) = get_json(
        &client,
        &server,
        Some(KEY_ADMIN),
        "/v1/query/breakdown?by=tenant",
    );
    for tenant in ["acme", "globex"] {
        assert!(
            by_tenant.to_string().contains(&format!("\"{tenant}\"")),
            "an admin's breakdown by tenant shows {tenant}: {by_tenant}"
        );
    }
    // A search for what every payload holds finds each tenant's own, and only those;
    // every reading kind reads payloads by default.
    let search = format!(
        "/v1/events?q={}&include=payloads&limit=1000",
        PAYLOAD_MARK.to_uppercase()
    );
    for (own, foreign) in [(&ACME, &GLOBEX), (&GLOBEX, &ACME)] {
        let (status, body) = get_json(&client, &server, Some(own.reader), &search);
        assert_eq!(status, 200, "{body}");
        let events = body["events"].as_array().cloned().unwrap_or_default();
        let seeded = (WALK_PER_MINUTE * 16) as usize;
        assert!(events.len() >= seeded, "{}: {body}", own.name);
        let (input, output) = payloads_of(own.models[0]);
        for event in &events {
            assert_eq!(event["input"], input.as_str(), "{}: {event}", own.name);
            assert_eq!(event["output"], output.as_str(), "{}: {event}", own.name);
        }
        assert_own_data_only(&search, &body.to_string(), own, &[], foreign);
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
    for name in ["acme", "globex", "acme-model", "globex-model", PAYLOAD_MARK] {
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
    assert!(!text.contains(PAYLOAD_MARK), "the log contains a payload");
}

/// Facts of `/readyz` that count events, records or offsets: operators' only.
const COUNTS: &[&str] = &[
    "lag_records",
    "committed_offset",
    "raw_events",
    "raw_files",
    "records_awaiting_delivery",
    "overflow_records",
];

/// `/readyz` with `key` (if any): its status and every fact name it shows.
fn readyz_facts(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: Option<&str>,
) -> (u16, Value) {
    let (status, body) = get_json(client, server, key, "/readyz");
    assert!(
        body["components"]
            .as_array()
            .is_some_and(|components| components.iter().all(|c| c["ready"].is_boolean())),
        "every component says whether it is ready: {body}"
    );
    (status, body)
}

fn shown_counts(body: &Value) -> Vec<String> {
    body["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|component| component["facts"].as_object())
        .flat_map(|facts| facts.keys().cloned())
        .filter(|name| COUNTS.contains(&name.as_str()))
        .collect()
}

#[test]
fn readyz_shows_counts_to_admin_keys_only_when_keys_are_configured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("keyed"), &[("AIS_API_KEYS", &keys())]);
    let client = client();
    let events: Vec<Value> = (0..3)
        .map(|index| json!({"timestamp": now_ms() - index, "model": "acme-model", "latency_ms": 5}))
        .collect();
    let (status, body) = post_json(&client, &server, Some(KEY_A), &Value::Array(events));
    assert_eq!(status, 202, "{body}");
    server.wait_caught_up(&client);

    let (status, admin) = readyz_facts(&client, &server, Some(KEY_ADMIN));
    assert_eq!(status, 200, "{admin}");
    let store = readiness_component(&admin, "store");
    assert_eq!(
        store["facts"]["raw_events"], 3,
        "an admin sees counts: {admin}"
    );
    assert_eq!(
        readiness_component(&admin, "stream")["facts"]["lag_records"],
        0,
        "{admin}"
    );
    for key in [
        None,
        Some(KEY_A),
        Some(KEY_B_READ),
        Some(KEY_B_WRITE),
        Some("nope"),
    ] {
        let (status, body) = readyz_facts(&client, &server, key);
        assert_eq!(
            status, 200,
            "probes get readiness with any key or none: {body}"
        );
        assert_eq!(shown_counts(&body), Vec::<String>::new(), "{key:?}: {body}");
        assert!(
            readiness_component(&body, "store")["facts"]["raw_bytes"].as_i64() > Some(0),
            "sizes are for anyone: {body}"
        );
        // The details quote no count either: the only number left is the byte size.
        let details: String = body["components"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|component| component["detail"].as_str())
            .collect::<Vec<_>>()
            .join(" | ");
        assert!(
            !details.contains("records") && !details.contains(" 3 "),
            "{key:?}: {details}"
        );
    }
    drop(server);

    // Open (no keys, loopback only, the demo's mode): every caller is the operator.
    let open = Server::start(&dir.path().join("open"), &[]);
    let (status, body) = readyz_facts(&client, &open, None);
    assert_eq!(status, 200, "{body}");
    let mut shown = shown_counts(&body);
    shown.sort();
    assert_eq!(
        shown,
        ["committed_offset", "lag_records", "raw_events", "raw_files"],
        "{body}"
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
