//! `GET /v1/slos` and `GET /v1/budgets`: each objective's burn rates and error budget
//! left, each budget's spend and what is left, as of the last final window evaluated.
//! A key sees its tenant's; an admin key sees every tenant's, or `?tenant=T`'s.

use std::collections::HashMap;
use std::sync::Arc;

use ais_evaluate::budget::BudgetConfig;
use ais_evaluate::slo::SloConfig;
use ais_evaluate::status::{budget_statuses, slo_statuses, BudgetStatus, SloStatus};
use ais_model::auth::KeyKind;
use ais_store::EvaluationStore;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use crate::error::QueryError;
use crate::query::{authorize, tenant_of};
use crate::QueryState;

/// State of the objective routes: the query state (keys), the evaluator's store (its
/// persisted state is what the routes report) and the configured objectives.
#[derive(Clone)]
pub struct ObjectivesState {
    pub query: QueryState,
    pub evaluation: Arc<dyn EvaluationStore>,
    pub slos: Arc<Vec<SloConfig>>,
    pub budgets: Arc<Vec<BudgetConfig>>,
}

#[derive(Debug, Serialize)]
pub struct SlosResponse {
    pub slos: Vec<SloStatus>,
}

#[derive(Debug, Serialize)]
pub struct BudgetsResponse {
    pub budgets: Vec<BudgetStatus>,
}

/// The tenant to report (`None`: all, for an admin without `?tenant=`) and the
/// evaluator's stored state.
async fn prepare(
    state: &ObjectivesState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(Option<String>, Option<Vec<u8>>), QueryError> {
    let principal = authorize(&state.query, headers)?;
    let tenant = if principal.kind == KeyKind::Admin && !params.contains_key("tenant") {
        None
    } else {
        Some(tenant_of(&principal, params)?)
    };
    let stored = state.evaluation.evaluation_state().await?;
    Ok((tenant, stored.map(|(_, bytes)| bytes)))
}

pub async fn slos(
    State(state): State<ObjectivesState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<SlosResponse>, QueryError> {
    let (tenant, stored) = prepare(&state, &headers, &params).await?;
    let slos = slo_statuses(&state.slos, stored.as_deref(), tenant.as_deref())
        .map_err(|error| QueryError::Store(ais_store::StoreError::Malformed(error.to_string())))?;
    Ok(Json(SlosResponse { slos }))
}

pub async fn budgets(
    State(state): State<ObjectivesState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<BudgetsResponse>, QueryError> {
    let (tenant, stored) = prepare(&state, &headers, &params).await?;
    let budgets = budget_statuses(&state.budgets, stored.as_deref(), tenant.as_deref())
        .map_err(|error| QueryError::Store(ais_store::StoreError::Malformed(error.to_string())))?;
    Ok(Json(BudgetsResponse { budgets }))
}
