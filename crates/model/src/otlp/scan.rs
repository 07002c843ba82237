//! Counting spans and nested values in an encoded request before decoding it.
//!
//! A decoded value costs far more memory than its encoding (an empty span is 2 bytes of
//! protobuf or 3 of JSON, and ~300 bytes decoded), so the decoders run only once these
//! counts are within the limits. The walk allocates nothing beyond a bounded stack,
//! reads every byte once, and knows only the shape of the messages that nest.

use super::{OtlpDecodeError, MAX_DEPTH};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub spans: usize,
    /// Every other nested message or JSON object.
    pub elements: usize,
}

/// The messages of `ExportTraceServiceRequest` that hold other messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    ResourceSpans,
    Resource,
    ScopeSpans,
    Scope,
    Span,
    SpanEvent,
    Link,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    /// A message whose fields hold no messages we count (e.g. `Status`).
    Leaf,
}

impl Kind {
    /// The kind of a length-delimited field `tag` inside `self`, when it is a message.
    fn child(self, tag: u32) -> Option<Kind> {
        use Kind::*;
        Some(match (self, tag) {
            (Request, 1) => ResourceSpans,
            (ResourceSpans, 1) => Resource,
            (ResourceSpans, 2) => ScopeSpans,
            (Resource, 1) => KeyValue,
            (Resource, 3) => Leaf,
            (ScopeSpans, 1) => Scope,
            (ScopeSpans, 2) => Span,
            (Scope, 3) => KeyValue,
            (Span, 9) | (SpanEvent, 3) | (Link, 4) | (KeyValueList, 1) => KeyValue,
            (Span, 11) => SpanEvent,
            (Span, 13) => Link,
            (Span, 15) => Leaf,
            (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KeyValueList,
            _ => return None,
        })
    }
}

fn malformed(message: &str) -> OtlpDecodeError {
    OtlpDecodeError::Protobuf(message.to_string())
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, OtlpDecodeError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*at)
            .ok_or_else(|| malformed("truncated varint"))?;
        *at += 1;
        value |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(malformed("varint longer than 10 bytes"))
}

/// Counts the spans and nested messages of a protobuf `ExportTraceServiceRequest`.
pub fn protobuf(body: &[u8]) -> Result<Counts, OtlpDecodeError> {
    let mut counts = Counts::default();
    walk(body, Kind::Request, 0, &mut counts)?;
    Ok(counts)
}

fn walk(
    bytes: &[u8],
    kind: Kind,
    depth: usize,
    counts: &mut Counts,
) -> Result<(), OtlpDecodeError> {
    if depth > MAX_DEPTH {
        return Err(OtlpDecodeError::TooDeep { limit: MAX_DEPTH });
    }
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        let tag = u32::try_from(key >> 3).map_err(|_| malformed("field number out of range"))?;
        if tag == 0 {
            return Err(malformed("field number 0"));
        }
        match key & 7 {
            0 => {
                varint(bytes, &mut at)?;
            }
            1 => at = skip(bytes, at, 8)?,
            5 => at = skip(bytes, at, 4)?,
            2 => {
                let length = usize::try_from(varint(bytes, &mut at)?)
                    .map_err(|_| malformed("length out of range"))?;
                let end = skip(bytes, at, length)?;
                if let Some(child) = kind.child(tag) {
                    if child == Kind::Span {
                        counts.spans += 1;
                    } else {
                        counts.elements += 1;
                    }
                    walk(&bytes[at..end], child, depth + 1, counts)?;
                }
                at = end;
            }
            // Groups (3, 4) are not used by OTLP; 6 and 7 do not exist.
            other => return Err(malformed(&format!("unsupported wire type {other}"))),
        }
    }
    Ok(())
}

fn skip(bytes: &[u8], at: usize, length: usize) -> Result<usize, OtlpDecodeError> {
    match at.checked_add(length) {
        Some(end) if end <= bytes.len() => Ok(end),
        _ => Err(malformed("truncated field")),
    }
}

/// Counts the objects of an OTLP/JSON request: objects directly inside a `"spans"`
/// array are spans, every other object is an element. Syntax is left to the parser;
/// the scan only needs to know whether a byte is inside a string.
pub fn json(body: &[u8]) -> Result<Counts, OtlpDecodeError> {
    // Per open container: is it an array, and is it the value of a "spans" key.
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let mut counts = Counts::default();
    let mut in_string = false;
    let mut escaped = false;
    let mut string_start = 0;
    let mut last_string: &[u8] = &[];
    let mut last_string_escaped = false;
    let mut value_of_spans = false;
    for (at, &byte) in body.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
                last_string_escaped = true;
            } else if byte == b'"' {
                in_string = false;
                last_string = &body[string_start..at];
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                string_start = at + 1;
                last_string_escaped = false;
            }
            // A key with escapes might spell "spans": count its objects as spans.
            b':' => value_of_spans = last_string == b"spans" || last_string_escaped,
            b'{' | b'[' => {
                if stack.len() >= MAX_DEPTH {
                    return Err(OtlpDecodeError::TooDeep { limit: MAX_DEPTH });
                }
                let parent = stack.last().copied();
                if byte == b'{' {
                    if parent == Some((true, true)) {
                        counts.spans += 1;
                    } else {
                        counts.elements += 1;
                    }
                }
                let in_object = matches!(parent, Some((false, _)));
                stack.push((byte == b'[', byte == b'[' && in_object && value_of_spans));
                value_of_spans = false;
            }
            b'}' | b']' => {
                stack.pop();
            }
            _ => {}
        }
    }
    Ok(counts)
}
