//! `GET /v1/incidents` through the router, over the real embedded store holding
//! anomalies committed as the evaluator commits them: grouping per (tenant, model),
//! tenant isolation (admin sees across tenants), an incident that started before
//! `from` shown whole, the id kept from firing to resolved and across a restart (the
//! store reopened), the cap on the anomalies read said in the answer, and an
//! incident of locations that a filter on the model leaves wider.

mod support;

use ais_model::{Event, EventId};
use ais_serve::breakdown::QueryLimits;
use ais_serve::incidents::MAX_ANOMALIES;
use ais_store::evaluation::{
    AnomalyRecord, AnomalyState, EvaluationCommit, EvaluationStore, Location, Resolution,
    ALL_TENANTS,
};
use axum::http::StatusCode;
use serde_json::Value;
use support::{get_path, Fixture, Rollups, T0};

const MINUTE: i64 = 60_000;

fn event(n: u64) -> Event<'static> {
    Event::new("m", EventId::Generated(u128::from(n) + 1), T0, 10.0)
}

/// A store with one event, so its tenants exist, and no anomaly yet.
async fn empty_store() -> Fixture {
    support::fixture(1, event, Rollups::Omitted).await
}

fn anomaly(tenant: &str, model: &str, detector: &str, minute: i64, score: f64) -> AnomalyRecord {
    AnomalyRecord {
        location: None,
        tenant: tenant.to_string(),
        model: model.to_string(),
        detector: detector.to_string(),
        metric: format!("{detector}_metric"),
        window_start_ms: T0 + minute * MINUTE,
        observed: 10.0,
        baseline: 1.0,
        score,
        state: AnomalyState::Firing,
        resolved_window_ms: None,
    }
}

fn resolution(tenant: &str, model: &str, detector: &str, minute: i64) -> Resolution {
    Resolution {
        location: None,
        tenant: tenant.to_string(),
        model: model.to_string(),
        detector: detector.to_string(),
        window_start_ms: T0 + minute * MINUTE,
    }
}

async fn commit(fixture: &Fixture, fired: Vec<AnomalyRecord>, resolved: Vec<Resolution>) {
    fixture
        .store
        .commit_evaluation(EvaluationCommit {
            next_window_ms: T0,
            state: Vec::new(),
            fired,
            resolved,
            outbox: Vec::new(),
            outbox_limit: 100,
        })
        .await
        .expect("evaluation commit");
}

/// Four detectors on acme's `m` within minutes, one on acme's `n`, one on the tenant
/// `other`'s `m` and one across tenants on `m`.
const FOUR: [&str; 4] = [
    "latency_p95_zscore",
    "ttft_input_fit",
    "error_rate_wilson",
    "cost_zscore",
];

async fn seeded() -> Fixture {
    let fixture = empty_store().await;
    let mut fired: Vec<AnomalyRecord> = FOUR
        .iter()
        .zip([0, 2, 3, 5])
        .zip([6.0, 9.5, 4.0, 7.0])
        .map(|((detector, minute), score)| anomaly("acme", "m", detector, minute, score))
        .collect();
    fired.push(anomaly("acme", "n", "latency_p95_zscore", 1, 3.0));
    fired.push(anomaly("other", "m", "latency_p95_zscore", 1, 3.0));
    fired.push(anomaly(ALL_TENANTS, "m", "latency_p95_zscore", 1, 3.0));
    commit(&fixture, fired, Vec::new()).await;
    fixture
}

async fn incidents(fixture: &Fixture, key: &str, query: &str) -> (StatusCode, Value) {
    let path = format!("/v1/incidents?{query}");
    get_path(fixture, QueryLimits::default(), key, &path).await
}

/// (tenant, model, number of anomalies) of each incident, in the answer's order.
fn shapes(body: &Value) -> Vec<(String, String, usize)> {
    body["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|incident| {
            (
                incident["tenant"].as_str().unwrap_or_default().to_string(),
                incident["model"].as_str().unwrap_or_default().to_string(),
                incident["anomalies"].as_array().map_or(0, Vec::len),
            )
        })
        .collect()
}

fn shape(tenant: &str, model: &str, anomalies: usize) -> (String, String, usize) {
    (tenant.to_string(), model.to_string(), anomalies)
}

