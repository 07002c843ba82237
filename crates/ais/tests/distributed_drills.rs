//! Drills of the distributed stream tier over real servers: stream processes killed
//! with SIGKILL at random points of a replay, a member killed and restarted at once,
//! members joining and leaving the consumer group under live traffic, ClickHouse
//! killed and restarted mid-stream, and a stream process paused past its session and
//! resumed (fencing). After each, the raw events and every rollup in ClickHouse equal
//! the exact values computed here from what was sent: nothing lost, nothing counted
//! twice.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{events_with_rollups, send_all, Cluster, PrivateClickhouse, Rollups};
use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const MODELS: &[&str] = &["gpt-4o", "claude-sonnet", "llama-70b"];
const TENANT: &str = "default";
/// Records per stream batch in the kill drill (`AIS_MAX_BATCH_RECORDS`).
const KILL_DRILL_BATCH: &str = "2000";
/// Long enough for a dead member's consumer-group session to expire.
const SESSION_EXPIRED: Duration =
    Duration::from_secs(ais_log::kafka::consumer::SESSION_TIMEOUT.as_secs() + 1);

/// `count` events of the last 50 minutes, and their exact rollups.
fn generate(seed: u64, count: usize) -> (Vec<serde_json::Value>, Rollups) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut expected = Rollups::new();
    let events = events_with_rollups(
        &mut rng,
        TENANT,
        MODELS,
        count,
        now_ms(),
        50 * 60_000,
        &mut expected,
    );
    (events, expected)
}

/// A backlog in Kafka: `count` events, plus a client retry of the first fifth (the
/// same ids again, later in the log), sent through `ais ingest`. Returns the exact
/// rollups and the number of distinct events.
fn backlog(
    cluster: &Cluster,
    client: &reqwest::blocking::Client,
    seed: u64,
    count: usize,
) -> (Rollups, u64) {
    let ingest = cluster.ingest(&[]);
    let (events, expected) = generate(seed, count);
    send_all(client, &ingest, None, &events, 2_000);
    send_all(client, &ingest, None, &events[..count / 5], 1_000);
    (expected, count as u64)
}

/// Sends `count` events through a new `ais ingest`, 1,000 every 250 ms, from a thread
/// (every request must be acknowledged), then with `retries` the first fifth again.
/// The last 1,000 and the retries wait until `hold` is released (sent to or dropped),
/// so traffic is still due however long the caller's drill takes. Returns their exact
/// rollups and the sender.
fn live_traffic(
    cluster: &Cluster,
    seed: u64,
    count: usize,
    retries: bool,
    hold: std::sync::mpsc::Receiver<()>,
) -> (Rollups, std::thread::JoinHandle<()>) {
    let (events, expected) = generate(seed, count);
    let ingest = cluster.ingest(&[]);
    let sender = std::thread::spawn(move || {
        let client = common::client();
        let (paced, held) = events.split_at(count.saturating_sub(1_000));
        for chunk in paced.chunks(1_000) {
            send_all(&client, &ingest, None, chunk, 1_000);
            std::thread::sleep(Duration::from_millis(250));
        }
        let _ = hold.recv();
        send_all(&client, &ingest, None, held, 1_000);
        if retries {
            send_all(&client, &ingest, None, &events[..count / 5], 1_000);
        }
    });
    (expected, sender)
}

/// Waits until the stream process `stream` owns partitions as `wanted` says.
fn wait_owning(
    client: &reqwest::blocking::Client,
    stream: &Server,
    what: &str,
    wanted: impl Fn(i64) -> bool,
) {
    eventually(what, || {
        let body: serde_json::Value = client
            .get(stream.url("/readyz"))
            .send()
            .and_then(|response| response.json())
            .map_err(|error| error.to_string())?;
        let owned = body["components"]
            .as_array()
            .and_then(|components| components.iter().find(|c| c["component"] == "stream"))
            .and_then(|stream| stream["facts"]["partitions_owned"].as_i64());
        match owned {
            Some(owned) if wanted(owned) => Ok(()),
            _ => Err(body.to_string()),
        }
    });
}

