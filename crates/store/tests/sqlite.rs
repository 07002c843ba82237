//! The SQLite store against a real file: atomic commits, position checks, merge in
//! place, tenant scoping, retention, reopen after an unclean drop.

use std::borrow::Cow;

use ais_model::{Event, EventId, Status};
use ais_rollup::RollupPartial;
use ais_store::sqlite::SqliteStore;
use ais_store::{BatchCommit, DedupEntry, RollupKey, RollupQuery, Store, StoreError};

fn partial(requests: u64, tokens: u64, user: &str) -> RollupPartial {
    let mut partial = RollupPartial::new();
    for index in 0..requests {
        let event = Event {
            input_tokens: Some(tokens),
            cost_micros: Some(7),
            status: if index == 0 {
                Status::Error
            } else {
                Status::Ok
            },
            user_id: Some(Cow::Owned(user.to_string())),
            ..Event::new(
                "m",
                EventId::Generated(u128::from(index)),
                0,
                10.0 * (index + 1) as f64,
            )
        };
        partial.add(&event, false);
    }
    partial
}

fn key(tenant: &str, model: &str, minute_ms: i64) -> RollupKey {
    RollupKey {
        tenant: tenant.to_string(),
        model: model.to_string(),
        minute_ms,
    }
}

fn batch(first: u64, next: u64, partials: Vec<(RollupKey, RollupPartial)>) -> BatchCommit {
    BatchCommit {
        partition: 0,
        first_offset: first,
        next_offset: next,
        watermark_ms: i64::try_from(next).unwrap_or(0) * 1000,
        partials,
        dedup: Vec::new(),
    }
}

fn query(tenant: &str) -> RollupQuery {
    RollupQuery {
        tenant: tenant.to_string(),
        from_ms: 0,
        to_ms: 10_000_000,
        model: None,
    }
}

#[tokio::test]
async fn commits_merge_in_place_and_move_the_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("open");
    assert!(store.partition_states().await.expect("states").is_empty());

    store
        .commit(batch(
            0,
            3,
            vec![(key("a", "m", 60_000), partial(3, 10, "u1"))],
        ))
        .await
        .expect("first batch");
    store
        .commit(batch(
            3,
            5,
            vec![
                (key("a", "m", 60_000), partial(2, 100, "u2")),
                (key("a", "m", 120_000), partial(1, 1, "u1")),
                (key("b", "m", 60_000), partial(4, 1, "u9")),
            ],
        ))
        .await
        .expect("second batch");

    let rows = store.rollups(query("a")).await.expect("rollups");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].minute_ms, 60_000);
    assert_eq!(rows[0].partial.requests, 5);
    assert_eq!(rows[0].partial.errors, 2);
    assert_eq!(rows[0].partial.input_tokens, 3 * 10 + 2 * 100);
    assert_eq!(rows[0].partial.cost_micros, 35);
    assert_eq!(rows[0].partial.unique_users(), 2);
    assert_eq!(rows[1].partial.requests, 1);
    // Tenant b is not visible to a.
    let b = store.rollups(query("b")).await.expect("rollups");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].partial.requests, 4);
    assert_eq!(
        store.tenants(0, 10_000_000).await.expect("tenants"),
        vec!["a", "b"]
    );
    // The model filter.
    let none = store
        .rollups(RollupQuery {
            model: Some("other".to_string()),
            ..query("a")
        })
        .await
        .expect("filtered");
    assert!(none.is_empty());

    let states = store.partition_states().await.expect("states");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].next_offset, 5);
    assert_eq!(states[0].watermark_ms, 5_000);
}

#[tokio::test]
async fn a_replayed_or_skipping_batch_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("open");
    store
        .commit(batch(0, 10, vec![(key("a", "m", 0), partial(10, 1, "u"))]))
        .await
        .expect("first");
    for (first, next) in [(0, 10), (5, 12), (11, 12)] {
        let mut replay = batch(first, next, vec![(key("a", "m", 0), partial(10, 1, "u"))]);
        replay.dedup.push(DedupEntry {
            hash: 1,
            minute_ms: 0,
        });
        let error = store.commit(replay).await.expect_err("out of order");
        assert!(
            matches!(error, StoreError::OutOfOrder { expected: 10, .. }),
            "{error}"
        );
    }
    let rows = store.rollups(query("a")).await.expect("rollups");
    assert_eq!(
        rows[0].partial.requests, 10,
        "refused batches left no trace"
    );
    assert!(store.dedup_entries(0).await.expect("dedup").is_empty());
    assert_eq!(
        store.partition_states().await.expect("states")[0].next_offset,
        10
    );
    // An empty commit only moves the watermark.
    let mut idle = batch(10, 10, Vec::new());
    idle.watermark_ms = 99_000;
    store.commit(idle).await.expect("idle commit");
    let state = store.partition_states().await.expect("states")[0];
    assert_eq!((state.next_offset, state.watermark_ms), (10, 99_000));
}

