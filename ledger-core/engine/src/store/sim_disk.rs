//! A simulated disk for power-loss and fault tests of the embedded store (compiled in
//! tests and with the feature `sim`). In memory, per file: the durable bytes, the bytes
//! a reader sees now (the page cache), and the changes since the file's last sync; per
//! directory: the durable entries, the current ones, and the entry changes since the
//! directory's last sync. ARCHITECTURE.md ("What we assume about the disk") lists what
//! it may do at a crash and what it never does; in short:
//!
//! - a crash keeps, per file, the durable bytes plus a prefix of the unsynced changes,
//!   and the change after that prefix may be torn: cut at a sector boundary, or any mix
//!   of its 4 KiB pages old / new / zero; per directory, a prefix of the unsynced entry
//!   changes (a created file whose directory was not synced may vanish);
//! - faults, each with a probability in parts per million from a seeded generator: EIO
//!   or ENOSPC on a write (a random prefix of it may have reached the cache), EIO on a
//!   sync (nothing made durable), a bit flipped in what a read returns, a misdirected
//!   write (acknowledged, but its bytes land at another offset of the file);
//! - `power_off_after(n)`: the n-th mutating call from now, and every call after it,
//!   fails with EIO and changes nothing, as if the power went off during it; then
//!   `crash()` chooses what survived;
//! - it never reorders a synced change after an unsynced one, never loses or changes a
//!   synced byte (unless told to, by a read flip or `corrupt`), never tears a change
//!   other than the one after the kept prefix, and keeps directories themselves (only
//!   their entries are volatile).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::disk::{Disk, DiskFile, DiskLock, LockError};

mod torn;
use torn::{page_mix, page_ranges, sector_boundaries, torn_writes};

/// A write may be cut at a multiple of this, counted from the start of the file.
pub const SECTOR_BYTES: u64 = 512;
/// The unit of the page mix of a torn write.
pub const PAGE_BYTES: u64 = 4096;
/// Most crash states [`SimDisk::crash_states`] enumerates before giving up.
pub const CRASH_STATES_MAX: usize = 100_000;
/// Probabilities are in parts of this.
pub const PPM: u32 = 1_000_000;

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// splitmix64: a tiny, seeded, reproducible generator.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `ppm` / [`PPM`].
    pub fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(u64::from(PPM)) < u64::from(ppm)
    }
}

/// Fault probabilities, in parts per million of calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    pub write_eio_ppm: u32,
    pub write_enospc_ppm: u32,
    pub sync_eio_ppm: u32,
    pub read_flip_ppm: u32,
    pub misdirect_ppm: u32,
}

/// What the simulator did, for tests to know which faults happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub write_errors: u64,
    pub sync_errors: u64,
    pub read_flips: u64,
    pub misdirected_writes: u64,
}

#[derive(Clone, Debug)]
enum Change {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

fn apply(content: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Write { offset, bytes } => {
            let start = *offset as usize;
            let end = start + bytes.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[start..end].copy_from_slice(bytes);
        }
        Change::SetLen(len) => content.resize(*len as usize, 0),
    }
}

#[derive(Clone, Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    unsynced: Vec<Change>,
}

impl Inode {
    /// Every content a crash may leave, without duplicates.
    fn outcomes(&self) -> BTreeSet<Vec<u8>> {
        let mut outcomes = BTreeSet::new();
        let mut content = self.durable.clone();
        outcomes.insert(content.clone());
        for change in &self.unsynced {
            if let Change::Write { offset, bytes } = change {
                for torn in torn_writes(&content, *offset, bytes) {
                    outcomes.insert(torn);
                }
            }
            apply(&mut content, change);
            outcomes.insert(content.clone());
        }
        outcomes
    }

    /// One content a crash may leave, chosen by `rng`.
    fn random_outcome(&self, rng: &mut SimRng) -> Vec<u8> {
        let kept = rng.below(self.unsynced.len() as u64 + 1) as usize;
        let mut content = self.durable.clone();
        for change in &self.unsynced[..kept] {
            apply(&mut content, change);
        }
        if let Some(Change::Write { offset, bytes }) = self.unsynced.get(kept) {
            if rng.below(2) == 0 {
                let start = *offset;
                let end = start + bytes.len() as u64;
                if rng.below(2) == 0 {
                    // Cut at a sector boundary inside the write.
                    let boundaries: Vec<u64> = sector_boundaries(start, end).collect();
                    if !boundaries.is_empty() {
                        let cut = boundaries[rng.below(boundaries.len() as u64) as usize];
                        apply(
                            &mut content,
                            &Change::Write { offset: start, bytes: bytes[..(cut - start) as usize].to_vec() },
                        );
                    }
                } else {
                    let pages = page_ranges(start, end);
                    let choices: Vec<u8> = pages.iter().map(|_| rng.below(3) as u8).collect();
                    content = page_mix(&content, start, bytes, &pages, &choices);
                }
            }
        }
        content
    }
}

