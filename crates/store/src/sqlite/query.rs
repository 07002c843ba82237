//! What the query API reads ([`QueryStore`]): rollups and anomalies through the
//! read-only connection, raw events from the Parquet files in the catalog.

use std::sync::Arc;
use std::time::Instant;

use ais_rollup::RollupPartial;
use async_trait::async_trait;
use rusqlite::params;

use super::{backend, dimensions, SqliteStore};
use crate::evaluation::{AnomalyQuery, AnomalyRecord, AnomalyState, Location};
use ais_rollup::breakdown::Grouper;

use crate::query::complete_from_rollups;
use crate::{
    BreakdownQuery, EventQuery, QueryStore, RollupQuery, RollupRow, StoreError, StoredEvent,
};

#[async_trait]
impl QueryStore for SqliteStore {
    async fn ledger(
        &self,
        query: crate::ledger::LedgerQuery,
    ) -> Result<Vec<crate::ledger::LedgerRow>, StoreError> {
        self.with_reader(move |connection| super::ledger::read(connection, &query))
            .await
    }

    async fn usage(
        &self,
        query: crate::usage::UsageQuery,
        ranking: crate::usage::UsageRanking,
    ) -> Result<crate::usage::UsageTop, StoreError> {
        self.with_reader(move |connection| super::usage::top(connection, &query, ranking))
            .await
    }

    async fn usage_export(
        &self,
        query: crate::usage::UsageQuery,
    ) -> Result<crate::usage::UsageRows, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || super::usage::export(&path, query))
            .await
            .map_err(|error| StoreError::Unavailable(format!("store task failed: {error}")))?
    }

    async fn rollups(&self, query: RollupQuery) -> Result<Vec<RollupRow>, StoreError> {
        self.with_reader(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT model, minute_ms, partial FROM rollups
                     WHERE tenant = ?1 AND minute_ms >= ?2 AND minute_ms < ?3
                       AND (?4 IS NULL OR model = ?4)
                     ORDER BY model, minute_ms",
                )
                .map_err(backend("reading rollups"))?;
            let mut rows = statement
                .query(params![
                    query.tenant,
                    query.from_ms,
                    query.to_ms,
                    query.model
                ])
                .map_err(backend("reading rollups"))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(backend("reading rollups"))? {
                let model: String = row.get(0).map_err(backend("reading rollups"))?;
                let minute_ms: i64 = row.get(1).map_err(backend("reading rollups"))?;
                let bytes: Vec<u8> = row.get(2).map_err(backend("reading rollups"))?;
                let partial = RollupPartial::from_bytes(&bytes).map_err(|error| {
                    StoreError::Malformed(format!("rollup of {model} at {minute_ms}: {error}"))
                })?;
                out.push(RollupRow {
                    model,
                    minute_ms,
                    partial,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn tenants(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>, StoreError> {
        self.with_reader(move |connection| {
            let mut statement = connection
                .prepare(
                    "SELECT DISTINCT tenant FROM rollups WHERE minute_ms >= ?1 AND minute_ms < ?2 ORDER BY tenant",
                )
                .map_err(backend("reading tenants"))?;
            let rows = statement
                .query_map([from_ms, to_ms], |row| row.get(0))
                .map_err(backend("reading tenants"))?;
            rows.collect::<Result<Vec<String>, _>>()
                .map_err(backend("reading tenants"))
        })
        .await
    }

    async fn events(&self, query: EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let raw = Arc::clone(&self.raw);
        let started = Instant::now();
        let found = tokio::task::spawn_blocking(move || {
            let files = raw.catalog().snapshot(query.from_ms, query.to_ms);
            crate::raw::scan::scan(files, &query)
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("event query task failed: {error}")))?;
        metrics::histogram!("ais_store_event_query_seconds")
            .record(started.elapsed().as_secs_f64());
        found
    }

    async fn anomalies(&self, query: AnomalyQuery) -> Result<Vec<AnomalyRecord>, StoreError> {
        // SQLite reads a negative LIMIT as none.
        let limit = query
            .limit
            .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
        self.with_reader(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT tenant, model, detector, window_start_ms, metric, observed, baseline, score, state, resolved_window_ms,
                            '' AS dimension, NULL AS value
                     FROM anomalies
                     WHERE window_start_ms >= ?1 AND window_start_ms < ?2
                       AND (?3 IS NULL OR tenant = ?3) AND (?4 IS NULL OR model = ?4)
                     UNION ALL
                     SELECT tenant, model, detector, window_start_ms, metric, observed, baseline, score, state, resolved_window_ms,
                            dimension, value
                     FROM location_anomalies
                     WHERE window_start_ms >= ?1 AND window_start_ms < ?2
                       AND (?3 IS NULL OR tenant = ?3) AND (?4 IS NULL OR model = ?4)
                     ORDER BY window_start_ms DESC, tenant, model, dimension, value, detector
                     LIMIT ?5",
                )
                .map_err(backend("reading anomalies"))?;
            let rows = statement
                .query_map(params![query.from_ms, query.to_ms, query.tenant, query.model, limit], |row| {
                    let state: String = row.get(8)?;
                    let dimension: String = row.get(10)?;
                    let value: Option<String> = row.get(11)?;
                    Ok(AnomalyRecord {
                        tenant: row.get(0)?,
                        model: row.get(1)?,
                        location: value.map(|value| Location { dimension, value }),
                        detector: row.get(2)?,
                        window_start_ms: row.get(3)?,
                        metric: row.get(4)?,
                        observed: row.get(5)?,
                        baseline: row.get(6)?,
                        score: row.get(7)?,
                        state: if state == "resolved" { AnomalyState::Resolved } else { AnomalyState::Firing },
                        resolved_window_ms: row.get(9)?,
                    })
                })
                .map_err(backend("reading anomalies"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend("reading anomalies"))
        })
        .await
    }

    async fn breakdown(&self, query: BreakdownQuery) -> Result<Grouper, StoreError> {
        let raw = Arc::clone(&self.raw);
        let started = Instant::now();
        let grouped = tokio::task::spawn_blocking(move || {
            let files = raw.catalog().snapshot(query.from_ms, query.to_ms);
            crate::raw::breakdown::scan(files, &query)
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("breakdown task failed: {error}")))?;
        metrics::histogram!("ais_store_breakdown_scan_seconds")
            .record(started.elapsed().as_secs_f64());
        grouped
    }

    async fn rolled_up_breakdown(
        &self,
        query: BreakdownQuery,
    ) -> Result<Option<Grouper>, StoreError> {
        // Whole minutes from the rollups (less partial hours merged into hour rows),
        // the rest at either end from a scan.
        let Some((dimension, from_whole, to_whole)) = query.rollup_range() else {
            return Ok(None);
        };
        let name = dimension.name();
        let tenant = query.tenant.clone();
        let started = Instant::now();
        let Some(covered) = self
            .with_reader(move |connection| {
                dimensions::read(connection, tenant.as_deref(), &name, from_whole, to_whole)
            })
            .await?
        else {
            return Ok(None);
        };
        let Some(grouper) = complete_from_rollups(self, &query, covered).await? else {
            return Ok(None);
        };
        metrics::histogram!("ais_store_breakdown_rollup_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(Some(grouper))
    }
}

impl SqliteStore {
    /// Per partition, whether the ledger accounts for every record below the position
    /// (see [`crate::ledger::Coverage`]).
    pub async fn ledger_coverage(&self) -> Result<Vec<crate::ledger::Coverage>, StoreError> {
        self.with_reader(super::ledger::coverage).await
    }
}
