//! Payment methods and wallets over HTTP: cards and digital wallets (bank accounts are
//! linked in `users.rs`), verifying, choosing the default and removing any instrument,
//! lists of them, and the user's wallet accounts with their balances. Each handler
//! calls the `ledger.v1.Users` method a gRPC client would.
//!
//! A card's number and CVV are taken from the body, handed to the service and dropped:
//! no answer, error or log holds them (a number given as a JSON number is refused
//! without repeating it), and the idempotency check remembers only a digest keyed with
//! a random key of this process.

use std::sync::OnceLock;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State as Shared};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use ledger_proto::api::v1 as wire;
use ledger_proto::api::v1::users_server::Users as _;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, IdempotencyKey, JsonBody, PageQuery, Params};
use super::idempotency::once;
use super::users::{instrument_json, page_of, path_id, Deleted, Instrument, InstrumentAdded};
use super::{call, State};

pub fn routes() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(linked_accounts))
        .routes(routes!(add_card))
        .routes(routes!(cards))
        .routes(routes!(add_digital_wallet))
        .routes(routes!(digital_wallets))
        .routes(routes!(instruments))
        .routes(routes!(verify_instrument))
        .routes(routes!(set_default_instrument))
        .routes(routes!(remove_instrument))
        .routes(routes!(open_wallet))
        .routes(routes!(wallets))
}

/// A page of payment instruments, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct InstrumentPage {
    pub data: Vec<Instrument>,
    pub has_more: bool,
    /// Give it as `starting_after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The caller's instruments of `kind` (all with `None`), newest first, paged. An
/// instrument's place is its place in the order they were added (the service lists
/// them so), and the cursor is the last instrument's id: new instruments come before
/// it and the rest keep their order. A cursor naming an instrument removed since is
/// refused (400 `starting_after`): start again from the first page.
async fn instrument_page(
    state: &State,
    caller: &Caller,
    query: PageQuery,
    kind: Option<wire::InstrumentKind>,
) -> Result<Json<InstrumentPage>, ApiError> {
    let page = query.page()?;
    let all = call(state.users.list_instruments(caller.grpc(wire::UserRequest::default()))).await?;
    let after = match page.after.as_deref() {
        None => None,
        Some(id) => Some(all.instruments.iter().position(|i| i.instrument_id == id).ok_or_else(|| {
            ApiError::invalid("starting_after", "no such instrument (removed since?); start from the first page")
        })?),
    };
    let items =
        all.instruments.into_iter().enumerate().filter(|(_, i)| kind.is_none_or(|k| i.kind == k as i32)).collect();
    let (data, has_more, _) = page_of(items, after.as_ref(), page.limit);
    let next_cursor = if has_more { data.last().map(|i| i.instrument_id.clone()) } else { None };
    Ok(Json(InstrumentPage { data: data.into_iter().map(instrument_json).collect(), has_more, next_cursor }))
}

/// The signed-in user's linked bank accounts, newest first, cursor-paged.
#[utoipa::path(get, path = "/user/linked_accounts", tag = "payment methods", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = InstrumentPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn linked_accounts(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(query): Params<PageQuery>,
) -> Result<Json<InstrumentPage>, ApiError> {
    instrument_page(&state, &caller, query, Some(wire::InstrumentKind::BankAccount)).await
}

/// The signed-in user's cards, newest first, cursor-paged.
#[utoipa::path(get, path = "/user/cards", tag = "payment methods", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = InstrumentPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn cards(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(query): Params<PageQuery>,
) -> Result<Json<InstrumentPage>, ApiError> {
    instrument_page(&state, &caller, query, Some(wire::InstrumentKind::Card)).await
}

/// The signed-in user's digital wallets, newest first, cursor-paged.
#[utoipa::path(get, path = "/user/digital_wallets", tag = "payment methods", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = InstrumentPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn digital_wallets(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(query): Params<PageQuery>,
) -> Result<Json<InstrumentPage>, ApiError> {
    instrument_page(&state, &caller, query, Some(wire::InstrumentKind::DigitalWallet)).await
}

/// Every instrument of the signed-in user (bank accounts, cards, digital wallets),
/// newest first, cursor-paged.
#[utoipa::path(get, path = "/user/instruments", tag = "payment methods", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = InstrumentPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn instruments(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(query): Params<PageQuery>,
) -> Result<Json<InstrumentPage>, ApiError> {
    instrument_page(&state, &caller, query, None).await
}

