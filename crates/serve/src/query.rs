//! `/v1/query/summary` and `/v1/query/timeseries`: rollup partials of one tenant merged
//! per model over a range (summary) or per model and step (timeseries).

use std::collections::{BTreeMap, HashMap};

use ais_model::auth::{KeyKind, Principal};
use ais_model::time::unix_now_ms;
use ais_rollup::{Quantiles, RollupPartial};
use ais_store::{RollupQuery, RollupRow};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::Serialize;

use crate::error::QueryError;
use crate::params::{self, Range};
use crate::QueryState;

/// Micro-dollars per dollar: the API shows dollars, the store keeps exact integers.
const MICROS_PER_USD: f64 = 1_000_000.0;

#[derive(Debug, Serialize)]
pub struct SummaryResponse {
    pub from: i64,
    pub to: i64,
    pub models: Vec<ModelSummary>,
}

#[derive(Debug, Serialize)]
pub struct ModelSummary {
    pub model: String,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub errors_by_type: BTreeMap<String, u64>,
    pub latency_ms: Quantiles,
    pub ttft_ms: Quantiles,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cost_usd: f64,
    pub unique_users: u64,
    pub late_events: u64,
}

impl ModelSummary {
    fn from_partial(model: String, partial: &RollupPartial) -> Self {
        Self {
            model,
            requests: partial.requests,
            errors: partial.errors,
            error_rate: partial.error_rate(),
            errors_by_type: partial.errors_by_type.clone(),
            latency_ms: partial.latency_quantiles(),
            ttft_ms: partial.ttft_quantiles(),
            input_tokens: partial.input_tokens,
            output_tokens: partial.output_tokens,
            cache_read_input_tokens: partial.cache_read_input_tokens,
            cost_usd: partial.cost_micros as f64 / MICROS_PER_USD,
            unique_users: partial.unique_users(),
            late_events: partial.late_events,
        }
    }
}

/// Which tenant a request reads: its own, or with an admin key any `?tenant=`.
pub fn tenant_of(
    principal: &Principal,
    params: &HashMap<String, String>,
) -> Result<String, QueryError> {
    match params.get("tenant") {
        None => Ok(principal.tenant.clone()),
        Some(requested) if *requested == principal.tenant => Ok(requested.clone()),
        Some(requested) if principal.kind == KeyKind::Admin => Ok(requested.clone()),
        Some(_) => Err(QueryError::ForeignTenant),
    }
}

pub fn authorize(state: &QueryState, headers: &HeaderMap) -> Result<Principal, QueryError> {
    Ok(state.keyring.authorize_read(
        headers
            .get(header::AUTHORIZATION)
            .map(|value| value.as_bytes()),
    )?)
}

