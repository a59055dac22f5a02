//! Users of the payments platform: event-sourced aggregates on `user-{id}` streams of
//! the same event log as the ledger, with their personal data sealed under a per-user
//! key (see `crypto`), sign-in with argon2id passwords, sessions, TOTP, throttling,
//! linked payment instruments and wallet accounts in the ledger.
//!
//! State is a fold of the user streams, rebuilt at start by reading the log; every
//! change is decided against it under the user's lock, appended with the stream's
//! exact expected revision, and applied by the same `evolve` that replay uses only
//! once the append is durable.

pub mod crypto;
pub mod grpc;
pub mod instruments;
pub mod password;
pub mod profile;
pub mod throttle;
pub mod totp;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ledger_core::chain::to_hex as hex;
use ledger_core::domain::{AccountCommand, AccountFlags, AccountId, NewAccount};
use ledger_core::money::{format_amount, Currency};
use ledger_engine::clock::now_ns;
use ledger_engine::store::{
    Direction, EventData, EventStore, EventStoreExt, ExpectedRevision, RecordedEvent, Revision,
};
use ledger_engine::writer::Ledger;
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::user_event_details::Detail;
use ledger_proto::events::v1::UserEventKind as Kind;
use prost::Message;
use tokio::sync::Mutex;
use tonic::Status;

use crate::convert;
use crypto::{KeyStore, SecretKey};
use grpc::wire;
use instruments::CardVault;
use throttle::Throttle;

/// The prefix of session tokens, so a token can be told from a role token at sight.
pub const SESSION_TOKEN_PREFIX: &str = "lus_";
/// The ledger account code of user wallets.
pub const WALLET_ACCOUNT_CODE: u16 = 1000;
pub const INSTRUMENTS_MAX: usize = 20;
/// Wrong micro-deposit answers before a bank account must be added again.
pub const VERIFY_ATTEMPTS_MAX: u32 = 3;
const RECOVERY_CODES: usize = 10;
/// Security events kept per user in memory (the log keeps all).
const SECURITY_EVENTS_MAX: usize = 1_000;
const INVALID_CREDENTIALS: &str = "invalid email or password";

#[derive(Clone, Copy, Debug)]
pub struct UsersConfig {
    /// A session ends after this long without a call.
    pub session_idle: Duration,
    /// A session ends this long after sign-in, whatever its use.
    pub session_max: Duration,
    pub limits: throttle::Limits,
}

impl Default for UsersConfig {
    fn default() -> UsersConfig {
        UsersConfig {
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            limits: throttle::Limits::default(),
        }
    }
}

/// The authenticated user behind a session token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: u128,
    pub session_id: String,
}

struct Session {
    token_hash: [u8; 32],
    started_ns: u64,
    last_seen_ns: u64,
    expires_ns: u64,
    source: String,
}

impl Session {
    fn live(&self, now: u64, idle: Duration) -> bool {
        now <= self.expires_ns && now.saturating_sub(self.last_seen_ns) <= idle.as_nanos() as u64
    }
}

struct Totp {
    secret: Vec<u8>,
    recovery: Vec<Option<Vec<u8>>>,
    last_step: u64,
}

struct InstrumentState {
    instrument: ev::Instrument,
    failed_attempts: u32,
    failed_for_good: bool,
    added_ns: u64,
}

#[derive(Default)]
struct UserState {
    id: u128,
    revision: Option<Revision>,
    last_ns: u64,
    key: Option<SecretKey>,
    key_slot: u64,
    erased: bool,
    registered_ns: u64,
    profile: ev::Profile,
    password_hash: String,
    totp: Option<Totp>,
    pending_totp: Option<Vec<u8>>,
    sessions: BTreeMap<String, Session>,
    instruments: Vec<InstrumentState>,
    default_instrument: Option<String>,
    wallets: BTreeMap<String, u128>,
    security: Vec<(String, u64, String)>,
}

pub fn stream_name(user_id: u128) -> String {
    format!("user-{user_id}")
}

fn aad(user_id: u128, kind: Kind) -> Vec<u8> {
    let mut aad = b"ledger.user.v1".to_vec();
    aad.extend_from_slice(&user_id.to_le_bytes());
    aad.extend_from_slice(&(kind as i32).to_le_bytes());
    aad
}

fn random<const N: usize>() -> Result<[u8; N], Status> {
    crypto::random_bytes().map_err(|_| Status::internal("no randomness available"))
}

/// The ledger account of a user's wallet in a currency: derived, so opening is
/// idempotent and needs no lookup.
pub fn wallet_account_id(user_id: u128, currency: Currency) -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"ledger.wallet.v1");
    hasher.update(&user_id.to_le_bytes());
    hasher.update(currency.code().as_bytes());
    let bytes: [u8; 16] = hasher.finalize().as_bytes()[..16].try_into().unwrap_or([1; 16]);
    // Never 0 or 2^128-1 (both reserved by the ledger).
    u128::from_le_bytes(bytes).clamp(1, u128::MAX - 1)
}

fn event_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Unspecified => "UserEventUnspecified",
        Kind::UserRegistered => "UserRegistered",
        Kind::UserProfileUpdated => "UserProfileUpdated",
        Kind::UserPasswordChanged => "UserPasswordChanged",
        Kind::UserSessionStarted => "UserSessionStarted",
        Kind::UserSessionEnded => "UserSessionEnded",
        Kind::UserSignInFailed => "UserSignInFailed",
        Kind::UserTotpEnabled => "UserTotpEnabled",
        Kind::UserTotpDisabled => "UserTotpDisabled",
        Kind::UserRecoveryCodeUsed => "UserRecoveryCodeUsed",
        Kind::UserInstrumentAdded => "UserInstrumentAdded",
        Kind::UserInstrumentVerified => "UserInstrumentVerified",
        Kind::UserInstrumentVerificationFailed => "UserInstrumentVerificationFailed",
        Kind::UserDefaultInstrumentSet => "UserDefaultInstrumentSet",
        Kind::UserInstrumentRemoved => "UserInstrumentRemoved",
        Kind::UserWalletOpened => "UserWalletOpened",
        Kind::UserErased => "UserErased",
    }
}

