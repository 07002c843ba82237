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
//!   the position past them and read back as the store's dead-letter source
//!   (`sqlite/dead_letters.rs`); kept as long as raw events.
//! - `claims(partition, claim, claimed_ms)`: each partition's newest claim
//!   ([`crate::BatchSink::claim`]); the commit's transaction refuses a handle holding an
//!   older one, so a stream process that lost its partitions cannot commit to them.
//! - `ledger(tenant, hour_ms, partition, accepted, committed, …)`: what became of every
//!   record the stream read ([`crate::ledger`]), added to by each batch's transaction.
//! - `meta(key, value)`: the schema version; `sqlite/schema.rs` holds the migrations.
//!
//! A batch's raw events are written first, as durable Parquet files; then the one
//! transaction registers them with the rollups and the position. Compaction writes the
//! merged file, then swaps the catalog rows in one transaction; retention unregisters
//! whole hours. The in-memory catalog follows each transaction while the writer
//! connection is still held, so it changes in the same order as the table.
//!
//! Each [`crate::BatchSink::commit`] is one transaction that also moves the position, in WAL
//! journal mode with `synchronous=FULL`: when it returns, it survives a crash or power
//! loss, and a crash before it leaves nothing of it. Queries use a second connection,
//! so they read the last committed state without waiting behind a commit.
//!
//! The trait implementations are laid out by role (`batch`, `query`, `evaluation`,
//! `outbox`, `maintenance`), as the traits are in the crate root. SQLite calls block;
//! every trait method runs them on tokio's blocking pool, with each
//! connection behind a mutex. Rollup partials are opaque blobs here: merging and the
//! stored form belong to [`ais_rollup::RollupPartial`] (`merge`, `to_bytes`,
//! `from_bytes`), so the store never interprets a metric.

use ais_model::time::unix_now_ms as now_ms;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::raw::catalog::CatalogStats;
use crate::raw::RawEvents;
use crate::StoreError;

mod batch;
mod dead_letters;
mod dimensions;
mod evaluation;
mod ledger;
mod maintenance;
mod outbox;
mod query;
mod raw_files;
mod schema;
mod usage;

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

