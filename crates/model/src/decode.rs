//! Request bodies into validated events.
//!
//! A body is decompressed within a byte limit (a decompression bomb hits the limit, not
//! memory), then split into events: a JSON object, a JSON array of objects, or NDJSON
//! (one object per line). A body that cannot be read as a whole is a [`DecodeError`]; an
//! event that is readable but invalid is a [`Rejection`] naming its index and field, and
//! the rest of the body still goes through.

use crate::price::PriceTable;
use crate::Event;

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
    let _ = (body, encoding, limit, out);
    unimplemented!("decode::decompress_into")
}

/// Splits and validates the events of a (decompressed) body.
pub fn decode_events<'a>(
    body: &'a [u8],
    format: BodyFormat,
    context: &ValidationContext<'_>,
) -> Result<Decoded<'a>, DecodeError> {
    let _ = (body, format, context);
    unimplemented!("decode::decode_events")
}
