//! The dead-letter topic `<topic>.dlq`, the distributed engine of the dead-letter queue
//! (`ais_model::dead_letter`'s traits): the stream produces the records it cannot
//! process there, and the query API reads them back.
//!
//! Writing ([`DeadLetterSink`] for [`KafkaLog`]): one Kafka record per letter, keyed by
//! the letter's id (`PARTITION:OFFSET` of its record in the events topic), valued by its
//! encoding (`ais_model::dead_letter`), timestamped when it was dead-lettered. `deliver`
//! returns once every delivery report is in (`acks=all`, the idempotent producer of
//! the log), so the stream commits the batch that skips the records only after their
//! letters are durable. A crash between the two produces the letters again on replay:
//! same key, so readers keep one per id (and a compacted topic would too).
//!
//! Reading ([`DlqReader`]): a plain reader without a consumer group, assigned to every
//! partition of the topic. It reads at most [`SCAN_WINDOW`] records from the end of
//! each partition, until the fetch answers say the end is reached, and hands each letter
//! to the caller. Two Kafka-API quirks of Tansu (the broker in the tests) are handled:
//! its end offsets from ListOffsets are per producer batch (too low by up to a batch),
//! so the end is taken from the fetch answers instead (partition EOF); and a fetch
//! that starts inside a producer batch is answered from the next batch, so when the
//! first record is past the start the fetch begins again further back (twice as far
//! each time) and records below the start are skipped.
//!
//! Serving ([`KafkaDeadLetters`], in `source`): the topic as a
//! [`DeadLetterSource`](ais_model::dead_letter::DeadLetterSource) for the query API;
//! each request runs one scan and keeps the earliest copy of each letter it wants.
//!
//! Kafka's errors reach the queue's callers as [`DeadLetterError::Unavailable`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ais_model::dead_letter::{self, DeadLetter, DeadLetterError, DeadLetterSink};
use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{
    needs_fresh_producer, partition_count, unavailable, KafkaConfig, KafkaLog, METADATA_TIMEOUT,
};
use crate::LogError;

mod source;

pub use source::KafkaDeadLetters;

/// Most records read from the end of each partition of the dead-letter topic by one
/// scan: bounds the time and the reading one API request costs. Older letters stay in
/// the topic for Kafka tools.
pub const SCAN_WINDOW: u64 = 100_000;
/// Longest one scan may take before it gives up with an error.
const SCAN_DEADLINE: Duration = Duration::from_secs(30);
/// How long one poll of the reader waits.
const SCAN_POLL: Duration = Duration::from_millis(100);
/// The first step back when a fetch starts past the record asked for.
const FIRST_REWIND: u64 = 64;

impl From<LogError> for DeadLetterError {
    fn from(error: LogError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

#[async_trait]
impl DeadLetterSink for KafkaLog {
    async fn deliver(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
        let topic = self.config.dlq_topic();
        let (generation, producer) = self.current();
        let mut deliveries = Vec::with_capacity(letters.len());
        for letter in letters {
            let key = letter.id.to_string();
            let value = dead_letter::encode(letter);
            let record = FutureRecord::to(&topic)
                .key(key.as_bytes())
                .payload(&value)
                .timestamp(letter.dead_at_ms);
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => return Err(unavailable("produce a dead letter")(error).into()),
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    if needs_fresh_producer(&error) {
                        self.replace_producer(generation, &error);
                    }
                    return Err(unavailable("dead-letter delivery")(error).into());
                }
                Err(_) => {
                    return Err(LogError::Unavailable(
                        "kafka producer dropped a dead-letter delivery report".to_string(),
                    )
                    .into())
                }
            }
        }
        Ok(())
    }
}

impl KafkaLog {
    /// Checks the dead-letter topic exists (a stream must not start without a place for
    /// the records it cannot process); returns its partition count.
    pub fn check_dead_letter_topic(&self) -> Result<u32, LogError> {
        let probe: BaseConsumer = self
            .config
            .client_config()
            .create()
            .map_err(unavailable("client"))?;
        partition_count(&probe, &self.config.dlq_topic())
    }
}

/// The reader's client: the end of a partition is how a scan knows it is done, not an
/// error to log (librdkafka reports it as one).
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            tracing::warn!(%error, reason, "dead-letter reader");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// What one scan read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Records read from the topic.
    pub records: u64,
    /// Records that were no dead letter (produced by something else): skipped.
    pub unreadable: u64,
    /// Some partition holds more than [`SCAN_WINDOW`] records: its oldest were not read.
    pub truncated: bool,
}

/// Reads the dead-letter topic back, without a consumer group.
#[derive(Debug, Clone)]
pub struct DlqReader {
    config: KafkaConfig,
    topic: String,
    window: u64,
}

/// Where a scan of one partition stands.
struct PartitionScan {
    /// The first offset the scan wants.
    start: u64,
    /// The offset the current fetch begins at (`start` or before, after a rewind).
    fetch_from: u64,
    /// The partition's first offset.
    low: u64,
    /// The next offset to hand over; records below it are skipped.
    next: u64,
    /// Whether the current fetch has returned a record yet.
    fetched_any: bool,
    done: bool,
}

impl PartitionScan {
    /// Moves the fetch further back: twice as far from `start` as the last time.
    fn rewind(&mut self) -> u64 {
        let distance = (self.start - self.fetch_from).max(FIRST_REWIND / 2) * 2;
        self.fetch_from = self.start.saturating_sub(distance).max(self.low);
        self.fetched_any = false;
        self.fetch_from
    }
}

