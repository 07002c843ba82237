//! Writing raw-event Parquet files: layout, properties and durability.
//!
//! Layout under the events directory: `dt=YYYY-MM-DD/hour=HH/NAME.parquet` (UTC, the
//! hour of the events' timestamps), Hive-style so DuckDB, Polars and Spark read the
//! hour as a column too. A file is written as `NAME.parquet.tmp`, fsync'd, renamed and
//! its directory fsync'd: a reader never sees a partial file under a `.parquet` name,
//! and a file that exists after a crash is whole. Whether it *counts* is the catalog's
//! decision (the SQLite transaction that registers it), never the directory's.
//!
//! Properties: zstd; statistics per page, so readers skip row groups and pages by
//! time, tenant, model or latency; split-block bloom filters on `trace_id` and
//! `user_id` (sized to the row group, then folded to the values actually seen), so a
//! drill-down by either reads only the row groups that may hold it; no dictionary for
//! the columns that are unique per event, where it would only cost time. The payload
//! columns have neither dictionary nor statistics: they are unique per event, no query
//! prunes by them, and statistics would copy prompt text into the file's footer.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::columns;
use crate::StoreError;

pub const HOUR_MS: i64 = 3_600_000;

/// How a file is written.
#[derive(Debug, Clone, Copy)]
pub struct FileOptions {
    /// zstd level: low for the short-lived per-batch files, higher when compacting.
    pub zstd_level: i32,
    /// Rows per row group: the unit a query reads or skips.
    pub row_group_rows: usize,
}

/// Per-batch files: they live until their hour is compacted, so speed beats size.
pub const BATCH_FILE: FileOptions = FileOptions {
    zstd_level: 1,
    row_group_rows: 128 * 1024,
};

/// Compacted files: written once per hour, read for the whole retention.
pub const COMPACTED_FILE: FileOptions = FileOptions {
    zstd_level: 3,
    row_group_rows: 128 * 1024,
};

/// False-positive rate of the bloom filters: 1% keeps a filter near 10 bits per
/// distinct value, so a miss costs about one extra row group read in a hundred.
const BLOOM_FPP: f64 = 0.01;

pub fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::Backend(format!("{}: {error}", path.display()))
}

fn parquet_error(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> StoreError + '_ {
    move |error| StoreError::Backend(format!("writing {}: {error}", path.display()))
}

/// The hour (unix ms, aligned) an event time belongs to. Total: a time so far in the
/// past that its hour's start is not an `i64` gets `i64::MIN` (only an invalid event
/// can have one, and the ledger still counts it).
pub fn hour_of(timestamp_ms: i64) -> i64 {
    timestamp_ms.saturating_sub(timestamp_ms.rem_euclid(HOUR_MS))
}

/// `dt=YYYY-MM-DD/hour=HH` of an hour.
pub fn hour_dir(hour_ms: i64) -> PathBuf {
    let seconds = hour_ms.div_euclid(1000);
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(instant) => PathBuf::from(format!(
            "dt={:04}-{:02}-{:02}",
            instant.year(),
            u8::from(instant.month()),
            instant.day()
        ))
        .join(format!("hour={:02}", instant.hour())),
        // Validation keeps event times within years of now; a time outside what
        // `time` represents still gets a stable, distinct directory.
        Err(_) => PathBuf::from(format!("dt=unix-{hour_ms}")),
    }
}

pub fn writer_properties(options: FileOptions) -> Result<WriterProperties, StoreError> {
    let level = ZstdLevel::try_new(options.zstd_level)
        .map_err(|error| StoreError::Backend(format!("zstd level: {error}")))?;
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(options.row_group_rows))
        .set_created_by("ais".to_string());
    for column in [columns::TRACE_ID, columns::USER_ID] {
        builder = builder
            .set_column_bloom_filter_enabled(ColumnPath::from(column), true)
            .set_column_bloom_filter_fpp(ColumnPath::from(column), BLOOM_FPP);
    }
    for column in [columns::EVENT_ID, "span_id"] {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    for column in columns::PAYLOAD_COLUMNS {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(column), false)
            .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    Ok(builder.build())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(dir))
}

