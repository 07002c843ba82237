//! The circuit breaker around Kafka writes in `ais ingest`, and the log it guards.
//!
//! [`Breaker`] is the state machine: closed (appends go to Kafka) → open after too
//! many failures among the recent calls, or a run of timeouts → after `open_for`,
//! half-open: one probe at a time goes to Kafka, the rest stay away → closed after
//! `probes` successive successes, open again on any failure. It does no I/O and names
//! no engine, so it is always built.
//!
//! [`BreakerLog`] (feature `redis`) is a [`Log`](crate::Log) that appends through the
//! breaker, with the Redis overflow beside it.
//!
//! [`section`] is the config file's `[breaker]`, checked into a [`BreakerConfig`]; it
//! is always built too, so a build without Kafka still accepts a file written for one
//! with it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[cfg(feature = "redis")]
mod guarded;
pub mod section;
#[cfg(feature = "redis")]
pub use guarded::BreakerLog;

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
