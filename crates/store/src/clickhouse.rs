//! The distributed store: ClickHouse over HTTP, with the official `clickhouse` crate.
//!
//! ClickHouse has no transactions, so a stream batch becomes exact in effect this way
//! (DESIGN.md, "Exactly-once effect"):
//! 1. The batch's first offset is checked against the stored position; a batch that
//!    does not continue it is refused and writes nothing.
//! 2. Raw events go to `events`, a `ReplacingMergeTree` keyed by (tenant, event_id):
//!    written again by a replay, an event is still one row. Each row keeps its
//!    (partition, offset).
//! 3. Dimension rollups go to `dimension_rollups`, and the batch's ledger rows to
//!    `ledger`, tagged with the batch's offsets; they count only once step 4 lands
//!    (`dimensions`, `ledger`).
//! 4. One INSERT into `rollups` carries every partial of the batch *and* the batch's
//!    marker row (tenant `''`) holding the new position and watermark. The table is not
//!    partitioned, so the INSERT is one part: all of it lands or none. This INSERT is
//!    the commit point.
//!
//! A crash before step 4 leaves raw rows that a replay rewrites; a crash after it
//! leaves a moved position, so the batch is not replayed. A replayed batch starts at
//! the same offset, so its partial rows replace the first attempt's rows of the same
//! key (the key ends in (partition, first offset)); queries read with `FINAL`.
//!
//! The stream's dedup window (client-set ids seen) is rebuilt from `events`, counting
//! only rows whose offset is below their partition's position: rows an unfinished
//! commit left behind are not mistaken for applied ones.
//!
//! The trait implementations are laid out by role (`batch`, `query`, `evaluation`,
//! `outbox`, `maintenance`), as the traits are in the crate root.
//!
//! Two processes must not write one partition at once: the consumer group assigns each
//! partition to one stream process, which claims it; a process whose claim is no longer
//! the newest is refused, and a batch it had already checked and lands late is void
//! (`fencing`): it neither moves the position nor counts.

use std::time::Duration;

use ais_model::time::unix_now_ms as now_ms;
use ais_rollup::RollupPartial;
use clickhouse::{Client, RowOwned, RowWrite};

use crate::{RollupRow, StoreError};

mod batch;
mod dimensions;
mod evaluation;
mod fencing;
mod filters;
mod ledger;
mod maintenance;
mod outbox;
mod query;
mod rows;
pub mod schema;
mod usage;

use rows::PartialRow;
pub use schema::{Dialect, Statement, SCHEMA_VERSION};

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

impl ClickhouseStore {
    /// Sets the payload columns' TTL to `keep` on servers that have column TTLs
    /// ([`schema::payload_ttl`]); on others, nothing (maintenance clears old payloads).
    pub async fn keep_payloads_for(&self, keep: Duration) -> Result<(), StoreError> {
        let dialect = Dialect::for_version(&server_version(&self.client).await?);
        for statement in schema::payload_ttl(&self.config.database, dialect, keep) {
            self.client
                .query(&statement.to_string())
                .execute()
                .await
                .map_err(failed("could not set the payload columns' TTL"))?;
        }
        Ok(())
    }
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
            if let Statement::AddColumn {
                database,
                table,
                column,
                ..
            } = statement
            {
                if column_exists(&client, database, table, column).await? {
                    continue;
                }
            }
            client
                .query(&statement.to_string())
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

/// Whether a table has a column already: what makes adding it idempotent on servers
/// without `ADD COLUMN IF NOT EXISTS`.
async fn column_exists(
    client: &Client,
    database: &str,
    table: &str,
    column: &str,
) -> Result<bool, StoreError> {
    let found: u64 = client
        .query("SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?")
        .bind(database)
        .bind(table)
        .bind(column)
        .fetch_one()
        .await
        .map_err(failed("could not list columns"))?;
    Ok(found > 0)
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
    /// Groups stored per recent (tenant, dimension, minute), to bound new ones.
    placements: std::sync::Mutex<dimensions::Placements>,
    /// The partitions this handle claimed, and with which claim (`fencing`).
    held: crate::batch::HeldClaims,
    /// Tells this handle's claims from another process's that took the same value.
    owner: u64,
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
        Ok(Self {
            client,
            config,
            placements: std::sync::Mutex::default(),
            held: crate::batch::HeldClaims::default(),
            owner: uuid::Uuid::now_v7().as_u64_pair().1,
        })
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
