//! The alert of each transition the evaluator finds: an incident of anomalies that
//! fired or is over, an anomaly of an earlier version that resolved, a burn-rate pair,
//! a budget threshold. Every one goes through
//! [`AlertBuilder`]. Labels are an alert's identity for receivers and its id is the
//! outbox's idempotency key, so neither may change from one version to the next: the
//! tests pin both to what earlier versions produced.

use ais_model::time::MINUTE_MS;
use ais_store::evaluation::Resolution;

use super::incidents::OpenIncident;
use super::keys::DetectorKey;
use super::state::metric_of;
use crate::alert::{Alert, AlertBuilder, AlertKind, AlertState};
use crate::budget::{BudgetConfig, BudgetTransition, Period, Unit};
use crate::slo::{BurnTransition, Indicator, SloConfig};

/// The labels of one detector's anomaly, the same for its firing and its resolution.
fn anomaly(tenant: &str, model: &str, detector: &str, metric: &str) -> AlertBuilder {
    AlertBuilder::new(AlertKind::Anomaly, tenant, Some(model), "warning")
        .label("detector", detector)
        .label("metric", metric)
}

/// Kept to pin the ids of per-detector alerts, which earlier versions delivered and
/// whose resolutions [`anomaly_resolved`] still sends.
#[cfg(test)]
pub(super) fn anomaly_fired(anomaly_record: &ais_store::evaluation::AnomalyRecord) -> Alert {
    let ais_store::evaluation::AnomalyRecord {
        tenant,
        model,
        detector,
        metric,
        observed,
        baseline,
        score,
        ..
    } = anomaly_record;
    anomaly(tenant, model, detector, metric)
        .summary(format!(
            "{metric} of {model} ({tenant}) is {observed:.3} against a baseline of \
             {baseline:.3} (score {score:.1}, {detector})"
        ))
        .value("observed", *observed)
        .value("baseline", *baseline)
        .value("score", *score)
        .firing(anomaly_record.window_start_ms)
}

/// `fired_window_ms`: where the anomaly fired (the resolution does not say).
pub(super) fn anomaly_resolved(resolution: &Resolution, fired_window_ms: i64) -> Alert {
    let Resolution {
        tenant,
        model,
        detector,
        window_start_ms,
        ..
    } = resolution;
    let metric = metric_of(detector);
    anomaly(tenant, model, detector, metric)
        .summary(format!(
            "{metric} of {model} ({tenant}) is back to normal ({detector})"
        ))
        .resolved(fired_window_ms, window_start_ms + MINUTE_MS)
}

/// An incident of `key`'s anomalies as receivers see it. The labels are the anomaly
/// alerts' (`alertname` `AisAnomaly`, so routes written for them still match) without
/// the detector and metric, which change as members join, and with the incident's id,
/// so they stay the same for its whole life and Alertmanager holds one alert per
/// incident. Detectors, metrics and peak are annotations and the `incident` object.
fn incident(key: &DetectorKey, open: &OpenIncident, state: AlertState) -> AlertBuilder {
    let DetectorKey { tenant, model } = key;
    let detectors = open
        .detectors
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let metrics = open.metrics.iter().cloned().collect::<Vec<_>>().join(", ");
    let peak = &open.peak;
    let verb = match state {
        AlertState::Firing => "fires",
        AlertState::Resolved => "is over",
    };
    let mut builder = AlertBuilder::new(AlertKind::Anomaly, tenant, Some(model), "warning")
        .label("incident", &open.id);
    if open.locations.is_empty() {
        builder = builder.summary(format!(
            "anomaly incident of {model} ({tenant}) {verb}: {metrics} ({detectors}); peak \
             score {:.1} ({})",
            peak.score, peak.detector
        ));
    } else {
        // Where, and whether the tenant's models were anomalous as a whole too.
        let locations = open
            .locations
            .iter()
            .map(|(dimension, value)| format!("{dimension} {value}"))
            .collect::<Vec<_>>()
            .join(", ");
        let wider = open.wider.iter().cloned().collect::<Vec<_>>().join(", ");
        let extent = if wider.is_empty() {
            "narrower: no model anomalous as a whole".to_string()
        } else {
            format!("wider: {wider} anomalous as a whole too")
        };
        builder = builder
            .summary(format!(
                "anomaly incident of {tenant} at {locations} {verb}: {metrics} ({detectors}); \
                 {extent}; peak score {:.1} ({})",
                peak.score, peak.detector
            ))
            .annotation("locations", locations)
            .annotation(
                "extent",
                if wider.is_empty() {
                    "narrower"
                } else {
                    "wider"
                },
            )
            .annotation("wider", wider);
    }
    builder
        .annotation("detectors", detectors)
        .annotation("metrics", metrics)
        .annotation("peak_detector", &peak.detector)
        .annotation("peak_metric", &peak.metric)
        .annotation("peak_score", format!("{:.3}", peak.score))
        .value("peak_score", peak.score)
        .incident(open.summary(key, state))
}

