//! The config-file sections evaluation owns, as a file spells them: `[anomaly]` (which
//! TTFT detectors run, how close anomalies are one incident, which dimensions' values
//! get detectors of their own), `[anomaly.latency]`, `[anomaly.ttft]`, `[anomaly.spend]` and
//! `[anomaly.error_rate]`. Each section
//! deserialises itself with this crate's defaults for the keys it leaves out, and
//! refuses keys it does not know; turning a section into the detectors' settings is
//! where the values that serde cannot check are refused, naming the section.

use std::time::Duration;

use ais_model::dimension::Dimension;
use serde::Deserialize;

use crate::detector::{
    BaselineKind, ErrorRateConfig, ZScoreConfig, DEFAULT_EWMA_ALPHA, DEFAULT_ROBUST_WINDOWS,
};
use crate::evaluator::EvaluatorConfig;
use crate::gate::GateConfig;
use crate::incident::DEFAULT_GAP;

/// A section that names a value the detectors do not have.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SectionError {
    #[error("[anomaly] dimensions: {0}")]
    Dimension(#[from] ais_model::dimension::DimensionError),
    #[error("[anomaly] dimensions: {0} is watched already (per model, and per tenant by the keys); list the dimensions whose values need detectors of their own, e.g. \"endpoint\"")]
    WatchedAlready(String),
    #[error("[anomaly] dimensions: {0} is listed twice")]
    Twice(String),
    #[error("[anomaly] max_location_keys must be at least 1")]
    NoLocationKeys,
    #[error("[anomaly] location_idle_secs must be at least 60 (one window)")]
    LocationIdleTooShort,
    #[error("[anomaly.{section}] baseline must be \"robust\" or \"ewma\", found {found:?}")]
    UnknownBaseline {
        section: &'static str,
        found: String,
    },
}

/// `[anomaly.*]`: one section per detector; a missing section keeps every default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalySection {
    /// `ttft_input_fit = false` stops the TTFT detector that allows for prompt length
    /// (on by default).
    pub ttft_input_fit: bool,
    /// `ttft_p95 = true` also runs the plain TTFT p95 detector, which a shift to longer
    /// prompts fires (off by default).
    pub ttft_p95: bool,
    /// Anomalies of one (tenant, model) at most this many seconds apart are one
    /// incident (default 600).
    pub incident_gap_secs: u64,
    /// Dimensions whose values each get the model detectors, fed by the dimension
    /// rollups (`["endpoint", "region", "attr.feature"]`); none by default.
    pub dimensions: Vec<String>,
    /// Most (tenant, dimension, value) locations tracked (default 10,000).
    pub max_location_keys: usize,
    /// A location without a window for this many seconds is forgotten (default
    /// 86,400: a day).
    pub location_idle_secs: u64,
    pub latency: ZScoreSection,
    pub ttft: ZScoreSection,
    pub spend: ZScoreSection,
    pub error_rate: ErrorRateSection,
}

impl Default for AnomalySection {
    fn default() -> Self {
        let defaults = EvaluatorConfig::default();
        Self {
            ttft_input_fit: defaults.ttft_input_fit,
            ttft_p95: defaults.ttft_p95,
            incident_gap_secs: DEFAULT_GAP.as_secs(),
            dimensions: Vec::new(),
            max_location_keys: defaults.max_location_keys,
            location_idle_secs: defaults.location_idle.as_secs(),
            latency: ZScoreSection::default(),
            ttft: ZScoreSection::default(),
            spend: ZScoreSection::default(),
            error_rate: ErrorRateSection::default(),
        }
    }
}

impl AnomalySection {
    /// How close anomalies of one (tenant, model) are one incident.
    pub fn incident_gap(&self) -> Duration {
        Duration::from_secs(self.incident_gap_secs)
    }

