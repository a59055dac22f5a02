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

pub mod grpc;
pub mod rails;
pub mod risk;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ledger_core::domain::{AccountCommand, AccountId, NewAccount, NewTransfer, Outcome, TransferId, TransferKind};
use ledger_core::money::{format_amount, Currency};
use ledger_engine::clock::now_ns;
use ledger_engine::store::{Direction, EventData, EventStore, EventStoreExt, ExpectedRevision, Revision};
use ledger_engine::writer::Ledger;
use ledger_proto::api::v1 as wire;
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::payment_event::Kind as EventKind;
use prost::Message;
use tokio::sync::{Mutex, Notify};
use tonic::Status;

use crate::convert;
use crate::users::{wallet_account_id, Users};
use rails::{PaymentRail, RailOperation, RailStatus};
use risk::{RiskConfig, RiskInput};

/// Ledger account code of the platform's accounts (fees, clearing, external).
pub const PLATFORM_ACCOUNT_CODE: u16 = 3000;
/// Ledger transfer code of payment movements.
pub const PAYMENT_TRANSFER_CODE: u16 = 2000;
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 64;
pub const NOTE_BYTES_MAX: usize = 140;
const FUNDINGS: [&str; 4] = ["wallet", "bank_account", "card", "digital_wallet"];
const RAILS: [&str; 3] = ["bank_account", "card", "digital_wallet"];

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
        }
    }
}

pub fn stream_name(id: u128) -> String {
    format!("payment-{id}")
}

/// A ledger id (never 0 or 2^128-1) derived from its parts.
pub fn derive_id(parts: &[&[u8]]) -> u128 {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let bytes: [u8; 16] = hasher.finalize().as_bytes()[..16].try_into().unwrap_or([1; 16]);
    u128::from_le_bytes(bytes).clamp(1, u128::MAX - 1)
}

/// A platform account: `fee`, `clearing:{rail}`, `external:{rail}` per currency.
pub fn platform_account(name: &str, currency: Currency) -> u128 {
    derive_id(&[b"ledger.platform.v1", name.as_bytes(), currency.code().as_bytes()])
}

fn transfer_id(payment: u128, step: &str, index: usize) -> u128 {
    derive_id(&[b"ledger.payment.v1", &payment.to_le_bytes(), step.as_bytes(), &(index as u64).to_le_bytes()])
}

