//! Signed chain heads. At a set interval `ledgerd` signs, with an Ed25519 key kept
//! apart from the data directory, the head (stream, revision, chain hash) of every
//! stream that changed since its last signature, and appends them as one
//! `ChainHeadsSigned` event to the stream `chain-heads` (`heads.proto` gives the
//! canonical bytes signed). An auditor saves them as they appear; `ledgerctl audit
//! verify --heads FILE` later checks the log against the saved heads, so a rewrite of
//! history from some point on, even with every later hash recomputed, is caught at the
//! first signed head after it.

use std::collections::BTreeMap;
use std::path::Path;

use ledger_proto::ledger::events::v1 as events;
use prost::Message;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::store::{Direction, EventData, EventStore, EventStoreExt, ExpectedRevision, Position, StoreError};

/// The stream the signed heads are appended to (its own events are not signed).
pub const HEADS_STREAM: &str = "chain-heads";
/// The event type of one signature.
pub const HEADS_EVENT_TYPE: &str = "ChainHeadsSigned";
/// Most stream heads in one signed event (each at most about 250 bytes, so an event
/// stays well under the store's 1 MiB payload limit); more changed streams are signed
/// in several events.
pub const HEADS_PER_EVENT_MAX: usize = 2_000;
/// Events read from the log per page while collecting heads.
const READ_PAGE_EVENTS: usize = 4_096;
const DOMAIN: &[u8] = b"ledger-chain-heads-v1";

#[derive(Debug, thiserror::Error)]
pub enum HeadsError {
    #[error("signing key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signed heads at revision {revision} of {HEADS_STREAM}: {reason}")]
    Malformed { revision: u64, reason: String },
    #[error("signed heads at revision {revision}: the signature does not verify")]
    BadSignature { revision: u64 },
    #[error("signed heads at revision {revision}: signed by key {found}, expected {expected}")]
    OtherKey { revision: u64, found: String, expected: String },
    #[error("stream {stream} revision {revision}: the log has no such event, but a signed head names it")]
    Missing { stream: String, revision: u64 },
    #[error("stream {stream} revision {revision}: the log's chain hash {found} differs from the signed {signed}")]
    Rewritten { stream: String, revision: u64, found: String, signed: String },
}

/// The signing key of `ledgerd`.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// The key in `path` (PKCS#8), generated there first if the file does not exist
    /// (owner-only permissions, synced).
    pub fn load_or_generate(path: &Path) -> Result<SigningKey, HeadsError> {
        let error = |reason: String| HeadsError::Key { path: path.display().to_string(), reason };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| error("no randomness to generate a key".into()))?;
                write_private(path, document.as_ref()).map_err(|e| error(e.to_string()))?;
                tracing::info!(path = %path.display(), "generated the chain heads signing key");
                document.as_ref().to_vec()
            }
            Err(e) => return Err(error(e.to_string())),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| error(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        Ok(SigningKey { pair })
    }

    /// The public key, 64 hex digits: what an auditor pins.
    pub fn public_hex(&self) -> String {
        hex(self.pair.public_key().as_ref())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes an Ed25519 signature covers (see `heads.proto`). `heads` in stream order.
pub fn canonical(covers_position: u64, signed_at_ns: u64, heads: &[events::SignedHead]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + 20 + heads.len() * 64);
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&covers_position.to_le_bytes());
    out.extend_from_slice(&signed_at_ns.to_le_bytes());
    out.extend_from_slice(&(heads.len() as u32).to_le_bytes());
    for head in heads {
        // Stream names are at most 200 bytes (`STREAM_NAME_BYTES_MAX`).
        out.push(head.stream.len() as u8);
        out.extend_from_slice(head.stream.as_bytes());
        out.extend_from_slice(&head.revision.to_le_bytes());
        out.extend_from_slice(&head.hash);
    }
    out
}

/// Where the last signature left off: the position its heads cover (0: none yet).
pub fn signed_up_to(store: &dyn EventStore) -> Result<Position, HeadsError> {
    let Some(head) = store.stream_head(HEADS_STREAM)? else { return Ok(0) };
    let last = store.read_stream(HEADS_STREAM, head.revision, Direction::Forwards, 1)?;
    let record = last.first().ok_or(HeadsError::Malformed { revision: head.revision, reason: "unreadable".into() })?;
    Ok(decode(head.revision, &record.payload)?.covers_position)
}

/// Signs the heads of the streams changed in the log after `from` (at most
/// `HEADS_PER_EVENT_MAX` streams per event; several events if more) and appends them
/// to `chain-heads`. Returns the position covered next time. Nothing changed, nothing
/// appended.
pub fn sign_changes(
    store: &dyn EventStore,
    key: &SigningKey,
    from: Position,
    now_ns: u64,
) -> Result<Position, HeadsError> {
    let end = *store.watch_head().borrow();
    let mut position = from;
    while position < end {
        let mut heads: BTreeMap<String, (u64, [u8; 32])> = BTreeMap::new();
        let mut covered = position;
        'collect: while covered < end {
            let page = store.read_all(covered, READ_PAGE_EVENTS.min((end - covered) as usize))?;
            if page.is_empty() {
                break;
            }
            for record in page {
                if record.position >= end {
                    break 'collect;
                }
                if record.stream != HEADS_STREAM {
                    if !heads.contains_key(&record.stream) && heads.len() == HEADS_PER_EVENT_MAX {
                        break 'collect;
                    }
                    heads.insert(record.stream.clone(), (record.revision, record.hash));
                }
                covered = record.position + 1;
            }
        }
        if covered == position {
            break;
        }
        if !heads.is_empty() {
            append_signed(store, key, covered, now_ns, heads)?;
        }
        position = covered;
    }
    Ok(position)
}

