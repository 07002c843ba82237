//! The dashboard in a real browser: `ais serve --demo` on port 0, then headless
//! Chromium (Debian's, driven by playwright-core from the dashboard's npm packages)
//! runs `crates/serve/dashboard/test/browser.mjs` against it. Screenshots go to
//! `AIS_ARTIFACTS_DIR`, else `<target dir>/ais-artifacts`.
//!
//! Incidents: anomalies are written into the data directory's store, as the evaluator
//! commits them, before the server starts, hours before the demo's traffic (so the
//! demo's own anomalies stay out of their range); the page must list the incidents
//! they make. Calls of the seeded models are then posted into and around the
//! incidents' spans, with payloads; each incident's Calls link must list exactly those
//! of its span and model (its failed ones for an error rate's), slowest first, and show
//! their payloads, except to a key that `[payloads] readers` leaves out, which gets the
//! calls alone.
//!
//! Usage: with keys, budgets of both tenants are configured (the demo tenant's also
//! one of each user, from the usage ledger, with a forecast); the usage view must draw
//! the demo tenant's bars only, each with the forecast `/v1/budgets` gives, and the
//! other tenant's key its own.
//!
//! Without node, Chromium or playwright-core the test says why and passes, except
//! under `CI=true`, where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ais_evaluate::evaluator::EvaluatorConfig;
use ais_store::evaluation::{
    AnomalyRecord, AnomalyState, EvaluationCommit, EvaluationStore, Resolution,
};
use ais_store::sqlite::SqliteStore;
use common::*;
use serde_json::{json, Value};

const DEMO_READ_KEY: &str = "dashboard-test-demo-read";
/// A key of kind `all` of the demo's tenant: it posts the seeded calls, and the test's
/// `[payloads] readers` leaves it out, so it reads calls without their payloads.
const DEMO_ALL_KEY: &str = "dashboard-test-demo-all";
const OTHER_KEY: &str = "dashboard-test-other";

fn dashboard_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../serve/dashboard")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn artifacts_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AIS_ARTIFACTS_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/ais → target/ais-artifacts
    let binary = Path::new(env!("CARGO_BIN_EXE_ais"));
    binary
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("ais-artifacts"))
        .unwrap_or_else(|| std::env::temp_dir().join("ais-artifacts"))
}

/// Why the browser test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    let node = Command::new("node").arg("--version").output();
    if !matches!(node, Ok(ref output) if output.status.success()) {
        return Some("node is not installed".to_string());
    }
    if !chromium().is_file() {
        return Some(format!(
            "{} is missing (apt-get install chromium)",
            chromium().display()
        ));
    }
    if !dashboard_dir()
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return Some(format!(
            "playwright-core is not installed in {} (npm ci there)",
            dashboard_dir().display()
        ));
    }
    None
}

/// `true` when the test may run; panics under CI=true when it cannot.
fn tools_present() -> bool {
    match missing_tools() {
        None => true,
        Some(reason) if std::env::var("CI").is_ok_and(|value| value == "true") => {
            panic!("the browser test cannot run under CI=true: {reason}")
        }
        Some(reason) => {
            eprintln!("skipping the browser test: {reason}");
            false
        }
    }
}

/// Budgets of both tenants (the demo's and the other key's), for the usage view's bars;
/// payload capture on, for the payloads of the drill-down and the slowest calls, read by
/// `read` keys and not by `all` ones.
const BUDGETS: &str = r#"
[[budgets]]
tenant = "demo"
monthly_usd = 500.0
daily_tokens = 50000000
forecast_hours = 24

[[budgets]]
tenant = "demo"
scope = "user_id"
daily_usd = 2.0
forecast_hours = 24
forecast_lookback_minutes = 2
forecast_from_percent = 0

[[budgets]]
tenant = "other"
model = "gpt-4o"
daily_usd = 5.0

[payloads]
enabled = true
readers = ["read", "admin"]
"#;

