//! Baselines that learn online what a metric's normal windows look like.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Exponentially weighted mean and variance (West's incremental form): recent windows
/// weigh more, so a slow drift of normal is followed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    alpha: f64,
    mean: f64,
    variance: f64,
    windows: u64,
}

impl Ewma {
    /// `alpha` in (0, 1]: the weight of the newest window (0.05 ≈ the last 20 windows).
    pub fn new(alpha: f64) -> Self {
        Self {
            alpha: alpha.clamp(f64::MIN_POSITIVE, 1.0),
            mean: 0.0,
            variance: 0.0,
            windows: 0,
        }
    }

    pub fn update(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.windows == 0 {
            self.mean = value;
            self.variance = 0.0;
        } else {
            let delta = value - self.mean;
            self.mean += self.alpha * delta;
            self.variance = (1.0 - self.alpha) * (self.variance + self.alpha * delta * delta);
        }
        self.windows += 1;
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }

    pub fn std_dev(&self) -> f64 {
        self.variance.max(0.0).sqrt()
    }

    pub fn windows(&self) -> u64 {
        self.windows
    }
}

/// Median and median absolute deviation over the last `capacity` windows: one wild
/// window moves neither, so it cannot poison the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MedianMad {
    capacity: usize,
    values: VecDeque<f64>,
    windows: u64,
}

impl MedianMad {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            values: VecDeque::with_capacity(capacity.max(1)),
            windows: 0,
        }
    }

    pub fn update(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.values.len() == self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(value);
        self.windows += 1;
    }

    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// (median, MAD), `None` without values.
    pub fn median_mad(&self) -> Option<(f64, f64)> {
        let mut sorted: Vec<f64> = self.values.iter().copied().collect();
        let median = median_of(&mut sorted)?;
        let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - median).abs()).collect();
        let mad = median_of(&mut deviations)?;
        Some((median, mad))
    }
}

fn median_of(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn ewma_with_alpha_one_tracks_the_last_value(values in proptest::collection::vec(-1e6f64..1e6, 1..50)) {
            let mut ewma = Ewma::new(1.0);
            for value in &values {
                ewma.update(*value);
            }
            let last = *values.last().unwrap_or(&0.0);
            // mean + 1·(x − mean) is x up to one rounding of each operation.
            prop_assert!((ewma.mean() - last).abs() <= 1e-9 * last.abs().max(1.0));
            prop_assert_eq!(ewma.std_dev(), 0.0);
        }

        #[test]
        fn ewma_of_a_constant_is_that_constant(value in -1e6f64..1e6, count in 1usize..200, alpha in 0.01f64..1.0) {
            let mut ewma = Ewma::new(alpha);
            for _ in 0..count {
                ewma.update(value);
            }
            prop_assert!((ewma.mean() - value).abs() <= 1e-9 * value.abs().max(1.0));
            prop_assert!(ewma.std_dev() <= 1e-6 * value.abs().max(1.0));
        }

        #[test]
        fn median_mad_match_a_sort(values in proptest::collection::vec(-1e6f64..1e6, 1..41)) {
            let mut robust = MedianMad::new(100);
            for value in &values {
                robust.update(*value);
            }
            let (median, mad) = robust.median_mad().unwrap_or((f64::NAN, f64::NAN));
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let want = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
            prop_assert_eq!(median, want);
            let below = values.iter().filter(|v| (*v - median).abs() < mad).count();
            let above = values.iter().filter(|v| (*v - median).abs() > mad).count();
            prop_assert!(below <= n / 2 + 1 && above <= n / 2 + 1);
        }
    }

    #[test]
    fn ewma_converges_to_mean_and_deviation_of_a_stream() {
        let mut ewma = Ewma::new(0.02);
        // Alternating 90/110: mean 100, standard deviation 10.
        for index in 0..5_000 {
            ewma.update(if index % 2 == 0 { 90.0 } else { 110.0 });
        }
        assert!((ewma.mean() - 100.0).abs() < 0.5, "{}", ewma.mean());
        assert!((ewma.std_dev() - 10.0).abs() < 0.5, "{}", ewma.std_dev());
    }

    #[test]
    fn one_outlier_moves_neither_median_nor_mad() {
        let mut robust = MedianMad::new(30);
        for index in 0..29 {
            robust.update(100.0 + f64::from(index % 3));
        }
        let before = robust.median_mad();
        robust.update(1e9);
        assert_eq!(robust.median_mad(), before);
        assert_eq!(MedianMad::new(5).median_mad(), None);
    }
}
