//! The `alert_outbox` table ([`AlertOutbox`]): filled by the evaluation commit,
//! bounded there, drained by alert delivery.

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::{backend, SqliteStore};
use crate::outbox::{AlertOutbox, OutboxAlert, OutboxEntry, OutboxOutcome};
use crate::StoreError;

/// Adds alert transitions to the outbox (once per (sink, key)), then trims it to
/// `limit` entries, oldest first; returns how many were dropped.
pub(super) fn queue_alerts(
    transaction: &rusqlite::Transaction<'_>,
    alerts: &[OutboxAlert],
    limit: usize,
) -> Result<u64, StoreError> {
    if alerts.is_empty() {
        return Ok(0);
    }
    let mut insert = transaction
        .prepare_cached(
            "INSERT OR IGNORE INTO alert_outbox (sink, key, payload, attempts, next_attempt_ms)
             VALUES (?1, ?2, ?3, 0, 0)",
        )
        .map_err(backend("preparing the outbox write"))?;
    for alert in alerts {
        insert
            .execute(params![alert.sink, alert.key, alert.payload])
            .map_err(backend("queueing an alert"))?;
    }
    let entries: i64 = transaction
        .query_row("SELECT COUNT(*) FROM alert_outbox", [], |row| row.get(0))
        .map_err(backend("counting the outbox"))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let excess = entries.saturating_sub(limit);
    if excess <= 0 {
        return Ok(0);
    }
    let dropped = transaction
        .execute(
            "DELETE FROM alert_outbox WHERE id IN (SELECT id FROM alert_outbox ORDER BY id LIMIT ?1)",
            [excess],
        )
        .map_err(backend("trimming the outbox"))?;
    Ok(dropped as u64)
}

/// Sets `ais_alert_outbox_entries` from the table.
pub(super) fn record_outbox_size(connection: &Connection) -> Result<(), StoreError> {
    let entries: i64 = connection
        .query_row("SELECT COUNT(*) FROM alert_outbox", [], |row| row.get(0))
        .map_err(backend("counting the outbox"))?;
    metrics::gauge!("ais_alert_outbox_entries").set(entries as f64);
    Ok(())
}

#[async_trait]
impl AlertOutbox for SqliteStore {
    async fn outbox_pending(
        &self,
        sink: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let sink = sink.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_reader(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT id, sink, key, payload, attempts, next_attempt_ms FROM alert_outbox
                     WHERE sink = ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(backend("reading the alert outbox"))?;
            let rows = statement
                .query_map(params![sink, limit], |row| {
                    Ok(OutboxEntry {
                        id: row.get(0)?,
                        sink: row.get(1)?,
                        key: row.get(2)?,
                        payload: row.get(3)?,
                        attempts: row.get(4)?,
                        next_attempt_ms: row.get(5)?,
                    })
                })
                .map_err(backend("reading the alert outbox"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(backend("reading the alert outbox"))
        })
        .await
    }

    async fn outbox_settle(&self, id: i64, outcome: OutboxOutcome) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            match outcome {
                OutboxOutcome::Delivered | OutboxOutcome::Abandoned => connection
                    .execute("DELETE FROM alert_outbox WHERE id = ?1", [id])
                    .map_err(backend("removing an outbox entry"))?,
                OutboxOutcome::Retry {
                    attempts,
                    next_attempt_ms,
                } => connection
                    .execute(
                        "UPDATE alert_outbox SET attempts = ?2, next_attempt_ms = ?3 WHERE id = ?1",
                        params![id, attempts, next_attempt_ms],
                    )
                    .map_err(backend("rescheduling an outbox entry"))?,
            };
            record_outbox_size(connection)
        })
        .await
    }
}
