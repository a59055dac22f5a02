//! Users over HTTP: sign-up, sign-in, the profile, linking a bank account, and the
//! account's security: password, sessions, security events, the second factor and
//! deletion. Each handler calls the `ledger.v1.Users` method a gRPC client would.
//! (Payment methods and wallets are in `methods.rs`.)

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State as Shared};
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
use super::extract::{Caller, IdempotencyKey, JsonBody, PageQuery, Params};
use super::idempotency::once;
use super::time::{rfc3339, rfc3339_opt};
use super::{call, State};

pub fn routes() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(profile))
        .routes(routes!(sign_in))
        .routes(routes!(link_bank_account))
        .routes(routes!(update_profile))
        .routes(routes!(delete_user))
        .routes(routes!(change_password))
        .routes(routes!(sign_out))
        .routes(routes!(sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(security_events))
        .routes(routes!(enroll_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(disable_totp))
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
    responses((status = 201, body = UserCreated), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "Too many sign-ups from this address in the last hour")))]
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

/// What a `DELETE` answers: the thing is gone.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// Always `true`.
    pub deleted: bool,
    /// The id of what was deleted, when it has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
}

/// A path segment as an id, or an `invalid_request` naming it (instead of axum's
/// plain-text rejection).
pub fn path_id(path: Result<Path<String>, PathRejection>, field: &str) -> Result<String, ApiError> {
    match path {
        Ok(Path(id)) if !id.is_empty() => Ok(id),
        _ => Err(ApiError::invalid(field, "an id from a previous answer")),
    }
}

/// A checked page of `items`, each with its place `K` in the list's order (the larger
/// first): the `limit` items after `after`, whether more follow, and the place of the
/// last one (the next cursor).
pub fn page_of<K: Ord + Clone, T>(
    mut items: Vec<(K, T)>,
    after: Option<&K>,
    limit: usize,
) -> (Vec<T>, bool, Option<K>) {
    items.retain(|(key, _)| after.is_none_or(|a| key < a));
    items.sort_by(|a, b| b.0.cmp(&a.0));
    let has_more = items.len() > limit;
    items.truncate(limit);
    let last = if has_more { items.last().map(|(key, _)| key.clone()) } else { None };
    (items.into_iter().map(|(_, item)| item).collect(), has_more, last)
}

/// A cursor `{nanoseconds}_{rest}`, or the `starting_after` error.
pub fn parse_time_cursor(text: &str) -> Result<(u64, &str), ApiError> {
    let bad = || ApiError::invalid("starting_after", "a next_cursor from a previous page");
    let (at, rest) = text.split_once('_').ok_or_else(bad)?;
    let at = at.parse::<u64>().map_err(|_| bad())?;
    if rest.is_empty() {
        return Err(bad());
    }
    Ok((at, rest))
}

/// Changes to the profile: only the fields given change. Changing the email needs
/// `current_password` (and `totp_code` once the second factor is on).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileChanges {
    pub name: Option<String>,
    pub email: Option<String>,
    /// E.164, e.g. `+442079460958`.
    pub phone: Option<String>,
    pub address: Option<String>,
    /// `YYYY-MM-DD`.
    pub date_of_birth: Option<String>,
    #[serde(default)]
    pub current_password: String,
    #[serde(default)]
    pub totp_code: String,
}

/// Updates the signed-in user's profile; answers the profile as it is now.
#[utoipa::path(patch, path = "/user", tag = "users", security(("bearer" = [])), request_body = ProfileChanges,
    responses((status = 200, body = Profile), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_profile(
    Shared(state): Shared<State>,
    caller: Caller,
    body: JsonBody<ProfileChanges>,
) -> Result<Json<Profile>, ApiError> {
    let ProfileChanges { name, email, phone, address, date_of_birth, current_password, totp_code } = body.value;
    let request = caller.grpc(wire::UpdateProfileRequest {
        user_id: String::new(),
        name,
        email,
        phone,
        address,
        date_of_birth,
        current_password,
        totp_code,
    });
    let profile = call(state.users.update_profile(request)).await?;
    Ok(Json(profile_json(profile)))
}

/// The current password (and a TOTP code once the second factor is on), for
/// sensitive changes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reauth {
    pub current_password: String,
    #[serde(default)]
    pub totp_code: String,
}

fn reauth(body: Reauth) -> wire::ReauthRequest {
    wire::ReauthRequest { user_id: String::new(), current_password: body.current_password, totp_code: body.totp_code }
}

