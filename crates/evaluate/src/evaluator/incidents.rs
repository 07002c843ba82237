//! The incidents the evaluator delivers: the anomalies of one (tenant, model) grouped
//! by the rule of [`crate::incident::group`], followed window by window, so a receiver
//! hears of an incident when it opens and once when it is over, not of every
//! detector. No I/O, no clock; the open incidents are part of the persisted state.
//!
//! Per window, in order: the window's firings, by detector (the order in which
//! `group` takes members, so the first member, the id and the peak agree); then its
//! resolutions; then the incidents it closes.
//!
//! - A firing joins the open incident of its (tenant, model) while one of its members
//!   fires or within `gap` of its last member's resolution; otherwise it opens one.
//! - A member's resolution leaves the incident open.
//! - An anomaly of a location (`[anomaly] dimensions`) has the model `"*"` (the
//!   tenant's models together) and joins that key's incident like any member; the
//!   incident remembers where its members fired. While one of them fires, every model
//!   of the tenant with an anomaly of its own firing at the same window is added to
//!   the incident's `wider` models (the model is anomalous as a whole, not only
//!   there); an incident whose locations saw none is narrower than its models.
//! - The incident closes when none of its members fires and the next window would be
//!   more than `gap` after the last resolution: nothing can join it any more, so its
//!   resolution is final. `GET /v1/incidents` shows it `resolved` from the last
//!   member's resolution on and would take a new anomaly within the gap back in under
//!   the same id; the delivery waits out the gap so that never reopens a delivered
//!   incident. Both agree on the members, the id, the peak and the `end`.

use std::collections::BTreeSet;

use ais_model::time::MINUTE_MS;
use ais_store::evaluation::{AnomalyRecord, Location};
use serde::{Deserialize, Serialize};

use super::keys::DetectorKey;
use crate::alert::{AlertIncident, AlertState};
use crate::incident::{incident_id, Peak};

/// A firing member of a location: (detector, dimension, value).
type LocatedMember = (String, String, String);

fn located_member(detector: &str, location: &Location) -> LocatedMember {
    (
        detector.to_string(),
        location.dimension.clone(),
        location.value.clone(),
    )
}

/// An incident that fired and is not over yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct OpenIncident {
    pub(super) id: String,
    /// The first member's window start.
    pub(super) start_ms: i64,
    /// Detectors of the members that fire now.
    pub(super) firing: BTreeSet<String>,
    /// Every detector and metric that fired in it.
    pub(super) detectors: BTreeSet<String>,
    pub(super) metrics: BTreeSet<String>,
    pub(super) peak: Peak,
    /// The latest window where a member resolved.
    pub(super) last_resolved_ms: Option<i64>,
    /// Members of locations that fire now. This and the two below are left out while
    /// empty, so an incident without locations is stored as before they existed.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) firing_at: BTreeSet<LocatedMember>,
    /// Every (dimension, value) where a member fired.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) locations: BTreeSet<(String, String)>,
    /// Models of the tenant anomalous as a whole while a location member fired.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) wider: BTreeSet<String>,
}

impl OpenIncident {
    /// The incident `first` opens.
    pub(super) fn open(first: &AnomalyRecord) -> Self {
        let mut opened = Self {
            id: incident_id(
                &first.tenant,
                &first.model,
                first.window_start_ms,
                &first.detector,
            ),
            start_ms: first.window_start_ms,
            firing: BTreeSet::new(),
            detectors: BTreeSet::from([first.detector.clone()]),
            metrics: BTreeSet::from([first.metric.clone()]),
            peak: Peak {
                score: first.score,
                detector: first.detector.clone(),
                metric: first.metric.clone(),
            },
            last_resolved_ms: None,
            firing_at: BTreeSet::new(),
            locations: BTreeSet::new(),
            wider: BTreeSet::new(),
        };
        opened.fire(first);
        opened
    }

    /// Whether any member fires.
    fn any_firing(&self) -> bool {
        !self.firing.is_empty() || !self.firing_at.is_empty()
    }

