//! Breakdowns: events grouped by one or two dimensions into rollup partials, then
//! ranked into the top groups, the rest (`other`) and the total.
//!
//! A [`Grouper`] takes events one at a time (a scan of raw events) or partials that are
//! already grouped (dimension rollups), keeps one [`RollupPartial`] per group and one
//! for the total, and is bounded: past `max_groups` distinct groups it refuses, and
//! the caller answers that the limit was reached rather than a partial answer. Groupers
//! of parts of the data (files, row groups) merge. [`Grouper::rank`] orders the groups
//! by any numeric field of the metric block ([`OrderBy`]), ties broken by key, and
//! merges everything past the top N into `other`. Counts and sums are exact, so the
//! groups and `other` add up to the total exactly; quantiles and unique users come from
//! the same sketches as every other answer.
//!
//! A grouper may also split its range into steps ([`Grouper::with_steps`], the scan
//! path of `/v1/query/timeseries?by=`): each (step, group) pair is then one partial and
//! counts once toward the bound, and [`Grouper::rank_series`] ranks the groups by their
//! total over the range and answers each top group's partial per step, the rest merged
//! per step into `other`.
//!
//! A columnar scan (no steps) feeds [`NumberedGroups`] instead: it numbers each group
//! once per distinct value it reads and adds events by number, and gets the grouper
//! adding the same events one by one would have built. No I/O.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use ais_model::dimension::{Dimension, Filters};
use ais_model::Event;
use hashbrown::Equivalent;

use crate::{
    QuantileSketch, RollupPartial, UniqueCounter, MAX_ERROR_TYPES, OTHER_ERROR_TYPE,
    PARTIAL_FIELDS, UNSPECIFIED_ERROR_TYPE,
};

/// A group's key: the value of each `by` dimension, `None` where the event lacks it.
pub type GroupKey = Vec<Option<String>>;

/// Micro-dollars per dollar (cost is ordered in dollars, as the API shows it).
const MICROS_PER_USD: f64 = 1_000_000.0;

/// A numeric field of the metric block, as `order=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderBy {
    Requests,
    Errors,
    ErrorRate,
    LatencyP50,
    LatencyP95,
    LatencyP99,
    TtftP50,
    TtftP95,
    TtftP99,
    InputTokens,
    OutputTokens,
    CacheReadInputTokens,
    CostUsd,
    UniqueUsers,
}

/// Every `order=` name, as the metric block spells its fields.
pub const ORDER_NAMES: &[(&str, OrderBy)] = &[
    ("requests", OrderBy::Requests),
    ("errors", OrderBy::Errors),
    ("error_rate", OrderBy::ErrorRate),
    ("latency_ms.p50", OrderBy::LatencyP50),
    ("latency_ms.p95", OrderBy::LatencyP95),
    ("latency_ms.p99", OrderBy::LatencyP99),
    ("ttft_ms.p50", OrderBy::TtftP50),
    ("ttft_ms.p95", OrderBy::TtftP95),
    ("ttft_ms.p99", OrderBy::TtftP99),
    ("input_tokens", OrderBy::InputTokens),
    ("output_tokens", OrderBy::OutputTokens),
    ("cache_read_input_tokens", OrderBy::CacheReadInputTokens),
    ("cost_usd", OrderBy::CostUsd),
    ("unique_users", OrderBy::UniqueUsers),
];

impl OrderBy {
    pub fn parse(text: &str) -> Option<Self> {
        ORDER_NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, order)| *order)
    }

    pub fn name(self) -> &'static str {
        ORDER_NAMES
            .iter()
            .find(|(_, order)| *order == self)
            .map_or("requests", |(name, _)| *name)
    }

    /// The field's value in `partial`; `None` for a ratio or quantile without data.
    pub fn value(self, partial: &RollupPartial) -> Option<f64> {
        match self {
            Self::Requests => Some(partial.requests as f64),
            Self::Errors => Some(partial.errors as f64),
            Self::ErrorRate => partial.error_rate(),
            Self::LatencyP50 => partial.latency_quantiles().p50,
            Self::LatencyP95 => partial.latency_quantiles().p95,
            Self::LatencyP99 => partial.latency_quantiles().p99,
            Self::TtftP50 => partial.ttft_quantiles().p50,
            Self::TtftP95 => partial.ttft_quantiles().p95,
            Self::TtftP99 => partial.ttft_quantiles().p99,
            Self::InputTokens => Some(partial.input_tokens as f64),
            Self::OutputTokens => Some(partial.output_tokens as f64),
            Self::CacheReadInputTokens => Some(partial.cache_read_input_tokens as f64),
            Self::CostUsd => Some(partial.cost_micros as f64 / MICROS_PER_USD),
            Self::UniqueUsers => Some(partial.unique_users() as f64),
        }
    }
}

/// More distinct groups than the grouper may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {} has more than {max_groups} groups{}; narrow it with filters or a shorter range{}",
    if *per_step { "timeseries" } else { "breakdown" },
    if *per_step { " (one per value and step)" } else { "" },
    if *per_step { ", or use a larger step" } else { "" }
)]
pub struct TooManyGroups {
    pub max_groups: usize,
    /// The grouper splits its range into steps: each step of a group counts.
    pub per_step: bool,
}

/// How a grouper splits its range `[from_ms, to_ms)` into steps of `step_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_ms: i64,
}

impl Steps {
    /// Steps in the range, the last one possibly cut short by `to_ms`.
    pub fn count(&self) -> usize {
        if self.to_ms <= self.from_ms {
            return 0;
        }
        let span = i128::from(self.to_ms) - i128::from(self.from_ms);
        let step = i128::from(self.step_ms.max(1));
        usize::try_from((span + step - 1) / step).unwrap_or(usize::MAX)
    }

