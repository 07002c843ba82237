//! Ingest under pressure, on the distributed pipeline over real servers (`ais ingest`
//! → Kafka-API broker → `ais stream` → ClickHouse → `ais query`):
//!
//! - A tenant flooding far past its rate limit costs a quiet tenant, within its own
//!   limit, nothing: every quiet request is answered 202, every quiet event is stored
//!   exactly once with exact rollups, and the flood gets only 202 or 429 with
//!   `Retry-After`.
//! - Offered ten times its sustainable rate for 20 s, `ais ingest` answers only 202,
//!   429 or 503 (refusals with `Retry-After`), answers every request, and its peak
//!   resident memory stays under the documented bound.
//!
//! Latencies, rates and memory are printed as figures (`bench/RESULTS.md`), not
//! asserted, except the memory bound the README promises. The two drills take turns:
//! each needs the machine's cores to itself.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{events_with_rollups, Cluster, Rollups};
use common::load::{client_runtime, synthetic_bodies, Tally, Target, INGEST_RSS_BOUND_BYTES};
use common::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;

/// Held by each drill for its whole run: their loads would otherwise share two cores.
static ONE_DRILL_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_drill_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A drill that failed poisoned the lock; the next one can still run.
    ONE_DRILL_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const MODELS: &[&str] = &["gpt-4o", "claude-sonnet", "llama-70b"];
const KEYS: &str = "noisy:noisy-key,quiet:quiet-key,warm:warm-key";

/// The quiet tenant's steady traffic: 20 requests/s of 10 events, 200 events/s, for
/// 10 s alone and 10 s beside the flood.
const QUIET_REQUESTS_PER_SECOND: f64 = 20.0;
const QUIET_EVENTS_PER_REQUEST: usize = 10;
const QUIET_PHASE: Duration = Duration::from_secs(10);
/// The quiet tenant's own limit, five times what it sends: within it with room to spare.
const QUIET_LIMIT_EPS: f64 = 1_000.0;
/// The noisy tenant's limit, and its flood: many connections, each sending the next
/// 100-event request as soon as the last is answered.
const NOISY_LIMIT_EPS: f64 = 500.0;
const NOISY_CONNECTIONS: usize = 64;
const NOISY_EVENTS_PER_REQUEST: usize = 100;
/// The flood starts this long before the quiet phase and ends this long after it, so
/// every quiet request meets it.
const FLOOD_MARGIN: Duration = Duration::from_secs(1);
const WARM_UP: Duration = Duration::from_secs(1);

fn percentiles(tally: &Tally) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms",
        tally.ack_ms(0.5),
        tally.ack_ms(0.99)
    )
}

/// The quiet tenant's phase: its bodies sent in order at its steady rate; every one
/// must be answered 202 with all its events accepted.
fn quiet_phase(runtime: &tokio::runtime::Runtime, quiet: &Target, bodies: &[Bytes]) -> Tally {
    let report = runtime.block_on(quiet.open_loop(
        bodies,
        QUIET_REQUESTS_PER_SECOND,
        bodies.len() as u64,
        bodies.len(),
    ));
    let tally = report.tally;
    assert_eq!(report.shed_by_client, 0, "every quiet request was sent");
    assert_eq!(
        tally.statuses.get(&202).copied(),
        Some(bodies.len() as u64),
        "the quiet tenant gets 202 and nothing else: {}; first failure: {:?}",
        tally.describe(),
        tally.first_error
    );
    assert_eq!(
        tally.accepted_events,
        (bodies.len() * QUIET_EVENTS_PER_REQUEST) as u64,
        "every quiet event accepted"
    );
    tally
}

/// Runs `work`; also returns the CPU `server` used meanwhile, in cores (CPU seconds per
/// second).
fn cores_used<T>(server: &Server, work: impl FnOnce() -> T) -> (T, f64) {
    let (cpu, wall) = (server.cpu_seconds(), Instant::now());
    let result = work();
    let cores = (server.cpu_seconds() - cpu) / wall.elapsed().as_secs_f64();
    (result, cores)
}

