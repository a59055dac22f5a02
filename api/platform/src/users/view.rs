//! What the platform shows of a user: domain values the server turns into its wire
//! types.

use ledger_core::money::Currency;
use ledger_proto::events::v1 as ev;

use super::instruments;
use super::state::{instrument_display, UserState};
use super::{Caller, UsersError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserProfile {
    pub user_id: u128,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub address: String,
    pub date_of_birth: String,
    pub totp_enabled: bool,
    pub registered_at_ns: u64,
}

/// A live session of the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: String,
    pub started_at_ns: u64,
    pub last_seen_at_ns: u64,
    /// The earlier of the absolute expiry and the idle expiry.
    pub expires_at_ns: u64,
    pub source: String,
    /// Whether this is the session of the request.
    pub current: bool,
}

/// A successful sign-in: the session token is shown once, here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignIn {
    pub caller: Caller,
    pub session_token: String,
    pub idle_expires_at_ns: u64,
    pub expires_at_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityEvent {
    pub kind: String,
    pub at_ns: u64,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstrumentStatus {
    PendingVerification,
    Verified,
    VerificationFailed,
}

/// What may be shown of an instrument's method: never a full account or card number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstrumentDetails {
    BankAccount { bank_name: String, routing_number: String, account_number_masked: String },
    Card { brand: String, last4: String, exp_month: u32, exp_year: u32 },
    DigitalWallet { provider: String, handle_masked: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentInstrument {
    pub instrument_id: String,
    pub status: InstrumentStatus,
    pub is_default: bool,
    pub display: String,
    /// `None` for an instrument stored without a method.
    pub details: Option<InstrumentDetails>,
}

/// A wallet: a ledger account of the user's in one currency, with its balances in
/// minor units (negative only if the ledger's rules were bypassed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wallet {
    pub currency: Currency,
    pub account_id: u128,
    pub balance_minor: i128,
    /// The balance less what pending payments hold.
    pub available_minor: i128,
}

pub(super) fn profile_of(state: &UserState) -> UserProfile {
    let p = &state.profile;
    UserProfile {
        user_id: state.id,
        name: p.name.clone(),
        email: p.email.clone(),
        phone: p.phone.clone(),
        address: p.address.clone(),
        date_of_birth: p.date_of_birth.clone(),
        totp_enabled: state.totp.is_some(),
        registered_at_ns: state.registered_ns,
    }
}

pub(super) fn instrument_of(state: &UserState, id: &str) -> Result<PaymentInstrument, UsersError> {
    use ev::instrument::Method;
    let found = state.instrument(id).ok_or(UsersError::NotFound("instrument"))?;
    let i = &found.instrument;
    let status = match (i.verified, found.failed_for_good) {
        (true, _) => InstrumentStatus::Verified,
        (false, true) => InstrumentStatus::VerificationFailed,
        (false, false) => InstrumentStatus::PendingVerification,
    };
    let details = i.method.as_ref().map(|method| match method {
        Method::BankAccount(b) => InstrumentDetails::BankAccount {
            bank_name: b.bank_name.clone(),
            routing_number: b.routing_number.clone(),
            account_number_masked: instruments::mask_tail(&b.account_number),
        },
        Method::Card(c) => InstrumentDetails::Card {
            brand: c.brand.clone(),
            last4: c.last4.clone(),
            exp_month: c.exp_month,
            exp_year: c.exp_year,
        },
        Method::DigitalWallet(w) => InstrumentDetails::DigitalWallet {
            provider: w.provider.clone(),
            handle_masked: instruments::mask_handle(&w.handle),
        },
    });
    Ok(PaymentInstrument {
        instrument_id: i.instrument_id.clone(),
        status,
        is_default: state.default_instrument.as_deref() == Some(id),
        display: instrument_display(i),
        details,
    })
}
