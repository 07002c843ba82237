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
//!
//! Objectives ([`crate::slo`]) and budgets ([`crate::budget`]) see every final window,
//! empty ones included, so a burn resolves when traffic stops and a budget's day ends
//! on time. Every alert transition (anomaly, burn rate, budget; firing and resolved) is
//! logged once committed and queued in the store's outbox for each configured receiver
//! in the same commit as the state that produced it ([`crate::deliver`] sends them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ais_model::time::{minute_floor, MINUTE_MS};
use ais_rollup::RollupPartial;
use ais_store::evaluation::{
    AnomalyRecord, AnomalyState, EvaluationCommit, EvaluationStore, Resolution, ALL_TENANTS,
};
use ais_store::outbox::OutboxAlert;
use ais_store::StoreError;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::alert::{base_labels, Alert, AlertKind, AlertState};
use crate::budget::{BudgetConfig, BudgetTracker, BudgetTransition, Period, Spend, Unit};
use crate::detector::{ErrorRateConfig, ErrorRateDetector, Verdict, ZScoreConfig, ZScoreDetector};
use crate::gate::Transition;
use crate::slo::{BurnTransition, Counts, Indicator, SloConfig, SloTracker};

/// Default bound of the alert outbox: days of transitions for a receiver that is down.
pub const DEFAULT_OUTBOX_LIMIT: usize = 10_000;

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
    /// Most (tenant, model) keys tracked, and most (objective, tenant) pairs.
    pub max_keys: usize,
    pub slos: Vec<SloConfig>,
    pub budgets: Vec<BudgetConfig>,
    /// Outbox sinks each alert transition is queued for (`crate::deliver::SINK_*`).
    pub sinks: Vec<String>,
    /// Most entries the outbox keeps (oldest dropped beyond).
    pub outbox_limit: usize,
    /// Log each alert transition once committed.
    pub log_alerts: bool,
    /// Sinks that are sent firing alerts again while they fire (Alertmanager forgets
    /// an alert at its `endsAt`), and how often.
    pub renew_sinks: Vec<String>,
    pub renew_interval: Duration,
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
            slos: Vec::new(),
            budgets: Vec::new(),
            sinks: Vec::new(),
            outbox_limit: DEFAULT_OUTBOX_LIMIT,
            log_alerts: true,
            renew_sinks: Vec::new(),
            renew_interval: Duration::from_secs(3600),
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
pub(crate) struct State {
    /// Keyed by "tenant\u{1f}model".
    keys: BTreeMap<String, Detectors>,
    /// Objectives, keyed by "objective\u{1f}tenant".
    #[serde(default)]
    pub(crate) slos: BTreeMap<String, SloTracker>,
    /// Budgets, keyed by [`BudgetConfig::name`].
    #[serde(default)]
    pub(crate) budgets: BTreeMap<String, BudgetTracker>,
    /// Firing anomalies: "tenant\u{1f}model\u{1f}detector" → the window where each fired.
    #[serde(default)]
    open_anomalies: BTreeMap<String, i64>,
    /// Firing alerts by their labels, with the window end they were last queued at.
    #[serde(default)]
    firing: BTreeMap<String, (Alert, i64)>,
}

pub(crate) const KEY_SEPARATOR: char = '\u{1f}';

/// Model of a tenant's spend anomalies (all its models together).
pub const ALL_MODELS: &str = "*";

pub struct Evaluator {
    config: EvaluatorConfig,
}

/// One fired or resolved alert before it is stored.
struct Outcome {
    fired: Vec<AnomalyRecord>,
    resolved: Vec<Resolution>,
    alerts: Vec<Alert>,
}

impl Evaluator {
    pub fn new(config: EvaluatorConfig) -> Self {
        Self { config }
    }

