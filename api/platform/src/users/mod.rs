//! Users of the payments platform: event-sourced aggregates on `user-{id}` streams of
//! the same event log as the ledger, with their personal data sealed under a per-user
//! key (see `crypto`), sign-in with argon2id passwords, sessions, TOTP, throttling,
//! linked payment instruments and wallet accounts in the ledger.
//!
//! State is a fold of the user streams, rebuilt at start by reading the log; every
//! change is decided against it under the user's lock, appended with the stream's
//! exact expected revision, and applied by the same `evolve` that replay uses only
//! once the append is durable.

mod account;
pub mod admin;
pub mod crypto;
mod error;
pub mod generate;
pub mod instruments;
mod methods;
pub mod password;
mod personal;
pub mod profile;
pub mod sessions;
mod state;
pub mod throttle;
pub mod totp;
mod view;
pub mod window;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ledger_core::clock::Clock;
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::user_event_details::Detail;
use ledger_proto::events::v1::UserEventKind as Kind;
use prost::Message;
use tokio::sync::Mutex;

use crate::engine::{EventData, EventStore, Ledger, RecordedEvent};
use crate::FieldError;
use crypto::{KeyStore, SecretKey};
use instruments::CardVault;
use state::{aad, event_type, kind_of, UserState};
use throttle::Throttle;

pub use crate::chart::{wallet_account_id, WALLET_ACCOUNT_CODE};
pub use error::UsersError;
pub use methods::{INSTRUMENTS_MAX, VERIFY_ATTEMPTS_MAX};
pub use personal::{Party, DELETED_USER};
pub use view::{
    InstrumentDetails, InstrumentStatus, PaymentInstrument, SecurityEvent, SessionInfo, SignIn, UserProfile, Wallet,
};

/// The prefix of session tokens, so a token can be told from a role token at sight.
pub const SESSION_TOKEN_PREFIX: &str = "lus_";

#[derive(Clone, Copy, Debug)]
pub struct UsersConfig {
    /// A session ends after this long without a call.
    pub session_idle: Duration,
    /// A session ends this long after sign-in, whatever its use.
    pub session_max: Duration,
    pub limits: throttle::Limits,
    /// Sign-ups with valid input per source address within an hour; one more is
    /// throttled (RESOURCE_EXHAUSTED with a retry time).
    pub registrations_per_source_hour: u64,
}

impl Default for UsersConfig {
    fn default() -> UsersConfig {
        UsersConfig {
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            limits: throttle::Limits::default(),
            registrations_per_source_hour: 100,
        }
    }
}

/// Source addresses whose sign-ups are counted at once (about 100 bytes each); when all
/// of them signed up within the hour, sign-ups from a new address are refused as busy.
pub const REGISTRATION_SOURCES_MAX: usize = 1_000_000;

/// The authenticated user behind a session token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: u128,
    pub session_id: String,
}

pub fn stream_name(user_id: u128) -> String {
    format!("user-{user_id}")
}

fn random<const N: usize>() -> Result<[u8; N], UsersError> {
    Ok(crate::random::bytes()?)
}

/// The users of the platform and everything they can do.
pub struct Users {
    store: Arc<dyn EventStore>,
    ledger: Ledger,
    keys: Arc<KeyStore>,
    vault: Box<dyn CardVault>,
    throttle: Throttle,
    /// Sign-ups per source address in the last hour.
    registrations: window::WindowCounts<String>,
    config: UsersConfig,
    users: DashMap<u128, Arc<Mutex<UserState>>>,
    /// Normalized email → user. An entry is reserved before its registration or
    /// change is appended and released if that fails.
    emails: DashMap<String, u128>,
    /// blake3 of a session token → (user, session id, absolute expiry ns). Entries past
    /// their absolute expiry are dropped by `sweep_sessions` (every minute in `ledgerd`).
    sessions: DashMap<[u8; 32], (u128, String, u64)>,
    /// Verified when the email is unknown, so that answer takes as long as a wrong password.
    dummy_hash: String,
    /// Where the time is read: session expiry, TOTP steps, event stamps.
    clock: Arc<dyn Clock>,
}

