//! The writer thread: group commit.
//!
//! One thread owns the active segment. It takes one append from the queue, then
//! whatever else is already waiting (up to [`GROUP_MAX_BYTES`]), encodes all of them
//! into one buffer, writes it with one `write`, syncs once, and only then publishes the
//! new durable end and answers every waiter. Costs are per group or per batch: no
//! syscall, lock or allocation per record.
//!
//! A group that fills the active segment is written and synced in two parts, and the
//! first part is answered before the next segment is made: if making it fails, the
//! appends answered are exactly the ones on disk, and the rest are refused unwritten.

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::segment::{io_error, segment_path, Segment};
use super::storage::SegmentFile;
use super::{Shared, Wal, APPEND_QUEUE_CAPACITY, FRAME_HEADER_BYTES, GROUP_MAX_BYTES, PARTITION};
use crate::{Appended, LogError, RecordBatch};

/// The answer to one append.
pub(super) type Reply = oneshot::Sender<Result<Appended, LogError>>;

/// One append waiting for the writer.
pub(super) struct AppendJob {
    pub batch: RecordBatch,
    pub reply: Reply,
}

/// Queues `job` for the writer, or refuses at once when the queue is full.
pub(super) fn enqueue(sender: &SyncSender<AppendJob>, job: AppendJob) -> Result<(), LogError> {
    match sender.try_send(job) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => Err(Wal::full(format!(
            "{APPEND_QUEUE_CAPACITY} appends already waiting for the disk"
        ))),
        Err(TrySendError::Disconnected(_)) => Err(LogError::Closed),
    }
}

/// The segment being written.
struct ActiveSegment {
    file: SegmentFile,
    path: PathBuf,
    /// Bytes written to it (all synced between group commits).
    bytes: u64,
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    segment_bytes: u64,
    active: ActiveSegment,
    /// Frames of the group being committed; reused across groups.
    buffer: Vec<u8>,
    /// Appends of the group being committed; reused across groups.
    jobs: Vec<AppendJob>,
    /// Waiters of the group and their answers, sent after the fsync.
    answers: Vec<(Reply, Appended)>,
}

impl Writer {
    /// Opens the last live segment for writing at its end.
    pub(super) fn new(shared: Arc<Shared>, segment_bytes: u64) -> Result<Writer, LogError> {
        let (path, bytes) = {
            let segments = shared.lock_segments()?;
            let last = segments
                .last()
                .ok_or_else(|| LogError::Unavailable("the wal has no segment".to_string()))?;
            (last.path.clone(), last.bytes)
        };
        let mut file = shared.storage.open_write(&path).map_err(io_error(&path))?;
        file.seek(SeekFrom::Start(bytes)).map_err(io_error(&path))?;
        Ok(Writer {
            shared,
            segment_bytes,
            active: ActiveSegment { file, path, bytes },
            buffer: Vec::with_capacity(1024 * 1024),
            jobs: Vec::with_capacity(APPEND_QUEUE_CAPACITY + 1),
            answers: Vec::with_capacity(APPEND_QUEUE_CAPACITY + 1),
        })
    }

