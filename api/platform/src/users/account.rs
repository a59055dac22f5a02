//! A user's own account: the profile, the password, and erasure.

use ledger_core::domain::{AccountCommand, AccountId};
use ledger_core::money::format_amount;
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::user_event_details::Detail;
use ledger_proto::events::v1::UserEventKind as Kind;
use prost::Message;

use super::state::event_type;
use super::view::profile_of;
use super::{hash_password, password, profile, Caller, ProfileChanges, Reauth, UserProfile, Users, UsersError};
use crate::engine::EventData;

impl Users {
    pub async fn profile(&self, user_id: u128) -> Result<UserProfile, UsersError> {
        let user = self.user(user_id)?;
        let state = user.lock().await;
        Ok(profile_of(&state))
    }

    pub async fn update_profile(
        &self,
        user_id: u128,
        changes: ProfileChanges,
        reauth: Reauth<'_>,
    ) -> Result<UserProfile, UsersError> {
        let today = (self.clock.now_ns() / 86_400_000_000_000) as i64;
        if let Some(name) = &changes.name {
            profile::check_name("name", name, true)?;
        }
        if let Some(email) = &changes.email {
            profile::check_email(email)?;
        }
        if let Some(phone) = &changes.phone {
            profile::check_phone(phone)?;
        }
        if let Some(address) = &changes.address {
            profile::check_address(address)?;
        }
        if let Some(dob) = &changes.date_of_birth {
            profile::check_date_of_birth(dob, today)?;
        }
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        let mut next = state.profile.clone();
        let old_email = profile::normalize_email(&next.email);
        let new_email = changes.email.as_deref().map(profile::normalize_email).filter(|e| *e != old_email);
        if changes.email.is_some() && changes.email.as_deref().map(str::trim) != Some(next.email.as_str()) {
            self.reauthenticate(&mut state, &reauth).await?;
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
        let claim = new_email.as_deref().map(|email| self.claim_email(email, user_id)).transpose()?;
        let appended = self.append(&mut state, vec![Detail::ProfileUpdated(next)]).await;
        if let Some(claim) = claim {
            self.end_claim(&claim, user_id, appended.is_ok());
            if appended.is_ok() {
                self.forget_email(&self.index.email_hash(&old_email), user_id);
            }
        }
        appended.map(|()| profile_of(&state))
    }

    /// Changes the password and ends every other session of the user.
    pub async fn change_password(
        &self,
        caller: &Caller,
        reauth: Reauth<'_>,
        new_password: &str,
    ) -> Result<u32, UsersError> {
        let user = self.user(caller.user_id)?;
        let mut state = user.lock().await;
        password::check_policy(new_password, &state.profile.email)?;
        self.reauthenticate(&mut state, &reauth).await?;
        let hash = hash_password(new_password).await?;
        self.append(&mut state, vec![Detail::PasswordChanged(hash)]).await?;
        self.end_sessions_locked(&mut state, |id| id != caller.session_id, "password_changed").await
    }

    /// Erases a user: refuses while any wallet holds money or has holds; destroys the
    /// data key (crypto-shredding), then records the erasure.
    pub async fn delete(&self, caller: &Caller, reauth: Reauth<'_>) -> Result<(), UsersError> {
        let user = self.user(caller.user_id)?;
        let mut state = user.lock().await;
        self.reauthenticate(&mut state, &reauth).await?;
        let accounts: Vec<AccountId> = state.wallets.values().map(|&a| AccountId(a)).collect();
        let found = crate::chart::lookup_accounts(&self.ledger, accounts).await?;
        let mut held = Vec::new();
        for account in found.into_iter().flatten() {
            let balance = account.credits_posted.abs_diff(account.debits_posted);
            if balance != 0 || account.debits_pending != 0 || account.credits_pending != 0 {
                held.push(format!("{} {}", account.currency.code(), format_amount(balance, account.currency)));
            }
        }
        if !held.is_empty() {
            return Err(UsersError::FailedPrecondition(format!(
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
            let results = self.ledger.create_accounts(closing).await?;
            if let Some(Err(error)) =
                results.iter().find(|r| r.is_err() && **r != Err(ledger_core::domain::AccountError::Closed))
            {
                return Err(UsersError::FailedPrecondition(format!(
                    "a wallet cannot be closed ({error}); withdraw or send the balance, then delete the account"
                )));
            }
        }
        let keys = self.keys.clone();
        let slot = state.key_slot;
        tokio::task::spawn_blocking(move || keys.erase(slot))
            .await
            .map_err(|e| UsersError::Internal(e.to_string()))?
            .map_err(UsersError::KeyStore)?;
        let sessions: Vec<[u8; 32]> = state.sessions.values().map(|s| s.token_hash).collect();
        let email = self.index.email_hash(&profile::normalize_email(&state.profile.email));
        let at = self.clock.now_ns().max(state.last_ns + 1);
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
        self.forget_sessions(&sessions);
        self.forget_email(&email, caller.user_id);
        tracing::info!(user_id = %caller.user_id, "user erased");
        Ok(())
    }
}
