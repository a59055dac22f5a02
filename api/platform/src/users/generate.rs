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

use super::crypto::SecretKey;
use super::state::UserState;
use super::{profile, Users, UsersError};

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
        // Each email is claimed as a sign-up claims it, but written to the index in one
        // transaction with the batch's user ids, once their key slots are known.
        let mut reserved: Vec<(u128, [u8; 32])> = Vec::with_capacity(people.len());
        for (name, email) in people {
            let checked = profile::check_name("name", name, true).and_then(|()| profile::check_email(email));
            if let Err(error) = checked {
                return Err(self.release(&reserved, &[], error.into()));
            }
            let id = match self.new_user_id() {
                Ok(id) => id,
                Err(error) => return Err(self.release(&reserved, &[], error)),
            };
            let normalized = profile::normalize_email(email);
            let hash = self.index.email_hash(&normalized);
            // The entry's guard ends with this statement, before anything else is touched.
            let free = match self.claims.entry(hash) {
                dashmap::Entry::Vacant(v) => {
                    v.insert(id);
                    true
                }
                dashmap::Entry::Occupied(_) => false,
            };
            if !free {
                return Err(self.release(&reserved, &[], UsersError::AlreadyExists("email: already registered")));
            }
            reserved.push((id, hash));
            let taken = match self.index.email(&hash) {
                Ok(Some(holder)) => self.holds_email(holder, &normalized),
                Ok(None) => Ok(false),
                Err(error) => Err(error),
            };
            match taken {
                Ok(false) => {}
                Ok(true) => {
                    return Err(self.release(&reserved, &[], UsersError::AlreadyExists("email: already registered")))
                }
                Err(error) => return Err(self.release(&reserved, &[], error)),
            }
        }
        self.generate_reserved(people, &reserved, password_hash).await
    }

    /// Writes the reserved users; on an error, releases the emails of those not written.
    async fn generate_reserved(
        self: &Arc<Self>,
        people: &[(String, String)],
        reserved: &[(u128, [u8; 32])],
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
        // In the index before the appends (see `index`).
        let indexed = self.index.edit(false, |edit| {
            for (n, (id, hash)) in reserved.iter().enumerate() {
                edit.put_user(*id, first_slot + n as u64)?;
                edit.put_email(hash, *id)?;
            }
            Ok(())
        });
        if let Err(error) = indexed {
            return Err(self.release(reserved, &[], error));
        }
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
            // Not cached: a generated user is read from their stream when first used.
            appends.spawn(async move {
                users.append(&mut state, vec![registered]).await?;
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
        let error = failed.map(|error| self.release(reserved, &written, error));
        // Users whose event was appended exist; the others' keys are orphaned slots that
        // no user names (as after a crash in a sign-up).
        for (_, hash) in reserved {
            self.claims.remove(hash);
        }
        match error {
            Some(error) => Err(error),
            None => Ok(reserved.iter().map(|(id, _)| *id).collect()),
        }
    }

    /// Ends the claims of the users not `written` (their index entries go); answers `error`.
    fn release(&self, reserved: &[(u128, [u8; 32])], written: &[u128], error: UsersError) -> UsersError {
        for (id, hash) in reserved {
            if !written.contains(id) {
                self.end_claim(hash, *id, false);
                if let Err(index) = self.index.edit(false, |e| e.remove_user(*id)) {
                    tracing::warn!(%index, "a user id not generated stays in the index (pages skip it)");
                }
            }
        }
        error
    }
}
