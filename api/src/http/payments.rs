//! Payments over HTTP: the seed's `POST /user/transaction` and
//! `GET /user/transactions`, one payment by id, money requests and their answers,
//! top-ups, withdrawals, refunds, reviews (admin) and monthly statements. Each handler
//! calls the `ledger.v1.Payments` method a gRPC client would.

use axum::extract::{Path, State as Shared};
use axum::http::StatusCode;
use axum::Json;
use ledger_core::money::{format_amount, Currency};
use ledger_proto::api::v1 as wire;
use ledger_proto::api::v1::payments_server::Payments as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, IdempotencyKey, JsonBody, Page, PageQuery, Params};
use super::idempotency::platform_reused;
use super::time::rfc3339;
use super::{call, State};
use crate::grpc::payments::parse_list_cursor;

pub fn routes() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(send))
        .routes(routes!(transactions))
        .routes(routes!(get_payment))
        .routes(routes!(request_money))
        .routes(routes!(answer_request))
        .routes(routes!(top_up))
        .routes(routes!(withdraw))
        .routes(routes!(refund))
        .routes(routes!(review))
        .routes(routes!(reviews))
        .routes(routes!(statement))
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
    key_of("client_transaction_id", header, body)
}

/// A creating call's key for the platform: the `Idempotency-Key` header or the body's
/// `field` (give either, or both equal); required, so that a retry cannot pay twice.
fn key_of(field: &str, header: Option<String>, body: &str) -> Result<String, ApiError> {
    match (header, body.is_empty()) {
        (Some(h), false) if h != body => Err(ApiError::invalid(field, "differs from the Idempotency-Key header")),
        (Some(h), _) => Ok(h),
        (None, false) => Ok(body.to_string()),
        (None, true) => {
            Err(ApiError::invalid(field, "required (or an Idempotency-Key header), so that a retry cannot pay twice"))
        }
    }
}

/// The `Idempotency-Key` header of a creating call whose body has no key field.
fn header_key(header: Option<String>) -> Result<String, ApiError> {
    header.ok_or_else(|| ApiError::invalid("Idempotency-Key", "required, so that a retry cannot pay twice"))
}

/// Sends money from the signed-in user to another user (the seed's transaction).
/// Answers the payment as soon as it is recorded (usually `created`); it then moves on
/// by itself (a wallet-to-wallet payment reaches `completed` within milliseconds):
/// give `wait_ms` to be answered once it settles, poll `GET /payments/{id}`, or register
/// a webhook.
#[utoipa::path(post, path = "/user/transaction", tag = "payments", security(("bearer" = [])),
    request_body = SendPayment,
    params(("Idempotency-Key" = Option<String>, Header, description = "Or client_transaction_id in the body"),
        PaymentWait),
    responses((status = 201, body = Payment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn send(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    Params(query): Params<PaymentWait>,
    body: JsonBody<SendPayment>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    let b = body.value;
    let wait_ms = query.wait_ms()?;
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
        wait_ms,
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
    let request = wire::ListPaymentsRequest {
        limit: page.limit as u32,
        after: grpc_cursor(&page)?,
        status: query.status.unwrap_or_default(),
        kind: query.kind.unwrap_or_default(),
        currency: query.currency.map(|c| c.to_ascii_uppercase()).unwrap_or_default(),
    };
    let listed = call(state.payments.list_payments(caller.grpc(request))).await?;
    Ok(Json(payment_page(listed)))
}

/// The page's `starting_after`, the same text as the gRPC cursor: checked here so an
/// error names the HTTP parameter, then passed on as it is.
fn grpc_cursor(page: &Page) -> Result<String, ApiError> {
    match page.after.as_deref() {
        None => Ok(String::new()),
        Some(text) if parse_list_cursor(text).is_some() => Ok(text.to_string()),
        Some(_) => Err(ApiError::invalid("starting_after", "a next_cursor from a previous page")),
    }
}

fn payment_page(listed: wire::ListPaymentsResponse) -> PaymentPage {
    let next_cursor = Some(listed.next_cursor).filter(|c| !c.is_empty());
    PaymentPage {
        data: listed.payments.into_iter().map(payment_json).collect(),
        has_more: next_cursor.is_some(),
        next_cursor,
    }
}

/// How long to wait for a payment to settle.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PaymentWait {
    /// Wait up to this many milliseconds (0 to 10000) for the payment to settle: to
    /// finish, or to wait on a person (a review, a request's payer). Absent or 0: answer
    /// at once.
    pub wait_ms: Option<String>,
}

impl PaymentWait {
    fn wait_ms(&self) -> Result<u32, ApiError> {
        match self.wait_ms.as_deref() {
            None => Ok(0),
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|ms| *ms <= crate::grpc::payments::WAIT_MS_MAX)
                .ok_or_else(|| ApiError::invalid("wait_ms", "a whole number of milliseconds from 0 to 10000")),
        }
    }
}

