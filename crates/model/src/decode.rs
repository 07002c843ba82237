//! Request bodies into validated events.
//!
//! A body is decompressed within a byte limit (a decompression bomb hits the limit, not
//! memory), then split into events: a JSON object, a JSON array of objects, or NDJSON
//! (one object per line). A body that cannot be read as a whole is a [`DecodeError`]; an
//! event that is readable but invalid is a [`Rejection`] naming its index and field, and
//! the rest of the body still goes through.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::limits;
use crate::price::PriceTable;
use crate::{Event, EventId, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: one object or an array of objects.
    Json,
    /// `application/x-ndjson`: one object per line; `index` is the line number from 0.
    Ndjson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
    Zstd,
}

/// What validation needs to know beyond the bytes.
#[derive(Debug, Clone)]
pub struct ValidationContext<'p> {
    /// Server clock, unix ms.
    pub now_ms: i64,
    /// Oldest accepted event: `now_ms - max_age_ms` (the raw-event retention).
    pub max_age_ms: i64,
    /// Furthest accepted event in the future (5 minutes).
    pub max_future_ms: i64,
    /// Events per request (10,000).
    pub max_events: usize,
    pub prices: &'p PriceTable,
}

/// One event refused; the others in the body are unaffected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub index: usize,
    pub error: String,
}

#[derive(Debug, Default)]
pub struct Decoded<'a> {
    pub events: Vec<Event<'a>>,
    /// Position in the body (array index or NDJSON line) of each accepted event.
    pub indexes: Vec<usize>,
    pub rejected: Vec<Rejection>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("body is not valid JSON at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("body must be a JSON object or an array of objects, found {found}")]
    NotObjectOrArray { found: &'static str },
    #[error("body holds more than {limit} events; split it into smaller requests")]
    TooManyEvents { limit: usize },
    #[error("body is larger than {limit} bytes decompressed; split it into smaller requests")]
    TooLarge { limit: usize },
    #[error("body could not be decompressed as {encoding}: {message}")]
    Decompress {
        encoding: &'static str,
        message: String,
    },
}

/// Decompresses `body` into `out` (cleared first), failing once more than `limit` bytes
/// would be produced.
pub fn decompress_into(
    body: &[u8],
    encoding: ContentEncoding,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    out.clear();
    match encoding {
        ContentEncoding::Identity => {
            if body.len() > limit {
                return Err(DecodeError::TooLarge { limit });
            }
            out.extend_from_slice(body);
            Ok(())
        }
        ContentEncoding::Gzip => {
            read_limited(flate2::read::MultiGzDecoder::new(body), limit, out, "gzip")
        }
        ContentEncoding::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(|error| {
                DecodeError::Decompress {
                    encoding: "zstd",
                    message: error.to_string(),
                }
            })?;
            read_limited(decoder, limit, out, "zstd")
        }
    }
}

/// Reads at most `limit + 1` bytes: one byte past the limit proves the body too large
/// without inflating the rest of a bomb.
fn read_limited(
    reader: impl Read,
    limit: usize,
    out: &mut Vec<u8>,
    encoding: &'static str,
) -> Result<(), DecodeError> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(out)
        .map_err(|error| DecodeError::Decompress {
            encoding,
            message: error.to_string(),
        })?;
    if out.len() > limit {
        out.clear();
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(())
}

/// Splits and validates the events of a (decompressed) body.
pub fn decode_events<'a>(
    body: &'a [u8],
    format: BodyFormat,
    context: &ValidationContext<'_>,
) -> Result<Decoded<'a>, DecodeError> {
    match format {
        BodyFormat::Json => decode_json(body, context),
        BodyFormat::Ndjson => decode_ndjson(body, context),
    }
}

