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
    /// The ledger streams named so far, by number (in the order named): a record is
    /// replayed by its stream's number, found once per stream, not by name several
    /// times an event (some 5% of the replay's thread).
    streams: Vec<ReplayStream>,
    numbers: Map<String, usize>,
    /// The revisions whose hashes are kept, by stream (those snapshots name).
    wanted: Map<String, BTreeSet<u64>>,
    hand_off_items: usize,
    /// The budget of each state's accounts cache, in bytes (`ACCOUNT_CACHE_BYTES`).
    account_cache_bytes: usize,
    /// Why a scratch store failed, if one did.
    store_failed: Arc<Mutex<Option<String>>>,
    failure: Option<AuditFailure>,
    /// Last: removed once every scratch store's thread has stopped.
    scratch: Scratch,
}

/// A ledger stream (a partition) the replay was given: numbered at its first event.
struct ReplayStream {
    name: String,
    /// The revisions whose hashes are kept.
    wanted: BTreeSet<u64>,
    /// The stream's length and the hashes kept.
    hashes: StreamHashes,
    state: LedgerState,
    /// The thread of the partition's scratch store.
    store: StoreThread,
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
            streams: Vec::new(),
            numbers: Map::default(),
            wanted: wanted.into_iter().collect(),
            hand_off_items: HAND_OFF_ITEMS,
            account_cache_bytes: ACCOUNT_CACHE_BYTES,
            store_failed: Arc::new(Mutex::new(None)),
            failure: None,
            scratch: Scratch(scratch),
        }
    }

    /// The number of ledger stream `stream`, given with its state and scratch store
    /// on first use; `None` if those could not be made (the failure is kept).
    fn number(&mut self, stream: &str) -> Option<usize> {
        if let Some(number) = self.numbers.get(stream) {
            return Some(*number);
        }
        match self.start_stream(stream) {
            Ok(started) => {
                let number = self.streams.len();
                self.streams.push(started);
                self.numbers.insert(stream.to_string(), number);
                Some(number)
            }
            Err(reason) => {
                self.failure.get_or_insert(AuditFailure::Scratch(reason));
                None
            }
        }
    }

    /// Ledger stream `stream`, with a state and a scratch store of its own.
    fn start_stream(&mut self, stream: &str) -> Result<ReplayStream, String> {
        let store = Arc::new(DiskState::scratch(&self.scratch.0.join(stream), stream)?);
        let thread = StoreThread::start(store.clone(), self.store_failed.clone()).map_err(|e| e.to_string())?;
        Ok(ReplayStream {
            name: stream.to_string(),
            wanted: self.wanted.remove(stream).unwrap_or_default(),
            hashes: StreamHashes::default(),
            state: LedgerState::new().with_store(store).with_account_cache_bytes(self.account_cache_bytes),
            store: thread,
        })
    }

    /// Ledger stream `stream`, if it had an event.
    fn stream(&self, stream: &str) -> Option<&ReplayStream> {
        self.numbers.get(stream).and_then(|number| self.streams.get(*number))
    }

    /// Why the replay failed, if it did: an event, or a scratch store.
    fn failed(&mut self) -> Option<AuditFailure> {
        let scratch = || self.store_failed.lock().ok().and_then(|failed| failed.clone()).map(AuditFailure::Scratch);
        self.failure.take().or_else(scratch)
    }

    fn visit(&mut self, record: &RecordedEvent) {
        // Only ledger partitions are numbered (there may be millions of other streams).
        let Some(event) = decoded(record) else { return };
        let Some(number) = self.number(&record.stream) else { return };
        self.visit_decoded(number, record.revision, record.hash, event.as_ref().map_err(String::as_str));
    }

    /// [`Replay::visit`] of a record of stream `number` at `revision` with chain hash
    /// `hash`, its event already decoded ([`decoded`]).
    fn visit_decoded(&mut self, number: usize, revision: u64, hash: Hash, event: Result<&Event, &str>) {
        if self.failure.is_some() {
            return;
        }
        let Replay { streams, hand_off_items, store_failed, failure, .. } = self;
        let Some(ReplayStream { name, wanted, hashes, state, store }) = streams.get_mut(number) else { return };
        hashes.len = revision + 1;
        if wanted.contains(&revision) {
            hashes.kept.insert(revision, hash);
        }
        let fail = |reason: String| AuditFailure::Event { stream: name.clone(), revision, reason };
        let event = match event {
            Ok(event) => event,
            Err(error) => return *failure = Some(fail(error.to_string())),
        };
        if let Err(error) = state.check_and_evolve(event) {
            return *failure = Some(fail(error.to_string()));
        }
        if let Some((currency, _)) = state.totals().iter().find(|(_, totals)| !totals.is_balanced()) {
            return *failure = Some(AuditFailure::Unbalanced { stream: name.clone(), revision, currency: *currency });
        }
        if let Some(reason) = tend_store(state, store, hash, *hand_off_items, store_failed) {
            *failure = Some(AuditFailure::Scratch(reason));
        }
    }

    fn report(&self, events_checked: u64, heads: impl IntoIterator<Item = (String, (u64, Hash))>) -> AuditReport {
        let mut totals: BTreeMap<Currency, CurrencyTotals> = BTreeMap::new();
        let states = || self.streams.iter().map(|stream| &stream.state);
        for state in states() {
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
            ledger_partitions: states().count(),
            accounts: states().map(|state| state.account_count() as usize).sum(),
            transfers: states().map(|state| state.transfer_count() as usize).sum(),
            totals,
            heads,
        }
    }
}

