//! The config file's objectives, as a file spells them: `[[slos]]` and their
//! `[[slos.alerts]]`, with the defaults of [`SloConfig`] for the keys they leave out.
//! Turning them into [`SloConfig`]s checks what serde cannot (the objective's kind
//! against `threshold_ms`, [`SloConfig::validate`], names unique) and names the entry in
//! each refusal.

use serde::Deserialize;

use crate::slo::{BurnAlertConfig, Indicator, SloConfig, SloConfigError};

/// The objective's window unless configured.
pub const DEFAULT_WINDOW_DAYS: u32 = 30;
/// The severity of an alert pair unless configured.
pub const DEFAULT_SEVERITY: &str = "page";

/// One `[[slos]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSection {
    pub name: String,
    pub model: String,
    /// Absent: each tenant's traffic to the model separately.
    pub tenant: Option<String>,
    /// "availability" or "latency".
    pub objective: String,
    /// Latency objectives: a good request takes at most this long.
    pub threshold_ms: Option<f64>,
    /// Fraction of good requests, e.g. 0.999.
    pub target: f64,
    #[serde(default = "default_window_days")]
    pub window_days: u32,
    /// `[[slos.alerts]]`; absent: the SRE workbook's three pairs
    /// ([`BurnAlertConfig::workbook_defaults`]), present but empty: none.
    pub alerts: Option<Vec<BurnAlertSection>>,
}

/// One `[[slos.alerts]]` pair.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnAlertSection {
    pub factor: f64,
    pub long_minutes: u32,
    pub short_minutes: u32,
    #[serde(default = "default_severity")]
    pub severity: String,
}

fn default_window_days() -> u32 {
    DEFAULT_WINDOW_DAYS
}

fn default_severity() -> String {
    DEFAULT_SEVERITY.to_string()
}

/// An objective that cannot be tracked as written.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SloSectionError {
    #[error("[[slos]] {name:?}: threshold_ms is for latency objectives only")]
    ThresholdOnAvailability { name: String },
    #[error("[[slos]] {name:?}: a latency objective needs threshold_ms")]
    MissingThreshold { name: String },
    #[error(
        "[[slos]] {name:?}: objective must be \"availability\" or \"latency\", found {found:?}"
    )]
    UnknownObjective { name: String, found: String },
    #[error(transparent)]
    Invalid(#[from] SloConfigError),
    #[error("[[slos]]: two objectives are named {0:?}")]
    DuplicateName(String),
}

