//! The command line: the subcommands, each with its arguments beside the command that
//! runs it (`serve::ServeArgs`, `cluster::args`, `loadgen::LoadgenArgs`, `top::TopArgs`,
//! `usage::UsageArgs`, `dlq::DlqCommand`, `keys::KeysCommand`); value parsers they share are in
//! [`crate::args`]. Every flag also reads `AIS_<FLAG>` from the environment; flags and
//! environment win over the config file, which wins over built-in defaults (see
//! [`crate::config`]).

use clap::{Parser, Subcommand};

#[cfg(all(feature = "kafka", feature = "redis"))]
use crate::cluster::args::{GatewayArgs, IngestArgs};
#[cfg(all(feature = "kafka", feature = "clickhouse"))]
use crate::cluster::args::{MigrateArgs, QueryArgs, StreamArgs};
use crate::keys::KeysCommand;
use crate::loadgen::LoadgenArgs;
use crate::serve::ServeArgs;

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
    /// The gateway as its own process: OpenAI-compatible calls routed to the upstreams
    /// of `[gateway]`, each call an event in the Kafka topic.
    #[cfg(all(feature = "kafka", feature = "redis"))]
    Gateway(GatewayArgs),
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
    /// Usage per user, model, tenant or attribute over days, as a table or a CSV
    /// export (billing).
    Usage(crate::usage::UsageArgs),
    /// Inspect and re-drive the dead-letter queue of a running server.
    #[command(subcommand)]
    Dlq(crate::dlq::DlqCommand),
    /// Check the ledger of a store: every hour balanced, every record read accounted
    /// for; exits non-zero on any drift.
    Verify(crate::verify::VerifyArgs),
}
