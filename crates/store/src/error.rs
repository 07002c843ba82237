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
    /// The partition was claimed by a newer stream process after this one: its
    /// commits are refused, so a writer that stalled past its turn (paused, cut off)
    /// cannot overwrite or double what the new owner committed.
    #[error("partition {partition} belongs to a newer stream process (its claim {newer} is above this process's {held}): commit refused")]
    Fenced {
        partition: u32,
        held: u64,
        newer: u64,
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
