//! `/v1/query/summary`: rollup partials of one tenant merged per model over a range. A
//! summary with `filter=` parameters is a breakdown by model instead, from a scan of raw
//! events. Also what every read route shares: who the caller is and which tenant it
//! reads.

use std::collections::{BTreeMap, HashMap};

use ais_model::auth::{KeyKind, Principal};
use ais_model::dimension::{Dimension, Filter, Filters};
use ais_model::time::unix_now_ms;
use ais_rollup::breakdown::OrderBy;
use ais_rollup::RollupPartial;
use ais_store::{RollupQuery, RollupRow};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::Serialize;

use crate::breakdown::MetricBlock;
use crate::error::QueryError;
use crate::params::{self, Range};
use crate::QueryState;

#[derive(Debug, Serialize)]
pub struct SummaryResponse {
    pub from: i64,
    pub to: i64,
    pub models: Vec<ModelSummary>,
}

#[derive(Debug, Serialize)]
pub struct ModelSummary {
    pub model: String,
    #[serde(flatten)]
    pub metrics: MetricBlock,
    /// `null` for a filtered summary: late events are counted per tenant, model and
    /// minute only, not per value of other dimensions.
    pub late_events: Option<u64>,
}

impl ModelSummary {
    fn from_partial(model: String, partial: &RollupPartial) -> Self {
        Self {
            model,
            metrics: MetricBlock::of(partial),
            late_events: Some(partial.late_events),
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

/// Grouping or filtering by `tenant` crosses tenants: admin keys only.
pub fn may_cross_tenants(principal: &Principal, crosses: bool) -> Result<(), QueryError> {
    if crosses && principal.kind != KeyKind::Admin {
        return Err(QueryError::TenantDimension);
    }
    Ok(())
}

/// Authenticates the caller and resolves which tenant and range it reads.
pub(crate) fn prepare(
    state: &QueryState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(String, Range), QueryError> {
    let principal = authorize(state, headers)?;
    let tenant = tenant_of(&principal, params)?;
    let range = params::range(params, unix_now_ms())?;
    Ok((tenant, range))
}

/// The rollups of `tenant` over `range`, of the `model` parameter's model if any.
pub(crate) async fn fetch(
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
    Query(pairs): Query<params::Pairs>,
) -> Result<Json<SummaryResponse>, QueryError> {
    let params = params::first_values(&pairs);
    let mut filters = params::filters(&pairs)?;
    if !filters.is_empty() {
        // Filters on other dimensions than the model: from a scan of raw events.
        if let Some(model) = params.get("model") {
            filters.0.push(Filter {
                dimension: Dimension::Model,
                negated: false,
                values: vec![Some(model.clone())],
            });
        }
        return filtered_summary(&state, &headers, &params, filters).await;
    }
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

/// A summary of the events that pass `filters`: a breakdown by model, from a scan.
async fn filtered_summary(
    state: &QueryState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    filters: Filters,
) -> Result<Json<SummaryResponse>, QueryError> {
    let principal = authorize(state, headers)?;
    may_cross_tenants(&principal, filters.needs_admin())?;
    let tenant = tenant_of(&principal, params)?;
    let range = params::range(params, unix_now_ms())?;
    let grouper = state
        .store
        .breakdown(state.scan(Some(tenant), range, vec![Dimension::Model], filters))
        .await?;
    let mut models: Vec<ModelSummary> = grouper
        .rank(OrderBy::Requests, false, usize::MAX)
        .groups
        .into_iter()
        .map(|(mut key, partial)| {
            let model = key.pop().flatten().unwrap_or_default();
            ModelSummary {
                late_events: None,
                ..ModelSummary::from_partial(model, &partial)
            }
        })
        .collect();
    models.sort_by(|left, right| left.model.cmp(&right.model));
    Ok(Json(SummaryResponse {
        from: range.from_ms,
        to: range.to_ms,
        models,
    }))
}
