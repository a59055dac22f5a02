//! The auditor: replays a data directory from nothing and checks everything an outside
//! party can check. Every record's checksum, position and revision; every stream's
//! hash chain; every ledger event against the engine's own rules (through
//! `LedgerState::check_and_evolve`); debits equal credits per currency after every
//! event; and the state the server would serve (newest valid snapshot plus the tail)
//! equals the state rebuilt from nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::snapshot;
use crate::store::disk::RealDisk;
use crate::store::format::{self, TornTail};
use crate::store::{EventStore, RecordedEvent, StoreError};
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
/// re-decided by the engine's rules, and the books balanced after it.
#[derive(Default)]
struct Replay {
    states: HashMap<String, LedgerState>,
    hashes: HashMap<String, Vec<Hash>>,
    failure: Option<AuditFailure>,
}

impl Replay {
    fn visit(&mut self, record: &RecordedEvent) {
        if self.failure.is_some() || !is_ledger_stream(&record.stream) {
            return;
        }
        let fail =
            |reason: String| AuditFailure::Event { stream: record.stream.clone(), revision: record.revision, reason };
        let state = self.states.entry(record.stream.clone()).or_default();
        self.hashes.entry(record.stream.clone()).or_default().push(record.hash);
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
            self.failure = Some(AuditFailure::Unbalanced {
                stream: record.stream.clone(),
                revision: record.revision,
                currency: *currency,
            });
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
    let mut replay = Replay::default();
    let report = format::scan(data_dir, |record, _| replay.visit(record)).map_err(AuditFailure::Store)?;
    if let Some(failure) = replay.failure.take() {
        return Err(failure);
    }
    if let Some(torn) = report.torn_tail {
        return Err(AuditFailure::TornTail(torn));
    }
    if let Some(dir) = snapshot_dir {
        compare_served_state(data_dir, dir, &replay.states, &replay.hashes)?;
    }
    Ok(replay.report(report.records, report.heads))
}

/// Audits any backend through the `EventStore` port (EventStoreDB/KurrentDB with
/// `ledgerctl audit verify --store`): every stream's revisions and hash chain are
/// recomputed from the payloads read (what the embedded store's scan checks in its
/// files), then the same replay of the ledger streams.
pub fn verify_store(store: &dyn EventStore) -> Result<AuditReport, AuditFailure> {
    let mut replay = Replay::default();
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
    replayed: &HashMap<String, LedgerState>,
    hashes: &HashMap<String, Vec<Hash>>,
) -> Result<(), AuditFailure> {
    let mut served: HashMap<String, LedgerState> = HashMap::new();
    for (stream, stream_hashes) in hashes {
        snapshot::check_sound(&RealDisk, snapshot_dir, stream, |revision| {
            stream_hashes.get(revision as usize).copied()
        })
        .map_err(|mismatch| match mismatch {
            snapshot::SnapshotMismatch::LogShorter(short) => {
                AuditFailure::LogShorterThanSnapshot { stream: stream.clone(), short }
            }
            mismatch => AuditFailure::SnapshotDiffers { stream: stream.clone(), mismatch },
        })?;
        let hash_at = |revision: u64| Ok(stream_hashes.get(revision as usize).copied());
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
    format::scan(data_dir, |record, _| {
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
