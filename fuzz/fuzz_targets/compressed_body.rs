//! Raw bytes as a gzip or zstd body: decompression stays within its limit (bombs hit
//! the limit, not memory) and never panics.
#![no_main]

mod common;

use ais_model::decode::{decode_events, decompress_into, BodyFormat, ContentEncoding};
use ais_model::price::PriceTable;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, body)) = input.split_first() else {
        return;
    };
    let encoding = if selector & 1 == 0 {
        ContentEncoding::Gzip
    } else {
        ContentEncoding::Zstd
    };
    let mut out = Vec::new();
    if decompress_into(body, encoding, LIMIT, &mut out).is_ok() {
        assert!(out.len() <= LIMIT);
        let prices = PriceTable::with_defaults();
        if let Ok(decoded) = decode_events(&out, BodyFormat::Json, &common::context(&prices)) {
            common::check(&decoded);
        }
    }
});
