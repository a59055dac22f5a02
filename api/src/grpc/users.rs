//! The `ledger.v1.Users` gRPC service over the platform's [`Users`].

use std::sync::Arc;

use ledger_core::money::{format_amount, Currency};
use ledger_platform::users::sessions::SignInOutcome;
use ledger_platform::users::{
    Caller, InstrumentDetails, InstrumentStatus, PaymentInstrument, ProfileChanges, Reauth, SessionInfo, UserProfile,
    Users, Wallet, SESSION_TOKEN_PREFIX,
};
use ledger_proto::api::v1 as wire;
use tonic::{Request, Response, Status};

use super::status;
use crate::auth::{Permission, Role, Tokens};
use crate::convert;
use crate::metrics::Metrics;

pub struct UsersService {
    pub users: Arc<Users>,
    pub metrics: Arc<Metrics>,
}

/// The bearer token of a request, if it carries a session token.
pub fn session_token<T>(request: &Request<T>) -> Option<&str> {
    let header = request.metadata().get("authorization")?.to_str().ok()?;
    let token = header.strip_prefix("Bearer ")?;
    token.starts_with(SESSION_TOKEN_PREFIX).then_some(token)
}

/// Who calls: a user through their session token, or the role of a role token.
pub enum Principal {
    User(u128),
    Role(Role),
}

impl Principal {
    /// Authenticates the caller of `request`, whichever kind of token it carries.
    pub async fn of<T>(users: &Users, tokens: &Tokens, request: &Request<T>) -> Result<Principal, Status> {
        match session_token(request) {
            Some(token) => Ok(Principal::User(users.authenticate(token).await.map_err(status::users)?.user_id)),
            None => Ok(Principal::Role(tokens.authenticate(request)?)),
        }
    }

    /// The user, for calls only a user's session may make.
    pub fn user(self, why: &str) -> Result<u128, Status> {
        match self {
            Principal::User(user) => Ok(user),
            Principal::Role(_) => Err(Status::permission_denied(why.to_string())),
        }
    }

    /// For calls only an admin token may make.
    pub fn admin(self) -> Result<(), Status> {
        match self {
            Principal::Role(Role::Admin) => Ok(()),
            Principal::Role(role) => Err(Status::permission_denied(format!("role {role:?} may not do this"))),
            Principal::User(_) => Err(Status::permission_denied("this call needs an admin token")),
        }
    }

    /// A reader: a user (`Some`, who then reads only their own), or a role allowed to read.
    pub fn reader(self) -> Result<Option<u128>, Status> {
        match self {
            Principal::User(user) => Ok(Some(user)),
            Principal::Role(role) if role.allows(Permission::Read) => Ok(None),
            Principal::Role(role) => Err(Status::permission_denied(format!("role {role:?} may not Read"))),
        }
    }
}

