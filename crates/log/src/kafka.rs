//! The distributed log: a Kafka topic through librdkafka (the `rdkafka` crate).
//!
//! Records: one event per Kafka record, the value being the event's wire encoding
//! (`ais_model::wire`, version byte first) and the key `tenant \0 model`, so one
//! (tenant, model) stays in one partition and in order. The producer is idempotent with
//! `acks=all`; [`Log::append`] answers only once the delivery report of every record
//! of the request says it is in Kafka. Producer memory is bounded
//! (`queue.buffering.max.kbytes`) and every record has one delivery deadline
//! (`message.timeout.ms`); a full queue answers [`LogError::Full`] at once.
//! Throughput comes from librdkafka's batching (`linger.ms`, `batch.size`).
//!
//! Consumers join a consumer group ([`consumer`]): partitions are assigned by Kafka and
//! read from the positions the store holds, not from Kafka's committed offsets; those
//! commits let the group's lag be watched from outside, and let each member notice a
//! group the broker left stuck ([`watchdog`]).
//!
//! Records the stream cannot process go to the dead-letter topic `<topic>.dlq` ([`dlq`]).

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::{Appended, Log, LogConsumer, LogError, LogStatus, RecordBatch, StartPosition};

pub mod consumer;
pub mod dlq;
mod positions;
pub mod watchdog;

/// Where the topic is and how the producer and consumers behave.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port,host:port`.
    pub brokers: String,
    pub topic: String,
    /// Consumer group of the stream processors.
    pub group: String,
    /// This process's lasting name in the group (`group.instance.id`, static
    /// membership): a member restarted under the same name takes its partitions back
    /// without a rebalance. `None`: a new member at every start. Two live processes must
    /// never share one.
    pub instance_id: Option<String>,
    /// Bytes of records the producer may hold (queued or in flight); beyond it appends
    /// are refused with [`LogError::Full`].
    pub producer_max_bytes: u64,
    /// How long one record may take to be delivered, retries included.
    pub delivery_timeout: Duration,
    /// How long the producer waits to fill a batch.
    pub linger: Duration,
    /// Compression of producer batches: `lz4`, `zstd`, `gzip` or `none`.
    pub compression: String,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            group: "ais-stream".to_string(),
            instance_id: None,
            producer_max_bytes: 256 * 1024 * 1024,
            delivery_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(5),
            compression: "lz4".to_string(),
        }
    }

    /// The dead-letter topic beside the events topic.
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "ais")
            // Errors are returned to callers; librdkafka's own log goes through `log`.
            .set("log_level", "4");
        config
    }
}

/// How long metadata and admin requests may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

fn unavailable(context: &str) -> impl Fn(KafkaError) -> LogError + '_ {
    move |error| LogError::Unavailable(format!("kafka {context}: {error}"))
}

/// What `ais migrate --kafka` did to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    Existed,
}

/// Creates the events topic and its dead-letter topic; topics that exist are left as
/// they are (their partition count included).
pub async fn create_topics(
    config: &KafkaConfig,
    partitions: i32,
    replication: i32,
) -> Result<Vec<(String, TopicOutcome)>, LogError> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(unavailable("admin client"))?;
    let names = [config.topic.clone(), config.dlq_topic()];
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(unavailable("create topics"))?;
    let mut outcomes = Vec::new();
    for result in results {
        match result {
            Ok(name) => outcomes.push((name, TopicOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcomes.push((name, TopicOutcome::Existed))
            }
            Err((name, code)) => {
                return Err(LogError::Unavailable(format!(
                    "kafka could not create topic {name}: {code}"
                )))
            }
        }
    }
    Ok(outcomes)
}

/// Partition count of `topic`; an error that says to run `ais migrate` when it is
/// missing.
fn partition_count<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Result<u32, LogError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(unavailable("metadata"))?;
    let found = metadata
        .topics()
        .iter()
        .find(|candidate| candidate.name() == topic);
    match found {
        Some(found) if found.error().is_none() && !found.partitions().is_empty() => {
            Ok(found.partitions().len() as u32)
        }
        _ => Err(LogError::Unavailable(format!(
            "kafka topic {topic} does not exist: run `ais migrate --kafka BROKERS --topic {topic}` first"
        ))),
    }
}

/// The producer side, plus what it takes to open consumers.
pub struct KafkaLog {
    config: KafkaConfig,
    /// The producer and its generation. A producer whose idempotence state the broker
    /// no longer accepts (a broker that lost it in a restart answers every batch with
    /// an error) is replaced by a fresh one, with a new producer id; see
    /// [`needs_fresh_producer`].
    producer: std::sync::RwLock<(u64, FutureProducer)>,
    partitions: u32,
    /// What this process's group members last saw of the consumer group.
    group_health: consumer::GroupHealth,
}

/// Delivery errors that no retry of the same producer can cure: its producer id,
/// epoch or sequence numbers are refused, or the broker failed the batch without a
/// reason. librdkafka's remedy for a fatal error is a new producer instance.
fn needs_fresh_producer(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::Unknown
                | RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::ProducerFenced
        )
    )
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaLog")
            .field("brokers", &self.config.brokers)
            .field("topic", &self.config.topic)
            .finish()
    }
}

/// Key of a record: `tenant \0 model`, read from the front of its wire encoding.
/// `None` for bytes that are no wire record (a dead letter replayed as it was): they go
/// unkeyed, to a partition the producer picks, and the stream dead-letters them again.
fn record_key(record: &[u8]) -> Option<Vec<u8>> {
    let (tenant, model) = ais_model::wire::peek_key(record).ok()?;
    let mut key = Vec::with_capacity(tenant.len() + 1 + model.len());
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    key.extend_from_slice(model.as_bytes());
    Some(key)
}

