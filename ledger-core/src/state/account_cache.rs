//! The accounts cache: accounts as the state store holds them (or will, once the
//! hand-offs in memory are written), in a fixed byte budget, so that a lookup of an
//! account not changed since the last hand-off does not go to the store.
//!
//! Each account takes one 64-byte slot: a length byte, then a compact encoding (a
//! header of byte counts, then each integer's significant bytes). An account whose
//! encoding does not fit (more than 63 bytes: only accounts with very large totals and
//! 128-bit ids and owners) is not cached. The slots are split in `SHARDS` open-addressing
//! tables (linear probing, deletion by backward shift), each at most 7/8 full: a shard
//! doubles until it reaches its share of the budget, then evicts the entry under its
//! clock hand for each new one. A shard grows on its own, so growing copies at most one
//! shard's slots at a time, and a small ledger holds little memory.

use std::hash::BuildHasher;

use crate::domain::{Account, AccountFlags, AccountId};
use crate::money::Currency;
use crate::state::rows::{account_ints, len_nibble, nibble_len, state_byte, state_of, stored_len};

/// The default budget of a state's accounts cache, in bytes (768 MiB): at 64 bytes an
/// account and at most 7/8 of the slots full, about 11 million accounts.
pub const ACCOUNT_CACHE_BYTES: usize = 768 << 20;

/// Bytes of one slot.
const SLOT_BYTES: usize = 64;
/// Most bytes of an account's encoding (the slot but its length byte).
const ENCODED_MAX: usize = SLOT_BYTES - 1;
/// Shards of the cache (a power of two: chosen by the top bits of the hash).
const SHARDS: usize = 64;
/// Ids whose slots are touched together before their lookups (see `touch`).
pub const TOUCH_GROUP: usize = 32;
/// Slots a shard starts with.
const SHARD_SLOTS_MIN: usize = 64;
/// Bytes of the encoding's header: a nibble per variable-length field.
const HEADER_BYTES: usize = 4;
/// Bytes of the fixed fields: currency, code, state.
const FIXED_BYTES: usize = 5;

type Slot = [u8; SLOT_BYTES];

/// See the module's documentation. A clone is empty, with the same budget: a cache is
/// never part of a state's value.
#[derive(Default)]
pub(crate) struct AccountCache {
    shards: Vec<Shard>,
    /// Most slots a shard may have: its share of the budget.
    shard_slots_max: usize,
    /// Randomly seeded: account ids come from outside.
    hasher: foldhash::fast::RandomState,
}

#[derive(Default)]
struct Shard {
    slots: Vec<Slot>,
    len: usize,
    /// The slot the next eviction starts looking at.
    hand: usize,
}

impl Clone for AccountCache {
    fn clone(&self) -> AccountCache {
        AccountCache::new(self.budget_bytes())
    }
}

impl std::fmt::Debug for AccountCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountCache({} accounts, budget {} bytes)", self.len(), self.budget_bytes())
    }
}

impl AccountCache {
    /// A cache of at most `budget_bytes` bytes of slots; one too small for two slots a
    /// shard caches nothing.
    pub fn new(budget_bytes: usize) -> AccountCache {
        let shard_slots_max = budget_bytes / SHARDS / SLOT_BYTES;
        if shard_slots_max < 2 {
            return AccountCache::default();
        }
        let shards = (0..SHARDS).map(|_| Shard::default()).collect();
        AccountCache { shards, shard_slots_max, hasher: foldhash::fast::RandomState::default() }
    }

    fn budget_bytes(&self) -> usize {
        self.shard_slots_max * SHARDS * SLOT_BYTES
    }

