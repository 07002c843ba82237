//! The config file's `[breaker]`, as a file spells it: milliseconds where
//! [`BreakerConfig`] keeps durations, and [`BreakerConfig::default`] for every key it
//! leaves out. It names no engine, so every build accepts and checks it, whether or not
//! it has the Kafka log the breaker guards.

use std::time::Duration;

use serde::Deserialize;

use crate::breaker::BreakerConfig;

/// The shortest call timeout and open time: below it a healthy Kafka would look down.
pub const MIN_BREAKER_MILLIS: u64 = 10;

/// `[breaker]`: when the circuit around Kafka writes opens and how it closes again.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSection {
    /// How long one Kafka append may take before it counts as a timeout.
    pub kafka_timeout_ms: u64,
    /// Fraction of failed appends in the window that opens the circuit, in (0, 1].
    pub failure_rate: f64,
    /// Timeouts in a row that open the circuit regardless of the rate.
    pub max_timeouts: u32,
    /// How long the circuit stays open before probing.
    pub open_ms: u64,
    /// Kafka appends remembered for the failure rate.
    pub window: usize,
    /// Appends in the window before the rate can open the circuit.
    pub min_calls: usize,
    /// Successful probes in a row that close the circuit.
    pub probes: u32,
}

impl Default for BreakerSection {
    fn default() -> Self {
        let defaults = BreakerConfig::default();
        Self {
            kafka_timeout_ms: millis(defaults.call_timeout),
            failure_rate: defaults.failure_rate,
            max_timeouts: defaults.max_timeouts,
            open_ms: millis(defaults.open_for),
            window: defaults.window,
            min_calls: defaults.min_calls,
            probes: defaults.probes,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A `[breaker]` that would never open the circuit, or open it on no failure.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum BreakerSectionError {
    #[error("[breaker] failure_rate must be in (0, 1], got {0}")]
    FailureRate(f64),
}

impl BreakerSection {
    /// The breaker's settings. Counts below 1 are raised to 1, and times below
    /// [`MIN_BREAKER_MILLIS`] to it; a failure rate outside (0, 1] is refused.
    pub fn config(&self) -> Result<BreakerConfig, BreakerSectionError> {
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(BreakerSectionError::FailureRate(self.failure_rate));
        }
        let at_least_min = |ms: u64| Duration::from_millis(ms.max(MIN_BREAKER_MILLIS));
        Ok(BreakerConfig {
            window: self.window.max(1),
            min_calls: self.min_calls.max(1),
            failure_rate: self.failure_rate,
            max_timeouts: self.max_timeouts.max(1),
            call_timeout: at_least_min(self.kafka_timeout_ms),
            open_for: at_least_min(self.open_ms),
            probes: self.probes.max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        breaker: BreakerSection,
    }

    fn section(text: &str) -> BreakerSection {
        toml::from_str::<File>(text).expect("parses").breaker
    }

    #[test]
    fn an_absent_or_empty_section_is_the_breakers_defaults() {
        let defaults = BreakerConfig::default();
        for text in ["", "[breaker]\n"] {
            let config = section(text).config().expect("defaults are valid");
            assert_eq!(
                (
                    config.window,
                    config.min_calls,
                    config.failure_rate,
                    config.max_timeouts,
                    config.call_timeout,
                    config.open_for,
                    config.probes
                ),
                (
                    defaults.window,
                    defaults.min_calls,
                    defaults.failure_rate,
                    defaults.max_timeouts,
                    defaults.call_timeout,
                    defaults.open_for,
                    defaults.probes
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn keys_override_their_default_and_tiny_values_are_raised() {
        let config = section(
            "[breaker]\nkafka_timeout_ms = 250\nfailure_rate = 1.0\nmax_timeouts = 0\n\
             open_ms = 1\nwindow = 0\nmin_calls = 8\nprobes = 0\n",
        )
        .config()
        .expect("valid");
        assert_eq!(config.call_timeout, Duration::from_millis(250));
        assert_eq!(config.failure_rate, 1.0);
        assert_eq!(config.open_for, Duration::from_millis(MIN_BREAKER_MILLIS));
        assert_eq!(
            (
                config.max_timeouts,
                config.window,
                config.min_calls,
                config.probes
            ),
            (1, 1, 8, 1)
        );
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let error =
            toml::from_str::<File>("[breaker]\nopen_for_ms = 10\n").expect_err("unknown key");
        assert!(
            error.to_string().contains("unknown field `open_for_ms`"),
            "{error}"
        );
    }

    #[test]
    fn a_failure_rate_outside_zero_to_one_names_the_section_and_key() {
        for (rate, shown) in [
            ("0.0", "0"),
            ("1.5", "1.5"),
            ("-0.1", "-0.1"),
            ("nan", "NaN"),
        ] {
            let error = section(&format!("[breaker]\nfailure_rate = {rate}\n"))
                .config()
                .expect_err("out of range");
            assert_eq!(
                error.to_string(),
                format!("[breaker] failure_rate must be in (0, 1], got {shown}")
            );
        }
    }
}
