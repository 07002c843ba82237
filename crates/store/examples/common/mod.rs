//! The data of the store's benchmarks: one hour at the seed rate in the breakdowns
//! benchmark's shape, and the breakdowns timed over it, shared by `raw_bench` (the
//! embedded store) and `clickhouse_bench` (ClickHouse).

use std::borrow::Cow;
use std::time::Instant;

use ais_model::dimension::{Dimension, Filter, Filters};
use ais_model::{wire, Event, EventId, Status};
use ais_store::{BatchCommit, BreakdownQuery, LoggedRecord, QueryStore};
use bytes::Bytes;

pub const BATCH: u64 = 65_536;
/// 2026-11-22T10:00:00Z.
pub const HOUR_START_MS: i64 = 1_795_341_600_000;
pub const MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "claude-sonnet",
    "llama-3-70b",
    "text-embedding-3",
];

pub const USERS: u64 = 100_000;
pub const REGIONS: [&str; 8] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-south-1",
    "ap-northeast-1",
    "sa-east-1",
    "ca-central-1",
];

/// A cheap deterministic mixer, so every run writes the same data.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Event `n` of `total` spread over one hour in arrival order; about two spans per
/// trace, 3 tenants, and the breakdowns benchmark's dimensions: 5 models, 50
/// endpoints, 8 regions, 100,000 users and an `attr.feature` of 30 values.
pub fn record(n: u64, total: u64) -> Bytes {
    let random = mix(n);
    let tenant = ["acme", "globex", "initech"][(random % 3) as usize];
    let input = 50 + random % 4_000;
    let output = 1 + (random >> 12) % 800;
    let event = Event {
        provider: Some(Cow::Borrowed("openai")),
        operation: Some(Cow::Borrowed("chat")),
        ttft_ms: Some(((random >> 20) % 900) as f64 + 20.0),
        input_tokens: Some(input),
        output_tokens: Some(output),
        cost_micros: Some(input * 3 + output * 10),
        status: if random.is_multiple_of(50) {
            Status::Error
        } else {
            Status::Ok
        },
        error_type: (random.is_multiple_of(50)).then_some(Cow::Borrowed("timeout")),
        user_id: Some(Cow::Owned(format!("user-{}", (random >> 24) % USERS))),
        trace_id: Some(Cow::Owned(format!("{:032x}", mix(n / 2)))),
        span_id: Some(Cow::Owned(format!("{:016x}", random))),
        endpoint: Some(Cow::Owned(format!("/v1/endpoint-{}", (random >> 41) % 50))),
        region: Some(Cow::Borrowed(REGIONS[((random >> 47) % 8) as usize])),
        attributes: vec![(
            Cow::Borrowed("feature"),
            Cow::Owned(format!("feature-{}", (random >> 51) % 30)),
        )],
        ..Event::new(
            MODELS[(random >> 8) as usize % MODELS.len()],
            EventId::Generated(u128::from(random) << 64 | u128::from(n)),
            HOUR_START_MS + (n as i128 * 3_600_000 / total as i128) as i64,
            ((random >> 30) % 5_000) as f64 + 100.0,
        )
    };
    let mut buffer = Vec::with_capacity(256);
    wire::encode_into(tenant, &event, &mut buffer);
    Bytes::from(buffer)
}

pub fn batch_records(first: u64, count: u64, total: u64) -> Vec<Bytes> {
    (first..first + count).map(|n| record(n, total)).collect()
}

/// Events `first..first + count` as the stream commits them (offsets = event numbers,
/// partition 0, no rollups).
pub fn batch_commit(first: u64, count: u64, total: u64) -> BatchCommit {
    BatchCommit {
        partition: 0,
        first_offset: first,
        next_offset: first + count,
        watermark_ms: 0,
        partials: Vec::new(),
        dedup: Vec::new(),
        events: batch_records(first, count, total)
            .into_iter()
            .zip(first..)
            .map(|(bytes, offset)| LoggedRecord { offset, bytes })
            .collect(),
        dead_letters: Vec::new(),
        dimensions: Default::default(),
        ledger: Vec::new(),
        usage: Vec::new(),
    }
}

pub mod anyhow_free {
    pub type Result = std::result::Result<(), String>;
}

/// The breakdowns of the hour (the scan path of `GET /v1/query/breakdown`), each timed
/// once: by `user_id` for one tenant and for every tenant, by `endpoint`, by
/// `attr.feature`, by `model` and `region`, and by `endpoint` with a filter on `region`.
pub async fn breakdown_scan(store: &impl QueryStore, total: u64) -> anyhow_free::Result {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let region_filter = Filters(vec![
        Filter::parse("region:eu-west-1|eu-central-1").map_err(|e| e.to_string())?
    ]);
    let cases: [(&str, Option<&str>, &[&str], Filters); 6] = [
        ("user_id", Some("acme"), &["user_id"], Filters::default()),
        ("user_id", None, &["user_id"], Filters::default()),
        ("endpoint", Some("acme"), &["endpoint"], Filters::default()),
        (
            "attr.feature",
            Some("acme"),
            &["attr.feature"],
            Filters::default(),
        ),
        (
            "model, region",
            Some("acme"),
            &["model", "region"],
            Filters::default(),
        ),
        (
            "endpoint, region in eu",
            Some("acme"),
            &["endpoint"],
            region_filter,
        ),
    ];
    for (label, tenant, by, filters) in cases {
        let by = by
            .iter()
            .map(|name| Dimension::parse(name).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let started = Instant::now();
        let grouper = store
            .breakdown(BreakdownQuery {
                tenant: tenant.map(str::to_string),
                from_ms: HOUR_START_MS,
                to_ms: HOUR_START_MS + 3_600_000,
                by,
                filters,
                step_ms: None,
                max_groups: 1_000_000,
                deadline: Instant::now() + std::time::Duration::from_secs(3_600),
            })
            .await
            .map_err(|e| e.to_string())?;
        let seconds = started.elapsed().as_secs_f64();
        let groups = grouper.len();
        let ranked = grouper.rank(ais_rollup::breakdown::OrderBy::Requests, false, 20);
        println!(
            "breakdown scan by {label} over the hour ({}): {:.2} s, {} groups, {} events matched, {:.0} events scanned/s ({:.0} per core, {cores} cores)",
            tenant.unwrap_or("every tenant"),
            seconds,
            groups,
            ranked.total.requests,
            total as f64 / seconds,
            total as f64 / seconds / cores as f64,
        );
    }
    Ok(())
}
