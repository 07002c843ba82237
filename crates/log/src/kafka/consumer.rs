//! A member of the stream processors' consumer group.
//!
//! Kafka decides which partitions this process reads (eager rebalancing: on every
//! rebalance all partitions are revoked, then the new set assigned). The rebalance
//! callbacks run inside `poll` on the caller's thread and only record what changed; the
//! caller (the stream processor) then asks the store for the positions of the assigned
//! partitions and calls [`LogConsumer::assign_positions`], which assigns them at exactly
//! those offsets. Until then no record of a newly assigned partition is returned.
//!
//! A batch being filled when its partition is revoked is dropped, never returned: its
//! records belong to the next owner. Records below the expected offset (already in the
//! store) are skipped. A record above it right after a fetch (re)started is how some
//! brokers answer a fetch that starts inside a producer batch, and the fetch restarts
//! further back (see [`KafkaConsumer::rewind`]); so does a positioned fetch that returns
//! nothing for 5 s, which is how they answer inside the newest batch. Otherwise a
//! record above the expected one means records are missing from the topic (retention
//! or compaction outran the stream), which stops the consumer with an error naming the
//! partition and offsets rather than silently skipping data.
//!
//! Partitions' offsets (for the lag, and a partition's log start) are asked through a
//! client of their own, so those requests never wait behind the member's fetches.
//!
//! `poll` blocks its thread for up to the poll wait: run the consumer on a thread of
//! its own (the stream processor does).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{unavailable, KafkaConfig};
use crate::{AssignmentEvent, FetchedBatch, LogConsumer, LogError, StartPosition};

/// How often end offsets are fetched for the lag figure.
const LAG_REFRESH: Duration = Duration::from_secs(1);
/// How long one end-offset request may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest time the group waits between two polls before it gives this member's
/// partitions away. While the store refuses a write the stream retries without
/// polling, so a store outage longer than this costs the member its partitions (they
/// are reassigned and read again from the store's positions: nothing is lost).
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);
/// How long the group waits without a heartbeat before it gives a member's partitions
/// away (on Kafka; see the README on Tansu).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Records rebalances as they happen, for the caller to act on after `poll`.
#[derive(Default)]
pub struct GroupContext {
    events: Mutex<Vec<AssignmentEvent>>,
}

impl GroupContext {
    fn push(&self, event: AssignmentEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }

    fn has_events(&self) -> bool {
        self.events
            .lock()
            .map(|events| !events.is_empty())
            .unwrap_or(false)
    }

    fn take(&self) -> Vec<AssignmentEvent> {
        self.events
            .lock()
            .map(|mut events| std::mem::take(&mut *events))
            .unwrap_or_default()
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<u32> {
    let mut partitions: Vec<u32> = list
        .elements()
        .iter()
        .filter_map(|element| u32::try_from(element.partition()).ok())
        .collect();
    partitions.sort_unstable();
    partitions
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            self.push(AssignmentEvent::Revoked(partitions_of(list)));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => self.push(AssignmentEvent::Assigned(partitions_of(list))),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "kafka rebalance failed"),
        }
    }
}

/// A batch being filled: one partition, consecutive offsets, payloads in one buffer.
struct Filling {
    partition: u32,
    first_offset: u64,
    buffer: Vec<u8>,
    ends: Vec<usize>,
}

impl Filling {
    fn finish(self) -> FetchedBatch {
        let buffer = Bytes::from(self.buffer);
        let mut start = 0;
        let records = self
            .ends
            .iter()
            .map(|&end| {
                let record = buffer.slice(start..end);
                start = end;
                record
            })
            .collect();
        FetchedBatch {
            partition: self.partition,
            first_offset: self.first_offset,
            records,
        }
    }
}

pub struct KafkaConsumer {
    consumer: BaseConsumer<GroupContext>,
    /// Asks partitions' offsets (lag, log start) on connections of its own: on the
    /// group member's, a ListOffsets request waits behind the long-polling fetch and
    /// times out, and the lag would stop being refreshed exactly when the stream is
    /// held back.
    offsets: BaseConsumer,
    topic: String,
    /// Next offset to return, per partition assigned at a position.
    expected: BTreeMap<u32, u64>,
    /// A record of another partition met while filling a batch: it opens the next one.
    held: Option<(u32, u64, Vec<u8>)>,
    end_offsets: BTreeMap<u32, u64>,
    end_offsets_at: Option<Instant>,
    /// Partitions positioned but whose expected record has not arrived yet.
    positioning: BTreeMap<u32, Positioning>,
}

