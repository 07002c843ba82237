//! Alerts of budgets of a user, key or attribute value ([`BudgetScope::One`]) and of
//! each value of such a scope ([`BudgetScope::Each`]), fed the usage ledger's totals
//! rather than windows. No I/O.
//!
//! The evaluator reads, once per pass that evaluates windows, each such budget's spend
//! in the UTC day and month of the pass's last final window
//! ([`ais_store::usage::SpendQuery`]): the ledger's exact, deduplicated totals, a late
//! event counted in its own day. For a budget of each value, the engine returns only
//! the values at or past the budget's lowest threshold of some limit, the highest share
//! of a limit first, at most a bound of them per pass (the evaluator counts a read cut
//! at its bound).
//!
//! **The window that crosses** a threshold of a ledger-fed budget is the last final
//! window of the evaluator pass whose read first reaches it: the alert starts there
//! and reports the spend that read saw (which may already hold events of minutes not
//! final yet: the ledger counts a batch when it commits). Each threshold fires once per
//! period, limit and value; the period's thresholds resolve with the first read of the
//! next period, reporting the spend last seen. Periods follow the windows' event time,
//! as for tenant budgets. A read is of the current day and month only: spend that
//! reaches a past day after the evaluator moved on (a late event) does not fire, and an
//! evaluator catching up over a day's end reads only the new day.
//!
//! What is kept between passes, in the evaluator's saved state, is per value only what
//! fired ([`ScopedTracker`]): a value with nothing crossed in its current periods is not
//! kept, so the state holds the values over a threshold, not every user. The number of
//! values kept across budgets is bounded (a value past the bound is counted, not
//! alerted), and so is the number that start alerting in one pass (the rest start at
//! the next passes, still at or past their thresholds then): `room` of
//! [`ScopedBudgetState::observe`]. Forecasts apply to budgets of a tenant or a model
//! only.

use std::collections::BTreeMap;

use ais_store::usage::{SpendLimits, ValueSpend};
use serde::{Deserialize, Serialize};

use super::{
    BudgetConfig, BudgetScope, BudgetTransition, LimitStatus, Period, PeriodState, Spend, Unit,
};

/// Values of a budget of each value reported by its status, the highest share first.
pub const STATUS_VALUES: usize = 20;

impl BudgetConfig {
    /// Whether the usage ledger feeds it (a budget of a user, key or attribute value).
    pub fn is_ledger_fed(&self) -> bool {
        !self.is_windowed()
    }

    /// Its limits, as a spend read takes them.
    pub fn spend_limits(&self) -> SpendLimits {
        SpendLimits {
            day_micros: self.daily_usd_micros,
            day_tokens: self.daily_tokens,
            month_micros: self.monthly_usd_micros,
            month_tokens: self.monthly_tokens,
        }
    }

    /// Whether a limit is monthly (a read then sums the month's days).
    pub fn has_monthly_limit(&self) -> bool {
        self.monthly_usd_micros.is_some() || self.monthly_tokens.is_some()
    }

    /// The lowest threshold, in percent.
    pub fn lowest_threshold(&self) -> u32 {
        self.thresholds.iter().copied().min().unwrap_or(100)
    }
}

/// One value's spend as a read saw it: in the day, and in the month up to that day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenSpend {
    pub value: String,
    pub day: Spend,
    pub month: Spend,
}

impl From<&ValueSpend> for SeenSpend {
    fn from(read: &ValueSpend) -> Self {
        Self {
            value: read.value.clone(),
            day: Spend {
                micros: read.day_micros,
                tokens: read.day_tokens,
            },
            month: Spend {
                micros: read.month_micros,
                tokens: read.month_tokens,
            },
        }
    }
}

/// The thresholds one value crossed in its current day and month.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScopedTracker {
    day: PeriodState,
    month: PeriodState,
}

