//! [`BreakerLog`]: a [`Log`] that appends through the [`Breaker`]. While the circuit is
//! closed a batch goes to Kafka; when that call fails or times out, or while the
//! circuit is open, the batch goes to the [`RedisOverflow`] instead, and the request is
//! acknowledged once Redis has it. With no overflow configured, or when Redis fails
//! too or the overflow is full, the append is refused (503). A refusal for a full
//! producer queue is back-pressure, not a failure: it does not move the breaker.
//!
//! [`BreakerLog::run_drain`] moves overflowed batches back to Kafka, oldest first,
//! while new traffic keeps flowing: only when a call may go to Kafka (closed, or as the
//! half-open probe, so recovery is noticed without traffic), and only in the pod that
//! holds the drain lease, so the order stays the order of the overflow. A batch that
//! timed out towards Kafka may still be delivered by the producer and be overflowed
//! too; the stream's dedup by event id keeps both copies from counting twice. When it
//! has no batch to probe with (the overflow empty, or drained by another pod) and no
//! request is probing, it probes with [`Log::probe`], a round trip that writes nothing:
//! otherwise a half-open circuit with no traffic would never close, and `/readyz`,
//! which needs a closed circuit when there is no overflow, would keep the traffic away
//! that could close it.
//!
//! It guards any [`Log`] (`ais ingest` gives it the Kafka log), so it needs only the
//! `redis` feature.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Admission, Breaker, BreakerConfig, BreakerState, Outcome};
use crate::overflow::{OverflowUsage, RedisOverflow};
use crate::{Appended, Log, LogConsumer, LogError, LogStatus, RecordBatch, StartPosition};

/// Batches drained per round: one Kafka append of their records together.
const DRAIN_BATCHES: usize = 64;
/// How often the drain looks at the overflow, and refreshes its usage.
const DRAIN_INTERVAL: Duration = Duration::from_millis(250);
/// The drain lease outlives a round by far, and lapses soon after its pod stops.
const DRAIN_LEASE: Duration = Duration::from_secs(10);

/// The Kafka log behind a circuit breaker, with the overflow beside it.
pub struct BreakerLog {
    kafka: Arc<dyn Log>,
    breaker: Breaker,
    overflow: Option<Arc<RedisOverflow>>,
}

