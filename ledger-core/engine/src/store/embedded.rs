//! The embedded event store: segmented append-only files in one directory.
//!
//! One committer thread owns the files. It takes every append queued since its last
//! sync as one group, writes their frames with one `write`, makes them durable with one
//! `fdatasync`, and only then updates the read index and answers (group commit). The
//! first failed write or sync poisons the store: it is never retried, because the
//! kernel may already have dropped the dirty pages; the store must be reopened, which
//! recovers from what is really on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use super::disk::{Disk, DiskFile, DiskLock, LockError, RealDisk};
use super::format::{self, Location, TornTail, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::log_index::{Expected, LogIndex};
use super::seal::{Sealed, SegmentTable};
use super::*;
use ledger_core::chain::{chain_hash_with, Hash, GENESIS_HASH};

mod direct;
mod read;
mod sealing;

pub use sealing::SEALS_IN_MEMORY;

/// A segment is closed once it would grow past this; one frame never spans two.
pub const SEGMENT_BYTES_MAX: u64 = 256 << 20;
/// Largest group the committer writes with one sync.
const GROUP_BYTES_MAX: usize = 64 << 20;
/// Options of [`EmbeddedStore::open`].
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    pub segment_bytes_max: u64,
    /// Whether a segment's seal is written by a thread of its own while appends go on
    /// (the default), or by the committer before its next group (the simulator and
    /// the power-loss tests, whose runs must not depend on thread timing).
    pub seal_in_background: bool,
    /// Sealed segments whose filters stay in memory; the older are found through the
    /// streams' directory ([`SEALS_IN_MEMORY`] by default).
    pub seals_in_memory: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            segment_bytes_max: SEGMENT_BYTES_MAX,
            seal_in_background: true,
            seals_in_memory: SEALS_IN_MEMORY,
        }
    }
}

/// What opening found on disk.
#[derive(Clone, Debug)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Records in the log.
    pub records: u64,
    /// Sealed segments opened through their seal, without reading their records.
    pub sealed: usize,
    /// Of those, the segments found through the streams' directory.
    pub covered: usize,
    /// Records read and checked while opening: the unsealed last segment's, and those
    /// of any sealed segment whose seal was missing or did not check (written again).
    pub scanned: u64,
    /// A torn tail that was cut off.
    pub torn_tail: Option<TornTail>,
}

struct Shared {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    index: RwLock<LogIndex>,
    seals_in_memory: usize,
    segments: RwLock<Vec<Arc<dyn DiskFile>>>,
    poisoned: AtomicBool,
    poison_reason: Mutex<String>,
    head: tokio::sync::watch::Sender<Position>,
    /// Fault injection for tests: once this file exists, every sync fails as if the
    /// disk had failed it (see `fail_syncs_once_exists`). None, the default: never.
    fail_syncs_once: std::sync::OnceLock<PathBuf>,
}

enum Request {
    Append { stream: String, expected: ExpectedRevision, events: EventBatch, bytes: usize, done: AppendCallback },
    Flush { done: FlushCallback },
}

/// The embedded store. Cheap to share behind an `Arc`; closes when dropped.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    sender: Mutex<Option<Sender<Request>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// Holds an exclusive lock on `LOCK` in the directory for as long as the store is
    /// open: one process writes a log.
    _lock: Box<dyn DiskLock>,
}

fn io_error(operation: &'static str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Io { operation, path: path.to_path_buf(), message: error.to_string() }
}

fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<(), StoreError> {
    disk.sync_dir(dir).map_err(|e| io_error("fsync directory", dir, e))
}

/// The index, the segment files in order, and what opening found.
type OpenedLog = (LogIndex, Vec<Arc<dyn DiskFile>>, RecoveryReport);

