//! The read models' public types: what a read returns and what a query asks for.

use ledger_core::money::Currency;

use super::error::ReadModelError;

/// Which side of a transfer an account is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
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

/// The state of a movement, or of the hold it belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Status {
    Pending,
    Posted,
    Voided,
    Expired,
}

impl Status {
    pub(super) fn byte(self) -> u8 {
        self as u8
    }

    /// The status `byte` writes; `None` for any other byte.
    pub(super) fn from_byte(byte: u8) -> Option<Status> {
        match byte {
            0 => Some(Status::Pending),
            1 => Some(Status::Posted),
            2 => Some(Status::Voided),
            3 => Some(Status::Expired),
            _ => None,
        }
    }
}

/// Which event made a movement.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum MovementKind {
    TransferPosted,
    TransferPending,
    PendingPosted,
    PendingVoided,
    PendingExpired,
}

impl MovementKind {
    pub fn event_type(self) -> &'static str {
        match self {
            MovementKind::TransferPosted => "TransferPosted",
            MovementKind::TransferPending => "TransferPending",
            MovementKind::PendingPosted => "PendingPosted",
            MovementKind::PendingVoided => "PendingVoided",
            MovementKind::PendingExpired => "PendingExpired",
        }
    }

    /// The kind whose discriminant is `byte`; `None` for any other byte.
    pub(super) fn from_byte(byte: u8) -> Option<MovementKind> {
        match byte {
            0 => Some(MovementKind::TransferPosted),
            1 => Some(MovementKind::TransferPending),
            2 => Some(MovementKind::PendingPosted),
            3 => Some(MovementKind::PendingVoided),
            4 => Some(MovementKind::PendingExpired),
            _ => None,
        }
    }
}

/// One movement on one account.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Movement {
    pub account: u128,
    pub transfer_id: u128,
    pub kind: MovementKind,
    pub side: Side,
    pub counterparty: u128,
    pub amount: u128,
    pub currency: Currency,
    pub timestamp_ns: u64,
    pub metadata: String,
    pub status: Status,
    pub position: u64,
    /// The account's balances after this movement.
    pub after: Balances,
}

/// An account as the read models know it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AccountView {
    pub id: u128,
    pub currency: Currency,
    pub owner_id: u128,
    pub opened_ns: u64,
    pub balances: Balances,
}

/// Posted totals of a period.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Totals {
    pub credits: u128,
    pub debits: u128,
    pub count: u64,
}

impl Totals {
    /// Adds `other`; an error, with `self` unchanged, if a figure would pass its type.
    pub fn add(&mut self, other: Totals) -> Result<(), ReadModelError> {
        let overflow = |what: &str| ReadModelError::Overflow { what: format!("total {what}") };
        let credits = self.credits.checked_add(other.credits).ok_or_else(|| overflow("credits"))?;
        let debits = self.debits.checked_add(other.debits).ok_or_else(|| overflow("debits"))?;
        let count = self.count.checked_add(other.count).ok_or_else(|| overflow("count"))?;
        *self = Totals { credits, debits, count };
        Ok(())
    }
}

/// One day of a report: the day's first instant (UTC nanoseconds) and its figures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReportDay {
    pub start_ns: u64,
    pub opening: i128,
    pub totals: Totals,
    pub closing: i128,
}

/// A period report for one account.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Report {
    pub account: u128,
    pub currency: Currency,
    pub opening: i128,
    pub totals: Totals,
    pub closing: i128,
    pub days: Vec<ReportDay>,
}

/// What a history page shows.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    /// `[from_ns, to_ns)`; `to_ns` 0 means no upper bound.
    pub from_ns: u64,
    pub to_ns: u64,
    pub side: Option<Side>,
    pub status: Option<Status>,
    pub currency: Option<Currency>,
}

impl HistoryFilter {
    /// Whether the page shows `movement`. A status filter matches each hold once: its
    /// own movement while it stands (pending), then only the movement that resolved it
    /// (posted, voided or expired), so a hold that was posted is not posted money
    /// twice. Without a status filter a hold's movement shows with its resolution.
    pub(super) fn keeps(&self, movement: &Movement) -> bool {
        let resolved_hold = movement.kind == MovementKind::TransferPending && movement.status != Status::Pending;
        self.side.is_none_or(|side| side == movement.side)
            && self.status.is_none_or(|status| status == movement.status && !resolved_hold)
            && self.currency.is_none_or(|currency| currency == movement.currency)
    }

    pub(super) fn upper(&self) -> u64 {
        if self.to_ns == 0 {
            u64::MAX
        } else {
            self.to_ns
        }
    }
}

/// Where a page continues: the first movement it has not shown, by (timestamp,
/// account). A newest-first page goes on from this movement towards older ones; an
/// oldest-first page (one account) from this timestamp towards newer ones.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub struct Cursor {
    pub timestamp_ns: u64,
    pub account: u128,
}

impl Cursor {
    pub fn encode(self) -> String {
        format!("{}.{}", self.timestamp_ns, self.account)
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let (timestamp, account) = text.split_once('.')?;
        Some(Cursor { timestamp_ns: timestamp.parse().ok()?, account: account.parse().ok()? })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    pub movements: Vec<Movement>,
    pub next: Option<Cursor>,
}

/// An audit alarm: the first record that did not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alarm {
    pub position: u64,
    pub reason: String,
}
