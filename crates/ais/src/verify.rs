//! `ais verify`: checks the ledger (`ais_store::ledger`) of a store and exits non-zero
//! on any drift, naming it.
//!
//! - Every (tenant, hour, partition) must balance: accepted = committed + duplicates +
//!   dead_lettered.
//! - On a single node (`--data-dir`, the node stopped or not), every partition's
//!   ledger must account for every record below its position: nothing read was lost or
//!   counted twice.
//!
//! `--clickhouse URL` checks the distributed store's hours (its positions are not
//! covered: retention there deletes ledger rows without keeping their sums).

use std::path::PathBuf;

use ais_store::ledger::{LedgerQuery, LedgerRow};
use ais_store::sqlite::SqliteStore;
use ais_store::QueryStore;
use anyhow::{bail, Context};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Data directory of a single node (`ais serve --data-dir`).
    #[arg(long, env = "AIS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// ClickHouse of the distributed pipeline: http://[USER:PASSWORD@]HOST:PORT/?database=NAME
    #[cfg(feature = "clickhouse")]
    #[arg(long, env = "AIS_CLICKHOUSE", conflicts_with = "data_dir")]
    pub clickhouse: Option<String>,
}

/// Every hour of every tenant.
fn everything() -> LedgerQuery {
    LedgerQuery {
        tenant: None,
        from_ms: i64::MIN,
        to_ms: i64::MAX,
    }
}

/// A drift line for each row that does not balance.
fn unbalanced(rows: &[LedgerRow]) -> Vec<String> {
    rows.iter()
        .filter(|row| !row.counts.balanced())
        .map(|row| {
            let counts = &row.counts;
            format!(
                "drift: tenant {:?}, hour {}, partition {}: accepted {}, committed {}, duplicates {}, dead_lettered {}",
                row.tenant,
                ais_model::time::format_rfc3339_ms(row.hour_ms),
                row.partition,
                counts.accepted,
                counts.committed,
                counts.duplicates,
                counts.dead_lettered
            )
        })
        .collect()
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (rows, mut drift) = runtime.block_on(async {
        #[cfg(feature = "clickhouse")]
        if let Some(url) = &args.clickhouse {
            let config = ais_store::clickhouse::ClickhouseConfig::from_url(url)?;
            let store = ais_store::clickhouse::ClickhouseStore::connect(config)
                .await
                .with_context(|| format!("cannot use ClickHouse at {url}"))?;
            let rows = store.ledger(everything()).await?;
            return Ok::<_, anyhow::Error>((rows, Vec::new()));
        }
        let Some(dir) = &args.data_dir else {
            bail!("nothing to verify: pass --data-dir DIR or --clickhouse URL");
        };
        let path = dir.join("ais.sqlite");
        if !path.exists() {
            bail!("no store at {}", path.display());
        }
        let store = SqliteStore::open(&path)
            .with_context(|| format!("cannot open the store at {}", path.display()))?;
        let rows = store.ledger(everything()).await?;
        let coverage: Vec<String> = store
            .ledger_coverage()
            .await?
            .into_iter()
            .filter(|partition| partition.accounted != partition.position)
            .map(|partition| {
                format!(
                    "drift: partition {}: the ledger accounts for {} records, the position is {}",
                    partition.partition, partition.accounted, partition.position
                )
            })
            .collect();
        Ok((rows, coverage))
    })?;
    drift.extend(unbalanced(&rows));
    for line in &drift {
        println!("{line}");
    }
    let hours: std::collections::BTreeSet<(&str, i64)> = rows
        .iter()
        .map(|row| (row.tenant.as_str(), row.hour_ms))
        .collect();
    if !drift.is_empty() {
        bail!("{} drift(s) in the ledger", drift.len());
    }
    println!(
        "ledger balanced: {} hour(s) of {} tenant(s), {} row(s)",
        hours.len(),
        hours
            .iter()
            .map(|(tenant, _)| *tenant)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        rows.len()
    );
    Ok(())
}