/// What `stream` says of a stuck consumer group, `None` while it says nothing: its
/// `/readyz` component `consumer_group` not ready, and the gauge
/// `ais_stream_group_stuck` at 1 for the cause it names.
fn stuck_cause(client: &reqwest::blocking::Client, stream: &Server) -> Option<String> {
    let readiness = stream.readiness(client);
    let group = readiness_component(&readiness, "consumer_group");
    if group["ready"] != false {
        return None;
    }
    let metrics = client
        .get(stream.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .unwrap_or_default();
    let cause = metrics.lines().find_map(|line| {
        let labels = line.strip_prefix("ais_stream_group_stuck{")?;
        let (labels, value) = labels.split_once("} ")?;
        (value.trim() == "1").then(|| labels.to_string())
    })?;
    Some(format!("{cause}: {}", group["detail"]))
}

/// `ais_stream_group_rejoins_total` of a stream process, over every cause.
fn group_rejoins(client: &reqwest::blocking::Client, stream: &Server) -> u64 {
    let metrics = client
        .get(stream.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .unwrap_or_default();
    metrics
        .lines()
        .filter(|line| line.starts_with("ais_stream_group_rejoins_total"))
        .filter_map(|line| line.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// Prints the last lines of every stream log in `logs`, for a drill that failed.
fn print_log_tails(logs: &std::path::Path) {
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        eprintln!(
            "== {}\n{}",
            entry.path().display(),
            log_tail(&entry.path(), 30)
        );
    }
}

/// Waits until the store holds every distinct event, then checks every rollup and the
/// ledger. On a timeout the tails of the stream logs in `logs` are printed.
fn assert_exact(
    cluster: &Cluster,
    client: &reqwest::blocking::Client,
    expected: &Rollups,
    events: u64,
    log_records: u64,
    logs: &std::path::Path,
) {
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    while cluster.committed_records(client) < log_records {
        if Instant::now() >= deadline {
            print_log_tails(logs);
            panic!(
                "the stream committed {} of {log_records} log records after {:?}",
                cluster.committed_records(client),
                ais_testkit::PATIENCE
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        cluster.stored_events(client),
        events,
        "raw events, each once"
    );
    let stored = cluster.stored_rollups(client);
    if stored.len() != expected.len()
        || expected
            .iter()
            .any(|(key, want)| stored.get(key) != Some(want))
    {
        // What a failure needs to be understood: the processes' logs, every claim, and
        // every batch marker with the claim it was written under.
        print_log_tails(logs);
        for (what, sql) in [
            (
                "claims (partition, claim, owner, start offset, claimed ms)",
                "SELECT log_partition, claim, owner, start_offset, claimed_ms FROM claims ORDER BY log_partition, claim",
            ),
            (
                "markers (partition, first offset, next offset, claim)",
                "SELECT log_partition, first_offset, next_offset, written_ms FROM rollups WHERE tenant = '' AND model = '' ORDER BY log_partition, first_offset, written_ms",
            ),
        ] {
            eprintln!("== {what}");
            for row in cluster.clickhouse_rows(client, sql) {
                eprintln!("{}", row.join(" "));
            }
        }
    }
    assert_eq!(stored.len(), expected.len(), "windows");
    for (key, want) in expected {
        assert_eq!(stored.get(key), Some(want), "rollup of {key:?}");
    }
    // The ledger: every log record accepted once, each event committed once, the
    // retries dropped as duplicates.
    assert_eq!(
        cluster.stored_ledger(client)[0],
        log_records,
        "ledger: accepted"
    );
    cluster.assert_ledger_accounts(client, events);
}

#[test]
fn stream_processes_killed_at_random_points_lose_and_double_count_nothing() {
    let Some(cluster) = Cluster::create("kill", 4) else {
        return;
    };
    let client = client();
    let count = 60_000;
    let (expected, events) = backlog(&cluster, &client, 21, count);
    let log_records = (count + count / 5) as u64;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = SmallRng::seed_from_u64(5);
    let mut mid_replay_kills = 0;
    for kill in 0..3 {
        let log = dir.path().join(format!("stream-{kill}.log"));
        // Small batches: many commits in the replay, so a kill lands between two of
        // them rather than after the last.
        let stream =
            cluster.stream_with(&[("AIS_MAX_BATCH_RECORDS", KILL_DRILL_BATCH)], Some(&log));
        // A random point of what is left of the replay, then a random moment more, so
        // the kill lands inside a batch as often as between two.
        let started = Instant::now();
        let before = cluster.committed_records(&client);
        let remaining = log_records.saturating_sub(before);
        let target = before + rng.random_range(remaining / 10..remaining / 3);
        while cluster.committed_records(&client) < target
            && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..200)));
        let committed = cluster.committed_records(&client);
        stream.kill_9();
        eprintln!(
            "kill {kill}: SIGKILL after {:?} with {committed} of {log_records} records committed (aimed past {target})",
            started.elapsed()
        );
        if committed < log_records {
            mid_replay_kills += 1;
        }
        // Restarted after the dead member's session has expired, as a pod replaced on
        // another node would be; a restart at once is the restart drills' case.
        std::thread::sleep(SESSION_EXPIRED);
    }
    if mid_replay_kills < 2 {
        print_log_tails(dir.path());
    }
    assert!(
        mid_replay_kills >= 2,
        "the kills must land during the replay, not after it"
    );
    let _survivor = cluster.stream(Some(&dir.path().join("stream-last.log")));
    assert_exact(
        &cluster,
        &client,
        &expected,
        events,
        log_records,
        dir.path(),
    );
}

#[test]
fn members_joining_and_leaving_under_live_traffic_lose_and_double_count_nothing() {
    let Some(cluster) = Cluster::create("rebalance", 4) else {
        return;
    };
    let client = client();
    let count = 60_000;
    let log_records = (count + count / 5) as u64;
    // Live traffic for the whole drill: about 15 s of requests, the last of them and
    // the retries held back until every membership change has happened.
    let (release, hold) = std::sync::mpsc::channel();
    let (expected, sender) = live_traffic(&cluster, 33, count, true, hold);

    let logs = tempfile::tempdir().expect("temp dir");
    let log = |name: &str| logs.path().join(format!("{name}.log"));
    let first = cluster.stream(Some(&log("first")));
    wait_owning(
        &client,
        &first,
        "the first member to own every partition",
        |owned| owned == 4,
    );
    // A second member joins: the partitions are split between the two.
    let second = cluster.stream(Some(&log("second")));
    wait_owning(
        &client,
        &second,
        "the second member to get partitions",
        |owned| (1..4).contains(&owned),
    );
    // The first leaves gracefully (SIGTERM), the second takes everything over.
    let exit = first.stop();
    assert!(
        exit.success(),
        "a stream process stops cleanly on SIGTERM: {exit:?}"
    );
    wait_owning(
        &client,
        &second,
        "the second member to take over every partition",
        |owned| owned == 4,
    );
    // A third joins, then the second dies without leaving the group.
    let third = cluster.stream(Some(&log("third")));
    wait_owning(
        &client,
        &third,
        "the third member to get partitions",
        |owned| (1..4).contains(&owned),
    );
    let committed = cluster.committed_records(&client);
    assert!(
        committed < log_records,
        "the membership changes happened while events were still arriving ({committed} of {log_records} committed)"
    );
    second.kill_9();
    // Its replacement joins, as an orchestrator restarts a crashed pod. (Kafka would
    // also hand a dead member's partitions to the survivors after session.timeout.ms;
    // Tansu 0.6 leaves that to the members' watchdog, and the drill relies on neither.)
    let _replacement = cluster.stream(Some(&log("replacement")));
    drop(release);
    sender.join().expect("the sender sent everything");
    assert_exact(
        &cluster,
        &client,
        &expected,
        count as u64,
        log_records,
        logs.path(),
    );
}

/// `ais_store_commit_errors_total` of a stream process.
fn failed_commits(client: &reqwest::blocking::Client, stream: &Server) -> Result<u64, String> {
    let text = client
        .get(stream.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .map_err(|error| error.to_string())?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix("ais_store_commit_errors_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64))
}

#[test]
fn a_clickhouse_restart_mid_stream_holds_the_stream_back_then_it_resumes_exactly() {
    let Some(mut clickhouse) = PrivateClickhouse::start() else {
        return;
    };
    let Some(cluster) = Cluster::create_with("chrestart", 2, Some(clickhouse.url())) else {
        return;
    };
    let client = client();
    let count = 40_000;
    let logs = tempfile::tempdir().expect("temp dir");
    let stream = cluster.stream(Some(&logs.path().join("stream.log")));
    let ingest = cluster.ingest(&[]);
    let (events, expected) = generate(47, count);
    let (before, during) = events.split_at(count / 2);

    // The first half is in the store before ClickHouse goes away.
    send_all(&client, &ingest, None, before, 1_000);
    eventually("the first half of the events in ClickHouse", || {
        let committed = cluster.committed_records(&client);
        if committed >= before.len() as u64 {
            Ok(())
        } else {
            Err(format!("{committed} log records committed"))
        }
    });
    let failed_before = failed_commits(&client, &stream).expect("the stream's metrics");
    clickhouse.kill_9();
    // Ingest never touches ClickHouse: every request is acknowledged during the outage.
    send_all(&client, &ingest, None, during, 1_000);
    // The stream cannot commit: it tries, and the store refuses. (Its lag figure is no
    // sign of this: the records it holds in memory, up to two batches, are no longer
    // in it.)
    let failures = eventually(
        "the stream failing to commit while ClickHouse is down",
        || {
            let failures = failed_commits(&client, &stream)?;
            if failures > failed_before {
                Ok(failures - failed_before)
            } else {
                Err(format!(
                    "{failures} failed commits, {failed_before} before the outage"
                ))
            }
        },
    );
    clickhouse.start_again();
    let back = Instant::now();
    assert_exact(
        &cluster,
        &client,
        &expected,
        count as u64,
        count as u64,
        logs.path(),
    );
    eprintln!(
        "FIGURE clickhouse killed with {} events of {count} unsent: {failures} commits failed meanwhile; every event stored exactly once {:.1} s after ClickHouse returned",
        during.len(),
        back.elapsed().as_secs_f64()
    );
}

/// Two members of one group split a backlog; one is killed with SIGKILL mid-replay
/// and started again at once, before its session could expire, as Kubernetes restarts
/// a crashed container in its pod. `identities` are the members' instance ids
/// (`AIS_INSTANCE_ID`, the pod names), or `None` for members without one. Returns how
/// long after the restart every record was committed.
fn restart_at_once(name: &str, identities: Option<[&str; 2]>) -> Duration {
    let Some(cluster) = Cluster::create(name, 6) else {
        return Duration::ZERO;
    };
    let client = client();
    let count = 40_000;
    let log_records = (count + count / 5) as u64;
    let logs = tempfile::tempdir().expect("temp dir");
    let log = |name: &str| logs.path().join(format!("{name}.log"));
    let start = |member: usize, log_name: &str| {
        let mut env = vec![("AIS_MAX_BATCH_RECORDS", KILL_DRILL_BATCH)];
        if let Some(identities) = identities {
            env.push(("AIS_INSTANCE_ID", identities[member]));
        }
        cluster.stream_with(&env, Some(&log(log_name)))
    };
    let first = start(0, "first");
    let second = start(1, "second");
    // The group settles into two members before the backlog arrives, so the kill
    // always lands on a member that owns partitions with records still to replay.
    wait_owning(
        &client,
        &second,
        "the second member to get partitions",
        |owned| (1..6).contains(&owned),
    );
    let (expected, events) = backlog(&cluster, &client, 61, count);
    eventually("the replay to be under way", || {
        let committed = cluster.committed_records(&client);
        if committed > 0 {
            Ok(())
        } else {
            Err(format!("{committed} records committed"))
        }
    });
    let committed = cluster.committed_records(&client);
    second.kill_9();
    let second = start(1, "second-restarted");
    let restarted = Instant::now();
    eprintln!("{name}: SIGKILL and restart with {committed} of {log_records} records committed");
    assert!(
        committed < log_records,
        "the kill must land during the replay, not after it"
    );
    // Tansu 0.6 may give the killed member, whose session is still open when the new
    // one joins, a share of the partitions and keep it there, until a member's
    // watchdog sees the stall and rejoins (Kafka re-forms the group by itself). Whether
    // it does depends on when the join lands, so the drill asks for the outcome, every
    // event once; and whenever a watchdog rejoined, a member must have said so while
    // the group was stuck (`/readyz` not ready, the gauge naming the cause), which a
    // watcher samples meanwhile.
    let done = std::sync::atomic::AtomicBool::new(false);
    let reported = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let client = common::client();
            ais_testkit::sample_until(&done, || {
                [&first, &second]
                    .into_iter()
                    .find_map(|member| stuck_cause(&client, member))
            })
        });
        assert_exact(
            &cluster,
            &client,
            &expected,
            events,
            log_records,
            logs.path(),
        );
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().expect("the watcher")
    });
    let resumed = restarted.elapsed();
    let rejoins: u64 = [&first, &second]
        .into_iter()
        .map(|member| group_rejoins(&client, member))
        .sum();
    if rejoins > 0 {
        assert!(
            reported.is_some(),
            "{name}: a watchdog rejoined the group, but no member reported it stuck"
        );
    }
    eprintln!("{name}: reported stuck: {reported:?}");
    eprintln!("{name}: the watchdogs rejoined the group {rejoins} time(s)");
    for member in [&first, &second] {
        eventually(
            "every member to report its group as reading",
            || match stuck_cause(&client, member) {
                None => Ok(()),
                Some(cause) => Err(cause),
            },
        );
    }
    resumed
}

