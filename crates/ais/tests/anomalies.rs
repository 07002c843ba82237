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

/// Waits until the evaluator has evaluated every window before `until_ms` (and, after
/// a restart, run a pass of its own).
fn wait_evaluated(client: &reqwest::blocking::Client, server: &Server, until_ms: i64) {
    eventually("the evaluator to evaluate every final window", || {
        let text = client
            .get(server.url("/metrics"))
            .send()
            .and_then(|response| response.text())
            .map_err(|error| error.to_string())?;
        let until = text
            .lines()
            .find_map(|line| line.strip_prefix("ais_evaluator_evaluated_until_seconds "))
            .and_then(|value| value.trim().parse::<f64>().ok());
        match until {
            Some(seconds) if seconds * 1000.0 >= until_ms as f64 => Ok(()),
            other => Err(format!("evaluated until {other:?} s")),
        }
    });
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
    // The last minute sent, less the 2-minute lateness, is final once everything is
    // in: every window before it is evaluated.
    let final_until = last_minute - 2 * 60_000;
    wait_evaluated(&client, &server, final_until);
    let found = anomalies(&client, &server, first_minute, to);
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
    wait_evaluated(&client, &server, final_until);
    let again = anomalies(&client, &server, first_minute, to);
    assert_eq!(again, found, "the same anomalies after a restart");
}