    /// The step holding `timestamp_ms`; `None` outside the range.
    pub fn index(&self, timestamp_ms: i64) -> Option<usize> {
        if timestamp_ms < self.from_ms || timestamp_ms >= self.to_ms {
            return None;
        }
        let offset = i128::from(timestamp_ms) - i128::from(self.from_ms);
        usize::try_from(offset / i128::from(self.step_ms.max(1))).ok()
    }

    /// Where step `index` starts.
    pub fn start_ms(&self, index: usize) -> i64 {
        let offset = i64::try_from(index)
            .unwrap_or(i64::MAX)
            .saturating_mul(self.step_ms);
        self.from_ms.saturating_add(offset)
    }
}

/// A group's partial per step index, only the steps with events: sparse, so memory stays
/// within the grouper's bound however many steps the range has.
pub type StepPartials = BTreeMap<usize, RollupPartial>;

/// Partials per group (and step, if the grouper has [`Steps`]), and of everything
/// added.
#[derive(Debug, Clone)]
pub struct Grouper {
    by: Vec<Dimension>,
    filters: Filters,
    max_groups: usize,
    steps: Option<Steps>,
    /// Keyed by (step, group); the step is always 0 without [`Steps`]. Looked up by
    /// the event's borrowed values ([`BorrowedKey`]), so an event of a group already
    /// held allocates nothing; SipHash as std's maps, since the values are the
    /// producers'.
    groups: hashbrown::HashMap<(usize, GroupKey), RollupPartial, RandomState>,
    total: RollupPartial,
}

/// A (step, group) key as an event holds it: each dimension's value borrowed. It
/// hashes as the owned key does (a tuple, then a slice of options of strings, hash
/// field by field the same way whether the strings are owned or borrowed), so the map
/// finds the owned key by it.
#[derive(Hash)]
struct BorrowedKey<'a>(usize, &'a [Option<&'a str>]);

impl Equivalent<(usize, GroupKey)> for BorrowedKey<'_> {
    fn equivalent(&self, (step, key): &(usize, GroupKey)) -> bool {
        self.0 == *step
            && self.1.len() == key.len()
            && self
                .1
                .iter()
                .zip(key)
                .all(|(value, held)| *value == held.as_deref())
    }
}

impl From<&BorrowedKey<'_>> for (usize, GroupKey) {
    fn from(key: &BorrowedKey<'_>) -> Self {
        (
            key.0,
            key.1
                .iter()
                .map(|value| value.map(str::to_string))
                .collect(),
        )
    }
}

/// A ranked timeseries breakdown.
#[derive(Debug, Clone)]
pub struct RankedSeries {
    /// The top groups, in order, each with its partial per step.
    pub groups: Vec<(GroupKey, StepPartials)>,
    /// Every group past the top merged per step; `None` when there are none.
    pub other: Option<StepPartials>,
}

/// A ranked breakdown.
#[derive(Debug, Clone)]
pub struct Ranked {
    /// The top groups, in order.
    pub groups: Vec<(GroupKey, RollupPartial)>,
    /// Every group past the top, merged; `None` when there are none.
    pub other: Option<RollupPartial>,
    /// Everything that passed the filters.
    pub total: RollupPartial,
}

impl Grouper {
    /// Groups by `by` (one or two dimensions) the events that pass `filters`, holding at
    /// most `max_groups` groups.
    pub fn new(by: Vec<Dimension>, filters: Filters, max_groups: usize) -> Self {
        Self {
            by,
            filters,
            max_groups,
            steps: None,
            groups: hashbrown::HashMap::with_hasher(RandomState::new()),
            total: RollupPartial::new(),
        }
    }

    /// Splits the range into `steps` as well: events outside it are left out, and each
    /// step of each group is one partial (and one toward the bound).
    pub fn with_steps(mut self, steps: Steps) -> Self {
        debug_assert!(steps.step_ms > 0, "a step is positive");
        debug_assert!(self.groups.is_empty(), "steps are set before events come");
        self.steps = Some(steps);
        self
    }

