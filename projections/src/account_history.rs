//! Per-account history: every movement on an account with the balances after it, in
//! commit order. Answers "what happened on this account between two times" (with cursor
//! paging) and "what were its balances at time T" (a binary search).
//!
//! Held in memory and rebuilt from the log when the server starts. The on-disk,
//! checkpointed read models are the projections work that follows.

use std::collections::HashMap;

use ledger_core::domain::{AccountId, Event, EventKind, TransferId};
use ledger_core::money::Currency;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    Debit,
    Credit,
}

/// An account's four balances.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Balances {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

/// One movement on one account.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Entry {
    pub transfer_id: TransferId,
    pub event_type: &'static str,
    pub side: Side,
    pub counterparty: AccountId,
    pub amount: u128,
    pub timestamp_ns: u64,
    pub metadata: String,
    pub position: u64,
    /// The account's balances after this movement.
    pub after: Balances,
}

#[derive(Clone, Debug)]
struct AccountLog {
    currency: Currency,
    opened_ns: u64,
    balances: Balances,
    entries: Vec<Entry>,
}

/// The read model. `apply` events in log order.
#[derive(Clone, Debug, Default)]
pub struct AccountHistory {
    accounts: HashMap<AccountId, AccountLog, foldhash::fast::RandomState>,
    /// The next log position this model expects.
    next_position: u64,
}

/// A page of an account's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<'a> {
    pub entries: Vec<&'a Entry>,
    /// Where the next page starts, if there is more.
    pub next_cursor: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Change {
    pending_add: u128,
    pending_sub: u128,
    posted_add: u128,
}

impl AccountHistory {
    pub fn new() -> AccountHistory {
        AccountHistory::default()
    }

    /// The log position of the next event to apply: everything before it is applied.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// Notes that the event at `position` is not a ledger event.
    pub fn skip(&mut self, position: u64) {
        self.next_position = self.next_position.max(position + 1);
    }

    pub fn currency(&self, account: AccountId) -> Option<Currency> {
        self.accounts.get(&account).map(|log| log.currency)
    }

    /// Folds the ledger event at `position` in.
    pub fn apply(&mut self, position: u64, event: &Event) {
        self.next_position = self.next_position.max(position + 1);
        let timestamp_ns = event.timestamp_ns;
        let mut movement = |transfer_id, event_type, debit, credit, amount, metadata: &str, change: Change| {
            for (account, side, counterparty) in [(debit, Side::Debit, credit), (credit, Side::Credit, debit)] {
                let Some(log) = self.accounts.get_mut(&account) else { continue };
                let b = &mut log.balances;
                match side {
                    Side::Debit => {
                        b.debits_pending = b.debits_pending + change.pending_add - change.pending_sub;
                        b.debits_posted += change.posted_add;
                    }
                    Side::Credit => {
                        b.credits_pending = b.credits_pending + change.pending_add - change.pending_sub;
                        b.credits_posted += change.posted_add;
                    }
                }
                let after = *b;
                let metadata = metadata.to_string();
                log.entries.push(Entry {
                    transfer_id,
                    event_type,
                    side,
                    counterparty,
                    amount,
                    timestamp_ns,
                    metadata,
                    position,
                    after,
                });
            }
        };
        let none = Change { pending_add: 0, pending_sub: 0, posted_add: 0 };
        match &event.kind {
            EventKind::AccountOpened(new) => {
                let log = AccountLog {
                    currency: new.currency,
                    opened_ns: timestamp_ns,
                    balances: Balances::default(),
                    entries: Vec::new(),
                };
                self.accounts.entry(new.id).or_insert(log);
            }
            EventKind::AccountFrozen(_) | EventKind::AccountUnfrozen(_) | EventKind::AccountClosed(_) => {}
            EventKind::TransferPosted(m) => {
                let change = Change { posted_add: m.amount, ..none };
                movement(
                    m.id,
                    "TransferPosted",
                    m.debit_account_id,
                    m.credit_account_id,
                    m.amount,
                    &m.metadata,
                    change,
                );
            }
            EventKind::TransferPending { movement: m, .. } => {
                let change = Change { pending_add: m.amount, ..none };
                movement(
                    m.id,
                    "TransferPending",
                    m.debit_account_id,
                    m.credit_account_id,
                    m.amount,
                    &m.metadata,
                    change,
                );
            }
            EventKind::PendingPosted { movement: m, pending_amount, .. } => {
                let change = Change { pending_sub: *pending_amount, posted_add: m.amount, ..none };
                movement(m.id, "PendingPosted", m.debit_account_id, m.credit_account_id, m.amount, &m.metadata, change);
            }
            EventKind::PendingVoided { movement: m, .. } => {
                let change = Change { pending_sub: m.amount, ..none };
                movement(m.id, "PendingVoided", m.debit_account_id, m.credit_account_id, m.amount, &m.metadata, change);
            }
            EventKind::PendingExpired { pending_id, debit_account_id, credit_account_id, pending_amount, .. } => {
                let change = Change { pending_sub: *pending_amount, ..none };
                movement(
                    *pending_id,
                    "PendingExpired",
                    *debit_account_id,
                    *credit_account_id,
                    *pending_amount,
                    "",
                    change,
                );
            }
        }
    }

