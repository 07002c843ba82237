//! Raw events on one node: Parquet files under one directory, one per stream batch and
//! hour, compacted per hour once the hour is final. Payload retention rewrites the files
//! of older hours without their payload columns ([`RawEvents::without_payloads`]), and
//! swaps them in as compaction swaps its outputs.
//!
//! - [`columns`]: the Arrow schema and the conversions between events and columns.
//! - [`file`]: layout (`dt=…/hour=…/`), writer properties (zstd, statistics, bloom
//!   filters) and durable writes (temporary name, fsync, rename).
//! - [`catalog`]: the in-memory list of registered files, and deletion of replaced
//!   files once no query reads them.
//! - [`scan`]: the drill-down query, and the payload search (`q=`).
//! - [`breakdown`]: breakdown scans, through [`columnar`] where the query allows.
//!
//! The SQLite engine decides what counts: a file becomes visible only when the
//! transaction that commits its batch (rollups, position) registers it in `raw_files`,
//! and compaction swaps small files for the compacted one in one transaction. Anything
//! in the directory that the catalog does not list (a batch that crashed before its
//! commit, a compaction that crashed before its swap, a replaced file a crash kept) is
//! deleted at start by [`RawEvents::open`].

pub mod breakdown;
pub mod catalog;
mod columnar;
pub mod columns;
pub mod file;
pub mod scan;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ais_model::{wire, Event};
use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use catalog::{Catalog, RawFile};
use columns::EventColumns;
use file::{
    hour_dir, hour_of, io_error, DurableDirs, DurableWriter, BATCH_FILE, COMPACTED_FILE, HOUR_MS,
};

use crate::{LoggedRecord, StoreError};

/// Rows per compacted file: large enough that an hour at a million events a minute is
/// a few dozen files, small enough that one file is quick to copy or re-read.
pub const COMPACTED_FILE_ROWS: u64 = 4 * 1024 * 1024;
/// Hours compacted per maintenance pass, oldest first: bounds one pass's time.
pub const HOURS_PER_COMPACTION_PASS: usize = 4;
/// Files rewritten without their payloads per maintenance pass, oldest first: bounds
/// one pass's time (compacted files are up to [`COMPACTED_FILE_ROWS`] rows each).
pub const FILES_PER_PAYLOAD_PASS: usize = 8;

/// One batch's raw events as columns, one record batch per hour of event time (a
/// batch writes one file per hour), in hour order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HourColumns(Vec<HourBatch>);

#[derive(Debug, Clone, PartialEq)]
struct HourBatch {
    hour_ms: i64,
    /// Oldest and newest event time of the rows.
    span_ms: (i64, i64),
    batch: RecordBatch,
}

impl HourColumns {
    /// Decodes wire records into columns.
    pub fn of_records(partition: u32, records: &[LoggedRecord]) -> Result<Self, StoreError> {
        let mut builder = HourColumnsBuilder::with_capacity(records.len());
        for record in records {
            let (tenant, event) = wire::decode(&record.bytes).map_err(|error| {
                StoreError::Malformed(format!(
                    "raw event at offset {} of partition {partition}: {error}",
                    record.offset
                ))
            })?;
            builder.push(tenant, &event).map_err(columns_error)?;
        }
        builder.finish().map_err(columns_error)
    }

    /// The record batch when all rows are in one hour.
    pub fn single(&self) -> Option<&RecordBatch> {
        match self.0.as_slice() {
            [hour] => Some(&hour.batch),
            _ => None,
        }
    }
}

fn columns_error(error: ArrowError) -> StoreError {
    StoreError::Backend(format!("building raw columns: {error}"))
}

/// Builds [`HourColumns`] an event at a time.
struct HourColumnsBuilder {
    by_hour: BTreeMap<i64, EventColumns>,
    /// Rows each hour's builders are first sized for: the batch's, as nearly every
    /// batch is within one hour.
    capacity: usize,
}

impl HourColumnsBuilder {
    fn with_capacity(rows: usize) -> Self {
        Self {
            by_hour: BTreeMap::new(),
            capacity: rows,
        }
    }

    fn push(&mut self, tenant: &str, event: &Event<'_>) -> Result<(), ArrowError> {
        self.by_hour
            .entry(hour_of(event.timestamp_ms))
            .or_insert_with(|| EventColumns::with_capacity(self.capacity))
            .push(tenant, event)
    }

