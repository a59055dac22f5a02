//! Payments: event-sourced sagas on `payment-{id}` streams, driven to a terminal state
//! by a driver task per open payment, through the ledger and the payment rails.
//!
//! Every step's outcome is an event. A rail step is recorded as started (with its
//! idempotency key and deadline) before the rail is called; a step with no answer by
//! its deadline, or found started after a restart, is "outcome unknown" and is left
//! only by asking the rail for its status (a rail that never received the key may then
//! be asked again with the same key). Ledger steps use transfer ids derived from the
//! payment and the step, so running one again after a crash is a no-op that returns
//! the original result. `next_action` is a pure function of the recorded events and
//! the clock: a restarted worker rebuilds each open payment and re-arms its timers
//! from the deadlines in its events.

mod activity;
mod driver;
mod error;
mod fold;
mod kinds;
pub mod list;
pub mod ops;
mod overlay;
mod present;
pub mod rails;
pub mod risk;
mod saga;
#[cfg(test)]
mod saga_model;
mod start;
mod store;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ledger_core::clock::Clock;
use ledger_core::domain::{AccountId, NewTransfer, TransferId, TransferKind};
use ledger_core::money::Currency;
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::payment_event::Kind as EventKind;
use prost::Message;
use tokio::sync::{Mutex, Notify};

use crate::chart::{self, derive_id, wallet_account_id, PlatformAccounts};
use crate::engine::{EventStore, Ledger};
use crate::fx::{Fx, QuoteState};
use crate::users::Users;
use crate::FieldError;
use activity::{Activity, Recent};
use rails::PaymentRail;
use risk::RiskConfig;
use saga::Payment;

pub use crate::chart::{platform_account, PAYMENT_TRANSFER_CODE, PLATFORM_ACCOUNT_CODE};
pub use error::PaymentsError;
pub use fold::{PaymentFold, FOLD_PAGE_EVENTS};
pub use kinds::{Decision, FinishStatus, Funding, PaymentKind, Step};
pub use present::{FxDetail, TransferContext, NOTE_DELETED};
pub use saga::{PaymentStep, PaymentView, RiskView};
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 64;
pub const NOTE_BYTES_MAX: usize = 140;
/// Reads of a sender's or an instrument's last day from the index (for the risk rules)
/// running at once; more wait their turn.
pub const LAST_DAY_READS_MAX: usize = 8;
/// Payments in a user's list (their latest).

#[derive(Clone, Copy, Debug)]
pub struct PaymentsConfig {
    pub risk: RiskConfig,
    /// How long a rail call may take before its outcome is unknown.
    pub rail_timeout: Duration,
    /// Fees in basis points of the amount (rounded up to a minor unit), paid by the sender.
    pub card_fee_bps: u64,
    pub digital_wallet_fee_bps: u64,
    pub bank_fee_bps: u64,
    /// This worker drives the payments whose id hashes to `partition.0` of `partition.1`.
    pub partition: (u32, u32),
    /// Finished payments kept in memory besides the open ones (the most recently
    /// finished or read); any other is read from its stream when a call needs it.
    pub finished_cached_max: usize,
}

impl Default for PaymentsConfig {
    fn default() -> PaymentsConfig {
        PaymentsConfig {
            risk: RiskConfig::default(),
            rail_timeout: Duration::from_secs(2),
            card_fee_bps: 290,
            digital_wallet_fee_bps: 100,
            bank_fee_bps: 0,
            partition: (0, 1),
            finished_cached_max: 10_000,
        }
    }
}

pub fn stream_name(id: u128) -> String {
    format!("payment-{id}")
}

