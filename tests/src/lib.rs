//! Helpers shared by the integration tests.

pub mod fuzz;
pub mod reference_model;
pub mod vopr;
