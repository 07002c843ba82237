//! Time to first token against what the window's prompt lengths explain.
//!
//! TTFT is a fixed overhead plus prefill, which grows with the tokens the model has to
//! read: a window with more long prompts has a longer TTFT with nothing wrong. A ratio
//! TTFT / input tokens does not remove that (for short prompts the overhead dominates,
//! so the ratio falls as prompts grow and rises as they shrink); a line does:
//!
//! - [`TtftFit`]: `mean TTFT ≈ overhead + cost × mean prefill tokens`, learnt online
//!   from each window's aggregates (a weighted least-squares line over windows, older
//!   windows forgotten exponentially). Means, not p95, because the line of per-request
//!   TTFTs holds for their means whatever the mix: E\[a + b·x\] = a + b·E\[x\].
//! - [`TtftFitDetector`]: scores a window's observed mean TTFT over what the fit expects
//!   at its mean prefill tokens with a [`ZScoreDetector`] (robust z-score of the ratio,
//!   gate, cooldown): a shift in the prompt-length mix moves the expectation with the
//!   observation, a slower model moves only the observation. Anomalous windows teach
//!   neither the fit nor the ratio's baseline.
//!
//! Prefill tokens are input tokens minus those read from the prompt cache (which skip
//! prefill), per request of the window. Without input token counts the fit has no
//! slope and the detector scores mean TTFT against its own level.

use ais_rollup::RollupPartial;
use serde::{Deserialize, Serialize};

use crate::detector::{Verdict, ZScoreConfig, ZScoreDetector};

/// Weight of the newest window in the fit unless configured: about a day of windows,
/// so the slope is learnt from the mix's variation over hours, not minutes.
pub const DEFAULT_FIT_ALPHA: f64 = 1.0 / 1_440.0;
/// Windows the fit learns before its expectation is scored: a line needs a few points
/// before a ratio to it means anything.
pub const MIN_FIT_WINDOWS: u64 = 10;

/// An exponentially weighted least-squares line of mean TTFT (ms) against mean prefill
/// tokens per request, one point per window weighted by its requests with a TTFT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TtftFit {
    alpha: f64,
    /// Sum of the (decayed) weights.
    weight: f64,
    mean_tokens: f64,
    mean_ttft: f64,
    /// Weighted sum of squared deviations of tokens from their mean.
    tokens_squares: f64,
    /// Weighted sum of products of the tokens' and TTFT's deviations.
    cross: f64,
    windows: u64,
}

impl TtftFit {
    /// `alpha` in (0, 1]: how much each new window decays the older ones.
    pub fn new(alpha: f64) -> Self {
        Self {
            alpha: alpha.clamp(f64::MIN_POSITIVE, 1.0),
            weight: 0.0,
            mean_tokens: 0.0,
            mean_ttft: 0.0,
            tokens_squares: 0.0,
            cross: 0.0,
            windows: 0,
        }
    }

    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// Adds a window: its mean prefill `tokens`, mean `ttft` and `weight` (requests).
    pub fn update(&mut self, tokens: f64, ttft: f64, weight: f64) {
        if !(tokens.is_finite() && ttft.is_finite() && weight.is_finite() && weight > 0.0) {
            return;
        }
        let keep = 1.0 - self.alpha;
        self.weight = keep * self.weight + weight;
        // West's weighted incremental means and co-moments, decayed by `keep`.
        let share = weight / self.weight;
        let tokens_delta = tokens - self.mean_tokens;
        let ttft_delta = ttft - self.mean_ttft;
        self.mean_tokens += share * tokens_delta;
        self.mean_ttft += share * ttft_delta;
        self.tokens_squares =
            keep * self.tokens_squares + weight * tokens_delta * (tokens - self.mean_tokens);
        self.cross = keep * self.cross + weight * tokens_delta * (ttft - self.mean_ttft);
        self.windows += 1;
    }

    /// (overhead ms, ms per prefill token), `None` before any window. Both are kept at
    /// or above zero (TTFT does not fall as prompts grow, nor below nothing): a negative
    /// slope fitted on noise becomes a flat line at the mean, a negative overhead a line
    /// through the origin and the means.
    pub fn line(&self) -> Option<(f64, f64)> {
        if self.windows == 0 {
            return None;
        }
        // Without spread in the windows' prompt lengths there is no slope to learn.
        let spread = self.tokens_squares > 1e-9 * self.weight * self.mean_tokens.powi(2).max(1.0);
        let slope = if spread {
            (self.cross / self.tokens_squares).max(0.0)
        } else {
            0.0
        };
        let overhead = self.mean_ttft - slope * self.mean_tokens;
        if overhead >= 0.0 {
            return Some((overhead, slope));
        }
        let through_origin = if self.mean_tokens > 0.0 {
            self.mean_ttft / self.mean_tokens
        } else {
            0.0
        };
        Some((0.0, through_origin))
    }

    /// Mean TTFT (ms) the fit expects for a window of mean prefill `tokens`.
    pub fn expected(&self, tokens: f64) -> Option<f64> {
        let (overhead, slope) = self.line()?;
        Some(overhead + slope * tokens)
    }
}

