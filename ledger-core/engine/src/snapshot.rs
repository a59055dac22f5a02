//! Snapshots of a partition's state, so start-up replays only the tail of the log.
//!
//! A snapshot file is `ledger-{partition}-{events:020}.snap`:
//! `"LEDGSNP2" | u64 events | [32] chain hash of the last event | [32] blake3(body) |
//! u64 body length | body (bincode 2 of LedgerState)`. It is trusted only if its body
//! checksum holds and the log has the same chain hash at the same revision; otherwise
//! it is discarded and an older one (or a full replay) is used.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::store::disk::Disk;
use crate::store::embedded::hash_at;
use crate::store::EventStore;
use crate::writer::LedgerError;
use ledger_core::chain::Hash;
use ledger_core::state::LedgerState;

/// Version 3: transfers carry the revisions that made and last changed them (version 2:
/// a resolved hold names the transfer that posted or voided it). A snapshot
/// of another version is discarded like a damaged one: the state is replayed from the
/// log, which holds everything a snapshot does.
const MAGIC: &[u8; 8] = b"LEDGSNP3";
const HEADER_BYTES: usize = 8 + 8 + 32 + 32 + 8;
/// Most bytes a snapshot's decoder may allocate up front for its strings, all told (the
/// transfers' metadata, at most 256 bytes each): a length prefix beyond it is an error,
/// never an allocation of that size (found by the snapshot fuzz target: a body whose
/// checksum holds but whose string length is 2^60 aborted the process).
const DECODE_CLAIM_BYTES_MAX: usize = 8 << 30;
/// Snapshots kept per partition; older ones are removed.
const SNAPSHOTS_KEPT: usize = 2;
/// The name a snapshot has while it is written.
const TEMPORARY_SUFFIX: &str = ".snap.tmp";

fn file_name(stream: &str, events: u64) -> String {
    format!("{stream}-{events:020}.snap")
}

/// A state waiting for its last event to become durable, to be serialized.
pub struct PendingSnapshot {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    stream: String,
    events: u64,
    /// A clone that shares its large parts with the writer's state (see
    /// `collections`): taking it costs the writer almost nothing; it is serialized on
    /// the snapshot thread.
    state: LedgerState,
    /// Held until the snapshot is written or given up.
    _in_progress: InProgress,
    /// The slot that will own the thread writing this snapshot.
    slot: SnapshotSlot,
}

/// One snapshot at a time per writer: while one is being written, no other is taken
/// (each holds a clone of the state whose parts the writer then copies as it writes).
/// The slot also owns the thread that writes it, so the writer joins it when it stops:
/// no snapshot thread outlives its ledger (one that did could re-create a directory
/// its owner had just removed).
#[derive(Clone, Default)]
pub struct SnapshotSlot {
    busy: Arc<AtomicBool>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

struct InProgress(Arc<AtomicBool>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl SnapshotSlot {
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// Waits for the snapshot thread started last, if any, to end.
    pub fn join(&self) {
        let handle = self.thread().take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                // A panic is an abort in release builds (`panic = "abort"`); in tests
                // it is reported by the panicking thread itself.
                tracing::error!("the snapshot thread panicked");
            }
        }
    }

    fn own(&self, handle: JoinHandle<()>) {
        // The previous thread has released the slot (it was free when this snapshot was
        // captured), so it has at most its last instructions left: join it here.
        self.join();
        *self.thread() = Some(handle);
    }