/// The id of the payment `creator` makes with `key`: derived from them (keyed blake3,
/// 127 bits), so a retry finds its payment by its stream, and idempotency over the
/// whole history needs no row per payment in the index. Payments of earlier builds
/// have random ids, and rows in the index's `keys` table (see `store`).
pub(super) fn id_for_key(creator: u128, key: &str) -> u128 {
    let mut hasher = blake3::Hasher::new_derive_key("ledger payments 2026-12 payment id of (creator, idempotency key)");
    hasher.update(&creator.to_le_bytes());
    hasher.update(key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    (u128::from_le_bytes(bytes) >> 1).max(1)
}

/// Where the payments' index of a data directory lives.
pub fn index_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("payments").join("index.redb")
}

struct Entry {
    payment: Mutex<Payment>,
    wake: Notify,
    /// Notified after each step of its driver: callers waiting for the payment to settle.
    changed: Notify,
    driving: AtomicBool,
    /// When to ask the rail again about a pending step (in memory: after a restart the
    /// rail is asked at once).
    poll: std::sync::Mutex<(u64, u64)>,
}

/// What a new payment asks for.
#[derive(Clone, Debug)]
pub struct NewPayment {
    pub kind: &'static str,
    pub sender: u128,
    pub receiver: u128,
    pub currency: Currency,
    pub amount: u64,
    pub funding: String,
    pub instrument_id: String,
    pub note: String,
    /// A cross-currency payment executes this quote of the sender's.
    pub quote_id: String,
}

pub struct Payments {
    store: Arc<dyn EventStore>,
    ledger: Ledger,
    users: Arc<Users>,
    rail: Arc<dyn PaymentRail>,
    fx: Arc<Fx>,
    config: PaymentsConfig,
    payments: DashMap<u128, Arc<Entry>>,
    /// (creator, idempotency key) of the payments being created now: a second request
    /// with the key while the first is in flight is refused at once.
    claims: DashMap<(u128, String), u128>,
    /// The index on disk (see `store`): lists, idempotency keys, quotes, open payments,
    /// the risk rules' history.
    disk: Arc<store::PaymentStore>,
    /// Whether the index holds keys of payments with random ids (made by an earlier
    /// build), which a retry must look up; a fresh index never does.
    legacy_keys: bool,
    /// The index as it is read and written while the platform runs: the file and the
    /// rows not yet written to it (see `overlay`).
    rows: overlay::RowWriter,
    accounts: PlatformAccounts,
    activity: std::sync::Mutex<Activity>,
    /// Turns to read a key's last day for the risk rules from the index
    /// (`LAST_DAY_READS_MAX` at a time).
    last_day_reads: tokio::sync::Semaphore,
    /// Where the time is read: event stamps, reviews, risk windows, polling.
    clock: Arc<dyn Clock>,
    /// Counters for operators and the review queue's index.
    ops: ops::PaymentOps,
    /// Finished payments kept in `payments`, oldest first: past
    /// `config.finished_cached_max` the oldest are dropped from memory and read from
    /// their stream when asked for.
    finished: std::sync::Mutex<std::collections::VecDeque<u128>>,
}

/// How `create` answers: with the payment as recorded, or once it settles (at most
/// after the wait).
#[derive(Clone, Copy)]
enum Answer {
    Recorded,
    Settled(Duration),
}

