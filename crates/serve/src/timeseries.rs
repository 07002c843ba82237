//! `GET /v1/query/timeseries?metric&from&to&step[&model][&filter=D:v1|v2 …][&by=D][&top=N]`:
//! one metric of the metric block per step of a range.
//!
//! Without `filter` or `by` the points come from the rollups, one series per model, as
//! they always have. With `filter` they come from a scan of raw events, still one
//! series per model (`"source": "scan"`). With `by=D` (one dimension) they come from the
//! same scan grouped per step and value of D: the top N groups ranked by the metric's
//! total over the range (by requests for ratios and percentiles), then one series of
//! every other group merged per step (`"key": null, "other": true`), left out when there
//! is no rest. Counts and sums of the series add up to every step's total exactly.
//!
//! The scan has the breakdown's bounds (query timeout, groups, where each step of a
//! group counts); an answer's size is bounded by [`MAX_SERIES_POINTS`], checked before
//! the scan.

use std::collections::{BTreeMap, HashMap};

use ais_model::auth::Principal;
use ais_model::dimension::{Dimension, Filter, Filters};
use ais_model::time::unix_now_ms;
use ais_rollup::breakdown::{OrderBy, StepPartials, Steps};
use ais_rollup::RollupPartial;
use ais_store::BreakdownQuery;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use crate::breakdown;
use crate::error::QueryError;
use crate::params::{self, Range};
use crate::query::{authorize, fetch, may_cross_tenants, tenant_of};
use crate::QueryState;

/// Most points one answer with `by` may hold: (top + 1) series × points per series.
/// About 25 bytes of JSON a point, so an answer stays near 50 MB at most.
pub const MAX_SERIES_POINTS: usize = 2_000_000;

/// A metric a timeseries can plot: a field of the metric block, under its timeseries
/// name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric(OrderBy);

pub const METRIC_NAMES: &[(&str, OrderBy)] = &[
    ("requests", OrderBy::Requests),
    ("errors", OrderBy::Errors),
    ("error_rate", OrderBy::ErrorRate),
    ("latency_p50", OrderBy::LatencyP50),
    ("latency_p95", OrderBy::LatencyP95),
    ("latency_p99", OrderBy::LatencyP99),
    ("ttft_p50", OrderBy::TtftP50),
    ("ttft_p95", OrderBy::TtftP95),
    ("ttft_p99", OrderBy::TtftP99),
    ("input_tokens", OrderBy::InputTokens),
    ("output_tokens", OrderBy::OutputTokens),
    ("cost_usd", OrderBy::CostUsd),
    ("unique_users", OrderBy::UniqueUsers),
];

impl Metric {
    pub fn parse(text: &str) -> Option<Self> {
        METRIC_NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, field)| Self(*field))
    }

    /// Counts and sums (and unique users): a step without requests is 0, and a group's
    /// total over the range ranks it.
    fn is_count(self) -> bool {
        matches!(
            self.0,
            OrderBy::Requests
                | OrderBy::Errors
                | OrderBy::InputTokens
                | OrderBy::OutputTokens
                | OrderBy::CostUsd
                | OrderBy::UniqueUsers
        )
    }

    /// The value of a bucket's merged partial; `None` for a bucket without requests
    /// where the metric is a ratio or a quantile (counts and sums are then 0).
    pub fn value(self, partial: Option<&RollupPartial>) -> Option<f64> {
        match partial {
            Some(partial) => self.0.value(partial),
            None => self.is_count().then_some(0.0),
        }
    }

    /// What ranks groups: the metric's total over the range, or requests where a total
    /// of the metric says little about which groups matter (ratios, percentiles).
    fn rank_order(self) -> OrderBy {
        if self.is_count() {
            self.0
        } else {
            OrderBy::Requests
        }
    }
}

/// `[t_ms, value]`: where a step starts and the metric over it.
pub type Point = (i64, Option<f64>);

#[derive(Debug, Serialize)]
pub struct TimeseriesResponse {
    pub metric: String,
    pub step: i64,
    pub from: i64,
    pub to: i64,
    /// The `by` dimension as the request wrote it; absent without `by`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub series: Vec<Series>,
    /// `"scan"` when the points come from raw events (`filter`, `by`); absent when they
    /// come from the rollups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Series {
    /// One model's points (no `by`).
    Model { model: String, points: Vec<Point> },
    /// One value of the `by` dimension (`{"D": value}`, `null` for events without it),
    /// or every group past the top merged (`key` null, `other` true).
    Group {
        key: Option<BTreeMap<String, Option<String>>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        other: bool,
        points: Vec<Point>,
    },
}

