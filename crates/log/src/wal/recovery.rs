//! Recovery at open: walk every segment, cut a torn tail, refuse damaged acknowledged
//! data.
//!
//! The writer syncs a group's frames before it answers anyone, and syncs a segment
//! before it creates the next, so a crash can only damage bytes written after the last
//! fsync: the end of the last segment, at most one group write long. An invalid frame
//! anywhere else, or one followed by a valid frame, means bytes that were acknowledged
//! changed on disk; recovery refuses to open rather than drop them. (One case looks the
//! same and is refused too: a file system that wrote the later pages of an unsynced
//! group but not the earlier ones. File systems that order data before the size update,
//! such as ext4's default, do not leave that.)

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::segment::{io_error, list_segments, read_at, segment_path, Segment};
use super::storage::Storage;
use super::{
    parse_frame, FrameError, FrameHeader, FRAME_HEADER_BYTES, FRAME_MAGIC, MAX_UNSYNCED_BYTES,
    READ_CHUNK_BYTES,
};
use crate::LogError;

/// The live segments after recovery and the offset after the last valid record.
pub(super) struct Recovered {
    pub segments: Vec<Segment>,
    pub end_offset: u64,
}

/// The first invalid frame of a segment: its byte position and what is wrong.
struct Invalid {
    position: u64,
    problem: String,
}

/// The result of walking one segment's frames.
struct Walk {
    /// Offset after the last valid record.
    end_offset: u64,
    invalid: Option<Invalid>,
}

/// Walks the segments of `dir`, cutting a torn tail off the last one, and creates the
/// first segment of an empty directory.
pub(super) fn recover(storage: &Storage, dir: &Path) -> Result<Recovered, LogError> {
    let mut segments = list_segments(storage, dir)?;
    let mut end_offset = segments.first().map_or(0, |segment| segment.first_offset);
    let last_index = segments.len().saturating_sub(1);
    for (index, segment) in segments.iter_mut().enumerate() {
        if segment.first_offset != end_offset {
            return Err(LogError::Corrupt {
                location: segment.path.display().to_string(),
                detail: format!(
                    "segment starts at offset {} but the previous one ends at {end_offset}; a segment file is missing",
                    segment.first_offset
                ),
            });
        }
        let walk = walk_segment(storage, segment)?;
        end_offset = walk.end_offset;
        let Some(invalid) = walk.invalid else {
            continue;
        };
        let location = format!("{} byte {}", segment.path.display(), invalid.position);
        if index != last_index {
            return Err(LogError::Corrupt {
                location,
                detail: format!(
                    "{} in a segment that was synced before the next one began: acknowledged records are damaged",
                    invalid.problem
                ),
            });
        }
        if let Some((valid_at, header)) = find_valid_frame_after(
            storage,
            &segment.path,
            invalid.position + 1,
            walk.end_offset,
        )? {
            return Err(LogError::Corrupt {
                location,
                detail: format!(
                    "{}, yet a valid frame of offsets {}..{} follows at byte {valid_at}: acknowledged records are damaged",
                    invalid.problem,
                    header.first_offset,
                    header.first_offset + u64::from(header.count)
                ),
            });
        }
        let tail_bytes = segment.bytes.saturating_sub(invalid.position);
        if tail_bytes > MAX_UNSYNCED_BYTES {
            return Err(LogError::Corrupt {
                location,
                detail: format!(
                    "{} and the {tail_bytes} bytes after it are more than one unsynced write could leave: acknowledged records are damaged",
                    invalid.problem
                ),
            });
        }
        tracing::warn!(
            file = %segment.path.display(),
            position = invalid.position,
            cut_bytes = tail_bytes,
            problem = %invalid.problem,
            "cutting the torn tail of the write-ahead log (writes never acknowledged)"
        );
        let file = storage
            .open_write(&segment.path)
            .map_err(io_error(&segment.path))?;
        file.set_len(invalid.position)
            .map_err(io_error(&segment.path))?;
        file.sync_all().map_err(io_error(&segment.path))?;
        segment.bytes = invalid.position;
    }
    if segments.is_empty() {
        let path = segment_path(dir, 0);
        storage.create_new(&path).map_err(io_error(&path))?;
        storage.sync_dir(dir).map_err(io_error(dir))?;
        segments.push(Segment {
            first_offset: 0,
            path,
            bytes: 0,
        });
    }
    Ok(Recovered {
        segments,
        end_offset,
    })
}

