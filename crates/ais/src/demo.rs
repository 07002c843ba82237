//! `ais serve --demo`: synthetic inference traffic fed into the running pipeline, so
//! the dashboard, the query API and the anomaly detectors have something to show from
//! the first minute.
//!
//! - **Where it goes.** Events take the same path as a client's: `POST /v1/events` on
//!   the ingest router (called in process, so auth, rate limits, validation and the
//!   durable ack all apply). With no keys configured they land in tenant `default`;
//!   otherwise a random write-only key for tenant `demo` is added at start-up, known
//!   only to this process (read them with a key of tenant `demo`).
//! - **Arrival shape.** The Azure LLM inference trace (when found, or `--demo-trace`)
//!   replayed with its time compressed so the mean rate is `--demo-rate`, tiled; its
//!   token counts are used too. Without it, a built-in bursty process: a slow wave,
//!   30-second burst regimes and log-normal noise, Poisson counts per second.
//! - **Models.** Five, with their own share of traffic, latency profile, error rate
//!   and (from the price table) cost; an embedding model has no output tokens.
//! - **History.** At start the last [`BACKFILL`] of traffic is sent first (minutes the
//!   store already has for the tenant are skipped, the newest of them sent again and
//!   deduplicated), so the detectors have a baseline
//!   and the charts a shape at once; then traffic follows the clock, once a second.
//! - **Incidents.** One per [`INCIDENT_PERIOD`] block of wall-clock time, at a seeded
//!   offset, for [`INCIDENT_LENGTH`]: a latency spike, an error burst or a
//!   time-to-first-token regression on one model, strong enough for the detectors.
//!
//! Everything is a function of the time and the seed: an event's id comes from its
//! arrival, so a replay after a restart is deduplicated rather than counted twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ais_model::auth::{KeyKind, Keyring, DEFAULT_TENANT};
use ais_model::time::{duration_ms, unix_now_ms};
use ais_store::{QueryStore, RollupQuery};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Seed of everything random in the demo. Fixed, so an arrival's event id is the same
/// after a restart and a re-sent minute is deduplicated.
pub const SEED: u64 = 0x0a15_de70;
/// Tenant of the demo's events when keys are configured.
pub const DEMO_TENANT: &str = "demo";
/// How much history is sent at start: enough for the detectors' 30 baseline windows
/// and a few incidents after them.
pub const BACKFILL: Duration = Duration::from_secs(90 * 60);
/// One incident per block of this length.
pub const INCIDENT_PERIOD: Duration = Duration::from_secs(20 * 60);
/// How long an incident lasts: long enough for 2 of 3 windows to be anomalous.
pub const INCIDENT_LENGTH: Duration = Duration::from_secs(6 * 60);
/// Where the Azure trace is looked for when `--demo-trace` is not given, relative to
/// the working directory.
const TRACE_CANDIDATES: &[&str] = &[
    "../shared/data/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv",
    "data/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv",
];
/// Largest request the demo sends (the ingest limit is 10,000 events).
const MAX_BATCH: usize = 5_000;
const USER_POOL: u64 = 2_000;
const REGIONS: &[&str] = &["eastus", "westeurope", "japaneast"];

/// `ais serve` flags of the demo.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Feed synthetic traffic (several models, bursty arrivals, occasional incidents)
    /// into this server: tenant `default` without keys, else tenant `demo`
    #[arg(long, env = "AIS_DEMO")]
    pub demo: bool,
    /// Mean events per second of the demo traffic
    #[arg(long, env = "AIS_DEMO_RATE", default_value_t = 20.0)]
    pub demo_rate: f64,
    /// CSV trace whose arrival shape and token counts the demo replays
    /// (TIMESTAMP,ContextTokens,GeneratedTokens) [default: the Azure LLM inference
    /// trace when found under ../shared/data or data/]
    #[arg(long, env = "AIS_DEMO_TRACE")]
    pub demo_trace: Option<PathBuf>,
}