/// Mean prefill tokens per request and mean TTFT (ms) of a window, with the requests
/// that reported a TTFT; `None` for a window without requests or TTFTs.
pub fn window_means(partial: &RollupPartial) -> Option<(f64, f64, u64)> {
    let ttft = partial.ttft_ms.mean()?;
    if partial.requests == 0 {
        return None;
    }
    let prefill = partial
        .input_tokens
        .saturating_sub(partial.cache_read_input_tokens);
    Some((
        prefill as f64 / partial.requests as f64,
        ttft,
        partial.ttft_ms.count(),
    ))
}

/// The `ttft_input_fit_zscore` detector: a window's mean TTFT over the fit's
/// expectation at its prompt lengths, scored by a robust z-score of that ratio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TtftFitDetector {
    fit: TtftFit,
    ratio: ZScoreDetector,
}

impl TtftFitDetector {
    /// `config`: the z-score of the ratio (the TTFT detectors' settings); the fit forgets
    /// at [`DEFAULT_FIT_ALPHA`].
    pub fn new(config: ZScoreConfig) -> Self {
        Self {
            fit: TtftFit::new(DEFAULT_FIT_ALPHA),
            ratio: ZScoreDetector::new(config),
        }
    }

    /// Scores one window; the verdict's value is the ratio observed / expected mean
    /// TTFT, returned first (`None` while the fit is young or the window has nothing
    /// to score).
    pub fn observe(&mut self, partial: &RollupPartial) -> (Option<f64>, Verdict) {
        let Some((tokens, ttft, requests)) = window_means(partial) else {
            return (None, Verdict::skipped());
        };
        if requests < self.ratio.config().min_requests {
            return (None, Verdict::skipped());
        }
        let expected = self
            .fit
            .expected(tokens)
            .filter(|expected| *expected > 0.0 && self.fit.windows() >= MIN_FIT_WINDOWS);
        let Some(expected) = expected else {
            self.fit.update(tokens, ttft, requests as f64);
            return (None, Verdict::skipped());
        };
        let ratio = ttft / expected;
        let verdict = self.ratio.observe(ratio, requests);
        if !verdict.anomalous {
            self.fit.update(tokens, ttft, requests as f64);
        }
        (Some(ratio), verdict)
    }

    pub fn firing(&self) -> bool {
        self.ratio.firing()
    }

    /// The fit learnt so far, as (overhead ms, ms per prefill token).
    pub fn line(&self) -> Option<(f64, f64)> {
        self.fit.line()
    }
}

/// Windows of traffic whose TTFT follows prompt length, for the tests of this crate.
#[cfg(test)]
pub(crate) mod traffic {
    use std::borrow::Cow;

    use ais_model::{Event, EventId};
    use ais_rollup::RollupPartial;
    use rand::rngs::SmallRng;
    use rand::Rng;

    /// Share of prompts over 3,000 tokens in ordinary windows, and in a stretch of long
    /// prompts (the conversation trace: 3%, then a fifth).
    pub(crate) const USUAL_LONG_SHARE: f64 = 0.03;
    pub(crate) const SHIFTED_LONG_SHARE: f64 = 0.2;

    fn lognormal(rng: &mut SmallRng, sigma: f64) -> f64 {
        let u1: f64 = rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = rng.random_range(0.0..1.0);
        (sigma * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()).exp()
    }

    /// One window of `requests` calls, `long_share` of them with prompts of 3,000 to
    /// 8,000 tokens (the rest 100 to 3,000): TTFT = (20 ms + 0.03 ms per prompt token)
    /// × `ttft_factor`, latency = TTFT + 15 ms per output token (50 to 400), both with
    /// log-normal jitter (σ 0.3).
    pub(crate) fn window(
        rng: &mut SmallRng,
        requests: u64,
        long_share: f64,
        ttft_factor: f64,
    ) -> RollupPartial {
        let mut partial = RollupPartial::new();
        for call in 0..requests {
            let prompt: u64 = if rng.random_bool(long_share) {
                rng.random_range(3_000..8_000)
            } else {
                rng.random_range(100..3_000)
            };
            let output: u64 = rng.random_range(50..400);
            let ttft = (20.0 + 0.03 * prompt as f64) * lognormal(rng, 0.3) * ttft_factor;
            let latency = ttft + 15.0 * output as f64 * lognormal(rng, 0.3);
            let event = Event {
                ttft_ms: Some(ttft),
                input_tokens: Some(prompt),
                output_tokens: Some(output),
                ..Event::new(
                    Cow::Borrowed("m"),
                    EventId::Generated(u128::from(call)),
                    0,
                    latency,
                )
            };
            partial.add(&event, false);
        }
        partial
    }

