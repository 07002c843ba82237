//! The log between ingest and stream: the [`Log`] trait and its engines.
//!
//! Ingest appends a [`RecordBatch`] (one request's events, each encoded by
//! `ais_model::wire`) and gets an answer only once every record is durable. The stream
//! processor reads records back in offset order through a [`LogConsumer`], starting at
//! the positions the store holds, and tells the log what the store has committed so the
//! log can free it. One offset addresses one event record.
//!
//! Engines: [`wal`], the embedded write-ahead log of a single node (one partition,
//! segment files, group commit with fsync), and [`kafka`], a Kafka topic read by a
//! consumer group. One conformance suite (`tests/conformance.rs`) runs the same
//! scenarios against both.
//!
//! In `ais ingest`, [`breaker::BreakerLog`] wraps the Kafka log with a circuit breaker
//! and, while the circuit is open, keeps batches in the [`overflow`] (Redis) until they
//! drain back in order. The config file's `[breaker]` is [`breaker::section`].
//!
//! Features: the WAL is always built; `kafka` adds the [`kafka`] module (librdkafka,
//! built from source with cmake), `redis` the [`overflow`] and
//! [`breaker::BreakerLog`]. A single node needs neither, so neither is on by default.
//!
//! Records the stream processor cannot process go to a dead-letter queue, whose sink
//! and source traits `ais_model::dead_letter` owns: on one node the store keeps them in
//! the commit that skips them; in the distributed mode the stream hands them to the
//! topic `<topic>.dlq` first ([`kafka::dlq`]: the Kafka log is the sink, and
//! [`kafka::dlq::KafkaDeadLetters`] the source that reads them back).
//!
//! Partitions reach a consumer one of two ways: the WAL's consumer reads the positions
//! it was opened with; a Kafka consumer is assigned partitions by its group and reports
//! each change through [`LogConsumer::take_assignment_events`], after which the caller
//! says where to read them from ([`LogConsumer::assign_positions`]).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub mod breaker;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "redis")]
pub mod overflow;
pub mod wal;

/// Records to append together: `[u32 little-endian length][record bytes]` repeated.
/// One contiguous buffer per request, so a batch costs one allocation however many
/// events it holds.
#[derive(Debug, Default, Clone)]
pub struct RecordBatch {
    buf: Vec<u8>,
    count: u32,
}

impl RecordBatch {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// Appends one record written by `write` (which appends to the given buffer).
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let length_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        write(&mut self.buf);
        let length = self.buf.len() - length_at - 4;
        // Records are bounded far below 4 GiB (an event is at most 32 KiB of JSON).
        let length = u32::try_from(length).unwrap_or(u32::MAX);
        self.buf[length_at..length_at + 4].copy_from_slice(&length.to_le_bytes());
        self.count += 1;
    }

    pub fn push(&mut self, record: &[u8]) {
        self.push_with(|buf| buf.extend_from_slice(record));
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the framed records.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// The framed bytes, as written into a WAL frame.
    pub fn as_framed_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Iterates the records.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter::new(&self.buf)
    }

    /// A batch from framed bytes read back from storage: every byte must belong to a
    /// whole record, so a truncated or foreign value is refused, never half-used.
    pub fn from_framed(buf: Vec<u8>) -> Result<Self, String> {
        let mut count: u32 = 0;
        let mut rest = buf.as_slice();
        while !rest.is_empty() {
            let Some((length, tail)) = rest.split_first_chunk::<4>() else {
                return Err(format!("{} trailing bytes are no record", rest.len()));
            };
            let length = u32::from_le_bytes(*length) as usize;
            if tail.len() < length {
                return Err(format!(
                    "record {count} claims {length} bytes, {} remain",
                    tail.len()
                ));
            }
            rest = &tail[length..];
            count = count
                .checked_add(1)
                .ok_or_else(|| "more than 2^32 records".to_string())?;
        }
        Ok(Self { buf, count })
    }

    /// Appends every record of `other`, in order.
    pub fn extend(&mut self, other: &RecordBatch) {
        self.buf.extend_from_slice(&other.buf);
        self.count += other.count;
    }
}

pub use ais_model::frame::RecordIter;

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub first_offset: u64,
    pub count: u32,
}

/// Records read back: consecutive offsets of one partition.
#[derive(Debug, Clone)]
pub struct FetchedBatch {
    pub partition: u32,
    /// Offset of `records[0]`; record `i` has offset `first_offset + i`.
    pub first_offset: u64,
    pub records: Vec<Bytes>,
}

