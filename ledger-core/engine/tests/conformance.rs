//! The conformance suite of the `EventStore` port: what every backend must do, written
//! once against the port and run against each backend. The embedded store runs it
//! always; EventStoreDB/KurrentDB runs it when `LEDGER_TEST_ESDB` names a reachable
//! server (a connection string such as `kurrentdb://localhost:2113?tls=false`), and is
//! skipped with a printed reason otherwise. Stream names are namespaced per backend
//! instance, so a shared server can run the suite again and again.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use ledger_core::chain::{chain_hash, GENESIS_HASH};
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::*;

/// A backend under test: a fresh, empty store, and the same store reopened (a new
/// connection or process) after the old handle is dropped.
trait Backend {
    fn store(&self) -> Arc<dyn EventStore>;
    fn reopen(&self, old: Arc<dyn EventStore>) -> Arc<dyn EventStore>;
    /// The store's name for the suite's stream `name`.
    fn stream(&self, name: &str) -> String {
        name.to_string()
    }
    /// The events of the whole log that belong to this instance of the suite.
    fn mine(&self, all: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
        all
    }
    /// The largest single append the backend takes (KurrentDB: 1 MiB).
    fn append_bytes_max(&self) -> usize {
        APPEND_BYTES_MAX
    }
}

struct Embedded {
    dir: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Embedded {
        Embedded { dir: tempfile::tempdir().expect("tempdir") }
    }
}

impl Backend for Embedded {
    fn store(&self) -> Arc<dyn EventStore> {
        Arc::new(EmbeddedStore::open(self.dir.path(), EmbeddedOptions::default()).expect("open").0)
    }

    fn reopen(&self, old: Arc<dyn EventStore>) -> Arc<dyn EventStore> {
        drop(old);
        self.store()
    }
}

fn events(tag: &str, count: usize, bytes: usize) -> Vec<EventData> {
    (0..count)
        .map(|n| {
            let mut payload = format!("{tag}-{n}-").into_bytes();
            payload.resize(bytes.max(payload.len()), b'.');
            EventData { event_type: Cow::Borrowed("Test"), payload }
        })
        .collect()
}

/// Every event of the log that belongs to this run, in commit order.
fn whole_log(backend: &dyn Backend, store: &dyn EventStore) -> Vec<RecordedEvent> {
    let (mut out, mut from) = (Vec::new(), 0);
    loop {
        let batch = store.read_all(from, 4_096).expect("read all");
        let Some(last) = batch.last() else { return out };
        from = last.position + 1;
        out.extend(backend.mine(batch));
    }
}

fn payloads(recorded: &[RecordedEvent]) -> Vec<String> {
    recorded.iter().map(|e| String::from_utf8_lossy(&e.payload).trim_end_matches('.').to_string()).collect()
}

