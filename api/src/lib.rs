//! `ledgerd`'s library: configuration, caller authentication, conversion between the
//! wire (generated from proto/) and the domain, the gRPC services and metrics.

pub mod auth;
pub mod config;
pub mod convert;
pub mod fx;
pub mod metrics;
pub mod payments;
pub mod server;
pub mod service;
pub mod users;
