//! `GET /v1/query/breakdown` through the router, over the real embedded store: groups,
//! `other` and the total against brute force over the events committed, the key's
//! shape, tenant isolation, the 503 of a scan past its bound, and the same answer from
//! dimension rollups as from the scan.

mod support;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use ais_model::{Event, Status};
use ais_serve::breakdown::QueryLimits;
use axum::http::StatusCode;
use serde_json::Value;
use support::{get_path, Fixture, Rollups, T0};

/// The range of every request: it covers the events.
const RANGE: &str = "from=1795341600000&to=1795348800000";

fn event(n: u64) -> Event<'static> {
    Event {
        endpoint: (!n.is_multiple_of(4)).then(|| Cow::Owned(format!("/e{}", n % 3))),
        region: n.is_multiple_of(2).then_some(Cow::Borrowed("eu")),
        status: if n.is_multiple_of(5) {
            Status::Error
        } else {
            Status::Ok
        },
        cost_micros: Some(n * 11),
        user_id: Some(Cow::Owned(format!("u{}", n % 9))),
        ..support::bare_event(n)
    }
}

/// 120 events from [`T0`], as raw events only: a summary without filters, which reads
/// rollups, finds none.
async fn fixture() -> Fixture {
    support::fixture(120, event, Rollups::Omitted).await
}

async fn get(
    fixture: &Fixture,
    limits: QueryLimits,
    key: &str,
    query: &str,
) -> (StatusCode, Value) {
    let path = format!("/v1/query/breakdown?{RANGE}&{query}");
    get_path(fixture, limits, key, &path).await
}

/// requests and cost (micro-dollars) per endpoint (`None`: missing) of `tenant`'s events
/// that pass `keep`.
fn brute(
    fixture: &Fixture,
    tenant: &str,
    keep: impl Fn(&Event<'static>) -> bool,
) -> BTreeMap<Option<String>, (u64, u64)> {
    let mut groups: BTreeMap<Option<String>, (u64, u64)> = BTreeMap::new();
    for (event_tenant, event) in &fixture.events {
        if *event_tenant != tenant || !keep(event) {
            continue;
        }
        let group = groups
            .entry(event.endpoint.as_deref().map(str::to_string))
            .or_default();
        group.0 += 1;
        group.1 += event.cost_micros.unwrap_or(0);
    }
    groups
}

fn micros(value: &Value) -> u64 {
    (value.as_f64().expect("cost") * 1e6).round() as u64
}

#[tokio::test]
async fn groups_other_and_total_match_brute_force_and_add_up() {
    let fixture = fixture().await;
    let (status, body) = get(
        &fixture,
        QueryLimits::default(),
        "acme-key",
        "by=endpoint&filter=region:!eu&top=2&order=cost_usd",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let want = brute(&fixture, "acme", |event| event.region.is_none());
    assert!(want.len() > 2, "the fixture leaves groups for other");
    let mut ranked: Vec<(&Option<String>, &(u64, u64))> = want.iter().collect();
    ranked.sort_by(|left, right| right.1 .1.cmp(&left.1 .1).then(left.0.cmp(right.0)));

    let groups = body["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2);
    for (group, (key, (requests, cost))) in groups.iter().zip(&ranked) {
        assert_eq!(
            group["key"]["endpoint"],
            serde_json::to_value(key).expect("key")
        );
        assert_eq!(group["requests"].as_u64(), Some(*requests), "{group}");
        assert_eq!(micros(&group["cost_usd"]), *cost, "{group}");
    }
    let rest: (u64, u64) = ranked[2..]
        .iter()
        .fold((0, 0), |sum, (_, group)| (sum.0 + group.0, sum.1 + group.1));
    assert_eq!(body["other"]["requests"].as_u64(), Some(rest.0), "{body}");
    assert_eq!(micros(&body["other"]["cost_usd"]), rest.1);
    let total: (u64, u64) = want
        .values()
        .fold((0, 0), |sum, group| (sum.0 + group.0, sum.1 + group.1));
    assert_eq!(body["total"]["requests"].as_u64(), Some(total.0));
    assert_eq!(micros(&body["total"]["cost_usd"]), total.1);
    assert!(
        body["total"]["late_events"].is_null(),
        "unknown under filters: {body}"
    );
    assert_eq!(body["source"], "scan");
    assert_eq!(body["order"], "cost_usd");
    assert_eq!(body["by"], serde_json::json!(["endpoint"]));
}

#[tokio::test]
async fn tenants_are_isolated_and_only_admins_cross_them() {
    let fixture = fixture().await;
    let (status, body) = get(
        &fixture,
        QueryLimits::default(),
        "acme-key",
        "by=endpoint&top=1000",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let acme: u64 = brute(&fixture, "acme", |_| true)
        .values()
        .map(|group| group.0)
        .sum();
    assert_eq!(
        body["total"]["requests"].as_u64(),
        Some(acme),
        "only acme's events"
    );
    assert_eq!(body["total"]["late_events"].as_u64(), Some(0), "{body}");

    for query in ["by=tenant", "by=endpoint&filter=tenant:other"] {
        let (status, body) = get(&fixture, QueryLimits::default(), "acme-key", query).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains("admin"),
            "{body}"
        );
    }
    let (status, body) = get(&fixture, QueryLimits::default(), "root-key", "by=tenant").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let by_tenant: BTreeMap<String, u64> = body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|group| {
            (
                group["key"]["tenant"].as_str().expect("tenant").to_string(),
                group["requests"].as_u64().expect("requests"),
            )
        })
        .collect();
    let other: u64 = brute(&fixture, "other", |_| true)
        .values()
        .map(|group| group.0)
        .sum();
    assert_eq!(
        by_tenant,
        BTreeMap::from([("acme".to_string(), acme), ("other".to_string(), other)])
    );
}

#[tokio::test]
async fn a_scan_past_its_bound_answers_503_naming_it() {
    let fixture = fixture().await;
    let tight = QueryLimits {
        max_groups: 3,
        ..QueryLimits::default()
    };
    let (status, body) = get(&fixture, tight, "acme-key", "by=user_id").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("more than 3 groups"),
        "{body}"
    );
    let expired = QueryLimits {
        timeout: Duration::ZERO,
        ..QueryLimits::default()
    };
    let (status, body) = get(&fixture, expired, "acme-key", "by=user_id").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("query timeout"),
        "{body}"
    );
}

