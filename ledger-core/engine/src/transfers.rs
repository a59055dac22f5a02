//! The ledger writer's transfers on disk, so the writer's memory does not grow with
//! its history (issue 15's first part: accounts are still all in memory).
//!
//! `DiskTransfers` is an LSM tree (fjall) in `{data}/transfers/` of the newest version of
//! every transfer the writer handed off, keyed by id (16 bytes, big-endian), each value
//! the bincode of a `StoredTransfer` (the transfer and the revisions that made and last
//! changed it). A hand-off is sorted and ingested as new tables: no journal and no
//! memtable (a skip list that took most of the store's CPU). Two rows in the keyspace
//! `meta` say how far the store reaches in the partition's stream (a count of events
//! and the chain hash of the last): `claimed`, written and synced before a hand-off is
//! ingested, so nothing in the store is past it; and `covered`, written after, so
//! everything up to it is in the store.
//!
//! Rules (ARCHITECTURE.md, "The writer's transfers on disk"):
//! - A hand-off is written only once its events are durable in the log, between its
//!   `claimed` and `covered` rows: after a crash the store holds every transfer up to
//!   `covered` and none past `claimed`, never an event the log lacks.
//! - The store may be ahead of the snapshot a start loads (a snapshot is written after
//!   the store is synced, and never later): the state hides versions it has not replayed.
//! - A store whose row does not match the log's chain at that revision, that fails to
//!   open, or that failed a read (it then leaves `REBUILD` in its directory before the
//!   process stops) is removed and rebuilt from the log.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ledger_core::chain::Hash;
use ledger_core::domain::TransferId;
use ledger_core::state::{HandOff, StoredTransfer, TransferStore};

use crate::snapshot::PendingSnapshot;

/// The block cache of the store, in bytes.
pub const CACHE_BYTES: u64 = 64 << 20;
/// Most bytes of the store's journals (fjall's minimum; hand-offs bypass the journal).
const JOURNAL_BYTES_MAX: u64 = 64 << 20;
/// Most bytes a stored transfer may decode to (its metadata is at most 256 bytes).
const VALUE_BYTES_MAX: usize = 4_096;
/// Left in the directory by a failed read: the next open removes the store.
const REBUILD_MARKER: &str = "REBUILD";
const CLAIMED_KEY: &[u8] = b"claimed";
const COVERED_KEY: &[u8] = b"covered";

/// How far a store covers the stream: its first `events` events, the last with `hash`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Covered {
    pub events: u64,
    pub hash: Hash,
}

pub struct DiskTransfers {
    db: fjall::Database,
    transfers: fjall::Keyspace,
    meta: fjall::Keyspace,
    dir: PathBuf,
}

fn error(context: &str, error: impl std::fmt::Display) -> String {
    format!("transfer store: {context}: {error}")
}

