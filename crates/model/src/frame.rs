//! The frame of the embedded write-ahead log, and the `[u32 length][record]*` framing of
//! records inside it: encoder and decoder, no I/O, so the decoder can be fuzzed alone.
//!
//! ```text
//! magic u32 "AISW" | payload length u32 | crc32c u32 | first offset u64 | record count u32 | payload
//! ```
//! All little-endian; the CRC covers first offset, count and payload.

/// "AISW" little-endian.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"AISW");
pub const FRAME_HEADER_BYTES: usize = 24;
/// Largest payload of one frame. A request is at most 16 MiB of JSON, whose encoding
/// is smaller; anything larger in a header is corruption, not a frame.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024 * 1024;

/// Iterator over `[u32 length][bytes]` framed records; stops at the first short frame.
pub struct RecordIter<'a> {
    rest: &'a [u8],
}

impl<'a> RecordIter<'a> {
    pub fn new(framed: &'a [u8]) -> Self {
        Self { rest: framed }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (length, rest) = self.rest.split_first_chunk::<4>()?;
        let length = u32::from_le_bytes(*length) as usize;
        if rest.len() < length {
            self.rest = &[];
            return None;
        }
        let (record, rest) = rest.split_at(length);
        self.rest = rest;
        Some(record)
    }
}

/// Header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub first_offset: u64,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("payload length {0} is over the limit")]
    TooLong(u32),
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("payload holds {found} records, header says {declared}")]
    Count { declared: u32, found: u32 },
}

fn crc_of(header_tail: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header_tail), payload)
}

/// Parses the frame at the start of `bytes`: `Ok(None)` when `bytes` is too short to
/// hold it (a torn tail, or more to read), else the header and the frame's total length.
/// Never panics, whatever the input.
pub fn parse_frame(bytes: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
    let Some(header) = bytes.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let magic = word(0);
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let payload_len = word(4);
    if payload_len as usize > MAX_FRAME_PAYLOAD {
        return Err(FrameError::TooLong(payload_len));
    }
    let total = FRAME_HEADER_BYTES + payload_len as usize;
    let Some(payload) = bytes.get(FRAME_HEADER_BYTES..total) else {
        return Ok(None);
    };
    let stored = word(8);
    let computed = crc_of(&header[12..FRAME_HEADER_BYTES], payload);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&header[12..20]);
    let count = word(20);
    let found = RecordIter::new(payload).count() as u32;
    let framed_len: usize = RecordIter::new(payload)
        .map(|record| record.len() + 4)
        .sum();
    if found != count || framed_len != payload.len() {
        return Err(FrameError::Count {
            declared: count,
            found,
        });
    }
    Ok(Some((
        FrameHeader {
            payload_len,
            crc: stored,
            first_offset: u64::from_le_bytes(first),
            count,
        },
        total,
    )))
}

/// Appends one frame holding `payload` (`count` framed records) at `first_offset`.
pub fn encode_frame(first_offset: u64, count: u32, payload: &[u8], out: &mut Vec<u8>) {
    let mut tail = [0u8; 12];
    tail[..8].copy_from_slice(&first_offset.to_le_bytes());
    tail[8..].copy_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    // Bounded by MAX_FRAME_PAYLOAD, checked before a batch is queued.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc_of(&tail, payload).to_le_bytes());
    out.extend_from_slice(&tail);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn framed(records: &[Vec<u8>]) -> Vec<u8> {
        let mut payload = Vec::new();
        for record in records {
            payload.extend_from_slice(&(record.len() as u32).to_le_bytes());
            payload.extend_from_slice(record);
        }
        payload
    }

    proptest! {
        #[test]
        fn frames_round_trip_and_any_flip_is_caught(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..10),
            first in any::<u64>(),
            flip in any::<usize>(),
        ) {
            let payload = framed(&records);
            let mut frame = Vec::new();
            encode_frame(first, records.len() as u32, &payload, &mut frame);
            let (header, total) = parse_frame(&frame).expect("valid").expect("complete");
            prop_assert_eq!(total, frame.len());
            prop_assert_eq!(header.first_offset, first);
            prop_assert_eq!(header.count as usize, records.len());
            let parsed: Vec<&[u8]> = RecordIter::new(&frame[FRAME_HEADER_BYTES..]).collect();
            prop_assert_eq!(parsed, records.iter().map(Vec::as_slice).collect::<Vec<_>>());
            // Every prefix is incomplete, never an error or a panic.
            for cut in 0..frame.len() {
                prop_assert_eq!(parse_frame(&frame[..cut]).ok(), Some(None));
            }
            // Any single flipped bit is detected (magic, length, CRC or payload).
            let at = flip % frame.len();
            frame[at] ^= 1 << (flip % 8);
            prop_assert!(!matches!(parse_frame(&frame), Ok(Some((_, t))) if t == total));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_frame(&bytes);
            let _ = RecordIter::new(&bytes).count();
        }
    }
}
