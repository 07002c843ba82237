//! The embedded store of a single node: SQLite (bundled), one file.
//!
//! Tables:
//! - `positions(partition, next_offset, watermark_ms, updated_ms)`: where the stream is.
//! - `rollups(tenant, model, minute_ms, partial)`: one merged partial per window; a
//!   commit merges its partials into the stored ones in place, so a query reads one row
//!   per window however many batches touched it.
//! - `dedup(minute_ms, hashes)`: client-set event ids seen, 16 bytes each, one row per
//!   (batch, minute), so rebuilding a 10 M-id dedup window reads a few thousand blobs.
//! - `evaluation(next_window_ms, state)`: the evaluator's position and detector state.
//! - `anomalies(tenant, model, detector, window_start_ms, …)`: alerts, keyed by their
//!   identity so a replayed evaluation stores each once.
//! - `alert_outbox(id, sink, key, payload, attempts, next_attempt_ms)`: alert
//!   transitions waiting for a receiver, queued by the evaluation commit that produced
//!   them, removed when delivered or abandoned.
//! - `raw_files(id, path, hour_ms, …)`: the catalog of raw-event Parquet files in the
//!   events directory ([`crate::raw`]); a file counts only while a row names it.
//! - `dead_letters(log_partition, log_offset, reason, detail, tenant, dead_at_ms,
//!   record)`: records the stream could not process, written by the commit that moves
//!   the position past them (`sqlite/dead_letters.rs`); kept as long as raw events.
//! - `meta(key, value)`: the schema version; `sqlite/schema.rs` holds the migrations.
//!
//! A batch's raw events are written first, as durable Parquet files; then the one
//! transaction registers them with the rollups and the position. Compaction writes the
//! merged file, then swaps the catalog rows in one transaction; retention unregisters
//! whole hours. The in-memory catalog follows each transaction while the writer
//! connection is still held, so it changes in the same order as the table.
//!
//! Each [`Store::commit`] is one transaction that also moves the position, in WAL
//! journal mode with `synchronous=FULL`: when it returns, it survives a crash or power
//! loss, and a crash before it leaves nothing of it. Queries use a second connection,
//! so they read the last committed state without waiting behind a commit.
//!
//! SQLite calls block; every trait method runs them on tokio's blocking pool, with each
//! connection behind a mutex. Rollup partials are opaque blobs here: merging and the
//! stored form belong to [`ais_rollup::RollupPartial`] (`merge`, `to_bytes`,
//! `from_bytes`), so the store never interprets a metric.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ais_rollup::RollupPartial;
use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::raw::catalog::CatalogStats;
use crate::raw::{PendingFile, RawEvents, RegisteredFile};
use crate::{
    AnomalyQuery, AnomalyRecord, AnomalyState, BatchCommit, CompactionReport, DedupEntry,
    EvaluationCommit, EventQuery, OutboxAlert, OutboxEntry, OutboxOutcome, PartitionState,
    Retention, RollupQuery, RollupRow, Store, StoreError, StoredEvent,
};

mod dead_letters;
mod raw_files;
mod schema;

pub use schema::SCHEMA_VERSION;

/// Bytes of one dedup hash in a `dedup.hashes` blob.
const HASH_BYTES: usize = 16;

/// Settings of the SQLite engine. Durability is not among them: `synchronous=FULL` and
/// WAL are what let a returned commit free log segments, so they are fixed.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// How long a statement waits for a lock held by another connection (a reader
    /// mid-checkpoint, another process on the same file) before failing as busy.
    pub busy_timeout: Duration,
    /// Directory of the raw-event Parquet files; `None`: `events/` beside the SQLite
    /// file.
    pub events_dir: Option<PathBuf>,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            events_dir: None,
        }
    }
}

