//! `GET /v1/query/timeseries` through the router, over the real embedded store holding
//! both the rollups and the raw events of the same events: every point of grouped
//! series and `other` against brute force over the events committed, the shape of a
//! filtered timeseries against the rollups' answer, tenant isolation and the bounds.

mod support;

use std::borrow::Cow;
use std::collections::BTreeMap;

use ais_model::{Event, EventId, Status};
use ais_serve::breakdown::QueryLimits;
use axum::http::StatusCode;
use serde_json::Value;
use support::{get_path, Fixture, Rollups, T0};

/// One event every 1.5 s for 15 minutes from [`T0`].
const EVENTS: u64 = 600;
const EVENT_EVERY_MS: i64 = 1_500;

fn event(n: u64) -> Event<'static> {
    Event {
        endpoint: (!n.is_multiple_of(7)).then(|| Cow::Owned(format!("/e{}", n * n % 5))),
        region: n.is_multiple_of(3).then_some(Cow::Borrowed("eu")),
        status: if n.is_multiple_of(4) {
            Status::Error
        } else {
            Status::Ok
        },
        cost_micros: Some(n * 13 % 997),
        input_tokens: Some(n % 11 * 50),
        user_id: Some(Cow::Owned(format!("u{}", n % 9))),
        ttft_ms: n.is_multiple_of(2).then_some(3.0 + n as f64),
        ..Event::new(
            if n.is_multiple_of(5) {
                "small"
            } else {
                "large"
            },
            EventId::Generated(u128::from(n) + 1),
            T0 + n as i64 * EVENT_EVERY_MS,
            10.0 + (n * 37 % 400) as f64,
        )
    }
}

/// The events committed as the stream commits them: rollups and raw events together.
async fn fixture() -> Fixture {
    support::fixture(EVENTS, event, Rollups::Committed).await
}

async fn get(
    fixture: &Fixture,
    limits: QueryLimits,
    key: &str,
    query: &str,
) -> (StatusCode, Value) {
    let path = format!("/v1/query/timeseries?{query}");
    get_path(fixture, limits, key, &path).await
}

/// The metrics checked exactly, and each one's value of one event, in the unit that
/// sums exactly (micro-dollars for cost).
const EXACT_METRICS: &[&str] = &["requests", "errors", "input_tokens", "cost_usd"];

fn unit_value(metric: &str, event: &Event<'_>) -> u64 {
    match metric {
        "requests" => 1,
        "errors" => u64::from(event.status == Status::Error),
        "input_tokens" => event.input_tokens.unwrap_or(0),
        "cost_usd" => event.cost_micros.unwrap_or(0),
        other => panic!("no brute force for {other}"),
    }
}

/// A point's value in that unit.
fn point_value(metric: &str, point: &Value) -> u64 {
    let value = point[1].as_f64().expect("a count or sum is never null");
    if metric == "cost_usd" {
        (value * 1e6).round() as u64
    } else {
        value as u64
    }
}