    /// The dimensions of `dimensions`, as the dimension rollups name them. `tenant` and
    /// `model` are refused: the detectors watch each already.
    pub fn dimensions(&self) -> Result<Vec<String>, SectionError> {
        let mut names = Vec::with_capacity(self.dimensions.len());
        for listed in &self.dimensions {
            let dimension = Dimension::parse(listed)?;
            if matches!(dimension, Dimension::Tenant | Dimension::Model) {
                return Err(SectionError::WatchedAlready(listed.clone()));
            }
            let name = dimension.name();
            if names.contains(&name) {
                return Err(SectionError::Twice(listed.clone()));
            }
            names.push(name);
        }
        Ok(names)
    }

    /// The evaluator's settings with these detectors, evaluating every `interval`.
    pub fn evaluator(&self, interval: Duration) -> Result<EvaluatorConfig, SectionError> {
        if self.max_location_keys == 0 {
            return Err(SectionError::NoLocationKeys);
        }
        if self.location_idle_secs < 60 {
            return Err(SectionError::LocationIdleTooShort);
        }
        Ok(EvaluatorConfig {
            dimensions: self.dimensions()?,
            max_location_keys: self.max_location_keys,
            location_idle: Duration::from_secs(self.location_idle_secs),
            interval,
            latency: self.latency.config("latency")?,
            ttft: self.ttft.config("ttft")?,
            ttft_input_fit: self.ttft_input_fit,
            ttft_p95: self.ttft_p95,
            spend: self.spend.config("spend")?,
            errors: self.error_rate.config(),
            incident_gap: self.incident_gap(),
            ..EvaluatorConfig::default()
        })
    }
}

/// `[anomaly.latency]`, `[anomaly.ttft]` (both TTFT detectors), `[anomaly.spend]`: a
/// z-score detector, its
/// baseline flattened into `baseline` and the key of the chosen kind.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZScoreSection {
    /// "robust" (median / MAD over `robust_windows`) or "ewma" (with `ewma_alpha`).
    pub baseline: String,
    pub robust_windows: usize,
    pub ewma_alpha: f64,
    pub threshold: f64,
    pub min_baseline_windows: u64,
    pub min_requests: u64,
    pub min_relative_spread: f64,
    pub k: usize,
    pub n: usize,
    pub cooldown: u32,
}

impl Default for ZScoreSection {
    fn default() -> Self {
        let defaults = ZScoreConfig::default();
        Self {
            baseline: "robust".to_string(),
            robust_windows: DEFAULT_ROBUST_WINDOWS,
            ewma_alpha: DEFAULT_EWMA_ALPHA,
            threshold: defaults.threshold,
            min_baseline_windows: defaults.min_baseline_windows,
            min_requests: defaults.min_requests,
            min_relative_spread: defaults.min_relative_spread,
            k: defaults.gate.k,
            n: defaults.gate.n,
            cooldown: defaults.gate.cooldown,
        }
    }
}

impl ZScoreSection {
    /// The detector's settings; `section` names it in an error (`ttft` for
    /// `[anomaly.ttft]`).
    pub fn config(&self, section: &'static str) -> Result<ZScoreConfig, SectionError> {
        let baseline = match self.baseline.as_str() {
            "robust" => BaselineKind::Robust {
                windows: self.robust_windows,
            },
            "ewma" => BaselineKind::Ewma {
                alpha: self.ewma_alpha,
            },
            other => {
                return Err(SectionError::UnknownBaseline {
                    section,
                    found: other.to_string(),
                })
            }
        };
        Ok(ZScoreConfig {
            baseline,
            threshold: self.threshold,
            min_baseline_windows: self.min_baseline_windows,
            min_requests: self.min_requests,
            min_relative_spread: self.min_relative_spread,
            gate: GateConfig {
                k: self.k,
                n: self.n,
                cooldown: self.cooldown,
            },
        })
    }
}

/// `[anomaly.error_rate]`: the Wilson-bound detector of error rates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErrorRateSection {
    pub z: f64,
    pub ratio: f64,
    pub margin: f64,
    pub alpha: f64,
    pub min_baseline_windows: u64,
    pub min_requests: u64,
    pub k: usize,
    pub n: usize,
    pub cooldown: u32,
}

