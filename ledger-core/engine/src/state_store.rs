//! The ledger writer's state on disk, so the writer's memory does not grow with its
//! history: its accounts and transfers, and the checkpoint a start goes on from.
//!
//! `DiskState` is an LSM tree (fjall) in `{data}/state/` with two keyspaces:
//! - `transfers-2`: the newest version of every transfer handed off, by id (16 bytes,
//!   big-endian), each value a `StoredTransfer` (the transfer and the revisions that
//!   made and last changed it) as `ledger_core::state::rows` writes it, without its id.
//!   A hand-off's transfers are sorted and ingested as new tables: no journal and no
//!   memtable (a skip list that took most of the store's CPU).
//! - `accounts-2`: every account as of the last hand-off written, by id (16 bytes,
//!   each value as `rows` writes it), and after them, under two 17-byte keys no account
//!   id sorts after, `covered` (a count
//!   of events and the chain hash of the last: everything up to it is in the store)
//!   and `checkpoint` (the rest of the state at that point: totals, holds' expiries,
//!   counters, clock). A hand-off's accounts and these two rows are sorted and ingested
//!   as new tables, registered in one version of the tree: all of them or none, and no
//!   journal or memtable (whose skip list took most of the store's CPU at 10M
//!   accounts). A store with a keyspace of an older layout (`meta`, or rows in
//!   bincode: `transfers`, `accounts`) is rebuilt.
//!
//! Beside the database, the file `claimed` says how far the store may reach (nothing
//! in it is past it): written, synced and renamed into place before a hand-off's
//! transfers are ingested. A small checksummed file, so that `ledgerctl audit verify`
//! reads it without opening the database: one whose event the log lacks proves the
//! log lost durable events, like a snapshot. Layout: "LEDGCLM1" | u8 stream length |
//! stream | u64 events | [32] chain hash of the last | u32 crc32c of all before.
//!
//! Rules (ARCHITECTURE.md, "The writer's state on disk"):
//! - A hand-off is written only once its events are durable in the log. After a crash
//!   the store's accounts and checkpoint are those of one hand-off, its transfers are
//!   all up to it and none past `claimed`, never an event the log lacks.
//! - A start goes on from the checkpoint (no snapshot); the transfers may be ahead of
//!   it: the state hides versions it has not replayed.
//! - A store whose `claimed` row does not match the log's chain at that revision, that
//!   fails to open, or that failed a read (it then leaves `REBUILD` in its directory
//!   before the process stops) is removed and rebuilt from the log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::store::disk::{replace_file, RealDisk};
use ledger_core::chain::Hash;
use ledger_core::domain::{Account, AccountId, TransferId};
use ledger_core::state::{rows, Checkpoint, HandOff, LedgerState, StateStore, StoredTransfer};

/// Hand-offs waiting to be written before the writer waits for the store: with the
/// first tier, at most about `(1 + this) * hand_off_items` items in memory.
pub const HAND_OFFS_PENDING_MAX: usize = 4;

/// The block cache of the store, in bytes.
pub const CACHE_BYTES: u64 = 64 << 20;
/// Tables of the accounts keyspace's level 0 that start a merge into level 1 (fjall's
/// default is 4).
const ACCOUNTS_L0_TABLES: u8 = 32;
/// Most bytes of the store's journals (fjall's minimum; hand-offs bypass the journal).
const JOURNAL_BYTES_MAX: u64 = 64 << 20;
/// Bytes of the buffer rows are encoded in (a row is at most about 450 bytes: a
/// transfer's metadata is at most 256 bytes).
const ROW_BUFFER_BYTES: usize = 1_024;
/// Most bytes the checkpoint row may decode to (it holds every hold's expiry).
const CHECKPOINT_BYTES_MAX: usize = 1 << 30;
/// Left in the directory by a failed read: the next open removes the store.
const REBUILD_MARKER: &str = "REBUILD";
/// The file of the claimed row, in the store's directory.
pub const CLAIMED_FILE: &str = "claimed";
const CLAIMED_MAGIC: &[u8; 8] = b"LEDGCLM1";
/// The keys of the meta rows in the `accounts` keyspace: longer than an account's, so
/// after every account, `covered` last.
const CHECKPOINT_KEY: &[u8; 17] = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01";
const COVERED_KEY: &[u8; 17] = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02";
/// The keyspaces of the transfers and of the accounts (and meta rows). The suffix is the
/// rows' format: a format change takes new names, so a store of another one is rebuilt.
const TRANSFERS_KEYSPACE: &str = "transfers-2";
const ACCOUNTS_KEYSPACE: &str = "accounts-2";
/// Keyspaces of older layouts (`meta`: meta rows committed in a batch; the others:
/// rows in bincode): a store that has one is rebuilt.
const OLDER_KEYSPACES: [&str; 3] = ["meta", "transfers", "accounts"];

