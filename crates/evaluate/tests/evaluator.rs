//! The evaluator against the real SQLite store: each final window once, the key bound.

use std::borrow::Cow;

use ais_evaluate::evaluator::{Evaluator, EvaluatorConfig};
use ais_model::{Event, EventId};
use ais_rollup::RollupPartial;
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::{BatchCommit, RollupKey};

const MINUTE: i64 = 60_000;

fn partial(requests: u64) -> RollupPartial {
    let mut partial = RollupPartial::new();
    for index in 0..requests {
        let event = Event {
            output_tokens: Some(10),
            ..Event::new(
                Cow::Borrowed("m"),
                EventId::Generated(0),
                0,
                100.0 + index as f64,
            )
        };
        partial.add(&event, false);
    }
    partial
}

#[tokio::test]
async fn windows_are_evaluated_once_and_keys_stay_bounded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    let mut partials = Vec::new();
    for minute in 0..40 {
        for model in ["a", "b", "c"] {
            partials.push((
                RollupKey {
                    tenant: "t".to_string(),
                    model: model.to_string(),
                    minute_ms: minute * MINUTE,
                },
                partial(30),
            ));
        }
    }
    store
        .commit(BatchCommit {
            partition: 0,
            first_offset: 0,
            next_offset: 1,
            // Windows before minute 30 are final.
            watermark_ms: 30 * MINUTE,
            partials,
            dedup: Vec::new(),
            events: Vec::new(),
            dead_letters: Vec::new(),
            dimensions: Default::default(),
            ledger: Vec::new(),
            usage: Vec::new(),
        })
        .await
        .expect("commit");
    let evaluator = Evaluator::new(EvaluatorConfig {
        max_keys: 2,
        first_lookback: std::time::Duration::from_secs(3600),
        ..EvaluatorConfig::default()
    });
    let evaluated = evaluator.pass(&store).await.expect("pass");
    assert_eq!(evaluated, 30, "the 30 final windows");
    assert_eq!(
        evaluator.pass(&store).await.expect("second pass"),
        0,
        "each window once"
    );
    let (next, state) = store
        .evaluation_state()
        .await
        .expect("state")
        .expect("committed");
    assert_eq!(next, 30 * MINUTE);
    let state: serde_json::Value = serde_json::from_slice(&state).expect("state is JSON");
    let keys = state["keys"].as_object().expect("keys").len();
    assert_eq!(keys, 2, "at most max_keys tracked");
}

/// `requests` calls of model "m" for tenant "t": the first `slow` take 3 s, the rest
/// 100 ms; `cost_micros` each.
fn latency_partial(requests: u64, slow: u64, cost_micros: u64) -> RollupPartial {
    let mut partial = RollupPartial::new();
    for index in 0..requests {
        let latency = if index < slow { 3_000.0 } else { 100.0 };
        let event = Event {
            cost_micros: Some(cost_micros),
            ..Event::new(Cow::Borrowed("m"), EventId::Generated(0), 0, latency)
        };
        partial.add(&event, false);
    }
    partial
}