impl BreakerLog {
    pub fn new(
        kafka: Arc<dyn Log>,
        config: BreakerConfig,
        overflow: Option<Arc<RedisOverflow>>,
    ) -> Self {
        if overflow.is_some() {
            metrics::counter!("ais_overflow_written_total").increment(0);
            metrics::counter!("ais_overflow_drained_total").increment(0);
        }
        Self {
            kafka,
            breaker: Breaker::new(config, Instant::now()),
            overflow,
        }
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub fn overflow(&self) -> Option<&Arc<RedisOverflow>> {
        self.overflow.as_ref()
    }

    /// One Kafka append, timed and recorded.
    async fn call_kafka(&self, batch: RecordBatch, probe: bool) -> Result<Appended, LogError> {
        let timeout = self.breaker.config().call_timeout;
        let outcome = tokio::time::timeout(timeout, self.kafka.append(batch)).await;
        let (recorded, result) = match outcome {
            Ok(Ok(appended)) => (Outcome::Success, Ok(appended)),
            Ok(Err(error @ (LogError::Full { .. } | LogError::Closed))) => {
                (Outcome::Neutral, Err(error))
            }
            Ok(Err(error)) => (Outcome::Failure, Err(error)),
            Err(_) => (
                Outcome::Timeout,
                Err(LogError::Unavailable(format!(
                    "kafka did not acknowledge within {timeout:?}"
                ))),
            ),
        };
        self.breaker.record(probe, recorded, Instant::now());
        result
    }

    async fn to_overflow(
        &self,
        batch: &RecordBatch,
        cause: LogError,
    ) -> Result<Appended, LogError> {
        let Some(overflow) = &self.overflow else {
            return Err(cause);
        };
        match overflow.append(batch).await {
            Ok(()) => {
                metrics::counter!("ais_overflow_written_total").increment(u64::from(batch.len()));
                Ok(Appended {
                    partition: 0,
                    first_offset: 0,
                    count: batch.len(),
                })
            }
            Err(LogError::OverflowFull {
                detail,
                retry_after,
            }) => Err(LogError::OverflowFull {
                detail: format!("{cause}; {detail}"),
                retry_after,
            }),
            Err(error) => Err(LogError::Unavailable(format!("{cause}; {error}"))),
        }
    }

    /// Moves overflowed batches back to Kafka, and probes a circuit that is not closed,
    /// until `stop` completes; `holder` names this process in the drain lease. Runs
    /// with or without an overflow.
    pub async fn run_drain(self: Arc<Self>, holder: String, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(DRAIN_INTERVAL) => {}
            }
            if let Some(overflow) = &self.overflow {
                self.drain(overflow, &holder).await;
            }
            self.probe_when_idle().await;
        }
    }

    /// Probes a circuit that is not closed with a round trip, when no append is
    /// probing it.
    async fn probe_when_idle(&self) {
        if self.breaker.state() == BreakerState::Closed {
            return;
        }
        let Admission::Call { probe: true } = self.breaker.admit(Instant::now()) else {
            return;
        };
        let timeout = self.breaker.config().call_timeout;
        let outcome = match tokio::time::timeout(timeout, self.kafka.probe()).await {
            Ok(Ok(())) => Outcome::Success,
            Ok(Err(error)) => {
                tracing::debug!(%error, "kafka probe failed");
                Outcome::Failure
            }
            Err(_) => Outcome::Timeout,
        };
        self.breaker.record(true, outcome, Instant::now());
    }

    /// Drains what the overflow holds while Kafka takes it.
    async fn drain(&self, overflow: &RedisOverflow, holder: &str) {
        match overflow.usage().await {
            Ok(usage) => publish_usage(usage),
            Err(error) => {
                tracing::debug!(%error, "overflow usage unknown");
                return;
            }
        }
        loop {
            match self.drain_once(overflow, holder).await {
                Ok(0) => break,
                Ok(records) => {
                    metrics::counter!("ais_overflow_drained_total").increment(records);
                }
                Err(error) => {
                    tracing::warn!(%error, "overflow drain paused");
                    break;
                }
            }
        }
    }

    /// One round: the oldest batches to Kafka, then out of the overflow. Returns the
    /// records moved (0: nothing to do, or not now).
    async fn drain_once(&self, overflow: &RedisOverflow, holder: &str) -> Result<u64, LogError> {
        if overflow.last_usage().bytes == 0 {
            return Ok(0);
        }
        if !overflow.lease(holder, DRAIN_LEASE).await? {
            return Ok(0);
        }
        let entries = overflow.oldest(DRAIN_BATCHES).await?;
        if entries.is_empty() {
            return Ok(0);
        }
        let Admission::Call { probe } = self.breaker.admit(Instant::now()) else {
            return Ok(0);
        };
        let mut batch =
            RecordBatch::with_capacity(entries.iter().map(|entry| entry.batch.byte_len()).sum());
        for entry in &entries {
            batch.extend(&entry.batch);
        }
        let records = u64::from(batch.len());
        self.call_kafka(batch, probe).await?;
        let ids: Vec<String> = entries.into_iter().map(|entry| entry.id).collect();
        overflow.remove(&ids).await?;
        publish_usage(overflow.usage().await?);
        Ok(records)
    }
}

fn publish_usage(usage: OverflowUsage) {
    metrics::gauge!("ais_overflow_records").set(usage.records as f64);
    metrics::gauge!("ais_overflow_bytes").set(usage.bytes as f64);
}

#[async_trait]
impl Log for BreakerLog {
    async fn append(&self, batch: RecordBatch) -> Result<Appended, LogError> {
        match self.breaker.admit(Instant::now()) {
            Admission::Call { probe } => {
                // The overflow needs the records if Kafka fails; without one, no copy.
                let kept = self.overflow.as_ref().map(|_| batch.clone());
                match self.call_kafka(batch, probe).await {
                    Ok(appended) => Ok(appended),
                    Err(error @ (LogError::Full { .. } | LogError::Closed)) => Err(error),
                    Err(error) => match kept {
                        Some(kept) => self.to_overflow(&kept, error).await,
                        None => Err(error),
                    },
                }
            }
            Admission::Refused { retry_in } => {
                let cause = LogError::Unavailable(format!(
                    "the kafka circuit is open (next probe in {} ms)",
                    retry_in.as_millis()
                ));
                self.to_overflow(&batch, cause).await
            }
        }
    }

    fn partitions(&self) -> u32 {
        self.kafka.partitions()
    }

