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
}

/// The account's last movement at or before `at_ns`.
pub(super) fn last_at_or_before(
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