impl SloSection {
    /// The objective, checked.
    pub fn config(&self) -> Result<SloConfig, SloSectionError> {
        let name = || self.name.clone();
        let indicator = match (self.objective.as_str(), self.threshold_ms) {
            ("availability", None) => Indicator::Availability,
            ("latency", Some(threshold_ms)) => Indicator::Latency { threshold_ms },
            ("availability", Some(_)) => {
                return Err(SloSectionError::ThresholdOnAvailability { name: name() })
            }
            ("latency", None) => return Err(SloSectionError::MissingThreshold { name: name() }),
            (other, _) => {
                return Err(SloSectionError::UnknownObjective {
                    name: name(),
                    found: other.to_string(),
                })
            }
        };
        let alerts = match &self.alerts {
            None => BurnAlertConfig::workbook_defaults(),
            Some(pairs) => pairs
                .iter()
                .map(|pair| BurnAlertConfig {
                    factor: pair.factor,
                    long_minutes: pair.long_minutes,
                    short_minutes: pair.short_minutes,
                    severity: pair.severity.clone(),
                })
                .collect(),
        };
        let config = SloConfig {
            name: name(),
            model: self.model.clone(),
            tenant: self.tenant.clone(),
            indicator,
            target: self.target,
            window_days: self.window_days,
            alerts,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Every `[[slos]]` entry, checked in the file's order: each valid, names unique (a
/// name is part of its alerts' identity).
pub fn objectives(sections: &[SloSection]) -> Result<Vec<SloConfig>, SloSectionError> {
    let mut slos: Vec<SloConfig> = Vec::with_capacity(sections.len());
    for section in sections {
        let slo = section.config()?;
        if slos.iter().any(|other| other.name == slo.name) {
            return Err(SloSectionError::DuplicateName(slo.name));
        }
        slos.push(slo);
    }
    Ok(slos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        slos: Vec<SloSection>,
    }

    fn sections(text: &str) -> Vec<SloSection> {
        toml::from_str::<File>(text).expect("parses").slos
    }

    fn error_of(text: &str) -> String {
        objectives(&sections(text))
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn an_entry_without_optional_keys_has_the_defaults() {
        let slos = objectives(&sections(
            "[[slos]]\nname = \"a\"\nmodel = \"m\"\nobjective = \"availability\"\ntarget = 0.99\n\
             [[slos]]\nname = \"b\"\nmodel = \"m\"\nobjective = \"availability\"\ntarget = 0.99\n\
             alerts = []\n",
        ))
        .expect("valid");
        assert_eq!(slos[0].window_days, DEFAULT_WINDOW_DAYS);
        assert_eq!(slos[0].tenant, None);
        assert_eq!(slos[0].alerts, BurnAlertConfig::workbook_defaults());
        assert!(slos[1].alerts.is_empty(), "an empty list means no alerts");
    }

    #[test]
    fn unknown_keys_are_refused_in_entries_and_alert_pairs() {
        let error = toml::from_str::<File>(
            "[[slos]]\nname = \"a\"\nmodel = \"m\"\nobjective = \"availability\"\ntarget = 0.9\nfoo = 1\n",
        )
        .expect_err("unknown key");
        assert!(error.to_string().contains("unknown field `foo`"), "{error}");
        let error = toml::from_str::<File>(
            "[[slos]]\nname = \"a\"\nmodel = \"m\"\nobjective = \"availability\"\ntarget = 0.9\n\
             [[slos.alerts]]\nfactor = 2.0\nlong_minutes = 60\nshort_minutes = 5\nseverty = \"x\"\n",
        )
        .expect_err("unknown key");
        assert!(
            error.to_string().contains("unknown field `severty`"),
            "{error}"
        );
    }

    #[test]
    fn the_objective_and_its_threshold_must_agree() {
        assert_eq!(
            error_of(
                "[[slos]]\nname = \"x\"\nmodel = \"m\"\nobjective = \"availability\"\n\
                 threshold_ms = 100\ntarget = 0.99\n"
            ),
            "[[slos]] \"x\": threshold_ms is for latency objectives only"
        );
        assert_eq!(
            error_of(
                "[[slos]]\nname = \"x\"\nmodel = \"m\"\nobjective = \"latency\"\ntarget = 0.99\n"
            ),
            "[[slos]] \"x\": a latency objective needs threshold_ms"
        );
        assert_eq!(
            error_of(
                "[[slos]]\nname = \"x\"\nmodel = \"m\"\nobjective = \"speed\"\ntarget = 0.99\n"
            ),
            "[[slos]] \"x\": objective must be \"availability\" or \"latency\", found \"speed\""
        );
    }

    #[test]
    fn an_invalid_objective_is_refused_with_its_name() {
        assert_eq!(
            error_of("[[slos]]\nname = \"x\"\nmodel = \"m\"\nobjective = \"availability\"\ntarget = 1.5\n"),
            "objective \"x\": target must be between 0 and 1 exclusive (0.999 for 99.9%), found 1.5"
        );
        assert_eq!(
            error_of(
                "[[slos]]\nname = \"x\"\nmodel = \"m\"\nobjective = \"availability\"\ntarget = 0.9\n\
                 window_days = 0\n"
            ),
            "objective \"x\": window_days must be between 1 and 366"
        );
        assert_eq!(
            error_of(
                "[[slos]]\nname = \"x\"\nmodel = \"m\"\nobjective = \"latency\"\nthreshold_ms = -1\n\
                 target = 0.9\n"
            ),
            "objective \"x\": latency threshold_ms must be a positive number"
        );
        assert_eq!(
            error_of(
                "[[slos]]\nname = \"x\"\nmodel = \"m\"\nobjective = \"availability\"\ntarget = 0.9\n\
                 [[slos.alerts]]\nfactor = 2.0\nlong_minutes = 5\nshort_minutes = 60\n"
            ),
            "objective \"x\": an alert needs factor > 0 and 1 <= short_minutes <= long_minutes <= 44640 (31 days)"
        );
    }

    #[test]
    fn two_objectives_of_one_name_are_refused() {
        let entry =
            "[[slos]]\nname = \"x\"\nmodel = \"m\"\nobjective = \"availability\"\ntarget = 0.9\n";
        assert_eq!(
            error_of(&format!("{entry}{entry}")),
            "[[slos]]: two objectives are named \"x\""
        );
    }
}
