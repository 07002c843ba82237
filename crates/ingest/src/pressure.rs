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

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits; both at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressureLimits {
    /// Requests being read, decoded or awaiting the log (1024).
    pub max_requests: usize,
    /// Body bytes held, compressed and decompressed counted apart (256 MiB).
    pub max_bytes: usize,
}

impl Default for PressureLimits {
    fn default() -> Self {
        Self {
            max_requests: 1024,
            max_bytes: 256 * 1024 * 1024,
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
}

/// The shared counters.
#[derive(Debug)]
pub struct Pressure {
    limits: PressureLimits,
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

impl Pressure {
    pub fn new(limits: PressureLimits) -> Self {
        let limits = PressureLimits {
            max_requests: limits.max_requests.clamp(1, Semaphore::MAX_PERMITS),
            max_bytes: limits.max_bytes.clamp(1, Semaphore::MAX_PERMITS),
        };
        Self {
            limits,
            requests: Arc::new(Semaphore::new(limits.max_requests)),
            bytes: Arc::new(Semaphore::new(limits.max_bytes)),
        }
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
        Ok(Held {
            _slot: slot,
            bytes: self.bytes.clone(),
            reserved: None,
            limit: self.limits.max_bytes,
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

    #[test]
    fn zero_limits_are_raised_to_one() {
        let pressure = Pressure::new(PressureLimits {
            max_requests: 0,
            max_bytes: 0,
        });
        let mut held = pressure.enter().expect("one request");
        held.reserve(1).expect("one byte");
        assert!(held.reserve(1).is_err());
    }
}
