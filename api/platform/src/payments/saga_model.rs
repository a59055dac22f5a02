//! A model of the payment saga: the pure `next_action` and `evolve` driven the way the
//! driver drives them, against a model rail and a model ledger, over generated
//! sequences of rail answers (succeeded, declined, pending, not found, timeout, late,
//! duplicate). Whatever the answers, every payment ends terminal, the clearing
//! accounts end at zero with no hold left, and no transfer is booked twice.

use std::collections::{HashMap, HashSet};

use ledger_core::domain::TransferKind;
use ledger_core::money::Currency;
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::payment_event::Kind as EventKind;
use proptest::prelude::*;

use super::kinds::Step;
use super::saga::{Action, Payment};
use crate::chart::{platform_account, wallet_account_id, RAILS};

/// What the rail does with one call.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Runs it (or finds it) and answers.
    Succeeded,
    /// Refuses it for good (only an authorization, capture, collection or payout).
    Declined,
    /// Runs it; the money settles after two more questions.
    Pending,
    /// Answers that it knows nothing of the key, without running it.
    NotFound,
    /// The request is lost: nothing runs, no answer.
    Timeout,
    /// It runs, but the answer comes after the deadline.
    Late,
    /// The request arrives twice; the idempotency key makes the second a repeat.
    Duplicate,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        Just(Answer::Succeeded),
        Just(Answer::Declined),
        Just(Answer::Pending),
        Just(Answer::NotFound),
        Just(Answer::Timeout),
        Just(Answer::Late),
        Just(Answer::Duplicate),
    ]
}

/// The rail's record of an operation: its outcome, and how many more questions it
/// stays pending.
struct Recorded {
    outcome: Result<String, String>,
    pending_questions: u32,
}

#[derive(Default)]
struct ModelRail {
    operations: HashMap<String, Recorded>,
}

/// What the rail answers, when an answer comes in time.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RailReply {
    Succeeded(String),
    Failed(String),
    Pending,
    NotFound,
}

impl ModelRail {
    fn reply(recorded: &mut Recorded) -> RailReply {
        if recorded.pending_questions > 0 {
            recorded.pending_questions -= 1;
            return RailReply::Pending;
        }
        match &recorded.outcome {
            Ok(reference) => RailReply::Succeeded(reference.clone()),
            Err(reason) => RailReply::Failed(reason.clone()),
        }
    }

    fn execute(&mut self, key: &str, step: Step, answer: Answer) -> Option<RailReply> {
        if let Some(recorded) = self.operations.get_mut(key) {
            // A repeat of a recorded operation: its first result, if the answer arrives.
            if matches!(answer, Answer::Timeout | Answer::Late) {
                return None;
            }
            return Some(Self::reply(recorded));
        }
        let may_decline = matches!(step, Step::Authorize | Step::Capture | Step::Collect | Step::Payout);
        let outcome = if matches!(answer, Answer::Declined) && may_decline {
            Err("declined".to_string())
        } else {
            Ok(format!("rail-{key}"))
        };
        match answer {
            Answer::NotFound => Some(RailReply::NotFound),
            Answer::Timeout => None,
            Answer::Late => {
                self.operations.insert(key.into(), Recorded { outcome, pending_questions: 0 });
                None
            }
            Answer::Pending => {
                self.operations.insert(key.into(), Recorded { outcome, pending_questions: 2 });
                Some(RailReply::Pending)
            }
            Answer::Succeeded | Answer::Declined | Answer::Duplicate => {
                let mut recorded = Recorded { outcome, pending_questions: 0 };
                let reply = Self::reply(&mut recorded);
                self.operations.insert(key.into(), recorded);
                Some(reply)
            }
        }
    }

    fn status(&mut self, key: &str, answer: Answer) -> Option<RailReply> {
        if matches!(answer, Answer::Timeout | Answer::Late) {
            return None;
        }
        Some(self.operations.get_mut(key).map_or(RailReply::NotFound, Self::reply))
    }
}

/// Balances of posted transfers, holds, and every transfer id booked.
#[derive(Default)]
struct ModelLedger {
    balances: HashMap<u128, i128>,
    holds: HashMap<u128, (u128, u128, u128)>,
    booked: HashSet<u128>,
}

impl ModelLedger {
    fn post(&mut self, debit: u128, credit: u128, amount: u128) {
        *self.balances.entry(debit).or_default() -= amount as i128;
        *self.balances.entry(credit).or_default() += amount as i128;
    }
}