    /// The event fields (by their API and raw-event column names) this grouper reads:
    /// its partials', its dimensions' and its filters', and the time with steps. A scan
    /// decodes these columns and no others.
    pub fn fields_read(&self) -> BTreeSet<&'static str> {
        let mut fields: BTreeSet<&'static str> = PARTIAL_FIELDS.iter().copied().collect();
        let dimensions = self
            .by
            .iter()
            .chain(self.filters.0.iter().map(|filter| &filter.dimension));
        fields.extend(dimensions.map(Dimension::field_name));
        if self.steps.is_some() {
            fields.insert("timestamp");
        }
        fields
    }

    /// An empty [`NumberedGroups`] with this grouper's dimensions, filters and bound,
    /// for a columnar scan; `None` with steps, which it does not split by.
    pub fn numbered(&self) -> Option<NumberedGroups> {
        if self.steps.is_some() || !self.groups.is_empty() {
            return None;
        }
        Some(NumberedGroups {
            by: self.by.clone(),
            filters: self.filters.clone(),
            max_groups: self.max_groups,
            user_key: self
                .by
                .iter()
                .position(|dimension| *dimension == Dimension::UserId),
            numbers: hashbrown::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            keys: Vec::new(),
            groups: Vec::new(),
            total: RollupPartial::new(),
        })
    }

    /// Adds one event of `tenant`, if it passes the filters (and is in the steps' range).
    pub fn add_event(&mut self, tenant: &str, event: &Event<'_>) -> Result<(), TooManyGroups> {
        if !self.filters.matches(tenant, event) {
            return Ok(());
        }
        let step = match self.steps {
            None => 0,
            Some(steps) => match steps.index(event.timestamp_ms) {
                Some(step) => step,
                None => return Ok(()),
            },
        };
        // Up to two dimensions (the API's bound) on the stack; more on the heap.
        let mut inline = [None; 2];
        let spilled: Vec<Option<&str>>;
        let values: &[Option<&str>] = if self.by.len() <= inline.len() {
            for (slot, dimension) in inline.iter_mut().zip(&self.by) {
                *slot = dimension.value(tenant, event);
            }
            &inline[..self.by.len()]
        } else {
            spilled = self
                .by
                .iter()
                .map(|dimension| dimension.value(tenant, event))
                .collect();
            &spilled
        };
        let key = BorrowedKey(step, values);
        let full = self.groups.len() >= self.max_groups;
        let too_many = self.too_many();
        match self.groups.get_mut(&key) {
            Some(partial) => partial.add(event, false),
            None if full => return Err(too_many),
            None => {
                let mut partial = RollupPartial::new();
                partial.add(event, false);
                self.groups.insert((&key).into(), partial);
            }
        }
        self.total.add(event, false);
        Ok(())
    }

    /// Adds a partial already grouped under `key` (a dimension rollup), which the caller
    /// has already filtered. Partials carry no time here: for groupers without steps.
    pub fn add_partial(
        &mut self,
        key: GroupKey,
        partial: &RollupPartial,
    ) -> Result<(), TooManyGroups> {
        debug_assert_eq!(key.len(), self.by.len(), "a key per dimension");
        debug_assert!(self.steps.is_none(), "a partial has no step");
        self.group_mut(0, key)?.merge(partial);
        self.total.merge(partial);
        Ok(())
    }

    /// Merges a grouper of another part of the same data (with the same steps).
    pub fn merge(&mut self, other: Grouper) -> Result<(), TooManyGroups> {
        debug_assert_eq!(self.steps, other.steps, "parts of the same query");
        let too_many = self.too_many();
        for ((step, key), partial) in other.groups {
            let full = self.groups.len() >= self.max_groups;
            match self.groups.entry((step, key)) {
                hashbrown::hash_map::Entry::Occupied(mut entry) => entry.get_mut().merge(&partial),
                hashbrown::hash_map::Entry::Vacant(_) if full => return Err(too_many),
                // A group only the other part has: its partial as it is.
                hashbrown::hash_map::Entry::Vacant(entry) => {
                    entry.insert(partial);
                }
            }
        }
        self.total.merge(&other.total);
        Ok(())
    }

    /// Partials held so far: distinct groups, or (step, group) pairs with steps.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn group_mut(
        &mut self,
        step: usize,
        key: GroupKey,
    ) -> Result<&mut RollupPartial, TooManyGroups> {
        let full = self.groups.len() >= self.max_groups;
        let too_many = self.too_many();
        match self.groups.entry((step, key)) {
            hashbrown::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            hashbrown::hash_map::Entry::Vacant(_) if full => Err(too_many),
            hashbrown::hash_map::Entry::Vacant(entry) => Ok(entry.insert(RollupPartial::new())),
        }
    }

    fn too_many(&self) -> TooManyGroups {
        TooManyGroups {
            max_groups: self.max_groups,
            per_step: self.steps.is_some(),
        }
    }

    /// The top `top` groups by `order` (descending unless `ascending`; groups without a
    /// value for it last either way; ties by key), the rest merged into `other`. With
    /// steps, a group's partial is its merge over every step.
    pub fn rank(self, order: OrderBy, ascending: bool, top: usize) -> Ranked {
        let mut whole: HashMap<GroupKey, RollupPartial> = HashMap::new();
        for ((_, key), partial) in self.groups {
            match whole.entry(key) {
                std::collections::hash_map::Entry::Occupied(mut entry) => {
                    entry.get_mut().merge(&partial)
                }
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(partial);
                }
            }
        }
        let mut ranked: Vec<(Option<f64>, GroupKey, RollupPartial)> = whole
            .into_iter()
            .map(|(key, partial)| (order.value(&partial), key, partial))
            .collect();
        sort_ranked(&mut ranked, ascending);
        let rest = ranked.split_off(top.min(ranked.len()));
        let other = (!rest.is_empty()).then(|| {
            let mut merged = RollupPartial::new();
            for (_, _, partial) in &rest {
                merged.merge(partial);
            }
            merged
        });
        Ranked {
            groups: ranked
                .into_iter()
                .map(|(_, key, partial)| (key, partial))
                .collect(),
            other,
            total: self.total,
        }
    }

    /// The top `top` groups by `order` of their total over the range (descending,
    /// groups without a value last, ties by key), each with its partial per step, and
    /// the rest merged per step into `other`. A grouper without steps has only step 0.
    /// Counts and sums of the top groups and `other` add up to every step's total.
    pub fn rank_series(self, order: OrderBy, top: usize) -> RankedSeries {
        let mut per_group: HashMap<GroupKey, StepPartials> = HashMap::new();
        for ((step, key), partial) in self.groups {
            per_group.entry(key).or_default().insert(step, partial);
        }
        let mut ranked: Vec<(Option<f64>, GroupKey, StepPartials)> = per_group
            .into_iter()
            .map(|(key, slots)| {
                let mut over_range = RollupPartial::new();
                for partial in slots.values() {
                    over_range.merge(partial);
                }
                (order.value(&over_range), key, slots)
            })
            .collect();
        sort_ranked(&mut ranked, false);
        let rest = ranked.split_off(top.min(ranked.len()));
        let other = (!rest.is_empty()).then(|| {
            let mut merged = StepPartials::new();
            for (_, _, slots) in rest {
                for (step, partial) in slots {
                    match merged.entry(step) {
                        std::collections::btree_map::Entry::Occupied(mut entry) => {
                            entry.get_mut().merge(&partial)
                        }
                        std::collections::btree_map::Entry::Vacant(entry) => {
                            entry.insert(partial);
                        }
                    }
                }
            }
            merged
        });
        RankedSeries {
            groups: ranked
                .into_iter()
                .map(|(_, key, slots)| (key, slots))
                .collect(),
            other,
        }
    }
}

