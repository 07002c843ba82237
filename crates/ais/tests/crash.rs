//! Crash test: under load with client-set event ids, `kill -9` the server at a random
//! moment, restart it, resend every request that got no 202 (as a real client retries,
//! plus some that did get one, as a client that lost the answer would), and prove the
//! rollups count every event exactly once, that `/v1/events` finds every event of
//! every acknowledged request exactly once, that the ledger accounts for every
//! acknowledged event and balances, that the usage ledger counts every event once per
//! user, and that no unregistered Parquet file is left in the data directory.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const LOADERS: usize = 4;
const EVENTS_PER_REQUEST: usize = 200;
const MODELS: &[&str] = &["m-one", "m-two", "m-three"];

struct Request {
    body: String,
    events: usize,
    input_tokens: u64,
}

fn build_requests(run: u64, count: usize, now: i64) -> Vec<Request> {
    let mut rng = SmallRng::seed_from_u64(run);
    (0..count)
        .map(|r| {
            let mut input_tokens = 0;
            let events: Vec<Value> = (0..EVENTS_PER_REQUEST)
                .map(|e| {
                    let tokens = rng.random_range(1..1_000u64);
                    input_tokens += tokens;
                    let mut event = json!({
                        "event_id": format!("run{run}-r{r}-e{e}"),
                        "trace_id": format!("run{run}-r{r}"),
                        "timestamp": now - rng.random_range(0..60_000),
                        "model": MODELS[(r + e) % MODELS.len()],
                        "latency_ms": rng.random_range(1.0..3_000.0),
                        "input_tokens": tokens,
                        "output_tokens": 1,
                        "cost_usd": (tokens * 3) as f64 / 1e6,
                    });
                    // Usage per user: 50 users, and events of none.
                    if e % 10 != 0 {
                        event["user_id"] = json!(format!("u{}", (r + e * 7) % 50));
                    }
                    event
                })
                .collect();
            Request {
                body: Value::Array(events).to_string(),
                events: EVENTS_PER_REQUEST,
                input_tokens,
            }
        })
        .collect()
}