/// One generated scenario.
#[derive(Clone, Debug)]
struct Scenario {
    kind: &'static str,
    funding: &'static str,
    decision: &'static str,
    /// `None`: the review times out.
    review: Option<bool>,
    payer_approves: bool,
    fee: u64,
    /// The ledger refuses the payout's booking (a frozen account).
    payout_refused: bool,
    answers: Vec<Answer>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::sample::select(vec!["send", "request", "top_up", "withdrawal"]),
        prop::sample::select(vec!["wallet", "card", "bank_account", "digital_wallet"]),
        prop::sample::select(vec!["allow", "allow", "review", "block"]),
        prop::option::of(any::<bool>()),
        any::<bool>(),
        prop::sample::select(vec![0u64, 25]),
        any::<bool>(),
        prop::collection::vec(answer(), 0..40),
    )
        .prop_map(|(kind, funding, decision, review, payer_approves, fee, payout_refused, answers)| {
            // As the service creates them: a withdrawal is paid from the wallet, a
            // top-up from an instrument, and a wallet payment has no fee.
            let funding = match (kind, funding) {
                ("withdrawal", _) => "wallet",
                ("top_up", "wallet") => "card",
                (_, funding) => funding,
            };
            let fee = if funding == "wallet" { 0 } else { fee };
            Scenario { kind, funding, decision, review, payer_approves, fee, payout_refused, answers }
        })
}

const SENDER: u128 = 1;

fn receiver(kind: &str) -> u128 {
    if matches!(kind, "top_up" | "withdrawal") {
        SENDER
    } else {
        2
    }
}

fn created(s: &Scenario) -> Payment {
    let mut payment = Payment { id: 7, ..Payment::default() };
    let request = s.kind == "request";
    let created = ev::PaymentCreated {
        kind: s.kind.into(),
        funding: if request { String::new() } else { s.funding.into() },
        sender_id: SENDER.to_string(),
        receiver_id: receiver(s.kind).to_string(),
        created_by: SENDER.to_string(),
        currency: "USD".into(),
        amount: 10_000,
        fee: if request { 0 } else { s.fee },
        instrument_id: if s.funding == "wallet" || request { String::new() } else { "ins_1".into() },
        ..Default::default()
    };
    payment.evolve(1, EventKind::Created(created)).expect("created");
    payment
}

/// Runs a ledger step against the model ledger: a linked batch, all or nothing.
fn ledger_step(
    ledger: &mut ModelLedger,
    payment: &Payment,
    step: Step,
    payout_refused: bool,
) -> Result<Result<String, String>, TestCaseError> {
    if step == Step::BookPayout && payout_refused {
        return Ok(Err("account frozen".into()));
    }
    let transfers = payment.ledger_transfers(step).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut ids = Vec::new();
    for t in transfers {
        prop_assert!(ledger.booked.insert(t.id.0), "transfer {} of {step} booked twice", t.id.0);
        match t.kind {
            TransferKind::Posted => ledger.post(t.debit_account_id.0, t.credit_account_id.0, t.amount),
            TransferKind::Pending { .. } => {
                ledger.holds.insert(t.id.0, (t.debit_account_id.0, t.credit_account_id.0, t.amount));
            }
            TransferKind::PostPending { pending_id } => {
                let held = ledger.holds.remove(&pending_id.0);
                let (debit, credit, amount) = held.ok_or_else(|| TestCaseError::fail("post of no hold"))?;
                ledger.post(debit, credit, amount);
            }
            TransferKind::VoidPending { pending_id } => {
                prop_assert!(ledger.holds.remove(&pending_id.0).is_some(), "void of no hold");
            }
        }
        ids.push(t.id.0.to_string());
    }
    Ok(Ok(ids.join(",")))
}

fn answered(step: Step, reply: RailReply) -> Option<EventKind> {
    match reply {
        RailReply::Succeeded(reference) => {
            Some(EventKind::StepSucceeded(ev::StepSucceeded { step: step.as_str().into(), reference }))
        }
        RailReply::Failed(reason) => Some(EventKind::StepFailed(ev::StepFailed { step: step.as_str().into(), reason })),
        RailReply::Pending | RailReply::NotFound => None,
    }
}

