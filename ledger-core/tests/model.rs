//! Model-based property test: random sequences of account commands, posted, pending,
//! post, void and expiring transfers, linked chains and repeated ids, run against the
//! engine and against a small, independent reference model. After every step the
//! results and balances match, debits equal credits per currency, no flagged account
//! is overdrawn, and replaying the engine's events from nothing (through the checks an
//! auditor runs) gives the same state.

use ledger_core::domain::*;
use ledger_core::money::Currency;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ledger_core::state::{Checkpoint, HandOff, LedgerState, StateStore, StoredTransfer};
use proptest::prelude::*;

const TICK_NS: u64 = 1_000;
const ACCOUNT_IDS: u128 = 6;
const TRANSFER_IDS: u128 = 24;

#[derive(Clone, Debug)]
enum Step {
    Accounts(Vec<AccountCommand>),
    Transfers(Vec<NewTransfer>),
    Advance(u64),
}

fn currency(index: u8) -> Currency {
    Currency::parse(["USD", "JPY"][index as usize % 2]).expect("known currency")
}

fn flags(index: u8) -> AccountFlags {
    [
        AccountFlags(0),
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
        AccountFlags(3),
    ][index as usize % 4]
}

/// Mostly the first currency and no balance limits, so that many transfers succeed and
/// holds get resolved; the rest, to reach every rejection.
fn usually_zero() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![4 => Just(0u8), 1 => 1u8..4]
}

fn account_command() -> impl Strategy<Value = AccountCommand> {
    let id = (0..=ACCOUNT_IDS).prop_map(AccountId);
    prop_oneof![
        6 => (id.clone(), usually_zero(), usually_zero(), 0u16..2).prop_map(|(id, c, f, code)| AccountCommand::Open(NewAccount {
            id, currency: currency(c), code, flags: flags(f), owner_id: 7,
        })),
        1 => id.clone().prop_map(AccountCommand::Freeze),
        1 => id.clone().prop_map(AccountCommand::Unfreeze),
        1 => id.prop_map(AccountCommand::Close),
    ]
}

fn transfer() -> impl Strategy<Value = NewTransfer> {
    let kind = prop_oneof![
        3 => Just(TransferKind::Posted),
        2 => prop_oneof![Just(0u64), 1u64..4].prop_map(|ticks| TransferKind::Pending { timeout_ns: ticks * TICK_NS }),
        2 => (1..=TRANSFER_IDS).prop_map(|id| TransferKind::PostPending { pending_id: TransferId(id) }),
        1 => (1..=TRANSFER_IDS).prop_map(|id| TransferKind::VoidPending { pending_id: TransferId(id) }),
    ];
    (
        0..=TRANSFER_IDS,
        0..=ACCOUNT_IDS + 1,
        0..=ACCOUNT_IDS + 1,
        prop_oneof![Just(0u128), 1u128..60],
        prop::option::weighted(0.9, usually_zero()),
        kind,
        prop::bool::weighted(0.2),
        0u16..2,
    )
        .prop_map(|(id, debit, credit, amount, c, kind, linked, code)| {
            let resolving = matches!(kind, TransferKind::PostPending { .. } | TransferKind::VoidPending { .. });
            NewTransfer {
                id: TransferId(id),
                debit_account_id: AccountId(if resolving && debit % 2 == 0 { 0 } else { debit }),
                credit_account_id: AccountId(if resolving && credit % 2 == 0 { 0 } else { credit }),
                amount,
                currency: if resolving { None } else { c.map(currency) },
                code,
                metadata: if code == 1 { "memo".into() } else { String::new() },
                linked,
                kind,
            }
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => prop::collection::vec(account_command(), 1..4).prop_map(Step::Accounts),
        6 => prop::collection::vec(transfer(), 1..7).prop_map(Step::Transfers),
        1 => (1u64..3).prop_map(Step::Advance),
    ]
}

#[path = "../../tests/src/reference_model.rs"]
mod reference_model;
use reference_model::Model;

fn check_engine(engine: &LedgerState, model: &Model) -> Result<(), TestCaseError> {
    for id in 0..=ACCOUNT_IDS + 1 {
        let id = AccountId(id);
        let ours = engine
            .account(id)
            .map(|a| (a.state, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted));
        prop_assert_eq!(engine.account(id).is_some(), model.accounts.contains_key(&id));
        let theirs = model.accounts.get(&id).map(|a| (a.state, a.dp, a.dpost, a.cp, a.cpost));
        prop_assert_eq!(ours, theirs, "account {:?}", id);
        if let Some(a) = engine.account(id) {
            if a.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) {
                prop_assert!(a.debits_posted + a.debits_pending <= a.credits_posted, "overdrawn {:?}", a);
            }
            if a.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS) {
                prop_assert!(a.credits_posted + a.credits_pending <= a.debits_posted, "over-credited {:?}", a);
            }
        }
    }
    for (currency, totals) in engine.totals() {
        prop_assert!(totals.is_balanced(), "debits differ from credits in {}: {:?}", currency, totals);
        let accounts: Vec<Account> =
            (0..=ACCOUNT_IDS + 1).filter_map(|id| engine.account(AccountId(id)).map(|a| a.into_owned())).collect();
        let sum = |f: fn(&Account) -> u128| accounts.iter().filter(|a| a.currency == *currency).map(f).sum::<u128>();
        prop_assert_eq!(sum(|a| a.debits_posted), totals.debits_posted);
        prop_assert_eq!(sum(|a| a.credits_posted), totals.credits_posted);
        prop_assert_eq!(sum(|a| a.debits_pending), totals.debits_pending);
    }
    Ok(())
}

