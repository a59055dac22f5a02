//! History: an account's or an owner's movements, newest or oldest first, in pages.

use redb::{ReadableDatabase, ReadableTable};

use super::model::{Cursor, HistoryFilter, HistoryPage, Movement};
use super::rows::{block_count, block_rows, decode_movement, ACCOUNTS, MOVEMENTS, OWNERS};
use super::{ProjectionError, ReadModels};

/// Rows a history query may look at for one page when filters skip most of them.
const HISTORY_SCAN_MAX: usize = 100_000;

impl ReadModels {
    /// An account's movements in `[from_ns, to_ns)`, oldest first, from `cursor` on
    /// when given.
    pub fn movements_oldest_first(
        &self,
        account: u128,
        filter: &HistoryFilter,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, ProjectionError> {
        self.guarded(|| {
            let txn = self.db.begin_read()?;
            let movements = txn.open_table(MOVEMENTS)?;
            let start = cursor.map_or(filter.from_ns, |cursor| cursor.max(filter.from_ns));
            let mut page =
                OldestFirstPage { account, filter, start, limit, movements: Vec::new(), next: None, scanned: 0 };
            if start < filter.upper() {
                // The block holding `start` begins at or before it; later blocks after it.
                let first = movements.range((account, 0)..=(account, start))?.next_back().transpose()?;
                let later = movements.range((account, start.saturating_add(1))..(account, filter.upper()))?;
                let mut going = match first {
                    Some((key, value)) => page.visit(key.value(), value.value())?,
                    None => true,
                };
                for block in later {
                    if !going {
                        break;
                    }
                    let (key, value) = block?;
                    going = page.visit(key.value(), value.value())?;
                }
            }
            Ok(HistoryPage { movements: page.movements, next: page.next })
        })
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
        self.guarded(|| self.newest_first(accounts, filter, cursor, limit))
    }

    fn newest_first(
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
        self.guarded(|| {
            let txn = self.db.begin_read()?;
            let accounts = txn.open_table(ACCOUNTS)?;
            let movements = txn.open_table(MOVEMENTS)?;
            let mut best = None;
            for row in accounts.iter()?.take(scan) {
                let id = row?.0.value();
                let mut count = 0u64;
                for block in movements.range((id, 0)..=(id, u64::MAX))? {
                    let (key, value) = block?;
                    count += block_count(key.value(), value.value())? as u64;
                }
                if best.is_none_or(|(_, most)| count > most) {
                    best = Some((id, count));
                }
            }
            Ok(best)
        })
    }

    /// The accounts of an owner, by id.
    /// The owner's accounts, in id order; more than [`OWNER_ACCOUNTS_MAX`] is
    /// [`ProjectionError::TooMany`] (an owner-wide history or report covers at most that).
    pub fn owner_accounts(&self, owner: u128) -> Result<Vec<u128>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let owners = txn.open_table(OWNERS)?;
        let mut accounts = Vec::new();
        for row in owners.range((owner, 0)..=(owner, u128::MAX))? {
            if accounts.len() == OWNER_ACCOUNTS_MAX {
                return Err(ProjectionError::TooMany { what: "the owner's accounts", max: OWNER_ACCOUNTS_MAX });
            }
            accounts.push(row?.0.value().1);
        }
        Ok(accounts)
    }
}

/// Most accounts an owner-wide history or report covers.
pub const OWNER_ACCOUNTS_MAX: usize = 1_000;

/// The account's last movement at or before `at_ns`.
pub(super) fn last_at_or_before(
    movements: &impl ReadableTable<(u128, u64), &'static [u8]>,
    account: u128,
    at_ns: u64,
) -> Result<Option<Movement>, ProjectionError> {
    let Some((key, block)) = movements.range((account, 0)..=(account, at_ns))?.next_back().transpose()? else {
        return Ok(None);
    };
    let mut last = None;
    for row in block_rows(key.value(), block.value())? {
        let (timestamp_ns, _, row) = row?;
        if timestamp_ns > at_ns {
            break;
        }
        last = Some((timestamp_ns, row));
    }
    match last {
        Some((timestamp_ns, row)) => Ok(Some(decode_movement((account, timestamp_ns), row)?)),
        None => Ok(None),
    }
}

/// An oldest-first page being filled, block by block.
struct OldestFirstPage<'f> {
    account: u128,
    filter: &'f HistoryFilter,
    start: u64,
    limit: usize,
    movements: Vec<Movement>,
    next: Option<Cursor>,
    scanned: usize,
}

impl OldestFirstPage<'_> {
    /// Adds a block's movements in the page's range; false once the page is full.
    fn visit(&mut self, key: (u128, u64), block: &[u8]) -> Result<bool, ProjectionError> {
        let upper = self.filter.upper();
        for row in block_rows(key, block)? {
            let (timestamp_ns, _, row) = row?;
            if timestamp_ns < self.start || timestamp_ns >= upper {
                continue;
            }
            if self.movements.len() == self.limit || self.scanned == HISTORY_SCAN_MAX {
                self.next = Some(Cursor { timestamp_ns, account: self.account });
                return Ok(false);
            }
            self.scanned += 1;
            let movement = decode_movement((self.account, timestamp_ns), row)?;
            if self.filter.keeps(&movement) {
                self.movements.push(movement);
            }
        }
        Ok(true)
    }
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
            self.pending.clear();
            for row in block_rows(key.value(), value.value())? {
                let (timestamp_ns, _, row) = row?;
                if timestamp_ns >= self.from_ns && timestamp_ns < self.end {
                    self.pending.push(decode_movement((self.account, timestamp_ns), row)?);
                }
            }
        }
    }
}
