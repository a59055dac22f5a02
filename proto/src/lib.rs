//! Generated protobuf types. Hand-written code lives in the crates that use them; this
//! crate holds only what `build.rs` generates from `proto/`.

/// The durable event schema: what the ledger's hash chain covers.
pub mod events {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ledger.events.v1.rs"));
    }
}
