//! The payments' index on disk (`<data-dir>/payments/index/`, an LSM tree: fjall): what
//! must be found without knowing a payment's stream, so that a start reads no finished
//! payment.
//!
//! - `all` and `by_user`: every payment, and each user's (sent or received), newest
//!   first, for the lists;
//! - `keys`: (creator, idempotency key) → payment; `quotes`: quote → the payment that
//!   executed it;
//! - `open`: the payments not finished, which a start loads and drives;
//! - `sent` and `by_instrument`: (sender or instrument, creation time, payment) → the
//!   amount the risk rules count (0 for a blocked payment), for the last day's
//!   activity of a user or an instrument, loaded when the rules first need it;
//! - `payees`: (sender, receiver) → a payment that completed between them;
//! - `meta`: the checkpoint and the layout.
//!
//! Keys are their fields big-endian, so byte order is the fields' order; a string in a
//! key that other fields follow is preceded by its length (2 bytes). The rows many
//! appends make are one write batch (`RowWriter`): written to the journal and handed to
//! the operating system when committed, synced by the checkpoint's batch. An LSM tree
//! appends where a B-tree rewrote the pages each commit touched (about 54 µs of CPU a
//! payment against 20 µs at 1.5M payments: `tools/index-bench`).
//!
//! Like the users' index, it is a locator checked against the payment it names, and its
//! rows are written before the append that makes them true (see `Payments::append`),
//! with a checkpoint of the log position every second (`crate::log_checkpoint`); what
//! an append makes untrue (a payment no longer open) is removed after it. A start
//! re-applies the payment events after the checkpoint, by folding each payment they
//! belong to, or rebuilds the index from every payment stream when the checkpoint does
//! not match the log, or the index is of another layout (an earlier build's redb file
//! `index.redb` beside it is removed).

use std::path::Path;

use fjall::{Keyspace, PersistMode};
use ledger_core::money::Currency;

use super::activity::Recent;
use super::kinds::{Decision, FinishStatus};
use super::saga::Payment;
use super::PaymentsError;
use crate::log_checkpoint::{self, Checkpoint, CheckpointError};

/// Newest first: creation time and id stored inverted, so ascending order is newest first.
type Newest = (u64, u128);

/// The index's block cache, in bytes.
pub const INDEX_CACHE_BYTES: u64 = 64 << 20;
/// Most bytes of a keyspace's memtable before it is flushed to a table (nine
/// keyspaces, so at most about 72 MiB of rows in memory, and those being flushed).
const MEMTABLE_BYTES: u64 = 8 << 20;
/// Most bytes of the index's journals before the oldest memtables are flushed.
const JOURNAL_BYTES_MAX: u64 = 64 << 20;
/// The layout row: an index without it, or with another, is rebuilt from the log.
const LAYOUT: &[u8] = b"payments index 1: fjall, big-endian fields";
const LAYOUT_KEY: &[u8] = b"layout";
const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// The file of the index in earlier builds (redb), removed at open.
const EARLIER_FILE: &str = "index.redb";

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

fn corrupt(what: &str, bytes: usize) -> PaymentsError {
    PaymentsError::Corrupt(format!("payments index: {what} of {bytes} bytes"))
}

pub(super) fn checkpoint_error(error: CheckpointError) -> PaymentsError {
    match error {
        CheckpointError::Store(error) => PaymentsError::Store(error),
        CheckpointError::Corrupt(_) => PaymentsError::Corrupt(format!("payments index: {error}")),
        CheckpointError::Db(_) => err(error),
    }
}

/// (u64, u128) as a key.
fn key_24(a: u64, b: u128) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&a.to_be_bytes());
    key[8..].copy_from_slice(&b.to_be_bytes());
    key
}

/// (u128, u128) as a key.
fn key_32(a: u128, b: u128) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(&a.to_be_bytes());
    key[16..].copy_from_slice(&b.to_be_bytes());
    key
}

/// (u128, u64, u128) as a key.
fn key_40(a: u128, b: u64, c: u128) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..16].copy_from_slice(&a.to_be_bytes());
    key[16..].copy_from_slice(&key_24(b, c));
    key
}

