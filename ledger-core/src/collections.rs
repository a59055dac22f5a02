//! Containers for the writer's state that grow without pauses.
//!
//! A `Vec` that doubles copies everything it holds, and a hash map that grows rehashes
//! every entry, while the single writer waits: at tens of millions of transfers that is
//! a stall of hundreds of milliseconds on the write path. [`ChunkedVec`] never moves
//! what it holds, and [`ShardedMap`] splits one map into [`SHARDS`] maps so that a
//! growth step rehashes a 1/`SHARDS` share of the entries.
//!
//! Both share their parts with their clones (each chunk and each shard is behind an
//! `Arc`, copied on its first write): cloning the whole state for a snapshot costs a
//! few thousand reference counts, and the writer pays for the copy a chunk or a shard
//! at a time afterwards, while the snapshot is serialized on another thread.
//!
//! Memory the writer grows into is made ready on another thread: the first write to a
//! page costs a fault and the kernel's zeroing of it (on this project's 2-core virtual
//! machines a third of the writer's time under batch load). Both containers take
//! *room* (an empty chunk, a larger table for a shard) that was written once elsewhere:
//! `ChunkedVec::give_spare` and `ShardedMap::give_room`, made by [`touched_chunk`] and
//! [`touched_table`]. Without room they allocate as before; room never changes what a
//! container holds, and clones and snapshots never carry it.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const CHUNK_BITS: u32 = 16;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;

/// An append-only vector (with `pop` for undo) stored in fixed chunks of
/// `CHUNK_LEN` elements; all chunks but the last are full.
#[derive(Debug)]
pub struct ChunkedVec<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
    /// An empty chunk of `CHUNK_LEN` capacity, already written once, for the next push
    /// that needs a new chunk.
    spare: Option<Vec<T>>,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec { chunks: Vec::new(), len: 0, spare: None }
    }
}

impl<T> Clone for ChunkedVec<T> {
    fn clone(&self) -> Self {
        ChunkedVec { chunks: self.chunks.clone(), len: self.len, spare: None }
    }
}

impl<T: PartialEq> PartialEq for ChunkedVec<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.chunks == other.chunks
    }
}

impl<T: Eq> Eq for ChunkedVec<T> {}

/// An empty vector of `CHUNK_LEN` capacity whose memory has been written once (filled
/// with clones of `filler`, then cleared), for [`ChunkedVec::give_spare`].
pub fn touched_chunk<T: Clone>(filler: T) -> Vec<T> {
    let mut chunk = Vec::with_capacity(CHUNK_LEN);
    chunk.resize(CHUNK_LEN, filler);
    chunk.clear();
    chunk
}

impl<T> ChunkedVec<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index >> CHUNK_BITS)?.get(index & (CHUNK_LEN - 1))
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }
}

impl<T: Clone> ChunkedVec<T> {
    pub fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK_LEN => Arc::make_mut(chunk).push(value),
            _ => {
                let mut chunk = self.spare.take().unwrap_or_else(|| Vec::with_capacity(CHUNK_LEN));
                chunk.push(value);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    pub fn pop(&mut self) -> Option<T> {
        let chunk = Arc::make_mut(self.chunks.last_mut()?);
        let value = chunk.pop();
        if chunk.is_empty() {
            let emptied = self.chunks.pop().and_then(|chunk| Arc::try_unwrap(chunk).ok());
            if self.spare.is_none() {
                self.spare = emptied;
            }
        }
        self.len -= usize::from(value.is_some());
        value
    }

    /// Whether a spare chunk would be taken (none is held).
    pub fn wants_spare(&self) -> bool {
        self.spare.is_none()
    }

    /// Keeps `chunk` for the next new chunk, if it is empty and large enough.
    pub fn give_spare(&mut self, chunk: Vec<T>) {
        if chunk.is_empty() && chunk.capacity() >= CHUNK_LEN && self.spare.is_none() {
            self.spare = Some(chunk);
        }
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        let chunk = self.chunks.get_mut(index >> CHUNK_BITS)?;
        if index & (CHUNK_LEN - 1) >= chunk.len() {
            return None;
        }
        Arc::make_mut(chunk).get_mut(index & (CHUNK_LEN - 1))
    }
}

impl<T: Serialize> Serialize for ChunkedVec<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for value in self.iter() {
            seq.serialize_element(value)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de> + Clone> Deserialize<'de> for ChunkedVec<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Clone> Visitor<'de> for SeqVisitor<T> {
            type Value = ChunkedVec<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = ChunkedVec::default();
                while let Some(value) = seq.next_element()? {
                    out.push(value);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(SeqVisitor(PhantomData))
    }
}

/// Number of maps a [`ShardedMap`] is split into.
pub const SHARDS: usize = 64;

/// Shards smaller than this grow in place: their tables are too small to matter.
const ROOM_CAPACITY_MIN: usize = 1_024;

/// One shard's table.
pub type Shard<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Keys that pick their shard from their own bits. The choice only spreads growth
/// pauses; each shard still hashes with a per-process random seed.
pub trait ShardKey: Hash + Eq {
    fn shard(&self) -> usize;
}

impl ShardKey for u128 {
    fn shard(&self) -> usize {
        let folded = (*self as u64) ^ ((*self >> 64) as u64);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS
    }
}

/// A hash map split into [`SHARDS`] maps by [`ShardKey::shard`]. Keys are caller-chosen
/// ids: foldhash is several times faster than SipHash on 16-byte keys and still seeded
/// per process.
#[derive(Debug)]
pub struct ShardedMap<K, V> {
    shards: Vec<Arc<Shard<K, V>>>,
    len: usize,
    /// Per shard: an empty, larger table written once, which the shard moves into
    /// instead of growing in place.
    room: Vec<Option<Shard<K, V>>>,
}

impl<K: ShardKey, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap {
            shards: (0..SHARDS).map(|_| Arc::new(Shard::default())).collect(),
            len: 0,
            room: (0..SHARDS).map(|_| None).collect(),
        }
    }
}

