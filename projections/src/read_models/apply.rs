//! Applying events: one write transaction per batch, with the rows a batch changes
//! many times kept in memory until it ends.

use std::collections::HashMap;

use ledger_core::chain::{chain_hash, GENESIS_HASH};
use ledger_core::codec;
use ledger_core::domain::{Event, EventKind, Movement as MovementEvent};
use ledger_core::money::Currency;
use ledger_core::store::RecordedEvent;
use redb::ReadableTable;

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
    chain_cache: FastMap<String, (u64, [u8; 32])>,
    /// Movement rows of this batch by account, in time order, appended to the
    /// accounts' blocks by `finish`, in account order.
    rows: FastMap<u128, Vec<(u64, Vec<u8>)>>,
    /// Where this batch's hold rows are in `rows`, by pending transfer id.
    hold_rows: FastMap<u128, [(u128, usize); 2]>,
}

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
        })
    }

    fn alarm(&mut self, position: u64, reason: String) -> Result<(), ProjectionError> {
        tracing::error!(position, %reason, "audit: the log does not verify");
        if self.alarms.get(position)?.is_none() {
            self.alarms.insert(position, reason.as_str())?;
        }
        Ok(())
    }

    pub(super) fn record(
        &mut self,
        record: &RecordedEvent,
        event: Option<&Result<Event, String>>,
    ) -> Result<(), ProjectionError> {
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

    pub(super) fn finish(mut self, next: u64) -> Result<(), ProjectionError> {
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
