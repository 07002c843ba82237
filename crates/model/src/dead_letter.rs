//! Dead letters: log records the stream processor cannot process, kept with the
//! reason, where they came from and their original bytes, so that they can be
//! inspected and re-driven (`GET /v1/dlq`, `POST /v1/dlq/replay`).
//!
//! A letter is named by its source, the (partition, offset) of the record in the events
//! log ([`LetterId`]). The distributed stream produces a letter to `<topic>.dlq` before
//! it commits the batch that skips the record; a crash between the two writes the
//! letter again on replay, under the same id, so readers keep one copy per id.
//!
//! [`encode`] and [`decode`] are a letter as one record of the dead-letter topic: a
//! version byte `0x01`, then the [postcard](https://postcard.jamesmunns.com/wire-format)
//! encoding of the source partition (varint u32) and offset (varint u64), the reason
//! label, the detail, the tenant (option), the time it was dead-lettered (zigzag varint
//! unix ms) and the original record (varint length + bytes). Anything can be produced
//! to a topic, so [`decode`] treats its input as hostile: it is fuzzed
//! (`fuzz/fuzz_targets/dead_letter.rs`) and checks every field's bounds.
//!
//! The queue that holds letters is owned here too, as traits without I/O (`queue`):
//! [`DeadLetterSink`] (the stream delivers), [`DeadLetterSource`] (the query API
//! reads, by [`DeadLetterQuery`] into a [`LetterPage`]) and their one error,
//! [`DeadLetterError`]. The engines implement them in their own crates.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::event::limits;
use crate::wire::{self, WireError};

mod queue;

pub use queue::{DeadLetterError, DeadLetterQuery, DeadLetterSink, DeadLetterSource, LetterPage};

/// Version byte of the current letter encoding.
pub const LETTER_VERSION_1: u8 = 1;

/// Longest `detail` kept: the message says what broke, never the whole record (the
/// record is kept beside it).
pub const MAX_DETAIL_BYTES: usize = 1024;

/// Why a record became a dead letter: a closed set, so it can label a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not a record of any wire version: empty, truncated, trailing bytes, broken
    /// fields, non-finite durations.
    Undecodable,
    /// A wire version this build does not know (written by a newer `ais`): upgrade the
    /// stream processors, then replay.
    UnsupportedVersion,
    /// Decodes, but breaks a v1 rule ([`crate::decode::validate_logged`]).
    Invalid,
    /// Decodes and is valid, yet the store refused every write that held it, while it
    /// accepted others.
    Poison,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 4] = [
        Reason::Undecodable,
        Reason::UnsupportedVersion,
        Reason::Invalid,
        Reason::Poison,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Invalid => "invalid",
            Self::Poison => "poison",
        }
    }

    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == label)
    }

    /// The reason for a record the wire decoder refused.
    pub fn of_wire_error(error: &WireError) -> Self {
        match error {
            WireError::UnknownVersion(_) => Self::UnsupportedVersion,
            WireError::Empty | WireError::Malformed(_) => Self::Undecodable,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Where a dead letter's record was in the events log; its identity. Written
/// `PARTITION:OFFSET` (`0:1234`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LetterId {
    pub partition: u32,
    pub offset: u64,
}

impl fmt::Display for LetterId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.partition, self.offset)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a dead-letter id is PARTITION:OFFSET in decimal (e.g. 0:1234), found {0:?}")]
pub struct LetterIdError(pub String);

impl FromStr for LetterId {
    type Err = LetterIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || LetterIdError(text.chars().take(48).collect());
        let (partition, offset) = text.split_once(':').ok_or_else(refuse)?;
        // Digits only: `parse` alone would take a leading `+`.
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(partition) || !digits(offset) {
            return Err(refuse());
        }
        Ok(Self {
            partition: partition.parse().map_err(|_| refuse())?,
            offset: offset.parse().map_err(|_| refuse())?,
        })
    }
}

/// One record the stream could not process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: LetterId,
    pub reason: Reason,
    /// What was wrong, as the decoder, the validation or the store said it.
    pub detail: String,
    /// The tenant read from the front of the record, when it decodes
    /// ([`wire::peek_tenant`]): a tenant's key sees only its own letters.
    pub tenant: Option<String>,
    /// When the stream dead-lettered it, unix ms.
    pub dead_at_ms: i64,
    /// The record as it was in the log, byte for byte: what a replay appends again.
    pub record: Vec<u8>,
}

