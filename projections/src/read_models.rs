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

use std::collections::HashMap;

/// Batch caches keyed by ids: foldhash, seeded per process, is several times faster
/// than SipHash on 16-byte keys.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::fmt;
use std::path::{Path, PathBuf};

use ledger_core::chain::{chain_hash, GENESIS_HASH};
use ledger_core::codec;
use ledger_core::domain::{Event, EventKind, Movement as MovementEvent};
use ledger_core::money::Currency;
use ledger_engine::store::RecordedEvent;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ACCOUNTS: TableDefinition<u128, &[u8]> = TableDefinition::new("accounts");
/// (account, timestamp of the block's first movement) → a block of up to `BLOCK_ROWS`
/// movements of that account in time order. Timestamps are unique per event and an
/// event moves at most once per account. Blocks fill up in order, so their boundaries
/// depend only on the sequence of movements, never on how events were batched.
const MOVEMENTS: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new("movements");
/// Movements per block: one B-tree insert carries many movements.
const BLOCK_ROWS: usize = 32;
/// Unresolved pending transfer → (debit account, credit account, its timestamp).
const PENDINGS: TableDefinition<u128, (u128, u128, u64)> = TableDefinition::new("pendings");
/// (account, quarter hour since the epoch) → posted credits, debits and count.
const BUCKETS: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new("buckets");
/// (owner, account) → ().
const OWNERS: TableDefinition<(u128, u128), ()> = TableDefinition::new("owners");
/// stream → (next revision, hash of the last record).
const CHAIN: TableDefinition<&str, (u64, [u8; 32])> = TableDefinition::new("chain");
/// position → what did not verify there (the audit alarm).
const ALARMS: TableDefinition<u64, &str> = TableDefinition::new("alarms");

const NEXT_POSITION: &str = "next_position";
/// redb's page cache for a running server.
pub const CACHE_BYTES_DEFAULT: usize = 256 << 20;
pub const QUARTER_HOUR_NS: u64 = 15 * 60 * 1_000_000_000;
pub const DAY_NS: u64 = 24 * 60 * 60 * 1_000_000_000;
/// The longest report, in days.
pub const REPORT_DAYS_MAX: u64 = 3_700;
/// Rows a history query may look at for one page when filters skip most of them.
const HISTORY_SCAN_MAX: usize = 100_000;

#[derive(Debug)]
pub enum ProjectionError {
    Db(redb::Error),
    /// The batch does not start where the read models stopped.
    Gap {
        expected: u64,
        found: u64,
    },
    Invalid(String),
    Io(std::io::Error),
}

impl fmt::Display for ProjectionError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ProjectionError::Db(error) => write!(f, "read model store: {error}"),
            ProjectionError::Gap { expected, found } => {
                write!(f, "events must be applied in order: expected position {expected}, got {found}")
            }
            ProjectionError::Invalid(message) => f.write_str(message),
            ProjectionError::Io(error) => write!(f, "read model files: {error}"),
        }
    }
}

impl std::error::Error for ProjectionError {}

impl<E: Into<redb::Error>> From<E> for ProjectionError {
    fn from(error: E) -> Self {
        ProjectionError::Db(error.into())
    }
}

/// Which side of a transfer an account is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Side {
    Debit,
    Credit,
}

/// An account's four balances.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Balances {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

/// The state of a movement, or of the hold it belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Status {
    Pending,
    Posted,
    Voided,
    Expired,
}

impl Status {
    fn byte(self) -> u8 {
        self as u8
    }

    fn from_byte(byte: u8) -> Status {
        match byte {
            0 => Status::Pending,
            1 => Status::Posted,
            2 => Status::Voided,
            _ => Status::Expired,
        }
    }
}

/// Which event made a movement.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum MovementKind {
    TransferPosted,
    TransferPending,
    PendingPosted,
    PendingVoided,
    PendingExpired,
}

impl MovementKind {
    pub fn event_type(self) -> &'static str {
        match self {
            MovementKind::TransferPosted => "TransferPosted",
            MovementKind::TransferPending => "TransferPending",
            MovementKind::PendingPosted => "PendingPosted",
            MovementKind::PendingVoided => "PendingVoided",
            MovementKind::PendingExpired => "PendingExpired",
        }
    }

    fn from_byte(byte: u8) -> MovementKind {
        match byte {
            0 => MovementKind::TransferPosted,
            1 => MovementKind::TransferPending,
            2 => MovementKind::PendingPosted,
            3 => MovementKind::PendingVoided,
            _ => MovementKind::PendingExpired,
        }
    }
}

/// One movement on one account.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Movement {
    pub account: u128,
    pub transfer_id: u128,
    pub kind: MovementKind,
    pub side: Side,
    pub counterparty: u128,
    pub amount: u128,
    pub currency: Currency,
    pub timestamp_ns: u64,
    pub metadata: String,
    pub status: Status,
    pub position: u64,
    /// The account's balances after this movement.
    pub after: Balances,
}

/// An account as the read models know it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AccountView {
    pub id: u128,
    pub currency: Currency,
    pub owner_id: u128,
    pub opened_ns: u64,
    pub balances: Balances,
}

/// Posted totals of a period.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Totals {
    pub credits: u128,
    pub debits: u128,
    pub count: u64,
}

impl Totals {
    pub fn add(&mut self, other: Totals) {
        self.credits += other.credits;
        self.debits += other.debits;
        self.count += other.count;
    }
}

