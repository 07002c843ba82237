//! The distributed store: ClickHouse over HTTP, with the official `clickhouse` crate.
//!
//! ClickHouse has no transactions, so a stream batch becomes exact in effect this way
//! (DESIGN.md, "Exactly-once effect"):
//! 1. The batch's first offset is checked against the stored position; a batch that
//!    does not continue it is refused and writes nothing.
//! 2. Raw events go to `events`, a `ReplacingMergeTree` keyed by (tenant, event_id):
//!    written again by a replay, an event is still one row. Each row keeps its
//!    (partition, offset).
//! 3. One INSERT into `rollups` carries every partial of the batch *and* the batch's
//!    marker row (tenant `''`) holding the new position and watermark. The table is not
//!    partitioned, so the INSERT is one part: all of it lands or none. This INSERT is
//!    the commit point.
//!
//! A crash before step 3 leaves raw rows that a replay rewrites; a crash after it
//! leaves a moved position, so the batch is not replayed. A replayed batch starts at
//! the same offset, so its partial rows replace the first attempt's rows of the same
//! key (the key ends in (partition, first offset)); queries read with `FINAL`.
//!
//! The stream's dedup window (client-set ids seen) is rebuilt from `events`, counting
//! only rows whose offset is below their partition's position: rows an unfinished
//! commit left behind are not mistaken for applied ones.
//!
//! Two processes must not write one partition at once: the consumer group assigns each
//! partition to one stream process, and the position check before every write refuses
//! a batch that another owner already moved past.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ais_model::time::minute_floor;
use ais_model::wire;
use ais_rollup::RollupPartial;
use async_trait::async_trait;
use clickhouse::{Client, RowOwned, RowWrite};

use crate::{
    AnomalyQuery, AnomalyRecord, AnomalyState, BatchCommit, CompactionReport, DedupEntry,
    EvaluationCommit, EventQuery, OutboxAlert, OutboxEntry, OutboxOutcome, PartitionState,
    Retention, RollupQuery, RollupRow, Store, StoreError, StoredEvent,
};

mod rows;
pub mod schema;

use rows::{
    AnomalyRow, DedupRow, EvaluationRow, EventRowIn, EventRowOut, OutboxRow, PartialRow,
    PositionRow, RollupRowOut, EVENT_COLUMNS,
};
pub use schema::{Dialect, SCHEMA_VERSION};

/// Where the store is and how it behaves.
#[derive(Debug, Clone)]
pub struct ClickhouseConfig {
    /// `http://host:port` of the HTTP interface.
    pub url: String,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// How far behind the newest client-set id, in event time, the dedup window is
    /// rebuilt from.
    pub dedup_horizon: Duration,
}

/// How long retention waits for ClickHouse to apply a delete mutation.
const MUTATION_PATIENCE: Duration = Duration::from_secs(120);

/// The database when the URL names none.
pub const DEFAULT_DATABASE: &str = "ais";

impl ClickhouseConfig {
    /// From `http://[user[:password]@]host:port[/][?database=NAME&user=U&password=P]`.
    pub fn from_url(text: &str) -> Result<Self, StoreError> {
        let invalid = |why: &str| {
            StoreError::Unavailable(format!(
                "invalid ClickHouse URL {text:?}: {why} (expected http://host:8123/?database=ais)"
            ))
        };
        let parsed = url::Url::parse(text).map_err(|error| invalid(&error.to_string()))?;
        if parsed.scheme() != "http" && parsed.scheme() != "https" {
            return Err(invalid("the scheme must be http or https"));
        }
        let host = parsed.host_str().ok_or_else(|| invalid("no host"))?;
        let mut database = DEFAULT_DATABASE.to_string();
        let mut user = (!parsed.username().is_empty()).then(|| parsed.username().to_string());
        let mut password = parsed.password().map(str::to_string);
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "database" => database = value.into_owned(),
                "user" => user = Some(value.into_owned()),
                "password" => password = Some(value.into_owned()),
                other => return Err(invalid(&format!("unknown parameter {other:?}"))),
            }
        }
        let valid_name = !database.is_empty()
            && database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(invalid("the database name must be letters, digits and _"));
        }
        let port = parsed.port_or_known_default().unwrap_or(8123);
        Ok(Self {
            url: format!("{}://{host}:{port}", parsed.scheme()),
            database,
            user,
            password,
            dedup_horizon: Duration::from_secs(3600),
        })
    }
}

