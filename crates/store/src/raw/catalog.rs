//! The in-memory view of the registered raw-event files.
//!
//! SQLite's `raw_files` table is the truth; this is its copy in memory, updated right
//! after each transaction that changes the table, so queries find files without a
//! database round trip and keep each file's Parquet footer parsed.
//!
//! A query takes a snapshot: a list of `Arc<RawFile>`. Compaction and retention remove
//! files from the catalog and mark them obsolete, and an obsolete file is deleted from
//! disk when its last `Arc` goes, that is, when the last query reading it is done. So a
//! query never sees a file vanish under it, and never sees a compacted hour twice or
//! not at all: a snapshot holds either the small files or the compacted one.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};

use super::file::io_error;
use crate::StoreError;

/// One registered file.
#[derive(Debug)]
pub struct RawFile {
    /// Row id in `raw_files`.
    pub id: i64,
    /// Absolute path.
    pub path: PathBuf,
    pub hour_ms: i64,
    pub min_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub rows: u64,
    pub bytes: u64,
    /// Written by compaction (else by one stream batch).
    pub compacted: bool,
    metadata: OnceLock<ArrowReaderMetadata>,
    obsolete: AtomicBool,
}

impl RawFile {
    pub fn new(
        id: i64,
        path: PathBuf,
        hour_ms: i64,
        (min_timestamp_ms, max_timestamp_ms): (i64, i64),
        rows: u64,
        bytes: u64,
        compacted: bool,
    ) -> Self {
        Self {
            id,
            path,
            hour_ms,
            min_timestamp_ms,
            max_timestamp_ms,
            rows,
            bytes,
            compacted,
            metadata: OnceLock::new(),
            obsolete: AtomicBool::new(false),
        }
    }

    /// Opens the file and its parsed footer (parsed once per file, then shared).
    pub fn open(&self) -> Result<(File, ArrowReaderMetadata), StoreError> {
        let file = File::open(&self.path).map_err(io_error(&self.path))?;
        if let Some(metadata) = self.metadata.get() {
            return Ok((file, metadata.clone()));
        }
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|error| StoreError::Malformed(format!("{}: {error}", self.path.display())))?;
        Ok((file, self.metadata.get_or_init(|| metadata).clone()))
    }

    /// Whether the file has payload columns (files of events without payloads, and files
    /// whose payloads retention dropped, have none).
    pub fn has_payloads(&self) -> Result<bool, StoreError> {
        let (_, metadata) = self.open()?;
        Ok(metadata
            .schema()
            .fields()
            .iter()
            .any(|field| super::columns::PAYLOAD_COLUMNS.contains(&field.name().as_str())))
    }

    fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for RawFile {
    fn drop(&mut self) {
        if !self.obsolete.load(Ordering::Acquire) {
            return;
        }
        if let Err(error) = std::fs::remove_file(&self.path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                // The catalog no longer lists it; the next start-up sweep removes it.
                tracing::warn!(file = %self.path.display(), %error, "cannot delete a replaced raw-event file");
            }
        }
    }
}

/// Totals for metrics and readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogStats {
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub struct Catalog {
    files: RwLock<BTreeMap<i64, Arc<RawFile>>>,
}

impl Catalog {
    pub fn new(files: Vec<RawFile>) -> Self {
        let map = files
            .into_iter()
            .map(|file| (file.id, Arc::new(file)))
            .collect();
        Self {
            files: RwLock::new(map),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<i64, Arc<RawFile>>> {
        // A panic while holding the lock leaves a consistent map (every update is a
        // single insert or remove loop over owned values), so poisoning is ignored.
        self.files
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<i64, Arc<RawFile>>> {
        self.files
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Files holding events in `[from_ms, to_ms)`, by their recorded time span.
    pub fn snapshot(&self, from_ms: i64, to_ms: i64) -> Vec<Arc<RawFile>> {
        self.read()
            .values()
            .filter(|file| file.max_timestamp_ms >= from_ms && file.min_timestamp_ms < to_ms)
            .cloned()
            .collect()
    }

    /// Every file of the hours before `before_hour_ms` (exclusive), for retention.
    pub fn hours_before(&self, before_hour_ms: i64) -> Vec<Arc<RawFile>> {
        self.read()
            .values()
            .filter(|file| file.hour_ms < before_hour_ms)
            .cloned()
            .collect()
    }

    /// Every file, for compaction planning.
    pub fn all(&self) -> Vec<Arc<RawFile>> {
        self.read().values().cloned().collect()
    }

    pub fn insert(&self, files: Vec<RawFile>) {
        let mut map = self.write();
        for file in files {
            map.insert(file.id, Arc::new(file));
        }
        publish(&map);
    }

    /// Removes `ids` and adds `added`, as one step for queries; removed files are
    /// deleted once no query holds them.
    pub fn replace(&self, ids: &[i64], added: Vec<RawFile>) {
        let mut map = self.write();
        for id in ids {
            if let Some(file) = map.remove(id) {
                file.mark_obsolete();
            }
        }
        for file in added {
            map.insert(file.id, Arc::new(file));
        }
        publish(&map);
    }

    pub fn stats(&self) -> CatalogStats {
        stats_of(&self.read())
    }
}

fn stats_of(map: &BTreeMap<i64, Arc<RawFile>>) -> CatalogStats {
    CatalogStats {
        files: map.len() as u64,
        rows: map.values().map(|file| file.rows).sum(),
        bytes: map.values().map(|file| file.bytes).sum(),
    }
}

/// Exports the totals after a change (a walk over the files, which compaction keeps to
/// about one hour's batches plus a few dozen files per older hour).
fn publish(map: &BTreeMap<i64, Arc<RawFile>>) {
    let stats = stats_of(map);
    metrics::gauge!("ais_store_raw_files").set(stats.files as f64);
    metrics::gauge!("ais_store_raw_bytes").set(stats.bytes as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_is_deleted_when_its_last_reader_is_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.parquet");
        std::fs::write(&path, b"x").expect("write");
        let catalog = Catalog::new(vec![RawFile::new(1, path.clone(), 0, (0, 0), 1, 1, false)]);
        let held = catalog.snapshot(0, 1);
        assert_eq!(held.len(), 1);
        catalog.replace(&[1], Vec::new());
        assert!(catalog.snapshot(0, 1).is_empty());
        assert!(path.exists(), "a query still holds it");
        drop(held);
        assert!(!path.exists(), "deleted with the last holder");
    }

    #[test]
    fn a_file_in_the_catalog_is_never_deleted_by_dropping_a_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.parquet");
        std::fs::write(&path, b"x").expect("write");
        let catalog = Catalog::new(vec![RawFile::new(1, path.clone(), 0, (0, 10), 1, 1, false)]);
        drop(catalog.snapshot(0, 100));
        drop(catalog);
        assert!(path.exists());
    }
}