/// A second of traffic from a tenant of its own before anything is measured: the
/// first requests pay for connections and the producer's first metadata and batches.
/// Returns the events accepted.
fn warm_up(runtime: &tokio::runtime::Runtime, target: &Target) -> u64 {
    let bodies = synthetic_bodies(2, QUIET_EVENTS_PER_REQUEST, now_ms());
    let tally = runtime.block_on(target.closed_loop(&bodies, 2, Instant::now() + WARM_UP));
    assert_eq!(tally.unanswered, 0, "{:?}", tally.first_error);
    tally.accepted_events
}

/// Waits until the store has committed `records` log records (what ingest
/// acknowledged), at most 120 s.
fn wait_committed(cluster: &Cluster, client: &reqwest::blocking::Client, records: u64) {
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    loop {
        let committed = cluster.committed_records(client);
        assert!(
            committed <= records,
            "the stream committed {committed} records, only {records} were acknowledged"
        );
        if committed == records {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stream committed {committed} of {records} records after {:?}",
            ais_testkit::PATIENCE
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_tenant_flooding_past_its_limit_costs_the_quiet_tenant_no_refusal_and_no_event() {
    let _turn = one_drill_at_a_time();
    let Some(cluster) = Cluster::create("pressure_tenants", 2) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    // Bursts of one second of each limit.
    std::fs::write(
        &config,
        format!(
            "[rate_limits.tenants.noisy]\nevents_per_second = {NOISY_LIMIT_EPS}\nburst = {NOISY_LIMIT_EPS}\n\
             [rate_limits.tenants.quiet]\nevents_per_second = {QUIET_LIMIT_EPS}\nburst = {QUIET_LIMIT_EPS}\n"
        ),
    )
    .expect("config");
    let config_path = config.display().to_string();
    let env = [("AIS_API_KEYS", KEYS), ("AIS_CONFIG", config_path.as_str())];
    let ingest = cluster.ingest(&env);

    // The quiet tenant's events, with client ids and their exact rollups, encoded
    // before any load starts.
    let requests_per_phase = (QUIET_REQUESTS_PER_SECOND * QUIET_PHASE.as_secs_f64()) as usize;
    let quiet_events = 2 * requests_per_phase * QUIET_EVENTS_PER_REQUEST;
    let mut expected = Rollups::new();
    let events = events_with_rollups(
        &mut SmallRng::seed_from_u64(11),
        "quiet",
        MODELS,
        quiet_events,
        now_ms(),
        10 * 60_000,
        &mut expected,
    );
    let bodies: Vec<Bytes> = events
        .chunks(QUIET_EVENTS_PER_REQUEST)
        .map(|chunk| Bytes::from(serde_json::Value::Array(chunk.to_vec()).to_string()))
        .collect();
    let (alone_bodies, flooded_bodies) = bodies.split_at(requests_per_phase);

    // The quiet client runs on its own runtime thread, the flood on another: the flood
    // cannot delay the quiet client's sends, only the server's answers.
    let quiet_runtime = client_runtime(1);
    let quiet = Target::new(&ingest, Some("quiet-key"));
    let warm_up = warm_up(&quiet_runtime, &Target::new(&ingest, Some("warm-key")));
    let (alone, alone_cores) = cores_used(&ingest, || {
        quiet_phase(&quiet_runtime, &quiet, alone_bodies)
    });

    let noisy = Target::new(&ingest, Some("noisy-key"));
    let flood_bodies = synthetic_bodies(8, NOISY_EVENTS_PER_REQUEST, now_ms());
    let ((flooded, (noisy, flood_time)), flood_cores) = cores_used(&ingest, || {
        let flood_until = Instant::now() + QUIET_PHASE + 2 * FLOOD_MARGIN;
        let flood = std::thread::spawn(move || {
            let started = Instant::now();
            let tally = client_runtime(1).block_on(noisy.closed_loop(
                &flood_bodies,
                NOISY_CONNECTIONS,
                flood_until,
            ));
            (tally, started.elapsed())
        });
        std::thread::sleep(FLOOD_MARGIN);
        let flooded = quiet_phase(&quiet_runtime, &quiet, flooded_bodies);
        (flooded, flood.join().expect("the flood ran"))
    });

    eprintln!(
        "quiet tenant alone: {}\nquiet tenant beside the flood: {}\nnoisy tenant's flood over {:.1} s: {}",
        alone.describe(),
        flooded.describe(),
        flood_time.as_secs_f64(),
        noisy.describe()
    );
    eprintln!(
        "FIGURE quiet ack alone: {} (ingest busy {alone_cores:.2} cores); beside the flood: {} (ingest busy {flood_cores:.2} cores); flood: {} requests answered ({:.0}/s), {} × 202, {} × 429",
        percentiles(&alone),
        percentiles(&flooded),
        noisy.answered(),
        noisy.answered() as f64 / flood_time.as_secs_f64(),
        noisy.count(202),
        noisy.count(429)
    );

    // The flood gets only 202 or 429, every 429 says when to come back, and it really
    // went past its limit: more offered than a bucket of this limit lets through.
    assert_eq!(noisy.unanswered, 0, "{:?}", noisy.first_error);
    assert!(
        noisy.outside(&[202, 429]).is_empty(),
        "the flood got only 202 or 429: {}",
        noisy.describe()
    );
    assert_eq!(
        noisy.refusals_without_retry_after, 0,
        "every 429 has Retry-After"
    );
    // A bucket refills at the limit up to its burst; requests admitted together while
    // it held anything may each overdraw it by one request.
    let allowance = NOISY_LIMIT_EPS * (1.0 + flood_time.as_secs_f64())
        + (NOISY_CONNECTIONS * NOISY_EVENTS_PER_REQUEST) as f64;
    let offered = (noisy.answered() * NOISY_EVENTS_PER_REQUEST as u64) as f64;
    assert!(
        noisy.count(429) > 0 && offered > 2.0 * allowance,
        "the flood offered {offered} events, past twice its allowance of {allowance:.0}"
    );
    assert!(
        (noisy.accepted_events as f64) <= allowance,
        "the noisy tenant got {} events accepted, more than its limit allows ({allowance:.0})",
        noisy.accepted_events
    );

    // Everything acknowledged reaches the store once: the quiet tenant's rollups are
    // the exact ones, the noisy tenant's count is what its 202s accepted.
    let _stream = cluster.stream(None);
    let client = client();
    let acknowledged = quiet_events as u64 + noisy.accepted_events + warm_up;
    wait_committed(&cluster, &client, acknowledged);
    assert_eq!(
        cluster.stored_events(&client),
        acknowledged,
        "raw events, each once"
    );
    cluster.assert_ledger_accounts(&client, acknowledged);
    let stored = cluster.stored_rollups(&client);
    let stored_quiet: Rollups = stored
        .iter()
        .filter(|((tenant, _, _), _)| tenant == "quiet")
        .map(|(key, value)| (key.clone(), *value))
        .collect();
    assert_eq!(stored_quiet, expected, "the quiet tenant's rollups");
    let stored_noisy: u64 = stored
        .iter()
        .filter(|((tenant, _, _), _)| tenant == "noisy")
        .map(|(_, value)| value[0])
        .sum();
    assert_eq!(
        stored_noisy, noisy.accepted_events,
        "the noisy tenant's requests"
    );

    // And the query API shows the quiet tenant every event it sent.
    let query = cluster.query(&env);
    let (status, summary) = get_json(&client, &query, Some("quiet-key"), "/v1/query/summary");
    assert_eq!(status, 200, "{summary}");
    let requests: u64 = summary["models"]
        .as_array()
        .map(|models| models.iter().filter_map(|m| m["requests"].as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(requests, quiet_events as u64, "ais query: {summary}");
}

/// The sustainable rate is measured with this many requests in flight, closed loop.
const CALIBRATION_CONCURRENCY: usize = 4;
const CALIBRATION: Duration = Duration::from_secs(4);
const OVERLOAD_FACTOR: f64 = 10.0;
const OVERLOAD: Duration = Duration::from_secs(20);
const OVERLOAD_EVENTS_PER_REQUEST: usize = 100;
/// The client's bound on requests waiting for an answer: far more than a server
/// shedding load should ever hold, small enough for the client's own memory.
const CLIENT_MAX_OUTSTANDING: usize = 4_096;

#[test]
fn ten_times_the_sustainable_rate_for_20_s_keeps_ingest_under_its_memory_bound_with_only_202_429_503(
) {
    let _turn = one_drill_at_a_time();
    let Some(cluster) = Cluster::create("pressure_overload", 2) else {
        return;
    };
    // Default limits: no flags beyond the cluster's own.
    let ingest = cluster.ingest(&[]);
    let target = Target::new(&ingest, None);
    let bodies = synthetic_bodies(8, OVERLOAD_EVENTS_PER_REQUEST, now_ms());
    // One client thread: the other core is the server's.
    let runtime = client_runtime(1);
    let rss_at_start = ingest.peak_rss_bytes();

    // The sustainable rate S: what a few requests in flight get acknowledged.
    warm_up(&runtime, &target);
    let calibration = runtime.block_on(target.closed_loop(
        &bodies,
        CALIBRATION_CONCURRENCY,
        Instant::now() + CALIBRATION,
    ));
    let sustainable = calibration.count(202) as f64 / CALIBRATION.as_secs_f64();
    eprintln!(
        "calibration, {CALIBRATION_CONCURRENCY} in flight for {CALIBRATION:?}: {} → S = {sustainable:.0} requests/s",
        calibration.describe()
    );
    assert!(
        sustainable > 0.0,
        "ingest acknowledged nothing: {}",
        calibration.describe()
    );

    let rate = OVERLOAD_FACTOR * sustainable;
    let (report, overload_cores) = cores_used(&ingest, || {
        runtime.block_on(target.open_loop(
            &bodies,
            rate,
            (rate * OVERLOAD.as_secs_f64()) as u64,
            CLIENT_MAX_OUTSTANDING,
        ))
    });
    let peak_rss = ingest.peak_rss_bytes();
    let tally = &report.tally;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    eprintln!(
        "overload: {rate:.0} requests/s due for {OVERLOAD:?}, offered at {:.0}/s, {} shed by the client at {CLIENT_MAX_OUTSTANDING} outstanding; {}",
        report.offered_rate(),
        report.shed_by_client,
        tally.describe()
    );
    eprintln!(
        "FIGURE S {sustainable:.0} requests/s ({:.0} events/s); offered {:.0} requests/s for {:.1} s ({} requests, {} shed by the client); statuses {:?}; goodput {:.0} events/s over {:.1} s until the last answer; 202 ack p50 {:.0} ms, p99 {:.0} ms; peak RSS {:.0} MiB (at start {:.0} MiB), bound {:.0} MiB; ingest busy {overload_cores:.2} cores",
        sustainable * OVERLOAD_EVENTS_PER_REQUEST as f64,
        report.offered_rate(),
        report.offer_seconds,
        report.offered,
        report.shed_by_client,
        tally.statuses,
        tally.accepted_events as f64 / report.total_seconds,
        report.total_seconds,
        tally.ack_ms(0.5),
        tally.ack_ms(0.99),
        mib(peak_rss),
        mib(rss_at_start),
        mib(INGEST_RSS_BOUND_BYTES)
    );

    assert_eq!(
        tally.unanswered, 0,
        "every request sent is answered; first failure: {:?}",
        tally.first_error
    );
    assert!(
        tally.outside(&[202, 429, 503]).is_empty(),
        "only 202, 429 or 503 under overload: {}",
        tally.describe()
    );
    assert_eq!(
        tally.refusals_without_retry_after, 0,
        "every 429 and 503 carries Retry-After"
    );
    assert!(
        peak_rss < INGEST_RSS_BOUND_BYTES,
        "ais ingest peaked at {:.0} MiB resident, over its bound of {:.0} MiB",
        mib(peak_rss),
        mib(INGEST_RSS_BOUND_BYTES)
    );
}
