//! The platform's chart of accounts in the ledger: account and transfer codes, ids
//! derived from what they stand for (so opening an account or booking a step again is
//! a no-op, and needs no lookup), and the platform's own accounts, opened once per
//! currency.

use dashmap::DashMap;
use ledger_core::domain::{Account, AccountCommand, AccountError, AccountId, NewAccount, NewTransfer, TransferError};
use ledger_core::money::Currency;

use crate::engine::{Ledger, LedgerError};

/// Ledger account code of user wallets.
pub const WALLET_ACCOUNT_CODE: u16 = 1000;
/// Ledger transfer code of payment movements.
pub const PAYMENT_TRANSFER_CODE: u16 = 2000;
/// Ledger transfer code of conversions.
pub const FX_TRANSFER_CODE: u16 = 2100;
/// Ledger account code of the platform's accounts (fees, clearing, external, FX).
pub const PLATFORM_ACCOUNT_CODE: u16 = 3000;
/// The rails money comes from and goes to, each with a clearing and an external account.
pub const RAILS: [&str; 3] = ["bank_account", "card", "digital_wallet"];

/// A ledger id (never 0 or 2^128-1, both reserved by the ledger) derived from its parts.
pub fn derive_id(parts: &[&[u8]]) -> u128 {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    u128::from_le_bytes(first_16(hasher.finalize().as_bytes())).clamp(1, u128::MAX - 1)
}

/// Looks accounts up in the ledger, in order. No ids is no accounts: the ledger refuses
/// an empty request, and a user without wallets (or a book without currencies) is
/// an ordinary case, not a bad request.
pub async fn lookup_accounts(ledger: &Ledger, ids: Vec<AccountId>) -> Result<Vec<Option<Account>>, LedgerError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    ledger.lookup_accounts(ids).await
}

/// The first refusal among a batch's results with the transfer it refused (a linked
/// chain's other members fail only because of it, and say nothing of their own).
pub fn first_refusal<'a, T>(
    transfers: &'a [NewTransfer],
    results: &'a [Result<T, TransferError>],
) -> Option<(&'a NewTransfer, &'a TransferError)> {
    transfers.iter().zip(results).find_map(|(transfer, result)| match result {
        Err(TransferError::LinkedEventFailed) | Ok(_) => None,
        Err(error) => Some((transfer, error)),
    })
}

/// A ledger refusal of `transfer` in words its users understand, after a stable,
/// machine-readable code: `code: words`. `whose` names the owner of an account the way
/// the reader knows it ("your", "the sender's"), `None` for one of the platform's.
pub fn refusal_reason(
    transfer: &NewTransfer,
    error: &TransferError,
    whose: impl Fn(AccountId) -> Option<&'static str>,
) -> String {
    let currency = transfer.currency.map_or(String::new(), |c| format!("{} ", c.code()));
    let wallet = |id: AccountId| match whose(id) {
        Some(owner) => format!("{owner} {currency}wallet"),
        None => format!("the platform's {currency}account"),
    };
    let (debit, credit) = (transfer.debit_account_id, transfer.credit_account_id);
    match error {
        TransferError::ExceedsCredits => format!("insufficient_funds: insufficient funds in {}", wallet(debit)),
        TransferError::DebitAccountNotOpen => format!("wallet_unavailable: {} is frozen or closed", wallet(debit)),
        TransferError::CreditAccountNotOpen => format!("wallet_unavailable: {} is frozen or closed", wallet(credit)),
        TransferError::DebitAccountNotFound => format!("wallet_missing: {} does not exist", wallet(debit)),
        TransferError::CreditAccountNotFound => format!("wallet_missing: {} does not exist", wallet(credit)),
        TransferError::Overflow | TransferError::ExceedsDebits => {
            format!("amount_too_large: the amount cannot be booked into {}", wallet(credit))
        }
        other => format!("ledger_refused: {other}"),
    }
}

/// A platform account: `fee`, `clearing:{rail}`, `external:{rail}`, `fx`, `fx-revenue`
/// per currency.
pub fn platform_account(name: &str, currency: Currency) -> u128 {
    derive_id(&[b"ledger.platform.v1", name.as_bytes(), currency.code().as_bytes()])
}

/// The ledger account of a user's wallet in a currency.
pub fn wallet_account_id(user_id: u128, currency: Currency) -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"ledger.wallet.v1");
    hasher.update(&user_id.to_le_bytes());
    hasher.update(currency.code().as_bytes());
    u128::from_le_bytes(first_16(hasher.finalize().as_bytes())).clamp(1, u128::MAX - 1)
}

fn first_16(hash: &[u8; 32]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    bytes
}

/// Why platform accounts could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The ledger refused one (for example an account of that id with other settings).
    #[error("{0}")]
    Refused(AccountError),
}

/// A set of platform accounts, opened in each currency the first time it is needed.
/// Opening is idempotent in the ledger; remembering what is open saves the round trip.
pub struct PlatformAccounts {
    names: Vec<String>,
    opened: DashMap<Currency, ()>,
}

impl PlatformAccounts {
    pub fn new(names: Vec<String>) -> PlatformAccounts {
        PlatformAccounts { names, opened: DashMap::new() }
    }

    /// What payments book through: the fee account, and a clearing and an external
    /// account per rail.
    pub fn payments() -> PlatformAccounts {
        let mut names = vec!["fee".to_string()];
        for rail in RAILS {
            names.push(format!("clearing:{rail}"));
            names.push(format!("external:{rail}"));
        }
        PlatformAccounts::new(names)
    }

    /// What conversions book through: the FX position, the spread earned and the fee.
    pub fn fx() -> PlatformAccounts {
        PlatformAccounts::new(vec!["fx".into(), "fx-revenue".into(), "fee".into()])
    }

    /// The currencies opened since the start of the process.
    pub fn opened(&self) -> Vec<Currency> {
        self.opened.iter().map(|e| *e.key()).collect()
    }

    /// Opens the accounts in every currency of `currencies` not opened yet, in one
    /// batch.
    pub async fn ensure(&self, ledger: &Ledger, currencies: &[Currency]) -> Result<(), OpenError> {
        let mut commands = Vec::new();
        for &currency in currencies {
            if self.opened.contains_key(&currency) {
                continue;
            }
            for name in &self.names {
                commands.push(AccountCommand::Open(NewAccount {
                    id: AccountId(platform_account(name, currency)),
                    currency,
                    code: PLATFORM_ACCOUNT_CODE,
                    flags: Default::default(),
                    owner_id: 0,
                }));
            }
        }
        if commands.is_empty() {
            return Ok(());
        }
        let results = ledger.create_accounts(commands).await?;
        if let Some(Err(error)) = results.into_iter().find(|r| r.is_err()) {
            return Err(OpenError::Refused(error));
        }
        for &currency in currencies {
            self.opened.insert(currency, ());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_never_reserved() {
        let usd = Currency::parse("USD").expect("USD");
        // The ids are in stored events and ledger accounts: they must never change.
        assert_eq!(platform_account("fee", usd), platform_account("fee", usd));
        assert_ne!(platform_account("fee", usd), platform_account("fx", usd));
        assert_ne!(wallet_account_id(1, usd), wallet_account_id(2, usd));
        for id in [derive_id(&[]), derive_id(&[b"a", b"b"]), wallet_account_id(0, usd)] {
            assert!(id != 0 && id != u128::MAX);
        }
        assert_ne!(derive_id(&[b"ab", b"c"]), derive_id(&[b"a", b"bc"]), "parts are length-prefixed");
    }
}
