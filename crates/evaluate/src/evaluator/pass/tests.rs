//! The core fed windows directly: no store, no clock. Windows are counted from `BASE`,
//! half an hour before a UTC midnight, so budgets' days end within a test.

use std::borrow::Cow;
use std::time::Duration;

use ais_model::{Event, EventId, Status};

use super::*;
use crate::alert::AlertKind;
use crate::budget::BudgetConfig;
use crate::detector::{BaselineKind, ErrorRateConfig, ZScoreConfig};
use crate::gate::GateConfig;
use crate::slo::{BurnAlertConfig, SloConfig};

mod locations;

const BASE: i64 = 86_400_000 - 30 * MINUTE_MS;

/// Start of window `index`.
fn window(index: i64) -> i64 {
    BASE + index * MINUTE_MS
}

/// 20 calls in window `index`: latencies `latency_ms + i` and TTFTs `50 + i` ms, 5
/// input and 10 output tokens, `cost_micros` each; the first `slow` take 3 s (TTFT
/// 1.5 s), the first `errors` fail.
fn calls(
    index: i64,
    latency_ms: f64,
    cost_micros: u64,
    slow: usize,
    errors: usize,
) -> RollupPartial {
    let mut partial = RollupPartial::new();
    for call in 0..20usize {
        let is_slow = call < slow;
        let event = Event {
            ttft_ms: Some(if is_slow { 1_500.0 } else { 50.0 + call as f64 }),
            input_tokens: Some(5),
            output_tokens: Some(10),
            cost_micros: Some(cost_micros),
            status: if call < errors {
                Status::Error
            } else {
                Status::Ok
            },
            ..Event::new(
                Cow::Borrowed("x"),
                EventId::Generated(call as u128),
                window(index) + call as i64,
                if is_slow {
                    3_000.0
                } else {
                    latency_ms + call as f64
                },
            )
        };
        partial.add(&event, false);
    }
    partial
}

/// Rows of one window: (tenant, model, partial).
type Rows = Vec<(&'static str, &'static str, RollupPartial)>;

/// Evaluates windows `indexes` chunk by chunk, as [`super::super::Evaluator::pass`]
/// does: `windows_per_read` at a time, the rows of each chunk read at once.
fn run(
    config: &EvaluatorConfig,
    state: &mut State,
    indexes: Range<i64>,
    rows: impl Fn(i64) -> Rows,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut next = indexes.start;
    while next < indexes.end {
        let end = (next + config.windows_per_read).min(indexes.end);
        let mut chunk_rows = Vec::new();
        for index in next..end {
            for (tenant, model, partial) in rows(index) {
                let row = RollupRow {
                    model: model.to_string(),
                    minute_ms: window(index),
                    partial,
                };
                chunk_rows.push((tenant.to_string(), row));
            }
        }
        let outcome = evaluate_windows(config, state, window(next)..window(end), chunk_rows)
            .expect("alerts serialise");
        outcomes.push(outcome);
        next = end;
    }
    outcomes
}

fn alerts_of(outcomes: &[Outcome]) -> Vec<&Alert> {
    outcomes.iter().flat_map(|o| &o.alerts).collect()
}

/// Baselines ready after 5 windows of at least 5 calls; 2 of 3 anomalous windows
/// fire, 3 normal ones resolve.
fn quick_detectors() -> EvaluatorConfig {
    let gate = GateConfig {
        k: 2,
        n: 3,
        cooldown: 2,
    };
    let zscore = ZScoreConfig {
        baseline: BaselineKind::Robust { windows: 8 },
        threshold: 4.0,
        min_baseline_windows: 5,
        min_requests: 5,
        min_relative_spread: 0.05,
        gate,
    };
    EvaluatorConfig {
        latency: zscore,
        ttft: zscore,
        spend: zscore,
        errors: ErrorRateConfig {
            min_baseline_windows: 5,
            min_requests: 5,
            gate,
            ..ErrorRateConfig::default()
        },
        windows_per_read: 4,
        log_alerts: false,
        ..EvaluatorConfig::default()
    }
}

/// Latency objective of model "m": 90% of calls within 2 s, alerting at 1.5× over 3
/// and 1 minutes.
fn fast_objective() -> SloConfig {
    SloConfig {
        name: "fast".into(),
        model: "m".into(),
        tenant: None,
        indicator: Indicator::Latency {
            threshold_ms: 2_000.0,
        },
        target: 0.9,
        window_days: 1,
        alerts: vec![BurnAlertConfig {
            factor: 1.5,
            long_minutes: 3,
            short_minutes: 1,
            severity: "page".into(),
        }],
    }
}

#[test]
fn a_latency_spike_fires_one_incident_that_resolves_once_the_gap_has_passed() {
    let config = quick_detectors();
    let mut state = State::default();
    // Windows 10, 11 and 12 have 8 calls of 3 s out of 20.
    let rows = |index: i64| {
        let slow = if (10..13).contains(&index) { 8 } else { 0 };
        vec![("t", "m", calls(index, 100.0, 1_000, slow, 0))]
    };
    let outcomes = run(&config, &mut state, 0..30, rows);

    let fired: Vec<&AnomalyRecord> = outcomes
        .iter()
        .flat_map(|o| &o.fired)
        .filter(|a| a.detector == "latency_p95_zscore" && a.tenant == "t")
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(
        fired[0].window_start_ms,
        window(11),
        "the second slow window"
    );
    let last_resolution = outcomes
        .iter()
        .flat_map(|o| &o.resolved)
        .filter(|r| r.tenant == "t" && r.model == "m")
        .map(|r| r.window_start_ms)
        .max()
        .expect("resolved");
    let of_t = |alert: &&Alert| alert.kind == AlertKind::Anomaly && alert.label("tenant") == "t";
    let alerts: Vec<&Alert> = alerts_of(&outcomes).into_iter().filter(of_t).collect();
    let transitions: Vec<(AlertState, i64, Option<i64>)> = alerts
        .iter()
        .map(|alert| (alert.state, alert.starts_at_ms, alert.ends_at_ms))
        .collect();
    assert_eq!(
        transitions,
        vec![
            (AlertState::Firing, window(11), None),
            (
                AlertState::Resolved,
                window(11),
                Some(last_resolution + MINUTE_MS)
            ),
        ]
    );
    assert_eq!(alerts[0].labels, alerts[1].labels);
    assert_eq!(alerts[0].label("alertname"), "AisAnomaly");
    assert_eq!(alerts[0].label("detector"), "", "detectors are annotations");
    let incident = alerts[1].incident.as_ref().expect("an incident");
    assert_eq!(alerts[0].label("incident"), incident.id);
    assert!(incident
        .detectors
        .contains(&"latency_p95_zscore".to_string()));
    assert_eq!(incident.end_ms, Some(last_resolution));
    // Resolved with the chunk holding the first window more than the gap (10 min)
    // after the last member's resolution, not before.
    let gap_windows = 10;
    let resolved_in = outcomes
        .iter()
        .position(|o| {
            o.alerts
                .iter()
                .any(|a| of_t(&a) && a.state == AlertState::Resolved)
        })
        .expect("resolved");
    let chunk_start = window(resolved_in as i64 * config.windows_per_read);
    let chunk_end = chunk_start + config.windows_per_read * MINUTE_MS;
    let over_at = last_resolution + gap_windows * MINUTE_MS;
    assert!(
        (chunk_start..chunk_end).contains(&over_at),
        "over at {over_at}, resolved in [{chunk_start}, {chunk_end})"
    );
    assert!(state.open_anomalies.is_empty() && state.incidents.is_empty());
    let evaluated: usize = outcomes.iter().map(|o| o.evaluated).sum();
    assert_eq!(evaluated, 30);
}

