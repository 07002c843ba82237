//! The usage ledger's table (`crate::usage`): one row per (tenant, scope, day, value),
//! added to by each batch's commit transaction, so it is exactly once with the batch.

use std::path::Path;

use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension, Transaction};

use super::backend;
use crate::usage::{
    conditions, stored_value, value_from_stored, SpendAnswer, SpendDialect, SpendQuery,
    UsageCounts, UsageKey, UsageQuery, UsageRanking, UsageRow, UsageRows, UsageTop, ValueSpend,
    EXPORT_CHUNKS_AHEAD, EXPORT_CHUNK_ROWS,
};
use crate::StoreError;

fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_sql(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(index)?).unwrap_or(0))
}

/// The six counts from `first` on.
fn counts_from(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<UsageCounts> {
    Ok(UsageCounts {
        requests: from_sql(row, first)?,
        errors: from_sql(row, first + 1)?,
        input_tokens: from_sql(row, first + 2)?,
        output_tokens: from_sql(row, first + 3)?,
        cache_read_input_tokens: from_sql(row, first + 4)?,
        cost_micros: from_sql(row, first + 5)?,
    })
}

const SUMS: &str =
    "SUM(requests) AS requests, SUM(errors) AS errors, SUM(input_tokens) AS input_tokens,
    SUM(output_tokens) AS output_tokens, SUM(cache_read_input_tokens) AS cache_read_input_tokens,
    SUM(cost_micros) AS cost_micros";

/// Adds a batch's usage (inside the batch's transaction).
pub(super) fn add(
    transaction: &Transaction<'_>,
    entries: &[(UsageKey, UsageCounts)],
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut upsert = transaction
        .prepare_cached(
            "INSERT INTO usage (tenant, scope, day_ms, kind, value, requests, errors, input_tokens,
                                output_tokens, cache_read_input_tokens, cost_micros)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (tenant, scope, day_ms, kind, value) DO UPDATE SET
                 requests = requests + excluded.requests,
                 errors = errors + excluded.errors,
                 input_tokens = input_tokens + excluded.input_tokens,
                 output_tokens = output_tokens + excluded.output_tokens,
                 cache_read_input_tokens = cache_read_input_tokens + excluded.cache_read_input_tokens,
                 cost_micros = cost_micros + excluded.cost_micros",
        )
        .map_err(backend("preparing the usage write"))?;
    for (key, counts) in entries {
        let (kind, value) = stored_value(key.value.as_deref());
        upsert
            .execute(params![
                key.tenant,
                key.scope,
                key.day_ms,
                kind,
                value,
                to_sql(counts.requests),
                to_sql(counts.errors),
                to_sql(counts.input_tokens),
                to_sql(counts.output_tokens),
                to_sql(counts.cache_read_input_tokens),
                to_sql(counts.cost_micros),
            ])
            .map_err(backend("writing the usage ledger"))?;
    }
    Ok(())
}

/// The top groups of `query` and its total, from one snapshot (one read transaction).
pub(super) fn top(
    connection: &Connection,
    query: &UsageQuery,
    ranking: UsageRanking,
) -> Result<UsageTop, StoreError> {
    let failed = backend("reading the usage ledger");
    let (conditions, binds) = conditions(query);
    // One snapshot for the groups and the total (a deferred transaction on a
    // read-only connection).
    connection
        .execute_batch("BEGIN")
        .map_err(backend("starting a usage read"))?;
    let read = || -> Result<UsageTop, StoreError> {
        let mut groups = connection
            .prepare(&format!(
                "SELECT kind, value, {SUMS} FROM usage WHERE {conditions}
                 GROUP BY kind, value {}",
                ranking.sql()
            ))
            .map_err(&failed)?;
        let groups = groups
            .query_map(params_from_iter(binds.iter()), |row| {
                let kind: u8 = row.get(0)?;
                let value: String = row.get(1)?;
                Ok((value_from_stored(kind, value), counts_from(row, 2)?))
            })
            .map_err(&failed)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&failed)?;
        let total = connection
            .query_row(
                &format!("SELECT {SUMS} FROM usage WHERE {conditions}"),
                params_from_iter(binds.iter()),
                |row| {
                    // SUM over no rows is NULL.
                    if row.get::<_, Option<i64>>(0)?.is_none() {
                        return Ok(UsageCounts::default());
                    }
                    counts_from(row, 0)
                },
            )
            .map_err(&failed)?;
        let since_ms = since_ms(connection)?;
        Ok(UsageTop {
            groups,
            total,
            since_ms,
        })
    };
    let answer = read();
    connection
        .execute_batch("COMMIT")
        .map_err(backend("ending a usage read"))?;
    answer
}

