//! The tiers of a partition's accounts and transfers (see [`LedgerState`]): what the
//! writer hands off to its state store, and how the state reads through memory, the
//! hand-offs not yet written, and the store.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::account_cache::{AccountCache, ACCOUNT_CACHE_BYTES, TOUCH_GROUP};
use super::transfer_map::TransferMap;
use super::{CurrencyTotals, LedgerState};
use crate::domain::*;
use crate::money::Currency;

/// A transfer as the state keeps it, with the revisions (positions in the partition's
/// stream) of the event that made it and of the event that last changed it (the one
/// that resolved a hold; else the same).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StoredTransfer {
    pub transfer: Transfer,
    pub created: u64,
    pub changed: u64,
}

/// The state's maps: hashbrown with foldhash, randomly seeded (ids come from outside).
/// Transfers are in a [`TransferMap`]: a new transfer whose id is greater than any
/// before it is pushed at the end of a vector.
pub type AccountMap = HashMap<AccountId, Account, foldhash::fast::RandomState>;
pub(super) type AccountIds = HashSet<AccountId, foldhash::fast::RandomState>;

/// Where accounts and transfers handed off are kept: an on-disk store in the engine, a
/// map in tests. Its accounts are as of the state reading it (a start replays from the
/// store's own checkpoint); its transfers may be newer (written further than the
/// snapshot or checkpoint a replay starts from): the state hides those it has not
/// reached yet. An error means the store cannot be trusted: the state stops the
/// process (a broken invariant), and the store is expected to have marked itself for a
/// rebuild from the log first.
pub trait StateStore: Send + Sync {
    /// The newest version written of transfer `id`.
    fn transfer(&self, id: TransferId) -> Result<Option<StoredTransfer>, String>;
    /// Account `id` as of the last hand-off written.
    fn account(&self, id: AccountId) -> Result<Option<Account>, String>;
}

/// What a state keeps besides its accounts and transfers: small, written with every
/// hand-off as the store's checkpoint, from which a start goes on
/// ([`LedgerState::from_checkpoint`]).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub events_applied: u64,
    pub last_timestamp_ns: u64,
    pub transfers_total: u64,
    pub accounts_total: u64,
    pub totals: BTreeMap<Currency, CurrencyTotals>,
    pub expiries: BTreeSet<(u64, TransferId)>,
}

/// A transfer store attached to a state. Two states are equal when they hold the same
/// transfers, wherever they keep them, so the handle itself never makes them differ.
#[derive(Clone)]
pub(super) struct StoreHandle(Arc<dyn StateStore>);

impl PartialEq for StoreHandle {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for StoreHandle {}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateStore")
    }
}

/// Accounts and transfers handed off and not yet confirmed written.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(super) struct Frozen {
    number: u64,
    transfers: Arc<TransferMap>,
    accounts: Arc<AccountMap>,
}

/// What [`LedgerState::hand_off`] gives the store to write: the accounts and transfers
/// made or changed after the previous hand-off, and the checkpoint, through event
/// `checkpoint.events_applied - 1`.
pub struct HandOff {
    pub number: u64,
    pub transfers: Arc<TransferMap>,
    pub accounts: Arc<AccountMap>,
    pub checkpoint: Checkpoint,
}

impl LedgerState {
    /// Attaches the store accounts and transfers are handed off to and read back from.
    pub fn with_store(mut self, store: Arc<dyn StateStore>) -> LedgerState {
        self.store = Some(StoreHandle(store));
        self.account_cache = AccountCache::new(ACCOUNT_CACHE_BYTES);
        self
    }

    /// Gives the accounts cache a budget of `bytes` (tests set 0, so that every account
    /// not changed since the last hand-off is read back from the store).
    pub fn with_account_cache_bytes(mut self, bytes: usize) -> LedgerState {
        self.account_cache = AccountCache::new(bytes);
        self
    }

    /// The state a store's checkpoint describes, reading its accounts and transfers
    /// from `store`.
    pub fn from_checkpoint(checkpoint: Checkpoint, store: Arc<dyn StateStore>) -> LedgerState {
        LedgerState {
            transfers_total: checkpoint.transfers_total,
            accounts_total: checkpoint.accounts_total,
            expiries: checkpoint.expiries,
            totals: checkpoint.totals,
            last_timestamp_ns: checkpoint.last_timestamp_ns,
            events_applied: checkpoint.events_applied,
            ..LedgerState::default()
        }
        .with_store(store)
    }