/// The SQLite engine of [`Store`].
///
/// Cloning shares the connections. Dropping the last clone closes them; no explicit
/// close is needed for durability, since every commit is durable when it returns.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    /// The one connection that writes: SQLite allows one writer at a time anyway, and a
    /// single connection keeps its statement cache warm for the commit path.
    writer: Arc<Mutex<Connection>>,
    /// A read-only connection for queries: in WAL mode it reads the last committed
    /// snapshot while a commit is in progress on the writer.
    reader: Arc<Mutex<Connection>>,
    /// The raw-event files and their in-memory catalog.
    raw: Arc<RawEvents>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn backend(context: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |error| StoreError::Backend(format!("{context}: {error}"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// SQLite integers are signed; offsets above `i64::MAX` cannot occur in practice (a
/// log would need 9·10^18 records) and are refused rather than wrapped.
fn offset_to_sql(offset: u64) -> Result<i64, StoreError> {
    i64::try_from(offset).map_err(|_| StoreError::Malformed(format!("offset {offset} too large")))
}

/// A stored offset is never negative; one that is means the file was edited or
/// corrupted, and guessing 0 would replay the whole log into the rollups.
fn offset_from_sql(partition: u32, stored: i64) -> Result<u64, StoreError> {
    u64::try_from(stored).map_err(|_| {
        StoreError::Malformed(format!(
            "position of partition {partition} is negative ({stored})"
        ))
    })
}

fn unavailable(path: &Path, what: &str, error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot open {} {what}: {error}", path.display()))
}

impl SqliteStore {
    /// Opens or creates the store at `path` with default settings, creating or
    /// upgrading its schema. Blocks for the file I/O: call it before serving, or from
    /// a blocking task.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_config(path, &SqliteConfig::default())
    }

    /// [`SqliteStore::open`] with explicit settings.
    pub fn open_with_config(path: &Path, config: &SqliteConfig) -> Result<Self, StoreError> {
        let display_path = path.display().to_string();
        let mut writer =
            Connection::open(path).map_err(|error| unavailable(path, "for writing", error))?;
        writer
            .busy_timeout(config.busy_timeout)
            .map_err(backend("setting the busy timeout"))?;
        // The pragma answers the mode it got: a file system without shared memory
        // (some network mounts) keeps the rollback journal. Commits stay durable and
        // atomic there; only queries then wait behind commits.
        let journal_mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(backend("enabling the write-ahead log"))?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %display_path, journal_mode, "SQLite cannot use WAL here; queries will wait behind commits");
        }
        writer
            .execute_batch("PRAGMA synchronous = FULL;")
            .map_err(backend("configuring SQLite"))?;
        schema::migrate(&mut writer, &display_path)?;

        let events_dir = config.events_dir.clone().unwrap_or_else(|| {
            path.parent()
                .map_or_else(|| PathBuf::from("events"), |dir| dir.join("events"))
        });
        let (raw, missing) = RawEvents::open(events_dir, raw_files::load(&writer)?)?;
        if !missing.is_empty() {
            let transaction = writer
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("starting the catalog repair"))?;
            raw_files::unregister(&transaction, &missing)?;
            transaction
                .commit()
                .map_err(backend("committing the catalog repair"))?;
        }

        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|error| unavailable(path, "for reading", error))?;
        reader
            .busy_timeout(config.busy_timeout)
            .map_err(backend("setting the reader's busy timeout"))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            raw: Arc::new(raw),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the raw-event Parquet files are.
    pub fn events_dir(&self) -> &Path {
        self.raw.dir()
    }

    /// Registered raw-event files, rows and bytes right now (no I/O).
    pub fn raw_stats(&self) -> CatalogStats {
        self.raw.catalog().stats()
    }

    async fn with_writer<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || {
            let mut guard = connection
                .lock()
                .map_err(|_| StoreError::Unavailable("writer connection poisoned".to_string()))?;
            work(&mut guard)
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("store task failed: {error}")))?
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let guard = connection
                .lock()
                .map_err(|_| StoreError::Unavailable("reader connection poisoned".to_string()))?;
            work(&guard)
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("store task failed: {error}")))?
    }
}

