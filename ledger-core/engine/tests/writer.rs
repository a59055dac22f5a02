//! The partition writer end to end on the embedded store: durable answers, recovery
//! after reopening, snapshots that are used only when they match the log, and holds
//! that expire on the writer's own timer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ledger_core::clock::ManualClock;
use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::EventStore;
use ledger_engine::writer::{Ledger, LedgerConfig, LedgerError, REQUEST_ITEMS_MAX};

fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

fn open(dir: &Path, snapshot_interval_events: u64) -> Ledger {
    let (store, _) = EmbeddedStore::open(dir.join("log"), EmbeddedOptions::default()).expect("open store");
    let config =
        LedgerConfig { snapshot_dir: Some(dir.join("snapshots")), snapshot_interval_events, ..LedgerConfig::default() };
    Ledger::open(Arc::new(store), config).expect("open ledger")
}

fn accounts(ledger: &Ledger, ids: std::ops::RangeInclusive<u128>) {
    let commands = ids
        .map(|id| {
            AccountCommand::Open(NewAccount {
                id: AccountId(id),
                currency: usd(),
                code: 1,
                flags: AccountFlags(0),
                owner_id: 0,
            })
        })
        .collect();
    assert!(ledger.create_accounts_blocking(commands).expect("accounts").iter().all(Result::is_ok));
}

fn posted(id: u128, debit: u128, credit: u128, amount: u128) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        amount,
        currency: Some(usd()),
        code: 1,
        metadata: String::new(),
        linked: false,
        kind: TransferKind::Posted,
    }
}

fn balances(ledger: &Ledger, ids: std::ops::RangeInclusive<u128>) -> Vec<(u128, u128)> {
    let accounts = ledger.lookup_accounts_blocking(ids.map(AccountId).collect()).expect("lookup");
    accounts.iter().map(|a| a.as_ref().map_or((0, 0), |a| (a.debits_posted, a.credits_posted))).collect()
}

#[test]
fn state_survives_reopening_with_and_without_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path(), 50);
    accounts(&ledger, 1..=4);
    for batch in 0..20u128 {
        let transfers = (0..10).map(|n| posted(1 + batch * 10 + n, 1 + n % 4, 1 + (n + 1) % 4, 1 + n)).collect();
        assert!(ledger.create_transfers_blocking(transfers).expect("transfers").iter().all(Result::is_ok));
    }
    let before = balances(&ledger, 1..=4);
    ledger.close(); // joins the writer, which waits for a snapshot in progress to land
    let snapshots = std::fs::read_dir(dir.path().join("snapshots")).map(|d| d.count()).unwrap_or(0);
    assert!(snapshots > 0, "a snapshot should have been written");
    let ledger = open(dir.path(), 50);
    assert_eq!(balances(&ledger, 1..=4), before);
    // Resubmitting after the restart is still idempotent.
    let again = ledger.create_transfers_blocking(vec![posted(1, 1, 2, 1)]).expect("resubmit");
    assert!(matches!(again[0], Ok(Outcome::AlreadyExists { .. })));
    ledger.close();
    // Without snapshots: a full replay gives the same.
    std::fs::remove_dir_all(dir.path().join("snapshots")).expect("remove snapshots");
    let ledger = open(dir.path(), 1_000_000);
    assert_eq!(balances(&ledger, 1..=4), before);
}

#[test]
fn a_snapshot_that_does_not_match_the_log_is_discarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    // Another ledger's snapshot, at the same revision, copied into this directory.
    for (path, amount) in [(dir.path(), 5), (other.path(), 7)] {
        let ledger = open(path, 3);
        accounts(&ledger, 1..=2);
        assert!(ledger.create_transfers_blocking(vec![posted(1, 1, 2, amount)]).expect("t")[0].is_ok());
        ledger.close();
    }
    std::fs::remove_dir_all(dir.path().join("snapshots")).expect("remove own");
    std::fs::create_dir_all(dir.path().join("snapshots")).expect("mkdir");
    for entry in std::fs::read_dir(other.path().join("snapshots")).expect("read") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join("snapshots").join(entry.file_name())).expect("copy");
    }
    let ledger = open(dir.path(), 1_000_000);
    assert_eq!(balances(&ledger, 1..=2), vec![(5, 0), (0, 5)], "the foreign snapshot must not be used");
    ledger.close();
    // The server skips it; the audit fails on it: a sound snapshot of another history.
    let audited = ledger_engine::audit::verify(&dir.path().join("log"), Some(&dir.path().join("snapshots")));
    assert!(
        matches!(audited, Err(ledger_engine::audit::AuditFailure::SnapshotDiffers { ref stream, .. }) if stream == "ledger-0"),
        "{audited:?}"
    );
    // A damaged snapshot body is discarded too.
    for entry in std::fs::read_dir(dir.path().join("snapshots")).expect("read") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("read snapshot");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).expect("write snapshot");
    }
    let ledger = open(dir.path(), 1_000_000);
    assert_eq!(balances(&ledger, 1..=2), vec![(5, 0), (0, 5)]);
    ledger.close();
    // A damaged snapshot proves nothing: discarded by the server, not an audit failure.
    ledger_engine::audit::verify(&dir.path().join("log"), Some(&dir.path().join("snapshots"))).expect("audit passes");
}