/// Hour directories whose own entry (and the `dt=` entry above it) is known to be on
/// disk: a directory listed here needs only itself synced after a rename, not its
/// parents, so a batch pays one directory fsync, not three.
#[derive(Debug, Default)]
pub struct DurableDirs {
    known: Mutex<HashSet<PathBuf>>,
}

impl DurableDirs {
    fn is_known(&self, dir: &Path) -> bool {
        self.known
            .lock()
            .map(|known| known.contains(dir))
            .unwrap_or(false)
    }

    fn learn(&self, dir: &Path) {
        if let Ok(mut known) = self.known.lock() {
            known.insert(dir.to_path_buf());
        }
    }
}

/// Writes Parquet to a temporary name, then makes it durable under `path`.
pub struct DurableWriter {
    path: PathBuf,
    temporary: PathBuf,
    writer: ArrowWriter<File>,
    rows: usize,
}

impl DurableWriter {
    /// A writer of the full schema ([`columns::schema`]).
    pub fn create(path: PathBuf, options: FileOptions) -> Result<Self, StoreError> {
        Self::create_as(path, options, columns::schema())
    }

    /// A writer of `schema`: the full one, or the one without payloads.
    pub fn create_as(
        path: PathBuf,
        options: FileOptions,
        schema: arrow_schema::SchemaRef,
    ) -> Result<Self, StoreError> {
        let dir = path
            .parent()
            .ok_or_else(|| StoreError::Backend(format!("{} has no directory", path.display())))?;
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut temporary = path.clone().into_os_string();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let file = File::create(&temporary).map_err(io_error(&temporary))?;
        let writer = ArrowWriter::try_new(file, schema, Some(writer_properties(options)?))
            .map_err(parquet_error(&temporary))?;
        Ok(Self {
            path,
            temporary,
            writer,
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        self.rows += batch.num_rows();
        self.writer
            .write(batch)
            .map_err(parquet_error(&self.temporary))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Closes, fsyncs and renames the file; returns its size in bytes.
    pub fn finish(self, dirs: &DurableDirs) -> Result<u64, StoreError> {
        let file = self
            .writer
            .into_inner()
            .map_err(parquet_error(&self.temporary))?;
        file.sync_all().map_err(io_error(&self.temporary))?;
        let bytes = file.metadata().map_err(io_error(&self.temporary))?.len();
        drop(file);
        std::fs::rename(&self.temporary, &self.path).map_err(io_error(&self.path))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
            // An hour directory this process has not made durable yet (it may have
            // just been created) must survive too: sync its parents up to `dt=`.
            if !dirs.is_known(dir) {
                if let Some(date_dir) = dir.parent() {
                    sync_dir(date_dir)?;
                    if let Some(events_dir) = date_dir.parent() {
                        sync_dir(events_dir)?;
                    }
                }
                dirs.learn(dir);
            }
        }
        Ok(bytes)
    }

    /// Gives up: the temporary file is removed (a crash leaves it to the start-up sweep).
    pub fn abandon(self) {
        drop(self.writer);
        let _ = std::fs::remove_file(&self.temporary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_map_to_hive_directories() {
        // 2026-11-22T10:00:00Z
        let hour = 1_795_341_600_000;
        assert_eq!(hour_of(hour + 59 * 60_000 + 59_999), hour);
        assert_eq!(hour_of(hour), hour);
        assert_eq!(hour_of(hour - 1), hour - HOUR_MS);
        assert_eq!(hour_dir(hour), PathBuf::from("dt=2026-11-22/hour=10"));
        assert_eq!(hour_dir(0), PathBuf::from("dt=1970-01-01/hour=00"));
    }
}
