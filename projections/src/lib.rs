//! Read models built from the ledger event log (`read_models`, in redb) and the worker
//! that keeps them up to date (`worker`). Each is a fold of events in log order, stored
//! with its checkpoint, and can be rebuilt from the log at any time.

pub mod read_models;
pub mod worker;
