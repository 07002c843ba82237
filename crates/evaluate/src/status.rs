//! What `GET /v1/slos` and `GET /v1/budgets` report: each objective's burn rates and
//! error budget left, each budget's spend and what is left, as of the last final
//! window the evaluator committed. A budget of one user, key or attribute value is one
//! entry; a budget of each value lists the values of its last read (from its lowest
//! threshold, or its forecast's floor), the highest share of a limit first, at most
//! [`crate::budget::scoped::STATUS_VALUES`] of them (none while no value is that near),
//! each with when a limit runs out at the burn of that read where it was known. Read
//! from the evaluator's state in the store, so every process reading the same store
//! reports the same.

use std::collections::BTreeMap;

use ais_model::time::MINUTE_MS;
use serde::{Deserialize, Serialize};

use crate::budget::scoped::ScopedBudgetState;
use crate::budget::{BudgetConfig, BudgetTracker, LimitStatus, Period, Unit};
use crate::evaluator::ObjectiveKey;
use crate::slo::{BurnStatus, Indicator, SloConfig, SloTracker};

/// The parts of the evaluator's state read here; the rest is skipped.
#[derive(Debug, Default, Deserialize)]
struct StateView {
    #[serde(default)]
    slos: BTreeMap<ObjectiveKey, SloTracker>,
    #[serde(default)]
    budgets: BTreeMap<String, BudgetTracker>,
    #[serde(default)]
    scoped_budgets: BTreeMap<String, ScopedBudgetState>,
}

#[derive(Debug, thiserror::Error)]
#[error("evaluator state is unreadable: {0}")]
pub struct StatusError(String);

