//! Spend budgets per tenant (all its models) or per (tenant, model), and per value of a
//! usage scope (one user, key or attribute value, or each of them separately): dollars
//! and tokens per UTC day and per UTC month, with alerts at percentages of each limit.
//! No I/O.
//!
//! Budgets of a tenant or a (tenant, model) are fed the final windows' rollups and
//! alert here ([`BudgetTracker`]): at each threshold, and, with a forecast configured,
//! when the burn of the last minutes would run a limit out within a number of hours,
//! before its period ends (once per period and limit; resolved with the period).
//! Budgets of a user, key or attribute value are fed the usage ledger's totals
//! (`ais_rollup::usage`, the same exact per-day counts): [`scoped`] alerts at their
//! thresholds and forecasts, per value for a budget of each value (the burn taken from
//! successive reads of the totals), and [`reserve::Reservations`] checks and holds
//! calls against them.
//!
//! Money stays in integer micro-dollars (the rollups' `cost_micros`), and a threshold
//! is crossed when `spent · 100 ≥ limit · percent` in integers, so a threshold fires
//! at exactly the window that reaches it, whatever the order of the additions. Each
//! threshold fires once per period; when a window of the next day (or month) arrives,
//! the period's fired thresholds resolve and the counters start again from zero.
//! Periods follow event time (the windows' minutes), not the wall clock.
//!
//! [`section`] is the config file's `[[budgets]]`, checked into [`BudgetConfig`]s.

use ais_rollup::usage::UsageScope;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub mod reserve;
pub mod scoped;
pub mod section;

const DAY_MS: i64 = 86_400_000;

/// Whose spend a budget limits, within its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BudgetScope {
    /// The tenant's (or, with a model, that model's) spend.
    #[default]
    Tenant,
    /// One value of a usage scope: `user_id = "u-17"`, `key = "ci"`,
    /// `attr.customer = "acme-corp"`.
    One { scope: UsageScope, value: String },
    /// Every value of a usage scope, each against the limits on its own
    /// (`scope = "user_id"`).
    Each(UsageScope),
}

impl BudgetScope {
    /// The usage scope a budget of this kind is counted in; `None` for a tenant's.
    pub fn usage_scope(&self) -> Option<&UsageScope> {
        match self {
            Self::Tenant => None,
            Self::One { scope, .. } | Self::Each(scope) => Some(scope),
        }
    }
}

/// A budget from the config file. Limits are optional; a budget without any is
/// refused by [`BudgetConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    pub tenant: String,
    /// `None`: every model of the tenant together.
    pub model: Option<String>,
    /// Whose spend, within the tenant (and model).
    pub scope: BudgetScope,
    /// How alerts, errors and answers name it; `None`: [`Self::default_name`].
    pub label: Option<String>,
    pub daily_usd_micros: Option<u64>,
    pub monthly_usd_micros: Option<u64>,
    pub daily_tokens: Option<u64>,
    pub monthly_tokens: Option<u64>,
    /// Percentages of each limit that alert, ascending (default 50, 80, 100).
    pub thresholds: Vec<u32>,
    /// Alert ahead of a limit at the current burn; `None`: no forecast.
    pub forecast: Option<Forecast>,
}

/// When a forecast alert fires: at the burn of the last `lookback_minutes` (their
/// spend over that many minutes, quiet minutes included), a limit runs out within
/// `hours`, before its period ends. For a ledger-fed budget the burn is that of the
/// spend reads within the lookback ([`scoped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forecast {
    pub hours: u32,
    pub lookback_minutes: u32,
    /// A budget of each value: values are read (and their burn sampled) from this
    /// percentage of a limit on, below the lowest threshold; other budgets ignore it.
    pub from_percent: u32,
}

impl Forecast {
    pub const DEFAULT_LOOKBACK_MINUTES: u32 = 60;
    /// A tenth of a limit: a value is sampled long before it nears a threshold, while
    /// the values a read returns stay those with a real share of a limit.
    pub const DEFAULT_FROM_PERCENT: u32 = 10;
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BudgetConfigError {
    #[error(
        "budget of {0}: set at least one of daily_usd, monthly_usd, daily_tokens, monthly_tokens"
    )]
    NoLimit(String),
    #[error("budget of {0}: thresholds must be percentages between 1 and 1000")]
    Thresholds(String),
}

