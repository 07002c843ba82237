//! Measures `decode_events` throughput on a synthetic batch (the goal is 1M events/s on
//! two cores, so about 500k events/s on one): `cargo run --release -p ais-model --example
//! decode_throughput`.

use std::time::Instant;

use ais_model::decode::{decode_events, BodyFormat, ValidationContext};
use ais_model::price::PriceTable;

const EVENTS_PER_BODY: usize = 10_000;
const ROUNDS: usize = 50;

fn body(format: BodyFormat, with_event_id: bool) -> Vec<u8> {
    let now = 1_795_339_620_000_i64;
    let events: Vec<String> = (0..EVENTS_PER_BODY)
        .map(|i| {
            let id = if with_event_id {
                format!(r#""event_id":"evt-{i:016}","#)
            } else {
                String::new()
            };
            format!(
                r#"{{{id}"timestamp":{},"model":"gpt-4o-mini","provider":"openai","operation":"chat","latency_ms":{}.25,"ttft_ms":140.5,"input_tokens":{},"output_tokens":{},"status":"ok","user_id":"user-{}","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","region":"eu-west-1","attributes":{{"team":"search","env":"prod"}}}}"#,
                now - i as i64,
                100 + i % 900,
                500 + i % 300,
                50 + i % 200,
                i % 1000
            )
        })
        .collect();
    match format {
        BodyFormat::Json => format!("[{}]", events.join(",")).into_bytes(),
        BodyFormat::Ndjson => events.join("\n").into_bytes(),
    }
}

fn main() {
    let prices = PriceTable::with_defaults();
    let context = ValidationContext {
        now_ms: 1_795_339_620_000,
        max_age_ms: 7 * 24 * 3_600_000,
        max_future_ms: 300_000,
        max_events: EVENTS_PER_BODY,
        prices: &prices,
    };
    for (name, format, with_event_id) in [
        ("json array, client ids", BodyFormat::Json, true),
        ("json array, generated ids", BodyFormat::Json, false),
        ("ndjson, client ids", BodyFormat::Ndjson, true),
    ] {
        let bytes = body(format, with_event_id);
        let started = Instant::now();
        let mut accepted = 0;
        for _ in 0..ROUNDS {
            match decode_events(&bytes, format, &context) {
                Ok(decoded) => accepted += decoded.events.len(),
                Err(error) => {
                    eprintln!("{name}: {error}");
                    return;
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{name}: {:.0} events/s on one core ({} bytes/event, {accepted} accepted)",
            accepted as f64 / seconds,
            bytes.len() / EVENTS_PER_BODY
        );
    }
}
