//! The scan path of breakdowns over the raw-event files: every event of the range,
//! grouped by any dimension.
//!
//! Files come from the catalog (pruned by time span); row groups are pruned by their
//! timestamp and tenant statistics. What is left is read row group by row group on one
//! thread per core, each into a grouper of its own, merged at the end. Only the columns
//! the grouper reads are decoded ([`Grouper::fields_read`], plus tenant and time for
//! the query's scope). A query whose dimensions and filters are columns of their own
//! and that has no steps is grouped on the arrays themselves ([`super::columnar`]);
//! the others read events that borrow their strings from the decoded batch. Either way
//! a breakdown by `endpoint` never touches trace ids or attributes.
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

use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

use super::catalog::RawFile;
use super::columnar::{self, ColumnarScan};
use super::columns::{self, EventsView};
use super::scan::{int_bounds, leaf_index, may_hold_text, READ_BATCH_ROWS};
use crate::{BreakdownQuery, StoreError};
use ais_rollup::breakdown::Grouper;

/// One row group left after pruning.
struct Unit {
    file: Arc<RawFile>,
    /// The file's footer, with its strings typed as the scan reads them (see
    /// [`columnar`]).
    metadata: ArrowReaderMetadata,
    row_group: usize,
}

/// Groups the events of `files` (a catalog snapshot) in scope of `query`.
pub fn scan(files: Vec<Arc<RawFile>>, query: &BreakdownQuery) -> Result<Grouper, StoreError> {
    let wanted = wanted(query);
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
    let mut part = Part::new(query, query.max_groups);
    for unit in &units {
        part.read(unit, &wanted, query, &AtomicBool::new(false))?;
    }
    Ok(part.into_grouper())
}

/// The columns a scan for `query` decodes: what its grouper reads, and the tenant and
/// time for its scope.
fn wanted(query: &BreakdownQuery) -> BTreeSet<&'static str> {
    let mut wanted = query.grouper().fields_read();
    wanted.extend([columns::TENANT, columns::TIMESTAMP]);
    wanted
}

/// One thread's groups: the columnar path's where it answers the query
/// ([`columnar::answers`]), else a grouper fed event by event.
enum Part {
    Events(Box<Grouper>),
    Columnar(Box<ColumnarScan>),
}

impl Part {
    fn new(query: &BreakdownQuery, max_groups: usize) -> Self {
        match ColumnarScan::new(query, max_groups) {
            Some(columnar) => Self::Columnar(Box::new(columnar)),
            None => Self::Events(Box::new(
                BreakdownQuery {
                    max_groups,
                    ..query.clone()
                }
                .grouper(),
            )),
        }
    }

    /// Reads the `wanted` columns of one row group; past the bound, sets `groups_full`
    /// as well as answering the limit.
    fn read(
        &mut self,
        unit: &Unit,
        wanted: &BTreeSet<&'static str>,
        query: &BreakdownQuery,
        groups_full: &AtomicBool,
    ) -> Result<(), StoreError> {
        for batch in open(unit, wanted)? {
            if Instant::now() >= query.deadline {
                return Err(query.timed_out());
            }
            let batch = batch.map_err(|error| malformed(unit, &error))?;
            let added = match self {
                Self::Events(grouper) => {
                    let mut too_many = None;
                    let read = EventsView::new(&batch).for_each_event(
                        |tenant, timestamp_ms| query.in_scope(tenant, timestamp_ms),
                        |tenant, event| {
                            grouper.add_event(tenant, event).map_err(|error| {
                                too_many = Some(error);
                                limit(error)
                            })
                        },
                    );
                    match (too_many, read) {
                        (Some(error), _) => Err(error),
                        (None, read) => read.map(Ok)?,
                    }
                }
                Self::Columnar(columnar) => columnar.add_batch(&batch, query)?,
            };
            if let Err(too_many) = added {
                groups_full.store(true, Ordering::Relaxed);
                return Err(limit(too_many));
            }
        }
        Ok(())
    }