fn append_and_read_forwards_and_backwards(backend: &dyn Backend) {
    let store = backend.store();
    let first =
        store.append_blocking(&backend.stream("s-1"), ExpectedRevision::NoStream, events("a", 3, 0)).expect("append");
    assert_eq!((first.first_revision, first.last_revision), (Some(0), Some(2)));
    store.append_blocking(&backend.stream("s-1"), ExpectedRevision::Exact(2), events("b", 2, 0)).expect("append");
    let forwards = store.read_stream(&backend.stream("s-1"), 0, Direction::Forwards, 100).expect("read");
    assert_eq!(payloads(&forwards), ["a-0-", "a-1-", "a-2-", "b-0-", "b-1-"]);
    assert_eq!(forwards.iter().map(|e| e.revision).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    let middle = store.read_stream(&backend.stream("s-1"), 3, Direction::Forwards, 1).expect("read");
    assert_eq!(payloads(&middle), ["b-0-"]);
    let backwards = store.read_stream(&backend.stream("s-1"), 4, Direction::Backwards, 2).expect("read");
    assert_eq!(backwards.iter().map(|e| e.revision).collect::<Vec<_>>(), [4, 3]);
    assert!(store.read_stream(&backend.stream("missing"), 0, Direction::Forwards, 10).expect("read").is_empty());
    let head = store.stream_head(&backend.stream("s-1")).expect("head").expect("exists");
    assert_eq!((head.revision, head.hash), (4, forwards[4].hash));
    assert_eq!(store.stream_head(&backend.stream("missing")).expect("head"), None);
    store.append_blocking(&backend.stream("s-2"), ExpectedRevision::NoStream, events("c", 1, 0)).expect("append");
    store.append_blocking(&backend.stream("t-1"), ExpectedRevision::NoStream, events("d", 1, 0)).expect("append");
    let mut names = store.stream_names(&backend.stream("s-")).expect("names");
    names.sort();
    assert_eq!(names, [backend.stream("s-1"), backend.stream("s-2")]);
    assert!(store.stream_names(&backend.stream("missing-")).expect("names").is_empty());
}

fn a_wrong_expected_revision_is_a_typed_conflict_and_appends_nothing(backend: &dyn Backend) {
    let store = backend.store();
    store.append_blocking(&backend.stream("s-1"), ExpectedRevision::NoStream, events("a", 2, 0)).expect("append");
    for expected in [ExpectedRevision::NoStream, ExpectedRevision::Exact(0), ExpectedRevision::Exact(5)] {
        match store.append_blocking(&backend.stream("s-1"), expected, events("x", 1, 0)) {
            Err(StoreError::WrongExpectedRevision { actual, .. }) => assert_eq!(actual, Some(1)),
            other => panic!("{expected:?}: expected a conflict, got {other:?}"),
        }
    }
    match store.append_blocking(&backend.stream("new"), ExpectedRevision::Exact(0), events("x", 1, 0)) {
        Err(StoreError::WrongExpectedRevision { actual: None, .. }) => {}
        other => panic!("expected a conflict on a missing stream, got {other:?}"),
    }
    assert_eq!(whole_log(backend, store.as_ref()).len(), 2, "nothing was appended");
}

fn the_whole_log_in_commit_order_with_verifiable_chains(backend: &dyn Backend) {
    let store = backend.store();
    store.append_blocking(&backend.stream("s-1"), ExpectedRevision::Any, events("a", 2, 0)).expect("append");
    store.append_blocking(&backend.stream("s-2"), ExpectedRevision::Any, events("b", 1, 0)).expect("append");
    store.append_blocking(&backend.stream("s-1"), ExpectedRevision::Any, events("c", 1, 0)).expect("append");
    let all = whole_log(backend, store.as_ref());
    assert_eq!(payloads(&all), ["a-0-", "a-1-", "b-0-", "c-0-"]);
    if store.dense_positions() {
        assert_eq!(all.iter().map(|e| e.position).collect::<Vec<_>>(), [0, 1, 2, 3]);
    } else {
        assert!(all.windows(2).all(|w| w[0].position < w[1].position), "positions increase in commit order");
    }
    assert_eq!(payloads(&backend.mine(store.read_all(all[2].position, 1).expect("read"))), ["b-0-"]);
    for stream in [backend.stream("s-1"), backend.stream("s-2")] {
        let mut previous = GENESIS_HASH;
        for event in all.iter().filter(|e| e.stream == stream) {
            assert_eq!(event.hash, chain_hash(&previous, event.revision, &event.payload), "{stream}");
            previous = event.hash;
        }
    }
}

fn subscriptions_see_stored_then_live_events_and_resume_from_a_checkpoint(backend: &dyn Backend) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let store = backend.store();
    store.append_blocking(&backend.stream("s-1"), ExpectedRevision::Any, events("a", 3, 0)).expect("append");
    // Start where this run's events start (0 on a fresh embedded log).
    let start = whole_log(backend, store.as_ref())[0].position;
    let stream_2 = backend.stream("s-2");
    let checkpoint = runtime.block_on(async {
        let mut subscription = Subscription::new(store.clone(), start);
        let stored = subscription.next_batch(2).await.expect("stored");
        assert_eq!(payloads(&backend.mine(stored)), ["a-0-", "a-1-"]);
        let writer = store.clone();
        let live = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer.append(&stream_2, ExpectedRevision::Any, events("live", 1, 0)).await
        });
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let batch = tokio::time::timeout(Duration::from_secs(10), subscription.next_batch(10))
                .await
                .expect("a live event arrives")
                .expect("batch");
            seen.extend(payloads(&backend.mine(batch)));
        }
        live.await.expect("join").expect("live append");
        assert_eq!(seen, ["a-2-", "live-0-"]);
        subscription.position()
    });
    // A new connection resumes exactly after the checkpoint.
    let store = backend.reopen(store);
    store.append_blocking(&backend.stream("s-1"), ExpectedRevision::Any, events("after", 1, 0)).expect("append");
    runtime.block_on(async {
        let mut subscription = Subscription::new(store.clone(), checkpoint);
        let mut rest = Vec::new();
        while rest.is_empty() {
            let batch = tokio::time::timeout(Duration::from_secs(10), subscription.next_batch(10))
                .await
                .expect("the event after the checkpoint arrives")
                .expect("rest");
            rest.extend(backend.mine(batch));
        }
        assert_eq!(payloads(&rest), ["after-0-"]);
        if store.dense_positions() {
            assert_eq!(rest[0].position, checkpoint);
        } else {
            assert!(rest[0].position >= checkpoint);
        }
    });
}

fn a_retried_append_is_applied_once(backend: &dyn Backend) {
    let store = backend.store();
    let batch = events("once", 3, 0);
    store.append_blocking(&backend.stream("s-1"), ExpectedRevision::NoStream, batch.clone()).expect("append");
    // The caller did not see the answer (a dropped connection) and retries as sent.
    let store = backend.reopen(store);
    match store.append_blocking(&backend.stream("s-1"), ExpectedRevision::NoStream, batch) {
        Err(StoreError::WrongExpectedRevision { actual: Some(2), .. }) => {}
        other => panic!("a retry must not append twice: {other:?}"),
    }
    assert_eq!(
        payloads(&store.read_stream(&backend.stream("s-1"), 0, Direction::Forwards, 10).expect("read")).len(),
        3
    );
}

