//! Signing in and out, sessions, re-authentication and the TOTP second factor.

use ledger_core::chain::to_hex as hex;
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::user_event_details::Detail;

use super::index::IndexedSession;
use super::load::SEEN_SAVE_EVERY_NS;
use super::state::{Totp, UserState};
use super::{
    append_details, password, profile, random, totp, verify_password, Caller, Reauth, SecurityEvent, SessionInfo,
    SignIn, Users, UsersError, SESSIONS_PER_USER_MAX, SESSION_TOKEN_PREFIX,
};
use crate::FieldError;

const RECOVERY_CODES: usize = 10;
pub const INVALID_CREDENTIALS: &str = "invalid email or password";
pub const SECOND_FACTOR_REQUIRED: &str = "second factor required: give totp_code or recovery_code";
pub const SECOND_FACTOR_INVALID: &str = "invalid second factor";

/// What a sign-in came to, as operators count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInOutcome {
    Success,
    BadCredentials,
    Throttled,
    TotpRequired,
    TotpFailed,
    /// Refused for another reason (a malformed request, a store failure).
    Error,
}

impl SignInOutcome {
    pub const ALL: [SignInOutcome; 6] = [
        SignInOutcome::Success,
        SignInOutcome::BadCredentials,
        SignInOutcome::Throttled,
        SignInOutcome::TotpRequired,
        SignInOutcome::TotpFailed,
        SignInOutcome::Error,
    ];

    pub fn of<T>(result: &Result<T, UsersError>) -> SignInOutcome {
        match result {
            Ok(_) => SignInOutcome::Success,
            Err(UsersError::Throttled { .. }) => SignInOutcome::Throttled,
            Err(UsersError::Unauthenticated(INVALID_CREDENTIALS)) => SignInOutcome::BadCredentials,
            Err(UsersError::Unauthenticated(SECOND_FACTOR_REQUIRED)) => SignInOutcome::TotpRequired,
            Err(UsersError::Unauthenticated(SECOND_FACTOR_INVALID)) => SignInOutcome::TotpFailed,
            Err(_) => SignInOutcome::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SignInOutcome::Success => "success",
            SignInOutcome::BadCredentials => "bad_credentials",
            SignInOutcome::Throttled => "throttled",
            SignInOutcome::TotpRequired => "totp_required",
            SignInOutcome::TotpFailed => "totp_failed",
            SignInOutcome::Error => "error",
        }
    }
}

/// At most `SESSIONS_PER_USER_MAX` sessions: the oldest end with a new sign-in, in its
/// append (pushed to `details`). Returns their token hashes, to forget once appended.
fn oldest_beyond_the_limit(state: &UserState, details: &mut Vec<Detail>) -> Vec<[u8; 32]> {
    let mut by_age: Vec<(u64, &String, [u8; 32])> =
        state.sessions.iter().map(|(id, session)| (session.started_ns, id, session.token_hash)).collect();
    by_age.sort();
    let excess = (by_age.len() + 1).saturating_sub(SESSIONS_PER_USER_MAX);
    for (_, id, _) in &by_age[..excess] {
        let reason = "session limit: the oldest session ends at a new sign-in".into();
        details.push(Detail::SessionEnded(ev::SessionEnded { session_id: (*id).clone(), reason }));
    }
    by_age[..excess].iter().map(|(_, _, hash)| *hash).collect()
}

