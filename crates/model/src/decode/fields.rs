//! One event object: its fields picked out as raw JSON, then checked one by one.
//!
//! An event is read once into [`RawFields`] (known keys, values still raw JSON, unknown
//! keys skipped); each field is then parsed into its type here, so a wrong type rejects
//! the event with a message that names the field instead of failing the whole body.
//! Strings without escapes borrow from the body.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{rules, ValidationContext};
use crate::event::limits;
use crate::{Event, EventId, Status};

/// The JSON kind of a raw value, from its first byte.
pub(super) fn json_kind(raw: &str) -> &'static str {
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
pub(super) struct RawFields<'a> {
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
    reasoning_output_tokens: Option<&'a RawValue>,
    cache_read_input_tokens: Option<&'a RawValue>,
    cache_creation_input_tokens: Option<&'a RawValue>,
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
    reservation_id: Option<&'a RawValue>,
    input: Option<&'a RawValue>,
    output: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = RawFields<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an event object")
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                read_fields(map).map(|(fields, _)| fields)
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// Picks the known fields out of an event object, and measures the object: the bytes
/// of its names and raw values with their quotes, colons, commas and braces, that is
/// its size written without whitespace between tokens.
fn read_fields<'de, M: MapAccess<'de>>(mut map: M) -> Result<(RawFields<'de>, usize), M::Error> {
    let mut fields = RawFields::default();
    // `{}`; each entry adds `"name":value` and a comma after all but the last.
    let mut bytes = 2_usize;
    let mut entries = 0_usize;
    while let Some(key) = map.next_key::<CowStr<'de>>()? {
        let value: &'de RawValue = map.next_value()?;
        bytes =
            bytes.saturating_add(key.0.len() + value.get().len() + 3 + usize::from(entries > 0));
        entries += 1;
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
            "reasoning_output_tokens" => &mut fields.reasoning_output_tokens,
            "cache_read_input_tokens" => &mut fields.cache_read_input_tokens,
            "cache_creation_input_tokens" => &mut fields.cache_creation_input_tokens,
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
            "reservation_id" => &mut fields.reservation_id,
            "input" => &mut fields.input,
            "output" => &mut fields.output,
            _ => continue,
        };
        *slot = Some(value);
    }
    Ok((fields, bytes))
}

/// One element of an array of events, read in the same parser pass as the array: an
/// object's fields and size, or the kind of anything else (which rejects that element
/// alone). Reading elements as raw values first and each again as an object would walk
/// every byte of the body twice.
// One lives on the stack per element for as long as it takes to validate it; boxing the
// fields would allocate once per event instead.
#[allow(clippy::large_enum_variant)]
pub(super) enum Element<'a> {
    Object { fields: RawFields<'a>, bytes: usize },
    Other { kind: &'static str },
}

/// Reads one [`Element`] from the array's deserializer.
pub(super) struct ElementSeed;

impl<'de> DeserializeSeed<'de> for ElementSeed {
    type Value = Element<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ElementSeed {
    type Value = Element<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an event")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
        let (fields, bytes) = read_fields(map)?;
        Ok(Element::Object { fields, bytes })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Element::Other { kind: "an array" })
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Element::Other { kind: "a string" })
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Element::Other { kind: "a boolean" })
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Element::Other { kind: "null" })
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Element::Other { kind: "a number" })
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Element::Other { kind: "a number" })
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Element::Other { kind: "a number" })
    }
}

/// Validates one array element.
pub(super) fn decode_element<'a>(
    element: Element<'a>,
    context: &ValidationContext<'_>,
    ids: &mut GeneratedIds,
) -> Result<Event<'a>, String> {
    match element {
        Element::Object { fields, bytes } => {
            check_event_size(bytes, context)?;
            validate(fields, context, ids)
        }
        Element::Other { kind } => Err(format!("event: expected an object, found {kind}")),
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
    let text = json_string(raw)
        .ok_or_else(|| format!("{field}: expected a string, found {}", shown(raw)))?;
    rules::check_len(field, &text, max_bytes)?;
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

/// The contents of a JSON string without escapes, borrowed as they are.
///
/// A `RawValue` is already valid JSON, so a value that starts with a quote is a whole
/// string with no raw control characters; without a backslash its text is exactly the
/// bytes between the quotes. This skips a second trip through the JSON parser for the
/// common case; strings with escapes take the parser and come back owned.
fn plain_string(raw: &RawValue) -> Option<&str> {
    let inner = raw.get().strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        return None;
    }
    Some(inner)
}

