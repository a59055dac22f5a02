//! What admins and support see of users: pages of users in id order, one user by id,
//! and each instrument with its verification state, including the micro-deposit
//! amounts of a bank account still awaiting verification (kept sealed in the user's
//! stream; shown to these roles only, never logged).

use ledger_proto::events::v1 as ev;

use super::state::UserState;
use super::view::instrument_of;
use super::{PaymentInstrument, Users, UsersError};

/// Most users one page holds.
pub const PAGE_USERS_MAX: usize = 200;

/// A user as a list shows them. An erased user keeps only id and erasure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSummary {
    pub user_id: u128,
    pub name: String,
    pub email: String,
    pub registered_at_ns: u64,
    pub totp_enabled: bool,
    pub erased: bool,
}

/// An instrument with what support needs to help a user verify it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupportInstrument {
    pub instrument: PaymentInstrument,
    /// A bank account awaiting verification: the two amounts, in minor units; empty
    /// once verified or failed for good, and for other kinds.
    pub micro_deposits: Vec<u32>,
    pub failed_attempts: u32,
    pub added_ns: u64,
}

fn summary_of(state: &UserState) -> UserSummary {
    UserSummary {
        user_id: state.id,
        name: if state.erased { String::new() } else { state.profile.name.clone() },
        email: if state.erased { String::new() } else { state.profile.email.clone() },
        registered_at_ns: state.registered_ns,
        totp_enabled: state.totp.is_some(),
        erased: state.erased,
    }
}

impl Users {
    /// Users with ids above `after`, in id order, at most `limit` (capped at
    /// `PAGE_USERS_MAX`); and the cursor of the next page if there is one. Read from the
    /// index, one page at a time.
    pub async fn page(
        &self,
        after: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<UserSummary>, Option<u128>), UsersError> {
        let limit = limit.clamp(1, PAGE_USERS_MAX);
        let ids = self.index.users_after(after, limit + 1)?;
        let more = ids.len() > limit;
        let mut out = Vec::with_capacity(limit);
        for id in ids.into_iter().take(limit) {
            match self.user(id) {
                Ok(user) => out.push(summary_of(&*user.lock().await)),
                // An id whose sign-up never reached the log (a crash in between).
                Err(UsersError::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        let next = if more { out.last().map(|u| u.user_id) } else { None };
        Ok((out, next))
    }

    /// One user's summary (erased users too: support may be asked about one).
    pub async fn summary(&self, user_id: u128) -> Result<UserSummary, UsersError> {
        let user = self.user(user_id)?;
        let state = user.lock().await;
        Ok(summary_of(&state))
    }

    /// Every instrument of the user with its verification state.
    pub async fn instruments_for_support(&self, user_id: u128) -> Result<Vec<SupportInstrument>, UsersError> {
        let user = self.user(user_id)?;
        let state = user.lock().await;
        let mut out = Vec::with_capacity(state.instruments.len());
        for found in &state.instruments {
            let i = &found.instrument;
            let awaiting = !i.verified && !found.failed_for_good;
            let micro_deposits = match &i.method {
                Some(ev::instrument::Method::BankAccount(bank)) if awaiting => bank.micro_deposits.clone(),
                _ => Vec::new(),
            };
            out.push(SupportInstrument {
                instrument: instrument_of(&state, &i.instrument_id)?,
                micro_deposits,
                failed_attempts: found.failed_attempts,
                added_ns: found.added_ns,
            });
        }
        Ok(out)
    }
}
