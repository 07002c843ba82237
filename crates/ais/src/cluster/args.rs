//! Arguments of the distributed commands (`ingest`, `stream`, `query`, `migrate`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

// `ingest` is the only distributed command with listeners of its own to turn off and
// an ingest edge.
#[cfg(feature = "redis")]
use crate::args::{parse_listen_or_off, ListenOrOff};
#[cfg(feature = "redis")]
use crate::serve::PressureArgs;

/// The circuit breaker around Kafka writes and the Redis overflow behind it (`ingest`).
#[cfg(all(feature = "kafka", feature = "redis"))]
#[derive(Debug, Default, Clone, Args)]
pub struct BreakerArgs {
    /// Redis URL of the overflow buffer used while the Kafka circuit is open
    /// (redis://[:PASSWORD@]HOST:PORT[/DB]; the server needs appendonly yes and
    /// appendfsync always); none: an open circuit answers 503
    #[arg(long, env = "AIS_REDIS")]
    pub redis: Option<String>,
    /// Cap of the overflow in bytes, checked before each write; beyond it 503
    /// [default: 1073741824, 1 GiB]
    #[arg(long, env = "AIS_OVERFLOW_MAX_BYTES")]
    pub overflow_max_bytes: Option<u64>,
    /// How long a Kafka append may take before it counts as a timeout, in ms [default: 5000]
    #[arg(long, env = "AIS_KAFKA_TIMEOUT_MS")]
    pub kafka_timeout_ms: Option<u64>,
    /// Fraction of failed Kafka appends among the last 20 that opens the circuit [default: 0.5]
    #[arg(long, env = "AIS_BREAKER_FAILURE_RATE")]
    pub breaker_failure_rate: Option<f64>,
    /// Kafka timeouts in a row that open the circuit [default: 3]
    #[arg(long, env = "AIS_BREAKER_MAX_TIMEOUTS")]
    pub breaker_max_timeouts: Option<u32>,
    /// How long the circuit stays open before a probe, in ms [default: 5000]
    #[arg(long, env = "AIS_BREAKER_OPEN_MS")]
    pub breaker_open_ms: Option<u64>,
}

/// Flags of the Kafka log, shared by `ingest` and `stream`.
#[cfg(all(feature = "kafka", any(feature = "redis", feature = "clickhouse")))]
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT…]
    #[arg(long, env = "AIS_KAFKA")]
    pub kafka: Option<String>,
    /// Topic of the events; the dead-letter topic is TOPIC.dlq [default: ais.events]
    #[arg(long, env = "AIS_TOPIC")]
    pub topic: Option<String>,
}

#[cfg(all(feature = "kafka", feature = "redis"))]
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// HTTP listen address (port 0 picks a free port) [default: 127.0.0.1:8080]
    #[arg(long, env = "AIS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// OTLP/gRPC listen address, or `off` [default: 127.0.0.1:4317]
    #[arg(long, env = "AIS_OTLP_GRPC_LISTEN", value_parser = parse_listen_or_off)]
    pub otlp_grpc_listen: Option<ListenOrOff>,
    /// TOML config file (keys, prices, rate limits)
    #[arg(long, env = "AIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Default per-tenant rate limit in events/s; none: unlimited
    #[arg(long, env = "AIS_RATE_LIMIT_EPS")]
    pub rate_limit_eps: Option<f64>,
    /// Burst of the default rate limit, in events [default: one second of events]
    #[arg(long, env = "AIS_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<f64>,
    /// Oldest event accepted, in hours [default: 168]
    #[arg(long, env = "AIS_RAW_RETENTION_HOURS")]
    pub raw_retention_hours: Option<u64>,
    #[command(flatten)]
    pub pressure: PressureArgs,
    #[command(flatten)]
    pub breaker: BreakerArgs,
}

/// `ais gateway`: the gateway as its own process, its calls' events into Kafka.
#[cfg(all(feature = "kafka", feature = "redis"))]
#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Listen address of the gateway's calls and of /metrics, /healthz and /readyz
    /// (port 0 picks a free port) [default: `[gateway] listen` of the config file]
    #[arg(long, env = "AIS_GATEWAY_LISTEN")]
    pub gateway_listen: Option<SocketAddr>,
    /// TOML config file (`[gateway]` upstreams, keys, prices, rate limits)
    #[arg(long, env = "AIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Default per-tenant rate limit in events/s (one call, one event); none: unlimited
    #[arg(long, env = "AIS_RATE_LIMIT_EPS")]
    pub rate_limit_eps: Option<f64>,
    /// Burst of the default rate limit, in events [default: one second of events]
    #[arg(long, env = "AIS_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<f64>,
    /// Oldest event accepted, in hours [default: 168]
    #[arg(long, env = "AIS_RAW_RETENTION_HOURS")]
    pub raw_retention_hours: Option<u64>,
    #[command(flatten)]
    pub breaker: BreakerArgs,
    /// ClickHouse HTTP URL whose usage ledger the budgets' spend is read from; with
    /// `[[budgets]]` and --redis, calls reserve against the holds shared with `ais
    /// query` (none: no budgets are enforced)
    #[cfg(feature = "clickhouse")]
    #[arg(long, env = "AIS_CLICKHOUSE")]
    pub clickhouse: Option<String>,
}