    /// Accounts cached.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.len).sum()
    }

    /// Bytes of slots held now (at most the budget).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.shards.iter().map(|shard| shard.slots.len() * SLOT_BYTES).sum()
    }

    fn hash(&self, id: AccountId) -> u64 {
        self.hasher.hash_one(id.0)
    }

    /// The cached copy of account `id`, if there is one.
    pub fn get(&self, id: AccountId) -> Option<Account> {
        if self.shards.is_empty() {
            return None;
        }
        let hash = self.hash(id);
        let shard = &self.shards[shard_of(hash)];
        let at = shard.find(hash, id)?;
        Some(decode(&shard.slots[at]))
    }

    /// Reads the first byte of `id`'s home slot, so that a lookup of it soon after finds
    /// the slot in the CPU's caches. Touching a group of ids before looking them up lets
    /// their memory loads overlap (a prefetch without `unsafe`): a lookup is a load from
    /// a random place in hundreds of MB.
    pub fn touch(&self, id: AccountId) -> u8 {
        let hash = self.hash(id);
        let Some(shard) = self.shards.get(shard_of(hash)) else { return 0 };
        match shard.slots.len() {
            0 => 0,
            slots => shard.slots[home(hash, slots)][0],
        }
    }

    /// Puts every account of `accounts`, touching each group's slots first.
    pub fn put_all<'a>(&mut self, accounts: impl Iterator<Item = &'a Account>) {
        if self.shards.is_empty() {
            return;
        }
        let accounts: Vec<&Account> = accounts.collect();
        for group in accounts.chunks(TOUCH_GROUP) {
            std::hint::black_box(group.iter().fold(0u8, |all, account| all ^ self.touch(account.id)));
            for account in group {
                self.put(account);
            }
        }
    }

    /// Caches `account` in place of any copy of it; one whose encoding does not fit a
    /// slot is left out (and an older copy removed).
    pub fn put(&mut self, account: &Account) {
        if self.shards.is_empty() {
            return;
        }
        let Some(slot) = encode(account) else {
            return self.remove(account.id);
        };
        let hash = self.hash(account.id);
        let (slots_max, hasher) = (self.shard_slots_max, &self.hasher);
        let shard = &mut self.shards[shard_of(hash)];
        if let Some(at) = shard.find(hash, account.id) {
            shard.slots[at] = slot;
            return;
        }
        if shard.len + 1 > len_max(shard.slots.len()) {
            if shard.slots.len() < slots_max {
                let slots = (shard.slots.len() * 2).clamp(SHARD_SLOTS_MIN.min(slots_max), slots_max);
                shard.grow(slots, hasher);
            } else {
                shard.evict(hasher);
            }
        }
        shard.insert(hash, slot);
    }

    /// Forgets account `id`.
    pub fn remove(&mut self, id: AccountId) {
        if self.shards.is_empty() {
            return;
        }
        let hash = self.hash(id);
        let hasher = &self.hasher;
        let shard = &mut self.shards[shard_of(hash)];
        if let Some(at) = shard.find(hash, id) {
            shard.delete(at, hasher);
        }
    }
}

fn shard_of(hash: u64) -> usize {
    (hash >> (64 - SHARDS.trailing_zeros())) as usize
}

/// A hash's home slot in a table of `slots` slots (any number: multiply and shift).
fn home(hash: u64, slots: usize) -> usize {
    (((hash & u64::from(u32::MAX)) * slots as u64) >> 32) as usize
}

/// Most entries a table of `slots` slots holds: 7/8 of it, and never all of it (a probe
/// always ends at an empty slot).
fn len_max(slots: usize) -> usize {
    (slots - slots / 8).min(slots.saturating_sub(1))
}

impl Shard {
    fn next(&self, at: usize) -> usize {
        if at + 1 == self.slots.len() {
            0
        } else {
            at + 1
        }
    }

