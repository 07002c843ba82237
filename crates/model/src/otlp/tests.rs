//! The mapping table, the decoders' limits and their refusals.

use prost::Message;

use super::common::{any_value::Value, AnyValue, ArrayValue, KeyValue};
use super::resource::Resource;
use super::trace::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status as SpanStatus};
use super::*;
use crate::decode::{decode_events, BodyFormat, ValidationContext};
use crate::price::PriceTable;
use crate::{Event, EventId, Status};

const NOW: i64 = 1_795_339_620_000;
const NANOS: u64 = 1_000_000;

fn context(prices: &PriceTable) -> ValidationContext<'_> {
    ValidationContext {
        now_ms: NOW,
        max_age_ms: 7 * 24 * 3_600_000,
        max_future_ms: 300_000,
        max_events: 10,
        prices,
        payload_max_bytes: None,
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.to_string()))
}

fn int(key: &str, value: i64) -> KeyValue {
    kv(key, Value::IntValue(value))
}

fn span(n: u8, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![0xAB; 16],
        span_id: vec![0, 0, 0, 0, 0, 0, 0, n + 1],
        name: "chat gpt-4o".to_string(),
        start_time_unix_nano: NOW as u64 * NANOS,
        end_time_unix_nano: (NOW as u64 + 812) * NANOS + 500_000,
        attributes,
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn map_one(span: Span) -> Result<Event<'static>, String> {
    let request = Box::leak(Box::new(request(vec![], vec![span])));
    let prices = Box::leak(Box::new(PriceTable::with_defaults()));
    let mapped = map_request(request, &context(prices));
    match (mapped.events.into_iter().next(), mapped.rejections.first()) {
        (Some(event), None) => Ok(event),
        (None, Some(rejection)) => Err(rejection.error.clone()),
        _ => Err("skipped".to_string()),
    }
}

fn genai(model: &str) -> Vec<KeyValue> {
    vec![
        text("gen_ai.operation.name", "chat"),
        text("gen_ai.request.model", model),
    ]
}

