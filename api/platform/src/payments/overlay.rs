//! The payments' index rows not yet on disk: an append puts its rows here before it
//! is made (`Payments::append`), and every reader merges them with the rows of the
//! file (`store`). The checkpoint (`Payments::checkpoint`, every second) writes them
//! in one transaction before it records the log position: rows of a second's payments
//! sorted together share the B-tree pages they land on, where a transaction per few
//! payments rewrote a page for nearly every row. A crash loses only rows of appends
//! after the last checkpoint, which a start re-applies from the log (`start`).
//!
//! Memory: at most `OVERLAY_ROWS_MAX` rows; past it, the append that adds more writes
//! them first (a second's payments at 10,000 a second make about
//! 50,000).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::activity::Recent;
use super::store::{apply, decode_recent, first, newest, user_ranges, Change, Newest, PaymentStore, RowSink};
use super::PaymentsError;

/// Rows the overlay holds at most (each about 100 bytes) before an append writes them.
pub const OVERLAY_ROWS_MAX: usize = 262_144;

/// Rows in memory, keyed as their tables.
#[derive(Clone, Default)]
struct Overlay {
    all: BTreeSet<Newest>,
    received: BTreeSet<(u128, u64, u128)>,
    sent_by: BTreeMap<(u128, u64, u128), Option<[u8; 11]>>,
    by_instrument: BTreeMap<(String, u64, u128), [u8; 11]>,
    keys: HashMap<(u128, String), u128>,
    quotes: HashMap<String, u128>,
    /// `false`: the payment finished, its row goes.
    open: BTreeMap<(u64, u128), bool>,
    payees: HashMap<(u128, u128), u128>,
}

impl RowSink for Overlay {
    fn all(&mut self, at: Newest) -> Result<(), PaymentsError> {
        self.all.insert(at);
        Ok(())
    }

    fn received(&mut self, row: (u128, u64, u128)) -> Result<(), PaymentsError> {
        self.received.insert(row);
        Ok(())
    }

    fn sent_by(&mut self, row: (u128, u64, u128), counted: Option<[u8; 11]>) -> Result<(), PaymentsError> {
        self.sent_by.insert(row, counted);
        Ok(())
    }

    fn by_instrument(
        &mut self,
        (instrument, at, id): (&str, u64, u128),
        counted: [u8; 11],
    ) -> Result<(), PaymentsError> {
        self.by_instrument.insert((instrument.to_string(), at, id), counted);
        Ok(())
    }

    fn key(&mut self, creator: u128, key: &str, payment: u128) -> Result<(), PaymentsError> {
        self.keys.insert((creator, key.to_string()), payment);
        Ok(())
    }

    fn quote(&mut self, quote_id: &str, payment: u128) -> Result<(), PaymentsError> {
        self.quotes.insert(quote_id.to_string(), payment);
        Ok(())
    }

    fn open(&mut self, open: (u64, u128), present: bool) -> Result<(), PaymentsError> {
        // A payment opened and finished before its rows reach the file needs no row.
        if !present && self.open.get(&open) == Some(&true) {
            self.open.remove(&open);
        } else {
            self.open.insert(open, present);
        }
        Ok(())
    }

    fn payee(&mut self, pair: (u128, u128), payment: u128) -> Result<(), PaymentsError> {
        self.payees.insert(pair, payment);
        Ok(())
    }
}

impl Overlay {
    fn write_to(&self, sink: &mut impl RowSink) -> Result<(), PaymentsError> {
        self.all.iter().try_for_each(|at| sink.all(*at))?;
        self.received.iter().try_for_each(|row| sink.received(*row))?;
        self.sent_by.iter().try_for_each(|(row, counted)| sink.sent_by(*row, *counted))?;
        for ((instrument, at, id), counted) in &self.by_instrument {
            sink.by_instrument((instrument, *at, *id), *counted)?;
        }
        self.keys.iter().try_for_each(|((creator, key), id)| sink.key(*creator, key, *id))?;
        self.quotes.iter().try_for_each(|(quote, id)| sink.quote(quote, *id))?;
        self.open.iter().try_for_each(|(open, present)| sink.open(*open, *present))?;
        self.payees.iter().try_for_each(|(pair, id)| sink.payee(*pair, *id))
    }

