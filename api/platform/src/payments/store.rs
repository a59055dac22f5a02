//! The payments' index on disk (`<data-dir>/payments/index.redb`): what must be found
//! without knowing a payment's stream, so that a start reads no finished payment.
//!
//! - `all`: every payment, newest first, for the admins' list;
//! - `sent_by` and `received`: (sender, creation time, payment) → what the risk rules
//!   count of it (empty until it is assessed; 0 for a blocked payment), and (receiver,
//!   newest first) for a payment to another user. A user's list merges the two, so each
//!   payment costs one row per party: a row a user, inserted at that user's place in a
//!   tree as large as the history, is the index's costliest write. Its `sent_by` rows
//!   of the last day are also what the rules load of a user who is not in memory;
//! - `keys`: (creator, idempotency key) → payment, only for payments of earlier builds,
//!   whose ids were random: a payment's id is now derived from its creator and key
//!   (`id_for_key`), so a retry finds it by its stream and the key needs no row (a
//!   row a payment, inserted at a random place of a tree as large as the history,
//!   was the index's costliest write); `quotes`: quote → the payment that executed it;
//! - `open`: the payments not finished, which a start loads and drives;
//! - `by_instrument`: (instrument, creation time, payment) → the amount the risk rules
//!   count, for the last day's activity of an instrument, loaded when the rules first
//!   need it;
//! - `payees`: (sender, receiver) → a payment that completed between them.
//!
//! Like the users' index, it is a locator checked against the payment it names. The
//! rows an append makes true are put in memory before it (`super::overlay`, which every
//! reader merges with this file) and written here by the checkpoint, every second,
//! before it records the log position (`crate::log_checkpoint`); what an append makes
//! untrue (a payment no longer open) is taken out after it. A start
//! re-applies the payment events after the checkpoint, by folding each payment they
//! belong to, or rebuilds the index from every payment stream when the checkpoint does
//! not match the log.

use std::path::Path;

use ledger_core::money::Currency;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};

use super::activity::Recent;
use super::kinds::{Decision, FinishStatus};
use super::saga::Payment;
use super::PaymentsError;
use crate::log_checkpoint::{self, Checkpoint, CheckpointError};

/// Newest first: creation time and id stored inverted, so ascending order is newest first.
pub(super) type Newest = (u64, u128);

const ALL: TableDefinition<Newest, ()> = TableDefinition::new("all");
/// (receiver, newest first) of payments between two users.
const RECEIVED: TableDefinition<(u128, u64, u128), ()> = TableDefinition::new("received");
const KEYS: TableDefinition<(u128, &str), u128> = TableDefinition::new("keys");
const QUOTES: TableDefinition<&str, u128> = TableDefinition::new("quotes");
/// Keyed by (creation time, id): new rows go at the end of the tree and most leave
/// from near it (a payment ends soon after it began), so a commit rewrites few pages.
const OPEN: TableDefinition<(u64, u128), ()> = TableDefinition::new("open");
/// (sender, creation time, id) → the amount the rules count, empty until assessed.
const SENT_BY: TableDefinition<(u128, u64, u128), &[u8]> = TableDefinition::new("sent_by");
/// Tables of an earlier layout (a row per user and payment in `by_user`, assessed
/// payments only in `sent`): an index that has one is rebuilt.
const EARLIER_TABLES: [&str; 2] = ["by_user", "sent"];
const BY_INSTRUMENT: TableDefinition<(&str, u64, u128), &[u8]> = TableDefinition::new("by_instrument");
const PAYEES: TableDefinition<(u128, u128), u128> = TableDefinition::new("payees");

/// redb's page cache for the index, in bytes (the file is about 640 bytes a payment: a
/// 10M-payment index is 6.4 GB, and its random inserts read most leaves back from it).
pub const INDEX_CACHE_BYTES: usize = 256 << 20;

/// A payment's place in newest-first order.
pub(super) fn newest(created_ns: u64, id: u128) -> Newest {
    (u64::MAX - created_ns, u128::MAX - id)
}

