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
    Client(#[serde(borrow, deserialize_with = "borrowed::cow")] Cow<'a, str>),
    /// Generated at ingest (UUIDv7) because the producer sent none; unique by construction.
    Generated(u128),
}

/// The identity the stream deduplicates a client-set id by: xxh3-128 of the tenant, a
/// zero byte and the id. Stores that rebuild the stream's dedup window from raw events
/// compute it the same way.
pub fn dedup_hash(tenant: &str, event_id: &str) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(tenant.as_bytes());
    hasher.update(&[0]);
    hasher.update(event_id.as_bytes());
    hasher.digest128()
}

/// Outcome of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Status {
    #[default]
    Ok,
    Error,
}

impl Status {
    /// The v1 text form: `ok` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }

    /// Parses the v1 text form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ok" => Some(Self::Ok),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// One validated inference call. Field order matters: the wire encoding puts `model`
/// first so a log engine can read the partition key without decoding the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<'a> {
    #[serde(borrow, deserialize_with = "borrowed::cow")]
    pub model: Cow<'a, str>,
    #[serde(borrow)]
    pub event_id: EventId<'a>,
    /// When the call started, unix milliseconds UTC.
    pub timestamp_ms: i64,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    pub response_model: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    pub provider: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    pub operation: Option<Cow<'a, str>>,
    /// Whole call duration in milliseconds, finite and ≥ 0.
    pub latency_ms: f64,
    /// Time to first token in milliseconds, finite and ≥ 0.
    pub ttft_ms: Option<f64>,
    /// Every input token, cache reads and cache writes included (the OpenTelemetry
    /// GenAI convention; `price` says how each part is billed).
    pub input_tokens: Option<u64>,
    /// Every output token, reasoning tokens included.
    pub output_tokens: Option<u64>,
    /// The part of `output_tokens` spent on reasoning (`gen_ai.usage.reasoning.output_tokens`).
    pub reasoning_output_tokens: Option<u64>,
    /// The part of `input_tokens` read from the provider's prompt cache.
    pub cache_read_input_tokens: Option<u64>,
    /// The part of `input_tokens` written to the provider's prompt cache
    /// (`gen_ai.usage.cache_creation.input_tokens`).
    pub cache_creation_input_tokens: Option<u64>,
    /// Cost in micro-dollars: as sent (rounded to the micro-dollar), else from the price
    /// table, else `None` (unknown model without a price).
    pub cost_micros: Option<u64>,
    pub status: Status,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    pub error_type: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    pub user_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    pub session_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    pub trace_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    pub span_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    pub endpoint: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    pub region: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::pairs")]
    pub attributes: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The API key the event was ingested with: its configured `name`, else a short id
    /// derived from its digest ([`crate::auth::Principal::key`]). Set by ingest from the
    /// request's key, never by the sender. Carried in the log record's front, beside the
    /// tenant (wire version 3), not in the event's own encoding.
    #[serde(skip)]
    pub key: Option<Cow<'a, str>>,
    /// The budget reservation this call settles (`POST /v1/budgets/reserve`): its event
    /// releases the hold, and its own cost is what the budget is charged. Sent by the
    /// caller; carried in the record's front like `key`.
    #[serde(skip)]
    pub reservation_id: Option<Cow<'a, str>>,
    /// What the call was sent (the prompt, or the messages array as the JSON it was
    /// sent in), only while payload capture is on (`[payloads]`): capped and redacted
    /// by ingest before the log, carried after the event in the record (wire version 4).
    #[serde(skip)]
    pub input: Option<Cow<'a, str>>,
    /// What the call answered, as `input`.
    #[serde(skip)]
    pub output: Option<Cow<'a, str>>,
}

impl<'a> Event<'a> {
    /// An event with the required fields only; set the rest with struct update syntax.
    pub fn new(
        model: impl Into<Cow<'a, str>>,
        event_id: EventId<'a>,
        timestamp_ms: i64,
        latency_ms: f64,
    ) -> Self {
        Self {
            model: model.into(),
            event_id,
            timestamp_ms,
            response_model: None,
            provider: None,
            operation: None,
            latency_ms,
            ttft_ms: None,
            input_tokens: None,
            output_tokens: None,
            reasoning_output_tokens: None,
            cache_read_input_tokens: None,
            cache_creation_input_tokens: None,
            cost_micros: None,
            status: Status::Ok,
            error_type: None,
            user_id: None,
            session_id: None,
            trace_id: None,
            span_id: None,
            endpoint: None,
            region: None,
            attributes: Vec::new(),
            key: None,
            reservation_id: None,
            input: None,
            output: None,
        }
    }
}

/// Deserializers that borrow strings from the input when the format allows it.
///
/// serde borrows only plain `Cow<str>` fields marked `#[serde(borrow)]`; inside an
/// `Option` or a `Vec` it would allocate every string. These helpers borrow in all three
/// shapes, so decoding a log record allocates nothing but the attribute list.
pub(crate) mod borrowed {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{Deserializer, Visitor};
    use serde::Deserialize;

    /// A string that borrows from the input when it can.
    pub struct BorrowedStr<'a>(pub Cow<'a, str>);

    impl<'de> Deserialize<'de> for BorrowedStr<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct StrVisitor;
            impl<'de> Visitor<'de> for StrVisitor {
                type Value = BorrowedStr<'de>;
                fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                    formatter.write_str("a string")
                }
                fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                    Ok(BorrowedStr(Cow::Borrowed(text)))
                }
                fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                    Ok(BorrowedStr(Cow::Owned(text.to_owned())))
                }
                fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
                    Ok(BorrowedStr(Cow::Owned(text)))
                }
            }
            deserializer.deserialize_str(StrVisitor)
        }
    }

    pub fn cow<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        BorrowedStr::deserialize(deserializer).map(|text| text.0)
    }

    pub fn option<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Cow<'de, str>>, D::Error> {
        Option::<BorrowedStr<'de>>::deserialize(deserializer).map(|text| text.map(|t| t.0))
    }

    #[allow(clippy::type_complexity)]
    pub fn pairs<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(Cow<'de, str>, Cow<'de, str>)>, D::Error> {
        Vec::<(BorrowedStr<'de>, BorrowedStr<'de>)>::deserialize(deserializer)
            .map(|pairs| pairs.into_iter().map(|(k, v)| (k.0, v.0)).collect())
    }
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
