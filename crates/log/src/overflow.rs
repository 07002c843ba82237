//! The Redis overflow: where `ais ingest` keeps acknowledged batches while the Kafka
//! circuit is open, until they drain back into Kafka in order.
//!
//! One Redis Stream per topic (`ais:overflow:{TOPIC}`), one stream entry per appended
//! batch (the framed records of one request, field `b`, with its record count `n`
//! and size `s`). Beside it two counters, `…:bytes` and `…:records`, and a drain
//! lease `…:drain`. Every change runs as one Lua script, so the cap check and the
//! write, or the delete and the decrement, cannot interleave with another pod's:
//!
//! - append: refused with [`LogError::OverflowFull`] when the counted bytes plus the
//!   batch would pass the cap. The cap is checked before writing and the stream is
//!   never trimmed, since trimming would delete acknowledged events;
//! - drain: the holder of the lease reads the oldest entries, appends them to Kafka,
//!   and only then deletes them. A crash in between appends them again on the next
//!   drain; the stream processor's dedup by event id absorbs the repeat.
//!
//! The ack of an overflowed batch waits for Redis's reply, which with
//! `appendonly yes` and `appendfsync always` comes after the AOF is fsync'd.
//! [`RedisOverflow::durability`] reads that setting so `ais ingest` can say when the
//! server is not configured so.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Client, Script};

use crate::{LogError, RecordBatch};

