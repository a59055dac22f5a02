//! Generated protobuf types. Hand-written code lives in the crates that use them; this
//! crate holds only what `build.rs` generates from `proto/`. Modules follow the
//! protobuf packages (`ledger.events.v1`, `ledger.v1`).

pub mod ledger {
    /// The durable event schema: what the ledger's hash chain covers.
    pub mod events {
        // Generated: a payment event's `Created` variant is larger than the others.
        #[allow(clippy::large_enum_variant)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/ledger.events.v1.rs"));
        }
    }

    /// The public gRPC API.
    #[cfg(feature = "grpc")]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ledger.v1.rs"));
    }

    /// The sandbox payment rails' API.
    #[cfg(feature = "grpc")]
    pub mod sandbox {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/ledger.sandbox.v1.rs"));
        }
    }
}

pub use ledger::events;

#[cfg(feature = "grpc")]
pub mod api {
    pub use crate::ledger::v1;

    /// The file descriptor set of every .proto file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
}
