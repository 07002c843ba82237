//! The consumer: reads frames back from the segment files, up to the durable end.
//!
//! A [`SegmentReader`] reads a segment in chunks of [`READ_CHUNK_BYTES`] into one
//! shared buffer; the records a poll returns are slices of it (`Bytes`), so a poll
//! costs a few reads and allocations however many records it returns. A frame whose
//! records do not all fit in one poll stays open ([`OpenFrame`]) for the next, and a
//! start position inside a frame skips that frame's earlier records.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use super::segment::{io_error, read_at};
use super::storage::SegmentFile;
use super::{
    parse_frame, Shared, FRAME_HEADER_BYTES, FRAME_MAGIC, MAX_FRAME_PAYLOAD, PARTITION,
    READ_CHUNK_BYTES,
};
use crate::{FetchedBatch, LogConsumer, LogError};

pub(super) struct WalConsumer {
    shared: Arc<Shared>,
    durable: watch::Receiver<u64>,
    /// Offset of the next record `poll` returns.
    next_offset: u64,
    /// Where the next frame is read; `None` until the first poll, and after the
    /// segment it was in ended.
    reader: Option<SegmentReader>,
    /// A verified frame with records left to return; its next record is `next_offset`.
    open_frame: Option<OpenFrame>,
}

impl WalConsumer {
    /// A consumer starting at `next_offset`, which must lie in the live records (or be
    /// the durable end).
    pub(super) fn new(shared: Arc<Shared>, next_offset: u64) -> Result<WalConsumer, LogError> {
        let oldest = shared
            .lock_segments()?
            .first()
            .map_or(0, |segment| segment.first_offset);
        let durable_end = shared.durable_end();
        if next_offset < oldest {
            return Err(LogError::Corrupt {
                location: shared.dir.display().to_string(),
                detail: format!(
                    "the store's position {next_offset} is before the oldest record the wal keeps ({oldest}); those records were released already"
                ),
            });
        }
        if next_offset > durable_end {
            return Err(LogError::Corrupt {
                location: shared.dir.display().to_string(),
                detail: format!(
                    "the store's position {next_offset} is past the end of the wal ({durable_end}); the wal directory does not belong to this store"
                ),
            });
        }
        Ok(WalConsumer {
            durable: shared.durable.subscribe(),
            shared,
            next_offset,
            reader: None,
            open_frame: None,
        })
    }

