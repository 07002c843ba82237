//! The usage ledger (`crate::usage`) in ClickHouse: one row per (tenant, scope, day,
//! value, batch), written just before the batch's commit INSERT and counted like the
//! batch's rollups, only once its marker exists and no newer claim voids it
//! (`super::fencing`). A replay of the batch replaces its rows (same key, `FINAL`).
//!
//! Reads sum the counted rows per value. An export reads one day at a time, so the
//! server groups at most one day's values per query.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{failed, ClickhouseStore};
use crate::usage::{
    conditions, stored_value, value_from_stored, SpendAnswer, SpendDialect, SpendQuery,
    UsageCounts, UsageQuery, UsageRanking, UsageRow, UsageRows, UsageTop, ValueSpend,
    EXPORT_CHUNKS_AHEAD, EXPORT_CHUNK_ROWS,
};
use crate::{BatchCommit, StoreError};

#[derive(Debug, Row, Serialize)]
struct UsageRowOut<'a> {
    tenant: &'a str,
    scope: &'a str,
    day_ms: i64,
    kind: u8,
    value: &'a str,
    log_partition: u32,
    first_offset: u64,
    next_offset: u64,
    requests: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_input_tokens: u64,
    cost_micros: u64,
    written_ms: u64,
}

/// One value's sums as a read gives them; `tenant` is `''` in reads that do not group
/// by it (selected under another name: an alias `tenant` would stand for the column in
/// the `WHERE` too, as ClickHouse resolves aliases there; rows are read by position).
#[derive(Debug, Row, Deserialize)]
struct SumsIn {
    tenant: String,
    kind: u8,
    value: String,
    requests: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_input_tokens: u64,
    cost_micros: u64,
}

const SUMS: &str = "sum(requests) AS requests, sum(errors) AS errors,
    sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
    sum(cache_read_input_tokens) AS cache_read_input_tokens, sum(cost_micros) AS cost_micros";

impl SumsIn {
    /// (tenant, value, counts).
    fn into_parts(self) -> (String, Option<String>, UsageCounts) {
        (
            self.tenant,
            value_from_stored(self.kind, self.value),
            UsageCounts {
                requests: self.requests,
                errors: self.errors,
                input_tokens: self.input_tokens,
                output_tokens: self.output_tokens,
                cache_read_input_tokens: self.cache_read_input_tokens,
                cost_micros: self.cost_micros,
            },
        )
    }
}

/// One value's spend as a budget's read gives it.
#[derive(Debug, Row, Deserialize)]
struct SpendIn {
    value: String,
    day_micros: u64,
    day_tokens: u64,
    month_micros: u64,
    month_tokens: u64,
    share: f64,
}

const SPEND_DIALECT: SpendDialect = SpendDialect {
    sum_if: |condition, column| format!("sum(if({condition}, {column}, 0))"),
    // `greatest` takes two arguments on old servers.
    greatest: |terms| {
        let mut terms = terms.iter();
        let first = terms.next().cloned().unwrap_or_else(|| "0.0".to_string());
        terms.fold(first, |all, term| format!("greatest({all}, {term})"))
    },
    ratio: |column, limit| format!("{column} / {limit}"),
};

fn bind_all(mut query: clickhouse::query::Query, binds: &[String]) -> clickhouse::query::Query {
    for value in binds {
        query = query.bind(value.as_str());
    }
    query
}

impl ClickhouseStore {
    /// Writes a batch's usage rows, tagged with its offsets and claim.
    pub(super) async fn insert_usage(&self, batch: &BatchCommit) -> Result<(), StoreError> {
        if batch.usage.is_empty() {
            return Ok(());
        }
        let written_ms = self.row_version(batch.partition);
        let refused = failed("refused the usage ledger");
        let mut insert = self
            .client
            .insert::<UsageRowOut<'_>>("usage")
            .await
            .map_err(&refused)?;
        for (key, counts) in &batch.usage {
            let (kind, value) = stored_value(key.value.as_deref());
            let row = UsageRowOut {
                tenant: &key.tenant,
                scope: &key.scope,
                day_ms: key.day_ms,
                kind,
                value,
                log_partition: batch.partition,
                first_offset: batch.first_offset,
                next_offset: batch.next_offset,
                requests: counts.requests,
                errors: counts.errors,
                input_tokens: counts.input_tokens,
                output_tokens: counts.output_tokens,
                cache_read_input_tokens: counts.cache_read_input_tokens,
                cost_micros: counts.cost_micros,
                written_ms,
            };
            insert.write(&row).await.map_err(&refused)?;
        }
        insert.end().await.map_err(&refused)
    }

