//! `POST /v1/budgets/check` and `POST /v1/budgets/reserve`: whether a call may spend,
//! and a hold on its estimate that concurrent calls cannot pass together
//! (`ais_evaluate::budget::reserve`), decided by the [`Book`]: from memory in `ais
//! serve`, in Redis shared by every `ais query` and `ais gateway` of the distributed
//! pipeline.
//!
//! Both take `{"model", "user_id"?, "attributes"?, "key"?}` for the caller's tenant
//! (an admin's `"tenant"`); a reservation also takes its estimate, `"cost_usd"` and/or
//! `"tokens"`, and may set `"ttl_secs"` (default 60, at most 3,600). A check may be made
//! with any key; a reservation takes an `all` or `write` key, the kind a proxy sends
//! events with. `user_id`, `key` and `attributes` are the call's values of the budgets'
//! scopes: a budget of a user, a key or an attribute value (or of each of them) applies
//! when the call has that value. `key` is the name (or `k-…` id) the call's event will
//! be counted under; without it, the requesting key's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ais_evaluate::budget::reserve::{BudgetRoom, CallScope, Decision};
use ais_evaluate::budget::{usd_to_micros, Spend};
use ais_model::auth::{AuthError, KeyKind, Keyring, Principal};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::book::{Book, BookError};
use crate::error::QueryError;

/// Default and longest life of a hold.
pub const DEFAULT_TTL_SECS: u64 = 60;
pub const MAX_TTL_SECS: u64 = 3_600;
/// Most holds kept at once (each a few hundred bytes).
pub const DEFAULT_MAX_HOLDS: usize = 1_000_000;
/// Most values (users, keys, attribute values) whose month's spend is kept for the
/// budgets of each value (each about a hundred bytes).
pub const DEFAULT_MAX_VALUES: usize = 1_000_000;

/// State of the budget routes.
#[derive(Clone)]
pub struct ReserveState {
    pub keyring: Arc<Keyring>,
    pub book: Book,
}

/// `/v1/budgets/check` and `/v1/budgets/reserve`.
pub fn reserve_router(state: ReserveState) -> Router {
    // Exported at 0 from the start, so an alert on the first refusal sees it rise.
    for outcome in ["granted", "refused", "no_budget", "full", "unavailable"] {
        metrics::counter!("ais_budget_reservations_total", "outcome" => outcome).increment(0);
    }
    Router::new()
        .route("/v1/budgets/check", post(check))
        .route("/v1/budgets/reserve", post(reserve))
        .with_state(state)
}

/// `/v1/budgets/check` and `/v1/budgets/reserve` on a server that holds no
/// reservations (a query server without Redis): a 501 that says how to turn them on,
/// rather than a 404 that reads like a wrong path.
pub fn reserve_unavailable_router() -> Router {
    async fn unavailable() -> QueryError {
        QueryError::NotConfigured(
            "budget check and reserve need the shared holds: start this server with --redis (and ais stream with the same --redis, which settles them)".to_string(),
        )
    }
    Router::new()
        .route("/v1/budgets/check", post(unavailable))
        .route("/v1/budgets/reserve", post(unavailable))
}

/// What a check or reservation asks about.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallBody {
    pub model: String,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    #[serde(default)]
    pub tokens: Option<u64>,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct RoomBody {
    pub name: String,
    /// `tenant`, `model`, `user_id`, `key` or `attr.<key>`.
    pub scope: String,
    /// The user, key or attribute value the call is limited as (absent for a tenant's
    /// or a model's budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope_value: Option<String>,
    pub remaining_usd: Option<f64>,
    pub remaining_tokens: Option<u64>,
    /// RFC 3339, UTC.
    pub resets_at: String,
}