/// A state store in memory, as the engine's on-disk one behaves: it keeps the newest
/// version written of each transfer and account.
#[derive(Default)]
struct MapStore {
    transfers: Mutex<HashMap<TransferId, StoredTransfer>>,
    accounts: Mutex<HashMap<AccountId, Account>>,
}

impl StateStore for MapStore {
    fn transfer(&self, id: TransferId) -> Result<Option<StoredTransfer>, String> {
        Ok(self.transfers.lock().map_err(|e| e.to_string())?.get(&id).cloned())
    }

    fn account(&self, id: AccountId) -> Result<Option<Account>, String> {
        Ok(self.accounts.lock().map_err(|e| e.to_string())?.get(&id).cloned())
    }
}

impl MapStore {
    fn write(&self, hand_off: &HandOff) {
        let mut transfers = self.transfers.lock().expect("not poisoned");
        transfers.extend(hand_off.transfers.iter().map(|(id, stored)| (*id, stored.clone())));
        let mut accounts = self.accounts.lock().expect("not poisoned");
        accounts.extend(hand_off.accounts.iter().map(|(id, account)| (*id, account.clone())));
    }

    fn accounts(&self) -> HashMap<AccountId, Account> {
        self.accounts.lock().expect("not poisoned").clone()
    }
}

/// How the test moves transfers to the store after each step: `None` keeps them all in
/// memory; `Some((store, lag, cache))` hands off after every step and confirms all but
/// the last `lag` hand-offs, so lookups go to the store, to hand-offs not yet confirmed,
/// or to an accounts cache of `cache` bytes.
/// A state with nothing left to write, its store's accounts then, and the checkpoint of
/// the last hand-off (none before the first).
type Checkpointed = (LedgerState, HashMap<AccountId, Account>, Option<Checkpoint>);