impl BudgetConfig {
    pub fn default_thresholds() -> Vec<u32> {
        vec![50, 80, 100]
    }

    /// How alerts, errors and answers name the budget: its configured name, else
    /// [`Self::default_name`].
    pub fn name(&self) -> String {
        self.label.clone().unwrap_or_else(|| self.default_name())
    }

    /// "acme", "acme/gpt-4o", "acme/user_id=u-17" or "acme/each user_id".
    pub fn default_name(&self) -> String {
        let mut name = self.tenant.clone();
        if let Some(model) = &self.model {
            name.push('/');
            name.push_str(model);
        }
        match &self.scope {
            BudgetScope::Tenant => {}
            BudgetScope::One { scope, value } => {
                name.push_str(&format!("/{}={value}", scope.name()));
            }
            BudgetScope::Each(scope) => name.push_str(&format!("/each {}", scope.name())),
        }
        name
    }

    /// The scope answers name: `tenant`, `model`, or the usage scope's name.
    pub fn scope_name(&self) -> String {
        match (self.scope.usage_scope(), &self.model) {
            (Some(scope), _) => scope.name(),
            (None, Some(_)) => "model".to_string(),
            (None, None) => "tenant".to_string(),
        }
    }

    /// Whether the final windows' rollups feed it (a tenant's or a model's budget).
    pub fn is_windowed(&self) -> bool {
        self.scope == BudgetScope::Tenant
    }

    pub fn validate(&self) -> Result<(), BudgetConfigError> {
        if self.limits().all(|(_, _, limit)| limit.is_none()) {
            return Err(BudgetConfigError::NoLimit(self.name()));
        }
        if self.thresholds.is_empty() || self.thresholds.iter().any(|p| !(1..=1000).contains(p)) {
            return Err(BudgetConfigError::Thresholds(self.name()));
        }
        Ok(())
    }

    /// Whether spend of (tenant, model) counts towards this budget, for a tenant's or a
    /// model's budget; a budget of a user, key or attribute is not fed by windows.
    pub fn applies_to(&self, tenant: &str, model: &str) -> bool {
        self.is_windowed()
            && self.tenant == tenant
            && self.model.as_deref().is_none_or(|only| only == model)
    }

    pub(crate) fn limits(&self) -> impl Iterator<Item = (Period, Unit, Option<u64>)> {
        [
            (Period::Day, Unit::Usd, self.daily_usd_micros),
            (Period::Day, Unit::Tokens, self.daily_tokens),
            (Period::Month, Unit::Usd, self.monthly_usd_micros),
            (Period::Month, Unit::Tokens, self.monthly_tokens),
        ]
        .into_iter()
    }
}

/// Dollars to micro-dollars, rounded to the nearest; `None` for a negative or
/// non-finite amount.
pub fn usd_to_micros(usd: f64) -> Option<u64> {
    if !(0.0..1e12).contains(&usd) {
        return None;
    }
    Some((usd * 1e6).round() as u64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// Start (unix ms) of the UTC day or month holding `ms`.
    pub fn start_of(self, ms: i64) -> i64 {
        let day = ms.div_euclid(DAY_MS) * DAY_MS;
        match self {
            Self::Day => day,
            Self::Month => {
                let Ok(date) = OffsetDateTime::from_unix_timestamp(day / 1000) else {
                    return day;
                };
                let first = i64::from(date.day()) - 1;
                day - first * DAY_MS
            }
        }
    }

    /// Start of the period after the one starting at `start`.
    pub fn next_start(self, start: i64) -> i64 {
        match self {
            Self::Day => start + DAY_MS,
            // 31 days past any first of a month is in the next month.
            Self::Month => self.start_of(start + 31 * DAY_MS),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Usd,
    Tokens,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usd => "usd",
            Self::Tokens => "tokens",
        }
    }
}

/// Spend of one window: micro-dollars and tokens (input + output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    pub micros: u64,
    pub tokens: u64,
}

impl Spend {
    fn add(&mut self, other: Spend) {
        self.micros = self.micros.saturating_add(other.micros);
        self.tokens = self.tokens.saturating_add(other.tokens);
    }

    fn of(self, unit: Unit) -> u64 {
        match unit {
            Unit::Usd => self.micros,
            Unit::Tokens => self.tokens,
        }
    }
}

