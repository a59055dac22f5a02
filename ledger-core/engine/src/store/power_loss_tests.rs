//! Power loss and faulty disks: the embedded store on the simulated disk.
//!
//! Replay one seed of the random tests with
//! `LEDGER_SIM_SEED=N cargo test -p ledger-engine --no-default-features --lib power_loss`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::disk::Disk;
use super::embedded::{EmbeddedOptions, EmbeddedStore};
use super::sim_disk::{Faults, SimDisk, SimRng, PPM};
use super::*;
use ledger_core::chain::{chain_hash, GENESIS_HASH};

/// Random rounds run when no seed is given.
const ROUNDS: u64 = 150;
/// Power losses per round.
const LIVES: usize = 4;
/// Appends tried per life (the power goes off somewhere among them).
const APPENDS_PER_LIFE: usize = 12;
const STREAMS: [&str; 3] = ["alpha", "beta", "gamma"];
/// Largest read in one call of the checks, in events.
const READ_EVENTS_MAX: usize = 100_000;

fn log_dir() -> PathBuf {
    PathBuf::from("/sim/data/log")
}

fn open(disk: &SimDisk, segment_bytes_max: u64) -> Result<EmbeddedStore, StoreError> {
    let disk: Arc<dyn Disk> = Arc::new(disk.clone());
    EmbeddedStore::open_on(
        disk,
        log_dir(),
        EmbeddedOptions { segment_bytes_max, seal_in_background: false, seals_in_memory: 2 },
    )
    .map(|(store, _)| store)
}

/// One event we asked to append, with where it must land if it lands.
#[derive(Clone, Debug)]
struct Attempt {
    stream: String,
    event_type: String,
    payload: Vec<u8>,
}

fn batch(events: &[Attempt]) -> EventBatch {
    let mut batch = EventBatch::default();
    for event in events {
        batch.push(std::borrow::Cow::Owned(event.event_type.clone()), &event.payload);
    }
    batch
}

/// Appends and waits for the answer.
fn append(store: &EmbeddedStore, events: &[Attempt]) -> Result<AppendOutcome, StoreError> {
    let (sender, receiver) = mpsc::channel();
    let stream = events.first().map(|e| e.stream.clone()).unwrap_or_default();
    store.append_with(&stream, ExpectedRevision::Any, batch(events), Box::new(move |r| drop(sender.send(r))));
    receiver.recv().unwrap_or(Err(StoreError::Closed))
}

/// The log the attempts make if every one lands: positions, revisions and hashes.
fn expected_log(known: &[RecordedEvent], attempts: &[Attempt]) -> Vec<RecordedEvent> {
    let mut log = known.to_vec();
    for attempt in attempts {
        let previous = log.iter().rev().find(|event| event.stream == attempt.stream);
        let (revision, previous_hash) = match previous {
            Some(event) => (event.revision + 1, event.hash),
            None => (0, GENESIS_HASH),
        };
        log.push(RecordedEvent {
            stream: attempt.stream.clone(),
            revision,
            position: log.len() as u64,
            event_type: attempt.event_type.clone(),
            payload: attempt.payload.clone(),
            hash: chain_hash(&previous_hash, revision, &attempt.payload),
        });
    }
    log
}

/// The recovered log must be a prefix of what was attempted, at least as long as what
/// was acknowledged, and every acknowledged outcome must match it.
fn check_recovered(
    recovered: &[RecordedEvent],
    expected: &[RecordedEvent],
    acknowledged: usize,
    outcomes: &[(usize, AppendOutcome)],
) -> Result<(), String> {
    if recovered.len() < acknowledged {
        return Err(format!("{} events recovered, {acknowledged} were acknowledged", recovered.len()));
    }
    if recovered.len() > expected.len() {
        return Err(format!("{} events recovered, only {} were attempted", recovered.len(), expected.len()));
    }
    for (at, (got, want)) in recovered.iter().zip(expected).enumerate() {
        if got != want {
            return Err(format!("event {at} differs: recovered {got:?}, attempted {want:?}"));
        }
    }
    for (last, outcome) in outcomes {
        let event = &recovered[*last];
        if outcome.last_hash != event.hash || outcome.last_revision != Some(event.revision) {
            return Err(format!("acknowledged outcome {outcome:?} does not match recovered {event:?}"));
        }
    }
    Ok(())
}

