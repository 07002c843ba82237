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
//! With an instance id ([`KafkaConfig::instance_id`]) the member is static: a process
//! restarted under the same id, as Kubernetes restarts a crashed container in its pod,
//! is the same member to the broker and gets its partitions back without a rebalance.
//! Such a member leaves the group explicitly when it stops (librdkafka's close does not
//! for static members), so a process that goes for good hands its partitions on at once.
//!
//! Every few seconds the member looks at the whole group's progress (committed and end
//! offsets of every partition) and [`super::watchdog`] judges it: partitions with records
//! that nobody commits, while this member reads its own, mean the broker left the group
//! stuck (a member that died without leaving still holding them). The member then
//! leaves and rejoins, which makes the broker form the group anew; [`GroupHealth`]
//! tells `/readyz`, and `ais_stream_group_stuck{cause}` and a warning name the cause.
//!
//! `poll` blocks its thread for up to the poll wait: run the consumer on a thread of
//! its own (the stream processor does).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::positions::{Positions, Step};
use super::watchdog::{PartitionSeen, StuckCause, Verdict, Watchdog};
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
/// How long partitions may wait with nobody committing them before this member, reading
/// its own, rejoins the group. One session timeout: a broker that evicts dead members
/// has re-formed the group by then, and one that does not (Tansu 0.6) evicts them on
/// the rejoin, their sessions having expired.
pub const STALL_PATIENCE: Duration = SESSION_TIMEOUT;
/// How often the group's progress is looked at.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How long leaving the group may take before the member is closed anyway.
const LEAVE_PATIENCE: Duration = Duration::from_secs(2);

/// Whether the consumer group is stuck, as this process's members last saw it: shared
/// between the consumer (which judges) and the process's readiness (which reports).
#[derive(Debug, Clone, Default)]
pub struct GroupHealth {
    stuck: Arc<Mutex<Option<StuckCause>>>,
}

impl GroupHealth {
    /// Why the group is stuck, or `None` while every waiting partition is read.
    pub fn stuck(&self) -> Option<StuckCause> {
        self.stuck.lock().map(|stuck| stuck.clone()).unwrap_or(None)
    }

    fn set(&self, cause: Option<StuckCause>) {
        for label in ["no_partitions", "partitions_unread"] {
            let value = match &cause {
                Some(cause) if cause.label() == label => 1.0,
                _ => 0.0,
            };
            metrics::gauge!("ais_stream_group_stuck", "cause" => label).set(value);
        }
        if let Ok(mut stuck) = self.stuck.lock() {
            *stuck = cause;
        }
    }
}

