//! The resolved configuration of each command (`ServeConfig`, `IngestConfig`,
//! `StreamConfig`, `QueryConfig`, and the engines of `ais migrate`): flag or
//! environment, else config file, else built-in default. This module owns reading the
//! file, that precedence, the top-level keys, the checks across sections, and naming
//! the section of a key the file's parser refuses. A section that belongs to a library
//! deserialises and checks itself there, with its defaults beside its type and
//! messages that name it:
//!
//! - `[anomaly.*]`, `[alerts]`, `[[slos]]`, `[[budgets]]`: ais-evaluate (`sections`,
//!   `deliver::section`, `slo::section`, `budget::section`);
//! - `[rate_limits]`: ais-ingest (`ratelimit`);
//! - `[breaker]`: ais-log (`breaker::section`), built whatever the engines;
//! - `[rollups]` and `[usage]`: ais-rollup (`dimensions::RollupsSection`,
//!   `usage::UsageSection`);
//! - `[[keys]]` and `[prices."model"]`: ais-model (`auth::KeySection`,
//!   `price::ModelPrice`);
//! - `[gateway]`: ais-gateway (`config::GatewaySection`; see the README, "Gateway").
//!
//! Every command checks the whole file, whichever sections it uses, so one file serves
//! every tier. Plain API keys come only from the environment
//! (`AIS_API_KEYS=tenant:key[:kind],…`); the config file holds only their SHA-256.
//!
//! Config file (TOML), every key optional:
//! ```toml
//! listen = "127.0.0.1:8080"
//! otlp_grpc_listen = "127.0.0.1:4317"   # or "off"
//! data_dir = "./ais-data"
//! wal_max_bytes = 1073741824
//! allowed_lateness_secs = 120
//! max_batch_records = 65536        # records per stream batch and store transaction
//! raw_retention_hours = 168
//! payload_retention_hours = 72     # payloads (input, output) of raw events; at most raw_retention_hours
//! rollup_retention_days = 90
//! maintenance_interval_ms = 60000  # retention and raw-event compaction
//! query_timeout_ms = 10000         # longest scan of raw events (breakdowns)
//! tls_cert = "/etc/ais/cert.pem"   # HTTPS with both; SIGHUP reloads them
//! tls_key = "/etc/ais/key.pem"
//!
//! [[keys]]                        # the key's SHA-256, never the key (`ais keys new`)
//! tenant = "acme"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! kind = "write"                  # all (default), write, read or admin
//!
//! [anomaly]
//! incident_gap_secs = 600          # anomalies of one model this close: one incident
//! dimensions = ["endpoint", "region"]  # each value gets the model detectors (rolled-up dimensions only)
//! max_location_keys = 10000        # (tenant, dimension, value) locations tracked at most
//! location_idle_secs = 86400       # a location without a window this long is forgotten
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
//! [rollups]                       # dimension rollups: breakdowns without a scan
//! dimensions = ["model", "provider", "operation", "endpoint", "region", "status", "error_type", "attr.feature"]
//! max_values_per_minute = 1000     # per tenant and dimension; the rest overflow to scans
//!
//! [usage]                         # exact daily usage per tenant, model, user_id, and:
//! attributes = ["customer"]        # attribute keys (without attr.) to count usage per
//! user_id = true                   # false: no per-user totals
//!
//! [rate_limits.default]           # tenants without their own; none: unlimited
//! events_per_second = 50000
//! burst = 100000                   # default: one second of events
//! [rate_limits.tenants.acme]
//! events_per_second = 1000
//!
//! [breaker]                       # `ais ingest`: the circuit around Kafka writes
//! failure_rate = 0.5               # also kafka_timeout_ms, max_timeouts, open_ms,
//! open_ms = 5000                   # window, min_calls, probes
//!
//! [[slos]]                        # see the README, "SLOs, budgets and alerts"
//! name = "chat-latency"
//! model = "gpt-4o"
//! objective = "latency"            # or "availability"
//! threshold_ms = 2000
//! target = 0.99
//!
//! [[budgets]]
//! tenant = "acme"
//! daily_usd = 100.0
//!
//! [[budgets]]                     # each user of acme, on their own (check and reserve)
//! tenant = "acme"
//! scope = "user_id"               # or user_id = "u-17", key = "ci", attr.customer = "x"
//! daily_usd = 5.0
//!
//! [alerts.webhook]
//! url = "https://alerts.internal/ais"  # http:// or https://; secret from AIS_WEBHOOK_SECRET or `secret`
//! ca_file = "/etc/ais/receiver-ca.pem" # optional: trust this PEM bundle, not the system's roots
//!
//! [alerts.alertmanager]
//! url = "http://127.0.0.1:9093"        # ca_file too, for an https:// Alertmanager
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

use ais_evaluate::budget::section::BudgetSection;
#[cfg(all(feature = "kafka", feature = "clickhouse"))]
use ais_evaluate::budget::BudgetConfig;
use ais_evaluate::deliver::section::{AlertsSection, AlertsSectionError};
use ais_evaluate::deliver::DeliveryConfig;
use ais_evaluate::evaluator::EvaluatorConfig;
use ais_evaluate::sections::AnomalySection;
use ais_evaluate::slo::section::SloSection;
#[cfg(all(feature = "kafka", feature = "clickhouse"))]
use ais_evaluate::slo::SloConfig;
use ais_gateway::config::{GatewayConfig, GatewaySection};
use ais_ingest::pressure::PressureLimits;
use ais_ingest::ratelimit::{RateLimit, RateLimitSection, RateLimitsSection};
use ais_log::breaker::section::BreakerSection;
#[cfg(all(feature = "kafka", feature = "redis"))]
use ais_log::breaker::BreakerConfig;
#[cfg(all(feature = "kafka", feature = "redis"))]
use ais_log::overflow::OverflowConfig;
use ais_model::auth::{KeyKind, KeySection, Keyring};
use ais_model::price::{ModelPrice, PriceTable};
use ais_rollup::dimensions::{DimensionRollupConfig, RollupsSection};
use ais_rollup::usage::{UsageConfig, UsageSection};
use ais_serve::breakdown::{QueryLimits, DEFAULT_QUERY_TIMEOUT};
use anyhow::{bail, Context};
use serde::Deserialize;

use crate::args::ListenOrOff;
#[cfg(all(feature = "kafka", feature = "redis"))]
use crate::cluster::args::{BreakerArgs, GatewayArgs, IngestArgs};
#[cfg(all(feature = "kafka", feature = "clickhouse"))]
use crate::cluster::args::{QueryArgs, StreamArgs};
use crate::serve::{PressureArgs, ServeArgs};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub otlp_grpc_listen: Option<ListenOrOff>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub keys: Vec<KeySection>,
    pub wal_max_bytes: Option<u64>,
    pub allowed_lateness_secs: Option<u64>,
    pub max_batch_records: Option<usize>,
    pub raw_retention_hours: Option<u64>,
    pub payload_retention_hours: Option<u64>,
    pub rollup_retention_days: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub evaluate_interval_ms: Option<u64>,
    pub maintenance_interval_ms: Option<u64>,
    pub query_timeout_ms: Option<u64>,
    #[serde(default)]
    pub prices: BTreeMap<String, ModelPrice>,
    #[serde(default)]
    pub anomaly: AnomalySection,
    #[serde(default)]
    pub rate_limits: RateLimitsSection,
    /// The distributed engines (`ingest`, `stream`, `query`, `migrate`).
    pub kafka: Option<String>,
    pub topic: Option<String>,
    pub group: Option<String>,
    pub clickhouse: Option<String>,
    /// Backpressure at the ingest edge (`serve`, `ingest`).
    pub max_in_flight_requests: Option<usize>,
    pub max_in_flight_bytes: Option<usize>,
    pub admission_target_ms: Option<u64>,
    /// The Redis overflow and the Kafka circuit breaker (`ingest`); a binary without
    /// `ingest` still accepts the overflow's keys.
    #[cfg_attr(not(all(feature = "kafka", feature = "redis")), allow(dead_code))]
    pub redis: Option<String>,
    #[cfg_attr(not(all(feature = "kafka", feature = "redis")), allow(dead_code))]
    pub overflow_max_bytes: Option<u64>,
    #[serde(default)]
    pub breaker: BreakerSection,
    #[serde(default)]
    pub slos: Vec<SloSection>,
    #[serde(default)]
    pub budgets: Vec<BudgetSection>,
    #[serde(default)]
    pub alerts: AlertsSection,
    #[serde(default)]
    pub rollups: RollupsSection,
    #[serde(default)]
    pub usage: UsageSection,
    /// The gateway of `ais serve` (`--gateway-listen`).
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub payloads: PayloadsSection,
}

