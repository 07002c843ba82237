//! The WAL on a simulated disk that loses what was not synced: every acknowledged
//! append survives a power loss at any point and recovery is clean; and an injected
//! failure to make a segment in the middle of a group answers exactly what is on disk
//! as durable.
//!
//! `kill -9` keeps the page cache, so tests on real files cannot tell a synced write
//! from an unsynced one; these can, and fail when a sync the WAL relies on is missing.

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::task::Poll;

use ais_testkit::PATIENCE;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::storage::simulated::{Op, SimulatedDisk};
use super::storage::Storage;
use super::{Wal, WalConfig, FRAME_HEADER_BYTES};
use crate::{Appended, Log, LogError, RecordBatch, StartPosition};

/// Seeded cases of the power-loss test; each runs a few lives of the log.
const POWER_LOSS_CASES: u64 = 48;
/// Runs of the log per case, each ended by a power loss.
const LIVES: u64 = 3;
/// Concurrent appenders per life, so groups hold several appends.
const APPENDERS: u64 = 4;
/// Appends each appender makes per life (fewer once one fails).
const APPENDS_PER_APPENDER: u64 = 12;
/// The changing disk operations a life may get through before the power goes off;
/// about what a whole life takes, so some lives end after their last answer.
const MOST_OPERATIONS_BEFORE_POWER_LOSS: u64 = 150;
/// Small, so a life rolls many segments and a power loss often falls near a roll.
const SEGMENT_BYTES: u64 = 400;

fn root() -> PathBuf {
    PathBuf::from("/disk")
}

fn wal_dir() -> PathBuf {
    root().join("data").join("wal")
}

fn open(disk: &Arc<SimulatedDisk>, segment_bytes: u64) -> Result<Wal, LogError> {
    open_held(disk, segment_bytes, None)
}

fn open_held(
    disk: &Arc<SimulatedDisk>,
    segment_bytes: u64,
    hold: Option<std::sync::mpsc::Receiver<()>>,
) -> Result<Wal, LogError> {
    let config = WalConfig {
        segment_bytes,
        ..WalConfig::new(wal_dir())
    };
    Wal::open_on(config, Storage::Simulated(Arc::clone(disk)), hold)
}

fn batch_of(records: &[String]) -> RecordBatch {
    let mut batch = RecordBatch::default();
    for record in records {
        batch.push(record.as_bytes());
    }
    batch
}

/// Every durable record of `wal`, in offset order.
async fn read_all(wal: &Wal) -> Vec<String> {
    let mut consumer = wal
        .consumer(&[StartPosition {
            partition: 0,
            next_offset: 0,
        }])
        .await
        .expect("consumer");
    let mut records = Vec::new();
    while (records.len() as u64) < wal.durable_end() {
        let fetched = consumer
            .poll(1000, PATIENCE)
            .await
            .expect("poll")
            .expect("durable records are returned at once");
        records.extend(
            fetched
                .records
                .iter()
                .map(|record| String::from_utf8_lossy(record).into_owned()),
        );
    }
    records
}

/// An append that was answered `Ok`.
struct Acknowledged {
    appender: u64,
    first_offset: u64,
    records: Vec<String>,
}

/// Opens the log on `disk` (which must open cleanly, whatever the power loss left) and
/// checks it: every acknowledged append at its offsets, each appender's in the order
/// it made them, no record twice, nothing that was never appended.
async fn check_recovered(
    disk: &Arc<SimulatedDisk>,
    acknowledged: &[Acknowledged],
    appended: &HashSet<String>,
    context: &str,
) {
    let wal = match open(disk, SEGMENT_BYTES) {
        Ok(wal) => wal,
        Err(error) => panic!("{context}: recovery failed: {error}"),
    };
    let log = read_all(&wal).await;
    let mut seen = HashSet::new();
    for record in &log {
        assert!(
            seen.insert(record),
            "{context}: {record} is in the log twice"
        );
        assert!(
            appended.contains(record),
            "{context}: {record} was never appended"
        );
    }
    for append in acknowledged {
        let start = usize::try_from(append.first_offset).expect("small offsets");
        let found = log.get(start..start + append.records.len());
        assert_eq!(
            found,
            Some(&append.records[..]),
            "{context}: an append acknowledged at offset {} is not there ({} records in the log)",
            append.first_offset,
            log.len()
        );
    }
    for appender in 0..APPENDERS {
        let offsets: Vec<u64> = acknowledged
            .iter()
            .filter(|append| append.appender == appender)
            .map(|append| append.first_offset)
            .collect();
        assert!(
            offsets.windows(2).all(|pair| pair[0] < pair[1]),
            "{context}: appender {appender}'s appends are out of order: {offsets:?}"
        );
    }
    wal.close().await.expect("close");
}