/// How far a store covers the stream: its first `events` events, the last with `hash`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Covered {
    pub events: u64,
    pub hash: Hash,
}

pub struct DiskState {
    /// The partition's stream, named in the claimed file.
    stream: String,
    db: fjall::Database,
    transfers: fjall::Keyspace,
    accounts: fjall::Keyspace,
    dir: PathBuf,
    /// Fault injection for tests: once a file exists at this path, every write and
    /// sync fails as a disk's failed fsync would (see `fail_writes_once_exists`).
    fail_writes_once: std::sync::OnceLock<PathBuf>,
    /// A scratch store ([`DiskState::scratch`]): never reopened, so no claimed file and
    /// no meta rows.
    scratch: bool,
    /// The greatest transfer id in the store, if any. A lookup of a greater id (a new
    /// transfer whose id grows with time, as ids should) answers without a read.
    transfers_max: Mutex<Option<u128>>,
    /// `transfers_max` as the writer reads it for every new id: see [`IdBound`].
    transfers_bound: AtomicU64,
}

/// One more than the greatest transfer id stored, while that fits in a `u64` (0: none
/// stored); [`IdBound::UNKNOWN`] once it does not, and `transfers_max` answers.
///
/// The writer looks up every new id, and locking a mutex is a locked instruction,
/// which on x86 waits until every earlier store of the thread has reached its cache:
/// the writer's earlier stores are its new transfers, in memory not in cache, so the
/// lock cost a tenth of the writer's time. Reading an atomic is a plain load. A
/// stale (smaller) bound is safe: the writer asks the store only about ids it no
/// longer holds in memory, that is of hand-offs whose writing it has been told of, and
/// the bound is raised before that message is sent.
struct IdBound;

impl IdBound {
    const UNKNOWN: u64 = u64::MAX;

    fn of(max: Option<u128>) -> u64 {
        match max {
            None => 0,
            Some(max) => match max.checked_add(1).map(u64::try_from) {
                Some(Ok(bound)) => bound,
                _ => IdBound::UNKNOWN,
            },
        }
    }
}

fn error(context: &str, error: impl std::fmt::Display) -> String {
    format!("state store: {context}: {error}")
}

