//! Measures `decode_events` throughput on a synthetic batch (the goal is 1M events/s on
//! two cores, so about 500k events/s on one), and OTLP protobuf decoding and mapping at
//! the SDK's batch of 512 spans: `cargo run --release -p ais-model --example
//! decode_throughput`.

use std::time::Instant;

use ais_model::decode::{decode_events, BodyFormat, ValidationContext};
use ais_model::price::PriceTable;

const EVENTS_PER_BODY: usize = 10_000;
const ROUNDS: usize = 50;

fn body(format: BodyFormat, with_event_id: bool) -> Vec<u8> {
    let now = 1_795_339_620_000_i64;
    let events: Vec<String> = (0..EVENTS_PER_BODY)
        .map(|i| {
            let id = if with_event_id {
                format!(r#""event_id":"evt-{i:016}","#)
            } else {
                String::new()
            };
            format!(
                r#"{{{id}"timestamp":{},"model":"gpt-4o-mini","provider":"openai","operation":"chat","latency_ms":{}.25,"ttft_ms":140.5,"input_tokens":{},"output_tokens":{},"status":"ok","user_id":"user-{}","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","region":"eu-west-1","attributes":{{"team":"search","env":"prod"}}}}"#,
                now - i as i64,
                100 + i % 900,
                500 + i % 300,
                50 + i % 200,
                i % 1000
            )
        })
        .collect();
    match format {
        BodyFormat::Json => format!("[{}]", events.join(",")).into_bytes(),
        BodyFormat::Ndjson => events.join("\n").into_bytes(),
    }
}

const SPANS_PER_EXPORT: usize = 512;

/// An export as the Python SDK sends it: one resource, 512 GenAI spans.
fn otlp_body() -> Vec<u8> {
    use ais_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
    use ais_model::otlp::resource::Resource;
    use ais_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    let kv = |key: &str, value: Value| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    let start = 1_795_339_620_000_000_000u64;
    let spans = (0..SPANS_PER_EXPORT as u64)
        .map(|i| Span {
            trace_id: [0x4b; 16].to_vec(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: "chat gpt-4o-mini".to_string(),
            start_time_unix_nano: start - i * 1_000_000,
            end_time_unix_nano: start + (100 + i % 900) * 1_000_000,
            attributes: vec![
                kv("gen_ai.operation.name", Value::StringValue("chat".into())),
                kv("gen_ai.provider.name", Value::StringValue("openai".into())),
                kv(
                    "gen_ai.request.model",
                    Value::StringValue("gpt-4o-mini".into()),
                ),
                kv(
                    "gen_ai.response.model",
                    Value::StringValue("gpt-4o-mini-2024-07-18".into()),
                ),
                kv(
                    "gen_ai.usage.input_tokens",
                    Value::IntValue(500 + (i % 300) as i64),
                ),
                kv(
                    "gen_ai.usage.output_tokens",
                    Value::IntValue(50 + (i % 200) as i64),
                ),
                kv(
                    "gen_ai.response.time_to_first_chunk",
                    Value::DoubleValue(0.1405),
                ),
                kv(
                    "server.address",
                    Value::StringValue("api.openai.com".into()),
                ),
                kv("user.id", Value::StringValue(format!("user-{}", i % 1000))),
            ],
            ..Default::default()
        })
        .collect();
    ais_model::otlp::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", Value::StringValue("search-api".into())),
                    kv(
                        "telemetry.sdk.language",
                        Value::StringValue("python".into()),
                    ),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn otlp(context: &ValidationContext<'_>) {
    use ais_model::otlp::{decode_request, map_request, OtlpEncoding};
    let bytes = otlp_body();
    let rounds = ROUNDS * EVENTS_PER_BODY / SPANS_PER_EXPORT;
    let started = Instant::now();
    let mut accepted = 0;
    for _ in 0..rounds {
        match decode_request(&bytes, OtlpEncoding::Protobuf, EVENTS_PER_BODY) {
            Ok(request) => accepted += map_request(&request, context).events.len(),
            Err(error) => {
                eprintln!("otlp: {error}");
                return;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "otlp protobuf, {SPANS_PER_EXPORT} spans per export: {:.0} spans/s on one core ({} bytes/span, {accepted} accepted)",
        accepted as f64 / seconds,
        bytes.len() / SPANS_PER_EXPORT
    );
}

fn main() {
    let prices = PriceTable::with_defaults();
    let context = ValidationContext {
        now_ms: 1_795_339_620_000,
        max_age_ms: 7 * 24 * 3_600_000,
        max_future_ms: 300_000,
        max_events: EVENTS_PER_BODY,
        prices: &prices,
        payload_max_bytes: None,
    };
    for (name, format, with_event_id) in [
        ("json array, client ids", BodyFormat::Json, true),
        ("json array, generated ids", BodyFormat::Json, false),
        ("ndjson, client ids", BodyFormat::Ndjson, true),
    ] {
        let bytes = body(format, with_event_id);
        let started = Instant::now();
        let mut accepted = 0;
        for _ in 0..ROUNDS {
            match decode_events(&bytes, format, &context) {
                Ok(decoded) => accepted += decoded.events.len(),
                Err(error) => {
                    eprintln!("{name}: {error}");
                    return;
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{name}: {:.0} events/s on one core ({} bytes/event, {accepted} accepted)",
            accepted as f64 / seconds,
            bytes.len() / EVENTS_PER_BODY
        );
    }
    otlp(&context);
}