    fn finish(self) -> Result<HourColumns, ArrowError> {
        let mut hours = Vec::with_capacity(self.by_hour.len());
        for (hour_ms, columns) in self.by_hour {
            let span_ms = columns.time_span_ms();
            let with_payloads = columns.has_payloads();
            let mut batch = columns.finish()?;
            if !with_payloads {
                // No column chunks of nulls where capture is off or sampled every
                // payload out: payload retention then has nothing to rewrite.
                batch = batch.project(&columns::without_payloads(&batch.schema()))?;
            }
            hours.push(HourBatch {
                hour_ms,
                span_ms,
                batch,
            });
        }
        Ok(HourColumns(hours))
    }
}

/// A file written and made durable, not yet registered.
#[derive(Debug, Clone)]
pub struct PendingFile {
    /// Path relative to the events directory (what the catalog table stores).
    pub relative: PathBuf,
    pub hour_ms: i64,
    pub span_ms: (i64, i64),
    pub rows: u64,
    pub bytes: u64,
    pub compacted: bool,
}

/// A row of the catalog table.
#[derive(Debug, Clone)]
pub struct RegisteredFile {
    pub id: i64,
    pub pending: PendingFile,
}

/// One hour's small files, to be merged.
#[derive(Debug)]
pub struct CompactionPlan {
    pub hour_ms: i64,
    pub inputs: Vec<Arc<RawFile>>,
}

#[derive(Debug)]
pub struct RawEvents {
    dir: PathBuf,
    catalog: Catalog,
    durable_dirs: DurableDirs,
}

