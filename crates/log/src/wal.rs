//! The embedded write-ahead log of a single node: one partition, segment files, group
//! commit with fsync.
//!
//! ## Files
//! `DIR/<first offset, 20 digits>.wal`, rolled at `segment_bytes`. A segment is a
//! sequence of frames, one per appended [`RecordBatch`]:
//!
//! ```text
//! magic u32 "AISW" | payload length u32 | crc32c u32 | first offset u64 | record count u32 | payload
//! ```
//! all little-endian; the CRC covers first offset, count and payload; the payload is
//! the batch's `[u32 length][record]*` bytes. Offsets are per record and contiguous
//! across frames and segments.
//!
//! ## Writing
//! `append` hands its batch to one writer thread through a bounded queue (full ⇒
//! [`LogError::Full`] at once, so the edge answers 503 instead of queueing). The writer
//! takes a batch, then whatever else is already waiting (up to [`GROUP_MAX_BYTES`]),
//! writes them with one `write`, calls `fdatasync` once, and only then answers every
//! waiter: concurrent requests share one fsync, and an answer means durable.
//!
//! ## Recovery
//! At open every segment is walked. In the last segment the frames after the last
//! fsync may be torn or missing (pages reach the disk in any order), so everything
//! from the first invalid frame on is cut, provided it is no longer than one group
//! write could have left unsynced; more than that, or an invalid frame in an earlier
//! segment, is corruption of acknowledged data and opening fails naming file and byte.
//!
//! ## Reading and freeing
//! A consumer reads frames from the files (the page cache, in practice) up to the
//! durable end the writer publishes after each fsync, checking each frame's CRC.
//! `release` deletes segments whose records are all below the store's position; the
//! byte cap counts live segments, so a stalled stream turns into 503s, not a full disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{oneshot, watch};

pub use ais_model::frame::{
    parse_frame, FrameError, FrameHeader, FRAME_HEADER_BYTES, FRAME_MAGIC, MAX_FRAME_PAYLOAD,
};

use crate::{
    Appended, FetchedBatch, Log, LogConsumer, LogError, LogStatus, RecordBatch, RecordIter,
    StartPosition,
};

/// Most bytes one group commit writes before its fsync. Bounds both the latency a
/// waiter pays for others' batches and what a crash can leave torn.
pub const GROUP_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Appends waiting for the writer. Each holds one request's encoded batch (up to a few
/// MiB), so this bounds queued memory; a full queue means the disk is not keeping up,
/// and callers get 503 rather than a longer wait.
pub const APPEND_QUEUE_CAPACITY: usize = 256;
/// What `Retry-After` a full log suggests.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The WAL has one partition.
const PARTITION: u32 = 0;

/// Configuration of [`Wal::open`].
#[derive(Debug, Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    /// A segment is rolled once it reaches this size (64 MiB).
    pub segment_bytes: u64,
    /// Live segments may hold at most this many bytes (1 GiB); beyond, appends fail
    /// with [`LogError::Full`].
    pub max_bytes: u64,
}

impl WalConfig {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            segment_bytes: 64 * 1024 * 1024,
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
struct Segment {
    first_offset: u64,
    path: PathBuf,
    bytes: u64,
}

/// State shared by the handle, the writer thread and consumers.
struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    /// Offset after the last durable record.
    durable_end: AtomicU64,
    /// Bytes in live segments.
    live_bytes: AtomicU64,
    /// Live segments in offset order; the last is the one being written.
    segments: Mutex<Vec<Segment>>,
    /// Publishes `durable_end` to waiting consumers.
    durable: watch::Sender<u64>,
    /// Set when a write or fsync failed: the file's tail is unknown, so nothing more is
    /// appended until a restart recovers it.
    failed: AtomicBool,
    /// Group commits done (fsync rounds), for tests and metrics.
    fsyncs: AtomicU64,
    /// The last append was refused at the byte cap and nothing was freed since.
    at_cap: AtomicBool,
}

impl Shared {
    fn lock_segments(&self) -> Result<std::sync::MutexGuard<'_, Vec<Segment>>, LogError> {
        self.segments
            .lock()
            .map_err(|_| LogError::Unavailable("segment list lock poisoned".to_string()))
    }
}

struct AppendJob {
    batch: RecordBatch,
    reply: oneshot::Sender<Result<Appended, LogError>>,
}

