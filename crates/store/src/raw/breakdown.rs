//! The scan path of breakdowns over the raw-event files: every event of the range,
//! grouped by any dimension.
//!
//! Files come from the catalog (pruned by time span); row groups are pruned by their
//! timestamp and tenant statistics. What is left is read row group by row group on one
//! thread per core, each into a grouper of its own, merged at the end. Only the columns
//! the grouper reads are decoded ([`Grouper::fields_read`], plus tenant and time for
//! the query's scope), and events borrow their strings from the decoded batch, so a
//! breakdown by `endpoint` never touches trace ids or attributes and allocates nothing
//! per event but its group's key.
//!
//! Bounded: each thread holds one batch and its share of the query's group bound, so
//! the threads together hold no more partials than one thread would; when a share is
//! not enough (groups that fit the bound, but not split across threads), the scan runs
//! again on one thread with the whole bound. Every thread checks the query's deadline
//! per batch. Either bound ends the scan with [`StoreError::Limit`], never a partial
//! answer; the first thread to fail stops the others.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use super::catalog::RawFile;
use super::columns::{self, EventsView, OPTIONAL_SINCE_V2};
use super::scan::{int_bounds, leaf_index, may_hold_text, READ_BATCH_ROWS};
use crate::{BreakdownQuery, StoreError};
use ais_rollup::breakdown::Grouper;

/// One row group left after pruning.
struct Unit {
    file: Arc<RawFile>,
    metadata: ArrowReaderMetadata,
    row_group: usize,
}

/// Groups the events of `files` (a catalog snapshot) in scope of `query`.
pub fn scan(files: Vec<Arc<RawFile>>, query: &BreakdownQuery) -> Result<Grouper, StoreError> {
    let mut wanted = query.grouper().fields_read();
    wanted.extend([columns::TENANT, columns::TIMESTAMP]);
    let units = prune(files, query)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(units.len())
        .min(query.max_groups);
    if threads > 1 {
        match in_parallel(&units, &wanted, query, threads)? {
            Some(grouper) => return Ok(grouper),
            // A thread reached its share of the group bound: the groups may still fit
            // the bound, which one thread can tell.
            None => tracing::debug!(
                threads,
                "breakdown scan past a thread's share of the group bound; scanning on one thread"
            ),
        }
    }
    let mut grouper = query.grouper();
    for unit in &units {
        read(unit, &wanted, query, &mut grouper, &AtomicBool::new(false))?;
    }
    Ok(grouper)
}

/// The scan on `threads` threads, each holding at most its share of the group bound,
/// so together they hold no more than one thread would. `None` when a thread's share
/// was not enough (the caller scans on one thread).
fn in_parallel(
    units: &[Unit],
    wanted: &BTreeSet<&'static str>,
    query: &BreakdownQuery,
    threads: usize,
) -> Result<Option<Grouper>, StoreError> {
    let share = BreakdownQuery {
        max_groups: query.max_groups / threads,
        ..query.clone()
    };
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let groups_full = AtomicBool::new(false);
    let parts: Vec<Result<Grouper, StoreError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut grouper = share.grouper();
                    while !stop.load(Ordering::Relaxed) {
                        let Some(unit) = units.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        if let Err(error) = read(unit, wanted, query, &mut grouper, &groups_full) {
                            stop.store(true, Ordering::Relaxed);
                            return Err(error);
                        }
                    }
                    Ok(grouper)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker.join().unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(
                        "a breakdown scan thread panicked".to_string(),
                    ))
                })
            })
            .collect()
    });
    if groups_full.load(Ordering::Relaxed) {
        return Ok(None);
    }
    // Parts hold at most the bound together, so their merge fits it.
    let mut merged = query.grouper();
    for part in parts {
        merged.merge(part?).map_err(limit)?;
    }
    Ok(Some(merged))
}

fn limit(error: impl std::fmt::Display) -> StoreError {
    StoreError::Limit(error.to_string())
}

/// The row groups whose statistics allow an event in scope, in file order.
fn prune(files: Vec<Arc<RawFile>>, query: &BreakdownQuery) -> Result<Vec<Unit>, StoreError> {
    let mut units = Vec::new();
    for file in files {
        let (_, metadata) = file.open()?;
        let timestamp = leaf_index(&metadata, columns::TIMESTAMP);
        let tenant = leaf_index(&metadata, columns::TENANT);
        for (row_group, group) in metadata.metadata().row_groups().iter().enumerate() {
            let in_time = timestamp
                .and_then(|leaf| int_bounds(group.column(leaf).statistics()))
                .is_none_or(|(min, max)| max >= query.from_ms && min < query.to_ms);
            let of_tenant = match (&query.tenant, tenant) {
                (Some(wanted), Some(leaf)) => {
                    may_hold_text(group.column(leaf).statistics(), wanted)
                }
                _ => true,
            };
            if in_time && of_tenant {
                units.push(Unit {
                    file: Arc::clone(&file),
                    metadata: metadata.clone(),
                    row_group,
                });
            }
        }
    }
    Ok(units)
}

