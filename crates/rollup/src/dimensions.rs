//! Dimension rollups: the events of one (tenant, dimension, value, minute) summed into
//! one partial, for the dimensions a deployment lists, so that a breakdown by one of
//! them merges partials instead of scanning raw events.
//!
//! The stream builds them per batch ([`DimensionBatch`]) beside the (tenant, model,
//! minute) rollups, and the store commits both with the batch's position. They are
//! bounded twice, both times exactly: a batch keeps at most `max_values_per_minute`
//! values per (tenant, dimension, minute) and puts the rest of that minute's events
//! into one overflow partial; the store does the same against the values it already
//! holds ([`StoredValues`]). So every event is in exactly one partial per dimension (its
//! value's, the missing-field group's, or the overflow), the partials of a dimension
//! add up to the events' counts and sums, and a query whose range meets an overflow for
//! its dimension answers from a scan of raw events instead: the bound never turns into
//! a wrong number. No I/O.

use std::borrow::Cow;
use std::collections::HashSet;

use ais_model::dimension::{Dimension, DimensionError};
use ais_model::time::minute_floor;
use ais_model::Event;
use serde::Deserialize;

use crate::{Bucket, Contribution, RollupPartial};

/// Values kept per (tenant, dimension, minute) unless configured.
pub const DEFAULT_MAX_VALUES_PER_MINUTE: usize = 1_000;

/// The dimensions rolled up unless configured: the low-cardinality ones a breakdown
/// asks for most. `user_id` and `session_id` are left to scans (their values are
/// mostly distinct per minute, so a rollup would be as large as the events).
pub const DEFAULT_DIMENSIONS: &[&str] = &[
    "model",
    "provider",
    "operation",
    "endpoint",
    "region",
    "status",
    "error_type",
];

/// Which dimensions are rolled up, and how many values each may keep per minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimensionRollupConfig {
    pub dimensions: Vec<Dimension>,
    pub max_values_per_minute: usize,
}

impl Default for DimensionRollupConfig {
    fn default() -> Self {
        Self {
            dimensions: DEFAULT_DIMENSIONS
                .iter()
                .filter_map(|name| Dimension::parse(name).ok())
                .collect(),
            max_values_per_minute: DEFAULT_MAX_VALUES_PER_MINUTE,
        }
    }
}

/// The `[rollups]` section of the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollupsSection {
    /// Dimension names as a breakdown writes them (`endpoint`, `attr.feature`).
    pub dimensions: Option<Vec<String>>,
    pub max_values_per_minute: Option<usize>,
}

/// A `[rollups]` section that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollupsSectionError {
    #[error("[rollups] dimensions: {0}")]
    Dimension(#[from] DimensionError),
    #[error("[rollups] dimensions: tenant is not a dimension to roll up (every rollup is per tenant already)")]
    Tenant,
    #[error("[rollups] dimensions: {0} is listed twice")]
    Twice(String),
    #[error("[rollups] max_values_per_minute must be at least 1")]
    NoValues,
}

impl RollupsSection {
    /// The configuration it describes, defaults where it is silent.
    pub fn resolve(&self) -> Result<DimensionRollupConfig, RollupsSectionError> {
        let mut config = DimensionRollupConfig::default();
        if let Some(names) = &self.dimensions {
            config.dimensions = Vec::with_capacity(names.len());
            for name in names {
                let dimension = Dimension::parse(name)?;
                if dimension == Dimension::Tenant {
                    return Err(RollupsSectionError::Tenant);
                }
                if config.dimensions.contains(&dimension) {
                    return Err(RollupsSectionError::Twice(name.clone()));
                }
                config.dimensions.push(dimension);
            }
        }
        if let Some(max) = self.max_values_per_minute {
            if max == 0 {
                return Err(RollupsSectionError::NoValues);
            }
            config.max_values_per_minute = max;
        }
        Ok(config)
    }
}

/// Which group of a dimension a partial holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DimensionValue {
    /// Events whose field has this value.
    Value(String),
    /// Events without the field (a breakdown's JSON `null` group).
    Missing,
    /// Events of values past the bound: their minute of this dimension is answered by
    /// a scan.
    Overflow,
}