#[derive(Clone, Debug)]
enum EntryChange {
    Create(String, u64),
    Remove(String),
    /// From, to: one atomic change (`to` is replaced if it exists).
    Rename(String, String),
}

#[derive(Clone, Debug, Default)]
struct Directory {
    durable: BTreeMap<String, u64>,
    current: BTreeMap<String, u64>,
    unsynced: Vec<EntryChange>,
}

fn apply_entry(entries: &mut BTreeMap<String, u64>, change: &EntryChange) {
    match change {
        EntryChange::Create(name, inode) => {
            entries.insert(name.clone(), *inode);
        }
        EntryChange::Remove(name) => {
            entries.remove(name);
        }
        EntryChange::Rename(from, to) => {
            if let Some(inode) = entries.remove(from) {
                entries.insert(to.clone(), inode);
            }
        }
    }
}

impl Directory {
    /// Every set of entries a crash may leave: the durable ones plus a prefix of the changes.
    fn outcomes(&self) -> Vec<BTreeMap<String, u64>> {
        let mut entries = self.durable.clone();
        let mut outcomes = vec![entries.clone()];
        for change in &self.unsynced {
            apply_entry(&mut entries, change);
            outcomes.push(entries.clone());
        }
        outcomes
    }
}

#[derive(Clone, Debug)]
struct State {
    dirs: BTreeMap<PathBuf, Directory>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// Bumped at every crash: handles of an earlier generation belong to a dead process.
    generation: u64,
    locks: BTreeSet<PathBuf>,
    /// Mutating calls left before the power goes off.
    power_off_after: Option<u64>,
    powered_off: bool,
    faults: Faults,
    counts: FaultCounts,
    /// A bit every read of this file at this offset returns flipped (a bad sector).
    read_flips: Vec<(PathBuf, u64, u8)>,
    rng: SimRng,
}

/// Called before every sync with every state a crash then may leave, or why they could
/// not be enumerated (more than [`CRASH_STATES_MAX`]).
pub type SyncHook = Box<dyn FnMut(Result<Vec<SimDisk>, String>) + Send>;

struct Inner {
    state: Mutex<State>,
    /// Called before every sync with every state a crash at that moment may leave.
    sync_hook: Mutex<Option<SyncHook>>,
}

/// The simulated disk. Clones share the same disk.
#[derive(Clone)]
pub struct SimDisk {
    inner: Arc<Inner>,
}

fn error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path without a UTF-8 file name"))?;
    Ok((parent, name.to_string()))
}

impl State {
    fn inode_of(&self, path: &Path) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        self.dirs.get(&parent).and_then(|dir| dir.current.get(&name)).copied().ok_or_else(|| not_found(path))
    }

    /// Counts a mutating call against the power budget; false once the power is off.
    fn powered(&mut self) -> bool {
        if self.powered_off {
            return false;
        }
        match &mut self.power_off_after {
            Some(0) => {
                self.powered_off = true;
                false
            }
            Some(left) => {
                *left -= 1;
                true
            }
            None => true,
        }
    }

    /// What every sync goes through: the power budget, then an injected EIO (nothing
    /// made durable).
    fn sync_allowed(&mut self) -> io::Result<()> {
        if !self.powered() {
            return Err(error(EIO));
        }
        if self.rng.chance(self.faults.sync_eio_ppm) {
            self.counts.sync_errors += 1;
            return Err(error(EIO));
        }
        Ok(())
    }

    fn check_generation(&self, generation: u64) -> io::Result<()> {
        if generation != self.generation || self.powered_off {
            return Err(error(EIO));
        }
        Ok(())
    }

    fn flip_read(&mut self, path: &Path, offset: u64, buffer: &mut [u8]) {
        for (file, at, bit) in &self.read_flips {
            if file == path && *at >= offset && *at < offset + buffer.len() as u64 {
                buffer[(*at - offset) as usize] ^= 1 << bit;
            }
        }
        if !buffer.is_empty() && self.rng.chance(self.faults.read_flip_ppm) {
            let at = self.rng.below(buffer.len() as u64) as usize;
            buffer[at] ^= 1 << self.rng.below(8);
            self.counts.read_flips += 1;
        }
    }

    fn after_crash(&mut self, dirs: BTreeMap<PathBuf, BTreeMap<String, u64>>, contents: BTreeMap<u64, Vec<u8>>) {
        let mut inodes = BTreeMap::new();
        for (path, entries) in dirs {
            for inode in entries.values() {
                let content = contents.get(inode).cloned().unwrap_or_default();
                inodes.insert(*inode, Inode { durable: content.clone(), current: content, unsynced: Vec::new() });
            }
            self.dirs.insert(path, Directory { durable: entries.clone(), current: entries, unsynced: Vec::new() });
        }
        self.inodes = inodes;
        self.generation += 1;
        self.locks.clear();
        self.power_off_after = None;
        self.powered_off = false;
    }
}

