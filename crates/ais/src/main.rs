//! `ais`: the one binary of infra-ai-streaming.
//!
//! It turns flags, `AIS_*` environment variables and the config file into engines and
//! servers; the library crates never read any of them. Subcommands:
//! - `serve`: the whole pipeline in one process on embedded storage ([`serve`]);
//!   `--demo` feeds it synthetic traffic ([`demo`]).
//! - `ingest`, `stream`, `query`, `migrate`: the distributed pipeline over Kafka and
//!   ClickHouse ([`cluster`]), in a binary built with those engines (the default).
//! - `loadgen`: a load generator for the ingest API ([`loadgen`]).
//! - `keys new`: a new API key and its config entry ([`keys`]).
//! - `top`: a live per-model table in the terminal ([`top`]).
//! - `dlq list|replay`: the dead-letter queue of a running server ([`dlq`]).
//! - `verify`: checks a store's ledger ([`verify`]).

mod args;
mod budget_gate;
mod cli;
#[cfg(all(feature = "kafka", any(feature = "redis", feature = "clickhouse")))]
mod cluster;
mod config;
mod demo;
mod dlq;
mod keys;
mod loadgen;
mod remote;
mod serve;
mod tls;
mod top;
mod usage;
mod verify;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // reqwest is built with rustls but no provider of its own (no aws-lc), so the
    // clients of `top`, `loadgen` and `dlq` take the process default: `ring`, installed
    // before any client exists (building one without it panics). Alert delivery names
    // `ring` itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = cli::Cli::parse();
    let outcome = match cli.command {
        cli::Command::Serve(args) => serve::run(args),
        #[cfg(all(feature = "kafka", feature = "redis"))]
        cli::Command::Ingest(args) => cluster::ingest(args),
        #[cfg(all(feature = "kafka", feature = "redis"))]
        cli::Command::Gateway(args) => cluster::gateway(args),
        #[cfg(all(feature = "kafka", feature = "clickhouse"))]
        cli::Command::Stream(args) => cluster::stream(args),
        #[cfg(all(feature = "kafka", feature = "clickhouse"))]
        cli::Command::Query(args) => cluster::query(args),
        #[cfg(all(feature = "kafka", feature = "clickhouse"))]
        cli::Command::Migrate(args) => cluster::migrate(args),
        cli::Command::Loadgen(args) => loadgen::run(args),
        cli::Command::Top(args) => top::run(args),
        cli::Command::Usage(args) => usage::run(args),
        cli::Command::Dlq(command) => dlq::run(command),
        cli::Command::Verify(args) => verify::run(args),
        cli::Command::Keys(keys::KeysCommand::New(args)) => keys::new_key(&args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ais: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