impl DimensionValue {
    /// The (kind, value) columns a store keeps a group in: kind 0 with the value, 1 for
    /// the missing field and 2 for the overflow, with an empty value.
    pub fn stored(&self) -> (u8, &str) {
        match self {
            Self::Value(value) => (0, value),
            Self::Missing => (1, ""),
            Self::Overflow => (2, ""),
        }
    }

    /// The group stored as (`kind`, `value`); `None` for a kind no store writes.
    pub fn from_stored(kind: u8, value: String) -> Option<Self> {
        match kind {
            0 => Some(Self::Value(value)),
            1 => Some(Self::Missing),
            2 => Some(Self::Overflow),
            _ => None,
        }
    }
}

/// Identity of a dimension rollup partial.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DimensionKey {
    pub tenant: String,
    /// The dimension's name as a breakdown writes it (`endpoint`, `attr.feature`).
    pub dimension: String,
    /// Window start, unix ms, aligned to the minute.
    pub minute_ms: i64,
    pub value: DimensionValue,
}

/// A group while a batch is built: strings borrowed from the fetched records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Group<'r> {
    Value(Cow<'r, str>),
    Missing,
    Overflow,
}

/// A hash map keyed by strings from the records: foldhash, seeded per map, so values a
/// producer picks cannot be aimed at one bucket.
type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// The dimension partials of one batch.
///
/// Each event is read once ([`Contribution`], and its latency and TTFT buckets) and its
/// index appended to one group per dimension; the partials are built group by group at
/// the end, so the hot loop touches a small index list per dimension instead of a
/// partial's sketches. A group's sketches take its events' values counted per bucket
/// ([`QuantileSketch::add_bucket`](crate::QuantileSketch::add_bucket)): the bins, and
/// so the quantiles, of adding each value, at one logarithm per event rather than one
/// per event and dimension.
#[derive(Debug)]
pub struct DimensionBatch<'c, 'r> {
    config: &'c DimensionRollupConfig,
    /// Each event's contribution and its latency and TTFT buckets, found once for all
    /// its groups.
    events: Vec<(Contribution<'r>, [Option<Bucket>; 2])>,
    /// (tenant, dimension index, minute, group) → indices into `events`.
    groups: Map<(&'r str, usize, i64, Group<'r>), Vec<u32>>,
    /// Values (not the missing group nor the overflow) held per (tenant, dimension,
    /// minute), for the bound.
    values: Map<(&'r str, usize, i64), usize>,
}

impl<'c, 'r> DimensionBatch<'c, 'r> {
    pub fn new(config: &'c DimensionRollupConfig) -> Self {
        Self {
            config,
            events: Vec::new(),
            groups: Map::default(),
            values: Map::default(),
        }
    }

    /// Adds one event of `tenant`, as `contribution` reads it, to a group of every
    /// configured dimension.
    pub fn add(&mut self, tenant: &'r str, event: &Event<'r>, contribution: Contribution<'r>) {
        if self.config.dimensions.is_empty() {
            return;
        }
        // A batch holds far fewer than 2^32 records.
        let index = u32::try_from(self.events.len()).unwrap_or(u32::MAX);
        let buckets = contribution.buckets();
        self.events.push((contribution, buckets));
        let minute_ms = minute_floor(event.timestamp_ms);
        for (dimension_index, dimension) in self.config.dimensions.iter().enumerate() {
            let group = match value_of(dimension, event) {
                Some(value) => Group::Value(value),
                None => Group::Missing,
            };
            let key = (tenant, dimension_index, minute_ms, group);
            if let Some(indices) = self.groups.get_mut(&key) {
                indices.push(index);
                continue;
            }
            let key = match key.3 {
                Group::Value(_) => {
                    let held = self
                        .values
                        .entry((tenant, dimension_index, minute_ms))
                        .or_default();
                    if *held < self.config.max_values_per_minute {
                        *held += 1;
                        key
                    } else {
                        (tenant, dimension_index, minute_ms, Group::Overflow)
                    }
                }
                Group::Missing | Group::Overflow => key,
            };
            self.groups.entry(key).or_default().push(index);
        }
    }

    /// The partials with owned keys, in key order (store writes in a stable order).
    pub fn into_partials(self) -> Vec<(DimensionKey, RollupPartial)> {
        let names: Vec<String> = self.config.dimensions.iter().map(Dimension::name).collect();
        let events = self.events;
        // Per group, its events' latency and TTFT counted per bucket, then added to the
        // sketches a bucket at a time: one logarithm per event instead of one per event
        // and dimension. (Reused from group to group.)
        let mut counts: [Map<Bucket, u64>; 2] = Default::default();
        let mut partials: Vec<(DimensionKey, RollupPartial)> = self
            .groups
            .into_iter()
            .map(|((tenant, index, minute_ms, group), indices)| {
                let value = match group {
                    Group::Value(value) => DimensionValue::Value(value.into_owned()),
                    Group::Missing => DimensionValue::Missing,
                    Group::Overflow => DimensionValue::Overflow,
                };
                let key = DimensionKey {
                    tenant: tenant.to_string(),
                    dimension: names[index].clone(),
                    minute_ms,
                    value,
                };
                let mut partial = RollupPartial::new();
                for event in indices {
                    if let Some((event, buckets)) = events.get(event as usize) {
                        partial.add_counts(event);
                        for (counts, bucket) in counts.iter_mut().zip(buckets) {
                            if let Some(bucket) = bucket {
                                *counts.entry(*bucket).or_default() += 1;
                            }
                        }
                    }
                }
                let [latency, ttft] = &mut counts;
                for (sketch, counts) in [
                    (&mut partial.latency_ms, latency),
                    (&mut partial.ttft_ms, ttft),
                ] {
                    for (bucket, count) in counts.drain() {
                        sketch.add_bucket(bucket, count);
                    }
                }
                (key, partial)
            })
            .collect();
        partials.sort_by(|a, b| a.0.cmp(&b.0));
        partials
    }
}

/// The value of `dimension` in `event`, borrowed from the record the event was decoded
/// from (not from the event), so it can key a map that outlives the event.
fn value_of<'r>(dimension: &Dimension, event: &Event<'r>) -> Option<Cow<'r, str>> {
    match dimension {
        // Every partial is per tenant already; the config refuses it.
        Dimension::Tenant => None,
        Dimension::Status => Some(Cow::Borrowed(event.status.as_str())),
        other => other.field(event).map(|value| match value {
            Cow::Borrowed(value) => Cow::Borrowed(*value),
            Cow::Owned(value) => Cow::Owned(value.clone()),
        }),
    }
}

