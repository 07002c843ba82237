//! Typed keys of the evaluator's state maps, and the string each is persisted as.
//!
//! The state is stored as JSON, whose maps need string keys: a key is written as its
//! parts joined by [`KEY_SEPARATOR`], the form the evaluator has always written, so a
//! state stored by an earlier version reads back as it was. In memory the keys are
//! structs, so nothing splits, prefixes or matches strings by hand.
//!
//! The derived order (field by field) equals the order of the joined strings as long as
//! no part holds a character below the separator (a control character), so the maps
//! iterate, and serialise, in the order they had when keyed by strings. Iteration order
//! is visible: it is the order renewals are queued in.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use ais_store::evaluation::Location;
use serde::{Deserialize, Serialize};

use crate::alert::Alert;

/// Joins the parts of a persisted key; a control character, so no configured name and
/// no label carries it in practice.
const KEY_SEPARATOR: char = '\u{1f}';

/// A persisted key that does not have the parts of its kind.
#[derive(Debug, thiserror::Error)]
#[error("evaluator state key {joined:?} is not a {kind} key (parts joined by U+001F)")]
pub(crate) struct KeyError {
    kind: &'static str,
    joined: String,
}

impl KeyError {
    fn new(kind: &'static str, joined: String) -> Self {
        Self { kind, joined }
    }
}

/// The persisted form of a key made of `parts`.
fn join<S: Borrow<str>>(parts: &[S]) -> String {
    parts.join(&KEY_SEPARATOR.to_string())
}

/// The detectors of one tenant's model, of a model across tenants
/// ([`ais_store::evaluation::ALL_TENANTS`]) or of a tenant across its models
/// ([`super::ALL_MODELS`]). Persisted as `tenant␟model`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub(crate) struct DetectorKey {
    pub(crate) tenant: String,
    pub(crate) model: String,
}

impl DetectorKey {
    pub(crate) fn new(tenant: &str, model: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            model: model.to_string(),
        }
    }
}

impl From<DetectorKey> for String {
    fn from(key: DetectorKey) -> Self {
        join(&[key.tenant, key.model])
    }
}

impl TryFrom<String> for DetectorKey {
    type Error = KeyError;

    /// Splits at the first separator: a tenant never holds one, a model (sent by
    /// clients) might.
    fn try_from(joined: String) -> Result<Self, KeyError> {
        match joined.split_once(KEY_SEPARATOR) {
            Some((tenant, model)) => Ok(Self::new(tenant, model)),
            None => Err(KeyError::new("detector", joined)),
        }
    }
}

/// One objective's tracker for one tenant. Persisted as `objective␟tenant`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub(crate) struct ObjectiveKey {
    /// [`crate::slo::SloConfig::name`].
    pub(crate) objective: String,
    pub(crate) tenant: String,
}

impl ObjectiveKey {
    pub(crate) fn new(objective: &str, tenant: &str) -> Self {
        Self {
            objective: objective.to_string(),
            tenant: tenant.to_string(),
        }
    }
}

impl From<ObjectiveKey> for String {
    fn from(key: ObjectiveKey) -> Self {
        join(&[key.objective, key.tenant])
    }
}

impl TryFrom<String> for ObjectiveKey {
    type Error = KeyError;

    fn try_from(joined: String) -> Result<Self, KeyError> {
        match joined.split_once(KEY_SEPARATOR) {
            Some((objective, tenant)) => Ok(Self::new(objective, tenant)),
            None => Err(KeyError::new("objective", joined)),
        }
    }
}

/// One detector's anomaly of one [`DetectorKey`]. Persisted as
/// `tenant␟model␟detector`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub(crate) struct AnomalyKey {
    pub(crate) tenant: String,
    pub(crate) model: String,
    pub(crate) detector: String,
}

impl AnomalyKey {
    pub(crate) fn new(tenant: &str, model: &str, detector: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            model: model.to_string(),
            detector: detector.to_string(),
        }
    }
}

impl From<AnomalyKey> for String {
    fn from(key: AnomalyKey) -> Self {
        join(&[key.tenant, key.model, key.detector])
    }
}

impl TryFrom<String> for AnomalyKey {
    type Error = KeyError;

    /// The tenant ends at the first separator and the detector (a fixed name) starts
    /// after the last: the model keeps any separator it holds.
    fn try_from(joined: String) -> Result<Self, KeyError> {
        let parts = joined.split_once(KEY_SEPARATOR).and_then(|(tenant, rest)| {
            let (model, detector) = rest.rsplit_once(KEY_SEPARATOR)?;
            Some(Self::new(tenant, model, detector))
        });
        parts.ok_or_else(|| KeyError::new("anomaly", joined))
    }
}