/// Waits until the tenant's summary lists models, the stream has caught up and
/// nothing new appears; returns the models.
fn demo_models(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: Option<&str>,
) -> Vec<String> {
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    let mut previous: Vec<String> = Vec::new();
    loop {
        server.wait_caught_up(client);
        let (status, summary) = get_json(client, server, key, "/v1/query/summary");
        assert_eq!(status, 200, "{summary}");
        let models: Vec<String> = summary["models"]
            .as_array()
            .map(|models| {
                models
                    .iter()
                    .filter_map(|entry| entry["model"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !models.is_empty() && models == previous {
            return models;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's models did not show up: {summary}"
        );
        previous = models;
        std::thread::sleep(Duration::from_millis(500));
    }
}

const MINUTE_MS: i64 = 60_000;

/// Anomalies of one model written before the server starts: each `(detector, minutes
/// after the incident's start, score)`, all resolved `resolved_after` minutes after the
/// start, or firing.
struct SeededIncident {
    model: &'static str,
    start_minute: i64,
    anomalies: &'static [(&'static str, i64, f64)],
    resolved_after: Option<i64>,
}

/// Three incidents: one firing with two detectors, and two resolved ones of another
/// model, far enough apart (half an hour, past the default ten-minute gap) to be two.
const SEEDED_INCIDENTS: [SeededIncident; 3] = [
    SeededIncident {
        model: "seeded-beta",
        start_minute: 0,
        anomalies: &[("error_rate_wilson", 0, 4.0)],
        resolved_after: Some(3),
    },
    SeededIncident {
        model: "seeded-alpha",
        start_minute: 10,
        anomalies: &[("latency_p95_zscore", 0, 6.0), ("ttft_p95_zscore", 2, 9.5)],
        resolved_after: None,
    },
    SeededIncident {
        model: "seeded-beta",
        start_minute: 40,
        anomalies: &[("error_rate_wilson", 0, 5.5), ("cost_zscore", 1, 7.0)],
        resolved_after: Some(4),
    },
];

/// The metric a detector watches, as the evaluator names it, and a usual value of it
/// (so the page's values read like real ones).
fn metric_of(detector: &str) -> (&'static str, f64) {
    match detector {
        "latency_p95_zscore" => ("latency_p95", 800.0),
        "ttft_p95_zscore" => ("ttft_p95", 300.0),
        "error_rate_wilson" => ("error_rate", 0.01),
        "cost_zscore" => ("cost_usd", 0.5),
        other => panic!("no metric for the detector {other}"),
    }
}

/// Writes [`SEEDED_INCIDENTS`] of `tenant` from `base_ms` into the store of `data_dir`,
/// one evaluation commit per incident in time order (a resolution resolves every firing
/// anomaly of its detector, as the evaluator's do), and leaves the evaluator's position
/// where a fresh one starts. Returns what the page must show: the range to read and the
/// incidents, newest first.
fn seed_incidents(data_dir: &Path, tenant: &str, base_ms: i64) -> Value {
    let store = SqliteStore::open(&data_dir.join("ais.sqlite")).expect("the store opens");
    let first_lookback_ms =
        i64::try_from(EvaluatorConfig::default().first_lookback.as_millis()).expect("lookback");
    let next_window_ms = minute_floor(now_ms()) - first_lookback_ms;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut expected = Vec::new();
    for incident in &SEEDED_INCIDENTS {
        let start_ms = base_ms + incident.start_minute * MINUTE_MS;
        let fired: Vec<AnomalyRecord> = incident
            .anomalies
            .iter()
            .map(|(detector, minute, score)| {
                let (metric, baseline) = metric_of(detector);
                AnomalyRecord {
                    location: None,
                    tenant: tenant.to_string(),
                    model: incident.model.to_string(),
                    detector: detector.to_string(),
                    metric: metric.to_string(),
                    window_start_ms: start_ms + minute * MINUTE_MS,
                    observed: baseline * (1.0 + score / 2.0),
                    baseline,
                    score: *score,
                    state: AnomalyState::Firing,
                    resolved_window_ms: None,
                }
            })
            .collect();
        let resolved: Vec<Resolution> = match incident.resolved_after {
            Some(minutes) => fired
                .iter()
                .map(|anomaly| Resolution {
                    location: None,
                    tenant: anomaly.tenant.clone(),
                    model: anomaly.model.clone(),
                    detector: anomaly.detector.clone(),
                    window_start_ms: start_ms + minutes * MINUTE_MS,
                })
                .collect(),
            None => Vec::new(),
        };
        let peak = fired
            .iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .expect("an incident has anomalies");
        let mut detectors: Vec<&str> = fired.iter().map(|a| a.detector.as_str()).collect();
        detectors.sort_unstable();
        detectors.dedup();
        expected.push(json!({
            "model": incident.model,
            "state": if incident.resolved_after.is_some() { "resolved" } else { "firing" },
            "start": start_ms,
            "detectors": detectors,
            "peak_detector": peak.detector,
            "anomalies": fired.len(),
        }));
        runtime
            .block_on(store.commit_evaluation(EvaluationCommit {
                next_window_ms,
                // An evaluator state that tracks nothing yet.
                state: br#"{"keys":{}}"#.to_vec(),
                fired,
                resolved,
                outbox: Vec::new(),
                outbox_limit: 100,
            }))
            .expect("the evaluation commit");
    }
    expected.sort_by_key(|incident| std::cmp::Reverse(incident["start"].as_i64()));
    let last_minute = SEEDED_INCIDENTS
        .iter()
        .map(|incident| incident.start_minute + incident.resolved_after.unwrap_or(0))
        .max()
        .unwrap_or(0);
    json!({
        "from": base_ms - 10 * MINUTE_MS,
        "to": base_ms + (last_minute + 15) * MINUTE_MS,
        "incidents": expected,
    })
}

/// A call posted into the seeded incidents' range.
struct SeededCall {
    id: String,
    model: &'static str,
    timestamp_ms: i64,
    latency_ms: i64,
    failed: bool,
}

impl SeededCall {
    fn input(&self) -> String {
        format!("seeded prompt {} for {}", self.id, self.model)
    }

    fn output(&self) -> String {
        format!("seeded answer {} after {} ms", self.id, self.latency_ms)
    }
}

/// Calls of the seeded models: in each incident's span, alternately failed and not, of
/// its model and of the other seeded model; and just before and after the span (inside
/// the ten minutes the page shows around it), slower than any inside, which the
/// incident's list must leave out. Latencies are distinct, so "slowest first" is one
/// order.
fn seeded_calls(base_ms: i64) -> Vec<SeededCall> {
    let mut calls = Vec::new();
    let mut add = |model: &'static str, timestamp_ms: i64, latency_ms: i64, failed: bool| {
        let n = calls.len();
        calls.push(SeededCall {
            id: format!("seeded-call-{n}"),
            model,
            timestamp_ms,
            latency_ms: latency_ms + i64::try_from(n).expect("few calls"),
            failed,
        });
    };
    for incident in &SEEDED_INCIDENTS {
        let start_ms = base_ms + incident.start_minute * MINUTE_MS;
        let other = if incident.model == "seeded-alpha" {
            "seeded-beta"
        } else {
            "seeded-alpha"
        };
        for j in 0..6_i64 {
            // Latencies out of time order: the list is sorted, not merely read.
            add(
                incident.model,
                start_ms + j * 20_000,
                300 + ((j * 7) % 6) * 150,
                j % 2 == 0,
            );
        }
        add(other, start_ms + 30_000, 15_000, true);
        add(incident.model, start_ms - 2 * MINUTE_MS, 20_000, true);
        if let Some(minutes) = incident.resolved_after {
            add(
                incident.model,
                start_ms + (minutes + 1) * MINUTE_MS,
                25_000,
                true,
            );
        }
    }
    calls
}

/// Posts [`seeded_calls`] with `key`, waits until `read_key` reads them all, and adds
/// to each incident of `expected` (from [`seed_incidents`]) its `end`, the kind of calls
/// its detectors point at and the calls its list must show, slowest first.
fn seed_calls(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: &str,
    read_key: &str,
    base_ms: i64,
    expected: &mut Value,
) {
    let calls = seeded_calls(base_ms);
    let events: Vec<Value> = calls
        .iter()
        .map(|call| {
            json!({
                "event_id": call.id,
                "timestamp": call.timestamp_ms,
                "model": call.model,
                "latency_ms": call.latency_ms,
                "status": if call.failed { "error" } else { "ok" },
                "input": call.input(),
                "output": call.output(),
            })
        })
        .collect();
    let (status, answer) = post_json(client, server, Some(key), &Value::Array(events));
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], calls.len(), "{answer}");
    let from = base_ms - 10 * MINUTE_MS;
    let to = base_ms + 60 * MINUTE_MS;
    ais_testkit::eventually("the seeded calls to be readable", || {
        let (status, answer) = get_json(
            client,
            server,
            Some(read_key),
            &format!("/v1/events?from={from}&to={to}&limit=1000"),
        );
        let read = answer["events"].as_array().map_or(0, Vec::len);
        if status == 200 && read == calls.len() {
            Ok(())
        } else {
            Err(format!("{status}: {read} of {} calls", calls.len()))
        }
    });
    for incident in expected["incidents"]
        .as_array_mut()
        .expect("incidents")
        .iter_mut()
    {
        let model = incident["model"].as_str().expect("model").to_string();
        let start_ms = incident["start"].as_i64().expect("start");
        let seeded = SEEDED_INCIDENTS
            .iter()
            .find(|seeded| {
                seeded.model == model && base_ms + seeded.start_minute * MINUTE_MS == start_ms
            })
            .expect("a seeded incident");
        let end_ms = seeded
            .resolved_after
            .map(|minutes| start_ms + minutes * MINUTE_MS);
        // Error rates point at the failed calls; latency and TTFT at the slowest.
        let watches = |metric: &str| {
            seeded
                .anomalies
                .iter()
                .any(|(detector, _, _)| metric_of(detector).0.starts_with(metric))
        };
        let failed_only = watches("error_rate") && !watches("latency") && !watches("ttft");
        let mut listed: Vec<&SeededCall> = calls
            .iter()
            .filter(|call| call.model == model && call.timestamp_ms >= start_ms)
            .filter(|call| end_ms.is_none_or(|end| call.timestamp_ms < end))
            .filter(|call| call.failed || !failed_only)
            .collect();
        listed.sort_by_key(|call| std::cmp::Reverse(call.latency_ms));
        incident["end"] = json!(end_ms);
        incident["calls_kind"] = json!(if failed_only { "failed" } else { "slowest" });
        incident["calls"] = listed
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "latency_ms": call.latency_ms,
                    "failed": call.failed,
                    "input": call.input(),
                    "output": call.output(),
                })
            })
            .collect();
    }
    expected["seeded_models"] = json!(["seeded-alpha", "seeded-beta"]);
}

