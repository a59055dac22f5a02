//! The users' index on disk: what must be found without knowing a user's stream.
//!
//! - `emails`: keyed blake3 of the normalized email → user id (no email in clear on
//!   disk: the key is derived from the master key);
//! - `sessions`: blake3 of a session token → user, session id, absolute expiry and
//!   when the session was last seen; `session_expiry` orders them for the sweep;
//! - `users`: user id → data-key slot, in id order for the admin pages and for
//!   reading the data key of a user the catch-up meets after its registration.
//!
//! The index is a locator, never the truth: an entry names a user whose stream is then
//! read, and whatever the entry says is checked against that user's folded state (the
//! email is theirs, the session is open). So an entry left over from an append that
//! failed, or from a change whose clean-up a crash cut off, is harmless.
//!
//! What it must never do is miss an entry. New entries are written (without a sync)
//! before the append that makes them true; removals after it. The checkpoint is a
//! durable commit that records a log position read before the commit began: every
//! event before it was durable before the commit, so its entries were written before
//! it and are in it. A start re-applies the user events after the checkpoint, and
//! rebuilds the whole index from the user streams if the checkpoint does not match the
//! log (the event before it missing, or with another chain hash).

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::UsersError;

const EMAILS: TableDefinition<&[u8; 32], u128> = TableDefinition::new("emails");
const SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("sessions");
const SESSION_EXPIRY: TableDefinition<(u64, &[u8; 32]), ()> = TableDefinition::new("session_expiry");
const USERS: TableDefinition<u128, u64> = TableDefinition::new("users");

/// redb's page cache for the index, in bytes.
pub const INDEX_CACHE_BYTES: usize = 64 << 20;

/// A session as the index holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedSession {
    pub user_id: u128,
    pub session_id: String,
    pub expires_ns: u64,
    pub last_seen_ns: u64,
}

impl IndexedSession {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(32 + self.session_id.len());
        bytes.extend_from_slice(&self.user_id.to_le_bytes());
        bytes.extend_from_slice(&self.expires_ns.to_le_bytes());
        bytes.extend_from_slice(&self.last_seen_ns.to_le_bytes());
        bytes.extend_from_slice(self.session_id.as_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<IndexedSession, UsersError> {
        let corrupt = || UsersError::Corrupt(format!("users index: a session row of {} bytes", bytes.len()));
        if bytes.len() < 32 {
            return Err(corrupt());
        }
        let u64_at = |at: usize| bytes[at..at + 8].try_into().map(u64::from_le_bytes).map_err(|_| corrupt());
        Ok(IndexedSession {
            user_id: u128::from_le_bytes(bytes[..16].try_into().map_err(|_| corrupt())?),
            expires_ns: u64_at(16)?,
            last_seen_ns: u64_at(24)?,
            session_id: String::from_utf8(bytes[32..].to_vec()).map_err(|_| corrupt())?,
        })
    }
}

pub use crate::log_checkpoint::Checkpoint;

/// A checkpoint that could not be read or written, as a users' error.
pub(super) fn checkpoint_error(error: crate::log_checkpoint::CheckpointError) -> UsersError {
    use crate::log_checkpoint::CheckpointError;
    match error {
        CheckpointError::Store(error) => UsersError::Store(error),
        CheckpointError::Corrupt(_) => UsersError::Corrupt(format!("users index: {error}")),
        CheckpointError::Db(_) => UsersError::Internal(format!("users index: {error}")),
    }
}

fn err(error: impl std::fmt::Display) -> UsersError {
    UsersError::Internal(format!("users index: {error}"))
}

/// The index over one redb file.
pub struct UserIndex {
    db: Database,
    email_key: [u8; 32],
}

impl std::fmt::Debug for UserIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserIndex").finish_non_exhaustive()
    }
}

/// Changes to the index in one transaction (see [`UserIndex::edit`]).
pub struct Edit<'t> {
    emails: redb::Table<'t, &'static [u8; 32], u128>,
    sessions: redb::Table<'t, &'static [u8; 32], &'static [u8]>,
    expiry: redb::Table<'t, (u64, &'static [u8; 32]), ()>,
    users: redb::Table<'t, u128, u64>,
}

