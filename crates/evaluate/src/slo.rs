//! Service-level objectives: error budgets and multi-window, multi-burn-rate alerts
//! (Google SRE workbook, "Alerting on SLOs"). No I/O.
//!
//! An objective says which fraction of requests must be good over a rolling window:
//! - availability: a request is good when its status is `ok`;
//! - latency: a request is good when its latency is at most `threshold_ms` (errors
//!   included: a fast failure is still a fast answer, and its badness is the
//!   availability objective's business).
//!
//! The burn rate over a span of windows is its bad fraction divided by the budget
//! fraction `1 − target`: 1 spends the budget exactly over the objective's window,
//! 14.4 spends 2% of a 30-day budget in one hour. An alert pair fires when both its
//! long and its short span burn at least `factor` (the long span proves it matters,
//! the short one that it is still happening) and resolves when either drops below.
//! A span without requests burns 0.
//!
//! [`SloTracker`] keeps per-minute counts for the longest alert span and per-hour
//! counts for the objective's window; it is fed one final window at a time, in order,
//! empty windows included, so alerts resolve when traffic stops.
//!
//! [`section`] is the config file's `[[slos]]`, checked into [`SloConfig`]s.

use std::collections::VecDeque;

use ais_model::time::MINUTE_MS;
use serde::{Deserialize, Serialize};

pub mod section;

const HOUR_MS: i64 = 3_600_000;

/// What makes a request good.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "objective", rename_all = "snake_case")]
pub enum Indicator {
    /// `status` is `ok`.
    Availability,
    /// `latency_ms` at most `threshold_ms`. Counted from the latency sketch of each
    /// window: a request within 1% of the threshold may count on either side.
    Latency { threshold_ms: f64 },
}

/// One long/short pair of a multi-window burn-rate alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurnAlertConfig {
    pub factor: f64,
    pub long_minutes: u32,
    pub short_minutes: u32,
    /// A routing hint for receivers: `page` or `ticket` by default.
    pub severity: String,
}

impl BurnAlertConfig {
    /// The SRE workbook's three pairs for a 30-day objective: 2% of the budget in an
    /// hour, 5% in six hours (page), 10% in three days (ticket).
    pub fn workbook_defaults() -> Vec<BurnAlertConfig> {
        vec![
            Self::pair(14.4, 60, 5, "page"),
            Self::pair(6.0, 360, 30, "page"),
            Self::pair(1.0, 4_320, 360, "ticket"),
        ]
    }

    fn pair(factor: f64, long_minutes: u32, short_minutes: u32, severity: &str) -> Self {
        Self {
            factor,
            long_minutes,
            short_minutes,
            severity: severity.to_string(),
        }
    }
}

/// One objective from the config file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloConfig {
    /// Unique among objectives; part of the alert's identity.
    pub name: String,
    pub model: String,
    /// `None`: the objective applies to each tenant's traffic to the model separately.
    pub tenant: Option<String>,
    #[serde(flatten)]
    pub indicator: Indicator,
    /// Fraction of good requests, 0 < target < 1 (0.999 for "99.9%").
    pub target: f64,
    pub window_days: u32,
    pub alerts: Vec<BurnAlertConfig>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SloConfigError {
    #[error("objective {name:?}: target must be between 0 and 1 exclusive (0.999 for 99.9%), found {target}")]
    Target { name: String, target: f64 },
    #[error("objective {name:?}: window_days must be between 1 and 366")]
    Window { name: String },
    #[error("objective {name:?}: latency threshold_ms must be a positive number")]
    Threshold { name: String },
    #[error("objective {name:?}: an alert needs factor > 0 and 1 <= short_minutes <= long_minutes <= 44640 (31 days)")]
    Alert { name: String },
}

impl SloConfig {
    pub fn validate(&self) -> Result<(), SloConfigError> {
        let name = self.name.clone();
        if !(self.target > 0.0 && self.target < 1.0) {
            return Err(SloConfigError::Target {
                name,
                target: self.target,
            });
        }
        if !(1..=366).contains(&self.window_days) {
            return Err(SloConfigError::Window { name });
        }
        if let Indicator::Latency { threshold_ms } = self.indicator {
            if !(threshold_ms.is_finite() && threshold_ms > 0.0) {
                return Err(SloConfigError::Threshold { name });
            }
        }
        for alert in &self.alerts {
            let valid = alert.factor.is_finite()
                && alert.factor > 0.0
                && alert.short_minutes >= 1
                && alert.short_minutes <= alert.long_minutes
                && alert.long_minutes <= 44_640;
            if !valid {
                return Err(SloConfigError::Alert { name });
            }
        }
        Ok(())
    }

