//! Drills of the circuit breaker around Kafka writes in `ais ingest` and the Redis
//! overflow behind it, over real servers of the drill's own (a Tansu broker on SQLite
//! storage and a Redis with `appendfsync always`, both stopped and started again).
//!
//! Clients send steady traffic with event ids and retry a 503 after its Retry-After,
//! as a well-behaved client does. Every answer must be 202, or 503 with Retry-After;
//! afterwards the deduplicated rollups in ClickHouse must count every event exactly
//! once: nothing acknowledged is lost, and the copies that a timed-out Kafka append
//! and the overflow's replay can both deliver are counted once.
//!
//! - The broker stopped for 15 s: the circuit opens, acknowledgements continue from
//!   the overflow, and when the broker returns the overflow drains back. (On Tansu 0.6
//!   the stream then resumes in a new consumer group: see the test.)
//! - The broker and Redis stopped together: every request meanwhile is refused with
//!   503; once they return, the retries and everything acknowledged before are stored.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::private::PrivateServer;
use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const MODELS: &[&str] = &["gpt-4o", "claude-sonnet", "llama-70b"];
const SENDERS: usize = 4;
const PER_REQUEST: usize = 50;
const PACE: Duration = Duration::from_millis(40);
/// The breaker's settings in the drills: quick to open and to probe.
const KAFKA_TIMEOUT_MS: &str = "1000";
const OPEN_MS: &str = "1000";

/// One request attempt as the client saw it.
struct Attempt {
    started: Instant,
    ended: Instant,
    status: u16,
    retry_after: bool,
}

/// What the senders got acknowledged in the end (every request is retried until 202).
#[derive(Default)]
struct Sent {
    events: u64,
    input_tokens: u64,
    output_tokens: u64,
    attempts: Vec<Attempt>,
}

/// `SENDERS` threads posting `PER_REQUEST` events every `PACE` each until `stop`.
fn start_senders(ingest: &Server, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Sent>> {
    (0..SENDERS)
        .map(|thread| {
            let url = ingest.url("/v1/events");
            let stop = stop.clone();
            std::thread::spawn(move || {
                install_tls_provider();
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("client");
                let mut rng = SmallRng::seed_from_u64(thread as u64);
                let mut sent = Sent::default();
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let now = now_ms();
                    let mut body = Vec::with_capacity(PER_REQUEST);
                    let (mut input, mut output) = (0, 0);
                    for _ in 0..PER_REQUEST {
                        let (i, o) = (rng.random_range(0..4_000u64), rng.random_range(0..900u64));
                        input += i;
                        output += o;
                        body.push(serde_json::json!({
                            "event_id": format!("s{thread}-{sequence}"),
                            "timestamp": now - rng.random_range(0..5_000),
                            "model": MODELS[rng.random_range(0..MODELS.len())],
                            "latency_ms": rng.random_range(5.0..3_000.0),
                            "input_tokens": i,
                            "output_tokens": o,
                        }));
                        sequence += 1;
                    }
                    let body = serde_json::Value::Array(body).to_string();
                    // Retried until acknowledged, however long the outage.
                    loop {
                        let started = Instant::now();
                        let answer = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send();
                        let ended = Instant::now();
                        let (status, retry_after) = match &answer {
                            Ok(response) => (
                                response.status().as_u16(),
                                response
                                    .headers()
                                    .get("retry-after")
                                    .and_then(|value| value.to_str().ok())
                                    .and_then(|value| value.parse::<u64>().ok()),
                            ),
                            Err(error) => panic!("ingest did not answer: {error}"),
                        };
                        sent.attempts.push(Attempt {
                            started,
                            ended,
                            status,
                            retry_after: retry_after.is_some(),
                        });
                        if status == 202 {
                            break;
                        }
                        let wait = retry_after.unwrap_or(1).min(1);
                        std::thread::sleep(Duration::from_secs(wait));
                    }
                    sent.events += PER_REQUEST as u64;
                    sent.input_tokens += input;
                    sent.output_tokens += output;
                    std::thread::sleep(PACE);
                }
                sent
            })
        })
        .collect()
}

fn join_senders(senders: Vec<std::thread::JoinHandle<Sent>>) -> Sent {
    let mut total = Sent::default();
    for sender in senders {
        let sent = sender.join().expect("sender");
        total.events += sent.events;
        total.input_tokens += sent.input_tokens;
        total.output_tokens += sent.output_tokens;
        total.attempts.extend(sent.attempts);
    }
    total
}