/// What `ais migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub server_version: String,
    pub dialect: Dialect,
    pub from_version: u32,
    pub to_version: u32,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Seconds for a `DateTime` column, clamped to its range.
fn datetime_secs(ms: i64) -> u32 {
    u32::try_from(ms.div_euclid(1000).max(0)).unwrap_or(u32::MAX)
}

fn failed(context: &'static str) -> impl Fn(clickhouse::error::Error) -> StoreError {
    move |error| match error {
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => {
            StoreError::Unavailable(format!("ClickHouse {context}: {error}"))
        }
        other => StoreError::Backend(format!("ClickHouse {context}: {other}")),
    }
}

fn client_for(config: &ClickhouseConfig) -> Client {
    let mut client = Client::default()
        .with_url(&config.url)
        // Debian's 18.16 has no RowBinaryWithNamesAndTypes: rows go as plain
        // RowBinary, checked against the schema by the engine's tests instead.
        .with_validation(false);
    if let Some(user) = &config.user {
        client = client.with_user(user);
    }
    if let Some(password) = &config.password {
        client = client.with_password(password);
    }
    client
}

/// The server's version string.
async fn server_version(client: &Client) -> Result<String, StoreError> {
    client
        .query("SELECT version()")
        .fetch_one::<String>()
        .await
        .map_err(failed("is not reachable"))
}

/// Creates or upgrades the database and schema; idempotent.
pub async fn migrate(config: &ClickhouseConfig) -> Result<MigrationReport, StoreError> {
    let client = client_for(config);
    let version = server_version(&client).await?;
    let dialect = Dialect::for_version(&version);
    let migrations = schema::migrations(&config.database, dialect);
    let database = &config.database;
    let applied = applied_version(&client, database).await?;
    for (index, statements) in migrations.iter().enumerate() {
        let number = index as u32 + 1;
        if number <= applied {
            continue;
        }
        for statement in statements {
            client
                .query(statement)
                .execute()
                .await
                .map_err(failed("refused a schema statement"))?;
        }
        client
            .query(&format!(
                "INSERT INTO {database}.schema_migrations (version, applied_ms) VALUES (?, ?)"
            ))
            .bind(number)
            .bind(now_ms())
            .execute()
            .await
            .map_err(failed("did not record a migration"))?;
        tracing::info!(version = number, "ClickHouse schema migrated");
    }
    Ok(MigrationReport {
        server_version: version,
        dialect,
        from_version: applied,
        to_version: migrations.len() as u32,
    })
}

/// Migrations applied so far (0 when the database or table does not exist).
async fn applied_version(client: &Client, database: &str) -> Result<u32, StoreError> {
    let tables: u64 = client
        .query(
            "SELECT count() FROM system.tables WHERE database = ? AND name = 'schema_migrations'",
        )
        .bind(database)
        .fetch_one()
        .await
        .map_err(failed("could not list tables"))?;
    if tables == 0 {
        return Ok(0);
    }
    client
        .query(&format!(
            "SELECT toUInt32(max(version)) FROM {database}.schema_migrations"
        ))
        .fetch_one()
        .await
        .map_err(failed("could not read the schema version"))
}

pub struct ClickhouseStore {
    client: Client,
    config: ClickhouseConfig,
}

impl std::fmt::Debug for ClickhouseStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClickhouseStore")
            .field("url", &self.config.url)
            .field("database", &self.config.database)
            .finish()
    }
}

impl ClickhouseStore {
    /// Connects and checks that the schema is the one this binary writes; a missing or
    /// older schema is an error that says to run `ais migrate`.
    pub async fn connect(config: ClickhouseConfig) -> Result<Self, StoreError> {
        let client = client_for(&config);
        server_version(&client).await?;
        let applied = applied_version(&client, &config.database).await?;
        if applied < SCHEMA_VERSION {
            return Err(StoreError::Unavailable(format!(
                "ClickHouse database {} has schema version {applied}, this binary needs {SCHEMA_VERSION}: run `ais migrate --clickhouse URL` first",
                config.database
            )));
        }
        if applied > SCHEMA_VERSION {
            return Err(StoreError::Unavailable(format!(
                "ClickHouse database {} has schema version {applied}, newer than this binary's {SCHEMA_VERSION}: upgrade ais",
                config.database
            )));
        }
        let client = client.with_database(&config.database);
        Ok(Self { client, config })
    }

