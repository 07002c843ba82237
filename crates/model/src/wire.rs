//! The binary encoding of one event record in the log (embedded WAL or Kafka value).
//!
//! Version 4 (written for events with a payload): version 3's layout, then the event's
//! `input` and `output` (`Option<&str>` each). An event without a payload is still
//! written as version 3, byte for byte as before.
//!
//! Version 3 (written): one byte `0x03`, then the postcard encoding of the tenant
//! (`&str`: a varint length and UTF-8 bytes), the event's `key` and `reservation_id`
//! (`Option<&str>` each: a 0 or 1 byte, then the string), followed by the postcard
//! encoding of [`Event`]'s own fields in field order. `model` is the event's first
//! field, so [`peek_key`] reads (tenant, model) without decoding the rest. Postcard is
//! compact (varints, no field names) and decodes with borrowed strings, so the stream
//! allocates nothing per field. The fields a record's front carries are the ones that
//! are not the sender's measurement of the call (who sent it, what it settles), so new
//! ones of that kind extend the front and leave the event's layout alone.
//!
//! Version 2 (still read): one byte `0x02`, the tenant and the event, without `key` and
//! `reservation_id`, which decode as absent.
//!
//! Version 1 (still read): version 2's layout without `reasoning_output_tokens` and
//! `cache_creation_input_tokens`, which a version-1 record decodes as absent. Postcard
//! carries no field names, so every change to [`Event`]'s fields is a new version here,
//! and records already in a log or a dead-letter queue keep decoding as the version
//! they were written in. Upgrade readers (the stream) before writers (ingest): an older
//! reader sends a newer record to the dead-letter queue as an unknown version, from
//! where it can be replayed once the reader is upgraded.
use std::borrow::Cow;

use serde::Deserialize;

use crate::event::borrowed;
use crate::{Event, EventId, Status};

/// Version byte of the first encoding, without the reasoning and cache-creation counts.
pub const VERSION_1: u8 = 1;
/// Version byte of the encoding without `key` and `reservation_id`.
pub const VERSION_2: u8 = 2;
/// Version byte of the encoding of an event without a payload.
pub const VERSION_3: u8 = 3;
/// Version byte of the encoding of an event with a payload (`input`, `output`).
pub const VERSION_4: u8 = 4;

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
    encode_keyed(tenant, event.key.as_deref(), event, out);
}

/// Appends the encoding of `(tenant, event)` with `key` in place of the event's own:
/// how ingest stamps the request's key on events it did not build.
pub fn encode_keyed(tenant: &str, key: Option<&str>, event: &Event<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    let front = (tenant, key, event.reservation_id.as_deref());
    // Serializing strings, numbers, options and sized sequences into a Vec cannot fail;
    // should it ever, the partial record is removed rather than left half-written.
    let encoded = if event.input.is_none() && event.output.is_none() {
        out.push(VERSION_3);
        postcard::to_extend(&(front, event), AppendTo(out)).is_ok()
    } else {
        out.push(VERSION_4);
        let payload = (event.input.as_deref(), event.output.as_deref());
        postcard::to_extend(&(front, event, payload), AppendTo(out)).is_ok()
    };
    if !encoded {
        debug_assert!(encoded, "postcard failed to encode an event");
        out.truncate(start);
    }
}

/// The version byte and what follows it. Every version starts with the tenant, and
/// `model` follows it or (version 3) the key and reservation after it.
fn split_version(bytes: &[u8]) -> Result<(u8, &[u8]), WireError> {
    let (&version, rest) = bytes.split_first().ok_or(WireError::Empty)?;
    if !(VERSION_1..=VERSION_4).contains(&version) {
        return Err(WireError::UnknownVersion(version));
    }
    Ok((version, rest))
}

fn malformed(error: postcard::Error) -> WireError {
    WireError::Malformed(error.to_string())
}

