//! Payments over HTTP: the seed's `POST /user/transaction` and
//! `GET /user/transactions`, and one payment by id. Each handler calls the
//! `ledger.v1.Payments` method a gRPC client would.

use axum::extract::{Path, State as Shared};
use axum::http::StatusCode;
use axum::Json;
use ledger_proto::api::v1 as wire;
use ledger_proto::api::v1::payments_server::Payments as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, IdempotencyKey, JsonBody, PageQuery, Params};
use super::idempotency::platform_reused;
use super::time::rfc3339;
use super::{call, State};

pub fn routes() -> OpenApiRouter<State> {
    OpenApiRouter::new().routes(routes!(send)).routes(routes!(transactions)).routes(routes!(get_payment))
}

/// One recorded step of a payment.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PaymentStep {
    pub at: String,
    pub step: String,
    /// `started`, `succeeded`, `failed`, `outcome_unknown`, …
    pub outcome: String,
    pub detail: String,
}

/// A payment as its parties (or an admin) see it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Payment {
    pub id: String,
    /// `send`, `request`, `top_up`, `withdrawal`.
    pub kind: String,
    /// `created`, `requires_review`, `processing`, `completed`, `failed`, `cancelled`,
    /// `refunded`, `partially_refunded`.
    pub status: String,
    /// Why it failed or was cancelled (`declined`, `insufficient_funds`, …).
    pub reason: String,
    /// `wallet`, `bank_account`, `card`, `digital_wallet`.
    pub funding: String,
    pub sender_id: String,
    pub receiver_id: String,
    /// Who pays, as the caller may see them.
    pub from_name: String,
    pub from_email: String,
    /// Who is paid.
    pub to_name: String,
    pub to_email: String,
    /// Decimal string in the currency's major unit.
    pub amount: String,
    pub fee: String,
    pub currency: String,
    pub refunded: String,
    /// What the receiver gets when it is another currency.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub receive_amount: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub receive_currency: String,
    pub note: String,
    pub created_at: String,
    pub updated_at: String,
    pub risk_score: u32,
    pub risk_decision: String,
    pub risk_reasons: Vec<String>,
    /// The ledger transfers behind the payment, in order.
    pub transfer_ids: Vec<String>,
    pub steps: Vec<PaymentStep>,
}

pub fn payment_json(p: wire::Payment) -> Payment {
    Payment {
        id: p.payment_id,
        kind: p.kind,
        status: p.status,
        reason: p.reason,
        funding: p.funding,
        sender_id: p.sender_id,
        receiver_id: p.receiver_id,
        from_name: p.from_name,
        from_email: p.from_email,
        to_name: p.to_name,
        to_email: p.to_email,
        amount: p.amount,
        fee: p.fee,
        currency: p.currency,
        refunded: p.refunded,
        receive_amount: p.receive_amount,
        receive_currency: p.receive_currency,
        note: p.note,
        created_at: rfc3339(p.created_at_ns),
        updated_at: rfc3339(p.updated_at_ns),
        risk_score: p.risk_score,
        risk_decision: p.risk_decision,
        risk_reasons: p.risk_reasons,
        transfer_ids: p.transfer_ids,
        steps: p
            .steps
            .into_iter()
            .map(|s| PaymentStep { at: rfc3339(s.at_ns), step: s.step, outcome: s.outcome, detail: s.detail })
            .collect(),
    }
}

/// A payment to another user, by email or user id.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendPayment {
    /// The seed's client transaction id: the same as an `Idempotency-Key` header (give
    /// either, or both equal). A retry with the same id and body answers the same payment.
    #[serde(default)]
    pub client_transaction_id: String,
    /// One of `receiver_email` and `receiver_user_id`.
    #[serde(default)]
    pub receiver_email: String,
    #[serde(default)]
    pub receiver_user_id: String,
    /// Decimal string in the currency's major unit, e.g. `"12.50"`.
    #[serde(default)]
    pub amount: String,
    /// ISO 4217, e.g. `"USD"`.
    #[serde(default)]
    pub currency: String,
    /// `wallet` (the default), `bank_account`, `card`, `digital_wallet`.
    #[serde(default)]
    pub funding: String,
    /// The sender's instrument when funding is not the wallet.
    #[serde(default)]
    pub instrument_id: String,
    /// Shown to both parties; kept sealed under its author's key.
    #[serde(default)]
    pub note: String,
    /// A cross-currency payment: a live quote of the sender's (`POST /fx/quotes`).
    #[serde(default)]
    pub quote_id: String,
}

