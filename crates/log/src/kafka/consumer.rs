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
//! records belong to the next owner. Which fetched record is taken, skipped or kept for
//! the next batch, and when a partition's fetch restarts further back (some brokers
//! answer a fetch that starts inside a producer batch from the next batch, or not at
//! all), is decided by [`super::positions`], which does no I/O; records missing from
//! the topic stop the consumer with an error naming the partition and offsets rather
//! than being skipped.
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

use super::positions::{Positions, Step};
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
    client: Client,
    positions: Positions,
    /// A record of another partition met while filling a batch: it opens the next one.
    held: Option<(u32, u64, Vec<u8>)>,
    end_offsets: BTreeMap<u32, u64>,
    end_offsets_at: Option<Instant>,
}

/// The connections to the broker: the group member, and a client for offset queries.
struct Client {
    consumer: BaseConsumer<GroupContext>,
    /// Asks partitions' offsets (lag, log start) on connections of its own: on the
    /// group member's, a ListOffsets request waits behind the long-polling fetch and
    /// times out, and the lag would stop being refreshed exactly when the stream is
    /// held back.
    offsets: BaseConsumer,
    topic: String,
}

/// How long a seek may take to reach the partition's fetcher.
const SEEK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a request to the broker may go unanswered before it counts as lost.
const SOCKET_TIMEOUT_MS: &str = "10000";

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
            client: Client {
                consumer,
                offsets,
                topic: config.topic.clone(),
            },
            positions: Positions::default(),
            held: None,
            end_offsets: BTreeMap::new(),
            end_offsets_at: None,
        })
    }

    fn refresh_end_offsets(&mut self) {
        if self
            .end_offsets_at
            .is_some_and(|at| at.elapsed() < LAG_REFRESH)
        {
            return;
        }
        self.end_offsets_at = Some(Instant::now());
        self.client.drain_offsets_events();
        for (partition, _) in self.positions.expected() {
            let Ok(partition_id) = i32::try_from(partition) else {
                continue;
            };
            match self.client.offsets.fetch_watermarks(
                &self.client.topic,
                partition_id,
                WATERMARK_TIMEOUT,
            ) {
                Ok((_, high)) => {
                    self.end_offsets
                        .insert(partition, u64::try_from(high).unwrap_or(0));
                }
                Err(error) => tracing::debug!(partition, %error, "kafka end offset unavailable"),
            }
        }
    }
}

impl Client {
    /// Hands one fetched record to the positions and does what they answer: adds it to
    /// the batch being filled, keeps it for the next batch, or restarts its partition's
    /// fetch further back.
    fn handle(
        &self,
        positions: &mut Positions,
        held: &mut Option<(u32, u64, Vec<u8>)>,
        filling: &mut Option<Filling>,
        now: Instant,
        record: Fetched<'_>,
    ) -> Result<Handled, LogError> {
        let Fetched {
            partition,
            offset,
            payload,
        } = record;
        let batch = filling.as_ref().map(|batch| batch.partition);
        let step = positions
            .offer(partition, offset, batch, now, || self.log_start(partition))
            .map_err(|missing| missing.into_error(&self.topic))?;
        match step {
            Step::Take => {
                match filling {
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
                Ok(Handled::Next)
            }
            Step::Skip => Ok(Handled::Next),
            Step::Hold => {
                *held = Some((partition, offset, payload.to_vec()));
                Ok(Handled::BatchEnds)
            }
            Step::Restart { start } => {
                self.restart_fetch(positions, partition, start)?;
                Ok(Handled::Next)
            }
        }
    }

    /// Restarts one partition's fetch at `start` and leaves the others' alone (a new
    /// assignment would restart every partition's). librdkafka drops what was fetched
    /// for the partition before. A partition whose fetcher is not running yet (its
    /// assignment still being applied) is re-assigned with the rest instead.
    fn restart_fetch(
        &self,
        positions: &mut Positions,
        partition: u32,
        start: u64,
    ) -> Result<(), LogError> {
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
                let starts = positions.fetch_starts(Instant::now());
                self.assign(&starts)
            }
        }
    }

    /// One new assignment of these partitions at these offsets.
    fn assign(&self, starts: &[(u32, u64)]) -> Result<(), LogError> {
        let mut list = TopicPartitionList::new();
        for &(partition, start) in starts {
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
}

/// One record as fetched.
struct Fetched<'a> {
    partition: u32,
    offset: u64,
    payload: &'a [u8],
}

/// Whether the batch being filled goes on after a record.
enum Handled {
    Next,
    /// A record of another partition opens the next batch.
    BatchEnds,
}

#[async_trait]
impl LogConsumer for KafkaConsumer {
    async fn poll(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<FetchedBatch>, LogError> {
        self.refresh_end_offsets();
        // One reading of the clock per poll, not per record: it only dates fetch restarts,
        // whose patience is seconds.
        let now = Instant::now();
        let deadline = now + max_wait;
        let mut filling: Option<Filling> = None;
        if let Some((partition, offset, payload)) = self.held.take() {
            // A held record was the expected one of its partition: it opens this batch.
            self.client.handle(
                &mut self.positions,
                &mut self.held,
                &mut filling,
                now,
                Fetched {
                    partition,
                    offset,
                    payload: &payload,
                },
            )?;
        }
        // After the held record: its partition's fetch is in place and must stay so.
        for (partition, start) in self.positions.stalled(now) {
            self.client
                .restart_fetch(&mut self.positions, partition, start)?;
        }
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
            let polled = self.client.consumer.poll(timeout);
            if self.client.consumer.context().has_events() {
                // A rebalance: the batch's partition may have moved to another member.
                // Its records are dropped here and read again by whoever owns it next.
                if let Some(batch) = filling.take() {
                    self.positions.unread(batch.partition, batch.first_offset);
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
                    let record = Fetched {
                        partition: u32::try_from(message.partition()).unwrap_or(u32::MAX),
                        offset: u64::try_from(message.offset()).unwrap_or(u64::MAX),
                        payload: message.payload().unwrap_or_default(),
                    };
                    if let Handled::BatchEnds = self.client.handle(
                        &mut self.positions,
                        &mut self.held,
                        &mut filling,
                        now,
                        record,
                    )? {
                        break;
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
        list.add_partition_offset(&self.client.topic, partition_id, Offset::Offset(offset))
            .map_err(unavailable("commit"))?;
        if let Err(error) = self.client.consumer.commit(&list, CommitMode::Async) {
            tracing::debug!(partition, %error, "kafka offset commit failed");
        }
        Ok(())
    }

    fn lag(&self) -> Vec<(u32, u64)> {
        self.positions
            .expected()
            .map(|(partition, expected)| {
                let end = self
                    .end_offsets
                    .get(&partition)
                    .copied()
                    .unwrap_or(expected);
                (partition, end.saturating_sub(expected))
            })
            .collect()
    }

    fn refresh_lag(&mut self) {
        self.refresh_end_offsets();
    }

    fn take_assignment_events(&mut self) -> Vec<AssignmentEvent> {
        let events = self.client.consumer.context().take();
        for event in &events {
            if let AssignmentEvent::Revoked(partitions) = event {
                self.positions.revoke(partitions);
                for partition in partitions {
                    self.end_offsets.remove(partition);
                }
            }
        }
        events
    }

    async fn assign_positions(&mut self, positions: &[StartPosition]) -> Result<(), LogError> {
        let starts = self.positions.assign(positions, Instant::now());
        self.client.assign(&starts)?;
        self.end_offsets_at = None;
        Ok(())
    }
}
