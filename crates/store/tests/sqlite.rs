//! The SQLite store against a real file: atomic commits, position checks, merge in
//! place, tenant scoping, retention, reopen after an unclean drop. Scenarios every
//! engine shares are in `conformance.rs`.

use std::borrow::Cow;

use ais_model::dead_letter::{DeadLetter, DeadLetterQuery, LetterId, Reason};
use ais_model::{wire, Event, EventId, Status};
use ais_rollup::RollupPartial;
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::{BatchCommit, DedupEntry, Retention, RollupKey, RollupQuery, StoreError};

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
        events: Vec::new(),
        dead_letters: Vec::new(),
        dimensions: Default::default(),
        ledger: Vec::new(),
        usage: Vec::new(),
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
        .apply_retention(Retention {
            rollups_before_ms: 60_000,
            raw_before_ms: 0,
            payloads_before_ms: 0,
            dedup_horizon_ms: 60_000,
        })
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

/// Sum of requests over every window of a tenant.
async fn total_requests(store: &SqliteStore, tenant: &str) -> u64 {
    store
        .rollups(query(tenant))
        .await
        .expect("rollups")
        .iter()
        .map(|row| row.partial.requests)
        .sum()
}

#[tokio::test]
async fn replaying_any_applied_batch_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("open");
    let batches: Vec<BatchCommit> = (0..10u64)
        .map(|index| {
            let mut commit = batch(
                index * 4,
                index * 4 + 4,
                vec![
                    (key("a", "m", 60_000), partial(4, 1, "u")),
                    (
                        key("a", "m", 60_000 * i64::try_from(index).unwrap_or(0)),
                        partial(1, 1, "v"),
                    ),
                ],
            );
            commit.dedup = vec![DedupEntry {
                hash: u128::from(index),
                minute_ms: 60_000,
            }];
            commit
        })
        .collect();
    for commit in &batches {
        store.commit(commit.clone()).await.expect("in order");
    }
    let totals_before = total_requests(&store, "a").await;
    assert_eq!(totals_before, 10 * 5);
    // What a restarted stream that ignored the stored position would send.
    for replay in &batches {
        let error = store
            .commit(replay.clone())
            .await
            .expect_err("already applied");
        assert!(
            matches!(error, StoreError::OutOfOrder { expected: 40, .. }),
            "{error}"
        );
    }
    assert_eq!(total_requests(&store, "a").await, totals_before);
    assert_eq!(store.dedup_entries(0).await.expect("dedup").len(), 10);
    assert_eq!(
        store.partition_states().await.expect("states")[0].next_offset,
        40
    );
}

#[tokio::test]
async fn merge_in_place_equals_the_merge_of_the_partials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("open");
    let parts = [
        partial(30, 3, "u1"),
        partial(7, 50, "u2"),
        partial(12, 9, "u3"),
    ];
    // The same window twice in one batch, then again in the next.
    store
        .commit(batch(
            0,
            2,
            vec![
                (key("a", "m", 60_000), parts[0].clone()),
                (key("a", "m", 60_000), parts[1].clone()),
            ],
        ))
        .await
        .expect("first");
    store
        .commit(batch(2, 3, vec![(key("a", "m", 60_000), parts[2].clone())]))
        .await
        .expect("second");
    let mut expected = RollupPartial::new();
    for part in &parts {
        expected.merge(part);
    }
    let rows = store.rollups(query("a")).await.expect("rollups");
    assert_eq!(rows.len(), 1);
    let stored = &rows[0].partial;
    assert_eq!(stored.requests, expected.requests);
    assert_eq!(stored.errors, expected.errors);
    assert_eq!(stored.errors_by_type, expected.errors_by_type);
    assert_eq!(stored.input_tokens, expected.input_tokens);
    assert_eq!(stored.cost_micros, expected.cost_micros);
    assert_eq!(stored.late_events, expected.late_events);
    assert_eq!(stored.unique_users(), expected.unique_users());
    assert_eq!(stored.latency_quantiles(), expected.latency_quantiles());
    assert_eq!(stored.ttft_quantiles(), expected.ttft_quantiles());
    // Not compared byte for byte: the unique counter's small-set form keeps hashes in
    // merge order, so equal partials can encode differently.
}

