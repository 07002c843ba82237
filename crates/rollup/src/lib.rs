//! Rollup partials: the mergeable summary of the events of one (tenant, model, minute).
//!
//! A partial is built from events by the stream processor, written to the store per
//! batch, and merged again by queries, so every field is mergeable: counts and integer
//! sums add exactly in any order (cost in micro-dollars), quantiles come from a DDSketch
//! with 1% relative accuracy, unique users from a HyperLogLog. No I/O.

use std::collections::BTreeMap;

use ais_model::Event;
use serde::{Deserialize, Serialize};

/// Relative accuracy of latency and TTFT quantiles.
pub const QUANTILE_RELATIVE_ACCURACY: f64 = 0.01;

/// Distinct `error_type` values kept per partial; further types count under
/// [`OTHER_ERROR_TYPE`] so a producer cannot grow a partial without bound.
pub const MAX_ERROR_TYPES: usize = 32;
pub const OTHER_ERROR_TYPE: &str = "other";
/// Errors that carried no `error_type`.
pub const UNSPECIFIED_ERROR_TYPE: &str = "unspecified";

#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error("malformed rollup partial: {0}")]
    Malformed(String),
}

/// Quantiles of latency or TTFT over a set of requests; `None` when there were none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// A mergeable quantile sketch (DDSketch, relative accuracy
/// [`QUANTILE_RELATIVE_ACCURACY`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantileSketch {
    // filled in by the implementation
}

/// A mergeable unique counter (HyperLogLog).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UniqueCounter {
    // filled in by the implementation
}

/// The summary of one (tenant, model, minute) over some set of events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollupPartial {
    pub requests: u64,
    pub errors: u64,
    pub errors_by_type: BTreeMap<String, u64>,
    pub latency_ms: QuantileSketch,
    pub ttft_ms: QuantileSketch,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cost_micros: u64,
    pub users: UniqueCounter,
    /// Events that arrived after their window was final (corrections).
    pub late_events: u64,
}

impl Default for RollupPartial {
    fn default() -> Self {
        Self::new()
    }
}

impl RollupPartial {
    pub fn new() -> Self {
        unimplemented!("RollupPartial::new")
    }

    /// Adds one event; `late` marks an event whose window was already final.
    pub fn add(&mut self, event: &Event<'_>, late: bool) {
        let _ = (event, late);
        unimplemented!("RollupPartial::add")
    }

    /// Merges another partial of the same or another window into this one.
    pub fn merge(&mut self, other: &RollupPartial) {
        let _ = other;
        unimplemented!("RollupPartial::merge")
    }

    /// Versioned binary form for the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        unimplemented!("RollupPartial::to_bytes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RollupError> {
        let _ = bytes;
        unimplemented!("RollupPartial::from_bytes")
    }

    pub fn latency_quantiles(&self) -> Quantiles {
        unimplemented!("RollupPartial::latency_quantiles")
    }

    pub fn ttft_quantiles(&self) -> Quantiles {
        unimplemented!("RollupPartial::ttft_quantiles")
    }

    pub fn unique_users(&self) -> u64 {
        unimplemented!("RollupPartial::unique_users")
    }

    /// errors / requests, `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}