#[test]
fn empty_windows_still_advance_objectives_and_budgets() {
    let config = EvaluatorConfig {
        slos: vec![fast_objective()],
        budgets: vec![BudgetConfig {
            tenant: "t".into(),
            scope: crate::budget::BudgetScope::Tenant,
            label: None,
            model: None,
            daily_usd_micros: Some(10_000),
            monthly_usd_micros: None,
            daily_tokens: None,
            monthly_tokens: None,
            thresholds: vec![100],
            forecast: None,
        }],
        ..quick_detectors()
    };
    let mut state = State::default();
    // Windows 25..28 are 40% slow and spend $0.02 each; nothing after them. The day
    // ends at window 30.
    let rows = |index: i64| match index {
        25..28 => vec![("t", "m", calls(index, 100.0, 1_000, 8, 0))],
        _ => Vec::new(),
    };
    let outcomes = run(&config, &mut state, 25..36, rows);

    let transitions: Vec<(&str, AlertState, i64, Option<i64>)> = alerts_of(&outcomes)
        .iter()
        .map(|a| (a.label("alertname"), a.state, a.starts_at_ms, a.ends_at_ms))
        .collect();
    assert_eq!(
        transitions,
        vec![
            ("AisSloBurnRate", AlertState::Firing, window(25), None),
            ("AisBudget", AlertState::Firing, window(25), None),
            // The short span of the empty window 28 burns nothing.
            (
                "AisSloBurnRate",
                AlertState::Resolved,
                window(25),
                Some(window(29))
            ),
            // The first window of the next day ends the budget's day.
            (
                "AisBudget",
                AlertState::Resolved,
                window(25),
                Some(window(30))
            ),
        ]
    );
    let tracker = &state.slos[&ObjectiveKey::new("fast", "t")];
    assert_eq!(tracker.last_window_ms(), Some(window(35)));
    assert_eq!(state.budgets["t"].last_window_ms(), Some(window(35)));
    let evaluated: usize = outcomes.iter().map(|o| o.evaluated).sum();
    assert_eq!(evaluated, 3, "only windows with rows count as evaluated");
}

#[test]
fn keys_past_the_bound_are_counted_not_tracked() {
    let config = EvaluatorConfig {
        max_keys: 2,
        slos: vec![fast_objective()],
        ..quick_detectors()
    };
    let mut state = State::default();
    let rows = |index: i64| {
        ["t", "u", "v"]
            .into_iter()
            .map(|tenant| (tenant, "m", calls(index, 100.0, 1_000, 0, 0)))
            .collect()
    };
    let outcomes = run(&config, &mut state, 0..3, rows);

    let keys: Vec<&DetectorKey> = state.keys.keys().collect();
    assert_eq!(
        keys,
        [&DetectorKey::new("t", "m"), &DetectorKey::new("u", "m")]
    );
    let objectives: Vec<&ObjectiveKey> = state.slos.keys().collect();
    assert_eq!(
        objectives,
        [
            &ObjectiveKey::new("fast", "t"),
            &ObjectiveKey::new("fast", "u")
        ]
    );
    // Per window: (v, m), (*, m), (t, *), (u, *), (v, *) and the objective of v.
    let untracked: u64 = outcomes.iter().map(|o| o.untracked).sum();
    assert_eq!(untracked, 3 * 6);
}

/// The scenario of the fixtures in `testdata/`: tenants t (models m and n) and u
/// (model m), every detector of the version that wrote them (TTFT p95, not the TTFT
/// fit), two objectives and two budgets, renewals every 4 min.
fn scenario_config() -> EvaluatorConfig {
    let up = SloConfig {
        name: "up".into(),
        tenant: Some("u".into()),
        indicator: Indicator::Availability,
        target: 0.95,
        alerts: vec![BurnAlertConfig {
            factor: 2.0,
            long_minutes: 3,
            short_minutes: 1,
            severity: "ticket".into(),
        }],
        ..fast_objective()
    };
    let daily = BudgetConfig {
        tenant: "t".into(),
        scope: crate::budget::BudgetScope::Tenant,
        label: None,
        model: None,
        daily_usd_micros: Some(1_000_000),
        monthly_usd_micros: None,
        daily_tokens: Some(20_000),
        monthly_tokens: None,
        thresholds: vec![50, 100],
        forecast: None,
    };
    let monthly = BudgetConfig {
        tenant: "u".into(),
        scope: crate::budget::BudgetScope::Tenant,
        label: None,
        model: Some("m".into()),
        daily_usd_micros: None,
        daily_tokens: None,
        monthly_tokens: Some(1_000_000),
        thresholds: vec![50],
        forecast: None,
        ..daily.clone()
    };
    EvaluatorConfig {
        first_lookback: Duration::from_secs(20 * 60),
        max_keys: 1_000,
        slos: vec![fast_objective(), up],
        budgets: vec![daily, monthly],
        sinks: vec!["webhook".into(), "alertmanager".into()],
        renew_sinks: vec!["alertmanager".into()],
        renew_interval: Duration::from_secs(4 * 60),
        ttft_p95: true,
        ttft_input_fit: false,
        ..quick_detectors()
    }
}

/// Windows 16..20: t's model m is 40% slow; 17..20: u fails half its calls; 25..28:
/// no traffic.
fn scenario_rows(index: i64) -> Rows {
    if (25..28).contains(&index) {
        return Vec::new();
    }
    let slow = if (16..20).contains(&index) { 8 } else { 0 };
    let errors = if (17..20).contains(&index) { 10 } else { 0 };
    vec![
        ("t", "m", calls(index, 100.0, 1_000, slow, 0)),
        ("t", "n", calls(index, 200.0, 1_000, 0, 0)),
        ("u", "m", calls(index, 100.0, 500, 0, errors)),
    ]
}