/// One day of a report: the day's first instant (UTC nanoseconds) and its figures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReportDay {
    pub start_ns: u64,
    pub opening: i128,
    pub totals: Totals,
    pub closing: i128,
}

/// A period report for one account.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Report {
    pub account: u128,
    pub currency: Currency,
    pub opening: i128,
    pub totals: Totals,
    pub closing: i128,
    pub days: Vec<ReportDay>,
}

/// What a history page shows.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    /// `[from_ns, to_ns)`; `to_ns` 0 means no upper bound.
    pub from_ns: u64,
    pub to_ns: u64,
    pub side: Option<Side>,
    pub status: Option<Status>,
    pub currency: Option<Currency>,
}

impl HistoryFilter {
    fn keeps(&self, movement: &Movement) -> bool {
        self.side.is_none_or(|side| side == movement.side)
            && self.status.is_none_or(|status| status == movement.status)
            && self.currency.is_none_or(|currency| currency == movement.currency)
    }

    fn upper(&self) -> u64 {
        if self.to_ns == 0 {
            u64::MAX
        } else {
            self.to_ns
        }
    }
}

/// Where a page continues: the first movement it has not shown, by (timestamp,
/// account). A newest-first page goes on from this movement towards older ones; an
/// oldest-first page (one account) from this timestamp towards newer ones.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub struct Cursor {
    pub timestamp_ns: u64,
    pub account: u128,
}

impl Cursor {
    pub fn encode(self) -> String {
        format!("{}.{}", self.timestamp_ns, self.account)
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let (timestamp, account) = text.split_once('.')?;
        Some(Cursor { timestamp_ns: timestamp.parse().ok()?, account: account.parse().ok()? })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    pub movements: Vec<Movement>,
    pub next: Option<Cursor>,
}

/// An audit alarm: the first record that did not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alarm {
    pub position: u64,
    pub reason: String,
}

/// Records with their ledger events decoded (`None` for other streams).
pub struct Decoded {
    records: Vec<RecordedEvent>,
    events: Vec<Option<Result<Event, String>>>,
}

