//! OTLP trace exports into validated v1 events, with no I/O.
//!
//! OpenTelemetry SDKs send `ExportTraceServiceRequest`s: protobuf over OTLP/HTTP and
//! OTLP/gRPC, or OTLP/JSON over HTTP. This module owns everything between those bytes
//! and [`Event`](crate::Event)s:
//! - [`decode_request`]: bytes → request. [`scan`] first counts spans and nested values
//!   in the encoded bytes, so a small body cannot decode into a huge tree; then the
//!   message types of `opentelemetry-proto` (pre-generated, prost and serde) decode it.
//! - [`map`]: spans carrying GenAI semantic-convention attributes → events, through the
//!   same rules as JSON bodies (`decode::rules`), so limits and messages are identical.
//!   Spans without `gen_ai.*` attributes are counted and skipped.
//! - [`encode_response`], [`RpcStatus`]: the answers the OTLP specification prescribes.
//!
//! The mapping table is in the README ("OpenTelemetry (OTLP)").

pub mod map;
pub mod scan;

use prost::Message;

pub use map::{map_request, Mapped, SpanRejection};
/// The OTLP message types, for producers of requests (tests, the load generator).
pub use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
pub use opentelemetry_proto::tonic::trace::v1 as trace;
pub use opentelemetry_proto::tonic::{common::v1 as common, resource::v1 as resource};

/// Nested values (resources, scopes, attributes, span events, links, array and map
/// values) in one request, spans not included. A decoded value costs up to ~100 bytes
/// of memory however few bytes encode it (an empty attribute is 2 bytes of protobuf),
/// so this bounds one request's decoded tree to ~100 MiB; a batch of 10,000 spans with
/// 50 attributes each needs about half of it.
pub const MAX_ELEMENTS: usize = 1 << 20;

/// Deepest nesting of messages or JSON containers. OTLP needs 6 levels plus the depth
/// of nested array or map attribute values, which real instrumentations keep shallow;
/// prost's own limit is 100.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpEncoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON: hex ids, camelCase names).
    Json,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OtlpDecodeError {
    #[error("body is not a valid OTLP protobuf ExportTraceServiceRequest: {0}")]
    Protobuf(String),
    #[error("body is not a valid OTLP/JSON ExportTraceServiceRequest at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("request holds more than {limit} spans; export smaller batches (the batch span processor's max_export_batch_size)")]
    TooManySpans { limit: usize },
    #[error("request holds more than {limit} attributes, span events, links and values; export smaller batches")]
    TooManyElements { limit: usize },
    #[error("request nests values deeper than {limit} levels")]
    TooDeep { limit: usize },
}

/// Decodes a (decompressed) export request of at most `max_spans` spans.
pub fn decode_request(
    body: &[u8],
    encoding: OtlpEncoding,
    max_spans: usize,
) -> Result<ExportTraceServiceRequest, OtlpDecodeError> {
    let counts = match encoding {
        OtlpEncoding::Protobuf => scan::protobuf(body)?,
        OtlpEncoding::Json => scan::json(body)?,
    };
    if counts.spans > max_spans {
        return Err(OtlpDecodeError::TooManySpans { limit: max_spans });
    }
    if counts.elements > MAX_ELEMENTS {
        return Err(OtlpDecodeError::TooManyElements {
            limit: MAX_ELEMENTS,
        });
    }
    let request = match encoding {
        OtlpEncoding::Protobuf => ExportTraceServiceRequest::decode(body)
            .map_err(|error| OtlpDecodeError::Protobuf(error.to_string()))?,
        OtlpEncoding::Json => {
            // JSON text is UTF-8 (RFC 8259), ignored fields included.
            let text = std::str::from_utf8(body).map_err(|error| {
                let (line, column) = position(&body[..error.valid_up_to()]);
                OtlpDecodeError::Json {
                    line,
                    column,
                    message: "invalid UTF-8".to_string(),
                }
            })?;
            serde_json::from_str(text).map_err(|error| OtlpDecodeError::Json {
                line: error.line(),
                column: error.column(),
                message: crate::decode::strip_position(&error.to_string()),
            })?
        }
    };
    // The scan's count is a bound for the allocation; this one is exact (an escaped
    // JSON key can hide a span array from the scan, never add one).
    if span_count(&request) > max_spans {
        return Err(OtlpDecodeError::TooManySpans { limit: max_spans });
    }
    Ok(request)
}

/// Line and column (both from 1) just after `before`.
fn position(before: &[u8]) -> (usize, usize) {
    let line = 1 + before.iter().filter(|byte| **byte == b'\n').count();
    let column = 1 + before
        .iter()
        .rev()
        .take_while(|byte| **byte != b'\n')
        .count();
    (line, column)
}

pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len())
        .sum()
}

/// The export response: `partial_success` set only when some spans were not accepted.
pub fn response(partial_success: Option<ExportTracePartialSuccess>) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse { partial_success }
}

/// Encodes a response in the request's encoding, as OTLP/HTTP requires.
pub fn encode_response(response: &ExportTraceServiceResponse, encoding: OtlpEncoding) -> Vec<u8> {
    match encoding {
        OtlpEncoding::Protobuf => response.encode_to_vec(),
        OtlpEncoding::Json => {
            let body = match &response.partial_success {
                None => serde_json::json!({}),
                // int64 as a JSON string, per the protobuf JSON mapping OTLP/JSON uses.
                Some(partial) => serde_json::json!({"partialSuccess": {
                    "rejectedSpans": partial.rejected_spans.to_string(),
                    "errorMessage": partial.error_message,
                }}),
            };
            body.to_string().into_bytes()
        }
    }
}

/// `google.rpc.Status`, the body of a failed OTLP/HTTP request (details omitted).
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// A gRPC status code (`google.rpc.Code`).
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Encodes a failure body in the request's encoding. The JSON form also carries the
/// `error` key every other error body of the API has.
pub fn encode_status(code: i32, message: &str, encoding: OtlpEncoding) -> Vec<u8> {
    match encoding {
        OtlpEncoding::Protobuf => RpcStatus {
            code,
            message: message.to_string(),
        }
        .encode_to_vec(),
        OtlpEncoding::Json => {
            serde_json::json!({"code": code, "message": message, "error": message})
                .to_string()
                .into_bytes()
        }
    }
}

#[cfg(test)]
mod tests;