const SPEND_DIALECT: SpendDialect = SpendDialect {
    sum_if: |condition, column| format!("SUM(CASE WHEN {condition} THEN {column} ELSE 0 END)"),
    // The scalar `MAX` of SQLite takes two or more arguments (one is the aggregate).
    greatest: |terms| format!("MAX({})", terms.join(", ")),
    ratio: |column, limit| format!("{column} * 1.0 / {limit}"),
};

/// A budget's spend (`crate::usage::SpendQuery`). The rows of one day are stored in
/// value order (the primary key), so a daily budget's read groups as it scans; a month
/// read groups the month's rows of the scope in a temporary b-tree.
pub(super) fn spend(
    connection: &Connection,
    query: &SpendQuery,
) -> Result<SpendAnswer, StoreError> {
    let failed = backend("reading a budget's spend from the usage ledger");
    let mut statement = connection
        .prepare_cached(&query.sql(&SPEND_DIALECT, "usage", ""))
        .map_err(&failed)?;
    let values = statement
        .query_map(params_from_iter(query.binds()), |row| {
            Ok(ValueSpend {
                value: row.get(0)?,
                day_micros: from_sql(row, 1)?,
                day_tokens: from_sql(row, 2)?,
                month_micros: from_sql(row, 3)?,
                month_tokens: from_sql(row, 4)?,
            })
        })
        .map_err(&failed)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(&failed)?;
    Ok(query.answer(values))
}

/// When counting began in a store that held events before the ledger existed.
fn since_ms(connection: &Connection) -> Result<Option<i64>, StoreError> {
    connection
        .query_row(
            "SELECT value FROM meta WHERE key = 'usage_since_ms'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend("reading when usage counting began"))
}

/// Streams every (day, tenant, value) row of `query` from a connection of its own, so a
/// long export holds neither the writer nor the queries' reader. The rows leave in
/// chunks through a bounded channel: the export's memory is a few chunks, whatever its
/// size, and it stops when the reader goes away.
pub(super) fn export(path: &Path, query: UsageQuery) -> Result<UsageRows, StoreError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend("opening the store for an export"))?;
    let (sender, receiver) = tokio::sync::mpsc::channel(EXPORT_CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let failed = backend("exporting the usage ledger");
        let (conditions, binds) = conditions(&query);
        let run = || -> Result<(), StoreError> {
            let mut statement = connection
                .prepare(&format!(
                    "SELECT tenant, day_ms, kind, value, requests, errors, input_tokens, output_tokens,
                            cache_read_input_tokens, cost_micros
                     FROM usage WHERE {conditions}
                     ORDER BY day_ms, tenant, kind, value"
                ))
                .map_err(&failed)?;
            let mut rows = statement
                .query(params_from_iter(binds.iter()))
                .map_err(&failed)?;
            let mut chunk = Vec::with_capacity(EXPORT_CHUNK_ROWS);
            while let Some(row) = rows.next().map_err(&failed)? {
                let kind: u8 = row.get(2).map_err(&failed)?;
                chunk.push(UsageRow {
                    tenant: row.get(0).map_err(&failed)?,
                    day_ms: row.get(1).map_err(&failed)?,
                    value: value_from_stored(kind, row.get(3).map_err(&failed)?),
                    counts: counts_from(row, 4).map_err(&failed)?,
                });
                if chunk.len() == EXPORT_CHUNK_ROWS {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(EXPORT_CHUNK_ROWS));
                    if sender.blocking_send(Ok(full)).is_err() {
                        // The reader went away.
                        return Ok(());
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = sender.blocking_send(Ok(chunk));
            }
            Ok(())
        };
        if let Err(error) = run() {
            let _ = sender.blocking_send(Err(error));
        }
    });
    Ok(receiver)
}

/// Deletes the days that end at or before `before_ms` (retention, with the rollups).
pub(super) fn delete_before(
    transaction: &Transaction<'_>,
    before_ms: i64,
) -> Result<usize, StoreError> {
    // The day's start against a bound, so the index on `day_ms` serves.
    transaction
        .execute(
            "DELETE FROM usage WHERE day_ms <= ?1",
            [before_ms.saturating_sub(crate::usage::DAY_MS)],
        )
        .map_err(backend("deleting old usage days"))
}