/// `[payloads]`: capture of calls' `input` and `output`, off unless enabled, and what
/// is redacted from them at ingest before the log.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadsSection {
    #[serde(default)]
    pub enabled: bool,
    /// Cap of each of `input` and `output`, in bytes [default: 32768].
    pub max_bytes: Option<usize>,
    /// The built-in rules to run (`secret`, `email`, `iban`, `card`, `ip`, `phone`);
    /// absent: all of them.
    pub redact: Option<Vec<String>>,
    /// Custom rules: `[[payloads.rules]] name = "ticket"`, `pattern = "TICKET-[0-9]+"`.
    #[serde(default)]
    pub rules: Vec<PayloadRuleSection>,
    /// Which events keep their payloads (tenants without their own, below): 0 to 1 of
    /// those not kept for another reason [default: 1, every payload].
    pub sample_rate: Option<f64>,
    /// Keep the payload of every call at least this slow.
    pub keep_latency_ms: Option<f64>,
    /// Keep the payload of every call costing at least this.
    pub keep_cost_usd: Option<f64>,
    /// `[payloads.tenants.NAME]`: a tenant's own sampling.
    #[serde(default)]
    pub tenants: BTreeMap<String, PayloadSamplingSection>,
    /// The key kinds that may read payloads (`include=payloads`, `q=`): some of `all`,
    /// `read`, `admin` [default: all three].
    pub readers: Option<Vec<String>>,
}

/// Payload sampling: failed calls always keep their payloads, and so do calls at least
/// `keep_latency_ms` slow or `keep_cost_usd` costly; of the rest, `sample_rate`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadSamplingSection {
    /// 0 to 1 [default: 1, every payload].
    pub sample_rate: Option<f64>,
    pub keep_latency_ms: Option<f64>,
    pub keep_cost_usd: Option<f64>,
}

impl PayloadSamplingSection {
    fn sampling(&self, whose: &str) -> anyhow::Result<ais_ingest::payloads::Sampling> {
        let rate = self.sample_rate.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&rate) {
            bail!("{whose} sample_rate must be between 0 and 1, got {rate}");
        }
        if let Some(ms) = self
            .keep_latency_ms
            .filter(|ms| !(ms.is_finite() && *ms >= 0.0))
        {
            bail!("{whose} keep_latency_ms must be a duration >= 0, got {ms}");
        }
        let cost_micros = self
            .keep_cost_usd
            .map(|usd| {
                ais_evaluate::budget::usd_to_micros(usd).with_context(|| {
                    format!("{whose} keep_cost_usd must be an amount >= 0, got {usd}")
                })
            })
            .transpose()?;
        Ok(ais_ingest::payloads::Sampling {
            rate,
            latency_ms: self.keep_latency_ms,
            cost_micros,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadRuleSection {
    pub name: String,
    pub pattern: String,
}

impl PayloadsSection {
    /// Who reads payloads: every reading kind unless `readers` narrows it; an unknown
    /// kind, or one that cannot read, refuses the configuration, naming it.
    pub fn readers(&self) -> anyhow::Result<ais_serve::events::PayloadReaders> {
        let Some(names) = &self.readers else {
            return Ok(ais_serve::events::PayloadReaders::default());
        };
        let kinds = names
            .iter()
            .map(|name| {
                KeyKind::parse(name).with_context(|| {
                    format!("[payloads] readers: unknown key kind {name:?} (all, read or admin)")
                })
            })
            .collect::<anyhow::Result<Vec<KeyKind>>>()?;
        ais_serve::events::PayloadReaders::only(&kinds)
            .map_err(|error| anyhow::anyhow!("[payloads] readers: {error}"))
    }

    /// The capture it configures (`None` when off), its rules compiled: a rule that does
    /// not compile refuses the configuration, naming it.
    pub fn capture(&self) -> anyhow::Result<Option<std::sync::Arc<ais_ingest::PayloadCapture>>> {
        let custom: Vec<(String, String)> = self
            .rules
            .iter()
            .map(|rule| (rule.name.clone(), rule.pattern.clone()))
            .collect();
        // Checked even when off, so turning capture on never finds a broken rule.
        let redactor = ais_model::redact::Redactor::new(self.redact.as_deref(), &custom)?;
        if !self.enabled {
            return Ok(None);
        }
        let max_bytes = self
            .max_bytes
            .unwrap_or(ais_ingest::PayloadCapture::DEFAULT_MAX_BYTES);
        if !(64..=1 << 20).contains(&max_bytes) {
            bail!("[payloads] max_bytes must be between 64 and 1048576, got {max_bytes}");
        }
        let mut tenant_sampling = HashMap::new();
        for (tenant, section) in &self.tenants {
            tenant_sampling.insert(
                tenant.clone(),
                section.sampling(&format!("[payloads.tenants.{tenant}]"))?,
            );
        }
        Ok(Some(std::sync::Arc::new(ais_ingest::PayloadCapture {
            max_bytes,
            redactor,
            sampling: PayloadSamplingSection {
                sample_rate: self.sample_rate,
                keep_latency_ms: self.keep_latency_ms,
                keep_cost_usd: self.keep_cost_usd,
            }
            .sampling("[payloads]")?,
            tenant_sampling,
        })))
    }
}

/// The environment variable of the webhook's HMAC key.
pub const WEBHOOK_SECRET_ENV: &str = "AIS_WEBHOOK_SECRET";

/// Delivery settings of `[alerts]`; `webhook_secret_env` is `AIS_WEBHOOK_SECRET` when
/// set, and wins over the file's `secret`.
pub fn delivery(
    alerts: &AlertsSection,
    webhook_secret_env: Option<String>,
) -> anyhow::Result<DeliveryConfig> {
    let secret = webhook_secret_env.or_else(|| {
        alerts
            .webhook
            .as_ref()
            .and_then(|webhook| webhook.secret.clone())
    });
    alerts
        .delivery(secret.map(String::into_bytes))
        .map_err(|error| match error {
            AlertsSectionError::MissingSecret => {
                anyhow::anyhow!("{error}: set {WEBHOOK_SECRET_ENV} or secret")
            }
            other => other.into(),
        })
}

/// A rate limit checked, named as the user gave it (`[rate_limits.default]`,
/// `--rate-limit-eps`) when it is refused.
fn rate_limit(section: RateLimitSection, what: &str) -> anyhow::Result<RateLimit> {
    section
        .limit()
        .map_err(|invalid| anyhow::anyhow!("rate limit of {what} {invalid}"))
}

/// The environment variable of plain keys.
pub const API_KEYS_ENV: &str = "AIS_API_KEYS";

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|error| {
            // toml points at the line; the section it is in says which part of the
            // pipeline the key was meant for, as the other errors of the file do.
            let section = error
                .span()
                .and_then(|span| enclosing_table(&text, span.start))
                .map(|header| format!(" in {header}"))
                .unwrap_or_default();
            anyhow::Error::new(error).context(format!(
                "config file {} is invalid{section}",
                path.display()
            ))
        })
    }
}

/// The header (`[anomaly.latency]`, `[[slos]]`) of the table that holds the byte at
/// `offset` of a TOML text; `None` at the top level.
fn enclosing_table(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?;
    before.lines().rev().find_map(|line| {
        let line = line.trim_start();
        if !line.starts_with('[') {
            return None;
        }
        // Up to the first `]` outside quotes (a quoted key may hold one), and its twin
        // in an array-of-tables header.
        let mut quote = None;
        for (at, character) in line.char_indices() {
            match (quote, character) {
                (Some(open), _) if character == open => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(character),
                (None, ']') => {
                    let end = if line.starts_with("[[") && line[at + 1..].starts_with(']') {
                        at + 2
                    } else {
                        at + 1
                    };
                    return line.get(..end);
                }
                (None, _) => {}
            }
        }
        None
    })
}