/// Finds the log in `dir`: each sealed segment through its seal, the last segment (and
/// any sealed one whose seal is missing or does not check, whose seal is then written
/// again) by reading and checking every record; a torn tail is cut.
fn open_index(disk: &dyn Disk, dir: &Path) -> Result<OpenedLog, StoreError> {
    let mut listed = format::list_segments_on(disk, dir)?;
    let mut report = RecoveryReport { segments: 0, records: 0, sealed: 0, covered: 0, scanned: 0, torn_tail: None };
    // An empty last segment (its header never whole) goes first, so that the one before
    // it, which takes appends again, is read rather than trusted through its seal.
    if let Some((segment, path)) = listed.last() {
        let file = disk.open_append(path).map_err(|e| io_error("open", path, e))?;
        let len = file.file_len().map_err(|e| io_error("stat", path, e))?;
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        let whole = len >= SEGMENT_HEADER_BYTES as u64
            && file.read_exact_at(&mut header, 0).is_ok()
            && header == format::segment_header(*segment);
        if !whole && format::is_empty_segment(&disk.read(path).map_err(|e| io_error("read", path, e))?) {
            tracing::warn!(file = %path.display(), bytes = len, "removing an empty last segment");
            disk.remove_file(path).map_err(|e| io_error("remove", path, e))?;
            sync_dir(disk, dir)?;
            report.torn_tail =
                Some(TornTail { file: path.clone(), offset: 0, bytes: len, reason: "empty segment".into() });
            listed.pop();
        }
    }
    sealing::remove_stray_seals(disk, dir, listed.len())?;
    // The seals the newest directory covers drop their filters as they are opened; if
    // it does not check once they are all open, the filters are read again.
    let mut covering = sealing::newest_directory(disk, dir, listed.len())?;
    let mut index = LogIndex::default();
    let mut files = Vec::with_capacity(listed.len());
    for (number, (segment, path)) in listed.iter().enumerate() {
        let last = number + 1 == listed.len();
        if let Some(covered) = covering.filter(|covered| index.sealed.len() as u64 == u64::from(*covered) + 1) {
            if index.directory.is_none() {
                covering = sealing::open_directory(disk, dir, &mut index, covered)?;
                report.covered = if covering.is_some() { report.covered } else { 0 };
            }
        }
        let file = disk.open_append(path).map_err(|e| io_error("open", path, e))?;
        let first_position = index.next_position();
        if !last {
            let len = file.file_len().map_err(|e| io_error("stat", path, e))?;
            if let Some(mut sealed) = Sealed::open(disk, dir, *segment, first_position, len)? {
                if covering.is_some_and(|covered| sealed.segment <= covered) {
                    sealed.cover();
                    report.covered += 1;
                }
                index.sealed.push(sealed);
                report.sealed += 1;
                files.push(file);
                continue;
            }
        }
        if index.directory.is_none() && covering.take().is_some() {
            // A segment to scan before the directory could be checked: its lookups
            // need every seal's filter.
            sealing::uncover(&mut index)?;
            report.covered = 0;
        }
        let mut table = SegmentTable::new(*segment, first_position);
        let bytes = disk.read(path).map_err(|e| format::read_error(path, e))?;
        let scan = format::scan_segment(
            *segment,
            path,
            &bytes,
            last,
            first_position,
            &mut |stream| Ok(index.head(stream)?.map(|head| (head.revision, head.hash))),
            &mut |record, location| table.push(&record.stream, record.revision, &[location.offset], record.hash),
        )?;
        report.scanned += scan.records;
        if scan.padding > 0 {
            // A direct write's zeros after the last frame (`embedded/direct.rs`): cut,
            // so that the file ends at its last frame; nothing was lost.
            file.set_len(scan.len).map_err(|e| io_error("truncate", path, e))?;
            file.sync_data().map_err(|e| io_error("fdatasync", path, e))?;
        }
        if let Some(torn) = scan.torn_tail {
            tracing::warn!(file = %torn.file.display(), offset = torn.offset, bytes = torn.bytes, reason = %torn.reason, "cutting a torn tail");
            file.set_len(torn.offset).map_err(|e| io_error("truncate", &torn.file, e))?;
            file.sync_all().map_err(|e| io_error("fsync", &torn.file, e))?;
            sync_dir(disk, dir)?;
            report.torn_tail = Some(torn);
        }
        if last {
            index.tables.push(Arc::new(table));
        } else {
            tracing::info!(segment, "sealing a segment that had no valid seal");
            index.seal(Sealed::write(disk, dir, &table, scan.len)?);
        }
        files.push(file);
    }
    if index.directory.is_none() && report.covered > 0 {
        sealing::uncover(&mut index)?;
        report.covered = 0;
    }
    report.segments = listed.len();
    report.records = index.next_position();
    Ok((index, files, report))
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`: opens each sealed segment through its seal
    /// (`seal.rs`), scans the last segment checking every record and hash link, cuts a
    /// torn tail, and refuses to open on corruption elsewhere. Damage in a sealed
    /// segment is found when a record is read (each is checked) and by
    /// `ledgerctl audit verify`, which reads everything.
    pub fn open(
        dir: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<(EmbeddedStore, RecoveryReport), StoreError> {
        EmbeddedStore::open_on(Arc::new(RealDisk), dir, options)
    }

    /// [`EmbeddedStore::open`] with every file operation going to `disk`.
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<(EmbeddedStore, RecoveryReport), StoreError> {
        let dir = dir.as_ref().to_path_buf();
        disk.create_dir_all(&dir).map_err(|e| io_error("create_dir", &dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = match disk.lock(&lock_path) {
            Ok(lock) => lock,
            Err(LockError::WouldBlock) => return Err(StoreError::Locked(dir.clone())),
            Err(LockError::Open(error)) => return Err(io_error("open", &lock_path, error)),
            Err(LockError::Lock(error)) => return Err(io_error("lock", &lock_path, error)),
        };
        let (index, segments, recovery) = open_index(&*disk, &dir)?;
        let records = recovery.records;
        let (head, _) = tokio::sync::watch::channel(records);
        let shared = Arc::new(Shared {
            disk,
            dir: dir.clone(),
            index: RwLock::new(index),
            seals_in_memory: options.seals_in_memory,
            segments: RwLock::new(segments),
            poisoned: AtomicBool::new(false),
            poison_reason: Mutex::new(String::new()),
            head,
            fail_syncs_once: std::sync::OnceLock::new(),
        });
        let mut committer = Committer::new(shared.clone(), options, records)?;
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || {
                crate::threads::abort_on_panic("store-committer");
                committer.run(receiver)
            })
            .map_err(|e| io_error("spawn committer", &dir, e))?;
        let store = EmbeddedStore {
            shared,
            sender: Mutex::new(Some(sender)),
            committer: Mutex::new(Some(thread)),
            _lock: lock,
        };
        Ok((store, recovery))
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Stops accepting appends, lets the committer finish what is queued, and waits.
    pub fn close(&self) {
        drop(self.sender.lock().map(|mut sender| sender.take()));
        if let Ok(mut committer) = self.committer.lock() {
            if let Some(thread) = committer.take() {
                let _ = thread.join();
            }
        }
    }

    /// Fault injection, for tests of what a failing disk does to a whole process: once
    /// a file exists at `trigger`, every sync fails with EIO as a failing disk's
    /// `fdatasync` would (the first failure poisons the store). Off unless called; only
    /// the first call counts.
    pub fn fail_syncs_once_exists(&self, trigger: PathBuf) {
        let _ = self.shared.fail_syncs_once.set(trigger);
    }

    fn check_poisoned(&self) -> Result<(), StoreError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            // ok: the reason is only the text of the error; the poisoning itself is the flag.
            let reason = self.shared.poison_reason.lock().map(|r| r.clone()).unwrap_or_default();
            return Err(StoreError::Poisoned(reason));
        }
        Ok(())
    }

    fn send(&self, request: Request) -> Result<(), Request> {
        let sender = match self.sender.lock() {
            Ok(sender) => sender.clone(),
            Err(_) => None,
        };
        match sender {
            Some(sender) => sender.send(request).map_err(|error| error.0),
            None => Err(request),
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl EventStore for EmbeddedStore {
    fn failure(&self) -> Option<String> {
        if !self.shared.poisoned.load(Ordering::Acquire) {
            return None;
        }
        // ok: the reason is only the text of the error; the poisoning itself is the flag.
        Some(self.shared.poison_reason.lock().map(|r| r.clone()).unwrap_or_default())
    }

    fn append_with(&self, stream: &str, expected: ExpectedRevision, events: EventBatch, done: AppendCallback) {
        if let Err(error) = self.check_poisoned() {
            return done(Err(error));
        }
        let bytes = match check_append(stream, &events) {
            Ok(bytes) => bytes,
            Err(error) => return done(Err(error)),
        };
        let request = Request::Append { stream: stream.to_string(), expected, events, bytes, done };
        if let Err(Request::Append { done, .. }) = self.send(request) {
            done(Err(StoreError::Closed));
        }
    }

    fn flush_with(&self, done: FlushCallback) {
        if let Err(Request::Flush { done }) = self.send(Request::Flush { done }) {
            done(Err(StoreError::Closed));
        }
    }

    fn read_stream(
        &self,
        stream: &str,
        from: Revision,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.check_poisoned()?;
        let located =
            self.shared.index.read().map_err(|_| StoreError::Closed)?.stream(stream, from, direction, max_count)?;
        self.read_located(stream, located)
    }

    fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.check_poisoned()?;
        let located = self.shared.index.read().map_err(|_| StoreError::Closed)?.positions(from, max_count)?;
        self.read_located("", located)
    }

    fn stream_head(&self, stream: &str) -> Result<Option<StreamHead>, StoreError> {
        self.check_poisoned()?;
        self.shared.index.read().map_err(|_| StoreError::Closed)?.head(stream)
    }

    fn stream_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.check_poisoned()?;
        self.shared.index.read().map_err(|_| StoreError::Closed)?.names(prefix)
    }

    fn watch_head(&self) -> tokio::sync::watch::Receiver<Position> {
        self.shared.head.subscribe()
    }
}

/// The single owner of the segment files.
struct Committer {
    shared: Arc<Shared>,
    options: EmbeddedOptions,
    file: Arc<dyn DiskFile>,
    segment: u32,
    segment_len: u64,
    next_position: Position,
    /// Heads of the streams appended to in the group being committed (written, not yet
    /// durable nor in the index); every other head is the index's.
    group_heads: HashMap<String, StreamHead>,
    /// Segments moved past, with their length, whose seal is not started yet.
    to_seal: Vec<(u32, u64)>,
    /// The thread writing a seal, if one is.
    sealer: Option<JoinHandle<()>>,
    buffer: Vec<u8>,
    /// Reused input of the chain hash.
    chain_input: Vec<u8>,
    /// The current segment's synced bytes before this offset have left the page cache
    /// (see [`Committer::drop_synced_pages`]).
    dropped_to: u64,
    /// The segment before the current one, and the offset from which its pages are
    /// still cached: dropped once the current segment holds the cached window.
    previous: Option<(Arc<dyn DiskFile>, u64)>,
    /// The current segment opened for direct writes, where the disk has them.
    direct: Option<direct::DirectLog>,
}

/// Bytes at the end of the log whose pages stay in the page cache once synced, for
/// readers that follow the log closely (the read models' projector, subscribers). Older
/// written pages are dropped: the log is written once and read rarely, and a page cache
/// grown with every byte ever written evicts the state store's and the read models'
/// pages (and on a VM, filling fresh pages is what a 100M-transfer run spent a quarter
/// of its CPU on). Reads still go through the cache as usual.
const LOG_CACHED_BYTES: u64 = 32 << 20;
/// Fewest bytes dropped at once: one `posix_fadvise` call per this many bytes written.
const LOG_DROP_BYTES_MIN: u64 = 8 << 20;

struct Pending {
    done: Completion,
    stream: String,
    /// The segment of the append's frame (a frame never spans two) and its records'
    /// offsets in it.
    segment: u32,
    offsets: Vec<u32>,
    outcome: AppendOutcome,
}

impl Pending {
    /// A request that wrote nothing (a flush, or an append after a failure in its group).
    fn unwritten(done: Completion, stream: String) -> Pending {
        Pending { done, stream, segment: 0, offsets: Vec::new(), outcome: empty_outcome() }
    }
}

enum Completion {
    Append(AppendCallback),
    Flush(FlushCallback),
}

impl Committer {
    fn new(shared: Arc<Shared>, options: EmbeddedOptions, next_position: Position) -> Result<Committer, StoreError> {
        let (existing, segment_count) = {
            let segments = shared.segments.read().map_err(|_| StoreError::Closed)?;
            (segments.last().cloned(), segments.len() as u32)
        };
        let (file, segment, segment_len) = match existing {
            Some(file) => {
                let path = shared.dir.join(format::segment_file_name(segment_count - 1));
                let segment_len = file.file_len().map_err(|e| io_error("stat", &path, e))?;
                (file, segment_count - 1, segment_len)
            }
            None => (create_segment(&shared, 0, next_position)?, 0, SEGMENT_HEADER_BYTES as u64),
        };
        let direct = direct::DirectLog::open(&shared, segment, &*file, segment_len)?;
        Ok(Committer {
            direct,
            shared,
            options,
            file,
            segment,
            segment_len,
            next_position,
            group_heads: HashMap::new(),
            to_seal: Vec::new(),
            sealer: None,
            buffer: Vec::new(),
            chain_input: Vec::new(),
            dropped_to: 0,
            previous: None,
        })
    }

    /// Creates the next segment, durable with its header and its directory entry.
    fn roll(&mut self) -> Result<(), StoreError> {
        // Wrapping, as before: segment 0 exists, so the create below fails cleanly.
        let segment = self.segment.wrapping_add(1);
        self.cut_padding()?;
        let previous = std::mem::replace(&mut self.file, create_segment(&self.shared, segment, self.next_position)?);
        self.direct = direct::DirectLog::open(&self.shared, segment, &*self.file, SEGMENT_HEADER_BYTES as u64)?;
        self.previous = Some((previous, self.dropped_to));
        self.dropped_to = 0;
        self.to_seal.push((self.segment, self.segment_len));
        self.segment = segment;
        self.segment_len = SEGMENT_HEADER_BYTES as u64;
        Ok(())
    }

    /// Cuts the zeros a direct write left after the segment's last frame, durably: a
    /// segment the store moves past, or closes, ends at its last frame.
    fn cut_padding(&mut self) -> Result<(), StoreError> {
        if self.direct.is_none() {
            return Ok(());
        }
        let path = self.shared.dir.join(format::segment_file_name(self.segment));
        self.file.set_len(self.segment_len).map_err(|e| io_error("truncate", &path, e))?;
        self.file.sync_data().map_err(|e| io_error("fdatasync", &path, e))
    }

    /// After a sync: lets the synced pages older than the last `LOG_CACHED_BYTES` leave
    /// the page cache. Advice only: a failure is logged and changes nothing.
    fn drop_synced_pages(&mut self) {
        let keep_from = self.segment_len.saturating_sub(LOG_CACHED_BYTES);
        if keep_from > 0 {
            if let Some((file, from)) = self.previous.take() {
                if let Err(error) = file.drop_cached(from, None) {
                    tracing::debug!(%error, "dropping a written segment's cached pages");
                }
            }
        }
        if keep_from >= self.dropped_to + LOG_DROP_BYTES_MIN {
            if let Err(error) = self.file.drop_cached(self.dropped_to, Some(keep_from - self.dropped_to)) {
                tracing::debug!(%error, "dropping the log's cached pages");
            }
            self.dropped_to = keep_from;
        }
    }

    /// The head of `stream` as this group sees it.
    fn head(&self, stream: &str) -> Result<Option<StreamHead>, StoreError> {
        if let Some(head) = self.group_heads.get(stream) {
            return Ok(Some(*head));
        }
        self.shared.index.read().map_err(|_| StoreError::Closed)?.head(stream)
    }

    /// Starts writing the seal of the oldest segment moved past, once all of its records
    /// are in its table (after the group that moved past it is published), on a thread
    /// of its own, one at a time in order: appends go on meanwhile, and readers read the
    /// table until the seal takes its place.
    fn seal_moved_past(&mut self) {
        if self.sealer.as_ref().is_some_and(|sealer| !sealer.is_finished()) {
            return;
        }
        self.join_sealer();
        if !self.options.seal_in_background {
            return self.seal_now();
        }
        let Some((segment, segment_len)) = (!self.to_seal.is_empty()).then(|| self.to_seal.remove(0)) else {
            return;
        };
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new().name("store-sealer".into()).spawn(move || {
            if let Err(error) = sealing::write_seal(&shared, segment, segment_len) {
                poison(&shared, &error);
            }
        });
        match spawned {
            Ok(sealer) => self.sealer = Some(sealer),
            Err(error) => poison(&self.shared, &io_error("spawn sealer", &self.shared.dir, error)),
        }
    }

    /// Writes every seal due on this thread, in order (without a background sealer,
    /// and when the store closes).
    fn seal_now(&mut self) {
        for (segment, segment_len) in std::mem::take(&mut self.to_seal) {
            if let Err(error) = sealing::write_seal(&self.shared, segment, segment_len) {
                self.poison(&error);
                return;
            }
        }
    }

    fn join_sealer(&mut self) {
        if let Some(sealer) = self.sealer.take() {
            let _ = sealer.join();
        }
    }

    fn run(&mut self, receiver: Receiver<Request>) {
        while let Ok(first) = receiver.recv() {
            let mut group = vec![first];
            let mut bytes = 0usize;
            while bytes < GROUP_BYTES_MAX {
                match receiver.try_recv() {
                    Ok(request) => {
                        if let Request::Append { bytes: b, .. } = &request {
                            bytes += b;
                        }
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
        // Closing: the seals still to write are written before the store closes, and
        // the last segment ends at its last frame.
        self.join_sealer();
        self.seal_now();
        if !self.shared.poisoned.load(Ordering::Acquire) {
            if let Err(error) = self.cut_padding() {
                tracing::warn!(%error, "cutting the last segment's padding at close; the next open cuts it");
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        let _span = tracing::debug_span!("commit_group", requests = group.len()).entered();
        if self.shared.poisoned.load(Ordering::Acquire) {
            // ok: the reason is only the text of the error; the poisoning itself is the flag.
            let reason = self.shared.poison_reason.lock().map(|r| r.clone()).unwrap_or_default();
            return fail_all(group.into_iter().map(completion_of).collect(), StoreError::Poisoned(reason));
        }
        // The work per commit depends on the group, not on how many streams the log
        // holds: heads come from the index, and those this group moves are kept
        // beside it until the group is durable.
        self.group_heads.clear();
        let committed_position = self.next_position;
        let mut pending = Vec::with_capacity(group.len());
        let mut result = Ok(());
        for request in group {
            match request {
                Request::Flush { done } => pending.push(Pending::unwritten(Completion::Flush(done), String::new())),
                Request::Append { stream, expected, events, bytes, done } => {
                    if result.is_err() {
                        pending.push(Pending::unwritten(Completion::Append(done), stream));
                        continue;
                    }
                    let head = match self.head(&stream) {
                        Ok(head) => head,
                        Err(error) => {
                            done(Err(error));
                            continue;
                        }
                    };
                    if !expected_matches(expected, head) {
                        let actual = head.map(|h| h.revision);
                        done(Err(StoreError::WrongExpectedRevision { stream, expected, actual }));
                        continue;
                    }
                    match self.encode(&stream, head, &events, bytes) {
                        Ok((offsets, outcome)) => pending.push(Pending {
                            done: Completion::Append(done),
                            stream,
                            segment: self.segment,
                            offsets,
                            outcome,
                        }),
                        Err(error) => {
                            result = Err(error);
                            pending.push(Pending::unwritten(Completion::Append(done), stream));
                        }
                    }
                }
            }
        }
        if result.is_ok() {
            result = self.write_buffer().and_then(|()| self.sync());
        }
        match result {
            Ok(()) => {
                self.publish(pending);
                self.seal_moved_past();
                self.drop_synced_pages();
            }
            Err(error) => {
                self.group_heads.clear();
                self.next_position = committed_position;
                self.poison(&error);
                fail_all(pending.into_iter().map(|p| p.done).collect(), error);
            }
        }
    }

    /// Encodes one append as a frame into the buffer, rolling the segment first if the
    /// frame would not fit.
    fn encode(
        &mut self,
        stream: &str,
        head: Option<StreamHead>,
        events: &EventBatch,
        bytes: usize,
    ) -> Result<(Vec<u32>, AppendOutcome), StoreError> {
        let frame_bytes = (format::FRAME_HEADER_BYTES + bytes) as u64;
        let used = self.segment_len + self.buffer.len() as u64;
        if used + frame_bytes > self.options.segment_bytes_max && used > SEGMENT_HEADER_BYTES as u64 {
            self.write_buffer()?;
            self.sync()?;
            self.roll()?;
        }
        let first_position = self.next_position;
        let (mut revision, mut hash) = match head {
            Some(head) => (head.revision + 1, head.hash),
            None => (0, GENESIS_HASH),
        };
        let first_revision = revision;
        let mut offsets = Vec::with_capacity(events.len());
        let frame_start = format::begin_frame(&mut self.buffer);
        self.buffer.reserve(bytes);
        for (event_type, payload) in events.iter() {
            hash = chain_hash_with(&mut self.chain_input, &hash, revision, payload);
            let offset = self.segment_len + self.buffer.len() as u64;
            offsets.push(offset as u32);
            format::put_record(&mut self.buffer, self.next_position, revision, &hash, stream, event_type, payload);
            self.next_position += 1;
            revision += 1;
        }
        format::finish_frame(&mut self.buffer, frame_start, events.len() as u32);
        let last_revision = if events.is_empty() { head.map(|h| h.revision) } else { Some(revision - 1) };
        if let Some(last) = last_revision {
            self.group_heads.insert(stream.to_string(), StreamHead { revision: last, hash });
        }
        let first_revision = (!events.is_empty()).then_some(first_revision);
        Ok((offsets, AppendOutcome { first_revision, last_revision, first_position, last_hash: hash }))
    }

    fn write_buffer(&mut self) -> Result<(), StoreError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let path = self.shared.dir.join(format::segment_file_name(self.segment));
        let written = match &mut self.direct {
            Some(direct) => direct.append(&self.buffer, self.segment_len),
            None => self.file.append_all(&self.buffer),
        };
        written.map_err(|e| io_error("write", &path, e))?;
        self.segment_len += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let path = self.shared.dir.join(format::segment_file_name(self.segment));
        if self.shared.fail_syncs_once.get().is_some_and(|trigger| trigger.exists()) {
            // EIO, as a failing disk answers.
            return Err(io_error("fdatasync", &path, std::io::Error::from_raw_os_error(5)));
        }
        if crate::sim_bugs::injected(crate::sim_bugs::Bug::LogSyncSkipped) {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| io_error("fdatasync", &path, e))
    }

    fn poison(&self, error: &StoreError) {
        poison(&self.shared, error);
    }

    /// Makes a durable group visible to readers, then answers its requests in order.
    fn publish(&mut self, pending: Vec<Pending>) {
        if let Ok(mut index) = self.shared.index.write() {
            for p in &pending {
                if p.offsets.is_empty() {
                    continue;
                }
                let (Some(first_revision), Some(table)) = (p.outcome.first_revision, index.table_mut(p.segment)) else {
                    unreachable!("an append with records has a first revision and an open segment");
                };
                table.push(&p.stream, first_revision, &p.offsets, p.outcome.last_hash);
            }
        }
        self.shared.head.send_replace(self.next_position);
        for p in pending {
            match p.done {
                Completion::Append(done) => done(Ok(p.outcome)),
                Completion::Flush(done) => done(Ok(())),
            }
        }
    }
}

fn poison(shared: &Shared, error: &StoreError) {
    tracing::error!(%error, "event store poisoned; reopen to recover");
    if let Ok(mut reason) = shared.poison_reason.lock() {
        *reason = error.to_string();
    }
    shared.poisoned.store(true, Ordering::Release);
}

/// Creates segment `segment`, its first record at `first_position`, durable with its
/// header and its directory entry before any frame goes in, and adds it to the
/// readers' segments and its (empty) table to the index.
fn create_segment(shared: &Shared, segment: u32, first_position: Position) -> Result<Arc<dyn DiskFile>, StoreError> {
    let path = shared.dir.join(format::segment_file_name(segment));
    let file = shared.disk.create_new(&path).map_err(|e| io_error("create", &path, e))?;
    file.append_all(&format::segment_header(segment)).map_err(|e| io_error("write", &path, e))?;
    file.sync_all().map_err(|e| io_error("fsync", &path, e))?;
    sync_dir(&*shared.disk, &shared.dir)?;
    shared.segments.write().map_err(|_| StoreError::Closed)?.push(file.clone());
    shared
        .index
        .write()
        .map_err(|_| StoreError::Closed)?
        .tables
        .push(Arc::new(SegmentTable::new(segment, first_position)));
    Ok(file)
}

fn empty_outcome() -> AppendOutcome {
    AppendOutcome { first_revision: None, last_revision: None, first_position: 0, last_hash: GENESIS_HASH }
}

fn expected_matches(expected: ExpectedRevision, head: Option<StreamHead>) -> bool {
    match expected {
        ExpectedRevision::Any => true,
        ExpectedRevision::NoStream => head.is_none(),
        ExpectedRevision::Exact(revision) => head.map(|h| h.revision) == Some(revision),
    }
}

fn completion_of(request: Request) -> Completion {
    match request {
        Request::Append { done, .. } => Completion::Append(done),
        Request::Flush { done } => Completion::Flush(done),
    }
}

fn fail_all(completions: Vec<Completion>, error: StoreError) {
    for completion in completions {
        match completion {
            Completion::Append(done) => done(Err(error.clone())),
            Completion::Flush(done) => done(Err(error.clone())),
        }
    }
}

/// Hash of `stream`'s event at `revision`, for checking a snapshot against the log.
pub fn hash_at(store: &dyn EventStore, stream: &str, revision: Revision) -> Result<Option<Hash>, StoreError> {
    let events = store.read_stream(stream, revision, Direction::Forwards, 1)?;
    Ok(events.first().filter(|event| event.revision == revision).map(|event| event.hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> EventBatch {
        let mut batch = EventBatch::default();
        batch.push(std::borrow::Cow::Borrowed("Test"), text.as_bytes());
        batch
    }

    pub(super) fn append(store: &EmbeddedStore, text: &str) -> Result<AppendOutcome, StoreError> {
        let (sender, receiver) = mpsc::channel();
        store.append_with("s", ExpectedRevision::Any, event(text), Box::new(move |r| drop(sender.send(r))));
        receiver.recv().unwrap_or(Err(StoreError::Closed))
    }

    #[test]
    fn one_open_store_per_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
        let second = EmbeddedStore::open(dir.path(), EmbeddedOptions::default());
        assert!(matches!(second, Err(StoreError::Locked(_))), "a second open must be refused");
        append(&store, "one").expect("append");
        drop(store);
        let (store, report) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("reopen after close");
        assert_eq!(report.records, 1);
        drop(store);
    }

    #[test]
    fn a_failed_sync_poisons_the_store_until_it_is_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
        append(&store, "acknowledged").expect("first append");
        let trigger = dir.path().join("fail-syncs");
        store.fail_syncs_once_exists(trigger.clone());
        std::fs::write(&trigger, b"").expect("trigger");
        let failed = append(&store, "failed");
        assert!(matches!(failed, Err(StoreError::Io { operation: "fdatasync", .. })), "{failed:?}");
        // Never retried: every later call fails, reads included.
        assert!(matches!(append(&store, "later"), Err(StoreError::Poisoned(_))));
        assert!(matches!(store.read_all(0, 10), Err(StoreError::Poisoned(_))));
        assert!(matches!(store.stream_head("s"), Err(StoreError::Poisoned(_))));
        drop(store);
        // Reopening recovers from what is on disk: the acknowledged event is there; the
        // one whose sync failed may or may not be (its outcome was unknown).
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("reopen");
        let events = store.read_all(0, 10).expect("read");
        assert_eq!(events[0].payload, b"acknowledged");
        assert!(events.iter().all(|e| e.payload != b"later"));
        append(&store, "after recovery").expect("append after reopen");
    }
}
