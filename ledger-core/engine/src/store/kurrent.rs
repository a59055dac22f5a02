//! The `EventStore` port over EventStoreDB / KurrentDB (the official `kurrentdb`
//! client), for when one machine's disk is not enough: a cluster replicates the log
//! with quorum writes and fails over.
//!
//! Mapping:
//! - A stream is a KurrentDB stream of the same name; revisions are its event numbers.
//! - An append is one `append_to_stream` with the exact expected revision (the fencing
//!   token between writers). Appends of this process go through one task, in order,
//!   so `flush_with` is a marker in that queue.
//! - The hash chain travels in each event's custom metadata (`{"rev":N,"hash":"hex"}`),
//!   computed from the stream's head; the event id is the first 16 bytes of the chain
//!   hash, so a retried append is recognised by the server as the same write.
//! - Log positions are the events' `$all` prepare positions: strictly increasing in
//!   commit order, not dense (`dense_positions` is false). Reading `$all` from position
//!   p starts at (commit p, prepare p) and keeps events whose prepare position is at
//!   least p: every such event has a commit position of at least p. System streams and
//!   events (`$…`) are skipped.
//! - Errors: a wrong expected revision is `WrongExpectedRevision`; connection, leader
//!   and server errors are `Unavailable`, a timeout `DeadlineExceeded`. Reads are
//!   retried; appends are retried only after errors where the server may not have
//!   written, which is safe because the same event ids at the same expected revision
//!   are an idempotent write for the server.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, EventData, Position as KPosition, ReadAllOptions, ReadStreamOptions,
    StreamPosition, StreamState, SubscribeToAllOptions,
};

use super::{
    check_append, AppendCallback, AppendOutcome, Direction, EventBatch, EventStore, ExpectedRevision, FlushCallback,
    Position, RecordedEvent, Revision, StoreError, StreamHead,
};
use ledger_core::chain::{chain_hash, Hash, GENESIS_HASH};

/// The server's default largest append (1 MiB), less room for the request's framing.
pub const KURRENT_APPEND_BYTES_MAX: usize = 1_000_000;
const ATTEMPTS: u32 = 3;

/// Whether a connection string names this backend.
pub fn is_kurrent(spec: &str) -> bool {
    ["kurrentdb://", "kurrentdb+discover://", "esdb://", "esdb+discover://"].iter().any(|p| spec.starts_with(p))
}

/// The chain fields an event carries in its custom metadata.
pub fn encode_metadata(revision: Revision, hash: &Hash) -> Vec<u8> {
    format!("{{\"rev\":{revision},\"hash\":\"{}\"}}", ledger_core::chain::to_hex(hash)).into_bytes()
}

/// The chain fields of an event's custom metadata.
pub fn decode_metadata(bytes: &[u8]) -> Option<(Revision, Hash)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let revision = text.split("\"rev\":").nth(1)?.split([',', '}']).next()?.trim().parse().ok()?;
    let hex = text.split("\"hash\":\"").nth(1)?.split('"').next()?;
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((revision, hash))
}

/// The event id: the chain hash's first 16 bytes.
pub fn event_id(hash: &Hash) -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Uuid::from_bytes(bytes)
}

/// The port's error for a client error.
pub fn map_error(stream: &str, expected: ExpectedRevision, error: &kurrentdb::Error) -> StoreError {
    use kurrentdb::Error as E;
    match error {
        E::WrongExpectedVersion { current, .. } => StoreError::WrongExpectedRevision {
            stream: stream.to_string(),
            expected,
            actual: match current {
                kurrentdb::CurrentRevision::Current(r) => Some(*r),
                kurrentdb::CurrentRevision::NoStream => None,
            },
        },
        E::DeadlineExceeded => StoreError::DeadlineExceeded,
        E::AccessDenied => StoreError::InvalidRequest("access denied by the server".into()),
        E::ResourceDeleted => StoreError::InvalidRequest(format!("stream {stream} was deleted")),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Whether an operation that failed so may be tried again. For an append this also
/// means the server did not (or may not have) written it: a retry with the same event
/// ids and expected revision is then answered as the original write.
pub fn retriable(error: &kurrentdb::Error) -> bool {
    use kurrentdb::Error as E;
    matches!(
        error,
        E::ServerError(_)
            | E::NotLeaderException(_)
            | E::ConnectionClosed
            | E::GrpcConnectionError(_)
            | E::DeadlineExceeded
    ) || matches!(error, E::Grpc { code, .. } if matches!(format!("{code:?}").as_str(), "Unavailable" | "DeadlineExceeded" | "Aborted"))
}

/// Back-off before attempt `n` (1-based): 100 ms, 200 ms, 400 ms.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 << attempt.saturating_sub(1).min(4))
}

enum Job {
    Append { stream: String, expected: ExpectedRevision, events: EventBatch, done: AppendCallback },
    Flush(FlushCallback),
}

pub struct KurrentStore {
    client: Client,
    runtime: Arc<tokio::runtime::Runtime>,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    head: Arc<tokio::sync::watch::Sender<Position>>,
}

impl std::fmt::Debug for KurrentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KurrentStore").finish_non_exhaustive()
    }
}