impl Decoded {
    pub fn new(records: Vec<RecordedEvent>) -> Decoded {
        let events = records
            .iter()
            .map(|record| {
                record
                    .stream
                    .starts_with("ledger-")
                    .then(|| codec::decode_event(&record.payload).map_err(|e| e.to_string()))
            })
            .collect();
        Decoded { records, events }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn last_position(&self) -> Option<u64> {
        self.records.last().map(|record| record.position)
    }
}

/// The read models of one ledger data directory.
pub struct ReadModels {
    db: Database,
    path: PathBuf,
    /// Whether the log's positions are dense (the embedded store): then a gap is an
    /// error. Over a log with sparse positions (KurrentDB) only order is checked.
    dense: std::sync::atomic::AtomicBool,
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
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<ReadModels, ProjectionError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(ProjectionError::Io)?;
        }
        let db = Database::builder().set_cache_size(cache_bytes).create(path)?;
        let txn = db.begin_write()?;
        {
            // Create every table, so readers never meet a missing one.
            txn.open_table(META)?;
            txn.open_table(ACCOUNTS)?;
            txn.open_table(MOVEMENTS)?;
            txn.open_table(PENDINGS)?;
            txn.open_table(BUCKETS)?;
            txn.open_table(OWNERS)?;
            txn.open_table(CHAIN)?;
            txn.open_table(ALARMS)?;
        }
        txn.commit()?;
        Ok(ReadModels { db, path: path.to_path_buf(), dense: std::sync::atomic::AtomicBool::new(true) })
    }

    /// Follow a log whose positions are increasing but not dense (see the field).
    pub fn set_dense_positions(&self, dense: bool) {
        self.dense.store(dense, std::sync::atomic::Ordering::Relaxed);
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

    /// The log position of the next event to apply: everything before it is applied.
    pub fn next_position(&self) -> Result<u64, ProjectionError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(NEXT_POSITION)?.map_or(0, |v| v.value()))
    }

    /// Applies `records` (consecutive, in log order) in one transaction with the
    /// checkpoint. Records before the checkpoint were applied already and are skipped;
    /// a record after it is a gap and an error. `durable: false` commits without a
    /// sync (for rebuilds, which end with a durable commit). Returns the new checkpoint.
    pub fn apply(&self, records: &[RecordedEvent], durable: bool) -> Result<u64, ProjectionError> {
        self.apply_decoded(&Decoded::new(records.to_vec()), durable)
    }

    /// `apply` for records decoded beforehand (on another thread, for example).
    pub fn apply_decoded(&self, decoded: &Decoded, durable: bool) -> Result<u64, ProjectionError> {
        let records = &decoded.records;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })
            .map_err(|e| ProjectionError::Invalid(e.to_string()))?;
        let next = {
            let mut batch = Batch::open(&txn)?;
            let mut next = batch.meta.get(NEXT_POSITION)?.map_or(0, |v| v.value());
            for (record, event) in records.iter().zip(&decoded.events) {
                if record.position < next {
                    continue;
                }
                if record.position > next && self.dense.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(ProjectionError::Gap { expected: next, found: record.position });
                }
                batch.record(record, event.as_ref())?;
                next = record.position + 1;
            }
            batch.finish(next)?;
            next
        };
        txn.commit()?;
        Ok(next)
    }

    /// Commits an empty durable transaction: makes earlier `durable: false` commits
    /// durable.
    pub fn sync(&self) -> Result<(), ProjectionError> {
        let txn = self.db.begin_write()?;
        txn.commit()?;
        Ok(())
    }

    pub fn account(&self, id: u128) -> Result<Option<AccountView>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let accounts = txn.open_table(ACCOUNTS)?;
        Ok(accounts.get(id)?.map(|v| decode_account(id, v.value())))
    }

    /// Balances including every movement at or before `as_of_ns` (`None`: now).
    /// `None` if the account is unknown or was not open yet.
    pub fn balances_as_of(&self, id: u128, as_of_ns: Option<u64>) -> Result<Option<Balances>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let accounts = txn.open_table(ACCOUNTS)?;
        let Some(account) = accounts.get(id)?.map(|v| decode_account(id, v.value())) else { return Ok(None) };
        let Some(as_of_ns) = as_of_ns else { return Ok(Some(account.balances)) };
        if as_of_ns < account.opened_ns {
            return Ok(None);
        }
        let movements = txn.open_table(MOVEMENTS)?;
        let last = last_at_or_before(&movements, id, as_of_ns)?;
        Ok(Some(last.map_or(Balances::default(), |m| m.after)))
    }

    /// An account's movements in `[from_ns, to_ns)`, oldest first, from `cursor` on
    /// when given.
    pub fn movements_oldest_first(
        &self,
        account: u128,
        filter: &HistoryFilter,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, ProjectionError> {
        let txn = self.db.begin_read()?;
        let movements = txn.open_table(MOVEMENTS)?;
        let start = cursor.map_or(filter.from_ns, |cursor| cursor.max(filter.from_ns));
        let upper = filter.upper();
        let mut page = Vec::new();
        let mut next = None;
        if start < upper {
            // The block holding `start` begins at or before it; later blocks after it.
            let first = movements.range((account, 0)..=(account, start))?.next_back().transpose()?;
            let later = movements.range((account, start.saturating_add(1))..(account, upper))?;
            let mut scanned = 0;
            let mut visit = |bytes: &[u8]| -> bool {
                for (timestamp_ns, row) in block_rows(bytes) {
                    if timestamp_ns < start || timestamp_ns >= upper {
                        continue;
                    }
                    if page.len() == limit || scanned == HISTORY_SCAN_MAX {
                        next = Some(Cursor { timestamp_ns, account });
                        return false;
                    }
                    scanned += 1;
                    let movement = decode_movement((account, timestamp_ns), row);
                    if filter.keeps(&movement) {
                        page.push(movement);
                    }
                }
                true
            };
            let mut going = first.is_none_or(|(_, value)| visit(value.value()));
            for block in later {
                if !going {
                    break;
                }
                let (_, value) = block?;
                going = visit(value.value());
            }
        }
        Ok(HistoryPage { movements: page, next })
    }

    /// Movements of `accounts` (one account, or every account of an owner), newest
    /// first, from `cursor` on when given.
    pub fn history(
        &self,
        accounts: &[u128],
        filter: &HistoryFilter,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<HistoryPage, ProjectionError> {
        let txn = self.db.begin_read()?;
        let movements = txn.open_table(MOVEMENTS)?;
        let upper = filter.upper();
        let mut sources = Vec::new();
        for &account in accounts {
            // At or below the cursor in (timestamp, account) order: both legs of a
            // transfer share a timestamp and can belong to one owner.
            let end = match cursor {
                Some(c) if account <= c.account => (c.timestamp_ns.saturating_add(1)).min(upper),
                Some(c) => c.timestamp_ns.min(upper),
                None => upper,
            };
            if filter.from_ns < end {
                let mut rows = NewestFirst {
                    account,
                    from_ns: filter.from_ns,
                    end,
                    blocks: movements.range((account, 0)..(account, end))?.rev(),
                    pending: Vec::new(),
                    done: false,
                };
                let head = rows.next()?;
                sources.push((head, rows));
            }
        }
        let mut page = Vec::new();
        let mut scanned = 0;
        loop {
            let newest = sources
                .iter()
                .enumerate()
                .filter_map(|(i, (head, _))| {
                    head.as_ref().map(|m| (Cursor { timestamp_ns: m.timestamp_ns, account: m.account }, i))
                })
                .max();
            let Some((at, index)) = newest else { return Ok(HistoryPage { movements: page, next: None }) };
            if page.len() == limit || scanned == HISTORY_SCAN_MAX {
                return Ok(HistoryPage { movements: page, next: Some(at) });
            }
            scanned += 1;
            let (head, rows) = &mut sources[index];
            let next = rows.next()?;
            if let Some(movement) = std::mem::replace(head, next) {
                if filter.keeps(&movement) {
                    page.push(movement);
                }
            }
        }
    }

    /// The account with the most movements among the first `scan` accounts (for
    /// benchmarks), with its movement count.
    pub fn busiest_account(&self, scan: usize) -> Result<Option<(u128, u64)>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let accounts = txn.open_table(ACCOUNTS)?;
        let movements = txn.open_table(MOVEMENTS)?;
        let mut best = None;
        for row in accounts.iter()?.take(scan) {
            let id = row?.0.value();
            let mut count = 0u64;
            for block in movements.range((id, 0)..=(id, u64::MAX))? {
                count += block_count(block?.1.value()) as u64;
            }
            if best.is_none_or(|(_, most)| count > most) {
                best = Some((id, count));
            }
        }
        Ok(best)
    }

    /// The accounts of an owner, by id.
    pub fn owner_accounts(&self, owner: u128) -> Result<Vec<u128>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let owners = txn.open_table(OWNERS)?;
        let mut accounts = Vec::new();
        for row in owners.range((owner, 0)..=(owner, u128::MAX))? {
            accounts.push(row?.0.value().1);
        }
        Ok(accounts)
    }

    /// The report of `account` over `[from_ns, to_ns)`, in days that start at midnight
    /// of UTC offset `offset_minutes`. `from_ns` and `to_ns` must be on quarter hours,
    /// the offset a whole number of quarter hours within ±18 h.
    pub fn report(
        &self,
        account: u128,
        from_ns: u64,
        to_ns: u64,
        offset_minutes: i32,
    ) -> Result<Option<Report>, ProjectionError> {
        if !from_ns.is_multiple_of(QUARTER_HOUR_NS) || !to_ns.is_multiple_of(QUARTER_HOUR_NS) {
            return Err(ProjectionError::Invalid("from and to must be whole quarter hours".into()));
        }
        if to_ns <= from_ns {
            return Err(ProjectionError::Invalid("to must be after from".into()));
        }
        if offset_minutes % 15 != 0 || offset_minutes.abs() > 18 * 60 {
            return Err(ProjectionError::Invalid("the UTC offset must be whole quarter hours within ±18:00".into()));
        }
        if (to_ns - from_ns) / DAY_NS > REPORT_DAYS_MAX {
            return Err(ProjectionError::Invalid(format!("a report covers at most {REPORT_DAYS_MAX} days")));
        }
        let txn = self.db.begin_read()?;
        let accounts = txn.open_table(ACCOUNTS)?;
        let Some(view) = accounts.get(account)?.map(|v| decode_account(account, v.value())) else { return Ok(None) };
        let movements = txn.open_table(MOVEMENTS)?;
        let opening = match from_ns.checked_sub(1) {
            Some(before) => last_at_or_before(&movements, account, before)?.map_or(0, |m| net(&m.after)),
            None => 0,
        };
        // Local day of instant t: floor((t + offset) / day), in instants: the day that
        // starts at start(t) = floor((t + offset) / day) * day - offset.
        let offset_ns = i128::from(offset_minutes) * 60 * 1_000_000_000;
        let day_start = |t: u64| -> i128 {
            let local = i128::from(t) + offset_ns;
            local.div_euclid(i128::from(DAY_NS)) * i128::from(DAY_NS) - offset_ns
        };
        let mut days: Vec<ReportDay> = Vec::new();
        let mut totals = Totals::default();
        let mut balance = opening;
        let buckets = txn.open_table(BUCKETS)?;
        let mut rows = Vec::new();
        for row in buckets.range((account, from_ns / QUARTER_HOUR_NS)..(account, to_ns / QUARTER_HOUR_NS))? {
            let (key, value) = row?;
            rows.push((key.value().1 * QUARTER_HOUR_NS, decode_bucket(value.value())));
        }
        let mut rows = rows.into_iter().peekable();
        let mut day = day_start(from_ns);
        while day < i128::from(to_ns) {
            let next_day = day + i128::from(DAY_NS);
            let start_ns = u64::try_from(day.max(i128::from(from_ns))).unwrap_or(from_ns);
            let end_ns = u64::try_from(next_day.min(i128::from(to_ns))).unwrap_or(to_ns);
            let mut day_totals = Totals::default();
            while let Some((_, bucket)) = rows.next_if(|(at, _)| *at < end_ns) {
                day_totals.add(bucket);
            }
            let opening = balance;
            balance += day_totals.credits as i128 - day_totals.debits as i128;
            totals.add(day_totals);
            days.push(ReportDay { start_ns, opening, totals: day_totals, closing: balance });
            day = next_day;
        }
        Ok(Some(Report { account, currency: view.currency, opening, totals, closing: balance, days }))
    }

    /// The first record the chain verifier found wrong, if any.
    pub fn alarm(&self) -> Result<Option<Alarm>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let alarms = txn.open_table(ALARMS)?;
        let first = alarms.first()?;
        Ok(first.map(|(k, v)| Alarm { position: k.value(), reason: v.value().to_string() }))
    }

    /// A blake3 digest of every table's contents in key order: two databases with the
    /// same digest hold the same read models.
    pub fn digest(&self) -> Result<String, ProjectionError> {
        let txn = self.db.begin_read()?;
        let mut hasher = blake3::Hasher::new();
        macro_rules! table {
            ($def:expr, $write:expr) => {{
                let table = txn.open_table($def)?;
                hasher.update(&table.len()?.to_le_bytes());
                for row in table.iter()? {
                    let (key, value) = row?;
                    #[allow(clippy::redundant_closure_call)]
                    ($write)(&mut hasher, key.value(), value.value());
                }
            }};
        }
        table!(META, |h: &mut blake3::Hasher, k: &str, v: u64| {
            h.update(k.as_bytes());
            h.update(&v.to_le_bytes());
        });
        table!(ACCOUNTS, |h: &mut blake3::Hasher, k: u128, v: &[u8]| {
            h.update(&k.to_le_bytes());
            h.update(v);
        });
        table!(MOVEMENTS, |h: &mut blake3::Hasher, k: (u128, u64), v: &[u8]| {
            h.update(&k.0.to_le_bytes());
            h.update(&k.1.to_le_bytes());
            h.update(v);
        });
        table!(PENDINGS, |h: &mut blake3::Hasher, k: u128, v: (u128, u128, u64)| {
            h.update(&k.to_le_bytes());
            h.update(&v.0.to_le_bytes());
            h.update(&v.1.to_le_bytes());
            h.update(&v.2.to_le_bytes());
        });
        table!(BUCKETS, |h: &mut blake3::Hasher, k: (u128, u64), v: &[u8]| {
            h.update(&k.0.to_le_bytes());
            h.update(&k.1.to_le_bytes());
            h.update(v);
        });
        table!(OWNERS, |h: &mut blake3::Hasher, k: (u128, u128), _v: ()| {
            h.update(&k.0.to_le_bytes());
            h.update(&k.1.to_le_bytes());
        });
        table!(CHAIN, |h: &mut blake3::Hasher, k: &str, v: (u64, [u8; 32])| {
            h.update(k.as_bytes());
            h.update(&v.0.to_le_bytes());
            h.update(&v.1);
        });
        table!(ALARMS, |h: &mut blake3::Hasher, k: u64, v: &str| {
            h.update(&k.to_le_bytes());
            h.update(v.as_bytes());
        });
        Ok(hasher.finalize().to_hex().to_string())
    }
}

