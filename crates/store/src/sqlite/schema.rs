//! The SQLite schema and its migrations.
//!
//! `meta.schema_version` is the number of migrations applied. Opening a store applies
//! the missing ones, each in its own immediate transaction together with the version
//! bump, so a crash mid-upgrade leaves the previous version intact and two processes
//! opening the same file at once migrate it once: the second waits for the first's
//! write lock, then reads the version it left.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::backend;
use crate::StoreError;

/// Version 1: positions, rollups, dedup ids, evaluator state, anomalies.
const V1: &str = "
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

/// Version 2: the catalog of raw-event Parquet files. A file counts only once a row
/// here names it (`path` is relative to the events directory).
const V2: &str = "
CREATE TABLE IF NOT EXISTS raw_files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    hour_ms INTEGER NOT NULL,
    min_timestamp_ms INTEGER NOT NULL,
    max_timestamp_ms INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    compacted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS raw_files_by_hour ON raw_files (hour_ms);
";

/// Version 3: the alert outbox, one row per (receiver, alert transition) until it is
/// delivered or abandoned.
const V3: &str = "
CREATE TABLE IF NOT EXISTS alert_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    UNIQUE (sink, key)
);
";

/// Version 4: dead letters, one row per log record the stream could not process, keyed
/// by where the record was; written by the commit that moves the position past it.
const V4: &str = "
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    log_partition INTEGER NOT NULL,
    log_offset INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    tenant TEXT,
    dead_at_ms INTEGER NOT NULL,
    record BLOB NOT NULL,
    UNIQUE (log_partition, log_offset)
);
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (dead_at_ms);
CREATE INDEX IF NOT EXISTS dead_letters_by_tenant ON dead_letters (tenant, dead_at_ms);
";