#[tokio::test]
async fn objectives_and_budgets_queue_each_transition_once_per_receiver() {
    use ais_evaluate::alert::Alert;
    use ais_evaluate::budget::BudgetConfig;
    use ais_evaluate::slo::{BurnAlertConfig, Indicator, SloConfig};
    use ais_evaluate::status::slo_statuses;

    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    // Minutes 0..10: 100 requests each; minutes 4 and 5 have 30 slow ones (> 2 s).
    let mut partials = Vec::new();
    for minute in 0..10 {
        let slow = if (4..6).contains(&minute) { 30 } else { 0 };
        partials.push((
            RollupKey {
                tenant: "t".to_string(),
                model: "m".to_string(),
                minute_ms: minute * MINUTE,
            },
            latency_partial(100, slow, 1_000),
        ));
    }
    store
        .commit(BatchCommit {
            partition: 0,
            first_offset: 0,
            next_offset: 1,
            watermark_ms: 12 * MINUTE,
            partials,
            dedup: Vec::new(),
            events: Vec::new(),
            dead_letters: Vec::new(),
            dimensions: Default::default(),
            ledger: Vec::new(),
            usage: Vec::new(),
        })
        .await
        .expect("commit");
    let slo = SloConfig {
        name: "fast".to_string(),
        model: "m".to_string(),
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
            severity: "page".to_string(),
        }],
    };
    let budget = BudgetConfig {
        tenant: "t".to_string(),
        scope: ais_evaluate::budget::BudgetScope::Tenant,
        label: None,
        model: None,
        daily_usd_micros: None,
        monthly_usd_micros: None,
        // The calls carry no tokens: this budget stays quiet.
        daily_tokens: Some(1),
        monthly_tokens: None,
        thresholds: vec![100],
        forecast: None,
    };
    let config = EvaluatorConfig {
        first_lookback: std::time::Duration::from_secs(12 * 60),
        slos: vec![slo.clone()],
        budgets: vec![budget],
        sinks: vec!["webhook".to_string(), "alertmanager".to_string()],
        ..EvaluatorConfig::default()
    };
    let evaluator = Evaluator::new(config.clone());
    evaluator.pass(&store).await.expect("pass");
    // A second evaluator from the stored state queues nothing more.
    Evaluator::new(config).pass(&store).await.expect("again");

    let mut per_sink = Vec::new();
    for sink in ["webhook", "alertmanager"] {
        let entries = store.outbox_pending(sink, 100).await.expect("outbox");
        let alerts: Vec<Alert> = entries
            .iter()
            .map(|entry| serde_json::from_slice(&entry.payload).expect("an alert"))
            .collect();
        per_sink.push(alerts);
    }
    assert_eq!(per_sink[0], per_sink[1], "each receiver gets the same");
    let alerts = &per_sink[0];
    // Against 90% (10% budget): minute 4 has 30 of 100 slow = 3× over 1 minute, but
    // minutes 2..=4 hold 30 of 300 = 1× (< 1.5): not yet. Minute 5: short 3×, long 60
    // of 300 = 2×: fires. Minute 6: short 0×: resolves.
    let transitions: Vec<(String, String, i64, Option<i64>)> = alerts
        .iter()
        .map(|alert| {
            (
                alert.label("alertname").to_string(),
                alert.state.as_str().to_string(),
                alert.starts_at_ms,
                alert.ends_at_ms,
            )
        })
        .collect();
    assert_eq!(
        transitions,
        vec![
            (
                "AisSloBurnRate".to_string(),
                "firing".to_string(),
                5 * MINUTE,
                None
            ),
            (
                "AisSloBurnRate".to_string(),
                "resolved".to_string(),
                5 * MINUTE,
                Some(7 * MINUTE)
            ),
        ]
    );
    assert!((alerts[0].values["long_burn"] - 2.0).abs() < 1e-9);
    assert!((alerts[0].values["short_burn"] - 3.0).abs() < 1e-9);
    assert_eq!(alerts[0].label("tenant"), "t");

    let (_, state) = store
        .evaluation_state()
        .await
        .expect("state")
        .expect("committed");
    let statuses = slo_statuses(&[slo], Some(&state), Some("t")).expect("readable");
    assert_eq!(statuses.len(), 1);
    assert_eq!(
        (statuses[0].requests, statuses[0].bad_requests),
        (1_000, 60)
    );
    // 60 bad of 1,000 at 90%: 100 allowed, 40% left.
    assert!((statuses[0].error_budget_remaining - 0.4).abs() < 1e-9);
}

