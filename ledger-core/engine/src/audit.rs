//! The auditor: replays a data directory from nothing and checks everything an outside
//! party can check. Every record's checksum, position and revision; every stream's
//! hash chain; every ledger event against the engine's own rules (through
//! `LedgerState::check_and_evolve`); debits equal credits per currency after every
//! event; and the state the server would serve (newest valid snapshot plus the tail)
//! equals the state rebuilt from nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::snapshot;
use crate::store::disk::RealDisk;
use crate::store::format::{self, TornTail};
use crate::store::{EventStore, RecordedEvent, StoreError};
use crate::transfers::{DiskTransfers, StoreJob, StoreThread};
use crate::writer::{HAND_OFFS_PENDING_MAX, HAND_OFF_TRANSFERS};
use ledger_core::chain::{check_link, Hash};
use ledger_core::codec;
use ledger_core::domain::TransferId;
use ledger_core::money::Currency;
use ledger_core::state::{CurrencyTotals, LedgerState, StoredTransfer, TransferStore};

/// What a successful audit checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    pub events_checked: u64,
    pub streams: usize,
    pub ledger_partitions: usize,
    pub accounts: usize,
    pub transfers: usize,
    pub totals: BTreeMap<Currency, CurrencyTotals>,
    /// Chain head per stream: an auditor keeps these to detect a rewritten history.
    pub heads: BTreeMap<String, (u64, Hash)>,
}

/// The first thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditFailure {
    #[error("{0}")]
    Store(StoreError),
    #[error("the last frame of {} at offset {} ({} bytes) is torn or damaged: {}", .0.file.display(), .0.offset, .0.bytes, .0.reason)]
    TornTail(TornTail),
    #[error("stream {stream} revision {revision}: {reason}")]
    Event { stream: String, revision: u64, reason: String },
    #[error("stream {stream}: debits differ from credits in {currency} after revision {revision}")]
    Unbalanced { stream: String, revision: u64, currency: Currency },
    #[error(
        "stream {stream}: the state the server would serve (snapshot plus tail) differs from a replay from nothing"
    )]
    ServedStateDiffers { stream: String },
    /// A sound snapshot proves the stream had more events than the log holds.
    #[error("stream {stream}: {short}")]
    LogShorterThanSnapshot { stream: String, short: snapshot::LogShorter },
    /// A sound snapshot holds another history than the log at its last revision.
    #[error("stream {stream}: {mismatch}")]
    SnapshotDiffers { stream: String, mismatch: snapshot::SnapshotMismatch },
    /// The auditor's own scratch store of transfers failed (not a finding about the log).
    #[error("the auditor's scratch store failed: {0}")]
    Scratch(String),
}

impl AuditFailure {
    /// The stream and revision of the failure, where there is one.
    pub fn place(&self) -> Option<(String, u64)> {
        match self {
            AuditFailure::Store(StoreError::ChainBroken { stream, revision, .. }) => Some((stream.clone(), *revision)),
            AuditFailure::Event { stream, revision, .. } | AuditFailure::Unbalanced { stream, revision, .. } => {
                Some((stream.clone(), *revision))
            }
            _ => None,
        }
    }
}

fn is_ledger_stream(stream: &str) -> bool {
    stream.strip_prefix("ledger-").is_some_and(|p| p.parse::<u32>().is_ok())
}

/// The replay of the ledger streams shared by both audits: every event decoded,
/// re-decided by the engine's rules, and the books balanced after it. Each partition's
/// transfers are handed off, as the writer does, to a transfer store of the auditor's
/// own in a scratch directory (removed at the end), so its memory does not grow with
/// the transfers.
struct Replay {
    states: HashMap<String, LedgerState>,
    /// Each ledger stream's length, and the chain hashes of the revisions snapshots name.
    hashes: HashMap<String, StreamHashes>,
    /// The revisions whose hashes are kept, by stream (those snapshots name).
    wanted: HashMap<String, BTreeSet<u64>>,
    stores: HashMap<String, StoreThread>,
    hand_off_transfers: usize,
    /// Why a scratch store failed, if one did.
    store_failed: Arc<Mutex<Option<String>>>,
    failure: Option<AuditFailure>,
    scratch: Scratch,
}

