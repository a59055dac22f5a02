//! The ledger's reference model: plain, obviously correct, independent of the engine
//! (`ledger_core::state::LedgerState`). Shared by the model-based property test of the
//! core (`ledger-core/tests/model.rs`, which includes this file by path) and the
//! simulator (`vopr`), which checks the whole engine against it across crashes.

use std::collections::HashMap;

use ledger_core::domain::*;
use ledger_core::money::Currency;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelAccount {
    pub currency: Currency,
    pub code: u16,
    pub flags: AccountFlags,
    pub state: AccountState,
    pub dp: u128,
    pub dpost: u128,
    pub cp: u128,
    pub cpost: u128,
}

#[derive(Clone, Debug)]
pub struct ModelTransfer {
    pub kind: TransferKind,
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: u128,
    pub currency: Currency,
    pub code: u16,
    pub metadata: String,
    pub linked: bool,
    pub expires_at: u64,
    pub status: Option<&'static str>,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub accounts: HashMap<AccountId, ModelAccount>,
    pub transfers: HashMap<TransferId, ModelTransfer>,
}

impl Model {
    pub fn expire(&mut self, now: u64) {
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

    pub fn account(&mut self, command: &AccountCommand) -> bool {
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
    pub fn transfers(&mut self, batch: &[NewTransfer], timestamps: &[Option<u64>]) -> Vec<bool> {
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