/// Where a positioned partition's fetch starts, until its expected record (or the one
/// just before it) arrives.
#[derive(Clone, Copy)]
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
    fn at(fetch_start: u64) -> Self {
        Self {
            fetch_start,
            restarts_at_zero: 0,
            since: Instant::now(),
            fetched_any: false,
        }
    }

    /// A fetch start twice as far back from `expected` as this one (at least
    /// [`FIRST_REWIND`]), and how far back that is.
    fn further_back(&self, expected: u64) -> (u64, u64) {
        let distance = (expected - self.fetch_start).max(FIRST_REWIND / 2) * 2;
        (expected.saturating_sub(distance), distance)
    }
}

/// How long a seek may take to reach the partition's fetcher.
const SEEK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a request to the broker may go unanswered before it counts as lost.
const SOCKET_TIMEOUT_MS: &str = "10000";
/// The first step back when a positioned fetch skipped past the expected record.
const FIRST_REWIND: u64 = 64;
/// How long a positioned fetch may return nothing before it restarts further back. A
/// broker that answers a fetch inside a producer batch from the next batch answers
/// nothing when that batch is the newest. Well above a fetch's own wait
/// (`fetch.wait.max.ms`, 500 ms): a broker slow to answer under load must not be taken
/// for one that answered nothing, since every restart throws away the fetch in flight
/// (at 1 s, Tansu on SQLite under a drain's load was seen restarted again and again).
const POSITIONING_PATIENCE: Duration = Duration::from_secs(5);
/// How far back fetches that return nothing go, at most: beyond a producer batch (at
/// most 10,000 records by librdkafka's default `batch.num.messages`) silence means the
/// broker is not answering, and going further would only re-read more once it does.
const MAX_STALL_REWIND: u64 = 32_768;
/// How many times a fetch from offset 0 is restarted when it skips past a record the
/// broker says it still holds (or does not say), before the consumer stops with an
/// error.
const MAX_RESTARTS_AT_ZERO: u32 = 3;

impl KafkaConsumer {
    /// Joins the group and subscribes to the topic; partitions arrive with the first
    /// rebalance, seen through [`LogConsumer::take_assignment_events`].
    pub fn join(config: &KafkaConfig) -> Result<Self, LogError> {
        let mut client_config: ClientConfig = config.client_config();
        let consumer: BaseConsumer<GroupContext> = client_config
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set(
                "max.poll.interval.ms",
                MAX_POLL_INTERVAL.as_millis().to_string(),
            )
            .set(
                "session.timeout.ms",
                SESSION_TIMEOUT.as_millis().to_string(),
            )
            // A fetch waits at most fetch.wait.max.ms (500 ms) on the broker, so a
            // request unanswered for 10 s is lost, not slow. librdkafka's 60 s default
            // leaves a consumer idle for a minute behind a fetch that a restarted
            // broker never answers.
            .set("socket.timeout.ms", SOCKET_TIMEOUT_MS)
            .set("fetch.max.bytes", (64 * 1024 * 1024).to_string())
            .set("max.partition.fetch.bytes", (8 * 1024 * 1024).to_string())
            // Bounds the records librdkafka prefetches per partition.
            .set("queued.max.messages.kbytes", (64 * 1024).to_string())
            .create_with_context(GroupContext::default())
            .map_err(unavailable("consumer"))?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(unavailable("subscribe"))?;
        // No group, never assigned: it only answers offset queries. Its errors (a
        // broker down) are queued for `poll`; `drain_offsets_events` empties the queue.
        let offsets: BaseConsumer = config
            .client_config()
            .set("socket.timeout.ms", SOCKET_TIMEOUT_MS)
            .create()
            .map_err(unavailable("offsets client"))?;
        Ok(Self {
            consumer,
            offsets,
            topic: config.topic.clone(),
            expected: BTreeMap::new(),
            held: None,
            end_offsets: BTreeMap::new(),
            end_offsets_at: None,
            positioning: BTreeMap::new(),
        })
    }