impl<K, V> Clone for ShardedMap<K, V> {
    fn clone(&self) -> Self {
        ShardedMap { shards: self.shards.clone(), len: self.len, room: (0..SHARDS).map(|_| None).collect() }
    }
}

/// An empty table with room for at least `capacity` entries whose memory has been
/// written once (filled through `entry(i)` for distinct `i`, then cleared), for
/// [`ShardedMap::give_room`].
pub fn touched_table<K: ShardKey, V>(capacity: usize, entry: impl Fn(usize) -> (K, V)) -> Shard<K, V> {
    let mut table = Shard::with_capacity_and_hasher(capacity, Default::default());
    let room = table.capacity();
    table.extend((0..room).map(entry));
    table.clear();
    table
}

impl<K: ShardKey, V: PartialEq> PartialEq for ShardedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.shards.iter().zip(&other.shards).all(|(a, b)| a == b)
    }
}

impl<K: ShardKey, V: Eq> Eq for ShardedMap<K, V> {}

impl<K: ShardKey, V> ShardedMap<K, V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.shards[key.shard()].get(key)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.shards[key.shard()].contains_key(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|shard| shard.values())
    }
}

impl<K: ShardKey + Clone, V: Clone> ShardedMap<K, V> {
    /// Copies the key's shard first if a clone still shares it (as `insert` and
    /// `remove` do); the writer only asks for keys it knows are present.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        Arc::make_mut(&mut self.shards[key.shard()]).get_mut(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let index = key.shard();
        let shard = Arc::make_mut(&mut self.shards[index]);
        if shard.len() == shard.capacity() {
            // Full: the next new key would grow the table in place; move into the
            // prepared room instead, if there is enough.
            if let Some(mut room) = self.room[index].take() {
                if room.capacity() > shard.len() {
                    room.extend(shard.drain());
                    *shard = room;
                }
            }
        }
        let previous = shard.insert(key, value);
        self.len += usize::from(previous.is_none());
        previous
    }

    /// Shards that will soon grow (three quarters full) and have no room prepared,
    /// with the capacity to prepare: twice their present one.
    pub fn shards_wanting_room(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.shards.iter().enumerate().filter_map(|(index, shard)| {
            let soon_full = shard.len() * 4 >= shard.capacity() * 3 && shard.capacity() >= ROOM_CAPACITY_MIN;
            let prepared = self.room[index].as_ref().is_some_and(|room| room.capacity() > shard.capacity());
            (soon_full && !prepared).then_some((index, shard.capacity() * 2))
        })
    }

    /// Keeps `table` for shard `index` to move into when it is full, if it is empty
    /// and larger than the shard's table.
    pub fn give_room(&mut self, index: usize, table: Shard<K, V>) {
        let Some(shard) = self.shards.get(index) else { return };
        if table.is_empty() && table.capacity() > shard.capacity() {
            self.room[index] = Some(table);
        }
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let removed = Arc::make_mut(&mut self.shards[key.shard()]).remove(key);
        self.len -= usize::from(removed.is_some());
        removed
    }
}