    pub async fn run(self, store: Arc<dyn EvaluationStore>, shutdown: CancellationToken) {
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
    pub async fn pass(&self, store: &dyn EvaluationStore) -> Result<usize, StoreError> {
        let partitions = store.partition_states().await?;
        let Some(watermark) = partitions.iter().map(|p| p.watermark_ms).min() else {
            return Ok(0);
        };
        // A partition whose batches held no event yet (only dead letters) has no
        // watermark: nothing is final until the idle rule gives it one.
        if watermark == i64::MIN {
            return Ok(0);
        }
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
                alerts: Vec::new(),
            };
            let mut window = next;
            while window < chunk_end {
                let rows = by_window.remove(&window).unwrap_or_default();
                self.observe_objectives(&mut state, window, &rows, &mut outcome);
                if rows.is_empty() {
                    window += MINUTE_MS;
                    continue;
                }
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
                window += MINUTE_MS;
            }
            anomaly_alerts(&mut state, &mut outcome);
            metrics::counter!("ais_evaluator_anomalies_total")
                .increment(outcome.fired.len() as u64);
            let renewals = self.renewals(&mut state, &outcome.alerts, chunk_end);
            let bytes = serde_json::to_vec(&state)
                .map_err(|error| StoreError::Malformed(format!("evaluator state: {error}")))?;
            let mut queued = Vec::with_capacity(outcome.alerts.len() * self.config.sinks.len());
            for renewal in &renewals {
                let payload = serde_json::to_vec(renewal)
                    .map_err(|error| StoreError::Malformed(format!("alert: {error}")))?;
                for sink in &self.config.renew_sinks {
                    queued.push(OutboxAlert {
                        sink: sink.clone(),
                        key: renewal.id.clone(),
                        payload: payload.clone(),
                    });
                }
            }
            for alert in &outcome.alerts {
                let payload = serde_json::to_vec(alert)
                    .map_err(|error| StoreError::Malformed(format!("alert: {error}")))?;
                for sink in &self.config.sinks {
                    queued.push(OutboxAlert {
                        sink: sink.clone(),
                        key: alert.id.clone(),
                        payload: payload.clone(),
                    });
                }
            }
            store
                .commit_evaluation(EvaluationCommit {
                    next_window_ms: chunk_end,
                    state: bytes,
                    fired: outcome.fired,
                    resolved: outcome.resolved,
                    outbox: queued,
                    outbox_limit: self.config.outbox_limit,
                })
                .await?;
            for alert in &outcome.alerts {
                metrics::counter!("ais_alerts_total", "kind" => alert.kind.as_str(), "state" => alert.state.as_str())
                    .increment(1);
                if self.config.log_alerts {
                    tracing::warn!(
                        target: "ais::alert",
                        id = %alert.id,
                        kind = alert.kind.as_str(),
                        state = alert.state.as_str(),
                        tenant = alert.label("tenant"),
                        model = alert.label("model"),
                        alertname = alert.label("alertname"),
                        severity = alert.label("severity"),
                        "{}",
                        alert.summary()
                    );
                }
            }
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

impl Evaluator {
    /// Tracks which alerts fire after `alerts`; returns copies of those that have been
    /// firing for `renew_interval` since last queued, to send again to the renewing
    /// sinks (under a key of their own, so the outbox takes them).
    fn renewals(&self, state: &mut State, alerts: &[Alert], now_window: i64) -> Vec<Alert> {
        if self.config.renew_sinks.is_empty() {
            state.firing.clear();
            return Vec::new();
        }
        for alert in alerts {
            let identity = alert
                .labels
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join(&KEY_SEPARATOR.to_string());
            match alert.state {
                AlertState::Firing => {
                    state.firing.insert(identity, (alert.clone(), now_window));
                }
                AlertState::Resolved => {
                    state.firing.remove(&identity);
                }
            }
        }
        let interval = i64::try_from(self.config.renew_interval.as_millis()).unwrap_or(i64::MAX);
        let mut renewals = Vec::new();
        for (alert, queued_at) in state.firing.values_mut() {
            if now_window.saturating_sub(*queued_at) >= interval {
                *queued_at = now_window;
                let mut renewal = alert.clone();
                renewal.id = format!("{}-renewed-{now_window}", alert.id);
                renewals.push(renewal);
            }
        }
        renewals
    }

    /// Feeds window `window` to every objective and budget (empty windows too).
    fn observe_objectives(
        &self,
        state: &mut State,
        window: i64,
        rows: &[(String, String, RollupPartial)],
        outcome: &mut Outcome,
    ) {
        for slo in &self.config.slos {
            let mut per_tenant: BTreeMap<String, Counts> = BTreeMap::new();
            if let Some(tenant) = &slo.tenant {
                per_tenant.insert(tenant.clone(), Counts::default());
            }
            let prefix = format!("{}{KEY_SEPARATOR}", slo.name);
            for key in state.slos.keys() {
                if let Some(tenant) = key.strip_prefix(&prefix) {
                    per_tenant.entry(tenant.to_string()).or_default();
                }
            }
            for (tenant, model, partial) in rows {
                if !slo.applies_to(tenant, model) {
                    continue;
                }
                let counts = per_tenant.entry(tenant.clone()).or_default();
                let (bad, total) = match slo.indicator {
                    Indicator::Availability => (partial.errors, partial.requests),
                    Indicator::Latency { threshold_ms } => {
                        let total = partial.latency_ms.count();
                        (
                            total.saturating_sub(partial.latency_ms.count_at_most(threshold_ms)),
                            total,
                        )
                    }
                };
                counts.bad += bad;
                counts.total += total;
            }
            for (tenant, counts) in per_tenant {
                let key = format!("{prefix}{tenant}");
                if !state.slos.contains_key(&key) && state.slos.len() >= self.config.max_keys {
                    metrics::counter!("ais_evaluator_untracked_windows_total").increment(1);
                    continue;
                }
                let tracker = state.slos.entry(key).or_default();
                for transition in tracker.observe(slo, window, counts) {
                    outcome
                        .alerts
                        .push(burn_alert(slo, &tenant, window, &transition));
                }
            }
        }
        for budget in &self.config.budgets {
            let mut spend = Spend::default();
            for (tenant, model, partial) in rows {
                if budget.applies_to(tenant, model) {
                    spend.micros = spend.micros.saturating_add(partial.cost_micros);
                    spend.tokens = spend
                        .tokens
                        .saturating_add(partial.input_tokens.saturating_add(partial.output_tokens));
                }
            }
            let tracker = state.budgets.entry(budget.name()).or_default();
            for transition in tracker.observe(budget, window, spend) {
                outcome.alerts.push(budget_alert(budget, &transition));
            }
        }
    }
}

/// Alerts of the anomalies that fired or resolved in a pass, in window order.
fn anomaly_alerts(state: &mut State, outcome: &mut Outcome) {
    let mut transitions: Vec<(i64, Option<&AnomalyRecord>, Option<&Resolution>)> = outcome
        .fired
        .iter()
        .map(|anomaly| (anomaly.window_start_ms, Some(anomaly), None))
        .chain(
            outcome
                .resolved
                .iter()
                .map(|resolution| (resolution.window_start_ms, None, Some(resolution))),
        )
        .collect();
    transitions.sort_by_key(|(window, _, _)| *window);
    for (_, fired, resolved) in transitions {
        if let Some(anomaly) = fired {
            outcome.alerts.push(fired_anomaly_alert(state, anomaly));
        }
        if let Some(resolution) = resolved {
            outcome
                .alerts
                .push(resolved_anomaly_alert(state, resolution));
        }
    }
}

fn fired_anomaly_alert(state: &mut State, anomaly: &AnomalyRecord) -> Alert {
    let key = anomaly_key(&anomaly.tenant, &anomaly.model, &anomaly.detector);
    state.open_anomalies.insert(key, anomaly.window_start_ms);
    let mut labels = base_labels(
        "AisAnomaly",
        AlertKind::Anomaly,
        &anomaly.tenant,
        Some(&anomaly.model),
        "warning",
    );
    labels.insert("detector".to_string(), anomaly.detector.clone());
    labels.insert("metric".to_string(), anomaly.metric.clone());
    let summary = format!(
        "{} of {} ({}) is {:.3} against a baseline of {:.3} (score {:.1}, {})",
        anomaly.metric,
        anomaly.model,
        anomaly.tenant,
        anomaly.observed,
        anomaly.baseline,
        anomaly.score,
        anomaly.detector
    );
    let values = [
        ("observed", anomaly.observed),
        ("baseline", anomaly.baseline),
        ("score", anomaly.score),
    ];
    Alert::new(
        AlertKind::Anomaly,
        AlertState::Firing,
        labels,
        annotations(summary),
        anomaly.window_start_ms,
        None,
        values_of(&values),
    )
}

fn resolved_anomaly_alert(state: &mut State, resolution: &Resolution) -> Alert {
    let key = anomaly_key(&resolution.tenant, &resolution.model, &resolution.detector);
    let fired = state
        .open_anomalies
        .remove(&key)
        .unwrap_or(resolution.window_start_ms);
    let metric = DETECTOR_METRICS
        .iter()
        .find(|(detector, _)| *detector == resolution.detector)
        .map(|(_, metric)| *metric)
        .unwrap_or("");
    let mut labels = base_labels(
        "AisAnomaly",
        AlertKind::Anomaly,
        &resolution.tenant,
        Some(&resolution.model),
        "warning",
    );
    labels.insert("detector".to_string(), resolution.detector.clone());
    labels.insert("metric".to_string(), metric.to_string());
    let summary = format!(
        "{} of {} ({}) is back to normal ({})",
        metric, resolution.model, resolution.tenant, resolution.detector
    );
    Alert::new(
        AlertKind::Anomaly,
        AlertState::Resolved,
        labels,
        annotations(summary),
        fired,
        Some(resolution.window_start_ms + MINUTE_MS),
        BTreeMap::new(),
    )
}

/// Detector → metric, for the labels of a resolution (which carries no metric).
const DETECTOR_METRICS: &[(&str, &str)] = &[
    ("latency_p95_zscore", "latency_p95"),
    ("latency_mean_zscore", "latency_mean"),
    ("latency_per_token_zscore", "latency_ms_per_output_token"),
    ("ttft_p95_zscore", "ttft_p95"),
    ("error_rate_wilson", "error_rate"),
    ("cost_zscore", "cost_usd"),
    ("tokens_zscore", "tokens"),
];

fn anomaly_key(tenant: &str, model: &str, detector: &str) -> String {
    format!("{tenant}{KEY_SEPARATOR}{model}{KEY_SEPARATOR}{detector}")
}

fn annotations(summary: String) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_string(), summary);
    annotations
}

