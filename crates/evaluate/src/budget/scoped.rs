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
//! fired ([`ScopedTracker`]): a value with nothing crossed or forecast in its current
//! periods is not kept, so the state holds the values over a threshold, not every user.
//! The number of values kept across budgets is bounded (a value past the bound is
//! counted, not alerted), and so is the number that start alerting in one pass (the
//! rest start at the next passes, still at or past their thresholds then): `room` of
//! [`ScopedBudgetState::observe`].
//!
//! **Forecasts.** The ledger holds totals per day, not a burn per minute, so a budget
//! with a forecast takes its burn from successive reads: per value read, a short
//! series of (read window, spend) samples ([`SpendSeries`]), at most
//! [`SAMPLES_PER_VALUE`] of them spaced at least a `1 / SAMPLES_PER_VALUE` of the
//! lookback apart, none older than the lookback. The burn is the spend between the
//! oldest sample and the current read over the minutes between them (the windows the
//! reads were taken at, so event time, as the periods are), and is known only once
//! those span at least half the lookback (and a minute): two reads close together would
//! make a wild burn of a few calls. The spend counted is the day's total's growth
//! between reads; across a UTC midnight the new day's total counts, so a burn carries
//! into the new day as a tenant budget's does (what the old day spent after its last
//! read is not seen: the burn is then a little low, never high). A forecast fires for a
//! value when, at that burn, a limit with room left runs out within `forecast_hours`
//! and before its period (UTC day or month) resets, from the read that first says so;
//! once per period, limit and value (a forecast that fired is kept like a crossed
//! threshold, so a value that then reaches 100% gets its threshold alert, not a second
//! forecast); the first read of the next period resolves it, as a tenant budget's
//! forecast resolves. An evaluator catching up reads a ledger ahead of its windows:
//! the spend between those reads looks small, so a forecast can come late, not early.
//!
//! A budget of each value reads only values at or past its lowest threshold; with a
//! forecast it reads from [`Forecast::from_percent`] of a limit instead (the lower of
//! the two), so values are sampled before they near a threshold; the read's bound and
//! its order (the highest share first) are unchanged. A value not in a read loses its
//! samples. The samples live in the evaluator's memory only ([`BudgetSamples`], not in
//! the saved state: they would be written with every commit): after a restart a
//! forecast waits for a new span of reads. The number of values with samples is
//! bounded across budgets (the evaluator gives the bound of kept values): past it, in
//! the read's order, a value is counted, not sampled, and not forecast.
//!
//! **Status.** The saved state keeps the last read's top (at most [`STATUS_VALUES`]
//! values per budget, the highest share first), each with its burn at that read where
//! it was known: the status says from it when each limit runs out, with the rule of a
//! tenant budget's status (a limit with room left that runs out before its period
//! resets; `runs_out_in_minutes`). It says nothing (`null`) where the read knew no burn:
//! before the reads span half the lookback, from the first read after a restart until
//! new reads do, for a value past the bound of sampled values, and without a forecast.
//! Only the top's burns are saved: the state grows by at most [`STATUS_VALUES`] of them
//! per budget.

use std::collections::{BTreeMap, VecDeque};

use ais_store::usage::{SpendLimits, ValueSpend};
use serde::{Deserialize, Serialize};

use super::{
    due_forecasts, runs_out_in_minutes, BudgetConfig, BudgetScope, BudgetTransition, Forecast,
    LimitStatus, Period, PeriodState, Spend, Unit,
};

/// Values of a budget of each value reported by its status, the highest share first.
pub const STATUS_VALUES: usize = 20;

/// Samples kept per value for its burn: enough that the oldest inside the lookback is
/// at least 15/16 of it old once reads have spanned it, at about 16 bytes each.
pub const SAMPLES_PER_VALUE: usize = 16;

const MINUTE_MS: i64 = 60_000;

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

    /// The share of a limit (percent) from which a budget of each value reads a value:
    /// its lowest threshold, or lower with a forecast, whose burn needs reads from before
    /// a threshold.
    pub fn read_floor_percent(&self) -> u32 {
        match (&self.scope, self.forecast) {
            (BudgetScope::Each(_), Some(forecast)) => {
                self.lowest_threshold().min(forecast.from_percent)
            }
            _ => self.lowest_threshold(),
        }
    }
}

