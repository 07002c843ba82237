//! The stream's batches ([`BatchSink`]) and their positions ([`Positions`]): raw
//! events first, then dimension rollups, then the one INSERT of partials and position
//! marker that is the commit point (the module docs of [`super`] give the argument).

use std::time::Instant;

use ais_model::time::minute_floor;
use ais_model::wire;
use async_trait::async_trait;

use super::rows::{DedupRow, EventRowOut, PositionRow, RollupRowOut};
use super::{datetime_secs, failed, now_ms, ClickhouseStore};
use crate::{BatchCommit, BatchSink, DedupEntry, PartitionState, Positions, StoreError};

impl ClickhouseStore {
    /// Every partition's position and watermark, counting only batches `fencing`
    /// leaves standing.
    pub(super) async fn positions_under(
        &self,
        fencing: &super::fencing::Fencing,
    ) -> Result<Vec<PartitionState>, StoreError> {
        let rows = self
            .client
            .query(&format!(
                "SELECT log_partition, max(next_offset) AS max_next, max(watermark_ms) AS max_watermark
                 FROM rollups WHERE tenant = '' AND model = ''{}
                 GROUP BY log_partition ORDER BY log_partition",
                fencing.exclude()
            ))
            .fetch_all::<PositionRow>()
            .await
            .map_err(failed("could not read positions"))?;
        Ok(rows
            .into_iter()
            .map(|row| PartitionState {
                partition: row.log_partition,
                next_offset: row.next_offset,
                watermark_ms: row.watermark_ms,
            })
            .collect())
    }

    /// The version the rows of a commit of `partition` carry: the claim they are
    /// written under, or the write time when the partition was never claimed.
    pub(super) fn row_version(&self, partition: u32) -> u64 {
        match self.held.of(partition) {
            0 => u64::try_from(now_ms()).unwrap_or(0),
            claim => claim,
        }
    }

    async fn insert_events(&self, batch: &BatchCommit) -> Result<(), StoreError> {
        if batch.events.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<EventRowOut<'_>>("events")
            .await
            .map_err(failed("refused the raw events"))?;
        for record in &batch.events {
            let (tenant, event) = wire::decode(&record.bytes).map_err(|error| {
                StoreError::Malformed(format!(
                    "raw event at offset {} of partition {}: {error}",
                    record.offset, batch.partition
                ))
            })?;
            let row = EventRowOut::new(tenant, &event, batch.partition, record.offset);
            insert
                .write(&row)
                .await
                .map_err(failed("refused the raw events"))?;
        }
        insert.end().await.map_err(failed("refused the raw events"))
    }

    async fn insert_rollups(&self, batch: &BatchCommit) -> Result<(), StoreError> {
        let written_ms = self.row_version(batch.partition);
        let encoded: Vec<Vec<u8>> = batch
            .partials
            .iter()
            .map(|(_, partial)| partial.to_bytes())
            .collect();
        let mut insert = self
            .client
            .insert::<RollupRowOut<'_>>("rollups")
            .await
            .map_err(failed("refused the rollups"))?;
        for ((key, partial), bytes) in batch.partials.iter().zip(&encoded) {
            let row = RollupRowOut {
                tenant: &key.tenant,
                model: &key.model,
                minute: datetime_secs(key.minute_ms),
                log_partition: batch.partition,
                first_offset: batch.first_offset,
                next_offset: batch.next_offset,
                watermark_ms: batch.watermark_ms,
                requests: partial.requests,
                errors: partial.errors,
                input_tokens: partial.input_tokens,
                output_tokens: partial.output_tokens,
                cache_read_input_tokens: partial.cache_read_input_tokens,
                cost_micros: partial.cost_micros,
                late_events: partial.late_events,
                partial: bytes,
                written_ms,
            };
            insert
                .write(&row)
                .await
                .map_err(failed("refused the rollups"))?;
        }
        // The marker: the position moves with the partials, in the same INSERT.
        let marker = RollupRowOut {
            tenant: "",
            model: "",
            minute: datetime_secs(minute_floor(now_ms())),
            log_partition: batch.partition,
            first_offset: batch.first_offset,
            next_offset: batch.next_offset,
            watermark_ms: batch.watermark_ms,
            requests: 0,
            errors: 0,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_input_tokens: 0,
            cost_micros: 0,
            late_events: 0,
            partial: &[],
            written_ms,
        };
        insert
            .write(&marker)
            .await
            .map_err(failed("refused the rollups"))?;
        insert.end().await.map_err(failed("refused the rollups"))
    }