/// Net posted balance: credits minus debits.
pub fn net(balances: &Balances) -> i128 {
    balances.credits_posted as i128 - balances.debits_posted as i128
}

/// One write transaction's tables, with the rows it changes many times kept in memory
/// until `finish`.
struct Batch<'t> {
    meta: redb::Table<'t, &'static str, u64>,
    accounts: redb::Table<'t, u128, &'static [u8]>,
    movements: redb::Table<'t, (u128, u64), &'static [u8]>,
    pendings: redb::Table<'t, u128, (u128, u128, u64)>,
    buckets: redb::Table<'t, (u128, u64), &'static [u8]>,
    owners: redb::Table<'t, (u128, u128), ()>,
    chain: redb::Table<'t, &'static str, (u64, [u8; 32])>,
    alarms: redb::Table<'t, u64, &'static str>,
    account_cache: FastMap<u128, AccountView>,
    bucket_cache: FastMap<(u128, u64), Totals>,
    chain_cache: FastMap<String, (u64, [u8; 32])>,
    /// Movement rows of this batch by account, in time order, appended to the
    /// accounts' blocks by `finish`, in account order.
    rows: FastMap<u128, Vec<(u64, Vec<u8>)>>,
    /// Where this batch's hold rows are in `rows`, by pending transfer id.
    hold_rows: FastMap<u128, [(u128, usize); 2]>,
}