fn append_signed(
    store: &dyn EventStore,
    key: &SigningKey,
    covers_position: u64,
    signed_at_ns: u64,
    heads: BTreeMap<String, (u64, [u8; 32])>,
) -> Result<(), HeadsError> {
    let heads: Vec<events::SignedHead> = heads
        .into_iter()
        .map(|(stream, (revision, hash))| events::SignedHead { stream, revision, hash: hash.to_vec() })
        .collect();
    let signature = key.pair.sign(&canonical(covers_position, signed_at_ns, &heads));
    let event = events::ChainHeadsSigned {
        public_key: key.pair.public_key().as_ref().to_vec(),
        signature: signature.as_ref().to_vec(),
        covers_position,
        signed_at_ns,
        heads,
    };
    let expected = match store.stream_head(HEADS_STREAM)? {
        Some(head) => ExpectedRevision::Exact(head.revision),
        None => ExpectedRevision::NoStream,
    };
    let data = EventData { event_type: HEADS_EVENT_TYPE.into(), payload: event.encode_to_vec() };
    store.append_blocking(HEADS_STREAM, expected, vec![data])?;
    Ok(())
}

/// One stored `ChainHeadsSigned`, decoded and its signature checked (under the key it
/// names; `verify_log` compares that key with the one pinned).
pub fn decode(revision: u64, payload: &[u8]) -> Result<events::ChainHeadsSigned, HeadsError> {
    let malformed = |reason: String| HeadsError::Malformed { revision, reason };
    let event = events::ChainHeadsSigned::decode(payload).map_err(|e| malformed(e.to_string()))?;
    if event.public_key.len() != 32 || event.signature.len() != 64 {
        return Err(malformed("a key of 32 bytes and a signature of 64 are expected".into()));
    }
    let ordered = event.heads.windows(2).all(|w| w[0].stream < w[1].stream);
    if !ordered || event.heads.iter().any(|h| h.hash.len() != 32 || h.stream.len() > 255) {
        return Err(malformed("heads must be in stream order with 32-byte hashes".into()));
    }
    let message = canonical(event.covers_position, event.signed_at_ns, &event.heads);
    UnparsedPublicKey::new(&ED25519, &event.public_key)
        .verify(&message, &event.signature)
        .map_err(|_| HeadsError::BadSignature { revision })?;
    Ok(event)
}

/// Decodes saved signed heads (`(revision in chain-heads, payload)`) and checks every
/// signature under `pinned` (hex; `None`: the key of the first signature, which must
/// then sign them all). Returns every signed head, in the order signed, and the key.
pub fn check_signatures(
    saved: &[(u64, Vec<u8>)],
    pinned: Option<&str>,
) -> Result<(Vec<events::SignedHead>, Option<String>), HeadsError> {
    let mut key = pinned.map(str::to_ascii_lowercase);
    let mut heads = Vec::new();
    for (revision, payload) in saved {
        let event = decode(*revision, payload)?;
        let found = hex(&event.public_key);
        match &key {
            Some(expected) if *expected != found => {
                return Err(HeadsError::OtherKey { revision: *revision, found, expected: expected.clone() })
            }
            Some(_) => {}
            None => key = Some(found),
        }
        heads.extend(event.heads);
    }
    Ok((heads, key))
}

/// Compares signed heads with the log's chain hashes, as `lookup(stream, revision)`
/// finds them; the first head that differs (the first signed after a rewrite) fails.
pub fn compare(
    heads: &[events::SignedHead],
    mut lookup: impl FnMut(&str, u64) -> Result<Option<[u8; 32]>, HeadsError>,
) -> Result<usize, HeadsError> {
    for head in heads {
        let found = lookup(&head.stream, head.revision)?
            .ok_or_else(|| HeadsError::Missing { stream: head.stream.clone(), revision: head.revision })?;
        if found.as_slice() != head.hash.as_slice() {
            return Err(HeadsError::Rewritten {
                stream: head.stream.clone(),
                revision: head.revision,
                found: hex(&found),
                signed: hex(&head.hash),
            });
        }
    }
    Ok(heads.len())
}

/// Saved signed heads checked against the log in `store`. Returns the number of heads
/// checked and the key they verify under.
pub fn verify_log(
    store: &dyn EventStore,
    saved: &[(u64, Vec<u8>)],
    pinned: Option<&str>,
) -> Result<(usize, Option<String>), HeadsError> {
    let (heads, key) = check_signatures(saved, pinned)?;
    let checked = compare(&heads, |stream, revision| {
        let records = store.read_stream(stream, revision, Direction::Forwards, 1)?;
        Ok(records.into_iter().find(|r| r.revision == revision).map(|r| r.hash))
    })?;
    Ok((checked, key))
}