fn syntax_error(error: &serde_json::Error) -> DecodeError {
    DecodeError::Syntax {
        line: error.line(),
        column: error.column(),
        message: strip_position(&error.to_string()),
    }
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

fn decode_json<'a>(
    body: &'a [u8],
    context: &ValidationContext<'_>,
) -> Result<Decoded<'a>, DecodeError> {
    let first = body
        .iter()
        .copied()
        .find(|byte| !byte.is_ascii_whitespace());
    let mut decoded = Decoded::default();
    match first {
        Some(b'[') => {
            let raws: Vec<&'a RawValue> =
                serde_json::from_slice(body).map_err(|error| syntax_error(&error))?;
            if raws.len() > context.max_events {
                return Err(DecodeError::TooManyEvents {
                    limit: context.max_events,
                });
            }
            decoded.events.reserve(raws.len());
            decoded.indexes.reserve(raws.len());
            for (index, raw) in raws.into_iter().enumerate() {
                decoded.push(index, decode_raw_event(raw, context));
            }
        }
        Some(b'{') => {
            let raw: &'a RawValue =
                serde_json::from_slice(body).map_err(|error| syntax_error(&error))?;
            decoded.push(0, decode_raw_event(raw, context));
        }
        None => {
            return Err(DecodeError::Syntax {
                line: 1,
                column: 0,
                message: "body is empty".to_string(),
            })
        }
        Some(other) => {
            // Still a syntax error when it is not JSON at all; otherwise name the kind.
            let value: &RawValue =
                serde_json::from_slice(body).map_err(|error| syntax_error(&error))?;
            let _ = other;
            return Err(DecodeError::NotObjectOrArray {
                found: json_kind(value.get()),
            });
        }
    }
    Ok(decoded)
}

fn decode_ndjson<'a>(
    body: &'a [u8],
    context: &ValidationContext<'_>,
) -> Result<Decoded<'a>, DecodeError> {
    let is_blank = |line: &[u8]| line.iter().all(u8::is_ascii_whitespace);
    let events = body
        .split(|byte| *byte == b'\n')
        .filter(|line| !is_blank(line))
        .count();
    if events > context.max_events {
        return Err(DecodeError::TooManyEvents {
            limit: context.max_events,
        });
    }
    let mut decoded = Decoded::default();
    decoded.events.reserve(events);
    decoded.indexes.reserve(events);
    for (index, line) in body.split(|byte| *byte == b'\n').enumerate() {
        if is_blank(line) {
            continue;
        }
        let outcome = match serde_json::from_slice::<&'a RawValue>(line) {
            Ok(raw) => decode_raw_event(raw, context),
            Err(error) => Err(format!(
                "line is not valid JSON at column {}: {}",
                error.column(),
                strip_position(&error.to_string())
            )),
        };
        decoded.push(index, outcome);
    }
    Ok(decoded)
}

impl<'a> Decoded<'a> {
    fn push(&mut self, index: usize, outcome: Result<Event<'a>, String>) {
        match outcome {
            Ok(event) => {
                self.events.push(event);
                self.indexes.push(index);
            }
            Err(error) => self.rejected.push(Rejection { index, error }),
        }
    }
}

/// The JSON kind of a raw value, from its first byte.
fn json_kind(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(_) => "a number",
        None => "nothing",
    }
}