/// Brute force: per endpoint (`None`: missing), the metric's sum per step of acme's
/// events in `[from_ms, to_ms)` that pass `keep`.
fn brute(
    fixture: &Fixture,
    metric: &str,
    (from_ms, to_ms, step_ms): (i64, i64, i64),
    keep: impl Fn(&Event<'static>) -> bool,
) -> BTreeMap<Option<String>, Vec<u64>> {
    let steps = ((to_ms - from_ms + step_ms - 1) / step_ms) as usize;
    let mut groups: BTreeMap<Option<String>, Vec<u64>> = BTreeMap::new();
    for (tenant, event) in &fixture.events {
        let in_range = event.timestamp_ms >= from_ms && event.timestamp_ms < to_ms;
        if *tenant != "acme" || !in_range || !keep(event) {
            continue;
        }
        let step = ((event.timestamp_ms - from_ms) / step_ms) as usize;
        groups
            .entry(event.endpoint.as_deref().map(str::to_string))
            .or_insert_with(|| vec![0; steps])[step] += unit_value(metric, event);
    }
    groups
}

#[tokio::test]
async fn every_point_of_the_top_groups_and_other_matches_brute_force_and_adds_up() {
    let fixture = fixture().await;
    // A range that cuts the events at both ends, in steps of two minutes, the last one
    // cut short by `to`.
    let (from_ms, to_ms, step_ms) = (T0 + 60_000, T0 + 13 * 60_000, 120_000);
    for metric in EXACT_METRICS {
        for (filter, keep) in [
            (
                "",
                (|_: &Event<'static>| true) as fn(&Event<'static>) -> bool,
            ),
            ("&filter=region:!eu", |event: &Event<'static>| {
                event.region.is_none()
            }),
        ] {
            let query = format!(
                "metric={metric}&from={from_ms}&to={to_ms}&step=120&by=endpoint&top=2{filter}"
            );
            let (status, body) = get(&fixture, QueryLimits::default(), "acme-key", &query).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            assert_eq!(body["source"], "scan", "{body}");
            assert_eq!(body["by"], "endpoint", "{body}");
            let want = brute(&fixture, metric, (from_ms, to_ms, step_ms), keep);
            assert!(want.len() > 2, "the fixture leaves groups for other");
            let steps = want.values().next().map_or(0, Vec::len);
            assert_eq!(steps, 6);

            let series = body["series"].as_array().expect("series");
            assert_eq!(series.len(), 3, "two groups and other: {body}");
            let mut sums = vec![0u64; steps];
            let mut previous_total = u64::MAX;
            for (index, one) in series.iter().enumerate() {
                let points = one["points"].as_array().expect("points");
                assert_eq!(points.len(), steps, "{query}");
                let values: Vec<u64> = points
                    .iter()
                    .map(|point| point_value(metric, point))
                    .collect();
                for (step, point) in points.iter().enumerate() {
                    assert_eq!(point[0].as_i64(), Some(from_ms + step as i64 * step_ms));
                    sums[step] += values[step];
                }
                if index < 2 {
                    let key: Option<String> =
                        serde_json::from_value(one["key"]["endpoint"].clone()).expect("key");
                    assert_eq!(Some(&values), want.get(&key), "{query}: group {key:?}");
                    assert!(one.get("other").is_none(), "{one}");
                    let total: u64 = values.iter().sum();
                    assert!(
                        total <= previous_total,
                        "{query}: ranked by the metric's total"
                    );
                    previous_total = total;
                } else {
                    assert_eq!(one["key"], Value::Null, "{one}");
                    assert_eq!(one["other"], true, "{one}");
                }
            }
            let totals: Vec<u64> = (0..steps)
                .map(|step| want.values().map(|group| group[step]).sum())
                .collect();
            assert_eq!(sums, totals, "{query}: every step adds up");
        }
    }
}