/// A string that must not be repeated: a wrong JSON type is refused naming only the
/// field (serde's own message would quote the value).
fn secret<'de, D: Deserializer<'de>>(field: &'static str, deserializer: D) -> Result<String, D::Error> {
    struct Visitor(&'static str);
    impl serde::de::Visitor<'_> for Visitor {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<String, E> {
            Err(self.refuse())
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<String, E> {
            Err(self.refuse())
        }
        fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<String, E> {
            Err(self.refuse())
        }
        fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<String, E> {
            Err(self.refuse())
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<String, E> {
            Err(self.refuse())
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<String, E> {
            Err(self.refuse())
        }
    }
    impl Visitor {
        fn refuse<E: serde::de::Error>(&self) -> E {
            E::custom(format_args!("`{}` must be a JSON string of digits", self.0))
        }
    }
    // `deserialize_any`: serde_json hands a wrong type to the visitor (which refuses
    // it without the value) instead of writing its own message quoting it.
    deserializer.deserialize_any(Visitor(field))
}

fn card_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    secret("number", deserializer)
}

fn card_cvv<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    secret("cvv", deserializer)
}

/// A card to add. The number and CVV go to the card vault and are never stored or
/// shown; the card is kept as the vault's token, brand, last four digits and expiry.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCard {
    /// 12 to 19 digits (spaces allowed), checked with Luhn.
    #[serde(deserialize_with = "card_number")]
    pub number: String,
    /// 1 to 12.
    pub exp_month: u32,
    /// Four digits, e.g. 2031.
    pub exp_year: u32,
    /// 3 digits (4 for American Express).
    #[serde(deserialize_with = "card_cvv")]
    pub cvv: String,
    #[serde(default)]
    pub holder_name: String,
}

/// A digest of a body holding card data for the idempotency check, keyed with a
/// random key of this process: what is remembered tells nothing about the card.
fn card_body_digest(raw: &[u8]) -> Result<[u8; 32], ApiError> {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = match KEY.get() {
        Some(key) => *key,
        None => {
            let fresh = ledger_platform::random::bytes::<32>().map_err(|_| {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "no randomness from the system")
            })?;
            *KEY.get_or_init(|| fresh)
        }
    };
    Ok(*blake3::keyed_hash(&key, raw).as_bytes())
}

/// Adds a card to the signed-in user; it is verified by the card vault at once.
#[utoipa::path(post, path = "/user/cards", tag = "payment methods", security(("bearer" = [])),
    request_body = NewCard,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = InstrumentAdded), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn add_card(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<NewCard>,
) -> Result<Response, ApiError> {
    let digest = card_body_digest(&body.raw)?;
    let NewCard { number, exp_month, exp_year, cvv, holder_name } = body.value;
    let request =
        caller.grpc(wire::AddCardRequest { user_id: String::new(), number, exp_month, exp_year, cvv, holder_name });
    once(&state.idempotency, &caller, "POST /user/cards", key.as_deref(), &digest, StatusCode::CREATED, async {
        added(call(state.users.add_card(request)).await?)
    })
    .await
}

fn added(answer: wire::AddInstrumentResponse) -> Result<InstrumentAdded, ApiError> {
    let instrument = answer.instrument.ok_or_else(|| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the service answered no instrument")
    })?;
    Ok(InstrumentAdded {
        instrument: instrument_json(instrument),
        sandbox_micro_deposits: answer.sandbox_micro_deposits,
    })
}

/// A digital wallet to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDigitalWallet {
    /// `paypal`, `apple_pay`, `google_pay`, `venmo`, `alipay` or `wechat_pay`.
    pub provider: String,
    /// An email address or an E.164 phone number; shown masked.
    pub handle: String,
}

/// Adds a digital wallet to the signed-in user.
#[utoipa::path(post, path = "/user/digital_wallets", tag = "payment methods", security(("bearer" = [])),
    request_body = NewDigitalWallet,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = InstrumentAdded), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn add_digital_wallet(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<NewDigitalWallet>,
) -> Result<Response, ApiError> {
    let NewDigitalWallet { provider, handle } = body.value;
    let request = caller.grpc(wire::AddDigitalWalletRequest { user_id: String::new(), provider, handle });
    once(
        &state.idempotency,
        &caller,
        "POST /user/digital_wallets",
        key.as_deref(),
        &body.raw,
        StatusCode::CREATED,
        async { added(call(state.users.add_digital_wallet(request)).await?) },
    )
    .await
}

/// The micro-deposits seen on the bank statement.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MicroDeposits {
    /// The two amounts, in minor units (cents), in either order.
    pub amounts: Vec<u32>,
}

