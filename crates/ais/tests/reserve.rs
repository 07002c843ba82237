//! Budget check and reserve over real HTTP on one node: concurrent reservations never
//! pass a budget together; expired holds return; an event settles its hold; committed
//! spend counts as it lands and again after a restart (read back from the usage ledger); bad input is a 400 that
//! names the field; a tenant sees and holds only its own budgets.

mod common;

use common::*;
use serde_json::{json, Value};
use sha2::Digest;

const KEYS: &str = "acme:acme-key,acme:acme-read:read,globex:globex-key";
/// acme's third key, in the file with the name `batch` (its digest only).
const NAMED_KEY: &str = "acme-batch";
const CONFIG: &str = "[[budgets]]\ntenant = \"acme\"\ndaily_usd = 1.0\n";

#[test]
fn reservations_hold_spend_counts_and_nothing_passes_the_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let data = dir.path().join("data");
    let start = || {
        Server::start_with(
            &data,
            &[("AIS_API_KEYS", KEYS)],
            &["--config", &config.display().to_string()],
            None,
        )
    };
    let server = start();
    let client = client();

    // 64 concurrent reservations of $0.10 against $1.00: ten fit.
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..64)
            .map(|_| {
                scope.spawn(|| {
                    let own = common::client();
                    post_api(
                        &own,
                        &server,
                        "acme-key",
                        "/v1/budgets/reserve",
                        &json!({"model": "m", "cost_usd": 0.10, "ttl_secs": 1}),
                    )
                })
            })
            .collect();
        calls
            .into_iter()
            .map(|call| call.join().expect("a reservation"))
            .collect()
    });
    let granted: Vec<&Value> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body
        })
        .filter(|body| body["allowed"] == true)
        .collect();
    assert_eq!(granted.len(), 10, "{answers:?}");
    let mut ids: Vec<&str> = granted
        .iter()
        .map(|body| body["reservation_id"].as_str().expect("an id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10, "each hold its own id");
    let refused = answers
        .iter()
        .find(|(_, body)| body["allowed"] == false)
        .map(|(_, body)| body)
        .expect("a refusal");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or("")
            .contains("daily USD"),
        "{refused}"
    );
    assert_eq!(refused["reservation_id"], Value::Null);

    // The holds expire and their room returns.
    eventually("the holds to expire", || {
        match remaining_usd(&client, &server, "acme-key") {
            left if (left - 1.0).abs() < 1e-9 => Ok(()),
            left => Err(format!("${left} left")),
        }
    });

    // Committed spend counts as it lands: $0.35 of events.
    let events: Vec<Value> = (0..7)
        .map(|n| {
            json!({"event_id": format!("spend-{n}"), "timestamp": now_ms(), "model": "m",
                   "latency_ms": 10, "cost_usd": 0.05})
        })
        .collect();
    let (status, body) = post_json(&client, &server, Some("acme-key"), &Value::Array(events));
    assert_eq!(status, 202, "{body}");
    server.wait_caught_up(&client);
    assert!((remaining_usd(&client, &server, "acme-key") - 0.65).abs() < 1e-9);

    // Restarted, the server reads the day's spend back from the usage ledger.
    drop(server);
    let server = start();
    assert!((remaining_usd(&client, &server, "acme-key") - 0.65).abs() < 1e-9);
    let (_, over) = post_api(
        &client,
        &server,
        "acme-key",
        "/v1/budgets/reserve",
        &json!({"model": "m", "cost_usd": 0.66}),
    );
    assert_eq!(over["allowed"], false, "{over}");
    let (_, fits) = post_api(
        &client,
        &server,
        "acme-key",
        "/v1/budgets/reserve",
        &json!({"model": "m", "cost_usd": 0.65}),
    );
    assert_eq!(fits["allowed"], true, "{fits}");
    assert!(fits["expires_at"].as_str().is_some(), "{fits}");
    assert!(
        remaining_usd(&client, &server, "acme-key").abs() < 1e-9,
        "all held"
    );

    // The call's event settles the hold: its real cost ($0.25) counts and the rest of
    // the $0.65 estimate returns at once (the hold itself lasts 60 s). An event naming
    // a hold that does not exist counts as any other ($0.05), and is counted apart.
    let id = fits["reservation_id"].as_str().expect("an id");
    let settling = json!([
        {"event_id": "settles", "timestamp": now_ms(), "model": "m", "latency_ms": 10,
         "cost_usd": 0.25, "reservation_id": id},
        {"event_id": "names-nothing", "timestamp": now_ms(), "model": "m", "latency_ms": 10,
         "cost_usd": 0.05, "reservation_id": "res-made-up"},
    ]);
    let (status, body) = post_json(&client, &server, Some("acme-key"), &settling);
    assert_eq!(status, 202, "{body}");
    server.wait_caught_up(&client);
    let left = remaining_usd(&client, &server, "acme-key");
    assert!((left - 0.35).abs() < 1e-9, "${left} left");
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .expect("metrics");
    let counted = |outcome: &str| {
        let prefix = format!("ais_budget_settlements_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    assert_eq!(
        (counted("settled"), counted("unknown")),
        (Some(1), Some(1)),
        "{metrics}"
    );

    // Another tenant has no budget: allowed, and told so; it never sees acme's.
    let (status, other) = post_api(
        &client,
        &server,
        "globex-key",
        "/v1/budgets/reserve",
        &json!({"model": "m", "cost_usd": 5.0}),
    );
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["allowed"], true, "{other}");
    assert_eq!(other["budgets"], json!([]), "{other}");
    assert!(
        other["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no budget applies"),
        "{other}"
    );

    // Refusals name what is wrong.
    for (key, body, status, wanted) in [
        (
            "acme-key",
            json!({"model": "m", "cost_usd": -1.0}),
            400,
            "cost_usd",
        ),
        ("acme-key", json!({"model": "m"}), 400, "cost_usd or tokens"),
        (
            "acme-key",
            json!({"model": "m", "tokens": 5, "ttl_secs": 0}),
            400,
            "ttl_secs",
        ),
        ("acme-key", json!({"cost_usd": 1.0}), 400, "model"),
        (
            "acme-key",
            json!({"model": "m", "tokens": 5, "colour": 1}),
            400,
            "colour",
        ),
        (
            "acme-read",
            json!({"model": "m", "tokens": 5}),
            403,
            "write",
        ),
        (
            "globex-key",
            json!({"model": "m", "tokens": 5, "tenant": "acme"}),
            403,
            "another tenant",
        ),
    ] {
        let (got, answer) = post_api(&client, &server, key, "/v1/budgets/reserve", &body);
        assert_eq!(got, status, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(wanted), "{body}: {error}");
    }
    // A read key may check.
    let (status, body) = post_api(
        &client,
        &server,
        "acme-read",
        "/v1/budgets/check",
        &json!({"model": "m"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["budgets"][0]["name"], "acme");
}

/// Room of the budget named `name` in a check's answer, in dollars.
fn room_of(answer: &Value, name: &str) -> Option<f64> {
    answer["budgets"]
        .as_array()?
        .iter()
        .find(|budget| budget["name"] == name)
        .and_then(|budget| budget["remaining_usd"].as_f64())
}

#[test]
fn budgets_of_each_user_and_of_a_key_hold_their_own_spend_through_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    let named = hex(&sha2::Sha256::digest(NAMED_KEY.as_bytes()));
    std::fs::write(
        &config,
        format!(
            "[[keys]]\ntenant = \"acme\"\nsha256 = \"{named}\"\nname = \"batch\"\n\n\
             [[budgets]]\ntenant = \"acme\"\nscope = \"user_id\"\ndaily_usd = 0.10\n\n\
             [[budgets]]\ntenant = \"acme\"\nkey = \"batch\"\ndaily_usd = 0.05\n"
        ),
    )
    .expect("config");
    let data = dir.path().join("data");
    let start = || {
        Server::start_with(
            &data,
            &[("AIS_API_KEYS", KEYS)],
            &["--config", &config.display().to_string()],
            None,
        )
    };
    let server = start();
    let client = client();
    // u-1 spends 8 cents through the batch key, u-2 one cent through acme's other key.
    let event = |n: usize, user: &str, usd: f64| {
        json!({"event_id": format!("scoped-{n}"), "timestamp": now_ms(), "model": "m",
               "latency_ms": 10, "cost_usd": usd, "user_id": user})
    };
    let (status, body) = post_json(
        &client,
        &server,
        Some(NAMED_KEY),
        &json!([event(0, "u-1", 0.05), event(1, "u-1", 0.03)]),
    );
    assert_eq!(status, 202, "{body}");
    let (status, body) = post_json(
        &client,
        &server,
        Some("acme-key"),
        &json!([event(2, "u-2", 0.01)]),
    );
    assert_eq!(status, 202, "{body}");
    server.wait_caught_up(&client);

    let mut server = Some(server);
    for round in 0..2 {
        // The second round on a restarted server, which reads the spend back.
        let server = match server.take() {
            Some(running) if round == 0 => running,
            running => {
                drop(running);
                start()
            }
        };
        // u-1 has 2 cents left of its own 10; the batch key has none of its 5 (it sent
        // u-1's 8 cents); u-2, calling with acme's other key, only its own limit.
        let (status, u1) = post_api(
            &client,
            &server,
            NAMED_KEY,
            "/v1/budgets/check",
            &json!({"model": "m", "user_id": "u-1"}),
        );
        assert_eq!(status, 200, "{u1}");
        assert_eq!(u1["allowed"], false, "{u1}");
        let user_room = u1["budgets"]
            .as_array()
            .and_then(|budgets| budgets.iter().find(|budget| budget["scope"] == "user_id"))
            .expect("the per-user budget applies");
        assert_eq!(user_room["scope_value"], "u-1", "{u1}");
        assert!((user_room["remaining_usd"].as_f64().expect("usd") - 0.02).abs() < 1e-9);
        assert_eq!(room_of(&u1, "acme/key=batch"), Some(0.0), "{u1}");
        let (_, u2) = post_api(
            &client,
            &server,
            "acme-key",
            "/v1/budgets/reserve",
            &json!({"model": "m", "user_id": "u-2", "cost_usd": 0.09}),
        );
        assert_eq!(u2["allowed"], true, "{u2}");
        assert_eq!(u2["budgets"].as_array().map(Vec::len), Some(1), "{u2}");
        let id = u2["reservation_id"].as_str().expect("a hold").to_string();
        // Held: nothing more for u-2 until the hold goes.
        let (_, more) = post_api(
            &client,
            &server,
            "acme-key",
            "/v1/budgets/reserve",
            &json!({"model": "m", "user_id": "u-2", "cost_usd": 0.01}),
        );
        assert_eq!(more["allowed"], false, "{more}");
        assert!(
            more["reason"]
                .as_str()
                .unwrap_or("")
                .contains("user_id \"u-2\""),
            "{more}"
        );
        // The call's event settles the hold at its real cost (none): room returns.
        let (status, body) = post_json(
            &client,
            &server,
            Some("acme-key"),
            &json!([{"event_id": format!("settle-{id}"), "timestamp": now_ms(), "model": "m",
                     "latency_ms": 10, "cost_usd": 0.0, "user_id": "u-2",
                     "reservation_id": id}]),
        );
        assert_eq!(status, 202, "{body}");
        server.wait_caught_up(&client);
        let (_, after) = post_api(
            &client,
            &server,
            "acme-key",
            "/v1/budgets/check",
            &json!({"model": "m", "user_id": "u-2"}),
        );
        assert!(
            (room_of(&after, "acme/each user_id").expect("room") - 0.09).abs() < 1e-9,
            "{after}"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
