//! Backpressure at the edge: how many requests, and how many body bytes, the ingest
//! edge holds at once.
//!
//! Every request takes a slot before its body is read and keeps it until it is
//! answered; its body bytes (as read, and again once decompressed) are reserved from a
//! byte budget chunk by chunk while they arrive. When either is exhausted the request
//! is answered 503 with `Retry-After` at once instead of waiting: a queue in front of
//! a saturated log only adds latency and memory, and the client's retry lands when
//! there is room. Together with the log's own bounded queue (the WAL's group-commit
//! queue, the Kafka producer's buffer) this bounds the memory of the process under any
//! offered load.
//!
//! Below the fixed slot count, the requests admitted at once follow measured queueing
//! ([`AdaptiveLimit`]): a fixed count large enough for a fast machine and small
//! batches lets a slow one, or large batches, queue for seconds before the count is
//! reached. The measure is CoDel's: the shortest time from admission to answer over
//! each interval. The shortest is above the target only when every request of the
//! interval waited, that is when a queue stands; then the limit shrinks, so requests
//! past it are refused at once instead of joining the queue. While the shortest is
//! below the target and requests met the limit, it grows again. It is on by default,
//! at [`DEFAULT_QUEUE_TARGET`] (`--admission-target-ms`; 0 turns it off).
//!
//! A refusal reaches a client still sending its body because the edge reads the rest
//! of that body, bounded, before answering (see the handler's docs, `finish_refusal`);
//! the refused requests doing so at once have a bound of their own
//! ([`Pressure::enter_drain`]), as many as the fixed slot count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The default target of the adaptive limit: 50 ms of queueing. The measure is the
/// quickest request of an interval from admission to answer, which includes reading
/// its body and the log's group commit (a batch of 1,000 events takes a few ms, up to
/// about 20 on a slow disk), so a node without a queue stays under it and never
/// shrinks; and a queue of 50 ms leaves the accepted requests' answers far inside a
/// quarter of a second, where a fixed count lets them wait seconds.
pub const DEFAULT_QUEUE_TARGET: Duration = Duration::from_millis(50);

/// The limits; both counts at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressureLimits {
    /// Requests being read, decoded or awaiting the log (1024).
    pub max_requests: usize,
    /// Body bytes held, compressed and decompressed counted apart (256 MiB).
    pub max_bytes: usize,
    /// The queueing the adaptive limit allows: the shortest time from admission to
    /// answer over an interval ([`DEFAULT_QUEUE_TARGET`]). `None`: the fixed counts
    /// alone.
    pub queue_target: Option<Duration>,
}

impl Default for PressureLimits {
    fn default() -> Self {
        Self {
            max_requests: 1024,
            max_bytes: 256 * 1024 * 1024,
            queue_target: Some(DEFAULT_QUEUE_TARGET),
        }
    }
}

/// Why a request was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Overloaded {
    #[error("{limit} requests are in flight")]
    Requests { limit: usize },
    #[error("{limit} bytes of request bodies are held")]
    Bytes { limit: usize },
    #[error(
        "{limit} requests are in flight while requests wait longer than {target_ms} ms to be answered"
    )]
    Queueing { limit: usize, target_ms: u128 },
}

/// The shared counters.
#[derive(Debug)]
pub struct Pressure {
    limits: PressureLimits,
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    adaptive: Option<Arc<AdaptiveLimit>>,
    /// Refused requests whose bodies are being read and discarded.
    draining: Arc<Semaphore>,
}

impl Pressure {
    pub fn new(limits: PressureLimits) -> Self {
        let limits = PressureLimits {
            max_requests: limits.max_requests.clamp(1, Semaphore::MAX_PERMITS),
            max_bytes: limits.max_bytes.clamp(1, Semaphore::MAX_PERMITS),
            queue_target: limits.queue_target,
        };
        let adaptive = limits
            .queue_target
            .map(|target| Arc::new(AdaptiveLimit::new(target, limits.max_requests)));
        Self {
            limits,
            requests: Arc::new(Semaphore::new(limits.max_requests)),
            bytes: Arc::new(Semaphore::new(limits.max_bytes)),
            adaptive,
            draining: Arc::new(Semaphore::new(limits.max_requests)),
        }
    }

    /// A place for a refused request to read the rest of its body before its answer,
    /// held until answered; `None` when as many refused requests as the fixed slot
    /// count do so already (then it is answered at once, and its connection closed).
    pub fn enter_drain(&self) -> Option<OwnedSemaphorePermit> {
        self.draining.clone().try_acquire_owned().ok()
    }