#[test]
fn every_attribute_of_the_table_maps_to_its_field() {
    let attributes = vec![
        text("gen_ai.operation.name", "chat"),
        text("gen_ai.provider.name", "openai"),
        text("gen_ai.system", "ignored-when-provider-is-set"),
        text("gen_ai.request.model", "gpt-4o"),
        text("gen_ai.response.model", "gpt-4o-2024-08-06"),
        int("gen_ai.usage.input_tokens", 1000),
        int("gen_ai.usage.output_tokens", 100),
        int("gen_ai.usage.cache_read.input_tokens", 400),
        int("gen_ai.usage.cache_creation.input_tokens", 200),
        int("gen_ai.usage.reasoning.output_tokens", 60),
        kv(
            "gen_ai.response.finish_reasons",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Value::StringValue("stop".to_string())),
                    },
                    AnyValue {
                        value: Some(Value::StringValue("length".to_string())),
                    },
                ],
            }),
        ),
        kv(
            "gen_ai.response.time_to_first_chunk",
            Value::DoubleValue(0.14),
        ),
        text("error.type", "timeout"),
        text("server.address", "api.openai.com"),
        int("server.port", 443),
        text("user.id", "u-17"),
        text("gen_ai.conversation.id", "conv-1"),
        text("gen_ai.prompt.0.content", &"a long prompt ".repeat(10_000)),
    ];
    let resource = vec![
        text("telemetry.sdk.language", "python"),
        text("service.name", "search-api"),
        text("cloud.region", "eu-west-1"),
        kv(
            "process.command_args",
            Value::ArrayValue(ArrayValue::default()),
        ),
        text("k".repeat(65).as_str(), "key too long: dropped"),
        text("big", &"v".repeat(257)),
    ];
    let request = request(resource, vec![span(0, attributes)]);
    let prices = PriceTable::with_defaults();
    let mapped = map_request(&request, &context(&prices));
    assert_eq!((mapped.spans, mapped.skipped, mapped.rejected), (1, 0, 0));
    let event = &mapped.events[0];
    let trace = "ab".repeat(16);
    assert_eq!(event.model, "gpt-4o");
    assert_eq!(event.response_model.as_deref(), Some("gpt-4o-2024-08-06"));
    assert_eq!(event.provider.as_deref(), Some("openai"));
    assert_eq!(event.operation.as_deref(), Some("chat"));
    assert_eq!(event.timestamp_ms, NOW);
    assert_eq!(event.latency_ms, 812.5);
    assert_eq!(event.ttft_ms, Some(140.0));
    assert_eq!(event.input_tokens, Some(1000));
    assert_eq!(event.output_tokens, Some(100));
    assert_eq!(event.cache_read_input_tokens, Some(400));
    assert_eq!(event.cache_creation_input_tokens, Some(200));
    assert_eq!(event.reasoning_output_tokens, Some(60));
    assert_eq!(event.status, Status::Error, "error.type means an error");
    assert_eq!(event.error_type.as_deref(), Some("timeout"));
    assert_eq!(event.endpoint.as_deref(), Some("api.openai.com:443"));
    assert_eq!(event.user_id.as_deref(), Some("u-17"));
    assert_eq!(event.session_id.as_deref(), Some("conv-1"));
    assert_eq!(event.region.as_deref(), Some("eu-west-1"));
    assert_eq!(event.trace_id.as_deref(), Some(trace.as_str()));
    assert_eq!(event.span_id.as_deref(), Some("0000000000000001"));
    assert_eq!(
        event.event_id,
        EventId::Client(format!("{trace}0000000000000001").into())
    );
    // Priced like a JSON event: gpt-4o has no cache-write price, so the 200 written
    // tokens are plain input: (600 × 2.5 + 400 × 1.25 + 100 × 10) µ$ per M tokens.
    assert_eq!(event.cost_micros, Some(3_000));
    let attributes: Vec<(&str, &str)> = event
        .attributes
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    assert_eq!(
        attributes,
        vec![
            ("service.name", "search-api"),
            ("telemetry.sdk.language", "python"),
            ("cloud.region", "eu-west-1"),
            ("gen_ai.response.finish_reasons", "stop,length"),
        ]
    );
}

#[test]
fn deprecated_and_older_names_are_fallbacks() {
    let event = map_one(span(
        0,
        vec![
            text("gen_ai.system", "anthropic"),
            text("gen_ai.response.model", "claude-sonnet-4"),
            int("gen_ai.usage.prompt_tokens", 70),
            int("gen_ai.usage.completion_tokens", 30),
            int("gen_ai.usage.cache_read_input_tokens", 20),
            int("gen_ai.usage.cache_creation_input_tokens", 10),
            text("session.id", "s-1"),
            text("gen_ai.conversation.id", "loses-to-session.id"),
        ],
    ))
    .expect("valid");
    assert_eq!(event.provider.as_deref(), Some("anthropic"));
    assert_eq!(
        event.model, "claude-sonnet-4",
        "response model when no request model"
    );
    assert_eq!(event.response_model.as_deref(), Some("claude-sonnet-4"));
    assert_eq!(
        (
            event.input_tokens,
            event.output_tokens,
            event.cache_read_input_tokens
        ),
        (Some(70), Some(30), Some(20))
    );
    assert_eq!(event.cache_creation_input_tokens, Some(10));
    assert_eq!(event.session_id.as_deref(), Some("s-1"));
    // The report counts the spans that carry each deprecated name, used or not.
    let request = request_of(vec![
        span(
            0,
            [
                genai("m"),
                vec![
                    text("gen_ai.system", "openai"),
                    int("gen_ai.usage.prompt_tokens", 1),
                    int("gen_ai.usage.input_tokens", 1),
                ],
            ]
            .concat(),
        ),
        span(
            1,
            vec![
                int("gen_ai.usage.prompt_tokens", 1),
                int("gen_ai.usage.cache_creation_input_tokens", 1),
            ],
        ),
        span(2, vec![text("http.method", "GET")]),
    ]);
    let prices = PriceTable::with_defaults();
    let mapped = map_request(&request, &context(&prices));
    assert_eq!(mapped.rejected, 1, "the second has no model");
    assert_eq!(mapped.deprecated, [1, 2, 0, 0, 1]);
    // The current names win over the deprecated ones.
    let event = map_one(span(
        0,
        [
            genai("m"),
            vec![
                int("gen_ai.usage.prompt_tokens", 1),
                int("gen_ai.usage.input_tokens", 2),
                int("gen_ai.usage.completion_tokens", 3),
                int("gen_ai.usage.output_tokens", 4),
            ],
        ]
        .concat(),
    ))
    .expect("valid");
    assert_eq!(
        (event.input_tokens, event.output_tokens),
        (Some(2), Some(4))
    );
    // Whole doubles count as integers (JavaScript SDKs send numbers as doubles).
    let event = map_one(span(
        0,
        [
            genai("m"),
            vec![kv("gen_ai.usage.input_tokens", Value::DoubleValue(12.0))],
        ]
        .concat(),
    ))
    .expect("valid");
    assert_eq!(event.input_tokens, Some(12));
}

