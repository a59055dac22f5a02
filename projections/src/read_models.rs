//! The read models, on disk in one redb database, applied exactly once.
//!
//! - balances: every account's current balances, and as of any time (the balances
//!   after the account's last movement at or before that time);
//! - history: every movement on every account with counterparty, amount, currency,
//!   status, metadata, time and the balances after it; per account and per owner;
//! - period reports: posted totals per account in quarter-hour buckets, combined into
//!   daily rows for any range and any UTC offset that is a whole number of quarter
//!   hours (every offset in use is);
//! - audit: a continuous chain verifier, which re-checks every record's hash link and
//!   records the first mismatch as an alarm.
//!
//! All of them share one checkpoint, the next log position to apply, written in the
//! same redb transaction as the data it covers: a crash rolls both back together, so no
//! event is applied twice or skipped.
//!
//! Balances in reports are "net posted", `credits_posted - debits_posted`, signed.
//!
//! Damaged data is an error, never a value: a row that does not decode is
//! `ReadModelError::Corrupt`, an event that contradicts what the read models folded
//! before it is `ReadModelError::Invariant` (and the batch is not applied). Either
//! raises the read models' alarm (`ReadModels::alarmed`), the same one the chain
//! verifier raises: the server shows it as `ledger.audit` NOT_SERVING and as the
//! `ledger_audit_alarm` metric. One alarm for both keeps one place for operators to
//! watch, and both mean the same thing to them: what the read models serve cannot be
//! trusted until someone looks (and rebuilds them from the log).

mod apply;
mod balances;
mod digest;
mod disk_backend;
mod error;
mod history;
mod model;
mod recovery;
mod reports;
mod rows;

#[doc(hidden)]
pub use rows::decode_any as decode_any_row;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ledger_engine::store::disk::Disk;
use ledger_engine::store::RecordedEvent;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use tokio::sync::watch;

use apply::Batch;
pub use apply::Decoded;
pub use balances::{net, ACCOUNTS_PAGE_MAX};
pub use error::{ProjectionError, ReadModelError};
pub use history::OWNER_ACCOUNTS_MAX;
pub use model::{
    AccountView, Alarm, Balances, Cursor, HistoryFilter, HistoryPage, Movement, MovementKind, Report, ReportDay, Side,
    Status, Totals,
};
pub use recovery::{check_file, damaged_path, move_aside, open_over_log, open_over_log_on};
use rows::{ACCOUNTS, ALARMS, BUCKETS, CHAIN, META, MOVEMENTS, NEXT_POSITION, OWNERS, PENDINGS};

/// redb's page cache for a running server.
pub const CACHE_BYTES_DEFAULT: usize = 256 << 20;
pub const QUARTER_HOUR_NS: u64 = 15 * 60 * 1_000_000_000;
pub const DAY_NS: u64 = 24 * 60 * 60 * 1_000_000_000;
/// The longest report, in days.
pub const REPORT_DAYS_MAX: u64 = 3_700;

/// The read models of one ledger data directory.
pub struct ReadModels {
    db: Database,
    path: PathBuf,
    /// Whether the log's positions are dense (the embedded store): then a gap is an
    /// error. Over a log with sparse positions (KurrentDB) only order is checked.
    dense: AtomicBool,
    /// Raised when a read or an apply met a damaged row or an event the read models
    /// contradict. Kept in memory only: after a restart the first read or apply that
    /// meets the damage raises it again.
    corruption_seen: AtomicBool,
    /// True once the chain verifier has recorded an alarm or corruption was seen (see
    /// the module's documentation).
    alarmed: watch::Sender<bool>,
}

/// Where the read models of a data directory live.
pub fn read_models_path(data_dir: &Path) -> PathBuf {
    data_dir.join("projections").join("read-models.redb")
}

impl ReadModels {
    /// Opens (or creates) the database at `path` with the default page cache.
    pub fn open(path: &Path) -> Result<ReadModels, ProjectionError> {
        ReadModels::open_with_cache(path, CACHE_BYTES_DEFAULT)
    }

