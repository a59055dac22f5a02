//! Users of the payments platform: event-sourced aggregates on `user-{id}` streams of
//! the same event log as the ledger, with their personal data sealed under a per-user
//! key (see `crypto`), sign-in with argon2id passwords, sessions, TOTP, throttling,
//! linked payment instruments and wallet accounts in the ledger.
//!
//! A user is folded from their stream when a call needs them and kept in a bounded
//! cache (`load`); an index on disk finds a user by email and a session by its token
//! (`index`). A start brings the index up to the log and reads no user. Every change
//! is decided against the user's state under their lock, appended with the stream's
//! exact expected revision, and applied by the same `evolve` a fold uses only once the
//! append is durable.

mod account;
pub mod admin;
pub mod crypto;
mod error;
pub mod generate;
pub mod index;
pub mod instruments;
mod load;
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

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ledger_core::clock::Clock;
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::user_event_details::Detail;
use ledger_proto::events::v1::UserEventKind as Kind;
use prost::Message;
use tokio::sync::Mutex;

use crate::engine::{EventData, EventStore, Ledger};
use crate::FieldError;
use crypto::{KeyStore, SecretKey};
use index::UserIndex;
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
    /// Users kept in memory at most (see `load`); more are folded from their streams
    /// again when needed.
    pub cached_max: usize,
}

/// Users kept in memory by default: about 2 KB each for a typical user, so about 200 MB.
pub const USERS_CACHED_DEFAULT: usize = 100_000;

impl Default for UsersConfig {
    fn default() -> UsersConfig {
        UsersConfig {
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            limits: throttle::Limits::default(),
            registrations_per_source_hour: 100,
            cached_max: USERS_CACHED_DEFAULT,
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
    /// The users in memory, at most about `config.cached_max` (see `load`).
    users: DashMap<u128, Arc<Mutex<UserState>>>,
    /// The cached users in the order they came in, oldest first.
    order: std::sync::Mutex<VecDeque<u128>>,
    /// Emails, sessions and user ids on disk (see `index`).
    index: UserIndex,
    /// Keyed hashes of emails that a sign-up or a change is claiming, while its append
    /// is in flight: a second claim of the same email is refused at once.
    claims: DashMap<[u8; 32], u128>,
    /// Verified when the email is unknown, so that answer takes as long as a wrong password.
    dummy_hash: String,
    /// Where the time is read: session expiry, TOTP steps, event stamps.
    clock: Arc<dyn Clock>,
}

impl Users {
    /// Session tokens in the index (live ones, and ended ones not swept yet).
    pub fn sessions_held(&self) -> Result<u64, UsersError> {
        self.index.sessions_held()
    }
}

/// Where the users' index of a data directory lives.
pub fn index_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("users").join("index.redb")
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").field("cached", &self.users.len()).finish_non_exhaustive()
    }
}

/// Re-authentication for a sensitive change.
pub struct Reauth<'a> {
    pub password: &'a str,
    pub totp_code: &'a str,
}

