//! The circuit breaker around Kafka writes in `ais ingest`, and the log it guards.
//!
//! [`Breaker`] is the state machine: closed (appends go to Kafka) → open after too
//! many failures among the recent calls, or a run of timeouts → after `open_for`,
//! half-open: one probe at a time goes to Kafka, the rest stay away → closed after
//! `probes` successive successes, open again on any failure.
//!
//! [`BreakerLog`] is a [`Log`] that appends through the breaker. While the circuit is
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
//! too; the stream's dedup by event id keeps both copies from counting twice.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::overflow::{OverflowUsage, RedisOverflow};
use crate::{Appended, Log, LogConsumer, LogError, LogStatus, RecordBatch, StartPosition};

/// When the circuit opens and how it closes again.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Calls remembered for the failure rate (20).
    pub window: usize,
    /// Calls needed in the window before the rate can open the circuit (5).
    pub min_calls: usize,
    /// Fraction of failed calls in the window that opens the circuit (0.5).
    pub failure_rate: f64,
    /// Timeouts in a row that open the circuit regardless of the rate (3).
    pub max_timeouts: u32,
    /// How long one Kafka append may take before it counts as a timeout (5 s).
    pub call_timeout: Duration,
    /// How long the circuit stays open before probing (5 s).
    pub open_for: Duration,
    /// Successful probes in a row that close the circuit (2).
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 20,
            min_calls: 5,
            failure_rate: 0.5,
            max_timeouts: 3,
            call_timeout: Duration::from_secs(5),
            open_for: Duration::from_secs(5),
            probes: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// The value of `ais_ingest_breaker_state`: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

/// How one call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Timeout,
    /// Neither: the call was refused for back-pressure, Kafka itself is fine.
    Neutral,
}

/// Whether a call may go to Kafka now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes; `probe` when it is the half-open circuit's one trial call.
    Call { probe: bool },
    /// No; the circuit may let a call through after `retry_in`.
    Refused { retry_in: Duration },
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Recent outcomes while closed: `true` for a failure.
    recent: VecDeque<bool>,
    timeouts_in_a_row: u32,
    opened_at: Instant,
    probe_in_flight: bool,
    probe_successes: u32,
}

