//! Dimension rollups against brute force: events in random batches, a tiny bound, a
//! store that places each batch's partials against what it holds.

use std::collections::{BTreeMap, BTreeSet};

use ais_model::{Event, EventId, Status};
use proptest::prelude::*;

use super::*;
use crate::Contribution;

/// A store of dimension partials, merging each batch as an engine does.
#[derive(Default)]
struct Store {
    partials: BTreeMap<DimensionKey, RollupPartial>,
}

impl Store {
    fn commit(&mut self, batch: Vec<(DimensionKey, RollupPartial)>, max_values: usize) {
        for (key, partial) in batch {
            let held = self
                .partials
                .keys()
                .filter(|stored| {
                    (&stored.tenant, &stored.dimension, stored.minute_ms)
                        == (&key.tenant, &key.dimension, key.minute_ms)
                })
                .map(|stored| stored.value.clone());
            let mut stored = StoredValues::new(held.collect::<Vec<_>>());
            let value = stored.place(&key.value, max_values);
            self.partials
                .entry(DimensionKey { value, ..key })
                .or_default()
                .merge(&partial);
        }
    }
}

fn event(
    tenant_minute: (u8, i64),
    endpoint: Option<u8>,
    feature: Option<u8>,
    error: bool,
    cost: u64,
) -> (String, Event<'static>) {
    let (tenant, minute) = tenant_minute;
    let mut event = Event::new(
        "m",
        EventId::Generated(0),
        minute * 60_000 + 17,
        f64::from(u32::try_from(cost % 900).unwrap_or(0)) + 1.0,
    );
    event.endpoint = endpoint.map(|n| Cow::Owned(format!("/e{n}")));
    if let Some(feature) = feature {
        event.attributes = vec![(Cow::Borrowed("feature"), Cow::Owned(format!("f{feature}")))];
    }
    if error {
        event.status = Status::Error;
    }
    event.cost_micros = Some(cost);
    event.input_tokens = Some(cost / 3);
    // TTFTs absent, in the sketch's zero bucket, and spread; a few users.
    event.ttft_ms = match cost % 4 {
        0 => None,
        1 => Some(0.0005),
        _ => Some((cost % 500) as f64 * 0.37),
    };
    event.user_id = Some(Cow::Owned(format!("u{}", cost % 7)));
    (format!("t{tenant}"), event)
}

fn arbitrary_event() -> impl Strategy<Value = (String, Event<'static>)> {
    (
        (0u8..2, 0i64..3),
        proptest::option::of(0u8..9),
        proptest::option::of(0u8..4),
        any::<bool>(),
        0u64..10_000,
    )
        .prop_map(|(at, endpoint, feature, error, cost)| event(at, endpoint, feature, error, cost))
}

fn config(max_values: usize) -> DimensionRollupConfig {
    DimensionRollupConfig {
        dimensions: ["endpoint", "attr.feature", "status"]
            .iter()
            .map(|name| Dimension::parse(name).expect("a dimension"))
            .collect(),
        max_values_per_minute: max_values,
    }
}

/// (requests, errors, cost, input tokens) of some events.
fn sums<'a>(events: impl Iterator<Item = &'a Event<'static>>) -> (u64, u64, u64, u64) {
    events.fold((0, 0, 0, 0), |(requests, errors, cost, tokens), event| {
        (
            requests + 1,
            errors + u64::from(event.status == Status::Error),
            cost + event.cost_micros.unwrap_or(0),
            tokens + event.input_tokens.unwrap_or(0),
        )
    })
}

fn partial_sums<'a>(partials: impl Iterator<Item = &'a RollupPartial>) -> (u64, u64, u64, u64) {
    partials.fold((0, 0, 0, 0), |(requests, errors, cost, tokens), partial| {
        (
            requests + partial.requests,
            errors + partial.errors,
            cost + partial.cost_micros,
            tokens + partial.input_tokens,
        )
    })
}

