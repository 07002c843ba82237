//! The ledger over real HTTP on one node: every event sent counted as accepted once,
//! then as committed or as a duplicate, in the hour of its event time; every hour
//! balanced; and a clear error for a bad range.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{json, Value};

const HOUR_MS: i64 = 3_600_000;

#[test]
fn every_event_sent_is_accepted_once_and_committed_or_dropped_as_a_duplicate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let client = client();
    let now = now_ms();
    // Two hours of event time, either side of the last hour's start (within the dedup
    // window of an hour, and at most a second ahead of the clock); client ids, the
    // first 40 sent twice (a client retrying).
    let boundary = now.div_euclid(HOUR_MS) * HOUR_MS;
    let at = |n: i64| if n % 3 == 0 { boundary - 5 * 60_000 } else { boundary } + n;
    let events: Vec<Value> = (0..300)
        .map(|n| {
            json!({"event_id": format!("e-{n}"), "timestamp": at(n), "model": "m",
                   "latency_ms": 10 + n})
        })
        .collect();
    for chunk in events.chunks(100).chain(std::iter::once(&events[..40])) {
        let (status, body) = post_json(&client, &server, None, &Value::Array(chunk.to_vec()));
        assert_eq!(status, 202, "{body}");
    }
    server.wait_caught_up(&client);

    // What each hour should say, from what was sent.
    let mut want: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
    for n in 0..300 {
        let hour = at(n).div_euclid(HOUR_MS) * HOUR_MS;
        let entry = want.entry(hour).or_default();
        entry.0 += if n < 40 { 2 } else { 1 };
        entry.1 += 1;
        entry.2 += u64::from(n < 40);
    }
    let (status, body) = get_json(
        &client,
        &server,
        None,
        &format!("/v1/ledger?from={}&to={}", now - 3 * HOUR_MS, now + 60_000),
    );
    assert_eq!(status, 200, "{body}");
    let got: BTreeMap<i64, (u64, u64, u64)> = body["hours"]
        .as_array()
        .expect("hours")
        .iter()
        .map(|hour| {
            assert_eq!(hour["balanced"], true, "{hour}");
            assert_eq!(hour["dead_lettered"], 0, "{hour}");
            let count = |name: &str| hour[name].as_u64().expect("a count");
            (
                hour["hour_ms"].as_i64().expect("an hour"),
                (count("accepted"), count("committed"), count("duplicates")),
            )
        })
        .collect();
    assert_eq!(got, want);

    let (status, body) = get_json(&client, &server, None, "/v1/ledger?from=yesterday");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("from"),
        "{body}"
    );

    // `ais verify` on the stopped node: clean; then with one hour made to drift, and
    // with a position past what the ledger accounts for, non-zero and naming each.
    assert!(server.stop().success());
    let verified = verify(dir.path());
    assert!(verified.status.success(), "{verified:?}");
    assert!(
        stdout(&verified).contains("ledger balanced: 2 hour(s)"),
        "{verified:?}"
    );
    let store = rusqlite::Connection::open(dir.path().join("ais.sqlite")).expect("store");
    let tamper = |sql: &str| store.execute(sql, []).expect("tampered");
    tamper(&format!(
        "UPDATE ledger SET committed = committed - 1 WHERE hour_ms = {boundary}"
    ));
    let verified = verify(dir.path());
    assert!(!verified.status.success(), "{verified:?}");
    let hour = ais_model::time::format_rfc3339_ms(boundary);
    assert!(
        stdout(&verified).contains(&format!("hour {hour}, partition 0")),
        "{verified:?}"
    );
    tamper(&format!(
        "UPDATE ledger SET committed = committed + 1 WHERE hour_ms = {boundary}"
    ));
    assert!(verify(dir.path()).status.success());
    tamper("UPDATE positions SET next_offset = next_offset + 1 WHERE partition = 0");
    let verified = verify(dir.path());
    assert!(!verified.status.success(), "{verified:?}");
    let records = events.len() + 40;
    assert!(
        stdout(&verified).contains(&format!(
            "partition 0: the ledger accounts for {records} records, the position is {}",
            records + 1
        )),
        "{verified:?}"
    );
}

fn verify(data_dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ais"))
        .args(["verify", "--data-dir"])
        .arg(data_dir)
        .env_remove("AIS_CLICKHOUSE")
        .output()
        .expect("ais verify runs")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}