/// One batch as one immediate transaction: position check, rollups merged in place,
/// dedup ids, new position. Any error drops the transaction, which rolls it back, so a
/// refused or failed batch leaves nothing behind.
fn apply(
    connection: &mut Connection,
    batch: &BatchCommit,
    files: &[PendingFile],
) -> Result<Vec<RegisteredFile>, StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("starting a commit"))?;
    let expected = stored_position(&transaction, batch.partition)?;
    // A batch ending before it starts is a caller bug; refusing it as out of order
    // makes the stream stop instead of retrying it forever.
    if batch.first_offset != expected || batch.next_offset < batch.first_offset {
        return Err(StoreError::OutOfOrder {
            partition: batch.partition,
            first_offset: batch.first_offset,
            expected,
        });
    }
    {
        let mut select = transaction
            .prepare_cached(
                "SELECT partial FROM rollups WHERE tenant = ?1 AND model = ?2 AND minute_ms = ?3",
            )
            .map_err(backend("preparing the rollup read"))?;
        let mut upsert = transaction
            .prepare_cached(
                "INSERT OR REPLACE INTO rollups (tenant, model, minute_ms, partial) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(backend("preparing the rollup write"))?;
        // Read, merge, write back per key rather than merging the batch in memory
        // first: a key repeated within the batch still merges correctly, since the
        // read sees this transaction's own earlier write.
        for (key, partial) in &batch.partials {
            let existing: Option<Vec<u8>> = select
                .query_row(params![key.tenant, key.model, key.minute_ms], |row| {
                    row.get(0)
                })
                .optional()
                .map_err(backend("reading a rollup"))?;
            let bytes = match existing {
                Some(bytes) => {
                    let mut merged = RollupPartial::from_bytes(&bytes).map_err(|error| {
                        StoreError::Malformed(format!(
                            "rollup of {}/{} at {}: {error}",
                            key.tenant, key.model, key.minute_ms
                        ))
                    })?;
                    merged.merge(partial);
                    merged.to_bytes()
                }
                None => partial.to_bytes(),
            };
            upsert
                .execute(params![key.tenant, key.model, key.minute_ms, bytes])
                .map_err(backend("writing a rollup"))?;
        }

        // One blob per minute of event time in this batch.
        let mut by_minute: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        for entry in &batch.dedup {
            by_minute
                .entry(entry.minute_ms)
                .or_default()
                .extend_from_slice(&entry.hash.to_le_bytes());
        }
        let mut insert_dedup = transaction
            .prepare_cached("INSERT INTO dedup (minute_ms, hashes) VALUES (?1, ?2)")
            .map_err(backend("preparing the dedup write"))?;
        for (minute_ms, hashes) in by_minute {
            insert_dedup
                .execute(params![minute_ms, hashes])
                .map_err(backend("writing dedup ids"))?;
        }
    }
    transaction
        .execute(
            "INSERT OR REPLACE INTO positions (partition, next_offset, watermark_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                batch.partition,
                offset_to_sql(batch.next_offset)?,
                batch.watermark_ms,
                now_ms()
            ],
        )
        .map_err(backend("writing the position"))?;
    dead_letters::insert(&transaction, &batch.dead_letters)?;
    let registered = raw_files::register(&transaction, files)?;
    transaction.commit().map_err(backend("committing"))?;
    Ok(registered)
}

/// The stored next offset of a partition (0 when it has none).
/// Adds alert transitions to the outbox (once per (sink, key)), then trims it to
/// `limit` entries, oldest first; returns how many were dropped.
fn queue_alerts(
    transaction: &rusqlite::Transaction<'_>,
    alerts: &[OutboxAlert],
    limit: usize,
) -> Result<u64, StoreError> {
    if alerts.is_empty() {
        return Ok(0);
    }
    let mut insert = transaction
        .prepare_cached(
            "INSERT OR IGNORE INTO alert_outbox (sink, key, payload, attempts, next_attempt_ms)
             VALUES (?1, ?2, ?3, 0, 0)",
        )
        .map_err(backend("preparing the outbox write"))?;
    for alert in alerts {
        insert
            .execute(params![alert.sink, alert.key, alert.payload])
            .map_err(backend("queueing an alert"))?;
    }
    let entries: i64 = transaction
        .query_row("SELECT COUNT(*) FROM alert_outbox", [], |row| row.get(0))
        .map_err(backend("counting the outbox"))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let excess = entries.saturating_sub(limit);
    if excess <= 0 {
        return Ok(0);
    }
    let dropped = transaction
        .execute(
            "DELETE FROM alert_outbox WHERE id IN (SELECT id FROM alert_outbox ORDER BY id LIMIT ?1)",
            [excess],
        )
        .map_err(backend("trimming the outbox"))?;
    Ok(dropped as u64)
}

/// Sets `ais_alert_outbox_entries` from the table.
fn record_outbox_size(connection: &Connection) -> Result<(), StoreError> {
    let entries: i64 = connection
        .query_row("SELECT COUNT(*) FROM alert_outbox", [], |row| row.get(0))
        .map_err(backend("counting the outbox"))?;
    metrics::gauge!("ais_alert_outbox_entries").set(entries as f64);
    Ok(())
}