    /// Puts back rows a failed write took out, under the newer ones.
    fn absorb(&mut self, older: Overlay) {
        under(&mut self.all, older.all);
        under(&mut self.received, older.received);
        under(&mut self.sent_by, older.sent_by);
        under(&mut self.by_instrument, older.by_instrument);
        under(&mut self.keys, older.keys);
        under(&mut self.quotes, older.quotes);
        under(&mut self.open, older.open);
        under(&mut self.payees, older.payees);
    }

    /// Rows held.
    fn rows(&self) -> usize {
        self.all.len()
            + self.received.len()
            + self.sent_by.len()
            + self.by_instrument.len()
            + self.keys.len()
            + self.quotes.len()
            + self.open.len()
            + self.payees.len()
    }
}

/// `older`'s rows put back under `newer`'s: where both hold a key, `newer`'s value stays.
fn under<T: Default + Extend<R> + IntoIterator<Item = R>, R>(newer: &mut T, mut older: T) {
    older.extend(std::mem::take(newer));
    *newer = older;
}

/// The rows being put (`active`) and, while a checkpoint writes them, the ones it took.
#[derive(Default)]
struct Layers {
    active: Overlay,
    writing: Option<Arc<Overlay>>,
}

impl Layers {
    /// The newer layer first.
    fn each(&self) -> impl Iterator<Item = &Overlay> {
        std::iter::once(&self.active).chain(self.writing.as_deref())
    }
}

struct Shared {
    disk: Arc<PaymentStore>,
    layers: Mutex<Layers>,
    /// One write of the overlay at a time.
    writer: Mutex<()>,
}

impl Shared {
    fn layers(&self) -> MutexGuard<'_, Layers> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the rows put so far to the file in one transaction (not durable: the
    /// checkpoint's commit after it is).
    fn write(&self) -> Result<(), PaymentsError> {
        let _one = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let taken = {
            let mut layers = self.layers();
            let taken = Arc::new(std::mem::take(&mut layers.active));
            layers.writing = Some(taken.clone());
            taken
        };
        let written = self.disk.write(false, |rows| taken.write_to(rows));
        let mut layers = self.layers();
        layers.writing = None;
        if written.is_err() {
            // Readers use the layers only under the lock: this is the last reference.
            layers.active.absorb(Arc::unwrap_or_clone(taken));
        }
        written
    }
}

/// The payments' index as the platform reads and writes it while it runs: the file and
/// the rows in memory. A clone shares them.
#[derive(Clone)]
pub(super) struct RowWriter {
    shared: Arc<Shared>,
}

impl RowWriter {
    pub(super) fn new(disk: Arc<PaymentStore>) -> RowWriter {
        RowWriter { shared: Arc::new(Shared { disk, layers: Mutex::default(), writer: Mutex::new(()) }) }
    }

