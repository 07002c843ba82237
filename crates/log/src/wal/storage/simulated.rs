//! A simulated disk that loses what was not synced, for tests.
//!
//! It keeps, per file, the bytes written and the bytes synced, and per directory the
//! entries made and the entries synced (a directory's own entry lives in its parent).
//! A power loss, at a chosen operation or when a test asks, takes an image of what a
//! real disk may hold afterwards and fails every later operation of this disk: only
//! synced directory entries survive, a file keeps its synced bytes, and the bytes
//! appended after its last sync are, at random, dropped, kept in part, or turned into
//! zeros in part (size updated, data not). The image is a disk of its own, which the
//! test opens the WAL on again. A test can also make the n-th operation of a kind fail
//! without effect, as a full or failing disk does.
//!
//! Every operation takes one lock: a power loss falls between two operations, never
//! inside one.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The operations that change the disk; a power loss or an injected fault lands on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    CreateDir,
    CreateFile,
    Write,
    SyncFile,
    SyncDir,
    SetLen,
    Remove,
}

pub(crate) struct SimulatedDisk {
    state: Mutex<State>,
}

struct State {
    root: PathBuf,
    dirs: HashMap<PathBuf, Dir>,
    /// Every file ever made, by number; a removed file's bytes stay, since a power
    /// loss may bring its entry back.
    inodes: Vec<Inode>,
    /// Picks what survives of unsynced bytes.
    random: StdRng,
    /// Changing operations done so far.
    operations: u64,
    /// The power goes off instead of the operation after this many.
    power_loss_after: Option<u64>,
    /// What the disk holds after the power loss; once set, every operation fails.
    after_power_loss: Option<Arc<SimulatedDisk>>,
    /// Injected faults: the operation kind and how many of that kind are left to
    /// pass before one fails.
    faults: Vec<(Op, u64)>,
}

#[derive(Default, Clone)]
struct Dir {
    entries: BTreeMap<OsString, Entry>,
    /// The entries as of the last sync of this directory.
    synced: BTreeMap<OsString, Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(usize),
    Dir,
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} does not exist", path.display()),
    )
}

fn split(path: &Path) -> io::Result<(&Path, OsString)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name.to_os_string())),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent", path.display()),
        )),
    }
}

impl SimulatedDisk {
    /// An empty disk holding only `root`, durably; `seed` decides what survives of
    /// unsynced bytes.
    pub(crate) fn new(root: &Path, seed: u64) -> Arc<SimulatedDisk> {
        Arc::new(SimulatedDisk {
            state: Mutex::new(State::new(root, seed)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The power goes off instead of the changing operation after the next
    /// `operations` ones.
    pub(crate) fn lose_power_after(&self, operations: u64) {
        let mut state = self.lock();
        state.power_loss_after = Some(state.operations + operations);
    }

    /// Whether the power went off.
    pub(crate) fn power_lost(&self) -> bool {
        self.lock().after_power_loss.is_some()
    }

    /// Turns the power off now, unless it is off already, and returns the disk as it
    /// is after the loss.
    pub(crate) fn lose_power(&self) -> Arc<SimulatedDisk> {
        self.lock().lose_power()
    }

    /// What a power loss now would leave, as a disk of its own; this one goes on.
    pub(crate) fn copy(&self) -> Arc<SimulatedDisk> {
        Arc::new(SimulatedDisk {
            state: Mutex::new(self.lock().image()),
        })
    }

    /// Makes the `nth` (from 1) next operation of kind `op` fail, without effect.
    pub(crate) fn fail(&self, op: Op, nth: u64) {
        self.lock().faults.push((op, nth.max(1)));
    }

    pub(crate) fn dir_exists(&self, dir: &Path) -> bool {
        let state = self.lock();
        state.after_power_loss.is_none() && state.dirs.contains_key(dir)
    }

    pub(crate) fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let (parent, name) = split(dir)?;
        if !state.dirs.contains_key(parent) {
            return Err(not_found(parent));
        }
        if state.dirs.contains_key(dir) || state.entry(parent, &name).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", dir.display()),
            ));
        }
        state.begin(Op::CreateDir)?;
        state.dirs.insert(dir.to_path_buf(), Dir::default());
        state.dir_mut(parent)?.entries.insert(name, Entry::Dir);
        Ok(())
    }