impl DlqReader {
    /// A reader of `config`'s dead-letter topic. Connects lazily: each scan opens its
    /// own client, so concurrent scans never share an assignment.
    pub fn new(config: &KafkaConfig) -> Self {
        Self {
            config: config.clone(),
            topic: config.dlq_topic(),
            window: SCAN_WINDOW,
        }
    }

    /// Reads at most `records` from the end of each partition instead of
    /// [`SCAN_WINDOW`] (at least that many: the start may be found a little early).
    pub fn with_window(mut self, records: u64) -> Self {
        self.window = records;
        self
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Reads the newest [`SCAN_WINDOW`] records of every partition (or a few more: a
    /// broker whose end offsets are per producer batch makes the start earlier by up to
    /// a batch) and hands each
    /// letter to `visit`, in offset order per partition (copies of a letter included:
    /// the caller keeps one per id). Blocks its thread (run it on a blocking pool).
    pub fn scan(&self, visit: &mut dyn FnMut(DeadLetter)) -> Result<ScanReport, LogError> {
        let consumer: BaseConsumer<ReaderContext> = self
            .config
            .client_config()
            // Assigned partitions only: the group is never joined, nothing is committed.
            .set("group.id", "ais-dlq-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("fetch.max.bytes", (16 * 1024 * 1024).to_string())
            .set("max.partition.fetch.bytes", (4 * 1024 * 1024).to_string())
            .set("queued.max.messages.kbytes", (16 * 1024).to_string())
            .create_with_context(ReaderContext)
            .map_err(unavailable("dead-letter reader"))?;
        let partitions = partition_count(&consumer, &self.topic)?;
        let mut report = ScanReport::default();
        let mut scans: BTreeMap<i32, PartitionScan> = BTreeMap::new();
        for partition in 0..partitions {
            let Ok(partition) = i32::try_from(partition) else {
                continue;
            };
            let (low, high) = consumer
                .fetch_watermarks(&self.topic, partition, METADATA_TIMEOUT)
                .map_err(unavailable("dead-letter topic offsets"))?;
            let low = u64::try_from(low).unwrap_or(0);
            // A low end offset (Tansu's are per batch) only widens the window a little.
            let high = u64::try_from(high).unwrap_or(0).max(low);
            let start = high.saturating_sub(self.window).max(low);
            report.truncated |= start > low;
            scans.insert(
                partition,
                PartitionScan {
                    start,
                    fetch_from: start,
                    low,
                    next: start,
                    fetched_any: false,
                    done: false,
                },
            );
        }
        self.assign(&consumer, &scans)?;
        let deadline = Instant::now() + SCAN_DEADLINE;
        while scans.values().any(|scan| !scan.done) {
            if Instant::now() >= deadline {
                return Err(LogError::Unavailable(format!(
                    "reading the dead-letter topic {} took longer than {SCAN_DEADLINE:?}",
                    self.topic
                )));
            }
            match consumer.poll(SCAN_POLL) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    let Some(scan) = scans.get_mut(&partition) else {
                        continue;
                    };
                    if scan.done {
                        continue;
                    }
                    // The end, with nothing fetched: either nothing is there, or the
                    // fetch began inside the last producer batch (Tansu). Only a fetch
                    // from the partition's start, or one that returned records from at
                    // or before `start`, has seen everything.
                    if scan.fetched_any || scan.fetch_from <= scan.low {
                        scan.done = true;
                    } else {
                        scan.rewind();
                        self.assign(&consumer, &scans)?;
                    }
                }
                Some(Err(error)) => {
                    // librdkafka retries broker trouble itself; the deadline bounds it.
                    tracing::debug!(%error, "dead-letter reader");
                }
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let offset = u64::try_from(message.offset()).unwrap_or(0);
                    let Some(scan) = scans.get_mut(&partition) else {
                        continue;
                    };
                    if scan.done {
                        continue;
                    }
                    let first_of_fetch = !scan.fetched_any;
                    scan.fetched_any = true;
                    if first_of_fetch && offset > scan.start && scan.fetch_from > scan.low {
                        // The fetch began past `start` (inside a batch, on Tansu).
                        drop(message);
                        scan.rewind();
                        self.assign(&consumer, &scans)?;
                        continue;
                    }
                    if offset < scan.next {
                        continue;
                    }
                    scan.next = offset + 1;
                    report.records += 1;
                    match dead_letter::decode(message.payload().unwrap_or_default()) {
                        Ok(letter) => visit(letter),
                        Err(error) => {
                            report.unreadable += 1;
                            tracing::debug!(partition, offset, %error, "not a dead letter: skipped");
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Assigns every partition not done at the offset its fetch begins at.
    fn assign(
        &self,
        consumer: &BaseConsumer<ReaderContext>,
        scans: &BTreeMap<i32, PartitionScan>,
    ) -> Result<(), LogError> {
        let mut list = TopicPartitionList::new();
        for (&partition, scan) in scans {
            if scan.done {
                continue;
            }
            let Ok(offset) = i64::try_from(scan.fetch_from) else {
                continue;
            };
            list.add_partition_offset(&self.topic, partition, Offset::Offset(offset))
                .map_err(unavailable("assign"))?;
        }
        consumer.assign(&list).map_err(unavailable("assign"))
    }
}
