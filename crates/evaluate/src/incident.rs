//! Incidents: the anomalies of one (tenant, model) that fire together, grouped into
//! one thing to look at and to deliver. No I/O.
//!
//! The rule ([`group`]): every anomaly is active from its `window_start` until the
//! window where it resolved, or open-ended while it fires. Anomalies of the same
//! (tenant, model) whose active spans overlap, or are at most `gap` apart, are one
//! incident; a chain of them is one incident however long it runs, and an incident
//! with a firing member takes every later anomaly of its (tenant, model). The
//! cross-tenant anomalies (tenant [`ALL_TENANTS`]) group among themselves like any
//! tenant's.
//!
//! Anomalies of a location (`[anomaly] dimensions`: a dimension's value in a tenant's
//! traffic) have the model `"*"`, the tenant's models together (dimension rollups are
//! per tenant, not per model), and group with that key's anomalies by the same rule.
//! Such an incident says where (`locations`) and how far it reaches: every model of
//! the tenant with an anomaly of the model as a whole active at a window where one of
//! its location members is active is `wider` (the model is anomalous everywhere, not
//! only there); with none, the incident is narrower than the tenant's models, confined
//! to its locations ([`Incident::extent`]).
//!
//! The evaluator follows the same rule window by window to deliver incidents (its
//! `evaluator::incidents`), so deliveries carry these ids. Here incidents are computed
//! from the stored anomalies, never stored themselves: the same records give the same
//! incidents (inputs are sorted first) with the same ids (derived from the tenant, the
//! model and the first member's window and detector), so a restart of the server or the evaluator neither duplicates an incident nor
//! loses one. An id changes only if an earlier member appears, which the evaluator
//! never produces (it evaluates windows in order), or if the reader no longer reads
//! the first member (see [`LOOKBACK`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ais_store::evaluation::{AnomalyRecord, AnomalyState, Location, ALL_TENANTS};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Default `gap`: anomalies of one model this close are one incident. Ten minutes
/// spans the k-of-n gates' re-fires and the detectors that see one slowdown a few
/// windows apart (latency first, then TTFT or errors), without merging the next
/// day's unrelated slowdown.
pub const DEFAULT_GAP: Duration = Duration::from_secs(10 * 60);

/// How far before a range a reader looks for the first members of the incidents
/// that overlap it, so an incident that started before `from` is shown whole. An
/// anomaly that started earlier still than this is not read: its incident is shown
/// from its first member inside the lookback, under another id.
pub const LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// `firing` while any member fires, `resolved` once all have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentState {
    Firing,
    Resolved,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// The member with the highest score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    pub score: f64,
    pub detector: String,
    pub metric: String,
}

/// Anomalies of one (tenant, model) that fired together.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// Hex, 32 characters: the same incident has the same id whenever it is computed.
    pub id: String,
    pub tenant: String,
    pub model: String,
    pub state: IncidentState,
    /// The earliest member's window start (unix ms).
    pub start_ms: i64,
    /// The latest member's resolution window; `None` while any member fires.
    pub end_ms: Option<i64>,
    pub peak: Peak,
    /// Distinct detectors and metrics of the members, sorted.
    pub detectors: Vec<String>,
    pub metrics: Vec<String>,
    /// Sorted by window start, then detector and location.
    pub members: Vec<AnomalyRecord>,
    /// Where its members of locations fired, distinct and sorted; empty when none is
    /// of a location.
    pub locations: Vec<Location>,
    /// Models of the tenant anomalous as a whole while one of those members was
    /// active, sorted.
    pub wider: Vec<String>,
}

impl Incident {
    /// `wider` or `narrower` for an incident with locations (module docs); `None`
    /// for one without.
    pub fn extent(&self) -> Option<&'static str> {
        crate::alert::extent(!self.locations.is_empty(), !self.wider.is_empty())
    }

    /// Whether the incident was active at some point of `[from_ms, to_ms)`: it started
    /// before `to_ms` and is still firing or resolved at or after `from_ms`.
    pub fn overlaps(&self, from_ms: i64, to_ms: i64) -> bool {
        self.start_ms < to_ms && self.end_ms.is_none_or(|end_ms| end_ms >= from_ms)
    }
}