/// `sink id` of each outbox entry, each sink's in queue order, webhook first.
fn queued_ids(outcomes: &[Outcome]) -> Vec<String> {
    let mut lines = Vec::new();
    for sink in ["webhook", "alertmanager"] {
        for entry in outcomes.iter().flat_map(|o| &o.outbox) {
            if entry.sink == sink {
                let alert: Alert = serde_json::from_slice(&entry.payload).expect("an alert");
                assert_eq!(entry.key, alert.id);
                lines.push(format!("{sink} {}", entry.key));
            }
        }
    }
    lines
}

/// The section (`0..20` or `20..40`) of an outbox fixture.
fn section_of(fixture: &str, section: &str) -> Vec<String> {
    let (first, second) = fixture
        .split_once("# windows 20..40\n")
        .expect("two sections");
    let lines = match section {
        "0..20" => first
            .strip_prefix("# windows 0..20\n")
            .expect("first section"),
        _ => second,
    };
    lines.lines().map(str::to_string).collect()
}

/// What the evaluator queued before typed keys and the alert builder, per section.
fn queued_before(section: &str) -> Vec<String> {
    section_of(include_str!("../testdata/outbox_v1.txt"), section)
}

/// What it queued once anomalies were delivered as incidents, per section.
fn queued_with_incidents(section: &str) -> Vec<String> {
    section_of(include_str!("../testdata/outbox_v2.txt"), section)
}

/// Ids of the per-detector alerts earlier versions queued for the anomalies that
/// fired and resolved in `outcomes`.
fn per_detector_ids(outcomes: &[Outcome]) -> BTreeSet<String> {
    let mut fired_at = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for outcome in outcomes {
        for anomaly in &outcome.fired {
            let key = AnomalyKey::new(&anomaly.tenant, &anomaly.model, &anomaly.detector);
            fired_at.insert(key, anomaly.window_start_ms);
            ids.insert(alerts::anomaly_fired(anomaly).id);
        }
        for resolution in &outcome.resolved {
            let key = AnomalyKey::new(&resolution.tenant, &resolution.model, &resolution.detector);
            let start = fired_at.remove(&key).unwrap_or(resolution.window_start_ms);
            ids.insert(alerts::anomaly_resolved(resolution, start).id);
        }
    }
    ids
}

#[test]
fn the_scenario_queues_what_earlier_versions_did_with_incidents_for_anomalies() {
    let config = scenario_config();
    let mut state = State::default();
    let outcomes = run(&config, &mut state, 0..20, scenario_rows);
    let queued = queued_ids(&outcomes);
    assert_eq!(queued, queued_with_incidents("0..20"));
    let written = serde_json::to_string(&state).expect("writes");
    let stored = include_str!("../testdata/state_v2.json").trim_end();
    assert!(written == stored, "the state differs from the fixture");

    // Against the version before incidents: its per-detector anomaly entries (and
    // their renewals) are gone, the incidents' are new, the rest is as it was, in
    // its order and under its ids.
    let per_detector = per_detector_ids(&outcomes);
    let of_anomaly = |line: &String| {
        let id = line.split_once(' ').map_or("", |(_, id)| id);
        let alert_id = id
            .split_once("-renewed-")
            .map_or(id, |(alert_id, _)| alert_id);
        per_detector.contains(alert_id)
    };
    let before: Vec<String> = queued_before("0..20")
        .into_iter()
        .filter(|line| !of_anomaly(line))
        .collect();
    assert!(
        before.len() < queued_before("0..20").len(),
        "the scenario has anomalies"
    );
    let incident_ids: BTreeSet<String> = outcomes
        .iter()
        .flat_map(|o| &o.outbox)
        .filter_map(|entry| {
            let alert: Alert = serde_json::from_slice(&entry.payload).ok()?;
            alert.incident.is_some().then_some(entry.key.clone())
        })
        .collect();
    assert!(!incident_ids.is_empty(), "the scenario has incidents");
    let today: Vec<String> = queued
        .into_iter()
        .filter(|line| !incident_ids.iter().any(|id| line.ends_with(id.as_str())))
        .collect();
    assert_eq!(today, before);
}

#[test]
fn a_state_stored_with_incidents_resumes_with_their_alerts() {
    let config = scenario_config();
    let stored = include_str!("../testdata/state_v2.json");
    let mut state: State = serde_json::from_str(stored).expect("reads");
    assert!(!state.incidents.is_empty(), "stored mid-incident");
    let outcomes = run(&config, &mut state, 20..40, scenario_rows);
    assert_eq!(queued_ids(&outcomes), queued_with_incidents("20..40"));
    assert!(state.firing.is_empty() && state.open_anomalies.is_empty());
    assert!(state.incidents.is_empty(), "{:?}", state.incidents);
}

#[test]
fn a_state_stored_by_earlier_versions_resumes_with_their_alerts() {
    let config = scenario_config();
    let stored = include_str!("../testdata/state_v1.json");
    let mut state: State = serde_json::from_str(stored).expect("reads");
    let outcomes = run(&config, &mut state, 20..40, scenario_rows);
    assert_eq!(queued_ids(&outcomes), queued_before("20..40"));
    let evaluated: usize = outcomes.iter().map(|o| o.evaluated).sum();
    assert_eq!(evaluated, 17, "20 windows, 3 of them empty");
    assert!(state.firing.is_empty() && state.open_anomalies.is_empty());
}

#[test]
fn replaying_windows_on_the_restored_state_gives_the_same_outcome() {
    let config = scenario_config();
    let mut state = State::default();
    run(&config, &mut state, 0..16, scenario_rows);
    let committed = serde_json::to_vec(&state).expect("writes");
    // The chunk where the incident starts, evaluated, then replayed as after a crash
    // before its commit: from the state read back.
    let first = run(&config, &mut state, 16..20, scenario_rows);
    let mut restored: State = serde_json::from_slice(&committed).expect("reads");
    let replayed = run(&config, &mut restored, 16..20, scenario_rows);
    assert!(!first[0].fired.is_empty() && !first[0].outbox.is_empty());
    assert_eq!(first, replayed);
    assert_eq!(
        serde_json::to_vec(&state).expect("writes"),
        serde_json::to_vec(&restored).expect("writes")
    );
}

