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
//! - `meta(key, value)`: the schema version.
//!
//! Each [`Store::commit`] is one transaction that also moves the position, in WAL
//! journal mode with `synchronous=FULL`: when it returns, it survives a crash or power
//! loss, and a crash before it leaves nothing of it. Queries use a second connection,
//! so they read the last committed state without waiting behind a commit.
//!
//! SQLite calls block; every trait method runs them on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ais_rollup::RollupPartial;
use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::{
    AnomalyQuery, AnomalyRecord, AnomalyState, BatchCommit, DedupEntry, EvaluationCommit,
    PartitionState, RollupQuery, RollupRow, Store, StoreError,
};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    partition INTEGER PRIMARY KEY,
    next_offset INTEGER NOT NULL,
    watermark_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rollups (
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    minute_ms INTEGER NOT NULL,
    partial BLOB NOT NULL,
    PRIMARY KEY (tenant, model, minute_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollups_by_minute ON rollups (minute_ms);
CREATE TABLE IF NOT EXISTS dedup (
    id INTEGER PRIMARY KEY,
    minute_ms INTEGER NOT NULL,
    hashes BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dedup_by_minute ON dedup (minute_ms);
CREATE TABLE IF NOT EXISTS evaluation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_window_ms INTEGER NOT NULL,
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS anomalies (
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    detector TEXT NOT NULL,
    window_start_ms INTEGER NOT NULL,
    metric TEXT NOT NULL,
    observed REAL NOT NULL,
    baseline REAL NOT NULL,
    score REAL NOT NULL,
    state TEXT NOT NULL,
    resolved_window_ms INTEGER,
    PRIMARY KEY (tenant, model, detector, window_start_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS anomalies_by_window ON anomalies (window_start_ms);
";

/// Bytes of one dedup hash in a `dedup.hashes` blob.
const HASH_BYTES: usize = 16;

/// The SQLite engine of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
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

impl SqliteStore {
    /// Opens or creates the store at `path`, creating or upgrading its schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer = Connection::open(path).map_err(|error| {
            StoreError::Unavailable(format!("cannot open {}: {error}", path.display()))
        })?;
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA busy_timeout = 5000;",
            )
            .map_err(backend("configuring SQLite"))?;
        writer
            .execute_batch(SCHEMA)
            .map_err(backend("creating the schema"))?;
        let version: Option<i64> = writer
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(backend("reading the schema version"))?;
        match version {
            None => {
                writer
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                        [SCHEMA_VERSION],
                    )
                    .map_err(backend("recording the schema version"))?;
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::Unavailable(format!(
                    "{} has schema version {found}, newer than this binary's {SCHEMA_VERSION}; upgrade ais",
                    path.display()
                )));
            }
            Some(_) => {}
        }
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|error| {
            StoreError::Unavailable(format!(
                "cannot open {} for reading: {error}",
                path.display()
            ))
        })?;
        reader
            .execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(backend("configuring the reader"))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
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

fn apply(connection: &mut Connection, batch: &BatchCommit) -> Result<(), StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("starting a commit"))?;
    let stored: Option<i64> = transaction
        .query_row(
            "SELECT next_offset FROM positions WHERE partition = ?1",
            [batch.partition],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend("reading the position"))?;
    let expected = u64::try_from(stored.unwrap_or(0)).unwrap_or(0);
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
        let mut by_minute: std::collections::BTreeMap<i64, Vec<u8>> = Default::default();
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
    transaction.commit().map_err(backend("committing"))
}

#[async_trait]
impl Store for SqliteStore {
    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError> {
        self.with_writer(|connection| {
            let mut statement = connection
                .prepare(
                    "SELECT partition, next_offset, watermark_ms FROM positions ORDER BY partition",
                )
                .map_err(backend("reading positions"))?;
            let rows = statement
                .query_map([], |row| {
                    Ok(PartitionState {
                        partition: row.get(0)?,
                        next_offset: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                        watermark_ms: row.get(2)?,
                    })
                })
                .map_err(backend("reading positions"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(backend("reading positions"))
        })
        .await
    }

    async fn commit(&self, batch: BatchCommit) -> Result<(), StoreError> {
        let started = Instant::now();
        let outcome = self
            .with_writer(move |connection| apply(connection, &batch))
            .await;
        match &outcome {
            Ok(()) => {
                metrics::counter!("ais_store_commits_total").increment(1);
                metrics::histogram!("ais_store_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
            }
            Err(_) => metrics::counter!("ais_store_commit_errors_total").increment(1),
        }
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
                let minute_ms: i64 = row.get(0).map_err(backend("reading dedup ids"))?;
                let hashes: Vec<u8> = row.get(1).map_err(backend("reading dedup ids"))?;
                if hashes.len() % HASH_BYTES != 0 {
                    return Err(StoreError::Malformed(format!(
                        "dedup blob of minute {minute_ms} has {} bytes, not a multiple of {HASH_BYTES}",
                        hashes.len()
                    )));
                }
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
            transaction
                .execute(
                    "INSERT OR REPLACE INTO evaluation (id, next_window_ms, state) VALUES (1, ?1, ?2)",
                    params![commit.next_window_ms, commit.state],
                )
                .map_err(backend("writing the evaluator state"))?;
            transaction.commit().map_err(backend("committing an evaluation"))
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

    async fn apply_retention(
        &self,
        rollups_before_ms: i64,
        dedup_horizon_ms: i64,
    ) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection
                .execute(
                    "DELETE FROM rollups WHERE minute_ms < ?1",
                    [rollups_before_ms],
                )
                .map_err(backend("deleting old rollups"))?;
            connection
                .execute(
                    "DELETE FROM dedup WHERE minute_ms < (SELECT MAX(minute_ms) FROM dedup) - ?1",
                    [dedup_horizon_ms],
                )
                .map_err(backend("deleting old dedup ids"))?;
            Ok(())
        })
        .await
    }
}
