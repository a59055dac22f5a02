//! A payment as a pure fold of its events, and what its saga does next: `next_action`
//! is a function of the recorded events and the clock alone, so a restarted worker
//! rebuilds each open payment and carries on from where the log says it was.

use std::collections::HashMap;

use ledger_core::domain::{AccountId, NewTransfer, TransferId, TransferKind};
use ledger_core::money::Currency;
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::payment_event::Kind as EventKind;
use rust_decimal::Decimal;

use super::kinds::{Decision, FinishStatus, Funding, PaymentKind, Step};
use super::PaymentsError;
use crate::chart::{derive_id, platform_account, wallet_account_id, PAYMENT_TRANSFER_CODE};
use crate::engine::Revision;
use crate::fx::{booking, Amounts};

/// A step of a payment's history, as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentStep {
    pub at_ns: u64,
    pub step: String,
    pub outcome: String,
    pub detail: String,
}

/// A risk assessment, as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskView {
    pub score: u32,
    pub decision: String,
    pub reasons: Vec<String>,
}

/// What is shown of a payment. Amounts are in minor units of `currency`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentView {
    pub id: u128,
    pub kind: String,
    pub status: &'static str,
    pub reason: String,
    /// Where the saga is (for operators): `next:{step}`, `awaiting_rail:{step}`, …
    pub state: String,
    pub funding: String,
    pub sender_id: u128,
    pub receiver_id: u128,
    /// `None` only for a payment with no created event.
    pub currency: Option<Currency>,
    pub amount: u64,
    pub fee: u64,
    pub refunded: u64,
    pub created_at_ns: u64,
    pub updated_at_ns: u64,
    /// `None` until assessed.
    pub risk: Option<RiskView>,
    pub transfer_ids: Vec<String>,
    pub steps: Vec<PaymentStep>,
    /// The currency and amount the receiver gets, for a cross-currency payment.
    pub receive: Option<(Currency, u64)>,
    /// Who pays (`from`) and who is paid (`to`), and the note: filled by
    /// `Payments::shown` (empty in a bare `view`).
    pub from_name: String,
    pub from_email: String,
    pub to_name: String,
    pub to_email: String,
    pub note: String,
}

/// The fields of a created event that must parse.
struct Parsed {
    kind: PaymentKind,
    /// `None`: a request, funded when its payer approves it.
    funding: Option<Funding>,
    sender: u128,
    receiver: u128,
    created_by: u128,
    currency: Currency,
    to_currency: Option<Currency>,
    rate: Option<Decimal>,
}

impl Parsed {
    fn of(payment: u128, c: &ev::PaymentCreated) -> Result<Parsed, PaymentsError> {
        let corrupt = |what: &str, value: &str| PaymentsError::Corrupt(format!("payment {payment}: {what} {value:?}"));
        let id = |what: &str, value: &str| value.parse::<u128>().map_err(|_| corrupt(what, value));
        let currency = |what: &str, value: &str| Currency::parse(value).map_err(|_| corrupt(what, value));
        Ok(Parsed {
            kind: PaymentKind::parse(&c.kind).ok_or_else(|| corrupt("kind", &c.kind))?,
            funding: match c.funding.as_str() {
                "" => None,
                funding => Some(Funding::parse(funding).ok_or_else(|| corrupt("funding", funding))?),
            },
            sender: id("sender_id", &c.sender_id)?,
            receiver: id("receiver_id", &c.receiver_id)?,
            created_by: id("created_by", &c.created_by)?,
            currency: currency("currency", &c.currency)?,
            to_currency: match c.to_currency.as_str() {
                "" => None,
                code => Some(currency("to_currency", code)?),
            },
            rate: match c.rate.as_str() {
                "" => None,
                rate => Some(rate.parse::<Decimal>().map_err(|_| corrupt("rate", rate))?),
            },
        })
    }
}

