//! The hash chain of a stream: `hash(n) = blake3(hash(n-1) || revision(n) as u64
//! little-endian || event bytes(n))`, with `hash(-1) = GENESIS_HASH`. Breaking,
//! reordering or dropping an event changes every later hash, so anyone who replays a
//! stream and knows its head hash can tell.

/// A 32-byte blake3 digest.
pub type Hash = [u8; 32];

/// What the first event of every stream chains to: 32 zero bytes.
pub const GENESIS_HASH: Hash = [0u8; 32];

/// The chain hash of the event at `revision` whose predecessor hashed to `previous`.
pub fn chain_hash(previous: &Hash, revision: u64, event_bytes: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(previous);
    hasher.update(&revision.to_le_bytes());
    hasher.update(event_bytes);
    *hasher.finalize().as_bytes()
}

/// [`chain_hash`] over one contiguous input built in `scratch`: one call of the hash
/// over a short input is cheaper than three incremental updates.
pub fn chain_hash_with(scratch: &mut Vec<u8>, previous: &Hash, revision: u64, event_bytes: &[u8]) -> Hash {
    scratch.clear();
    scratch.extend_from_slice(previous);
    scratch.extend_from_slice(&revision.to_le_bytes());
    scratch.extend_from_slice(event_bytes);
    *blake3::hash(scratch).as_bytes()
}

/// Why an event does not continue its stream's chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// Revisions of a stream are dense from 0: a gap, a repeat or a reordering.
    #[error("revision {found} where {due} was due")]
    Revision { found: u64, due: u64 },
    /// The stored hash is not `chain_hash` of the previous hash, revision and bytes.
    #[error("hash does not chain")]
    Hash,
}

/// The one rule every verifier of the log applies (the store's recovery scan, the
/// auditor and the read models' continuous verifier): the event at `revision` with
/// `event_bytes` and `stored_hash` continues a stream whose last event was
/// `last` = (revision, hash), or starts a new stream when `last` is `None`.
pub fn check_link(
    last: Option<(u64, Hash)>,
    revision: u64,
    event_bytes: &[u8],
    stored_hash: &Hash,
) -> Result<(), ChainBreak> {
    let (due, previous) = match last {
        Some((last_revision, last_hash)) => (last_revision + 1, last_hash),
        None => (0, GENESIS_HASH),
    };
    if revision != due {
        return Err(ChainBreak::Revision { found: revision, due });
    }
    if chain_hash(&previous, revision, event_bytes) != *stored_hash {
        return Err(ChainBreak::Hash);
    }
    Ok(())
}

/// Lower-case hex, for printing hashes, keys and random ids.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_every_input() {
        let base = chain_hash(&GENESIS_HASH, 0, b"event");
        assert_ne!(base, chain_hash(&GENESIS_HASH, 1, b"event"));
        assert_ne!(base, chain_hash(&GENESIS_HASH, 0, b"evenT"));
        assert_ne!(base, chain_hash(&[1u8; 32], 0, b"event"));
        assert_eq!(base, chain_hash(&GENESIS_HASH, 0, b"event"));
        assert_eq!(base, chain_hash_with(&mut Vec::new(), &GENESIS_HASH, 0, b"event"));
    }

    #[test]
    fn check_link_accepts_the_next_event_only() {
        let first = chain_hash(&GENESIS_HASH, 0, b"a");
        let second = chain_hash(&first, 1, b"b");
        assert_eq!(check_link(None, 0, b"a", &first), Ok(()));
        assert_eq!(check_link(Some((0, first)), 1, b"b", &second), Ok(()));
        assert_eq!(check_link(Some((0, first)), 2, b"b", &second), Err(ChainBreak::Revision { found: 2, due: 1 }));
        assert_eq!(check_link(None, 1, b"b", &second), Err(ChainBreak::Revision { found: 1, due: 0 }));
        assert_eq!(check_link(Some((0, first)), 1, b"B", &second), Err(ChainBreak::Hash));
        assert_eq!(ChainBreak::Hash.to_string(), "hash does not chain");
    }

    #[test]
    fn matches_the_documented_formula() {
        let mut input = Vec::new();
        input.extend_from_slice(&GENESIS_HASH);
        input.extend_from_slice(&7u64.to_le_bytes());
        input.extend_from_slice(b"payload");
        assert_eq!(chain_hash(&GENESIS_HASH, 7, b"payload"), *blake3::hash(&input).as_bytes());
    }
}