    /// The stored next offset of `partition` (0 when it has none).
    async fn position(&self, partition: u32) -> Result<u64, StoreError> {
        self.client
            .query("SELECT max(next_offset) FROM rollups WHERE tenant = '' AND model = '' AND log_partition = ?")
            .bind(partition)
            .fetch_one()
            .await
            .map_err(failed("could not read a position"))
    }

    async fn insert_events(&self, batch: &BatchCommit) -> Result<(), StoreError> {
        if batch.events.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<EventRowOut<'_>>("events")
            .await
            .map_err(failed("refused the raw events"))?;
        for record in &batch.events {
            let (tenant, event) = wire::decode(&record.bytes).map_err(|error| {
                StoreError::Malformed(format!(
                    "raw event at offset {} of partition {}: {error}",
                    record.offset, batch.partition
                ))
            })?;
            let row = EventRowOut::new(tenant, &event, batch.partition, record.offset);
            insert
                .write(&row)
                .await
                .map_err(failed("refused the raw events"))?;
        }
        insert.end().await.map_err(failed("refused the raw events"))
    }

    async fn insert_rollups(&self, batch: &BatchCommit) -> Result<(), StoreError> {
        let written_ms = u64::try_from(now_ms()).unwrap_or(0);
        let encoded: Vec<Vec<u8>> = batch
            .partials
            .iter()
            .map(|(_, partial)| partial.to_bytes())
            .collect();
        let mut insert = self
            .client
            .insert::<RollupRowOut<'_>>("rollups")
            .await
            .map_err(failed("refused the rollups"))?;
        for ((key, partial), bytes) in batch.partials.iter().zip(&encoded) {
            let row = RollupRowOut {
                tenant: &key.tenant,
                model: &key.model,
                minute: datetime_secs(key.minute_ms),
                log_partition: batch.partition,
                first_offset: batch.first_offset,
                next_offset: batch.next_offset,
                watermark_ms: batch.watermark_ms,
                requests: partial.requests,
                errors: partial.errors,
                input_tokens: partial.input_tokens,
                output_tokens: partial.output_tokens,
                cache_read_input_tokens: partial.cache_read_input_tokens,
                cost_micros: partial.cost_micros,
                late_events: partial.late_events,
                partial: bytes,
                written_ms,
            };
            insert
                .write(&row)
                .await
                .map_err(failed("refused the rollups"))?;
        }
        // The marker: the position moves with the partials, in the same INSERT.
        let marker = RollupRowOut {
            tenant: "",
            model: "",
            minute: datetime_secs(minute_floor(now_ms())),
            log_partition: batch.partition,
            first_offset: batch.first_offset,
            next_offset: batch.next_offset,
            watermark_ms: batch.watermark_ms,
            requests: 0,
            errors: 0,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_input_tokens: 0,
            cost_micros: 0,
            late_events: 0,
            partial: &[],
            written_ms,
        };
        insert
            .write(&marker)
            .await
            .map_err(failed("refused the rollups"))?;
        insert.end().await.map_err(failed("refused the rollups"))
    }

