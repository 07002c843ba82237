//! The v1 rules a record read back from the log is held to again, before the stream
//! processes it.
//!
//! Ingest validated the event once, but the log is shared (other producers, older or
//! newer `ais` builds, replayed dead letters), so the stream checks what does not
//! depend on when it looks: the tenant, every field length, the attribute limits, and a
//! timestamp the stores can hold. The rules that depend on the clock (at most 5 minutes
//! ahead, not older than the retention) are not applied again: a backlog or a replay
//! is read long after ingest, and a late event is merged as a correction, not refused.
//! `latency_ms` and `ttft_ms` are checked by the wire decoder itself.

use super::rules;
use crate::event::limits;
use crate::{Event, EventId};

/// Earliest timestamp a store holds: the unix epoch (ClickHouse `DateTime` is unsigned).
pub const MIN_STORED_TIMESTAMP_MS: i64 = 0;
/// First timestamp past what every store holds: 2^32 seconds after the epoch, in 2106
/// (the end of ClickHouse `DateTime`), far inside the range minute arithmetic is exact.
pub const END_STORED_TIMESTAMP_MS: i64 = (1_i64 << 32) * 1000;

/// Checks a decoded log record against the clock-independent v1 rules; the error names
/// the field, as ingest's messages do.
pub fn validate_logged(tenant: &str, event: &Event<'_>) -> Result<(), String> {
    if tenant.is_empty() {
        return Err("tenant: must not be empty".to_string());
    }
    rules::check_len("tenant", tenant, limits::TENANT_BYTES)?;
    rules::check_model(&event.model)?;
    rules::check_len("model", &event.model, limits::MODEL_BYTES)?;
    if let EventId::Client(id) = &event.event_id {
        rules::check_event_id(id)?;
    }
    if !(MIN_STORED_TIMESTAMP_MS..END_STORED_TIMESTAMP_MS).contains(&event.timestamp_ms) {
        return Err(format!(
            "timestamp: {} is outside the range the stores hold (1970 to 2106)",
            event.timestamp_ms
        ));
    }
    let texts = [
        ("response_model", &event.response_model, limits::MODEL_BYTES),
        ("provider", &event.provider, limits::PROVIDER_BYTES),
        ("operation", &event.operation, limits::OPERATION_BYTES),
        ("error_type", &event.error_type, limits::ERROR_TYPE_BYTES),
        ("user_id", &event.user_id, limits::KEY_BYTES),
        ("session_id", &event.session_id, limits::KEY_BYTES),
        ("trace_id", &event.trace_id, limits::KEY_BYTES),
        ("span_id", &event.span_id, limits::KEY_BYTES),
        ("endpoint", &event.endpoint, limits::KEY_BYTES),
        ("region", &event.region, limits::KEY_BYTES),
        ("key", &event.key, limits::KEY_BYTES),
        (
            "reservation_id",
            &event.reservation_id,
            limits::EVENT_ID_BYTES,
        ),
    ];
    for (field, value, max_bytes) in texts {
        if let Some(value) = value {
            rules::check_len(field, value, max_bytes)?;
        }
    }
    rules::check_attribute_count(event.attributes.len())?;
    for (key, value) in &event.attributes {
        rules::check_attribute_key(key)?;
        rules::check_attribute_value(key, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn valid() -> Event<'static> {
        Event {
            user_id: Some(Cow::Borrowed("u-1")),
            attributes: vec![(Cow::Borrowed("k"), Cow::Borrowed("v"))],
            ..Event::new(
                "gpt-4o",
                EventId::Client(Cow::Borrowed("id-1")),
                1_795_339_620_000,
                12.0,
            )
        }
    }

    #[test]
    fn what_ingest_accepts_passes_whatever_its_age() {
        assert_eq!(validate_logged("acme", &valid()), Ok(()));
        // Older than any retention, or a little ahead of the clock: still processed.
        for timestamp_ms in [0, 1_000, END_STORED_TIMESTAMP_MS - 1] {
            let event = Event {
                timestamp_ms,
                ..valid()
            };
            assert_eq!(validate_logged("acme", &event), Ok(()), "{timestamp_ms}");
        }
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        let long = |bytes: usize| Cow::Owned("x".repeat(bytes));
        let cases: Vec<(&str, Event<'static>, &str)> = vec![
            ("", valid(), "tenant"),
            (
                "acme",
                Event {
                    model: Cow::Borrowed(""),
                    ..valid()
                },
                "model",
            ),
            (
                "acme",
                Event {
                    model: long(129),
                    ..valid()
                },
                "model",
            ),
            (
                "acme",
                Event {
                    event_id: EventId::Client(Cow::Borrowed("")),
                    ..valid()
                },
                "event_id",
            ),
            (
                "acme",
                Event {
                    event_id: EventId::Client(long(65)),
                    ..valid()
                },
                "event_id",
            ),
            (
                "acme",
                Event {
                    timestamp_ms: -1,
                    ..valid()
                },
                "timestamp",
            ),
            (
                "acme",
                Event {
                    timestamp_ms: i64::MIN,
                    ..valid()
                },
                "timestamp",
            ),
            (
                "acme",
                Event {
                    timestamp_ms: END_STORED_TIMESTAMP_MS,
                    ..valid()
                },
                "timestamp",
            ),
            (
                "acme",
                Event {
                    provider: Some(long(65)),
                    ..valid()
                },
                "provider",
            ),
            (
                "acme",
                Event {
                    region: Some(long(129)),
                    ..valid()
                },
                "region",
            ),
            (
                "acme",
                Event {
                    attributes: vec![(long(65), Cow::Borrowed("v"))],
                    ..valid()
                },
                "attributes",
            ),
            (
                "acme",
                Event {
                    attributes: vec![(Cow::Borrowed("k"), long(257))],
                    ..valid()
                },
                "attributes",
            ),
            (
                "acme",
                Event {
                    attributes: (0..33)
                        .map(|i| (Cow::Owned(format!("k{i}")), Cow::Borrowed("v")))
                        .collect(),
                    ..valid()
                },
                "attributes",
            ),
        ];
        for (tenant, event, field) in cases {
            let error = validate_logged(tenant, &event).expect_err(field);
            assert!(error.starts_with(&format!("{field}:")), "{error}");
        }
        assert!(validate_logged(&"t".repeat(65), &valid())
            .expect_err("long tenant")
            .starts_with("tenant:"));
    }
}