pub(super) fn transfer_id(payment: u128, step: &str, index: usize) -> u128 {
    derive_id(&[b"ledger.payment.v1", &payment.to_le_bytes(), step.as_bytes(), &(index as u64).to_le_bytes()])
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum StepState {
    Started { key: String, deadline_ns: u64 },
    Succeeded(String),
    Failed(String),
    Unknown,
}

/// A payment, folded from its events.
#[derive(Clone, Debug, Default)]
pub(super) struct Payment {
    pub(super) id: u128,
    pub(super) revision: Option<Revision>,
    pub(super) last_ns: u64,
    pub(super) created: ev::PaymentCreated,
    /// The created event's ids, currencies and rate, parsed once at replay.
    pub(super) sender: u128,
    pub(super) receiver: u128,
    pub(super) created_by: u128,
    pub(super) currency: Option<Currency>,
    pub(super) to_currency: Option<Currency>,
    pub(super) rate: Option<Decimal>,
    /// Parsed from the created event.
    pub(super) kind: Option<PaymentKind>,
    pub(super) created_ns: u64,
    /// `None` for a request its payer has not approved.
    pub(super) funding: Option<Funding>,
    pub(super) instrument_id: String,
    pub(super) fee: u64,
    pub(super) answer: Option<bool>,
    pub(super) risk: Option<ev::RiskAssessed>,
    /// The risk event's decision, parsed.
    pub(super) decision: Option<Decision>,
    pub(super) review: Option<ev::ReviewDecided>,
    pub(super) steps: HashMap<Step, StepState>,
    pub(super) finished: Option<Finished>,
    pub(super) refunds: Vec<ev::RefundBooked>,
    pub(super) history: Vec<PaymentStep>,
    pub(super) transfer_ids: Vec<String>,
}

/// How a payment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Finished {
    pub(super) status: FinishStatus,
    pub(super) reason: String,
}

/// What the driver does next, decided from the events and the clock alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Terminal, or waiting for a person with no deadline (a request's payer).
    Idle,
    WaitUntil(u64),
    Assess,
    ReviewTimedOut,
    Rail(Step),
    Query(Step),
    Ledger(Step),
    Finish(FinishStatus, String),
}

const GATE: Step = Step::Review;

impl Payment {
    pub(super) fn sender(&self) -> u128 {
        self.sender
    }

    pub(super) fn receiver(&self) -> u128 {
        self.receiver
    }

    pub(super) fn created_by(&self) -> u128 {
        self.created_by
    }

    /// `None` only before the payment's first event.
    pub(super) fn currency(&self) -> Option<Currency> {
        self.currency
    }

    /// The receiving side of a cross-currency payment.
    pub(super) fn to_currency(&self) -> Option<Currency> {
        self.to_currency
    }

    /// The customer's rate of a cross-currency payment.
    pub(super) fn rate(&self) -> Option<Decimal> {
        self.rate
    }

    pub(super) fn refunded(&self) -> u64 {
        self.refunds.iter().map(|r| r.amount).sum()
    }

    pub(super) fn step(&self, step: Step) -> Option<&StepState> {
        self.steps.get(&step)
    }

    pub(super) fn is(&self, kind: PaymentKind) -> bool {
        self.kind == Some(kind)
    }