/// Shows a raw value in an error message, shortened.
fn shown(raw: &RawValue) -> String {
    const MAX: usize = 40;
    let text = raw.get();
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A string that borrows from the body unless it holds escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = CowStr<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// The fields of one event object, each still raw JSON. Known fields are picked out as
/// the map is walked (the last of duplicate keys wins); unknown ones are skipped.
#[derive(Default)]
struct RawFields<'a> {
    event_id: Option<&'a RawValue>,
    timestamp: Option<&'a RawValue>,
    model: Option<&'a RawValue>,
    response_model: Option<&'a RawValue>,
    provider: Option<&'a RawValue>,
    operation: Option<&'a RawValue>,
    latency_ms: Option<&'a RawValue>,
    ttft_ms: Option<&'a RawValue>,
    input_tokens: Option<&'a RawValue>,
    output_tokens: Option<&'a RawValue>,
    cache_read_input_tokens: Option<&'a RawValue>,
    cost_usd: Option<&'a RawValue>,
    status: Option<&'a RawValue>,
    error_type: Option<&'a RawValue>,
    user_id: Option<&'a RawValue>,
    session_id: Option<&'a RawValue>,
    trace_id: Option<&'a RawValue>,
    span_id: Option<&'a RawValue>,
    endpoint: Option<&'a RawValue>,
    region: Option<&'a RawValue>,
    attributes: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = RawFields<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an event object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut fields = RawFields::default();
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    let slot = match key.0.as_ref() {
                        "event_id" => &mut fields.event_id,
                        "timestamp" => &mut fields.timestamp,
                        "model" => &mut fields.model,
                        "response_model" => &mut fields.response_model,
                        "provider" => &mut fields.provider,
                        "operation" => &mut fields.operation,
                        "latency_ms" => &mut fields.latency_ms,
                        "ttft_ms" => &mut fields.ttft_ms,
                        "input_tokens" => &mut fields.input_tokens,
                        "output_tokens" => &mut fields.output_tokens,
                        "cache_read_input_tokens" => &mut fields.cache_read_input_tokens,
                        "cost_usd" => &mut fields.cost_usd,
                        "status" => &mut fields.status,
                        "error_type" => &mut fields.error_type,
                        "user_id" => &mut fields.user_id,
                        "session_id" => &mut fields.session_id,
                        "trace_id" => &mut fields.trace_id,
                        "span_id" => &mut fields.span_id,
                        "endpoint" => &mut fields.endpoint,
                        "region" => &mut fields.region,
                        "attributes" => &mut fields.attributes,
                        _ => continue,
                    };
                    *slot = Some(value);
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// `null` counts as absent.
fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|value| value.get() != "null")
}

fn required<'a>(raw: Option<&'a RawValue>, field: &str) -> Result<&'a RawValue, String> {
    present(raw).ok_or_else(|| format!("{field}: required"))
}

fn string<'a>(raw: &'a RawValue, field: &str, max_bytes: usize) -> Result<Cow<'a, str>, String> {
    let text = serde_json::from_str::<CowStr<'a>>(raw.get())
        .map_err(|_| format!("{field}: expected a string, found {}", shown(raw)))?
        .0;
    if text.len() > max_bytes {
        return Err(format!(
            "{field}: longer than {max_bytes} bytes ({} bytes)",
            text.len()
        ));
    }
    Ok(text)
}

fn optional_string<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
    max_bytes: usize,
) -> Result<Option<Cow<'a, str>>, String> {
    present(raw)
        .map(|value| string(value, field, max_bytes))
        .transpose()
}

fn non_negative_number(raw: &RawValue, field: &str) -> Result<f64, String> {
    match serde_json::from_str::<f64>(raw.get()) {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!(
            "{field}: expected a number >= 0, found {}",
            shown(raw)
        )),
    }
}

fn count(raw: Option<&RawValue>, field: &str) -> Result<Option<u64>, String> {
    present(raw)
        .map(|value| {
            serde_json::from_str::<u64>(value.get())
                .map_err(|_| format!("{field}: expected an integer >= 0, found {}", shown(value)))
        })
        .transpose()
}

/// Largest accepted `cost_usd` of one call.
const MAX_COST_USD: f64 = 1e9;

fn timestamp(raw: &RawValue, context: &ValidationContext<'_>) -> Result<i64, String> {
    let text = raw.get();
    let ms = if text.starts_with('"') {
        let value = string(raw, "timestamp", 64)?;
        crate::time::parse_rfc3339_ms(&value).ok_or_else(|| {
            format!(
                "timestamp: expected RFC 3339 (2026-11-22T10:00:00Z) or integer unix ms, found {}",
                shown(raw)
            )
        })?
    } else {
        serde_json::from_str::<i64>(text).map_err(|_| {
            format!(
                "timestamp: expected RFC 3339 (2026-11-22T10:00:00Z) or integer unix ms, found {}",
                shown(raw)
            )
        })?
    };
    if ms > context.now_ms.saturating_add(context.max_future_ms) {
        return Err(format!(
            "timestamp: {} is more than {} s in the future; check the producer's clock",
            crate::time::format_rfc3339_ms(ms),
            context.max_future_ms / 1000
        ));
    }
    if ms < context.now_ms.saturating_sub(context.max_age_ms) {
        return Err(format!(
            "timestamp: {} is older than the retention of {} hours",
            crate::time::format_rfc3339_ms(ms),
            context.max_age_ms / 3_600_000
        ));
    }
    Ok(ms)
}

