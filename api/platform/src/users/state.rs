//! A user's state, folded from their stream: the only place it changes, live or
//! replayed, is [`UserState::evolve`].

use std::collections::BTreeMap;
use std::time::Duration;

use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::user_event_details::Detail;
use ledger_proto::events::v1::UserEventKind as Kind;

use super::crypto::SecretKey;
use super::{instruments, UsersError};
use crate::engine::Revision;

/// Security events kept per user in memory (the log keeps all).
const SECURITY_EVENTS_MAX: usize = 1_000;
/// How long an enrolment of a second factor waits for its confirming code, in
/// nanoseconds (ten minutes); after it, enrol again.
pub(super) const ENROLL_TTL_NS: u64 = 600_000_000_000;

pub(super) struct Session {
    pub(super) token_hash: [u8; 32],
    pub(super) started_ns: u64,
    pub(super) last_seen_ns: u64,
    pub(super) expires_ns: u64,
    pub(super) source: String,
    /// The last use as the index holds it (see `load::SEEN_SAVE_EVERY_NS`).
    pub(super) seen_saved_ns: u64,
}

impl Session {
    pub(super) fn live(&self, now: u64, idle: Duration) -> bool {
        now <= self.expires_ns && now.saturating_sub(self.last_seen_ns) <= idle.as_nanos() as u64
    }
}

pub(super) struct Totp {
    pub(super) secret: Vec<u8>,
    pub(super) recovery: Vec<Option<Vec<u8>>>,
    pub(super) last_step: u64,
}

pub(super) struct InstrumentState {
    pub(super) instrument: ev::Instrument,
    pub(super) failed_attempts: u32,
    pub(super) failed_for_good: bool,
    pub(super) added_ns: u64,
}

#[derive(Default)]
pub(super) struct UserState {
    pub(super) id: u128,
    pub(super) revision: Option<Revision>,
    pub(super) last_ns: u64,
    pub(super) key: Option<SecretKey>,
    pub(super) key_slot: u64,
    pub(super) erased: bool,
    pub(super) registered_ns: u64,
    pub(super) profile: ev::Profile,
    pub(super) password_hash: String,
    pub(super) totp: Option<Totp>,
    /// A second factor being enrolled: its secret and when the enrolment began. Kept in
    /// memory only (it is confirmed within minutes, or enrolled again).
    pub(super) pending_totp: Option<(Vec<u8>, u64)>,
    pub(super) sessions: BTreeMap<String, Session>,
    pub(super) instruments: Vec<InstrumentState>,
    pub(super) default_instrument: Option<String>,
    pub(super) wallets: BTreeMap<String, u128>,
    pub(super) security: Vec<(String, u64, String)>,
}

pub(super) fn aad(user_id: u128, kind: Kind) -> Vec<u8> {
    let mut aad = b"ledger.user.v1".to_vec();
    aad.extend_from_slice(&user_id.to_le_bytes());
    aad.extend_from_slice(&(kind as i32).to_le_bytes());
    aad
}

pub(super) fn event_type(kind: Kind) -> &'static str {
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

pub(super) fn kind_of(detail: &Detail) -> Kind {
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

pub(super) fn instrument_display(instrument: &ev::Instrument) -> String {
    use ev::instrument::Method;
    match &instrument.method {
        Some(Method::BankAccount(b)) => format!("{} {}", b.bank_name, instruments::mask_tail(&b.account_number)),
        Some(Method::Card(c)) => format!("{} ••••{} {:02}/{}", c.brand, c.last4, c.exp_month, c.exp_year),
        Some(Method::DigitalWallet(w)) => format!("{} {}", w.provider, instruments::mask_handle(&w.handle)),
        None => String::new(),
    }
}

impl UserState {
    pub(super) fn new(id: u128) -> UserState {
        UserState { id, ..UserState::default() }
    }

    /// Whether this user, not erased, has the email `normalized` (normalized).
    pub(super) fn has_email(&self, normalized: &str) -> bool {
        !self.erased && super::profile::normalize_email(&self.profile.email) == normalized
    }

    pub(super) fn note(&mut self, kind: &str, at: u64, detail: String) {
        if self.security.len() >= SECURITY_EVENTS_MAX {
            self.security.remove(0);
        }
        self.security.push((kind.to_string(), at, detail));
    }

    pub(super) fn instrument(&self, id: &str) -> Option<&InstrumentState> {
        self.instruments.iter().find(|i| i.instrument.instrument_id == id)
    }

    /// Folds one event into the state: the only place state changes, live or replayed.
    /// Folds one event in: the only place state changes, live or replayed. A session
    /// whose token hash is not 32 bytes, or a wallet whose account id does not parse,
    /// is corrupt.
    pub(super) fn evolve(&mut self, at: u64, detail: Detail) -> Result<(), UsersError> {
        self.last_ns = self.last_ns.max(at);
        match detail {
            Detail::Registered(r) => {
                self.registered_ns = at;
                // A registration without a profile leaves the empty profile of a new state.
                if let Some(profile) = r.profile {
                    self.profile = profile;
                }
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
            Detail::SessionStarted(s) => self.session_started(at, s)?,
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
            Detail::InstrumentRemoved(r) => self.instrument_removed(at, &r.instrument_id),
            Detail::WalletOpened(w) => {
                let account = w.account_id.parse().map_err(|_| {
                    UsersError::Corrupt(format!("user {}: wallet account id {:?}", self.id, w.account_id))
                })?;
                self.wallets.insert(w.currency, account);
            }
        }
        Ok(())
    }

    fn session_started(&mut self, at: u64, s: ev::SessionStarted) -> Result<(), UsersError> {
        let token_hash: [u8; 32] = s.token_hash.as_slice().try_into().map_err(|_| {
            UsersError::Corrupt(format!(
                "user {}: session {} token hash of {} bytes",
                self.id,
                s.session_id,
                s.token_hash.len()
            ))
        })?;
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
                seen_saved_ns: at,
            },
        );
        self.note("sign_in_succeeded", at, detail);
        Ok(())
    }

    fn instrument_removed(&mut self, at: u64, instrument_id: &str) {
        if let Some(index) = self.instruments.iter().position(|i| i.instrument.instrument_id == instrument_id) {
            let removed = self.instruments.remove(index);
            self.note("instrument_removed", at, instrument_display(&removed.instrument));
        }
        if self.default_instrument.as_deref() == Some(instrument_id) {
            self.default_instrument = None;
        }
    }

    /// Forgets a second-factor enrolment older than `ENROLL_TTL_NS`.
    pub(super) fn drop_stale_enrolment(&mut self, now_ns: u64) {
        if self.pending_totp.as_ref().is_some_and(|(_, since)| now_ns.saturating_sub(*since) > ENROLL_TTL_NS) {
            self.pending_totp = None;
        }
    }

    /// What is left of a user after crypto-shredding: the id and the stream position.
    pub(super) fn erase(&mut self) {
        let (id, revision, last_ns, key_slot) = (self.id, self.revision, self.last_ns, self.key_slot);
        *self = UserState { id, revision, last_ns, key_slot, erased: true, ..UserState::default() };
    }
}