/// A threshold crossed, or a period's crossed threshold resolved by its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetTransition {
    pub period: Period,
    pub unit: Unit,
    pub percent: u32,
    pub firing: bool,
    /// Start of the period the threshold was crossed in.
    pub period_start_ms: i64,
    /// Spend of that period in the unit (micro-dollars or tokens) when it fired, or
    /// at its end when it resolved.
    pub spent: u64,
    pub limit: u64,
    /// The window where the threshold was crossed.
    pub fired_window_ms: i64,
    /// A forecast's transition (`percent` is then 0): the minutes left at the burn it
    /// fired at.
    pub forecast_minutes_left: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PeriodState {
    start_ms: Option<i64>,
    spent: Spend,
    /// (unit, percent, window it fired in), for the current period.
    crossed: Vec<(Unit, u32, i64)>,
}

impl PeriodState {
    /// Starts the period beginning at `start` unless it is the current one; returns the
    /// period that ended, after adding the resolution of each threshold it crossed.
    fn roll(
        &mut self,
        config: &BudgetConfig,
        period: Period,
        start: i64,
        transitions: &mut Vec<BudgetTransition>,
    ) -> Option<PeriodState> {
        if self.start_ms == Some(start) {
            return None;
        }
        let ended = std::mem::replace(
            self,
            PeriodState {
                start_ms: Some(start),
                ..PeriodState::default()
            },
        );
        for &(unit, percent, fired) in &ended.crossed {
            transitions.push(BudgetTransition {
                period,
                unit,
                percent,
                firing: false,
                period_start_ms: ended.start_ms.unwrap_or(start),
                spent: ended.spent.of(unit),
                limit: limit_of(config, period, unit).unwrap_or(0),
                fired_window_ms: fired,
                forecast_minutes_left: None,
            });
        }
        Some(ended)
    }

    /// Fires each threshold the spend reaches that has not fired in this period, as of
    /// window `window_ms`.
    fn cross(
        &mut self,
        config: &BudgetConfig,
        period: Period,
        start: i64,
        window_ms: i64,
        transitions: &mut Vec<BudgetTransition>,
    ) {
        for unit in [Unit::Usd, Unit::Tokens] {
            let Some(limit) = limit_of(config, period, unit) else {
                continue;
            };
            let spent = self.spent.of(unit);
            for &percent in &config.thresholds {
                let reached = u128::from(spent) * 100 >= u128::from(limit) * u128::from(percent);
                let already = self
                    .crossed
                    .iter()
                    .any(|(u, p, _)| *u == unit && *p == percent);
                if reached && !already {
                    self.crossed.push((unit, percent, window_ms));
                    transitions.push(BudgetTransition {
                        period,
                        unit,
                        percent,
                        firing: true,
                        period_start_ms: start,
                        spent,
                        limit,
                        fired_window_ms: window_ms,
                        forecast_minutes_left: None,
                    });
                }
            }
        }
    }
}

impl PeriodState {
    /// The thresholds of `unit` crossed in the period, ascending.
    fn crossed_of(&self, unit: Unit) -> Vec<u32> {
        let mut crossed: Vec<u32> = self
            .crossed
            .iter()
            .filter(|(u, _, _)| *u == unit)
            .map(|(_, percent, _)| *percent)
            .collect();
        crossed.sort_unstable();
        crossed
    }
}

/// What [`BudgetTracker::status`] reports for each limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitStatus {
    pub period: Period,
    pub unit: Unit,
    pub period_start_ms: Option<i64>,
    /// Micro-dollars or tokens.
    pub spent: u64,
    pub limit: u64,
    /// Thresholds crossed in the current period, ascending.
    pub crossed: Vec<u32>,
    /// With a forecast: the minutes until the limit runs out at the lookback's burn,
    /// when that is before the period resets (`None`: it does not, or no forecast).
    pub runs_out_in_minutes: Option<u64>,
}

/// Minutes until `limit` is reached from `spent` at `burned` per `lookback` minutes,
/// rounded up; in integers, so the same windows always decide alike. `None` without
/// burn or room.
fn minutes_left(limit: u64, spent: u64, burned: u64, lookback: i64) -> Option<u64> {
    if burned == 0 || spent >= limit {
        return None;
    }
    let left = u128::from(limit - spent) * u128::from(lookback.max(1).unsigned_abs());
    Some(u64::try_from(left.div_ceil(u128::from(burned))).unwrap_or(u64::MAX))
}

