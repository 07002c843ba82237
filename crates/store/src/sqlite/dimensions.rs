//! Dimension rollups in SQLite: written by the batch's transaction, read by breakdowns
//! that they cover, deleted with the raw events they summarise.
//!
//! A batch's partials are placed against what the table holds for their (tenant,
//! dimension, minute) ([`StoredValues`]): a held group merges, a new value is inserted
//! while the minute has fewer than the bound's values, and merges into the minute's
//! overflow otherwise. A breakdown reads them only where they are complete: minutes
//! from the dimension's `since` on (the first minute after the stream started rolling
//! it up, so no event of it was committed without a rollup), with no overflow in range.
//!
//! Maintenance merges the minute rows of final hours into hour rows, so a day is 24
//! rows per value rather than 1,440: a tenant's hour at a time, read and merged on a
//! connection of its own ([`prepare_oldest_hour`]), then applied in a short
//! transaction of the writer that rolls back if a commit changed one of the rows
//! meanwhile ([`apply_hour_merge`]; every write of a minute row raises its version). A late event adds a minute row to a
//! merged hour, merged in turn by a later pass; a query reads hour rows for whole hours
//! and minute rows for the rest, and leaves a partial hour whose minutes were merged to
//! the scan.

use std::collections::HashMap;

use ais_model::time::{minute_floor, MINUTE_MS};
use ais_rollup::dimensions::{DimensionValue, StoredValues};
use ais_rollup::RollupPartial;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::backend;
use crate::query::Covered;
use crate::raw::file::{hour_of, HOUR_MS};
use crate::{DimensionPartials, StoreError};

/// The stored (kind, value) columns of a group.
fn columns(group: &DimensionValue) -> (i64, &str) {
    let (kind, value) = group.stored();
    (i64::from(kind), value)
}

fn group_of(kind: i64, value: String) -> Result<DimensionValue, StoreError> {
    u8::try_from(kind)
        .ok()
        .and_then(|kind| DimensionValue::from_stored(kind, value))
        .ok_or_else(|| StoreError::Malformed(format!("dimension rollup of kind {kind}")))
}

fn decode(bytes: &[u8], what: impl FnOnce() -> String) -> Result<RollupPartial, StoreError> {
    RollupPartial::from_bytes(bytes)
        .map_err(|error| StoreError::Malformed(format!("{}: {error}", what())))
}

/// Merges a batch's dimension partials into the table, inside the batch's transaction.
pub(super) fn write(
    transaction: &Transaction<'_>,
    batch: &DimensionPartials,
) -> Result<(), StoreError> {
    if batch.partials.is_empty() {
        return Ok(());
    }
    let mut groups = transaction
        .prepare_cached(
            "SELECT kind, value FROM dimension_rollups
             WHERE tenant = ?1 AND dimension = ?2 AND minute_ms = ?3",
        )
        .map_err(backend("preparing the dimension rollup read"))?;
    // Partials come in key order, so one minute's groups are consecutive: its stored
    // groups are read once.
    let mut minute: Option<(&str, &str, i64, StoredValues)> = None;
    for (key, partial) in &batch.partials {
        let same = minute
            .as_ref()
            .is_some_and(|(tenant, dimension, minute_ms, _)| {
                (*tenant, *dimension, *minute_ms) == (&key.tenant, &key.dimension, key.minute_ms)
            });
        if !same {
            let rows = groups
                .query_map(params![key.tenant, key.dimension, key.minute_ms], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(backend("reading dimension rollups"))?;
            let mut held = Vec::new();
            for row in rows {
                let (kind, value) = row.map_err(backend("reading dimension rollups"))?;
                held.push(group_of(kind, value)?);
            }
            minute = Some((
                &key.tenant,
                &key.dimension,
                key.minute_ms,
                StoredValues::new(held),
            ));
        }
        let Some((_, _, _, stored)) = minute.as_mut() else {
            continue;
        };
        let target = stored.place(&key.value, batch.max_values_per_minute);
        merge_row(
            transaction,
            Tier::Minute,
            (&key.tenant, &key.dimension, key.minute_ms),
            columns(&target),
            partial,
        )?;
    }
    Ok(())
}

/// The rows a partial merges into: a minute's, or a final hour's.
#[derive(Debug, Clone, Copy)]
enum Tier {
    Minute,
    Hour,
}

impl Tier {
    /// Rows of dimension `?1` over `[?2, ?3)`, of tenant `?4`, or of every tenant when
    /// `?4` is NULL. One tenant reads a range of the primary key; every tenant, the
    /// time index.
    fn range_read(self, one_tenant: bool) -> String {
        let (table, time, index) = match self {
            Self::Minute => (
                "dimension_rollups",
                "minute_ms",
                "dimension_rollups_by_minute",
            ),
            Self::Hour => (
                "dimension_rollups_hourly",
                "hour_ms",
                "dimension_rollups_hourly_by_hour",
            ),
        };
        if one_tenant {
            format!(
                "SELECT kind, value, partial FROM {table}
                 WHERE tenant = ?4 AND dimension = ?1 AND {time} >= ?2 AND {time} < ?3"
            )
        } else {
            format!(
                "SELECT kind, value, partial FROM {table} INDEXED BY {index}
                 WHERE {time} >= ?2 AND {time} < ?3 AND dimension = ?1 AND ?4 IS NULL"
            )
        }
    }

    fn select(self) -> &'static str {
        match self {
            Self::Minute => {
                "SELECT partial FROM dimension_rollups
                 WHERE tenant = ?1 AND dimension = ?2 AND minute_ms = ?3 AND kind = ?4 AND value = ?5"
            }
            Self::Hour => {
                "SELECT partial FROM dimension_rollups_hourly
                 WHERE tenant = ?1 AND dimension = ?2 AND hour_ms = ?3 AND kind = ?4 AND value = ?5"
            }
        }
    }

    fn upsert(self) -> &'static str {
        match self {
            // A changed minute row gets a new version (see `apply_hour_merge`).
            Self::Minute => {
                "INSERT INTO dimension_rollups (tenant, dimension, minute_ms, kind, value, partial)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, dimension, minute_ms, kind, value)
                 DO UPDATE SET partial = excluded.partial, version = version + 1"
            }
            Self::Hour => {
                "INSERT OR REPLACE INTO dimension_rollups_hourly (tenant, dimension, hour_ms, kind, value, partial)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            }
        }
    }
}