#[tokio::test]
async fn state_survives_an_unclean_drop_and_dedup_ids_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.sqlite");
    let hashes: Vec<DedupEntry> = (0..50_000u128)
        .map(|i| DedupEntry {
            hash: i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
            minute_ms: i64::try_from(i % 5).unwrap_or(0) * 60_000,
        })
        .collect();
    {
        let store = SqliteStore::open(&path).expect("open");
        let mut first = batch(0, 7, vec![(key("a", "m", 0), partial(7, 2, "u"))]);
        first.dedup = hashes.clone();
        store.commit(first).await.expect("commit");
        // Dropped without any close.
    }
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(
        store.partition_states().await.expect("states")[0].next_offset,
        7
    );
    assert_eq!(
        store.rollups(query("a")).await.expect("rollups")[0]
            .partial
            .requests,
        7
    );
    let mut loaded = store.dedup_entries(0).await.expect("dedup");
    let mut want = hashes.clone();
    loaded.sort_by_key(|entry| entry.hash);
    want.sort_by_key(|entry| entry.hash);
    assert_eq!(loaded, want);
    let recent = store
        .dedup_entries(180_000)
        .await
        .expect("dedup since minute 3");
    assert_eq!(recent.len(), 20_000);
    assert!(recent.iter().all(|entry| entry.minute_ms >= 180_000));
}

#[tokio::test]
async fn retention_deletes_only_older_windows_and_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("open");
    let mut first = batch(
        0,
        3,
        vec![
            (key("a", "m", 0), partial(1, 1, "u")),
            (key("a", "m", 60_000), partial(1, 1, "u")),
            (key("a", "m", 120_000), partial(1, 1, "u")),
        ],
    );
    first.dedup = vec![
        DedupEntry {
            hash: 1,
            minute_ms: 0,
        },
        DedupEntry {
            hash: 2,
            minute_ms: 120_000,
        },
    ];
    store.commit(first).await.expect("commit");
    // Dedup ids more than 60 s behind the newest (minute 120 s) go: minute 0.
    store
        .apply_retention(60_000, 60_000)
        .await
        .expect("retention");
    let minutes: Vec<i64> = store
        .rollups(query("a"))
        .await
        .expect("rollups")
        .iter()
        .map(|row| row.minute_ms)
        .collect();
    assert_eq!(minutes, vec![60_000, 120_000]);
    let ids: Vec<u128> = store
        .dedup_entries(0)
        .await
        .expect("dedup")
        .iter()
        .map(|e| e.hash)
        .collect();
    assert_eq!(ids, vec![2]);
}

#[tokio::test]
async fn anomalies_are_stored_once_resolved_and_scoped_by_tenant() {
    use ais_store::{
        AnomalyQuery, AnomalyRecord, AnomalyState, EvaluationCommit, Resolution, ALL_TENANTS,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("open");
    assert!(store.evaluation_state().await.expect("state").is_none());
    let anomaly = |tenant: &str, window_start_ms: i64| AnomalyRecord {
        tenant: tenant.to_string(),
        model: "m".to_string(),
        detector: "latency_zscore".to_string(),
        metric: "latency_p95".to_string(),
        window_start_ms,
        observed: 4000.0,
        baseline: 800.0,
        score: 40.0,
        state: AnomalyState::Firing,
        resolved_window_ms: None,
    };
    let fired = EvaluationCommit {
        next_window_ms: 120_000,
        state: b"state-1".to_vec(),
        fired: vec![anomaly("a", 60_000), anomaly(ALL_TENANTS, 60_000)],
        resolved: Vec::new(),
    };
    store
        .commit_evaluation(fired.clone())
        .await
        .expect("commit");
    // A replayed pass stores nothing twice.
    store.commit_evaluation(fired).await.expect("replay");
    let all = AnomalyQuery {
        tenant: None,
        from_ms: 0,
        to_ms: 1_000_000,
        model: None,
    };
    assert_eq!(store.anomalies(all.clone()).await.expect("all").len(), 2);
    let a_only = store
        .anomalies(AnomalyQuery {
            tenant: Some("a".to_string()),
            ..all.clone()
        })
        .await
        .expect("a");
    assert_eq!(a_only, vec![anomaly("a", 60_000)]);
    assert!(store
        .anomalies(AnomalyQuery {
            tenant: Some("b".to_string()),
            ..all.clone()
        })
        .await
        .expect("b")
        .is_empty());

    store
        .commit_evaluation(EvaluationCommit {
            next_window_ms: 300_000,
            state: b"state-2".to_vec(),
            fired: Vec::new(),
            resolved: vec![Resolution {
                tenant: "a".to_string(),
                model: "m".to_string(),
                detector: "latency_zscore".to_string(),
                window_start_ms: 240_000,
            }],
        })
        .await
        .expect("resolve");
    let a_only = store
        .anomalies(AnomalyQuery {
            tenant: Some("a".to_string()),
            ..all
        })
        .await
        .expect("a");
    assert_eq!(a_only[0].state, AnomalyState::Resolved);
    assert_eq!(a_only[0].resolved_window_ms, Some(240_000));
    assert_eq!(
        store.evaluation_state().await.expect("state"),
        Some((300_000, b"state-2".to_vec()))
    );
}
