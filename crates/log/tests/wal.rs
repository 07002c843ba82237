//! The embedded WAL on real files: round trips across segments, group commit, torn
//! tails cut at every byte, corruption refused, the byte cap, release, resume.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ais_log::wal::{Wal, WalConfig, FRAME_HEADER_BYTES};
use ais_log::{Log, LogError, RecordBatch, StartPosition};
use proptest::prelude::*;

fn config(dir: &Path, segment_bytes: u64) -> WalConfig {
    WalConfig {
        segment_bytes,
        ..WalConfig::new(dir.to_path_buf())
    }
}

fn batch(first: u64, count: u64) -> RecordBatch {
    let mut batch = RecordBatch::default();
    for value in first..first + count {
        batch.push(format!("record-{value}").as_bytes());
    }
    batch
}

/// Reads every durable record from `from` on.
async fn read_all(wal: &Wal, from: u64) -> Vec<String> {
    let mut consumer = wal
        .consumer(&[StartPosition {
            partition: 0,
            next_offset: from,
        }])
        .await
        .expect("consumer");
    let mut out = Vec::new();
    while let Some(fetched) = consumer
        .poll(1000, Duration::from_millis(20))
        .await
        .expect("poll")
    {
        assert_eq!(
            fetched.first_offset,
            from + out.len() as u64,
            "contiguous offsets"
        );
        out.extend(
            fetched
                .records
                .iter()
                .map(|r| String::from_utf8_lossy(r).into_owned()),
        );
    }
    out
}

fn expected(from: u64, to: u64) -> Vec<String> {
    (from..to).map(|value| format!("record-{value}")).collect()
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    files.sort();
    files.pop().expect("a segment")
}

