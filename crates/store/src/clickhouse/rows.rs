//! Row types of the ClickHouse tables, in column order (RowBinary carries no names), and
//! their conversions from and to the pipeline's types.

use std::borrow::Cow;
use std::collections::BTreeSet;

use ais_model::{Event, EventId, Status};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A raw event as written: strings borrowed from the decoded wire record.
#[derive(Debug, Row, Serialize)]
pub struct EventRowOut<'a> {
    pub tenant: &'a str,
    pub event_id: Cow<'a, str>,
    pub client_id: u8,
    pub timestamp_ms: i64,
    pub model: &'a str,
    pub response_model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub reasoning_output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cost_micros: Option<u64>,
    pub status: &'static str,
    pub error_type: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub span_id: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub region: Option<&'a str>,
    pub attribute_keys: Vec<&'a str>,
    pub attribute_values: Vec<&'a str>,
    pub input: Option<&'a str>,
    pub output: Option<&'a str>,
    pub log_partition: u32,
    pub log_offset: u64,
}

impl<'a> EventRowOut<'a> {
    pub fn new(tenant: &'a str, event: &'a Event<'a>, log_partition: u32, log_offset: u64) -> Self {
        let (event_id, client_id) = match &event.event_id {
            EventId::Client(id) => (Cow::Borrowed(id.as_ref()), 1),
            EventId::Generated(id) => {
                let mut buffer = uuid::Uuid::encode_buffer();
                let text = uuid::Uuid::from_u128(*id)
                    .hyphenated()
                    .encode_lower(&mut buffer)
                    .to_string();
                (Cow::Owned(text), 0)
            }
        };
        Self {
            tenant,
            event_id,
            client_id,
            timestamp_ms: event.timestamp_ms,
            model: &event.model,
            response_model: event.response_model.as_deref(),
            provider: event.provider.as_deref(),
            operation: event.operation.as_deref(),
            latency_ms: event.latency_ms,
            ttft_ms: event.ttft_ms,
            input_tokens: event.input_tokens,
            output_tokens: event.output_tokens,
            reasoning_output_tokens: event.reasoning_output_tokens,
            cache_read_input_tokens: event.cache_read_input_tokens,
            cache_creation_input_tokens: event.cache_creation_input_tokens,
            cost_micros: event.cost_micros,
            status: event.status.as_str(),
            error_type: event.error_type.as_deref(),
            user_id: event.user_id.as_deref(),
            session_id: event.session_id.as_deref(),
            trace_id: event.trace_id.as_deref(),
            span_id: event.span_id.as_deref(),
            endpoint: event.endpoint.as_deref(),
            region: event.region.as_deref(),
            attribute_keys: event
                .attributes
                .iter()
                .map(|(key, _)| key.as_ref())
                .collect(),
            attribute_values: event
                .attributes
                .iter()
                .map(|(_, value)| value.as_ref())
                .collect(),
            input: event.input.as_deref(),
            output: event.output.as_deref(),
            log_partition,
            log_offset,
        }
    }
}

/// A raw event as read back (`GET /v1/events`).
#[derive(Debug, Row, Deserialize)]
pub struct EventRowIn {
    pub tenant: String,
    pub event_id: String,
    pub timestamp_ms: i64,
    pub model: String,
    pub response_model: Option<String>,
    pub provider: Option<String>,
    pub operation: Option<String>,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub reasoning_output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cost_micros: Option<u64>,
    pub status: String,
    pub error_type: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub attribute_keys: Vec<String>,
    pub attribute_values: Vec<String>,
    pub input: Option<String>,
    pub output: Option<String>,
}

/// The columns [`EventRowIn`] reads, in its field order: what the select lists are
/// checked against.
#[cfg(test)]
const EVENT_COLUMNS: &str = "tenant, event_id, timestamp_ms, model, response_model, \
    provider, operation, latency_ms, ttft_ms, input_tokens, output_tokens, \
    reasoning_output_tokens, cache_read_input_tokens, cache_creation_input_tokens, \
    cost_micros, status, error_type, user_id, session_id, trace_id, span_id, endpoint, \
    region, attribute_keys, attribute_values, input, output";