/// The state machine; shared by every request of the process.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        metrics::gauge!("ais_ingest_breaker_state").set(BreakerState::Closed.gauge());
        // Every series exists from start-up, so dashboards and alerts see 0, not nothing.
        for state in [
            BreakerState::Closed,
            BreakerState::HalfOpen,
            BreakerState::Open,
        ] {
            metrics::counter!("ais_ingest_breaker_transitions_total", "to" => state.name())
                .increment(0);
        }
        Self {
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                recent: VecDeque::with_capacity(config.window.max(1)),
                timeouts_in_a_row: 0,
                opened_at: now,
                probe_in_flight: false,
                probe_successes: 0,
            }),
            config,
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state stays consistent at every await-free step; a poisoned lock only
        // means another thread panicked between two of them.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Asks to call Kafka; an open circuit whose time is up becomes half-open here.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut inner = self.lock();
        if inner.state == BreakerState::Open {
            let reopen_at = inner.opened_at + self.config.open_for;
            if now < reopen_at {
                return Admission::Refused {
                    retry_in: reopen_at - now,
                };
            }
            Self::enter(&mut inner, BreakerState::HalfOpen, now);
        }
        match inner.state {
            BreakerState::Closed => Admission::Call { probe: false },
            BreakerState::HalfOpen if !inner.probe_in_flight => {
                inner.probe_in_flight = true;
                Admission::Call { probe: true }
            }
            _ => Admission::Refused {
                retry_in: self.config.call_timeout,
            },
        }
    }

    /// Records how an admitted call went.
    pub fn record(&self, probe: bool, outcome: Outcome, now: Instant) {
        let mut inner = self.lock();
        if probe {
            inner.probe_in_flight = false;
        }
        match (inner.state, outcome) {
            (_, Outcome::Neutral) => {}
            (BreakerState::Closed, outcome) => {
                let failed = outcome != Outcome::Success;
                if inner.recent.len() == self.config.window.max(1) {
                    inner.recent.pop_front();
                }
                inner.recent.push_back(failed);
                inner.timeouts_in_a_row = match outcome {
                    Outcome::Timeout => inner.timeouts_in_a_row + 1,
                    _ => 0,
                };
                let failures = inner.recent.iter().filter(|failed| **failed).count();
                let rate_trips = inner.recent.len() >= self.config.min_calls.max(1)
                    && failures as f64 >= self.config.failure_rate * inner.recent.len() as f64;
                if inner.timeouts_in_a_row >= self.config.max_timeouts.max(1) || rate_trips {
                    Self::enter(&mut inner, BreakerState::Open, now);
                }
            }
            // Only the probe decides a half-open circuit; calls admitted before it
            // opened report on a past state.
            (BreakerState::HalfOpen, Outcome::Success) if probe => {
                inner.probe_successes += 1;
                if inner.probe_successes >= self.config.probes.max(1) {
                    Self::enter(&mut inner, BreakerState::Closed, now);
                }
            }
            (BreakerState::HalfOpen, Outcome::Failure | Outcome::Timeout) if probe => {
                Self::enter(&mut inner, BreakerState::Open, now);
            }
            _ => {}
        }
    }

    fn enter(inner: &mut Inner, state: BreakerState, now: Instant) {
        if inner.state == state {
            return;
        }
        tracing::warn!(
            from = inner.state.name(),
            to = state.name(),
            "kafka circuit breaker"
        );
        inner.state = state;
        inner.recent.clear();
        inner.timeouts_in_a_row = 0;
        inner.probe_in_flight = false;
        inner.probe_successes = 0;
        if state == BreakerState::Open {
            inner.opened_at = now;
        }
        metrics::gauge!("ais_ingest_breaker_state").set(state.gauge());
        metrics::counter!("ais_ingest_breaker_transitions_total", "to" => state.name())
            .increment(1);
    }
}

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
        let timeout = self.breaker.config.call_timeout;
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

    /// Moves overflowed batches back to Kafka until `stop` completes; `holder` names
    /// this process in the drain lease.
    pub async fn run_drain(self: Arc<Self>, holder: String, stop: impl Future<Output = ()>) {
        let Some(overflow) = self.overflow.clone() else {
            return;
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(DRAIN_INTERVAL) => {}
            }
            match overflow.usage().await {
                Ok(usage) => publish_usage(usage),
                Err(error) => {
                    tracing::debug!(%error, "overflow usage unknown");
                    continue;
                }
            }
            // Drain while there is something and Kafka takes it.
            loop {
                match self.drain_once(&overflow, &holder).await {
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
        let overflow = self.overflow.as_ref().map(|overflow| {
            let usage = overflow.last_usage();
            (
                overflow.reachable(),
                format!(
                    "overflow {} ({} records, {} of {} bytes)",
                    if overflow.reachable() {
                        "reachable"
                    } else {
                        "unreachable"
                    },
                    usage.records,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            window: 10,
            min_calls: 4,
            failure_rate: 0.5,
            max_timeouts: 3,
            call_timeout: Duration::from_secs(1),
            open_for: Duration::from_secs(5),
            probes: 2,
        }
    }

    fn call(breaker: &Breaker, outcome: Outcome, now: Instant) {
        match breaker.admit(now) {
            Admission::Call { probe } => breaker.record(probe, outcome, now),
            refused => panic!("expected a call, got {refused:?}"),
        }
    }

    #[test]
    fn the_failure_rate_opens_the_circuit_only_past_the_minimum_calls() {
        let now = Instant::now();
        let breaker = Breaker::new(config(), now);
        call(&breaker, Outcome::Failure, now);
        call(&breaker, Outcome::Failure, now);
        call(&breaker, Outcome::Failure, now);
        assert_eq!(breaker.state(), BreakerState::Closed, "3 calls < min_calls");
        call(&breaker, Outcome::Success, now);
        assert_eq!(breaker.state(), BreakerState::Open, "3 of 4 failed");
    }

    #[test]
    fn successes_dilute_failures_and_back_pressure_counts_for_nothing() {
        let now = Instant::now();
        let breaker = Breaker::new(config(), now);
        for _ in 0..6 {
            call(&breaker, Outcome::Success, now);
        }
        for _ in 0..20 {
            call(&breaker, Outcome::Neutral, now);
        }
        for _ in 0..4 {
            call(&breaker, Outcome::Failure, now);
        }
        assert_eq!(breaker.state(), BreakerState::Closed, "4 of 10 failed");
        call(&breaker, Outcome::Failure, now);
        assert_eq!(breaker.state(), BreakerState::Open, "5 of 10 failed");
    }

    #[test]
    fn timeouts_in_a_row_open_the_circuit() {
        let now = Instant::now();
        let breaker = Breaker::new(config(), now);
        for _ in 0..10 {
            call(&breaker, Outcome::Success, now);
        }
        call(&breaker, Outcome::Timeout, now);
        call(&breaker, Outcome::Timeout, now);
        call(&breaker, Outcome::Success, now);
        call(&breaker, Outcome::Timeout, now);
        call(&breaker, Outcome::Timeout, now);
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "a success broke the run"
        );
        call(&breaker, Outcome::Timeout, now);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn an_open_circuit_refuses_then_probes_one_at_a_time_and_closes() {
        let start = Instant::now();
        let breaker = Breaker::new(config(), start);
        for _ in 0..3 {
            call(&breaker, Outcome::Timeout, start);
        }
        let early = start + Duration::from_secs(2);
        assert_eq!(
            breaker.admit(early),
            Admission::Refused {
                retry_in: Duration::from_secs(3)
            }
        );
        let later = start + Duration::from_secs(5);
        assert_eq!(breaker.admit(later), Admission::Call { probe: true });
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(
            matches!(breaker.admit(later), Admission::Refused { .. }),
            "one probe at a time"
        );
        // A call admitted before the circuit opened reports late: it decides nothing.
        breaker.record(false, Outcome::Success, later);
        breaker.record(true, Outcome::Success, later);
        assert_eq!(breaker.state(), BreakerState::HalfOpen, "1 of 2 probes");
        call(&breaker, Outcome::Success, later);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.admit(later), Admission::Call { probe: false });
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again_for_a_full_period() {
        let start = Instant::now();
        let breaker = Breaker::new(config(), start);
        for _ in 0..3 {
            call(&breaker, Outcome::Timeout, start);
        }
        let probe_at = start + Duration::from_secs(6);
        call(&breaker, Outcome::Failure, probe_at);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(
            breaker.admit(probe_at + Duration::from_secs(1)),
            Admission::Refused {
                retry_in: Duration::from_secs(4)
            }
        );
    }
}
