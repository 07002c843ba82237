//! Reads of the usage ledger (`ais_rollup::usage`): the totals of one scope over a range
//! of UTC days, ranked, and every (day, value) row for a billing export.
//!
//! Both engines keep the ledger per (tenant, scope, day, value), added to in each
//! batch's commit, with a value's presence kept apart from its text (`kind` 0: a value,
//! 1: the events without the field), as dimension rollups keep it. Ranking happens in
//! the engine (`GROUP BY`, `ORDER BY`, `LIMIT`), so an answer holds `top` groups
//! whatever the number of users; the export streams through a bounded channel, a
//! chunk of rows at a time.
//!
//! `other` = total − the groups: the total is read after the groups, and the ledger
//! only grows (retention removes whole days, never the newest), so a commit landing
//! between the two reads goes to `other`, and groups + other = total always.

use ais_model::dimension::Filter;
pub use ais_rollup::usage::{day_of, UsageCounts, UsageKey, UsageScope, DAY_MS};

/// Rows per chunk of an export.
pub const EXPORT_CHUNK_ROWS: usize = 4_096;
/// Chunks an export may hold ahead of its reader: what bounds its memory.
pub const EXPORT_CHUNKS_AHEAD: usize = 4;

/// A read of one scope's usage over days `[from_day_ms, to_day_ms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// `None`: every tenant (admin reads).
    pub tenant: Option<String>,
    /// The scope's name (`user_id`, `attr.customer`).
    pub scope: String,
    pub from_day_ms: i64,
    pub to_day_ms: i64,
    /// Keeps the values it passes (a filter on the scope itself).
    pub filter: Option<Filter>,
}

/// What usage is ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOrder {
    Requests,
    Errors,
    InputTokens,
    OutputTokens,
    CacheReadInputTokens,
    CostUsd,
}

impl UsageOrder {
    /// Every order, by the name a request gives it.
    pub const ALL: [(&'static str, UsageOrder); 6] = [
        ("requests", Self::Requests),
        ("errors", Self::Errors),
        ("input_tokens", Self::InputTokens),
        ("output_tokens", Self::OutputTokens),
        ("cache_read_input_tokens", Self::CacheReadInputTokens),
        ("cost_usd", Self::CostUsd),
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, order)| *order)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, order)| *order == self)
            .map_or("requests", |(name, _)| name)
    }

    /// The column both engines keep it in.
    pub fn column(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Errors => "errors",
            Self::InputTokens => "input_tokens",
            Self::OutputTokens => "output_tokens",
            Self::CacheReadInputTokens => "cache_read_input_tokens",
            Self::CostUsd => "cost_micros",
        }
    }

    pub fn of(self, counts: &UsageCounts) -> u64 {
        match self {
            Self::Requests => counts.requests,
            Self::Errors => counts.errors,
            Self::InputTokens => counts.input_tokens,
            Self::OutputTokens => counts.output_tokens,
            Self::CacheReadInputTokens => counts.cache_read_input_tokens,
            Self::CostUsd => counts.cost_micros,
        }
    }
}

/// How a ranked read orders and cuts its groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRanking {
    pub order: UsageOrder,
    /// Smallest first; ties are broken by value either way (the missing group last).
    pub ascending: bool,
    pub top: usize,
}

impl UsageRanking {
    /// `ORDER BY … LIMIT n` of a read grouped by (`kind`, `value`).
    pub(crate) fn sql(&self) -> String {
        let direction = if self.ascending { "ASC" } else { "DESC" };
        format!(
            "ORDER BY {} {direction}, kind, value LIMIT {}",
            self.order.column(),
            self.top
        )
    }
}

/// A ranked read: the top groups, and the total of everything the query matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTop {
    /// (value, counts); `None` is the events without the scope's field.
    pub groups: Vec<(Option<String>, UsageCounts)>,
    pub total: UsageCounts,
    /// When counting began, in a store that held events before the ledger existed:
    /// days before the midnight after it are incomplete. `None`: counted from the start.
    pub since_ms: Option<i64>,
}

/// One row of an export: one value's usage on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub tenant: String,
    pub day_ms: i64,
    pub value: Option<String>,
    pub counts: UsageCounts,
}

/// An export in progress: chunks of rows, in (day, tenant, value) order, ending with
/// the first error if one occurs.
pub type UsageRows = tokio::sync::mpsc::Receiver<Result<Vec<UsageRow>, crate::StoreError>>;

/// The value columns a ledger entry is kept in: (`kind`, `value`).
pub(crate) fn stored_value(value: Option<&str>) -> (u8, &str) {
    match value {
        Some(value) => (0, value),
        None => (1, ""),
    }
}

/// The value kept as (`kind`, `value`).
pub(crate) fn value_from_stored(kind: u8, value: String) -> Option<String> {
    (kind == 0).then_some(value)
}

/// The query's conditions after `WHERE` (both engines keep the day as `day_ms`), with
/// `?` for each string to bind, in order: the tenant when one is given, the scope, then
/// the filter's values.
pub(crate) fn conditions(query: &UsageQuery) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut binds = Vec::new();
    if let Some(tenant) = &query.tenant {
        sql.push_str("tenant = ? AND ");
        binds.push(tenant.clone());
    }
    sql.push_str(&format!(
        "scope = ? AND day_ms >= {} AND day_ms < {}",
        query.from_day_ms, query.to_day_ms
    ));
    binds.push(query.scope.clone());
    if let Some(filter) = &query.filter {
        let listed: Vec<&str> = filter.values.iter().flatten().map(String::as_str).collect();
        let mut terms = Vec::new();
        if !listed.is_empty() {
            terms.push(format!(
                "(kind = 0 AND value IN ({}))",
                vec!["?"; listed.len()].join(", ")
            ));
            binds.extend(listed.iter().map(|value| value.to_string()));
        }
        if filter.values.iter().any(Option::is_none) {
            terms.push("kind = 1".to_string());
        }
        let any = format!("({})", terms.join(" OR "));
        if filter.negated {
            sql.push_str(&format!(" AND NOT {any}"));
        } else {
            sql.push_str(&format!(" AND {any}"));
        }
    }
    (sql, binds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_parse_by_their_names() {
        for (name, order) in UsageOrder::ALL {
            assert_eq!(UsageOrder::parse(name), Some(order));
            assert_eq!(order.name(), name);
        }
        assert_eq!(UsageOrder::parse("latency_ms.p95"), None);
    }

    #[test]
    fn a_filter_selects_values_and_the_missing_group() {
        let query = UsageQuery {
            tenant: Some("t".to_string()),
            scope: "user_id".to_string(),
            from_day_ms: 0,
            to_day_ms: DAY_MS,
            filter: Some(Filter::parse("user_id:!a|null").expect("a filter")),
        };
        let (sql, binds) = conditions(&query);
        assert_eq!(
            sql,
            "tenant = ? AND scope = ? AND day_ms >= 0 AND day_ms < 86400000 AND NOT ((kind = 0 AND value IN (?)) OR kind = 1)"
        );
        assert_eq!(binds, vec!["t", "user_id", "a"]);
    }
}