fn relative_name(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

impl RawEvents {
    /// Opens the directory with the files the catalog table lists, deleting every
    /// other file in it (see the module doc). A listed file that is missing is
    /// reported and dropped from the catalog: its events are gone, and pretending
    /// otherwise would fail every query that touches its hour.
    pub fn open(
        dir: PathBuf,
        registered: Vec<RegisteredFile>,
    ) -> Result<(Self, Vec<i64>), StoreError> {
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let mut missing = Vec::new();
        let mut files = Vec::new();
        for entry in registered {
            let path = dir.join(&entry.pending.relative);
            if !path.exists() {
                tracing::error!(file = %path.display(), rows = entry.pending.rows, "a registered raw-event file is missing; its events cannot be served");
                missing.push(entry.id);
                continue;
            }
            files.push(RawFile::new(
                entry.id,
                path,
                entry.pending.hour_ms,
                entry.pending.span_ms,
                entry.pending.rows,
                entry.pending.bytes,
                entry.pending.compacted,
            ));
        }
        let keep: HashSet<PathBuf> = files.iter().map(|file| file.path.clone()).collect();
        let swept = sweep(&dir, &keep)?;
        if swept > 0 {
            tracing::info!(dir = %dir.display(), files = swept, "deleted raw-event files no commit registered");
        }
        Ok((
            Self {
                dir,
                catalog: Catalog::new(files),
                durable_dirs: DurableDirs::default(),
            },
            missing,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The registered file for a catalog row.
    pub fn registered(&self, entry: RegisteredFile) -> RawFile {
        RawFile::new(
            entry.id,
            self.dir.join(&entry.pending.relative),
            entry.pending.hour_ms,
            entry.pending.span_ms,
            entry.pending.rows,
            entry.pending.bytes,
            entry.pending.compacted,
        )
    }

    /// Writes one stream batch's events as one file per hour of event time, durable
    /// when this returns. Names derive from (partition, first offset), so a retried
    /// batch rewrites its own files instead of leaving extra ones.
    ///
    /// The records are decoded here, in the commit, although the roll-up decoded them
    /// already: the commit runs beside the next batch's roll-up, the stream's critical
    /// path on two cores, and building the columns in the roll-up instead made events
    /// visible later (bench/RESULTS.md, "each record decoded once: measured, not kept").
    pub fn write_batch(
        &self,
        partition: u32,
        first_offset: u64,
        records: &[LoggedRecord],
    ) -> Result<Vec<PendingFile>, StoreError> {
        let hours = HourColumns::of_records(partition, records)?;
        let mut written = Vec::with_capacity(hours.0.len());
        for hour in &hours.0 {
            let relative =
                hour_dir(hour.hour_ms).join(format!("p{partition}-{first_offset:020}.parquet"));
            let mut writer = DurableWriter::create_as(
                self.dir.join(&relative),
                BATCH_FILE,
                hour.batch.schema(),
            )?;
            if let Err(error) = writer.write(&hour.batch) {
                writer.abandon();
                return Err(error);
            }
            let bytes = writer.finish(&self.durable_dirs)?;
            written.push(PendingFile {
                relative,
                hour_ms: hour.hour_ms,
                span_ms: hour.span_ms,
                rows: hour.batch.num_rows() as u64,
                bytes,
                compacted: false,
            });
        }
        Ok(written)
    }

    /// Removes files written for a commit that then failed (best effort: the start-up
    /// sweep catches what this misses).
    pub fn discard(&self, files: &[PendingFile]) {
        for file in files {
            let _ = std::fs::remove_file(self.dir.join(&file.relative));
        }
    }

    /// Hours that are final (they end at or before `final_before_ms`) with two or more
    /// files below the compacted size, oldest first, at most
    /// [`HOURS_PER_COMPACTION_PASS`].
    pub fn plan_compaction(&self, final_before_ms: i64) -> Vec<CompactionPlan> {
        let mut by_hour: BTreeMap<i64, Vec<Arc<RawFile>>> = BTreeMap::new();
        for file in self.catalog.all() {
            if file.hour_ms + HOUR_MS <= final_before_ms && file.rows < COMPACTED_FILE_ROWS {
                by_hour.entry(file.hour_ms).or_default().push(file);
            }
        }
        by_hour
            .into_iter()
            .filter(|(_, inputs)| inputs.len() >= 2)
            .take(HOURS_PER_COMPACTION_PASS)
            .map(|(hour_ms, mut inputs)| {
                inputs.sort_by_key(|file| file.id);
                CompactionPlan { hour_ms, inputs }
            })
            .collect()
    }

    /// Merges a plan's inputs into new files of at most [`COMPACTED_FILE_ROWS`] rows,
    /// streaming row group by row group (memory stays at about one row group). The
    /// outputs are durable and unregistered: the caller swaps them in.
    pub fn compact(&self, plan: &CompactionPlan) -> Result<Vec<PendingFile>, StoreError> {
        // Payload columns when any input has them; older inputs lack newer columns,
        // merged as nulls.
        let mut schema = columns::schema_without_payloads();
        for input in &plan.inputs {
            if input.has_payloads()? {
                schema = columns::schema();
            }
        }
        let mut outputs = Vec::new();
        let mut current: Option<(PathBuf, DurableWriter, (i64, i64))> = None;
        let result = (|| {
            for input in &plan.inputs {
                let (handle, metadata) = input.open()?;
                let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(handle, metadata)
                    .with_batch_size(file::COMPACTED_FILE.row_group_rows)
                    .build()
                    .map_err(|error| {
                        StoreError::Malformed(format!("{}: {error}", input.path.display()))
                    })?;
                for batch in reader {
                    let batch = batch.map_err(|error| {
                        StoreError::Malformed(format!("{}: {error}", input.path.display()))
                    })?;
                    let span = time_span(&batch)?;
                    if current.is_none() {
                        let relative = hour_dir(plan.hour_ms)
                            .join(format!("c-{}.parquet", uuid::Uuid::now_v7().simple()));
                        let writer = DurableWriter::create_as(
                            self.dir.join(&relative),
                            COMPACTED_FILE,
                            schema.clone(),
                        )?;
                        current = Some((relative, writer, (i64::MAX, i64::MIN)));
                    }
                    if let Some((_, writer, file_span)) = current.as_mut() {
                        writer.write(&columns::conform(&batch, &schema)?)?;
                        *file_span = (file_span.0.min(span.0), file_span.1.max(span.1));
                        if writer.rows() as u64 >= COMPACTED_FILE_ROWS {
                            if let Some((relative, writer, span_ms)) = current.take() {
                                outputs.push(self.finish_output(relative, writer, span_ms, plan)?);
                            }
                        }
                    }
                }
            }
            if let Some((relative, writer, span_ms)) = current.take() {
                outputs.push(self.finish_output(relative, writer, span_ms, plan)?);
            }
            Ok(())
        })();
        if let Err(error) = result {
            if let Some((_, writer, _)) = current.take() {
                writer.abandon();
            }
            self.discard(&outputs);
            return Err(error);
        }
        Ok(outputs)
    }

    /// Files of hours before `before_hour_ms` that still have payload columns, oldest
    /// first, at most [`FILES_PER_PAYLOAD_PASS`].
    pub fn plan_payload_retention(
        &self,
        before_hour_ms: i64,
    ) -> Result<Vec<Arc<RawFile>>, StoreError> {
        let mut files = self.catalog.hours_before(before_hour_ms);
        files.sort_by_key(|file| (file.hour_ms, file.id));
        let mut planned = Vec::new();
        for file in files {
            if planned.len() >= FILES_PER_PAYLOAD_PASS {
                break;
            }
            if file.has_payloads()? {
                planned.push(file);
            }
        }
        Ok(planned)
    }

    /// `file` rewritten without its payload columns, streaming row group by row group
    /// (the payload pages are never decoded). Durable and unregistered: the caller
    /// swaps it in.
    pub fn without_payloads(&self, file: &RawFile) -> Result<PendingFile, StoreError> {
        let relative = hour_dir(file.hour_ms).join(format!(
            "{}-{}.parquet",
            if file.compacted { "c" } else { "r" },
            uuid::Uuid::now_v7().simple()
        ));
        let options = if file.compacted {
            COMPACTED_FILE
        } else {
            BATCH_FILE
        };
        let schema = columns::schema_without_payloads();
        let mut writer =
            DurableWriter::create_as(self.dir.join(&relative), options, schema.clone())?;
        let result = (|| {
            let (handle, metadata) = file.open()?;
            let roots = columns::without_payloads(metadata.schema());
            let mask = parquet::arrow::ProjectionMask::roots(
                metadata.metadata().file_metadata().schema_descr(),
                roots,
            );
            let malformed = |error: &dyn std::fmt::Display| {
                StoreError::Malformed(format!("{}: {error}", file.path.display()))
            };
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(handle, metadata)
                .with_projection(mask)
                .with_batch_size(options.row_group_rows)
                .build()
                .map_err(|error| malformed(&error))?;
            for batch in reader {
                let batch = batch.map_err(|error| malformed(&error))?;
                writer.write(&columns::conform(&batch, &schema)?)?;
            }
            Ok(())
        })();
        if let Err(error) = result {
            writer.abandon();
            return Err(error);
        }
        let rows = writer.rows() as u64;
        let bytes = writer.finish(&self.durable_dirs)?;
        Ok(PendingFile {
            relative,
            hour_ms: file.hour_ms,
            span_ms: (file.min_timestamp_ms, file.max_timestamp_ms),
            rows,
            bytes,
            compacted: file.compacted,
        })
    }

    fn finish_output(
        &self,
        relative: PathBuf,
        writer: DurableWriter,
        span_ms: (i64, i64),
        plan: &CompactionPlan,
    ) -> Result<PendingFile, StoreError> {
        let rows = writer.rows() as u64;
        let bytes = writer.finish(&self.durable_dirs)?;
        Ok(PendingFile {
            relative,
            hour_ms: plan.hour_ms,
            span_ms,
            rows,
            bytes,
            compacted: true,
        })
    }
}

fn time_span(batch: &arrow_array::RecordBatch) -> Result<(i64, i64), StoreError> {
    let timestamps = columns::EventsView::new(batch).timestamps()?;
    let mut span = (i64::MAX, i64::MIN);
    for value in timestamps.values().iter() {
        span = (span.0.min(*value), span.1.max(*value));
    }
    Ok(span)
}

/// Deletes every file under `dir` not in `keep`, and empty directories; returns how
/// many files it deleted.
fn sweep(dir: &Path, keep: &HashSet<PathBuf>) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_error(&path))?;
        if kind.is_dir() {
            deleted += sweep(&path, keep)?;
            // Only succeeds when empty; a directory with kept files stays.
            let _ = std::fs::remove_dir(&path);
        } else if !keep.contains(&path) {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Removes the empty hour and date directories left after files were deleted.
pub fn remove_empty_dirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_empty_dirs(&path);
            let _ = std::fs::remove_dir(&path);
        }
    }
}

/// The catalog table's text form of a relative path.
pub fn relative_text(file: &PendingFile) -> String {
    relative_name(&file.relative)
}
