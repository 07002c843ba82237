//! The evaluator's reads and its commit ([`EvaluationStore`]): anomalies and queued
//! alerts first, the evaluator's state last, so a crash in between replays a pass
//! whose rows are keyed to land once.

use std::collections::BTreeMap;

use ais_rollup::dimensions::DimensionValue;
use ais_rollup::RollupPartial;
use async_trait::async_trait;

use super::rows::{AnomalyRow, DimensionWindowRow, EvaluationRow, LocationAnomalyRow};
use super::{datetime_secs, failed, now_ms, ClickhouseStore, RollupBinds};
use crate::evaluation::{
    AnomalyRecord, AnomalyState, DimensionWindow, EvaluationCommit, EvaluationStore, Resolution,
};
use crate::{RollupRow, StoreError};

#[async_trait]
impl EvaluationStore for ClickhouseStore {
    async fn rollups_all_tenants(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, RollupRow)>, StoreError> {
        let counted = self.fencing().await?.counted(from_ms);
        self.merged_rollups(
            &format!(
                "SELECT tenant, model, toInt64(toUnixTimestamp(minute)) * 1000 AS minute_ms, partial
                 FROM rollups FINAL
                 WHERE tenant != '' AND minute >= toDateTime(?) AND minute < toDateTime(?){counted}
                 ORDER BY minute, tenant, model"
            ),
            RollupBinds {
                tenant: None,
                from_ms,
                to_ms,
                model: None,
            },
        )
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
        // Rows of batches whose marker is missing or void count for nothing, as in the
        // model rollups the evaluator reads beside them.
        let counted = self.fencing().await?.counted(from_ms);
        let listed = vec!["?"; dimensions.len()].join(", ");
        let sql = format!(
            "SELECT tenant, dimension, toInt64(toUnixTimestamp(minute)) * 1000 AS minute_ms,
                    kind, value, partial
             FROM dimension_rollups FINAL
             WHERE minute >= toDateTime(?) AND minute < toDateTime(?)
               AND dimension IN ({listed}){counted}"
        );
        let mut query = self
            .client
            .query(&sql)
            .bind(datetime_secs(from_ms))
            .bind(datetime_secs(to_ms));
        for dimension in dimensions {
            query = query.bind(dimension.as_str());
        }
        let unreadable = failed("could not read dimension rollups");
        let mut cursor = query.fetch::<DimensionWindowRow>().map_err(&unreadable)?;
        // One row per batch that wrote the group: merged here.
        let mut merged: BTreeMap<(i64, String, String, DimensionValue), RollupPartial> =
            BTreeMap::new();
        while let Some(row) = cursor.next().await.map_err(&unreadable)? {
            let group = DimensionValue::from_stored(row.kind, row.value).ok_or_else(|| {
                StoreError::Malformed(format!("dimension rollup of kind {}", row.kind))
            })?;
            let partial = RollupPartial::from_bytes(&row.partial).map_err(|error| {
                StoreError::Malformed(format!(
                    "dimension rollup of {}/{} at {}: {error}",
                    row.tenant, row.dimension, row.minute_ms
                ))
            })?;
            merged
                .entry((row.minute_ms, row.tenant, row.dimension, group))
                .or_default()
                .merge(&partial);
        }
        Ok(merged
            .into_iter()
            .map(
                |((minute_ms, tenant, dimension, group), partial)| DimensionWindow {
                    tenant,
                    dimension,
                    minute_ms,
                    group,
                    partial,
                },
            )
            .collect())
    }

    async fn budget_spend(
        &self,
        query: crate::usage::SpendQuery,
    ) -> Result<crate::usage::SpendAnswer, StoreError> {
        self.budget_spend_of(query).await
    }

    async fn evaluation_state(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        let row = self
            .client
            .query(
                "SELECT id, next_window_ms, state, version FROM evaluation
                 WHERE id = 1 ORDER BY version DESC LIMIT 1",
            )
            .fetch_optional::<EvaluationRow>()
            .await
            .map_err(failed("could not read the evaluator state"))?;
        Ok(row.map(|row| (row.next_window_ms, row.state)))
    }

