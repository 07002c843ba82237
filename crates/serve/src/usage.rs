//! `GET /v1/usage?by=SCOPE[&from=DAY][&to=DAY][&filter=SCOPE:v1|v2][&top=N][&order=M][&asc][&tenant=]`:
//! the usage ledger (`ais_store::usage`) of the caller's tenant (an admin's `?tenant=`)
//! per value of one scope over UTC days, both ends inclusive, as
//! `YYYY-MM-DD`. The default range is the current month so far.
//!
//! JSON answers rank the values like breakdowns do (`groups`, `other`, `total`, `top`
//! 20 by default, `order` any count or `cost_usd`, descending unless `asc`; ties by
//! value, the missing group last), with counts and money exact: `cost_usd` is the sum
//! of micro-dollars, so groups + other = total to the micro-dollar. `complete` is
//! `false` when the range starts before the first whole day the ledger counted (a store
//! that held events before it existed).
//!
//! With `Accept: text/csv` the answer is every (day, value) row of the range, for
//! billing: columns `day, scope, value, requests, errors, input_tokens, output_tokens,
//! cache_read_input_tokens, cost_usd`, an empty `value` for the missing group, money as
//! a decimal with six places. It streams as the store reads it, so its memory is a few
//! chunks of rows whatever its length; an error midway ends the body early (the client
//! sees a truncated transfer, never a short file that looks whole).

use std::collections::HashMap;
use std::sync::Arc;

use ais_model::dimension::Filter;
use ais_model::time::unix_now_ms;
use ais_rollup::usage::{UsageConfig, UsageScope};
use ais_store::usage::{
    day_of, UsageCounts, UsageOrder, UsageQuery, UsageRanking, UsageRow, DAY_MS,
};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio_stream::StreamExt;

use crate::breakdown::top;
use crate::error::QueryError;
use crate::query::{authorize, tenant_of};
use crate::{params, QueryState};

/// Most days one request may span: a year and a day, for leap years.
pub const MAX_DAYS: i64 = 366;

/// State of `/v1/usage`.
#[derive(Clone)]
pub struct UsageState {
    pub query: QueryState,
    /// The scopes the ledger counts.
    pub config: Arc<UsageConfig>,
}

/// `/v1/usage`.
pub fn usage_router(state: UsageState) -> Router {
    Router::new()
        .route("/v1/usage", get(usage))
        .with_state(state)
}

/// One group's usage, or `other`'s, or the total.
#[derive(Debug, Serialize, PartialEq)]
pub struct UsageBlock {
    pub requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cost_usd: f64,
}

