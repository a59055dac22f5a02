//! A payment folded from its own stream by someone other than its driver: followers of
//! the log (webhook deliveries) derive each status with the same `evolve` replay uses,
//! so no second copy of the rules exists.

use ledger_proto::events::v1 as ev;
use prost::Message;

use super::saga::{Payment, PaymentView};
use super::PaymentsError;
use crate::engine::{Direction, EventStore, RecordedEvent, Revision};

/// Events read at a time when a payment's stream is folded.
pub const FOLD_PAGE_EVENTS: usize = 256;

/// A payment as of some revision of its stream.
#[derive(Clone, Debug, Default)]
pub struct PaymentFold {
    payment: Payment,
}

impl PaymentFold {
    /// Folds one recorded event of the payment's stream in (events in revision order).
    pub fn apply(&mut self, record: &RecordedEvent) -> Result<(), PaymentsError> {
        let event = ev::PaymentEvent::decode(record.payload.as_slice())
            .map_err(|e| PaymentsError::Corrupt(format!("{} revision {}: {e}", record.stream, record.revision)))?;
        self.payment.id = event
            .payment_id
            .parse()
            .map_err(|_| PaymentsError::Corrupt(format!("{}: bad payment id", record.stream)))?;
        self.payment.revision = Some(record.revision);
        match event.kind {
            Some(kind) => self.payment.evolve(event.timestamp_ns, kind),
            None => Ok(()),
        }
    }

    /// Folds `stream` from its start up to and including `revision`, and answers the
    /// payment just before that event and just after it.
    pub fn at(
        store: &dyn EventStore,
        stream: &str,
        revision: Revision,
    ) -> Result<(PaymentFold, PaymentFold), PaymentsError> {
        let mut before = PaymentFold::default();
        let mut from = 0;
        while from < revision {
            let count = usize::try_from(revision - from).unwrap_or(usize::MAX).min(FOLD_PAGE_EVENTS);
            let records = store.read_stream(stream, from, Direction::Forwards, count)?;
            let Some(last) = records.last() else {
                return Err(PaymentsError::Corrupt(format!("{stream}: no event at revision {from}")));
            };
            from = last.revision + 1;
            for record in &records {
                before.apply(record)?;
            }
        }
        let records = store.read_stream(stream, revision, Direction::Forwards, 1)?;
        let Some(record) = records.first().filter(|r| r.revision == revision) else {
            return Err(PaymentsError::Corrupt(format!("{stream}: no event at revision {revision}")));
        };
        let mut after = before.clone();
        after.apply(record)?;
        Ok((before, after))
    }

    /// The public status (`created`, `requires_review`, `processing`, `completed`,
    /// `failed`, `cancelled`, `refunded`, `partially_refunded`).
    pub fn status(&self) -> &'static str {
        self.payment.public_status().0
    }

    /// Refunds booked so far (their count).
    pub fn refunds(&self) -> usize {
        self.payment.refunds.len()
    }

    /// Who created the payment (for a money request: the requester).
    pub fn created_by(&self) -> u128 {
        self.payment.created_by()
    }

    /// The payment as shown, as of its last event (no names, emails or note).
    pub fn view(&self) -> PaymentView {
        self.payment.view(self.payment.last_ns)
    }
}
