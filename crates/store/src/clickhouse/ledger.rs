//! The ledger (`crate::ledger`) in ClickHouse: one row per (tenant, hour, batch),
//! written just before the batch's commit INSERT and counted like the batch's rollups,
//! only once its marker exists and no newer claim voids it (`super::fencing`). A replay
//! of the batch replaces its rows (same key, `FINAL`).

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{datetime_secs, failed, ClickhouseStore};
use crate::ledger::{LedgerCounts, LedgerQuery, LedgerRow};
use crate::{BatchCommit, StoreError};

#[derive(Debug, Row, Serialize)]
struct LedgerRowOut<'a> {
    tenant: &'a str,
    /// Unix seconds (`DateTime`), the hour's start.
    hour: u32,
    log_partition: u32,
    first_offset: u64,
    next_offset: u64,
    accepted: u64,
    committed: u64,
    duplicates: u64,
    late: u64,
    dead_lettered: u64,
    written_ms: u64,
}

#[derive(Debug, Row, Deserialize)]
struct LedgerRowIn {
    tenant: String,
    hour_ms: i64,
    log_partition: u32,
    accepted: u64,
    committed: u64,
    duplicates: u64,
    late: u64,
    dead_lettered: u64,
}

impl ClickhouseStore {
    /// Writes a batch's ledger rows, tagged with its offsets and claim.
    pub(super) async fn insert_ledger(&self, batch: &BatchCommit) -> Result<(), StoreError> {
        if batch.ledger.is_empty() {
            return Ok(());
        }
        let written_ms = self.row_version(batch.partition);
        let refused = failed("refused the ledger");
        let mut insert = self
            .client
            .insert::<LedgerRowOut<'_>>("ledger")
            .await
            .map_err(&refused)?;
        for (key, counts) in &batch.ledger {
            let row = LedgerRowOut {
                tenant: &key.tenant,
                hour: datetime_secs(key.hour_ms),
                log_partition: batch.partition,
                first_offset: batch.first_offset,
                next_offset: batch.next_offset,
                accepted: counts.accepted,
                committed: counts.committed,
                duplicates: counts.duplicates,
                late: counts.late,
                dead_lettered: counts.dead_lettered,
                written_ms,
            };
            insert.write(&row).await.map_err(&refused)?;
        }
        insert.end().await.map_err(&refused)
    }

    /// The counted ledger rows of the hours `query` covers, summed per (tenant, hour,
    /// partition).
    pub(super) async fn read_ledger(
        &self,
        query: LedgerQuery,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        let counted = self.fencing().await?.counted(query.from_ms);
        let of_tenant = if query.tenant.is_some() {
            "tenant = ? AND "
        } else {
            ""
        };
        let sql = format!(
            "SELECT tenant, toInt64(toUnixTimestamp(hour)) * 1000 AS hour_ms, log_partition,
                    sum(accepted), sum(committed), sum(duplicates), sum(late), sum(dead_lettered)
             FROM ledger FINAL
             WHERE {of_tenant}hour >= toDateTime(?) AND hour < toDateTime(?){counted}
             GROUP BY tenant, hour, log_partition
             ORDER BY tenant, hour, log_partition"
        );
        let mut read = self.client.query(&sql);
        if let Some(tenant) = &query.tenant {
            read = read.bind(tenant);
        }
        let rows = read
            .bind(datetime_secs(query.from_ms))
            .bind(datetime_secs(query.to_ms))
            .fetch_all::<LedgerRowIn>()
            .await
            .map_err(failed("could not read the ledger"))?;
        Ok(rows
            .into_iter()
            .map(|row| LedgerRow {
                tenant: row.tenant,
                hour_ms: row.hour_ms,
                partition: row.log_partition,
                counts: LedgerCounts {
                    accepted: row.accepted,
                    committed: row.committed,
                    duplicates: row.duplicates,
                    late: row.late,
                    dead_lettered: row.dead_lettered,
                },
            })
            .collect())
    }
}