fn lock_state(inner: &Inner) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves consistent data: every change is applied whole.
    inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SimDisk {
    /// An empty disk whose choices all come from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        let state = State {
            dirs: BTreeMap::new(),
            inodes: BTreeMap::new(),
            next_inode: 1,
            generation: 0,
            locks: BTreeSet::new(),
            power_off_after: None,
            powered_off: false,
            faults: Faults::default(),
            counts: FaultCounts::default(),
            read_flips: Vec::new(),
            rng: SimRng::new(seed),
        };
        SimDisk { inner: Arc::new(Inner { state: Mutex::new(state), sync_hook: Mutex::new(None) }) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock_state(&self.inner)
    }

    fn from_state(state: State) -> SimDisk {
        SimDisk { inner: Arc::new(Inner { state: Mutex::new(state), sync_hook: Mutex::new(None) }) }
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state().faults = faults;
    }

    pub fn fault_counts(&self) -> FaultCounts {
        self.state().counts
    }

    /// The `calls`-th mutating call from now (0: the next) and every later one fail with
    /// EIO and change nothing, until [`SimDisk::crash`].
    pub fn power_off_after(&self, calls: u64) {
        self.state().power_off_after = Some(calls);
    }

    /// Whether the power is off (after [`SimDisk::power_off_after`], until a crash).
    pub fn powered_off(&self) -> bool {
        self.state().powered_off
    }

    /// Every read of `path` returns the bit `bit` of the byte at `offset` flipped.
    pub fn flip_on_read(&self, path: &Path, offset: u64, bit: u8) {
        self.state().read_flips.push((path.to_path_buf(), offset, bit % 8));
    }

    /// Durable length of `path` (as it would be after a crash keeping nothing unsynced).
    pub fn durable_len(&self, path: &Path) -> Option<u64> {
        let state = self.state();
        let (parent, name) = split(path).ok()?;
        let inode = state.dirs.get(&parent)?.durable.get(&name)?;
        state.inodes.get(inode).map(|inode| inode.durable.len() as u64)
    }

    /// Calls `hook` before every sync with every state a crash at that moment may leave
    /// (see [`SimDisk::crash_states`]); `None` stops it.
    pub fn set_sync_hook(&self, hook: Option<SyncHook>) {
        *self.inner.sync_hook.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = hook;
    }

    /// Power loss: every file keeps its durable bytes plus a random allowed part of its
    /// unsynced changes; every directory its durable entries plus a random prefix of the
    /// unsynced ones. Open handles and locks belong to the dead process.
    pub fn crash(&self) {
        let mut state = self.state();
        let mut rng = state.rng.clone();
        let mut dirs = BTreeMap::new();
        for (path, dir) in &state.dirs {
            let outcomes = dir.outcomes();
            let chosen = outcomes[rng.below(outcomes.len() as u64) as usize].clone();
            dirs.insert(path.clone(), chosen);
        }
        let contents = state.inodes.iter().map(|(id, inode)| (*id, inode.random_outcome(&mut rng))).collect();
        state.rng = rng;
        state.after_crash(dirs, contents);
    }

    /// Every distinct disk a crash now may leave (each a separate disk, no faults set),
    /// or an error when there are more than [`CRASH_STATES_MAX`].
    pub fn crash_states(&self) -> Result<Vec<SimDisk>, String> {
        let state = self.state().clone();
        crash_states_of(&state)
    }
}

