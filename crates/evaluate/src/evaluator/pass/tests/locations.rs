//! Detectors per value of `[anomaly] dimensions`, fed windows directly: where an
//! incident is, whether it is wider than its locations, the bound on locations, and
//! the minutes whose dimension rollups do not cover the tenant's traffic.

use ais_rollup::dimensions::DimensionValue;
use ais_store::evaluation::{DimensionWindow, Location};

use super::*;
use crate::alert::AlertLocation;

/// Endpoints of tenant "t": `/chat` and 24 others, so `/chat` is 4% of the traffic
/// (below the 5% of a p95: slow there alone, the model's p95 stays put).
fn endpoints() -> Vec<String> {
    std::iter::once("/chat".to_string())
        .chain((1..25).map(|n| format!("/e{n:02}")))
        .collect()
}

/// 20 calls of window `index` at one endpoint: latencies `(100 + i) × factor` ms,
/// TTFT 50 + i ms, 5 input and 10 output tokens.
fn endpoint_calls(index: i64, factor: f64) -> RollupPartial {
    let mut partial = RollupPartial::new();
    for call in 0..20u32 {
        let event = Event {
            ttft_ms: Some(50.0 + f64::from(call)),
            input_tokens: Some(5),
            output_tokens: Some(10),
            cost_micros: Some(1_000),
            ..Event::new(
                Cow::Borrowed("m"),
                EventId::Generated(u128::from(call)),
                window(index) + i64::from(call),
                (100.0 + f64::from(call)) * factor,
            )
        };
        partial.add(&event, false);
    }
    partial
}

/// One window of tenant "t", model "m": the (tenant, model) rollup row, and the
/// endpoint groups whose partials add up to it. `factor(endpoint)` slows an endpoint.
fn window_of(
    index: i64,
    factor: impl Fn(&str) -> f64,
) -> (Vec<(String, RollupRow)>, Vec<DimensionWindow>) {
    let mut model = RollupPartial::new();
    let mut groups = Vec::new();
    for endpoint in endpoints() {
        let partial = endpoint_calls(index, factor(&endpoint));
        model.merge(&partial);
        groups.push(DimensionWindow {
            tenant: "t".to_string(),
            dimension: "endpoint".to_string(),
            minute_ms: window(index),
            group: DimensionValue::Value(endpoint),
            partial,
        });
    }
    let row = RollupRow {
        model: "m".to_string(),
        minute_ms: window(index),
        partial: model,
    };
    (vec![("t".to_string(), row)], groups)
}

/// Evaluates windows `indexes` chunk by chunk with their dimension rollups, as
/// [`super::super::super::Evaluator::pass`] does.
fn run_located(
    config: &EvaluatorConfig,
    state: &mut State,
    indexes: Range<i64>,
    factor: impl Fn(i64, &str) -> f64,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut next = indexes.start;
    while next < indexes.end {
        let end = (next + config.windows_per_read).min(indexes.end);
        let (mut rows, mut groups) = (Vec::new(), Vec::new());
        for index in next..end {
            let (window_rows, window_groups) = window_of(index, |endpoint| factor(index, endpoint));
            rows.extend(window_rows);
            groups.extend(window_groups);
        }
        let outcome = evaluate_chunk(
            config,
            state,
            window(next)..window(end),
            rows,
            groups,
            Vec::new(),
        )
        .expect("alerts serialise");
        outcomes.push(outcome);
        next = end;
    }
    outcomes
}

fn located_config() -> EvaluatorConfig {
    EvaluatorConfig {
        dimensions: vec!["endpoint".to_string()],
        sinks: vec!["webhook".to_string()],
        ..quick_detectors()
    }
}

/// The incident alerts of tenant "t" for model `model`, in order.
fn incident_alerts<'o>(outcomes: &'o [Outcome], model: &str) -> Vec<&'o Alert> {
    alerts_of(outcomes)
        .into_iter()
        .filter(|alert| {
            alert.label("tenant") == "t"
                && alert.label("model") == model
                && alert.incident.is_some()
        })
        .collect()
}