/// Demo off; the rate and trace as their flags default (for commands that resolve
/// `ais serve`'s configuration without its flags).
impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            demo: false,
            demo_rate: 20.0,
            demo_trace: None,
        }
    }
}

/// Which tenant the demo writes and the key it writes with.
pub struct Identity {
    pub tenant: String,
    key: Option<String>,
}

/// Picks the demo's tenant; with keys configured, adds a fresh write-only key for
/// tenant `demo` that never leaves this process.
pub fn identity(keyring: &mut Keyring) -> Identity {
    if keyring.is_open() {
        return Identity {
            tenant: DEFAULT_TENANT.to_string(),
            key: None,
        };
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("ais-demo-{}", ais_model::auth::to_hex(&bytes));
    keyring.add(DEMO_TENANT, &key, KeyKind::Write);
    Identity {
        tenant: DEMO_TENANT.to_string(),
        key: Some(key),
    }
}

/// A model of the demo fleet.
struct DemoModel {
    name: &'static str,
    provider: &'static str,
    operation: &'static str,
    /// Share of the traffic.
    share: f64,
    /// Median time to first token at 1,000 context tokens.
    ttft_ms: f64,
    /// Decode time per output token.
    ms_per_token: f64,
    error_rate: f64,
}

const MODELS: &[DemoModel] = &[
    DemoModel {
        name: "gpt-4o",
        provider: "openai",
        operation: "chat",
        share: 0.30,
        ttft_ms: 380.0,
        ms_per_token: 14.0,
        error_rate: 0.006,
    },
    DemoModel {
        name: "gpt-4o-mini",
        provider: "openai",
        operation: "chat",
        share: 0.26,
        ttft_ms: 240.0,
        ms_per_token: 8.0,
        error_rate: 0.004,
    },
    DemoModel {
        name: "claude-sonnet-4",
        provider: "anthropic",
        operation: "chat",
        share: 0.20,
        ttft_ms: 620.0,
        ms_per_token: 16.0,
        error_rate: 0.008,
    },
    DemoModel {
        name: "llama-3.1-8b-instruct",
        provider: "vllm",
        operation: "text_completion",
        share: 0.14,
        ttft_ms: 70.0,
        ms_per_token: 5.0,
        error_rate: 0.012,
    },
    DemoModel {
        name: "text-embedding-3-small",
        provider: "openai",
        operation: "embeddings",
        share: 0.10,
        ttft_ms: 0.0,
        ms_per_token: 0.0,
        error_rate: 0.002,
    },
];

/// The names of the demo's models.
pub fn model_names() -> impl Iterator<Item = &'static str> {
    MODELS.iter().map(|model| model.name)
}

