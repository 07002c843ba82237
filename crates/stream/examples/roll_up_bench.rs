//! The stream's CPU cost per event: batches of wire records rolled up per (tenant,
//! model, minute), with and without the default dimension rollups and the usage ledger
//! (its default scopes and `attr.feature`). Prints events per second of one core for
//! each.
//!
//! `cargo run --release -p ais-stream --example roll_up_bench -- [EVENTS]`
//! (default 2,000,000). The events carry the breakdowns benchmark's shape: 3 tenants,
//! 5 models, 50 endpoints, 8 regions, 100,000 users, an `attr.feature` of 30 values,
//! 2% errors, timestamps at 1,000,000 events a minute (so a batch spans seconds, as
//! at the seed rate), up to 5 s out of order.

use std::borrow::Cow;
use std::time::Instant;

use ais_model::{wire, Event, EventId, Status};
use ais_rollup::dimensions::DimensionRollupConfig;
use ais_rollup::usage::{UsageConfig, UsageScope};
use ais_stream::batch::{roll_up, RollUpPlan};
use ais_stream::dedup::{Dedup, DedupConfig};
use ais_stream::watermark::Watermark;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BATCH: usize = 65_536;
const T0: i64 = 1_795_341_600_000;

fn records(count: usize) -> Vec<Bytes> {
    let mut rng = StdRng::seed_from_u64(1);
    (0..count)
        .map(|n| {
            let mut event = Event::new(
                format!("model-{}", rng.random_range(0..5u8)),
                EventId::Generated(n as u128 + 1),
                // The seed rate, 1M events a minute, a few seconds out of order.
                T0 + (n as i64) * 60 / 1_000 + rng.random_range(0..5_000),
                f64::from(rng.random_range(50..5_000u32)),
            );
            event.provider = Some(Cow::Borrowed("openai"));
            event.operation = Some(Cow::Borrowed("chat"));
            event.endpoint = Some(Cow::Owned(format!("/v1/e{}", rng.random_range(0..50u8))));
            event.region = Some(Cow::Owned(format!("region-{}", rng.random_range(0..8u8))));
            event.user_id = Some(Cow::Owned(format!(
                "user-{}",
                rng.random_range(0..100_000u32)
            )));
            event.attributes = vec![(
                Cow::Borrowed("feature"),
                Cow::Owned(format!("feature-{}", rng.random_range(0..30u8))),
            )];
            event.ttft_ms = Some(f64::from(rng.random_range(10..800u32)));
            event.input_tokens = Some(rng.random_range(10..4_000));
            event.output_tokens = Some(rng.random_range(10..1_000));
            event.cost_micros = Some(rng.random_range(10..10_000));
            if rng.random_bool(0.02) {
                event.status = Status::Error;
                event.error_type = Some(Cow::Borrowed("rate_limited"));
            }
            let tenant = ["acme", "globex", "initech"][n % 3];
            let mut bytes = Vec::new();
            wire::encode_into(tenant, &event, &mut bytes);
            Bytes::from(bytes)
        })
        .collect()
}

fn run(records: &[Bytes], dimensions: &DimensionRollupConfig, usage: &UsageConfig) -> (f64, usize) {
    let mut dedup = Dedup::new(DedupConfig::default());
    let watermark = Watermark::new(120_000, 10_000, i64::MIN);
    let started = Instant::now();
    let mut partials = 0;
    for (index, batch) in records.chunks(BATCH).enumerate() {
        let output = roll_up(
            batch,
            (index * BATCH) as u64,
            &mut dedup,
            &watermark,
            &RollUpPlan { dimensions, usage },
            120_000,
        );
        partials += output.partials.len() + output.dimensions.len() + output.usage.len();
    }
    (started.elapsed().as_secs_f64(), partials)
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|text| text.parse().ok())
        .unwrap_or(2_000_000);
    let records = records(count);
    let none = DimensionRollupConfig {
        dimensions: Vec::new(),
        ..DimensionRollupConfig::default()
    };
    let default = DimensionRollupConfig::default();
    let no_usage = UsageConfig { scopes: Vec::new() };
    let mut usage = UsageConfig::default();
    usage
        .scopes
        .push(UsageScope::Attribute("feature".to_string()));
    let runs = [
        ("without dimension rollups or usage", &none, &no_usage),
        ("with the default dimensions", &default, &no_usage),
        (
            "with the default dimensions and usage (default scopes, attr.feature)",
            &default,
            &usage,
        ),
    ];
    // One warm-up pass of each, then the measured ones.
    for (_, dimensions, usage) in runs {
        run(&records[..records.len().min(BATCH)], dimensions, usage);
    }
    for (name, dimensions, usage) in runs {
        let (seconds, partials) = run(&records, dimensions, usage);
        println!(
            "{name}: {count} events in {seconds:.2} s = {:.0} events/s on one core, {partials} partials",
            count as f64 / seconds
        );
    }
}
