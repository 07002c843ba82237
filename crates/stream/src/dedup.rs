//! Deduplication of client retries by (tenant, `event_id`).
//!
//! Only ids the client set are tracked: generated ids are unique by construction, and a
//! client that sends none cannot be deduplicated anyway. An id is kept as the xxh3-128
//! hash of `tenant 0x00 event_id` (a collision among 10 M ids has odds near 10^-25).
//! Ids live in one hash set for O(1) lookups, and are also filed by the minute of their
//! event time so that eviction is by whole minutes: those older than the horizon behind
//! the newest event time seen, and the oldest minutes whenever the entry bound is passed.
//! Memory at the 10 M default bound is about 40 bytes an id.

use std::collections::BTreeMap;

use ais_store::DedupEntry;

/// Bounds of the dedup window.
#[derive(Debug, Clone, Copy)]
pub struct DedupConfig {
    /// Event time kept behind the newest event seen (1 hour).
    pub horizon_ms: i64,
    /// Ids kept at most (10 M); beyond, the oldest minutes are evicted.
    pub max_entries: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            horizon_ms: 3_600_000,
            max_entries: 10_000_000,
        }
    }
}

/// What [`Dedup::check_and_insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    Duplicate,
    /// Older than the horizon: it cannot be checked and is treated as new.
    BeyondHorizon,
}

pub use ais_model::event::dedup_hash as hash;

#[derive(Debug, Default)]
pub struct Dedup {
    config: DedupConfig,
    /// The ids are hashes already, so they are hashed again by foldhash (a few
    /// multiplications, seeded per set so ids a producer picks cannot be aimed at one
    /// bucket) rather than SipHash: this set is looked up once per event.
    ids: hashbrown::HashSet<u128, foldhash::fast::RandomState>,
    by_minute: BTreeMap<i64, Vec<u128>>,
    newest_minute: Option<i64>,
    evicted: u64,
}

impl Dedup {
    pub fn new(config: DedupConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Rebuilds the window from entries the store kept.
    pub fn rebuild(config: DedupConfig, entries: &[DedupEntry]) -> Self {
        let mut dedup = Self::new(config);
        for entry in entries {
            dedup.check_and_insert(entry.hash, entry.minute_ms);
        }
        dedup.evicted = 0;
        dedup
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Ids evicted by either bound since the last call (for the metric).
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    pub fn check_and_insert(&mut self, hash: u128, minute_ms: i64) -> Seen {
        if let Some(newest) = self.newest_minute {
            if minute_ms < newest - self.config.horizon_ms {
                return Seen::BeyondHorizon;
            }
        }
        if !self.ids.insert(hash) {
            return Seen::Duplicate;
        }
        self.by_minute.entry(minute_ms).or_default().push(hash);
        if self.newest_minute.is_none_or(|newest| minute_ms > newest) {
            self.newest_minute = Some(minute_ms);
            self.evict_before(minute_ms - self.config.horizon_ms);
        }
        while self.ids.len() > self.config.max_entries {
            let Some((_, hashes)) = self.by_minute.pop_first() else {
                break;
            };
            self.forget(&hashes);
        }
        Seen::New
    }

    fn evict_before(&mut self, minute_ms: i64) {
        while let Some(entry) = self.by_minute.first_entry() {
            if *entry.key() >= minute_ms {
                break;
            }
            let hashes = entry.remove();
            self.forget(&hashes);
        }
    }

    fn forget(&mut self, hashes: &[u128]) {
        for hash in hashes {
            self.ids.remove(hash);
        }
        self.evicted += hashes.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_per_tenant() {
        let mut dedup = Dedup::new(DedupConfig::default());
        assert_eq!(dedup.check_and_insert(hash("a", "1"), 0), Seen::New);
        assert_eq!(dedup.check_and_insert(hash("a", "1"), 0), Seen::Duplicate);
        assert_eq!(dedup.check_and_insert(hash("b", "1"), 0), Seen::New);
        assert_ne!(
            hash("a", "b1"),
            hash("ab", "1"),
            "the separator keeps tenant and id apart"
        );
    }

    #[test]
    fn the_horizon_evicts_whole_minutes_behind_the_newest() {
        let config = DedupConfig {
            horizon_ms: 120_000,
            max_entries: 100,
        };
        let mut dedup = Dedup::new(config);
        dedup.check_and_insert(1, 0);
        dedup.check_and_insert(2, 60_000);
        dedup.check_and_insert(3, 180_000);
        assert_eq!(
            dedup.len(),
            2,
            "minute 0 is beyond 120 s behind minute 180 s"
        );
        assert_eq!(dedup.take_evicted(), 1);
        assert_eq!(dedup.check_and_insert(1, 0), Seen::BeyondHorizon);
        assert_eq!(dedup.check_and_insert(2, 60_000), Seen::Duplicate);
    }

    #[test]
    fn the_entry_bound_evicts_the_oldest_minutes() {
        let config = DedupConfig {
            horizon_ms: i64::MAX / 2,
            max_entries: 10,
        };
        let mut dedup = Dedup::new(config);
        for id in 0..25u128 {
            dedup.check_and_insert(id, i64::try_from(id / 5).unwrap_or(0) * 60_000);
        }
        assert!(dedup.len() <= 10);
        assert_eq!(dedup.take_evicted(), 15);
        // The newest ids are still caught.
        assert_eq!(dedup.check_and_insert(24, 240_000), Seen::Duplicate);
        assert_eq!(
            dedup.check_and_insert(0, 0),
            Seen::New,
            "evicted: no longer known"
        );
    }

    #[test]
    fn rebuild_restores_what_was_seen() {
        let entries: Vec<DedupEntry> = (0..100u128)
            .map(|hash| DedupEntry {
                hash,
                minute_ms: 60_000,
            })
            .collect();
        let mut dedup = Dedup::rebuild(DedupConfig::default(), &entries);
        assert_eq!(dedup.len(), 100);
        assert_eq!(dedup.check_and_insert(42, 60_000), Seen::Duplicate);
        assert_eq!(dedup.take_evicted(), 0);
    }
}