/// Where a member stops being active: `None` while it fires. A resolved record
/// without its resolution window (or with one before its start) ends where it
/// started, so a malformed row neither panics nor stretches an incident.
fn active_until(record: &AnomalyRecord) -> Option<i64> {
    match record.state {
        AnomalyState::Firing => None,
        AnomalyState::Resolved => Some(
            record
                .resolved_window_ms
                .map_or(record.window_start_ms, |resolved| {
                    resolved.max(record.window_start_ms)
                }),
        ),
    }
}

/// Groups `records` (any order, any tenants and models) into incidents by the rule
/// of the module docs, newest first (by start, then tenant, model and id).
pub fn group(records: &[AnomalyRecord], gap: Duration) -> Vec<Incident> {
    group_beside(records, &[], gap)
}

/// [`group`], with `beside` read for what makes an incident of locations wider (the
/// anomalies of its tenant's models as a whole) and for nothing else: for a reader
/// that selected `records` by model, which leaves out those of the other models.
pub fn group_beside(
    records: &[AnomalyRecord],
    beside: &[AnomalyRecord],
    gap: Duration,
) -> Vec<Incident> {
    let gap_ms = i64::try_from(gap.as_millis()).unwrap_or(i64::MAX);
    let mut sorted: Vec<&AnomalyRecord> = records.iter().collect();
    // Every field takes part, so equal inputs in any order give equal outputs.
    sorted.sort_by(|left, right| {
        (
            &left.tenant,
            &left.model,
            left.window_start_ms,
            &left.detector,
            &left.location,
        )
            .cmp(&(
                &right.tenant,
                &right.model,
                right.window_start_ms,
                &right.detector,
                &right.location,
            ))
            .then_with(|| left.metric.cmp(&right.metric))
            .then_with(|| left.score.total_cmp(&right.score))
            .then_with(|| left.resolved_window_ms.cmp(&right.resolved_window_ms))
    });

    let mut incidents = Vec::new();
    let mut current: Vec<AnomalyRecord> = Vec::new();
    // Where the current incident stops being active; `None` while a member fires.
    let mut reach: Option<i64> = None;
    for record in sorted {
        let joins = match current.first() {
            None => false,
            Some(first) => {
                first.tenant == record.tenant
                    && first.model == record.model
                    && reach.is_none_or(|reach_ms| {
                        record.window_start_ms.saturating_sub(reach_ms) <= gap_ms
                    })
            }
        };
        if joins {
            reach = match (reach, active_until(record)) {
                (Some(reach_ms), Some(until_ms)) => Some(reach_ms.max(until_ms)),
                _ => None,
            };
        } else {
            if let Some(incident) = incident_of(std::mem::take(&mut current)) {
                incidents.push(incident);
            }
            reach = active_until(record);
        }
        current.push(record.clone());
    }
    if let Some(incident) = incident_of(current) {
        incidents.push(incident);
    }
    // Anomalies of models as a whole, per tenant: what makes a location's incident
    // wider.
    let mut of_models: BTreeMap<&str, Vec<&AnomalyRecord>> = BTreeMap::new();
    // A record in both only names its model twice: `wider` is a set.
    for record in records.iter().chain(beside) {
        if record.location.is_none()
            && record.tenant != ALL_TENANTS
            && record.model != crate::evaluator::ALL_MODELS
        {
            of_models.entry(&record.tenant).or_default().push(record);
        }
    }
    for incident in &mut incidents {
        if !incident.locations.is_empty() {
            let tenant_models = of_models.get(incident.tenant.as_str());
            incident.wider = wider_models(tenant_models.map_or(&[][..], Vec::as_slice), incident);
        }
    }
    incidents.sort_by(|left, right| {
        right
            .start_ms
            .cmp(&left.start_ms)
            .then_with(|| left.tenant.cmp(&right.tenant))
            .then_with(|| left.model.cmp(&right.model))
            .then_with(|| left.id.cmp(&right.id))
    });
    incidents
}

