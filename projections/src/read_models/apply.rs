//! Applying events: one write transaction per batch, with the rows a batch changes
//! many times kept in memory until it ends.
//!
//! The read models are a fold of the log, so every event must fit what the events
//! before it built: a movement names accounts that were opened, a resolution names a
//! hold that is still open and whose movements are stored, balances never go below
//! zero or past u128. An event that does not fit is `ReadModelError::Invariant`, and
//! the batch is not applied: skipping it would leave read models that silently differ
//! from the log.

use std::collections::HashMap;

use ledger_core::chain::{check_link, ChainBreak};
use ledger_core::codec;
use ledger_core::domain::{Event, EventKind, Movement as MovementEvent};
use ledger_core::money::Currency;
use ledger_engine::store::RecordedEvent;
use redb::ReadableTable;

use super::error::{corrupt, invariant, ReadModelError};
use super::model::{AccountView, Balances, Movement, MovementKind, Side, Status, Totals};
use super::rows::*;
use super::{ProjectionError, QUARTER_HOUR_NS};

/// Batch caches keyed by ids: foldhash, seeded per process, is several times faster
/// than SipHash on 16-byte keys.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Records with their ledger events decoded (`None` for other streams).
pub struct Decoded {
    pub(super) records: Vec<RecordedEvent>,
    pub(super) events: Vec<Option<Result<Event, String>>>,
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

/// One write transaction's tables, with the rows it changes many times kept in memory
/// until `finish`.
pub(super) struct Batch<'t> {
    pub(super) meta: redb::Table<'t, &'static str, u64>,
    accounts: redb::Table<'t, u128, &'static [u8]>,
    movements: redb::Table<'t, (u128, u64), &'static [u8]>,
    pendings: redb::Table<'t, u128, (u128, u128, u64)>,
    buckets: redb::Table<'t, (u128, u64), &'static [u8]>,
    owners: redb::Table<'t, (u128, u128), ()>,
    chain: redb::Table<'t, &'static str, (u64, [u8; 32])>,
    alarms: redb::Table<'t, u64, &'static str>,
    account_cache: FastMap<u128, AccountView>,
    bucket_cache: FastMap<(u128, u64), Totals>,
    chain_cache: FastMap<String, ChainHead>,
    /// Movement rows of this batch by account, in time order, appended to the
    /// accounts' blocks by `finish`, in account order.
    rows: FastMap<u128, Vec<(u64, Vec<u8>)>>,
    /// Where this batch's hold rows are in `rows`, by pending transfer id.
    hold_rows: FastMap<u128, [(u128, usize); 2]>,
    /// Whether the chain verifier recorded an alarm in this batch.
    pub(super) alarm_recorded: bool,
}

/// A stream's head as this batch leaves it.
struct ChainHead {
    next_revision: u64,
    hash: [u8; 32],
    /// The position of the stream's revision 0 when this batch took the stream for a
    /// new one without reading the `chain` table: `finish`'s insert of the head returns
    /// what the table held, and a head there means the stream began again (alarm). One
    /// read fewer per new stream, at a random place of a table as large as the history.
    began_at: Option<u64>,
}

/// What a movement does to the balances of its side.
#[derive(Clone, Copy)]
struct Change {
    pending_add: u128,
    pending_sub: u128,
    posted_add: u128,
}

/// A movement event's parts: transfer, debit account, credit account, amount, currency.
type Parts = (u128, u128, u128, u128, Currency);