impl DeadLetter {
    /// A letter for `record`, its tenant read from the record and `detail` cut to
    /// [`MAX_DETAIL_BYTES`].
    pub fn new(id: LetterId, reason: Reason, detail: &str, record: &[u8], dead_at_ms: i64) -> Self {
        Self {
            id,
            reason,
            detail: truncate(detail, MAX_DETAIL_BYTES).to_string(),
            tenant: wire::peek_tenant(record).map(str::to_string),
            dead_at_ms,
            record: record.to_vec(),
        }
    }
}

/// The longest prefix of `text` of at most `max_bytes` that ends on a char boundary.
fn truncate(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The encoded fields, borrowed from the letter or from the bytes decoded.
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    partition: u32,
    offset: u64,
    reason: &'a str,
    detail: &'a str,
    #[serde(borrow)]
    tenant: Option<&'a str>,
    dead_at_ms: i64,
    #[serde(with = "serde_bytes")]
    record: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LetterError {
    #[error("empty dead-letter record")]
    Empty,
    #[error("unknown dead-letter record version {0}")]
    UnknownVersion(u8),
    #[error("malformed dead-letter record: {0}")]
    Malformed(String),
}

/// Appends the encoding of `letter` to `out`.
pub fn encode_into(letter: &DeadLetter, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(LETTER_VERSION_1);
    let envelope = Envelope {
        partition: letter.id.partition,
        offset: letter.id.offset,
        reason: letter.reason.as_str(),
        detail: &letter.detail,
        tenant: letter.tenant.as_deref(),
        dead_at_ms: letter.dead_at_ms,
        record: &letter.record,
    };
    // Encoding integers, strings and bytes into a Vec cannot fail; should it ever, the
    // partial record is removed rather than left half-written.
    let encoded = postcard::to_extend(&envelope, wire::AppendTo(out)).is_ok();
    if !encoded {
        debug_assert!(encoded, "postcard failed to encode a dead letter");
        out.truncate(start);
    }
}

/// The encoding of `letter`.
pub fn encode(letter: &DeadLetter) -> Vec<u8> {
    let mut out = Vec::with_capacity(letter.record.len() + letter.detail.len() + 64);
    encode_into(letter, &mut out);
    out
}

/// Decodes one dead-letter record; refuses unknown versions and reasons, fields over
/// their bounds and trailing bytes.
pub fn decode(bytes: &[u8]) -> Result<DeadLetter, LetterError> {
    let (&version, rest) = bytes.split_first().ok_or(LetterError::Empty)?;
    if version != LETTER_VERSION_1 {
        return Err(LetterError::UnknownVersion(version));
    }
    let (envelope, trailing): (Envelope<'_>, &[u8]) = postcard::take_from_bytes(rest)
        .map_err(|error| LetterError::Malformed(error.to_string()))?;
    if !trailing.is_empty() {
        return Err(LetterError::Malformed(format!(
            "{} unexpected bytes after the letter",
            trailing.len()
        )));
    }
    let reason = Reason::parse(envelope.reason).ok_or_else(|| {
        LetterError::Malformed(format!(
            "unknown reason {:?}",
            truncate(envelope.reason, 32)
        ))
    })?;
    if envelope.detail.len() > MAX_DETAIL_BYTES {
        return Err(LetterError::Malformed(format!(
            "detail longer than {MAX_DETAIL_BYTES} bytes"
        )));
    }
    if let Some(tenant) = envelope.tenant {
        if tenant.is_empty() || tenant.len() > limits::TENANT_BYTES {
            return Err(LetterError::Malformed(format!(
                "tenant must be 1 to {} bytes",
                limits::TENANT_BYTES
            )));
        }
    }
    Ok(DeadLetter {
        id: LetterId {
            partition: envelope.partition,
            offset: envelope.offset,
        },
        reason,
        detail: envelope.detail.to_string(),
        tenant: envelope.tenant.map(str::to_string),
        dead_at_ms: envelope.dead_at_ms,
        record: envelope.record.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Event, EventId};

    fn letter() -> DeadLetter {
        let mut record = Vec::new();
        wire::encode_into(
            "acme",
            &Event::new("", EventId::Generated(7), 1, 1.0),
            &mut record,
        );
        DeadLetter::new(
            LetterId {
                partition: 2,
                offset: 41,
            },
            Reason::Invalid,
            "model: must not be empty",
            &record,
            1_795_339_620_000,
        )
    }

    #[test]
    fn a_letter_round_trips_and_knows_its_tenant() {
        let letter = letter();
        assert_eq!(letter.tenant.as_deref(), Some("acme"));
        assert_eq!(decode(&encode(&letter)), Ok(letter));
    }

    #[test]
    fn ids_print_and_parse_strictly() {
        let id = LetterId {
            partition: 3,
            offset: 18_446_744_073_709_551_615,
        };
        assert_eq!(id.to_string(), "3:18446744073709551615");
        assert_eq!(id.to_string().parse::<LetterId>(), Ok(id));
        for bad in [
            "",
            "3",
            ":1",
            "3:",
            "+3:1",
            "3:-1",
            "3:1:2",
            " 3:1",
            "3:1x",
            "4294967296:1",
        ] {
            assert!(bad.parse::<LetterId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reasons_have_distinct_labels_that_parse_back() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::parse("bogus"), None);
        assert_eq!(
            Reason::of_wire_error(&WireError::UnknownVersion(2)),
            Reason::UnsupportedVersion
        );
        assert_eq!(
            Reason::of_wire_error(&WireError::Empty),
            Reason::Undecodable
        );
    }

    #[test]
    fn details_are_cut_on_a_char_boundary() {
        let detail = "é".repeat(MAX_DETAIL_BYTES);
        let letter = DeadLetter::new(
            LetterId {
                partition: 0,
                offset: 0,
            },
            Reason::Undecodable,
            &detail,
            b"\x07garbage",
            0,
        );
        assert!(letter.detail.len() <= MAX_DETAIL_BYTES);
        assert!(letter.detail.len() >= MAX_DETAIL_BYTES - 1);
        assert_eq!(letter.tenant, None);
        assert_eq!(decode(&encode(&letter)), Ok(letter));
    }

    #[test]
    fn the_encoding_is_the_documented_one() {
        // Version, partition 0, offset 7, "undecodable", the detail, no tenant, time 0,
        // the 3-byte record: what other readers of the topic rely on.
        let letter = DeadLetter::new(
            LetterId {
                partition: 0,
                offset: 7,
            },
            Reason::Undecodable,
            "malformed log record: unexpected end",
            &[1, 255, 255],
            0,
        );
        let mut expected = vec![1, 0, 7, 11];
        expected.extend_from_slice(b"undecodable");
        expected.push(36);
        expected.extend_from_slice(b"malformed log record: unexpected end");
        expected.extend_from_slice(&[0, 0, 3, 1, 255, 255]);
        assert_eq!(encode(&letter), expected);
        let mut with_tenant = letter.clone();
        with_tenant.tenant = Some("t".to_string());
        with_tenant.dead_at_ms = -1;
        let encoded = encode(&with_tenant);
        let tail = &encoded[expected.len() - 6..];
        assert_eq!(
            tail,
            [1, 1, b't', 1, 3, 1, 255, 255],
            "option, string, zigzag"
        );
    }

    #[test]
    fn broken_envelopes_are_errors() {
        assert_eq!(decode(&[]), Err(LetterError::Empty));
        assert_eq!(decode(&[9, 0]), Err(LetterError::UnknownVersion(9)));
        let mut bytes = encode(&letter());
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(LetterError::Malformed(_))));
        let mut unknown = letter();
        unknown.detail = String::new();
        let mut bytes = encode(&unknown);
        // The reason label sits after two one-byte varints and its own length byte.
        let at = 1 + 1 + 1 + 1;
        bytes[at] = b'X';
        assert!(matches!(decode(&bytes), Err(LetterError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_letters_round_trip(
            partition in any::<u32>(),
            offset in any::<u64>(),
            reason in 0usize..4,
            detail in "\\PC{0,80}",
            record in proptest::collection::vec(any::<u8>(), 0..200),
            dead_at_ms in any::<i64>(),
        ) {
            let letter = DeadLetter::new(
                LetterId { partition, offset },
                Reason::ALL[reason],
                &detail,
                &record,
                dead_at_ms,
            );
            prop_assert_eq!(decode(&encode(&letter)), Ok(letter));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(letter) = decode(&bytes) {
                // What decodes re-encodes to a letter that decodes the same.
                prop_assert_eq!(decode(&encode(&letter)), Ok(letter));
            }
        }
    }
}
