//! Exchange over HTTP: the current rates (admins set them), quotes, their execution
//! into the caller's wallet or to another user, and the platform's position (admin).
//! Each handler calls the `ledger.v1.Fx` method a gRPC client would.

use axum::extract::{Path, State as Shared};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use ledger_proto::api::v1 as wire;
use ledger_proto::api::v1::fx_server::Fx as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, IdempotencyKey, JsonBody, PageQuery, Params};
use super::idempotency::once;
use super::time::rfc3339;
use super::{call, State};

/// Most rates one `PUT /fx/rates` may set.
pub const RATES_PER_REQUEST_MAX: usize = 200;
/// Longest rate source a request may name, in bytes.
pub const RATE_SOURCE_BYTES_MAX: usize = 64;

pub fn routes() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(rates))
        .routes(routes!(set_rates))
        .routes(routes!(quote))
        .routes(routes!(execute))
        .routes(routes!(position))
}

/// A mid rate: 1 `base` = `rate` `quote`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Rate {
    pub base: String,
    pub quote: String,
    /// A positive decimal string, e.g. `"1.085"`.
    pub rate: String,
    pub source: String,
    pub as_of: String,
}

fn rate_json(r: wire::Rate) -> Rate {
    Rate { base: r.base, quote: r.quote, rate: r.rate, source: r.source, as_of: rfc3339(r.as_of_ns) }
}

/// A page of rates, by pair (`base`, then `quote`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RatePage {
    pub data: Vec<Rate>,
    pub has_more: bool,
    /// Give it as `starting_after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The current mid rate of every pair, by pair, cursor-paged (the cursor is
/// `BASE/QUOTE`). Any signed-in user or role that may read.
#[utoipa::path(get, path = "/fx/rates", tag = "exchange", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = RatePage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn rates(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(query): Params<PageQuery>,
) -> Result<Json<RatePage>, ApiError> {
    let page = query.page()?;
    let after = match page.after.as_deref() {
        None => None,
        Some(text) => Some(
            text.split_once('/')
                .map(|(b, q)| (b.to_string(), q.to_string()))
                .ok_or_else(|| ApiError::invalid("starting_after", "a next_cursor from a previous page"))?,
        ),
    };
    let all = call(state.fx.list_rates(caller.grpc(wire::ListRatesRequest {}))).await?;
    let mut kept: Vec<wire::Rate> = all
        .rates
        .into_iter()
        .filter(|r| after.as_ref().is_none_or(|(b, q)| (r.base.as_str(), r.quote.as_str()) > (b.as_str(), q.as_str())))
        .collect();
    kept.sort_by(|a, b| (&a.base, &a.quote).cmp(&(&b.base, &b.quote)));
    let has_more = kept.len() > page.limit;
    kept.truncate(page.limit);
    let next_cursor = if has_more { kept.last().map(|r| format!("{}/{}", r.base, r.quote)) } else { None };
    Ok(Json(RatePage { data: kept.into_iter().map(rate_json).collect(), has_more, next_cursor }))
}

/// A mid rate to set.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRate {
    /// ISO 4217.
    pub base: String,
    /// ISO 4217.
    pub quote: String,
    /// 1 base = rate quote: a positive decimal string, e.g. `"1.085"`.
    pub rate: String,
    /// Where the rate came from, for the record.
    #[serde(default)]
    pub source: String,
}

/// Rates to set, all or none.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRates {
    /// 1 to 200 rates.
    pub rates: Vec<NewRate>,
}

/// The rates just set, as they now stand.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RatesSet {
    pub data: Vec<Rate>,
}

/// Sets mid rates (admin token). Every rate ever set is kept; a live quote keeps the
/// rate it was given. The same body again sets the same rates.
#[utoipa::path(put, path = "/fx/rates", tag = "exchange", security(("bearer" = [])),
    request_body = NewRates,
    responses((status = 200, body = RatesSet), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn set_rates(
    Shared(state): Shared<State>,
    caller: Caller,
    body: JsonBody<NewRates>,
) -> Result<Json<RatesSet>, ApiError> {
    let rates = body.value.rates;
    if rates.is_empty() || rates.len() > RATES_PER_REQUEST_MAX {
        return Err(ApiError::invalid("rates", format!("1 to {RATES_PER_REQUEST_MAX} rates")));
    }
    if let Some(i) = rates.iter().position(|r| r.source.len() > RATE_SOURCE_BYTES_MAX) {
        return Err(ApiError::invalid(&format!("rates[{i}].source"), format!("at most {RATE_SOURCE_BYTES_MAX} bytes")));
    }
    let pairs: Vec<(String, String)> =
        rates.iter().map(|r| (r.base.to_ascii_uppercase(), r.quote.to_ascii_uppercase())).collect();
    let rates = rates
        .into_iter()
        .map(|r| wire::Rate { base: r.base, quote: r.quote, rate: r.rate, source: r.source, as_of_ns: 0 })
        .collect();
    let all = call(state.fx.set_rates(caller.grpc(wire::SetRatesRequest { rates }))).await?;
    let data = all
        .rates
        .into_iter()
        .filter(|r| pairs.iter().any(|(b, q)| *b == r.base && *q == r.quote))
        .map(rate_json)
        .collect();
    Ok(Json(RatesSet { data }))
}

/// What to quote: exactly one of the amounts is fixed.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQuote {
    /// ISO 4217: what the caller sells.
    pub from_currency: String,
    /// ISO 4217: what is received.
    pub to_currency: String,
    /// The amount to sell (decimal string, major unit); or give `to_amount`.
    #[serde(default)]
    pub from_amount: String,
    /// The amount to receive; or give `from_amount`.
    #[serde(default)]
    pub to_amount: String,
}

