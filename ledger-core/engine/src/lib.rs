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
pub mod heads;
pub mod sim_bugs;
pub mod snapshot;
pub mod state_store;
pub mod store;
pub mod threads;
pub mod writer;

/// mimalloc (the allocator of `ledgerd` and `ledgerctl`) returns freed memory to the OS
/// after 10 ms by default; with batches of megabytes arriving every few milliseconds
/// that means page faults and zeroing on every request. A longer delay keeps such
/// memory mapped (measured in the commit that set it). Call it first thing in `main`,
/// before any thread starts, as `set_var` requires; an operator's own
/// `MIMALLOC_PURGE_DELAY` wins.
pub fn allocator_settings() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        std::env::set_var("MIMALLOC_PURGE_DELAY", "1000");
    }
}
