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
use crate::state_store::{self, DiskState, StoreJob, StoreThread};
use crate::store::disk::RealDisk;
use crate::store::format::{self, TornTail};
use crate::store::{EventStore, RecordedEvent, StoreError};
use crate::writer::HAND_OFF_ITEMS;
use ledger_core::chain::{check_link, Hash};
use ledger_core::codec;
use ledger_core::domain::{Account, AccountId, Event, TransferId};
use ledger_core::money::Currency;
use ledger_core::state::{CurrencyTotals, LedgerState, StateStore, StoredTransfer, ACCOUNT_CACHE_BYTES};

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

/// Between hand-offs, the replay takes note of those written every this many events
/// (a look at a channel each event cost some 5% of the replay).
const SETTLE_EVERY_EVENTS: u64 = 1_024;
/// Records in one batch from the scan thread to the replay.
const SCAN_BATCH_RECORDS: usize = 4_096;
/// Batches scanned and not yet replayed, at most: with records of a few hundred bytes,
/// some 10 MB.
const SCAN_BATCHES_AHEAD: usize = 8;

/// The replay's maps, looked up by stream name several times an event: foldhash, not
/// the standard SipHash (some 4% of the replay's thread).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The replay of the ledger streams shared by both audits: every event decoded,
/// re-decided by the engine's rules, and the books balanced after it. Each partition's
/// transfers are handed off, as the writer does, to a transfer store of the auditor's
/// own in a scratch directory (removed at the end), so its memory does not grow with
/// the transfers.
struct Replay {
    states: Map<String, LedgerState>,
    /// Each ledger stream's length, and the chain hashes of the revisions snapshots name.
    hashes: Map<String, StreamHashes>,
    /// The revisions whose hashes are kept, by stream (those snapshots name).
    wanted: Map<String, BTreeSet<u64>>,
    stores: Map<String, StoreThread>,
    hand_off_items: usize,
    /// The budget of each state's accounts cache, in bytes (`ACCOUNT_CACHE_BYTES`).
    account_cache_bytes: usize,
    /// Why a scratch store failed, if one did.
    store_failed: Arc<Mutex<Option<String>>>,
    failure: Option<AuditFailure>,
    scratch: Scratch,
}

