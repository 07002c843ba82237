//! The embedded write-ahead log of a single node: one partition, segment files, group
//! commit with fsync.
//!
//! ## Files
//! `DIR/<first offset, 20 digits>.wal`, rolled once a segment would pass
//! `segment_bytes`. A segment is a sequence of frames, one per appended [`RecordBatch`]:
//!
//! ```text
//! magic u32 "AISW" | payload length u32 | crc32c u32 | first offset u64 | record count u32 | payload
//! ```
//! all little-endian (24 header bytes, [`FRAME_HEADER_BYTES`]); the CRC covers first
//! offset, count and payload (a wrong length shows up as a wrong payload); the payload
//! is the batch's `[u32 length][record]*` bytes, and a frame whose framing does not add
//! up to `count` records is invalid. Offsets are per record and contiguous across
//! frames and segments; a segment's name is the offset of its first record. The codec
//! ([`parse_frame`], which never panics on any input) lives in the I/O-free
//! `ais_model::frame` so it can be fuzzed alone.
//!
//! ## Writing (`wal/writer.rs`)
//! `append` hands its batch to one writer thread through a bounded queue
//! ([`APPEND_QUEUE_CAPACITY`]; full ⇒ [`LogError::Full`] at once, so the edge answers
//! 503 instead of queueing). The writer takes a batch, then whatever else is already
//! waiting (up to [`GROUP_MAX_BYTES`]), writes them with one `write`, calls `fdatasync`
//! once, and only then answers every waiter and publishes the new durable end:
//! concurrent requests share one fsync, and an answer means durable. A new segment is
//! created only after the previous one is synced, and the directory is synced after
//! each creation; the directory's own entry in its parent is synced at open (a
//! segment in a directory whose entry is lost is lost with it).
//!
//! A group that fills the active segment answers its appends in the old segment as
//! soon as they are synced, before the next segment is made. If making it fails, those
//! stay answered durable and the rest are refused unwritten (503), so what was
//! answered durable is exactly what is on disk, and a client resending the refused
//! ones counts nothing twice. After any failed write or sync the log refuses appends
//! until a restart recovers it.
//!
//! ## Recovery (`wal/recovery.rs`)
//! At open every segment is walked and every frame's CRC and offset checked. A crash
//! can only leave the bytes after the last fsync damaged, and those are at the end of
//! the last segment: from the first invalid frame there on, the tail is cut (truncated
//! and synced) when nothing valid follows it and it is no longer than one group write
//! could have left unsynced. An invalid frame in an earlier segment, one followed by a
//! valid frame, or a damaged tail longer than one group write is damage to
//! acknowledged data: opening fails with [`LogError::Corrupt`] naming file and byte,
//! and nothing is dropped silently.
//!
//! ## Storage (`wal/storage.rs`)
//! Every file operation goes through `Storage`: the real file system, or in tests a
//! simulated disk that keeps per file the bytes written and the bytes synced, and per
//! directory the entries made and the entries synced, and loses at a power loss
//! whatever was not synced (`kill -9` keeps the page cache, so only such a disk can
//! tell a missing sync). `wal/fault_tests.rs` cuts the power at random points under
//! concurrent appends and checks that every acknowledged append is there exactly once
//! and that recovery opens cleanly; it fails when the `fdatasync`, the directory sync
//! after a segment is made, or the sync of the directory's own entry is removed.
//!
//! ## Reading and freeing (`wal/reader.rs`)
//! A consumer reads the files (the page cache, in practice) in chunks of
//! [`READ_CHUNK_BYTES`], never past the durable end the writer publishes after each
//! fsync, checking each frame's CRC; the records it returns are slices of the chunk,
//! not copies. `release` deletes segments whose records are all below the store's
//! position (never the segment being written); the byte cap counts live segments, so a
//! stalled stream turns into 503s, not a full disk.

mod reader;
mod recovery;
mod segment;
mod storage;
mod writer;

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

pub use ais_model::frame::{
    parse_frame, FrameError, FrameHeader, FRAME_HEADER_BYTES, FRAME_MAGIC, MAX_FRAME_PAYLOAD,
};

use crate::{Appended, Log, LogConsumer, LogError, LogStatus, RecordBatch, StartPosition};
use segment::{io_error, Segment};
use storage::Storage;
use writer::AppendJob;

