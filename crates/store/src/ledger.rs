//! The ledger: what became of every record the log acknowledged, per tenant, hour of
//! event time and log partition.
//!
//! Every event a client got a 202 for is one record in the log (the ack waits until it
//! is durable there), so the stream counts `accepted` as it reads each record, before
//! it decides anything about it; then exactly one of `committed` (stored and counted),
//! `duplicates` (an `event_id` already seen) or `dead_lettered` (could not be
//! processed). `late` counts the committed events merged into a window that was already
//! final. The counts travel with the batch's commit, so they are exactly once through
//! crashes and replays like the rollups. An hour is *balanced* when accepted =
//! committed + duplicates + dead_lettered: a record read but neither stored, dropped as
//! a duplicate nor dead-lettered unbalances its hour.
//!
//! A record whose tenant or time cannot be read (undecodable bytes) is counted under
//! tenant `""` in the hour it was read.

/// One hour of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LedgerKey {
    pub tenant: String,
    /// Start of the hour of the records' event time, unix ms.
    pub hour_ms: i64,
}

/// What became of the records of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerCounts {
    pub accepted: u64,
    pub committed: u64,
    pub duplicates: u64,
    /// Committed events merged into a window already final (a subset of `committed`).
    pub late: u64,
    pub dead_lettered: u64,
}

impl LedgerCounts {
    pub fn add(&mut self, other: &LedgerCounts) {
        self.accepted += other.accepted;
        self.committed += other.committed;
        self.duplicates += other.duplicates;
        self.late += other.late;
        self.dead_lettered += other.dead_lettered;
    }

    /// Every accepted record is accounted for exactly once.
    pub fn balanced(&self) -> bool {
        self.accepted
            == self
                .committed
                .saturating_add(self.duplicates)
                .saturating_add(self.dead_lettered)
    }
}

/// One stored row: a key's counts in one log partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub tenant: String,
    pub hour_ms: i64,
    pub partition: u32,
    pub counts: LedgerCounts,
}

/// How much of a partition the ledger accounts for: every record below the position
/// was read once, so `accounted` (the ledger's accepted records of the partition, with
/// those read before the ledger existed and those of hours retention deleted) equals
/// `position` when nothing was lost or counted twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub partition: u32,
    pub position: u64,
    pub accounted: u64,
}

/// What a ledger read covers: hours starting in `[from_ms, to_ms)`, of one tenant or
/// all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerQuery {
    pub tenant: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
}

pub use crate::raw::file::hour_of;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_balances_when_every_accepted_record_is_accounted_once() {
        let mut counts = LedgerCounts {
            accepted: 10,
            committed: 7,
            duplicates: 2,
            late: 3,
            dead_lettered: 1,
        };
        assert!(counts.balanced());
        counts.add(&LedgerCounts {
            accepted: 1,
            ..LedgerCounts::default()
        });
        assert!(!counts.balanced(), "a record read and never accounted for");
    }

    #[test]
    fn every_time_has_an_hour() {
        assert_eq!(hour_of(3_600_000 * 5 + 17), 3_600_000 * 5);
        assert_eq!(hour_of(-1), -3_600_000);
        assert_eq!(hour_of(i64::MIN), i64::MIN);
        assert_eq!(hour_of(i64::MAX), i64::MAX - i64::MAX % 3_600_000);
    }
}