    /// Whether traffic of (tenant, model) counts towards this objective.
    pub fn applies_to(&self, tenant: &str, model: &str) -> bool {
        self.model == model && self.tenant.as_deref().is_none_or(|only| only == tenant)
    }

    fn budget_fraction(&self) -> f64 {
        1.0 - self.target
    }

    fn longest_alert_ms(&self) -> i64 {
        self.alerts
            .iter()
            .map(|alert| i64::from(alert.long_minutes.max(alert.short_minutes)) * MINUTE_MS)
            .max()
            .unwrap_or(0)
    }

    fn window_ms(&self) -> i64 {
        i64::from(self.window_days) * 24 * HOUR_MS
    }
}

/// Bad and total requests of some span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub bad: u64,
    pub total: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.bad = self.bad.saturating_add(other.bad);
        self.total = self.total.saturating_add(other.total);
    }
}

/// Burn rate of `counts` against an objective with budget fraction `1 − target`:
/// (bad / total) / (1 − target); 0 without requests.
pub fn burn_rate(counts: Counts, target: f64) -> f64 {
    if counts.total == 0 {
        return 0.0;
    }
    let bad_fraction = counts.bad as f64 / counts.total as f64;
    bad_fraction / (1.0 - target)
}

/// Fraction of the error budget left over `counts`: 1 − bad / (total · (1 − target)).
/// 1 without requests; negative once the budget is overspent.
pub fn budget_remaining(counts: Counts, target: f64) -> f64 {
    if counts.total == 0 {
        return 1.0;
    }
    let allowed = counts.total as f64 * (1.0 - target);
    1.0 - counts.bad as f64 / allowed
}

/// A burn-rate alert that fired or resolved at a window.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnTransition {
    /// Index into [`SloConfig::alerts`].
    pub alert: usize,
    pub firing: bool,
    pub long_burn: f64,
    pub short_burn: f64,
    /// The window where the alert fired (for a resolution: where it had fired).
    pub fired_window_ms: i64,
}

/// Current burn of one alert pair (for `GET /v1/slos`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurnStatus {
    pub factor: f64,
    pub long_minutes: u32,
    pub short_minutes: u32,
    pub severity: String,
    pub long_burn: f64,
    pub short_burn: f64,
    pub firing: bool,
}

/// State of one objective for one tenant, fed final windows in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SloTracker {
    /// Non-empty minutes within the longest alert span, oldest first.
    minutes: VecDeque<(i64, Counts)>,
    /// Non-empty hours within the objective's window, oldest first.
    hours: VecDeque<(i64, Counts)>,
    /// Per alert pair: the window where it fired, while it fires.
    firing: Vec<Option<i64>>,
    /// The last window fed.
    last_window_ms: Option<i64>,
}

impl SloTracker {
    /// Feeds window `[window_ms, window_ms + 60 s)` with its counts; returns the alert
    /// pairs that fired or resolved with it. Windows must come in increasing order; a
    /// window at or before the last one fed is ignored.
    pub fn observe(
        &mut self,
        config: &SloConfig,
        window_ms: i64,
        counts: Counts,
    ) -> Vec<BurnTransition> {
        if self.last_window_ms.is_some_and(|last| window_ms <= last) {
            return Vec::new();
        }
        self.last_window_ms = Some(window_ms);
        if counts.total > 0 {
            self.minutes.push_back((window_ms, counts));
            let hour = window_ms.div_euclid(HOUR_MS) * HOUR_MS;
            match self.hours.back_mut() {
                Some((last_hour, hour_counts)) if *last_hour == hour => hour_counts.add(counts),
                _ => self.hours.push_back((hour, counts)),
            }
        }
        let minutes_from = window_ms + MINUTE_MS - config.longest_alert_ms();
        while self.minutes.front().is_some_and(|(m, _)| *m < minutes_from) {
            self.minutes.pop_front();
        }
        let hours_from = self.window_start(config, window_ms);
        while self.hours.front().is_some_and(|(h, _)| *h < hours_from) {
            self.hours.pop_front();
        }
        self.firing.resize(config.alerts.len(), None);

        let mut transitions = Vec::new();
        for (index, alert) in config.alerts.iter().enumerate() {
            let long_burn = burn_rate(self.span(window_ms, alert.long_minutes), config.target);
            let short_burn = burn_rate(self.span(window_ms, alert.short_minutes), config.target);
            let burning = long_burn >= alert.factor && short_burn >= alert.factor;
            match (self.firing[index], burning) {
                (None, true) => {
                    self.firing[index] = Some(window_ms);
                    transitions.push(BurnTransition {
                        alert: index,
                        firing: true,
                        long_burn,
                        short_burn,
                        fired_window_ms: window_ms,
                    });
                }
                (Some(fired), false) => {
                    self.firing[index] = None;
                    transitions.push(BurnTransition {
                        alert: index,
                        firing: false,
                        long_burn,
                        short_burn,
                        fired_window_ms: fired,
                    });
                }
                _ => {}
            }
        }
        transitions
    }