#[derive(Default)]
struct StreamHashes {
    len: u64,
    kept: Map<u64, Hash>,
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
            states: Map::default(),
            hashes: Map::default(),
            wanted: wanted.into_iter().collect(),
            stores: Map::default(),
            hand_off_items: HAND_OFF_ITEMS,
            account_cache_bytes: ACCOUNT_CACHE_BYTES,
            store_failed: Arc::new(Mutex::new(None)),
            failure: None,
            scratch: Scratch(scratch),
        }
    }

    /// The state of `stream`, with its scratch store, made on first use.
    fn state(&mut self, stream: &str) -> Result<&mut LedgerState, String> {
        if !self.states.contains_key(stream) {
            let store = Arc::new(DiskState::scratch(&self.scratch.0.join(stream), stream)?);
            let thread = StoreThread::start(store.clone(), self.store_failed.clone()).map_err(|e| e.to_string())?;
            self.stores.insert(stream.to_string(), thread);
            self.states.insert(
                stream.to_string(),
                LedgerState::new().with_store(store).with_account_cache_bytes(self.account_cache_bytes),
            );
        }
        self.states.get_mut(stream).ok_or_else(|| "no state".to_string())
    }

    /// Hands off the transfers of `stream`'s state if enough are in memory, and takes
    /// note of those written; waits while too many are not.
    fn tend_store(&mut self, stream: &str, hash: Hash) {
        let (Some(state), Some(thread)) = (self.states.get_mut(stream), self.stores.get(stream)) else { return };
        if state.in_memory() >= self.hand_off_items {
            if let Some(hand_off) = state.hand_off() {
                let _ = thread.jobs().send(StoreJob { hand_off, hash });
            }
        } else if state.hand_offs_pending() == 0 || state.events_applied() % SETTLE_EVERY_EVENTS != 0 {
            return;
        }
        thread.settle(state);
        if let Some(reason) = self.store_failed.lock().ok().and_then(|failed| failed.clone()) {
            self.failure = Some(AuditFailure::Scratch(reason));
        }
    }

    /// Why the replay failed, if it did: an event, or a scratch store.
    fn failed(&mut self) -> Option<AuditFailure> {
        let scratch = || self.store_failed.lock().ok().and_then(|failed| failed.clone()).map(AuditFailure::Scratch);
        self.failure.take().or_else(scratch)
    }

    fn visit(&mut self, record: &RecordedEvent) {
        self.visit_decoded(&record.stream, record.revision, record.hash, decoded(record));
    }

    /// [`Replay::visit`] of a record of `stream` at `revision` with chain hash `hash`,
    /// its event already decoded ([`decoded`]).
    fn visit_decoded(&mut self, stream: &str, revision: u64, hash: Hash, event: Option<Result<Event, String>>) {
        let Some(event) = event else { return };
        if self.failure.is_some() {
            return;
        }
        let fail = |reason: String| AuditFailure::Event { stream: stream.to_string(), revision, reason };
        if !self.hashes.contains_key(stream) {
            self.hashes.insert(stream.to_string(), StreamHashes::default());
        }
        let Some(hashes) = self.hashes.get_mut(stream) else { return };
        hashes.len = revision + 1;
        if self.wanted.get(stream).is_some_and(|wanted| wanted.contains(&revision)) {
            hashes.kept.insert(revision, hash);
        }
        let state = match self.state(stream) {
            Ok(state) => state,
            Err(reason) => return self.failure = Some(AuditFailure::Scratch(reason)),
        };
        let event = match event {
            Ok(event) => event,
            Err(error) => return self.failure = Some(fail(error)),
        };
        if let Err(error) = state.check_and_evolve(&event) {
            return self.failure = Some(fail(error.to_string()));
        }
        if let Some((currency, _)) = state.totals().iter().find(|(_, totals)| !totals.is_balanced()) {
            return self.failure =
                Some(AuditFailure::Unbalanced { stream: stream.to_string(), revision, currency: *currency });
        }
        self.tend_store(stream, hash);
    }

    fn report(&self, events_checked: u64, heads: impl IntoIterator<Item = (String, (u64, Hash))>) -> AuditReport {
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
        let heads: BTreeMap<String, (u64, Hash)> = heads.into_iter().collect();
        AuditReport {
            events_checked,
            streams: heads.len(),
            ledger_partitions: self.states.len(),
            accounts: self.states.values().map(|state| state.account_count() as usize).sum(),
            transfers: self.states.values().map(|state| state.transfer_count() as usize).sum(),
            totals,
            heads,
        }
    }
}

/// The event of a ledger stream's record, decoded, of the type the record names;
/// `None` for other streams.
fn decoded(record: &RecordedEvent) -> Option<Result<Event, String>> {
    if !is_ledger_stream(&record.stream) {
        return None;
    }
    Some(codec::decode_event(&record.payload).map_err(|e| e.to_string()).and_then(|event| {
        if event.kind.type_name() == record.event_type {
            Ok(event)
        } else {
            Err(format!("stored type {} but the event is {}", record.event_type, event.kind.type_name()))
        }
    }))
}

/// What the scan thread hands the replay of a record: its stream by number (the
/// record itself is dropped where it was made), its place, and its event decoded.
struct Scanned {
    stream: usize,
    revision: u64,
    hash: Hash,
    segment: u32,
    event: Option<Result<Event, String>>,
}

/// Records from the scan thread, and the names of the streams first seen in them
/// (numbered in the order seen).
#[derive(Default)]
struct Batch {
    new_streams: Vec<String>,
    records: Vec<Scanned>,
}