#[tokio::test]
async fn a_commit_failing_midway_rolls_back_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.sqlite");
    let store = SqliteStore::open(&path).expect("open");
    store
        .commit(batch(
            0,
            1,
            vec![(key("a", "m", 120_000), partial(1, 1, "u"))],
        ))
        .await
        .expect("first");
    // Corrupt the stored window the next batch merges into, from outside the store.
    let outside = rusqlite::Connection::open(&path).expect("raw open");
    outside
        .execute(
            "UPDATE rollups SET partial = x'00ff' WHERE minute_ms = 120000",
            [],
        )
        .expect("corrupt");
    drop(outside);

    let mut failing = batch(
        1,
        5,
        vec![
            // Written first, inside the transaction...
            (key("a", "m", 60_000), partial(2, 1, "u")),
            // ...then the merge into the corrupt blob fails.
            (key("a", "m", 120_000), partial(2, 1, "u")),
        ],
    );
    failing.dedup.push(DedupEntry {
        hash: 42,
        minute_ms: 60_000,
    });
    failing
        .dead_letters
        .push(letter(3, Some("a"), 5_000, Reason::Invalid));
    let error = store.commit(failing).await.expect_err("malformed");
    assert!(matches!(error, StoreError::Malformed(_)), "{error}");

    let raw = rusqlite::Connection::open(&path).expect("raw open");
    let windows: i64 = raw
        .query_row("SELECT COUNT(*) FROM rollups", [], |row| row.get(0))
        .expect("count");
    assert_eq!(windows, 1, "the first window of the failed batch is gone");
    assert!(store.dedup_entries(0).await.expect("dedup").is_empty());
    assert!(store
        .dead_letters(letters_in(0, i64::MAX))
        .await
        .expect("letters")
        .is_empty());
    let state = store.partition_states().await.expect("states")[0];
    assert_eq!((state.next_offset, state.watermark_ms), (1, 1_000));
}

/// A letter for the record at `offset` of partition 0: an event of `tenant` with an
/// empty model, or bytes of no wire version without one.
fn letter(offset: u64, tenant: Option<&str>, dead_at_ms: i64, reason: Reason) -> DeadLetter {
    let record = match tenant {
        Some(tenant) => {
            let mut bytes = Vec::new();
            let event = Event::new("", EventId::Generated(u128::from(offset)), 1, 1.0);
            wire::encode_into(tenant, &event, &mut bytes);
            bytes
        }
        None => format!("garbage at {offset}").into_bytes(),
    };
    DeadLetter::new(
        LetterId {
            partition: 0,
            offset,
        },
        reason,
        "what broke",
        &record,
        dead_at_ms,
    )
}

fn letters_in(from_ms: i64, to_ms: i64) -> DeadLetterQuery {
    DeadLetterQuery {
        tenant: None,
        from_ms,
        to_ms,
        limit: 100,
        oldest_first: false,
    }
}

fn ids(letters: &[DeadLetter]) -> Vec<u64> {
    letters.iter().map(|letter| letter.id.offset).collect()
}

#[tokio::test]
async fn dead_letters_commit_with_the_position_and_read_back_by_time_tenant_and_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("open");
    assert!(store.keeps_dead_letters());
    let mut first = batch(0, 3, Vec::new());
    first.dead_letters = vec![
        letter(1, Some("acme"), 1_000, Reason::Invalid),
        letter(2, None, 2_000, Reason::Undecodable),
    ];
    store.commit(first.clone()).await.expect("first");
    // The same batch again is refused: its letters are not stored twice.
    assert!(store.commit(first.clone()).await.is_err());
    let mut second = batch(3, 5, Vec::new());
    second.dead_letters = vec![letter(4, Some("other"), 3_000, Reason::UnsupportedVersion)];
    store.commit(second).await.expect("second");

    let all = store
        .dead_letters(letters_in(0, i64::MAX))
        .await
        .expect("all");
    assert_eq!(ids(&all), vec![4, 2, 1], "newest first, each once");
    assert_eq!(all[1], first.dead_letters[1], "read back as written");
    assert_eq!(all[2].tenant.as_deref(), Some("acme"));
    assert_eq!(all[1].tenant, None);
    let oldest_first = DeadLetterQuery {
        oldest_first: true,
        ..letters_in(0, i64::MAX)
    };
    assert_eq!(
        ids(&store.dead_letters(oldest_first).await.expect("oldest")),
        vec![1, 2, 4]
    );
    let acme = DeadLetterQuery {
        tenant: Some("acme".to_string()),
        ..letters_in(0, i64::MAX)
    };
    assert_eq!(ids(&store.dead_letters(acme).await.expect("acme")), vec![1]);
    assert_eq!(
        ids(&store
            .dead_letters(letters_in(1_000, 2_000))
            .await
            .expect("range")),
        vec![1],
        "[from, to)"
    );
    let one = DeadLetterQuery {
        limit: 1,
        ..letters_in(0, i64::MAX)
    };
    assert_eq!(ids(&store.dead_letters(one).await.expect("one")), vec![4]);
    let found = store
        .dead_letters_by_id(vec![
            LetterId {
                partition: 0,
                offset: 2,
            },
            LetterId {
                partition: 0,
                offset: 99,
            },
            LetterId {
                partition: 1,
                offset: 1,
            },
        ])
        .await
        .expect("by id");
    assert_eq!(found, vec![first.dead_letters[1].clone()]);

    // Letters are kept as long as raw events.
    store
        .apply_retention(Retention {
            rollups_before_ms: 0,
            raw_before_ms: 2_500,
            payloads_before_ms: 2_500,
            dedup_horizon_ms: 60_000,
        })
        .await
        .expect("retention");
    assert_eq!(
        ids(&store
            .dead_letters(letters_in(0, i64::MAX))
            .await
            .expect("kept")),
        vec![4]
    );
}