/// Deletes the signed-in user (refused with 422 while a wallet holds money): their
/// wallets are closed and their personal data made unreadable everywhere.
#[utoipa::path(delete, path = "/user", tag = "users", security(("bearer" = [])), request_body = Reauth,
    responses((status = 200, body = Deleted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn delete_user(
    Shared(state): Shared<State>,
    caller: Caller,
    body: JsonBody<Reauth>,
) -> Result<Json<Deleted>, ApiError> {
    let me = call(state.users.get_profile(caller.grpc(wire::UserRequest::default()))).await?;
    call(state.users.delete_user(caller.grpc(reauth(body.value)))).await?;
    Ok(Json(Deleted { deleted: true, id: Some(me.user_id) }))
}

/// A new password, with the current one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    /// Required once the second factor is on.
    #[serde(default)]
    pub totp_code: String,
    /// At least 12 characters, not a common password.
    pub new_password: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PasswordChanged {
    /// Every other session of the user was ended.
    pub sessions_ended: u32,
}

/// Changes the signed-in user's password and ends every other session.
#[utoipa::path(post, path = "/user/password", tag = "users", security(("bearer" = [])),
    request_body = PasswordChange,
    responses((status = 200, body = PasswordChanged), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn change_password(
    Shared(state): Shared<State>,
    caller: Caller,
    body: JsonBody<PasswordChange>,
) -> Result<Json<PasswordChanged>, ApiError> {
    let PasswordChange { current_password, totp_code, new_password } = body.value;
    let request =
        caller.grpc(wire::ChangePasswordRequest { user_id: String::new(), current_password, totp_code, new_password });
    let changed = call(state.users.change_password(request)).await?;
    Ok(Json(PasswordChanged { sessions_ended: changed.sessions_ended }))
}

/// Signs out: ends the session whose token the call carries.
#[utoipa::path(delete, path = "/user/sessions/current", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn sign_out(Shared(state): Shared<State>, caller: Caller) -> Result<Json<Deleted>, ApiError> {
    call(state.users.logout(caller.grpc(wire::LogoutRequest {}))).await?;
    Ok(Json(Deleted { deleted: true, id: None }))
}

/// A live session of the user.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub session_id: String,
    pub started_at: String,
    pub last_seen_at: String,
    /// When it ends if not used before.
    pub expires_at: String,
    /// The address it was started from.
    pub source: String,
    /// The session this call was made with.
    pub current: bool,
}

/// A page of sessions, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SessionPage {
    pub data: Vec<SessionInfo>,
    pub has_more: bool,
    /// Give it as `starting_after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The signed-in user's live sessions, newest first (by start, then id), cursor-paged.
#[utoipa::path(get, path = "/user/sessions", tag = "users", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = SessionPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn sessions(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(query): Params<PageQuery>,
) -> Result<Json<SessionPage>, ApiError> {
    let page = query.page()?;
    let after = page.after.as_deref().map(parse_time_cursor).transpose()?.map(|(at, id)| (at, id.to_string()));
    let all = call(state.users.list_sessions(caller.grpc(wire::UserRequest::default()))).await?;
    let items = all.sessions.into_iter().map(|s| ((s.started_at_ns, s.session_id.clone()), s)).collect();
    let (data, has_more, last) = page_of(items, after.as_ref(), page.limit);
    Ok(Json(SessionPage {
        data: data
            .into_iter()
            .map(|s| SessionInfo {
                session_id: s.session_id,
                started_at: rfc3339(s.started_at_ns),
                last_seen_at: rfc3339(s.last_seen_at_ns),
                expires_at: rfc3339(s.expires_at_ns),
                source: s.source,
                current: s.current,
            })
            .collect(),
        has_more,
        next_cursor: last.map(|(at, id)| format!("{at}_{id}")),
    }))
}

