//! One alert transition (an anomaly, a burn-rate pair or a budget threshold that fired
//! or resolved), as every receiver gets it. No I/O.
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
