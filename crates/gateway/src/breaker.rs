//! The circuit breaker of one replica: closed, open, half-open.
//!
//! Closed, every call goes through and its outcome is kept (the last `window`
//! outcomes and the run of consecutive failures). `consecutive_failures` in a row, or a
//! failure rate of at least `failure_rate` over a full window, opens the circuit: the
//! replica gets no calls for `open`. Then it is half-open: one call at a time goes
//! through as a probe; a success closes the circuit (with a fresh window), a failure
//! opens it again. A probe whose call was abandoned frees the slot for the next one.
//! Time comes from a [`Clock`], so tests control it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use ais_model::time::Clock;

use crate::config::BreakerConfig;

/// What `/metrics` shows: 0 closed, 1 half-open, 2 open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    state: State,
    consecutive_failures: u32,
    /// The last outcomes while closed, `true` for a failure.
    window: VecDeque<bool>,
}

pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Breaker")
            .field("inner", &self.inner)
            .finish()
    }
}

/// Leave to call the replica; `probe` when it is the half-open circuit's one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub probe: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
                window: VecDeque::with_capacity(config.window),
            }),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state now (an open circuit whose time is up reads half-open).
    pub fn state(&self) -> BreakerState {
        let now = self.clock.now();
        let mut inner = self.lock();
        Self::expire(&mut inner, now);
        match inner.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call could go through now (routing's filter; [`Breaker::admit`]
    /// decides).
    pub fn available(&self) -> bool {
        let now = self.clock.now();
        let mut inner = self.lock();
        Self::expire(&mut inner, now);
        match inner.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen { probing } => !probing,
        }
    }

    /// Takes leave to call: always while closed, the probe slot while half-open.
    pub fn admit(&self) -> Option<Admission> {
        let now = self.clock.now();
        let mut inner = self.lock();
        Self::expire(&mut inner, now);
        match inner.state {
            State::Closed => Some(Admission { probe: false }),
            State::Open { .. } => None,
            State::HalfOpen { probing: true } => None,
            State::HalfOpen { probing: false } => {
                inner.state = State::HalfOpen { probing: true };
                Some(Admission { probe: true })
            }
        }
    }

    /// The outcome of an admitted call.
    pub fn record(&self, admission: Admission, success: bool) {
        let now = self.clock.now();
        let mut inner = self.lock();
        if admission.probe {
            if success {
                inner.state = State::Closed;
                inner.consecutive_failures = 0;
                inner.window.clear();
            } else {
                inner.state = State::Open {
                    until: now + self.config.open,
                };
            }
            return;
        }
        if !matches!(inner.state, State::Closed) {
            // A call admitted before the circuit opened: the verdict is already in.
            return;
        }
        if inner.window.len() == self.config.window {
            inner.window.pop_front();
        }
        inner.window.push_back(!success);
        if success {
            inner.consecutive_failures = 0;
            return;
        }
        inner.consecutive_failures += 1;
        let failures = inner.window.iter().filter(|failed| **failed).count();
        let rate_trips = inner.window.len() == self.config.window
            && failures as f64 >= self.config.failure_rate * self.config.window as f64;
        if inner.consecutive_failures >= self.config.consecutive_failures || rate_trips {
            inner.state = State::Open {
                until: now + self.config.open,
            };
            inner.consecutive_failures = 0;
            inner.window.clear();
        }
    }

    /// An admitted call abandoned before its outcome: a probe's slot is free again.
    pub fn abandon(&self, admission: Admission) {
        if admission.probe {
            let mut inner = self.lock();
            if matches!(inner.state, State::HalfOpen { probing: true }) {
                inner.state = State::HalfOpen { probing: false };
            }
        }
    }

    fn expire(inner: &mut Inner, now: Instant) {
        if let State::Open { until } = inner.state {
            if now >= until {
                inner.state = State::HalfOpen { probing: false };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ais_model::time::ManualClock;

    use super::*;

    fn breaker(clock: &ManualClock) -> Breaker {
        Breaker::new(
            BreakerConfig {
                consecutive_failures: 3,
                failure_rate: 0.5,
                window: 4,
                open: Duration::from_secs(5),
            },
            Arc::new(clock.clone()),
        )
    }

    fn call(breaker: &Breaker, success: bool) {
        let admission = breaker.admit().expect("admitted");
        breaker.record(admission, success);
    }

    #[test]
    fn consecutive_failures_open_then_one_probe_decides() {
        let clock = ManualClock::at(0);
        let breaker = breaker(&clock);
        call(&breaker, false);
        call(&breaker, false);
        assert_eq!(breaker.state(), BreakerState::Closed);
        call(&breaker, false);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.admit().is_none() && !breaker.available());
        clock.advance(Duration::from_secs(5));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let probe = breaker.admit().expect("one probe");
        assert!(probe.probe);
        assert!(breaker.admit().is_none(), "only one probe at a time");
        breaker.record(probe, false);
        assert_eq!(
            breaker.state(),
            BreakerState::Open,
            "a failed probe reopens"
        );
        clock.advance(Duration::from_secs(5));
        let probe = breaker.admit().expect("next probe");
        breaker.abandon(probe);
        let probe = breaker.admit().expect("an abandoned probe frees the slot");
        breaker.record(probe, true);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failure_rate_over_a_full_window_opens_without_a_run_of_failures() {
        let clock = ManualClock::at(0);
        let breaker = breaker(&clock);
        for success in [true, false, true] {
            call(&breaker, success);
        }
        assert_eq!(breaker.state(), BreakerState::Closed, "window not full yet");
        call(&breaker, false);
        assert_eq!(breaker.state(), BreakerState::Open, "2 of 4 failed: 0.5");
    }

    #[test]
    fn successes_reset_the_run() {
        let clock = ManualClock::at(0);
        let breaker = Breaker::new(
            BreakerConfig {
                consecutive_failures: 2,
                failure_rate: 1.0,
                window: 100,
                open: Duration::from_secs(5),
            },
            Arc::new(clock.clone()),
        );
        for _ in 0..10 {
            call(&breaker, false);
            call(&breaker, true);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