/// Where the overflow lives and how big it may grow.
#[derive(Debug, Clone)]
pub struct OverflowConfig {
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`.
    pub url: String,
    /// The stream's key; the counters and the lease take it as a prefix.
    pub key: String,
    /// Cap of the framed bytes held (1 GiB).
    pub max_bytes: u64,
    /// How long one Redis call may take before the overflow counts as unavailable.
    pub timeout: Duration,
}

impl OverflowConfig {
    pub fn new(url: impl Into<String>, topic: &str) -> Self {
        Self {
            url: url.into(),
            key: format!("ais:overflow:{topic}"),
            max_bytes: 1 << 30,
            timeout: Duration::from_secs(2),
        }
    }
}

/// One stored batch, oldest first.
#[derive(Debug)]
pub struct OverflowEntry {
    pub id: String,
    pub batch: RecordBatch,
}

/// What the overflow holds, as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OverflowUsage {
    pub records: u64,
    pub bytes: u64,
}

const APPEND: &str = r"
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
local size = tonumber(ARGV[2])
if used + size > tonumber(ARGV[4]) then
  return {-1, used}
end
redis.call('XADD', KEYS[1], '*', 'b', ARGV[1], 'n', ARGV[3], 's', ARGV[2])
local bytes = redis.call('INCRBY', KEYS[2], size)
redis.call('INCRBY', KEYS[3], tonumber(ARGV[3]))
return {0, bytes}
";

const OLDEST: &str = r"
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])
local out = {}
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'b' then
      table.insert(out, entry[1])
      table.insert(out, fields[i + 1])
    end
  end
end
return out
";

// Sizes come from the entries themselves, so the counters stay exact even if an id
// is removed twice.
const REMOVE: &str = r"
local bytes, records = 0, 0
for _, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found > 0 then
    local fields = found[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 's' then bytes = bytes + tonumber(fields[i + 1]) end
      if fields[i] == 'n' then records = records + tonumber(fields[i + 1]) end
    end
    redis.call('XDEL', KEYS[1], id)
  end
end
redis.call('DECRBY', KEYS[2], bytes)
redis.call('DECRBY', KEYS[3], records)
return {bytes, records}
";

const LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// A connection to the overflow stream; cheap to share (`&self` everywhere).
pub struct RedisOverflow {
    config: OverflowConfig,
    connection: ConnectionManager,
    bytes_key: String,
    records_key: String,
    lease_key: String,
    scripts: Scripts,
    /// The last call's outcome, for `/readyz` without a round trip.
    reachable: AtomicBool,
    records: AtomicU64,
    bytes: AtomicU64,
}

struct Scripts {
    append: Script,
    oldest: Script,
    remove: Script,
    lease: Script,
}

impl std::fmt::Debug for RedisOverflow {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RedisOverflow")
            .field("key", &self.config.key)
            .finish()
    }
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("redis overflow {what}: {error}"))
}

impl RedisOverflow {
    /// Prepares the connection; it is made on first use and remade after failures, so
    /// `ais ingest` starts while Redis is down and the overflow works once it is up.
    pub fn connect(config: OverflowConfig) -> Result<Self, LogError> {
        let client = Client::open(config.url.as_str()).map_err(|error| {
            LogError::Unavailable(format!("invalid redis URL {:?}: {error}", config.url))
        })?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|error| unavailable("client", error))?;
        Ok(Self {
            bytes_key: format!("{}:bytes", config.key),
            records_key: format!("{}:records", config.key),
            lease_key: format!("{}:drain", config.key),
            config,
            connection,
            scripts: Scripts {
                append: Script::new(APPEND),
                oldest: Script::new(OLDEST),
                remove: Script::new(REMOVE),
                lease: Script::new(LEASE),
            },
            reachable: AtomicBool::new(true),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &OverflowConfig {
        &self.config
    }

    /// Runs one call within the timeout and notes whether Redis answered.
    async fn call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, LogError> {
        let outcome = match tokio::time::timeout(self.config.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(unavailable(what, error)),
            Err(_) => Err(unavailable(
                what,
                format!("no answer in {:?}", self.config.timeout),
            )),
        };
        self.reachable.store(outcome.is_ok(), Ordering::Relaxed);
        outcome
    }

    /// Stores `batch` durably, or refuses: full, or Redis unavailable.
    pub async fn append(&self, batch: &RecordBatch) -> Result<(), LogError> {
        let size = batch.byte_len() as u64;
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.append.prepare_invoke();
        invocation
            .key(&self.config.key)
            .key(&self.bytes_key)
            .key(&self.records_key)
            .arg(batch.as_framed_bytes())
            .arg(size)
            .arg(batch.len())
            .arg(self.config.max_bytes);
        let (status, bytes): (i64, u64) = self
            .call("append", invocation.invoke_async(&mut connection))
            .await?;
        if status < 0 {
            return Err(LogError::OverflowFull {
                detail: format!(
                    "redis overflow holds {bytes} of {} bytes; a batch of {size} does not fit",
                    self.config.max_bytes
                ),
                retry_after: Duration::from_secs(5),
            });
        }
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Up to `count` of the oldest batches, in the order they were appended.
    pub async fn oldest(&self, count: usize) -> Result<Vec<OverflowEntry>, LogError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.oldest.prepare_invoke();
        invocation.key(&self.config.key).arg(count.max(1));
        let flat: Vec<Vec<u8>> = self
            .call("read", invocation.invoke_async(&mut connection))
            .await?;
        let mut entries = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(id), Some(framed)) = (items.next(), items.next()) {
            let id = String::from_utf8(id).map_err(|_| LogError::Corrupt {
                location: format!("redis stream {}", self.config.key),
                detail: "an entry id is not UTF-8".to_string(),
            })?;
            let batch = RecordBatch::from_framed(framed).map_err(|detail| LogError::Corrupt {
                location: format!("redis stream {} entry {id}", self.config.key),
                detail,
            })?;
            entries.push(OverflowEntry { id, batch });
        }
        Ok(entries)
    }

    /// Deletes entries that are now in Kafka.
    pub async fn remove(&self, ids: &[String]) -> Result<(), LogError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.remove.prepare_invoke();
        invocation
            .key(&self.config.key)
            .key(&self.bytes_key)
            .key(&self.records_key);
        for id in ids {
            invocation.arg(id);
        }
        let _: (u64, u64) = self
            .call("remove", invocation.invoke_async(&mut connection))
            .await?;
        Ok(())
    }

    /// Takes or renews the drain lease for `holder`; `false` while another holds it.
    pub async fn lease(&self, holder: &str, ttl: Duration) -> Result<bool, LogError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.lease.prepare_invoke();
        invocation
            .key(&self.lease_key)
            .arg(holder)
            .arg(ttl.as_millis() as u64);
        let taken: i64 = self
            .call("lease", invocation.invoke_async(&mut connection))
            .await?;
        Ok(taken == 1)
    }

    /// Reads the counters (and remembers them for [`RedisOverflow::last_usage`]).
    pub async fn usage(&self) -> Result<OverflowUsage, LogError> {
        let mut connection = self.connection.clone();
        let (bytes, records): (Option<u64>, Option<u64>) = self
            .call(
                "usage",
                redis::pipe()
                    .get(&self.bytes_key)
                    .get(&self.records_key)
                    .query_async(&mut connection),
            )
            .await?;
        let usage = OverflowUsage {
            records: records.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
        };
        self.records.store(usage.records, Ordering::Relaxed);
        self.bytes.store(usage.bytes, Ordering::Relaxed);
        Ok(usage)
    }

    /// The usage last read, without a round trip.
    pub fn last_usage(&self) -> OverflowUsage {
        OverflowUsage {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// Whether the last call reached Redis.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// The server's `appendonly` and `appendfsync` settings; `None` when the server
    /// does not let us read them (managed Redis often disables CONFIG).
    pub async fn durability(&self) -> Option<(String, String)> {
        let read = |name: &'static str| {
            let mut connection = self.connection.clone();
            async move {
                let pair: Vec<String> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async(&mut connection)
                    .await
                    .ok()?;
                pair.get(1).cloned()
            }
        };
        let appendonly = read("appendonly").await?;
        let appendfsync = read("appendfsync").await?;
        Some((appendonly, appendfsync))
    }
}
