//! Request bodies into validated events.
//!
//! A body is decompressed within a byte limit (a decompression bomb hits the limit, not
//! memory), then split into events: a JSON object, a JSON array of objects, or NDJSON
//! (one object per line). A body that cannot be read as a whole is a [`DecodeError`]; an
//! event that is readable but invalid is a [`Rejection`] naming its index and field, and
//! the rest of the body still goes through.
//!
//! This module splits a body into events (array elements or NDJSON lines);
//! `decompress` inflates `Content-Encoding` bodies and `fields` validates one event;
//! `logged` holds a record read back from the log to the rules that do not depend on
//! the clock, before the stream processes it.
//! Parsing borrows from the body throughout: serde_json walks an array once, reading
//! each element's known fields as raw values as it reaches them, then each field into
//! its type, so plain strings are never copied. For the event size limit, an array
//! element measures as written without whitespace between tokens, an NDJSON line as
//! the line.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::price::PriceTable;
use crate::Event;

mod decompress;
mod fields;
mod logged;
pub(crate) mod rules;

pub use decompress::decompress_into;
pub(crate) use fields::cap_payload;
use fields::{
    check_event_size, decode_element, json_kind, validate, ElementSeed, GeneratedIds, RawFields,
};
pub use fields::{event_bytes, PAYLOAD_READ_FACTOR, TRUNCATED_MARKER};
pub use logged::{validate_logged, END_STORED_TIMESTAMP_MS, MIN_STORED_TIMESTAMP_MS};

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
    /// With payload capture on (`[payloads]`), the cap of an event's `input` and
    /// `output` in bytes; `None`: capture is off and both fields are dropped.
    pub payload_max_bytes: Option<usize>,
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
pub(crate) fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// Parses a whole JSON text. UTF-8 is checked once up front, so serde_json can read it
/// as `str` and skip checking every string again; invalid UTF-8 goes to the byte reader,
/// which says where it is.
fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, serde_json::Error> {
    parse_json_with(bytes, PhantomData)
}

fn parse_json_with<'a, S: DeserializeSeed<'a>>(
    bytes: &'a [u8],
    seed: S,
) -> Result<S::Value, serde_json::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            let value = seed.deserialize(&mut deserializer)?;
            deserializer.end()?;
            Ok(value)
        }
        Err(_) => {
            let mut deserializer = serde_json::Deserializer::from_slice(bytes);
            let value = seed.deserialize(&mut deserializer)?;
            deserializer.end()?;
            Ok(value)
        }
    }
}

/// The events of a JSON array, each decoded as the parser reaches it, stopping at the
/// first element past `max`, so an oversized array costs neither the parse of its tail
/// nor the events of all its elements (a 16 MiB body of `[1,1,…]` would be 8 million).
struct EventArray<'s, 'c, 'a> {
    max: usize,
    /// Set when the array was cut short, to tell that error from a syntax error.
    too_many: &'s Cell<bool>,
    context: &'s ValidationContext<'c>,
    decoded: &'s mut Decoded<'a>,
}

impl<'a> DeserializeSeed<'a> for EventArray<'_, '_, 'a> {
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'a> Visitor<'a> for EventArray<'_, '_, 'a> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut ids = GeneratedIds::default();
        let mut index = 0;
        while let Some(element) = seq.next_element_seed(ElementSeed)? {
            if index == self.max {
                self.too_many.set(true);
                return Err(serde::de::Error::custom("too many events"));
            }
            self.decoded
                .push(index, decode_element(element, self.context, &mut ids));
            index += 1;
        }
        Ok(())
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
            let too_many = Cell::new(false);
            let seed = EventArray {
                max: context.max_events,
                too_many: &too_many,
                context,
                decoded: &mut decoded,
            };
            parse_json_with(body, seed).map_err(|error| {
                if too_many.get() {
                    DecodeError::TooManyEvents {
                        limit: context.max_events,
                    }
                } else {
                    syntax_error(&error)
                }
            })?;
        }
        Some(b'{') => {
            let element =
                parse_json_with(body, ElementSeed).map_err(|error| syntax_error(&error))?;
            decoded.push(
                0,
                decode_element(element, context, &mut GeneratedIds::default()),
            );
        }
        None => {
            return Err(DecodeError::Syntax {
                line: 1,
                column: 0,
                message: "the body is empty; send an event object or an array of them".to_string(),
            })
        }
        Some(_) => {
            // Still a syntax error when it is not JSON at all; otherwise name the kind.
            let value: &RawValue = parse_json(body).map_err(|error| syntax_error(&error))?;
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
    let mut ids = GeneratedIds::default();
    for (index, line) in body.split(|byte| *byte == b'\n').enumerate() {
        if is_blank(line) {
            continue;
        }
        decoded.push(index, decode_ndjson_line(line, context, &mut ids));
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

/// Validates one NDJSON line. An object line is read straight into its fields, without
/// first being split out as a raw value: the line already bounds the event, so this
/// saves a parser pass on the common case.
fn decode_ndjson_line<'a>(
    line: &'a [u8],
    context: &ValidationContext<'_>,
    ids: &mut GeneratedIds,
) -> Result<Event<'a>, String> {
    let not_json = |error: serde_json::Error| {
        format!(
            "line is not valid JSON at column {}: {}",
            error.column(),
            strip_position(&error.to_string())
        )
    };
    let trimmed = line.trim_ascii();
    if trimmed.first() != Some(&b'{') {
        let element = parse_json_with(line, ElementSeed).map_err(not_json)?;
        return decode_element(element, context, ids);
    }
    check_event_size(trimmed.len(), context)?;
    let fields: RawFields<'a> = parse_json(line).map_err(not_json)?;
    validate(fields, context, ids)
}