impl KafkaLog {
    /// Connects, checks the topic exists and reads its partition count.
    pub fn connect(config: KafkaConfig) -> Result<Self, LogError> {
        let probe: BaseConsumer = config
            .client_config()
            .create()
            .map_err(unavailable("client"))?;
        let partitions = partition_count(&probe, &config.topic)?;
        let producer = Self::producer(&config)?;
        Ok(Self {
            config,
            producer: std::sync::RwLock::new((0, producer)),
            partitions,
            group_health: consumer::GroupHealth::default(),
        })
    }

    /// Whether the consumer group is stuck, as this process's members see it (for
    /// readiness).
    pub fn group_health(&self) -> consumer::GroupHealth {
        self.group_health.clone()
    }

    fn producer(config: &KafkaConfig) -> Result<FutureProducer, LogError> {
        config
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &config.compression)
            .set("linger.ms", config.linger.as_millis().to_string())
            .set("batch.size", (1024 * 1024).to_string())
            .set(
                "queue.buffering.max.kbytes",
                (config.producer_max_bytes / 1024).max(1).to_string(),
            )
            .set("queue.buffering.max.messages", "2000000")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            )
            // Java clients' partitioner, so other producers keyed alike agree.
            .set("partitioner", "murmur2_random")
            .create()
            .map_err(unavailable("producer"))
    }

    /// The current producer and its generation.
    fn current(&self) -> (u64, FutureProducer) {
        let guard = self
            .producer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (guard.0, guard.1.clone())
    }

    /// Replaces producer `generation` (once, however many appends saw it fail).
    fn replace_producer(&self, generation: u64, cause: &KafkaError) {
        let mut guard = self
            .producer
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.0 != generation {
            return;
        }
        match Self::producer(&self.config) {
            Ok(fresh) => {
                tracing::warn!(%cause, "kafka refused the producer's batches: replaced by a new producer");
                metrics::counter!("ais_kafka_producer_resets_total").increment(1);
                *guard = (generation + 1, fresh);
            }
            Err(error) => tracing::warn!(%error, "cannot create a new kafka producer"),
        }
    }
}

#[async_trait]
impl Log for KafkaLog {
    async fn append(&self, batch: RecordBatch) -> Result<Appended, LogError> {
        let (generation, producer) = self.current();
        let mut deliveries = Vec::with_capacity(batch.len() as usize);
        for record in batch.iter() {
            let key = record_key(record);
            let mut to_send = FutureRecord::<Vec<u8>, [u8]>::to(&self.config.topic).payload(record);
            if let Some(key) = &key {
                to_send = to_send.key(key);
            }
            let sent = producer.send_result(to_send);
            match sent {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Records already queued may still be delivered; the caller gets a
                    // refusal and retries the request (client event ids dedup it).
                    return Err(LogError::Full {
                        detail: format!(
                            "kafka producer holds {} records",
                            producer.in_flight_count()
                        ),
                        retry_after: Duration::from_secs(1),
                    });
                }
                Err((error, _)) => return Err(unavailable("produce")(error)),
            }
        }
        let mut first: Option<(u32, u64)> = None;
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(delivered)) => {
                    if first.is_none() {
                        first = Some((
                            u32::try_from(delivered.partition).unwrap_or(0),
                            u64::try_from(delivered.offset).unwrap_or(0),
                        ));
                    }
                }
                Ok(Err((error, _))) => {
                    if needs_fresh_producer(&error) {
                        self.replace_producer(generation, &error);
                    }
                    return Err(unavailable("delivery")(error));
                }
                Err(_) => {
                    return Err(LogError::Unavailable(
                        "kafka producer dropped a delivery report".to_string(),
                    ))
                }
            }
        }
        let (partition, first_offset) = first.unwrap_or((0, 0));
        Ok(Appended {
            partition,
            first_offset,
            count: batch.len(),
        })
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn status(&self) -> LogStatus {
        let in_flight = self.current().1.in_flight_count();
        LogStatus {
            writable: true,
            detail: format!(
                "kafka topic {} ({} partitions)",
                self.config.topic, self.partitions
            ),
            // End offsets are the consumers' concern (their lag); the producer does not
            // poll them.
            end_offsets: Vec::new(),
            counts: [("records_awaiting_delivery", in_flight as i64)]
                .into_iter()
                .collect(),
        }
    }

    async fn consumer(
        &self,
        _positions: &[StartPosition],
    ) -> Result<Box<dyn LogConsumer>, LogError> {
        let consumer = consumer::KafkaConsumer::join(
            &self.config,
            self.partitions,
            self.group_health.clone(),
        )?;
        Ok(Box::new(consumer))
    }

    fn assigns_partitions(&self) -> bool {
        true
    }

    async fn probe(&self) -> Result<(), LogError> {
        let producer = self.current().1;
        let topic = self.config.topic.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
                .map_err(unavailable("metadata"))?;
            let answered = metadata
                .topics()
                .iter()
                .any(|found| found.name() == topic && found.error().is_none());
            if answered {
                Ok(())
            } else {
                Err(LogError::Unavailable(format!(
                    "kafka did not describe topic {topic}"
                )))
            }
        })
        .await
        .map_err(|error| LogError::Unavailable(format!("kafka probe task: {error}")))?
    }

    async fn close(&self) -> Result<(), LogError> {
        let producer = self.current().1;
        let patience = self.config.delivery_timeout;
        tokio::task::spawn_blocking(move || producer.flush(patience))
            .await
            .map_err(|error| LogError::Unavailable(format!("kafka flush task: {error}")))?
            .map_err(unavailable("flush"))
    }
}