/// (u128, string) as a key: the string last, so no length.
fn key_owned_str(owner: u128, text: &str) -> Vec<u8> {
    let mut key = owner.to_be_bytes().to_vec();
    key.extend_from_slice(text.as_bytes());
    key
}

/// (string, u64, u128) as a key: the string's length (2 bytes) first, so that one
/// string's keys are together.
fn key_str_24(text: &str, b: u64, c: u128) -> Result<Vec<u8>, PaymentsError> {
    let len = u16::try_from(text.len()).map_err(|_| err(format!("an instrument id of {} bytes", text.len())))?;
    let mut key = len.to_be_bytes().to_vec();
    key.extend_from_slice(text.as_bytes());
    key.extend_from_slice(&key_24(b, c));
    Ok(key)
}

/// The (u64, u128) at the end of `key`.
fn tail_24(key: &[u8]) -> Result<(u64, u128), PaymentsError> {
    let at = key.len().checked_sub(24).ok_or_else(|| corrupt("a key", key.len()))?;
    let a = u64::from_be_bytes(key[at..at + 8].try_into().map_err(|_| corrupt("a key", key.len()))?);
    let b = u128::from_be_bytes(key[at + 8..].try_into().map_err(|_| corrupt("a key", key.len()))?);
    Ok((a, b))
}

fn id_value(bytes: &[u8]) -> Result<u128, PaymentsError> {
    Ok(u128::from_be_bytes(bytes.try_into().map_err(|_| corrupt("a payment id", bytes.len()))?))
}

fn encode_amount(currency: Currency, amount: u64) -> [u8; 11] {
    let mut bytes = [0u8; 11];
    bytes[..3].copy_from_slice(currency.code().as_bytes());
    bytes[3..].copy_from_slice(&amount.to_le_bytes());
    bytes
}

fn decode_recent(payment: u128, at: u64, bytes: &[u8]) -> Result<Recent, PaymentsError> {
    let corrupt = || PaymentsError::Corrupt(format!("payments index: an activity row of {} bytes", bytes.len()));
    if bytes.len() != 11 {
        return Err(corrupt());
    }
    let code = std::str::from_utf8(&bytes[..3]).map_err(|_| corrupt())?;
    let currency = Currency::parse(code).map_err(|_| corrupt())?;
    let amount = u64::from_le_bytes(bytes[3..].try_into().map_err(|_| corrupt())?);
    Ok(Recent { payment, at, currency, amount })
}

/// The index in one fjall database.
pub(super) struct PaymentStore {
    db: fjall::Database,
    all: Keyspace,
    by_user: Keyspace,
    keys: Keyspace,
    quotes: Keyspace,
    open: Keyspace,
    sent: Keyspace,
    by_instrument: Keyspace,
    payees: Keyspace,
    meta: Keyspace,
}

