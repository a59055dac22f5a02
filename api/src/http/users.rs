//! Users over HTTP: sign-up, sign-in, the profile, and linked bank accounts. Each
//! handler calls the `ledger.v1.Users` method a gRPC client would.

use axum::extract::State as Shared;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use ledger_proto::api::v1 as wire;
use ledger_proto::api::v1::users_server::Users as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, IdempotencyKey, JsonBody};
use super::idempotency::once;
use super::time::{rfc3339, rfc3339_opt};
use super::{call, State};

pub fn routes() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(profile))
        .routes(routes!(sign_in))
        .routes(routes!(link_bank_account))
}

/// A new user's details.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    pub name: String,
    pub email: String,
    /// At least 12 characters, not a common password.
    pub password: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct UserCreated {
    pub user_id: String,
}

/// Signs up a user (no token needed). Sign in next with `POST /user/sessions`.
#[utoipa::path(post, path = "/user", tag = "users", request_body = SignUp,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = UserCreated), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn sign_up(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<SignUp>,
) -> Result<Response, ApiError> {
    let SignUp { name, email, password } = body.value;
    let request = caller.grpc(wire::RegisterRequest { name, email, password });
    once(&state.idempotency, &caller, "POST /user", key.as_deref(), &body.raw, StatusCode::CREATED, async {
        let created = call(state.users.register(request)).await?;
        Ok(UserCreated { user_id: created.user_id })
    })
    .await
}

/// A user's profile as they see it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Profile {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub address: String,
    /// `YYYY-MM-DD`, or empty.
    pub date_of_birth: String,
    pub totp_enabled: bool,
    pub registered_at: String,
}

pub fn profile_json(p: wire::UserProfile) -> Profile {
    Profile {
        user_id: p.user_id,
        name: p.name,
        email: p.email,
        phone: p.phone,
        address: p.address,
        date_of_birth: p.date_of_birth,
        totp_enabled: p.totp_enabled,
        registered_at: rfc3339(p.registered_at_ns),
    }
}

/// The signed-in user's profile.
#[utoipa::path(get, path = "/user", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Profile), (status = 401, body = ErrorBody)))]
pub async fn profile(Shared(state): Shared<State>, caller: Caller) -> Result<Json<Profile>, ApiError> {
    let profile = call(state.users.get_profile(caller.grpc(wire::UserRequest::default()))).await?;
    Ok(Json(profile_json(profile)))
}

/// Credentials for a new session.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub email: String,
    pub password: String,
    /// Required once the user enabled TOTP: a current code (or `recovery_code`).
    #[serde(default)]
    pub totp_code: String,
    #[serde(default)]
    pub recovery_code: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub user_id: String,
    /// The bearer token: shown once, kept by the server only as a hash.
    pub session_token: String,
    pub session_id: String,
    /// When the session ends if not used before.
    pub idle_expires_at: Option<String>,
    /// When the session ends at the latest.
    pub expires_at: Option<String>,
}

/// Signs in (no token needed): a new session and its bearer token.
#[utoipa::path(post, path = "/user/sessions", tag = "users", request_body = SignIn,
    responses((status = 201, body = Session), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn sign_in(
    Shared(state): Shared<State>,
    caller: Caller,
    body: JsonBody<SignIn>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let SignIn { email, password, totp_code, recovery_code } = body.value;
    let request = caller.grpc(wire::LoginRequest { email, password, totp_code, recovery_code });
    let s = call(state.users.login(request)).await?;
    Ok((
        StatusCode::CREATED,
        Json(Session {
            user_id: s.user_id,
            session_token: s.session_token,
            session_id: s.session_id,
            idle_expires_at: rfc3339_opt(s.idle_expires_at_ns),
            expires_at: rfc3339_opt(s.expires_at_ns),
        }),
    ))
}

/// A bank account to link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBankAccount {
    pub bank_name: String,
    /// ABA routing number: 9 digits with a valid checksum.
    pub routing_number: String,
    /// 4 to 17 digits; stored encrypted, shown masked.
    pub account_number: String,
    pub holder_name: String,
}

/// A linked payment method (bank account, card or digital wallet).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Instrument {
    pub instrument_id: String,
    /// `bank_account`, `card` or `digital_wallet`.
    pub kind: String,
    /// `pending_verification`, `verified` or `verification_failed`.
    pub status: String,
    pub is_default: bool,
    /// For people: "Bank of Examples ••••6789", "visa ••••4242 09/2030".
    pub display: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub bank_name: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub routing_number: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub account_number_masked: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub card_brand: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub card_last4: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub card_exp_month: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub card_exp_year: Option<u32>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub wallet_provider: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub wallet_handle_masked: String,
}

pub fn instrument_json(i: wire::PaymentInstrument) -> Instrument {
    let kind = match wire::InstrumentKind::try_from(i.kind) {
        Ok(wire::InstrumentKind::BankAccount) => "bank_account",
        Ok(wire::InstrumentKind::Card) => "card",
        Ok(wire::InstrumentKind::DigitalWallet) => "digital_wallet",
        Ok(wire::InstrumentKind::Unspecified) | Err(_) => "unspecified",
    };
    let status = match wire::InstrumentStatus::try_from(i.status) {
        Ok(wire::InstrumentStatus::PendingVerification) => "pending_verification",
        Ok(wire::InstrumentStatus::Verified) => "verified",
        Ok(wire::InstrumentStatus::VerificationFailed) => "verification_failed",
        Ok(wire::InstrumentStatus::Unspecified) | Err(_) => "unspecified",
    };
    let card = i.kind == wire::InstrumentKind::Card as i32;
    Instrument {
        instrument_id: i.instrument_id,
        kind: kind.into(),
        status: status.into(),
        is_default: i.is_default,
        display: i.display,
        bank_name: i.bank_name,
        routing_number: i.routing_number,
        account_number_masked: i.account_number_masked,
        card_brand: i.card_brand,
        card_last4: i.card_last4,
        card_exp_month: card.then_some(i.card_exp_month),
        card_exp_year: card.then_some(i.card_exp_year),
        wallet_provider: i.wallet_provider,
        wallet_handle_masked: i.wallet_handle_masked,
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct InstrumentAdded {
    pub instrument: Instrument,
    /// Sandbox only: the micro-deposits a real bank would show on the user's statement
    /// (in minor units), to verify the account with.
    pub sandbox_micro_deposits: Vec<u32>,
}

/// Links a bank account to the signed-in user; it is verified with micro-deposits.
#[utoipa::path(post, path = "/user/linked_accounts", tag = "payment methods", security(("bearer" = [])),
    request_body = NewBankAccount,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = InstrumentAdded), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn link_bank_account(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<NewBankAccount>,
) -> Result<Response, ApiError> {
    let NewBankAccount { bank_name, routing_number, account_number, holder_name } = body.value;
    let request = caller.grpc(wire::AddBankAccountRequest {
        user_id: String::new(),
        bank_name,
        routing_number,
        account_number,
        holder_name,
    });
    once(
        &state.idempotency,
        &caller,
        "POST /user/linked_accounts",
        key.as_deref(),
        &body.raw,
        StatusCode::CREATED,
        async {
            let added = call(state.users.add_bank_account(request)).await?;
            let instrument = added.instrument.ok_or_else(|| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the service answered no instrument")
            })?;
            Ok(InstrumentAdded {
                instrument: instrument_json(instrument),
                sandbox_micro_deposits: added.sandbox_micro_deposits,
            })
        },
    )
    .await
}