/// Everything `ais serve` needs, resolved.
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// `None`: OTLP/gRPC is off.
    pub otlp_grpc_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub keyring: Keyring,
    pub wal_max_bytes: u64,
    pub allowed_lateness: Duration,
    /// Records per stream batch (one partition, one store transaction), at least 1.
    pub max_batch_records: usize,
    /// What the stream rolls up by dimension.
    pub dimensions: DimensionRollupConfig,
    /// The scopes of the usage ledger.
    pub usage: UsageConfig,
    pub raw_retention: Duration,
    /// Payloads of raw events (`--payload-retention-hours`): at most `raw_retention`.
    pub payload_retention: Duration,
    pub rollup_retention: Duration,
    /// How often retention and compaction run.
    pub maintenance_interval: Duration,
    /// Bounds of the queries that scan raw events.
    pub query_limits: QueryLimits,
    /// `[anomaly] incident_gap_secs`: how `/v1/incidents` groups anomalies.
    pub incident_gap: Duration,
    /// `[payloads] readers`: the key kinds that may read payloads.
    pub payload_readers: ais_serve::events::PayloadReaders,
    pub tls: Option<TlsFiles>,
    pub evaluator: EvaluatorConfig,
    pub delivery: DeliveryConfig,
    pub edge: EdgeConfig,
    /// The gateway, when it has a listen address (`--gateway-listen` or `[gateway]
    /// listen`); its credentials read from the environment.
    pub gateway: Option<GatewayConfig>,
}

/// What the ingest routes need beyond the log and the keys (`serve`, `ingest`).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub prices: PriceTable,
    /// Limit of tenants without their own; `None`: unlimited.
    pub default_rate_limit: Option<RateLimit>,
    pub tenant_rate_limits: HashMap<String, RateLimit>,
    /// Backpressure at the ingest edge.
    pub pressure: PressureLimits,
    /// Payload capture and redaction (`[payloads]`); `None`: off.
    pub payloads: Option<std::sync::Arc<ais_ingest::PayloadCapture>>,
}

/// `kafka`, `topic`, `group` and `clickhouse` from the config file. A binary built
/// without some engines still accepts their keys (and checks `[breaker]`), so one file
/// serves every build; it just has no command that reads them.
#[cfg_attr(
    not(all(feature = "kafka", feature = "redis", feature = "clickhouse")),
    allow(dead_code)
)]
#[derive(Debug, Clone, Default)]
pub struct FileEngines {
    pub kafka: Option<String>,
    pub topic: Option<String>,
    pub group: Option<String>,
    pub clickhouse: Option<String>,
    /// The overflow's Redis (`ingest`, `gateway`), and the shared budget holds'.
    pub redis: Option<String>,
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
pub const DEFAULT_MAX_BATCH_RECORDS: usize = ais_stream::DEFAULT_MAX_BATCH_RECORDS;
pub const DEFAULT_RAW_RETENTION_HOURS: u64 = 7 * 24;
/// Payloads are what a privacy review asks about first: kept three days by default,
/// less than the events they belong to.
pub const DEFAULT_PAYLOAD_RETENTION_HOURS: u64 = 3 * 24;
pub const DEFAULT_ROLLUP_RETENTION_DAYS: u64 = 90;
pub const DEFAULT_MAINTENANCE_INTERVAL_MS: u64 = 60_000;
pub const DEFAULT_EVALUATE_INTERVAL_MS: u64 = 5_000;
/// The topic of the events; the dead-letter topic is `TOPIC.dlq`.
#[cfg(all(feature = "kafka", any(feature = "redis", feature = "clickhouse")))]
pub const DEFAULT_TOPIC: &str = "ais.events";

/// The config file with every section resolved, whichever of them the command uses:
/// one file serves every tier of a deployment, so a mistake in any section stops each
/// command at start-up, not only the tier that reads it.
struct Checked {
    file: FileConfig,
    keyring: Keyring,
    evaluator: EvaluatorConfig,
    delivery: DeliveryConfig,
    /// The ingest edge of `serve` and `ingest`: prices, rate limits, backpressure.
    edge: EdgeConfig,
    /// Records per stream batch, at least 1 (`serve`, `stream`).
    max_batch_records: usize,
    /// What the stream rolls up by dimension (`serve`, `stream`).
    dimensions: DimensionRollupConfig,
    /// The scopes of the usage ledger (`serve`, `stream`, `query`).
    usage: UsageConfig,
    /// `[payloads] readers` (`serve`, `query`).
    payload_readers: ais_serve::events::PayloadReaders,
}

/// The command-line values that override the whole-file checks (flags and `AIS_*`).
#[derive(Default)]
struct CheckedFlags {
    rate_limit_eps: Option<f64>,
    rate_limit_burst: Option<f64>,
    pressure: PressureArgs,
    evaluate_interval_ms: Option<u64>,
    max_batch_records: Option<usize>,
    /// `ais serve --demo`: its alerts are not logged unless the file says so.
    demo: bool,
}

impl Checked {
    fn load(path: Option<&Path>, flags: CheckedFlags) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let key_spec = std::env::var(API_KEYS_ENV).unwrap_or_default();
        let mut keyring =
            Keyring::parse_plain(&key_spec).with_context(|| format!("invalid {API_KEYS_ENV}"))?;
        keyring
            .add_sections(&file.keys)
            .context("invalid [[keys]] in the config file")?;
        let mut prices = PriceTable::with_defaults();
        for (model, price) in &file.prices {
            prices.set(model, *price);
        }
        let default_rate_limit = match (flags.rate_limit_eps, file.rate_limits.default) {
            (Some(events_per_second), _) => Some(rate_limit(
                RateLimitSection {
                    events_per_second,
                    burst: flags.rate_limit_burst,
                },
                "--rate-limit-eps",
            )?),
            (None, Some(limit)) => Some(rate_limit(limit, "[rate_limits.default]")?),
            (None, None) => None,
        };
        let slos = ais_evaluate::slo::section::objectives(&file.slos)?;
        let budgets = ais_evaluate::budget::section::budgets(&file.budgets)?;
        let delivery = delivery(&file.alerts, std::env::var(WEBHOOK_SECRET_ENV).ok())?;
        let mut evaluator = file.anomaly.evaluator(Duration::from_millis(
            flags
                .evaluate_interval_ms
                .or(file.evaluate_interval_ms)
                .unwrap_or(DEFAULT_EVALUATE_INTERVAL_MS)
                .max(100),
        ))?;
        evaluator.slos = slos;
        evaluator.budgets = budgets;
        evaluator.sinks = delivery.sinks();
        if let Some((sinks, interval)) = delivery.renewing() {
            evaluator.renew_sinks = sinks;
            evaluator.renew_interval = interval;
        }
        // The demo's alerts belong in the dashboard and the API: logged one by one they
        // would bury the quick start's summary. `[alerts] log = true` brings them back.
        evaluator.log_alerts = file.alerts.log.unwrap_or(!flags.demo);
        evaluator.outbox_limit = file.alerts.outbox_limit.max(1);
        let mut tenant_rate_limits = HashMap::new();
        for (tenant, limit) in &file.rate_limits.tenants {
            tenant_rate_limits.insert(
                tenant.clone(),
                rate_limit(*limit, &format!("[rate_limits.tenants.{tenant}]"))?,
            );
        }
        // Only `ais ingest` has a breaker, but a file that would stop it stops every tier.
        file.breaker.config()?;
        // Likewise the gateway's shape; its credentials are read only where it runs.
        file.gateway.check()?;
        let max_batch_records = flags
            .max_batch_records
            .or(file.max_batch_records)
            .unwrap_or(DEFAULT_MAX_BATCH_RECORDS);
        if max_batch_records == 0 {
            bail!("max_batch_records must be at least 1 (records per stream batch)");
        }
        let dimensions = file.rollups.resolve()?;
        let usage = file.usage.resolve()?;
        // A dimension's values are watched from its rollups: one not rolled up would
        // feed its detectors nothing, silently.
        for watched in &evaluator.dimensions {
            if !dimensions
                .dimensions
                .iter()
                .any(|rolled_up| rolled_up.name() == *watched)
            {
                bail!(
                    "[anomaly] dimensions lists {watched}, which is not rolled up: add it to [rollups] dimensions (its values are watched from the dimension rollups)"
                );
            }
        }
        // A budget of a user, key or attribute is kept from the usage ledger: one whose
        // scope the ledger does not count would never see spend, silently.
        for budget in &evaluator.budgets {
            if let Some(scope) = budget.scope.usage_scope() {
                if !usage.counts(scope) {
                    bail!(
                        "budget {} limits {}, which the usage ledger does not count: {}",
                        budget.name(),
                        scope.name(),
                        match scope {
                            ais_rollup::usage::UsageScope::Attribute(key) =>
                                format!("add {key:?} to [usage] attributes"),
                            _ => "set [usage] user_id = true".to_string(),
                        }
                    );
                }
            }
        }
        let edge = EdgeConfig {
            prices,
            default_rate_limit,
            tenant_rate_limits,
            pressure: pressure(&flags.pressure, &file),
            payloads: file.payloads.capture()?,
        };
        let payload_readers = file.payloads.readers()?;
        Ok(Self {
            file,
            keyring,
            evaluator,
            delivery,
            edge,
            max_batch_records,
            dimensions,
            usage,
            payload_readers,
        })
    }

