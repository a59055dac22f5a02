//! Damaged read-model data is an error, never a value: a row written over with bytes the
//! encoders could not have written reads as `ReadModelError::Corrupt`, an event the read
//! models contradict fails `apply` with `ReadModelError::Invariant`, and either raises
//! the alarm the server reports (`ReadModels::alarmed`, `Projector::alarmed`).

use std::path::Path;

use ledger_core::chain::{chain_hash, GENESIS_HASH};
use ledger_core::codec;
use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_core::state::LedgerState;
use ledger_engine::store::RecordedEvent;
use projections::read_models::*;
use projections::worker::Projector;
use redb::{ReadableTable, TableDefinition};

const START_NS: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
const HOUR_NS: u64 = 3_600_000_000_000;

// The tables as the read models store them (their on-disk layout, which this test
// damages directly).
const ACCOUNTS: TableDefinition<u128, &[u8]> = TableDefinition::new("accounts");
const MOVEMENTS: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new("movements");
const BUCKETS: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new("buckets");

fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

/// Accounts 1 and 2 (owner 7), then 5 posted from 1 to 2 and 3 held from 2 to 1.
fn events() -> Vec<Event> {
    let mut state = LedgerState::new();
    let mut events = Vec::new();
    let open = |id| {
        AccountCommand::Open(NewAccount {
            id: AccountId(id),
            currency: usd(),
            code: 1,
            flags: AccountFlags(0),
            owner_id: 7,
        })
    };
    state.execute_accounts(&[open(1), open(2)], START_NS, &mut events);
    let transfer = |id, debit, credit, amount, kind| NewTransfer {
        id: TransferId(id),
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        amount,
        currency: Some(usd()),
        code: 1,
        metadata: format!("transfer {id}"),
        linked: false,
        kind,
    };
    state.execute_transfers(&[transfer(10, 1, 2, 5, TransferKind::Posted)], START_NS + HOUR_NS, &mut events);
    let pending = TransferKind::Pending { timeout_ns: 0 };
    state.execute_transfers(&[transfer(11, 2, 1, 3, pending)], START_NS + 2 * HOUR_NS, &mut events);
    assert_eq!(events.len(), 4, "{events:?}");
    events
}

/// The log the ledger would write for `events`: one stream, chained, dense positions.
fn log_of(events: &[Event]) -> Vec<RecordedEvent> {
    let mut previous = GENESIS_HASH;
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let mut payload = Vec::new();
            codec::encode_event(event, &mut payload);
            let hash = chain_hash(&previous, i as u64, &payload);
            previous = hash;
            RecordedEvent {
                stream: "ledger-0".into(),
                revision: i as u64,
                position: i as u64,
                event_type: event.kind.type_name().into(),
                payload,
                hash,
            }
        })
        .collect()
}

/// Rewrites one stored row with `edit`, through redb directly (the read models must be
/// closed: redb opens a file once).
fn damage<K: redb::Key + 'static>(
    path: &Path,
    table: TableDefinition<K, &[u8]>,
    key: K::SelfType<'_>,
    edit: impl FnOnce(&mut Vec<u8>),
) where
    for<'a> K::SelfType<'a>: Clone,
{
    let db = redb::Database::open(path).expect("open the database");
    let txn = db.begin_write().expect("write");
    {
        let mut rows = txn.open_table(table).expect("table");
        let mut bytes = rows.get(key.clone()).expect("get").expect("a stored row").value().to_vec();
        edit(&mut bytes);
        rows.insert(key, bytes.as_slice()).expect("insert");
    }
    txn.commit().expect("commit");
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, ProjectionError>, want_table: &str, want_reason: &str) {
    match result {
        Err(ProjectionError::ReadModel(ReadModelError::Corrupt { table, key, reason })) => {
            assert_eq!(table, want_table, "{key}: {reason}");
            assert!(reason.contains(want_reason), "{table} {key}: {reason}");
        }
        other => panic!("expected a damaged {want_table} row ({want_reason}), got {other:?}"),
    }
}

fn alarmed(models: &ReadModels) -> bool {
    let raised = *models.alarmed().borrow();
    assert_eq!(raised, models.corruption_seen(), "no chain alarm in these tests");
    raised
}