#[test]
fn token_counts_sent_as_strings_of_digits_are_numbers() {
    let event = map_one(span(
        0,
        [
            genai("gpt-4o"),
            vec![
                text("gen_ai.usage.input_tokens", "1000"),
                text("gen_ai.usage.output_tokens", "100"),
                text("gen_ai.usage.reasoning.output_tokens", "60"),
                text("gen_ai.usage.cache_read.input_tokens", "400"),
                text("gen_ai.usage.cache_creation.input_tokens", "0"),
                text(
                    "gen_ai.usage.prompt_tokens",
                    "ignored: the current name wins",
                ),
            ],
        ]
        .concat(),
    ))
    .expect("string counts are accepted");
    assert_eq!(
        (
            event.input_tokens,
            event.output_tokens,
            event.reasoning_output_tokens,
            event.cache_read_input_tokens,
            event.cache_creation_input_tokens,
        ),
        (Some(1000), Some(100), Some(60), Some(400), Some(0))
    );
    assert_eq!(
        event.cost_micros,
        Some(3_000),
        "priced as if sent as integers"
    );
    let event = map_one(span(
        0,
        [
            genai("m"),
            vec![text(
                "gen_ai.usage.completion_tokens",
                "18446744073709551615",
            )],
        ]
        .concat(),
    ))
    .expect("u64::MAX");
    assert_eq!(event.output_tokens, Some(u64::MAX));
}

#[test]
fn token_counts_sent_as_other_strings_reject_the_span_naming_the_attribute() {
    for (attribute, field, sent) in [
        ("gen_ai.usage.input_tokens", "input_tokens", "12a"),
        ("gen_ai.usage.output_tokens", "output_tokens", "-1"),
        (
            "gen_ai.usage.reasoning.output_tokens",
            "reasoning_output_tokens",
            "1.5",
        ),
        (
            "gen_ai.usage.cache_read.input_tokens",
            "cache_read_input_tokens",
            "",
        ),
        (
            "gen_ai.usage.cache_creation.input_tokens",
            "cache_creation_input_tokens",
            "+3",
        ),
        ("gen_ai.usage.prompt_tokens", "input_tokens", " 7"),
        (
            "gen_ai.usage.input_tokens",
            "input_tokens",
            "18446744073709551616",
        ),
    ] {
        let error =
            map_one(span(0, [genai("m"), vec![text(attribute, sent)]].concat())).expect_err(sent);
        assert_eq!(
            error,
            format!("{field}: expected an integer >= 0, found {sent:?} (from {attribute})")
        );
    }
    // The export answer's partial success says which span and attribute.
    let request = request_of(vec![
        span(0, genai("m")),
        span(
            1,
            [genai("m"), vec![text("gen_ai.usage.output_tokens", "lots")]].concat(),
        ),
    ]);
    let prices = PriceTable::with_defaults();
    let mapped = map_request(&request, &context(&prices));
    assert_eq!((mapped.events.len(), mapped.rejected), (1, 1));
    let partial = mapped.partial_success().expect("one span refused");
    assert_eq!(partial.rejected_spans, 1);
    assert_eq!(
        partial.error_message,
        "1 spans rejected: span 0000000000000002 (#1): output_tokens: expected an integer >= 0, \
         found \"lots\" (from gen_ai.usage.output_tokens)"
    );
}