fn is_rail_step(step: &str) -> bool {
    matches!(step, "authorize" | "capture" | "void_auth" | "collect" | "payout" | "rail_refund")
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum StepState {
    Started { key: String, deadline_ns: u64 },
    Succeeded(String),
    Failed(String),
    Unknown,
}

/// A payment, folded from its events.
#[derive(Clone, Debug, Default)]
pub struct Payment {
    id: u128,
    revision: Option<Revision>,
    last_ns: u64,
    created: ev::PaymentCreated,
    created_ns: u64,
    funding: String,
    instrument_id: String,
    fee: u64,
    answer: Option<bool>,
    risk: Option<ev::RiskAssessed>,
    review: Option<ev::ReviewDecided>,
    steps: HashMap<String, StepState>,
    finished: Option<ev::PaymentFinished>,
    refunds: Vec<ev::RefundBooked>,
    history: Vec<wire::PaymentStep>,
    transfer_ids: Vec<String>,
}

/// What the driver does next, decided from the events and the clock alone.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    /// Terminal, or waiting for a person with no deadline (a request's payer).
    Idle,
    WaitUntil(u64),
    Assess,
    ReviewTimedOut,
    Rail(&'static str),
    Query(&'static str),
    Ledger(&'static str),
    Finish(&'static str, String),
}

const GATE: &str = "review";

impl Payment {
    fn sender(&self) -> u128 {
        self.created.sender_id.parse().unwrap_or(0)
    }

    fn receiver(&self) -> u128 {
        self.created.receiver_id.parse().unwrap_or(0)
    }

    fn currency(&self) -> Option<Currency> {
        Currency::parse(&self.created.currency).ok()
    }

    fn refunded(&self) -> u64 {
        self.refunds.iter().map(|r| r.amount).sum()
    }

    fn step(&self, step: &str) -> Option<&StepState> {
        self.steps.get(step)
    }

    fn succeeded(&self, step: &str) -> bool {
        matches!(self.step(step), Some(StepState::Succeeded(_)))
    }

    fn note(&mut self, at: u64, step: &str, outcome: &str, detail: String) {
        self.history.push(wire::PaymentStep { at_ns: at, step: step.into(), outcome: outcome.into(), detail });
    }

    fn evolve(&mut self, at: u64, kind: EventKind) {
        self.last_ns = self.last_ns.max(at);
        match kind {
            EventKind::Created(c) => {
                self.created_ns = at;
                self.funding = c.funding.clone();
                self.instrument_id = c.instrument_id.clone();
                self.fee = c.fee;
                self.created = c;
                self.note(at, "created", "created", String::new());
            }
            EventKind::RiskAssessed(r) => {
                self.note(at, "risk", &r.decision, format!("score {}: {}", r.score, r.reasons.join(", ")));
                self.risk = Some(r);
            }
            EventKind::RequestAnswered(a) => {
                if a.approved {
                    self.funding = a.funding.clone();
                    self.instrument_id = a.instrument_id.clone();
                    self.fee = a.fee;
                }
                self.note(at, "request", if a.approved { "approved" } else { "declined" }, a.funding.clone());
                self.answer = Some(a.approved);
            }
            EventKind::StepStarted(s) => {
                self.note(at, &s.step, "started", String::new());
                self.steps.insert(s.step, StepState::Started { key: s.idempotency_key, deadline_ns: s.deadline_ns });
            }
            EventKind::StepSucceeded(s) => {
                if !is_rail_step(&s.step) {
                    self.transfer_ids.extend(s.reference.split(',').filter(|r| !r.is_empty()).map(str::to_string));
                }
                self.note(at, &s.step, "succeeded", s.reference.clone());
                self.steps.insert(s.step, StepState::Succeeded(s.reference));
            }
            EventKind::StepFailed(s) => {
                self.note(at, &s.step, "failed", s.reason.clone());
                self.steps.insert(s.step, StepState::Failed(s.reason));
            }
            EventKind::StepOutcomeUnknown(s) => {
                self.note(at, &s.step, "outcome_unknown", String::new());
                self.steps.insert(s.step, StepState::Unknown);
            }
            EventKind::ReviewDecided(r) => {
                self.note(at, GATE, if r.approved { "approved" } else { "rejected" }, r.by.clone());
                self.review = Some(r);
            }
            EventKind::Finished(f) => {
                self.note(at, "finished", &f.status, f.reason.clone());
                self.finished = Some(f);
            }
            EventKind::RefundBooked(r) => {
                self.note(at, "refund", "succeeded", format!("{} by {}", r.amount, r.by));
                self.transfer_ids.push(r.transfer_id.clone());
                self.refunds.push(r);
            }
        }
    }

    /// The happy path's steps, in order, with the review gate where a review holds it.
    fn plan(&self) -> Vec<&'static str> {
        let review = self.risk.as_ref().is_some_and(|r| r.decision == "review");
        if !self.created.quote_id.is_empty() {
            // Cross-currency, from the wallet: nothing is held during a review; the
            // conversion and the payment are one linked commit once allowed.
            return vec![GATE, "fx_direct"];
        }
        match (self.created.kind.as_str(), self.funding.as_str()) {
            ("withdrawal", _) => vec!["hold", GATE, "payout", "settle_hold"],
            (_, "wallet") if review => vec!["hold", GATE, "post_hold"],
            (_, "wallet") => vec!["direct"],
            (_, "card") => vec!["authorize", GATE, "capture", "book_collect", "book_payout"],
            _ => vec![GATE, "collect", "book_collect", "book_payout"],
        }
    }

    fn next_action(&self, now: u64) -> Action {
        if self.finished.is_some() {
            return Action::Idle;
        }
        if self.created.kind == "request" {
            match self.answer {
                None => return Action::Idle,
                Some(false) => return Action::Finish("cancelled", "declined_by_payer".into()),
                Some(true) => {}
            }
        }
        let Some(risk) = &self.risk else { return Action::Assess };
        if risk.decision == "block" {
            return Action::Finish("failed", format!("blocked: {}", risk.reasons.join(", ")));
        }
        for step in self.plan() {
            if step == GATE {
                if risk.decision != "review" {
                    continue;
                }
                match &self.review {
                    Some(r) if r.approved => continue,
                    Some(r) if r.by == "timeout" => return self.unwind("cancelled", "review_timed_out".into()),
                    Some(_) => return self.unwind("failed", "rejected_in_review".into()),
                    None if now >= risk.review_deadline_ns => return Action::ReviewTimedOut,
                    None => return Action::WaitUntil(risk.review_deadline_ns),
                }
            }
            match self.step(step) {
                Some(StepState::Succeeded(_)) => continue,
                Some(StepState::Failed(reason)) if step == "book_payout" => {
                    return self.compensate(format!("compensated: {reason}"));
                }
                Some(StepState::Failed(reason)) => return self.unwind("failed", reason.clone()),
                Some(StepState::Started { .. } | StepState::Unknown) => return Action::Query(step),
                None if is_rail_step(step) => return Action::Rail(step),
                None => return Action::Ledger(step),
            }
        }
        Action::Finish("completed", String::new())
    }

    /// Releases what is held (a wallet hold, a card authorization), then finishes.
    fn unwind(&self, status: &'static str, reason: String) -> Action {
        let mut undo = Vec::new();
        if self.succeeded("hold") {
            undo.push("void_hold");
        }
        if self.succeeded("authorize") && !self.succeeded("capture") {
            undo.push("void_auth");
        }
        self.run_then_finish(&undo, status, reason)
    }

    /// Gives collected money back: the rail refunds the sender and the collection's
    /// booking is reversed, so the clearing account is back to zero.
    fn compensate(&self, reason: String) -> Action {
        self.run_then_finish(&["rail_refund", "book_reverse_collect"], "failed", reason)
    }

    fn run_then_finish(&self, steps: &[&'static str], status: &'static str, reason: String) -> Action {
        for &step in steps {
            match self.step(step) {
                Some(StepState::Succeeded(_)) => continue,
                Some(StepState::Failed(why)) => {
                    return Action::Finish("failed", format!("{reason}; {step} failed: {why}: needs an operator"))
                }
                Some(StepState::Started { .. } | StepState::Unknown) => return Action::Query(step),
                None if is_rail_step(step) => return Action::Rail(step),
                None => return Action::Ledger(step),
            }
        }
        Action::Finish(status, reason)
    }

    fn public_status(&self) -> (&'static str, String) {
        if let Some(f) = &self.finished {
            let status = match f.status.as_str() {
                "completed" if self.refunded() > 0 && self.refunded() >= self.created.amount => "refunded",
                "completed" if self.refunded() > 0 => "partially_refunded",
                "completed" => "completed",
                "cancelled" => "cancelled",
                _ => "failed",
            };
            return (status, f.reason.clone());
        }
        if self.created.kind == "request" && self.answer.is_none() {
            return ("created", String::new());
        }
        match &self.risk {
            None => ("created", String::new()),
            Some(r) if r.decision == "review" && self.review.is_none() => ("requires_review", String::new()),
            Some(_) => ("processing", String::new()),
        }
    }

    fn state(&self) -> String {
        match self.next_action(now_ns()) {
            Action::Idle if self.finished.is_none() => "awaiting_payer".into(),
            Action::Idle => "finished".into(),
            Action::WaitUntil(_) => "in_review".into(),
            Action::Assess => "assessing_risk".into(),
            Action::ReviewTimedOut => "review_timing_out".into(),
            Action::Query(step) if self.step(step) == Some(&StepState::Unknown) => format!("outcome_unknown:{step}"),
            Action::Query(step) => format!("awaiting_rail:{step}"),
            Action::Rail(step) | Action::Ledger(step) => format!("next:{step}"),
            Action::Finish(status, _) => format!("finishing:{status}"),
        }
    }

    pub fn to_wire(&self) -> wire::Payment {
        let currency = self.currency();
        let show = |v: u64| currency.map(|c| format_amount(u128::from(v), c)).unwrap_or_default();
        let (status, reason) = self.public_status();
        let risk = self.risk.clone().unwrap_or_default();
        wire::Payment {
            payment_id: self.id.to_string(),
            kind: self.created.kind.clone(),
            status: status.into(),
            reason,
            state: self.state(),
            funding: self.funding.clone(),
            sender_id: self.created.sender_id.clone(),
            receiver_id: self.created.receiver_id.clone(),
            amount: show(self.created.amount),
            fee: show(self.fee),
            currency: self.created.currency.clone(),
            refunded: show(self.refunded()),
            created_at_ns: self.created_ns,
            updated_at_ns: self.last_ns,
            risk_score: risk.score,
            risk_decision: risk.decision,
            risk_reasons: risk.reasons,
            transfer_ids: self.transfer_ids.clone(),
            steps: self.history.clone(),
            receive_amount: Currency::parse(&self.created.to_currency)
                .map(|c| format_amount(u128::from(self.created.to_amount), c))
                .unwrap_or_default(),
            receive_currency: self.created.to_currency.clone(),
        }
    }
}

struct Entry {
    payment: Mutex<Payment>,
    wake: Notify,
    driving: AtomicBool,
    /// When to ask the rail again about a pending step (in memory: after a restart the
    /// rail is asked at once).
    poll: std::sync::Mutex<(u64, u64)>,
}

/// What the risk rules need to know of earlier payments.
#[derive(Default)]
struct Activity {
    by_user: HashMap<u128, Vec<(u64, u64)>>,
    by_instrument: HashMap<String, Vec<(u64, u64)>>,
    payees: HashSet<(u128, u128)>,
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
    fx: Arc<crate::fx::Fx>,
    config: PaymentsConfig,
    payments: DashMap<u128, Arc<Entry>>,
    keys: DashMap<(u128, String), u128>,
    platform_open: DashMap<Currency, ()>,
    activity: std::sync::Mutex<Activity>,
}

impl Payments {
    /// Rebuilds every payment from its stream. Call [`Payments::start`] to drive them.
    pub fn open(
        store: Arc<dyn EventStore>,
        ledger: Ledger,
        users: Arc<Users>,
        rail: Arc<dyn PaymentRail>,
        fx: Arc<crate::fx::Fx>,
        config: PaymentsConfig,
    ) -> Result<Payments, String> {
        let payments = Payments {
            store,
            ledger,
            users,
            rail,
            fx,
            config,
            payments: DashMap::new(),
            keys: DashMap::new(),
            platform_open: DashMap::new(),
            activity: std::sync::Mutex::new(Activity::default()),
        };
        for stream in payments.store.stream_names("payment-").map_err(|e| e.to_string())? {
            let mut payment = Payment::default();
            let mut from = 0;
            loop {
                let records =
                    payments.store.read_stream(&stream, from, Direction::Forwards, 1_024).map_err(|e| e.to_string())?;
                let Some(last) = records.last() else { break };
                from = last.revision + 1;
                for record in &records {
                    let event = ev::PaymentEvent::decode(record.payload.as_slice())
                        .map_err(|e| format!("{} revision {}: {e}", record.stream, record.revision))?;
                    payment.id = event.payment_id.parse().map_err(|_| format!("{}: bad payment id", record.stream))?;
                    payment.revision = Some(record.revision);
                    if let Some(kind) = event.kind {
                        payment.evolve(event.timestamp_ns, kind);
                    }
                }
            }
            payments.index(&payment);
            payments.payments.insert(payment.id, Arc::new(Entry::new(payment)));
        }
        tracing::info!(payments = payments.payments.len(), "payments rebuilt from the log");
        Ok(payments)
    }

    fn index(&self, payment: &Payment) {
        let created_by: u128 = payment.created.created_by.parse().unwrap_or(0);
        self.keys.insert((created_by, payment.created.idempotency_key.clone()), payment.id);
        let mut activity = self.activity.lock().unwrap_or_else(|p| p.into_inner());
        // A blocked payment counts as an attempt, but moved no money.
        let blocked = payment.risk.as_ref().is_some_and(|r| r.decision == "block");
        let amount = if blocked { 0 } else { payment.created.amount };
        activity.by_user.entry(payment.sender()).or_default().push((payment.created_ns, amount));
        if !payment.instrument_id.is_empty() {
            activity.by_instrument.entry(payment.instrument_id.clone()).or_default().push((payment.created_ns, amount));
        }
        if payment.finished.as_ref().is_some_and(|f| f.status == "completed") {
            activity.payees.insert((payment.sender(), payment.receiver()));
        }
    }

    /// Starts a driver for every open payment of this worker's partition.
    pub fn start(self: &Arc<Self>) {
        let open: Vec<u128> = self.payments.iter().map(|e| *e.key()).collect();
        for id in open {
            self.drive(id);
        }
    }

    fn mine(&self, id: u128) -> bool {
        owns(self.config.partition, id)
    }

    fn drive(self: &Arc<Self>, id: u128) {
        let Some(entry) = self.payments.get(&id).map(|e| e.clone()) else { return };
        if !self.mine(id) {
            return;
        }
        if entry.driving.swap(true, Ordering::AcqRel) {
            entry.wake.notify_one();
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                match this.step(&entry).await {
                    Ok(true) => backoff = Duration::from_millis(50),
                    Ok(false) => break,
                    Err(error) => {
                        tracing::warn!(payment = %id, %error, "payment step failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = entry.wake.notified() => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            entry.driving.store(false, Ordering::Release);
        });
    }

    /// Appends payment events durably, then folds them in.
    async fn append(&self, payment: &mut Payment, kinds: Vec<EventKind>) -> Result<(), Status> {
        let mut events = Vec::with_capacity(kinds.len());
        let mut stamped = Vec::with_capacity(kinds.len());
        let mut at = payment.last_ns;
        for kind in kinds {
            at = now_ns().max(at + 1);
            let event =
                ev::PaymentEvent { payment_id: payment.id.to_string(), timestamp_ns: at, kind: Some(kind.clone()) };
            events.push(EventData { event_type: event_type(&kind).into(), payload: event.encode_to_vec() });
            stamped.push((at, kind));
        }
        let expected = match payment.revision {
            Some(revision) => ExpectedRevision::Exact(revision),
            None => ExpectedRevision::NoStream,
        };
        let outcome =
            self.store.append(&stream_name(payment.id), expected, events).await.map_err(convert::store_error)?;
        payment.revision = outcome.last_revision;
        for (at, kind) in stamped {
            payment.evolve(at, kind);
        }
        Ok(())
    }

    /// One step of a payment's saga. `Ok(false)`: nothing to do until woken.
    async fn step(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<bool, Status> {
        let now = now_ns();
        let mut payment = entry.payment.lock().await;
        let action = payment.next_action(now);
        match action {
            Action::Idle if payment.finished.is_some() => Ok(false),
            Action::Idle => {
                drop(payment);
                entry.wake.notified().await;
                Ok(true)
            }
            Action::WaitUntil(deadline) => {
                drop(payment);
                let wait = Duration::from_nanos(deadline.saturating_sub(now_ns()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = entry.wake.notified() => {}
                }
                Ok(true)
            }
            Action::Assess => {
                let assessed = self.assess(&payment, now).await;
                let blocked = assessed.decision == "block";
                self.append(&mut payment, vec![EventKind::RiskAssessed(assessed)]).await?;
                if blocked {
                    let mut activity = self.activity.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(list) = activity.by_user.get_mut(&payment.sender()) {
                        for entry in list.iter_mut().filter(|(t, _)| *t == payment.created_ns) {
                            entry.1 = 0;
                        }
                    }
                }
                Ok(true)
            }
            Action::ReviewTimedOut => {
                let decided = ev::ReviewDecided { approved: false, by: "timeout".into() };
                self.append(&mut payment, vec![EventKind::ReviewDecided(decided)]).await?;
                Ok(true)
            }
            Action::Finish(status, reason) => {
                let finished = ev::PaymentFinished { status: status.into(), reason };
                self.append(&mut payment, vec![EventKind::Finished(finished)]).await?;
                if status == "completed" {
                    let mut activity = self.activity.lock().unwrap_or_else(|p| p.into_inner());
                    activity.payees.insert((payment.sender(), payment.receiver()));
                }
                Ok(true)
            }
            Action::Ledger(step) => {
                let outcome = self.ledger_step(&payment, step).await?;
                let kind = match outcome {
                    Ok(ids) => EventKind::StepSucceeded(ev::StepSucceeded { step: step.into(), reference: ids }),
                    Err(reason) => EventKind::StepFailed(ev::StepFailed { step: step.into(), reason }),
                };
                self.append(&mut payment, vec![kind]).await?;
                Ok(true)
            }
            Action::Rail(step) => {
                let key = format!("{}:{step}", payment.id);
                let deadline_ns = now + self.config.rail_timeout.as_nanos() as u64;
                let started = ev::StepStarted { step: step.into(), idempotency_key: key, deadline_ns };
                self.append(&mut payment, vec![EventKind::StepStarted(started)]).await?;
                let operation = self.rail_operation(&payment, step);
                drop(payment);
                let reply = tokio::time::timeout(self.config.rail_timeout, self.rail.execute(operation)).await;
                let mut payment = entry.payment.lock().await;
                match reply {
                    Ok(Ok(status)) => self.rail_answered(entry, &mut payment, step, status).await?,
                    Ok(Err(_)) | Err(_) => {
                        let unknown = ev::StepOutcomeUnknown { step: step.into() };
                        self.append(&mut payment, vec![EventKind::StepOutcomeUnknown(unknown)]).await?;
                    }
                }
                Ok(true)
            }
            Action::Query(step) => {
                let poll_at = entry.poll.lock().unwrap_or_else(|p| p.into_inner()).0;
                if now < poll_at {
                    drop(payment);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_nanos(poll_at - now)) => {}
                        _ = entry.wake.notified() => {}
                    }
                    return Ok(true);
                }
                let key = format!("{}:{step}", payment.id);
                drop(payment);
                let reply = tokio::time::timeout(self.config.rail_timeout, self.rail.status(&key)).await;
                let mut payment = entry.payment.lock().await;
                if payment.next_action(now_ns()) != Action::Query(step) {
                    return Ok(true);
                }
                match reply {
                    Ok(Ok(RailStatus::NotFound)) => {
                        // The rail never got it: running it again under the same key is safe.
                        payment.steps.remove(step);
                    }
                    Ok(Ok(status)) => self.rail_answered(entry, &mut payment, step, status).await?,
                    Ok(Err(_)) | Err(_) => entry.back_off(),
                }
                Ok(true)
            }
        }
    }

    async fn rail_answered(
        &self,
        entry: &Entry,
        payment: &mut Payment,
        step: &str,
        status: RailStatus,
    ) -> Result<(), Status> {
        match status {
            RailStatus::Succeeded(reference) => {
                entry.reset_poll();
                let done = ev::StepSucceeded { step: step.into(), reference };
                self.append(payment, vec![EventKind::StepSucceeded(done)]).await
            }
            RailStatus::Failed(reason) => {
                entry.reset_poll();
                let failed = ev::StepFailed { step: step.into(), reason };
                self.append(payment, vec![EventKind::StepFailed(failed)]).await
            }
            RailStatus::Pending | RailStatus::NotFound => {
                entry.back_off();
                Ok(())
            }
        }
    }

    fn rail_operation(&self, payment: &Payment, step: &str) -> RailOperation {
        let key = |s: &str| format!("{}:{s}", payment.id);
        let rail = if payment.created.kind == "withdrawal" { "bank_account" } else { payment.funding.as_str() };
        let gross = payment.created.amount + payment.fee;
        let (operation, amount, parent) = match step {
            "authorize" => ("authorize", gross, String::new()),
            "capture" => ("capture", gross, key("authorize")),
            "void_auth" => ("void", gross, key("authorize")),
            "collect" => ("collect", gross, String::new()),
            "payout" => ("payout", payment.created.amount, String::new()),
            _ => ("refund", gross, if payment.funding == "card" { key("capture") } else { key("collect") }),
        };
        RailOperation {
            rail: rail.into(),
            operation: operation.into(),
            idempotency_key: key(step),
            amount,
            currency: payment.created.currency.clone(),
            instrument: payment.instrument_id.clone(),
            parent_key: parent,
        }
    }

    async fn assess(&self, payment: &Payment, now: u64) -> ev::RiskAssessed {
        let instrument_added_ns = if payment.instrument_id.is_empty() {
            None
        } else {
            self.users.funding_instrument(payment.sender(), &payment.instrument_id).await.ok().map(|i| i.added_ns)
        };
        let input = {
            let activity = self.activity.lock().unwrap_or_else(|p| p.into_inner());
            let earlier = |list: Option<&Vec<(u64, u64)>>| {
                list.map(|l| l.iter().copied().filter(|(t, _)| *t < payment.created_ns).collect()).unwrap_or_default()
            };
            RiskInput {
                amount: payment.created.amount,
                user_recent: earlier(activity.by_user.get(&payment.sender())),
                instrument_recent: earlier(activity.by_instrument.get(&payment.instrument_id)),
                instrument_added_ns,
                known_payee: payment.sender() == payment.receiver()
                    || payment.created.kind == "withdrawal"
                    || activity.payees.contains(&(payment.sender(), payment.receiver())),
                now_ns: now,
            }
        };
        let assessed = risk::assess(&self.config.risk, &input);
        ev::RiskAssessed {
            score: assessed.score,
            decision: assessed.decision.into(),
            reasons: assessed.reasons,
            review_deadline_ns: now + self.config.risk.review_timeout.as_nanos() as u64,
        }
    }

    async fn ensure_platform_accounts(&self, currency: Currency) -> Result<(), Status> {
        if self.platform_open.contains_key(&currency) {
            return Ok(());
        }
        let mut names = vec!["fee".to_string()];
        for rail in RAILS {
            names.push(format!("clearing:{rail}"));
            names.push(format!("external:{rail}"));
        }
        let commands = names
            .iter()
            .map(|name| {
                AccountCommand::Open(NewAccount {
                    id: AccountId(platform_account(name, currency)),
                    currency,
                    code: PLATFORM_ACCOUNT_CODE,
                    flags: Default::default(),
                    owner_id: 0,
                })
            })
            .collect();
        let results = self.ledger.create_accounts(commands).await.map_err(convert::status)?;
        if let Some(Err(error)) = results.iter().find(|r| r.is_err()) {
            return Err(Status::internal(format!("platform accounts: {error}")));
        }
        self.platform_open.insert(currency, ());
        Ok(())
    }

    /// Runs a ledger step: `Ok(Ok(ids))` done, `Ok(Err(reason))` refused for good
    /// (a business rule), `Err` a transient failure to retry.
    async fn ledger_step(&self, payment: &Payment, step: &str) -> Result<Result<String, String>, Status> {
        let currency = payment.currency().ok_or_else(|| Status::internal("payment currency"))?;
        self.ensure_platform_accounts(currency).await?;
        let (sender, receiver) =
            (wallet_account_id(payment.sender(), currency), wallet_account_id(payment.receiver(), currency));
        let rail = if payment.created.kind == "withdrawal" { "bank_account" } else { payment.funding.as_str() };
        let clearing = platform_account(&format!("clearing:{rail}"), currency);
        let external = platform_account(&format!("external:{rail}"), currency);
        let fee_account = platform_account("fee", currency);
        let (amount, fee) = (u128::from(payment.created.amount), u128::from(payment.fee));
        let id = |s: &str, i: usize| TransferId(transfer_id(payment.id, s, i));
        let metadata = format!("payment:{}:{step}", payment.id);
        let posted = |index: usize, debit: u128, credit: u128, amount: u128| NewTransfer {
            id: id(step, index),
            debit_account_id: AccountId(debit),
            credit_account_id: AccountId(credit),
            amount,
            currency: Some(currency),
            code: PAYMENT_TRANSFER_CODE,
            metadata: metadata.clone(),
            linked: false,
            kind: TransferKind::Posted,
        };
        let pending = |t: NewTransfer| NewTransfer { kind: TransferKind::Pending { timeout_ns: 0 }, ..t };
        let resolve = |index: usize, post: bool| NewTransfer {
            kind: if post {
                TransferKind::PostPending { pending_id: id("hold", index) }
            } else {
                TransferKind::VoidPending { pending_id: id("hold", index) }
            },
            debit_account_id: AccountId(0),
            credit_account_id: AccountId(0),
            amount: 0,
            currency: None,
            ..posted(index, 0, 0, 0)
        };
        let holds = if payment.created.kind == "withdrawal" || fee == 0 { 1 } else { 2 };
        let mut transfers = match step {
            "direct" => vec![posted(0, sender, receiver, amount), posted(1, sender, fee_account, fee)],
            "hold" if payment.created.kind == "withdrawal" => vec![pending(posted(0, sender, clearing, amount))],
            "hold" => vec![pending(posted(0, sender, receiver, amount)), pending(posted(1, sender, fee_account, fee))],
            "post_hold" => (0..holds).map(|i| resolve(i, true)).collect(),
            "void_hold" => (0..holds).map(|i| resolve(i, false)).collect(),
            "settle_hold" => vec![resolve(0, true), posted(1, clearing, external, amount)],
            "book_collect" => vec![posted(0, external, clearing, amount + fee)],
            "book_payout" => vec![posted(0, clearing, receiver, amount), posted(1, clearing, fee_account, fee)],
            "book_reverse_collect" => vec![posted(0, clearing, external, amount + fee)],
            "fx_direct" => {
                let to = Currency::parse(&payment.created.to_currency)
                    .map_err(|_| Status::internal("payment to_currency"))?;
                let amounts = crate::fx::Amounts {
                    from: payment.created.amount,
                    to: payment.created.to_amount,
                    fee: payment.fee,
                    rate: payment.created.rate.parse().unwrap_or_default(),
                    spread: payment.created.spread,
                };
                crate::fx::booking(
                    &payment.created.quote_id,
                    payment.sender(),
                    payment.receiver(),
                    currency,
                    to,
                    amounts,
                )
            }
            other => return Err(Status::internal(format!("unknown ledger step {other}"))),
        };
        transfers.retain(|t| t.amount > 0 || !matches!(t.kind, TransferKind::Posted | TransferKind::Pending { .. }));
        let count = transfers.len();
        for (i, t) in transfers.iter_mut().enumerate() {
            t.linked = i + 1 < count;
        }
        let ids: Vec<String> = transfers.iter().map(|t| t.id.0.to_string()).collect();
        let results = self.ledger.create_transfers(transfers).await.map_err(convert::status)?;
        let refused = results.iter().find_map(|r| match r {
            Ok(Outcome::Created { .. } | Outcome::AlreadyExists { .. }) => None,
            Err(ledger_core::domain::TransferError::LinkedEventFailed) => None,
            Err(error) => Some(error.to_string()),
        });
        match refused {
            None if results.iter().all(|r| r.is_ok()) => Ok(Ok(ids.join(","))),
            None => Ok(Err("a linked transfer failed".into())),
            Some(reason) => Ok(Err(reason)),
        }
    }

    /// Creates a payment (or returns the one this idempotency key already made).
    pub async fn create(
        self: &Arc<Self>,
        created_by: u128,
        idempotency_key: &str,
        new: NewPayment,
    ) -> Result<wire::Payment, Status> {
        if idempotency_key.is_empty() || idempotency_key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err(Status::invalid_argument(format!("idempotency_key: 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes")));
        }
        if new.note.len() > NOTE_BYTES_MAX || new.note.chars().any(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "note: at most {NOTE_BYTES_MAX} bytes, no control characters"
            )));
        }
        let request_hash = blake3::hash(
            format!(
                "{}|{}|{}|{}|{}|{}|{}|{}|{}",
                new.kind,
                new.sender,
                new.receiver,
                new.currency.code(),
                new.amount,
                new.funding,
                new.instrument_id,
                new.note,
                new.quote_id
            )
            .as_bytes(),
        );
        let key = (created_by, idempotency_key.to_string());
        let id = match self.keys.entry(key.clone()) {
            dashmap::Entry::Occupied(existing) => {
                let id = *existing.get();
                drop(existing);
                let entry = self.payments.get(&id).map(|e| e.clone());
                let Some(entry) = entry else {
                    return Err(Status::aborted("a request with this idempotency key is in progress; retry"));
                };
                let payment = entry.payment.lock().await;
                if payment.created.request_hash != request_hash.as_bytes() {
                    return Err(Status::already_exists("idempotency_key was used for a different request"));
                }
                return Ok(payment.to_wire());
            }
            dashmap::Entry::Vacant(vacant) => {
                let id = loop {
                    let bytes: [u8; 16] = crate::users::crypto::random_bytes()
                        .map_err(|_| Status::internal("no randomness available"))?;
                    let id = u128::from_le_bytes(bytes) >> 1;
                    if id != 0 && !self.payments.contains_key(&id) {
                        break id;
                    }
                };
                vacant.insert(id);
                id
            }
        };
        let result = self.create_reserved(id, created_by, idempotency_key, request_hash, new).await;
        if result.is_err() {
            self.keys.remove(&key);
        }
        result
    }

    async fn create_reserved(
        self: &Arc<Self>,
        id: u128,
        created_by: u128,
        idempotency_key: &str,
        request_hash: blake3::Hash,
        new: NewPayment,
    ) -> Result<wire::Payment, Status> {
        let quote = if new.quote_id.is_empty() {
            None
        } else {
            let quote = self.fx.take_quote(new.sender, &new.quote_id, id).await?;
            if quote.from != new.currency || quote.amounts.from != new.amount {
                self.fx.release_quote(&new.quote_id, id).await;
                return Err(Status::invalid_argument("amount and currency: as in the quote, or empty"));
            }
            Some(quote)
        };
        let created =
            self.create_payment(id, created_by, idempotency_key, request_hash, new.clone(), quote.as_ref()).await;
        if created.is_err() && quote.is_some() {
            self.fx.release_quote(&new.quote_id, id).await;
        }
        created
    }

    async fn create_payment(
        self: &Arc<Self>,
        id: u128,
        created_by: u128,
        idempotency_key: &str,
        request_hash: blake3::Hash,
        new: NewPayment,
        quote: Option<&crate::fx::QuoteState>,
    ) -> Result<wire::Payment, Status> {
        // Both wallets exist before money moves (opening is idempotent).
        if new.kind != "withdrawal" {
            self.users.open_wallet(new.receiver, quote.map_or(new.currency, |q| q.to)).await?;
        }
        if new.funding == "wallet" || new.kind == "withdrawal" {
            self.users.open_wallet(new.sender, new.currency).await?;
        }
        let fee = quote.map_or_else(|| self.fee(&new.funding, new.amount), |q| q.amounts.fee);
        if new.amount.checked_add(fee).is_none() {
            return Err(Status::invalid_argument("amount: too large with its fee"));
        }
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
            note: new.note,
            quote_id: new.quote_id,
            to_currency: quote.map(|q| q.to.code().to_string()).unwrap_or_default(),
            to_amount: quote.map_or(0, |q| q.amounts.to),
            spread: quote.map_or(0, |q| q.amounts.spread),
            rate: quote.map(|q| q.amounts.rate.normalize().to_string()).unwrap_or_default(),
            mid_rate: quote.map(|q| q.mid.normalize().to_string()).unwrap_or_default(),
        };
        let mut payment = Payment { id, ..Payment::default() };
        self.append(&mut payment, vec![EventKind::Created(created)]).await?;
        self.index(&payment);
        let shown = payment.to_wire();
        self.payments.insert(id, Arc::new(Entry::new(payment)));
        self.drive(id);
        Ok(shown)
    }

    fn fee(&self, funding: &str, amount: u64) -> u64 {
        let bps = match funding {
            "card" => self.config.card_fee_bps,
            "digital_wallet" => self.config.digital_wallet_fee_bps,
            "bank_account" => self.config.bank_fee_bps,
            _ => 0,
        };
        (u128::from(amount) * u128::from(bps)).div_ceil(10_000) as u64
    }

    fn entry(&self, id: u128) -> Result<Arc<Entry>, Status> {
        self.payments.get(&id).map(|e| e.clone()).ok_or_else(|| Status::not_found("payment not found"))
    }

    /// The payment, if `viewer` may see it (`None`: an admin).
    pub async fn get(&self, id: u128, viewer: Option<u128>) -> Result<wire::Payment, Status> {
        let entry = self.entry(id)?;
        let payment = entry.payment.lock().await;
        if let Some(user) = viewer {
            if payment.sender() != user && payment.receiver() != user {
                return Err(Status::not_found("payment not found"));
            }
        }
        Ok(payment.to_wire())
    }

    /// The user's payments (as sender or receiver), newest first.
    pub async fn list(&self, user: Option<u128>, only_in_review: bool) -> Vec<wire::Payment> {
        let entries: Vec<Arc<Entry>> = self.payments.iter().map(|e| e.value().clone()).collect();
        let mut out = BTreeMap::new();
        for entry in entries {
            let payment = entry.payment.lock().await;
            let visible = user.is_none_or(|u| payment.sender() == u || payment.receiver() == u);
            let in_review = payment.public_status().0 == "requires_review";
            if visible && (!only_in_review || in_review) {
                out.insert((std::cmp::Reverse(payment.created_ns), payment.id), payment.to_wire());
            }
        }
        // A user's list is their latest 1,000; an admin sees every payment.
        let limit = if user.is_some() { 1_000 } else { usize::MAX };
        out.into_values().take(limit).collect()
    }

    /// The payer of a money request approves (with a funding source) or declines it.
    pub async fn answer_request(
        self: &Arc<Self>,
        id: u128,
        payer: u128,
        approve: bool,
        funding: String,
        instrument_id: String,
    ) -> Result<wire::Payment, Status> {
        let entry = self.entry(id)?;
        let mut payment = entry.payment.lock().await;
        if payment.created.kind != "request" || payment.sender() != payer {
            return Err(Status::not_found("payment not found"));
        }
        if payment.answer.is_some() {
            return Err(Status::failed_precondition("the request was answered already"));
        }
        let fee = if approve {
            self.check_funding(payer, &funding, &instrument_id).await?;
            if funding == "wallet" {
                if let Some(currency) = payment.currency() {
                    self.users.open_wallet(payer, currency).await?;
                }
            }
            self.fee(&funding, payment.created.amount)
        } else {
            0
        };
        let answered = ev::RequestAnswered { approved: approve, funding, instrument_id, fee };
        self.append(&mut payment, vec![EventKind::RequestAnswered(answered)]).await?;
        let shown = payment.to_wire();
        drop(payment);
        self.drive(id);
        entry.wake.notify_one();
        Ok(shown)
    }

    /// Checks that `funding` is a method the user may pay with now.
    pub async fn check_funding(&self, user: u128, funding: &str, instrument_id: &str) -> Result<(), Status> {
        if !FUNDINGS.contains(&funding) {
            return Err(Status::invalid_argument("funding: wallet, bank_account, card or digital_wallet"));
        }
        if funding == "wallet" {
            if !instrument_id.is_empty() {
                return Err(Status::invalid_argument("instrument_id: not used with wallet funding"));
            }
            return Ok(());
        }
        let instrument = self.users.funding_instrument(user, instrument_id).await?;
        if instrument.kind != funding {
            return Err(Status::invalid_argument(format!(
                "instrument_id: a {} instrument, not {funding}",
                instrument.kind
            )));
        }
        Ok(())
    }

    /// An admin's review decision.
    pub async fn review(self: &Arc<Self>, id: u128, approve: bool) -> Result<wire::Payment, Status> {
        let entry = self.entry(id)?;
        let mut payment = entry.payment.lock().await;
        if payment.public_status().0 != "requires_review" {
            return Err(Status::failed_precondition("the payment is not waiting for a review"));
        }
        let decided = ev::ReviewDecided { approved: approve, by: "admin".into() };
        self.append(&mut payment, vec![EventKind::ReviewDecided(decided)]).await?;
        let shown = payment.to_wire();
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
    ) -> Result<wire::Payment, Status> {
        if refund_id.is_empty() || refund_id.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err(Status::invalid_argument(format!("refund_id: 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes")));
        }
        let entry = self.entry(id)?;
        let mut payment = entry.payment.lock().await;
        if let Some(user) = by_user {
            if payment.receiver() != user {
                return Err(if payment.sender() == user {
                    Status::permission_denied("only the receiver (or an admin) refunds a payment")
                } else {
                    Status::not_found("payment not found")
                });
            }
        }
        if payment.refunds.iter().any(|r| r.refund_id == refund_id) {
            return Ok(payment.to_wire());
        }
        if !matches!(payment.created.kind.as_str(), "send" | "request") {
            return Err(Status::failed_precondition("only payments between users are refunded"));
        }
        if !payment.created.quote_id.is_empty() {
            return Err(Status::failed_precondition(
                "a cross-currency payment is not refunded: the receiver sends the money back (at a new quote)",
            ));
        }
        if payment.finished.as_ref().is_none_or(|f| f.status != "completed") {
            return Err(Status::failed_precondition("only a completed payment is refunded"));
        }
        let left = payment.created.amount - payment.refunded();
        let amount = amount.unwrap_or(left);
        if amount == 0 || amount > left {
            return Err(Status::invalid_argument(format!(
                "amount: between 0 and what is left to refund ({left} minor units), exclusive of 0"
            )));
        }
        let currency = payment.currency().ok_or_else(|| Status::internal("payment currency"))?;
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
        let results = self.ledger.create_transfers(vec![transfer]).await.map_err(convert::status)?;
        match results.first() {
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                return Err(Status::failed_precondition(format!("refund refused by the ledger: {error}")))
            }
            None => return Err(Status::internal("no result")),
        }
        let booked = ev::RefundBooked {
            refund_id: refund_id.into(),
            amount,
            by: by_user.map_or("admin".into(), |u| u.to_string()),
            transfer_id,
        };
        self.append(&mut payment, vec![EventKind::RefundBooked(booked)]).await?;
        Ok(payment.to_wire())
    }
}

