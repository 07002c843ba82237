//! Raw bytes as an OTLP/HTTP protobuf export: never a panic; the scan's limits hold;
//! accepted events are valid.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    common::check_otlp(body, ais_model::otlp::OtlpEncoding::Protobuf);
});