    /// The listeners and the TLS files, refused where keys would cross the network
    /// unprotected.
    fn listeners(
        &self,
        listen_flag: Option<SocketAddr>,
        otlp_grpc_flag: Option<ListenOrOff>,
        tls_cert_flag: Option<PathBuf>,
        tls_key_flag: Option<PathBuf>,
    ) -> anyhow::Result<Listeners> {
        let listen = match listen_flag.or(self.file.listen) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };
        let otlp_grpc_listen = match otlp_grpc_flag.or(self.file.otlp_grpc_listen) {
            Some(ListenOrOff::Listen(address)) => Some(address),
            Some(ListenOrOff::Off) => None,
            None => Some(
                DEFAULT_OTLP_GRPC_LISTEN
                    .parse()
                    .context("default OTLP/gRPC listen address")?,
            ),
        };
        for address in std::iter::once(listen).chain(otlp_grpc_listen) {
            if self.keyring.is_open() && !address.ip().is_loopback() {
                bail!(
                    "refusing to listen on {address} without API keys: set AIS_API_KEYS (tenant:key,…) or listen on 127.0.0.1"
                );
            }
        }
        let tls = match (
            tls_cert_flag.or_else(|| self.file.tls_cert.clone()),
            tls_key_flag.or_else(|| self.file.tls_key.clone()),
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
        Ok(Listeners {
            listen,
            otlp_grpc_listen,
            tls,
        })
    }

    /// The gateway when it listens somewhere (the flag over `[gateway] listen`), its
    /// upstreams' credentials read from the environment; refused beyond loopback
    /// without keys, like every listener.
    fn gateway(&self, listen_flag: Option<SocketAddr>) -> anyhow::Result<Option<GatewayConfig>> {
        let Some(listen) = listen_flag.or(self.file.gateway.listen) else {
            return Ok(None);
        };
        if self.keyring.is_open() && !listen.ip().is_loopback() {
            bail!(
                "refusing to run the gateway on {listen} without API keys: set AIS_API_KEYS (tenant:key,…) or listen on 127.0.0.1"
            );
        }
        let mut gateway = self
            .file
            .gateway
            .resolve(&|variable| std::env::var(variable).ok())?;
        gateway.listen = Some(listen);
        Ok(Some(gateway))
    }

    fn raw_retention(&self, flag: Option<u64>) -> Duration {
        Duration::from_secs(
            3600 * flag
                .or(self.file.raw_retention_hours)
                .unwrap_or(DEFAULT_RAW_RETENTION_HOURS),
        )
    }

    /// `--payload-retention-hours`, at most the raw-event retention (`raw`).
    fn payload_retention(&self, flag: Option<u64>, raw: Duration) -> Duration {
        let hours = flag
            .or(self.file.payload_retention_hours)
            .unwrap_or(DEFAULT_PAYLOAD_RETENTION_HOURS);
        Duration::from_secs(3600 * hours).min(raw)
    }

    fn rollup_retention(&self, flag: Option<u64>) -> Duration {
        Duration::from_secs(
            86_400
                * flag
                    .or(self.file.rollup_retention_days)
                    .unwrap_or(DEFAULT_ROLLUP_RETENTION_DAYS),
        )
    }

    fn allowed_lateness(&self, flag: Option<u64>) -> Duration {
        Duration::from_secs(
            flag.or(self.file.allowed_lateness_secs)
                .unwrap_or(DEFAULT_ALLOWED_LATENESS_SECS),
        )
    }

    fn maintenance_interval(&self, flag: Option<u64>) -> Duration {
        Duration::from_millis(
            flag.or(self.file.maintenance_interval_ms)
                .unwrap_or(DEFAULT_MAINTENANCE_INTERVAL_MS)
                .max(100),
        )
    }

    fn query_limits(&self, flag: Option<u64>) -> QueryLimits {
        QueryLimits {
            timeout: flag
                .or(self.file.query_timeout_ms)
                .map_or(DEFAULT_QUERY_TIMEOUT, |ms| Duration::from_millis(ms.max(1))),
            ..QueryLimits::default()
        }
    }

    #[cfg_attr(
        not(all(feature = "kafka", any(feature = "redis", feature = "clickhouse"))),
        allow(dead_code)
    )]
    fn engines(&self) -> FileEngines {
        FileEngines {
            kafka: self.file.kafka.clone(),
            topic: self.file.topic.clone(),
            group: self.file.group.clone(),
            clickhouse: self.file.clickhouse.clone(),
            redis: self.file.redis.clone(),
        }
    }
}

/// Backpressure at the ingest edge: the flags over the file, over the defaults.
fn pressure(flags: &PressureArgs, file: &FileConfig) -> PressureLimits {
    let defaults = PressureLimits::default();
    PressureLimits {
        max_requests: flags
            .max_in_flight_requests
            .or(file.max_in_flight_requests)
            .unwrap_or(defaults.max_requests),
        max_bytes: flags
            .max_in_flight_bytes
            .or(file.max_in_flight_bytes)
            .unwrap_or(defaults.max_bytes),
        queue_target: match flags.admission_target_ms.or(file.admission_target_ms) {
            Some(0) => None,
            Some(ms) => Some(std::time::Duration::from_millis(ms)),
            None => defaults.queue_target,
        },
    }
}

/// Where a command listens.
struct Listeners {
    listen: SocketAddr,
    otlp_grpc_listen: Option<SocketAddr>,
    tls: Option<TlsFiles>,
}