    /// Opens (or creates) the database at `path` with a page cache of `cache_bytes`.
    /// A file redb finds damaged on open is `ProjectionError::Damaged`.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<ReadModels, ProjectionError> {
        ReadModels::open_db(path, cache_bytes, false)
    }

    /// `open_with_cache`, and with `verify` every page's checksum is checked first
    /// (redb's integrity check reads the whole file): a damaged file is
    /// `ProjectionError::Damaged` instead of a panic or a wrong value later.
    fn open_db(path: &Path, cache_bytes: usize, verify: bool) -> Result<ReadModels, ProjectionError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(ProjectionError::Io)?;
        }
        let db = Database::builder().set_cache_size(cache_bytes).create(path);
        ReadModels::with_db(path, db.map_err(|e| ProjectionError::damaged_or_db(path, e.into()))?, verify)
    }

    /// Opens (or creates) the database at `path` on `disk` (the file layer of the
    /// embedded store), checking every page's checksum first: the power-loss simulator
    /// keeps the read models on its simulated disk with this.
    pub fn open_on(disk: Arc<dyn Disk>, path: &Path, cache_bytes: usize) -> Result<ReadModels, ProjectionError> {
        if let Some(parent) = path.parent() {
            disk.create_dir_all(parent).map_err(ProjectionError::Io)?;
        }
        let file = disk.open_read_write(path).map_err(ProjectionError::Io)?;
        if let Some(parent) = path.parent() {
            disk.sync_dir(parent).map_err(ProjectionError::Io)?;
        }
        let db = Database::builder().set_cache_size(cache_bytes).create_with_backend(disk_backend::DiskBackend(file));
        ReadModels::with_db(path, db.map_err(|e| ProjectionError::damaged_or_db(path, e.into()))?, true)
    }

    fn with_db(path: &Path, mut db: Database, verify: bool) -> Result<ReadModels, ProjectionError> {
        let damaged = |error: redb::Error| ProjectionError::damaged_or_db(path, error);
        if verify {
            // Ok(false): redb repaired its own allocation state; the data checksums held.
            db.check_integrity().map_err(|e| damaged(e.into()))?;
        }
        let mut txn = db.begin_write().map_err(|e| damaged(e.into()))?;
        txn.set_quick_repair(true);
        {
            // Create every table, so readers never meet a missing one.
            let tables = || -> Result<(), redb::TableError> {
                txn.open_table(META)?;
                txn.open_table(ACCOUNTS)?;
                txn.open_table(MOVEMENTS)?;
                txn.open_table(PENDINGS)?;
                txn.open_table(BUCKETS)?;
                txn.open_table(OWNERS)?;
                txn.open_table(CHAIN)?;
                txn.open_table(ALARMS)?;
                Ok(())
            };
            tables().map_err(|e| damaged(e.into()))?;
        }
        txn.commit().map_err(|e| damaged(e.into()))?;
        let models = ReadModels {
            db,
            path: path.to_path_buf(),
            dense: AtomicBool::new(true),
            corruption_seen: AtomicBool::new(false),
            alarmed: watch::channel(false).0,
        };
        if models.alarm()?.is_some() {
            models.raise_alarm();
        }
        Ok(models)
    }

    /// Follow a log whose positions are increasing but not dense (see the field).
    pub fn set_dense_positions(&self, dense: bool) {
        self.dense.store(dense, Ordering::Relaxed);
    }

    /// Deletes the database at `path` and opens a new, empty one.
    pub fn recreate(path: &Path, cache_bytes: usize) -> Result<ReadModels, ProjectionError> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(ProjectionError::Io(error)),
        }
        ReadModels::open_with_cache(path, cache_bytes)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a read or an apply of this process met damaged data or an event the
    /// read models contradict.
    pub fn corruption_seen(&self) -> bool {
        self.corruption_seen.load(Ordering::Relaxed)
    }

    /// True once the chain verifier has recorded an alarm or corruption was seen:
    /// either way, what the read models serve cannot be trusted.
    pub fn alarmed(&self) -> watch::Receiver<bool> {
        self.alarmed.subscribe()
    }

    fn raise_alarm(&self) {
        self.alarmed.send_if_modified(|alarmed| !std::mem::replace(alarmed, true));
    }

    /// Runs a read or an apply, and raises the alarm if it failed on damaged data or a
    /// contradicting event: the caller gets the error, operators get the alarm.
    fn guarded<T>(&self, run: impl FnOnce() -> Result<T, ProjectionError>) -> Result<T, ProjectionError> {
        let result = run();
        if let Err(ProjectionError::ReadModel(error)) = &result {
            if error.is_corruption() {
                tracing::error!(%error, "the read models are damaged or contradict the log");
                self.corruption_seen.store(true, Ordering::Relaxed);
                self.raise_alarm();
            }
        }
        result
    }

    /// The log position of the next event to apply: everything before it is applied.
    pub fn next_position(&self) -> Result<u64, ProjectionError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        // No checkpoint yet: a new database, nothing applied.
        Ok(meta.get(NEXT_POSITION)?.map_or(0, |v| v.value()))
    }

    /// Applies `records` (consecutive, in log order) in one transaction with the
    /// checkpoint. Records before the checkpoint were applied already and are skipped;
    /// a record after it is a gap and an error. `durable: false` commits without a
    /// sync (for rebuilds, which end with a durable commit). Returns the new checkpoint.
    ///
    /// An event the read models contradict (`ReadModelError::Invariant`) or a damaged
    /// row fails the whole batch, which is then not applied, and raises the alarm.
    pub fn apply(&self, records: &[RecordedEvent], durable: bool) -> Result<u64, ProjectionError> {
        self.apply_decoded(&Decoded::new(records.to_vec()), durable)
    }

    /// `apply` for records decoded beforehand (on another thread, for example).
    pub fn apply_decoded(&self, decoded: &Decoded, durable: bool) -> Result<u64, ProjectionError> {
        self.guarded(|| {
            let records = &decoded.records;
            let mut txn = self.db.begin_write()?;
            txn.set_durability(if durable { Durability::Immediate } else { Durability::None })
                .map_err(|e| ProjectionError::Invalid(e.to_string()))?;
            // A durable commit saves redb's allocator state with it: a start after a
            // kill then opens the file at once instead of walking all of it.
            txn.set_quick_repair(durable);
            let (next, alarm_recorded) = {
                let mut batch = Batch::open(&txn)?;
                // No checkpoint yet: a new database, nothing applied.
                let mut next = batch.meta.get(NEXT_POSITION)?.map_or(0, |v| v.value());
                for (record, event) in records.iter().zip(&decoded.events) {
                    if record.position < next {
                        continue;
                    }
                    if record.position > next && self.dense.load(Ordering::Relaxed) {
                        return Err(ProjectionError::Gap { expected: next, found: record.position });
                    }
                    batch.record(record, event.as_ref())?;
                    next = record.position + 1;
                }
                let alarm_recorded = batch.alarm_recorded;
                batch.finish(next)?;
                (next, alarm_recorded)
            };
            txn.commit()?;
            if alarm_recorded {
                self.raise_alarm();
            }
            Ok(next)
        })
    }

    /// Commits an empty durable transaction: makes earlier `durable: false` commits
    /// durable.
    pub fn sync(&self) -> Result<(), ProjectionError> {
        let mut txn = self.db.begin_write()?;
        txn.set_quick_repair(true);
        txn.commit()?;
        Ok(())
    }

    /// The first record the chain verifier found wrong, if any.
    pub fn alarm(&self) -> Result<Option<Alarm>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let alarms = txn.open_table(ALARMS)?;
        let first = alarms.first()?;
        Ok(first.map(|(k, v)| Alarm { position: k.value(), reason: v.value().to_string() }))
    }
}
