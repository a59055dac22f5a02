//! The ledger core, pure: money (`money`), accounts, transfers and their invariants
//! (`domain`, and the decider `state`), the durable event encoding (`codec`), the hash
//! chain (`chain`), dates (`calendar`) and time as an input (`clock`).
//!
//! Architecture invariant: nothing here touches files, threads, sockets, an async
//! runtime or the wall clock. Everything with I/O is in the `ledger-engine` crate
//! (`ledger-core/engine/`); `.ci/run` checks the dependency tree and clippy's
//! `disallowed-methods` keep it so.

pub mod calendar;
pub mod chain;
pub mod clock;
pub mod codec;
pub mod domain;
pub mod money;
pub mod state;
