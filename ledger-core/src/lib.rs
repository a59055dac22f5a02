//! The ledger core: money, accounts, transfers and their invariants (`domain`,
//! `state`), the durable event encoding (`codec`) and hash chain (`chain`), the
//! `EventStore` port and its embedded backend (`store`), the single writer of a ledger
//! partition (`writer`), snapshots and the auditor.

pub mod audit;
pub mod calendar;
pub mod chain;
pub mod codec;
pub mod collections;
pub mod domain;
pub mod money;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod threads;
pub mod writer;