/// The open incident of `key`, firing since its first member's window (its detectors
/// as of now: the same id whenever it is built).
pub(super) fn incident_firing(key: &DetectorKey, open: &OpenIncident) -> Alert {
    incident(key, open, AlertState::Firing).firing(open.start_ms)
}

/// The incident of `key`, over: ends with the window where its last member resolved.
pub(super) fn incident_resolved(key: &DetectorKey, open: &OpenIncident) -> Alert {
    let last_resolved = open.last_resolved_ms.unwrap_or(open.start_ms);
    incident(key, open, AlertState::Resolved).resolved(open.start_ms, last_resolved + MINUTE_MS)
}

/// A burn-rate pair of `slo` for `tenant` that fired or resolved at `window`.
pub(super) fn burn(
    slo: &SloConfig,
    tenant: &str,
    window: i64,
    transition: &BurnTransition,
) -> Alert {
    let pair = &slo.alerts[transition.alert];
    let objective = match slo.indicator {
        Indicator::Availability => "availability",
        Indicator::Latency { .. } => "latency",
    };
    let verb = if transition.firing {
        "burns"
    } else {
        "no longer burns"
    };
    let builder = AlertBuilder::new(
        AlertKind::BurnRate,
        tenant,
        Some(&slo.model),
        &pair.severity,
    )
    .label("slo", &slo.name)
    .label("objective", objective)
    .label("long_window", format!("{}m", pair.long_minutes))
    .label("short_window", format!("{}m", pair.short_minutes))
    .summary(format!(
        "SLO {} ({:.3}% {objective} of {} for {tenant}) {verb} its error budget at {}x: \
             {:.2}x over {} min, {:.2}x over {} min",
        slo.name,
        slo.target * 100.0,
        slo.model,
        pair.factor,
        transition.long_burn,
        pair.long_minutes,
        transition.short_burn,
        pair.short_minutes
    ))
    .value("long_burn", transition.long_burn)
    .value("short_burn", transition.short_burn)
    .value("factor", pair.factor)
    .value("target", slo.target);
    if transition.firing {
        builder.firing(transition.fired_window_ms)
    } else {
        builder.resolved(transition.fired_window_ms, window + MINUTE_MS)
    }
}

/// A threshold of `budget` crossed (or a forecast that a limit runs out), or resolved
/// by the end of its period.
pub(super) fn budget(budget: &BudgetConfig, transition: &BudgetTransition) -> Alert {
    if let Some(minutes) = transition.forecast_minutes_left {
        return budget_forecast(budget, None, transition, minutes);
    }
    budget_threshold(budget, None, transition)
}

/// A threshold of a ledger-fed budget (a user's, key's or attribute value's) crossed
/// by `value` (or a forecast that `value` runs a limit out), or resolved by the end of
/// its period. Its labels are a tenant budget's with the budget's name (`budget`), the
/// scope (`scope`: `user_id`, `key`, `attr.customer`) and the value (`scope_value`), so
/// each value's alert is its own.
pub(super) fn scoped_budget(
    budget: &BudgetConfig,
    value: &str,
    transition: &BudgetTransition,
) -> Alert {
    if let Some(minutes) = transition.forecast_minutes_left {
        return budget_forecast(budget, Some(value), transition, minutes);
    }
    budget_threshold(budget, Some(value), transition)
}