/// Exports the group metrics at 0, so alerts can be written before the first stall.
pub fn register_group_metrics() {
    for label in ["no_partitions", "partitions_unread"] {
        metrics::gauge!("ais_stream_group_stuck", "cause" => label).set(0.0);
        metrics::counter!("ais_stream_group_rejoins_total", "cause" => label).increment(0);
    }
}

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
    config: KafkaConfig,
    positions: Positions,
    /// A record of another partition met while filling a batch: it opens the next one.
    held: Option<(u32, u64, Vec<u8>)>,
    end_offsets: BTreeMap<u32, u64>,
    end_offsets_at: Option<Instant>,
    /// Partitions the group gave this member, as the caller has been told.
    owned: BTreeSet<u32>,
    /// Partitions of the topic, all watched.
    partition_count: u32,
    watchdog: Watchdog,
    watched_at: Option<Instant>,
    health: GroupHealth,
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
    /// Joins the group and subscribes to the topic (of `partition_count` partitions);
    /// partitions arrive with the first rebalance, seen through
    /// [`LogConsumer::take_assignment_events`]. What the watchdog finds goes to `health`.
    pub fn join(
        config: &KafkaConfig,
        partition_count: u32,
        health: GroupHealth,
    ) -> Result<Self, LogError> {
        let consumer = Self::member(config)?;
        // No subscription, never assigned: it only answers offset queries (the group's
        // committed offsets too, hence the group id). Its errors (a broker down) are
        // queued for `poll`; `drain_offsets_events` empties the queue.
        let offsets: BaseConsumer = config
            .client_config()
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("socket.timeout.ms", SOCKET_TIMEOUT_MS)
            .create()
            .map_err(unavailable("offsets client"))?;
        Ok(Self {
            client: Client {
                consumer,
                offsets,
                topic: config.topic.clone(),
            },
            config: config.clone(),
            positions: Positions::default(),
            held: None,
            end_offsets: BTreeMap::new(),
            end_offsets_at: None,
            owned: BTreeSet::new(),
            partition_count,
            watchdog: Watchdog::new(STALL_PATIENCE),
            watched_at: None,
            health,
        })
    }

    /// A new member of the group, subscribed to the topic.
    fn member(config: &KafkaConfig) -> Result<BaseConsumer<GroupContext>, LogError> {
        let mut client_config: ClientConfig = config.client_config();
        if let Some(instance_id) = &config.instance_id {
            client_config.set("group.instance.id", instance_id);
        }
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
        Ok(consumer)
    }

    /// Every [`WATCH_INTERVAL`], hands the group's progress to the watchdog and does
    /// what it says.
    fn watch_group(&mut self) -> Result<(), LogError> {
        let now = Instant::now();
        if self
            .watched_at
            .is_some_and(|at| now.saturating_duration_since(at) < WATCH_INTERVAL)
        {
            return Ok(());
        }
        self.watched_at = Some(now);
        // A broker that does not answer is no sign of a stuck group: no verdict.
        let Some(seen) = self.client.group_progress(self.partition_count) else {
            return Ok(());
        };
        match self.watchdog.check(now, &self.owned, &seen) {
            Verdict::Healthy => {
                if self.health.stuck().is_some() {
                    tracing::info!("kafka consumer group reads every partition again");
                }
                self.health.set(None);
                Ok(())
            }
            Verdict::Stuck(cause) => {
                self.health.set(Some(cause));
                Ok(())
            }
            Verdict::Rejoin(cause) => {
                tracing::warn!(
                    cause = cause.label(),
                    waiting = ?cause.waiting(),
                    "kafka consumer group stuck: {cause}; leaving and rejoining the group"
                );
                metrics::counter!("ais_stream_group_rejoins_total", "cause" => cause.label())
                    .increment(1);
                self.health.set(Some(cause));
                self.rejoin()
            }
        }
    }

    /// Leaves the group and joins it again as a new member: the broker forms the group
    /// anew, without the members whose sessions have expired. Everything this member
    /// owned is revoked first; the new assignment arrives as after any rebalance.
    fn rejoin(&mut self) -> Result<(), LogError> {
        let revoked: Vec<u32> = self.owned.iter().copied().collect();
        self.client.leave();
        let fresh = Self::member(&self.config)?;
        let old = std::mem::replace(&mut self.client.consumer, fresh);
        // Closing the old member; its rebalance events were about a membership that is
        // gone and are replaced by the revocation below.
        drop(old);
        self.held = None;
        self.client
            .consumer
            .context()
            .push(AssignmentEvent::Revoked(revoked));
        Ok(())
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

    /// Leaves the group now, rather than when the session expires: librdkafka's close
    /// sends no LeaveGroup for a static member, an unsubscribe does. The revocation is
    /// served here so the leave goes out before the member is closed.
    fn leave(&self) {
        self.consumer.unsubscribe();
        let deadline = Instant::now() + LEAVE_PATIENCE;
        while Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(100));
            let revoked = self
                .consumer
                .context()
                .take()
                .into_iter()
                .any(|event| matches!(event, AssignmentEvent::Revoked(_)));
            if revoked
                || self
                    .consumer
                    .assignment()
                    .is_ok_and(|list| list.count() == 0)
            {
                break;
            }
        }
    }

    /// The group's committed offset and the log's end offset of every partition, or
    /// `None` when the broker does not answer them all.
    fn group_progress(&self, partition_count: u32) -> Option<Vec<PartitionSeen>> {
        let mut list = TopicPartitionList::new();
        for partition in 0..partition_count {
            list.add_partition(&self.topic, i32::try_from(partition).ok()?);
        }
        let committed = match self.offsets.committed_offsets(list, WATERMARK_TIMEOUT) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::debug!(%error, "kafka committed offsets unavailable");
                return None;
            }
        };
        let mut seen = Vec::with_capacity(partition_count as usize);
        for element in committed.elements() {
            let partition = u32::try_from(element.partition()).ok()?;
            let committed = match element.offset() {
                Offset::Offset(offset) => u64::try_from(offset).unwrap_or(0),
                _ => 0,
            };
            let end = match self.offsets.fetch_watermarks(
                &self.topic,
                element.partition(),
                WATERMARK_TIMEOUT,
            ) {
                Ok((_, high)) => u64::try_from(high).unwrap_or(0),
                Err(error) => {
                    tracing::debug!(partition, %error, "kafka end offset unavailable");
                    return None;
                }
            };
            seen.push(PartitionSeen {
                partition,
                committed,
                end,
            });
        }
        Some(seen)
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
        self.watch_group()?;
        if self.client.consumer.context().has_events() {
            // A rejoin revoked everything: the caller hears of it before any record.
            return Ok(None);
        }
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
            match event {
                AssignmentEvent::Revoked(partitions) => {
                    self.positions.revoke(partitions);
                    for partition in partitions {
                        self.end_offsets.remove(partition);
                        self.owned.remove(partition);
                    }
                }
                AssignmentEvent::Assigned(partitions) => self.owned.extend(partitions),
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

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // A static member stopping for good hands its partitions on now rather than
        // never (Tansu) or after its session (Kafka); a dynamic one leaves on close.
        if self.config.instance_id.is_some() {
            self.client.leave();
        }
    }
}
