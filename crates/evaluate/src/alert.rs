//! One alert transition (an incident of anomalies, a burn-rate pair or a budget
//! threshold that fired or resolved), as every receiver gets it, and [`AlertBuilder`],
//! which builds every kind. No I/O.
//!
//! `labels` identify the alert: the same for its firing and its resolution, so
//! Alertmanager matches one to the other and routes on them. `id` identifies the
//! transition: derived from the labels, the state and the window where the alert
//! fired, so a replayed evaluation produces the same id and receivers can drop the
//! duplicate (it is the webhook's `Idempotency-Key`).
//!
//! Anomalies are delivered as incidents ([`AlertIncident`]): the incident's id is a
//! label, so its labels stay the same from its firing to its resolution however many
//! detectors join it; the detectors, metrics and peak are annotations and the
//! `incident` object, which change as it grows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::incident::Peak;

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
    /// The incident an anomaly alert stands for, as of this transition. Absent from
    /// burn-rate and budget alerts, and from the per-detector anomaly alerts of
    /// versions before incidents (whose queued entries still read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<AlertIncident>,
}

/// An incident as an alert carries it: what `GET /v1/incidents` says of it, as of the
/// transition (the members are left out: they are the stored anomalies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertIncident {
    /// The incident's id: the same as `GET /v1/incidents` computes.
    pub id: String,
    pub tenant: String,
    pub model: String,
    pub state: AlertState,
    /// The first member's window start (unix ms).
    pub start_ms: i64,
    /// The window where its last member resolved (unix ms, as `/v1/incidents`'
    /// `end`); `None` while firing.
    pub end_ms: Option<i64>,
    /// The member with the highest score so far.
    pub peak: Peak,
    /// Distinct detectors and metrics that fired in it so far, sorted.
    pub detectors: Vec<String>,
    pub metrics: Vec<String>,
    /// Where its members of locations (`[anomaly] dimensions`) fired, sorted; absent
    /// when none did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<AlertLocation>,
    /// Models of the tenant anomalous as a whole while a location member fired
    /// ([`AlertIncident::extent`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wider: Vec<String>,
}

impl AlertIncident {
    /// For an incident with locations: `wider` when some model of the tenant was
    /// anomalous as a whole too, `narrower` when it was confined to its locations.
    pub fn extent(&self) -> Option<&'static str> {
        extent(!self.locations.is_empty(), !self.wider.is_empty())
    }
}

/// `wider` or `narrower` for an incident with locations; `None` without.
pub fn extent(has_locations: bool, has_wider: bool) -> Option<&'static str> {
    match (has_locations, has_wider) {
        (false, _) => None,
        (true, true) => Some("wider"),
        (true, false) => Some("narrower"),
    }
}

/// One value of one dimension, as alerts and the API show a location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertLocation {
    pub dimension: String,
    pub value: String,
}

impl From<ais_store::evaluation::Location> for AlertLocation {
    fn from(location: ais_store::evaluation::Location) -> Self {
        Self {
            dimension: location.dimension,
            value: location.value,
        }
    }
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
            incident: None,
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
    annotations: BTreeMap<String, String>,
    values: BTreeMap<String, f64>,
    incident: Option<AlertIncident>,
}

impl AlertBuilder {
    pub fn new(kind: AlertKind, tenant: &str, model: Option<&str>, severity: &str) -> Self {
        Self {
            kind,
            labels: base_labels(kind.alertname(), kind, tenant, model, severity),
            summary: String::new(),
            annotations: BTreeMap::new(),
            values: BTreeMap::new(),
            incident: None,
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

    /// An annotation besides the summary: not part of the identity, free to change
    /// between transitions of one alert.
    pub fn annotation(mut self, name: &str, value: impl Into<String>) -> Self {
        self.annotations.insert(name.to_string(), value.into());
        self
    }

    pub fn value(mut self, name: &str, value: f64) -> Self {
        self.values.insert(name.to_string(), value);
        self
    }

    /// The incident the alert stands for (not part of its identity).
    pub fn incident(mut self, incident: AlertIncident) -> Self {
        self.incident = Some(incident);
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
        let mut annotations = self.annotations;
        annotations.insert("summary".to_string(), self.summary);
        let mut alert = Alert::new(
            self.kind,
            state,
            self.labels,
            annotations,
            starts_at_ms,
            ends_at_ms,
            self.values,
        );
        alert.incident = self.incident;
        alert
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
