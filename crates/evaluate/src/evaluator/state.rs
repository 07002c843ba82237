//! What the evaluator remembers between windows, stored as JSON with its position:
//! the detectors of each tracked key and location (and when each location was last
//! seen), the objectives' and budgets'
//! trackers, the anomalies that fire, the incidents not over yet and the alerts to
//! renew. Also what each detector is called and
//! watches, and how a key's detectors read one window.

use std::collections::BTreeMap;

use ais_rollup::RollupPartial;
use serde::{Deserialize, Serialize};

use super::incidents::OpenIncident;
use super::keys::{
    firing_by_labels, AlertIdentity, AnomalyKey, DetectorKey, LocationAnomalyKey, LocationKey,
    ObjectiveKey,
};
use super::EvaluatorConfig;
use crate::alert::Alert;
use crate::budget::scoped::{BudgetSamples, ScopedBudgetState};
use crate::budget::BudgetTracker;
use crate::detector::{
    latency_explained, per_token_latency, ErrorRateDetector, Verdict, ZScoreDetector,
};
use crate::slo::SloTracker;
use crate::ttft_fit::TtftFitDetector;

/// Everything the evaluator remembers between windows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct State {
    pub(super) keys: BTreeMap<DetectorKey, Detectors>,
    #[serde(default)]
    pub(super) slos: BTreeMap<ObjectiveKey, SloTracker>,
    /// Keyed by [`crate::budget::BudgetConfig::name`].
    #[serde(default)]
    pub(super) budgets: BTreeMap<String, BudgetTracker>,
    /// Ledger-fed budgets (a user's, key's or attribute value's), keyed by
    /// [`crate::budget::BudgetConfig::name`]. Absent while none is, so a state without
    /// them is written as before they alerted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) scoped_budgets: BTreeMap<String, ScopedBudgetState>,
    /// The spend series of the values of ledger-fed budgets with a forecast, keyed by
    /// budget name: in memory only (the evaluator hands them from pass to pass), never
    /// written, so a restart starts them anew.
    #[serde(skip)]
    pub(super) budget_samples: BTreeMap<String, BudgetSamples>,
    /// Firing anomalies → the window where each fired.
    #[serde(default)]
    pub(super) open_anomalies: BTreeMap<AnomalyKey, i64>,
    /// Firing alerts, with the window end they were last queued at.
    #[serde(default, deserialize_with = "firing_by_labels")]
    pub(super) firing: BTreeMap<AlertIdentity, (Alert, i64)>,
    /// Incidents not over yet, per (tenant, model). Absent from states written before
    /// incidents were delivered, and left out while empty, so such a state is written
    /// back as it was read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) incidents: BTreeMap<DetectorKey, OpenIncident>,
    /// The detectors of each tracked value of `[anomaly] dimensions` (bounded by
    /// `max_location_keys`). Absent while none is tracked, so a state without
    /// dimensions is written as before they existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) locations: BTreeMap<LocationKey, Detectors>,
    /// Firing anomalies of locations → the window where each fired.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) open_location_anomalies: BTreeMap<LocationAnomalyKey, i64>,
    /// The last window each tracked location was seen in, to forget it once idle for
    /// `location_idle`. A location without one (a state written before locations were
    /// forgotten) starts its idle time at the next window evaluated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) location_seen: BTreeMap<LocationKey, i64>,
}

impl State {
    /// Keys whose detectors are tracked (bounded by `max_keys`).
    pub(crate) fn tracked_keys(&self) -> usize {
        self.keys.len()
    }

    /// Values of ledger-fed budgets kept with a threshold crossed (bounded by
    /// `max_budget_values`).
    pub(crate) fn kept_budget_values(&self) -> usize {
        self.scoped_budgets
            .values()
            .map(ScopedBudgetState::kept)
            .sum()
    }

    /// Values of ledger-fed budgets with samples for a forecast (bounded by
    /// `max_budget_values`).
    pub(crate) fn sampled_budget_values(&self) -> usize {
        self.budget_samples.values().map(BTreeMap::len).sum()
    }

    /// Locations whose detectors are tracked (bounded by `max_location_keys`).
    pub(crate) fn tracked_locations(&self) -> usize {
        self.locations.len()
    }
}

/// A detector as its anomalies name it, and the metric it watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Signal {
    pub(super) detector: &'static str,
    pub(super) metric: &'static str,
}

impl Signal {
    const fn new(detector: &'static str, metric: &'static str) -> Self {
        Self { detector, metric }
    }
}

const LATENCY_P95: Signal = Signal::new("latency_p95_zscore", "latency_p95");
const LATENCY_MEAN: Signal = Signal::new("latency_mean_zscore", "latency_mean");
const LATENCY_PER_TOKEN: Signal =
    Signal::new("latency_per_token_zscore", "latency_ms_per_output_token");