/// Ends one of the signed-in user's sessions (another user's session id is 404, as
/// one that does not exist).
#[utoipa::path(delete, path = "/user/sessions/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "A session_id from GET /user/sessions")),
    responses((status = 200, body = Deleted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_session(
    Shared(state): Shared<State>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let session_id = path_id(id, "id")?;
    let request = caller.grpc(wire::RevokeSessionRequest { user_id: String::new(), session_id: session_id.clone() });
    call(state.users.revoke_session(request)).await?;
    Ok(Json(Deleted { deleted: true, id: Some(session_id) }))
}

/// Something that happened to the account's security.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SecurityEvent {
    /// `sign_in_succeeded`, `sign_in_failed`, `password_changed`, `profile_updated`,
    /// `second_factor_enabled`, `second_factor_disabled`, `recovery_code_used`,
    /// `session_ended`, `instrument_added`, `instrument_verified`, `instrument_removed`.
    pub kind: String,
    pub at: String,
    pub detail: String,
}

/// A page of security events, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SecurityEventPage {
    pub data: Vec<SecurityEvent>,
    pub has_more: bool,
    /// Give it as `starting_after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The signed-in user's security events (the latest 1,000), newest first, cursor-paged.
#[utoipa::path(get, path = "/user/security_events", tag = "users", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = SecurityEventPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn security_events(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(query): Params<PageQuery>,
) -> Result<Json<SecurityEventPage>, ApiError> {
    let page = query.page()?;
    let after = match page.after.as_deref().map(parse_time_cursor).transpose()? {
        None => None,
        Some((at, n)) => Some((
            at,
            n.parse::<u32>().map_err(|_| ApiError::invalid("starting_after", "a next_cursor from a previous page"))?,
        )),
    };
    let all = call(state.users.list_security_events(caller.grpc(wire::UserRequest::default()))).await?;
    // An event's place: its time, then its rank among the events of the same time in
    // the order they happened (the service answers newest first). Neither changes as
    // new events arrive, so a cursor stays valid.
    let mut same_time: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    let mut items = Vec::with_capacity(all.events.len());
    for event in all.events.into_iter().rev() {
        let rank = same_time.entry(event.at_ns).or_insert(0);
        items.push(((event.at_ns, *rank), event));
        *rank += 1;
    }
    let (data, has_more, last) = page_of(items, after.as_ref(), page.limit);
    Ok(Json(SecurityEventPage {
        data: data
            .into_iter()
            .map(|e| SecurityEvent { kind: e.kind, at: rfc3339(e.at_ns), detail: e.detail })
            .collect(),
        has_more,
        next_cursor: last.map(|(at, rank)| format!("{at}_{rank}")),
    }))
}

/// A second factor to confirm: put it in an authenticator app, then confirm a code.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TotpEnrollment {
    /// base32, for manual entry.
    pub secret: String,
    /// `otpauth://totp/...` for an authenticator app's QR code.
    pub otpauth_uri: String,
}

/// Starts enrolling a TOTP second factor (the current password, and the current code
/// when one is already on). Not idempotent by key: the answer holds a secret, which
/// the server does not keep in answers; enrolling again gives a new secret.
#[utoipa::path(post, path = "/user/totp", tag = "users", security(("bearer" = [])), request_body = Reauth,
    responses((status = 201, body = TotpEnrollment), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn enroll_totp(
    Shared(state): Shared<State>,
    caller: Caller,
    body: JsonBody<Reauth>,
) -> Result<(StatusCode, Json<TotpEnrollment>), ApiError> {
    let enrolled = call(state.users.enroll_totp(caller.grpc(reauth(body.value)))).await?;
    Ok((StatusCode::CREATED, Json(TotpEnrollment { secret: enrolled.secret, otpauth_uri: enrolled.otpauth_uri })))
}

/// A code from the authenticator app.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    /// 6 digits.
    pub code: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RecoveryCodes {
    /// Single-use; shown once.
    pub recovery_codes: Vec<String>,
}

/// Confirms the enrolled second factor with a current code: it is on from now, and
/// the answer holds ten single-use recovery codes, shown once.
#[utoipa::path(post, path = "/user/totp/confirm", tag = "users", security(("bearer" = [])), request_body = TotpCode,
    responses((status = 200, body = RecoveryCodes), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn confirm_totp(
    Shared(state): Shared<State>,
    caller: Caller,
    body: JsonBody<TotpCode>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    let request = caller.grpc(wire::ConfirmTotpRequest { user_id: String::new(), code: body.value.code });
    let confirmed = call(state.users.confirm_totp(request)).await?;
    Ok(Json(RecoveryCodes { recovery_codes: confirmed.recovery_codes }))
}

/// Turns the second factor off (the current password and a current code).
#[utoipa::path(delete, path = "/user/totp", tag = "users", security(("bearer" = [])), request_body = Reauth,
    responses((status = 200, body = Deleted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn disable_totp(
    Shared(state): Shared<State>,
    caller: Caller,
    body: JsonBody<Reauth>,
) -> Result<Json<Deleted>, ApiError> {
    call(state.users.disable_totp(caller.grpc(reauth(body.value)))).await?;
    Ok(Json(Deleted { deleted: true, id: None }))
}
