//! The dead-letter topic as a [`DeadLetterSource`]: [`KafkaDeadLetters`] answers each
//! request with one scan of the topic ([`DlqReader`]), run on the blocking pool, at most
//! `CONCURRENT_SCANS` at once. A scan hands over every copy of every letter; `Best`
//! (a listing) and `Wanted` (letters by id) keep the earliest copy of each, in bounded
//! memory.

use std::collections::hash_map::Entry;
use std::collections::{btree_map, BTreeMap, BTreeSet, HashMap};

use ais_model::dead_letter::{
    DeadLetter, DeadLetterError, DeadLetterQuery, DeadLetterSource, LetterId, LetterPage,
};
use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{DlqReader, ScanReport};
use crate::LogError;

/// Scans of the dead-letter topic that may run at once: each reads up to
/// [`SCAN_WINDOW`](super::SCAN_WINDOW) records per partition, so a burst of requests queues instead.
const CONCURRENT_SCANS: usize = 2;

/// The dead-letter topic as a [`DeadLetterSource`]. Every request scans the newest
/// records of the topic; a letter written twice (the stream crashed between producing
/// it and committing its batch) is shown once, as it was first written: the copy with
/// the earliest dead-lettering time, wherever the copies landed.
pub struct KafkaDeadLetters {
    reader: DlqReader,
    scans: Semaphore,
}

impl KafkaDeadLetters {
    pub fn new(reader: DlqReader) -> Self {
        Self {
            reader,
            scans: Semaphore::new(CONCURRENT_SCANS),
        }
    }

    /// Runs one scan on the blocking pool, handing every letter read (copies included)
    /// to `visit` with `state`; returns the state.
    async fn scan<S: Send + 'static>(
        &self,
        state: S,
        visit: fn(&mut S, DeadLetter),
    ) -> Result<(S, ScanReport), DeadLetterError> {
        let _permit =
            self.scans.acquire().await.map_err(|_| {
                DeadLetterError::Unavailable("the reader is shutting down".to_string())
            })?;
        let reader = self.reader.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut state = state;
            let report = reader.scan(&mut |letter: DeadLetter| visit(&mut state, letter))?;
            Ok::<_, LogError>((state, report))
        })
        .await
        .map_err(|error| DeadLetterError::Unavailable(format!("reader task failed: {error}")))?;
        let (state, report) = outcome?;
        if report.unreadable > 0 {
            tracing::warn!(
                topic = self.reader.topic(),
                unreadable = report.unreadable,
                "records of the dead-letter topic that are no dead letters were skipped"
            );
        }
        Ok((state, report))
    }
}

/// The best `limit + 1` letters of a scan in the query's order, the rest dropped as
/// they come, so memory stays bounded by the limit (and the ids of the scan).
struct Best {
    query: DeadLetterQuery,
    /// The earliest dead-lettering time of every letter read so far.
    earliest: HashMap<LetterId, i64>,
    /// Keyed so that the first entry is the one to drop next.
    kept: BTreeMap<(i64, LetterId), DeadLetter>,
}

impl Best {
    fn new(query: DeadLetterQuery) -> Self {
        Self {
            query,
            earliest: HashMap::new(),
            kept: BTreeMap::new(),
        }
    }

    /// Newest first keeps the largest times, so the smallest key goes first; the
    /// reverse for oldest first.
    fn key(oldest_first: bool, dead_at_ms: i64, id: LetterId) -> (i64, LetterId) {
        if oldest_first {
            (dead_at_ms.saturating_neg(), reversed(id))
        } else {
            (dead_at_ms, id)
        }
    }

    fn offer(&mut self, letter: DeadLetter) {
        let oldest_first = self.query.oldest_first;
        // A copy counts only when it is earlier than what was read of its letter; it
        // then replaces that.
        match self.earliest.entry(letter.id) {
            Entry::Occupied(mut earliest) => {
                if letter.dead_at_ms >= *earliest.get() {
                    return;
                }
                let later = earliest.insert(letter.dead_at_ms);
                self.kept.remove(&Self::key(oldest_first, later, letter.id));
            }
            Entry::Vacant(earliest) => {
                earliest.insert(letter.dead_at_ms);
            }
        }
        let query = &self.query;
        let in_range = (query.from_ms..query.to_ms).contains(&letter.dead_at_ms);
        let visible = query
            .tenant
            .as_ref()
            .is_none_or(|tenant| letter.tenant.as_ref() == Some(tenant));
        if !(in_range && visible) {
            return;
        }
        self.kept.insert(
            Self::key(oldest_first, letter.dead_at_ms, letter.id),
            letter,
        );
        if self.kept.len() > query.limit.saturating_add(1) {
            self.kept.pop_first();
        }
    }