impl Users {
    /// Signs in. Every failure that could tell whether the email exists answers the
    /// same UNAUTHENTICATED after the same work.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        totp_code: &str,
        recovery_code: &str,
        source: &str,
    ) -> Result<SignIn, UsersError> {
        if email.len() > profile::EMAIL_BYTES_MAX || password.len() > password::PASSWORD_BYTES_MAX {
            return Err(UsersError::InvalidRequest("email or password too long"));
        }
        if let Some(wait) = self.throttle.check(email, source) {
            return Err(UsersError::Throttled { retry_after_secs: wait.as_secs().max(1) });
        }
        let normalized = profile::normalize_email(email);
        let Some(user) = self.user_by_email(&normalized)? else {
            return self.unknown_email(email, password, source).await;
        };
        let mut state = user.lock_owned().await;
        if !state.has_email(&normalized) {
            // An index entry left over from a change of email, or from an erased user.
            drop(state);
            return self.unknown_email(email, password, source).await;
        }
        if !verify_password(password, &state.password_hash).await? {
            self.throttle.failed(email, source);
            self.record_wrong_password(state, source);
            return Err(UsersError::Unauthenticated(INVALID_CREDENTIALS));
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
                        UsersError::Unauthenticated(SECOND_FACTOR_REQUIRED)
                    } else {
                        UsersError::Unauthenticated(SECOND_FACTOR_INVALID)
                    });
                }
            }
        }
        self.throttle.succeeded(email);
        let token = format!("{SESSION_TOKEN_PREFIX}{}", hex(&random::<32>()?));
        let token_hash = *blake3::hash(token.as_bytes()).as_bytes();
        let session_id = hex(&random::<8>()?);
        let now = self.clock.now_ns();
        let expires = now + self.config.session_max.as_nanos() as u64;
        let ended = oldest_beyond_the_limit(&state, &mut details);
        details.push(Detail::SessionStarted(ev::SessionStarted {
            session_id: session_id.clone(),
            token_hash: token_hash.to_vec(),
            expires_at_ns: expires,
            source: source.to_string(),
            used_recovery_code,
            totp_step,
        }));
        // In the index before the append (see `index`); taken out again if it fails.
        let indexed = IndexedSession {
            user_id: state.id,
            session_id: session_id.clone(),
            expires_ns: expires,
            last_seen_ns: now,
        };
        self.index.edit(false, |e| e.put_session(&token_hash, &indexed))?;
        if let Err(error) = self.append(&mut state, details).await {
            self.forget_sessions(&[token_hash]);
            return Err(error);
        }
        self.forget_sessions(&ended);
        let idle = now + self.config.session_idle.as_nanos() as u64;
        Ok(SignIn {
            caller: Caller { user_id: state.id, session_id },
            session_token: token,
            idle_expires_at_ns: idle.min(expires),
            expires_at_ns: expires,
        })
    }

    /// Records a wrong password in the user's stream after answering: waiting for it
    /// would make a wrong password answer slower than an unknown email and so tell that
    /// the email exists.
    fn record_wrong_password(&self, mut state: tokio::sync::OwnedMutexGuard<UserState>, source: &str) {
        let failed = ev::SignInFailed { source: source.to_string(), reason: "password".into() };
        let (store, clock) = (self.store.clone(), self.clock.clone());
        tokio::spawn(async move {
            let failed = vec![Detail::SignInFailed(failed)];
            if let Err(error) = append_details(store.as_ref(), clock.as_ref(), &mut state, failed).await {
                tracing::warn!(%error, "a failed sign-in could not be recorded");
            }
        });
    }

    /// The answer to an email no user has, after the same work as a wrong password.
    async fn unknown_email(&self, email: &str, password: &str, source: &str) -> Result<SignIn, UsersError> {
        verify_password(password, &self.dummy_hash).await?;
        self.throttle.failed(email, source);
        Err(UsersError::Unauthenticated(INVALID_CREDENTIALS))
    }

    fn second_factor(&self, totp: &Totp, code: &str, recovery_code: &str) -> Option<SecondFactor> {
        if !recovery_code.is_empty() {
            let hash = blake3::hash(normalize_recovery(recovery_code).as_bytes());
            let index = totp.recovery.iter().position(|h| h.as_deref() == Some(hash.as_bytes().as_slice()))?;
            return Some(SecondFactor::Recovery(index as u32));
        }
        let now = self.clock.now_ns() / 1_000_000_000;
        let step = totp::matching_step(&totp.secret, code, now)?;
        // A code is single-use: not again, nor an earlier one.
        (step > totp.last_step).then_some(SecondFactor::Code(step))
    }

    /// The caller behind a session token, if the session is live; refreshes its idle
    /// timer (in the index at most once per `SEEN_SAVE_EVERY_NS`).
    pub async fn authenticate(&self, token: &str) -> Result<Caller, UsersError> {
        let hash = *blake3::hash(token.as_bytes()).as_bytes();
        let indexed = self.index.session(&hash)?.ok_or(UsersError::Unauthenticated("unknown token"))?;
        let user = match self.user(indexed.user_id) {
            Ok(user) => user,
            Err(UsersError::NotFound(_)) => return Err(UsersError::Unauthenticated("unknown token")),
            Err(error) => return Err(error),
        };
        let mut state = user.lock().await;
        let now = self.clock.now_ns();
        let Some(session) = state.sessions.get_mut(&indexed.session_id).filter(|s| s.token_hash == hash) else {
            // Ended (its entry is left over) or expired while the user was out of memory.
            drop(state);
            self.forget_sessions(&[hash]);
            return Err(UsersError::Unauthenticated("unknown token"));
        };
        if !session.live(now, self.config.session_idle) {
            // Expiry needs no event: the deadline is in the session's start event.
            state.sessions.remove(&indexed.session_id);
            drop(state);
            self.forget_sessions(&[hash]);
            return Err(UsersError::Unauthenticated("session expired; sign in again"));
        }
        session.last_seen_ns = now;
        if now.saturating_sub(session.seen_saved_ns) >= SEEN_SAVE_EVERY_NS {
            session.seen_saved_ns = now;
            let seen = IndexedSession { last_seen_ns: now, ..indexed.clone() };
            self.index.edit(false, |e| e.put_session(&hash, &seen))?;
        }
        Ok(Caller { user_id: indexed.user_id, session_id: indexed.session_id })
    }

    /// Checks the password (and the second factor when enabled) before a sensitive change.
    pub(super) async fn reauthenticate(&self, state: &mut UserState, reauth: &Reauth<'_>) -> Result<(), UsersError> {
        if !verify_password(reauth.password, &state.password_hash).await? {
            return Err(UsersError::Unauthenticated("current_password is wrong"));
        }
        if let Some(totp) = &state.totp {
            match self.second_factor(totp, reauth.totp_code, "") {
                Some(SecondFactor::Code(step)) => {
                    if let Some(t) = state.totp.as_mut() {
                        t.last_step = step;
                    }
                }
                _ => {
                    return Err(UsersError::Unauthenticated(
                        "totp_code: a current code from the authenticator is needed",
                    ))
                }
            }
        }
        Ok(())
    }

    pub async fn logout(&self, caller: &Caller) -> Result<(), UsersError> {
        self.end_sessions(caller.user_id, |id| id == caller.session_id, "logout").await.map(|_| ())
    }

    async fn end_sessions(&self, user_id: u128, which: impl Fn(&str) -> bool, reason: &str) -> Result<u32, UsersError> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        self.end_sessions_locked(&mut state, which, reason).await
    }

    pub(super) async fn end_sessions_locked(
        &self,
        state: &mut UserState,
        which: impl Fn(&str) -> bool,
        reason: &str,
    ) -> Result<u32, UsersError> {
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
        self.forget_sessions(&ending.iter().map(|(_, hash)| *hash).collect::<Vec<_>>());
        Ok(ending.len() as u32)
    }

    pub async fn enroll_totp(&self, user_id: u128, reauth: Reauth<'_>) -> Result<(String, String), UsersError> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        if state.totp.is_some() {
            return Err(UsersError::FailedPrecondition("a second factor is already enabled; disable it first".into()));
        }
        self.reauthenticate(&mut state, &reauth).await?;
        let secret = random::<{ totp::SECRET_BYTES }>()?.to_vec();
        let uri = totp::otpauth_uri("Ledger", &state.profile.email, &secret);
        let shown = totp::base32(&secret);
        state.pending_totp = Some((secret, self.clock.now_ns()));
        Ok((shown, uri))
    }

    pub async fn confirm_totp(&self, user_id: u128, code: &str) -> Result<Vec<String>, UsersError> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        state.drop_stale_enrolment(self.clock.now_ns());
        let (secret, _) =
            state.pending_totp.clone().ok_or_else(|| UsersError::FailedPrecondition("enroll first".into()))?;
        let step = totp::matching_step(&secret, code, self.clock.now_ns() / 1_000_000_000)
            .ok_or_else(|| FieldError::new("code", "does not match; check the authenticator's clock"))?;
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

    pub async fn disable_totp(&self, user_id: u128, reauth: Reauth<'_>) -> Result<(), UsersError> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        if state.totp.is_none() {
            return Err(UsersError::FailedPrecondition("no second factor is enabled".into()));
        }
        self.reauthenticate(&mut state, &reauth).await?;
        self.append(&mut state, vec![Detail::TotpDisabled(ev::Empty {})]).await
    }

    pub async fn sessions(&self, caller: &Caller) -> Result<Vec<SessionInfo>, UsersError> {
        let user = self.user(caller.user_id)?;
        let state = user.lock().await;
        let idle = self.config.session_idle.as_nanos() as u64;
        let now = self.clock.now_ns();
        Ok(state
            .sessions
            .iter()
            .filter(|(_, s)| s.live(now, self.config.session_idle))
            .map(|(id, s)| SessionInfo {
                session_id: id.clone(),
                started_at_ns: s.started_ns,
                last_seen_at_ns: s.last_seen_ns,
                expires_at_ns: s.expires_ns.min(s.last_seen_ns + idle),
                source: s.source.clone(),
                current: *id == caller.session_id,
            })
            .collect())
    }

    pub async fn revoke_session(&self, user_id: u128, session_id: &str) -> Result<(), UsersError> {
        match self.end_sessions(user_id, |id| id == session_id, "revoked").await? {
            0 => Err(UsersError::NotFound("session")),
            _ => Ok(()),
        }
    }

    /// The user's security events, newest first.
    pub async fn security_events(&self, user_id: u128) -> Result<Vec<SecurityEvent>, UsersError> {
        let user = self.user(user_id)?;
        let state = user.lock().await;
        Ok(state
            .security
            .iter()
            .rev()
            .map(|(kind, at_ns, detail)| SecurityEvent { kind: kind.clone(), at_ns: *at_ns, detail: detail.clone() })
            .collect())
    }
}

enum SecondFactor {
    Code(u64),
    Recovery(u32),
}

fn normalize_recovery(code: &str) -> String {
    code.trim().to_lowercase().replace(['-', ' '], "")
}

#[cfg(test)]
mod sign_in_outcome_tests {
    use super::*;

    #[test]
    fn each_sign_in_answer_has_its_outcome() {
        let of = |result: Result<(), UsersError>| SignInOutcome::of(&result).as_str();
        assert_eq!(of(Ok(())), "success");
        assert_eq!(of(Err(UsersError::Unauthenticated(INVALID_CREDENTIALS))), "bad_credentials");
        assert_eq!(of(Err(UsersError::Throttled { retry_after_secs: 9 })), "throttled");
        assert_eq!(of(Err(UsersError::Unauthenticated(SECOND_FACTOR_REQUIRED))), "totp_required");
        assert_eq!(of(Err(UsersError::Unauthenticated(SECOND_FACTOR_INVALID))), "totp_failed");
        assert_eq!(of(Err(UsersError::InvalidRequest("email or password too long"))), "error");
    }
}