impl Users {
    /// Session tokens held in memory (live ones, and ended ones not swept yet).
    pub fn sessions_held(&self) -> usize {
        self.sessions.len()
    }
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
        clock: Arc<dyn Clock>,
    ) -> Result<Users, UsersError> {
        let users = Users {
            store,
            ledger,
            keys: Arc::new(keys),
            vault,
            throttle: Throttle::new(config.limits),
            registrations: window::WindowCounts::new(
                config.registrations_per_source_hour,
                Duration::from_secs(3_600),
                REGISTRATION_SOURCES_MAX,
            ),
            config,
            users: DashMap::new(),
            emails: DashMap::new(),
            sessions: DashMap::new(),
            dummy_hash: password::hash("an unguessable placeholder for unknown emails")
                .map_err(|e| UsersError::Internal(e.to_string()))?,
            clock,
        };
        let mut states: BTreeMap<u128, UserState> = BTreeMap::new();
        for stream in users.store.stream_names("user-")? {
            crate::stream::load(users.store.as_ref(), &stream, 1_024, |record| users.replay(&mut states, record))?;
        }
        let now = users.clock.now_ns();
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
    fn replay(&self, states: &mut BTreeMap<u128, UserState>, record: &RecordedEvent) -> Result<(), UsersError> {
        let at = |e: &dyn std::fmt::Display| {
            UsersError::Corrupt(format!("{} revision {}: {e}", record.stream, record.revision))
        };
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
            state.evolve(event.timestamp_ns, detail)?;
        }
        Ok(())
    }

    /// Appends `details` to the user's stream durably, then folds them into `state`.
    async fn append(&self, state: &mut UserState, details: Vec<Detail>) -> Result<(), UsersError> {
        append_details(self.store.as_ref(), self.clock.as_ref(), state, details).await
    }

    async fn append_raw(&self, state: &mut UserState, events: Vec<EventData>) -> Result<(), UsersError> {
        append_events(self.store.as_ref(), state, events).await
    }
}

async fn append_details(
    store: &dyn EventStore,
    clock: &dyn Clock,
    state: &mut UserState,
    details: Vec<Detail>,
) -> Result<(), UsersError> {
    let key = state.key.clone().ok_or(UsersError::NotFound("user"))?;
    let mut events = Vec::with_capacity(details.len());
    let mut stamped = Vec::with_capacity(details.len());
    let mut at = state.last_ns;
    for detail in details {
        at = clock.now_ns().max(at + 1);
        let kind = kind_of(&detail);
        let plain = ev::UserEventDetails { detail: Some(detail.clone()) }.encode_to_vec();
        let envelope = ev::UserEvent {
            user_id: state.id.to_string(),
            timestamp_ns: at,
            kind: kind as i32,
            key_slot: if kind == Kind::UserRegistered { state.key_slot } else { 0 },
            sealed: key.seal(&plain, &aad(state.id, kind)).map_err(UsersError::Seal)?,
        };
        events.push(EventData { event_type: event_type(kind).into(), payload: envelope.encode_to_vec() });
        stamped.push((at, detail));
    }
    append_events(store, state, events).await?;
    for (at, detail) in stamped {
        state.evolve(at, detail)?;
    }
    Ok(())
}

async fn append_events(
    store: &dyn EventStore,
    state: &mut UserState,
    events: Vec<EventData>,
) -> Result<(), UsersError> {
    crate::stream::append(store, &stream_name(state.id), &mut state.revision, events).await?;
    Ok(())
}

impl Users {
    fn user(&self, id: u128) -> Result<Arc<Mutex<UserState>>, UsersError> {
        self.users.get(&id).map(|u| u.clone()).ok_or(UsersError::NotFound("user"))
    }

    /// The user a request names: empty means the caller; anyone else is refused.
    pub fn subject(caller: &Caller, user_id: &str) -> Result<u128, UsersError> {
        if user_id.is_empty() {
            return Ok(caller.user_id);
        }
        match user_id.parse::<u128>() {
            Ok(id) if id == caller.user_id => Ok(id),
            Ok(_) => Err(UsersError::PermissionDenied("a user may act only on their own account")),
            Err(_) => Err(FieldError::new("user_id", "a decimal user id, or empty for the caller").into()),
        }
    }