#[tokio::test]
async fn a_store_reopened_mid_life_continues_from_its_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.sqlite");
    for round in 0..4u64 {
        let store = SqliteStore::open(&path).expect("open");
        let clone = store.clone();
        let next = store
            .partition_states()
            .await
            .expect("states")
            .first()
            .map_or(0, |state| state.next_offset);
        assert_eq!(next, round * 3, "every earlier commit is there");
        for step in 0..3 {
            let first = next + step;
            clone
                .commit(batch(
                    first,
                    first + 1,
                    vec![(key("a", "m", 0), partial(1, 1, "u"))],
                ))
                .await
                .expect("commit");
        }
        assert_eq!(total_requests(&store, "a").await, round * 3 + 3);
        // Both handles dropped here without any close, a second store open on the
        // same file meanwhile.
        let _second = SqliteStore::open(&path).expect("second handle");
    }
}

/// Set in the child process of [`a_killed_process_leaves_whole_batches_only`].
const CRASH_CHILD_ENV: &str = "AIS_STORE_TEST_CRASH_CHILD";

/// The child side of the crash test: commits one-record batches forever, each adding
/// one request and one dedup id, until killed. Without the variable it does nothing.
#[tokio::test]
async fn crash_child() {
    let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let store = SqliteStore::open(std::path::Path::new(&path)).expect("child open");
    let mut next = store
        .partition_states()
        .await
        .expect("child states")
        .first()
        .map_or(0, |state| state.next_offset);
    loop {
        let mut commit = batch(
            next,
            next + 1,
            vec![
                (
                    key("a", "m", i64::try_from(next % 7).unwrap_or(0) * 60_000),
                    partial(1, 1, "u"),
                ),
                (key("b", "m", 0), partial(1, 1, "u")),
            ],
        );
        commit.dedup.push(DedupEntry {
            hash: u128::from(next),
            minute_ms: 0,
        });
        store.commit(commit).await.expect("child commit");
        next += 1;
        println!("committed {next}");
    }
}

/// A real crash: a child process commits in a loop and is killed (SIGKILL) at an
/// arbitrary point, often inside a transaction. After each kill the file holds whole
/// batches only: rollups, dedup ids and the position agree.
#[tokio::test]
async fn a_killed_process_leaves_whole_batches_only() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.sqlite");
    let executable = std::env::current_exe().expect("test binary");
    let mut last_position = 0;
    for round in 0..3u64 {
        let mut child = Command::new(&executable)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a varying number of commits so the kill lands at different
        // points of the commit path.
        let commits_before_kill = 20 + round * 7;
        let mut seen = 0;
        while seen < commits_before_kill {
            let line = lines
                .next()
                .expect("child exited early")
                .expect("child output");
            if line.starts_with("committed ") {
                seen += 1;
            }
        }
        child.kill().expect("kill child");
        child.wait().expect("reap child");

        let store = SqliteStore::open(&path).expect("reopen after kill");
        let position = store.partition_states().await.expect("states")[0].next_offset;
        assert!(
            position >= last_position + commits_before_kill,
            "every commit the child reported is durable: {position}"
        );
        assert_eq!(total_requests(&store, "a").await, position);
        assert_eq!(total_requests(&store, "b").await, position);
        let dedup = store.dedup_entries(0).await.expect("dedup");
        assert_eq!(dedup.len() as u64, position);
        last_position = position;
    }
}