/// One value's recent reads, for its burn: kept in memory, never saved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpendSeries {
    /// (read window, running total then), oldest first, all within the lookback of the
    /// last read; at most [`SAMPLES_PER_VALUE`].
    samples: VecDeque<(i64, Spend)>,
    /// The last read: its window, the start of its day, the day's total then, and the
    /// running total (spend since the series started).
    last: Option<LastRead>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct LastRead {
    at_ms: i64,
    day_start_ms: i64,
    day: Spend,
    total: Spend,
}

impl SpendSeries {
    /// Takes the read of window `at_ms` with the day's total `day`. A read at or before
    /// the last is ignored (a pass replayed after a failed commit).
    fn record(&mut self, at_ms: i64, day: Spend, lookback_ms: i64) {
        let day_start_ms = Period::Day.start_of(at_ms);
        let (day, total) = match self.last {
            Some(last) if at_ms <= last.at_ms => return,
            // The day's total only grows; a smaller one (a store that lost rows) is no
            // spend, not a refund, and its growth back is no new spend either.
            Some(last) if last.day_start_ms == day_start_ms => {
                let day = Spend {
                    micros: day.micros.max(last.day.micros),
                    tokens: day.tokens.max(last.day.tokens),
                };
                let total = Spend {
                    micros: last
                        .total
                        .micros
                        .saturating_add(day.micros - last.day.micros),
                    tokens: last
                        .total
                        .tokens
                        .saturating_add(day.tokens - last.day.tokens),
                };
                (day, total)
            }
            // A new day: what it spent so far is spent since the last read.
            Some(last) => (
                day,
                Spend {
                    micros: last.total.micros.saturating_add(day.micros),
                    tokens: last.total.tokens.saturating_add(day.tokens),
                },
            ),
            None => (day, Spend::default()),
        };
        self.last = Some(LastRead {
            at_ms,
            day_start_ms,
            day,
            total,
        });
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| at_ms - *at > lookback_ms)
        {
            self.samples.pop_front();
        }
        let spacing = (lookback_ms / SAMPLES_PER_VALUE as i64).max(1);
        let due = self
            .samples
            .back()
            .is_none_or(|(at, _)| at_ms - *at >= spacing);
        if due {
            if self.samples.len() >= SAMPLES_PER_VALUE {
                self.samples.pop_front();
            }
            self.samples.push_back((at_ms, total));
        }
    }

    /// The spend from the oldest sample to the last read and the whole minutes between
    /// them, once they span at least half of `lookback_ms` and a minute.
    fn burn(&self, lookback_ms: i64) -> Option<(Spend, i64)> {
        let last = self.last?;
        let (oldest_at, oldest_total) = *self.samples.front()?;
        let span_ms = last.at_ms - oldest_at;
        if span_ms < MINUTE_MS || span_ms * 2 < lookback_ms {
            return None;
        }
        let burned = Spend {
            micros: last.total.micros.saturating_sub(oldest_total.micros),
            tokens: last.total.tokens.saturating_sub(oldest_total.tokens),
        };
        Some((burned, span_ms / MINUTE_MS))
    }
}

/// The spend series of each value of one budget with a forecast, by value.
pub type BudgetSamples = BTreeMap<String, SpendSeries>;

/// A budget's series as a read takes them: `room` is how many of its values may have
/// one (the bound across budgets, less the other budgets' values with one).
#[derive(Debug)]
pub struct Sampling<'a> {
    pub samples: &'a mut BudgetSamples,
    pub room: usize,
}

/// A forecast that fired in a value's current period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FiredForecast {
    period: Period,
    unit: Unit,
    period_start_ms: i64,
    fired_window_ms: i64,
    minutes_left: u64,
}

/// One value's spend as a read saw it: in the day, and in the month up to that day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenSpend {
    pub value: String,
    pub day: Spend,
    pub month: Spend,
    /// The value's burn at that read, where known, for the status to say when a limit
    /// runs out: set only on the status's values ([`ScopedBudgetState::observe`]).
    /// Absent otherwise, so an entry without one is written as before forecasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn: Option<ReadBurn>,
}

