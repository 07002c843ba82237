//! The WAL on real files: round trips across segments, group commit, torn tails cut at
//! every byte, corruption refused, the byte cap, release, resume, and a crash model.

use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

use ais_testkit::PATIENCE;
use proptest::prelude::*;
use tokio::sync::oneshot;

use super::segment::parse_segment_name;
use super::storage::Storage;
use super::writer::{enqueue, AppendJob};
use super::{Wal, WalConfig, FRAME_HEADER_BYTES};
use crate::{Log, LogConsumer, LogError, RecordBatch, StartPosition};

fn config(dir: &Path, segment_bytes: u64) -> WalConfig {
    WalConfig {
        segment_bytes,
        ..WalConfig::new(dir.to_path_buf())
    }
}

fn record(value: u64) -> String {
    format!("record-{value}")
}

fn batch(first: u64, count: u64) -> RecordBatch {
    let mut batch = RecordBatch::default();
    for value in first..first + count {
        batch.push(record(value).as_bytes());
    }
    batch
}

fn expected(from: u64, to: u64) -> Vec<String> {
    (from..to).map(record).collect()
}

fn strings(records: &[bytes::Bytes]) -> Vec<String> {
    records
        .iter()
        .map(|record| String::from_utf8_lossy(record).into_owned())
        .collect()
}

async fn consumer_at(wal: &Wal, next_offset: u64) -> Box<dyn LogConsumer> {
    wal.consumer(&[StartPosition {
        partition: 0,
        next_offset,
    }])
    .await
    .expect("consumer")
}

/// Reads every durable record from `from` on, `max_records` at a time, checking that
/// batches are contiguous and never larger than asked.
async fn read_all_by(wal: &Wal, from: u64, max_records: usize) -> Vec<String> {
    let mut consumer = consumer_at(wal, from).await;
    let mut out = Vec::new();
    while out.len() as u64 + from < wal.durable_end() {
        let fetched = consumer
            .poll(max_records, PATIENCE)
            .await
            .expect("poll")
            .expect("durable records are returned at once");
        assert_eq!(fetched.partition, 0);
        assert_eq!(
            fetched.first_offset,
            from + out.len() as u64,
            "contiguous offsets"
        );
        assert!(!fetched.records.is_empty());
        assert!(fetched.records.len() <= max_records, "at most max_records");
        out.extend(strings(&fetched.records));
    }
    assert_eq!(consumer.lag(), vec![(0, 0)]);
    out
}

async fn read_all(wal: &Wal, from: u64) -> Vec<String> {
    read_all_by(wal, from, 1000).await
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    files.sort();
    files
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().expect("a segment")
}

/// Bytes of the frame of `batch(first, count)`.
fn frame_len(first: u64, count: u64) -> usize {
    FRAME_HEADER_BYTES + batch(first, count).byte_len()
}

fn expect_corrupt(result: Result<Wal, LogError>) -> (String, String) {
    match result {
        Err(LogError::Corrupt { location, detail }) => (location, detail),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("expected corruption, got an open log"),
    }
}

#[tokio::test]
async fn records_round_trip_across_segment_rolls_and_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(config(dir.path(), 512)).expect("open");
    let mut next = 0;
    for size in [1, 7, 30, 2, 50, 1] {
        let appended = wal.append(batch(next, size)).await.expect("append");
        assert_eq!(appended.partition, 0);
        assert_eq!(
            (appended.first_offset, u64::from(appended.count)),
            (next, size)
        );
        next += size;
    }
    assert!(wal.segment_files().len() > 3, "small segments roll");
    assert_eq!(wal.segment_files(), segment_files(dir.path()));
    let on_disk: u64 = segment_files(dir.path())
        .iter()
        .map(|path| std::fs::metadata(path).expect("size").len())
        .sum();
    assert_eq!(wal.live_bytes(), on_disk, "the cap counts what is on disk");
    assert_eq!(read_all(&wal, 0).await, expected(0, next));
    assert_eq!(read_all_by(&wal, 0, 1).await, expected(0, next));
    wal.close().await.expect("close");
    assert!(matches!(
        wal.append(batch(0, 1)).await,
        Err(LogError::Closed)
    ));
    assert!(!wal.status().writable);

    let reopened = Wal::open(config(dir.path(), 512)).expect("reopen");
    assert_eq!(reopened.durable_end(), next);
    assert_eq!(reopened.live_bytes(), on_disk);
    let appended = reopened
        .append(batch(next, 3))
        .await
        .expect("append after reopen");
    assert_eq!(appended.first_offset, next);
    assert_eq!(read_all(&reopened, 0).await, expected(0, next + 3));
}

