//! The ledger engine: everything of the ledger that does I/O. The `EventStore` port and
//! its backends (`store`: the embedded segmented log, KurrentDB), the single writer of a
//! ledger partition (`writer`), its snapshots (`snapshot`), the auditor behind
//! `ledgerctl audit verify` (`audit`), thread priorities (`threads`) and the system
//! clock (`clock`).
//!
//! Architecture invariant: the rules of money live in `ledger-core` (the decider
//! `LedgerState`); this crate only stores, orders, schedules and replays. It never
//! decides whether a transfer is valid.

pub mod audit;
pub mod clock;
pub mod snapshot;
pub mod store;
pub mod threads;
pub mod writer;
