//! Domain types: ids, accounts, transfers, the commands that create them, the events
//! they produce and the per-item results. Nothing here knows about storage or
//! transport; wire types are converted at the edges.

use serde::{Deserialize, Serialize};

use crate::money::Currency;

/// Longest metadata string a transfer may carry, in bytes of UTF-8.
pub const METADATA_BYTES_MAX: usize = 256;

/// A caller-chosen account id. 0 and `u128::MAX` are reserved and rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct AccountId(pub u128);

/// A caller-chosen transfer id. 0 and `u128::MAX` are reserved and rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct TransferId(pub u128);

/// Account flags, a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub struct AccountFlags(pub u32);

impl AccountFlags {
    /// Posted plus pending debits must never exceed posted credits: no overdraft.
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: AccountFlags = AccountFlags(1);
    /// Posted plus pending credits must never exceed posted debits.
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: AccountFlags = AccountFlags(2);
    pub(crate) const KNOWN: u32 = 1 | 2;

    pub fn contains(self, other: AccountFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// The life-cycle state of an account.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum AccountState {
    /// Takes part in transfers.
    Open,
    /// No new transfers and no posting of holds; holds may still be voided or expire.
    Frozen,
    /// Permanently out of use; it had zero balance and no holds when closed.
    Closed,
}

/// The fields a caller gives to open an account.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NewAccount {
    pub id: AccountId,
    pub currency: Currency,
    pub code: u16,
    pub flags: AccountFlags,
    /// Opaque reference to the owner: a user id, or 0 for the platform's own accounts.
    pub owner_id: u128,
}

/// An account with its balances, in minor units of its currency.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub currency: Currency,
    pub code: u16,
    pub flags: AccountFlags,
    pub owner_id: u128,
    pub state: AccountState,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    /// When the account was opened (nanoseconds since the Unix epoch).
    pub timestamp_ns: u64,
}

impl Account {
    /// Posted credits minus posted debits: what an asset holder's wallet shows. The
    /// decider keeps every total at most `state::TOTAL_MAX` (= `i128::MAX`), so the
    /// conversions and the difference cannot fail for an account it built; one that
    /// breaks that is a broken invariant, and the process stops.
    pub fn balance_credit_normal(&self) -> i128 {
        let credits = i128::try_from(self.credits_posted).expect("account totals are at most TOTAL_MAX");
        let debits = i128::try_from(self.debits_posted).expect("account totals are at most TOTAL_MAX");
        credits - debits
    }
}

/// A command on an account.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AccountCommand {
    Open(NewAccount),
    Freeze(AccountId),
    Unfreeze(AccountId),
    Close(AccountId),
}

/// What kind of movement a transfer command asks for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum TransferKind {
    /// Moves the amount at once.
    Posted,
    /// Holds the amount until posted, voided or expired. `timeout_ns` 0 never expires.
    Pending { timeout_ns: u64 },
    /// Posts a pending transfer, fully (amount 0) or partly (amount > 0).
    PostPending { pending_id: TransferId },
    /// Voids a pending transfer, releasing the whole amount.
    VoidPending { pending_id: TransferId },
}

/// A transfer as a caller submits it.
///
/// For `PostPending` and `VoidPending`, a zero account id, a `None` currency and a zero
/// amount mean "as in the pending transfer"; any other value must match it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewTransfer {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount: u128,
    pub currency: Option<Currency>,
    pub code: u16,
    pub metadata: String,
    /// Links this transfer with the next one in the batch: a chain commits all or none.
    pub linked: bool,
    pub kind: TransferKind,
}

/// The resolved facts of a movement, as recorded in its event.
#[derive(Clone, Eq, Debug, Serialize, Deserialize)]
pub struct Movement {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount: u128,
    pub currency: Currency,
    pub code: u16,
    pub metadata: String,
    pub linked: bool,
}