/// A value's burn as a read took it from its series: `burned` over `minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadBurn {
    pub burned: Spend,
    pub minutes: i64,
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
            burn: None,
        }
    }
}

/// The thresholds one value crossed, and the forecasts that fired for it, in its
/// current day and month.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScopedTracker {
    day: PeriodState,
    month: PeriodState,
    /// Absent while none fired, so a tracker without is written as before forecasts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    forecasts: Vec<FiredForecast>,
}

impl ScopedTracker {
    /// Moves to the periods of `window_ms` (resolving what the ended ones crossed and
    /// forecast), then, with the value's totals of those periods, fires the thresholds
    /// they reach, and with its burn (spend, minutes) the forecasts it calls for.
    fn observe(
        &mut self,
        config: &BudgetConfig,
        window_ms: i64,
        totals: Option<(Spend, Spend)>,
        burn: Option<(Spend, i64)>,
    ) -> Vec<BudgetTransition> {
        let mut transitions = Vec::new();
        for period in [Period::Day, Period::Month] {
            let start = period.start_of(window_ms);
            let state = match period {
                Period::Day => &mut self.day,
                Period::Month => &mut self.month,
            };
            if let Some(ended) = state.roll(config, period, start, &mut transitions) {
                let (ended_forecasts, current): (Vec<FiredForecast>, Vec<FiredForecast>) =
                    std::mem::take(&mut self.forecasts)
                        .into_iter()
                        .partition(|fired| fired.period == period);
                self.forecasts = current;
                for over in ended_forecasts {
                    transitions.push(BudgetTransition {
                        period,
                        unit: over.unit,
                        percent: 0,
                        firing: false,
                        period_start_ms: over.period_start_ms,
                        spent: ended.spent.of(over.unit),
                        limit: super::limit_of(config, period, over.unit).unwrap_or(0),
                        fired_window_ms: over.fired_window_ms,
                        forecast_minutes_left: Some(over.minutes_left),
                    });
                }
            }
            let state = match period {
                Period::Day => &mut self.day,
                Period::Month => &mut self.month,
            };
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
        if let (Some(forecast), Some((burned, minutes))) = (config.forecast, burn) {
            self.forecast(
                config,
                forecast,
                window_ms,
                burned,
                minutes,
                &mut transitions,
            );
        }
        transitions
    }

    /// Fires, once per period and limit, the forecast of each limit with room left that
    /// `burned` per `span_minutes` runs out within `forecast.hours`, before its period
    /// resets (counted from the end of the read's window).
    fn forecast(
        &mut self,
        config: &BudgetConfig,
        forecast: Forecast,
        window_ms: i64,
        burned: Spend,
        span_minutes: i64,
        transitions: &mut Vec<BudgetTransition>,
    ) {
        let periods = [(Period::Day, &self.day), (Period::Month, &self.month)];
        let fired = &self.forecasts;
        let due = due_forecasts(
            config,
            forecast,
            window_ms,
            periods,
            burned,
            span_minutes,
            |period, unit| {
                fired
                    .iter()
                    .any(|fired| fired.period == period && fired.unit == unit)
            },
        );
        for transition in due {
            if let Some(minutes) = transition.forecast_minutes_left {
                self.forecasts.push(FiredForecast {
                    period: transition.period,
                    unit: transition.unit,
                    period_start_ms: transition.period_start_ms,
                    fired_window_ms: window_ms,
                    minutes_left: minutes,
                });
            }
            transitions.push(transition);
        }
    }

    /// Nothing crossed or forecast in either current period: nothing to remember.
    fn is_quiet(&self) -> bool {
        self.day.crossed.is_empty() && self.month.crossed.is_empty() && self.forecasts.is_empty()
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
    /// first, at most [`STATUS_VALUES`], each with its burn at that read where known.
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
    /// Values read for a forecast past `sample_room`: not sampled, not forecast.
    pub unsampled: u64,
}

impl ScopedBudgetState {
    /// Takes the read of `config`'s spend at window `window_ms`: `seen` as the engine
    /// returned it (the highest share first; for a budget of one value, that value
    /// whatever it spent), `cut` when the read stopped at its bound. `room`: how many
    /// more values may be kept across budgets. With a forecast, `sampling` holds the
    /// budget's series (in memory). A read at or before the last one is ignored (a
    /// replay).
    pub fn observe(
        &mut self,
        config: &BudgetConfig,
        window_ms: i64,
        seen: Vec<SeenSpend>,
        cut: bool,
        room: usize,
        sampling: Sampling<'_>,
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
        let burns = match config.forecast {
            Some(forecast) => sample(
                sampling.samples,
                forecast,
                window_ms,
                &seen,
                sampling.room,
                &mut outcome.unsampled,
            ),
            None => {
                sampling.samples.clear();
                BTreeMap::new()
            }
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
            let burn = burns.get(value.as_str()).copied();
            for transition in tracker.observe(config, window_ms, totals, burn) {
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
            let burn = burns.get(spend.value.as_str()).copied();
            let transitions =
                tracker.observe(config, window_ms, Some((spend.day, spend.month)), burn);
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
        // Only the status's values keep their burn: the saved state grows by at most
        // STATUS_VALUES of them per budget, whatever the read's bound.
        let top: Vec<SeenSpend> = seen
            .iter()
            .take(STATUS_VALUES)
            .map(|spend| SeenSpend {
                burn: burns
                    .get(spend.value.as_str())
                    .map(|&(burned, minutes)| ReadBurn { burned, minutes }),
                ..spend.clone()
            })
            .collect();
        self.top = top;
        self.cut = cut;
        outcome
    }

    /// Values kept (with a threshold crossed or a forecast fired in their current
    /// periods).
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

    /// Each value of the last read's top (the highest share first) against each limit;
    /// with a forecast, when each limit runs out at the value's burn at that read (as a
    /// tenant budget's status says it: [`super::runs_out_in_minutes`]), where the read
    /// knew the burn.
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
                        }
                        .of(unit);
                        let runs_out_in_minutes = config
                            .forecast
                            .and(seen.burn)
                            .zip(self.read_at_ms)
                            .and_then(|(burn, read_at)| {
                                runs_out_in_minutes(
                                    period,
                                    period.start_of(read_at),
                                    read_at,
                                    limit,
                                    spent,
                                    burn.burned.of(unit),
                                    burn.minutes,
                                )
                            });
                        Some(LimitStatus {
                            period,
                            unit,
                            period_start_ms: self.read_at_ms.map(|at| period.start_of(at)),
                            spent,
                            limit,
                            crossed: tracker
                                .map(|tracker| tracker.crossed(period, unit))
                                .unwrap_or_default(),
                            runs_out_in_minutes,
                        })
                    })
                    .collect();
                (seen.value, limits)
            })
            .collect()
    }
}

