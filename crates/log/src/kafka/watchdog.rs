//! Notices a consumer group that has stopped reading some partitions, and says when
//! this member should leave and rejoin it.
//!
//! A broker that does not re-form the group after a member died without leaving (Tansu
//! 0.6 keeps the dead member's assignment, and hands a member that joins while the
//! dead one's session is open nothing or only a share) leaves partitions with records
//! that nobody reads, however long one waits. Kafka re-forms the group itself after
//! the session timeout, so there the watchdog stays quiet.
//!
//! Input, every few seconds: which partitions this member owns, and for every
//! partition of the topic the group's committed offset and the log's end offset. A
//! partition *waits* while its end is past its committed offset; it is *stalled* once
//! it has waited without its committed offset moving for the patience. The group is
//! stuck when a partition this member does not own is stalled while none of its own
//! is: the member is reading (or has nothing to read), so the store is not what holds
//! the others back. A member stuck that way leaves and rejoins, which makes any broker
//! form the group anew without the members whose sessions expired. If that does not
//! help, the next rejoin waits twice as long (up to [`MAX_BACKOFF`] times the
//! patience), so a cause that a rejoin cannot cure does not keep the group
//! rebalancing.
//!
//! No I/O and no clock of its own: the caller passes the time, so tests control it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Longest wait between two rejoins, as a multiple of the patience.
pub const MAX_BACKOFF: u32 = 8;

/// Why the group is stuck, as a metric label and a log field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StuckCause {
    /// This member owns no partition while some wait.
    NoPartitions { waiting: Vec<u32> },
    /// Partitions of other members (or of members that are gone) wait while this
    /// member's own are read.
    PartitionsUnread { waiting: Vec<u32> },
}

impl StuckCause {
    /// Bounded label value for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            StuckCause::NoPartitions { .. } => "no_partitions",
            StuckCause::PartitionsUnread { .. } => "partitions_unread",
        }
    }

    /// The partitions that wait.
    pub fn waiting(&self) -> &[u32] {
        match self {
            StuckCause::NoPartitions { waiting } | StuckCause::PartitionsUnread { waiting } => {
                waiting
            }
        }
    }
}

impl std::fmt::Display for StuckCause {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StuckCause::NoPartitions { waiting } => write!(
                formatter,
                "this member owns no partition while partitions {waiting:?} have records nobody commits"
            ),
            StuckCause::PartitionsUnread { waiting } => write!(
                formatter,
                "partitions {waiting:?} of other members have records nobody commits while this member reads its own"
            ),
        }
    }
}

/// One partition as seen at a check: the group's committed offset (0 when nothing was
/// committed yet) and the log's end offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSeen {
    pub partition: u32,
    pub committed: u64,
    pub end: u64,
}

/// What the caller should do after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every waiting partition is being read.
    Healthy,
    /// Stuck, and a rejoin was tried recently: wait for it to take effect.
    Stuck(StuckCause),
    /// Stuck: leave the group and join it again.
    Rejoin(StuckCause),
}

#[derive(Debug)]
struct Watched {
    committed: u64,
    /// Since when the committed offset has not moved while the partition waited.
    waiting_since: Option<Instant>,
    /// Since when this member owns the partition: its own partition is judged only on
    /// the time it has had it.
    owned_since: Option<Instant>,
}

#[derive(Debug)]
pub struct Watchdog {
    patience: Duration,
    partitions: BTreeMap<u32, Watched>,
    /// When the last rejoin was asked for, and how many in a row did not help.
    last_rejoin: Option<Instant>,
    rejoins_in_a_row: u32,
}

impl Watchdog {
    pub fn new(patience: Duration) -> Self {
        Self {
            patience,
            partitions: BTreeMap::new(),
            last_rejoin: None,
            rejoins_in_a_row: 0,
        }
    }

    /// Takes one look at the group and says what to do.
    pub fn check(
        &mut self,
        now: Instant,
        owned: &BTreeSet<u32>,
        seen: &[PartitionSeen],
    ) -> Verdict {
        let mut own_stalled = false;
        let mut others_stalled = Vec::new();
        for partition in seen {
            let waits = partition.end > partition.committed;
            let watched = self
                .partitions
                .entry(partition.partition)
                .or_insert(Watched {
                    committed: partition.committed,
                    waiting_since: None,
                    owned_since: None,
                });
            if !waits || watched.committed != partition.committed {
                watched.waiting_since = None;
            }
            watched.committed = partition.committed;
            let is_owned = owned.contains(&partition.partition);
            watched.owned_since = match (is_owned, watched.owned_since) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(now),
                (false, _) => None,
            };
            if !waits {
                continue;
            }
            let waiting_since = *watched.waiting_since.get_or_insert(now);
            let judged_since = watched
                .owned_since
                .map_or(waiting_since, |owned_since| owned_since.max(waiting_since));
            if now.saturating_duration_since(judged_since) < self.patience {
                continue;
            }
            if is_owned {
                own_stalled = true;
            } else {
                others_stalled.push(partition.partition);
            }
        }
        if others_stalled.is_empty() {
            if !own_stalled {
                self.rejoins_in_a_row = 0;
                self.last_rejoin = None;
            }
            return Verdict::Healthy;
        }
        if own_stalled {
            // This member cannot read either: the store (or the broker) holds everyone
            // back, and a rejoin would not help.
            return Verdict::Healthy;
        }
        let cause = if owned.is_empty() {
            StuckCause::NoPartitions {
                waiting: others_stalled,
            }
        } else {
            StuckCause::PartitionsUnread {
                waiting: others_stalled,
            }
        };
        let rejoin_due = match self.last_rejoin {
            None => true,
            Some(at) => {
                let doublings = self
                    .rejoins_in_a_row
                    .saturating_sub(1)
                    .min(MAX_BACKOFF.trailing_zeros());
                now.saturating_duration_since(at) >= self.patience * (1u32 << doublings)
            }
        };
        if !rejoin_due {
            return Verdict::Stuck(cause);
        }
        self.last_rejoin = Some(now);
        self.rejoins_in_a_row = self.rejoins_in_a_row.saturating_add(1);
        Verdict::Rejoin(cause)
    }
}

#[cfg(test)]
mod tests;
