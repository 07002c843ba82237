//! Where each assigned partition's fetch stands: which offset the stream expects next,
//! and, until that record arrives, where the fetch was started and since when.
//!
//! This is the consumer's positioning as a state machine with no I/O: records, time and
//! the broker's log start come in as arguments, and what the consumer must do (take the
//! record, skip it, keep it for the next batch, restart a partition's fetch) goes out as
//! values. [`super::consumer`] does the I/O around it; the tests here drive it against a
//! model of a partition's log and its broker.
//!
//! The rules:
//! - A record below the expected one is already in the store: skipped. The one just
//!   before the expected record tells that the fetch is in place.
//! - A record above the expected one right after a fetch (re)started is how some
//!   Kafka-API brokers (Tansu among them) answer a fetch that starts inside a producer
//!   batch: from the next batch. The fetch restarts further back, twice as far each
//!   time. A positioned fetch that returns nothing for [`POSITIONING_PATIENCE`] does the
//!   same (inside the newest batch, such a broker answers nothing at all).
//! - Otherwise a record above the expected one means records are missing from the topic
//!   (retention or compaction outran the stream): [`Missing`], never a silent skip. A
//!   fetch from offset 0 that still skips asks the broker where the log starts: past the
//!   expected record, it is gone; if the broker still holds it (or does not say), the
//!   fetch restarts from 0 at most [`MAX_RESTARTS_AT_ZERO`] times first.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{LogError, StartPosition};

/// The first step back when a positioned fetch skipped past the expected record.
const FIRST_REWIND: u64 = 64;
/// How long a positioned fetch may return nothing before it restarts further back. A
/// broker that answers a fetch inside a producer batch from the next batch answers
/// nothing when that batch is the newest. Well above a fetch's own wait
/// (`fetch.wait.max.ms`, 500 ms): a broker slow to answer under load must not be taken
/// for one that answered nothing, since every restart throws away the fetch in flight
/// (at 1 s, Tansu on SQLite under a drain's load was seen restarted again and again).
pub(super) const POSITIONING_PATIENCE: Duration = Duration::from_secs(5);
/// How far back fetches that return nothing go, at most: beyond a producer batch (at
/// most 10,000 records by librdkafka's default `batch.num.messages`) silence means the
/// broker is not answering, and going further would only re-read more once it does.
const MAX_STALL_REWIND: u64 = 32_768;
/// How many times a fetch from offset 0 is restarted when it skips past a record the
/// broker says it still holds (or does not say), before the consumer stops with an
/// error.
const MAX_RESTARTS_AT_ZERO: u32 = 3;

/// What to do with one fetched record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The expected record of its partition: it joins the batch being filled.
    Take,
    /// Already in the store, or of a partition not positioned (yet, or any more).
    Skip,
    /// The expected record of another partition than the batch's: it opens the next
    /// batch, offered again then. Nothing changed.
    Hold,
    /// The fetch skipped past the expected record: restart the partition's fetch at
    /// `start`, leaving the other partitions' fetches alone.
    Restart { start: u64 },
}

/// Records are missing from the topic: the stream cannot go on without losing them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Missing {
    pub partition: u32,
    pub expected: u64,
    pub found: u64,
    pub reason: String,
}

impl Missing {
    pub(super) fn into_error(self, topic: &str) -> LogError {
        LogError::Corrupt {
            location: format!("kafka topic {topic} partition {}", self.partition),
            detail: format!(
                "the next record is at offset {} but the stream expects {}: {}",
                self.found, self.expected, self.reason
            ),
        }
    }
}

/// Where a positioned partition's fetch starts, until its expected record (or the one
/// just before it) arrives.
#[derive(Debug, Clone, Copy)]
struct Positioning {
    fetch_start: u64,
    /// Fetches restarted at offset 0 that still skipped past the expected record.
    restarts_at_zero: u32,
    /// When the fetch (re)started.
    since: Instant,
    /// Whether any record of the partition arrived since.
    fetched_any: bool,
}

impl Positioning {
    fn at(fetch_start: u64, now: Instant) -> Self {
        Self {
            fetch_start,
            restarts_at_zero: 0,
            since: now,
            fetched_any: false,
        }
    }

    /// A fetch start twice as far back from `expected` as this one (at least
    /// [`FIRST_REWIND`]), and how far back that is.
    fn further_back(&self, expected: u64) -> (u64, u64) {
        let distance = expected
            .saturating_sub(self.fetch_start)
            .max(FIRST_REWIND / 2)
            * 2;
        (expected.saturating_sub(distance), distance)
    }
}

/// The positions of the partitions assigned to one consumer.
#[derive(Debug, Default)]
pub(super) struct Positions {
    /// Next offset to return, per partition assigned at a position.
    expected: BTreeMap<u32, u64>,
    /// Partitions positioned but whose expected record has not arrived yet.
    positioning: BTreeMap<u32, Positioning>,
}

impl Positions {
    /// Partitions assigned at the store's positions. Answers where every assigned
    /// partition's fetch starts, for one new assignment of all of them.
    pub(super) fn assign(&mut self, positions: &[StartPosition], now: Instant) -> Vec<(u32, u64)> {
        for position in positions {
            self.expected
                .insert(position.partition, position.next_offset);
            self.positioning.insert(
                position.partition,
                Positioning::at(position.next_offset, now),
            );
        }
        self.fetch_starts(now)
    }

