//! The conformance suite of the `EventStore` port: what every backend must do, written
//! once against the port and run against each backend. The embedded store runs it
//! always. A networked backend (EventStoreDB/KurrentDB) plugs in through `Backend`
//! and is to run it when its server is named (`LEDGER_TEST_ESDB`); none is built yet.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use ledger_core::chain::{chain_hash, GENESIS_HASH};
use ledger_core::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_core::store::*;

/// A backend under test: a fresh, empty store, and the same store reopened (a new
/// connection or process) after the old handle is dropped.
trait Backend {
    fn store(&self) -> Arc<dyn EventStore>;
    fn reopen(&self, old: Arc<dyn EventStore>) -> Arc<dyn EventStore>;
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

fn payloads(recorded: &[RecordedEvent]) -> Vec<String> {
    recorded.iter().map(|e| String::from_utf8_lossy(&e.payload).trim_end_matches('.').to_string()).collect()
}

fn append_and_read_forwards_and_backwards(backend: &dyn Backend) {
    let store = backend.store();
    let first = store.append_blocking("s-1", ExpectedRevision::NoStream, events("a", 3, 0)).expect("append");
    assert_eq!((first.first_revision, first.last_revision), (Some(0), Some(2)));
    store.append_blocking("s-1", ExpectedRevision::Exact(2), events("b", 2, 0)).expect("append");
    let forwards = store.read_stream("s-1", 0, Direction::Forwards, 100).expect("read");
    assert_eq!(payloads(&forwards), ["a-0-", "a-1-", "a-2-", "b-0-", "b-1-"]);
    assert_eq!(forwards.iter().map(|e| e.revision).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    let middle = store.read_stream("s-1", 3, Direction::Forwards, 1).expect("read");
    assert_eq!(payloads(&middle), ["b-0-"]);
    let backwards = store.read_stream("s-1", 4, Direction::Backwards, 2).expect("read");
    assert_eq!(backwards.iter().map(|e| e.revision).collect::<Vec<_>>(), [4, 3]);
    assert!(store.read_stream("missing", 0, Direction::Forwards, 10).expect("read").is_empty());
    let head = store.stream_head("s-1").expect("head").expect("exists");
    assert_eq!((head.revision, head.hash), (4, forwards[4].hash));
    assert_eq!(store.stream_head("missing").expect("head"), None);
    store.append_blocking("s-2", ExpectedRevision::NoStream, events("c", 1, 0)).expect("append");
    store.append_blocking("t-1", ExpectedRevision::NoStream, events("d", 1, 0)).expect("append");
    let mut names = store.stream_names("s-").expect("names");
    names.sort();
    assert_eq!(names, ["s-1", "s-2"]);
    assert!(store.stream_names("missing-").expect("names").is_empty());
}

fn a_wrong_expected_revision_is_a_typed_conflict_and_appends_nothing(backend: &dyn Backend) {
    let store = backend.store();
    store.append_blocking("s-1", ExpectedRevision::NoStream, events("a", 2, 0)).expect("append");
    for expected in [ExpectedRevision::NoStream, ExpectedRevision::Exact(0), ExpectedRevision::Exact(5)] {
        match store.append_blocking("s-1", expected, events("x", 1, 0)) {
            Err(StoreError::WrongExpectedRevision { actual, .. }) => assert_eq!(actual, Some(1)),
            other => panic!("{expected:?}: expected a conflict, got {other:?}"),
        }
    }
    match store.append_blocking("new", ExpectedRevision::Exact(0), events("x", 1, 0)) {
        Err(StoreError::WrongExpectedRevision { actual: None, .. }) => {}
        other => panic!("expected a conflict on a missing stream, got {other:?}"),
    }
    assert_eq!(store.read_all(0, 100).expect("read").len(), 2, "nothing was appended");
}

fn the_whole_log_in_commit_order_with_verifiable_chains(backend: &dyn Backend) {
    let store = backend.store();
    store.append_blocking("s-1", ExpectedRevision::Any, events("a", 2, 0)).expect("append");
    store.append_blocking("s-2", ExpectedRevision::Any, events("b", 1, 0)).expect("append");
    store.append_blocking("s-1", ExpectedRevision::Any, events("c", 1, 0)).expect("append");
    let all = store.read_all(0, 100).expect("read");
    assert_eq!(payloads(&all), ["a-0-", "a-1-", "b-0-", "c-0-"]);
    assert_eq!(all.iter().map(|e| e.position).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(payloads(&store.read_all(2, 1).expect("read")), ["b-0-"]);
    for stream in ["s-1", "s-2"] {
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
    store.append_blocking("s-1", ExpectedRevision::Any, events("a", 3, 0)).expect("append");
    let checkpoint = runtime.block_on(async {
        let mut subscription = Subscription::new(store.clone(), 0);
        let stored = subscription.next_batch(2).await.expect("stored");
        assert_eq!(payloads(&stored), ["a-0-", "a-1-"]);
        let writer = store.clone();
        let live = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer.append("s-2", ExpectedRevision::Any, events("live", 1, 0)).await
        });
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let batch = tokio::time::timeout(Duration::from_secs(10), subscription.next_batch(10))
                .await
                .expect("a live event arrives")
                .expect("batch");
            seen.extend(payloads(&batch));
        }
        live.await.expect("join").expect("live append");
        assert_eq!(seen, ["a-2-", "live-0-"]);
        subscription.position()
    });
    // A new connection resumes exactly after the checkpoint.
    let store = backend.reopen(store);
    store.append_blocking("s-1", ExpectedRevision::Any, events("after", 1, 0)).expect("append");
    runtime.block_on(async {
        let mut subscription = Subscription::new(store.clone(), checkpoint);
        let rest = subscription.next_batch(10).await.expect("rest");
        assert_eq!(payloads(&rest), ["after-0-"]);
        assert_eq!(rest[0].position, checkpoint);
    });
}

fn a_retried_append_is_applied_once(backend: &dyn Backend) {
    let store = backend.store();
    let batch = events("once", 3, 0);
    store.append_blocking("s-1", ExpectedRevision::NoStream, batch.clone()).expect("append");
    // The caller did not see the answer (a dropped connection) and retries as sent.
    let store = backend.reopen(store);
    match store.append_blocking("s-1", ExpectedRevision::NoStream, batch) {
        Err(StoreError::WrongExpectedRevision { actual: Some(2), .. }) => {}
        other => panic!("a retry must not append twice: {other:?}"),
    }
    assert_eq!(payloads(&store.read_stream("s-1", 0, Direction::Forwards, 10).expect("read")).len(), 3);
}

fn a_large_batch_is_all_or_nothing(backend: &dyn Backend) {
    let store = backend.store();
    // 4,096 events of 2 KiB: 8 MiB in one append, far over one network message.
    let outcome = store.append_blocking("big", ExpectedRevision::NoStream, events("big", 4096, 2048)).expect("append");
    assert_eq!(outcome.last_revision, Some(4095));
    let back = store.read_stream("big", 0, Direction::Forwards, 10_000).expect("read");
    assert_eq!(back.len(), 4096);
    assert!(back.iter().all(|e| e.payload.len() == 2048));
    // An invalid member refuses the whole batch.
    let mut bad = events("bad", 10, 0);
    bad[7].event_type = Cow::Borrowed("");
    assert!(matches!(
        store.append_blocking("big", ExpectedRevision::Exact(4095), bad),
        Err(StoreError::InvalidRequest(_))
    ));
    assert_eq!(store.stream_head("big").expect("head").expect("exists").revision, 4095);
}

fn flush_answers_after_every_earlier_append(backend: &dyn Backend) {
    let store = backend.store();
    let (sender, receiver) = std::sync::mpsc::channel();
    for n in 0..20 {
        let sender = sender.clone();
        store.append_with(
            "s-1",
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