/// Reads the frame at the reader's position into `frame` (cleared first) and parses it:
/// `Ok(None)` when the file ends inside it. Reads a payload only after the header
/// checks out, so garbage never makes it read 64 MiB.
fn read_frame(
    reader: &mut impl Read,
    frame: &mut Vec<u8>,
) -> std::io::Result<Result<Option<(FrameHeader, usize)>, FrameError>> {
    frame.clear();
    reader
        .by_ref()
        .take(FRAME_HEADER_BYTES as u64)
        .read_to_end(frame)?;
    match parse_frame(frame) {
        Ok(None) if frame.len() == FRAME_HEADER_BYTES => {}
        other => return Ok(other),
    }
    // The header is complete, its magic and length are sound: read the payload.
    let payload_len = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    reader
        .by_ref()
        .take(u64::from(payload_len))
        .read_to_end(frame)?;
    Ok(parse_frame(frame))
}

/// Checks every frame of `segment` in order: CRC, framing, and that offsets continue.
fn walk_segment(storage: &Storage, segment: &Segment) -> Result<Walk, LogError> {
    let file = storage
        .open_read(&segment.path)
        .map_err(io_error(&segment.path))?;
    let mut reader = BufReader::with_capacity(READ_CHUNK_BYTES, file);
    let mut frame = Vec::new();
    let mut position = 0u64;
    let mut next_offset = segment.first_offset;
    loop {
        let parsed = read_frame(&mut reader, &mut frame).map_err(io_error(&segment.path))?;
        let problem = match parsed {
            Ok(Some((header, total))) if header.first_offset == next_offset => {
                position += total as u64;
                next_offset += u64::from(header.count);
                continue;
            }
            Ok(None) if frame.is_empty() => {
                return Ok(Walk {
                    end_offset: next_offset,
                    invalid: None,
                });
            }
            Ok(Some((header, _))) => format!(
                "frame starts at offset {} where {next_offset} was expected",
                header.first_offset
            ),
            Ok(None) => format!("frame is cut short after {} bytes", frame.len()),
            Err(error) => error.to_string(),
        };
        return Ok(Walk {
            end_offset: next_offset,
            invalid: Some(Invalid { position, problem }),
        });
    }
}

/// The first valid frame at byte `from` or later whose records are not below
/// `min_offset`, found by trying every position where the magic appears.
fn find_valid_frame_after(
    storage: &Storage,
    path: &Path,
    from: u64,
    min_offset: u64,
) -> Result<Option<(u64, FrameHeader)>, LogError> {
    let magic = FRAME_MAGIC.to_le_bytes();
    let mut scan = storage.open_read(path).map_err(io_error(path))?;
    let mut probe = storage.open_read(path).map_err(io_error(path))?;
    let mut window = Vec::with_capacity(READ_CHUNK_BYTES + magic.len());
    let mut frame = Vec::new();
    let mut window_start = from;
    loop {
        window.clear();
        // Overlap windows by the magic's length less one, so none is missed at an edge.
        let read = read_at(
            &mut scan,
            window_start,
            READ_CHUNK_BYTES + magic.len() - 1,
            &mut window,
        )
        .map_err(io_error(path))?;
        for (index, candidate) in window.windows(magic.len()).enumerate() {
            if candidate != magic {
                continue;
            }
            let at = window_start + index as u64;
            let parsed = probe
                .seek(SeekFrom::Start(at))
                .and_then(|_| read_frame(&mut probe, &mut frame))
                .map_err(io_error(path))?;
            if let Ok(Some((header, _))) = parsed {
                if header.first_offset >= min_offset {
                    return Ok(Some((at, header)));
                }
            }
        }
        if read < READ_CHUNK_BYTES + magic.len() - 1 {
            return Ok(None);
        }
        window_start += READ_CHUNK_BYTES as u64;
    }
}
