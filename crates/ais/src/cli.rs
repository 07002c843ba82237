//! Command-line flags. Every flag also reads `AIS_<FLAG>` from the environment; flags
//! and environment win over the config file, which wins over built-in defaults (see
//! [`crate::config`]). Flags are `Option`s so that order can be resolved.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ais",
    version,
    about = "Observability pipeline for AI inference"
)]
#[cfg_attr(
    not(all(feature = "kafka", feature = "redis", feature = "clickhouse")),
    command(
        after_help = "Built without some engines: `ingest` needs the features kafka and redis; `stream`, `query` and `migrate` need kafka and clickhouse."
    )
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The distributed commands exist only in a binary built with their engines (features
/// `kafka`, `redis`, `clickhouse`; all on by default).
// Without them `Serve` is by far the largest variant; one value parsed at start-up,
// its size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline in one process on embedded storage.
    Serve(ServeArgs),
    /// Distributed ingest tier: HTTP and OTLP ingest into a Kafka topic.
    #[cfg(all(feature = "kafka", feature = "redis"))]
    Ingest(IngestArgs),
    /// Distributed stream tier: one member of the consumer group from Kafka into
    /// ClickHouse (run several).
    #[cfg(all(feature = "kafka", feature = "clickhouse"))]
    Stream(StreamArgs),
    /// Query API over ClickHouse.
    #[cfg(all(feature = "kafka", feature = "clickhouse"))]
    Query(QueryArgs),
    /// Create or upgrade the ClickHouse schema and the Kafka topics (idempotent).
    #[cfg(all(feature = "kafka", feature = "clickhouse"))]
    Migrate(MigrateArgs),
    /// Send events to an ingest URL at a target rate and report ack latency.
    Loadgen(LoadgenArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Live per-model table of a running server in the terminal.
    Top(crate::top::TopArgs),
    /// Inspect and re-drive the dead-letter queue of a running server.
    #[command(subcommand)]
    Dlq(crate::dlq::DlqCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random key and the config-file entry that holds its SHA-256.
    New(NewKeyArgs),
}

#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// Tenant the key belongs to
    #[arg(long)]
    pub tenant: String,
    /// all (ingest and read), write (ingest only), read (queries only) or admin
    #[arg(long, default_value = "all")]
    pub kind: String,
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// HTTP listen address (port 0 picks a free port) [default: 127.0.0.1:8080]
    #[arg(long, env = "AIS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// OTLP/gRPC listen address, or `off` (port 0 picks a free port) [default: 127.0.0.1:4317]
    #[arg(long, env = "AIS_OTLP_GRPC_LISTEN", value_parser = parse_listen_or_off)]
    pub otlp_grpc_listen: Option<ListenOrOff>,
    /// Directory of the write-ahead log and the store [default: ./ais-data]
    #[arg(long, env = "AIS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file (keys, prices, limits)
    #[arg(long, env = "AIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Byte cap of the write-ahead log; beyond it ingest answers 503 [default: 1 GiB]
    #[arg(long, env = "AIS_WAL_MAX_BYTES")]
    pub wal_max_bytes: Option<u64>,
    /// How long after a minute ends its window stays open for late events [default: 120]
    #[arg(long, env = "AIS_ALLOWED_LATENESS_SECS")]
    pub allowed_lateness_secs: Option<u64>,
    /// Records the stream processor reads and commits as one batch, at most (one
    /// partition's records, one store transaction) [default: 65536]
    #[arg(long, env = "AIS_MAX_BATCH_RECORDS")]
    pub max_batch_records: Option<usize>,
    /// TLS certificate chain (PEM); with --tls-key, the listener speaks HTTPS only.
    /// SIGHUP reloads both files without dropping connections
    #[arg(long, env = "AIS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, env = "AIS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Default per-tenant rate limit in events/s (tenants without their own limit in the
    /// config file); none: unlimited
    #[arg(long, env = "AIS_RATE_LIMIT_EPS")]
    pub rate_limit_eps: Option<f64>,
    /// Burst of the default rate limit, in events [default: one second of events]
    #[arg(long, env = "AIS_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<f64>,
    /// How often the anomaly evaluator looks for newly final windows, in ms [default: 5000]
    #[arg(long, env = "AIS_EVALUATE_INTERVAL_MS")]
    pub evaluate_interval_ms: Option<u64>,
    /// Oldest event accepted, in hours (the raw-event retention) [default: 168]
    #[arg(long, env = "AIS_RAW_RETENTION_HOURS")]
    pub raw_retention_hours: Option<u64>,
    /// How long rollups are kept, in days [default: 90]
    #[arg(long, env = "AIS_ROLLUP_RETENTION_DAYS")]
    pub rollup_retention_days: Option<u64>,
    /// How often retention and the compaction of final raw-event hours run, in ms [default: 60000]
    #[arg(long, env = "AIS_MAINTENANCE_INTERVAL_MS")]
    pub maintenance_interval_ms: Option<u64>,
    #[command(flatten)]
    pub pressure: PressureArgs,
    #[command(flatten)]
    pub demo: crate::demo::DemoArgs,
}

/// Backpressure at the ingest edge, shared by `serve` and `ingest`.
#[derive(Debug, Default, Clone, Args)]
pub struct PressureArgs {
    /// Requests held at once (being read, decoded or awaiting the log); beyond it 503
    /// with Retry-After [default: 1024]
    #[arg(long, env = "AIS_MAX_IN_FLIGHT_REQUESTS")]
    pub max_in_flight_requests: Option<usize>,
    /// Request body bytes held at once, compressed and decompressed; beyond it 503 with
    /// Retry-After [default: 268435456, 256 MiB]
    #[arg(long, env = "AIS_MAX_IN_FLIGHT_BYTES")]
    pub max_in_flight_bytes: Option<usize>,
}

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
    /// Raw events older than this many hours are dropped by whole days [default: 168]
    #[arg(long, env = "AIS_RAW_RETENTION_HOURS")]
    pub raw_retention_hours: Option<u64>,
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

#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// Base URL of the ingest API
    #[arg(long, env = "AIS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (none when the server has no keys)
    #[arg(long, env = "AIS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Target events per second; 0 sends as fast as the server acks
    #[arg(long, env = "AIS_RATE", default_value_t = 10_000.0)]
    pub rate: f64,
    /// Events (spans) per request [default: 1000; 512 with --format otlp, the batch
    /// span processor's default]
    #[arg(long, env = "AIS_BATCH")]
    pub batch: Option<usize>,
    /// json: POST /v1/events; otlp: OTLP/HTTP protobuf spans to POST /v1/traces
    #[arg(long, env = "AIS_FORMAT", value_enum, default_value_t = LoadFormat::Json)]
    pub format: LoadFormat,
    /// Requests in flight at once
    #[arg(long, env = "AIS_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// How long to send: 30s, 2m, or seconds
    #[arg(long, env = "AIS_DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    /// Replay arrival shape and token counts from a CSV trace (TIMESTAMP,ContextTokens,GeneratedTokens)
    #[arg(long, env = "AIS_TRACE")]
    pub trace: Option<PathBuf>,
    /// Number of synthetic models
    #[arg(long, env = "AIS_MODELS", default_value_t = 4)]
    pub models: usize,
    /// Share of requests that fail
    #[arg(long, env = "AIS_ERROR_RATE", default_value_t = 0.01)]
    pub error_rate: f64,
    /// Seed of the synthetic values (event ids stay unique per run)
    #[arg(long, env = "AIS_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Print the result as one JSON line as well
    #[arg(long)]
    pub json: bool,
}