impl DiskState {
    /// Opens the store in `dir`, or makes an empty one: in place of a store marked for a
    /// rebuild, and of one that does not open.
    pub fn open(dir: &Path, stream: &str) -> Result<DiskState, String> {
        if dir.join(REBUILD_MARKER).exists() {
            tracing::warn!(dir = %dir.display(), "the state store failed a read: rebuilding it from the log");
            std::fs::remove_dir_all(dir).map_err(|e| error("remove", e))?;
        }
        match DiskState::open_existing(dir, stream) {
            Ok(store) => Ok(store),
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), reason, "the state store does not open: rebuilding it from the log");
                DiskState::recreate(dir, stream)
            }
        }
    }

    /// Removes the store in `dir` and makes an empty one.
    pub fn recreate(dir: &Path, stream: &str) -> Result<DiskState, String> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| error("remove", e))?;
        }
        DiskState::open_existing(dir, stream)
    }

    /// An empty store in `dir` (replacing what is there) for a replay that reads it
    /// back and never reopens it (the auditor's): a hand-off is written without the
    /// claimed file, the checkpoint or the covered row (nothing would read them).
    pub fn scratch(dir: &Path, stream: &str) -> Result<DiskState, String> {
        Ok(DiskState { scratch: true, ..DiskState::recreate(dir, stream)? })
    }

    fn open_existing(dir: &Path, stream: &str) -> Result<DiskState, String> {
        std::fs::create_dir_all(dir).map_err(|e| error("create", e))?;
        let db = fjall::Database::builder(dir.join("db"))
            .cache_size(CACHE_BYTES)
            .max_journaling_size(JOURNAL_BYTES_MAX)
            // Each batch reaches the operating system when committed (a killed process
            // loses none); syncs are explicit.
            .manual_journal_persist(false)
            .worker_threads(1)
            .open()
            .map_err(|e| error("open", e))?;
        if OLDER_KEYSPACES.iter().any(|name| db.keyspace_exists(name)) {
            return Err(error("open", "a store of an older layout"));
        }
        let options = fjall::KeyspaceCreateOptions::default;
        let transfers = db.keyspace(TRANSFERS_KEYSPACE, options).map_err(|e| error("open", e))?;
        // Accounts are rewritten at random keys, so each table ingested spans the whole
        // key space: more tables wait in L0 before a merge into L1 (each merge rewrites
        // all of L1), and reads, rare behind the accounts cache, check more tables.
        let leveled = fjall::compaction::Leveled::default().with_l0_threshold(ACCOUNTS_L0_TABLES);
        let accounts_options =
            || fjall::KeyspaceCreateOptions::default().compaction_strategy(Arc::new(leveled.clone()));
        let accounts = db.keyspace(ACCOUNTS_KEYSPACE, accounts_options).map_err(|e| error("open", e))?;
        let max = last_transfer_id(&transfers)?;
        let (transfers_max, transfers_bound) = (Mutex::new(max), AtomicU64::new(IdBound::of(max)));
        let store = DiskState {
            stream: stream.to_string(),
            db,
            transfers,
            accounts,
            dir: dir.to_path_buf(),
            fail_writes_once: std::sync::OnceLock::new(),
            scratch: false,
            transfers_max,
            transfers_bound,
        };
        let (claimed, covered) = (store.claimed()?, store.covered()?);
        if covered.is_some() && claimed.is_none_or(|claimed| claimed.events < covered.map_or(0, |c| c.events)) {
            return Err(error("open", "what the store holds is not claimed"));
        }
        store.checkpoint()?;
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
        read_claimed(&self.dir, &self.stream)
    }

    /// The state as of `covered`, but its accounts and transfers.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, String> {
        let Some(row) = self.accounts.get(CHECKPOINT_KEY).map_err(|e| error("read", e))? else {
            return Ok(None);
        };
        let config = bincode::config::standard().with_limit::<CHECKPOINT_BYTES_MAX>();
        let (checkpoint, used): (Checkpoint, usize) =
            bincode::serde::decode_from_slice(&row, config).map_err(|e| error("checkpoint row", e))?;
        if used != row.len() {
            return Err(error("checkpoint row", "bytes after its end"));
        }
        Ok(Some(checkpoint))
    }

    fn row(&self, key: &[u8; 17]) -> Result<Option<Covered>, String> {
        let Some(row) = self.accounts.get(key).map_err(|e| error("read", e))? else {
            return Ok(None);
        };
        let row: &[u8] = &row;
        let (events, hash) = row.split_at_checked(8).ok_or_else(|| error("covered row", "too short"))?;
        let events = u64::from_be_bytes(events.try_into().map_err(|e| error("covered row", e))?);
        let hash: Hash = hash.try_into().map_err(|e| error("covered row", e))?;
        Ok(Some(Covered { events, hash }))
    }

    /// Fault injection for process-level tests of a failing disk: once a file exists at
    /// `trigger`, every write and sync of the store fails (EIO, as from fsync). Never
    /// set in a real deployment.
    pub fn fail_writes_once_exists(&self, trigger: PathBuf) {
        let _ = self.fail_writes_once.set(trigger);
    }

    fn injected_failure(&self) -> Result<(), String> {
        match self.fail_writes_once.get() {
            Some(trigger) if trigger.exists() => {
                Err(error("sync", std::io::Error::from_raw_os_error(5 /* EIO */)))
            }
            _ => Ok(()),
        }
    }

    /// Writes a hand-off whose last event is durable with chain hash `hash`.
    pub fn write(&self, hand_off: &HandOff, hash: &Hash) -> Result<(), String> {
        self.injected_failure()?;
        let mut rows: Vec<_> = hand_off.transfers.iter().collect();
        rows.sort_unstable_by_key(|(id, _)| id.0);
        let written_max = rows.last().map(|(id, _)| id.0);
        if !self.scratch {
            write_claimed(&self.dir, &self.stream, hand_off.checkpoint.events_applied, hash)?;
        }
        // One buffer for every row: encoding each into a fresh vector grew it several
        // times a row.
        let mut value = Vec::with_capacity(ROW_BUFFER_BYTES);
        let mut ingestion = self.transfers.start_ingestion().map_err(|e| error("write", e))?;
        for (id, stored) in rows {
            value.clear();
            rows::encode_transfer(stored, &mut value).map_err(|e| error("encode", e))?;
            ingestion.write(&id.0.to_be_bytes()[..], &value[..]).map_err(|e| error("write", e))?;
        }
        ingestion.finish().map_err(|e| error("write", e))?;
        if let Some(written) = written_max {
            let mut max = self.transfers_max.lock().map_err(|e| error("write", e))?;
            *max = Some(max.map_or(written, |max| max.max(written)));
            self.transfers_bound.store(IdBound::of(*max), Ordering::Release);
        }
        let mut accounts: Vec<_> = hand_off.accounts.iter().collect();
        accounts.sort_unstable_by_key(|(id, _)| id.0);
        let mut ingestion = self.accounts.start_ingestion().map_err(|e| error("write", e))?;
        for (id, account) in accounts {
            value.clear();
            rows::encode_account(account, &mut value);
            ingestion.write(&id.0.to_be_bytes()[..], &value[..]).map_err(|e| error("write", e))?;
        }
        if !self.scratch {
            let checkpoint = bincode::serde::encode_to_vec(&hand_off.checkpoint, bincode::config::standard())
                .map_err(|e| error("encode", e))?;
            let mut covered = hand_off.checkpoint.events_applied.to_be_bytes().to_vec();
            covered.extend_from_slice(hash);
            ingestion.write(&CHECKPOINT_KEY[..], checkpoint).map_err(|e| error("write", e))?;
            ingestion.write(&COVERED_KEY[..], covered).map_err(|e| error("write", e))?;
        }
        ingestion.finish().map_err(|e| error("write", e))
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> Result<(), String> {
        self.injected_failure()?;
        self.db.persist(fjall::PersistMode::SyncAll).map_err(|e| error("sync", e))
    }

    fn mark_for_rebuild(&self) {
        let marker = self.dir.join(REBUILD_MARKER);
        let written = std::fs::File::create(&marker).and_then(|file| file.sync_all());
        if let Err(e) = written {
            tracing::error!(error = %e, "the state store could not be marked for a rebuild");
        }
    }
}