fn kind_of(detail: &Detail) -> Kind {
    match detail {
        Detail::Registered(_) => Kind::UserRegistered,
        Detail::ProfileUpdated(_) => Kind::UserProfileUpdated,
        Detail::PasswordChanged(_) => Kind::UserPasswordChanged,
        Detail::SessionStarted(_) => Kind::UserSessionStarted,
        Detail::SessionEnded(_) => Kind::UserSessionEnded,
        Detail::SignInFailed(_) => Kind::UserSignInFailed,
        Detail::TotpEnabled(_) => Kind::UserTotpEnabled,
        Detail::TotpDisabled(_) => Kind::UserTotpDisabled,
        Detail::RecoveryCodeUsed(_) => Kind::UserRecoveryCodeUsed,
        Detail::InstrumentAdded(_) => Kind::UserInstrumentAdded,
        Detail::InstrumentVerified(_) => Kind::UserInstrumentVerified,
        Detail::VerificationFailed(_) => Kind::UserInstrumentVerificationFailed,
        Detail::DefaultInstrumentSet(_) => Kind::UserDefaultInstrumentSet,
        Detail::InstrumentRemoved(_) => Kind::UserInstrumentRemoved,
        Detail::WalletOpened(_) => Kind::UserWalletOpened,
    }
}

fn instrument_display(instrument: &ev::Instrument) -> String {
    use ev::instrument::Method;
    match &instrument.method {
        Some(Method::BankAccount(b)) => format!("{} {}", b.bank_name, instruments::mask_tail(&b.account_number)),
        Some(Method::Card(c)) => format!("{} ••••{} {:02}/{}", c.brand, c.last4, c.exp_month, c.exp_year),
        Some(Method::DigitalWallet(w)) => format!("{} {}", w.provider, instruments::mask_handle(&w.handle)),
        None => String::new(),
    }
}

impl UserState {
    fn new(id: u128) -> UserState {
        UserState { id, ..UserState::default() }
    }

    fn note(&mut self, kind: &str, at: u64, detail: String) {
        if self.security.len() >= SECURITY_EVENTS_MAX {
            self.security.remove(0);
        }
        self.security.push((kind.to_string(), at, detail));
    }

    fn instrument(&self, id: &str) -> Option<&InstrumentState> {
        self.instruments.iter().find(|i| i.instrument.instrument_id == id)
    }

    /// Folds one event into the state: the only place state changes, live or replayed.
    fn evolve(&mut self, at: u64, detail: Detail) {
        self.last_ns = self.last_ns.max(at);
        match detail {
            Detail::Registered(r) => {
                self.registered_ns = at;
                self.profile = r.profile.unwrap_or_default();
                self.password_hash = r.password_hash;
                self.note("signed_up", at, String::new());
            }
            Detail::ProfileUpdated(p) => {
                let what = if p.email != self.profile.email { "email changed" } else { "personal information changed" };
                self.profile = p;
                self.note("profile_updated", at, what.into());
            }
            Detail::PasswordChanged(hash) => {
                self.password_hash = hash;
                self.note("password_changed", at, String::new());
            }
            Detail::SessionStarted(s) => {
                let token_hash: [u8; 32] = s.token_hash.as_slice().try_into().unwrap_or([0; 32]);
                let detail = if s.used_recovery_code {
                    format!("from {} with a recovery code", s.source)
                } else {
                    format!("from {}", s.source)
                };
                if let Some(totp) = self.totp.as_mut() {
                    totp.last_step = totp.last_step.max(s.totp_step);
                }
                self.sessions.insert(
                    s.session_id,
                    Session {
                        token_hash,
                        started_ns: at,
                        last_seen_ns: at,
                        expires_ns: s.expires_at_ns,
                        source: s.source,
                    },
                );
                self.note("sign_in_succeeded", at, detail);
            }
            Detail::SessionEnded(e) => {
                self.sessions.remove(&e.session_id);
                self.note("session_ended", at, format!("session {}: {}", e.session_id, e.reason));
            }
            Detail::SignInFailed(f) => self.note("sign_in_failed", at, format!("from {}: {}", f.source, f.reason)),
            Detail::TotpEnabled(t) => {
                let recovery = t.recovery_code_hashes.into_iter().map(Some).collect();
                self.totp = Some(Totp { secret: t.secret, recovery, last_step: t.confirmed_step });
                self.pending_totp = None;
                self.note("second_factor_enabled", at, "authenticator app".into());
            }
            Detail::TotpDisabled(_) => {
                self.totp = None;
                self.note("second_factor_disabled", at, String::new());
            }
            Detail::RecoveryCodeUsed(r) => {
                if let Some(slot) = self.totp.as_mut().and_then(|t| t.recovery.get_mut(r.index as usize)) {
                    *slot = None;
                }
                let left = self.totp.as_ref().map_or(0, |t| t.recovery.iter().flatten().count());
                self.note("recovery_code_used", at, format!("{left} left"));
            }
            Detail::InstrumentAdded(i) => {
                self.note("instrument_added", at, instrument_display(&i));
                self.instruments.push(InstrumentState {
                    instrument: i,
                    failed_attempts: 0,
                    failed_for_good: false,
                    added_ns: at,
                });
            }
            Detail::InstrumentVerified(r) => {
                if let Some(i) = self.instruments.iter_mut().find(|i| i.instrument.instrument_id == r.instrument_id) {
                    i.instrument.verified = true;
                    let shown = instrument_display(&i.instrument);
                    self.note("instrument_verified", at, shown);
                }
            }
            Detail::VerificationFailed(f) => {
                if let Some(i) = self.instruments.iter_mut().find(|i| i.instrument.instrument_id == f.instrument_id) {
                    i.failed_attempts = f.attempts;
                    i.failed_for_good = f.r#final;
                }
            }
            Detail::DefaultInstrumentSet(r) => self.default_instrument = Some(r.instrument_id),
            Detail::InstrumentRemoved(r) => {
                if let Some(index) = self.instruments.iter().position(|i| i.instrument.instrument_id == r.instrument_id)
                {
                    let removed = self.instruments.remove(index);
                    self.note("instrument_removed", at, instrument_display(&removed.instrument));
                }
                if self.default_instrument.as_deref() == Some(r.instrument_id.as_str()) {
                    self.default_instrument = None;
                }
            }
            Detail::WalletOpened(w) => {
                if let Ok(account) = w.account_id.parse() {
                    self.wallets.insert(w.currency, account);
                }
            }
        }
    }

    /// What is left of a user after crypto-shredding: the id and the stream position.
    fn erase(&mut self) {
        let (id, revision, last_ns, key_slot) = (self.id, self.revision, self.last_ns, self.key_slot);
        *self = UserState { id, revision, last_ns, key_slot, erased: true, ..UserState::default() };
    }
}

