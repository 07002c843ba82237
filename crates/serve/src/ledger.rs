//! `GET /v1/ledger?from&to[&tenant]`: the ledger (`ais_store::ledger`) of the caller's
//! tenant (an admin's `?tenant=`), per hour of event time, open hours included, with
//! whether each hour balances.
//!
//! `balanced` is `true` when accepted = committed + duplicates + dead_lettered; when
//! they differ, `false` once the log holds no record the stream has not read (so no
//! pending record can explain the difference), and `null` while it does or while this
//! server cannot tell (a query server without the log).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ais_model::time::unix_now_ms;
use ais_store::ledger::{hour_of, LedgerCounts, LedgerQuery};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::error::QueryError;
use crate::query::{authorize, tenant_of};
use crate::{params, QueryState};

/// Records acknowledged but not yet read by the stream, when this process knows.
pub type Backlog = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// State of `/v1/ledger`.
#[derive(Clone)]
pub struct LedgerState {
    pub query: QueryState,
    pub backlog: Backlog,
}

/// `/v1/ledger`.
pub fn ledger_router(state: LedgerState) -> Router {
    Router::new()
        .route("/v1/ledger", get(ledger))
        .with_state(state)
}

#[derive(Debug, Serialize)]
pub struct HourBody {
    pub hour_ms: i64,
    pub accepted: u64,
    pub committed: u64,
    pub duplicates: u64,
    pub late: u64,
    pub dead_lettered: u64,
    pub balanced: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct LedgerResponse {
    pub from: i64,
    pub to: i64,
    pub tenant: String,
    pub hours: Vec<HourBody>,
}

/// Whether `counts` balance, as [the module docs](self) say, given the records still
/// unread (`None`: unknown).
pub fn balanced(counts: &LedgerCounts, unread: Option<u64>) -> Option<bool> {
    match (counts.balanced(), unread) {
        (true, _) => Some(true),
        (false, Some(0)) => Some(false),
        (false, _) => None,
    }
}

async fn ledger(
    State(state): State<LedgerState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<LedgerResponse>, QueryError> {
    let principal = authorize(&state.query, &headers)?;
    let tenant = tenant_of(&principal, &params)?;
    let range = params::range(&params, unix_now_ms())?;
    // Asked before the rows are read: a record unread now and read meanwhile makes
    // an hour look pending, never wrongly unbalanced.
    let unread = (state.backlog)();
    let rows = state
        .query
        .store
        .ledger(LedgerQuery {
            tenant: Some(tenant.clone()),
            from_ms: hour_of(range.from_ms),
            to_ms: range.to_ms,
        })
        .await?;
    let mut hours: BTreeMap<i64, LedgerCounts> = BTreeMap::new();
    for row in rows {
        hours.entry(row.hour_ms).or_default().add(&row.counts);
    }
    Ok(Json(LedgerResponse {
        from: range.from_ms,
        to: range.to_ms,
        tenant,
        hours: hours
            .into_iter()
            .map(|(hour_ms, counts)| HourBody {
                hour_ms,
                accepted: counts.accepted,
                committed: counts.committed,
                duplicates: counts.duplicates,
                late: counts.late,
                dead_lettered: counts.dead_lettered,
                balanced: balanced(&counts, unread),
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unbalanced_hour_is_pending_until_the_log_is_read() {
        let even = LedgerCounts {
            accepted: 3,
            committed: 2,
            duplicates: 1,
            ..LedgerCounts::default()
        };
        let short = LedgerCounts {
            accepted: 3,
            committed: 2,
            ..LedgerCounts::default()
        };
        assert_eq!(balanced(&even, Some(5)), Some(true));
        assert_eq!(balanced(&short, Some(5)), None);
        assert_eq!(balanced(&short, None), None);
        assert_eq!(balanced(&short, Some(0)), Some(false));
    }
}