/// The embedded write-ahead log.
pub struct Wal {
    shared: Arc<Shared>,
    sender: Mutex<Option<SyncSender<AppendJob>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn segment_path(dir: &Path, first_offset: u64) -> PathBuf {
    dir.join(format!("{first_offset:020}.wal"))
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(dir))
}

/// Walks one segment: the end offset, the byte length of its valid frames, and the
/// first invalid frame if any (its byte position and what is wrong).
struct Walk {
    end_offset: u64,
    valid_bytes: u64,
    invalid: Option<(u64, String)>,
}

fn walk_segment(segment: &Segment) -> Result<Walk, LogError> {
    let mut data = Vec::new();
    File::open(&segment.path)
        .and_then(|mut file| file.read_to_end(&mut data))
        .map_err(io_error(&segment.path))?;
    let mut position = 0usize;
    let mut next_offset = segment.first_offset;
    loop {
        let rest = &data[position..];
        if rest.is_empty() {
            return Ok(Walk {
                end_offset: next_offset,
                valid_bytes: position as u64,
                invalid: None,
            });
        }
        let problem = match parse_frame(rest) {
            Ok(Some((header, length))) if header.first_offset == next_offset => {
                position += length;
                next_offset += u64::from(header.count);
                continue;
            }
            Ok(Some((header, _))) => format!(
                "frame starts at offset {} where {next_offset} was expected",
                header.first_offset
            ),
            Ok(None) => "frame is cut short".to_string(),
            Err(error) => error.to_string(),
        };
        return Ok(Walk {
            end_offset: next_offset,
            valid_bytes: position as u64,
            invalid: Some((position as u64, problem)),
        });
    }
}

