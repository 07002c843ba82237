//! The binary encoding of one event record in the log (embedded WAL or Kafka value).
//!
//! Version 1: one byte `0x01`, then the postcard encoding of the tenant (`&str`: a
//! varint length and UTF-8 bytes) followed by the postcard encoding of [`Event`] in
//! field order. `model` is the event's first field, so [`peek_key`] reads
//! (tenant, model) without decoding the rest. Postcard is compact (varints, no field
//! names) and decodes with borrowed strings, so the stream allocates nothing per field.

use crate::Event;

/// Version byte of the current encoding.
pub const VERSION_1: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("empty log record")]
    Empty,
    #[error("unknown log record version {0}")]
    UnknownVersion(u8),
    #[error("malformed log record: {0}")]
    Malformed(String),
}

/// Lets postcard append to a borrowed buffer (its `to_extend` takes the sink by value).
pub(crate) struct AppendTo<'a>(pub(crate) &'a mut Vec<u8>);

impl Extend<u8> for AppendTo<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// Appends the encoding of `(tenant, event)` to `out`.
pub fn encode_into(tenant: &str, event: &Event<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(VERSION_1);
    // Serializing strings, numbers, options and sized sequences into a Vec cannot fail;
    // should it ever, the partial record is removed rather than left half-written.
    let encoded = postcard::to_extend(&(tenant, event), AppendTo(out)).is_ok();
    if !encoded {
        debug_assert!(encoded, "postcard failed to encode an event");
        out.truncate(start);
    }
}

fn split_version(bytes: &[u8]) -> Result<&[u8], WireError> {
    let (&version, rest) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != VERSION_1 {
        return Err(WireError::UnknownVersion(version));
    }
    Ok(rest)
}

/// Decodes one record, borrowing strings from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<(&str, Event<'_>), WireError> {
    let rest = split_version(bytes)?;
    let ((tenant, event), trailing): ((&str, Event<'_>), &[u8]) =
        postcard::take_from_bytes(rest).map_err(|error| WireError::Malformed(error.to_string()))?;
    if !trailing.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} unexpected bytes after the event",
            trailing.len()
        )));
    }
    // Records may come from other producers (a Kafka topic is shared): hold them to the
    // invariants validation gives events at ingest, so NaN never reaches a sketch.
    let valid_duration = |ms: f64| ms.is_finite() && ms >= 0.0;
    if !valid_duration(event.latency_ms) || !event.ttft_ms.is_none_or(valid_duration) {
        return Err(WireError::Malformed(
            "latency_ms and ttft_ms must be finite and >= 0".to_string(),
        ));
    }
    Ok((tenant, event))
}

/// Reads (tenant, model) from the front of a record: the partition key.
pub fn peek_key(bytes: &[u8]) -> Result<(&str, &str), WireError> {
    let rest = split_version(bytes)?;
    let (tenant, rest): (&str, &[u8]) =
        postcard::take_from_bytes(rest).map_err(|error| WireError::Malformed(error.to_string()))?;
    let (model, _): (&str, &[u8]) =
        postcard::take_from_bytes(rest).map_err(|error| WireError::Malformed(error.to_string()))?;
    Ok((tenant, model))
}