    pub(super) fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            events_applied: self.events_applied,
            last_timestamp_ns: self.last_timestamp_ns,
            transfers_total: self.transfers_total,
            accounts_total: self.accounts_total,
            totals: self.totals.clone(),
            expiries: self.expiries.clone(),
        }
    }

    /// An account as of this state: the first tier's copy, then the cache's, then the
    /// newest hand-off's still in memory, then the store's.
    ///
    /// The cache comes before the hand-offs: [`LedgerState::hand_off`] puts each account
    /// it hands off in the cache, so a cached copy is as new as the newest hand-off's
    /// (an account whose encoding does not fit a slot is removed from the cache
    /// instead). With accounts spread over millions of ids, this saves a lookup in each
    /// hand-off in memory (a cache miss each) for most accounts.
    pub fn account(&self, id: AccountId) -> Option<Cow<'_, Account>> {
        if let Some(account) = self.accounts.get(&id) {
            return Some(Cow::Borrowed(account));
        }
        account_below_first_tier(&self.account_cache, &self.frozen, self.store.as_ref(), id)
    }

    /// Brings the accounts `commands` name into the first tier, unchanged, so that
    /// deciding and applying each transfer read them there: one lookup in the cache or
    /// the store per account and batch, instead of one per read.
    pub(super) fn load_accounts(&mut self, commands: &[NewTransfer]) {
        if self.store.is_none() {
            return;
        }
        for group in commands.chunks(TOUCH_GROUP / 2) {
            let ids = || group.iter().flat_map(|command| [command.debit_account_id, command.credit_account_id]);
            std::hint::black_box(ids().fold(0u8, |all, id| all ^ self.account_cache.touch(id)));
            for id in ids() {
                if !self.accounts.contains_key(&id) {
                    if let Some(account) = self.account(id).map(Cow::into_owned) {
                        self.accounts.insert(id, account);
                    }
                }
            }
        }
    }

    /// Account `id` in the first tier, brought there from a lower one if need be.
    pub(super) fn account_mut(&mut self, id: AccountId) -> Option<&mut Account> {
        // One lookup in the first tier, where the account nearly always is.
        let account = match self.accounts.entry(id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let below = account_below_first_tier(&self.account_cache, &self.frozen, self.store.as_ref(), id)?;
                entry.insert(below.into_owned())
            }
        };
        self.dirty_accounts.insert(id);
        Some(account)
    }

    pub(super) fn accounts_read_the_same_in(&self, other: &LedgerState) -> bool {
        let in_memory = self.frozen.iter().flat_map(|frozen| frozen.accounts.keys());
        self.accounts.keys().chain(in_memory).all(|id| self.account(*id) == other.account(*id))
    }

    pub fn transfer(&self, id: TransferId) -> Option<Cow<'_, Transfer>> {
        Some(match self.stored(id)? {
            Cow::Borrowed(stored) => Cow::Borrowed(&stored.transfer),
            Cow::Owned(stored) => Cow::Owned(stored.transfer),
        })
    }

    /// A transfer with the revisions that made and last changed it, as of this state.
    pub fn stored_transfer(&self, id: TransferId) -> Option<StoredTransfer> {
        self.stored(id).map(Cow::into_owned)
    }

    pub(super) fn transfers_read_the_same_in(&self, other: &LedgerState) -> bool {
        let in_memory = self.frozen.iter().flat_map(|frozen| frozen.transfers.keys());
        self.transfers.keys().chain(in_memory).all(|id| self.transfer(*id) == other.transfer(*id))
    }

    /// A transfer as of this state: the newest tier that holds it wins.
    pub(super) fn stored(&self, id: TransferId) -> Option<Cow<'_, StoredTransfer>> {
        self.stored_before(id, self.events_applied)
    }

    /// A transfer as it was before event `revision`.
    pub(super) fn stored_before(&self, id: TransferId, revision: u64) -> Option<Cow<'_, StoredTransfer>> {
        if let Some(stored) = self.transfers.get(&id) {
            return Some(Cow::Borrowed(stored));
        }
        for frozen in self.frozen.iter().rev() {
            if let Some(stored) = frozen.transfers.get(&id) {
                return before(revision, Cow::Borrowed(stored));
            }
        }
        let store = self.store.as_ref()?;
        match store.0.transfer(id) {
            Ok(stored) => before(revision, Cow::Owned(stored?)),
            // The writer cannot decide without it; see `StateStore`.
            Err(error) => panic!("the transfer store failed reading {id:?}: {error}"),
        }
    }

    /// Moves the transfers made or changed since the last hand-off out of the first
    /// tier, for the store to write; `None` without a store or with nothing new. They
    /// stay readable until [`LedgerState::stored_up_to`] names them. Between batches.
    pub fn hand_off(&mut self) -> Option<HandOff> {
        assert!(self.journal.is_none(), "hand-off inside a linked chain");
        if self.store.is_none() || (self.transfers.is_empty() && self.dirty_accounts.is_empty()) {
            return None;
        }
        self.handed_off += 1;
        let transfers = Arc::new(next_first_tier(&mut self.transfers, &mut self.spare_transfers));
        // The changed accounts go; those only read (`load_accounts`) are in the cache.
        let mut accounts = next_first_tier(&mut self.accounts, &mut self.spare_accounts);
        let changed = std::mem::take(&mut self.dirty_accounts);
        accounts.retain(|id, _| changed.contains(id));
        // From now on the cache's copy is as new as the hand-off's (see `account`).
        self.account_cache.put_all(accounts.values());
        let accounts = Arc::new(accounts);
        let frozen = Frozen { number: self.handed_off, transfers: transfers.clone(), accounts: accounts.clone() };
        self.frozen.push_back(frozen);
        Some(HandOff { number: self.handed_off, transfers, accounts, checkpoint: self.checkpoint() })
    }

    /// The store has written every hand-off up to `number`: read them from it now.
    pub fn stored_up_to(&mut self, number: u64) {
        while self.frozen.front().is_some_and(|frozen| frozen.number <= number) {
            let Some(frozen) = self.frozen.pop_front() else { break };
            keep_spare(frozen.transfers, &mut self.spare_transfers);
            keep_spare(frozen.accounts, &mut self.spare_accounts);
        }
    }

    /// Transfers and accounts in the first tier (made or changed since the last
    /// hand-off).
    pub fn in_memory(&self) -> usize {
        self.transfers.len() + self.dirty_accounts.len()
    }

    /// Hand-offs not yet confirmed written.
    pub fn hand_offs_pending(&self) -> usize {
        self.frozen.len()
    }
}

