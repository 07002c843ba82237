//! The evaluator's reads and its commit ([`EvaluationStore`]): anomalies and queued
//! alerts first, the evaluator's state last, so a crash in between replays a pass
//! whose rows are keyed to land once.

use async_trait::async_trait;

use super::rows::{AnomalyRow, EvaluationRow};
use super::{failed, now_ms, ClickhouseStore, RollupBinds};
use crate::evaluation::{AnomalyState, EvaluationCommit, EvaluationStore};
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
        let fired: Vec<AnomalyRow> = commit
            .fired
            .iter()
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
        for resolution in &commit.resolved {
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