/// A JSON string value, borrowed unless it holds escapes; `None` for any other value.
fn json_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    if let Some(plain) = plain_string(raw) {
        return Some(Cow::Borrowed(plain));
    }
    serde_json::from_str::<CowStr<'_>>(raw.get())
        .ok()
        .map(|text| text.0)
}

fn non_negative_number(raw: &RawValue, field: &str) -> Result<f64, String> {
    // A valid JSON number is also valid for Rust's correctly rounded float parser, and
    // nothing else that parses (`inf`, `NaN`, `+1`) can be a raw JSON value, so this
    // equals serde_json's reading without another parser pass. Out-of-range exponents
    // become infinite and fail the finiteness check.
    match raw.get().parse::<f64>() {
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
            // A raw JSON integer is digits with an optional `-`, which Rust's parser reads
            // exactly; fractions, exponents, negatives and non-numbers all fail here.
            value
                .get()
                .parse::<u64>()
                .map_err(|_| format!("{field}: expected an integer >= 0, found {}", shown(value)))
        })
        .transpose()
}

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
        text.parse::<i64>().map_err(|_| {
            format!(
                "timestamp: expected RFC 3339 (2026-11-22T10:00:00Z) or integer unix ms, found {}",
                shown(raw)
            )
        })?
    };
    rules::check_timestamp(ms, context)
}

/// An event's attributes in body order, as [`Event::attributes`] holds them.
type Attributes<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

fn attributes<'a>(raw: Option<&'a RawValue>) -> Result<Attributes<'a>, String> {
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
    rules::check_attribute_count(pairs.len())?;
    let mut out = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        let key = key.0;
        rules::check_attribute_key(&key)?;
        let value = json_string(value).ok_or_else(|| {
            format!(
                "attributes: value of {key:?} must be a string, found {}",
                shown(value)
            )
        })?;
        rules::check_attribute_value(&key, &value)?;
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

/// Event ids for events sent without one: UUIDv7 with a monotonic random tail.
///
/// `Uuid::now_v7()` costs a `getrandom` system call, too much to pay per event at a
/// million events a second, so it is called once per body and later ids count up in
/// its low 32 bits (RFC 9562 §6.2, method 2). The low bits wrap rather than carry, so
/// up to 2^32 ids per body are distinct and never reach into the bits that uuid's shared
/// context uses to keep separate calls (other bodies) apart.
#[derive(Debug, Default)]
pub(super) struct GeneratedIds {
    last: Option<u128>,
}

impl GeneratedIds {
    const TAIL: u128 = 0xFFFF_FFFF;

    pub(super) fn next(&mut self) -> u128 {
        let id = match self.last {
            None => uuid::Uuid::now_v7().as_u128(),
            Some(last) => (last & !Self::TAIL) | (last.wrapping_add(1) & Self::TAIL),
        };
        self.last = Some(id);
        id
    }
}

pub(super) fn check_event_size(
    bytes: usize,
    context: &ValidationContext<'_>,
) -> Result<(), String> {
    let limit = event_bytes(context);
    if bytes > limit {
        return Err(format!("event: larger than {limit} bytes ({bytes} bytes)"));
    }
    Ok(())
}

/// The largest event accepted: [`limits::EVENT_BYTES`], and with payload capture on,
/// room for an `input` and an `output` of [`PAYLOAD_READ_FACTOR`] times the cap each
/// (JSON escapes, and texts longer than the cap, which are cut rather than refused).
pub fn event_bytes(context: &ValidationContext<'_>) -> usize {
    let payloads = context
        .payload_max_bytes
        .map_or(0, |cap| cap.saturating_mul(2 * PAYLOAD_READ_FACTOR));
    limits::EVENT_BYTES.saturating_add(payloads)
}