fn values_of(values: &[(&str, f64)]) -> BTreeMap<String, f64> {
    values
        .iter()
        .map(|(name, value)| (name.to_string(), *value))
        .collect()
}

fn burn_alert(slo: &SloConfig, tenant: &str, window: i64, transition: &BurnTransition) -> Alert {
    let pair = &slo.alerts[transition.alert];
    let mut labels = base_labels(
        "AisSloBurnRate",
        AlertKind::BurnRate,
        tenant,
        Some(&slo.model),
        &pair.severity,
    );
    labels.insert("slo".to_string(), slo.name.clone());
    let objective = match slo.indicator {
        Indicator::Availability => "availability",
        Indicator::Latency { .. } => "latency",
    };
    labels.insert("objective".to_string(), objective.to_string());
    labels.insert("long_window".to_string(), format!("{}m", pair.long_minutes));
    labels.insert(
        "short_window".to_string(),
        format!("{}m", pair.short_minutes),
    );
    let (state, ends_at, verb) = if transition.firing {
        (AlertState::Firing, None, "burns")
    } else {
        (
            AlertState::Resolved,
            Some(window + MINUTE_MS),
            "no longer burns",
        )
    };
    let summary = format!(
        "SLO {} ({:.3}% {objective} of {} for {tenant}) {verb} its error budget at {}x: {:.2}x over {} min, {:.2}x over {} min",
        slo.name,
        slo.target * 100.0,
        slo.model,
        pair.factor,
        transition.long_burn,
        pair.long_minutes,
        transition.short_burn,
        pair.short_minutes
    );
    let values = [
        ("long_burn", transition.long_burn),
        ("short_burn", transition.short_burn),
        ("factor", pair.factor),
        ("target", slo.target),
    ];
    Alert::new(
        AlertKind::BurnRate,
        state,
        labels,
        annotations(summary),
        transition.fired_window_ms,
        ends_at,
        values_of(&values),
    )
}

