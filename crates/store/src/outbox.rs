//! Alert transitions waiting for their receivers: queued by the evaluation commit
//! that produced them ([`crate::evaluation::EvaluationCommit::outbox`]), taken and
//! settled by alert delivery ([`AlertOutbox`]).

use async_trait::async_trait;

use crate::StoreError;

/// An alert transition for one receiver (`sink`: "webhook", "alertmanager").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxAlert {
    pub sink: String,
    /// The transition's idempotency key: queued once per (sink, key).
    pub key: String,
    /// The alert, opaque to the store.
    pub payload: Vec<u8>,
}

/// A queued transition as the delivery task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Increasing in queue order.
    pub id: i64,
    pub sink: String,
    pub key: String,
    pub payload: Vec<u8>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this (unix ms).
    pub next_attempt_ms: i64,
}

/// What became of a delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxOutcome {
    /// The receiver took it: the entry leaves the outbox.
    Delivered,
    /// It failed: try again at `next_attempt_ms`, with `attempts` failures so far.
    Retry { attempts: u32, next_attempt_ms: i64 },
    /// It failed for good (too many attempts, or unreadable): the entry leaves.
    Abandoned,
}

/// What alert delivery reads and settles.
#[async_trait]
pub trait AlertOutbox: Send + Sync + 'static {
    /// The oldest `limit` outbox entries of `sink`, in queue order (whatever their
    /// `next_attempt_ms`: delivery keeps each receiver's order, so a resolution never
    /// overtakes its firing).
    async fn outbox_pending(
        &self,
        sink: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Records the outcome of delivering entry `id`; an entry already gone (dropped at
    /// the limit) is not an error.
    async fn outbox_settle(&self, id: i64, outcome: OutboxOutcome) -> Result<(), StoreError>;
}
