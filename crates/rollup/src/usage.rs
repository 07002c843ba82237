//! The usage ledger: exact totals per UTC day of event time and (tenant, scope, value),
//! the numbers a bill is made from.
//!
//! A scope is what usage is counted per: the tenant as a whole, the model, the end user
//! (`user_id`), the API key the events came in with (`key`: its configured name, else a
//! short id derived from its digest, stamped by ingest), or an attribute a deployment
//! lists (`[usage] attributes`, e.g. the customer an event was made for). An event without the scope's field counts in that
//! scope's missing group (JSON `null` in answers). Every committed event counts once in
//! every scope; duplicates and dead letters count nowhere; a late event counts in its own
//! day like any other.
//!
//! The stream sums one batch ([`UsageBatch`]) and the store adds the sums to what it
//! holds in the batch's own commit, so the ledger is exactly once with the batch, and the
//! stream's memory is bounded by the batch, not by the number of users. Money stays in
//! integer micro-dollars. No I/O.

use std::borrow::Cow;
use std::sync::Arc;

use ais_model::dimension::{Dimension, DimensionError, ATTRIBUTE_PREFIX};
use ais_model::{Event, Status};
use serde::Deserialize;

/// Milliseconds in a UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// The start of the UTC day holding `ms` (total: the earliest representable day for
/// times before it).
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS).saturating_mul(DAY_MS)
}

/// The `key` scope's name: not an event dimension (the sender does not set it).
const KEY_SCOPE: &str = "key";

/// What usage is counted per.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UsageScope {
    /// The tenant as a whole: one group per tenant.
    Tenant,
    Model,
    UserId,
    /// The API key the events were ingested with (`Event::key`).
    Key,
    /// One key of the events' attributes, listed in `[usage] attributes`.
    Attribute(String),
}

/// A scope a request or the configuration names that is not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageScopeError {
    #[error("unknown usage scope {0:?}; use tenant, model, user_id, key or attr.<key> of an attribute listed in [usage] attributes")]
    Unknown(String),
    #[error("usage scope {0}: {1}")]
    Dimension(String, DimensionError),
}

impl UsageScope {
    /// Parses a scope as a request writes it (`user_id`, `attr.customer`).
    pub fn parse(text: &str) -> Result<Self, UsageScopeError> {
        if text == KEY_SCOPE {
            return Ok(Self::Key);
        }
        match Dimension::parse(text) {
            Ok(Dimension::Tenant) => Ok(Self::Tenant),
            Ok(Dimension::Model) => Ok(Self::Model),
            Ok(Dimension::UserId) => Ok(Self::UserId),
            Ok(Dimension::Attribute(key)) => Ok(Self::Attribute(key)),
            Ok(_) => Err(UsageScopeError::Unknown(text.to_string())),
            Err(DimensionError::Unknown(_)) => Err(UsageScopeError::Unknown(text.to_string())),
            Err(error) => Err(UsageScopeError::Dimension(text.to_string(), error)),
        }
    }

    /// The name as a request writes it and the store keeps it.
    pub fn name(&self) -> String {
        match self {
            Self::Tenant => "tenant".to_string(),
            Self::Model => "model".to_string(),
            Self::UserId => "user_id".to_string(),
            Self::Key => KEY_SCOPE.to_string(),
            Self::Attribute(key) => format!("{ATTRIBUTE_PREFIX}{key}"),
        }
    }

    /// This scope's value in an event of `tenant`, borrowed from the record the event
    /// was decoded from; `None` when the event lacks the field.
    fn value_of<'r>(&self, tenant: &'r str, event: &Event<'r>) -> Option<Cow<'r, str>> {
        let field = match self {
            Self::Tenant => return Some(Cow::Borrowed(tenant)),
            Self::Model => Some(&event.model),
            Self::UserId => event.user_id.as_ref(),
            Self::Key => event.key.as_ref(),
            Self::Attribute(key) => event
                .attributes
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value),
        };
        field.map(|value| match value {
            Cow::Borrowed(value) => Cow::Borrowed(*value),
            Cow::Owned(value) => Cow::Owned(value.clone()),
        })
    }
}

