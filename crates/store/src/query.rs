//! The query API's side of the store: merged rollups, raw events and the tenants with
//! data ([`QueryStore`]).

use std::time::Instant;

use ais_model::dimension::{Dimension, Filters};
use ais_model::time::MINUTE_MS;
use ais_model::{Event, Status};
use ais_rollup::breakdown::{Grouper, Steps};
use ais_rollup::dimensions::DimensionValue;
use ais_rollup::RollupPartial;
use async_trait::async_trait;

use crate::evaluation::{AnomalyQuery, AnomalyRecord};
use crate::StoreError;

/// Rollups of one tenant over `[from_ms, to_ms)`.
#[derive(Debug, Clone)]
pub struct RollupQuery {
    pub tenant: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub model: Option<String>,
}

/// One window's merged partial.
#[derive(Debug, Clone)]
pub struct RollupRow {
    pub model: String,
    pub minute_ms: i64,
    pub partial: RollupPartial,
}

/// Raw events of one tenant, newest first (`GET /v1/events`).
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    pub tenant: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub trace_id: Option<String>,
    pub user_id: Option<String>,
    pub model: Option<String>,
    pub status: Option<Status>,
    pub min_latency_ms: Option<f64>,
    /// `filter=` parameters (any dimension), ANDed with the fields above.
    pub filters: Filters,
    /// Most events returned.
    pub limit: usize,
    /// Whether the payloads are returned or searched.
    pub payloads: PayloadRead,
}

/// What an event query does with the payloads (`input`, `output`). The default reads
/// none: their columns are then never read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PayloadRead {
    /// Each event comes with its `input` and `output` as stored.
    pub include: bool,
    /// Only events whose input or output holds this text (`q=`).
    pub search: Option<PayloadSearch>,
}

/// Most events whose payloads one search examines by default: a search reads every
/// payload of the range until it has its answer, so this bounds its time and reads
/// (at the default 32 KiB cap, 200,000 events are at most about 12 GiB of text,
/// usually far less).
pub const DEFAULT_MAX_SEARCH_ROWS: u64 = 200_000;

/// A case-insensitive substring search over `input` and `output`.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadSearch {
    /// The text searched for, lowercased.
    lowercase: String,
    /// Most events (of the tenant, in the range, passing the other filters) whose
    /// payloads the search examines; past it the query answers [`StoreError::Limit`]
    /// rather than a partial answer.
    pub max_rows: u64,
}

impl PayloadSearch {
    pub fn new(text: &str, max_rows: u64) -> Self {
        Self {
            lowercase: text.to_lowercase(),
            max_rows,
        }
    }

    /// The text searched for, lowercased.
    pub fn text(&self) -> &str {
        &self.lowercase
    }

    /// Whether `input` or `output` holds the text, ignoring case.
    pub fn matches(&self, input: Option<&str>, output: Option<&str>) -> bool {
        [input, output]
            .into_iter()
            .flatten()
            .any(|payload| contains_ignoring_case(payload, &self.lowercase))
    }

    /// The error of a search past [`PayloadSearch::max_rows`].
    pub fn too_many_rows(&self) -> StoreError {
        StoreError::Limit(format!(
            "the search must read the payloads of more than {} events (the payload search scan limit); narrow the range (from, to) or add filters (model, user_id, trace_id, status)",
            self.max_rows
        ))
    }
}

/// Case-insensitive substring test of `haystack` against an already lowercased
/// `needle`; ASCII text is compared in place, other text lowercased first.
fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if haystack.is_ascii() && needle.is_ascii() {
        let needle = needle.as_bytes();
        return haystack
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle));
    }
    haystack.to_lowercase().contains(needle)
}

/// One stored raw event. The event id reads back as a string: the client's id, or the
/// UUIDv7 generated at ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub tenant: String,
    pub event: Event<'static>,
}