fn random_attempts(rng: &mut SimRng, count: usize, round: u64) -> Vec<Vec<Attempt>> {
    (0..count)
        .map(|number| {
            let stream = STREAMS[rng.below(STREAMS.len() as u64) as usize].to_string();
            let events = 1 + rng.below(3) as usize;
            (0..events)
                .map(|event| {
                    let len = 1 + rng.below(200) as usize;
                    let payload = (0..len).map(|_| rng.next_u64() as u8).collect();
                    Attempt { stream: stream.clone(), event_type: format!("T{round}-{number}-{event}"), payload }
                })
                .collect()
        })
        .collect()
}

/// What the random rounds saw, to show they reach every case.
#[derive(Default, Debug)]
struct RoundStats {
    crashes: u64,
    acknowledged_events: u64,
    /// Crashes that lost attempted but unacknowledged events.
    lost_unacknowledged: u64,
    /// Crashes after which events never acknowledged were found (written, not answered).
    kept_unacknowledged: u64,
    /// Segment files found after the crashes, summed.
    segment_files: u64,
}

/// `in_flight`: every append of a life is queued before the first answer (group
/// commit); the groups then depend on thread timing, so a seed replays the same
/// appends and crash choices but not always the same groups.
fn power_loss_round(seed: u64, in_flight: bool, stats: &mut RoundStats) -> Result<(), String> {
    let mut rng = SimRng::new(seed ^ 0x5EED);
    let disk = SimDisk::new(seed);
    let segment_bytes_max = 300 + rng.below(1500);
    let mut known: Vec<RecordedEvent> = Vec::new();
    for life in 0..LIVES {
        let store = open(&disk, segment_bytes_max).map_err(|e| format!("life {life}: open: {e}"))?;
        let read = store.read_all(0, READ_EVENTS_MAX).map_err(|e| format!("life {life}: read: {e}"))?;
        if read != known {
            return Err(format!("life {life}: the reopened log differs from the one checked before"));
        }
        disk.power_off_after(rng.below(3 * APPENDS_PER_LIFE as u64));
        let appends = random_attempts(&mut rng, APPENDS_PER_LIFE, life as u64);
        let mut attempts = Vec::new();
        let mut acknowledged = known.len();
        let mut outcomes = Vec::new();
        let mut failed = false;
        let answers: Vec<Result<AppendOutcome, StoreError>> = if in_flight {
            // All queued at once: the committer takes them in groups, one write and one
            // sync per group, so the power can go off between any two of them.
            let receivers: Vec<_> = appends
                .iter()
                .map(|events| {
                    let (sender, receiver) = mpsc::channel();
                    let stream = events[0].stream.clone();
                    let done: AppendCallback = Box::new(move |r| drop(sender.send(r)));
                    store.append_with(&stream, ExpectedRevision::Any, batch(events), done);
                    receiver
                })
                .collect();
            receivers.into_iter().map(|receiver| receiver.recv().unwrap_or(Err(StoreError::Closed))).collect()
        } else {
            appends.iter().map(|events| append(&store, events)).collect()
        };
        for (events, answer) in appends.iter().zip(answers) {
            attempts.extend_from_slice(events);
            match answer {
                Ok(outcome) => {
                    if failed {
                        return Err(format!("life {life}: an append was acknowledged after one failed"));
                    }
                    acknowledged = known.len() + attempts.len();
                    outcomes.push((acknowledged - 1, outcome));
                }
                Err(_) => failed = true,
            }
        }
        // Power loss: no close, whatever the store still had queued is lost with it.
        drop(store);
        disk.crash();
        let expected = expected_log(&known, &attempts);
        let store = open(&disk, segment_bytes_max).map_err(|e| format!("life {life}: reopen after crash: {e}"))?;
        let recovered = store.read_all(0, READ_EVENTS_MAX).map_err(|e| format!("life {life}: read: {e}"))?;
        check_recovered(&recovered, &expected, acknowledged, &outcomes).map_err(|e| format!("life {life}: {e}"))?;
        stats.crashes += 1;
        stats.acknowledged_events += (acknowledged - known.len()) as u64;
        stats.lost_unacknowledged += u64::from(recovered.len() < expected.len());
        stats.kept_unacknowledged += u64::from(recovered.len() > acknowledged);
        stats.segment_files += disk
            .list_dir(&log_dir())
            .map(|names| names.iter().filter(|name| name.ends_with(".seg")).count() as u64)
            .unwrap_or(0);
        known = recovered;
    }
    // Appends continue after the last recovery.
    let store = open(&disk, segment_bytes_max).map_err(|e| format!("final open: {e}"))?;
    let last = random_attempts(&mut rng, 1, 99).remove(0);
    append(&store, &last).map_err(|e| format!("append after recovery: {e}"))?;
    let read = store.read_all(0, READ_EVENTS_MAX).map_err(|e| format!("final read: {e}"))?;
    if read != expected_log(&known, &last) {
        return Err("the append after recovery did not land where expected".into());
    }
    Ok(())
}