/// (creation time, id) of a place in newest-first order.
pub(super) fn of_newest(at: Newest) -> (u64, u128) {
    (u64::MAX - at.0, u128::MAX - at.1)
}

fn err(error: impl std::fmt::Display) -> PaymentsError {
    PaymentsError::Internal(format!("payments index: {error}"))
}

pub(super) fn checkpoint_error(error: CheckpointError) -> PaymentsError {
    match error {
        CheckpointError::Store(error) => PaymentsError::Store(error),
        CheckpointError::Corrupt(_) => PaymentsError::Corrupt(format!("payments index: {error}")),
        CheckpointError::Db(_) => err(error),
    }
}

fn encode_amount(currency: Currency, amount: u64) -> [u8; 11] {
    let mut bytes = [0u8; 11];
    bytes[..3].copy_from_slice(currency.code().as_bytes());
    bytes[3..].copy_from_slice(&amount.to_le_bytes());
    bytes
}

pub(super) fn decode_recent(payment: u128, at: u64, bytes: &[u8]) -> Result<Recent, PaymentsError> {
    let corrupt = || PaymentsError::Corrupt(format!("payments index: an activity row of {} bytes", bytes.len()));
    if bytes.len() != 11 {
        return Err(corrupt());
    }
    let code = std::str::from_utf8(&bytes[..3]).map_err(|_| corrupt())?;
    let currency = Currency::parse(code).map_err(|_| corrupt())?;
    let amount = u64::from_le_bytes(bytes[3..].try_into().map_err(|_| corrupt())?);
    Ok(Recent { payment, at, currency, amount })
}

/// Whether every table that exists in `db` has this build's key and value types.
fn tables_fit(db: &Database) -> Result<bool, PaymentsError> {
    let txn = db.begin_write().map_err(err)?;
    let opened = [
        txn.open_table(ALL).map(drop),
        txn.open_table(RECEIVED).map(drop),
        txn.open_table(KEYS).map(drop),
        txn.open_table(QUOTES).map(drop),
        txn.open_table(OPEN).map(drop),
        txn.open_table(SENT_BY).map(drop),
        txn.open_table(BY_INSTRUMENT).map(drop),
        txn.open_table(PAYEES).map(drop),
    ];
    let mut fit = !txn.list_tables().map_err(err)?.any(|table| EARLIER_TABLES.contains(&table.name()));
    for result in opened {
        match result {
            Ok(()) => {}
            Err(redb::TableError::TableTypeMismatch { .. }) => fit = false,
            Err(error) => return Err(err(error)),
        }
    }
    txn.abort().map_err(err)?;
    Ok(fit)
}

/// The index over one redb file.
pub(super) struct PaymentStore {
    db: Database,
}