/// Each column of [`EVENT_COLUMNS`]: the event field it holds (as the API and
/// [`ais_rollup::breakdown::Grouper::fields_read`] name it), the column, and the
/// column type's empty value, which [`into_event`](EventRowIn::into_event) reads as a
/// field the event lacks (`""`, 0, `ok`, `None`, no attributes).
const EVENT_COLUMN_FIELDS: [(&str, &str, &str); 27] = [
    ("tenant", "tenant", "''"),
    ("event_id", "event_id", "''"),
    ("timestamp", "timestamp_ms", "toInt64(0)"),
    ("model", "model", "''"),
    (
        "response_model",
        "response_model",
        "CAST(NULL AS Nullable(String))",
    ),
    ("provider", "provider", "CAST(NULL AS Nullable(String))"),
    ("operation", "operation", "CAST(NULL AS Nullable(String))"),
    ("latency_ms", "latency_ms", "toFloat64(0)"),
    ("ttft_ms", "ttft_ms", "CAST(NULL AS Nullable(Float64))"),
    (
        "input_tokens",
        "input_tokens",
        "CAST(NULL AS Nullable(UInt64))",
    ),
    (
        "output_tokens",
        "output_tokens",
        "CAST(NULL AS Nullable(UInt64))",
    ),
    (
        "reasoning_output_tokens",
        "reasoning_output_tokens",
        "CAST(NULL AS Nullable(UInt64))",
    ),
    (
        "cache_read_input_tokens",
        "cache_read_input_tokens",
        "CAST(NULL AS Nullable(UInt64))",
    ),
    (
        "cache_creation_input_tokens",
        "cache_creation_input_tokens",
        "CAST(NULL AS Nullable(UInt64))",
    ),
    ("cost_usd", "cost_micros", "CAST(NULL AS Nullable(UInt64))"),
    ("status", "status", "'ok'"),
    ("error_type", "error_type", "CAST(NULL AS Nullable(String))"),
    ("user_id", "user_id", "CAST(NULL AS Nullable(String))"),
    ("session_id", "session_id", "CAST(NULL AS Nullable(String))"),
    ("trace_id", "trace_id", "CAST(NULL AS Nullable(String))"),
    ("span_id", "span_id", "CAST(NULL AS Nullable(String))"),
    ("endpoint", "endpoint", "CAST(NULL AS Nullable(String))"),
    ("region", "region", "CAST(NULL AS Nullable(String))"),
    ("attributes", "attribute_keys", "emptyArrayString()"),
    ("attributes", "attribute_values", "emptyArrayString()"),
    ("input", "input", "CAST(NULL AS Nullable(String))"),
    ("output", "output", "CAST(NULL AS Nullable(String))"),
];

/// The select list of `GET /v1/events`: every column, the payloads only when asked
/// for (else ClickHouse neither reads nor sends them).
pub fn event_columns_listing(payloads: bool) -> String {
    let fields: BTreeSet<&str> = EVENT_COLUMN_FIELDS
        .iter()
        .map(|(field, _, _)| *field)
        .filter(|field| payloads || !matches!(*field, "input" | "output"))
        .collect();
    event_columns_reading(&fields)
}