fn seeds() -> Vec<u64> {
    match std::env::var("LEDGER_SIM_SEED").ok().and_then(|seed| seed.parse().ok()) {
        Some(seed) => vec![seed],
        None => (0..ROUNDS).collect(),
    }
}

fn replay_hint(seed: u64, test: &str) -> String {
    format!(
        "seed {seed}; replay: LEDGER_SIM_SEED={seed} cargo test -p ledger-engine --no-default-features --lib {test}"
    )
}

#[test]
fn power_loss_random_rounds_with_appends_in_flight_keep_every_acknowledged_append() {
    let mut stats = RoundStats::default();
    for seed in seeds() {
        if let Err(failure) = power_loss_round(seed, true, &mut stats) {
            panic!("{failure}\n{}", replay_hint(seed, "power_loss_random_rounds_with_appends_in_flight"));
        }
    }
    println!("{stats:?}");
}

#[test]
fn power_loss_random_rounds_keep_every_acknowledged_append() {
    let mut stats = RoundStats::default();
    for seed in seeds() {
        if let Err(failure) = power_loss_round(seed, false, &mut stats) {
            panic!("{failure}\n{}", replay_hint(seed, "power_loss_random_rounds"));
        }
    }
    println!("{stats:?}");
    if seeds().len() > 1 {
        assert!(stats.lost_unacknowledged > 0 && stats.kept_unacknowledged > 0, "{stats:?}");
    }
}

/// Each acknowledged append: the position of its last event and its outcome.
type Outcomes = Vec<(usize, AppendOutcome)>;

/// Every state a crash at one moment may leave, or why they could not be enumerated.
type CrashStates = Result<Vec<SimDisk>, String>;

/// What a crash at one moment may leave, and what had been acknowledged by then.
struct CrashPoint {
    acknowledged: usize,
    outcomes: Vec<(usize, AppendOutcome)>,
    states: CrashStates,
}

/// The small workload of the exhaustive test: 3 streams, 20 appends, tiny segments.
const EXHAUSTIVE_APPENDS: usize = 20;
const EXHAUSTIVE_SEGMENT_BYTES: u64 = 400;

fn exhaustive_workload() -> Vec<Vec<Attempt>> {
    let mut rng = SimRng::new(17);
    random_attempts(&mut rng, EXHAUSTIVE_APPENDS, 0)
}