impl PaymentStore {
    pub(super) fn open(path: &Path) -> Result<PaymentStore, PaymentsError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let db = Database::builder().set_cache_size(INDEX_CACHE_BYTES).create(path).map_err(err)?;
        if !tables_fit(&db)? {
            // An index of another layout (an earlier build's): emptied, so the start
            // rebuilds it from the log.
            tracing::warn!(path = %path.display(), "the payments index has another layout; rebuilding it");
            log_checkpoint::clear(&db).map_err(checkpoint_error)?;
        }
        let store = PaymentStore { db };
        // Every table exists from the first commit, so reads never meet a missing one.
        store.write(true, |_| Ok(()))?;
        Ok(store)
    }

    /// Runs `change` in one write transaction (durable or not: see `log_checkpoint`).
    pub(super) fn write<T>(
        &self,
        durable: bool,
        change: impl FnOnce(&mut Rows) -> Result<T, PaymentsError>,
    ) -> Result<T, PaymentsError> {
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(err)?;
        let out = {
            let mut rows = Rows {
                all: txn.open_table(ALL).map_err(err)?,
                received: txn.open_table(RECEIVED).map_err(err)?,
                keys: txn.open_table(KEYS).map_err(err)?,
                quotes: txn.open_table(QUOTES).map_err(err)?,
                open: txn.open_table(OPEN).map_err(err)?,
                sent_by: txn.open_table(SENT_BY).map_err(err)?,
                by_instrument: txn.open_table(BY_INSTRUMENT).map_err(err)?,
                payees: txn.open_table(PAYEES).map_err(err)?,
            };
            change(&mut rows)?
        };
        txn.commit().map_err(err)?;
        Ok(out)
    }

    pub(super) fn key(&self, creator: u128, key: &str) -> Result<Option<u128>, PaymentsError> {
        let txn = self.db.begin_read().map_err(err)?;
        Ok(txn.open_table(KEYS).map_err(err)?.get((creator, key)).map_err(err)?.map(|v| v.value()))
    }

    pub(super) fn quote(&self, quote_id: &str) -> Result<Option<u128>, PaymentsError> {
        let txn = self.db.begin_read().map_err(err)?;
        Ok(txn.open_table(QUOTES).map_err(err)?.get(quote_id).map_err(err)?.map(|v| v.value()))
    }

    pub(super) fn payee(&self, sender: u128, receiver: u128) -> Result<Option<u128>, PaymentsError> {
        let txn = self.db.begin_read().map_err(err)?;
        Ok(txn.open_table(PAYEES).map_err(err)?.get((sender, receiver)).map_err(err)?.map(|v| v.value()))
    }

    /// (creation time, id) of the payments not finished (as far as the index knows).
    pub(super) fn open_payments(&self) -> Result<Vec<(u64, u128)>, PaymentsError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(OPEN).map_err(err)?;
        let mut ids = Vec::with_capacity(table.len().map_err(err)? as usize);
        for row in table.iter().map_err(err)? {
            ids.push(row.map_err(err)?.0.value());
        }
        Ok(ids)
    }

    /// Up to `n` places of every payment after `after`, newest first.
    pub(super) fn all_after(&self, after: Option<Newest>, n: usize) -> Result<Vec<Newest>, PaymentsError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(ALL).map_err(err)?;
        let range = match after {
            Some(after) => table.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => table.range::<Newest>(..),
        };
        let mut out = Vec::with_capacity(n.min(1_024));
        for row in range.map_err(err)?.take(n) {
            out.push(row.map_err(err)?.0.value());
        }
        Ok(out)
    }

    /// Up to `n` places of `user`'s payments (sent or received) after `after`, newest
    /// first: the user's `received` and `sent_by` rows merged.
    pub(super) fn user_after(&self, user: u128, after: Option<Newest>, n: usize) -> Result<Vec<Newest>, PaymentsError> {
        let txn = self.db.begin_read().map_err(err)?;
        let received_table = txn.open_table(RECEIVED).map_err(err)?;
        let sent_table = txn.open_table(SENT_BY).map_err(err)?;
        let (received, sent) = user_ranges(user, after);
        let mut places = Vec::with_capacity(n.min(1_024) * 2);
        for row in received_table.range(received).map_err(err)?.take(n) {
            let (_, created, id) = row.map_err(err)?.0.value();
            places.push((created, id));
        }
        for row in sent_table.range(sent).map_err(err)?.rev().take(n) {
            let (_, created_ns, id) = row.map_err(err)?.0.value();
            places.push(newest(created_ns, id));
        }
        Ok(first(places, n))
    }

    /// The last `max` payments `sender` made since `since_ns` and that were assessed,
    /// newest first.
    pub(super) fn sent_since(
        &self,
        sender: u128,
        since_ns: u64,
        max: usize,
        visit: &mut dyn FnMut(Recent),
    ) -> Result<(), PaymentsError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(SENT_BY).map_err(err)?;
        let mut visited = 0;
        for row in table.range((sender, since_ns, 0)..=(sender, u64::MAX, u128::MAX)).map_err(err)?.rev() {
            if visited == max {
                break;
            }
            let (key, value) = row.map_err(err)?;
            if value.value().is_empty() {
                continue; // not assessed yet: the rules do not count it
            }
            let (_, at, payment) = key.value();
            visit(decode_recent(payment, at, value.value())?);
            visited += 1;
        }
        Ok(())
    }

    /// The last `max` payments with `instrument` since `since_ns`, newest first.
    pub(super) fn instrument_since(
        &self,
        instrument: &str,
        since_ns: u64,
        max: usize,
        visit: &mut dyn FnMut(Recent),
    ) -> Result<(), PaymentsError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(BY_INSTRUMENT).map_err(err)?;
        let range = table.range((instrument, since_ns, 0)..=(instrument, u64::MAX, u128::MAX)).map_err(err)?;
        for row in range.rev().take(max) {
            let (key, value) = row.map_err(err)?;
            let (_, at, payment) = key.value();
            visit(decode_recent(payment, at, value.value())?);
        }
        Ok(())
    }

    /// Rows in `keys` (payments of earlier builds, with random ids).
    pub(super) fn keys_held(&self) -> Result<u64, PaymentsError> {
        let txn = self.db.begin_read().map_err(err)?;
        txn.open_table(KEYS).map_err(err)?.len().map_err(err)
    }

    /// Payments in the index.
    pub(super) fn payments_held(&self) -> Result<u64, PaymentsError> {
        let txn = self.db.begin_read().map_err(err)?;
        txn.open_table(ALL).map_err(err)?.len().map_err(err)
    }

    pub(super) fn checkpoint(&self) -> Result<Option<Checkpoint>, PaymentsError> {
        log_checkpoint::read(&self.db).map_err(checkpoint_error)
    }

    pub(super) fn set_checkpoint(&self, checkpoint: Checkpoint) -> Result<(), PaymentsError> {
        log_checkpoint::write(&self.db, checkpoint).map_err(checkpoint_error)
    }

    /// Empties every table (before a rebuild from the log).
    pub(super) fn clear(&self) -> Result<(), PaymentsError> {
        log_checkpoint::clear(&self.db).map_err(checkpoint_error)?;
        self.write(true, |_| Ok(()))
    }
}