fn is_system(stream: &str, event_type: &str) -> bool {
    stream.starts_with('$') || event_type.starts_with('$')
}

fn recorded(event: &kurrentdb::RecordedEvent) -> Result<RecordedEvent, StoreError> {
    let stream = event.stream_id().to_string();
    let (revision, hash) = decode_metadata(&event.custom_metadata).ok_or_else(|| StoreError::Corrupt {
        file: format!("kurrentdb:{stream}").into(),
        offset: event.revision,
        reason: "no chain metadata".into(),
    })?;
    if revision != event.revision {
        return Err(StoreError::ChainBroken {
            stream,
            revision: event.revision,
            file: "kurrentdb".into(),
            offset: event.position.prepare,
            reason: format!("metadata says revision {revision}"),
        });
    }
    Ok(RecordedEvent {
        stream,
        revision: event.revision,
        position: event.position.prepare,
        event_type: event.event_type.clone(),
        payload: event.data.to_vec(),
        hash,
    })
}

impl KurrentStore {
    /// Connects (lazily: the first call finds the cluster) with a connection string such
    /// as `kurrentdb://host:2113?tls=false` or `esdb+discover://a,b,c:2113`.
    pub fn connect(spec: &str) -> Result<KurrentStore, StoreError> {
        let settings: ClientSettings =
            spec.parse().map_err(|e| StoreError::InvalidRequest(format!("connection string: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kurrentdb")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("runtime: {e}")))?;
        let runtime = Arc::new(runtime);
        let client = {
            let _guard = runtime.enter();
            Client::new(settings).map_err(|e| StoreError::Unavailable(e.to_string()))?
        };
        let (head, _) = tokio::sync::watch::channel(0);
        let head = Arc::new(head);
        let (jobs, receiver) = tokio::sync::mpsc::unbounded_channel();
        runtime.spawn(append_worker(client.clone(), receiver));
        runtime.spawn(follow_head(client.clone(), head.clone()));
        Ok(KurrentStore { client, runtime, jobs, head })
    }

    /// Runs `future` on the store's runtime and waits for it (callable from any thread,
    /// inside another runtime too).
    fn wait<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Result<T, StoreError> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver.recv().map_err(|_| StoreError::Closed)
    }

    async fn read_stream_async(
        client: Client,
        stream: String,
        from: Revision,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let options = match direction {
            Direction::Forwards => ReadStreamOptions::default().forwards(),
            Direction::Backwards => ReadStreamOptions::default().backwards(),
        }
        .position(StreamPosition::Position(from))
        .max_count(max_count);
        let result = with_retries(|| async {
            let mut out = Vec::new();
            let mut read = client.read_stream(stream.as_str(), &options).await?;
            while let Some(event) = read.next().await? {
                out.push(recorded(event.get_original_event()));
            }
            Ok(out)
        })
        .await;
        match result {
            Ok(events) => events.into_iter().collect(),
            Err(kurrentdb::Error::ResourceNotFound) => Ok(Vec::new()),
            Err(error) => Err(map_error(&stream, ExpectedRevision::Any, &error)),
        }
    }

    async fn read_all_async(
        client: Client,
        from: Position,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // Pages of $all until `max_count` events of ours, or the end: a long run of system
        // events must not look like the end of the log.
        const PAGE: usize = 1_024;
        let mut start = if from == 0 {
            StreamPosition::Start
        } else {
            StreamPosition::Position(KPosition { commit: from, prepare: from })
        };
        let mut floor = from;
        let mut out = Vec::new();
        loop {
            let options = ReadAllOptions::default().forwards().position(start).max_count(PAGE);
            let page = with_retries(|| async {
                let mut page = Vec::new();
                let mut read = client.read_all(&options).await?;
                while let Some(event) = read.next().await? {
                    let event = event.get_original_event();
                    let ours = (!is_system(event.stream_id(), &event.event_type)).then(|| recorded(event));
                    page.push((event.position, ours));
                }
                Ok(page)
            })
            .await
            .map_err(|e| map_error("$all", ExpectedRevision::Any, &e))?;
            // A page starts at (or before) the last event already seen: keep only newer ones.
            let fresh: Vec<_> = page.into_iter().filter(|(position, _)| position.prepare >= floor).collect();
            let Some((last, _)) = fresh.last() else { return Ok(out) };
            start = StreamPosition::Position(*last);
            floor = last.prepare + 1;
            for event in fresh.into_iter().filter_map(|(_, ours)| ours) {
                out.push(event?);
                if out.len() >= max_count {
                    return Ok(out);
                }
            }
        }
    }
}

