//! `GET /v1/query/breakdown?by=D1[,D2]&from&to[&filter=D:v1|v2 …][&top=N][&order=M][&asc]`:
//! every metric of the summary per value of one or two dimensions, the top N groups,
//! the rest merged into `other`, and the total of everything that passed the filters.
//!
//! Answered from dimension rollups where they cover the query (`"source": "rollup"`:
//! one rolled-up dimension, filters on it only, no minute of the range past the
//! rollups' bound), else from a scan of raw events (`"source": "scan"`), exact for any
//! dimension: either way counts and sums of the groups and `other` add up to the total. The scan is bounded
//! by the query timeout and a number of groups; past either the answer is 503 naming
//! the bound, never a part. `late_events` is known per tenant and minute only (from the
//! rollups): the total reports it for an unfiltered breakdown of one tenant and is
//! `null` otherwise, rather than a number that could be wrong.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ais_model::dimension::{Dimension, Filters};
use ais_model::time::unix_now_ms;
use ais_rollup::breakdown::{GroupKey, OrderBy, ORDER_NAMES};
use ais_rollup::{Quantiles, RollupPartial};
use ais_store::{BreakdownQuery, RollupQuery};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use crate::error::QueryError;
use crate::query::{authorize, may_cross_tenants, tenant_of};
use crate::{params, QueryState};

/// Default and most groups answered before `other`.
pub const DEFAULT_TOP: usize = 20;
pub const MAX_TOP: usize = 1_000;
/// Most `by` dimensions.
pub const MAX_BY: usize = 2;

/// Bounds of the scan path.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// How long one scan may run (`--query-timeout-ms`).
    pub timeout: Duration,
    /// Most distinct groups one scan may hold (its memory bound).
    pub max_groups: usize,
    /// Most events whose payloads one `q=` search examines (its scan bound).
    pub max_search_rows: u64,
}

/// Default `--query-timeout-ms`.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound of groups. A group's partial (DDSketches, HyperLogLog, counts) takes
/// about 2.9 KB with a few events in it (measured: 200,000 groups of 3 events, 580 MB
/// RSS), so this bound keeps one scan's groups near 600 MB.
pub const DEFAULT_MAX_GROUPS: usize = 200_000;

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_QUERY_TIMEOUT,
            max_groups: DEFAULT_MAX_GROUPS,
            max_search_rows: ais_store::DEFAULT_MAX_SEARCH_ROWS,
        }
    }
}

/// The fields of one model in `/v1/query/summary`, for any group.
#[derive(Debug, Serialize)]
pub struct MetricBlock {
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
}