fn budget_threshold(
    budget: &BudgetConfig,
    scope_value: Option<&str>,
    transition: &BudgetTransition,
) -> Alert {
    let severity = if transition.percent >= 100 {
        "critical"
    } else {
        "warning"
    };
    let amount = |value: u64| match transition.unit {
        Unit::Usd => format!("${}.{:06}", value / 1_000_000, value % 1_000_000),
        Unit::Tokens => format!("{value} tokens"),
    };
    let period = match transition.period {
        Period::Day => "daily",
        Period::Month => "monthly",
    };
    let verb = if transition.firing {
        "has spent"
    } else {
        "ended its period having spent"
    };
    let scale = match transition.unit {
        Unit::Usd => 1e-6,
        Unit::Tokens => 1.0,
    };
    let mut builder = AlertBuilder::new(
        AlertKind::Budget,
        &budget.tenant,
        budget.model.as_deref(),
        severity,
    );
    let mut who = budget.name();
    if let Some(value) = scope_value {
        let scope = budget.scope_name();
        who = format!("{who} ({scope} {value})");
        builder = builder
            .label("budget", budget.name())
            .label("scope", scope)
            .label("scope_value", value);
    }
    let builder = builder
        .label("period", transition.period.as_str())
        .label("unit", transition.unit.as_str())
        .label("threshold", format!("{}%", transition.percent))
        .summary(format!(
            "{who} {verb} {} of its {period} budget of {} ({}% threshold)",
            amount(transition.spent),
            amount(transition.limit),
            transition.percent
        ))
        .value("spent", transition.spent as f64 * scale)
        .value("limit", transition.limit as f64 * scale)
        .value("threshold_percent", f64::from(transition.percent));
    if transition.firing {
        builder.firing(transition.fired_window_ms)
    } else {
        let period_end = transition.period.next_start(transition.period_start_ms);
        builder.resolved(transition.fired_window_ms, period_end)
    }
}

/// A forecast that a limit of `budget` runs out within its horizon, or its resolution
/// by the end of the period. Labelled `forecast="true"` beside the threshold alerts'
/// labels, without a threshold; of a ledger-fed budget, with `budget`, `scope` and
/// `scope_value` as its threshold alerts.
fn budget_forecast(
    budget: &BudgetConfig,
    scope_value: Option<&str>,
    transition: &BudgetTransition,
    minutes: u64,
) -> Alert {
    let amount = |value: u64| match transition.unit {
        Unit::Usd => format!("${}.{:06}", value / 1_000_000, value % 1_000_000),
        Unit::Tokens => format!("{value} tokens"),
    };
    let period = match transition.period {
        Period::Day => "daily",
        Period::Month => "monthly",
    };
    let lookback = budget
        .forecast
        .map_or(0, |forecast| forecast.lookback_minutes);
    let (who, burn) = match scope_value {
        None => (
            budget.name(),
            format!("the burn of the last {lookback} minutes"),
        ),
        // The burn of the reads within the lookback, which span at least half of it.
        Some(value) => (
            format!("{} ({} {value})", budget.name(), budget.scope_name()),
            format!("the burn of its reads of the last {lookback} minutes"),
        ),
    };
    let summary = if transition.firing {
        format!(
            "{who} at {burn} runs out of its {period} budget of {} in about {:.1} h ({} spent)",
            amount(transition.limit),
            minutes as f64 / 60.0,
            amount(transition.spent),
        )
    } else {
        format!(
            "{who} ended the period of its {period} forecast having spent {} of {}",
            amount(transition.spent),
            amount(transition.limit),
        )
    };
    let scale = match transition.unit {
        Unit::Usd => 1e-6,
        Unit::Tokens => 1.0,
    };
    let mut builder = AlertBuilder::new(
        AlertKind::Budget,
        &budget.tenant,
        budget.model.as_deref(),
        "warning",
    );
    if let Some(value) = scope_value {
        builder = builder
            .label("budget", budget.name())
            .label("scope", budget.scope_name())
            .label("scope_value", value);
    }
    let builder = builder
        .label("period", transition.period.as_str())
        .label("unit", transition.unit.as_str())
        .label("forecast", "true")
        .summary(summary)
        .value("spent", transition.spent as f64 * scale)
        .value("limit", transition.limit as f64 * scale)
        .value("minutes_left", minutes as f64);
    if transition.firing {
        builder.firing(transition.fired_window_ms)
    } else {
        let period_end = transition.period.next_start(transition.period_start_ms);
        builder.resolved(transition.fired_window_ms, period_end)
    }
}

#[cfg(test)]
mod tests {
    use ais_store::evaluation::{AnomalyRecord, AnomalyState};

    use super::*;
    use crate::evaluator::ALL_MODELS;
    use crate::slo::BurnAlertConfig;