#[tokio::test]
async fn a_timeseries_without_a_rest_has_no_other_and_ratios_rank_by_requests() {
    let fixture = fixture().await;
    let range = format!("from={T0}&to={}", T0 + 15 * 60_000);
    let (status, body) = get(
        &fixture,
        QueryLimits::default(),
        "acme-key",
        &format!("metric=error_rate&{range}&by=endpoint&top=1000&step=300"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let want = brute(
        &fixture,
        "requests",
        (T0, T0 + 15 * 60_000, 300_000),
        |_| true,
    );
    let series = body["series"].as_array().expect("series");
    assert_eq!(series.len(), want.len(), "every group, no other: {body}");
    let mut ranked: Vec<(u64, Option<String>)> = want
        .iter()
        .map(|(key, steps)| (steps.iter().sum(), key.clone()))
        .collect();
    ranked.sort_by(|left, right| right.0.cmp(&left.0).then(left.1.cmp(&right.1)));
    let keys: Vec<Option<String>> = series
        .iter()
        .map(|one| serde_json::from_value(one["key"]["endpoint"].clone()).expect("key"))
        .collect();
    let wanted: Vec<Option<String>> = ranked.into_iter().map(|(_, key)| key).collect();
    assert_eq!(keys, wanted, "by requests, ties by key");
}

#[tokio::test]
async fn a_filtered_timeseries_without_by_has_the_shape_and_values_of_the_rollups() {
    let fixture = fixture().await;
    let range = format!("from={T0}&to={}&step=180", T0 + 15 * 60_000);
    for metric in [
        "requests",
        "cost_usd",
        "latency_p99",
        "ttft_p50",
        "unique_users",
    ] {
        let (status, rollups) = get(
            &fixture,
            QueryLimits::default(),
            "acme-key",
            &format!("metric={metric}&{range}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{rollups}");
        assert!(rollups.get("source").is_none(), "as before: {rollups}");
        assert!(rollups.get("by").is_none(), "{rollups}");
        assert_eq!(
            rollups["series"].as_array().map(Vec::len),
            Some(2),
            "one series per model: {rollups}"
        );
        // Every event has region eu or none: the filter keeps them all.
        let (status, scan) = get(
            &fixture,
            QueryLimits::default(),
            "acme-key",
            &format!("metric={metric}&{range}&filter=region:eu|null"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{scan}");
        assert_eq!(scan["source"], "scan");
        assert_eq!(scan["series"], rollups["series"], "{metric}");
        assert_eq!(
            (&scan["metric"], &scan["step"], &scan["from"], &scan["to"]),
            (
                &rollups["metric"],
                &rollups["step"],
                &rollups["from"],
                &rollups["to"]
            )
        );
    }
    // With `model=` and a filter: that model's series only, of the matching events.
    let (status, body) = get(
        &fixture,
        QueryLimits::default(),
        "acme-key",
        &format!("metric=requests&{range}&model=small&filter=region:eu"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let series = body["series"].as_array().expect("series");
    assert_eq!(series.len(), 1, "{body}");
    assert_eq!(series[0]["model"], "small");
    let total: u64 = series[0]["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|point| point_value("requests", point))
        .sum();
    let want = fixture
        .events
        .iter()
        .filter(|(tenant, event)| {
            *tenant == "acme" && event.model == "small" && event.region.is_some()
        })
        .count() as u64;
    assert_eq!(total, want);
}

#[tokio::test]
async fn tenants_are_isolated_and_a_scan_past_its_bound_answers_503() {
    let fixture = fixture().await;
    let range = format!("from={T0}&to={}", T0 + 15 * 60_000);
    for query in ["by=tenant", "filter=tenant:other"] {
        let (status, body) = get(
            &fixture,
            QueryLimits::default(),
            "acme-key",
            &format!("metric=requests&{range}&{query}"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{query}: {body}");
    }
    let (status, body) = get(
        &fixture,
        QueryLimits::default(),
        "root-key",
        &format!("metric=requests&{range}&step=900&by=tenant"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let per_tenant: BTreeMap<String, u64> = body["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|one| {
            (
                one["key"]["tenant"].as_str().expect("tenant").to_string(),
                point_value("requests", &one["points"][0]),
            )
        })
        .collect();
    let count = |wanted: &str| {
        fixture
            .events
            .iter()
            .filter(|(tenant, _)| *tenant == wanted)
            .count() as u64
    };
    assert_eq!(
        per_tenant,
        BTreeMap::from([
            ("acme".to_string(), count("acme")),
            ("other".to_string(), count("other"))
        ])
    );

    // Fifteen one-minute steps of one endpoint are fifteen groups.
    let tight = QueryLimits {
        max_groups: 14,
        ..QueryLimits::default()
    };
    let (status, body) = get(
        &fixture,
        tight,
        "acme-key",
        &format!("metric=requests&{range}&by=endpoint&filter=endpoint:/e0"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("more than 14 groups (one per value and step)"),
        "{body}"
    );
}
