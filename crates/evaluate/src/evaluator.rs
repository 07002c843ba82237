//! The evaluator: one pass every interval over the windows that became final.
//!
//! A window `[m, m + 60 s)` is final when the lowest partition watermark in the store
//! has reached its end. Windows are evaluated in order, each exactly once: the position
//! (`next_window_ms`), the detectors' state and the anomalies that fired or resolved
//! are committed together, so a crash replays a pass and the store's anomaly identity
//! (tenant, model, detector, window) keeps it from firing twice.
//!
//! Detectors per (tenant, model) and per model across tenants
//! ([`ALL_TENANTS`](ais_store::evaluation::ALL_TENANTS)):
//! latency per output token, latency p95 and mean (not anomalous in a window the
//! per-token one finds normal: [`crate::detector::latency_explained`]), mean TTFT over
//! what the window's prompt lengths explain ([`crate::ttft_fit`]) (robust z-scores), error rate
//! (Wilson bound); TTFT p95 only when configured (a shift to longer prompts fires it);
//! per tenant across its models ([`ALL_MODELS`]): cost and token spikes. Per value of
//! each of `[anomaly] dimensions` of a tenant (a location: `endpoint` `/chat`), fed by
//! the dimension rollups: the model detectors again, on the tenant's models together
//! at that value (`pass` says which minutes they see). The number of tracked keys,
//! and of locations, is bounded; those past the bound are counted, not tracked. A
//! location idle for `location_idle` is forgotten (unless it fires), so the locations
//! tracked are those in use, not the first that came.
//!
//! Objectives ([`crate::slo`]) and budgets ([`crate::budget`]) see every final window,
//! empty ones included, so a burn resolves when traffic stops and a budget's day ends
//! on time. Budgets of a user, key or attribute value are fed the usage ledger instead
//! ([`crate::budget::scoped`]): once per pass that evaluates windows, before its last
//! chunk, each such budget's spend in the day and month of the pass's last final
//! window is read ([`EvaluationStore::budget_spend`]) and decided with that chunk, so
//! what it fires is committed with it. A read that fails is logged, counted
//! (`ais_budget_spend_read_errors_total`) and skipped for the pass; one cut at
//! `budget_values_per_read` is logged and counted (`ais_budget_spend_reads_cut_total`).
//! A ledger-fed budget with a forecast takes its values' burn from samples of those
//! reads, which the evaluator keeps in memory from pass to pass, not in the saved state
//! (a restart starts them anew). Anomalies of one (tenant, model) are grouped into incidents as
//! [`crate::incident::group`] groups them, and an incident is the alert: it fires with
//! its first members and resolves once, when it is over. Every alert transition
//! (incident, burn rate, budget; firing and resolved) is logged once committed and queued in the store's outbox for each configured receiver
//! in the same commit as the state that produced it ([`crate::deliver`] sends them).
//!
//! This module is the I/O around a pure core: [`Evaluator::pass`] reads the position
//! and the state, then per chunk of windows reads the rows, has the core decide what
//! they change, commits that, and logs. The submodules do no I/O and read no clock:
//!
//! - `pass`: the core: what a chunk of windows changes (anomalies, alerts, the outbox
//!   entries), given the state.
//! - `state`: what is remembered between windows, and the detectors of a key.
//! - `keys`: the typed keys of the state's maps and the strings they are stored as.
//! - `incidents`: the anomalies of a (tenant, model) grouped into incidents as windows
//!   pass, so receivers are sent incidents, not detector transitions.
//! - `alerts`: the alert of each kind of transition, with ids that never change.

mod alerts;
mod incidents;
mod keys;
mod pass;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ais_model::time::{minute_floor, MINUTE_MS};
use ais_store::evaluation::{EvaluationCommit, EvaluationStore};
use ais_store::usage::SpendQuery;
use ais_store::StoreError;
use tokio_util::sync::CancellationToken;

pub(crate) use keys::ObjectiveKey;
use pass::{evaluate_chunk, BudgetRead, Outcome};
pub(crate) use state::State;

use crate::alert::Alert;
use crate::budget::scoped::BudgetSamples;
use crate::budget::{BudgetConfig, BudgetScope, Period};
use crate::detector::{ErrorRateConfig, ZScoreConfig};
use crate::slo::SloConfig;

