//! The dead-letter drill, on both engines: poison records in the log (bytes of no wire
//! version, a version from the future, events that break a v1 rule, a timestamp that
//! would overflow the minute arithmetic) land in the dead-letter queue with their
//! reason, source and original bytes, and the events around them flow past, counted
//! exactly. `/v1/dlq` and `ais dlq list` show each letter to whom it belongs; a replay
//! (`ais dlq replay`) appends the record again, and, still bad, it comes back as a new
//! letter. One node: the WAL written before `ais serve` starts. Distributed: records
//! produced straight into the Kafka topic between events sent through `ais ingest`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use ais_model::dead_letter::{self, DeadLetter, LetterId, Reason};
use ais_model::{wire, Event, EventId};
use base64::Engine as _;
use common::cluster::{events_with_rollups, send_all, Cluster, Rollups};
use common::*;
use rand::SeedableRng;
use serde_json::Value;

const KEYS: &str = "acme:acme-key,other:other-key,ops:admin-key:admin";
const MODELS: &[&str] = &["gpt-4o", "claude-sonnet"];

/// A poison record: its bytes, the reason it must be dead-lettered for, and the tenant
/// its letter must name.
struct Poison {
    record: Vec<u8>,
    reason: Reason,
    tenant: Option<&'static str>,
}

fn encoded(tenant: &str, event: &Event<'_>) -> Vec<u8> {
    let mut bytes = Vec::new();
    wire::encode_into(tenant, event, &mut bytes);
    bytes
}

fn poisons(now: i64) -> Vec<Poison> {
    let mut future_version = encoded(
        "acme",
        &Event::new("gpt-4o", EventId::Generated(1), now, 9.0),
    );
    future_version[0] = ais_model::wire::VERSION_4 + 1;
    vec![
        Poison {
            record: vec![1, 0xff, 0xff, 0xff],
            reason: Reason::Undecodable,
            tenant: None,
        },
        Poison {
            record: future_version,
            reason: Reason::UnsupportedVersion,
            tenant: None,
        },
        Poison {
            record: encoded("acme", &Event::new("", EventId::Generated(2), now, 9.0)),
            reason: Reason::Invalid,
            tenant: Some("acme"),
        },
        Poison {
            record: encoded(
                "other",
                &Event::new("gpt-4o", EventId::Generated(3), i64::MIN, 9.0),
            ),
            reason: Reason::Invalid,
            tenant: Some("other"),
        },
        Poison {
            record: Vec::new(),
            reason: Reason::Undecodable,
            tenant: None,
        },
    ]
}

/// What a test expects of one letter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    reason: &'static str,
    tenant: Option<String>,
    record: Vec<u8>,
}

fn expected(poison: &Poison) -> Expected {
    Expected {
        reason: poison.reason.as_str(),
        tenant: poison.tenant.map(str::to_string),
        record: poison.record.clone(),
    }
}

/// The letters of a `/v1/dlq` answer by id, as [`Expected`].
fn letters_of(body: &Value) -> BTreeMap<String, Expected> {
    body["letters"]
        .as_array()
        .expect("letters")
        .iter()
        .map(|letter| {
            let id = letter["id"].as_str().expect("id").to_string();
            assert_eq!(
                id,
                format!("{}:{}", letter["partition"], letter["offset"]),
                "{letter}"
            );
            let record = base64::engine::general_purpose::STANDARD
                .decode(letter["record"].as_str().expect("record"))
                .expect("base64");
            assert_eq!(letter["record_bytes"], record.len());
            let reason = Reason::parse(letter["reason"].as_str().expect("reason"))
                .expect("a known reason")
                .as_str();
            (
                id,
                Expected {
                    reason,
                    tenant: letter["tenant"].as_str().map(str::to_string),
                    record,
                },
            )
        })
        .collect()
}

