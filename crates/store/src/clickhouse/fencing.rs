//! Fencing: a stream process that lost its partitions cannot change what they count.
//!
//! ClickHouse cannot check a batch's claim and write the batch in one step, so a writer
//! that stalls between the two (a process paused past its session, its partitions given
//! to another) can still land its rows later. Claims make such rows count for nothing:
//!
//! - A stream process claims partitions when the group gives them to it
//!   ([`crate::BatchSink::claim`]): one row in `claims` per partition, with a claim above
//!   every earlier claim of the partition and the position the new owner starts from
//!   (`start_offset`, read just before the claim is written). Every row it writes
//!   carries its claim as the tables' version column (`written_ms`).
//! - A commit is refused unless the handle's claim is the partition's newest, held by no
//!   other process ([`Fencing::check`]).
//! - A batch written under a claim is *void* when a newer claim of its partition starts
//!   at or before the batch's first offset: the new owner started there and commits
//!   those offsets itself. A void batch's marker does not move the position and none of
//!   its rows count ([`Fencing::counted`] in every read of `rollups`,
//!   `dimension_rollups` and `ledger`). Where a void row and the new owner's row share a key, the
//!   newer claim is the higher version, so `FINAL` keeps the new owner's.
//!
//! A batch's rows count only once its marker exists, too. The batch's partials and its
//! marker are one INSERT, marker last, but an old server (18.16) keeps the rows of an
//! INSERT whose client went away mid-body (chunked encoding ends without an error), so
//! a process killed or cut off mid-commit can leave the first rows of a batch without
//! its marker. Those count for nothing; the batch's replay writes them again with the
//! marker ([`Fencing::counted`]).
//!
//! Which batches are void is asked at each read, cheaply: the only batch a stalled
//! writer can land after a newer claim is one whose check passed before that claim was
//! written, and the new owner read the position (that batch's first offset) just
//! before. So void batches start exactly at a newer claim's start or, while their claim
//! is not the newest, at or past the newest claim's start: markers at claims' starts
//! and markers under an old claim past the newest one's start are all that is read,
//! and the general rule is applied to those.
//!
//! Claims of one partition are taken one at a time (the group assigns a partition to
//! one member at a time); if two ever share a value, neither can commit until one of
//! them claims again.

use std::collections::BTreeMap;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{failed, ClickhouseStore};
use crate::StoreError;

/// How far before the minutes a read covers it looks for their batches' markers.
const MARKER_LEAD_MS: i64 = 3_600_000;

/// One claim as stored.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct ClaimRow {
    pub log_partition: u32,
    pub claim: u64,
    /// Random per store handle: tells two processes that took the same claim apart.
    pub owner: u64,
    pub start_offset: u64,
    pub claimed_ms: u64,
}

/// A batch marker that may be void.
#[derive(Debug, Row, Deserialize)]
struct MarkerRow {
    log_partition: u32,
    first_offset: u64,
    written_ms: u64,
}

/// The claims of every partition and the batches they void, as read at one moment.
#[derive(Debug, Default)]
pub(super) struct Fencing {
    /// Per partition, its claims in ascending order.
    claims: BTreeMap<u32, Vec<ClaimRow>>,
    /// (partition, first offset, claim) of every void batch.
    void: Vec<(u32, u64, u64)>,
}

impl Fencing {
    /// The newest claim of `partition` and how many processes hold it; (0, 0) when it
    /// was never claimed.
    fn newest(&self, partition: u32) -> (u64, usize) {
        let Some(claims) = self.claims.get(&partition) else {
            return (0, 0);
        };
        let newest = claims.last().map_or(0, |claim| claim.claim);
        let mut owners: Vec<u64> = claims
            .iter()
            .filter(|claim| claim.claim == newest)
            .map(|claim| claim.owner)
            .collect();
        owners.sort_unstable();
        owners.dedup();
        (newest, owners.len())
    }