impl Default for ErrorRateSection {
    fn default() -> Self {
        let defaults = ErrorRateConfig::default();
        Self {
            z: defaults.z,
            ratio: defaults.ratio,
            margin: defaults.margin,
            alpha: defaults.alpha,
            min_baseline_windows: defaults.min_baseline_windows,
            min_requests: defaults.min_requests,
            k: defaults.gate.k,
            n: defaults.gate.n,
            cooldown: defaults.gate.cooldown,
        }
    }
}

impl ErrorRateSection {
    pub fn config(&self) -> ErrorRateConfig {
        ErrorRateConfig {
            z: self.z,
            ratio: self.ratio,
            margin: self.margin,
            alpha: self.alpha,
            min_baseline_windows: self.min_baseline_windows,
            min_requests: self.min_requests,
            gate: GateConfig {
                k: self.k,
                n: self.n,
                cooldown: self.cooldown,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sections_are_the_detectors_defaults() {
        let evaluator = AnomalySection::default()
            .evaluator(Duration::from_secs(5))
            .expect("defaults are valid");
        assert_eq!(evaluator.latency, ZScoreConfig::default());
        assert_eq!(evaluator.ttft, ZScoreConfig::default());
        assert_eq!(evaluator.spend, ZScoreConfig::default());
        assert_eq!(evaluator.errors, ErrorRateConfig::default());
        assert!(evaluator.ttft_input_fit && !evaluator.ttft_p95);
        assert_eq!(AnomalySection::default().incident_gap(), DEFAULT_GAP);
    }

    #[test]
    fn the_anomaly_table_picks_the_ttft_detectors() {
        let section: AnomalySection = toml::from_str(
            r#"
            ttft_p95 = true
            ttft_input_fit = false
            incident_gap_secs = 300
            [ttft]
            threshold = 5.0
            "#,
        )
        .expect("valid section");
        let evaluator = section
            .evaluator(Duration::from_secs(5))
            .expect("valid settings");
        assert!(evaluator.ttft_p95 && !evaluator.ttft_input_fit);
        assert_eq!(evaluator.ttft.threshold, 5.0);
        assert_eq!(section.incident_gap(), Duration::from_secs(300));
    }

    #[test]
    fn anomaly_dimensions_are_named_as_the_rollups_name_them_and_checked() {
        assert!(AnomalySection::default()
            .evaluator(Duration::from_secs(5))
            .expect("defaults")
            .dimensions
            .is_empty());
        let section: AnomalySection = toml::from_str(
            r#"
            dimensions = ["endpoint", "region", "attr.feature"]
            max_location_keys = 500
            location_idle_secs = 3600
            "#,
        )
        .expect("valid section");
        let evaluator = section
            .evaluator(Duration::from_secs(5))
            .expect("valid settings");
        assert_eq!(evaluator.dimensions, ["endpoint", "region", "attr.feature"]);
        assert_eq!(evaluator.max_location_keys, 500);
        assert_eq!(evaluator.location_idle, Duration::from_secs(3600));
        assert_eq!(
            AnomalySection::default()
                .evaluator(Duration::from_secs(5))
                .expect("defaults")
                .location_idle,
            Duration::from_secs(86_400)
        );
        let refused = |toml_text: &str| {
            toml::from_str::<AnomalySection>(toml_text)
                .expect("parses")
                .evaluator(Duration::from_secs(5))
                .expect_err("refused")
                .to_string()
        };
        assert!(refused(r#"dimensions = ["model"]"#).contains("watched already"));
        assert!(refused(r#"dimensions = ["tenant"]"#).contains("watched already"));
        assert!(refused(r#"dimensions = ["endpoint", "endpoint"]"#).contains("listed twice"));
        assert!(refused(r#"dimensions = ["colour"]"#).contains("unknown dimension"));
        assert!(refused("max_location_keys = 0").contains("at least 1"));
        assert!(refused("location_idle_secs = 59").contains("at least 60"));
    }

    #[test]
    fn an_unknown_baseline_names_its_section() {
        let section = ZScoreSection {
            baseline: "median".to_string(),
            ..ZScoreSection::default()
        };
        let error = section.config("ttft").expect_err("unknown baseline");
        assert_eq!(
            error.to_string(),
            "[anomaly.ttft] baseline must be \"robust\" or \"ewma\", found \"median\""
        );
    }
}