#[derive(Default)]
struct StreamHashes {
    len: u64,
    kept: HashMap<u64, Hash>,
}

impl StreamHashes {
    /// The hash at `revision`; `None` past the stream's end.
    fn at(&self, revision: u64) -> Option<Hash> {
        if revision >= self.len {
            return None;
        }
        self.kept.get(&revision).copied()
    }
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), %error, "the auditor's scratch directory was not removed");
            }
        }
    }
}

impl Replay {
    fn new(scratch: PathBuf, wanted: HashMap<String, BTreeSet<u64>>) -> Replay {
        Replay {
            states: HashMap::new(),
            hashes: HashMap::new(),
            wanted,
            stores: HashMap::new(),
            hand_off_transfers: HAND_OFF_TRANSFERS,
            store_failed: Arc::new(Mutex::new(None)),
            failure: None,
            scratch: Scratch(scratch),
        }
    }

    /// The state of `stream`, with its scratch store, made on first use.
    fn state(&mut self, stream: &str) -> Result<&mut LedgerState, String> {
        if !self.states.contains_key(stream) {
            let store = Arc::new(DiskTransfers::recreate(&self.scratch.0.join(stream))?);
            let thread = StoreThread::start(store.clone(), self.store_failed.clone()).map_err(|e| e.to_string())?;
            self.stores.insert(stream.to_string(), thread);
            self.states.insert(stream.to_string(), LedgerState::new().with_store(store));
        }
        self.states.get_mut(stream).ok_or_else(|| "no state".to_string())
    }

    /// Hands off the transfers of `stream`'s state if enough are in memory, and takes
    /// note of those written; waits while too many are not.
    fn tend_store(&mut self, stream: &str, hash: Hash) {
        let (Some(state), Some(thread)) = (self.states.get_mut(stream), self.stores.get(stream)) else { return };
        if state.transfers_in_memory() >= self.hand_off_transfers {
            if let Some(hand_off) = state.hand_off() {
                let _ = thread.jobs().send(StoreJob { hand_off: Some(hand_off), hash, snapshot: None });
            }
        }
        if let Some(number) = thread.written(false) {
            state.stored_up_to(number);
        }
        while state.hand_offs_pending() >= HAND_OFFS_PENDING_MAX {
            let Some(number) = thread.written(true) else { break };
            state.stored_up_to(number);
        }
    }

    fn visit(&mut self, record: &RecordedEvent) {
        if self.failure.is_some() || !is_ledger_stream(&record.stream) {
            return;
        }
        let fail =
            |reason: String| AuditFailure::Event { stream: record.stream.clone(), revision: record.revision, reason };
        let hashes = self.hashes.entry(record.stream.clone()).or_default();
        hashes.len = record.revision + 1;
        if self.wanted.get(&record.stream).is_some_and(|wanted| wanted.contains(&record.revision)) {
            hashes.kept.insert(record.revision, record.hash);
        }
        let state = match self.state(&record.stream) {
            Ok(state) => state,
            Err(reason) => return self.failure = Some(AuditFailure::Scratch(reason)),
        };
        let event = match codec::decode_event(&record.payload) {
            Ok(event) => event,
            Err(error) => return self.failure = Some(fail(error.to_string())),
        };
        if event.kind.type_name() != record.event_type {
            return self.failure =
                Some(fail(format!("stored type {} but the event is {}", record.event_type, event.kind.type_name())));
        }
        if let Err(error) = state.check_and_evolve(&event) {
            return self.failure = Some(fail(error.to_string()));
        }
        if let Some((currency, _)) = state.totals().iter().find(|(_, totals)| !totals.is_balanced()) {
            return self.failure = Some(AuditFailure::Unbalanced {
                stream: record.stream.clone(),
                revision: record.revision,
                currency: *currency,
            });
        }
        self.tend_store(&record.stream, record.hash);
        if let Some(reason) = self.store_failed.lock().ok().and_then(|failed| failed.clone()) {
            self.failure = Some(AuditFailure::Scratch(reason));
        }
    }

