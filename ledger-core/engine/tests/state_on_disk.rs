//! The writer with its transfers on disk (`LedgerConfig::state_dir`): hand-offs of
//! a few transfers, so nearly every lookup of an earlier transfer reads the store;
//! reopening with and without snapshots; and stores that must not be trusted.

use std::path::Path;
use std::sync::Arc;

use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::writer::{Ledger, LedgerConfig, LedgerError};

fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

fn try_open(dir: &Path, snapshot_interval_events: u64) -> Result<Ledger, LedgerError> {
    try_open_after(dir, snapshot_interval_events, false)
}

/// `torn_tail_cut`: whether opening the log cut a torn tail (as `ledgerd` tells it).
fn try_open_after(dir: &Path, snapshot_interval_events: u64, torn_tail_cut: bool) -> Result<Ledger, LedgerError> {
    let (store, _) = EmbeddedStore::open(dir.join("log"), EmbeddedOptions::default()).expect("open store");
    let config = LedgerConfig {
        snapshot_dir: Some(dir.join("snapshots")),
        snapshot_interval_events,
        state_dir: Some(dir.join("state")),
        hand_off_items: 4,
        log_torn_tail_cut: torn_tail_cut,
        ..LedgerConfig::default()
    };
    Ledger::open(Arc::new(store), config)
}

fn open(dir: &Path, snapshot_interval_events: u64) -> Ledger {
    try_open(dir, snapshot_interval_events).expect("open ledger")
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128, kind: TransferKind) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        amount,
        currency: Some(usd()),
        code: 1,
        metadata: format!("t{id}"),
        linked: false,
        kind,
    }
}

/// Opens four accounts, then makes `rounds` rounds of: two posted transfers, a hold,
/// and the post or void of the previous round's hold. Returns every transfer id made.
fn fill(ledger: &Ledger, first_id: u128, rounds: u128) -> Vec<TransferId> {
    let accounts = (1..=4u128)
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
    ledger.create_accounts_blocking(accounts).expect("accounts");
    let mut made = Vec::new();
    for round in 0..rounds {
        let id = first_id + round * 4;
        let mut batch = vec![
            transfer(id, 1 + round % 4, 1 + (round + 1) % 4, 10 + round, TransferKind::Posted),
            transfer(id + 1, 2, 3, 1, TransferKind::Posted),
            transfer(id + 2, 3, 4, 5, TransferKind::Pending { timeout_ns: 0 }),
        ];
        if round > 0 {
            let pending_id = TransferId(id - 4 + 2);
            let kind = if round % 2 == 0 {
                TransferKind::PostPending { pending_id }
            } else {
                TransferKind::VoidPending { pending_id }
            };
            batch.push(NewTransfer { amount: 0, currency: None, ..transfer(id + 3, 0, 0, 0, kind) });
        }
        let results = ledger.create_transfers_blocking(batch.clone()).expect("transfers");
        assert!(results.iter().all(Result::is_ok), "round {round}: {results:?}");
        made.extend(batch.iter().map(|t| t.id));
    }
    made
}

/// Every account's balances, and every transfer as the ledger answers it.
type Seen = (Vec<Option<Account>>, Vec<Option<Transfer>>);

fn seen(ledger: &Ledger, ids: &[TransferId]) -> Seen {
    let accounts = ledger.lookup_accounts_blocking((1..=4).map(AccountId).collect()).expect("accounts");
    let transfers = ledger.lookup_transfers_blocking(ids.to_vec()).expect("transfers");
    (accounts, transfers)
}

/// `seen` with the times of accounts and transfers left out (two runs differ in them).
fn without_times((mut accounts, mut transfers): Seen) -> Seen {
    accounts.iter_mut().flatten().for_each(|account| account.timestamp_ns = 0);
    transfers.iter_mut().flatten().for_each(|transfer| transfer.timestamp_ns = 0);
    (accounts, transfers)
}