fn crash_states_of(state: &State) -> Result<Vec<SimDisk>, String> {
    // Each choice: one directory's entries or one file's content.
    let dir_choices: Vec<(PathBuf, Vec<BTreeMap<String, u64>>)> =
        state.dirs.iter().map(|(path, dir)| (path.clone(), dir.outcomes())).collect();
    let file_choices: Vec<(u64, Vec<Vec<u8>>)> =
        state.inodes.iter().map(|(id, inode)| (*id, inode.outcomes().into_iter().collect())).collect();
    let mut total: usize = 1;
    for count in dir_choices.iter().map(|(_, o)| o.len()).chain(file_choices.iter().map(|(_, o)| o.len())) {
        total = total.saturating_mul(count);
    }
    if total > CRASH_STATES_MAX {
        return Err(format!("{total} crash states, more than {CRASH_STATES_MAX}"));
    }
    let mut seen = BTreeSet::new();
    let mut disks = Vec::new();
    for mut number in 0..total {
        let mut dirs = BTreeMap::new();
        for (path, outcomes) in &dir_choices {
            dirs.insert(path.clone(), outcomes[number % outcomes.len()].clone());
            number /= outcomes.len();
        }
        let mut contents = BTreeMap::new();
        for (id, outcomes) in &file_choices {
            contents.insert(*id, outcomes[number % outcomes.len()].clone());
            number /= outcomes.len();
        }
        // Only what a reader could see counts for telling states apart.
        let visible: Vec<(PathBuf, String, Vec<u8>)> = dirs
            .iter()
            .flat_map(|(path, entries): (&PathBuf, &BTreeMap<String, u64>)| {
                entries
                    .iter()
                    .map(|(name, inode)| (path.clone(), name.clone(), contents.get(inode).cloned().unwrap_or_default()))
            })
            .collect();
        if !seen.insert(visible) {
            continue;
        }
        let mut crashed = state.clone();
        crashed.faults = Faults::default();
        crashed.read_flips.clear();
        crashed.after_crash(dirs, contents);
        disks.push(SimDisk::from_state(crashed));
    }
    Ok(disks)
}

#[derive(Debug)]
struct SimFile {
    inner: Arc<Inner>,
    path: PathBuf,
    inode: u64,
    generation: u64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SimDisk")
    }
}

impl SimFile {
    /// A write of `bytes` at `offset` (`None`: at the end), with the write faults.
    fn write(&self, offset: Option<u64>, bytes: &[u8]) -> io::Result<()> {
        let mut state = lock_state(&self.inner);
        state.check_generation(self.generation)?;
        if !state.powered() {
            return Err(error(EIO));
        }
        let faults = state.faults;
        let failure = if state.rng.chance(faults.write_eio_ppm) {
            Some(EIO)
        } else if state.rng.chance(faults.write_enospc_ppm) {
            Some(ENOSPC)
        } else {
            None
        };
        let misdirect = failure.is_none() && state.rng.chance(faults.misdirect_ppm);
        let kept = match failure {
            Some(_) => state.rng.below(bytes.len() as u64 + 1) as usize,
            None => bytes.len(),
        };
        let offset_shift = 1 + state.rng.below(8);
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| not_found(&self.path))?;
        let offset = offset.unwrap_or(inode.current.len() as u64);
        let mut changes = Vec::new();
        if misdirect {
            // The size grows as asked, but the bytes land elsewhere: before the offset
            // when there is room, else after it.
            let shift = offset_shift * SECTOR_BYTES;
            let target = if offset >= shift { offset - shift } else { offset + shift };
            let end = (offset + bytes.len() as u64).max(inode.current.len() as u64);
            changes.push(Change::SetLen(end));
            changes.push(Change::Write { offset: target, bytes: bytes.to_vec() });
        } else if kept > 0 {
            changes.push(Change::Write { offset, bytes: bytes[..kept].to_vec() });
        }
        for change in changes {
            apply(&mut inode.current, &change);
            inode.unsynced.push(change);
        }
        match failure {
            Some(code) => {
                state.counts.write_errors += 1;
                Err(error(code))
            }
            None => {
                if misdirect {
                    state.counts.misdirected_writes += 1;
                }
                Ok(())
            }
        }
    }

    fn disk(&self) -> SimDisk {
        SimDisk { inner: self.inner.clone() }
    }

    fn sync(&self) -> io::Result<()> {
        let disk = self.disk();
        disk.run_sync_hook();
        let mut state = disk.state();
        state.check_generation(self.generation)?;
        state.sync_allowed()?;
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| not_found(&self.path))?;
        inode.durable = inode.current.clone();
        inode.unsynced.clear();
        Ok(())
    }
}