/// The scopes counted: the tenant, the model, the user (unless turned off) and the key
/// always, then the listed attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageConfig {
    pub scopes: Vec<UsageScope>,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            scopes: vec![
                UsageScope::Tenant,
                UsageScope::Model,
                UsageScope::UserId,
                UsageScope::Key,
            ],
        }
    }
}

impl UsageConfig {
    /// Whether `scope` is counted.
    pub fn counts(&self, scope: &UsageScope) -> bool {
        self.scopes.contains(scope)
    }
}

/// The `[usage]` section of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageSection {
    /// Attribute keys (without `attr.`) whose values usage is counted per.
    pub attributes: Vec<String>,
    /// Whether usage is counted per end user (default on): a deployment that must not
    /// keep per-user totals turns it off.
    pub user_id: bool,
}

impl Default for UsageSection {
    fn default() -> Self {
        Self {
            attributes: Vec::new(),
            user_id: true,
        }
    }
}

/// A `[usage]` section that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageSectionError {
    #[error("[usage] attributes: {0}")]
    Attribute(UsageScopeError),
    #[error("[usage] attributes: {0} is listed twice")]
    Twice(String),
}

impl UsageSection {
    /// The configuration it describes.
    pub fn resolve(&self) -> Result<UsageConfig, UsageSectionError> {
        let mut config = UsageConfig::default();
        if !self.user_id {
            config.scopes.retain(|scope| *scope != UsageScope::UserId);
        }
        for key in &self.attributes {
            let scope = UsageScope::parse(&format!("{ATTRIBUTE_PREFIX}{key}"))
                .map_err(UsageSectionError::Attribute)?;
            if config.scopes.contains(&scope) {
                return Err(UsageSectionError::Twice(key.clone()));
            }
            config.scopes.push(scope);
        }
        Ok(config)
    }
}

/// Identity of one ledger entry. The tenant and the scope's name are shared: a batch
/// holds thousands of entries of one tenant and scope (one per user), and one string
/// each instead of one per entry is most of what a batch's usage costs the stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    pub tenant: Arc<str>,
    /// The scope's name ([`UsageScope::name`]).
    pub scope: Arc<str>,
    /// Start of the UTC day of the events' time, unix ms.
    pub day_ms: i64,
    /// `None`: the events without the scope's field.
    pub value: Option<String>,
}

/// What the events of one entry used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub requests: u64,
    pub errors: u64,
    /// Every input token, cache reads included (as the events count them).
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cost_micros: u64,
}

impl UsageCounts {
    /// One event's usage.
    pub fn of(event: &Event<'_>) -> Self {
        Self {
            requests: 1,
            errors: u64::from(event.status == Status::Error),
            input_tokens: event.input_tokens.unwrap_or(0),
            output_tokens: event.output_tokens.unwrap_or(0),
            cache_read_input_tokens: event.cache_read_input_tokens.unwrap_or(0),
            cost_micros: event.cost_micros.unwrap_or(0),
        }
    }

    /// Adds `other`, saturating (no real bill reaches 2^64 of anything).
    pub fn add(&mut self, other: &UsageCounts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(other.cache_read_input_tokens);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
    }

    /// Subtracts `other`, stopping at zero.
    pub fn subtract(&mut self, other: &UsageCounts) {
        self.requests = self.requests.saturating_sub(other.requests);
        self.errors = self.errors.saturating_sub(other.errors);
        self.input_tokens = self.input_tokens.saturating_sub(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_sub(other.output_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_sub(other.cache_read_input_tokens);
        self.cost_micros = self.cost_micros.saturating_sub(other.cost_micros);
    }
}

/// A committed event's claim on a budget reservation (`Event::reservation_id`): once
/// its batch lands, the hold is released and the event's own cost is what counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub tenant: String,
    pub reservation_id: String,
}

/// A hash map keyed by strings from the records: foldhash, seeded per map, so values a
/// producer picks cannot be aimed at one bucket.
type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// One (tenant, day) of a scope while a batch is built: its values' counts, strings
/// borrowed from the records.
#[derive(Debug)]
struct DayGroup<'r> {
    tenant: &'r str,
    day_ms: i64,
    values: Map<Option<Cow<'r, str>>, UsageCounts>,
}

/// A scope's groups, in (tenant, day) order, as they are written out.
type GroupCursor<'r> = std::iter::Peekable<std::vec::IntoIter<DayGroup<'r>>>;