/// Saved signed heads checked against the segment files in `log_dir`, read only (one
/// scan; memory in proportion to the heads saved, not to the log).
pub fn verify_files(
    log_dir: &Path,
    saved: &[(u64, Vec<u8>)],
    pinned: Option<&str>,
) -> Result<(usize, Option<String>), HeadsError> {
    let (heads, key) = check_signatures(saved, pinned)?;
    type Found = std::collections::HashMap<u64, Option<[u8; 32]>>;
    let mut wanted: std::collections::HashMap<String, Found> = std::collections::HashMap::new();
    for head in &heads {
        wanted.entry(head.stream.clone()).or_default().insert(head.revision, None);
    }
    crate::store::format::scan(log_dir, |record, _| {
        if let Some(slot) = wanted.get_mut(record.stream.as_str()).and_then(|s| s.get_mut(&record.revision)) {
            *slot = Some(record.hash);
        }
    })?;
    let checked =
        compare(&heads, |stream, revision| Ok(wanted.get(stream).and_then(|s| s.get(&revision)).copied().flatten()))?;
    Ok((checked, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};

    fn append(store: &EmbeddedStore, stream: &str, payload: &[u8]) {
        let expected = match store.stream_head(stream).expect("head") {
            Some(head) => ExpectedRevision::Exact(head.revision),
            None => ExpectedRevision::NoStream,
        };
        let data = EventData { event_type: "Test".into(), payload: payload.to_vec() };
        store.append_blocking(stream, expected, vec![data]).expect("append");
    }

    fn saved(store: &EmbeddedStore) -> Vec<(u64, Vec<u8>)> {
        store
            .read_stream(HEADS_STREAM, 0, Direction::Forwards, 1_000)
            .expect("read")
            .into_iter()
            .map(|r| (r.revision, r.payload))
            .collect()
    }

    #[test]
    fn signs_changed_heads_and_verifies_them_against_the_log() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, _) = EmbeddedStore::open(dir.path().join("log"), EmbeddedOptions::default()).expect("open");
        let key = SigningKey::load_or_generate(&dir.path().join("signing.key")).expect("key");
        for i in 0..5u8 {
            append(&store, "a", &[i]);
            append(&store, "b", &[i, i]);
        }
        let covered = sign_changes(&store, &key, 0, 7).expect("sign");
        assert_eq!(covered, 10);
        assert_eq!(signed_up_to(&store).expect("up to"), 10);
        // Nothing new: nothing signed.
        assert_eq!(sign_changes(&store, &key, covered, 8).expect("sign"), 11, "the heads event itself is passed");
        assert_eq!(saved(&store).len(), 1);
        append(&store, "a", b"later");
        sign_changes(&store, &key, 11, 9).expect("sign");
        let saved = saved(&store);
        assert_eq!(saved.len(), 2);
        let second = decode(1, &saved[1].1).expect("decode");
        assert_eq!(second.heads.iter().map(|h| (h.stream.as_str(), h.revision)).collect::<Vec<_>>(), [("a", 5)]);
        let (checked, used) = verify_log(&store, &saved, Some(&key.public_hex())).expect("verifies");
        assert_eq!((checked, used), (3, Some(key.public_hex())));
        // Another key pinned: refused. A flipped signature bit: refused.
        let other = SigningKey::load_or_generate(&dir.path().join("other.key")).expect("key");
        assert!(matches!(verify_log(&store, &saved, Some(&other.public_hex())), Err(HeadsError::OtherKey { .. })));
        let mut event = decode(0, &saved[0].1).expect("decode");
        event.signature[0] ^= 1;
        assert!(matches!(decode(0, &event.encode_to_vec()), Err(HeadsError::BadSignature { revision: 0 })));
        // The same key file loads the same key.
        let again = SigningKey::load_or_generate(&dir.path().join("signing.key")).expect("key");
        assert_eq!(again.public_hex(), key.public_hex());
    }

    #[test]
    fn many_streams_are_signed_in_several_bounded_events() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, _) = EmbeddedStore::open(dir.path().join("log"), EmbeddedOptions::default()).expect("open");
        let key = SigningKey::load_or_generate(&dir.path().join("signing.key")).expect("key");
        for i in 0..(HEADS_PER_EVENT_MAX + 10) {
            append(&store, &format!("s-{i}"), b"x");
        }
        sign_changes(&store, &key, 0, 1).expect("sign");
        let saved = saved(&store);
        assert_eq!(saved.len(), 2);
        let sizes: Vec<usize> = saved.iter().map(|(r, p)| decode(*r, p).expect("decode").heads.len()).collect();
        assert_eq!(sizes, [HEADS_PER_EVENT_MAX, 10]);
        assert_eq!(verify_log(&store, &saved, None).expect("verify").0, HEADS_PER_EVENT_MAX + 10);
    }
}
