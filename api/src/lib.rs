//! `ledgerd`'s library: configuration, caller authentication, conversion between the
//! wire (generated from proto/) and the domain, the gRPC services and metrics. The
//! payments platform lives in `ledger-platform`; `grpc` holds its adapters.

pub mod auth;
pub mod config;
pub mod convert;
pub mod grpc;
pub mod health;
pub mod http;
pub mod metrics;
pub mod read_models_check;
pub mod server;
pub mod service;
pub mod wire_errors;