#[tokio::test]
async fn segments_are_named_by_their_first_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(config(dir.path(), 100)).expect("open");
    for first in (0..12).step_by(3) {
        wal.append(batch(first, 3)).await.expect("append");
    }
    let names: Vec<String> = wal
        .segment_files()
        .iter()
        .map(|path| {
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names[0], "00000000000000000000.wal");
    let firsts: Vec<u64> = names
        .iter()
        .map(|name| parse_segment_name(name).expect("a segment name"))
        .collect();
    assert!(firsts.windows(2).all(|pair| pair[0] < pair[1]), "{names:?}");
    assert!(
        firsts.iter().all(|first| first % 3 == 0),
        "batches stay whole"
    );
    assert_eq!(parse_segment_name("00000000000000000007.wal"), Some(7));
    assert_eq!(parse_segment_name("7.wal"), None);
    assert_eq!(parse_segment_name("+0000000000000000007.wal"), None);
    assert_eq!(parse_segment_name("00000000000000000007.tmp"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_get_distinct_offsets() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The writer waits until all 200 appends are queued, whatever the machine's pace.
    let (release, hold) = sync_channel(0);
    let wal = Arc::new(
        Wal::open_on(config(dir.path(), 1 << 20), Storage::Disk, Some(hold)).expect("open"),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..200u64 {
        let wal = Arc::clone(&wal);
        tasks.spawn(async move { wal.append(batch(task * 1000, 5)).await });
    }
    ais_testkit::eventually_async("200 appends queued", || {
        let wal = Arc::clone(&wal);
        async move {
            match wal.queued_appends() {
                200 => Ok(()),
                queued => Err(format!("{queued} queued")),
            }
        }
    })
    .await;
    drop(release);
    let mut ranges = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let appended = result.expect("task").expect("append");
        ranges.push((appended.first_offset, appended.count));
    }
    ranges.sort_unstable();
    for (index, (first, count)) in ranges.iter().enumerate() {
        assert_eq!(*first, index as u64 * 5, "contiguous, no overlap");
        assert_eq!(*count, 5);
    }
    assert_eq!(
        wal.fsync_count(),
        1,
        "200 queued appends are one group commit"
    );
    assert_eq!(wal.queued_appends(), 0);
    assert_eq!(read_all(&wal, 0).await.len(), 1000);
}

#[tokio::test]
async fn an_empty_batch_costs_no_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(config(dir.path(), 1 << 20)).expect("open");
    wal.append(batch(0, 2)).await.expect("append");
    let fsyncs = wal.fsync_count();
    let appended = wal.append(RecordBatch::default()).await.expect("empty");
    assert_eq!((appended.first_offset, appended.count), (2, 0));
    assert_eq!(wal.fsync_count(), fsyncs);
    assert_eq!(wal.durable_end(), 2);
}

#[test]
fn a_full_queue_refuses_at_once() {
    // A queue whose writer is not reading: the second append must not wait.
    let (sender, receiver) = sync_channel(1);
    let (reply, _answer) = oneshot::channel();
    enqueue(
        &sender,
        AppendJob {
            batch: batch(0, 1),
            reply,
        },
    )
    .expect("room for one");
    let (reply, _answer) = oneshot::channel();
    let refused = enqueue(
        &sender,
        AppendJob {
            batch: batch(1, 1),
            reply,
        },
    );
    match refused {
        Err(LogError::Full { retry_after, .. }) => assert!(retry_after > Duration::ZERO),
        other => panic!("expected Full, got {other:?}"),
    }
    drop(receiver);
    let (reply, _answer) = oneshot::channel();
    let gone = enqueue(
        &sender,
        AppendJob {
            batch: batch(1, 1),
            reply,
        },
    );
    assert!(matches!(gone, Err(LogError::Closed)), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_commits_what_was_accepted_then_refuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Arc::new(Wal::open(config(dir.path(), 4096)).expect("open"));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..50u64 {
        let wal = Arc::clone(&wal);
        tasks.spawn(async move { (task, wal.append(batch(task * 100, 2)).await) });
    }
    wal.close().await.expect("close");
    let mut acknowledged = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (task, outcome) = result.expect("task");
        match outcome {
            Ok(appended) => acknowledged.push((appended.first_offset, task)),
            Err(LogError::Closed) => {}
            Err(other) => panic!("an append during close failed with {other}"),
        }
    }
    assert!(matches!(
        wal.append(batch(0, 1)).await,
        Err(LogError::Closed)
    ));
    wal.close().await.expect("closing twice is fine");
    drop(wal);

    acknowledged.sort_unstable();
    let reopened = Wal::open(config(dir.path(), 4096)).expect("reopen");
    let mut model = Vec::new();
    for (first, task) in &acknowledged {
        assert_eq!(*first, model.len() as u64);
        model.extend(expected(task * 100, task * 100 + 2));
    }
    assert_eq!(reopened.durable_end(), model.len() as u64);
    assert_eq!(read_all(&reopened, 0).await, model);
}

#[tokio::test]
async fn a_torn_tail_is_cut_at_every_byte_and_appends_continue() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let wal = Wal::open(config(dir.path(), 1 << 20)).expect("open");
        wal.append(batch(0, 4)).await.expect("append");
        wal.append(batch(4, 3)).await.expect("append");
        wal.close().await.expect("close");
    }
    let segment = last_segment(dir.path());
    let original = std::fs::read(&segment).expect("read");
    let last_frame_start = original.len() - frame_len(4, 3);
    assert_eq!(last_frame_start, frame_len(0, 4));
    for cut in last_frame_start..original.len() {
        std::fs::write(&segment, &original[..cut]).expect("truncate");
        let wal = Wal::open(config(dir.path(), 1 << 20)).expect("a torn tail is recovered");
        assert_eq!(wal.durable_end(), 4, "cut at byte {cut}");
        assert_eq!(
            std::fs::metadata(&segment).expect("size").len(),
            last_frame_start as u64,
            "the torn bytes are gone from the file"
        );
        assert_eq!(read_all(&wal, 0).await, expected(0, 4), "cut at byte {cut}");
        let appended = wal
            .append(batch(4, 3))
            .await
            .expect("append after recovery");
        assert_eq!(appended.first_offset, 4);
        assert_eq!(read_all(&wal, 0).await, expected(0, 7));
        wal.close().await.expect("close");
    }
}

