//! The dead-letter queue as the pipeline sees it, whatever engine keeps it: the stream
//! hands letters to a [`DeadLetterSink`], the query API reads them from a
//! [`DeadLetterSource`] (a [`DeadLetterQuery`] in, a [`LetterPage`] out), and both
//! fail with a [`DeadLetterError`].
//!
//! Traits and types only, no I/O: each engine implements them in its own crate. On one
//! node the embedded store keeps letters in the commit that skips their records (no
//! sink needed) and is their source (`ais_store::sqlite`); in the distributed mode the
//! dead-letter topic is both the sink and, read back, the source
//! (`ais_log::kafka::dlq`).

use async_trait::async_trait;

use super::{DeadLetter, LetterId};

/// Dead letters by the time they were dead-lettered, `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQuery {
    /// Only the letters whose record names this tenant; `None`: every letter, those
    /// with no readable tenant included (admin views).
    pub tenant: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Most letters returned.
    pub limit: usize,
    /// Oldest first (a replay keeps the log's order) rather than newest first.
    pub oldest_first: bool,
}

/// Letters, newest first (or oldest first), and whether more matched than were returned.
#[derive(Debug, Default)]
pub struct LetterPage {
    pub letters: Vec<DeadLetter>,
    /// More letters match (beyond the limit, or beyond what one read of the topic
    /// covers).
    pub more: bool,
}

/// Why the dead-letter queue could not be read or written. Each engine maps its own
/// errors into one of these; the text says which part is down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadLetterError {
    /// The store that keeps the letters (one node) failed.
    #[error("store unavailable: {0}")]
    Store(String),
    /// The queue itself (the dead-letter topic) could not be reached, read or written.
    #[error("dead-letter queue unavailable: {0}")]
    Unavailable(String),
}

/// Where the stream puts the records it cannot process when the store does not keep
/// them in its commit (`ais_store::BatchSink::keeps_dead_letters`).
#[async_trait]
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Returns once every letter is durable, never before: the stream commits the
    /// batch that skips their records only afterwards.
    async fn deliver(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError>;
}

/// Where the dead letters are read from (`GET /v1/dlq`, replays).
#[async_trait]
pub trait DeadLetterSource: Send + Sync + 'static {
    /// The letters matching `query`, each id once, at most `query.limit`.
    async fn list(&self, query: DeadLetterQuery) -> Result<LetterPage, DeadLetterError>;

    /// The letters with these ids, in the order asked; unknown ids are left out.
    async fn by_id(&self, ids: Vec<LetterId>) -> Result<Vec<DeadLetter>, DeadLetterError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_which_part_is_down() {
        assert_eq!(
            DeadLetterError::Store("database is locked".to_string()).to_string(),
            "store unavailable: database is locked"
        );
        assert_eq!(
            DeadLetterError::Unavailable("reader task failed".to_string()).to_string(),
            "dead-letter queue unavailable: reader task failed"
        );
    }
}