/// What a request asks for beyond the range and step, checked.
#[derive(Debug)]
struct Request {
    metric_name: String,
    metric: Metric,
    by: Option<Dimension>,
    /// Groups answered before `other`; read (and checked) without `by` too, unused.
    top: usize,
    filters: Filters,
}

fn bad(message: String) -> QueryError {
    QueryError::BadParameter(message)
}

fn parse_request(pairs: &[(String, String)]) -> Result<Request, QueryError> {
    let params = params::first_values(pairs);
    let metric_name = params.get("metric").cloned().unwrap_or_default();
    let metric = Metric::parse(&metric_name).ok_or_else(|| {
        let names: Vec<&str> = METRIC_NAMES.iter().map(|(name, _)| *name).collect();
        bad(format!(
            "metric must be one of {}, found {metric_name:?}",
            names.join(", ")
        ))
    })?;
    let by_texts: Vec<&str> = pairs
        .iter()
        .filter(|(key, _)| key == "by")
        .map(|(_, value)| value.as_str())
        .collect();
    let by = match by_texts.as_slice() {
        [] => None,
        [text] => {
            let names: Vec<&str> = text.split(',').collect();
            if names.len() > 1 {
                return Err(bad(format!(
                    "by names {} dimensions; a timeseries is broken down by one",
                    names.len()
                )));
            }
            Some(Dimension::parse(text.trim()).map_err(|error| bad(format!("by: {error}")))?)
        }
        several => {
            return Err(bad(format!(
                "by is given {} times; a timeseries is broken down by one dimension",
                several.len()
            )))
        }
    };
    let top = breakdown::top(params.get("top").map(String::as_str))?;
    let filters = params::filters(pairs)?;
    Ok(Request {
        metric_name,
        metric,
        by,
        top,
        filters,
    })
}

pub async fn timeseries(
    State(state): State<QueryState>,
    headers: HeaderMap,
    Query(pairs): Query<params::Pairs>,
) -> Result<Json<TimeseriesResponse>, QueryError> {
    let params = params::first_values(&pairs);
    let principal = authorize(&state, &headers)?;
    let request = parse_request(&pairs)?;
    let range = params::range(&params, unix_now_ms())?;
    let step_ms = params::step_ms(&params, range)?;
    let steps = Steps {
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        step_ms,
    };
    let answer = TimeseriesResponse {
        metric: request.metric_name.clone(),
        step: step_ms / 1000,
        from: range.from_ms,
        to: range.to_ms,
        by: request.by.as_ref().map(Dimension::name),
        series: Vec::new(),
        source: None,
    };
    if request.by.is_none() && request.filters.is_empty() {
        let tenant = tenant_of(&principal, &params)?;
        let series = from_rollups(&state, tenant, range, steps, request.metric, &params).await?;
        return Ok(Json(TimeseriesResponse { series, ..answer }));
    }
    let series = from_scan(&state, &principal, &params, steps, request).await?;
    Ok(Json(TimeseriesResponse {
        series,
        source: Some("scan"),
        ..answer
    }))
}

/// The points of `slots` at every step.
fn points(metric: Metric, steps: Steps, slots: &StepPartials) -> Vec<Point> {
    (0..steps.count())
        .map(|index| (steps.start_ms(index), metric.value(slots.get(&index))))
        .collect()
}

/// One series per model, from the rollups.
async fn from_rollups(
    state: &QueryState,
    tenant: String,
    range: Range,
    steps: Steps,
    metric: Metric,
    params: &HashMap<String, String>,
) -> Result<Vec<Series>, QueryError> {
    let rows = fetch(state, tenant, range, params).await?;
    let mut per_model: BTreeMap<String, StepPartials> = BTreeMap::new();
    for row in rows {
        let Some(step) = steps.index(row.minute_ms) else {
            continue;
        };
        let slots = per_model.entry(row.model).or_default();
        match slots.get_mut(&step) {
            Some(merged) => merged.merge(&row.partial),
            None => {
                slots.insert(step, row.partial);
            }
        }
    }
    Ok(per_model
        .into_iter()
        .map(|(model, slots)| Series::Model {
            points: points(metric, steps, &slots),
            model,
        })
        .collect())
}

