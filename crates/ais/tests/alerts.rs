//! Alert delivery end to end through `ais serve`: an availability objective that burns
//! and recovers and a daily budget that crosses its thresholds, delivered to a local
//! webhook receiver that checks every signature and refuses the first attempts; across
//! a graceful restart each transition arrives exactly once, across `kill -9` at least
//! once with any duplicate under the same idempotency key. `GET /v1/slos` and
//! `GET /v1/budgets` report what the posted traffic implies, each tenant only its own.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ais_testkit::hmac_sha256;
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "webhook-test-secret";
const PER_MINUTE: usize = 20;
const MINUTES: i64 = 13;
/// Minutes (from the first) whose requests all fail.
const BAD_MINUTES: std::ops::Range<i64> = 5..8;
const COST_USD: f64 = 0.005;
const DAILY_USD: f64 = 1.0;
const TARGET: f64 = 0.99;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One delivery the receiver accepted.
#[derive(Debug, Clone)]
struct Accepted {
    key: String,
    body: Value,
}

#[derive(Default)]
struct ReceiverState {
    /// Attempts per idempotency key, accepted or not.
    attempts: BTreeMap<String, usize>,
    accepted: Vec<Accepted>,
    bad_signatures: usize,
    /// Refuse (503) the first this many attempts of each key.
    fail_first: usize,
    /// Refuse everything once this many were accepted.
    accept_limit: Option<usize>,
    /// Record the n-th acceptance, then hold its answer until released.
    hold_at: Option<usize>,
    holding: bool,
    released: bool,
}