proptest! {
    /// Every event is in exactly one partial per dimension; a (tenant, dimension,
    /// minute) holds at most the bound's values and an overflow only when it saw more;
    /// where it holds no overflow every value's partial is exactly its events (counts,
    /// sums, quantiles and unique users); the missing-field group is always exact.
    #[test]
    fn partials_add_up_to_the_events_exactly_and_overflow_only_past_the_bound(
        events in proptest::collection::vec(arbitrary_event(), 0..300),
        batch_size in 1usize..80,
        max_values in 1usize..6,
    ) {
        let config = config(max_values);
        let mut store = Store::default();
        for batch in events.chunks(batch_size) {
            let mut dimension_batch = DimensionBatch::new(&config);
            for (tenant, event) in batch {
                dimension_batch.add(tenant, event, Contribution::of(event, false));
            }
            store.commit(dimension_batch.into_partials(), max_values);
        }
        let tenants_minutes: BTreeSet<(String, i64)> = events
            .iter()
            .map(|(tenant, event)| (tenant.clone(), minute_floor(event.timestamp_ms)))
            .collect();
        for dimension in &config.dimensions {
            let name = dimension.name();
            for (tenant, minute_ms) in &tenants_minutes {
                let of_minute: Vec<&Event<'static>> = events
                    .iter()
                    .filter(|(t, e)| t == tenant && minute_floor(e.timestamp_ms) == *minute_ms)
                    .map(|(_, event)| event)
                    .collect();
                let stored: Vec<(&DimensionValue, &RollupPartial)> = store
                    .partials
                    .iter()
                    .filter(|(key, _)| {
                        key.tenant == *tenant && key.dimension == name && key.minute_ms == *minute_ms
                    })
                    .map(|(key, partial)| (&key.value, partial))
                    .collect();
                prop_assert_eq!(
                    partial_sums(stored.iter().map(|(_, partial)| *partial)),
                    sums(of_minute.iter().copied()),
                    "{} of {} at {}", name, tenant, minute_ms
                );
                let values = stored
                    .iter()
                    .filter(|(value, _)| matches!(value, DimensionValue::Value(_)))
                    .count();
                prop_assert!(values <= max_values, "{values} values of {name}");
                let distinct: BTreeSet<Option<&str>> = of_minute
                    .iter()
                    .map(|event| dimension.value(tenant, event))
                    .collect();
                let overflowed = stored
                    .iter()
                    .any(|(value, _)| **value == DimensionValue::Overflow);
                let distinct_values = distinct.iter().filter(|value| value.is_some()).count();
                prop_assert_eq!(overflowed, distinct_values > max_values, "overflow only past the bound");
                for (value, partial) in &stored {
                    let wanted: Option<Option<&str>> = match value {
                        DimensionValue::Value(value) => Some(Some(value.as_str())),
                        DimensionValue::Missing => Some(None),
                        DimensionValue::Overflow => None,
                    };
                    let Some(wanted) = wanted else { continue };
                    let expected = sums(
                        of_minute
                            .iter()
                            .copied()
                            .filter(|event| dimension.value(tenant, event) == wanted),
                    );
                    let got = partial_sums(std::iter::once(*partial));
                    if overflowed && wanted.is_some() {
                        // Past the bound a held value's later events may be in the
                        // overflow: queries of this minute scan instead.
                        prop_assert!(got.0 <= expected.0, "{:?}", value);
                    } else {
                        prop_assert_eq!(got, expected, "{:?}", value);
                        // Quantiles and unique users as a partial of the same events
                        // added one by one.
                        let mut brute = RollupPartial::new();
                        for event in of_minute.iter().filter(|event| dimension.value(tenant, event) == wanted) {
                            brute.add(event, false);
                        }
                        prop_assert_eq!(partial.latency_quantiles(), brute.latency_quantiles(), "{:?}", value);
                        prop_assert_eq!(partial.ttft_quantiles(), brute.ttft_quantiles(), "{:?}", value);
                        prop_assert_eq!(partial.ttft_ms.count(), brute.ttft_ms.count(), "{:?}", value);
                        prop_assert_eq!(partial.unique_users(), brute.unique_users(), "{:?}", value);
                    }
                }
            }
        }
    }
}

#[test]
fn the_section_resolves_defaults_and_names_what_it_refuses() {
    let defaults = RollupsSection::default().resolve().expect("defaults");
    assert_eq!(defaults, DimensionRollupConfig::default());
    let names: Vec<String> = defaults.dimensions.iter().map(Dimension::name).collect();
    assert_eq!(names, DEFAULT_DIMENSIONS);
    assert_eq!(
        defaults.max_values_per_minute,
        DEFAULT_MAX_VALUES_PER_MINUTE
    );

    let section: RollupsSection =
        toml::from_str("dimensions = [\"endpoint\", \"attr.feature\"]\nmax_values_per_minute = 5")
            .expect("a section");
    let config = section.resolve().expect("valid");
    assert_eq!(
        config.dimensions,
        vec![Dimension::Endpoint, Dimension::Attribute("feature".into())]
    );
    assert_eq!(config.max_values_per_minute, 5);

    let refused = |text: &str| {
        toml::from_str::<RollupsSection>(text)
            .expect("a section")
            .resolve()
            .expect_err("refused")
            .to_string()
    };
    assert!(refused("dimensions = [\"colour\"]").contains("unknown dimension \"colour\""));
    assert!(refused("dimensions = [\"tenant\"]").contains("tenant is not a dimension to roll up"));
    assert!(refused("dimensions = [\"region\", \"region\"]").contains("region is listed twice"));
    assert!(refused("max_values_per_minute = 0").contains("at least 1"));
    assert!(
        toml::from_str::<RollupsSection>("dimension = []").is_err(),
        "unknown keys are refused"
    );
}

#[test]
fn a_full_minute_sends_new_values_to_its_overflow_and_keeps_merging_held_ones() {
    let held = [
        DimensionValue::Value("a".into()),
        DimensionValue::Missing,
        DimensionValue::Value("b".into()),
    ];
    let mut stored = StoredValues::new(held);
    let value = |text: &str| DimensionValue::Value(text.to_string());
    assert_eq!(stored.place(&value("a"), 2), value("a"));
    assert_eq!(stored.place(&value("c"), 2), DimensionValue::Overflow);
    assert_eq!(
        stored.place(&DimensionValue::Missing, 2),
        DimensionValue::Missing
    );
    assert_eq!(stored.place(&value("b"), 2), value("b"));
    assert_eq!(
        stored.place(&value("c"), 3),
        value("c"),
        "a larger bound admits it"
    );
}
