//! The `alert_outbox` table ([`AlertOutbox`]): rows versioned in a
//! ReplacingMergeTree, settled by writing a newer version.

use async_trait::async_trait;

use super::rows::OutboxRow;
use super::{failed, now_ms, ClickhouseStore};
use crate::outbox::{AlertOutbox, OutboxAlert, OutboxEntry, OutboxOutcome};
use crate::StoreError;

/// Outbox keys named in one query (an alert id is 32 characters, and more for a
/// renewal): well under the server's default query size of 256 KiB.
const KEYS_PER_LOOKUP: usize = 2_000;

impl ClickhouseStore {
    /// Queues alert transitions once per (sink, key): one queued before (pending,
    /// retried or settled) is left as it is. Past `limit` pending entries the
    /// oldest are settled as dropped and counted, as in the embedded store.
    pub(super) async fn queue_alerts(
        &self,
        alerts: &[OutboxAlert],
        limit: usize,
    ) -> Result<(), StoreError> {
        if alerts.is_empty() {
            return Ok(());
        }
        // The keys queued before, looked up a bounded number at a time: a commit may
        // queue thousands (a budget's users crossing at once), and one query naming
        // them all would pass the server's query size.
        let mut queued: std::collections::HashSet<(String, String)> =
            std::collections::HashSet::new();
        for chunk in alerts.chunks(KEYS_PER_LOOKUP) {
            let keys: Vec<&str> = chunk.iter().map(|alert| alert.key.as_str()).collect();
            let found: Vec<(String, String)> = self
                .client
                .query("SELECT sink, key FROM alert_outbox WHERE has(?, key)")
                .bind(&keys)
                .fetch_all()
                .await
                .map_err(failed("could not read the alert outbox"))?;
            queued.extend(found);
        }
        let alerts: Vec<&OutboxAlert> = alerts
            .iter()
            .filter(|alert| !queued.contains(&(alert.sink.clone(), alert.key.clone())))
            .collect();
        if alerts.is_empty() {
            return Ok(());
        }
        // Ids increase in queue order: the commit's time, then its position in it.
        let base = now_ms().saturating_mul(1000);
        let rows: Vec<OutboxRow> = alerts
            .iter()
            .enumerate()
            .map(|(index, alert)| OutboxRow {
                sink: alert.sink.clone(),
                key: alert.key.clone(),
                id: base + index as i64,
                payload: alert.payload.clone(),
                attempts: 0,
                next_attempt_ms: 0,
                settled: 0,
                version: 1,
            })
            .collect();
        self.insert_rows("alert_outbox", &rows, "refused the alert outbox")
            .await?;
        let pending = self.pending_outbox(None, u64::MAX).await?;
        let excess = pending.len().saturating_sub(limit);
        if excess > 0 {
            let dropped: Vec<OutboxRow> = pending.into_iter().take(excess).collect();
            self.settle_rows(&dropped).await?;
            metrics::counter!("ais_alert_outbox_dropped_total").increment(excess as u64);
            tracing::warn!(
                dropped = excess,
                "alert outbox full: dropped its oldest transitions"
            );
        }
        Ok(())
    }

    /// Pending outbox rows (of one sink, or all), oldest first.
    async fn pending_outbox(
        &self,
        sink: Option<&str>,
        limit: u64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sink_filter = if sink.is_some() { "AND sink = ?" } else { "" };
        let sql = format!(
            "SELECT sink, key, id, payload, attempts, next_attempt_ms, settled, version
             FROM alert_outbox FINAL WHERE settled = 0 {sink_filter} ORDER BY id LIMIT ?"
        );
        let mut query = self.client.query(&sql);
        if let Some(sink) = sink {
            query = query.bind(sink);
        }
        let rows = query
            .bind(limit)
            .fetch_all::<OutboxRow>()
            .await
            .map_err(failed("could not read the alert outbox"))?;
        metrics::gauge!("ais_alert_outbox_entries").set(rows.len() as f64);
        Ok(rows)
    }

    /// Marks rows as settled (a newer version of each).
    async fn settle_rows(&self, rows: &[OutboxRow]) -> Result<(), StoreError> {
        let settled: Vec<OutboxRow> = rows
            .iter()
            .map(|row| OutboxRow {
                settled: 1,
                version: row.version + 1,
                ..row.clone()
            })
            .collect();
        self.insert_rows("alert_outbox", &settled, "refused the alert outbox")
            .await
    }
}

#[async_trait]
impl AlertOutbox for ClickhouseStore {
    async fn outbox_pending(
        &self,
        sink: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = self.pending_outbox(Some(sink), limit as u64).await?;
        Ok(rows
            .into_iter()
            .map(|row| OutboxEntry {
                id: row.id,
                sink: row.sink,
                key: row.key,
                payload: row.payload,
                attempts: row.attempts,
                next_attempt_ms: row.next_attempt_ms,
            })
            .collect())
    }

    async fn outbox_settle(&self, id: i64, outcome: OutboxOutcome) -> Result<(), StoreError> {
        let found = self
            .client
            .query(
                "SELECT sink, key, id, payload, attempts, next_attempt_ms, settled, version
                 FROM alert_outbox FINAL WHERE id = ? AND settled = 0",
            )
            .bind(id)
            .fetch_optional::<OutboxRow>()
            .await
            .map_err(failed("could not read the alert outbox"))?;
        // Already gone (dropped at the limit, or settled by a previous try).
        let Some(row) = found else {
            return Ok(());
        };
        match outcome {
            OutboxOutcome::Delivered | OutboxOutcome::Abandoned => self.settle_rows(&[row]).await,
            OutboxOutcome::Retry {
                attempts,
                next_attempt_ms,
            } => {
                let retried = OutboxRow {
                    attempts,
                    next_attempt_ms,
                    version: row.version + 1,
                    ..row
                };
                self.insert_rows("alert_outbox", &[retried], "refused the alert outbox")
                    .await
            }
        }
    }
}