impl PaymentStore {
    /// Opens the index in directory `path`, or makes an empty one.
    pub(super) fn open(path: &Path) -> Result<PaymentStore, PaymentsError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
            match std::fs::remove_file(parent.join(EARLIER_FILE)) {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), "an earlier build's payments index removed; rebuilding it")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(e)),
            }
        }
        let db = fjall::Database::builder(path)
            .cache_size(INDEX_CACHE_BYTES)
            .max_journaling_size(JOURNAL_BYTES_MAX)
            // Each batch reaches the operating system when committed (a killed process
            // loses none); the checkpoint syncs.
            .manual_journal_persist(false)
            .worker_threads(1)
            .open()
            .map_err(err)?;
        let options = || fjall::KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        let keyspace = |name: &str| db.keyspace(name, options).map_err(err);
        let store = PaymentStore {
            all: keyspace("all")?,
            by_user: keyspace("by_user")?,
            keys: keyspace("keys")?,
            quotes: keyspace("quotes")?,
            open: keyspace("open")?,
            sent: keyspace("sent")?,
            by_instrument: keyspace("by_instrument")?,
            payees: keyspace("payees")?,
            meta: keyspace("meta")?,
            db,
        };
        if store.meta.get(LAYOUT_KEY).map_err(err)?.as_deref() != Some(LAYOUT) {
            if !store.meta.is_empty().map_err(err)? {
                tracing::warn!(path = %path.display(), "the payments index has another layout; rebuilding it");
            }
            store.clear()?;
        }
        Ok(store)
    }

    /// Runs `change` in one write batch; a durable one syncs it and every batch before.
    pub(super) fn write<T>(
        &self,
        durable: bool,
        change: impl FnOnce(&mut Rows) -> Result<T, PaymentsError>,
    ) -> Result<T, PaymentsError> {
        let mut rows = Rows { store: self, batch: self.db.batch() };
        let out = change(&mut rows)?;
        rows.batch.commit().map_err(err)?;
        if durable {
            self.db.persist(PersistMode::SyncAll).map_err(err)?;
        }
        Ok(out)
    }

    pub(super) fn key(&self, creator: u128, key: &str) -> Result<Option<u128>, PaymentsError> {
        let row = self.keys.get(key_owned_str(creator, key)).map_err(err)?;
        row.map(|id| id_value(&id)).transpose()
    }

    pub(super) fn quote(&self, quote_id: &str) -> Result<Option<u128>, PaymentsError> {
        self.quotes.get(quote_id).map_err(err)?.map(|id| id_value(&id)).transpose()
    }

    pub(super) fn payee(&self, sender: u128, receiver: u128) -> Result<Option<u128>, PaymentsError> {
        self.payees.get(key_32(sender, receiver)).map_err(err)?.map(|id| id_value(&id)).transpose()
    }

    /// (creation time, id) of the payments not finished (as far as the index knows).
    pub(super) fn open_payments(&self) -> Result<Vec<(u64, u128)>, PaymentsError> {
        let mut ids = Vec::new();
        for row in self.open.iter() {
            ids.push(tail_24(&row.key().map_err(err)?)?);
        }
        Ok(ids)
    }

    /// Up to `n` places of every payment after `after`, newest first.
    pub(super) fn all_after(&self, after: Option<Newest>, n: usize) -> Result<Vec<Newest>, PaymentsError> {
        let rows = match after {
            Some((created, id)) => self
                .all
                .range::<&[u8], _>((std::ops::Bound::Excluded(&key_24(created, id)[..]), std::ops::Bound::Unbounded)),
            None => self.all.iter(),
        };
        let mut out = Vec::with_capacity(n.min(1_024));
        for row in rows.take(n) {
            out.push(tail_24(&row.key().map_err(err)?)?);
        }
        Ok(out)
    }

    /// Up to `n` places of `user`'s payments after `after`, newest first.
    pub(super) fn user_after(&self, user: u128, after: Option<Newest>, n: usize) -> Result<Vec<Newest>, PaymentsError> {
        let from = match after {
            Some((created, id)) => std::ops::Bound::Excluded(key_40(user, created, id)),
            None => std::ops::Bound::Included(key_40(user, 0, 0)),
        };
        let to = std::ops::Bound::Included(key_40(user, u64::MAX, u128::MAX));
        let mut out = Vec::with_capacity(n.min(1_024));
        for row in self.by_user.range((from, to)).take(n) {
            out.push(tail_24(&row.key().map_err(err)?)?);
        }
        Ok(out)
    }

    /// The last `max` payments `sender` made since `since_ns`, oldest first.
    pub(super) fn sent_since(&self, sender: u128, since_ns: u64, max: usize) -> Result<Vec<Recent>, PaymentsError> {
        recent(&self.sent, key_40(sender, since_ns, 0).to_vec(), key_40(sender, u64::MAX, u128::MAX).to_vec(), max)
    }

    /// The last `max` payments with `instrument` since `since_ns`, oldest first.
    pub(super) fn instrument_since(
        &self,
        instrument: &str,
        since_ns: u64,
        max: usize,
    ) -> Result<Vec<Recent>, PaymentsError> {
        let (from, to) = (key_str_24(instrument, since_ns, 0)?, key_str_24(instrument, u64::MAX, u128::MAX)?);
        recent(&self.by_instrument, from, to, max)
    }

    /// About how many payments the index holds, without reading them (a count read
    /// every row: 0.5 s at 1M payments): rows written twice (a catch-up writes a
    /// payment's rows again) count twice until a compaction merges them.
    pub(super) fn payments_about(&self) -> u64 {
        self.all.approximate_len() as u64
    }

    pub(super) fn checkpoint(&self) -> Result<Option<Checkpoint>, PaymentsError> {
        let row = self.meta.get(CHECKPOINT_KEY).map_err(err)?;
        row.map(|bytes| log_checkpoint::decode(&bytes)).transpose().map_err(checkpoint_error)
    }

    /// Records `checkpoint` in a durable batch, which makes every earlier one durable.
    pub(super) fn set_checkpoint(&self, checkpoint: Checkpoint) -> Result<(), PaymentsError> {
        let mut batch = self.db.batch();
        batch.insert(&self.meta, CHECKPOINT_KEY, log_checkpoint::encode(checkpoint));
        batch.commit().map_err(err)?;
        self.db.persist(PersistMode::SyncAll).map_err(err)
    }

    /// Empties every keyspace, the checkpoint first (before a rebuild from the log), and
    /// records this build's layout.
    pub(super) fn clear(&self) -> Result<(), PaymentsError> {
        self.meta.remove(CHECKPOINT_KEY).map_err(err)?;
        self.db.persist(PersistMode::SyncAll).map_err(err)?;
        let keyspaces = [&self.all, &self.by_user, &self.keys, &self.quotes, &self.open, &self.sent];
        for keyspace in keyspaces.into_iter().chain([&self.by_instrument, &self.payees, &self.meta]) {
            keyspace.clear().map_err(err)?;
        }
        self.meta.insert(LAYOUT_KEY, LAYOUT).map_err(err)?;
        self.db.persist(PersistMode::SyncAll).map_err(err)
    }
}