#[tokio::test]
async fn firing_alerts_are_renewed_to_the_renewing_sinks_only() {
    use ais_evaluate::alert::Alert;
    use ais_evaluate::budget::BudgetConfig;

    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    let partials = (0..12)
        .map(|minute| {
            (
                RollupKey {
                    tenant: "t".to_string(),
                    model: "m".to_string(),
                    minute_ms: minute * MINUTE,
                },
                latency_partial(10, 0, 1_000),
            )
        })
        .collect();
    store
        .commit(BatchCommit {
            partition: 0,
            first_offset: 0,
            next_offset: 1,
            watermark_ms: 12 * MINUTE,
            partials,
            dedup: Vec::new(),
            events: Vec::new(),
            dead_letters: Vec::new(),
            dimensions: Default::default(),
            ledger: Vec::new(),
            usage: Vec::new(),
        })
        .await
        .expect("commit");
    // $0.01 a minute against $0.01 a day: 100% at minute 0, firing all day.
    let budget = BudgetConfig {
        tenant: "t".to_string(),
        scope: ais_evaluate::budget::BudgetScope::Tenant,
        label: None,
        model: None,
        daily_usd_micros: Some(10_000),
        monthly_usd_micros: None,
        daily_tokens: None,
        monthly_tokens: None,
        thresholds: vec![100],
        forecast: None,
    };
    let evaluator = Evaluator::new(EvaluatorConfig {
        first_lookback: std::time::Duration::from_secs(12 * 60),
        windows_per_read: 2,
        budgets: vec![budget],
        sinks: vec!["webhook".to_string(), "alertmanager".to_string()],
        renew_sinks: vec!["alertmanager".to_string()],
        renew_interval: std::time::Duration::from_secs(4 * 60),
        ..EvaluatorConfig::default()
    });
    evaluator.pass(&store).await.expect("pass");
    let read = |entries: Vec<ais_store::outbox::OutboxEntry>| -> Vec<Alert> {
        entries
            .iter()
            .map(|entry| serde_json::from_slice(&entry.payload).expect("an alert"))
            .collect()
    };
    let webhook = read(store.outbox_pending("webhook", 100).await.expect("outbox"));
    let alertmanager = read(
        store
            .outbox_pending("alertmanager", 100)
            .await
            .expect("outbox"),
    );
    assert_eq!(webhook.len(), 1, "one transition: {webhook:?}");
    // Queued with the chunk ending at minute 2, renewed at the chunks ending at 6 and 10.
    assert_eq!(alertmanager.len(), 3, "{alertmanager:?}");
    assert!(alertmanager
        .iter()
        .all(|alert| alert.labels == webhook[0].labels && alert.starts_at_ms == 0));
    let ids: std::collections::BTreeSet<&str> =
        alertmanager.iter().map(|alert| alert.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "each renewal is its own outbox entry");
}

/// A commit of `partition` over `[first_offset, next_offset)` with nothing but the
/// new position and watermark.
fn position_only(
    partition: u32,
    first_offset: u64,
    next_offset: u64,
    watermark_ms: i64,
) -> BatchCommit {
    BatchCommit {
        first_offset,
        ..BatchCommit::position(partition, next_offset, watermark_ms)
    }
}

#[tokio::test]
async fn a_partition_without_a_watermark_holds_every_window_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    store
        .commit(BatchCommit {
            partials: vec![(
                RollupKey {
                    tenant: "t".to_string(),
                    model: "m".to_string(),
                    minute_ms: 0,
                },
                partial(5),
            )],
            ..position_only(0, 0, 1, 10 * MINUTE)
        })
        .await
        .expect("partition 0");
    // Partition 1 read only records that became dead letters: it has no watermark.
    store
        .commit(position_only(1, 0, 3, i64::MIN))
        .await
        .expect("partition 1");
    let evaluator = Evaluator::new(EvaluatorConfig {
        first_lookback: std::time::Duration::from_secs(3600),
        ..EvaluatorConfig::default()
    });
    assert_eq!(evaluator.pass(&store).await.expect("pass"), 0);
    assert_eq!(store.evaluation_state().await.expect("state"), None);
    // Once it has one, the windows before the smaller watermark are final: the one
    // holding rollups is evaluated.
    store
        .commit(position_only(1, 3, 3, 5 * MINUTE))
        .await
        .expect("partition 1 again");
    assert_eq!(evaluator.pass(&store).await.expect("pass"), 1);
    let (next, _) = store
        .evaluation_state()
        .await
        .expect("state")
        .expect("committed");
    assert_eq!(next, 5 * MINUTE);
}