fn a_large_batch_is_all_or_nothing(backend: &dyn Backend) {
    let store = backend.store();
    // 4,096 events of 2 KiB (8 MiB in one append, far over one network message), or as
    // many as the backend's largest append takes.
    let count = (backend.append_bytes_max() / 2 / 2_200).min(4_096);
    let last = count as u64 - 1;
    let outcome = store
        .append_blocking(&backend.stream("big"), ExpectedRevision::NoStream, events("big", count, 2048))
        .expect("append");
    assert_eq!(outcome.last_revision, Some(last));
    let back = store.read_stream(&backend.stream("big"), 0, Direction::Forwards, 10_000).expect("read");
    assert_eq!(back.len(), count);
    assert!(back.iter().all(|e| e.payload.len() == 2048));
    // An invalid member refuses the whole batch.
    let mut bad = events("bad", 10, 0);
    bad[7].event_type = Cow::Borrowed("");
    assert!(matches!(
        store.append_blocking(&backend.stream("big"), ExpectedRevision::Exact(last), bad),
        Err(StoreError::InvalidRequest(_))
    ));
    assert_eq!(store.stream_head(&backend.stream("big")).expect("head").expect("exists").revision, last);
}

fn flush_answers_after_every_earlier_append(backend: &dyn Backend) {
    let store = backend.store();
    let (sender, receiver) = std::sync::mpsc::channel();
    for n in 0..20 {
        let sender = sender.clone();
        store.append_with(
            &backend.stream("s-1"),
            ExpectedRevision::Any,
            events(&format!("f{n}"), 1, 0).into(),
            Box::new(move |result| {
                let _ = sender.send(("append", result.is_ok()));
            }),
        );
    }
    store.flush_with(Box::new(move |result| {
        let _ = sender.send(("flush", result.is_ok()));
    }));
    let order: Vec<_> = receiver.iter().take(21).collect();
    assert_eq!(order.last(), Some(&("flush", true)), "{order:?}");
    assert!(order[..20].iter().all(|(what, ok)| *what == "append" && *ok), "{order:?}");
}

fn run_suite(make: &dyn Fn() -> Box<dyn Backend>) {
    append_and_read_forwards_and_backwards(make().as_ref());
    a_wrong_expected_revision_is_a_typed_conflict_and_appends_nothing(make().as_ref());
    the_whole_log_in_commit_order_with_verifiable_chains(make().as_ref());
    subscriptions_see_stored_then_live_events_and_resume_from_a_checkpoint(make().as_ref());
    a_retried_append_is_applied_once(make().as_ref());
    a_large_batch_is_all_or_nothing(make().as_ref());
    flush_answers_after_every_earlier_append(make().as_ref());
}

#[test]
fn the_embedded_store_conforms() {
    run_suite(&|| Box::new(Embedded::new()));
}

/// EventStoreDB/KurrentDB at `LEDGER_TEST_ESDB`, each suite function in streams of its
/// own (`conformance-{random}-…`).
#[cfg(feature = "kurrentdb")]
struct Kurrent {
    spec: String,
    run: String,
}

#[cfg(feature = "kurrentdb")]
impl Kurrent {
    fn new(spec: &str) -> Kurrent {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Kurrent { spec: spec.to_string(), run: format!("conformance-{nanos:x}-") }
    }
}

#[cfg(feature = "kurrentdb")]
impl Backend for Kurrent {
    fn store(&self) -> Arc<dyn EventStore> {
        Arc::new(kurrent::KurrentStore::connect(&self.spec).expect("connect"))
    }

    fn reopen(&self, old: Arc<dyn EventStore>) -> Arc<dyn EventStore> {
        drop(old);
        self.store()
    }

    fn stream(&self, name: &str) -> String {
        format!("{}{name}", self.run)
    }

    fn mine(&self, all: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
        all.into_iter().filter(|e| e.stream.starts_with(&self.run)).collect()
    }

    fn append_bytes_max(&self) -> usize {
        kurrent::KURRENT_APPEND_BYTES_MAX
    }
}

#[cfg(feature = "kurrentdb")]
#[test]
fn eventstoredb_conforms_when_a_server_is_named() {
    let Ok(spec) = std::env::var("LEDGER_TEST_ESDB") else {
        println!(
            "skipped: no EventStoreDB/KurrentDB server named. Set LEDGER_TEST_ESDB to a connection string \
             (for example kurrentdb://localhost:2113?tls=false) to run this suite against it."
        );
        eprintln!("eventstoredb_conforms_when_a_server_is_named: skipped (LEDGER_TEST_ESDB is not set)");
        return;
    };
    run_suite(&|| Box::new(Kurrent::new(&spec)));
}
