//! Rollup partials: the mergeable summary of the events of one (tenant, model, minute).
//!
//! A partial is built from events by the stream processor, written to the store per
//! batch, and merged again by queries, so every field is mergeable: counts and integer
//! sums add exactly in any order (cost in micro-dollars), quantiles come from a DDSketch
//! with 1% relative accuracy, unique users from a HyperLogLog. No I/O.
//!
//! [`breakdown`] groups events or partials by dimensions and ranks the groups;
//! [`dimensions`] rolls partials up per dimension value; [`usage`] keeps exact daily
//! totals per user, model, tenant and listed attribute.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::LazyLock;

use ais_model::{Event, Status};
use cardinality_estimator::CardinalityEstimator;
use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

pub mod breakdown;
pub mod dimensions;
#[cfg(test)]
mod testing;
pub mod usage;

/// Relative accuracy of latency and TTFT quantiles.
pub const QUANTILE_RELATIVE_ACCURACY: f64 = 0.01;

/// Distinct `error_type` values kept per partial; further types count under
/// [`OTHER_ERROR_TYPE`] so a producer cannot grow a partial without bound.
pub const MAX_ERROR_TYPES: usize = 32;
pub const OTHER_ERROR_TYPE: &str = "other";
/// Errors that carried no `error_type`.
pub const UNSPECIFIED_ERROR_TYPE: &str = "unspecified";

#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error("malformed rollup partial: {0}")]
    Malformed(String),
}

/// Quantiles of latency or TTFT over a set of requests; `None` when there were none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// Quantile sketch settings: 1% relative accuracy; values below 1 µs (in ms) count as
/// zero; 2,048 bins cover 1 µs to ~10^17 ms at 1%, so real latencies never collapse.
const SKETCH_MAX_BINS: u32 = 2048;
const SKETCH_MIN_VALUE_MS: f64 = 1e-3;

/// The sketches' configuration, built once: building it takes logarithms.
static SKETCH_CONFIG: LazyLock<Config> = LazyLock::new(|| {
    Config::new(
        QUANTILE_RELATIVE_ACCURACY,
        SKETCH_MAX_BINS,
        SKETCH_MIN_VALUE_MS,
    )
});

/// Where a value falls in a [`QuantileSketch`]: found once per value (a logarithm),
/// then counted into any number of sketches with [`QuantileSketch::add_bucket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Values up to 1 µs.
    Zero,
    /// The sketch's bin of this key.
    Key(i32),
}

/// A mergeable quantile sketch (DDSketch, relative accuracy
/// [`QUANTILE_RELATIVE_ACCURACY`]).
#[derive(Clone, Serialize, Deserialize)]
pub struct QuantileSketch {
    sketch: DDSketch,
}

impl std::fmt::Debug for QuantileSketch {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("QuantileSketch")
            .field("count", &self.count())
            .field("quantiles", &self.quantiles())
            .finish()
    }
}

impl Default for QuantileSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl QuantileSketch {
    pub fn new() -> Self {
        Self {
            sketch: DDSketch::new(*SKETCH_CONFIG),
        }
    }

    /// The bucket [`QuantileSketch::add`] would put `value` in; `None` for a value it
    /// ignores (negative or not finite).
    pub fn bucket_of(value: f64) -> Option<Bucket> {
        if !(value.is_finite() && value >= 0.0) {
            None
        } else if value > SKETCH_MIN_VALUE_MS {
            Some(Bucket::Key(SKETCH_CONFIG.key(value)))
        } else {
            Some(Bucket::Zero)
        }
    }

    /// Adds `count` values of `bucket` at once: the same bins as adding each value, so
    /// the same quantiles, without a logarithm per value. The minimum, maximum and
    /// mean then come from the bucket's value, within the sketch's relative accuracy
    /// of the values' own.
    pub fn add_bucket(&mut self, bucket: Bucket, count: u64) {
        let value = match bucket {
            // The bin's value, kept above the zero bucket: the lowest bin's value can
            // be below the values it holds.
            Bucket::Key(key) => SKETCH_CONFIG
                .value(key)
                .max(f64::from_bits(SKETCH_MIN_VALUE_MS.to_bits() + 1)),
            Bucket::Zero => 0.0,
        };
        if value.is_finite() {
            self.sketch.add_with_count(value, count);
        }
    }