#[test]
fn a_member_killed_and_restarted_at_once_with_its_pod_name_resumes_exactly() {
    let resumed = restart_at_once("restart_static", Some(["stream-0", "stream-1"]));
    eprintln!(
        "FIGURE a member killed mid-replay and restarted at once under its pod name: every event stored exactly once {:.1} s after the restart",
        resumed.as_secs_f64()
    );
}

#[test]
fn a_member_killed_and_restarted_at_once_under_a_new_identity_resumes_exactly() {
    // Members without an instance id: the restarted process is a new member, and the
    // killed one stays in the group until the broker (or a rejoin) evicts it.
    let resumed = restart_at_once("restart_dynamic", None);
    eprintln!(
        "FIGURE a member killed mid-replay and restarted at once as a new member: every event stored exactly once {:.1} s after the restart",
        resumed.as_secs_f64()
    );
}

/// A stream process paused (SIGSTOP) mid-replay past its session, its partitions
/// taken over by another process that moves on with batches of another size, then
/// resumed (SIGCONT) with whatever it was committing: its stale commit is refused or
/// void (fencing), and the store holds every event once.
#[test]
fn a_stream_process_paused_past_its_session_and_resumed_changes_nothing() {
    let Some(cluster) = Cluster::create("zombie", 2) else {
        return;
    };
    let client = client();
    let count = 40_000;
    let (expected, events) = backlog(&cluster, &client, 33, count);
    let log_records = (count + count / 5) as u64;
    let dir = tempfile::tempdir().expect("temp dir");
    let paused = cluster.stream_with(
        &[("AIS_MAX_BATCH_RECORDS", KILL_DRILL_BATCH)],
        Some(&dir.path().join("stream-paused.log")),
    );
    // Mid-replay, with most of the backlog still to come: commits follow each other
    // there, so the pause most likely lands inside one.
    eventually("the first process is replaying", || {
        let committed = cluster.committed_records(&client);
        if committed >= log_records / 5 {
            Ok(())
        } else {
            Err(format!("{committed} of {log_records} records committed"))
        }
    });
    paused.signal("STOP");
    let committed_at_pause = cluster.committed_records(&client);
    assert!(
        committed_at_pause < log_records,
        "the pause must land during the replay"
    );
    // The successor joins at once: a broker that keeps the silent member's share
    // (Tansu 0.6, while its session is open) leaves those partitions unread until the
    // successor's watchdog rejoins the group; either way the successor ends up owning
    // every partition, which is the event waited for.
    let successor = cluster.stream_with(
        &[("AIS_MAX_BATCH_RECORDS", "1500")],
        Some(&dir.path().join("stream-successor.log")),
    );
    wait_owning(
        &client,
        &successor,
        "the successor owns every partition",
        |owned| owned == 2,
    );
    eventually("the successor moved past the paused process", || {
        let committed = cluster.committed_records(&client);
        if committed >= committed_at_pause + 6_000 {
            Ok(())
        } else {
            Err(format!(
                "{committed} records committed, {committed_at_pause} at the pause"
            ))
        }
    });
    paused.signal("CONT");
    assert_exact(
        &cluster,
        &client,
        &expected,
        events,
        log_records,
        dir.path(),
    );
    eprintln!(
        "the resumed process's log:\n{}",
        log_tail(&dir.path().join("stream-paused.log"), 10)
    );
}