impl ScopedTracker {
    /// Moves to the periods of `window_ms` (resolving what the ended ones crossed), then,
    /// with the value's totals of those periods, fires the thresholds they reach.
    fn observe(
        &mut self,
        config: &BudgetConfig,
        window_ms: i64,
        totals: Option<(Spend, Spend)>,
    ) -> Vec<BudgetTransition> {
        let mut transitions = Vec::new();
        for period in [Period::Day, Period::Month] {
            let start = period.start_of(window_ms);
            let state = match period {
                Period::Day => &mut self.day,
                Period::Month => &mut self.month,
            };
            state.roll(config, period, start, &mut transitions);
            let Some((day, month)) = totals else {
                continue;
            };
            let total = match period {
                Period::Day => day,
                Period::Month => month,
            };
            // The ledger only grows within a period; a smaller total is a read of a
            // store that lost rows (retention of the month's first days), not less spend.
            state.spent = Spend {
                micros: state.spent.micros.max(total.micros),
                tokens: state.spent.tokens.max(total.tokens),
            };
            state.cross(config, period, start, window_ms, &mut transitions);
        }
        transitions
    }

    /// Nothing crossed in either current period: nothing to remember.
    fn is_quiet(&self) -> bool {
        self.day.crossed.is_empty() && self.month.crossed.is_empty()
    }

    fn crossed(&self, period: Period, unit: Unit) -> Vec<u32> {
        match period {
            Period::Day => &self.day,
            Period::Month => &self.month,
        }
        .crossed_of(unit)
    }
}

/// A value's transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueTransition {
    pub value: String,
    pub transition: BudgetTransition,
}

/// What one ledger-fed budget remembers between passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScopedBudgetState {
    /// The window the last read was taken at (the pass's last final window).
    read_at_ms: Option<i64>,
    /// Values with a threshold crossed in their current periods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    values: BTreeMap<String, ScopedTracker>,
    /// As of the last read: the values most spent against the limits, the highest share
    /// first, at most [`STATUS_VALUES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    top: Vec<SeenSpend>,
    /// The last read was cut at its bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cut: bool,
}

/// What [`ScopedBudgetState::observe`] decided.
#[derive(Debug, Default)]
pub struct ScopedOutcome {
    pub transitions: Vec<ValueTransition>,
    /// Values that started to be kept (their first crossing in the period).
    pub added: usize,
    /// Values past `room`: their crossings were not alerted.
    pub untracked: u64,
}

impl ScopedBudgetState {
    /// Takes the read of `config`'s spend at window `window_ms`: `seen` as the engine
    /// returned it (the highest share first; for a budget of one value, that value
    /// whatever it spent), `cut` when the read stopped at its bound. `room`: how many
    /// more values may be kept across budgets. A read at or before the last one is
    /// ignored (a replay).
    pub fn observe(
        &mut self,
        config: &BudgetConfig,
        window_ms: i64,
        seen: Vec<SeenSpend>,
        cut: bool,
        room: usize,
    ) -> ScopedOutcome {
        let mut outcome = ScopedOutcome::default();
        if self.read_at_ms.is_some_and(|last| window_ms <= last) {
            return outcome;
        }
        self.read_at_ms = Some(window_ms);
        let seen = match &config.scope {
            // The value is read whatever it spent: none read is none spent.
            BudgetScope::One { value, .. } if seen.is_empty() => vec![SeenSpend {
                value: value.clone(),
                ..SeenSpend::default()
            }],
            _ => seen,
        };
        let mut read: BTreeMap<&str, &SeenSpend> = BTreeMap::new();
        for spend in &seen {
            read.insert(spend.value.as_str(), spend);
        }
        // Values kept but not read this time (below every threshold in a new period,
        // or past the read's bound): only their periods move.
        for (value, tracker) in &mut self.values {
            let totals = read
                .get(value.as_str())
                .map(|spend| (spend.day, spend.month));
            for transition in tracker.observe(config, window_ms, totals) {
                outcome.transitions.push(ValueTransition {
                    value: value.clone(),
                    transition,
                });
            }
        }
        let mut added = 0usize;
        for spend in &seen {
            if self.values.contains_key(&spend.value) {
                continue;
            }
            let mut tracker = ScopedTracker::default();
            let transitions = tracker.observe(config, window_ms, Some((spend.day, spend.month)));
            if tracker.is_quiet() {
                continue;
            }
            if added >= room {
                outcome.untracked += 1;
                continue;
            }
            added += 1;
            for transition in transitions {
                outcome.transitions.push(ValueTransition {
                    value: spend.value.clone(),
                    transition,
                });
            }
            self.values.insert(spend.value.clone(), tracker);
        }
        outcome.added = added;
        self.values.retain(|_, tracker| !tracker.is_quiet());
        self.top = seen.into_iter().take(STATUS_VALUES).collect();
        self.cut = cut;
        outcome
    }