    /// Movements with `from_ns <= timestamp < to_ns` (`to_ns` 0: no bound), oldest
    /// first, at most `limit`, starting at `cursor` if given. `None` if the account is
    /// unknown.
    pub fn list(
        &self,
        account: AccountId,
        from_ns: u64,
        to_ns: u64,
        cursor: Option<u64>,
        limit: usize,
    ) -> Option<Page<'_>> {
        let log = self.accounts.get(&account)?;
        let start = match cursor {
            Some(cursor) => (cursor as usize).min(log.entries.len()),
            None => log.entries.partition_point(|e| e.timestamp_ns < from_ns),
        };
        let end = if to_ns == 0 { log.entries.len() } else { log.entries.partition_point(|e| e.timestamp_ns < to_ns) };
        let end = end.max(start);
        let stop = (start + limit).min(end);
        let entries = log.entries[start..stop].iter().collect();
        let next_cursor = (stop < end).then_some(stop as u64);
        Some(Page { entries, next_cursor })
    }

    /// Balances including every movement at or before `as_of_ns`. `None` if the account
    /// is unknown or did not exist yet.
    pub fn balances_as_of(&self, account: AccountId, as_of_ns: u64) -> Option<Balances> {
        let log = self.accounts.get(&account)?;
        if as_of_ns < log.opened_ns {
            return None;
        }
        let count = log.entries.partition_point(|e| e.timestamp_ns <= as_of_ns);
        Some(if count == 0 { Balances::default() } else { log.entries[count - 1].after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::domain::*;
    use ledger_core::state::LedgerState;

    fn usd() -> Currency {
        Currency::parse("USD").expect("USD")
    }

    #[test]
    fn balances_as_of_any_time_equal_a_replay_up_to_that_time() {
        let mut state = LedgerState::new();
        let mut events = Vec::new();
        let open = |id| {
            AccountCommand::Open(NewAccount {
                id: AccountId(id),
                currency: usd(),
                code: 1,
                flags: AccountFlags(0),
                owner_id: 0,
            })
        };
        state.execute_accounts(&[open(1), open(2), open(3)], 1_000, &mut events);
        for n in 0..60u128 {
            let kind = match n % 4 {
                0 => TransferKind::Pending { timeout_ns: if n % 8 == 0 { 500 } else { 0 } },
                1 => TransferKind::PostPending { pending_id: TransferId(n) },
                2 => TransferKind::VoidPending { pending_id: TransferId(n - 2) },
                _ => TransferKind::Posted,
            };
            let resolving = matches!(kind, TransferKind::PostPending { .. } | TransferKind::VoidPending { .. });
            let transfer = NewTransfer {
                id: TransferId(n + 1),
                debit_account_id: AccountId(if resolving { 0 } else { 1 + n % 3 }),
                credit_account_id: AccountId(if resolving { 0 } else { 1 + (n + 1) % 3 }),
                amount: if resolving { 0 } else { 10 + n },
                currency: (!resolving).then(usd),
                code: 1,
                metadata: String::new(),
                linked: false,
                kind,
            };
            let now = 2_000 + 100 * n as u64;
            state.expire_due(now, &mut events);
            state.execute_transfers(&[transfer], now, &mut events);
        }
        let mut history = AccountHistory::new();
        for (position, event) in events.iter().enumerate() {
            history.apply(position as u64, event);
        }
        // At every event's time, the model's balances equal a replay of the prefix.
        let mut replay = LedgerState::new();
        for event in &events {
            replay.evolve(event);
            for id in 1..=3 {
                let expected = replay.account(AccountId(id)).map(|a| Balances {
                    debits_pending: a.debits_pending,
                    debits_posted: a.debits_posted,
                    credits_pending: a.credits_pending,
                    credits_posted: a.credits_posted,
                });
                assert_eq!(
                    history.balances_as_of(AccountId(id), event.timestamp_ns),
                    expected,
                    "account {id} at {}",
                    event.timestamp_ns
                );
            }
        }
        // Paging through everything returns each movement once, in order.
        let mut cursor = None;
        let mut seen = Vec::new();
        loop {
            let page = history.list(AccountId(1), 0, 0, cursor, 7).expect("account 1");
            seen.extend(page.entries.iter().map(|e| e.position));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(seen.len(), history.list(AccountId(1), 0, 0, None, usize::MAX).expect("all").entries.len());
    }
}