    /// The highest claim among `partitions`.
    pub(super) fn highest(&self, partitions: &[u32]) -> u64 {
        partitions
            .iter()
            .map(|&partition| self.newest(partition).0)
            .max()
            .unwrap_or(0)
    }

    /// Refuses a commit of `partition` through a handle holding `held` unless that is
    /// the partition's newest claim and nobody else holds it (0 passes while the
    /// partition was never claimed).
    pub(super) fn check(&self, partition: u32, held: u64) -> Result<(), StoreError> {
        let (newest, holders) = self.newest(partition);
        if newest > held || (newest == held && holders > 1) {
            return Err(StoreError::Fenced {
                partition,
                held,
                newer: newest,
            });
        }
        Ok(())
    }

    /// Whether a batch of `partition` starting at `first_offset`, written under `claim`,
    /// is void: a newer claim starts at or before it.
    fn voids(&self, partition: u32, first_offset: u64, claim: u64) -> bool {
        self.claims.get(&partition).is_some_and(|claims| {
            claims
                .iter()
                .any(|newer| newer.claim > claim && newer.start_offset <= first_offset)
        })
    }

    /// A condition to add to the `WHERE` of a read of rollup or dimension rollup rows of
    /// minutes from `from_ms` on: the rows count only when their batch's marker exists
    /// (its commit INSERT landed whole; see the module docs) and no newer claim voids
    /// the batch.
    pub(super) fn counted(&self, from_ms: i64) -> String {
        let void = self.exclude();
        // A batch's marker is dated when it was written, never before its events'
        // minutes less the furthest an event may lie in the future; an hour covers that
        // and clock skew between processes.
        let markers_from = super::datetime_secs(from_ms.saturating_sub(MARKER_LEAD_MS));
        format!(
            "{void} AND (log_partition, first_offset, next_offset) IN
                (SELECT log_partition, first_offset, next_offset FROM rollups
                 WHERE tenant = '' AND model = '' AND minute >= toDateTime({markers_from}){void})"
        )
    }

    /// A condition to add to the `WHERE` of a read of `rollups` or `dimension_rollups`
    /// (both carry the batch's partition, first offset and claim): empty when no batch
    /// is void.
    pub(super) fn exclude(&self) -> String {
        if self.void.is_empty() {
            return String::new();
        }
        let tuples: Vec<String> = self
            .void
            .iter()
            .map(|(partition, first_offset, claim)| {
                format!("({partition}, {first_offset}, {claim})")
            })
            .collect();
        format!(
            " AND (log_partition, first_offset, written_ms) NOT IN ({})",
            tuples.join(", ")
        )
    }
}

