//! The single writer of a ledger partition.
//!
//! Requests queue to one thread that owns the partition's [`LedgerState`]. It takes
//! everything queued as one batch, runs it against the state, and hands the batch's
//! events to the store as one atomic append with the exact expected revision. Replies
//! are held until that append is durable, so no caller ever sees an effect that a
//! crash could take back. While the store syncs one batch, the writer already runs the
//! next against the state that includes the first (pipelining); if an append fails,
//! the writer stops serving and must be reopened, which rebuilds the state from disk.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::SystemClock;
use crate::snapshot;
use crate::state_store::{Covered, DiskState, StoreJob, StoreThread};
use crate::store::disk::{Disk, RealDisk};
use crate::store::{Direction, EventBatch, EventStore, ExpectedRevision, StoreError};
use ledger_core::clock::Clock;
use ledger_core::codec;
use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_core::state::{CurrencyTotals, LedgerState, ReplayError};

/// Most items (transfers or account commands) in one request.
pub const REQUEST_ITEMS_MAX: usize = 10_000;
/// Most items the writer takes into one batch (one append) from the queue.
pub const BATCH_ITEMS_MAX: usize = 2_048;
/// Most requests waiting for the writer; past it callers get `Overloaded`.
pub const QUEUE_REQUESTS_MAX: usize = 4_096;
/// Times the writer yields its CPU, checking the queue, before it sleeps on an empty one.
const YIELDS_BEFORE_SLEEP: usize = 3;
/// Typical size of an encoded transfer event, for sizing buffers.
const ENCODED_EVENT_BYTES_TYPICAL: usize = 96;
/// Events read per step when replaying the log at start-up.
const REPLAY_CHUNK_EVENTS: usize = 8_192;
/// Transfers the writer keeps in memory's first tier before handing them off to the
/// state store (`LedgerConfig::hand_off_items`, the default).
pub const HAND_OFF_ITEMS: usize = 131_072;

/// Errors of the ledger as a whole (not of one item in a batch).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error("the log holds an event the engine rejects at stream {stream} revision {revision}: {reason}")]
    Replay { stream: String, revision: u64, reason: String },
    #[error("request has {count} items; at most {max} are allowed")]
    TooManyItems { count: usize, max: usize },
    #[error("request has no items")]
    Empty,
    #[error("the writer's queue is full; retry later")]
    Overloaded,
    #[error("the ledger writer stopped after an append failed ({0}); restart to recover from disk")]
    Failed(String),
    #[error("the ledger is shut down")]
    Closed,
    /// A sound snapshot proves the log's stream had more events than it has now: the
    /// log lost durable events, and the ledger refuses to start on it.
    #[error(
        "stream {stream}: {reason}; restore the log from a backup (or move the snapshot aside to accept the loss)"
    )]
    LogShorterThanSnapshot { stream: String, reason: String },
}

/// Settings of a ledger partition.
#[derive(Clone)]
pub struct LedgerConfig {
    pub partition: u32,
    /// Where snapshots go; `None` disables them.
    pub snapshot_dir: Option<PathBuf>,
    /// A snapshot is taken after every this many events.
    pub snapshot_interval_events: u64,
    /// Most items in one request (`REQUEST_ITEMS_MAX`; smaller over a log whose
    /// appends are limited in bytes, such as KurrentDB's 1 MiB).
    pub request_items_max: usize,
    /// Most items the writer takes into one append (`BATCH_ITEMS_MAX`).
    pub batch_items_max: usize,
    /// Where the writer reads the time: stamps of events and expiry of holds. The
    /// system clock in production; a manual clock in tests.
    pub clock: Arc<dyn Clock>,
    /// The file layer snapshots are read and written through: the real file system in
    /// production, the simulated disk in the simulator.
    pub disk: Arc<dyn Disk>,
    /// Snapshots are written by a thread of their own (true, the default), or on the
    /// thread that learns their last event is durable, before the append is answered
    /// (the simulator: its runs must not depend on thread timing).
    pub snapshots_in_background: bool,
    /// Where the writer keeps its transfers on disk (`transfers`); `None` keeps every
    /// transfer in memory (the simulator's disk cannot hold the store).
    pub state_dir: Option<PathBuf>,
    /// Transfers made or changed that the writer keeps in memory before it hands them
    /// to the store (`HAND_OFF_ITEMS`).
    pub hand_off_items: usize,
    /// Whether opening the log cut a torn tail: then a state store past the log's end
    /// is rebuilt rather than refused (see `open_state_store`).
    pub log_torn_tail_cut: bool,
    /// Fault injection for tests: once a file exists at this path, every write of the
    /// state store fails as after a failed fsync (`DiskState::fail_writes_once_exists`).
    /// `None`, the default: never.
    pub state_fault_trigger: Option<PathBuf>,
}

