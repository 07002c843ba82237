//! `GET /v1/events` over the files: prune, then read newest first, stop early.
//!
//! 1. The catalog gives the files whose time span meets the range.
//! 2. Each row group is kept only if its statistics allow a match: timestamp range,
//!    tenant and model bounds, the largest latency against `min_latency_ms`; then, for
//!    `trace_id` and `user_id`, its bloom filter must say "maybe".
//! 3. Surviving row groups are read in order of their newest event, each through a
//!    row filter that evaluates the predicate on the filter columns alone, so the other
//!    columns are decoded only for matching rows.
//! 4. Once `limit` events are held and the next row group's newest event is older
//!    than the oldest held, nothing left can make the answer.
//!
//! The payload columns are read only when the query asks for them: to return them
//! (`include`), or to search them (`q=`). A search is the row filter's last predicate,
//! so it reads the payloads of the rows every other predicate kept, and counts them:
//! past [`PayloadSearch::max_rows`] the scan stops with [`StoreError::Limit`]. A file
//! without payload columns holds no match and is not read for a search.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::ArrowError;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ParquetRecordBatchReaderBuilder, RowFilter,
};
use parquet::arrow::ProjectionMask;
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::statistics::Statistics;

use super::catalog::RawFile;
use super::columns::{self, EventsView};
use crate::{EventQuery, PayloadSearch, StoreError, StoredEvent};

/// Rows decoded per Arrow batch while reading a row group.
pub(super) const READ_BATCH_ROWS: usize = 8192;

pub(super) fn leaf_index(metadata: &ArrowReaderMetadata, name: &str) -> Option<usize> {
    metadata
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|column| column.path().string() == name)
}

/// Leaf column indices of the columns pruning looks at, found once per file.
struct Leaves {
    timestamp: Option<usize>,
    tenant: Option<usize>,
    model: Option<usize>,
    latency: Option<usize>,
    trace_id: Option<usize>,
    user_id: Option<usize>,
    /// Whether the file has a payload column (a search skips files without).
    payloads: bool,
}

impl Leaves {
    fn of(metadata: &ArrowReaderMetadata) -> Self {
        let find = |name| leaf_index(metadata, name);
        Self {
            timestamp: find(columns::TIMESTAMP),
            tenant: find(columns::TENANT),
            model: find(columns::MODEL),
            latency: find(columns::LATENCY_MS),
            trace_id: find(columns::TRACE_ID),
            user_id: find(columns::USER_ID),
            payloads: columns::PAYLOAD_COLUMNS
                .into_iter()
                .any(|name| find(name).is_some()),
        }
    }
}

pub(super) fn int_bounds(statistics: Option<&Statistics>) -> Option<(i64, i64)> {
    match statistics? {
        Statistics::Int64(values) => Some((*values.min_opt()?, *values.max_opt()?)),
        _ => None,
    }
}

/// Could a string column whose chunk has these statistics hold `wanted`? Unknown
/// statistics answer yes. (Truncated bounds stay bounds: min is a prefix, max is
/// rounded up.)
pub(super) fn may_hold_text(statistics: Option<&Statistics>, wanted: &str) -> bool {
    let Some(statistics) = statistics else {
        return true;
    };
    let (Some(min), Some(max)) = (statistics.min_bytes_opt(), statistics.max_bytes_opt()) else {
        return true;
    };
    let wanted = wanted.as_bytes();
    if wanted < min {
        return false;
    }
    if statistics.max_is_exact() {
        wanted <= max
    } else {
        true
    }
}

