//! Read models built from the ledger event log. Each is a fold of events in log order
//! and can be rebuilt from the log at any time.

pub mod account_history;
pub mod read_models;