/// Up to the last `max` activity rows of `keyspace` from `from` to `to` (both
/// included), oldest first.
fn recent(keyspace: &Keyspace, from: Vec<u8>, to: Vec<u8>, max: usize) -> Result<Vec<Recent>, PaymentsError> {
    let mut out = Vec::new();
    for row in keyspace.range(from..=to).rev().take(max) {
        let (key, value) = row.into_inner().map_err(err)?;
        let (at, payment) = tail_24(&key)?;
        out.push(decode_recent(payment, at, &value)?);
    }
    out.reverse();
    Ok(out)
}

/// The index's rows in one write batch.
pub(super) struct Rows<'s> {
    store: &'s PaymentStore,
    batch: fjall::OwnedWriteBatch,
}

impl Rows<'_> {
    /// Every row `payment` makes true (rewriting a row is harmless), and its `open` row
    /// taken out once it is finished.
    pub(super) fn put(&mut self, payment: &Payment) -> Result<(), PaymentsError> {
        self.put_created(payment)?;
        match &payment.finished {
            None => {}
            Some(finished) => {
                self.closed((payment.created_ns, payment.id))?;
                if finished.status == FinishStatus::Completed {
                    self.put_payee(payment.sender(), payment.receiver(), payment.id)?;
                }
            }
        }
        Ok(())
    }

    /// What a payment's creation makes true: its places in the lists, its idempotency
    /// key and quote, its `open` row, and its assessment if it has one.
    fn put_created(&mut self, payment: &Payment) -> Result<(), PaymentsError> {
        let (id, store) = (payment.id, self.store);
        let (created, inverted) = newest(payment.created_ns, id);
        self.batch.insert(&store.all, key_24(created, inverted), []);
        for user in [payment.sender(), payment.receiver()] {
            self.batch.insert(&store.by_user, key_40(user, created, inverted), []);
        }
        let key = key_owned_str(payment.created_by(), &payment.created.idempotency_key);
        self.batch.insert(&store.keys, key, id.to_be_bytes());
        if !payment.created.quote_id.is_empty() {
            self.batch.insert(&store.quotes, payment.created.quote_id.as_str(), id.to_be_bytes());
        }
        if payment.finished.is_none() {
            self.batch.insert(&store.open, key_24(payment.created_ns, id), []);
        }
        self.put_assessed(payment)
    }

    /// What the rules count of an assessed payment.
    fn put_assessed(&mut self, payment: &Payment) -> Result<(), PaymentsError> {
        let (Some(currency), Some(decision)) = (payment.currency(), payment.decision) else { return Ok(()) };
        // A blocked payment counts as an attempt, but moved no money.
        let amount = if decision == Decision::Block { 0 } else { payment.created.amount };
        let value = encode_amount(currency, amount);
        let store = self.store;
        self.batch.insert(&store.sent, key_40(payment.sender(), payment.created_ns, payment.id), value);
        if !payment.instrument_id.is_empty() {
            let key = key_str_24(&payment.instrument_id, payment.created_ns, payment.id)?;
            self.batch.insert(&store.by_instrument, key, value);
        }
        Ok(())
    }

    fn put_payee(&mut self, sender: u128, receiver: u128, payment: u128) -> Result<(), PaymentsError> {
        self.batch.insert(&self.store.payees, key_32(sender, receiver), payment.to_be_bytes());
        Ok(())
    }

    fn apply(&mut self, change: &Change) -> Result<(), PaymentsError> {
        match change {
            Change::Created(payment) => self.put_created(payment),
            Change::Assessed(payment) => self.put_assessed(payment),
            Change::Completed { sender, receiver, payment } => self.put_payee(*sender, *receiver, *payment),
        }
    }

    /// Takes a finished payment's `open` row out (its creation time and id).
    pub(super) fn closed(&mut self, open: (u64, u128)) -> Result<(), PaymentsError> {
        self.batch.remove(&self.store.open, key_24(open.0, open.1));
        Ok(())
    }
}

