//! Structure-aware: arbitrary field values (right and wrong types, edge numbers, long
//! and escaped strings) serialised as one JSON event, so the fuzzer explores validation
//! rather than JSON syntax. An event is either accepted and valid, or rejected with an
//! error that names a field.
#![no_main]

mod common;

use ais_model::decode::{decode_events, BodyFormat};
use ais_model::price::PriceTable;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

#[derive(Debug, Arbitrary)]
enum Scalar {
    Missing,
    Null,
    Bool(bool),
    Int(i64),
    Unsigned(u64),
    Float(f64),
    Text(String),
    Repeated(char, u16),
    Object(Vec<(String, String)>),
}

impl Scalar {
    fn value(&self) -> Option<Value> {
        Some(match self {
            Scalar::Missing => return None,
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => json!(b),
            Scalar::Int(i) => json!(i),
            Scalar::Unsigned(u) => json!(u),
            Scalar::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Scalar::Text(s) => json!(s),
            Scalar::Repeated(c, n) => {
                json!(std::iter::repeat_n(*c, usize::from(*n)).collect::<String>())
            }
            Scalar::Object(pairs) => {
                Value::Object(pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
            }
        })
    }
}

#[derive(Debug, Arbitrary)]
struct Fields {
    timestamp_offset: Option<i64>,
    timestamp: Scalar,
    model: Scalar,
    latency_ms: Scalar,
    others: Vec<(u8, Scalar)>,
}

const NAMES: &[&str] = &[
    "event_id",
    "response_model",
    "provider",
    "operation",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "reasoning_output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cost_usd",
    "status",
    "error_type",
    "user_id",
    "session_id",
    "trace_id",
    "span_id",
    "endpoint",
    "region",
    "attributes",
    "reservation_id",
    "input",
    "output",
    "unknown",
];

fuzz_target!(|fields: Fields| {
    let mut map = Map::new();
    match fields.timestamp_offset {
        Some(offset) => {
            map.insert(
                "timestamp".into(),
                json!(common::NOW.saturating_add(offset % 1_000_000_000)),
            );
        }
        None => {
            if let Some(value) = fields.timestamp.value() {
                map.insert("timestamp".into(), value);
            }
        }
    }
    for (name, scalar) in [("model", &fields.model), ("latency_ms", &fields.latency_ms)] {
        if let Some(value) = scalar.value() {
            map.insert(name.into(), value);
        }
    }
    for (which, scalar) in &fields.others {
        if let Some(value) = scalar.value() {
            map.insert(NAMES[usize::from(*which) % NAMES.len()].into(), value);
        }
    }
    let body = Value::Object(map).to_string();
    let prices = PriceTable::with_defaults();
    let decoded = decode_events(body.as_bytes(), BodyFormat::Json, &common::context(&prices))
        .expect("one serialised object is always readable");
    assert_eq!(decoded.events.len() + decoded.rejected.len(), 1);
    common::check(&decoded);
    for rejection in &decoded.rejected {
        let named = NAMES
            .iter()
            .chain(["timestamp", "model", "latency_ms", "event"].iter())
            .any(|name| rejection.error.starts_with(&format!("{name}:")));
        assert!(named, "rejection names no field: {}", rejection.error);
    }
});
