//! The resolved configuration of `ais serve`: flag or environment, else config file,
//! else built-in default. Plain API keys come only from the environment
//! (`AIS_API_KEYS=tenant:key[:kind],…`); the config file holds only their SHA-256.
//!
//! Config file (TOML), every key optional:
//! ```toml
//! listen = "127.0.0.1:8080"
//! otlp_grpc_listen = "127.0.0.1:4317"   # or "off"
//! data_dir = "./ais-data"
//! wal_max_bytes = 1073741824
//! allowed_lateness_secs = 120
//! raw_retention_hours = 168
//! rollup_retention_days = 90
//! maintenance_interval_ms = 60000  # retention and raw-event compaction
//! tls_cert = "/etc/ais/cert.pem"   # HTTPS with both; SIGHUP reloads them
//! tls_key = "/etc/ais/key.pem"
//!
//! [[keys]]                        # the key's SHA-256, never the key (`ais keys new`)
//! tenant = "acme"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! kind = "write"                  # all (default), write, read or admin
//!
//! [anomaly.latency]               # also [anomaly.ttft], [anomaly.spend]
//! baseline = "robust"              # or "ewma" (with ewma_alpha)
//! threshold = 4.0
//! k = 2                            # fire on k anomalous of the last n windows
//! n = 3
//! cooldown = 10
//!
//! [anomaly.error_rate]
//! z = 3.0
//!
//! [rate_limits.default]           # tenants without their own; none: unlimited
//! events_per_second = 50000
//! burst = 100000                   # default: one second of events
//! [rate_limits.tenants.acme]
//! events_per_second = 1000
//!
//! [prices."my-finetune"]          # USD per million tokens
//! input_per_mtok = 1.0
//! output_per_mtok = 4.0
//! cache_read_per_mtok = 0.25       # optional
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ais_evaluate::detector::{BaselineKind, ErrorRateConfig, ZScoreConfig};
use ais_evaluate::evaluator::EvaluatorConfig;
use ais_evaluate::gate::GateConfig;
use ais_ingest::ratelimit::RateLimit;
use ais_model::auth::Keyring;
use ais_model::price::{ModelPrice, PriceTable};
use anyhow::{bail, Context};
use serde::Deserialize;

use crate::cli::{ListenOrOff, ServeArgs};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub otlp_grpc_listen: Option<ListenOrOff>,
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
    pub maintenance_interval_ms: Option<u64>,
    #[serde(default)]
    pub prices: BTreeMap<String, ModelPrice>,
    #[serde(default)]
    pub anomaly: AnomalyFile,
    #[serde(default)]
    pub rate_limits: RateLimitsFile,
    /// The distributed engines (`ingest`, `stream`, `query`, `migrate`).
    pub kafka: Option<String>,
    pub topic: Option<String>,
    pub group: Option<String>,
    pub clickhouse: Option<String>,
}

/// `[rate_limits.default]` and `[rate_limits.tenants.NAME]`, in events per second.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsFile {
    pub default: Option<RateLimitFile>,
    #[serde(default)]
    pub tenants: BTreeMap<String, RateLimitFile>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub events_per_second: f64,
    /// Defaults to one second of events.
    pub burst: Option<f64>,
}

impl RateLimitFile {
    fn limit(self, what: &str) -> anyhow::Result<RateLimit> {
        let burst = self.burst.unwrap_or(self.events_per_second);
        if !(self.events_per_second > 0.0 && burst >= 1.0) {
            bail!("rate limit of {what} needs events_per_second > 0 and burst >= 1");
        }
        Ok(RateLimit {
            events_per_second: self.events_per_second,
            burst,
        })
    }
}

/// `[anomaly.*]`: detector settings; every key optional, defaults in the README.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyFile {
    #[serde(default)]
    pub latency: ZScoreFile,
    #[serde(default)]
    pub ttft: ZScoreFile,
    #[serde(default)]
    pub spend: ZScoreFile,
    #[serde(default)]
    pub error_rate: ErrorRateFile,
}

/// The k-of-n gate and cooldown of a detector section.
trait GateFile {
    fn gate_keys(&self) -> (Option<usize>, Option<usize>, Option<u32>);

    fn apply_gate(&self, mut gate: GateConfig) -> GateConfig {
        let (k, n, cooldown) = self.gate_keys();
        gate.k = k.unwrap_or(gate.k);
        gate.n = n.unwrap_or(gate.n);
        gate.cooldown = cooldown.unwrap_or(gate.cooldown);
        gate
    }
}

impl GateFile for ZScoreFile {
    fn gate_keys(&self) -> (Option<usize>, Option<usize>, Option<u32>) {
        (self.k, self.n, self.cooldown)
    }
}