    /// The slot's thread handle. The lock guards one `Option` that no panic can leave
    /// half-written, so a poisoned lock is taken as it is.
    fn thread(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl PendingSnapshot {
    /// Captures `state`, or `None` if `slot` still has a snapshot in progress.
    pub fn capture(
        disk: Arc<dyn Disk>,
        dir: PathBuf,
        stream: &str,
        state: &LedgerState,
        slot: &SnapshotSlot,
    ) -> Option<PendingSnapshot> {
        if slot.busy.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(PendingSnapshot {
            disk,
            dir,
            stream: stream.to_string(),
            events: state.events_applied(),
            state: state.clone(),
            _in_progress: InProgress(slot.busy.clone()),
            slot: slot.clone(),
        })
    }

    /// Writes the file from another thread owned by its slot, on idle CPU only
    /// (`SCHED_IDLE`: under load its serialization would otherwise take a core from the
    /// write path); a failure only costs a longer replay.
    pub fn write_in_background(self, last_hash: Hash) {
        let slot = self.slot.clone();
        let spawned = std::thread::Builder::new().name("snapshot".into()).spawn(move || {
            if let Err(error) = crate::threads::lower_current_thread_priority() {
                tracing::debug!(%error, "snapshot thread keeps its priority");
            }
            if let Err(error) = self.write(last_hash) {
                tracing::warn!(%error, "snapshot not written");
            }
        });
        match spawned {
            Ok(handle) => slot.own(handle),
            Err(error) => tracing::warn!(%error, "snapshot thread not started"),
        }
    }

    /// Writes the file on the calling thread (the simulator's choice: its runs must not
    /// depend on thread timing); a failure only costs a longer replay.
    pub fn write_now(self, last_hash: Hash) {
        if let Err(error) = self.write(last_hash) {
            tracing::warn!(%error, "snapshot not written");
        }
    }

    fn write(self, last_hash: Hash) -> std::io::Result<()> {
        let body = bincode::serde::encode_to_vec(&self.state, bincode::config::standard())
            .map_err(|e| std::io::Error::other(format!("state did not serialize: {e}")))?;
        drop(self.state);
        // The directory is made when the ledger opens; if it is gone now, its owner
        // removed it, and the snapshot is not wanted.
        let name = file_name(&self.stream, self.events);
        let temporary = self.dir.join(format!("{name}{TEMPORARY_SUFFIX}"));
        let disk = self.disk.as_ref();
        let written = write_file(disk, &temporary, self.events, last_hash, &body);
        if written.is_err() {
            let _ = disk.remove_file(&temporary);
        }
        written?;
        disk.rename(&temporary, &self.dir.join(&name))?;
        disk.sync_dir(&self.dir)?;
        let mut existing = list(disk, &self.dir, &self.stream);
        existing.sort();
        let excess = existing.len().saturating_sub(SNAPSHOTS_KEPT);
        for (_, path) in existing.into_iter().take(excess) {
            let _ = disk.remove_file(&path);
        }
        tracing::info!(events = self.events, file = name, "snapshot written");
        Ok(())
    }
}

fn write_file(disk: &dyn Disk, path: &Path, events: u64, last_hash: Hash, body: &[u8]) -> std::io::Result<()> {
    let file = disk.create_new(path)?;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&events.to_le_bytes());
    header.extend_from_slice(&last_hash);
    header.extend_from_slice(blake3::hash(body).as_bytes());
    header.extend_from_slice(&(body.len() as u64).to_le_bytes());
    file.append_all(&header)?;
    file.append_all(body)?;
    file.sync_all()
}

/// Makes the snapshot directory of `stream` ready: creates it, and removes the
/// temporary files of snapshots a crash or a stop interrupted (a snapshot is renamed to
/// its final name only once written and synced, so a temporary file is never needed).
pub fn prepare_dir(disk: &dyn Disk, dir: &Path, stream: &str) -> std::io::Result<()> {
    disk.create_dir_all(dir)?;
    let prefix = format!("{stream}-");
    for name in disk.list_dir(dir)? {
        if name.starts_with(&prefix) && name.ends_with(TEMPORARY_SUFFIX) {
            disk.remove_file(&dir.join(&name))?;
            tracing::info!(file = name, "unfinished snapshot removed");
        }
    }
    Ok(())
}

fn list(disk: &dyn Disk, dir: &Path, stream: &str) -> Vec<(u64, PathBuf)> {
    let prefix = format!("{stream}-");
    // ok: a missing or unreadable directory holds no snapshot to use (the log is replayed).
    let names = disk.list_dir(dir).unwrap_or_default();
    names
        .into_iter()
        .filter_map(|name| {
            let events = name.strip_prefix(&prefix)?.strip_suffix(".snap")?.parse().ok()?;
            Some((events, dir.join(&name)))
        })
        .collect()
}

/// The last revision (events - 1) of every snapshot file in `dir`, by stream: the
/// revisions whose chain hashes an audit needs to check them.
pub fn named_revisions(disk: &dyn Disk, dir: &Path) -> HashMap<String, BTreeSet<u64>> {
    let mut named: HashMap<String, BTreeSet<u64>> = HashMap::new();
    // ok: a missing or unreadable directory names no snapshot (and holds none to check).
    for name in disk.list_dir(dir).unwrap_or_default() {
        let Some((stream, events)) = name.strip_suffix(".snap").and_then(|rest| rest.rsplit_once('-')) else {
            continue;
        };
        if let Some(last) = events.parse::<u64>().ok().and_then(|events| events.checked_sub(1)) {
            named.entry(stream.to_string()).or_default().insert(last);
        }
    }
    named
}

/// Loads the newest snapshot of `stream` that matches the log; an error if a sound
/// snapshot proves the log lost events (see `load_newest_matching`).
pub fn load_newest(
    disk: &dyn Disk,
    dir: &Path,
    store: &dyn EventStore,
    stream: &str,
) -> Result<Option<LedgerState>, LedgerError> {
    load_newest_matching(disk, dir, stream, |revision| hash_at(store, stream, revision).map_err(|e| e.to_string()))
        .map_err(|short| LedgerError::LogShorterThanSnapshot { stream: stream.to_string(), reason: short.to_string() })
}

/// A snapshot whose checksum holds, of more events than the log's stream has: it was
/// written only after those events were durable, so the log lost durable events (a
/// truncation at a frame boundary, which the scan cannot tell from a shorter log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("snapshot {} holds {events} events, the log's stream ends before its last one: the log lost durable events", .file.display())]
pub struct LogShorter {
    pub file: PathBuf,
    pub events: u64,
}

/// Why a snapshot is not used.
enum Rejected {
    /// Not a sound snapshot of this log (damaged, another version, another log's
    /// event at its last revision): discarded with a WARN, the log is replayed.
    Discard(String),
    /// Sound, and past the log's end.
    LogShorter,
}

impl From<String> for Rejected {
    fn from(reason: String) -> Rejected {
        Rejected::Discard(reason)
    }
}

impl From<&str> for Rejected {
    fn from(reason: &str) -> Rejected {
        Rejected::Discard(reason.to_string())
    }
}

/// Loads the newest snapshot of `stream` whose last hash equals what `hash_at` says
/// the log holds at that revision. A sound snapshot whose last revision the log does
/// not have is `LogShorter`: never discarded, since it proves the log lost events.
pub fn load_newest_matching(
    disk: &dyn Disk,
    dir: &Path,
    stream: &str,
    hash_at: impl Fn(u64) -> Result<Option<Hash>, String>,
) -> Result<Option<LedgerState>, LogShorter> {
    let mut snapshots = list(disk, dir, stream);
    snapshots.sort();
    for (events, path) in snapshots.into_iter().rev() {
        match load(disk, &path, events, &hash_at) {
            Ok(state) => {
                tracing::info!(file = %path.display(), events, "snapshot loaded");
                return Ok(Some(state));
            }
            Err(Rejected::Discard(reason)) => tracing::warn!(file = %path.display(), reason, "snapshot discarded"),
            Err(Rejected::LogShorter) => return Err(LogShorter { file: path, events }),
        }
    }
    Ok(None)
}

/// A sound snapshot's header and body: its checksum and lengths hold.
fn read_sound(disk: &dyn Disk, path: &Path, events: u64) -> Result<(Hash, Vec<u8>), String> {
    let bytes = disk.read(path).map_err(|e| e.to_string())?;
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err("not a snapshot of this version".into());
    }
    let header_events = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| "header")?);
    let last_hash: Hash = bytes[16..48].try_into().map_err(|_| "header")?;
    let checksum: Hash = bytes[48..80].try_into().map_err(|_| "header")?;
    let body_len = u64::from_le_bytes(bytes[80..88].try_into().map_err(|_| "header")?) as usize;
    let body = &bytes[HEADER_BYTES..];
    if header_events != events || events == 0 || body.len() != body_len || *blake3::hash(body).as_bytes() != checksum {
        return Err("checksum or length mismatch".into());
    }
    Ok((last_hash, body.to_vec()))
}