/// The index's tables in one write transaction.
pub(super) struct Rows<'t> {
    all: redb::Table<'t, Newest, ()>,
    received: redb::Table<'t, (u128, u64, u128), ()>,
    keys: redb::Table<'t, (u128, &'static str), u128>,
    quotes: redb::Table<'t, &'static str, u128>,
    open: redb::Table<'t, (u64, u128), ()>,
    sent_by: redb::Table<'t, (u128, u64, u128), &'static [u8]>,
    by_instrument: redb::Table<'t, (&'static str, u64, u128), &'static [u8]>,
    payees: redb::Table<'t, (u128, u128), u128>,
}

/// Where a payment's rows go: a write transaction's tables, or the rows in memory
/// not yet written (`super::overlay`).
pub(super) trait RowSink {
    fn all(&mut self, at: Newest) -> Result<(), PaymentsError>;
    fn received(&mut self, row: (u128, u64, u128)) -> Result<(), PaymentsError>;
    /// `None`: not assessed yet (an empty value).
    fn sent_by(&mut self, row: (u128, u64, u128), counted: Option<[u8; 11]>) -> Result<(), PaymentsError>;
    fn by_instrument(&mut self, row: (&str, u64, u128), counted: [u8; 11]) -> Result<(), PaymentsError>;
    fn key(&mut self, creator: u128, key: &str, payment: u128) -> Result<(), PaymentsError>;
    fn quote(&mut self, quote_id: &str, payment: u128) -> Result<(), PaymentsError>;
    /// `present`: the payment is open (a row), or finished (no row).
    fn open(&mut self, open: (u64, u128), present: bool) -> Result<(), PaymentsError>;
    fn payee(&mut self, pair: (u128, u128), payment: u128) -> Result<(), PaymentsError>;
}

/// Every row `payment` makes true (rewriting a row is harmless), and its `open` row
/// taken out once it is finished.
pub(super) fn put(sink: &mut impl RowSink, payment: &Payment) -> Result<(), PaymentsError> {
    put_created(sink, payment)?;
    if let Some(finished) = &payment.finished {
        sink.open((payment.created_ns, payment.id), false)?;
        if finished.status == FinishStatus::Completed {
            sink.payee((payment.sender(), payment.receiver()), payment.id)?;
        }
    }
    Ok(())
}