/// The detectors of one value of one dimension of a tenant's traffic (all its models
/// together: dimension rollups are per tenant). Persisted as `tenant␟dimension␟value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub(crate) struct LocationKey {
    pub(crate) tenant: String,
    pub(crate) dimension: String,
    pub(crate) value: String,
}

impl LocationKey {
    pub(crate) fn new(tenant: &str, dimension: &str, value: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            dimension: dimension.to_string(),
            value: value.to_string(),
        }
    }

    pub(crate) fn location(&self) -> Location {
        Location::new(&self.dimension, &self.value)
    }
}

impl From<LocationKey> for String {
    fn from(key: LocationKey) -> Self {
        join(&[key.tenant, key.dimension, key.value])
    }
}

impl TryFrom<String> for LocationKey {
    type Error = KeyError;

    /// The tenant and the dimension (a configured name) end at the first two
    /// separators; the value, sent by clients, keeps any it holds.
    fn try_from(joined: String) -> Result<Self, KeyError> {
        let parts = joined.split_once(KEY_SEPARATOR).and_then(|(tenant, rest)| {
            let (dimension, value) = rest.split_once(KEY_SEPARATOR)?;
            Some(Self::new(tenant, dimension, value))
        });
        parts.ok_or_else(|| KeyError::new("location", joined))
    }
}

/// One detector's anomaly of one [`LocationKey`]. Persisted as
/// `tenant␟dimension␟detector␟value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub(crate) struct LocationAnomalyKey {
    pub(crate) tenant: String,
    pub(crate) dimension: String,
    pub(crate) detector: String,
    pub(crate) value: String,
}

impl LocationAnomalyKey {
    pub(crate) fn new(tenant: &str, location: &Location, detector: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            dimension: location.dimension.clone(),
            detector: detector.to_string(),
            value: location.value.clone(),
        }
    }
}

impl From<LocationAnomalyKey> for String {
    fn from(key: LocationAnomalyKey) -> Self {
        join(&[key.tenant, key.dimension, key.detector, key.value])
    }
}

impl TryFrom<String> for LocationAnomalyKey {
    type Error = KeyError;

    /// Tenant, dimension and detector end at the first three separators; the value
    /// keeps any it holds.
    fn try_from(joined: String) -> Result<Self, KeyError> {
        let parts = joined.split_once(KEY_SEPARATOR).and_then(|(tenant, rest)| {
            let (dimension, rest) = rest.split_once(KEY_SEPARATOR)?;
            let (detector, value) = rest.split_once(KEY_SEPARATOR)?;
            Some(Self {
                tenant: tenant.to_string(),
                dimension: dimension.to_string(),
                detector: detector.to_string(),
                value: value.to_string(),
            })
        });
        parts.ok_or_else(|| KeyError::new("location anomaly", joined))
    }
}

/// A firing alert's identity: its labels, the same for its firing and its resolution.
/// Persisted as `name=value` pairs joined by the separator. It is never parsed back:
/// a label value may hold any character, and the alert it keys carries the labels
/// ([`firing_by_labels`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub(crate) struct AlertIdentity(BTreeMap<String, String>);

impl AlertIdentity {
    pub(crate) fn of(alert: &Alert) -> Self {
        Self(alert.labels.clone())
    }
}

impl From<AlertIdentity> for String {
    fn from(identity: AlertIdentity) -> Self {
        let pairs: Vec<String> = identity
            .0
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        join(&pairs)
    }
}

