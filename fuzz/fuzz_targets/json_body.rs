//! Raw bytes as a JSON body: never a panic; accepted events are valid.
#![no_main]

mod common;

use ais_model::decode::{decode_events, BodyFormat};
use ais_model::price::PriceTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let prices = PriceTable::with_defaults();
    if let Ok(decoded) = decode_events(body, BodyFormat::Json, &common::context(&prices)) {
        common::check(&decoded);
    }
});