/// Every engine the evaluator runs against here: SQLite, and ClickHouse on the server
/// `AIS_TEST_CLICKHOUSE` names (a database of its own; required under `CI=true`).
async fn engines() -> Vec<(&'static str, std::sync::Arc<dyn Store>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    let mut engines: Vec<(&'static str, std::sync::Arc<dyn Store>, tempfile::TempDir)> =
        vec![("sqlite", std::sync::Arc::new(sqlite), dir)];
    let Ok(url) = std::env::var("AIS_TEST_CLICKHOUSE") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "AIS_TEST_CLICKHOUSE is not set under CI=true: the ClickHouse engine must be tested"
        );
        eprintln!("AIS_TEST_CLICKHOUSE is not set: testing the embedded engine only");
        return engines;
    };
    use ais_store::clickhouse::{ClickhouseConfig, ClickhouseStore};
    let database = format!(
        "ais_evaluator_{}_{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let config =
        ClickhouseConfig::from_url(&format!("{url}/?database={database}")).expect("ClickHouse URL");
    ais_store::clickhouse::migrate(&config)
        .await
        .expect("migrate ClickHouse");
    let store = ClickhouseStore::connect(config)
        .await
        .expect("connect ClickHouse");
    engines.push((
        "clickhouse",
        std::sync::Arc::new(store),
        tempfile::tempdir().expect("temp dir"),
    ));
    engines
}

/// A batch of offsets `[first, first + 1)` of tenant "t" up to minute `watermark`
/// (windows before it final): one rollup row, and each user's spend of `day` in the
/// usage ledger.
fn spend_batch(first: u64, day: i64, watermark: i64, users: &[(&str, u64)]) -> BatchCommit {
    use ais_store::usage::{UsageCounts, UsageKey};
    let usage = users
        .iter()
        .map(|(user, micros)| {
            (
                UsageKey {
                    tenant: "t".into(),
                    scope: "user_id".into(),
                    day_ms: day,
                    value: Some((*user).to_string()),
                },
                UsageCounts {
                    requests: 1,
                    cost_micros: *micros,
                    ..UsageCounts::default()
                },
            )
        })
        .collect();
    BatchCommit {
        partition: 0,
        first_offset: first,
        next_offset: first + 1,
        watermark_ms: day + watermark * MINUTE,
        partials: vec![(
            RollupKey {
                tenant: "t".to_string(),
                model: "m".to_string(),
                minute_ms: day + (watermark - 1) * MINUTE,
            },
            partial(1),
        )],
        dedup: Vec::new(),
        events: Vec::new(),
        dead_letters: Vec::new(),
        dimensions: Default::default(),
        ledger: Vec::new(),
        usage,
    }
}