/// The incident of `members` (sorted, one (tenant, model)); `None` if there are none.
fn incident_of(members: Vec<AnomalyRecord>) -> Option<Incident> {
    let first = members.first()?;
    let firing = members.iter().any(|member| active_until(member).is_none());
    let end_ms = if firing {
        None
    } else {
        members.iter().filter_map(active_until).max()
    };
    // The first of equal scores wins, so the peak is as deterministic as the order.
    let peak_member = members.iter().fold(first, |best, member| {
        if member.score.total_cmp(&best.score).is_gt() {
            member
        } else {
            best
        }
    });
    let detectors: BTreeSet<&str> = members.iter().map(|m| m.detector.as_str()).collect();
    let metrics: BTreeSet<&str> = members.iter().map(|m| m.metric.as_str()).collect();
    let locations: BTreeSet<&Location> =
        members.iter().filter_map(|m| m.location.as_ref()).collect();
    Some(Incident {
        id: incident_id(
            &first.tenant,
            &first.model,
            first.window_start_ms,
            &first.detector,
        ),
        tenant: first.tenant.clone(),
        model: first.model.clone(),
        state: if firing {
            IncidentState::Firing
        } else {
            IncidentState::Resolved
        },
        start_ms: first.window_start_ms,
        end_ms,
        peak: Peak {
            score: peak_member.score,
            detector: peak_member.detector.clone(),
            metric: peak_member.metric.clone(),
        },
        detectors: detectors.into_iter().map(str::to_string).collect(),
        metrics: metrics.into_iter().map(str::to_string).collect(),
        locations: locations.into_iter().cloned().collect(),
        wider: Vec::new(),
        members,
    })
}

/// The models of `of_models` (anomalies of the incident's tenant's models as a whole)
/// active at a window where one of the incident's location members is active (both
/// from their window start until the window they resolved at, that one excluded).
/// Sorted.
fn wider_models(of_models: &[&AnomalyRecord], incident: &Incident) -> Vec<String> {
    let mut models = BTreeSet::new();
    let located = incident
        .members
        .iter()
        .filter(|member| member.location.is_some());
    for member in located {
        let member_until = active_until(member).unwrap_or(i64::MAX);
        for other in of_models {
            if models.contains(other.model.as_str()) {
                continue;
            }
            let other_until = active_until(other).unwrap_or(i64::MAX);
            let from = member.window_start_ms.max(other.window_start_ms);
            if from < member_until.min(other_until) {
                models.insert(other.model.as_str());
            }
        }
    }
    models.into_iter().map(str::to_string).collect()
}