    pub fn add(&mut self, value: f64) {
        if value.is_finite() && value >= 0.0 {
            self.sketch.add(value);
        }
    }

    pub fn merge(&mut self, other: &QuantileSketch) {
        // Both sides are built with the same config, the only way merge can fail.
        let merged = self.sketch.merge(&other.sketch);
        debug_assert!(merged.is_ok(), "sketches with different configs");
    }

    pub fn count(&self) -> u64 {
        self.sketch.count() as u64
    }

    /// The `q` quantile (0 ≤ q ≤ 1), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.sketch.quantile(q).ok().flatten()
    }

    /// Mean of the values, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        let count = self.sketch.count();
        let sum = self.sketch.sum()?;
        (count > 0).then(|| sum / count as f64)
    }

    /// How many values are at most `threshold`, by rank search over the sketch: exact
    /// when every value is on one side of the threshold, else a value within the
    /// sketch's relative accuracy (1%) of the threshold may count on either side.
    pub fn count_at_most(&self, threshold: f64) -> u64 {
        let count = self.count();
        let (Some(min), Some(max)) = (self.sketch.min(), self.sketch.max()) else {
            return 0;
        };
        if max <= threshold {
            return count;
        }
        if min > threshold || count < 2 {
            return 0;
        }
        // Ranks 0..=count-2 through their bins' values (monotone in rank); the top
        // rank is the exact maximum, above the threshold here.
        let last = count - 1;
        let value_at = |rank: u64| -> f64 {
            let q = (rank as f64 + 0.5) / last as f64;
            self.sketch
                .quantile(q.min(1.0))
                .ok()
                .flatten()
                .unwrap_or(f64::INFINITY)
        };
        // The first rank whose value exceeds the threshold is the count at or below.
        let (mut low, mut high) = (0_u64, last);
        while low < high {
            let middle = low + (high - low) / 2;
            if value_at(middle) <= threshold {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }

    pub fn quantiles(&self) -> Quantiles {
        Quantiles {
            p50: self.quantile(0.5),
            p95: self.quantile(0.95),
            p99: self.quantile(0.99),
        }
    }
}

/// HyperLogLog precision: 2^14 registers, standard error 1.04/√16384 ≈ 0.81%. Small
/// sets are kept exactly (as hashes) until they outgrow a few hundred entries.
const HLL_PRECISION: usize = 14;
const HLL_REGISTER_BITS: usize = 6;

type Hll = CardinalityEstimator<str, wyhash::WyHash, HLL_PRECISION, HLL_REGISTER_BITS>;

/// A mergeable unique counter (HyperLogLog).
#[derive(Serialize, Deserialize)]
pub struct UniqueCounter {
    estimator: Hll,
}

impl std::fmt::Debug for UniqueCounter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("UniqueCounter")
            .field("estimate", &self.estimate())
            .finish()
    }
}

impl Clone for UniqueCounter {
    fn clone(&self) -> Self {
        let mut copy = Self::new();
        copy.merge(self);
        copy
    }
}

impl Default for UniqueCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl UniqueCounter {
    pub fn new() -> Self {
        Self {
            estimator: Hll::new(),
        }
    }

    pub fn insert(&mut self, item: &str) {
        self.estimator.insert(item);
    }

    /// The hash [`UniqueCounter::insert`] takes of `item`, for
    /// [`UniqueCounter::insert_hash`]: one hash of a user for many counters.
    pub fn hash(item: &str) -> u64 {
        BuildHasherDefault::<wyhash::WyHash>::default().hash_one(item)
    }

    /// Inserts an item by its [`UniqueCounter::hash`].
    pub fn insert_hash(&mut self, hash: u64) {
        self.estimator.insert_hash(hash);
    }

    pub fn merge(&mut self, other: &UniqueCounter) {
        self.estimator.merge(&other.estimator);
    }

    pub fn estimate(&self) -> u64 {
        self.estimator.estimate() as u64
    }
}

/// The summary of one (tenant, model, minute) over some set of events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollupPartial {
    pub requests: u64,
    pub errors: u64,
    pub errors_by_type: BTreeMap<String, u64>,
    pub latency_ms: QuantileSketch,
    pub ttft_ms: QuantileSketch,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cost_micros: u64,
    pub users: UniqueCounter,
    /// Events that arrived after their window was final (corrections).
    pub late_events: u64,
}

