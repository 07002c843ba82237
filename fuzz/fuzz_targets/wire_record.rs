//! Raw bytes as a log record: never a panic; what decodes re-encodes to the same bytes.
#![no_main]

use ais_model::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|record: &[u8]| {
    let _ = wire::peek_key(record);
    if let Ok((tenant, event)) = wire::decode(record) {
        let mut again = Vec::new();
        wire::encode_into(tenant, &event, &mut again);
        let (tenant_again, event_again) = wire::decode(&again).expect("re-encoding decodes");
        assert_eq!(tenant_again, tenant);
        assert_eq!(event_again, event);
    }
});