/// What goes wrong during an incident.
#[derive(Debug, Clone, Copy, PartialEq)]
enum IncidentKind {
    /// Whole-call latency (and first token) × factor.
    LatencySpike(f64),
    /// This share of calls fail.
    ErrorBurst(f64),
    /// Time to first token × factor (prefill stalls).
    TtftRegression(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Incident {
    model: usize,
    kind: IncidentKind,
    start_ms: i64,
    end_ms: i64,
}

/// The incident of the block holding `at_ms`, if `at_ms` falls inside it.
fn incident_at(seed: u64, at_ms: i64) -> Option<Incident> {
    let period = duration_ms(INCIDENT_PERIOD);
    let length = duration_ms(INCIDENT_LENGTH);
    let block = at_ms.div_euclid(period);
    let mut rng =
        SmallRng::seed_from_u64(seed ^ (block as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let latest_start = (period - length) / 60_000;
    let start_ms = block * period + rng.random_range(1..latest_start.max(2)) * 60_000;
    // Chat models only: the embedding model has no first token and little latency.
    let model = rng.random_range(0..MODELS.len() - 1);
    let kind = match rng.random_range(0..3) {
        0 => IncidentKind::LatencySpike(rng.random_range(3.5..5.0)),
        1 => IncidentKind::ErrorBurst(rng.random_range(0.25..0.4)),
        _ => IncidentKind::TtftRegression(rng.random_range(4.0..6.0)),
    };
    let incident = Incident {
        model,
        kind,
        start_ms,
        end_ms: start_ms + length,
    };
    (incident.start_ms..incident.end_ms)
        .contains(&at_ms)
        .then_some(incident)
}

/// When requests arrive, and (from a trace) their token counts.
pub enum Arrivals {
    Trace {
        trace: crate::loadgen::Trace,
        /// Trace seconds per wall second.
        speedup: f64,
    },
    Synthetic {
        rate: f64,
        seed: u64,
    },
}

/// One arrival: when, a key unique to it (its event id), and tokens from a trace row.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Arrival {
    at_ms: i64,
    key: u64,
    tokens: Option<(u64, u64)>,
}

impl Arrivals {
    /// The trace at `--demo-trace`, else the Azure trace if found, else the built-in
    /// shape; says which on stderr.
    pub fn choose(args: &DemoArgs, seed: u64) -> anyhow::Result<Self> {
        let rate = if args.demo_rate.is_finite() && args.demo_rate > 0.0 {
            args.demo_rate
        } else {
            anyhow::bail!("--demo-rate must be a positive number of events per second");
        };
        let path = match &args.demo_trace {
            Some(path) => Some(path.clone()),
            None => TRACE_CANDIDATES
                .iter()
                .map(PathBuf::from)
                .find(|path| path.is_file()),
        };
        match path {
            Some(path) => {
                let arrivals = Self::from_trace(&path, rate)?;
                tracing::info!(trace = %path.display(), rate, "demo traffic replays the trace's arrival shape");
                Ok(arrivals)
            }
            None => {
                tracing::info!(
                    rate,
                    "demo traffic follows the built-in bursty arrival shape (no trace found)"
                );
                Ok(Self::Synthetic { rate, seed })
            }
        }
    }

    fn from_trace(path: &Path, rate: f64) -> anyhow::Result<Self> {
        let trace = crate::loadgen::load_trace(path)?;
        let trace_rate = trace.rows.len() as f64 / trace.span_s;
        Ok(Self::Trace {
            speedup: rate / trace_rate,
            trace,
        })
    }

    /// Every arrival in `[from_ms, to_ms)`, in time order.
    fn between(&self, from_ms: i64, to_ms: i64) -> Vec<Arrival> {
        let mut arrivals = Vec::new();
        match self {
            Self::Trace { trace, speedup } => {
                // Wall time t maps to trace time t × speedup, tiled every span.
                let from_s = from_ms as f64 / 1000.0 * speedup;
                let to_s = to_ms as f64 / 1000.0 * speedup;
                let rows = trace.rows.len() as u64;
                let first_lap = (from_s / trace.span_s).floor().max(0.0) as u64;
                let last_lap = (to_s / trace.span_s).floor().max(0.0) as u64;
                for lap in first_lap..=last_lap {
                    let lap_start = lap as f64 * trace.span_s;
                    let first = trace
                        .rows
                        .partition_point(|row| lap_start + row.offset_s < from_s);
                    for (index, row) in trace.rows.iter().enumerate().skip(first) {
                        let at_s = lap_start + row.offset_s;
                        if at_s >= to_s {
                            break;
                        }
                        arrivals.push(Arrival {
                            at_ms: ((at_s / speedup) * 1000.0) as i64,
                            key: lap * rows + index as u64,
                            tokens: Some((row.context_tokens, row.generated_tokens)),
                        });
                    }
                }
            }
            Self::Synthetic { rate, seed } => {
                let first_second = from_ms.div_euclid(1000);
                let last_second = (to_ms - 1).div_euclid(1000);
                for second in first_second..=last_second {
                    let mut rng =
                        SmallRng::seed_from_u64(seed ^ (second as u64).wrapping_mul(0x9E37_79B9));
                    let count = poisson(&mut rng, rate * synthetic_shape(*seed, second));
                    for k in 0..count {
                        let at_ms = second * 1000 + rng.random_range(0..1000);
                        if (from_ms..to_ms).contains(&at_ms) {
                            arrivals.push(Arrival {
                                at_ms,
                                key: (second as u64) * 100_000 + k,
                                tokens: None,
                            });
                        }
                    }
                }
                arrivals.sort_by_key(|arrival| arrival.at_ms);
            }
        }
        arrivals
    }
}

/// The built-in arrival shape around a mean of 1 at wall second `second`: a 30-minute
/// wave (±30%), 30-second regimes that are bursts (×2.5) 15% of the time and calm
/// (×0.75) otherwise, and per-second log-normal noise (σ = 0.35, mean 1).
fn synthetic_shape(seed: u64, second: i64) -> f64 {
    let wave = 1.0 + 0.3 * (2.0 * std::f64::consts::PI * second as f64 / 1800.0).sin();
    let block = second.div_euclid(30) as u64;
    let mut regime = SmallRng::seed_from_u64(seed ^ block.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let burst = if regime.random_bool(0.15) { 2.5 } else { 0.75 };
    let mut noise_rng = SmallRng::seed_from_u64(seed.rotate_left(17) ^ second as u64);
    let sigma: f64 = 0.35;
    let noise = (sigma * standard_normal(&mut noise_rng) - sigma * sigma / 2.0).exp();
    wave * burst * noise
}

fn standard_normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Poisson count with mean `mean` (Knuth's method for small means, the normal
/// approximation above 30).
fn poisson(rng: &mut SmallRng, mean: f64) -> u64 {
    if mean.is_nan() || mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        return (mean + mean.sqrt() * standard_normal(rng)).round().max(0.0) as u64;
    }
    let limit = (-mean).exp();
    let mut product: f64 = rng.random_range(0.0..1.0);
    let mut count = 0;
    while product > limit {
        count += 1;
        product *= rng.random_range(0.0..1.0);
    }
    count
}

/// The event of one arrival: its model, latency, tokens and outcome, incidents applied.
fn event_of(arrival: &Arrival, seed: u64) -> Value {
    let mut rng = SmallRng::seed_from_u64(seed ^ arrival.key.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let pick: f64 = rng.random_range(0.0..1.0);
    let mut cumulative = 0.0;
    let mut index = MODELS.len() - 1;
    for (candidate, model) in MODELS.iter().enumerate() {
        cumulative += model.share;
        if pick < cumulative {
            index = candidate;
            break;
        }
    }
    let model = &MODELS[index];
    let embedding = model.operation == "embeddings";
    let (input_tokens, output_tokens) = match arrival.tokens {
        Some((context, _)) if embedding => (context.min(8_191), 0),
        Some((context, generated)) => (context, generated.max(1)),
        None => {
            let input = (900.0 * lognormal(&mut rng, 0.9)).clamp(8.0, 64_000.0) as u64;
            let output = if embedding {
                0
            } else {
                (180.0 * lognormal(&mut rng, 0.7)).clamp(1.0, 4_000.0) as u64
            };
            (input, output)
        }
    };
    let incident = incident_at(seed, arrival.at_ms).filter(|incident| incident.model == index);
    let (mut ttft_ms, mut latency_ms) = if embedding {
        let latency = (25.0 + 0.02 * input_tokens as f64) * lognormal(&mut rng, 0.25);
        (None, latency)
    } else {
        let prefill = model.ttft_ms * (0.6 + 0.4 * input_tokens as f64 / 1000.0).min(6.0);
        let ttft = prefill * lognormal(&mut rng, 0.3);
        let decode = model.ms_per_token * output_tokens as f64 * lognormal(&mut rng, 0.2);
        (Some(ttft), ttft + decode)
    };
    let mut error_rate = model.error_rate;
    match incident.map(|incident| incident.kind) {
        Some(IncidentKind::LatencySpike(factor)) => {
            latency_ms *= factor;
            ttft_ms = ttft_ms.map(|ttft| ttft * factor);
        }
        Some(IncidentKind::TtftRegression(factor)) => {
            if let Some(ttft) = ttft_ms {
                latency_ms += ttft * (factor - 1.0);
                ttft_ms = Some(ttft * factor);
            }
        }
        Some(IncidentKind::ErrorBurst(rate)) => error_rate = rate,
        None => {}
    }
    let failed = rng.random_bool(error_rate.clamp(0.0, 1.0));
    let user = {
        // Skewed: a few users make most calls.
        let u: f64 = rng.random_range(0.0..1.0);
        (u * u * u * USER_POOL as f64) as u64
    };
    let mut trace_id = [0u8; 16];
    rng.fill_bytes(&mut trace_id);
    let mut event = json!({
        "event_id": format!("demo-{seed:x}-{}", arrival.key),
        "timestamp": arrival.at_ms,
        "model": model.name,
        "provider": model.provider,
        "operation": model.operation,
        "input_tokens": input_tokens,
        "user_id": format!("user-{user}"),
        "trace_id": ais_model::auth::to_hex(&trace_id),
        "region": REGIONS[(user % REGIONS.len() as u64) as usize],
        "status": "ok",
        // Kept only where `[payloads]` capture is on; it names the user, so a reader
        // can tell a call's payload from another's.
        "input": format!("{} request {} from user-{user}", model.operation, arrival.key),
    });
    if failed {
        let error_type = match incident.map(|incident| incident.kind) {
            Some(IncidentKind::ErrorBurst(_)) => "server_error",
            _ => ["timeout", "rate_limited", "server_error", "content_filter"]
                [rng.random_range(0..4)],
        };
        // Failed calls end early: rate limits and filters at once, timeouts late.
        latency_ms = match error_type {
            "timeout" => latency_ms.max(30_000.0),
            "server_error" => latency_ms * rng.random_range(0.1..0.6),
            _ => rng.random_range(20.0..120.0),
        };
        ttft_ms = ttft_ms.filter(|_| error_type == "server_error");
        event["status"] = json!("error");
        event["error_type"] = json!(error_type);
    } else if !embedding {
        event["output_tokens"] = json!(output_tokens);
        event["output"] = json!(format!("answer of {output_tokens} tokens"));
    }
    if let Some(ttft) = ttft_ms {
        event["ttft_ms"] = json!(round_ms(ttft.min(latency_ms)));
    }
    event["latency_ms"] = json!(round_ms(latency_ms));
    event
}

fn round_ms(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn lognormal(rng: &mut SmallRng, sigma: f64) -> f64 {
    (sigma * standard_normal(rng)).exp()
}

/// Sends demo traffic until `stop`: the missing part of the last [`BACKFILL`], then
/// every second what arrived in it.
pub async fn run(
    ingest: axum::Router,
    store: Arc<dyn QueryStore>,
    identity: Identity,
    arrivals: Arrivals,
    seed: u64,
    stop: CancellationToken,
) {
    let sender = Sender {
        ingest,
        identity,
        stop: stop.clone(),
    };
    let now = unix_now_ms();
    let backfill_from = now - duration_ms(BACKFILL);
    let resume_from = match store
        .rollups(RollupQuery {
            tenant: sender.identity.tenant.clone(),
            from_ms: backfill_from,
            to_ms: now + 60_000,
            model: None,
        })
        .await
    {
        Ok(rows) => rows
            .iter()
            .filter(|row| model_names().any(|name| name == row.model))
            // The newest minute is sent again in full: what it already has is
            // deduplicated by event id, what it missed is filled in.
            .map(|row| row.minute_ms)
            .max()
            .unwrap_or(backfill_from)
            .max(backfill_from),
        Err(error) => {
            tracing::warn!(%error, "demo: cannot read what the store has; sending the whole history");
            backfill_from
        }
    };
    tracing::info!(
        tenant = %sender.identity.tenant,
        minutes = (now - resume_from).max(0) / 60_000,
        "demo: sending recent history, then live traffic"
    );
    let mut sent_until = resume_from.min(now);
    // History, a minute at a time.
    while sent_until < now {
        let until = (sent_until + 60_000).min(now);
        let batch: Vec<Value> = arrivals
            .between(sent_until, until)
            .iter()
            .map(|arrival| event_of(arrival, seed))
            .collect();
        if !sender.send(batch).await {
            return;
        }
        sent_until = until;
    }
    // Live, once a second.
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = unix_now_ms();
        if now <= sent_until {
            continue;
        }
        let batch: Vec<Value> = arrivals
            .between(sent_until, now)
            .iter()
            .map(|arrival| event_of(arrival, seed))
            .collect();
        if !sender.send(batch).await {
            return;
        }
        sent_until = now;
    }
}

struct Sender {
    ingest: axum::Router,
    identity: Identity,
    stop: CancellationToken,
}

impl Sender {
    /// Posts `events` (in requests of at most [`MAX_BATCH`]), retrying while the
    /// server is saturated; `false` once stopped.
    async fn send(&self, events: Vec<Value>) -> bool {
        for chunk in events.chunks(MAX_BATCH) {
            let body = match serde_json::to_vec(chunk) {
                Ok(body) => body,
                Err(error) => {
                    tracing::error!(%error, "demo: cannot encode events");
                    continue;
                }
            };
            loop {
                if self.stop.is_cancelled() {
                    return false;
                }
                let mut request =
                    Request::post("/v1/events").header(header::CONTENT_TYPE, "application/json");
                if let Some(key) = &self.identity.key {
                    request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
                }
                let request = match request.body(Body::from(body.clone())) {
                    Ok(request) => request,
                    Err(error) => {
                        tracing::error!(%error, "demo: cannot build a request");
                        break;
                    }
                };
                let status = match self.ingest.clone().oneshot(request).await {
                    Ok(response) => response.status(),
                    Err(never) => match never {},
                };
                if status == StatusCode::ACCEPTED {
                    break;
                }
                if status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::SERVICE_UNAVAILABLE
                {
                    tokio::select! {
                        _ = self.stop.cancelled() => return false,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
                tracing::warn!(%status, "demo: events refused; skipping this batch");
                break;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u64 = 7;

    fn synthetic(rate: f64) -> Arrivals {
        Arrivals::Synthetic { rate, seed: SEED }
    }

    #[test]
    fn synthetic_arrivals_keep_the_mean_rate_and_are_bursty() {
        let arrivals = synthetic(20.0);
        let start = 1_795_339_200_000;
        let hour = arrivals.between(start, start + 3_600_000);
        let mean = hour.len() as f64 / 3600.0;
        assert!((16.0..24.0).contains(&mean), "mean rate {mean}");
        let mut per_second = vec![0u32; 3600];
        for arrival in &hour {
            per_second[((arrival.at_ms - start) / 1000) as usize] += 1;
        }
        let variance = per_second
            .iter()
            .map(|&count| (count as f64 - mean).powi(2))
            .sum::<f64>()
            / 3600.0;
        // Poisson alone would give a dispersion of 1.
        assert!(variance / mean > 3.0, "dispersion {}", variance / mean);
        assert!(hour.windows(2).all(|pair| pair[0].at_ms <= pair[1].at_ms));
    }

    #[test]
    fn arrivals_are_the_same_however_the_range_is_cut() {
        let arrivals = synthetic(20.0);
        let start = 1_795_339_200_000;
        let whole = arrivals.between(start, start + 120_000);
        let mut pieces = arrivals.between(start, start + 45_500);
        pieces.extend(arrivals.between(start + 45_500, start + 120_000));
        assert_eq!(whole, pieces);
    }

    #[test]
    fn trace_arrivals_are_compressed_to_the_rate_and_tiled() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("trace.csv");
        let mut csv = String::from("TIMESTAMP,ContextTokens,GeneratedTokens\n");
        for i in 0..100 {
            // Bursty: ten arrivals in the first second of every ten.
            let second = (i / 10) * 10;
            csv.push_str(&format!(
                "2023-11-16 18:00:{second:02}.{i:02}00000,{},{}\n",
                100 + i,
                10 + i
            ));
        }
        std::fs::write(&path, csv).expect("write trace");
        let arrivals = Arrivals::from_trace(&path, 50.0).expect("trace loads");
        let start = 1_795_339_200_000;
        let minute = arrivals.between(start, start + 60_000);
        let rate = minute.len() as f64 / 60.0;
        assert!((40.0..60.0).contains(&rate), "rate {rate}");
        assert!(minute.iter().all(|arrival| arrival.tokens.is_some()));
        let mut keys: Vec<u64> = minute.iter().map(|arrival| arrival.key).collect();
        keys.dedup();
        assert_eq!(keys.len(), minute.len(), "keys are unique");
    }

    #[test]
    fn events_are_valid_and_incidents_show_in_them() {
        let prices = ais_model::price::PriceTable::with_defaults();
        let arrivals = synthetic(40.0);
        let period = duration_ms(INCIDENT_PERIOD);
        let block_start = 1_795_339_200_000_i64.div_euclid(period) * period;
        let incident = (block_start..block_start + period)
            .step_by(60_000)
            .find_map(|at| incident_at(SEED, at))
            .expect("every block has an incident");
        let normal_window = (
            incident.start_ms - 10 * 60_000,
            incident.start_ms - 4 * 60_000,
        );
        let incident_window = (incident.start_ms, incident.end_ms);
        let model = MODELS[incident.model].name;
        let summarise = |(from, to): (i64, i64)| {
            let events: Vec<Value> = arrivals
                .between(from, to)
                .iter()
                .map(|arrival| event_of(arrival, SEED))
                .collect();
            let body = serde_json::to_vec(&events).expect("encode");
            let context = ais_model::decode::ValidationContext {
                now_ms: to,
                max_age_ms: 3_600_000,
                max_future_ms: 300_000,
                max_events: 100_000,
                prices: &prices,
                payload_max_bytes: None,
            };
            let decoded = ais_model::decode::decode_events(
                &body,
                ais_model::decode::BodyFormat::Json,
                &context,
            )
            .expect("valid JSON");
            assert!(decoded.rejected.is_empty(), "{:?}", decoded.rejected);
            let mine: Vec<&Value> = events.iter().filter(|e| e["model"] == model).collect();
            let errors = mine.iter().filter(|e| e["status"] == "error").count() as f64;
            let mut latencies: Vec<f64> = mine
                .iter()
                .filter_map(|e| e["latency_ms"].as_f64())
                .collect();
            latencies.sort_by(f64::total_cmp);
            let median = latencies[latencies.len() / 2];
            let mut ttfts: Vec<f64> = mine.iter().filter_map(|e| e["ttft_ms"].as_f64()).collect();
            ttfts.sort_by(f64::total_cmp);
            let ttft_median = ttfts[ttfts.len() / 2];
            (errors / mine.len() as f64, median, ttft_median)
        };
        let normal = summarise(normal_window);
        let during = summarise(incident_window);
        match incident.kind {
            IncidentKind::ErrorBurst(_) => assert!(
                during.0 > 10.0 * normal.0.max(0.01),
                "{normal:?} {during:?}"
            ),
            IncidentKind::LatencySpike(_) => {
                assert!(during.1 > 2.5 * normal.1, "{normal:?} {during:?}")
            }
            IncidentKind::TtftRegression(_) => {
                assert!(during.2 > 3.0 * normal.2, "{normal:?} {during:?}")
            }
        }
    }

    #[test]
    fn without_keys_the_demo_writes_tenant_default_else_demo_with_a_write_key() {
        let mut open = Keyring::default();
        assert_eq!(identity(&mut open).tenant, DEFAULT_TENANT);
        assert!(open.is_open());
        let mut keyed = Keyring::parse_plain("acme:k1").expect("keys");
        let demo = identity(&mut keyed);
        assert_eq!(demo.tenant, DEMO_TENANT);
        let key = demo.key.expect("a key");
        let header = format!("Bearer {key}");
        let principal = keyed
            .authorize_ingest(Some(header.as_bytes()))
            .expect("the demo key ingests");
        assert_eq!(principal.tenant, DEMO_TENANT);
        assert!(keyed.authorize_read(Some(header.as_bytes())).is_err());
    }
}