/// Helpers shared by the tests of this module and its submodules.
#[cfg(test)]
mod test_support {
    use super::*;

    pub(super) const NOW: i64 = 1_795_339_620_000;

    pub(super) fn context(prices: &PriceTable) -> ValidationContext<'_> {
        ValidationContext {
            now_ms: NOW,
            max_age_ms: 7 * 24 * 3_600_000,
            max_future_ms: 300_000,
            max_events: 10,
            prices,
            payload_max_bytes: None,
        }
    }

    /// Decodes a body of one event: the event, or its rejection message.
    pub(super) fn one(json: &str) -> Result<Event<'_>, String> {
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

    /// Lets a test build a body with `format!` and keep events that borrow from it.
    pub(super) fn leaked(json: String) -> &'static str {
        Box::leak(json.into_boxed_str())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::test_support::{context, NOW};
    use super::*;
    use crate::event::limits;

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
    fn array_elements_of_every_kind_are_named_and_sized_without_whitespace() {
        let prices = PriceTable::with_defaults();
        let event = format!(r#"{{"timestamp":{NOW},"model":"a","latency_ms":1}}"#);
        // Padding between tokens does not count; a field value does.
        let limit = limits::EVENT_BYTES;
        let padded = event.replacen(',', &format!(",{}", " ".repeat(limit)), 1);
        let long = event.replacen(
            "\"a\"",
            &format!("\"a\",\"region\":\"{}\"", "r".repeat(limit)),
            1,
        );
        let body = format!(
            r#"[[1, {{"a": [2]}}], "text", true, null, -1.5e3, {padded}, {long}, {event}]"#
        );
        let decoded =
            decode_events(body.as_bytes(), BodyFormat::Json, &context(&prices)).expect("readable");
        assert_eq!(decoded.indexes, vec![5, 7]);
        let rejected: Vec<(usize, &str)> = decoded
            .rejected
            .iter()
            .map(|r| (r.index, r.error.as_str()))
            .collect();
        let compact = long.len();
        let too_long = format!("event: larger than {limit} bytes ({compact} bytes)");
        assert_eq!(
            rejected,
            vec![
                (0, "event: expected an object, found an array"),
                (1, "event: expected an object, found a string"),
                (2, "event: expected an object, found a boolean"),
                (3, "event: expected an object, found null"),
                (4, "event: expected an object, found a number"),
                (6, too_long.as_str()),
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
        let eleven = format!("[{}]", ["{}"; 11].join(","));
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
        let eleven = "{}\n".repeat(11);
        assert_eq!(
            decode_events(eleven.as_bytes(), BodyFormat::Ndjson, &context(&prices)).err(),
            Some(DecodeError::TooManyEvents { limit: 10 })
        );
    }

    #[test]
    fn oversized_arrays_stop_at_the_limit() {
        let prices = PriceTable::with_defaults();
        // The tail is not even valid JSON: reading stops at element 11.
        let body = format!("[{} this is never parsed", ["1"; 11].join(","));
        assert_eq!(
            decode_events(body.as_bytes(), BodyFormat::Json, &context(&prices)).err(),
            Some(DecodeError::TooManyEvents { limit: 10 })
        );
        let ten = format!("[{}]", ["{}"; 10].join(","));
        let decoded = decode_events(ten.as_bytes(), BodyFormat::Json, &context(&prices))
            .expect("ten is the limit");
        assert_eq!(decoded.rejected.len(), 10);
        assert_eq!(decoded.rejected[9].index, 9);
        // A blank-padded NDJSON body counts only its non-blank lines.
        let padded = format!("{}\n\n \n", ["{}"; 10].join("\n"));
        let decoded = decode_events(padded.as_bytes(), BodyFormat::Ndjson, &context(&prices))
            .expect("blank lines do not count");
        assert_eq!(decoded.rejected.len(), 10);
    }

    #[test]
    fn body_errors_locate_the_problem() {
        let prices = PriceTable::with_defaults();
        let error = decode_events(
            b"[{\"model\": \"m\"},\n {\"model\" \"m\"}]",
            BodyFormat::Json,
            &context(&prices),
        )
        .expect_err("missing colon");
        assert_eq!(
            error,
            DecodeError::Syntax {
                line: 2,
                column: 11,
                message: "expected `:`".to_string()
            }
        );
        assert_eq!(
            error.to_string(),
            "body is not valid JSON at line 2, column 11: expected `:`"
        );
        let error = decode_events(
            b"[{\"model\": \"m\xff\"}]",
            BodyFormat::Json,
            &context(&prices),
        )
        .expect_err("invalid UTF-8");
        assert!(
            matches!(error, DecodeError::Syntax { line: 1, .. }),
            "{error:?}"
        );
        let error = decode_events(b"{} {}", BodyFormat::Json, &context(&prices))
            .expect_err("trailing value");
        assert!(
            matches!(
                error,
                DecodeError::Syntax {
                    line: 1,
                    column: 4,
                    ..
                }
            ),
            "{error:?}"
        );
        for (body, found) in [
            (&b"12"[..], "a number"),
            (b" true", "a boolean"),
            (b"null", "null"),
        ] {
            assert_eq!(
                decode_events(body, BodyFormat::Json, &context(&prices)).err(),
                Some(DecodeError::NotObjectOrArray { found })
            );
        }
        assert!(matches!(
            decode_events(b"nope", BodyFormat::Json, &context(&prices)),
            Err(DecodeError::Syntax { .. })
        ));
    }

    #[test]
    fn ndjson_lines_fail_alone_with_their_reason() {
        let prices = PriceTable::with_defaults();
        let good = format!(r#"{{"timestamp":{NOW},"model":"m","latency_ms":1}}"#);
        let huge = format!(
            r#"{{"timestamp":{NOW},"model":"m","latency_ms":1,"x":"{}"}}"#,
            "x".repeat(limits::EVENT_BYTES)
        );
        let lines = [
            good.as_str(),
            "5",
            "[1]",
            "{\"model\": \"INVALID_UTF8\"}",
            huge.as_str(),
            "{\"a\":1} {\"b\":2}",
            "   ",
            good.as_str(),
            "{\"timestamp\":1,\"model\":\"m\",\"latency_ms\":1}",
        ];
        let mut body = Vec::new();
        for line in lines {
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
        }
        // A &str cannot hold invalid UTF-8: put a raw 0xFF byte where the marker is.
        let marker = b"INVALID_UTF8";
        let at = body
            .windows(marker.len())
            .position(|window| window == marker)
            .expect("marker");
        body.splice(at..at + marker.len(), [0xFF]);
        let decoded =
            decode_events(&body, BodyFormat::Ndjson, &context(&prices)).expect("readable");
        assert_eq!(decoded.indexes, vec![0, 7]);
        let rejected: Vec<(usize, String)> = decoded
            .rejected
            .into_iter()
            .map(|r| (r.index, r.error))
            .collect();
        let starts = [
            (1, "event: expected an object, found a number"),
            (2, "event: expected an object, found an array"),
            (3, "line is not valid JSON at column"),
            (4, "event: larger than 32768 bytes"),
            (5, "line is not valid JSON at column 9: trailing characters"),
            (
                8,
                "timestamp: 1970-01-01T00:00:00.001Z is older than the retention",
            ),
        ];
        assert_eq!(rejected.len(), starts.len(), "{rejected:?}");
        for ((index, error), (want_index, want)) in rejected.iter().zip(starts) {
            assert_eq!(*index, want_index, "{error}");
            assert!(
                error.starts_with(want),
                "line {index}: {error}\n want: {want}"
            );
        }
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
    }
}