/// The claimed file of `stream` in `dir`, if there is one; an error if it is not sound
/// or names another stream.
pub fn read_claimed(dir: &Path, stream: &str) -> Result<Option<Covered>, String> {
    match read_claimed_file(dir)? {
        Some((named, claimed)) if named == stream => Ok(Some(claimed)),
        Some((named, _)) => Err(error("claimed", format!("the file names stream {named}"))),
        None => Ok(None),
    }
}

/// The claimed file in `dir` (the stream it names, and the row), if there is one; an
/// error if it is not sound (its checksum or length).
pub fn read_claimed_file(dir: &Path) -> Result<Option<(String, Covered)>, String> {
    let bytes = match std::fs::read(dir.join(CLAIMED_FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error("read claimed", e)),
    };
    let name_len = bytes.get(8).map_or(0, |len| *len as usize);
    let len = 8 + 1 + name_len + 8 + 32 + 4;
    let sound = bytes.len() == len
        && &bytes[..8] == CLAIMED_MAGIC
        && bytes[len - 4..] == crc32c::crc32c(&bytes[..len - 4]).to_le_bytes();
    if !sound {
        return Err(error("claimed", "not a sound claimed file"));
    }
    let stream = String::from_utf8(bytes[9..9 + name_len].to_vec()).map_err(|e| error("claimed", e))?;
    let at = 9 + name_len;
    let events = u64::from_le_bytes(bytes[at..at + 8].try_into().map_err(|e| error("claimed", e))?);
    let hash: Hash = bytes[at + 8..at + 40].try_into().map_err(|e| error("claimed", e))?;
    Ok(Some((stream, Covered { events, hash })))
}