impl UsageBlock {
    fn of(counts: &UsageCounts) -> Self {
        Self {
            requests: counts.requests,
            errors: counts.errors,
            input_tokens: counts.input_tokens,
            output_tokens: counts.output_tokens,
            cache_read_input_tokens: counts.cache_read_input_tokens,
            // Exact for any sum below 2^53 micro-dollars (nine billion dollars).
            cost_usd: counts.cost_micros as f64 / 1_000_000.0,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UsageGroup {
    /// The scope as the request named it, with the group's value (`null`: events
    /// without the field).
    pub key: HashMap<String, Option<String>>,
    #[serde(flatten)]
    pub usage: UsageBlock,
}

#[derive(Debug, Serialize)]
pub struct UsageResponse {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub by: String,
    pub order: &'static str,
    pub groups: Vec<UsageGroup>,
    pub other: Option<UsageBlock>,
    pub total: UsageBlock,
    pub complete: bool,
}

fn bad(message: String) -> QueryError {
    QueryError::BadParameter(message)
}

/// A `YYYY-MM-DD` day as the unix ms of its UTC midnight.
pub fn parse_day(name: &str, text: &str) -> Result<i64, QueryError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format).map_err(|_| {
        bad(format!(
            "{name} must be a UTC day as YYYY-MM-DD, found {text:?}"
        ))
    })?;
    let ms = date.midnight().assume_utc().unix_timestamp() * 1_000;
    if !(params::MIN_INSTANT_MS..params::MAX_INSTANT_MS).contains(&ms) {
        return Err(bad(format!(
            "{name} must be a day from 1970-01-01 to 2199-12-31, found {text:?}"
        )));
    }
    Ok(ms)
}

/// The day of `day_ms` as `YYYY-MM-DD`.
pub fn format_day(day_ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp(day_ms.div_euclid(1_000))
        .ok()
        .and_then(|instant| instant.date().format(&format).ok())
        .unwrap_or_else(|| day_ms.to_string())
}

/// What a request asks for, checked.
#[derive(Debug)]
struct Request {
    scope: UsageScope,
    from_day_ms: i64,
    /// The last day, inclusive.
    to_day_ms: i64,
    filter: Option<Filter>,
    ranking: UsageRanking,
}

fn parse_request(
    params: &HashMap<String, String>,
    filters: Vec<Filter>,
    config: &UsageConfig,
    now_ms: i64,
) -> Result<Request, QueryError> {
    let first = |name: &str| params.get(name).map(String::as_str);
    let by = first("by").ok_or_else(|| {
        bad("by is required: the scope to count usage per, e.g. by=user_id".to_string())
    })?;
    let scope = UsageScope::parse(by).map_err(|error| bad(format!("by: {error}")))?;
    if !config.counts(&scope) {
        return Err(bad(format!(
            "by: usage is not counted per {by}; list its key in [usage] attributes"
        )));
    }
    let today = day_of(now_ms);
    let to_day_ms = match first("to") {
        Some(text) => parse_day("to", text)?,
        None => today,
    };
    let from_day_ms = match first("from") {
        Some(text) => parse_day("from", text)?,
        None => first_of_month(to_day_ms),
    };
    if from_day_ms > to_day_ms {
        return Err(bad("from must be on or before to".to_string()));
    }
    let days = (to_day_ms - from_day_ms) / DAY_MS + 1;
    if days > MAX_DAYS {
        return Err(bad(format!(
            "from and to span {days} days; at most {MAX_DAYS}"
        )));
    }
    let mut filters = filters.into_iter();
    let filter = filters.next();
    if let Some(filter) = &filter {
        if filter.dimension.name() != scope.name() || filters.next().is_some() {
            return Err(bad(format!(
                "filter: usage is counted per scope, so one filter on {by} itself is all it takes"
            )));
        }
    }
    let order = match first("order") {
        None => UsageOrder::Requests,
        Some(text) => UsageOrder::parse(text).ok_or_else(|| {
            let names: Vec<&str> = UsageOrder::ALL.iter().map(|(name, _)| *name).collect();
            bad(format!(
                "order {text:?} is not a usage field; use one of {}",
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
        scope,
        from_day_ms,
        to_day_ms,
        filter,
        ranking: UsageRanking {
            order,
            ascending,
            top: top(first("top"))?,
        },
    })
}

/// Midnight of the first day of the month of `day_ms`.
fn first_of_month(day_ms: i64) -> i64 {
    time::OffsetDateTime::from_unix_timestamp(day_ms.div_euclid(1_000))
        .ok()
        .and_then(|instant| instant.date().replace_day(1).ok())
        .map_or(day_ms, |date| {
            date.midnight().assume_utc().unix_timestamp() * 1_000
        })
}

/// Whether the request wants the CSV export.
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|kind| kind.split(';').next().map(str::trim) == Some("text/csv"))
        })
}

async fn usage(
    State(state): State<UsageState>,
    headers: HeaderMap,
    Query(pairs): Query<params::Pairs>,
) -> Result<Response, QueryError> {
    let principal = authorize(&state.query, &headers)?;
    let params = params::first_values(&pairs);
    let tenant = tenant_of(&principal, &params)?;
    let filters = params::filters(&pairs)?;
    let request = parse_request(&params, filters.0, &state.config, unix_now_ms())?;
    let query = UsageQuery {
        tenant: Some(tenant.clone()),
        scope: request.scope.name(),
        from_day_ms: request.from_day_ms,
        to_day_ms: request.to_day_ms + DAY_MS,
        filter: request.filter.clone(),
    };
    if wants_csv(&headers) {
        let rows = state.query.store.usage_export(query).await?;
        let scope = request.scope.name();
        let body = std::iter::once(Ok::<_, std::io::Error>(bytes::Bytes::from_static(
            CSV_HEADER.as_bytes(),
        )));
        let rows =
            tokio_stream::wrappers::ReceiverStream::new(rows).map(move |chunk| match chunk {
                Ok(rows) => Ok(bytes::Bytes::from(csv_lines(&scope, &rows))),
                Err(error) => {
                    tracing::warn!(%error, "usage export failed midway");
                    Err(std::io::Error::other(error.to_string()))
                }
            });
        let stream = tokio_stream::iter(body).chain(rows);
        let mut response = Body::from_stream(stream).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return Ok(response);
    }
    let answer = state.query.store.usage(query, request.ranking).await?;
    let mut other = answer.total;
    for (_, counts) in &answer.groups {
        other.subtract(counts);
    }
    let by = request.scope.name();
    Ok(Json(UsageResponse {
        tenant,
        from: format_day(request.from_day_ms),
        to: format_day(request.to_day_ms),
        order: request.ranking.order.name(),
        groups: answer
            .groups
            .iter()
            .map(|(value, counts)| UsageGroup {
                key: HashMap::from([(by.clone(), value.clone())]),
                usage: UsageBlock::of(counts),
            })
            .collect(),
        // Every stored group has a request, so nothing outside the top has none.
        other: (other.requests > 0).then(|| UsageBlock::of(&other)),
        total: UsageBlock::of(&answer.total),
        complete: answer
            .since_ms
            .is_none_or(|since_ms| request.from_day_ms >= day_of(since_ms) + DAY_MS),
        by,
    })
    .into_response())
}