#[test]
fn renewals_come_before_transitions_updates_after_and_both_only_to_renewing_sinks() {
    let config = scenario_config();
    let mut state = State::default();
    let outcomes = run(&config, &mut state, 0..20, scenario_rows);
    let updated = |entry: &OutboxAlert| entry.key.contains("-joined-");
    for outcome in &outcomes {
        let renewed = |entry: &OutboxAlert| entry.key.contains("-renewed-");
        let first_transition = outcome.outbox.iter().position(|e| !renewed(e));
        let last_renewal = outcome.outbox.iter().rposition(renewed);
        if let (Some(first), Some(last)) = (first_transition, last_renewal) {
            assert!(last < first, "renewals first: {:?}", outcome.outbox);
        }
        assert!(outcome
            .outbox
            .iter()
            .filter(|entry| renewed(entry) || updated(entry))
            .all(|entry| entry.sink == "alertmanager"));
        // Updates of incidents that grew come after every transition.
        let last_transition = outcome
            .outbox
            .iter()
            .rposition(|e| !renewed(e) && !updated(e));
        let first_update = outcome.outbox.iter().position(updated);
        if let (Some(last), Some(first)) = (last_transition, first_update) {
            assert!(last < first, "updates last: {:?}", outcome.outbox);
        }
        let transitions = outcome
            .outbox
            .iter()
            .filter(|e| !renewed(e) && !updated(e))
            .count();
        assert_eq!(transitions, outcome.alerts.len() * config.sinks.len());
    }
    let renewals = outcomes
        .iter()
        .flat_map(|o| &o.outbox)
        .filter(|e| e.key.contains("-renewed-"));
    assert!(renewals.count() > 0, "the scenario renews");
}

/// A day of one tenant's model at 50 requests a window: three hours where a fifth of
/// prompts exceed 3,000 tokens (3% otherwise) from window 300, and TTFT × `factor` over
/// `regression`; what the default detectors of the model (latency, TTFT, errors; per
/// tenant and across tenants) fire, as (window, detector). The tenant's spend
/// detectors are left out: more long prompts are more tokens, which `tokens_zscore`
/// is there to report.
fn prompt_mix_day(regression: Range<i64>, factor: f64) -> Vec<(i64, String)> {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use crate::ttft_fit::traffic;

    let mut rng = SmallRng::seed_from_u64(25);
    let shift = 300..480;
    let windows: Vec<RollupPartial> = (0..600usize)
        .map(|index| {
            let regression = regression.start as usize..regression.end as usize;
            let (share, ttft_factor) = traffic::day(index, &shift, &regression, factor);
            traffic::window(&mut rng, 50, share, ttft_factor)
        })
        .collect();
    let config = EvaluatorConfig {
        windows_per_read: 60,
        log_alerts: false,
        ..EvaluatorConfig::default()
    };
    let mut state = State::default();
    let outcomes = run(&config, &mut state, 0..600, |index| {
        let partial = windows[index as usize].clone();
        vec![("t", "m", partial)]
    });
    outcomes
        .iter()
        .flat_map(|outcome| &outcome.fired)
        .filter(|fired| fired.model != ALL_MODELS)
        .map(|fired| {
            (
                (fired.window_start_ms - BASE) / MINUTE_MS,
                fired.detector.clone(),
            )
        })
        .collect()
}

#[test]
fn a_shift_to_long_prompts_fires_no_default_detector() {
    let fired = prompt_mix_day(0..0, 1.0);
    assert!(fired.is_empty(), "{fired:?}");
}

#[test]
fn a_ttft_regression_during_a_shift_to_long_prompts_fires_the_ttft_fit() {
    let fired = prompt_mix_day(400..420, 2.0);
    // The tenant's model and the model across tenants, each once, within 3 windows.
    let ttft: Vec<_> = fired
        .iter()
        .filter(|(_, detector)| detector == "ttft_input_fit_zscore")
        .collect();
    assert_eq!(ttft.len(), 2, "{fired:?}");
    assert!(
        ttft.iter().all(|(window, _)| (400..403).contains(window)),
        "{fired:?}"
    );
}

#[test]
fn a_state_stored_before_the_ttft_fit_loads_and_grows_one() {
    // Today's defaults: the TTFT fit instead of the TTFT p95.
    let config = EvaluatorConfig {
        ttft_p95: false,
        ttft_input_fit: true,
        ..scenario_config()
    };
    let stored = include_str!("../testdata/state_v1.json");
    assert!(!stored.contains("ttft_input_fit"));
    let mut state: State = serde_json::from_str(stored).expect("reads");
    let outcomes = run(&config, &mut state, 20..40, scenario_rows);
    let evaluated: usize = outcomes.iter().map(|o| o.evaluated).sum();
    assert_eq!(evaluated, 17);
    let written = serde_json::to_string(&state).expect("writes");
    // Every (tenant, model) key and model across tenants: t/m, t/n, u/m, */m, */n.
    assert_eq!(
        written.matches("\"ttft_input_fit\"").count(),
        5,
        "{written}"
    );
    let restored: State = serde_json::from_str(&written).expect("reads back");
    assert_eq!(
        serde_json::to_string(&restored).expect("writes"),
        written,
        "the grown state reads back as written"
    );
}

#[test]
fn a_ttft_p95_anomaly_fired_before_the_detector_was_turned_off_resolves() {
    let on = EvaluatorConfig {
        ttft_p95: true,
        ..quick_detectors()
    };
    let off = EvaluatorConfig {
        ttft_p95: false,
        ..quick_detectors()
    };
    let rows = |index: i64| {
        let slow = if (10..14).contains(&index) { 8 } else { 0 };
        vec![("t", "m", calls(index, 100.0, 1_000, slow, 0))]
    };
    let ttft_p95 = |outcomes: &[Outcome]| -> (usize, usize) {
        let fired = outcomes.iter().flat_map(|o| &o.fired);
        let resolved = outcomes.iter().flat_map(|o| &o.resolved);
        (
            fired.filter(|a| a.detector == "ttft_p95_zscore").count(),
            resolved.filter(|r| r.detector == "ttft_p95_zscore").count(),
        )
    };
    let mut state = State::default();
    let before = run(&on, &mut state, 0..12, rows);
    // Fired for the tenant's model and for the model across tenants.
    assert_eq!(ttft_p95(&before), (2, 0));
    let after = run(&off, &mut state, 12..40, rows);
    assert_eq!(ttft_p95(&after), (0, 2), "resolved, never fired again");
    assert!(state
        .open_anomalies
        .keys()
        .all(|key| !format!("{key:?}").contains("ttft_p95")));
}

/// Detectors fast enough for a test, two receivers (Alertmanager renewing, hourly).
fn incident_config() -> EvaluatorConfig {
    EvaluatorConfig {
        sinks: vec!["webhook".into(), "alertmanager".into()],
        renew_sinks: vec!["alertmanager".into()],
        renew_interval: Duration::from_secs(3600),
        ..quick_detectors()
    }
}