    fn status(&self) -> LogStatus {
        let kafka = self.kafka.status();
        let state = self.breaker.state();
        let mut counts = kafka.counts;
        let overflow = self.overflow.as_ref().map(|overflow| {
            let usage = overflow.last_usage();
            counts.insert("overflow_records", usage.records as i64);
            (
                overflow.reachable(),
                format!(
                    "overflow {} ({} of {} bytes)",
                    if overflow.reachable() {
                        "reachable"
                    } else {
                        "unreachable"
                    },
                    usage.bytes,
                    overflow.config().max_bytes
                ),
            )
        });
        // Ready while Kafka takes writes, or while the overflow stands in for it.
        let writable = match state {
            BreakerState::Closed => kafka.writable,
            _ => overflow.as_ref().is_some_and(|(reachable, _)| *reachable),
        };
        let mut detail = format!("circuit {}; {}", state.name(), kafka.detail);
        if let Some((_, text)) = overflow {
            detail.push_str("; ");
            detail.push_str(&text);
        }
        LogStatus {
            writable,
            detail,
            end_offsets: kafka.end_offsets,
            counts,
        }
    }

    async fn consumer(
        &self,
        positions: &[StartPosition],
    ) -> Result<Box<dyn LogConsumer>, LogError> {
        self.kafka.consumer(positions).await
    }

    fn assigns_partitions(&self) -> bool {
        self.kafka.assigns_partitions()
    }

    async fn close(&self) -> Result<(), LogError> {
        self.kafka.close().await
    }

    async fn probe(&self) -> Result<(), LogError> {
        self.kafka.probe().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;

    use ais_testkit::PATIENCE;

    /// A log that is up or down as the test says, counting what reaches it.
    #[derive(Default)]
    struct Switchable {
        up: AtomicBool,
        appends: AtomicU32,
        probes: AtomicU32,
    }

    impl Switchable {
        fn answer(&self) -> Result<(), LogError> {
            if self.up.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(LogError::Unavailable("down".to_string()))
            }
        }
    }

    #[async_trait]
    impl Log for Switchable {
        async fn append(&self, batch: RecordBatch) -> Result<Appended, LogError> {
            self.appends.fetch_add(1, Ordering::SeqCst);
            self.answer()?;
            Ok(Appended {
                partition: 0,
                first_offset: 0,
                count: batch.len(),
            })
        }

        fn partitions(&self) -> u32 {
            1
        }

        fn status(&self) -> LogStatus {
            LogStatus {
                writable: true,
                detail: String::new(),
                end_offsets: Vec::new(),
                counts: Default::default(),
            }
        }

        async fn consumer(
            &self,
            _positions: &[StartPosition],
        ) -> Result<Box<dyn LogConsumer>, LogError> {
            Err(LogError::Unavailable("no consumers here".to_string()))
        }

        async fn close(&self) -> Result<(), LogError> {
            Ok(())
        }

        async fn probe(&self) -> Result<(), LogError> {
            self.probes.fetch_add(1, Ordering::SeqCst);
            self.answer()
        }
    }

    async fn wait_for(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition() {
            assert!(Instant::now() < deadline, "{what} within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// With no traffic and nothing in an overflow, the drain task's round trips are
    /// what close a circuit once the log is back; while it is down they keep it open.
    #[tokio::test]
    async fn an_idle_circuit_closes_by_probing_once_the_log_is_back() {
        let inner = Arc::new(Switchable::default());
        let config = BreakerConfig {
            min_calls: 1,
            open_for: Duration::from_millis(1),
            ..BreakerConfig::default()
        };
        let log = Arc::new(BreakerLog::new(inner.clone(), config, None));
        let mut batch = RecordBatch::with_capacity(8);
        batch.push(b"record");
        log.append(batch).await.expect_err("the log is down");
        assert_eq!(log.breaker().state(), BreakerState::Open);

        let stop = Stop::new();
        let drain = tokio::spawn(log.clone().run_drain("test".to_string(), stop.wait()));
        wait_for("two failed probes while the log is down", || {
            inner.probes.load(Ordering::SeqCst) >= 2
        })
        .await;
        assert_ne!(log.breaker().state(), BreakerState::Closed);

        inner.up.store(true, Ordering::SeqCst);
        wait_for("the circuit closed", || {
            log.breaker().state() == BreakerState::Closed
        })
        .await;
        assert_eq!(
            inner.appends.load(Ordering::SeqCst),
            1,
            "the probes wrote nothing"
        );
        stop.fire();
        drain.await.expect("drain task");
    }

    /// A one-shot stop signal for the drain task.
    struct Stop(Arc<tokio::sync::Notify>);

    impl Stop {
        fn new() -> Self {
            Self(Arc::new(tokio::sync::Notify::new()))
        }

        fn wait(&self) -> impl Future<Output = ()> + 'static {
            let notify = self.0.clone();
            async move { notify.notified().await }
        }

        fn fire(&self) {
            self.0.notify_one();
        }
    }
}