    /// Counts of the `minutes` windows ending with the last one fed.
    fn span(&self, window_ms: i64, minutes: u32) -> Counts {
        let from = window_ms + MINUTE_MS - i64::from(minutes) * MINUTE_MS;
        let mut counts = Counts::default();
        for (_, minute) in self.minutes.iter().rev().take_while(|(m, _)| *m >= from) {
            counts.add(*minute);
        }
        counts
    }

    /// First hour counted in the objective's window ending with `window_ms`: whole UTC
    /// hours, the current one included, `window_days` long in all.
    fn window_start(&self, config: &SloConfig, window_ms: i64) -> i64 {
        let hour = window_ms.div_euclid(HOUR_MS) * HOUR_MS;
        hour + HOUR_MS - config.window_ms()
    }

    /// Bad and total requests over the objective's window.
    pub fn window_counts(&self) -> Counts {
        let mut counts = Counts::default();
        for (_, hour) in &self.hours {
            counts.add(*hour);
        }
        counts
    }

    pub fn last_window_ms(&self) -> Option<i64> {
        self.last_window_ms
    }

    /// Burn of every alert pair as of the last window fed.
    pub fn burn_status(&self, config: &SloConfig) -> Vec<BurnStatus> {
        let Some(window_ms) = self.last_window_ms else {
            return Vec::new();
        };
        config
            .alerts
            .iter()
            .enumerate()
            .map(|(index, alert)| BurnStatus {
                factor: alert.factor,
                long_minutes: alert.long_minutes,
                short_minutes: alert.short_minutes,
                severity: alert.severity.clone(),
                long_burn: burn_rate(self.span(window_ms, alert.long_minutes), config.target),
                short_burn: burn_rate(self.span(window_ms, alert.short_minutes), config.target),
                firing: self.firing.get(index).copied().flatten().is_some(),
            })
            .collect()
    }

    /// The fraction of the budget left over the objective's window.
    pub fn budget_remaining(&self, config: &SloConfig) -> f64 {
        budget_remaining(self.window_counts(), config.target)
    }

