//! Every kind of bad input gets its own error and leaves the state unchanged
//! (given accounts and holds -> when a bad command -> then that error, no event).

use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_core::state::LedgerState;

const NOW: u64 = 1_000_000;

fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR")
}

fn open(id: u128, currency: Currency, flags: AccountFlags) -> AccountCommand {
    AccountCommand::Open(NewAccount { id: AccountId(id), currency, code: 1, flags, owner_id: 0 })
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128, kind: TransferKind) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        amount,
        currency: Some(usd()),
        code: 1,
        metadata: String::new(),
        linked: false,
        kind,
    }
}

/// Accounts 1, 2 (USD, no flags), 3 (USD, no overdraft), 4 (EUR), 5 (USD, frozen),
/// 6 (USD, credits must not exceed debits); transfer 100 posted 1 -> 2; pending 101
/// (1 -> 2, 50) and 102 (posted after creation) and 103 (voided).
fn given() -> LedgerState {
    let mut state = LedgerState::new();
    let mut events = Vec::new();
    let accounts = vec![
        open(1, usd(), AccountFlags(0)),
        open(2, usd(), AccountFlags(0)),
        open(3, usd(), AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        open(4, eur(), AccountFlags(0)),
        open(5, usd(), AccountFlags(0)),
        AccountCommand::Freeze(AccountId(5)),
        open(6, usd(), AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
    ];
    assert!(state.execute_accounts(&accounts, NOW, &mut events).iter().all(Result::is_ok));
    let transfers = vec![
        transfer(100, 1, 2, 10, TransferKind::Posted),
        transfer(101, 1, 2, 50, TransferKind::Pending { timeout_ns: 0 }),
        transfer(102, 1, 2, 50, TransferKind::Pending { timeout_ns: 0 }),
        transfer(103, 1, 2, 50, TransferKind::Pending { timeout_ns: 0 }),
        transfer(104, 0, 0, 0, TransferKind::PostPending { pending_id: TransferId(102) }),
        transfer(105, 0, 0, 0, TransferKind::VoidPending { pending_id: TransferId(103) }),
    ];
    let results = state.execute_transfers(&transfers, NOW, &mut events);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    state
}

fn rejects(command: NewTransfer, expected: TransferError) {
    let before = given();
    let mut state = before.clone();
    let mut events = Vec::new();
    let results = state.execute_transfers(std::slice::from_ref(&command), NOW, &mut events);
    assert_eq!(results, vec![Err(expected)], "{command:?}");
    assert!(events.is_empty(), "a rejected transfer recorded events");
    assert_eq!(state, before, "a rejected transfer changed the state");
}

#[test]
fn each_bad_transfer_has_its_own_error() {
    use TransferError::*;
    use TransferKind::*;
    rejects(transfer(0, 1, 2, 1, Posted), IdMustNotBeZero);
    rejects(transfer(u128::MAX, 1, 2, 1, Posted), IdMustNotBeMax);
    rejects(transfer(100, 1, 2, 11, Posted), ExistsWithDifferentFields);
    rejects(transfer(1, 0, 2, 1, Posted), DebitAccountIdMustNotBeZero);
    rejects(transfer(1, 1, 0, 1, Posted), CreditAccountIdMustNotBeZero);
    rejects(transfer(1, 1, 1, 1, Posted), AccountsMustBeDifferent);
    rejects(transfer(1, 1, 2, 0, Posted), AmountMustNotBeZero);
    rejects(NewTransfer { currency: None, ..transfer(1, 1, 2, 1, Posted) }, CurrencyRequired);
    rejects(
        NewTransfer { metadata: "x".repeat(METADATA_BYTES_MAX + 1), ..transfer(1, 1, 2, 1, Posted) },
        MetadataTooLong,
    );
    rejects(transfer(1, 9, 2, 1, Posted), DebitAccountNotFound);
    rejects(transfer(1, 1, 9, 1, Posted), CreditAccountNotFound);
    rejects(transfer(1, 4, 2, 1, Posted), CurrencyMismatchDebitAccount);
    rejects(transfer(1, 1, 4, 1, Posted), CurrencyMismatchCreditAccount);
    rejects(transfer(1, 5, 2, 1, Posted), DebitAccountNotOpen);
    rejects(transfer(1, 1, 5, 1, Posted), CreditAccountNotOpen);
    rejects(transfer(1, 3, 2, 1, Posted), ExceedsCredits);
    rejects(transfer(1, 1, 6, 1, Posted), ExceedsDebits);
    rejects(transfer(1, 1, 2, u128::MAX - 5, Posted), Overflow);
    rejects(transfer(1, 1, 2, 1, Pending { timeout_ns: u64::MAX }), TimeoutOverflow);
    rejects(transfer(1, 0, 0, 0, PostPending { pending_id: TransferId(0) }), PendingIdMustNotBeZero);
    rejects(transfer(1, 0, 0, 0, PostPending { pending_id: TransferId(1) }), PendingIdMustBeDifferent);
    rejects(transfer(1, 0, 0, 0, PostPending { pending_id: TransferId(999) }), PendingTransferNotFound);
    rejects(transfer(1, 0, 0, 0, PostPending { pending_id: TransferId(100) }), PendingTransferNotPending);
    rejects(transfer(1, 0, 0, 0, PostPending { pending_id: TransferId(102) }), PendingTransferAlreadyPosted);
    rejects(transfer(1, 0, 0, 0, VoidPending { pending_id: TransferId(103) }), PendingTransferAlreadyVoided);
    rejects(transfer(1, 2, 0, 0, PostPending { pending_id: TransferId(101) }), PendingTransferHasDifferentDebitAccount);
    rejects(
        transfer(1, 0, 1, 0, PostPending { pending_id: TransferId(101) }),
        PendingTransferHasDifferentCreditAccount,
    );
    rejects(
        NewTransfer { currency: Some(eur()), ..transfer(1, 0, 0, 0, PostPending { pending_id: TransferId(101) }) },
        PendingTransferHasDifferentCurrency,
    );
    rejects(transfer(1, 0, 0, 51, PostPending { pending_id: TransferId(101) }), ExceedsPendingAmount);
    rejects(transfer(1, 0, 0, 10, VoidPending { pending_id: TransferId(101) }), VoidAmountMustMatchPending);
    let chain_open = NewTransfer { linked: true, ..transfer(1, 1, 2, 1, Posted) };
    rejects(chain_open, LinkedEventChainOpen);
}

#[test]
fn an_expired_hold_cannot_be_posted() {
    let mut state = given();
    let mut events = Vec::new();
    state.execute_transfers(&[transfer(1, 1, 2, 5, TransferKind::Pending { timeout_ns: 10 })], NOW, &mut events);
    let mut later = Vec::new();
    state.expire_due(NOW + 1_000, &mut later);
    assert!(matches!(
        later.as_slice(),
        [Event { kind: EventKind::PendingExpired { pending_id: TransferId(1), .. }, .. }]
    ));
    let results = state.execute_transfers(
        &[transfer(2, 0, 0, 0, TransferKind::PostPending { pending_id: TransferId(1) })],
        NOW + 2_000,
        &mut later,
    );
    assert_eq!(results, vec![Err(TransferError::PendingTransferExpired)]);
    assert_eq!(state.account(AccountId(1)).map(|a| a.debits_pending), Some(50));
}

#[test]
fn a_failing_member_undoes_its_whole_linked_chain() {
    let before = given();
    let mut state = before.clone();
    let mut events = Vec::new();
    let batch = vec![
        NewTransfer { linked: true, ..transfer(1, 1, 2, 5, TransferKind::Posted) },
        NewTransfer { linked: true, ..transfer(2, 1, 2, 5, TransferKind::Pending { timeout_ns: 5 }) },
        transfer(3, 3, 2, 5, TransferKind::Posted), // account 3 has no credits: fails
        transfer(4, 1, 2, 7, TransferKind::Posted), // not linked: commits alone
    ];
    let results = state.execute_transfers(&batch, NOW, &mut events);
    use TransferError::*;
    assert!(matches!(
        results.as_slice(),
        [Err(LinkedEventFailed), Err(LinkedEventFailed), Err(ExceedsCredits), Ok(Outcome::Created { .. })]
    ));
    assert_eq!(events.len(), 1);
    assert!(state.transfer(TransferId(1)).is_none() && state.transfer(TransferId(2)).is_none());
    assert_eq!(state.next_expiry_ns(), None, "the undone hold must not expire later");
    assert_eq!(
        state.account(AccountId(1)).map(|a| a.debits_posted),
        Some(before.account(AccountId(1)).map_or(0, |a| a.debits_posted) + 7)
    );
}

#[test]
fn resubmitting_the_same_transfer_returns_the_original_result() {
    let mut state = given();
    let mut events = Vec::new();
    let original = state.transfer(TransferId(100)).map(|t| t.timestamp_ns).expect("transfer 100");
    let results = state.execute_transfers(&[transfer(100, 1, 2, 10, TransferKind::Posted)], NOW + 5, &mut events);
    assert_eq!(results, vec![Ok(Outcome::AlreadyExists { timestamp_ns: original })]);
    assert!(events.is_empty());
}

#[test]
fn each_bad_account_command_has_its_own_error() {
    use AccountError::*;
    let cases = vec![
        (open(0, usd(), AccountFlags(0)), IdMustNotBeZero),
        (open(u128::MAX, usd(), AccountFlags(0)), IdMustNotBeMax),
        (open(9, usd(), AccountFlags(8)), FlagsUnknown),
        (open(9, usd(), AccountFlags(3)), FlagsAreMutuallyExclusive),
        (open(1, eur(), AccountFlags(0)), ExistsWithDifferentFields),
        (AccountCommand::Freeze(AccountId(9)), NotFound),
        (AccountCommand::Freeze(AccountId(5)), NotOpen),
        (AccountCommand::Unfreeze(AccountId(1)), NotFrozen),
        (AccountCommand::Close(AccountId(1)), HasPendingTransfers),
        (AccountCommand::Close(AccountId(2)), HasPendingTransfers),
    ];
    for (command, expected) in cases {
        let before = given();
        let mut state = before.clone();
        let mut events = Vec::new();
        assert_eq!(
            state.execute_accounts(std::slice::from_ref(&command), NOW, &mut events),
            vec![Err(expected)],
            "{command:?}"
        );
        assert!(events.is_empty());
        assert_eq!(state, before);
    }
    // Balance not zero: account 4 gets money from a fresh EUR account.
    let mut state = given();
    let mut events = Vec::new();
    state.execute_accounts(&[open(7, eur(), AccountFlags(0))], NOW, &mut events);
    let euro = NewTransfer { currency: Some(eur()), ..transfer(1, 7, 4, 3, TransferKind::Posted) };
    assert!(state.execute_transfers(&[euro], NOW, &mut events)[0].is_ok());
    let results = state.execute_accounts(&[AccountCommand::Close(AccountId(4))], NOW, &mut events);
    assert_eq!(results, vec![Err(BalanceNotZero)]);
    let results = state.execute_accounts(&[AccountCommand::Close(AccountId(6))], NOW, &mut events);
    assert!(results[0].is_ok());
    let results = state.execute_accounts(&[AccountCommand::Close(AccountId(6))], NOW, &mut events);
    assert_eq!(results, vec![Err(Closed)]);
}

/// At the amount boundary: a currency's totals reach `TOTAL_MAX` (= `i128::MAX`) and no
/// further, so a balance derived from them always fits an `i128` (no wrap in release
/// builds, where `overflow-checks` would otherwise be the only guard).
#[test]
fn totals_stop_at_total_max_so_balances_fit_i128() {
    use ledger_core::state::TOTAL_MAX;
    assert_eq!(TOTAL_MAX, i128::MAX as u128);
    let mut state = LedgerState::new();
    let mut events = Vec::new();
    let accounts = vec![open(1, usd(), AccountFlags(0)), open(2, usd(), AccountFlags(0))];
    assert!(state.execute_accounts(&accounts, NOW, &mut events).iter().all(Result::is_ok));
    let over = state.execute_transfers(&[transfer(10, 1, 2, TOTAL_MAX + 1, TransferKind::Posted)], NOW, &mut events);
    assert_eq!(over, vec![Err(TransferError::Overflow)]);
    let to_the_edge = state.execute_transfers(&[transfer(11, 1, 2, TOTAL_MAX, TransferKind::Posted)], NOW, &mut events);
    assert!(to_the_edge.iter().all(Result::is_ok), "{to_the_edge:?}");
    let one_more = state.execute_transfers(&[transfer(12, 2, 1, 1, TransferKind::Posted)], NOW, &mut events);
    assert_eq!(one_more, vec![Err(TransferError::Overflow)], "the currency's debits are at TOTAL_MAX");
    let debit = state.account(AccountId(1)).expect("account 1");
    let credit = state.account(AccountId(2)).expect("account 2");
    assert_eq!(debit.balance_credit_normal(), -i128::MAX);
    assert_eq!(credit.balance_credit_normal(), i128::MAX);
}