    /// Waits until the table's mutations are done, so retention has taken effect when
    /// it returns (servers before 19.x have no `mutations_sync`).
    async fn wait_for_mutations(&self, table: &str) -> Result<(), StoreError> {
        let deadline = Instant::now() + MUTATION_PATIENCE;
        loop {
            let pending: u64 = self
                .client
                .query("SELECT count() FROM system.mutations WHERE database = ? AND table = ? AND is_done = 0")
                .bind(&self.config.database)
                .bind(table)
                .fetch_one()
                .await
                .map_err(failed("could not read mutations"))?;
            if pending == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "ClickHouse still applies {pending} mutation(s) of {table} after {MUTATION_PATIENCE:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Queues alert transitions once per (sink, key): one queued before (pending,
    /// retried or settled) is left as it is. Past `limit` pending entries the
    /// oldest are settled as dropped and counted, as in the embedded store.
    async fn queue_alerts(&self, alerts: &[OutboxAlert], limit: usize) -> Result<(), StoreError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = alerts.iter().map(|alert| alert.key.as_str()).collect();
        let queued: Vec<(String, String)> = self
            .client
            .query("SELECT sink, key FROM alert_outbox WHERE has(?, key)")
            .bind(&keys)
            .fetch_all()
            .await
            .map_err(failed("could not read the alert outbox"))?;
        let alerts: Vec<&OutboxAlert> = alerts
            .iter()
            .filter(|alert| {
                !queued
                    .iter()
                    .any(|(sink, key)| *sink == alert.sink && *key == alert.key)
            })
            .collect();
        if alerts.is_empty() {
            return Ok(());
        }
        // Ids increase in queue order: the commit's time, then its position in it.
        let base = now_ms().saturating_mul(1000);
        let rows: Vec<OutboxRow> = alerts
            .iter()
            .enumerate()
            .map(|(index, alert)| OutboxRow {
                sink: alert.sink.clone(),
                key: alert.key.clone(),
                id: base + index as i64,
                payload: alert.payload.clone(),
                attempts: 0,
                next_attempt_ms: 0,
                settled: 0,
                version: 1,
            })
            .collect();
        self.insert_rows("alert_outbox", &rows, "refused the alert outbox")
            .await?;
        let pending = self.pending_outbox(None, u64::MAX).await?;
        let excess = pending.len().saturating_sub(limit);
        if excess > 0 {
            let dropped: Vec<OutboxRow> = pending.into_iter().take(excess).collect();
            self.settle_rows(&dropped).await?;
            metrics::counter!("ais_alert_outbox_dropped_total").increment(excess as u64);
            tracing::warn!(
                dropped = excess,
                "alert outbox full: dropped its oldest transitions"
            );
        }
        Ok(())
    }

    /// Inserts rows that own their data into `table`, in one INSERT.
    async fn insert_rows<T: RowOwned + RowWrite>(
        &self,
        table: &str,
        rows: &[T],
        context: &'static str,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<T>(table)
            .await
            .map_err(failed(context))?;
        for row in rows {
            insert.write(row).await.map_err(failed(context))?;
        }
        insert.end().await.map_err(failed(context))
    }

    /// Pending outbox rows (of one sink, or all), oldest first.
    async fn pending_outbox(
        &self,
        sink: Option<&str>,
        limit: u64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sink_filter = if sink.is_some() { "AND sink = ?" } else { "" };
        let sql = format!(
            "SELECT sink, key, id, payload, attempts, next_attempt_ms, settled, version
             FROM alert_outbox FINAL WHERE settled = 0 {sink_filter} ORDER BY id LIMIT ?"
        );
        let mut query = self.client.query(&sql);
        if let Some(sink) = sink {
            query = query.bind(sink);
        }
        let rows = query
            .bind(limit)
            .fetch_all::<OutboxRow>()
            .await
            .map_err(failed("could not read the alert outbox"))?;
        metrics::gauge!("ais_alert_outbox_entries").set(rows.len() as f64);
        Ok(rows)
    }

    /// Marks rows as settled (a newer version of each).
    async fn settle_rows(&self, rows: &[OutboxRow]) -> Result<(), StoreError> {
        let settled: Vec<OutboxRow> = rows
            .iter()
            .map(|row| OutboxRow {
                settled: 1,
                version: row.version + 1,
                ..row.clone()
            })
            .collect();
        self.insert_rows("alert_outbox", &settled, "refused the alert outbox")
            .await
    }

    async fn commit_batch(&self, batch: &BatchCommit) -> Result<(), StoreError> {
        let expected = self.position(batch.partition).await?;
        if batch.first_offset != expected || batch.next_offset < batch.first_offset {
            return Err(StoreError::OutOfOrder {
                partition: batch.partition,
                first_offset: batch.first_offset,
                expected,
            });
        }
        self.insert_events(batch).await?;
        self.insert_rollups(batch).await
    }

    /// Rollup rows in range, merged per (tenant, model, minute) in the order the SQL
    /// returned them (which groups equal keys together).
    async fn merged_rollups(
        &self,
        sql: &str,
        binds: RollupBinds<'_>,
    ) -> Result<Vec<(String, RollupRow)>, StoreError> {
        let mut query = self.client.query(sql);
        if let Some(tenant) = binds.tenant {
            query = query.bind(tenant);
        }
        query = query
            .bind(datetime_secs(binds.from_ms))
            .bind(datetime_secs(binds.to_ms));
        if let Some(model) = binds.model {
            query = query.bind(model);
        }
        let mut cursor = query
            .fetch::<PartialRow>()
            .map_err(failed("could not read rollups"))?;
        let mut out: Vec<(String, RollupRow)> = Vec::new();
        while let Some(row) = cursor
            .next()
            .await
            .map_err(failed("could not read rollups"))?
        {
            let partial = RollupPartial::from_bytes(&row.partial).map_err(|error| {
                StoreError::Malformed(format!(
                    "rollup of {}/{} at {}: {error}",
                    row.tenant, row.model, row.minute_ms
                ))
            })?;
            match out.last_mut() {
                Some((tenant, last))
                    if *tenant == row.tenant
                        && last.model == row.model
                        && last.minute_ms == row.minute_ms =>
                {
                    last.partial.merge(&partial);
                }
                _ => out.push((
                    row.tenant,
                    RollupRow {
                        model: row.model,
                        minute_ms: row.minute_ms,
                        partial,
                    },
                )),
            }
        }
        Ok(out)
    }
}

struct RollupBinds<'a> {
    tenant: Option<&'a str>,
    from_ms: i64,
    to_ms: i64,
    model: Option<&'a str>,
}