#[tokio::test]
async fn an_empty_last_segment_is_fine() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let wal = Wal::open(config(dir.path(), 1 << 20)).expect("open");
        wal.append(batch(0, 4)).await.expect("append");
        wal.close().await.expect("close");
    }
    // A crash right after a roll leaves an empty segment named by the next offset.
    std::fs::File::create(dir.path().join("00000000000000000004.wal")).expect("create");
    let wal = Wal::open(config(dir.path(), 1 << 20)).expect("open");
    assert_eq!(wal.durable_end(), 4);
    wal.append(batch(4, 2)).await.expect("append");
    assert_eq!(read_all(&wal, 0).await, expected(0, 6));
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_frame_is_cut_in_an_earlier_segment_it_is_corruption() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let wal = Wal::open(config(dir.path(), 200)).expect("open");
        for first in (0..40).step_by(4) {
            wal.append(batch(first, 4)).await.expect("append");
        }
        wal.close().await.expect("close");
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);

    // Last frame of the last segment: a torn write, cut.
    let last = files[files.len() - 1].clone();
    let mut damaged = std::fs::read(&last).expect("read");
    let at = damaged.len() - 3;
    damaged[at] ^= 0x40;
    std::fs::write(&last, &damaged).expect("write");
    {
        let wal = Wal::open(config(dir.path(), 200)).expect("cut, not refused");
        assert_eq!(wal.durable_end(), 36);
        assert_eq!(read_all(&wal, 0).await, expected(0, 36));
        wal.close().await.expect("close");
    }

    // The last frame of an earlier segment: nothing valid follows it in its file, but
    // the segment was synced before the next began, so it was acknowledged.
    let middle = files[1].clone();
    let pristine_middle = std::fs::read(&middle).expect("read");
    let mut damaged = pristine_middle.clone();
    let next_segment_first =
        parse_segment_name(&files[2].file_name().expect("name").to_string_lossy())
            .expect("a segment name");
    let last_frame_at = damaged.len() - frame_len(next_segment_first - 4, 4);
    damaged[last_frame_at + FRAME_HEADER_BYTES + 2] ^= 0x01;
    std::fs::write(&middle, &damaged).expect("write");
    let (location, detail) = expect_corrupt(Wal::open(config(dir.path(), 200)));
    let name = middle.file_name().expect("name").to_string_lossy();
    assert!(location.contains(&*name), "{location}");
    assert!(
        location.ends_with(&format!("byte {last_frame_at}")),
        "{location}"
    );
    assert!(detail.contains("checksum"), "{detail}");
    assert_eq!(
        std::fs::read(&middle).expect("read"),
        damaged,
        "nothing cut"
    );

    // The first frame of an earlier segment: opening refuses too.
    let mut damaged = pristine_middle;
    damaged[FRAME_HEADER_BYTES + 2] ^= 0x01;
    std::fs::write(&middle, &damaged).expect("write");
    let (location, detail) = expect_corrupt(Wal::open(config(dir.path(), 200)));
    assert!(location.contains(&*name), "{location}");
    assert!(location.ends_with("byte 0"), "{location}");
    assert!(detail.contains("checksum"), "{detail}");
}