#[test]
fn a_damaged_row_reads_as_a_corrupt_error_and_raises_the_alarm() {
    let events = events();
    let records = log_of(&events);
    let posted_ns = events[2].timestamp_ns;
    let held_ns = events[3].timestamp_ns;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("models.redb");
    let filter = HistoryFilter::default();
    let (from_ns, to_ns) = (START_NS, START_NS + 24 * HOUR_NS);
    {
        let models = ReadModels::open(&path).expect("open");
        models.apply(&records, true).expect("apply");
        assert_eq!(models.history(&[1, 2], &filter, None, 10).expect("history").movements.len(), 4);
        assert_eq!(models.report(1, from_ns, to_ns, 0).expect("report").expect("account").closing, -5);
        assert!(!alarmed(&models));
    }

    // An unknown currency in an account row: read before as the first currency.
    damage(&path, ACCOUNTS, 1, |row| row[..3].copy_from_slice(b"XXX"));
    let models = ReadModels::open(&path).expect("open");
    let projector = Projector::new(models).expect("projector");
    let models = projector.models();
    assert!(!alarmed(models), "nothing read yet");
    assert_corrupt(models.account(1), "accounts", "unknown currency");
    assert!(alarmed(models), "the read raised the alarm");
    assert!(*projector.alarmed().borrow(), "the alarm the server reports (ledger.audit, ledger_audit_alarm)");
    assert_corrupt(models.balances_as_of(1, None), "accounts", "unknown currency");
    assert_corrupt(models.report(1, from_ns, to_ns, 0), "accounts", "unknown currency");
    // Undamaged rows still read.
    assert_eq!(models.account(2).expect("account 2").expect("known").balances.credits_posted, 5);
    // Applying an event that touches the damaged row fails the batch: nothing applied.
    let more = {
        let mut more = events.clone();
        let mut state = LedgerState::new();
        let mut extra = Vec::new();
        for event in &events {
            state.evolve(event);
        }
        let transfer = NewTransfer {
            id: TransferId(12),
            debit_account_id: AccountId(1),
            credit_account_id: AccountId(2),
            amount: 1,
            currency: Some(usd()),
            code: 1,
            metadata: String::new(),
            linked: false,
            kind: TransferKind::Posted,
        };
        state.execute_transfers(&[transfer], START_NS + 3 * HOUR_NS, &mut extra);
        more.extend(extra);
        log_of(&more)
    };
    assert_corrupt(models.apply(&more, true), "accounts", "unknown currency");
    assert_eq!(models.next_position().expect("checkpoint"), 4, "the batch was not applied");
    drop(projector);

    // A truncated account row: read before as whatever the short slice held, or a panic.
    damage(&path, ACCOUNTS, 1, |row| {
        row[..3].copy_from_slice(b"USD");
        row.truncate(50);
    });
    let models = ReadModels::open(&path).expect("open");
    assert_corrupt(models.account(1), "accounts", "bytes end before");
    assert!(alarmed(&models));
    drop(models);
    damage(&path, ACCOUNTS, 1, |row| row.resize(91, 0));

    // An unknown status byte in a movement: read before as "expired". Account 2's block
    // starts at the posted transfer; its first row's status is at 2 + 8 + 2 + 2.
    damage(&path, MOVEMENTS, (2, posted_ns), |block| block[14] = 9);
    let models = ReadModels::open(&path).expect("open");
    assert_corrupt(models.history(&[2], &filter, None, 10), "movements", "unknown status byte 9");
    assert!(alarmed(&models));
    assert_corrupt(models.history(&[1, 2], &filter, None, 10), "movements", "unknown status byte 9");
    assert_corrupt(models.movements_oldest_first(2, &filter, None, 10), "movements", "unknown status byte 9");
    drop(models);

    // A truncated movement block: before, its last rows silently went missing.
    damage(&path, MOVEMENTS, (2, posted_ns), |block| {
        block[14] = 1;
        block.truncate(block.len() - 4);
    });
    let models = ReadModels::open(&path).expect("open");
    assert_corrupt(models.balances_as_of(2, Some(held_ns)), "movements", "bytes end before");
    assert!(alarmed(&models));
    drop(models);

    // A truncated bucket: before, a panic on the short slice.
    damage(&path, BUCKETS, (1, posted_ns / QUARTER_HOUR_NS), |bucket| bucket.truncate(39));
    let models = ReadModels::open(&path).expect("open");
    assert_corrupt(models.report(1, from_ns, to_ns, 0), "buckets", "bytes end before");
    assert!(alarmed(&models));
}

#[test]
fn a_movement_on_an_account_the_read_models_do_not_know_fails_apply() {
    // The log without account 2's opening: a broken invariant of the fold, which before
    // skipped the movement's credit leg and applied the rest.
    let events: Vec<Event> = events()
        .into_iter()
        .filter(|event| !matches!(&event.kind, EventKind::AccountOpened(new) if new.id == AccountId(2)))
        .collect();
    let records = log_of(&events);
    let dir = tempfile::tempdir().expect("tempdir");
    let models = ReadModels::open(&dir.path().join("models.redb")).expect("open");
    assert_eq!(models.apply(&records[..1], true).expect("the opening applies"), 1);
    match models.apply(&records, true) {
        Err(ProjectionError::ReadModel(ReadModelError::Invariant { position, reason })) => {
            assert_eq!(position, 1);
            assert!(reason.contains("account 2") && reason.contains("never opened"), "{reason}");
        }
        other => panic!("expected an invariant error, got {other:?}"),
    }
    assert_eq!(models.next_position().expect("checkpoint"), 1, "nothing of the batch applied");
    assert_eq!(models.account(1).expect("read").expect("known").balances, Balances::default());
    assert!(alarmed(&models));
}