/// Authenticates the caller and resolves which tenant and range it reads.
fn prepare(
    state: &QueryState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(String, Range), QueryError> {
    let principal = authorize(state, headers)?;
    let tenant = tenant_of(&principal, params)?;
    let range = params::range(params, unix_now_ms())?;
    Ok((tenant, range))
}

async fn fetch(
    state: &QueryState,
    tenant: String,
    range: Range,
    params: &HashMap<String, String>,
) -> Result<Vec<RollupRow>, QueryError> {
    Ok(state
        .store
        .rollups(RollupQuery {
            tenant,
            from_ms: range.from_ms,
            to_ms: range.to_ms,
            model: params.get("model").cloned(),
        })
        .await?)
}

pub async fn summary(
    State(state): State<QueryState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<SummaryResponse>, QueryError> {
    let (tenant, range) = prepare(&state, &headers, &params)?;
    let rows = fetch(&state, tenant, range, &params).await?;
    let mut per_model: BTreeMap<String, RollupPartial> = BTreeMap::new();
    for row in rows {
        match per_model.get_mut(&row.model) {
            Some(merged) => merged.merge(&row.partial),
            None => {
                per_model.insert(row.model, row.partial);
            }
        }
    }
    let models = per_model
        .into_iter()
        .map(|(model, partial)| ModelSummary::from_partial(model, &partial))
        .collect();
    Ok(Json(SummaryResponse {
        from: range.from_ms,
        to: range.to_ms,
        models,
    }))
}

/// The metrics a timeseries can plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Requests,
    Errors,
    ErrorRate,
    LatencyP50,
    LatencyP95,
    LatencyP99,
    TtftP50,
    TtftP95,
    TtftP99,
    InputTokens,
    OutputTokens,
    CostUsd,
    UniqueUsers,
}

pub const METRIC_NAMES: &[(&str, Metric)] = &[
    ("requests", Metric::Requests),
    ("errors", Metric::Errors),
    ("error_rate", Metric::ErrorRate),
    ("latency_p50", Metric::LatencyP50),
    ("latency_p95", Metric::LatencyP95),
    ("latency_p99", Metric::LatencyP99),
    ("ttft_p50", Metric::TtftP50),
    ("ttft_p95", Metric::TtftP95),
    ("ttft_p99", Metric::TtftP99),
    ("input_tokens", Metric::InputTokens),
    ("output_tokens", Metric::OutputTokens),
    ("cost_usd", Metric::CostUsd),
    ("unique_users", Metric::UniqueUsers),
];

impl Metric {
    pub fn parse(text: &str) -> Option<Self> {
        METRIC_NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, metric)| *metric)
    }

    /// The value of a bucket's merged partial; `None` for a bucket without requests
    /// where the metric is a ratio or a quantile (counts and sums are then 0).
    pub fn value(self, partial: Option<&RollupPartial>) -> Option<f64> {
        let Some(partial) = partial else {
            return match self {
                Self::Requests
                | Self::Errors
                | Self::InputTokens
                | Self::OutputTokens
                | Self::CostUsd
                | Self::UniqueUsers => Some(0.0),
                _ => None,
            };
        };
        match self {
            Self::Requests => Some(partial.requests as f64),
            Self::Errors => Some(partial.errors as f64),
            Self::ErrorRate => partial.error_rate(),
            Self::LatencyP50 => partial.latency_quantiles().p50,
            Self::LatencyP95 => partial.latency_quantiles().p95,
            Self::LatencyP99 => partial.latency_quantiles().p99,
            Self::TtftP50 => partial.ttft_quantiles().p50,
            Self::TtftP95 => partial.ttft_quantiles().p95,
            Self::TtftP99 => partial.ttft_quantiles().p99,
            Self::InputTokens => Some(partial.input_tokens as f64),
            Self::OutputTokens => Some(partial.output_tokens as f64),
            Self::CostUsd => Some(partial.cost_micros as f64 / MICROS_PER_USD),
            Self::UniqueUsers => Some(partial.unique_users() as f64),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TimeseriesResponse {
    pub metric: String,
    pub step: i64,
    pub from: i64,
    pub to: i64,
    pub series: Vec<Series>,
}

#[derive(Debug, Serialize)]
pub struct Series {
    pub model: String,
    pub points: Vec<(i64, Option<f64>)>,
}

pub async fn timeseries(
    State(state): State<QueryState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<TimeseriesResponse>, QueryError> {
    let (tenant, range) = prepare(&state, &headers, &params)?;
    let metric_name = params.get("metric").cloned().unwrap_or_default();
    let metric = Metric::parse(&metric_name).ok_or_else(|| {
        let names: Vec<&str> = METRIC_NAMES.iter().map(|(name, _)| *name).collect();
        QueryError::BadParameter(format!(
            "metric must be one of {}, found {metric_name:?}",
            names.join(", ")
        ))
    })?;
    let step_ms = params::step_ms(&params, range)?;
    let rows = fetch(&state, tenant, range, &params).await?;

    let buckets =
        usize::try_from((range.to_ms - range.from_ms + step_ms - 1) / step_ms).unwrap_or(0);
    let mut per_model: BTreeMap<String, Vec<Option<RollupPartial>>> = BTreeMap::new();
    for row in rows {
        let bucket =
            usize::try_from((row.minute_ms - range.from_ms) / step_ms).unwrap_or(usize::MAX);
        if bucket >= buckets {
            continue;
        }
        let slots = per_model
            .entry(row.model)
            .or_insert_with(|| vec![None; buckets]);
        match &mut slots[bucket] {
            Some(merged) => merged.merge(&row.partial),
            empty @ None => *empty = Some(row.partial),
        }
    }
    let series = per_model
        .into_iter()
        .map(|(model, slots)| Series {
            model,
            points: slots
                .iter()
                .enumerate()
                .map(|(bucket, partial)| {
                    (
                        range.from_ms + bucket as i64 * step_ms,
                        metric.value(partial.as_ref()),
                    )
                })
                .collect(),
        })
        .collect();
    Ok(Json(TimeseriesResponse {
        metric: metric_name,
        step: step_ms / 1000,
        from: range.from_ms,
        to: range.to_ms,
        series,
    }))
}