/// Records the read of each value of `seen` in its series (in the read's order, at most
/// `room` values: those past it are counted in `unsampled` and lose their series, as do
/// the values not read); returns each value's burn (spend, minutes) where known.
fn sample<'a>(
    samples: &mut BudgetSamples,
    forecast: Forecast,
    window_ms: i64,
    seen: &'a [SeenSpend],
    room: usize,
    unsampled: &mut u64,
) -> BTreeMap<&'a str, (Spend, i64)> {
    let lookback_ms = i64::from(forecast.lookback_minutes.max(1)) * MINUTE_MS;
    let mut kept = BudgetSamples::new();
    let mut burns = BTreeMap::new();
    for spend in seen {
        if kept.len() >= room {
            *unsampled += 1;
            continue;
        }
        let mut series = samples.remove(&spend.value).unwrap_or_default();
        series.record(window_ms, spend.day, lookback_ms);
        if let Some(burn) = series.burn(lookback_ms) {
            burns.insert(spend.value.as_str(), burn);
        }
        kept.insert(spend.value.clone(), series);
    }
    *samples = kept;
    burns
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

    impl ScopedBudgetState {
        /// [`ScopedBudgetState::observe`] without samples (a budget without a forecast).
        fn observe_read(
            &mut self,
            config: &BudgetConfig,
            window_ms: i64,
            seen: Vec<SeenSpend>,
            cut: bool,
            room: usize,
        ) -> ScopedOutcome {
            self.observe(
                config,
                window_ms,
                seen,
                cut,
                room,
                Sampling {
                    samples: &mut BudgetSamples::new(),
                    room: usize::MAX,
                },
            )
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
            burn: None,
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
        let first = state.observe_read(
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
        let again = state.observe_read(
            &config,
            JAN_31 + 2 * M,
            vec![seen("u-1", 500_000, 0)],
            false,
            10,
        );
        assert!(again.transitions.is_empty());
        let replay = state.observe_read(
            &config,
            JAN_31 + M,
            vec![seen("u-1", 2_000_000, 0)],
            false,
            10,
        );
        assert!(replay.transitions.is_empty());
        // One read past two thresholds fires both, for that value only.
        let both = state.observe_read(
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
        state.observe_read(
            &config,
            JAN_31 + 10 * M,
            vec![seen("u-1", 600_000, 0)],
            false,
            10,
        );
        // The next day u-1 has spent nothing yet: not read, still resolved.
        let next = state.observe_read(&config, JAN_31 + DAY, Vec::new(), false, 10);
        assert_eq!(fired(&next), [("u-1".to_string(), 50, false, 600_000)]);
        assert_eq!(next.transitions[0].transition.period_start_ms, JAN_31);
        assert_eq!(
            next.transitions[0].transition.fired_window_ms,
            JAN_31 + 10 * M
        );
        assert_eq!(state.kept(), 0, "nothing crossed today: forgotten");
        // And it fires again when reached again in the new day.
        let again = state.observe_read(
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
        let outcome = state.observe_read(
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
            .observe_read(&config, JAN_31, Vec::new(), false, 10)
            .transitions
            .is_empty());
        let saved = serde_json::to_string(&state).expect("serialises");
        let restored: ScopedBudgetState = serde_json::from_str(&saved).expect("reads");
        assert_eq!(restored, state);
    }

    fn usd(micros: u64) -> Spend {
        Spend { micros, tokens: 0 }
    }

    fn each_user_forecast(daily_usd: f64) -> BudgetConfig {
        BudgetConfig {
            forecast: Some(Forecast {
                hours: 6,
                lookback_minutes: 60,
                from_percent: 10,
            }),
            ..each_user(daily_usd)
        }
    }

    /// The read of `seen` at `window_ms` with the budget's series `samples`.
    fn read_sampled(
        state: &mut ScopedBudgetState,
        config: &BudgetConfig,
        samples: &mut BudgetSamples,
        window_ms: i64,
        seen: Vec<SeenSpend>,
    ) {
        state.observe(
            config,
            window_ms,
            seen,
            false,
            10,
            Sampling {
                samples,
                room: usize::MAX,
            },
        );
    }

    /// What the status of the state as saved (written and read back) says of `value`'s
    /// daily dollars; `None` when the status does not list the value.
    fn saved_runs_out(
        state: &ScopedBudgetState,
        config: &BudgetConfig,
        value: &str,
    ) -> Option<Option<u64>> {
        let saved = serde_json::to_vec(state).expect("serialises");
        let restored: ScopedBudgetState = serde_json::from_slice(&saved).expect("reads");
        restored
            .status(config)
            .into_iter()
            .find(|(listed, _)| listed == value)
            .map(|(_, limits)| limits[0].runs_out_in_minutes)
    }

    #[test]
    fn the_status_says_when_a_value_runs_out_once_its_reads_span_half_the_lookback() {
        const LIMIT: u64 = 10_000_000;
        const START: u64 = 1_000_000;
        const PER_MINUTE: u64 = 23_000;
        let config = each_user_forecast(10.0);
        let mut state = ScopedBudgetState::default();
        let mut samples = BudgetSamples::new();
        // From 10:00, read every minute: u-ramp's day grows by PER_MINUTE, u-flat's not.
        let ten = JAN_31 + 600 * M;
        let day_of = |minute: u64| START + PER_MINUTE * minute;
        for minute in 0..30 {
            let reads = vec![seen("u-ramp", day_of(minute), 0), seen("u-flat", START, 0)];
            read_sampled(
                &mut state,
                &config,
                &mut samples,
                ten + minute as i64 * M,
                reads,
            );
            assert_eq!(
                saved_runs_out(&state, &config, "u-ramp"),
                Some(None),
                "{minute} minutes of reads: under half of the 60 minutes' lookback"
            );
        }
        let reads = vec![seen("u-ramp", day_of(30), 0), seen("u-flat", START, 0)];
        read_sampled(&mut state, &config, &mut samples, ten + 30 * M, reads);
        // At PER_MINUTE, the room left after 30 minutes runs out in this many minutes,
        // well before midnight.
        let expected = (LIMIT - day_of(30)).div_ceil(PER_MINUTE);
        assert!(expected < 13 * 60, "{expected}");
        assert_eq!(
            saved_runs_out(&state, &config, "u-flat"),
            Some(None),
            "flat spend never runs out"
        );
        assert_eq!(
            saved_runs_out(&state, &config, "u-ramp"),
            Some(Some(expected))
        );
        // Without a forecast configured, nothing is said, whatever was saved.
        assert_eq!(
            saved_runs_out(&state, &each_user(10.0), "u-ramp"),
            Some(None)
        );

        // u-ramp out of a read: not listed; back in the next, its samples start anew.
        read_sampled(
            &mut state,
            &config,
            &mut samples,
            ten + 31 * M,
            vec![seen("u-flat", START, 0)],
        );
        assert_eq!(saved_runs_out(&state, &config, "u-ramp"), None);
        read_sampled(
            &mut state,
            &config,
            &mut samples,
            ten + 32 * M,
            vec![seen("u-ramp", day_of(32), 0), seen("u-flat", START, 0)],
        );
        assert_eq!(saved_runs_out(&state, &config, "u-ramp"), Some(None));
    }

    #[test]
    fn a_burn_that_runs_out_after_midnight_or_a_restart_says_nothing() {
        let config = each_user_forecast(10.0);
        let mut state = ScopedBudgetState::default();
        let mut samples = BudgetSamples::new();
        // From 23:00, $0.001 a minute from $1: $9 left is 9,000 minutes, past midnight.
        let eleven = JAN_31 + 23 * 60 * M;
        for minute in 0..=40 {
            let reads = vec![seen("u-1", 1_000_000 + 1_000 * minute, 0)];
            read_sampled(
                &mut state,
                &config,
                &mut samples,
                eleven + minute as i64 * M,
                reads,
            );
        }
        assert_eq!(saved_runs_out(&state, &config, "u-1"), Some(None));
        // A fast burn, then a restart: the saved state says what its last read knew,
        // and the first read after it knows no burn yet.
        let mut state = ScopedBudgetState::default();
        let mut samples = BudgetSamples::new();
        for minute in 0..=40 {
            let reads = vec![seen("u-1", 1_000_000 + 100_000 * minute, 0)];
            read_sampled(
                &mut state,
                &config,
                &mut samples,
                JAN_31 + minute as i64 * M,
                reads,
            );
        }
        assert!(saved_runs_out(&state, &config, "u-1").is_some_and(|left| left.is_some()));
        let saved = serde_json::to_vec(&state).expect("serialises");
        let mut restarted: ScopedBudgetState = serde_json::from_slice(&saved).expect("reads");
        read_sampled(
            &mut restarted,
            &config,
            &mut BudgetSamples::new(),
            JAN_31 + 41 * M,
            vec![seen("u-1", 5_200_000, 0)],
        );
        assert_eq!(saved_runs_out(&restarted, &config, "u-1"), Some(None));
    }

    #[test]
    fn only_the_status_values_keep_a_burn_and_older_saved_states_read() {
        let config = each_user_forecast(10.0);
        let mut state = ScopedBudgetState::default();
        let mut samples = BudgetSamples::new();
        let values = STATUS_VALUES + 5;
        // Every value ramps, the first the most spent; the read's order is theirs.
        for minute in 0..=40u64 {
            let reads = (0..values)
                .map(|index| {
                    let day = 2_000_000 - 10_000 * index as u64 + 1_000 * minute;
                    seen(&format!("u-{index:02}"), day, 0)
                })
                .collect();
            read_sampled(
                &mut state,
                &config,
                &mut samples,
                JAN_31 + minute as i64 * M,
                reads,
            );
        }
        assert_eq!(samples.len(), values, "every value read is sampled");
        let saved = serde_json::to_string(&state).expect("serialises");
        assert_eq!(saved.matches("\"burn\"").count(), STATUS_VALUES, "{saved}");
        // A value past the sampled bound has no burn to say.
        let mut bounded = ScopedBudgetState::default();
        let mut bounded_samples = BudgetSamples::new();
        for minute in 0..=40u64 {
            bounded.observe(
                &config,
                JAN_31 + minute as i64 * M,
                vec![
                    seen("u-a", 2_000_000 + 100_000 * minute, 0),
                    seen("u-b", 1_000_000 + 100_000 * minute, 0),
                ],
                false,
                10,
                Sampling {
                    samples: &mut bounded_samples,
                    room: 1,
                },
            );
        }
        assert!(saved_runs_out(&bounded, &config, "u-a").is_some_and(|left| left.is_some()));
        assert_eq!(saved_runs_out(&bounded, &config, "u-b"), Some(None));
        // A state written before burns were kept reads, and says nothing of them.
        let older = format!(
            r#"{{"read_at_ms":{JAN_31},"top":[{{"value":"u-1","day":{{"micros":5,"tokens":0}},"month":{{"micros":5,"tokens":0}}}}]}}"#
        );
        let older: ScopedBudgetState = serde_json::from_str(&older).expect("reads");
        let status = older.status(&config);
        assert_eq!(status[0].0, "u-1");
        assert_eq!(status[0].1[0].spent, 5);
        assert_eq!(status[0].1[0].runs_out_in_minutes, None);
    }

    #[test]
    fn a_series_knows_its_burn_once_its_reads_span_half_the_lookback() {
        let lookback = 60 * M;
        let mut series = SpendSeries::default();
        // $0.001 a minute, read every minute.
        let read = |series: &mut SpendSeries, minute: i64| {
            series.record(JAN_31 + minute * M, usd(1_000 * minute as u64), lookback);
        };
        for minute in 0..30 {
            read(&mut series, minute);
        }
        assert_eq!(series.burn(lookback), None, "29 minutes: under half of 60");
        read(&mut series, 30);
        assert_eq!(series.burn(lookback), Some((usd(30_000), 30)));
        // A replayed read changes nothing.
        series.record(JAN_31 + 30 * M, usd(90_000), lookback);
        assert_eq!(series.burn(lookback), Some((usd(30_000), 30)));
        // Ten hours of reads: a bounded series whose oldest sample is near the lookback.
        for minute in 31..600 {
            read(&mut series, minute);
            assert!(series.samples.len() <= SAMPLES_PER_VALUE);
        }
        let (burned, span) = series.burn(lookback).expect("known");
        assert!((57..=60).contains(&span), "{span}");
        assert_eq!(burned, usd(1_000 * span as u64));
    }

    #[test]
    fn a_series_carries_its_burn_over_midnight_and_takes_no_refund() {
        let lookback = 60 * M;
        let mut series = SpendSeries::default();
        // $0.001 a minute from 23:20 to 00:20: each read is the day's total so far.
        let midnight = JAN_31 + DAY;
        for minute in -40..=20 {
            let at = midnight + minute * M;
            let minutes_of_day = (at - Period::Day.start_of(at)) / M + 1;
            series.record(at, usd(1_000 * minutes_of_day as u64), lookback);
        }
        let (burned, span) = series.burn(lookback).expect("known");
        assert_eq!(
            burned,
            usd(1_000 * span as u64),
            "the burn of yesterday too"
        );
        // A total smaller than the last (rows lost) is no spend, nor is its way back.
        let total = |series: &SpendSeries| series.last.map(|last| last.total);
        let before = total(&series);
        series.record(midnight + 21 * M, usd(0), lookback);
        assert_eq!(total(&series), before);
        series.record(midnight + 22 * M, usd(21_000), lookback);
        assert_eq!(total(&series), before);
    }
}
