//! Webhook endpoints over HTTP: register, list, remove, the delivery log and resend.
//! A user's session token manages the user's endpoints (events of their payments); an
//! admin token manages every endpoint (an admin's endpoints get every payment's events).

use axum::extract::{Path, State as Shared};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, IdempotencyKey, JsonBody, PageQuery, Params};
use super::idempotency::once;
use super::time::{rfc3339, rfc3339_opt};
use super::State;
use crate::auth::Role;
use crate::grpc::users::Principal;
use crate::webhooks::{Delivery, Endpoint, Owner, WebhookError, ALL_EVENTS};

pub fn routes() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(delete_endpoint))
        .routes(routes!(reveal_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(resend_delivery))
}

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> ApiError {
        let message = error.to_string();
        match error {
            WebhookError::Invalid { field, message } => ApiError::invalid(field, message),
            WebhookError::EndpointNotFound => ApiError::not_found("webhook endpoint"),
            WebhookError::DeliveryNotFound => ApiError::not_found("delivery"),
            WebhookError::LimitReached(_) => ApiError::new(StatusCode::CONFLICT, "limit_reached", message),
            WebhookError::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            WebhookError::Store(_) | WebhookError::Database(_) | WebhookError::Random => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            WebhookError::Corrupt(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        }
    }
}

/// Who manages endpoints: the signed-in user, or the admins.
async fn owner(state: &State, caller: &Caller) -> Result<Owner, ApiError> {
    let principal = Principal::of(&state.users.users, &state.payments.tokens, &caller.grpc(())).await?;
    match principal {
        Principal::User(user) => Ok(Owner::User(user)),
        Principal::Role(Role::Admin) => Ok(Owner::Admin),
        Principal::Role(role) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            format!("role {role:?} may not manage webhooks: a user's session or an admin token"),
        )),
    }
}

/// A new endpoint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// `http://` or `https://`, at most 2,048 bytes, no credentials.
    pub url: String,
    /// Event types (`payment.created`, `payment.requires_review`, `payment.completed`,
    /// `payment.failed`, `payment.cancelled`, `payment.refunded`,
    /// `payment.partially_refunded`, `request.received`), or `["*"]` for all.
    pub enabled_events: Vec<String>,
}

/// A webhook endpoint.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpoint {
    /// `we_` and 32 hex digits.
    pub id: String,
    /// `admin` or `user:{id}`.
    pub owner: String,
    pub url: String,
    pub enabled_events: Vec<String>,
    pub created: String,
    /// `whsec_…`: signs every delivery (see `Ledger-Signature`). Only in the answer to
    /// the registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn endpoint_json(endpoint: &Endpoint, secret: Option<String>) -> WebhookEndpoint {
    WebhookEndpoint {
        id: endpoint.id.clone(),
        owner: endpoint.owner.as_text(),
        url: endpoint.url.clone(),
        enabled_events: if endpoint.event_types.is_empty() {
            vec![ALL_EVENTS.to_string()]
        } else {
            endpoint.event_types.iter().map(|t| t.to_string()).collect()
        },
        created: rfc3339(endpoint.created_ns),
        secret,
    }
}

/// Registers a webhook endpoint; the answer holds its signing secret.
#[utoipa::path(post, path = "/webhook_endpoints", tag = "webhooks", security(("bearer" = [])),
    request_body = NewEndpoint,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = WebhookEndpoint), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_endpoint(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<NewEndpoint>,
) -> Result<Response, ApiError> {
    let owner = owner(&state, &caller).await?;
    let NewEndpoint { url, enabled_events } = body.value;
    once(
        &state.idempotency,
        &caller,
        "POST /webhook_endpoints",
        key.as_deref(),
        &body.raw,
        StatusCode::CREATED,
        async {
            let webhooks = &state.webhooks;
            let endpoint = webhooks.endpoints.add(owner, &url, &enabled_events, ledger_engine::clock::now_ns()).await?;
            let secret = webhooks.signing.secret(&endpoint.id);
            Ok(endpoint_json(&endpoint, Some(secret)))
        },
    )
    .await
}

/// A page of endpoints, in id order.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct EndpointList {
    pub data: Vec<WebhookEndpoint>,
    pub has_more: bool,
    /// Give it as `starting_after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The caller's endpoints (an admin: every endpoint), in id order, cursor-paged.