    fn report(&self, events_checked: u64, heads: HashMap<String, (u64, Hash)>) -> AuditReport {
        let mut totals: BTreeMap<Currency, CurrencyTotals> = BTreeMap::new();
        for state in self.states.values() {
            for (currency, t) in state.totals() {
                let sum = totals.entry(*currency).or_default();
                sum.debits_posted += t.debits_posted;
                sum.credits_posted += t.credits_posted;
                sum.debits_pending += t.debits_pending;
                sum.credits_pending += t.credits_pending;
            }
        }
        AuditReport {
            events_checked,
            streams: heads.len(),
            ledger_partitions: self.states.len(),
            accounts: self.states.values().map(LedgerState::account_count).sum(),
            transfers: self.states.values().map(|state| state.transfer_count() as usize).sum(),
            totals,
            heads: heads.into_iter().collect(),
        }
    }
}

/// Audits the store in `data_dir`; snapshots are looked for in `snapshot_dir`.
pub fn verify(data_dir: &Path, snapshot_dir: Option<&Path>) -> Result<AuditReport, AuditFailure> {
    verify_handing_off(data_dir, snapshot_dir, HAND_OFF_TRANSFERS)
}

/// `verify`, handing each partition's transfers to the scratch store every
/// `hand_off_transfers` (tests make it small, so the replay reads from the store).
pub fn verify_handing_off(
    data_dir: &Path,
    snapshot_dir: Option<&Path>,
    hand_off_transfers: usize,
) -> Result<AuditReport, AuditFailure> {
    let wanted = snapshot_dir.map(|dir| snapshot::named_revisions(&RealDisk, dir)).unwrap_or_default();
    let mut replay = Replay::new(scratch_dir(data_dir), wanted);
    replay.hand_off_transfers = hand_off_transfers.max(1);
    let mut first_segment_of_a_tail = u32::MAX;
    let report = format::scan(data_dir, |record, location| {
        if is_ledger_stream(&record.stream) {
            let named = replay.wanted.get(&record.stream);
            // A stream with no snapshot is served from its first event; one with
            // snapshots from the oldest (at the latest) one's last event.
            if record.revision == 0 && named.is_none_or(BTreeSet::is_empty)
                || named.is_some_and(|named| named.first() == Some(&record.revision))
            {
                first_segment_of_a_tail = first_segment_of_a_tail.min(location.segment);
            }
        }
        replay.visit(record)
    })
    .map_err(AuditFailure::Store)?;
    if let Some(failure) = replay.failure.take() {
        return Err(failure);
    }
    if let Some(torn) = report.torn_tail {
        return Err(AuditFailure::TornTail(torn));
    }
    if let Some(dir) = snapshot_dir {
        compare_served_state(data_dir, dir, first_segment_of_a_tail, &replay.states, &replay.hashes)?;
    }
    Ok(replay.report(report.records, report.heads))
}

/// Audits any backend through the `EventStore` port (EventStoreDB/KurrentDB with
/// `ledgerctl audit verify --store`): every stream's revisions and hash chain are
/// recomputed from the payloads read (what the embedded store's scan checks in its
/// files), then the same replay of the ledger streams.
pub fn verify_store(store: &dyn EventStore) -> Result<AuditReport, AuditFailure> {
    let mut replay = Replay::new(std::env::temp_dir().join(scratch_name()), HashMap::new());
    let mut heads: HashMap<String, (u64, Hash)> = HashMap::new();
    let (mut from, mut count) = (0, 0u64);
    loop {
        let batch = store.read_all(from, 4_096).map_err(AuditFailure::Store)?;
        let Some(last) = batch.last() else { break };
        from = last.position + 1;
        for record in &batch {
            let last = heads.get(&record.stream).copied();
            check_link(last, record.revision, &record.payload, &record.hash).map_err(|broken| {
                AuditFailure::Store(StoreError::ChainBroken {
                    stream: record.stream.clone(),
                    revision: record.revision,
                    file: PathBuf::from("event store"),
                    offset: record.position,
                    reason: broken.to_string(),
                })
            })?;
            heads.insert(record.stream.clone(), (record.revision, record.hash));
            count += 1;
            replay.visit(record);
            if let Some(failure) = replay.failure.take() {
                return Err(failure);
            }
        }
    }
    Ok(replay.report(count, heads))
}