/// Most bytes one group commit takes from the queue before its write and fsync (one
/// more batch may pass it). Bounds both the latency a waiter pays for others' batches
/// and how much a crash can leave torn.
pub const GROUP_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Appends waiting for the writer. Each holds one request's encoded batch (up to a few
/// MiB), so this bounds queued memory; a full queue means the disk is not keeping up,
/// and callers get 503 rather than a longer wait.
pub const APPEND_QUEUE_CAPACITY: usize = 256;
/// Bytes a consumer reads from a segment at once; the records it returns share the
/// chunk. Large enough that a poll is a handful of reads, small enough to keep a slow
/// consumer's memory modest.
pub const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Longest tail one unsynced group write can leave: the byte bound (which counts frame
/// headers) plus the one frame that may pass it.
const MAX_UNSYNCED_BYTES: u64 = (GROUP_MAX_BYTES + FRAME_HEADER_BYTES + MAX_FRAME_PAYLOAD) as u64;
/// What `Retry-After` a full log suggests: the stream frees segments about once a
/// second, and a queue of group commits drains faster than that.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The WAL has one partition.
const PARTITION: u32 = 0;

/// Configuration of [`Wal::open`].
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Directory of the segment files; created when missing.
    pub dir: PathBuf,
    /// A segment is rolled before it would pass this size (default 64 MiB). A single
    /// batch larger than this gets a segment of its own.
    pub segment_bytes: u64,
    /// Live segments may hold at most this many bytes (default 1 GiB); an append that
    /// would pass it fails with [`LogError::Full`] until `release` frees segments.
    pub max_bytes: u64,
}

impl WalConfig {
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
    pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024 * 1024;

    /// Defaults for `dir`: 64 MiB segments, 1 GiB cap.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// State shared by the handle, the writer thread and consumers.
struct Shared {
    dir: PathBuf,
    /// The file system the segments live on.
    storage: Storage,
    max_bytes: u64,
    /// Offset after the last durable record; set by the writer after each fsync.
    durable_end: AtomicU64,
    /// Bytes in live segments.
    live_bytes: AtomicU64,
    /// Live segments in offset order; the last is the one being written. Locked per
    /// group commit, roll, release and consumer seek, never per record.
    segments: Mutex<Vec<Segment>>,
    /// Publishes `durable_end` to waiting consumers.
    durable: watch::Sender<u64>,
    /// Set when a write or fsync failed: the file's tail is unknown, so nothing more is
    /// appended until a restart recovers it.
    failed: AtomicBool,
    /// Set by `close`.
    closed: AtomicBool,
    /// Group commits done (fsync rounds), for tests and metrics.
    fsyncs: AtomicU64,
    /// Appends in the queue, not yet taken by the writer.
    queued: AtomicU64,
    /// The last append was refused at the byte cap and nothing was freed or accepted
    /// since.
    at_cap: AtomicBool,
}

impl Shared {
    fn lock_segments(&self) -> Result<MutexGuard<'_, Vec<Segment>>, LogError> {
        self.segments
            .lock()
            .map_err(|_| LogError::Unavailable("wal segment list lock poisoned".to_string()))
    }

    fn durable_end(&self) -> u64 {
        self.durable_end.load(Ordering::Acquire)
    }
}