impl Wal {
    /// Opens (or creates) the log in `config.dir`, recovering its tail, and starts the
    /// writer thread.
    pub fn open(config: WalConfig) -> Result<Wal, LogError> {
        std::fs::create_dir_all(&config.dir).map_err(io_error(&config.dir))?;
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(&config.dir).map_err(io_error(&config.dir))? {
            let entry = entry.map_err(io_error(&config.dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|name| name.strip_suffix(".wal")) else {
                continue;
            };
            let Ok(first_offset) = stem.parse::<u64>() else {
                continue;
            };
            let bytes = entry.metadata().map_err(io_error(&entry.path()))?.len();
            segments.push(Segment {
                first_offset,
                path: entry.path(),
                bytes,
            });
        }
        segments.sort_by_key(|segment| segment.first_offset);

        let mut end_offset = segments.first().map_or(0, |segment| segment.first_offset);
        let count = segments.len();
        for (index, segment) in segments.iter_mut().enumerate() {
            if segment.first_offset != end_offset {
                return Err(LogError::Corrupt {
                    location: segment.path.display().to_string(),
                    detail: format!(
                        "segment starts at offset {} but the previous one ends at {end_offset}",
                        segment.first_offset
                    ),
                });
            }
            let walk = walk_segment(segment)?;
            if let Some((position, problem)) = walk.invalid {
                let is_last = index + 1 == count;
                let cut = segment.bytes - position;
                if !is_last
                    || cut > (GROUP_MAX_BYTES + MAX_FRAME_PAYLOAD + FRAME_HEADER_BYTES) as u64
                {
                    return Err(LogError::Corrupt {
                        location: format!("{} byte {position}", segment.path.display()),
                        detail: problem,
                    });
                }
                tracing::warn!(
                    file = %segment.path.display(),
                    position,
                    cut_bytes = cut,
                    %problem,
                    "cutting the torn tail of the write-ahead log (unacknowledged writes)"
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(&segment.path)
                    .map_err(io_error(&segment.path))?;
                file.set_len(walk.valid_bytes)
                    .map_err(io_error(&segment.path))?;
                file.sync_all().map_err(io_error(&segment.path))?;
                segment.bytes = walk.valid_bytes;
            }
            end_offset = walk.end_offset;
        }
        if segments.is_empty() {
            let path = segment_path(&config.dir, 0);
            File::create(&path).map_err(io_error(&path))?;
            sync_dir(&config.dir)?;
            segments.push(Segment {
                first_offset: 0,
                path,
                bytes: 0,
            });
        }
        let live_bytes = segments.iter().map(|segment| segment.bytes).sum();
        let (durable, _) = watch::channel(end_offset);
        let shared = Arc::new(Shared {
            dir: config.dir.clone(),
            max_bytes: config.max_bytes,
            durable_end: AtomicU64::new(end_offset),
            live_bytes: AtomicU64::new(live_bytes),
            segments: Mutex::new(segments),
            durable,
            failed: AtomicBool::new(false),
            fsyncs: AtomicU64::new(0),
            at_cap: AtomicBool::new(false),
        });
        metrics::gauge!("ais_wal_bytes").set(live_bytes as f64);

        let (sender, receiver) = sync_channel(APPEND_QUEUE_CAPACITY);
        let writer_shared = Arc::clone(&shared);
        let segment_bytes = config.segment_bytes.max(1);
        let writer = std::thread::Builder::new()
            .name("ais-wal-writer".to_string())
            .spawn(move || run_writer(&writer_shared, &receiver, segment_bytes))
            .map_err(io_error(&config.dir))?;
        Ok(Wal {
            shared,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Offset after the last durable record.
    pub fn durable_end(&self) -> u64 {
        self.shared.durable_end.load(Ordering::Acquire)
    }

    /// Group commits (fsync rounds) done since open.
    pub fn fsync_count(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
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
}

/// The writer thread: group commits until every sender is gone.
fn run_writer(shared: &Shared, receiver: &Receiver<AppendJob>, segment_bytes: u64) {
    let mut active = match open_active(shared) {
        Ok(active) => Some(active),
        Err(error) => {
            tracing::error!(%error, "cannot open the active WAL segment");
            shared.failed.store(true, Ordering::Release);
            None
        }
    };
    let mut buffer: Vec<u8> = Vec::with_capacity(1024 * 1024);
    while let Ok(first) = receiver.recv() {
        let mut jobs = vec![first];
        let mut queued_bytes = jobs[0].batch.byte_len();
        while queued_bytes < GROUP_MAX_BYTES {
            match receiver.try_recv() {
                Ok(job) => {
                    queued_bytes += job.batch.byte_len();
                    jobs.push(job);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        match active.as_mut() {
            Some(file) if !shared.failed.load(Ordering::Acquire) => {
                group_commit(shared, file, &mut buffer, jobs, segment_bytes);
            }
            _ => {
                for job in jobs {
                    let _ = job.reply.send(Err(LogError::Unavailable(
                        "the write-ahead log failed earlier; restart to recover it".to_string(),
                    )));
                }
            }
        }
    }
}

struct ActiveSegment {
    file: File,
    path: PathBuf,
    bytes: u64,
}

fn open_active(shared: &Shared) -> Result<ActiveSegment, LogError> {
    let segments = shared.lock_segments()?;
    let last = segments
        .last()
        .ok_or_else(|| LogError::Unavailable("no active segment".to_string()))?;
    let mut file = OpenOptions::new()
        .write(true)
        .open(&last.path)
        .map_err(io_error(&last.path))?;
    file.seek(SeekFrom::Start(last.bytes))
        .map_err(io_error(&last.path))?;
    Ok(ActiveSegment {
        file,
        path: last.path.clone(),
        bytes: last.bytes,
    })
}

/// Writes `buffer` to the active segment and fsyncs it.
fn flush(active: &mut ActiveSegment, buffer: &mut Vec<u8>) -> Result<(), LogError> {
    if buffer.is_empty() {
        return Ok(());
    }
    active
        .file
        .write_all(buffer)
        .map_err(io_error(&active.path))?;
    active.bytes += buffer.len() as u64;
    buffer.clear();
    let started = Instant::now();
    active.file.sync_data().map_err(io_error(&active.path))?;
    metrics::histogram!("ais_wal_fsync_seconds").record(started.elapsed().as_secs_f64());
    Ok(())
}

/// Closes the active segment and starts the next at `first_offset`.
fn roll(shared: &Shared, active: &mut ActiveSegment, first_offset: u64) -> Result<(), LogError> {
    let path = segment_path(&shared.dir, first_offset);
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    sync_dir(&shared.dir)?;
    let mut segments = shared.lock_segments()?;
    if let Some(last) = segments.last_mut() {
        last.bytes = active.bytes;
    }
    segments.push(Segment {
        first_offset,
        path: path.clone(),
        bytes: 0,
    });
    *active = ActiveSegment {
        file,
        path,
        bytes: 0,
    };
    Ok(())
}

fn group_commit(
    shared: &Shared,
    active: &mut ActiveSegment,
    buffer: &mut Vec<u8>,
    jobs: Vec<AppendJob>,
    segment_bytes: u64,
) {
    let mut next_offset = shared.durable_end.load(Ordering::Acquire);
    // `release` may free bytes concurrently; count what this group adds and apply it
    // with one atomic add.
    let live_before = shared.live_bytes.load(Ordering::Acquire);
    let mut added = 0u64;
    let mut accepted: Vec<(AppendJob, Appended)> = Vec::with_capacity(jobs.len());
    let mut outcome: Result<(), LogError> = Ok(());
    for job in jobs {
        let frame_bytes = (FRAME_HEADER_BYTES + job.batch.byte_len()) as u64;
        if live_before + added + frame_bytes > shared.max_bytes {
            shared.at_cap.store(true, Ordering::Release);
            metrics::counter!("ais_wal_full_total").increment(1);
            let _ = job.reply.send(Err(LogError::Full {
                detail: format!(
                    "write-ahead log holds {} of {} bytes until the stream catches up",
                    live_before + added,
                    shared.max_bytes
                ),
                retry_after: FULL_RETRY_AFTER,
            }));
            continue;
        }
        let pending = active.bytes + buffer.len() as u64;
        if pending > 0 && pending + frame_bytes > segment_bytes {
            outcome = flush(active, buffer).and_then(|()| roll(shared, active, next_offset));
            if outcome.is_err() {
                accepted.push((
                    job,
                    Appended {
                        partition: PARTITION,
                        first_offset: 0,
                        count: 0,
                    },
                ));
                break;
            }
        }
        ais_model::frame::encode_frame(
            next_offset,
            job.batch.len(),
            job.batch.as_framed_bytes(),
            buffer,
        );
        let appended = Appended {
            partition: PARTITION,
            first_offset: next_offset,
            count: job.batch.len(),
        };
        next_offset += u64::from(job.batch.len());
        added += frame_bytes;
        accepted.push((job, appended));
    }
    if outcome.is_ok() {
        outcome = flush(active, buffer);
    }
    match outcome {
        Ok(()) => {
            let records: u64 = accepted
                .iter()
                .map(|(_, appended)| u64::from(appended.count))
                .sum();
            let live_bytes = shared.live_bytes.fetch_add(added, Ordering::AcqRel) + added;
            if let Ok(mut segments) = shared.lock_segments() {
                if let Some(last) = segments.last_mut() {
                    last.bytes = active.bytes;
                }
            }
            shared.durable_end.store(next_offset, Ordering::Release);
            shared.durable.send_replace(next_offset);
            shared.fsyncs.fetch_add(1, Ordering::Relaxed);
            metrics::gauge!("ais_wal_bytes").set(live_bytes as f64);
            metrics::counter!("ais_wal_appended_records_total").increment(records);
            metrics::histogram!("ais_wal_group_commit_batches").record(accepted.len() as f64);
            for (job, appended) in accepted {
                let _ = job.reply.send(Ok(appended));
            }
        }
        Err(error) => {
            // What reached the file is unknown: refuse further appends; a restart
            // recovers the tail. None of these waiters was acknowledged.
            tracing::error!(%error, "write-ahead log write failed; refusing appends until restart");
            shared.failed.store(true, Ordering::Release);
            buffer.clear();
            for (job, _) in accepted {
                let _ = job
                    .reply
                    .send(Err(LogError::Unavailable(error.to_string())));
            }
        }
    }
}

#[async_trait]
impl Log for Wal {
    async fn append(&self, batch: RecordBatch) -> Result<Appended, LogError> {
        if batch.byte_len() > MAX_FRAME_PAYLOAD {
            return Err(LogError::Full {
                detail: format!(
                    "batch of {} bytes is over the frame limit",
                    batch.byte_len()
                ),
                retry_after: FULL_RETRY_AFTER,
            });
        }
        let (reply, answer) = oneshot::channel();
        {
            let sender = self
                .sender
                .lock()
                .map_err(|_| LogError::Unavailable("append queue lock poisoned".to_string()))?;
            let Some(sender) = sender.as_ref() else {
                return Err(LogError::Closed);
            };
            match sender.try_send(AppendJob { batch, reply }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    metrics::counter!("ais_wal_full_total").increment(1);
                    return Err(LogError::Full {
                        detail: format!(
                            "{APPEND_QUEUE_CAPACITY} appends already waiting for the disk"
                        ),
                        retry_after: FULL_RETRY_AFTER,
                    });
                }
                Err(TrySendError::Disconnected(_)) => return Err(LogError::Closed),
            }
        }
        answer.await.map_err(|_| LogError::Closed)?
    }

    fn partitions(&self) -> u32 {
        1
    }

    fn status(&self) -> LogStatus {
        let used = self.shared.live_bytes.load(Ordering::Acquire);
        let failed = self.shared.failed.load(Ordering::Acquire);
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        LogStatus {
            writable: !failed && !self.shared.at_cap.load(Ordering::Acquire),
            detail: if failed {
                "wal failed a write; restart to recover".to_string()
            } else {
                format!(
                    "wal {:.1} MiB of {:.0} MiB",
                    mib(used),
                    mib(self.shared.max_bytes)
                )
            },
            end_offsets: vec![(PARTITION, self.durable_end())],
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
        let oldest = self
            .shared
            .lock_segments()?
            .first()
            .map_or(0, |segment| segment.first_offset);
        if next_offset < oldest {
            return Err(LogError::Corrupt {
                location: self.shared.dir.display().to_string(),
                detail: format!(
                    "the store's position {next_offset} is before the oldest record kept ({oldest})"
                ),
            });
        }
        Ok(Box::new(WalConsumer {
            shared: Arc::clone(&self.shared),
            durable: self.shared.durable.subscribe(),
            next_offset,
            cursor: None,
        }))
    }

    async fn close(&self) -> Result<(), LogError> {
        let sender = self
            .sender
            .lock()
            .map_err(|_| LogError::Unavailable("append queue lock poisoned".to_string()))?
            .take();
        // Dropping the sender lets the writer finish what is queued, then exit.
        drop(sender);
        let writer = self
            .writer
            .lock()
            .map_err(|_| LogError::Unavailable("writer handle lock poisoned".to_string()))?
            .take();
        if let Some(writer) = writer {
            tokio::task::spawn_blocking(move || writer.join())
                .await
                .map_err(|error| LogError::Unavailable(format!("joining the writer: {error}")))?
                .map_err(|_| LogError::Unavailable("the WAL writer panicked".to_string()))?;
        }
        Ok(())
    }
}

/// Where a consumer reads: an open segment and the byte position of the next frame.
struct Cursor {
    segment_first_offset: u64,
    file: File,
    path: PathBuf,
    /// Byte position of the next frame to read.
    position: u64,
    /// First offset of the frame at `position`.
    frame_offset: u64,
}

struct WalConsumer {
    shared: Arc<Shared>,
    durable: watch::Receiver<u64>,
    next_offset: u64,
    cursor: Option<Cursor>,
}

impl WalConsumer {
    /// Opens the segment holding `self.next_offset` and walks to the frame holding it.
    fn seek(&mut self) -> Result<(), LogError> {
        let segment = {
            let segments = self.shared.lock_segments()?;
            segments
                .iter()
                .rev()
                .find(|segment| segment.first_offset <= self.next_offset)
                .cloned()
                .ok_or_else(|| LogError::Corrupt {
                    location: self.shared.dir.display().to_string(),
                    detail: format!("no segment holds offset {}", self.next_offset),
                })?
        };
        let mut file = File::open(&segment.path).map_err(io_error(&segment.path))?;
        let mut position = 0u64;
        let mut frame_offset = segment.first_offset;
        let mut header = [0u8; FRAME_HEADER_BYTES];
        // Skip whole frames before the wanted offset by their headers alone.
        loop {
            file.seek(SeekFrom::Start(position))
                .map_err(io_error(&segment.path))?;
            if file.read_exact(&mut header).is_err() {
                break;
            }
            let payload_len = u64::from(u32::from_le_bytes([
                header[4], header[5], header[6], header[7],
            ]));
            let count = u64::from(u32::from_le_bytes([
                header[20], header[21], header[22], header[23],
            ]));
            if frame_offset + count > self.next_offset {
                break;
            }
            position += FRAME_HEADER_BYTES as u64 + payload_len;
            frame_offset += count;
        }
        self.cursor = Some(Cursor {
            segment_first_offset: segment.first_offset,
            file,
            path: segment.path,
            position,
            frame_offset,
        });
        Ok(())
    }

    /// Reads the frame at the cursor, or moves to the next segment when this one is
    /// done. `None` when nothing durable is left to read.
    fn read_frame(&mut self, durable_end: u64) -> Result<Option<(u64, Bytes)>, LogError> {
        loop {
            let Some(cursor) = self.cursor.as_mut() else {
                return Ok(None);
            };
            if cursor.frame_offset >= durable_end {
                return Ok(None);
            }
            let mut header = [0u8; FRAME_HEADER_BYTES];
            cursor
                .file
                .seek(SeekFrom::Start(cursor.position))
                .map_err(io_error(&cursor.path))?;
            if cursor.file.read_exact(&mut header).is_err() {
                // End of this segment: the next one starts where this one ended.
                let next_first = cursor.frame_offset;
                let has_next = self.shared.lock_segments()?.iter().any(|segment| {
                    segment.first_offset == next_first
                        && segment.first_offset > cursor.segment_first_offset
                });
                if !has_next {
                    return Err(LogError::Corrupt {
                        location: cursor.path.display().to_string(),
                        detail: format!("segment ends before durable offset {durable_end}"),
                    });
                }
                self.seek()?;
                continue;
            }
            let payload_len =
                u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
            if payload_len > MAX_FRAME_PAYLOAD {
                return Err(LogError::Corrupt {
                    location: format!("{} byte {}", cursor.path.display(), cursor.position),
                    detail: FrameError::TooLong(payload_len as u32).to_string(),
                });
            }
            let mut frame = vec![0u8; FRAME_HEADER_BYTES + payload_len];
            frame[..FRAME_HEADER_BYTES].copy_from_slice(&header);
            cursor
                .file
                .read_exact(&mut frame[FRAME_HEADER_BYTES..])
                .map_err(io_error(&cursor.path))?;
            let location = || format!("{} byte {}", cursor.path.display(), cursor.position);
            let (parsed, total) = match parse_frame(&frame) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => {
                    return Err(LogError::Corrupt {
                        location: location(),
                        detail: "frame is cut short".to_string(),
                    })
                }
                Err(error) => {
                    return Err(LogError::Corrupt {
                        location: location(),
                        detail: error.to_string(),
                    })
                }
            };
            if parsed.first_offset != cursor.frame_offset {
                return Err(LogError::Corrupt {
                    location: location(),
                    detail: format!(
                        "frame starts at offset {} where {} was expected",
                        parsed.first_offset, cursor.frame_offset
                    ),
                });
            }
            cursor.position += total as u64;
            cursor.frame_offset += u64::from(parsed.count);
            let payload = Bytes::from(frame).slice(FRAME_HEADER_BYTES..);
            return Ok(Some((parsed.first_offset, payload)));
        }
    }
}

#[async_trait]
impl LogConsumer for WalConsumer {
    async fn poll(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<FetchedBatch>, LogError> {
        let mut durable_end = *self.durable.borrow_and_update();
        if durable_end <= self.next_offset {
            let _ = tokio::time::timeout(max_wait, self.durable.changed()).await;
            durable_end = *self.durable.borrow_and_update();
            if durable_end <= self.next_offset {
                return Ok(None);
            }
        }
        if self.cursor.is_none() {
            self.seek()?;
        }
        let first_offset = self.next_offset;
        let mut records = Vec::new();
        // Whole frames are returned, so a batch may exceed `max_records` by the rest of
        // one frame (at most one request's events).
        while records.len() < max_records.max(1) {
            let Some((frame_offset, payload)) = self.read_frame(durable_end)? else {
                break;
            };
            let mut offset = frame_offset;
            let mut position = 0usize;
            for record in RecordIter::new(&payload) {
                let start = position + 4;
                position = start + record.len();
                if offset >= self.next_offset {
                    records.push(payload.slice(start..position));
                }
                offset += 1;
            }
            self.next_offset = self.next_offset.max(offset);
        }
        if records.is_empty() {
            return Ok(None);
        }
        Ok(Some(FetchedBatch {
            partition: PARTITION,
            first_offset,
            records,
        }))
    }

    async fn release(&mut self, partition: u32, next_offset: u64) -> Result<(), LogError> {
        if partition != PARTITION {
            return Ok(());
        }
        let mut freed = 0u64;
        let mut doomed = Vec::new();
        {
            let mut segments = self.shared.lock_segments()?;
            // A segment can go when the next one starts at or before the position: all
            // its records are in the store. The last (active) one always stays.
            while segments.len() > 1 && segments[1].first_offset <= next_offset {
                let segment = segments.remove(0);
                freed += segment.bytes;
                doomed.push(segment.path);
            }
        }
        for path in doomed {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
        if freed > 0 {
            self.shared.at_cap.store(false, Ordering::Release);
            let left = self.shared.live_bytes.fetch_sub(freed, Ordering::AcqRel) - freed;
            metrics::gauge!("ais_wal_bytes").set(left as f64);
        }
        Ok(())
    }

    fn lag(&self) -> Vec<(u32, u64)> {
        let end = self.shared.durable_end.load(Ordering::Acquire);
        vec![(PARTITION, end.saturating_sub(self.next_offset))]
    }
}