    /// The top groups of `query` and its total, over counted rows. The total is read
    /// after the groups (see `crate::usage` on why that keeps groups + other = total).
    pub(super) async fn usage_top(
        &self,
        query: UsageQuery,
        ranking: UsageRanking,
    ) -> Result<UsageTop, StoreError> {
        let unreadable = failed("could not read the usage ledger");
        let counted = self.fencing().await?.counted(query.from_day_ms);
        let (conditions, binds) = conditions(&query);
        let groups = bind_all(
            self.client.query(&format!(
                "SELECT '' AS no_tenant, kind, value, {SUMS} FROM usage FINAL WHERE {conditions}{counted}
                 GROUP BY kind, value {}",
                ranking.sql()
            )),
            &binds,
        )
        .fetch_all::<SumsIn>()
        .await
        .map_err(&unreadable)?;
        let total = bind_all(
            self.client.query(&format!(
                "SELECT '' AS no_tenant, 0 AS no_kind, '' AS no_value, {SUMS} FROM usage FINAL WHERE {conditions}{counted}"
            )),
            &binds,
        )
        .fetch_optional::<SumsIn>()
        .await
        .map_err(&unreadable)?
        .map_or_else(UsageCounts::default, |row| row.into_parts().2);
        let since_ms: Option<i64> = self
            .client
            .query("SELECT since_ms FROM usage_since ORDER BY since_ms LIMIT 1")
            .fetch_optional::<i64>()
            .await
            .map_err(failed("could not read when usage counting began"))?;
        Ok(UsageTop {
            groups: groups
                .into_iter()
                .map(|row| {
                    let (_, value, counts) = row.into_parts();
                    (value, counts)
                })
                .collect(),
            total,
            since_ms,
        })
    }

    /// A budget's spend (`crate::usage::SpendQuery`) over counted rows.
    pub(super) async fn budget_spend_of(
        &self,
        query: SpendQuery,
    ) -> Result<SpendAnswer, StoreError> {
        let counted = self
            .fencing()
            .await?
            .counted(query.month_from_ms.min(query.day_ms));
        let rows = bind_all(
            self.client
                .query(&query.sql(&SPEND_DIALECT, "usage FINAL", &counted)),
            &query.binds(),
        )
        .fetch_all::<SpendIn>()
        .await
        .map_err(failed(
            "could not read a budget's spend from the usage ledger",
        ))?;
        let values = rows
            .into_iter()
            .map(|row| {
                debug_assert!(row.share >= 0.0);
                ValueSpend {
                    value: row.value,
                    day_micros: row.day_micros,
                    day_tokens: row.day_tokens,
                    month_micros: row.month_micros,
                    month_tokens: row.month_tokens,
                }
            })
            .collect();
        Ok(query.answer(values))
    }

    /// Streams every (day, tenant, value) row of `query`, a day per query.
    pub(super) async fn usage_export(&self, query: UsageQuery) -> Result<UsageRows, StoreError> {
        let unreadable = failed("could not export the usage ledger");
        let counted = self.fencing().await?.counted(query.from_day_ms);
        let (conditions, binds) = conditions(&query);
        let days: Vec<i64> = bind_all(
            self.client.query(&format!(
                "SELECT DISTINCT day_ms FROM usage WHERE {conditions} ORDER BY day_ms"
            )),
            &binds,
        )
        .fetch_all::<i64>()
        .await
        .map_err(&unreadable)?;
        let client = self.client.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(EXPORT_CHUNKS_AHEAD);
        tokio::spawn(async move {
            let export = async {
                for day_ms in days {
                    let mut cursor = bind_all(
                        client.query(&format!(
                            "SELECT tenant, kind, value, {SUMS} FROM usage FINAL
                             WHERE {conditions} AND day_ms = {day_ms}{counted}
                             GROUP BY tenant, kind, value
                             ORDER BY tenant, kind, value"
                        )),
                        &binds,
                    )
                    .fetch::<SumsIn>()
                    .map_err(&unreadable)?;
                    let mut chunk = Vec::with_capacity(EXPORT_CHUNK_ROWS);
                    while let Some(row) = cursor.next().await.map_err(&unreadable)? {
                        let (tenant, value, counts) = row.into_parts();
                        chunk.push(UsageRow {
                            tenant,
                            day_ms,
                            value,
                            counts,
                        });
                        if chunk.len() == EXPORT_CHUNK_ROWS {
                            let full = std::mem::replace(
                                &mut chunk,
                                Vec::with_capacity(EXPORT_CHUNK_ROWS),
                            );
                            if sender.send(Ok(full)).await.is_err() {
                                // The reader went away.
                                return Ok(());
                            }
                        }
                    }
                    if !chunk.is_empty() && sender.send(Ok(chunk)).await.is_err() {
                        return Ok(());
                    }
                }
                Ok::<(), StoreError>(())
            };
            if let Err(error) = export.await {
                let _ = sender.send(Err(error)).await;
            }
        });
        Ok(receiver)
    }
}
