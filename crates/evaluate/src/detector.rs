//! Detectors: a window's value scored against its baseline, gated into alerts.
//!
//! - [`ZScoreDetector`]: for latency (p95 or mean), TTFT, cost and tokens. The score is
//!   `(value − mean) / σ` against an EWMA baseline, or the modified z-score
//!   `0.6745 (value − median) / MAD` against a median/MAD baseline (robust). Only a rise
//!   is anomalous (a model getting faster is not an incident). σ and MAD have a floor of
//!   `min_relative_spread × baseline` so a perfectly flat baseline does not turn a 1%
//!   wobble into an infinite score. Anomalous windows do not teach the baseline, so an
//!   incident does not become the new normal. A window another view of the same
//!   traffic explains ([`ZScoreDetector::observe_unless_explained`]) is scored but not
//!   anomalous: the evaluator's latency p95 and mean detectors take a window whose
//!   latency per output token is normal as explained by its output lengths
//!   ([`latency_explained`]).
//! - [`ErrorRateDetector`]: the lower Wilson score bound of the window's error rate
//!   (at `z`) must exceed the baseline rate by a factor and a margin: a proportion test
//!   that needs evidence, so 1 error in 3 requests is not a 33% incident.
//!
//! Neither decides before `min_baseline_windows` windows with at least `min_requests`
//! requests each have been learnt; windows below `min_requests` are skipped entirely.

use ais_rollup::RollupPartial;
use serde::{Deserialize, Serialize};

use crate::baseline::{Ewma, MedianMad};
use crate::gate::{Gate, GateConfig, Transition};

/// Recent windows of a robust baseline unless configured.
pub const DEFAULT_ROBUST_WINDOWS: usize = 60;
/// Weight of the newest window in an EWMA baseline unless configured (≈ the last 20).
pub const DEFAULT_EWMA_ALPHA: f64 = 0.05;