    /// Puts the rows of `changes` in memory; past `OVERLAY_ROWS_MAX`, writes them first.
    pub(super) async fn put(&self, changes: Vec<Change>) -> Result<(), PaymentsError> {
        let full = {
            let mut layers = self.shared.layers();
            changes.iter().try_for_each(|change| apply(&mut layers.active, change))?;
            layers.active.rows() >= OVERLAY_ROWS_MAX
        };
        if full {
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || shared.write())
                .await
                .map_err(|e| PaymentsError::Internal(format!("payments index: {e}")))??;
        }
        Ok(())
    }

    /// A finished payment (creation time, id): its `open` row goes.
    pub(super) fn closed(&self, created_ns: u64, id: u128) {
        // An overlay's rows are never refused.
        let _ = self.shared.layers().active.open((created_ns, id), false);
    }

    /// Writes the rows in memory to the file, from a thread outside the async runtime
    /// (the checkpoint's).
    pub(super) fn flush_blocking(&self) -> Result<(), PaymentsError> {
        self.shared.write()
    }

    pub(super) fn key(&self, creator: u128, key: &str) -> Result<Option<u128>, PaymentsError> {
        let found = self.shared.layers().each().find_map(|o| o.keys.get(&(creator, key.to_string())).copied());
        found.map_or_else(|| self.shared.disk.key(creator, key), |id| Ok(Some(id)))
    }

    pub(super) fn quote(&self, quote_id: &str) -> Result<Option<u128>, PaymentsError> {
        let found = self.shared.layers().each().find_map(|o| o.quotes.get(quote_id).copied());
        found.map_or_else(|| self.shared.disk.quote(quote_id), |id| Ok(Some(id)))
    }

    pub(super) fn payee(&self, sender: u128, receiver: u128) -> Result<Option<u128>, PaymentsError> {
        let found = self.shared.layers().each().find_map(|o| o.payees.get(&(sender, receiver)).copied());
        found.map_or_else(|| self.shared.disk.payee(sender, receiver), |id| Ok(Some(id)))
    }

    /// Up to `n` places of every payment after `after`, newest first.
    pub(super) fn all_after(&self, after: Option<Newest>, n: usize) -> Result<Vec<Newest>, PaymentsError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut places: Vec<Newest> = {
            let layers = self.shared.layers();
            let from = after.map_or(Unbounded, Excluded);
            layers.each().flat_map(|o| o.all.range((from, Unbounded)).take(n).copied()).collect()
        };
        places.extend(self.shared.disk.all_after(after, n)?);
        Ok(first(places, n))
    }

    /// Up to `n` places of `user`'s payments (sent or received) after `after`, newest
    /// first.
    pub(super) fn user_after(&self, user: u128, after: Option<Newest>, n: usize) -> Result<Vec<Newest>, PaymentsError> {
        let mut places: Vec<Newest> = {
            let layers = self.shared.layers();
            let (received, sent) = user_ranges(user, after);
            let mut places = Vec::new();
            for overlay in layers.each() {
                places.extend(overlay.received.range(received).take(n).map(|row| (row.1, row.2)));
                let sent = overlay.sent_by.range(sent).rev();
                places.extend(sent.take(n).map(|(row, _)| newest(row.1, row.2)));
            }
            places
        };
        places.extend(self.shared.disk.user_after(user, after, n)?);
        Ok(first(places, n))
    }

    /// The last `max` assessed payments `sender` made since `since_ns`, newest first.
    pub(super) fn sent_since(
        &self,
        sender: u128,
        since_ns: u64,
        max: usize,
        visit: &mut dyn FnMut(Recent),
    ) -> Result<(), PaymentsError> {
        let mut recent = Vec::new();
        for overlay in self.shared.layers().each() {
            let rows = overlay.sent_by.range((sender, since_ns, 0)..=(sender, u64::MAX, u128::MAX)).rev();
            for ((_, at, id), counted) in rows.filter_map(|(row, counted)| counted.map(|c| (*row, c))).take(max) {
                recent.push(decode_recent(id, at, &counted)?);
            }
        }
        self.shared.disk.sent_since(sender, since_ns, max, &mut |r| recent.push(r))?;
        newest_recent(recent, max).into_iter().for_each(visit);
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
        let mut recent = Vec::new();
        for overlay in self.shared.layers().each() {
            let from = (instrument.to_string(), since_ns, 0);
            let to = (instrument.to_string(), u64::MAX, u128::MAX);
            for ((_, at, id), counted) in overlay.by_instrument.range(from..=to).rev().take(max) {
                recent.push(decode_recent(*id, *at, counted)?);
            }
        }
        self.shared.disk.instrument_since(instrument, since_ns, max, &mut |r| recent.push(r))?;
        newest_recent(recent, max).into_iter().for_each(visit);
        Ok(())
    }
}

/// The newest `max` distinct payments of `recent`, newest first.
fn newest_recent(mut recent: Vec<Recent>, max: usize) -> Vec<Recent> {
    recent.sort_unstable_by_key(|r| std::cmp::Reverse((r.at, r.payment)));
    recent.dedup_by_key(|r| r.payment);
    recent.truncate(max);
    recent
}

#[cfg(test)]
mod tests {
    use super::super::kinds::Decision;
    use super::super::saga::Payment;
    use super::super::store::of_newest;
    use super::*;
    use ledger_core::money::Currency;

    fn payment(id: u128, at: u64, sender: u128, receiver: u128) -> Payment {
        let mut payment = Payment {
            id,
            created_ns: at,
            created_by: sender,
            sender,
            receiver,
            currency: Some(Currency::parse("USD").expect("usd")),
            decision: Some(Decision::Allow),
            ..Payment::default()
        };
        payment.created.amount = 10 + id as u64;
        payment.created.quote_id = format!("q{id}");
        payment
    }

