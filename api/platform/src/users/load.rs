//! Users on demand: a user is folded from their stream when a call needs them and kept
//! in a bounded cache; the index on disk (`index`) finds what has no stream name (an
//! email, a session token) and is brought up to date with the log at start.

use std::sync::Arc;

use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::user_event_details::Detail;
use ledger_proto::events::v1::UserEventKind as Kind;
use prost::Message;
use tokio::sync::Mutex;

use super::index::{checkpoint_error, Checkpoint, Edit, IndexedSession};
use super::state::{aad, UserState};
use super::{profile, stream_name, Users, UsersError};
use crate::engine::RecordedEvent;
use crate::log_checkpoint;

/// Events read from the log per page while the index catches up.
const CATCH_UP_PAGE: usize = 4_096;
/// Users folded per index transaction while the index is rebuilt.
const REBUILD_USERS_PER_COMMIT: usize = 10_000;
/// A session's last use is written to the index when it moved by at least this much,
/// in nanoseconds (a minute), so an idle timer survives the user leaving the cache
/// and a restart to within a minute.
pub(super) const SEEN_SAVE_EVERY_NS: u64 = 60_000_000_000;

/// One user event, opened: its time, kind and (unless erased) its details.
struct Opened {
    at: u64,
    kind: Kind,
    key_slot: u64,
    detail: Option<Detail>,
}

impl Users {
    /// The user, from the cache or folded from their stream (and then cached).
    pub(super) fn user(&self, id: u128) -> Result<Arc<Mutex<UserState>>, UsersError> {
        if let Some(user) = self.users.get(&id) {
            return Ok(Arc::clone(user.value()));
        }
        let stream = stream_name(id);
        if self.store.stream_head(&stream)?.is_none() {
            return Err(UsersError::NotFound("user"));
        }
        // Read under the map's lock for this id: while no entry exists nobody appends to
        // the stream (every change goes through the one entry), so what is read is current.
        let user = match self.users.entry(id) {
            dashmap::Entry::Occupied(held) => Arc::clone(held.get()),
            dashmap::Entry::Vacant(vacant) => {
                let state = self.fold(id)?;
                Arc::clone(vacant.insert(Arc::new(Mutex::new(state))).value())
            }
        };
        self.cached(id);
        Ok(user)
    }

    /// Puts a user just signed up in the cache.
    pub(super) fn insert_new(&self, state: UserState) {
        let id = state.id;
        self.users.insert(id, Arc::new(Mutex::new(state)));
        self.cached(id);
    }

    /// Counts `id` among the cached users and drops the oldest past `cached_max`: only
    /// one nobody holds or has locked, so a user never has two states in memory at once.
    /// A user with a second factor being enrolled stays until it is confirmed or the
    /// enrolment is `totp::ENROLL_TTL` old.
    fn cached(&self, id: u128) {
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        order.push_back(id);
        let now = self.clock.now_ns();
        for _ in 0..order.len().saturating_sub(self.config.cached_max) {
            let Some(oldest) = order.pop_front() else { break };
            let dropped = self.users.remove_if(&oldest, |_, user| {
                Arc::strong_count(user) == 1
                    && user.try_lock().is_ok_and(|mut state| {
                        state.drop_stale_enrolment(now);
                        state.pending_totp.is_none()
                    })
            });
            if dropped.is_none() && self.users.contains_key(&oldest) {
                order.push_back(oldest);
            }
        }
    }

    /// Users held in memory now.
    pub fn users_cached(&self) -> usize {
        self.users.len()
    }

    /// Folds user `id` from their stream; sessions take their last use from the index,
    /// and only live ones are kept.
    pub(super) fn fold(&self, id: u128) -> Result<UserState, UsersError> {
        let mut state = UserState::new(id);
        crate::stream::load(self.store.as_ref(), &stream_name(id), 256, |record| self.fold_event(&mut state, record))?;
        let (now, idle) = (self.clock.now_ns(), self.config.session_idle);
        let mut ended = Vec::new();
        for (session_id, session) in state.sessions.iter_mut() {
            if let Some(indexed) = self.index.session(&session.token_hash)? {
                session.last_seen_ns = session.last_seen_ns.max(indexed.last_seen_ns);
                session.seen_saved_ns = indexed.last_seen_ns;
            }
            if !session.live(now, idle) {
                ended.push(session_id.clone());
            }
        }
        for session_id in ended {
            state.sessions.remove(&session_id);
        }
        Ok(state)
    }

    /// Opens one recorded event of a user stream with that user's key (`None` once the
    /// user is erased or their key is gone).
    fn open_event(&self, record: &RecordedEvent, key_slot: Option<u64>) -> Result<(u128, Opened), UsersError> {
        let at = |e: &dyn std::fmt::Display| {
            UsersError::Corrupt(format!("{} revision {}: {e}", record.stream, record.revision))
        };
        let event = ev::UserEvent::decode(record.payload.as_slice()).map_err(|e| at(&e))?;
        let id: u128 = event.user_id.parse().map_err(|_| at(&"bad user id"))?;
        let kind = event.kind();
        let slot = if kind == Kind::UserRegistered { Some(event.key_slot) } else { key_slot };
        let key = match (kind, slot) {
            (Kind::UserErased, _) | (_, None) => None,
            (_, Some(slot)) => self.keys.get(slot, id).map_err(|e| at(&e))?,
        };
        let detail = match key {
            Some(key) => {
                let plain = key.open(&event.sealed, &aad(id, kind)).map_err(|e| at(&e))?;
                ev::UserEventDetails::decode(plain.as_slice()).map_err(|e| at(&e))?.detail
            }
            None => None,
        };
        Ok((id, Opened { at: event.timestamp_ns, kind, key_slot: event.key_slot, detail }))
    }