    pub(crate) fn list(&self, dir: &Path) -> io::Result<Vec<super::ListedFile>> {
        let state = self.lock();
        state.alive()?;
        let found = state.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        Ok(found
            .entries
            .iter()
            .filter_map(|(name, entry)| match entry {
                Entry::File(inode) => Some(super::ListedFile {
                    name: name.clone(),
                    bytes: state.inodes[*inode].data.len() as u64,
                }),
                Entry::Dir => None,
            })
            .collect())
    }

    /// Opens `path`, or with `create_new` makes it, failing if it exists.
    pub(crate) fn open(
        self: &Arc<Self>,
        path: &Path,
        create_new: bool,
    ) -> io::Result<SimulatedFile> {
        let mut state = self.lock();
        state.alive()?;
        let (parent, name) = split(path)?;
        if !state.dirs.contains_key(parent) {
            return Err(not_found(parent));
        }
        let inode = match (state.entry(parent, &name), create_new) {
            (Some(Entry::File(inode)), false) => inode,
            (None, true) => {
                state.begin(Op::CreateFile)?;
                let inode = state.inodes.len();
                state.inodes.push(Inode::default());
                state
                    .dir_mut(parent)?
                    .entries
                    .insert(name, Entry::File(inode));
                inode
            }
            (Some(_), true) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ))
            }
            (Some(Entry::Dir), false) | (None, false) => return Err(not_found(path)),
        };
        Ok(SimulatedFile {
            disk: Arc::clone(self),
            inode,
            position: 0,
        })
    }

    pub(crate) fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.alive()?;
        let (parent, name) = split(path)?;
        if !matches!(state.entry(parent, &name), Some(Entry::File(_))) {
            return Err(not_found(path));
        }
        state.begin(Op::Remove)?;
        state.dir_mut(parent)?.entries.remove(&name);
        Ok(())
    }

    pub(crate) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.alive()?;
        if !state.dirs.contains_key(dir) {
            return Err(not_found(dir));
        }
        state.begin(Op::SyncDir)?;
        let found = state.dir_mut(dir)?;
        found.synced = found.entries.clone();
        Ok(())
    }
}

impl State {
    fn new(root: &Path, seed: u64) -> State {
        let mut dirs = HashMap::new();
        dirs.insert(root.to_path_buf(), Dir::default());
        State {
            root: root.to_path_buf(),
            dirs,
            inodes: Vec::new(),
            random: StdRng::seed_from_u64(seed),
            operations: 0,
            power_loss_after: None,
            after_power_loss: None,
            faults: Vec::new(),
        }
    }

    fn alive(&self) -> io::Result<()> {
        match self.after_power_loss {
            Some(_) => Err(power_lost()),
            None => Ok(()),
        }
    }

    /// Counts a changing operation about to happen, or fails it: after a power loss,
    /// at the power loss, or by an injected fault.
    fn begin(&mut self, op: Op) -> io::Result<()> {
        self.alive()?;
        if self
            .power_loss_after
            .is_some_and(|after| self.operations >= after)
        {
            self.lose_power();
            return Err(power_lost());
        }
        self.operations += 1;
        if let Some(index) = self.faults.iter().position(|(kind, _)| *kind == op) {
            self.faults[index].1 -= 1;
            if self.faults[index].1 == 0 {
                self.faults.remove(index);
                return Err(io::Error::other(format!("injected fault: {op:?}")));
            }
        }
        Ok(())
    }

    fn entry(&self, parent: &Path, name: &OsString) -> Option<Entry> {
        self.dirs.get(parent)?.entries.get(name).copied()
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }

    fn lose_power(&mut self) -> Arc<SimulatedDisk> {
        if let Some(after) = &self.after_power_loss {
            return Arc::clone(after);
        }
        let after = Arc::new(SimulatedDisk {
            state: Mutex::new(self.image()),
        });
        self.after_power_loss = Some(Arc::clone(&after));
        after
    }

    /// What survives a power loss now.
    fn image(&mut self) -> State {
        let seed = self.random.random();
        let mut image = State::new(&self.root, seed);
        let root = self.root.clone();
        self.copy_durable(&root, &mut image);
        image
    }

    /// Copies into `image` what survives of `dir`: its synced entries, each file with
    /// what survives of its bytes.
    fn copy_durable(&mut self, dir: &Path, image: &mut State) {
        let synced = self.dirs.get(dir).map(|found| found.synced.clone());
        for (name, entry) in synced.unwrap_or_default() {
            let copied = match entry {
                Entry::File(inode) => {
                    let bytes = self.surviving_bytes(inode);
                    image.inodes.push(Inode {
                        data: bytes.clone(),
                        synced: bytes,
                    });
                    Entry::File(image.inodes.len() - 1)
                }
                Entry::Dir => {
                    let child = dir.join(&name);
                    image.dirs.insert(child.clone(), Dir::default());
                    self.copy_durable(&child, image);
                    Entry::Dir
                }
            };
            if let Some(copy) = image.dirs.get_mut(dir) {
                copy.entries.insert(name.clone(), copied);
                copy.synced.insert(name, copied);
            }
        }
    }

    /// A file's synced bytes, plus, when bytes were appended after them, a random part
    /// of those: none, a prefix, or a prefix's length of zeros.
    fn surviving_bytes(&mut self, inode: usize) -> Vec<u8> {
        let Inode { data, synced } = &self.inodes[inode];
        let mut kept = synced.clone();
        let Some(unsynced) = data.strip_prefix(synced.as_slice()) else {
            // Cut or rewritten since the last sync: the synced bytes stand.
            return kept;
        };
        if unsynced.is_empty() {
            return kept;
        }
        let length = self.random.random_range(0..=unsynced.len());
        match self.random.random_range(0..4u8) {
            0 | 1 => {}
            2 => kept.extend_from_slice(&unsynced[..length]),
            _ => kept.resize(kept.len() + length, 0),
        }
        kept
    }
}

/// An open file of a [`SimulatedDisk`].
pub(crate) struct SimulatedFile {
    disk: Arc<SimulatedDisk>,
    inode: usize,
    position: u64,
}

impl SimulatedFile {
    pub(crate) fn sync(&self) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.begin(Op::SyncFile)?;
        let inode = &mut state.inodes[self.inode];
        inode.synced = inode.data.clone();
        Ok(())
    }

    pub(crate) fn set_len(&self, bytes: u64) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.begin(Op::SetLen)?;
        let length = usize::try_from(bytes).map_err(io::Error::other)?;
        state.inodes[self.inode].data.resize(length, 0);
        Ok(())
    }
}

impl Read for SimulatedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let state = self.disk.lock();
        state.alive()?;
        let data = &state.inodes[self.inode].data;
        let start = usize::try_from(self.position)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let length = buf.len().min(data.len() - start);
        buf[..length].copy_from_slice(&data[start..start + length]);
        self.position += length as u64;
        Ok(length)
    }
}

impl Write for SimulatedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.disk.lock();
        state.begin(Op::Write)?;
        let start = usize::try_from(self.position).map_err(io::Error::other)?;
        let data = &mut state.inodes[self.inode].data;
        if data.len() < start + buf.len() {
            data.resize(start + buf.len(), 0);
        }
        data[start..start + buf.len()].copy_from_slice(buf);
        self.position += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SimulatedFile {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        let length = {
            let state = self.disk.lock();
            state.alive()?;
            state.inodes[self.inode].data.len() as u64
        };
        let target = match position {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => length.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.position)
    }
}
