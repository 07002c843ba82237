//! Breakdowns on the ClickHouse store, printing figures for `bench/RESULTS.md`: the
//! hour of `raw_bench` (default 12 M events) committed through `ClickhouseStore`'s
//! batches into a fresh database, then the same breakdowns timed (each run `RUNS`
//! times). The database is dropped at the end, unless `KEEP_DATABASE` is set;
//! `REUSE_DATABASE=NAME` times a kept one again (the same EVENTS) without inserting.
//!
//! `cargo run --release -p ais-store --features clickhouse --example clickhouse_bench --
//! URL [EVENTS] [RUNS]` (URL: `http://127.0.0.1:8123`).

use std::time::Instant;

use ais_store::clickhouse::{ClickhouseConfig, ClickhouseStore};
use ais_store::prelude::*;

mod common;

use common::{anyhow_free, batch_commit, BATCH};

#[tokio::main]
async fn main() -> anyhow_free::Result {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: clickhouse_bench URL [EVENTS] [RUNS]")?;
    let number = |text: Option<String>, default: u64| -> Result<u64, String> {
        text.map(|text| {
            text.parse()
                .map_err(|_| format!("expected a count, got {text:?}"))
        })
        .transpose()
        .map(|count| count.unwrap_or(default))
    };
    let total = number(args.next(), 12_000_000)?;
    let runs = number(args.next(), 3)?;
    let reused = std::env::var("REUSE_DATABASE").ok();
    let database = reused
        .clone()
        .unwrap_or_else(|| format!("ais_bench_{}", std::process::id()));
    let config = ClickhouseConfig::from_url(&format!(
        "{}/?database={database}",
        url.trim_end_matches('/')
    ))
    .map_err(|e| e.to_string())?;
    ais_store::clickhouse::migrate(&config)
        .await
        .map_err(|e| e.to_string())?;
    let store = ClickhouseStore::connect(config)
        .await
        .map_err(|e| e.to_string())?;

    let started = Instant::now();
    // A reused database holds its events already (the same EVENTS, by its name).
    let mut next = if reused.is_some() { total } else { 0 };
    while next < total {
        let count = BATCH.min(total - next);
        store
            .commit(batch_commit(next, count, total))
            .await
            .map_err(|e| e.to_string())?;
        next += count;
    }
    println!(
        "commit through ClickhouseStore (generate + decode + RowBinary INSERT): {:.0} events/s",
        total as f64 / started.elapsed().as_secs_f64()
    );
    for run in 1..=runs {
        println!("run {run} of {runs}:");
        common::breakdown_scan(&store, total).await?;
    }
    if std::env::var_os("KEEP_DATABASE").is_some() || reused.is_some() {
        println!("kept database {database}");
        return Ok(());
    }
    clickhouse::Client::default()
        .with_url(&url)
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .map_err(|e| e.to_string())
}