#[tokio::test]
async fn an_invalid_frame_followed_by_valid_ones_is_corruption() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let wal = Wal::open(config(dir.path(), 1 << 20)).expect("open");
        for first in (0..20).step_by(4) {
            wal.append(batch(first, 4)).await.expect("append");
        }
        wal.close().await.expect("close");
    }
    let segment = last_segment(dir.path());
    let pristine = std::fs::read(&segment).expect("read");
    let second_frame = frame_len(0, 4);
    // A payload byte, the count, and the magic of the second of five frames: each time
    // three valid frames follow, so the damage is not a torn tail.
    for at in [
        second_frame + FRAME_HEADER_BYTES + 5,
        second_frame + 20,
        second_frame,
    ] {
        let mut damaged = pristine.clone();
        damaged[at] ^= 0x10;
        std::fs::write(&segment, &damaged).expect("write");
        let (location, detail) = expect_corrupt(Wal::open(config(dir.path(), 1 << 20)));
        assert!(
            location.ends_with(&format!("byte {second_frame}")),
            "flip at {at}: {location}"
        );
        assert!(detail.contains("valid frame"), "flip at {at}: {detail}");
        assert_eq!(
            std::fs::read(&segment).expect("read"),
            damaged,
            "nothing is cut when refusing"
        );
    }
}

#[tokio::test]
async fn the_byte_cap_refuses_appends_until_release_frees_segments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(WalConfig {
        segment_bytes: 300,
        max_bytes: 1_000,
        ..WalConfig::new(dir.path().to_path_buf())
    })
    .expect("open");
    assert!(wal.status().writable);
    let mut next = 0;
    let full = loop {
        match wal.append(batch(next, 5)).await {
            Ok(_) => next += 5,
            Err(error) => break error,
        }
        assert!(next < 1_000, "the cap never applied");
    };
    assert!(matches!(full, LogError::Full { .. }), "{full}");
    assert!(wal.live_bytes() <= 1_000);
    let status = wal.status();
    assert!(!status.writable);
    assert!(status.detail.starts_with("wal "), "{}", status.detail);
    assert!(status.detail.contains(" MiB of "), "{}", status.detail);
    assert_eq!(status.end_offsets, vec![(0, next)]);

    let mut consumer = consumer_at(&wal, 0).await;
    let files_before = wal.segment_files().len();
    let bytes_before = wal.live_bytes();
    consumer.release(0, next).await.expect("release");
    assert!(
        wal.segment_files().len() < files_before,
        "fully consumed segments deleted"
    );
    assert_eq!(wal.segment_files().len(), 1, "the active segment stays");
    assert_eq!(wal.segment_files(), segment_files(dir.path()));
    assert!(wal.live_bytes() < bytes_before);
    assert!(wal.status().writable);
    wal.append(batch(next, 5)).await.expect("room again");
    // Reading from the released position still works.
    assert_eq!(read_all(&wal, next).await, expected(next, next + 5));
}

