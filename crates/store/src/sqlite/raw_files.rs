//! The `raw_files` table: the catalog that decides which Parquet files count.

use rusqlite::{params, Connection, Transaction};

use super::backend;
use crate::raw::{relative_text, PendingFile, RegisteredFile};
use crate::StoreError;

fn to_sql(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Malformed(format!("{what} {value} too large")))
}

/// Every registered file.
pub fn load(connection: &Connection) -> Result<Vec<RegisteredFile>, StoreError> {
    let mut statement = connection
        .prepare(
            "SELECT id, path, hour_ms, min_timestamp_ms, max_timestamp_ms, rows, bytes, compacted
             FROM raw_files ORDER BY id",
        )
        .map_err(backend("reading the raw-file catalog"))?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, i64>(6)?,
                row.get::<_, bool>(7)?,
            ))
        })
        .map_err(backend("reading the raw-file catalog"))?;
    let mut files = Vec::new();
    for row in rows {
        let (id, path, hour_ms, min_ms, max_ms, count, bytes, compacted) =
            row.map_err(backend("reading the raw-file catalog"))?;
        let unsigned = |value: i64, what: &str| {
            u64::try_from(value).map_err(|_| {
                StoreError::Malformed(format!("raw file {path}: negative {what} ({value})"))
            })
        };
        files.push(RegisteredFile {
            id,
            pending: PendingFile {
                relative: path.clone().into(),
                hour_ms,
                span_ms: (min_ms, max_ms),
                rows: unsigned(count, "row count")?,
                bytes: unsigned(bytes, "size")?,
                compacted,
            },
        });
    }
    Ok(files)
}

/// Registers `files` inside `transaction`; returns them with their ids.
pub fn register(
    transaction: &Transaction<'_>,
    files: &[PendingFile],
) -> Result<Vec<RegisteredFile>, StoreError> {
    let mut insert = transaction
        .prepare_cached(
            "INSERT INTO raw_files
               (path, hour_ms, min_timestamp_ms, max_timestamp_ms, rows, bytes, compacted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(backend("preparing the raw-file registration"))?;
    let mut registered = Vec::with_capacity(files.len());
    for file in files {
        insert
            .execute(params![
                relative_text(file),
                file.hour_ms,
                file.span_ms.0,
                file.span_ms.1,
                to_sql(file.rows, "row count")?,
                to_sql(file.bytes, "size")?,
                file.compacted,
            ])
            .map_err(backend("registering a raw-event file"))?;
        registered.push(RegisteredFile {
            id: transaction.last_insert_rowid(),
            pending: file.clone(),
        });
    }
    Ok(registered)
}

/// Unregisters files by id; fails when one is no longer registered, so a swap never
/// applies on top of a catalog that changed under it.
pub fn unregister(transaction: &Transaction<'_>, ids: &[i64]) -> Result<(), StoreError> {
    let mut delete = transaction
        .prepare_cached("DELETE FROM raw_files WHERE id = ?1")
        .map_err(backend("preparing the raw-file removal"))?;
    for id in ids {
        let removed = delete
            .execute([id])
            .map_err(backend("unregistering a raw-event file"))?;
        if removed != 1 {
            return Err(StoreError::Backend(format!(
                "raw-event file {id} is no longer registered"
            )));
        }
    }
    Ok(())
}
