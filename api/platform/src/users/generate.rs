//! Test data for scale tests: many users signed up at once through the platform's own
//! events (`ledgerctl gen users`), never through the API.
//!
//! Each generated user is a real user: a stream `user-{id}` whose `Registered` event
//! holds the profile sealed under the user's own data key, a data key in the key
//! store, and a password hash the server checks at sign-in. What makes it fast, and
//! what marks it as test data:
//! - one argon2id hash, computed once by the caller, is shared by every generated user
//!   (`Registered.generated` is true, so an auditor or an operator can tell);
//! - the data keys of a batch are written with one write and one sync;
//! - the users' streams are appended concurrently, so the store commits many in one sync.
//!
//! Production sign-ups never take this path: `Users::register` hashes each password.

use std::sync::Arc;

use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::user_event_details::Detail;
use tokio::sync::Mutex;

use super::crypto::SecretKey;
use super::state::UserState;
use super::{profile, random, Users, UsersError};

/// Users signed up per call of [`Users::generate`], at most.
pub const GENERATE_BATCH_MAX: usize = 10_000;

impl Users {
    /// Signs up `people` (name, email) as generated test users sharing
    /// `password_hash` (an argon2id PHC string); answers their ids in order. An email
    /// already registered refuses the whole batch before anything is written.
    pub async fn generate(
        self: &Arc<Self>,
        people: &[(String, String)],
        password_hash: &str,
    ) -> Result<Vec<u128>, UsersError> {
        if people.is_empty() || people.len() > GENERATE_BATCH_MAX {
            return Err(UsersError::InvalidRequest("generate 1 to 10,000 users at a time"));
        }
        if !password_hash.starts_with("$argon2id$") {
            return Err(UsersError::InvalidRequest("the shared password hash must be an argon2id PHC string"));
        }
        let mut reserved: Vec<(u128, String)> = Vec::with_capacity(people.len());
        for (name, email) in people {
            let checked = profile::check_name("name", name, true).and_then(|()| profile::check_email(email));
            if let Err(error) = checked {
                return Err(self.release(&reserved, &[], error.into()));
            }
            let id = u128::from_le_bytes(random()?) >> 1;
            if id == 0 || self.users.contains_key(&id) {
                let error = UsersError::Internal("a drawn user id is taken; generate again".into());
                return Err(self.release(&reserved, &[], error));
            }
            let normalized = profile::normalize_email(email);
            // The entry's guard ends with this statement, before anything else is touched.
            let free = match self.emails.entry(normalized.clone()) {
                dashmap::Entry::Vacant(v) => {
                    v.insert(id);
                    true
                }
                dashmap::Entry::Occupied(_) => false,
            };
            if !free {
                return Err(self.release(&reserved, &[], UsersError::AlreadyExists("email: already registered")));
            }
            reserved.push((id, normalized));
        }
        self.generate_reserved(people, &reserved, password_hash).await
    }

    /// Writes the reserved users; on an error, releases the emails of those not written.
    async fn generate_reserved(
        self: &Arc<Self>,
        people: &[(String, String)],
        reserved: &[(u128, String)],
        password_hash: &str,
    ) -> Result<Vec<u128>, UsersError> {
        let keys: Vec<(u128, SecretKey)> =
            reserved.iter().map(|(id, _)| Ok((*id, SecretKey::random()?))).collect::<Result<_, UsersError>>()?;
        let store = Arc::clone(&self.keys);
        let slots = keys.clone();
        let added = tokio::task::spawn_blocking(move || store.add_many(&slots)).await;
        let first_slot = match added {
            Ok(Ok(slot)) => slot,
            Ok(Err(error)) => return Err(self.release(reserved, &[], UsersError::KeyStore(error))),
            Err(error) => return Err(self.release(reserved, &[], UsersError::Internal(error.to_string()))),
        };
        let mut appends = tokio::task::JoinSet::new();
        for (n, ((name, email), (id, key))) in people.iter().zip(keys).enumerate() {
            let mut state = UserState::new(id);
            state.key = Some(key);
            state.key_slot = first_slot + n as u64;
            let profile =
                ev::Profile { name: name.trim().to_string(), email: email.trim().to_string(), ..Default::default() };
            let registered = Detail::Registered(ev::Registered {
                profile: Some(profile),
                password_hash: password_hash.to_string(),
                generated: true,
            });
            let users = Arc::clone(self);
            appends.spawn(async move {
                users.append(&mut state, vec![registered]).await?;
                users.users.insert(id, Arc::new(Mutex::new(state)));
                Ok::<u128, UsersError>(id)
            });
        }
        let (mut written, mut failed) = (Vec::with_capacity(reserved.len()), None);
        while let Some(done) = appends.join_next().await {
            match done {
                Ok(Ok(id)) => written.push(id),
                Ok(Err(error)) => failed = failed.or(Some(error)),
                Err(error) => failed = failed.or(Some(UsersError::Internal(error.to_string()))),
            }
        }
        match failed {
            // Users whose event was appended exist; the others' keys are orphaned slots
            // that no user names (as after a crash in a sign-up).
            Some(error) => Err(self.release(reserved, &written, error)),
            None => Ok(reserved.iter().map(|(id, _)| *id).collect()),
        }
    }

    /// Frees the emails reserved for users not `written`; answers `error`.
    fn release(&self, reserved: &[(u128, String)], written: &[u128], error: UsersError) -> UsersError {
        for (id, email) in reserved {
            if !written.contains(id) {
                self.emails.remove(email);
            }
        }
        error
    }
}