/// One life: open the log with the power set to go off after a random number of disk
/// operations (perhaps during recovery), append concurrently until it does or every
/// append is answered, then lose the power. Returns the disk after the loss.
async fn live(
    disk: &Arc<SimulatedDisk>,
    random: &mut StdRng,
    life: u64,
    acknowledged: &mut Vec<Acknowledged>,
    appended: &mut HashSet<String>,
) -> Arc<SimulatedDisk> {
    disk.lose_power_after(random.random_range(0..=MOST_OPERATIONS_BEFORE_POWER_LOSS));
    let wal = match open(disk, SEGMENT_BYTES) {
        Ok(wal) => Arc::new(wal),
        Err(LogError::Io { .. }) if disk.power_lost() => return disk.lose_power(),
        Err(error) => panic!("life {life}: opening failed with the power on: {error}"),
    };
    let mut appenders = tokio::task::JoinSet::new();
    for appender in 0..APPENDERS {
        let wal = Arc::clone(&wal);
        let sizes: Vec<u64> = (0..APPENDS_PER_APPENDER)
            .map(|_| random.random_range(1..=4))
            .collect();
        let batches: Vec<Vec<String>> = sizes
            .iter()
            .enumerate()
            .map(|(append, size)| {
                (0..*size)
                    .map(|record| format!("l{life}-a{appender}-b{append}-r{record}"))
                    .collect()
            })
            .collect();
        appended.extend(batches.iter().flatten().cloned());
        appenders.spawn(async move {
            let mut answered = Vec::new();
            for records in batches {
                match wal.append(batch_of(&records)).await {
                    Ok(Appended { first_offset, .. }) => answered.push(Acknowledged {
                        appender,
                        first_offset,
                        records,
                    }),
                    // The log refuses everything after a failed write until restart.
                    Err(_) => break,
                }
            }
            answered
        });
    }
    while let Some(answered) = appenders.join_next().await {
        acknowledged.extend(answered.expect("appender"));
    }
    // No close: the power goes off under a running log.
    drop(wal);
    disk.lose_power()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_survives_power_loss_and_recovery_is_clean() {
    for seed in 0..POWER_LOSS_CASES {
        let mut random = StdRng::seed_from_u64(seed);
        let mut disk = SimulatedDisk::new(&root(), random.random());
        let mut acknowledged = Vec::new();
        let mut appended = HashSet::new();
        for life in 0..LIVES {
            disk = live(&disk, &mut random, life, &mut acknowledged, &mut appended).await;
            // On a copy: the next life recovers from what the power loss left itself.
            let context = format!("seed {seed}, after life {life}");
            check_recovered(&disk.copy(), &acknowledged, &appended, &context).await;
        }
    }
}

/// Queues `append` by polling it once; the writer is held, so it waits.
async fn queue<F>(mut append: Pin<Box<F>>) -> Pin<Box<F>>
where
    F: Future + ?Sized,
{
    std::future::poll_fn(|context| {
        assert!(
            append.as_mut().poll(context).is_pending(),
            "an append answered before the writer ran"
        );
        Poll::Ready(())
    })
    .await;
    append
}

#[tokio::test]
async fn a_segment_not_made_mid_group_leaves_on_disk_exactly_the_appends_answered_durable() {
    const APPENDS: u64 = 8;
    let records = |append: u64| -> Vec<String> {
        (0..3)
            .map(|record| format!("append-{append}-record-{record}"))
            .collect()
    };
    let frame_bytes = (FRAME_HEADER_BYTES + batch_of(&records(0)).byte_len()) as u64;
    // The group of all appends fills the first segment after this many.
    let fitting = SEGMENT_BYTES / frame_bytes;
    assert!(
        (1..APPENDS).contains(&fitting),
        "the group must need a new segment"
    );
    // Making the file fails, or syncing its directory entry does.
    for fault in [Op::CreateFile, Op::SyncDir] {
        let disk = SimulatedDisk::new(&root(), 0);
        let (release, hold) = sync_channel(0);
        let wal = open_held(&disk, SEGMENT_BYTES, Some(hold)).expect("open");
        disk.fail(fault, 1);
        let mut waiting = Vec::new();
        for append in 0..APPENDS {
            waiting.push(queue(wal.append(batch_of(&records(append)))).await);
        }
        assert_eq!(wal.queued_appends(), APPENDS, "one group");
        drop(release);
        let mut answered = Vec::new();
        for append in waiting {
            answered.push(append.await);
        }
        for (append, answer) in answered.iter().enumerate() {
            let append = append as u64;
            match answer {
                Ok(appended) if append < fitting => {
                    assert_eq!(appended.first_offset, append * 3, "{fault:?}")
                }
                Err(LogError::Unavailable(_)) if append >= fitting => {}
                other => panic!("{fault:?}: append {append} of {fitting} fitting: {other:?}"),
            }
        }
        assert_eq!(wal.durable_end(), fitting * 3, "{fault:?}");
        assert!(!wal.status().writable, "{fault:?}: a failed log refuses");
        drop(wal);

        // After a power loss the log holds exactly the appends answered durable, so a
        // client resending the refused ones counts nothing twice.
        let after = disk.lose_power();
        let wal = open(&after, SEGMENT_BYTES).expect("recovery");
        let expected: Vec<String> = (0..fitting).flat_map(records).collect();
        assert_eq!(read_all(&wal).await, expected, "{fault:?}");
        let resent = wal
            .append(batch_of(&records(fitting)))
            .await
            .expect("appends go on after a restart");
        assert_eq!(resent.first_offset, fitting * 3, "{fault:?}");
    }
}

#[tokio::test]
async fn the_wal_directory_is_created_durably() {
    let disk = SimulatedDisk::new(&root(), 0);
    let wal = open(&disk, SEGMENT_BYTES).expect("open");
    wal.append(batch_of(&["kept".to_string()]))
        .await
        .expect("append");
    drop(wal);
    let after = disk.lose_power();
    // Both levels were missing: each one's entry in its parent survived.
    assert!(after.dir_exists(&wal_dir()));
    let wal = open(&after, SEGMENT_BYTES).expect("recovery");
    assert_eq!(read_all(&wal).await, vec!["kept".to_string()]);
}
