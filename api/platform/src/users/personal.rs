//! Personal data other parts of the platform keep about a user (a payment's note),
//! sealed under the user's data key, and what others are shown of a user (their name
//! and email). Once the user is erased their key is gone: sealed data stays unreadable
//! and they show as [`DELETED_USER`].

use super::{Users, UsersError};

/// How an erased user is named.
pub const DELETED_USER: &str = "(deleted user)";

/// What a payment or a statement shows of a party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Party {
    pub name: String,
    /// Empty for an erased user.
    pub email: String,
    pub erased: bool,
}

impl Party {
    fn erased() -> Party {
        Party { name: DELETED_USER.into(), email: String::new(), erased: true }
    }
}

impl Users {
    /// The user's display name and email; an erased user shows as [`DELETED_USER`].
    pub async fn party(&self, user_id: u128) -> Result<Party, UsersError> {
        let user = self.user(user_id)?;
        let state = user.lock().await;
        if state.erased {
            return Ok(Party::erased());
        }
        Ok(Party { name: state.profile.name.clone(), email: state.profile.email.clone(), erased: false })
    }

    /// Seals `plain` under the user's data key, bound to `aad`. An erased or unknown
    /// user has no key: NotFound.
    pub async fn seal_personal(&self, user_id: u128, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, UsersError> {
        let user = self.user(user_id)?;
        let state = user.lock().await;
        let key = state.key.as_ref().ok_or(UsersError::NotFound("user"))?;
        key.seal(plain, aad).map_err(UsersError::Seal)
    }

    /// Opens what [`Users::seal_personal`] sealed: `None` once the user is erased (the
    /// key is destroyed); bytes that do not open under a live key are corrupt.
    pub async fn open_personal(&self, user_id: u128, sealed: &[u8], aad: &[u8]) -> Result<Option<Vec<u8>>, UsersError> {
        let user = self.user(user_id)?;
        let state = user.lock().await;
        let Some(key) = state.key.as_ref() else { return Ok(None) };
        key.open(sealed, aad).map(Some).map_err(|e| UsersError::Corrupt(format!("user {user_id}: sealed data: {e}")))
    }

    /// A digest of `data` keyed with the user's data key (blake3 keyed hash): compares
    /// requests without keeping their personal data readable after the user's erasure.
    pub async fn keyed_digest(&self, user_id: u128, data: &[u8]) -> Result<[u8; 32], UsersError> {
        let user = self.user(user_id)?;
        let state = user.lock().await;
        let key = state.key.as_ref().ok_or(UsersError::NotFound("user"))?;
        Ok(*blake3::keyed_hash(&key.0, data).as_bytes())
    }
}
