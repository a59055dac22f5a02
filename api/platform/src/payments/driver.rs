//! The driver of each open payment: one task per payment of this worker's partition
//! runs `next_action` until the payment is terminal, recording every step's outcome
//! before acting on it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ledger_core::domain::AccountId;
use ledger_core::money::Currency;
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::payment_event::Kind as EventKind;
use prost::Message;
use tokio::sync::MutexGuard;

use super::activity::{Activity, LastDay};
use super::kinds::{Decision, FinishStatus, Funding, PaymentKind, Step};
use super::rails::{RailOperation, RailStatus};
use super::risk::{self, Earlier, RiskInput};
use super::saga::{Action, Payment};
use super::store::Change;
use super::{event_type, load_payment, owns, stream_name, Entry, Payments, PaymentsError, Recent};
use crate::chart::{first_refusal, refusal_reason, wallet_account_id, OpenError};
use crate::engine::EventData;
use crate::fx::RateError;

impl Payments {
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

    pub(super) fn drive(self: &Arc<Self>, id: u128) {
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
                let stepped = this.step(&entry).await;
                entry.changed.notify_waiters();
                match stepped {
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
            if entry.payment.lock().await.finished.is_some() {
                this.retire(id);
            }
        });
    }

    /// Appends payment events durably, then folds them in.
    pub(super) async fn append(&self, payment: &mut Payment, kinds: Vec<EventKind>) -> Result<(), PaymentsError> {
        let mut events = Vec::with_capacity(kinds.len());
        let mut stamped = Vec::with_capacity(kinds.len());
        let mut at = payment.last_ns;
        for kind in kinds {
            at = self.clock.now_ns().max(at + 1);
            let event =
                ev::PaymentEvent { payment_id: payment.id.to_string(), timestamp_ns: at, kind: Some(kind.clone()) };
            events.push(EventData { event_type: event_type(&kind).into(), payload: event.encode_to_vec() });
            stamped.push((at, kind));
        }
        let changes = self.index_changes(payment, &stamped)?;
        if !changes.is_empty() {
            // The index's rows for what this append makes true go first (see `store`).
            self.rows.put(changes).await?;
        }
        crate::stream::append(self.store.as_ref(), &stream_name(payment.id), &mut payment.revision, events).await?;
        for (at, kind) in stamped {
            payment.evolve(at, kind)?;
        }
        if payment.finished.is_some() {
            // A stale `open` row is harmless (a start skips a finished payment).
            self.rows.closed(payment.created_ns, payment.id);
        }
        self.ops.track(payment);
        Ok(())
    }

    /// The index rows the events `stamped` make true for `payment`: a creation's, an
    /// assessment's, a completion's payee unless the risk rules know it already.
    fn index_changes(&self, payment: &Payment, stamped: &[(u64, EventKind)]) -> Result<Vec<Change>, PaymentsError> {
        let has = |f: fn(&EventKind) -> bool| stamped.iter().any(|(_, kind)| f(kind));
        let created = has(|k| matches!(k, EventKind::Created(_)));
        let assessed = has(|k| matches!(k, EventKind::RiskAssessed(_)));
        let finished = has(|k| matches!(k, EventKind::Finished(_)));
        if !(created || assessed || finished) {
            return Ok(Vec::new());
        }
        let mut after = payment.clone();
        for (at, kind) in stamped {
            after.evolve(*at, kind.clone())?;
        }
        let completed = after.finished.as_ref().is_some_and(|f| f.status == FinishStatus::Completed);
        let (sender, receiver) = (after.sender(), after.receiver());
        let mut changes = Vec::new();
        if completed {
            let known = self.activity.lock().unwrap_or_else(|p| p.into_inner()).known_payee(sender, receiver);
            if !known {
                changes.push(Change::Completed { sender, receiver, payment: after.id });
            }
        }
        if created {
            changes.push(Change::Created(Box::new(after)));
        } else if assessed {
            changes.push(Change::Assessed(Box::new(after)));
        }
        Ok(changes)
    }

    /// One step of a payment's saga. `Ok(false)`: nothing to do until woken.
    async fn step(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<bool, PaymentsError> {
        let now = self.clock.now_ns();
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
                let wait = Duration::from_nanos(deadline.saturating_sub(self.clock.now_ns()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = entry.wake.notified() => {}
                }
                Ok(true)
            }
            Action::Assess => {
                // A failed append leaves the payment counted: assessed again, it counts once.
                let (assessed, _) = self.assess(&payment, now).await?;
                self.append(&mut payment, vec![EventKind::RiskAssessed(assessed)]).await?;
                Ok(true)
            }
            Action::ReviewTimedOut => {
                let decided = ev::ReviewDecided { approved: false, by: "timeout".into() };
                self.append(&mut payment, vec![EventKind::ReviewDecided(decided)]).await?;
                Ok(true)
            }
            Action::Finish(status, reason) => {
                let finished = ev::PaymentFinished { status: status.as_str().into(), reason };
                self.append(&mut payment, vec![EventKind::Finished(finished)]).await?;
                self.finished(&payment, status);
                Ok(true)
            }
            Action::Ledger(step) => {
                let outcome = self.ledger_step(&payment, step).await?;
                let kind = match outcome {
                    Ok(ids) => {
                        EventKind::StepSucceeded(ev::StepSucceeded { step: step.as_str().into(), reference: ids })
                    }
                    Err(reason) => EventKind::StepFailed(ev::StepFailed { step: step.as_str().into(), reason }),
                };
                // When the payment ends with this step, its end goes in the same append:
                // one durable write fewer, and the same events as two appends would give.
                let mut after = (*payment).clone();
                after.evolve(now.max(after.last_ns + 1), kind.clone())?;
                let mut kinds = vec![kind];
                let ends = match after.next_action(now) {
                    Action::Finish(status, reason) => {
                        kinds.push(EventKind::Finished(ev::PaymentFinished { status: status.as_str().into(), reason }));
                        Some(status)
                    }
                    _ => None,
                };
                self.append(&mut payment, kinds).await?;
                if let Some(status) = ends {
                    self.finished(&payment, status);
                }
                Ok(true)
            }
            Action::Rail(step) => self.run_rail(entry, payment, step, now).await,
            Action::Query(step) => self.query_rail(entry, payment, step, now).await,
        }
    }

    /// What follows a payment's end: the operators' count, and a known payee.
    fn finished(&self, payment: &Payment, status: FinishStatus) {
        self.ops.finished(payment.kind, status);
        if status == FinishStatus::Completed {
            let mut activity = self.activity.lock().unwrap_or_else(|p| p.into_inner());
            activity.completed(payment.sender(), payment.receiver());
        }
    }

    /// Records a rail step as started (with its idempotency key and deadline), then
    /// calls the rail; no answer by the deadline leaves the outcome unknown.
    async fn run_rail(
        &self,
        entry: &Arc<Entry>,
        mut payment: MutexGuard<'_, Payment>,
        step: Step,
        now: u64,
    ) -> Result<bool, PaymentsError> {
        let key = format!("{}:{step}", payment.id);
        let deadline_ns = now + self.config.rail_timeout.as_nanos() as u64;
        let started = ev::StepStarted { step: step.as_str().into(), idempotency_key: key, deadline_ns };
        self.append(&mut payment, vec![EventKind::StepStarted(started)]).await?;
        let operation = self.rail_operation(&payment, step)?;
        let rail = payment.rail();
        drop(payment);
        let called = std::time::Instant::now();
        let reply = tokio::time::timeout(self.config.rail_timeout, self.rail.execute(operation)).await;
        self.ops.rail_call(rail, Some(step), &reply, called.elapsed());
        let mut payment = entry.payment.lock().await;
        match reply {
            Ok(Ok(status)) => self.rail_answered(entry, &mut payment, step, status).await?,
            Ok(Err(_)) | Err(_) => {
                let unknown = ev::StepOutcomeUnknown { step: step.as_str().into() };
                self.append(&mut payment, vec![EventKind::StepOutcomeUnknown(unknown)]).await?;
            }
        }
        Ok(true)
    }

    /// Asks the rail what became of a started step, at most as often as the back-off
    /// allows.
    async fn query_rail(
        &self,
        entry: &Arc<Entry>,
        payment: MutexGuard<'_, Payment>,
        step: Step,
        now: u64,
    ) -> Result<bool, PaymentsError> {
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
        let rail = payment.rail();
        drop(payment);
        let called = std::time::Instant::now();
        let reply = tokio::time::timeout(self.config.rail_timeout, self.rail.status(&key)).await;
        self.ops.rail_call(rail, None, &reply, called.elapsed());
        let mut payment = entry.payment.lock().await;
        if payment.next_action(self.clock.now_ns()) != Action::Query(step) {
            return Ok(true);
        }
        match reply {
            Ok(Ok(RailStatus::NotFound)) => {
                // The rail never got it: running it again under the same key is safe.
                payment.steps.remove(&step);
            }
            Ok(Ok(status)) => self.rail_answered(entry, &mut payment, step, status).await?,
            Ok(Err(_)) | Err(_) => entry.back_off(self.clock.now_ns()),
        }
        Ok(true)
    }

    async fn rail_answered(
        &self,
        entry: &Entry,
        payment: &mut Payment,
        step: Step,
        status: RailStatus,
    ) -> Result<(), PaymentsError> {
        match status {
            RailStatus::Succeeded(reference) => {
                entry.reset_poll();
                let done = ev::StepSucceeded { step: step.as_str().into(), reference };
                self.append(payment, vec![EventKind::StepSucceeded(done)]).await
            }
            RailStatus::Failed(reason) => {
                entry.reset_poll();
                let failed = ev::StepFailed { step: step.as_str().into(), reason };
                self.append(payment, vec![EventKind::StepFailed(failed)]).await
            }
            RailStatus::Pending | RailStatus::NotFound => {
                entry.back_off(self.clock.now_ns());
                Ok(())
            }
        }
    }

    fn rail_operation(&self, payment: &Payment, step: Step) -> Result<RailOperation, PaymentsError> {
        let key = |s: Step| format!("{}:{s}", payment.id);
        let gross = payment.created.amount + payment.fee;
        let (operation, amount, parent) = match step {
            Step::Authorize => ("authorize", gross, String::new()),
            Step::Capture => ("capture", gross, key(Step::Authorize)),
            Step::VoidAuth => ("void", gross, key(Step::Authorize)),
            Step::Collect => ("collect", gross, String::new()),
            Step::Payout => ("payout", payment.created.amount, String::new()),
            Step::RailRefund => {
                let collected = if payment.funding == Some(Funding::Card) { Step::Capture } else { Step::Collect };
                ("refund", gross, key(collected))
            }
            Step::Review
            | Step::Direct
            | Step::FxDirect
            | Step::Hold
            | Step::PostHold
            | Step::VoidHold
            | Step::SettleHold
            | Step::BookCollect
            | Step::BookPayout
            | Step::BookReverseCollect => {
                return Err(PaymentsError::Internal(format!("{step} is not a rail step")));
            }
        };
        Ok(RailOperation {
            rail: payment.rail().into(),
            operation: operation.into(),
            idempotency_key: key(step),
            amount,
            currency: payment.created.currency.clone(),
            instrument: payment.instrument_id.clone(),
            parent_key: parent,
        })
    }

    /// Assesses `payment` and counts it in the risk windows: the assessment, and what
    /// was counted (`None` for a payment in no known currency).
    pub(super) async fn assess(
        &self,
        payment: &Payment,
        now: u64,
    ) -> Result<(ev::RiskAssessed, Option<Recent>), PaymentsError> {
        let instrument_added_ns = if payment.instrument_id.is_empty() {
            None
        } else {
            self.users.funding_instrument(payment.sender(), &payment.instrument_id).await.ok().map(|i| i.added_ns)
        };
        let reference = self.config.risk.currency;
        // Every amount (a payment's, or a currency's total in a window) in the risk
        // currency at the mid rate in force now; `None` where
        // no rate values it (the rules then send the payment to review). A value past
        // u64 is at least u64::MAX minor units: over any limit.
        let value = |currency: Currency, minor: u64| match (minor, self.fx.value_up(minor, currency, reference, now)) {
            (0, _) => Some(0),
            (_, Ok(value)) => Some(value),
            (_, Err(RateError::Overflow)) => Some(u64::MAX),
            (_, Err(RateError::NoRate(..) | RateError::BadRate | RateError::TooSmall)) => None,
        };
        let currency = payment.currency();
        let amount = currency.and_then(|c| value(c, payment.created.amount));
        // Whether the payee is known matters only to a large payment (`new_payee`), and
        // finding it out may read an earlier payment: only then, and not under the lock.
        if risk::is_large(&self.config.risk, amount) {
            self.warm_payee(payment)?;
        }
        self.read_last_days(payment, now).await?;
        // Read the earlier payments, decide and count this one under one lock, so two
        // payments assessed at once each see the other in one order.
        let (assessed, counted) = {
            let mut activity = self.activity.lock().unwrap_or_else(|p| p.into_inner());
            self.warm(&mut activity, payment, now)?;
            let (id, at) = (payment.id, payment.created_ns);
            let user = activity.user_earlier(payment.sender(), id, at, now, &value);
            let instrument = if payment.instrument_id.is_empty() {
                Earlier::default()
            } else {
                activity.instrument_earlier(&payment.instrument_id, id, at, now, &value)
            };
            let input = RiskInput {
                amount,
                currency,
                user,
                instrument,
                instrument_added_ns,
                known_payee: no_payee_to_know(payment) || activity.known_payee(payment.sender(), payment.receiver()),
                now_ns: now,
            };
            let assessed = risk::assess(&self.config.risk, &input);
            let counted = currency.map(|currency| {
                // A blocked payment counts as an attempt, but moves no money.
                let amount = if assessed.decision == Decision::Block { 0 } else { payment.created.amount };
                let recent = Recent { payment: payment.id, at: payment.created_ns, currency, amount };
                activity.assessed(payment.sender(), &payment.instrument_id, recent, now);
                recent
            });
            (assessed, counted)
        };
        let assessed = ev::RiskAssessed {
            score: assessed.score,
            decision: assessed.decision.as_str().into(),
            reasons: assessed.reasons,
            review_deadline_ns: now + self.config.risk.review_timeout.as_nanos() as u64,
        };
        Ok((assessed, counted))
    }

    /// Reads from the index whether `payment`'s payee is known, when memory does not
    /// know it: a payee row is checked against its payment, which must have completed.
    fn warm_payee(&self, payment: &Payment) -> Result<(), PaymentsError> {
        let (sender, receiver) = (payment.sender(), payment.receiver());
        let known = || self.activity.lock().unwrap_or_else(|p| p.into_inner()).known_payee(sender, receiver);
        if no_payee_to_know(payment) || known() {
            return Ok(());
        }
        if let Some(earlier) = self.rows.payee(sender, receiver)? {
            let earlier = load_payment(self.store.as_ref(), &stream_name(earlier))?;
            if earlier.finished.as_ref().is_some_and(|f| f.status == FinishStatus::Completed) {
                self.activity.lock().unwrap_or_else(|p| p.into_inner()).completed(sender, receiver);
            }
        }
        Ok(())
    }

    /// Reads the sender's and the instrument's last day from the index when memory
    /// lacks them, before the lock all assessments share is taken and off the async
    /// workers: a busy user's day is many pages, and read cold (the first minutes after
    /// a start) under the lock it held every other payment up, one user after another.
    /// What cannot be put in (keys were dropped meanwhile) `warm` reads again under the
    /// lock.
    async fn read_last_days(&self, payment: &Payment, now: u64) -> Result<(), PaymentsError> {
        let sender = payment.sender();
        let instrument = payment.instrument_id.clone();
        let missing = || {
            let activity = self.activity.lock().unwrap_or_else(|p| p.into_inner());
            let instrument_missing = !instrument.is_empty() && !activity.has_instrument(&instrument);
            (!activity.has_user(sender), instrument_missing, activity.tail_max(), activity.removals())
        };
        if let (false, false, ..) = missing() {
            return Ok(());
        }
        // A few reads at a time, so that they keep to a few threads (each thread's
        // allocations hold memory of their own); one waiting for its turn looks again,
        // as the read before it may have been of the same key.
        let _turn = self
            .last_day_reads
            .acquire()
            .await
            .map_err(|e| PaymentsError::Internal(format!("reading the risk rules' last day: {e}")))?;
        let (user_missing, instrument_missing, tail_max, removals) = missing();
        if !user_missing && !instrument_missing {
            return Ok(());
        }
        let since = now.saturating_sub(risk::DAY_NS);
        let user_max = self.config.risk.user_per_day.max(self.config.risk.user_per_hour);
        let instrument_max = self.config.risk.instrument_per_day.max(self.config.risk.instrument_per_hour);
        let rows = self.rows.clone();
        let read = tokio::task::spawn_blocking(move || {
            let user = user_missing
                .then(|| LastDay::read(tail_max, now, |visit| rows.sent_since(sender, since, user_max, visit)))
                .transpose()?;
            let by_instrument = instrument_missing
                .then(|| {
                    LastDay::read(tail_max, now, |visit| {
                        rows.instrument_since(&instrument, since, instrument_max, visit)
                    })
                })
                .transpose()?;
            Ok::<_, PaymentsError>((user, by_instrument))
        });
        let (user, by_instrument) =
            read.await.map_err(|e| PaymentsError::Internal(format!("reading the risk rules' last day: {e}")))??;
        let mut activity = self.activity.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last_day) = user {
            activity.install_user(sender, last_day, now, removals);
        }
        if let Some(last_day) = by_instrument {
            activity.install_instrument(&payment.instrument_id, last_day, now, removals);
        }
        Ok(())
    }

    /// Reads from the index what the rules need of earlier payments and memory lacks:
    /// the sender's and the instrument's last day.
    fn warm(&self, activity: &mut Activity, payment: &Payment, now: u64) -> Result<(), PaymentsError> {
        let since = now.saturating_sub(risk::DAY_NS);
        let sender = payment.sender();
        if !activity.has_user(sender) {
            let max = self.config.risk.user_per_day.max(self.config.risk.user_per_hour);
            activity.load_user(sender, now, |visit| self.rows.sent_since(sender, since, max, visit))?;
        }
        let instrument = payment.instrument_id.as_str();
        if !instrument.is_empty() && !activity.has_instrument(instrument) {
            let max = self.config.risk.instrument_per_day.max(self.config.risk.instrument_per_hour);
            activity
                .load_instrument(instrument, now, |visit| self.rows.instrument_since(instrument, since, max, visit))?;
        }
        Ok(())
    }

    async fn ensure_platform_accounts(&self, currency: Currency) -> Result<(), PaymentsError> {
        self.accounts.ensure(&self.ledger, &[currency]).await.map_err(|error| match error {
            OpenError::Ledger(error) => PaymentsError::Ledger(error),
            OpenError::Refused(error) => PaymentsError::Internal(format!("platform accounts: {error}")),
        })
    }

    /// Runs a ledger step: `Ok(Ok(ids))` done, `Ok(Err(reason))` refused for good
    /// (a business rule), `Err` a transient failure to retry.
    async fn ledger_step(&self, payment: &Payment, step: Step) -> Result<Result<String, String>, PaymentsError> {
        let currency = payment.currency().ok_or_else(|| PaymentsError::Corrupt("payment currency".into()))?;
        self.ensure_platform_accounts(currency).await?;
        let transfers = payment.ledger_transfers(step)?;
        let ids: Vec<String> = transfers.iter().map(|t| t.id.0.to_string()).collect();
        let results = self.ledger.create_transfers(transfers.clone()).await?;
        let (sender, receiver) = (payment.sender(), payment.receiver());
        let currencies = [payment.currency(), payment.to_currency()];
        let whose = |id: AccountId| {
            let wallet_of = |user: u128| currencies.iter().flatten().any(|c| wallet_account_id(user, *c) == id.0);
            if wallet_of(sender) {
                Some("the sender's")
            } else if wallet_of(receiver) {
                Some("the receiver's")
            } else {
                None
            }
        };
        let refused =
            first_refusal(&transfers, &results).map(|(transfer, error)| refusal_reason(transfer, error, whose));
        match refused {
            None if results.iter().all(|r| r.is_ok()) => Ok(Ok(ids.join(","))),
            None => Ok(Err("a linked transfer failed".into())),
            Some(reason) => Ok(Err(reason)),
        }
    }
}

/// A payment to oneself, or a withdrawal (to one's own bank account), has no payee the
/// rules could find new.
fn no_payee_to_know(payment: &Payment) -> bool {
    payment.sender() == payment.receiver() || payment.is(PaymentKind::Withdrawal)
}