fn open_on(dir: &Path, clock: Arc<ManualClock>) -> (Ledger, Arc<dyn EventStore>) {
    let (store, _) = EmbeddedStore::open(dir.join("log"), EmbeddedOptions::default()).expect("open store");
    let store: Arc<dyn EventStore> = Arc::new(store);
    let config = LedgerConfig { clock, ..LedgerConfig::default() };
    (Ledger::open(store.clone(), config).expect("open ledger"), store)
}

fn debits_pending(ledger: &Ledger) -> Option<u128> {
    ledger.lookup_accounts_blocking(vec![AccountId(1)]).expect("lookup")[0].as_ref().map(|a| a.debits_pending)
}

fn hold_status(ledger: &Ledger) -> Option<PendingStatus> {
    ledger.lookup_transfers_blocking(vec![TransferId(1)]).expect("lookup")[0].clone().expect("hold").pending_status
}

const START_NS: u64 = 1_700_000_000_000_000_000;

#[test]
fn holds_expire_when_the_clock_passes_their_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(START_NS));
    let (ledger, _) = open_on(dir.path(), clock.clone());
    accounts(&ledger, 1..=2);
    let timeout_ns = 3_600_000_000_000; // an hour: the writer's own wait does not end during the test
    let hold = NewTransfer { kind: TransferKind::Pending { timeout_ns }, ..posted(1, 1, 2, 9) };
    assert!(ledger.create_transfers_blocking(vec![hold]).expect("hold")[0].is_ok());
    assert_eq!(debits_pending(&ledger), Some(9));
    clock.advance_ns(timeout_ns - 1);
    assert_eq!(hold_status(&ledger), Some(PendingStatus::Pending), "not yet due");
    assert_eq!(debits_pending(&ledger), Some(9));
    clock.advance_ns(1_000);
    // Any request makes the writer look at the clock: the hold is due and expires first.
    assert_eq!(hold_status(&ledger), Some(PendingStatus::Expired));
    assert_eq!(debits_pending(&ledger), Some(0));
}

#[test]
fn holds_expire_on_the_writers_own_timer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(START_NS));
    let (ledger, store) = open_on(dir.path(), clock.clone());
    accounts(&ledger, 1..=2);
    // A short timeout: the writer's wait for it is 5 ms of real time; when it wakes it
    // reads the manual clock, which by then is past the timeout.
    let hold = NewTransfer { kind: TransferKind::Pending { timeout_ns: 5_000_000 }, ..posted(1, 1, 2, 9) };
    assert!(ledger.create_transfers_blocking(vec![hold]).expect("hold")[0].is_ok());
    let head = |store: &Arc<dyn EventStore>| store.stream_head("ledger-0").expect("head").map(|h| h.revision);
    let before = head(&store);
    clock.advance_ns(1_000_000_000);
    // No request comes in: the expiry event appears in the log by the writer's timer.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while head(&store) == before {
        assert!(std::time::Instant::now() < deadline, "the writer never woke up to expire the hold");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(hold_status(&ledger), Some(PendingStatus::Expired));
    assert_eq!(debits_pending(&ledger), Some(0));
}

#[test]
fn oversized_and_empty_requests_are_rejected_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path(), 1_000_000);
    accounts(&ledger, 1..=2);
    let too_many = (0..=REQUEST_ITEMS_MAX as u128).map(|n| posted(n + 1, 1, 2, 1)).collect();
    assert_eq!(
        ledger.create_transfers_blocking(too_many),
        Err(LedgerError::TooManyItems { count: REQUEST_ITEMS_MAX + 1, max: REQUEST_ITEMS_MAX })
    );
    assert_eq!(ledger.create_transfers_blocking(vec![]), Err(LedgerError::Empty));
    assert_eq!(balances(&ledger, 1..=2), vec![(0, 0), (0, 0)]);
}