#[tokio::test]
async fn release_deletes_only_fully_consumed_segments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(config(dir.path(), 150)).expect("open");
    for first in (0..30).step_by(3) {
        wal.append(batch(first, 3)).await.expect("append");
    }
    let firsts = |wal: &Wal| -> Vec<u64> {
        wal.segment_files()
            .iter()
            .map(|path| {
                parse_segment_name(&path.file_name().expect("name").to_string_lossy())
                    .expect("a segment name")
            })
            .collect()
    };
    let before = firsts(&wal);
    assert!(before.len() >= 3, "{before:?}");
    let mut consumer = consumer_at(&wal, 0).await;
    consumer.release(0, 13).await.expect("release");
    let after = firsts(&wal);
    // Exactly the segments that end at or before 13 are gone.
    let kept: Vec<u64> = before
        .iter()
        .enumerate()
        .filter(|(index, _)| before.get(index + 1).is_none_or(|next| *next > 13))
        .map(|(_, first)| *first)
        .collect();
    assert_eq!(after, kept);
    assert!(after[0] <= 13, "segment starting at {} hides 13", after[0]);
    assert!(after.len() < before.len(), "something was freed");
    assert_eq!(read_all(&wal, 13).await, expected(13, 30));

    // Releasing everything keeps the active segment.
    consumer.release(0, 30).await.expect("release all");
    assert_eq!(wal.segment_files().len(), 1);
    assert_eq!(read_all(&wal, 30).await, Vec::<String>::new());
    assert!(
        wal.consumer(&[StartPosition {
            partition: 0,
            next_offset: 3,
        }])
        .await
        .is_err(),
        "a position before the oldest kept record is refused"
    );
}

#[tokio::test]
async fn a_consumer_resumes_mid_frame_and_returns_at_most_max_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(config(dir.path(), 200)).expect("open");
    for first in (0..40).step_by(5) {
        wal.append(batch(first, 5)).await.expect("append");
    }
    for from in [0, 7, 12, 19, 39, 40] {
        for max_records in [1, 3, 5, 7, 100] {
            assert_eq!(
                read_all_by(&wal, from, max_records).await,
                expected(from, 40),
                "from {from}, {max_records} at a time"
            );
        }
    }
    let mut consumer = consumer_at(&wal, 7).await;
    assert_eq!(consumer.lag(), vec![(0, 33)]);
    let fetched = consumer
        .poll(2, PATIENCE)
        .await
        .expect("poll")
        .expect("records");
    assert_eq!(fetched.first_offset, 7);
    assert_eq!(fetched.next_offset(), 9);
    assert_eq!(strings(&fetched.records), expected(7, 9));
    assert_eq!(consumer.lag(), vec![(0, 31)]);
    assert!(consumer.poll(0, PATIENCE).await.expect("poll").is_none());
}

#[tokio::test]
async fn a_poll_waits_for_the_next_durable_append() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Arc::new(Wal::open(config(dir.path(), 1 << 20)).expect("open"));
    wal.append(batch(0, 2)).await.expect("append");
    let mut consumer = consumer_at(&wal, 2).await;
    assert!(
        consumer
            .poll(10, Duration::ZERO)
            .await
            .expect("poll")
            .is_none(),
        "nothing new yet"
    );
    let waiting = tokio::spawn(async move { consumer.poll(10, PATIENCE).await });
    // On this single-threaded runtime, let the poll start waiting first.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    wal.append(batch(2, 3)).await.expect("append");
    let fetched = waiting
        .await
        .expect("task")
        .expect("poll")
        .expect("woken by the append");
    assert_eq!(fetched.first_offset, 2);
    assert_eq!(strings(&fetched.records), expected(2, 5));
}

#[tokio::test]
async fn a_position_past_the_end_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(config(dir.path(), 1 << 20)).expect("open");
    wal.append(batch(0, 2)).await.expect("append");
    assert!(wal
        .consumer(&[StartPosition {
            partition: 0,
            next_offset: 3,
        }])
        .await
        .is_err());
    // Partitions not listed start at 0.
    let mut consumer = wal.consumer(&[]).await.expect("consumer");
    let fetched = consumer
        .poll(10, PATIENCE)
        .await
        .expect("poll")
        .expect("records");
    assert_eq!(strings(&fetched.records), expected(0, 2));
}