/// Orders ranked groups by value (descending unless `ascending`; groups without a
/// value last either way), ties by key, so every answer lists the same groups.
fn sort_ranked<T>(ranked: &mut [(Option<f64>, GroupKey, T)], ascending: bool) {
    ranked.sort_by(|(left_value, left_key, _), (right_value, right_key, _)| {
        let by_value = match (left_value, right_value) {
            (Some(left), Some(right)) if ascending => left.total_cmp(right),
            (Some(left), Some(right)) => right.total_cmp(left),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_value.then_with(|| left_key.cmp(right_key))
    });
}

/// Values a group of [`NumberedGroups`] holds before it builds its sketches: a group
/// that never gets more events than this builds them once, at the end, one group at a
/// time; a larger one adds them in runs of this many. The buffer (16 bytes a value)
/// stays below what the two sketches it defers take (a DDSketch allocates 128 bins of
/// 8 bytes at its first value).
pub const PENDING_VALUES: usize = 32;

/// What a partial reads of one event, as a columnar scan reads it: the error type and
/// the user already looked up (the scan finds them once per distinct value, not once
/// per event).
#[derive(Debug, Clone, Copy)]
pub struct ScannedEvent<'a> {
    /// `None` for a success; a failure's type, `None` when it gave none.
    pub error: Option<Option<&'a str>>,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cost_micros: u64,
    /// The user's [`UniqueCounter::hash`](crate::UniqueCounter::hash), `None` without a user.
    pub user_hash: Option<u64>,
}

/// One group of [`NumberedGroups`]: counts and sums as a partial keeps them, its
/// latency and TTFT values held back until there are [`PENDING_VALUES`], then added to
/// its sketches in the order they came (so the sketches are the ones adding each value
/// at once would build).
#[derive(Debug, Default)]
struct NumberedGroup {
    requests: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_input_tokens: u64,
    cost_micros: u64,
    errors_by_type: BTreeMap<String, u64>,
    /// (latency, TTFT) per event not yet in the sketches; TTFT NaN when the event had
    /// none (a sketch ignores a value that is not finite, as it does for a missing one).
    pending: Vec<(f64, f64)>,
    sketches: Option<Box<(QuantileSketch, QuantileSketch)>>,
    /// Unused when the key holds the user (its one user is known from the key).
    users: UniqueCounter,
}