    async fn commit_evaluation(&self, commit: EvaluationCommit) -> Result<(), StoreError> {
        // Alerts first, the evaluator's position last: a crash in between re-evaluates
        // the same windows, and an alert stored twice is one row (its identity is the
        // key; a resolution is a higher version than a firing).
        let (located, of_models): (Vec<&AnomalyRecord>, Vec<&AnomalyRecord>) = commit
            .fired
            .iter()
            .partition(|anomaly| anomaly.location.is_some());
        let located: Vec<LocationAnomalyRow> = located
            .into_iter()
            .filter_map(|anomaly| {
                let location = anomaly.location.as_ref()?;
                Some(LocationAnomalyRow {
                    tenant: anomaly.tenant.clone(),
                    model: anomaly.model.clone(),
                    dimension: location.dimension.clone(),
                    value: location.value.clone(),
                    detector: anomaly.detector.clone(),
                    window_start_ms: anomaly.window_start_ms,
                    metric: anomaly.metric.clone(),
                    observed: anomaly.observed,
                    baseline: anomaly.baseline,
                    score: anomaly.score,
                    state: AnomalyState::Firing.as_str().to_string(),
                    resolved_window_ms: None,
                    version: 1,
                })
            })
            .collect();
        self.insert_rows("location_anomalies", &located, "refused anomalies")
            .await?;
        let fired: Vec<AnomalyRow> = of_models
            .into_iter()
            .map(|anomaly| AnomalyRow {
                tenant: anomaly.tenant.clone(),
                model: anomaly.model.clone(),
                detector: anomaly.detector.clone(),
                window_start_ms: anomaly.window_start_ms,
                metric: anomaly.metric.clone(),
                observed: anomaly.observed,
                baseline: anomaly.baseline,
                score: anomaly.score,
                state: AnomalyState::Firing.as_str().to_string(),
                resolved_window_ms: None,
                version: 1,
            })
            .collect();
        self.insert_rows("anomalies", &fired, "refused anomalies")
            .await?;
        let mut resolved_rows = Vec::new();
        let mut resolved_located = Vec::new();
        for resolution in &commit.resolved {
            if resolution.location.is_some() {
                resolved_located.extend(self.resolved_location_rows(resolution).await?);
                continue;
            }
            let firing = self
                .client
                .query(
                    "SELECT tenant, model, detector, window_start_ms, metric, observed, baseline,
                            score, state, resolved_window_ms, version
                     FROM anomalies FINAL
                     WHERE tenant = ? AND model = ? AND detector = ? AND state = 'firing'",
                )
                .bind(&resolution.tenant)
                .bind(&resolution.model)
                .bind(&resolution.detector)
                .fetch_all::<AnomalyRow>()
                .await
                .map_err(failed("could not read firing anomalies"))?;
            for mut row in firing {
                row.state = AnomalyState::Resolved.as_str().to_string();
                row.resolved_window_ms = Some(resolution.window_start_ms);
                row.version = 2;
                resolved_rows.push(row);
            }
        }
        self.insert_rows("anomalies", &resolved_rows, "refused resolutions")
            .await?;
        self.insert_rows(
            "location_anomalies",
            &resolved_located,
            "refused resolutions",
        )
        .await?;
        self.queue_alerts(&commit.outbox, commit.outbox_limit)
            .await?;
        let state = EvaluationRow {
            id: 1,
            next_window_ms: commit.next_window_ms,
            state: commit.state,
            version: u64::try_from(now_ms()).unwrap_or(0),
        };
        self.insert_rows("evaluation", &[state], "refused the evaluator state")
            .await
    }
}

impl ClickhouseStore {
    /// The firing rows of a location's resolution, resolved (a newer version).
    async fn resolved_location_rows(
        &self,
        resolution: &Resolution,
    ) -> Result<Vec<LocationAnomalyRow>, StoreError> {
        let Some(location) = &resolution.location else {
            return Ok(Vec::new());
        };
        let firing = self
            .client
            .query(
                "SELECT tenant, model, dimension, value, detector, window_start_ms, metric,
                        observed, baseline, score, state, resolved_window_ms, version
                 FROM location_anomalies FINAL
                 WHERE tenant = ? AND model = ? AND dimension = ? AND value = ?
                   AND detector = ? AND state = 'firing'",
            )
            .bind(&resolution.tenant)
            .bind(&resolution.model)
            .bind(&location.dimension)
            .bind(&location.value)
            .bind(&resolution.detector)
            .fetch_all::<LocationAnomalyRow>()
            .await
            .map_err(failed("could not read firing anomalies"))?;
        Ok(firing
            .into_iter()
            .map(|mut row| {
                row.state = AnomalyState::Resolved.as_str().to_string();
                row.resolved_window_ms = Some(resolution.window_start_ms);
                row.version = 2;
                row
            })
            .collect())
    }
}
