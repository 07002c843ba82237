//! One evaluator pass over budgets of each user with `USERS` users (default 1,000,000)
//! in the usage ledger's current day, on the embedded store and, given a URL, on
//! ClickHouse: prints how long the pass takes (its spend read, the thresholds and the
//! commit of the state and alerts) for three budgets of each user:
//!
//! - `daily $1`: no user is near it (every user spends under $0.09 a day): the read
//!   groups every user of the day and returns none;
//! - `daily $0.10`: about 45% of the users are past its 50% threshold: the read stops
//!   at its bound (10,000 values) and 1,000 users start alerting (the bound of a pass);
//! - `monthly $1`: the month's days (`DAYS`, default 1, each with the same users) are
//!   summed per user.
//!
//! `cargo run --release -p ais-evaluate --example budget_pass_bench -- [USERS] [DAYS]
//! [CLICKHOUSE_URL]` (ClickHouse: a database `ais_budget_bench_<pid>`, left in place).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ais_evaluate::budget::{BudgetConfig, BudgetScope};
use ais_evaluate::evaluator::{Evaluator, EvaluatorConfig};
use ais_rollup::usage::{UsageCounts, UsageKey, UsageScope, DAY_MS};
use ais_rollup::RollupPartial;
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::{BatchCommit, RollupKey};

/// 2026-11-01T00:00:00Z: the month's first day.
const MONTH_MS: i64 = 1_793_491_200_000;
const ENTRIES_PER_BATCH: usize = 65_536;
const MINUTE_MS: i64 = 60_000;

fn batch(offset: u64, watermark_ms: i64, usage: Vec<(UsageKey, UsageCounts)>) -> BatchCommit {
    BatchCommit {
        partition: 0,
        first_offset: offset,
        next_offset: offset + 1,
        watermark_ms,
        partials: vec![(
            RollupKey {
                tenant: "acme".to_string(),
                model: "m".to_string(),
                minute_ms: watermark_ms - MINUTE_MS,
            },
            RollupPartial::new(),
        )],
        dedup: Vec::new(),
        events: Vec::new(),
        dead_letters: Vec::new(),
        dimensions: Default::default(),
        ledger: Vec::new(),
        usage,
    }
}

fn each_user(name: &str, daily_micros: Option<u64>, monthly_micros: Option<u64>) -> BudgetConfig {
    BudgetConfig {
        tenant: "acme".to_string(),
        model: None,
        scope: BudgetScope::Each(UsageScope::UserId),
        label: Some(name.to_string()),
        daily_usd_micros: daily_micros,
        monthly_usd_micros: monthly_micros,
        daily_tokens: None,
        monthly_tokens: None,
        thresholds: vec![50, 80, 100],
        forecast: None,
    }
}

async fn run(engine: &str, store: Arc<dyn Store>, users: usize, days: i64) {
    let today = MONTH_MS + (days - 1) * DAY_MS;
    let started = Instant::now();
    let mut offset = 0u64;
    for day in 0..days {
        let day_ms = MONTH_MS + day * DAY_MS;
        let mut user = 0usize;
        while user < users {
            let end = (user + ENTRIES_PER_BATCH).min(users);
            let usage = (user..end)
                .map(|n| {
                    (
                        UsageKey {
                            tenant: "acme".into(),
                            scope: "user_id".into(),
                            day_ms,
                            value: Some(format!("user-{n:07}")),
                        },
                        UsageCounts {
                            requests: 1,
                            input_tokens: 100,
                            output_tokens: 10,
                            cost_micros: 1 + (n as u64 * 7_919) % 90_000,
                            ..UsageCounts::default()
                        },
                    )
                })
                .collect();
            store
                .commit(batch(offset, day_ms + 10 * MINUTE_MS, usage))
                .await
                .expect("commit");
            offset += 1;
            user = end;
        }
    }
    println!(
        "{engine}: {users} users × {days} day(s) in the ledger in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let budgets = [
        each_user("daily $1", Some(1_000_000), None),
        each_user("daily $0.10", Some(100_000), None),
        each_user("monthly $1", None, Some(1_000_000)),
    ];
    for (index, budget) in budgets.into_iter().enumerate() {
        let name = budget.name();
        let evaluator = Evaluator::new(EvaluatorConfig {
            first_lookback: Duration::from_secs(600),
            budgets: vec![budget],
            sinks: vec!["webhook".to_string()],
            outbox_limit: 100_000,
            ..EvaluatorConfig::default()
        });
        // A minute more is final: the pass evaluates it and reads the ledger.
        let watermark = today + (11 + index as i64) * MINUTE_MS;
        store
            .commit(batch(offset, watermark, Vec::new()))
            .await
            .expect("commit");
        offset += 1;
        let started = Instant::now();
        evaluator.pass(store.as_ref()).await.expect("pass");
        let elapsed = started.elapsed();
        let queued = store
            .outbox_pending("webhook", 1_000_000)
            .await
            .expect("outbox")
            .len();
        println!(
            "{engine}: a pass over {name:<12} {:>8.3} s ({queued} alerts queued so far)",
            elapsed.as_secs_f64()
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let users: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let days: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let url = args.next();

    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    run("sqlite", Arc::new(sqlite), users, days).await;

    if let Some(url) = url {
        use ais_store::clickhouse::{ClickhouseConfig, ClickhouseStore};
        let database = format!("ais_budget_bench_{}", std::process::id());
        let config = ClickhouseConfig::from_url(&format!(
            "{}/?database={database}",
            url.trim_end_matches('/')
        ))
        .expect("ClickHouse URL");
        ais_store::clickhouse::migrate(&config)
            .await
            .expect("migrate");
        let store = ClickhouseStore::connect(config).await.expect("connect");
        run("clickhouse", Arc::new(store), users, days).await;
        println!("clickhouse: database {database} is left for inspection; drop it when done");
    }
}
