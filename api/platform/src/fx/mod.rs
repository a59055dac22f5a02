//! Many currencies: mid rates (every change an event on `fx-rates`), quotes that fix a
//! rate with the spread, both amounts, the fee and an expiry, and conversions booked
//! atomically through the platform's FX account of each currency (every conversion an
//! event on `fx-conversions`). Quotes are durable (`quotes`: events on `fx-quotes`).
//!
//! Rounding rule (one rule, platform-favourable by less than one minor unit): the side
//! the user fixes is exact; the other side is rounded down when the platform pays it
//! (the amount received) and up when the platform charges it (the amount sold, the
//! fee). So a conversion never creates money, and keeps at most one minor unit of the
//! computed side's currency beyond the spread.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use ledger_core::clock::Clock;
use ledger_core::domain::{AccountId, NewTransfer, TransferId, TransferKind};
use ledger_core::money::{format_amount, Currency};
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::fx_event::Kind as FxKind;
use prost::Message;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::chart::{
    derive_id, first_refusal, platform_account, refusal_reason, wallet_account_id, OpenError, PlatformAccounts,
};
use crate::engine::{EventData, EventStore, EventStoreExt, ExpectedRevision, Ledger, Revision};
use crate::users::Users;
use crate::FieldError;

mod error;
pub mod quotes;
pub use crate::chart::FX_TRANSFER_CODE;
pub use error::{FxError, RateError};

pub const RATES_STREAM: &str = "fx-rates";
pub const CONVERSIONS_STREAM: &str = "fx-conversions";
/// Currency pairs with a rate, at most: `ListRates` answers one rate per pair.
pub const RATE_PAIRS_MAX: usize = 1_000;
/// Rates are given through this currency when no direct pair is set.
pub const PIVOT: &str = "USD";

#[derive(Clone, Copy, Debug)]
pub struct FxConfig {
    /// The spread below mid the customer's rate has, in basis points.
    pub spread_bps: u32,
    /// A fee in basis points of the amount sold, rounded up.
    pub fee_bps: u32,
    pub quote_ttl: Duration,
}

impl Default for FxConfig {
    fn default() -> FxConfig {
        FxConfig { spread_bps: 50, fee_bps: 0, quote_ttl: Duration::from_secs(60) }
    }
}

/// Which side of a quote the user fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fixed {
    Sell(u64),
    Receive(u64),
}

/// The amounts of a conversion, in minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amounts {
    pub from: u64,
    pub to: u64,
    pub fee: u64,
    /// The customer's rate: mid × (1 − spread).
    pub rate: Decimal,
    /// The spread earned, in minor units of the `to` currency: `from` at mid less `to`,
    /// rounded down.
    pub spread: u64,
}

fn scale(from: Currency, to: Currency) -> Result<Decimal, RateError> {
    let diff = i32::from(to.exponent()) - i32::from(from.exponent());
    let ten = Decimal::from(10);
    let mut factor = Decimal::ONE;
    for _ in 0..diff.unsigned_abs() {
        factor = factor.checked_mul(ten).ok_or(RateError::Overflow)?;
    }
    Ok(if diff >= 0 { factor } else { Decimal::ONE / factor })
}

/// The customer's rate for a mid rate and a spread.
pub fn customer_rate(mid: Decimal, spread_bps: u32) -> Decimal {
    mid * (Decimal::ONE - Decimal::new(i64::from(spread_bps), 4))
}

/// `from_minor` of `from` in minor units of `to` at `rate`, exactly (no rounding).
pub fn exact(from_minor: u64, rate: Decimal, from: Currency, to: Currency) -> Result<Decimal, RateError> {
    Decimal::from(from_minor)
        .checked_mul(rate)
        .and_then(|v| v.checked_mul(scale(from, to).ok()?))
        .ok_or(RateError::Overflow)
}

fn whole(value: Decimal, strategy: RoundingStrategy) -> Result<u64, RateError> {
    value.round_dp_with_strategy(0, strategy).to_u64().ok_or(RateError::Overflow)
}