/// Partition ids of `events` are `toYYYYMMDD` of event time; the unix ms when that day
/// ends.
fn day_partition_end_ms(partition_id: &str) -> Option<i64> {
    let digits: u32 = partition_id.parse().ok()?;
    let (year, month, day) = (digits / 10_000, (digits / 100) % 100, digits % 100);
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?)
            .ok()?;
    let end = date.next_day()?.midnight().assume_utc();
    i64::try_from(end.unix_timestamp_nanos() / 1_000_000).ok()
}

#[async_trait]
impl Store for ClickhouseStore {
    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT log_partition, max(next_offset) AS max_next, max(watermark_ms) AS max_watermark
                 FROM rollups WHERE tenant = '' AND model = ''
                 GROUP BY log_partition ORDER BY log_partition",
            )
            .fetch_all::<PositionRow>()
            .await
            .map_err(failed("could not read positions"))?;
        Ok(rows
            .into_iter()
            .map(|row| PartitionState {
                partition: row.log_partition,
                next_offset: row.next_offset,
                watermark_ms: row.watermark_ms,
            })
            .collect())
    }

    async fn commit(&self, batch: BatchCommit) -> Result<(), StoreError> {
        let started = Instant::now();
        let outcome = self.commit_batch(&batch).await;
        crate::record_commit(&outcome, started);
        outcome
    }

    async fn dedup_entries(&self, since_minute_ms: i64) -> Result<Vec<DedupEntry>, StoreError> {
        let positions = self.partition_states().await?;
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let newest: i64 = self
            .client
            .query("SELECT max(timestamp_ms) FROM events WHERE client_id = 1")
            .fetch_one()
            .await
            .map_err(failed("could not read dedup ids"))?;
        let horizon_ms = i64::try_from(self.config.dedup_horizon.as_millis()).unwrap_or(i64::MAX);
        let since = since_minute_ms.max(minute_floor(newest.saturating_sub(horizon_ms)));
        // Only rows below their partition's position count: the rest were left by a
        // commit that did not finish and will be replayed.
        let partitions: Vec<String> = positions
            .iter()
            .map(|state| state.partition.to_string())
            .collect();
        let offsets: Vec<String> = positions
            .iter()
            .map(|state| state.next_offset.to_string())
            .collect();
        let sql = format!(
            "SELECT tenant, event_id, timestamp_ms FROM events
             WHERE client_id = 1 AND timestamp >= toDateTime(?) AND timestamp_ms >= ?
               AND log_offset < transform(log_partition, [{}], [{}], toUInt64(0))",
            partitions.join(","),
            offsets.join(",")
        );
        let mut cursor = self
            .client
            .query(&sql)
            .bind(datetime_secs(since))
            .bind(since)
            .fetch::<DedupRow>()
            .map_err(failed("could not read dedup ids"))?;
        let mut entries = Vec::new();
        while let Some(row) = cursor
            .next()
            .await
            .map_err(failed("could not read dedup ids"))?
        {
            entries.push(DedupEntry {
                hash: ais_model::event::dedup_hash(&row.tenant, &row.event_id),
                minute_ms: minute_floor(row.timestamp_ms),
            });
        }
        Ok(entries)
    }

    async fn rollups(&self, query: RollupQuery) -> Result<Vec<RollupRow>, StoreError> {
        let model_filter = if query.model.is_some() {
            "AND model = ?"
        } else {
            ""
        };
        let sql = format!(
            "SELECT tenant, model, toInt64(toUnixTimestamp(minute)) * 1000 AS minute_ms, partial
             FROM rollups FINAL
             WHERE tenant = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) {model_filter}
             ORDER BY model, minute"
        );
        let rows = self
            .merged_rollups(
                &sql,
                RollupBinds {
                    tenant: Some(&query.tenant),
                    from_ms: query.from_ms,
                    to_ms: query.to_ms,
                    model: query.model.as_deref(),
                },
            )
            .await?;
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }

    async fn tenants(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>, StoreError> {
        self.client
            .query(
                "SELECT DISTINCT tenant FROM rollups
                 WHERE tenant != '' AND minute >= toDateTime(?) AND minute < toDateTime(?)
                 ORDER BY tenant",
            )
            .bind(datetime_secs(from_ms))
            .bind(datetime_secs(to_ms))
            .fetch_all::<String>()
            .await
            .map_err(failed("could not read tenants"))
    }

    async fn rollups_all_tenants(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, RollupRow)>, StoreError> {
        self.merged_rollups(
            "SELECT tenant, model, toInt64(toUnixTimestamp(minute)) * 1000 AS minute_ms, partial
             FROM rollups FINAL
             WHERE tenant != '' AND minute >= toDateTime(?) AND minute < toDateTime(?)
             ORDER BY minute, tenant, model",
            RollupBinds {
                tenant: None,
                from_ms,
                to_ms,
                model: None,
            },
        )
        .await
    }

    async fn evaluation_state(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        let row = self
            .client
            .query(
                "SELECT id, next_window_ms, state, version FROM evaluation
                 WHERE id = 1 ORDER BY version DESC LIMIT 1",
            )
            .fetch_optional::<EvaluationRow>()
            .await
            .map_err(failed("could not read the evaluator state"))?;
        Ok(row.map(|row| (row.next_window_ms, row.state)))
    }

    async fn commit_evaluation(&self, commit: EvaluationCommit) -> Result<(), StoreError> {
        // Alerts first, the evaluator's position last: a crash in between re-evaluates
        // the same windows, and an alert stored twice is one row (its identity is the
        // key; a resolution is a higher version than a firing).
        let fired: Vec<AnomalyRow> = commit
            .fired
            .iter()
            .map(|anomaly| AnomalyRow {
                tenant: anomaly.tenant.clone(),
                model: anomaly.model.clone(),
                detector: anomaly.detector.clone(),
                window_start_ms: anomaly.window_start_ms,
                metric: anomaly.metric.clone(),
                observed: anomaly.observed,
                baseline: anomaly.baseline,
                score: anomaly.score,
                state: AnomalyState::Firing.as_str().to_string(),
                resolved_window_ms: None,
                version: 1,
            })
            .collect();
        self.insert_rows("anomalies", &fired, "refused anomalies")
            .await?;
        let mut resolved_rows = Vec::new();
        for resolution in &commit.resolved {
            let firing = self
                .client
                .query(
                    "SELECT tenant, model, detector, window_start_ms, metric, observed, baseline,
                            score, state, resolved_window_ms, version
                     FROM anomalies FINAL
                     WHERE tenant = ? AND model = ? AND detector = ? AND state = 'firing'",
                )
                .bind(&resolution.tenant)
                .bind(&resolution.model)
                .bind(&resolution.detector)
                .fetch_all::<AnomalyRow>()
                .await
                .map_err(failed("could not read firing anomalies"))?;
            for mut row in firing {
                row.state = AnomalyState::Resolved.as_str().to_string();
                row.resolved_window_ms = Some(resolution.window_start_ms);
                row.version = 2;
                resolved_rows.push(row);
            }
        }
        self.insert_rows("anomalies", &resolved_rows, "refused resolutions")
            .await?;
        self.queue_alerts(&commit.outbox, commit.outbox_limit)
            .await?;
        let state = EvaluationRow {
            id: 1,
            next_window_ms: commit.next_window_ms,
            state: commit.state,
            version: u64::try_from(now_ms()).unwrap_or(0),
        };
        self.insert_rows("evaluation", &[state], "refused the evaluator state")
            .await
    }

    async fn anomalies(&self, query: AnomalyQuery) -> Result<Vec<AnomalyRecord>, StoreError> {
        let tenant_filter = if query.tenant.is_some() {
            "AND tenant = ?"
        } else {
            ""
        };
        let model_filter = if query.model.is_some() {
            "AND model = ?"
        } else {
            ""
        };
        let sql = format!(
            "SELECT tenant, model, detector, window_start_ms, metric, observed, baseline, score,
                    state, resolved_window_ms, version
             FROM anomalies FINAL
             WHERE window_start_ms >= ? AND window_start_ms < ? {tenant_filter} {model_filter}
             ORDER BY window_start_ms DESC, tenant, model, detector"
        );
        let mut statement = self
            .client
            .query(&sql)
            .bind(query.from_ms)
            .bind(query.to_ms);
        if let Some(tenant) = &query.tenant {
            statement = statement.bind(tenant);
        }
        if let Some(model) = &query.model {
            statement = statement.bind(model);
        }
        let rows = statement
            .fetch_all::<AnomalyRow>()
            .await
            .map_err(failed("could not read anomalies"))?;
        Ok(rows
            .into_iter()
            .map(|row| AnomalyRecord {
                state: if row.state == AnomalyState::Resolved.as_str() {
                    AnomalyState::Resolved
                } else {
                    AnomalyState::Firing
                },
                tenant: row.tenant,
                model: row.model,
                detector: row.detector,
                metric: row.metric,
                window_start_ms: row.window_start_ms,
                observed: row.observed,
                baseline: row.baseline,
                score: row.score,
                resolved_window_ms: row.resolved_window_ms,
            })
            .collect())
    }

    async fn outbox_pending(
        &self,
        sink: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = self.pending_outbox(Some(sink), limit as u64).await?;
        Ok(rows
            .into_iter()
            .map(|row| OutboxEntry {
                id: row.id,
                sink: row.sink,
                key: row.key,
                payload: row.payload,
                attempts: row.attempts,
                next_attempt_ms: row.next_attempt_ms,
            })
            .collect())
    }

    async fn outbox_settle(&self, id: i64, outcome: OutboxOutcome) -> Result<(), StoreError> {
        let found = self
            .client
            .query(
                "SELECT sink, key, id, payload, attempts, next_attempt_ms, settled, version
                 FROM alert_outbox FINAL WHERE id = ? AND settled = 0",
            )
            .bind(id)
            .fetch_optional::<OutboxRow>()
            .await
            .map_err(failed("could not read the alert outbox"))?;
        // Already gone (dropped at the limit, or settled by a previous try).
        let Some(row) = found else {
            return Ok(());
        };
        match outcome {
            OutboxOutcome::Delivered | OutboxOutcome::Abandoned => self.settle_rows(&[row]).await,
            OutboxOutcome::Retry {
                attempts,
                next_attempt_ms,
            } => {
                let retried = OutboxRow {
                    attempts,
                    next_attempt_ms,
                    version: row.version + 1,
                    ..row
                };
                self.insert_rows("alert_outbox", &[retried], "refused the alert outbox")
                    .await
            }
        }
    }

    async fn apply_retention(&self, retention: Retention) -> Result<(), StoreError> {
        // Raw events: whole days (the table's partitions) that end at or before the cut.
        let partitions: Vec<String> = self
            .client
            .query(
                "SELECT DISTINCT partition FROM system.parts
                 WHERE database = ? AND table = 'events' AND active",
            )
            .bind(&self.config.database)
            .fetch_all::<String>()
            .await
            .map_err(failed("could not list event partitions"))?;
        for partition in partitions {
            let Some(end_ms) = day_partition_end_ms(&partition) else {
                continue;
            };
            if end_ms <= retention.raw_before_ms {
                // The id is digits only (checked by the parse above).
                self.client
                    .query(&format!("ALTER TABLE events DROP PARTITION {partition}"))
                    .execute()
                    .await
                    .map_err(failed("could not drop old raw events"))?;
                tracing::info!(day = %partition, "raw events of a day past retention dropped");
            }
        }
        // Rollups: a mutation, issued only when something is old enough, since each
        // one rewrites the parts it touches. Batch markers are kept: the newest of each
        // partition is its position.
        let old: u64 = self
            .client
            .query("SELECT count() FROM rollups WHERE tenant != '' AND minute < toDateTime(?)")
            .bind(datetime_secs(retention.rollups_before_ms))
            .fetch_one()
            .await
            .map_err(failed("could not count old rollups"))?;
        if old > 0 {
            self.client
                .query("ALTER TABLE rollups DELETE WHERE tenant != '' AND minute < toDateTime(?)")
                .bind(datetime_secs(retention.rollups_before_ms))
                .execute()
                .await
                .map_err(failed("could not delete old rollups"))?;
            self.wait_for_mutations("rollups").await?;
            tracing::info!(rows = old, "rollups past retention deleted");
        }
        Ok(())
    }

    async fn events(&self, query: EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let started = Instant::now();
        let mut filters = String::new();
        let optional = [
            (query.trace_id.is_some(), " AND trace_id = ?"),
            (query.user_id.is_some(), " AND user_id = ?"),
            (query.model.is_some(), " AND model = ?"),
            (query.status.is_some(), " AND status = ?"),
            (query.min_latency_ms.is_some(), " AND latency_ms >= ?"),
        ];
        for (present, filter) in optional {
            if present {
                filters.push_str(filter);
            }
        }
        // `timestamp` (whole seconds) prunes day partitions; `timestamp_ms` is exact.
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events FINAL
             WHERE tenant = ? AND timestamp >= toDateTime(?) AND timestamp <= toDateTime(?)
               AND timestamp_ms >= ? AND timestamp_ms < ?{filters}
             ORDER BY timestamp_ms DESC, event_id LIMIT ?"
        );
        let mut statement = self
            .client
            .query(&sql)
            .bind(&query.tenant)
            .bind(datetime_secs(query.from_ms))
            .bind(datetime_secs(query.to_ms))
            .bind(query.from_ms)
            .bind(query.to_ms);
        if let Some(trace_id) = &query.trace_id {
            statement = statement.bind(trace_id);
        }
        if let Some(user_id) = &query.user_id {
            statement = statement.bind(user_id);
        }
        if let Some(model) = &query.model {
            statement = statement.bind(model);
        }
        if let Some(status) = query.status {
            statement = statement.bind(status.as_str());
        }
        if let Some(min_latency_ms) = query.min_latency_ms {
            statement = statement.bind(min_latency_ms);
        }
        let rows = statement
            .bind(query.limit as u64)
            .fetch_all::<EventRowIn>()
            .await
            .map_err(failed("could not read raw events"))?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let (tenant, event) = row.into_event()?;
            events.push(StoredEvent { tenant, event });
        }
        metrics::histogram!("ais_store_event_query_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(events)
    }

    async fn compact(&self, _final_before_ms: i64) -> Result<CompactionReport, StoreError> {
        // ClickHouse merges parts itself.
        Ok(CompactionReport::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_address_database_and_credentials() {
        let config =
            ClickhouseConfig::from_url("http://127.0.0.1:18123/?database=ais_test").expect("valid");
        assert_eq!(config.url, "http://127.0.0.1:18123");
        assert_eq!(config.database, "ais_test");
        assert_eq!(config.user, None);
        let config = ClickhouseConfig::from_url("http://app:secret@localhost:8123").expect("valid");
        assert_eq!(config.database, DEFAULT_DATABASE);
        assert_eq!(config.user.as_deref(), Some("app"));
        assert_eq!(config.password.as_deref(), Some("secret"));
        for bad in [
            "localhost:8123",
            "ftp://host/",
            "http://host/?database=a;drop",
            "http://host/?db=x",
        ] {
            let error = ClickhouseConfig::from_url(bad).expect_err(bad);
            assert!(
                error.to_string().contains("invalid ClickHouse URL"),
                "{error}"
            );
        }
    }

    #[test]
    fn day_partitions_end_at_the_next_midnight() {
        // 2026-11-22 ends at 2026-11-23T00:00:00Z.
        assert_eq!(day_partition_end_ms("20261122"), Some(1_795_392_000_000));
        assert_eq!(day_partition_end_ms("20261131"), None);
        assert_eq!(day_partition_end_ms("all"), None);
    }
}