/// Most payments' rows one index transaction writes.
const ROWS_BATCH_MAX: usize = 1_024;
/// Row writes waiting for the writer thread at most; more wait to be queued.
const ROWS_QUEUE_MAX: usize = 4_096;

/// The rows an append makes true, written before it.
pub(super) enum Change {
    /// A payment created (and perhaps assessed in the same append).
    Created(Box<Payment>),
    /// A payment assessed after its creation.
    Assessed(Box<Payment>),
    /// A payment that completed between these two.
    Completed { sender: u128, receiver: u128, payment: u128 },
}

/// One request to the row writer: the changes of one append (none, to flush the
/// `open` rows of finished payments), and where to answer once they are committed.
struct Job {
    changes: Vec<Change>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Writes rows from many concurrent appends in one transaction each time (a group
/// commit, on a thread of its own): a batch's commit costs more than the rows in it.
pub(super) struct RowWriter {
    jobs: tokio::sync::mpsc::Sender<Job>,
    /// Payments finished since the last batch, whose `open` rows go with the next one.
    closed: std::sync::Arc<std::sync::Mutex<Vec<(u64, u128)>>>,
}

impl RowWriter {
    pub(super) fn start(store: std::sync::Arc<PaymentStore>) -> Result<RowWriter, PaymentsError> {
        let (jobs, mut queue) = tokio::sync::mpsc::channel::<Job>(ROWS_QUEUE_MAX);
        let closed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let pending = closed.clone();
        std::thread::Builder::new()
            .name("payments-index".into())
            .spawn(move || {
                while let Some(first) = queue.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < ROWS_BATCH_MAX {
                        match queue.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let ended = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
                    let written = store.write(false, |rows| {
                        ended.iter().try_for_each(|open| rows.closed(*open))?;
                        batch.iter().flat_map(|job| &job.changes).try_for_each(|change| rows.apply(change))
                    });
                    let answer = written.as_ref().map(|_| ()).map_err(|e| e.to_string());
                    if answer.is_err() {
                        // Tried again with the next batch.
                        pending.lock().unwrap_or_else(|p| p.into_inner()).extend(ended);
                    }
                    for job in batch {
                        let _ = job.done.send(answer.clone());
                    }
                }
            })
            .map_err(err)?;
        Ok(RowWriter { jobs, closed })
    }

    /// Writes the rows of `changes` (and the pending `open` clean-up); answers once
    /// committed.
    pub(super) async fn put(&self, changes: Vec<Change>) -> Result<(), PaymentsError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = Job { changes, done };
        self.jobs.send(job).await.map_err(|_| err("the row writer stopped"))?;
        answer.await.map_err(|_| err("the row writer stopped"))?.map_err(err)
    }

    /// Commits what is pending, from a thread outside the async runtime (the
    /// checkpoint's).
    pub(super) fn flush_blocking(&self) -> Result<(), PaymentsError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = Job { changes: Vec::new(), done };
        self.jobs.blocking_send(job).map_err(|_| err("the row writer stopped"))?;
        answer.blocking_recv().map_err(|_| err("the row writer stopped"))?.map_err(err)
    }