/// What a payment's creation makes true: its places in the lists (the sender's with
/// its assessment, if it has one), its idempotency key and quote, its `open` row.
fn put_created(sink: &mut impl RowSink, payment: &Payment) -> Result<(), PaymentsError> {
    let id = payment.id;
    let (created, inverted) = newest(payment.created_ns, id);
    sink.all((created, inverted))?;
    let (sender, receiver) = (payment.sender(), payment.receiver());
    if receiver != sender {
        sink.received((receiver, created, inverted))?;
    }
    let (creator, key) = (payment.created_by(), payment.created.idempotency_key.as_str());
    if id != super::id_for_key(creator, key) {
        sink.key(creator, key, id)?;
    }
    if !payment.created.quote_id.is_empty() {
        sink.quote(&payment.created.quote_id, id)?;
    }
    if payment.finished.is_none() {
        sink.open((payment.created_ns, id), true)?;
    }
    match counted(payment) {
        None => sink.sent_by((sender, payment.created_ns, id), None),
        Some(_) => put_assessed(sink, payment),
    }
}

/// What the rules count of an assessed payment, in the sender's row and the
/// instrument's.
fn put_assessed(sink: &mut impl RowSink, payment: &Payment) -> Result<(), PaymentsError> {
    let Some(value) = counted(payment) else { return Ok(()) };
    sink.sent_by((payment.sender(), payment.created_ns, payment.id), Some(value))?;
    if !payment.instrument_id.is_empty() {
        sink.by_instrument((payment.instrument_id.as_str(), payment.created_ns, payment.id), value)?;
    }
    Ok(())
}

/// The rows `change` makes true.
pub(super) fn apply(sink: &mut impl RowSink, change: &Change) -> Result<(), PaymentsError> {
    match change {
        Change::Created(payment) => put_created(sink, payment),
        Change::Assessed(payment) => put_assessed(sink, payment),
        Change::Completed { sender, receiver, payment } => sink.payee((*sender, *receiver), *payment),
    }
}

impl Rows<'_> {
    /// Every row `payment` makes true; see [`put`].
    pub(super) fn put(&mut self, payment: &Payment) -> Result<(), PaymentsError> {
        put(self, payment)
    }

    /// Takes a finished payment's `open` row out (its creation time and id).
    pub(super) fn closed(&mut self, open: (u64, u128)) -> Result<(), PaymentsError> {
        self.open(open, false)
    }
}

impl RowSink for Rows<'_> {
    fn all(&mut self, at: Newest) -> Result<(), PaymentsError> {
        self.all.insert(at, ()).map(drop).map_err(err)
    }

    fn received(&mut self, row: (u128, u64, u128)) -> Result<(), PaymentsError> {
        self.received.insert(row, ()).map(drop).map_err(err)
    }

    fn sent_by(&mut self, row: (u128, u64, u128), counted: Option<[u8; 11]>) -> Result<(), PaymentsError> {
        let value = counted.as_ref().map_or(&[][..], |bytes| bytes.as_slice());
        self.sent_by.insert(row, value).map(drop).map_err(err)
    }

    fn by_instrument(&mut self, row: (&str, u64, u128), counted: [u8; 11]) -> Result<(), PaymentsError> {
        self.by_instrument.insert(row, counted.as_slice()).map(drop).map_err(err)
    }

    fn key(&mut self, creator: u128, key: &str, payment: u128) -> Result<(), PaymentsError> {
        self.keys.insert((creator, key), payment).map(drop).map_err(err)
    }

    fn quote(&mut self, quote_id: &str, payment: u128) -> Result<(), PaymentsError> {
        self.quotes.insert(quote_id, payment).map(drop).map_err(err)
    }

    fn open(&mut self, open: (u64, u128), present: bool) -> Result<(), PaymentsError> {
        match present {
            true => self.open.insert(open, ()).map(drop).map_err(err),
            false => self.open.remove(open).map(drop).map_err(err),
        }
    }

    fn payee(&mut self, pair: (u128, u128), payment: u128) -> Result<(), PaymentsError> {
        self.payees.insert(pair, payment).map(drop).map_err(err)
    }
}