/// The export's first line.
pub const CSV_HEADER: &str =
    "day,scope,value,requests,errors,input_tokens,output_tokens,cache_read_input_tokens,cost_usd\r\n";

/// Rows as CSV lines (RFC 4180: a field with a comma, quote or line break is quoted,
/// its quotes doubled).
fn csv_lines(scope: &str, rows: &[UsageRow]) -> String {
    let mut out = String::with_capacity(rows.len() * 96);
    for row in rows {
        let counts = &row.counts;
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}.{:06}\r\n",
            format_day(row.day_ms),
            csv_field(scope),
            csv_field(row.value.as_deref().unwrap_or("")),
            counts.requests,
            counts.errors,
            counts.input_tokens,
            counts.output_tokens,
            counts.cache_read_input_tokens,
            counts.cost_micros / 1_000_000,
            counts.cost_micros % 1_000_000,
        ));
    }
    out
}

fn csv_field(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains([',', '"', '\r', '\n']) {
        std::borrow::Cow::Owned(format!("\"{}\"", text.replace('"', "\"\"")))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str) -> Result<Request, QueryError> {
        let pairs = params::pairs(query);
        let filters = params::filters(&pairs)?;
        let config = UsageConfig {
            scopes: vec![
                UsageScope::Tenant,
                UsageScope::Model,
                UsageScope::UserId,
                UsageScope::Attribute("customer".to_string()),
            ],
        };
        // 2026-12-07T10:00Z
        parse_request(
            &params::first_values(&pairs),
            filters.0,
            &config,
            1_796_637_600_000,
        )
    }

    #[test]
    fn every_refusal_names_the_parameter() {
        let cases = [
            ("", "by is required"),
            ("by=endpoint", "by: unknown usage scope"),
            ("by=attr.plan", "not counted per attr.plan"),
            ("by=user_id&from=2026-13-01", "from must be a UTC day"),
            ("by=user_id&to=yesterday", "to must be a UTC day"),
            ("by=user_id&from=2026-12-08&to=2026-12-07", "on or before"),
            ("by=user_id&from=2025-01-01&to=2026-12-07", "at most 366"),
            ("by=user_id&filter=model:m", "one filter on user_id"),
            ("by=user_id&top=0", "top must be"),
            ("by=user_id&order=latency_ms", "order \"latency_ms\""),
            ("by=user_id&asc=maybe", "asc must be"),
        ];
        for (query, wanted) in cases {
            let error = request(query).expect_err(query);
            assert!(error.to_string().contains(wanted), "{query}: {error}");
            assert_eq!(
                error.status(),
                axum::http::StatusCode::BAD_REQUEST,
                "{query}"
            );
        }
    }

    #[test]
    fn the_default_range_is_this_month_so_far() {
        let asked = request("by=user_id").expect("valid");
        assert_eq!(format_day(asked.from_day_ms), "2026-12-01");
        assert_eq!(format_day(asked.to_day_ms), "2026-12-07");
        let asked = request("by=attr.customer&from=2026-11-30&to=2026-11-30&order=cost_usd&asc")
            .expect("valid");
        assert_eq!(asked.scope, UsageScope::Attribute("customer".to_string()));
        assert_eq!(asked.to_day_ms - asked.from_day_ms, 0);
        assert_eq!(asked.ranking.order, UsageOrder::CostUsd);
        assert!(asked.ranking.ascending);
    }

    #[test]
    fn csv_quotes_what_would_break_a_row_and_keeps_money_exact() {
        let row = UsageRow {
            tenant: "t".to_string(),
            day_ms: 1_796_601_600_000,
            value: Some("a,\"b\"".to_string()),
            counts: UsageCounts {
                requests: 2,
                cost_micros: 12_000_007,
                ..UsageCounts::default()
            },
        };
        let missing = UsageRow {
            value: None,
            ..row.clone()
        };
        assert_eq!(
            csv_lines("user_id", &[row, missing]),
            "2026-12-07,user_id,\"a,\"\"b\"\"\",2,0,0,0,0,12.000007\r\n2026-12-07,user_id,,2,0,0,0,0,12.000007\r\n"
        );
    }
}