#[cfg(all(feature = "kafka", feature = "clickhouse"))]
#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// ClickHouse HTTP URL: http://[USER:PASSWORD@]HOST:PORT/?database=NAME [database: ais]
    #[arg(long, env = "AIS_CLICKHOUSE")]
    pub clickhouse: Option<String>,
    /// Consumer group of the stream processors [default: ais-stream]
    #[arg(long, env = "AIS_GROUP")]
    pub group: Option<String>,
    /// This member's lasting name in the consumer group (static membership), unique
    /// per process: a process restarted under the same name takes its partitions back
    /// at once. The Helm chart passes the pod's name [default: none, a new member at
    /// every start]
    #[arg(long, env = "AIS_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Listen address of /metrics, /healthz and /readyz; none when absent
    #[arg(long, env = "AIS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// TOML config file (anomaly detectors, retention)
    #[arg(long, env = "AIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// How long after a minute ends its window stays open for late events [default: 120]
    #[arg(long, env = "AIS_ALLOWED_LATENESS_SECS")]
    pub allowed_lateness_secs: Option<u64>,
    /// Records the stream processor reads and commits as one batch, at most (one
    /// partition's records, one store transaction) [default: 65536]
    #[arg(long, env = "AIS_MAX_BATCH_RECORDS")]
    pub max_batch_records: Option<usize>,
    /// How often the anomaly evaluator looks for newly final windows, in ms [default: 5000]
    #[arg(long, env = "AIS_EVALUATE_INTERVAL_MS")]
    pub evaluate_interval_ms: Option<u64>,
    /// Redis of the shared budget holds, which the stream settles as their events'
    /// batches land (redis://[:PASSWORD@]HOST:PORT[/DB]); none: holds expire instead
    #[cfg(feature = "redis")]
    #[arg(long, env = "AIS_REDIS")]
    pub redis: Option<String>,
    /// Raw events older than this many hours are dropped by whole days [default: 168]
    #[arg(long, env = "AIS_RAW_RETENTION_HOURS")]
    pub raw_retention_hours: Option<u64>,
    /// How long the payloads (`input`, `output`) of raw events are kept, in hours; the
    /// events stay, without them. At most the raw-event retention [default: 72]
    #[arg(long, env = "AIS_PAYLOAD_RETENTION_HOURS")]
    pub payload_retention_hours: Option<u64>,
    /// How long rollups are kept, in days [default: 90]
    #[arg(long, env = "AIS_ROLLUP_RETENTION_DAYS")]
    pub rollup_retention_days: Option<u64>,
    /// How often retention runs, in ms [default: 60000]
    #[arg(long, env = "AIS_MAINTENANCE_INTERVAL_MS")]
    pub maintenance_interval_ms: Option<u64>,
}

#[cfg(all(feature = "kafka", feature = "clickhouse"))]
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// ClickHouse HTTP URL: http://[USER:PASSWORD@]HOST:PORT/?database=NAME [database: ais]
    #[arg(long, env = "AIS_CLICKHOUSE")]
    pub clickhouse: Option<String>,
    // Kafka of the pipeline, for /v1/dlq (reads TOPIC.dlq) and its replay (writes
    // TOPIC); without it those answer 501.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// HTTP listen address (port 0 picks a free port) [default: 127.0.0.1:8080]
    #[arg(long, env = "AIS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// TOML config file (keys)
    #[arg(long, env = "AIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// How long a query that scans raw events (a breakdown) may run before it answers
    /// 503, in ms [default: 10000]
    #[arg(long, env = "AIS_QUERY_TIMEOUT_MS")]
    pub query_timeout_ms: Option<u64>,
    /// Redis of the budget holds shared by the query servers, gateways and streams
    /// (redis://[:PASSWORD@]HOST:PORT[/DB]); none: /v1/budgets/check and reserve
    /// answer 501
    #[cfg(feature = "redis")]
    #[arg(long, env = "AIS_REDIS")]
    pub redis: Option<String>,
}

#[cfg(all(feature = "kafka", feature = "clickhouse"))]
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// ClickHouse HTTP URL whose database and schema to create or upgrade
    #[arg(long, env = "AIS_CLICKHOUSE")]
    pub clickhouse: Option<String>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Partitions of new topics (existing topics keep theirs)
    #[arg(long, env = "AIS_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,
    /// Replicas of each partition of new topics (3 on a production cluster)
    #[arg(long, env = "AIS_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,
    /// TOML config file (kafka, topic, clickhouse keys)
    #[arg(long, env = "AIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the ClickHouse DDL for --dialect instead of running it (no server needed)
    #[arg(long)]
    pub print_ddl: bool,
    /// With --print-ddl: `legacy` (before 20.1, e.g. Debian's 18.16) or `current`
    #[arg(long, value_parser = ["legacy", "current"], default_value = "current")]
    pub dialect: String,
    /// With --print-ddl: the database the DDL creates
    #[arg(long, default_value = "ais")]
    pub database: String,
}