/// A gauge or counter without labels from a server's `/metrics`.
fn metric(client: &reqwest::blocking::Client, server: &Server, name: &str) -> Option<f64> {
    let text = client
        .get(server.url("/metrics"))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// The deduplicated rollups' totals: requests, input tokens, output tokens.
fn stored_totals(cluster: &Cluster, client: &reqwest::blocking::Client) -> [u64; 3] {
    let rows = cluster.clickhouse_rows(
        client,
        "SELECT sum(requests), sum(input_tokens), sum(output_tokens) FROM rollups FINAL WHERE tenant != ''",
    );
    let value = |index: usize| {
        rows.first()
            .and_then(|row| row.get(index))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    [value(0), value(1), value(2)]
}

/// Waits until the overflow is empty and the circuit closed; returns how long it took.
fn wait_drained(client: &reqwest::blocking::Client, ingest: &Server) -> Duration {
    let started = Instant::now();
    loop {
        let records = metric(client, ingest, "ais_overflow_records");
        let state = metric(client, ingest, "ais_ingest_breaker_state");
        if records == Some(0.0) && state == Some(0.0) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the overflow did not drain in {PATIENCE:?}: {records:?} records, breaker {state:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the store counts as many requests as were acknowledged, then checks
/// every total, and that no late copy arrives after.
fn assert_stored_exactly(
    drill: &Drill,
    client: &reqwest::blocking::Client,
    sent: &Sent,
) -> Duration {
    let cluster = &drill.cluster;
    let started = Instant::now();
    let want = [sent.events, sent.input_tokens, sent.output_tokens];
    loop {
        let stored = stored_totals(cluster, client);
        assert!(
            stored[0] <= want[0],
            "{} requests counted of {} sent: a copy was counted twice",
            stored[0],
            want[0]
        );
        if stored[0] == want[0] {
            assert_eq!(stored, want, "requests, input and output tokens");
            break;
        }
        if started.elapsed() > PATIENCE {
            panic!(
                "stored {stored:?} of {want:?} after {PATIENCE:?}; stream log:\n{}\nbroker log:\n{}",
                log_tail(&drill.logs.path().join("stream.log"), 40),
                drill.tansu.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = started.elapsed();
    // Nothing is left to arrive once the store has committed every record of the log
    // (the overflow is empty and the senders have stopped): a late copy would be among
    // them.
    eventually("the stream to commit every record in the log", || {
        let end = cluster.log_end_records()?;
        match cluster.committed_records(client) {
            committed if committed >= end => Ok(()),
            committed => Err(format!("{committed} of {end} log records committed")),
        }
    });
    assert_eq!(
        stored_totals(cluster, client),
        want,
        "no late copy is counted"
    );
    assert_eq!(
        cluster.stored_events(client),
        sent.events,
        "raw events, each once"
    );
    cluster.assert_ledger_accounts(client, sent.events);
    took
}

/// Every answer was 202, or 503 with Retry-After.
fn assert_statuses(sent: &Sent) -> (usize, usize) {
    let mut refused = 0;
    for attempt in &sent.attempts {
        match attempt.status {
            202 => {}
            503 => {
                assert!(attempt.retry_after, "a 503 without Retry-After");
                refused += 1;
            }
            other => panic!("ingest answered {other}"),
        }
    }
    (sent.attempts.len(), refused)
}

struct Drill {
    tansu: PrivateServer,
    redis: PrivateServer,
    cluster: Cluster,
    ingest: Server,
    stream: Option<Server>,
    logs: tempfile::TempDir,
}

impl Drill {
    fn start(name: &str) -> Option<Drill> {
        let tansu = PrivateServer::tansu()?;
        let redis = PrivateServer::redis()?;
        let cluster = Cluster::create_on(
            name,
            2,
            Some(tansu.address()),
            std::env::var("AIS_TEST_CLICKHOUSE").ok(),
        )?;
        let redis_url = format!("redis://{}", redis.address());
        let ingest = cluster.ingest(&[
            ("AIS_REDIS", redis_url.as_str()),
            ("AIS_KAFKA_TIMEOUT_MS", KAFKA_TIMEOUT_MS),
            ("AIS_BREAKER_OPEN_MS", OPEN_MS),
        ]);
        let logs = tempfile::tempdir().expect("temp dir");
        let stream = cluster.stream(Some(&logs.path().join("stream.log")));
        Some(Drill {
            tansu,
            redis,
            cluster,
            ingest,
            stream: Some(stream),
            logs,
        })
    }
}

/// On Tansu 0.6 with SQLite storage, a consumer group that was active across the
/// broker's restart is broken by it: the group's next heartbeat panics inside the broker
/// (`unreachable!()` in `tansu-storage-0.6.0/src/service.rs:337`, reached from
/// `update_group`), and from then on the broker leaves that group's fetches unanswered
/// while it still takes produce requests. So once the broker is back the drill replaces
/// the stream process with one in a new consumer group, as an operator would: the
/// stream's positions are in the store, not in the group, so the new member resumes
/// exactly where the store stands. On Kafka the first member would simply resume.
#[test]
fn a_broker_outage_is_bridged_by_the_overflow_and_every_ack_is_stored_once() {
    let Some(mut drill) = Drill::start("brokerdown") else {
        return;
    };
    let client = client();
    let stop = Arc::new(AtomicBool::new(false));
    let senders = start_senders(&drill.ingest, &stop);
    std::thread::sleep(Duration::from_secs(3));

    drill.tansu.stop();
    let outage = Instant::now();
    // The broker stays down until the circuit is open and the overflow holds events,
    // and readiness has been read meanwhile: what the drill is about, however long it
    // takes on this machine.
    let (overflow_held, (status, body)) = eventually(
        "the circuit to open and the overflow to hold events",
        || {
            let state = metric(&client, &drill.ingest, "ais_ingest_breaker_state").unwrap_or(0.0);
            let overflow = metric(&client, &drill.ingest, "ais_overflow_records").unwrap_or(0.0);
            if state != 2.0 || overflow <= 0.0 {
                return Err(format!("breaker {state}, overflow {overflow} records"));
            }
            let response = client
                .get(drill.ingest.url("/readyz"))
                .send()
                .map_err(|error| error.to_string())?;
            Ok((
                overflow,
                (
                    response.status().as_u16(),
                    response.text().unwrap_or_default(),
                ),
            ))
        },
    );
    let down_for = outage.elapsed();
    drill.tansu.start_again();
    let back = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let sent = join_senders(senders);

    assert_eq!(status, 200, "ready while the overflow stands in: {body}");
    assert!(body.contains("circuit open"), "{body}");
    let (attempts, refused) = assert_statuses(&sent);
    if let Some(stream) = drill.stream.take() {
        stream.kill_9();
    }
    let group = format!("{}-after-restart", drill.cluster.group);
    drill.stream = Some(
        drill
            .cluster
            .in_group(&group)
            .stream(Some(&drill.logs.path().join("stream.log"))),
    );
    let drained = wait_drained(&client, &drill.ingest);
    let drained_after = back.elapsed();
    // Ingest's figures first: they hold whether or not the store catches up.
    eprintln!(
        "FIGURE broker down {:.1} s: {} events acknowledged in {attempts} requests, {refused} answered 503; \
         overflow held {overflow_held} events; overflow empty {:.1} s after the broker returned \
         (drain wait {:.1} s)",
        down_for.as_secs_f64(),
        sent.events,
        drained_after.as_secs_f64(),
        drained.as_secs_f64(),
    );
    let stored_in = assert_stored_exactly(&drill, &client, &sent);
    eprintln!(
        "FIGURE broker down {:.1} s: all stored {:.1} s after the overflow was empty; loss 0, duplicates counted 0",
        down_for.as_secs_f64(),
        stored_in.as_secs_f64()
    );
}

#[test]
fn with_broker_and_redis_down_only_503s_are_answered_and_every_ack_is_stored() {
    let Some(mut drill) = Drill::start("bothdown") else {
        return;
    };
    let client = client();
    let stop = Arc::new(AtomicBool::new(false));
    let senders = start_senders(&drill.ingest, &stop);
    std::thread::sleep(Duration::from_secs(3));

    drill.redis.stop();
    drill.tansu.stop();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let back = Instant::now();
    drill.redis.start_again();
    drill.tansu.start_again();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let sent = join_senders(senders);

    let (attempts, refused) = assert_statuses(&sent);
    let during: Vec<&Attempt> = sent
        .attempts
        .iter()
        .filter(|attempt| attempt.started >= down && attempt.ended <= back)
        .collect();
    assert!(
        !during.is_empty(),
        "requests were sent while both were down"
    );
    assert!(
        during.iter().all(|attempt| attempt.status == 503),
        "with the broker and Redis down nothing is acknowledged"
    );
    let drained = wait_drained(&client, &drill.ingest);
    let stored_in = assert_stored_exactly(&drill, &client, &sent);
    eprintln!(
        "FIGURE broker and redis down 10 s: {} requests during the outage, all 503; {} events acknowledged \
         in {attempts} requests ({refused} answered 503); drained {:.1} s and all stored {:.1} s after \
         they returned; loss 0, duplicates counted 0",
        during.len(),
        sent.events,
        drained.as_secs_f64(),
        stored_in.as_secs_f64()
    );
}
