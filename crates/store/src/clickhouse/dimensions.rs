//! Dimension rollups in ClickHouse: written per batch just before its commit point,
//! counted once the batch committed, read by the breakdowns they cover completely.
//!
//! ClickHouse has no transaction across tables, and a batch's commit point is the one
//! INSERT into `rollups` that carries its marker row (the engine's module docs). The
//! batch's dimension partials go to `dimension_rollups` before that INSERT, each row
//! tagged with the batch's (partition, first offset, next offset), and a read counts a
//! row only when a marker with the same three exists. Rows of a commit that did not
//! finish therefore count for nothing: a replay of the same batch replaces them (same
//! key, newer `written_ms`, read with `FINAL`), and one with other bounds leaves them
//! unmatched until retention deletes them.
//!
//! Coverage is checked, not assumed. A breakdown from these rows sums the requests of
//! the dimension's committed rows over its range and compares the sum with that of the
//! (tenant, model) rollups over the same range. A batch that rolled the dimension up
//! puts each of its events in exactly one of its partials, so the two sums are equal
//! exactly when every committed batch of the range rolled the dimension up; a stream
//! process started without the dimension, or before it was listed, makes them differ,
//! and the breakdown scans raw events instead. No record of when each dimension was
//! listed is kept, and any number of stream processes may write.
//!
//! The bound: a batch's groups are placed against the groups already stored for their
//! (tenant, dimension, minute) ([`StoredValues`]), remembered in memory per recent
//! minute and read from the table when a minute is new to this process. A minute so
//! holds at most `max_values_per_minute` values per stream process that writes it
//! (each reads what the others stored when it first meets the minute); the rest merge
//! into the minute's overflow group, and a range with an overflow row is scanned.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{MutexGuard, PoisonError};

use ais_rollup::dimensions::{DimensionKey, DimensionValue, StoredValues};
use ais_rollup::RollupPartial;

use super::rows::{DimensionRowIn, DimensionRowOut, StoredGroupRow};
use super::{datetime_secs, failed, ClickhouseStore};
use crate::query::Covered;
use crate::{DimensionPartials, StoreError};

/// Minutes whose groups are remembered at most; past it the memory is cleared and
/// minutes are read back from the table when next met.
const MAX_REMEMBERED_MINUTES: usize = 100_000;

/// (Tenant, dimension, minute) tuples looked up in one query.
const LOOKUP_CHUNK: usize = 500;

/// A (tenant, dimension, minute).
type MinuteKey = (String, String, i64);

/// The groups stored for each recent (tenant, dimension, minute), as far as this
/// process knows.
#[derive(Debug, Default)]
pub(super) struct Placements {
    minutes: HashMap<MinuteKey, StoredValues>,
}

fn group_of(kind: u8, value: String) -> Result<DimensionValue, StoreError> {
    DimensionValue::from_stored(kind, value)
        .ok_or_else(|| StoreError::Malformed(format!("dimension rollup of kind {kind}")))
}

fn minute_key(key: &DimensionKey) -> MinuteKey {
    (key.tenant.clone(), key.dimension.clone(), key.minute_ms)
}