fn run_browser(args: &[&str]) {
    let script = dashboard_dir().join("test/browser.mjs");
    let output = Command::new("node")
        .arg(&script)
        .args(args)
        .env("CHROMIUM", chromium())
        .current_dir(dashboard_dir())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "browser checks failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

#[test]
fn the_dashboard_shows_the_demo_to_its_tenant_only_and_asks_for_no_key_when_there_are_none() {
    if !tools_present() {
        return;
    }
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("artifacts directory");
    println!("screenshots: {}", artifacts.display());
    let client = client();

    // Keys configured: the demo writes tenant `demo`; a read key of `demo` sees it and
    // a key of `other` sees nothing of it.
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = format!("demo:{DEMO_READ_KEY}:read,demo:{DEMO_ALL_KEY}:all,other:{OTHER_KEY}");
    // Before the demo's 90 minutes of history and the evaluator's first window.
    let seeded_base_ms = minute_floor(now_ms()) - 240 * MINUTE_MS;
    let mut incidents = seed_incidents(dir.path(), "demo", seeded_base_ms);
    let config = dir.path().join("budgets.toml");
    std::fs::write(&config, BUDGETS).expect("config");
    let config_arg = config.display().to_string();
    let server = Server::start_with(
        dir.path(),
        &[("AIS_API_KEYS", keys.as_str())],
        &[
            "--config",
            &config_arg,
            "--demo",
            "--demo-rate",
            "5",
            "--evaluate-interval-ms",
            "500",
        ],
        None,
    );
    let models = demo_models(&client, &server, Some(DEMO_READ_KEY));
    assert!(
        models.len() >= 3,
        "the demo runs several models: {models:?}"
    );
    let (status, other): (u16, Value) =
        get_json(&client, &server, Some(OTHER_KEY), "/v1/query/summary");
    assert_eq!(status, 200);
    assert_eq!(other["models"], Value::Array(vec![]), "{other}");
    seed_calls(
        &client,
        &server,
        DEMO_ALL_KEY,
        DEMO_READ_KEY,
        seeded_base_ms,
        &mut incidents,
    );
    let incidents = incidents.to_string();
    let artifacts_arg = artifacts.display().to_string();
    let models_arg = models.join(",");
    run_browser(&[
        "--url",
        &server.base,
        "--artifacts",
        &artifacts_arg,
        "--expect-models",
        &models_arg,
        "--key",
        DEMO_READ_KEY,
        "--other-key",
        OTHER_KEY,
        "--no-payload-key",
        DEMO_ALL_KEY,
        "--expect-incidents",
        &incidents,
        "--expect-budgets",
        "--expect-payloads",
        "--label",
        "keys",
    ]);
    assert!(server.stop().success());

    // No keys: the demo writes tenant `default` and the page never asks for a key.
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &[], &["--demo", "--demo-rate", "5"], None);
    let models = demo_models(&client, &server, None);
    let models_arg = models.join(",");
    run_browser(&[
        "--url",
        &server.base,
        "--artifacts",
        &artifacts_arg,
        "--expect-models",
        &models_arg,
        "--no-prompt",
        "--label",
        "open",
    ]);
    assert!(server.stop().success());
    println!("screenshots saved in {}", artifacts.display());
}