/// Decodes one record, borrowing strings from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<(&str, Event<'_>), WireError> {
    let (version, rest) = split_version(bytes)?;
    type Front<'b> = (&'b str, Option<&'b str>, Option<&'b str>);
    let ((tenant, event), trailing): ((&str, Event<'_>), &[u8]) = match version {
        VERSION_1 => {
            let ((tenant, event), trailing): ((&str, EventV1<'_>), &[u8]) =
                postcard::take_from_bytes(rest).map_err(malformed)?;
            ((tenant, event.into()), trailing)
        }
        VERSION_2 => postcard::take_from_bytes(rest).map_err(malformed)?,
        VERSION_4 => {
            type Payload<'b> = (Option<&'b str>, Option<&'b str>);
            let (((tenant, key, reservation_id), mut event, (input, output)), trailing): (
                (Front<'_>, Event<'_>, Payload<'_>),
                &[u8],
            ) = postcard::take_from_bytes(rest).map_err(malformed)?;
            event.key = key.map(Cow::Borrowed);
            event.reservation_id = reservation_id.map(Cow::Borrowed);
            event.input = input.map(Cow::Borrowed);
            event.output = output.map(Cow::Borrowed);
            ((tenant, event), trailing)
        }
        _ => {
            let (((tenant, key, reservation_id), mut event), trailing): (
                (Front<'_>, Event<'_>),
                &[u8],
            ) = postcard::take_from_bytes(rest).map_err(malformed)?;
            event.key = key.map(Cow::Borrowed);
            event.reservation_id = reservation_id.map(Cow::Borrowed);
            ((tenant, event), trailing)
        }
    };
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
    let (version, rest) = split_version(bytes)?;
    let (tenant, mut rest): (&str, &[u8]) = postcard::take_from_bytes(rest).map_err(malformed)?;
    if version >= VERSION_3 {
        // The key and the reservation, before the event.
        (_, rest) =
            postcard::take_from_bytes::<(Option<&str>, Option<&str>)>(rest).map_err(malformed)?;
    }
    let (model, _): (&str, &[u8]) = postcard::take_from_bytes(rest).map_err(malformed)?;
    Ok((tenant, model))
}

/// Reads the tenant from the front of a record of any known version, however broken the rest is:
/// who may see a record the stream could not process. `None` when even the tenant does
/// not decode (or is empty or longer than a tenant can be).
pub fn peek_tenant(bytes: &[u8]) -> Option<&str> {
    let (_, rest) = split_version(bytes).ok()?;
    let (tenant, _): (&str, &[u8]) = postcard::take_from_bytes(rest).ok()?;
    let plausible = !tenant.is_empty() && tenant.len() <= crate::event::limits::TENANT_BYTES;
    plausible.then_some(tenant)
}

/// [`Event`] as version 1 laid it out: the same fields in the same order, without
/// `reasoning_output_tokens` and `cache_creation_input_tokens`. Frozen: it describes
/// bytes already written, so it never changes with [`Event`].
#[derive(Deserialize)]
struct EventV1<'a> {
    #[serde(borrow, deserialize_with = "borrowed::cow")]
    model: Cow<'a, str>,
    #[serde(borrow)]
    event_id: EventId<'a>,
    timestamp_ms: i64,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    response_model: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    provider: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    operation: Option<Cow<'a, str>>,
    latency_ms: f64,
    ttft_ms: Option<f64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cost_micros: Option<u64>,
    status: Status,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    error_type: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    trace_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    span_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    endpoint: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::option")]
    region: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "borrowed::pairs")]
    attributes: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> From<EventV1<'a>> for Event<'a> {
    fn from(v1: EventV1<'a>) -> Self {
        Event {
            model: v1.model,
            event_id: v1.event_id,
            timestamp_ms: v1.timestamp_ms,
            response_model: v1.response_model,
            provider: v1.provider,
            operation: v1.operation,
            latency_ms: v1.latency_ms,
            ttft_ms: v1.ttft_ms,
            input_tokens: v1.input_tokens,
            output_tokens: v1.output_tokens,
            reasoning_output_tokens: None,
            cache_read_input_tokens: v1.cache_read_input_tokens,
            cache_creation_input_tokens: None,
            cost_micros: v1.cost_micros,
            status: v1.status,
            error_type: v1.error_type,
            user_id: v1.user_id,
            session_id: v1.session_id,
            trace_id: v1.trace_id,
            span_id: v1.span_id,
            endpoint: v1.endpoint,
            region: v1.region,
            attributes: v1.attributes,
            key: None,
            reservation_id: None,
            input: None,
            output: None,
        }
    }
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
            strings in proptest::collection::vec(optional_text(), 14),
            latency_ms in float(),
            ttft_ms in proptest::option::of(float()),
            tokens in proptest::collection::vec(proptest::option::of(any::<u64>()), 6),
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
                reasoning_output_tokens: tokens[4],
                cache_read_input_tokens: tokens[2],
                cache_creation_input_tokens: tokens[5],
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
                key: owned(&strings[10]),
                reservation_id: owned(&strings[11]),
                input: owned(&strings[12]),
                output: owned(&strings[13]),
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

    /// A version-1 record as builds before version 2 wrote it (every field set), hex.
    const VERSION_1_RECORD: &str = "010461636d65066770742d346f00026531c0baa4a9c06801116770742d346f2d323032342d30382d303601066f70656e6169010463686174000000000064894001000000000090614001e807016401900301b81701010774696d656f757401017501017301017401017001016501017201047465616d06736561726368";

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn version_1_records_still_decode_without_the_newer_counts() {
        let bytes = unhex(VERSION_1_RECORD);
        let (tenant, event) = decode(&bytes).expect("a version-1 record decodes");
        assert_eq!(tenant, "acme");
        assert_eq!(peek_key(&bytes), Ok(("acme", "gpt-4o")));
        assert_eq!(peek_tenant(&bytes), Some("acme"));
        let want = Event {
            response_model: Some(Cow::Borrowed("gpt-4o-2024-08-06")),
            provider: Some(Cow::Borrowed("openai")),
            operation: Some(Cow::Borrowed("chat")),
            ttft_ms: Some(140.5),
            input_tokens: Some(1000),
            output_tokens: Some(100),
            cache_read_input_tokens: Some(400),
            cost_micros: Some(3000),
            status: Status::Error,
            error_type: Some(Cow::Borrowed("timeout")),
            user_id: Some(Cow::Borrowed("u")),
            session_id: Some(Cow::Borrowed("s")),
            trace_id: Some(Cow::Borrowed("t")),
            span_id: Some(Cow::Borrowed("p")),
            endpoint: Some(Cow::Borrowed("e")),
            region: Some(Cow::Borrowed("r")),
            attributes: vec![(Cow::Borrowed("team"), Cow::Borrowed("search"))],
            ..Event::new(
                "gpt-4o",
                EventId::Client(Cow::Borrowed("e1")),
                1_795_339_620_000,
                812.5,
            )
        };
        assert_eq!(event, want);
        assert_eq!(event.reasoning_output_tokens, None);
        assert_eq!(event.cache_creation_input_tokens, None);
        // A version-2 record carries the newer counts, without a key or a reservation.
        let counts = Event {
            reasoning_output_tokens: Some(30),
            cache_creation_input_tokens: Some(200),
            ..want
        };
        let mut v2 = vec![VERSION_2];
        v2.extend(postcard::to_allocvec(&("acme", &counts)).expect("encodes"));
        assert_eq!(decode(&v2).expect("v2").1, counts);
        assert_eq!(peek_key(&v2), Ok(("acme", "gpt-4o")));
        // The same event written today is a version-3 record carrying both.
        let newer = Event {
            key: Some(Cow::Borrowed("ci")),
            reservation_id: Some(Cow::Borrowed("r-1")),
            input: None,
            output: None,
            ..counts.clone()
        };
        let mut buf = Vec::new();
        encode_into("acme", &newer, &mut buf);
        assert_eq!(buf[0], VERSION_3);
        assert_eq!(decode(&buf).expect("v3").1, newer);
        assert_eq!(peek_key(&buf), Ok(("acme", "gpt-4o")));
        // Ingest stamps the request's key over whatever the event held.
        let mut stamped = Vec::new();
        encode_keyed("acme", Some("k-1"), &newer, &mut stamped);
        assert_eq!(decode(&stamped).expect("v3").1.key.as_deref(), Some("k-1"));
        // With a payload, version 4: the same front and event, then the payload.
        let with_payload = Event {
            input: Some(Cow::Borrowed("[EMAIL] asked")),
            output: Some(Cow::Borrowed("an answer")),
            ..newer.clone()
        };
        let mut v4 = Vec::new();
        encode_into("acme", &with_payload, &mut v4);
        assert_eq!(v4[0], VERSION_4);
        assert_eq!(decode(&v4).expect("v4").1, with_payload);
        assert_eq!(peek_key(&v4), Ok(("acme", "gpt-4o")));
        // Without one, the bytes of version 3.
        assert_eq!(buf[0], VERSION_3);
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
            peek_tenant(&[9, 4, b'a', b'c', b'm', b'e']),
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
        assert_eq!(decode(&[5, 0]).err(), Some(WireError::UnknownVersion(5)));
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