impl ClickhouseStore {
    fn placements(&self) -> MutexGuard<'_, Placements> {
        // The map is valid after any panic of a holder: each change is one insert.
        self.placements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The groups stored for each of `minutes`, by any batch, committed or not (an
    /// unfinished batch's groups only make the bound stricter).
    async fn stored_groups(
        &self,
        minutes: &[MinuteKey],
    ) -> Result<HashMap<MinuteKey, Vec<DimensionValue>>, StoreError> {
        let mut stored: HashMap<MinuteKey, Vec<DimensionValue>> = HashMap::new();
        for chunk in minutes.chunks(LOOKUP_CHUNK) {
            let tuples = vec!["(?, ?, toDateTime(?))"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT DISTINCT tenant, dimension,
                        toInt64(toUnixTimestamp(minute)) * 1000 AS minute_ms, kind, value
                 FROM dimension_rollups WHERE (tenant, dimension, minute) IN ({tuples})"
            );
            let mut query = self.client.query(&sql);
            for (tenant, dimension, minute_ms) in chunk {
                query = query
                    .bind(tenant.as_str())
                    .bind(dimension.as_str())
                    .bind(datetime_secs(*minute_ms));
            }
            let rows = query
                .fetch_all::<StoredGroupRow>()
                .await
                .map_err(failed("could not read stored dimension groups"))?;
            for row in rows {
                let group = group_of(row.kind, row.value)?;
                stored
                    .entry((row.tenant, row.dimension, row.minute_ms))
                    .or_default()
                    .push(group);
            }
        }
        Ok(stored)
    }

    /// A batch's partials placed against the bound and merged per target group: two
    /// partials may land in one minute's overflow, and a batch writes one row per key.
    async fn place(
        &self,
        batch: &DimensionPartials,
    ) -> Result<BTreeMap<DimensionKey, RollupPartial>, StoreError> {
        let new_minutes: Vec<MinuteKey> = {
            let placements = self.placements();
            let mut seen = HashSet::new();
            batch
                .partials
                .iter()
                .map(|(key, _)| minute_key(key))
                .filter(|minute| {
                    !placements.minutes.contains_key(minute) && seen.insert(minute.clone())
                })
                .collect()
        };
        let mut stored = self.stored_groups(&new_minutes).await?;
        let mut placements = self.placements();
        if placements.minutes.len() + new_minutes.len() > MAX_REMEMBERED_MINUTES {
            placements.minutes.clear();
        }
        for minute in new_minutes {
            let groups = stored.remove(&minute).unwrap_or_default();
            // Another commit may have met the minute meanwhile: what it placed stays.
            placements
                .minutes
                .entry(minute)
                .or_insert_with(|| StoredValues::new(groups));
        }
        let mut placed: BTreeMap<DimensionKey, RollupPartial> = BTreeMap::new();
        for (key, partial) in &batch.partials {
            let held = placements.minutes.entry(minute_key(key)).or_default();
            let target = held.place(&key.value, batch.max_values_per_minute);
            placed
                .entry(DimensionKey {
                    value: target,
                    ..key.clone()
                })
                .or_default()
                .merge(partial);
        }
        Ok(placed)
    }

    /// Writes a batch's dimension partials, tagged with its offsets: before the commit
    /// INSERT, and counted only once it lands.
    pub(super) async fn insert_dimensions(
        &self,
        batch: &crate::BatchCommit,
    ) -> Result<(), StoreError> {
        if batch.dimensions.partials.is_empty() {
            return Ok(());
        }
        let placed = self.place(&batch.dimensions).await?;
        let written_ms = self.row_version(batch.partition);
        let encoded: Vec<Vec<u8>> = placed.values().map(RollupPartial::to_bytes).collect();
        let refused = failed("refused the dimension rollups");
        let mut insert = self
            .client
            .insert::<DimensionRowOut<'_>>("dimension_rollups")
            .await
            .map_err(&refused)?;
        for ((key, partial), bytes) in placed.iter().zip(&encoded) {
            let (kind, value) = key.value.stored();
            let row = DimensionRowOut {
                tenant: &key.tenant,
                dimension: &key.dimension,
                minute: datetime_secs(key.minute_ms),
                kind,
                value,
                log_partition: batch.partition,
                first_offset: batch.first_offset,
                next_offset: batch.next_offset,
                requests: partial.requests,
                partial: bytes,
                written_ms,
            };
            insert.write(&row).await.map_err(&refused)?;
        }
        insert.end().await.map_err(&refused)
    }

    /// The committed groups of `dimension` over the whole minutes `[from_ms, to_ms)`,
    /// of one tenant or all, merged per group. `None` when a row in range is an
    /// overflow, or the rows do not cover every committed event of the range.
    pub(super) async fn read_dimension(
        &self,
        tenant: Option<&str>,
        dimension: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Option<Covered>, StoreError> {
        let (of_tenant, of_rollup_tenant) = match tenant {
            Some(_) => ("tenant = ? AND ", "tenant = ?"),
            None => ("", "tenant != ''"),
        };
        // Rows of batches whose marker is missing or void count for nothing
        // (`fencing`), here and in the model rollups they are checked against.
        let counted = self.fencing().await?.counted(from_ms);
        let sql = format!(
            "SELECT kind, value, requests, partial FROM dimension_rollups FINAL
             WHERE {of_tenant}dimension = ? AND minute >= toDateTime(?) AND minute < toDateTime(?){counted}"
        );
        let mut query = self.client.query(&sql);
        if let Some(tenant) = tenant {
            query = query.bind(tenant);
        }
        let unreadable = failed("could not read dimension rollups");
        let mut cursor = query
            .bind(dimension)
            .bind(datetime_secs(from_ms))
            .bind(datetime_secs(to_ms))
            .fetch::<DimensionRowIn>()
            .map_err(&unreadable)?;
        let mut merged: HashMap<DimensionValue, RollupPartial> = HashMap::new();
        let mut requests = 0u64;
        while let Some(row) = cursor.next().await.map_err(&unreadable)? {
            let group = group_of(row.kind, row.value)?;
            if group == DimensionValue::Overflow {
                return Ok(None);
            }
            let partial = RollupPartial::from_bytes(&row.partial).map_err(|error| {
                StoreError::Malformed(format!("dimension rollup of {dimension}: {error}"))
            })?;
            requests = requests.saturating_add(row.requests);
            merged.entry(group).or_default().merge(&partial);
        }
        let mut counted = self.client.query(&format!(
            "SELECT sum(requests) FROM rollups FINAL
             WHERE {of_rollup_tenant} AND minute >= toDateTime(?) AND minute < toDateTime(?){counted}"
        ));
        if let Some(tenant) = tenant {
            counted = counted.bind(tenant);
        }
        let counted: u64 = counted
            .bind(datetime_secs(from_ms))
            .bind(datetime_secs(to_ms))
            .fetch_one()
            .await
            .map_err(failed("could not read rollups"))?;
        if counted != requests {
            tracing::debug!(
                dimension,
                counted,
                rolled_up = requests,
                "dimension rollups do not cover the range: scanning"
            );
            return Ok(None);
        }
        Ok(Some(Covered {
            groups: merged.into_iter().collect(),
            from_ms,
            to_ms,
        }))
    }
}