/// The select list of an [`EventRowIn`] that reads only the columns of `fields` (and
/// the tenant and time, which every read scopes by): every other column is its type's
/// empty value, so ClickHouse neither reads nor sends it. The empty values carry no
/// alias, so `WHERE` still sees the columns.
pub fn event_columns_reading(fields: &BTreeSet<&str>) -> String {
    EVENT_COLUMN_FIELDS
        .iter()
        .map(|(field, column, empty)| {
            let read = fields.contains(field) || matches!(*field, "tenant" | "timestamp");
            if read {
                *column
            } else {
                *empty
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl EventRowIn {
    pub fn into_event(self) -> Result<(String, Event<'static>), StoreError> {
        let status = Status::parse(&self.status).ok_or_else(|| {
            StoreError::Malformed(format!(
                "event {} has status {:?}, not ok or error",
                self.event_id, self.status
            ))
        })?;
        if self.attribute_keys.len() != self.attribute_values.len() {
            return Err(StoreError::Malformed(format!(
                "event {} has {} attribute keys but {} values",
                self.event_id,
                self.attribute_keys.len(),
                self.attribute_values.len()
            )));
        }
        let owned = |text: Option<String>| text.map(Cow::Owned);
        let event = Event {
            model: Cow::Owned(self.model),
            event_id: EventId::Client(Cow::Owned(self.event_id)),
            timestamp_ms: self.timestamp_ms,
            response_model: owned(self.response_model),
            provider: owned(self.provider),
            operation: owned(self.operation),
            latency_ms: self.latency_ms,
            ttft_ms: self.ttft_ms,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            reasoning_output_tokens: self.reasoning_output_tokens,
            cache_read_input_tokens: self.cache_read_input_tokens,
            cache_creation_input_tokens: self.cache_creation_input_tokens,
            cost_micros: self.cost_micros,
            status,
            error_type: owned(self.error_type),
            user_id: owned(self.user_id),
            session_id: owned(self.session_id),
            trace_id: owned(self.trace_id),
            span_id: owned(self.span_id),
            endpoint: owned(self.endpoint),
            region: owned(self.region),
            attributes: self
                .attribute_keys
                .into_iter()
                .zip(self.attribute_values)
                .map(|(key, value)| (Cow::Owned(key), Cow::Owned(value)))
                .collect(),
            // Raw events keep the call, not who sent it or what it settled.
            key: None,
            reservation_id: None,
            input: owned(self.input),
            output: owned(self.output),
        };
        Ok((self.tenant, event))
    }
}

/// One rollup partial of a batch, or the batch's marker (tenant and model empty).
#[derive(Debug, Row, Serialize)]
pub struct RollupRowOut<'a> {
    pub tenant: &'a str,
    pub model: &'a str,
    /// Unix seconds (`DateTime`).
    pub minute: u32,
    pub log_partition: u32,
    pub first_offset: u64,
    pub next_offset: u64,
    pub watermark_ms: i64,
    pub requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cost_micros: u64,
    pub late_events: u64,
    #[serde(with = "serde_bytes")]
    pub partial: &'a [u8],
    pub written_ms: u64,
}

/// A dimension rollup as written: one group of one batch.
#[derive(Debug, Row, Serialize)]
pub struct DimensionRowOut<'a> {
    pub tenant: &'a str,
    pub dimension: &'a str,
    /// Unix seconds (`DateTime`).
    pub minute: u32,
    pub kind: u8,
    pub value: &'a str,
    pub log_partition: u32,
    pub first_offset: u64,
    pub next_offset: u64,
    pub requests: u64,
    #[serde(with = "serde_bytes")]
    pub partial: &'a [u8],
    pub written_ms: u64,
}

/// A committed dimension rollup as a breakdown reads it.
#[derive(Debug, Row, Deserialize)]
pub struct DimensionRowIn {
    pub kind: u8,
    pub value: String,
    pub requests: u64,
    #[serde(with = "serde_bytes")]
    pub partial: Vec<u8>,
}

/// A group some batch stored for a (tenant, dimension, minute).
#[derive(Debug, Row, Deserialize)]
pub struct StoredGroupRow {
    pub tenant: String,
    pub dimension: String,
    pub minute_ms: i64,
    pub kind: u8,
    pub value: String,
}

#[derive(Debug, Row, Deserialize)]
pub struct PartialRow {
    pub tenant: String,
    pub model: String,
    pub minute_ms: i64,
    #[serde(with = "serde_bytes")]
    pub partial: Vec<u8>,
}

#[derive(Debug, Row, Deserialize)]
pub struct PositionRow {
    pub log_partition: u32,
    pub next_offset: u64,
    pub watermark_ms: i64,
}

#[derive(Debug, Row, Deserialize)]
pub struct DedupRow {
    pub tenant: String,
    pub event_id: String,
    pub timestamp_ms: i64,
}

#[derive(Debug, Row, Serialize, Deserialize)]
pub struct AnomalyRow {
    pub tenant: String,
    pub model: String,
    pub detector: String,
    pub window_start_ms: i64,
    pub metric: String,
    pub observed: f64,
    pub baseline: f64,
    pub score: f64,
    pub state: String,
    pub resolved_window_ms: Option<i64>,
    pub version: u64,
}

/// An anomaly of a dimension's value (`location_anomalies`).
#[derive(Debug, Row, Serialize, Deserialize)]
pub struct LocationAnomalyRow {
    pub tenant: String,
    pub model: String,
    pub dimension: String,
    pub value: String,
    pub detector: String,
    pub window_start_ms: i64,
    pub metric: String,
    pub observed: f64,
    pub baseline: f64,
    pub score: f64,
    pub state: String,
    pub resolved_window_ms: Option<i64>,
    pub version: u64,
}

/// A committed dimension rollup as the evaluator reads it, one row per batch.
#[derive(Debug, Row, Deserialize)]
pub struct DimensionWindowRow {
    pub tenant: String,
    pub dimension: String,
    pub minute_ms: i64,
    pub kind: u8,
    pub value: String,
    #[serde(with = "serde_bytes")]
    pub partial: Vec<u8>,
}

#[derive(Debug, Row, Serialize, Deserialize)]
pub struct EvaluationRow {
    pub id: u8,
    pub next_window_ms: i64,
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
    pub version: u64,
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct OutboxRow {
    pub sink: String,
    pub key: String,
    pub id: i64,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub settled: u8,
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projected_select_list_names_every_column_in_order() {
        let columns: Vec<&str> = EVENT_COLUMN_FIELDS
            .iter()
            .map(|(_, column, _)| *column)
            .collect();
        let listed: Vec<&str> = EVENT_COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(columns, listed);
        let every_field: BTreeSet<&str> = EVENT_COLUMN_FIELDS
            .iter()
            .map(|(field, _, _)| *field)
            .collect();
        assert_eq!(event_columns_reading(&every_field), listed.join(", "));
        let projected = event_columns_reading(&BTreeSet::from(["user_id"]));
        assert!(
            projected.starts_with("tenant, '', timestamp_ms, '',"),
            "{projected}"
        );
        assert!(projected.contains(", user_id, "), "{projected}");
        assert!(
            projected.ends_with(
                "emptyArrayString(), emptyArrayString(), CAST(NULL AS Nullable(String)), CAST(NULL AS Nullable(String))"
            ),
            "{projected}"
        );
        // The event list reads payloads only when asked for.
        assert!(event_columns_listing(true).ends_with("attribute_values, input, output"));
        let without = event_columns_listing(false);
        assert!(
            without.ends_with(
                "attribute_values, CAST(NULL AS Nullable(String)), CAST(NULL AS Nullable(String))"
            ),
            "{without}"
        );
    }
}