impl DiskTransfers {
    /// Opens the store in `dir`, or makes an empty one: in place of a store marked for a
    /// rebuild, and of one that does not open.
    pub fn open(dir: &Path) -> Result<DiskTransfers, String> {
        if dir.join(REBUILD_MARKER).exists() {
            tracing::warn!(dir = %dir.display(), "the transfer store failed a read: rebuilding it from the log");
            std::fs::remove_dir_all(dir).map_err(|e| error("remove", e))?;
        }
        match DiskTransfers::open_existing(dir) {
            Ok(store) => Ok(store),
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), reason, "the transfer store does not open: rebuilding it from the log");
                DiskTransfers::recreate(dir)
            }
        }
    }

    /// Removes the store in `dir` and makes an empty one.
    pub fn recreate(dir: &Path) -> Result<DiskTransfers, String> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| error("remove", e))?;
        }
        DiskTransfers::open_existing(dir)
    }

    fn open_existing(dir: &Path) -> Result<DiskTransfers, String> {
        std::fs::create_dir_all(dir).map_err(|e| error("create", e))?;
        let db = fjall::Database::builder(dir.join("db"))
            .cache_size(CACHE_BYTES)
            .max_journaling_size(JOURNAL_BYTES_MAX)
            .manual_journal_persist(true)
            .worker_threads(1)
            .open()
            .map_err(|e| error("open", e))?;
        let options = fjall::KeyspaceCreateOptions::default;
        let transfers = db.keyspace("transfers", options).map_err(|e| error("open", e))?;
        let meta = db.keyspace("meta", options).map_err(|e| error("open", e))?;
        let store = DiskTransfers { db, transfers, meta, dir: dir.to_path_buf() };
        store.claimed()?;
        store.covered()?;
        Ok(store)
    }

    /// How far the store covers the stream: every transfer made or changed before it
    /// is in the store. `None` when nothing is.
    pub fn covered(&self) -> Result<Option<Covered>, String> {
        self.row(COVERED_KEY)
    }

    /// How far the store may reach: nothing in it is past this.
    pub fn claimed(&self) -> Result<Option<Covered>, String> {
        self.row(CLAIMED_KEY)
    }

    fn row(&self, key: &[u8]) -> Result<Option<Covered>, String> {
        let Some(row) = self.meta.get(key).map_err(|e| error("read", e))? else {
            return Ok(None);
        };
        let row: &[u8] = &row;
        let (events, hash) = row.split_at_checked(8).ok_or_else(|| error("covered row", "too short"))?;
        let events = u64::from_be_bytes(events.try_into().map_err(|e| error("covered row", e))?);
        let hash: Hash = hash.try_into().map_err(|e| error("covered row", e))?;
        Ok(Some(Covered { events, hash }))
    }

    /// Writes a hand-off whose last event is durable with chain hash `hash`.
    pub fn write(&self, hand_off: &HandOff, hash: &Hash) -> Result<(), String> {
        let mut rows: Vec<_> = hand_off.transfers.iter().collect();
        rows.sort_unstable_by_key(|(id, _)| id.0);
        let mut row = hand_off.events_applied.to_be_bytes().to_vec();
        row.extend_from_slice(hash);
        self.meta.insert(CLAIMED_KEY, &row).map_err(|e| error("write", e))?;
        self.sync()?;
        let config = bincode::config::standard();
        let mut ingestion = self.transfers.start_ingestion().map_err(|e| error("write", e))?;
        for (id, stored) in rows {
            let value = bincode::serde::encode_to_vec(stored, config).map_err(|e| error("encode", e))?;
            ingestion.write(&id.0.to_be_bytes()[..], value).map_err(|e| error("write", e))?;
        }
        ingestion.finish().map_err(|e| error("write", e))?;
        self.meta.insert(COVERED_KEY, row).map_err(|e| error("write", e))
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> Result<(), String> {
        self.db.persist(fjall::PersistMode::SyncAll).map_err(|e| error("sync", e))
    }

    /// Bytes of the store's files.
    pub fn disk_bytes(&self) -> u64 {
        fn walk(path: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(path) else { return 0 };
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => walk(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir)
    }

    fn mark_for_rebuild(&self) {
        let marker = self.dir.join(REBUILD_MARKER);
        let written = std::fs::File::create(&marker).and_then(|file| file.sync_all());
        if let Err(e) = written {
            tracing::error!(error = %e, "the transfer store could not be marked for a rebuild");
        }
    }
}

impl TransferStore for DiskTransfers {
    fn get(&self, id: TransferId) -> Result<Option<StoredTransfer>, String> {
        let read = || -> Result<Option<StoredTransfer>, String> {
            let Some(value) = self.transfers.get(id.0.to_be_bytes()).map_err(|e| error("read", e))? else {
                return Ok(None);
            };
            let config = bincode::config::standard().with_limit::<VALUE_BYTES_MAX>();
            let (stored, used): (StoredTransfer, usize) =
                bincode::serde::decode_from_slice(&value, config).map_err(|e| error("decode", e))?;
            if used != value.len() || stored.transfer.movement.id != id {
                return Err(error("decode", format!("the row of {id:?} holds something else")));
            }
            Ok(Some(stored))
        };
        read().inspect_err(|_| self.mark_for_rebuild())
    }
}

/// What the store's thread does next.
pub struct StoreJob {
    pub hand_off: Option<HandOff>,
    /// The chain hash of the hand-off's last event (durable).
    pub hash: Hash,
    /// Written once the store is synced through this job, so a snapshot never covers
    /// more than the store does.
    pub snapshot: Option<PendingSnapshot>,
}

/// The thread (`ledger-transfers`) that writes hand-offs to the store in order, and
/// says which it has written.
pub struct StoreThread {
    jobs: Sender<StoreJob>,
    written: Receiver<u64>,
    thread: Option<JoinHandle<()>>,
}

impl StoreThread {
    /// `failed` receives the reason if a write fails (the writer then stops).
    pub fn start(store: Arc<DiskTransfers>, failed: Arc<Mutex<Option<String>>>) -> std::io::Result<StoreThread> {
        let (jobs, incoming) = mpsc::channel::<StoreJob>();
        let (done, written) = mpsc::channel();
        let thread = std::thread::Builder::new().name("ledger-transfers".into()).spawn(move || {
            let fail = |reason: String| {
                tracing::error!(reason, "the transfer store failed; the ledger writer stops");
                if let Ok(mut failed) = failed.lock() {
                    failed.get_or_insert(reason);
                }
            };
            for job in incoming {
                let number = job.hand_off.as_ref().map(|hand_off| hand_off.number);
                if let Some(hand_off) = &job.hand_off {
                    if let Err(reason) = store.write(hand_off, &job.hash) {
                        return fail(reason);
                    }
                }
                if let Some(snapshot) = job.snapshot {
                    if let Err(reason) = store.sync() {
                        return fail(reason);
                    }
                    snapshot.write_now(job.hash);
                }
                if let Some(number) = number {
                    if done.send(number).is_err() {
                        return;
                    }
                }
            }
            if let Err(reason) = store.sync() {
                fail(reason);
            }
        })?;
        Ok(StoreThread { jobs, written, thread: Some(thread) })
    }

    /// A sender of jobs, for the callbacks of appends.
    pub fn jobs(&self) -> Sender<StoreJob> {
        self.jobs.clone()
    }

    /// The number of the newest hand-off written, if any was since the last call;
    /// with `wait`, blocks until one is.
    pub fn written(&self, wait: bool) -> Option<u64> {
        let mut newest = if wait { self.written.recv().ok() } else { None };
        while let Ok(number) = self.written.try_recv() {
            newest = Some(number);
        }
        newest
    }

    /// Sends the last job, then waits until everything is written and synced.
    pub fn finish(self, last: StoreJob) {
        let _ = self.jobs.send(last);
    }
}

impl Drop for StoreThread {
    /// Waits until every job sent is written and the store synced (the thread ends
    /// once no sender is left: callbacks of appends hold some until they run).
    fn drop(&mut self) {
        let (jobs, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, jobs));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