#[test]
fn status_comes_from_the_span_status_and_error_type() {
    let with_status = |code: StatusCode, extra: Vec<KeyValue>| {
        let mut span = span(0, [genai("m"), extra].concat());
        span.status = Some(SpanStatus {
            code: code as i32,
            message: "upstream said no".to_string(),
        });
        map_one(span).expect("valid")
    };
    let event = with_status(StatusCode::Error, vec![]);
    assert_eq!((event.status, event.error_type), (Status::Error, None));
    let event = with_status(StatusCode::Error, vec![text("error.type", "rate_limited")]);
    assert_eq!(event.status, Status::Error);
    assert_eq!(event.error_type.as_deref(), Some("rate_limited"));
    assert_eq!(with_status(StatusCode::Ok, vec![]).status, Status::Ok);
    assert_eq!(with_status(StatusCode::Unset, vec![]).status, Status::Ok);
    assert_eq!(
        map_one(span(0, genai("m"))).expect("valid").status,
        Status::Ok
    );
}

#[test]
fn ttft_is_seconds_and_latency_comes_from_start_and_end() {
    let event = map_one(span(
        0,
        [
            genai("m"),
            vec![int("gen_ai.response.time_to_first_chunk", 2)],
        ]
        .concat(),
    ))
    .expect("valid");
    assert_eq!(event.ttft_ms, Some(2000.0), "integer seconds");
    let mut reversed = span(0, genai("m"));
    reversed.end_time_unix_nano = reversed.start_time_unix_nano - 1;
    assert_eq!(
        map_one(reversed).err().as_deref(),
        Some("latency_ms: the span ends before it starts")
    );
    let mut open = span(0, genai("m"));
    open.end_time_unix_nano = 0;
    assert_eq!(
        map_one(open).err().as_deref(),
        Some("latency_ms: required (end_time_unix_nano is 0)")
    );
    let negative = span(
        0,
        [
            genai("m"),
            vec![kv(
                "gen_ai.response.time_to_first_chunk",
                Value::DoubleValue(-0.5),
            )],
        ]
        .concat(),
    );
    assert_eq!(
        map_one(negative).err().as_deref(),
        Some("ttft_ms: expected a number >= 0, found -500 (from gen_ai.response.time_to_first_chunk)")
    );
}

