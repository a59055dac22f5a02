//! What can go wrong with a payment, typed so a caller can act on it. The text of each
//! error is what a client is shown.

use crate::engine::{LedgerError, StoreError};
use crate::fx::FxError;
use crate::random::RandomError;
use crate::users::UsersError;
use crate::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    /// A field of the request is not acceptable.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// The request as a whole is not acceptable.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// The payment does not exist, or is not the caller's to see.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The idempotency key was used for a different request.
    #[error("{0}")]
    AlreadyExists(&'static str),
    /// A request with the same idempotency key is being created: retry.
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The payment's state does not allow this now; the text says why.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A user, instrument or wallet the payment needs.
    #[error(transparent)]
    Users(#[from] UsersError),
    /// The quote of a cross-currency payment.
    #[error(transparent)]
    Fx(#[from] FxError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Randomness(#[from] RandomError),
    /// A stored payment whose fields do not parse (ids, currencies, rates).
    #[error("{0}")]
    Corrupt(String),
    /// A fault of this process or a refusal the ledger should never give.
    #[error("{0}")]
    Internal(String),
}

impl PaymentsError {
    /// A stable public code per variant, for clients and logs.
    pub fn code(&self) -> &'static str {
        match self {
            PaymentsError::InvalidArgument { .. } => "PAYMENTS_INVALID_ARGUMENT",
            PaymentsError::InvalidRequest(_) => "PAYMENTS_INVALID_REQUEST",
            PaymentsError::NotFound(_) => "PAYMENTS_NOT_FOUND",
            PaymentsError::AlreadyExists(_) => "PAYMENTS_IDEMPOTENCY_KEY_REUSED",
            PaymentsError::Conflict(_) => "PAYMENTS_IN_PROGRESS",
            PaymentsError::PermissionDenied(_) => "PAYMENTS_PERMISSION_DENIED",
            PaymentsError::FailedPrecondition(_) => "PAYMENTS_FAILED_PRECONDITION",
            PaymentsError::Users(error) => error.code(),
            PaymentsError::Fx(error) => error.code(),
            PaymentsError::Store(_) => "PAYMENTS_STORE",
            PaymentsError::Ledger(_) => "PAYMENTS_LEDGER",
            PaymentsError::Randomness(_) => "PAYMENTS_NO_RANDOMNESS",
            PaymentsError::Corrupt(_) => "PAYMENTS_CORRUPT",
            PaymentsError::Internal(_) => "PAYMENTS_INTERNAL",
        }
    }
}

impl From<crate::log_checkpoint::CheckpointError> for PaymentsError {
    fn from(error: crate::log_checkpoint::CheckpointError) -> PaymentsError {
        super::store::checkpoint_error(error)
    }
}

impl From<FieldError> for PaymentsError {
    fn from(error: FieldError) -> PaymentsError {
        PaymentsError::InvalidArgument { field: error.field, reason: error.reason }
    }
}