/// Tenant t, models `models`: slow calls in windows 10..13 (latency and TTFT
/// detectors fire, and resolve a few windows later), failing calls in 18..21 (the
/// error rate fires after they resolved, within the gap: it joins).
fn incident_rows(models: &'static [&'static str]) -> impl Fn(i64) -> Rows {
    move |index| {
        let slow = if (10..13).contains(&index) { 8 } else { 0 };
        let errors = if (18..21).contains(&index) { 10 } else { 0 };
        models
            .iter()
            .map(|model| ("t", *model, calls(index, 100.0, 1_000, slow, errors)))
            .collect()
    }
}

/// Each outbox entry of tenant t's incidents: (sink, incident id, state, kind of
/// entry), in queue order.
fn incident_entries(outcomes: &[Outcome]) -> Vec<(String, String, AlertState, &'static str)> {
    outcomes
        .iter()
        .flat_map(|o| &o.outbox)
        .filter_map(|entry| {
            let alert: Alert = serde_json::from_slice(&entry.payload).expect("an alert");
            let incident = alert.incident.filter(|incident| incident.tenant == "t")?;
            let what = if entry.key.contains("-renewed-") {
                "renewal"
            } else if entry.key.contains("-joined-") {
                "update"
            } else {
                "transition"
            };
            Some((entry.sink.clone(), incident.id, alert.state, what))
        })
        .collect()
}

/// The anomalies as the store keeps them after `outcomes` are committed: each fired
/// record, resolved by its resolution.
fn stored_anomalies(outcomes: &[Outcome]) -> Vec<AnomalyRecord> {
    let mut records: Vec<AnomalyRecord> = Vec::new();
    for outcome in outcomes {
        let mut events: Vec<(i64, Option<&AnomalyRecord>, Option<&Resolution>)> = Vec::new();
        events.extend(
            outcome
                .fired
                .iter()
                .map(|a| (a.window_start_ms, Some(a), None)),
        );
        events.extend(
            outcome
                .resolved
                .iter()
                .map(|r| (r.window_start_ms, None, Some(r))),
        );
        events.sort_by_key(|(window, _, _)| *window);
        for (_, fired, resolved) in events {
            if let Some(anomaly) = fired {
                records.push(anomaly.clone());
            }
            if let Some(resolution) = resolved {
                let open = records.iter_mut().find(|record| {
                    record.tenant == resolution.tenant
                        && record.model == resolution.model
                        && record.location == resolution.location
                        && record.detector == resolution.detector
                        && record.state == AnomalyState::Firing
                });
                if let Some(record) = open {
                    record.state = AnomalyState::Resolved;
                    record.resolved_window_ms = Some(resolution.window_start_ms);
                }
            }
        }
    }
    records
}

