//! The stream's batches ([`BatchSink`]) and the positions they move ([`Positions`]):
//! raw events written as Parquet files first, then one immediate transaction that
//! registers them with the rollups, the dedup ids, the dead letters and the position.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ais_rollup::RollupPartial;
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{
    backend, dead_letters, dimensions, ledger, now_ms, offset_from_sql, offset_to_sql, raw_files,
    usage, SqliteStore, HASH_BYTES,
};
use crate::raw::{PendingFile, RawEvents, RegisteredFile};
use crate::{BatchCommit, BatchSink, DedupEntry, PartitionState, Positions, StoreError};

/// One batch as one immediate transaction: position check, rollups and dimension
/// rollups merged in place, dedup ids, new position. Any error drops the transaction, which rolls it back, so a
/// refused or failed batch leaves nothing behind.
pub(super) fn apply(
    connection: &mut Connection,
    batch: &BatchCommit,
    held: u64,
    files: &[PendingFile],
) -> Result<Vec<RegisteredFile>, StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("starting a commit"))?;
    check_claim(&transaction, batch.partition, held)?;
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
    dimensions::write(&transaction, &batch.dimensions)?;
    ledger::add(&transaction, batch.partition, &batch.ledger)?;
    usage::add(&transaction, &batch.usage)?;
    let registered = raw_files::register(&transaction, files)?;
    transaction.commit().map_err(backend("committing"))?;
    Ok(registered)
}

/// The stored next offset of a partition (0 when it has none).
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

/// The newest claim of `partition` (0 when never claimed).
fn stored_claim(connection: &Connection, partition: u32) -> Result<u64, StoreError> {
    let stored: Option<i64> = connection
        .query_row(
            "SELECT claim FROM claims WHERE partition = ?1",
            [partition],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend("reading a claim"))?;
    Ok(stored.map_or(0, |claim| u64::try_from(claim).unwrap_or(0)))
}

/// Refuses a commit through a handle whose claim of `partition` is not the newest.
fn check_claim(connection: &Connection, partition: u32, held: u64) -> Result<(), StoreError> {
    let newest = stored_claim(connection, partition)?;
    if newest > held {
        return Err(StoreError::Fenced {
            partition,
            held,
            newer: newest,
        });
    }
    Ok(())
}

/// Claims `partitions` in one transaction; returns the claim.
pub(super) fn claim(
    connection: &mut Connection,
    partitions: &[u32],
    now_ms: i64,
) -> Result<u64, StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("starting a claim"))?;
    let mut highest = 0;
    for &partition in partitions {
        highest = highest.max(stored_claim(&transaction, partition)?);
    }
    let claim = crate::batch::next_claim(highest, now_ms);
    let stored = i64::try_from(claim)
        .map_err(|_| StoreError::Malformed(format!("claim {claim} is past SQLite's integers")))?;
    for &partition in partitions {
        transaction
            .execute(
                "INSERT OR REPLACE INTO claims (partition, claim, claimed_ms) VALUES (?1, ?2, ?3)",
                params![partition, stored, now_ms],
            )
            .map_err(backend("storing a claim"))?;
    }
    transaction.commit().map_err(backend("storing a claim"))?;
    Ok(claim)
}

/// One batch: refuse early when fenced or out of order (no files written for nothing),
/// write its raw events, then the transaction that makes them count (which checks
/// both again, atomically with the writes).
fn commit_batch(
    connection: &mut Connection,
    raw: &RawEvents,
    batch: &BatchCommit,
    held: u64,
) -> Result<(), StoreError> {
    check_claim(connection, batch.partition, held)?;
    let expected = stored_position(connection, batch.partition)?;
    if batch.first_offset != expected {
        return Err(StoreError::OutOfOrder {
            partition: batch.partition,
            first_offset: batch.first_offset,
            expected,
        });
    }
    let files = raw.write_batch(batch.partition, batch.first_offset, &batch.events)?;
    match apply(connection, batch, held, &files) {
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
impl Positions for SqliteStore {
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
}

#[async_trait]
impl BatchSink for SqliteStore {
    fn keeps_dead_letters(&self) -> bool {
        true
    }

    async fn keep_dimension_rollups(
        &self,
        names: &[String],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        // Events already committed were not rolled up by these dimensions: rollups
        // count from the minute after the newest of them (or after now, if later).
        let newest_committed = self
            .raw
            .catalog()
            .snapshot(i64::MIN, i64::MAX)
            .iter()
            .map(|file| file.max_timestamp_ms)
            .max()
            .unwrap_or(i64::MIN);
        let first_uncovered_ms = newest_committed.max(now_ms);
        let names = names.to_vec();
        self.with_writer(move |connection| {
            dimensions::keep(connection, &names, first_uncovered_ms)
        })
        .await?;
        Ok(true)
    }

    async fn claim(&self, partitions: &[u32], now_ms: i64) -> Result<(), StoreError> {
        let claimed = partitions.to_vec();
        let claim = self
            .with_writer(move |connection| claim(connection, &claimed, now_ms))
            .await?;
        self.held.hold(partitions, claim);
        Ok(())
    }

    async fn commit(&self, batch: BatchCommit) -> Result<(), StoreError> {
        // Timed from the call, so the histogram includes the wait for the writer.
        let started = Instant::now();
        let raw = Arc::clone(&self.raw);
        let held = self.held.of(batch.partition);
        let outcome = self
            .with_writer(move |connection| commit_batch(connection, &raw, &batch, held))
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
}
