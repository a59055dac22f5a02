//! The gRPC adapters of the payments platform (`ledger.v1.Users`, `ledger.v1.Payments`,
//! `ledger.v1.Fx`), the admin and support views (`ledger.v1.Admin`) and of the payment rails: each turns wire messages into platform
//! calls and the platform's domain values and typed errors back into wire messages and
//! statuses.

pub mod admin;
pub mod fx;
pub mod payments;
pub mod rails;
pub mod statement;
pub mod status;
pub mod users;