#[test]
fn four_detectors_on_one_model_within_the_gap_are_one_incident_delivered_once_per_receiver() {
    let config = incident_config();
    let mut state = State::default();
    let outcomes = run(&config, &mut state, 0..40, incident_rows(&["m"]));

    let detectors: BTreeSet<&str> = outcomes
        .iter()
        .flat_map(|o| &o.fired)
        .filter(|a| a.tenant == "t" && a.model == "m")
        .map(|a| a.detector.as_str())
        .collect();
    assert!(detectors.len() >= 4, "{detectors:?}");
    let of_t_m = |tenant: &str, model: &str| tenant == "t" && model == "m";
    let errors_fired = outcomes
        .iter()
        .flat_map(|o| &o.fired)
        .find(|a| of_t_m(&a.tenant, &a.model) && a.detector == "error_rate_wilson")
        .map(|a| a.window_start_ms)
        .expect("the error rate fired");
    let others_resolved = outcomes
        .iter()
        .flat_map(|o| &o.resolved)
        .filter(|r| of_t_m(&r.tenant, &r.model) && r.detector != "error_rate_wilson")
        .map(|r| r.window_start_ms)
        .max()
        .expect("the others resolved");
    // Not overlapping: joined across a quiet stretch shorter than the gap.
    assert!(
        others_resolved < errors_fired,
        "{others_resolved} {errors_fired}"
    );

    let entries = incident_entries(&outcomes);
    let ids: BTreeSet<&str> = entries.iter().map(|(_, id, _, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one incident: {entries:?}");
    let transitions = |sink: &str| -> Vec<AlertState> {
        entries
            .iter()
            .filter(|(entry_sink, _, _, what)| entry_sink == sink && *what == "transition")
            .map(|(_, _, state, _)| *state)
            .collect()
    };
    for sink in ["webhook", "alertmanager"] {
        assert_eq!(
            transitions(sink),
            [AlertState::Firing, AlertState::Resolved],
            "{sink}: {entries:?}"
        );
    }
    // The webhook gets those two only; Alertmanager, an update when the error rate
    // joined (same labels, the detectors as of then), before the resolution.
    assert!(entries
        .iter()
        .all(|(sink, _, _, what)| sink == "alertmanager" || *what == "transition"));
    let alertmanager: Vec<&str> = entries
        .iter()
        .filter(|(sink, _, _, _)| sink == "alertmanager")
        .map(|(_, _, _, what)| *what)
        .collect();
    assert_eq!(alertmanager, ["transition", "update", "transition"]);

    // What was delivered is what `GET /v1/incidents` computes from the stored anomalies.
    let resolved: Vec<&Alert> = alerts_of(&outcomes)
        .into_iter()
        .filter(|a| a.label("tenant") == "t" && a.state == AlertState::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    let delivered = resolved[0].incident.as_ref().expect("an incident");
    let computed = crate::incident::group(&stored_anomalies(&outcomes), config.incident_gap);
    let computed = computed
        .iter()
        .find(|incident| incident.tenant == "t" && incident.model == "m")
        .expect("computed");
    assert_eq!(delivered.id, computed.id);
    assert_eq!(delivered.start_ms, computed.start_ms);
    assert_eq!(delivered.end_ms, computed.end_ms);
    assert_eq!(delivered.peak, computed.peak);
    assert_eq!(delivered.detectors, computed.detectors);
    assert_eq!(delivered.metrics, computed.metrics);
    assert_eq!(
        resolved[0].annotations["detectors"],
        computed.detectors.join(", ")
    );
    assert!(state.incidents.is_empty());
}

#[test]
fn two_models_are_two_incidents() {
    let config = incident_config();
    let mut state = State::default();
    let outcomes = run(&config, &mut state, 0..40, incident_rows(&["m", "n"]));
    let entries = incident_entries(&outcomes);
    let mut per_incident: BTreeMap<&str, Vec<AlertState>> = BTreeMap::new();
    for (sink, id, state, what) in &entries {
        if sink == "webhook" && *what == "transition" {
            per_incident.entry(id.as_str()).or_default().push(*state);
        }
    }
    assert_eq!(per_incident.len(), 2, "{entries:?}");
    assert!(per_incident
        .values()
        .all(|states| states == &[AlertState::Firing, AlertState::Resolved]));
    let models: BTreeSet<String> = alerts_of(&outcomes)
        .iter()
        .filter(|a| a.label("tenant") == "t" && a.incident.is_some())
        .map(|a| a.label("model").to_string())
        .collect();
    assert_eq!(models, BTreeSet::from(["m".to_string(), "n".to_string()]));
}

#[test]
fn a_restart_mid_incident_neither_fires_it_again_nor_loses_its_resolution() {
    let config = incident_config();
    let rows = incident_rows(&["m"]);
    let mut uninterrupted = State::default();
    let whole = run(&config, &mut uninterrupted, 0..40, &rows);

    // Stopped after window 20: the incident fired, its first members resolved, the
    // error rate joined. The next run starts from the state as committed.
    let mut state = State::default();
    let before = run(&config, &mut state, 0..20, &rows);
    assert!(!state.incidents.is_empty(), "mid-incident");
    let committed = serde_json::to_vec(&state).expect("writes");
    let mut restored: State = serde_json::from_slice(&committed).expect("reads");
    let after = run(&config, &mut restored, 20..40, &rows);

    let mut entries = incident_entries(&before);
    let after_entries = incident_entries(&after);
    assert!(
        after_entries
            .iter()
            .all(|(_, _, state, what)| *state == AlertState::Resolved && *what == "transition"),
        "only the resolution after the restart: {after_entries:?}"
    );
    assert_eq!(
        after_entries.len(),
        2,
        "once per receiver: {after_entries:?}"
    );
    entries.extend(after_entries);
    assert_eq!(entries, incident_entries(&whole), "as if it never stopped");
}

/// A read of each user's spend in the day (`micros`), as the store answers it.
fn users_read(budget: usize, users: &[(&str, u64)]) -> Vec<BudgetRead> {
    let values = users
        .iter()
        .map(|(user, micros)| ais_store::usage::ValueSpend {
            value: (*user).to_string(),
            day_micros: *micros,
            month_micros: *micros,
            ..Default::default()
        })
        .collect();
    vec![BudgetRead {
        budget,
        answer: SpendAnswer { values, cut: false },
    }]
}

#[test]
fn ledger_fed_budgets_fire_per_user_once_across_a_restart_and_resolve_with_the_day() {
    use ais_rollup::usage::UsageScope;

    use crate::budget::BudgetScope;
    let each = BudgetConfig {
        tenant: "t".to_string(),
        model: None,
        scope: BudgetScope::Each(UsageScope::UserId),
        label: None,
        daily_usd_micros: Some(1_000_000),
        monthly_usd_micros: None,
        daily_tokens: None,
        monthly_tokens: None,
        thresholds: vec![50, 100],
        forecast: None,
    };
    let config = EvaluatorConfig {
        budgets: vec![each],
        sinks: vec!["webhook".to_string()],
        ..EvaluatorConfig::default()
    };
    let mut state = State::default();
    let chunk = |state: &mut State, from: i64, reads: Vec<BudgetRead>| {
        evaluate_chunk(
            &config,
            state,
            window(from)..window(from + 1),
            Vec::new(),
            Vec::new(),
            reads,
        )
        .expect("evaluates")
    };
    let first = chunk(&mut state, 0, users_read(0, &[("u-1", 600_000)]));
    assert_eq!(first.alerts.len(), 1);
    let alert = &first.alerts[0];
    assert_eq!(alert.kind, AlertKind::Budget);
    assert_eq!(alert.label("scope"), "user_id");
    assert_eq!(alert.label("scope_value"), "u-1");
    assert_eq!(alert.label("budget"), "t/each user_id");
    assert_eq!(alert.label("threshold"), "50%");
    assert_eq!(
        alert.starts_at_ms,
        window(0),
        "the pass's last final window"
    );
    assert_eq!(first.outbox.len(), 1, "queued for the sink");

    // Saved and restored (a restart): the same read fires nothing; another user's
    // read fires theirs, with an identity of its own.
    let saved = serde_json::to_vec(&state).expect("serialises");
    let mut restored: State = serde_json::from_slice(&saved).expect("reads");
    let again = chunk(
        &mut restored,
        1,
        users_read(0, &[("u-1", 600_000), ("u-2", 1_000_000)]),
    );
    let fired: Vec<(&str, &str)> = again
        .alerts
        .iter()
        .map(|a| (a.label("scope_value"), a.label("threshold")))
        .collect();
    assert_eq!(fired, [("u-2", "50%"), ("u-2", "100%")]);
    assert_ne!(again.alerts[0].labels, alert.labels);

    // The next UTC day (BASE is 30 minutes before midnight), where nobody has spent
    // yet: what fired resolves.
    let next_day = chunk(&mut restored, 30, users_read(0, &[]));
    assert!(next_day
        .alerts
        .iter()
        .all(|a| a.state == AlertState::Resolved));
    assert_eq!(next_day.alerts.len(), 3, "{:?}", next_day.alerts);
    assert_eq!(restored.kept_budget_values(), 0);
}

#[test]
fn ledger_fed_values_past_the_bound_are_counted_not_alerted() {
    use ais_rollup::usage::UsageScope;

    use crate::budget::BudgetScope;
    let config = EvaluatorConfig {
        budgets: vec![BudgetConfig {
            tenant: "t".to_string(),
            model: None,
            scope: BudgetScope::Each(UsageScope::Key),
            label: None,
            daily_usd_micros: None,
            monthly_usd_micros: None,
            daily_tokens: None,
            monthly_tokens: Some(10),
            thresholds: vec![100],
            forecast: None,
        }],
        max_budget_values: 1,
        ..EvaluatorConfig::default()
    };
    let mut state = State::default();
    let read = vec![BudgetRead {
        budget: 0,
        answer: SpendAnswer {
            values: ["a", "b", "c"]
                .iter()
                .map(|key| ais_store::usage::ValueSpend {
                    value: (*key).to_string(),
                    month_tokens: 10,
                    ..Default::default()
                })
                .collect(),
            cut: false,
        },
    }];
    let outcome = evaluate_chunk(
        &config,
        &mut state,
        window(0)..window(2),
        Vec::new(),
        Vec::new(),
        read,
    )
    .expect("evaluates");
    assert_eq!(outcome.alerts.len(), 1);
    assert_eq!(outcome.alerts[0].label("scope_value"), "a");
    assert_eq!(outcome.alerts[0].starts_at_ms, window(1));
    assert_eq!(outcome.budget_values_untracked, 2);
}

#[test]
fn values_past_the_bound_of_a_pass_are_alerted_at_the_next_passes() {
    use ais_rollup::usage::UsageScope;

    use crate::budget::BudgetScope;
    let config = EvaluatorConfig {
        budgets: vec![BudgetConfig {
            tenant: "t".to_string(),
            model: None,
            scope: BudgetScope::Each(UsageScope::UserId),
            label: None,
            daily_usd_micros: Some(1_000_000),
            monthly_usd_micros: None,
            daily_tokens: None,
            monthly_tokens: None,
            thresholds: vec![50],
            forecast: None,
        }],
        budget_values_per_pass: 2,
        ..EvaluatorConfig::default()
    };
    let users = [("u-1", 900_000), ("u-2", 800_000), ("u-3", 700_000)];
    let mut state = State::default();
    let mut fired = Vec::new();
    let mut deferred = Vec::new();
    for index in 0..3 {
        let outcome = evaluate_chunk(
            &config,
            &mut state,
            window(index)..window(index + 1),
            Vec::new(),
            Vec::new(),
            users_read(0, &users),
        )
        .expect("evaluates");
        fired.extend(
            outcome
                .alerts
                .iter()
                .map(|a| (index, a.label("scope_value").to_string())),
        );
        deferred.push(outcome.budget_values_deferred);
    }
    assert_eq!(
        fired,
        [
            (0, "u-1".to_string()),
            (0, "u-2".to_string()),
            (1, "u-3".to_string())
        ]
    );
    assert_eq!(deferred, [1, 0, 0]);
    assert_eq!(state.kept_budget_values(), 3);
}

/// A budget of `scope` in tenant `t` with a daily limit of $10, thresholds 50% and
/// 100%, and a forecast of `hours` over the last hour, read from 10% of the limit.
fn forecasting_budget(scope: crate::budget::BudgetScope, hours: u32) -> BudgetConfig {
    BudgetConfig {
        tenant: "t".to_string(),
        model: None,
        scope,
        label: None,
        daily_usd_micros: Some(10_000_000),
        monthly_usd_micros: None,
        daily_tokens: None,
        monthly_tokens: None,
        thresholds: vec![50, 100],
        forecast: Some(crate::budget::Forecast {
            hours,
            lookback_minutes: 60,
            from_percent: 10,
        }),
    }
}

/// The read of `config.budgets[budget]` as the engine answers it: each (value, spend of
/// the day in micro-dollars) at or past the budget's read floor, the highest first.
/// `BudgetScope::One` budgets are read whatever they spent.
fn floor_read(config: &EvaluatorConfig, budget: usize, values: &[(&str, u64)]) -> BudgetRead {
    let of = &config.budgets[budget];
    let limit = of.daily_usd_micros.unwrap_or(u64::MAX);
    let floor = u64::from(of.read_floor_percent());
    let one = matches!(of.scope, crate::budget::BudgetScope::One { .. });
    let mut read: Vec<(&str, u64)> = values
        .iter()
        .copied()
        .filter(|(_, micros)| one || micros * 100 >= limit * floor)
        .collect();
    read.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    BudgetRead {
        budget,
        answer: SpendAnswer {
            values: read
                .into_iter()
                .map(|(value, micros)| ais_store::usage::ValueSpend {
                    value: value.to_string(),
                    day_micros: micros,
                    month_micros: micros,
                    ..Default::default()
                })
                .collect(),
            cut: false,
        },
    }
}

/// The first window of day 1 (`BASE` is 30 minutes before its midnight).
const DAY_1: i64 = 30;

/// One pass per minute of day 1 (and on) for `minutes`, each evaluating that minute's
/// window with the reads `reads(minute)` taken at it, as the evaluator does once
/// caught up; returns (minute, alert) of every alert and the budget values left
/// unsampled.
fn passes_of_minutes(
    config: &EvaluatorConfig,
    state: &mut State,
    minutes: Range<i64>,
    reads: impl Fn(i64) -> Vec<BudgetRead>,
) -> (Vec<(i64, Alert)>, u64) {
    let mut alerts = Vec::new();
    let mut unsampled = 0;
    for minute in minutes {
        let index = DAY_1 + minute;
        let outcome = evaluate_chunk(
            config,
            state,
            window(index)..window(index + 1),
            Vec::new(),
            Vec::new(),
            reads(minute),
        )
        .expect("evaluates");
        unsampled += outcome.budget_values_unsampled;
        alerts.extend(outcome.alerts.into_iter().map(|alert| (minute, alert)));
    }
    (alerts, unsampled)
}

fn is_forecast(alert: &Alert) -> bool {
    alert.label("forecast") == "true"
}

/// $0.01 a minute from each midnight: spent in the day by the end of `minute`.
fn ramp(minute: i64) -> u64 {
    10_000 * (minute.rem_euclid(1_440) as u64 + 1)
}

/// `micros` spent in the first minute of day 1, nothing after (nor the next day).
fn flat(minute: i64, micros: u64) -> u64 {
    if minute < 1_440 {
        micros
    } else {
        0
    }
}

/// The first minute of the ramp whose room left is at most `hours` of its burn: where
/// a forecast of `hours` must fire.
fn ramp_forecast_minute(limit: u64, hours: u64) -> i64 {
    (0..)
        .find(|minute| limit.saturating_sub(ramp(*minute)) <= hours * 60 * 10_000)
        .expect("the ramp reaches the limit")
}

#[test]
fn a_forecast_of_one_user_fires_once_before_the_limit_on_a_ramp_not_on_flat_spend() {
    use ais_rollup::usage::UsageScope;

    use crate::budget::BudgetScope;
    let one = |user: &str| BudgetScope::One {
        scope: UsageScope::UserId,
        value: user.to_string(),
    };
    let config = EvaluatorConfig {
        budgets: vec![
            forecasting_budget(one("u-ramp"), 2),
            forecasting_budget(one("u-flat"), 2),
        ],
        ..EvaluatorConfig::default()
    };
    // u-ramp spends $0.01 a minute (out of its $10 at the 1,000th minute of the day);
    // u-flat spent $3 in the day's first minute and nothing since, nor the next day.
    let reads = |minute: i64| {
        vec![
            floor_read(&config, 0, &[("u-ramp", ramp(minute))]),
            floor_read(&config, 1, &[("u-flat", flat(minute, 3_000_000))]),
        ]
    };
    let mut state = State::default();
    // Through the limit, to the next day's first minute.
    let (alerts, _) = passes_of_minutes(&config, &mut state, 0..1_441, reads);
    let forecasts: Vec<(i64, &Alert)> = alerts
        .iter()
        .filter(|(_, alert)| is_forecast(alert))
        .map(|(minute, alert)| (*minute, alert))
        .collect();
    let limit_at = alerts
        .iter()
        .find(|(_, a)| a.label("threshold") == "100%" && a.state == AlertState::Firing)
        .map(|(minute, _)| *minute)
        .expect("the ramp reaches its limit");
    assert_eq!(
        forecasts.len(),
        2,
        "fired once, resolved once: {forecasts:?}"
    );
    let (fired_at, fired) = forecasts[0];
    assert_eq!(fired.state, AlertState::Firing);
    assert_eq!(fired_at, ramp_forecast_minute(10_000_000, 2));
    assert!(fired_at < limit_at, "{fired_at} before {limit_at}");
    assert_eq!(fired.label("scope_value"), "u-ramp");
    assert_eq!(fired.label("budget"), "t/user_id=u-ramp");
    assert_eq!(fired.label("scope"), "user_id");
    assert_eq!(fired.label("tenant"), "t");
    assert_eq!(fired.label("threshold"), "", "a forecast has no threshold");
    assert_eq!(fired.starts_at_ms, window(DAY_1 + fired_at));
    // The next day's first read resolves it, as the thresholds.
    let (resolved_at, resolved) = forecasts[1];
    assert_eq!(
        (resolved_at, resolved.state, resolved.labels.clone()),
        (1_440, AlertState::Resolved, fired.labels.clone())
    );
    assert!(
        alerts
            .iter()
            .all(|(_, a)| a.label("scope_value") != "u-flat"),
        "flat spend fires nothing: {alerts:?}"
    );

    // Restarted (the saved state, no samples) shortly before the forecast: it waits
    // for a new half hour of reads, then fires, once.
    let mut before = State::default();
    let restart_at = fired_at - 10;
    passes_of_minutes(&config, &mut before, 0..restart_at, reads);
    let saved = serde_json::to_vec(&before).expect("serialises");
    let mut restored: State = serde_json::from_slice(&saved).expect("reads");
    let (after, _) = passes_of_minutes(&config, &mut restored, restart_at..1_200, reads);
    let refired: Vec<i64> = after
        .iter()
        .filter(|(_, a)| is_forecast(a) && a.state == AlertState::Firing)
        .map(|(minute, _)| *minute)
        .collect();
    assert_eq!(refired, [restart_at + 30]);
}

#[test]
fn a_forecast_of_each_user_fires_for_the_user_on_a_ramp_only_and_once() {
    use ais_rollup::usage::UsageScope;

    use crate::budget::BudgetScope;
    let config = EvaluatorConfig {
        budgets: vec![forecasting_budget(BudgetScope::Each(UsageScope::UserId), 3)],
        sinks: vec!["webhook".to_string()],
        ..EvaluatorConfig::default()
    };
    // u-ramp at $0.01 a minute; u-flat at $4 all day, nothing the next; u-slow from $2 at $0.005 a
    // minute, which would take 1,600 minutes to spend its last $8: after the day resets.
    let reads = |minute: i64| {
        vec![floor_read(
            &config,
            0,
            &[
                ("u-ramp", ramp(minute)),
                ("u-flat", flat(minute, 4_000_000)),
                (
                    "u-slow",
                    2_000_000 + 5_000 * minute.rem_euclid(1_440) as u64,
                ),
            ],
        )]
    };
    let mut state = State::default();
    let (alerts, unsampled) = passes_of_minutes(&config, &mut state, 0..1_441, reads);
    assert_eq!(unsampled, 0);
    let fired: Vec<(i64, &str, AlertState)> = alerts
        .iter()
        .filter(|(_, a)| is_forecast(a))
        .map(|(minute, a)| (*minute, a.label("scope_value"), a.state))
        .collect();
    let forecast_at = ramp_forecast_minute(10_000_000, 3);
    assert_eq!(
        fired,
        [
            (forecast_at, "u-ramp", AlertState::Firing),
            (1_440, "u-ramp", AlertState::Resolved)
        ]
    );
    let limit_at = alerts
        .iter()
        .find(|(_, a)| {
            a.label("scope_value") == "u-ramp"
                && a.label("threshold") == "100%"
                && a.state == AlertState::Firing
        })
        .map(|(minute, _)| *minute)
        .expect("u-ramp reaches its limit");
    assert!(forecast_at < limit_at);
    let forecast = &alerts
        .iter()
        .find(|(_, a)| is_forecast(a))
        .expect("fired")
        .1;
    assert_eq!(forecast.label("budget"), "t/each user_id");
    assert_eq!(forecast.label("scope"), "user_id");
    assert_eq!(forecast.label("tenant"), "t");
    // u-slow crosses 50% (a threshold alert), never a forecast; u-flat nothing.
    assert!(alerts
        .iter()
        .all(|(_, a)| a.label("scope_value") != "u-flat"));
    assert!(alerts
        .iter()
        .any(|(_, a)| a.label("scope_value") == "u-slow" && a.label("threshold") == "50%"));
}

#[test]
fn values_past_the_bound_of_samples_are_counted_not_forecast() {
    use ais_rollup::usage::UsageScope;

    use crate::budget::BudgetScope;
    let config = EvaluatorConfig {
        budgets: vec![forecasting_budget(BudgetScope::Each(UsageScope::UserId), 3)],
        max_budget_values: 1,
        ..EvaluatorConfig::default()
    };
    // Two users on the same ramp, u-b a cent ahead: only u-b (the higher share, first
    // in the read) is sampled and forecast.
    let reads = |minute: i64| {
        vec![floor_read(
            &config,
            0,
            &[("u-a", ramp(minute)), ("u-b", ramp(minute) + 10_000)],
        )]
    };
    let mut state = State::default();
    let (alerts, unsampled) = passes_of_minutes(&config, &mut state, 0..900, reads);
    let forecast_for: Vec<&str> = alerts
        .iter()
        .filter(|(_, a)| is_forecast(a))
        .map(|(_, a)| a.label("scope_value"))
        .collect();
    assert_eq!(forecast_for, ["u-b"]);
    // Every pass that read both (from 10% of the limit on) left one out.
    let read_both = (0..900).filter(|m| ramp(*m) >= 1_000_000).count() as u64;
    assert_eq!(unsampled, read_both);
    assert_eq!(state.sampled_budget_values(), 1);
}
