//! Retention by mutations (old rows, and the payloads of older ones) and whole day
//! partitions, and compaction (ClickHouse merges parts itself) ([`Maintenance`]).

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

impl ClickhouseStore {
    /// Deletes the rows of `table` whose time `column` is before `before_ms` (and that
    /// match `and_where`, a condition ending in `AND`).
    async fn delete_before(
        &self,
        table: &'static str,
        column: &'static str,
        and_where: &'static str,
        before_ms: i64,
    ) -> Result<(), StoreError> {
        let secs = datetime_secs(before_ms);
        self.delete_where(table, &format!("{and_where}{column} < toDateTime({secs})"))
            .await
    }

    /// Deletes the rows of `table` that match `condition` (SQL of trusted values only).
    async fn delete_where(&self, table: &'static str, condition: &str) -> Result<(), StoreError> {
        self.mutate_where(table, "DELETE", condition).await
    }

    /// Runs the mutation `action` (`DELETE`, `UPDATE …`) on the rows of `table` that
    /// match `condition` (SQL of trusted values only), and waits for it. Issued only
    /// when something matches, since each one rewrites the parts it touches.
    async fn mutate_where(
        &self,
        table: &'static str,
        action: &str,
        condition: &str,
    ) -> Result<(), StoreError> {
        let old: u64 = self
            .client
            .query(&format!("SELECT count() FROM {table} WHERE {condition}"))
            .fetch_one()
            .await
            .map_err(failed("could not count rows past retention"))?;
        if old > 0 {
            self.client
                .query(&format!("ALTER TABLE {table} {action} WHERE {condition}"))
                .execute()
                .await
                .map_err(failed("could not apply retention"))?;
            self.wait_for_mutations(table).await?;
            tracing::info!(table, rows = old, action, "retention applied to rows");
        }
        Ok(())
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
        // Payloads of whole hours past their retention: the events stay, their input
        // and output become NULL.
        let payloads_before = crate::raw::file::hour_of(retention.payloads_before_ms);
        self.mutate_where(
            "events",
            "UPDATE input = NULL, output = NULL",
            &format!(
                "timestamp_ms < {payloads_before} AND (isNotNull(input) OR isNotNull(output))"
            ),
        )
        .await?;
        // Rollups: batch markers are kept (the newest of each partition is its
        // position). Dimension rollups of the same minutes go too, and with them rows an
        // unfinished commit left behind.
        let before = retention.rollups_before_ms;
        self.delete_before("rollups", "minute", "tenant != '' AND ", before)
            .await?;
        self.delete_before("dimension_rollups", "minute", "", before)
            .await?;
        // The ledger's hours go with the rollups they account for.
        self.delete_before("ledger", "hour", "", before).await?;
        // Usage is kept as long as the rollups whose totals it breaks down: the days that
        // end at or before the cut.
        let last_day = before.saturating_sub(crate::usage::DAY_MS);
        self.delete_where("usage", &format!("day_ms <= {last_day}"))
            .await?;
        Ok(())
    }

    async fn compact(&self, _final_before_ms: i64) -> Result<CompactionReport, StoreError> {
        // ClickHouse merges parts itself.
        Ok(CompactionReport::default())
    }
}
