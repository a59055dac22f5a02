//! Sealed segments: a reopened log finds its sealed segments through their seals
//! without reading their records, reads exactly what a model of the log says, and
//! scans and seals again a segment whose seal is missing or damaged.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore, RecoveryReport};
use ledger_engine::store::seal::seal_file_name;
use ledger_engine::store::*;

/// Segments of 1 KiB, and the filters of only the newest 3 sealed segments in memory:
/// most lookups go through the streams' directory.
const OPTIONS: EmbeddedOptions =
    EmbeddedOptions { segment_bytes_max: 1024, seal_in_background: true, seals_in_memory: 3 };

fn open(dir: &Path) -> (EmbeddedStore, RecoveryReport) {
    EmbeddedStore::open(dir, OPTIONS).expect("open")
}

/// Appends `appends` appends of 1 to 3 events to 40 streams, each with the exact
/// expected revision the store gives as the stream's head.
fn append_some(store: &EmbeddedStore, appends: u64, seed: u64) {
    for n in 0..appends {
        let mix = (n + seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let stream = format!("s-{}", mix % 40);
        let expected = match store.stream_head(&stream).expect("head") {
            Some(head) => ExpectedRevision::Exact(head.revision),
            None => ExpectedRevision::NoStream,
        };
        let events = (0..1 + (mix >> 20) % 3)
            .map(|e| EventData {
                event_type: Cow::Borrowed("Test"),
                payload: format!("{seed}-{n}-{e}-{}", "x".repeat(((mix >> 30) % 60) as usize)).into_bytes(),
            })
            .collect();
        store.append_blocking(&stream, expected, events).expect("append");
    }
}

/// Every read the port offers, checked against the model read from `read_all`; returns
/// the whole log.
fn check_reads(store: &EmbeddedStore) -> Vec<RecordedEvent> {
    let all = store.read_all(0, usize::MAX).expect("read all");
    assert!(all.iter().enumerate().all(|(n, event)| event.position == n as u64));
    for from in [0, 1, 7, all.len() as u64 / 2, all.len() as u64 - 1, all.len() as u64] {
        for max in [1, 5, 1_000] {
            let expected: Vec<_> = all.iter().skip(from as usize).take(max).cloned().collect();
            assert_eq!(store.read_all(from, max).expect("read all"), expected, "read_all({from}, {max})");
        }
    }
    let mut streams: HashMap<&str, Vec<&RecordedEvent>> = HashMap::new();
    for event in &all {
        streams.entry(&event.stream).or_default().push(event);
    }
    for (name, events) in &streams {
        let last = events.len() as u64 - 1;
        let head = store.stream_head(name).expect("head").expect("a stream of the log has a head");
        assert_eq!((head.revision, head.hash), (last, events[events.len() - 1].hash), "{name}");
        for from in [0, 1, 2, last / 2, last, last + 1, u64::MAX] {
            for max in [0, 1, 2, 3, 7, 1_000] {
                let forwards: Vec<_> = events.iter().skip(from.min(last + 1) as usize).take(max).copied().collect();
                let read = store.read_stream(name, from, Direction::Forwards, max).expect("forwards");
                assert_eq!(read.iter().collect::<Vec<_>>(), forwards, "{name} forwards {from} {max}");
                let end = from.saturating_add(1).min(last + 1) as usize;
                let backwards: Vec<_> = events[..end].iter().rev().take(max).copied().collect();
                let read = store.read_stream(name, from, Direction::Backwards, max).expect("backwards");
                assert_eq!(read.iter().collect::<Vec<_>>(), backwards, "{name} backwards {from} {max}");
            }
        }
    }
    assert_eq!(store.stream_head("missing").expect("head"), None);
    assert!(store.read_stream("missing", 0, Direction::Forwards, 10).expect("read").is_empty());
    let mut names = store.stream_names("s-1").expect("names");
    names.sort();
    let mut expected: Vec<String> =
        streams.keys().filter(|name| name.starts_with("s-1")).map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
    all
}

#[test]
fn a_reopened_log_is_found_through_its_seals_and_reads_as_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = {
        let (store, _) = open(dir.path());
        append_some(&store, 600, 1);
        check_reads(&store)
    };
    let (store, report) = open(dir.path());
    assert!(report.segments > 20, "{report:?}");
    assert_eq!(report.sealed, report.segments - 1, "every segment but the last through its seal: {report:?}");
    assert!(report.scanned < 40, "only the last segment is read: {report:?}");
    assert!(report.covered >= report.sealed - 3, "the older seals through the directory: {report:?}");
    assert_eq!(report.records, log.len() as u64);
    assert_eq!(check_reads(&store), log);
    // Appends go on from the heads the seals give, and the whole log still chains.
    append_some(&store, 300, 2);
    let log = check_reads(&store);
    drop(store);
    let report = ledger_engine::store::format::scan(dir.path(), |_, _| {}).expect("the full scan checks every link");
    assert_eq!(report.records, log.len() as u64);

    // A seal missing, one damaged, one whose segment was cut: each segment is read
    // again and sealed again, and the log reads the same.
    let segments = report.segments.len();
    std::fs::remove_file(dir.path().join(seal_file_name(2))).expect("remove a seal");
    let damaged = dir.path().join(seal_file_name(4));
    let mut bytes = std::fs::read(&damaged).expect("read a seal");
    bytes[70] ^= 0x40;
    std::fs::write(&damaged, &bytes).expect("damage a seal");
    std::fs::write(dir.path().join(format!("{}.tmp", seal_file_name(6))), b"unfinished").expect("a stray file");
    let (store, report) = open(dir.path());
    assert_eq!(report.segments, segments);
    assert_eq!(report.sealed, segments - 3, "{report:?}");
    assert_eq!(report.covered, 0, "segments scanned before the directory is checked: every filter read: {report:?}");
    assert!(
        dir.path().join(seal_file_name(2)).exists() && !dir.path().join(format!("{}.tmp", seal_file_name(6))).exists()
    );
    assert_eq!(check_reads(&store), log);
    drop(store);
    let (_, report) = open(dir.path());
    assert_eq!(report.sealed, segments - 1, "sealed again: {report:?}");
    assert!(
        report.covered >= report.sealed - 3,
        "the seals written again are the ones the directory names: {report:?}"
    );
}

#[test]
fn a_seal_pointing_at_another_record_is_caught_when_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _) = open(dir.path());
        append_some(&store, 200, 3);
    }
    // The first two offsets of segment 3 swapped: each record is read, but it is not
    // the one the position asks for.
    let path = dir.path().join(seal_file_name(3));
    let mut bytes = std::fs::read(&path).expect("read a seal");
    let offsets_at = u32::from_le_bytes(bytes[48..52].try_into().expect("4 bytes")) as usize;
    let (first, second) = (bytes[offsets_at..offsets_at + 4].to_vec(), bytes[offsets_at + 4..offsets_at + 8].to_vec());
    bytes[offsets_at..offsets_at + 4].copy_from_slice(&second);
    bytes[offsets_at + 4..offsets_at + 8].copy_from_slice(&first);
    std::fs::write(&path, &bytes).expect("write");
    let (store, report) = open(dir.path());
    assert_eq!(report.sealed, report.segments - 1);
    match store.read_all(0, usize::MAX) {
        Err(StoreError::Corrupt { reason, .. }) => assert!(reason.contains("not the one the index names"), "{reason}"),
        other => panic!("a misplaced record was not caught: {other:?}"),
    }
}