impl Default for RollupPartial {
    fn default() -> Self {
        Self::new()
    }
}

/// The event fields [`RollupPartial::add`] reads, by the names the API and the
/// raw-event columns give them: a read that decodes only some columns for partials
/// decodes these. (A test fails when `add` reads a field this list lacks.)
pub const PARTIAL_FIELDS: &[&str] = &[
    "status",
    "error_type",
    "latency_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cost_usd",
    "user_id",
];

/// What a partial reads of one event, read once: its string borrowed from the record
/// (`'r`), the user id already hashed. The stream adds each event to its model's partial
/// and to one partial per rolled-up dimension from the same contribution, so it is kept
/// small (a batch holds one per event): the rare error's type out of line, absent
/// values as flags.
#[derive(Debug, Clone)]
pub struct Contribution<'r> {
    /// `None` for a success; a failure's type, `None` when it gave none.
    error: Option<Box<Option<Cow<'r, str>>>>,
    latency_ms: f64,
    /// Meaningful only with [`Contribution::HAS_TTFT`].
    ttft_ms: f64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_input_tokens: u64,
    cost_micros: u64,
    /// Meaningful only with [`Contribution::HAS_USER`].
    user_hash: u64,
    flags: u8,
}

impl<'r> Contribution<'r> {
    const HAS_TTFT: u8 = 1;
    const HAS_USER: u8 = 2;
    const LATE: u8 = 4;

    /// The sketch buckets of its latency and TTFT (`None` where the sketch takes no
    /// value).
    pub fn buckets(&self) -> [Option<Bucket>; 2] {
        let ttft = if self.flags & Self::HAS_TTFT != 0 {
            QuantileSketch::bucket_of(self.ttft_ms)
        } else {
            None
        };
        [QuantileSketch::bucket_of(self.latency_ms), ttft]
    }

    /// `late` marks an event whose window was already final.
    pub fn of(event: &Event<'r>, late: bool) -> Self {
        let error = (event.status == Status::Error).then(|| {
            Box::new(event.error_type.as_ref().map(|text| match text {
                Cow::Borrowed(text) => Cow::Borrowed(*text),
                Cow::Owned(text) => Cow::Owned(text.clone()),
            }))
        });
        let mut flags = 0;
        if event.ttft_ms.is_some() {
            flags |= Self::HAS_TTFT;
        }
        if event.user_id.is_some() {
            flags |= Self::HAS_USER;
        }
        if late {
            flags |= Self::LATE;
        }
        Self {
            error,
            latency_ms: event.latency_ms,
            ttft_ms: event.ttft_ms.unwrap_or(0.0),
            input_tokens: event.input_tokens.unwrap_or(0),
            output_tokens: event.output_tokens.unwrap_or(0),
            cache_read_input_tokens: event.cache_read_input_tokens.unwrap_or(0),
            cost_micros: event.cost_micros.unwrap_or(0),
            user_hash: event.user_id.as_deref().map_or(0, UniqueCounter::hash),
            flags,
        }
    }
}

/// Version byte of the stored form of a partial.
const PARTIAL_VERSION: u8 = 1;

