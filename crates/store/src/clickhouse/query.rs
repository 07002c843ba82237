//! What the query API reads ([`QueryStore`]): rollups merged per window, raw events
//! and anomalies, all deduplicated at read time (`FINAL` or argMax).

use std::time::Instant;

use async_trait::async_trait;

use super::filters::SqlFilters;
use super::rows::{
    event_columns_listing, event_columns_reading, AnomalyRow, EventRowIn, LocationAnomalyRow,
};
use super::{datetime_secs, failed, ClickhouseStore, RollupBinds};
use crate::evaluation::{AnomalyQuery, AnomalyRecord, AnomalyState, Location};
use crate::query::complete_from_rollups;
use ais_rollup::breakdown::Grouper;

use crate::{
    BreakdownQuery, EventQuery, QueryStore, RollupQuery, RollupRow, StoreError, StoredEvent,
};

/// Rows streamed between two looks at a breakdown's deadline.
const DEADLINE_CHECK_ROWS: u64 = 4_096;

#[async_trait]
impl QueryStore for ClickhouseStore {
    async fn usage(
        &self,
        query: crate::usage::UsageQuery,
        ranking: crate::usage::UsageRanking,
    ) -> Result<crate::usage::UsageTop, StoreError> {
        self.usage_top(query, ranking).await
    }

    async fn usage_export(
        &self,
        query: crate::usage::UsageQuery,
    ) -> Result<crate::usage::UsageRows, StoreError> {
        ClickhouseStore::usage_export(self, query).await
    }

    async fn ledger(
        &self,
        query: crate::ledger::LedgerQuery,
    ) -> Result<Vec<crate::ledger::LedgerRow>, StoreError> {
        self.read_ledger(query).await
    }