fn send(client: &reqwest::blocking::Client, base: &str, body: &str) -> bool {
    client
        .post(format!("{base}/v1/events"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .map(|response| response.status().as_u16() == 202)
        .unwrap_or(false)
}

fn crash_run(run: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = now_ms();
    let requests = Arc::new(build_requests(run, 1_500, now));
    let acked: Arc<Mutex<Vec<bool>>> = Arc::new(Mutex::new(vec![false; requests.len()]));
    let server = Server::start(dir.path(), &[]);
    let base = server.base.clone();
    let next = Arc::new(AtomicUsize::new(0));
    let acks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..LOADERS)
        .map(|_| {
            let (requests, acked, next, acks, stop, base) = (
                Arc::clone(&requests),
                Arc::clone(&acked),
                Arc::clone(&next),
                Arc::clone(&acks),
                Arc::clone(&stop),
                base.clone(),
            );
            std::thread::spawn(move || {
                let client = client();
                while !stop.load(Ordering::Relaxed) {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= requests.len() {
                        break;
                    }
                    let ok = send(&client, &base, &requests[index].body);
                    if ok {
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(mut acked) = acked.lock() {
                        acked[index] = ok;
                    }
                }
            })
        })
        .collect();

    // Kill after a random number of acknowledged requests, with a third of them or more
    // still to send: the kill lands while requests are in flight, however fast the
    // machine is.
    let mut rng = SmallRng::seed_from_u64(run * 7919);
    let kill_after = rng.random_range(20..requests.len() * 2 / 3);
    eventually("requests acknowledged before the kill", || {
        match acks.load(Ordering::Relaxed) {
            done if done >= kill_after => Ok(()),
            done => Err(format!("{done} of {kill_after} acknowledged")),
        }
    });
    server.kill_9();
    stop.store(true, Ordering::Relaxed);
    for loader in loaders {
        loader.join().expect("loader thread");
    }
    let acked_before: Vec<bool> = acked.lock().expect("acked").clone();
    let acked_count = acked_before.iter().filter(|ok| **ok).count();
    assert!(
        acked_count < requests.len(),
        "run {run}: the kill landed after every request was acknowledged, not mid-load"
    );

    // Restart on the same data; retry every request without a 202, and a few with one.
    let server = Server::start(dir.path(), &[]);
    let client = client();
    for (index, request) in requests.iter().enumerate() {
        let retry_anyway = acked_before[index] && index % 5 == 0;
        if !acked_before[index] || retry_anyway {
            assert!(
                send(&client, &server.base, &request.body),
                "retry of request {index} gets 202"
            );
        }
    }
    server.wait_caught_up(&client);

    let from = minute_floor(now) - 5 * 60_000;
    let to = minute_floor(now) + 2 * 60_000;
    let (status, summary) = get_json(
        &client,
        &server,
        None,
        &format!("/v1/query/summary?from={from}&to={to}"),
    );
    assert_eq!(status, 200);
    let total_requests: u64 = MODELS
        .iter()
        .map(|model| {
            model_entry(&summary, model)["requests"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    let total_tokens: u64 = MODELS
        .iter()
        .map(|model| {
            model_entry(&summary, model)["input_tokens"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    let want_events: u64 = requests.iter().map(|r| r.events as u64).sum();
    let want_tokens: u64 = requests.iter().map(|r| r.input_tokens).sum();
    assert_eq!(
        total_requests, want_events,
        "run {run}: {acked_count} requests acked before the kill; every event counted exactly once"
    );
    assert_eq!(total_tokens, want_tokens, "run {run}: token sums exact");
    // The ledger: every event committed once, each hour balanced, and as many accepted
    // as were acknowledged, plus those a request in flight at the kill made durable
    // without its answer (at most one request per loader).
    let ledger = ledger_totals(&client, &server, None, (from - 3_600_000, to));
    assert_eq!(ledger.committed, want_events, "run {run}: ledger committed");
    let acknowledged: u64 = requests
        .iter()
        .enumerate()
        .filter(|(index, _)| acked_before[*index])
        .map(|(_, request)| request.events as u64)
        .sum::<u64>()
        + requests
            .iter()
            .enumerate()
            .filter(|(index, _)| !acked_before[*index] || index % 5 == 0)
            .map(|(_, request)| request.events as u64)
            .sum::<u64>();
    let in_flight = (LOADERS * EVENTS_PER_REQUEST) as u64;
    assert!(
        (acknowledged..=acknowledged + in_flight).contains(&ledger.accepted),
        "run {run}: {} accepted, {acknowledged} acknowledged",
        ledger.accepted
    );
    assert_eq!(ledger.duplicates, ledger.accepted - ledger.committed);
    // Usage per user: each event once, whatever was retried.
    let mut usage = UsageTally::new();
    for request in requests.iter() {
        let events: Value = serde_json::from_str(&request.body).expect("a request body");
        for event in events.as_array().expect("events") {
            let user = event["user_id"].as_str().map(str::to_string);
            let tokens = event["input_tokens"].as_u64().expect("tokens");
            let entry = usage.entry(user).or_default();
            entry.0 += 1;
            entry.1 += tokens;
            entry.2 += tokens * 3;
        }
    }
    assert_usage(
        &client,
        &server,
        None,
        "user_id",
        (now - 60_000, now),
        &usage,
    );
    check_raw_events(
        &client,
        &server,
        run,
        &acked_before,
        want_events,
        (from, to),
    );
    eprintln!(
        "crash run {run}: {acked_count}/{} requests acked before kill -9",
        requests.len()
    );
}

/// Raw events: the store holds exactly one row per event, the Parquet files on disk
/// are exactly the registered ones, and each request acknowledged before the kill is
/// found whole, once, by its trace id.
fn check_raw_events(
    client: &reqwest::blocking::Client,
    server: &Server,
    run: u64,
    acked_before: &[bool],
    want_events: u64,
    (from, to): (i64, i64),
) {
    let ready = server.readiness(client);
    let store = readiness_component(&ready, "store").clone();
    assert_eq!(
        store["facts"]["raw_events"].as_u64(),
        Some(want_events),
        "run {run}: one raw row per event: {store}"
    );
    let on_disk = parquet_files(&server.data_dir.join("events"));
    assert_eq!(
        Some(on_disk.len() as u64),
        store["facts"]["raw_files"].as_u64(),
        "run {run}: the files on disk are the registered ones: {on_disk:?}"
    );
    assert!(
        on_disk
            .iter()
            .all(|path| path.extension().is_some_and(|ext| ext == "parquet")),
        "run {run}: no temporary file left: {on_disk:?}"
    );
    for (index, _) in acked_before.iter().enumerate().filter(|(_, acked)| **acked) {
        let (status, body) = get_json(
            client,
            server,
            None,
            &format!("/v1/events?from={from}&to={to}&trace_id=run{run}-r{index}&limit=1000"),
        );
        assert_eq!(status, 200, "{body}");
        let mut ids: Vec<&str> = body["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter_map(|event| event["event_id"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        let mut want: Vec<String> = (0..EVENTS_PER_REQUEST)
            .map(|e| format!("run{run}-r{index}-e{e}"))
            .collect();
        want.sort_unstable();
        assert_eq!(
            ids, want,
            "run {run}: acked request {index} found whole and once"
        );
    }
}

fn parquet_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(parquet_files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn kill_9_under_load_loses_nothing_and_counts_nothing_twice() {
    for run in 1..=5 {
        crash_run(run);
    }
}