fn stored_position(connection: &Connection, partition: u32) -> Result<u64, StoreError> {
    let stored: Option<i64> = connection
        .query_row(
            "SELECT next_offset FROM positions WHERE partition = ?1",
            [partition],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend("reading the position"))?;
    stored.map_or(Ok(0), |stored| offset_from_sql(partition, stored))
}

/// One batch: refuse early when out of order (no files written for nothing), write
/// its raw events, then the transaction that makes them count.
fn commit_batch(
    connection: &mut Connection,
    raw: &RawEvents,
    batch: &BatchCommit,
) -> Result<(), StoreError> {
    let expected = stored_position(connection, batch.partition)?;
    if batch.first_offset != expected {
        return Err(StoreError::OutOfOrder {
            partition: batch.partition,
            first_offset: batch.first_offset,
            expected,
        });
    }
    let files = raw.write_batch(batch.partition, batch.first_offset, &batch.events)?;
    match apply(connection, batch, &files) {
        Ok(registered) => {
            let added = registered
                .into_iter()
                .map(|entry| raw.registered(entry))
                .collect();
            raw.catalog().insert(added);
            Ok(())
        }
        Err(error) => {
            raw.discard(&files);
            Err(error)
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn keeps_dead_letters(&self) -> bool {
        true
    }

    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError> {
        // Through the writer: a stream resuming after this call must see the position
        // of every commit that returned, with no snapshot in between.
        self.with_writer(|connection| {
            let mut statement = connection
                .prepare(
                    "SELECT partition, next_offset, watermark_ms FROM positions ORDER BY partition",
                )
                .map_err(backend("reading positions"))?;
            let rows = statement
                .query_map([], |row| {
                    Ok((row.get::<_, u32>(0)?, row.get::<_, i64>(1)?, row.get(2)?))
                })
                .map_err(backend("reading positions"))?;
            let mut states = Vec::new();
            for row in rows {
                let (partition, next_offset, watermark_ms) =
                    row.map_err(backend("reading positions"))?;
                states.push(PartitionState {
                    partition,
                    next_offset: offset_from_sql(partition, next_offset)?,
                    watermark_ms,
                });
            }
            Ok(states)
        })
        .await
    }

    async fn commit(&self, batch: BatchCommit) -> Result<(), StoreError> {
        // Timed from the call, so the histogram includes the wait for the writer.
        let started = Instant::now();
        let raw = Arc::clone(&self.raw);
        let outcome = self
            .with_writer(move |connection| commit_batch(connection, &raw, &batch))
            .await;
        crate::record_commit(&outcome, started);
        outcome
    }

    async fn dedup_entries(&self, since_minute_ms: i64) -> Result<Vec<DedupEntry>, StoreError> {
        self.with_reader(move |connection| {
            let mut statement = connection
                .prepare("SELECT minute_ms, hashes FROM dedup WHERE minute_ms >= ?1")
                .map_err(backend("reading dedup ids"))?;
            let mut rows = statement
                .query([since_minute_ms])
                .map_err(backend("reading dedup ids"))?;
            let mut entries = Vec::new();
            while let Some(row) = rows.next().map_err(backend("reading dedup ids"))? {
                // Borrow the blob in place: at 10 M ids, copying each blob first
                // would double the bytes moved.
                let minute_ms: i64 = row.get(0).map_err(backend("reading dedup ids"))?;
                let hashes = row
                    .get_ref(1)
                    .and_then(|value| value.as_blob().map_err(rusqlite::Error::from))
                    .map_err(backend("reading dedup ids"))?;
                if hashes.len() % HASH_BYTES != 0 {
                    return Err(StoreError::Malformed(format!(
                        "dedup blob of minute {minute_ms} has {} bytes, not a multiple of {HASH_BYTES}",
                        hashes.len()
                    )));
                }
                entries.reserve(hashes.len() / HASH_BYTES);
                for chunk in hashes.chunks_exact(HASH_BYTES) {
                    let mut bytes = [0u8; HASH_BYTES];
                    bytes.copy_from_slice(chunk);
                    entries.push(DedupEntry {
                        hash: u128::from_le_bytes(bytes),
                        minute_ms,
                    });
                }
            }
            Ok(entries)
        })
        .await
    }

    async fn rollups(&self, query: RollupQuery) -> Result<Vec<RollupRow>, StoreError> {
        self.with_reader(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT model, minute_ms, partial FROM rollups
                     WHERE tenant = ?1 AND minute_ms >= ?2 AND minute_ms < ?3
                       AND (?4 IS NULL OR model = ?4)
                     ORDER BY model, minute_ms",
                )
                .map_err(backend("reading rollups"))?;
            let mut rows = statement
                .query(params![
                    query.tenant,
                    query.from_ms,
                    query.to_ms,
                    query.model
                ])
                .map_err(backend("reading rollups"))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(backend("reading rollups"))? {
                let model: String = row.get(0).map_err(backend("reading rollups"))?;
                let minute_ms: i64 = row.get(1).map_err(backend("reading rollups"))?;
                let bytes: Vec<u8> = row.get(2).map_err(backend("reading rollups"))?;
                let partial = RollupPartial::from_bytes(&bytes).map_err(|error| {
                    StoreError::Malformed(format!("rollup of {model} at {minute_ms}: {error}"))
                })?;
                out.push(RollupRow {
                    model,
                    minute_ms,
                    partial,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn rollups_all_tenants(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, RollupRow)>, StoreError> {
        self.with_reader(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT tenant, model, minute_ms, partial FROM rollups
                     WHERE minute_ms >= ?1 AND minute_ms < ?2
                     ORDER BY minute_ms, tenant, model",
                )
                .map_err(backend("reading rollups"))?;
            let mut rows = statement
                .query(params![from_ms, to_ms])
                .map_err(backend("reading rollups"))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(backend("reading rollups"))? {
                let tenant: String = row.get(0).map_err(backend("reading rollups"))?;
                let model: String = row.get(1).map_err(backend("reading rollups"))?;
                let minute_ms: i64 = row.get(2).map_err(backend("reading rollups"))?;
                let bytes: Vec<u8> = row.get(3).map_err(backend("reading rollups"))?;
                let partial = RollupPartial::from_bytes(&bytes).map_err(|error| {
                    StoreError::Malformed(format!("rollup of {model} at {minute_ms}: {error}"))
                })?;
                out.push((
                    tenant,
                    RollupRow {
                        model,
                        minute_ms,
                        partial,
                    },
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn evaluation_state(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        self.with_writer(|connection| {
            connection
                .query_row(
                    "SELECT next_window_ms, state FROM evaluation WHERE id = 1",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(backend("reading the evaluator state"))
        })
        .await
    }

    async fn commit_evaluation(&self, commit: EvaluationCommit) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("starting an evaluation commit"))?;
            {
                let mut insert = transaction
                    .prepare_cached(
                        "INSERT OR IGNORE INTO anomalies
                         (tenant, model, detector, window_start_ms, metric, observed, baseline, score, state, resolved_window_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'firing', NULL)",
                    )
                    .map_err(backend("preparing the anomaly write"))?;
                for anomaly in &commit.fired {
                    insert
                        .execute(params![
                            anomaly.tenant,
                            anomaly.model,
                            anomaly.detector,
                            anomaly.window_start_ms,
                            anomaly.metric,
                            anomaly.observed,
                            anomaly.baseline,
                            anomaly.score
                        ])
                        .map_err(backend("writing an anomaly"))?;
                }
                let mut resolve = transaction
                    .prepare_cached(
                        "UPDATE anomalies SET state = 'resolved', resolved_window_ms = ?4
                         WHERE tenant = ?1 AND model = ?2 AND detector = ?3 AND state = 'firing'",
                    )
                    .map_err(backend("preparing the anomaly resolve"))?;
                for resolution in &commit.resolved {
                    resolve
                        .execute(params![
                            resolution.tenant,
                            resolution.model,
                            resolution.detector,
                            resolution.window_start_ms
                        ])
                        .map_err(backend("resolving an anomaly"))?;
                }
            }
            let dropped = queue_alerts(&transaction, &commit.outbox, commit.outbox_limit)?;
            transaction
                .execute(
                    "INSERT OR REPLACE INTO evaluation (id, next_window_ms, state) VALUES (1, ?1, ?2)",
                    params![commit.next_window_ms, commit.state],
                )
                .map_err(backend("writing the evaluator state"))?;
            transaction.commit().map_err(backend("committing an evaluation"))?;
            if dropped > 0 {
                metrics::counter!("ais_alert_outbox_dropped_total").increment(dropped);
                tracing::warn!(dropped, "alert outbox full: dropped its oldest transitions");
            }
            record_outbox_size(connection)
        })
        .await
    }

    async fn outbox_pending(
        &self,
        sink: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let sink = sink.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_reader(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT id, sink, key, payload, attempts, next_attempt_ms FROM alert_outbox
                     WHERE sink = ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(backend("reading the alert outbox"))?;
            let rows = statement
                .query_map(params![sink, limit], |row| {
                    Ok(OutboxEntry {
                        id: row.get(0)?,
                        sink: row.get(1)?,
                        key: row.get(2)?,
                        payload: row.get(3)?,
                        attempts: row.get(4)?,
                        next_attempt_ms: row.get(5)?,
                    })
                })
                .map_err(backend("reading the alert outbox"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(backend("reading the alert outbox"))
        })
        .await
    }

    async fn outbox_settle(&self, id: i64, outcome: OutboxOutcome) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            match outcome {
                OutboxOutcome::Delivered | OutboxOutcome::Abandoned => connection
                    .execute("DELETE FROM alert_outbox WHERE id = ?1", [id])
                    .map_err(backend("removing an outbox entry"))?,
                OutboxOutcome::Retry {
                    attempts,
                    next_attempt_ms,
                } => connection
                    .execute(
                        "UPDATE alert_outbox SET attempts = ?2, next_attempt_ms = ?3 WHERE id = ?1",
                        params![id, attempts, next_attempt_ms],
                    )
                    .map_err(backend("rescheduling an outbox entry"))?,
            };
            record_outbox_size(connection)
        })
        .await
    }

    async fn anomalies(&self, query: AnomalyQuery) -> Result<Vec<AnomalyRecord>, StoreError> {
        self.with_reader(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT tenant, model, detector, window_start_ms, metric, observed, baseline, score, state, resolved_window_ms
                     FROM anomalies
                     WHERE window_start_ms >= ?1 AND window_start_ms < ?2
                       AND (?3 IS NULL OR tenant = ?3) AND (?4 IS NULL OR model = ?4)
                     ORDER BY window_start_ms DESC, tenant, model, detector",
                )
                .map_err(backend("reading anomalies"))?;
            let rows = statement
                .query_map(params![query.from_ms, query.to_ms, query.tenant, query.model], |row| {
                    let state: String = row.get(8)?;
                    Ok(AnomalyRecord {
                        tenant: row.get(0)?,
                        model: row.get(1)?,
                        detector: row.get(2)?,
                        window_start_ms: row.get(3)?,
                        metric: row.get(4)?,
                        observed: row.get(5)?,
                        baseline: row.get(6)?,
                        score: row.get(7)?,
                        state: if state == "resolved" { AnomalyState::Resolved } else { AnomalyState::Firing },
                        resolved_window_ms: row.get(9)?,
                    })
                })
                .map_err(backend("reading anomalies"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend("reading anomalies"))
        })
        .await
    }

    async fn tenants(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>, StoreError> {
        self.with_reader(move |connection| {
            let mut statement = connection
                .prepare(
                    "SELECT DISTINCT tenant FROM rollups WHERE minute_ms >= ?1 AND minute_ms < ?2 ORDER BY tenant",
                )
                .map_err(backend("reading tenants"))?;
            let rows = statement
                .query_map([from_ms, to_ms], |row| row.get(0))
                .map_err(backend("reading tenants"))?;
            rows.collect::<Result<Vec<String>, _>>()
                .map_err(backend("reading tenants"))
        })
        .await
    }

    async fn apply_retention(&self, retention: Retention) -> Result<(), StoreError> {
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
                dedup_rows_deleted,
                dead_letters_deleted,
                raw_files_deleted = expired_ids.len(),
                "store retention applied"
            );
            Ok(())
        })
        .await
    }

    async fn events(&self, query: EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let raw = Arc::clone(&self.raw);
        let started = Instant::now();
        let found = tokio::task::spawn_blocking(move || {
            let files = raw.catalog().snapshot(query.from_ms, query.to_ms);
            crate::raw::scan::scan(files, &query)
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("event query task failed: {error}")))?;
        metrics::histogram!("ais_store_event_query_seconds")
            .record(started.elapsed().as_secs_f64());
        found
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
            let raw = Arc::clone(&self.raw);
            self.with_writer(move |connection| {
                let swap = (|| {
                    let transaction = connection
                        .transaction_with_behavior(TransactionBehavior::Immediate)
                        .map_err(backend("starting a compaction swap"))?;
                    raw_files::unregister(&transaction, &input_ids)?;
                    let registered = raw_files::register(&transaction, &outputs)?;
                    transaction
                        .commit()
                        .map_err(backend("committing a compaction swap"))?;
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
            .await?;
            report.hours += 1;
            report.files_in += files_in;
            report.files_out += files_out;
            report.rows += rows;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RollupKey;

    fn one_window_batch(first_offset: u64, next_offset: u64) -> BatchCommit {
        BatchCommit {
            partition: 0,
            first_offset,
            next_offset,
            watermark_ms: 0,
            partials: vec![(
                RollupKey {
                    tenant: "a".to_string(),
                    model: "m".to_string(),
                    minute_ms: 0,
                },
                RollupPartial::new(),
            )],
            dedup: Vec::new(),
            events: Vec::new(),
            dead_letters: Vec::new(),
        }
    }

    /// Queries read the last committed snapshot through their own connection while a
    /// write transaction holds the writer: a slow commit never stalls the API.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_do_not_wait_behind_an_open_write_transaction() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("open");
        store
            .commit(one_window_batch(0, 1))
            .await
            .expect("first commit");

        let writer = Arc::clone(&store.writer);
        let (locked_sender, locked_receiver) = std::sync::mpsc::channel();
        let (release_sender, release_receiver) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let mut connection = writer.lock().expect("writer");
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .expect("begin");
            transaction
                .execute("DELETE FROM rollups", [])
                .expect("uncommitted delete");
            locked_sender.send(()).expect("signal");
            // Held until the queries below are done, then rolled back on drop.
            let _ = release_receiver.recv();
        });
        locked_receiver.recv().expect("writer locked");

        let query = RollupQuery {
            tenant: "a".to_string(),
            from_ms: 0,
            to_ms: 60_000,
            model: None,
        };
        let rows = tokio::time::timeout(Duration::from_secs(2), store.rollups(query))
            .await
            .expect("the query did not wait for the writer")
            .expect("rollups");
        assert_eq!(rows.len(), 1, "the uncommitted delete is invisible");
        let tenants = tokio::time::timeout(Duration::from_secs(2), store.tenants(0, 60_000))
            .await
            .expect("the query did not wait for the writer")
            .expect("tenants");
        assert_eq!(tenants, vec!["a".to_string()]);

        release_sender.send(()).expect("release");
        holder.join().expect("holder thread");
        store
            .commit(one_window_batch(1, 2))
            .await
            .expect("the writer is usable after the rollback");
    }

    #[test]
    fn opening_runs_each_migration_once_and_uses_wal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sqlite");
        for _ in 0..3 {
            let store = SqliteStore::open(&path).expect("open");
            let connection = store.writer.lock().expect("writer");
            assert_eq!(
                schema::schema_version(&connection).expect("version"),
                SCHEMA_VERSION
            );
            let mode: String = connection
                .query_row("PRAGMA journal_mode", [], |row| row.get(0))
                .expect("journal mode");
            assert_eq!(mode, "wal");
            // 2 is FULL.
            let synchronous: i64 = connection
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .expect("synchronous");
            assert_eq!(synchronous, 2);
        }
    }

    #[test]
    fn a_file_from_a_newer_binary_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sqlite");
        drop(SqliteStore::open(&path).expect("open"));
        let connection = Connection::open(&path).expect("raw open");
        connection
            .execute(
                "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                [SCHEMA_VERSION + 1],
            )
            .expect("bump version");
        drop(connection);
        let error = SqliteStore::open(&path).expect_err("newer schema");
        assert!(
            matches!(&error, StoreError::Unavailable(message) if message.contains("newer")),
            "{error}"
        );
    }

    #[test]
    fn a_negative_stored_position_is_malformed_not_zero() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sqlite");
        let store = SqliteStore::open(&path).expect("open");
        let mut connection = store.writer.lock().expect("writer");
        connection
            .execute(
                "INSERT INTO positions (partition, next_offset, watermark_ms, updated_ms) VALUES (0, -5, 0, 0)",
                [],
            )
            .expect("corrupt position");
        let error = apply(&mut connection, &one_window_batch(0, 1), &[]).expect_err("malformed");
        assert!(matches!(error, StoreError::Malformed(_)), "{error}");
    }
}
