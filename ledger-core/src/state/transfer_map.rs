//! The transfers of one tier ([`TransferMap`]): a run of ascending ids in a vector,
//! the rest by hash.

use std::fmt;

use indexmap::IndexMap;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::tiers::{StoredTransfer, TierMap};
use crate::domain::TransferId;

type Hashed = IndexMap<TransferId, StoredTransfer, foldhash::fast::RandomState>;

/// The transfers of a tier, by id.
///
/// Ids should grow with time (TigerBeetle's advice too), and then every new transfer's
/// id is greater than any before it. Those go to `ascending`, in the order they came:
/// a new one is pushed at the end, and a lookup of a new id is one comparison with the
/// last. A hash map would read and write a random place of tens of MB for each new
/// transfer, in memory not in the CPU's caches. An id that is not greater than the
/// last goes to `others`, by hash (entries in the order they came, beside a table of
/// their indexes). An id is in one of the two, never both.
#[derive(Clone, Default)]
pub struct TransferMap {
    /// Ids strictly ascending; found by binary search.
    ascending: Vec<(TransferId, StoredTransfer)>,
    others: Hashed,
}

impl TransferMap {
    pub fn len(&self) -> usize {
        self.ascending.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ascending.is_empty() && self.others.is_empty()
    }

    pub fn clear(&mut self) {
        self.ascending.clear();
        self.others.clear();
    }

    /// Where `id` is in `ascending`, if it is.
    fn position(&self, id: TransferId) -> Option<usize> {
        match self.ascending.last() {
            Some((last, _)) if id <= *last => self.ascending.binary_search_by_key(&id, |(id, _)| *id).ok(),
            _ => None,
        }
    }

    pub fn get(&self, id: &TransferId) -> Option<&StoredTransfer> {
        if let Some(at) = self.position(*id) {
            return Some(&self.ascending[at].1);
        }
        self.others.get(id)
    }

    /// Adds transfer `id`, which the map does not hold; false (and no change) if it
    /// does.
    pub fn insert_new(&mut self, id: TransferId, stored: StoredTransfer) -> bool {
        if self.ascending.last().is_none_or(|(last, _)| id > *last) {
            if self.others.contains_key(&id) {
                return false;
            }
            self.ascending.push((id, stored));
            return true;
        }
        if self.position(id).is_some() {
            return false;
        }
        // Through `entry`: no copy of a replaced value comes back to be read at once.
        match self.others.entry(id) {
            indexmap::map::Entry::Vacant(vacant) => {
                vacant.insert(stored);
                true
            }
            indexmap::map::Entry::Occupied(_) => false,
        }
    }

    /// Sets transfer `id`, replacing the version the map holds, if any.
    pub fn insert(&mut self, id: TransferId, stored: StoredTransfer) {
        if let Some(at) = self.position(id) {
            self.ascending[at].1 = stored;
        } else if let Some(existing) = self.others.get_mut(&id) {
            *existing = stored;
        } else {
            self.insert_new(id, stored);
        }
    }

    /// Removes transfer `id`, if the map holds it. An undo removes the newest, the
    /// last of either kind, so that nothing else moves.
    pub fn remove(&mut self, id: &TransferId) -> Option<StoredTransfer> {
        if let Some(at) = self.position(*id) {
            return Some(self.ascending.remove(at).1);
        }
        self.others.swap_remove(id)
    }

    /// Every transfer: the ascending ones in order, then the others.
    pub fn iter(&self) -> impl Iterator<Item = (&TransferId, &StoredTransfer)> + Clone {
        self.ascending.iter().map(|(id, stored)| (id, stored)).chain(self.others.iter())
    }

    pub fn keys(&self) -> impl Iterator<Item = &TransferId> {
        self.iter().map(|(id, _)| id)
    }
}

/// Kept for reuse as the next first tier: sized for as many of each kind as the last.
impl TierMap for TransferMap {
    fn empty_like(&self) -> TransferMap {
        TransferMap {
            ascending: Vec::with_capacity(self.ascending.len()),
            others: Hashed::with_capacity_and_hasher(self.others.len(), self.others.hasher().clone()),
        }
    }

    fn has_room_for(&self, like: &TransferMap) -> bool {
        self.ascending.capacity() >= like.ascending.len() && self.others.capacity() >= like.others.len()
    }

    fn clear(&mut self) {
        TransferMap::clear(self)
    }
}

impl FromIterator<(TransferId, StoredTransfer)> for TransferMap {
    /// Later versions of an id replace earlier ones.
    fn from_iter<I: IntoIterator<Item = (TransferId, StoredTransfer)>>(items: I) -> TransferMap {
        let mut map = TransferMap::default();
        for (id, stored) in items {
            map.insert(id, stored);
        }
        map
    }
}

/// Two maps are equal when they hold the same transfers, wherever each keeps them.
impl PartialEq for TransferMap {
    fn eq(&self, other: &TransferMap) -> bool {
        self.len() == other.len() && self.iter().all(|(id, stored)| other.get(id) == Some(stored))
    }
}

impl Eq for TransferMap {}

impl fmt::Debug for TransferMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// As a map of id to transfer, the form the hash map before it had (snapshots written
/// by either read back in both).
impl Serialize for TransferMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for TransferMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TransferMap, D::Error> {
        struct MapVisitor;

