//! Payload redaction over arbitrary text: every built-in rule and a custom one run on
//! whatever the bytes read as, without panicking, and what comes back holds every
//! placeholder it added and never grows past the text plus its placeholders.
#![no_main]

use std::sync::OnceLock;

use ais_model::redact::Redactor;
use libfuzzer_sys::fuzz_target;

fn redactor() -> &'static Redactor {
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();
    REDACTOR.get_or_init(|| {
        Redactor::new(None, &[("ticket".to_string(), "TICKET-[0-9]+".to_string())])
            .expect("the rules compile")
    })
}

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let mut replaced = 0u64;
    let out = redactor().redact(&text, |_, count| replaced += count);
    // Each replacement swaps at least one character for a placeholder of at most 8.
    assert!(out.len() <= text.len() + 8 * replaced as usize);
    if replaced == 0 {
        assert_eq!(out, text);
    }
});
