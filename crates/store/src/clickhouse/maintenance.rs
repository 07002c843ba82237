//! Retention by mutations and whole day partitions, and compaction (ClickHouse merges
//! parts itself) ([`Maintenance`]).

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{datetime_secs, day_partition_end_ms, failed, ClickhouseStore, MUTATION_PATIENCE};
use crate::{CompactionReport, Maintenance, Retention, StoreError};

impl ClickhouseStore {
    /// Waits until the table's mutations are done, so retention has taken effect when
    /// it returns (servers before 19.x have no `mutations_sync`).
    async fn wait_for_mutations(&self, table: &str) -> Result<(), StoreError> {
        let deadline = Instant::now() + MUTATION_PATIENCE;
        loop {
            let pending: u64 = self
                .client
                .query("SELECT count() FROM system.mutations WHERE database = ? AND table = ? AND is_done = 0")
                .bind(&self.config.database)
                .bind(table)
                .fetch_one()
                .await
                .map_err(failed("could not read mutations"))?;
            if pending == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "ClickHouse still applies {pending} mutation(s) of {table} after {MUTATION_PATIENCE:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait]
impl Maintenance for ClickhouseStore {
    async fn apply_retention(&self, retention: Retention) -> Result<(), StoreError> {
        // Raw events: whole days (the table's partitions) that end at or before the cut.
        let partitions: Vec<String> = self
            .client
            .query(
                "SELECT DISTINCT partition FROM system.parts
                 WHERE database = ? AND table = 'events' AND active",
            )
            .bind(&self.config.database)
            .fetch_all::<String>()
            .await
            .map_err(failed("could not list event partitions"))?;
        for partition in partitions {
            let Some(end_ms) = day_partition_end_ms(&partition) else {
                continue;
            };
            if end_ms <= retention.raw_before_ms {
                // The id is digits only (checked by the parse above).
                self.client
                    .query(&format!("ALTER TABLE events DROP PARTITION {partition}"))
                    .execute()
                    .await
                    .map_err(failed("could not drop old raw events"))?;
                tracing::info!(day = %partition, "raw events of a day past retention dropped");
            }
        }
        // Rollups: a mutation, issued only when something is old enough, since each
        // one rewrites the parts it touches. Batch markers are kept: the newest of each
        // partition is its position.
        let old: u64 = self
            .client
            .query("SELECT count() FROM rollups WHERE tenant != '' AND minute < toDateTime(?)")
            .bind(datetime_secs(retention.rollups_before_ms))
            .fetch_one()
            .await
            .map_err(failed("could not count old rollups"))?;
        if old > 0 {
            self.client
                .query("ALTER TABLE rollups DELETE WHERE tenant != '' AND minute < toDateTime(?)")
                .bind(datetime_secs(retention.rollups_before_ms))
                .execute()
                .await
                .map_err(failed("could not delete old rollups"))?;
            self.wait_for_mutations("rollups").await?;
            tracing::info!(rows = old, "rollups past retention deleted");
        }
        // Dimension rollups of the same minutes, and with them rows an unfinished
        // commit left behind.
        let old: u64 = self
            .client
            .query("SELECT count() FROM dimension_rollups WHERE minute < toDateTime(?)")
            .bind(datetime_secs(retention.rollups_before_ms))
            .fetch_one()
            .await
            .map_err(failed("could not count old dimension rollups"))?;
        if old > 0 {
            self.client
                .query("ALTER TABLE dimension_rollups DELETE WHERE minute < toDateTime(?)")
                .bind(datetime_secs(retention.rollups_before_ms))
                .execute()
                .await
                .map_err(failed("could not delete old dimension rollups"))?;
            self.wait_for_mutations("dimension_rollups").await?;
            tracing::info!(rows = old, "dimension rollups past retention deleted");
        }
        Ok(())
    }

    async fn compact(&self, _final_before_ms: i64) -> Result<CompactionReport, StoreError> {
        // ClickHouse merges parts itself.
        Ok(CompactionReport::default())
    }
}