/// One series per model (`filter` only) or per group of `by` with `other`, from a scan
/// of raw events grouped per step.
async fn from_scan(
    state: &QueryState,
    principal: &Principal,
    params: &HashMap<String, String>,
    steps: Steps,
    request: Request,
) -> Result<Vec<Series>, QueryError> {
    let mut filters = request.filters;
    if let Some(model) = params.get("model") {
        filters.0.push(Filter {
            dimension: Dimension::Model,
            negated: false,
            values: vec![Some(model.clone())],
        });
    }
    let crosses_tenants =
        request.by.as_ref().is_some_and(Dimension::needs_admin) || filters.needs_admin();
    may_cross_tenants(principal, crosses_tenants)?;
    // As in the breakdown: an admin grouping or filtering by tenant without `?tenant=`
    // reads every tenant.
    let tenant = if crosses_tenants && !params.contains_key("tenant") {
        None
    } else {
        Some(tenant_of(principal, params)?)
    };
    let points_per_series = steps.count();
    if request.by.is_some() {
        let series = request.top.saturating_add(1);
        if series.saturating_mul(points_per_series) > MAX_SERIES_POINTS {
            return Err(bad(format!(
                "top: {series} series of {points_per_series} points is over {MAX_SERIES_POINTS} points per answer; use a smaller top, a larger step or a shorter range"
            )));
        }
    }
    let range = Range {
        from_ms: steps.from_ms,
        to_ms: steps.to_ms,
    };
    let metric = request.metric;
    let Some(dimension) = request.by else {
        let query = BreakdownQuery {
            step_ms: Some(steps.step_ms),
            ..state.scan(tenant, range, vec![Dimension::Model], filters)
        };
        let ranked = state
            .store
            .breakdown(query)
            .await?
            .rank_series(OrderBy::Requests, usize::MAX);
        let mut series: Vec<(String, StepPartials)> = ranked
            .groups
            .into_iter()
            .map(|(mut key, slots)| (key.pop().flatten().unwrap_or_default(), slots))
            .collect();
        series.sort_by(|left, right| left.0.cmp(&right.0));
        return Ok(series
            .into_iter()
            .map(|(model, slots)| Series::Model {
                points: points(metric, steps, &slots),
                model,
            })
            .collect());
    };
    let name = dimension.name();
    let query = BreakdownQuery {
        step_ms: Some(steps.step_ms),
        ..state.scan(tenant, range, vec![dimension], filters)
    };
    let ranked = state
        .store
        .breakdown(query)
        .await?
        .rank_series(metric.rank_order(), request.top);
    let mut series: Vec<Series> = ranked
        .groups
        .into_iter()
        .map(|(mut key, slots)| Series::Group {
            key: Some(BTreeMap::from([(name.clone(), key.pop().flatten())])),
            other: false,
            points: points(metric, steps, &slots),
        })
        .collect();
    if let Some(slots) = ranked.other {
        series.push(Series::Group {
            key: None,
            other: true,
            points: points(metric, steps, &slots),
        });
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::pairs;

    #[test]
    fn every_refusal_names_the_parameter() {
        let cases = [
            ("", "metric must be"),
            ("metric=vibes", "metric must be"),
            ("metric=requests&by=colour", "by: unknown dimension"),
            ("metric=requests&by=", "by: unknown dimension"),
            ("metric=requests&by=model,region", "by names 2 dimensions"),
            ("metric=requests&by=model&by=region", "by is given 2 times"),
            ("metric=requests&by=model&top=0", "top must be"),
            ("metric=requests&by=model&top=1001", "top must be"),
            ("metric=requests&top=x", "top must be"),
            ("metric=requests&filter=region", "filter:"),
            (
                "metric=requests&filter=colour:red",
                "filter: unknown dimension",
            ),
        ];
        for (query, wanted) in cases {
            let error = parse_request(&pairs(query)).expect_err(query);
            assert!(error.to_string().contains(wanted), "{query}: {error}");
            assert_eq!(
                error.status(),
                axum::http::StatusCode::BAD_REQUEST,
                "{query}"
            );
        }
    }

    #[test]
    fn groups_rank_by_the_metric_or_by_requests_for_ratios_and_percentiles() {
        for (name, order) in [
            ("requests", OrderBy::Requests),
            ("cost_usd", OrderBy::CostUsd),
            ("unique_users", OrderBy::UniqueUsers),
            ("error_rate", OrderBy::Requests),
            ("latency_p99", OrderBy::Requests),
            ("ttft_p50", OrderBy::Requests),
        ] {
            let metric = Metric::parse(name).expect(name);
            assert_eq!(metric.rank_order(), order, "{name}");
        }
        let request = parse_request(&pairs(
            "metric=errors&by=attr.feature&top=5&filter=region:eu",
        ))
        .expect("valid");
        assert_eq!(
            (request.by, request.top, request.filters.0.len()),
            (Some(Dimension::Attribute("feature".to_string())), 5, 1)
        );
        let request = parse_request(&pairs("metric=errors")).expect("valid");
        assert_eq!((request.by, request.top), (None, breakdown::DEFAULT_TOP));
    }
}