/// A quote: the rate, both amounts and the fee, fixed until it expires.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Quote {
    pub id: String,
    pub from_currency: String,
    pub to_currency: String,
    /// Decimal strings in each currency's major unit.
    pub from_amount: String,
    pub to_amount: String,
    /// Charged in `from_currency` on top of `from_amount`.
    pub fee: String,
    pub mid_rate: String,
    /// The customer's rate: 1 from = rate to.
    pub rate: String,
    pub spread_bps: u32,
    pub expires_at: String,
    /// The mid rates the quote was built from.
    pub rates_used: Vec<String>,
}

fn quote_json(q: wire::Quote) -> Quote {
    Quote {
        id: q.quote_id,
        from_currency: q.from_currency,
        to_currency: q.to_currency,
        from_amount: q.from_amount,
        to_amount: q.to_amount,
        fee: q.fee,
        mid_rate: q.mid_rate,
        rate: q.rate,
        spread_bps: q.spread_bps,
        expires_at: rfc3339(q.expires_at_ns),
        rates_used: q.rates_used,
    }
}

/// Quotes a conversion for the signed-in user. Execute it with
/// `POST /fx/quotes/{id}/execute` before `expires_at`, or pay another user with it
/// (`quote_id` of `POST /user/transaction`).
#[utoipa::path(post, path = "/fx/quotes", tag = "exchange", security(("bearer" = [])),
    request_body = NewQuote,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer the same quote")),
    responses((status = 201, body = Quote), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn quote(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<NewQuote>,
) -> Result<Response, ApiError> {
    let NewQuote { from_currency, to_currency, from_amount, to_amount } = body.value;
    let request = caller.grpc(wire::GetQuoteRequest { from_currency, to_currency, from_amount, to_amount });
    once(&state.idempotency, &caller, "POST /fx/quotes", key.as_deref(), &body.raw, StatusCode::CREATED, async {
        Ok(quote_json(call(state.fx.get_quote(request)).await?))
    })
    .await
}

/// Where a conversion goes: absent, the caller's own wallet in the quote's currency.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ExecuteQuote {
    /// At most one of `receiver_user_id` and `receiver_email`.
    #[serde(default)]
    pub receiver_user_id: String,
    #[serde(default)]
    pub receiver_email: String,
}

/// A conversion: the quote executed and the ledger transfers that booked it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Conversion {
    pub quote: Quote,
    pub receiver_id: String,
    pub transfer_ids: Vec<String>,
}

/// Executes the signed-in user's live quote: sells `from_amount` (plus the fee) from
/// their wallet and pays `to_amount` into the receiver's wallet. Executing the same
/// quote again answers the same conversion and converts once. The body (`{}` for the
/// caller's own wallet) may name another user as the receiver.
#[utoipa::path(post, path = "/fx/quotes/{id}/execute", tag = "exchange", security(("bearer" = [])),
    request_body = ExecuteQuote,
    params(("id" = String, Path, description = "The quote id")),
    responses((status = 200, body = Conversion), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn execute(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<ExecuteQuote>,
) -> Result<Json<Conversion>, ApiError> {
    let ExecuteQuote { receiver_user_id, receiver_email } = body.value;
    let request = caller.grpc(wire::ExecuteQuoteRequest { quote_id: id, receiver_user_id, receiver_email });
    let done = call(state.fx.execute_quote(request)).await?;
    let quote = done.quote.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the service answered a conversion without its quote",
        )
    })?;
    Ok(Json(Conversion { quote: quote_json(quote), receiver_id: done.receiver_id, transfer_ids: done.transfer_ids }))
}

/// The currency to value the position in.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PositionQuery {
    /// ISO 4217 (default `USD`).
    pub value_in: Option<String>,
}

/// The platform's position in one currency.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CurrencyPosition {
    pub currency: String,
    /// What conversions brought in, less what they paid out and the spread earned
    /// (signed decimal string in the currency's major unit).
    pub position: String,
    pub fees: String,
    /// The spread earned in this currency.
    pub revenue: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Position {
    /// By currency.
    pub currencies: Vec<CurrencyPosition>,
    /// The spread earned in every currency, valued in `revenue_currency` at current mid rates.
    pub revenue: String,
    pub revenue_currency: String,
    pub rates_used: Vec<String>,
}

/// The platform's exchange position per currency and its spread revenue (admin token).
#[utoipa::path(get, path = "/fx/position", tag = "exchange", security(("bearer" = [])),
    params(PositionQuery),
    responses((status = 200, body = Position), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn position(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(query): Params<PositionQuery>,
) -> Result<Json<Position>, ApiError> {
    let request = caller.grpc(wire::GetPositionRequest { value_in: query.value_in.unwrap_or_default() });
    let p = call(state.fx.get_position(request)).await?;
    Ok(Json(Position {
        currencies: p
            .currencies
            .into_iter()
            .map(|c| CurrencyPosition { currency: c.currency, position: c.position, fees: c.fees, revenue: c.revenue })
            .collect(),
        revenue: p.revenue,
        revenue_currency: p.revenue_currency,
        rates_used: p.rates_used,
    }))
}