    /// Each alert as the evaluator serialised it before alerts had one builder (see
    /// `testdata/README.md`), from the inputs of the test below, in its order.
    const PINNED: [&str; 7] = [
        r#"{"id":"6494319238badc14bbfd423e8795c334","kind":"anomaly","state":"firing","labels":{"alertname":"AisAnomaly","detector":"latency_p95_zscore","kind":"anomaly","metric":"latency_p95","model":"gpt-4o","severity":"warning","source":"ais","tenant":"acme"},"annotations":{"summary":"latency_p95 of gpt-4o (acme) is 2500.500 against a baseline of 800.250 (score 6.5, latency_p95_zscore)"},"starts_at_ms":120000,"ends_at_ms":null,"values":{"baseline":800.25,"observed":2500.5,"score":6.5}}"#,
        r#"{"id":"464a419bc0f95b6a0ba3f6373efe80e5","kind":"anomaly","state":"resolved","labels":{"alertname":"AisAnomaly","detector":"latency_p95_zscore","kind":"anomaly","metric":"latency_p95","model":"gpt-4o","severity":"warning","source":"ais","tenant":"acme"},"annotations":{"summary":"latency_p95 of gpt-4o (acme) is back to normal (latency_p95_zscore)"},"starts_at_ms":120000,"ends_at_ms":360000,"values":{}}"#,
        r#"{"id":"18c3fe49fc208184002b141c208f0e77","kind":"anomaly","state":"resolved","labels":{"alertname":"AisAnomaly","detector":"cost_zscore","kind":"anomaly","metric":"cost_usd","model":"*","severity":"warning","source":"ais","tenant":"acme"},"annotations":{"summary":"cost_usd of * (acme) is back to normal (cost_zscore)"},"starts_at_ms":360000,"ends_at_ms":420000,"values":{}}"#,
        r#"{"id":"f56ca870cb2e11bda055db0c28fc3ca6","kind":"burn_rate","state":"firing","labels":{"alertname":"AisSloBurnRate","kind":"burn_rate","long_window":"360m","model":"gpt-4o","objective":"latency","severity":"page","short_window":"30m","slo":"chat-fast","source":"ais","tenant":"acme"},"annotations":{"summary":"SLO chat-fast (99.000% latency of gpt-4o for acme) burns its error budget at 6x: 7.50x over 360 min, 9.25x over 30 min"},"starts_at_ms":600000,"ends_at_ms":null,"values":{"factor":6.0,"long_burn":7.5,"short_burn":9.25,"target":0.99}}"#,
        r#"{"id":"60d9b39d79daa44907e1560b0f23c789","kind":"burn_rate","state":"resolved","labels":{"alertname":"AisSloBurnRate","kind":"burn_rate","long_window":"360m","model":"gpt-4o","objective":"latency","severity":"page","short_window":"30m","slo":"chat-fast","source":"ais","tenant":"acme"},"annotations":{"summary":"SLO chat-fast (99.000% latency of gpt-4o for acme) no longer burns its error budget at 6x: 0.50x over 360 min, 0.00x over 30 min"},"starts_at_ms":600000,"ends_at_ms":960000,"values":{"factor":6.0,"long_burn":0.5,"short_burn":0.0,"target":0.99}}"#,
        r#"{"id":"233738f11e994fe729118e7dc9b2a956","kind":"budget","state":"firing","labels":{"alertname":"AisBudget","kind":"budget","model":"gpt-4o","period":"day","severity":"warning","source":"ais","tenant":"acme","threshold":"80%","unit":"usd"},"annotations":{"summary":"acme/gpt-4o has spent $4.000001 of its daily budget of $5.000000 (80% threshold)"},"starts_at_ms":660000,"ends_at_ms":null,"values":{"limit":5.0,"spent":4.000001,"threshold_percent":80.0}}"#,
        r#"{"id":"b250e51f3c95940a0f930359080cf64d","kind":"budget","state":"resolved","labels":{"alertname":"AisBudget","kind":"budget","model":"gpt-4o","period":"month","severity":"critical","source":"ais","tenant":"acme","threshold":"100%","unit":"tokens"},"annotations":{"summary":"acme/gpt-4o ended its period having spent 123 tokens of its monthly budget of 100 tokens (100% threshold)"},"starts_at_ms":720000,"ends_at_ms":2678400000,"values":{"limit":100.0,"spent":123.0,"threshold_percent":100.0}}"#,
    ];