    async fn commit_batch(&self, batch: &BatchCommit) -> Result<(), StoreError> {
        let fencing = self.fencing().await?;
        fencing.check(batch.partition, self.held.of(batch.partition))?;
        let expected = self
            .positions_under(&fencing)
            .await?
            .iter()
            .find(|state| state.partition == batch.partition)
            .map_or(0, |state| state.next_offset);
        if batch.first_offset != expected || batch.next_offset < batch.first_offset {
            return Err(StoreError::OutOfOrder {
                partition: batch.partition,
                first_offset: batch.first_offset,
                expected,
            });
        }
        self.insert_events(batch).await?;
        self.insert_dimensions(batch).await?;
        self.insert_ledger(batch).await?;
        self.insert_usage(batch).await?;
        self.insert_rollups(batch).await
    }
}

#[async_trait]
impl Positions for ClickhouseStore {
    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError> {
        let fencing = self.fencing().await?;
        self.positions_under(&fencing).await
    }
}

#[async_trait]
impl BatchSink for ClickhouseStore {
    /// Always: which dimensions a batch rolled up needs no record here, since a
    /// breakdown checks that the rollups cover its range (`super::dimensions`).
    async fn keep_dimension_rollups(
        &self,
        _dimensions: &[String],
        _now_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn claim(&self, partitions: &[u32], now_ms: i64) -> Result<(), StoreError> {
        let claim = self.claim_partitions(partitions, now_ms).await?;
        self.held.hold(partitions, claim);
        Ok(())
    }

    async fn commit(&self, batch: BatchCommit) -> Result<(), StoreError> {
        let started = Instant::now();
        let outcome = self.commit_batch(&batch).await;
        crate::record_commit(&outcome, started);
        outcome
    }

    async fn dedup_entries(&self, since_minute_ms: i64) -> Result<Vec<DedupEntry>, StoreError> {
        let positions = self.partition_states().await?;
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let newest: i64 = self
            .client
            .query("SELECT max(timestamp_ms) FROM events WHERE client_id = 1")
            .fetch_one()
            .await
            .map_err(failed("could not read dedup ids"))?;
        let horizon_ms = i64::try_from(self.config.dedup_horizon.as_millis()).unwrap_or(i64::MAX);
        let since = since_minute_ms.max(minute_floor(newest.saturating_sub(horizon_ms)));
        // Only rows below their partition's position count: the rest were left by a
        // commit that did not finish and will be replayed.
        let partitions: Vec<String> = positions
            .iter()
            .map(|state| state.partition.to_string())
            .collect();
        let offsets: Vec<String> = positions
            .iter()
            .map(|state| state.next_offset.to_string())
            .collect();
        let sql = format!(
            "SELECT tenant, event_id, timestamp_ms FROM events
             WHERE client_id = 1 AND timestamp >= toDateTime(?) AND timestamp_ms >= ?
               AND log_offset < transform(log_partition, [{}], [{}], toUInt64(0))",
            partitions.join(","),
            offsets.join(",")
        );
        let mut cursor = self
            .client
            .query(&sql)
            .bind(datetime_secs(since))
            .bind(since)
            .fetch::<DedupRow>()
            .map_err(failed("could not read dedup ids"))?;
        let mut entries = Vec::new();
        while let Some(row) = cursor
            .next()
            .await
            .map_err(failed("could not read dedup ids"))?
        {
            entries.push(DedupEntry {
                hash: ais_model::event::dedup_hash(&row.tenant, &row.event_id),
                minute_ms: minute_floor(row.timestamp_ms),
            });
        }
        Ok(entries)
    }
}