    /// Marks `member` firing; whether its location is new to the incident.
    fn fire(&mut self, member: &AnomalyRecord) -> bool {
        match &member.location {
            None => {
                self.firing.insert(member.detector.clone());
                false
            }
            Some(location) => {
                self.firing_at
                    .insert(located_member(&member.detector, location));
                self.locations
                    .insert((location.dimension.clone(), location.value.clone()))
            }
        }
    }

    /// Whether a member of a location fires.
    pub(super) fn fires_somewhere(&self) -> bool {
        !self.firing_at.is_empty()
    }

    /// Adds `models` (anomalous as a whole now, while a location member fires) to
    /// the wider ones; whether that changed what receivers see.
    pub(super) fn widen<'m>(&mut self, models: impl IntoIterator<Item = &'m str>) -> bool {
        let mut changed = false;
        for model in models {
            changed |= self.wider.insert(model.to_string());
        }
        changed
    }

    /// Whether an anomaly firing at `window_ms` belongs to this incident.
    pub(super) fn takes(&self, window_ms: i64, gap_ms: i64) -> bool {
        self.any_firing()
            || self
                .last_resolved_ms
                .is_none_or(|resolved_ms| window_ms.saturating_sub(resolved_ms) <= gap_ms)
    }

    /// Adds `member`; whether what receivers see of the incident (its detectors,
    /// metrics or peak) changed.
    pub(super) fn join(&mut self, member: &AnomalyRecord) -> bool {
        let mut changed = self.fire(member);
        changed |= self.detectors.insert(member.detector.clone());
        changed |= self.metrics.insert(member.metric.clone());
        // Strictly higher only: the first of equal scores stays, as in `group`.
        if member.score.total_cmp(&self.peak.score).is_gt() {
            self.peak = Peak {
                score: member.score,
                detector: member.detector.clone(),
                metric: member.metric.clone(),
            };
            changed = true;
        }
        changed
    }

    /// Resolves the member of `detector` (at `location`) at `window_ms`; `false` if no
    /// such member fires (an anomaly that fired before incidents were delivered).
    pub(super) fn resolve(
        &mut self,
        detector: &str,
        location: Option<&Location>,
        window_ms: i64,
    ) -> bool {
        let removed = match location {
            None => self.firing.remove(detector),
            Some(location) => self.firing_at.remove(&located_member(detector, location)),
        };
        if !removed {
            return false;
        }
        self.last_resolved_ms = Some(
            self.last_resolved_ms
                .map_or(window_ms, |resolved_ms| resolved_ms.max(window_ms)),
        );
        true
    }

    /// Whether the incident is over once `window_ms` is evaluated: nothing fires and
    /// an anomaly of the next window would be past the gap.
    pub(super) fn over(&self, window_ms: i64, gap_ms: i64) -> bool {
        !self.any_firing()
            && self.last_resolved_ms.is_some_and(|resolved_ms| {
                window_ms
                    .saturating_add(MINUTE_MS)
                    .saturating_sub(resolved_ms)
                    > gap_ms
            })
    }

    /// What an alert of the incident carries of it: `Resolved` once over, with the
    /// last resolution as its end.
    pub(super) fn summary(&self, key: &DetectorKey, state: AlertState) -> AlertIncident {
        AlertIncident {
            id: self.id.clone(),
            tenant: key.tenant.clone(),
            model: key.model.clone(),
            state,
            start_ms: self.start_ms,
            end_ms: match state {
                AlertState::Firing => None,
                AlertState::Resolved => self.last_resolved_ms,
            },
            peak: self.peak.clone(),
            detectors: self.detectors.iter().cloned().collect(),
            metrics: self.metrics.iter().cloned().collect(),
            locations: self
                .locations
                .iter()
                .map(|(dimension, value)| Location::new(dimension, value).into())
                .collect(),
            wider: self.wider.iter().cloned().collect(),
        }
    }
}

/// The order in which a window's firings join incidents: `group`'s order of members.
pub(super) fn member_order(left: &&AnomalyRecord, right: &&AnomalyRecord) -> std::cmp::Ordering {
    (
        &left.tenant,
        &left.model,
        &left.detector,
        &left.location,
        &left.metric,
    )
        .cmp(&(
            &right.tenant,
            &right.model,
            &right.detector,
            &right.location,
            &right.metric,
        ))
        .then_with(|| left.score.total_cmp(&right.score))
}