/// Writes the claimed file, whole or not at all (`replace_file`).
fn write_claimed(dir: &Path, stream: &str, events: u64, hash: &Hash) -> Result<(), String> {
    let name = stream.as_bytes();
    let mut bytes = Vec::with_capacity(8 + 1 + name.len() + 8 + 32 + 4);
    bytes.extend_from_slice(CLAIMED_MAGIC);
    bytes.push(u8::try_from(name.len()).map_err(|e| error("claimed", e))?);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&events.to_le_bytes());
    bytes.extend_from_slice(hash);
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    replace_file(&RealDisk, &dir.join(CLAIMED_FILE), &bytes).map_err(|e| error("write claimed", e))
}

/// The greatest transfer id in the `transfers` keyspace, read from it.
fn last_transfer_id(transfers: &fjall::Keyspace) -> Result<Option<u128>, String> {
    let Some(last) = transfers.last_key_value() else {
        return Ok(None);
    };
    let key = last.key().map_err(|e| error("read", e))?;
    let key: [u8; 16] = (*key).try_into().map_err(|_| error("read", "a transfer key is not 16 bytes"))?;
    Ok(Some(u128::from_be_bytes(key)))
}

/// Reads the value under `key` in `keyspace` and decodes it with `decode`.
fn read_row<T, E: std::fmt::Display>(
    keyspace: &fjall::Keyspace,
    key: u128,
    decode: impl Fn(&[u8]) -> Result<T, E>,
) -> Result<Option<T>, String> {
    let Some(value) = keyspace.get(key.to_be_bytes()).map_err(|e| error("read", e))? else {
        return Ok(None);
    };
    decode(&value).map(Some).map_err(|e| error(&format!("the row of {key}"), e))
}

impl StateStore for DiskState {
    fn transfer(&self, id: TransferId) -> Result<Option<StoredTransfer>, String> {
        let absent = match self.transfers_bound.load(Ordering::Acquire) {
            IdBound::UNKNOWN => self.transfers_max.lock().map_err(|e| error("read", e))?.is_none_or(|max| id.0 > max),
            bound => id.0 >= u128::from(bound),
        };
        if absent {
            return Ok(None);
        }
        read_row(&self.transfers, id.0, |row| rows::decode_transfer(id, row)).inspect_err(|_| self.mark_for_rebuild())
    }

    fn account(&self, id: AccountId) -> Result<Option<Account>, String> {
        read_row(&self.accounts, id.0, |row| rows::decode_account(id, row)).inspect_err(|_| self.mark_for_rebuild())
    }
}

/// What the store's thread does next: write a hand-off whose last event is durable
/// with chain hash `hash`.
pub struct StoreJob {
    pub hand_off: HandOff,
    pub hash: Hash,
}

/// The thread (`ledger-state`) that writes hand-offs to the store in order, and
/// says which it has written.
pub struct StoreThread {
    jobs: Sender<StoreJob>,
    written: Receiver<u64>,
    thread: Option<JoinHandle<()>>,
}

