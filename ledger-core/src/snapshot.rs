//! Snapshots of a partition's state, so start-up replays only the tail of the log.
//!
//! A snapshot file is `ledger-{partition}-{events:020}.snap`:
//! `"LEDGSNP1" | u64 events | [32] chain hash of the last event | [32] blake3(body) |
//! u64 body length | body (bincode 2 of LedgerState)`. It is trusted only if its body
//! checksum holds and the log has the same chain hash at the same revision; otherwise
//! it is discarded and an older one (or a full replay) is used.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::chain::Hash;
use crate::state::LedgerState;
use crate::store::embedded::hash_at;
use crate::store::EventStore;
use crate::writer::LedgerError;

const MAGIC: &[u8; 8] = b"LEDGSNP1";
const HEADER_BYTES: usize = 8 + 8 + 32 + 32 + 8;
/// Snapshots kept per partition; older ones are removed.
const SNAPSHOTS_KEPT: usize = 2;

fn file_name(stream: &str, events: u64) -> String {
    format!("{stream}-{events:020}.snap")
}

/// A state waiting for its last event to become durable, to be serialized.
pub struct PendingSnapshot {
    dir: PathBuf,
    stream: String,
    events: u64,
    /// A clone that shares its large parts with the writer's state (see
    /// `collections`): taking it costs the writer almost nothing; it is serialized on
    /// the snapshot thread.
    state: LedgerState,
    /// Held until the snapshot is written or given up.
    _in_progress: InProgress,
}

/// One snapshot at a time per writer: while one is being written, no other is taken
/// (each holds a clone of the state whose parts the writer then copies as it writes).
#[derive(Clone, Default)]
pub struct SnapshotSlot(Arc<AtomicBool>);

struct InProgress(Arc<AtomicBool>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl SnapshotSlot {
    pub fn busy(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl PendingSnapshot {
    /// Captures `state`, or `None` if `slot` still has a snapshot in progress.
    pub fn capture(dir: PathBuf, stream: &str, state: &LedgerState, slot: &SnapshotSlot) -> Option<PendingSnapshot> {
        if slot.0.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(PendingSnapshot {
            dir,
            stream: stream.to_string(),
            events: state.events_applied(),
            state: state.clone(),
            _in_progress: InProgress(slot.0.clone()),
        })
    }

    /// Writes the file from another thread, on idle CPU only (`SCHED_IDLE`: under load
    /// its serialization would otherwise take a core from the write path); a failure
    /// only costs a longer replay.
    pub fn write_in_background(self, last_hash: Hash) {
        let spawned = std::thread::Builder::new().name("snapshot".into()).spawn(move || {
            if let Err(error) = crate::threads::lower_current_thread_priority() {
                tracing::debug!(%error, "snapshot thread keeps its priority");
            }
            if let Err(error) = self.write(last_hash) {
                tracing::warn!(%error, "snapshot not written");
            }
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "snapshot thread not started");
        }
    }

    fn write(self, last_hash: Hash) -> std::io::Result<()> {
        let body = bincode::serde::encode_to_vec(&self.state, bincode::config::standard())
            .map_err(|e| std::io::Error::other(format!("state did not serialize: {e}")))?;
        drop(self.state);
        fs::create_dir_all(&self.dir)?;
        let name = file_name(&self.stream, self.events);
        let temporary = self.dir.join(format!("{name}.tmp"));
        let mut file = fs::File::create(&temporary)?;
        file.write_all(MAGIC)?;
        file.write_all(&self.events.to_le_bytes())?;
        file.write_all(&last_hash)?;
        file.write_all(blake3::hash(&body).as_bytes())?;
        file.write_all(&(body.len() as u64).to_le_bytes())?;
        file.write_all(&body)?;
        file.sync_all()?;
        fs::rename(&temporary, self.dir.join(&name))?;
        fs::File::open(&self.dir)?.sync_all()?;
        let mut existing = list(&self.dir, &self.stream);
        existing.sort();
        let excess = existing.len().saturating_sub(SNAPSHOTS_KEPT);
        for (_, path) in existing.into_iter().take(excess) {
            let _ = fs::remove_file(path);
        }
        tracing::info!(events = self.events, file = name, "snapshot written");
        Ok(())
    }
}

fn list(dir: &Path, stream: &str) -> Vec<(u64, PathBuf)> {
    let prefix = format!("{stream}-");
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_string();
            let events = name.strip_prefix(&prefix)?.strip_suffix(".snap")?.parse().ok()?;
            Some((events, entry.path()))
        })
        .collect()
}

/// Loads the newest snapshot of `stream` that matches the log.
pub fn load_newest(dir: &Path, store: &dyn EventStore, stream: &str) -> Result<Option<LedgerState>, LedgerError> {
    Ok(load_newest_matching(dir, stream, |revision| hash_at(store, stream, revision).map_err(|e| e.to_string())))
}

/// Loads the newest snapshot of `stream` whose last hash equals what `hash_at` says
/// the log holds at that revision.
pub fn load_newest_matching(
    dir: &Path,
    stream: &str,
    hash_at: impl Fn(u64) -> Result<Option<Hash>, String>,
) -> Option<LedgerState> {
    let mut snapshots = list(dir, stream);
    snapshots.sort();
    for (events, path) in snapshots.into_iter().rev() {
        match load(&path, events, &hash_at) {
            Ok(state) => {
                tracing::info!(file = %path.display(), events, "snapshot loaded");
                return Some(state);
            }
            Err(reason) => tracing::warn!(file = %path.display(), reason, "snapshot discarded"),
        }
    }
    None
}

fn load(
    path: &Path,
    events: u64,
    hash_at: &impl Fn(u64) -> Result<Option<Hash>, String>,
) -> Result<LedgerState, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err("not a snapshot".into());
    }
    let header_events = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| "header")?);
    let last_hash: Hash = bytes[16..48].try_into().map_err(|_| "header")?;
    let checksum: Hash = bytes[48..80].try_into().map_err(|_| "header")?;
    let body_len = u64::from_le_bytes(bytes[80..88].try_into().map_err(|_| "header")?) as usize;
    let body = &bytes[HEADER_BYTES..];
    if header_events != events || events == 0 || body.len() != body_len || *blake3::hash(body).as_bytes() != checksum {
        return Err("checksum or length mismatch".into());
    }
    match hash_at(events - 1)? {
        Some(hash) if hash == last_hash => {}
        _ => return Err("the log does not have this snapshot's last event".into()),
    }
    let (state, _): (LedgerState, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard()).map_err(|e| e.to_string())?;
    if state.events_applied() != events {
        return Err("state does not match its header".into());
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_snapshot_at_a_time_until_it_is_written_or_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slot = SnapshotSlot::default();
        let state = LedgerState::default();
        let first = PendingSnapshot::capture(dir.path().into(), "ledger-0", &state, &slot).expect("first");
        assert!(slot.busy());
        assert!(PendingSnapshot::capture(dir.path().into(), "ledger-0", &state, &slot).is_none());
        drop(first); // an append that failed: the snapshot is given up
        assert!(!slot.busy());
        let second = PendingSnapshot::capture(dir.path().into(), "ledger-0", &state, &slot).expect("second");
        second.write(crate::chain::GENESIS_HASH).expect("write");
        assert!(!slot.busy(), "free again once written");
        assert_eq!(list(dir.path(), "ledger-0").len(), 1);
    }
}