/// Reads the tenant from the front of a version-1 record, however broken the rest is:
/// who may see a record the stream could not process. `None` when even the tenant does
/// not decode (or is empty or longer than a tenant can be).
pub fn peek_tenant(bytes: &[u8]) -> Option<&str> {
    let rest = split_version(bytes).ok()?;
    let (tenant, _): (&str, &[u8]) = postcard::take_from_bytes(rest).ok()?;
    let plausible = !tenant.is_empty() && tenant.len() <= crate::event::limits::TENANT_BYTES;
    plausible.then_some(tenant)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::*;
    use crate::{EventId, Status};

    /// Any Unicode text, weighted towards short strings and the characters JSON escapes.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 _\\-\\.é€\"\\\\]{0,24}",
            "\\PC{0,40}",
            any::<String>(),
        ]
    }

    /// Floats that compare equal to themselves, infinities and -0 included.
    fn float() -> impl Strategy<Value = f64> {
        // Durations as validation admits them: finite and >= 0 (decode refuses others).
        prop_oneof![0.0f64..1e12, Just(0.0), Just(f64::MAX)]
    }

    fn optional_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    prop_compose! {
        fn arbitrary_event()(
            model in text(),
            client_id in proptest::option::of(text()),
            generated in any::<u128>(),
            timestamp_ms in any::<i64>(),
            strings in proptest::collection::vec(optional_text(), 10),
            latency_ms in float(),
            ttft_ms in proptest::option::of(float()),
            tokens in proptest::collection::vec(proptest::option::of(any::<u64>()), 4),
            failed in any::<bool>(),
            attributes in proptest::collection::vec((text(), text()), 0..4),
        ) -> Event<'static> {
            let owned = |value: &Option<String>| value.clone().map(Cow::Owned);
            Event {
                model: Cow::Owned(model),
                event_id: match client_id {
                    Some(id) => EventId::Client(Cow::Owned(id)),
                    None => EventId::Generated(generated),
                },
                timestamp_ms,
                response_model: owned(&strings[0]),
                provider: owned(&strings[1]),
                operation: owned(&strings[2]),
                latency_ms,
                ttft_ms,
                input_tokens: tokens[0],
                output_tokens: tokens[1],
                cache_read_input_tokens: tokens[2],
                cost_micros: tokens[3],
                status: if failed { Status::Error } else { Status::Ok },
                error_type: owned(&strings[3]),
                user_id: owned(&strings[4]),
                session_id: owned(&strings[5]),
                trace_id: owned(&strings[6]),
                span_id: owned(&strings[7]),
                endpoint: owned(&strings[8]),
                region: owned(&strings[9]),
                attributes: attributes.into_iter().map(|(k, v)| (Cow::Owned(k), Cow::Owned(v))).collect(),
            }
        }
    }

    proptest! {
        #[test]
        fn records_round_trip(tenant in text(), event in arbitrary_event()) {
            let mut buf = vec![0xAA];
            encode_into(&tenant, &event, &mut buf);
            let (got_tenant, got) = decode(&buf[1..]).expect("own encoding decodes");
            prop_assert_eq!(got_tenant, tenant.as_str());
            prop_assert_eq!(&got, &event);
            let (key_tenant, key_model) = peek_key(&buf[1..]).expect("key");
            prop_assert_eq!(key_tenant, tenant.as_str());
            prop_assert_eq!(key_model, event.model.as_ref());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let _ = peek_key(&bytes);
        }

        #[test]
        fn corrupted_records_never_panic_and_keys_agree(
            event in arbitrary_event(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        ) {
            let mut buf = Vec::new();
            encode_into("tenant", &event, &mut buf);
            for (index, mask) in flips {
                let at = index.index(buf.len());
                buf[at] ^= mask;
            }
            // Whatever a corrupted record still decodes to, its key must match it.
            if let Ok((tenant, decoded)) = decode(&buf) {
                prop_assert_eq!(peek_key(&buf).ok(), Some((tenant, decoded.model.as_ref())));
            }
        }

        #[test]
        fn truncated_records_are_errors(event in arbitrary_event(), cut in 0usize..1000) {
            let mut buf = Vec::new();
            encode_into("tenant", &event, &mut buf);
            let cut = cut % buf.len();
            prop_assert!(decode(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn decoded_strings_borrow_from_the_record() {
        let event = Event {
            provider: Some(Cow::Borrowed("openai")),
            user_id: Some(Cow::Borrowed("u")),
            attributes: vec![(Cow::Borrowed("k"), Cow::Borrowed("v"))],
            ..Event::new("gpt-4o", EventId::Client(Cow::Borrowed("id-1")), 1, 1.0)
        };
        let mut buf = Vec::new();
        encode_into("acme", &event, &mut buf);
        let (_, got) = decode(&buf).expect("decodes");
        assert!(matches!(got.model, Cow::Borrowed(_)));
        assert!(matches!(got.event_id, EventId::Client(Cow::Borrowed(_))));
        assert!(matches!(got.provider, Some(Cow::Borrowed(_))));
        assert!(matches!(got.attributes[0].1, Cow::Borrowed(_)));
    }

    #[test]
    fn non_finite_durations_are_refused() {
        // Found by the wire_record fuzz target: a NaN latency decoded, and NaN != NaN.
        let crash = [
            1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0,
        ];
        assert!(matches!(decode(&crash), Err(WireError::Malformed(_))));
        for latency in [f64::NAN, f64::INFINITY, -1.0] {
            let mut buf = Vec::new();
            encode_into(
                "t",
                &Event::new("m", EventId::Generated(1), 0, latency),
                &mut buf,
            );
            assert!(decode(&buf).is_err(), "latency {latency}");
        }
        let mut buf = Vec::new();
        let event = Event {
            ttft_ms: Some(f64::NAN),
            ..Event::new("m", EventId::Generated(1), 0, 1.0)
        };
        encode_into("t", &event, &mut buf);
        assert!(decode(&buf).is_err(), "ttft NaN");
    }

    #[test]
    fn the_tenant_reads_back_from_a_record_broken_after_it() {
        let mut buf = Vec::new();
        encode_into("acme", &sample(), &mut buf);
        assert_eq!(peek_tenant(&buf), Some("acme"));
        // Cut right after the tenant: the event is gone, the tenant is still there.
        let cut = 1 + 1 + "acme".len();
        assert!(decode(&buf[..cut]).is_err());
        assert_eq!(peek_tenant(&buf[..cut]), Some("acme"));
        assert_eq!(peek_tenant(&buf[..cut - 1]), None);
        assert_eq!(peek_tenant(&[]), None);
        assert_eq!(
            peek_tenant(&[2, 4, b'a', b'c', b'm', b'e']),
            None,
            "unknown version"
        );
        assert_eq!(peek_tenant(&[1, 0]), None, "empty tenant");
        let mut long = Vec::new();
        encode_into(&"t".repeat(65), &sample(), &mut long);
        assert_eq!(peek_tenant(&long), None, "longer than a tenant can be");
    }

    #[test]
    fn versions_and_trailing_bytes_are_checked() {
        assert_eq!(decode(&[]).err(), Some(WireError::Empty));
        assert_eq!(decode(&[7, 0]).err(), Some(WireError::UnknownVersion(7)));
        let mut buf = Vec::new();
        encode_into("t", &sample(), &mut buf);
        buf.push(0);
        assert!(matches!(decode(&buf), Err(WireError::Malformed(_))));
    }

    fn sample() -> Event<'static> {
        Event {
            ..Event::new("m", EventId::Generated(5), 1, 1.0)
        }
    }
}