/// Also returns the state after each step that left nothing to write, with the store's
/// accounts then: the checkpoints a start could go on from.
fn run(
    steps: &[Step],
    store: Option<(Arc<MapStore>, usize, usize)>,
) -> Result<(LedgerState, Vec<Event>, Vec<Checkpointed>), TestCaseError> {
    let mut engine = LedgerState::new();
    if let Some((store, _, cache_bytes)) = &store {
        // With no cache, every account not changed since the last hand-off is read back
        // from the hand-offs or the store.
        engine = engine.with_store(store.clone()).with_account_cache_bytes(*cache_bytes);
    }
    let mut written: Vec<HandOff> = Vec::new();
    let mut model = Model::default();
    let mut log = Vec::new();
    let mut now = 1_000_000 * TICK_NS;
    let mut snapshots = Vec::new();
    let mut checkpoint = None;
    for step in steps {
        let mut events = Vec::new();
        engine.expire_due(now, &mut events);
        model.expire(now);
        match step {
            Step::Advance(ticks) => now += ticks * TICK_NS,
            Step::Accounts(commands) => {
                let results = engine.execute_accounts(commands, now, &mut events);
                for (command, result) in commands.iter().zip(&results) {
                    prop_assert_eq!(result.is_ok(), model.account(command), "{:?} -> {:?}", command, result);
                }
            }
            Step::Transfers(batch) => {
                let state_before = engine.clone();
                let results = engine.execute_transfers(batch, now, &mut events);
                let timestamps: Vec<Option<u64>> = results
                    .iter()
                    .map(|r| match r {
                        Ok(Outcome::Created { timestamp_ns }) => Some(*timestamp_ns),
                        _ => None,
                    })
                    .collect();
                let expected = model.transfers(batch, &timestamps);
                let ours: Vec<bool> = results.iter().map(Result::is_ok).collect();
                prop_assert_eq!(&ours, &expected, "batch {:?} -> {:?}", batch, results);
                if results.iter().all(Result::is_err) && events.is_empty() {
                    prop_assert_eq!(&engine, &state_before, "a rejected batch changed the state");
                }
            }
        }
        log.extend(events);
        check_engine(&engine, &model)?;
        if let Some((store, lag, _)) = &store {
            if let Some(hand_off) = engine.hand_off() {
                checkpoint = Some(hand_off.checkpoint.clone());
                written.push(hand_off);
            }
            while written.len() > *lag {
                let hand_off = written.remove(0);
                store.write(&hand_off);
                engine.stored_up_to(hand_off.number);
            }
            prop_assert_eq!(engine.hand_offs_pending(), written.len());
        }
        if let Some((store, _, _)) = &store {
            if engine.in_memory() == 0 && written.is_empty() {
                snapshots.push((engine.clone(), store.accounts(), checkpoint.clone()));
            }
        }
    }
    Ok((engine, log, snapshots))
}

/// Every transfer id the steps can name, as `state` sees it.
fn transfers(state: &LedgerState) -> Vec<Option<Transfer>> {
    (0..=TRANSFER_IDS).map(|id| state.transfer(TransferId(id)).map(|t| t.into_owned())).collect()
}

/// The transfer an event makes.
fn made(kind: &EventKind) -> Option<TransferId> {
    match kind {
        EventKind::TransferPosted(movement)
        | EventKind::TransferPending { movement, .. }
        | EventKind::PendingPosted { movement, .. }
        | EventKind::PendingVoided { movement, .. } => Some(movement.id),
        _ => None,
    }
}

/// Whether an event makes or resolves transfer `id`.
fn changes(kind: &EventKind, id: TransferId) -> bool {
    let resolves = match kind {
        EventKind::PendingPosted { pending_id, .. }
        | EventKind::PendingVoided { pending_id, .. }
        | EventKind::PendingExpired { pending_id, .. } => *pending_id == id,
        _ => false,
    };
    resolves || made(kind) == Some(id)
}