/// Budgets of one user and of each user, fed the usage ledger: each threshold fires
/// once, for the user who reached it, on SQLite and on ClickHouse, and neither a new
/// evaluator on the same store (a restart) nor later passes fire one again.
#[tokio::test]
async fn budgets_of_users_fire_each_threshold_once_for_that_user_on_every_engine() {
    use ais_evaluate::alert::Alert;
    use ais_evaluate::budget::{BudgetConfig, BudgetScope};
    use ais_rollup::usage::UsageScope;

    /// 2026-03-03T00:00:00Z.
    const DAY: i64 = 1_772_496_000_000;
    let budget = |scope: BudgetScope| BudgetConfig {
        tenant: "t".to_string(),
        model: None,
        scope,
        label: None,
        daily_usd_micros: Some(1_000_000),
        monthly_usd_micros: None,
        daily_tokens: None,
        monthly_tokens: None,
        thresholds: vec![50, 100],
        forecast: None,
    };
    let config = EvaluatorConfig {
        first_lookback: std::time::Duration::from_secs(3600),
        budgets: vec![
            budget(BudgetScope::One {
                scope: UsageScope::UserId,
                value: "u-1".to_string(),
            }),
            budget(BudgetScope::Each(UsageScope::UserId)),
        ],
        sinks: vec!["webhook".to_string()],
        ..EvaluatorConfig::default()
    };
    for (name, store, _dir) in engines().await {
        // u-1 at 60% of its day, u-2 at 30%.
        store
            .commit(spend_batch(
                0,
                DAY,
                10,
                &[("u-1", 600_000), ("u-2", 300_000)],
            ))
            .await
            .expect("commit");
        Evaluator::new(config.clone())
            .pass(store.as_ref())
            .await
            .expect("pass");
        // u-1 reaches 100%, u-2 50%; then a restart, and more passes with spend under
        // the next thresholds.
        store
            .commit(spend_batch(
                1,
                DAY,
                15,
                &[("u-1", 400_000), ("u-2", 200_000)],
            ))
            .await
            .expect("commit");
        Evaluator::new(config.clone())
            .pass(store.as_ref())
            .await
            .expect("pass");
        let restarted = Evaluator::new(config.clone());
        restarted.pass(store.as_ref()).await.expect("pass");
        store
            .commit(spend_batch(2, DAY, 20, &[("u-2", 100)]))
            .await
            .expect("commit");
        restarted.pass(store.as_ref()).await.expect("pass");

        let entries = store.outbox_pending("webhook", 100).await.expect("outbox");
        let alerts: Vec<Alert> = entries
            .iter()
            .map(|entry| serde_json::from_slice(&entry.payload).expect("an alert"))
            .collect();
        let mut fired: Vec<(String, String, String, String, i64)> = alerts
            .iter()
            .map(|alert| {
                assert_eq!(alert.label("alertname"), "AisBudget", "{name}");
                assert_eq!(alert.label("tenant"), "t", "{name}");
                assert_eq!(alert.label("scope"), "user_id", "{name}");
                assert_eq!(alert.state.as_str(), "firing", "{name}");
                (
                    alert.label("budget").to_string(),
                    alert.label("scope_value").to_string(),
                    alert.label("threshold").to_string(),
                    alert.values["spent"].to_string(),
                    alert.starts_at_ms,
                )
            })
            .collect();
        fired.sort();
        let at = |minute: i64| DAY + (minute - 1) * MINUTE;
        let expected: Vec<(String, String, String, String, i64)> = [
            ("t/each user_id", "u-1", "100%", 1.0, at(15)),
            ("t/each user_id", "u-1", "50%", 0.6, at(10)),
            ("t/each user_id", "u-2", "50%", 0.5, at(15)),
            ("t/user_id=u-1", "u-1", "100%", 1.0, at(15)),
            ("t/user_id=u-1", "u-1", "50%", 0.6, at(10)),
        ]
        .into_iter()
        .map(|(budget, user, threshold, spent, start)| {
            (
                budget.to_string(),
                user.to_string(),
                threshold.to_string(),
                spent.to_string(),
                start,
            )
        })
        .collect();
        assert_eq!(fired, expected, "{name}");
    }
}