    fn into_grouper(self) -> Grouper {
        match self {
            Self::Events(grouper) => *grouper,
            Self::Columnar(columnar) => columnar.into_groups().into_grouper(),
        }
    }
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
    let share = query.max_groups / threads;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let groups_full = AtomicBool::new(false);
    let parts: Vec<Result<Grouper, StoreError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut part = Part::new(query, share);
                    while !stop.load(Ordering::Relaxed) {
                        let Some(unit) = units.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        if let Err(error) = part.read(unit, wanted, query, &groups_full) {
                            stop.store(true, Ordering::Relaxed);
                            return Err(error);
                        }
                    }
                    Ok(part.into_grouper())
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
    let coded = columnar::answers(query).then(|| columnar::coded_columns(query));
    let mut units = Vec::new();
    for file in files {
        let (_, metadata) = file.open()?;
        let timestamp = leaf_index(&metadata, columns::TIMESTAMP);
        let tenant = leaf_index(&metadata, columns::TENANT);
        let mut read_as = None;
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
            if !(in_time && of_tenant) {
                continue;
            }
            if read_as.is_none() {
                read_as = Some(match &coded {
                    None => metadata.clone(),
                    Some(coded) => ArrowReaderMetadata::try_new(
                        Arc::clone(metadata.metadata()),
                        ArrowReaderOptions::new()
                            .with_schema(columnar::coded_schema(metadata.schema(), coded)),
                    )
                    .map_err(|error| {
                        StoreError::Malformed(format!("{}: {error}", file.path.display()))
                    })?,
                });
            }
            if let Some(read_as) = &read_as {
                units.push(Unit {
                    file: Arc::clone(&file),
                    metadata: read_as.clone(),
                    row_group,
                });
            }
        }
    }
    Ok(units)
}

fn malformed(unit: &Unit, error: &dyn std::fmt::Display) -> StoreError {
    StoreError::Malformed(format!("{}: {error}", unit.file.path.display()))
}

/// A reader of the `wanted` columns of one row group.
fn open(
    unit: &Unit,
    wanted: &BTreeSet<&'static str>,
) -> Result<ParquetRecordBatchReader, StoreError> {
    let schema = unit.metadata.metadata().file_metadata().schema_descr_ptr();
    let roots = schema.root_schema().get_fields();
    // A column every file has must be there: a file without it is malformed, not a
    // file whose events lack the field.
    if let Some(missing) = wanted.iter().find(|name| {
        !columns::is_optional(name) && !roots.iter().any(|field| field.name() == **name)
    }) {
        return Err(malformed(unit, &format!("column {missing} is missing")));
    }
    let projected = roots
        .iter()
        .enumerate()
        .filter(|(_, field)| wanted.contains(field.name()))
        .map(|(root, _)| root);
    // A descriptor of its own: threads reading row groups of one file through clones
    // of one descriptor would share its offset, and read each other's pages.
    let (file, _) = unit.file.open()?;
    ParquetRecordBatchReaderBuilder::new_with_metadata(file, unit.metadata.clone())
        .with_projection(ProjectionMask::roots(&schema, projected))
        .with_row_groups(vec![unit.row_group])
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(|error| malformed(unit, &error))
}