/// Rebuilds each partition the way the server starts (newest snapshot that matches the
/// chain, then the tail) and compares it with the replay from nothing.
fn compare_served_state(
    data_dir: &Path,
    snapshot_dir: &Path,
    first_segment: u32,
    replayed: &HashMap<String, LedgerState>,
    hashes: &HashMap<String, StreamHashes>,
) -> Result<(), AuditFailure> {
    let mut served: HashMap<String, LedgerState> = HashMap::new();
    for (stream, stream_hashes) in hashes {
        snapshot::check_sound(&RealDisk, snapshot_dir, stream, |revision| stream_hashes.at(revision)).map_err(
            |mismatch| match mismatch {
                snapshot::SnapshotMismatch::LogShorter(short) => {
                    AuditFailure::LogShorterThanSnapshot { stream: stream.clone(), short }
                }
                mismatch => AuditFailure::SnapshotDiffers { stream: stream.clone(), mismatch },
            },
        )?;
        let hash_at = |revision: u64| Ok(stream_hashes.at(revision));
        let loaded = snapshot::load_newest_matching(&RealDisk, snapshot_dir, stream, hash_at)
            .map_err(|short| AuditFailure::LogShorterThanSnapshot { stream: stream.clone(), short })?;
        // ok: no snapshot that matches the log means the server replays from nothing.
        let mut state = loaded.unwrap_or_default();
        if let Some(replayed) = replayed.get(stream) {
            state = state.with_store(Arc::new(Replayed(replayed.clone())));
        }
        served.insert(stream.clone(), state);
    }
    let mut failure = None;
    // Every record was checked by the scan: only the segments holding the tails are read.
    format::read_from_segment(data_dir, first_segment, |record| {
        let Some(state) = served.get_mut(&record.stream) else {
            return;
        };
        if failure.is_some() || record.revision < state.events_applied() {
            return;
        }
        match codec::decode_event(&record.payload)
            .map_err(|e| e.to_string())
            .and_then(|event| state.check_and_evolve(&event).map_err(|e| e.to_string()))
        {
            Ok(()) => {}
            Err(reason) => {
                failure = Some(AuditFailure::Event { stream: record.stream.clone(), revision: record.revision, reason })
            }
        }
    })
    .map_err(AuditFailure::Store)?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    for (stream, state) in &served {
        if replayed.get(stream) != Some(state) {
            return Err(AuditFailure::ServedStateDiffers { stream: stream.clone() });
        }
    }
    Ok(())
}

/// Where the auditor keeps its scratch stores for a log in `log_dir`: beside it (on the
/// same disk, not in a temporary directory that may be memory).
fn scratch_dir(log_dir: &Path) -> PathBuf {
    let parent = log_dir.parent().unwrap_or(log_dir);
    parent.join(scratch_name())
}

fn scratch_name() -> String {
    format!("audit-scratch-{}", std::process::id())
}

/// The replay's transfers, as the transfer store of the state the server would serve:
/// a snapshot written beside a transfer store holds no transfer, and the server reads
/// them from its store. The auditor does not trust that store; it reads the transfers
/// of its own replay from nothing instead, each seen only from its own revision on.
struct Replayed(LedgerState);

impl TransferStore for Replayed {
    fn get(&self, id: TransferId) -> Result<Option<StoredTransfer>, String> {
        Ok(self.0.stored_transfer(id))
    }
}

/// The default layout of a data directory: the log in `log/`, snapshots in
/// `snapshots/`.
pub fn data_dir_layout(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join("log"), data_dir.join("snapshots"))
}
