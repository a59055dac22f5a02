//! Balances: an account's current balances, and as of any time.

use redb::ReadableDatabase;

use super::error::ReadModelError;
use super::history::last_at_or_before;
use super::model::{AccountView, Balances};
use super::rows::{decode_account, ACCOUNTS, MOVEMENTS};
use super::{ProjectionError, ReadModels};

/// Most accounts one page of `accounts_page` holds.
pub const ACCOUNTS_PAGE_MAX: usize = 1_000;

impl ReadModels {
    pub fn account(&self, id: u128) -> Result<Option<AccountView>, ProjectionError> {
        self.guarded(|| {
            let txn = self.db.begin_read()?;
            let accounts = txn.open_table(ACCOUNTS)?;
            let Some(row) = accounts.get(id)? else { return Ok(None) };
            Ok(Some(decode_account(id, row.value())?))
        })
    }

    /// Accounts with ids above `after`, in id order, at most `limit` (capped at
    /// `ACCOUNTS_PAGE_MAX`), and whether more follow.
    pub fn accounts_page(
        &self,
        after: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<AccountView>, bool), ProjectionError> {
        let limit = limit.clamp(1, ACCOUNTS_PAGE_MAX);
        self.guarded(|| {
            let txn = self.db.begin_read()?;
            let accounts = txn.open_table(ACCOUNTS)?;
            let rows = match after {
                Some(after) if after == u128::MAX => return Ok((Vec::new(), false)),
                Some(after) => accounts.range(after + 1..)?,
                None => accounts.range(0..)?,
            };
            let mut page = Vec::with_capacity(limit);
            for row in rows {
                let (id, value) = row?;
                if page.len() == limit {
                    return Ok((page, true));
                }
                page.push(decode_account(id.value(), value.value())?);
            }
            Ok((page, false))
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