#[derive(Debug, Serialize)]
pub struct CheckResponse {
    pub allowed: bool,
    pub budgets: Vec<RoomBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ReserveResponse {
    pub allowed: bool,
    /// `null` when refused, or when no budget applies (nothing to hold).
    pub reservation_id: Option<String>,
    pub expires_at: Option<String>,
    pub budgets: Vec<RoomBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn bad(message: String) -> QueryError {
    QueryError::BadParameter(message)
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|instant| {
            instant
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn rooms(budgets: Vec<BudgetRoom>) -> Vec<RoomBody> {
    budgets
        .into_iter()
        .map(|room| RoomBody {
            name: room.name,
            scope: room.scope,
            scope_value: room.scope_value,
            remaining_usd: room.remaining_usd,
            remaining_tokens: room.remaining_tokens,
            resets_at: rfc3339(room.resets_at_ms),
        })
        .collect()
}

fn authorization(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes())
}

/// The tenant a call is for: the key's, or an admin's `tenant`.
fn tenant_for(principal: &Principal, body: &CallBody) -> Result<String, QueryError> {
    match &body.tenant {
        None => Ok(principal.tenant.clone()),
        Some(tenant) if *tenant == principal.tenant => Ok(tenant.clone()),
        Some(tenant) if principal.kind == KeyKind::Admin => Ok(tenant.clone()),
        Some(_) => Err(QueryError::ForeignTenant),
    }
}

fn parse(body: Result<Json<CallBody>, JsonRejection>) -> Result<CallBody, QueryError> {
    let Json(body) = body.map_err(|rejection| bad(rejection.body_text()))?;
    if body.model.is_empty() || body.model.len() > 128 {
        return Err(bad("model: 1 to 128 bytes".to_string()));
    }
    Ok(body)
}

fn attributes(body: &CallBody) -> Vec<(&str, &str)> {
    body.attributes
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect()
}

/// The call a body describes, for `tenant`; its key is the body's, else the caller's.
fn call_scope<'a>(
    tenant: &'a str,
    body: &'a CallBody,
    principal: &'a Principal,
    attributes: &'a [(&'a str, &'a str)],
) -> CallScope<'a> {
    CallScope {
        tenant,
        model: &body.model,
        user_id: body.user_id.as_deref(),
        key: body.key.as_deref().or(principal.key.as_deref()),
        attributes,
    }
}

fn book_error(error: BookError) -> QueryError {
    match error {
        BookError::Full(message) => {
            metrics::counter!("ais_budget_reservations_total", "outcome" => "full").increment(1);
            QueryError::Limit(message)
        }
        BookError::Unavailable(message) => {
            metrics::counter!("ais_budget_reservations_total", "outcome" => "unavailable")
                .increment(1);
            QueryError::Unavailable(message)
        }
    }
}

async fn check(
    State(state): State<ReserveState>,
    headers: HeaderMap,
    body: Result<Json<CallBody>, JsonRejection>,
) -> Result<Json<CheckResponse>, QueryError> {
    let started = Instant::now();
    // Any kind of key may ask.
    let principal = match state.keyring.authorize_read(authorization(&headers)) {
        Err(AuthError::WrongKind { .. }) => {
            state.keyring.authorize_ingest(authorization(&headers))?
        }
        other => other?,
    };
    let body = parse(body)?;
    let tenant = tenant_for(&principal, &body)?;
    let Decision {
        allowed,
        budgets,
        reason,
        ..
    } = state
        .book
        .check(&call_scope(&tenant, &body, &principal, &attributes(&body)))
        .await
        .map_err(book_error)?;
    let answer = CheckResponse {
        allowed,
        budgets: rooms(budgets),
        reason,
    };
    metrics::histogram!("ais_budget_decision_seconds", "route" => "check")
        .record(started.elapsed().as_secs_f64());
    Ok(Json(answer))
}

async fn reserve(
    State(state): State<ReserveState>,
    headers: HeaderMap,
    body: Result<Json<CallBody>, JsonRejection>,
) -> Result<Json<ReserveResponse>, QueryError> {
    let started = Instant::now();
    let principal = state.keyring.authorize_ingest(authorization(&headers))?;
    let body = parse(body)?;
    let tenant = tenant_for(&principal, &body)?;
    let micros = match body.cost_usd {
        None => 0,
        Some(usd) => usd_to_micros(usd).ok_or_else(|| {
            bad(format!(
                "cost_usd: an estimate in dollars, 0 or more, found {usd}"
            ))
        })?,
    };
    if body.cost_usd.is_none() && body.tokens.is_none() {
        return Err(bad(
            "cost_usd or tokens: a reservation needs an estimate of at least one".to_string(),
        ));
    }
    let ttl_secs = body.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if !(1..=MAX_TTL_SECS).contains(&ttl_secs) {
        return Err(bad(format!(
            "ttl_secs: 1 to {MAX_TTL_SECS}, found {ttl_secs}"
        )));
    }
    let estimate = Spend {
        micros,
        tokens: body.tokens.unwrap_or(0),
    };
    let decision = state
        .book
        .reserve(
            &call_scope(&tenant, &body, &principal, &attributes(&body)),
            estimate,
            i64::try_from(ttl_secs * 1_000).unwrap_or(i64::MAX),
        )
        .await
        .map_err(book_error)?;
    let outcome = match (&decision.reservation, decision.allowed) {
        (Some(_), _) => "granted",
        (None, true) => "no_budget",
        (None, false) => "refused",
    };
    metrics::counter!("ais_budget_reservations_total", "outcome" => outcome).increment(1);
    let (reservation_id, expires_at) = match decision.reservation {
        Some((id, expires_ms)) => (Some(id), Some(rfc3339(expires_ms))),
        None => (None, None),
    };
    let answer = ReserveResponse {
        allowed: decision.allowed,
        reservation_id,
        expires_at,
        budgets: rooms(decision.budgets),
        reason: decision.reason,
    };
    metrics::histogram!("ais_budget_decision_seconds", "route" => "reserve")
        .record(started.elapsed().as_secs_f64());
    Ok(Json(answer))
}