/// Runs the workload on a fresh disk, recording before every sync every state a crash
/// then may leave, and at the end the final state.
/// Also returns how many segment files the workload made.
fn record_crash_points() -> (Vec<CrashPoint>, Vec<Attempt>, usize) {
    let disk = SimDisk::new(1);
    let acknowledged: Arc<Mutex<(usize, Outcomes)>> = Arc::default();
    let points: Arc<Mutex<Vec<CrashPoint>>> = Arc::default();
    {
        let acknowledged = acknowledged.clone();
        let points = points.clone();
        disk.set_sync_hook(Some(Box::new(move |states| {
            let (count, outcomes) = acknowledged.lock().expect("acknowledged").clone();
            points.lock().expect("points").push(CrashPoint { acknowledged: count, outcomes, states });
        })));
    }
    let store = open(&disk, EXHAUSTIVE_SEGMENT_BYTES).expect("open");
    let mut attempts = Vec::new();
    for events in exhaustive_workload() {
        attempts.extend_from_slice(&events);
        let outcome = append(&store, &events).expect("append without faults");
        let mut acknowledged = acknowledged.lock().expect("acknowledged");
        acknowledged.0 = attempts.len();
        acknowledged.1.push((attempts.len() - 1, outcome));
    }
    drop(store);
    disk.set_sync_hook(None);
    let segments =
        disk.list_dir(&log_dir()).map(|names| names.iter().filter(|name| name.ends_with(".seg")).count()).unwrap_or(0);
    let (count, outcomes) = acknowledged.lock().expect("acknowledged").clone();
    let states = disk.crash_states();
    let mut points = std::mem::take(&mut *points.lock().expect("points"));
    points.push(CrashPoint { acknowledged: count, outcomes, states });
    (points, attempts, segments)
}

#[test]
fn crash_at_every_sync_point_recovers_every_acknowledged_append() {
    let (points, attempts, segments) = record_crash_points();
    let expected = expected_log(&[], &attempts);
    assert!(segments >= 3, "the workload must cross segment boundaries ({segments} segments)");
    let mut states = 0;
    let mut recovery_states = 0;
    for (number, point) in points.iter().enumerate() {
        let point_states = point.states.as_ref().unwrap_or_else(|e| panic!("crash point {number}: {e}"));
        for (variant, disk) in point_states.iter().enumerate() {
            states += 1;
            let context = format!("crash point {number}, state {variant}");
            // Recovery writes too (it cuts a torn tail, removes an empty segment, creates
            // the first one): a crash at any of its syncs must leave a recoverable disk.
            let during_recovery: Arc<Mutex<Vec<CrashStates>>> = Arc::default();
            let sink = during_recovery.clone();
            disk.set_sync_hook(Some(Box::new(move |states| sink.lock().expect("sink").push(states))));
            let store = open(disk, EXHAUSTIVE_SEGMENT_BYTES).unwrap_or_else(|e| panic!("{context}: open: {e}"));
            disk.set_sync_hook(None);
            for crashed in std::mem::take(&mut *during_recovery.lock().expect("sink")) {
                for crashed in crashed.unwrap_or_else(|e| panic!("{context}: during recovery: {e}")) {
                    recovery_states += 1;
                    let store = open(&crashed, EXHAUSTIVE_SEGMENT_BYTES)
                        .unwrap_or_else(|e| panic!("{context}: open after a crash during recovery: {e}"));
                    let recovered = store.read_all(0, READ_EVENTS_MAX).unwrap_or_else(|e| panic!("{context}: {e}"));
                    check_recovered(&recovered, &expected, point.acknowledged, &point.outcomes)
                        .unwrap_or_else(|e| panic!("{context}, crash during recovery: {e}"));
                }
            }
            let recovered = store.read_all(0, READ_EVENTS_MAX).unwrap_or_else(|e| panic!("{context}: read: {e}"));
            check_recovered(&recovered, &expected, point.acknowledged, &point.outcomes)
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            // Appends continue, and survive the next power loss once acknowledged.
            let more = vec![Attempt { stream: "alpha".into(), event_type: "After".into(), payload: b"after".to_vec() }];
            append(&store, &more).unwrap_or_else(|e| panic!("{context}: append after recovery: {e}"));
            drop(store);
            disk.crash();
            let store = open(disk, EXHAUSTIVE_SEGMENT_BYTES).unwrap_or_else(|e| panic!("{context}: second open: {e}"));
            let again = store.read_all(0, READ_EVENTS_MAX).unwrap_or_else(|e| panic!("{context}: read: {e}"));
            assert_eq!(again, expected_log(&recovered, &more), "{context}: after the second crash");
        }
    }
    println!(
        "{} crash points, {states} crash states checked, {recovery_states} crash states during their recovery, {segments} segments",
        points.len()
    );
    assert!(states > points.len(), "torn and partial states must be among those checked");
}

