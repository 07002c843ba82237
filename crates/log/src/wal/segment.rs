//! Segment files: names, listing, positional reads.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::storage::{SegmentFile, Storage};
use crate::LogError;

/// Suffix of segment file names.
const SEGMENT_SUFFIX: &str = ".wal";
/// Digits of the first offset in a segment's name (`u64::MAX` has 20).
const NAME_DIGITS: usize = 20;

/// One live segment file.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    /// Offset of its first record (also its name).
    pub first_offset: u64,
    pub path: PathBuf,
    /// Bytes of complete frames in it.
    pub bytes: u64,
}

pub(super) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub(super) fn segment_path(dir: &Path, first_offset: u64) -> PathBuf {
    dir.join(format!("{first_offset:020}{SEGMENT_SUFFIX}"))
}

/// The first offset a segment file name stands for; `None` for other files.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `dir`, in offset order, with their sizes on disk.
pub(super) fn list_segments(storage: &Storage, dir: &Path) -> Result<Vec<Segment>, LogError> {
    let mut segments = Vec::new();
    for file in storage.list(dir).map_err(io_error(dir))? {
        let Some(first_offset) = file.name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        segments.push(Segment {
            first_offset,
            path: dir.join(&file.name),
            bytes: file.bytes,
        });
    }
    segments.sort_by_key(|segment| segment.first_offset);
    Ok(segments)
}

/// Appends to `out` up to `length` bytes of `file` from byte `position` (fewer at the
/// end of the file); returns how many.
pub(super) fn read_at(
    file: &mut SegmentFile,
    position: u64,
    length: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    file.seek(SeekFrom::Start(position))?;
    file.by_ref().take(length as u64).read_to_end(out)
}
