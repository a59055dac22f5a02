//! Read models opened over a log: the one-read check of the last event applied tells
//! read models of this log (also once it has grown) from those of another log, as the
//! check of every stream's head does.

use std::sync::Arc;

use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::{EventData, EventStore, EventStoreExt, ExpectedRevision};
use projections::read_models::ReadModels;

fn event(payload: &str) -> EventData {
    EventData { event_type: "Note".into(), payload: payload.as_bytes().to_vec() }
}

/// A log with `events` (stream, payload) appended in order.
fn log(dir: &std::path::Path, events: &[(&str, &str)]) -> Arc<dyn EventStore> {
    let (store, _) = EmbeddedStore::open(dir.join("log"), EmbeddedOptions::default()).expect("store");
    let store: Arc<dyn EventStore> = Arc::new(store);
    append(store.as_ref(), events);
    store
}

fn append(store: &dyn EventStore, events: &[(&str, &str)]) {
    for (stream, payload) in events {
        store.append_blocking(stream, ExpectedRevision::Any, vec![event(payload)]).expect("append");
    }
}

#[test]
fn the_last_event_applied_tells_this_log_from_another() {
    let (a_dir, b_dir, models_dir) =
        (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let a = log(a_dir.path(), &[("notes-1", "one"), ("notes-2", "two"), ("notes-1", "three")]);
    // As long as a, the same streams, other events.
    let b = log(b_dir.path(), &[("notes-1", "one"), ("notes-2", "two"), ("notes-1", "another")]);
    let models = ReadModels::open(&models_dir.path().join("read-models.redb")).expect("models");
    models.set_dense_positions(true);
    models.apply(&a.read_all(0, 100).expect("read"), true).expect("apply");

    assert_eq!(models.tip_diverges_from(a.as_ref()).expect("check"), None);
    assert_eq!(models.diverges_from(a.as_ref()).expect("check"), None);
    let tip = models.tip_diverges_from(b.as_ref()).expect("check");
    assert!(tip.as_deref().is_some_and(|r| r.contains("position 2")), "{tip:?}");
    assert!(models.diverges_from(b.as_ref()).expect("check").is_some());

    // A log that grew since: still theirs.
    append(a.as_ref(), &[("notes-2", "four"), ("notes-3", "five")]);
    assert_eq!(models.tip_diverges_from(a.as_ref()).expect("check"), None);
    // A log shorter than what they applied.
    let c_dir = tempfile::tempdir().expect("dir");
    let c = log(c_dir.path(), &[("notes-1", "one"), ("notes-2", "two")]);
    let past = models.tip_diverges_from(c.as_ref()).expect("check");
    assert!(past.as_deref().is_some_and(|r| r.contains("past the log's end")), "{past:?}");
}
