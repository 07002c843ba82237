//! The decisions of a pass over a chunk of final windows, without I/O or a clock:
//! given the state and the rows the store holds for `[from, to)`, which anomalies fire
//! and resolve, which alerts transition, and what to queue in the outbox. The store
//! is [`super::Evaluator::pass`]'s business, which commits the state this leaves
//! with the [`Outcome`] it returns.
//!
//! Per window, in order: objectives and budgets see it (empty or not, so a burn
//! resolves when traffic stops and a budget's day ends on time); then, if it has
//! rows, the detectors of each (tenant, model), of each model across tenants and of
//! each tenant's spend across its models; then those of each value of the
//! `[anomaly] dimensions` a tenant's window covers (below). Keys past `max_keys`, and
//! locations past `max_location_keys`, are counted, not tracked.
//!
//! A location's detectors see a (tenant, dimension) minute only when its groups add
//! up to the tenant's requests of the minute in the (tenant, model) rollups: every
//! event of the minute is then in exactly one group. A minute past the rollups' bound
//! still adds up (its overflow group holds the rest), but the values in its overflow
//! are not told apart there, so they get no window from it; neither does the group of
//! events without the field. A minute that does not add up (not rolled up, rolled up
//! by only some of the batches, or no longer held minute by minute) is skipped and
//! counted. Anomalies are delivered as incidents ([`super::incidents`]). Alerts come
//! in window order; firing ones are renewed to the renewing sinks every
//! `renew_interval` of event time, and an incident that grew is sent to them again.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use ais_model::time::MINUTE_MS;
use ais_rollup::dimensions::DimensionValue;
use ais_rollup::RollupPartial;
use ais_store::evaluation::{
    AnomalyRecord, AnomalyState, DimensionWindow, Location, Resolution, ALL_TENANTS,
};
use ais_store::outbox::OutboxAlert;
use ais_store::query::RollupRow;
use ais_store::usage::SpendAnswer;

use super::alerts;
use super::incidents::{self, OpenIncident};
use super::keys::{
    AlertIdentity, AnomalyKey, DetectorKey, LocationAnomalyKey, LocationKey, ObjectiveKey,
};
use super::state::{Detectors, Reading, State};
use super::{EvaluatorConfig, ALL_MODELS};
use crate::alert::{Alert, AlertState};
use crate::budget::scoped::{Sampling, SeenSpend, ValueTransition};
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
    /// Renewals for the renewing sinks, then each transition for every sink, then
    /// the updates of incidents that grew, for the renewing sinks.
    pub(crate) outbox: Vec<OutboxAlert>,
    /// Windows that held rows.
    pub(crate) evaluated: usize,
    /// Times a key past the bound was not tracked (detector keys, locations and
    /// objective pairs).
    pub(crate) untracked: u64,
    /// (Tenant, dimension) minutes whose groups did not add up to the tenant's
    /// requests: no location of theirs saw the window.
    pub(crate) uncovered: u64,
    /// Locations forgotten for being idle.
    pub(crate) forgotten: u64,
    /// Values of ledger-fed budgets that crossed a threshold past the bound of kept
    /// values: not alerted.
    pub(crate) budget_values_untracked: u64,
    /// Values of ledger-fed budgets that crossed a threshold past the bound of values
    /// starting to alert in one pass: alerted at a later pass.
    pub(crate) budget_values_deferred: u64,
    /// Values read for a budget's forecast past the bound of values with samples: not
    /// forecast.
    pub(crate) budget_values_unsampled: u64,
}

/// One ledger-fed budget's spend (`config.budgets[budget]`), read for the last window
/// of the chunk it is decided with.
#[derive(Debug, Clone)]
pub(crate) struct BudgetRead {
    pub(crate) budget: usize,
    pub(crate) answer: SpendAnswer,
}