impl SimDisk {
    fn run_sync_hook(&self) {
        let mut hook = self.inner.sync_hook.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(hook) = hook.as_mut() {
            let state = self.state().clone();
            if state.powered_off {
                return;
            }
            hook(crash_states_of(&state));
        }
    }
}

impl DiskFile for SimFile {
    fn append_all(&self, bytes: &[u8]) -> io::Result<()> {
        self.write(None, bytes)
    }

    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.write(Some(offset), bytes)
    }

    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        let mut state = lock_state(&self.inner);
        state.check_generation(self.generation)?;
        let inode = state.inodes.get(&self.inode).ok_or_else(|| not_found(&self.path))?;
        let start = offset as usize;
        let end = start + buffer.len();
        if end > inode.current.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"));
        }
        buffer.copy_from_slice(&inode.current[start..end]);
        state.flip_read(&self.path, offset, buffer);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = lock_state(&self.inner);
        state.check_generation(self.generation)?;
        if !state.powered() {
            return Err(error(EIO));
        }
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| not_found(&self.path))?;
        let change = Change::SetLen(len);
        apply(&mut inode.current, &change);
        inode.unsynced.push(change);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn file_len(&self) -> io::Result<u64> {
        let state = lock_state(&self.inner);
        state.check_generation(self.generation)?;
        let inode = state.inodes.get(&self.inode).ok_or_else(|| not_found(&self.path))?;
        Ok(inode.current.len() as u64)
    }
}

struct SimLock {
    inner: Arc<Inner>,
    path: PathBuf,
    generation: u64,
}

impl DiskLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = lock_state(&self.inner);
        if state.generation == self.generation {
            state.locks.remove(&self.path);
        }
    }
}

impl SimDisk {
    fn open_file(&self, state: &State, path: &Path, inode: u64) -> Arc<dyn DiskFile> {
        Arc::new(SimFile { inner: self.inner.clone(), path: path.to_path_buf(), inode, generation: state.generation })
    }

    fn create(&self, state: &mut State, path: &Path) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        let id = state.next_inode;
        let dir = state.dirs.get_mut(&parent).ok_or_else(|| not_found(&parent))?;
        if dir.current.contains_key(&name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
        }
        let change = EntryChange::Create(name, id);
        apply_entry(&mut dir.current, &change);
        dir.unsynced.push(change);
        state.next_inode += 1;
        state.inodes.insert(id, Inode::default());
        Ok(id)
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state();
        if state.powered_off {
            return Err(error(EIO));
        }
        let mut path = Some(dir);
        while let Some(at) = path {
            state.dirs.entry(at.to_path_buf()).or_default();
            path = at.parent();
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state();
        if state.powered_off {
            return Err(error(EIO));
        }
        let entries = state.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        Ok(entries.current.keys().cloned().collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut state = self.state();
        if state.powered_off {
            return Err(error(EIO));
        }
        let id = state.inode_of(path)?;
        let mut bytes = state.inodes.get(&id).map(|inode| inode.current.clone()).ok_or_else(|| not_found(path))?;
        state.flip_read(path, 0, &mut bytes);
        Ok(bytes)
    }

    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let state = self.state();
        if state.powered_off {
            return Err(error(EIO));
        }
        let id = state.inode_of(path)?;
        Ok(self.open_file(&state, path, id))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let mut state = self.state();
        if !state.powered() {
            return Err(error(EIO));
        }
        let id = self.create(&mut state, path)?;
        Ok(self.open_file(&state, path, id))
    }