    /// Group commits until every sender is gone (closed or dropped), then returns:
    /// everything queued before that is committed and answered first.
    pub(super) fn run(mut self, receiver: &Receiver<AppendJob>) {
        while let Ok(first) = receiver.recv() {
            let mut queued_bytes = FRAME_HEADER_BYTES + first.batch.byte_len();
            self.jobs.push(first);
            while queued_bytes < GROUP_MAX_BYTES {
                match receiver.try_recv() {
                    Ok(job) => {
                        queued_bytes += FRAME_HEADER_BYTES + job.batch.byte_len();
                        self.jobs.push(job);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.shared
                .queued
                .fetch_sub(self.jobs.len() as u64, Ordering::AcqRel);
            self.commit();
        }
    }

    /// Writes and syncs the queued jobs, then answers them.
    fn commit(&mut self) {
        let mut jobs = std::mem::take(&mut self.jobs);
        let mut failure: Option<String> = self
            .shared
            .failed
            .load(Ordering::Acquire)
            .then(|| "a wal write failed earlier; restart to recover the log".to_string());
        let mut next_offset = self.shared.durable_end();
        // `release` may free bytes meanwhile; this group's additions are applied with
        // an atomic add when published, so the check here is, if anything, strict.
        let live_before = self.shared.live_bytes.load(Ordering::Acquire);
        // Bytes of frames this group added, and of those the ones not yet published.
        let mut added = 0u64;
        let mut unpublished = 0u64;
        let mut refused_at_cap = false;
        let mut accepted_any = false;
        for job in jobs.drain(..) {
            if let Some(failure) = &failure {
                let _ = job.reply.send(Err(LogError::Unavailable(failure.clone())));
                continue;
            }
            let frame_bytes = (FRAME_HEADER_BYTES + job.batch.byte_len()) as u64;
            if live_before + added + frame_bytes > self.shared.max_bytes {
                refused_at_cap = true;
                // Before the answer, so a caller that got `Full` sees it in `status`.
                self.shared.at_cap.store(true, Ordering::Release);
                let _ = job.reply.send(Err(Wal::full(format!(
                    "wal holds {} of {} bytes until the stream catches up",
                    live_before + added,
                    self.shared.max_bytes
                ))));
                continue;
            }
            let pending = self.active.bytes + self.buffer.len() as u64;
            if pending > 0 && pending + frame_bytes > self.segment_bytes {
                // The group's frames so far are synced before the next segment is made,
                // and answered at once: should making it fail, no durable append is
                // answered as failed, which a client's retry would count twice.
                let rolled = match self.flush() {
                    Ok(()) => {
                        self.publish(next_offset, unpublished);
                        unpublished = 0;
                        self.roll(next_offset)
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = rolled {
                    self.refuse_until_restart(&error.to_string());
                    let _ = job
                        .reply
                        .send(Err(LogError::Unavailable(error.to_string())));
                    failure = Some(error.to_string());
                    continue;
                }
            }
            let count = job.batch.len();
            ais_model::frame::encode_frame(
                next_offset,
                count,
                job.batch.as_framed_bytes(),
                &mut self.buffer,
            );
            self.answers.push((
                job.reply,
                Appended {
                    partition: PARTITION,
                    first_offset: next_offset,
                    count,
                },
            ));
            next_offset += u64::from(count);
            added += frame_bytes;
            unpublished += frame_bytes;
            accepted_any = true;
        }
        self.jobs = jobs;
        if failure.is_none() {
            failure = self.flush().err().map(|error| error.to_string());
        }
        if !refused_at_cap && accepted_any {
            self.shared.at_cap.store(false, Ordering::Release);
        }
        match failure {
            None => self.publish(next_offset, unpublished),
            Some(failure) => {
                // The waiters left were not acknowledged; those synced before a roll
                // were, and have their answers.
                self.refuse_until_restart(&failure);
                self.buffer.clear();
                for (reply, _) in self.answers.drain(..) {
                    let _ = reply.send(Err(LogError::Unavailable(failure.clone())));
                }
            }
        }
        if self.buffer.capacity() > GROUP_MAX_BYTES {
            // One huge batch should not pin its size in memory for good.
            self.buffer.shrink_to(GROUP_MAX_BYTES);
        }
    }

    /// After a failed write, sync or roll, what reached the file is unknown: refuse
    /// further appends; a restart recovers the tail. Set before the failure is
    /// answered, so a caller that got it sees it in `status`.
    fn refuse_until_restart(&self, failure: &str) {
        if !self.shared.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(
                error = %failure,
                "write-ahead log write failed; refusing appends until restart"
            );
        }
    }

    /// After a successful sync: publish the durable end, then answer the waiters of the
    /// frames it made durable (`added` bytes up to `next_offset`).
    fn publish(&mut self, next_offset: u64, added: u64) {
        debug_assert!(
            self.buffer.is_empty(),
            "published before everything was written"
        );
        if self.answers.is_empty() {
            return;
        }
        // Only this thread moves the durable end, so it still holds the previous one.
        let first_offset = self.shared.durable_end();
        let live_bytes = self.shared.live_bytes.fetch_add(added, Ordering::AcqRel) + added;
        if let Ok(mut segments) = self.shared.lock_segments() {
            if let Some(last) = segments.last_mut() {
                last.bytes = self.active.bytes;
            }
        }
        self.shared
            .durable_end
            .store(next_offset, Ordering::Release);
        self.shared.durable.send_replace(next_offset);
        metrics::gauge!("ais_wal_bytes").set(live_bytes as f64);
        metrics::counter!("ais_wal_appended_records_total").increment(next_offset - first_offset);
        metrics::histogram!("ais_wal_group_commit_batches").record(self.answers.len() as f64);
        for (reply, appended) in self.answers.drain(..) {
            let _ = reply.send(Ok(appended));
        }
    }

    /// Writes the buffered frames to the active segment with one `write`, then syncs.
    fn flush(&mut self) -> Result<(), LogError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let path = &self.active.path;
        self.active
            .file
            .write_all(&self.buffer)
            .map_err(io_error(path))?;
        self.active.bytes += self.buffer.len() as u64;
        self.buffer.clear();
        let started = Instant::now();
        self.active.file.sync_data().map_err(io_error(path))?;
        metrics::histogram!("ais_wal_fsync_seconds").record(started.elapsed().as_secs_f64());
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Starts the next segment at `first_offset`; the active one is synced already.
    fn roll(&mut self, first_offset: u64) -> Result<(), LogError> {
        debug_assert!(self.buffer.is_empty(), "rolled with unwritten frames");
        let path = segment_path(&self.shared.dir, first_offset);
        let file = self
            .shared
            .storage
            .create_new(&path)
            .map_err(io_error(&path))?;
        self.shared
            .storage
            .sync_dir(&self.shared.dir)
            .map_err(io_error(&self.shared.dir))?;
        {
            let mut segments = self.shared.lock_segments()?;
            if let Some(last) = segments.last_mut() {
                last.bytes = self.active.bytes;
            }
            segments.push(Segment {
                first_offset,
                path: path.clone(),
                bytes: 0,
            });
        }
        tracing::debug!(file = %path.display(), first_offset, "wal segment rolled");
        self.active = ActiveSegment {
            file,
            path,
            bytes: 0,
        };
        Ok(())
    }
}