/// Hands off the transfers of `state` to its scratch store's `thread` if at least
/// `hand_off_items` are in memory, and takes note of those written; waits while too
/// many are not. Why a scratch store failed, if one did (in `store_failed`).
fn tend_store(
    state: &mut LedgerState,
    thread: &StoreThread,
    hash: Hash,
    hand_off_items: usize,
    store_failed: &Mutex<Option<String>>,
) -> Option<String> {
    if state.in_memory() >= hand_off_items {
        if let Some(hand_off) = state.hand_off() {
            let _ = thread.jobs().send(StoreJob { hand_off, hash });
        }
    } else if state.hand_offs_pending() == 0 || !state.events_applied().is_multiple_of(SETTLE_EVERY_EVENTS) {
        return None;
    }
    thread.settle(state);
    store_failed.lock().ok().and_then(|failed| failed.clone())
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
        // By the scan's number of each stream: the replay's number, and the revision
        // of the oldest snapshot's last event (a stream with snapshots is served from
        // the oldest, at the latest, one's last event on).
        // `None` for a stream that is not a ledger partition's (or whose scratch store
        // could not be made: the replay reports that failure).
        let mut streams: Vec<Option<(usize, Option<u64>)>> = Vec::new();
        for batch in scanned.iter() {
            for name in batch.new_streams {
                let first_named = snapshots.get(&name).and_then(|named| named.first().copied());
                let number = if is_ledger_stream(&name) { replay.number(&name) } else { None };
                streams.push(number.map(|number| (number, first_named)));
            }
            for scanned in &batch.records {
                // The scan names each stream in the batch of its first record.
                let Some((number, first_named)) = streams[scanned.stream] else { continue };
                let Some(event) = &scanned.event else { continue };
                if first_named == Some(scanned.revision) {
                    first_segment_of_a_tail = first_segment_of_a_tail.min(scanned.segment);
                }
                replay.visit_decoded(number, scanned.revision, scanned.hash, event.as_ref().map_err(String::as_str));
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
        check_claimed(&state_dir, &stream, claimed, replay.stream(&stream).map(|stream| &stream.hashes))?;
    }
    if let Some(dir) = snapshot_dir {
        compare_served_state(data_dir, dir, first_segment_of_a_tail, &replay)?;
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
    replay: &Replay,
) -> Result<(), AuditFailure> {
    let mut served: HashMap<String, LedgerState> = HashMap::new();
    for replayed in &replay.streams {
        let (stream_hashes, stream) = (&replayed.hashes, &replayed.name);
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
        state = state.with_store(Arc::new(Replayed(replayed.state.clone())));
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
        if replay.stream(stream).map(|replayed| &replayed.state) != Some(state) {
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