/// The amounts of a conversion under the rounding rule.
pub fn quote_amounts(
    from: Currency,
    to: Currency,
    mid: Decimal,
    spread_bps: u32,
    fee_bps: u32,
    fixed: Fixed,
) -> Result<Amounts, RateError> {
    if mid <= Decimal::ZERO {
        return Err(RateError::BadRate);
    }
    let rate = customer_rate(mid, spread_bps);
    let (from_amount, to_amount) = match fixed {
        Fixed::Sell(amount) => (amount, whole(exact(amount, rate, from, to)?, RoundingStrategy::ToZero)?),
        Fixed::Receive(amount) => {
            let needed = Decimal::from(amount)
                .checked_div(rate)
                .and_then(|v| v.checked_mul(scale(to, from).ok()?))
                .ok_or(RateError::Overflow)?;
            (whole(needed, RoundingStrategy::AwayFromZero)?, amount)
        }
    };
    if from_amount == 0 || to_amount == 0 {
        return Err(RateError::TooSmall);
    }
    let fee = whole(Decimal::from(from_amount) * Decimal::new(i64::from(fee_bps), 4), RoundingStrategy::AwayFromZero)?;
    // What the seller pays (amount plus fee) must fit an amount too.
    from_amount.checked_add(fee).ok_or(RateError::Overflow)?;
    let at_mid = exact(from_amount, mid, from, to)?;
    let spread = whole((at_mid - Decimal::from(to_amount)).max(Decimal::ZERO), RoundingStrategy::ToZero)?;
    // What leaves the FX account (paid plus spread) must fit an amount too.
    to_amount.checked_add(spread).ok_or(RateError::Overflow)?;
    Ok(Amounts { from: from_amount, to: to_amount, fee, rate, spread })
}

#[derive(Clone, Debug)]
struct RateEntry {
    at: u64,
    rate: Decimal,
    source: String,
}

/// Every rate ever set, per pair in time order.
#[derive(Default)]
struct RateBook {
    pairs: BTreeMap<(String, String), Vec<RateEntry>>,
}

impl RateBook {
    fn set(&mut self, base: &str, quote: &str, entry: RateEntry) {
        self.pairs.entry((base.to_string(), quote.to_string())).or_default().push(entry);
    }

    /// The pair's rate at `at` (the latest set at or before it), direct or inverse.
    fn direct(&self, a: &str, b: &str, at: u64) -> Option<(Decimal, String)> {
        if a == b {
            return Some((Decimal::ONE, String::new()));
        }
        let latest =
            |pair: &(String, String)| self.pairs.get(pair).and_then(|v| v.iter().rev().find(|e| e.at <= at).cloned());
        let describe = |b: &str, q: &str, e: &RateEntry| format!("{b}/{q} {} ({}) at {}", e.rate, e.source, e.at);
        if let Some(e) = latest(&(a.to_string(), b.to_string())) {
            return Some((e.rate, describe(a, b, &e)));
        }
        let e = latest(&(b.to_string(), a.to_string()))?;
        (e.rate > Decimal::ZERO).then(|| (Decimal::ONE / e.rate, describe(b, a, &e)))
    }

    /// The mid rate a → b at `at`, through the pivot if no pair links them.
    fn mid(&self, a: &str, b: &str, at: u64) -> Result<(Decimal, Vec<String>), RateError> {
        if let Some((rate, used)) = self.direct(a, b, at) {
            return Ok((rate, vec![used].into_iter().filter(|u| !u.is_empty()).collect()));
        }
        let (first, u1) = self.direct(a, PIVOT, at).ok_or_else(|| RateError::NoRate(a.into(), b.into()))?;
        let (second, u2) = self.direct(PIVOT, b, at).ok_or_else(|| RateError::NoRate(a.into(), b.into()))?;
        let rate = first.checked_mul(second).ok_or(RateError::Overflow)?;
        Ok((rate, [u1, u2].into_iter().filter(|u| !u.is_empty()).collect()))
    }

    fn current(&self) -> Vec<(String, String, RateEntry)> {
        self.pairs.iter().filter_map(|((b, q), v)| v.last().map(|e| (b.clone(), q.clone(), e.clone()))).collect()
    }
}

/// A quote given to a user, until it expires or is executed.
#[derive(Clone, Debug)]
pub struct QuoteState {
    pub id: String,
    pub user: u128,
    pub from: Currency,
    pub to: Currency,
    pub amounts: Amounts,
    pub mid: Decimal,
    pub spread_bps: u32,
    pub quoted_at: u64,
    pub expires_at: u64,
    pub rates_used: Vec<String>,
    pub executed: Option<ev::ConversionBooked>,
    /// The payment that took it.
    pub used_by: Option<u128>,
}

impl QuoteState {
    /// An expired quote is refused with a clear error.
    fn check_live(&self, now_ns: u64) -> Result<(), FxError> {
        if now_ns > self.expires_at {
            return Err(FxError::QuoteExpired { expires_at_ns: self.expires_at });
        }
        Ok(())
    }
}