    /// A record past the expected one arrived. Right after a fetch (re)started, that is
    /// how some Kafka-API brokers (Tansu among them) answer a fetch that starts inside
    /// a producer batch: from the next batch. The fetch then restarts further back,
    /// twice as far each time, and records before the expected one are skipped.
    ///
    /// Otherwise records are really missing (retention or compaction deleted them
    /// unread): an error naming partition and offsets, never a silent skip. A fetch
    /// from offset 0 that still skips asks the broker where the partition's log starts:
    /// past the expected record, it is gone; if the broker says it still holds it (or
    /// does not say), the fetch restarts from 0 a bounded number of times first.
    fn rewind(&mut self, partition: u32, expected: u64, found: u64) -> Result<(), LogError> {
        let location = format!("kafka topic {} partition {partition}", self.topic);
        let missing = |detail: String| LogError::Corrupt {
            location: location.clone(),
            detail: format!(
                "the next record is at offset {found} but the stream expects {expected}: {detail}"
            ),
        };
        let deleted =
            "records are missing from the topic (retention or compaction deleted them before they were processed)";
        let Some(&positioning) = self.positioning.get(&partition) else {
            return Err(missing(deleted.to_string()));
        };
        let next = if positioning.fetch_start > 0 {
            Positioning::at(positioning.further_back(expected).0)
        } else {
            let log_start = self.log_start(partition);
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
                ..Positioning::at(0)
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
        self.restart_fetch(partition, next.fetch_start)
    }

    /// Restarts further back the fetch of every partition positioned for longer than
    /// [`POSITIONING_PATIENCE`] without a single record. At the end of the log that
    /// re-reads a few records before the expected one (skipped), which is how the
    /// consumer learns the fetch is in place; inside the newest producer batch of a
    /// broker that answers from the next batch, it is what gets the batch read at all.
    fn restart_stalled_fetches(&mut self) -> Result<(), LogError> {
        let stalled: Vec<(u32, u64)> = self
            .positioning
            .iter()
            .filter(|(_, positioning)| {
                positioning.fetch_start > 0
                    && !positioning.fetched_any
                    && positioning.since.elapsed() >= POSITIONING_PATIENCE
            })
            .filter_map(|(&partition, positioning)| {
                let expected = *self.expected.get(&partition)?;
                let (start, distance) = positioning.further_back(expected);
                (distance <= MAX_STALL_REWIND).then_some((partition, start))
            })
            .collect();
        if stalled.is_empty() {
            return Ok(());
        }
        for (partition, start) in stalled {
            tracing::debug!(
                partition,
                start,
                "positioned fetch returned nothing; starting further back"
            );
            self.positioning.insert(partition, Positioning::at(start));
            self.restart_fetch(partition, start)?;
        }
        Ok(())
    }

    /// Restarts one partition's fetch at `start` and leaves the others' alone (a new
    /// assignment would restart every partition's). librdkafka drops what was fetched
    /// for the partition before. A partition whose fetcher is not running yet (its
    /// assignment still being applied) is re-assigned with the rest instead.
    fn restart_fetch(&mut self, partition: u32, start: u64) -> Result<(), LogError> {
        let (Ok(partition_id), Ok(offset)) = (i32::try_from(partition), i64::try_from(start))
        else {
            return Ok(());
        };
        match self.consumer.seek(
            &self.topic,
            partition_id,
            Offset::Offset(offset),
            SEEK_TIMEOUT,
        ) {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::debug!(partition, start, %error, "seek refused; assigning again");
                self.assign_current()
            }
        }
    }

    /// The first offset the broker holds for a partition, or `None` when it does not say.
    fn log_start(&self, partition: u32) -> Option<u64> {
        let partition_id = i32::try_from(partition).ok()?;
        match self
            .offsets
            .fetch_watermarks(&self.topic, partition_id, WATERMARK_TIMEOUT)
        {
            Ok((low, _)) => u64::try_from(low).ok(),
            Err(error) => {
                tracing::warn!(partition, %error, "kafka log start unavailable");
                None
            }
        }
    }