/// What `ais loadgen` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadFormat {
    /// Native v1 events, a JSON array per request.
    Json,
    /// OTLP/HTTP protobuf: GenAI spans in an ExportTraceServiceRequest.
    Otlp,
}

/// A listener that can be turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum ListenOrOff {
    Listen(SocketAddr),
    Off,
}

impl TryFrom<String> for ListenOrOff {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        parse_listen_or_off(&text)
    }
}

pub fn parse_listen_or_off(text: &str) -> Result<ListenOrOff, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(ListenOrOff::Off);
    }
    text.trim()
        .parse()
        .map(ListenOrOff::Listen)
        .map_err(|_| format!("expected HOST:PORT (e.g. 127.0.0.1:4317) or off, found {text:?}"))
}

pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("duration must look like 30s, 2m, 1h or 500ms, found {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown duration unit {unit:?}; use ms, s, m or h")),
    };
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(format!("duration must be positive, found {text:?}"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            parse_duration("30s"),
            Ok(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            parse_duration("2m"),
            Ok(std::time::Duration::from_secs(120))
        );
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert_eq!(parse_duration("5"), Ok(std::time::Duration::from_secs(5)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn listeners_parse_or_turn_off() {
        assert_eq!(parse_listen_or_off("OFF"), Ok(ListenOrOff::Off));
        assert_eq!(
            parse_listen_or_off("127.0.0.1:0"),
            Ok(ListenOrOff::Listen("127.0.0.1:0".parse().expect("addr")))
        );
        assert!(parse_listen_or_off("4317").is_err());
    }
}
