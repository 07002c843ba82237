//! Retention (whole hours of raw events, old rollups and dedup ids, in one
//! transaction; then the payloads of older hours, file by file) and compaction of
//! final hours: their Parquet files, and their dimension rollups' minute rows into hour
//! rows ([`Maintenance`]).

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior};

use super::{backend, dead_letters, dimensions, ledger, raw_files, usage, SqliteStore};
use crate::raw::PendingFile;
use crate::{CompactionReport, Maintenance, Retention, StoreError};

/// Most (hour, tenant) slices of dimension rollups merged per compaction pass; the rest
/// wait for the next pass, so one pass ends in bounded time.
const MAX_HOURS_MERGED_PER_PASS: usize = 240;

/// Hour merges a pass prepares again after commits changed their rows meanwhile, before
/// it leaves the rest to the next pass (late events into one hour, without end, cannot
/// hold a pass).
const MAX_HOUR_MERGE_CONFLICTS: usize = 8;

#[async_trait]
impl Maintenance for SqliteStore {
    async fn apply_retention(&self, retention: Retention) -> Result<(), StoreError> {
        self.delete_expired(retention).await?;
        self.drop_old_payloads(retention.payloads_before_ms).await
    }

    async fn compact(&self, final_before_ms: i64) -> Result<CompactionReport, StoreError> {
        let mut report = CompactionReport::default();
        for plan in self.raw.plan_compaction(final_before_ms) {
            // The merge reads and writes files only: it runs without the writer
            // connection, so stream commits go on meanwhile.
            let raw = Arc::clone(&self.raw);
            let (plan, outputs) = tokio::task::spawn_blocking(move || {
                let outputs = raw.compact(&plan);
                (plan, outputs)
            })
            .await
            .map_err(|error| StoreError::Unavailable(format!("compaction task failed: {error}")))?;
            let outputs = outputs?;
            let input_ids: Vec<i64> = plan.inputs.iter().map(|file| file.id).collect();
            let rows: u64 = plan.inputs.iter().map(|file| file.rows).sum();
            let output_rows: u64 = outputs.iter().map(|file| file.rows).sum();
            if rows != output_rows {
                self.raw.discard(&outputs);
                return Err(StoreError::Malformed(format!(
                    "compacting hour {} read {output_rows} rows where the catalog lists {rows}",
                    plan.hour_ms
                )));
            }
            let (files_in, files_out) = (input_ids.len() as u64, outputs.len() as u64);
            drop(plan);
            self.swap_files(input_ids, outputs).await?;
            report.hours += 1;
            report.files_in += files_in;
            report.files_out += files_out;
            report.rows += rows;
        }
        // Dimension rollups of the same final hours, minute rows into hour rows: one
        // tenant's hour at a time, read and merged on maintenance's own connection,
        // then applied in a short turn of the writer, so stream commits go on meanwhile.
        // Only hours the evaluator has passed too: its per-location detectors read
        // minute rows, and a minute merged into its hour before they read it would be
        // a window they never see.
        let evaluated_until: Option<i64> = self
            .with_maintenance_reader(|connection| {
                connection
                    .query_row(
                        "SELECT next_window_ms FROM evaluation WHERE id = 1",
                        [],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(backend("reading the evaluator position"))
            })
            .await?;
        let final_before_ms =
            evaluated_until.map_or(final_before_ms, |until| until.min(final_before_ms));
        let mut merged_hours = 0;
        let mut conflicts = 0;
        while merged_hours < MAX_HOURS_MERGED_PER_PASS && conflicts < MAX_HOUR_MERGE_CONFLICTS {
            let Some(merge) = self
                .with_maintenance_reader(move |connection| {
                    dimensions::prepare_oldest_hour(connection, final_before_ms)
                })
                .await?
            else {
                break;
            };
            if self
                .with_writer(move |connection| dimensions::apply_hour_merge(connection, &merge))
                .await?
            {
                merged_hours += 1;
            } else {
                // A commit changed the hour's rows meanwhile (late events): read again.
                conflicts += 1;
            }
        }
        if merged_hours > 0 {
            tracing::debug!(hours = merged_hours, "dimension rollups merged into hours");
        }
        if report.hours > 0 {
            metrics::counter!("ais_store_compacted_files_total").increment(report.files_in);
            tracing::info!(
                hours = report.hours,
                files_in = report.files_in,
                files_out = report.files_out,
                rows = report.rows,
                "raw events compacted"
            );
        }
        Ok(report)
    }
}

impl SqliteStore {
    /// Whole hours of raw events, old rollups, dedup ids and what goes with them, in
    /// one transaction.
    async fn delete_expired(&self, retention: Retention) -> Result<(), StoreError> {
        let raw = Arc::clone(&self.raw);
        self.with_writer(move |connection| {
            // Whole hours only: an hour goes when all of it is past the cut.
            let raw_before_hour = crate::raw::file::hour_of(retention.raw_before_ms);
            let expired = raw.catalog().hours_before(raw_before_hour);
            let expired_ids: Vec<i64> = expired.iter().map(|file| file.id).collect();
            drop(expired);
            // One transaction: one fsync, and a crash leaves all or none deleted.
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("starting retention"))?;
            let rollups_deleted = transaction
                .execute(
                    "DELETE FROM rollups WHERE minute_ms < ?1",
                    [retention.rollups_before_ms],
                )
                .map_err(backend("deleting old rollups"))?;
            // An empty table has no maximum: the comparison with NULL deletes nothing.
            let dedup_rows_deleted = transaction
                .execute(
                    "DELETE FROM dedup WHERE minute_ms < (SELECT MAX(minute_ms) FROM dedup) - ?1",
                    [retention.dedup_horizon_ms],
                )
                .map_err(backend("deleting old dedup ids"))?;
            raw_files::unregister(&transaction, &expired_ids)?;
            // Dimension rollups go with the raw events they summarise, so a breakdown
            // answers the same from either.
            let dimension_rollups_deleted =
                dimensions::delete_before(&transaction, raw_before_hour)?;
            // The ledger goes with the rollups it accounts for.
            let ledger_hours_deleted =
                ledger::delete_before(&transaction, retention.rollups_before_ms)?;
            // Usage is kept as long as the rollups whose totals it breaks down.
            let usage_rows_deleted =
                usage::delete_before(&transaction, retention.rollups_before_ms)?;
            // Dead letters are kept as long as raw events: a letter is a raw record.
            let dead_letters_deleted =
                dead_letters::delete_before(&transaction, retention.raw_before_ms)?;
            transaction
                .commit()
                .map_err(backend("committing retention"))?;
            raw.catalog().replace(&expired_ids, Vec::new());
            crate::raw::remove_empty_dirs(raw.dir());
            tracing::debug!(
                rollups_deleted,
                dimension_rollups_deleted,
                dedup_rows_deleted,
                dead_letters_deleted,
                ledger_hours_deleted,
                usage_rows_deleted,
                raw_files_deleted = expired_ids.len(),
                "store retention applied"
            );
            Ok(())
        })
        .await
    }