const TTFT_P95: Signal = Signal::new("ttft_p95_zscore", "ttft_p95");
const TTFT_INPUT_FIT: Signal = Signal::new("ttft_input_fit_zscore", "ttft_over_input_fit");
const ERROR_RATE: Signal = Signal::new("error_rate_wilson", "error_rate");
const COST: Signal = Signal::new("cost_zscore", "cost_usd");
const TOKENS: Signal = Signal::new("tokens_zscore", "tokens");

const SIGNALS: [Signal; 8] = [
    LATENCY_P95,
    LATENCY_MEAN,
    LATENCY_PER_TOKEN,
    TTFT_P95,
    TTFT_INPUT_FIT,
    ERROR_RATE,
    COST,
    TOKENS,
];

/// The metric `detector` watches, for the labels of a resolution (which carries no
/// metric); empty for a detector this version does not know.
pub(super) fn metric_of(detector: &str) -> &'static str {
    SIGNALS
        .iter()
        .find(|signal| signal.detector == detector)
        .map(|signal| signal.metric)
        .unwrap_or("")
}

/// One detector's verdict on one window.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reading {
    pub(super) signal: Signal,
    pub(super) observed: f64,
    pub(super) verdict: Verdict,
}

/// The detectors of one [`DetectorKey`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Detectors {
    /// Mean latency per output token: the token mix of a window changes its latency
    /// far more than most incidents do; per token, that variance is gone.
    latency_per_token: ZScoreDetector,
    latency_p95: ZScoreDetector,
    latency_mean: ZScoreDetector,
    /// Runs only when configured, or while it fires (to resolve what it fired before
    /// it was turned off); its state is kept either way.
    ttft_p95: ZScoreDetector,
    /// Mean TTFT over what the window's prompt lengths explain. Absent from states
    /// written before it existed (and from spend keys): created at the next window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttft_input_fit: Option<TtftFitDetector>,
    error_rate: ErrorRateDetector,
    /// Per tenant across its models only: spend and token spikes.
    cost: Option<ZScoreDetector>,
    tokens: Option<ZScoreDetector>,
}

impl Detectors {
    /// Fresh detectors; `spend`: with the cost and token ones (a tenant across models).
    pub(super) fn new(config: &EvaluatorConfig, spend: bool) -> Self {
        Self {
            latency_per_token: ZScoreDetector::new(config.latency),
            latency_p95: ZScoreDetector::new(config.latency),
            latency_mean: ZScoreDetector::new(config.latency),
            ttft_p95: ZScoreDetector::new(config.ttft),
            ttft_input_fit: (config.ttft_input_fit && !spend)
                .then(|| TtftFitDetector::new(config.ttft)),
            error_rate: ErrorRateDetector::new(config.errors),
            cost: spend.then(|| ZScoreDetector::new(config.spend)),
            tokens: spend.then(|| ZScoreDetector::new(config.spend)),
        }
    }

    /// Latency, TTFT and error rate of a model's window (one tenant's or all of them).
    pub(super) fn observe_model(
        &mut self,
        config: &EvaluatorConfig,
        partial: &RollupPartial,
    ) -> Vec<Reading> {
        let mut readings = Vec::new();
        // Per output token first: a window it scores as normal explains a high p95 or
        // mean by what the window generated (see `latency_explained`).
        let per_token = per_token_latency(partial).map(|per_token| {
            (
                per_token,
                self.latency_per_token.observe(per_token, partial.requests),
            )
        });
        let explained = latency_explained(per_token.map(|(_, verdict)| verdict));
        if let Some(p95) = partial.latency_quantiles().p95 {
            let verdict =
                self.latency_p95
                    .observe_unless_explained(p95, partial.requests, explained);
            readings.push(reading(LATENCY_P95, p95, verdict));
        }
        if let Some(mean) = partial.latency_ms.mean() {
            let verdict =
                self.latency_mean
                    .observe_unless_explained(mean, partial.requests, explained);
            readings.push(reading(LATENCY_MEAN, mean, verdict));
        }
        if let Some((per_token, verdict)) = per_token {
            readings.push(reading(LATENCY_PER_TOKEN, per_token, verdict));
        }
        if config.ttft_p95 || self.ttft_p95.firing() {
            if let Some(p95) = partial.ttft_quantiles().p95 {
                let verdict = self.ttft_p95.observe(p95, partial.ttft_ms.count());
                readings.push(reading(TTFT_P95, p95, verdict));
            }
        }
        if config.ttft_input_fit {
            let detector = self
                .ttft_input_fit
                .get_or_insert_with(|| TtftFitDetector::new(config.ttft));
            if let (Some(ratio), verdict) = detector.observe(partial) {
                readings.push(reading(TTFT_INPUT_FIT, ratio, verdict));
            }
        }
        let rate = partial.error_rate().unwrap_or(0.0);
        let verdict = self.error_rate.observe(partial.errors, partial.requests);
        readings.push(reading(ERROR_RATE, rate, verdict));
        readings
    }