    pub fn budget_fraction(config: &SloConfig) -> f64 {
        config.budget_fraction()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = MINUTE_MS;

    fn availability(alerts: Vec<BurnAlertConfig>) -> SloConfig {
        SloConfig {
            name: "chat".to_string(),
            model: "m".to_string(),
            tenant: None,
            indicator: Indicator::Availability,
            target: 0.99,
            window_days: 30,
            alerts,
        }
    }

    fn counts(bad: u64, total: u64) -> Counts {
        Counts { bad, total }
    }

    #[test]
    fn burn_rate_matches_hand_computed_cases() {
        // 1% bad against a 99% objective spends the budget exactly: burn 1.
        assert!((burn_rate(counts(10, 1_000), 0.99) - 1.0).abs() < 1e-9);
        // 14.4% bad against 99%: 14.4× (2% of a 30-day budget per hour).
        assert!((burn_rate(counts(144, 1_000), 0.99) - 14.4).abs() < 1e-9);
        // 0.6% bad against 99.9%: 6×.
        assert!((burn_rate(counts(6, 1_000), 0.999) - 6.0).abs() < 1e-9);
        // Everything bad against 99.9%: 1000×.
        assert!((burn_rate(counts(50, 50), 0.999) - 1_000.0).abs() < 1e-6);
        assert_eq!(burn_rate(counts(0, 0), 0.99), 0.0);
    }

    #[test]
    fn budget_remaining_matches_hand_computed_cases() {
        // 10,000 requests at 99.9% allow 10 bad; 4 bad leave 60%.
        assert!((budget_remaining(counts(4, 10_000), 0.999) - 0.6).abs() < 1e-9);
        // 25 bad of 10,000 at 99.9% overspend by 150%: -1.5 left.
        assert!((budget_remaining(counts(25, 10_000), 0.999) + 1.5).abs() < 1e-9);
        assert_eq!(budget_remaining(counts(0, 0), 0.999), 1.0);
    }

    #[test]
    fn workbook_defaults_validate() {
        availability(BurnAlertConfig::workbook_defaults())
            .validate()
            .expect("defaults are valid");
        let mut bad = availability(vec![BurnAlertConfig::pair(2.0, 5, 10, "page")]);
        assert!(matches!(bad.validate(), Err(SloConfigError::Alert { .. })));
        bad.alerts.clear();
        bad.target = 99.0;
        assert!(matches!(bad.validate(), Err(SloConfigError::Target { .. })));
    }

    #[test]
    fn a_pair_fires_only_when_both_spans_burn_and_resolves_when_the_short_one_stops() {
        // 10× over 5 minutes and 1 minute against 99%: both spans need ≥ 10% bad.
        let config = availability(vec![BurnAlertConfig::pair(10.0, 5, 1, "page")]);
        let mut tracker = SloTracker::default();
        for minute in 0..5 {
            assert!(tracker
                .observe(&config, minute * M, counts(0, 100))
                .is_empty());
        }
        // Minute 5: 30 bad of 100. Short span: 30% → 30×. Long span (minutes 1..=5):
        // 30 of 500 = 6% → 6×: below 10, no alert.
        assert!(tracker.observe(&config, 5 * M, counts(30, 100)).is_empty());
        let status = tracker.burn_status(&config);
        assert!((status[0].short_burn - 30.0).abs() < 1e-9);
        assert!((status[0].long_burn - 6.0).abs() < 1e-9);
        // Minute 6: 30 more. Long (2..=6): 60 of 500 = 12% → 12×; short 30×: fires.
        let fired = tracker.observe(&config, 6 * M, counts(30, 100));
        assert_eq!(fired.len(), 1);
        assert!(fired[0].firing);
        assert!((fired[0].long_burn - 12.0).abs() < 1e-9);
        assert!((fired[0].short_burn - 30.0).abs() < 1e-9);
        // Minute 7: 20 bad. Long 80/500 = 16×, short 20×: still firing, no transition.
        assert!(tracker.observe(&config, 7 * M, counts(20, 100)).is_empty());
        // Minute 8: clean. Long still 80/500 = 16× but short 0×: resolves.
        let resolved = tracker.observe(&config, 8 * M, counts(0, 100));
        assert_eq!(resolved.len(), 1);
        assert!(!resolved[0].firing);
        assert_eq!(resolved[0].fired_window_ms, 6 * M);
        assert!((resolved[0].long_burn - 16.0).abs() < 1e-9);
        assert_eq!(resolved[0].short_burn, 0.0);
        // A replayed window changes nothing.
        assert!(tracker.observe(&config, 8 * M, counts(100, 100)).is_empty());
    }

    #[test]
    fn an_empty_window_resolves_a_firing_alert() {
        let config = availability(vec![BurnAlertConfig::pair(2.0, 2, 1, "page")]);
        let mut tracker = SloTracker::default();
        assert!(tracker.observe(&config, 0, counts(50, 100))[0].firing);
        let resolved = tracker.observe(&config, M, Counts::default());
        assert_eq!(resolved.len(), 1);
        assert!(!resolved[0].firing);
    }

    #[test]
    fn the_budget_counts_whole_hours_of_the_objective_window() {
        // A 1-day objective at 99%: hours older than 23 hours before the current one
        // leave the window.
        let mut config = availability(Vec::new());
        config.window_days = 1;
        let mut tracker = SloTracker::default();
        tracker.observe(&config, 0, counts(5, 1_000));
        tracker.observe(&config, 10 * HOUR_MS, counts(2, 1_000));
        // 7 bad of 2,000 allowed 20: 65% left.
        assert!((tracker.budget_remaining(&config) - 0.65).abs() < 1e-9);
        // Hour 24 starts a window of hours 1..=24: hour 0 leaves.
        tracker.observe(&config, 24 * HOUR_MS + 30 * M, counts(0, 1_000));
        assert_eq!(tracker.window_counts(), counts(2, 2_000));
        assert!((tracker.budget_remaining(&config) - 0.9).abs() < 1e-9);
    }

    #[test]
    fn minutes_beyond_the_longest_span_are_dropped() {
        let config = availability(vec![BurnAlertConfig::pair(1.0, 3, 1, "ticket")]);
        let mut tracker = SloTracker::default();
        for minute in 0..100 {
            tracker.observe(&config, minute * M, counts(0, 10));
        }
        assert_eq!(tracker.minutes.len(), 3);
        assert_eq!(tracker.window_counts().total, 1_000);
    }
}