impl std::fmt::Debug for LedgerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerConfig")
            .field("partition", &self.partition)
            .field("snapshot_dir", &self.snapshot_dir)
            .field("snapshot_interval_events", &self.snapshot_interval_events)
            .field("request_items_max", &self.request_items_max)
            .field("batch_items_max", &self.batch_items_max)
            .field("state_dir", &self.state_dir)
            .field("hand_off_items", &self.hand_off_items)
            .finish_non_exhaustive()
    }
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            partition: 0,
            snapshot_dir: None,
            snapshot_interval_events: 4_000_000,
            request_items_max: REQUEST_ITEMS_MAX,
            batch_items_max: BATCH_ITEMS_MAX,
            clock: Arc::new(SystemClock),
            disk: Arc::new(RealDisk),
            snapshots_in_background: true,
            state_dir: None,
            hand_off_items: HAND_OFF_ITEMS,
            log_torn_tail_cut: false,
            state_fault_trigger: None,
        }
    }
}

pub fn stream_name(partition: u32) -> String {
    format!("ledger-{partition}")
}

type Reply<T> = Box<dyn FnOnce(Result<T, LedgerError>) + Send>;

enum Request {
    Accounts(Vec<AccountCommand>, Reply<Vec<AccountResult>>),
    Transfers(Vec<NewTransfer>, Reply<Vec<TransferResult>>),
    LookupAccounts(Vec<AccountId>, Reply<Vec<Option<Account>>>),
    LookupTransfers(Vec<TransferId>, Reply<Vec<Option<Transfer>>>),
    Totals(Reply<BTreeMap<Currency, CurrencyTotals>>),
}

impl Request {
    fn items(&self) -> usize {
        match self {
            Request::Accounts(items, _) => items.len(),
            Request::Transfers(items, _) => items.len(),
            Request::LookupAccounts(items, _) => items.len(),
            Request::LookupTransfers(items, _) => items.len(),
            Request::Totals(_) => 1,
        }
    }

    fn fail(self, error: LedgerError) {
        match self {
            Request::Accounts(_, reply) => reply(Err(error)),
            Request::Transfers(_, reply) => reply(Err(error)),
            Request::LookupAccounts(_, reply) => reply(Err(error)),
            Request::LookupTransfers(_, reply) => reply(Err(error)),
            Request::Totals(reply) => reply(Err(error)),
        }
    }
}

/// A reply computed from the working state, sent once the batch is durable.
type Deferred = Box<dyn FnOnce(Result<(), LedgerError>) + Send>;

fn defer<T: Send + 'static>(reply: Reply<T>, value: T) -> Deferred {
    Box::new(move |outcome| reply(outcome.map(|()| value)))
}

/// A handle to a running ledger partition. Cloning shares the same writer.
#[derive(Clone)]
pub struct Ledger {
    sender: Arc<Mutex<Option<SyncSender<Request>>>>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    metrics: Arc<WriterMetrics>,
    request_items_max: usize,
    /// Why the writer stopped (an append failed), shared with its thread.
    failed: Arc<Mutex<Option<String>>>,
}