/// Default bound of the tracked locations. A location's detectors are about 4.4 KB of
/// the evaluator's state once their baselines are full (measured: 25 endpoints after
/// two hours), and the state is written whole with every commit, so this keeps it
/// under about 45 MB.
pub const DEFAULT_MAX_LOCATION_KEYS: usize = 10_000;

/// Default idle time after which a location is forgotten: a day, so a value used
/// every day (a nightly batch endpoint) keeps its baseline, while one that is gone
/// frees its place within a day.
pub const DEFAULT_LOCATION_IDLE: Duration = Duration::from_secs(24 * 3600);

/// Default bound of the values of a budget of each value (users, keys, attribute
/// values) read per pass: the highest share of a limit first, only values at or past
/// the budget's lowest threshold.
pub const DEFAULT_BUDGET_VALUES_PER_READ: usize = 10_000;

/// Default bound of the values of ledger-fed budgets that start alerting in one pass
/// (their first crossing in the period): a burst of users crossing at once is
/// delivered over the next passes, not as one flood that fills the outbox.
pub const DEFAULT_BUDGET_VALUES_PER_PASS: usize = 1_000;

/// Default bound of the values of ledger-fed budgets kept with a threshold crossed in
/// their current periods (across budgets; about 200 bytes of state each).
pub const DEFAULT_MAX_BUDGET_VALUES: usize = 10_000;

/// Default bound of the alert outbox: days of transitions for a receiver that is down.
pub const DEFAULT_OUTBOX_LIMIT: usize = 10_000;

#[derive(Debug, Clone)]
pub struct EvaluatorConfig {
    pub interval: Duration,
    pub latency: ZScoreConfig,
    /// Settings of the TTFT detectors (both below).
    pub ttft: ZScoreConfig,
    /// Run `ttft_input_fit_zscore`: mean TTFT over what prompt lengths explain.
    pub ttft_input_fit: bool,
    /// Run `ttft_p95_zscore`, the plain TTFT p95. Off by default: TTFT grows with
    /// prompt length, so a shift to longer prompts alone fires it.
    pub ttft_p95: bool,
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
    /// Most values of a budget of each value read per pass (the rest are counted, not
    /// alerted, until the day ends).
    pub budget_values_per_read: usize,
    /// Most values of ledger-fed budgets that start alerting in one pass; those past it
    /// are counted (`ais_budget_values_deferred_total`) and alerted at a later pass.
    pub budget_values_per_pass: usize,
    /// Most values of ledger-fed budgets kept with a threshold crossed; a value past it
    /// is counted (`ais_budget_values_untracked_total`), not alerted.
    pub max_budget_values: usize,
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
    /// Anomalies of one (tenant, model) this close are one incident, delivered once
    /// (`[anomaly] incident_gap_secs`; the gap `GET /v1/incidents` groups by).
    pub incident_gap: Duration,
    /// Dimensions (as the dimension rollups name them: `endpoint`, `attr.feature`)
    /// whose values get detectors of their own (`[anomaly] dimensions`); none by
    /// default. Each must be rolled up (`[rollups] dimensions`).
    pub dimensions: Vec<String>,
    /// Most locations (tenant, dimension, value) tracked; past it a new value is
    /// counted, not tracked.
    pub max_location_keys: usize,
    /// A location without a window for this long (event time) is forgotten, its
    /// detectors with it, unless one of its anomalies fires: values come and go
    /// (deployments, features, regions), and the bound is for those in use.
    pub location_idle: Duration,
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            latency: ZScoreConfig::default(),
            ttft: ZScoreConfig::default(),
            ttft_input_fit: true,
            ttft_p95: false,
            errors: ErrorRateConfig::default(),
            spend: ZScoreConfig::default(),
            first_lookback: Duration::from_secs(3 * 3600),
            windows_per_read: 60,
            max_keys: 100_000,
            slos: Vec::new(),
            budgets: Vec::new(),
            budget_values_per_read: DEFAULT_BUDGET_VALUES_PER_READ,
            budget_values_per_pass: DEFAULT_BUDGET_VALUES_PER_PASS,
            max_budget_values: DEFAULT_MAX_BUDGET_VALUES,
            sinks: Vec::new(),
            outbox_limit: DEFAULT_OUTBOX_LIMIT,
            log_alerts: true,
            renew_sinks: Vec::new(),
            renew_interval: Duration::from_secs(3600),
            incident_gap: crate::incident::DEFAULT_GAP,
            dimensions: Vec::new(),
            max_location_keys: DEFAULT_MAX_LOCATION_KEYS,
            location_idle: DEFAULT_LOCATION_IDLE,
        }
    }
}