    fn built() -> Vec<Alert> {
        let fired = AnomalyRecord {
            location: None,
            tenant: "acme".into(),
            model: "gpt-4o".into(),
            detector: "latency_p95_zscore".into(),
            metric: "latency_p95".into(),
            window_start_ms: 120_000,
            observed: 2500.5,
            baseline: 800.25,
            score: 6.5,
            state: AnomalyState::Firing,
            resolved_window_ms: None,
        };
        let resolved = Resolution {
            location: None,
            tenant: "acme".into(),
            model: "gpt-4o".into(),
            detector: "latency_p95_zscore".into(),
            window_start_ms: 300_000,
        };
        // Resolved without a known firing window: it starts where it resolved.
        let unknown = Resolution {
            location: None,
            tenant: "acme".into(),
            model: ALL_MODELS.into(),
            detector: "cost_zscore".into(),
            window_start_ms: 360_000,
        };
        let slo = SloConfig {
            name: "chat-fast".into(),
            model: "gpt-4o".into(),
            tenant: None,
            indicator: Indicator::Latency {
                threshold_ms: 1_500.0,
            },
            target: 0.99,
            window_days: 30,
            alerts: BurnAlertConfig::workbook_defaults(),
        };
        let burning = BurnTransition {
            alert: 1,
            firing: true,
            long_burn: 7.5,
            short_burn: 9.25,
            fired_window_ms: 600_000,
        };
        let cooled = BurnTransition {
            firing: false,
            long_burn: 0.5,
            short_burn: 0.0,
            ..burning.clone()
        };
        let spend = BudgetConfig {
            tenant: "acme".into(),
            scope: crate::budget::BudgetScope::Tenant,
            label: None,
            model: Some("gpt-4o".into()),
            daily_usd_micros: Some(5_000_000),
            monthly_usd_micros: None,
            daily_tokens: None,
            monthly_tokens: Some(100),
            thresholds: vec![80, 100],
            forecast: None,
        };
        let crossed = BudgetTransition {
            period: Period::Day,
            unit: Unit::Usd,
            percent: 80,
            firing: true,
            period_start_ms: 0,
            spent: 4_000_001,
            limit: 5_000_000,
            fired_window_ms: 660_000,
            forecast_minutes_left: None,
        };
        let month_ended = BudgetTransition {
            period: Period::Month,
            unit: Unit::Tokens,
            percent: 100,
            firing: false,
            period_start_ms: 0,
            spent: 123,
            limit: 100,
            fired_window_ms: 720_000,
            forecast_minutes_left: None,
        };
        vec![
            anomaly_fired(&fired),
            anomaly_resolved(&resolved, 120_000),
            anomaly_resolved(&unknown, unknown.window_start_ms),
            burn(&slo, "acme", 600_000, &burning),
            burn(&slo, "acme", 900_000, &cooled),
            budget(&spend, &crossed),
            budget(&spend, &month_ended),
        ]
    }

    #[test]
    fn every_kind_keeps_the_ids_labels_and_text_of_earlier_versions() {
        for (alert, pinned) in built().iter().zip(PINNED) {
            let pinned: Alert = serde_json::from_str(pinned).expect("a pinned alert");
            assert_eq!(alert.id, pinned.id, "id of {:?}", pinned.labels);
            assert_eq!(*alert, pinned);
        }
        assert_eq!(built().len(), PINNED.len());
    }

    #[test]
    fn a_forecast_is_a_budget_alert_labelled_forecast_without_a_threshold() {
        let spend = BudgetConfig {
            tenant: "acme".into(),
            scope: crate::budget::BudgetScope::Tenant,
            label: None,
            model: None,
            daily_usd_micros: Some(5_000_000),
            monthly_usd_micros: None,
            daily_tokens: None,
            monthly_tokens: None,
            thresholds: vec![100],
            forecast: Some(crate::budget::Forecast {
                hours: 6,
                lookback_minutes: 60,
                from_percent: 10,
            }),
        };
        let forecast = BudgetTransition {
            period: Period::Day,
            unit: Unit::Usd,
            percent: 0,
            firing: true,
            period_start_ms: 0,
            spent: 2_000_000,
            limit: 5_000_000,
            fired_window_ms: 660_000,
            forecast_minutes_left: Some(90),
        };
        let threshold = BudgetTransition {
            percent: 100,
            forecast_minutes_left: None,
            ..forecast.clone()
        };
        let fired = budget(&spend, &forecast);
        assert_eq!(
            fired.labels.get("forecast").map(String::as_str),
            Some("true")
        );
        assert!(!fired.labels.contains_key("threshold"));
        assert!(
            fired.annotations["summary"].contains("in about 1.5 h"),
            "{fired:?}"
        );
        assert_ne!(fired.id, budget(&spend, &threshold).id);
        let resolved = budget(
            &spend,
            &BudgetTransition {
                firing: false,
                ..forecast
            },
        );
        assert_eq!(resolved.labels, fired.labels);
        assert_ne!(resolved.id, fired.id);
    }

    #[test]
    fn firing_and_resolution_share_labels_not_ids() {
        let alerts = built();
        assert_eq!(alerts[0].labels, alerts[1].labels);
        assert_ne!(alerts[0].id, alerts[1].id);
        assert_eq!(alerts[3].labels, alerts[4].labels);
        assert_ne!(alerts[3].id, alerts[4].id);
    }
}