/// Raw events grouped by dimensions over `[from_ms, to_ms)`: the scan path of
/// `GET /v1/query/breakdown`, of filtered summaries and of filtered or grouped
/// timeseries, exact for any dimension. Engines only feed the events in scope to
/// [`BreakdownQuery::grouper`], so every way of grouping is one code path for all.
#[derive(Debug, Clone)]
pub struct BreakdownQuery {
    /// `None`: every tenant (admin views).
    pub tenant: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Up to two dimensions (none: one group of everything that passes the filters).
    pub by: Vec<Dimension>,
    pub filters: Filters,
    /// `Some`: groups per step of this many ms from `from_ms` as well (a timeseries);
    /// each (step, group) pair counts toward `max_groups`.
    pub step_ms: Option<i64>,
    /// Most distinct groups held; past it the query answers [`StoreError::Limit`].
    pub max_groups: usize,
    /// The scan gives up past this instant, with [`StoreError::Limit`].
    pub deadline: Instant,
}

impl BreakdownQuery {
    /// An empty grouper for this query's dimensions, filters, steps and bound.
    pub fn grouper(&self) -> Grouper {
        let grouper = Grouper::new(self.by.clone(), self.filters.clone(), self.max_groups);
        match self.step_ms {
            Some(step_ms) => grouper.with_steps(Steps {
                from_ms: self.from_ms,
                to_ms: self.to_ms,
                step_ms,
            }),
            None => grouper,
        }
    }

    /// Whether a raw event of `tenant` at `timestamp_ms` is in the query's scope.
    pub fn in_scope(&self, tenant: &str, timestamp_ms: i64) -> bool {
        timestamp_ms >= self.from_ms
            && timestamp_ms < self.to_ms
            && self.tenant.as_deref().is_none_or(|wanted| wanted == tenant)
    }

    /// The error of a scan that ran past its deadline.
    pub fn timed_out(&self) -> StoreError {
        StoreError::Limit(
            "the scan of raw events passed the query timeout; narrow it with filters or a shorter range".to_string(),
        )
    }
}

/// What the query API and the dashboard read.
#[async_trait]
pub trait QueryStore: Send + Sync + 'static {
    /// Merged rollups per (model, minute) of one tenant, ordered by model then minute.
    async fn rollups(&self, query: RollupQuery) -> Result<Vec<RollupRow>, StoreError>;

    /// Tenants with rollups in the range (for admin views).
    async fn tenants(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>, StoreError>;

    /// The ledger's rows (`crate::ledger`) of the hours `query` covers, by tenant, hour
    /// and log partition.
    async fn ledger(
        &self,
        query: crate::ledger::LedgerQuery,
    ) -> Result<Vec<crate::ledger::LedgerRow>, StoreError>;

    /// The usage of one scope over a range of days (`crate::usage`), ranked: the top
    /// groups and the total, from one read.
    async fn usage(
        &self,
        query: crate::usage::UsageQuery,
        ranking: crate::usage::UsageRanking,
    ) -> Result<crate::usage::UsageTop, StoreError>;

    /// Every (tenant, day, value) row of one scope's usage over a range of days, streamed
    /// in chunks (a billing export).
    async fn usage_export(
        &self,
        query: crate::usage::UsageQuery,
    ) -> Result<crate::usage::UsageRows, StoreError>;

    /// Raw events matching `query`, newest first, at most `query.limit`.
    async fn events(&self, query: EventQuery) -> Result<Vec<StoredEvent>, StoreError>;

    /// Stored anomalies whose window is in range, newest first.
    async fn anomalies(&self, query: AnomalyQuery) -> Result<Vec<AnomalyRecord>, StoreError>;

    /// Raw events grouped as `query` says (unranked): every group exact, or an error.
    async fn breakdown(&self, query: BreakdownQuery) -> Result<Grouper, StoreError>;

    /// The same grouping answered from dimension rollups, when they cover `query`
    /// exactly: one dimension that is rolled up, filters on that dimension only, no
    /// steps, and no minute of the range past the rollups' bound (the partial minutes
    /// at either end are scanned). `None`: [`QueryStore::breakdown`] answers instead.
    async fn rolled_up_breakdown(
        &self,
        query: BreakdownQuery,
    ) -> Result<Option<Grouper>, StoreError> {
        let _ = query;
        Ok(None)
    }
}