#[test]
fn a_step_confined_to_one_endpoint_fires_for_that_endpoint_only() {
    let config = located_config();
    let mut state = State::default();
    // From window 20 on, /chat takes three times as long; every other endpoint, and so
    // the model as a whole, stays as it was.
    let factor = |index: i64, endpoint: &str| {
        if index >= 20 && endpoint == "/chat" {
            3.0
        } else {
            1.0
        }
    };
    let outcomes = run_located(&config, &mut state, 0..40, factor);

    let fired: Vec<&AnomalyRecord> = outcomes.iter().flat_map(|o| &o.fired).collect();
    assert!(!fired.is_empty(), "the step fires");
    let chat = Location::new("endpoint", "/chat");
    for anomaly in &fired {
        assert_eq!(
            anomaly.location.as_ref(),
            Some(&chat),
            "only /chat fires, not the model nor another endpoint: {anomaly:?}"
        );
        assert_eq!(
            (anomaly.tenant.as_str(), anomaly.model.as_str()),
            ("t", "*")
        );
    }
    assert!(fired
        .iter()
        .any(|anomaly| anomaly.detector == "latency_p95_zscore"));
    assert_eq!(state.tracked_locations(), 25, "every endpoint is watched");
    let uncovered: u64 = outcomes.iter().map(|o| o.uncovered).sum();
    assert_eq!(
        uncovered, 0,
        "every minute's endpoints add up to the model's"
    );

    // The incident says where, and that it is narrower than the model.
    let alerts = incident_alerts(&outcomes, "*");
    assert_eq!(alerts.len(), 1, "firing, still so at window 40: {alerts:?}");
    let incident = alerts[0].incident.as_ref().expect("an incident");
    assert_eq!(
        incident.locations,
        [AlertLocation {
            dimension: "endpoint".to_string(),
            value: "/chat".to_string()
        }]
    );
    assert_eq!(incident.extent(), Some("narrower"));
    assert!(incident.wider.is_empty());
    assert_eq!(alerts[0].annotations["locations"], "endpoint /chat");
    assert_eq!(alerts[0].annotations["extent"], "narrower");
    assert!(
        alerts[0].summary().contains("of t at endpoint /chat fires"),
        "{}",
        alerts[0].summary()
    );
    assert!(
        incident_alerts(&outcomes, "m").is_empty(),
        "the model is fine"
    );

    // `GET /v1/incidents` says the same from the stored anomalies.
    let computed = crate::incident::group(&stored_anomalies(&outcomes), config.incident_gap);
    assert_eq!(computed.len(), 1, "{computed:#?}");
    assert_eq!(computed[0].id, incident.id);
    assert_eq!(computed[0].locations, [chat]);
    assert_eq!(computed[0].extent(), Some("narrower"));
}

#[test]
fn a_step_of_the_whole_model_makes_its_locations_incident_wider() {
    let config = located_config();
    let mut state = State::default();
    // Windows 20..26: every endpoint three times as slow, then back to normal.
    let factor = |index: i64, _: &str| if (20..26).contains(&index) { 3.0 } else { 1.0 };
    let outcomes = run_located(&config, &mut state, 0..60, factor);

    let located: BTreeSet<&str> = outcomes
        .iter()
        .flat_map(|o| &o.fired)
        .filter_map(|a| a.location.as_ref())
        .map(|location| location.value.as_str())
        .collect();
    assert_eq!(located.len(), 25, "every endpoint: {located:?}");
    let alerts = incident_alerts(&outcomes, "*");
    let states: Vec<AlertState> = alerts.iter().map(|alert| alert.state).collect();
    assert_eq!(states, [AlertState::Firing, AlertState::Resolved]);
    let delivered = alerts[1].incident.as_ref().expect("an incident");
    assert_eq!(delivered.wider, ["m"], "the model fired as a whole too");
    assert_eq!(delivered.extent(), Some("wider"));
    assert_eq!(delivered.locations.len(), 25);
    assert!(
        !incident_alerts(&outcomes, "m").is_empty(),
        "and its own incident"
    );

    let computed = crate::incident::group(&stored_anomalies(&outcomes), config.incident_gap);
    let computed = computed
        .iter()
        .find(|incident| incident.model == "*")
        .expect("the locations' incident");
    assert_eq!(computed.id, delivered.id);
    assert_eq!(computed.wider, delivered.wider);
    assert_eq!(computed.end_ms, delivered.end_ms);
    assert_eq!(computed.locations.len(), 25);
    assert!(state.incidents.is_empty() && state.open_location_anomalies.is_empty());
}