impl Ledger {
    /// Loads the newest valid snapshot, replays the rest of the partition's stream, and
    /// starts the writer.
    pub fn open(store: Arc<dyn EventStore>, config: LedgerConfig) -> Result<Ledger, LedgerError> {
        let stream = stream_name(config.partition);
        if let Some(dir) = &config.snapshot_dir {
            snapshot::prepare_dir(config.disk.as_ref(), dir, &stream).map_err(|e| {
                LedgerError::Store(StoreError::Io {
                    operation: "prepare snapshots",
                    path: dir.clone(),
                    message: e.to_string(),
                })
            })?;
        }
        let snapshots = config.snapshot_dir.as_deref().map(|dir| (config.disk.as_ref(), dir));
        let transfers = match &config.state_dir {
            Some(dir) => {
                let state_store = open_state_store(store.as_ref(), &stream, dir, config.log_torn_tail_cut)?;
                if let Some(trigger) = &config.state_fault_trigger {
                    state_store.fail_writes_once_exists(trigger.clone());
                }
                Some(Arc::new(state_store))
            }
            None => None,
        };
        let state = recover_state(store.as_ref(), &stream, snapshots, transfers.as_ref())?;
        let (sender, receiver) = mpsc::sync_channel(QUEUE_REQUESTS_MAX);
        let metrics = Arc::new(WriterMetrics::default());
        let failed = Arc::new(Mutex::new(None));
        let request_items_max = config.request_items_max;
        let transfers = match transfers {
            Some(store) => Some(
                StoreThread::start(store, failed.clone())
                    .map_err(|e| LedgerError::Failed(format!("cannot start the state store's thread: {e}")))?,
            ),
            None => None,
        };
        let writer = Writer {
            store,
            stream,
            config,
            state,
            failed: failed.clone(),
            events_since_snapshot: 0,
            snapshot_slot: snapshot::SnapshotSlot::default(),
            metrics: metrics.clone(),
            transfers,
        };
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                crate::threads::abort_on_panic("ledger-writer");
                writer.run(receiver)
            })
            .map_err(|e| LedgerError::Failed(format!("cannot start the writer thread: {e}")))?;
        Ok(Ledger {
            sender: Arc::new(Mutex::new(Some(sender))),
            thread: Arc::new(Mutex::new(Some(thread))),
            metrics,
            request_items_max,
            failed,
        })
    }

    /// Why the writer stopped taking requests (an append failed; a restart recovers
    /// from disk), or `None` while it works.
    pub fn failure(&self) -> Option<String> {
        // ok: a poisoned lock means a thread panicked holding it, which aborts the process.
        self.failed.lock().ok().and_then(|failed| failed.clone())
    }

    /// Batch sizes, commit latency and queue depth of the writer.
    pub fn metrics(&self) -> Arc<WriterMetrics> {
        self.metrics.clone()
    }

    fn submit(&self, request: Request, block: bool) {
        let sender = self.sender.lock().ok().and_then(|sender| sender.clone());
        let Some(sender) = sender else {
            return request.fail(LedgerError::Closed);
        };
        if block {
            self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = sender.send(request) {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                error.0.fail(LedgerError::Closed);
            }
            return;
        }
        match sender.try_send(request) {
            Ok(()) => {
                self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(request)) => request.fail(LedgerError::Overloaded),
            Err(TrySendError::Disconnected(request)) => request.fail(LedgerError::Closed),
        }
    }

    fn check_items(&self, count: usize) -> Result<(), LedgerError> {
        match count {
            0 => Err(LedgerError::Empty),
            count if count > self.request_items_max => {
                Err(LedgerError::TooManyItems { count, max: self.request_items_max })
            }
            _ => Ok(()),
        }
    }

    async fn call<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, LedgerError> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.submit(make(Box::new(move |result| drop(sender.send(result)))), false);
        receiver.await.unwrap_or(Err(LedgerError::Closed))
    }

    fn call_blocking<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, LedgerError> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.submit(make(Box::new(move |result| drop(sender.send(result)))), true);
        receiver.recv().unwrap_or(Err(LedgerError::Closed))
    }

    pub async fn create_accounts(&self, commands: Vec<AccountCommand>) -> Result<Vec<AccountResult>, LedgerError> {
        self.check_items(commands.len())?;
        self.call(|reply| Request::Accounts(commands, reply)).await
    }

    pub async fn create_transfers(&self, transfers: Vec<NewTransfer>) -> Result<Vec<TransferResult>, LedgerError> {
        self.check_items(transfers.len())?;
        self.call(|reply| Request::Transfers(transfers, reply)).await
    }

    pub async fn lookup_accounts(&self, ids: Vec<AccountId>) -> Result<Vec<Option<Account>>, LedgerError> {
        self.check_items(ids.len())?;
        self.call(|reply| Request::LookupAccounts(ids, reply)).await
    }

    pub async fn lookup_transfers(&self, ids: Vec<TransferId>) -> Result<Vec<Option<Transfer>>, LedgerError> {
        self.check_items(ids.len())?;
        self.call(|reply| Request::LookupTransfers(ids, reply)).await
    }

    pub fn create_accounts_blocking(&self, commands: Vec<AccountCommand>) -> Result<Vec<AccountResult>, LedgerError> {
        self.check_items(commands.len())?;
        self.call_blocking(|reply| Request::Accounts(commands, reply))
    }

    pub fn create_transfers_blocking(&self, transfers: Vec<NewTransfer>) -> Result<Vec<TransferResult>, LedgerError> {
        self.check_items(transfers.len())?;
        self.call_blocking(|reply| Request::Transfers(transfers, reply))
    }

    /// Starts a batch of transfers without waiting; `done` runs once it is durable.
    pub fn submit_transfers(
        &self,
        transfers: Vec<NewTransfer>,
        done: impl FnOnce(Result<Vec<TransferResult>, LedgerError>) + Send + 'static,
    ) {
        if let Err(error) = self.check_items(transfers.len()) {
            return done(Err(error));
        }
        self.submit(Request::Transfers(transfers, Box::new(done)), true);
    }

    pub fn lookup_accounts_blocking(&self, ids: Vec<AccountId>) -> Result<Vec<Option<Account>>, LedgerError> {
        self.check_items(ids.len())?;
        self.call_blocking(|reply| Request::LookupAccounts(ids, reply))
    }

    pub fn lookup_transfers_blocking(&self, ids: Vec<TransferId>) -> Result<Vec<Option<Transfer>>, LedgerError> {
        self.check_items(ids.len())?;
        self.call_blocking(|reply| Request::LookupTransfers(ids, reply))
    }

    /// Debit and credit totals per currency over the whole partition.
    pub fn totals_blocking(&self) -> Result<BTreeMap<Currency, CurrencyTotals>, LedgerError> {
        self.call_blocking(Request::Totals)
    }

    /// Stops taking requests, finishes every queued and in-flight batch (all replies
    /// are sent), and waits for the writer to end.
    pub fn close(&self) {
        drop(self.sender.lock().map(|mut sender| sender.take()));
        if let Ok(mut thread) = self.thread.lock() {
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Opens the writer's state store in `dir`, and checks it against the log: a store
/// that claims an event the log has with another hash is not a fold of this log, and
/// is rebuilt from it. One that claims more events than the log has proves the log
/// lost durable events (the store is written only after they are durable): the
/// ledger refuses to start, as for such a snapshot; unless the log's open cut a torn
/// tail (`torn_tail_cut`), after which the store is rebuilt, like the read models.
fn open_state_store(
    store: &dyn EventStore,
    stream: &str,
    dir: &std::path::Path,
    torn_tail_cut: bool,
) -> Result<DiskState, LedgerError> {
    let failed = |reason: String| LedgerError::Failed(reason);
    let transfers = DiskState::open(dir, stream).map_err(failed)?;
    // Checked against the row nothing in the store is past: the last hand-off may be
    // in it even if the row of what it covers was not written.
    let Some(Covered { events, hash }) = transfers.claimed().map_err(failed)? else {
        return Ok(transfers);
    };
    let Some(last) = events.checked_sub(1) else {
        // A row of no event is never written: such a store is not of this log.
        tracing::warn!(stream, "the state store's row covers no event: rebuilding it from the log");
        drop(transfers);
        return DiskState::recreate(dir, stream).map_err(failed);
    };
    match crate::store::embedded::hash_at(store, stream, last)? {
        Some(logged) if logged == hash => Ok(transfers),
        None if !torn_tail_cut => Err(LedgerError::LogShorterThanSnapshot {
            stream: stream.to_string(),
            reason: format!(
                "the state store in {} claims {events} events, the log's stream ends before its last one: the log lost durable events",
                dir.display()
            ),
        }),
        found => {
            let reason = if found.is_some() { "another event at its last revision" } else { "past the log's end" };
            tracing::warn!(stream, events, reason, "the state store is not of this log: rebuilding it from the log");
            drop(transfers);
            DiskState::recreate(dir, stream).map_err(failed)
        }
    }
}

/// Rebuilds the partition state. With a state store: its checkpoint (or nothing), then
/// the log after it, handing accounts and transfers to the store as the replay goes
/// (snapshots are not used). Without: the newest snapshot that matches the log, then
/// the log after it.
pub fn recover_state(
    store: &dyn EventStore,
    stream: &str,
    snapshots: Option<(&dyn Disk, &std::path::Path)>,
    transfers: Option<&Arc<DiskState>>,
) -> Result<LedgerState, LedgerError> {
    let mut state = match (transfers, snapshots) {
        (Some(disk_state), _) => match disk_state.checkpoint().map_err(LedgerError::Failed)? {
            Some(checkpoint) => LedgerState::from_checkpoint(checkpoint, disk_state.clone()),
            None => LedgerState::new().with_store(disk_state.clone()),
        },
        // ok: no snapshot that matches the log means replaying from the empty state.
        (None, Some((disk, dir))) => snapshot::load_newest(disk, dir, store, stream)?.unwrap_or_default(),
        (None, None) => LedgerState::new(),
    };
    let mut next = state.events_applied();
    let (from, started) = (next, Instant::now());
    let mut progress = Progress::new(started);
    tracing::info!(stream, from, "replaying the ledger's events");
    loop {
        let events = store.read_stream(stream, next, Direction::Forwards, REPLAY_CHUNK_EVENTS)?;
        if events.is_empty() {
            break;
        }
        progress.tick(next - from, |done, per_sec| {
            tracing::info!(stream, replayed = done, events_per_sec = per_sec, "replaying the ledger's events");
        });
        for recorded in &events {
            let replay_error = |reason: String| LedgerError::Replay {
                stream: stream.to_string(),
                revision: recorded.revision,
                reason,
            };
            let event = codec::decode_event(&recorded.payload).map_err(|e| replay_error(e.to_string()))?;
            state.check_and_evolve(&event).map_err(|e: ReplayError| replay_error(e.to_string()))?;
        }
        next += events.len() as u64;
        if let (Some(transfers), Some(last)) = (transfers, events.last()) {
            if state.in_memory() >= HAND_OFF_ITEMS {
                if let Some(hand_off) = state.hand_off() {
                    transfers.write(&hand_off, &last.hash).map_err(LedgerError::Failed)?;
                    state.stored_up_to(hand_off.number);
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        stream,
        events = next,
        replayed = next - from,
        events_per_sec = ((next - from) as f64 / secs.max(1e-9)) as u64,
        secs = format!("{secs:.3}"),
        accounts = state.account_count(),
        transfers = state.transfer_count(),
        "ledger state recovered"
    );
    Ok(state)
}

/// How often a long replay reports its progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Periodic progress of a long start-up step: at most one report per `PROGRESS_EVERY`.
pub struct Progress {
    started: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(started: Instant) -> Progress {
        Progress { started, last: started }
    }

    /// Calls `report(done, done per second so far)` if `PROGRESS_EVERY` has passed
    /// since the last report.
    pub fn tick(&mut self, done: u64, report: impl FnOnce(u64, u64)) {
        let now = Instant::now();
        if now.duration_since(self.last) < PROGRESS_EVERY {
            return;
        }
        self.last = now;
        let secs = now.duration_since(self.started).as_secs_f64().max(1e-9);
        report(done, (done as f64 / secs) as u64);
    }
}

/// Where a slice of `transfers` that starts at `start` ends: after about `room` items,
/// never inside a linked chain (a chain is one unit; it may make the slice longer).
fn slice_end(transfers: &[NewTransfer], start: usize, room: usize) -> usize {
    let mut end = start.saturating_add(room).min(transfers.len());
    while end < transfers.len() && end > start && transfers[end - 1].linked {
        end += 1;
    }
    end
}

struct Writer {
    store: Arc<dyn EventStore>,
    stream: String,
    config: LedgerConfig,
    state: LedgerState,
    failed: Arc<Mutex<Option<String>>>,
    events_since_snapshot: u64,
    snapshot_slot: snapshot::SnapshotSlot,
    metrics: Arc<WriterMetrics>,
    /// The thread that writes hand-offs to the state store, if the writer has one.
    transfers: Option<StoreThread>,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Request>) {
        let mut events = Vec::new();
        loop {
            // An empty queue is common between batches under load: give the CPU to the
            // threads that fill it a few times before sleeping, which saves a sleep and
            // a wake-up per batch (64 one-transfer clients: ~37-38.7k -> ~39.5-41k
            // transfers/s over 3 interleaved runs on the 2-core machine).
            let mut ready = None;
            for _ in 0..YIELDS_BEFORE_SLEEP {
                match receiver.try_recv() {
                    Ok(request) => {
                        ready = Some(request);
                        break;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => break,
                    Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
                }
            }
            // The wait is computed from the configured clock: on a manual clock that
            // was moved past the expiry while the writer slept, the next wake-up (or
            // any request) finds the hold due. A clock that does not move on its own
            // (a simulator's) gives no wait: holds then expire at the next request.
            let timeout = self.state.next_expiry_ns().and_then(|at| self.config.clock.real_wait_until(at));
            let first = match (ready, timeout) {
                (Some(request), _) => Some(request),
                (None, Some(timeout)) => match receiver.recv_timeout(timeout) {
                    Ok(request) => Some(request),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                (None, None) => match receiver.recv() {
                    Ok(request) => Some(request),
                    Err(_) => break,
                },
            };
            let mut batch = Vec::new();
            let mut items = 0;
            if let Some(first) = first {
                items += first.items();
                batch.push(first);
            }
            while items < self.config.batch_items_max {
                let Ok(request) = receiver.try_recv() else {
                    break;
                };
                items += request.items();
                batch.push(request);
            }
            self.process(batch, &mut events);
        }
        // Wait until everything handed to the store has its outcome (and replies sent).
        let (sender, receiver) = mpsc::sync_channel(1);
        self.store.flush_with(Box::new(move |_| {
            let _ = sender.send(());
        }));
        let _ = receiver.recv();
        if let Some(transfers) = self.transfers.take() {
            // Everything is durable now: the last hand-off's hash is the stream's head.
            let last = match (self.state.hand_off(), self.store.stream_head(&self.stream)) {
                (Some(hand_off), Ok(Some(head))) => Some(StoreJob { hand_off, hash: head.hash }),
                (Some(_), Err(error)) => {
                    tracing::warn!(%error, "the last hand-off is not written; the next start replays it");
                    None
                }
                _ => None,
            };
            transfers.finish(last);
        }
        self.snapshot_slot.join();
    }

    fn process(&mut self, batch: Vec<Request>, events: &mut Vec<ledger_core::domain::Event>) {
        self.metrics.queue_depth.fetch_sub(batch.len() as i64, Ordering::Relaxed);
        if let Some(reason) = self.failed.lock().ok().and_then(|failed| failed.clone()) {
            for request in batch {
                request.fail(LedgerError::Failed(reason.clone()));
            }
            return;
        }
        let _span = tracing::debug_span!("ledger_batch", requests = batch.len()).entered();
        self.tend_transfers();
        self.metrics.record_batch(batch.iter().map(Request::items).sum());
        let mut started = Instant::now();
        let now = self.config.clock.now_ns();
        events.clear();
        self.state.expire_due(now, events);
        let mut deferred = Vec::with_capacity(batch.len());
        let append_max = self.config.batch_items_max.max(1);
        for request in batch {
            if matches!(request, Request::Accounts(..))
                && !events.is_empty()
                && events.len() + request.items() > append_max
            {
                // Account commands are not cut; the events so far go first instead.
                self.append(events, std::mem::take(&mut deferred), started);
                started = Instant::now();
            }
            let reply = match request {
                Request::Accounts(commands, reply) => defer(reply, self.state.execute_accounts(&commands, now, events)),
                Request::Transfers(transfers, reply) => {
                    // A large request goes out in several appends of at most `append_max`
                    // events, cut only between linked chains: while the store hashes,
                    // writes and syncs one, the next is decided (pipelining inside one
                    // request). The reply rides on the last append; appends complete in
                    // order and a failed one fails every later one, so it is answered
                    // only when all of them are durable.
                    let mut results = Vec::with_capacity(transfers.len());
                    let mut start = 0;
                    while start < transfers.len() {
                        let end = slice_end(&transfers, start, append_max.saturating_sub(events.len()).max(1));
                        results.extend(self.state.execute_transfers(&transfers[start..end], now, events));
                        start = end;
                        if events.len() >= append_max && start < transfers.len() {
                            self.append(events, std::mem::take(&mut deferred), started);
                            started = Instant::now();
                        }
                    }
                    defer(reply, results)
                }
                Request::LookupAccounts(ids, reply) => {
                    defer(reply, ids.iter().map(|id| self.state.account(*id).map(Cow::into_owned)).collect())
                }
                Request::LookupTransfers(ids, reply) => {
                    defer(reply, ids.iter().map(|id| self.state.transfer(*id).map(Cow::into_owned)).collect())
                }
                Request::Totals(reply) => defer(reply, self.state.totals().clone()),
            };
            deferred.push(reply);
        }
        self.append(events, deferred, started);
    }

    /// Takes note of the hand-offs the store has written; while too many wait, waits.
    fn tend_transfers(&mut self) {
        if let Some(transfers) = &self.transfers {
            transfers.settle(&mut self.state);
        }
    }

    /// Hands `events` (then cleared) to the store as one append, and `deferred` the
    /// replies to send once it is durable (with no events: once everything before is).
    fn append(&mut self, events: &mut Vec<ledger_core::domain::Event>, deferred: Vec<Deferred>, started: Instant) {
        let metrics = self.metrics.clone();
        let failed = self.failed.clone();
        let answer = move |outcome: Result<(), LedgerError>| {
            metrics.record_commit(started.elapsed());
            if let Err(error) = &outcome {
                if let Ok(mut failed) = failed.lock() {
                    failed.get_or_insert_with(|| error.to_string());
                }
            }
            for reply in deferred {
                reply(outcome.clone());
            }
        };
        if events.is_empty() {
            self.store.flush_with(Box::new(move |result| answer(result.map_err(LedgerError::from))));
            return;
        }
        let mut data = EventBatch::with_capacity(events.len(), events.len() * ENCODED_EVENT_BYTES_TYPICAL);
        for event in events.iter() {
            data.push_with(Cow::Borrowed(event.kind.type_name()), |bytes| codec::encode_event(event, bytes));
        }
        let applied_before = self.state.events_applied() - events.len() as u64;
        let expected = match applied_before {
            0 => ExpectedRevision::NoStream,
            count => ExpectedRevision::Exact(count - 1),
        };
        // With a state store, its checkpoints replace snapshots.
        let hand_off = match &self.transfers {
            Some(transfers) if self.state.in_memory() >= self.config.hand_off_items => {
                self.state.hand_off().map(|hand_off| (transfers.jobs(), hand_off))
            }
            _ => None,
        };
        let snapshot = if self.snapshot_wanted(events.len() as u64) { self.snapshot_capture() } else { None };
        let in_background = self.config.snapshots_in_background;
        events.clear();
        self.store.append_with(
            &self.stream,
            expected,
            data,
            Box::new(move |result| {
                if let Ok(outcome) = &result {
                    let hash = outcome.last_hash;
                    if let Some((jobs, hand_off)) = hand_off {
                        let _ = jobs.send(StoreJob { hand_off, hash });
                    }
                    match snapshot {
                        Some(snapshot) if in_background => snapshot.write_in_background(hash),
                        Some(snapshot) => snapshot.write_now(hash),
                        None => {}
                    }
                }
                answer(result.map(|_| ()).map_err(LedgerError::from))
            }),
        );
    }

    /// Whether a snapshot is due after this batch (and none is being written). Not
    /// with a state store: its checkpoints replace snapshots.
    fn snapshot_wanted(&mut self, appended: u64) -> bool {
        if self.config.snapshot_dir.is_none() || self.transfers.is_some() {
            return false;
        }
        self.events_since_snapshot += appended;
        self.events_since_snapshot >= self.config.snapshot_interval_events && !self.snapshot_slot.busy()
    }

    /// Takes a (shared, copy-on-write) clone of the state for a snapshot.
    fn snapshot_capture(&mut self) -> Option<snapshot::PendingSnapshot> {
        let dir = self.config.snapshot_dir.clone()?;
        // While the previous snapshot is still being written, the next append asks again.
        let disk = self.config.disk.clone();
        let pending = snapshot::PendingSnapshot::capture(disk, dir, &self.stream, &self.state, &self.snapshot_slot)?;
        self.events_since_snapshot = 0;
        Some(pending)
    }
}

/// Upper bounds of the commit latency histogram, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 11] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
/// Upper bounds of the batch size histogram, in items.
const BATCH_BUCKETS_ITEMS: [u64; 6] = [1, 10, 100, 1_000, 4_096, 8_192];

/// Counters of the writer, for the metrics endpoint.
#[derive(Default)]
pub struct WriterMetrics {
    /// Requests waiting in the queue.
    pub queue_depth: AtomicI64,
    batches: AtomicU64,
    batch_items: AtomicU64,
    batch_buckets: [AtomicU64; BATCH_BUCKETS_ITEMS.len()],
    commits: AtomicU64,
    commit_nanoseconds_sum: AtomicU64,
    commit_buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len()],
}

impl WriterMetrics {
    fn record_batch(&self, items: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_items.fetch_add(items as u64, Ordering::Relaxed);
        for (bound, bucket) in BATCH_BUCKETS_ITEMS.iter().zip(&self.batch_buckets) {
            if items as u64 <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn record_commit(&self, latency: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_nanoseconds_sum.fetch_add(latency.as_nanos() as u64, Ordering::Relaxed);
        for (bound, bucket) in LATENCY_BUCKETS_SECONDS.iter().zip(&self.commit_buckets) {
            if latency.as_secs_f64() <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Prometheus text exposition of these counters.
    pub fn render(&self) -> String {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut out = String::new();
        out.push_str("# HELP ledger_queue_depth_requests Requests waiting for the ledger writer.\n");
        out.push_str("# TYPE ledger_queue_depth_requests gauge\n");
        out.push_str(&format!("ledger_queue_depth_requests {}\n", self.queue_depth.load(Ordering::Relaxed).max(0)));
        out.push_str("# HELP ledger_batch_items Items per writer batch (one durable append).\n");
        out.push_str("# TYPE ledger_batch_items histogram\n");
        for (bound, bucket) in BATCH_BUCKETS_ITEMS.iter().zip(&self.batch_buckets) {
            out.push_str(&format!("ledger_batch_items_bucket{{le=\"{bound}\"}} {}\n", load(bucket)));
        }
        out.push_str(&format!("ledger_batch_items_bucket{{le=\"+Inf\"}} {}\n", load(&self.batches)));
        out.push_str(&format!("ledger_batch_items_sum {}\n", load(&self.batch_items)));
        out.push_str(&format!("ledger_batch_items_count {}\n", load(&self.batches)));
        out.push_str("# HELP ledger_commit_latency_seconds From taking a batch to its durable answer.\n");
        out.push_str("# TYPE ledger_commit_latency_seconds histogram\n");
        for (bound, bucket) in LATENCY_BUCKETS_SECONDS.iter().zip(&self.commit_buckets) {
            out.push_str(&format!("ledger_commit_latency_seconds_bucket{{le=\"{bound}\"}} {}\n", load(bucket)));
        }
        out.push_str(&format!("ledger_commit_latency_seconds_bucket{{le=\"+Inf\"}} {}\n", load(&self.commits)));
        let sum_seconds = load(&self.commit_nanoseconds_sum) as f64 / 1e9;
        out.push_str(&format!("ledger_commit_latency_seconds_sum {sum_seconds}\n"));
        out.push_str(&format!("ledger_commit_latency_seconds_count {}\n", load(&self.commits)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reports_at_most_once_per_interval_with_the_rate_so_far() {
        let started = Instant::now().checked_sub(PROGRESS_EVERY * 2).expect("up for more than two seconds");
        let mut progress = Progress::new(started);
        let mut reports = Vec::new();
        progress.tick(1_000, |done, per_sec| reports.push((done, per_sec)));
        progress.tick(2_000, |done, per_sec| reports.push((done, per_sec)));
        assert_eq!(reports.len(), 1, "the second tick comes too soon: {reports:?}");
        let (done, per_sec) = reports[0];
        assert_eq!(done, 1_000);
        // 1,000 events in a little over two intervals (2 s).
        assert!((400..=500).contains(&per_sec), "{per_sec}");
    }
}
