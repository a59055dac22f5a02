//! The `EventStore` port: append with an expected revision, read a stream, read the
//! whole log in commit order, follow it live. Backends: [`embedded`] (default).

pub mod directory;
pub mod disk;
pub mod embedded;
pub mod format;
#[cfg(feature = "kurrentdb")]
pub mod kurrent;
mod log_index;
#[cfg(test)]
mod power_loss_tests;
pub mod seal;
#[cfg(any(test, feature = "sim"))]
pub mod sim_disk;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use ledger_core::chain::Hash;

/// The 0-based index of an event within its stream.
pub type Revision = u64;
/// The 0-based index of an event within the whole log, in commit order.
pub type Position = u64;

/// Longest stream name, in bytes.
pub const STREAM_NAME_BYTES_MAX: usize = 200;
/// Longest event type name, in bytes.
pub const EVENT_TYPE_BYTES_MAX: usize = 100;
/// Largest single event payload.
pub const EVENT_PAYLOAD_BYTES_MAX: usize = 1 << 20;
/// Largest single append, all records included. An append is one atomic frame.
pub const APPEND_BYTES_MAX: usize = 64 << 20;

/// What the writer believes the stream's last revision is. The check is also the
/// fencing token between writers: a writer that lost ownership fails here.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExpectedRevision {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this revision.
    Exact(Revision),
}

/// One event to append.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EventData {
    pub event_type: Cow<'static, str>,
    pub payload: Vec<u8>,
}

/// The events of one append, their payloads packed in one buffer so that a batch of
/// thousands costs two allocations, not thousands.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct EventBatch {
    bytes: Vec<u8>,
    entries: Vec<(Cow<'static, str>, usize)>,
}

impl EventBatch {
    pub fn with_capacity(events: usize, bytes: usize) -> EventBatch {
        EventBatch { bytes: Vec::with_capacity(bytes), entries: Vec::with_capacity(events) }
    }

    /// Adds an event whose payload `encode` appends to the buffer it is given.
    pub fn push_with(&mut self, event_type: Cow<'static, str>, encode: impl FnOnce(&mut Vec<u8>)) {
        encode(&mut self.bytes);
        self.entries.push((event_type, self.bytes.len()));
    }

    pub fn push(&mut self, event_type: Cow<'static, str>, payload: &[u8]) {
        self.push_with(event_type, |bytes| bytes.extend_from_slice(payload));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each event's type and payload, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut start = 0;
        self.entries.iter().map(move |(event_type, end)| {
            let payload = &self.bytes[start..*end];
            start = *end;
            (event_type.as_ref(), payload)
        })
    }
}

impl From<Vec<EventData>> for EventBatch {
    fn from(events: Vec<EventData>) -> EventBatch {
        let bytes = events.iter().map(|event| event.payload.len()).sum();
        let mut batch = EventBatch::with_capacity(events.len(), bytes);
        for event in events {
            batch.push(event.event_type, &event.payload);
        }
        batch
    }
}

/// One event as stored, with its place in the log and its chain hash.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RecordedEvent {
    pub stream: String,
    pub revision: Revision,
    pub position: Position,
    pub event_type: String,
    pub payload: Vec<u8>,
    pub hash: Hash,
}

/// What a successful append wrote.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AppendOutcome {
    /// Revision of the first appended event (`None` for an empty append).
    pub first_revision: Option<Revision>,
    /// The stream's last revision after the append.
    pub last_revision: Option<Revision>,
    /// Position of the first appended event.
    pub first_position: Position,
    /// Chain hash of the stream's last event after the append.
    pub last_hash: Hash,
}

/// The last event of a stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StreamHead {
    pub revision: Revision,
    pub hash: Hash,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    Forwards,
    Backwards,
}

/// Errors of the port. Each variant is something a caller can act on.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream}: expected revision {expected:?}, but its last revision is {actual:?}")]
    WrongExpectedRevision { stream: String, expected: ExpectedRevision, actual: Option<Revision> },
    #[error("the store failed an earlier write ({0}); reopen it to recover from disk")]
    Poisoned(String),
    #[error("i/o error during {operation} on {path}: {message}")]
    Io { operation: &'static str, path: PathBuf, message: String },
    #[error("corrupt log in {file} at offset {offset}: {reason}")]
    Corrupt { file: PathBuf, offset: u64, reason: String },
    #[error("hash chain broken in stream {stream} at revision {revision} ({file} offset {offset}): {reason}")]
    ChainBroken { stream: String, revision: Revision, file: PathBuf, offset: u64, reason: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("the store is closed")]
    Closed,
    #[error("the log in {0} is open in another process (its LOCK file is held)")]
    Locked(PathBuf),
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    #[error("the event store did not answer in time")]
    DeadlineExceeded,
}