    /// A record below the expected one arrived: the fetch is running, and if it is the
    /// record just before the expected one, the fetch is in place.
    fn fetched_below(&mut self, partition: u32, offset: u64) {
        let Some(positioning) = self.positioning.get_mut(&partition) else {
            return;
        };
        if self.expected.get(&partition) == Some(&(offset + 1)) {
            self.positioning.remove(&partition);
        } else {
            positioning.fetched_any = true;
        }
    }

    /// Assigns every positioned partition: one still positioning at its fetch start,
    /// the others at their expected offset. librdkafka restarts the fetch of every
    /// partition of a new assignment, and a restart at the expected offset can land
    /// inside a producer batch too, so those partitions are positioning again.
    fn assign_current(&mut self) -> Result<(), LogError> {
        let mut list = TopicPartitionList::new();
        for (&partition, &expected) in &self.expected {
            let start = self
                .positioning
                .entry(partition)
                .or_insert(Positioning::at(expected))
                .fetch_start;
            let (Ok(partition_id), Ok(offset)) = (i32::try_from(partition), i64::try_from(start))
            else {
                continue;
            };
            list.add_partition_offset(&self.topic, partition_id, Offset::Offset(offset))
                .map_err(unavailable("assign"))?;
        }
        self.consumer.assign(&list).map_err(unavailable("assign"))
    }

    /// Serves the offsets client's queue, where librdkafka puts its errors: unserved,
    /// it would grow for as long as a broker is down.
    fn drain_offsets_events(&self) {
        while let Some(event) = self.offsets.poll(Duration::ZERO) {
            if let Err(error) = event {
                tracing::debug!(%error, "kafka offsets client");
            }
        }
    }

    fn refresh_end_offsets(&mut self) {
        if self
            .end_offsets_at
            .is_some_and(|at| at.elapsed() < LAG_REFRESH)
        {
            return;
        }
        self.end_offsets_at = Some(Instant::now());
        self.drain_offsets_events();
        for &partition in self.expected.keys() {
            let Ok(partition_id) = i32::try_from(partition) else {
                continue;
            };
            match self
                .offsets
                .fetch_watermarks(&self.topic, partition_id, WATERMARK_TIMEOUT)
            {
                Ok((_, high)) => {
                    self.end_offsets
                        .insert(partition, u64::try_from(high).unwrap_or(0));
                }
                Err(error) => tracing::debug!(partition, %error, "kafka end offset unavailable"),
            }
        }
    }
}

/// Adds a record to the batch being filled, or says why it does not belong there.
/// `expected` holds the next offset of each positioned partition.
fn accept(
    expected_offsets: &mut BTreeMap<u32, u64>,
    filling: &mut Option<Filling>,
    partition: u32,
    offset: u64,
    payload: &[u8],
) -> Accepted {
    let Some(&expected) = expected_offsets.get(&partition) else {
        // Assigned but not yet positioned, or revoked: the record is fetched again
        // from the store's position.
        return Accepted::Skipped;
    };
    if offset < expected {
        return Accepted::Skipped;
    }
    if offset > expected {
        return Accepted::Gap { expected };
    }
    match filling {
        Some(batch) if batch.partition != partition => return Accepted::OtherPartition,
        Some(batch) => {
            batch.buffer.extend_from_slice(payload);
            batch.ends.push(batch.buffer.len());
        }
        None => {
            *filling = Some(Filling {
                partition,
                first_offset: offset,
                buffer: payload.to_vec(),
                ends: vec![payload.len()],
            })
        }
    }
    expected_offsets.insert(partition, offset + 1);
    Accepted::Added
}

enum Accepted {
    Added,
    Skipped,
    OtherPartition,
    /// The record is past the one expected: see [`KafkaConsumer::rewind`].
    Gap {
        expected: u64,
    },
}

