//! One alert transition (an anomaly, a burn-rate pair or a budget threshold that fired
//! or resolved), as every receiver gets it, and [`AlertBuilder`], which builds every
//! kind. No I/O.
//!
//! `labels` identify the alert: the same for its firing and its resolution, so
//! Alertmanager matches one to the other and routes on them. `id` identifies the
//! transition: derived from the labels, the state and the window where the alert
//! fired, so a replayed evaluation produces the same id and receivers can drop the
//! duplicate (it is the webhook's `Idempotency-Key`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Anomaly,
    BurnRate,
    Budget,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anomaly => "anomaly",
            Self::BurnRate => "burn_rate",
            Self::Budget => "budget",
        }
    }

    /// The `alertname` label of the kind's alerts.
    pub fn alertname(self) -> &'static str {
        match self {
            Self::Anomaly => "AisAnomaly",
            Self::BurnRate => "AisSloBurnRate",
            Self::Budget => "AisBudget",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Idempotency key of this transition (hex, 32 characters).
    pub id: String,
    pub kind: AlertKind,
    pub state: AlertState,
    /// Identity and routing: `alertname`, `kind`, `tenant`, `model` (when one),
    /// `severity`, and the kind's own (`detector`, `slo`, `period`/`unit`/`threshold`).
    pub labels: BTreeMap<String, String>,
    /// `summary` (one line) and `description` (the numbers).
    pub annotations: BTreeMap<String, String>,
    /// Start of the window where the alert fired (unix ms, event time).
    pub starts_at_ms: i64,
    /// End of the window where it resolved; `None` while firing.
    pub ends_at_ms: Option<i64>,
    /// The numbers behind it: observed, baseline, burn rates, spend, limit.
    pub values: BTreeMap<String, f64>,
}

impl Alert {
    /// Builds an alert and derives its id from labels, state and start.
    pub fn new(
        kind: AlertKind,
        state: AlertState,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        starts_at_ms: i64,
        ends_at_ms: Option<i64>,
        values: BTreeMap<String, f64>,
    ) -> Self {
        let mut hasher = Sha256::new();
        for (key, value) in &labels {
            hasher.update(key.as_bytes());
            hasher.update([0]);
            hasher.update(value.as_bytes());
            hasher.update([0]);
        }
        hasher.update(state.as_str().as_bytes());
        hasher.update(starts_at_ms.to_be_bytes());
        let digest = hasher.finalize();
        let id = digest[..16]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self {
            id,
            kind,
            state,
            labels,
            annotations,
            starts_at_ms,
            ends_at_ms,
            values,
        }
    }

    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn summary(&self) -> &str {
        self.annotations
            .get("summary")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Labels every alert carries.
pub fn base_labels(
    alertname: &str,
    kind: AlertKind,
    tenant: &str,
    model: Option<&str>,
    severity: &str,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), alertname.to_string());
    labels.insert("kind".to_string(), kind.as_str().to_string());
    labels.insert("tenant".to_string(), tenant.to_string());
    if let Some(model) = model {
        labels.insert("model".to_string(), model.to_string());
    }
    labels.insert("severity".to_string(), severity.to_string());
    labels.insert("source".to_string(), "ais".to_string());
    labels
}

/// Builds an alert the way every kind does: the labels every alert carries
/// ([`base_labels`], named after the kind) and the kind's own, a one-line summary, the
/// numbers behind it; finished as firing or resolved, which fixes its id.
#[derive(Debug, Clone)]
pub struct AlertBuilder {
    kind: AlertKind,
    labels: BTreeMap<String, String>,
    summary: String,
    values: BTreeMap<String, f64>,
}

impl AlertBuilder {
    pub fn new(kind: AlertKind, tenant: &str, model: Option<&str>, severity: &str) -> Self {
        Self {
            kind,
            labels: base_labels(kind.alertname(), kind, tenant, model, severity),
            summary: String::new(),
            values: BTreeMap::new(),
        }
    }

    /// A label of the kind's own; part of the alert's identity and id.
    pub fn label(mut self, name: &str, value: impl Into<String>) -> Self {
        self.labels.insert(name.to_string(), value.into());
        self
    }

    pub fn summary(mut self, summary: String) -> Self {
        self.summary = summary;
        self
    }

    pub fn value(mut self, name: &str, value: f64) -> Self {
        self.values.insert(name.to_string(), value);
        self
    }

    /// The alert firing since the window starting at `starts_at_ms`.
    pub fn firing(self, starts_at_ms: i64) -> Alert {
        self.finish(AlertState::Firing, starts_at_ms, None)
    }

    /// The alert that fired at `starts_at_ms`, resolved as of `ends_at_ms`.
    pub fn resolved(self, starts_at_ms: i64, ends_at_ms: i64) -> Alert {
        self.finish(AlertState::Resolved, starts_at_ms, Some(ends_at_ms))
    }

    fn finish(self, state: AlertState, starts_at_ms: i64, ends_at_ms: Option<i64>) -> Alert {
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_string(), self.summary);
        Alert::new(
            self.kind,
            state,
            self.labels,
            annotations,
            starts_at_ms,
            ends_at_ms,
            self.values,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: AlertState, start: i64) -> Alert {
        Alert::new(
            AlertKind::Budget,
            state,
            base_labels("AisBudget", AlertKind::Budget, "acme", None, "warning"),
            BTreeMap::new(),
            start,
            None,
            BTreeMap::new(),
        )
    }

    #[test]
    fn ids_are_stable_and_differ_per_transition() {
        assert_eq!(
            alert(AlertState::Firing, 60_000).id,
            alert(AlertState::Firing, 60_000).id
        );
        assert_ne!(
            alert(AlertState::Firing, 60_000).id,
            alert(AlertState::Resolved, 60_000).id
        );
        assert_ne!(
            alert(AlertState::Firing, 60_000).id,
            alert(AlertState::Firing, 120_000).id
        );
        assert_eq!(alert(AlertState::Firing, 0).id.len(), 32);
    }
}