fn attributes<'a>(raw: Option<&'a RawValue>) -> Result<Vec<(Cow<'a, str>, Cow<'a, str>)>, String> {
    let Some(raw) = present(raw) else {
        return Ok(Vec::new());
    };
    let pairs: Vec<(CowStr<'a>, &'a RawValue)> = serde_json::from_str::<PairList<'a>>(raw.get())
        .map_err(|_| {
            format!(
                "attributes: expected an object of strings, found {}",
                shown(raw)
            )
        })?
        .0;
    if pairs.len() > limits::ATTRIBUTES {
        return Err(format!(
            "attributes: more than {} keys ({})",
            limits::ATTRIBUTES,
            pairs.len()
        ));
    }
    let mut out = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        let key = key.0;
        if key.len() > limits::ATTRIBUTE_KEY_BYTES {
            return Err(format!(
                "attributes: key {:?}… longer than {} bytes",
                key.chars().take(16).collect::<String>(),
                limits::ATTRIBUTE_KEY_BYTES
            ));
        }
        let value = serde_json::from_str::<CowStr<'a>>(value.get())
            .map_err(|_| {
                format!(
                    "attributes: value of {key:?} must be a string, found {}",
                    shown(value)
                )
            })?
            .0;
        if value.len() > limits::ATTRIBUTE_VALUE_BYTES {
            return Err(format!(
                "attributes: value of {key:?} longer than {} bytes",
                limits::ATTRIBUTE_VALUE_BYTES
            ));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// An object's entries in order, values raw.
struct PairList<'a>(Vec<(CowStr<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for PairList<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairVisitor;
        impl<'de> Visitor<'de> for PairVisitor {
            type Value = PairList<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut pairs = Vec::new();
                while let Some(entry) = map.next_entry::<CowStr<'de>, &'de RawValue>()? {
                    pairs.push(entry);
                }
                Ok(PairList(pairs))
            }
        }
        deserializer.deserialize_map(PairVisitor)
    }
}