/// Replays `log` from nothing, with the auditor's checks.
fn replay(log: &[Event], mut replayed: LedgerState) -> Result<LedgerState, TestCaseError> {
    for event in log {
        replayed.check_and_evolve(event).map_err(|e| TestCaseError::fail(format!("replay rejected {event:?}: {e}")))?;
        let mut bytes = Vec::new();
        ledger_core::codec::encode_event(event, &mut bytes);
        prop_assert_eq!(&ledger_core::codec::decode_event(&bytes).expect("decodes"), event);
    }
    Ok(replayed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_reference_model(steps in prop::collection::vec(step(), 1..40)) {
        let (engine, log, _) = run(&steps, None)?;
        // Replaying the log from nothing, with the auditor's checks, gives the same state.
        prop_assert_eq!(replay(&log, LedgerState::new())?, engine);
    }

    /// The same with transfers handed off to a store after every step: nearly every
    /// lookup of an earlier transfer goes to the store (or to a hand-off not yet
    /// confirmed), and the results still equal the model's and the in-memory engine's.
    /// Accounts are read from the store, or from an accounts cache of two slots a shard
    /// or of the default budget.
    #[test]
    fn engine_with_a_transfer_store_matches_the_reference_model(
        steps in prop::collection::vec(step(), 1..40),
        lag in 0usize..3,
        cache_bytes in prop_oneof![Just(0), Just(2 * 64 * 64), Just(ledger_core::state::ACCOUNT_CACHE_BYTES)],
    ) {
        // Every account open first, so that most transfers and holds succeed.
        let open = (1..=ACCOUNT_IDS).map(|id| AccountCommand::Open(NewAccount {
            id: AccountId(id), currency: currency(0), code: 0, flags: AccountFlags(0), owner_id: 7,
        }));
        let steps: Vec<Step> = std::iter::once(Step::Accounts(open.collect())).chain(steps).collect();
        let store = Arc::new(MapStore::default());
        let (engine, log, snapshots) = run(&steps, Some((store.clone(), lag, cache_bytes)))?;
        let (in_memory, same_log, _) = run(&steps, None)?;
        prop_assert_eq!(&log, &same_log);
        prop_assert_eq!(transfers(&engine), transfers(&in_memory));
        prop_assert_eq!(&engine, &in_memory);
        prop_assert_eq!(engine.transfer_count(), in_memory.transfer_count());
        // A replay over a store that already holds the whole run (a store written
        // further than the snapshot a start replays from) sees each transfer only once
        // its event is replayed, and a hold as pending until its resolution is: from
        // nothing, and from every snapshot the run could have taken.
        let mut all = HashMap::new();
        for id in 0..=TRANSFER_IDS {
            if let Some(transfer) = in_memory.transfer(TransferId(id)) {
                let created = log.iter().position(|e| made(&e.kind) == Some(TransferId(id))).expect("logged") as u64;
                let changed = log.iter().rposition(|e| changes(&e.kind, TransferId(id))).expect("logged") as u64;
                all.insert(TransferId(id), StoredTransfer { transfer: transfer.into_owned(), created, changed });
            }
        }
        let ahead = |accounts| Arc::new(MapStore { transfers: Mutex::new(all.clone()), accounts: Mutex::new(accounts) });
        let replayed = replay(&log, LedgerState::new().with_store(ahead(HashMap::new())))?;
        prop_assert_eq!(transfers(&replayed), transfers(&in_memory));
        for (snapshot, accounts, checkpoint) in snapshots {
            let from = snapshot.events_applied() as usize;
            // A start as the writer's: from the store's checkpoint, every account and
            // transfer read from the store.
            if let Some(checkpoint) = checkpoint.filter(|c| c.events_applied == snapshot.events_applied()) {
                let started = LedgerState::from_checkpoint(checkpoint, ahead(accounts.clone()));
                prop_assert_eq!(&started, &snapshot);
                let replayed = replay(&log[from..], started)?;
                prop_assert_eq!(transfers(&replayed), transfers(&in_memory));
                prop_assert_eq!(&replayed, &engine);
            }
            let replayed = replay(&log[from..], snapshot.with_store(ahead(accounts)))?;
            prop_assert_eq!(transfers(&replayed), transfers(&in_memory));
            prop_assert_eq!(replayed.totals(), in_memory.totals());
            prop_assert_eq!(&replayed, &engine);
        }
    }
}