impl ServeConfig {
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Self> {
        let checked = Checked::load(
            args.config.as_deref(),
            CheckedFlags {
                rate_limit_eps: args.rate_limit_eps,
                rate_limit_burst: args.rate_limit_burst,
                pressure: args.pressure,
                evaluate_interval_ms: args.evaluate_interval_ms,
                max_batch_records: args.max_batch_records,
                demo: args.demo.demo,
            },
        )?;
        let listeners = checked.listeners(
            args.listen,
            args.otlp_grpc_listen,
            args.tls_cert,
            args.tls_key,
        )?;
        let gateway = checked.gateway(args.gateway_listen)?;
        Ok(Self {
            gateway,
            listen: listeners.listen,
            otlp_grpc_listen: listeners.otlp_grpc_listen,
            tls: listeners.tls,
            data_dir: args
                .data_dir
                .or_else(|| checked.file.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            wal_max_bytes: args
                .wal_max_bytes
                .or(checked.file.wal_max_bytes)
                .unwrap_or(DEFAULT_WAL_MAX_BYTES),
            allowed_lateness: checked.allowed_lateness(args.allowed_lateness_secs),
            max_batch_records: checked.max_batch_records,
            dimensions: checked.dimensions.clone(),
            usage: checked.usage.clone(),
            raw_retention: checked.raw_retention(args.raw_retention_hours),
            payload_retention: checked.payload_retention(
                args.payload_retention_hours,
                checked.raw_retention(args.raw_retention_hours),
            ),
            rollup_retention: checked.rollup_retention(args.rollup_retention_days),
            maintenance_interval: checked.maintenance_interval(args.maintenance_interval_ms),
            query_limits: checked.query_limits(args.query_timeout_ms),
            incident_gap: checked.file.anomaly.incident_gap(),
            payload_readers: checked.payload_readers,
            edge: checked.edge,
            keyring: checked.keyring,
            evaluator: checked.evaluator,
            delivery: checked.delivery,
        })
    }
}

/// Everything `ais ingest` needs, resolved.
#[cfg(all(feature = "kafka", feature = "redis"))]
pub struct IngestConfig {
    pub listen: SocketAddr,
    /// `None`: OTLP/gRPC is off.
    pub otlp_grpc_listen: Option<SocketAddr>,
    pub keyring: Keyring,
    pub edge: EdgeConfig,
    /// The oldest event accepted.
    pub raw_retention: Duration,
    /// The circuit breaker around Kafka writes.
    pub breaker: BreakerConfig,
    /// The Redis overflow behind the breaker; `None`: an open circuit answers 503.
    pub overflow: Option<OverflowConfig>,
    pub engines: FileEngines,
}

#[cfg(all(feature = "kafka", feature = "redis"))]
impl IngestConfig {
    pub fn resolve(args: &IngestArgs) -> anyhow::Result<Self> {
        let checked = Checked::load(
            args.config.as_deref(),
            CheckedFlags {
                rate_limit_eps: args.rate_limit_eps,
                rate_limit_burst: args.rate_limit_burst,
                pressure: args.pressure.clone(),
                ..CheckedFlags::default()
            },
        )?;
        let listeners = checked.listeners(args.listen, args.otlp_grpc_listen, None, None)?;
        let engines = checked.engines();
        Ok(Self {
            listen: listeners.listen,
            otlp_grpc_listen: listeners.otlp_grpc_listen,
            raw_retention: checked.raw_retention(args.raw_retention_hours),
            breaker: breaker(&args.breaker, &checked.file.breaker)?,
            overflow: overflow(
                &args.breaker,
                &checked.file,
                &topic(args.kafka.topic.as_deref(), &engines),
            ),
            engines,
            edge: checked.edge,
            keyring: checked.keyring,
        })
    }
}

/// Everything `ais gateway` needs, resolved.
#[cfg(all(feature = "kafka", feature = "redis"))]
pub struct GatewayCommandConfig {
    pub keyring: Keyring,
    pub edge: EdgeConfig,
    /// The oldest event accepted.
    pub raw_retention: Duration,
    pub breaker: BreakerConfig,
    pub overflow: Option<OverflowConfig>,
    pub engines: FileEngines,
    /// With its listen address.
    pub gateway: GatewayConfig,
    /// What its calls reserve against (with `--clickhouse` and Redis).
    pub budgets: Vec<BudgetConfig>,
}

#[cfg(all(feature = "kafka", feature = "redis"))]
impl GatewayCommandConfig {
    pub fn resolve(args: &GatewayArgs) -> anyhow::Result<Self> {
        let checked = Checked::load(
            args.config.as_deref(),
            CheckedFlags {
                rate_limit_eps: args.rate_limit_eps,
                rate_limit_burst: args.rate_limit_burst,
                ..CheckedFlags::default()
            },
        )?;
        let gateway = checked.gateway(args.gateway_listen)?.context(
            "ais gateway needs a listen address: --gateway-listen HOST:PORT or [gateway] listen",
        )?;
        let engines = checked.engines();
        Ok(Self {
            raw_retention: checked.raw_retention(args.raw_retention_hours),
            breaker: breaker(&args.breaker, &checked.file.breaker)?,
            overflow: overflow(
                &args.breaker,
                &checked.file,
                &topic(args.kafka.topic.as_deref(), &engines),
            ),
            engines,
            edge: checked.edge,
            keyring: checked.keyring,
            gateway,
            budgets: checked.evaluator.budgets,
        })
    }
}

/// The breaker's settings: flags and `AIS_*` over the config file's `[breaker]`.
#[cfg(all(feature = "kafka", feature = "redis"))]
fn breaker(flags: &BreakerArgs, file: &BreakerSection) -> anyhow::Result<BreakerConfig> {
    let section = BreakerSection {
        kafka_timeout_ms: flags.kafka_timeout_ms.unwrap_or(file.kafka_timeout_ms),
        failure_rate: flags.breaker_failure_rate.unwrap_or(file.failure_rate),
        max_timeouts: flags.breaker_max_timeouts.unwrap_or(file.max_timeouts),
        open_ms: flags.breaker_open_ms.unwrap_or(file.open_ms),
        ..file.clone()
    };
    // The file's own values were checked with the whole file: a refusal here is of a
    // flag's value.
    section
        .config()
        .map_err(|error| match flags.breaker_failure_rate {
            Some(failure_rate) => {
                anyhow::anyhow!("the breaker failure rate must be in (0, 1], got {failure_rate}")
            }
            None => error.into(),
        })
}

/// The Redis overflow: `--redis` and `--overflow-max-bytes` (and `AIS_*`) over the
/// config file's `redis` and `overflow_max_bytes`; the cap defaults to
/// [`OverflowConfig`]'s, and its key is the events topic's. None without a URL.
#[cfg(all(feature = "kafka", feature = "redis"))]
fn overflow(flags: &BreakerArgs, file: &FileConfig, topic: &str) -> Option<OverflowConfig> {
    let url = flags.redis.clone().or_else(|| file.redis.clone())?;
    let mut overflow = OverflowConfig::new(url, topic);
    if let Some(cap) = flags.overflow_max_bytes.or(file.overflow_max_bytes) {
        overflow.max_bytes = cap;
    }
    Some(overflow)
}

/// The topic of the events: `--topic` (or `AIS_TOPIC`), else the config file's
/// `topic`, else [`DEFAULT_TOPIC`].
#[cfg(all(feature = "kafka", any(feature = "redis", feature = "clickhouse")))]
pub fn topic(flag: Option<&str>, file: &FileEngines) -> String {
    flag.map(str::to_string)
        .or_else(|| file.topic.clone())
        .unwrap_or_else(|| DEFAULT_TOPIC.to_string())
}

/// Everything `ais stream` needs, resolved.
#[cfg(all(feature = "kafka", feature = "clickhouse"))]
pub struct StreamConfig {
    pub allowed_lateness: Duration,
    /// Records per stream batch (one partition, one store transaction), at least 1.
    pub max_batch_records: usize,
    /// What the stream rolls up by dimension.
    pub dimensions: DimensionRollupConfig,
    /// The scopes of the usage ledger.
    pub usage: UsageConfig,
    pub raw_retention: Duration,
    /// Payloads of raw events (the ClickHouse columns' TTL): at most `raw_retention`.
    pub payload_retention: Duration,
    pub rollup_retention: Duration,
    /// How often retention runs.
    pub maintenance_interval: Duration,
    pub evaluator: EvaluatorConfig,
    pub delivery: DeliveryConfig,
    pub engines: FileEngines,
}

#[cfg(all(feature = "kafka", feature = "clickhouse"))]
impl StreamConfig {
    pub fn resolve(args: &StreamArgs) -> anyhow::Result<Self> {
        let checked = Checked::load(
            args.config.as_deref(),
            CheckedFlags {
                evaluate_interval_ms: args.evaluate_interval_ms,
                max_batch_records: args.max_batch_records,
                ..CheckedFlags::default()
            },
        )?;
        // The stream's own listener serves only metrics and probes, never keys: the
        // check is of the file's listeners and TLS files.
        checked.listeners(None, Some(ListenOrOff::Off), None, None)?;
        Ok(Self {
            allowed_lateness: checked.allowed_lateness(args.allowed_lateness_secs),
            max_batch_records: checked.max_batch_records,
            dimensions: checked.dimensions.clone(),
            usage: checked.usage.clone(),
            raw_retention: checked.raw_retention(args.raw_retention_hours),
            payload_retention: checked.payload_retention(
                args.payload_retention_hours,
                checked.raw_retention(args.raw_retention_hours),
            ),
            rollup_retention: checked.rollup_retention(args.rollup_retention_days),
            maintenance_interval: checked.maintenance_interval(args.maintenance_interval_ms),
            engines: checked.engines(),
            evaluator: checked.evaluator,
            delivery: checked.delivery,
        })
    }
}

/// Everything `ais query` needs, resolved.
#[cfg(all(feature = "kafka", feature = "clickhouse"))]
pub struct QueryConfig {
    pub listen: SocketAddr,
    pub keyring: Keyring,
    /// Bounds of the queries that scan raw events.
    pub query_limits: QueryLimits,
    /// `[anomaly] incident_gap_secs`: how `/v1/incidents` groups anomalies.
    pub incident_gap: Duration,
    /// `[payloads] readers`: the key kinds that may read payloads.
    pub payload_readers: ais_serve::events::PayloadReaders,
    /// The objectives and budgets whose status the API reports.
    pub slos: Vec<SloConfig>,
    pub budgets: Vec<BudgetConfig>,
    /// The scopes of the usage ledger (which `/v1/usage` may read).
    pub usage: UsageConfig,
    pub engines: FileEngines,
}

#[cfg(all(feature = "kafka", feature = "clickhouse"))]
impl QueryConfig {
    pub fn resolve(args: &QueryArgs) -> anyhow::Result<Self> {
        let checked = Checked::load(args.config.as_deref(), CheckedFlags::default())?;
        let listeners = checked.listeners(args.listen, Some(ListenOrOff::Off), None, None)?;
        Ok(Self {
            listen: listeners.listen,
            query_limits: checked.query_limits(args.query_timeout_ms),
            incident_gap: checked.file.anomaly.incident_gap(),
            payload_readers: checked.payload_readers,
            engines: checked.engines(),
            usage: checked.usage.clone(),
            keyring: checked.keyring,
            slos: checked.evaluator.slos,
            budgets: checked.evaluator.budgets,
        })
    }
}

/// The engines of `ais migrate`, from a config file checked as every command checks it.
#[cfg(all(feature = "kafka", feature = "clickhouse"))]
pub fn migrate_engines(config: Option<&Path>) -> anyhow::Result<FileEngines> {
    let checked = Checked::load(config, CheckedFlags::default())?;
    checked.listeners(None, Some(ListenOrOff::Off), None, None)?;
    Ok(checked.engines())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ais_evaluate::budget::section as budget_section;
    use ais_evaluate::detector::{BaselineKind, ErrorRateConfig, ZScoreConfig};
    use ais_evaluate::slo::section as slo_section;
    use ais_evaluate::slo::{BurnAlertConfig, Indicator};

    /// `ais serve`'s configuration from a config file holding `text`.
    fn serve_config_of(text: &str) -> anyhow::Result<ServeConfig> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ais.toml");
        std::fs::write(&path, text).expect("config file");
        ServeConfig::resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
    }

