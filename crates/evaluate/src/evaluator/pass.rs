//! The decisions of a pass over a chunk of final windows, without I/O or a clock:
//! given the state and the rows the store holds for `[from, to)`, which anomalies fire
//! and resolve, which alerts transition, and what to queue in the outbox. The store
//! is [`super::Evaluator::pass`]'s business, which commits the state this leaves
//! with the [`Outcome`] it returns.
//!
//! Per window, in order: objectives and budgets see it (empty or not, so a burn
//! resolves when traffic stops and a budget's day ends on time); then, if it has
//! rows, the detectors of each (tenant, model), of each model across tenants and of
//! each tenant's spend across its models. Keys past `max_keys` are counted, not
//! tracked. Alerts come in window order; firing ones are renewed to the renewing
//! sinks every `renew_interval` of event time.

use std::collections::BTreeMap;
use std::ops::Range;

use ais_model::time::MINUTE_MS;
use ais_rollup::RollupPartial;
use ais_store::evaluation::{AnomalyRecord, AnomalyState, Resolution, ALL_TENANTS};
use ais_store::outbox::OutboxAlert;
use ais_store::query::RollupRow;

use super::alerts;
use super::keys::{AlertIdentity, AnomalyKey, DetectorKey, ObjectiveKey};
use super::state::{Detectors, Reading, State};
use super::{EvaluatorConfig, ALL_MODELS};
use crate::alert::{Alert, AlertState};
use crate::budget::Spend;
use crate::gate::Transition;
use crate::slo::{Counts, Indicator, SloTracker};

/// What evaluating a chunk of windows decided, to commit with the state it left.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) fired: Vec<AnomalyRecord>,
    pub(crate) resolved: Vec<Resolution>,
    /// Alert transitions (anomalies, burn rates, budgets), in window order.
    pub(crate) alerts: Vec<Alert>,
    /// Renewals for the renewing sinks, then each transition for every sink.
    pub(crate) outbox: Vec<OutboxAlert>,
    /// Windows that held rows.
    pub(crate) evaluated: usize,
    /// Times a key past the bound was not tracked (detector keys and objective pairs).
    pub(crate) untracked: u64,
}

/// Evaluates the final windows `[windows.start, windows.end)` (minute-aligned) with
/// `rows` as [`ais_store::EvaluationStore::rollups_all_tenants`] returns them; rows of
/// other windows are ignored. Fails only if an alert cannot be serialised.
pub(crate) fn evaluate_windows(
    config: &EvaluatorConfig,
    state: &mut State,
    windows: Range<i64>,
    rows: Vec<(String, RollupRow)>,
) -> Result<Outcome, serde_json::Error> {
    let mut by_window: BTreeMap<i64, Vec<WindowRow>> = BTreeMap::new();
    for (tenant, row) in rows {
        by_window.entry(row.minute_ms).or_default().push(WindowRow {
            tenant,
            model: row.model,
            partial: row.partial,
        });
    }
    let mut chunk = Chunk {
        config,
        state,
        outcome: Outcome::default(),
    };
    let mut window = windows.start;
    while window < windows.end {
        let rows = by_window.remove(&window).unwrap_or_default();
        chunk.observe_objectives(window, &rows);
        if !rows.is_empty() {
            chunk.observe_detectors(window, &rows);
            chunk.outcome.evaluated += 1;
        }
        window += MINUTE_MS;
    }
    chunk.anomaly_alerts();
    let renewals = chunk.renewals(windows.end);
    let mut outcome = chunk.outcome;
    outcome.outbox = queue(&renewals, &config.renew_sinks)?;
    outcome
        .outbox
        .extend(queue(&outcome.alerts, &config.sinks)?);
    Ok(outcome)
}

/// Which detectors of a key a window feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// Latency, TTFT and errors: a tenant's model, or a model across tenants.
    Model,
    /// Cost and tokens: a tenant across its models.
    Spend,
}

/// One row of a window.
struct WindowRow {
    tenant: String,
    model: String,
    partial: RollupPartial,
}

/// A chunk being evaluated: the config, the state it changes, what it decided so far.
struct Chunk<'a> {
    config: &'a EvaluatorConfig,
    state: &'a mut State,
    outcome: Outcome,
}