/// The users of the platform and everything they can do.
pub struct Users {
    store: Arc<dyn EventStore>,
    ledger: Ledger,
    keys: Arc<KeyStore>,
    vault: Box<dyn CardVault>,
    throttle: Throttle,
    config: UsersConfig,
    users: DashMap<u128, Arc<Mutex<UserState>>>,
    /// Normalized email → user. An entry is reserved before its registration or
    /// change is appended and released if that fails.
    emails: DashMap<String, u128>,
    /// blake3 of a session token → (user, session id).
    sessions: DashMap<[u8; 32], (u128, String, u64)>,
    /// Verified when the email is unknown, so that answer takes as long as a wrong password.
    dummy_hash: String,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").field("users", &self.users.len()).finish_non_exhaustive()
    }
}

/// Re-authentication for a sensitive change.
pub struct Reauth<'a> {
    pub password: &'a str,
    pub totp_code: &'a str,
}

impl Users {
    /// Rebuilds every user from their streams. Keys come from `keys`; a user whose key is
    /// gone was erased (even if the crash came before the erasure event).
    pub fn open(
        store: Arc<dyn EventStore>,
        ledger: Ledger,
        keys: KeyStore,
        vault: Box<dyn CardVault>,
        config: UsersConfig,
    ) -> Result<Users, String> {
        let users = Users {
            store,
            ledger,
            keys: Arc::new(keys),
            vault,
            throttle: Throttle::new(config.limits),
            config,
            users: DashMap::new(),
            emails: DashMap::new(),
            sessions: DashMap::new(),
            dummy_hash: password::hash("an unguessable placeholder for unknown emails").map_err(|e| e.to_string())?,
        };
        let mut states: BTreeMap<u128, UserState> = BTreeMap::new();
        for stream in users.store.stream_names("user-").map_err(|e| e.to_string())? {
            let mut from = 0;
            loop {
                let records =
                    users.store.read_stream(&stream, from, Direction::Forwards, 1_024).map_err(|e| e.to_string())?;
                let Some(last) = records.last() else { break };
                from = last.revision + 1;
                for record in &records {
                    users.replay(&mut states, record)?;
                }
            }
        }
        let now = now_ns();
        for (id, mut state) in states {
            if !state.erased {
                users.emails.insert(profile::normalize_email(&state.profile.email), id);
                state.sessions.retain(|_, s| s.live(now, config.session_idle));
                for (session_id, session) in &state.sessions {
                    users.sessions.insert(session.token_hash, (id, session_id.clone(), session.expires_ns));
                }
            }
            users.users.insert(id, Arc::new(Mutex::new(state)));
        }
        tracing::info!(users = users.users.len(), "users rebuilt from the log");
        Ok(users)
    }

    /// Folds one recorded event of a user stream into `states`.
    fn replay(&self, states: &mut BTreeMap<u128, UserState>, record: &RecordedEvent) -> Result<(), String> {
        let at = |e: &dyn std::fmt::Display| format!("{} revision {}: {e}", record.stream, record.revision);
        let event = ev::UserEvent::decode(record.payload.as_slice()).map_err(|e| at(&e))?;
        let id: u128 = event.user_id.parse().map_err(|_| at(&"bad user id"))?;
        let state = states.entry(id).or_insert_with(|| UserState::new(id));
        state.revision = Some(record.revision);
        state.last_ns = state.last_ns.max(event.timestamp_ns);
        let kind = event.kind();
        if kind == Kind::UserRegistered {
            state.key_slot = event.key_slot;
            state.key = self.keys.get(event.key_slot, id).map_err(|e| at(&e))?;
            if state.key.is_none() {
                state.erase();
            }
        }
        if kind == Kind::UserErased {
            state.erase();
            return Ok(());
        }
        let Some(key) = state.key.clone() else { return Ok(()) };
        let plain = key.open(&event.sealed, &aad(id, kind)).map_err(|e| at(&e))?;
        let details = ev::UserEventDetails::decode(plain.as_slice()).map_err(|e| at(&e))?;
        if let Some(detail) = details.detail {
            state.evolve(event.timestamp_ns, detail);
        }
        Ok(())
    }

    /// Appends `details` to the user's stream durably, then folds them into `state`.
    async fn append(&self, state: &mut UserState, details: Vec<Detail>) -> Result<(), Status> {
        append_details(self.store.as_ref(), state, details).await
    }

    async fn append_raw(&self, state: &mut UserState, events: Vec<EventData>) -> Result<(), Status> {
        append_events(self.store.as_ref(), state, events).await
    }
}

async fn append_details(store: &dyn EventStore, state: &mut UserState, details: Vec<Detail>) -> Result<(), Status> {
    let key = state.key.clone().ok_or_else(|| Status::not_found("user not found"))?;
    let mut events = Vec::with_capacity(details.len());
    let mut stamped = Vec::with_capacity(details.len());
    let mut at = state.last_ns;
    for detail in details {
        at = now_ns().max(at + 1);
        let kind = kind_of(&detail);
        let plain = ev::UserEventDetails { detail: Some(detail.clone()) }.encode_to_vec();
        let envelope = ev::UserEvent {
            user_id: state.id.to_string(),
            timestamp_ns: at,
            kind: kind as i32,
            key_slot: if kind == Kind::UserRegistered { state.key_slot } else { 0 },
            sealed: key.seal(&plain, &aad(state.id, kind)),
        };
        events.push(EventData { event_type: event_type(kind).into(), payload: envelope.encode_to_vec() });
        stamped.push((at, detail));
    }
    append_events(store, state, events).await?;
    for (at, detail) in stamped {
        state.evolve(at, detail);
    }
    Ok(())
}

async fn append_events(store: &dyn EventStore, state: &mut UserState, events: Vec<EventData>) -> Result<(), Status> {
    let expected = match state.revision {
        Some(revision) => ExpectedRevision::Exact(revision),
        None => ExpectedRevision::NoStream,
    };
    let outcome = store.append(&stream_name(state.id), expected, events).await.map_err(convert::store_error)?;
    state.revision = outcome.last_revision;
    Ok(())
}

impl Users {
    fn user(&self, id: u128) -> Result<Arc<Mutex<UserState>>, Status> {
        self.users.get(&id).map(|u| u.clone()).ok_or_else(|| Status::not_found("user not found"))
    }

    /// The user a request names: empty means the caller; anyone else is refused.
    pub fn subject(caller: &Caller, user_id: &str) -> Result<u128, Status> {
        if user_id.is_empty() {
            return Ok(caller.user_id);
        }
        match user_id.parse::<u128>() {
            Ok(id) if id == caller.user_id => Ok(id),
            Ok(_) => Err(Status::permission_denied("a user may act only on their own account")),
            Err(_) => Err(Status::invalid_argument("user_id: a decimal user id, or empty for the caller")),
        }
    }

