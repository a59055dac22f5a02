//! The one mapping of the platform's typed errors to gRPC statuses. Each `match` names
//! every variant, so a new variant does not compile until it has a code here. The
//! message is the error's text, and the error's stable `code()` rides along in the
//! status metadata (`ledger-error-code`), where gRPC and HTTP clients both read it.

use ledger_platform::fx::{FxError, RateError};
use ledger_platform::payments::PaymentsError;
use ledger_platform::users::UsersError;
use tonic::Status;

use crate::convert;

pub fn users(error: UsersError) -> Status {
    let code = error.code();
    with_code(users_status(error), code)
}

fn users_status(error: UsersError) -> Status {
    let message = error.to_string();
    match error {
        UsersError::InvalidArgument { .. } | UsersError::InvalidRequest(_) | UsersError::WeakPassword(_) => {
            Status::invalid_argument(message)
        }
        UsersError::NotFound(_) => Status::not_found(message),
        UsersError::AlreadyExists(_) => Status::already_exists(message),
        UsersError::Unauthenticated(_) => Status::unauthenticated(message),
        UsersError::PermissionDenied(_) => Status::permission_denied(message),
        UsersError::Throttled { .. } | UsersError::Busy => Status::resource_exhausted(message),
        UsersError::FailedPrecondition(_) => Status::failed_precondition(message),
        UsersError::KeyStore(_) => Status::unavailable(message),
        UsersError::Store(error) => convert::store_status(&error),
        UsersError::Ledger(error) => convert::status(error),
        UsersError::Randomness(_) | UsersError::Seal(_) | UsersError::Corrupt(_) | UsersError::Internal(_) => {
            Status::internal(message)
        }
    }
}

pub fn payments(error: PaymentsError) -> Status {
    let code = error.code();
    with_code(payments_status(error), code)
}

fn payments_status(error: PaymentsError) -> Status {
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
    let code = error.code();
    with_code(fx_status(error), code)
}

fn fx_status(error: FxError) -> Status {
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
        FxError::Busy => Status::resource_exhausted(message),
    }
}

pub fn rate(error: RateError) -> Status {
    let code = error.code();
    with_code(rate_status(error), code)
}

fn rate_status(error: RateError) -> Status {
    let message = error.to_string();
    match error {
        RateError::NoRate(..) => Status::failed_precondition(message),
        RateError::Overflow | RateError::TooSmall | RateError::BadRate => Status::invalid_argument(message),
    }
}

/// `status` carrying the platform error's `code`.
fn with_code(mut status: Status, code: &'static str) -> Status {
    status.metadata_mut().insert(crate::http::error::ERROR_CODE_KEY, tonic::metadata::MetadataValue::from_static(code));
    status
}

#[cfg(test)]
mod tests {
    use ledger_platform::fx::{FxError, RateError};
    use ledger_platform::payments::PaymentsError;
    use ledger_platform::users::UsersError;
    use ledger_platform::FieldError;
    use tonic::Code;

    /// The codes and texts clients saw before the platform had typed errors.
    #[test]
    fn each_error_keeps_its_status_code_and_message() {
        let cases: Vec<(tonic::Status, Code, &str)> = vec![
            (
                super::users(FieldError::new("email", "must be name@domain").into()),
                Code::InvalidArgument,
                "email: must be name@domain",
            ),
            (super::users(UsersError::NotFound("instrument")), Code::NotFound, "instrument not found"),
            (
                super::users(UsersError::AlreadyExists("email: already registered")),
                Code::AlreadyExists,
                "email: already registered",
            ),
            (super::users(UsersError::Unauthenticated("unknown token")), Code::Unauthenticated, "unknown token"),
            (
                super::users(UsersError::Throttled { retry_after_secs: 7 }),
                Code::ResourceExhausted,
                "too many attempts; try again in 7 s",
            ),
            (
                super::users(UsersError::Randomness(ledger_platform::random::RandomError)),
                Code::Internal,
                "no randomness available",
            ),
            (super::payments(PaymentsError::NotFound("payment")), Code::NotFound, "payment not found"),
            (
                super::payments(PaymentsError::Conflict("a request with this idempotency key is in progress; retry")),
                Code::Aborted,
                "a request with this idempotency key is in progress; retry",
            ),
            (super::payments(PaymentsError::Users(UsersError::NotFound("user"))), Code::NotFound, "user not found"),
            (super::payments(PaymentsError::Fx(FxError::NotFound("quote"))), Code::NotFound, "quote not found"),
            (super::payments(PaymentsError::Corrupt("payment currency".into())), Code::Internal, "payment currency"),
            (
                super::fx(RateError::NoRate("EUR".into(), "JPY".into()).into()),
                Code::FailedPrecondition,
                "no rate for EUR/JPY",
            ),
            (
                super::fx(RateError::TooSmall.into()),
                Code::InvalidArgument,
                "the converted amount is less than one minor unit",
            ),
            (
                super::fx(FxError::QuoteExpired { expires_at_ns: 5 }),
                Code::FailedPrecondition,
                "the quote expired at 5 ns; ask for a new quote",
            ),
        ];
        for (status, code, message) in cases {
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }

    #[test]
    fn codes_are_stable_words() {
        assert_eq!(UsersError::Throttled { retry_after_secs: 1 }.code(), "USERS_THROTTLED");
        assert_eq!(PaymentsError::Users(UsersError::NotFound("user")).code(), "USERS_NOT_FOUND");
        assert_eq!(FxError::from(RateError::NoRate(String::new(), String::new())).code(), "FX_NO_RATE");
    }
}