pub struct Fx {
    store: Arc<dyn EventStore>,
    ledger: Ledger,
    users: Arc<Users>,
    config: FxConfig,
    book: RwLock<RateBook>,
    /// Serializes appends to the rate and conversion streams (exact expected revisions).
    streams: tokio::sync::Mutex<(Option<Revision>, Option<Revision>)>,
    quotes: DashMap<String, Arc<tokio::sync::Mutex<QuoteState>>>,
    /// When to forget the expired quotes (see `crate::sweep`).
    quotes_sweep: crate::sweep::Sweep,
    /// Every conversion booked, by quote id: what a statement shows of a conversion's
    /// transfers (as many as the log holds, like the payments).
    conversions: DashMap<String, ev::ConversionBooked>,
    /// The FX, FX revenue and fee accounts of each currency converted.
    accounts: PlatformAccounts,
    /// Where the time is read: quotes, their expiry, rates in force.
    clock: Arc<dyn Clock>,
}

impl Fx {
    pub fn open(
        store: Arc<dyn EventStore>,
        ledger: Ledger,
        users: Arc<Users>,
        config: FxConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Fx, FxError> {
        let mut book = RateBook::default();
        let rates_head = crate::stream::load::<FxError>(store.as_ref(), RATES_STREAM, 4_096, |record| {
            let event = ev::FxEvent::decode(record.payload.as_slice())
                .map_err(|e| FxError::Corrupt(format!("{RATES_STREAM}: {e}")))?;
            if let Some(FxKind::RateSet(r)) = event.kind {
                let rate: Decimal =
                    r.rate.parse().map_err(|_| FxError::Corrupt(format!("{RATES_STREAM}: bad rate {}", r.rate)))?;
                book.set(&r.base, &r.quote, RateEntry { at: event.timestamp_ns, rate, source: r.source });
            }
            Ok(())
        })?;
        // Conversions are only appended to; replay checks that each decodes.
        let conversions = DashMap::new();
        let conversions_head = crate::stream::load::<FxError>(store.as_ref(), CONVERSIONS_STREAM, 4_096, |record| {
            let event = ev::FxEvent::decode(record.payload.as_slice())
                .map_err(|e| FxError::Corrupt(format!("{CONVERSIONS_STREAM}: {e}")))?;
            if let Some(FxKind::ConversionBooked(booked)) = event.kind {
                conversions.insert(booked.quote_id.clone(), booked);
            }
            Ok(())
        })?;
        let heads = (rates_head, conversions_head);
        let live = DashMap::new();
        for mut quote in quotes::load_live(store.as_ref(), clock.now_ns())? {
            quote.executed = conversions.get(&quote.id).map(|c| c.clone());
            live.insert(quote.id.clone(), Arc::new(tokio::sync::Mutex::new(quote)));
        }
        tracing::info!(live_quotes = live.len(), "quotes given and still live loaded");
        Ok(Fx {
            store,
            ledger,
            users,
            config,
            book: RwLock::new(book),
            streams: tokio::sync::Mutex::new(heads),
            quotes: live,
            quotes_sweep: crate::sweep::Sweep::new(quotes::QUOTES_SWEEP_MIN),
            conversions,
            accounts: PlatformAccounts::fx(),
            clock,
        })
    }

    async fn append(&self, stream: &str, head: &mut Option<Revision>, kinds: Vec<FxKind>) -> Result<u64, FxError> {
        let at = self.clock.now_ns();
        let events: Vec<EventData> = kinds
            .into_iter()
            .map(|kind| {
                let event_type = match kind {
                    FxKind::RateSet(_) => "FxRateSet",
                    FxKind::ConversionBooked(_) => "FxConversionBooked",
                    FxKind::QuoteGiven(_) => "FxQuoteGiven",
                };
                EventData {
                    event_type: event_type.into(),
                    payload: ev::FxEvent { timestamp_ns: at, kind: Some(kind) }.encode_to_vec(),
                }
            })
            .collect();
        crate::stream::append(self.store.as_ref(), stream, head, events).await?;
        Ok(at)
    }

    /// Sets mid rates (one event each, one append).
    pub async fn set_rates(&self, rates: Vec<(Currency, Currency, Decimal, String)>) -> Result<(), FxError> {
        if rates.is_empty() || rates.len() > 1_000 {
            return Err(FieldError::new("rates", "1 to 1000").into());
        }
        let mut kinds = Vec::with_capacity(rates.len());
        for (base, quote, rate, source) in &rates {
            if base == quote {
                return Err(FxError::InvalidRequest("a rate links two different currencies"));
            }
            if *rate <= Decimal::ZERO {
                return Err(RateError::BadRate.into());
            }
            if source.len() > 64 || source.chars().any(char::is_control) {
                return Err(FieldError::new("source", "at most 64 bytes").into());
            }
            kinds.push(FxKind::RateSet(ev::RateSet {
                base: base.code().into(),
                quote: quote.code().into(),
                rate: rate.normalize().to_string(),
                source: source.clone(),
            }));
        }
        let mut heads = self.streams.lock().await;
        {
            // Checked under the streams' lock: no other change of rates runs meanwhile.
            let book = self.book.read().unwrap_or_else(|p| p.into_inner());
            let new_pairs: std::collections::BTreeSet<(&str, &str)> = rates
                .iter()
                .map(|(base, quote, ..)| (base.code(), quote.code()))
                .filter(|(b, q)| !book.pairs.contains_key(&(b.to_string(), q.to_string())))
                .collect();
            if book.pairs.len() + new_pairs.len() > RATE_PAIRS_MAX {
                return Err(FieldError::new("rates", format!("at most {RATE_PAIRS_MAX} currency pairs in all")).into());
            }
        }
        let at = self.append(RATES_STREAM, &mut heads.0, kinds).await?;
        let mut book = self.book.write().unwrap_or_else(|p| p.into_inner());
        for (base, quote, rate, source) in rates {
            book.set(base.code(), quote.code(), RateEntry { at, rate, source });
        }
        Ok(())
    }

    /// The latest rate of every pair set: (base, quote, rate, source, at).
    pub fn rates(&self) -> Vec<(String, String, Decimal, String, u64)> {
        let book = self.book.read().unwrap_or_else(|p| p.into_inner());
        book.current().into_iter().map(|(b, q, e)| (b, q, e.rate, e.source, e.at)).collect()
    }

    /// The mid rate a → b at a time, with the rates it came from.
    pub fn mid_at(&self, a: Currency, b: Currency, at: u64) -> Result<(Decimal, Vec<String>), RateError> {
        self.book.read().unwrap_or_else(|p| p.into_inner()).mid(a.code(), b.code(), at)
    }

    /// A quote for `user`, durable (on `fx-quotes`) before it is answered.
    pub async fn quote(&self, user: u128, from: Currency, to: Currency, fixed: Fixed) -> Result<QuoteState, FxError> {
        if from == to {
            return Err(FxError::InvalidRequest("from_currency and to_currency are the same"));
        }
        let now = self.clock.now_ns();
        let (mid, rates_used) = self.mid_at(from, to, now)?;
        let amounts = quote_amounts(from, to, mid, self.config.spread_bps, self.config.fee_bps, fixed)?;
        let bytes: [u8; 12] = crate::random::bytes()?;
        let id = format!("q_{}", ledger_core::chain::to_hex(&bytes));
        let quote = QuoteState {
            id: id.clone(),
            user,
            from,
            to,
            amounts,
            mid,
            spread_bps: self.config.spread_bps,
            quoted_at: now,
            expires_at: now + self.config.quote_ttl.as_nanos() as u64,
            rates_used,
            executed: None,
            used_by: None,
        };
        // Forget expired quotes each time the map has doubled, and when it is full (a
        // locked one is in use: kept).
        let full = self.quotes.len() >= quotes::QUOTES_LIVE_MAX;
        if full || self.quotes_sweep.due(self.quotes.len()) {
            self.quotes.retain(|_, q| q.try_lock().map_or(true, |q| q.expires_at >= now));
            self.quotes_sweep.swept(self.quotes.len());
            if self.quotes.len() >= quotes::QUOTES_LIVE_MAX {
                return Err(FxError::Busy);
            }
        }
        let event = ev::FxEvent { timestamp_ns: now, kind: Some(FxKind::QuoteGiven(quote.given())) };
        let data = EventData { event_type: "FxQuoteGiven".into(), payload: event.encode_to_vec() };
        // Any revision: quotes of many users land in one stream without waiting on each other.
        self.store.append(quotes::QUOTES_STREAM, ExpectedRevision::Any, vec![data]).await?;
        self.quotes.insert(id, Arc::new(tokio::sync::Mutex::new(quote.clone())));
        Ok(quote)
    }

    /// Marks a live quote as taken by `payment` (a payment rebuilt at start).
    /// The ids of the quotes held (live, or expired and not forgotten yet): at most
    /// `QUOTES_LIVE_MAX`.
    pub fn live_quote_ids(&self) -> Vec<String> {
        self.quotes.iter().map(|q| q.key().clone()).collect()
    }

    pub fn taken_by(&self, quote_id: &str, payment: u128) {
        if let Some(quote) = self.quotes.get(quote_id).map(|q| q.clone()) {
            if let Ok(mut quote) = quote.try_lock() {
                quote.used_by = Some(payment);
            }
        }
    }

    /// `user`'s quote, locked; another user's is as unknown as a missing one.
    async fn quote_of(&self, user: u128, quote_id: &str) -> Result<tokio::sync::OwnedMutexGuard<QuoteState>, FxError> {
        let quote = self.quotes.get(quote_id).map(|q| q.clone()).ok_or(FxError::NotFound("quote"))?;
        let quote = quote.lock_owned().await;
        if quote.user != user {
            return Err(FxError::NotFound("quote"));
        }
        Ok(quote)
    }

    /// A quote of `user`, as it stands.
    pub async fn peek(&self, user: u128, quote_id: &str) -> Result<QuoteState, FxError> {
        Ok(self.quote_of(user, quote_id).await?.clone())
    }

    /// Takes a live quote of `user` for a payment: it can be used once.
    pub async fn take_quote(&self, user: u128, quote_id: &str, payment: u128) -> Result<QuoteState, FxError> {
        let mut quote = self.quote_of(user, quote_id).await?;
        if quote.executed.is_some() || quote.used_by.is_some_and(|p| p != payment) {
            return Err(FxError::FailedPrecondition("the quote was used already; ask for a new quote".into()));
        }
        quote.check_live(self.clock.now_ns())?;
        self.ensure_fx_accounts([quote.from, quote.to]).await?;
        quote.used_by = Some(payment);
        Ok(quote.clone())
    }

    /// Gives back a quote taken by a payment that was not created.
    pub async fn release_quote(&self, quote_id: &str, payment: u128) {
        if let Some(quote) = self.quotes.get(quote_id).map(|q| q.clone()) {
            let mut quote = quote.lock().await;
            if quote.used_by == Some(payment) {
                quote.used_by = None;
            }
        }
    }

    async fn ensure_fx_accounts(&self, currencies: [Currency; 2]) -> Result<(), FxError> {
        self.accounts.ensure(&self.ledger, &currencies).await.map_err(|error| match error {
            OpenError::Ledger(error) => FxError::Ledger(error),
            OpenError::Refused(error) => FxError::Internal(format!("FX accounts: {error}")),
        })
    }

    /// The conversion booked for `quote_id`, if it was executed outside a payment.
    pub fn conversion(&self, quote_id: &str) -> Option<ev::ConversionBooked> {
        self.conversions.get(quote_id).map(|c| c.clone())
    }

    /// Executes a live quote of `user` into `receiver`'s wallet: one linked batch
    /// (user's wallet A → FX A, FX B → receiver's wallet B, user's wallet A → fee A).
    /// Executing it again returns the same conversion.
    pub async fn execute(
        &self,
        user: u128,
        quote_id: &str,
        receiver: u128,
    ) -> Result<(QuoteState, ev::ConversionBooked), FxError> {
        let mut quote = self.quote_of(user, quote_id).await?;
        if quote.used_by.is_some() {
            return Err(FxError::FailedPrecondition("the quote was used by a payment".into()));
        }
        if let Some(done) = &quote.executed {
            if done.receiver_id != receiver.to_string() {
                return Err(FxError::FailedPrecondition("the quote was executed already, for another receiver".into()));
            }
            return Ok((quote.clone(), done.clone()));
        }
        quote.check_live(self.clock.now_ns())?;
        self.ensure_fx_accounts([quote.from, quote.to]).await?;
        self.users.ensure_wallet(receiver, quote.to).await?;
        let (from, to, a) = (quote.from, quote.to, quote.amounts);
        let transfers = booking(&quote.id, user, receiver, from, to, a);
        let ids: Vec<String> = transfers.iter().map(|t| t.id.0.to_string()).collect();
        let results = self.ledger.create_transfers(transfers.clone()).await?;
        let whose = |id: AccountId| {
            if id.0 == wallet_account_id(user, from) || id.0 == wallet_account_id(user, to) {
                Some("your")
            } else if id.0 == wallet_account_id(receiver, to) {
                Some("the receiver's")
            } else {
                None
            }
        };
        if let Some((transfer, error)) = first_refusal(&transfers, &results) {
            let reason = refusal_reason(transfer, error, whose);
            return Err(FxError::FailedPrecondition(format!("the conversion was refused: {reason}")));
        }
        let booked = ev::ConversionBooked {
            quote_id: quote.id.clone(),
            user_id: user.to_string(),
            receiver_id: receiver.to_string(),
            from_currency: from.code().into(),
            to_currency: to.code().into(),
            from_amount: a.from,
            to_amount: a.to,
            fee: a.fee,
            mid_rate: quote.mid.normalize().to_string(),
            rate: a.rate.normalize().to_string(),
            spread_bps: quote.spread_bps,
            rates_used: quote.rates_used.clone(),
            transfer_ids: ids,
            quoted_at_ns: quote.quoted_at,
            spread: a.spread,
        };
        {
            let mut heads = self.streams.lock().await;
            self.append(CONVERSIONS_STREAM, &mut heads.1, vec![FxKind::ConversionBooked(booked.clone())]).await?;
        }
        self.conversions.insert(booked.quote_id.clone(), booked.clone());
        quote.executed = Some(booked.clone());
        Ok((quote.clone(), booked))
    }

    /// Per currency: the FX account's balance (the position), the spread earned (the
    /// fx-revenue account) and the fees; and the spread valued in `value_in` at current
    /// mid rates.
    #[allow(clippy::type_complexity)]
    pub async fn position(
        &self,
        value_in: Currency,
    ) -> Result<(Vec<(Currency, i128, i128, i128)>, i128, Vec<String>), FxError> {
        // Every currency a rate names (the FX accounts of a currency exist once it was
        // converted), and any opened since.
        let mut currencies: Vec<Currency> = self.accounts.opened();
        for (base, quote, ..) in self.rates() {
            currencies.extend([base, quote].iter().filter_map(|c| Currency::parse(c).ok()));
        }
        currencies.sort_by_key(|c| c.code());
        currencies.dedup();
        let mut ids = Vec::new();
        for c in &currencies {
            for name in ["fx", "fx-revenue", "fee"] {
                ids.push(AccountId(platform_account(name, *c)));
            }
        }
        let accounts = crate::chart::lookup_accounts(&self.ledger, ids).await?;
        let balance = |a: &Option<ledger_core::domain::Account>| a.as_ref().map_or(0, |a| a.balance_credit_normal());
        let mut out = Vec::new();
        let mut total = 0;
        let mut used = Vec::new();
        for (i, c) in currencies.iter().enumerate() {
            if accounts[3 * i].is_none() {
                continue;
            }
            let (position, revenue, fees) =
                (balance(&accounts[3 * i]), balance(&accounts[3 * i + 1]), balance(&accounts[3 * i + 2]));
            let (value, rates) = self.value_at(revenue, *c, value_in, self.clock.now_ns())?;
            total += value;
            used.extend(rates);
            out.push((*c, position, revenue, fees));
        }
        out.sort_by_key(|(c, ..)| c.code());
        used.sort();
        used.dedup();
        Ok((out, total, used))
    }

    /// `minor` units of `from` in minor units of `to` at the mid rate at `at`, rounded
    /// up (limits compare what a payment is worth: never less than it is).
    pub fn value_up(&self, minor: u64, from: Currency, to: Currency, at: u64) -> Result<u64, RateError> {
        if from == to {
            // A currency in itself: the rate is 1 and nothing rounds (the risk rules value
            // every earlier payment of a user this way, most in the risk currency).
            return Ok(minor);
        }
        let (mid, _) = self.mid_at(from, to, at)?;
        whole(exact(minor, mid, from, to)?, RoundingStrategy::AwayFromZero)
    }

    /// `minor` units of `from` in minor units of `to` at the mid rate at `at`, rounded
    /// half to even (reports are statements of value, not payments).
    pub fn value_at(
        &self,
        minor: i128,
        from: Currency,
        to: Currency,
        at: u64,
    ) -> Result<(i128, Vec<String>), RateError> {
        let (mid, used) = self.mid_at(from, to, at)?;
        let value = Decimal::from_i128_with_scale(minor, 0)
            .checked_mul(mid)
            .and_then(|v| v.checked_mul(scale(from, to).ok()?))
            .ok_or(RateError::Overflow)?;
        Ok((
            value
                .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
                .to_i128()
                .ok_or(RateError::Overflow)?,
            used,
        ))
    }
}

/// The linked batch of a conversion: the user's wallet in `from` → FX `from`, FX `to`
/// → the receiver's wallet in `to`, and the fee from the user's wallet to the fee
/// account. Each transfer stays within one currency.
pub fn booking(
    quote_id: &str,
    user: u128,
    receiver: u128,
    from: Currency,
    to: Currency,
    a: Amounts,
) -> Vec<NewTransfer> {
    let id = |i: u8| TransferId(derive_id(&[b"ledger.fx.v1", quote_id.as_bytes(), &[i]]));
    let transfer = |i: u8, debit: u128, credit: u128, amount: u64, currency: Currency, linked: bool| NewTransfer {
        id: id(i),
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        amount: u128::from(amount),
        currency: Some(currency),
        code: FX_TRANSFER_CODE,
        metadata: format!("fx:{quote_id}"),
        linked,
        kind: TransferKind::Posted,
    };
    let mut transfers = vec![
        transfer(0, wallet_account_id(user, from), platform_account("fx", from), a.from, from, true),
        transfer(1, platform_account("fx", to), wallet_account_id(receiver, to), a.to, to, true),
        transfer(2, platform_account("fx", to), platform_account("fx-revenue", to), a.spread, to, true),
        transfer(3, wallet_account_id(user, from), platform_account("fee", from), a.fee, from, true),
    ];
    transfers.retain(|t| t.amount > 0);
    if let Some(last) = transfers.last_mut() {
        last.linked = false;
    }
    transfers
}

/// Shown amounts.
pub fn show(minor: u64, currency: Currency) -> String {
    format_amount(u128::from(minor), currency)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).expect("currency")
    }

    proptest! {
        /// `value_up`'s shortcut for a currency in itself answers what the general path
        /// answers at a mid rate of 1.
        #[test]
        fn a_currency_valued_in_itself_is_unchanged(minor in any::<u64>(), code in prop::sample::select(vec!["USD", "JPY", "BHD", "EUR"])) {
            let c = cur(code);
            let general = exact(minor, Decimal::ONE, c, c).and_then(|v| whole(v, RoundingStrategy::AwayFromZero));
            prop_assert_eq!(general, Ok(minor));
        }
    }

    #[test]
    fn amounts_follow_the_rounding_rule() {
        let (usd, jpy, bhd) = (cur("USD"), cur("JPY"), cur("BHD"));
        // 100.00 USD at 150 JPY/USD less 0.5 %: 14,925 JPY exactly.
        let a = quote_amounts(usd, jpy, Decimal::new(150, 0), 50, 0, Fixed::Sell(10_000)).expect("quote");
        assert_eq!((a.from, a.to, a.fee), (10_000, 14_925, 0));
        // Receiving 1,000 JPY needs ceil(1000 / 149.25 × 100) = 671 cents.
        let b = quote_amounts(usd, jpy, Decimal::new(150, 0), 50, 0, Fixed::Receive(1_000)).expect("quote");
        assert_eq!((b.from, b.to), (671, 1_000));
        // Exponent 3: 1.000 BHD at 2.65 USD/BHD, no spread, 1 % fee: 265 cents, fee 10 fils.
        let c = quote_amounts(bhd, usd, Decimal::new(265, 2), 0, 100, Fixed::Sell(1_000)).expect("quote");
        assert_eq!((c.from, c.to, c.fee), (1_000, 265, 10));
        assert_eq!(quote_amounts(jpy, usd, Decimal::new(66, 4), 0, 0, Fixed::Sell(1)), Err(RateError::TooSmall));
    }

    #[test]
    fn rates_are_direct_inverse_or_through_the_pivot_as_of_a_time() {
        let mut book = RateBook::default();
        let entry = |at, rate| RateEntry { at, rate, source: "test".into() };
        book.set("EUR", "USD", entry(10, Decimal::new(108, 2)));
        book.set("USD", "JPY", entry(10, Decimal::new(150, 0)));
        book.set("EUR", "USD", entry(20, Decimal::new(110, 2)));
        assert_eq!(book.mid("EUR", "USD", 15).expect("direct").0, Decimal::new(108, 2));
        assert_eq!(book.mid("EUR", "USD", 25).expect("later").0, Decimal::new(110, 2));
        assert_eq!(book.mid("USD", "EUR", 25).expect("inverse").0, Decimal::ONE / Decimal::new(110, 2));
        let (rate, used) = book.mid("EUR", "JPY", 25).expect("pivot");
        assert_eq!(rate, Decimal::new(165, 0));
        assert_eq!(used.len(), 2);
        assert!(book.mid("EUR", "USD", 5).is_err(), "no rate before the first");
        assert!(book.mid("EUR", "GBP", 25).is_err());
    }

    fn currency() -> impl Strategy<Value = Currency> {
        prop::sample::select(vec!["JPY", "USD", "EUR", "BHD", "KWD", "CLP", "GBP"]).prop_map(cur)
    }

    proptest! {
        /// For random rates and amounts: every currency balances, the rounding keeps
        /// less than one minor unit, and the FX position is the sum of the conversions.
        #[test]
        fn conversions_balance_per_currency_and_round_by_less_than_a_unit(
            conversions in prop::collection::vec(
                (currency(), currency(), 1u64..10_000_000_000, 1i64..100_000_000, 0u32..28, 0u32..300, 0u32..200, any::<bool>()),
                1..40,
            )
        ) {
            let mut debits: BTreeMap<&str, i128> = BTreeMap::new();
            let mut credits: BTreeMap<&str, i128> = BTreeMap::new();
            let mut position: BTreeMap<&str, i128> = BTreeMap::new();
            let mut balances: BTreeMap<u128, i128> = BTreeMap::new();
            let mut revenue: BTreeMap<&str, i128> = BTreeMap::new();
            let mut expected: BTreeMap<&str, i128> = BTreeMap::new();
            for (from, to, amount, mantissa, scale_digits, spread, fee_bps, sell) in conversions {
                if from == to {
                    continue;
                }
                let mid = Decimal::new(mantissa, scale_digits.min(12));
                let fixed = if sell { Fixed::Sell(amount) } else { Fixed::Receive(amount) };
                // Overflow or less than a unit: refused with a typed error, nothing booked.
                let Ok(a) = quote_amounts(from, to, mid, spread, fee_bps, fixed) else { continue };
                let rate = customer_rate(mid, spread);
                // Rounding: the fixed side is exact; the other within one unit, platform-favourable.
                match fixed {
                    Fixed::Sell(s) => {
                        prop_assert_eq!(a.from, s);
                        let exact_to = exact(a.from, rate, from, to).expect("exact");
                        let kept = exact_to - Decimal::from(a.to);
                        prop_assert!(kept >= Decimal::ZERO && kept < Decimal::ONE, "kept {}", kept);
                    }
                    Fixed::Receive(r) => {
                        prop_assert_eq!(a.to, r);
                        let worth = exact(a.from, rate, from, to).expect("exact");
                        prop_assert!(worth >= Decimal::from(a.to), "the amount sold buys what is received");
                        if a.from > 1 {
                            let less = exact(a.from - 1, rate, from, to).expect("exact");
                            prop_assert!(less < Decimal::from(a.to), "one unit less would not");
                        }
                    }
                }
                // The booking, applied to accounts whose currencies are known.
                let (user, receiver) = (7u128, 8u128);
                let currency_of: BTreeMap<u128, Currency> = [
                    (wallet_account_id(user, from), from),
                    (wallet_account_id(receiver, to), to),
                    (platform_account("fx", from), from),
                    (platform_account("fx", to), to),
                    (platform_account("fee", from), from),
                    (platform_account("fx-revenue", to), to),
                ]
                .into_iter()
                .collect();
                for t in booking("q", user, receiver, from, to, a) {
                    let currency = t.currency.expect("currency");
                    prop_assert_eq!(currency_of[&t.debit_account_id.0], currency);
                    prop_assert_eq!(currency_of[&t.credit_account_id.0], currency);
                    *debits.entry(currency.code()).or_default() += t.amount as i128;
                    *credits.entry(currency.code()).or_default() += t.amount as i128;
                    *balances.entry(t.debit_account_id.0).or_default() -= t.amount as i128;
                    *balances.entry(t.credit_account_id.0).or_default() += t.amount as i128;
                }
                for c in [from, to] {
                    position.insert(c.code(), balances.get(&platform_account("fx", c)).copied().unwrap_or(0));
                }
                // After every conversion, each currency's debits equal its credits.
                prop_assert_eq!(&debits, &credits);
                *expected.entry(from.code()).or_default() += i128::from(a.from);
                *expected.entry(to.code()).or_default() -= i128::from(a.to + a.spread);
                // The spread: what `from` is worth at mid, less what was paid, within a unit.
                let at_mid = exact(a.from, mid, from, to).expect("exact");
                let earned = Decimal::from(a.to + a.spread);
                prop_assert!(earned <= at_mid && at_mid < earned + Decimal::ONE, "spread {} at mid {}", a.spread, at_mid);
                *revenue.entry(to.code()).or_default() += i128::from(a.spread);
                prop_assert_eq!(
                    balances.get(&platform_account("fx-revenue", to)).copied().unwrap_or(0),
                    revenue[to.code()]
                );
            }
            prop_assert_eq!(&debits, &credits);
            // Every currency's accounts sum to zero: what left one account entered another.
            prop_assert_eq!(balances.values().sum::<i128>(), 0);
            expected.retain(|_, v| *v != 0);
            position.retain(|_, v| *v != 0);
            prop_assert_eq!(position, expected, "the FX position is the sum of the conversions");
        }
    }
}