impl Entry {
    fn new(payment: Payment) -> Entry {
        Entry {
            payment: Mutex::new(payment),
            wake: Notify::new(),
            driving: AtomicBool::new(false),
            poll: std::sync::Mutex::new((0, 0)),
        }
    }

    /// Ask again later: 50 ms, doubling up to 2 s.
    fn back_off(&self) {
        let mut poll = self.poll.lock().unwrap_or_else(|p| p.into_inner());
        let delay = if poll.1 == 0 { 50_000_000 } else { (poll.1 * 2).min(2_000_000_000) };
        *poll = (now_ns() + delay, delay);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn created(kind: &str, funding: &str) -> Payment {
        let mut p = Payment { id: 7, ..Payment::default() };
        let c = ev::PaymentCreated {
            kind: kind.into(),
            funding: funding.into(),
            sender_id: "1".into(),
            receiver_id: "2".into(),
            currency: "USD".into(),
            amount: 1_000,
            ..Default::default()
        };
        p.evolve(1, EventKind::Created(c));
        p
    }

    fn risk(decision: &str, deadline: u64) -> EventKind {
        EventKind::RiskAssessed(ev::RiskAssessed {
            decision: decision.into(),
            review_deadline_ns: deadline,
            ..Default::default()
        })
    }

    fn ok(step: &str) -> EventKind {
        EventKind::StepSucceeded(ev::StepSucceeded { step: step.into(), reference: "r".into() })
    }

    #[test]
    fn partitions_split_the_payments_between_workers() {
        for id in 1..1_000u128 {
            assert_eq!((0..3).filter(|&i| owns((i, 3), id)).count(), 1, "exactly one worker drives {id}");
            assert!(owns((0, 1), id));
        }
    }

    #[test]
    fn a_card_payment_walks_its_steps_and_an_unknown_outcome_is_only_left_by_asking() {
        let mut p = created("send", "card");
        assert_eq!(p.next_action(10), Action::Assess);
        p.evolve(2, risk("allow", 0));
        assert_eq!(p.next_action(10), Action::Rail("authorize"));
        p.evolve(3, EventKind::StepStarted(ev::StepStarted { step: "authorize".into(), ..Default::default() }));
        assert_eq!(p.next_action(10), Action::Query("authorize"), "started, no answer: ask, never run again");
        p.evolve(4, EventKind::StepOutcomeUnknown(ev::StepOutcomeUnknown { step: "authorize".into() }));
        assert_eq!(p.next_action(10), Action::Query("authorize"));
        assert_eq!(p.state(), "outcome_unknown:authorize");
        p.evolve(5, ok("authorize"));
        assert_eq!(p.next_action(10), Action::Rail("capture"));
        p.evolve(6, ok("capture"));
        assert_eq!(p.next_action(10), Action::Ledger("book_collect"));
        p.evolve(7, ok("book_collect"));
        p.evolve(8, EventKind::StepFailed(ev::StepFailed { step: "book_payout".into(), reason: "frozen".into() }));
        assert_eq!(p.next_action(10), Action::Rail("rail_refund"), "a failed second leg is compensated");
        p.evolve(9, ok("rail_refund"));
        assert_eq!(p.next_action(10), Action::Ledger("book_reverse_collect"));
        p.evolve(10, ok("book_reverse_collect"));
        assert_eq!(p.next_action(10), Action::Finish("failed", "compensated: frozen".into()));
    }

    #[test]
    fn reviews_hold_funds_until_decided_or_timed_out() {
        let mut p = created("send", "wallet");
        p.evolve(2, risk("review", 100));
        assert_eq!(p.next_action(10), Action::Ledger("hold"));
        p.evolve(3, ok("hold"));
        assert_eq!(p.public_status().0, "requires_review");
        assert_eq!(p.next_action(10), Action::WaitUntil(100));
        assert_eq!(p.next_action(100), Action::ReviewTimedOut);
        let mut rejected = p.clone();
        rejected.evolve(4, EventKind::ReviewDecided(ev::ReviewDecided { approved: false, by: "admin".into() }));
        assert_eq!(rejected.next_action(10), Action::Ledger("void_hold"));
        rejected.evolve(5, ok("void_hold"));
        assert_eq!(rejected.next_action(10), Action::Finish("failed", "rejected_in_review".into()));
        p.evolve(4, EventKind::ReviewDecided(ev::ReviewDecided { approved: false, by: "timeout".into() }));
        p.evolve(5, ok("void_hold"));
        assert_eq!(p.next_action(10), Action::Finish("cancelled", "review_timed_out".into()));
        let mut approved = created("send", "wallet");
        approved.evolve(2, risk("review", 100));
        approved.evolve(3, ok("hold"));
        approved.evolve(4, EventKind::ReviewDecided(ev::ReviewDecided { approved: true, by: "admin".into() }));
        assert_eq!(approved.next_action(10), Action::Ledger("post_hold"));
    }

    #[test]
    fn requests_wait_for_the_payer_and_blocks_fail() {
        let mut p = created("request", "");
        assert_eq!(p.next_action(10), Action::Idle);
        assert_eq!(p.public_status().0, "created");
        let mut declined = p.clone();
        declined.evolve(2, EventKind::RequestAnswered(ev::RequestAnswered { approved: false, ..Default::default() }));
        assert_eq!(declined.next_action(10), Action::Finish("cancelled", "declined_by_payer".into()));
        p.evolve(
            2,
            EventKind::RequestAnswered(ev::RequestAnswered {
                approved: true,
                funding: "wallet".into(),
                ..Default::default()
            }),
        );
        assert_eq!(p.next_action(10), Action::Assess);
        p.evolve(3, risk("block", 0));
        assert!(matches!(p.next_action(10), Action::Finish("failed", _)));
        let mut w = created("withdrawal", "wallet");
        w.evolve(2, risk("allow", 0));
        w.evolve(3, ok("hold"));
        w.evolve(4, EventKind::StepFailed(ev::StepFailed { step: "payout".into(), reason: "failed".into() }));
        assert_eq!(w.next_action(10), Action::Ledger("void_hold"));
    }
}