/// Verifies a bank account with its two micro-deposits (three tries). A verified
/// instrument answers as it is.
#[utoipa::path(post, path = "/user/instruments/{id}/verify", tag = "payment methods", security(("bearer" = [])),
    params(("id" = String, Path, description = "An instrument_id")), request_body = MicroDeposits,
    responses((status = 200, body = Instrument), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn verify_instrument(
    Shared(state): Shared<State>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: JsonBody<MicroDeposits>,
) -> Result<Json<Instrument>, ApiError> {
    let instrument_id = path_id(id, "id")?;
    let request = caller.grpc(wire::VerifyInstrumentRequest {
        user_id: String::new(),
        instrument_id,
        amounts: body.value.amounts,
    });
    Ok(Json(instrument_json(call(state.users.verify_instrument(request)).await?)))
}

/// Makes a verified instrument the signed-in user's default.
#[utoipa::path(post, path = "/user/instruments/{id}/default", tag = "payment methods", security(("bearer" = [])),
    params(("id" = String, Path, description = "An instrument_id")),
    responses((status = 200, body = Instrument), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_default_instrument(
    Shared(state): Shared<State>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Instrument>, ApiError> {
    let instrument_id = path_id(id, "id")?;
    let request = caller.grpc(wire::InstrumentRequest { user_id: String::new(), instrument_id });
    Ok(Json(instrument_json(call(state.users.set_default_instrument(request)).await?)))
}

/// Removes one of the signed-in user's instruments (another user's is 404, as one that
/// does not exist).
#[utoipa::path(delete, path = "/user/instruments/{id}", tag = "payment methods", security(("bearer" = [])),
    params(("id" = String, Path, description = "An instrument_id")),
    responses((status = 200, body = Deleted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_instrument(
    Shared(state): Shared<State>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let instrument_id = path_id(id, "id")?;
    let request = caller.grpc(wire::InstrumentRequest { user_id: String::new(), instrument_id: instrument_id.clone() });
    call(state.users.remove_instrument(request)).await?;
    Ok(Json(Deleted { deleted: true, id: Some(instrument_id) }))
}

/// A wallet account of the user in one currency.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Wallet {
    /// ISO 4217.
    pub currency: String,
    /// The ledger account behind it.
    pub account_id: String,
    /// Posted credits minus posted debits, a decimal string in the currency.
    pub balance: String,
    /// The balance minus pending debits (holds).
    pub available: String,
}

fn wallet_json(w: wire::Wallet) -> Wallet {
    Wallet { currency: w.currency, account_id: w.account_id, balance: w.balance, available: w.available }
}

/// The currency of a new wallet.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWallet {
    /// ISO 4217, e.g. `"EUR"`.
    pub currency: String,
}

/// Opens the signed-in user's wallet in a currency; if it is open already, answers it.
#[utoipa::path(post, path = "/user/wallets", tag = "wallets", security(("bearer" = [])), request_body = NewWallet,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = Wallet), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn open_wallet(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<NewWallet>,
) -> Result<Response, ApiError> {
    let request = caller.grpc(wire::OpenWalletRequest { user_id: String::new(), currency: body.value.currency });
    once(&state.idempotency, &caller, "POST /user/wallets", key.as_deref(), &body.raw, StatusCode::CREATED, async {
        Ok(wallet_json(call(state.users.open_wallet(request)).await?))
    })
    .await
}

/// A page of wallets, by currency code.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct WalletPage {
    pub data: Vec<Wallet>,
    pub has_more: bool,
    /// Give it as `starting_after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The signed-in user's wallets with their balances, in currency code order (a wallet
/// has no time of its own), cursor-paged: the cursor is the last currency.
#[utoipa::path(get, path = "/user/wallets", tag = "wallets", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = WalletPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn wallets(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(query): Params<PageQuery>,
) -> Result<Json<WalletPage>, ApiError> {
    let page = query.page()?;
    let after = page.after.map(std::cmp::Reverse);
    let all = call(state.users.list_wallets(caller.grpc(wire::UserRequest::default()))).await?;
    let items = all.wallets.into_iter().map(|w| (std::cmp::Reverse(w.currency.clone()), w)).collect();
    let (data, has_more, last) = page_of(items, after.as_ref(), page.limit);
    Ok(Json(WalletPage {
        data: data.into_iter().map(wallet_json).collect(),
        has_more,
        next_cursor: last.map(|std::cmp::Reverse(currency)| currency),
    }))
}