impl Chunk<'_> {
    /// Feeds `window` to every objective and budget (empty windows too).
    fn observe_objectives(&mut self, window: i64, rows: &[WindowRow]) {
        for slo in &self.config.slos {
            let mut per_tenant: BTreeMap<String, Counts> = BTreeMap::new();
            if let Some(tenant) = &slo.tenant {
                per_tenant.insert(tenant.clone(), Counts::default());
            }
            // Tenants seen before see empty windows too, so their burns resolve.
            for key in self.state.slos.keys() {
                if key.objective == slo.name {
                    per_tenant.entry(key.tenant.clone()).or_default();
                }
            }
            for row in rows {
                if !slo.applies_to(&row.tenant, &row.model) {
                    continue;
                }
                let partial = &row.partial;
                let (bad, total) = match slo.indicator {
                    Indicator::Availability => (partial.errors, partial.requests),
                    Indicator::Latency { threshold_ms } => {
                        let total = partial.latency_ms.count();
                        let fast = partial.latency_ms.count_at_most(threshold_ms);
                        (total.saturating_sub(fast), total)
                    }
                };
                let counts = per_tenant.entry(row.tenant.clone()).or_default();
                counts.bad += bad;
                counts.total += total;
            }
            for (tenant, counts) in per_tenant {
                let key = ObjectiveKey::new(&slo.name, &tenant);
                let max_keys = self.config.max_keys;
                let slos = &mut self.state.slos;
                let Some(tracker) = bounded_entry(slos, key, max_keys, SloTracker::default) else {
                    self.outcome.untracked += 1;
                    continue;
                };
                for transition in tracker.observe(slo, window, counts) {
                    let alert = alerts::burn(slo, &tenant, window, &transition);
                    self.outcome.alerts.push(alert);
                }
            }
        }
        for budget in &self.config.budgets {
            let mut spend = Spend::default();
            for row in rows {
                if budget.applies_to(&row.tenant, &row.model) {
                    let partial = &row.partial;
                    let tokens = partial.input_tokens.saturating_add(partial.output_tokens);
                    spend.micros = spend.micros.saturating_add(partial.cost_micros);
                    spend.tokens = spend.tokens.saturating_add(tokens);
                }
            }
            let tracker = self.state.budgets.entry(budget.name()).or_default();
            for transition in tracker.observe(budget, window, spend) {
                self.outcome
                    .alerts
                    .push(alerts::budget(budget, &transition));
            }
        }
    }

    /// Feeds a window with rows to the detectors: of each (tenant, model), of each model
    /// across tenants, of each tenant's spend across its models.
    fn observe_detectors(&mut self, window: i64, rows: &[WindowRow]) {
        for row in rows {
            let key = DetectorKey::new(&row.tenant, &row.model);
            self.observe(key, Watch::Model, window, &row.partial);
        }
        for (model, partial) in &merged_by(rows, |row| &row.model) {
            let key = DetectorKey::new(ALL_TENANTS, model);
            self.observe(key, Watch::Model, window, partial);
        }
        for (tenant, partial) in &merged_by(rows, |row| &row.tenant) {
            let key = DetectorKey::new(tenant, ALL_MODELS);
            self.observe(key, Watch::Spend, window, partial);
        }
    }

    /// Feeds one key's window to the detectors of `watch` (created on first sight) and
    /// records what fired or resolved.
    fn observe(&mut self, key: DetectorKey, watch: Watch, window: i64, partial: &RollupPartial) {
        let spend = watch == Watch::Spend;
        let config = self.config;
        let Some(detectors) =
            bounded_entry(&mut self.state.keys, key.clone(), config.max_keys, || {
                Detectors::new(config, spend)
            })
        else {
            self.outcome.untracked += 1;
            return;
        };
        let readings = if spend {
            detectors.observe_spend(partial)
        } else {
            detectors.observe_model(config, partial)
        };
        self.record(&key, window, readings);
    }

    /// Turns detector readings into fired and resolved anomalies.
    fn record(&mut self, key: &DetectorKey, window: i64, readings: Vec<Reading>) {
        for Reading {
            signal,
            observed,
            verdict,
        } in readings
        {
            match verdict.transition {
                Transition::None => {}
                Transition::Fire => self.outcome.fired.push(AnomalyRecord {
                    tenant: key.tenant.clone(),
                    model: key.model.clone(),
                    detector: signal.detector.to_string(),
                    metric: signal.metric.to_string(),
                    window_start_ms: window,
                    observed,
                    baseline: verdict.baseline.unwrap_or(0.0),
                    score: verdict.score.unwrap_or(0.0),
                    state: AnomalyState::Firing,
                    resolved_window_ms: None,
                }),
                Transition::Resolve => self.outcome.resolved.push(Resolution {
                    tenant: key.tenant.clone(),
                    model: key.model.clone(),
                    detector: signal.detector.to_string(),
                    window_start_ms: window,
                }),
            }
        }
    }

    /// Alerts of the anomalies that fired or resolved in the chunk, in window order
    /// (after the chunk's burn-rate and budget alerts); remembers where each fired, as
    /// its resolution's start.
    fn anomaly_alerts(&mut self) {
        let fired = self
            .outcome
            .fired
            .iter()
            .map(|a| (a.window_start_ms, Some(a), None));
        let resolved = self
            .outcome
            .resolved
            .iter()
            .map(|r| (r.window_start_ms, None, Some(r)));
        let mut transitions: Vec<(i64, Option<&AnomalyRecord>, Option<&Resolution>)> =
            fired.chain(resolved).collect();
        // Stable: within a window, firings before resolutions, each in detector order.
        transitions.sort_by_key(|(window, _, _)| *window);
        for (_, fired, resolved) in transitions {
            if let Some(anomaly) = fired {
                let key = AnomalyKey::new(&anomaly.tenant, &anomaly.model, &anomaly.detector);
                self.state
                    .open_anomalies
                    .insert(key, anomaly.window_start_ms);
                self.outcome.alerts.push(alerts::anomaly_fired(anomaly));
            }
            if let Some(resolution) = resolved {
                let key =
                    AnomalyKey::new(&resolution.tenant, &resolution.model, &resolution.detector);
                let fired_at = self
                    .state
                    .open_anomalies
                    .remove(&key)
                    .unwrap_or(resolution.window_start_ms);
                self.outcome
                    .alerts
                    .push(alerts::anomaly_resolved(resolution, fired_at));
            }
        }
    }

    /// Tracks which alerts fire after the chunk's transitions; returns copies of those
    /// firing for `renew_interval` since last queued, to send again to the renewing
    /// sinks (under an id of their own, so the outbox takes them).
    fn renewals(&mut self, now_window: i64) -> Vec<Alert> {
        let firing = &mut self.state.firing;
        if self.config.renew_sinks.is_empty() {
            firing.clear();
            return Vec::new();
        }
        for alert in &self.outcome.alerts {
            let identity = AlertIdentity::of(alert);
            match alert.state {
                AlertState::Firing => {
                    firing.insert(identity, (alert.clone(), now_window));
                }
                AlertState::Resolved => {
                    firing.remove(&identity);
                }
            }
        }
        let interval = i64::try_from(self.config.renew_interval.as_millis()).unwrap_or(i64::MAX);
        let mut renewals = Vec::new();
        for (alert, queued_at) in firing.values_mut() {
            if now_window.saturating_sub(*queued_at) >= interval {
                *queued_at = now_window;
                let mut renewal = alert.clone();
                renewal.id = format!("{}-renewed-{now_window}", alert.id);
                renewals.push(renewal);
            }
        }
        renewals
    }
}