/// The decode ceiling of [`scan`]: the same row groups and columns read the same way
/// on the same threads, and nothing done with them. Answers the rows decoded. What a
/// benchmark compares a scan with; no query path calls it.
pub fn decode_only(files: Vec<Arc<RawFile>>, query: &BreakdownQuery) -> Result<u64, StoreError> {
    let wanted = wanted(query);
    let units = prune(files, query)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(units.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let counts: Vec<Result<u64, StoreError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut rows = 0u64;
                    while let Some(unit) = units.get(next.fetch_add(1, Ordering::Relaxed)) {
                        for batch in open(unit, &wanted)? {
                            let batch = batch.map_err(|error| malformed(unit, &error))?;
                            rows += batch.num_rows() as u64;
                        }
                    }
                    Ok(rows)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker.join().unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(
                        "a decode thread panicked".to_string(),
                    ))
                })
            })
            .collect()
    });
    counts.into_iter().sum()
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

    /// Events with every way a value can be absent, a user for most, more error
    /// types than a partial names, and values for the sketches' zero bucket.
    fn varied_events() -> Vec<(&'static str, Event<'static>)> {
        (0..6_000u64)
            .map(|n| {
                let tenant = if n % 4 == 0 { "u" } else { "t" };
                let failed = n % 5 == 0;
                let event = Event {
                    user_id: (n % 13 != 0).then(|| Cow::Owned(format!("user-{}", n % 97))),
                    endpoint: (n % 6 != 0).then(|| Cow::Owned(format!("/e{}", n % 7))),
                    region: (n % 2 == 0).then_some(Cow::Borrowed("eu")),
                    ttft_ms: (n % 3 != 0).then_some((n % 400) as f64 / 7.0),
                    input_tokens: (n % 11 != 0).then_some(n * 3),
                    output_tokens: Some(n % 50),
                    cache_read_input_tokens: (n % 2 == 0).then_some(n % 9),
                    cost_micros: (n % 17 != 0).then_some(n * 7),
                    status: if failed { Status::Error } else { Status::Ok },
                    error_type: (failed && n % 3 != 0)
                        .then(|| Cow::Owned(format!("type-{}", n % 45))),
                    ..Event::new(
                        format!("m{}", n % 3),
                        EventId::Generated(u128::from(n)),
                        1_000 + n as i64,
                        if n % 19 == 0 {
                            0.0
                        } else {
                            (n % 3_000) as f64 / 3.0
                        },
                    )
                };
                (tenant, event)
            })
            .collect()
    }

    /// `events` as one file of 500-row groups; `dictionaries: false` writes every
    /// column plain, as a writer past its dictionary size limit does.
    fn file_of(
        dir: &std::path::Path,
        events: &[(&str, Event<'static>)],
        dictionaries: bool,
    ) -> Arc<RawFile> {
        let path = dir.join(format!("events-{dictionaries}.parquet"));
        let mut columns = EventColumns::with_capacity(events.len());
        for (tenant, event) in events {
            columns.push(tenant, event).expect("push");
        }
        let rows = columns.finish().expect("columns");
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(500))
            .set_dictionary_enabled(dictionaries)
            .build();
        let mut writer = ArrowWriter::try_new(
            std::fs::File::create(&path).expect("create"),
            rows.schema(),
            Some(properties),
        )
        .expect("writer");
        writer.write(&rows).expect("write");
        writer.close().expect("close");
        let bytes = std::fs::metadata(&path).expect("metadata").len();
        Arc::new(RawFile::new(
            1,
            path,
            0,
            (1_000, 7_000),
            events.len() as u64,
            bytes,
            true,
        ))
    }

    /// Every metric of every group and of the total, the means included: what depends
    /// on the order values came in must match too, read in the same order.
    fn answer(grouper: Grouper) -> Vec<String> {
        let ranked = grouper.rank(OrderBy::Requests, false, usize::MAX);
        let metrics = |partial: &ais_rollup::RollupPartial| {
            format!(
                "{} {} {:?} {} {} {} {} {:?} {:?} {} {:?} {:?} {} {}",
                partial.requests,
                partial.errors,
                partial.errors_by_type,
                partial.input_tokens,
                partial.output_tokens,
                partial.cache_read_input_tokens,
                partial.cost_micros,
                partial.latency_quantiles(),
                partial.latency_ms.mean(),
                partial.ttft_ms.count(),
                partial.ttft_quantiles(),
                partial.ttft_ms.mean(),
                partial.unique_users(),
                partial.late_events,
            )
        };
        let mut lines: Vec<String> = ranked
            .groups
            .iter()
            .map(|(key, partial)| format!("{key:?}: {}", metrics(partial)))
            .collect();
        lines.push(format!("total: {}", metrics(&ranked.total)));
        lines
    }

    /// The columnar path answers exactly as events added one by one do, over coded and
    /// plain columns alike, for one, two and no dimensions, with and without filters
    /// and a tenant.
    #[test]
    fn the_columnar_path_answers_as_events_added_one_by_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = varied_events();
        let dimensions = |names: &[&str]| -> Vec<Dimension> {
            names
                .iter()
                .map(|name| Dimension::parse(name).expect("dimension"))
                .collect()
        };
        let filters = |texts: &[&str]| {
            Filters(
                texts
                    .iter()
                    .map(|text| ais_model::dimension::Filter::parse(text).expect("filter"))
                    .collect(),
            )
        };
        let cases = [
            (Some("t"), dimensions(&["user_id"]), Filters::default()),
            (None, dimensions(&["user_id"]), filters(&["region:eu"])),
            (Some("t"), dimensions(&["endpoint"]), Filters::default()),
            (
                Some("u"),
                dimensions(&["model", "user_id"]),
                filters(&["status:error"]),
            ),
            (
                None,
                dimensions(&["tenant", "endpoint"]),
                filters(&["endpoint:!/e1|null"]),
            ),
            (Some("t"), dimensions(&["status"]), Filters::default()),
            (None, Vec::new(), filters(&["model:m1|m2"])),
        ];
        for dictionaries in [true, false] {
            let file = file_of(dir.path(), &events, dictionaries);
            for (tenant, by, filters) in &cases {
                let query = BreakdownQuery {
                    tenant: tenant.map(str::to_string),
                    // Cuts the first and last events off.
                    from_ms: 1_100,
                    to_ms: 6_900,
                    by: by.clone(),
                    filters: filters.clone(),
                    step_ms: None,
                    max_groups: 10_000,
                    deadline: Instant::now() + Duration::from_secs(300),
                };
                let units = prune(vec![Arc::clone(&file)], &query).expect("prune");
                let wanted = wanted(&query);
                let mut columnar = Part::new(&query, query.max_groups);
                assert!(matches!(columnar, Part::Columnar(_)), "{by:?} is columnar");
                let mut one_by_one = Part::Events(Box::new(query.grouper()));
                for unit in &units {
                    columnar
                        .read(unit, &wanted, &query, &AtomicBool::new(false))
                        .expect("columnar");
                }
                // The event path reads the file as it is, strings plain.
                let plain = prune(
                    vec![Arc::clone(&file)],
                    &BreakdownQuery {
                        by: dimensions(&["attr.feature"]),
                        ..query.clone()
                    },
                )
                .expect("prune");
                for unit in &plain {
                    one_by_one
                        .read(unit, &wanted, &query, &AtomicBool::new(false))
                        .expect("events");
                }
                let want = answer(one_by_one.into_grouper());
                assert!(want.len() > 1, "{by:?} selects events");
                assert_eq!(
                    answer(columnar.into_grouper()),
                    want,
                    "{by:?} {filters:?}, dictionaries {dictionaries}"
                );
            }
        }
    }

    /// Past a thread's share of the bound, the scan tries again on one thread; past
    /// the whole bound it answers the limit, on the columnar path as on the other.
    #[test]
    fn the_columnar_path_keeps_the_group_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = varied_events();
        let file = file_of(dir.path(), &events, true);
        let query = |max_groups| BreakdownQuery {
            tenant: None,
            from_ms: 0,
            to_ms: 10_000,
            by: vec![Dimension::UserId],
            filters: Filters::default(),
            step_ms: None,
            max_groups,
            deadline: Instant::now() + Duration::from_secs(300),
        };
        // 97 users and the events without one.
        let fits = scan(vec![Arc::clone(&file)], &query(98)).expect("fits the bound");
        assert_eq!(fits.len(), 98);
        assert!(matches!(
            scan(vec![file], &query(97)),
            Err(StoreError::Limit(_))
        ));
    }
}