/// Merges `partial` into the row of (tenant, dimension, time) and group (kind, value)
/// of `tier`, inserting it when there is none. Read, merge, write back, so a row
/// written earlier in the same transaction merges too.
fn merge_row(
    transaction: &Transaction<'_>,
    tier: Tier,
    (tenant, dimension, at_ms): (&str, &str, i64),
    (kind, value): (i64, &str),
    partial: &RollupPartial,
) -> Result<(), StoreError> {
    let existing: Option<Vec<u8>> = transaction
        .prepare_cached(tier.select())
        .map_err(backend("preparing a dimension rollup read"))?
        .query_row(params![tenant, dimension, at_ms, kind, value], |row| {
            row.get(0)
        })
        .optional()
        .map_err(backend("reading a dimension rollup"))?;
    let bytes = match existing {
        Some(bytes) => {
            let mut merged = decode(&bytes, || {
                format!("dimension rollup of {tenant}/{dimension} at {at_ms}")
            })?;
            merged.merge(partial);
            merged.to_bytes()
        }
        None => partial.to_bytes(),
    };
    transaction
        .prepare_cached(tier.upsert())
        .map_err(backend("preparing a dimension rollup write"))?
        .execute(params![tenant, dimension, at_ms, kind, value, bytes])
        .map_err(backend("writing a dimension rollup"))?;
    Ok(())
}