#[async_trait]
impl LogConsumer for KafkaConsumer {
    async fn poll(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<FetchedBatch>, LogError> {
        self.refresh_end_offsets();
        let deadline = Instant::now() + max_wait;
        let mut filling: Option<Filling> = None;
        if let Some((partition, offset, payload)) = self.held.take() {
            // A held record was already found to be the expected one of its partition.
            if let Accepted::Added = accept(
                &mut self.expected,
                &mut filling,
                partition,
                offset,
                &payload,
            ) {
                self.positioning.remove(&partition);
            }
        }
        // After the held record: its partition's fetch is in place and must stay so.
        self.restart_stalled_fetches()?;
        loop {
            let filled = filling.as_ref().map_or(0, |batch| batch.ends.len());
            if filled >= max_records {
                break;
            }
            // Once a batch has records, take only what is already fetched.
            let timeout = if filled > 0 {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            let polled = self.consumer.poll(timeout);
            if self.consumer.context().has_events() {
                // A rebalance: the batch's partition may have moved to another member.
                // Its records are dropped here and read again by whoever owns it next.
                if let Some(batch) = filling.take() {
                    self.expected.insert(batch.partition, batch.first_offset);
                }
                self.held = None;
                return Ok(None);
            }
            match polled {
                None => {
                    if filled > 0 || Instant::now() >= deadline {
                        break;
                    }
                }
                Some(Err(error)) => {
                    // librdkafka reports broker trouble here and keeps reconnecting by
                    // itself; the stream waits rather than stopping.
                    tracing::warn!(%error, "kafka consumer error");
                    if filled > 0 || Instant::now() >= deadline {
                        break;
                    }
                }
                Some(Ok(message)) => {
                    let partition = u32::try_from(message.partition()).unwrap_or(u32::MAX);
                    let offset = u64::try_from(message.offset()).unwrap_or(u64::MAX);
                    let payload = message.payload().unwrap_or_default();
                    match accept(&mut self.expected, &mut filling, partition, offset, payload) {
                        Accepted::Added => {
                            self.positioning.remove(&partition);
                        }
                        Accepted::Skipped => self.fetched_below(partition, offset),
                        Accepted::OtherPartition => {
                            self.held = Some((partition, offset, payload.to_vec()));
                            break;
                        }
                        Accepted::Gap { expected } => {
                            drop(message);
                            self.rewind(partition, expected, offset)?;
                        }
                    }
                }
            }
        }
        Ok(filling.map(Filling::finish))
    }

    async fn release(&mut self, partition: u32, next_offset: u64) -> Result<(), LogError> {
        // Only for the lag seen from outside (consumer-group tools, autoscalers): the
        // stream resumes from the store's position, never from this commit.
        let mut list = TopicPartitionList::new();
        let (Ok(partition_id), Ok(offset)) = (i32::try_from(partition), i64::try_from(next_offset))
        else {
            return Ok(());
        };
        list.add_partition_offset(&self.topic, partition_id, Offset::Offset(offset))
            .map_err(unavailable("commit"))?;
        if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::debug!(partition, %error, "kafka offset commit failed");
        }
        Ok(())
    }

    fn lag(&self) -> Vec<(u32, u64)> {
        self.expected
            .iter()
            .map(|(partition, expected)| {
                let end = self
                    .end_offsets
                    .get(partition)
                    .copied()
                    .unwrap_or(*expected);
                (*partition, end.saturating_sub(*expected))
            })
            .collect()
    }

    fn refresh_lag(&mut self) {
        self.refresh_end_offsets();
    }

    fn take_assignment_events(&mut self) -> Vec<AssignmentEvent> {
        let events = self.consumer.context().take();
        for event in &events {
            if let AssignmentEvent::Revoked(partitions) = event {
                for partition in partitions {
                    self.expected.remove(partition);
                    self.end_offsets.remove(partition);
                    self.positioning.remove(partition);
                }
            }
        }
        events
    }

    async fn assign_positions(&mut self, positions: &[StartPosition]) -> Result<(), LogError> {
        for position in positions {
            self.expected
                .insert(position.partition, position.next_offset);
            self.positioning
                .insert(position.partition, Positioning::at(position.next_offset));
        }
        self.assign_current()?;
        self.end_offsets_at = None;
        Ok(())
    }
}
