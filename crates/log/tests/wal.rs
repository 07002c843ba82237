//! The embedded WAL through the public trait objects, as the binary and the stream use
//! it. The engine's own tests (recovery, group commit, the cap, the crash model) live
//! beside it in `src/wal/tests.rs`, and those on a simulated disk (power loss, injected
//! faults) in `src/wal/fault_tests.rs`.

use std::sync::Arc;
use std::time::Duration;

use ais_log::wal::{Wal, WalConfig};
use ais_log::{Log, LogError, RecordBatch, StartPosition};

#[tokio::test]
async fn the_wal_works_as_a_shared_dyn_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log: Arc<dyn Log> =
        Arc::new(Wal::open(WalConfig::new(dir.path().join("wal"))).expect("open"));
    assert_eq!(log.partitions(), 1);

    let mut batch = RecordBatch::default();
    for record in ["a", "bb", "ccc"] {
        batch.push(record.as_bytes());
    }
    let appended = log.append(batch).await.expect("append");
    assert_eq!(
        (appended.partition, appended.first_offset, appended.count),
        (0, 0, 3)
    );
    let status = log.status();
    assert!(status.writable, "{}", status.detail);
    assert_eq!(status.end_offsets, vec![(0, 3)]);

    let mut consumer = log
        .consumer(&[StartPosition {
            partition: 0,
            next_offset: 1,
        }])
        .await
        .expect("consumer");
    let fetched = consumer
        .poll(10, Duration::from_secs(60))
        .await
        .expect("poll")
        .expect("records");
    assert_eq!(fetched.first_offset, 1);
    assert_eq!(fetched.records, vec![&b"bb"[..], &b"ccc"[..]]);
    assert_eq!(consumer.lag(), vec![(0, 0)]);

    log.close().await.expect("close");
    let mut late = RecordBatch::default();
    late.push(b"late");
    assert!(matches!(log.append(late).await, Err(LogError::Closed)));
}
