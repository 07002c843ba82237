//! Raw bytes as write-ahead log frames: never a panic; a parsed frame's records fill its
//! payload exactly, and re-encoding gives the same bytes.
#![no_main]

use ais_model::frame::{encode_frame, parse_frame, RecordIter, FRAME_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let mut rest = bytes;
    while let Ok(Some((header, total))) = parse_frame(rest) {
        let payload = &rest[FRAME_HEADER_BYTES..total];
        assert_eq!(RecordIter::new(payload).count(), header.count as usize);
        let mut again = Vec::new();
        encode_frame(header.first_offset, header.count, payload, &mut again);
        assert_eq!(&again[..], &rest[..total]);
        rest = &rest[total..];
    }
});