    /// Where every assigned partition's fetch starts, for a new assignment of all of
    /// them: one still positioning at its fetch start, the others at their expected
    /// offset. A new assignment restarts every partition's fetch, and a restart at the
    /// expected offset can land inside a producer batch too, so those partitions are
    /// positioning again.
    pub(super) fn fetch_starts(&mut self, now: Instant) -> Vec<(u32, u64)> {
        self.expected
            .iter()
            .map(|(&partition, &expected)| {
                let start = self
                    .positioning
                    .entry(partition)
                    .or_insert(Positioning::at(expected, now))
                    .fetch_start;
                (partition, start)
            })
            .collect()
    }

    /// These partitions belong to another consumer now.
    pub(super) fn revoke(&mut self, partitions: &[u32]) {
        for partition in partitions {
            self.expected.remove(partition);
            self.positioning.remove(partition);
        }
    }

    /// A batch taken from `first_offset` on was dropped (a rebalance came while it was
    /// filled): the partition expects its first record again.
    pub(super) fn unread(&mut self, partition: u32, first_offset: u64) {
        if let Some(expected) = self.expected.get_mut(&partition) {
            *expected = first_offset;
        }
    }

    /// The next offset of each assigned, positioned partition.
    pub(super) fn expected(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.expected
            .iter()
            .map(|(&partition, &offset)| (partition, offset))
    }

    /// One fetched record of `partition` at `offset`, while a batch of `batch` (if any)
    /// is being filled. `log_start` asks the broker where the partition's log starts;
    /// it is called only when a fetch from offset 0 skipped the expected record.
    pub(super) fn offer(
        &mut self,
        partition: u32,
        offset: u64,
        batch: Option<u32>,
        now: Instant,
        log_start: impl FnOnce() -> Option<u64>,
    ) -> Result<Step, Missing> {
        let Some(&expected) = self.expected.get(&partition) else {
            // Assigned but not yet positioned, or revoked: the record is fetched again
            // from the store's position.
            return Ok(Step::Skip);
        };
        if offset < expected {
            self.fetched_below(partition, offset, expected);
            return Ok(Step::Skip);
        }
        if offset > expected {
            return self.rewind(partition, expected, offset, now, log_start);
        }
        if batch.is_some_and(|batch| batch != partition) {
            return Ok(Step::Hold);
        }
        self.expected.insert(partition, offset + 1);
        self.positioning.remove(&partition);
        Ok(Step::Take)
    }

    /// A record below the expected one arrived: the fetch is running, and if it is the
    /// record just before the expected one, the fetch is in place.
    fn fetched_below(&mut self, partition: u32, offset: u64, expected: u64) {
        if offset + 1 == expected {
            self.positioning.remove(&partition);
        } else if let Some(positioning) = self.positioning.get_mut(&partition) {
            positioning.fetched_any = true;
        }
    }

    /// A record past the expected one arrived: see the module's rules.
    fn rewind(
        &mut self,
        partition: u32,
        expected: u64,
        found: u64,
        now: Instant,
        log_start: impl FnOnce() -> Option<u64>,
    ) -> Result<Step, Missing> {
        let missing = |reason: String| Missing {
            partition,
            expected,
            found,
            reason,
        };
        let deleted =
            "records are missing from the topic (retention or compaction deleted them before they were processed)";
        let Some(&positioning) = self.positioning.get(&partition) else {
            return Err(missing(deleted.to_string()));
        };
        let next = if positioning.fetch_start > 0 {
            Positioning::at(positioning.further_back(expected).0, now)
        } else {
            let log_start = log_start();
            if let Some(start) = log_start.filter(|start| *start > expected) {
                return Err(missing(format!(
                    "{deleted}; the topic now starts at offset {start}"
                )));
            }
            if positioning.restarts_at_zero >= MAX_RESTARTS_AT_ZERO {
                let held = log_start.map_or_else(
                    || "the broker did not say where the topic starts".to_string(),
                    |start| format!("the broker says the topic starts at offset {start}"),
                );
                return Err(missing(format!(
                    "{} fetches from offset 0 skipped it and {held}: records are missing (compaction, or a broker fault)",
                    MAX_RESTARTS_AT_ZERO + 1
                )));
            }
            Positioning {
                restarts_at_zero: positioning.restarts_at_zero + 1,
                ..Positioning::at(0, now)
            }
        };
        tracing::debug!(
            partition,
            expected,
            found,
            start = next.fetch_start,
            "fetch skipped the expected record; starting further back"
        );
        self.positioning.insert(partition, next);
        Ok(Step::Restart {
            start: next.fetch_start,
        })
    }

    /// The fetches to restart further back: every partition positioned for longer than
    /// [`POSITIONING_PATIENCE`] without a single record. At the end of the log that
    /// re-reads a few records before the expected one (skipped), which is how the
    /// consumer learns the fetch is in place; inside the newest producer batch of a
    /// broker that answers from the next batch, it is what gets the batch read at all.
    pub(super) fn stalled(&mut self, now: Instant) -> Vec<(u32, u64)> {
        let stalled: Vec<(u32, u64)> = self
            .positioning
            .iter()
            .filter(|(_, positioning)| {
                positioning.fetch_start > 0
                    && !positioning.fetched_any
                    && now.saturating_duration_since(positioning.since) >= POSITIONING_PATIENCE
            })
            .filter_map(|(&partition, positioning)| {
                let expected = *self.expected.get(&partition)?;
                let (start, distance) = positioning.further_back(expected);
                (distance <= MAX_STALL_REWIND).then_some((partition, start))
            })
            .collect();
        for &(partition, start) in &stalled {
            tracing::debug!(
                partition,
                start,
                "positioned fetch returned nothing; starting further back"
            );
            self.positioning
                .insert(partition, Positioning::at(start, now));
        }
        stalled
    }
}

#[cfg(test)]
mod tests;