/// The SQLite engine of [`crate::Store`].
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
    /// A read-only connection of maintenance's own (the long reads of merging
    /// dimension rollups' hours), which the evaluator's reads of budgets' spend share.
    maintenance_reader: Arc<Mutex<Connection>>,
    /// The raw-event files and their in-memory catalog.
    raw: Arc<RawEvents>,
    /// The partitions this handle claimed, and with which claim (fencing).
    held: Arc<crate::batch::HeldClaims>,
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

        let open_reader = || -> Result<Arc<Mutex<Connection>>, StoreError> {
            let reader = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|error| unavailable(path, "for reading", error))?;
            reader
                .busy_timeout(config.busy_timeout)
                .map_err(backend("setting the reader's busy timeout"))?;
            Ok(Arc::new(Mutex::new(reader)))
        };
        Ok(Self {
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(writer)),
            reader: open_reader()?,
            maintenance_reader: open_reader()?,
            raw: Arc::new(raw),
            held: Arc::default(),
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

    /// Runs `work` on the queries' read connection.
    async fn with_reader<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::read_on(Arc::clone(&self.reader), work).await
    }

    /// Runs `work` on maintenance's read connection, so long reads of maintenance
    /// hold neither the writer nor the queries' reader.
    async fn with_maintenance_reader<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::read_on(Arc::clone(&self.maintenance_reader), work).await
    }

    async fn read_on<T: Send + 'static>(
        connection: Arc<Mutex<Connection>>,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
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
#[cfg(test)]
mod tests {
    use super::batch::apply;
    use super::*;
    use crate::{BatchCommit, BatchSink, QueryStore, RollupKey, RollupQuery};
    use ais_rollup::RollupPartial;

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
            dimensions: Default::default(),
            ledger: Vec::new(),
            usage: Vec::new(),
        }
    }

    fn endpoint_batch(first_offset: u64, minute_ms: i64, events: u64) -> BatchCommit {
        let mut partial = RollupPartial::new();
        partial.requests = events;
        BatchCommit {
            partials: Vec::new(),
            dimensions: crate::DimensionPartials {
                max_values_per_minute: 10,
                partials: vec![(
                    ais_rollup::dimensions::DimensionKey {
                        tenant: "a".to_string(),
                        dimension: "endpoint".to_string(),
                        minute_ms,
                        value: ais_rollup::dimensions::DimensionValue::Value("/x".to_string()),
                    },
                    partial,
                )],
            },
            ..one_window_batch(first_offset, first_offset + 1)
        }
    }

    /// Requests in (minute rows, hour rows) of dimension rollups.
    fn dimension_requests(store: &SqliteStore) -> (u64, u64) {
        let connection = store.reader.lock().expect("reader");
        let sum = |table: &str| -> u64 {
            let mut statement = connection
                .prepare(&format!("SELECT partial FROM {table}"))
                .expect("prepare");
            let rows = statement
                .query_map([], |row| row.get::<_, Vec<u8>>(0))
                .expect("query");
            rows.map(|bytes| {
                RollupPartial::from_bytes(&bytes.expect("row"))
                    .expect("partial")
                    .requests
            })
            .sum()
        };
        (sum("dimension_rollups"), sum("dimension_rollups_hourly"))
    }

    /// The oldest final hour's merge, prepared as maintenance does.
    fn prepare_hour(store: &SqliteStore, final_before_ms: i64) -> dimensions::HourMerge {
        let connection = store.maintenance_reader.lock().expect("reader");
        dimensions::prepare_oldest_hour(&connection, final_before_ms)
            .expect("prepare")
            .expect("a final hour")
    }

    /// Whether `merge` applied.
    fn apply_hour(store: &SqliteStore, merge: &dimensions::HourMerge) -> bool {
        let mut connection = store.writer.lock().expect("writer");
        dimensions::apply_hour_merge(&mut connection, merge).expect("apply")
    }

    /// Compaction merges a final hour's dimension minute rows only once the evaluator
    /// has evaluated the hour too: its detectors of locations read minute rows.
    #[tokio::test]
    async fn dimension_minutes_wait_for_the_evaluator_before_they_merge_into_hours() {
        use crate::evaluation::{EvaluationCommit, EvaluationStore};
        use crate::Maintenance;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("open");
        store
            .commit(endpoint_batch(0, 60_000, 2))
            .await
            .expect("commit");
        let evaluated_until = |next_window_ms: i64| EvaluationCommit {
            next_window_ms,
            state: Vec::new(),
            fired: Vec::new(),
            resolved: Vec::new(),
            outbox: Vec::new(),
            outbox_limit: 10,
        };
        // The watermark is past the hour; the evaluator is not.
        store
            .commit_evaluation(evaluated_until(1_800_000))
            .await
            .expect("evaluator position");
        store.compact(7_200_000).await.expect("compact");
        assert_eq!(dimension_requests(&store), (2, 0), "still minute rows");
        store
            .commit_evaluation(evaluated_until(3_600_000))
            .await
            .expect("evaluator position");
        store.compact(7_200_000).await.expect("compact");
        assert_eq!(dimension_requests(&store), (0, 2), "merged once evaluated");
    }

    /// An hour merge read before a late event changed one of its rows does not apply
    /// (it would count the row's old events twice and lose the new ones); read again,
    /// it merges every event once.
    #[tokio::test]
    async fn an_hour_merge_read_before_a_commit_changed_its_rows_is_prepared_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("open");
        let final_before_ms = 7_200_000;
        store
            .commit(endpoint_batch(0, 60_000, 2))
            .await
            .expect("commit");
        let stale = prepare_hour(&store, final_before_ms);
        // A late event into the same minute and value.
        store
            .commit(endpoint_batch(1, 60_000, 1))
            .await
            .expect("late commit");
        assert!(
            !apply_hour(&store, &stale),
            "a merge of changed rows must not apply"
        );
        assert_eq!(dimension_requests(&store), (3, 0), "rolled back whole");

        let fresh = prepare_hour(&store, final_before_ms);
        assert!(apply_hour(&store, &fresh));
        assert_eq!(
            dimension_requests(&store),
            (0, 3),
            "every event once, in the hour row"
        );
        let connection = store.maintenance_reader.lock().expect("reader");
        assert!(
            dimensions::prepare_oldest_hour(&connection, final_before_ms)
                .expect("prepare")
                .is_none(),
            "nothing left to merge"
        );
    }

    /// A store written at schema 6 (dimension rollups without versions) upgrades: its
    /// minute rows take version 0, a commit into one of them moves it, and an hour merge
    /// counts every event once.
    #[tokio::test]
    async fn a_schema_6_store_upgrades_and_its_dimension_rows_merge() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sqlite");
        {
            let connection = Connection::open(&path).expect("open");
            connection
                .execute_batch(
                    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                     INSERT INTO meta (key, value) VALUES ('schema_version', 6);",
                )
                .expect("meta");
            for migration in &schema::MIGRATIONS[..6] {
                connection.execute_batch(migration).expect("migration");
            }
            let mut partial = RollupPartial::new();
            partial.requests = 2;
            connection
                .execute(
                    "INSERT INTO dimension_rollups (tenant, dimension, minute_ms, kind, value, partial)
                     VALUES ('a', 'endpoint', 60000, 0, '/x', ?1)",
                    [partial.to_bytes()],
                )
                .expect("a schema 6 row");
        }
        let store = SqliteStore::open(&path).expect("open and upgrade");
        assert_eq!(
            schema::schema_version(&store.reader.lock().expect("reader")).expect("version"),
            schema::SCHEMA_VERSION
        );
        let stale = prepare_hour(&store, 7_200_000);
        store
            .commit(endpoint_batch(0, 60_000, 1))
            .await
            .expect("commit into the old row");
        assert_eq!(dimension_requests(&store), (3, 0));
        assert!(!apply_hour(&store, &stale));
        let fresh = prepare_hour(&store, 7_200_000);
        assert!(apply_hour(&store, &fresh));
        assert_eq!(dimension_requests(&store), (0, 3));
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
        let error = apply(&mut connection, &one_window_batch(0, 1), 0, &[]).expect_err("malformed");
        assert!(matches!(error, StoreError::Malformed(_)), "{error}");
    }
}
