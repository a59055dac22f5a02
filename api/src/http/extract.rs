//! What a handler takes from an HTTP request: the caller (bearer token and address,
//! handed to the gRPC services unchanged so they apply the same rules), a JSON body
//! checked for size, type and unknown fields, and paging parameters.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpConnectInfo;
use utoipa::IntoParams;

use super::error::ApiError;

/// Largest request body accepted, in bytes (413 beyond it).
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Longest `Idempotency-Key`, in bytes (the platform keeps at most 64).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 64;
/// Items per page when `limit` is not given.
pub const PAGE_ITEMS_DEFAULT: usize = 20;
/// Most items one page may ask for.
pub const PAGE_ITEMS_MAX: usize = 100;

/// The caller of a request: its `Authorization` header and the address it came from.
#[derive(Clone)]
pub struct Caller {
    authorization: Option<HeaderValue>,
    remote: Option<SocketAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        let remote = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        Ok(Caller { authorization: parts.headers.get(header::AUTHORIZATION).cloned(), remote })
    }
}

impl Caller {
    /// A gRPC request carrying `message` with this caller's token and address, for the
    /// same service method a gRPC client would call.
    pub fn grpc<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = self.authorization.as_ref().and_then(|v| MetadataValue::try_from(v.as_bytes()).ok()) {
            request.metadata_mut().insert("authorization", value);
        }
        request.extensions_mut().insert(TcpConnectInfo { local_addr: None, remote_addr: self.remote });
        request
    }

    /// A key naming this caller's credential (a hash: the token itself is not kept),
    /// to scope idempotency keys per caller as payment APIs scope them per API key.
    pub fn scope(&self) -> [u8; 32] {
        let token = self.authorization.as_ref().map_or(&b""[..], |v| v.as_bytes());
        *blake3::hash(token).as_bytes()
    }
}

/// A JSON request body of type `T`: `Content-Type: application/json`, at most
/// `BODY_BYTES_MAX`, every field known (the types refuse unknown fields). Keeps the
/// raw bytes for idempotency checks.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody<T>, ApiError> {
        let json =
            request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
                v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        let raw = Bytes::from_request(request, state).await.map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {BODY_BYTES_MAX} bytes or could not be read"),
            )
        })?;
        let value = parse_json(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

/// `raw` as `T`, or an `invalid_request` naming the field serde stopped at.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|e| {
        let text = e.to_string();
        // serde says "unknown field `x`, expected …" and "missing field `x`"; other
        // messages quote the value in backticks ("invalid type: integer `-1`"), which is
        // not a field.
        let names_field =
            ["unknown field `", "missing field `", "duplicate field `", "`"].iter().any(|p| text.starts_with(p));
        let field =
            text.split('`').nth(1).filter(|f| names_field && f.len() <= 64 && !f.contains(' ')).map(str::to_string);
        let message = match e.classify() {
            serde_json::error::Category::Data => text.clone(),
            _ => format!("the body is not valid JSON: {text}"),
        };
        ApiError { field, ..ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_request", message) }
    })
}

/// The `Idempotency-Key` header, if given: printable ASCII, 1 to 64 bytes.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<IdempotencyKey, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| {
                !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_BYTES_MAX && k.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| {
                ApiError::invalid(
                    "Idempotency-Key",
                    format!("1 to {IDEMPOTENCY_KEY_BYTES_MAX} printable ASCII characters"),
                )
            })?;
        Ok(IdempotencyKey(Some(key.to_string())))
    }
}

/// Query parameters of type `T` (which refuses unknown ones); a bad query is an
/// `invalid_request` in the API's error shape.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Params<T>, ApiError> {
        match axum::extract::Query::<T>::try_from_uri(&parts.uri) {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let field = text.split('`').nth(1).filter(|f| f.len() <= 64 && !f.contains(' ')).map(str::to_string);
                Err(ApiError { field, ..ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_request", text) })
            }
        }
    }
}

/// Cursor paging: `limit` items after `starting_after` (the `next_cursor` of the page
/// before). The seed's `num_entries` and `page` are accepted as the same two.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items on the page, 1 to 100 (default 20).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    pub starting_after: Option<String>,
    /// The seed's name for `limit`.
    pub num_entries: Option<String>,
    /// The seed's name for `starting_after`.
    pub page: Option<String>,
}

/// A checked page request.
pub struct Page {
    pub limit: usize,
    pub after: Option<String>,
}

impl PageQuery {
    pub fn page(self) -> Result<Page, ApiError> {
        let (limit_field, limit) = match (self.limit, self.num_entries) {
            (Some(_), Some(_)) => return Err(ApiError::invalid("limit", "give limit or num_entries, not both")),
            (Some(l), None) => ("limit", Some(l)),
            (None, Some(n)) => ("num_entries", Some(n)),
            (None, None) => ("limit", None),
        };
        let limit = match limit {
            None => PAGE_ITEMS_DEFAULT,
            Some(text) => {
                text.parse::<usize>().ok().filter(|n| (1..=PAGE_ITEMS_MAX).contains(n)).ok_or_else(|| {
                    ApiError::invalid(limit_field, format!("a whole number from 1 to {PAGE_ITEMS_MAX}"))
                })?
            }
        };
        let after = match (self.starting_after, self.page) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("starting_after", "give starting_after or page, not both"))
            }
            (a, p) => a.or(p),
        };
        if after.as_ref().is_some_and(|a| a.is_empty() || a.len() > 128) {
            return Err(ApiError::invalid("starting_after", "a next_cursor from a previous page"));
        }
        Ok(Page { limit, after })
    }
}
