//! The one mapping of the platform's typed errors to gRPC statuses. Each `match` names
//! every variant, so a new variant does not compile until it has a code here. The
//! message is the error's text.

use ledger_platform::fx::{FxError, RateError};
use ledger_platform::payments::PaymentsError;
use ledger_platform::users::UsersError;
use tonic::Status;

use crate::convert;

pub fn users(error: UsersError) -> Status {
    let message = error.to_string();
    match error {
        UsersError::InvalidArgument { .. } | UsersError::InvalidRequest(_) | UsersError::WeakPassword(_) => {
            Status::invalid_argument(message)
        }
        UsersError::NotFound(_) => Status::not_found(message),
        UsersError::AlreadyExists(_) => Status::already_exists(message),
        UsersError::Unauthenticated(_) => Status::unauthenticated(message),
        UsersError::PermissionDenied(_) => Status::permission_denied(message),
        UsersError::Throttled { .. } => Status::resource_exhausted(message),
        UsersError::FailedPrecondition(_) => Status::failed_precondition(message),
        UsersError::KeyStore(_) => Status::unavailable(message),
        UsersError::Store(error) => convert::store_status(&error),
        UsersError::Ledger(error) => convert::status(error),
        UsersError::Randomness(_) | UsersError::Corrupt(_) | UsersError::Internal(_) => Status::internal(message),
    }
}

pub fn payments(error: PaymentsError) -> Status {
    let message = error.to_string();
    match error {
        PaymentsError::InvalidArgument { .. } | PaymentsError::InvalidRequest(_) => Status::invalid_argument(message),
        PaymentsError::NotFound(_) => Status::not_found(message),
        PaymentsError::AlreadyExists(_) => Status::already_exists(message),
        PaymentsError::Conflict(_) => Status::aborted(message),
        PaymentsError::PermissionDenied(_) => Status::permission_denied(message),
        PaymentsError::FailedPrecondition(_) => Status::failed_precondition(message),
        PaymentsError::Users(error) => users(error),
        PaymentsError::Fx(error) => fx(error),
        PaymentsError::Store(error) => convert::store_status(&error),
        PaymentsError::Ledger(error) => convert::status(error),
        PaymentsError::Randomness(_) | PaymentsError::Corrupt(_) | PaymentsError::Internal(_) => {
            Status::internal(message)
        }
    }
}

pub fn fx(error: FxError) -> Status {
    let message = error.to_string();
    match error {
        FxError::Rate(error) => rate(error),
        FxError::InvalidArgument { .. } | FxError::InvalidRequest(_) => Status::invalid_argument(message),
        FxError::NotFound(_) => Status::not_found(message),
        FxError::QuoteExpired { .. } | FxError::FailedPrecondition(_) => Status::failed_precondition(message),
        FxError::Users(error) => users(error),
        FxError::Store(error) => convert::store_status(&error),
        FxError::Ledger(error) => convert::status(error),
        FxError::Randomness(_) | FxError::Corrupt(_) | FxError::Internal(_) => Status::internal(message),
    }
}

pub fn rate(error: RateError) -> Status {
    let message = error.to_string();
    match error {
        RateError::NoRate(..) => Status::failed_precondition(message),
        RateError::Overflow | RateError::TooSmall | RateError::BadRate => Status::invalid_argument(message),
    }
}