        impl<'de> Visitor<'de> for MapVisitor {
            type Value = TransferMap;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of transfer ids to transfers")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<TransferMap, A::Error> {
                let mut map = TransferMap::default();
                while let Some((id, stored)) = entries.next_entry::<TransferId, StoredTransfer>()? {
                    if !map.insert_new(id, stored) {
                        return Err(serde::de::Error::custom(format!("transfer {} appears twice", id.0)));
                    }
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(MapVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::domain::{AccountId, Movement, Transfer, TransferKind};
    use crate::money::Currency;

    fn stored(id: u128, version: u64) -> StoredTransfer {
        let movement = Movement {
            id: TransferId(id),
            debit_account_id: AccountId(1),
            credit_account_id: AccountId(2),
            amount: 1,
            currency: Currency::FIRST,
            code: 1,
            metadata: String::new(),
            linked: false,
        };
        let transfer = Transfer {
            movement,
            kind: TransferKind::Posted,
            timestamp_ns: version,
            expires_at_ns: 0,
            pending_status: None,
        };
        StoredTransfer { transfer, created: version, changed: version }
    }

    #[derive(Clone, Debug)]
    enum Op {
        InsertNew(u8),
        Insert(u8),
        RemoveNewest,
        Remove(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => any::<u8>().prop_map(Op::InsertNew),
            2 => any::<u8>().prop_map(Op::Insert),
            2 => Just(Op::RemoveNewest),
            1 => any::<u8>().prop_map(Op::Remove),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// Any sequence of inserts (ids mostly rising, some not), replacements, undos of
        /// the newest and clears reads the same as an ordered map, and a map made like
        /// it from its contents or from its serialized form equals it.
        #[test]
        fn reads_as_an_ordered_map(ops in prop::collection::vec(op(), 0..200)) {
            let mut map = TransferMap::default();
            let mut model: BTreeMap<TransferId, StoredTransfer> = BTreeMap::new();
            // Ids the model took as new, newest last (what an undo removes).
            let mut newest: Vec<TransferId> = Vec::new();
            let mut next = 0u128;
            for (version, op) in ops.into_iter().enumerate() {
                let version = version as u64;
                match op {
                    Op::InsertNew(step) => {
                        // Mostly the next id up; a step of 200 or more goes back below.
                        let id = if step < 200 { next += 1 + u128::from(step % 3); next } else { u128::from(step) };
                        let id = TransferId(id);
                        let fresh = !model.contains_key(&id);
                        prop_assert_eq!(map.insert_new(id, stored(id.0, version)), fresh);
                        if fresh {
                            model.insert(id, stored(id.0, version));
                            newest.push(id);
                        }
                    }
                    Op::Insert(pick) => {
                        let id = model.keys().nth(usize::from(pick) % model.len().max(1)).copied()
                            .unwrap_or(TransferId(u128::from(pick) + 1));
                        if !model.contains_key(&id) {
                            newest.push(id);
                        }
                        map.insert(id, stored(id.0, version));
                        model.insert(id, stored(id.0, version));
                    }
                    Op::RemoveNewest => {
                        let Some(id) = newest.pop() else { continue };
                        prop_assert_eq!(map.remove(&id), model.remove(&id));
                    }
                    Op::Remove(pick) => {
                        let id = TransferId(u128::from(pick));
                        newest.retain(|newer| *newer != id);
                        prop_assert_eq!(map.remove(&id), model.remove(&id));
                    }
                    Op::Clear => {
                        map.clear();
                        model.clear();
                        newest.clear();
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                prop_assert_eq!(map.is_empty(), model.is_empty());
                for probe in 0..=next + 2 {
                    let id = TransferId(probe);
                    prop_assert_eq!(map.get(&id), model.get(&id), "id {}", probe);
                }
                for probe in 200..=255u128 {
                    prop_assert_eq!(map.get(&TransferId(probe)), model.get(&TransferId(probe)));
                }
            }
            let listed: BTreeMap<_, _> = map.iter().map(|(id, stored)| (*id, stored.clone())).collect();
            prop_assert_eq!(&listed, &model);
            prop_assert_eq!(map.iter().count(), model.len());
            let rebuilt: TransferMap = model.clone().into_iter().collect();
            prop_assert_eq!(&rebuilt, &map);
            let config = bincode::config::standard();
            let bytes = bincode::serde::encode_to_vec(&map, config).expect("encode");
            let (decoded, _): (TransferMap, usize) = bincode::serde::decode_from_slice(&bytes, config).expect("decode");
            prop_assert_eq!(&decoded, &map);
            let as_hash_map: Hashed = bincode::serde::decode_from_slice(&bytes, config).expect("decode as a hash map").0;
            prop_assert_eq!(as_hash_map.len(), model.len());
            let hashed_bytes = bincode::serde::encode_to_vec(&as_hash_map, config).expect("encode");
            let (from_hashed, _): (TransferMap, usize) =
                bincode::serde::decode_from_slice(&hashed_bytes, config).expect("decode");
            prop_assert_eq!(&from_hashed, &map);
        }
    }

    /// A serialized map that names an id twice is refused, not merged.
    #[test]
    fn a_map_naming_an_id_twice_is_refused() {
        let config = bincode::config::standard();
        let twice = vec![(TransferId(3), stored(3, 0)), (TransferId(3), stored(3, 1))];
        let bytes = bincode::serde::encode_to_vec(&twice, config).expect("encode");
        let decoded = bincode::serde::decode_from_slice::<TransferMap, _>(&bytes, config);
        assert!(decoded.is_err(), "{decoded:?}");
    }
}
