//! The resolved configuration of `ais serve`: flag or environment, else config file,
//! else built-in default. Plain API keys come only from the environment
//! (`AIS_API_KEYS=tenant:key[:kind],…`); the config file holds only their SHA-256.
//!
//! Config file (TOML), every key optional:
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_dir = "./ais-data"
//! wal_max_bytes = 1073741824
//! allowed_lateness_secs = 120
//! raw_retention_hours = 168
//! rollup_retention_days = 90
//! tls_cert = "/etc/ais/cert.pem"   # HTTPS with both; SIGHUP reloads them
//! tls_key = "/etc/ais/key.pem"
//!
//! [[keys]]                        # the key's SHA-256, never the key (`ais keys new`)
//! tenant = "acme"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! kind = "write"                  # all (default), write, read or admin
//!
//! [prices."my-finetune"]          # USD per million tokens
//! input_per_mtok = 1.0
//! output_per_mtok = 4.0
//! cache_read_per_mtok = 0.25       # optional
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ais_model::auth::Keyring;
use ais_model::price::{ModelPrice, PriceTable};
use anyhow::{bail, Context};
use serde::Deserialize;

use crate::cli::ServeArgs;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    pub wal_max_bytes: Option<u64>,
    pub allowed_lateness_secs: Option<u64>,
    pub raw_retention_hours: Option<u64>,
    pub rollup_retention_days: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub evaluate_interval_ms: Option<u64>,
    #[serde(default)]
    pub prices: BTreeMap<String, ModelPrice>,
}

/// One `[[keys]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub tenant: String,
    pub sha256: String,
    #[serde(default = "default_kind")]
    pub kind: String,
}

fn default_kind() -> String {
    "all".to_string()
}

/// The environment variable of plain keys.
pub const API_KEYS_ENV: &str = "AIS_API_KEYS";

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {} is invalid", path.display()))
    }
}

/// Everything `ais serve` needs, resolved.
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub keyring: Keyring,
    pub prices: PriceTable,
    pub wal_max_bytes: u64,
    pub allowed_lateness: Duration,
    pub raw_retention: Duration,
    pub rollup_retention: Duration,
    pub tls: Option<TlsFiles>,
    pub evaluate_interval: Duration,
}

/// Certificate chain and key of the HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./ais-data";
pub const DEFAULT_WAL_MAX_BYTES: u64 = 1 << 30;
pub const DEFAULT_ALLOWED_LATENESS_SECS: u64 = 120;
pub const DEFAULT_RAW_RETENTION_HOURS: u64 = 7 * 24;
pub const DEFAULT_ROLLUP_RETENTION_DAYS: u64 = 90;
pub const DEFAULT_EVALUATE_INTERVAL_MS: u64 = 5_000;

impl ServeConfig {
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let listen = match args.listen.or(file.listen) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };
        let key_spec = std::env::var(API_KEYS_ENV).unwrap_or_default();
        let mut keyring =
            Keyring::parse_plain(&key_spec).with_context(|| format!("invalid {API_KEYS_ENV}"))?;
        for (index, entry) in file.keys.iter().enumerate() {
            keyring
                .add_hashed(index, &entry.tenant, &entry.sha256, &entry.kind)
                .context("invalid [[keys]] in the config file")?;
        }
        if keyring.is_open() && !listen.ip().is_loopback() {
            bail!(
                "refusing to listen on {listen} without API keys: set AIS_API_KEYS (tenant:key,…) or listen on 127.0.0.1"
            );
        }
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => bail!("TLS needs both --tls-cert and --tls-key"),
        };
        let mut prices = PriceTable::with_defaults();
        for (model, price) in file.prices {
            prices.set(&model, price);
        }
        Ok(Self {
            evaluate_interval: Duration::from_millis(
                args.evaluate_interval_ms
                    .or(file.evaluate_interval_ms)
                    .unwrap_or(DEFAULT_EVALUATE_INTERVAL_MS)
                    .max(100),
            ),
            tls,
            listen,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            keyring,
            prices,
            wal_max_bytes: args
                .wal_max_bytes
                .or(file.wal_max_bytes)
                .unwrap_or(DEFAULT_WAL_MAX_BYTES),
            allowed_lateness: Duration::from_secs(
                args.allowed_lateness_secs
                    .or(file.allowed_lateness_secs)
                    .unwrap_or(DEFAULT_ALLOWED_LATENESS_SECS),
            ),
            raw_retention: Duration::from_secs(
                3600 * args
                    .raw_retention_hours
                    .or(file.raw_retention_hours)
                    .unwrap_or(DEFAULT_RAW_RETENTION_HOURS),
            ),
            rollup_retention: Duration::from_secs(
                86_400
                    * args
                        .rollup_retention_days
                        .or(file.rollup_retention_days)
                        .unwrap_or(DEFAULT_ROLLUP_RETENTION_DAYS),
            ),
        })
    }
}