    /// A tenant's spend across its models: cost (dollars) and tokens of the window.
    pub(super) fn observe_spend(&mut self, partial: &RollupPartial) -> Vec<Reading> {
        let mut readings = Vec::new();
        let cost = partial.cost_micros as f64 / 1e6;
        if let Some(detector) = self.cost.as_mut() {
            readings.push(reading(
                COST,
                cost,
                detector.observe(cost, partial.requests),
            ));
        }
        let tokens = partial.input_tokens.saturating_add(partial.output_tokens) as f64;
        if let Some(detector) = self.tokens.as_mut() {
            let verdict = detector.observe(tokens, partial.requests);
            readings.push(reading(TOKENS, tokens, verdict));
        }
        readings
    }
}

fn reading(signal: Signal, observed: f64, verdict: Verdict) -> Reading {
    Reading {
        signal,
        observed,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use ais_model::{Event, EventId};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::gate::Transition;

    /// A state the evaluator wrote before its maps had typed keys (see
    /// `testdata/README.md`): every map is filled, every kind of key present.
    const STATE_V1: &str = include_str!("testdata/state_v1.json");

    #[test]
    fn a_state_written_with_string_keys_reads_and_writes_back_byte_for_byte() {
        let state: State = serde_json::from_str(STATE_V1).expect("reads");
        assert_eq!(state.keys.len(), 7);
        assert!(state
            .keys
            .contains_key(&DetectorKey::new("t", super::super::ALL_MODELS)));
        assert!(state.slos.contains_key(&ObjectiveKey::new("up", "u")));
        assert_eq!(
            state
                .open_anomalies
                .get(&AnomalyKey::new("u", "m", "error_rate_wilson")),
            Some(&85_680_000)
        );
        assert_eq!(state.firing.len(), 14);
        assert!(state
            .firing
            .iter()
            .all(|(identity, (alert, _))| *identity == AlertIdentity::of(alert)));
        let written = serde_json::to_string(&state).expect("writes");
        assert!(
            written == STATE_V1.trim_end(),
            "the state is written back as read"
        );
    }

    /// A window of 50 calls at 15 ms per output token of 20 tokens each, the first
    /// `long` of them generating 1,000 tokens instead, at `factor` × the speed;
    /// `tokens`: whether the calls report their output tokens.
    fn window(rng: &mut SmallRng, long: usize, factor: f64, tokens: bool) -> RollupPartial {
        let mut partial = RollupPartial::new();
        for call in 0..50usize {
            let output: u64 = if call < long { 1_000 } else { 20 };
            let latency = 15.0 * output as f64 * factor * rng.random_range(0.9..1.1);
            let event = Event {
                output_tokens: tokens.then_some(output),
                ..Event::new(
                    Cow::Borrowed("m"),
                    EventId::Generated(call as u128),
                    0,
                    latency,
                )
            };
            partial.add(&event, false);
        }
        partial
    }

    /// Detectors that fired over 100 ordinary windows, then `windows` more.
    fn fired(tokens: bool, windows: impl Fn(&mut SmallRng) -> RollupPartial) -> Vec<&'static str> {
        let config = EvaluatorConfig::default();
        let mut detectors = Detectors::new(&config, false);
        let mut rng = SmallRng::seed_from_u64(21);
        for _ in 0..100 {
            detectors.observe_model(&config, &window(&mut rng, 0, 1.0, tokens));
        }
        let mut fired = Vec::new();
        for _ in 0..5 {
            for reading in detectors.observe_model(&config, &windows(&mut rng)) {
                if reading.verdict.transition == Transition::Fire {
                    fired.push(reading.signal.detector);
                }
            }
        }
        fired
    }

    #[test]
    fn long_answers_explain_a_high_p95_and_mean_but_a_slower_model_fires_them() {
        // Five answers of 1,000 tokens in each window: the p95 and the mean are many
        // times their baseline, the latency per output token is not.
        let long_answers = |rng: &mut SmallRng| window(rng, 5, 1.0, true);
        assert_eq!(fired(true, long_answers), Vec::<&str>::new());
        // Without output tokens nothing explains them: the same windows fire.
        let unexplained = fired(false, |rng: &mut SmallRng| window(rng, 5, 1.0, false));
        assert_eq!(unexplained, ["latency_p95_zscore", "latency_mean_zscore"]);
        // A slower model is slower per token too: every latency detector fires.
        let slower = fired(true, |rng: &mut SmallRng| window(rng, 0, 2.0, true));
        assert_eq!(
            slower,
            [
                "latency_p95_zscore",
                "latency_mean_zscore",
                "latency_per_token_zscore"
            ]
        );
    }

    #[test]
    fn resolutions_name_the_metric_of_their_detector() {
        assert_eq!(
            metric_of("latency_per_token_zscore"),
            "latency_ms_per_output_token"
        );
        assert_eq!(metric_of("tokens_zscore"), "tokens");
        assert_eq!(metric_of("ttft_input_fit_zscore"), "ttft_over_input_fit");
        assert_eq!(metric_of("retired_detector"), "");
    }
}