/// Minutes until `limit` of the `period` starting at `period_start_ms` runs out, as of
/// window `window_ms`, from `spent` at `burned` per `span_minutes`: `None` without burn
/// or room, or when it would run out only after the period resets (counted from the
/// end of the window). The one rule of forecasts and of what the status says, for
/// every kind of budget.
pub(crate) fn runs_out_in_minutes(
    period: Period,
    period_start_ms: i64,
    window_ms: i64,
    limit: u64,
    spent: u64,
    burned: u64,
    span_minutes: i64,
) -> Option<u64> {
    const MINUTE_MS: i64 = 60_000;
    let minutes = minutes_left(limit, spent, burned, span_minutes)?;
    let now_ms = window_ms + MINUTE_MS;
    let left_in_period = (period.next_start(period_start_ms) - now_ms) / MINUTE_MS;
    (i64::try_from(minutes).is_ok_and(|minutes| minutes <= left_in_period)).then_some(minutes)
}

/// The forecasts due at window `window_ms` (firing transitions): each limit of
/// `config` with room left in its period that spending `burned` per `span_minutes`
/// exhausts within `forecast.hours` and before the period resets
/// ([`runs_out_in_minutes`]), unless one already `fired` for that period and unit.
/// Budgets of a tenant or model and those of a user, key or attribute value differ
/// only in where their burn comes from.
fn due_forecasts(
    config: &BudgetConfig,
    forecast: Forecast,
    window_ms: i64,
    periods: [(Period, &PeriodState); 2],
    burned: Spend,
    span_minutes: i64,
    fired: impl Fn(Period, Unit) -> bool,
) -> Vec<BudgetTransition> {
    let mut due = Vec::new();
    for (period, state) in periods {
        let Some(start) = state.start_ms else {
            continue;
        };
        for unit in [Unit::Usd, Unit::Tokens] {
            let Some(limit) = limit_of(config, period, unit) else {
                continue;
            };
            if fired(period, unit) {
                continue;
            }
            let spent = state.spent.of(unit);
            let Some(minutes) = runs_out_in_minutes(
                period,
                start,
                window_ms,
                limit,
                spent,
                burned.of(unit),
                span_minutes,
            ) else {
                continue;
            };
            if minutes <= u64::from(forecast.hours) * 60 {
                due.push(BudgetTransition {
                    period,
                    unit,
                    percent: 0,
                    firing: true,
                    period_start_ms: start,
                    spent,
                    limit,
                    fired_window_ms: window_ms,
                    forecast_minutes_left: Some(minutes),
                });
            }
        }
    }
    due
}

/// Spend of one budget, fed final windows in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetTracker {
    day: PeriodState,
    month: PeriodState,
    last_window_ms: Option<i64>,
    /// The recent burn, kept only for a budget with a forecast (absent from the saved
    /// state otherwise, so states without one are written as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    burn: Option<Burn>,
}

/// What a forecast needs between windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Burn {
    /// Spend of the windows within the lookback that had any, oldest first.
    recent: std::collections::VecDeque<(i64, Spend)>,
    /// Forecasts fired in the current periods: (period, unit, period start, window
    /// fired in, minutes left then).
    fired: Vec<(Period, Unit, i64, i64, u64)>,
}

impl Burn {
    /// The spend of the lookback's windows.
    fn burned(&self) -> Spend {
        let mut burned = Spend::default();
        for (_, spent) in &self.recent {
            burned.add(*spent);
        }
        burned
    }
}