/// Groups of a scope searched in order rather than through their index.
const LINEAR_GROUPS: usize = 8;

/// One scope's entries of a batch, grouped by (tenant, day): a batch holds a few of
/// those, each with up to one value per event, so a lookup hashes and compares only
/// the value, and the sort that orders the entries compares only values.
#[derive(Debug)]
struct ScopeEntries<'r> {
    /// The scope's name, shared by its owned keys.
    name: Arc<str>,
    /// Whether the scope may have about as many values as events (users, customers).
    wide: bool,
    groups: Vec<DayGroup<'r>>,
    /// Each group's place, looked up once there are more than [`LINEAR_GROUPS`] (a batch
    /// of many tenants); fewer are searched in order.
    index: Map<(&'r str, i64), usize>,
    /// The group of the scope's last event: events of a batch come in runs of a tenant
    /// and day.
    last: usize,
}

impl<'r> ScopeEntries<'r> {
    fn counts(&mut self, tenant: &'r str, day_ms: i64, events: usize) -> &mut DayGroup<'r> {
        let matches = |group: &DayGroup<'_>| group.day_ms == day_ms && group.tenant == tenant;
        if !self.groups.get(self.last).is_some_and(matches) {
            let found = if self.groups.len() <= LINEAR_GROUPS {
                self.groups.iter().position(matches)
            } else {
                self.index.get(&(tenant, day_ms)).copied()
            };
            self.last = match found {
                Some(found) => found,
                None => {
                    // A wide scope's first group is sized for the batch (growing by
                    // doubling would rehash it a dozen times); further ones, rarer, grow.
                    let capacity = match (self.wide, self.groups.is_empty()) {
                        (true, true) => events,
                        (true, false) => events / 8,
                        (false, _) => 8,
                    };
                    self.index.insert((tenant, day_ms), self.groups.len());
                    self.groups.push(DayGroup {
                        tenant,
                        day_ms,
                        values: Map::with_capacity_and_hasher(capacity, Default::default()),
                    });
                    self.groups.len() - 1
                }
            };
        }
        &mut self.groups[self.last]
    }
}

/// The usage of one batch, keyed by strings borrowed from its records: at most one
/// entry per event and scope, whatever the number of users in the store.
///
/// Each scope keeps its own groups. A batch of many users holds nearly one entry per
/// event in the user scope; were every scope in one map sized for that, each of an
/// event's lookups (its tenant, model, key…) would land somewhere in megabytes of
/// table. Apart, the narrow scopes' few entries stay in cache and only a wide scope's
/// lookup goes far.
#[derive(Debug)]
pub struct UsageBatch<'c, 'r> {
    config: &'c UsageConfig,
    /// In the configuration's order of scopes.
    scopes: Vec<ScopeEntries<'r>>,
    /// The events the batch was sized for.
    events: usize,
    /// (tenant, reservation id) of the events that settle a reservation.
    settled: Vec<(&'r str, Cow<'r, str>)>,
}

impl<'c, 'r> UsageBatch<'c, 'r> {
    /// An empty batch's usage, sized for `events` events.
    pub fn new(config: &'c UsageConfig, events: usize) -> Self {
        let scopes = config
            .scopes
            .iter()
            .map(|scope| ScopeEntries {
                name: Arc::from(scope.name()),
                wide: matches!(scope, UsageScope::UserId | UsageScope::Attribute(_)),
                groups: Vec::new(),
                index: Map::default(),
                last: 0,
            })
            .collect();
        Self {
            config,
            scopes,
            events,
            settled: Vec::new(),
        }
    }

    /// Counts one committed event of `tenant` in every scope.
    pub fn add(&mut self, tenant: &'r str, event: &Event<'r>) {
        let counts = UsageCounts::of(event);
        let day_ms = day_of(event.timestamp_ms);
        if let Some(id) = &event.reservation_id {
            self.settled.push((tenant, id.clone()));
        }
        for (scope, entries) in self.config.scopes.iter().zip(&mut self.scopes) {
            let value = scope.value_of(tenant, event);
            entries
                .counts(tenant, day_ms, self.events)
                .values
                .entry(value)
                .or_default()
                .add(&counts);
        }
    }