impl Users {
    /// Opens the users over the index at `index_path` (see [`index_path`]), brought up
    /// to the log: the events after its checkpoint are re-applied, or it is rebuilt
    /// from the user streams if it does not match the log. No user is read otherwise.
    /// Keys come from `keys`; a user whose key is gone was erased (even if the crash
    /// came before the erasure event).
    pub fn open(
        store: Arc<dyn EventStore>,
        ledger: Ledger,
        keys: KeyStore,
        vault: Box<dyn CardVault>,
        config: UsersConfig,
        clock: Arc<dyn Clock>,
        index_path: &Path,
    ) -> Result<Users, UsersError> {
        let index = UserIndex::open(index_path, keys.derive_key("ledger users index: email v1"))?;
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
            order: std::sync::Mutex::new(VecDeque::new()),
            index,
            claims: DashMap::new(),
            dummy_hash: password::hash("an unguessable placeholder for unknown emails")
                .map_err(|e| UsersError::Internal(e.to_string()))?,
            clock,
        };
        users.catch_up_index()?;
        tracing::info!(users = users.index.users_held()?, "users index open");
        Ok(users)
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
        let id = self.new_user_id()?;
        let claim = self.claim_email(&profile::normalize_email(email), id)?;
        let result = self.register_reserved(id, name, email, password).await;
        self.end_claim(&claim, id, result.is_ok());
        result.map(|()| id)
    }

    /// A random user id no user has.
    fn new_user_id(&self) -> Result<u128, UsersError> {
        loop {
            let id = u128::from_le_bytes(random()?) >> 1;
            if id != 0 && !self.users.contains_key(&id) && self.index.user_slot(id)?.is_none() {
                return Ok(id);
            }
        }
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
        // In the index before the append (see `index`); taken out again if it fails.
        let appended = match self.index.edit(false, |e| e.put_user(id, slot)) {
            Ok(()) => self.append(&mut state, vec![registered]).await,
            Err(error) => Err(error),
        };
        if let Err(error) = appended {
            let _ = self.keys.erase(slot);
            if let Err(index) = self.index.edit(false, |e| e.remove_user(id)) {
                tracing::warn!(%index, "a failed sign-up's user id stays in the index (pages skip it)");
            }
            return Err(error);
        }
        self.insert_new(state);
        Ok(())
    }

    /// Claims `normalized` for user `id` ahead of the append that makes it theirs:
    /// refused while another claim of it is in flight or another user has it; its index
    /// entry is written before the append. End with [`Users::end_claim`].
    fn claim_email(&self, normalized: &str, id: u128) -> Result<[u8; 32], UsersError> {
        let hash = self.index.email_hash(normalized);
        match self.claims.entry(hash) {
            dashmap::Entry::Occupied(_) => return Err(UsersError::AlreadyExists("email: already registered")),
            dashmap::Entry::Vacant(v) => {
                v.insert(id);
            }
        }
        let claimed = match self.index.email(&hash) {
            Ok(Some(holder)) if holder != id => match self.holds_email(holder, normalized) {
                Ok(true) => Err(UsersError::AlreadyExists("email: already registered")),
                Ok(false) => Ok(()),
                Err(error) => Err(error),
            },
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        };
        let written = claimed.and_then(|()| self.index.edit(false, |e| e.put_email(&hash, id)));
        if written.is_err() {
            self.claims.remove(&hash);
        }
        written.map(|()| hash)
    }

    /// Ends a claim: the index entry stays if the append was durable, else it goes.
    fn end_claim(&self, hash: &[u8; 32], id: u128, appended: bool) {
        if !appended {
            self.forget_email(hash, id);
        }
        self.claims.remove(hash);
    }

    /// Takes an email's entry out of the index if it still names `id`. A failure leaves
    /// an entry that every use checks against the user, so it is logged, not answered.
    fn forget_email(&self, hash: &[u8; 32], id: u128) {
        if let Err(error) = self.index.edit(false, |e| e.remove_email(hash, id)) {
            tracing::warn!(%error, "an email's index entry could not be removed; it is checked at each use");
        }
    }

    /// Takes sessions out of the index after the append that ended them (see `forget_email`).
    fn forget_sessions(&self, hashes: &[[u8; 32]]) {
        let removed = self.index.edit(false, |e| hashes.iter().try_for_each(|hash| e.remove_session(hash)));
        if let Err(error) = removed {
            tracing::warn!(%error, "ended sessions stay in the index until they expire; each use checks the user");
        }
    }

    /// Whether user `holder` has the email `normalized` now, read from their stream
    /// without their lock (so two changes that swap emails cannot wait on each other).
    fn holds_email(&self, holder: u128, normalized: &str) -> Result<bool, UsersError> {
        if self.store.stream_head(&stream_name(holder))?.is_none() {
            return Ok(false);
        }
        let state = self.fold(holder)?;
        Ok(state.has_email(normalized))
    }

    /// Forgets sessions past their absolute expiry (run every minute by `ledgerd`);
    /// answers how many.
    pub fn sweep_sessions(&self) -> Result<usize, UsersError> {
        self.index.sweep_sessions(self.clock.now_ns())
    }

    /// The user behind an email, if one is registered (and not erased).
    pub async fn find_by_email(&self, email: &str) -> Result<Option<u128>, UsersError> {
        let normalized = profile::normalize_email(email);
        let Some(user) = self.user_by_email(&normalized)? else { return Ok(None) };
        let state = user.lock().await;
        Ok(state.has_email(&normalized).then_some(state.id))
    }

    /// The user the index names for an email (check `has_email` under their lock).
    fn user_by_email(&self, normalized: &str) -> Result<Option<Arc<Mutex<UserState>>>, UsersError> {
        let Some(id) = self.index.email(&self.index.email_hash(normalized))? else { return Ok(None) };
        match self.user(id) {
            Ok(user) => Ok(Some(user)),
            Err(UsersError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Whether `user_id` is a registered, not erased user.
    pub async fn exists(&self, user_id: u128) -> Result<bool, UsersError> {
        match self.user(user_id) {
            Ok(user) => Ok(!user.lock().await.erased),
            Err(UsersError::NotFound(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Whether the user owns ledger account `account` (a wallet of theirs).
    pub async fn owns_account(&self, user_id: u128, account: u128) -> Result<bool, UsersError> {
        match self.user(user_id) {
            Ok(user) => Ok(user.lock().await.wallets.values().any(|&a| a == account)),
            Err(UsersError::NotFound(_)) => Ok(false),
            Err(error) => Err(error),
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