/// The groups a store holds for one (tenant, dimension, minute), to place a batch's
/// partials against the bound.
#[derive(Debug, Clone, Default)]
pub struct StoredValues {
    groups: HashSet<DimensionValue>,
    /// Values proper held (the missing group and the overflow do not count).
    values: usize,
}

impl StoredValues {
    /// The groups the store holds.
    pub fn new(stored: impl IntoIterator<Item = DimensionValue>) -> Self {
        let mut held = Self::default();
        for group in stored {
            held.hold(group);
        }
        held
    }

    fn hold(&mut self, group: DimensionValue) {
        if matches!(group, DimensionValue::Value(_)) && !self.groups.contains(&group) {
            self.values += 1;
        }
        self.groups.insert(group);
    }

    /// The group a batch's partial of `group` merges into (inserted if the store does
    /// not hold it yet): its own while the store holds it or the bound allows one more
    /// value, else the minute's overflow.
    pub fn place(&mut self, group: &DimensionValue, max_values: usize) -> DimensionValue {
        let target = match group {
            DimensionValue::Value(_)
                if !self.groups.contains(group) && self.values >= max_values =>
            {
                DimensionValue::Overflow
            }
            _ => group.clone(),
        };
        self.hold(target.clone());
        target
    }
}

#[cfg(test)]
mod tests;
