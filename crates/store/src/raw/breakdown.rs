//! The scan path of breakdowns over the raw-event files: every event of the range,
//! grouped by any dimension.
//!
//! Files come from the catalog (pruned by time span); row groups are pruned by their
//! timestamp and tenant statistics; the rest is decoded batch by batch and each event in
//! scope is added to the query's [`ais_rollup::breakdown::Grouper`]. Memory is bounded
//! by one batch and the grouper's group bound; time by the query's deadline, checked
//! per batch. Either bound ends the scan with [`StoreError::Limit`], never a partial
//! answer.

use std::sync::Arc;
use std::time::Instant;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::catalog::RawFile;
use super::columns::{self, EventsView};
use super::scan::{int_bounds, leaf_index, may_hold_text, READ_BATCH_ROWS};
use crate::{BreakdownQuery, StoreError};
use ais_rollup::breakdown::Grouper;

/// Groups the events of `files` (a catalog snapshot) in scope of `query`.
pub fn scan(files: Vec<Arc<RawFile>>, query: &BreakdownQuery) -> Result<Grouper, StoreError> {
    let mut grouper = query.grouper();
    for file in files {
        let (handle, metadata) = file.open()?;
        let timestamp = leaf_index(&metadata, columns::TIMESTAMP);
        let tenant = leaf_index(&metadata, columns::TENANT);
        let row_groups: Vec<usize> = metadata
            .metadata()
            .row_groups()
            .iter()
            .enumerate()
            .filter(|(_, group)| {
                let in_time = timestamp
                    .and_then(|leaf| int_bounds(group.column(leaf).statistics()))
                    .is_none_or(|(min, max)| max >= query.from_ms && min < query.to_ms);
                let of_tenant = match (&query.tenant, tenant) {
                    (Some(wanted), Some(leaf)) => {
                        may_hold_text(group.column(leaf).statistics(), wanted)
                    }
                    _ => true,
                };
                in_time && of_tenant
            })
            .map(|(index, _)| index)
            .collect();
        if row_groups.is_empty() {
            continue;
        }
        let malformed = |error: &dyn std::fmt::Display| {
            StoreError::Malformed(format!("{}: {error}", file.path.display()))
        };
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(handle, metadata)
            .with_row_groups(row_groups)
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(|error| malformed(&error))?;
        for batch in reader {
            if Instant::now() >= query.deadline {
                return Err(query.timed_out());
            }
            let batch = batch.map_err(|error| malformed(&error))?;
            for stored in EventsView::new(&batch).events()? {
                if !query.in_scope(&stored.tenant, stored.event.timestamp_ms) {
                    continue;
                }
                grouper
                    .add_event(&stored.tenant, &stored.event)
                    .map_err(|error| StoreError::Limit(error.to_string()))?;
            }
        }
    }
    Ok(grouper)
}
