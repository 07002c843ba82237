//! Raw bytes as an OTLP/JSON export: never a panic; accepted events are valid.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    common::check_otlp(body, ais_model::otlp::OtlpEncoding::Json);
});