#[tokio::test]
async fn a_tenant_sees_its_own_incidents_one_per_model_and_an_admin_sees_across_tenants() {
    let fixture = seeded().await;
    let range = format!("from={T0}&to={}", T0 + 60 * MINUTE);

    let (status, own) = incidents(&fixture, "acme-key", &range).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    // Newest first: `n` started at minute 1, `m` at minute 0.
    assert_eq!(shapes(&own), [shape("acme", "n", 1), shape("acme", "m", 4)]);
    let grouped = &own["incidents"][1];
    assert_eq!(grouped["state"], "firing", "{grouped}");
    assert_eq!(grouped["start"], T0);
    assert_eq!(grouped["end"], Value::Null);
    assert_eq!(grouped["detectors"].as_array().map(Vec::len), Some(4));
    assert_eq!(grouped["peak"]["detector"], "ttft_input_fit");
    assert_eq!(grouped["peak"]["score"], 9.5);
    assert_eq!(own["gap_secs"], 600);
    assert_eq!(own["truncated"], false);

    let (status, foreign) = incidents(&fixture, "acme-key", &format!("{range}&tenant=other")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{foreign}");

    let (status, other) = incidents(&fixture, "root-key", &format!("{range}&tenant=other")).await;
    assert_eq!(status, StatusCode::OK, "{other}");
    assert_eq!(shapes(&other), [shape("other", "m", 1)]);

    let (status, every) = incidents(&fixture, "root-key", &range).await;
    assert_eq!(status, StatusCode::OK, "{every}");
    assert_eq!(
        shapes(&every),
        [
            shape(ALL_TENANTS, "m", 1),
            shape("acme", "n", 1),
            shape("other", "m", 1),
            shape("acme", "m", 4),
        ]
    );

    let (status, model_only) = incidents(&fixture, "acme-key", &format!("{range}&model=n")).await;
    assert_eq!(status, StatusCode::OK, "{model_only}");
    assert_eq!(shapes(&model_only), [shape("acme", "n", 1)]);

    let (status, bad) = incidents(&fixture, "acme-key", "from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|error| error.starts_with("from must be")),
        "{bad}"
    );
}

#[tokio::test]
async fn an_incident_keeps_its_id_across_a_restart_until_resolved_and_is_whole_from_a_later_from() {
    let fixture = seeded().await;
    // From minute 4: acme's `m` incident started at minute 0, before it.
    let later = format!("from={}&to={}", T0 + 4 * MINUTE, T0 + 60 * MINUTE);
    let (_, firing) = incidents(&fixture, "acme-key", &later).await;
    assert_eq!(
        shapes(&firing),
        [shape("acme", "n", 1), shape("acme", "m", 4)],
        "{firing}"
    );
    let firing_id = firing["incidents"][1]["id"].clone();
    assert_eq!(firing["incidents"][1]["start"], T0);

    // A restart mid-incident: the incident is computed again from the stored
    // anomalies, the same one with the same id, neither lost nor doubled.
    let fixture = fixture.reopened();
    let (_, restarted) = incidents(&fixture, "acme-key", &later).await;
    assert_eq!(restarted["incidents"], firing["incidents"], "{restarted}");

    // Three of four resolve: still firing, same id.
    let resolved: Vec<Resolution> = FOUR[..3]
        .iter()
        .zip([6, 9, 12])
        .map(|(detector, minute)| resolution("acme", "m", detector, minute))
        .collect();
    commit(&fixture, Vec::new(), resolved).await;
    let (_, three) = incidents(&fixture, "acme-key", &later).await;
    assert_eq!(three["incidents"][1]["state"], "firing", "{three}");
    assert_eq!(three["incidents"][1]["id"], firing_id);

    // The last one resolves: resolved once, at the latest resolution, same id.
    commit(
        &fixture,
        Vec::new(),
        vec![resolution("acme", "m", FOUR[3], 10)],
    )
    .await;
    let (_, all) = incidents(&fixture, "acme-key", &later).await;
    let incident = &all["incidents"][1];
    assert_eq!(incident["state"], "resolved", "{all}");
    assert_eq!(incident["end"], T0 + 12 * MINUTE);
    assert_eq!(incident["id"], firing_id);

    // A range that starts after it resolved no longer shows it.
    let after = format!("from={}&to={}", T0 + 13 * MINUTE, T0 + 60 * MINUTE);
    let (_, gone) = incidents(&fixture, "acme-key", &after).await;
    assert_eq!(shapes(&gone), [shape("acme", "n", 1)], "{gone}");
}

#[tokio::test]
async fn a_read_past_the_cap_says_truncated() {
    let fixture = empty_store().await;
    // One firing anomaly a minute: one incident of them all.
    let minutes = i64::try_from(MAX_ANOMALIES).expect("small");
    let fired = (0..minutes)
        .map(|minute| anomaly("acme", "m", "latency_p95_zscore", minute, 3.0))
        .collect();
    commit(&fixture, fired, Vec::new()).await;
    let range = format!("from={T0}&to={}", T0 + (minutes + 10) * MINUTE);
    let (status, at_cap) = incidents(&fixture, "acme-key", &range).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(at_cap["truncated"], false);
    let path = format!("/v1/anomalies?{range}");
    let (_, anomalies) = get_path(&fixture, QueryLimits::default(), "acme-key", &path).await;
    assert_eq!(anomalies["truncated"], false);
    assert_eq!(shapes(&at_cap), [shape("acme", "m", MAX_ANOMALIES)]);

    commit(
        &fixture,
        vec![anomaly("acme", "m", "latency_p95_zscore", minutes, 3.0)],
        Vec::new(),
    )
    .await;
    let (status, past_cap) = incidents(&fixture, "acme-key", &range).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(past_cap["truncated"], true);
    // `/v1/anomalies` reads under the same bound and says so the same way.
    let listed = |body: &Value| body["anomalies"].as_array().map_or(0, Vec::len);
    let path = format!("/v1/anomalies?{range}");
    let (status, anomalies) = get_path(&fixture, QueryLimits::default(), "acme-key", &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(anomalies["truncated"], true);
    assert_eq!(listed(&anomalies), MAX_ANOMALIES);
    assert_eq!(
        anomalies["anomalies"][0]["window_start"],
        T0 + minutes * MINUTE
    );
    // The newest are kept: the first minute's anomaly is the one left out.
    assert_eq!(shapes(&past_cap), [shape("acme", "m", MAX_ANOMALIES)]);
    assert_eq!(past_cap["incidents"][0]["start"], T0 + MINUTE);
}

#[tokio::test]
async fn a_model_filter_still_says_whether_an_incident_of_locations_is_wider() {
    let fixture = empty_store().await;
    // acme's /chat fires at minute 0 (tenant's models together, model "*"), its model
    // `m` as a whole at minute 1; `other`'s `n` fires too, which is not acme's.
    let mut chat = anomaly("acme", "*", "latency_per_token_zscore", 0, 6.0);
    chat.location = Some(Location::new("endpoint", "/chat"));
    let fired = vec![
        chat,
        anomaly("acme", "m", "latency_p95_zscore", 1, 5.0),
        anomaly("other", "n", "latency_p95_zscore", 1, 5.0),
    ];
    commit(&fixture, fired, Vec::new()).await;
    let range = format!("from={T0}&to={}", T0 + 60 * MINUTE);
    let located = |body: &Value| {
        body["incidents"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|incident| incident["model"] == "*")
            .cloned()
            .unwrap_or(Value::Null)
    };

    let (status, unfiltered) = incidents(&fixture, "acme-key", &range).await;
    assert_eq!(status, StatusCode::OK, "{unfiltered}");
    assert_eq!(located(&unfiltered)["extent"], "wider", "{unfiltered}");

    // Filtered to the locations' model: the same incident, still wider because of `m`,
    // which the answer does not list.
    let (status, filtered) = incidents(&fixture, "acme-key", &format!("{range}&model=*")).await;
    assert_eq!(status, StatusCode::OK, "{filtered}");
    assert_eq!(shapes(&filtered), [shape("acme", "*", 1)]);
    let incident = located(&filtered);
    assert_eq!(incident["extent"], "wider", "{filtered}");
    assert_eq!(incident["wider"], serde_json::json!(["m"]), "{filtered}");
    assert_eq!(incident, located(&unfiltered));
    assert_eq!(filtered["truncated"], false);

    // An admin reading acme: the same; another tenant's models never widen it.
    let query = format!("{range}&model=*&tenant=acme");
    let (status, admin) = incidents(&fixture, "root-key", &query).await;
    assert_eq!(status, StatusCode::OK, "{admin}");
    assert_eq!(
        located(&admin)["wider"],
        serde_json::json!(["m"]),
        "{admin}"
    );
}
