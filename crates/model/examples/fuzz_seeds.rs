//! Writes seed inputs for the fuzz targets whose formats carry checksums or binary
//! encodings a fuzzer cannot guess: `cargo run -p ais-model --example fuzz_seeds -- fuzz/corpus`.

use std::borrow::Cow;
use std::path::Path;

use ais_model::frame::encode_frame;
use ais_model::{wire, Event, EventId, Status};
use prost::Message;

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".to_string());
    let root = Path::new(&root);
    let event = Event {
        provider: Some(Cow::Borrowed("openai")),
        ttft_ms: Some(140.0),
        input_tokens: Some(1200),
        output_tokens: Some(250),
        reasoning_output_tokens: Some(100),
        cache_creation_input_tokens: Some(300),
        cost_micros: Some(5_500),
        status: Status::Error,
        error_type: Some(Cow::Borrowed("timeout")),
        user_id: Some(Cow::Borrowed("u-17")),
        attributes: vec![(Cow::Borrowed("team"), Cow::Borrowed("search"))],
        ..Event::new(
            "gpt-4o",
            EventId::Client(Cow::Borrowed("e-1")),
            1_795_339_620_000,
            812.0,
        )
    };
    let mut record = Vec::new();
    wire::encode_into("acme", &event, &mut record);
    std::fs::write(root.join("wire_record/event"), &record)?;
    let mut generated = Vec::new();
    wire::encode_into(
        "t",
        &Event::new("m", EventId::Generated(7), 0, 0.0),
        &mut generated,
    );
    std::fs::write(root.join("wire_record/minimal"), &generated)?;

    let mut payload = Vec::new();
    for item in [&record, &generated] {
        payload.extend_from_slice(&(item.len() as u32).to_le_bytes());
        payload.extend_from_slice(item);
    }
    let mut frames = Vec::new();
    encode_frame(0, 2, &payload, &mut frames);
    encode_frame(2, 0, &[], &mut frames);
    std::fs::write(root.join("wal_frame/two_frames"), &frames)?;

    let body =
        br#"[{"timestamp":1795339620000,"model":"gpt-4o","latency_ms":812,"input_tokens":3}]"#;
    let mut zstd = vec![1u8];
    zstd.extend(zstd::encode_all(&body[..], 3)?);
    std::fs::write(root.join("compressed_body/zstd"), &zstd)?;

    let export = otlp_export();
    std::fs::write(root.join("otlp_protobuf/export"), export.encode_to_vec())?;
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","startTimeUnixNano":"{start}","endTimeUnixNano":"{end}","status":{{"code":2}},"attributes":[{{"key":"gen_ai.request.model","value":{{"stringValue":"gpt-4o"}}}},{{"key":"gen_ai.usage.input_tokens","value":{{"intValue":"12"}}}},{{"key":"gen_ai.response.time_to_first_chunk","value":{{"doubleValue":0.1}}}},{{"key":"gen_ai.response.finish_reasons","value":{{"arrayValue":{{"values":[{{"stringValue":"stop"}}]}}}}}}]}}]}}]}}]}}"#,
        start = 1_795_339_620_000_000_000u64,
        end = 1_795_339_620_812_000_000u64,
    );
    std::fs::write(root.join("otlp_json/export"), json)?;
    Ok(())
}

/// One GenAI span and one plain span, as an SDK would export them.
fn otlp_export() -> ais_model::otlp::ExportTraceServiceRequest {
    use ais_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
    use ais_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
    let kv = |key: &str, value: Value| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    let start = 1_795_339_620_000_000_000u64;
    let genai = Span {
        trace_id: vec![0x0a; 16],
        span_id: vec![0xb7; 8],
        start_time_unix_nano: start,
        end_time_unix_nano: start + 812_000_000,
        attributes: vec![
            kv("gen_ai.operation.name", Value::StringValue("chat".into())),
            kv("gen_ai.request.model", Value::StringValue("gpt-4o".into())),
            kv("gen_ai.usage.input_tokens", Value::IntValue(1200)),
            kv("gen_ai.usage.output_tokens", Value::IntValue(250)),
            kv(
                "gen_ai.response.time_to_first_chunk",
                Value::DoubleValue(0.14),
            ),
        ],
        ..Default::default()
    };
    let plain = Span {
        span_id: vec![0xc1; 8],
        attributes: vec![kv("http.method", Value::StringValue("GET".into()))],
        ..genai.clone()
    };
    ais_model::otlp::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![genai, plain],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
