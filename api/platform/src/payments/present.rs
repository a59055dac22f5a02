//! What people see of a payment beyond its figures: the parties' names and emails and
//! the note, opened from its seal under the author's key; and, for a ledger transfer,
//! the payment (or conversion) it belongs to, read from the transfer's metadata.

use ledger_core::money::Currency;
use ledger_proto::events::v1 as ev;

use super::kinds::PaymentKind;
use super::saga::{Payment, PaymentView};
use super::{Payments, PaymentsError};
use crate::users::Party;

/// What a note shows once its author was erased.
pub const NOTE_DELETED: &str = "(deleted)";

/// The associated data a note is sealed with: it opens only as this payment's note.
pub(super) fn note_aad(payment: u128) -> Vec<u8> {
    let mut aad = b"ledger.payment-note.v1".to_vec();
    aad.extend_from_slice(&payment.to_le_bytes());
    aad
}

/// A conversion's figures: `from_amount` of `from` bought `to_amount` of `to` at `rate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FxDetail {
    pub rate: String,
    pub from: Currency,
    pub from_amount: u64,
    pub to: Currency,
    pub to_amount: u64,
}

/// What a ledger transfer belongs to, as one user (the viewer) sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferContext {
    /// `None` for a conversion between wallets (no payment).
    pub payment_id: Option<u128>,
    /// "send", "request", "top_up", "withdrawal", "refund" or "conversion".
    pub kind: &'static str,
    /// Who pays and who is paid (a conversion: the user and the receiver).
    pub sender: u128,
    pub receiver: u128,
    /// The other party's display name, or what the money came from or went to when it
    /// is the viewer's own ("card", "bank account", "currency exchange").
    pub counterparty: String,
    pub note: String,
    pub fx: Option<FxDetail>,
}

/// How a created event's note shows: a note of a build that wrote it in clear (`note`)
/// as written; a sealed one as `opened` under its author's key (`None`: the author was
/// erased, the note is unreadable).
fn shown_note(payment: u128, created: &ev::PaymentCreated, opened: Option<Vec<u8>>) -> Result<String, PaymentsError> {
    if created.sealed_note.is_empty() {
        return Ok(created.note.clone());
    }
    match opened {
        None => Ok(NOTE_DELETED.into()),
        Some(bytes) => String::from_utf8(bytes)
            .map_err(|_| PaymentsError::Corrupt(format!("payment {payment}: the note is not UTF-8"))),
    }
}

impl Payments {
    /// The payment as shown to its parties: the view with names, emails and the note.
    pub(super) async fn shown(&self, payment: &Payment) -> Result<PaymentView, PaymentsError> {
        let mut view = payment.view(self.clock.now_ns());
        let from = self.users.party(payment.sender()).await?;
        let to = self.users.party(payment.receiver()).await?;
        (view.from_name, view.from_email) = (from.name, from.email);
        (view.to_name, view.to_email) = (to.name, to.email);
        view.note = self.note_of(payment).await?;
        Ok(view)
    }

    /// The note in clear while its author exists, [`NOTE_DELETED`] after.
    async fn note_of(&self, payment: &Payment) -> Result<String, PaymentsError> {
        let created = &payment.created;
        let opened = if created.sealed_note.is_empty() {
            None
        } else {
            self.users.open_personal(payment.created_by(), &created.sealed_note, &note_aad(payment.id)).await?
        };
        shown_note(payment.id, created, opened)
    }

    /// What the transfer with `metadata` belongs to, seen by `viewer`: `None` when the
    /// metadata names no payment or conversion of this platform (an operator's transfer).
    pub async fn transfer_context(
        &self,
        viewer: u128,
        metadata: &str,
    ) -> Result<Option<TransferContext>, PaymentsError> {
        let (payment_id, refund) = if let Some(rest) = metadata.strip_prefix("payment:") {
            (rest.split(':').next().and_then(|id| id.parse::<u128>().ok()), false)
        } else if let Some(rest) = metadata.strip_prefix("refund:") {
            (rest.parse::<u128>().ok(), true)
        } else if let Some(quote_id) = metadata.strip_prefix("fx:") {
            match self.rows.quote(quote_id)? {
                Some(id) => (Some(id), false),
                None => return self.conversion_context(viewer, quote_id).await,
            }
        } else {
            (None, false)
        };
        let entry = match payment_id.map(|id| self.entry(id)) {
            Some(Ok(entry)) => entry,
            None | Some(Err(PaymentsError::NotFound(_))) => return Ok(None),
            Some(Err(error)) => return Err(error),
        };
        let payment = entry.payment.lock().await;
        let (sender, receiver) = (payment.sender(), payment.receiver());
        let counterparty = if sender == receiver {
            match payment.kind {
                Some(PaymentKind::Withdrawal) => "bank account".to_string(),
                _ => payment.funding.map_or(String::new(), |f| f.as_str().replace('_', " ")),
            }
        } else {
            let other = if viewer == sender { receiver } else { sender };
            self.users.party(other).await?.name
        };
        let fx = match (payment.to_currency(), payment.currency()) {
            (Some(to), Some(from)) => Some(FxDetail {
                rate: payment.created.rate.clone(),
                from,
                from_amount: payment.created.amount,
                to,
                to_amount: payment.created.to_amount,
            }),
            _ => None,
        };
        Ok(Some(TransferContext {
            payment_id: Some(payment.id),
            kind: if refund { "refund" } else { payment.kind.map_or("send", PaymentKind::as_str) },
            sender,
            receiver,
            counterparty,
            note: self.note_of(&payment).await?,
            fx,
        }))
    }

    /// A conversion executed outside a payment (`Fx.ExecuteQuote`).
    async fn conversion_context(&self, viewer: u128, quote_id: &str) -> Result<Option<TransferContext>, PaymentsError> {
        let Some(booked) = self.fx.conversion(quote_id) else { return Ok(None) };
        let corrupt = |what: &str| PaymentsError::Corrupt(format!("conversion {quote_id}: {what}"));
        let user: u128 = booked.user_id.parse().map_err(|_| corrupt("user_id"))?;
        let receiver: u128 = booked.receiver_id.parse().map_err(|_| corrupt("receiver_id"))?;
        let counterparty = if user == receiver {
            "currency exchange".to_string()
        } else {
            let other: Party = self.users.party(if viewer == user { receiver } else { user }).await?;
            other.name
        };
        let currency = |code: &str| Currency::parse(code).map_err(|_| corrupt("currency"));
        Ok(Some(TransferContext {
            payment_id: None,
            kind: "conversion",
            sender: user,
            receiver,
            counterparty,
            note: String::new(),
            fx: Some(FxDetail {
                rate: booked.rate.clone(),
                from: currency(&booked.from_currency)?,
                from_amount: booked.from_amount,
                to: currency(&booked.to_currency)?,
                to_amount: booked.to_amount,
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_clear_notes_show_as_written_and_sealed_ones_only_while_their_author_exists() {
        let old = ev::PaymentCreated { note: "lunch".into(), ..Default::default() };
        assert_eq!(shown_note(1, &old, None).expect("old"), "lunch");
        let sealed = ev::PaymentCreated { sealed_note: vec![1, 2, 3], ..Default::default() };
        assert_eq!(shown_note(1, &sealed, Some(b"rent".to_vec())).expect("opened"), "rent");
        assert_eq!(shown_note(1, &sealed, None).expect("erased"), NOTE_DELETED);
        assert!(matches!(shown_note(1, &sealed, Some(vec![0xff])), Err(PaymentsError::Corrupt(_))));
        assert_ne!(note_aad(1), note_aad(2), "a note opens only as its own payment's");
    }
}