    /// The next frame holding `self.next_offset`, its earlier records skipped.
    fn next_frame(&mut self, durable_end: u64) -> Result<OpenFrame, LogError> {
        debug_assert!(self.next_offset < durable_end);
        loop {
            let reader = match self.reader.as_mut() {
                Some(reader) => reader,
                None => self
                    .reader
                    .insert(SegmentReader::open_at(&self.shared, self.next_offset)?),
            };
            let Some(mut frame) = reader.take_frame()? else {
                // The segment ended; the next one starts where it did.
                let ended_at = reader.frame_offset;
                let segment_first_offset = reader.segment_first_offset;
                let next = SegmentReader::open_at(&self.shared, ended_at)?;
                if next.segment_first_offset == segment_first_offset {
                    return Err(LogError::Corrupt {
                        location: next.path.display().to_string(),
                        detail: format!(
                            "segment ends at offset {ended_at}, before the durable end {durable_end}"
                        ),
                    });
                }
                self.reader = Some(next);
                continue;
            };
            while frame.offset < self.next_offset {
                if frame.next_record().is_none() {
                    break;
                }
            }
            if frame.offset == self.next_offset && !frame.is_done() {
                return Ok(frame);
            }
            // A frame wholly before the position (or an empty one): go on.
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
        if max_records == 0 {
            return Ok(None);
        }
        let mut durable_end = *self.durable.borrow_and_update();
        if durable_end <= self.next_offset {
            // Either a change arrives or the wait ends; both are answered below.
            let _ = tokio::time::timeout(max_wait, self.durable.changed()).await;
            durable_end = *self.durable.borrow_and_update();
            if durable_end <= self.next_offset {
                return Ok(None);
            }
        }
        let available = usize::try_from(durable_end - self.next_offset).unwrap_or(usize::MAX);
        let limit = max_records.min(available);
        let first_offset = self.next_offset;
        let mut records = Vec::with_capacity(limit);
        while records.len() < limit {
            let mut frame = match self.open_frame.take() {
                Some(frame) => frame,
                None => self.next_frame(durable_end)?,
            };
            debug_assert_eq!(frame.offset, self.next_offset);
            while records.len() < limit {
                let Some(record) = frame.next_record() else {
                    break;
                };
                records.push(record);
                self.next_offset += 1;
            }
            if !frame.is_done() {
                self.open_frame = Some(frame);
            }
        }
        debug_assert!(self.next_offset <= durable_end, "read past the durable end");
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
        let doomed = {
            let mut segments = self.shared.lock_segments()?;
            // A segment can go when the next one starts at or before the position: all
            // its records are in the store. The last (active) one always stays.
            let keep_from = segments
                .iter()
                .skip(1)
                .take_while(|segment| segment.first_offset <= next_offset)
                .count();
            segments.drain(..keep_from).collect::<Vec<_>>()
        };
        if doomed.is_empty() {
            return Ok(());
        }
        // Oldest first, the directory synced after each: after a crash the live
        // segments still run without a gap.
        let mut freed = 0u64;
        for segment in &doomed {
            self.shared
                .storage
                .remove(&segment.path)
                .map_err(io_error(&segment.path))?;
            self.shared
                .storage
                .sync_dir(&self.shared.dir)
                .map_err(io_error(&self.shared.dir))?;
            freed += segment.bytes;
        }
        let before = self
            .shared
            .live_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bytes| {
                Some(bytes.saturating_sub(freed))
            })
            .unwrap_or_default();
        self.shared.at_cap.store(false, Ordering::Release);
        metrics::gauge!("ais_wal_bytes").set(before.saturating_sub(freed) as f64);
        tracing::debug!(
            segments = doomed.len(),
            freed_bytes = freed,
            position = next_offset,
            "wal segments released"
        );
        Ok(())
    }

    fn lag(&self) -> Vec<(u32, u64)> {
        let end = self.shared.durable_end();
        vec![(PARTITION, end.saturating_sub(self.next_offset))]
    }
}

/// A verified frame being handed out record by record.
struct OpenFrame {
    payload: Bytes,
    /// Byte position in `payload` of the next record.
    record_at: usize,
    /// Offset of the next record.
    offset: u64,
}

impl OpenFrame {
    fn is_done(&self) -> bool {
        self.record_at >= self.payload.len()
    }

    /// The next record, a slice of the shared buffer.
    fn next_record(&mut self) -> Option<Bytes> {
        let rest = self.payload.get(self.record_at..)?;
        let (length, _) = rest.split_first_chunk::<4>()?;
        let start = self.record_at + 4;
        let end = start.checked_add(u32::from_le_bytes(*length) as usize)?;
        // `parse_frame` checked the framing, so this holds for every verified frame.
        if end > self.payload.len() {
            debug_assert!(false, "verified frame with bad record framing");
            return None;
        }
        self.record_at = end;
        self.offset += 1;
        Some(self.payload.slice(start..end))
    }
}

/// Reads frames of one segment in order.
struct SegmentReader {
    segment_first_offset: u64,
    file: SegmentFile,
    path: PathBuf,
    /// Bytes of the file from byte `buffer_start` on.
    buffer: Bytes,
    buffer_start: u64,
    /// Position in `buffer` of the next frame (may lie past its end after a skip).
    frame_at: usize,
    /// First offset of that frame.
    frame_offset: u64,
}