    #[test]
    fn payload_capture_is_off_by_default_and_a_broken_rule_refuses_the_file_by_name() {
        let off = serve_config_of("").expect("valid");
        assert!(off.edge.payloads.is_none(), "capture is off unless enabled");
        let on = serve_config_of(
            "[payloads]\nenabled = true\nredact = [\"email\"]\n[[payloads.rules]]\nname = \"ticket\"\npattern = \"TICKET-[0-9]+\"\n",
        )
        .expect("valid");
        let capture = on.edge.payloads.expect("capture is on");
        assert_eq!(
            capture.max_bytes,
            ais_ingest::PayloadCapture::DEFAULT_MAX_BYTES
        );
        assert_eq!(
            capture.redactor.rule_names().collect::<Vec<_>>(),
            ["ticket", "email"]
        );
        // A broken rule stops the file even while capture is off.
        let broken = serve_config_of(
            "[payloads]\n[[payloads.rules]]\nname = \"orders\"\npattern = \"ORDER-(\"\n",
        )
        .err()
        .expect("refused");
        assert!(broken.to_string().contains("\"orders\""), "{broken:#}");
        let unknown = serve_config_of("[payloads]\nenabled = true\nredact = [\"ssn\"]\n")
            .err()
            .expect("refused");
        assert!(unknown.to_string().contains("\"ssn\""), "{unknown:#}");
        let tiny = serve_config_of("[payloads]\nenabled = true\nmax_bytes = 10\n")
            .err()
            .expect("refused");
        assert!(tiny.to_string().contains("max_bytes"), "{tiny:#}");
    }