impl BreakdownQuery {
    /// The one dimension a rollup of it can answer this query by: one `by` dimension,
    /// not the tenant, every filter on it, no steps.
    pub fn rolled_up_dimension(&self) -> Option<&Dimension> {
        let [dimension] = self.by.as_slice() else {
            return None;
        };
        let only_its_filters = self
            .filters
            .0
            .iter()
            .all(|filter| filter.dimension == *dimension);
        (self.step_ms.is_none() && *dimension != Dimension::Tenant && only_its_filters)
            .then_some(dimension)
    }

    /// The dimension and the whole minutes `[from, to)` dimension rollups could answer
    /// this query from ([`BreakdownQuery::rolled_up_dimension`],
    /// [`BreakdownQuery::whole_minutes`]).
    pub fn rollup_range(&self) -> Option<(&Dimension, i64, i64)> {
        let dimension = self.rolled_up_dimension()?;
        let (from, to) = self.whole_minutes()?;
        Some((dimension, from, to))
    }

    /// The whole minutes of the range, `[first minute start at or after from, minute
    /// start at or before to)`: what dimension rollups can answer; `None` when the
    /// range holds no whole minute.
    pub fn whole_minutes(&self) -> Option<(i64, i64)> {
        let from = self.from_ms.div_euclid(MINUTE_MS) * MINUTE_MS
            + if self.from_ms.rem_euclid(MINUTE_MS) == 0 {
                0
            } else {
                MINUTE_MS
            };
        let to = self.to_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        (from < to).then_some((from, to))
    }
}

/// What dimension rollups answered of a breakdown: each group's merged partial over
/// `[from_ms, to_ms)`, a part of the query's range; the rest is scanned.
pub struct Covered {
    pub groups: Vec<(DimensionValue, RollupPartial)>,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The breakdown `query` asks for, from the part of its range that rollups `covered`
/// and a scan of raw events ([`QueryStore::breakdown`]) at either end. `None` when a
/// group is an overflow (the engine should have said so before).
pub async fn complete_from_rollups<S: QueryStore + ?Sized>(
    store: &S,
    query: &BreakdownQuery,
    covered: Covered,
) -> Result<Option<Grouper>, StoreError> {
    let too_many =
        |error: ais_rollup::breakdown::TooManyGroups| StoreError::Limit(error.to_string());
    let mut grouper = query.grouper();
    for (group, partial) in covered.groups {
        let value = match group {
            DimensionValue::Value(value) => Some(value),
            DimensionValue::Missing => None,
            DimensionValue::Overflow => return Ok(None),
        };
        let kept = query
            .filters
            .0
            .iter()
            .all(|filter| filter.matches_value(value.as_deref()));
        if kept {
            grouper
                .add_partial(vec![value], &partial)
                .map_err(too_many)?;
        }
    }
    for (from_ms, to_ms) in [
        (query.from_ms, covered.from_ms),
        (covered.to_ms, query.to_ms),
    ] {
        if from_ms < to_ms {
            let edge = store
                .breakdown(BreakdownQuery {
                    from_ms,
                    to_ms,
                    ..query.clone()
                })
                .await?;
            grouper.merge(edge).map_err(too_many)?;
        }
    }
    Ok(Some(grouper))
}

#[cfg(test)]
mod payload_search_tests {
    use super::*;

    #[test]
    fn a_search_ignores_case_in_either_payload() {
        let search = PayloadSearch::new("ReFund", 1);
        assert_eq!(search.text(), "refund");
        assert!(search.matches(Some("I want a REFUND now"), None));
        assert!(search.matches(None, Some("refunded")));
        assert!(search.matches(Some("Ünïcode"), Some("the Refund, über")));
        assert!(!search.matches(Some("refun d"), Some("")));
        assert!(!search.matches(None, None));
        let accented = PayloadSearch::new("ÜBER", 1);
        assert!(accented.matches(Some("Dinge über alles"), None));
        assert!(!accented.matches(Some("uber"), None));
        assert!(search
            .too_many_rows()
            .to_string()
            .contains("more than 1 events"));
    }
}
