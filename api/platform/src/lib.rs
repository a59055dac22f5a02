//! The payments platform over the ledger: users (sign-in, personal data sealed per
//! user, payment instruments, wallets), payments (sagas through the ledger and the
//! payment rails) and FX (rates, quotes, conversions). Each is an event-sourced
//! aggregate on streams of the ledger's event log.
//!
//! This crate knows no transport: it answers typed errors (`UsersError`,
//! `PaymentsError`, `FxError`) and domain values, and the server maps them to its wire
//! types. Dependencies run one way: `payments` uses `users` and `fx`, `fx` uses
//! `users`, and all of them use `chart` (the chart of accounts).

pub mod chart;
pub mod fx;
pub mod log_checkpoint;
pub mod payments;
pub mod random;
mod stream;
mod sweep;
pub mod users;

/// A field of a request that is not acceptable, and why. Its text is `field: reason`,
/// which is what a client is shown.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> FieldError {
        FieldError { field, reason: reason.into() }
    }
}

/// The ledger's I/O half this crate uses (the event store and the writer, from
/// `ledger-engine`), named in one place.
pub mod engine {
    pub use ledger_engine::store::{
        Direction, EventData, EventStore, EventStoreExt, ExpectedRevision, RecordedEvent, Revision, StoreError,
    };
    pub use ledger_engine::writer::{Ledger, LedgerError};
}