fn view(state: Option<&[u8]>) -> Result<StateView, StatusError> {
    match state {
        None => Ok(StateView::default()),
        Some(bytes) => {
            serde_json::from_slice(bytes).map_err(|error| StatusError(error.to_string()))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloStatus {
    pub name: String,
    pub tenant: String,
    pub model: String,
    /// `availability` or `latency`.
    pub objective: &'static str,
    /// Latency objectives only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_ms: Option<f64>,
    pub target: f64,
    pub window_days: u32,
    /// End of the last final window counted (unix ms); `null` before the first.
    pub evaluated_to: Option<i64>,
    /// Over the objective's window.
    pub requests: u64,
    pub bad_requests: u64,
    /// Fraction of the error budget left (1: untouched, 0: spent, negative: overspent).
    pub error_budget_remaining: f64,
    pub burn_rates: Vec<BurnStatus>,
}

/// Objectives of `tenant` (`None`: every tenant's), in config order then by tenant.
pub fn slo_statuses(
    slos: &[SloConfig],
    state: Option<&[u8]>,
    tenant: Option<&str>,
) -> Result<Vec<SloStatus>, StatusError> {
    let view = view(state)?;
    let mut out = Vec::new();
    for slo in slos {
        let mut tenants: Vec<String> = view
            .slos
            .keys()
            .filter(|key| key.objective == slo.name)
            .map(|key| key.tenant.clone())
            .collect();
        if let Some(only) = &slo.tenant {
            tenants.retain(|t| t == only);
            if tenants.is_empty() {
                tenants.push(only.clone());
            }
        }
        for slo_tenant in tenants {
            if tenant.is_some_and(|wanted| wanted != slo_tenant) {
                continue;
            }
            let empty = SloTracker::default();
            let tracker = view
                .slos
                .get(&ObjectiveKey::new(&slo.name, &slo_tenant))
                .unwrap_or(&empty);
            let counts = tracker.window_counts();
            let (objective, threshold_ms) = match slo.indicator {
                Indicator::Availability => ("availability", None),
                Indicator::Latency { threshold_ms } => ("latency", Some(threshold_ms)),
            };
            out.push(SloStatus {
                name: slo.name.clone(),
                tenant: slo_tenant,
                model: slo.model.clone(),
                objective,
                threshold_ms,
                target: slo.target,
                window_days: slo.window_days,
                evaluated_to: tracker.last_window_ms().map(|m| m + MINUTE_MS),
                requests: counts.total,
                bad_requests: counts.bad,
                error_budget_remaining: tracker.budget_remaining(slo),
                burn_rates: tracker.burn_status(slo),
            });
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitReport {
    pub period: Period,
    pub unit: Unit,
    /// Start of the current UTC day or month (unix ms); `null` before any window.
    pub period_start: Option<i64>,
    /// Dollars (from exact micro-dollar sums) or tokens.
    pub spent: f64,
    pub limit: f64,
    pub remaining: f64,
    /// Spent as a percentage of the limit.
    pub percent: f64,
    /// Thresholds crossed in this period.
    pub crossed: Vec<u32>,
    /// With a forecast: minutes until the limit runs out at the current burn, when
    /// that is before the period resets; `null` otherwise.
    pub runs_out_in_minutes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetStatus {
    pub tenant: String,
    /// `null`: every model of the tenant.
    pub model: Option<String>,
    /// How alerts name the budget.
    pub name: String,
    /// `tenant`, `model`, or the usage scope it limits (`user_id`, `key`,
    /// `attr.customer`).
    pub scope: String,
    /// The user, key or attribute value this entry is of; `null` for a tenant's or a
    /// model's budget.
    pub scope_value: Option<String>,
    pub thresholds: Vec<u32>,
    /// The forecast's horizon in hours (`null`: no forecast).
    pub forecast_hours: Option<u32>,
    pub evaluated_to: Option<i64>,
    pub limits: Vec<LimitReport>,
}

/// Budgets of `tenant` (`None`: every tenant's), in config order; a budget of each
/// value as one entry per value listed.
pub fn budget_statuses(
    budgets: &[BudgetConfig],
    state: Option<&[u8]>,
    tenant: Option<&str>,
) -> Result<Vec<BudgetStatus>, StatusError> {
    let view = view(state)?;
    let empty = BudgetTracker::default();
    let empty_scoped = ScopedBudgetState::default();
    let mut out = Vec::new();
    for budget in budgets
        .iter()
        .filter(|budget| tenant.is_none_or(|wanted| wanted == budget.tenant))
    {
        let entry =
            |scope_value: Option<String>, evaluated_to, limits: Vec<LimitStatus>| BudgetStatus {
                tenant: budget.tenant.clone(),
                model: budget.model.clone(),
                name: budget.name(),
                scope: budget.scope_name(),
                scope_value,
                thresholds: budget.thresholds.clone(),
                forecast_hours: budget.forecast.map(|forecast| forecast.hours),
                evaluated_to,
                limits: limits.into_iter().map(report).collect(),
            };
        if budget.is_windowed() {
            let tracker = view.budgets.get(&budget.name()).unwrap_or(&empty);
            let evaluated_to = tracker.last_window_ms().map(|m| m + MINUTE_MS);
            out.push(entry(None, evaluated_to, tracker.status(budget)));
            continue;
        }
        let scoped = view
            .scoped_budgets
            .get(&budget.name())
            .unwrap_or(&empty_scoped);
        let evaluated_to = scoped.read_at_ms().map(|m| m + MINUTE_MS);
        for (value, limits) in scoped.status(budget) {
            out.push(entry(Some(value), evaluated_to, limits));
        }
    }
    Ok(out)
}

/// A limit as the API reports it: dollars (from exact micro-dollar sums) or tokens.
fn report(limit: LimitStatus) -> LimitReport {
    let scale = match limit.unit {
        Unit::Usd => 1e-6,
        Unit::Tokens => 1.0,
    };
    LimitReport {
        period: limit.period,
        unit: limit.unit,
        period_start: limit.period_start_ms,
        spent: limit.spent as f64 * scale,
        limit: limit.limit as f64 * scale,
        remaining: limit.limit.saturating_sub(limit.spent) as f64 * scale,
        percent: if limit.limit == 0 {
            0.0
        } else {
            limit.spent as f64 * 100.0 / limit.limit as f64
        },
        crossed: limit.crossed,
        runs_out_in_minutes: limit.runs_out_in_minutes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::BurnAlertConfig;

    fn objective(name: &str, tenant: Option<&str>) -> SloConfig {
        SloConfig {
            name: name.to_string(),
            model: "m".to_string(),
            tenant: tenant.map(str::to_string),
            indicator: Indicator::Availability,
            target: 0.95,
            window_days: 1,
            alerts: vec![BurnAlertConfig {
                factor: 2.0,
                long_minutes: 3,
                short_minutes: 1,
                severity: "ticket".to_string(),
            }],
        }
    }

    /// The state of `evaluator/testdata/README.md`, stored with string keys: its
    /// objectives are fast/t, fast/u and up/u.
    #[test]
    fn objectives_of_a_state_stored_with_string_keys_are_reported_per_tenant() {
        let stored = include_bytes!("evaluator/testdata/state_v1.json");
        let slos = [objective("fast", None), objective("up", Some("u"))];
        let statuses = slo_statuses(&slos, Some(stored), None).expect("readable");
        let reported: Vec<(&str, &str, u64)> = statuses
            .iter()
            .map(|s| (s.name.as_str(), s.tenant.as_str(), s.requests))
            .collect();
        assert_eq!(
            reported,
            [("fast", "t", 400), ("fast", "u", 400), ("up", "u", 400)]
        );
        let only_u = slo_statuses(&slos, Some(stored), Some("u")).expect("readable");
        assert_eq!(only_u.len(), 2);
    }
}