#[test]
fn state_on_disk_reads_the_same_across_restarts_from_its_checkpoint_and_from_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path(), 25);
    let ids = fill(&ledger, 1, 40);
    let before = seen(&ledger, &ids);
    assert!(before.1.iter().all(Option::is_some));
    ledger.close();
    // The same history with every transfer in memory, to compare with.
    let (store, _) = EmbeddedStore::open(reference.path().join("log"), EmbeddedOptions::default()).expect("store");
    let in_memory = Ledger::open(Arc::new(store), LedgerConfig::default()).expect("ledger");
    fill(&in_memory, 1, 40);
    assert!(without_times(seen(&in_memory, &ids)) == without_times(before.clone()), "differs from in memory");
    in_memory.close();

    let snapshots = std::fs::read_dir(dir.path().join("snapshots")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(snapshots, 0, "the state store's checkpoints replace snapshots");
    for reopen in ["from the store's checkpoint", "again", "without the state store"] {
        if reopen == "without the state store" {
            std::fs::remove_dir_all(dir.path().join("state")).expect("rm store");
        }
        let ledger = open(dir.path(), 25);
        assert!(seen(&ledger, &ids) == before, "{reopen}: the transfers read differently");
        // Resubmitting any earlier transfer is idempotent; with other fields, refused.
        let again = ledger.create_transfers_blocking(vec![transfer(5, 2, 3, 11, TransferKind::Posted)]).expect("again");
        assert!(matches!(again[0], Ok(Outcome::AlreadyExists { .. })), "{reopen}: {again:?}");
        let other = ledger.create_transfers_blocking(vec![transfer(5, 2, 3, 12, TransferKind::Posted)]).expect("other");
        assert_eq!(other[0], Err(TransferError::ExistsWithDifferentFields), "{reopen}");
        // A hold resolved long ago stays resolved; the last one still resolves once.
        let post = |id, pending| NewTransfer {
            amount: 0,
            currency: None,
            ..transfer(id, 0, 0, 0, TransferKind::PostPending { pending_id: TransferId(pending) })
        };
        let old = ledger.create_transfers_blocking(vec![post(1_000, 3)]).expect("old hold");
        assert_eq!(old[0], Err(TransferError::PendingTransferAlreadyVoided), "{reopen}");
        ledger.close();
    }
    let ledger = open(dir.path(), 25);
    let last_hold = TransferId(1 + 39 * 4 + 2);
    let post = NewTransfer {
        amount: 0,
        currency: None,
        ..transfer(2_000, 0, 0, 0, TransferKind::PostPending { pending_id: last_hold })
    };
    assert!(ledger.create_transfers_blocking(vec![post.clone()]).expect("post")[0].is_ok());
    ledger.close();
    let ledger = open(dir.path(), 25);
    let again = ledger.create_transfers_blocking(vec![NewTransfer { id: TransferId(2_001), ..post }]).expect("post");
    assert_eq!(again[0], Err(TransferError::PendingTransferAlreadyPosted));
    ledger.close();
    let (log, snapshots) = (dir.path().join("log"), dir.path().join("snapshots"));
    let audited = ledger_engine::audit::verify(&log, Some(&snapshots)).expect("audit passes");
    // The auditor's own replay, handing its transfers to its scratch store every 3, so
    // nearly every lookup reads the store: the same report.
    let handing_off = ledger_engine::audit::verify_handing_off(&log, Some(&snapshots), 3).expect("audit passes");
    assert_eq!(handing_off, audited);
    assert_eq!(audited.transfers, ids.len() + 1);
    let scratch = std::fs::read_dir(dir.path()).expect("dir").flatten();
    assert!(scratch.filter(|e| e.file_name().to_string_lossy().starts_with("audit-scratch")).count() == 0);
}

#[test]
fn a_state_store_of_another_log_is_rebuilt_and_one_past_its_end_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let longer = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path(), 1_000_000);
    let mut ids = fill(&ledger, 1, 10);
    let own = transfer(1_000_002, 2, 1, 3, TransferKind::Posted);
    assert!(ledger.create_transfers_blocking(vec![own]).expect("own")[0].is_ok());
    ids.push(TransferId(1_000_002));
    let before = seen(&ledger, &ids);
    ledger.close();
    // Another history of the same length: other amounts under the same ids.
    let ledger = open(other.path(), 1_000_000);
    fill(&ledger, 1, 10);
    let fake = transfer(1_000_001, 1, 2, 1, TransferKind::Posted);
    assert!(ledger.create_transfers_blocking(vec![fake]).expect("fake")[0].is_ok());
    ledger.close();
    let ledger = open(longer.path(), 1_000_000);
    fill(&ledger, 1, 30);
    ledger.close();

    let copy_store = |from: &Path| {
        let to = dir.path().join("state");
        std::fs::remove_dir_all(&to).expect("rm store");
        copy_dir(&from.join("state"), &to);
    };
    copy_store(other.path());
    let ledger = open(dir.path(), 1_000_000);
    assert!(seen(&ledger, &ids) == before, "the other log's store must not be used");
    let fake = ledger.lookup_transfers_blocking(vec![TransferId(1_000_001)]).expect("lookup");
    assert_eq!(fake, vec![None]);
    ledger.close();

    // A store that claims more than the log holds: the log lost durable events, and
    // the start is refused; unless opening the log cut a torn tail, after which the
    // store is rebuilt (as the read models are).
    copy_store(longer.path());
    let refused = try_open(dir.path(), 1_000_000).err();
    assert!(matches!(refused, Some(LedgerError::LogShorterThanSnapshot { .. })), "{refused:?}");
    let ledger = try_open_after(dir.path(), 1_000_000, true).expect("rebuilt after a torn tail");
    assert!(seen(&ledger, &ids) == before, "a store past the log's end must not be used");
    ledger.close();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}