impl Edit<'_> {
    pub fn put_email(&mut self, hash: &[u8; 32], user_id: u128) -> Result<(), UsersError> {
        self.emails.insert(hash, user_id).map_err(err)?;
        Ok(())
    }

    /// Removes the email's entry if it still names `user_id`.
    pub fn remove_email(&mut self, hash: &[u8; 32], user_id: u128) -> Result<(), UsersError> {
        let named = self.emails.get(hash).map_err(err)?.map(|v| v.value());
        if named == Some(user_id) {
            self.emails.remove(hash).map_err(err)?;
        }
        Ok(())
    }

    pub fn put_session(&mut self, hash: &[u8; 32], session: &IndexedSession) -> Result<(), UsersError> {
        let old = self.sessions.insert(hash, session.encode().as_slice()).map_err(err)?;
        let old_expiry = old.map(|v| IndexedSession::decode(v.value())).transpose()?.map(|s| s.expires_ns);
        if let Some(expires) = old_expiry.filter(|&e| e != session.expires_ns) {
            self.expiry.remove((expires, hash)).map_err(err)?;
        }
        self.expiry.insert((session.expires_ns, hash), ()).map_err(err)?;
        Ok(())
    }

    pub fn remove_session(&mut self, hash: &[u8; 32]) -> Result<(), UsersError> {
        let old = self.sessions.remove(hash).map_err(err)?;
        if let Some(old) = old.map(|v| IndexedSession::decode(v.value())).transpose()? {
            self.expiry.remove((old.expires_ns, hash)).map_err(err)?;
        }
        Ok(())
    }

    pub fn put_user(&mut self, user_id: u128, key_slot: u64) -> Result<(), UsersError> {
        self.users.insert(user_id, key_slot).map_err(err)?;
        Ok(())
    }

    pub fn remove_user(&mut self, user_id: u128) -> Result<(), UsersError> {
        self.users.remove(user_id).map_err(err)?;
        Ok(())
    }

    pub fn user_slot(&self, user_id: u128) -> Result<Option<u64>, UsersError> {
        Ok(self.users.get(user_id).map_err(err)?.map(|v| v.value()))
    }
}