    /// Values kept (with a threshold crossed in their current periods).
    pub fn kept(&self) -> usize {
        self.values.len()
    }

    /// The window the last read was taken at.
    pub fn read_at_ms(&self) -> Option<i64> {
        self.read_at_ms
    }

    /// Whether the last read was cut at its bound.
    pub fn cut(&self) -> bool {
        self.cut
    }

    /// Each value of the last read's top (the highest share first) against each limit.
    pub fn status(&self, config: &BudgetConfig) -> Vec<(String, Vec<LimitStatus>)> {
        let mut top = self.top.clone();
        if top.is_empty() {
            if let BudgetScope::One { value, .. } = &config.scope {
                top.push(SeenSpend {
                    value: value.clone(),
                    ..SeenSpend::default()
                });
            }
        }
        top.into_iter()
            .map(|seen| {
                let tracker = self.values.get(&seen.value);
                let limits = config
                    .limits()
                    .filter_map(|(period, unit, limit)| {
                        let limit = limit?;
                        let spent = match period {
                            Period::Day => seen.day,
                            Period::Month => seen.month,
                        };
                        Some(LimitStatus {
                            period,
                            unit,
                            period_start_ms: self.read_at_ms.map(|at| period.start_of(at)),
                            spent: spent.of(unit),
                            limit,
                            crossed: tracker
                                .map(|tracker| tracker.crossed(period, unit))
                                .unwrap_or_default(),
                            runs_out_in_minutes: None,
                        })
                    })
                    .collect();
                (seen.value, limits)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use ais_rollup::usage::UsageScope;

    use super::*;
    use crate::budget::usd_to_micros;

    const M: i64 = 60_000;
    const DAY: i64 = 86_400_000;
    /// 2026-01-31T00:00:00Z.
    const JAN_31: i64 = 1_769_817_600_000;

    fn each_user(daily_usd: f64) -> BudgetConfig {
        BudgetConfig {
            tenant: "acme".to_string(),
            model: None,
            scope: BudgetScope::Each(UsageScope::UserId),
            label: None,
            daily_usd_micros: usd_to_micros(daily_usd),
            monthly_usd_micros: None,
            daily_tokens: None,
            monthly_tokens: None,
            thresholds: vec![50, 80, 100],
            forecast: None,
        }
    }

    fn seen(value: &str, day_micros: u64, month_micros: u64) -> SeenSpend {
        SeenSpend {
            value: value.to_string(),
            day: Spend {
                micros: day_micros,
                tokens: 0,
            },
            month: Spend {
                micros: month_micros,
                tokens: 0,
            },
        }
    }

    /// (value, percent, firing, spent) of each transition.
    fn fired(outcome: &ScopedOutcome) -> Vec<(String, u32, bool, u64)> {
        outcome
            .transitions
            .iter()
            .map(|t| {
                (
                    t.value.clone(),
                    t.transition.percent,
                    t.transition.firing,
                    t.transition.spent,
                )
            })
            .collect()
    }

    #[test]
    fn each_value_crosses_each_threshold_once_at_the_read_that_reaches_it() {
        let config = each_user(1.0);
        let mut state = ScopedBudgetState::default();
        // u-1 at exactly 50%; u-2 one micro-dollar short of it.
        let first = state.observe(
            &config,
            JAN_31 + M,
            vec![seen("u-1", 500_000, 500_000), seen("u-2", 499_999, 499_999)],
            false,
            10,
        );
        assert_eq!(fired(&first), [("u-1".to_string(), 50, true, 500_000)]);
        assert_eq!(first.transitions[0].transition.fired_window_ms, JAN_31 + M);
        assert_eq!(state.kept(), 1, "only a value that crossed is kept");
        // The same totals again, and a replay of an earlier read: nothing.
        let again = state.observe(
            &config,
            JAN_31 + 2 * M,
            vec![seen("u-1", 500_000, 0)],
            false,
            10,
        );
        assert!(again.transitions.is_empty());
        let replay = state.observe(
            &config,
            JAN_31 + M,
            vec![seen("u-1", 2_000_000, 0)],
            false,
            10,
        );
        assert!(replay.transitions.is_empty());
        // One read past two thresholds fires both, for that value only.
        let both = state.observe(
            &config,
            JAN_31 + 3 * M,
            vec![seen("u-1", 1_000_000, 0), seen("u-2", 499_999, 0)],
            false,
            10,
        );
        assert_eq!(
            fired(&both),
            [
                ("u-1".to_string(), 80, true, 1_000_000),
                ("u-1".to_string(), 100, true, 1_000_000)
            ]
        );
    }

    #[test]
    fn the_next_day_resolves_what_fired_even_for_values_not_read_again() {
        let config = each_user(1.0);
        let mut state = ScopedBudgetState::default();
        state.observe(
            &config,
            JAN_31 + 10 * M,
            vec![seen("u-1", 600_000, 0)],
            false,
            10,
        );
        // The next day u-1 has spent nothing yet: not read, still resolved.
        let next = state.observe(&config, JAN_31 + DAY, Vec::new(), false, 10);
        assert_eq!(fired(&next), [("u-1".to_string(), 50, false, 600_000)]);
        assert_eq!(next.transitions[0].transition.period_start_ms, JAN_31);
        assert_eq!(
            next.transitions[0].transition.fired_window_ms,
            JAN_31 + 10 * M
        );
        assert_eq!(state.kept(), 0, "nothing crossed today: forgotten");
        // And it fires again when reached again in the new day.
        let again = state.observe(
            &config,
            JAN_31 + DAY + M,
            vec![seen("u-1", 500_000, 0)],
            false,
            10,
        );
        assert_eq!(fired(&again), [("u-1".to_string(), 50, true, 500_000)]);
    }

    #[test]
    fn monthly_limits_read_the_month_and_a_value_past_the_bound_is_counted() {
        let config = BudgetConfig {
            daily_usd_micros: None,
            monthly_usd_micros: Some(10_000_000),
            thresholds: vec![100],
            ..each_user(0.0)
        };
        let mut state = ScopedBudgetState::default();
        let outcome = state.observe(
            &config,
            JAN_31,
            vec![seen("a", 1, 10_000_000), seen("b", 1, 12_000_000)],
            true,
            1,
        );
        assert_eq!(fired(&outcome), [("a".to_string(), 100, true, 10_000_000)]);
        assert_eq!(outcome.untracked, 1, "b is past the bound of kept values");
        assert!(state.cut());
        let status = state.status(&config);
        assert_eq!(status.len(), 2);
        assert_eq!(status[0].1[0].crossed, vec![100]);
        assert!(status[1].1[0].crossed.is_empty());
    }

    #[test]
    fn a_budget_of_one_value_reports_it_at_zero_before_any_spend() {
        let config = BudgetConfig {
            scope: BudgetScope::One {
                scope: UsageScope::UserId,
                value: "u-17".to_string(),
            },
            ..each_user(1.0)
        };
        let mut state = ScopedBudgetState::default();
        let status = state.status(&config);
        assert_eq!(status[0].0, "u-17");
        assert_eq!(status[0].1[0].spent, 0);
        assert!(state
            .observe(&config, JAN_31, Vec::new(), false, 10)
            .transitions
            .is_empty());
        let saved = serde_json::to_string(&state).expect("serialises");
        let restored: ScopedBudgetState = serde_json::from_str(&saved).expect("reads");
        assert_eq!(restored, state);
    }
}
