//! What can go wrong with rates, quotes and conversions, typed so a caller can act on
//! it. The text of each error is what a client is shown.

use crate::engine::{LedgerError, StoreError};
use crate::random::RandomError;
use crate::users::UsersError;
use crate::FieldError;

/// Why an amount could not be converted at a rate (pure arithmetic, no I/O).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// No rate links the two currencies, directly, inversely or through the pivot.
    #[error("no rate for {0}/{1}")]
    NoRate(String, String),
    #[error("amount too large to convert")]
    Overflow,
    #[error("the converted amount is less than one minor unit")]
    TooSmall,
    #[error("rate: a positive decimal")]
    BadRate,
}

impl RateError {
    pub fn code(&self) -> &'static str {
        match self {
            RateError::NoRate(..) => "FX_NO_RATE",
            RateError::Overflow => "FX_AMOUNT_TOO_LARGE",
            RateError::TooSmall => "FX_AMOUNT_TOO_SMALL",
            RateError::BadRate => "FX_BAD_RATE",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FxError {
    #[error(transparent)]
    Rate(#[from] RateError),
    /// A field of the request is not acceptable.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// The request as a whole is not acceptable.
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Too late for the quote: ask for a new one.
    #[error("the quote expired at {expires_at_ns} ns; ask for a new quote")]
    QuoteExpired { expires_at_ns: u64 },
    /// The quote's state (used, executed) or the ledger refuses this; the text says why.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Opening the receiver's wallet failed.
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Randomness(#[from] RandomError),
    /// Stored rates or conversions that do not decode.
    #[error("{0}")]
    Corrupt(String),
    /// A fault of this process or a refusal the ledger should never give.
    #[error("{0}")]
    Internal(String),
    /// `QUOTES_LIVE_MAX` quotes are live at once: retry when some have expired.
    #[error("too many live quotes; retry in a moment")]
    Busy,
}

impl FxError {
    /// A stable public code per variant, for clients and logs.
    pub fn code(&self) -> &'static str {
        match self {
            FxError::Rate(error) => error.code(),
            FxError::InvalidArgument { .. } => "FX_INVALID_ARGUMENT",
            FxError::InvalidRequest(_) => "FX_INVALID_REQUEST",
            FxError::NotFound(_) => "FX_NOT_FOUND",
            FxError::QuoteExpired { .. } => "FX_QUOTE_EXPIRED",
            FxError::FailedPrecondition(_) => "FX_FAILED_PRECONDITION",
            FxError::Users(error) => error.code(),
            FxError::Store(_) => "FX_STORE",
            FxError::Ledger(_) => "FX_LEDGER",
            FxError::Randomness(_) => "FX_NO_RANDOMNESS",
            FxError::Corrupt(_) => "FX_CORRUPT",
            FxError::Internal(_) => "FX_INTERNAL",
            FxError::Busy => "FX_BUSY",
        }
    }
}

impl From<FieldError> for FxError {
    fn from(error: FieldError) -> FxError {
        FxError::InvalidArgument { field: error.field, reason: error.reason }
    }
}
