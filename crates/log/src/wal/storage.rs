//! The file operations of the WAL, behind one seam: the real file system, and in tests
//! a simulated disk that loses at a power loss whatever was not synced
//! (`storage/simulated.rs`).
//!
//! Only what the WAL does is here: create its directory, list, open, create and remove
//! segment files, write, read, cut, sync a file's data and a directory's entries. The
//! engines are enum variants, not a trait object: the real path pays one `match` per
//! call (a write per group, a read per chunk), and builds without tests have one
//! variant, so the calls are direct.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::segment::io_error;
use crate::LogError;

#[cfg(test)]
pub(super) mod simulated;

/// Where the WAL's files live.
pub(super) enum Storage {
    /// The real file system.
    Disk,
    /// A simulated disk whose unsynced writes a test can lose.
    #[cfg(test)]
    Simulated(std::sync::Arc<simulated::SimulatedDisk>),
}

/// A file in a listed directory and its size.
pub(super) struct ListedFile {
    pub name: OsString,
    pub bytes: u64,
}

impl Storage {
    /// Creates `dir` and any missing parent, then syncs the parent of every level it
    /// created, and `dir`'s own parent in any case: a segment synced in a directory
    /// whose entry is not is lost with it at a power loss. The unconditional sync
    /// covers a directory made by an earlier run that stopped before syncing it.
    pub(super) fn create_dir_durably(&self, dir: &Path) -> Result<(), LogError> {
        let mut missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|level| !level.as_os_str().is_empty() && !self.dir_exists(level))
            .collect();
        for level in missing.iter().rev() {
            match self.create_dir(level) {
                Ok(()) => {}
                // Made meanwhile by someone else: just as good.
                Err(error)
                    if error.kind() == io::ErrorKind::AlreadyExists && self.dir_exists(level) => {}
                Err(error) => return Err(io_error(level)(error)),
            }
        }
        if missing.is_empty() {
            missing.push(dir);
        }
        for level in missing.iter().rev() {
            let parent = level
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            self.sync_dir(parent).map_err(io_error(parent))?;
        }
        Ok(())
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        match self {
            Storage::Disk => dir.is_dir(),
            #[cfg(test)]
            Storage::Simulated(disk) => disk.dir_exists(dir),
        }
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        match self {
            Storage::Disk => std::fs::create_dir(dir),
            #[cfg(test)]
            Storage::Simulated(disk) => disk.create_dir(dir),
        }
    }

    /// The files in `dir` with their sizes, in no particular order.
    pub(super) fn list(&self, dir: &Path) -> io::Result<Vec<ListedFile>> {
        match self {
            Storage::Disk => {
                let mut files = Vec::new();
                for entry in std::fs::read_dir(dir)? {
                    let entry = entry?;
                    let metadata = entry.metadata()?;
                    if metadata.is_file() {
                        files.push(ListedFile {
                            name: entry.file_name(),
                            bytes: metadata.len(),
                        });
                    }
                }
                Ok(files)
            }
            #[cfg(test)]
            Storage::Simulated(disk) => disk.list(dir),
        }
    }

    /// Opens an existing file for reading.
    pub(super) fn open_read(&self, path: &Path) -> io::Result<SegmentFile> {
        match self {
            Storage::Disk => File::open(path).map(SegmentFile::Disk),
            #[cfg(test)]
            Storage::Simulated(disk) => disk.open(path, false).map(SegmentFile::Simulated),
        }
    }

    /// Opens an existing file for writing, at its start.
    pub(super) fn open_write(&self, path: &Path) -> io::Result<SegmentFile> {
        match self {
            Storage::Disk => OpenOptions::new()
                .write(true)
                .open(path)
                .map(SegmentFile::Disk),
            #[cfg(test)]
            Storage::Simulated(disk) => disk.open(path, false).map(SegmentFile::Simulated),
        }
    }

    /// Creates a file that must not exist yet, for writing. Its entry is durable only
    /// after [`Storage::sync_dir`] of its directory.
    pub(super) fn create_new(&self, path: &Path) -> io::Result<SegmentFile> {
        match self {
            Storage::Disk => OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(path)
                .map(SegmentFile::Disk),
            #[cfg(test)]
            Storage::Simulated(disk) => disk.open(path, true).map(SegmentFile::Simulated),
        }
    }

    /// Removes a file; durable only after [`Storage::sync_dir`] of its directory.
    pub(super) fn remove(&self, path: &Path) -> io::Result<()> {
        match self {
            Storage::Disk => std::fs::remove_file(path),
            #[cfg(test)]
            Storage::Simulated(disk) => disk.remove(path),
        }
    }

    /// Makes creations and removals of entries in `dir` durable.
    pub(super) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        match self {
            Storage::Disk => File::open(dir).and_then(|handle| handle.sync_all()),
            #[cfg(test)]
            Storage::Simulated(disk) => disk.sync_dir(dir),
        }
    }
}

/// An open segment file.
pub(super) enum SegmentFile {
    Disk(File),
    #[cfg(test)]
    Simulated(simulated::SimulatedFile),
}

impl SegmentFile {
    /// `fdatasync`: the bytes written so far survive a power loss (the file's entry
    /// in its directory is [`Storage::sync_dir`]'s business).
    pub(super) fn sync_data(&self) -> io::Result<()> {
        match self {
            SegmentFile::Disk(file) => file.sync_data(),
            #[cfg(test)]
            SegmentFile::Simulated(file) => file.sync(),
        }
    }

    /// `fsync`: data and size, as after a cut.
    pub(super) fn sync_all(&self) -> io::Result<()> {
        match self {
            SegmentFile::Disk(file) => file.sync_all(),
            #[cfg(test)]
            SegmentFile::Simulated(file) => file.sync(),
        }
    }

    /// Cuts (or zero-extends) the file to `bytes`.
    pub(super) fn set_len(&self, bytes: u64) -> io::Result<()> {
        match self {
            SegmentFile::Disk(file) => file.set_len(bytes),
            #[cfg(test)]
            SegmentFile::Simulated(file) => file.set_len(bytes),
        }
    }
}

impl Read for SegmentFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SegmentFile::Disk(file) => file.read(buf),
            #[cfg(test)]
            SegmentFile::Simulated(file) => file.read(buf),
        }
    }
}

impl Write for SegmentFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SegmentFile::Disk(file) => file.write(buf),
            #[cfg(test)]
            SegmentFile::Simulated(file) => file.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            SegmentFile::Disk(file) => file.write_all(buf),
            #[cfg(test)]
            SegmentFile::Simulated(file) => file.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            SegmentFile::Disk(file) => file.flush(),
            #[cfg(test)]
            SegmentFile::Simulated(file) => file.flush(),
        }
    }
}

impl Seek for SegmentFile {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        match self {
            SegmentFile::Disk(file) => file.seek(position),
            #[cfg(test)]
            SegmentFile::Simulated(file) => file.seek(position),
        }
    }
}