/// The id of the incident whose first member is `detector`'s at `window_start_ms`:
/// members that join later do not change it.
pub(crate) fn incident_id(
    tenant: &str,
    model: &str,
    window_start_ms: i64,
    detector: &str,
) -> String {
    let mut hasher = Sha256::new();
    for part in [tenant, model, detector] {
        hasher.update(part.as_bytes());
        // A separator no name holds, so ("ab", "c") and ("a", "bc") differ.
        hasher.update([0]);
    }
    hasher.update(window_start_ms.to_be_bytes());
    let digest = hasher.finalize();
    digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;
    /// 2026-11-22T10:00:00Z.
    const T0: i64 = 1_795_341_600_000;

    fn firing(model: &str, detector: &str, minute: i64, score: f64) -> AnomalyRecord {
        AnomalyRecord {
            location: None,
            tenant: "acme".to_string(),
            model: model.to_string(),
            detector: detector.to_string(),
            metric: format!("{detector}_metric"),
            window_start_ms: T0 + minute * MINUTE,
            observed: 10.0,
            baseline: 1.0,
            score,
            state: AnomalyState::Firing,
            resolved_window_ms: None,
        }
    }

    #[test]
    fn anomalies_read_beside_widen_an_incident_of_locations_and_are_not_grouped() {
        let mut chat = firing(
            crate::evaluator::ALL_MODELS,
            "latency_per_token_zscore",
            0,
            6.0,
        );
        chat.location = Some(Location::new("endpoint", "/chat"));
        let model = firing("m", "latency_p95_zscore", 1, 5.0);
        let alone = group(std::slice::from_ref(&chat), DEFAULT_GAP);
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].extent(), Some("narrower"));
        let beside = group_beside(
            std::slice::from_ref(&chat),
            std::slice::from_ref(&model),
            DEFAULT_GAP,
        );
        assert_eq!(beside.len(), 1, "the model's anomaly is no incident here");
        assert_eq!(beside[0].extent(), Some("wider"));
        assert_eq!(beside[0].wider, ["m"]);
        let together = group(&[chat, model], DEFAULT_GAP);
        let located: Vec<&Incident> = together
            .iter()
            .filter(|incident| !incident.locations.is_empty())
            .collect();
        assert_eq!(located, [&beside[0]], "as if all were read");
    }

    fn resolved_at(record: AnomalyRecord, minute: i64) -> AnomalyRecord {
        AnomalyRecord {
            state: AnomalyState::Resolved,
            resolved_window_ms: Some(T0 + minute * MINUTE),
            ..record
        }
    }

    /// Four detectors of one model, a few minutes apart: latency first, then TTFT,
    /// errors and cost; resolving at minutes 6, 9, 12 and `last`.
    fn four_detectors(last: Option<i64>) -> Vec<AnomalyRecord> {
        let mut records = vec![
            resolved_at(firing("m", "latency_p95_zscore", 0, 6.0), 6),
            resolved_at(firing("m", "ttft_input_fit", 2, 9.5), 9),
            resolved_at(firing("m", "error_rate_wilson", 3, 4.0), 12),
        ];
        let cost = firing("m", "cost_zscore", 5, 7.0);
        records.push(match last {
            Some(minute) => resolved_at(cost, minute),
            None => cost,
        });
        records
    }

    #[test]
    fn four_detectors_on_one_model_within_the_gap_are_one_incident_firing_until_all_resolve() {
        let incidents = group(&four_detectors(None), DEFAULT_GAP);
        assert_eq!(incidents.len(), 1, "{incidents:#?}");
        let incident = &incidents[0];
        assert_eq!(incident.detectors.len(), 4);
        assert_eq!(
            incident.detectors,
            [
                "cost_zscore",
                "error_rate_wilson",
                "latency_p95_zscore",
                "ttft_input_fit"
            ]
        );
        assert_eq!(incident.metrics.len(), 4);
        assert_eq!(incident.members.len(), 4);
        assert_eq!(incident.state, IncidentState::Firing);
        assert_eq!(incident.end_ms, None);
        assert_eq!(incident.start_ms, T0);
        assert_eq!(
            incident.peak,
            Peak {
                score: 9.5,
                detector: "ttft_input_fit".to_string(),
                metric: "ttft_input_fit_metric".to_string(),
            }
        );

        let resolved = group(&four_detectors(Some(10)), DEFAULT_GAP);
        assert_eq!(resolved.len(), 1, "{resolved:#?}");
        assert_eq!(resolved[0].state, IncidentState::Resolved);
        // The latest resolution, not the last member's.
        assert_eq!(resolved[0].end_ms, Some(T0 + 12 * MINUTE));
        assert_eq!(resolved[0].id, incident.id, "resolving keeps the id");
    }

    #[test]
    fn two_models_are_two_incidents_and_two_tenants_too() {
        let mut records = four_detectors(None);
        records.push(firing("other-model", "latency_p95_zscore", 1, 3.0));
        let mut foreign = firing("m", "latency_p95_zscore", 1, 3.0);
        foreign.tenant = "globex".to_string();
        records.push(foreign);
        let incidents = group(&records, DEFAULT_GAP);
        let keys: Vec<(&str, &str, usize)> = incidents
            .iter()
            .map(|i| (i.tenant.as_str(), i.model.as_str(), i.members.len()))
            .collect();
        // Newest first, then tenant and model.
        assert_eq!(
            keys,
            [
                ("acme", "other-model", 1),
                ("globex", "m", 1),
                ("acme", "m", 4)
            ]
        );
        let ids: BTreeSet<&str> = incidents.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids.len(), 3, "distinct ids: {incidents:#?}");
    }

    #[test]
    fn anomalies_further_apart_than_the_gap_are_two_incidents_and_within_it_one() {
        let early = resolved_at(firing("m", "latency_p95_zscore", 0, 5.0), 3);
        // Eleven minutes after the first resolved: past the ten-minute gap.
        let late = firing("m", "ttft_input_fit", 14, 5.0);
        let apart = group(&[early.clone(), late.clone()], DEFAULT_GAP);
        assert_eq!(apart.len(), 2, "{apart:#?}");
        assert_eq!(apart[0].start_ms, T0 + 14 * MINUTE, "newest first");
        assert_eq!(apart[0].state, IncidentState::Firing);
        assert_eq!(apart[1].state, IncidentState::Resolved);
        assert_eq!(apart[1].end_ms, Some(T0 + 3 * MINUTE));
        // Exactly the gap apart is within it.
        let at_gap = firing("m", "ttft_input_fit", 13, 5.0);
        assert_eq!(group(&[early.clone(), at_gap], DEFAULT_GAP).len(), 1);
        // A wider gap takes the late one in.
        let wide = group(&[early, late], Duration::from_secs(15 * 60));
        assert_eq!(wide.len(), 1, "{wide:#?}");
    }

    #[test]
    fn a_firing_member_takes_every_later_anomaly_of_its_model() {
        let open = firing("m", "latency_p95_zscore", 0, 5.0);
        let much_later = resolved_at(firing("m", "cost_zscore", 300, 5.0), 310);
        let incidents = group(&[open, much_later], DEFAULT_GAP);
        assert_eq!(incidents.len(), 1, "{incidents:#?}");
        assert_eq!(incidents[0].state, IncidentState::Firing);
    }

    #[test]
    fn ids_and_incidents_are_the_same_whatever_the_input_order_and_recomputation() {
        let mut records = four_detectors(Some(10));
        records.push(resolved_at(firing("m", "latency_p95_zscore", 40, 2.0), 45));
        records.push(firing("n", "latency_p95_zscore", 41, 2.0));
        let once = group(&records, DEFAULT_GAP);
        assert_eq!(once.len(), 3);
        records.reverse();
        assert_eq!(group(&records, DEFAULT_GAP), once);
        records.rotate_left(2);
        assert_eq!(group(&records, DEFAULT_GAP), once);
        // The id is the first member's: a later member does not change it.
        let first_only = group(&four_detectors(None)[..1], DEFAULT_GAP);
        let whole = group(&four_detectors(None), DEFAULT_GAP);
        assert_eq!(first_only[0].id, whole[0].id);
        assert_eq!(first_only[0].id.len(), 32);
        // And it depends on tenant, model, window and detector.
        let mut elsewhere = four_detectors(None);
        for record in &mut elsewhere {
            record.tenant = "globex".to_string();
        }
        assert_ne!(group(&elsewhere, DEFAULT_GAP)[0].id, whole[0].id);
        let mut other_model = four_detectors(None);
        other_model[0].model = "n".to_string();
        assert_ne!(group(&other_model[..1], DEFAULT_GAP)[0].id, whole[0].id);
        let mut other_detector = four_detectors(None);
        other_detector[0].detector = "latency_mean_zscore".to_string();
        assert_ne!(group(&other_detector, DEFAULT_GAP)[0].id, whole[0].id);
        let mut a_minute_later = four_detectors(None);
        a_minute_later[0].window_start_ms += MINUTE;
        assert_ne!(group(&a_minute_later, DEFAULT_GAP)[0].id, whole[0].id);
    }

    #[test]
    fn an_incident_straddling_from_is_whole_and_kept_while_one_that_ended_before_is_not() {
        // A range starting at minute 4: the incident began at minute 0.
        let from = T0 + 4 * MINUTE;
        let to = T0 + 60 * MINUTE;
        let mut records = four_detectors(Some(10));
        // Ended at minute -30, long before `from` and far from the rest.
        records.push(resolved_at(firing("m", "cost_zscore", -40, 3.0), -30));
        let kept: Vec<Incident> = group(&records, DEFAULT_GAP)
            .into_iter()
            .filter(|incident| incident.overlaps(from, to))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:#?}");
        assert_eq!(kept[0].start_ms, T0, "starts before from, whole");
        assert_eq!(kept[0].members.len(), 4);
        // Resolved exactly at `from`: still in range; starting at `to`: not.
        assert!(kept[0].overlaps(T0 + 12 * MINUTE, to));
        assert!(!kept[0].overlaps(T0 + 13 * MINUTE, to));
        assert!(!kept[0].overlaps(T0 - 10 * MINUTE, T0));
    }

    #[test]
    fn a_resolved_row_without_its_resolution_ends_where_it_started() {
        let mut odd = firing("m", "latency_p95_zscore", 0, 5.0);
        odd.state = AnomalyState::Resolved;
        let incidents = group(&[odd], DEFAULT_GAP);
        assert_eq!(incidents[0].end_ms, Some(T0));
        assert!(group(&[], DEFAULT_GAP).is_empty());
    }
}