impl GateFile for ErrorRateFile {
    fn gate_keys(&self) -> (Option<usize>, Option<usize>, Option<u32>) {
        (self.k, self.n, self.cooldown)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZScoreFile {
    /// "robust" (median / MAD) or "ewma".
    pub baseline: Option<String>,
    pub robust_windows: Option<usize>,
    pub ewma_alpha: Option<f64>,
    pub threshold: Option<f64>,
    pub min_baseline_windows: Option<u64>,
    pub min_requests: Option<u64>,
    pub min_relative_spread: Option<f64>,
    pub k: Option<usize>,
    pub n: Option<usize>,
    pub cooldown: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRateFile {
    pub z: Option<f64>,
    pub ratio: Option<f64>,
    pub margin: Option<f64>,
    pub alpha: Option<f64>,
    pub min_baseline_windows: Option<u64>,
    pub min_requests: Option<u64>,
    pub k: Option<usize>,
    pub n: Option<usize>,
    pub cooldown: Option<u32>,
}

impl ZScoreFile {
    fn apply(&self, section: &str) -> anyhow::Result<ZScoreConfig> {
        let mut config = ZScoreConfig::default();
        config.baseline = match self.baseline.as_deref() {
            None | Some("robust") => BaselineKind::Robust {
                windows: self.robust_windows.unwrap_or(60),
            },
            Some("ewma") => BaselineKind::Ewma {
                alpha: self.ewma_alpha.unwrap_or(0.05),
            },
            Some(other) => bail!(
                "[anomaly.{section}] baseline must be \"robust\" or \"ewma\", found {other:?}"
            ),
        };
        config.threshold = self.threshold.unwrap_or(config.threshold);
        config.min_baseline_windows = self
            .min_baseline_windows
            .unwrap_or(config.min_baseline_windows);
        config.min_requests = self.min_requests.unwrap_or(config.min_requests);
        config.min_relative_spread = self
            .min_relative_spread
            .unwrap_or(config.min_relative_spread);
        config.gate = self.apply_gate(config.gate);
        Ok(config)
    }
}

impl ErrorRateFile {
    fn apply(&self) -> ErrorRateConfig {
        let mut config = ErrorRateConfig::default();
        config.z = self.z.unwrap_or(config.z);
        config.ratio = self.ratio.unwrap_or(config.ratio);
        config.margin = self.margin.unwrap_or(config.margin);
        config.alpha = self.alpha.unwrap_or(config.alpha);
        config.min_baseline_windows = self
            .min_baseline_windows
            .unwrap_or(config.min_baseline_windows);
        config.min_requests = self.min_requests.unwrap_or(config.min_requests);
        config.gate = self.apply_gate(config.gate);
        config
    }
}

impl AnomalyFile {
    pub fn evaluator(&self, interval: Duration) -> anyhow::Result<EvaluatorConfig> {
        Ok(EvaluatorConfig {
            interval,
            latency: self.latency.apply("latency")?,
            ttft: self.ttft.apply("ttft")?,
            spend: self.spend.apply("spend")?,
            errors: self.error_rate.apply(),
            ..EvaluatorConfig::default()
        })
    }
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
    /// `None`: OTLP/gRPC is off.
    pub otlp_grpc_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub keyring: Keyring,
    pub prices: PriceTable,
    pub wal_max_bytes: u64,
    pub allowed_lateness: Duration,
    pub raw_retention: Duration,
    pub rollup_retention: Duration,
    /// How often retention and compaction run.
    pub maintenance_interval: Duration,
    pub tls: Option<TlsFiles>,
    pub evaluator: EvaluatorConfig,
    /// Limit of tenants without their own; `None`: unlimited.
    pub default_rate_limit: Option<RateLimit>,
    pub tenant_rate_limits: HashMap<String, RateLimit>,
    /// Engines of the distributed commands, as the config file names them (flags and
    /// `AIS_*` variables win; see [`crate::cluster`]).
    pub file_engines: FileEngines,
}

/// `kafka`, `topic`, `group` and `clickhouse` from the config file.
#[derive(Debug, Clone, Default)]
pub struct FileEngines {
    pub kafka: Option<String>,
    pub topic: Option<String>,
    pub group: Option<String>,
    pub clickhouse: Option<String>,
}

/// Certificate chain and key of the HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The OTLP/gRPC port exporters use by default.
pub const DEFAULT_OTLP_GRPC_LISTEN: &str = "127.0.0.1:4317";
pub const DEFAULT_DATA_DIR: &str = "./ais-data";
pub const DEFAULT_WAL_MAX_BYTES: u64 = 1 << 30;
pub const DEFAULT_ALLOWED_LATENESS_SECS: u64 = 120;
pub const DEFAULT_RAW_RETENTION_HOURS: u64 = 7 * 24;
pub const DEFAULT_ROLLUP_RETENTION_DAYS: u64 = 90;
pub const DEFAULT_MAINTENANCE_INTERVAL_MS: u64 = 60_000;
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
        let otlp_grpc_listen = match args.otlp_grpc_listen.or(file.otlp_grpc_listen) {
            Some(ListenOrOff::Listen(address)) => Some(address),
            Some(ListenOrOff::Off) => None,
            None => Some(
                DEFAULT_OTLP_GRPC_LISTEN
                    .parse()
                    .context("default OTLP/gRPC listen address")?,
            ),
        };
        for address in std::iter::once(listen).chain(otlp_grpc_listen) {
            if keyring.is_open() && !address.ip().is_loopback() {
                bail!(
                    "refusing to listen on {address} without API keys: set AIS_API_KEYS (tenant:key,…) or listen on 127.0.0.1"
                );
            }
        }
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => bail!("TLS needs both --tls-cert and --tls-key"),
        };
        if let (Some(_), Some(address)) = (&tls, otlp_grpc_listen) {
            // Keys must not cross the network in clear beside an HTTPS listener.
            if !address.ip().is_loopback() {
                bail!(
                    "OTLP/gRPC on {address} would be plaintext beside HTTPS: set --otlp-grpc-listen off or a loopback address, and send OTLP/HTTP to the HTTPS listener"
                );
            }
        }
        let mut prices = PriceTable::with_defaults();
        for (model, price) in file.prices {
            prices.set(&model, price);
        }
        let default_rate_limit = match (args.rate_limit_eps, file.rate_limits.default) {
            (Some(events_per_second), _) => Some(
                RateLimitFile {
                    events_per_second,
                    burst: args.rate_limit_burst,
                }
                .limit("--rate-limit-eps")?,
            ),
            (None, Some(limit)) => Some(limit.limit("[rate_limits.default]")?),
            (None, None) => None,
        };
        let mut tenant_rate_limits = HashMap::new();
        for (tenant, limit) in &file.rate_limits.tenants {
            tenant_rate_limits.insert(
                tenant.clone(),
                limit.limit(&format!("[rate_limits.tenants.{tenant}]"))?,
            );
        }
        Ok(Self {
            file_engines: FileEngines {
                kafka: file.kafka,
                topic: file.topic,
                group: file.group,
                clickhouse: file.clickhouse,
            },
            default_rate_limit,
            tenant_rate_limits,
            evaluator: file.anomaly.evaluator(Duration::from_millis(
                args.evaluate_interval_ms
                    .or(file.evaluate_interval_ms)
                    .unwrap_or(DEFAULT_EVALUATE_INTERVAL_MS)
                    .max(100),
            ))?,
            maintenance_interval: Duration::from_millis(
                args.maintenance_interval_ms
                    .or(file.maintenance_interval_ms)
                    .unwrap_or(DEFAULT_MAINTENANCE_INTERVAL_MS)
                    .max(100),
            ),
            tls,
            listen,
            otlp_grpc_listen,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomaly_sections_override_detector_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            [anomaly.latency]
            baseline = "ewma"
            ewma_alpha = 0.1
            threshold = 3.5
            k = 3
            n = 5
            cooldown = 20
            [anomaly.error_rate]
            z = 2.5
            min_requests = 50
            "#,
        )
        .expect("valid config");
        let config = file
            .anomaly
            .evaluator(Duration::from_secs(1))
            .expect("valid sections");
        assert_eq!(config.latency.baseline, BaselineKind::Ewma { alpha: 0.1 });
        assert_eq!(config.latency.threshold, 3.5);
        assert_eq!(
            (
                config.latency.gate.k,
                config.latency.gate.n,
                config.latency.gate.cooldown
            ),
            (3, 5, 20)
        );
        assert_eq!(
            config.ttft,
            ZScoreConfig::default(),
            "untouched sections keep defaults"
        );
        assert_eq!(config.errors.z, 2.5);
        assert_eq!(config.errors.min_requests, 50);
        assert_eq!(config.errors.ratio, ErrorRateConfig::default().ratio);
        assert_eq!(config.interval, Duration::from_secs(1));
    }

    #[test]
    fn unknown_keys_and_baselines_are_refused() {
        assert!(toml::from_str::<FileConfig>("[anomaly.latency]\nthreshhold = 3\n").is_err());
        let file: FileConfig =
            toml::from_str("[anomaly.ttft]\nbaseline = \"median\"\n").expect("parses");
        let error = file
            .anomaly
            .evaluator(Duration::from_secs(1))
            .expect_err("unknown baseline");
        assert!(
            error.to_string().contains("[anomaly.ttft] baseline"),
            "{error}"
        );
    }
}