/// The payment's idempotency key: the header or the body's `client_transaction_id`.
pub fn payment_key(header: Option<String>, body: &str) -> Result<String, ApiError> {
    match (header, body.is_empty()) {
        (Some(h), false) if h != body => {
            Err(ApiError::invalid("client_transaction_id", "differs from the Idempotency-Key header"))
        }
        (Some(h), _) => Ok(h),
        (None, false) => Ok(body.to_string()),
        (None, true) => Err(ApiError::invalid(
            "client_transaction_id",
            "required (or an Idempotency-Key header), so that a retry cannot pay twice",
        )),
    }
}

/// Sends money from the signed-in user to another user (the seed's transaction).
/// Answers the payment at once; wallet-to-wallet payments are usually `completed`
/// already, others move on (poll `GET /payments/{id}`).
#[utoipa::path(post, path = "/user/transaction", tag = "payments", security(("bearer" = [])),
    request_body = SendPayment,
    params(("Idempotency-Key" = Option<String>, Header, description = "Or client_transaction_id in the body")),
    responses((status = 201, body = Payment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn send(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<SendPayment>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    let b = body.value;
    let idempotency_key = payment_key(key, &b.client_transaction_id)?;
    let request = caller.grpc(wire::SendRequest {
        idempotency_key,
        receiver_user_id: b.receiver_user_id,
        receiver_email: b.receiver_email,
        amount: b.amount,
        currency: b.currency,
        funding: b.funding,
        instrument_id: b.instrument_id,
        note: b.note,
        quote_id: b.quote_id,
    });
    let payment = call(state.payments.send(request)).await.map_err(platform_reused)?;
    Ok((StatusCode::CREATED, Json(payment_json(payment))))
}

/// A page of items, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PaymentPage {
    pub data: Vec<Payment>,
    pub has_more: bool,
    /// Give it as `starting_after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The cursor of a payment in newest-first order: its creation time and id.
fn cursor(p: &wire::Payment) -> String {
    format!("{}_{}", p.created_at_ns, p.payment_id)
}

fn parse_cursor(text: &str) -> Result<(u64, u128), ApiError> {
    let bad = || ApiError::invalid("starting_after", "a next_cursor from a previous page");
    let (at, id) = text.split_once('_').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?))
}

/// Paging and filters of the transaction list.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TransactionsQuery {
    /// Items on the page, 1 to 100 (default 20).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    pub starting_after: Option<String>,
    /// The seed's name for `limit`.
    pub num_entries: Option<String>,
    /// The seed's name for `starting_after`.
    pub page: Option<String>,
    /// Only payments in this status.
    pub status: Option<String>,
    /// Only payments of this kind (`send`, `request`, `top_up`, `withdrawal`).
    pub kind: Option<String>,
    /// Only payments in this currency.
    pub currency: Option<String>,
}

/// A payment's place in newest-first order.
fn order_key(p: &wire::Payment) -> Result<(u64, u128), ApiError> {
    let id = p.payment_id.parse::<u128>().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the service answered a payment id that is not a number",
        )
    })?;
    Ok((p.created_at_ns, id))
}

/// The signed-in user's payments, newest first, cursor-paged: a page after a cursor
/// never repeats or skips a payment, also while new ones are made.
#[utoipa::path(get, path = "/user/transactions", tag = "payments", security(("bearer" = [])),
    params(TransactionsQuery),
    responses((status = 200, body = PaymentPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn transactions(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(query): Params<TransactionsQuery>,
) -> Result<Json<PaymentPage>, ApiError> {
    let page = PageQuery {
        limit: query.limit,
        starting_after: query.starting_after,
        num_entries: query.num_entries,
        page: query.page,
    }
    .page()?;
    let after = page.after.as_deref().map(parse_cursor).transpose()?;
    let all = call(state.payments.list_payments(caller.grpc(wire::ListPaymentsRequest {}))).await?;
    let mut kept = Vec::new();
    for p in all.payments {
        let key = order_key(&p)?;
        let wanted = query.status.as_ref().is_none_or(|s| &p.status == s)
            && query.kind.as_ref().is_none_or(|k| &p.kind == k)
            && query.currency.as_ref().is_none_or(|c| p.currency.eq_ignore_ascii_case(c))
            && after.is_none_or(|a| key < a);
        if wanted {
            kept.push((key, p));
        }
    }
    kept.sort_by_key(|(key, _)| std::cmp::Reverse(*key));
    let has_more = kept.len() > page.limit;
    kept.truncate(page.limit);
    let next_cursor = if has_more { kept.last().map(|(_, p)| cursor(p)) } else { None };
    Ok(Json(PaymentPage { data: kept.into_iter().map(|(_, p)| payment_json(p)).collect(), has_more, next_cursor }))
}

/// One payment the caller is a party of (or any, for an admin).
#[utoipa::path(get, path = "/payments/{id}", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "The payment id")),
    responses((status = 200, body = Payment), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_payment(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    let payment = call(state.payments.get_payment(caller.grpc(wire::GetPaymentRequest { payment_id: id }))).await?;
    Ok(Json(payment_json(payment)))
}