    /// The adaptive limit on requests in flight now; the fixed one without it.
    pub fn request_limit(&self) -> usize {
        self.adaptive
            .as_ref()
            .map_or(self.limits.max_requests, |adaptive| adaptive.limit())
    }

    pub fn limits(&self) -> PressureLimits {
        self.limits
    }

    /// Takes a request slot, or refuses at once.
    pub fn enter(&self) -> Result<Held, Overloaded> {
        let slot = self
            .requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| Overloaded::Requests {
                limit: self.limits.max_requests,
            })?;
        // After the slot, which a refusal here gives back as it drops: the adaptive
        // count goes up only for a request that is then held.
        let admitted = match &self.adaptive {
            Some(adaptive) => Some(adaptive.enter(Instant::now())?),
            None => None,
        };
        Ok(Held {
            _slot: slot,
            bytes: self.bytes.clone(),
            reserved: None,
            limit: self.limits.max_bytes,
            admitted,
        })
    }

    /// Requests in flight now.
    pub fn requests_in_flight(&self) -> usize {
        self.limits.max_requests - self.requests.available_permits()
    }

    /// Body bytes held now.
    pub fn bytes_held(&self) -> usize {
        self.limits.max_bytes - self.bytes.available_permits()
    }
}

/// One admitted request's share; released when dropped (the request is answered).
#[derive(Debug)]
pub struct Held {
    _slot: OwnedSemaphorePermit,
    bytes: Arc<Semaphore>,
    reserved: Option<OwnedSemaphorePermit>,
    limit: usize,
    /// Its place under the adaptive limit, and when it was admitted.
    admitted: Option<(Arc<AdaptiveLimit>, Instant)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((adaptive, since)) = self.admitted.take() {
            let now = Instant::now();
            adaptive.leave(now, now.saturating_duration_since(since));
        }
    }
}

/// A limit on requests in flight that follows measured queueing (see the module docs).
/// Each interval (twice the target, at least 100 ms) that saw an answer: if its
/// shortest time from admission to answer was over the target, the limit shrinks by a
/// fifth; if not, and a request met the limit, it grows by a tenth. It stays between
/// [`AdaptiveLimit::FLOOR`] and the fixed slot count, and starts at
/// [`AdaptiveLimit::START`].
#[derive(Debug)]
pub struct AdaptiveLimit {
    target: Duration,
    interval: Duration,
    ceiling: usize,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    window: Mutex<Window>,
}

/// What one interval saw so far.
#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    shortest: Option<Duration>,
    /// A request was refused, or admitted as the last one the limit allows.
    limited: bool,
}

impl AdaptiveLimit {
    /// Requests in flight the limit never goes below: enough for the steady traffic
    /// of many clients on one connection each, whatever one slow interval measured.
    pub const FLOOR: usize = 16;
    /// Where the limit starts: a saturated node at batches of 1,000 answers a few
    /// hundred requests a second, so 64 in flight is already about a tenth of a
    /// second of queue; the limit grows when requests meet it without queueing.
    pub const START: usize = 64;