#[test]
fn answers_only_after_the_events_are_in_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = EmbeddedStore::open(dir.path().join("log"), EmbeddedOptions::default()).expect("open store");
    let store = Arc::new(store);
    let ledger = Ledger::open(store.clone(), LedgerConfig::default()).expect("ledger");
    accounts(&ledger, 1..=2);
    for id in 1..=50 {
        assert!(ledger.create_transfers_blocking(vec![posted(id, 1, 2, 1)]).expect("t")[0].is_ok());
        // Acknowledged means readable from the log: 2 account events + `id` transfers.
        assert_eq!(store.stream_head("ledger-0").expect("head").map(|h| h.revision), Some(1 + id as u64));
    }
}

/// Appends the writer made so far, read from its metrics.
fn appends(ledger: &Ledger) -> u64 {
    let text = ledger.metrics().render();
    let line = text.lines().find(|l| l.starts_with("ledger_commit_latency_seconds_count ")).expect("count");
    line.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("a number")
}

#[test]
fn a_large_request_goes_out_in_several_appends_cut_only_between_chains() {
    let linked = |t: NewTransfer| NewTransfer { linked: true, ..t };
    // 3 unlinked; a chain of 6 whose last member fails; 2 unlinked; a chain of 5 that
    // commits; 1 unlinked. With appends of at most 4 events the chains straddle the
    // natural cuts.
    let mut request = vec![posted(1, 1, 2, 5), posted(2, 2, 3, 5), posted(3, 3, 1, 5)];
    request.extend((10..15).map(|id| linked(posted(id, 1, 2, 7))));
    request.push(posted(15, 1, 2, 0));
    request.extend([posted(20, 1, 3, 1), posted(21, 3, 1, 1)]);
    request.extend((30..34).map(|id| linked(posted(id, 2, 3, 11))));
    request.push(posted(34, 2, 3, 11));
    request.push(posted(40, 3, 2, 2));

    let run = |batch_items_max: usize| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = EmbeddedStore::open(dir.path().join("log"), EmbeddedOptions::default()).expect("store");
        let store = Arc::new(store);
        let config = LedgerConfig { batch_items_max, ..LedgerConfig::default() };
        let ledger = Ledger::open(store.clone(), config.clone()).expect("ledger");
        accounts(&ledger, 1..=3);
        let before = appends(&ledger);
        let results = ledger.create_transfers_blocking(request.clone()).expect("transfers");
        let appended = appends(&ledger) - before;
        let head = store.stream_head("ledger-0").expect("head").map(|h| h.revision);
        let after = balances(&ledger, 1..=3);
        ledger.close();
        // Replay of the log gives the same balances.
        let ledger = Ledger::open(store, config).expect("reopen");
        assert_eq!(balances(&ledger, 1..=3), after, "replay agrees");
        (results, appended, head, after)
    };
    let (sliced, sliced_appends, sliced_head, sliced_balances) = run(4);
    let (whole, whole_appends, whole_head, whole_balances) = run(10_000);
    let shape =
        |results: &[TransferResult]| results.iter().map(|r| r.as_ref().map(|_| ()).map_err(|e| *e)).collect::<Vec<_>>();
    assert_eq!(shape(&sliced), shape(&whole), "cutting changes no result (timestamps aside)");
    assert_eq!((sliced_head, sliced_balances), (whole_head, whole_balances));
    assert_eq!(whole_appends, 1);
    // [0..9) has 3 events (the failed chain none), then [9..10) fills 4: append;
    // [10..16) is the second chain whole (6 events): append; [16..17): the last.
    assert_eq!(sliced_appends, 3);
    assert!(sliced[..3].iter().all(Result::is_ok));
    assert!(sliced[3..8].iter().all(|r| *r == Err(TransferError::LinkedEventFailed)), "{sliced:?}");
    assert_eq!(sliced[8], Err(TransferError::AmountMustNotBeZero));
    assert!(sliced[9..].iter().all(Result::is_ok), "{sliced:?}");
    // 3 accounts + 3 + 2 + 5 + 1 transfers.
    assert_eq!(sliced_head, Some(3 + 11 - 1));
}