impl RollupPartial {
    pub fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            errors_by_type: BTreeMap::new(),
            latency_ms: QuantileSketch::new(),
            ttft_ms: QuantileSketch::new(),
            input_tokens: 0,
            output_tokens: 0,
            cache_read_input_tokens: 0,
            cost_micros: 0,
            users: UniqueCounter::new(),
            late_events: 0,
        }
    }

    /// Adds one event; `late` marks an event whose window was already final.
    pub fn add(&mut self, event: &Event<'_>, late: bool) {
        self.add_contribution(&Contribution::of(event, late));
    }

    /// Adds one event as read once by [`Contribution::of`]: the way to add the same
    /// event to several partials.
    pub fn add_contribution(&mut self, event: &Contribution<'_>) {
        self.add_counts(event);
        self.latency_ms.add(event.latency_ms);
        if event.flags & Contribution::HAS_TTFT != 0 {
            self.ttft_ms.add(event.ttft_ms);
        }
    }

    /// Adds everything of one event but its latency and TTFT, which the caller adds to
    /// the sketches itself (by [`Contribution::buckets`], counted per bucket).
    pub fn add_counts(&mut self, event: &Contribution<'_>) {
        self.requests += 1;
        if let Some(error_type) = &event.error {
            self.errors += 1;
            let error_type = error_type.as_deref().unwrap_or(UNSPECIFIED_ERROR_TYPE);
            self.count_error_type(error_type, 1);
        }
        // Saturating: a hostile producer can send u64::MAX tokens; sums stop there
        // rather than wrap.
        self.input_tokens = self.input_tokens.saturating_add(event.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(event.output_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(event.cache_read_input_tokens);
        self.cost_micros = self.cost_micros.saturating_add(event.cost_micros);
        if event.flags & Contribution::HAS_USER != 0 {
            self.users.insert_hash(event.user_hash);
        }
        if event.flags & Contribution::LATE != 0 {
            self.late_events += 1;
        }
    }

    fn count_error_type(&mut self, error_type: &str, count: u64) {
        if let Some(existing) = self.errors_by_type.get_mut(error_type) {
            *existing += count;
            return;
        }
        let key = if self.errors_by_type.len() < MAX_ERROR_TYPES {
            error_type
        } else {
            OTHER_ERROR_TYPE
        };
        *self.errors_by_type.entry(key.to_string()).or_default() += count;
    }

    /// Merges another partial of the same or another window into this one.
    pub fn merge(&mut self, other: &RollupPartial) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (error_type, count) in &other.errors_by_type {
            self.count_error_type(error_type, *count);
        }
        self.latency_ms.merge(&other.latency_ms);
        self.ttft_ms.merge(&other.ttft_ms);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(other.cache_read_input_tokens);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
        self.users.merge(&other.users);
        self.late_events += other.late_events;
    }

    /// Versioned binary form for the store: a version byte, then postcard.
    pub fn to_bytes(&self) -> Vec<u8> {
        let bytes = vec![PARTIAL_VERSION];
        match postcard::to_extend(self, bytes) {
            Ok(encoded) => encoded,
            // Numbers, maps and sized sequences always encode; keep the version byte
            // alone so a reader reports it as malformed rather than guessing.
            Err(_) => vec![PARTIAL_VERSION],
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RollupError> {
        let (&version, rest) = bytes
            .split_first()
            .ok_or_else(|| RollupError::Malformed("empty".to_string()))?;
        if version != PARTIAL_VERSION {
            return Err(RollupError::Malformed(format!("unknown version {version}")));
        }
        let (partial, trailing): (Self, &[u8]) = postcard::take_from_bytes(rest)
            .map_err(|error| RollupError::Malformed(error.to_string()))?;
        if !trailing.is_empty() {
            return Err(RollupError::Malformed(format!(
                "{} trailing bytes",
                trailing.len()
            )));
        }
        Ok(partial)
    }

    pub fn latency_quantiles(&self) -> Quantiles {
        self.latency_ms.quantiles()
    }

    pub fn ttft_quantiles(&self) -> Quantiles {
        self.ttft_ms.quantiles()
    }

    pub fn unique_users(&self) -> u64 {
        self.users.estimate()
    }

    /// errors / requests, `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use ais_model::EventId;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    proptest! {
        /// Partials built from events holding only [`PARTIAL_FIELDS`] equal partials of
        /// the whole events: a projected read loses nothing a partial reads.
        #[test]
        fn a_partial_reads_only_the_fields_it_lists(seeds in proptest::collection::vec(any::<u64>(), 1..50)) {
            let mut whole = RollupPartial::new();
            let mut projected = RollupPartial::new();
            for seed in seeds {
                let event = crate::testing::full_event(seed);
                whole.add(&event, false);
                projected.add(&crate::testing::keep_only(&event, PARTIAL_FIELDS), false);
            }
            prop_assert_eq!(crate::testing::metrics(&whole), crate::testing::metrics(&projected));
        }
    }

    #[test]
    fn a_user_inserted_by_its_hash_counts_as_inserted_by_name() {
        // Sizes in each of the estimator's representations (inline, array, registers).
        for users in [1, 2, 50, 3_000] {
            let mut by_name = UniqueCounter::new();
            let mut by_hash = UniqueCounter::new();
            for user in (0..users * 2).map(|n| format!("user-{}", n % users)) {
                by_name.insert(&user);
                by_hash.insert_hash(UniqueCounter::hash(&user));
            }
            assert_eq!(by_name.estimate(), by_hash.estimate(), "{users} users");
            // The same hashes: merged, they count the same users once.
            let mut merged = by_name.clone();
            merged.merge(&by_hash);
            assert_eq!(
                merged.estimate(),
                by_name.estimate(),
                "{users} users merged"
            );
        }
    }

    #[test]
    fn count_at_most_is_exact_away_from_the_threshold() {
        let mut sketch = QuantileSketch::new();
        for value in [100.0, 200.0, 300.0, 5_000.0, 6_000.0] {
            sketch.add(value);
        }
        assert_eq!(sketch.count_at_most(2_000.0), 3);
        assert_eq!(sketch.count_at_most(50.0), 0);
        assert_eq!(sketch.count_at_most(6_000.0), 5);
        assert_eq!(sketch.count_at_most(10_000.0), 5);
        assert_eq!(QuantileSketch::new().count_at_most(1.0), 0);
    }

    proptest! {
        #[test]
        fn count_at_most_errs_only_within_the_relative_accuracy(
            values in proptest::collection::vec(0.5f64..100_000.0, 1..400),
            threshold in 1.0f64..50_000.0,
        ) {
            let mut sketch = QuantileSketch::new();
            for value in &values {
                sketch.add(*value);
            }
            // Slightly wider than 1% for floating-point rounding at bin edges.
            let band = QUANTILE_RELATIVE_ACCURACY * 1.05;
            let surely_below = values.iter().filter(|v| **v <= threshold * (1.0 - band)).count() as u64;
            let maybe_below = values.iter().filter(|v| **v <= threshold * (1.0 + band)).count() as u64;
            let counted = sketch.count_at_most(threshold);
            prop_assert!(surely_below <= counted && counted <= maybe_below,
                "{surely_below} <= {counted} <= {maybe_below}");
        }
    }

    fn event(latency: f64, user: Option<String>, failed: bool, cost: u64) -> Event<'static> {
        Event {
            ttft_ms: Some(latency / 4.0),
            input_tokens: Some(3),
            output_tokens: Some(5),
            cost_micros: Some(cost),
            status: if failed { Status::Error } else { Status::Ok },
            error_type: failed.then_some(Cow::Borrowed("timeout")),
            user_id: user.map(Cow::Owned),
            ..Event::new("m", EventId::Generated(0), 0, latency)
        }
    }

    /// The value DDSketch's rank definition points at: sorted[floor(q·(n−1))].
    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64) as usize]
    }

    proptest! {
        #[test]
        fn quantiles_are_within_one_percent(
            seed in any::<u64>(),
            count in 1usize..5_000,
            sigma in 0.1f64..3.0,
        ) {
            // Log-normal latencies: heavy-tailed like real ones.
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut values: Vec<f64> = (0..count)
                .map(|_| {
                    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
                    let u2: f64 = rng.random_range(0.0..1.0);
                    let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                    200.0 * (sigma * normal).exp()
                })
                .collect();
            let mut sketch = QuantileSketch::new();
            for value in &values {
                sketch.add(*value);
            }
            values.sort_by(f64::total_cmp);
            for q in [0.5, 0.9, 0.95, 0.99] {
                let exact = exact_quantile(&values, q);
                let estimate = sketch.quantile(q).expect("non-empty");
                prop_assert!(
                    (estimate - exact).abs() <= QUANTILE_RELATIVE_ACCURACY * exact * (1.0 + 1e-9),
                    "q={} exact={} estimate={}", q, exact, estimate
                );
            }
        }

        #[test]
        fn merged_partials_equal_the_partial_of_all_events(
            seed in any::<u64>(),
            count in 1usize..2_000,
            split in 0usize..2_000,
        ) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let events: Vec<Event<'static>> = (0..count)
                .map(|_| {
                    event(
                        rng.random_range(1.0..10_000.0),
                        rng.random_bool(0.8).then(|| format!("u{}", rng.random_range(0..300))),
                        rng.random_bool(0.1),
                        rng.random_range(0..1_000_000),
                    )
                })
                .collect();
            let split = split.min(count);
            let mut whole = RollupPartial::new();
            let mut left = RollupPartial::new();
            let mut right = RollupPartial::new();
            for (index, event) in events.iter().enumerate() {
                whole.add(event, false);
                if index < split { left.add(event, index % 7 == 0) } else { right.add(event, index % 7 == 0) }
            }
            // Merge in the other order too: sums must not depend on it.
            let mut merged = right.clone();
            merged.merge(&left);
            prop_assert_eq!(merged.requests, whole.requests);
            prop_assert_eq!(merged.errors, whole.errors);
            prop_assert_eq!(&merged.errors_by_type, &whole.errors_by_type);
            prop_assert_eq!(merged.cost_micros, events.iter().map(|e| e.cost_micros.unwrap_or(0)).sum::<u64>());
            prop_assert_eq!(merged.input_tokens, whole.input_tokens);
            prop_assert_eq!(merged.late_events, (0..count).filter(|i| i % 7 == 0).count() as u64);
            prop_assert_eq!(merged.unique_users(), whole.unique_users());
            prop_assert_eq!(merged.latency_quantiles(), whole.latency_quantiles());
            prop_assert_eq!(merged.ttft_quantiles(), whole.ttft_quantiles());
            // And the stored form keeps all of it.
            let restored = RollupPartial::from_bytes(&merged.to_bytes()).expect("round trip");
            prop_assert_eq!(restored.requests, merged.requests);
            prop_assert_eq!(restored.unique_users(), merged.unique_users());
            prop_assert_eq!(restored.latency_quantiles(), merged.latency_quantiles());
            prop_assert_eq!(&restored.errors_by_type, &merged.errors_by_type);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = RollupPartial::from_bytes(&bytes);
        }
    }

    #[test]
    fn unique_users_are_within_three_standard_errors() {
        let standard_error = 1.04 / f64::from(1u32 << HLL_PRECISION).sqrt();
        for distinct in [100u64, 10_000, 100_000, 1_000_000] {
            let mut counter = UniqueCounter::new();
            for user in 0..distinct {
                counter.insert(&format!("user-{user}"));
                // Repeats do not count.
                if user % 3 == 0 {
                    counter.insert(&format!("user-{user}"));
                }
            }
            let relative = (counter.estimate() as f64 - distinct as f64).abs() / distinct as f64;
            assert!(
                relative <= 3.0 * standard_error,
                "{distinct} distinct: estimate {} ({:.3}% off)",
                counter.estimate(),
                relative * 100.0
            );
        }
    }

    #[test]
    fn error_types_are_bounded() {
        let mut partial = RollupPartial::new();
        for kind in 0..(MAX_ERROR_TYPES + 10) {
            let mut failed = event(1.0, None, true, 0);
            failed.error_type = Some(Cow::Owned(format!("kind-{kind}")));
            partial.add(&failed, false);
        }
        partial.add(&event(1.0, None, false, 0), false);
        assert_eq!(partial.errors_by_type.len(), MAX_ERROR_TYPES + 1);
        assert_eq!(partial.errors_by_type.get(OTHER_ERROR_TYPE), Some(&10));
        assert_eq!(partial.errors, (MAX_ERROR_TYPES + 10) as u64);
        assert_eq!(partial.requests, (MAX_ERROR_TYPES + 11) as u64);
        let mut untyped = event(1.0, None, true, 0);
        untyped.error_type = None;
        let mut other = RollupPartial::new();
        other.add(&untyped, false);
        assert_eq!(other.errors_by_type.get(UNSPECIFIED_ERROR_TYPE), Some(&1));
    }

    #[test]
    fn empty_partials_have_no_quantiles_and_no_error_rate() {
        let partial = RollupPartial::new();
        assert_eq!(
            partial.latency_quantiles(),
            Quantiles {
                p50: None,
                p95: None,
                p99: None
            }
        );
        assert_eq!(partial.error_rate(), None);
        assert_eq!(partial.unique_users(), 0);
        assert!(RollupPartial::from_bytes(&[]).is_err());
        assert!(RollupPartial::from_bytes(&[9, 0]).is_err());
    }
}