#[utoipa::path(get, path = "/webhook_endpoints", tag = "webhooks", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = EndpointList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_endpoints(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(query): Params<PageQuery>,
) -> Result<Json<EndpointList>, ApiError> {
    let owner = owner(&state, &caller).await?;
    let page = query.page()?;
    let (endpoints, has_more) = state.webhooks.endpoints.page(owner, page.after.as_deref(), page.limit);
    let next_cursor = if has_more { endpoints.last().map(|e| e.id.clone()) } else { None };
    Ok(Json(EndpointList { data: endpoints.iter().map(|e| endpoint_json(e, None)).collect(), has_more, next_cursor }))
}

/// Removes an endpoint: nothing more is delivered to it.
#[utoipa::path(delete, path = "/webhook_endpoints/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_endpoint(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let owner = owner(&state, &caller).await?;
    state.webhooks.endpoints.remove(owner, &id, ledger_engine::clock::now_ns()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An endpoint's signing secret.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct EndpointSecret {
    /// `whsec_…`.
    pub secret: String,
}

/// The endpoint's signing secret again (it is derived, so it never changes).
#[utoipa::path(get, path = "/webhook_endpoints/{id}/secret", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint id")),
    responses((status = 200, body = EndpointSecret), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reveal_secret(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<EndpointSecret>, ApiError> {
    let owner = owner(&state, &caller).await?;
    let endpoint = state.webhooks.visible(owner, &id)?;
    Ok(Json(EndpointSecret { secret: state.webhooks.signing.secret(&endpoint.id) }))
}

/// One delivery of an event to an endpoint.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct WebhookDelivery {
    /// Also the cursor of the delivery log.
    pub id: String,
    pub endpoint_id: String,
    /// The `Ledger-Event-Id`: the same for every delivery (and resend) of one event.
    pub event_id: String,
    pub event_type: String,
    pub payment_id: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: u32,
    pub created: String,
    /// When it is tried next (pending only).
    pub next_attempt: Option<String>,
    pub last_attempt: Option<String>,
    /// The HTTP status of the last answer, if there was one.
    pub last_status: Option<u16>,
    pub last_error: String,
}

fn delivery_json(d: Delivery) -> WebhookDelivery {
    let ms = |ms: u64| rfc3339(ms.saturating_mul(1_000_000));
    WebhookDelivery {
        id: d.id.to_string(),
        endpoint_id: d.endpoint_id,
        event_id: d.event_id,
        event_type: d.event_type,
        payment_id: d.payment_id,
        state: d.state.as_str().to_string(),
        attempts: d.attempts,
        created: ms(d.created_ms),
        next_attempt: (d.state == crate::webhooks::DeliveryState::Pending).then(|| ms(d.next_attempt_ms)),
        last_attempt: d.last_attempt_ms.and_then(|t| rfc3339_opt(t.saturating_mul(1_000_000))),
        last_status: d.last_status,
        last_error: d.last_error,
    }
}

/// A page of deliveries, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeliveryPage {
    pub data: Vec<WebhookDelivery>,
    pub has_more: bool,
    /// Give it as `starting_after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The endpoint's delivery log (its last 1,000 finished deliveries and every pending
/// one), newest first, cursor-paged.
#[utoipa::path(get, path = "/webhook_endpoints/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint id"), PageQuery),
    responses((status = 200, body = DeliveryPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list_deliveries(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
    Params(query): Params<PageQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let owner = owner(&state, &caller).await?;
    let page = query.page()?;
    let after = match page.after {
        None => None,
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| ApiError::invalid("starting_after", "a next_cursor from a previous page"))?,
        ),
    };
    let (deliveries, has_more) = state.webhooks.deliveries(owner, &id, page.limit, after).await?;
    let next_cursor = if has_more { deliveries.last().map(|d| d.id.to_string()) } else { None };
    Ok(Json(DeliveryPage { data: deliveries.into_iter().map(delivery_json).collect(), has_more, next_cursor }))
}

/// Sends a delivery's event again, as a new delivery after the pending ones of its
/// payment (the event id stays the same, for receivers that deduplicate).
#[utoipa::path(post, path = "/webhook_endpoints/{id}/deliveries/{delivery_id}/resend", tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint id"), ("delivery_id" = String, Path, description = "The delivery id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = WebhookDelivery), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn resend_delivery(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let owner = owner(&state, &caller).await?;
    let delivery_id = delivery_id.parse::<u64>().map_err(|_| ApiError::not_found("delivery"))?;
    // The path is the request: the same key on another delivery is another body.
    let route = format!("/webhook_endpoints/{id}/deliveries/{delivery_id}/resend");
    once(&state.idempotency, &caller, "POST resend", key.as_deref(), route.as_bytes(), StatusCode::CREATED, async {
        Ok(delivery_json(state.webhooks.resend(owner, &id, delivery_id).await?))
    })
    .await
}
