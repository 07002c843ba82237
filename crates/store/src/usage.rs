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
//! A budget's spend ([`SpendQuery`], read by the evaluator for budgets of a user, key or
//! attribute value) is one grouped read of the scope's current UTC day and month, cut in
//! the engine: only values at or past the budget's lowest threshold (`HAVING`), the most
//! spent against their limits first, at most `limit` of them (`ORDER BY … LIMIT`).
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

/// The limits a budget's spend is read against: micro-dollars and tokens (input +
/// output) per UTC day and month; `None`: no such limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpendLimits {
    pub day_micros: Option<u64>,
    pub day_tokens: Option<u64>,
    pub month_micros: Option<u64>,
    pub month_tokens: Option<u64>,
}

/// A read of one scope's spend in a UTC day and in the month up to it, per value: what
/// the evaluator compares with the limits of a budget of a user, key or attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendQuery {
    pub tenant: String,
    /// The scope's name (`user_id`, `key`, `attr.customer`).
    pub scope: String,
    /// `Some`: that value only, read whatever it spent (a budget of one value); `None`:
    /// every value at or past `floor_percent` of a limit (a budget of each value).
    pub value: Option<String>,
    /// Start of the UTC day read.
    pub day_ms: i64,
    /// First day of the month sums (its month's first day; `day_ms` when no limit is
    /// monthly, so only one day is read).
    pub month_from_ms: i64,
    pub limits: SpendLimits,
    /// The lowest threshold, in percent of a limit: values below it in every limit are
    /// left out (in the engine).
    pub floor_percent: u32,
    /// Most values returned, the highest share of a limit first.
    pub limit: usize,
}

/// One value's spend: in the day read, and in its month up to and including that day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueSpend {
    pub value: String,
    pub day_micros: u64,
    pub day_tokens: u64,
    pub month_micros: u64,
    pub month_tokens: u64,
}

/// What a [`SpendQuery`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendAnswer {
    /// The highest share of a limit first (ties by value).
    pub values: Vec<ValueSpend>,
    /// More values than `limit` were at or past the floor: those of the lowest shares
    /// were left out.
    pub cut: bool,
}

/// How an engine writes the parts of a spend read that differ.
pub(crate) struct SpendDialect {
    /// `sum(if(c, x, 0))` or `SUM(CASE WHEN c THEN x ELSE 0 END)`.
    pub(crate) sum_if: fn(&str, &str) -> String,
    /// The largest of several numbers (at least two).
    pub(crate) greatest: fn(&[String]) -> String,
    /// A ratio in floating point.
    pub(crate) ratio: fn(&str, u64) -> String,
}

/// The smallest spend that reaches `percent` of `limit` (`spent · 100 ≥ limit · percent`
/// in integers, as budgets count), as an engine integer.
fn floor_of(limit: u64, percent: u32) -> i64 {
    let needed = (u128::from(limit) * u128::from(percent)).div_ceil(100);
    i64::try_from(needed).unwrap_or(i64::MAX)
}

impl SpendQuery {
    /// The grouped read, after `SELECT`: `value, day_micros, day_tokens, month_micros,
    /// month_tokens, share`, with `?` for the tenant, the scope and (with one value) the
    /// value, and `extra` added to the `WHERE` (an engine's own conditions); `LIMIT` is
    /// one past `limit`, so the caller can tell a cut.
    pub(crate) fn sql(&self, dialect: &SpendDialect, table: &str, extra: &str) -> String {
        let day = format!("day_ms = {}", self.day_ms);
        let tokens = "input_tokens + output_tokens";
        let columns = [
            (
                "day_micros",
                (dialect.sum_if)(&day, "cost_micros"),
                self.limits.day_micros,
            ),
            (
                "day_tokens",
                (dialect.sum_if)(&day, tokens),
                self.limits.day_tokens,
            ),
            (
                "month_micros",
                "sum(cost_micros)".to_string(),
                self.limits.month_micros,
            ),
            (
                "month_tokens",
                format!("sum({tokens})"),
                self.limits.month_tokens,
            ),
        ];
        let mut shares = vec!["0.0".to_string()];
        let mut reached = Vec::new();
        for (alias, _, limit) in &columns {
            let Some(limit) = limit else { continue };
            shares.push((dialect.ratio)(alias, (*limit).max(1)));
            reached.push(format!(
                "{alias} >= {}",
                floor_of(*limit, self.floor_percent)
            ));
        }
        let selected: Vec<String> = columns
            .iter()
            .map(|(alias, sum, _)| format!("{sum} AS {alias}"))
            .collect();
        let only_value = if self.value.is_some() {
            " AND value = ?"
        } else {
            ""
        };
        let floor = if self.value.is_some() || reached.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", reached.join(" OR "))
        };
        // Grouped inside, compared and ranked outside: an engine may not let one
        // column of a SELECT name another by its alias.
        format!(
            "SELECT value, day_micros, day_tokens, month_micros, month_tokens, {} AS share FROM (
                SELECT value, {} FROM {table}
                WHERE tenant = ? AND scope = ? AND kind = 0 AND day_ms >= {} AND day_ms <= {}{only_value}{extra}
                GROUP BY value
             ){floor}
             ORDER BY share DESC, value LIMIT {}",
            (dialect.greatest)(&shares),
            selected.join(", "),
            self.month_from_ms.min(self.day_ms),
            self.day_ms,
            self.limit.saturating_add(1)
        )
    }

    /// The strings to bind, in order.
    pub(crate) fn binds(&self) -> Vec<String> {
        let mut binds = vec![self.tenant.clone(), self.scope.clone()];
        binds.extend(self.value.clone());
        binds
    }

    /// The answer of rows read with [`Self::sql`]'s `LIMIT`.
    pub(crate) fn answer(&self, mut values: Vec<ValueSpend>) -> SpendAnswer {
        let cut = values.len() > self.limit;
        values.truncate(self.limit);
        SpendAnswer { values, cut }
    }
}

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
