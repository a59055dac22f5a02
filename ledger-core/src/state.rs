//! The ledger state machine in the decider shape: `decide_*` look at the state and a
//! command and return the event to record (or a rejection); `evolve` folds an event
//! into the state. Replay is a fold of `evolve`. `execute_*` run a batch: decide,
//! evolve, and undo a linked chain whose member fails.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::domain::*;
use crate::money::Currency;

mod account_cache;
pub mod rows;
mod tiers;
mod transfer_map;
use account_cache::AccountCache;
pub use account_cache::ACCOUNT_CACHE_BYTES;
use tiers::AccountIds;
pub use tiers::{AccountMap, Checkpoint, HandOff, StateStore, StoredTransfer};
use tiers::{Frozen, StoreHandle};
pub use transfer_map::TransferMap;

/// Debit and credit totals of one currency across the whole ledger. Double entry means
/// debits equal credits, posted and pending, after every event.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct CurrencyTotals {
    pub debits_posted: u128,
    pub credits_posted: u128,
    pub debits_pending: u128,
    pub credits_pending: u128,
}

impl CurrencyTotals {
    pub fn is_balanced(&self) -> bool {
        self.debits_posted == self.credits_posted && self.debits_pending == self.credits_pending
    }
}

/// Most a currency's debits (posted plus pending) may total, in minor units: `i128::MAX`,
/// so a balance or a net (the difference of two totals) always fits an `i128`.
pub const TOTAL_MAX: u128 = i128::MAX as u128;

/// The in-memory state of one ledger partition.
///
/// Accounts and transfers live in three tiers. `accounts` and `transfers` hold those
/// made or changed since they were last handed off; with a state store attached
/// ([`LedgerState::with_store`]) the writer hands them off ([`LedgerState::hand_off`])
/// to be written there, keeps them readable in `frozen` until the store confirms them
/// ([`LedgerState::stored_up_to`]), and reads them from the store after that. Without
/// a store everything stays in the first tier.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LedgerState {
    accounts: AccountMap,
    transfers: TransferMap,
    /// Accounts of the first tier changed since the last hand-off (the others there were
    /// only read, and are dropped at the next hand-off).
    #[serde(skip)]
    dirty_accounts: AccountIds,
    /// Accounts as the store holds them, within a byte budget (`ACCOUNT_CACHE_BYTES`).
    #[serde(skip)]
    account_cache: AccountCache,
    #[serde(skip)]
    frozen: VecDeque<Frozen>,
    /// The transfer map of a hand-off the store has written, emptied, for the next
    /// hand-off's first tier: its memory is reused, not faulted in afresh. At most one.
    #[serde(skip)]
    spare_transfers: Option<TransferMap>,
    /// The same for the accounts' map.
    #[serde(skip)]
    spare_accounts: Option<AccountMap>,
    #[serde(skip)]
    store: Option<StoreHandle>,
    /// The number of the last hand-off.
    #[serde(skip)]
    handed_off: u64,
    /// Transfers committed so far, in every tier.
    transfers_total: u64,
    /// Accounts opened so far, in every tier.
    accounts_total: u64,
    /// Holds with a timeout, by expiry time.
    expiries: BTreeSet<(u64, TransferId)>,
    totals: BTreeMap<Currency, CurrencyTotals>,
    /// The timestamp of the newest event; the next one is strictly greater.
    last_timestamp_ns: u64,
    /// Events folded so far.
    events_applied: u64,
    /// While a linked chain runs, how to undo what it did.
    #[serde(skip)]
    journal: Option<Vec<Undo>>,
}

/// Two states are equal when they hold the same accounts, totals, holds and clock, and
/// every transfer either keeps in memory reads the same from the other (transfers only
/// in stores are not read here).
impl PartialEq for LedgerState {
    fn eq(&self, other: &Self) -> bool {
        self.accounts_total == other.accounts_total
            && self.accounts_read_the_same_in(other)
            && other.accounts_read_the_same_in(self)
            && self.transfers_total == other.transfers_total
            && self.expiries == other.expiries
            && self.totals == other.totals
            && self.last_timestamp_ns == other.last_timestamp_ns
            && self.events_applied == other.events_applied
            && self.journal == other.journal
            && self.transfers_read_the_same_in(other)
            && other.transfers_read_the_same_in(self)
    }
}

