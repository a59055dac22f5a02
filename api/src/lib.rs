//! `ledgerd`'s library: configuration, caller authentication, conversion between the
//! wire (generated from proto/) and the domain, the gRPC services and metrics. The
//! payments platform lives in `ledger-platform`; `grpc` holds its adapters.

pub mod auth;
pub mod config;
pub mod convert;
pub mod grpc;
pub mod metrics;
pub mod packed;
pub mod server;
pub mod service;

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

/// Installs ring as the process's TLS crypto provider. rustls chooses one by itself only
/// when exactly one is compiled in; with the KurrentDB client (aws-lc) beside tonic
/// (ring) there are two. Call it before any TLS is used; calling again is harmless.
pub fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
