//! End to end through `ais serve`: two hours of steady traffic for two models, then a
//! ×5 latency step on one, delivered out of order within the allowed lateness: an
//! anomaly for that model, none for the other, and a restart does not fire it twice.

mod common;

use common::*;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const PER_MINUTE: usize = 40;

fn anomalies(
    client: &reqwest::blocking::Client,
    server: &Server,
    from: i64,
    to: i64,
) -> Vec<Value> {
    let (status, body) = get_json(
        client,
        server,
        None,
        &format!("/v1/anomalies?from={from}&to={to}"),
    );
    assert_eq!(status, 200, "{body}");
    body["anomalies"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_latency_step_on_one_model_fires_for_it_alone_and_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--evaluate-interval-ms", "200"];
    let server = Server::start_with(dir.path(), &[], &args, None);
    let client = client();
    let mut rng = SmallRng::seed_from_u64(17);
    let now = now_ms();
    let first_minute = minute_floor(now) - 130 * 60_000;
    let step_minute = minute_floor(now) - 18 * 60_000;
    let last_minute = minute_floor(now) - 5 * 60_000;

    // Two minutes per request, shuffled: out of order, within the 2-minute lateness.
    let mut minute = first_minute;
    while minute <= last_minute {
        let mut events = Vec::new();
        for m in [minute, minute + 60_000] {
            if m > last_minute {
                continue;
            }
            for model in ["alpha", "beta"] {
                let factor = if model == "alpha" && m >= step_minute {
                    5.0
                } else {
                    1.0
                };
                for _ in 0..PER_MINUTE {
                    events.push(json!({
                        "timestamp": m + rng.random_range(0..60_000),
                        "model": model,
                        "latency_ms": factor * rng.random_range(720.0..880.0),
                        "ttft_ms": rng.random_range(90.0..110.0),
                        "status": if rng.random_bool(0.01) { "error" } else { "ok" },
                    }));
                }
            }
        }
        events.shuffle(&mut rng);
        let (status, body) = post_json(&client, &server, None, &Value::Array(events));
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["rejected"], json!([]), "{body}");
        minute += 2 * 60_000;
    }
    server.wait_caught_up(&client);

    let to = minute_floor(now) + 60_000;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let found = loop {
        let found = anomalies(&client, &server, first_minute, to);
        if found.iter().any(|a| a["model"] == "alpha") {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no anomaly for alpha: {found:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    // Let the evaluator finish what is final, then look at everything.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let found = if found.is_empty() {
        found
    } else {
        anomalies(&client, &server, first_minute, to)
    };
    assert!(
        found.iter().all(|a| a["model"] == "alpha"),
        "only alpha: {found:?}"
    );
    let latency: Vec<&Value> = found
        .iter()
        .filter(|a| a["metric"] == "latency_p95")
        .collect();
    assert_eq!(
        latency.len(),
        1,
        "one latency anomaly for the tenant: {found:?}"
    );
    let anomaly = latency[0];
    assert_eq!(anomaly["tenant"], "default");
    assert_eq!(anomaly["detector"], "latency_p95_zscore");
    assert_eq!(anomaly["state"], "firing");
    let window = anomaly["window_start"].as_i64().expect("window");
    assert!(
        (step_minute..step_minute + 3 * 60_000).contains(&window),
        "caught within 3 windows of the step at {step_minute}: {window}"
    );
    let observed = anomaly["observed"].as_f64().expect("observed");
    let baseline = anomaly["baseline"].as_f64().expect("baseline");
    assert!(observed > 3.0 * baseline, "{anomaly}");

    // A restart mid-incident neither forgets nor fires again.
    assert!(server.stop().success());
    let server = Server::start_with(dir.path(), &[], &args, None);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let again = anomalies(&client, &server, first_minute, to);
    assert_eq!(again, found, "the same anomalies after a restart");
}