#[tokio::test]
async fn a_filtered_summary_counts_only_matching_events_and_says_late_events_are_unknown() {
    let fixture = fixture().await;
    let path = format!("/v1/query/summary?{RANGE}&filter=region:!eu&filter=endpoint:/e1|null");
    let (status, body) = get_path(&fixture, QueryLimits::default(), "acme-key", &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let want = brute(&fixture, "acme", |event| {
        event.region.is_none() && matches!(event.endpoint.as_deref(), Some("/e1") | None)
    });
    let (requests, cost) = want
        .values()
        .fold((0, 0), |sum, group| (sum.0 + group.0, sum.1 + group.1));
    assert!(requests > 0, "the filters select events");
    let models = body["models"].as_array().expect("models");
    assert_eq!(models.len(), 1, "{body}");
    assert_eq!(models[0]["model"], "m");
    assert_eq!(models[0]["requests"].as_u64(), Some(requests), "{body}");
    assert_eq!(micros(&models[0]["cost_usd"]), cost);
    assert!(models[0]["late_events"].is_null(), "{body}");

    // Unfiltered, the summary still comes from the rollups (none were committed here).
    let (status, body) = get_path(
        &fixture,
        QueryLimits::default(),
        "acme-key",
        &format!("/v1/query/summary?{RANGE}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["models"], serde_json::json!([]), "{body}");
}

/// A breakdown by a rolled-up dimension is answered from the rollups, with the same
/// groups, `other` and total as the scan; a range starting mid-minute merges a scan of
/// that minute; a filter on another dimension falls back to the scan.
#[tokio::test]
async fn a_rolled_up_dimension_answers_from_rollups_as_the_scan_does() {
    let rolled_up = support::fixture(120, event, Rollups::WithDimensions).await;
    let scanned = fixture().await;
    let blocks = |body: &Value| {
        let mut total = body["total"].clone();
        // From the model rollups, which only the rolled-up fixture commits.
        total["late_events"] = Value::Null;
        (body["groups"].clone(), body["other"].clone(), total)
    };
    let from_mid_minute = format!("from={}&to=1795348800000", T0 + 30_500);
    for query in [
        format!("{RANGE}&by=endpoint&order=cost_usd&top=2"),
        format!("{RANGE}&by=region&filter=region:eu|null"),
        format!("{RANGE}&by=endpoint&filter=endpoint:!/e1"),
        format!("{from_mid_minute}&by=endpoint"),
    ] {
        let path = format!("/v1/query/breakdown?{query}");
        let (status, body) = get_path(&rolled_up, QueryLimits::default(), "acme-key", &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["source"], "rollup", "{query}: {body}");
        let (status, scan) = get_path(&scanned, QueryLimits::default(), "acme-key", &path).await;
        assert_eq!(status, StatusCode::OK, "{scan}");
        assert_eq!(scan["source"], "scan");
        assert!(body["total"]["requests"].as_u64() > Some(0), "{body}");
        assert_eq!(blocks(&body), blocks(&scan), "{query}");
    }
    let path = format!("/v1/query/breakdown?{RANGE}&by=endpoint&filter=model:m");
    let (status, body) = get_path(&rolled_up, QueryLimits::default(), "acme-key", &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["source"], "scan",
        "a filter on another dimension: {body}"
    );
}