fn load(
    disk: &dyn Disk,
    path: &Path,
    events: u64,
    hash_at: &impl Fn(u64) -> Result<Option<Hash>, String>,
) -> Result<LedgerState, Rejected> {
    let (last_hash, body) = read_sound(disk, path, events)?;
    match hash_at(events - 1)? {
        Some(hash) if hash == last_hash => {}
        Some(_) => return Err("the log has another event at this snapshot's last revision".into()),
        None => return Err(Rejected::LogShorter),
    }
    let (state, _): (LedgerState, usize) =
        bincode::serde::decode_from_slice(&body, bincode::config::standard().with_limit::<DECODE_CLAIM_BYTES_MAX>())
            .map_err(|e| e.to_string())?;
    if state.events_applied() != events {
        return Err("state does not match its header".into());
    }
    Ok(state)
}

/// What the audit finds wrong with a sound snapshot (its checksum holds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotMismatch {
    #[error(transparent)]
    LogShorter(#[from] LogShorter),
    /// The log has another event at the snapshot's last revision: a history rewritten
    /// after the snapshot was taken (or another log's snapshot put here).
    #[error("snapshot {} is sound but the log has another event at its last revision {}", .file.display(), .events - 1)]
    OtherHistory { file: PathBuf, events: u64 },
}