/// The address a request came from, for throttling and security events.
fn source<T>(request: &Request<T>) -> String {
    request.remote_addr().map(|a| a.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

impl UsersService {
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        match session_token(request) {
            Some(token) => self.users.authenticate(token).await.map_err(status::users),
            None if request.metadata().get("authorization").is_none() => {
                Err(Status::unauthenticated("missing authorization: Bearer <session token from Login>"))
            }
            None => Err(Status::permission_denied("the users API needs a user's session token from Login")),
        }
    }

    /// The caller and the user their request names (which must be themselves).
    async fn subject<T>(&self, request: &Request<T>, user_id: &str) -> Result<(Caller, u128), Status> {
        let caller = self.caller(request).await?;
        let subject = Users::subject(&caller, user_id).map_err(status::users)?;
        Ok((caller, subject))
    }
}

pub(crate) fn profile_wire(p: UserProfile) -> wire::UserProfile {
    wire::UserProfile {
        user_id: p.user_id.to_string(),
        name: p.name,
        email: p.email,
        phone: p.phone,
        address: p.address,
        date_of_birth: p.date_of_birth,
        totp_enabled: p.totp_enabled,
        registered_at_ns: p.registered_at_ns,
    }
}

fn session_wire(s: SessionInfo) -> wire::Session {
    wire::Session {
        session_id: s.session_id,
        started_at_ns: s.started_at_ns,
        last_seen_at_ns: s.last_seen_at_ns,
        expires_at_ns: s.expires_at_ns,
        source: s.source,
        current: s.current,
    }
}

pub(crate) fn instrument_wire(i: PaymentInstrument) -> wire::PaymentInstrument {
    let status = match i.status {
        InstrumentStatus::PendingVerification => wire::InstrumentStatus::PendingVerification,
        InstrumentStatus::Verified => wire::InstrumentStatus::Verified,
        InstrumentStatus::VerificationFailed => wire::InstrumentStatus::VerificationFailed,
    };
    let mut out = wire::PaymentInstrument {
        instrument_id: i.instrument_id,
        status: status as i32,
        is_default: i.is_default,
        display: i.display,
        ..wire::PaymentInstrument::default()
    };
    match i.details {
        Some(InstrumentDetails::BankAccount { bank_name, routing_number, account_number_masked }) => {
            out.kind = wire::InstrumentKind::BankAccount as i32;
            out.bank_name = bank_name;
            out.routing_number = routing_number;
            out.account_number_masked = account_number_masked;
        }
        Some(InstrumentDetails::Card { brand, last4, exp_month, exp_year }) => {
            out.kind = wire::InstrumentKind::Card as i32;
            out.card_brand = brand;
            out.card_last4 = last4;
            out.card_exp_month = exp_month;
            out.card_exp_year = exp_year;
        }
        Some(InstrumentDetails::DigitalWallet { provider, handle_masked }) => {
            out.kind = wire::InstrumentKind::DigitalWallet as i32;
            out.wallet_provider = provider;
            out.wallet_handle_masked = handle_masked;
        }
        // An instrument stored without a method shows as of no kind.
        None => {}
    }
    out
}

/// A signed amount in the currency's notation: `-12.30` below zero.
fn signed_amount(minor: i128, currency: Currency) -> String {
    let text = format_amount(minor.unsigned_abs(), currency);
    if minor < 0 {
        format!("-{text}")
    } else {
        text
    }
}

pub(crate) fn wallet_wire(w: Wallet) -> wire::Wallet {
    wire::Wallet {
        currency: w.currency.code().to_string(),
        account_id: w.account_id.to_string(),
        balance: signed_amount(w.balance_minor, w.currency),
        available: signed_amount(w.available_minor, w.currency),
    }
}

fn bounded(field: &str, text: &str, max: usize) -> Result<(), Status> {
    if text.len() > max {
        return Err(Status::invalid_argument(format!("{field}: at most {max} bytes")));
    }
    Ok(())
}

#[tonic::async_trait]
impl wire::users_server::Users for UsersService {
    async fn register(
        &self,
        request: Request<wire::RegisterRequest>,
    ) -> Result<Response<wire::RegisterResponse>, Status> {
        let result = async {
            let source = source(&request);
            let r = request.get_ref();
            let id = self.users.register(&r.name, &r.email, &r.password, &source).await.map_err(status::users)?;
            Ok(wire::RegisterResponse { user_id: id.to_string() })
        }
        .await;
        self.metrics.answer("Users/Register", result)
    }

    async fn login(&self, request: Request<wire::LoginRequest>) -> Result<Response<wire::LoginResponse>, Status> {
        let result = async {
            let source = source(&request);
            let r = request.get_ref();
            bounded("totp_code", &r.totp_code, 16)?;
            bounded("recovery_code", &r.recovery_code, 32)?;
            let signed_in = self.users.login(&r.email, &r.password, &r.totp_code, &r.recovery_code, &source).await;
            self.metrics.sign_in(SignInOutcome::of(&signed_in));
            let signed_in = signed_in.map_err(status::users)?;
            Ok(wire::LoginResponse {
                user_id: signed_in.caller.user_id.to_string(),
                session_token: signed_in.session_token,
                session_id: signed_in.caller.session_id,
                idle_expires_at_ns: signed_in.idle_expires_at_ns,
                expires_at_ns: signed_in.expires_at_ns,
            })
        }
        .await;
        self.metrics.answer("Users/Login", result)
    }

    async fn logout(&self, request: Request<wire::LogoutRequest>) -> Result<Response<wire::LogoutResponse>, Status> {
        let result = async {
            let caller = self.caller(&request).await?;
            self.users.logout(&caller).await.map_err(status::users)?;
            Ok(wire::LogoutResponse {})
        }
        .await;
        self.metrics.answer("Users/Logout", result)
    }

    async fn get_profile(&self, request: Request<wire::UserRequest>) -> Result<Response<wire::UserProfile>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            self.users.profile(user).await.map(profile_wire).map_err(status::users)
        }
        .await;
        self.metrics.answer("Users/GetProfile", result)
    }

    async fn update_profile(
        &self,
        request: Request<wire::UpdateProfileRequest>,
    ) -> Result<Response<wire::UserProfile>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            let r = request.into_inner();
            let changes = ProfileChanges {
                name: r.name,
                email: r.email,
                phone: r.phone,
                address: r.address,
                date_of_birth: r.date_of_birth,
            };
            let reauth = Reauth { password: &r.current_password, totp_code: &r.totp_code };
            self.users.update_profile(user, changes, reauth).await.map(profile_wire).map_err(status::users)
        }
        .await;
        self.metrics.answer("Users/UpdateProfile", result)
    }

    async fn change_password(
        &self,
        request: Request<wire::ChangePasswordRequest>,
    ) -> Result<Response<wire::ChangePasswordResponse>, Status> {
        let result = async {
            let (caller, _) = self.subject(&request, &request.get_ref().user_id).await?;
            let r = request.get_ref();
            let reauth = Reauth { password: &r.current_password, totp_code: &r.totp_code };
            let ended = self.users.change_password(&caller, reauth, &r.new_password).await.map_err(status::users)?;
            Ok(wire::ChangePasswordResponse { sessions_ended: ended })
        }
        .await;
        self.metrics.answer("Users/ChangePassword", result)
    }

    async fn delete_user(
        &self,
        request: Request<wire::ReauthRequest>,
    ) -> Result<Response<wire::DeleteUserResponse>, Status> {
        let result = async {
            let (caller, _) = self.subject(&request, &request.get_ref().user_id).await?;
            let r = request.get_ref();
            self.users
                .delete(&caller, Reauth { password: &r.current_password, totp_code: &r.totp_code })
                .await
                .map_err(status::users)?;
            Ok(wire::DeleteUserResponse {})
        }
        .await;
        self.metrics.answer("Users/DeleteUser", result)
    }

    async fn enroll_totp(
        &self,
        request: Request<wire::ReauthRequest>,
    ) -> Result<Response<wire::EnrollTotpResponse>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            let r = request.get_ref();
            let (secret, otpauth_uri) = self
                .users
                .enroll_totp(user, Reauth { password: &r.current_password, totp_code: &r.totp_code })
                .await
                .map_err(status::users)?;
            Ok(wire::EnrollTotpResponse { secret, otpauth_uri })
        }
        .await;
        self.metrics.answer("Users/EnrollTotp", result)
    }

    async fn confirm_totp(
        &self,
        request: Request<wire::ConfirmTotpRequest>,
    ) -> Result<Response<wire::ConfirmTotpResponse>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            bounded("code", &request.get_ref().code, 16)?;
            let recovery_codes = self.users.confirm_totp(user, &request.get_ref().code).await.map_err(status::users)?;
            Ok(wire::ConfirmTotpResponse { recovery_codes })
        }
        .await;
        self.metrics.answer("Users/ConfirmTotp", result)
    }

    async fn disable_totp(
        &self,
        request: Request<wire::ReauthRequest>,
    ) -> Result<Response<wire::DisableTotpResponse>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            let r = request.get_ref();
            self.users
                .disable_totp(user, Reauth { password: &r.current_password, totp_code: &r.totp_code })
                .await
                .map_err(status::users)?;
            Ok(wire::DisableTotpResponse {})
        }
        .await;
        self.metrics.answer("Users/DisableTotp", result)
    }

    async fn list_sessions(
        &self,
        request: Request<wire::UserRequest>,
    ) -> Result<Response<wire::ListSessionsResponse>, Status> {
        let result = async {
            let (caller, _) = self.subject(&request, &request.get_ref().user_id).await?;
            let sessions = self.users.sessions(&caller).await.map_err(status::users)?;
            Ok(wire::ListSessionsResponse { sessions: sessions.into_iter().map(session_wire).collect() })
        }
        .await;
        self.metrics.answer("Users/ListSessions", result)
    }

    async fn revoke_session(
        &self,
        request: Request<wire::RevokeSessionRequest>,
    ) -> Result<Response<wire::RevokeSessionResponse>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            bounded("session_id", &request.get_ref().session_id, 64)?;
            self.users.revoke_session(user, &request.get_ref().session_id).await.map_err(status::users)?;
            Ok(wire::RevokeSessionResponse {})
        }
        .await;
        self.metrics.answer("Users/RevokeSession", result)
    }

    async fn list_security_events(
        &self,
        request: Request<wire::UserRequest>,
    ) -> Result<Response<wire::ListSecurityEventsResponse>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            let events = self.users.security_events(user).await.map_err(status::users)?;
            Ok(wire::ListSecurityEventsResponse {
                events: events
                    .into_iter()
                    .map(|e| wire::SecurityEvent { kind: e.kind, at_ns: e.at_ns, detail: e.detail })
                    .collect(),
            })
        }
        .await;
        self.metrics.answer("Users/ListSecurityEvents", result)
    }

    async fn add_bank_account(
        &self,
        request: Request<wire::AddBankAccountRequest>,
    ) -> Result<Response<wire::AddInstrumentResponse>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            let r = request.get_ref();
            let (instrument, deposits) = self
                .users
                .add_bank_account(user, &r.bank_name, &r.routing_number, &r.account_number, &r.holder_name)
                .await
                .map_err(status::users)?;
            Ok(wire::AddInstrumentResponse {
                instrument: Some(instrument_wire(instrument)),
                sandbox_micro_deposits: deposits,
            })
        }
        .await;
        self.metrics.answer("Users/AddBankAccount", result)
    }

    async fn add_card(
        &self,
        request: Request<wire::AddCardRequest>,
    ) -> Result<Response<wire::AddInstrumentResponse>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            let r = request.get_ref();
            bounded("cvv", &r.cvv, 8)?;
            let instrument = self
                .users
                .add_card(user, &r.number, r.exp_month, r.exp_year, &r.cvv, &r.holder_name)
                .await
                .map_err(status::users)?;
            Ok(wire::AddInstrumentResponse {
                instrument: Some(instrument_wire(instrument)),
                sandbox_micro_deposits: Vec::new(),
            })
        }
        .await;
        self.metrics.answer("Users/AddCard", result)
    }

    async fn add_digital_wallet(
        &self,
        request: Request<wire::AddDigitalWalletRequest>,
    ) -> Result<Response<wire::AddInstrumentResponse>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            let r = request.get_ref();
            let instrument =
                self.users.add_digital_wallet(user, &r.provider, &r.handle).await.map_err(status::users)?;
            Ok(wire::AddInstrumentResponse {
                instrument: Some(instrument_wire(instrument)),
                sandbox_micro_deposits: Vec::new(),
            })
        }
        .await;
        self.metrics.answer("Users/AddDigitalWallet", result)
    }

    async fn list_instruments(
        &self,
        request: Request<wire::UserRequest>,
    ) -> Result<Response<wire::ListInstrumentsResponse>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            let instruments = self.users.instruments(user).await.map_err(status::users)?;
            Ok(wire::ListInstrumentsResponse { instruments: instruments.into_iter().map(instrument_wire).collect() })
        }
        .await;
        self.metrics.answer("Users/ListInstruments", result)
    }

    async fn verify_instrument(
        &self,
        request: Request<wire::VerifyInstrumentRequest>,
    ) -> Result<Response<wire::PaymentInstrument>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            let r = request.get_ref();
            bounded("instrument_id", &r.instrument_id, 64)?;
            if r.amounts.len() > 2 {
                return Err(Status::invalid_argument("amounts: the two micro-deposits, in minor units"));
            }
            self.users
                .verify_instrument(user, &r.instrument_id, &r.amounts)
                .await
                .map(instrument_wire)
                .map_err(status::users)
        }
        .await;
        self.metrics.answer("Users/VerifyInstrument", result)
    }

    async fn set_default_instrument(
        &self,
        request: Request<wire::InstrumentRequest>,
    ) -> Result<Response<wire::PaymentInstrument>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            bounded("instrument_id", &request.get_ref().instrument_id, 64)?;
            self.users
                .set_default_instrument(user, &request.get_ref().instrument_id)
                .await
                .map(instrument_wire)
                .map_err(status::users)
        }
        .await;
        self.metrics.answer("Users/SetDefaultInstrument", result)
    }

    async fn remove_instrument(
        &self,
        request: Request<wire::InstrumentRequest>,
    ) -> Result<Response<wire::RemoveInstrumentResponse>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            bounded("instrument_id", &request.get_ref().instrument_id, 64)?;
            self.users.remove_instrument(user, &request.get_ref().instrument_id).await.map_err(status::users)?;
            Ok(wire::RemoveInstrumentResponse {})
        }
        .await;
        self.metrics.answer("Users/RemoveInstrument", result)
    }

    async fn open_wallet(&self, request: Request<wire::OpenWalletRequest>) -> Result<Response<wire::Wallet>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            let currency = convert::parse_currency("currency", &request.get_ref().currency)?;
            self.users.open_wallet(user, currency).await.map(wallet_wire).map_err(status::users)
        }
        .await;
        self.metrics.answer("Users/OpenWallet", result)
    }

    async fn list_wallets(
        &self,
        request: Request<wire::UserRequest>,
    ) -> Result<Response<wire::ListWalletsResponse>, Status> {
        let result = async {
            let (_, user) = self.subject(&request, &request.get_ref().user_id).await?;
            let wallets = self.users.wallets(user).await.map_err(status::users)?;
            Ok(wire::ListWalletsResponse { wallets: wallets.into_iter().map(wallet_wire).collect() })
        }
        .await;
        self.metrics.answer("Users/ListWallets", result)
    }
}