/// Model of a tenant's spend anomalies (all its models together).
pub const ALL_MODELS: &str = "*";

pub struct Evaluator {
    config: EvaluatorConfig,
    /// The spend series of ledger-fed budgets' forecasts, between passes: not in the
    /// saved state (read anew each pass), so kept here, bounded as the state's values.
    budget_samples: std::sync::Mutex<BTreeMap<String, BudgetSamples>>,
}

impl Evaluator {
    pub fn new(config: EvaluatorConfig) -> Self {
        Self {
            config,
            budget_samples: std::sync::Mutex::default(),
        }
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

    /// Evaluates every window that became final since the last pass, a chunk of
    /// `windows_per_read` at a time, each chunk committed with the state it leaves.
    pub async fn pass(&self, store: &dyn EvaluationStore) -> Result<usize, StoreError> {
        let partitions = store.partition_states().await?;
        let Some(end) = final_end(partitions.iter().map(|p| p.watermark_ms)) else {
            return Ok(0);
        };
        let (mut next, mut state) = match store.evaluation_state().await? {
            Some((next, bytes)) => (
                next,
                serde_json::from_slice::<State>(&bytes).map_err(malformed("evaluator state"))?,
            ),
            None => {
                let lookback =
                    i64::try_from(self.config.first_lookback.as_millis()).unwrap_or(i64::MAX);
                (minute_floor(end.saturating_sub(lookback)), State::default())
            }
        };
        // A poisoned lock only means a pass panicked mid-way: its samples are still
        // samples of reads.
        state.budget_samples = std::mem::take(
            &mut *self
                .budget_samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let evaluated = self.evaluate(store, &mut next, end, &mut state).await;
        *self
            .budget_samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            std::mem::take(&mut state.budget_samples);
        let evaluated = evaluated?;
        metrics::gauge!("ais_evaluator_keys").set(state.tracked_keys() as f64);
        metrics::gauge!("ais_evaluator_locations").set(state.tracked_locations() as f64);
        metrics::gauge!("ais_budget_values_kept").set(state.kept_budget_values() as f64);
        metrics::gauge!("ais_budget_forecast_values_sampled")
            .set(state.sampled_budget_values() as f64);
        // Every window before this instant is evaluated and its anomalies stored: what
        // a monitor (or a test) waits for, instead of waiting a while.
        metrics::gauge!("ais_evaluator_evaluated_until_seconds").set(next as f64 / 1000.0);
        Ok(evaluated)
    }

    /// Evaluates the windows from `next` to `end`, a chunk of `windows_per_read` at a
    /// time, each chunk committed with the state it leaves; `next` follows the commits.
    async fn evaluate(
        &self,
        store: &dyn EvaluationStore,
        next: &mut i64,
        end: i64,
        state: &mut State,
    ) -> Result<usize, StoreError> {
        let mut evaluated = 0;
        while *next < end {
            let chunk_end = (*next + self.config.windows_per_read * MINUTE_MS).min(end);
            let rows = store.rollups_all_tenants(*next, chunk_end).await?;
            let dimension_rows = store
                .dimension_windows(&self.config.dimensions, *next, chunk_end)
                .await?;
            let spend = if chunk_end == end {
                self.read_budget_spend(store, chunk_end - MINUTE_MS).await
            } else {
                Vec::new()
            };
            let outcome = evaluate_chunk(
                &self.config,
                state,
                *next..chunk_end,
                rows,
                dimension_rows,
                spend,
            )
            .map_err(malformed("alert"))?;
            let bytes = serde_json::to_vec(&*state).map_err(malformed("evaluator state"))?;
            let Outcome {
                fired,
                resolved,
                alerts,
                outbox,
                evaluated: chunk_evaluated,
                untracked,
                uncovered,
                forgotten,
                budget_values_untracked,
                budget_values_deferred,
                budget_values_unsampled,
            } = outcome;
            let anomalies = fired.len() as u64;
            store
                .commit_evaluation(EvaluationCommit {
                    next_window_ms: chunk_end,
                    state: bytes,
                    fired,
                    resolved,
                    outbox,
                    outbox_limit: self.config.outbox_limit,
                })
                .await?;
            metrics::counter!("ais_evaluator_anomalies_total").increment(anomalies);
            metrics::counter!("ais_evaluator_untracked_windows_total").increment(untracked);
            metrics::counter!("ais_evaluator_uncovered_location_windows_total")
                .increment(uncovered);
            metrics::counter!("ais_evaluator_forgotten_locations_total").increment(forgotten);
            metrics::counter!("ais_budget_values_untracked_total")
                .increment(budget_values_untracked);
            metrics::counter!("ais_budget_values_deferred_total").increment(budget_values_deferred);
            metrics::counter!("ais_budget_forecast_values_unsampled_total")
                .increment(budget_values_unsampled);
            self.report(&alerts);
            evaluated += chunk_evaluated;
            *next = chunk_end;
        }
        Ok(evaluated)
    }

    /// The spend of each ledger-fed budget in the day and month of `window`, from the
    /// usage ledger. A budget whose read fails is left out of this pass (logged and
    /// counted): its alerts wait for the next pass rather than hold the others back.
    async fn read_budget_spend(&self, store: &dyn EvaluationStore, window: i64) -> Vec<BudgetRead> {
        let mut reads = Vec::new();
        for (index, budget) in self.config.budgets.iter().enumerate() {
            let Some(scope) = budget.scope.usage_scope() else {
                continue;
            };
            let day_ms = Period::Day.start_of(window);
            let query = SpendQuery {
                tenant: budget.tenant.clone(),
                scope: scope.name(),
                value: match &budget.scope {
                    BudgetScope::One { value, .. } => Some(value.clone()),
                    _ => None,
                },
                day_ms,
                month_from_ms: if budget.has_monthly_limit() {
                    Period::Month.start_of(window)
                } else {
                    day_ms
                },
                limits: budget.spend_limits(),
                floor_percent: budget.read_floor_percent(),
                limit: self.config.budget_values_per_read,
            };
            let started = std::time::Instant::now();
            match store.budget_spend(query).await {
                Ok(answer) => {
                    metrics::histogram!("ais_budget_spend_read_seconds")
                        .record(started.elapsed().as_secs_f64());
                    if answer.cut {
                        metrics::counter!("ais_budget_spend_reads_cut_total").increment(1);
                        tracing::warn!(
                            budget = %budget.name(),
                            bound = self.config.budget_values_per_read,
                            floor_percent = budget.read_floor_percent(),
                            "more values are at or past this budget's read floor (its lowest \
                             threshold, or forecast_from_percent with a forecast) than a pass \
                             reads: those of the lowest shares are left out this pass"
                        );
                    }
                    reads.push(BudgetRead {
                        budget: index,
                        answer,
                    });
                }
                Err(error) => {
                    metrics::counter!("ais_budget_spend_read_errors_total").increment(1);
                    tracing::warn!(budget = %budget.name(), %error, "cannot read a budget's spend from the usage ledger; its alerts wait for the next pass");
                }
            }
        }
        reads
    }

    /// Counts and logs the alert transitions of a committed chunk.
    fn report(&self, alerts: &[Alert]) {
        for alert in alerts {
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
                    incident = alert.label("incident"),
                    "{}",
                    alert.summary()
                );
            }
        }
    }
}

/// End of the final windows: windows `[m, m + 60 s)` with `m + 60 s` at or below the
/// lowest partition watermark. `None` without partitions, or while one has no
/// watermark yet (its batches held only dead letters): nothing is final until the
/// idle rule gives it one.
fn final_end(watermarks: impl Iterator<Item = i64>) -> Option<i64> {
    let watermark = watermarks.min()?;
    if watermark == i64::MIN {
        return None;
    }
    Some(minute_floor(watermark.saturating_sub(MINUTE_MS)).saturating_add(MINUTE_MS))
}

fn malformed<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |error| StoreError::Malformed(format!("{what}: {error}"))
}