/// Runs `operation` until it succeeds, fails in a way that is not [`retriable`], or has
/// been tried `ATTEMPTS` times, backing off in between.
async fn with_retries<T, F, Fut>(mut operation: F) -> Result<T, kurrentdb::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kurrentdb::Error>>,
{
    let mut attempt = 1;
    loop {
        match operation().await {
            Err(error) if retriable(&error) && attempt < ATTEMPTS => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Appends in order, one at a time; a flush is answered when the appends before it are.
async fn append_worker(client: Client, mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>) {
    let mut heads: HashMap<String, (Option<Revision>, Hash)> = HashMap::new();
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Flush(done) => done(Ok(())),
            Job::Append { stream, expected, events, done } => {
                let result = append(&client, &mut heads, &stream, expected, &events).await;
                if result.is_err() {
                    heads.remove(&stream);
                }
                done(result);
            }
        }
    }
}

async fn append(
    client: &Client,
    heads: &mut HashMap<String, (Option<Revision>, Hash)>,
    stream: &str,
    expected: ExpectedRevision,
    events: &EventBatch,
) -> Result<AppendOutcome, StoreError> {
    let bytes = check_append(stream, events)?;
    if bytes > KURRENT_APPEND_BYTES_MAX {
        return Err(StoreError::InvalidRequest(format!(
            "append of {bytes} bytes is over the server's {KURRENT_APPEND_BYTES_MAX}; send smaller batches"
        )));
    }
    let head = match heads.get(stream) {
        Some(head) => *head,
        None => {
            let last =
                KurrentStore::read_stream_async(client.clone(), stream.to_string(), u64::MAX, Direction::Backwards, 1)
                    .await?;
            last.first().map_or((None, GENESIS_HASH), |e| (Some(e.revision), e.hash))
        }
    };
    if let ExpectedRevision::Exact(r) = expected {
        if head.0 != Some(r) {
            return Err(StoreError::WrongExpectedRevision { stream: stream.into(), expected, actual: head.0 });
        }
    }
    if expected == ExpectedRevision::NoStream && head.0.is_some() {
        return Err(StoreError::WrongExpectedRevision { stream: stream.into(), expected, actual: head.0 });
    }
    let (mut revision, mut hash) = (head.0.map_or(0, |r| r + 1), head.1);
    let first_revision = revision;
    let mut data = Vec::with_capacity(events.len());
    for (event_type, payload) in events.iter() {
        hash = chain_hash(&hash, revision, payload);
        data.push(
            EventData::binary(event_type, bytes::Bytes::copy_from_slice(payload))
                .id(event_id(&hash))
                .metadata(bytes::Bytes::from(encode_metadata(revision, &hash))),
        );
        revision += 1;
    }
    let state = match head.0 {
        Some(r) => StreamState::StreamRevision(r),
        None => StreamState::NoStream,
    };
    let options = AppendToStreamOptions::default().stream_state(state);
    let written = with_retries(|| client.append_to_stream(stream, &options, data.clone()))
        .await
        .map_err(|error| map_error(stream, expected, &error))?;
    let last_revision = (!events.is_empty()).then(|| revision - 1);
    heads.insert(stream.to_string(), (last_revision.or(head.0), hash));
    Ok(AppendOutcome {
        first_revision: (!events.is_empty()).then_some(first_revision),
        last_revision: last_revision.or(head.0),
        first_position: written.position.prepare,
        last_hash: hash,
    })
}

/// Keeps `head` one past the prepare position of the newest non-system event.
async fn follow_head(client: Client, head: Arc<tokio::sync::watch::Sender<Position>>) {
    let advance = |event: &kurrentdb::RecordedEvent| {
        if !is_system(event.stream_id(), &event.event_type) {
            let next = event.position.prepare + 1;
            head.send_if_modified(|h| (next > *h).then(|| *h = next).is_some());
            return true;
        }
        false
    };
    let mut attempt = 1;
    loop {
        let options = ReadAllOptions::default().backwards().position(StreamPosition::End).max_count(256);
        if let Ok(mut read) = client.read_all(&options).await {
            while let Ok(Some(event)) = read.next().await {
                if advance(event.get_original_event()) {
                    break;
                }
            }
        }
        let mut subscription =
            client.subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::End)).await;
        while let Ok(event) = subscription.next().await {
            attempt = 1;
            advance(event.get_original_event());
        }
        tokio::time::sleep(backoff(attempt.min(5))).await;
        attempt += 1;
    }
}

