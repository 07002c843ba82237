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
    }
}

/// Every accepted event respects the limits and survives the log encoding unchanged.
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
