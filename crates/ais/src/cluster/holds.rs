//! The budget holds of the distributed pipeline, shared in Redis
//! (`ais_serve::book::shared`): `ais query` and `ais gateway` reserve against them,
//! `ais stream` settles them as its batches land. Each server is given the same
//! `--redis` (or the config file's `redis`); the holds are kept under a prefix named
//! after the ClickHouse database, so two deployments may share one Redis.

use std::sync::Arc;
use std::time::Duration;

use ais_evaluate::budget::BudgetConfig;
use ais_rollup::usage::Settlement;
use ais_serve::book::shared::{SharedBook, SharedConfig, SharedHolds};
use ais_store::QueryStore;
use ais_stream::processor::{LandedUsage, Processor};
use anyhow::Context;

/// Longest wait for Redis per decision.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Batches of settlements waiting for Redis, at most; past it a batch's settlements
/// are dropped (counted), and their holds expire instead.
const SETTLEMENTS_QUEUED: usize = 1_024;

fn config(url: &str, database: &str) -> SharedConfig {
    SharedConfig {
        url: url.to_string(),
        prefix: SharedConfig::prefix_for(database),
        timeout: REDIS_TIMEOUT,
        refresh: SharedConfig::DEFAULT_REFRESH,
        max_age: SharedConfig::DEFAULT_MAX_AGE,
        max_holds: ais_serve::reserve::DEFAULT_MAX_HOLDS,
        max_values: ais_serve::reserve::DEFAULT_MAX_VALUES,
    }
}

/// The shared book of a reserving server: none without budgets or without Redis.
/// Reads the spend once before answering (a failure stops the start: a server that
/// cannot see spend must not grant holds), then keeps it fresh.
pub(crate) async fn reserving_book(
    redis: Option<&str>,
    database: &str,
    budgets: &[BudgetConfig],
    store: Arc<dyn QueryStore>,
) -> anyhow::Result<Option<Arc<SharedBook>>> {
    let Some(url) = redis.filter(|_| !budgets.is_empty()) else {
        return Ok(None);
    };
    let book = SharedBook::start(config(url, database), budgets.to_vec(), store)
        .await
        .with_context(|| format!("cannot keep the budget holds in Redis at {url}"))?;
    book.spawn_refresh();
    Ok(Some(book))
}

/// Has the stream settle the shared holds its landed batches name; unchanged without
/// budgets or without Redis (holds then expire on their own, and a warning says so).
pub(crate) fn settle_landed(
    processor: Processor,
    redis: Option<&str>,
    database: &str,
    budgets: &[BudgetConfig],
) -> anyhow::Result<Processor> {
    if budgets.is_empty() {
        return Ok(processor);
    }
    let Some(url) = redis else {
        tracing::warn!("budgets are configured but no --redis: the stream settles no shared holds, which last until they expire");
        return Ok(processor);
    };
    let holds = SharedHolds::connect(url, SharedConfig::prefix_for(database), REDIS_TIMEOUT)
        .with_context(|| format!("cannot settle budget holds in Redis at {url}"))?;
    for outcome in ["settled", "unknown", "failed", "dropped"] {
        metrics::counter!("ais_budget_settlements_total", "outcome" => outcome).increment(0);
    }
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<Settlement>>(SETTLEMENTS_QUEUED);
    tokio::spawn(async move {
        while let Some(settled) = receiver.recv().await {
            match holds.settle(&settled).await {
                Ok((found, unknown)) => {
                    metrics::counter!("ais_budget_settlements_total", "outcome" => "settled")
                        .increment(found);
                    metrics::counter!("ais_budget_settlements_total", "outcome" => "unknown")
                        .increment(unknown);
                }
                Err(error) => {
                    metrics::counter!("ais_budget_settlements_total", "outcome" => "failed")
                        .increment(settled.len() as u64);
                    tracing::warn!(%error, "cannot settle budget holds; they expire instead");
                }
            }
        }
    });
    // Called on the stream's thread once a batch's commit has landed: only then may its
    // holds stop counting.
    Ok(
        processor.with_usage_observer(Arc::new(move |landed: &LandedUsage| {
            if landed.settled.is_empty() {
                return;
            }
            if sender.try_send(landed.settled.clone()).is_err() {
                metrics::counter!("ais_budget_settlements_total", "outcome" => "dropped")
                    .increment(landed.settled.len() as u64);
            }
        })),
    )
}