/// The audit's check of every sound snapshot of `stream` against the log (`hash_at`):
/// the server skips a snapshot that does not match, the audit fails on it. A snapshot
/// whose checksum does not hold is damaged, not evidence, and is not checked. Returns
/// the number of sound snapshots checked.
pub fn check_sound(
    disk: &dyn Disk,
    dir: &Path,
    stream: &str,
    hash_at: impl Fn(u64) -> Option<Hash>,
) -> Result<usize, SnapshotMismatch> {
    let mut checked = 0;
    for (events, path) in list(disk, dir, stream) {
        let Ok((last_hash, _)) = read_sound(disk, &path, events) else { continue };
        match hash_at(events - 1) {
            Some(hash) if hash == last_hash => checked += 1,
            Some(_) => return Err(SnapshotMismatch::OtherHistory { file: path, events }),
            None => return Err(LogShorter { file: path, events }.into()),
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::disk::RealDisk;
    use std::fs;

    fn real() -> Arc<dyn Disk> {
        Arc::new(RealDisk)
    }

    #[test]
    fn one_snapshot_at_a_time_until_it_is_written_or_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slot = SnapshotSlot::default();
        let state = LedgerState::default();
        let first = PendingSnapshot::capture(real(), dir.path().into(), "ledger-0", &state, &slot).expect("first");
        assert!(slot.busy());
        assert!(PendingSnapshot::capture(real(), dir.path().into(), "ledger-0", &state, &slot).is_none());
        drop(first); // an append that failed: the snapshot is given up
        assert!(!slot.busy());
        let second = PendingSnapshot::capture(real(), dir.path().into(), "ledger-0", &state, &slot).expect("second");
        second.write(ledger_core::chain::GENESIS_HASH).expect("write");
        assert!(!slot.busy(), "free again once written");
        assert_eq!(list(&RealDisk, dir.path(), "ledger-0").len(), 1);
    }

    #[test]
    fn prepare_dir_removes_unfinished_snapshots_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let unfinished = dir.path().join("ledger-0-00000000000000000007.snap.tmp");
        let other = dir.path().join("ledger-1-00000000000000000007.snap.tmp");
        let finished = dir.path().join("ledger-0-00000000000000000005.snap");
        for path in [&unfinished, &other, &finished] {
            fs::write(path, b"x").expect("write");
        }
        prepare_dir(&RealDisk, dir.path(), "ledger-0").expect("prepare");
        assert!(!unfinished.exists());
        assert!(other.exists(), "another partition's file is not ours to remove");
        assert!(finished.exists());
    }

    #[test]
    fn a_background_snapshot_is_joined_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slot = SnapshotSlot::default();
        let state = LedgerState::default();
        let pending = PendingSnapshot::capture(real(), dir.path().into(), "ledger-0", &state, &slot).expect("capture");
        pending.write_in_background(ledger_core::chain::GENESIS_HASH);
        slot.join();
        assert!(!slot.busy());
        let names: Vec<_> = fs::read_dir(dir.path()).expect("read").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].to_str().expect("utf-8").ends_with(".snap"));
    }

    #[test]
    fn a_snapshot_into_a_removed_directory_is_not_written_and_does_not_recreate_it() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("snapshots");
        let slot = SnapshotSlot::default();
        let state = LedgerState::default();
        let pending = PendingSnapshot::capture(real(), dir.clone(), "ledger-0", &state, &slot).expect("capture");
        assert!(pending.write(ledger_core::chain::GENESIS_HASH).is_err());
        assert!(!dir.exists());
    }
}