/// Drives the payment as the driver does, until it is finished.
fn drive(s: &Scenario, rail: &mut ModelRail, ledger: &mut ModelLedger) -> Result<Payment, TestCaseError> {
    let mut payment = created(s);
    let mut answers = s.answers.iter().copied();
    let mut now = 10;
    for _ in 0..1_000 {
        now += 1;
        let event = match payment.next_action(now) {
            Action::Idle if payment.finished.is_some() => return Ok(payment),
            Action::Idle => EventKind::RequestAnswered(ev::RequestAnswered {
                approved: s.payer_approves,
                funding: s.funding.into(),
                instrument_id: if s.funding == "wallet" { String::new() } else { "ins_1".into() },
                fee: s.fee,
            }),
            Action::Assess => EventKind::RiskAssessed(ev::RiskAssessed {
                decision: s.decision.into(),
                review_deadline_ns: now + 100,
                ..Default::default()
            }),
            Action::WaitUntil(deadline) => match s.review {
                Some(approved) => EventKind::ReviewDecided(ev::ReviewDecided { approved, by: "admin".into() }),
                None => {
                    now = deadline;
                    continue;
                }
            },
            Action::ReviewTimedOut => {
                EventKind::ReviewDecided(ev::ReviewDecided { approved: false, by: "timeout".into() })
            }
            Action::Finish(status, reason) => {
                EventKind::Finished(ev::PaymentFinished { status: status.as_str().into(), reason })
            }
            Action::Ledger(step) => match ledger_step(ledger, &payment, step, s.payout_refused)? {
                Ok(reference) => EventKind::StepSucceeded(ev::StepSucceeded { step: step.as_str().into(), reference }),
                Err(reason) => EventKind::StepFailed(ev::StepFailed { step: step.as_str().into(), reason }),
            },
            Action::Rail(step) => {
                let key = format!("{}:{step}", payment.id);
                let started =
                    ev::StepStarted { step: step.as_str().into(), idempotency_key: key.clone(), deadline_ns: now };
                payment.evolve(now, EventKind::StepStarted(started)).expect("evolve");
                let answer = answers.next().unwrap_or(Answer::Succeeded);
                match rail.execute(&key, step, answer) {
                    Some(reply) => match answered(step, reply) {
                        Some(event) => event,
                        None => continue,
                    },
                    None => EventKind::StepOutcomeUnknown(ev::StepOutcomeUnknown { step: step.as_str().into() }),
                }
            }
            Action::Query(step) => {
                let key = format!("{}:{step}", payment.id);
                match rail.status(&key, answers.next().unwrap_or(Answer::Succeeded)) {
                    Some(RailReply::NotFound) => {
                        // The rail never got it: the driver runs it again under the same key.
                        payment.steps.remove(&step);
                        continue;
                    }
                    Some(reply) => match answered(step, reply) {
                        Some(event) => event,
                        None => continue,
                    },
                    None => continue,
                }
            }
        };
        payment.evolve(now, event).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    Err(TestCaseError::fail(format!("not terminal after 1,000 actions: {}", payment.state(now))))
}

proptest! {
    #[test]
    fn every_payment_ends_terminal_with_clearing_at_zero_and_nothing_booked_twice(s in scenario()) {
        let (mut rail, mut ledger) = (ModelRail::default(), ModelLedger::default());
        let payment = drive(&s, &mut rail, &mut ledger)?;
        let finished = payment.finished.clone().expect("terminal");
        prop_assert!(!finished.reason.contains("needs an operator"), "{}", finished.reason);
        let usd = Currency::parse("USD").expect("USD");
        for rail_name in RAILS {
            let clearing = platform_account(&format!("clearing:{rail_name}"), usd);
            prop_assert_eq!(ledger.balances.get(&clearing).copied().unwrap_or(0), 0, "clearing:{}", rail_name);
        }
        prop_assert!(ledger.holds.is_empty(), "holds left: {:?}", ledger.holds);
        prop_assert_eq!(ledger.balances.values().sum::<i128>(), 0);
        let wallet = |user: u128| ledger.balances.get(&wallet_account_id(user, usd)).copied().unwrap_or(0);
        let fee = ledger.balances.get(&platform_account("fee", usd)).copied().unwrap_or(0);
        match (finished.status.as_str(), s.kind) {
            ("completed", "withdrawal") => prop_assert_eq!(wallet(SENDER), -10_000),
            ("completed", "top_up") => prop_assert_eq!((wallet(SENDER), fee), (10_000, payment.fee as i128)),
            ("completed", _) => prop_assert_eq!((wallet(receiver(s.kind)), fee), (10_000, payment.fee as i128)),
            (status, _) => {
                prop_assert!(matches!(status, "failed" | "cancelled"), "status {}", status);
                prop_assert!(ledger.balances.values().all(|&b| b == 0), "money moved: {:?}", ledger.balances);
            }
        }
    }
}