impl EventStore for KurrentStore {
    fn append_with(&self, stream: &str, expected: ExpectedRevision, events: EventBatch, done: AppendCallback) {
        let job = Job::Append { stream: stream.to_string(), expected, events, done };
        if let Err(tokio::sync::mpsc::error::SendError(Job::Append { done, .. })) = self.jobs.send(job) {
            done(Err(StoreError::Closed));
        }
    }

    fn flush_with(&self, done: FlushCallback) {
        if let Err(tokio::sync::mpsc::error::SendError(Job::Flush(done))) = self.jobs.send(Job::Flush(done)) {
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
        let (client, stream) = (self.client.clone(), stream.to_string());
        self.wait(KurrentStore::read_stream_async(client, stream, from, direction, max_count))?
    }

    fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.client.clone();
        self.wait(KurrentStore::read_all_async(client, from, max_count))?
    }

    fn stream_head(&self, stream: &str) -> Result<Option<StreamHead>, StoreError> {
        let last = self.read_stream(stream, u64::MAX, Direction::Backwards, 1)?;
        Ok(last.first().map(|e| StreamHead { revision: e.revision, hash: e.hash }))
    }

    fn stream_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // A scan of $all: needs no server-side projection.
        let mut names = HashSet::new();
        let mut from = 0;
        loop {
            let batch = self.read_all(from, 4_096)?;
            let Some(last) = batch.last() else { break };
            from = last.position + 1;
            names.extend(batch.into_iter().filter(|e| e.stream.starts_with(prefix)).map(|e| e.stream));
        }
        Ok(names.into_iter().collect())
    }

    fn watch_head(&self) -> tokio::sync::watch::Receiver<Position> {
        self.head.subscribe()
    }

    fn dense_positions(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_metadata_round_trips_and_rejects_garbage() {
        let hash = ledger_core::chain::chain_hash(&GENESIS_HASH, 7, b"payload");
        let bytes = encode_metadata(7, &hash);
        assert_eq!(decode_metadata(&bytes), Some((7, hash)));
        assert!(std::str::from_utf8(&bytes).expect("json").starts_with("{\"rev\":7,\"hash\":\""));
        for bad in [&b""[..], b"{}", b"{\"rev\":1}", b"{\"rev\":x,\"hash\":\"00\"}", b"\xff\xfe"] {
            assert_eq!(decode_metadata(bad), None);
        }
        assert_eq!(event_id(&hash).as_bytes()[..], hash[..16], "the event id is the hash's head");
    }

    #[test]
    fn errors_map_to_the_ports_and_only_safe_ones_are_retried() {
        use kurrentdb::Error as E;
        let conflict = E::WrongExpectedVersion {
            expected: StreamState::StreamRevision(3),
            current: kurrentdb::CurrentRevision::Current(5),
        };
        match map_error("ledger-0", ExpectedRevision::Exact(3), &conflict) {
            StoreError::WrongExpectedRevision { stream, expected, actual } => {
                assert_eq!((stream.as_str(), expected, actual), ("ledger-0", ExpectedRevision::Exact(3), Some(5)));
            }
            other => panic!("{other:?}"),
        }
        assert!(!retriable(&conflict), "a conflict is never retried: the writer must reload");
        assert!(matches!(map_error("s", ExpectedRevision::Any, &E::DeadlineExceeded), StoreError::DeadlineExceeded));
        assert!(matches!(map_error("s", ExpectedRevision::Any, &E::ConnectionClosed), StoreError::Unavailable(_)));
        for safe in [E::ConnectionClosed, E::DeadlineExceeded, E::ServerError("x".into())] {
            assert!(retriable(&safe), "{safe:?}");
        }
        for unsafe_ in [E::AccessDenied, E::ResourceDeleted, E::InternalParsingError("x".into())] {
            assert!(!retriable(&unsafe_), "{unsafe_:?}");
        }
        assert_eq!(
            (backoff(1), backoff(2), backoff(3)),
            (Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(400))
        );
        assert!(is_kurrent("kurrentdb://localhost:2113?tls=false") && is_kurrent("esdb+discover://a,b,c:2113"));
        assert!(!is_kurrent("data") && !is_kurrent("http://x"));
    }

    #[test]
    fn a_connection_string_is_checked_without_a_server() {
        assert!(KurrentStore::connect("kurrentdb://127.0.0.1:1?tls=false").is_ok(), "connects lazily");
        assert!(matches!(KurrentStore::connect("kurrentdb://"), Err(StoreError::InvalidRequest(_))));
    }
}