impl Payments {
    /// Opens the payments over the index at `index_path` (see [`index_path`]), brought
    /// up to the log, and loads the open ones. Call [`Payments::start`] to drive them.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        store: Arc<dyn EventStore>,
        ledger: Ledger,
        users: Arc<Users>,
        rail: Arc<dyn PaymentRail>,
        fx: Arc<Fx>,
        config: PaymentsConfig,
        clock: Arc<dyn Clock>,
        index_path: &std::path::Path,
    ) -> Result<Payments, PaymentsError> {
        let disk = Arc::new(store::PaymentStore::open(index_path)?);
        let mut payments = Payments {
            store,
            ledger,
            users,
            rail,
            fx,
            config,
            payments: DashMap::new(),
            claims: DashMap::new(),
            rows: overlay::RowWriter::new(disk.clone()),
            disk,
            legacy_keys: true,
            accounts: PlatformAccounts::payments(),
            activity: std::sync::Mutex::new(Activity::new()),
            last_day_reads: tokio::sync::Semaphore::new(LAST_DAY_READS_MAX),
            clock,
            ops: ops::PaymentOps::default(),
            finished: std::sync::Mutex::new(std::collections::VecDeque::new()),
        };
        payments.catch_up_index()?;
        // Only a payment with a random id has a `keys` row, and none is made from now on.
        payments.legacy_keys = payments.disk.keys_held()? > 0;
        payments.load_open()?;
        Ok(payments)
    }

    /// The payment's entry: in memory, or read from its stream (and kept among the
    /// recently used finished ones).
    fn entry(&self, id: u128) -> Result<Arc<Entry>, PaymentsError> {
        if let Some(entry) = self.payments.get(&id) {
            return Ok(Arc::clone(entry.value()));
        }
        let stream = stream_name(id);
        if self.store.stream_head(&stream)?.is_none() {
            return Err(PaymentsError::NotFound("payment"));
        }
        // Read under the map's lock for this id: while no entry exists nobody appends to
        // the stream (every append goes through the one entry), so what is read is current.
        let entry = match self.payments.entry(id) {
            dashmap::Entry::Occupied(held) => Arc::clone(held.get()),
            dashmap::Entry::Vacant(vacant) => {
                let payment = load_payment(self.store.as_ref(), &stream)?;
                Arc::clone(vacant.insert(Arc::new(Entry::new(payment))).value())
            }
        };
        self.retire(id);
        Ok(entry)
    }

    /// Counts `id` among the finished payments kept in memory, and drops the oldest past
    /// `finished_cached_max`: only one that is finished and that nobody holds. The map's
    /// is then the only reference (a clone is only made under the map's lock, which
    /// `remove_if` holds), so a payment never has two entries at once: two refunds of
    /// one payment are still decided one after the other, under one lock.
    pub(super) fn retire(&self, id: u128) {
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        finished.push_back(id);
        // One look at each of the oldest past the bound; one still held goes to the back
        // and is looked at again later.
        for _ in 0..finished.len().saturating_sub(self.config.finished_cached_max) {
            let Some(oldest) = finished.pop_front() else { break };
            let dropped = self.payments.remove_if(&oldest, |_, entry| {
                Arc::strong_count(entry) == 1 && entry.payment.try_lock().is_ok_and(|p| p.finished.is_some())
            });
            if dropped.is_none() && self.payments.contains_key(&oldest) {
                finished.push_back(oldest);
            }
        }
    }

    /// Creates a payment (or returns the one this idempotency key already made),
    /// answered as recorded.
    pub async fn create(
        self: &Arc<Self>,
        created_by: u128,
        idempotency_key: &str,
        new: NewPayment,
    ) -> Result<PaymentView, PaymentsError> {
        self.create_answered(created_by, idempotency_key, new, Answer::Recorded).await
    }

    /// [`Payments::create`], answered once the payment settles or `wait` passes (see
    /// [`Payments::get_settled`]).
    pub async fn create_settled(
        self: &Arc<Self>,
        created_by: u128,
        idempotency_key: &str,
        new: NewPayment,
        wait: Duration,
    ) -> Result<PaymentView, PaymentsError> {
        self.create_answered(created_by, idempotency_key, new, Answer::Settled(wait)).await
    }

    async fn create_answered(
        self: &Arc<Self>,
        created_by: u128,
        idempotency_key: &str,
        new: NewPayment,
        answer: Answer,
    ) -> Result<PaymentView, PaymentsError> {
        if idempotency_key.is_empty() || idempotency_key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err(FieldError::new("idempotency_key", format!("1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes")).into());
        }
        if new.note.len() > NOTE_BYTES_MAX || new.note.chars().any(char::is_control) {
            return Err(
                FieldError::new("note", format!("at most {NOTE_BYTES_MAX} bytes, no control characters")).into()
            );
        }
        // The note enters the hash only as a digest keyed with its author's data key:
        // nothing in the log tells the note once the author is erased. A payment of a
        // build that hashed the note in clear is still matched by a retry (`legacy`).
        let note_digest = if new.note.is_empty() {
            String::new()
        } else {
            ledger_core::chain::to_hex(&self.users.keyed_digest(created_by, new.note.as_bytes()).await?)
        };
        let hash_of = |note: &str| {
            blake3::hash(
                format!(
                    "{}|{}|{}|{}|{}|{}|{}|{}|{}",
                    new.kind,
                    new.sender,
                    new.receiver,
                    new.currency.code(),
                    new.amount,
                    new.funding,
                    new.instrument_id,
                    note,
                    new.quote_id
                )
                .as_bytes(),
            )
        };
        let (request_hash, legacy) = (hash_of(&note_digest), hash_of(&new.note));
        let key = (created_by, idempotency_key.to_string());
        match self.claims.entry(key.clone()) {
            dashmap::Entry::Occupied(_) => {
                return Err(PaymentsError::Conflict("a request with this idempotency key is in progress; retry"))
            }
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert(0);
            }
        }
        let result = self.create_claimed(created_by, idempotency_key, (request_hash, legacy), new, answer).await;
        self.claims.remove(&key);
        result
    }

    /// `create` while it holds the claim of its idempotency key: the payment the key
    /// made already (its stream, at the id the key gives; or, for a payment of an
    /// earlier build, the one the index's `keys` row names, checked against it), or a
    /// new one.
    async fn create_claimed(
        self: &Arc<Self>,
        created_by: u128,
        idempotency_key: &str,
        (request_hash, legacy): (blake3::Hash, blake3::Hash),
        new: NewPayment,
        answer: Answer,
    ) -> Result<PaymentView, PaymentsError> {
        let id = id_for_key(created_by, idempotency_key);
        let made = if self.payments.contains_key(&id) || self.store.stream_head(&stream_name(id))?.is_some() {
            Some(id)
        } else if self.legacy_keys {
            self.rows.key(created_by, idempotency_key)?
        } else {
            None
        };
        if let Some(made) = made {
            match self.entry(made) {
                Ok(entry) => {
                    let payment = entry.payment.lock().await;
                    if payment.created_by() != created_by || payment.created.idempotency_key != idempotency_key {
                        return Err(PaymentsError::Corrupt(format!(
                            "payment {made} is not the one its creator's idempotency key names"
                        )));
                    }
                    let stored = payment.created.request_hash.as_slice();
                    if stored != request_hash.as_bytes() && stored != legacy.as_bytes() {
                        return Err(PaymentsError::AlreadyExists("idempotency_key was used for a different request"));
                    }
                    return match answer {
                        Answer::Recorded => self.shown(&payment).await,
                        Answer::Settled(wait) => {
                            drop(payment);
                            self.get_settled(made, None, wait).await
                        }
                    };
                }
                // Indexed before an append that then failed: the key is free.
                Err(PaymentsError::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        self.create_reserved(id, created_by, idempotency_key, request_hash, new, answer).await
    }

    async fn create_reserved(
        self: &Arc<Self>,
        id: u128,
        created_by: u128,
        idempotency_key: &str,
        request_hash: blake3::Hash,
        new: NewPayment,
        answer: Answer,
    ) -> Result<PaymentView, PaymentsError> {
        let quote = if new.quote_id.is_empty() {
            None
        } else {
            let quote = self.fx.take_quote(new.sender, &new.quote_id, id).await?;
            if quote.from != new.currency || quote.amounts.from != new.amount {
                self.fx.release_quote(&new.quote_id, id).await;
                return Err(PaymentsError::InvalidRequest("amount and currency: as in the quote, or empty"));
            }
            Some(quote)
        };
        let created = self
            .create_payment(id, created_by, idempotency_key, request_hash, new.clone(), quote.as_ref(), answer)
            .await;
        if created.is_err() && quote.is_some() {
            self.fx.release_quote(&new.quote_id, id).await;
        }
        created
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_payment(
        self: &Arc<Self>,
        id: u128,
        created_by: u128,
        idempotency_key: &str,
        request_hash: blake3::Hash,
        new: NewPayment,
        quote: Option<&QuoteState>,
        answer: Answer,
    ) -> Result<PaymentView, PaymentsError> {
        // Both wallets exist before money moves (opening is idempotent).
        if new.kind != "withdrawal" {
            self.users.ensure_wallet(new.receiver, quote.map_or(new.currency, |q| q.to)).await?;
        }
        if new.funding == "wallet" || new.kind == "withdrawal" {
            self.users.ensure_wallet(new.sender, new.currency).await?;
        }
        let fee = quote.map_or_else(|| self.fee(&new.funding, new.amount), |q| q.amounts.fee);
        if new.amount.checked_add(fee).is_none() {
            return Err(FieldError::new("amount", "too large with its fee").into());
        }
        // Personal data: sealed under its author's key, never written in clear.
        let sealed_note = if new.note.is_empty() {
            Vec::new()
        } else {
            self.users.seal_personal(created_by, new.note.as_bytes(), &present::note_aad(id)).await?
        };
        let created = ev::PaymentCreated {
            kind: new.kind.into(),
            funding: new.funding,
            sender_id: new.sender.to_string(),
            receiver_id: new.receiver.to_string(),
            currency: new.currency.code().into(),
            amount: new.amount,
            fee,
            instrument_id: new.instrument_id,
            created_by: created_by.to_string(),
            idempotency_key: idempotency_key.to_string(),
            request_hash: request_hash.as_bytes().to_vec(),
            note: String::new(),
            sealed_note,
            quote_id: new.quote_id,
            // Without a quote the event schema's FX fields are empty (and 0).
            to_currency: quote.map_or(String::new(), |q| q.to.code().to_string()),
            to_amount: quote.map_or(0, |q| q.amounts.to),
            spread: quote.map_or(0, |q| q.amounts.spread),
            rate: quote.map_or(String::new(), |q| q.amounts.rate.normalize().to_string()),
            mid_rate: quote.map_or(String::new(), |q| q.mid.normalize().to_string()),
        };
        let mut payment = Payment { id, ..Payment::default() };
        // A payment assessed as soon as it exists is assessed here, and both events go
        // in one append: one durable write fewer than the driver's separate step.
        let mut kinds = vec![EventKind::Created(created)];
        let now = self.clock.now_ns();
        let mut created_now = payment.clone();
        created_now.evolve(now, kinds[0].clone())?;
        let mut counted = None;
        if matches!(created_now.next_action(now), saga::Action::Assess) {
            let (assessed, recent) = self.assess(&created_now, now).await?;
            kinds.push(EventKind::RiskAssessed(assessed));
            counted = recent;
        }
        if let Err(error) = self.append(&mut payment, kinds).await {
            if let Some(recent) = counted {
                // Counted by the assessment, but never made.
                let mut activity = self.activity.lock().unwrap_or_else(|p| p.into_inner());
                activity.forget(created_now.sender(), &created_now.instrument_id, &recent, now);
            }
            return Err(error);
        }
        match answer {
            // Shown as recorded, before its driver moves it on.
            Answer::Recorded => {
                let shown = self.shown(&payment).await;
                self.payments.insert(id, Arc::new(Entry::new(payment)));
                self.drive(id);
                shown
            }
            // Shown once it settles: no view of the moment that nobody reads.
            Answer::Settled(wait) => {
                self.payments.insert(id, Arc::new(Entry::new(payment)));
                self.drive(id);
                self.get_settled(id, None, wait).await
            }
        }
    }

    /// The sender's fee for `amount` paid with `funding`: none from the wallet, nor for
    /// a request before its payer chooses how to pay (empty funding).
    fn fee(&self, funding: &str, amount: u64) -> u64 {
        let bps = match Funding::parse(funding) {
            Some(Funding::Card) => self.config.card_fee_bps,
            Some(Funding::DigitalWallet) => self.config.digital_wallet_fee_bps,
            Some(Funding::BankAccount) => self.config.bank_fee_bps,
            Some(Funding::Wallet) | None => 0,
        };
        (u128::from(amount) * u128::from(bps)).div_ceil(10_000) as u64
    }

    /// The payment, if `viewer` may see it (`None`: an admin).
    pub async fn get(&self, id: u128, viewer: Option<u128>) -> Result<PaymentView, PaymentsError> {
        let entry = self.entry(id)?;
        let payment = entry.payment.lock().await;
        visible(&payment, viewer)?;
        self.shown(&payment).await
    }

    /// [`Payments::get`], after waiting up to `wait` for the payment to settle: to finish,
    /// or to wait on a person (a review, a request's payer).
    pub async fn get_settled(
        &self,
        id: u128,
        viewer: Option<u128>,
        wait: Duration,
    ) -> Result<PaymentView, PaymentsError> {
        let entry = self.entry(id)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the look, so a step that ends meanwhile still wakes us.
            let changed = entry.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let payment = entry.payment.lock().await;
                visible(&payment, viewer)?;
                let settled = payment.finished.is_some()
                    || matches!(
                        payment.next_action(self.clock.now_ns()),
                        saga::Action::Idle | saga::Action::WaitUntil(_)
                    );
                if settled || tokio::time::Instant::now() >= deadline {
                    return self.shown(&payment).await;
                }
            }
            // A missed wake-up costs at most the rest of the wait, never a wrong answer.
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }

    /// The payer of a money request approves (with a funding source) or declines it.
    pub async fn answer_request(
        self: &Arc<Self>,
        id: u128,
        payer: u128,
        approve: bool,
        funding: String,
        instrument_id: String,
    ) -> Result<PaymentView, PaymentsError> {
        let entry = self.entry(id)?;
        let mut payment = entry.payment.lock().await;
        if !payment.is(PaymentKind::Request) || payment.sender() != payer {
            return Err(PaymentsError::NotFound("payment"));
        }
        if payment.answer.is_some() {
            return Err(PaymentsError::FailedPrecondition("the request was answered already".into()));
        }
        let fee = if approve {
            self.check_funding(payer, &funding, &instrument_id).await?;
            if funding == "wallet" {
                if let Some(currency) = payment.currency() {
                    self.users.ensure_wallet(payer, currency).await?;
                }
            }
            self.fee(&funding, payment.created.amount)
        } else {
            0
        };
        let answered = ev::RequestAnswered { approved: approve, funding, instrument_id, fee };
        self.append(&mut payment, vec![EventKind::RequestAnswered(answered)]).await?;
        let shown = self.shown(&payment).await?;
        drop(payment);
        self.drive(id);
        entry.wake.notify_one();
        Ok(shown)
    }

    /// Checks that `funding` is a method the user may pay with now.
    pub async fn check_funding(&self, user: u128, funding: &str, instrument_id: &str) -> Result<(), PaymentsError> {
        let Some(method) = Funding::parse(funding) else {
            return Err(FieldError::new("funding", "wallet, bank_account, card or digital_wallet").into());
        };
        if method == Funding::Wallet {
            if !instrument_id.is_empty() {
                return Err(FieldError::new("instrument_id", "not used with wallet funding").into());
            }
            return Ok(());
        }
        let instrument = self.users.funding_instrument(user, instrument_id).await?;
        if instrument.kind != funding {
            return Err(
                FieldError::new("instrument_id", format!("a {} instrument, not {funding}", instrument.kind)).into()
            );
        }
        Ok(())
    }

    /// An admin's review decision.
    pub async fn review(self: &Arc<Self>, id: u128, approve: bool) -> Result<PaymentView, PaymentsError> {
        let entry = self.entry(id)?;
        let mut payment = entry.payment.lock().await;
        if payment.public_status().0 != "requires_review" {
            return Err(PaymentsError::FailedPrecondition("the payment is not waiting for a review".into()));
        }
        let decided = ev::ReviewDecided { approved: approve, by: "admin".into() };
        self.append(&mut payment, vec![EventKind::ReviewDecided(decided)]).await?;
        let shown = self.shown(&payment).await?;
        drop(payment);
        entry.wake.notify_one();
        self.drive(id);
        Ok(shown)
    }

    /// Refunds a completed payment between users, fully or partly, into the sender's
    /// wallet. `by`: the receiver (a user id) or "admin".
    pub async fn refund(
        &self,
        id: u128,
        by_user: Option<u128>,
        refund_id: &str,
        amount: Option<u64>,
    ) -> Result<PaymentView, PaymentsError> {
        if refund_id.is_empty() || refund_id.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err(FieldError::new("refund_id", format!("1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes")).into());
        }
        let entry = self.entry(id)?;
        let mut payment = entry.payment.lock().await;
        if let Some(user) = by_user {
            if payment.receiver() != user {
                return Err(if payment.sender() == user {
                    PaymentsError::PermissionDenied("only the receiver (or an admin) refunds a payment")
                } else {
                    PaymentsError::NotFound("payment")
                });
            }
        }
        if let Some(index) = payment.refunds.iter().position(|r| r.refund_id == refund_id) {
            // A retry of the same refund answers its result; the same id for another
            // amount is a different request, refused as a reused idempotency key is.
            // Without an amount the request meant "the rest": it matches a refund that
            // refunded all that was left.
            let booked = &payment.refunds[index];
            let same = match amount {
                Some(amount) => amount == booked.amount,
                None => payment.refunds[..=index].iter().map(|r| r.amount).sum::<u64>() == payment.created.amount,
            };
            if !same {
                return Err(PaymentsError::AlreadyExists("refund_id was used for a refund of another amount"));
            }
            return self.shown(&payment).await;
        }
        if !matches!(payment.kind, Some(PaymentKind::Send | PaymentKind::Request)) {
            return Err(PaymentsError::FailedPrecondition("only payments between users are refunded".into()));
        }
        if !payment.created.quote_id.is_empty() {
            return Err(PaymentsError::FailedPrecondition(
                "a cross-currency payment is not refunded: the receiver sends the money back (at a new quote)".into(),
            ));
        }
        if payment.finished.as_ref().is_none_or(|f| f.status != FinishStatus::Completed) {
            return Err(PaymentsError::FailedPrecondition("only a completed payment is refunded".into()));
        }
        let left = payment.created.amount - payment.refunded();
        let amount = amount.unwrap_or(left);
        if amount == 0 || amount > left {
            return Err(FieldError::new(
                "amount",
                format!("between 0 and what is left to refund ({left} minor units), exclusive of 0"),
            )
            .into());
        }
        let currency = payment.currency().ok_or_else(|| PaymentsError::Corrupt("payment currency".into()))?;
        let transfer = NewTransfer {
            id: TransferId(derive_id(&[b"ledger.refund.v1", &id.to_le_bytes(), refund_id.as_bytes()])),
            debit_account_id: AccountId(wallet_account_id(payment.receiver(), currency)),
            credit_account_id: AccountId(wallet_account_id(payment.sender(), currency)),
            amount: u128::from(amount),
            currency: Some(currency),
            code: PAYMENT_TRANSFER_CODE,
            metadata: format!("refund:{id}"),
            linked: false,
            kind: TransferKind::Posted,
        };
        let transfer_id = transfer.id.0.to_string();
        let results = self.ledger.create_transfers(vec![transfer.clone()]).await?;
        match results.first() {
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                let (receiver, sender) = (transfer.debit_account_id, transfer.credit_account_id);
                let whose = |account: AccountId| match account {
                    a if a == receiver => Some("the receiver's"),
                    a if a == sender => Some("the sender's"),
                    _ => None,
                };
                let reason = chart::refusal_reason(&transfer, error, whose);
                return Err(PaymentsError::FailedPrecondition(format!("the refund was refused: {reason}")));
            }
            None => return Err(PaymentsError::Internal("no result".into())),
        }
        let booked = ev::RefundBooked {
            refund_id: refund_id.into(),
            amount,
            by: by_user.map_or("admin".into(), |u| u.to_string()),
            transfer_id,
        };
        self.append(&mut payment, vec![EventKind::RefundBooked(booked)]).await?;
        self.shown(&payment).await
    }
}