/// One step of the crash model.
#[derive(Debug, Clone)]
enum Step {
    Append(u64),
    /// Drop without close, then leave a torn, unacknowledged write behind.
    Crash(Tear),
    Read {
        pick: u64,
        max_records: usize,
    },
    Release {
        pick: u64,
    },
}

#[derive(Debug, Clone)]
enum Tear {
    Nothing,
    Garbage(usize),
    /// A prefix (`pick` modulo its length + 1) of the next batch's frame.
    PartialFrame {
        count: u64,
        pick: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let tear = prop_oneof![
        Just(Tear::Nothing),
        (1usize..64).prop_map(Tear::Garbage),
        (1u64..10, any::<usize>()).prop_map(|(count, pick)| Tear::PartialFrame { count, pick }),
    ];
    prop_oneof![
        4 => (1u64..20).prop_map(Step::Append),
        1 => tear.prop_map(Step::Crash),
        1 => (any::<u64>(), 1usize..40).prop_map(|(pick, max_records)| Step::Read { pick, max_records }),
        1 => any::<u64>().prop_map(|pick| Step::Release { pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random appends, crashes (drop without close, then a torn tail), reads and
    /// releases against a Vec: every acknowledged record survives, in order, and reads
    /// from any kept position return exactly the model's records.
    #[test]
    fn acknowledged_records_survive_crashes(steps in proptest::collection::vec(step(), 1..30)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let segment_bytes = 700;
            let mut model: Vec<String> = Vec::new();
            // Oldest position still readable: the highest released so far.
            let mut released = 0u64;
            let mut wal = Wal::open(config(dir.path(), segment_bytes)).expect("open");
            for step in steps {
                match step {
                    Step::Append(count) => {
                        let first = model.len() as u64;
                        let appended = wal.append(batch(first, count)).await.expect("append");
                        prop_assert_eq!(appended.first_offset, first);
                        model.extend(expected(first, first + count));
                    }
                    Step::Crash(tear) => {
                        drop(wal);
                        let first = model.len() as u64;
                        let torn: Vec<u8> = match tear {
                            Tear::Nothing => Vec::new(),
                            Tear::Garbage(length) => vec![0xA5; length],
                            Tear::PartialFrame { count, pick } => {
                                let unacknowledged = batch(first, count);
                                let mut frame = Vec::new();
                                ais_model::frame::encode_frame(
                                    first,
                                    unacknowledged.len(),
                                    unacknowledged.as_framed_bytes(),
                                    &mut frame,
                                );
                                let keep = pick % (frame.len() + 1);
                                if keep == frame.len() {
                                    // Written whole though never answered: recovery
                                    // keeps it, which is allowed.
                                    model.extend(expected(first, first + count));
                                }
                                frame.truncate(keep);
                                frame
                            }
                        };
                        if !torn.is_empty() {
                            use std::io::Write;
                            let mut file = std::fs::OpenOptions::new()
                                .append(true)
                                .open(last_segment(dir.path()))
                                .expect("open segment");
                            file.write_all(&torn).expect("tear");
                        }
                        wal = Wal::open(config(dir.path(), segment_bytes)).expect("reopen");
                    }
                    Step::Read { pick, max_records } => {
                        let span = model.len() as u64 - released + 1;
                        let from = released + pick % span;
                        let read = read_all_by(&wal, from, max_records).await;
                        prop_assert_eq!(&read[..], &model[from as usize..]);
                    }
                    Step::Release { pick } => {
                        let span = model.len() as u64 - released + 1;
                        let position = released + pick % span;
                        let mut consumer = consumer_at(&wal, released).await;
                        consumer.release(0, position).await.expect("release");
                        released = position;
                    }
                }
                prop_assert_eq!(wal.durable_end(), model.len() as u64);
            }
            let read = read_all(&wal, released).await;
            prop_assert_eq!(&read[..], &model[released as usize..]);
            Ok(())
        })?;
    }
}
