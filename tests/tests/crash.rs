//! Crash recovery with a real process kill: a writer commits batches under load and is
//! killed with SIGKILL at a random moment, several times over the same directory. After
//! each kill, every acknowledged transfer is in the log, no batch is partly there, the
//! auditor passes, and the recovered state equals a replay from nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_core::domain::TransferId;
use ledger_engine::audit;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::writer::{Ledger, LedgerConfig};

/// A batch of transfer ids, first and last.
type Range = (u128, u128);

/// A running writer and what it said so far.
struct Writer {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    submitted: Vec<Range>,
    acknowledged: Vec<Range>,
}

impl Writer {
    fn start(dir: &std::path::Path, base: u128, env: &[(&str, &std::path::Path)]) -> Writer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_crash-writer"));
        command.arg(dir).arg(base.to_string()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start crash-writer");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Writer { child, lines, submitted: Vec::new(), acknowledged: Vec::new() }
    }

    /// Notes a line; false at the end of the writer's output.
    fn read_line(&mut self) -> bool {
        let Some(Ok(line)) = self.lines.next() else { return false };
        let parts: Vec<&str> = line.split(' ').collect();
        if let [kind, first, last] = parts.as_slice() {
            let range = (first.parse().expect("first"), last.parse().expect("last"));
            match *kind {
                "SUBMIT" => self.submitted.push(range),
                "ACK" => self.acknowledged.push(range),
                _ => {}
            }
        }
        true
    }

    /// Reads until `acks` batches are acknowledged in all.
    fn until_acknowledged(&mut self, acks: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acknowledged.len() < acks {
            assert!(Instant::now() < deadline, "writer made too little progress");
            assert!(self.read_line(), "writer still running");
        }
    }

    /// Reads to the end of the writer's output (acks printed before a kill landed still
    /// count) and waits for it. Returns (submitted, acknowledged, its exit status).
    fn finish(mut self) -> (Vec<Range>, Vec<Range>, std::process::ExitStatus) {
        while self.read_line() {}
        let status = self.child.wait().expect("wait");
        (self.submitted, self.acknowledged, status)
    }
}

/// Runs the writer until it has had `acks` batches acknowledged, then kills it.
/// Returns (submitted batches, acknowledged batches).
fn run_and_kill(dir: &std::path::Path, base: u128, acks: usize) -> (Vec<Range>, Vec<Range>) {
    let mut writer = Writer::start(dir, base, &[]);
    writer.until_acknowledged(acks);
    // SIGKILL: no destructor, no flush, mid-append under load.
    writer.child.kill().expect("kill");
    let (submitted, acknowledged, _) = writer.finish();
    (submitted, acknowledged)
}

/// Opens the ledger in a process of its own and looks up transfers `first..=last`:
/// its exit status and the ids it found.
fn look_up(dir: &std::path::Path, first: u128, last: u128) -> (std::process::ExitStatus, BTreeSet<u128>) {
    let output = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(dir)
        .args(["lookup", &first.to_string(), &last.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run crash-writer lookup");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let found = text.lines().filter_map(|line| line.strip_prefix("FOUND ")?.parse().ok()).collect();
    (output.status, found)
}

/// Every acknowledged batch is found whole, and every batch submitted is found whole
/// or not at all.
fn check_batches(found: &BTreeSet<u128>, submitted: &[Range], acknowledged: &[Range]) {
    for &(first, last) in submitted {
        let present = (first..=last).filter(|id| found.contains(id)).count();
        let size = (last - first + 1) as usize;
        assert!(present == 0 || present == size, "batch {first}..={last} partly present ({present} of {size})");
        if acknowledged.contains(&(first, last)) {
            assert_eq!(present, size, "acknowledged batch {first}..={last} lost");
        }
    }
}

/// The audit of the whole log passes.
fn audit_passes(dir: &std::path::Path) {
    let (log_dir, snapshot_dir) = audit::data_dir_layout(dir);
    let report = audit::verify(&log_dir, Some(&snapshot_dir)).unwrap_or_else(|e| panic!("audit failed: {e}"));
    assert!(report.events_checked > 0);
}

#[test]
fn a_state_store_whose_fsync_fails_stops_the_writer_and_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trigger = dir.path().join("disk-fails");
    let mut writer = Writer::start(dir.path(), 1, &[("CRASH_WRITER_FAIL_STATE_WRITES_ONCE_EXISTS", &trigger)]);
    writer.until_acknowledged(10);
    // The disk fails the state store's next fsync (EIO): the writer stops taking
    // transfers, and the process ends with the error.
    std::fs::write(&trigger, b"").expect("trigger");
    let (submitted, acknowledged, status) = writer.finish();
    assert!(!status.success(), "the writer stopped on the failed write");
    let marker = dir.path().join("state").join("REBUILD");
    assert!(marker.exists(), "the store whose write failed is marked for a rebuild");

    // The disk replaced: the next start rebuilds the store from the log.
    std::fs::remove_file(&trigger).expect("disk replaced");
    let last = submitted.iter().map(|range| range.1).max().expect("submitted");
    let (status, found) = look_up(dir.path(), 1, last);
    assert!(status.success(), "the rebuilt store answers");
    assert!(!marker.exists(), "the store was rebuilt");
    check_batches(&found, &submitted, &acknowledged);
    audit_passes(dir.path());
}

/// Every file of the state store's tables.
fn table_files(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            table_files(&path, found);
        } else if path.parent().is_some_and(|parent| parent.ends_with("tables")) {
            found.push(path);
        }
    }
}