impl PartialEq for Movement {
    /// Field by field, as derived, but two empty metadata texts (the common case) are
    /// equal without a call to compare bytes: a replay compares every movement it
    /// re-decides, and that call was some 9% of an audit's replay.
    fn eq(&self, other: &Movement) -> bool {
        let Movement { id, debit_account_id, credit_account_id, amount, currency, code, metadata, linked } = self;
        *id == other.id
            && *debit_account_id == other.debit_account_id
            && *credit_account_id == other.credit_account_id
            && *amount == other.amount
            && *currency == other.currency
            && *code == other.code
            && *linked == other.linked
            && metadata.len() == other.metadata.len()
            && (metadata.is_empty() || *metadata == other.metadata)
    }
}

/// Where a pending transfer stands; once resolved by a post or a void, with the id of
/// the transfer that resolved it (an expiry has no transfer of its own).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum PendingStatus {
    Pending,
    Posted { amount: u128, by: TransferId },
    Voided { by: TransferId },
    Expired,
}

impl PendingStatus {
    /// The transfer that posted or voided the hold, if one did.
    pub fn resolved_by(self) -> Option<TransferId> {
        match self {
            PendingStatus::Posted { by, .. } | PendingStatus::Voided { by } => Some(by),
            PendingStatus::Pending | PendingStatus::Expired => None,
        }
    }
}

/// A committed transfer, kept for lookups, idempotent replay and resolving holds.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Transfer {
    pub movement: Movement,
    pub kind: TransferKind,
    pub timestamp_ns: u64,
    /// For a pending transfer: its expiry (0 = never) and status.
    pub expires_at_ns: u64,
    pub pending_status: Option<PendingStatus>,
}

/// One immutable fact of the ledger. `timestamp_ns` is unique within a partition.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Event {
    pub timestamp_ns: u64,
    pub kind: EventKind,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum EventKind {
    AccountOpened(NewAccount),
    AccountFrozen(AccountId),
    AccountUnfrozen(AccountId),
    AccountClosed(AccountId),
    TransferPosted(Movement),
    TransferPending {
        movement: Movement,
        timeout_ns: u64,
    },
    /// `movement.amount` is the posted amount; the rest of `pending_amount` is released.
    PendingPosted {
        movement: Movement,
        pending_id: TransferId,
        pending_amount: u128,
    },
    /// `movement.amount` is the released pending amount.
    PendingVoided {
        movement: Movement,
        pending_id: TransferId,
    },
    PendingExpired {
        pending_id: TransferId,
        debit_account_id: AccountId,
        credit_account_id: AccountId,
        pending_amount: u128,
        currency: Currency,
    },
}

impl EventKind {
    /// The event type name, as stored beside the event in the log.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::AccountOpened(_) => "AccountOpened",
            EventKind::AccountFrozen(_) => "AccountFrozen",
            EventKind::AccountUnfrozen(_) => "AccountUnfrozen",
            EventKind::AccountClosed(_) => "AccountClosed",
            EventKind::TransferPosted(_) => "TransferPosted",
            EventKind::TransferPending { .. } => "TransferPending",
            EventKind::PendingPosted { .. } => "PendingPosted",
            EventKind::PendingVoided { .. } => "PendingVoided",
            EventKind::PendingExpired { .. } => "PendingExpired",
        }
    }
}

/// Success of one item of a batch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// Committed by this request at this timestamp.
    Created { timestamp_ns: u64 },
    /// The same item was committed before: the original result is returned, nothing
    /// changes.
    AlreadyExists { timestamp_ns: u64 },
}

/// Why one account command was rejected. Nothing was changed for it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AccountError {
    #[error("account id must not be zero")]
    IdMustNotBeZero,
    #[error("account id must not be 2^128-1 (reserved)")]
    IdMustNotBeMax,
    #[error("unknown account flags bits")]
    FlagsUnknown,
    #[error("flags debits_must_not_exceed_credits and credits_must_not_exceed_debits are mutually exclusive")]
    FlagsAreMutuallyExclusive,
    #[error("an account with this id exists with different fields")]
    ExistsWithDifferentFields,
    #[error("account not found")]
    NotFound,
    #[error("account is not open")]
    NotOpen,
    #[error("account is not frozen")]
    NotFrozen,
    #[error("account is closed")]
    Closed,
    #[error("account has pending transfers; post or void them first")]
    HasPendingTransfers,
    #[error("account balance is not zero; move the money out first")]
    BalanceNotZero,
}