impl FetchedBatch {
    /// The offset after the last record.
    pub fn next_offset(&self) -> u64 {
        self.first_offset + self.records.len() as u64
    }
}

/// Where to start reading one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartPosition {
    pub partition: u32,
    pub next_offset: u64,
}

/// What `/readyz` and `/metrics` say about the log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogStatus {
    /// An append can be accepted now.
    pub writable: bool,
    /// Human-readable state and sizes, e.g. "wal 12.3 MiB of 1024 MiB"; no count of
    /// records (those go in `counts`, which `/readyz` shows only to operators).
    pub detail: String,
    /// Per partition, the offset after the last durable record.
    pub end_offsets: Vec<(u32, u64)>,
    /// Counts of records the log holds or awaits, e.g. `records_awaiting_delivery`.
    pub counts: std::collections::BTreeMap<&'static str, i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log is full ({detail}); retry after {retry_after:?}")]
    Full {
        detail: String,
        retry_after: Duration,
    },
    #[error("log is unavailable: {0}")]
    Unavailable(String),
    /// The log is unavailable and the overflow buffer that stands in for it is full.
    #[error("log is unavailable and its overflow is full ({detail}); retry after {retry_after:?}")]
    OverflowFull {
        detail: String,
        retry_after: Duration,
    },
    #[error("log is shutting down")]
    Closed,
    #[error("log i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("log is corrupt at {location}: {detail}")]
    Corrupt { location: String, detail: String },
}

/// A change of the partitions a consumer reads (a consumer-group rebalance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentEvent {
    /// These partitions now belong to this consumer; nothing of them is returned until
    /// [`LogConsumer::assign_positions`] says where to start.
    Assigned(Vec<u32>),
    /// These partitions are gone: nothing more of them is returned, and work on them
    /// must not be committed.
    Revoked(Vec<u32>),
}

#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// Appends all records of `batch`; returns once they are durable, never before.
    async fn append(&self, batch: RecordBatch) -> Result<Appended, LogError>;

    /// Number of partitions.
    fn partitions(&self) -> u32;

    fn status(&self) -> LogStatus;

    /// Opens a reader starting at `positions` (partitions not listed start at 0). An
    /// engine that [assigns partitions](Log::assigns_partitions) ignores `positions`.
    async fn consumer(&self, positions: &[StartPosition])
        -> Result<Box<dyn LogConsumer>, LogError>;

    /// Whether consumers are assigned partitions by the log (a consumer group) rather
    /// than reading all of them from the positions they were opened with.
    fn assigns_partitions(&self) -> bool {
        false
    }

    /// Stops accepting appends, makes everything accepted durable.
    async fn close(&self) -> Result<(), LogError>;

    /// A round trip to the log that writes nothing (a broker's metadata, where there is
    /// a broker): how a circuit breaker with no records to probe with learns that the
    /// log is back. A log in this process has nothing to reach and answers at once.
    async fn probe(&self) -> Result<(), LogError> {
        Ok(())
    }
}

#[async_trait]
pub trait LogConsumer: Send {
    /// Returns the next records of one partition (at most `max_records`), waiting up to
    /// `max_wait` for some to become durable; `None` when none did.
    async fn poll(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<FetchedBatch>, LogError>;

    /// The store now holds everything of `partition` before `next_offset`: the log may
    /// free it.
    async fn release(&mut self, partition: u32, next_offset: u64) -> Result<(), LogError>;

    /// Records durable in the log but not yet returned by `poll`, per partition.
    fn lag(&self) -> Vec<(u32, u64)>;

    /// Updates what [`LogConsumer::lag`] knows of the log's end without reading records
    /// (the stream calls it while the store holds it back, so its lag stays current).
    fn refresh_lag(&mut self) {}

    /// Partitions gained or lost since the last call, in order. Always empty for an
    /// engine that does not [assign partitions](Log::assigns_partitions).
    fn take_assignment_events(&mut self) -> Vec<AssignmentEvent> {
        Vec::new()
    }

    /// Starts reading newly assigned partitions at these offsets.
    async fn assign_positions(&mut self, positions: &[StartPosition]) -> Result<(), LogError> {
        match positions.first() {
            None => Ok(()),
            Some(position) => Err(LogError::Unavailable(format!(
                "this log does not assign partitions (asked to position partition {})",
                position.partition
            ))),
        }
    }
}
