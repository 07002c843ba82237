//! The ledger's table (`crate::ledger`): one row per (tenant, hour, partition), added to
//! by each batch's commit transaction, so it is exactly once with the batch.

use rusqlite::{params, Connection, Transaction};

use super::backend;
use crate::ledger::{Coverage, LedgerCounts, LedgerKey, LedgerQuery, LedgerRow};
use crate::StoreError;

/// Adds a batch's counts of `partition` (inside the batch's transaction).
pub(super) fn add(
    transaction: &Transaction<'_>,
    partition: u32,
    entries: &[(LedgerKey, LedgerCounts)],
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut upsert = transaction
        .prepare_cached(
            "INSERT INTO ledger (tenant, hour_ms, partition, accepted, committed, duplicates, late, dead_lettered)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (tenant, hour_ms, partition) DO UPDATE SET
                 accepted = accepted + excluded.accepted,
                 committed = committed + excluded.committed,
                 duplicates = duplicates + excluded.duplicates,
                 late = late + excluded.late,
                 dead_lettered = dead_lettered + excluded.dead_lettered",
        )
        .map_err(backend("preparing the ledger write"))?;
    for (key, counts) in entries {
        let count = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        upsert
            .execute(params![
                key.tenant,
                key.hour_ms,
                partition,
                count(counts.accepted),
                count(counts.committed),
                count(counts.duplicates),
                count(counts.late),
                count(counts.dead_lettered),
            ])
            .map_err(backend("writing the ledger"))?;
    }
    Ok(())
}

/// The rows of the hours `query` covers, by tenant, hour and partition.
pub(super) fn read(
    connection: &Connection,
    query: &LedgerQuery,
) -> Result<Vec<LedgerRow>, StoreError> {
    let mut statement = connection
        .prepare_cached(
            "SELECT tenant, hour_ms, partition, accepted, committed, duplicates, late, dead_lettered
             FROM ledger
             WHERE hour_ms >= ?1 AND hour_ms < ?2 AND (?3 IS NULL OR tenant = ?3)
             ORDER BY tenant, hour_ms, partition",
        )
        .map_err(backend("reading the ledger"))?;
    let rows = statement
        .query_map(params![query.from_ms, query.to_ms, query.tenant], |row| {
            let count = |index: usize| -> rusqlite::Result<u64> {
                Ok(u64::try_from(row.get::<_, i64>(index)?).unwrap_or(0))
            };
            Ok(LedgerRow {
                tenant: row.get(0)?,
                hour_ms: row.get(1)?,
                partition: row.get(2)?,
                counts: LedgerCounts {
                    accepted: count(3)?,
                    committed: count(4)?,
                    duplicates: count(5)?,
                    late: count(6)?,
                    dead_lettered: count(7)?,
                },
            })
        })
        .map_err(backend("reading the ledger"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(backend("reading the ledger"))
}

/// Deletes the hours that end at or before `before_ms` (retention), keeping what they
/// accepted in each partition's base, so the ledger still covers every offset read.
pub(super) fn delete_before(
    transaction: &Transaction<'_>,
    before_ms: i64,
) -> Result<usize, StoreError> {
    // The hour's start against a bound, so the index on `hour_ms` serves.
    let last_hour = before_ms.saturating_sub(3_600_000);
    transaction
        .execute(
            "INSERT INTO ledger_base (partition, accepted)
             SELECT partition, SUM(accepted) FROM ledger WHERE hour_ms <= ?1 GROUP BY partition
             ON CONFLICT (partition) DO UPDATE SET accepted = accepted + excluded.accepted",
            [last_hour],
        )
        .map_err(backend("retiring old ledger hours"))?;
    transaction
        .execute("DELETE FROM ledger WHERE hour_ms <= ?1", [last_hour])
        .map_err(backend("deleting old ledger hours"))
}

/// Per partition: its position, and the records the ledger accounts for (its rows'
/// `accepted` plus the base).
pub(super) fn coverage(connection: &Connection) -> Result<Vec<Coverage>, StoreError> {
    let mut statement = connection
        .prepare(
            "SELECT p.partition, p.next_offset,
                    COALESCE((SELECT accepted FROM ledger_base b WHERE b.partition = p.partition), 0)
                  + COALESCE((SELECT SUM(accepted) FROM ledger l WHERE l.partition = p.partition), 0)
             FROM positions p ORDER BY p.partition",
        )
        .map_err(backend("reading the ledger's coverage"))?;
    let rows = statement
        .query_map([], |row| {
            Ok(Coverage {
                partition: row.get(0)?,
                position: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                accounted: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
            })
        })
        .map_err(backend("reading the ledger's coverage"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(backend("reading the ledger's coverage"))
}