impl BudgetTracker {
    /// Adds the spend of window `window_ms`; returns thresholds crossed by it and those
    /// resolved because their period ended. A window at or before the last one fed is
    /// ignored.
    pub fn observe(
        &mut self,
        config: &BudgetConfig,
        window_ms: i64,
        spend: Spend,
    ) -> Vec<BudgetTransition> {
        if self.last_window_ms.is_some_and(|last| window_ms <= last) {
            return Vec::new();
        }
        self.last_window_ms = Some(window_ms);
        let mut transitions = Vec::new();
        for period in [Period::Day, Period::Month] {
            let start = period.start_of(window_ms);
            let state = self.period_mut(period);
            if let Some(ended) = state.roll(config, period, start, &mut transitions) {
                if let Some(burn) = &mut self.burn {
                    let (ended_forecasts, kept) = std::mem::take(&mut burn.fired)
                        .into_iter()
                        .partition(|fired| fired.0 == period);
                    burn.fired = kept;
                    for (_, unit, period_start, fired, minutes_left) in ended_forecasts {
                        transitions.push(BudgetTransition {
                            period,
                            unit,
                            percent: 0,
                            firing: false,
                            period_start_ms: period_start,
                            spent: ended.spent.of(unit),
                            limit: limit_of(config, period, unit).unwrap_or(0),
                            fired_window_ms: fired,
                            forecast_minutes_left: Some(minutes_left),
                        });
                    }
                }
            }
            let state = self.period_mut(period);
            state.spent.add(spend);
            state.cross(config, period, start, window_ms, &mut transitions);
        }
        if let Some(forecast) = config.forecast {
            self.forecast(config, forecast, window_ms, spend, &mut transitions);
        }
        transitions
    }

    /// Fires the forecasts of window `window_ms`: each limit with room left that the
    /// lookback's burn would exhaust within `forecast.hours`, before its period ends.
    fn forecast(
        &mut self,
        config: &BudgetConfig,
        forecast: Forecast,
        window_ms: i64,
        spend: Spend,
        transitions: &mut Vec<BudgetTransition>,
    ) {
        const MINUTE_MS: i64 = 60_000;
        let lookback = i64::from(forecast.lookback_minutes.max(1));
        let burn = self.burn.get_or_insert_with(Burn::default);
        if spend != Spend::default() {
            burn.recent.push_back((window_ms, spend));
        }
        let oldest = window_ms - (lookback - 1) * MINUTE_MS;
        while burn.recent.front().is_some_and(|(at, _)| *at < oldest) {
            burn.recent.pop_front();
        }
        let burned = burn.burned();
        let periods = [(Period::Day, &self.day), (Period::Month, &self.month)];
        let due = due_forecasts(
            config,
            forecast,
            window_ms,
            periods,
            burned,
            lookback,
            |period, unit| {
                burn.fired
                    .iter()
                    .any(|(p, u, _, _, _)| *p == period && *u == unit)
            },
        );
        for transition in due {
            if let Some(minutes) = transition.forecast_minutes_left {
                burn.fired.push((
                    transition.period,
                    transition.unit,
                    transition.period_start_ms,
                    window_ms,
                    minutes,
                ));
            }
            transitions.push(transition);
        }
    }

    fn period_mut(&mut self, period: Period) -> &mut PeriodState {
        match period {
            Period::Day => &mut self.day,
            Period::Month => &mut self.month,
        }
    }

    /// Spend against each configured limit in the current periods.
    pub fn status(&self, config: &BudgetConfig) -> Vec<LimitStatus> {
        config
            .limits()
            .filter_map(|(period, unit, limit)| {
                let limit = limit?;
                let state = match period {
                    Period::Day => &self.day,
                    Period::Month => &self.month,
                };
                let crossed = state.crossed_of(unit);
                let spent = state.spent.of(unit);
                let runs_out_in_minutes = config
                    .forecast
                    .zip(self.burn.as_ref())
                    .zip(state.start_ms.zip(self.last_window_ms))
                    .and_then(|((forecast, burn), (start, last))| {
                        runs_out_in_minutes(
                            period,
                            start,
                            last,
                            limit,
                            spent,
                            burn.burned().of(unit),
                            i64::from(forecast.lookback_minutes),
                        )
                    });
                Some(LimitStatus {
                    period,
                    unit,
                    period_start_ms: state.start_ms,
                    spent,
                    limit,
                    crossed,
                    runs_out_in_minutes,
                })
            })
            .collect()
    }

    pub fn last_window_ms(&self) -> Option<i64> {
        self.last_window_ms
    }
}