/// Flips a bit at `at(len)` in every table file of the state store with more than
/// `bytes_min` bytes; returns how many.
fn damage_tables(dir: &std::path::Path, bytes_min: usize, at: fn(usize) -> usize) -> usize {
    let mut tables = Vec::new();
    table_files(&dir.join("state"), &mut tables);
    let mut damaged = 0;
    for table in &tables {
        let mut bytes = std::fs::read(table).expect("read table");
        if bytes.len() > bytes_min {
            let at = at(bytes.len());
            bytes[at] ^= 0x04;
            std::fs::write(table, bytes).expect("damage table");
            damaged += 1;
        }
    }
    damaged
}

#[test]
fn a_damaged_state_store_is_detected_and_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let (marker, sentinel) = (state.join("REBUILD"), state.join("db").join("sentinel"));
    let (mut submitted, mut acknowledged) = run_and_kill(dir.path(), 1, 30);

    // A bit flipped a quarter into every table of more than 16 KiB: in its data
    // blocks, which a start does not read. Reading every transfer meets the damage:
    // the process stops (a read it cannot trust is a broken invariant), leaving the
    // store marked for a rebuild, and the next start rebuilds it from the log.
    assert!(damage_tables(dir.path(), 16 << 10, |len| len / 4) > 0, "hand-offs reached the store's tables");
    std::fs::write(&sentinel, b"").expect("sentinel");
    let last = submitted.iter().map(|range| range.1).max().expect("submitted");
    let (status, _) = look_up(dir.path(), 1, last);
    assert!(!status.success(), "a damaged read stops the process");
    assert!(marker.exists(), "the damaged store is marked for a rebuild");
    let (status, found) = look_up(dir.path(), 1, last);
    assert!(status.success(), "the rebuilt store answers");
    assert!(!marker.exists() && !sentinel.exists(), "the store was rebuilt");
    check_batches(&found, &submitted, &acknowledged);
    audit_passes(dir.path());

    // More load, another kill, and a bit flipped in the middle of every table, small
    // ones too (their index, filter and trailer): the store is found damaged when it
    // opens or when it is read, and is rebuilt either way.
    let (more_submitted, more_acknowledged) = run_and_kill(dir.path(), 10_000_001, 30);
    submitted.extend(more_submitted);
    acknowledged.extend(more_acknowledged);
    assert!(damage_tables(dir.path(), 0, |len| len / 2) > 0, "the store has tables");
    std::fs::write(&sentinel, b"").expect("sentinel");
    let last = submitted.iter().map(|range| range.1).max().expect("submitted");
    let (mut status, mut found) = look_up(dir.path(), 1, last);
    if !status.success() {
        assert!(marker.exists(), "a failed read marks the store for a rebuild");
        (status, found) = look_up(dir.path(), 1, last);
    }
    assert!(status.success(), "the rebuilt store answers");
    assert!(!marker.exists() && !sentinel.exists(), "the store was rebuilt");
    check_batches(&found, &submitted, &acknowledged);
    audit_passes(dir.path());
}

#[test]
fn killed_writer_loses_nothing_acknowledged_and_leaves_nothing_partial() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all_acknowledged = Vec::new();
    let mut all_submitted = Vec::new();
    for round in 0..4u128 {
        let base = 1 + round * 10_000_000;
        let (submitted, acknowledged) = run_and_kill(dir.path(), base, 20 + 17 * round as usize);
        all_submitted.extend(submitted);
        all_acknowledged.extend(acknowledged);

        let (log_dir, snapshot_dir) = audit::data_dir_layout(dir.path());
        // A kill can land inside the committer's write(): the last frame is then short
        // (never synced, never acknowledged). The auditor reports such a tail without
        // repairing it; recovery on open cuts it. So recover first, as a restart does,
        // then audit.
        let options = EmbeddedOptions { segment_bytes_max: 1 << 20, ..EmbeddedOptions::default() };
        drop(EmbeddedStore::open(&log_dir, options.clone()).expect("recover after kill"));
        let report =
            audit::verify(&log_dir, Some(&snapshot_dir)).unwrap_or_else(|e| panic!("round {round}: audit failed: {e}"));
        assert!(report.events_checked > 0);

        let (store, _) = EmbeddedStore::open(&log_dir, options).expect("reopen after kill");
        let config = LedgerConfig {
            snapshot_dir: Some(snapshot_dir.clone()),
            snapshot_interval_events: 3_000,
            state_dir: Some(dir.path().join("state")),
            hand_off_items: 500,
            ..LedgerConfig::default()
        };
        let ledger = Ledger::open(Arc::new(store), config).expect("recover ledger");
        let mut presence: BTreeMap<(u128, u128), usize> = BTreeMap::new();
        for &(first, last) in &all_submitted {
            let ids: Vec<TransferId> = (first..=last).map(TransferId).collect();
            let found = ledger.lookup_transfers_blocking(ids).expect("lookup");
            presence.insert((first, last), found.iter().filter(|t| t.is_some()).count());
        }
        for range in &all_acknowledged {
            assert_eq!(
                presence.get(range),
                Some(&((range.1 - range.0 + 1) as usize)),
                "round {round}: acknowledged batch {range:?} lost"
            );
        }
        for (range, present) in &presence {
            let size = (range.1 - range.0 + 1) as usize;
            assert!(
                *present == 0 || *present == size,
                "round {round}: batch {range:?} partly present ({present} of {size})"
            );
        }
        let totals = ledger.totals_blocking().expect("totals");
        assert!(totals.values().all(|t| t.is_balanced()));
        ledger.close();
    }
}