/// Runs appends with `faults` until one fails; returns the disk, the attempts and what
/// was acknowledged, after checking that nothing is acknowledged after the failure.
fn run_until_failure(seed: u64, faults: Faults) -> Result<(SimDisk, Vec<Attempt>, usize, Outcomes), String> {
    let mut rng = SimRng::new(seed ^ 0xFA17);
    let disk = SimDisk::new(seed);
    let store = open(&disk, 600).map_err(|e| format!("open: {e}"))?;
    disk.set_faults(faults);
    let mut attempts = Vec::new();
    let mut acknowledged = 0;
    let mut outcomes = Vec::new();
    let mut failure = None;
    for events in random_attempts(&mut rng, 40, 0) {
        attempts.extend_from_slice(&events);
        match (append(&store, &events), &failure) {
            (Ok(outcome), None) => {
                acknowledged = attempts.len();
                outcomes.push((acknowledged - 1, outcome));
            }
            (Ok(_), Some(first)) => return Err(format!("acknowledged after the failure {first}")),
            (Err(error), None) => failure = Some(error),
            (Err(error), Some(_)) => {
                if !matches!(error, StoreError::Poisoned(_)) {
                    return Err(format!("after the first failure: {error}, not Poisoned"));
                }
            }
        }
    }
    if failure.is_some() && !matches!(store.read_all(0, 1), Err(StoreError::Poisoned(_))) {
        return Err("reads of a poisoned store must fail".into());
    }
    drop(store);
    disk.set_faults(Faults::default());
    Ok((disk, attempts, acknowledged, outcomes))
}

#[test]
fn eio_and_enospc_on_write_or_sync_poison_the_store_and_reopen_recovers() {
    let kinds = [
        Faults { write_eio_ppm: PPM / 20, ..Faults::default() },
        Faults { write_enospc_ppm: PPM / 20, ..Faults::default() },
        Faults { sync_eio_ppm: PPM / 20, ..Faults::default() },
    ];
    let mut injected = [0u64; 3];
    for seed in seeds() {
        for (kind, faults) in kinds.into_iter().enumerate() {
            let result = run_until_failure(seed, faults).and_then(|(disk, attempts, acknowledged, outcomes)| {
                let counts = disk.fault_counts();
                injected[kind] += counts.write_errors + counts.sync_errors;
                let expected = expected_log(&[], &attempts);
                // Reopen without a crash (the process restarted), then after a crash.
                for crash in [false, true] {
                    if crash {
                        disk.crash();
                    }
                    let store = open(&disk, 600).map_err(|e| format!("reopen (crash {crash}): {e}"))?;
                    let recovered = store.read_all(0, READ_EVENTS_MAX).map_err(|e| format!("read: {e}"))?;
                    check_recovered(&recovered, &expected, acknowledged, &outcomes)?;
                }
                Ok(())
            });
            if let Err(failure) = result {
                panic!("{faults:?}: {failure}\n{}", replay_hint(seed, "eio_and_enospc"));
            }
        }
    }
    assert!(injected.iter().all(|count| *count > 0), "every kind of fault must have been injected: {injected:?}");
}

/// Offsets of every frame of the one segment the small log of [`acknowledged_log`] has.
fn frame_offsets(disk: &SimDisk, segment: &Path) -> Vec<(u64, u64)> {
    let bytes = disk.read(segment).expect("read segment");
    let mut offsets = Vec::new();
    let mut at = format::SEGMENT_HEADER_BYTES;
    while at + format::FRAME_HEADER_BYTES <= bytes.len() {
        let body = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let end = at + format::FRAME_HEADER_BYTES + body;
        offsets.push((at as u64, end as u64));
        at = end;
    }
    offsets
}