/// A forecast of each user's budget, fed the usage ledger through passes of one
/// evaluator: the user whose spend grows between reads is forecast to run out once the
/// reads span half the lookback, once, labelled as the user's; the user whose spend is
/// flat is not; an evaluator started anew on the same store (no samples) fires it no
/// second time; the budgets' status, read from the stored state, says when the
/// user's limit runs out at the burn of the new evaluator's reads. On SQLite and on
/// ClickHouse.
#[tokio::test]
async fn a_forecast_of_each_user_fires_once_for_the_user_whose_spend_grows_on_every_engine() {
    use ais_evaluate::alert::Alert;
    use ais_evaluate::budget::{BudgetConfig, BudgetScope, Forecast};
    use ais_evaluate::status::budget_statuses;
    use ais_rollup::usage::UsageScope;

    /// 2026-03-03T00:00:00Z.
    const DAY: i64 = 1_772_496_000_000;
    const LIMIT: u64 = 10_000_000;
    let config = EvaluatorConfig {
        first_lookback: std::time::Duration::from_secs(3600),
        budgets: vec![BudgetConfig {
            tenant: "t".to_string(),
            model: None,
            scope: BudgetScope::Each(UsageScope::UserId),
            label: None,
            daily_usd_micros: Some(LIMIT),
            monthly_usd_micros: None,
            daily_tokens: None,
            monthly_tokens: None,
            thresholds: vec![100],
            forecast: Some(Forecast {
                hours: 1,
                lookback_minutes: 10,
                from_percent: 10,
            }),
        }],
        sinks: vec!["webhook".to_string()],
        ..EvaluatorConfig::default()
    };
    // (watermark minute, spend added per user): u-ramp adds $1 every 3 minutes from
    // 10% of its limit; u-flat stays at 20%.
    let batches: [(i64, &[(&str, u64)]); 6] = [
        (10, &[("u-ramp", 1_000_000), ("u-flat", 2_000_000)]),
        (13, &[("u-ramp", 1_000_000)]),
        (16, &[("u-ramp", 1_000_000)]),
        (19, &[("u-ramp", 1_000_000)]),
        (22, &[("u-ramp", 1_000_000)]),
        (25, &[("u-ramp", 1_000_000)]),
    ];
    for (name, store, _dir) in engines().await {
        // Three passes, then a restart and three more: the new evaluator's reads span
        // the lookback's half again by the last, with $4 left at $2 in 6 minutes, but
        // its saved state says the day's forecast fired.
        let first = Evaluator::new(config.clone());
        let restarted = Evaluator::new(config.clone());
        for (offset, (watermark, users)) in batches.iter().enumerate() {
            store
                .commit(spend_batch(offset as u64, DAY, *watermark, users))
                .await
                .expect("commit");
            let evaluator = if offset < 3 { &first } else { &restarted };
            evaluator.pass(store.as_ref()).await.expect("pass");
        }

        let entries = store.outbox_pending("webhook", 100).await.expect("outbox");
        let alerts: Vec<Alert> = entries
            .iter()
            .map(|entry| serde_json::from_slice(&entry.payload).expect("an alert"))
            .collect();
        assert_eq!(alerts.len(), 1, "{name}: {alerts:?}");
        let forecast = &alerts[0];
        for (label, value) in [
            ("alertname", "AisBudget"),
            ("forecast", "true"),
            ("tenant", "t"),
            ("budget", "t/each user_id"),
            ("scope", "user_id"),
            ("scope_value", "u-ramp"),
            ("threshold", ""),
        ] {
            assert_eq!(forecast.label(label), value, "{name}: {label}");
        }
        // Read at the windows before minutes 10 and 16 (6 minutes, past half the
        // lookback): $2 in 6 minutes, $7 left.
        assert_eq!(forecast.starts_at_ms, DAY + 15 * MINUTE, "{name}");
        let left = (LIMIT - 3_000_000) * 6;
        assert_eq!(
            forecast.values["minutes_left"],
            left.div_ceil(2_000_000) as f64,
            "{name}"
        );

        // The status, read from the state the engine stored: the restarted evaluator's
        // reads span its first to its last batch's window, past half the lookback, so
        // u-ramp runs out at the burn between them; u-flat's burn is none.
        let (_, saved) = store
            .evaluation_state()
            .await
            .expect("state")
            .expect("committed");
        let statuses = budget_statuses(&config.budgets, Some(&saved), None).expect("status");
        let runs_out: Vec<(Option<String>, Option<u64>)> = statuses
            .iter()
            .map(|status| {
                (
                    status.scope_value.clone(),
                    status.limits[0].runs_out_in_minutes,
                )
            })
            .collect();
        let ramp_through = |last: usize| -> u64 {
            batches[..=last]
                .iter()
                .flat_map(|(_, users)| users.iter())
                .filter(|(user, _)| *user == "u-ramp")
                .map(|(_, micros)| micros)
                .sum()
        };
        let (first, last) = (3, batches.len() - 1);
        let burned = ramp_through(last) - ramp_through(first);
        let span = (batches[last].0 - batches[first].0) as u64;
        let expected = ((LIMIT - ramp_through(last)) * span).div_ceil(burned);
        assert_eq!(
            runs_out,
            [
                (Some("u-ramp".to_string()), Some(expected)),
                (Some("u-flat".to_string()), None)
            ],
            "{name}"
        );
    }
}
