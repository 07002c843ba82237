//! Raw bytes as a record of the dead-letter topic (anything can be produced to it):
//! never a panic; what decodes re-encodes to a letter that decodes the same.
#![no_main]

use ais_model::dead_letter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(letter) = dead_letter::decode(bytes) {
        let again = dead_letter::encode(&letter);
        assert_eq!(dead_letter::decode(&again), Ok(letter));
    }
});