    fn created(payments: &[Payment]) -> Vec<Change> {
        payments.iter().map(|p| Change::Created(Box::new(p.clone()))).collect()
    }

    fn listed(index: &RowWriter, user: Option<u128>, page: usize) -> Vec<u128> {
        let (mut all, mut after) = (Vec::new(), None);
        loop {
            let got = match user {
                Some(user) => index.user_after(user, after, page).expect("read"),
                None => index.all_after(after, page).expect("read"),
            };
            all.extend(got.iter().map(|at| of_newest(*at).1));
            if got.len() < page {
                return all;
            }
            after = got.last().copied();
        }
    }

    fn sent(index: &RowWriter, user: u128) -> Vec<u128> {
        let mut ids = Vec::new();
        index.sent_since(user, 0, 100, &mut |r| ids.push(r.payment)).expect("read");
        ids
    }

    #[test]
    fn rows_a_failed_write_took_go_back_under_the_newer_ones() {
        let mut older = Overlay::default();
        older.sent_by.insert((1, 10, 7), None);
        older.sent_by.insert((1, 11, 8), None);
        older.all.insert(newest(10, 7));
        older.open.insert((10, 7), true);
        let mut newer = Overlay::default();
        newer.sent_by.insert((1, 10, 7), Some([3; 11]));
        newer.open.insert((10, 7), false);
        newer.absorb(older);
        assert_eq!(newer.sent_by.get(&(1, 10, 7)), Some(&Some([3; 11])), "the newer row stays");
        assert_eq!(newer.sent_by.get(&(1, 11, 8)), Some(&None), "an older row comes back");
        assert!(newer.all.contains(&newest(10, 7)));
        assert_eq!(newer.open.get(&(10, 7)), Some(&false), "the finish stays over the opening");
        assert_eq!(newer.rows(), 4);
    }

    #[tokio::test]
    async fn rows_in_memory_and_on_disk_read_as_one_index() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = Arc::new(PaymentStore::open(&dir.path().join("index.redb")).expect("open"));
        let index = RowWriter::new(disk.clone());
        let early = [payment(1, 10, 7, 8), payment(2, 20, 8, 7), payment(3, 30, 7, 9)];
        index.put(created(&early)).await.expect("put");
        // Read from memory before anything is written.
        assert_eq!(listed(&index, Some(7), 2), [3, 2, 1]);
        assert_eq!(disk.user_after(7, None, 10).expect("read"), Vec::<Newest>::new(), "nothing on disk yet");
        index.closed(20, 2); // finished before its rows reach the file: no open row at all
        index.flush_blocking().expect("write");
        assert_eq!(disk.open_payments().expect("read"), vec![(10, 1), (30, 3)]);
        // Later payments in memory, earlier ones on disk: one list, newest first, in pages.
        let late = [payment(4, 25, 9, 7), payment(5, 40, 7, 8)];
        index.put(created(&late)).await.expect("put");
        index.closed(10, 1);
        for page in [1, 2, 10] {
            assert_eq!(listed(&index, Some(7), page), [5, 3, 4, 2, 1], "pages of {page}");
            assert_eq!(listed(&index, None, page), [5, 3, 4, 2, 1], "pages of {page}");
        }
        assert_eq!(sent(&index, 7), [5, 3, 1]);
        assert_eq!(index.quote("q4").expect("read"), Some(4));
        assert_eq!(index.quote("q1").expect("read"), Some(1));
        index.put(vec![Change::Completed { sender: 9, receiver: 7, payment: 4 }]).await.expect("put");
        assert_eq!(index.payee(9, 7).expect("read"), Some(4));
        index.flush_blocking().expect("write");
        assert_eq!(disk.open_payments().expect("read"), vec![(25, 4), (30, 3), (40, 5)]);
        assert_eq!(listed(&index, Some(7), 2), [5, 3, 4, 2, 1], "each once, all on disk now");
        assert_eq!((disk.payee(9, 7).expect("read"), disk.payments_held().expect("read")), (Some(4), 5));
    }
}
