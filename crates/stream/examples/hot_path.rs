//! The single-node pipeline's CPU stages, one after the other on one batch of events:
//! JSON decode and validation (ingest), the log record (wire encode), the stream's
//! roll-up (wire decode, dedup, sketches, the default dimension rollups, the usage
//! ledger), the raw-event columns (wire decode again, Arrow builders) and their Parquet
//! encoding. Prints each stage's time per event.
//!
//! `cargo run --release -p ais-stream --example hot_path -- [EVENTS]` (default 20,000).
//! Under `valgrind --tool=callgrind`, each stage is one function (`stage_…`), so the
//! instructions per stage per event are stable whatever else the machine runs:
//! `bench/instructions.sh` does that, and checks the counts against a baseline.
//!
//! The events have the shape `ais loadgen` sends: a client event id, 5 models, 100,000
//! users, tokens, latency and time to first token, 1% errors, one attribute.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use ais_model::decode::{decode_events, BodyFormat, Decoded, ValidationContext};
use ais_model::price::PriceTable;
use ais_model::wire;
use ais_rollup::dimensions::DimensionRollupConfig;
use ais_rollup::usage::UsageConfig;
use ais_store::raw::file::{writer_properties, BATCH_FILE};
use ais_store::raw::HourColumns;
use ais_store::LoggedRecord;
use ais_stream::batch::{roll_up, BatchOutput, RollUpPlan};
use ais_stream::dedup::{Dedup, DedupConfig};
use ais_stream::watermark::Watermark;
use arrow_array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// Half past an hour: every event of the batch is in one hour, so one file.
const NOW_MS: i64 = 1_795_343_400_000;
const TENANT: &str = "acme";
const MODELS: [&str; 5] = [
    "gpt-4o-mini",
    "gpt-4o",
    "claude-3-5-sonnet",
    "llama-3.1-70b",
    "mistral-large",
];

fn body(events: usize) -> String {
    let mut rng = StdRng::seed_from_u64(7);
    let mut body = String::with_capacity(events * 360);
    body.push('[');
    for index in 0..events {
        if index > 0 {
            body.push(',');
        }
        let output_tokens = rng.random_range(10..800u32);
        let latency_ms = 300.0 + 12.0 * f64::from(output_tokens);
        let failed = rng.random_bool(0.01);
        let _ = write!(
            body,
            r#"{{"event_id":"lg-5f3a-{index}","timestamp":{},"model":"{}","provider":"loadgen","operation":"chat","latency_ms":{latency_ms:.3},"ttft_ms":{:.3},"input_tokens":{},"output_tokens":{output_tokens},"user_id":"user-{}","status":"{}"{},"attributes":{{"feature":"f{}"}}}}"#,
            NOW_MS - rng.random_range(0..5_000),
            MODELS[index % MODELS.len()],
            latency_ms * 0.1,
            rng.random_range(50..4_000u32),
            rng.random_range(0..100_000u32),
            if failed { "error" } else { "ok" },
            if failed {
                r#","error_type":"rate_limited""#
            } else {
                ""
            },
            rng.random_range(0..30u8),
        );
    }
    body.push(']');
    body
}

#[inline(never)]
fn stage_decode_json<'a>(body: &'a [u8], context: &ValidationContext<'_>) -> Decoded<'a> {
    decode_events(body, BodyFormat::Json, context).expect("the body is valid JSON")
}

#[inline(never)]
fn stage_wire_encode(decoded: &Decoded<'_>) -> Vec<Bytes> {
    let mut buffer = Vec::new();
    decoded
        .events
        .iter()
        .map(|event| {
            buffer.clear();
            wire::encode_into(TENANT, event, &mut buffer);
            Bytes::copy_from_slice(&buffer)
        })
        .collect()
}

#[inline(never)]
fn stage_roll_up(records: &[Bytes], usage: &UsageConfig) -> BatchOutput {
    let mut dedup = Dedup::new(DedupConfig::default());
    let watermark = Watermark::new(120_000, 10_000, i64::MIN);
    let plan = RollUpPlan {
        dimensions: &DimensionRollupConfig::default(),
        usage,
        // As for the embedded store, whose commit builds them from the records.
    };
    roll_up(records, 0, &mut dedup, &watermark, &plan, NOW_MS)
}

#[inline(never)]
fn stage_raw_columns(records: &[LoggedRecord]) -> HourColumns {
    HourColumns::of_records(0, records).expect("records this example encoded")
}

#[inline(never)]
fn stage_parquet_encode(batch: &RecordBatch) -> usize {
    let properties = writer_properties(BATCH_FILE).expect("valid properties");
    let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(properties))
        .expect("an in-memory writer");
    writer.write(batch).expect("the batch encodes");
    writer.into_inner().expect("the file closes").len()
}

fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|text| text.parse().ok())
        .unwrap_or(20_000);
    let body = body(events);
    let prices = PriceTable::with_defaults();
    let context = ValidationContext {
        now_ms: NOW_MS,
        max_age_ms: 7 * 24 * 3_600_000,
        max_future_ms: 300_000,
        max_events: events,
        prices: &prices,
        payload_max_bytes: None,
    };
    let usage = UsageConfig::default();
    let per_event = |started: Instant| started.elapsed().as_nanos() as f64 / events as f64;

    let started = Instant::now();
    let decoded = stage_decode_json(body.as_bytes(), &context);
    let decode_ns = per_event(started);
    assert_eq!(decoded.events.len(), events, "every event is accepted");

    let started = Instant::now();
    let records = stage_wire_encode(&decoded);
    let encode_ns = per_event(started);

    let started = Instant::now();
    let output = black_box(stage_roll_up(&records, &usage));
    let roll_up_ns = per_event(started);
    assert_eq!(output.counts.events, events as u64, "every event rolls up");

    let started = Instant::now();
    let columns = stage_raw_columns(&output.events);
    let columns_ns = per_event(started);
    let batch = columns
        .single()
        .expect("the events' columns, all in one hour");
    let started = Instant::now();
    let bytes = stage_parquet_encode(batch);
    let parquet_ns = per_event(started);

    println!(
        "{events} events of {} bytes of JSON each",
        body.len() / events
    );
    for (stage, ns) in [
        ("decode_json", decode_ns),
        ("wire_encode", encode_ns),
        ("roll_up", roll_up_ns),
        ("raw_columns", columns_ns),
        ("parquet_encode", parquet_ns),
    ] {
        println!("{stage:>16}: {ns:8.0} ns/event");
    }
    println!("parquet: {:.1} bytes/event", bytes as f64 / events as f64);
}