pub type AppendCallback = Box<dyn FnOnce(Result<AppendOutcome, StoreError>) + Send>;
pub type FlushCallback = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// An append-only log of named streams.
pub trait EventStore: Send + Sync + 'static {
    /// Starts an atomic append of `events` to `stream`; `done` runs once the outcome
    /// is known. Success means every event is durable.
    fn append_with(&self, stream: &str, expected: ExpectedRevision, events: EventBatch, done: AppendCallback);

    /// `done` runs once every append started before this call has its outcome.
    fn flush_with(&self, done: FlushCallback);

    /// Up to `max_count` events of `stream` starting at revision `from` (inclusive),
    /// forwards or backwards. A missing stream reads as empty.
    fn read_stream(
        &self,
        stream: &str,
        from: Revision,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `max_count` events of the whole log from position `from`, in commit order.
    fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The last durable event of a stream.
    fn stream_head(&self, stream: &str) -> Result<Option<StreamHead>, StoreError>;

    /// The names of the streams whose name starts with `prefix` (a category such as
    /// `user-`), in no particular order: how aggregates other than the ledger are
    /// found at start without reading the whole log.
    fn stream_names(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// A receiver of the durable log length (the next position); it changes after every
    /// durable append, for followers.
    fn watch_head(&self) -> tokio::sync::watch::Receiver<Position>;

    /// Why the store stopped taking appends for good (a failed write or sync poisons
    /// the embedded store until it is reopened), or `None` while it works.
    fn failure(&self) -> Option<String> {
        None
    }

    /// Whether positions are dense (0, 1, 2 …) or only strictly increasing (a
    /// follower then checks order, not gaps).
    fn dense_positions(&self) -> bool {
        true
    }
}

/// Blocking and async forms of the callback calls.
pub trait EventStoreExt: EventStore {
    fn append_blocking(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<AppendOutcome, StoreError> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.append_with(stream, expected, events.into(), Box::new(move |result| drop(sender.send(result))));
        receiver.recv().unwrap_or(Err(StoreError::Closed))
    }

    fn append(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> impl std::future::Future<Output = Result<AppendOutcome, StoreError>> + Send {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.append_with(stream, expected, events.into(), Box::new(move |result| drop(sender.send(result))));
        async move { receiver.await.unwrap_or(Err(StoreError::Closed)) }
    }
}

impl<T: EventStore + ?Sized> EventStoreExt for T {}

/// Follows the whole log from a position: first what is stored, then new events as
/// they become durable.
pub struct Subscription {
    store: Arc<dyn EventStore>,
    next: Position,
    head: tokio::sync::watch::Receiver<Position>,
}

impl Subscription {
    pub fn new(store: Arc<dyn EventStore>, from: Position) -> Subscription {
        let head = store.watch_head();
        Subscription { store, next: from, head }
    }

    /// The position of the next event this subscription returns.
    pub fn position(&self) -> Position {
        self.next
    }

    /// The next events (at most `max_count`), waiting until at least one is durable.
    pub async fn next_batch(&mut self, max_count: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        loop {
            let head = *self.head.borrow_and_update();
            if self.next < head {
                let events = self.store.read_all(self.next, max_count)?;
                // Positions need not be dense (KurrentDB): go on after the last one read.
                if let Some(last) = events.last() {
                    self.next = last.position + 1;
                }
                return Ok(events);
            }
            self.head.changed().await.map_err(|_| StoreError::Closed)?;
        }
    }
}

pub(crate) fn check_append(stream: &str, events: &EventBatch) -> Result<usize, StoreError> {
    if stream.is_empty() || stream.len() > STREAM_NAME_BYTES_MAX {
        return Err(StoreError::InvalidRequest(format!("stream name must be 1 to {STREAM_NAME_BYTES_MAX} bytes")));
    }
    let mut bytes = 0usize;
    for (event_type, payload) in events.iter() {
        if event_type.is_empty() || event_type.len() > EVENT_TYPE_BYTES_MAX {
            return Err(StoreError::InvalidRequest(format!("event type must be 1 to {EVENT_TYPE_BYTES_MAX} bytes")));
        }
        if payload.len() > EVENT_PAYLOAD_BYTES_MAX {
            return Err(StoreError::InvalidRequest(format!("event payload is over {EVENT_PAYLOAD_BYTES_MAX} bytes")));
        }
        bytes += format::record_len(stream.len(), event_type.len(), payload.len());
    }
    if bytes > APPEND_BYTES_MAX {
        return Err(StoreError::InvalidRequest(format!("append is over {APPEND_BYTES_MAX} bytes; split it")));
    }
    Ok(bytes)
}