fn budget_alert(budget: &BudgetConfig, transition: &BudgetTransition) -> Alert {
    let severity = if transition.percent >= 100 {
        "critical"
    } else {
        "warning"
    };
    let mut labels = base_labels(
        "AisBudget",
        AlertKind::Budget,
        &budget.tenant,
        budget.model.as_deref(),
        severity,
    );
    labels.insert("period".to_string(), transition.period.as_str().to_string());
    labels.insert("unit".to_string(), transition.unit.as_str().to_string());
    labels.insert("threshold".to_string(), format!("{}%", transition.percent));
    let amount = |value: u64| match transition.unit {
        Unit::Usd => format!("${}.{:06}", value / 1_000_000, value % 1_000_000),
        Unit::Tokens => format!("{value} tokens"),
    };
    let period = match transition.period {
        Period::Day => "daily",
        Period::Month => "monthly",
    };
    let (state, ends_at, verb) = if transition.firing {
        (AlertState::Firing, None, "has spent")
    } else {
        (
            AlertState::Resolved,
            Some(transition.period.next_start(transition.period_start_ms)),
            "ended its period having spent",
        )
    };
    let summary = format!(
        "{} {verb} {} of its {period} budget of {} ({}% threshold)",
        budget.name(),
        amount(transition.spent),
        amount(transition.limit),
        transition.percent
    );
    let scale = match transition.unit {
        Unit::Usd => 1e-6,
        Unit::Tokens => 1.0,
    };
    let values = [
        ("spent", transition.spent as f64 * scale),
        ("limit", transition.limit as f64 * scale),
        ("threshold_percent", f64::from(transition.percent)),
    ];
    Alert::new(
        AlertKind::Budget,
        state,
        labels,
        annotations(summary),
        transition.fired_window_ms,
        ends_at,
        values_of(&values),
    )
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
