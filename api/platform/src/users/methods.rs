//! A user's payment instruments (bank accounts verified by micro-deposits, cards
//! through the vault, digital wallets) and wallets (ledger accounts of theirs).

use ledger_core::chain::to_hex as hex;
use ledger_core::domain::{AccountCommand, AccountFlags, AccountId, NewAccount};
use ledger_core::money::Currency;
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::user_event_details::Detail;

use super::view::instrument_of;
use super::{
    instruments, profile, random, wallet_account_id, FundingInstrument, PaymentInstrument, Users, UsersError, Wallet,
    WALLET_ACCOUNT_CODE,
};
use crate::FieldError;

pub const INSTRUMENTS_MAX: usize = 20;
/// Wrong micro-deposit answers before a bank account must be added again.
pub const VERIFY_ATTEMPTS_MAX: u32 = 3;

impl Users {
    async fn add_instrument(
        &self,
        user_id: u128,
        method: ev::instrument::Method,
        verified: bool,
    ) -> Result<PaymentInstrument, UsersError> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        if state.instruments.len() >= INSTRUMENTS_MAX {
            return Err(UsersError::FailedPrecondition(format!(
                "at most {INSTRUMENTS_MAX} instruments; remove one first"
            )));
        }
        if let ev::instrument::Method::BankAccount(new) = &method {
            let duplicate = state.instruments.iter().any(|i| match &i.instrument.method {
                Some(ev::instrument::Method::BankAccount(b)) => {
                    b.routing_number == new.routing_number && b.account_number == new.account_number
                }
                _ => false,
            });
            if duplicate {
                return Err(UsersError::AlreadyExists("this bank account is already linked"));
            }
        }
        let id = format!("ins_{}", hex(&random::<8>()?));
        let instrument = ev::Instrument { instrument_id: id.clone(), method: Some(method), verified };
        let mut details = vec![Detail::InstrumentAdded(instrument)];
        if verified && state.default_instrument.is_none() {
            details.push(Detail::DefaultInstrumentSet(ev::InstrumentRef { instrument_id: id.clone() }));
        }
        self.append(&mut state, details).await?;
        instrument_of(&state, &id)
    }

    pub async fn add_bank_account(
        &self,
        user_id: u128,
        bank_name: &str,
        routing: &str,
        account_number: &str,
        holder_name: &str,
    ) -> Result<(PaymentInstrument, Vec<u32>), UsersError> {
        profile::check_name("bank_name", bank_name, true)?;
        profile::check_name("holder_name", holder_name, false)?;
        instruments::check_routing_number(routing)?;
        instruments::check_account_number(account_number)?;
        let bytes = random::<2>()?;
        let deposits: Vec<u32> = bytes.iter().map(|b| 1 + u32::from(*b) % 99).collect();
        let bank = ev::BankAccount {
            bank_name: bank_name.trim().to_string(),
            routing_number: routing.to_string(),
            account_number: account_number.to_string(),
            holder_name: holder_name.trim().to_string(),
            micro_deposits: deposits.clone(),
        };
        let instrument = self.add_instrument(user_id, ev::instrument::Method::BankAccount(bank), false).await?;
        Ok((instrument, deposits))
    }

    pub async fn add_card(
        &self,
        user_id: u128,
        number: &str,
        exp_month: u32,
        exp_year: u32,
        cvv: &str,
        holder_name: &str,
    ) -> Result<PaymentInstrument, UsersError> {
        let digits = instruments::card_digits(number)?;
        let brand = instruments::card_brand(&digits);
        let now = profile::year_month_of((self.clock.now_ns() / 86_400_000_000_000) as i64);
        instruments::check_expiry(exp_month, exp_year, now)?;
        instruments::check_cvv(cvv, brand)?;
        profile::check_name("holder_name", holder_name, false)?;
        let token = self.vault.tokenize(&digits, exp_month, exp_year, cvv).map_err(UsersError::FailedPrecondition)?;
        let card = ev::Card {
            token,
            brand: brand.to_string(),
            last4: digits[digits.len() - 4..].to_string(),
            exp_month,
            exp_year,
            holder_name: holder_name.trim().to_string(),
        };
        self.add_instrument(user_id, ev::instrument::Method::Card(card), true).await
    }

    pub async fn add_digital_wallet(
        &self,
        user_id: u128,
        provider: &str,
        handle: &str,
    ) -> Result<PaymentInstrument, UsersError> {
        instruments::check_wallet(provider, handle)?;
        let wallet = ev::DigitalWallet { provider: provider.to_string(), handle: handle.trim().to_string() };
        self.add_instrument(user_id, ev::instrument::Method::DigitalWallet(wallet), true).await
    }

    pub async fn instruments(&self, user_id: u128) -> Result<Vec<PaymentInstrument>, UsersError> {
        let user = self.user(user_id)?;
        let state = user.lock().await;
        state.instruments.iter().map(|i| instrument_of(&state, &i.instrument.instrument_id)).collect()
    }

    pub async fn verify_instrument(
        &self,
        user_id: u128,
        instrument_id: &str,
        amounts: &[u32],
    ) -> Result<PaymentInstrument, UsersError> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        let found = state.instrument(instrument_id).ok_or(UsersError::NotFound("instrument"))?;
        if found.instrument.verified {
            return instrument_of(&state, instrument_id);
        }
        if found.failed_for_good {
            return Err(UsersError::FailedPrecondition(
                "verification failed for good; remove the account and add it again".into(),
            ));
        }
        let Some(ev::instrument::Method::BankAccount(bank)) = &found.instrument.method else {
            return Err(UsersError::Corrupt("only bank accounts await verification".into()));
        };
        let mut expected = bank.micro_deposits.clone();
        let mut given = amounts.to_vec();
        expected.sort_unstable();
        given.sort_unstable();
        if given.len() != 2 {
            return Err(FieldError::new("amounts", "the two micro-deposits, in minor units").into());
        }
        let id = instrument_id.to_string();
        if given == expected {
            let mut details = vec![Detail::InstrumentVerified(ev::InstrumentRef { instrument_id: id.clone() })];
            if state.default_instrument.is_none() {
                details.push(Detail::DefaultInstrumentSet(ev::InstrumentRef { instrument_id: id.clone() }));
            }
            self.append(&mut state, details).await?;
            return instrument_of(&state, &id);
        }
        let attempts = found.failed_attempts + 1;
        let r#final = attempts >= VERIFY_ATTEMPTS_MAX;
        let failed = ev::VerificationFailed { instrument_id: id, attempts, r#final };
        self.append(&mut state, vec![Detail::VerificationFailed(failed)]).await?;
        Err(UsersError::FailedPrecondition(if r#final {
            "the amounts do not match; no attempts left: remove the account and add it again".to_string()
        } else {
            format!("the amounts do not match; {} attempts left", VERIFY_ATTEMPTS_MAX - attempts)
        }))
    }

    pub async fn set_default_instrument(
        &self,
        user_id: u128,
        instrument_id: &str,
    ) -> Result<PaymentInstrument, UsersError> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        let found = state.instrument(instrument_id).ok_or(UsersError::NotFound("instrument"))?;
        if !found.instrument.verified {
            return Err(UsersError::FailedPrecondition("verify the instrument first".into()));
        }
        if state.default_instrument.as_deref() != Some(instrument_id) {
            let set = ev::InstrumentRef { instrument_id: instrument_id.to_string() };
            self.append(&mut state, vec![Detail::DefaultInstrumentSet(set)]).await?;
        }
        instrument_of(&state, instrument_id)
    }

    pub async fn remove_instrument(&self, user_id: u128, instrument_id: &str) -> Result<(), UsersError> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        state.instrument(instrument_id).ok_or(UsersError::NotFound("instrument"))?;
        let removed = ev::InstrumentRef { instrument_id: instrument_id.to_string() };
        self.append(&mut state, vec![Detail::InstrumentRemoved(removed)]).await
    }

    /// Opens the user's wallet in `currency` (idempotent): a ledger account owned by
    /// the user that cannot be overdrawn.
    pub async fn open_wallet(&self, user_id: u128, currency: Currency) -> Result<Wallet, UsersError> {
        self.ensure_wallet(user_id, currency).await?;
        let mut wallets = self.wallets(user_id).await?;
        wallets.retain(|w| w.currency == currency);
        wallets.pop().ok_or_else(|| UsersError::Internal("the wallet account is missing".into()))
    }

    /// Opens the user's wallet in `currency` unless it is open, without reading its
    /// balance (what a payment needs before it moves money).
    pub async fn ensure_wallet(&self, user_id: u128, currency: Currency) -> Result<(), UsersError> {
        let user = self.user(user_id)?;
        let mut state = user.lock().await;
        let account = wallet_account_id(user_id, currency);
        if !state.wallets.contains_key(currency.code()) {
            let open = AccountCommand::Open(NewAccount {
                id: AccountId(account),
                currency,
                code: WALLET_ACCOUNT_CODE,
                flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                owner_id: user_id,
            });
            let results = self.ledger.create_accounts(vec![open]).await?;
            if let Some(Err(error)) = results.first() {
                return Err(UsersError::Internal(format!("opening the wallet account: {error}")));
            }
            let opened = ev::WalletOpened { currency: currency.code().to_string(), account_id: account.to_string() };
            self.append(&mut state, vec![Detail::WalletOpened(opened)]).await?;
        }
        Ok(())
    }

    pub async fn wallets(&self, user_id: u128) -> Result<Vec<Wallet>, UsersError> {
        let user = self.user(user_id)?;
        let wallets: Vec<(String, u128)> = user.lock().await.wallets.iter().map(|(c, a)| (c.clone(), *a)).collect();
        let ids = wallets.iter().map(|(_, a)| AccountId(*a)).collect();
        let accounts = crate::chart::lookup_accounts(&self.ledger, ids).await?;
        Ok(wallets
            .iter()
            .zip(accounts)
            .filter_map(|((_, id), account)| {
                let account = account?;
                let balance_minor = account.credits_posted as i128 - account.debits_posted as i128;
                Some(Wallet {
                    currency: account.currency,
                    account_id: *id,
                    balance_minor,
                    available_minor: balance_minor - account.debits_pending as i128,
                })
            })
            .collect())
    }

    /// A verified instrument of the user to pay with (or to withdraw to): its kind,
    /// what the rail knows it by (a card's vault token; a masked reference otherwise),
    /// and when it was added. NOT_FOUND for an instrument that is not the user's.
    pub async fn funding_instrument(
        &self,
        user_id: u128,
        instrument_id: &str,
    ) -> Result<FundingInstrument, UsersError> {
        use ev::instrument::Method;
        let user = self.user(user_id)?;
        let state = user.lock().await;
        let found = state.instrument(instrument_id).ok_or(UsersError::NotFound("instrument"))?;
        if !found.instrument.verified {
            return Err(UsersError::FailedPrecondition("the instrument is not verified yet".into()));
        }
        let (kind, reference) = match &found.instrument.method {
            Some(Method::BankAccount(b)) => {
                ("bank_account", format!("{}:{}", b.routing_number, instruments::mask_tail(&b.account_number)))
            }
            Some(Method::Card(c)) => ("card", c.token.clone()),
            Some(Method::DigitalWallet(w)) => {
                ("digital_wallet", format!("{}:{}", w.provider, instruments::mask_handle(&w.handle)))
            }
            None => return Err(UsersError::Corrupt("instrument without a method".into())),
        };
        Ok(FundingInstrument { kind, reference, added_ns: found.added_ns })
    }
}
