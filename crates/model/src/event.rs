//! The normalized v1 event: what one inference call looks like after validation.
//!
//! Strings borrow from the buffer the event was decoded from (`Cow::Borrowed`) and are
//! owned only when the JSON held escapes, so decoding a batch allocates per batch, not
//! per field. Money is integer micro-dollars so sums are exact in any order.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Where an event's idempotency key came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventId<'a> {
    /// Sent by the producer: a retry carries the same id, so the stream deduplicates it.
    Client(#[serde(borrow)] Cow<'a, str>),
    /// Generated at ingest (UUIDv7) because the producer sent none; unique by construction.
    Generated(u128),
}

/// Outcome of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Status {
    #[default]
    Ok,
    Error,
}

/// One validated inference call. Field order matters: the wire encoding puts `model`
/// first so a log engine can read the partition key without decoding the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<'a> {
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    #[serde(borrow)]
    pub event_id: EventId<'a>,
    /// When the call started, unix milliseconds UTC.
    pub timestamp_ms: i64,
    #[serde(borrow)]
    pub response_model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub provider: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub operation: Option<Cow<'a, str>>,
    /// Whole call duration in milliseconds, finite and ≥ 0.
    pub latency_ms: f64,
    /// Time to first token in milliseconds, finite and ≥ 0.
    pub ttft_ms: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    /// Cost in micro-dollars: as sent (rounded to the micro-dollar), else from the price
    /// table, else `None` (unknown model without a price).
    pub cost_micros: Option<u64>,
    pub status: Status,
    #[serde(borrow)]
    pub error_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub session_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub trace_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub span_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub endpoint: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub region: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub attributes: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// Limits of the v1 event (DESIGN.md, "The event").
pub mod limits {
    pub const EVENT_ID_BYTES: usize = 64;
    pub const MODEL_BYTES: usize = 128;
    pub const PROVIDER_BYTES: usize = 64;
    pub const OPERATION_BYTES: usize = 32;
    pub const ERROR_TYPE_BYTES: usize = 64;
    /// user_id, session_id, trace_id, span_id, endpoint, region.
    pub const KEY_BYTES: usize = 128;
    pub const ATTRIBUTES: usize = 32;
    pub const ATTRIBUTE_KEY_BYTES: usize = 64;
    pub const ATTRIBUTE_VALUE_BYTES: usize = 256;
    /// One event's JSON text.
    pub const EVENT_BYTES: usize = 32 * 1024;
    /// Tenant names come from configuration, not payloads; bounded all the same.
    pub const TENANT_BYTES: usize = 64;
}
