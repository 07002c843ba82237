//! The store's one error type, shared by every role and engine, and how it reads as
//! an error of the dead-letter queue the embedded store keeps.

use ais_model::dead_letter::DeadLetterError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("batch of partition {partition} starts at offset {first_offset} but the store expects {expected}")]
    OutOfOrder {
        partition: u32,
        first_offset: u64,
        expected: u64,
    },
    #[error("store is unavailable: {0}")]
    Unavailable(String),
    #[error("store holds malformed data: {0}")]
    Malformed(String),
    #[error("store error: {0}")]
    Backend(String),
    /// A query stopped at one of its bounds (time, groups) rather than answer in part.
    #[error("{0}")]
    Limit(String),
}

impl From<StoreError> for DeadLetterError {
    fn from(error: StoreError) -> Self {
        Self::Store(error.to_string())
    }
}
