//! Model-based property test: random sequences of account commands, posted, pending,
//! post, void and expiring transfers, linked chains and repeated ids, run against the
//! engine and against a small, independent reference model. After every step the
//! results and balances match, debits equal credits per currency, no flagged account
//! is overdrawn, and replaying the engine's events from nothing (through the checks an
//! auditor runs) gives the same state.

use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_core::state::LedgerState;
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

fn account_command() -> impl Strategy<Value = AccountCommand> {
    let id = (0..=ACCOUNT_IDS).prop_map(AccountId);
    prop_oneof![
        6 => (id.clone(), 0u8..2, 0u8..4, 0u16..2).prop_map(|(id, c, f, code)| AccountCommand::Open(NewAccount {
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
        prop::option::weighted(0.9, 0u8..2),
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
        let sum = |f: fn(&Account) -> u128| engine.accounts().filter(|a| a.currency == *currency).map(f).sum::<u128>();
        prop_assert_eq!(sum(|a| a.debits_posted), totals.debits_posted);
        prop_assert_eq!(sum(|a| a.credits_posted), totals.credits_posted);
        prop_assert_eq!(sum(|a| a.debits_pending), totals.debits_pending);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_reference_model(steps in prop::collection::vec(step(), 1..40)) {
        let mut engine = LedgerState::new();
        let mut model = Model::default();
        let mut log = Vec::new();
        let mut now = 1_000_000 * TICK_NS;
        for step in &steps {
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
                    let timestamps: Vec<Option<u64>> = results.iter().map(|r| match r {
                        Ok(Outcome::Created { timestamp_ns }) => Some(*timestamp_ns),
                        _ => None,
                    }).collect();
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
        }
        // Replaying the log from nothing, with the auditor's checks, gives the same state.
        let mut replayed = LedgerState::new();
        for event in &log {
            replayed.check_and_evolve(event).map_err(|e| TestCaseError::fail(format!("replay rejected {event:?}: {e}")))?;
            let mut bytes = Vec::new();
            ledger_core::codec::encode_event(event, &mut bytes);
            prop_assert_eq!(&ledger_core::codec::decode_event(&bytes).expect("decodes"), event);
        }
        prop_assert_eq!(replayed, engine);
    }
}