    async fn rollups(&self, query: RollupQuery) -> Result<Vec<RollupRow>, StoreError> {
        let model_filter = if query.model.is_some() {
            "AND model = ?"
        } else {
            ""
        };
        let counted = self.fencing().await?.counted(query.from_ms);
        let sql = format!(
            "SELECT tenant, model, toInt64(toUnixTimestamp(minute)) * 1000 AS minute_ms, partial
             FROM rollups FINAL
             WHERE tenant = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) {model_filter}{counted}
             ORDER BY model, minute"
        );
        let rows = self
            .merged_rollups(
                &sql,
                RollupBinds {
                    tenant: Some(&query.tenant),
                    from_ms: query.from_ms,
                    to_ms: query.to_ms,
                    model: query.model.as_deref(),
                },
            )
            .await?;
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }

    async fn tenants(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>, StoreError> {
        self.client
            .query(
                "SELECT DISTINCT tenant FROM rollups
                 WHERE tenant != '' AND minute >= toDateTime(?) AND minute < toDateTime(?)
                 ORDER BY tenant",
            )
            .bind(datetime_secs(from_ms))
            .bind(datetime_secs(to_ms))
            .fetch_all::<String>()
            .await
            .map_err(failed("could not read tenants"))
    }

    async fn events(&self, query: EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let started = Instant::now();
        let scope = EventScope::of(&query);
        if let Some(search) = &query.payloads.search {
            // A search reads the payloads of every row in scope: counted first (on the
            // scope's own columns), and refused past the bound rather than answered in
            // part. (Servers before 19.x do not apply `max_rows_to_read` to `FINAL`.)
            let sql = format!("SELECT count() FROM events WHERE {}", scope.sql);
            let in_scope: u64 = scope
                .bind(self.client.query(&sql), &query)
                .fetch_one()
                .await
                .map_err(failed("could not count raw events to search"))?;
            if in_scope > search.max_rows {
                return Err(search.too_many_rows());
            }
        }
        let search_sql = if query.payloads.search.is_some() {
            " AND (positionCaseInsensitiveUTF8(input, ?) > 0 OR positionCaseInsensitiveUTF8(output, ?) > 0)"
        } else {
            ""
        };
        let columns = event_columns_listing(query.payloads.include);
        let sql = format!(
            "SELECT {columns} FROM events FINAL WHERE {}{search_sql}
             ORDER BY timestamp_ms DESC, event_id LIMIT ?",
            scope.sql
        );
        let mut statement = scope.bind(self.client.query(&sql), &query);
        if let Some(search) = &query.payloads.search {
            statement = statement.bind(search.text()).bind(search.text());
        }
        let mut cursor = statement
            .bind(query.limit as u64)
            .fetch::<EventRowIn>()
            .map_err(failed("could not read raw events"))?;
        let mut events = Vec::new();
        while let Some(row) = cursor
            .next()
            .await
            .map_err(failed("could not read raw events"))?
        {
            let (tenant, event) = row.into_event()?;
            debug_assert!(
                query.filters.matches(&tenant, &event),
                "the SQL of {:?} let through an event it should not",
                query.filters
            );
            events.push(StoredEvent { tenant, event });
        }
        metrics::histogram!("ais_store_event_query_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(events)
    }

    async fn anomalies(&self, query: AnomalyQuery) -> Result<Vec<AnomalyRecord>, StoreError> {
        let tenant_filter = if query.tenant.is_some() {
            "AND tenant = ?"
        } else {
            ""
        };
        let model_filter = if query.model.is_some() {
            "AND model = ?"
        } else {
            ""
        };
        let limit = query
            .limit
            .map_or_else(String::new, |limit| format!("LIMIT {limit}"));
        let state_of = |state: &str| {
            if state == AnomalyState::Resolved.as_str() {
                AnomalyState::Resolved
            } else {
                AnomalyState::Firing
            }
        };
        // Two tables, each read newest first up to the limit, merged in the order of
        // the embedded engine's read (a model's anomaly has no location, so it sorts
        // before a location's of the same window, tenant and model).
        let sql = format!(
            "SELECT tenant, model, detector, window_start_ms, metric, observed, baseline, score,
                    state, resolved_window_ms, version
             FROM anomalies FINAL
             WHERE window_start_ms >= ? AND window_start_ms < ? {tenant_filter} {model_filter}
             ORDER BY window_start_ms DESC, tenant, model, detector
             {limit}"
        );
        let rows = self
            .anomaly_statement(&sql, &query)
            .fetch_all::<AnomalyRow>()
            .await
            .map_err(failed("could not read anomalies"))?;
        let mut records: Vec<AnomalyRecord> = rows
            .into_iter()
            .map(|row| AnomalyRecord {
                state: state_of(&row.state),
                tenant: row.tenant,
                model: row.model,
                location: None,
                detector: row.detector,
                metric: row.metric,
                window_start_ms: row.window_start_ms,
                observed: row.observed,
                baseline: row.baseline,
                score: row.score,
                resolved_window_ms: row.resolved_window_ms,
            })
            .collect();
        let sql = format!(
            "SELECT tenant, model, dimension, value, detector, window_start_ms, metric, observed,
                    baseline, score, state, resolved_window_ms, version
             FROM location_anomalies FINAL
             WHERE window_start_ms >= ? AND window_start_ms < ? {tenant_filter} {model_filter}
             ORDER BY window_start_ms DESC, tenant, model, dimension, value, detector
             {limit}"
        );
        let rows = self
            .anomaly_statement(&sql, &query)
            .fetch_all::<LocationAnomalyRow>()
            .await
            .map_err(failed("could not read anomalies"))?;
        records.extend(rows.into_iter().map(|row| AnomalyRecord {
            state: state_of(&row.state),
            tenant: row.tenant,
            model: row.model,
            location: Some(Location {
                dimension: row.dimension,
                value: row.value,
            }),
            detector: row.detector,
            metric: row.metric,
            window_start_ms: row.window_start_ms,
            observed: row.observed,
            baseline: row.baseline,
            score: row.score,
            resolved_window_ms: row.resolved_window_ms,
        }));
        records.sort_by(|left, right| {
            right
                .window_start_ms
                .cmp(&left.window_start_ms)
                .then_with(|| left.tenant.cmp(&right.tenant))
                .then_with(|| left.model.cmp(&right.model))
                .then_with(|| left.location.cmp(&right.location))
                .then_with(|| left.detector.cmp(&right.detector))
        });
        if let Some(limit) = query.limit {
            records.truncate(limit);
        }
        Ok(records)
    }

    /// Streams the raw events of the range and groups them here, so any dimension and
    /// filter is exact; the deadline is checked per block of rows.
    async fn breakdown(&self, query: BreakdownQuery) -> Result<Grouper, StoreError> {
        let started = Instant::now();
        let remaining = query.deadline.saturating_duration_since(started);
        if remaining.is_zero() {
            return Err(query.timed_out());
        }
        let tenant_filter = if query.tenant.is_some() {
            " AND tenant = ?"
        } else {
            ""
        };
        // Only the columns the grouper reads travel (the rest are empty values), and
        // only the events that pass the filters.
        let columns = event_columns_reading(&query.grouper().fields_read());
        let dimensions = SqlFilters::of(&query.filters);
        let sql = format!(
            "SELECT {columns} FROM events FINAL
             WHERE timestamp >= toDateTime(?) AND timestamp <= toDateTime(?)
               AND timestamp_ms >= ? AND timestamp_ms < ?{tenant_filter}{}",
            dimensions.sql
        );
        let mut statement = self
            .client
            .query(&sql)
            .bind(datetime_secs(query.from_ms))
            .bind(datetime_secs(query.to_ms))
            .bind(query.from_ms)
            .bind(query.to_ms);
        if let Some(tenant) = &query.tenant {
            statement = statement.bind(tenant);
        }
        // ClickHouse gives up at the deadline too (whole seconds, rounded up), so a
        // query that sends no row for long cannot outlive it.
        let timed_out = |error: clickhouse::error::Error| {
            if error.to_string().contains("Timeout exceeded") {
                query.timed_out()
            } else {
                failed("could not read raw events")(error)
            }
        };
        let mut cursor = dimensions
            .bind(statement)
            .with_setting(
                "max_execution_time",
                remaining.as_secs_f64().ceil().max(1.0).to_string(),
            )
            .fetch::<EventRowIn>()
            .map_err(timed_out)?;
        let mut grouper = query.grouper();
        let mut rows: u64 = 0;
        while let Some(row) = cursor.next().await.map_err(timed_out)? {
            rows += 1;
            if rows.is_multiple_of(DEADLINE_CHECK_ROWS) && Instant::now() >= query.deadline {
                return Err(query.timed_out());
            }
            let (tenant, event) = row.into_event()?;
            grouper
                .add_event(&tenant, &event)
                .map_err(|error| StoreError::Limit(error.to_string()))?;
        }
        metrics::histogram!("ais_store_breakdown_scan_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(grouper)
    }
    async fn rolled_up_breakdown(
        &self,
        query: BreakdownQuery,
    ) -> Result<Option<Grouper>, StoreError> {
        let Some((dimension, from_whole, to_whole)) = query.rollup_range() else {
            return Ok(None);
        };
        let started = Instant::now();
        let Some(covered) = self
            .read_dimension(
                query.tenant.as_deref(),
                &dimension.name(),
                from_whole,
                to_whole,
            )
            .await?
        else {
            return Ok(None);
        };
        let answer = complete_from_rollups(self, &query, covered).await?;
        metrics::histogram!("ais_store_breakdown_rollup_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(answer)
    }
}

impl ClickhouseStore {
    /// A read of one anomaly table with the binds of `query`'s range and filters.
    fn anomaly_statement(&self, sql: &str, query: &AnomalyQuery) -> clickhouse::query::Query {
        let mut statement = self.client.query(sql).bind(query.from_ms).bind(query.to_ms);
        if let Some(tenant) = &query.tenant {
            statement = statement.bind(tenant);
        }
        if let Some(model) = &query.model {
            statement = statement.bind(model);
        }
        statement
    }
}

/// The `WHERE` condition of an event query (tenant, range, filters), without the
/// payload search: what a search counts before it reads, and what it reads.
struct EventScope {
    sql: String,
    dimensions: SqlFilters,
}

impl EventScope {
    fn of(query: &EventQuery) -> Self {
        // `timestamp` (whole seconds) prunes day partitions; `timestamp_ms` is exact.
        let mut sql = "tenant = ? AND timestamp >= toDateTime(?) AND timestamp <= toDateTime(?)
               AND timestamp_ms >= ? AND timestamp_ms < ?"
            .to_string();
        let optional = [
            (query.trace_id.is_some(), " AND trace_id = ?"),
            (query.user_id.is_some(), " AND user_id = ?"),
            (query.model.is_some(), " AND model = ?"),
            (query.status.is_some(), " AND status = ?"),
            (query.min_latency_ms.is_some(), " AND latency_ms >= ?"),
        ];
        for (present, filter) in optional {
            if present {
                sql.push_str(filter);
            }
        }
        // Dimension filters run in ClickHouse: the newest `limit` rows are the answer.
        let dimensions = SqlFilters::of(&query.filters);
        sql.push_str(&dimensions.sql);
        Self { sql, dimensions }
    }

    /// Binds the values of [`EventScope::sql`]'s marks, in order.
    fn bind(
        &self,
        mut statement: clickhouse::query::Query,
        query: &EventQuery,
    ) -> clickhouse::query::Query {
        statement = statement
            .bind(&query.tenant)
            .bind(datetime_secs(query.from_ms))
            .bind(datetime_secs(query.to_ms))
            .bind(query.from_ms)
            .bind(query.to_ms);
        if let Some(trace_id) = &query.trace_id {
            statement = statement.bind(trace_id);
        }
        if let Some(user_id) = &query.user_id {
            statement = statement.bind(user_id);
        }
        if let Some(model) = &query.model {
            statement = statement.bind(model);
        }
        if let Some(status) = query.status {
            statement = statement.bind(status.as_str());
        }
        if let Some(min_latency_ms) = query.min_latency_ms {
            statement = statement.bind(min_latency_ms);
        }
        self.dimensions.bind(statement)
    }
}
