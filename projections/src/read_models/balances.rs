//! Balances: an account's current balances, and as of any time.

use redb::ReadableDatabase;

use super::history::last_at_or_before;
use super::model::{AccountView, Balances};
use super::rows::{decode_account, ACCOUNTS, MOVEMENTS};
use super::{ProjectionError, ReadModels};

impl ReadModels {
    pub fn account(&self, id: u128) -> Result<Option<AccountView>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let accounts = txn.open_table(ACCOUNTS)?;
        Ok(accounts.get(id)?.map(|v| decode_account(id, v.value())))
    }

    /// Balances including every movement at or before `as_of_ns` (`None`: now).
    /// `None` if the account is unknown or was not open yet.
    pub fn balances_as_of(&self, id: u128, as_of_ns: Option<u64>) -> Result<Option<Balances>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let accounts = txn.open_table(ACCOUNTS)?;
        let Some(account) = accounts.get(id)?.map(|v| decode_account(id, v.value())) else { return Ok(None) };
        let Some(as_of_ns) = as_of_ns else { return Ok(Some(account.balances)) };
        if as_of_ns < account.opened_ns {
            return Ok(None);
        }
        let movements = txn.open_table(MOVEMENTS)?;
        let last = last_at_or_before(&movements, id, as_of_ns)?;
        Ok(Some(last.map_or(Balances::default(), |m| m.after)))
    }
}

/// Net posted balance: credits minus debits.
pub fn net(balances: &Balances) -> i128 {
    balances.credits_posted as i128 - balances.debits_posted as i128
}