impl Eq for LedgerState {}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Undo {
    Account(AccountId, Option<Account>),
    Transfer(TransferId, Option<StoredTransfer>),
    ExpiryInserted(u64, TransferId),
    ExpiryRemoved(u64, TransferId),
    Totals(Currency, Option<CurrencyTotals>),
    Clock { last_timestamp_ns: u64, events_applied: u64 },
}

/// Why an event cannot be folded into the state: the log holds something the engine
/// would never have written. Replay and audit stop on it.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("event timestamp {timestamp_ns} is not after the previous {previous_ns}")]
    TimestampNotIncreasing { timestamp_ns: u64, previous_ns: u64 },
    #[error("account event rejected: {0}")]
    Account(AccountError),
    #[error("transfer event rejected: {0}")]
    Transfer(TransferError),
    #[error("event differs from what the engine decides for it: {0}")]
    Mismatch(&'static str),
    #[error("pending {0:?} expired before its timeout or was not pending")]
    BadExpiry(TransferId),
}

impl LedgerState {
    pub fn new() -> LedgerState {
        LedgerState::default()
    }

    pub fn account_count(&self) -> u64 {
        self.accounts_total
    }

    pub fn transfer_count(&self) -> u64 {
        self.transfers_total
    }

    pub fn totals(&self) -> &BTreeMap<Currency, CurrencyTotals> {
        &self.totals
    }

    pub fn last_timestamp_ns(&self) -> u64 {
        self.last_timestamp_ns
    }

    pub fn events_applied(&self) -> u64 {
        self.events_applied
    }

    /// The earliest expiry of a hold, if any.
    pub fn next_expiry_ns(&self) -> Option<u64> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// The timestamp the next event gets: strictly after the last, and not before `now`.
    fn next_timestamp(&self, now_ns: u64) -> u64 {
        now_ns.max(self.last_timestamp_ns + 1)
    }

    // ----- Deciding -------------------------------------------------------------------

    pub fn decide_account(&self, command: &AccountCommand, timestamp_ns: u64) -> Result<Option<Event>, AccountError> {
        let kind = match command {
            AccountCommand::Open(new) => {
                check_account_id(new.id)?;
                if new.flags.0 & !AccountFlags::KNOWN != 0 {
                    return Err(AccountError::FlagsUnknown);
                }
                if new.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
                    && new.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
                {
                    return Err(AccountError::FlagsAreMutuallyExclusive);
                }
                if let Some(existing) = self.account(new.id) {
                    let same = existing.currency == new.currency
                        && existing.code == new.code
                        && existing.flags == new.flags
                        && existing.owner_id == new.owner_id;
                    return if same { Ok(None) } else { Err(AccountError::ExistsWithDifferentFields) };
                }
                EventKind::AccountOpened(new.clone())
            }
            AccountCommand::Freeze(id) => {
                match self.existing_account(*id)?.state {
                    AccountState::Open => {}
                    AccountState::Frozen => return Err(AccountError::NotOpen),
                    AccountState::Closed => return Err(AccountError::Closed),
                }
                EventKind::AccountFrozen(*id)
            }
            AccountCommand::Unfreeze(id) => {
                match self.existing_account(*id)?.state {
                    AccountState::Frozen => {}
                    AccountState::Open => return Err(AccountError::NotFrozen),
                    AccountState::Closed => return Err(AccountError::Closed),
                }
                EventKind::AccountUnfrozen(*id)
            }
            AccountCommand::Close(id) => {
                let account = self.existing_account(*id)?;
                if account.state == AccountState::Closed {
                    return Err(AccountError::Closed);
                }
                if account.debits_pending != 0 || account.credits_pending != 0 {
                    return Err(AccountError::HasPendingTransfers);
                }
                if account.debits_posted != account.credits_posted {
                    return Err(AccountError::BalanceNotZero);
                }
                EventKind::AccountClosed(*id)
            }
        };
        Ok(Some(Event { timestamp_ns, kind }))
    }