/// Audits the store in `data_dir`; snapshots are looked for in `snapshot_dir`.
pub fn verify(data_dir: &Path, snapshot_dir: Option<&Path>) -> Result<AuditReport, AuditFailure> {
    verify_with(data_dir, snapshot_dir, HAND_OFF_ITEMS, ACCOUNT_CACHE_BYTES)
}

/// `verify`, handing each partition's transfers to the scratch store every
/// `hand_off_items` and caching no account (tests make it
/// small, so the replay reads from the store).
pub fn verify_handing_off(
    data_dir: &Path,
    snapshot_dir: Option<&Path>,
    hand_off_items: usize,
) -> Result<AuditReport, AuditFailure> {
    verify_with(data_dir, snapshot_dir, hand_off_items, 0)
}

fn verify_with(
    data_dir: &Path,
    snapshot_dir: Option<&Path>,
    hand_off_items: usize,
    account_cache_bytes: usize,
) -> Result<AuditReport, AuditFailure> {
    let snapshots = snapshot_dir.map(|dir| snapshot::named_revisions(&RealDisk, dir)).unwrap_or_default();
    let mut wanted = snapshots.clone();
    // The server's state store is not read, but the row it claims is checked like a
    // snapshot's last event: it was written only once its events were durable.
    let state_dir = data_dir.parent().unwrap_or(data_dir).join("state");
    let claimed = state_store::read_claimed_file(&state_dir).unwrap_or_else(|reason| {
        // A damaged claimed file proves nothing (the server rebuilds such a store).
        tracing::warn!(reason, "the state store's claimed file is not sound; not checked");
        None
    });
    if let Some((stream, claimed)) = &claimed {
        if let Some(last) = claimed.events.checked_sub(1) {
            wanted.entry(stream.clone()).or_default().insert(last);
        }
    }
    let mut replay = Replay::new(scratch_dir(data_dir), wanted);
    replay.hand_off_items = hand_off_items.max(1);
    replay.account_cache_bytes = account_cache_bytes;
    let mut first_segment_of_a_tail = u32::MAX;
    // Two threads: this one replays while `audit-scan` reads the segments and checks
    // their checksums and hash links, a bounded queue of batches between them.
    let (batches, scanned) = std::sync::mpsc::sync_channel::<Batch>(SCAN_BATCHES_AHEAD);
    let report = std::thread::scope(|scope| {
        let scanner = std::thread::Builder::new()
            .name("audit-scan".into())
            .spawn_scoped(scope, move || {
                let mut batch = Batch::default();
                let mut numbers: Map<String, usize> = Map::default();
                let report = format::scan(data_dir, |record, location| {
                    // Decoded here, to share the work between the two threads.
                    let stream = match numbers.get(&record.stream) {
                        Some(number) => *number,
                        None => {
                            batch.new_streams.push(record.stream.clone());
                            let number = numbers.len();
                            numbers.insert(record.stream.clone(), number);
                            number
                        }
                    };
                    let event = decoded(&record);
                    let (revision, hash, segment) = (record.revision, record.hash, location.segment);
                    batch.records.push(Scanned { stream, revision, hash, segment, event });
                    if batch.records.len() == SCAN_BATCH_RECORDS {
                        // A replay that failed stops receiving: the scan still checks
                        // the rest of the log.
                        let next = Batch { new_streams: Vec::new(), records: Vec::with_capacity(SCAN_BATCH_RECORDS) };
                        let _ = batches.send(std::mem::replace(&mut batch, next));
                    }
                });
                let _ = batches.send(batch);
                report
            })
            .map_err(|e| AuditFailure::Scratch(format!("start the scan thread: {e}")))?;
        let mut streams: Vec<String> = Vec::new();
        for batch in scanned.iter() {
            streams.extend(batch.new_streams);
            for scanned in batch.records {
                let stream = streams[scanned.stream].as_str();
                // A stream with snapshots is served from the oldest (at the latest)
                // one's last event on.
                if snapshots.get(stream).is_some_and(|named| named.first() == Some(&scanned.revision)) {
                    first_segment_of_a_tail = first_segment_of_a_tail.min(scanned.segment);
                }
                replay.visit_decoded(stream, scanned.revision, scanned.hash, scanned.event);
            }
        }
        match scanner.join() {
            Ok(report) => report.map_err(AuditFailure::Store),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;
    if let Some(failure) = replay.failed() {
        return Err(failure);
    }
    if let Some(torn) = report.torn_tail {
        return Err(AuditFailure::TornTail(torn));
    }
    if let Some((stream, claimed)) = claimed {
        check_claimed(&state_dir, &stream, claimed, replay.hashes.get(&stream))?;
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
            if let Some(failure) = replay.failed() {
                return Err(failure);
            }
        }
    }
    Ok(replay.report(count, heads))
}

/// Rebuilds each partition the way the server starts (newest snapshot that matches the
/// chain, then the tail) and compares it with the replay from nothing; a stream with
/// no such snapshot is served from its first event, as the replay was.
fn compare_served_state(
    data_dir: &Path,
    snapshot_dir: &Path,
    first_segment: u32,
    replayed: &Map<String, LedgerState>,
    hashes: &Map<String, StreamHashes>,
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
        // No snapshot that matches the log: the server replays the stream from nothing
        // (or goes on from its state store's checkpoint, checked by `check_claimed`),
        // as this audit's own replay did; nothing more to compare.
        let Some(mut state) = loaded else { continue };
        if let Some(replayed) = replayed.get(stream) {
            state = state.with_store(Arc::new(Replayed(replayed.clone())));
        }
        served.insert(stream.clone(), state);
    }
    if served.is_empty() {
        return Ok(());
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

/// The server's state store claims `claimed` of `stream`: the log must hold that event
/// with that hash (failures as for a snapshot).
fn check_claimed(
    state_dir: &Path,
    stream: &str,
    claimed: state_store::Covered,
    hashes: Option<&StreamHashes>,
) -> Result<(), AuditFailure> {
    let Some(last) = claimed.events.checked_sub(1) else { return Ok(()) };
    let file = state_dir.join(state_store::CLAIMED_FILE);
    match hashes.and_then(|hashes| hashes.at(last)) {
        Some(hash) if hash == claimed.hash => Ok(()),
        Some(_) => Err(AuditFailure::SnapshotDiffers {
            stream: stream.to_string(),
            mismatch: snapshot::SnapshotMismatch::OtherHistory { file, events: claimed.events },
        }),
        None => Err(AuditFailure::LogShorterThanSnapshot {
            stream: stream.to_string(),
            short: snapshot::LogShorter { file, events: claimed.events },
        }),
    }
}

/// Where the auditor keeps its scratch stores for a log in `log_dir`: beside it (on the
/// same disk, not in a temporary directory that may be memory).
fn scratch_dir(log_dir: &Path) -> PathBuf {
    let parent = log_dir.parent().unwrap_or(log_dir);
    parent.join(scratch_name())
}

/// A name no other audit running now uses (several may run in one process).
fn scratch_name() -> String {
    static AUDITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let audit = AUDITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("audit-scratch-{}-{audit}", std::process::id())
}

/// The replay's transfers, as the transfer store of the state the server would serve:
/// a snapshot written beside a transfer store holds no transfer, and the server reads
/// them from its store. The auditor does not trust that store; it reads the transfers
/// of its own replay from nothing instead, each seen only from its own revision on.
struct Replayed(LedgerState);

impl StateStore for Replayed {
    fn transfer(&self, id: TransferId) -> Result<Option<StoredTransfer>, String> {
        Ok(self.0.stored_transfer(id))
    }

    /// A snapshot holds every account (snapshots are written only without a state
    /// store); the tail opens the rest. So none is read from here.
    fn account(&self, _id: AccountId) -> Result<Option<Account>, String> {
        Ok(None)
    }
}

/// The default layout of a data directory: the log in `log/`, snapshots in
/// `snapshots/`.
pub fn data_dir_layout(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join("log"), data_dir.join("snapshots"))
}