/// `/v1/dlq` with `key`, polled until it holds `count` letters.
fn wait_for_letters(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: &str,
    count: usize,
) -> BTreeMap<String, Expected> {
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    loop {
        let (status, body) = get_json(client, server, Some(key), "/v1/dlq?limit=1000");
        assert_eq!(status, 200, "{body}");
        let letters = letters_of(&body);
        if letters.len() >= count {
            assert_eq!(letters.len(), count, "{body}");
            return letters;
        }
        assert!(
            Instant::now() < deadline,
            "the DLQ holds {} letters, not {count}: {body}",
            letters.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `ais dlq ARGS`; its stdout, after checking it succeeded.
fn ais_dlq(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ais"))
        .arg("dlq")
        .args(args)
        .env_remove("AIS_API_KEY")
        .output()
        .expect("ais dlq runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "ais dlq {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Counter values from `/metrics`, by the line's name and labels.
fn counters(client: &reqwest::blocking::Client, server: &Server) -> BTreeMap<String, f64> {
    let text = client
        .get(server.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .expect("metrics");
    text.lines()
        .filter(|line| line.starts_with("ais_dlq_"))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn dlq_counter(counters: &BTreeMap<String, f64>, reason: &str) -> f64 {
    counters
        .get(&format!("ais_dlq_records_total{{reason=\"{reason}\"}}"))
        .copied()
        .unwrap_or_else(|| panic!("no ais_dlq_records_total for {reason}: {counters:?}"))
}

/// What the letters of a map count per reason.
fn per_reason(letters: &BTreeMap<String, Expected>) -> BTreeMap<&'static str, f64> {
    let mut counts: BTreeMap<&'static str, f64> = Reason::ALL
        .iter()
        .map(|reason| (reason.as_str(), 0.0))
        .collect();
    for letter in letters.values() {
        *counts.entry(letter.reason).or_default() += 1.0;
    }
    counts
}

fn summary_requests(client: &reqwest::blocking::Client, server: &Server, key: &str) -> u64 {
    let now = now_ms();
    let (status, body) = get_json(
        client,
        server,
        Some(key),
        &format!(
            "/v1/query/summary?from={}&to={}",
            now - 3 * 3_600_000,
            now + 120_000
        ),
    );
    assert_eq!(status, 200, "{body}");
    body["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|model| model["requests"].as_u64().expect("requests"))
        .sum()
}

fn replay_one(base: &str, key: &str, id: &str) {
    let out = ais_dlq(&["replay", "--url", base, "--api-key", key, id]);
    assert!(
        out.starts_with(&format!("replayed 1 dead letter(s): {id}")),
        "{out}"
    );
}

/// The new letter a replay of `id` made: the one id not in `before`, with the bytes
/// of the letter replayed.
fn assert_replayed_again(
    before: &BTreeMap<String, Expected>,
    after: &BTreeMap<String, Expected>,
    id: &str,
) {
    let new: Vec<(&String, &Expected)> = after
        .iter()
        .filter(|(candidate, _)| !before.contains_key(*candidate))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(
        new[0].1, &before[id],
        "the replayed record, dead-lettered again"
    );
    for (kept, letter) in before {
        assert_eq!(after.get(kept), Some(letter), "{kept} stays as it was");
    }
}

#[test]
fn single_node_poison_in_the_wal_lands_in_the_dlq_and_the_rest_flows_past() {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = now_ms();
    // The log as `ais serve` finds it: 30 events of acme with poison between them.
    let mut records: Vec<(Vec<u8>, Option<Expected>)> = (0..30)
        .map(|i| {
            let event = Event::new(
                MODELS[i % 2],
                EventId::Client(format!("wal-{i}").into()),
                now - 600_000 + i as i64 * 1_000,
                100.0 + i as f64,
            );
            (encoded("acme", &event), None)
        })
        .collect();
    for (index, poison) in poisons(now).iter().enumerate() {
        records.insert(
            3 + index * 6,
            (poison.record.clone(), Some(expected(poison))),
        );
    }
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            use ais_log::Log;
            let wal = ais_log::wal::Wal::open(ais_log::wal::WalConfig::new(dir.path().join("wal")))
                .expect("wal");
            for (record, _) in &records {
                let mut batch = ais_log::RecordBatch::default();
                batch.push(record);
                wal.append(batch).await.expect("append");
            }
            wal.close().await.expect("close");
        });
    let want: BTreeMap<String, Expected> = records
        .iter()
        .enumerate()
        .filter_map(|(offset, (_, letter))| Some((format!("0:{offset}"), letter.clone()?)))
        .collect();
    assert_eq!(want.len(), 5);

    let server = Server::start(dir.path(), &[("AIS_API_KEYS", KEYS)]);
    let client = client();
    // Every reason's counter and the replay counter are exported from the start.
    let at_start = counters(&client, &server);
    assert!(
        at_start.contains_key("ais_dlq_replayed_total"),
        "{at_start:?}"
    );
    for reason in Reason::ALL {
        dlq_counter(&at_start, reason.as_str());
    }
    // Live traffic after the poison flows too.
    let live: Vec<Value> = (0..10)
        .map(|i| {
            serde_json::json!({"event_id": format!("live-{i}"), "timestamp": now - 60_000,
                "model": "gpt-4o", "latency_ms": 12.5})
        })
        .collect();
    let (status, body) = post_json(&client, &server, Some("acme-key"), &Value::Array(live));
    assert_eq!(status, 202, "{body}");
    server.wait_caught_up(&client);
    assert_eq!(summary_requests(&client, &server, "acme-key"), 40);

    let letters = wait_for_letters(&client, &server, "admin-key", 5);
    assert_eq!(letters, want);
    let (_, acme) = get_json(&client, &server, Some("acme-key"), "/v1/dlq");
    let acme_ids: Vec<String> = letters_of(&acme).into_keys().collect();
    let acme_want: Vec<String> = want
        .iter()
        .filter(|(_, letter)| letter.tenant.as_deref() == Some("acme"))
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(acme_ids, acme_want, "a tenant sees its own letters only");
    let (_, other) = get_json(&client, &server, Some("other-key"), "/v1/dlq");
    assert_eq!(letters_of(&other).len(), 1);
    let counted = counters(&client, &server);
    for (reason, count) in per_reason(&letters) {
        assert_eq!(dlq_counter(&counted, reason), count, "{reason}");
    }

    let listed = ais_dlq(&["list", "--url", &server.base, "--api-key", "admin-key"]);
    for (id, letter) in &letters {
        let line = listed
            .lines()
            .find(|line| line.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id} not listed:\n{listed}"));
        assert!(line.contains(letter.reason), "{line}");
    }

    // acme's invalid event, replayed: still invalid, a new letter at a new offset.
    let acme_id = acme_want[0].clone();
    replay_one(&server.base, "acme-key", &acme_id);
    let after = wait_for_letters(&client, &server, "admin-key", 6);
    assert_replayed_again(&letters, &after, &acme_id);
    let counted = counters(&client, &server);
    assert_eq!(counted.get("ais_dlq_replayed_total"), Some(&1.0));
    assert_eq!(
        dlq_counter(&counted, "invalid"),
        per_reason(&after)["invalid"]
    );

    // A restart keeps every letter once and counts nothing twice.
    assert!(server.stop().success());
    let server = Server::start(dir.path(), &[("AIS_API_KEYS", KEYS)]);
    server.wait_caught_up(&client);
    assert_eq!(wait_for_letters(&client, &server, "admin-key", 6), after);
    assert_eq!(summary_requests(&client, &server, "acme-key"), 40);
}

/// Produces `record` to `topic` (keyed like ingest's records when it has a key),
/// returning where it landed as a letter id.
fn produce(producer: &rdkafka::producer::FutureProducer, topic: &str, record: &[u8]) -> String {
    use rdkafka::producer::FutureRecord;
    let key = wire::peek_key(record)
        .ok()
        .map(|(tenant, model)| format!("{tenant}\0{model}").into_bytes());
    let mut message = FutureRecord::<Vec<u8>, [u8]>::to(topic).payload(record);
    if let Some(key) = &key {
        message = message.key(key);
    }
    let delivered = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(producer.send(message, Duration::from_secs(10)))
        .expect("delivered");
    format!("{}:{}", delivered.partition, delivered.offset)
}

#[test]
fn distributed_poison_in_kafka_lands_in_the_dlq_topic_and_the_rest_flows_past() {
    let Some(cluster) = Cluster::create("dlq", 2) else {
        return;
    };
    let client = client();
    let ingest = cluster.ingest(&[("AIS_API_KEYS", KEYS)]);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let mut expected_rollups = Rollups::new();
    let now = now_ms();
    let events = events_with_rollups(
        &mut rng,
        "acme",
        MODELS,
        500,
        now,
        40 * 60_000,
        &mut expected_rollups,
    );
    send_all(&client, &ingest, Some("acme-key"), &events[..250], 50);
    let producer: rdkafka::producer::FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &cluster.kafka)
        .create()
        .expect("producer");
    let mut want = BTreeMap::new();
    for poison in poisons(now) {
        let id = produce(&producer, &cluster.topic, &poison.record);
        want.insert(id, expected(&poison));
    }
    send_all(&client, &ingest, Some("acme-key"), &events[250..], 50);

    let stream = cluster.stream(None);
    let query = cluster.query_with_kafka(&[("AIS_API_KEYS", KEYS)]);
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    // A batch's raw events are written before the INSERT that commits its rollups, so
    // the rollups are waited for too.
    while cluster.stored_events(&client) < 500
        || cluster.stored_rollups(&client) != expected_rollups
    {
        if Instant::now() >= deadline {
            assert_eq!(
                cluster.stored_events(&client),
                500,
                "every good event stored"
            );
            assert_eq!(
                cluster.stored_rollups(&client),
                expected_rollups,
                "the rest, exactly"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let letters = wait_for_letters(&client, &query, "admin-key", 5);
    assert_eq!(letters, want);
    let (_, acme) = get_json(&client, &query, Some("acme-key"), "/v1/dlq");
    assert_eq!(letters_of(&acme).len(), 1, "{acme}");
    let stream_counts = counters(&client, &stream);
    for (reason, count) in per_reason(&letters) {
        assert_eq!(dlq_counter(&stream_counts, reason), count, "{reason}");
    }

    // A letter written twice (a stream that crashed between producing it and its
    // commit) is listed once, as first written.
    let (copied_id, copied) = letters.iter().next().expect("a letter");
    let source: LetterId = copied_id.parse().expect("id");
    let copy = DeadLetter::new(
        source,
        Reason::parse(copied.reason).expect("reason"),
        "again",
        &copied.record,
        now_ms() + 3_600_000,
    );
    let copy_bytes = dead_letter::encode(&copy);
    let (status, body) = get_json(&client, &query, Some("admin-key"), "/v1/dlq?limit=1000");
    assert_eq!(status, 200);
    let times_before: Vec<Value> = body["letters"]
        .as_array()
        .expect("letters")
        .iter()
        .map(|letter| letter["dead_lettered_at"].clone())
        .collect();
    {
        use rdkafka::producer::FutureRecord;
        let topic = format!("{}.dlq", cluster.topic);
        let key = copied_id.as_bytes().to_vec();
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(producer.send(
                FutureRecord::to(&topic).key(&key).payload(&copy_bytes),
                Duration::from_secs(10),
            ))
            .expect("copy delivered");
    }
    let (_, body) = get_json(&client, &query, Some("admin-key"), "/v1/dlq?limit=1000");
    assert_eq!(letters_of(&body), letters, "each id once");
    let times_after: Vec<Value> = body["letters"]
        .as_array()
        .expect("letters")
        .iter()
        .map(|letter| letter["dead_lettered_at"].clone())
        .collect();
    assert_eq!(times_after, times_before, "the first copy is the one shown");

    // A replay through `ais query` goes back into the events topic, and the record,
    // still undecodable, comes back to the DLQ under its new offset.
    let garbage_id = letters
        .iter()
        .find(|(_, letter)| letter.reason == "undecodable")
        .map(|(id, _)| id.clone())
        .expect("an undecodable letter");
    replay_one(&query.base, "admin-key", &garbage_id);
    let after = wait_for_letters(&client, &query, "admin-key", 6);
    assert_replayed_again(&letters, &after, &garbage_id);
    assert_eq!(
        counters(&client, &query).get("ais_dlq_replayed_total"),
        Some(&1.0)
    );
    assert_eq!(cluster.stored_events(&client), 500, "nothing else changed");

    // Without --kafka, `ais query` says where the dead letters are.
    let plain = cluster.query(&[("AIS_API_KEYS", KEYS)]);
    let (status, body) = get_json(&client, &plain, Some("admin-key"), "/v1/dlq");
    assert_eq!(status, 501, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("--kafka")),
        "{body}"
    );
    drop(stream);
}