    #[test]
    fn payload_readers_and_retention_default_and_narrow() {
        use ais_model::auth::KeyKind;
        let defaults = serve_config_of("").expect("valid");
        for kind in [KeyKind::All, KeyKind::Read, KeyKind::Admin] {
            assert!(defaults.payload_readers.allows(kind), "{kind:?}");
        }
        assert_eq!(
            defaults.payload_retention,
            Duration::from_secs(3600 * DEFAULT_PAYLOAD_RETENTION_HOURS)
        );
        assert!(defaults.payload_retention < defaults.raw_retention);
        let narrowed = serve_config_of(
            "raw_retention_hours = 10
payload_retention_hours = 48
[payloads]
readers = [\"admin\"]
",
        )
        .expect("valid");
        assert!(narrowed.payload_readers.allows(KeyKind::Admin));
        assert!(!narrowed.payload_readers.allows(KeyKind::Read));
        assert!(!narrowed.payload_readers.allows(KeyKind::All));
        assert_eq!(
            narrowed.payload_retention,
            Duration::from_secs(3600 * 10),
            "never longer than the events"
        );
        for (readers, named) in [("\"owner\"", "\"owner\""), ("\"write\"", "write keys")] {
            let error = serve_config_of(&format!("[payloads]\nreaders = [{readers}]\n"))
                .err()
                .expect("refused")
                .to_string();
            assert!(
                error.contains("[payloads] readers") && error.contains(named),
                "{error}"
            );
        }
    }

    #[test]
    fn payload_sampling_is_read_per_tenant_and_checked() {
        let config = serve_config_of(
            "[payloads]\nenabled = true\nsample_rate = 0.1\nkeep_latency_ms = 2000\n[payloads.tenants.acme]\nsample_rate = 1.0\nkeep_cost_usd = 0.5\n",
        )
        .expect("valid");
        let capture = config.edge.payloads.expect("on");
        assert_eq!(capture.sampling.rate, 0.1);
        assert_eq!(capture.sampling.latency_ms, Some(2000.0));
        assert_eq!(capture.tenant_sampling["acme"].cost_micros, Some(500_000));
        let refused = serve_config_of(
            "[payloads]\nenabled = true\n[payloads.tenants.acme]\nsample_rate = 2\n",
        )
        .err()
        .expect("refused");
        assert!(
            refused
                .to_string()
                .contains("[payloads.tenants.acme] sample_rate"),
            "{refused:#}"
        );
        let unknown = serve_config_of("[payloads]\nenabled = true\nsample = 0.5\n")
            .err()
            .expect("refused");
        assert!(format!("{unknown:#}").contains("sample"), "{unknown:#}");
    }

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

    #[test]
    fn slos_budgets_and_receivers_resolve_with_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            [[slos]]
            name = "chat-latency"
            model = "gpt-4o"
            objective = "latency"
            threshold_ms = 2000
            target = 0.99

            [[slos]]
            name = "chat-availability"
            model = "gpt-4o"
            tenant = "acme"
            objective = "availability"
            target = 0.999
            window_days = 7
            [[slos.alerts]]
            factor = 10.0
            long_minutes = 30
            short_minutes = 5

            [[budgets]]
            tenant = "acme"
            daily_usd = 0.1
            thresholds = [100, 50]

            [alerts]
            retry_initial_ms = 50
            [alerts.webhook]
            url = "http://127.0.0.1:9000/hook"
            secret = "from-file"
            [alerts.alertmanager]
            url = "http://127.0.0.1:9093"
            "#,
        )
        .expect("valid config");
        let slos = slo_section::objectives(&file.slos).expect("valid objectives");
        let budgets = budget_section::budgets(&file.budgets).expect("valid budgets");
        assert_eq!(
            slos[0].indicator,
            Indicator::Latency {
                threshold_ms: 2000.0
            }
        );
        assert_eq!((slos[0].window_days, slos[0].alerts.len()), (30, 3));
        assert_eq!(slos[0].alerts, BurnAlertConfig::workbook_defaults());
        assert_eq!(slos[1].tenant.as_deref(), Some("acme"));
        assert_eq!(slos[1].alerts[0].severity, "page");
        assert_eq!(budgets[0].daily_usd_micros, Some(100_000));
        assert_eq!(budgets[0].thresholds, vec![50, 100]);
        let delivery =
            delivery(&file.alerts, Some("from-env".to_string())).expect("valid receivers");
        assert_eq!(
            delivery.webhook.expect("webhook").secret,
            b"from-env".to_vec()
        );
        assert_eq!(delivery.retry_initial, Duration::from_millis(50));
        assert!(delivery.alertmanager.is_some());
    }

    #[test]
    fn bad_objectives_are_refused_with_their_name() {
        let file: FileConfig = toml::from_str(
            "[[slos]]\nname = \"x\"\nmodel = \"m\"\nobjective = \"latency\"\ntarget = 0.99\n",
        )
        .expect("parses");
        let error = slo_section::objectives(&file.slos).expect_err("no threshold");
        assert!(error.to_string().contains("threshold_ms"), "{error}");
        let file: FileConfig = toml::from_str("[[budgets]]\ntenant = \"acme\"\n").expect("parses");
        assert!(budget_section::budgets(&file.budgets).is_err());
        let file: FileConfig =
            toml::from_str("[alerts.webhook]\nurl = \"http://h/\"\n").expect("parses");
        let error = delivery(&file.alerts, None).expect_err("no secret");
        assert!(error.to_string().contains("AIS_WEBHOOK_SECRET"), "{error}");
    }

    #[test]
    fn receivers_take_http_or_https_and_a_bad_scheme_or_ca_file_names_the_setting() {
        let delivery = |toml_text: &str| {
            let file: FileConfig = toml::from_str(toml_text).expect("parses");
            delivery(&file.alerts, Some("secret".to_string()))
        };
        let https = delivery(
            "[alerts.webhook]\nurl = \"https://h/ais\"\n[alerts.alertmanager]\nurl = \"https://am\"\n",
        )
        .expect("https receivers on the system's roots");
        assert!(https.webhook.expect("webhook").ca_bundle.is_none());

        let error = delivery("[alerts.webhook]\nurl = \"ftp://h/ais\"\n").expect_err("ftp");
        let message = format!("{error:#}");
        assert!(
            message.contains("[alerts.webhook] url") && message.contains("ftp://h/ais"),
            "{message}"
        );
        let error = delivery("[alerts.alertmanager]\nurl = \"h:9093\"\n").expect_err("no scheme");
        assert!(
            format!("{error:#}").contains("[alerts.alertmanager] url"),
            "{error:#}"
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("no-such-ca.pem");
        let error = delivery(&format!(
            "[alerts.alertmanager]\nurl = \"https://am\"\nca_file = {:?}\n",
            missing.display().to_string()
        ))
        .expect_err("missing CA file");
        let message = format!("{error:#}");
        assert!(
            message.contains("[alerts.alertmanager] ca_file") && message.contains("no-such-ca.pem"),
            "{message}"
        );
        let error = delivery(&format!(
            "[alerts.webhook]\nurl = \"http://h/ais\"\nca_file = {:?}\n",
            missing.display().to_string()
        ))
        .expect_err("a CA bundle on http://");
        assert!(
            format!("{error:#}").contains("[alerts.webhook] ca_file"),
            "{error:#}"
        );
    }

    #[test]
    fn the_batch_size_comes_from_the_flag_else_the_file_and_is_at_least_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ais.toml");
        let resolve = |file_value: &str, flag: Option<usize>| {
            std::fs::write(&path, file_value).expect("config file");
            ServeConfig::resolve(ServeArgs {
                config: Some(path.clone()),
                max_batch_records: flag,
                ..ServeArgs::default()
            })
        };
        let from_file = resolve("max_batch_records = 500\n", None).expect("resolves");
        assert_eq!(from_file.max_batch_records, 500);
        let from_flag = resolve("max_batch_records = 500\n", Some(2_000)).expect("resolves");
        assert_eq!(from_flag.max_batch_records, 2_000);
        let default = resolve("", None).expect("resolves");
        assert_eq!(default.max_batch_records, DEFAULT_MAX_BATCH_RECORDS);
        let error = resolve("max_batch_records = 0\n", None)
            .err()
            .expect("zero is refused");
        assert!(error.to_string().contains("max_batch_records"), "{error}");
    }

    #[test]
    fn anomaly_dimensions_must_be_rolled_up() {
        let resolve = serve_config_of;
        let default = resolve("").expect("resolves");
        assert!(default.evaluator.dimensions.is_empty(), "none by default");
        let watched = resolve("[anomaly]\ndimensions = [\"endpoint\", \"region\"]\n")
            .expect("rolled up by default");
        assert_eq!(watched.evaluator.dimensions, ["endpoint", "region"]);
        let error = resolve("[anomaly]\ndimensions = [\"attr.feature\"]\n")
            .err()
            .expect("not rolled up");
        assert!(error.to_string().contains("not rolled up"), "{error:#}");
        let listed = resolve(
            "[anomaly]\ndimensions = [\"attr.feature\"]\n[rollups]\ndimensions = [\"attr.feature\"]\n",
        )
        .expect("rolled up");
        assert_eq!(listed.evaluator.dimensions, ["attr.feature"]);
    }

    #[test]
    fn the_rollups_section_sets_the_stream_dimensions_and_a_bad_one_stops_the_start() {
        let resolve = serve_config_of;
        let default = resolve("").expect("resolves");
        assert_eq!(default.dimensions, DimensionRollupConfig::default());
        let listed = resolve(
            "[rollups]\ndimensions = [\"region\", \"attr.feature\"]\nmax_values_per_minute = 9\n",
        )
        .expect("resolves");
        let names: Vec<String> = listed
            .dimensions
            .dimensions
            .iter()
            .map(|d| d.name())
            .collect();
        assert_eq!(names, ["region", "attr.feature"]);
        assert_eq!(listed.dimensions.max_values_per_minute, 9);
        let off = resolve("[rollups]\ndimensions = []\n").expect("resolves");
        assert!(off.dimensions.dimensions.is_empty());
        let error = resolve("[rollups]\ndimensions = [\"tenant\"]\n")
            .err()
            .expect("the tenant is refused");
        assert!(
            error.to_string().contains("[rollups] dimensions"),
            "{error}"
        );
    }

    #[test]
    fn the_usage_section_sets_the_ledger_scopes_and_a_bad_one_stops_the_start() {
        let resolve = serve_config_of;
        assert_eq!(resolve("").expect("resolves").usage, UsageConfig::default());
        let listed =
            resolve("[usage]\nattributes = [\"customer\"]\nuser_id = false\n").expect("resolves");
        let names: Vec<String> = listed.usage.scopes.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["tenant", "model", "key", "attr.customer"]);
        let error = resolve("[usage]\nattributes = [\"\"]\n")
            .err()
            .expect("an empty key is refused");
        assert!(error.to_string().contains("[usage] attributes"), "{error}");
        // A budget of a scope the ledger does not count would never see spend.
        let budget = "[[budgets]]\ntenant = \"acme\"\nattr.team = \"search\"\ndaily_usd = 1\n";
        let error = resolve(budget).err().expect("an uncounted scope");
        assert!(
            error
                .to_string()
                .contains("add \"team\" to [usage] attributes"),
            "{error}"
        );
        resolve(&format!("[usage]\nattributes = [\"team\"]\n\n{budget}"))
            .expect("counted, the budget is kept");
        let error = resolve("[usage]\nuser_id = false\n\n[[budgets]]\ntenant = \"acme\"\nscope = \"user_id\"\ndaily_usd = 1\n")
            .err()
            .expect("no per-user usage");
        assert!(
            error.to_string().contains("[usage] user_id = true"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_naming_its_section_key_and_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ais.toml");
        let error_of = |text: &str| {
            std::fs::write(&path, text).expect("config file");
            let error = FileConfig::load(&path).expect_err("unknown key");
            format!("{error:#}")
        };
        let message = error_of(
            "listen = \"127.0.0.1:1\"\n\n[anomaly.latency]\nthreshold = 3.0\nthreshhold = 3\n",
        );
        assert!(
            message.contains("in [anomaly.latency]")
                && message.contains("unknown field `threshhold`")
                && message.contains("line 5"),
            "{message}"
        );
        let message = error_of("[[slos]] # latency\nname = \"a\"\nmodel = \"m\"\nfoo = 1\n");
        assert!(
            message.contains("in [[slos]]:") && message.contains("unknown field `foo`"),
            "{message}"
        );
        let message = error_of(
            "[prices.\"odd]name\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 1.0\nextra = 2\n",
        );
        assert!(message.contains("in [prices.\"odd]name\"]"), "{message}");
        let message = error_of("listn = \"127.0.0.1:1\"\n");
        assert!(
            message.contains("is invalid: ") && message.contains("unknown field `listn`"),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_key_of_a_library_section_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ais.toml");
        for (text, header, key) in [
            (
                "[breaker]\nopen_ms = 10\nopen_for_ms = 10\n",
                "[breaker]",
                "open_for_ms",
            ),
            (
                "[[budgets]]\ntenant = \"acme\"\ndaily_usdd = 1.0\n",
                "[[budgets]]",
                "daily_usdd",
            ),
            (
                "[[keys]]\ntenant = \"acme\"\nsha256 = \"00\"\nkey = \"k\"\n",
                "[[keys]]",
                "key",
            ),
            (
                "[[slos]]\nname = \"a\"\nmodel = \"m\"\nobjective = \"availability\"\n\
                 target = 0.9\n[[slos.alerts]]\nfactor = 1.0\nlong_minutes = 60\n\
                 short_minutes = 5\nseverty = \"x\"\n",
                "[[slos.alerts]]",
                "severty",
            ),
        ] {
            std::fs::write(&path, text).expect("config file");
            let message = format!("{:#}", FileConfig::load(&path).expect_err("unknown key"));
            assert!(
                message.contains(&format!("in {header}:"))
                    && message.contains(&format!("unknown field `{key}`")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_bad_breaker_section_stops_every_command_not_only_ingest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ais.toml");
        std::fs::write(&path, "[breaker]\nfailure_rate = 2.0\n").expect("config file");
        let error = ServeConfig::resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .err()
        .expect("refused");
        assert_eq!(
            error.to_string(),
            "[breaker] failure_rate must be in (0, 1], got 2"
        );
    }

    #[test]
    fn the_gateway_runs_where_a_listen_address_is_given_and_the_flag_wins() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ais.toml");
        std::fs::write(
            &path,
            r#"
            [gateway]
            listen = "127.0.0.1:8081"
            [[gateway.upstreams]]
            model = "gpt-4o"
            provider = "openai"
            urls = ["http://127.0.0.1:9001/v1"]
            "#,
        )
        .expect("config file");
        let from_file = ServeConfig::resolve(ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        })
        .expect("valid");
        let gateway = from_file.gateway.expect("the file's listen runs it");
        assert_eq!(
            gateway.listen,
            Some("127.0.0.1:8081".parse().expect("address"))
        );
        assert_eq!(gateway.models.len(), 1);
        let flagged = ServeConfig::resolve(ServeArgs {
            config: Some(path),
            gateway_listen: Some("127.0.0.1:0".parse().expect("address")),
            ..ServeArgs::default()
        })
        .expect("valid");
        assert_eq!(
            flagged.gateway.and_then(|gateway| gateway.listen),
            Some("127.0.0.1:0".parse().expect("address"))
        );
        let none = serve_config_of("").expect("valid");
        assert!(none.gateway.is_none(), "no listen address: no gateway");
    }

    #[test]
    fn a_gateway_beyond_loopback_without_keys_is_refused() {
        let error = ServeConfig::resolve(ServeArgs {
            gateway_listen: Some("0.0.0.0:0".parse().expect("address")),
            ..ServeArgs::default()
        })
        .err()
        .expect("refused");
        assert!(
            error.to_string().contains("gateway on 0.0.0.0:0"),
            "{error}"
        );
    }

    #[test]
    fn a_gateway_credential_variable_that_is_not_set_refuses_serve_naming_it() {
        let text = r#"
            [gateway]
            listen = "127.0.0.1:0"
            [[gateway.upstreams]]
            model = "gpt-4o"
            provider = "openai"
            urls = ["http://127.0.0.1:9001/v1"]
            api_key_env = "AIS_TEST_GATEWAY_CREDENTIAL_NEVER_SET"
            "#;
        let error = serve_config_of(text).err().expect("refused");
        assert!(
            error
                .to_string()
                .contains("AIS_TEST_GATEWAY_CREDENTIAL_NEVER_SET"),
            "{error}"
        );
        let error = serve_config_of(
            "[gateway]
max_attempts = 0
",
        )
        .err()
        .expect("a bad shape stops serve even without a listen address");
        assert!(error.to_string().contains("max_attempts"), "{error}");
    }

    #[cfg(all(feature = "kafka", feature = "redis"))]
    #[test]
    fn breaker_flags_win_over_the_file_and_the_file_over_the_defaults() {
        let file: FileConfig =
            toml::from_str("[breaker]\nfailure_rate = 0.25\nopen_ms = 700\nprobes = 4\n")
                .expect("parses");
        let flags = BreakerArgs {
            breaker_open_ms: Some(900),
            kafka_timeout_ms: Some(1),
            ..BreakerArgs::default()
        };
        let config = breaker(&flags, &file.breaker).expect("valid");
        assert_eq!(config.failure_rate, 0.25);
        assert_eq!(config.open_for, Duration::from_millis(900));
        assert_eq!(
            config.call_timeout,
            Duration::from_millis(ais_log::breaker::section::MIN_BREAKER_MILLIS),
            "a flag's tiny timeout is raised as the file's would be"
        );
        assert_eq!(config.probes, 4);
        assert_eq!(config.window, BreakerConfig::default().window);
        let error = breaker(
            &BreakerArgs {
                breaker_failure_rate: Some(0.0),
                ..BreakerArgs::default()
            },
            &file.breaker,
        )
        .expect_err("a zero rate never opens");
        assert_eq!(
            error.to_string(),
            "the breaker failure rate must be in (0, 1], got 0"
        );
    }

    #[cfg(all(feature = "kafka", feature = "redis"))]
    #[test]
    fn the_overflow_takes_its_flags_over_the_file_and_is_off_without_a_url() {
        let file: FileConfig = toml::from_str(
            "redis = \"redis://file:6379\"\noverflow_max_bytes = 100\ntopic = \"t\"\n",
        )
        .expect("parses");
        let topic = topic(
            None,
            &FileEngines {
                topic: file.topic.clone(),
                ..FileEngines::default()
            },
        );
        let from_file = overflow(&BreakerArgs::default(), &file, &topic).expect("a URL");
        assert_eq!(from_file.url, "redis://file:6379");
        assert_eq!(from_file.max_bytes, 100);
        assert_eq!(from_file.key, "ais:overflow:t");
        let flags = BreakerArgs {
            redis: Some("redis://flag:6379".to_string()),
            overflow_max_bytes: Some(7),
            ..BreakerArgs::default()
        };
        let from_flags = overflow(&flags, &file, &topic).expect("a URL");
        assert_eq!(
            (from_flags.url.as_str(), from_flags.max_bytes),
            ("redis://flag:6379", 7)
        );
        let url_only = BreakerArgs {
            redis: Some("redis://flag:6379".to_string()),
            ..BreakerArgs::default()
        };
        let default_cap =
            overflow(&url_only, &FileConfig::default(), DEFAULT_TOPIC).expect("a URL");
        assert_eq!(
            default_cap.max_bytes,
            OverflowConfig::new("redis://flag:6379", DEFAULT_TOPIC).max_bytes
        );
        assert_eq!(default_cap.key, "ais:overflow:ais.events");
        assert!(overflow(
            &BreakerArgs::default(),
            &FileConfig::default(),
            DEFAULT_TOPIC
        )
        .is_none());
    }
}