    pub fn new(target: Duration, ceiling: usize) -> Self {
        let ceiling = ceiling.max(1);
        Self {
            target,
            interval: (2 * target).max(Duration::from_millis(100)),
            ceiling,
            limit: AtomicUsize::new(Self::START.min(ceiling)),
            in_flight: AtomicUsize::new(0),
            window: Mutex::new(Window::default()),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Admits a request at `now`, or refuses it at once when the limit is reached.
    pub fn enter(self: &Arc<Self>, now: Instant) -> Result<(Arc<Self>, Instant), Overloaded> {
        let limit = self.limit();
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < limit).then_some(count + 1)
            });
        match admitted {
            Ok(before) => {
                if before + 1 == limit {
                    self.window().limited = true;
                }
                Ok((self.clone(), now))
            }
            Err(_) => {
                self.window().limited = true;
                Err(Overloaded::Queueing {
                    limit,
                    target_ms: self.target.as_millis(),
                })
            }
        }
    }

    /// A request admitted `latency` before `now` was answered.
    pub fn leave(&self, now: Instant, latency: Duration) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let mut window = self.window();
        let start = *window.start.get_or_insert(now);
        window.shortest = Some(
            window
                .shortest
                .map_or(latency, |shortest| shortest.min(latency)),
        );
        if now.saturating_duration_since(start) < self.interval {
            return;
        }
        let limit = self.limit();
        let next = match window.shortest {
            Some(shortest) if shortest > self.target => limit - limit / 5,
            _ if window.limited => limit + (limit / 10).max(1),
            _ => limit,
        };
        let next = next.clamp(Self::FLOOR.min(self.ceiling), self.ceiling);
        self.limit.store(next, Ordering::Relaxed);
        metrics::gauge!("ais_ingest_admission_limit").set(next as f64);
        // The next interval starts with its first answer: one spanning an idle gap
        // would otherwise close on a single request.
        *window = Window::default();
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        // A panic elsewhere while it was held leaves figures that are still usable.
        self.window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Held {
    /// Reserves `count` more bytes for this request, or refuses at once.
    pub fn reserve(&mut self, count: usize) -> Result<(), Overloaded> {
        if count == 0 {
            return Ok(());
        }
        let refused = Overloaded::Bytes { limit: self.limit };
        let count = u32::try_from(count).map_err(|_| refused.clone())?;
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(count)
            .map_err(|_| refused)?;
        match &mut self.reserved {
            Some(reserved) => reserved.merge(permit),
            None => self.reserved = Some(permit),
        }
        Ok(())
    }

    /// Bytes reserved by this request.
    pub fn reserved(&self) -> usize {
        self.reserved
            .as_ref()
            .map_or(0, |permit| permit.num_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_past_the_limit_are_refused_and_slots_come_back() {
        let pressure = Pressure::new(PressureLimits {
            max_requests: 2,
            max_bytes: 100,
            queue_target: None,
        });
        let first = pressure.enter().expect("first");
        let _second = pressure.enter().expect("second");
        assert_eq!(pressure.requests_in_flight(), 2);
        assert_eq!(
            pressure.enter().expect_err("third"),
            Overloaded::Requests { limit: 2 }
        );
        drop(first);
        assert!(pressure.enter().is_ok());
    }

    #[test]
    fn bytes_are_reserved_per_request_and_released_with_it() {
        let pressure = Pressure::new(PressureLimits {
            max_requests: 10,
            max_bytes: 100,
            queue_target: None,
        });
        let mut a = pressure.enter().expect("a");
        a.reserve(60).expect("60 of 100");
        a.reserve(30).expect("90 of 100");
        assert_eq!(a.reserved(), 90);
        let mut b = pressure.enter().expect("b");
        assert_eq!(
            b.reserve(11).expect_err("101 of 100"),
            Overloaded::Bytes { limit: 100 }
        );
        b.reserve(10).expect("exactly 100");
        assert_eq!(pressure.bytes_held(), 100);
        drop(a);
        assert_eq!(pressure.bytes_held(), 10);
        b.reserve(90).expect("room again");
    }

    const TARGET: Duration = Duration::from_millis(50);
    /// The adaptive limit's interval at this target.
    const INTERVAL: Duration = Duration::from_millis(100);

    /// Admits `count` requests at `at`.
    fn admit(
        limit: &Arc<AdaptiveLimit>,
        count: usize,
        at: Instant,
    ) -> Vec<(Arc<AdaptiveLimit>, Instant)> {
        (0..count)
            .map(|n| {
                limit
                    .enter(at)
                    .unwrap_or_else(|e| panic!("request {n}: {e}"))
            })
            .collect()
    }

    /// Answers `admitted` over one whole interval starting at `from`, each after
    /// `latency`; returns the limit then.
    fn answer_over_an_interval(
        limit: &AdaptiveLimit,
        admitted: Vec<(Arc<AdaptiveLimit>, Instant)>,
        from: Instant,
        latency: Duration,
    ) -> usize {
        let last = admitted.len().saturating_sub(1).max(1) as u32;
        for (n, _) in admitted.into_iter().enumerate() {
            limit.leave(from + INTERVAL * n as u32 / last, latency);
        }
        limit.limit()
    }

    #[test]
    fn a_standing_queue_shrinks_the_limit_to_its_floor_and_refusals_come_at_once() {
        let limit = Arc::new(AdaptiveLimit::new(TARGET, 1024));
        let t0 = Instant::now();
        assert_eq!(limit.limit(), AdaptiveLimit::START);
        let held = admit(&limit, AdaptiveLimit::START, t0);
        assert_eq!(
            limit.enter(t0).expect_err("one past the limit"),
            Overloaded::Queueing {
                limit: AdaptiveLimit::START,
                target_ms: 50
            }
        );
        // Every request of the interval waited past the target: a queue stands.
        let mut expected = AdaptiveLimit::START;
        let mut now = t0;
        let mut held = held;
        let mut seen = vec![limit.limit()];
        while expected > AdaptiveLimit::FLOOR {
            now += 2 * INTERVAL;
            let next = answer_over_an_interval(&limit, held, now, 4 * TARGET);
            expected = (expected - expected / 5).max(AdaptiveLimit::FLOOR);
            assert_eq!(next, expected, "limits so far {seen:?}");
            seen.push(next);
            held = admit(&limit, next, now);
        }
        // Still queueing at the floor: it stays there.
        now += 2 * INTERVAL;
        answer_over_an_interval(&limit, held, now, 4 * TARGET);
        assert_eq!(
            limit.limit(),
            AdaptiveLimit::FLOOR,
            "never below the floor: {seen:?}"
        );
    }

    #[test]
    fn without_queueing_the_limit_grows_only_while_requests_meet_it() {
        let limit = Arc::new(AdaptiveLimit::new(TARGET, 100));
        let t0 = Instant::now();
        // Fewer requests than the limit, answered quickly: nothing to grow for.
        let few = admit(&limit, 10, t0);
        assert_eq!(answer_over_an_interval(&limit, few, t0, TARGET / 5), 64);
        // Requests met the limit (one refused), answered quickly: it grows by a tenth.
        let now = t0 + 2 * INTERVAL;
        let full = admit(&limit, 64, now);
        assert!(limit.enter(now).is_err());
        assert_eq!(answer_over_an_interval(&limit, full, now, TARGET / 5), 70);
        // One quick answer in an interval says no queue stands, however slow the rest.
        let now = now + 2 * INTERVAL;
        let mut mixed = admit(&limit, 20, now);
        let quick = mixed.pop().expect("one");
        answer_over_an_interval(&limit, mixed, now, 4 * TARGET);
        assert_eq!(limit.limit(), 56, "slow answers alone: a fifth less");
        let now = now + 2 * INTERVAL;
        let mut slow = admit(&limit, 20, now);
        slow.push(quick);
        let last = slow.len() as u32 - 1;
        for (n, _) in slow.into_iter().enumerate() {
            let latency = if n == 0 { TARGET / 5 } else { 4 * TARGET };
            limit.leave(now + INTERVAL * n as u32 / last, latency);
        }
        assert_eq!(limit.limit(), 56, "one quick answer: no queue, no change");
        // And never past the fixed slot count.
        let mut now = now;
        for _ in 0..20 {
            now += 2 * INTERVAL;
            let current = limit.limit();
            let full = admit(&limit, current, now);
            answer_over_an_interval(&limit, full, now, TARGET / 5);
        }
        assert_eq!(limit.limit(), 100);
    }

    #[test]
    fn the_edge_refuses_past_the_adaptive_limit_before_the_fixed_one() {
        let pressure = Pressure::new(PressureLimits {
            queue_target: Some(TARGET),
            ..PressureLimits::default()
        });
        assert_eq!(pressure.request_limit(), AdaptiveLimit::START);
        let held: Vec<Held> = (0..AdaptiveLimit::START)
            .map(|_| pressure.enter().expect("under the limit"))
            .collect();
        assert!(matches!(
            pressure.enter().expect_err("at the limit"),
            Overloaded::Queueing { .. }
        ));
        assert_eq!(pressure.requests_in_flight(), AdaptiveLimit::START);
        drop(held);
        assert_eq!(pressure.requests_in_flight(), 0, "every slot came back");
    }

    #[test]
    fn refusals_draining_their_bodies_are_bounded_by_the_slot_count() {
        let pressure = Pressure::new(PressureLimits {
            max_requests: 2,
            max_bytes: 100,
            queue_target: None,
        });
        let first = pressure.enter_drain().expect("first");
        let _second = pressure.enter_drain().expect("second");
        assert!(pressure.enter_drain().is_none(), "a third waits for none");
        drop(first);
        assert!(pressure.enter_drain().is_some());
    }

    #[test]
    fn the_adaptive_limit_is_on_by_default() {
        assert_eq!(
            PressureLimits::default().queue_target,
            Some(DEFAULT_QUEUE_TARGET)
        );
        let pressure = Pressure::new(PressureLimits::default());
        assert_eq!(pressure.request_limit(), AdaptiveLimit::START);
    }

    #[test]
    fn zero_limits_are_raised_to_one() {
        let pressure = Pressure::new(PressureLimits {
            max_requests: 0,
            max_bytes: 0,
            queue_target: None,
        });
        let mut held = pressure.enter().expect("one request");
        held.reserve(1).expect("one byte");
        assert!(held.reserve(1).is_err());
    }
}