    /// The rail money moves on: a withdrawal's bank account, else the funding's.
    pub(super) fn rail(&self) -> &'static str {
        if self.is(PaymentKind::Withdrawal) {
            Funding::BankAccount.as_str()
        } else {
            self.funding.map_or("", Funding::as_str)
        }
    }

    pub(super) fn succeeded(&self, step: Step) -> bool {
        matches!(self.step(step), Some(StepState::Succeeded(_)))
    }

    pub(super) fn note(&mut self, at: u64, step: &str, outcome: &str, detail: String) {
        self.history.push(PaymentStep { at_ns: at, step: step.into(), outcome: outcome.into(), detail });
    }

    /// Folds one event in: the only place a payment changes, live or replayed. A
    /// created event whose ids, currencies or rate do not parse is corrupt.
    pub(super) fn evolve(&mut self, at: u64, kind: EventKind) -> Result<(), PaymentsError> {
        self.last_ns = self.last_ns.max(at);
        match kind {
            EventKind::Created(c) => {
                let parsed = Parsed::of(self.id, &c)?;
                self.sender = parsed.sender;
                self.receiver = parsed.receiver;
                self.created_by = parsed.created_by;
                self.currency = Some(parsed.currency);
                self.to_currency = parsed.to_currency;
                self.rate = parsed.rate;
                self.kind = Some(parsed.kind);
                self.funding = parsed.funding;
                self.created_ns = at;
                self.instrument_id = c.instrument_id.clone();
                self.fee = c.fee;
                self.created = c;
                self.note(at, "created", "created", String::new());
            }
            EventKind::RiskAssessed(r) => {
                let decision = Decision::parse(&r.decision).ok_or_else(|| self.corrupt("decision", &r.decision))?;
                self.decision = Some(decision);
                self.note(at, "risk", &r.decision, format!("score {}: {}", r.score, r.reasons.join(", ")));
                self.risk = Some(r);
            }
            EventKind::RequestAnswered(a) => {
                if a.approved {
                    self.funding = Some(Funding::parse(&a.funding).ok_or_else(|| self.corrupt("funding", &a.funding))?);
                    self.instrument_id = a.instrument_id.clone();
                    self.fee = a.fee;
                }
                self.note(at, "request", if a.approved { "approved" } else { "declined" }, a.funding.clone());
                self.answer = Some(a.approved);
            }
            EventKind::StepStarted(s) => {
                let step = self.parse_step(&s.step)?;
                self.note(at, &s.step, "started", String::new());
                self.steps.insert(step, StepState::Started { key: s.idempotency_key, deadline_ns: s.deadline_ns });
            }
            EventKind::StepSucceeded(s) => {
                let step = self.parse_step(&s.step)?;
                if !step.is_rail() {
                    self.transfer_ids.extend(s.reference.split(',').filter(|r| !r.is_empty()).map(str::to_string));
                }
                self.note(at, &s.step, "succeeded", s.reference.clone());
                self.steps.insert(step, StepState::Succeeded(s.reference));
            }
            EventKind::StepFailed(s) => {
                let step = self.parse_step(&s.step)?;
                self.note(at, &s.step, "failed", s.reason.clone());
                self.steps.insert(step, StepState::Failed(s.reason));
            }
            EventKind::StepOutcomeUnknown(s) => {
                let step = self.parse_step(&s.step)?;
                self.note(at, &s.step, "outcome_unknown", String::new());
                self.steps.insert(step, StepState::Unknown);
            }
            EventKind::ReviewDecided(r) => {
                self.note(at, GATE.as_str(), if r.approved { "approved" } else { "rejected" }, r.by.clone());
                self.review = Some(r);
            }
            EventKind::Finished(f) => {
                let status = FinishStatus::parse(&f.status).ok_or_else(|| self.corrupt("status", &f.status))?;
                self.note(at, "finished", &f.status, f.reason.clone());
                self.finished = Some(Finished { status, reason: f.reason });
            }
            EventKind::RefundBooked(r) => {
                self.note(at, "refund", "succeeded", format!("{} by {}", r.amount, r.by));
                self.transfer_ids.push(r.transfer_id.clone());
                self.refunds.push(r);
            }
        }
        Ok(())
    }

    fn corrupt(&self, what: &str, value: &str) -> PaymentsError {
        PaymentsError::Corrupt(format!("payment {}: {what} {value:?}", self.id))
    }

    fn parse_step(&self, step: &str) -> Result<Step, PaymentsError> {
        Step::parse(step).ok_or_else(|| self.corrupt("step", step))
    }

    /// The happy path's steps, in order, with the review gate where a review holds it.
    pub(super) fn plan(&self) -> Vec<Step> {
        let review = self.decision == Some(Decision::Review);
        if !self.created.quote_id.is_empty() {
            // Cross-currency, from the wallet: nothing is held during a review; the
            // conversion and the payment are one linked commit once allowed.
            return vec![GATE, Step::FxDirect];
        }
        match (self.kind, self.funding) {
            (Some(PaymentKind::Withdrawal), _) => vec![Step::Hold, GATE, Step::Payout, Step::SettleHold],
            (_, Some(Funding::Wallet)) if review => vec![Step::Hold, GATE, Step::PostHold],
            (_, Some(Funding::Wallet)) => vec![Step::Direct],
            (_, Some(Funding::Card)) => vec![Step::Authorize, GATE, Step::Capture, Step::BookCollect, Step::BookPayout],
            // A request's funding is set before its plan is asked for; an unfunded
            // payment would take the collection's path, as a bank account does.
            (_, Some(Funding::BankAccount | Funding::DigitalWallet) | None) => {
                vec![GATE, Step::Collect, Step::BookCollect, Step::BookPayout]
            }
        }
    }

    pub(super) fn next_action(&self, now: u64) -> Action {
        if self.finished.is_some() {
            return Action::Idle;
        }
        if self.is(PaymentKind::Request) {
            match self.answer {
                None => return Action::Idle,
                Some(false) => return Action::Finish(FinishStatus::Cancelled, "declined_by_payer".into()),
                Some(true) => {}
            }
        }
        let (Some(risk), Some(decision)) = (&self.risk, self.decision) else { return Action::Assess };
        if decision == Decision::Block {
            return Action::Finish(FinishStatus::Failed, format!("blocked: {}", risk.reasons.join(", ")));
        }
        for step in self.plan() {
            if step == GATE {
                if decision != Decision::Review {
                    continue;
                }
                match &self.review {
                    Some(r) if r.approved => continue,
                    Some(r) if r.by == "timeout" => {
                        return self.unwind(FinishStatus::Cancelled, "review_timed_out".into());
                    }
                    Some(_) => return self.unwind(FinishStatus::Failed, "rejected_in_review".into()),
                    None if now >= risk.review_deadline_ns => return Action::ReviewTimedOut,
                    None => return Action::WaitUntil(risk.review_deadline_ns),
                }
            }
            match self.step(step) {
                Some(StepState::Succeeded(_)) => continue,
                Some(StepState::Failed(reason)) if step == Step::BookPayout => {
                    return self.compensate(format!("compensated: {reason}"));
                }
                Some(StepState::Failed(reason)) => return self.unwind(FinishStatus::Failed, reason.clone()),
                Some(StepState::Started { .. } | StepState::Unknown) => return Action::Query(step),
                None if step.is_rail() => return Action::Rail(step),
                None => return Action::Ledger(step),
            }
        }
        Action::Finish(FinishStatus::Completed, String::new())
    }

    /// Releases what is held (a wallet hold, a card authorization), then finishes.
    pub(super) fn unwind(&self, status: FinishStatus, reason: String) -> Action {
        let mut undo = Vec::new();
        if self.succeeded(Step::Hold) {
            undo.push(Step::VoidHold);
        }
        if self.succeeded(Step::Authorize) && !self.succeeded(Step::Capture) {
            undo.push(Step::VoidAuth);
        }
        self.run_then_finish(&undo, status, reason)
    }

    /// Gives collected money back: the rail refunds the sender and the collection's
    /// booking is reversed, so the clearing account is back to zero.
    pub(super) fn compensate(&self, reason: String) -> Action {
        self.run_then_finish(&[Step::RailRefund, Step::BookReverseCollect], FinishStatus::Failed, reason)
    }

    pub(super) fn run_then_finish(&self, steps: &[Step], status: FinishStatus, reason: String) -> Action {
        for &step in steps {
            match self.step(step) {
                Some(StepState::Succeeded(_)) => continue,
                Some(StepState::Failed(why)) => {
                    return Action::Finish(
                        FinishStatus::Failed,
                        format!("{reason}; {step} failed: {why}: needs an operator"),
                    )
                }
                Some(StepState::Started { .. } | StepState::Unknown) => return Action::Query(step),
                None if step.is_rail() => return Action::Rail(step),
                None => return Action::Ledger(step),
            }
        }
        Action::Finish(status, reason)
    }

    pub(super) fn public_status(&self) -> (&'static str, String) {
        if let Some(f) = &self.finished {
            let status = match f.status {
                FinishStatus::Completed if self.refunded() > 0 && self.refunded() >= self.created.amount => "refunded",
                FinishStatus::Completed if self.refunded() > 0 => "partially_refunded",
                FinishStatus::Completed => "completed",
                FinishStatus::Cancelled => "cancelled",
                FinishStatus::Failed => "failed",
            };
            return (status, f.reason.clone());
        }
        if self.is(PaymentKind::Request) && self.answer.is_none() {
            return ("created", String::new());
        }
        match self.decision {
            None => ("created", String::new()),
            Some(Decision::Review) if self.review.is_none() => ("requires_review", String::new()),
            Some(_) => ("processing", String::new()),
        }
    }

    pub(super) fn state(&self, now_ns: u64) -> String {
        match self.next_action(now_ns) {
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

    /// The linked batch of ledger transfers of a ledger step (empty transfers left
    /// out). Their ids derive from the payment, the step and the position, so running
    /// a step again books nothing twice.
    pub(super) fn ledger_transfers(&self, step: Step) -> Result<Vec<NewTransfer>, PaymentsError> {
        let payment = self;
        let currency = payment.currency().ok_or_else(|| PaymentsError::Corrupt("payment currency".into()))?;
        let (sender, receiver) =
            (wallet_account_id(payment.sender(), currency), wallet_account_id(payment.receiver(), currency));
        let rail = payment.rail();
        let clearing = platform_account(&format!("clearing:{rail}"), currency);
        let external = platform_account(&format!("external:{rail}"), currency);
        let fee_account = platform_account("fee", currency);
        let (amount, fee) = (u128::from(payment.created.amount), u128::from(payment.fee));
        let id = |s: Step, i: usize| TransferId(transfer_id(payment.id, s.as_str(), i));
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
                TransferKind::PostPending { pending_id: id(Step::Hold, index) }
            } else {
                TransferKind::VoidPending { pending_id: id(Step::Hold, index) }
            },
            debit_account_id: AccountId(0),
            credit_account_id: AccountId(0),
            amount: 0,
            currency: None,
            ..posted(index, 0, 0, 0)
        };
        let withdrawal = payment.is(PaymentKind::Withdrawal);
        let holds = if withdrawal || fee == 0 { 1 } else { 2 };
        let mut transfers = match step {
            Step::Direct => vec![posted(0, sender, receiver, amount), posted(1, sender, fee_account, fee)],
            Step::Hold if withdrawal => vec![pending(posted(0, sender, clearing, amount))],
            Step::Hold => {
                vec![pending(posted(0, sender, receiver, amount)), pending(posted(1, sender, fee_account, fee))]
            }
            Step::PostHold => (0..holds).map(|i| resolve(i, true)).collect(),
            Step::VoidHold => (0..holds).map(|i| resolve(i, false)).collect(),
            Step::SettleHold => vec![resolve(0, true), posted(1, clearing, external, amount)],
            Step::BookCollect => vec![posted(0, external, clearing, amount + fee)],
            Step::BookPayout => vec![posted(0, clearing, receiver, amount), posted(1, clearing, fee_account, fee)],
            Step::BookReverseCollect => vec![posted(0, clearing, external, amount + fee)],
            Step::FxDirect => {
                let to = payment.to_currency().ok_or_else(|| PaymentsError::Corrupt("payment to_currency".into()))?;
                let rate = payment.rate().ok_or_else(|| PaymentsError::Corrupt("payment rate".into()))?;
                let amounts = Amounts {
                    from: payment.created.amount,
                    to: payment.created.to_amount,
                    fee: payment.fee,
                    rate,
                    spread: payment.created.spread,
                };
                booking(&payment.created.quote_id, payment.sender(), payment.receiver(), currency, to, amounts)
            }
            Step::Review
            | Step::Authorize
            | Step::Capture
            | Step::VoidAuth
            | Step::Collect
            | Step::Payout
            | Step::RailRefund => return Err(PaymentsError::Internal(format!("{step} is not a ledger step"))),
        };
        transfers.retain(|t| t.amount > 0 || !matches!(t.kind, TransferKind::Posted | TransferKind::Pending { .. }));
        let count = transfers.len();
        for (i, t) in transfers.iter_mut().enumerate() {
            t.linked = i + 1 < count;
        }
        Ok(transfers)
    }

    /// What is shown of the payment at `now_ns`.
    pub fn view(&self, now_ns: u64) -> PaymentView {
        let (status, reason) = self.public_status();
        PaymentView {
            id: self.id,
            kind: self.created.kind.clone(),
            status,
            reason,
            state: self.state(now_ns),
            funding: self.funding.map_or(String::new(), |f| f.as_str().to_string()),
            sender_id: self.sender,
            receiver_id: self.receiver,
            currency: self.currency,
            amount: self.created.amount,
            fee: self.fee,
            refunded: self.refunded(),
            created_at_ns: self.created_ns,
            updated_at_ns: self.last_ns,
            risk: self.risk.as_ref().map(|r| RiskView {
                score: r.score,
                decision: r.decision.clone(),
                reasons: r.reasons.clone(),
            }),
            transfer_ids: self.transfer_ids.clone(),
            steps: self.history.clone(),
            receive: self.to_currency.map(|c| (c, self.created.to_amount)),
            from_name: String::new(),
            from_email: String::new(),
            to_name: String::new(),
            to_email: String::new(),
            note: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::owns;

    fn created(kind: &str, funding: &str) -> Payment {
        let mut p = Payment { id: 7, ..Payment::default() };
        let c = ev::PaymentCreated {
            kind: kind.into(),
            funding: funding.into(),
            sender_id: "1".into(),
            receiver_id: "2".into(),
            created_by: "1".into(),
            currency: "USD".into(),
            amount: 1_000,
            ..Default::default()
        };
        p.evolve(1, EventKind::Created(c)).expect("evolve");
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
        p.evolve(2, risk("allow", 0)).expect("evolve");
        assert_eq!(p.next_action(10), Action::Rail(Step::Authorize));
        p.evolve(3, EventKind::StepStarted(ev::StepStarted { step: "authorize".into(), ..Default::default() }))
            .expect("evolve");
        assert_eq!(p.next_action(10), Action::Query(Step::Authorize), "started, no answer: ask, never run again");
        p.evolve(4, EventKind::StepOutcomeUnknown(ev::StepOutcomeUnknown { step: "authorize".into() }))
            .expect("evolve");
        assert_eq!(p.next_action(10), Action::Query(Step::Authorize));
        assert_eq!(p.state(10), "outcome_unknown:authorize");
        p.evolve(5, ok("authorize")).expect("evolve");
        assert_eq!(p.next_action(10), Action::Rail(Step::Capture));
        p.evolve(6, ok("capture")).expect("evolve");
        assert_eq!(p.next_action(10), Action::Ledger(Step::BookCollect));
        p.evolve(7, ok("book_collect")).expect("evolve");
        p.evolve(8, EventKind::StepFailed(ev::StepFailed { step: "book_payout".into(), reason: "frozen".into() }))
            .expect("evolve");
        assert_eq!(p.next_action(10), Action::Rail(Step::RailRefund), "a failed second leg is compensated");
        p.evolve(9, ok("rail_refund")).expect("evolve");
        assert_eq!(p.next_action(10), Action::Ledger(Step::BookReverseCollect));
        p.evolve(10, ok("book_reverse_collect")).expect("evolve");
        assert_eq!(p.next_action(10), Action::Finish(FinishStatus::Failed, "compensated: frozen".into()));
    }

    #[test]
    fn reviews_hold_funds_until_decided_or_timed_out() {
        let mut p = created("send", "wallet");
        p.evolve(2, risk("review", 100)).expect("evolve");
        assert_eq!(p.next_action(10), Action::Ledger(Step::Hold));
        p.evolve(3, ok("hold")).expect("evolve");
        assert_eq!(p.public_status().0, "requires_review");
        assert_eq!(p.next_action(10), Action::WaitUntil(100));
        assert_eq!(p.next_action(100), Action::ReviewTimedOut);
        let mut rejected = p.clone();
        rejected
            .evolve(4, EventKind::ReviewDecided(ev::ReviewDecided { approved: false, by: "admin".into() }))
            .expect("evolve");
        assert_eq!(rejected.next_action(10), Action::Ledger(Step::VoidHold));
        rejected.evolve(5, ok("void_hold")).expect("evolve");
        assert_eq!(rejected.next_action(10), Action::Finish(FinishStatus::Failed, "rejected_in_review".into()));
        p.evolve(4, EventKind::ReviewDecided(ev::ReviewDecided { approved: false, by: "timeout".into() }))
            .expect("evolve");
        p.evolve(5, ok("void_hold")).expect("evolve");
        assert_eq!(p.next_action(10), Action::Finish(FinishStatus::Cancelled, "review_timed_out".into()));
        let mut approved = created("send", "wallet");
        approved.evolve(2, risk("review", 100)).expect("evolve");
        approved.evolve(3, ok("hold")).expect("evolve");
        approved
            .evolve(4, EventKind::ReviewDecided(ev::ReviewDecided { approved: true, by: "admin".into() }))
            .expect("evolve");
        assert_eq!(approved.next_action(10), Action::Ledger(Step::PostHold));
    }

    #[test]
    fn requests_wait_for_the_payer_and_blocks_fail() {
        let mut p = created("request", "");
        assert_eq!(p.next_action(10), Action::Idle);
        assert_eq!(p.public_status().0, "created");
        let mut declined = p.clone();
        declined
            .evolve(2, EventKind::RequestAnswered(ev::RequestAnswered { approved: false, ..Default::default() }))
            .expect("evolve");
        assert_eq!(declined.next_action(10), Action::Finish(FinishStatus::Cancelled, "declined_by_payer".into()));
        p.evolve(
            2,
            EventKind::RequestAnswered(ev::RequestAnswered {
                approved: true,
                funding: "wallet".into(),
                ..Default::default()
            }),
        )
        .expect("evolve");
        assert_eq!(p.next_action(10), Action::Assess);
        p.evolve(3, risk("block", 0)).expect("evolve");
        assert!(matches!(p.next_action(10), Action::Finish(FinishStatus::Failed, _)));
        let mut w = created("withdrawal", "wallet");
        w.evolve(2, risk("allow", 0)).expect("evolve");
        w.evolve(3, ok("hold")).expect("evolve");
        w.evolve(4, EventKind::StepFailed(ev::StepFailed { step: "payout".into(), reason: "failed".into() }))
            .expect("evolve");
        assert_eq!(w.next_action(10), Action::Ledger(Step::VoidHold));
    }
}