fn limit_of(config: &BudgetConfig, period: Period, unit: Unit) -> Option<u64> {
    match (period, unit) {
        (Period::Day, Unit::Usd) => config.daily_usd_micros,
        (Period::Day, Unit::Tokens) => config.daily_tokens,
        (Period::Month, Unit::Usd) => config.monthly_usd_micros,
        (Period::Month, Unit::Tokens) => config.monthly_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;
    /// 2026-01-31T00:00:00Z.
    const JAN_31: i64 = 1_769_817_600_000;
    /// 2026-02-01T00:00:00Z.
    const FEB_1: i64 = JAN_31 + DAY_MS;
    /// 2026-03-01T00:00:00Z (February 2026 has 28 days).
    const MAR_1: i64 = FEB_1 + 28 * DAY_MS;

    fn daily_usd(limit_usd: f64) -> BudgetConfig {
        BudgetConfig {
            tenant: "acme".to_string(),
            scope: BudgetScope::Tenant,
            label: None,
            model: None,
            daily_usd_micros: usd_to_micros(limit_usd),
            monthly_usd_micros: None,
            daily_tokens: None,
            monthly_tokens: None,
            thresholds: BudgetConfig::default_thresholds(),
            forecast: None,
        }
    }

    fn usd(micros: u64) -> Spend {
        Spend { micros, tokens: 0 }
    }

    #[test]
    fn utc_day_and_month_starts() {
        assert_eq!(Period::Day.start_of(JAN_31 + 23 * 3_600_000), JAN_31);
        assert_eq!(
            Period::Month.start_of(JAN_31 + DAY_MS - 1),
            JAN_31 - 30 * DAY_MS
        );
        assert_eq!(Period::Month.start_of(FEB_1), FEB_1);
        assert_eq!(Period::Month.start_of(MAR_1 - 1), FEB_1);
        assert_eq!(Period::Month.next_start(FEB_1), MAR_1);
        assert_eq!(Period::Month.start_of(MAR_1), MAR_1);
        // 2024 is a leap year: February has 29 days.
        let feb_1_2024 = 1_706_745_600_000;
        assert_eq!(
            Period::Month.next_start(feb_1_2024),
            feb_1_2024 + 29 * DAY_MS
        );
        // Before 1970 too.
        assert_eq!(Period::Day.start_of(-1), -DAY_MS);
    }

    #[test]
    fn each_threshold_fires_exactly_once_at_the_window_that_reaches_it() {
        // $1.00 a day; windows of $0.10 + 1 micro-dollar... then exact hits.
        let config = daily_usd(1.0);
        let mut tracker = BudgetTracker::default();
        let mut fired = Vec::new();
        // 0.3 + 0.2 = 0.5 exactly: 50% fires at the second window, not before.
        for (index, micros) in [300_000, 200_000, 299_999, 1, 199_999, 1, 5_000_000, 7]
            .into_iter()
            .enumerate()
        {
            let window = JAN_31 + index as i64 * M;
            for transition in tracker.observe(&config, window, usd(micros)) {
                fired.push((
                    index,
                    transition.percent,
                    transition.firing,
                    transition.spent,
                ));
            }
        }
        assert_eq!(
            fired,
            vec![
                (1, 50, true, 500_000),
                (3, 80, true, 800_000),
                (5, 100, true, 1_000_000),
            ]
        );
    }

    #[test]
    fn one_window_can_cross_several_thresholds_and_a_replay_fires_nothing() {
        let config = daily_usd(2.0);
        let mut tracker = BudgetTracker::default();
        let crossed: Vec<u32> = tracker
            .observe(&config, JAN_31, usd(3_000_000))
            .iter()
            .map(|t| t.percent)
            .collect();
        assert_eq!(crossed, vec![50, 80, 100]);
        assert!(tracker.observe(&config, JAN_31, usd(3_000_000)).is_empty());
        assert!(tracker.observe(&config, JAN_31 + M, usd(1)).is_empty());
    }

    #[test]
    fn day_rollover_in_utc_resolves_and_starts_over() {
        let config = daily_usd(1.0);
        let mut tracker = BudgetTracker::default();
        let last_minute = JAN_31 + DAY_MS - M;
        assert_eq!(tracker.observe(&config, last_minute, usd(600_000)).len(), 1);
        // The first minute of the next UTC day resolves yesterday's 50% and counts anew.
        let next = tracker.observe(&config, FEB_1, usd(100_000));
        assert_eq!(next.len(), 1);
        assert!(!next[0].firing);
        assert_eq!(next[0].percent, 50);
        assert_eq!(next[0].period_start_ms, JAN_31);
        assert_eq!(next[0].spent, 600_000);
        assert_eq!(next[0].fired_window_ms, last_minute);
        let status = tracker.status(&config);
        assert_eq!(status[0].spent, 100_000);
        assert_eq!(status[0].period_start_ms, Some(FEB_1));
        assert!(status[0].crossed.is_empty());
        // And fires again in the new day when reached again.
        let again = tracker.observe(&config, FEB_1 + M, usd(400_000));
        assert_eq!(again.len(), 1);
        assert!(again[0].firing);
        assert_eq!(again[0].period_start_ms, FEB_1);
    }

    #[test]
    fn month_rollover_in_utc_keeps_days_apart_from_months() {
        let config = BudgetConfig {
            daily_usd_micros: None,
            monthly_tokens: Some(1_000),
            thresholds: vec![100],
            ..daily_usd(0.0)
        };
        let mut tracker = BudgetTracker::default();
        let tokens = |tokens| Spend { micros: 0, tokens };
        // 600 tokens on Feb 1 and 400 on Feb 28 (different days, same month): fires.
        assert!(tracker.observe(&config, FEB_1, tokens(600)).is_empty());
        let fired = tracker.observe(&config, MAR_1 - M, tokens(400));
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].period, fired[0].spent), (Period::Month, 1_000));
        // March 1st, 00:00 UTC: February's alert resolves.
        let resolved = tracker.observe(&config, MAR_1, tokens(1));
        assert_eq!(resolved.len(), 1);
        assert!(!resolved[0].firing);
        assert_eq!(resolved[0].period_start_ms, FEB_1);
        assert_eq!(tracker.status(&config)[0].spent, 1);
    }

    fn with_forecast(limit_usd: f64, hours: u32) -> BudgetConfig {
        BudgetConfig {
            forecast: Some(Forecast {
                hours,
                lookback_minutes: 60,
                from_percent: Forecast::DEFAULT_FROM_PERCENT,
            }),
            ..daily_usd(limit_usd)
        }
    }

    /// Feeds one window per minute from `JAN_31` with the spend `spend_of(minute)`;
    /// returns (minute, transition) of every transition.
    fn feed(
        config: &BudgetConfig,
        minutes: i64,
        spend_of: impl Fn(i64) -> u64,
    ) -> Vec<(i64, BudgetTransition)> {
        let mut tracker = BudgetTracker::default();
        (0..minutes)
            .flat_map(|minute| {
                tracker
                    .observe(config, JAN_31 + minute * M, usd(spend_of(minute)))
                    .into_iter()
                    .map(move |transition| (minute, transition))
            })
            .collect()
    }

    #[test]
    fn a_forecast_fires_once_ahead_of_the_limit_on_a_steady_ramp() {
        // $10 a day; the spend per minute grows by 0.1 cent a minute, so the limit is
        // reached at minute 141. Six hours ahead at the last hour's burn fires well
        // before it, once, and the day's end resolves it.
        let config = with_forecast(10.0, 6);
        // The ramp stops after 200 minutes, so the next day's first window has no
        // burn left in its lookback.
        let transitions = feed(&config, 24 * 60 + 1, |minute| {
            if minute < 200 {
                1_000 * minute as u64
            } else {
                0
            }
        });
        let forecasts: Vec<(i64, bool, Option<u64>)> = transitions
            .iter()
            .filter(|(_, t)| t.forecast_minutes_left.is_some())
            .map(|(minute, t)| (*minute, t.firing, t.forecast_minutes_left))
            .collect();
        let limit_at = transitions
            .iter()
            .find(|(_, t)| t.percent == 100 && t.firing)
            .map(|(minute, _)| *minute)
            .expect("the limit is reached");
        assert_eq!(limit_at, 141);
        assert_eq!(forecasts.len(), 2, "{forecasts:?}");
        let (fired_at, firing, left) = forecasts[0];
        assert!(firing && fired_at < limit_at, "{forecasts:?}");
        // What it said was left: the room at that minute over the last hour's burn.
        let spent: u64 = (0..=fired_at).map(|m| 1_000 * m as u64).sum();
        let burned: u64 = ((fired_at - 59).max(0)..=fired_at)
            .map(|m| 1_000 * m as u64)
            .sum();
        assert_eq!(left, Some(((10_000_000 - spent) * 60).div_ceil(burned)));
        assert!(left.is_some_and(|left| left <= 6 * 60));
        assert_eq!(forecasts[1].0, 24 * 60, "resolved by the next day");
        assert!(!forecasts[1].1);
    }

    #[test]
    fn a_forecast_stays_quiet_on_flat_spend_and_on_none() {
        // 0.5 cent a minute is $7.20 a day: under $10, however long it lasts.
        let config = with_forecast(10.0, 24);
        let flat = feed(&config, 24 * 60, |_| 5_000);
        assert!(
            flat.iter().all(|(_, t)| t.forecast_minutes_left.is_none()),
            "{flat:?}"
        );
        assert!(feed(&config, 120, |_| 0).is_empty());
        // The same flat spend against a $5 limit runs out in the afternoon: a 6 h
        // forecast fires once the room left is 6 h of it, 6 h before minute 1,000.
        let tight = with_forecast(5.0, 6);
        let fired: Vec<i64> = feed(&tight, 24 * 60, |_| 5_000)
            .iter()
            .filter(|(_, t)| t.forecast_minutes_left.is_some() && t.firing)
            .map(|(minute, _)| *minute)
            .collect();
        assert_eq!(fired, vec![999 - 360]);
    }

    #[test]
    fn the_status_says_when_a_limit_runs_out_at_the_current_burn() {
        // An hour at 1 cent a minute against $10 a day: $9.40 left, 940 minutes.
        let config = with_forecast(10.0, 6);
        let mut tracker = BudgetTracker::default();
        for minute in 0..60 {
            tracker.observe(&config, JAN_31 + minute * M, usd(10_000));
        }
        assert_eq!(tracker.status(&config)[0].runs_out_in_minutes, Some(940));
        // Without a forecast configured, nothing is said.
        assert_eq!(
            tracker.status(&daily_usd(10.0))[0].runs_out_in_minutes,
            None
        );
        // At a tenth of the burn it would take 9,400 minutes: not before the day ends.
        let mut slow = BudgetTracker::default();
        for minute in 0..60 {
            slow.observe(&config, JAN_31 + minute * M, usd(1_000));
        }
        assert_eq!(slow.status(&config)[0].runs_out_in_minutes, None);
    }

    #[test]
    fn without_a_forecast_the_saved_tracker_is_as_before() {
        let mut tracker = BudgetTracker::default();
        tracker.observe(&daily_usd(1.0), JAN_31, usd(5));
        let saved = serde_json::to_string(&tracker).expect("serialises");
        assert!(!saved.contains("burn"), "{saved}");
        let mut forecasting = BudgetTracker::default();
        forecasting.observe(&with_forecast(1.0, 1), JAN_31, usd(5));
        let saved = serde_json::to_string(&forecasting).expect("serialises");
        let restored: BudgetTracker = serde_json::from_str(&saved).expect("deserialises");
        assert_eq!(restored, forecasting);
    }

    #[test]
    fn the_tracker_survives_serialisation() {
        let config = daily_usd(1.0);
        let mut tracker = BudgetTracker::default();
        tracker.observe(&config, JAN_31, usd(900_000));
        let restored: BudgetTracker =
            serde_json::from_slice(&serde_json::to_vec(&tracker).expect("serialises"))
                .expect("deserialises");
        assert_eq!(restored, tracker);
        let mut restored = restored;
        // 50% and 80% already fired before the "restart": only 100% now.
        let fired = restored.observe(&config, JAN_31 + M, usd(100_000));
        assert_eq!(
            fired.iter().map(|t| t.percent).collect::<Vec<_>>(),
            vec![100]
        );
    }

    #[test]
    fn budgets_need_a_limit_and_sane_thresholds() {
        let mut config = daily_usd(1.0);
        config.validate().expect("valid");
        config.thresholds = vec![0];
        assert!(config.validate().is_err());
        config.thresholds = vec![50];
        config.daily_usd_micros = None;
        assert!(matches!(
            config.validate(),
            Err(BudgetConfigError::NoLimit(_))
        ));
        assert_eq!(usd_to_micros(0.1 + 0.2), Some(300_000));
        assert_eq!(usd_to_micros(-1.0), None);
    }
}