    /// The reservations the batch's events settle, in the events' order.
    pub fn settlements(&self) -> Vec<Settlement> {
        self.settled
            .iter()
            .map(|(tenant, id)| Settlement {
                tenant: tenant.to_string(),
                reservation_id: id.to_string(),
            })
            .collect()
    }

    /// The entries with owned keys, in key order (store writes in a stable order, and an
    /// ordered upsert walks the ledger's index in order): by tenant, then scope name,
    /// day and value.
    pub fn into_entries(self) -> Vec<(UsageKey, UsageCounts)> {
        let mut scopes = self.scopes;
        scopes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let mut tenants: Vec<&'r str> = Vec::new();
        let mut total = 0;
        for scope in &mut scopes {
            scope
                .groups
                .sort_unstable_by(|a, b| (a.tenant, a.day_ms).cmp(&(b.tenant, b.day_ms)));
            for group in &scope.groups {
                tenants.push(group.tenant);
                total += group.values.len();
            }
        }
        tenants.sort_unstable();
        tenants.dedup();
        let mut owned = Vec::with_capacity(total);
        // Each scope's groups in (tenant, day) order: a cursor per scope.
        let mut groups: Vec<(Arc<str>, GroupCursor<'r>)> = scopes
            .into_iter()
            .map(|scope| (scope.name, scope.groups.into_iter().peekable()))
            .collect();
        for tenant in tenants {
            let shared: Arc<str> = Arc::from(tenant);
            for (name, groups) in &mut groups {
                while let Some(group) = groups.next_if(|group| group.tenant == tenant) {
                    // Sorted while the values are borrowed: smaller to move, no string
                    // copied yet.
                    let mut values: Vec<(Option<Cow<'r, str>>, UsageCounts)> =
                        group.values.into_iter().collect();
                    values.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    owned.extend(values.into_iter().map(|(value, counts)| {
                        let key = UsageKey {
                            tenant: shared.clone(),
                            scope: name.clone(),
                            day_ms: group.day_ms,
                            value: value.map(Cow::into_owned),
                        };
                        (key, counts)
                    }));
                }
            }
        }
        owned
    }
}

#[cfg(test)]
mod tests {
    use ais_model::EventId;

    use super::*;

    #[test]
    fn every_event_counts_once_in_every_scope_of_its_day() {
        let config = UsageSection {
            attributes: vec!["customer".to_string()],
            ..UsageSection::default()
        }
        .resolve()
        .expect("a valid section");
        let mut batch = UsageBatch::new(&config, 3);
        let first = Event {
            user_id: Some("u1".into()),
            input_tokens: Some(10),
            output_tokens: Some(5),
            cost_micros: Some(700),
            attributes: vec![("customer".into(), "acme".into())],
            ..Event::new("m1", EventId::Generated(1), DAY_MS + 5, 1.0)
        };
        let second = Event {
            status: Status::Error,
            input_tokens: Some(3),
            cache_read_input_tokens: Some(2),
            cost_micros: Some(11),
            ..Event::new("m1", EventId::Generated(2), DAY_MS + 9, 1.0)
        };
        let next_day = Event::new("m2", EventId::Generated(3), 2 * DAY_MS, 1.0);
        for event in [&first, &second, &next_day] {
            batch.add("t", event);
        }
        let entries = batch.into_entries();
        let find = |scope: &str, day_ms: i64, value: Option<&str>| {
            entries
                .iter()
                .find(|(key, _)| {
                    *key.scope == *scope && key.day_ms == day_ms && key.value.as_deref() == value
                })
                .map(|(_, counts)| *counts)
        };
        let both = UsageCounts {
            requests: 2,
            errors: 1,
            input_tokens: 13,
            output_tokens: 5,
            cache_read_input_tokens: 2,
            cost_micros: 711,
        };
        assert_eq!(find("tenant", DAY_MS, Some("t")), Some(both));
        assert_eq!(find("model", DAY_MS, Some("m1")), Some(both));
        assert_eq!(
            find("user_id", DAY_MS, Some("u1")),
            Some(UsageCounts::of(&first))
        );
        assert_eq!(
            find("user_id", DAY_MS, None),
            Some(UsageCounts::of(&second))
        );
        assert_eq!(
            find("attr.customer", DAY_MS, None),
            Some(UsageCounts::of(&second))
        );
        assert_eq!(
            find("model", 2 * DAY_MS, Some("m2")),
            Some(UsageCounts::of(&next_day))
        );
        // Each scope holds every event once.
        let per_scope_total = |scope: &str| -> u64 {
            entries
                .iter()
                .filter(|(key, _)| *key.scope == *scope)
                .map(|(_, counts)| counts.requests)
                .sum()
        };
        for scope in ["tenant", "model", "user_id", "key", "attr.customer"] {
            assert_eq!(per_scope_total(scope), 3, "{scope}");
        }
        let mut sorted = entries.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(entries, sorted);
    }

    #[test]
    fn entries_of_several_tenants_come_in_key_order_each_once() {
        let config = UsageSection {
            attributes: vec!["customer".to_string()],
            ..UsageSection::default()
        }
        .resolve()
        .expect("a valid section");
        // More (tenant, day) groups than are searched in order.
        let mut tenants = vec!["zeta".to_string(), "acme".to_string(), "m".to_string()];
        tenants.extend((0..8).map(|n| format!("t{n}")));
        let events: Vec<(&str, Event<'_>)> = (0..240u32)
            .map(|n| {
                let mut event = Event::new(
                    format!("model-{}", n % 4),
                    EventId::Generated(u128::from(n) + 1),
                    i64::from(n % 3) * DAY_MS + 7,
                    1.0,
                );
                event.user_id = (n % 5 != 0).then(|| format!("u{}", n % 7).into());
                event.cost_micros = Some(u64::from(n));
                if n % 2 == 0 {
                    event.attributes = vec![("customer".into(), format!("c{}", n % 3).into())];
                }
                (tenants[n as usize % tenants.len()].as_str(), event)
            })
            .collect();
        let mut batch = UsageBatch::new(&config, events.len());
        for (tenant, event) in &events {
            batch.add(tenant, event);
        }
        let entries = batch.into_entries();
        let mut sorted = entries.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(entries, sorted);
        // Every key once, and each scope of each tenant holds its tenant's cost.
        let mut keys: Vec<&UsageKey> = entries.iter().map(|(key, _)| key).collect();
        keys.dedup();
        assert_eq!(keys.len(), entries.len());
        for tenant in &tenants {
            let sent: u64 = events
                .iter()
                .filter(|(of, _)| *of == tenant)
                .filter_map(|(_, event)| event.cost_micros)
                .sum();
            for scope in ["tenant", "model", "user_id", "key", "attr.customer"] {
                let counted: u64 = entries
                    .iter()
                    .filter(|(key, _)| *key.tenant == **tenant && &*key.scope == scope)
                    .map(|(_, counts)| counts.cost_micros)
                    .sum();
                assert_eq!(counted, sent, "{tenant} {scope}");
            }
        }
    }

    #[test]
    fn scopes_parse_and_refuse_by_name() {
        assert_eq!(UsageScope::parse("user_id"), Ok(UsageScope::UserId));
        assert_eq!(
            UsageScope::parse("attr.customer"),
            Ok(UsageScope::Attribute("customer".to_string()))
        );
        assert!(matches!(
            UsageScope::parse("endpoint"),
            Err(UsageScopeError::Unknown(_))
        ));
        assert!(matches!(
            UsageScope::parse("attr."),
            Err(UsageScopeError::Dimension(..))
        ));
        let twice = UsageSection {
            attributes: vec!["a".to_string(), "a".to_string()],
            ..UsageSection::default()
        };
        assert_eq!(
            twice.resolve(),
            Err(UsageSectionError::Twice("a".to_string()))
        );
        for scope in UsageConfig::default().scopes {
            assert_eq!(UsageScope::parse(&scope.name()), Ok(scope));
        }
        let without_users = UsageSection {
            user_id: false,
            ..UsageSection::default()
        }
        .resolve()
        .expect("valid");
        assert!(!without_users.counts(&UsageScope::UserId));
        assert!(without_users.counts(&UsageScope::Model));
    }

    #[test]
    fn days_are_utc_and_total() {
        assert_eq!(day_of(DAY_MS * 3 + 17), DAY_MS * 3);
        assert_eq!(day_of(-1), -DAY_MS);
        assert_eq!(day_of(i64::MIN), i64::MIN, "saturates");
    }
}