#[test]
fn the_location_bound_holds_with_100_000_values() {
    let values = 100_000usize;
    let config = EvaluatorConfig {
        dimensions: vec!["endpoint".to_string()],
        ..quick_detectors()
    };
    let bound = config.max_location_keys;
    assert_eq!(bound, 10_000, "the default bound");
    let mut state = State::default();
    for index in 0..2 {
        let mut model = RollupPartial::new();
        let mut groups = Vec::with_capacity(values);
        for value in 0..values {
            let mut partial = RollupPartial::new();
            let event = Event::new(
                Cow::Borrowed("m"),
                EventId::Generated(value as u128),
                window(index),
                100.0,
            );
            partial.add(&event, false);
            model.add(&event, false);
            groups.push(DimensionWindow {
                tenant: "t".to_string(),
                dimension: "endpoint".to_string(),
                minute_ms: window(index),
                group: DimensionValue::Value(format!("/v{value}")),
                partial,
            });
        }
        let row = RollupRow {
            model: "m".to_string(),
            minute_ms: window(index),
            partial: model,
        };
        let outcome = evaluate_chunk(
            &config,
            &mut state,
            window(index)..window(index + 1),
            vec![("t".to_string(), row)],
            groups,
            Vec::new(),
        )
        .expect("evaluates");
        assert_eq!(state.tracked_locations(), bound, "window {index}");
        assert_eq!(
            outcome.untracked,
            (values - bound) as u64,
            "the values past the bound, counted in every window"
        );
    }
    assert_eq!(state.tracked_keys(), 3, "(t, m), (*, m), (t, *): untouched");
}

#[test]
fn a_minute_whose_groups_do_not_add_up_feeds_no_location() {
    let config = located_config();
    let mut state = State::default();
    let (rows, mut groups) = window_of(0, |_| 1.0);
    // One endpoint's group missing (not rolled up by every batch, or merged away).
    groups.pop();
    let outcome = evaluate_chunk(
        &config,
        &mut state,
        window(0)..window(1),
        rows,
        groups,
        Vec::new(),
    )
    .expect("evaluates");
    assert_eq!(outcome.uncovered, 1);
    assert_eq!(state.tracked_locations(), 0);

    // With the overflow and the missing-field group it adds up: the values are
    // watched, those two groups are not.
    let (rows, mut groups) = window_of(1, |_| 1.0);
    let taken = groups.split_off(22);
    let mut overflow = taken[0].partial.clone();
    overflow.merge(&taken[1].partial);
    for (group, partial) in [
        (DimensionValue::Overflow, overflow),
        (DimensionValue::Missing, taken[2].partial.clone()),
    ] {
        groups.push(DimensionWindow {
            group,
            partial,
            ..taken[0].clone()
        });
    }
    let outcome = evaluate_chunk(
        &config,
        &mut state,
        window(1)..window(2),
        rows,
        groups,
        Vec::new(),
    )
    .expect("evaluates");
    assert_eq!(outcome.uncovered, 0);
    assert_eq!(
        state.tracked_locations(),
        22,
        "25 less the 3 in those groups"
    );
}

/// Window `index` of tenant "t" with traffic at `endpoints` only (20 calls each, at
/// `factor(endpoint)` × the usual latency): the model's row and the groups adding up
/// to it.
fn window_at(
    index: i64,
    endpoints: &[String],
    factor: impl Fn(&str) -> f64,
) -> (Vec<(String, RollupRow)>, Vec<DimensionWindow>) {
    let mut model = RollupPartial::new();
    let mut groups = Vec::new();
    for endpoint in endpoints {
        let partial = endpoint_calls(index, factor(endpoint));
        model.merge(&partial);
        groups.push(DimensionWindow {
            tenant: "t".to_string(),
            dimension: "endpoint".to_string(),
            minute_ms: window(index),
            group: DimensionValue::Value(endpoint.clone()),
            partial,
        });
    }
    let row = RollupRow {
        model: "m".to_string(),
        minute_ms: window(index),
        partial: model,
    };
    (vec![("t".to_string(), row)], groups)
}

/// Evaluates window `index` alone (its rows as `window_at` makes them).
fn evaluate_one(
    config: &EvaluatorConfig,
    state: &mut State,
    index: i64,
    (rows, groups): (Vec<(String, RollupRow)>, Vec<DimensionWindow>),
) -> Outcome {
    evaluate_chunk(
        config,
        state,
        window(index)..window(index + 1),
        rows,
        groups,
        Vec::new(),
    )
    .expect("evaluates")
}