    fn existing_account(&self, id: AccountId) -> Result<Cow<'_, Account>, AccountError> {
        check_account_id(id)?;
        self.account(id).ok_or(AccountError::NotFound)
    }

    /// Decides one transfer. `Ok(None)` is an idempotent replay of a committed transfer.
    pub fn decide_transfer(&self, command: &NewTransfer, timestamp_ns: u64) -> Result<Option<Event>, TransferError> {
        if command.id.0 == 0 {
            return Err(TransferError::IdMustNotBeZero);
        }
        if command.id.0 == u128::MAX {
            return Err(TransferError::IdMustNotBeMax);
        }
        if let Some(existing) = self.transfer(command.id) {
            return if same_transfer(&existing, command) {
                Ok(None)
            } else {
                Err(TransferError::ExistsWithDifferentFields)
            };
        }
        if command.metadata.len() > METADATA_BYTES_MAX {
            return Err(TransferError::MetadataTooLong);
        }
        let kind = match command.kind {
            TransferKind::Posted => EventKind::TransferPosted(self.decide_new_movement(command)?),
            TransferKind::Pending { timeout_ns } => {
                if timestamp_ns.checked_add(timeout_ns).is_none() {
                    return Err(TransferError::TimeoutOverflow);
                }
                EventKind::TransferPending { movement: self.decide_new_movement(command)?, timeout_ns }
            }
            TransferKind::PostPending { pending_id } => self.decide_resolution(command, pending_id, true)?,
            TransferKind::VoidPending { pending_id } => self.decide_resolution(command, pending_id, false)?,
        };
        Ok(Some(Event { timestamp_ns, kind }))
    }

    fn decide_new_movement(&self, command: &NewTransfer) -> Result<Movement, TransferError> {
        if command.debit_account_id.0 == 0 {
            return Err(TransferError::DebitAccountIdMustNotBeZero);
        }
        if command.credit_account_id.0 == 0 {
            return Err(TransferError::CreditAccountIdMustNotBeZero);
        }
        if command.debit_account_id == command.credit_account_id {
            return Err(TransferError::AccountsMustBeDifferent);
        }
        if command.amount == 0 {
            return Err(TransferError::AmountMustNotBeZero);
        }
        let currency = command.currency.ok_or(TransferError::CurrencyRequired)?;
        let debit = self.account(command.debit_account_id).ok_or(TransferError::DebitAccountNotFound)?;
        let credit = self.account(command.credit_account_id).ok_or(TransferError::CreditAccountNotFound)?;
        if debit.currency != currency {
            return Err(TransferError::CurrencyMismatchDebitAccount);
        }
        if credit.currency != currency {
            return Err(TransferError::CurrencyMismatchCreditAccount);
        }
        if debit.state != AccountState::Open {
            return Err(TransferError::DebitAccountNotOpen);
        }
        if credit.state != AccountState::Open {
            return Err(TransferError::CreditAccountNotOpen);
        }
        let amount = command.amount;
        let debits_total = debit.debits_posted.checked_add(debit.debits_pending).and_then(|d| d.checked_add(amount));
        let credits_total =
            credit.credits_posted.checked_add(credit.credits_pending).and_then(|c| c.checked_add(amount));
        let (Some(debits_total), Some(credits_total)) = (debits_total, credits_total) else {
            return Err(TransferError::Overflow);
        };
        // ok: a currency with no transfer yet has zero totals (not a missing row).
        let totals = self.totals.get(&currency).copied().unwrap_or_default();
        let totals_after = totals.debits_posted.checked_add(totals.debits_pending).and_then(|t| t.checked_add(amount));
        // Every account's totals are bounded by its currency's, so with these at most
        // `TOTAL_MAX` every balance and net (a difference of two totals) fits an i128.
        if totals_after.is_none_or(|total| total > TOTAL_MAX) {
            return Err(TransferError::Overflow);
        }
        if debit.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) && debits_total > debit.credits_posted {
            return Err(TransferError::ExceedsCredits);
        }
        if credit.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS) && credits_total > credit.debits_posted {
            return Err(TransferError::ExceedsDebits);
        }
        Ok(Movement {
            id: command.id,
            debit_account_id: command.debit_account_id,
            credit_account_id: command.credit_account_id,
            amount,
            currency,
            code: command.code,
            metadata: command.metadata.clone(),
            linked: command.linked,
        })
    }

    /// Decides a post (`post` true) or a void of a pending transfer.
    fn decide_resolution(
        &self,
        command: &NewTransfer,
        pending_id: TransferId,
        post: bool,
    ) -> Result<EventKind, TransferError> {
        if pending_id.0 == 0 {
            return Err(TransferError::PendingIdMustNotBeZero);
        }
        if pending_id == command.id {
            return Err(TransferError::PendingIdMustBeDifferent);
        }
        let pending = self.transfer(pending_id).ok_or(TransferError::PendingTransferNotFound)?;
        match pending.pending_status {
            None => return Err(TransferError::PendingTransferNotPending),
            Some(PendingStatus::Pending) => {}
            Some(PendingStatus::Posted { .. }) => return Err(TransferError::PendingTransferAlreadyPosted),
            Some(PendingStatus::Voided { .. }) => return Err(TransferError::PendingTransferAlreadyVoided),
            Some(PendingStatus::Expired) => return Err(TransferError::PendingTransferExpired),
        }
        let held = &pending.movement;
        if command.debit_account_id.0 != 0 && command.debit_account_id != held.debit_account_id {
            return Err(TransferError::PendingTransferHasDifferentDebitAccount);
        }
        if command.credit_account_id.0 != 0 && command.credit_account_id != held.credit_account_id {
            return Err(TransferError::PendingTransferHasDifferentCreditAccount);
        }
        if command.currency.is_some_and(|currency| currency != held.currency) {
            return Err(TransferError::PendingTransferHasDifferentCurrency);
        }
        let movement = |amount| Movement {
            id: command.id,
            debit_account_id: held.debit_account_id,
            credit_account_id: held.credit_account_id,
            amount,
            currency: held.currency,
            code: command.code,
            metadata: command.metadata.clone(),
            linked: command.linked,
        };
        if !post {
            if command.amount != 0 && command.amount != held.amount {
                return Err(TransferError::VoidAmountMustMatchPending);
            }
            return Ok(EventKind::PendingVoided { movement: movement(held.amount), pending_id });
        }
        if command.amount > held.amount {
            return Err(TransferError::ExceedsPendingAmount);
        }
        let state_of = |id| self.account(id).map(|account| account.state);
        if state_of(held.debit_account_id) != Some(AccountState::Open) {
            return Err(TransferError::DebitAccountNotOpen);
        }
        if state_of(held.credit_account_id) != Some(AccountState::Open) {
            return Err(TransferError::CreditAccountNotOpen);
        }
        let amount = if command.amount == 0 { held.amount } else { command.amount };
        Ok(EventKind::PendingPosted { movement: movement(amount), pending_id, pending_amount: held.amount })
    }

    // ----- Evolving -------------------------------------------------------------------

    /// Folds one event into the state. The event must have been decided against this
    /// state (or checked by [`LedgerState::check_event`]); a violation here is a bug,
    /// so it panics rather than corrupt balances.
    pub fn evolve(&mut self, event: &Event) {
        assert!(event.timestamp_ns > self.last_timestamp_ns, "event timestamps must increase");
        self.record(Undo::Clock { last_timestamp_ns: self.last_timestamp_ns, events_applied: self.events_applied });
        self.last_timestamp_ns = event.timestamp_ns;
        self.events_applied += 1;
        match &event.kind {
            EventKind::AccountOpened(new) => {
                self.record(Undo::Account(new.id, None));
                let account = Account {
                    id: new.id,
                    currency: new.currency,
                    code: new.code,
                    flags: new.flags,
                    owner_id: new.owner_id,
                    state: AccountState::Open,
                    debits_pending: 0,
                    debits_posted: 0,
                    credits_pending: 0,
                    credits_posted: 0,
                    timestamp_ns: event.timestamp_ns,
                };
                assert!(self.account(new.id).is_none(), "account opened twice");
                self.accounts.insert(new.id, account);
                self.dirty_accounts.insert(new.id);
                self.accounts_total += 1;
            }
            EventKind::AccountFrozen(id) => self.set_account_state(*id, AccountState::Frozen),
            EventKind::AccountUnfrozen(id) => self.set_account_state(*id, AccountState::Open),
            EventKind::AccountClosed(id) => self.set_account_state(*id, AccountState::Closed),
            EventKind::TransferPosted(movement) => {
                self.move_balances(movement.debit_account_id, movement.credit_account_id, movement.currency, |b| {
                    b.posted_add = movement.amount;
                });
                self.insert_transfer(movement, TransferKind::Posted, event.timestamp_ns, 0, None);
            }
            EventKind::TransferPending { movement, timeout_ns } => {
                self.move_balances(movement.debit_account_id, movement.credit_account_id, movement.currency, |b| {
                    b.pending_add = movement.amount;
                });
                let expires_at_ns = if *timeout_ns == 0 { 0 } else { event.timestamp_ns + timeout_ns };
                let kind = TransferKind::Pending { timeout_ns: *timeout_ns };
                self.insert_transfer(movement, kind, event.timestamp_ns, expires_at_ns, Some(PendingStatus::Pending));
                if expires_at_ns != 0 {
                    self.record(Undo::ExpiryInserted(expires_at_ns, movement.id));
                    self.expiries.insert((expires_at_ns, movement.id));
                }
            }
            EventKind::PendingPosted { movement, pending_id, pending_amount } => {
                self.resolve_pending(*pending_id, PendingStatus::Posted { amount: movement.amount, by: movement.id });
                self.move_balances(movement.debit_account_id, movement.credit_account_id, movement.currency, |b| {
                    b.pending_sub = *pending_amount;
                    b.posted_add = movement.amount;
                });
                let kind = TransferKind::PostPending { pending_id: *pending_id };
                self.insert_transfer(movement, kind, event.timestamp_ns, 0, None);
            }
            EventKind::PendingVoided { movement, pending_id } => {
                self.resolve_pending(*pending_id, PendingStatus::Voided { by: movement.id });
                self.move_balances(movement.debit_account_id, movement.credit_account_id, movement.currency, |b| {
                    b.pending_sub = movement.amount;
                });
                let kind = TransferKind::VoidPending { pending_id: *pending_id };
                self.insert_transfer(movement, kind, event.timestamp_ns, 0, None);
            }
            EventKind::PendingExpired { pending_id, debit_account_id, credit_account_id, pending_amount, currency } => {
                self.resolve_pending(*pending_id, PendingStatus::Expired);
                self.move_balances(*debit_account_id, *credit_account_id, *currency, |b| {
                    b.pending_sub = *pending_amount;
                });
            }
        }
    }

    fn journaling(&self) -> bool {
        self.journal.is_some()
    }

    fn record(&mut self, undo: Undo) {
        if let Some(journal) = self.journal.as_mut() {
            journal.push(undo);
        }
    }

    fn set_account_state(&mut self, id: AccountId, state: AccountState) {
        let previous = self.account(id).map(Cow::into_owned);
        assert!(previous.is_some(), "state change of a missing account");
        self.record(Undo::Account(id, previous));
        if let Some(account) = self.account_mut(id) {
            account.state = state;
        }
    }

    fn insert_transfer(
        &mut self,
        movement: &Movement,
        kind: TransferKind,
        timestamp_ns: u64,
        expires_at_ns: u64,
        pending_status: Option<PendingStatus>,
    ) {
        self.record(Undo::Transfer(movement.id, None));
        let transfer = Transfer { movement: movement.clone(), kind, timestamp_ns, expires_at_ns, pending_status };
        // `evolve` has counted the event: its revision is one less.
        let revision = self.events_applied - 1;
        let stored = StoredTransfer { transfer, created: revision, changed: revision };
        let inserted = self.transfers.insert_new(movement.id, stored);
        assert!(inserted, "transfer id committed twice");
        self.transfers_total += 1;
    }

    fn resolve_pending(&mut self, pending_id: TransferId, status: PendingStatus) {
        // `evolve` has counted the event: the hold as it was before it.
        let Some(previous) = self.stored_before(pending_id, self.events_applied - 1) else {
            panic!("resolution of a missing pending transfer")
        };
        let previous = previous.into_owned();
        assert_eq!(previous.transfer.pending_status, Some(PendingStatus::Pending), "pending resolved twice");
        let expires_at_ns = previous.transfer.expires_at_ns;
        if expires_at_ns != 0 {
            self.record(Undo::ExpiryRemoved(expires_at_ns, pending_id));
            self.expiries.remove(&(expires_at_ns, pending_id));
        }
        let mut resolved = previous.clone();
        resolved.transfer.pending_status = Some(status);
        resolved.changed = self.events_applied - 1;
        self.record(Undo::Transfer(pending_id, Some(previous)));
        self.transfers.insert(pending_id, resolved);
    }

    /// Applies the same change to the debit side of one account and the credit side of
    /// the other, and to the currency's totals: the double entry.
    fn move_balances(
        &mut self,
        debit_id: AccountId,
        credit_id: AccountId,
        currency: Currency,
        change: impl FnOnce(&mut BalanceChange),
    ) {
        let mut delta = BalanceChange::default();
        change(&mut delta);
        if self.journaling() {
            let debit_before = self.account(debit_id).map(Cow::into_owned);
            let credit_before = self.account(credit_id).map(Cow::into_owned);
            self.record(Undo::Account(debit_id, debit_before));
            self.record(Undo::Account(credit_id, credit_before));
            self.record(Undo::Totals(currency, self.totals.get(&currency).copied()));
        }
        let debit = self.account_mut(debit_id).expect("decided transfers name existing accounts");
        debit.debits_pending = apply_delta(debit.debits_pending, &delta, Side::Pending);
        debit.debits_posted = apply_delta(debit.debits_posted, &delta, Side::Posted);
        let credit = self.account_mut(credit_id).expect("decided transfers name existing accounts");
        credit.credits_pending = apply_delta(credit.credits_pending, &delta, Side::Pending);
        credit.credits_posted = apply_delta(credit.credits_posted, &delta, Side::Posted);
        let totals = self.totals.entry(currency).or_default();
        totals.debits_pending = apply_delta(totals.debits_pending, &delta, Side::Pending);
        totals.credits_pending = apply_delta(totals.credits_pending, &delta, Side::Pending);
        totals.debits_posted = apply_delta(totals.debits_posted, &delta, Side::Posted);
        totals.credits_posted = apply_delta(totals.credits_posted, &delta, Side::Posted);
        // Double entry is the ledger's first invariant: a state that breaks it must never
        // answer another request (two comparisons per transfer; in release builds too).
        assert!(totals.is_balanced(), "double entry broken for {currency}");
    }

    fn undo(&mut self, journal: Vec<Undo>) {
        for undo in journal.into_iter().rev() {
            match undo {
                Undo::Account(id, Some(account)) => {
                    self.accounts.insert(id, account);
                    self.dirty_accounts.insert(id);
                }
                Undo::Account(id, None) => {
                    // Only an opening records it: the account was not there before.
                    self.dirty_accounts.remove(&id);
                    if self.accounts.remove(&id).is_some() && self.account(id).is_none() {
                        self.accounts_total -= 1;
                    }
                }
                Undo::Transfer(id, Some(stored)) => {
                    self.transfers.insert(id, stored);
                }
                Undo::Transfer(id, None) => {
                    // The newest transfer of the first tier, so the last entry: removed
                    // without moving another.
                    let removed = self.transfers.remove(&id);
                    assert!(removed.is_some(), "undo of a transfer not made");
                    self.transfers_total -= 1;
                }
                Undo::ExpiryInserted(at, id) => {
                    self.expiries.remove(&(at, id));
                }
                Undo::ExpiryRemoved(at, id) => {
                    self.expiries.insert((at, id));
                }
                Undo::Totals(currency, Some(totals)) => {
                    self.totals.insert(currency, totals);
                }
                Undo::Totals(currency, None) => {
                    self.totals.remove(&currency);
                }
                Undo::Clock { last_timestamp_ns, events_applied } => {
                    self.last_timestamp_ns = last_timestamp_ns;
                    self.events_applied = events_applied;
                }
            }
        }
    }

    // ----- Executing batches ----------------------------------------------------------

    /// Expires every hold whose timeout is at or before `now_ns`, appending the events.
    pub fn expire_due(&mut self, now_ns: u64, events: &mut Vec<Event>) {
        while let Some(&(expires_at_ns, pending_id)) = self.expiries.first() {
            if expires_at_ns > now_ns {
                break;
            }
            let held = self.transfer(pending_id).expect("every expiry names a held transfer").into_owned().movement;
            let kind = EventKind::PendingExpired {
                pending_id,
                debit_account_id: held.debit_account_id,
                credit_account_id: held.credit_account_id,
                pending_amount: held.amount,
                currency: held.currency,
            };
            let event = Event { timestamp_ns: self.next_timestamp(now_ns), kind };
            self.evolve(&event);
            events.push(event);
        }
    }

    /// Runs account commands in order; each succeeds or fails alone.
    pub fn execute_accounts(
        &mut self,
        commands: &[AccountCommand],
        now_ns: u64,
        events: &mut Vec<Event>,
    ) -> Vec<AccountResult> {
        commands
            .iter()
            .map(|command| {
                let timestamp_ns = self.next_timestamp(now_ns);
                match self.decide_account(command, timestamp_ns)? {
                    Some(event) => {
                        self.evolve(&event);
                        events.push(event);
                        Ok(Outcome::Created { timestamp_ns })
                    }
                    None => Ok(Outcome::AlreadyExists { timestamp_ns: self.existing_account_timestamp(command) }),
                }
            })
            .collect()
    }

    fn existing_account_timestamp(&self, command: &AccountCommand) -> u64 {
        match command {
            AccountCommand::Open(new) => self.account(new.id).map_or(0, |account| account.timestamp_ns),
            _ => 0,
        }
    }

    /// Runs a batch of transfers in order. A linked chain (members with `linked` set,
    /// closed by the first member without it) commits all or nothing; every other
    /// transfer succeeds or fails alone. Events of committed transfers are appended.
    pub fn execute_transfers(
        &mut self,
        commands: &[NewTransfer],
        now_ns: u64,
        events: &mut Vec<Event>,
    ) -> Vec<TransferResult> {
        self.load_accounts(commands);
        let mut results = Vec::with_capacity(commands.len());
        let mut chain_start: Option<(usize, usize)> = None; // (first command, first event)
        for (index, command) in commands.iter().enumerate() {
            if command.linked && chain_start.is_none() {
                chain_start = Some((index, events.len()));
                self.journal = Some(Vec::new());
            }
            if let Some((first, _)) = chain_start {
                if results.len() > first && results[first..].iter().any(|r: &TransferResult| r.is_err()) {
                    results.push(Err(TransferError::LinkedEventFailed));
                    if !command.linked {
                        chain_start = None;
                    }
                    continue;
                }
            }
            let open_at_end = command.linked && index + 1 == commands.len();
            let result = if open_at_end {
                Err(TransferError::LinkedEventChainOpen)
            } else {
                self.execute_one(command, now_ns, events)
            };
            let failed = result.is_err();
            results.push(result);
            if let Some((first, first_event)) = chain_start {
                if failed {
                    // ok: no journal means nothing was recorded to undo.
                    let journal = self.journal.take().unwrap_or_default();
                    self.undo(journal);
                    events.truncate(first_event);
                    for earlier in &mut results[first..index] {
                        *earlier = Err(TransferError::LinkedEventFailed);
                    }
                }
                if !command.linked || failed {
                    self.journal = None;
                    if !command.linked {
                        chain_start = None;
                    }
                }
            }
        }
        self.journal = None;
        results
    }

    fn execute_one(&mut self, command: &NewTransfer, now_ns: u64, events: &mut Vec<Event>) -> TransferResult {
        let timestamp_ns = self.next_timestamp(now_ns);
        match self.decide_transfer(command, timestamp_ns)? {
            Some(event) => {
                self.evolve(&event);
                events.push(event);
                Ok(Outcome::Created { timestamp_ns })
            }
            None => {
                Ok(Outcome::AlreadyExists { timestamp_ns: self.transfer(command.id).map_or(0, |t| t.timestamp_ns) })
            }
        }
    }

    // ----- Checking a log -------------------------------------------------------------

    /// Checks that `event` is exactly what the engine would record at this point, then
    /// folds it in. Used by replay from an untrusted log and by the auditor.
    pub fn check_and_evolve(&mut self, event: &Event) -> Result<(), ReplayError> {
        if event.timestamp_ns <= self.last_timestamp_ns {
            return Err(ReplayError::TimestampNotIncreasing {
                timestamp_ns: event.timestamp_ns,
                previous_ns: self.last_timestamp_ns,
            });
        }
        let decided = match &event.kind {
            EventKind::AccountOpened(new) => self
                .decide_account(&AccountCommand::Open(new.clone()), event.timestamp_ns)
                .map_err(ReplayError::Account)?,
            EventKind::AccountFrozen(id) => {
                self.decide_account(&AccountCommand::Freeze(*id), event.timestamp_ns).map_err(ReplayError::Account)?
            }
            EventKind::AccountUnfrozen(id) => {
                self.decide_account(&AccountCommand::Unfreeze(*id), event.timestamp_ns).map_err(ReplayError::Account)?
            }
            EventKind::AccountClosed(id) => {
                self.decide_account(&AccountCommand::Close(*id), event.timestamp_ns).map_err(ReplayError::Account)?
            }
            EventKind::TransferPosted(m) => self.redecide(m, TransferKind::Posted, event.timestamp_ns)?,
            EventKind::TransferPending { movement, timeout_ns } => {
                self.redecide(movement, TransferKind::Pending { timeout_ns: *timeout_ns }, event.timestamp_ns)?
            }
            EventKind::PendingPosted { movement, pending_id, .. } => {
                self.redecide(movement, TransferKind::PostPending { pending_id: *pending_id }, event.timestamp_ns)?
            }
            EventKind::PendingVoided { movement, pending_id } => {
                self.redecide(movement, TransferKind::VoidPending { pending_id: *pending_id }, event.timestamp_ns)?
            }
            EventKind::PendingExpired { pending_id, .. } => {
                let transfer = self.transfer(*pending_id).ok_or(ReplayError::BadExpiry(*pending_id))?;
                let due = transfer.expires_at_ns != 0 && transfer.expires_at_ns <= event.timestamp_ns;
                if !due || transfer.pending_status != Some(PendingStatus::Pending) {
                    return Err(ReplayError::BadExpiry(*pending_id));
                }
                let held = &transfer.movement;
                Some(Event {
                    timestamp_ns: event.timestamp_ns,
                    kind: EventKind::PendingExpired {
                        pending_id: *pending_id,
                        debit_account_id: held.debit_account_id,
                        credit_account_id: held.credit_account_id,
                        pending_amount: held.amount,
                        currency: held.currency,
                    },
                })
            }
        };
        match decided {
            Some(decided) if decided == *event => {
                self.evolve(event);
                Ok(())
            }
            Some(_) => Err(ReplayError::Mismatch("recorded fields differ from the decided ones")),
            None => Err(ReplayError::Mismatch("the log records the same item twice")),
        }
    }

    fn redecide(
        &self,
        movement: &Movement,
        kind: TransferKind,
        timestamp_ns: u64,
    ) -> Result<Option<Event>, ReplayError> {
        let command = NewTransfer {
            id: movement.id,
            debit_account_id: movement.debit_account_id,
            credit_account_id: movement.credit_account_id,
            amount: movement.amount,
            currency: Some(movement.currency),
            code: movement.code,
            metadata: movement.metadata.clone(),
            linked: movement.linked,
            kind,
        };
        self.decide_transfer(&command, timestamp_ns).map_err(ReplayError::Transfer)
    }
}