impl ClickhouseStore {
    /// Claims and void batches as stored now.
    pub(super) async fn fencing(&self) -> Result<Fencing, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT log_partition, claim, owner, start_offset, claimed_ms FROM claims
                 ORDER BY log_partition, claim",
            )
            .fetch_all::<ClaimRow>()
            .await
            .map_err(failed("could not read claims"))?;
        let mut fencing = Fencing::default();
        for row in rows {
            fencing
                .claims
                .entry(row.log_partition)
                .or_default()
                .push(row);
        }
        if fencing.claims.is_empty() {
            return Ok(fencing);
        }
        // Candidates (module docs): markers at a claim's start, and markers under an
        // older claim at or past the newest claim's start.
        let (partitions, newest, starts) = fencing.claims.iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut partitions, mut newest, mut starts), (partition, claims)| {
                if let Some(last) = claims.last() {
                    partitions.push(partition.to_string());
                    newest.push(last.claim.to_string());
                    starts.push(last.start_offset.to_string());
                }
                (partitions, newest, starts)
            },
        );
        let (partitions, newest, starts) =
            (partitions.join(","), newest.join(","), starts.join(","));
        let candidates = self
            .client
            .query(&format!(
                "SELECT log_partition, first_offset, written_ms FROM rollups
                 WHERE tenant = '' AND model = ''
                   AND ((log_partition, first_offset) IN (SELECT log_partition, start_offset FROM claims)
                        OR (written_ms < transform(log_partition, [{partitions}], [{newest}], toUInt64(0))
                            AND first_offset >= transform(log_partition, [{partitions}], [{starts}], toUInt64(18446744073709551615))))"
            ))
            .fetch_all::<MarkerRow>()
            .await
            .map_err(failed("could not read batch markers"))?;
        let mut void: Vec<(u32, u64, u64)> = candidates
            .into_iter()
            .filter(|marker| {
                fencing.voids(marker.log_partition, marker.first_offset, marker.written_ms)
            })
            .map(|marker| (marker.log_partition, marker.first_offset, marker.written_ms))
            .collect();
        void.sort_unstable();
        void.dedup();
        fencing.void = void;
        Ok(fencing)
    }

    /// Claims `partitions` for this handle: one claim above every stored one, each
    /// partition starting from its position as read just before.
    pub(super) async fn claim_partitions(
        &self,
        partitions: &[u32],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let fencing = self.fencing().await?;
        let claim = crate::batch::next_claim(fencing.highest(partitions), now_ms);
        let positions = self.positions_under(&fencing).await?;
        let claimed_ms = u64::try_from(now_ms).unwrap_or(0);
        let rows: Vec<ClaimRow> = partitions
            .iter()
            .map(|&partition| ClaimRow {
                log_partition: partition,
                claim,
                owner: self.owner,
                start_offset: positions
                    .iter()
                    .find(|state| state.partition == partition)
                    .map_or(0, |state| state.next_offset),
                claimed_ms,
            })
            .collect();
        self.insert_rows("claims", &rows, "could not store claims")
            .await?;
        Ok(claim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(log_partition: u32, claim: u64, owner: u64, start_offset: u64) -> ClaimRow {
        ClaimRow {
            log_partition,
            claim,
            owner,
            start_offset,
            claimed_ms: 0,
        }
    }

    fn fencing(claims: Vec<ClaimRow>) -> Fencing {
        let mut fencing = Fencing::default();
        for row in claims {
            fencing
                .claims
                .entry(row.log_partition)
                .or_default()
                .push(row);
        }
        fencing
    }

    #[test]
    fn only_the_newest_single_holder_commits() {
        let fencing = fencing(vec![claim(0, 10, 1, 0), claim(0, 20, 2, 100)]);
        assert!(fencing.check(0, 20).is_ok());
        assert!(matches!(
            fencing.check(0, 10),
            Err(StoreError::Fenced {
                newer: 20,
                held: 10,
                ..
            })
        ));
        // Never claimed: anyone, until somebody claims.
        assert!(fencing.check(1, 0).is_ok());
        assert!(fencing.check(0, 0).is_err());
        let tied = self::fencing(vec![claim(0, 20, 1, 100), claim(0, 20, 2, 100)]);
        assert!(tied.check(0, 20).is_err(), "two holders of one claim");
    }

    #[test]
    fn a_batch_is_void_from_a_newer_claims_start_on() {
        let fencing = fencing(vec![
            claim(0, 10, 1, 0),
            claim(0, 20, 2, 100),
            claim(0, 30, 3, 250),
        ]);
        assert!(!fencing.voids(0, 50, 10), "before the next owner's start");
        assert!(fencing.voids(0, 100, 10), "at the next owner's start");
        assert!(fencing.voids(0, 120, 10));
        assert!(!fencing.voids(0, 100, 20), "the next owner's own batch");
        assert!(fencing.voids(0, 250, 20));
        assert!(!fencing.voids(0, 400, 30), "the newest claim is never void");
        assert!(!fencing.voids(1, 400, 10), "another partition");
    }

    #[test]
    fn the_exclusion_names_every_void_batch() {
        let mut fencing = fencing(vec![claim(0, 10, 1, 0)]);
        assert_eq!(fencing.exclude(), "");
        fencing.void = vec![(0, 100, 10), (3, 7, 12)];
        assert_eq!(
            fencing.exclude(),
            " AND (log_partition, first_offset, written_ms) NOT IN ((0, 100, 10), (3, 7, 12))"
        );
    }
}