/// A first tier's map, kept for reuse from one hand-off to the next.
pub(super) trait TierMap: Sized {
    /// An empty map with room for what `self` holds, hashed as it.
    fn empty_like(&self) -> Self;
    /// Whether this map has room for what `like` holds.
    fn has_room_for(&self, like: &Self) -> bool;
    fn clear(&mut self);
}

impl<K, V> TierMap for HashMap<K, V, foldhash::fast::RandomState> {
    fn empty_like(&self) -> Self {
        HashMap::with_capacity_and_hasher(self.len(), self.hasher().clone())
    }
    fn has_room_for(&self, like: &Self) -> bool {
        self.capacity() >= like.len()
    }
    fn clear(&mut self) {
        HashMap::clear(self)
    }
}

/// Takes the first tier's map out of `tier`, leaving in its place the spare map (if it
/// is large enough) or a new one. The next hand-off is likely as big: sized for it at
/// once, the first tier is not rehashed (and fresh memory not touched twice) as it fills.
fn next_first_tier<M: TierMap>(tier: &mut M, spare: &mut Option<M>) -> M {
    let next = match spare.take() {
        Some(spare) if spare.has_room_for(tier) => spare,
        _ => tier.empty_like(),
    };
    std::mem::replace(tier, next)
}

/// Keeps a written hand-off's map, emptied, as the spare, if the store has let go of it
/// (else it is simply dropped when it has).
fn keep_spare<M: TierMap>(map: Arc<M>, spare: &mut Option<M>) {
    if let Ok(mut map) = Arc::try_unwrap(map) {
        map.clear();
        *spare = Some(map);
    }
}

/// An account as the tiers under the first hold it: the cache's copy, then the newest
/// hand-off's still in memory, then the store's (see [`LedgerState::account`]).
fn account_below_first_tier<'a>(
    cache: &AccountCache,
    frozen: &'a VecDeque<Frozen>,
    store: Option<&StoreHandle>,
    id: AccountId,
) -> Option<Cow<'a, Account>> {
    if let Some(account) = cache.get(id) {
        return Some(Cow::Owned(account));
    }
    for frozen in frozen.iter().rev() {
        if let Some(account) = frozen.accounts.get(&id) {
            return Some(Cow::Borrowed(account));
        }
    }
    match store?.0.account(id) {
        Ok(account) => account.map(Cow::Owned),
        // The writer cannot decide without it; see `StateStore`.
        Err(error) => panic!("the state store failed reading {id:?}: {error}"),
    }
}

/// A version read from a store or a hand-off, as it was before event `revision`: absent
/// if made by that event or a later one, still pending if resolved by one.
fn before(revision: u64, stored: Cow<'_, StoredTransfer>) -> Option<Cow<'_, StoredTransfer>> {
    if stored.created >= revision {
        return None;
    }
    if stored.changed < revision {
        return Some(stored);
    }
    let mut earlier = stored.into_owned();
    earlier.transfer.pending_status = Some(PendingStatus::Pending);
    earlier.changed = earlier.created;
    Some(Cow::Owned(earlier))
}