    fn page(self, truncated: bool) -> LetterPage {
        let limit = self.query.limit;
        // Best first: the last entries of the map.
        let mut letters: Vec<DeadLetter> = self.kept.into_values().rev().collect();
        let more = letters.len() > limit || truncated;
        letters.truncate(limit);
        LetterPage { letters, more }
    }
}

/// An id that sorts in the opposite order, for oldest-first pages.
fn reversed(id: LetterId) -> LetterId {
    LetterId {
        partition: u32::MAX - id.partition,
        offset: u64::MAX - id.offset,
    }
}

/// Letters wanted by id, and those found.
struct Wanted {
    ids: BTreeSet<LetterId>,
    found: BTreeMap<LetterId, DeadLetter>,
}

impl Wanted {
    /// Keeps the earliest copy of each wanted letter.
    fn offer(&mut self, letter: DeadLetter) {
        if !self.ids.contains(&letter.id) {
            return;
        }
        match self.found.entry(letter.id) {
            btree_map::Entry::Occupied(mut found) => {
                if letter.dead_at_ms < found.get().dead_at_ms {
                    found.insert(letter);
                }
            }
            btree_map::Entry::Vacant(found) => {
                found.insert(letter);
            }
        }
    }
}

#[async_trait]
impl DeadLetterSource for KafkaDeadLetters {
    async fn list(&self, query: DeadLetterQuery) -> Result<LetterPage, DeadLetterError> {
        let (best, report) = self.scan(Best::new(query), Best::offer).await?;
        Ok(best.page(report.truncated))
    }

    async fn by_id(&self, ids: Vec<LetterId>) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let wanted = Wanted {
            ids: ids.iter().copied().collect(),
            found: BTreeMap::new(),
        };
        let (mut wanted, _) = self.scan(wanted, Wanted::offer).await?;
        Ok(ids
            .iter()
            .filter_map(|id| wanted.found.remove(id))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use ais_model::dead_letter::Reason;

    use super::*;

    fn letter(offset: u64, dead_at_ms: i64, tenant: &str) -> DeadLetter {
        let mut letter = DeadLetter::new(
            LetterId {
                partition: 0,
                offset,
            },
            Reason::Undecodable,
            "",
            b"",
            dead_at_ms,
        );
        letter.tenant = Some(tenant.to_string());
        letter
    }

    fn query(limit: usize, oldest_first: bool) -> DeadLetterQuery {
        DeadLetterQuery {
            tenant: None,
            from_ms: 0,
            to_ms: 1_000,
            limit,
            oldest_first,
        }
    }

    fn page_of(query: DeadLetterQuery, letters: &[DeadLetter]) -> (Vec<(u64, i64)>, bool) {
        let mut best = Best::new(query);
        for letter in letters {
            best.offer(letter.clone());
        }
        let page = best.page(false);
        let shown = page
            .letters
            .iter()
            .map(|letter| (letter.id.offset, letter.dead_at_ms))
            .collect();
        (shown, page.more)
    }

    #[test]
    fn a_scan_keeps_the_best_of_each_letter_in_order_and_within_the_limit() {
        // Copies: 2 again later (ignored), 3 again earlier (replaces the later one).
        let letters = [
            letter(1, 10, "a"),
            letter(3, 40, "a"),
            letter(2, 20, "b"),
            letter(2, 90, "a"),
            letter(4, 5_000, "a"),
            letter(3, 30, "a"),
            letter(5, 50, "a"),
        ];
        assert_eq!(
            page_of(query(10, false), &letters),
            (vec![(5, 50), (3, 30), (2, 20), (1, 10)], false)
        );
        assert_eq!(
            page_of(query(2, false), &letters),
            (vec![(5, 50), (3, 30)], true)
        );
        assert_eq!(
            page_of(query(3, true), &letters),
            (vec![(1, 10), (2, 20), (3, 30)], true)
        );
        let only_b = DeadLetterQuery {
            tenant: Some("b".to_string()),
            ..query(10, false)
        };
        assert_eq!(page_of(only_b, &letters), (vec![(2, 20)], false));
    }

    #[test]
    fn letters_wanted_by_id_are_their_earliest_copies() {
        let mut wanted = Wanted {
            ids: [1, 3]
                .into_iter()
                .map(|offset| LetterId {
                    partition: 0,
                    offset,
                })
                .collect(),
            found: BTreeMap::new(),
        };
        for letter in [
            letter(3, 40, "a"),
            letter(1, 10, "a"),
            letter(3, 30, "a"),
            letter(2, 1, "a"),
        ] {
            wanted.offer(letter);
        }
        let found: Vec<(u64, i64)> = wanted
            .found
            .values()
            .map(|letter| (letter.id.offset, letter.dead_at_ms))
            .collect();
        assert_eq!(found, vec![(1, 10), (3, 30)]);
    }
}