impl<'t> Batch<'t> {
    pub(super) fn open(txn: &'t redb::WriteTransaction) -> Result<Batch<'t>, ProjectionError> {
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
            alarm_recorded: false,
        })
    }

    fn alarm(&mut self, position: u64, reason: String) -> Result<(), ProjectionError> {
        tracing::error!(position, %reason, "audit: the log does not verify");
        if self.alarms.get(position)?.is_none() {
            self.alarms.insert(position, reason.as_str())?;
        }
        self.alarm_recorded = true;
        Ok(())
    }

    pub(super) fn record(
        &mut self,
        record: &RecordedEvent,
        event: Option<&Result<Event, String>>,
    ) -> Result<(), ProjectionError> {
        // The chain verifier.
        let (head, began_at) = match self.chain_cache.get(&record.stream) {
            Some(head) => (Some((head.next_revision, head.hash)), None),
            // Checked against the table by `finish` (`ChainHead::began_at`).
            None if record.revision == 0 => (None, Some(record.position)),
            None => (self.chain.get(record.stream.as_str())?.map(|v| v.value()), None),
        };
        // The table keeps (next revision, last hash); a stream without a head is new.
        let last = head.and_then(|(next, hash)| next.checked_sub(1).map(|revision| (revision, hash)));
        if let Err(broken) = check_link(last, record.revision, &record.payload, &record.hash) {
            self.alarm(record.position, chain_alarm(&record.stream, record.revision, broken))?;
        }
        let head = ChainHead { next_revision: record.revision + 1, hash: record.hash, began_at };
        self.chain_cache.insert(record.stream.clone(), head);
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
            let Some(row) = self.accounts.get(id)? else { return Ok(None) };
            let view = decode_account(id, row.value())?;
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
        (transfer_id, debit, credit, amount, currency): Parts,
        metadata: &str,
        change: Change,
        status: Status,
    ) -> Result<(), ProjectionError> {
        let mut placed = [(0u128, usize::MAX); 2];
        for (leg, (account, side, counterparty)) in
            [(debit, Side::Debit, credit), (credit, Side::Credit, debit)].into_iter().enumerate()
        {
            let Some(view) = self.load_account(account)? else {
                let reason = format!("transfer {transfer_id} moves account {account}, which was never opened");
                return Err(invariant(position, reason).into());
            };
            let after = apply_change(&mut view.balances, side, change)
                .map_err(|what| invariant(position, format!("account {account}: {what}")))?;
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
            if u16::try_from(encoded.len()).is_err() {
                let reason = format!("a movement of {} bytes is longer than a row can be", encoded.len());
                return Err(invariant(position, reason).into());
            }
            let rows = self.rows.entry(account).or_default();
            placed[leg] = (account, rows.len());
            rows.push((timestamp_ns, encoded));
            if change.posted_add > 0 {
                self.add_to_bucket(position, (account, timestamp_ns / QUARTER_HOUR_NS), side, change.posted_add)?;
            }
        }
        if kind == MovementKind::TransferPending {
            self.hold_rows.insert(transfer_id, placed);
        }
        Ok(())
    }

    /// Adds a posted amount to the totals of an account's quarter hour.
    fn add_to_bucket(
        &mut self,
        position: u64,
        key: (u128, u64),
        side: Side,
        posted: u128,
    ) -> Result<(), ProjectionError> {
        let bucket = match self.bucket_cache.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                // No row yet: nothing was posted in that quarter hour so far.
                let stored = match self.buckets.get(key)? {
                    Some(row) => decode_bucket(key, row.value())?,
                    None => Totals::default(),
                };
                entry.insert(stored)
            }
        };
        let total = match side {
            Side::Debit => &mut bucket.debits,
            Side::Credit => &mut bucket.credits,
        };
        let overflow = || invariant(position, format!("the totals of account {} overflow", key.0));
        *total = total.checked_add(posted).ok_or_else(overflow)?;
        bucket.count = bucket.count.checked_add(1).ok_or_else(overflow)?;
        Ok(())
    }

    /// Sets the status of a hold's two movements and forgets the hold.
    fn resolve(&mut self, position: u64, pending_id: u128, status: Status) -> Result<(), ProjectionError> {
        let Some((debit, credit, timestamp_ns)) = self.pendings.remove(pending_id)?.map(|v| v.value()) else {
            let reason = format!("it resolves hold {pending_id}, which is not open");
            return Err(invariant(position, reason).into());
        };
        let missing = |account: u128| {
            invariant(position, format!("hold {pending_id} has no movement on account {account} at {timestamp_ns} ns"))
        };
        if let Some(placed) = self.hold_rows.remove(&pending_id) {
            // The hold is in this batch, not yet in the table.
            for (account, index) in placed {
                let row = self.rows.get_mut(&account).and_then(|rows| rows.get_mut(index));
                let Some(byte) = row.and_then(|(_, bytes)| bytes.get_mut(STATUS_OFFSET)) else {
                    return Err(missing(account).into());
                };
                *byte = status.byte();
            }
            return Ok(());
        }
        for account in [debit, credit] {
            let block = self.movements.range((account, 0)..=(account, timestamp_ns))?.next_back().transpose()?;
            let Some((key, mut bytes)) = block.map(|(k, v)| (k.value(), v.value().to_vec())) else {
                return Err(missing(account).into());
            };
            if !set_status(key, &mut bytes, timestamp_ns, status)? {
                return Err(missing(account).into());
            }
            self.movements.insert(key, bytes.as_slice())?;
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
                let kind = MovementKind::TransferPosted;
                self.movement(position, at, kind, parts(m), &m.metadata, change, Status::Posted)?;
            }
            EventKind::TransferPending { movement: m, .. } => {
                let change = Change { pending_add: m.amount, ..none };
                let kind = MovementKind::TransferPending;
                self.movement(position, at, kind, parts(m), &m.metadata, change, Status::Pending)?;
                self.pendings.insert(m.id.0, (m.debit_account_id.0, m.credit_account_id.0, at))?;
            }
            EventKind::PendingPosted { movement: m, pending_id, pending_amount } => {
                let planted = ledger_engine::sim_bugs::injected(ledger_engine::sim_bugs::Bug::ReadModelPostTwice);
                let posted_add = if planted { m.amount.saturating_mul(2) } else { m.amount };
                let change = Change { pending_sub: *pending_amount, posted_add, ..none };
                let kind = MovementKind::PendingPosted;
                self.movement(position, at, kind, parts(m), &m.metadata, change, Status::Posted)?;
                self.resolve(position, pending_id.0, Status::Posted)?;
            }
            EventKind::PendingVoided { movement: m, pending_id } => {
                let change = Change { pending_sub: m.amount, ..none };
                let kind = MovementKind::PendingVoided;
                self.movement(position, at, kind, parts(m), &m.metadata, change, Status::Voided)?;
                self.resolve(position, pending_id.0, Status::Voided)?;
            }
            EventKind::PendingExpired { pending_id, debit_account_id, credit_account_id, pending_amount, currency } => {
                let change = Change { pending_sub: *pending_amount, ..none };
                let parts = (pending_id.0, debit_account_id.0, credit_account_id.0, *pending_amount, *currency);
                self.movement(position, at, MovementKind::PendingExpired, parts, "", change, Status::Expired)?;
                self.resolve(position, pending_id.0, Status::Expired)?;
            }
        }
        Ok(())
    }

    /// Appends this batch's movement rows to their accounts' blocks: fills each
    /// account's last block, then starts new ones.
    fn append_rows(&mut self) -> Result<(), ProjectionError> {
        let mut by_account: Vec<_> = self.rows.drain().collect();
        by_account.sort_unstable_by_key(|(account, _)| *account);
        for (account, rows) in by_account {
            let mut rows = rows.into_iter().peekable();
            let last = self.movements.range((account, 0)..=(account, u64::MAX))?.next_back().transpose()?;
            if let Some((key, mut block)) = last.map(|(k, v)| (k.value(), v.value().to_vec())) {
                let mut count = block_count(key, &block)?;
                if count < BLOCK_ROWS {
                    while count < BLOCK_ROWS {
                        let Some((timestamp_ns, row)) = rows.next() else { break };
                        push_row(&mut block, count, timestamp_ns, &row).map_err(|reason| block_error(key, reason))?;
                        count += 1;
                    }
                    self.movements.insert(key, block.as_slice())?;
                }
            }
            while let Some(&(first_ns, _)) = rows.peek() {
                let key = (account, first_ns);
                let mut block = new_block();
                for count in 0..BLOCK_ROWS {
                    let Some((timestamp_ns, row)) = rows.next() else { break };
                    push_row(&mut block, count, timestamp_ns, &row).map_err(|reason| block_error(key, reason))?;
                }
                self.movements.insert(key, block.as_slice())?;
            }
        }
        Ok(())
    }

    pub(super) fn finish(mut self, next: u64) -> Result<(), ProjectionError> {
        self.append_rows()?;
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
        let mut began_again = Vec::new();
        for (stream, head) in self.chain_cache.drain() {
            let held = self.chain.insert(stream.as_str(), (head.next_revision, head.hash))?.map(|v| v.value().0);
            if let (Some(position), Some(due)) = (head.began_at, held) {
                began_again.push((position, chain_alarm(&stream, 0, ChainBreak::Revision { found: 0, due })));
            }
        }
        for (position, reason) in began_again {
            self.alarm(position, reason)?;
        }
        self.meta.insert(NEXT_POSITION, next)?;
        Ok(())
    }
}

fn chain_alarm(stream: &str, revision: u64, broken: ChainBreak) -> String {
    format!("{stream} revision {revision}: {broken}")
}

fn block_error(key: (u128, u64), reason: String) -> ReadModelError {
    corrupt(MOVEMENTS_TABLE, format!("account {}, block from {} ns", key.0, key.1), reason)
}

/// Applies `change` to the balances of `side` and returns the balances after it, or
/// what would go out of range.
fn apply_change(balances: &mut Balances, side: Side, change: Change) -> Result<Balances, &'static str> {
    let (pending, posted) = match side {
        Side::Debit => (&mut balances.debits_pending, &mut balances.debits_posted),
        Side::Credit => (&mut balances.credits_pending, &mut balances.credits_posted),
    };
    *pending = pending.checked_add(change.pending_add).ok_or("pending balance past u128")?;
    *pending = pending.checked_sub(change.pending_sub).ok_or("pending balance below zero")?;
    *posted = posted.checked_add(change.posted_add).ok_or("posted balance past u128")?;
    Ok(*balances)
}