/// Reads the `wanted` columns of one row group into `grouper`; past the grouper's
/// bound, sets `groups_full` as well as answering the limit.
fn read(
    unit: &Unit,
    wanted: &BTreeSet<&'static str>,
    query: &BreakdownQuery,
    grouper: &mut Grouper,
    groups_full: &AtomicBool,
) -> Result<(), StoreError> {
    let malformed = |error: &dyn std::fmt::Display| {
        StoreError::Malformed(format!("{}: {error}", unit.file.path.display()))
    };
    let schema = unit.metadata.metadata().file_metadata().schema_descr_ptr();
    let roots = schema.root_schema().get_fields();
    // A column every file has must be there: a file without it is malformed, not a
    // file whose events lack the field.
    if let Some(missing) = wanted.iter().find(|name| {
        !OPTIONAL_SINCE_V2.contains(name) && !roots.iter().any(|field| field.name() == **name)
    }) {
        return Err(malformed(&format!("column {missing} is missing")));
    }
    let projected = roots
        .iter()
        .enumerate()
        .filter(|(_, field)| wanted.contains(field.name()))
        .map(|(root, _)| root);
    // A descriptor of its own: threads reading row groups of one file through clones
    // of one descriptor would share its offset, and read each other's pages.
    let (file, _) = unit.file.open()?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, unit.metadata.clone())
        .with_projection(ProjectionMask::roots(&schema, projected))
        .with_row_groups(vec![unit.row_group])
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(|error| malformed(&error))?;
    for batch in reader {
        if Instant::now() >= query.deadline {
            return Err(query.timed_out());
        }
        let batch = batch.map_err(|error| malformed(&error))?;
        EventsView::new(&batch).for_each_event(
            |tenant, timestamp_ms| query.in_scope(tenant, timestamp_ms),
            |tenant, event| {
                grouper.add_event(tenant, event).map_err(|error| {
                    groups_full.store(true, Ordering::Relaxed);
                    limit(error)
                })
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use ais_model::dimension::{Dimension, Filters};
    use ais_model::{Event, EventId, Status};
    use ais_rollup::breakdown::OrderBy;
    use parquet::arrow::ArrowWriter;

    use super::*;
    use crate::raw::columns::EventColumns;
    use crate::raw::file::{writer_properties, FileOptions};

    /// One file of many small row groups, read by every thread at once: the answer is
    /// brute force's, every time.
    #[test]
    fn threads_reading_row_groups_of_one_file_answer_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.parquet");
        let events: Vec<Event<'static>> = (0..12_000u64)
            .map(|n| Event {
                user_id: Some(Cow::Owned(format!("user-{}", n % 97))),
                endpoint: (n % 5 != 0).then(|| Cow::Owned(format!("/e{}", n % 7))),
                cost_micros: Some(n),
                status: if n % 11 == 0 {
                    Status::Error
                } else {
                    Status::Ok
                },
                ..Event::new(
                    "m",
                    EventId::Generated(u128::from(n)),
                    1_000 + n as i64,
                    5.0,
                )
            })
            .collect();
        let mut columns = EventColumns::with_capacity(events.len());
        for event in &events {
            columns.push("t", event).expect("push");
        }
        let rows = columns.finish().expect("columns");
        let properties = writer_properties(FileOptions {
            zstd_level: 1,
            row_group_rows: 500,
        })
        .expect("properties");
        let mut writer = ArrowWriter::try_new(
            std::fs::File::create(&path).expect("create"),
            rows.schema(),
            Some(properties),
        )
        .expect("writer");
        writer.write(&rows).expect("write");
        writer.close().expect("close");
        let bytes = std::fs::metadata(&path).expect("metadata").len();
        let file = Arc::new(RawFile::new(
            1,
            path,
            0,
            (1_000, 13_000),
            12_000,
            bytes,
            true,
        ));

        let mut want: BTreeMap<Vec<Option<String>>, (u64, u64, u64)> = BTreeMap::new();
        for event in &events {
            let key = vec![
                event.endpoint.as_deref().map(str::to_string),
                event.user_id.as_deref().map(str::to_string),
            ];
            let group = want.entry(key).or_default();
            group.0 += 1;
            group.1 += u64::from(event.status == Status::Error);
            group.2 += event.cost_micros.unwrap_or(0);
        }
        for _ in 0..5 {
            let query = BreakdownQuery {
                tenant: Some("t".to_string()),
                from_ms: 0,
                to_ms: 20_000,
                by: vec![Dimension::Endpoint, Dimension::UserId],
                filters: Filters::default(),
                step_ms: None,
                max_groups: 10_000,
                deadline: Instant::now() + Duration::from_secs(300),
            };
            let ranked = scan(vec![Arc::clone(&file)], &query).expect("scan").rank(
                OrderBy::Requests,
                false,
                usize::MAX,
            );
            let got: BTreeMap<Vec<Option<String>>, (u64, u64, u64)> = ranked
                .groups
                .iter()
                .map(|(key, partial)| {
                    (
                        key.clone(),
                        (partial.requests, partial.errors, partial.cost_micros),
                    )
                })
                .collect();
            assert_eq!(got, want);
        }
    }
}