impl<'t> Batch<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Batch<'t>, ProjectionError> {
        Ok(Batch {
            meta: txn.open_table(META)?,
            accounts: txn.open_table(ACCOUNTS)?,
            movements: txn.open_table(MOVEMENTS)?,
            pendings: txn.open_table(PENDINGS)?,
            buckets: txn.open_table(BUCKETS)?,
            owners: txn.open_table(OWNERS)?,
            chain: txn.open_table(CHAIN)?,
            alarms: txn.open_table(ALARMS)?,
            account_cache: FastMap::default(),
            bucket_cache: FastMap::default(),
            chain_cache: FastMap::default(),
            rows: FastMap::default(),
            hold_rows: FastMap::default(),
        })
    }

    fn alarm(&mut self, position: u64, reason: String) -> Result<(), ProjectionError> {
        tracing::error!(position, %reason, "audit: the log does not verify");
        if self.alarms.get(position)?.is_none() {
            self.alarms.insert(position, reason.as_str())?;
        }
        Ok(())
    }

    fn record(&mut self, record: &RecordedEvent, event: Option<&Result<Event, String>>) -> Result<(), ProjectionError> {
        // The chain verifier.
        let head = match self.chain_cache.get(&record.stream) {
            Some(head) => Some(*head),
            None => self.chain.get(record.stream.as_str())?.map(|v| v.value()),
        };
        let (revision, previous) = head.unwrap_or((0, GENESIS_HASH));
        let expected = chain_hash(&previous, record.revision, &record.payload);
        if record.revision != revision {
            self.alarm(
                record.position,
                format!("{} revision {} where {revision} was due", record.stream, record.revision),
            )?;
        } else if expected != record.hash {
            self.alarm(
                record.position,
                format!("{} revision {}: hash does not chain", record.stream, record.revision),
            )?;
        }
        self.chain_cache.insert(record.stream.clone(), (record.revision + 1, record.hash));
        if !record.stream.starts_with("ledger-") {
            return Ok(());
        }
        match event {
            Some(Ok(event)) => self.event(record.position, event),
            Some(Err(error)) => self.alarm(record.position, format!("undecodable ledger event: {error}")),
            None => Ok(()),
        }
    }

    fn load_account(&mut self, id: u128) -> Result<Option<&mut AccountView>, ProjectionError> {
        if !self.account_cache.contains_key(&id) {
            let Some(view) = self.accounts.get(id)?.map(|v| decode_account(id, v.value())) else { return Ok(None) };
            self.account_cache.insert(id, view);
        }
        Ok(self.account_cache.get_mut(&id))
    }

    #[allow(clippy::too_many_arguments)]
    fn movement(
        &mut self,
        position: u64,
        timestamp_ns: u64,
        kind: MovementKind,
        m: (u128, u128, u128, u128, Currency),
        metadata: &str,
        change: Change,
        status: Status,
    ) -> Result<(), ProjectionError> {
        let (transfer_id, debit, credit, amount, currency) = m;
        let mut placed = [(0u128, usize::MAX); 2];
        for (leg, (account, side, counterparty)) in
            [(debit, Side::Debit, credit), (credit, Side::Credit, debit)].into_iter().enumerate()
        {
            let Some(view) = self.load_account(account)? else { continue };
            let b = &mut view.balances;
            let (pending, posted) = match side {
                Side::Debit => (&mut b.debits_pending, &mut b.debits_posted),
                Side::Credit => (&mut b.credits_pending, &mut b.credits_posted),
            };
            *pending = *pending + change.pending_add - change.pending_sub;
            *posted += change.posted_add;
            let after = *b;
            let movement = Movement {
                account,
                transfer_id,
                kind,
                side,
                counterparty,
                amount,
                currency,
                timestamp_ns,
                metadata: metadata.to_string(),
                status,
                position,
                after,
            };
            let mut encoded = Vec::with_capacity(48 + movement.metadata.len());
            encode_movement(&movement, &mut encoded);
            let rows = self.rows.entry(account).or_default();
            placed[leg] = (account, rows.len());
            rows.push((timestamp_ns, encoded));
            if change.posted_add > 0 {
                let key = (account, timestamp_ns / QUARTER_HOUR_NS);
                let bucket = match self.bucket_cache.entry(key) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        entry.insert(self.buckets.get(key)?.map_or(Totals::default(), |v| decode_bucket(v.value())))
                    }
                };
                match side {
                    Side::Debit => bucket.debits += change.posted_add,
                    Side::Credit => bucket.credits += change.posted_add,
                }
                bucket.count += 1;
            }
        }
        if kind == MovementKind::TransferPending {
            self.hold_rows.insert(transfer_id, placed);
        }
        Ok(())
    }

    /// Sets the status of a hold's two movements and forgets the hold.
    fn resolve(&mut self, pending_id: u128, status: Status) -> Result<(), ProjectionError> {
        let Some((debit, credit, timestamp_ns)) = self.pendings.remove(pending_id)?.map(|v| v.value()) else {
            return Ok(());
        };
        if let Some(placed) = self.hold_rows.remove(&pending_id) {
            // The hold is in this batch, not yet in the table.
            for (account, index) in placed {
                if let Some((_, bytes)) = self.rows.get_mut(&account).and_then(|rows| rows.get_mut(index)) {
                    bytes[STATUS_OFFSET] = status.byte();
                }
            }
            return Ok(());
        }
        for account in [debit, credit] {
            let block = self.movements.range((account, 0)..=(account, timestamp_ns))?.next_back().transpose()?;
            let Some((key, mut bytes)) = block.map(|(k, v)| (k.value(), v.value().to_vec())) else { continue };
            if set_status(&mut bytes, timestamp_ns, status) {
                self.movements.insert(key, bytes.as_slice())?;
            }
        }
        Ok(())
    }

    fn event(&mut self, position: u64, event: &Event) -> Result<(), ProjectionError> {
        let at = event.timestamp_ns;
        let none = Change { pending_add: 0, pending_sub: 0, posted_add: 0 };
        let parts = |m: &MovementEvent| (m.id.0, m.debit_account_id.0, m.credit_account_id.0, m.amount, m.currency);
        match &event.kind {
            EventKind::AccountOpened(new) => {
                if self.load_account(new.id.0)?.is_none() {
                    let view = AccountView {
                        id: new.id.0,
                        currency: new.currency,
                        owner_id: new.owner_id,
                        opened_ns: at,
                        balances: Balances::default(),
                    };
                    self.account_cache.insert(new.id.0, view);
                    self.owners.insert((new.owner_id, new.id.0), ())?;
                }
            }
            EventKind::AccountFrozen(_) | EventKind::AccountUnfrozen(_) | EventKind::AccountClosed(_) => {}
            EventKind::TransferPosted(m) => {
                let change = Change { posted_add: m.amount, ..none };
                self.movement(
                    position,
                    at,
                    MovementKind::TransferPosted,
                    parts(m),
                    &m.metadata,
                    change,
                    Status::Posted,
                )?;
            }
            EventKind::TransferPending { movement: m, .. } => {
                let change = Change { pending_add: m.amount, ..none };
                self.movement(
                    position,
                    at,
                    MovementKind::TransferPending,
                    parts(m),
                    &m.metadata,
                    change,
                    Status::Pending,
                )?;
                self.pendings.insert(m.id.0, (m.debit_account_id.0, m.credit_account_id.0, at))?;
            }
            EventKind::PendingPosted { movement: m, pending_id, pending_amount } => {
                let change = Change { pending_sub: *pending_amount, posted_add: m.amount, ..none };
                self.movement(
                    position,
                    at,
                    MovementKind::PendingPosted,
                    parts(m),
                    &m.metadata,
                    change,
                    Status::Posted,
                )?;
                self.resolve(pending_id.0, Status::Posted)?;
            }
            EventKind::PendingVoided { movement: m, pending_id } => {
                let change = Change { pending_sub: m.amount, ..none };
                self.movement(
                    position,
                    at,
                    MovementKind::PendingVoided,
                    parts(m),
                    &m.metadata,
                    change,
                    Status::Voided,
                )?;
                self.resolve(pending_id.0, Status::Voided)?;
            }
            EventKind::PendingExpired { pending_id, debit_account_id, credit_account_id, pending_amount, currency } => {
                let change = Change { pending_sub: *pending_amount, ..none };
                let parts = (pending_id.0, debit_account_id.0, credit_account_id.0, *pending_amount, *currency);
                self.movement(position, at, MovementKind::PendingExpired, parts, "", change, Status::Expired)?;
                self.resolve(pending_id.0, Status::Expired)?;
            }
        }
        Ok(())
    }

    fn finish(mut self, next: u64) -> Result<(), ProjectionError> {
        let mut by_account: Vec<_> = self.rows.drain().collect();
        by_account.sort_unstable_by_key(|(account, _)| *account);
        for (account, rows) in by_account {
            let mut rows = rows.into_iter().peekable();
            // Fill the account's last block, then start new ones.
            let last = self.movements.range((account, 0)..=(account, u64::MAX))?.next_back().transpose()?;
            if let Some((key, mut block)) = last.map(|(k, v)| (k.value(), v.value().to_vec())) {
                if block_count(&block) < BLOCK_ROWS {
                    while block_count(&block) < BLOCK_ROWS {
                        let Some((timestamp_ns, row)) = rows.next() else { break };
                        push_row(&mut block, timestamp_ns, &row);
                    }
                    self.movements.insert(key, block.as_slice())?;
                }
            }
            while let Some(&(first_ns, _)) = rows.peek() {
                let mut block = Vec::with_capacity(2 + BLOCK_ROWS * 64);
                block.extend_from_slice(&0u16.to_le_bytes());
                while block_count(&block) < BLOCK_ROWS {
                    let Some((timestamp_ns, row)) = rows.next() else { break };
                    push_row(&mut block, timestamp_ns, &row);
                }
                self.movements.insert((account, first_ns), block.as_slice())?;
            }
        }
        let mut bytes = Vec::with_capacity(128);
        for (id, view) in &self.account_cache {
            bytes.clear();
            encode_account(view, &mut bytes);
            self.accounts.insert(*id, bytes.as_slice())?;
        }
        for (key, totals) in &self.bucket_cache {
            bytes.clear();
            encode_bucket(totals, &mut bytes);
            self.buckets.insert(*key, bytes.as_slice())?;
        }
        for (stream, head) in self.chain_cache.drain() {
            self.chain.insert(stream.as_str(), head)?;
        }
        self.meta.insert(NEXT_POSITION, next)?;
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Change {
    pending_add: u128,
    pending_sub: u128,
    posted_add: u128,
}

// Row encodings: fixed-width little-endian fields, then variable text.

fn put(out: &mut Vec<u8>, value: u128) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn take16(bytes: &[u8], at: usize) -> u128 {
    let mut word = [0u8; 16];
    word.copy_from_slice(&bytes[at..at + 16]);
    u128::from_le_bytes(word)
}

fn take8(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn put_balances(out: &mut Vec<u8>, b: &Balances) {
    for value in [b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted] {
        put(out, value);
    }
}

fn take_balances(bytes: &[u8], at: usize) -> Balances {
    Balances {
        debits_pending: take16(bytes, at),
        debits_posted: take16(bytes, at + 16),
        credits_pending: take16(bytes, at + 32),
        credits_posted: take16(bytes, at + 48),
    }
}

fn currency_from(bytes: &[u8]) -> Currency {
    // Written by `encode_*` from a valid currency; a damaged row is reported and reads as
    // the table's first currency instead of stopping the server (XXX, used here before,
    // is not in the table, so this was a panic).
    std::str::from_utf8(bytes).ok().and_then(|code| Currency::parse(code).ok()).unwrap_or_else(|| {
        tracing::error!("a read-model row holds an unknown currency: the read models are damaged; rebuild them");
        Currency::FIRST
    })
}

// Movement blocks: u16 row count | rows; a row: u64 timestamp | u16 length | movement.

fn block_count(block: &[u8]) -> usize {
    block.get(..2).map_or(0, |count| usize::from(u16::from_le_bytes([count[0], count[1]])))
}

fn push_row(block: &mut Vec<u8>, timestamp_ns: u64, row: &[u8]) {
    let count = block_count(block) as u16 + 1;
    block[..2].copy_from_slice(&count.to_le_bytes());
    block.extend_from_slice(&timestamp_ns.to_le_bytes());
    block.extend_from_slice(&(row.len() as u16).to_le_bytes());
    block.extend_from_slice(row);
}

/// The rows of a block, oldest first: (timestamp, movement bytes).
fn block_rows(block: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut at = 2;
    (0..block_count(block)).map_while(move |_| {
        let timestamp_ns = u64::from_le_bytes(block.get(at..at + 8)?.try_into().ok()?);
        let length = usize::from(u16::from_le_bytes(block.get(at + 8..at + 10)?.try_into().ok()?));
        let row = block.get(at + 10..at + 10 + length)?;
        at += 10 + length;
        Some((timestamp_ns, row))
    })
}

/// Sets the status of the movement at `timestamp_ns` in a block; false if absent.
fn set_status(block: &mut [u8], timestamp_ns: u64, status: Status) -> bool {
    let mut at = 2;
    for _ in 0..block_count(block) {
        let Some(header) = block.get(at..at + 10) else { return false };
        let row_ns = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
        let length = usize::from(u16::from_le_bytes([header[8], header[9]]));
        if row_ns == timestamp_ns {
            if let Some(byte) = block.get_mut(at + 10 + STATUS_OFFSET) {
                *byte = status.byte();
                return true;
            }
            return false;
        }
        at += 10 + length;
    }
    false
}

/// The account's last movement at or before `at_ns`.
fn last_at_or_before(
    movements: &impl ReadableTable<(u128, u64), &'static [u8]>,
    account: u128,
    at_ns: u64,
) -> Result<Option<Movement>, ProjectionError> {
    let Some((_, block)) = movements.range((account, 0)..=(account, at_ns))?.next_back().transpose()? else {
        return Ok(None);
    };
    let last = block_rows(block.value()).take_while(|(timestamp_ns, _)| *timestamp_ns <= at_ns).last();
    Ok(last.map(|(timestamp_ns, row)| decode_movement((account, timestamp_ns), row)))
}

/// One account's movements in `[from_ns, end)`, newest first.
struct NewestFirst<'t> {
    account: u128,
    from_ns: u64,
    end: u64,
    blocks: std::iter::Rev<redb::Range<'t, (u128, u64), &'static [u8]>>,
    /// Rows of the current block still to give, oldest first (taken from the back).
    pending: Vec<Movement>,
    done: bool,
}

impl NewestFirst<'_> {
    fn next(&mut self) -> Result<Option<Movement>, ProjectionError> {
        loop {
            if let Some(movement) = self.pending.pop() {
                return Ok(Some(movement));
            }
            if self.done {
                return Ok(None);
            }
            let Some(block) = self.blocks.next().transpose()? else {
                self.done = true;
                continue;
            };
            let (key, value) = block;
            // Blocks that start before `from_ns` are the last ones to look at.
            self.done = key.value().1 < self.from_ns;
            let (from_ns, end, account) = (self.from_ns, self.end, self.account);
            self.pending = block_rows(value.value())
                .filter(|(timestamp_ns, _)| *timestamp_ns >= from_ns && *timestamp_ns < end)
                .map(|(timestamp_ns, row)| decode_movement((account, timestamp_ns), row))
                .collect();
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u128) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(bytes: &[u8], at: &mut usize) -> u128 {
    let mut value = 0u128;
    let mut shift = 0;
    while let Some(&byte) = bytes.get(*at) {
        *at += 1;
        if shift < 128 {
            value |= u128::from(byte & 0x7f) << shift;
        }
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}

/// kind 1 | side 1 | status 1 | currency 3 | varints: transfer, counterparty, amount,
/// position, the four balances after | metadata.
const STATUS_OFFSET: usize = 2;

fn encode_movement(m: &Movement, out: &mut Vec<u8>) {
    out.push(m.kind as u8);
    out.push(matches!(m.side, Side::Credit) as u8);
    out.push(m.status.byte());
    out.extend_from_slice(m.currency.code().as_bytes());
    for value in [m.transfer_id, m.counterparty, m.amount, u128::from(m.position)] {
        put_varint(out, value);
    }
    let b = &m.after;
    for value in [b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted] {
        put_varint(out, value);
    }
    out.extend_from_slice(m.metadata.as_bytes());
}

fn decode_movement(key: (u128, u64), bytes: &[u8]) -> Movement {
    let mut at = 6;
    let mut next = || take_varint(bytes, &mut at);
    let (transfer_id, counterparty, amount, position) = (next(), next(), next(), next() as u64);
    let after =
        Balances { debits_pending: next(), debits_posted: next(), credits_pending: next(), credits_posted: next() };
    Movement {
        account: key.0,
        timestamp_ns: key.1,
        transfer_id,
        kind: MovementKind::from_byte(bytes[0]),
        side: if bytes[1] == 1 { Side::Credit } else { Side::Debit },
        status: Status::from_byte(bytes[STATUS_OFFSET]),
        counterparty,
        amount,
        currency: currency_from(&bytes[3..6]),
        position,
        after,
        metadata: String::from_utf8_lossy(bytes.get(at..).unwrap_or_default()).into_owned(),
    }
}

/// currency 3 | owner 16 | opened 8 | balances 64.
fn encode_account(a: &AccountView, out: &mut Vec<u8>) {
    out.extend_from_slice(a.currency.code().as_bytes());
    put(out, a.owner_id);
    out.extend_from_slice(&a.opened_ns.to_le_bytes());
    put_balances(out, &a.balances);
}

fn decode_account(id: u128, bytes: &[u8]) -> AccountView {
    AccountView {
        id,
        currency: currency_from(&bytes[0..3]),
        owner_id: take16(bytes, 3),
        opened_ns: take8(bytes, 19),
        balances: take_balances(bytes, 27),
    }
}

fn encode_bucket(t: &Totals, out: &mut Vec<u8>) {
    put(out, t.credits);
    put(out, t.debits);
    out.extend_from_slice(&t.count.to_le_bytes());
}

fn decode_bucket(bytes: &[u8]) -> Totals {
    Totals { credits: take16(bytes, 0), debits: take16(bytes, 16), count: take8(bytes, 32) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_currency_reads_as_a_placeholder_without_a_panic() {
        assert_eq!(currency_from(b"USD"), Currency::parse("USD").expect("USD"));
        for damaged in [&b"XXX"[..], b"\xff\xfe\xfd", b"us"] {
            assert_eq!(currency_from(damaged), Currency::FIRST);
        }
    }
}
