//! The HTTP/JSON API (`--http-listen`, default `127.0.0.1:8080`): resources for people
//! and their apps over the same services as gRPC. Each handler checks the JSON it is
//! given, calls the gRPC service method a gRPC client would call (with the caller's
//! bearer token and address), and shapes the answer as JSON; so authentication, every
//! rule and every error are the gRPC API's, and there is no second implementation of
//! any of them. The OpenAPI 3.1 document is generated from the handlers' annotations
//! by the same calls that add their routes, so the two cannot drift.

pub mod admin;
pub mod error;
pub mod extract;
pub mod fx;
pub mod idempotency;
pub mod ledger;
pub mod methods;
pub mod openapi;
pub mod payments;
pub mod time;
pub mod users;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use self::error::ApiError;
use self::extract::BODY_BYTES_MAX;
use self::idempotency::Idempotency;
use crate::grpc::admin::AdminService;
use crate::grpc::fx::FxService;
use crate::grpc::payments::PaymentsService;
use crate::grpc::users::UsersService;
use crate::service::LedgerService;

/// Longest an HTTP call may run, as for gRPC calls.
pub const REQUEST_TIMEOUT: std::time::Duration = crate::server::REQUEST_TIMEOUT;

/// What handlers share: the gRPC services they call, and the idempotency answers.
pub struct HttpState {
    pub users: Arc<UsersService>,
    pub payments: Arc<PaymentsService>,
    pub fx: Arc<FxService>,
    pub ledger: Arc<LedgerService>,
    pub admin: Arc<AdminService>,
    pub idempotency: Idempotency,
    /// Webhook endpoints and their deliveries (not a gRPC service: HTTP only).
    pub webhooks: Arc<crate::webhooks::Webhooks>,
}

pub type State = Arc<HttpState>;

/// Every route with its OpenAPI description.
pub fn api() -> OpenApiRouter<State> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(users::routes())
        .merge(methods::routes())
        .merge(payments::routes())
        .merge(fx::routes())
        .merge(ledger::routes())
        .merge(admin::routes())
        .merge(webhooks::routes())
}

/// The router: the API, `/openapi.json`, `/docs`, and JSON errors for unknown routes
/// and bodies over `BODY_BYTES_MAX`.
pub fn router(state: State) -> Result<axum::Router, String> {
    let (router, document) = api().split_for_parts();
    let document = openapi::finish(document);
    Ok(router
        .merge(openapi::routes(&document)?)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route").into_response() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
                .into_response()
        })
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state))
}

/// Serves `router` on `listener` until `shutdown`, then lets calls in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Runs a service call within `REQUEST_TIMEOUT`, its status mapped to an `ApiError`.
pub async fn call<T>(future: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, ApiError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, future).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status.into()),
        Err(_) => Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded", "the call took too long")),
    }
}