/// The embedded write-ahead log. Share it as `Arc<Wal>` (or `Arc<dyn Log>`).
pub struct Wal {
    shared: Arc<Shared>,
    /// The writer's queue; `None` once closed. Read-locked per append (never per
    /// record), write-locked once by `close`.
    sender: RwLock<Option<SyncSender<AppendJob>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Wal {
    /// Opens (or creates) the log in `config.dir`, recovering its tail, and starts the
    /// writer thread. Fails with [`LogError::Corrupt`] when acknowledged data is
    /// damaged, naming file and byte position.
    pub fn open(config: WalConfig) -> Result<Wal, LogError> {
        Self::open_on(config, Storage::Disk, None)
    }

    /// [`Wal::open`] on `storage`, whose writer, with a `hold`, takes no append before
    /// the hold is released (sent to or dropped): a test queues appends first and so
    /// knows what one group commit holds.
    fn open_on(
        config: WalConfig,
        storage: Storage,
        hold: Option<std::sync::mpsc::Receiver<()>>,
    ) -> Result<Wal, LogError> {
        storage.create_dir_durably(&config.dir)?;
        let recovered = recovery::recover(&storage, &config.dir)?;
        let live_bytes: u64 = recovered.segments.iter().map(|segment| segment.bytes).sum();
        let end_offset = recovered.end_offset;
        let (durable, _) = watch::channel(end_offset);
        let shared = Arc::new(Shared {
            dir: config.dir.clone(),
            storage,
            max_bytes: config.max_bytes,
            durable_end: AtomicU64::new(end_offset),
            live_bytes: AtomicU64::new(live_bytes),
            segments: Mutex::new(recovered.segments),
            durable,
            failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            fsyncs: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            at_cap: AtomicBool::new(false),
        });
        metrics::gauge!("ais_wal_bytes").set(live_bytes as f64);
        tracing::info!(
            dir = %config.dir.display(),
            end_offset,
            live_bytes,
            "write-ahead log opened"
        );

        let (sender, receiver) = sync_channel(APPEND_QUEUE_CAPACITY);
        let writer = writer::Writer::new(Arc::clone(&shared), config.segment_bytes.max(1))?;
        let thread = std::thread::Builder::new()
            .name("ais-wal-writer".to_string())
            .spawn(move || {
                if let Some(hold) = hold {
                    let _ = hold.recv();
                }
                writer.run(&receiver)
            })
            .map_err(io_error(&config.dir))?;
        Ok(Wal {
            shared,
            sender: RwLock::new(Some(sender)),
            writer: Mutex::new(Some(thread)),
        })
    }

    /// Offset after the last durable record.
    pub fn durable_end(&self) -> u64 {
        self.shared.durable_end()
    }

    /// Appends waiting in the queue for the writer.
    pub fn queued_appends(&self) -> u64 {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Group commits (fsync rounds) done since open.
    pub fn fsync_count(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    /// Bytes of the live segments (what the cap counts).
    pub fn live_bytes(&self) -> u64 {
        self.shared.live_bytes.load(Ordering::Acquire)
    }

    /// Live segment files, oldest first.
    pub fn segment_files(&self) -> Vec<PathBuf> {
        self.shared
            .lock_segments()
            .map(|segments| {
                segments
                    .iter()
                    .map(|segment| segment.path.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn full(detail: String) -> LogError {
        metrics::counter!("ais_wal_full_total").increment(1);
        LogError::Full {
            detail,
            retry_after: FULL_RETRY_AFTER,
        }
    }
}

#[async_trait]
impl Log for Wal {
    async fn append(&self, batch: RecordBatch) -> Result<Appended, LogError> {
        if batch.byte_len() > MAX_FRAME_PAYLOAD {
            return Err(LogError::Unavailable(format!(
                "a batch of {} bytes is over the write-ahead log's frame limit of {MAX_FRAME_PAYLOAD}; send smaller requests",
                batch.byte_len()
            )));
        }
        if batch.is_empty() {
            // Nothing to make durable; an empty frame would only cost an fsync.
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(LogError::Closed);
            }
            return Ok(Appended {
                partition: PARTITION,
                first_offset: self.shared.durable_end(),
                count: 0,
            });
        }
        let (reply, answer) = oneshot::channel();
        {
            let sender = self
                .sender
                .read()
                .map_err(|_| LogError::Unavailable("wal queue lock poisoned".to_string()))?;
            let Some(sender) = sender.as_ref() else {
                return Err(LogError::Closed);
            };
            // Counted before it is queued, so the writer never takes one uncounted.
            self.shared.queued.fetch_add(1, Ordering::AcqRel);
            if let Err(error) = writer::enqueue(sender, AppendJob { batch, reply }) {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(error);
            }
        }
        // A dropped reply means the writer is gone before answering: not durable.
        answer.await.map_err(|_| LogError::Closed)?
    }

    fn partitions(&self) -> u32 {
        1
    }

    fn status(&self) -> LogStatus {
        let used = self.shared.live_bytes.load(Ordering::Acquire);
        let max = self.shared.max_bytes;
        let failed = self.shared.failed.load(Ordering::Acquire);
        let closed = self.shared.closed.load(Ordering::Acquire);
        let at_cap = self.shared.at_cap.load(Ordering::Acquire) || used >= max;
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let usage = format!("wal {:.1} MiB of {:.0} MiB", mib(used), mib(max));
        let detail = if failed {
            format!("{usage}; a write failed, restart to recover the log")
        } else if closed {
            format!("{usage}; closed")
        } else if at_cap {
            format!("{usage}; full until the stream catches up")
        } else {
            usage
        };
        LogStatus {
            writable: !failed && !closed && !at_cap,
            detail,
            end_offsets: vec![(PARTITION, self.durable_end())],
            counts: Default::default(),
        }
    }

    async fn consumer(
        &self,
        positions: &[StartPosition],
    ) -> Result<Box<dyn LogConsumer>, LogError> {
        let next_offset = positions
            .iter()
            .find(|position| position.partition == PARTITION)
            .map_or(0, |position| position.next_offset);
        let consumer = reader::WalConsumer::new(Arc::clone(&self.shared), next_offset)?;
        Ok(Box::new(consumer))
    }

    async fn close(&self) -> Result<(), LogError> {
        self.shared.closed.store(true, Ordering::Release);
        let sender = self
            .sender
            .write()
            .map_err(|_| LogError::Unavailable("wal queue lock poisoned".to_string()))?
            .take();
        // Dropping the sender lets the writer commit what is queued, then exit.
        drop(sender);
        let writer = self
            .writer
            .lock()
            .map_err(|_| LogError::Unavailable("wal writer handle lock poisoned".to_string()))?
            .take();
        if let Some(writer) = writer {
            tokio::task::spawn_blocking(move || writer.join())
                .await
                .map_err(|error| LogError::Unavailable(format!("joining the wal writer: {error}")))?
                .map_err(|_| LogError::Unavailable("the wal writer panicked".to_string()))?;
        }
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(LogError::Unavailable(
                "a wal write failed; restart to recover the log".to_string(),
            ));
        }
        Ok(())
    }
}