impl<K: ShardKey + Serialize, V: Serialize> Serialize for ShardedMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.len))?;
        for (key, value) in self.iter() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de, K: ShardKey + Clone + Deserialize<'de>, V: Clone + Deserialize<'de>> Deserialize<'de> for ShardedMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K: ShardKey + Clone + Deserialize<'de>, V: Clone + Deserialize<'de>> Visitor<'de> for EntriesVisitor<K, V> {
            type Value = ShardedMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let mut out = ShardedMap::default();
                while let Some((key, value)) = entries.next_entry()? {
                    if out.insert(key, value).is_some() {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Both containers behave exactly like their std counterparts, including
        /// across a snapshot round trip.
        #[test]
        fn behave_like_std(ops in proptest::collection::vec((0u8..4, 0u128..300), 0..3000)) {
            let (mut chunked, mut vec) = (ChunkedVec::default(), Vec::new());
            let (mut sharded, mut map) = (ShardedMap::default(), std::collections::HashMap::new());
            for (op, key) in ops {
                match op {
                    0 => { chunked.push(key); vec.push(key); }
                    1 => prop_assert_eq!(chunked.pop(), vec.pop()),
                    2 => prop_assert_eq!(sharded.insert(key, key * 2), map.insert(key, key * 2)),
                    _ => prop_assert_eq!(sharded.remove(&key), map.remove(&key)),
                }
                prop_assert_eq!(chunked.len(), vec.len());
                prop_assert_eq!(sharded.len(), map.len());
            }
            prop_assert!(chunked.iter().eq(vec.iter()));
            for (index, value) in vec.iter().enumerate() {
                prop_assert_eq!(chunked.get(index), Some(value));
            }
            prop_assert_eq!(chunked.get(vec.len()), None);
            for key in 0..300u128 {
                prop_assert_eq!(sharded.get(&key), map.get(&key));
            }
            let config = bincode::config::standard();
            let bytes = bincode::serde::encode_to_vec((&chunked, &sharded), config).expect("encodes");
            let (back, _): ((ChunkedVec<u128>, ShardedMap<u128, u128>), usize) =
                bincode::serde::decode_from_slice(&bytes, config).expect("decodes");
            prop_assert_eq!(back, (chunked, sharded));
        }
    }

    #[test]
    fn clones_share_until_written_and_never_see_later_writes() {
        let mut chunked = ChunkedVec::default();
        let mut sharded = ShardedMap::default();
        for value in 0..(CHUNK_LEN as u128 + 10) {
            chunked.push(value);
            sharded.insert(value, value);
        }
        let snapshot = (chunked.clone(), sharded.clone());
        assert!(Arc::ptr_eq(&chunked.chunks[0], &snapshot.0.chunks[0]), "a clone shares its chunks");
        *chunked.get_mut(3).expect("present") = 999;
        chunked.push(7);
        sharded.insert(3, 999);
        sharded.remove(&4);
        assert_eq!(snapshot.0.get(3), Some(&3));
        assert_eq!(snapshot.0.len(), CHUNK_LEN + 10);
        assert_eq!(snapshot.1.get(&3), Some(&3));
        assert_eq!(snapshot.1.get(&4), Some(&4));
        assert_eq!(chunked.get(3), Some(&999));
        assert!(!Arc::ptr_eq(&chunked.chunks[0], &snapshot.0.chunks[0]), "written chunks are copied");
        let untouched = (0..SHARDS).find(|s| *s != 3u128.shard() && *s != 4u128.shard()).expect("another shard");
        assert!(Arc::ptr_eq(&sharded.shards[untouched], &snapshot.1.shards[untouched]), "unwritten shards stay shared");
    }

    #[test]
    fn prepared_room_is_taken_and_changes_nothing_held() {
        let mut chunked = ChunkedVec::default();
        assert!(chunked.wants_spare());
        let spare = touched_chunk(0u128);
        let spare_at = spare.as_ptr();
        chunked.give_spare(spare);
        assert!(!chunked.wants_spare());
        chunked.push(5);
        assert!(chunked.wants_spare(), "the spare was taken");
        assert_eq!(chunked.chunks[0].as_ptr(), spare_at, "the new chunk is the prepared one");
        assert!(chunked.clone().wants_spare(), "a clone carries no spare");

        let mut sharded: ShardedMap<u128, u128> = ShardedMap::default();
        let keys: Vec<u128> = (0u128..).filter(|key| key.shard() == 0).take(5_000).collect();
        let mut inserted = 0;
        while sharded.shards_wanting_room().next().is_none() {
            sharded.insert(keys[inserted], keys[inserted]);
            inserted += 1;
        }
        let (shard, capacity) = sharded.shards_wanting_room().next().expect("shard 0 wants room");
        assert_eq!(shard, 0);
        assert!(capacity >= ROOM_CAPACITY_MIN);
        // Twice what was asked, to tell the room from growth in place.
        let room = touched_table(capacity * 2, |i| (i as u128, 0u128));
        let room_capacity = room.capacity();
        sharded.give_room(0, room);
        assert!(sharded.shards_wanting_room().next().is_none());
        assert!(sharded.clone().shards_wanting_room().next().is_some(), "a clone carries no room");
        for key in &keys[inserted..] {
            sharded.insert(*key, *key);
        }
        assert_eq!(sharded.shards[0].capacity(), room_capacity, "the shard moved into its room");
        assert_eq!(sharded.len(), keys.len());
        assert!(keys.iter().all(|key| sharded.get(key) == Some(key)));
    }

    #[test]
    fn chunk_boundaries() {
        let mut chunked = ChunkedVec::default();
        for value in 0..(2 * CHUNK_LEN + 3) {
            chunked.push(value);
        }
        assert_eq!(chunked.chunks.len(), 3);
        assert_eq!(chunked.get(CHUNK_LEN), Some(&CHUNK_LEN));
        for _ in 0..4 {
            chunked.pop();
        }
        assert_eq!(chunked.chunks.len(), 2, "an emptied last chunk is released");
        assert_eq!(chunked.len(), 2 * CHUNK_LEN - 1);
    }
}
