//! Peak-EWMA: the load estimate of one replica that routing compares.
//!
//! The algorithm is Finagle's, as `tower::load::PeakEwma` implements it: the latency
//! estimate jumps to any sample above it (a peak is believed at once) and otherwise
//! moves toward the sample by `1 - e^(-elapsed/decay)`, so it decays toward recent
//! latencies; reading it decays it toward zero, so a replica left alone for a while
//! looks cheap again and is probed. The cost is the estimate times (outstanding + 1).
//!
//! Written here rather than wrapping `tower::load::PeakEwma`: tower's `Cost` is opaque
//! (the estimate and the outstanding count cannot be read out for `/metrics`), and its
//! time is tokio's, where this estimator takes a [`Clock`] like the breakers and rate
//! limits do. A sample is the time from sending a request to its first byte (an
//! answer's first chunk), which is what a caller waits for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ais_model::time::Clock;

use crate::config::EwmaConfig;

#[derive(Debug)]
struct Estimate {
    rtt_ns: f64,
    updated: Instant,
}

/// The estimate and the outstanding count of one replica.
pub struct PeakEwma {
    decay_ns: f64,
    estimate: Mutex<Estimate>,
    outstanding: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PeakEwma {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PeakEwma")
            .field("estimate", &self.estimate)
            .field("outstanding", &self.outstanding)
            .finish()
    }
}

fn nanos(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e9
}

impl PeakEwma {
    pub fn new(config: EwmaConfig, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        Self {
            decay_ns: nanos(config.decay).max(1.0),
            estimate: Mutex::new(Estimate {
                rtt_ns: nanos(config.default_rtt).max(1.0),
                updated: now,
            }),
            outstanding: AtomicU64::new(0),
            clock,
        }
    }

    /// A request sent now: outstanding until the returned guard is finished or dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight {
            ewma: self.clone(),
            sent: self.clock.now(),
        }
    }

    /// Requests sent and not yet answered (first byte) or abandoned.
    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// The latency estimate now, decayed for the time since it was last updated.
    pub fn estimate(&self) -> Duration {
        let now = self.clock.now();
        let mut estimate = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        Duration::from_secs_f64(self.update(&mut estimate, 0.0, now) / 1e9)
    }

    /// What routing compares: estimate × (outstanding + 1), in seconds.
    pub fn cost(&self) -> f64 {
        self.estimate().as_secs_f64() * (self.outstanding() as f64 + 1.0)
    }

    fn observe(&self, rtt: Duration) {
        let now = self.clock.now();
        let mut estimate = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        self.update(&mut estimate, nanos(rtt), now);
    }

    fn update(&self, estimate: &mut Estimate, rtt_ns: f64, now: Instant) -> f64 {
        if estimate.rtt_ns < rtt_ns {
            // A peak is believed at once: the worst recent latency routes.
            estimate.rtt_ns = rtt_ns;
        } else {
            let elapsed = nanos(now.saturating_duration_since(estimate.updated));
            let decay = (-elapsed / self.decay_ns).exp();
            estimate.rtt_ns = estimate.rtt_ns * decay + rtt_ns * (1.0 - decay);
        }
        estimate.updated = now;
        estimate.rtt_ns
    }
}

/// One request outstanding on a replica.
#[derive(Debug)]
pub struct InFlight {
    ewma: Arc<PeakEwma>,
    sent: Instant,
}

impl InFlight {
    /// The first byte arrived, or the attempt ended without one (a refused connection,
    /// an error status): either way a latency sample.
    pub fn finish(self) {
        let rtt = self.ewma.clock.now().saturating_duration_since(self.sent);
        self.ewma.observe(rtt);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Abandoned (the caller went away): no longer outstanding, but no sample either,
        // since nothing was measured. A finished one took its sample in `finish`.
        self.ewma.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use ais_model::time::ManualClock;

    use super::*;

    fn ewma(clock: &ManualClock) -> Arc<PeakEwma> {
        Arc::new(PeakEwma::new(
            EwmaConfig {
                decay: Duration::from_secs(10),
                default_rtt: Duration::from_millis(30),
            },
            Arc::new(clock.clone()),
        ))
    }

    fn sample(ewma: &Arc<PeakEwma>, clock: &ManualClock, rtt: Duration) {
        let in_flight = ewma.start();
        clock.advance(rtt);
        in_flight.finish();
    }

    #[test]
    fn a_peak_is_believed_at_once_and_forgotten_with_time() {
        let clock = ManualClock::at(0);
        let ewma = ewma(&clock);
        assert_eq!(ewma.estimate(), Duration::from_millis(30));
        sample(&ewma, &clock, Duration::from_millis(500));
        assert_eq!(
            ewma.estimate(),
            Duration::from_millis(500),
            "peak taken whole"
        );
        // Ten decay periods later the peak is all but gone.
        clock.advance(Duration::from_secs(100));
        assert!(
            ewma.estimate() < Duration::from_millis(1),
            "{:?}",
            ewma.estimate()
        );
    }

    #[test]
    fn a_lower_sample_pulls_the_estimate_by_the_time_since_the_last_one() {
        let clock = ManualClock::at(0);
        let ewma = ewma(&clock);
        sample(&ewma, &clock, Duration::from_millis(100));
        clock.advance(Duration::from_secs(10));
        // One decay period after the last update: e^-1 of the old value stays.
        let in_flight = ewma.start();
        in_flight.finish();
        let expected = 0.100 * (-1.0f64).exp();
        let got = ewma.estimate().as_secs_f64();
        assert!((got - expected).abs() < 1e-3, "{got} vs {expected}");
    }

    #[test]
    fn outstanding_requests_multiply_the_cost_and_abandoned_ones_leave_no_sample() {
        let clock = ManualClock::at(0);
        let ewma = ewma(&clock);
        let first = ewma.start();
        let second = ewma.start();
        assert_eq!(ewma.outstanding(), 2);
        let cost = ewma.cost();
        assert!((cost - 0.030 * 3.0).abs() < 1e-9, "{cost}");
        clock.advance(Duration::from_secs(5));
        drop(first);
        assert_eq!(ewma.outstanding(), 1);
        assert!(
            ewma.estimate() < Duration::from_millis(30),
            "an abandoned request is no 5 s peak: {:?}",
            ewma.estimate()
        );
        second.finish();
        assert_eq!(ewma.outstanding(), 0);
        assert_eq!(ewma.estimate(), Duration::from_secs(5), "a finished one is");
    }
}
