//! The evaluator's reads and its commit ([`EvaluationStore`]): anomalies fired and
//! resolved, the alert transitions queued and the evaluator's state, in one
//! transaction.

use ais_rollup::dimensions::DimensionValue;
use ais_rollup::RollupPartial;
use async_trait::async_trait;
use rusqlite::{params, params_from_iter, OptionalExtension, Transaction, TransactionBehavior};

use super::outbox::{queue_alerts, record_outbox_size};
use super::{backend, SqliteStore};
use crate::evaluation::{AnomalyRecord, DimensionWindow, EvaluationCommit, EvaluationStore};
use crate::{RollupRow, StoreError};

#[async_trait]
impl EvaluationStore for SqliteStore {
    async fn rollups_all_tenants(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, RollupRow)>, StoreError> {
        self.with_reader(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT tenant, model, minute_ms, partial FROM rollups
                     WHERE minute_ms >= ?1 AND minute_ms < ?2
                     ORDER BY minute_ms, tenant, model",
                )
                .map_err(backend("reading rollups"))?;
            let mut rows = statement
                .query(params![from_ms, to_ms])
                .map_err(backend("reading rollups"))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(backend("reading rollups"))? {
                let tenant: String = row.get(0).map_err(backend("reading rollups"))?;
                let model: String = row.get(1).map_err(backend("reading rollups"))?;
                let minute_ms: i64 = row.get(2).map_err(backend("reading rollups"))?;
                let bytes: Vec<u8> = row.get(3).map_err(backend("reading rollups"))?;
                let partial = RollupPartial::from_bytes(&bytes).map_err(|error| {
                    StoreError::Malformed(format!("rollup of {model} at {minute_ms}: {error}"))
                })?;
                out.push((
                    tenant,
                    RollupRow {
                        model,
                        minute_ms,
                        partial,
                    },
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn dimension_windows(
        &self,
        dimensions: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DimensionWindow>, StoreError> {
        if dimensions.is_empty() {
            return Ok(Vec::new());
        }
        let dimensions = dimensions.to_vec();
        self.with_reader(move |connection| {
            let listed = vec!["?"; dimensions.len()].join(", ");
            // The minute index: one range of minutes, every tenant.
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT tenant, dimension, minute_ms, kind, value, partial
                     FROM dimension_rollups INDEXED BY dimension_rollups_by_minute
                     WHERE minute_ms >= ? AND minute_ms < ? AND dimension IN ({listed})
                     ORDER BY minute_ms, tenant, dimension, kind, value"
                ))
                .map_err(backend("reading dimension rollups"))?;
            let binds = [rusqlite::types::Value::from(from_ms), to_ms.into()]
                .into_iter()
                .chain(dimensions.into_iter().map(rusqlite::types::Value::from));
            let mut rows = statement
                .query(params_from_iter(binds))
                .map_err(backend("reading dimension rollups"))?;
            let failed = backend("reading dimension rollups");
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(&failed)? {
                let tenant: String = row.get(0).map_err(&failed)?;
                let dimension: String = row.get(1).map_err(&failed)?;
                let minute_ms: i64 = row.get(2).map_err(&failed)?;
                let kind: i64 = row.get(3).map_err(&failed)?;
                let value: String = row.get(4).map_err(&failed)?;
                let bytes: Vec<u8> = row.get(5).map_err(&failed)?;
                let group = u8::try_from(kind)
                    .ok()
                    .and_then(|kind| DimensionValue::from_stored(kind, value))
                    .ok_or_else(|| {
                        StoreError::Malformed(format!("dimension rollup of kind {kind}"))
                    })?;
                let partial = RollupPartial::from_bytes(&bytes).map_err(|error| {
                    StoreError::Malformed(format!(
                        "dimension rollup of {tenant}/{dimension} at {minute_ms}: {error}"
                    ))
                })?;
                out.push(DimensionWindow {
                    tenant,
                    dimension,
                    minute_ms,
                    group,
                    partial,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn budget_spend(
        &self,
        query: crate::usage::SpendQuery,
    ) -> Result<crate::usage::SpendAnswer, StoreError> {
        // Maintenance's reader: a read of a month of every user's spend would otherwise
        // hold the queries' reader for its whole length.
        self.with_maintenance_reader(move |connection| super::usage::spend(connection, &query))
            .await
    }

    async fn evaluation_state(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        self.with_writer(|connection| {
            connection
                .query_row(
                    "SELECT next_window_ms, state FROM evaluation WHERE id = 1",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(backend("reading the evaluator state"))
        })
        .await
    }

    async fn commit_evaluation(&self, commit: EvaluationCommit) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("starting an evaluation commit"))?;
            write_anomalies(&transaction, &commit)?;
            let dropped = queue_alerts(&transaction, &commit.outbox, commit.outbox_limit)?;
            transaction
                .execute(
                    "INSERT OR REPLACE INTO evaluation (id, next_window_ms, state) VALUES (1, ?1, ?2)",
                    params![commit.next_window_ms, commit.state],
                )
                .map_err(backend("writing the evaluator state"))?;
            transaction.commit().map_err(backend("committing an evaluation"))?;
            if dropped > 0 {
                metrics::counter!("ais_alert_outbox_dropped_total").increment(dropped);
                tracing::warn!(dropped, "alert outbox full: dropped its oldest transitions");
            }
            record_outbox_size(connection)
        })
        .await
    }
}

/// Stores the commit's fired anomalies (once per identity) and resolves the firing
/// record of each resolution, each in the table of its kind.
fn write_anomalies(
    transaction: &Transaction<'_>,
    commit: &EvaluationCommit,
) -> Result<(), StoreError> {
    let mut insert = transaction
        .prepare_cached(
            "INSERT OR IGNORE INTO anomalies
             (tenant, model, detector, window_start_ms, metric, observed, baseline, score, state, resolved_window_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'firing', NULL)",
        )
        .map_err(backend("preparing the anomaly write"))?;
    let mut insert_located = transaction
        .prepare_cached(
            "INSERT OR IGNORE INTO location_anomalies
             (tenant, model, detector, window_start_ms, metric, observed, baseline, score, state,
              resolved_window_ms, dimension, value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'firing', NULL, ?9, ?10)",
        )
        .map_err(backend("preparing the anomaly write"))?;
    for anomaly in &commit.fired {
        let AnomalyRecord {
            tenant,
            model,
            detector,
            window_start_ms,
            metric,
            observed,
            baseline,
            score,
            ..
        } = anomaly;
        match &anomaly.location {
            None => insert.execute(params![
                tenant,
                model,
                detector,
                window_start_ms,
                metric,
                observed,
                baseline,
                score
            ]),
            Some(location) => insert_located.execute(params![
                tenant,
                model,
                detector,
                window_start_ms,
                metric,
                observed,
                baseline,
                score,
                location.dimension,
                location.value
            ]),
        }
        .map_err(backend("writing an anomaly"))?;
    }
    let mut resolve = transaction
        .prepare_cached(
            "UPDATE anomalies SET state = 'resolved', resolved_window_ms = ?4
             WHERE tenant = ?1 AND model = ?2 AND detector = ?3 AND state = 'firing'",
        )
        .map_err(backend("preparing the anomaly resolve"))?;
    let mut resolve_located = transaction
        .prepare_cached(
            "UPDATE location_anomalies SET state = 'resolved', resolved_window_ms = ?4
             WHERE tenant = ?1 AND model = ?2 AND detector = ?3 AND dimension = ?5
               AND value = ?6 AND state = 'firing'",
        )
        .map_err(backend("preparing the anomaly resolve"))?;
    for resolution in &commit.resolved {
        let (tenant, model, detector, window) = (
            &resolution.tenant,
            &resolution.model,
            &resolution.detector,
            resolution.window_start_ms,
        );
        match &resolution.location {
            None => resolve.execute(params![tenant, model, detector, window]),
            Some(location) => resolve_located.execute(params![
                tenant,
                model,
                detector,
                window,
                location.dimension,
                location.value
            ]),
        }
        .map_err(backend("resolving an anomaly"))?;
    }
    Ok(())
}