/// Reads the firing alerts, keyed again by their own labels rather than by parsing the
/// persisted keys (which those labels produced).
pub(crate) fn firing_by_labels<'de, D>(
    deserializer: D,
) -> Result<BTreeMap<AlertIdentity, (Alert, i64)>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let persisted = BTreeMap::<String, (Alert, i64)>::deserialize(deserializer)?;
    Ok(persisted
        .into_values()
        .map(|(alert, queued_at)| (AlertIdentity::of(&alert), (alert, queued_at)))
        .collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Names as configs and clients send them: anything but control characters.
    fn name() -> impl Strategy<Value = String> {
        "[^\\p{Cc}]{0,6}"
    }

    fn joined<K: Into<String>>(key: K) -> String {
        key.into()
    }

    #[test]
    fn keys_are_persisted_as_their_parts_joined() {
        assert_eq!(
            joined(DetectorKey::new("acme", "gpt-4o")),
            "acme\u{1f}gpt-4o"
        );
        assert_eq!(joined(ObjectiveKey::new("fast", "acme")), "fast\u{1f}acme");
        assert_eq!(
            joined(AnomalyKey::new("*", "gpt-4o", "ttft_p95_zscore")),
            "*\u{1f}gpt-4o\u{1f}ttft_p95_zscore"
        );
        let mut labels = BTreeMap::new();
        labels.insert("tenant".to_string(), "acme".to_string());
        labels.insert("alertname".to_string(), "AisBudget".to_string());
        assert_eq!(
            joined(AlertIdentity(labels)),
            "alertname=AisBudget\u{1f}tenant=acme"
        );
    }

    #[test]
    fn a_model_holding_the_separator_reads_back_whole() {
        let key = AnomalyKey::new("acme", "odd\u{1f}model", "cost_zscore");
        assert_eq!(AnomalyKey::try_from(joined(key.clone())).ok(), Some(key));
        let key = DetectorKey::new("acme", "odd\u{1f}model");
        assert_eq!(DetectorKey::try_from(joined(key.clone())).ok(), Some(key));
    }

    #[test]
    fn location_keys_read_back_with_a_value_holding_the_separator() {
        let key = LocationKey::new("acme", "endpoint", "/odd\u{1f}path");
        assert_eq!(
            joined(key.clone()),
            "acme\u{1f}endpoint\u{1f}/odd\u{1f}path"
        );
        assert_eq!(LocationKey::try_from(joined(key.clone())).ok(), Some(key));
        let key = LocationAnomalyKey::new(
            "acme",
            &Location::new("attr.feature", "a\u{1f}b"),
            "latency_p95_zscore",
        );
        assert_eq!(
            LocationAnomalyKey::try_from(joined(key.clone())).ok(),
            Some(key)
        );
        assert!(LocationKey::try_from("acme\u{1f}endpoint".to_string()).is_err());
    }

    #[test]
    fn a_key_without_its_parts_is_refused() {
        assert!(DetectorKey::try_from("acme".to_string()).is_err());
        assert!(ObjectiveKey::try_from("fast".to_string()).is_err());
        assert!(AnomalyKey::try_from("acme\u{1f}gpt-4o".to_string()).is_err());
        let error = serde_json::from_str::<BTreeMap<DetectorKey, u8>>(r#"{"acme":1}"#)
            .expect_err("no separator");
        assert!(error.to_string().contains("not a detector key"), "{error}");
    }

    proptest! {
        #[test]
        fn detector_keys_order_and_read_back_as_joined_strings(
            a in (name(), name()), b in (name(), name())
        ) {
            let (a, b) = (DetectorKey::new(&a.0, &a.1), DetectorKey::new(&b.0, &b.1));
            prop_assert_eq!(a.cmp(&b), joined(a.clone()).cmp(&joined(b.clone())));
            prop_assert_eq!(DetectorKey::try_from(joined(a.clone())).ok(), Some(a));
        }

        #[test]
        fn objective_keys_order_and_read_back_as_joined_strings(
            a in (name(), name()), b in (name(), name())
        ) {
            let (a, b) = (ObjectiveKey::new(&a.0, &a.1), ObjectiveKey::new(&b.0, &b.1));
            prop_assert_eq!(a.cmp(&b), joined(a.clone()).cmp(&joined(b.clone())));
            prop_assert_eq!(ObjectiveKey::try_from(joined(a.clone())).ok(), Some(a));
        }

        #[test]
        fn anomaly_keys_order_and_read_back_as_joined_strings(
            a in (name(), name(), name()), b in (name(), name(), name())
        ) {
            let a = AnomalyKey::new(&a.0, &a.1, &a.2);
            let b = AnomalyKey::new(&b.0, &b.1, &b.2);
            prop_assert_eq!(a.cmp(&b), joined(a.clone()).cmp(&joined(b.clone())));
            prop_assert_eq!(AnomalyKey::try_from(joined(a.clone())).ok(), Some(a));
        }

        /// Label names are fixed lowercase words, none a prefix of another; values are
        /// whatever tenants and models are called.
        #[test]
        fn alert_identities_order_as_joined_strings(
            a in proptest::collection::btree_map("alertname|model|slo|source|tenant", name(), 1..4),
            b in proptest::collection::btree_map("alertname|model|slo|source|tenant", name(), 1..4),
        ) {
            let (a, b) = (AlertIdentity(a), AlertIdentity(b));
            prop_assert_eq!(a.cmp(&b), joined(a.clone()).cmp(&joined(b.clone())));
        }
    }
}