/// Why one transfer was rejected. Nothing was changed for it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum TransferError {
    #[error("a transfer linked with this one failed")]
    LinkedEventFailed,
    #[error("the last transfer of the batch is linked: the chain is never closed")]
    LinkedEventChainOpen,
    #[error("transfer id must not be zero")]
    IdMustNotBeZero,
    #[error("transfer id must not be 2^128-1 (reserved)")]
    IdMustNotBeMax,
    #[error("a transfer with this id exists with different fields")]
    ExistsWithDifferentFields,
    #[error("debit account id must not be zero")]
    DebitAccountIdMustNotBeZero,
    #[error("credit account id must not be zero")]
    CreditAccountIdMustNotBeZero,
    #[error("debit and credit accounts must be different")]
    AccountsMustBeDifferent,
    #[error("amount must not be zero")]
    AmountMustNotBeZero,
    #[error("currency is required")]
    CurrencyRequired,
    #[error("metadata is longer than 256 bytes")]
    MetadataTooLong,
    #[error("debit account not found")]
    DebitAccountNotFound,
    #[error("credit account not found")]
    CreditAccountNotFound,
    #[error("transfer currency differs from the debit account's currency")]
    CurrencyMismatchDebitAccount,
    #[error("transfer currency differs from the credit account's currency")]
    CurrencyMismatchCreditAccount,
    #[error("debit account is not open (frozen or closed)")]
    DebitAccountNotOpen,
    #[error("credit account is not open (frozen or closed)")]
    CreditAccountNotOpen,
    #[error("debits would exceed credits on the debit account")]
    ExceedsCredits,
    #[error("credits would exceed debits on the credit account")]
    ExceedsDebits,
    #[error("a balance would overflow")]
    Overflow,
    #[error("timeout would overflow the timestamp")]
    TimeoutOverflow,
    #[error("pending id must not be zero")]
    PendingIdMustNotBeZero,
    #[error("pending id must differ from the transfer's own id")]
    PendingIdMustBeDifferent,
    #[error("pending transfer not found")]
    PendingTransferNotFound,
    #[error("the referenced transfer is not pending")]
    PendingTransferNotPending,
    #[error("pending transfer already posted")]
    PendingTransferAlreadyPosted,
    #[error("pending transfer already voided")]
    PendingTransferAlreadyVoided,
    #[error("pending transfer expired")]
    PendingTransferExpired,
    #[error("debit account differs from the pending transfer's")]
    PendingTransferHasDifferentDebitAccount,
    #[error("credit account differs from the pending transfer's")]
    PendingTransferHasDifferentCreditAccount,
    #[error("currency differs from the pending transfer's")]
    PendingTransferHasDifferentCurrency,
    #[error("amount exceeds the pending amount")]
    ExceedsPendingAmount,
    #[error("a void must release the whole pending amount (give 0 or the pending amount)")]
    VoidAmountMustMatchPending,
}

pub type AccountResult = Result<Outcome, AccountError>;
pub type TransferResult = Result<Outcome, TransferError>;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn movement() -> impl Strategy<Value = Movement> {
        let texts = prop_oneof![Just(String::new()), Just("a".to_string()), Just("b".to_string())];
        (0..3u128, 0..2u128, 0..2u128, 0..3u128, 0..2u16, 0..2u16, texts, any::<bool>()).prop_map(
            |(id, debit, credit, amount, currency, code, metadata, linked)| Movement {
                id: TransferId(id),
                debit_account_id: AccountId(debit),
                credit_account_id: AccountId(credit),
                amount,
                currency: if currency == 0 { Currency::FIRST } else { Currency::parse("USD").expect("USD") },
                code,
                metadata,
                linked,
            },
        )
    }

    proptest! {
        /// Movements are equal exactly when every field is.
        #[test]
        fn movements_are_equal_when_every_field_is(a in movement(), b in movement()) {
            let fields = |m: &Movement| {
                (m.id, m.debit_account_id, m.credit_account_id, m.amount, m.currency, m.code, m.metadata.clone(), m.linked)
            };
            prop_assert_eq!(a == b, fields(&a) == fields(&b));
            prop_assert!(a == a.clone());
        }
    }
}