/// Validates one event object (raw JSON) into an [`Event`].
fn decode_raw_event<'a>(
    raw: &'a RawValue,
    context: &ValidationContext<'_>,
) -> Result<Event<'a>, String> {
    let text = raw.get();
    if text.len() > limits::EVENT_BYTES {
        return Err(format!(
            "event: larger than {} bytes ({} bytes)",
            limits::EVENT_BYTES,
            text.len()
        ));
    }
    if !text.starts_with('{') {
        return Err(format!(
            "event: expected an object, found {}",
            json_kind(text)
        ));
    }
    let fields: RawFields<'a> = serde_json::from_str(text)
        .map_err(|error| format!("event: {}", strip_position(&error.to_string())))?;

    let model = string(
        required(fields.model, "model")?,
        "model",
        limits::MODEL_BYTES,
    )?;
    if model.is_empty() {
        return Err("model: must not be empty".to_string());
    }
    let event_id = match optional_string(fields.event_id, "event_id", limits::EVENT_ID_BYTES)? {
        Some(id) if id.is_empty() => return Err("event_id: must not be empty".to_string()),
        Some(id) => EventId::Client(id),
        None => EventId::Generated(uuid::Uuid::now_v7().as_u128()),
    };
    let timestamp_ms = timestamp(required(fields.timestamp, "timestamp")?, context)?;
    let latency_ms = non_negative_number(required(fields.latency_ms, "latency_ms")?, "latency_ms")?;
    let ttft_ms = present(fields.ttft_ms)
        .map(|value| non_negative_number(value, "ttft_ms"))
        .transpose()?;
    let status = match present(fields.status) {
        None => Status::Ok,
        Some(value) => match serde_json::from_str::<CowStr<'_>>(value.get()).map(|s| s.0) {
            Ok(text) if text == "ok" => Status::Ok,
            Ok(text) if text == "error" => Status::Error,
            _ => {
                return Err(format!(
                    "status: expected \"ok\" or \"error\", found {}",
                    shown(value)
                ))
            }
        },
    };
    let cost_usd = present(fields.cost_usd)
        .map(|value| {
            let usd = non_negative_number(value, "cost_usd")?;
            if usd > MAX_COST_USD {
                return Err(format!("cost_usd: larger than {MAX_COST_USD} for one call"));
            }
            Ok(usd)
        })
        .transpose()?;

    let mut event = Event {
        model,
        event_id,
        timestamp_ms,
        response_model: optional_string(
            fields.response_model,
            "response_model",
            limits::MODEL_BYTES,
        )?,
        provider: optional_string(fields.provider, "provider", limits::PROVIDER_BYTES)?,
        operation: optional_string(fields.operation, "operation", limits::OPERATION_BYTES)?,
        latency_ms,
        ttft_ms,
        input_tokens: count(fields.input_tokens, "input_tokens")?,
        output_tokens: count(fields.output_tokens, "output_tokens")?,
        cache_read_input_tokens: count(fields.cache_read_input_tokens, "cache_read_input_tokens")?,
        cost_micros: cost_usd.map(|usd| (usd * 1e6).round() as u64),
        status,
        error_type: optional_string(fields.error_type, "error_type", limits::ERROR_TYPE_BYTES)?,
        user_id: optional_string(fields.user_id, "user_id", limits::KEY_BYTES)?,
        session_id: optional_string(fields.session_id, "session_id", limits::KEY_BYTES)?,
        trace_id: optional_string(fields.trace_id, "trace_id", limits::KEY_BYTES)?,
        span_id: optional_string(fields.span_id, "span_id", limits::KEY_BYTES)?,
        endpoint: optional_string(fields.endpoint, "endpoint", limits::KEY_BYTES)?,
        region: optional_string(fields.region, "region", limits::KEY_BYTES)?,
        attributes: attributes(fields.attributes)?,
    };
    if event.cost_micros.is_none() {
        event.cost_micros = context.prices.cost_micros(&event);
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    const NOW: i64 = 1_795_339_620_000;

    fn context(prices: &PriceTable) -> ValidationContext<'_> {
        ValidationContext {
            now_ms: NOW,
            max_age_ms: 7 * 24 * 3_600_000,
            max_future_ms: 300_000,
            max_events: 10,
            prices,
        }
    }

    fn one(json: &str) -> Result<Event<'_>, String> {
        let prices = PriceTable::with_defaults();
        let decoded = decode_events(json.as_bytes(), BodyFormat::Json, &context(&prices))
            .expect("body readable");
        match (
            decoded.events.into_iter().next(),
            decoded.rejected.into_iter().next(),
        ) {
            (Some(event), None) => Ok(event),
            (None, Some(rejection)) => Err(rejection.error),
            other => panic!("one outcome expected: {other:?}"),
        }
    }

    #[test]
    fn a_full_event_decodes_with_borrowed_strings() {
        let json = format!(
            r#"{{"event_id":"e1","timestamp":{NOW},"model":"gpt-4o","response_model":"gpt-4o-2024-08-06",
            "provider":"openai","operation":"chat","latency_ms":812.5,"ttft_ms":140,"input_tokens":1000,
            "output_tokens":100,"cache_read_input_tokens":400,"status":"error","error_type":"timeout",
            "user_id":"u","session_id":"s","trace_id":"t","span_id":"p","endpoint":"e","region":"r",
            "attributes":{{"team":"search"}},"unknown_field":[1,2,3]}}"#
        );
        let event = one(&json).expect("valid");
        assert_eq!(event.event_id, EventId::Client(Cow::Borrowed("e1")));
        assert!(matches!(event.model, Cow::Borrowed("gpt-4o")));
        assert_eq!(event.latency_ms, 812.5);
        assert_eq!(event.ttft_ms, Some(140.0));
        assert_eq!(event.status, Status::Error);
        assert_eq!(
            event.attributes,
            vec![(Cow::Borrowed("team"), Cow::Borrowed("search"))]
        );
        // No cost sent: priced from the table, (600 × 2.5 + 400 × 1.25 + 100 × 10) µ$/M.
        assert_eq!(event.cost_micros, Some(3_000));
    }

    #[test]
    fn escapes_make_owned_strings_and_rfc3339_timestamps_parse() {
        let event = one(r#"{"timestamp":"2026-11-22T09:27:00Z","model":"a\"b","latency_ms":1,"cost_usd":0.0000015}"#)
            .expect("valid");
        assert!(matches!(event.model, Cow::Owned(ref m) if m == "a\"b"));
        assert_eq!(event.timestamp_ms, NOW);
        assert_eq!(event.cost_micros, Some(2), "1.5 µ$ rounds half up");
        assert!(matches!(event.event_id, EventId::Generated(_)));
    }

    #[test]
    fn every_rule_names_its_field() {
        let cases = [
            (
                format!(r#"{{"model":"m","latency_ms":1}}"#),
                "timestamp: required",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"latency_ms":1}}"#),
                "model: required",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":"m"}}"#),
                "latency_ms: required",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":"","latency_ms":1}}"#),
                "model: must not be empty",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":7,"latency_ms":1}}"#),
                "model: expected a string",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":"m","latency_ms":-1}}"#),
                "latency_ms: expected a number >= 0",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":"m","latency_ms":"1"}}"#),
                "latency_ms: expected a number",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"ttft_ms":true}}"#),
                "ttft_ms: expected a number",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"input_tokens":1.5}}"#),
                "input_tokens: expected an integer >= 0",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"output_tokens":-2}}"#),
                "output_tokens: expected an integer >= 0",
            ),
            (
                format!(
                    r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"cache_read_input_tokens":"x"}}"#
                ),
                "cache_read_input_tokens: expected an integer",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"cost_usd":-0.1}}"#),
                "cost_usd: expected a number >= 0",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"cost_usd":1e12}}"#),
                "cost_usd: larger than",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"status":"meh"}}"#),
                "status: expected \"ok\" or \"error\"",
            ),
            (
                format!(r#"{{"timestamp":"yesterday","model":"m","latency_ms":1}}"#),
                "timestamp: expected RFC 3339",
            ),
            (
                format!(r#"{{"timestamp":1.5,"model":"m","latency_ms":1}}"#),
                "timestamp: expected RFC 3339",
            ),
            (
                format!(
                    r#"{{"timestamp":{},"model":"m","latency_ms":1}}"#,
                    NOW + 301_000
                ),
                "timestamp: 2026-11-22T09:32:01Z is more than 300 s in the future",
            ),
            (
                format!(
                    r#"{{"timestamp":{},"model":"m","latency_ms":1}}"#,
                    NOW - 8 * 24 * 3_600_000
                ),
                "timestamp: 2026-11-14T09:27:00Z is older than the retention of 168 hours",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"event_id":""}}"#),
                "event_id: must not be empty",
            ),
            (
                format!(
                    r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"event_id":"{}"}}"#,
                    "x".repeat(65)
                ),
                "event_id: longer than 64 bytes",
            ),
            (
                format!(
                    r#"{{"timestamp":{NOW},"model":"{}","latency_ms":1}}"#,
                    "m".repeat(129)
                ),
                "model: longer than 128 bytes",
            ),
            (
                format!(
                    r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"provider":"{}"}}"#,
                    "p".repeat(65)
                ),
                "provider: longer than 64 bytes",
            ),
            (
                format!(
                    r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"operation":"{}"}}"#,
                    "o".repeat(33)
                ),
                "operation: longer than 32 bytes",
            ),
            (
                format!(
                    r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"user_id":"{}"}}"#,
                    "u".repeat(129)
                ),
                "user_id: longer than 128 bytes",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"attributes":[]}}"#),
                "attributes: expected an object of strings",
            ),
            (
                format!(
                    r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"attributes":{{"k":1}}}}"#
                ),
                "attributes: value of \"k\" must be a string",
            ),
            (
                format!(
                    r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"attributes":{{"{}":"v"}}}}"#,
                    "k".repeat(65)
                ),
                "attributes: key",
            ),
            (
                format!(
                    r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"attributes":{{"k":"{}"}}}}"#,
                    "v".repeat(257)
                ),
                "attributes: value of \"k\" longer than 256 bytes",
            ),
            (
                format!(
                    r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"trace_id":"{}"}}"#,
                    "t".repeat(40_000)
                ),
                "event: larger than 32768 bytes",
            ),
        ];
        for (json, expected) in cases {
            let error = one(&json).expect_err(&json);
            assert!(
                error.starts_with(expected),
                "{json}\n  got: {error}\n want: {expected}"
            );
        }
        let many: String = (0..33)
            .map(|i| format!(r#""k{i}":"v""#))
            .collect::<Vec<_>>()
            .join(",");
        let error = one(&format!(
            r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"attributes":{{{many}}}}}"#
        ))
        .expect_err("33 attributes");
        assert!(
            error.starts_with("attributes: more than 32 keys"),
            "{error}"
        );
        // null means absent for optional fields.
        let json = format!(
            r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"ttft_ms":null,"user_id":null}}"#
        );
        let event = one(&json).expect("nulls are absent");
        assert_eq!((event.ttft_ms, event.user_id), (None, None));
    }

    #[test]
    fn arrays_reject_per_element_and_keep_indexes() {
        let prices = PriceTable::with_defaults();
        let body = format!(
            r#"[{{"timestamp":{NOW},"model":"a","latency_ms":1}}, 5, {{"timestamp":{NOW},"latency_ms":1}}, {{"timestamp":{NOW},"model":"b","latency_ms":2}}]"#
        );
        let decoded =
            decode_events(body.as_bytes(), BodyFormat::Json, &context(&prices)).expect("readable");
        assert_eq!(decoded.indexes, vec![0, 3]);
        assert_eq!(decoded.events[1].model, "b");
        let rejected: Vec<(usize, &str)> = decoded
            .rejected
            .iter()
            .map(|r| (r.index, r.error.as_str()))
            .collect();
        assert_eq!(
            rejected,
            vec![
                (1, "event: expected an object, found a number"),
                (2, "model: required")
            ]
        );
    }

    #[test]
    fn unreadable_bodies_say_where() {
        let prices = PriceTable::with_defaults();
        let error = decode_events(
            b"[{\"model\": \"m\",\n  \"latency_ms\": }]",
            BodyFormat::Json,
            &context(&prices),
        )
        .expect_err("syntax");
        assert!(
            matches!(error, DecodeError::Syntax { line: 2, .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("body is not valid JSON at line 2, column"),
            "{error}"
        );
        let error =
            decode_events(b"\"text\"", BodyFormat::Json, &context(&prices)).expect_err("string");
        assert_eq!(error, DecodeError::NotObjectOrArray { found: "a string" });
        assert!(matches!(
            decode_events(b"  ", BodyFormat::Json, &context(&prices)),
            Err(DecodeError::Syntax { .. })
        ));
        let eleven = format!("[{}]", vec!["{}"; 11].join(","));
        assert_eq!(
            decode_events(eleven.as_bytes(), BodyFormat::Json, &context(&prices)).err(),
            Some(DecodeError::TooManyEvents { limit: 10 })
        );
    }

    #[test]
    fn ndjson_rejects_only_the_bad_line() {
        let prices = PriceTable::with_defaults();
        let body = format!(
            "{{\"timestamp\":{NOW},\"model\":\"a\",\"latency_ms\":1}}\n\n{{\"timestamp\":{NOW},\"model\":\n{{\"timestamp\":{NOW},\"model\":\"b\",\"latency_ms\":1}}\r\n"
        );
        let decoded = decode_events(body.as_bytes(), BodyFormat::Ndjson, &context(&prices))
            .expect("readable");
        assert_eq!(decoded.indexes, vec![0, 3]);
        assert_eq!(decoded.rejected.len(), 1);
        assert_eq!(decoded.rejected[0].index, 2);
        assert!(
            decoded.rejected[0]
                .error
                .starts_with("line is not valid JSON at column"),
            "{:?}",
            decoded.rejected
        );
        let eleven = format!("{{}}\n").repeat(11);
        assert_eq!(
            decode_events(eleven.as_bytes(), BodyFormat::Ndjson, &context(&prices)).err(),
            Some(DecodeError::TooManyEvents { limit: 10 })
        );
    }

    #[test]
    fn compressed_bodies_round_trip_and_bombs_hit_the_limit() {
        let text = b"[{\"a\":1}]".repeat(100);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&text).expect("gzip");
        let gzip = gzip.finish().expect("gzip");
        let mut out = Vec::new();
        decompress_into(&gzip, ContentEncoding::Gzip, 1 << 20, &mut out).expect("gzip decodes");
        assert_eq!(out, text);
        let zstd = zstd::encode_all(&text[..], 3).expect("zstd");
        decompress_into(&zstd, ContentEncoding::Zstd, 1 << 20, &mut out).expect("zstd decodes");
        assert_eq!(out, text);

        let zeros = vec![0u8; 100 << 20];
        let bomb = zstd::encode_all(&zeros[..], 3).expect("zstd");
        assert!(bomb.len() < 1 << 20);
        assert_eq!(
            decompress_into(&bomb, ContentEncoding::Zstd, 16 << 20, &mut out),
            Err(DecodeError::TooLarge { limit: 16 << 20 })
        );
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&zeros).expect("gzip");
        let bomb = gzip.finish().expect("gzip");
        assert_eq!(
            decompress_into(&bomb, ContentEncoding::Gzip, 16 << 20, &mut out),
            Err(DecodeError::TooLarge { limit: 16 << 20 })
        );
        assert!(
            out.capacity() <= (32 << 20),
            "bounded memory: {}",
            out.capacity()
        );
        assert!(matches!(
            decompress_into(b"not gzip", ContentEncoding::Gzip, 100, &mut out),
            Err(DecodeError::Decompress {
                encoding: "gzip",
                ..
            })
        ));
        assert_eq!(
            decompress_into(&[0; 11], ContentEncoding::Identity, 10, &mut out),
            Err(DecodeError::TooLarge { limit: 10 })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let prices = PriceTable::with_defaults();
            let _ = decode_events(&body, BodyFormat::Json, &context(&prices));
            let _ = decode_events(&body, BodyFormat::Ndjson, &context(&prices));
            let mut out = Vec::new();
            let _ = decompress_into(&body, ContentEncoding::Gzip, 1 << 16, &mut out);
            let _ = decompress_into(&body, ContentEncoding::Zstd, 1 << 16, &mut out);
        }

        #[test]
        fn valid_events_keep_their_values(
            latency in 0.0f64..1e7,
            tokens in proptest::option::of(0u64..1_000_000_000),
            model in "[a-z0-9\\-]{1,20}",
            age in 0i64..600_000,
        ) {
            let mut json = serde_json::json!({"timestamp": NOW - age, "model": model, "latency_ms": latency});
            if let Some(tokens) = tokens {
                json["input_tokens"] = tokens.into();
            }
            let text = json.to_string();
            let event = one(&text).expect("valid event");
            prop_assert_eq!(event.model.as_ref(), model.as_str());
            prop_assert_eq!(event.latency_ms, latency);
            prop_assert_eq!(event.input_tokens, tokens);
            prop_assert_eq!(event.timestamp_ms, NOW - age);
        }
    }
}
