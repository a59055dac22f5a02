//! Model-based property test: random sequences of account commands, posted, pending,
//! post, void and expiring transfers, linked chains and repeated ids, run against the
//! engine and against a small, independent reference model. After every step the
//! results and balances match, debits equal credits per currency, no flagged account
//! is overdrawn, and replaying the engine's events from nothing (through the checks an
//! auditor runs) gives the same state.

use std::collections::HashMap;

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

// ----- The reference model: plain, obviously correct, independent of the engine ------

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelAccount {
    currency: Currency,
    code: u16,
    flags: AccountFlags,
    state: AccountState,
    dp: u128,
    dpost: u128,
    cp: u128,
    cpost: u128,
}

#[derive(Clone, Debug)]
struct ModelTransfer {
    kind: TransferKind,
    debit: AccountId,
    credit: AccountId,
    amount: u128,
    currency: Currency,
    code: u16,
    metadata: String,
    linked: bool,
    expires_at: u64,
    status: Option<&'static str>,
}

#[derive(Clone, Debug, Default)]
struct Model {
    accounts: HashMap<AccountId, ModelAccount>,
    transfers: HashMap<TransferId, ModelTransfer>,
}

impl Model {
    fn expire(&mut self, now: u64) {
        let due: Vec<TransferId> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.status == Some("pending") && t.expires_at != 0 && t.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let t = self.transfers.get_mut(&id).expect("due transfer");
            t.status = Some("expired");
            let (debit, credit, amount) = (t.debit, t.credit, t.amount);
            self.accounts.get_mut(&debit).expect("debit").dp -= amount;
            self.accounts.get_mut(&credit).expect("credit").cp -= amount;
        }
    }

    fn account(&mut self, command: &AccountCommand) -> bool {
        match command {
            AccountCommand::Open(new) => {
                if new.id.0 == 0 || new.flags.0 == 3 {
                    return false;
                }
                if let Some(existing) = self.accounts.get(&new.id) {
                    return existing.currency == new.currency
                        && existing.code == new.code
                        && existing.flags == new.flags;
                }
                let account = ModelAccount {
                    currency: new.currency,
                    code: new.code,
                    flags: new.flags,
                    state: AccountState::Open,
                    dp: 0,
                    dpost: 0,
                    cp: 0,
                    cpost: 0,
                };
                self.accounts.insert(new.id, account);
                true
            }
            AccountCommand::Freeze(id) => self.set_state(*id, AccountState::Open, AccountState::Frozen),
            AccountCommand::Unfreeze(id) => self.set_state(*id, AccountState::Frozen, AccountState::Open),
            AccountCommand::Close(id) => match self.accounts.get_mut(id) {
                Some(a) if a.state != AccountState::Closed && a.dp == 0 && a.cp == 0 && a.dpost == a.cpost => {
                    a.state = AccountState::Closed;
                    true
                }
                _ => false,
            },
        }
    }

    fn set_state(&mut self, id: AccountId, from: AccountState, to: AccountState) -> bool {
        match self.accounts.get_mut(&id) {
            Some(a) if a.state == from => {
                a.state = to;
                true
            }
            _ => false,
        }
    }

    /// Applies one transfer; the engine's timestamp is needed only for expiry times.
    fn transfer(&mut self, t: &NewTransfer, timestamp: Option<u64>) -> bool {
        if t.id.0 == 0 {
            return false;
        }
        if let Some(existing) = self.transfers.get(&t.id) {
            let resolving = matches!(t.kind, TransferKind::PostPending { .. } | TransferKind::VoidPending { .. });
            return existing.kind == t.kind
                && (t.debit_account_id == existing.debit || (resolving && t.debit_account_id.0 == 0))
                && (t.credit_account_id == existing.credit || (resolving && t.credit_account_id.0 == 0))
                && (t.amount == existing.amount || (resolving && t.amount == 0))
                && (t.currency == Some(existing.currency) || (resolving && t.currency.is_none()))
                && t.code == existing.code
                && t.metadata == existing.metadata
                && t.linked == existing.linked;
        }
        match t.kind {
            TransferKind::Posted | TransferKind::Pending { .. } => {
                let (Some(d), Some(c), Some(cur)) =
                    (self.accounts.get(&t.debit_account_id), self.accounts.get(&t.credit_account_id), t.currency)
                else {
                    return false;
                };
                if t.debit_account_id == t.credit_account_id || t.amount == 0 || d.currency != cur || c.currency != cur
                {
                    return false;
                }
                if d.state != AccountState::Open || c.state != AccountState::Open {
                    return false;
                }
                if d.flags == AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS && d.dpost + d.dp + t.amount > d.cpost {
                    return false;
                }
                if c.flags == AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS && c.cpost + c.cp + t.amount > c.dpost {
                    return false;
                }
                let pending = matches!(t.kind, TransferKind::Pending { .. });
                let d = self.accounts.get_mut(&t.debit_account_id).expect("debit");
                if pending {
                    d.dp += t.amount
                } else {
                    d.dpost += t.amount
                }
                let c = self.accounts.get_mut(&t.credit_account_id).expect("credit");
                if pending {
                    c.cp += t.amount
                } else {
                    c.cpost += t.amount
                }
                let expires_at = match t.kind {
                    TransferKind::Pending { timeout_ns } if timeout_ns > 0 => timestamp.unwrap_or(0) + timeout_ns,
                    _ => 0,
                };
                self.transfers.insert(
                    t.id,
                    ModelTransfer {
                        kind: t.kind,
                        debit: t.debit_account_id,
                        credit: t.credit_account_id,
                        amount: t.amount,
                        currency: cur,
                        code: t.code,
                        metadata: t.metadata.clone(),
                        linked: t.linked,
                        expires_at,
                        status: pending.then_some("pending"),
                    },
                );
                true
            }
            TransferKind::PostPending { pending_id } | TransferKind::VoidPending { pending_id } => {
                let post = matches!(t.kind, TransferKind::PostPending { .. });
                let Some(p) = self.transfers.get(&pending_id).cloned() else {
                    return false;
                };
                if pending_id == t.id || p.status != Some("pending") {
                    return false;
                }
                if (t.debit_account_id.0 != 0 && t.debit_account_id != p.debit)
                    || (t.credit_account_id.0 != 0 && t.credit_account_id != p.credit)
                {
                    return false;
                }
                if t.currency.is_some_and(|c| c != p.currency) {
                    return false;
                }
                let amount = if t.amount == 0 { p.amount } else { t.amount };
                if post {
                    let open = |id| self.accounts.get(&id).map(|a: &ModelAccount| a.state) == Some(AccountState::Open);
                    if amount > p.amount || !open(p.debit) || !open(p.credit) {
                        return false;
                    }
                } else if amount != p.amount {
                    return false;
                }
                let posted = if post { amount } else { 0 };
                let d = self.accounts.get_mut(&p.debit).expect("debit");
                d.dp -= p.amount;
                d.dpost += posted;
                let c = self.accounts.get_mut(&p.credit).expect("credit");
                c.cp -= p.amount;
                c.cpost += posted;
                self.transfers.get_mut(&pending_id).expect("pending").status =
                    Some(if post { "posted" } else { "voided" });
                let recorded_amount = if post { amount } else { p.amount };
                self.transfers.insert(
                    t.id,
                    ModelTransfer {
                        kind: t.kind,
                        debit: p.debit,
                        credit: p.credit,
                        amount: recorded_amount,
                        currency: p.currency,
                        code: t.code,
                        metadata: t.metadata.clone(),
                        linked: t.linked,
                        expires_at: 0,
                        status: None,
                    },
                );
                true
            }
        }
    }

    /// A batch with linked chains: a chain commits all or nothing.
    fn transfers(&mut self, batch: &[NewTransfer], timestamps: &[Option<u64>]) -> Vec<bool> {
        let mut results = Vec::new();
        let mut index = 0;
        while index < batch.len() {
            let mut end = index;
            while end < batch.len() && batch[end].linked {
                end += 1;
            }
            if end == batch.len() {
                // The chain is never closed: nothing of it commits.
                results.extend(std::iter::repeat_n(false, end - index));
                break;
            }
            let mut trial = self.clone();
            let chain_ok = (index..=end).all(|i| trial.transfer(&batch[i], timestamps[i]));
            if chain_ok {
                *self = trial;
            }
            results.extend(std::iter::repeat_n(chain_ok, end - index + 1));
            index = end + 1;
        }
        results
    }
}

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