/// One payment the caller is a party of (or any, for an admin).
#[utoipa::path(get, path = "/payments/{id}", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "The payment id"), PaymentWait),
    responses((status = 200, body = Payment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_payment(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
    Params(query): Params<PaymentWait>,
) -> Result<Json<Payment>, ApiError> {
    let request = wire::GetPaymentRequest { payment_id: id, wait_ms: query.wait_ms()? };
    let payment = call(state.payments.get_payment(caller.grpc(request))).await?;
    Ok(Json(payment_json(payment)))
}

/// A request for money from another user (the payer), by email or user id.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMoneyRequest {
    /// One of `payer_email` and `payer_user_id`.
    #[serde(default)]
    pub payer_email: String,
    #[serde(default)]
    pub payer_user_id: String,
    /// Decimal string in the currency's major unit, e.g. `"12.50"`.
    pub amount: String,
    /// ISO 4217, e.g. `"USD"`.
    pub currency: String,
    /// Shown to both parties; kept sealed under its author's key.
    #[serde(default)]
    pub note: String,
}

/// Asks another user (the payer) for money. The payer answers with
/// `POST /payments/{id}/answer`; until then the payment is `created`.
#[utoipa::path(post, path = "/user/requests", tag = "payments", security(("bearer" = [])),
    request_body = NewMoneyRequest,
    params(("Idempotency-Key" = String, Header, description = "Required: a retry with the same key and body answers the same request")),
    responses((status = 201, body = Payment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn request_money(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<NewMoneyRequest>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    let b = body.value;
    let request = caller.grpc(wire::RequestMoneyRequest {
        idempotency_key: header_key(key)?,
        payer_user_id: b.payer_user_id,
        payer_email: b.payer_email,
        amount: b.amount,
        currency: b.currency,
        note: b.note,
    });
    let payment = call(state.payments.request_money(request)).await.map_err(platform_reused)?;
    Ok((StatusCode::CREATED, Json(payment_json(payment))))
}

/// The payer's answer to a money request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestAnswer {
    /// `true` pays the request, `false` declines it (it is then `cancelled`).
    pub approve: bool,
    /// How to pay: `wallet` (the default), `bank_account`, `card`, `digital_wallet`.
    #[serde(default)]
    pub funding: String,
    /// The payer's instrument when funding is not the wallet.
    #[serde(default)]
    pub instrument_id: String,
}

/// The payer of a money request pays it (choosing how) or declines it. Only the payer
/// may answer; to anyone else the request does not exist (404).
#[utoipa::path(post, path = "/payments/{id}/answer", tag = "payments", security(("bearer" = [])),
    request_body = RequestAnswer,
    params(("id" = String, Path, description = "The request's payment id")),
    responses((status = 200, body = Payment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn answer_request(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<RequestAnswer>,
) -> Result<Json<Payment>, ApiError> {
    let RequestAnswer { approve, funding, instrument_id } = body.value;
    let request = caller.grpc(wire::AnswerRequestRequest { payment_id: id, approve, funding, instrument_id });
    let payment = call(state.payments.answer_request(request)).await?;
    Ok(Json(payment_json(payment)))
}

/// Money moved between the signed-in user's wallet and one of their instruments.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WalletMovement {
    /// Decimal string in the currency's major unit, e.g. `"50.00"`.
    pub amount: String,
    /// ISO 4217: the wallet's currency.
    pub currency: String,
    /// A verified instrument of the user: for a top-up a bank account, card or digital
    /// wallet; for a withdrawal a bank account.
    pub instrument_id: String,
}

/// Tops up the signed-in user's wallet from one of their verified instruments (card
/// and digital wallet fees are charged on top). Poll `GET /payments/{id}` for the outcome.
#[utoipa::path(post, path = "/user/topups", tag = "payments", security(("bearer" = [])),
    request_body = WalletMovement,
    params(("Idempotency-Key" = String, Header, description = "Required: a retry with the same key and body answers the same top-up")),
    responses((status = 201, body = Payment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn top_up(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<WalletMovement>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    let WalletMovement { amount, currency, instrument_id } = body.value;
    let request =
        caller.grpc(wire::TopUpRequest { idempotency_key: header_key(key)?, amount, currency, instrument_id });
    let payment = call(state.payments.top_up(request)).await.map_err(platform_reused)?;
    Ok((StatusCode::CREATED, Json(payment_json(payment))))
}

/// Withdraws from the signed-in user's wallet to one of their verified bank accounts.
/// The money is held at once and paid out when the bank confirms.
#[utoipa::path(post, path = "/user/withdrawals", tag = "payments", security(("bearer" = [])),
    request_body = WalletMovement,
    params(("Idempotency-Key" = String, Header, description = "Required: a retry with the same key and body answers the same withdrawal")),
    responses((status = 201, body = Payment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn withdraw(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<WalletMovement>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    let WalletMovement { amount, currency, instrument_id } = body.value;
    let request =
        caller.grpc(wire::WithdrawRequest { idempotency_key: header_key(key)?, amount, currency, instrument_id });
    let payment = call(state.payments.withdraw(request)).await.map_err(platform_reused)?;
    Ok((StatusCode::CREATED, Json(payment_json(payment))))
}

/// A refund of a payment, in part or of what is left.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRefund {
    /// Decimal string in the payment's currency; absent or empty: what is left to refund.
    #[serde(default)]
    pub amount: String,
    /// The refund's own id, chosen by the client: the same as an `Idempotency-Key`
    /// header (give either, or both equal). A retry with it refunds once.
    #[serde(default)]
    pub refund_id: String,
}

/// Refunds a payment to its sender: by its receiver, or an admin. The answer is the
/// payment with its refunded amount (`partially_refunded` or `refunded`).
#[utoipa::path(post, path = "/payments/{id}/refunds", tag = "payments", security(("bearer" = [])),
    request_body = NewRefund,
    params(("id" = String, Path, description = "The payment id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Or refund_id in the body")),
    responses((status = 201, body = Payment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn refund(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<NewRefund>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    let NewRefund { amount, refund_id } = body.value;
    let refund_id = key_of("refund_id", key, &refund_id)?;
    let request = caller.grpc(wire::RefundRequest { payment_id: id, amount, refund_id });
    let payment = call(state.payments.refund(request)).await.map_err(platform_reused)?;
    Ok((StatusCode::CREATED, Json(payment_json(payment))))
}

/// An admin's decision on a payment held for review.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewDecision {
    /// `true` lets the payment go on; `false` rejects it (it fails, the hold is released).
    pub approve: bool,
}

/// Approves or rejects a payment held for review (admin token).
#[utoipa::path(post, path = "/payments/{id}/review", tag = "admin", security(("bearer" = [])),
    request_body = ReviewDecision,
    params(("id" = String, Path, description = "The payment id")),
    responses((status = 200, body = Payment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn review(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<ReviewDecision>,
) -> Result<Json<Payment>, ApiError> {
    let request = caller.grpc(wire::ReviewPaymentRequest { payment_id: id, approve: body.value.approve });
    let payment = call(state.payments.review_payment(request)).await?;
    Ok(Json(payment_json(payment)))
}

/// The payments waiting for review, newest first, cursor-paged (admin token).
#[utoipa::path(get, path = "/reviews", tag = "admin", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = PaymentPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn reviews(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(query): Params<PageQuery>,
) -> Result<Json<PaymentPage>, ApiError> {
    let page = query.page()?;
    let request = wire::ListReviewsRequest { limit: page.limit as u32, after: grpc_cursor(&page)? };
    Ok(Json(payment_page(call(state.payments.list_reviews(caller.grpc(request))).await?)))
}

/// Which statement: the month is in the path.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    /// One wallet's currency (ISO 4217); absent: a statement for every wallet.
    pub currency: Option<String>,
    /// The month's edges at this offset east of UTC, in minutes: whole quarter hours
    /// within 18 hours either way (default 0).
    pub utc_offset_minutes: Option<String>,
    /// Admins only: whose statement (a user reads their own and leaves it out).
    pub user_id: Option<String>,
}

/// One line of a statement: the wallet's posted movements of one transfer.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct StatementLine {
    pub at: String,
    /// The payment the transfer belongs to; absent for a conversion or an operator's transfer.
    pub payment_id: Option<String>,
    pub transfer_id: String,
    /// `top_up`, `withdrawal`, `payment_sent`, `payment_received`, `refund_sent`,
    /// `refund_received`, `conversion`, `fee`, `transfer`.
    pub kind: String,
    pub counterparty_name: String,
    pub note: String,
    /// Decimal strings in the statement's currency; never negative.
    pub amount_in: String,
    pub amount_out: String,
    pub fee: String,
    /// The balance after this line (may be negative).
    pub balance: String,
    /// Conversions: the customer's rate (1 from = rate to) and the other side.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fx_rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fx_other_amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fx_other_currency: Option<String>,
}

/// A wallet's monthly statement: opening + money_in - money_out - fees = closing.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Statement {
    pub user_id: String,
    pub holder_name: String,
    pub account_id: String,
    pub currency: String,
    /// `YYYY-MM`.
    pub month: String,
    pub utc_offset_minutes: i32,
    /// The month at the offset: [from, to).
    pub from: String,
    pub to: String,
    /// Decimal strings in the currency's major unit.
    pub opening: String,
    pub money_in: String,
    pub money_out: String,
    pub fees: String,
    pub closing: String,
    /// Oldest first.
    pub lines: Vec<StatementLine>,
}

/// The statements of one month, one per wallet, by currency.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Statements {
    pub data: Vec<Statement>,
}

fn service_fault(what: &str) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the service answered {what}"))
}

/// Minor units as the service writes them ("-1234") in the major unit ("-12.34").
fn major(minor: &str, currency: Currency) -> Result<String, ApiError> {
    let value: i128 = minor.parse().map_err(|_| service_fault("an amount that is not a number"))?;
    let text = format_amount(value.unsigned_abs(), currency);
    Ok(if value < 0 { format!("-{text}") } else { text })
}

fn currency_of(code: &str) -> Result<Currency, ApiError> {
    Currency::parse(code).map_err(|_| service_fault("an unknown currency"))
}

fn statement_json(s: wire::Statement) -> Result<Statement, ApiError> {
    let c = currency_of(&s.currency)?;
    let mut lines = Vec::with_capacity(s.lines.len());
    for l in s.lines {
        let (fx_other_amount, fx_other_currency) = if l.fx_other_currency.is_empty() {
            (None, None)
        } else {
            (Some(major(&l.fx_other_amount, currency_of(&l.fx_other_currency)?)?), Some(l.fx_other_currency))
        };
        lines.push(StatementLine {
            at: rfc3339(l.at_ns),
            payment_id: (!l.payment_id.is_empty()).then_some(l.payment_id),
            transfer_id: l.transfer_id,
            kind: l.kind,
            counterparty_name: l.counterparty_name,
            note: l.note,
            amount_in: major(&l.amount_in, c)?,
            amount_out: major(&l.amount_out, c)?,
            fee: major(&l.fee, c)?,
            balance: major(&l.balance, c)?,
            fx_rate: (!l.fx_rate.is_empty()).then_some(l.fx_rate),
            fx_other_amount,
            fx_other_currency,
        });
    }
    Ok(Statement {
        user_id: s.user_id,
        holder_name: s.holder_name,
        account_id: s.account_id,
        month: s.month,
        utc_offset_minutes: s.utc_offset_minutes,
        from: rfc3339(s.from_ns),
        to: rfc3339(s.to_ns),
        opening: major(&s.opening, c)?,
        money_in: major(&s.money_in, c)?,
        money_out: major(&s.money_out, c)?,
        fees: major(&s.fees, c)?,
        closing: major(&s.closing, c)?,
        currency: s.currency,
        lines,
    })
}

/// The signed-in user's statement of a calendar month (`YYYY-MM`), per wallet: its
/// opening and closing balances, money in and out, fees, and every posted movement.
#[utoipa::path(get, path = "/user/statements/{month}", tag = "payments", security(("bearer" = [])),
    params(("month" = String, Path, description = "The calendar month, `YYYY-MM`"), StatementQuery),
    responses((status = 200, body = Statements), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn statement(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(month): Path<String>,
    Params(query): Params<StatementQuery>,
) -> Result<Json<Statements>, ApiError> {
    let utc_offset_minutes = match query.utc_offset_minutes.as_deref() {
        None => 0,
        Some(text) => text
            .parse::<i32>()
            .map_err(|_| ApiError::invalid("utc_offset_minutes", "a whole number of minutes, such as 60 or -300"))?,
    };
    let request = caller.grpc(wire::GetStatementRequest {
        month,
        currency: query.currency.unwrap_or_default(),
        utc_offset_minutes,
        user_id: query.user_id.unwrap_or_default(),
    });
    let answer = call(state.payments.get_statement(request)).await?;
    let data = answer.statements.into_iter().map(statement_json).collect::<Result<_, _>>()?;
    Ok(Json(Statements { data }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_are_shown_in_the_major_unit_with_their_sign() {
        let currency = |code: &str| Currency::parse(code).expect("known");
        assert_eq!(major("-1234", currency("USD")).ok(), Some("-12.34".to_string()));
        assert_eq!(major("5", currency("USD")).ok(), Some("0.05".to_string()));
        assert_eq!(major("8059", currency("JPY")).ok(), Some("8059".to_string()));
        assert_eq!(major("20172", currency("BHD")).ok(), Some("20.172".to_string()));
        assert_eq!(major("12.5", currency("USD")).map_err(|e| e.status), Err(StatusCode::INTERNAL_SERVER_ERROR));
    }

    #[test]
    fn a_key_comes_from_the_header_or_the_body_and_both_must_agree() {
        let field = |r: Result<String, ApiError>| r.map_err(|e| e.field);
        assert_eq!(field(key_of("refund_id", Some("k".into()), "")), Ok("k".to_string()));
        assert_eq!(field(key_of("refund_id", None, "k")), Ok("k".to_string()));
        assert_eq!(field(key_of("refund_id", Some("k".into()), "k")), Ok("k".to_string()));
        assert_eq!(field(key_of("refund_id", Some("k".into()), "j")), Err(Some("refund_id".to_string())));
        assert_eq!(field(key_of("refund_id", None, "")), Err(Some("refund_id".to_string())));
        assert_eq!(field(header_key(None)), Err(Some("Idempotency-Key".to_string())));
    }
}