impl NumberedGroup {
    fn add(&mut self, event: &ScannedEvent<'_>, count_users: bool) {
        self.requests += 1;
        if let Some(error_type) = event.error {
            self.errors += 1;
            count_error_type(
                &mut self.errors_by_type,
                error_type.unwrap_or(UNSPECIFIED_ERROR_TYPE),
            );
        }
        self.input_tokens = self.input_tokens.saturating_add(event.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(event.output_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(event.cache_read_input_tokens);
        self.cost_micros = self.cost_micros.saturating_add(event.cost_micros);
        if count_users {
            if let Some(hash) = event.user_hash {
                self.users.insert_hash(hash);
            }
        }
        if self.pending.capacity() == 0 {
            // Once, at its whole size: growing it step by step reallocates five times.
            self.pending.reserve_exact(PENDING_VALUES);
        }
        self.pending
            .push((event.latency_ms, event.ttft_ms.unwrap_or(f64::NAN)));
        if self.pending.len() >= PENDING_VALUES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let sketches = self.sketches.get_or_insert_with(Default::default);
        for (latency_ms, ttft_ms) in self.pending.drain(..) {
            sketches.0.add(latency_ms);
            sketches.1.add(ttft_ms);
        }
    }

    fn into_partial(mut self, user: Option<&str>) -> RollupPartial {
        self.flush();
        let (latency_ms, ttft_ms) = self.sketches.map_or_else(Default::default, |boxed| *boxed);
        let users = match user {
            None => self.users,
            Some(user) => {
                let mut users = UniqueCounter::new();
                users.insert_hash(UniqueCounter::hash(user));
                users
            }
        };
        RollupPartial {
            requests: self.requests,
            errors: self.errors,
            errors_by_type: self.errors_by_type,
            latency_ms,
            ttft_ms,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_read_input_tokens: self.cache_read_input_tokens,
            cost_micros: self.cost_micros,
            users,
            late_events: 0,
        }
    }
}

/// [`RollupPartial`]'s count of an error type, on a map of its own: the first
/// [`MAX_ERROR_TYPES`] types by name, the rest as [`OTHER_ERROR_TYPE`].
fn count_error_type(errors_by_type: &mut BTreeMap<String, u64>, error_type: &str) {
    if let Some(existing) = errors_by_type.get_mut(error_type) {
        *existing += 1;
        return;
    }
    let key = if errors_by_type.len() < MAX_ERROR_TYPES {
        error_type
    } else {
        OTHER_ERROR_TYPE
    };
    *errors_by_type.entry(key.to_string()).or_default() += 1;
}

/// The groups of a columnar scan without steps: the scan numbers each group it meets
/// ([`NumberedGroups::group`], once per distinct value it reads, not per event) and
/// adds each event by number ([`NumberedGroups::add`]), so the hot loop indexes a
/// vector instead of hashing a key, and touches a group's counts and a short buffer
/// rather than its sketches ([`PENDING_VALUES`]). [`NumberedGroups::into_grouper`]
/// gives the [`Grouper`] that adding the same events one by one would: the same
/// counts, sums, errors by type and sketches (each built from its group's values in
/// the order they came), and the same unique users.
///
/// Grouped by `user_id`, a group's one user is its key, so its unique-user counter is
/// made from the key at the end instead of taking every event's user.
#[derive(Debug)]
pub struct NumberedGroups {
    by: Vec<Dimension>,
    filters: Filters,
    max_groups: usize,
    /// Where each dimension of `by` is the user, if one is.
    user_key: Option<usize>,
    /// Keyed as [`Grouper`] keys its groups (step 0), so [`BorrowedKey`] finds them.
    numbers: hashbrown::HashMap<(usize, GroupKey), u32, foldhash::fast::RandomState>,
    keys: Vec<GroupKey>,
    groups: Vec<NumberedGroup>,
    total: RollupPartial,
}

impl NumberedGroups {
    /// The group's number of `key` (one value per `by` dimension), numbering it if it
    /// is new; past the bound, [`TooManyGroups`].
    pub fn group(&mut self, key: &[Option<&str>]) -> Result<u32, TooManyGroups> {
        debug_assert_eq!(key.len(), self.by.len(), "a value per dimension");
        if let Some(number) = self.numbers.get(&BorrowedKey(0, key)) {
            return Ok(*number);
        }
        if self.groups.len() >= self.max_groups {
            return Err(TooManyGroups {
                max_groups: self.max_groups,
                per_step: false,
            });
        }
        let number = u32::try_from(self.groups.len()).map_err(|_| TooManyGroups {
            max_groups: self.max_groups,
            per_step: false,
        })?;
        let owned: GroupKey = key.iter().map(|value| value.map(str::to_string)).collect();
        self.keys.push(owned.clone());
        self.groups.push(NumberedGroup::default());
        self.numbers.insert((0, owned), number);
        Ok(number)
    }

    /// Adds one event to group `number` (from [`NumberedGroups::group`]) and to the
    /// total. The caller has applied the filters.
    pub fn add(&mut self, number: u32, event: &ScannedEvent<'_>) {
        let count_users = self.user_key.is_none();
        if let Some(group) = self.groups.get_mut(number as usize) {
            group.add(event, count_users);
        } else {
            debug_assert!(false, "group {number} was never numbered");
            return;
        }
        let total = &mut self.total;
        total.requests += 1;
        if let Some(error_type) = event.error {
            total.errors += 1;
            total.count_error_type(error_type.unwrap_or(UNSPECIFIED_ERROR_TYPE), 1);
        }
        total.input_tokens = total.input_tokens.saturating_add(event.input_tokens);
        total.output_tokens = total.output_tokens.saturating_add(event.output_tokens);
        total.cache_read_input_tokens = total
            .cache_read_input_tokens
            .saturating_add(event.cache_read_input_tokens);
        total.cost_micros = total.cost_micros.saturating_add(event.cost_micros);
        if let Some(hash) = event.user_hash {
            total.users.insert_hash(hash);
        }
        total.latency_ms.add(event.latency_ms);
        if let Some(ttft_ms) = event.ttft_ms {
            total.ttft_ms.add(ttft_ms);
        }
    }

    /// Groups held so far.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The grouper holding these groups, as one fed the same events would.
    pub fn into_grouper(self) -> Grouper {
        let mut groups =
            hashbrown::HashMap::with_capacity_and_hasher(self.groups.len(), RandomState::new());
        for (key, group) in self.keys.into_iter().zip(self.groups) {
            let user = self
                .user_key
                .map(|at| key.get(at).and_then(|value| value.as_deref()));
            // Grouped by the user, `users` took no events: the key's user is the one.
            let partial = group.into_partial(user.flatten());
            groups.insert((0, key), partial);
        }
        Grouper {
            by: self.by,
            filters: self.filters,
            max_groups: self.max_groups,
            steps: None,
            groups,
            total: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::BTreeMap;

    use ais_model::dimension::Filter;
    use ais_model::{EventId, Status};
    use proptest::prelude::*;

    use super::*;

    fn event(
        endpoint: Option<&str>,
        region: Option<&str>,
        latency: f64,
        cost: u64,
    ) -> Event<'static> {
        Event {
            endpoint: endpoint.map(|text| Cow::Owned(text.to_string())),
            region: region.map(|text| Cow::Owned(text.to_string())),
            cost_micros: Some(cost),
            status: if latency > 500.0 {
                Status::Error
            } else {
                Status::Ok
            },
            ..Event::new("m", EventId::Generated(0), 0, latency)
        }
    }

    fn by(names: &[&str]) -> Vec<Dimension> {
        names
            .iter()
            .map(|name| Dimension::parse(name).expect("dimension"))
            .collect()
    }

    #[test]
    fn groups_rank_by_the_order_with_ties_by_key_and_the_rest_in_other() {
        let mut grouper = Grouper::new(by(&["endpoint"]), Filters::default(), 100);
        for (endpoint, count) in [("/a", 3), ("/b", 5), ("/c", 3), ("/d", 1)] {
            for _ in 0..count {
                grouper
                    .add_event("t", &event(Some(endpoint), None, 10.0, 1))
                    .expect("room");
            }
        }
        grouper
            .add_event("t", &event(None, None, 10.0, 1))
            .expect("room");
        let ranked = grouper.rank(OrderBy::Requests, false, 3);
        let keys: Vec<Option<&str>> = ranked
            .groups
            .iter()
            .map(|(key, _)| key[0].as_deref())
            .collect();
        assert_eq!(keys, vec![Some("/b"), Some("/a"), Some("/c")]);
        let other = ranked.other.expect("two groups left");
        assert_eq!(other.requests, 2, "/d and the events without an endpoint");
        assert_eq!(ranked.total.requests, 13);
    }

    #[test]
    fn groups_without_a_value_for_the_order_come_last_both_ways() {
        let mut grouper = Grouper::new(by(&["endpoint"]), Filters::default(), 100);
        let mut with_ttft = event(Some("/ttft"), None, 10.0, 0);
        with_ttft.ttft_ms = Some(5.0);
        grouper.add_event("t", &with_ttft).expect("room");
        grouper
            .add_event("t", &event(Some("/none"), None, 10.0, 0))
            .expect("room");
        for ascending in [false, true] {
            let ranked = grouper.clone().rank(OrderBy::TtftP95, ascending, 10);
            assert_eq!(ranked.groups[0].0, vec![Some("/ttft".to_string())]);
            assert_eq!(ranked.groups[1].0, vec![Some("/none".to_string())]);
        }
    }

    #[test]
    fn past_the_group_bound_it_refuses_instead_of_answering_in_part() {
        let mut grouper = Grouper::new(by(&["endpoint"]), Filters::default(), 2);
        grouper
            .add_event("t", &event(Some("/a"), None, 1.0, 0))
            .expect("room");
        grouper
            .add_event("t", &event(Some("/b"), None, 1.0, 0))
            .expect("room");
        grouper
            .add_event("t", &event(Some("/a"), None, 1.0, 0))
            .expect("an existing group still takes events");
        assert_eq!(
            grouper.add_event("t", &event(Some("/c"), None, 1.0, 0)),
            Err(TooManyGroups {
                max_groups: 2,
                per_step: false
            })
        );
    }

    #[test]
    fn a_borrowed_key_hashes_as_its_owned_key_and_finds_it() {
        use std::hash::BuildHasher;
        let state = RandomState::new();
        let cases: [&[Option<&str>]; 5] = [
            &[],
            &[None],
            &[Some("a")],
            &[Some("a"), None],
            &[None, Some("")],
        ];
        for values in cases {
            let borrowed = BorrowedKey(3, values);
            let owned: (usize, GroupKey) = (&borrowed).into();
            assert_eq!(
                state.hash_one(&borrowed),
                state.hash_one(&owned),
                "{values:?}"
            );
            assert!(borrowed.equivalent(&owned));
            assert!(!BorrowedKey(4, values).equivalent(&owned));
        }
        assert!(!BorrowedKey(0, &[Some("a")]).equivalent(&(0, vec![Some("b".to_string())])));
        assert!(!BorrowedKey(0, &[None]).equivalent(&(0, vec![Some(String::new())])));
    }

    #[test]
    fn every_order_name_parses_and_reads_back() {
        for (name, order) in ORDER_NAMES {
            assert_eq!(OrderBy::parse(name), Some(*order));
            assert_eq!(order.name(), *name);
        }
        assert_eq!(OrderBy::parse("latency_p95"), None);
    }

    fn arbitrary_event() -> impl Strategy<Value = Event<'static>> {
        (
            proptest::option::of(0u8..6),
            proptest::option::of(0u8..3),
            0u32..2_000,
            0u64..1_000,
        )
            .prop_map(|(endpoint, region, latency, cost)| {
                event(
                    endpoint.map(|n| format!("/e{n}")).as_deref(),
                    region.map(|n| format!("r{n}")).as_deref(),
                    f64::from(latency),
                    cost,
                )
            })
    }

    proptest! {
        /// Counts and sums of the groups and `other` add up to the total exactly, equal
        /// brute force over the events that pass the filter, and a grouper merged from
        /// two halves ranks the same as one over all.
        #[test]
        fn groups_and_other_add_up_to_the_filtered_total_exactly(
            events in proptest::collection::vec(arbitrary_event(), 0..200),
            top in 0usize..8,
            negate in any::<bool>(),
            split in 0usize..200,
        ) {
            let filters = Filters(vec![Filter {
                dimension: Dimension::Region,
                negated: negate,
                values: vec![Some("r0".to_string()), None],
            }]);
            let dimensions = by(&["endpoint", "region"]);
            let mut whole = Grouper::new(dimensions.clone(), filters.clone(), 1_000);
            let mut first = Grouper::new(dimensions.clone(), filters.clone(), 1_000);
            let mut second = Grouper::new(dimensions, filters.clone(), 1_000);
            let mut expected: BTreeMap<GroupKey, (u64, u64, u64)> = BTreeMap::new();
            for (index, event) in events.iter().enumerate() {
                whole.add_event("t", event).expect("room");
                let half = if index < split { &mut first } else { &mut second };
                half.add_event("t", event).expect("room");
                if filters.matches("t", event) {
                    let key = vec![
                        event.endpoint.as_deref().map(str::to_string),
                        event.region.as_deref().map(str::to_string),
                    ];
                    let entry = expected.entry(key).or_default();
                    entry.0 += 1;
                    entry.1 += u64::from(event.status == Status::Error);
                    entry.2 += event.cost_micros.unwrap_or(0);
                }
            }
            first.merge(second).expect("room");
            let ranked = whole.rank(OrderBy::CostUsd, false, top);
            let merged = first.rank(OrderBy::CostUsd, false, top);
            let keys = |ranked: &Ranked| -> Vec<GroupKey> {
                ranked.groups.iter().map(|(key, _)| key.clone()).collect()
            };
            prop_assert_eq!(keys(&ranked), keys(&merged));

            let mut sums = (0u64, 0u64, 0u64);
            for (key, partial) in &ranked.groups {
                let brute = expected.get(key).copied().unwrap_or_default();
                prop_assert_eq!((partial.requests, partial.errors, partial.cost_micros), brute);
                sums.0 += partial.requests;
                sums.1 += partial.errors;
                sums.2 += partial.cost_micros;
            }
            if let Some(other) = &ranked.other {
                sums.0 += other.requests;
                sums.1 += other.errors;
                sums.2 += other.cost_micros;
            }
            let total = &ranked.total;
            prop_assert_eq!(sums, (total.requests, total.errors, total.cost_micros));
            let brute_total = expected.values().fold((0, 0, 0), |sum, group| {
                (sum.0 + group.0, sum.1 + group.1, sum.2 + group.2)
            });
            prop_assert_eq!(sums, brute_total);
            prop_assert_eq!(ranked.groups.len(), top.min(expected.len()));
            prop_assert_eq!(ranked.other.is_some(), expected.len() > top);
        }
    }

    #[test]
    fn steps_cover_the_range_and_cut_the_last_one_short() {
        let steps = Steps {
            from_ms: 60_000,
            to_ms: 60_000 + 5 * 60_000,
            step_ms: 120_000,
        };
        assert_eq!(steps.count(), 3);
        assert_eq!(steps.index(59_999), None);
        assert_eq!(steps.index(60_000), Some(0));
        assert_eq!(steps.index(60_000 + 240_000), Some(2));
        assert_eq!(steps.index(60_000 + 300_000), None, "to is exclusive");
        assert_eq!(steps.start_ms(2), 60_000 + 240_000);
    }

    #[test]
    fn each_step_of_a_group_counts_toward_the_bound() {
        let steps = Steps {
            from_ms: 0,
            to_ms: 600_000,
            step_ms: 60_000,
        };
        let mut grouper = Grouper::new(by(&["endpoint"]), Filters::default(), 2).with_steps(steps);
        let mut at = |timestamp_ms: i64| {
            let mut event = event(Some("/a"), None, 1.0, 0);
            event.timestamp_ms = timestamp_ms;
            grouper.add_event("t", &event)
        };
        at(0).expect("room");
        at(30_000).expect("the same step and group");
        at(60_000).expect("room");
        at(-1).expect("outside the range: left out");
        assert_eq!(
            at(120_000),
            Err(TooManyGroups {
                max_groups: 2,
                per_step: true
            })
        );
        let message = TooManyGroups {
            max_groups: 2,
            per_step: true,
        }
        .to_string();
        assert!(
            message.contains("more than 2 groups (one per value and step)"),
            "{message}"
        );
    }

    proptest! {
        /// Per step, the counts and sums of the top groups and `other` add up to brute
        /// force over every event of that step; each top group's steps equal brute force
        /// of its own; the groups come in order of their total over the range.
        #[test]
        fn series_of_the_top_groups_and_other_add_up_per_step(
            events in proptest::collection::vec(
                (arbitrary_event(), 0i64..600_000), 0..200),
            top in 0usize..5,
            step_minutes in 1i64..4,
        ) {
            let steps = Steps { from_ms: 60_000, to_ms: 480_000, step_ms: step_minutes * 60_000 };
            let mut grouper = Grouper::new(by(&["endpoint"]), Filters::default(), 10_000)
                .with_steps(steps);
            // (group, step) → (requests, errors, cost micro-dollars)
            let mut expected: BTreeMap<(GroupKey, usize), (u64, u64, u64)> = BTreeMap::new();
            for (event, timestamp_ms) in &events {
                let mut event = event.clone();
                event.timestamp_ms = *timestamp_ms;
                grouper.add_event("t", &event).expect("room");
                let Some(step) = steps.index(event.timestamp_ms) else { continue };
                let key = vec![event.endpoint.as_deref().map(str::to_string)];
                let entry = expected.entry((key, step)).or_default();
                entry.0 += 1;
                entry.1 += u64::from(event.status == Status::Error);
                entry.2 += event.cost_micros.unwrap_or(0);
            }
            let ranked = grouper.rank_series(OrderBy::CostUsd, top);
            let sums = |slots: &StepPartials, step: usize| {
                slots.get(&step).map_or((0, 0, 0), |partial| {
                    (partial.requests, partial.errors, partial.cost_micros)
                })
            };
            let mut previous_cost = u64::MAX;
            for (key, slots) in &ranked.groups {
                let mut cost = 0;
                for step in 0..steps.count() {
                    let brute = expected.get(&(key.clone(), step)).copied().unwrap_or_default();
                    prop_assert_eq!(sums(slots, step), brute);
                    cost += brute.2;
                }
                prop_assert!(cost <= previous_cost, "ranked by cost over the range");
                previous_cost = cost;
            }
            for step in 0..steps.count() {
                let mut got = (0, 0, 0);
                let parts = ranked.groups.iter().map(|(_, slots)| slots).chain(ranked.other.as_ref());
                for slots in parts {
                    let (requests, errors, cost) = sums(slots, step);
                    got = (got.0 + requests, got.1 + errors, got.2 + cost);
                }
                let brute = expected
                    .iter()
                    .filter(|((_, at), _)| *at == step)
                    .fold((0, 0, 0), |sum, (_, group)| {
                        (sum.0 + group.0, sum.1 + group.1, sum.2 + group.2)
                    });
                prop_assert_eq!(got, brute, "step {}", step);
            }
            let groups: std::collections::BTreeSet<&GroupKey> =
                expected.keys().map(|(key, _)| key).collect();
            prop_assert_eq!(ranked.groups.len(), top.min(groups.len()));
            prop_assert_eq!(ranked.other.is_some(), groups.len() > top);
        }
    }

    /// Every dimension a request may name, for the projection test: every field, an
    /// attribute the events carry, and the tenant.
    fn all_dimensions() -> Vec<Dimension> {
        let mut all = Dimension::FIELDS.to_vec();
        all.push(Dimension::Attribute("feature".to_string()));
        all.push(Dimension::Tenant);
        all
    }

    proptest! {
        /// A grouper fed events holding only [`Grouper::fields_read`] answers exactly as
        /// one fed the whole events, whatever it groups and filters by and with steps:
        /// a scan that decodes only those columns loses nothing.
        #[test]
        fn a_grouper_reads_only_the_fields_it_lists(
            seeds in proptest::collection::vec(any::<u64>(), 1..80),
            first in 0..all_dimensions().len(),
            second in proptest::option::of(0..all_dimensions().len()),
            filtered in 0..all_dimensions().len(),
            negated in any::<bool>(),
            with_steps in any::<bool>(),
        ) {
            let all = all_dimensions();
            let mut dimensions = vec![all[first].clone()];
            dimensions.extend(second.map(|at| all[at].clone()));
            let events: Vec<Event<'static>> =
                seeds.iter().map(|seed| crate::testing::full_event(*seed)).collect();
            let dimension = all[filtered].clone();
            let value = dimension.value("t", &events[0]).map(str::to_string);
            let filters = Filters(vec![Filter { dimension, negated, values: vec![value] }]);
            let mut whole = Grouper::new(dimensions, filters, 10_000);
            if with_steps {
                whole = whole.with_steps(Steps { from_ms: 1_000, to_ms: 1_000 + 5_000, step_ms: 700 });
            }
            let mut projected = whole.clone();
            let fields: Vec<&str> = whole.fields_read().into_iter().collect();
            for event in &events {
                whole.add_event("t", event).expect("room");
                projected
                    .add_event("t", &crate::testing::keep_only(event, &fields))
                    .expect("room");
            }
            let answer = |grouper: Grouper| {
                let ranked = grouper.rank(OrderBy::Requests, false, 5);
                let groups: Vec<(GroupKey, String)> = ranked
                    .groups
                    .iter()
                    .map(|(key, partial)| (key.clone(), crate::testing::metrics(partial)))
                    .collect();
                let other = ranked.other.as_ref().map(crate::testing::metrics);
                (groups, other, crate::testing::metrics(&ranked.total))
            };
            prop_assert_eq!(answer(whole), answer(projected));
        }
    }

    /// Numbered groups fed the events' values answer as a grouper fed the events one
    /// by one, every metric and the means included, for groups below and past
    /// [`PENDING_VALUES`], grouped by the user and by something else.
    #[test]
    fn numbered_groups_answer_as_events_added_one_by_one() {
        let events: Vec<Event<'static>> = (0..500u64).map(crate::testing::full_event).collect();
        for names in [&["user_id"][..], &["endpoint", "user_id"], &["model"], &[]] {
            let mut one_by_one = Grouper::new(by(names), Filters::default(), 1_000);
            let mut numbered = one_by_one.numbered().expect("no steps");
            for event in &events {
                one_by_one.add_event("t", event).expect("room");
                let key: Vec<Option<&str>> = one_by_one
                    .by
                    .iter()
                    .map(|dimension| dimension.value("t", event))
                    .collect();
                let number = numbered.group(&key).expect("room");
                numbered.add(
                    number,
                    &ScannedEvent {
                        error: (event.status == Status::Error)
                            .then_some(event.error_type.as_deref()),
                        latency_ms: event.latency_ms,
                        ttft_ms: event.ttft_ms,
                        input_tokens: event.input_tokens.unwrap_or(0),
                        output_tokens: event.output_tokens.unwrap_or(0),
                        cache_read_input_tokens: event.cache_read_input_tokens.unwrap_or(0),
                        cost_micros: event.cost_micros.unwrap_or(0),
                        user_hash: event.user_id.as_deref().map(UniqueCounter::hash),
                    },
                );
            }
            let answer = |grouper: Grouper| {
                let ranked = grouper.rank(OrderBy::Requests, false, usize::MAX);
                let mut lines: Vec<String> = ranked
                    .groups
                    .iter()
                    .map(|(key, partial)| format!("{key:?} {}", crate::testing::metrics(partial)))
                    .collect();
                lines.push(crate::testing::metrics(&ranked.total));
                lines
            };
            assert_eq!(
                answer(numbered.into_grouper()),
                answer(one_by_one),
                "{names:?}"
            );
        }
        let steps = Steps {
            from_ms: 0,
            to_ms: 10,
            step_ms: 5,
        };
        assert!(
            Grouper::new(by(&["model"]), Filters::default(), 10)
                .with_steps(steps)
                .numbered()
                .is_none(),
            "numbered groups have no steps"
        );
    }
}
