// Shared by the targets: a validation context that accepts any timestamp a target
// makes, and the checks every decoded event must pass.

use ais_model::decode::{Decoded, ValidationContext};
use ais_model::price::PriceTable;
use ais_model::{wire, Event};

pub const NOW: i64 = 1_795_339_620_000;

pub fn context(prices: &PriceTable) -> ValidationContext<'_> {
    ValidationContext {
        now_ms: NOW,
        max_age_ms: 7 * 24 * 3_600_000,
        max_future_ms: 300_000,
        max_events: 10_000,
        prices,
        // Payload capture on, with a small cap: its parsing and cutting are fuzzed too.
        payload_max_bytes: Some(1_024),
    }
}

/// Every accepted event respects the limits and survives the log encoding unchanged.
#[allow(dead_code)] // not every target decodes bodies
pub fn check(decoded: &Decoded<'_>) {
    assert_eq!(decoded.events.len(), decoded.indexes.len());
    for event in &decoded.events {
        check_event(event);
    }
}

pub fn check_event(event: &Event<'_>) {
    use ais_model::event::limits;
    assert!(!event.model.is_empty() && event.model.len() <= limits::MODEL_BYTES);
    assert!(event.latency_ms.is_finite() && event.latency_ms >= 0.0);
    assert!(event.attributes.len() <= limits::ATTRIBUTES);
    assert!(event.timestamp_ms <= NOW + 300_000);
    let mut buf = Vec::new();
    wire::encode_into("tenant", event, &mut buf);
    let (tenant, back) = wire::decode(&buf).expect("own encoding decodes");
    assert_eq!(tenant, "tenant");
    assert_eq!(&back, event);
}

/// Decodes an OTLP body; if it decodes, maps it and checks every accepted event.
#[allow(dead_code)]
pub fn check_otlp(body: &[u8], encoding: ais_model::otlp::OtlpEncoding) {
    use ais_model::otlp;
    let Ok(request) = otlp::decode_request(body, encoding, 10_000) else {
        return;
    };
    assert!(otlp::span_count(&request) <= 10_000);
    let prices = PriceTable::with_defaults();
    let mapped = otlp::map_request(&request, &context(&prices));
    assert_eq!(
        mapped.events.len() + mapped.skipped + mapped.rejected,
        mapped.spans
    );
    for event in &mapped.events {
        check_event(event);
    }
}