/// Records which dimensions are rolled up from now on: a dimension new to the list is
/// complete from the minute after `first_uncovered_ms` (the newest event time already
/// committed, or now if later); one no longer listed is forgotten, so queries stop
/// reading its rollups.
pub(super) fn keep(
    connection: &mut Connection,
    dimensions: &[String],
    first_uncovered_ms: i64,
) -> Result<(), StoreError> {
    let transaction = connection
        .transaction()
        .map_err(backend("starting the dimension rollup list"))?;
    let listed: Vec<String> = {
        let mut statement = transaction
            .prepare("SELECT dimension FROM dimension_rollups_since")
            .map_err(backend("reading the dimension rollup list"))?;
        let rows = statement
            .query_map([], |row| row.get(0))
            .map_err(backend("reading the dimension rollup list"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("reading the dimension rollup list"))?
    };
    for dimension in listed.iter().filter(|name| !dimensions.contains(name)) {
        transaction
            .execute(
                "DELETE FROM dimension_rollups_since WHERE dimension = ?1",
                [dimension],
            )
            .map_err(backend("updating the dimension rollup list"))?;
    }
    let since_ms = minute_floor(first_uncovered_ms).saturating_add(MINUTE_MS);
    for dimension in dimensions.iter().filter(|name| !listed.contains(name)) {
        transaction
            .execute(
                "INSERT INTO dimension_rollups_since (dimension, since_ms) VALUES (?1, ?2)",
                params![dimension, since_ms],
            )
            .map_err(backend("updating the dimension rollup list"))?;
        tracing::info!(
            dimension,
            since_ms,
            "dimension rolled up from this minute on"
        );
    }
    transaction
        .commit()
        .map_err(backend("committing the dimension rollup list"))
}

fn hour_ceil(ms: i64) -> i64 {
    let floor = hour_of(ms);
    if floor == ms {
        ms
    } else {
        floor + HOUR_MS
    }
}

/// The groups of `dimension` over the whole minutes `[from_ms, to_ms)`, of one tenant
/// or all: hour rows for whole hours, minute rows for the rest (and for late events of
/// merged hours). A partial hour at either end whose minutes were merged into an hour
/// row is left out of [`Covered`], for the caller to scan. `None` when the rollups
/// cannot answer: the dimension is not rolled up since `from_ms`, a row in range is an
/// overflow, or nothing of the range is covered.
pub(super) fn read(
    connection: &Connection,
    tenant: Option<&str>,
    dimension: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Option<Covered>, StoreError> {
    let since: Option<i64> = connection
        .query_row(
            "SELECT since_ms FROM dimension_rollups_since WHERE dimension = ?1",
            [dimension],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend("reading the dimension rollup list"))?;
    if since.is_none_or(|since| since > from_ms) {
        return Ok(None);
    }
    let merged_hour = |hour_ms: i64| -> Result<bool, StoreError> {
        connection
            .query_row(
                "SELECT 1 FROM dimension_hours_merged WHERE hour_ms = ?1",
                [hour_ms],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(backend("reading merged hours"))
    };
    let (mut covered_from, mut covered_to) = (from_ms, to_ms);
    if from_ms % HOUR_MS != 0 && merged_hour(hour_of(from_ms))? {
        covered_from = hour_ceil(from_ms);
    }
    if to_ms % HOUR_MS != 0 && merged_hour(hour_of(to_ms))? {
        covered_to = hour_of(to_ms);
    }
    if covered_from >= covered_to {
        return Ok(None);
    }
    let mut merged: HashMap<DimensionValue, RollupPartial> = HashMap::new();
    let ranges = [
        (Tier::Minute, covered_from, covered_to),
        (Tier::Hour, hour_ceil(covered_from), hour_of(covered_to)),
    ];
    for (tier, from, to) in ranges {
        if from >= to {
            continue;
        }
        let mut statement = connection
            .prepare_cached(&tier.range_read(tenant.is_some()))
            .map_err(backend("reading dimension rollups"))?;
        let mut rows = statement
            .query(params![dimension, from, to, tenant])
            .map_err(backend("reading dimension rollups"))?;
        while let Some(row) = rows.next().map_err(backend("reading dimension rollups"))? {
            let kind: i64 = row.get(0).map_err(backend("reading dimension rollups"))?;
            let value: String = row.get(1).map_err(backend("reading dimension rollups"))?;
            let group = group_of(kind, value)?;
            if group == DimensionValue::Overflow {
                return Ok(None);
            }
            let bytes: Vec<u8> = row.get(2).map_err(backend("reading dimension rollups"))?;
            let partial = decode(&bytes, || format!("dimension rollup of {dimension}"))?;
            merged.entry(group).or_default().merge(&partial);
        }
    }
    Ok(Some(Covered {
        groups: merged.into_iter().collect(),
        from_ms: covered_from,
        to_ms: covered_to,
    }))
}

/// One tenant's final hour of minute rows, read and merged per group outside the
/// writer ([`prepare_oldest_hour`]), to be applied by [`apply_hour_merge`].
pub(super) struct HourMerge {
    tenant: String,
    hour_ms: i64,
    /// Each minute row read: (dimension, minute, kind, value, version).
    rows: Vec<(String, i64, i64, String, i64)>,
    merged: HashMap<(String, i64, String), RollupPartial>,
}

/// Reads the oldest final hour (before the hour of `final_before_ms`) that still has
/// minute rows, for one tenant, and merges its rows per (dimension, group). On a
/// connection of its own: neither commits nor queries wait for it. `None` when no
/// final hour has minute rows left.
pub(super) fn prepare_oldest_hour(
    connection: &Connection,
    final_before_ms: i64,
) -> Result<Option<HourMerge>, StoreError> {
    let oldest: Option<(String, i64)> = connection
        .query_row(
            "SELECT tenant, minute_ms FROM dimension_rollups INDEXED BY dimension_rollups_by_minute
             WHERE minute_ms < ?1 ORDER BY minute_ms LIMIT 1",
            [hour_of(final_before_ms)],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(backend("finding final hours of dimension rollups"))?;
    let Some((tenant, oldest)) = oldest else {
        return Ok(None);
    };
    let hour_ms = hour_of(oldest);
    let mut merge = HourMerge {
        tenant,
        hour_ms,
        rows: Vec::new(),
        merged: HashMap::new(),
    };
    let mut statement = connection
        .prepare_cached(
            "SELECT dimension, minute_ms, kind, value, version, partial FROM dimension_rollups
             INDEXED BY dimension_rollups_by_minute
             WHERE minute_ms >= ?1 AND minute_ms < ?2 AND tenant = ?3",
        )
        .map_err(backend("reading an hour of dimension rollups"))?;
    let mut rows = statement
        .query(params![hour_ms, hour_ms + HOUR_MS, merge.tenant])
        .map_err(backend("reading an hour of dimension rollups"))?;
    let failed = backend("reading an hour of dimension rollups");
    while let Some(row) = rows.next().map_err(&failed)? {
        let dimension: String = row.get(0).map_err(&failed)?;
        let minute_ms: i64 = row.get(1).map_err(&failed)?;
        let kind: i64 = row.get(2).map_err(&failed)?;
        let value: String = row.get(3).map_err(&failed)?;
        let version: i64 = row.get(4).map_err(&failed)?;
        let bytes: Vec<u8> = row.get(5).map_err(&failed)?;
        let partial = decode(&bytes, || format!("dimension rollup of {dimension}"))?;
        merge
            .merged
            .entry((dimension.clone(), kind, value.clone()))
            .or_default()
            .merge(&partial);
        merge
            .rows
            .push((dimension, minute_ms, kind, value, version));
    }
    Ok(Some(merge))
}

/// Applies a prepared hour merge in one short transaction of the writer: deletes the
/// minute rows it read, merges its partials into the hour rows and records the hour
/// as merged. A row a commit changed since it was read (its version moved, or it is
/// gone) makes the whole merge roll back and answer `false`, to be prepared again: a
/// late event that landed in between is then merged, not lost or counted twice. Rows
/// added since are not deleted: they stay minute rows, read beside the hour row.
pub(super) fn apply_hour_merge(
    connection: &mut Connection,
    merge: &HourMerge,
) -> Result<bool, StoreError> {
    let transaction = connection
        .transaction()
        .map_err(backend("starting an hour merge"))?;
    {
        let mut delete = transaction
            .prepare_cached(
                "DELETE FROM dimension_rollups
                 WHERE tenant = ?1 AND dimension = ?2 AND minute_ms = ?3 AND kind = ?4
                   AND value = ?5 AND version = ?6",
            )
            .map_err(backend("deleting merged minute rows"))?;
        for (dimension, minute_ms, kind, value, version) in &merge.rows {
            let deleted = delete
                .execute(params![
                    merge.tenant,
                    dimension,
                    minute_ms,
                    kind,
                    value,
                    version
                ])
                .map_err(backend("deleting merged minute rows"))?;
            if deleted != 1 {
                // Dropped unfinished: rolled back.
                return Ok(false);
            }
        }
    }
    for ((dimension, kind, value), partial) in &merge.merged {
        merge_row(
            &transaction,
            Tier::Hour,
            (&merge.tenant, dimension, merge.hour_ms),
            (*kind, value),
            partial,
        )?;
    }
    transaction
        .execute(
            "INSERT OR IGNORE INTO dimension_hours_merged (hour_ms) VALUES (?1)",
            [merge.hour_ms],
        )
        .map_err(backend("recording a merged hour"))?;
    transaction
        .commit()
        .map_err(backend("committing an hour merge"))?;
    Ok(true)
}

/// Deletes the rollups of minutes and hours before `before_ms` (an hour boundary),
/// inside retention's transaction.
pub(super) fn delete_before(
    transaction: &Transaction<'_>,
    before_ms: i64,
) -> Result<usize, StoreError> {
    let minutes = transaction
        .execute(
            "DELETE FROM dimension_rollups WHERE minute_ms < ?1",
            [before_ms],
        )
        .map_err(backend("deleting old dimension rollups"))?;
    let hours = transaction
        .execute(
            "DELETE FROM dimension_rollups_hourly WHERE hour_ms < ?1",
            [before_ms],
        )
        .map_err(backend("deleting old dimension rollups"))?;
    transaction
        .execute(
            "DELETE FROM dimension_hours_merged WHERE hour_ms < ?1",
            [before_ms],
        )
        .map_err(backend("deleting old dimension rollups"))?;
    Ok(minutes + hours)
}