/// Which baseline a z-score detector uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum BaselineKind {
    /// EWMA mean and variance with this weight of the newest window.
    Ewma { alpha: f64 },
    /// Median and MAD over this many recent windows.
    Robust { windows: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ZScoreConfig {
    pub baseline: BaselineKind,
    pub threshold: f64,
    pub min_baseline_windows: u64,
    pub min_requests: u64,
    pub min_relative_spread: f64,
    pub gate: GateConfig,
}

impl Default for ZScoreConfig {
    fn default() -> Self {
        Self {
            baseline: BaselineKind::Robust {
                windows: DEFAULT_ROBUST_WINDOWS,
            },
            threshold: 4.0,
            min_baseline_windows: 30,
            min_requests: 20,
            min_relative_spread: 0.05,
            gate: GateConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Baseline {
    Ewma(Ewma),
    Robust(MedianMad),
}

/// The outcome of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// `None` when the window was skipped (too few requests) or the baseline is young.
    pub score: Option<f64>,
    pub baseline: Option<f64>,
    pub anomalous: bool,
    pub transition: Transition,
}

impl Verdict {
    /// A window that was not scored.
    pub(crate) fn skipped() -> Self {
        Self {
            score: None,
            baseline: None,
            anomalous: false,
            transition: Transition::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZScoreDetector {
    config: ZScoreConfig,
    baseline: Baseline,
    gate: Gate,
}

impl ZScoreDetector {
    pub fn new(config: ZScoreConfig) -> Self {
        let baseline = match config.baseline {
            BaselineKind::Ewma { alpha } => Baseline::Ewma(Ewma::new(alpha)),
            BaselineKind::Robust { windows } => Baseline::Robust(MedianMad::new(windows)),
        };
        Self {
            config,
            baseline,
            gate: Gate::new(config.gate),
        }
    }

    pub fn config(&self) -> &ZScoreConfig {
        &self.config
    }

    fn learnt(&self) -> u64 {
        match &self.baseline {
            Baseline::Ewma(ewma) => ewma.windows(),
            Baseline::Robust(robust) => robust.windows(),
        }
    }

    /// (centre, spread, score) of `value` against the current baseline.
    fn score(&self, value: f64) -> Option<(f64, f64)> {
        let (centre, spread) = match &self.baseline {
            Baseline::Ewma(ewma) => (ewma.mean(), ewma.std_dev()),
            // 1.4826 × MAD estimates σ for normal data; 0.6745 = 1 / 1.4826.
            Baseline::Robust(robust) => {
                let (median, mad) = robust.median_mad()?;
                (median, mad * 1.4826)
            }
        };
        let floor = self.config.min_relative_spread * centre.abs();
        let spread = spread.max(floor).max(f64::MIN_POSITIVE);
        Some((centre, (value - centre) / spread))
    }

    pub fn observe(&mut self, value: f64, requests: u64) -> Verdict {
        self.observe_unless_explained(value, requests, false)
    }

    /// [`Self::observe`], except that a window another view of the same traffic
    /// `explained` is scored but not anomalous: it steps the gate as a normal window
    /// and teaches the baseline. For the latency of a window whose latency per output
    /// token is normal: it is slow because it generated more, not because the model
    /// got slower.
    pub fn observe_unless_explained(
        &mut self,
        value: f64,
        requests: u64,
        explained: bool,
    ) -> Verdict {
        if requests < self.config.min_requests || !value.is_finite() {
            return Verdict::skipped();
        }
        let ready = self.learnt() >= self.config.min_baseline_windows;
        let scored = if ready { self.score(value) } else { None };
        let anomalous =
            !explained && scored.is_some_and(|(_, score)| score >= self.config.threshold);
        if !anomalous {
            match &mut self.baseline {
                Baseline::Ewma(ewma) => ewma.update(value),
                Baseline::Robust(robust) => robust.update(value),
            }
        }
        let transition = if ready {
            self.gate.step(anomalous)
        } else {
            Transition::None
        };
        Verdict {
            score: scored.map(|(_, score)| score),
            baseline: scored.map(|(centre, _)| centre),
            anomalous,
            transition,
        }
    }

    pub fn firing(&self) -> bool {
        self.gate.firing()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorRateConfig {
    /// Standard-normal quantile of the Wilson bound (3 ≈ 99.87% one-sided).
    pub z: f64,
    /// The window's lower bound must exceed `baseline × ratio` …
    pub ratio: f64,
    /// … and `baseline + margin`.
    pub margin: f64,
    /// Weight of the newest normal window in the baseline rate.
    pub alpha: f64,
    pub min_baseline_windows: u64,
    pub min_requests: u64,
    pub gate: GateConfig,
}

impl Default for ErrorRateConfig {
    fn default() -> Self {
        Self {
            z: 3.0,
            ratio: 2.0,
            margin: 0.02,
            alpha: 0.05,
            min_baseline_windows: 30,
            min_requests: 20,
            gate: GateConfig::default(),
        }
    }
}

/// Lower bound of the Wilson score interval for `errors` of `requests` at `z`.
pub fn wilson_lower_bound(errors: u64, requests: u64, z: f64) -> f64 {
    if requests == 0 {
        return 0.0;
    }
    let n = requests as f64;
    let p = errors.min(requests) as f64 / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * ((p * (1.0 - p) + z2 / (4.0 * n)) / n).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).max(0.0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRateDetector {
    config: ErrorRateConfig,
    rate: Ewma,
    gate: Gate,
}

impl ErrorRateDetector {
    pub fn new(config: ErrorRateConfig) -> Self {
        Self {
            config,
            rate: Ewma::new(config.alpha),
            gate: Gate::new(config.gate),
        }
    }

    pub fn observe(&mut self, errors: u64, requests: u64) -> Verdict {
        if requests < self.config.min_requests {
            return Verdict::skipped();
        }
        let rate = errors.min(requests) as f64 / requests as f64;
        let ready = self.rate.windows() >= self.config.min_baseline_windows;
        if !ready {
            self.rate.update(rate);
            return Verdict::skipped();
        }
        let baseline = self.rate.mean();
        let bound = wilson_lower_bound(errors, requests, self.config.z);
        let anomalous =
            bound > baseline * self.config.ratio && bound > baseline + self.config.margin;
        if !anomalous {
            self.rate.update(rate);
        }
        Verdict {
            score: Some(bound),
            baseline: Some(baseline),
            anomalous,
            transition: self.gate.step(anomalous),
        }
    }

    pub fn firing(&self) -> bool {
        self.gate.firing()
    }
}

/// Mean latency per output token of a window; `None` without output tokens (an
/// embedding, or a producer that does not report them).
pub fn per_token_latency(partial: &RollupPartial) -> Option<f64> {
    let mean = partial.latency_ms.mean()?;
    (partial.output_tokens > 0)
        .then(|| mean * partial.requests as f64 / partial.output_tokens as f64)
}

/// Whether the per-token verdict of a window explains its latency p95 and mean: it
/// scored the window and found it normal. Output lengths are heavy-tailed (a window
/// of 50 calls with one 2,000-token answer has twice the usual mean and p95), so
/// without this the p95 and mean detectors page for long answers; per output token
/// that variance is gone while a slower model still shows. A window the per-token
/// detector did not score (no output tokens, too few calls, a young baseline) leaves
/// the p95 and mean detectors to decide alone.
pub fn latency_explained(per_token: Option<Verdict>) -> bool {
    per_token.is_some_and(|verdict| verdict.score.is_some() && !verdict.anomalous)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn noisy(rng: &mut SmallRng, centre: f64) -> f64 {
        centre * rng.random_range(0.9..1.1)
    }

    fn run(
        detector: &mut ZScoreDetector,
        values: impl IntoIterator<Item = f64>,
    ) -> Vec<(usize, Transition)> {
        values
            .into_iter()
            .enumerate()
            .filter_map(
                |(index, value)| match detector.observe(value, 100).transition {
                    Transition::None => None,
                    other => Some((index, other)),
                },
            )
            .collect()
    }

    #[test]
    fn nothing_fires_before_the_baseline_minimum() {
        for baseline in [
            BaselineKind::Ewma { alpha: 0.05 },
            BaselineKind::Robust { windows: 60 },
        ] {
            let mut detector = ZScoreDetector::new(ZScoreConfig {
                baseline,
                ..ZScoreConfig::default()
            });
            // Wild values from the start: no baseline yet, so no alert.
            let values: Vec<f64> = (0..29)
                .map(|i| if i % 2 == 0 { 100.0 } else { 10_000.0 })
                .collect();
            assert!(run(&mut detector, values).is_empty(), "{baseline:?}");
        }
    }

    #[test]
    fn a_five_fold_step_fires_within_three_windows_and_resolves_after() {
        for baseline in [
            BaselineKind::Ewma { alpha: 0.05 },
            BaselineKind::Robust { windows: 60 },
        ] {
            let mut rng = SmallRng::seed_from_u64(3);
            let mut detector = ZScoreDetector::new(ZScoreConfig {
                baseline,
                ..ZScoreConfig::default()
            });
            let mut values: Vec<f64> = (0..120).map(|_| noisy(&mut rng, 800.0)).collect();
            values.extend((0..10).map(|_| noisy(&mut rng, 4_000.0)));
            values.extend((0..20).map(|_| noisy(&mut rng, 800.0)));
            let transitions = run(&mut detector, values);
            assert_eq!(transitions.len(), 2, "{baseline:?}: {transitions:?}");
            let (fired_at, fire) = transitions[0];
            assert_eq!(fire, Transition::Fire);
            assert!(
                (120..123).contains(&fired_at),
                "{baseline:?} fired at {fired_at}"
            );
            assert_eq!(transitions[1].1, Transition::Resolve);
            assert!(
                transitions[1].0 >= 130,
                "{baseline:?}: resolves after the incident"
            );
        }
    }

    #[test]
    fn one_outlier_window_neither_fires_nor_poisons_the_robust_baseline() {
        let mut rng = SmallRng::seed_from_u64(9);
        let mut detector = ZScoreDetector::new(ZScoreConfig::default());
        let mut values: Vec<f64> = (0..100).map(|_| noisy(&mut rng, 500.0)).collect();
        values.push(50_000.0);
        values.extend((0..50).map(|_| noisy(&mut rng, 500.0)));
        assert!(run(&mut detector, values).is_empty());
    }

    #[test]
    fn windows_with_too_few_requests_are_skipped() {
        let mut detector = ZScoreDetector::new(ZScoreConfig {
            min_baseline_windows: 1,
            ..ZScoreConfig::default()
        });
        detector.observe(100.0, 100);
        let verdict = detector.observe(1e9, 3);
        assert_eq!(
            verdict,
            Verdict {
                score: None,
                baseline: None,
                anomalous: false,
                transition: Transition::None
            }
        );
    }

    #[test]
    fn a_restored_detector_continues_where_it_stopped() {
        let mut rng = SmallRng::seed_from_u64(5);
        let mut original = ZScoreDetector::new(ZScoreConfig::default());
        for _ in 0..100 {
            original.observe(noisy(&mut rng, 800.0), 100);
        }
        original.observe(8_000.0, 100);
        let fired = original.observe(8_000.0, 100);
        assert_eq!(fired.transition, Transition::Fire);
        // Persisted and restored mid-incident: the same state, no second fire.
        let mut restored = original.clone();
        assert_eq!(restored, original);
        assert_eq!(restored.observe(8_000.0, 100).transition, Transition::None);
        assert!(restored.firing());
    }

    #[test]
    fn an_explained_window_is_scored_but_never_anomalous() {
        let mut rng = SmallRng::seed_from_u64(13);
        let mut explained = ZScoreDetector::new(ZScoreConfig::default());
        let mut alone = ZScoreDetector::new(ZScoreConfig::default());
        for _ in 0..100 {
            let value = noisy(&mut rng, 800.0);
            explained.observe_unless_explained(value, 100, true);
            alone.observe(value, 100);
        }
        for _ in 0..5 {
            let verdict = explained.observe_unless_explained(4_000.0, 100, true);
            assert!(
                verdict.score.is_some_and(|score| score >= 4.0),
                "{verdict:?}"
            );
            assert!(!verdict.anomalous);
            assert_eq!(verdict.transition, Transition::None);
        }
        // The same windows unexplained fire: the flag is what held them.
        let fired: Vec<Transition> = (0..2)
            .map(|_| {
                alone
                    .observe_unless_explained(4_000.0, 100, false)
                    .transition
            })
            .collect();
        assert_eq!(fired, [Transition::None, Transition::Fire]);
    }

    #[test]
    fn wilson_bounds_match_hand_computed_values() {
        // 1 of 3 at z = 3: (1/3 + 9/6 − 3·√((2/9 + 9/12)/3)) / (1 + 9/3) ≈ 0.03138.
        assert!(
            (wilson_lower_bound(1, 3, 3.0) - 0.031_38).abs() < 1e-4,
            "{}",
            wilson_lower_bound(1, 3, 3.0)
        );
        // 50 of 100 at z = 1.96: ≈ 0.4038.
        assert!((wilson_lower_bound(50, 100, 1.96) - 0.403_8).abs() < 1e-3);
        assert_eq!(wilson_lower_bound(0, 100, 3.0), 0.0);
        assert_eq!(wilson_lower_bound(0, 0, 3.0), 0.0);
    }

    #[test]
    fn error_bursts_fire_and_small_samples_do_not() {
        let mut detector = ErrorRateDetector::new(ErrorRateConfig::default());
        for index in 0..60u64 {
            detector.observe(index % 2, 200);
        }
        // 1 error of 20 requests (5%): not evidence.
        assert_eq!(detector.observe(1, 20).transition, Transition::None);
        // 30% errors over 200 requests, twice: fires.
        assert!(!detector
            .observe(60, 200)
            .transition
            .eq(&Transition::Resolve));
        assert_eq!(detector.observe(60, 200).transition, Transition::Fire);
        for _ in 0..3 {
            detector.observe(1, 200);
        }
        assert!(!detector.firing());
    }

    proptest! {
        #[test]
        fn the_wilson_bound_is_below_the_rate_and_tightens_with_n(errors in 0u64..1000, extra in 0u64..1000, z in 0.5f64..4.0) {
            let requests = errors + extra + 1;
            let rate = errors as f64 / requests as f64;
            let bound = wilson_lower_bound(errors, requests, z);
            prop_assert!((0.0..=rate + 1e-12).contains(&bound));
            let bigger = wilson_lower_bound(errors * 10, requests * 10, z);
            prop_assert!(bigger + 1e-12 >= bound);
        }

        #[test]
        fn steady_noise_never_alerts(seed in any::<u64>(), centre in 10.0f64..10_000.0) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut detector = ZScoreDetector::new(ZScoreConfig::default());
            for _ in 0..500 {
                prop_assert_eq!(detector.observe(noisy(&mut rng, centre), 100).transition, Transition::None);
            }
        }
    }
}