#[test]
fn invalid_spans_are_rejected_alone_naming_field_and_attribute() {
    let cases: Vec<(Vec<KeyValue>, &str)> = vec![
        (
            vec![text("gen_ai.operation.name", "chat")],
            "model: required (gen_ai.request.model)",
        ),
        (
            vec![text("gen_ai.request.model", &"m".repeat(129))],
            "model: longer than 128 bytes (129 bytes) (from gen_ai.request.model)",
        ),
        (
            vec![text("gen_ai.request.model", "")],
            "model: must not be empty (from gen_ai.request.model)",
        ),
        (
            vec![int("gen_ai.request.model", 4)],
            "model: expected a string, found 4 (from gen_ai.request.model)",
        ),
        (
            [genai("m"), vec![text("gen_ai.usage.input_tokens", "many")]].concat(),
            "input_tokens: expected an integer >= 0, found \"many\" (from gen_ai.usage.input_tokens)",
        ),
        (
            [genai("m"), vec![int("gen_ai.usage.output_tokens", -1)]].concat(),
            "output_tokens: expected an integer >= 0, found -1 (from gen_ai.usage.output_tokens)",
        ),
        (
            [
                genai("m"),
                vec![kv("gen_ai.usage.input_tokens", Value::DoubleValue(1.5))],
            ]
            .concat(),
            "input_tokens: expected an integer >= 0, found 1.5 (from gen_ai.usage.input_tokens)",
        ),
        (
            [genai("m"), vec![text("error.type", &"e".repeat(65))]].concat(),
            "error_type: longer than 64 bytes (65 bytes) (from error.type)",
        ),
        (
            [genai("m"), vec![text("gen_ai.provider.name", &"p".repeat(65))]].concat(),
            "provider: longer than 64 bytes (65 bytes) (from gen_ai.provider.name)",
        ),
        (
            [genai("m"), vec![kv("gen_ai.operation.name", Value::BoolValue(true))]].concat(),
            "operation: expected a string, found true (from gen_ai.operation.name)",
        ),
    ];
    for (attributes, expected) in cases {
        assert_eq!(
            map_one(span(0, attributes)).err().as_deref(),
            Some(expected)
        );
    }
    let mut bad_id = span(0, genai("m"));
    bad_id.trace_id = vec![0; 16];
    assert_eq!(
        map_one(bad_id).err().as_deref(),
        Some("trace_id: expected 16 bytes, not all zero, found 16 bytes")
    );
    let mut short = span(0, genai("m"));
    short.span_id = vec![1; 4];
    assert_eq!(
        map_one(short).err().as_deref(),
        Some("span_id: expected 8 bytes, not all zero, found 4 bytes")
    );
    let mut old = span(0, genai("m"));
    old.start_time_unix_nano = 1;
    old.end_time_unix_nano = 2;
    assert!(
        map_one(old)
            .err()
            .is_some_and(|error| error.starts_with("timestamp: 1970-01-01T00:00:00Z is older")),
        "the retention applies as for JSON"
    );
}

#[test]
fn non_genai_and_agent_spans_are_counted_and_skipped() {
    let spans = vec![
        span(0, vec![text("http.method", "GET")]),
        span(1, genai("gpt-4o")),
        span(
            2,
            vec![
                text("gen_ai.operation.name", "execute_tool"),
                text("gen_ai.tool.name", "search"),
            ],
        ),
        span(3, vec![text("gen_ai.operation.name", "chat")]),
        span(4, vec![]),
    ];
    let request = request(vec![], spans);
    let prices = PriceTable::with_defaults();
    let mapped = map_request(&request, &context(&prices));
    assert_eq!(
        (
            mapped.spans,
            mapped.events.len(),
            mapped.skipped,
            mapped.rejected
        ),
        (5, 1, 3, 1)
    );
    let partial = mapped.partial_success().expect("partial success");
    assert_eq!(partial.rejected_spans, 4);
    assert_eq!(
        partial.error_message,
        "1 spans rejected: span 0000000000000004 (#3): model: required (gen_ai.request.model). \
         3 spans skipped: no gen_ai.* attributes of a model call"
    );
    let all_good = request_of(vec![span(0, genai("m"))]);
    assert!(map_request(&all_good, &context(&prices))
        .partial_success()
        .is_none());
}

fn request_of(spans: Vec<Span>) -> ExportTraceServiceRequest {
    request(vec![], spans)
}

#[test]
fn rejection_messages_stay_short() {
    let spans = (0..10).map(|n| span(n, genai(""))).collect();
    let request = request_of(spans);
    let prices = PriceTable::with_defaults();
    let mapped = map_request(&request, &context(&prices));
    assert_eq!((mapped.rejected, mapped.rejections.len()), (10, 3));
    let message = mapped.partial_success().expect("partial").error_message;
    assert!(message.starts_with("10 spans rejected: span"), "{message}");
    assert!(message.ends_with("; …"), "{message}");
}

