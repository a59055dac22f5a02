//! The simulator's random workload: account commands, posted, pending (expiring or
//! not), post and void transfers, linked chains, repeated ids and whole requests sent
//! again, reads, and the clock moving. Every choice comes from the run's seed.

use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_engine::store::sim_disk::SimRng;

use crate::reference_model::Model;

/// Account ids in use are 1..=ACCOUNT_IDS (a small set, so transfers meet each other).
pub const ACCOUNT_IDS: u128 = 8;
/// Most transfers in one request.
const TRANSFERS_PER_REQUEST_MAX: u64 = 6;
/// Most account commands in one request.
const ACCOUNT_COMMANDS_PER_REQUEST_MAX: u64 = 3;
/// Requests remembered for sending again (a client retrying).
pub const SENT_REMEMBERED: usize = 16;
const SECOND_NS: u64 = 1_000_000_000;

/// One request to the ledger's writer.
#[derive(Clone, Debug)]
pub enum Request {
    Accounts(Vec<AccountCommand>),
    Transfers(Vec<NewTransfer>),
}

/// One step of a run.
#[derive(Clone, Debug)]
pub enum Step {
    /// A new request.
    Send(Request),
    /// A request sent earlier, sent again as is.
    Resend(usize),
    /// Read some accounts and transfers from the writer and compare with the model.
    Lookup,
    /// Apply the log to the read models, durably or not, and compare their balances.
    CatchUp { durable: bool },
    /// Move the clock forwards, in nanoseconds.
    Advance(u64),
}

fn currency(index: u64) -> Currency {
    Currency::parse(["USD", "JPY"][index as usize % 2]).expect("known currency")
}

/// The workload generator of one run.
pub struct Workload {
    rng: SimRng,
    /// The next fresh transfer id; ids below it have been used.
    pub next_transfer_id: u128,
}

impl Workload {
    pub fn new(seed: u64) -> Workload {
        Workload { rng: SimRng::new(seed ^ 0x0590_7E57), next_transfer_id: 1 }
    }

    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    pub fn step(&mut self, model: &Model, sent: usize) -> Step {
        match self.rng.below(100) {
            0..=9 => Step::Send(Request::Accounts(self.account_commands(model))),
            10..=64 => Step::Send(Request::Transfers(self.transfers(model))),
            65..=71 if sent > 0 => Step::Resend(self.rng.below(sent as u64) as usize),
            72..=79 => Step::Lookup,
            80..=91 => Step::CatchUp { durable: self.rng.below(3) != 0 },
            _ => Step::Advance(self.rng.below(8) * SECOND_NS + self.rng.below(SECOND_NS)),
        }
    }

    fn account_commands(&mut self, model: &Model) -> Vec<AccountCommand> {
        let count = 1 + self.rng.below(ACCOUNT_COMMANDS_PER_REQUEST_MAX);
        (0..count)
            .map(|_| {
                let id = AccountId(1 + u128::from(self.rng.below(ACCOUNT_IDS as u64)));
                // Mostly opening, and state changes only once most accounts exist.
                let opened = model.accounts.len() as u128 * 2 > ACCOUNT_IDS;
                match (self.rng.below(20), opened) {
                    (0, true) => AccountCommand::Freeze(id),
                    (1, true) => AccountCommand::Unfreeze(id),
                    (2, true) => AccountCommand::Close(id),
                    _ => AccountCommand::Open(NewAccount {
                        id,
                        currency: currency(self.rng.below(2)),
                        code: self.rng.below(2) as u16,
                        // 0 mostly; each limit flag sometimes; both (invalid) rarely.
                        flags: AccountFlags([0, 0, 0, 0, 0, 0, 1, 1, 2, 3][self.rng.below(10) as usize]),
                        owner_id: 7,
                    }),
                }
            })
            .collect()
    }

    fn transfers(&mut self, model: &Model) -> Vec<NewTransfer> {
        let count = 1 + self.rng.below(TRANSFERS_PER_REQUEST_MAX);
        (0..count).map(|_| self.transfer(model)).collect()
    }

    /// A pending transfer of the model, mostly one still pending.
    fn pending_id(&mut self, model: &Model) -> TransferId {
        let mut pending: Vec<TransferId> =
            model.transfers.iter().filter(|(_, t)| t.status == Some("pending")).map(|(id, _)| *id).collect();
        // The model's map has no order: sort, so that the seed alone decides.
        pending.sort_unstable_by_key(|id| id.0);
        if pending.is_empty() || self.rng.below(5) == 0 {
            return TransferId(1 + u128::from(self.rng.below(self.next_transfer_id as u64)));
        }
        pending[self.rng.below(pending.len() as u64) as usize]
    }

    fn transfer(&mut self, model: &Model) -> NewTransfer {
        let kind = match self.rng.below(10) {
            0..=3 => TransferKind::Posted,
            4..=5 => {
                let timeout_ns = [0, SECOND_NS, 5 * SECOND_NS, 30 * SECOND_NS][self.rng.below(4) as usize];
                TransferKind::Pending { timeout_ns }
            }
            6..=7 => TransferKind::PostPending { pending_id: self.pending_id(model) },
            _ => TransferKind::VoidPending { pending_id: self.pending_id(model) },
        };
        let resolving = matches!(kind, TransferKind::PostPending { .. } | TransferKind::VoidPending { .. });
        let id = if self.rng.below(10) == 0 && self.next_transfer_id > 1 {
            // An id used before: a retry (same body or not) or a collision.
            TransferId(1 + u128::from(self.rng.below(self.next_transfer_id as u64 - 1)))
        } else {
            self.next_transfer_id += 1;
            TransferId(self.next_transfer_id - 1)
        };
        let mut account = || AccountId(1 + u128::from(self.rng.below(ACCOUNT_IDS as u64)));
        let (debit, credit) = (account(), account());
        let as_held = resolving && self.rng.below(3) != 0;
        NewTransfer {
            id,
            debit_account_id: if as_held { AccountId(0) } else { debit },
            credit_account_id: if as_held { AccountId(0) } else { credit },
            amount: match self.rng.below(10) {
                0 => 0,
                _ => 1 + u128::from(self.rng.below(500)),
            },
            currency: match (as_held, model.accounts.get(&debit)) {
                (true, _) => None,
                // Mostly the debit account's currency, so that most transfers can succeed.
                (false, Some(account)) if self.rng.below(5) != 0 => Some(account.currency),
                (false, _) => Some(currency(self.rng.below(2))),
            },
            code: self.rng.below(2) as u16,
            metadata: if self.rng.below(4) == 0 { "memo".into() } else { String::new() },
            linked: self.rng.below(6) == 0,
            kind,
        }
    }
}