#[tokio::test]
async fn records_round_trip_across_segment_rolls_and_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(config(dir.path(), 512)).expect("open");
    let mut next = 0;
    for size in [1, 7, 30, 2, 50, 1] {
        let appended = wal.append(batch(next, size)).await.expect("append");
        assert_eq!(
            (appended.first_offset, u64::from(appended.count)),
            (next, size)
        );
        next += size;
    }
    assert!(wal.segment_files().len() > 3, "small segments roll");
    assert_eq!(read_all(&wal, 0).await, expected(0, next));
    assert_eq!(
        read_all(&wal, 40).await,
        expected(40, next),
        "resume mid-frame"
    );
    wal.close().await.expect("close");
    assert!(matches!(
        wal.append(batch(0, 1)).await,
        Err(LogError::Closed)
    ));

    let reopened = Wal::open(config(dir.path(), 512)).expect("reopen");
    assert_eq!(reopened.durable_end(), next);
    let appended = reopened
        .append(batch(next, 3))
        .await
        .expect("append after reopen");
    assert_eq!(appended.first_offset, next);
    assert_eq!(read_all(&reopened, 0).await, expected(0, next + 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_get_distinct_offsets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Arc::new(Wal::open(config(dir.path(), 1 << 20)).expect("open"));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..200u64 {
        let wal = Arc::clone(&wal);
        tasks.spawn(async move { wal.append(batch(task * 1000, 5)).await });
    }
    let mut ranges = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let appended = result.expect("task").expect("append");
        ranges.push((appended.first_offset, appended.count));
    }
    ranges.sort_unstable();
    for (index, (first, count)) in ranges.iter().enumerate() {
        assert_eq!(*first, index as u64 * 5);
        assert_eq!(*count, 5);
    }
    assert!(
        wal.fsync_count() < 200,
        "200 concurrent appends took {} fsyncs: no group commit",
        wal.fsync_count()
    );
    assert_eq!(read_all(&wal, 0).await.len(), 1000);
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
    let last_frame_len = FRAME_HEADER_BYTES + 3 * (4 + "record-4".len());
    let last_frame_start = original.len() - last_frame_len;
    for cut in last_frame_start..original.len() {
        std::fs::write(&segment, &original[..cut]).expect("truncate");
        let wal = Wal::open(config(dir.path(), 1 << 20)).expect("a torn tail is recovered");
        assert_eq!(wal.durable_end(), 4, "cut at byte {cut}");
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
async fn a_flipped_byte_in_the_last_frame_is_cut_elsewhere_it_is_corruption() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let wal = Wal::open(config(dir.path(), 200)).expect("open");
        for first in (0..40).step_by(4) {
            wal.append(batch(first, 4)).await.expect("append");
        }
        wal.close().await.expect("close");
    }
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 3);

    // Last frame of the last segment: a torn write, cut.
    let last = files[files.len() - 1].clone();
    let pristine_last = std::fs::read(&last).expect("read");
    let mut damaged = pristine_last.clone();
    let at = damaged.len() - 3;
    damaged[at] ^= 0x40;
    std::fs::write(&last, &damaged).expect("write");
    {
        let wal = Wal::open(config(dir.path(), 200)).expect("cut, not refused");
        assert_eq!(wal.durable_end(), 36);
        wal.close().await.expect("close");
    }

    // Inside an earlier segment: acknowledged data is damaged, opening refuses.
    let middle = files[1].clone();
    let mut damaged = std::fs::read(&middle).expect("read");
    damaged[FRAME_HEADER_BYTES + 2] ^= 0x01;
    std::fs::write(&middle, &damaged).expect("write");
    match Wal::open(config(dir.path(), 200)) {
        Err(LogError::Corrupt { location, detail }) => {
            assert!(
                location.contains(&*middle.file_name().expect("name").to_string_lossy()),
                "{location}"
            );
            assert!(detail.contains("checksum"), "{detail}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("expected corruption, got an open log"),
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
    let mut next = 0;
    let full = loop {
        match wal.append(batch(next, 5)).await {
            Ok(_) => next += 5,
            Err(error) => break error,
        }
        assert!(next < 1_000, "the cap never applied");
    };
    assert!(matches!(full, LogError::Full { .. }), "{full}");
    assert!(!wal.status().writable);
    assert_eq!(wal.status().end_offsets, vec![(0, next)]);

    let mut consumer = wal
        .consumer(&[StartPosition {
            partition: 0,
            next_offset: 0,
        }])
        .await
        .expect("consumer");
    let files_before = wal.segment_files().len();
    consumer.release(0, next).await.expect("release");
    assert!(
        wal.segment_files().len() < files_before,
        "fully consumed segments deleted"
    );
    assert_eq!(wal.segment_files().len(), 1, "the active segment stays");
    assert!(wal.status().writable);
    wal.append(batch(next, 5)).await.expect("room again");
    // Reading from the released position still works.
    assert_eq!(read_all(&wal, next).await, expected(next, next + 5));
}

#[tokio::test]
async fn release_keeps_segments_with_unconsumed_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(config(dir.path(), 150)).expect("open");
    for first in (0..30).step_by(3) {
        wal.append(batch(first, 3)).await.expect("append");
    }
    let mut consumer = wal
        .consumer(&[StartPosition {
            partition: 0,
            next_offset: 0,
        }])
        .await
        .expect("consumer");
    consumer.release(0, 13).await.expect("release");
    let first_kept = wal.segment_files()[0].clone();
    let stem: u64 = first_kept
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.parse().ok())
        .expect("offset name");
    assert!(
        stem <= 13,
        "segment starting at {stem} would hide offset 13"
    );
    assert_eq!(read_all(&wal, 13).await, expected(13, 30));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random appends, crashes (drop without close, optionally a torn tail) and reads
    /// against a model: every acknowledged record survives, in order.
    #[test]
    fn acknowledged_records_survive_crashes(
        ops in proptest::collection::vec((1u64..20, any::<bool>(), 0usize..64), 1..25),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut model: Vec<String> = Vec::new();
            let mut wal = Wal::open(config(dir.path(), 700)).expect("open");
            for (size, crash, tear) in ops {
                let first = model.len() as u64;
                wal.append(batch(first, size)).await.expect("append");
                model.extend(expected(first, first + size));
                if crash {
                    drop(wal);
                    // Garbage after the acknowledged data: a torn, unacknowledged write.
                    if tear > 0 {
                        use std::io::Write;
                        let mut file = std::fs::OpenOptions::new().append(true).open(last_segment(dir.path())).expect("open");
                        file.write_all(&vec![0xA5; tear]).expect("tear");
                    }
                    wal = Wal::open(config(dir.path(), 700)).expect("reopen");
                }
                prop_assert_eq!(wal.durable_end(), model.len() as u64);
            }
            prop_assert_eq!(read_all(&wal, 0).await, model);
            Ok(())
        })?;
    }
}
