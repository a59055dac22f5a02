//! Lists of payments, a page at a time, newest first by (creation time, id).
//!
//! A user's list walks that user's own index, so a page costs what the page holds
//! (plus the entries its filters skip), never a scan of every payment; the admin list
//! walks the index of all payments, and the review queue its own index. A page holds
//! at most [`PAGE_PAYMENTS_MAX`] payments; a cursor is the (creation time, id) of the
//! last payment of the previous page, so a payment made while a client pages is newer
//! than every cursor it holds and never shifts the pages after them.

use ledger_core::money::Currency;

use super::ops::{PaymentCursor, PAGE_PAYMENTS_MAX};
use super::saga::{Payment, PaymentView};
use super::{Payments, PaymentsError};

/// Payments on a page when the caller names no size.
pub const PAGE_PAYMENTS_DEFAULT: usize = 50;
/// Index entries read at a time while a page is filled (the index's lock is not held
/// while payments are read).
const INDEX_CHUNK_ENTRIES: usize = 256;

/// A payment's place in newest-first order (see `store::newest`).
type Key = (u64, u128);

fn key(created_ns: u64, id: u128) -> Key {
    super::store::newest(created_ns, id)
}

/// Which payments a list walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Those the user sent or received.
    OfUser(u128),
    /// Every payment (admins).
    All,
    /// Payments waiting for a review decision (admins).
    InReview,
}

/// What a list keeps of the payments it walks: each filter given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaymentFilter {
    /// A public status: `completed`, `pending`, `requires_review`, ...
    pub status: Option<String>,
    /// A kind: `send`, `request`, `top_up`, ...
    pub kind: Option<String>,
    pub currency: Option<Currency>,
}

impl PaymentFilter {
    fn matches(&self, payment: &Payment) -> bool {
        self.status.as_deref().is_none_or(|s| payment.public_status().0 == s)
            && self.kind.as_deref().is_none_or(|k| payment.created.kind == k)
            && self.currency.is_none_or(|c| payment.currency() == Some(c))
    }
}

/// How a payment is presented on a page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Presented {
    /// To its parties: names, emails and the note opened.
    Shown,
    /// To support: the bare view, notes stay sealed.
    Bare,
}

impl Payments {
    /// Up to `n` keys of `listing` after `after`, in order.
    fn index_after(&self, listing: Listing, after: Option<Key>, n: usize) -> Result<Vec<Key>, PaymentsError> {
        match listing {
            Listing::OfUser(user) => self.rows.user_after(user, after, n),
            Listing::All => self.rows.all_after(after, n),
            Listing::InReview => {
                let mut keys: Vec<Key> = self
                    .ops
                    .reviews_created()
                    .into_iter()
                    .map(|(created, id)| key(created, id))
                    .filter(|k| after.is_none_or(|a| *k > a))
                    .collect();
                keys.sort_unstable();
                keys.truncate(n);
                Ok(keys)
            }
        }
    }
}

/// Checks a page size from outside: 0 is the default, above the maximum is an error.
pub fn page_size(limit: usize) -> Result<usize, PaymentsError> {
    match limit {
        0 => Ok(PAGE_PAYMENTS_DEFAULT),
        1..=PAGE_PAYMENTS_MAX => Ok(limit),
        _ => Err(crate::FieldError::new("limit", format!("at most {PAGE_PAYMENTS_MAX} payments a page")).into()),
    }
}

impl Payments {
    /// A page of `listing` (those `filter` keeps), newest first, after `after`, at most
    /// `limit` (see [`page_size`]); and the cursor of the next page if there is one.
    pub async fn list(
        &self,
        listing: Listing,
        filter: &PaymentFilter,
        after: Option<PaymentCursor>,
        limit: usize,
    ) -> Result<(Vec<PaymentView>, Option<PaymentCursor>), PaymentsError> {
        self.page(listing, filter, after, page_size(limit)?, Presented::Shown).await
    }

    pub(super) async fn page(
        &self,
        listing: Listing,
        filter: &PaymentFilter,
        after: Option<PaymentCursor>,
        limit: usize,
        presented: Presented,
    ) -> Result<(Vec<PaymentView>, Option<PaymentCursor>), PaymentsError> {
        let mut cursor = after.map(|(ns, id)| key(ns, id));
        let mut page = Vec::new();
        loop {
            let keys = self.index_after(listing, cursor, INDEX_CHUNK_ENTRIES)?;
            if keys.is_empty() {
                return Ok((page, None));
            }
            for at in keys {
                cursor = Some(at);
                let (created_ns, id) = super::store::of_newest(at);
                let entry = match self.entry(id) {
                    Ok(entry) => entry,
                    // Indexed as its creation was appended, which then failed.
                    Err(PaymentsError::NotFound(_)) => continue,
                    Err(error) => return Err(error),
                };
                let payment = entry.payment.lock().await;
                // A row of a creation whose append failed, then made again by a retry
                // (the same id, another time): the payment is listed at its own time.
                let stale = payment.created_ns != created_ns;
                if stale || !filter.matches(&payment) || (listing == Listing::InReview && !in_review(&payment)) {
                    continue;
                }
                if page.len() == limit {
                    let next = page.last().map(|v: &PaymentView| (v.created_at_ns, v.id));
                    return Ok((page, next));
                }
                page.push(match presented {
                    Presented::Shown => self.shown(&payment).await?,
                    Presented::Bare => payment.view(self.clock.now_ns()),
                });
            }
        }
    }
}

fn in_review(payment: &Payment) -> bool {
    payment.public_status().0 == "requires_review"
}