impl UserIndex {
    /// Opens (or creates) the index at `path`; `email_key` keys the hash of emails.
    pub fn open(path: &Path, email_key: [u8; 32]) -> Result<UserIndex, UsersError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let db = Database::builder().set_cache_size(INDEX_CACHE_BYTES).create(path).map_err(err)?;
        let index = UserIndex { db, email_key };
        // Every table exists from the first commit, so reads never meet a missing one.
        index.edit(true, |_| Ok(()))?;
        Ok(index)
    }

    /// The keyed hash an email is found by (`normalized` as `profile::normalize_email`
    /// gives it).
    pub fn email_hash(&self, normalized: &str) -> [u8; 32] {
        *blake3::keyed_hash(&self.email_key, normalized.as_bytes()).as_bytes()
    }

    /// Runs `change` in one write transaction; `durable` syncs it (and every commit
    /// before it), otherwise it becomes durable with the next durable commit.
    pub fn edit<T>(
        &self,
        durable: bool,
        change: impl FnOnce(&mut Edit) -> Result<T, UsersError>,
    ) -> Result<T, UsersError> {
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(err)?;
        let out = {
            let mut edit = Edit {
                emails: txn.open_table(EMAILS).map_err(err)?,
                sessions: txn.open_table(SESSIONS).map_err(err)?,
                expiry: txn.open_table(SESSION_EXPIRY).map_err(err)?,
                users: txn.open_table(USERS).map_err(err)?,
            };
            change(&mut edit)?
        };
        txn.commit().map_err(err)?;
        Ok(out)
    }

    pub fn email(&self, hash: &[u8; 32]) -> Result<Option<u128>, UsersError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(EMAILS).map_err(err)?;
        Ok(table.get(hash).map_err(err)?.map(|v| v.value()))
    }

    pub fn session(&self, hash: &[u8; 32]) -> Result<Option<IndexedSession>, UsersError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(SESSIONS).map_err(err)?;
        let row = table.get(hash).map_err(err)?;
        row.map(|v| IndexedSession::decode(v.value())).transpose()
    }

    pub fn user_slot(&self, user_id: u128) -> Result<Option<u64>, UsersError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(USERS).map_err(err)?;
        Ok(table.get(user_id).map_err(err)?.map(|v| v.value()))
    }

    /// Up to `count` user ids above `after`, in id order.
    pub fn users_after(&self, after: Option<u128>, count: usize) -> Result<Vec<u128>, UsersError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(USERS).map_err(err)?;
        let range = match after {
            Some(after) if after == u128::MAX => return Ok(Vec::new()),
            Some(after) => table.range(after + 1..).map_err(err)?,
            None => table.range(0..).map_err(err)?,
        };
        let mut ids = Vec::with_capacity(count.min(1_024));
        for row in range.take(count) {
            ids.push(row.map_err(err)?.0.value());
        }
        Ok(ids)
    }

    /// Session entries held (open ones, and ended ones not swept yet).
    pub fn sessions_held(&self) -> Result<u64, UsersError> {
        let txn = self.db.begin_read().map_err(err)?;
        txn.open_table(SESSIONS).map_err(err)?.len().map_err(err)
    }

    /// Users in the index.
    pub fn users_held(&self) -> Result<u64, UsersError> {
        let txn = self.db.begin_read().map_err(err)?;
        txn.open_table(USERS).map_err(err)?.len().map_err(err)
    }

    /// Removes the sessions whose absolute expiry is before `now_ns`; answers how many.
    pub fn sweep_sessions(&self, now_ns: u64) -> Result<usize, UsersError> {
        let expired: Vec<(u64, [u8; 32])> = {
            let txn = self.db.begin_read().map_err(err)?;
            let table = txn.open_table(SESSION_EXPIRY).map_err(err)?;
            let mut expired = Vec::new();
            for row in table.range(..(now_ns, &[0u8; 32])).map_err(err)? {
                let (key, _) = row.map_err(err)?;
                let (expires, hash) = key.value();
                expired.push((expires, *hash));
            }
            expired
        };
        self.edit(false, |edit| {
            for (expires, hash) in &expired {
                let row = edit.sessions.get(hash).map_err(err)?.map(|v| IndexedSession::decode(v.value()));
                if row.transpose()?.is_some_and(|s| s.expires_ns == *expires) {
                    edit.sessions.remove(hash).map_err(err)?;
                }
                edit.expiry.remove((*expires, hash)).map_err(err)?;
            }
            Ok(expired.len())
        })
    }

    /// What the index covers (`None`: nothing yet).
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, UsersError> {
        crate::log_checkpoint::read(&self.db).map_err(checkpoint_error)
    }

    /// Records `checkpoint` in a durable commit, which makes every earlier commit durable.
    pub fn set_checkpoint(&self, checkpoint: Checkpoint) -> Result<(), UsersError> {
        crate::log_checkpoint::write(&self.db, checkpoint).map_err(checkpoint_error)
    }

    /// Empties every table (before a rebuild from the log).
    pub fn clear(&self) -> Result<(), UsersError> {
        crate::log_checkpoint::clear(&self.db).map_err(checkpoint_error)?;
        self.edit(true, |_| Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user_id: u128, expires_ns: u64) -> IndexedSession {
        IndexedSession { user_id, session_id: "0011223344556677".into(), expires_ns, last_seen_ns: 5 }
    }

    #[test]
    fn entries_checkpoint_and_sweep() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("users").join("index.redb");
        let index = UserIndex::open(&path, [7; 32]).expect("open");
        assert_eq!(index.checkpoint().expect("read"), None);
        let email = index.email_hash("ada@example.com");
        assert_ne!(
            email,
            UserIndex::open(&dir.path().join("other.redb"), [8; 32]).expect("open").email_hash("ada@example.com")
        );
        index
            .edit(false, |e| {
                e.put_email(&email, 1)?;
                e.put_user(1, 0)?;
                e.put_user(2, 1)?;
                e.put_session(&[1; 32], &session(1, 100))?;
                e.put_session(&[2; 32], &session(2, 300))
            })
            .expect("edit");
        assert_eq!(index.email(&email).expect("read"), Some(1));
        assert_eq!(index.session(&[1; 32]).expect("read"), Some(session(1, 100)));
        assert_eq!(index.users_after(None, 10).expect("page"), vec![1, 2]);
        assert_eq!(index.users_after(Some(1), 10).expect("page"), vec![2]);
        // An email entry is removed only while it names that user.
        index.edit(false, |e| e.remove_email(&email, 2)).expect("edit");
        assert_eq!(index.email(&email).expect("read"), Some(1));
        assert_eq!(index.sweep_sessions(200).expect("sweep"), 1);
        assert_eq!((index.session(&[1; 32]).expect("read"), index.sessions_held().expect("len")), (None, 1));
        let checkpoint = Checkpoint { next: 9, hash: Some([3; 32]) };
        index.set_checkpoint(checkpoint).expect("checkpoint");
        drop(index);
        let index = UserIndex::open(&path, [7; 32]).expect("reopen");
        assert_eq!(index.checkpoint().expect("read"), Some(checkpoint));
        assert_eq!(index.email(&email).expect("read"), Some(1), "durable with the checkpoint");
        index.clear().expect("clear");
        assert_eq!((index.checkpoint().expect("read"), index.users_held().expect("len")), (None, 0));
    }

    #[test]
    fn a_damaged_session_row_is_an_error() {
        assert!(matches!(IndexedSession::decode(&[0; 31]), Err(UsersError::Corrupt(_))));
        assert!(matches!(IndexedSession::decode(&[[0; 32].as_slice(), &[0xff]].concat()), Err(UsersError::Corrupt(_))));
    }
}
