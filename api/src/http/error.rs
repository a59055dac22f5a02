//! The one error shape of the HTTP API, `{ "error": { "code", "message", "field" } }`,
//! and its HTTP status, derived from the same typed errors as the gRPC answers: the
//! platform's and the ledger's errors become a gRPC status in exactly one place
//! (`grpc::status`, `convert`), and that status maps to HTTP here, in one `match`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;
use utoipa::ToSchema;

/// The metadata key carrying the platform error's stable `code()` on a gRPC status.
pub const ERROR_CODE_KEY: &str = "ledger-error-code";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

/// The body of every answer that is not a success.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorObject {
    /// A stable, machine-readable word: `invalid_request`, `not_found`,
    /// `idempotency_key_reused`, or the platform's code such as `USERS_THROTTLED`.
    pub code: String,
    /// For people; its wording may change.
    pub message: String,
    /// The request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError { status, code: code.to_string(), message: message.into(), field: None }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request".into(),
            message: format!("{field}: {message}"),
            field: Some(field.to_string()),
        }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
}

/// The HTTP status and default code of a gRPC code. Every code is named: a new one
/// does not compile until it has an HTTP status.
pub fn http_status(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::Ok => (StatusCode::OK, "ok"),
        Code::InvalidArgument | Code::OutOfRange => (StatusCode::BAD_REQUEST, "invalid_request"),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
        Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
        Code::Aborted => (StatusCode::CONFLICT, "conflict"),
        Code::FailedPrecondition => (StatusCode::UNPROCESSABLE_ENTITY, "failed_precondition"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
        Code::Unavailable | Code::Cancelled => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
        Code::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "data_loss"),
        Code::Internal | Code::Unknown => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// The field a gRPC message names: the services write invalid arguments as
/// `field: what is wrong` (`receiver_email: not found`, `transfers[3].amount: …`).
fn field_of(message: &str) -> Option<String> {
    let (field, _) = message.split_once(": ")?;
    let simple = !field.is_empty()
        && field.len() <= 64
        && field.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.[]".contains(&b));
    simple.then(|| field.to_string())
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        let (http, default_code) = http_status(status.code());
        let code = status
            .metadata()
            .get(ERROR_CODE_KEY)
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| default_code.to_string(), str::to_string);
        let field = match status.code() {
            Code::InvalidArgument | Code::NotFound | Code::OutOfRange => field_of(status.message()),
            _ => None,
        };
        ApiError { status: http, code, message: status.message().to_string(), field }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let retry_after =
            (status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE).then_some("1");
        let body = ErrorBody { error: ErrorObject { code: self.code, message: self.message, field: self.field } };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_http_with_the_platform_code_and_field() {
        let mut status = tonic::Status::invalid_argument("amount: at most 2 decimals");
        status.metadata_mut().insert(ERROR_CODE_KEY, "PAYMENTS_INVALID_ARGUMENT".parse().expect("ascii"));
        let error = ApiError::from(status);
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.code, "PAYMENTS_INVALID_ARGUMENT");
        assert_eq!(error.field.as_deref(), Some("amount"));

        let error = ApiError::from(tonic::Status::failed_precondition("insufficient funds: wallet"));
        assert_eq!(
            (error.status, error.code.as_str(), error.field),
            (StatusCode::UNPROCESSABLE_ENTITY, "failed_precondition", None)
        );
        let error = ApiError::from(tonic::Status::unauthenticated("unknown token"));
        assert_eq!((error.status, error.code.as_str()), (StatusCode::UNAUTHORIZED, "unauthenticated"));
        let error = ApiError::from(tonic::Status::invalid_argument("Not a field: x"));
        assert_eq!(error.field, None);
    }
}