/// The rows' partials merged per model or per tenant (`part`), in row order.
fn merged_by<'r>(
    rows: &'r [WindowRow],
    part: impl Fn(&'r WindowRow) -> &'r String,
) -> BTreeMap<&'r str, RollupPartial> {
    let mut merged: BTreeMap<&str, RollupPartial> = BTreeMap::new();
    for row in rows {
        merged.entry(part(row)).or_default().merge(&row.partial);
    }
    merged
}

/// The entry of `key`, created with `make` unless the map already holds `max` keys.
fn bounded_entry<K: Ord, V>(
    map: &mut BTreeMap<K, V>,
    key: K,
    max: usize,
    make: impl FnOnce() -> V,
) -> Option<&mut V> {
    if !map.contains_key(&key) && map.len() >= max {
        return None;
    }
    Some(map.entry(key).or_insert_with(make))
}

/// Outbox entries of `alerts` for each of `sinks`, keyed by the alert's id.
fn queue(alerts: &[Alert], sinks: &[String]) -> Result<Vec<OutboxAlert>, serde_json::Error> {
    let mut queued = Vec::with_capacity(alerts.len() * sinks.len());
    for alert in alerts {
        let payload = serde_json::to_vec(alert)?;
        for sink in sinks {
            queued.push(OutboxAlert {
                sink: sink.clone(),
                key: alert.id.clone(),
                payload: payload.clone(),
            });
        }
    }
    Ok(queued)
}

#[cfg(test)]
mod tests;