    /// Folds one recorded event of the user's stream into `state`.
    fn fold_event(&self, state: &mut UserState, record: &RecordedEvent) -> Result<(), UsersError> {
        let slot = state.key.is_some().then_some(state.key_slot);
        let (id, opened) = self.open_event(record, slot)?;
        if id != state.id {
            return Err(UsersError::Corrupt(format!("{} revision {}: user {id}", record.stream, record.revision)));
        }
        state.revision = Some(record.revision);
        state.last_ns = state.last_ns.max(opened.at);
        match opened.kind {
            Kind::UserRegistered => {
                state.key_slot = opened.key_slot;
                state.key = self.keys.get(opened.key_slot, id).map_err(UsersError::KeyStore)?;
                if state.key.is_none() {
                    state.erase();
                }
            }
            Kind::UserErased => {
                state.erase();
                return Ok(());
            }
            _ => {}
        }
        match opened.detail {
            Some(detail) if !state.erased => state.evolve(opened.at, detail),
            _ => Ok(()),
        }
    }

    /// Brings the index up to the log: re-applies the user events after its checkpoint,
    /// or rebuilds it from every user stream when the checkpoint does not match the log.
    /// Then records a durable checkpoint.
    pub(super) fn catch_up_index(&self) -> Result<(), UsersError> {
        let checkpoint = log_checkpoint::bring_up(
            self.store.as_ref(),
            "users",
            self.index.checkpoint()?,
            |from| self.apply_log_after(from),
            || {
                self.index.clear()?;
                self.rebuild_index().map(|users| users as u64)
            },
        )?;
        self.index.set_checkpoint(checkpoint)
    }

    /// Records a durable checkpoint of the index at the log's durable head (every
    /// second in `ledgerd`, and at a clean stop), so a start re-applies at most the
    /// events after it.
    pub fn checkpoint(&self) -> Result<Checkpoint, UsersError> {
        let checkpoint = log_checkpoint::at_head(self.store.as_ref()).map_err(checkpoint_error)?;
        self.index.set_checkpoint(checkpoint)?;
        Ok(checkpoint)
    }

    /// Applies to the index what the user events from `from` on make true; answers how
    /// many events it read.
    fn apply_log_after(&self, from: u64) -> Result<u64, UsersError> {
        let (mut next, mut read) = (from, 0u64);
        loop {
            let records = self.store.read_all(next, CATCH_UP_PAGE)?;
            let Some(last) = records.last() else { return Ok(read) };
            next = last.position + 1;
            read += records.len() as u64;
            self.index.edit(false, |edit| {
                for record in records.iter().filter(|r| r.stream.starts_with("user-")) {
                    self.index_event(edit, record)?;
                }
                Ok(())
            })?;
        }
    }

    /// The index entries one event makes true. What an event makes untrue (an email
    /// changed away, a session ended) is left: entries are checked against the user.
    fn index_event(&self, edit: &mut Edit, record: &RecordedEvent) -> Result<(), UsersError> {
        let id = ev::UserEvent::decode(record.payload.as_slice())
            .ok()
            .and_then(|e| e.user_id.parse::<u128>().ok())
            .ok_or_else(|| {
                UsersError::Corrupt(format!("{} revision {}: no user id", record.stream, record.revision))
            })?;
        let (id, opened) = self.open_event(record, edit.user_slot(id)?)?;
        match (&opened.kind, &opened.detail) {
            (Kind::UserRegistered, detail) => {
                edit.put_user(id, opened.key_slot)?;
                if let Some(Detail::Registered(ev::Registered { profile: Some(p), .. })) = detail {
                    edit.put_email(&self.index.email_hash(&profile::normalize_email(&p.email)), id)?;
                }
            }
            (_, Some(Detail::ProfileUpdated(p))) => {
                edit.put_email(&self.index.email_hash(&profile::normalize_email(&p.email)), id)?
            }
            (_, Some(Detail::SessionStarted(s))) => {
                let hash: [u8; 32] = s.token_hash.as_slice().try_into().map_err(|_| {
                    UsersError::Corrupt(format!("{} revision {}: a token hash", record.stream, record.revision))
                })?;
                let session = IndexedSession {
                    user_id: id,
                    session_id: s.session_id.clone(),
                    expires_ns: s.expires_at_ns,
                    last_seen_ns: opened.at,
                };
                edit.put_session(&hash, &session)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Writes the index from every user stream, one user at a time; answers how many.
    fn rebuild_index(&self) -> Result<usize, UsersError> {
        let streams = self.store.stream_names("user-")?;
        let now = self.clock.now_ns();
        for chunk in streams.chunks(REBUILD_USERS_PER_COMMIT) {
            let mut states = Vec::with_capacity(chunk.len());
            for stream in chunk {
                let id: u128 = stream["user-".len()..]
                    .parse()
                    .map_err(|_| UsersError::Corrupt(format!("stream {stream}: not a user id")))?;
                let mut state = UserState::new(id);
                crate::stream::load(self.store.as_ref(), stream, 256, |r| self.fold_event(&mut state, r))?;
                states.push(state);
            }
            self.index.edit(false, |edit| {
                for state in &states {
                    edit.put_user(state.id, state.key_slot)?;
                    if state.erased {
                        continue;
                    }
                    edit.put_email(&self.index.email_hash(&profile::normalize_email(&state.profile.email)), state.id)?;
                    for (session_id, session) in state.sessions.iter().filter(|(_, s)| s.expires_ns >= now) {
                        let indexed = IndexedSession {
                            user_id: state.id,
                            session_id: session_id.clone(),
                            expires_ns: session.expires_ns,
                            last_seen_ns: session.last_seen_ns,
                        };
                        edit.put_session(&session.token_hash, &indexed)?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(streams.len())
    }
}