/// A row range of `received` and one of `sent_by` (walked backwards): `user`'s
/// payments after the place `after`, newest first.
type RowRange = (std::ops::Bound<(u128, u64, u128)>, std::ops::Bound<(u128, u64, u128)>);

pub(super) fn user_ranges(user: u128, after: Option<Newest>) -> (RowRange, RowRange) {
    use std::ops::Bound::{Excluded, Included};
    let (received_from, sent_to) = match after {
        Some(at) => {
            let (created_ns, id) = of_newest(at);
            (Excluded((user, at.0, at.1)), Excluded((user, created_ns, id)))
        }
        None => (Included((user, 0, 0)), Included((user, u64::MAX, u128::MAX))),
    };
    ((received_from, Included((user, u64::MAX, u128::MAX))), (Included((user, 0, 0)), sent_to))
}

/// The first `n` distinct places in order (a payment's place can come from two
/// sources: a user's two tables, or the rows in memory and on disk while they are
/// written).
pub(super) fn first(mut places: Vec<Newest>, n: usize) -> Vec<Newest> {
    places.sort_unstable();
    places.dedup();
    places.truncate(n);
    places
}

/// What the risk rules count of an assessed payment (its currency and amount, 0 for a
/// blocked one: an attempt that moved no money); `None` before its assessment.
fn counted(payment: &Payment) -> Option<[u8; 11]> {
    let (Some(currency), Some(decision)) = (payment.currency(), payment.decision) else { return None };
    let amount = if decision == Decision::Block { 0 } else { payment.created.amount };
    Some(encode_amount(currency, amount))
}