impl Entry {
    fn new(payment: Payment) -> Entry {
        Entry {
            payment: Mutex::new(payment),
            wake: Notify::new(),
            changed: Notify::new(),
            driving: AtomicBool::new(false),
            poll: std::sync::Mutex::new((0, 0)),
        }
    }

    /// Ask again later: 50 ms, doubling up to 2 s.
    fn back_off(&self, now_ns: u64) {
        let mut poll = self.poll.lock().unwrap_or_else(|p| p.into_inner());
        let delay = if poll.1 == 0 { 50_000_000 } else { (poll.1 * 2).min(2_000_000_000) };
        *poll = (now_ns + delay, delay);
    }

    fn reset_poll(&self) {
        *self.poll.lock().unwrap_or_else(|p| p.into_inner()) = (0, 0);
    }
}

/// Whether the worker of `partition` (index, count) drives payment `id`.
pub fn owns(partition: (u32, u32), id: u128) -> bool {
    let (index, count) = partition;
    count <= 1 || (id % u128::from(count)) as u32 == index
}

fn event_type(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Created(_) => "PaymentCreated",
        EventKind::RiskAssessed(_) => "PaymentRiskAssessed",
        EventKind::RequestAnswered(_) => "PaymentRequestAnswered",
        EventKind::StepStarted(_) => "PaymentStepStarted",
        EventKind::StepSucceeded(_) => "PaymentStepSucceeded",
        EventKind::StepFailed(_) => "PaymentStepFailed",
        EventKind::StepOutcomeUnknown(_) => "PaymentStepOutcomeUnknown",
        EventKind::ReviewDecided(_) => "PaymentReviewDecided",
        EventKind::Finished(_) => "PaymentFinished",
        EventKind::RefundBooked(_) => "PaymentRefundBooked",
    }
}

/// A payment folded from its whole stream.
fn load_payment(store: &dyn EventStore, stream: &str) -> Result<Payment, PaymentsError> {
    let mut payment = Payment::default();
    crate::stream::load(store, stream, 1_024, |record| {
        let event = ev::PaymentEvent::decode(record.payload.as_slice())
            .map_err(|e| PaymentsError::Corrupt(format!("{} revision {}: {e}", record.stream, record.revision)))?;
        payment.id = event
            .payment_id
            .parse()
            .map_err(|_| PaymentsError::Corrupt(format!("{}: bad payment id", record.stream)))?;
        payment.revision = Some(record.revision);
        match event.kind {
            Some(kind) => payment.evolve(event.timestamp_ns, kind),
            None => Ok(()),
        }
    })?;
    Ok(payment)
}

/// A payment is seen by its parties and by admins (`viewer` `None`); to anyone else it
/// is as unknown as a missing one.
fn visible(payment: &Payment, viewer: Option<u128>) -> Result<(), PaymentsError> {
    match viewer {
        Some(user) if payment.sender() != user && payment.receiver() != user => Err(PaymentsError::NotFound("payment")),
        _ => Ok(()),
    }
}