#[test]
fn idle_locations_are_forgotten_unless_they_fire() {
    let config = EvaluatorConfig {
        location_idle: Duration::from_secs(10 * 60),
        ..located_config()
    };
    let all = endpoints();
    let chat = vec!["/chat".to_string()];
    let slow_e01 = |endpoint: &str| if endpoint == "/e01" { 5.0 } else { 1.0 };
    let mut state = State::default();
    // Windows 0..8 at every endpoint; 8..11 /e01 five times slower, which fires there.
    for index in 0..11 {
        let factor = |endpoint: &str| if index >= 8 { slow_e01(endpoint) } else { 1.0 };
        evaluate_one(&config, &mut state, index, window_at(index, &all, factor));
    }
    assert_eq!(state.tracked_locations(), 25);
    let e01 = LocationKey::new("t", "endpoint", "/e01");
    assert!(
        state
            .open_location_anomalies
            .keys()
            .any(|anomaly| anomaly.value == "/e01"),
        "/e01 fires: {:?}",
        state.open_location_anomalies
    );
    // From window 11 only /chat has traffic. The others were last seen at window 10:
    // tracked through window 19, forgotten at 20, ten minutes on; /e01 stays while its
    // anomaly fires (nothing could resolve it otherwise).
    let mut forgotten = 0;
    for index in 11..30 {
        let outcome = evaluate_one(&config, &mut state, index, window_at(index, &chat, |_| 1.0));
        forgotten += outcome.forgotten;
        let expected = if index < 20 { 25 } else { 2 };
        assert_eq!(state.tracked_locations(), expected, "window {index}");
    }
    assert_eq!(forgotten, 23);
    assert!(state.locations.contains_key(&e01));
    assert!(state
        .locations
        .contains_key(&LocationKey::new("t", "endpoint", "/chat")));
    assert_eq!(
        state.location_seen.keys().collect::<Vec<_>>(),
        state.locations.keys().collect::<Vec<_>>(),
        "a last window for each tracked location, none for the forgotten"
    );
    // A forgotten value that comes back starts afresh, as a new one would.
    let e02 = vec!["/chat".to_string(), "/e02".to_string()];
    evaluate_one(&config, &mut state, 30, window_at(30, &e02, |_| 1.0));
    assert_eq!(state.tracked_locations(), 3);
}

#[test]
fn locations_stay_bounded_by_use_as_values_come_and_go() {
    // Five values at a time, a new five every 20 windows, over 200 windows: 50 values
    // in all against a bound of 30. Forgotten once idle for 10 minutes, at most the
    // current five and the previous five are tracked, and no value is ever turned away.
    let config = EvaluatorConfig {
        location_idle: Duration::from_secs(10 * 60),
        max_location_keys: 30,
        ..located_config()
    };
    let mut state = State::default();
    let mut untracked = 0;
    let mut most = 0;
    for index in 0..200 {
        let generation = index / 20;
        let values: Vec<String> = (0..5).map(|n| format!("/g{generation}-{n}")).collect();
        let outcome = evaluate_one(
            &config,
            &mut state,
            index,
            window_at(index, &values, |_| 1.0),
        );
        untracked += outcome.untracked;
        most = most.max(state.tracked_locations());
    }
    assert_eq!(untracked, 0, "no value past the bound");
    assert_eq!(
        most, 10,
        "the current values and those idle for less than 10 minutes"
    );
    assert_eq!(
        state.tracked_locations(),
        5,
        "the last generation, 20 windows on"
    );
}

#[test]
fn locations_of_a_state_without_last_windows_start_their_idle_time_when_read() {
    let config = EvaluatorConfig {
        location_idle: Duration::from_secs(10 * 60),
        ..located_config()
    };
    let all = endpoints();
    let mut state = State::default();
    for index in 0..5 {
        evaluate_one(&config, &mut state, index, window_at(index, &all, |_| 1.0));
    }
    // As a state written before locations were forgotten reads: no last windows.
    let written = serde_json::to_value(&state).expect("writes");
    let mut earlier = written.clone();
    if let Some(fields) = earlier.as_object_mut() {
        fields.remove("location_seen");
    }
    assert_ne!(earlier, written, "the state had last windows to take out");
    let mut state: State = serde_json::from_value(earlier).expect("reads");
    // Neither forgotten at once nor kept: idle from window 5, the first evaluated.
    let chat = vec!["/chat".to_string()];
    for index in 5..20 {
        evaluate_one(&config, &mut state, index, window_at(index, &chat, |_| 1.0));
        let expected = if index < 15 { 25 } else { 1 };
        assert_eq!(state.tracked_locations(), expected, "window {index}");
    }
}
