//! Structure-aware: arbitrary spans (GenAI attribute names with values of every type,
//! edge times and ids) encoded as a protobuf export, so the fuzzer explores the mapping
//! rather than the wire format. Every span is accepted, skipped or rejected with an
//! error that names a v1 field; accepted events are valid; the request decodes back
//! from its own encoding.
#![no_main]

mod common;

use ais_model::otlp::common::{any_value::Value, AnyValue, ArrayValue, KeyValue};
use ais_model::otlp::trace::{ResourceSpans, ScopeSpans, Span, Status};
use ais_model::otlp::{self, ExportTraceServiceRequest, OtlpEncoding};
use ais_model::price::PriceTable;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message;

#[derive(Debug, Arbitrary)]
enum Attr {
    Text(String),
    Repeated(char, u16),
    Int(i64),
    Double(f64),
    Bool(bool),
    Strings(Vec<String>),
    Bytes(Vec<u8>),
    Empty,
}

impl Attr {
    fn value(&self) -> Option<AnyValue> {
        let value = match self {
            Attr::Text(text) => Value::StringValue(text.clone()),
            Attr::Repeated(c, n) => {
                Value::StringValue(std::iter::repeat_n(*c, usize::from(*n)).collect())
            }
            Attr::Int(number) => Value::IntValue(*number),
            Attr::Double(number) => Value::DoubleValue(*number),
            Attr::Bool(flag) => Value::BoolValue(*flag),
            Attr::Strings(texts) => Value::ArrayValue(ArrayValue {
                values: texts
                    .iter()
                    .map(|text| AnyValue {
                        value: Some(Value::StringValue(text.clone())),
                    })
                    .collect(),
            }),
            Attr::Bytes(bytes) => Value::BytesValue(bytes.clone()),
            Attr::Empty => return None,
        };
        Some(AnyValue { value: Some(value) })
    }
}

const KEYS: &[&str] = &[
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "gen_ai.response.finish_reasons",
    "gen_ai.response.time_to_first_chunk",
    "gen_ai.conversation.id",
    "error.type",
    "server.address",
    "server.port",
    "user.id",
    "session.id",
    "cloud.region",
    "service.name",
    "http.method",
];

#[derive(Debug, Arbitrary)]
struct ArbitrarySpan {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    start_offset_ms: Option<i32>,
    start: u64,
    duration: u64,
    status_code: i32,
    attributes: Vec<(u8, Attr)>,
}

#[derive(Debug, Arbitrary)]
struct Export {
    resource: Vec<(u8, Attr)>,
    spans: Vec<ArbitrarySpan>,
}

fn key_values(attributes: &[(u8, Attr)]) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|(which, attr)| KeyValue {
            key: KEYS[usize::from(*which) % KEYS.len()].to_string(),
            value: attr.value(),
            ..Default::default()
        })
        .collect()
}

fuzz_target!(|export: Export| {
    let spans: Vec<Span> = export
        .spans
        .iter()
        .map(|span| {
            let start = match span.start_offset_ms {
                Some(offset) => (common::NOW + i64::from(offset)).max(0) as u64 * 1_000_000,
                None => span.start,
            };
            Span {
                trace_id: span.trace_id.clone(),
                span_id: span.span_id.clone(),
                start_time_unix_nano: start,
                end_time_unix_nano: start.wrapping_add(span.duration),
                attributes: key_values(&span.attributes),
                status: Some(Status {
                    code: span.status_code,
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(ais_model::otlp::resource::Resource {
                attributes: key_values(&export.resource),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let bytes = request.encode_to_vec();
    let decoded = match otlp::decode_request(&bytes, OtlpEncoding::Protobuf, 10_000) {
        Ok(decoded) => decoded,
        Err(
            otlp::OtlpDecodeError::TooManySpans { .. }
            | otlp::OtlpDecodeError::TooManyElements { .. },
        ) => return,
        Err(error) => panic!("own encoding must decode: {error}"),
    };
    // Bytes, not values: NaN attributes are not equal to themselves.
    assert_eq!(decoded.encode_to_vec(), bytes);
    let prices = PriceTable::with_defaults();
    let mapped = otlp::map_request(&decoded, &common::context(&prices));
    assert_eq!(mapped.spans, export.spans.len());
    assert_eq!(
        mapped.events.len() + mapped.skipped + mapped.rejected,
        mapped.spans
    );
    for event in &mapped.events {
        common::check_event(event);
    }
    const FIELDS: &[&str] = &[
        "model",
        "response_model",
        "provider",
        "operation",
        "timestamp",
        "latency_ms",
        "ttft_ms",
        "input_tokens",
        "output_tokens",
        "reasoning_output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "error_type",
        "user_id",
        "session_id",
        "trace_id",
        "span_id",
        "endpoint",
        "region",
        "event_id",
    ];
    for rejection in &mapped.rejections {
        assert!(
            FIELDS
                .iter()
                .any(|field| rejection.error.starts_with(&format!("{field}:"))),
            "rejection names no field: {}",
            rejection.error
        );
    }
    if mapped.partial_success().is_some() {
        assert!(mapped.skipped + mapped.rejected > 0);
    }
});