    /// Replaces the registered files `input_ids` by `outputs` (durable, unregistered)
    /// in one transaction, then in the catalog; on failure the outputs are deleted and
    /// the inputs stay.
    async fn swap_files(
        &self,
        input_ids: Vec<i64>,
        outputs: Vec<PendingFile>,
    ) -> Result<(), StoreError> {
        let raw = Arc::clone(&self.raw);
        self.with_writer(move |connection| {
            let swap = (|| {
                let transaction = connection
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(backend("starting a raw file swap"))?;
                raw_files::unregister(&transaction, &input_ids)?;
                let registered = raw_files::register(&transaction, &outputs)?;
                transaction
                    .commit()
                    .map_err(backend("committing a raw file swap"))?;
                Ok(registered)
            })();
            match swap {
                Ok(registered) => {
                    let added = registered
                        .into_iter()
                        .map(|entry| raw.registered(entry))
                        .collect();
                    raw.catalog().replace(&input_ids, added);
                    Ok(())
                }
                Err(error) => {
                    raw.discard(&outputs);
                    Err(error)
                }
            }
        })
        .await
    }

    /// Rewrites the files of whole hours ending at or before `before_ms` without their
    /// payload columns, a bounded number per pass (the rest at the next one), each
    /// swapped in as compaction swaps its outputs: queries see the events throughout,
    /// with payloads until the swap, without after. Reading and writing runs without
    /// the writer connection, so stream commits go on meanwhile.
    async fn drop_old_payloads(&self, before_ms: i64) -> Result<(), StoreError> {
        let before_hour = crate::raw::file::hour_of(before_ms);
        let raw = Arc::clone(&self.raw);
        let planned = tokio::task::spawn_blocking(move || raw.plan_payload_retention(before_hour))
            .await
            .map_err(|error| {
                StoreError::Unavailable(format!("payload retention task failed: {error}"))
            })??;
        let mut rewritten = 0u64;
        for file in planned {
            let raw = Arc::clone(&self.raw);
            let input_id = file.id;
            let output = tokio::task::spawn_blocking(move || raw.without_payloads(&file))
                .await
                .map_err(|error| {
                    StoreError::Unavailable(format!("payload retention task failed: {error}"))
                })??;
            self.swap_files(vec![input_id], vec![output]).await?;
            rewritten += 1;
        }
        if rewritten > 0 {
            metrics::counter!("ais_store_payload_files_dropped_total").increment(rewritten);
            tracing::info!(files = rewritten, "payloads past their retention dropped");
        }
        Ok(())
    }
}