#[test]
fn a_span_is_the_same_event_as_its_json_twin() {
    let attributes = vec![
        text("gen_ai.operation.name", "chat"),
        text("gen_ai.provider.name", "openai"),
        text("gen_ai.request.model", "gpt-4o-mini"),
        int("gen_ai.usage.input_tokens", 120),
        int("gen_ai.usage.output_tokens", 30),
        kv(
            "gen_ai.response.time_to_first_chunk",
            Value::DoubleValue(0.25),
        ),
    ];
    let from_span = map_one(span(6, attributes)).expect("valid");
    let trace = "ab".repeat(16);
    let json = format!(
        r#"{{"event_id":"{trace}0000000000000007","timestamp":{NOW},"model":"gpt-4o-mini","provider":"openai",
        "operation":"chat","latency_ms":812.5,"ttft_ms":250,"input_tokens":120,"output_tokens":30,
        "trace_id":"{trace}","span_id":"0000000000000007"}}"#
    );
    let prices = PriceTable::with_defaults();
    let decoded =
        decode_events(json.as_bytes(), BodyFormat::Json, &context(&prices)).expect("readable");
    assert_eq!(decoded.events.first(), Some(&from_span));
}

#[test]
fn protobuf_and_json_bodies_decode_to_the_same_request() {
    let original = request(
        vec![text("service.name", "svc")],
        vec![span(
            0,
            [genai("m"), vec![int("gen_ai.usage.input_tokens", 5)]].concat(),
        )],
    );
    let bytes = original.encode_to_vec();
    let decoded = decode_request(&bytes, OtlpEncoding::Protobuf, 10).expect("protobuf");
    assert_eq!(decoded, original);
    // OTLP/JSON: hex ids, camelCase, 64-bit integers as strings or numbers.
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},
        "scopeSpans":[{{"scope":{{"name":"x"}},"spans":[{{"traceId":"{}","spanId":"0000000000000001","name":"chat gpt-4o",
        "kind":3,"startTimeUnixNano":"{}","endTimeUnixNano":{},
        "attributes":[{{"key":"gen_ai.operation.name","value":{{"stringValue":"chat"}}}},
                      {{"key":"gen_ai.request.model","value":{{"stringValue":"m"}}}},
                      {{"key":"gen_ai.usage.input_tokens","value":{{"intValue":"5"}}}}],
        "status":{{}}, "unknownField": [1, 2]}}]}}]}}]}}"#,
        "ab".repeat(16),
        NOW as u64 * NANOS,
        (NOW as u64 + 812) * NANOS + 500_000
    );
    let decoded = decode_request(json.as_bytes(), OtlpEncoding::Json, 10).expect("json");
    let prices = PriceTable::with_defaults();
    let from_json = map_request(&decoded, &context(&prices));
    let from_protobuf = map_request(&original, &context(&prices));
    assert_eq!(from_json.events, from_protobuf.events);
    assert_eq!(from_json.events.len(), 1);
}

