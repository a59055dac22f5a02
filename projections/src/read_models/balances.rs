//! Balances: an account's current balances, and as of any time.

use redb::ReadableDatabase;

use super::error::ReadModelError;
use super::history::last_at_or_before;
use super::model::{AccountView, Balances};
use super::rows::{decode_account, ACCOUNTS, MOVEMENTS};
use super::{ProjectionError, ReadModels};

impl ReadModels {
    pub fn account(&self, id: u128) -> Result<Option<AccountView>, ProjectionError> {
        self.guarded(|| {
            let txn = self.db.begin_read()?;
            let accounts = txn.open_table(ACCOUNTS)?;
            let Some(row) = accounts.get(id)? else { return Ok(None) };
            Ok(Some(decode_account(id, row.value())?))
        })
    }

    /// Balances including every movement at or before `as_of_ns` (`None`: now).
    /// `None` if the account is unknown or was not open yet.
    pub fn balances_as_of(&self, id: u128, as_of_ns: Option<u64>) -> Result<Option<Balances>, ProjectionError> {
        self.guarded(|| {
            let txn = self.db.begin_read()?;
            let accounts = txn.open_table(ACCOUNTS)?;
            let Some(row) = accounts.get(id)? else { return Ok(None) };
            let account = decode_account(id, row.value())?;
            let Some(as_of_ns) = as_of_ns else { return Ok(Some(account.balances)) };
            if as_of_ns < account.opened_ns {
                return Ok(None);
            }
            let movements = txn.open_table(MOVEMENTS)?;
            // No movement by then: the account was open with nothing on it.
            let last = last_at_or_before(&movements, id, as_of_ns)?;
            Ok(Some(last.map_or(Balances::default(), |m| m.after)))
        })
    }
}

/// Net posted balance: credits minus debits; an error if a balance is past the range
/// of i128 (a u128 cast would wrap and show a wrong sign).
pub fn net(balances: &Balances) -> Result<i128, ReadModelError> {
    let signed = |value: u128, what: &str| {
        i128::try_from(value).map_err(|_| ReadModelError::Overflow { what: format!("{what} of {value}") })
    };
    let credits = signed(balances.credits_posted, "posted credits")?;
    let debits = signed(balances.debits_posted, "posted debits")?;
    // Both are at least zero, so the difference always fits.
    credits.checked_sub(debits).ok_or_else(|| ReadModelError::Overflow { what: "a net balance".into() })
}