/// A webhook receiver on loopback, one connection at a time.
struct Receiver {
    url: String,
    state: Arc<(Mutex<ReceiverState>, Condvar)>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("receiver binds");
        let address = listener.local_addr().expect("receiver address");
        let state = Arc::new((
            Mutex::new(ReceiverState {
                fail_first,
                ..ReceiverState::default()
            }),
            Condvar::new(),
        ));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                handle(stream, &shared);
            }
        });
        Receiver {
            url: format!("http://{address}/hook"),
            state,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut ReceiverState) -> T) -> T {
        let mut guard = self.state.0.lock().expect("receiver state");
        let out = f(&mut guard);
        self.state.1.notify_all();
        out
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut(&ReceiverState) -> bool) {
        let deadline = Instant::now() + ais_testkit::PATIENCE;
        loop {
            if self.with(|state| done(state)) {
                return;
            }
            assert!(Instant::now() < deadline, "receiver never saw: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn handle(stream: TcpStream, shared: &Arc<(Mutex<ReceiverState>, Condvar)>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream);
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0_u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let timestamp = headers.get("x-ais-timestamp").cloned().unwrap_or_default();
    let mut signed = timestamp.into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(&body);
    let expected = format!("sha256={}", hex(&hmac_sha256(SECRET.as_bytes(), &signed)));
    let key = headers.get("idempotency-key").cloned().unwrap_or_default();

    let (lock, condvar) = &**shared;
    let mut state = lock.lock().expect("receiver state");
    let status = if headers.get("x-ais-signature") != Some(&expected) {
        state.bad_signatures += 1;
        401
    } else {
        let attempts = state.attempts.entry(key.clone()).or_insert(0);
        *attempts += 1;
        let attempt = *attempts;
        let over_limit = state
            .accept_limit
            .is_some_and(|limit| state.accepted.len() >= limit);
        if attempt <= state.fail_first || over_limit {
            503
        } else {
            let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            state.accepted.push(Accepted { key, body: parsed });
            if state.hold_at == Some(state.accepted.len()) {
                state.holding = true;
                condvar.notify_all();
                while !state.released {
                    state = condvar.wait(state).expect("receiver state");
                }
            }
            200
        }
    };
    drop(state);
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Service Unavailable",
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let _ = stream.flush();
}

fn write_config(dir: &Path, webhook_url: &str) -> std::path::PathBuf {
    let path = dir.join("ais.toml");
    let config = format!(
        r#"
[[slos]]
name = "chat-availability"
model = "chat"
objective = "availability"
target = {TARGET}
window_days = 1
[[slos.alerts]]
factor = 10.0
long_minutes = 5
short_minutes = 1

[[budgets]]
tenant = "default"
daily_usd = {DAILY_USD}
thresholds = [50, 100]

[alerts]
retry_initial_ms = 100
retry_max_ms = 400
[alerts.webhook]
url = "{webhook_url}"
secret = "{SECRET}"
"#
    );
    std::fs::write(&path, config).expect("config written");
    path
}

/// Posts the scenario's traffic in one request; returns the first minute.
fn post_traffic(client: &reqwest::blocking::Client, server: &Server) -> i64 {
    const DAY: i64 = 86_400_000;
    let mut first = minute_floor(now_ms()) - 40 * 60_000;
    // All of it within one UTC day, so the daily budget sees all of it.
    let last = first + MINUTES * 60_000 - 1;
    if first.div_euclid(DAY) != last.div_euclid(DAY) {
        first = last.div_euclid(DAY) * DAY - (MINUTES + 1) * 60_000;
    }
    let mut events = Vec::new();
    for minute in 0..MINUTES {
        for index in 0..PER_MINUTE {
            let failed = BAD_MINUTES.contains(&minute);
            events.push(json!({
                "timestamp": first + minute * 60_000 + index as i64 * 1_000,
                "model": "chat",
                "latency_ms": 500 + index,
                "cost_usd": COST_USD,
                "status": if failed { "error" } else { "ok" },
            }));
        }
    }
    let (status, body) = post_json(client, server, None, &Value::Array(events));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rejected"], json!([]), "{body}");
    first
}

/// (alertname, state, threshold label) of an accepted delivery.
fn transition(body: &Value) -> (String, String, String) {
    (
        body["labels"]["alertname"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        body["state"].as_str().unwrap_or("").to_string(),
        body["labels"]["threshold"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// What the scenario must deliver: the burn fires and resolves; the budget crosses
/// both thresholds (13 minutes × 20 requests × $0.005 = $1.30 against $1.00).
fn expected_transitions() -> BTreeSet<(String, String, String)> {
    let spent = MINUTES as f64 * PER_MINUTE as f64 * COST_USD;
    assert!(spent >= DAILY_USD, "the scenario must cross 100%");
    [
        ("AisSloBurnRate", "firing", ""),
        ("AisSloBurnRate", "resolved", ""),
        ("AisBudget", "firing", "50%"),
        ("AisBudget", "firing", "100%"),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect()
}

fn outbox_entries(client: &reqwest::blocking::Client, server: &Server) -> Option<f64> {
    let text = client
        .get(server.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("ais_alert_outbox_entries "))
        .and_then(|value| value.trim().parse().ok())
}

/// Waits until every expected transition was accepted and the outbox is empty.
fn wait_all_delivered(receiver: &Receiver, client: &reqwest::blocking::Client, server: &Server) {
    let expected = expected_transitions();
    receiver.wait_until("every expected transition", |state| {
        let got: BTreeSet<_> = state.accepted.iter().map(|a| transition(&a.body)).collect();
        expected.is_subset(&got)
    });
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    while outbox_entries(client, server) != Some(0.0) {
        assert!(Instant::now() < deadline, "the outbox never emptied");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(dir: &Path, config: &Path) -> Server {
    Server::start_with(
        &dir.join("data"),
        &[],
        &[
            "--evaluate-interval-ms",
            "200",
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
        None,
    )
}

#[test]
fn a_graceful_restart_delivers_every_transition_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(2);
    receiver.with(|state| state.accept_limit = Some(2));
    let config = write_config(dir.path(), &receiver.url);
    let server = start(dir.path(), &config);
    let client = client();
    let first = post_traffic(&client, &server);
    server.wait_caught_up(&client);

    receiver.wait_until("two accepted deliveries", |state| state.accepted.len() >= 2);
    assert!(server.stop().success());
    receiver.with(|state| state.accept_limit = None);
    let server = start(dir.path(), &config);
    wait_all_delivered(&receiver, &client, &server);

    receiver.with(|state| {
        assert_eq!(state.bad_signatures, 0, "every delivery is signed");
        let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
        for accepted in &state.accepted {
            *per_key.entry(accepted.key.as_str()).or_default() += 1;
            assert_eq!(accepted.body["id"], accepted.key.as_str(), "key = alert id");
            // Refused twice before it was taken: the retries did the work.
            assert!(state.attempts[&accepted.key] >= 3, "{:?}", state.attempts);
        }
        assert!(
            per_key.values().all(|count| *count == 1),
            "exactly once across a graceful restart: {per_key:?}"
        );
        let got: BTreeSet<_> = state.accepted.iter().map(|a| transition(&a.body)).collect();
        assert!(expected_transitions().is_subset(&got), "{got:?}");
        let burn = state
            .accepted
            .iter()
            .find(|a| {
                a.body["labels"]["alertname"] == "AisSloBurnRate" && a.body["state"] == "firing"
            })
            .expect("burn alert");
        // It fired at the first bad minute, when both spans burnt ≥ 10×.
        assert_eq!(
            burn.body["starts_at_ms"],
            first + BAD_MINUTES.start * 60_000,
            "{}",
            burn.body
        );
        assert_eq!(burn.body["labels"]["slo"], "chat-availability");
        assert_eq!(burn.body["labels"]["tenant"], "default");
    });

    // What the endpoints report follows from the posted traffic, once all of it is
    // final (the last minutes wait for the stream's idle watermark).
    let traffic_end = first + MINUTES * 60_000;
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    let body = loop {
        let (status, body) = get_json(&client, &server, None, "/v1/slos");
        assert_eq!(status, 200, "{body}");
        if body["slos"][0]["evaluated_to"].as_i64() >= Some(traffic_end) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "never evaluated to the end: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let slo = &body["slos"][0];
    let total = (MINUTES as usize * PER_MINUTE) as u64;
    let bad = (BAD_MINUTES.count() * PER_MINUTE) as u64;
    assert_eq!(slo["name"], "chat-availability");
    assert_eq!(slo["requests"], total, "{body}");
    assert_eq!(slo["bad_requests"], bad, "{body}");
    let remaining = 1.0 - bad as f64 / (total as f64 * (1.0 - TARGET));
    let reported = slo["error_budget_remaining"].as_f64().expect("number");
    assert!(
        (reported - remaining).abs() < 1e-9,
        "{reported} vs {remaining}"
    );
    assert_eq!(slo["burn_rates"][0]["firing"], false, "{body}");

    let (status, body) = get_json(&client, &server, None, "/v1/budgets");
    assert_eq!(status, 200, "{body}");
    let budget = &body["budgets"][0];
    assert_eq!(budget["tenant"], "default");
    let day = &budget["limits"][0];
    assert_eq!(day["period"], "day");
    let same_day = (first / 86_400_000) == (now_ms() / 86_400_000);
    if same_day {
        let spent = total as f64 * COST_USD;
        assert!(
            (day["spent"].as_f64().expect("spent") - spent).abs() < 1e-9,
            "{body}"
        );
        assert_eq!(day["crossed"], json!([50, 100]), "{body}");
    }
}

#[test]
fn kill_9_delivers_at_least_once_and_duplicates_keep_their_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(1);
    // Take the second delivery, then never answer it: ais dies waiting.
    receiver.with(|state| state.hold_at = Some(2));
    let config = write_config(dir.path(), &receiver.url);
    let server = start(dir.path(), &config);
    let client = client();
    post_traffic(&client, &server);
    receiver.wait_until("a held delivery", |state| state.holding);
    server.kill_9();
    receiver.with(|state| state.released = true);

    let server = start(dir.path(), &config);
    wait_all_delivered(&receiver, &client, &server);
    receiver.with(|state| {
        assert_eq!(state.bad_signatures, 0);
        let mut bodies: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for accepted in &state.accepted {
            bodies
                .entry(accepted.key.as_str())
                .or_default()
                .push(&accepted.body);
        }
        let held = &state.accepted[1].key;
        assert!(
            bodies[held.as_str()].len() >= 2,
            "the unanswered delivery was sent again: {bodies:?}"
        );
        for (key, same) in &bodies {
            assert!(
                same.iter()
                    .all(|body| body["id"] == *key && *body == same[0]),
                "duplicates carry the same key and alert: {same:?}"
            );
        }
    });
}

#[test]
fn objectives_and_budgets_are_tenant_scoped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    std::fs::write(
        &config,
        r#"
[[slos]]
name = "chat-availability"
model = "chat"
objective = "availability"
target = 0.99

[[budgets]]
tenant = "acme"
daily_tokens = 1000
[[budgets]]
tenant = "globex"
model = "chat"
monthly_usd = 10.0
"#,
    )
    .expect("config written");
    let keys = "acme:acme-key,globex:globex-key,ops:ops-key:admin";
    let server = Server::start_with(
        &dir.path().join("data"),
        &[("AIS_API_KEYS", keys)],
        &[
            "--evaluate-interval-ms",
            "200",
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
        None,
    );
    let client = client();
    let minute = minute_floor(now_ms()) - 10 * 60_000;
    for (key, errors) in [("acme-key", 1), ("globex-key", 3)] {
        let events: Vec<Value> = (0..10)
            .map(|index| {
                json!({
                    "timestamp": minute + index * 1_000,
                    "model": "chat",
                    "latency_ms": 100,
                    "input_tokens": 10,
                    "status": if index < errors { "error" } else { "ok" },
                })
            })
            .collect();
        let (status, body) = post_json(&client, &server, Some(key), &Value::Array(events));
        assert_eq!(status, 202, "{body}");
    }
    server.wait_caught_up(&client);

    // Each tenant's objective instance, once its minute is evaluated.
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    let everyone = loop {
        let (status, body) = get_json(&client, &server, Some("ops-key"), "/v1/slos");
        assert_eq!(status, 200, "{body}");
        let done = body["slos"].as_array().is_some_and(|slos| {
            slos.len() == 2
                && slos
                    .iter()
                    .all(|slo| slo["evaluated_to"].as_i64() > Some(minute))
        });
        if done {
            break body;
        }
        assert!(Instant::now() < deadline, "never evaluated: {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let tenants: Vec<&str> = everyone["slos"]
        .as_array()
        .map(|slos| {
            slos.iter()
                .filter_map(|slo| slo["tenant"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(tenants, vec!["acme", "globex"]);

    let (status, acme) = get_json(&client, &server, Some("acme-key"), "/v1/slos");
    assert_eq!(status, 200);
    let slos = acme["slos"].as_array().expect("slos");
    assert_eq!(slos.len(), 1, "{acme}");
    assert_eq!(slos[0]["tenant"], "acme");
    assert_eq!(
        (
            slos[0]["requests"].as_u64(),
            slos[0]["bad_requests"].as_u64()
        ),
        (Some(10), Some(1))
    );
    let (status, globex) = get_json(&client, &server, Some("globex-key"), "/v1/slos");
    assert_eq!(status, 200);
    assert_eq!(globex["slos"][0]["bad_requests"], 3, "{globex}");

    let (status, budgets) = get_json(&client, &server, Some("acme-key"), "/v1/budgets");
    assert_eq!(status, 200);
    let budgets = budgets["budgets"].as_array().expect("budgets");
    assert_eq!(budgets.len(), 1);
    assert_eq!(budgets[0]["tenant"], "acme");
    assert_eq!(budgets[0]["limits"][0]["unit"], "tokens");
    if minute / 86_400_000 == now_ms() / 86_400_000 {
        // 10 requests × 10 input tokens, within today (UTC).
        assert_eq!(budgets[0]["limits"][0]["spent"], 100.0);
    }

    let (status, _) = get_json(
        &client,
        &server,
        Some("globex-key"),
        "/v1/budgets?tenant=acme",
    );
    assert_eq!(status, 403, "a foreign tenant needs an admin key");
    let (status, _) = get_json(&client, &server, None, "/v1/slos");
    assert_eq!(status, 401);
    let (status, admin) = get_json(
        &client,
        &server,
        Some("ops-key"),
        "/v1/budgets?tenant=globex",
    );
    assert_eq!(status, 200);
    assert_eq!(admin["budgets"][0]["model"], "chat", "{admin}");
    assert_eq!(admin["budgets"].as_array().map(Vec::len), Some(1));
}

/// Start of the UTC day holding `ms`.
fn utc_day(ms: i64) -> i64 {
    ms.div_euclid(86_400_000) * 86_400_000
}

/// Labels that tell one budget alert of a user from another: (budget, scope value,
/// threshold, state).
fn user_budget_transition(body: &Value) -> (String, String, String, String) {
    let label = |name: &str| body["labels"][name].as_str().unwrap_or("").to_string();
    (
        label("budget"),
        label("scope_value"),
        label("threshold"),
        body["state"].as_str().unwrap_or("").to_string(),
    )
}

/// Budgets of one user and of each user, fed the usage ledger: two users' calls cross
/// thresholds of their own; each crossing is delivered once, labelled with the tenant,
/// scope and user, for the user who reached it only; `ais serve` restarted on the same
/// data directory evaluates on without delivering any again; `GET /v1/budgets` lists the
/// users with `scope` and `scope_value`.
#[test]
fn budgets_of_users_alert_once_for_the_user_who_crossed_across_a_restart() {
    const CALL_USD: f64 = 0.1;
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(0);
    let config = dir.path().join("ais.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[budgets]]
tenant = "default"
user_id = "u-1"
daily_usd = 1.0
thresholds = [50, 100]

[[budgets]]
tenant = "default"
scope = "user_id"
name = "per user"
daily_usd = 1.0
thresholds = [50, 100]

[alerts]
retry_initial_ms = 100
retry_max_ms = 400
[alerts.webhook]
url = "{}"
secret = "{SECRET}"
"#,
            receiver.url
        ),
    )
    .expect("config written");
    let start = |dir: &Path| {
        Server::start_with(
            &dir.join("data"),
            &[],
            &[
                "--evaluate-interval-ms",
                "200",
                "--allowed-lateness-secs",
                "5",
                "--config",
                config.to_str().expect("utf-8 path"),
            ],
            None,
        )
    };
    // The evaluator reads the day of its last final window, a minute or so behind the
    // clock: the calls must be of that day, not of one just ended.
    while utc_day(now_ms() - 3 * 60_000) != utc_day(now_ms()) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let server = start(dir.path());
    let client = client();
    // u-1 spends $1.20 (past both thresholds of both budgets), u-2 $0.60 (past 50% of
    // its own), events without a user $5 (no user's spend).
    let now = now_ms() - 30_000;
    let mut events = Vec::new();
    for (user, calls) in [(Some("u-1"), 12), (Some("u-2"), 6), (None, 50)] {
        for index in 0..calls {
            let mut event = json!({
                "timestamp": now + index,
                "model": "chat",
                "latency_ms": 100,
                "cost_usd": CALL_USD,
            });
            if let Some(user) = user {
                event["user_id"] = json!(user);
            }
            events.push(event);
        }
    }
    let (status, body) = post_json(&client, &server, None, &Value::Array(events));
    assert_eq!(status, 202, "{body}");
    server.wait_caught_up(&client);

    let transition = |budget: &str, user: &str, threshold: &str| {
        (
            budget.to_string(),
            user.to_string(),
            threshold.to_string(),
            "firing".to_string(),
        )
    };
    let expected: BTreeSet<_> = [
        transition("default/user_id=u-1", "u-1", "50%"),
        transition("default/user_id=u-1", "u-1", "100%"),
        transition("per user", "u-1", "50%"),
        transition("per user", "u-1", "100%"),
        transition("per user", "u-2", "50%"),
    ]
    .into_iter()
    .collect();
    receiver.wait_until("every user's crossing", |state| {
        let got: BTreeSet<_> = state
            .accepted
            .iter()
            .map(|a| user_budget_transition(&a.body))
            .collect();
        expected.is_subset(&got)
    });
    let evaluated_to = |server: &Server| {
        let (status, body) = get_json(&client, server, None, "/v1/budgets");
        assert_eq!(status, 200, "{body}");
        body["budgets"].as_array().and_then(|budgets| {
            budgets
                .iter()
                .filter_map(|b| b["evaluated_to"].as_i64())
                .min()
        })
    };
    let before = evaluated_to(&server);
    assert!(server.stop().success());

    // Restarted on the same data: once it has read the ledger again (a later minute
    // evaluated) and delivered whatever that queued, nothing more was delivered.
    let server = start(dir.path());
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    while evaluated_to(&server) <= before || outbox_entries(&client, &server) != Some(0.0) {
        assert!(Instant::now() < deadline, "never evaluated past {before:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    receiver.with(|state| {
        assert_eq!(state.bad_signatures, 0);
        let got: Vec<_> = state
            .accepted
            .iter()
            .map(|a| user_budget_transition(&a.body))
            .collect();
        let once: BTreeSet<_> = got.iter().cloned().collect();
        assert_eq!(once, expected, "for the users who crossed, nothing else");
        assert_eq!(got.len(), expected.len(), "each once: {got:?}");
        for accepted in &state.accepted {
            let labels = &accepted.body["labels"];
            assert_eq!(labels["alertname"], "AisBudget", "{labels}");
            assert_eq!(labels["tenant"], "default", "{labels}");
            assert_eq!(labels["scope"], "user_id", "{labels}");
        }
    });

    let (status, body) = get_json(&client, &server, None, "/v1/budgets");
    assert_eq!(status, 200, "{body}");
    let listed: Vec<(String, String, f64)> = body["budgets"]
        .as_array()
        .expect("budgets")
        .iter()
        .map(|budget| {
            (
                budget["name"].as_str().unwrap_or("").to_string(),
                budget["scope_value"].as_str().unwrap_or("").to_string(),
                budget["limits"][0]["spent"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    let expected_listed = [
        ("default/user_id=u-1".to_string(), "u-1".to_string(), 1.2),
        ("per user".to_string(), "u-1".to_string(), 1.2),
        ("per user".to_string(), "u-2".to_string(), 0.6),
    ];
    assert_eq!(listed.len(), expected_listed.len(), "{body}");
    for ((name, user, spent), (want_name, want_user, want_spent)) in
        listed.iter().zip(&expected_listed)
    {
        assert_eq!((name, user), (want_name, want_user), "{body}");
        assert!((spent - want_spent).abs() < 1e-9, "{body}");
    }
    assert!(body["budgets"]
        .as_array()
        .expect("budgets")
        .iter()
        .all(|budget| budget["scope"] == "user_id"));
}