    fn find(&self, hash: u64, id: AccountId) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mut at = home(hash, self.slots.len());
        for _ in 0..self.slots.len() {
            let slot = &self.slots[at];
            if slot[0] == 0 {
                return None;
            }
            if id_of(slot) == id.0 {
                return Some(at);
            }
            at = self.next(at);
        }
        None
    }

    /// Puts `slot` in the first empty slot from its home (there is one: see `len_max`).
    fn insert(&mut self, hash: u64, slot: Slot) {
        let mut at = home(hash, self.slots.len());
        while self.slots[at][0] != 0 {
            at = self.next(at);
        }
        self.slots[at] = slot;
        self.len += 1;
    }

    fn grow(&mut self, slots: usize, hasher: &foldhash::fast::RandomState) {
        let old = std::mem::replace(&mut self.slots, vec![[0; SLOT_BYTES]; slots]);
        self.len = 0;
        self.hand = 0;
        for slot in old.iter().filter(|slot| slot[0] != 0) {
            self.insert(hasher.hash_one(id_of(slot)), *slot);
        }
    }

    /// Removes the first entry at or after the clock hand.
    fn evict(&mut self, hasher: &foldhash::fast::RandomState) {
        if self.len == 0 {
            return;
        }
        let mut at = self.hand % self.slots.len();
        while self.slots[at][0] == 0 {
            at = self.next(at);
        }
        self.delete(at, hasher);
        self.hand = self.next(at);
    }

    /// Empties slot `at`, moving back the entries after it whose probe passed it.
    fn delete(&mut self, at: usize, hasher: &foldhash::fast::RandomState) {
        let slots = self.slots.len();
        self.slots[at][0] = 0;
        self.len -= 1;
        let (mut hole, mut next) = (at, self.next(at));
        while self.slots[next][0] != 0 {
            let home = home(hasher.hash_one(id_of(&self.slots[next])), slots);
            // The entry may fill the hole unless its home lies after the hole (cyclically).
            if (next + slots - home) % slots >= (next + slots - hole) % slots {
                self.slots[hole] = self.slots[next];
                self.slots[next][0] = 0;
                hole = next;
            }
            next = self.next(next);
        }
    }
}

/// The fields of variable length, in the encoding's order: the id, then the store
/// row's integers.
fn variable_fields(account: &Account) -> [u128; 8] {
    let ints = account_ints(account);
    std::array::from_fn(|field| if field == 0 { account.id.0 } else { ints[field - 1] })
}

/// `account` in a slot, if its encoding fits.
fn encode(account: &Account) -> Option<Slot> {
    let fields = variable_fields(account);
    let lens = fields.map(stored_len);
    let len = HEADER_BYTES + FIXED_BYTES + lens.iter().sum::<usize>();
    if len > ENCODED_MAX {
        return None;
    }
    let mut slot = [0u8; SLOT_BYTES];
    slot[0] = len as u8;
    for (field, pair) in lens.chunks(2).enumerate() {
        slot[1 + field] = len_nibble(pair[0]) | len_nibble(pair[1]) << 4;
    }
    let mut at = 1 + HEADER_BYTES;
    slot[at..at + 2].copy_from_slice(&account.currency.index().to_le_bytes());
    slot[at + 2..at + 4].copy_from_slice(&account.code.to_le_bytes());
    slot[at + 4] = state_byte(account.state);
    at += FIXED_BYTES;
    for (value, len) in fields.iter().zip(lens) {
        slot[at..at + len].copy_from_slice(&value.to_le_bytes()[..len]);
        at += len;
    }
    Some(slot)
}

/// The id in an occupied slot (the first variable field).
fn id_of(slot: &Slot) -> u128 {
    read_le(slot, 1 + HEADER_BYTES + FIXED_BYTES, nibble_len(slot[1] & 0x0f))
}

/// The `len`-byte little-endian integer at `at` in a slot: one 16-byte read and a
/// mask where the slot has 16 bytes from `at`. A copy of `len` bytes to the stack read
/// back at once makes the CPU wait until every earlier store of the thread has reached
/// its cache, and the writer's earlier stores go to memory that is not in it: half
/// of the account lookups' time went to that wait in the 10M-accounts bench.
fn read_le(slot: &Slot, at: usize, len: usize) -> u128 {
    match slot.get(at..at + 16).and_then(|wide| <[u8; 16]>::try_from(wide).ok()) {
        Some(wide) if len < 16 => u128::from_le_bytes(wide) & ((1u128 << (8 * len)) - 1),
        Some(wide) => u128::from_le_bytes(wide),
        None => {
            let mut bytes = [0u8; 16];
            bytes[..len].copy_from_slice(&slot[at..at + len]);
            u128::from_le_bytes(bytes)
        }
    }
}