#[test]
fn undecodable_bodies_are_errors_not_panics() {
    let bytes = request_of(vec![span(0, genai("m"))]).encode_to_vec();
    for cut in [1, 2, 5, bytes.len() / 2, bytes.len() - 1] {
        let error = decode_request(&bytes[..cut], OtlpEncoding::Protobuf, 10)
            .expect_err("truncated protobuf");
        assert!(
            error
                .to_string()
                .starts_with("body is not a valid OTLP protobuf ExportTraceServiceRequest: "),
            "{error}"
        );
    }
    // Invalid UTF-8 in a string field.
    let mut bad = request_of(vec![span(0, genai("mmmm"))]).encode_to_vec();
    let at = bad
        .windows(4)
        .position(|window| window == b"mmmm")
        .expect("model bytes");
    bad[at] = 0xFF;
    assert!(matches!(
        decode_request(&bad, OtlpEncoding::Protobuf, 10),
        Err(OtlpDecodeError::Protobuf(_))
    ));
    // A string where a message belongs (wrong wire type for the field).
    assert!(decode_request(&[0x0A, 0x02, 0x08, 0xFF], OtlpEncoding::Protobuf, 10).is_err());
    assert!(
        decode_request(&[0x0B], OtlpEncoding::Protobuf, 10).is_err(),
        "group"
    );
    // JSON: syntax and types say where.
    let error = decode_request(b"{\"resourceSpans\": [", OtlpEncoding::Json, 10)
        .expect_err("truncated JSON");
    assert!(
        matches!(error, OtlpDecodeError::Json { line: 1, .. }),
        "{error:?}"
    );
    let error =
        decode_request(br#"{"resourceSpans": 5}"#, OtlpEncoding::Json, 10).expect_err("wrong type");
    assert!(error.to_string().contains("invalid type"), "{error}");
    let error = decode_request(
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#,
        OtlpEncoding::Json,
        10,
    )
    .expect_err("bad hex");
    assert!(matches!(error, OtlpDecodeError::Json { .. }), "{error:?}");
    assert_eq!(
        decode_request(b"{\n \"a\":\"\xff\"}", OtlpEncoding::Json, 10),
        Err(OtlpDecodeError::Json {
            line: 2,
            column: 7,
            message: "invalid UTF-8".to_string()
        })
    );
    // An empty body is an empty request, as protobuf defines it.
    assert_eq!(
        decode_request(b"", OtlpEncoding::Protobuf, 10),
        Ok(ExportTraceServiceRequest::default())
    );
}

#[test]
fn limits_stop_before_the_tree_is_built() {
    let eleven = request_of((0..11).map(|n| span(n, vec![])).collect());
    assert_eq!(
        decode_request(&eleven.encode_to_vec(), OtlpEncoding::Protobuf, 10),
        Err(OtlpDecodeError::TooManySpans { limit: 10 })
    );
    let json = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        ["{}"; 11].join(",")
    );
    assert_eq!(
        decode_request(json.as_bytes(), OtlpEncoding::Json, 10),
        Err(OtlpDecodeError::TooManySpans { limit: 10 })
    );
    assert_eq!(
        scan::json(json.as_bytes()).map(|counts| counts.spans),
        Ok(11)
    );
    // Empty attributes are 2 bytes each: 2 MiB of them would be a million values.
    let mut body = Vec::new();
    let mut span_bytes = Vec::new();
    for _ in 0..=MAX_ELEMENTS {
        span_bytes.extend_from_slice(&[0x4A, 0x00]); // field 9 (attributes), length 0
    }
    let mut scope = vec![0x12];
    push_len(&mut scope, span_bytes.len());
    scope.extend_from_slice(&span_bytes);
    let mut resource = vec![0x12];
    push_len(&mut resource, scope.len());
    resource.extend_from_slice(&scope);
    body.push(0x0A);
    push_len(&mut body, resource.len());
    body.extend_from_slice(&resource);
    assert_eq!(
        decode_request(&body, OtlpEncoding::Protobuf, 10),
        Err(OtlpDecodeError::TooManyElements {
            limit: MAX_ELEMENTS
        })
    );
    let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert_eq!(
        decode_request(deep.as_bytes(), OtlpEncoding::Json, 10),
        Err(OtlpDecodeError::TooDeep { limit: MAX_DEPTH })
    );
}

fn push_len(out: &mut Vec<u8>, mut length: usize) {
    while length >= 0x80 {
        out.push((length as u8) | 0x80);
        length >>= 7;
    }
    out.push(length as u8);
}

#[test]
fn responses_and_statuses_encode_both_ways() {
    let partial = ExportTracePartialSuccess {
        rejected_spans: 2,
        error_message: "2 spans skipped".to_string(),
    };
    let response = response(Some(partial.clone()));
    let bytes = encode_response(&response, OtlpEncoding::Protobuf);
    assert_eq!(
        ExportTraceServiceResponse::decode(bytes.as_slice()).ok(),
        Some(response.clone())
    );
    let json: serde_json::Value =
        serde_json::from_slice(&encode_response(&response, OtlpEncoding::Json)).expect("json");
    assert_eq!(json["partialSuccess"]["rejectedSpans"], "2");
    assert_eq!(
        encode_response(&super::response(None), OtlpEncoding::Json),
        b"{}"
    );
    let status = RpcStatus::decode(encode_status(3, "bad", OtlpEncoding::Protobuf).as_slice())
        .expect("status");
    assert_eq!((status.code, status.message.as_str()), (3, "bad"));
}