    /// Signs up a new user from the address `source` (see
    /// [`UsersConfig::registrations_per_source_hour`]).
    pub async fn register(&self, name: &str, email: &str, password: &str, source: &str) -> Result<u128, UsersError> {
        profile::check_name("name", name, true)?;
        profile::check_email(email)?;
        password::check_policy(password, email)?;
        match self.registrations.take(&source.to_string()) {
            Ok(()) => {}
            Err(window::Refused::Limit(wait)) => {
                return Err(UsersError::Throttled { retry_after_secs: wait.as_secs().max(1) })
            }
            Err(window::Refused::Full) => return Err(UsersError::Busy),
        }
        let normalized = profile::normalize_email(email);
        let id = loop {
            let id = u128::from_le_bytes(random()?) >> 1;
            if id != 0 && !self.users.contains_key(&id) {
                break id;
            }
        };
        match self.emails.entry(normalized.clone()) {
            dashmap::Entry::Occupied(_) => return Err(UsersError::AlreadyExists("email: already registered")),
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

    async fn register_reserved(&self, id: u128, name: &str, email: &str, password: &str) -> Result<(), UsersError> {
        let hash = hash_password(password).await?;
        let key = SecretKey::random()?;
        let keys = self.keys.clone();
        let slot_key = key.clone();
        let slot = tokio::task::spawn_blocking(move || keys.add(id, &slot_key))
            .await
            .map_err(|e| UsersError::Internal(e.to_string()))?
            .map_err(UsersError::KeyStore)?;
        let mut state = UserState::new(id);
        state.key = Some(key);
        state.key_slot = slot;
        let profile =
            ev::Profile { name: name.trim().to_string(), email: email.trim().to_string(), ..Default::default() };
        let registered =
            Detail::Registered(ev::Registered { profile: Some(profile), password_hash: hash, generated: false });
        if let Err(status) = self.append(&mut state, vec![registered]).await {
            let _ = self.keys.erase(slot);
            return Err(status);
        }
        self.users.insert(id, Arc::new(Mutex::new(state)));
        Ok(())
    }

    /// Forgets sessions past their absolute expiry that were never presented again
    /// (one presented after its expiry is dropped then). Run now and then.
    pub fn sweep_sessions(&self) {
        let now = self.clock.now_ns();
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

    /// Whether the user owns ledger account `account` (a wallet of theirs).
    pub async fn owns_account(&self, user_id: u128, account: u128) -> bool {
        match self.users.get(&user_id).map(|u| u.clone()) {
            Some(user) => user.lock().await.wallets.values().any(|&a| a == account),
            None => false,
        }
    }
}

/// An instrument as the payments saga needs it: its kind, what the rail knows it by,
/// and when it was added.
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

/// Sessions one user may hold; a sign-in beyond it ends the oldest (in the same append
/// as the new one), as a user who signs in on one more device expects.
pub const SESSIONS_PER_USER_MAX: usize = 32;

/// Password hashes (argon2id, `password::ARGON2_MEMORY_KIB` of memory each) running at
/// once in this process; more wait for a turn. 4 × 19 MiB bounds their memory at 76 MiB.
pub const PASSWORD_HASHES_CONCURRENT_MAX: usize = 4;
/// Longest a password hash waits for a turn before the call is refused with
/// `UsersError::Busy` (RESOURCE_EXHAUSTED), in seconds: a flood of sign-ins queues
/// briefly, then is turned away instead of holding memory and connections.
pub const PASSWORD_HASH_WAIT_MAX: Duration = Duration::from_secs(2);

static PASSWORD_HASHES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PASSWORD_HASHES_CONCURRENT_MAX);

/// Runs `work` (a password hash or check) when one of the `PASSWORD_HASHES_CONCURRENT_MAX`
/// turns is free, waiting at most `wait_max`.
async fn with_hash_turn<T: Send + 'static>(
    wait_max: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, UsersError> {
    let turn = tokio::time::timeout(wait_max, PASSWORD_HASHES.acquire()).await.map_err(|_| UsersError::Busy)?;
    let turn = turn.map_err(|e| UsersError::Internal(e.to_string()))?;
    let done = tokio::task::spawn_blocking(work).await.map_err(|e| UsersError::Internal(e.to_string()));
    drop(turn);
    done
}

async fn hash_password(password: &str) -> Result<String, UsersError> {
    let password = password.to_string();
    with_hash_turn(PASSWORD_HASH_WAIT_MAX, move || password::hash(&password))
        .await?
        .map_err(|e| UsersError::Internal(e.to_string()))
}

async fn verify_password(password: &str, hash: &str) -> Result<bool, UsersError> {
    let (password, hash) = (password.to_string(), hash.to_string());
    with_hash_turn(PASSWORD_HASH_WAIT_MAX, move || password::verify(&password, &hash)).await
}

#[cfg(test)]
mod hash_turn_tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_beyond_the_limit_wait_then_are_refused_busy() {
        // Every turn taken by work that holds it until released.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(std::sync::Mutex::new(held));
        let mut holders = Vec::new();
        for _ in 0..PASSWORD_HASHES_CONCURRENT_MAX {
            let held = held.clone();
            holders.push(tokio::spawn(with_hash_turn(Duration::from_secs(5), move || {
                let _ = held.lock().map(|held| held.recv());
            })));
        }
        while PASSWORD_HASHES.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = with_hash_turn(Duration::from_millis(50), || ()).await;
        assert!(matches!(refused, Err(UsersError::Busy)), "{refused:?}");
        assert_eq!(UsersError::Busy.code(), "USERS_BUSY");
        // A waiter gets a turn as soon as one frees.
        let waiter = tokio::spawn(with_hash_turn(Duration::from_secs(5), || 7));
        release.send(()).expect("release one");
        assert_eq!(waiter.await.expect("join").expect("a turn"), 7);
        for _ in 1..PASSWORD_HASHES_CONCURRENT_MAX {
            release.send(()).expect("release");
        }
        for holder in holders {
            holder.await.expect("join").expect("ran");
        }
        assert_eq!(PASSWORD_HASHES.available_permits(), PASSWORD_HASHES_CONCURRENT_MAX);
    }
}