    fn open_read_write(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let mut state = self.state();
        if state.powered_off {
            return Err(error(EIO));
        }
        let id = match state.inode_of(path) {
            Ok(id) => id,
            Err(_) if state.powered() => self.create(&mut state, path)?,
            Err(_) => return Err(error(EIO)),
        };
        Ok(self.open_file(&state, path, id))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.run_sync_hook();
        let mut state = self.state();
        state.sync_allowed()?;
        let entries = state.dirs.get_mut(dir).ok_or_else(|| not_found(dir))?;
        entries.durable = entries.current.clone();
        entries.unsynced.clear();
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        if !state.powered() {
            return Err(error(EIO));
        }
        state.inode_of(path)?;
        let (parent, name) = split(path)?;
        let dir = state.dirs.get_mut(&parent).ok_or_else(|| not_found(&parent))?;
        let change = EntryChange::Remove(name);
        apply_entry(&mut dir.current, &change);
        dir.unsynced.push(change);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        if !state.powered() {
            return Err(error(EIO));
        }
        state.inode_of(from)?;
        let ((parent, from_name), (to_parent, to_name)) = (split(from)?, split(to)?);
        if parent != to_parent {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "rename across directories"));
        }
        let dir = state.dirs.get_mut(&parent).ok_or_else(|| not_found(&parent))?;
        let change = EntryChange::Rename(from_name, to_name);
        apply_entry(&mut dir.current, &change);
        dir.unsynced.push(change);
        Ok(())
    }

    fn lock(&self, path: &Path) -> Result<Box<dyn DiskLock>, LockError> {
        let mut state = self.state();
        if state.powered_off {
            return Err(LockError::Open(error(EIO)));
        }
        if state.inode_of(path).is_err() {
            self.create(&mut state, path).map_err(LockError::Open)?;
        }
        if !state.locks.insert(path.to_path_buf()) {
            return Err(LockError::WouldBlock);
        }
        Ok(Box::new(SimLock { inner: self.inner.clone(), path: path.to_path_buf(), generation: state.generation }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(disk: &SimDisk, dir: &Path) -> Vec<String> {
        disk.list_dir(dir).expect("list")
    }

    #[test]
    fn a_file_whose_directory_was_not_synced_may_vanish_and_synced_bytes_never_do() {
        let disk = SimDisk::new(1);
        let dir = Path::new("/d");
        disk.create_dir_all(dir).expect("dir");
        let file = disk.create_new(&dir.join("a")).expect("create");
        file.append_all(b"durable").expect("write");
        file.sync_all().expect("sync");
        let states = disk.crash_states().expect("states");
        assert!(states.iter().any(|state| names(state, dir).is_empty()), "the unsynced entry may vanish");
        assert!(states.iter().any(|state| names(state, dir) == ["a"]));
        disk.sync_dir(dir).expect("sync dir");
        file.append_all(b" and more").expect("write");
        for state in disk.crash_states().expect("states") {
            let bytes = state.read(&dir.join("a")).expect("the synced entry stays");
            assert!(bytes.starts_with(b"durable"), "synced bytes are never lost: {bytes:?}");
        }
    }

    #[test]
    fn a_torn_write_is_cut_at_sectors_or_mixes_its_pages_and_only_the_last_one_tears() {
        let disk = SimDisk::new(2);
        let dir = Path::new("/d");
        disk.create_dir_all(dir).expect("dir");
        let file = disk.create_new(&dir.join("a")).expect("create");
        disk.sync_dir(dir).expect("sync dir");
        file.append_all(&[1u8; 100]).expect("first write");
        file.append_all(&[2u8; 5000]).expect("second write");
        let contents: BTreeSet<Vec<u8>> = disk
            .crash_states()
            .expect("states")
            .iter()
            .map(|state| state.read(&dir.join("a")).expect("read"))
            .collect();
        // Prefixes: nothing, the first write, torn forms of the first, torn forms of the second.
        assert!(contents.contains(&Vec::new()));
        assert!(contents.contains(&vec![1u8; 100]));
        assert!(contents.iter().any(|c| c.len() == 512 && c[100..].iter().all(|b| *b == 2)), "cut at a sector");
        assert!(
            contents
                .iter()
                .any(|c| c.len() == 5100 && c[100..4096].iter().all(|b| *b == 0) && c[4096..].iter().all(|b| *b == 2)),
            "first page of the second write zeros, second page new"
        );
        for content in &contents {
            if content.len() > 100 {
                assert_eq!(content[..100], [1u8; 100], "a write after another keeps the earlier one whole");
            }
        }
    }

    #[test]
    fn power_off_stops_every_later_call() {
        let disk = SimDisk::new(3);
        let dir = Path::new("/d");
        disk.create_dir_all(dir).expect("dir");
        let file = disk.create_new(&dir.join("a")).expect("create");
        disk.power_off_after(1);
        file.append_all(b"x").expect("before the power goes off");
        assert!(file.sync_data().is_err());
        assert!(file.append_all(b"y").is_err());
        disk.crash();
        assert!(file.file_len().is_err(), "handles of the dead process are gone");
    }
}