impl SegmentReader {
    /// Opens the segment holding `offset` at the frame holding it, skipping earlier
    /// frames by their headers alone.
    fn open_at(shared: &Shared, offset: u64) -> Result<SegmentReader, LogError> {
        let segment = shared
            .lock_segments()?
            .iter()
            .rev()
            .find(|segment| segment.first_offset <= offset)
            .cloned()
            .ok_or_else(|| LogError::Corrupt {
                location: shared.dir.display().to_string(),
                detail: format!("no live segment holds offset {offset}; it was released"),
            })?;
        let file = shared
            .storage
            .open_read(&segment.path)
            .map_err(io_error(&segment.path))?;
        let mut reader = SegmentReader {
            segment_first_offset: segment.first_offset,
            file,
            path: segment.path,
            buffer: Bytes::new(),
            buffer_start: 0,
            frame_at: 0,
            frame_offset: segment.first_offset,
        };
        loop {
            let Some((payload_len, count)) = reader.peek_header()? else {
                // The segment ends before the offset: at a segment's end, the caller
                // moves on; anything else is caught there.
                return Ok(reader);
            };
            if reader.frame_offset + u64::from(count) > offset {
                return Ok(reader);
            }
            reader.frame_at += FRAME_HEADER_BYTES + payload_len;
            reader.frame_offset += u64::from(count);
        }
    }

    fn location(&self) -> String {
        format!(
            "{} byte {}",
            self.path.display(),
            self.buffer_start + self.frame_at as u64
        )
    }

    /// Makes the buffer hold at least `needed` bytes from the next frame on (fewer at
    /// the end of the file), reading `READ_CHUNK_BYTES` or more.
    fn fill(&mut self, needed: usize) -> Result<(), LogError> {
        if self.buffer.len().saturating_sub(self.frame_at) >= needed {
            return Ok(());
        }
        let position = self.buffer_start + self.frame_at as u64;
        let length = needed.max(READ_CHUNK_BYTES);
        let mut fresh = Vec::with_capacity(length);
        read_at(&mut self.file, position, length, &mut fresh).map_err(io_error(&self.path))?;
        self.buffer = Bytes::from(fresh);
        self.buffer_start = position;
        self.frame_at = 0;
        Ok(())
    }

    /// Payload length and record count of the next frame; `None` at the end of the
    /// file.
    fn peek_header(&mut self) -> Result<Option<(usize, u32)>, LogError> {
        self.fill(FRAME_HEADER_BYTES)?;
        let Some(header) = self
            .buffer
            .get(self.frame_at..)
            .and_then(|rest| rest.first_chunk::<FRAME_HEADER_BYTES>())
        else {
            return Ok(None);
        };
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let payload_len = word(4) as usize;
        if word(0) != FRAME_MAGIC || payload_len > MAX_FRAME_PAYLOAD {
            return Err(LogError::Corrupt {
                location: self.location(),
                detail: "frame header is damaged".to_string(),
            });
        }
        Ok(Some((payload_len, word(20))))
    }

    /// Verifies and takes the next frame; `None` at the end of the segment. Call only
    /// while the frame is durable: then it is complete on disk.
    fn take_frame(&mut self) -> Result<Option<OpenFrame>, LogError> {
        let Some((payload_len, _)) = self.peek_header()? else {
            return Ok(None);
        };
        let total = FRAME_HEADER_BYTES + payload_len;
        self.fill(total)?;
        let rest = self.buffer.get(self.frame_at..).unwrap_or_default();
        let header = match parse_frame(rest) {
            Ok(Some((header, parsed_total))) => {
                debug_assert_eq!(parsed_total, total);
                header
            }
            Ok(None) => {
                return Err(LogError::Corrupt {
                    location: self.location(),
                    detail: format!(
                        "durable frame is cut short ({} of {total} bytes)",
                        rest.len()
                    ),
                })
            }
            Err(error) => {
                return Err(LogError::Corrupt {
                    location: self.location(),
                    detail: error.to_string(),
                })
            }
        };
        if header.first_offset != self.frame_offset {
            return Err(LogError::Corrupt {
                location: self.location(),
                detail: format!(
                    "frame starts at offset {} where {} was expected",
                    header.first_offset, self.frame_offset
                ),
            });
        }
        let payload = self
            .buffer
            .slice(self.frame_at + FRAME_HEADER_BYTES..self.frame_at + total);
        self.frame_at += total;
        self.frame_offset += u64::from(header.count);
        Ok(Some(OpenFrame {
            payload,
            record_at: 0,
            offset: header.first_offset,
        }))
    }
}