impl StoreThread {
    /// `failed` receives the reason if a write fails: the writer then stops, and the
    /// store is marked for a rebuild (after a failed write or fsync, what its files
    /// hold is not known: the kernel may have dropped pages it could not write).
    pub fn start(store: Arc<DiskState>, failed: Arc<Mutex<Option<String>>>) -> std::io::Result<StoreThread> {
        let (jobs, incoming) = mpsc::channel::<StoreJob>();
        let (done, written) = mpsc::channel();
        let thread = std::thread::Builder::new().name("ledger-state".into()).spawn(move || {
            let fail = |reason: String| {
                tracing::error!(reason, "the state store failed; the ledger writer stops");
                store.mark_for_rebuild();
                if let Ok(mut failed) = failed.lock() {
                    failed.get_or_insert(reason);
                }
            };
            for job in incoming {
                if let Err(reason) = store.write(&job.hand_off, &job.hash) {
                    return fail(reason);
                }
                // Let go of the hand-off first: the writer reuses its memory.
                let number = job.hand_off.number;
                drop(job);
                if done.send(number).is_err() {
                    return;
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

    /// Takes note in `state` of the hand-offs written; while `HAND_OFFS_PENDING_MAX`
    /// still wait, waits for the store.
    pub fn settle(&self, state: &mut LedgerState) {
        if let Some(number) = self.written(false) {
            state.stored_up_to(number);
        }
        while state.hand_offs_pending() >= HAND_OFFS_PENDING_MAX {
            let Some(number) = self.written(true) else { return };
            state.stored_up_to(number);
        }
    }

    /// Sends the last job, if any, then waits until everything is written and synced.
    pub fn finish(self, last: Option<StoreJob>) {
        if let Some(job) = last {
            let _ = self.jobs.send(job);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::domain::{Movement, Transfer, TransferKind};
    use ledger_core::money::Currency;
    use ledger_core::state::{AccountMap, TransferMap};

    const STREAM: &str = "ledger-0";

    fn transfer(id: u128) -> StoredTransfer {
        let movement = Movement {
            id: TransferId(id),
            debit_account_id: AccountId(1),
            credit_account_id: AccountId(2),
            amount: id,
            currency: Currency::FIRST,
            code: 1,
            metadata: format!("memo {id}"),
            linked: false,
        };
        let transfer = Transfer {
            movement,
            kind: TransferKind::Posted,
            timestamp_ns: id as u64,
            expires_at_ns: 0,
            pending_status: None,
        };
        StoredTransfer { transfer, created: id as u64, changed: id as u64 }
    }

    fn hand_off(ids: std::ops::Range<u128>) -> HandOff {
        let transfers: TransferMap = ids.clone().map(|id| (TransferId(id), transfer(id))).collect();
        let checkpoint = Checkpoint { events_applied: ids.end as u64, ..Checkpoint::default() };
        HandOff { number: 1, transfers: Arc::new(transfers), accounts: Arc::new(AccountMap::default()), checkpoint }
    }

    fn files(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("dir").flatten() {
            if entry.path().is_dir() {
                files(&entry.path(), found);
            } else {
                found.push(entry.path());
            }
        }
    }

    /// Every stored id is found and every greater id is absent, whether the greatest
    /// stored id fits the lock-free bound or not, in a store written and reopened.
    #[test]
    fn ids_at_and_above_the_greatest_stored_are_found_and_absent() {
        let edge = u128::from(u64::MAX);
        for (low, high) in [(1, 4), (edge - 3, edge - 1), (edge - 2, edge + 1), (u128::MAX - 2, u128::MAX)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let check = |store: &DiskState| {
                for id in low..=high {
                    let found = store.transfer(TransferId(id)).expect("read").map(|t| t.transfer.movement.id);
                    assert_eq!(found, Some(TransferId(id)), "stored id {id}");
                }
                for id in
                    [high.saturating_add(1), high.saturating_add(2), u128::MAX].into_iter().filter(|&id| id > high)
                {
                    assert_eq!(store.transfer(TransferId(id)).expect("read"), None, "absent id {id}");
                }
                assert_eq!(store.transfer(TransferId(low - 1)).expect("read"), None, "absent id below");
            };
            {
                let store = DiskState::open(dir.path(), STREAM).expect("open");
                assert_eq!(store.transfer(TransferId(low)).expect("read"), None, "an empty store holds nothing");
                let mut written = hand_off(0..0);
                written.transfers = Arc::new((low..=high).map(|id| (TransferId(id), transfer(id))).collect());
                written.checkpoint.events_applied = 1;
                store.write(&written, &[7; 32]).expect("write");
                check(&store);
                store.sync().expect("sync");
            }
            check(&DiskState::open(dir.path(), STREAM).expect("reopen"));
        }
    }

    /// A hand-off's accounts and checkpoint are read back; a store of the older layout
    /// (meta rows in a keyspace of their own) is made anew, to be rebuilt from the log.
    #[test]
    fn accounts_and_checkpoint_are_one_ingestion_and_an_older_layout_is_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let account = |id: u128| Account {
            id: AccountId(id),
            currency: Currency::FIRST,
            code: 1,
            flags: ledger_core::domain::AccountFlags(0),
            owner_id: 7,
            state: ledger_core::domain::AccountState::Open,
            debits_pending: 0,
            debits_posted: id,
            credits_pending: 0,
            credits_posted: 0,
            timestamp_ns: 1,
        };
        let mut written = hand_off(1..11);
        // The greatest id sorts next to the meta rows' keys.
        let ids = [1, 2, u128::MAX - 1, u128::MAX];
        written.accounts = Arc::new(ids.iter().map(|id| (AccountId(*id), account(*id))).collect());
        {
            let store = DiskState::open(dir.path(), STREAM).expect("open");
            store.write(&written, &[9; 32]).expect("write");
            store.sync().expect("sync");
        }
        let store = DiskState::open(dir.path(), STREAM).expect("reopen");
        assert_eq!(store.covered().expect("covered"), Some(Covered { events: 11, hash: [9; 32] }));
        assert_eq!(store.checkpoint().expect("checkpoint"), Some(written.checkpoint.clone()));
        for id in ids {
            assert_eq!(store.account(AccountId(id)).expect("read"), Some(account(id)));
        }
        assert_eq!(store.account(AccountId(3)).expect("read"), None);
        drop(store);
        for older in OLDER_KEYSPACES {
            {
                let store = DiskState::open(dir.path(), STREAM).expect("open");
                store.write(&written, &[9; 32]).expect("write");
                store.sync().expect("sync");
            }
            {
                let db = fjall::Database::builder(dir.path().join("db")).open().expect("open the database");
                db.keyspace(older, fjall::KeyspaceCreateOptions::default).expect("older keyspace");
                db.persist(fjall::PersistMode::SyncAll).expect("persist");
            }
            let store = DiskState::open(dir.path(), STREAM).expect("made anew");
            assert_eq!(store.covered().expect("covered"), None, "a store with keyspace {older}");
            assert_eq!(store.account(AccountId(1)).expect("read"), None);
        }
    }

    /// A byte flipped anywhere in the store's tables: it does not open (and is made
    /// anew, empty), or a read is an error (and the store is marked for a rebuild), or
    /// the answer is the one written. Never another transfer, and never "absent" for
    /// one written (which would let its id be committed twice).
    #[test]
    fn a_damaged_store_never_answers_wrongly() {
        let ids = 1..2_001u128;
        let tables = {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = DiskState::open(dir.path(), STREAM).expect("open");
            store.write(&hand_off(ids.clone()), &[7; 32]).expect("write");
            store.sync().expect("sync");
            drop(store);
            let mut found = Vec::new();
            files(dir.path(), &mut found);
            found.retain(|path| path.to_string_lossy().contains("/tables/"));
            found
                .iter()
                .map(|path| {
                    (path.strip_prefix(dir.path()).expect("inside").to_path_buf(), std::fs::read(path).expect("read"))
                })
                .collect::<Vec<_>>()
        };
        assert!(!tables.is_empty(), "the hand-off is in tables");
        for (table, bytes) in &tables {
            for at in (0..bytes.len()).step_by((bytes.len() / 31).max(1)) {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = DiskState::open(dir.path(), STREAM).expect("open");
                store.write(&hand_off(ids.clone()), &[7; 32]).expect("write");
                store.sync().expect("sync");
                drop(store);
                let mut damaged = bytes.clone();
                damaged[at] ^= 0x10;
                std::fs::write(dir.path().join(table), damaged).expect("damage");
                let store = DiskState::open(dir.path(), STREAM).expect("open or made anew");
                if store.covered().expect("covered").is_none() {
                    continue; // made anew: the log is replayed into it
                }
                for id in ids.clone() {
                    match store.transfer(TransferId(id)) {
                        Ok(Some(read)) => assert_eq!(read, transfer(id), "{table:?} byte {at}"),
                        Ok(None) => panic!("{table:?} byte {at}: transfer {id} read as absent"),
                        Err(_) => {
                            assert!(dir.path().join(REBUILD_MARKER).exists(), "marked for a rebuild");
                            break;
                        }
                    }
                }
            }
        }
    }
}