/// Whether the statistics of one row group allow a match.
fn row_group_may_match(group: &RowGroupMetaData, leaves: &Leaves, query: &EventQuery) -> bool {
    let column = |leaf: Option<usize>| leaf.map(|index| group.column(index));
    if let Some((min, max)) =
        column(leaves.timestamp).and_then(|chunk| int_bounds(chunk.statistics()))
    {
        if max < query.from_ms || min >= query.to_ms {
            return false;
        }
    }
    let text_ok = |leaf: Option<usize>, wanted: &str| {
        column(leaf).is_none_or(|chunk| may_hold_text(chunk.statistics(), wanted))
    };
    if !text_ok(leaves.tenant, &query.tenant) {
        return false;
    }
    if let Some(model) = &query.model {
        if !text_ok(leaves.model, model) {
            return false;
        }
    }
    if let Some(min_latency) = query.min_latency_ms {
        if let Some(Statistics::Double(values)) =
            column(leaves.latency).and_then(|chunk| chunk.statistics())
        {
            if values.max_opt().is_some_and(|max| *max < min_latency) {
                return false;
            }
        }
    }
    true
}

/// Whether the bloom filters of one row group allow the wanted trace and user.
fn bloom_may_match(
    file: &std::fs::File,
    group: &RowGroupMetaData,
    leaves: &Leaves,
    query: &EventQuery,
) -> Result<bool, StoreError> {
    for (name, leaf, wanted) in [
        (columns::TRACE_ID, leaves.trace_id, &query.trace_id),
        (columns::USER_ID, leaves.user_id, &query.user_id),
    ] {
        let (Some(wanted), Some(index)) = (wanted, leaf) else {
            continue;
        };
        let filter = Sbbf::read_from_column_chunk(group.column(index), file)
            .map_err(|error| StoreError::Malformed(format!("bloom filter of {name}: {error}")))?;
        if let Some(filter) = filter {
            if !filter.check(wanted.as_str()) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The per-row predicate over the filter columns.
fn matches(batch: &RecordBatch, query: &EventQuery) -> Result<BooleanArray, ArrowError> {
    let view = EventsView::new(batch);
    let fail = |error: StoreError| ArrowError::ComputeError(error.to_string());
    let tenant = view.strings(columns::TENANT).map_err(fail)?;
    let timestamp = view.timestamps().map_err(fail)?;
    fn text<'b>(
        view: &EventsView<'b>,
        name: &str,
        wanted: &'b Option<String>,
    ) -> Result<Option<(&'b arrow_array::StringArray, &'b str)>, StoreError> {
        wanted
            .as_ref()
            .map(|wanted| view.strings(name).map(|array| (array, wanted.as_str())))
            .transpose()
    }
    let model = text(&view, columns::MODEL, &query.model).map_err(fail)?;
    let trace = text(&view, columns::TRACE_ID, &query.trace_id).map_err(fail)?;
    let user = text(&view, columns::USER_ID, &query.user_id).map_err(fail)?;
    let status = query
        .status
        .map(|status| {
            view.strings(columns::STATUS)
                .map(|array| (array, status.as_str()))
        })
        .transpose()
        .map_err(fail)?;
    let latency = query
        .min_latency_ms
        .map(|min| view.floats(columns::LATENCY_MS).map(|array| (array, min)))
        .transpose()
        .map_err(fail)?;
    let equal = |column: Option<(&arrow_array::StringArray, &str)>, row: usize| {
        column.is_none_or(|(array, wanted)| array.is_valid(row) && array.value(row) == wanted)
    };
    Ok((0..batch.num_rows())
        .map(|row| {
            let at = timestamp.value(row);
            Some(
                tenant.value(row) == query.tenant
                    && at >= query.from_ms
                    && at < query.to_ms
                    && equal(model, row)
                    && equal(trace, row)
                    && equal(user, row)
                    && equal(status, row)
                    && latency.is_none_or(|(array, min)| array.value(row) >= min),
            )
        })
        .collect())
}

/// The drill-down keys alone (`trace_id`, `user_id`): evaluated first, on two
/// columns, so the other filter columns are decoded only for the few rows that carry
/// the key.
fn matches_keys(batch: &RecordBatch, query: &EventQuery) -> Result<BooleanArray, ArrowError> {
    let view = EventsView::new(batch);
    let mut keep = vec![true; batch.num_rows()];
    for (name, wanted) in [
        (columns::TRACE_ID, &query.trace_id),
        (columns::USER_ID, &query.user_id),
    ] {
        let Some(wanted) = wanted else {
            continue;
        };
        let array = view
            .strings(name)
            .map_err(|error| ArrowError::ComputeError(error.to_string()))?;
        for (row, kept) in keep.iter_mut().enumerate() {
            *kept = *kept && array.is_valid(row) && array.value(row) == wanted.as_str();
        }
    }
    Ok(BooleanArray::from(keep))
}

/// The search predicate over the payload columns of the rows the other predicates
/// kept: counts them into `examined`, and fails once past the search's bound (the
/// caller turns that failure into [`PayloadSearch::too_many_rows`]).
fn matches_search(
    batch: &RecordBatch,
    search: &PayloadSearch,
    examined: &AtomicU64,
) -> Result<BooleanArray, ArrowError> {
    let rows = batch.num_rows() as u64;
    if examined.fetch_add(rows, Ordering::Relaxed) + rows > search.max_rows {
        return Err(ArrowError::ComputeError(search.too_many_rows().to_string()));
    }
    let view = EventsView::new(batch);
    let column = |name| {
        batch
            .column_by_name(name)
            .map(|_| view.strings(name))
            .transpose()
            .map_err(|error| ArrowError::ComputeError(error.to_string()))
    };
    let input = column(columns::INPUT)?;
    let output = column(columns::OUTPUT)?;
    fn text(array: Option<&arrow_array::StringArray>, row: usize) -> Option<&str> {
        array.and_then(|array| array.is_valid(row).then(|| array.value(row)))
    }
    Ok((0..batch.num_rows())
        .map(|row| Some(search.matches(text(input, row), text(output, row))))
        .collect())
}

/// Columns the predicate reads.
fn filter_columns(query: &EventQuery) -> Vec<&'static str> {
    let mut names = vec![columns::TENANT, columns::TIMESTAMP];
    if query.model.is_some() {
        names.push(columns::MODEL);
    }
    if query.trace_id.is_some() {
        names.push(columns::TRACE_ID);
    }
    if query.user_id.is_some() {
        names.push(columns::USER_ID);
    }
    if query.status.is_some() {
        names.push(columns::STATUS);
    }
    if query.min_latency_ms.is_some() {
        names.push(columns::LATENCY_MS);
    }
    names
}

struct Candidate {
    file: Arc<RawFile>,
    /// The file opened once for pruning, shared by its row groups' readers.
    handle: Arc<std::fs::File>,
    metadata: ArrowReaderMetadata,
    row_group: usize,
    newest_ms: i64,
}

fn read_row_group(
    candidate: &Candidate,
    query: &EventQuery,
    examined: &Arc<AtomicU64>,
    out: &mut Vec<StoredEvent>,
) -> Result<(), StoreError> {
    let file = candidate
        .handle
        .try_clone()
        .map_err(super::file::io_error(&candidate.file.path))?;
    let schema_descr = candidate
        .metadata
        .metadata()
        .file_metadata()
        .schema_descr_ptr();
    let owned_query = query.clone();
    let mut predicates: Vec<Box<dyn parquet::arrow::arrow_reader::ArrowPredicate>> = Vec::new();
    let keys: Vec<&str> = [
        (columns::TRACE_ID, query.trace_id.is_some()),
        (columns::USER_ID, query.user_id.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, wanted)| wanted.then_some(name))
    .collect();
    if !keys.is_empty() {
        let key_query = query.clone();
        predicates.push(Box::new(ArrowPredicateFn::new(
            ProjectionMask::columns(&schema_descr, keys),
            move |batch| matches_keys(&batch, &key_query),
        )));
    }
    predicates.push(Box::new(ArrowPredicateFn::new(
        ProjectionMask::columns(&schema_descr, filter_columns(query)),
        move |batch| matches(&batch, &owned_query),
    )));
    if let Some(search) = &query.payloads.search {
        let search = search.clone();
        let counter = Arc::clone(examined);
        predicates.push(Box::new(ArrowPredicateFn::new(
            ProjectionMask::columns(&schema_descr, columns::PAYLOAD_COLUMNS),
            move |batch| matches_search(&batch, &search, &counter),
        )));
    }
    let mut builder =
        ParquetRecordBatchReaderBuilder::new_with_metadata(file, candidate.metadata.clone())
            .with_row_groups(vec![candidate.row_group])
            .with_row_filter(RowFilter::new(predicates))
            .with_batch_size(READ_BATCH_ROWS);
    if !query.payloads.include {
        let roots = columns::without_payloads(candidate.metadata.schema());
        builder = builder.with_projection(ProjectionMask::roots(&schema_descr, roots));
    }
    let failed = |error: &dyn std::fmt::Display| match &query.payloads.search {
        Some(search) if examined.load(Ordering::Relaxed) > search.max_rows => {
            search.too_many_rows()
        }
        _ => StoreError::Malformed(format!("{}: {error}", candidate.file.path.display())),
    };
    let reader = builder.build().map_err(|error| failed(&error))?;
    for batch in reader {
        let batch = batch.map_err(|error| failed(&error))?;
        // Dimension filters need whole events: applied once decoded, before the limit.
        out.extend(
            EventsView::new(&batch)
                .events()?
                .into_iter()
                .filter(|stored| query.filters.matches(&stored.tenant, &stored.event)),
        );
    }
    Ok(())
}

/// Newest first; equal times by event id, so the order is stable across reads.
fn newest_first(a: &StoredEvent, b: &StoredEvent) -> std::cmp::Ordering {
    b.event
        .timestamp_ms
        .cmp(&a.event.timestamp_ms)
        .then_with(|| event_id_text(&b.event).cmp(event_id_text(&a.event)))
}

fn event_id_text<'e>(event: &'e ais_model::Event<'_>) -> &'e str {
    match &event.event_id {
        ais_model::EventId::Client(id) => id,
        ais_model::EventId::Generated(_) => "",
    }
}

/// Runs `query` over `files` (a catalog snapshot).
pub fn scan(files: Vec<Arc<RawFile>>, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
    let mut candidates = Vec::new();
    for file in files {
        let (handle, metadata) = file.open()?;
        let handle = Arc::new(handle);
        let leaves = Leaves::of(&metadata);
        for (index, group) in metadata.metadata().row_groups().iter().enumerate() {
            if !row_group_may_match(group, &leaves, query) {
                continue;
            }
            if !bloom_may_match(&handle, group, &leaves, query)? {
                continue;
            }
            if query.payloads.search.is_some() && !leaves.payloads {
                continue;
            }
            let newest_ms = leaves
                .timestamp
                .and_then(|leaf| int_bounds(group.column(leaf).statistics()))
                .map_or(file.max_timestamp_ms, |(_, max)| max);
            candidates.push(Candidate {
                file: Arc::clone(&file),
                handle: Arc::clone(&handle),
                metadata: metadata.clone(),
                row_group: index,
                newest_ms,
            });
        }
    }
    candidates.sort_by_key(|candidate| std::cmp::Reverse(candidate.newest_ms));

    let mut found: Vec<StoredEvent> = Vec::new();
    let examined = Arc::new(AtomicU64::new(0));
    for candidate in &candidates {
        if found.len() >= query.limit {
            let oldest_held = found
                .last()
                .map_or(i64::MIN, |event| event.event.timestamp_ms);
            if candidate.newest_ms < oldest_held {
                break;
            }
        }
        read_row_group(candidate, query, &examined, &mut found)?;
        found.sort_by(newest_first);
        found.truncate(query.limit);
    }
    Ok(found)
}