fn acknowledged_log(disk: &SimDisk) -> Vec<RecordedEvent> {
    let store = open(disk, 1 << 20).expect("open");
    for events in random_attempts(&mut SimRng::new(3), 4, 0) {
        append(&store, &events).expect("append");
    }
    let log = store.read_all(0, READ_EVENTS_MAX).expect("read");
    drop(store);
    disk.crash();
    log
}

#[test]
fn a_bit_flipped_in_an_acknowledged_frame_other_than_the_last_is_refused_at_open() {
    let segment = log_dir().join(format::segment_file_name(0));
    let template = SimDisk::new(5);
    let log = acknowledged_log(&template);
    let frames = frame_offsets(&template, &segment);
    assert_eq!(frames.len(), 4, "one frame per append");
    let last_frame_start = frames[frames.len() - 1].0;
    // Every bit of every byte before the last frame, the segment header included.
    for offset in 0..last_frame_start {
        for bit in 0..8u8 {
            let disk = template.crash_states().expect("states").remove(0);
            disk.flip_on_read(&segment, offset, bit);
            match open(&disk, 1 << 20) {
                Err(StoreError::Corrupt { .. }) | Err(StoreError::ChainBroken { .. }) => {}
                Err(other) => panic!("flip at {offset} bit {bit}: {other}, not Corrupt or ChainBroken"),
                Ok(store) => {
                    let read = store.read_all(0, READ_EVENTS_MAX);
                    panic!("flip at {offset} bit {bit} accepted at open: {:?}", read.map(|r| r == log))
                }
            }
        }
    }
}

#[test]
fn random_read_flips_are_never_silently_accepted() {
    for seed in seeds() {
        let disk = SimDisk::new(seed);
        let log = acknowledged_log(&disk);
        disk.set_faults(Faults { read_flip_ppm: PPM, ..Faults::default() });
        match open(&disk, 1 << 20) {
            // Every read flips a bit; the last frame is cut like a torn write (ARCHITECTURE.md).
            Ok(store) => {
                disk.set_faults(Faults::default());
                let read = store.read_all(0, READ_EVENTS_MAX).expect("read");
                assert!(
                    log.starts_with(&read) && read.len() + 3 >= log.len(),
                    "seed {seed}: a flip outside the last frame was accepted"
                );
            }
            Err(StoreError::Corrupt { .. }) | Err(StoreError::ChainBroken { .. }) => {}
            Err(other) => panic!("seed {seed}: {other}"),
        }
    }
}

#[test]
fn a_misdirected_write_is_detected_by_reads_and_at_open() {
    for seed in seeds() {
        let disk = SimDisk::new(seed);
        let store = open(&disk, 1 << 20).expect("open");
        let mut rng = SimRng::new(seed);
        let appends = random_attempts(&mut rng, 6, 0);
        for events in &appends[..3] {
            append(&store, events).expect("append");
        }
        disk.set_faults(Faults { misdirect_ppm: PPM, ..Faults::default() });
        append(&store, &appends[3]).expect("a misdirected write is acknowledged: the disk said it wrote it");
        disk.set_faults(Faults::default());
        assert_eq!(disk.fault_counts().misdirected_writes, 1);
        let read = store.read_all(0, READ_EVENTS_MAX);
        assert!(read.is_err(), "seed {seed}: reading the misdirected event must fail, got {read:?}");
        drop(store);
        disk.crash();
        match open(&disk, 1 << 20) {
            Err(StoreError::Corrupt { .. }) | Err(StoreError::ChainBroken { .. }) => {}
            Err(other) => panic!("seed {seed}: {other}"),
            Ok(_) => panic!("seed {seed}: a log with a misdirected acknowledged write was accepted at open"),
        }
    }
}
