//! Writes seed inputs for the fuzz targets whose formats carry checksums or binary
//! encodings a fuzzer cannot guess: `cargo run -p ais-model --example fuzz_seeds -- fuzz/corpus`.

use std::borrow::Cow;
use std::path::Path;

use ais_model::frame::encode_frame;
use ais_model::{wire, Event, EventId, Status};

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".to_string());
    let root = Path::new(&root);
    let event = Event {
        provider: Some(Cow::Borrowed("openai")),
        ttft_ms: Some(140.0),
        input_tokens: Some(1200),
        output_tokens: Some(250),
        cost_micros: Some(5_500),
        status: Status::Error,
        error_type: Some(Cow::Borrowed("timeout")),
        user_id: Some(Cow::Borrowed("u-17")),
        attributes: vec![(Cow::Borrowed("team"), Cow::Borrowed("search"))],
        ..Event::new(
            "gpt-4o",
            EventId::Client(Cow::Borrowed("e-1")),
            1_795_339_620_000,
            812.0,
        )
    };
    let mut record = Vec::new();
    wire::encode_into("acme", &event, &mut record);
    std::fs::write(root.join("wire_record/event"), &record)?;
    let mut generated = Vec::new();
    wire::encode_into(
        "t",
        &Event::new("m", EventId::Generated(7), 0, 0.0),
        &mut generated,
    );
    std::fs::write(root.join("wire_record/minimal"), &generated)?;

    let mut payload = Vec::new();
    for item in [&record, &generated] {
        payload.extend_from_slice(&(item.len() as u32).to_le_bytes());
        payload.extend_from_slice(item);
    }
    let mut frames = Vec::new();
    encode_frame(0, 2, &payload, &mut frames);
    encode_frame(2, 0, &[], &mut frames);
    std::fs::write(root.join("wal_frame/two_frames"), &frames)?;

    let body =
        br#"[{"timestamp":1795339620000,"model":"gpt-4o","latency_ms":812,"input_tokens":3}]"#;
    let mut zstd = vec![1u8];
    zstd.extend(zstd::encode_all(&body[..], 3)?);
    std::fs::write(root.join("compressed_body/zstd"), &zstd)?;
    Ok(())
}