/// The account in an occupied slot. Only `encode` writes slots: one that does not
/// decode is a broken invariant (memory corrupted), and the process stops.
fn decode(slot: &Slot) -> Account {
    let header = &slot[1..1 + HEADER_BYTES];
    let lens: [usize; 8] = std::array::from_fn(|field| nibble_len(header[field / 2] >> (4 * (field % 2)) & 0x0f));
    let mut at = 1 + HEADER_BYTES;
    let currency = u16::from_le_bytes([slot[at], slot[at + 1]]);
    let code = u16::from_le_bytes([slot[at + 2], slot[at + 3]]);
    let state = state_of(slot[at + 4])
        .unwrap_or_else(|| panic!("the accounts cache holds an account state {} it never wrote", slot[at + 4]));
    at += FIXED_BYTES;
    let fields = lens.map(|len| {
        let value = read_le(slot, at, len);
        at += len;
        value
    });
    assert_eq!(at, 1 + slot[0] as usize, "the accounts cache holds a slot it never wrote");
    let narrow = |value: u128| u64::try_from(value).expect("the accounts cache holds a slot it never wrote");
    Account {
        id: AccountId(fields[0]),
        currency: Currency::from_index(currency).expect("the accounts cache holds a currency it never wrote"),
        code,
        flags: AccountFlags(u32::try_from(fields[7]).expect("the accounts cache holds flags it never wrote")),
        owner_id: fields[1],
        state,
        debits_pending: fields[2],
        debits_posted: fields[3],
        credits_pending: fields[4],
        credits_posted: fields[5],
        timestamp_ns: narrow(fields[6]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountState;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn any_u128() -> impl Strategy<Value = u128> {
        // Every length of significant bytes, 0 to 16, equally often.
        (0u32..=16, any::<u128>()).prop_map(|(bytes, value)| if bytes == 0 { 0 } else { value >> (128 - 8 * bytes) })
    }

    fn any_account() -> impl Strategy<Value = Account> {
        (
            (any_u128(), any_u128(), 0..Currency::all().count() as u16, any::<u16>(), any::<u32>(), 0u8..3),
            (any_u128(), any_u128(), any_u128(), any_u128(), any::<u64>()),
        )
            .prop_map(|((id, owner_id, currency, code, flags, state), (dp, dpo, cp, cpo, timestamp_ns))| {
                Account {
                    id: AccountId(id),
                    currency: Currency::from_index(currency).expect("in the table"),
                    code,
                    flags: AccountFlags(flags),
                    owner_id,
                    state: [AccountState::Open, AccountState::Frozen, AccountState::Closed][state as usize],
                    debits_pending: dp,
                    debits_posted: dpo,
                    credits_pending: cp,
                    credits_posted: cpo,
                    timestamp_ns,
                }
            })
    }

    /// An account of the size the platform makes: random 128-bit id and owner, totals
    /// up to 2^40 minor units, no pending.
    fn platform_account(id: u128, owner: u128, posted: u64) -> Account {
        Account {
            id: AccountId(id),
            currency: Currency::USD,
            code: 1,
            flags: AccountFlags(1),
            owner_id: owner,
            state: AccountState::Open,
            debits_pending: 0,
            debits_posted: u128::from(posted),
            credits_pending: 0,
            credits_posted: u128::from(posted),
            timestamp_ns: 1_790_000_000_000_000_000,
        }
    }

    proptest! {
        /// An account that fits decodes to itself; one that does not is exactly one whose
        /// encoding is longer than a slot.
        #[test]
        fn encoding_round_trips(account in any_account()) {
            let fields = variable_fields(&account);
            let len = HEADER_BYTES + FIXED_BYTES + fields.iter().map(|v| stored_len(*v)).sum::<usize>();
            match encode(&account) {
                Some(slot) => {
                    prop_assert!(len <= ENCODED_MAX);
                    prop_assert_eq!(id_of(&slot), account.id.0);
                    prop_assert_eq!(decode(&slot), account);
                }
                None => prop_assert!(len > ENCODED_MAX),
            }
        }

        /// Through puts, removes and evictions, a lookup answers the last account put
        /// under its id or nothing, never another version; with a budget it never
        /// exceeds; and an account put is found while the cache has room for it.
        #[test]
        fn the_cache_answers_the_last_put_or_nothing(
            shard_slots in 2usize..40,
            ops in prop::collection::vec((0u128..300, 0u64..1 << 40, 0u8..4), 1..2_000),
        ) {
            let budget = shard_slots * SHARDS * SLOT_BYTES;
            let mut cache = AccountCache::new(budget);
            let mut model: HashMap<u128, Account> = HashMap::new();
            for (id, posted, op) in ops {
                let key = AccountId(id.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) >> 3);
                match op {
                    0 => {
                        cache.remove(key);
                        model.remove(&key.0);
                    }
                    1 => {
                        // Too large to fit: never cached, and an older copy is gone.
                        let mut big = platform_account(key.0, u128::MAX, posted);
                        big.debits_pending = u128::MAX;
                        big.credits_pending = u128::MAX;
                        cache.put(&big);
                        model.remove(&key.0);
                    }
                    _ => {
                        let account = platform_account(key.0, u128::MAX >> 1, posted);
                        cache.put(&account);
                        prop_assert_eq!(cache.get(key), Some(account.clone()), "just put");
                        model.insert(key.0, account);
                    }
                }
                prop_assert!(cache.bytes() <= budget);
                for shard in &cache.shards {
                    let occupied = shard.slots.iter().filter(|slot| slot[0] != 0).count();
                    prop_assert_eq!(occupied, shard.len, "op {} {}", op, id);
                    for slot in shard.slots.iter().filter(|slot| slot[0] != 0) {
                        let id = id_of(slot);
                        prop_assert!(shard.find(cache.hash(AccountId(id)), AccountId(id)).is_some(), "{} unreachable", id);
                    }
                }
                for shard in &cache.shards {
                    for slot in shard.slots.iter().filter(|slot| slot[0] != 0) {
                        prop_assert!(model.contains_key(&id_of(slot)), "stale {} after op {} {}: {:?}", id_of(slot), op, id, decode(slot));
                    }
                }
                prop_assert!(cache.len() <= model.len());
            }
            for (id, account) in &model {
                if let Some(cached) = cache.get(AccountId(*id)) {
                    prop_assert_eq!(&cached, account);
                }
            }
            // Every entry cached is one the model holds (nothing stale survived).
            let found = model.keys().filter(|id| cache.get(AccountId(**id)).is_some()).count();
            prop_assert_eq!(found, cache.len());
        }
    }

    #[test]
    fn a_platform_account_fits_a_slot() {
        let account = platform_account(u128::MAX - 7, u128::MAX - 9, (1 << 40) - 1);
        assert_eq!(encode(&account).map(|slot| decode(&slot)), Some(account));
    }

    /// Within its budget the cache keeps everything put; past it, it keeps the budget.
    #[test]
    fn a_cache_holds_what_its_budget_allows() {
        let budget = 4 * SHARDS * SHARD_SLOTS_MIN * SLOT_BYTES;
        let mut cache = AccountCache::new(budget);
        let fits = budget / SLOT_BYTES / 2;
        for id in 0..fits as u128 {
            cache.put(&platform_account(id, 1, 1));
        }
        assert_eq!(cache.len(), fits);
        assert!((0..fits as u128).all(|id| cache.get(AccountId(id)).is_some()));
        for id in 0..10 * fits as u128 {
            cache.put(&platform_account(id, 1, 1));
        }
        assert_eq!(cache.bytes(), budget);
        assert!(cache.len() >= budget / SLOT_BYTES * 3 / 4, "{} cached", cache.len());
        assert_eq!(AccountCache::new(0).len(), 0);
        let mut none = AccountCache::new(SHARDS * SLOT_BYTES);
        none.put(&platform_account(1, 1, 1));
        assert_eq!(none.get(AccountId(1)), None, "a budget under two slots a shard caches nothing");
    }
}