    /// A finished payment (creation time, id) whose `open` row goes with the next batch.
    pub(super) fn closed(&self, created_ns: u64, id: u128) {
        self.closed.lock().unwrap_or_else(|p| p.into_inner()).push((created_ns, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_in(dir: &Path) -> std::path::PathBuf {
        dir.join("payments").join("index")
    }

    #[test]
    fn an_index_of_another_layout_or_an_earlier_file_is_emptied() {
        let dir = tempfile::tempdir().expect("dir");
        let path = index_in(dir.path());
        {
            let store = PaymentStore::open(&path).expect("open");
            store
                .write(false, |rows| {
                    rows.batch.insert(&rows.store.open, key_24(1, 2), []);
                    Ok(())
                })
                .expect("row");
            store.set_checkpoint(Checkpoint { next: 5, hash: None }).expect("checkpoint");
            // As an index of another layout would have it.
            store.meta.insert(LAYOUT_KEY, b"payments index 0").expect("layout");
            store.db.persist(PersistMode::SyncAll).expect("sync");
        }
        let store = PaymentStore::open(&path).expect("open replaces it");
        assert_eq!(store.open_payments().expect("read"), Vec::<(u64, u128)>::new());
        assert_eq!(store.checkpoint().expect("read"), None, "so the start rebuilds it from the log");
        store.write(false, |rows| rows.closed((1, 2))).expect("a batch");
        store.set_checkpoint(Checkpoint { next: 7, hash: Some([3; 32]) }).expect("checkpoint");
        drop(store);

        let store = PaymentStore::open(&path).expect("reopen");
        assert_eq!(store.checkpoint().expect("read"), Some(Checkpoint { next: 7, hash: Some([3; 32]) }));
        drop(store);
        // An earlier build's redb file beside it: removed, and the index rebuilt.
        std::fs::write(path.parent().expect("parent").join(EARLIER_FILE), b"redb").expect("file");
        let store = PaymentStore::open(&path).expect("reopen");
        assert!(!path.parent().expect("parent").join(EARLIER_FILE).exists());
        assert_eq!(store.checkpoint().expect("read"), Some(Checkpoint { next: 7, hash: Some([3; 32]) }));
    }

    #[test]
    fn keys_sort_as_their_fields_and_ranges_keep_to_their_owner() {
        let dir = tempfile::tempdir().expect("dir");
        let store = PaymentStore::open(&index_in(dir.path())).expect("open");
        let value = encode_amount(Currency::parse("USD").expect("usd"), 5);
        store
            .write(false, |rows| {
                for (instrument, at, id) in
                    [("ab", 10, 1), ("ab", 300, 2), ("abc", 20, 3), ("a", 400, 4), ("ab", 256, 5)]
                {
                    rows.batch.insert(&rows.store.by_instrument, key_str_24(instrument, at, id)?, value);
                }
                for (sender, at, id) in
                    [(7u128, 10u64, 1u128), (7, 1 << 40, 2), (8, 5, 3), (6, 50, 4), (7, 11, u128::MAX)]
                {
                    rows.batch.insert(&rows.store.sent, key_40(sender, at, id), value);
                }
                Ok(())
            })
            .expect("rows");
        let ids = |recent: Vec<Recent>| recent.iter().map(|r| (r.at, r.payment)).collect::<Vec<_>>();
        assert_eq!(ids(store.instrument_since("ab", 0, 10).expect("read")), [(10, 1), (256, 5), (300, 2)]);
        assert_eq!(ids(store.instrument_since("ab", 256, 10).expect("read")), [(256, 5), (300, 2)]);
        assert_eq!(ids(store.instrument_since("ab", 0, 2).expect("read")), [(256, 5), (300, 2)], "the last two");
        assert_eq!(ids(store.sent_since(7, 0, 10).expect("read")), [(10, 1), (11, u128::MAX), (1 << 40, 2)]);
        assert_eq!(ids(store.sent_since(7, 11, 10).expect("read")), [(11, u128::MAX), (1 << 40, 2)]);
        assert!(key_str_24(&"x".repeat(70_000), 0, 0).is_err(), "a string too long for its length field");
    }
}