/// Evaluates the final windows `[windows.start, windows.end)` (minute-aligned) with
/// `rows` as [`ais_store::EvaluationStore::rollups_all_tenants`] returns them; rows of
/// other windows are ignored. Fails only if an alert cannot be serialised.
#[cfg(test)]
pub(crate) fn evaluate_windows(
    config: &EvaluatorConfig,
    state: &mut State,
    windows: Range<i64>,
    rows: Vec<(String, RollupRow)>,
) -> Result<Outcome, serde_json::Error> {
    evaluate_chunk(config, state, windows, rows, Vec::new(), Vec::new())
}

/// [`evaluate_windows`] with the dimension rollups of the chunk too, as
/// [`ais_store::EvaluationStore::dimension_windows`] returns them for
/// `config.dimensions`, and the spend of ledger-fed budgets read for the chunk's last
/// window (decided after its windows, so their alerts come after the windows').
pub(crate) fn evaluate_chunk(
    config: &EvaluatorConfig,
    state: &mut State,
    windows: Range<i64>,
    rows: Vec<(String, RollupRow)>,
    dimension_rows: Vec<DimensionWindow>,
    spend: Vec<BudgetRead>,
) -> Result<Outcome, serde_json::Error> {
    let mut dimensions_by_window: BTreeMap<i64, Vec<DimensionWindow>> = BTreeMap::new();
    for row in dimension_rows {
        dimensions_by_window
            .entry(row.minute_ms)
            .or_default()
            .push(row);
    }
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
        joined: BTreeSet::new(),
    };
    let mut window = windows.start;
    while window < windows.end {
        let rows = by_window.remove(&window).unwrap_or_default();
        chunk.observe_objectives(window, &rows);
        if !rows.is_empty() {
            chunk.observe_detectors(window, &rows);
            let groups = dimensions_by_window.remove(&window).unwrap_or_default();
            chunk.observe_locations(window, &rows, groups);
            chunk.outcome.evaluated += 1;
        }
        chunk.forget_idle_locations(window);
        window += MINUTE_MS;
    }
    if windows.start < windows.end {
        chunk.observe_budget_spend(windows.end - MINUTE_MS, spend);
    }
    chunk.anomaly_alerts(windows.clone());
    let (renewals, updates) = chunk.renewals(windows.end);
    let mut outcome = chunk.outcome;
    outcome.outbox = queue(&renewals, &config.renew_sinks)?;
    outcome
        .outbox
        .extend(queue(&outcome.alerts, &config.sinks)?);
    // After the transitions: an incident that fired in this chunk is updated after
    // its firing, and one updated here is not over yet.
    outcome.outbox.extend(queue(&updates, &config.renew_sinks)?);
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
    /// Open incidents whose detectors, metrics or peak changed in the chunk after
    /// they fired.
    joined: BTreeSet<DetectorKey>,
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
        // A user's, key's or attribute's budget is fed the usage ledger, not windows
        // (`observe_budget_spend`).
        for budget in self
            .config
            .budgets
            .iter()
            .filter(|budget| budget.is_windowed())
        {
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

    /// Decides the ledger-fed budgets' reads as of `window`: each value's thresholds
    /// and forecasts ([`crate::budget::scoped`]), within the bounds of kept values, of
    /// values starting to alert in one pass, and of values with samples for a forecast
    /// (the bound of kept values again, counted apart).
    fn observe_budget_spend(&mut self, window: i64, reads: Vec<BudgetRead>) {
        let mut started = 0usize;
        for read in reads {
            let Some(budget) = self.config.budgets.get(read.budget) else {
                continue;
            };
            let name = budget.name();
            let kept_before = self.state.kept_budget_values();
            let by_kept = self.config.max_budget_values.saturating_sub(kept_before);
            let by_pass = self.config.budget_values_per_pass.saturating_sub(started);
            let room = by_kept.min(by_pass);
            let own_samples = self.state.budget_samples.get(&name).map_or(0, |s| s.len());
            let sampled_elsewhere = self.state.sampled_budget_values() - own_samples;
            let sample_room = self
                .config
                .max_budget_values
                .saturating_sub(sampled_elsewhere);
            let seen = read.answer.values.iter().map(SeenSpend::from).collect();
            let sampling = Sampling {
                samples: self.state.budget_samples.entry(name.clone()).or_default(),
                room: sample_room,
            };
            let outcome = self.state.scoped_budgets.entry(name).or_default().observe(
                budget,
                window,
                seen,
                read.answer.cut,
                room,
                sampling,
            );
            self.outcome.budget_values_unsampled += outcome.unsampled;
            started += outcome.added;
            if by_pass < by_kept {
                self.outcome.budget_values_deferred += outcome.untracked;
            } else {
                self.outcome.budget_values_untracked += outcome.untracked;
            }
            for ValueTransition { value, transition } in outcome.transitions {
                self.outcome
                    .alerts
                    .push(alerts::scoped_budget(budget, &value, &transition));
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

    /// Feeds the window's covered (tenant, dimension) minutes to the detectors of each
    /// value (created on first sight, up to `max_location_keys`): the model detectors,
    /// on the value's partial. See the module docs for what is covered.
    fn observe_locations(&mut self, window: i64, rows: &[WindowRow], groups: Vec<DimensionWindow>) {
        if self.config.dimensions.is_empty() {
            return;
        }
        let mut tenant_requests: BTreeMap<&str, u64> = BTreeMap::new();
        for row in rows {
            let requests = tenant_requests.entry(row.tenant.as_str()).or_default();
            *requests = requests.saturating_add(row.partial.requests);
        }
        // (tenant, dimension) → its groups of the window.
        let mut by_dimension: BTreeMap<(String, String), Vec<DimensionWindow>> = BTreeMap::new();
        for group in groups {
            if self.config.dimensions.contains(&group.dimension) {
                by_dimension
                    .entry((group.tenant.clone(), group.dimension.clone()))
                    .or_default()
                    .push(group);
            }
        }
        for (tenant, requests) in &tenant_requests {
            for dimension in &self.config.dimensions {
                let key = ((*tenant).to_string(), dimension.clone());
                let groups = by_dimension.remove(&key).unwrap_or_default();
                let rolled_up = groups.iter().fold(0u64, |sum, group| {
                    sum.saturating_add(group.partial.requests)
                });
                if rolled_up != *requests {
                    self.outcome.uncovered += 1;
                    continue;
                }
                for group in groups {
                    let DimensionValue::Value(value) = &group.group else {
                        continue;
                    };
                    self.observe_location(
                        LocationKey::new(tenant, dimension, value),
                        window,
                        &group.partial,
                    );
                }
            }
        }
    }

    /// Feeds one location's window to its detectors and records what fired or
    /// resolved, as anomalies of the tenant's models together at that location.
    fn observe_location(&mut self, key: LocationKey, window: i64, partial: &RollupPartial) {
        let config = self.config;
        let max = config.max_location_keys;
        let Some(detectors) = bounded_entry(&mut self.state.locations, key.clone(), max, || {
            Detectors::new(config, false)
        }) else {
            self.outcome.untracked += 1;
            return;
        };
        let readings = detectors.observe_model(config, partial);
        self.state.location_seen.insert(key.clone(), window);
        let owner = DetectorKey::new(&key.tenant, ALL_MODELS);
        self.record(&owner, Some(&key.location()), window, readings);
    }

    /// Forgets the locations last seen `location_idle` or more before `window`, with
    /// their detectors, unless an anomaly of theirs fires (it could not resolve
    /// otherwise). Every window, empty ones too, so when a location is forgotten does
    /// not depend on how windows are read in chunks.
    fn forget_idle_locations(&mut self, window: i64) {
        let idle_ms = i64::try_from(self.config.location_idle.as_millis()).unwrap_or(i64::MAX);
        let State {
            locations,
            location_seen,
            open_location_anomalies,
            ..
        } = &mut *self.state;
        let mut forgotten = 0;
        locations.retain(|key, _| {
            let seen = match location_seen.get(key) {
                Some(seen) => *seen,
                None => {
                    location_seen.insert(key.clone(), window);
                    window
                }
            };
            if window.saturating_sub(seen) < idle_ms {
                return true;
            }
            let firing = open_location_anomalies.keys().any(|anomaly| {
                anomaly.tenant == key.tenant
                    && anomaly.dimension == key.dimension
                    && anomaly.value == key.value
            });
            if firing {
                return true;
            }
            location_seen.remove(key);
            forgotten += 1;
            false
        });
        self.outcome.forgotten += forgotten;
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
        self.record(&key, None, window, readings);
    }

    /// Turns detector readings of `key` (at `location`, if one) into fired and
    /// resolved anomalies.
    fn record(
        &mut self,
        key: &DetectorKey,
        location: Option<&Location>,
        window: i64,
        readings: Vec<Reading>,
    ) {
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
                    location: location.cloned(),
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
                    location: location.cloned(),
                    detector: signal.detector.to_string(),
                    window_start_ms: window,
                }),
            }
        }
    }

    /// Alerts of the incidents the chunk's anomalies open and close, window by window
    /// (after the chunk's burn-rate and budget alerts), by the rules of
    /// [`super::incidents`]. An anomaly that fired before incidents were delivered
    /// belongs to none: its resolution is sent per detector, as it fired. Remembers
    /// where each anomaly fired, as such a resolution's start.
    fn anomaly_alerts(&mut self, windows: Range<i64>) {
        let gap_ms = i64::try_from(self.config.incident_gap.as_millis()).unwrap_or(i64::MAX);
        let Outcome {
            fired,
            resolved,
            alerts,
            ..
        } = &mut self.outcome;
        let state = &mut *self.state;
        let mut by_window: BTreeMap<i64, (Vec<&AnomalyRecord>, Vec<&Resolution>)> = BTreeMap::new();
        for anomaly in fired.iter() {
            by_window
                .entry(anomaly.window_start_ms)
                .or_default()
                .0
                .push(anomaly);
        }
        for resolution in resolved.iter() {
            by_window
                .entry(resolution.window_start_ms)
                .or_default()
                .1
                .push(resolution);
        }
        let mut window = windows.start;
        while window < windows.end {
            let (mut firings, resolutions) = by_window.remove(&window).unwrap_or_default();
            firings.sort_by(incidents::member_order);
            let mut opened = BTreeSet::new();
            for anomaly in firings {
                match &anomaly.location {
                    None => {
                        let anomaly_key =
                            AnomalyKey::new(&anomaly.tenant, &anomaly.model, &anomaly.detector);
                        state
                            .open_anomalies
                            .insert(anomaly_key, anomaly.window_start_ms);
                    }
                    Some(location) => {
                        let anomaly_key =
                            LocationAnomalyKey::new(&anomaly.tenant, location, &anomaly.detector);
                        state
                            .open_location_anomalies
                            .insert(anomaly_key, anomaly.window_start_ms);
                    }
                }
                let key = DetectorKey::new(&anomaly.tenant, &anomaly.model);
                match state.incidents.get_mut(&key) {
                    Some(open) if open.takes(window, gap_ms) => {
                        if open.join(anomaly) && !opened.contains(&key) {
                            self.joined.insert(key);
                        }
                    }
                    _ => {
                        // Past the gap of an incident not closed yet (a state kept
                        // under a longer gap): that one is over before this one opens.
                        if let Some(over) = state.incidents.remove(&key) {
                            alerts.push(alerts::incident_resolved(&key, &over));
                        }
                        state
                            .incidents
                            .insert(key.clone(), OpenIncident::open(anomaly));
                        opened.insert(key);
                    }
                }
            }
            for resolution in resolutions {
                let fired_at = match &resolution.location {
                    None => state.open_anomalies.remove(&AnomalyKey::new(
                        &resolution.tenant,
                        &resolution.model,
                        &resolution.detector,
                    )),
                    Some(location) => {
                        state
                            .open_location_anomalies
                            .remove(&LocationAnomalyKey::new(
                                &resolution.tenant,
                                location,
                                &resolution.detector,
                            ))
                    }
                };
                let key = DetectorKey::new(&resolution.tenant, &resolution.model);
                let member = state.incidents.get_mut(&key).is_some_and(|open| {
                    open.resolve(&resolution.detector, resolution.location.as_ref(), window)
                });
                if !member {
                    let fired_at = fired_at.unwrap_or(resolution.window_start_ms);
                    alerts.push(alerts::anomaly_resolved(resolution, fired_at));
                }
            }
            // Incidents with a location member firing at this window: the tenant's
            // models with an anomaly of their own firing now make them wider.
            for (key, open) in state.incidents.iter_mut() {
                if !open.fires_somewhere() {
                    continue;
                }
                let models = models_firing(&state.open_anomalies, &key.tenant);
                if open.widen(models) && !opened.contains(key) {
                    self.joined.insert(key.clone());
                }
            }
            // Built once the window's members are in: a firing names all of them.
            for key in &opened {
                if let Some(open) = state.incidents.get(key) {
                    alerts.push(alerts::incident_firing(key, open));
                }
            }
            let over: Vec<DetectorKey> = state
                .incidents
                .iter()
                .filter(|(_, open)| open.over(window, gap_ms))
                .map(|(key, _)| key.clone())
                .collect();
            for key in over {
                if let Some(open) = state.incidents.remove(&key) {
                    self.joined.remove(&key);
                    alerts.push(alerts::incident_resolved(&key, &open));
                }
            }
            window += MINUTE_MS;
        }
    }

    /// Tracks which alerts fire after the chunk's transitions. Returns copies of those
    /// firing for `renew_interval` since last queued, to send again to the renewing
    /// sinks (under an id of their own, so the outbox takes them); then the incidents
    /// that members joined in the chunk and that still fire, with their detectors as
    /// of now, for the same sinks (Alertmanager updates the alert of the same labels),
    /// unless renewed anyway.
    fn renewals(&mut self, now_window: i64) -> (Vec<Alert>, Vec<Alert>) {
        let firing = &mut self.state.firing;
        if self.config.renew_sinks.is_empty() {
            firing.clear();
            return (Vec::new(), Vec::new());
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
        let mut joined = Vec::new();
        for key in &self.joined {
            let Some(open) = self.state.incidents.get(key) else {
                continue;
            };
            let current = alerts::incident_firing(key, open);
            if let Some((alert, _)) = firing.get_mut(&AlertIdentity::of(&current)) {
                *alert = current.clone();
                joined.push(current);
            }
        }
        let interval = i64::try_from(self.config.renew_interval.as_millis()).unwrap_or(i64::MAX);
        let mut renewals = Vec::new();
        let mut renewed = BTreeSet::new();
        for (alert, queued_at) in firing.values_mut() {
            if now_window.saturating_sub(*queued_at) >= interval {
                *queued_at = now_window;
                let mut renewal = alert.clone();
                renewal.id = format!("{}-renewed-{now_window}", alert.id);
                renewals.push(renewal);
                renewed.insert(alert.id.clone());
            }
        }
        let updates = joined
            .into_iter()
            .filter(|current| !renewed.contains(&current.id))
            .map(|mut current| {
                current.id = format!("{}-joined-{now_window}", current.id);
                current
            })
            .collect();
        (renewals, updates)
    }
}

/// The models of `tenant` (not its models together, `"*"`) with an anomaly of the
/// model as a whole firing.
fn models_firing<'a>(
    open_anomalies: &'a BTreeMap<AnomalyKey, i64>,
    tenant: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    open_anomalies
        .keys()
        .filter(move |key| key.tenant == tenant && key.model != ALL_MODELS)
        .map(|key| key.model.as_str())
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