/// How much longer than the cap an `input` or `output` may be as sent.
pub const PAYLOAD_READ_FACTOR: usize = 4;

/// What marks a payload cut to the cap.
pub const TRUNCATED_MARKER: &str = "…[truncated]";

/// An event's `input` or `output`: a string as it is, or an array or object (the
/// messages as sent) as its JSON text; cut at the cap with [`TRUNCATED_MARKER`]. Absent
/// when payload capture is off: the field is dropped here, before anything keeps it.
fn payload<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
    context: &ValidationContext<'_>,
) -> Result<Option<Cow<'a, str>>, String> {
    let Some(cap) = context.payload_max_bytes else {
        return Ok(None);
    };
    let Some(value) = present(raw) else {
        return Ok(None);
    };
    let text = match value.get().as_bytes().first() {
        Some(b'"') => json_string(value).ok_or_else(|| format!("{field}: not a valid string"))?,
        Some(b'[' | b'{') => Cow::Borrowed(value.get()),
        _ => {
            return Err(format!(
                "{field}: expected a string or the messages as a JSON array or object, found {}",
                json_kind(value.get())
            ))
        }
    };
    Ok(Some(cap_payload(text, cap)))
}

/// A payload within `cap` bytes: as it is, or cut at a character boundary and ended
/// with [`TRUNCATED_MARKER`] (the whole within the cap).
pub(crate) fn cap_payload(text: Cow<'_, str>, cap: usize) -> Cow<'_, str> {
    if text.len() <= cap {
        return text;
    }
    let mut end = cap.saturating_sub(TRUNCATED_MARKER.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{TRUNCATED_MARKER}", &text[..end]))
}

/// Applies the v1 rules (DESIGN.md, "The event") to the fields of one event.
pub(super) fn validate<'a>(
    fields: RawFields<'a>,
    context: &ValidationContext<'_>,
    ids: &mut GeneratedIds,
) -> Result<Event<'a>, String> {
    let model = string(
        required(fields.model, "model")?,
        "model",
        limits::MODEL_BYTES,
    )?;
    rules::check_model(&model)?;
    let event_id = match optional_string(fields.event_id, "event_id", limits::EVENT_ID_BYTES)? {
        Some(id) => {
            rules::check_event_id(&id)?;
            EventId::Client(id)
        }
        None => EventId::Generated(ids.next()),
    };
    let timestamp_ms = timestamp(required(fields.timestamp, "timestamp")?, context)?;
    let latency_ms = non_negative_number(required(fields.latency_ms, "latency_ms")?, "latency_ms")?;
    let ttft_ms = present(fields.ttft_ms)
        .map(|value| non_negative_number(value, "ttft_ms"))
        .transpose()?;
    let status = match present(fields.status) {
        None => Status::Ok,
        Some(value) => match json_string(value).as_deref().and_then(Status::parse) {
            Some(status) => status,
            None => {
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
            rules::check_cost_usd(usd)?;
            Ok::<f64, String>(usd)
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
        reasoning_output_tokens: count(fields.reasoning_output_tokens, "reasoning_output_tokens")?,
        cache_read_input_tokens: count(fields.cache_read_input_tokens, "cache_read_input_tokens")?,
        cache_creation_input_tokens: count(
            fields.cache_creation_input_tokens,
            "cache_creation_input_tokens",
        )?,
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
        // Never from the sender: ingest stamps the request's key.
        key: None,
        reservation_id: optional_string(
            fields.reservation_id,
            "reservation_id",
            limits::EVENT_ID_BYTES,
        )?,
        input: payload(fields.input, "input", context)?,
        output: payload(fields.output, "output", context)?,
    };
    if event.cost_micros.is_none() {
        event.cost_micros = context.prices.cost_micros(&event);
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::decode::test_support::{context, leaked, one, NOW};
    use crate::decode::{decode_events, BodyFormat};
    use crate::price::PriceTable;

    #[test]
    fn a_full_event_decodes_with_borrowed_strings() {
        let json = format!(
            r#"{{"event_id":"e1","timestamp":{NOW},"model":"gpt-4o","response_model":"gpt-4o-2024-08-06",
            "provider":"openai","operation":"chat","latency_ms":812.5,"ttft_ms":140,"input_tokens":1000,
            "output_tokens":100,"reasoning_output_tokens":60,"cache_read_input_tokens":400,
            "cache_creation_input_tokens":200,"status":"error","error_type":"timeout",
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
        assert_eq!(event.reasoning_output_tokens, Some(60));
        assert_eq!(event.cache_creation_input_tokens, Some(200));
        // No cost sent: priced from the table. gpt-4o has no cache-write price, so the
        // 200 written tokens are plain input: (600 × 2.5 + 400 × 1.25 + 100 × 10) µ$/M;
        // the 60 reasoning tokens are inside the 100 output tokens.
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
                r#"{"model":"m","latency_ms":1}"#.to_string(),
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
                format!(
                    r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"reasoning_output_tokens":-1}}"#
                ),
                "reasoning_output_tokens: expected an integer >= 0",
            ),
            (
                format!(
                    r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"cache_creation_input_tokens":1.5}}"#
                ),
                "cache_creation_input_tokens: expected an integer >= 0",
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
                r#"{"timestamp":"yesterday","model":"m","latency_ms":1}"#.to_string(),
                "timestamp: expected RFC 3339",
            ),
            (
                r#"{"timestamp":1.5,"model":"m","latency_ms":1}"#.to_string(),
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
    fn strings_borrow_unless_escaped_and_escapes_decode() {
        let json = format!(
            r#"{{"timestamp":{NOW},"model":"plain","latency_ms":1,"provider":"a\"","operation":"\u0063hat","user_id":"tab\tx","status":"\u006fk","attributes":{{"k\n":"v\\"}}}}"#
        );
        let event = one(&json).expect("valid");
        assert!(matches!(event.model, Cow::Borrowed("plain")));
        assert!(matches!(event.provider, Some(Cow::Owned(ref p)) if p == "a\""));
        assert!(matches!(event.operation, Some(Cow::Owned(ref o)) if o == "chat"));
        assert!(matches!(event.user_id, Some(Cow::Owned(ref u)) if u == "tab\tx"));
        assert_eq!(event.status, Status::Ok, "escaped \"ok\" is still ok");
        assert_eq!(
            event.attributes,
            vec![(
                Cow::<str>::Owned("k\n".to_string()),
                Cow::<str>::Owned("v\\".to_string())
            )]
        );
        // Length limits count decoded bytes: 64 escaped `é`s are 128 bytes of model text.
        let escaped = "\\u00e9".repeat(64);
        let event = one(leaked(format!(
            r#"{{"timestamp":{NOW},"model":"{escaped}","latency_ms":1}}"#
        )))
        .expect("128 bytes fit");
        assert_eq!(event.model.len(), 128);
        let error = one(leaked(format!(
            r#"{{"timestamp":{NOW},"model":"{escaped}x","latency_ms":1}}"#
        )))
        .expect_err("129 bytes");
        assert_eq!(error, "model: longer than 128 bytes (129 bytes)");
    }

    #[test]
    fn numbers_follow_json_not_rust_parsing() {
        let with = |field: &str, value: &str| {
            one(leaked(format!(
                r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"{field}":{value}}}"#
            )))
        };
        assert_eq!(
            with("input_tokens", "18446744073709551615")
                .expect("u64::MAX")
                .input_tokens,
            Some(u64::MAX)
        );
        for (field, value, expected) in [
            (
                "input_tokens",
                "-0",
                "input_tokens: expected an integer >= 0, found -0",
            ),
            (
                "input_tokens",
                "1e3",
                "input_tokens: expected an integer >= 0, found 1e3",
            ),
            (
                "input_tokens",
                "18446744073709551616",
                "input_tokens: expected an integer >= 0, found 18446744073709551616",
            ),
            (
                "ttft_ms",
                "1e400",
                "ttft_ms: expected a number >= 0, found 1e400",
            ),
            (
                "ttft_ms",
                "\"inf\"",
                "ttft_ms: expected a number >= 0, found \"inf\"",
            ),
            (
                "ttft_ms",
                "-0.5",
                "ttft_ms: expected a number >= 0, found -0.5",
            ),
            (
                "latency_ms",
                "\"abc\"",
                "latency_ms: expected a number >= 0, found \"abc\"",
            ),
            (
                "cost_usd",
                "\"1\"",
                "cost_usd: expected a number >= 0, found \"1\"",
            ),
        ] {
            assert_eq!(with(field, value).err().as_deref(), Some(expected));
        }
        assert_eq!(
            with("ttft_ms", "2.5e2").expect("exponent").ttft_ms,
            Some(250.0)
        );
        assert_eq!(
            with("ttft_ms", "-0").expect("-0 is zero").ttft_ms,
            Some(-0.0)
        );
        // A sent cost wins over the price table, even for a priced model.
        let event = one(leaked(format!(
            r#"{{"timestamp":{NOW},"model":"gpt-4o","latency_ms":1,"input_tokens":1000000,"cost_usd":0.123456789}}"#
        )))
        .expect("valid");
        assert_eq!(event.cost_micros, Some(123_457));
        let event = one(leaked(format!(
            r#"{{"timestamp":{NOW},"model":"gpt-4o","latency_ms":1,"input_tokens":1000000,"cost_usd":null}}"#
        )))
        .expect("valid");
        assert_eq!(event.cost_micros, Some(2_500_000), "null cost is priced");
        let event = one(leaked(format!(
            r#"{{"timestamp":{NOW},"model":"mine","latency_ms":1}}"#
        )))
        .expect("valid");
        assert_eq!(event.cost_micros, None, "unpriced model, no cost");
        assert_eq!(
            with("cost_usd", "1000000000").expect("the cap").cost_micros,
            Some(1_000_000_000_000_000)
        );
    }

    #[test]
    fn timestamp_edges_are_inclusive() {
        let at = |ms: i64| {
            one(leaked(format!(
                r#"{{"timestamp":{ms},"model":"m","latency_ms":1}}"#
            )))
        };
        assert_eq!(at(NOW + 300_000).map(|e| e.timestamp_ms), Ok(NOW + 300_000));
        assert!(at(NOW + 300_001).is_err());
        let oldest = NOW - 7 * 24 * 3_600_000;
        assert_eq!(at(oldest).map(|e| e.timestamp_ms), Ok(oldest));
        assert!(at(oldest - 1).is_err());
        let event =
            one(r#"{"timestamp":"2026-11-22T10:27:00.250+01:00","model":"m","latency_ms":1}"#)
                .expect("offset");
        assert_eq!(event.timestamp_ms, NOW + 250);
        let error = one(r#"{"timestamp":9223372036854775808,"model":"m","latency_ms":1}"#)
            .expect_err("beyond i64");
        assert!(error.starts_with("timestamp: expected RFC 3339"), "{error}");
    }

    #[test]
    fn generated_ids_are_distinct_version_7_uuids() {
        let prices = PriceTable::with_defaults();
        let body = format!(
            "[{}]",
            vec![format!(r#"{{"timestamp":{NOW},"model":"m","latency_ms":1}}"#); 10].join(",")
        );
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            let decoded = decode_events(body.as_bytes(), BodyFormat::Json, &context(&prices))
                .expect("readable");
            assert_eq!(decoded.events.len(), 10);
            for event in &decoded.events {
                let EventId::Generated(id) = event.event_id else {
                    panic!("generated id expected: {:?}", event.event_id);
                };
                let uuid = uuid::Uuid::from_u128(id);
                assert_eq!(uuid.get_version_num(), 7);
                assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
                assert!(seen.insert(id), "duplicate id {uuid}");
            }
        }
        let mut ids = GeneratedIds {
            last: Some((0x0123_u128 << 64) | 0xFFFF_FFFF),
        };
        assert_eq!(
            ids.next(),
            0x0123_u128 << 64,
            "the tail wraps without carrying into the bits above"
        );
    }

    proptest! {
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