/// Version 5: dimension rollups, one partial per (tenant, dimension, minute, group),
/// where `kind` is 0 for a value (in `value`), 1 for events without the field and 2 for
/// the minute's overflow past the bound (`value` empty for both); and from which
/// minute each dimension has been rolled up without a gap.
const V5: &str = "
CREATE TABLE IF NOT EXISTS dimension_rollups (
    tenant TEXT NOT NULL,
    dimension TEXT NOT NULL,
    minute_ms INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    value TEXT NOT NULL,
    partial BLOB NOT NULL,
    PRIMARY KEY (tenant, dimension, minute_ms, kind, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dimension_rollups_by_minute ON dimension_rollups (minute_ms);
CREATE TABLE IF NOT EXISTS dimension_rollups_since (
    dimension TEXT PRIMARY KEY,
    since_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 6: dimension rollups of final hours, one row per (tenant, dimension, hour,
/// group) merged from the hour's minute rows by maintenance, and which hours were merged
/// (their remaining minute rows are late events that came after).
const V6: &str = "
CREATE TABLE IF NOT EXISTS dimension_rollups_hourly (
    tenant TEXT NOT NULL,
    dimension TEXT NOT NULL,
    hour_ms INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    value TEXT NOT NULL,
    partial BLOB NOT NULL,
    PRIMARY KEY (tenant, dimension, hour_ms, kind, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dimension_rollups_hourly_by_hour ON dimension_rollups_hourly (hour_ms);
CREATE TABLE IF NOT EXISTS dimension_hours_merged (
    hour_ms INTEGER PRIMARY KEY
);
";

/// Version 7: a version per minute row of dimension rollups, raised by every write, so
/// maintenance can merge an hour's rows read outside the writer and delete them only if
/// no commit changed them since.
const V7: &str = "
ALTER TABLE dimension_rollups ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
";

/// Version 8: each partition's newest claim (fencing): a commit through a store handle
/// holding an older claim is refused in the commit's transaction.
const V8: &str = "
CREATE TABLE IF NOT EXISTS claims (
    partition INTEGER PRIMARY KEY,
    claim INTEGER NOT NULL,
    claimed_ms INTEGER NOT NULL
);
";

/// Version 9: the ledger (`crate::ledger`): per (tenant, hour of event time,
/// partition), what became of every record the stream read; and per partition the
/// records accounted for outside it (`ledger_base`): those read before the ledger
/// existed (the position at this migration), and those of hours retention deleted.
const V9: &str = "
CREATE TABLE IF NOT EXISTS ledger (
    tenant TEXT NOT NULL,
    hour_ms INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    committed INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    late INTEGER NOT NULL,
    dead_lettered INTEGER NOT NULL,
    PRIMARY KEY (tenant, hour_ms, partition)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_by_hour ON ledger (hour_ms);
CREATE TABLE IF NOT EXISTS ledger_base (
    partition INTEGER PRIMARY KEY,
    accepted INTEGER NOT NULL
);
INSERT OR IGNORE INTO ledger_base (partition, accepted) SELECT partition, next_offset FROM positions;
";

/// Version 10: the usage ledger (`crate::usage`), per (tenant, scope, UTC day, value),
/// its current day's rows together in the key so a commit's upserts touch few pages.
/// A store that held events before it records when usage counting began
/// (`usage_since_ms`): days before the next midnight after it are incomplete.
const V10: &str = "
CREATE TABLE IF NOT EXISTS usage (
    tenant TEXT NOT NULL,
    scope TEXT NOT NULL,
    day_ms INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    value TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_input_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    PRIMARY KEY (tenant, scope, day_ms, kind, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_by_day ON usage (day_ms);
INSERT OR IGNORE INTO meta (key, value)
    SELECT 'usage_since_ms', CAST(strftime('%s', 'now') AS INTEGER) * 1000
    WHERE EXISTS (SELECT 1 FROM positions WHERE next_offset > 0);
";

/// Version 11: anomalies of a dimension's value (`crate::evaluation::Location`), keyed
/// by their location as well; the anomalies of models keep their table and identity.
const V11: &str = "
CREATE TABLE IF NOT EXISTS location_anomalies (
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    dimension TEXT NOT NULL,
    value TEXT NOT NULL,
    detector TEXT NOT NULL,
    window_start_ms INTEGER NOT NULL,
    metric TEXT NOT NULL,
    observed REAL NOT NULL,
    baseline REAL NOT NULL,
    score REAL NOT NULL,
    state TEXT NOT NULL,
    resolved_window_ms INTEGER,
    PRIMARY KEY (tenant, model, dimension, value, detector, window_start_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS location_anomalies_by_window ON location_anomalies (window_start_ms);
";

/// Migration `n` (from 0) upgrades version `n` to `n + 1`. Append only: a released
/// migration is never edited, since stores in the field already ran it.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11];

/// The version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Reads the schema version; 0 for a new file.
pub fn schema_version(connection: &Connection) -> Result<i64, StoreError> {
    let version: Option<i64> = connection
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend("reading the schema version"))?;
    Ok(version.unwrap_or(0))
}

/// Brings the schema up to [`SCHEMA_VERSION`]; refuses a file written by a newer binary
/// rather than guessing at tables it does not know.
pub fn migrate(connection: &mut Connection, display_path: &str) -> Result<(), StoreError> {
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )
        .map_err(backend("creating the meta table"))?;
    loop {
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend("starting a migration"))?;
        // Read under the write lock: another process may have migrated meanwhile.
        let version = schema_version(&transaction)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Unavailable(format!(
                "{display_path} has schema version {version}, newer than this binary's {SCHEMA_VERSION}; upgrade ais"
            )));
        }
        let index = usize::try_from(version).map_err(|_| {
            StoreError::Malformed(format!("{display_path} has schema version {version}"))
        })?;
        let Some(migration) = MIGRATIONS.get(index) else {
            return Ok(());
        };
        transaction
            .execute_batch(migration)
            .map_err(backend("migrating the schema"))?;
        transaction
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?1)",
                [version + 1],
            )
            .map_err(backend("recording the schema version"))?;
        transaction
            .commit()
            .map_err(backend("committing a migration"))?;
        tracing::info!(
            path = display_path,
            version = version + 1,
            "store schema migrated"
        );
    }
}