    pub async fn register(&self, name: &str, email: &str, password: &str) -> Result<u128, Status> {
        profile::check_name("name", name, true).map_err(Status::invalid_argument)?;
        profile::check_email(email).map_err(Status::invalid_argument)?;
        password::check_policy(password, email).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let normalized = profile::normalize_email(email);
        let id = loop {
            let id = u128::from_le_bytes(random()?) >> 1;
            if id != 0 && !self.users.contains_key(&id) {
                break id;
            }
        };
        match self.emails.entry(normalized.clone()) {
            dashmap::Entry::Occupied(_) => return Err(Status::already_exists("email: already registered")),
            dashmap::Entry::Vacant(v) => {
                v.insert(id);
            }
        }
        let result = self.register_reserved(id, name, email, password).await;
        if result.is_err() {
            self.emails.remove(&normalized);
        }
        result.map(|()| id)
    }

    async fn register_reserved(&self, id: u128, name: &str, email: &str, password: &str) -> Result<(), Status> {
        let hash = hash_password(password).await?;
        let key = SecretKey::random().map_err(|_| Status::internal("no randomness available"))?;
        let keys = self.keys.clone();
        let slot_key = key.clone();
        let slot = tokio::task::spawn_blocking(move || keys.add(id, &slot_key))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(format!("key store: {e}")))?;
        let mut state = UserState::new(id);
        state.key = Some(key);
        state.key_slot = slot;
        let profile =
            ev::Profile { name: name.trim().to_string(), email: email.trim().to_string(), ..Default::default() };
        let registered = Detail::Registered(ev::Registered { profile: Some(profile), password_hash: hash });
        if let Err(status) = self.append(&mut state, vec![registered]).await {
            let _ = self.keys.erase(slot);
            return Err(status);
        }
        self.users.insert(id, Arc::new(Mutex::new(state)));
        Ok(())
    }

    /// Signs in. Every failure that could tell whether the email exists answers the
    /// same UNAUTHENTICATED after the same work.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        totp_code: &str,
        recovery_code: &str,
        source: &str,
    ) -> Result<(Caller, String, u64, u64), Status> {
        if email.len() > profile::EMAIL_BYTES_MAX || password.len() > password::PASSWORD_BYTES_MAX {
            return Err(Status::invalid_argument("email or password too long"));
        }
        if let Some(wait) = self.throttle.check(email, source) {
            return Err(Status::resource_exhausted(format!(
                "too many failed sign-ins; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        let user = self.emails.get(&profile::normalize_email(email)).map(|e| *e);
        let Some(user) = user.and_then(|id| self.users.get(&id).map(|u| u.clone())) else {
            verify_password(password, &self.dummy_hash).await?;
            self.throttle.failed(email, source);
            return Err(Status::unauthenticated(INVALID_CREDENTIALS));
        };
        let mut state = user.lock_owned().await;
        if state.erased || !verify_password(password, &state.password_hash).await? {
            self.throttle.failed(email, source);
            if !state.erased {
                // Recorded after answering: waiting for it would make a wrong password
                // answer slower than an unknown email and so tell that the email exists.
                let failed = ev::SignInFailed { source: source.to_string(), reason: "password".into() };
                let store = self.store.clone();
                tokio::spawn(async move {
                    let mut state = state;
                    if let Err(error) =
                        append_details(store.as_ref(), &mut state, vec![Detail::SignInFailed(failed)]).await
                    {
                        tracing::warn!(%error, "a failed sign-in could not be recorded");
                    }
                });
            }
            return Err(Status::unauthenticated(INVALID_CREDENTIALS));
        }
        let mut details = Vec::new();
        let mut used_recovery_code = false;
        let mut totp_step = 0;
        if let Some(totp) = &state.totp {
            match self.second_factor(totp, totp_code, recovery_code) {
                Some(SecondFactor::Code(step)) => {
                    totp_step = step;
                    if let Some(t) = state.totp.as_mut() {
                        t.last_step = step;
                    }
                }
                Some(SecondFactor::Recovery(index)) => {
                    used_recovery_code = true;
                    details.push(Detail::RecoveryCodeUsed(ev::RecoveryCodeUsed { index }));
                }
                None => {
                    self.throttle.failed(email, source);
                    let failed = ev::SignInFailed { source: source.to_string(), reason: "second factor".into() };
                    self.append(&mut state, vec![Detail::SignInFailed(failed)]).await?;
                    return Err(if totp_code.is_empty() && recovery_code.is_empty() {
                        Status::unauthenticated("second factor required: give totp_code or recovery_code")
                    } else {
                        Status::unauthenticated("invalid second factor")
                    });
                }
            }
        }
        self.throttle.succeeded(email);
        let token = format!("{SESSION_TOKEN_PREFIX}{}", hex(&random::<32>()?));
        let token_hash = *blake3::hash(token.as_bytes()).as_bytes();
        let session_id = hex(&random::<8>()?);
        let now = now_ns();
        let expires = now + self.config.session_max.as_nanos() as u64;
        details.push(Detail::SessionStarted(ev::SessionStarted {
            session_id: session_id.clone(),
            token_hash: token_hash.to_vec(),
            expires_at_ns: expires,
            source: source.to_string(),
            used_recovery_code,
            totp_step,
        }));
        self.append(&mut state, details).await?;
        self.sessions.insert(token_hash, (state.id, session_id.clone(), expires));
        let idle = now + self.config.session_idle.as_nanos() as u64;
        Ok((Caller { user_id: state.id, session_id }, token, idle.min(expires), expires))
    }

    fn second_factor(&self, totp: &Totp, code: &str, recovery_code: &str) -> Option<SecondFactor> {
        if !recovery_code.is_empty() {
            let hash = blake3::hash(normalize_recovery(recovery_code).as_bytes());
            let index = totp.recovery.iter().position(|h| h.as_deref() == Some(hash.as_bytes().as_slice()))?;
            return Some(SecondFactor::Recovery(index as u32));
        }
        let now = now_ns() / 1_000_000_000;
        let step = totp::matching_step(&totp.secret, code, now)?;
        // A code is single-use: not again, nor an earlier one.
        (step > totp.last_step).then_some(SecondFactor::Code(step))
    }

    /// The caller behind a session token, if the session is live; refreshes its idle timer.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, Status> {
        let hash = *blake3::hash(token.as_bytes()).as_bytes();
        let (user_id, session_id, _) =
            self.sessions.get(&hash).map(|s| s.clone()).ok_or_else(|| Status::unauthenticated("unknown token"))?;
        let user = self.user(user_id).map_err(|_| Status::unauthenticated("unknown token"))?;
        let mut state = user.lock().await;
        let now = now_ns();
        let live = match state.sessions.get_mut(&session_id) {
            Some(s) if s.live(now, self.config.session_idle) => {
                s.last_seen_ns = now;
                true
            }
            _ => false,
        };
        if !live {
            // Expiry needs no event: the deadline is in the session's start event.
            state.sessions.remove(&session_id);
            self.sessions.remove(&hash);
            return Err(Status::unauthenticated("session expired; sign in again"));
        }
        Ok(Caller { user_id, session_id })
    }

    /// Checks the password (and the second factor when enabled) before a sensitive change.
    async fn reauthenticate(&self, state: &mut UserState, reauth: &Reauth<'_>) -> Result<(), Status> {
        if !verify_password(reauth.password, &state.password_hash).await? {
            return Err(Status::unauthenticated("current_password is wrong"));
        }
        if let Some(totp) = &state.totp {
            match self.second_factor(totp, reauth.totp_code, "") {
                Some(SecondFactor::Code(step)) => {
                    if let Some(t) = state.totp.as_mut() {
                        t.last_step = step;
                    }
                }
                _ => return Err(Status::unauthenticated("totp_code: a current code from the authenticator is needed")),
            }
        }
        Ok(())
    }

    pub async fn logout(&self, caller: &Caller) -> Result<(), Status> {
        self.end_sessions(caller.user_id, |id| id == caller.session_id, "logout").await.map(|_| ())
    }

    async fn end_sessions(&self, user_id: u128, which: impl Fn(&str) -> bool, reason: &str) -> Result<u32, Status> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        self.end_sessions_locked(&mut state, which, reason).await
    }

    async fn end_sessions_locked(
        &self,
        state: &mut UserState,
        which: impl Fn(&str) -> bool,
        reason: &str,
    ) -> Result<u32, Status> {
        let ending: Vec<(String, [u8; 32])> =
            state.sessions.iter().filter(|(id, _)| which(id)).map(|(id, s)| (id.clone(), s.token_hash)).collect();
        if ending.is_empty() {
            return Ok(0);
        }
        let details = ending
            .iter()
            .map(|(id, _)| Detail::SessionEnded(ev::SessionEnded { session_id: id.clone(), reason: reason.into() }))
            .collect();
        self.append(state, details).await?;
        for (_, hash) in &ending {
            self.sessions.remove(hash);
        }
        Ok(ending.len() as u32)
    }

    pub async fn profile(&self, user_id: u128) -> Result<wire::UserProfile, Status> {
        let user = self.user(user_id)?;
        let state = user.lock().await;
        Ok(profile_of(&state))
    }

    pub async fn update_profile(
        &self,
        user_id: u128,
        changes: ProfileChanges,
        reauth: Reauth<'_>,
    ) -> Result<wire::UserProfile, Status> {
        let today = (now_ns() / 86_400_000_000_000) as i64;
        if let Some(name) = &changes.name {
            profile::check_name("name", name, true).map_err(Status::invalid_argument)?;
        }
        if let Some(email) = &changes.email {
            profile::check_email(email).map_err(Status::invalid_argument)?;
        }
        if let Some(phone) = &changes.phone {
            profile::check_phone(phone).map_err(Status::invalid_argument)?;
        }
        if let Some(address) = &changes.address {
            profile::check_address(address).map_err(Status::invalid_argument)?;
        }
        if let Some(dob) = &changes.date_of_birth {
            profile::check_date_of_birth(dob, today).map_err(Status::invalid_argument)?;
        }
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        let mut next = state.profile.clone();
        let old_email = profile::normalize_email(&next.email);
        let new_email = changes.email.as_deref().map(profile::normalize_email).filter(|e| *e != old_email);
        if changes.email.is_some() && changes.email.as_deref().map(str::trim) != Some(next.email.as_str()) {
            self.reauthenticate(&mut state, &reauth).await?;
        }
        if let Some(email) = &new_email {
            match self.emails.entry(email.clone()) {
                dashmap::Entry::Occupied(_) => return Err(Status::already_exists("email: already registered")),
                dashmap::Entry::Vacant(v) => {
                    v.insert(user_id);
                }
            }
        }
        if let Some(v) = changes.name {
            next.name = v.trim().to_string();
        }
        if let Some(v) = changes.email {
            next.email = v.trim().to_string();
        }
        if let Some(v) = changes.phone {
            next.phone = v;
        }
        if let Some(v) = changes.address {
            next.address = v;
        }
        if let Some(v) = changes.date_of_birth {
            next.date_of_birth = v;
        }
        if next == state.profile {
            return Ok(profile_of(&state));
        }
        match self.append(&mut state, vec![Detail::ProfileUpdated(next)]).await {
            Ok(()) => {
                if new_email.is_some() {
                    self.emails.remove(&old_email);
                }
                Ok(profile_of(&state))
            }
            Err(status) => {
                if let Some(email) = new_email {
                    self.emails.remove(&email);
                }
                Err(status)
            }
        }
    }

    /// Changes the password and ends every other session of the user.
    pub async fn change_password(
        &self,
        caller: &Caller,
        reauth: Reauth<'_>,
        new_password: &str,
    ) -> Result<u32, Status> {
        let user = self.user(caller.user_id)?;
        let mut state = user.lock().await;
        password::check_policy(new_password, &state.profile.email)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.reauthenticate(&mut state, &reauth).await?;
        let hash = hash_password(new_password).await?;
        self.append(&mut state, vec![Detail::PasswordChanged(hash)]).await?;
        self.end_sessions_locked(&mut state, |id| id != caller.session_id, "password_changed").await
    }

    /// Erases a user: refuses while any wallet holds money or has holds; destroys the
    /// data key (crypto-shredding), then records the erasure.
    pub async fn delete(&self, caller: &Caller, reauth: Reauth<'_>) -> Result<(), Status> {
        let user = self.user(caller.user_id)?;
        let mut state = user.lock().await;
        self.reauthenticate(&mut state, &reauth).await?;
        let accounts: Vec<AccountId> = state.wallets.values().map(|&a| AccountId(a)).collect();
        let found = self.ledger.lookup_accounts(accounts).await.map_err(convert::status)?;
        let mut held = Vec::new();
        for account in found.into_iter().flatten() {
            let balance = account.credits_posted.abs_diff(account.debits_posted);
            if balance != 0 || account.debits_pending != 0 || account.credits_pending != 0 {
                held.push(format!("{} {}", account.currency.code(), format_amount(balance, account.currency)));
            }
        }
        if !held.is_empty() {
            return Err(Status::failed_precondition(format!(
                "the wallets still hold money or pending payments ({}); withdraw or send the balance and wait for \
                 pending payments, then delete the account",
                held.join(", ")
            )));
        }
        // Close the wallets, so nothing can be paid into them any more. The ledger closes
        // only an empty account with no holds: money that arrived since the check above
        // refuses the deletion here.
        let closing: Vec<AccountCommand> =
            state.wallets.values().map(|&a| AccountCommand::Close(AccountId(a))).collect();
        if !closing.is_empty() {
            let results = self.ledger.create_accounts(closing).await.map_err(convert::status)?;
            if let Some(Err(error)) =
                results.iter().find(|r| r.is_err() && **r != Err(ledger_core::domain::AccountError::Closed))
            {
                return Err(Status::failed_precondition(format!(
                    "a wallet cannot be closed ({error}); withdraw or send the balance, then delete the account"
                )));
            }
        }
        let keys = self.keys.clone();
        let slot = state.key_slot;
        tokio::task::spawn_blocking(move || keys.erase(slot))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(format!("key store: {e}")))?;
        for session in state.sessions.values() {
            self.sessions.remove(&session.token_hash);
        }
        self.emails.remove(&profile::normalize_email(&state.profile.email));
        let at = now_ns().max(state.last_ns + 1);
        let envelope = ev::UserEvent {
            user_id: state.id.to_string(),
            timestamp_ns: at,
            kind: Kind::UserErased as i32,
            key_slot: 0,
            sealed: Vec::new(),
        };
        let erased = EventData { event_type: event_type(Kind::UserErased).into(), payload: envelope.encode_to_vec() };
        state.erase();
        // The key is gone already: the person's data is unreadable whatever happens next.
        self.append_raw(&mut state, vec![erased]).await?;
        state.last_ns = at;
        tracing::info!(user_id = %caller.user_id, "user erased");
        Ok(())
    }

    pub async fn enroll_totp(&self, user_id: u128, reauth: Reauth<'_>) -> Result<(String, String), Status> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        if state.totp.is_some() {
            return Err(Status::failed_precondition("a second factor is already enabled; disable it first"));
        }
        self.reauthenticate(&mut state, &reauth).await?;
        let secret = random::<{ totp::SECRET_BYTES }>()?.to_vec();
        let uri = totp::otpauth_uri("Ledger", &state.profile.email, &secret);
        let shown = totp::base32(&secret);
        state.pending_totp = Some(secret);
        Ok((shown, uri))
    }

    pub async fn confirm_totp(&self, user_id: u128, code: &str) -> Result<Vec<String>, Status> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        let secret = state.pending_totp.clone().ok_or_else(|| Status::failed_precondition("enroll first"))?;
        let step = totp::matching_step(&secret, code, now_ns() / 1_000_000_000)
            .ok_or_else(|| Status::invalid_argument("code: does not match; check the authenticator's clock"))?;
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        let mut hashes = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let text = totp::base32(&random::<7>()?)[..10].to_lowercase();
            let code = format!("{}-{}", &text[..5], &text[5..]);
            hashes.push(blake3::hash(normalize_recovery(&code).as_bytes()).as_bytes().to_vec());
            codes.push(code);
        }
        let enabled = ev::TotpEnabled { secret, recovery_code_hashes: hashes, confirmed_step: step };
        self.append(&mut state, vec![Detail::TotpEnabled(enabled)]).await?;
        Ok(codes)
    }

    pub async fn disable_totp(&self, user_id: u128, reauth: Reauth<'_>) -> Result<(), Status> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        if state.totp.is_none() {
            return Err(Status::failed_precondition("no second factor is enabled"));
        }
        self.reauthenticate(&mut state, &reauth).await?;
        self.append(&mut state, vec![Detail::TotpDisabled(ev::Empty {})]).await
    }

    pub async fn sessions(&self, caller: &Caller) -> Result<Vec<wire::Session>, Status> {
        let user = self.user(caller.user_id)?;
        let state = user.lock().await;
        let idle = self.config.session_idle.as_nanos() as u64;
        let now = now_ns();
        Ok(state
            .sessions
            .iter()
            .filter(|(_, s)| s.live(now, self.config.session_idle))
            .map(|(id, s)| wire::Session {
                session_id: id.clone(),
                started_at_ns: s.started_ns,
                last_seen_at_ns: s.last_seen_ns,
                expires_at_ns: s.expires_ns.min(s.last_seen_ns + idle),
                source: s.source.clone(),
                current: *id == caller.session_id,
            })
            .collect())
    }

    pub async fn revoke_session(&self, user_id: u128, session_id: &str) -> Result<(), Status> {
        match self.end_sessions(user_id, |id| id == session_id, "revoked").await? {
            0 => Err(Status::not_found("session not found")),
            _ => Ok(()),
        }
    }

    pub async fn security_events(&self, user_id: u128) -> Result<Vec<(String, u64, String)>, Status> {
        let user = self.user(user_id)?;
        let state = user.lock().await;
        Ok(state.security.iter().rev().cloned().collect())
    }

    async fn add_instrument(
        &self,
        user_id: u128,
        method: ev::instrument::Method,
        verified: bool,
    ) -> Result<wire::PaymentInstrument, Status> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        if state.instruments.len() >= INSTRUMENTS_MAX {
            return Err(Status::failed_precondition(format!(
                "at most {INSTRUMENTS_MAX} instruments; remove one first"
            )));
        }
        if let ev::instrument::Method::BankAccount(new) = &method {
            let duplicate = state.instruments.iter().any(|i| match &i.instrument.method {
                Some(ev::instrument::Method::BankAccount(b)) => {
                    b.routing_number == new.routing_number && b.account_number == new.account_number
                }
                _ => false,
            });
            if duplicate {
                return Err(Status::already_exists("this bank account is already linked"));
            }
        }
        let id = format!("ins_{}", hex(&random::<8>()?));
        let instrument = ev::Instrument { instrument_id: id.clone(), method: Some(method), verified };
        let mut details = vec![Detail::InstrumentAdded(instrument)];
        if verified && state.default_instrument.is_none() {
            details.push(Detail::DefaultInstrumentSet(ev::InstrumentRef { instrument_id: id.clone() }));
        }
        self.append(&mut state, details).await?;
        instrument_of(&state, &id)
    }

    pub async fn add_bank_account(
        &self,
        user_id: u128,
        bank_name: &str,
        routing: &str,
        account_number: &str,
        holder_name: &str,
    ) -> Result<(wire::PaymentInstrument, Vec<u32>), Status> {
        profile::check_name("bank_name", bank_name, true).map_err(Status::invalid_argument)?;
        profile::check_name("holder_name", holder_name, false).map_err(Status::invalid_argument)?;
        instruments::check_routing_number(routing).map_err(Status::invalid_argument)?;
        instruments::check_account_number(account_number).map_err(Status::invalid_argument)?;
        let bytes = random::<2>()?;
        let deposits: Vec<u32> = bytes.iter().map(|b| 1 + u32::from(*b) % 99).collect();
        let bank = ev::BankAccount {
            bank_name: bank_name.trim().to_string(),
            routing_number: routing.to_string(),
            account_number: account_number.to_string(),
            holder_name: holder_name.trim().to_string(),
            micro_deposits: deposits.clone(),
        };
        let instrument = self.add_instrument(user_id, ev::instrument::Method::BankAccount(bank), false).await?;
        Ok((instrument, deposits))
    }

    pub async fn add_card(
        &self,
        user_id: u128,
        number: &str,
        exp_month: u32,
        exp_year: u32,
        cvv: &str,
        holder_name: &str,
    ) -> Result<wire::PaymentInstrument, Status> {
        let digits = instruments::card_digits(number).map_err(Status::invalid_argument)?;
        let brand = instruments::card_brand(&digits);
        let now = profile::year_month_of((now_ns() / 86_400_000_000_000) as i64);
        instruments::check_expiry(exp_month, exp_year, now).map_err(Status::invalid_argument)?;
        instruments::check_cvv(cvv, brand).map_err(Status::invalid_argument)?;
        profile::check_name("holder_name", holder_name, false).map_err(Status::invalid_argument)?;
        let token = self.vault.tokenize(&digits, exp_month, exp_year, cvv).map_err(Status::failed_precondition)?;
        let card = ev::Card {
            token,
            brand: brand.to_string(),
            last4: digits[digits.len() - 4..].to_string(),
            exp_month,
            exp_year,
            holder_name: holder_name.trim().to_string(),
        };
        self.add_instrument(user_id, ev::instrument::Method::Card(card), true).await
    }

    pub async fn add_digital_wallet(
        &self,
        user_id: u128,
        provider: &str,
        handle: &str,
    ) -> Result<wire::PaymentInstrument, Status> {
        instruments::check_wallet(provider, handle).map_err(Status::invalid_argument)?;
        let wallet = ev::DigitalWallet { provider: provider.to_string(), handle: handle.trim().to_string() };
        self.add_instrument(user_id, ev::instrument::Method::DigitalWallet(wallet), true).await
    }

    pub async fn instruments(&self, user_id: u128) -> Result<Vec<wire::PaymentInstrument>, Status> {
        let user = self.user(user_id)?;
        let state = user.lock().await;
        state.instruments.iter().map(|i| instrument_of(&state, &i.instrument.instrument_id)).collect()
    }

    pub async fn verify_instrument(
        &self,
        user_id: u128,
        instrument_id: &str,
        amounts: &[u32],
    ) -> Result<wire::PaymentInstrument, Status> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        let found = state.instrument(instrument_id).ok_or_else(|| Status::not_found("instrument not found"))?;
        if found.instrument.verified {
            return instrument_of(&state, instrument_id);
        }
        if found.failed_for_good {
            return Err(Status::failed_precondition(
                "verification failed for good; remove the account and add it again",
            ));
        }
        let Some(ev::instrument::Method::BankAccount(bank)) = &found.instrument.method else {
            return Err(Status::internal("only bank accounts await verification"));
        };
        let mut expected = bank.micro_deposits.clone();
        let mut given = amounts.to_vec();
        expected.sort_unstable();
        given.sort_unstable();
        if given.len() != 2 {
            return Err(Status::invalid_argument("amounts: the two micro-deposits, in minor units"));
        }
        let id = instrument_id.to_string();
        if given == expected {
            let mut details = vec![Detail::InstrumentVerified(ev::InstrumentRef { instrument_id: id.clone() })];
            if state.default_instrument.is_none() {
                details.push(Detail::DefaultInstrumentSet(ev::InstrumentRef { instrument_id: id.clone() }));
            }
            self.append(&mut state, details).await?;
            return instrument_of(&state, &id);
        }
        let attempts = found.failed_attempts + 1;
        let r#final = attempts >= VERIFY_ATTEMPTS_MAX;
        let failed = ev::VerificationFailed { instrument_id: id, attempts, r#final };
        self.append(&mut state, vec![Detail::VerificationFailed(failed)]).await?;
        Err(Status::failed_precondition(if r#final {
            "the amounts do not match; no attempts left: remove the account and add it again".to_string()
        } else {
            format!("the amounts do not match; {} attempts left", VERIFY_ATTEMPTS_MAX - attempts)
        }))
    }

    pub async fn set_default_instrument(
        &self,
        user_id: u128,
        instrument_id: &str,
    ) -> Result<wire::PaymentInstrument, Status> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        let found = state.instrument(instrument_id).ok_or_else(|| Status::not_found("instrument not found"))?;
        if !found.instrument.verified {
            return Err(Status::failed_precondition("verify the instrument first"));
        }
        if state.default_instrument.as_deref() != Some(instrument_id) {
            let set = ev::InstrumentRef { instrument_id: instrument_id.to_string() };
            self.append(&mut state, vec![Detail::DefaultInstrumentSet(set)]).await?;
        }
        instrument_of(&state, instrument_id)
    }

    pub async fn remove_instrument(&self, user_id: u128, instrument_id: &str) -> Result<(), Status> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        state.instrument(instrument_id).ok_or_else(|| Status::not_found("instrument not found"))?;
        let removed = ev::InstrumentRef { instrument_id: instrument_id.to_string() };
        self.append(&mut state, vec![Detail::InstrumentRemoved(removed)]).await
    }

    /// Opens the user's wallet in `currency` (idempotent): a ledger account owned by
    /// the user that cannot be overdrawn.
    pub async fn open_wallet(&self, user_id: u128, currency: Currency) -> Result<wire::Wallet, Status> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        let account = wallet_account_id(user_id, currency);
        if !state.wallets.contains_key(currency.code()) {
            let open = AccountCommand::Open(NewAccount {
                id: AccountId(account),
                currency,
                code: WALLET_ACCOUNT_CODE,
                flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                owner_id: user_id,
            });
            let results = self.ledger.create_accounts(vec![open]).await.map_err(convert::status)?;
            if let Some(Err(error)) = results.first() {
                return Err(Status::internal(format!("opening the wallet account: {error}")));
            }
            let opened = ev::WalletOpened { currency: currency.code().to_string(), account_id: account.to_string() };
            self.append(&mut state, vec![Detail::WalletOpened(opened)]).await?;
        }
        drop(state);
        let mut wallets = self.wallets(user_id).await?;
        wallets.retain(|w| w.currency == currency.code());
        wallets.pop().ok_or_else(|| Status::internal("the wallet account is missing"))
    }

    pub async fn wallets(&self, user_id: u128) -> Result<Vec<wire::Wallet>, Status> {
        let user = self.user(user_id)?;
        let wallets: Vec<(String, u128)> = user.lock().await.wallets.iter().map(|(c, a)| (c.clone(), *a)).collect();
        let accounts = self
            .ledger
            .lookup_accounts(wallets.iter().map(|(_, a)| AccountId(*a)).collect())
            .await
            .map_err(convert::status)?;
        Ok(wallets
            .iter()
            .zip(accounts)
            .filter_map(|((_, id), account)| {
                let account = account?;
                let balance = account.credits_posted as i128 - account.debits_posted as i128;
                let available = balance - account.debits_pending as i128;
                let show = |v: i128| {
                    let text = format_amount(v.unsigned_abs(), account.currency);
                    if v < 0 {
                        format!("-{text}")
                    } else {
                        text
                    }
                };
                Some(wire::Wallet {
                    currency: account.currency.code().to_string(),
                    account_id: id.to_string(),
                    balance: show(balance),
                    available: show(available),
                })
            })
            .collect())
    }

    /// Forgets sessions past their absolute expiry that were never presented again
    /// (one presented after its expiry is dropped then). Run now and then.
    pub fn sweep_sessions(&self) {
        let now = now_ns();
        self.sessions.retain(|_, (_, _, expires)| *expires >= now);
    }

    /// The user behind an email, if one is registered (and not erased).
    pub fn find_by_email(&self, email: &str) -> Option<u128> {
        self.emails.get(&profile::normalize_email(email)).map(|id| *id)
    }

    /// Whether `user_id` is a registered, not erased user.
    pub async fn exists(&self, user_id: u128) -> bool {
        match self.users.get(&user_id).map(|u| u.clone()) {
            Some(user) => !user.lock().await.erased,
            None => false,
        }
    }

    /// A verified instrument of the user to pay with (or to withdraw to): its kind,
    /// what the rail knows it by (a card's vault token; a masked reference otherwise),
    /// and when it was added. NOT_FOUND for an instrument that is not the user's.
    pub async fn funding_instrument(&self, user_id: u128, instrument_id: &str) -> Result<FundingInstrument, Status> {
        use ev::instrument::Method;
        let user = self.user(user_id)?;
        let state = user.lock().await;
        let found = state.instrument(instrument_id).ok_or_else(|| Status::not_found("instrument not found"))?;
        if !found.instrument.verified {
            return Err(Status::failed_precondition("the instrument is not verified yet"));
        }
        let (kind, reference) = match &found.instrument.method {
            Some(Method::BankAccount(b)) => {
                ("bank_account", format!("{}:{}", b.routing_number, instruments::mask_tail(&b.account_number)))
            }
            Some(Method::Card(c)) => ("card", c.token.clone()),
            Some(Method::DigitalWallet(w)) => {
                ("digital_wallet", format!("{}:{}", w.provider, instruments::mask_handle(&w.handle)))
            }
            None => return Err(Status::internal("instrument without a method")),
        };
        Ok(FundingInstrument { kind, reference, added_ns: found.added_ns })
    }

    /// Whether the user owns ledger account `account` (a wallet of theirs).
    pub async fn owns_account(&self, user_id: u128, account: u128) -> bool {
        match self.users.get(&user_id).map(|u| u.clone()) {
            Some(user) => user.lock().await.wallets.values().any(|&a| a == account),
            None => false,
        }
    }
}

