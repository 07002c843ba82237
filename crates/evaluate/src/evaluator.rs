//! The evaluator: one pass every interval over the windows that became final.
//!
//! A window `[m, m + 60 s)` is final when the lowest partition watermark in the store
//! has reached its end. Windows are evaluated in order, each exactly once: the position
//! (`next_window_ms`), the detectors' state and the anomalies that fired or resolved
//! are committed together, so a crash replays a pass and the store's anomaly identity
//! (tenant, model, detector, window) keeps it from firing twice.
//!
//! Detectors per (tenant, model) and per model across tenants ([`ALL_TENANTS`]):
//! latency p95, latency mean, latency per output token and TTFT p95 (robust z-score),
//! error rate (Wilson bound);
//! per tenant across its models ([`ALL_MODELS`]): cost and token spikes. The number of
//! tracked keys is bounded; keys past the bound are counted, not tracked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ais_model::time::{minute_floor, MINUTE_MS};
use ais_rollup::RollupPartial;
use ais_store::{
    AnomalyRecord, AnomalyState, EvaluationCommit, Resolution, Store, StoreError, ALL_TENANTS,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::detector::{ErrorRateConfig, ErrorRateDetector, Verdict, ZScoreConfig, ZScoreDetector};
use crate::gate::Transition;

#[derive(Debug, Clone)]
pub struct EvaluatorConfig {
    pub interval: Duration,
    pub latency: ZScoreConfig,
    pub ttft: ZScoreConfig,
    pub errors: ErrorRateConfig,
    /// Cost and token spikes per tenant (all models together).
    pub spend: ZScoreConfig,
    /// Where a first run starts: this far before the newest final window.
    pub first_lookback: Duration,
    /// Windows read from the store per query, bounding one pass's memory.
    pub windows_per_read: i64,
    /// Most (tenant, model) keys tracked.
    pub max_keys: usize,
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            latency: ZScoreConfig::default(),
            ttft: ZScoreConfig::default(),
            errors: ErrorRateConfig::default(),
            spend: ZScoreConfig::default(),
            first_lookback: Duration::from_secs(3 * 3600),
            windows_per_read: 60,
            max_keys: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Detectors {
    /// Mean latency per output token: the token mix of a window changes its latency
    /// far more than most incidents do; per token, that variance is gone.
    latency_per_token: ZScoreDetector,
    latency_p95: ZScoreDetector,
    latency_mean: ZScoreDetector,
    ttft_p95: ZScoreDetector,
    error_rate: ErrorRateDetector,
    /// Per tenant across its models only: spend and token spikes.
    cost: Option<ZScoreDetector>,
    tokens: Option<ZScoreDetector>,
}

/// Everything the evaluator remembers between windows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// Keyed by "tenant\u{1f}model".
    keys: BTreeMap<String, Detectors>,
}

const KEY_SEPARATOR: char = '\u{1f}';

/// Model of a tenant's spend anomalies (all its models together).
pub const ALL_MODELS: &str = "*";

pub struct Evaluator {
    config: EvaluatorConfig,
}

/// One fired or resolved alert before it is stored.
struct Outcome {
    fired: Vec<AnomalyRecord>,
    resolved: Vec<Resolution>,
}

impl Evaluator {
    pub fn new(config: EvaluatorConfig) -> Self {
        Self { config }
    }

    pub async fn run(self, store: Arc<dyn Store>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.pass(store.as_ref()).await {
                tracing::warn!(%error, "evaluation pass failed; retrying next interval");
            }
        }
    }

    /// Evaluates every window that became final since the last pass.
    pub async fn pass(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let partitions = store.partition_states().await?;
        let Some(watermark) = partitions.iter().map(|p| p.watermark_ms).min() else {
            return Ok(0);
        };
        // Windows m with m + 60 s <= watermark are final.
        let end = minute_floor(watermark.saturating_sub(MINUTE_MS)).saturating_add(MINUTE_MS);
        let (mut next, mut state) = match store.evaluation_state().await? {
            Some((next, bytes)) => (
                next,
                serde_json::from_slice::<State>(&bytes)
                    .map_err(|error| StoreError::Malformed(format!("evaluator state: {error}")))?,
            ),
            None => {
                let lookback =
                    i64::try_from(self.config.first_lookback.as_millis()).unwrap_or(i64::MAX);
                (minute_floor(end.saturating_sub(lookback)), State::default())
            }
        };
        let mut evaluated = 0;
        while next < end {
            let chunk_end = (next + self.config.windows_per_read * MINUTE_MS).min(end);
            let rows = store.rollups_all_tenants(next, chunk_end).await?;
            let mut by_window: BTreeMap<i64, Vec<(String, String, RollupPartial)>> =
                BTreeMap::new();
            for (tenant, row) in rows {
                by_window
                    .entry(row.minute_ms)
                    .or_default()
                    .push((tenant, row.model, row.partial));
            }
            let mut outcome = Outcome {
                fired: Vec::new(),
                resolved: Vec::new(),
            };
            for (window, rows) in by_window {
                let mut across: BTreeMap<String, RollupPartial> = BTreeMap::new();
                for (tenant, model, partial) in &rows {
                    self.observe(&mut state, tenant, model, window, partial, &mut outcome);
                    across.entry(model.clone()).or_default().merge(partial);
                }
                for (model, partial) in &across {
                    self.observe(
                        &mut state,
                        ALL_TENANTS,
                        model,
                        window,
                        partial,
                        &mut outcome,
                    );
                }
                let mut per_tenant: BTreeMap<&str, RollupPartial> = BTreeMap::new();
                for (tenant, _, partial) in &rows {
                    per_tenant
                        .entry(tenant.as_str())
                        .or_default()
                        .merge(partial);
                }
                for (tenant, partial) in &per_tenant {
                    self.observe_spend(&mut state, tenant, window, partial, &mut outcome);
                }
                evaluated += 1;
            }
            metrics::counter!("ais_evaluator_anomalies_total")
                .increment(outcome.fired.len() as u64);
            let bytes = serde_json::to_vec(&state)
                .map_err(|error| StoreError::Malformed(format!("evaluator state: {error}")))?;
            store
                .commit_evaluation(EvaluationCommit {
                    next_window_ms: chunk_end,
                    state: bytes,
                    fired: outcome.fired,
                    resolved: outcome.resolved,
                })
                .await?;
            next = chunk_end;
        }
        metrics::gauge!("ais_evaluator_keys").set(state.keys.len() as f64);
        Ok(evaluated)
    }

    fn observe(
        &self,
        state: &mut State,
        tenant: &str,
        model: &str,
        window: i64,
        partial: &RollupPartial,
        outcome: &mut Outcome,
    ) {
        let Some(detectors) = self.tracked(state, tenant, model, false) else {
            return;
        };
        let mut verdicts: Vec<(&'static str, &'static str, f64, Verdict)> = Vec::new();
        if let Some(p95) = partial.latency_quantiles().p95 {
            verdicts.push((
                "latency_p95_zscore",
                "latency_p95",
                p95,
                detectors.latency_p95.observe(p95, partial.requests),
            ));
        }
        if let Some(mean) = partial.latency_ms.mean() {
            verdicts.push((
                "latency_mean_zscore",
                "latency_mean",
                mean,
                detectors.latency_mean.observe(mean, partial.requests),
            ));
        }
        if let (Some(mean), true) = (partial.latency_ms.mean(), partial.output_tokens > 0) {
            let per_token = mean * partial.requests as f64 / partial.output_tokens as f64;
            verdicts.push((
                "latency_per_token_zscore",
                "latency_ms_per_output_token",
                per_token,
                detectors
                    .latency_per_token
                    .observe(per_token, partial.requests),
            ));
        }
        if let Some(p95) = partial.ttft_quantiles().p95 {
            verdicts.push((
                "ttft_p95_zscore",
                "ttft_p95",
                p95,
                detectors.ttft_p95.observe(p95, partial.ttft_ms.count()),
            ));
        }
        let rate = partial.error_rate().unwrap_or(0.0);
        verdicts.push((
            "error_rate_wilson",
            "error_rate",
            rate,
            detectors
                .error_rate
                .observe(partial.errors, partial.requests),
        ));
        record(tenant, model, window, verdicts, outcome);
    }

    /// The detectors of (tenant, model), created on first sight; `None` once the key
    /// bound is reached for a key not yet tracked.
    fn tracked<'s>(
        &self,
        state: &'s mut State,
        tenant: &str,
        model: &str,
        spend: bool,
    ) -> Option<&'s mut Detectors> {
        let key = format!("{tenant}{KEY_SEPARATOR}{model}");
        if !state.keys.contains_key(&key) && state.keys.len() >= self.config.max_keys {
            metrics::counter!("ais_evaluator_untracked_windows_total").increment(1);
            return None;
        }
        Some(
            state
                .keys
                .entry(key)
                .or_insert_with(|| self.detectors(spend)),
        )
    }

    fn detectors(&self, spend: bool) -> Detectors {
        Detectors {
            latency_per_token: ZScoreDetector::new(self.config.latency),
            latency_p95: ZScoreDetector::new(self.config.latency),
            latency_mean: ZScoreDetector::new(self.config.latency),
            ttft_p95: ZScoreDetector::new(self.config.ttft),
            error_rate: ErrorRateDetector::new(self.config.errors),
            cost: spend.then(|| ZScoreDetector::new(self.config.spend)),
            tokens: spend.then(|| ZScoreDetector::new(self.config.spend)),
        }
    }

    /// A tenant's spend across its models: cost (micro-dollars) and tokens per window.
    fn observe_spend(
        &self,
        state: &mut State,
        tenant: &str,
        window: i64,
        partial: &RollupPartial,
        outcome: &mut Outcome,
    ) {
        let Some(detectors) = self.tracked(state, tenant, ALL_MODELS, true) else {
            return;
        };
        let mut verdicts = Vec::new();
        let cost = partial.cost_micros as f64 / 1e6;
        if let Some(detector) = detectors.cost.as_mut() {
            verdicts.push((
                "cost_zscore",
                "cost_usd",
                cost,
                detector.observe(cost, partial.requests),
            ));
        }
        let tokens = partial.input_tokens.saturating_add(partial.output_tokens) as f64;
        if let Some(detector) = detectors.tokens.as_mut() {
            verdicts.push((
                "tokens_zscore",
                "tokens",
                tokens,
                detector.observe(tokens, partial.requests),
            ));
        }
        record(tenant, ALL_MODELS, window, verdicts, outcome);
    }
}

/// Turns detector verdicts into fired and resolved anomalies.
fn record(
    tenant: &str,
    model: &str,
    window: i64,
    verdicts: Vec<(&'static str, &'static str, f64, Verdict)>,
    outcome: &mut Outcome,
) {
    {
        for (detector, metric, observed, verdict) in verdicts {
            match verdict.transition {
                Transition::None => {}
                Transition::Fire => outcome.fired.push(AnomalyRecord {
                    tenant: tenant.to_string(),
                    model: model.to_string(),
                    detector: detector.to_string(),
                    metric: metric.to_string(),
                    window_start_ms: window,
                    observed,
                    baseline: verdict.baseline.unwrap_or(0.0),
                    score: verdict.score.unwrap_or(0.0),
                    state: AnomalyState::Firing,
                    resolved_window_ms: None,
                }),
                Transition::Resolve => outcome.resolved.push(Resolution {
                    tenant: tenant.to_string(),
                    model: model.to_string(),
                    detector: detector.to_string(),
                    window_start_ms: window,
                }),
            }
        }
    }
}