impl MetricBlock {
    pub fn of(partial: &RollupPartial) -> Self {
        Self {
            requests: partial.requests,
            errors: partial.errors,
            error_rate: partial.error_rate(),
            errors_by_type: partial.errors_by_type.clone(),
            latency_ms: partial.latency_quantiles(),
            ttft_ms: partial.ttft_quantiles(),
            input_tokens: partial.input_tokens,
            output_tokens: partial.output_tokens,
            cache_read_input_tokens: partial.cache_read_input_tokens,
            cost_usd: OrderBy::CostUsd.value(partial).unwrap_or(0.0),
            unique_users: partial.unique_users(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Group {
    /// Each `by` dimension as the request wrote it, with the group's value (`null`:
    /// events without the field).
    pub key: BTreeMap<String, Option<String>>,
    #[serde(flatten)]
    pub metrics: MetricBlock,
}

#[derive(Debug, Serialize)]
pub struct Total {
    #[serde(flatten)]
    pub metrics: MetricBlock,
    /// Events merged as corrections after their minute was final; `null` where the
    /// breakdown cannot know them (filters, several tenants).
    pub late_events: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct BreakdownResponse {
    pub from: i64,
    pub to: i64,
    pub by: Vec<String>,
    pub order: &'static str,
    pub groups: Vec<Group>,
    pub other: Option<MetricBlock>,
    pub total: Total,
    pub source: &'static str,
}

impl QueryState {
    /// A scan of raw events within this server's bounds, starting now.
    pub fn scan(
        &self,
        tenant: Option<String>,
        range: params::Range,
        by: Vec<Dimension>,
        filters: Filters,
    ) -> BreakdownQuery {
        BreakdownQuery {
            tenant,
            from_ms: range.from_ms,
            to_ms: range.to_ms,
            by,
            filters,
            step_ms: None,
            max_groups: self.limits.max_groups,
            deadline: Instant::now() + self.limits.timeout,
        }
    }
}

/// What a request asks for, checked.
#[derive(Debug)]
struct Request {
    by: Vec<Dimension>,
    filters: Filters,
    top: usize,
    order: OrderBy,
    ascending: bool,
}

fn bad(message: String) -> QueryError {
    QueryError::BadParameter(message)
}

/// The `top` parameter: default [`DEFAULT_TOP`], 1 to [`MAX_TOP`].
pub fn top(text: Option<&str>) -> Result<usize, QueryError> {
    let Some(text) = text else {
        return Ok(DEFAULT_TOP);
    };
    match text.parse::<usize>() {
        Ok(top) if (1..=MAX_TOP).contains(&top) => Ok(top),
        _ => Err(bad(format!(
            "top must be a whole number from 1 to {MAX_TOP}, found {text:?}"
        ))),
    }
}

fn parse_request(pairs: &[(String, String)]) -> Result<Request, QueryError> {
    let params = params::first_values(pairs);
    let first = |name: &str| params.get(name).map(String::as_str);
    let by_text = first("by").ok_or_else(|| {
        bad(
            "by is required: one or two dimensions, e.g. by=endpoint or by=model,region"
                .to_string(),
        )
    })?;
    let mut by = Vec::new();
    for name in by_text.split(',') {
        let dimension =
            Dimension::parse(name.trim()).map_err(|error| bad(format!("by: {error}")))?;
        if by.contains(&dimension) {
            return Err(bad(format!("by names {dimension} twice")));
        }
        by.push(dimension);
    }
    if by.len() > MAX_BY {
        return Err(bad(format!(
            "by names {} dimensions; at most {MAX_BY}",
            by.len()
        )));
    }
    let filters = params::filters(pairs)?;
    let top = top(first("top"))?;
    let order = match first("order") {
        None => OrderBy::Requests,
        Some(text) => OrderBy::parse(text).ok_or_else(|| {
            let names: Vec<&str> = ORDER_NAMES.iter().map(|(name, _)| *name).collect();
            bad(format!(
                "order {text:?} is not a field of the metric block; use one of {}",
                names.join(", ")
            ))
        })?,
    };
    let ascending = match first("asc") {
        None => false,
        Some("" | "true") => true,
        Some("false") => false,
        Some(other) => return Err(bad(format!("asc must be true or false, found {other:?}"))),
    };
    Ok(Request {
        by,
        filters,
        top,
        order,
        ascending,
    })
}

pub async fn breakdown(
    State(state): State<QueryState>,
    headers: HeaderMap,
    Query(pairs): Query<params::Pairs>,
) -> Result<Json<BreakdownResponse>, QueryError> {
    let principal = authorize(&state, &headers)?;
    let request = parse_request(&pairs)?;
    let params = params::first_values(&pairs);
    let crosses_tenants =
        request.by.iter().any(Dimension::needs_admin) || request.filters.needs_admin();
    may_cross_tenants(&principal, crosses_tenants)?;
    // An admin breaking down or filtering by tenant without `?tenant=` sees them all.
    let tenant = if crosses_tenants && !params.contains_key("tenant") {
        None
    } else {
        Some(tenant_of(&principal, &params)?)
    };
    let range = params::range(&params, unix_now_ms())?;
    let query = state.scan(
        tenant.clone(),
        range,
        request.by.clone(),
        request.filters.clone(),
    );
    let (grouper, source) = match state.store.rolled_up_breakdown(query.clone()).await? {
        Some(grouper) => (grouper, "rollup"),
        None => (state.store.breakdown(query).await?, "scan"),
    };
    let late_events = match (&tenant, request.filters.is_empty()) {
        (Some(tenant), true) => Some(late_events(&state, tenant, range).await?),
        _ => None,
    };
    let names: Vec<String> = request.by.iter().map(Dimension::name).collect();
    let ranked = grouper.rank(request.order, request.ascending, request.top);
    let key_of = |key: GroupKey| -> BTreeMap<String, Option<String>> {
        names.iter().cloned().zip(key).collect()
    };
    Ok(Json(BreakdownResponse {
        from: range.from_ms,
        to: range.to_ms,
        groups: ranked
            .groups
            .into_iter()
            .map(|(key, partial)| Group {
                key: key_of(key),
                metrics: MetricBlock::of(&partial),
            })
            .collect(),
        by: names.clone(),
        order: request.order.name(),
        other: ranked.other.as_ref().map(MetricBlock::of),
        total: Total {
            metrics: MetricBlock::of(&ranked.total),
            late_events,
        },
        source,
    }))
}

/// Late events of one tenant over the range, from its rollups.
async fn late_events(
    state: &QueryState,
    tenant: &str,
    range: params::Range,
) -> Result<u64, QueryError> {
    let rows = state
        .store
        .rollups(RollupQuery {
            tenant: tenant.to_string(),
            from_ms: range.from_ms,
            to_ms: range.to_ms,
            model: None,
        })
        .await?;
    Ok(rows.iter().map(|row| row.partial.late_events).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::pairs;

    #[test]
    fn every_refusal_names_the_parameter() {
        let cases = [
            ("", "by is required"),
            ("by=colour", "by: unknown dimension"),
            ("by=model,region,endpoint", "at most 2"),
            ("by=model,model", "twice"),
            ("by=model&top=0", "top must be"),
            ("by=model&top=1001", "top must be"),
            ("by=model&order=latency_p95", "order \"latency_p95\""),
            ("by=model&filter=region", "filter:"),
            ("by=model&filter=colour:red", "filter: unknown dimension"),
            ("by=model&asc=maybe", "asc must be"),
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
        let many = vec!["filter=model:m"; params::MAX_FILTERS + 1].join("&");
        let error = parse_request(&pairs(&format!("by=model&{many}"))).expect_err("filters");
        assert!(error.to_string().contains("at most 16"), "{error}");
    }

    #[test]
    fn defaults_and_forms_of_asc() {
        let request = parse_request(&pairs("by=endpoint,attr.feature")).expect("valid");
        assert_eq!(request.by.len(), 2);
        assert_eq!(
            (request.top, request.order, request.ascending),
            (DEFAULT_TOP, OrderBy::Requests, false)
        );
        for asc in ["asc", "asc=", "asc=true"] {
            let request = parse_request(&pairs(&format!("by=model&{asc}"))).expect(asc);
            assert!(request.ascending, "{asc}");
        }
        let request = parse_request(&pairs(
            "by=model&order=latency_ms.p95&top=5&filter=region:eu&filter=status:!ok",
        ))
        .expect("valid");
        assert_eq!(
            (request.order, request.top, request.filters.0.len()),
            (OrderBy::LatencyP95, 5, 2)
        );
    }
}