/// An instrument as the payments saga needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FundingInstrument {
    pub kind: &'static str,
    pub reference: String,
    pub added_ns: u64,
}

/// What a profile update changes; `None` leaves a field as it is.
#[derive(Default, Debug)]
pub struct ProfileChanges {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub date_of_birth: Option<String>,
}

enum SecondFactor {
    Code(u64),
    Recovery(u32),
}

fn normalize_recovery(code: &str) -> String {
    code.trim().to_lowercase().replace(['-', ' '], "")
}

async fn hash_password(password: &str) -> Result<String, Status> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))
}

async fn verify_password(password: &str, hash: &str) -> Result<bool, Status> {
    let (password, hash) = (password.to_string(), hash.to_string());
    tokio::task::spawn_blocking(move || password::verify(&password, &hash))
        .await
        .map_err(|e| Status::internal(e.to_string()))
}

fn profile_of(state: &UserState) -> wire::UserProfile {
    let p = &state.profile;
    wire::UserProfile {
        user_id: state.id.to_string(),
        name: p.name.clone(),
        email: p.email.clone(),
        phone: p.phone.clone(),
        address: p.address.clone(),
        date_of_birth: p.date_of_birth.clone(),
        totp_enabled: state.totp.is_some(),
        registered_at_ns: state.registered_ns,
    }
}