/// The rows an append makes true, put in memory before it (`super::overlay`).
pub(super) enum Change {
    /// A payment created (and perhaps assessed in the same append).
    Created(Box<Payment>),
    /// A payment assessed after its creation.
    Assessed(Box<Payment>),
    /// A payment that completed between these two.
    Completed { sender: u128, receiver: u128, payment: u128 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_proto::events::v1 as ev;

    #[test]
    fn ids_for_keys_are_stable_and_tell_creators_and_keys_apart() {
        use super::super::id_for_key;
        let id = id_for_key(7, "key-1");
        assert_eq!(id, id_for_key(7, "key-1"));
        assert!(id > 0 && id < 1 << 127, "127 bits, never 0");
        assert_ne!(id, id_for_key(8, "key-1"));
        assert_ne!(id, id_for_key(7, "key-2"));
        assert_ne!(id_for_key(1, "23"), id_for_key(12, "3"), "the creator is 16 bytes, then the key");
    }

    #[test]
    fn only_a_payment_with_a_random_id_has_a_keys_row() {
        let dir = tempfile::tempdir().expect("dir");
        let store = PaymentStore::open(&dir.path().join("index.redb")).expect("open");
        let payment = |id: u128| {
            let mut payment = Payment { id, created_by: 7, sender: 7, receiver: 8, ..Payment::default() };
            payment.created.idempotency_key = "key-1".into();
            payment
        };
        let derived = super::super::id_for_key(7, "key-1");
        store.write(false, |rows| rows.put(&payment(derived))).expect("write");
        assert_eq!((store.key(7, "key-1").expect("read"), store.keys_held().expect("count")), (None, 0));
        assert_eq!(store.user_after(7, None, 10).expect("read").len(), 1, "its other rows are written");
        // A payment of an earlier build: its id was random, and only its row finds it.
        store.write(false, |rows| rows.put(&payment(derived ^ 1))).expect("write");
        assert_eq!((store.key(7, "key-1").expect("read"), store.keys_held().expect("count")), (Some(derived ^ 1), 1));
    }

    #[test]
    fn a_users_list_merges_what_they_sent_and_received_newest_first_in_pages() {
        let dir = tempfile::tempdir().expect("dir");
        let store = PaymentStore::open(&dir.path().join("index.redb")).expect("open");
        let usd = Currency::parse("USD").expect("usd");
        // Payments among users 1, 2 and 3 at times 10..42 (two at time 18), two in three
        // of them assessed, and one of user 1 to itself (a top-up's parties).
        let parties = [(1, 2), (2, 1), (3, 1), (1, 3), (2, 3), (1, 1), (3, 2), (2, 1), (1, 2)];
        let payments: Vec<Payment> = parties
            .iter()
            .enumerate()
            .map(|(n, &(sender, receiver))| Payment {
                id: 100 + n as u128,
                created_ns: 10 + 4 * n as u64 - u64::from(n == 3) * 4,
                created_by: sender,
                sender,
                receiver,
                currency: Some(usd),
                decision: (n % 3 != 2).then_some(Decision::Allow),
                created: ev::PaymentCreated { amount: 50 + n as u64, ..Default::default() },
                ..Payment::default()
            })
            .collect();
        store.write(false, |rows| payments.iter().try_for_each(|payment| rows.put(payment))).expect("write");
        for user in [1u128, 2, 3, 4] {
            let mut expected: Vec<Newest> = payments
                .iter()
                .filter(|p| p.sender == user || p.receiver == user)
                .map(|p| newest(p.created_ns, p.id))
                .collect();
            expected.sort_unstable();
            for page in [1, 2, 3, 50] {
                let (mut listed, mut after): (Vec<Newest>, Option<Newest>) = (Vec::new(), None);
                loop {
                    let got = store.user_after(user, after, page).expect("read");
                    listed.extend(&got);
                    if got.len() < page {
                        break;
                    }
                    after = got.last().copied();
                }
                assert_eq!(listed, expected, "user {user}, pages of {page}");
            }
        }
        // The rules load what user 1 sent and was assessed, newest first, at most `max`.
        let mut sent = Vec::new();
        store.sent_since(1, 0, 10, &mut |recent| sent.push((recent.payment, recent.amount))).expect("read");
        assert_eq!(sent, vec![(103, 53), (100, 50)], "105 and 108 are not assessed");
        let mut last = Vec::new();
        store.sent_since(1, 0, 1, &mut |recent| last.push(recent.payment)).expect("read");
        assert_eq!(last, vec![103]);
        // Assessed later (a request its payer answered): now counted.
        let mut late = payments[2].clone();
        late.decision = Some(Decision::Block);
        store.write(false, |rows| apply(rows, &Change::Assessed(Box::new(late)))).expect("write");
        let mut blocked = Vec::new();
        store.sent_since(3, 0, 10, &mut |recent| blocked.push((recent.payment, recent.amount))).expect("read");
        assert_eq!(blocked, vec![(106, 56), (102, 0)], "a blocked payment counts as an attempt that moved nothing");
    }

    #[test]
    fn an_index_with_a_row_per_user_and_payment_is_emptied() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("index.redb");
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            let by_user = TableDefinition::<(u128, u64, u128), ()>::new("by_user");
            txn.open_table(by_user).expect("table").insert((7, 1, 2), ()).expect("row");
            txn.commit().expect("commit");
            log_checkpoint::write(&db, Checkpoint { next: 1, hash: Some([0; 32]) }).expect("checkpoint");
        }
        let store = PaymentStore::open(&path).expect("open replaces it");
        assert_eq!(store.checkpoint().expect("read"), None, "so the start rebuilds it from the log");
        let txn = store.db.begin_read().expect("txn");
        let names: Vec<String> = txn.list_tables().expect("tables").map(|t| t.name().to_string()).collect();
        assert!(!names.iter().any(|name| EARLIER_TABLES.contains(&name.as_str())), "{names:?}");
    }

    #[test]
    fn an_index_of_another_layout_is_emptied() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("payments").join("index.redb");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        {
            // The `open` table as an earlier build keyed it (by id alone), with a row.
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(TableDefinition::<u128, ()>::new("open")).expect("table").insert(7, ()).expect("row");
            txn.commit().expect("commit");
        }
        let store = PaymentStore::open(&path).expect("open replaces it");
        assert_eq!(store.open_payments().expect("read"), Vec::<(u64, u128)>::new());
        assert_eq!(store.checkpoint().expect("read"), None, "so the start rebuilds it from the log");
        store.write(false, |rows| rows.closed((1, 2))).expect("the tables have this build's types");
    }
}