    /// Long-prompt share and TTFT factor of window `index` of a day where windows
    /// `shift` carry the long-prompt mix and windows `regression` a slower prefill.
    pub(crate) fn day(
        index: usize,
        shift: &std::ops::Range<usize>,
        regression: &std::ops::Range<usize>,
        factor: f64,
    ) -> (f64, f64) {
        let share = if shift.contains(&index) {
            SHIFTED_LONG_SHARE
        } else {
            USUAL_LONG_SHARE
        };
        let ttft_factor = if regression.contains(&index) {
            factor
        } else {
            1.0
        };
        (share, ttft_factor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::traffic::{day, window};
    use super::*;
    use crate::gate::Transition;

    /// Windows where each detector fired, over `windows` windows of 50 requests.
    fn fires(
        seed: u64,
        windows: usize,
        shift: std::ops::Range<usize>,
        regression: std::ops::Range<usize>,
        factor: f64,
    ) -> (Vec<usize>, Vec<usize>) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut fit = TtftFitDetector::new(ZScoreConfig::default());
        let mut plain = ZScoreDetector::new(ZScoreConfig::default());
        let (mut fit_fires, mut plain_fires) = (Vec::new(), Vec::new());
        for index in 0..windows {
            let (share, ttft_factor) = day(index, &shift, &regression, factor);
            let partial = window(&mut rng, 50, share, ttft_factor);
            if fit.observe(&partial).1.transition == Transition::Fire {
                fit_fires.push(index);
            }
            let p95 = partial.ttft_quantiles().p95.unwrap_or(0.0);
            if plain.observe(p95, partial.ttft_ms.count()).transition == Transition::Fire {
                plain_fires.push(index);
            }
        }
        (fit_fires, plain_fires)
    }

    #[test]
    fn the_fit_learns_the_overhead_and_the_cost_per_token() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut detector = TtftFitDetector::new(ZScoreConfig::default());
        for _ in 0..600 {
            detector.observe(&window(&mut rng, 50, 0.1, 1.0));
        }
        let (overhead, slope) = detector.line().expect("a fit");
        // Jitter exp(N(0, 0.3²)) has mean exp(0.045) ≈ 1.046: 20.9 ms + 0.0314 ms/token.
        assert!((15.0..27.0).contains(&overhead), "overhead {overhead}");
        assert!((0.028..0.035).contains(&slope), "slope {slope}");
    }

    #[test]
    fn a_shift_to_long_prompts_alone_does_not_fire_but_fires_the_plain_p95() {
        // Three hours of a fifth of prompts over 3,000 tokens, after five of 3%.
        let (fit_fires, plain_fires) = fires(7, 720, 300..480, 0..0, 1.0);
        assert!(fit_fires.is_empty(), "fit fired at {fit_fires:?}");
        // The same traffic pages through the plain TTFT p95: the test has teeth.
        assert!(!plain_fires.is_empty(), "the plain p95 did not fire");
    }

    #[test]
    fn a_ttft_regression_during_a_shift_to_long_prompts_fires_within_three_windows() {
        for factor in [2.0, 3.0] {
            let (fit_fires, _) = fires(11, 600, 300..480, 360..380, factor);
            assert_eq!(fit_fires.len(), 1, "×{factor}: {fit_fires:?}");
            assert!(
                (360..363).contains(&fit_fires[0]),
                "×{factor} fired at {}",
                fit_fires[0]
            );
        }
    }

    #[test]
    fn without_input_tokens_the_fit_is_a_flat_line_at_the_mean() {
        let mut fit = TtftFit::new(0.01);
        for ttft in [100.0, 120.0, 80.0] {
            fit.update(0.0, ttft, 50.0);
        }
        let (overhead, slope) = fit.line().expect("a fit");
        assert_eq!(slope, 0.0);
        assert!((overhead - 100.0).abs() < 1.0, "{overhead}");
    }

    #[test]
    fn a_fit_sloping_down_or_below_zero_is_kept_physical() {
        let mut falling = TtftFit::new(0.01);
        falling.update(100.0, 200.0, 10.0);
        falling.update(1_000.0, 100.0, 10.0);
        assert_eq!(falling.line().map(|(_, slope)| slope), Some(0.0));
        // Next to no forgetting: the means are those of the two windows.
        let mut steep = TtftFit::new(1e-12);
        steep.update(1_000.0, 10.0, 10.0);
        steep.update(2_000.0, 100.0, 10.0);
        let (overhead, slope) = steep.line().expect("a fit");
        assert_eq!(overhead, 0.0);
        assert!((slope - 55.0 / 1_500.0).abs() < 1e-9, "{slope}");
    }

    #[test]
    fn a_restored_detector_continues_where_it_stopped() {
        let mut rng = SmallRng::seed_from_u64(5);
        let mut original = TtftFitDetector::new(ZScoreConfig::default());
        for _ in 0..100 {
            original.observe(&window(&mut rng, 50, 0.03, 1.0));
        }
        let json = serde_json::to_string(&original).expect("writes");
        let mut restored: TtftFitDetector = serde_json::from_str(&json).expect("reads");
        assert_eq!(restored, original);
        let next = window(&mut rng, 50, 0.2, 1.0);
        assert_eq!(restored.observe(&next), original.observe(&next));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn no_prompt_mix_shift_fires(seed in any::<u64>(), start in 120usize..300, hours in 1usize..6) {
            let (fit_fires, _) = fires(seed, 720, start..start + hours * 60, 0..0, 1.0);
            prop_assert!(fit_fires.is_empty(), "fired at {:?}", fit_fires);
        }
    }
}