fn instrument_of(state: &UserState, id: &str) -> Result<wire::PaymentInstrument, Status> {
    use ev::instrument::Method;
    use wire::{InstrumentKind, InstrumentStatus, PaymentInstrument};
    let found = state.instrument(id).ok_or_else(|| Status::not_found("instrument not found"))?;
    let i = &found.instrument;
    let status = match (i.verified, found.failed_for_good) {
        (true, _) => InstrumentStatus::Verified,
        (false, true) => InstrumentStatus::VerificationFailed,
        (false, false) => InstrumentStatus::PendingVerification,
    };
    let mut out = PaymentInstrument {
        instrument_id: i.instrument_id.clone(),
        status: status as i32,
        is_default: state.default_instrument.as_deref() == Some(id),
        display: instrument_display(i),
        ..PaymentInstrument::default()
    };
    match &i.method {
        Some(Method::BankAccount(b)) => {
            out.kind = InstrumentKind::BankAccount as i32;
            out.bank_name = b.bank_name.clone();
            out.routing_number = b.routing_number.clone();
            out.account_number_masked = instruments::mask_tail(&b.account_number);
        }
        Some(Method::Card(c)) => {
            out.kind = InstrumentKind::Card as i32;
            out.card_brand = c.brand.clone();
            out.card_last4 = c.last4.clone();
            out.card_exp_month = c.exp_month;
            out.card_exp_year = c.exp_year;
        }
        Some(Method::DigitalWallet(w)) => {
            out.kind = InstrumentKind::DigitalWallet as i32;
            out.wallet_provider = w.provider.clone();
            out.wallet_handle_masked = instruments::mask_handle(&w.handle);
        }
        None => {}
    }
    Ok(out)
}