#[derive(Default)]
struct BalanceChange {
    posted_add: u128,
    pending_add: u128,
    pending_sub: u128,
}

enum Side {
    Posted,
    Pending,
}

fn apply_delta(value: u128, delta: &BalanceChange, side: Side) -> u128 {
    let result = match side {
        Side::Posted => value.checked_add(delta.posted_add),
        Side::Pending => value.checked_add(delta.pending_add).and_then(|v| v.checked_sub(delta.pending_sub)),
    };
    result.expect("decide rules out overflow and releasing more than is pending")
}

fn check_account_id(id: AccountId) -> Result<(), AccountError> {
    match id.0 {
        0 => Err(AccountError::IdMustNotBeZero),
        u128::MAX => Err(AccountError::IdMustNotBeMax),
        _ => Ok(()),
    }
}

/// Whether a resubmitted command is the same as the committed transfer. Fields that a
/// post or void may leave empty ("as in the pending") match the resolved value.
fn same_transfer(existing: &Transfer, command: &NewTransfer) -> bool {
    let m = &existing.movement;
    let resolves = matches!(command.kind, TransferKind::PostPending { .. } | TransferKind::VoidPending { .. });
    let account_matches = |given: AccountId, recorded: AccountId| given == recorded || (resolves && given.0 == 0);
    existing.kind == command.kind
        && account_matches(command.debit_account_id, m.debit_account_id)
        && account_matches(command.credit_account_id, m.credit_account_id)
        && (command.amount == m.amount || (resolves && command.amount == 0))
        && (command.currency == Some(m.currency) || (resolves && command.currency.is_none()))
        && command.code == m.code
        && command.metadata == m.metadata
        && command.linked == m.linked
}
