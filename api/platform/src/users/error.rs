//! What can go wrong for a user, typed so a caller can act on it. The text of each
//! error is what a client is shown.

use super::crypto::CryptoError;
use super::password::PasswordError;
use crate::engine::{LedgerError, StoreError};
use crate::random::RandomError;
use crate::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// A field of the request is not acceptable.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// The request as a whole is not acceptable (no single field is at fault).
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// The new password breaks the password policy.
    #[error(transparent)]
    WeakPassword(PasswordError),
    /// What the request names does not exist (or is not the caller's to see).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    AlreadyExists(&'static str),
    /// The credentials, session token or second factor are wrong or expired.
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// Too many failed sign-ins for the email or from the source address, or too many
    /// sign-ups from the source address.
    #[error("too many attempts; try again in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    /// Too many password hashes at once (each holds `password::ARGON2_MEMORY_KIB` of
    /// memory): the request waited `PASSWORD_HASH_WAIT_MAX` for a turn; or sign-ups
    /// from `REGISTRATION_SOURCES_MAX` addresses within the hour. Retrying is safe.
    #[error("too busy to take this now; retry in a moment")]
    Busy,
    /// The user's state does not allow this now; the text says what would.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The key store of users' data keys failed; retrying may work.
    #[error("key store: {0}")]
    KeyStore(CryptoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Randomness(#[from] RandomError),
    /// Personal data could not be sealed for the log (no randomness for its nonce).
    #[error("sealing personal data: {0}")]
    Seal(CryptoError),
    /// Stored data that does not decode or contradicts itself.
    #[error("{0}")]
    Corrupt(String),
    /// A fault of this process (a task that panicked, a sealing that failed).
    #[error("{0}")]
    Internal(String),
}

impl UsersError {
    /// A stable public code per variant, for clients and logs.
    pub fn code(&self) -> &'static str {
        match self {
            UsersError::InvalidArgument { .. } => "USERS_INVALID_ARGUMENT",
            UsersError::InvalidRequest(_) => "USERS_INVALID_REQUEST",
            UsersError::WeakPassword(_) => "USERS_WEAK_PASSWORD",
            UsersError::NotFound(_) => "USERS_NOT_FOUND",
            UsersError::AlreadyExists(_) => "USERS_ALREADY_EXISTS",
            UsersError::Unauthenticated(_) => "USERS_UNAUTHENTICATED",
            UsersError::PermissionDenied(_) => "USERS_PERMISSION_DENIED",
            UsersError::Throttled { .. } => "USERS_THROTTLED",
            UsersError::Busy => "USERS_BUSY",
            UsersError::FailedPrecondition(_) => "USERS_FAILED_PRECONDITION",
            UsersError::KeyStore(_) => "USERS_KEY_STORE_UNAVAILABLE",
            UsersError::Store(_) => "USERS_STORE",
            UsersError::Ledger(_) => "USERS_LEDGER",
            UsersError::Randomness(_) => "USERS_NO_RANDOMNESS",
            UsersError::Seal(_) => "USERS_SEAL_FAILED",
            UsersError::Corrupt(_) => "USERS_CORRUPT",
            UsersError::Internal(_) => "USERS_INTERNAL",
        }
    }
}

impl From<crate::log_checkpoint::CheckpointError> for UsersError {
    fn from(error: crate::log_checkpoint::CheckpointError) -> UsersError {
        super::index::checkpoint_error(error)
    }
}

impl From<FieldError> for UsersError {
    fn from(error: FieldError) -> UsersError {
        UsersError::InvalidArgument { field: error.field, reason: error.reason }
    }
}

impl From<PasswordError> for UsersError {
    fn from(error: PasswordError) -> UsersError {
        UsersError::WeakPassword(error)
    }
}
