//! Sealing personal data: per-user data keys, wrapped under a master key in a key
//! store of fixed slots, and XChaCha20-Poly1305 (random 24-byte nonces) for events.
//!
//! Crypto-shredding: erasing a user overwrites their slot with zeros in place and
//! syncs it. The slot never moves and the file is never compacted, so no copy of the
//! wrapped key is left in the file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use crate::random::RandomError;

/// Bytes of a key (master or data key).
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// A key store slot: user id (16, LE) | nonce (24) | wrapped key (32 + 16 tag) | 8 reserved zero bytes.
pub const SLOT_BYTES: usize = 16 + NONCE_BYTES + KEY_BYTES + TAG_BYTES + 8;
const HEADER: &[u8; 16] = b"LEDGER-KEYS-v1\0\0";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key store {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("key store: {0}")]
    Invalid(String),
    #[error("sealed data does not open: wrong key or altered bytes")]
    Open,
    #[error("the master key must be {KEY_BYTES} bytes as 64 hexadecimal digits")]
    MasterKeyFormat,
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The cipher refused to seal (only a message beyond its length limit does).
    #[error("sealing failed")]
    Seal,
}

/// A secret key; its Debug never shows the bytes, comparing two takes the same time
/// whatever they hold, and its bytes are wiped when it is dropped.
#[derive(Clone)]
pub struct SecretKey(pub [u8; KEY_BYTES]);

impl PartialEq for SecretKey {
    fn eq(&self, other: &SecretKey) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]))
    }
}

impl Eq for SecretKey {}

impl Drop for SecretKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn random() -> Result<SecretKey, RandomError> {
        Ok(SecretKey(crate::random::bytes()?))
    }

    pub fn from_hex(text: &str) -> Result<SecretKey, CryptoError> {
        let text = text.trim();
        if text.len() != KEY_BYTES * 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CryptoError::MasterKeyFormat);
        }
        let mut key = [0u8; KEY_BYTES];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| CryptoError::MasterKeyFormat)?;
        }
        Ok(SecretKey(key))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.0))
    }

    /// nonce ‖ ciphertext of `plain`, bound to `aad`. The nonce is random (XChaCha's
    /// 24 bytes make a repeat negligible); without randomness nothing is sealed.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce: [u8; NONCE_BYTES] = crate::random::bytes()?;
        let sealed = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| CryptoError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_BYTES + TAG_BYTES {
            return Err(CryptoError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        self.cipher().decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad }).map_err(|_| CryptoError::Open)
    }
}

/// The environment variable a master key may be given in (64 hex digits): never a
/// flag, since flags show in process lists.
pub const MASTER_KEY_ENV: &str = "LEDGERD_MASTER_KEY";

/// The master key as configured: [`MASTER_KEY_ENV`], else the key file `file`; `None`
/// when neither is given (then [`master_key_file`] of the data directory). The error
/// names where the bad key came from.
pub fn configured_master_key(file: Option<&Path>) -> Result<Option<SecretKey>, String> {
    if let Ok(hex) = std::env::var(MASTER_KEY_ENV) {
        return SecretKey::from_hex(&hex).map(Some).map_err(|e| format!("{MASTER_KEY_ENV}: {e}"));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("master key file {}: {e}", path.display()))?;
    SecretKey::from_hex(&text).map(Some).map_err(|e| format!("master key file {}: {e}", path.display()))
}

/// The master key: 64 hex digits from configuration, or, on a data directory with
/// none, `<data-dir>/master.key` generated on first start (mode 0600).
pub fn master_key_file(data_dir: &Path) -> Result<SecretKey, CryptoError> {
    let path = data_dir.join("master.key");
    let io = |source| CryptoError::Io { path: path.display().to_string(), source };
    if let Ok(text) = std::fs::read_to_string(&path) {
        return SecretKey::from_hex(&text);
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let key = SecretKey::random()?;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(io)?;
    file.write_all(ledger_core::chain::to_hex(&key.0).as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    tracing::warn!(path = %path.display(), "generated a master key next to the data; in production give one from a secret store");
    Ok(key)
}

/// Wrapped per-user data keys, one fixed slot each.
pub struct KeyStore {
    master: SecretKey,
    file: File,
    path: String,
    /// Slots in the file (used and erased).
    slots: Mutex<u64>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn slot_aad(user_id: u128) -> Vec<u8> {
    let mut aad = b"ledger.keys.v1".to_vec();
    aad.extend_from_slice(&user_id.to_le_bytes());
    aad
}

impl KeyStore {
    /// Opens (or creates) `path`.
    pub fn open(path: &Path, master: SecretKey) -> Result<KeyStore, CryptoError> {
        let shown = path.display().to_string();
        let io = |source| CryptoError::Io { path: shown.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            file.write_all_at(HEADER, 0).map_err(io)?;
            file.sync_all().map_err(io)?;
            if let Some(dir) = path.parent() {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        } else {
            let mut header = [0u8; 16];
            file.read_exact_at(&mut header, 0).map_err(io)?;
            if &header != HEADER {
                return Err(CryptoError::Invalid(format!("{shown} is not a key store")));
            }
        }
        let len = file.metadata().map_err(io)?.len().max(HEADER.len() as u64);
        // A torn last slot (crash while adding it) belongs to no registered user.
        let slots = (len - HEADER.len() as u64) / SLOT_BYTES as u64;
        Ok(KeyStore { master, file, path: shown, slots: Mutex::new(slots) })
    }

    fn io(&self, source: std::io::Error) -> CryptoError {
        CryptoError::Io { path: self.path.clone(), source }
    }

    fn offset(slot: u64) -> u64 {
        HEADER.len() as u64 + slot * SLOT_BYTES as u64
    }

    /// A key for `context` (a fixed text naming its one use) derived from the master
    /// key: it changes when the master key does, and tells nothing of it.
    pub fn derive_key(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.master.0)
    }

    /// Stores a new data key for `user_id` durably; returns its slot.
    pub fn add(&self, user_id: u128, key: &SecretKey) -> Result<u64, CryptoError> {
        self.add_many(&[(user_id, key.clone())])
    }

    /// Stores new data keys durably with one write and one sync; returns the first's
    /// slot (the others follow it in order).
    pub fn add_many(&self, keys: &[(u128, SecretKey)]) -> Result<u64, CryptoError> {
        let mut bytes = vec![0u8; keys.len() * SLOT_BYTES];
        for ((user_id, key), slot_bytes) in keys.iter().zip(bytes.chunks_exact_mut(SLOT_BYTES)) {
            let wrapped = self.master.seal(&key.0, &slot_aad(*user_id))?;
            slot_bytes[..16].copy_from_slice(&user_id.to_le_bytes());
            slot_bytes[16..16 + wrapped.len()].copy_from_slice(&wrapped);
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let first = *slots;
        self.file.write_all_at(&bytes, Self::offset(first)).map_err(|e| self.io(e))?;
        self.file.sync_data().map_err(|e| self.io(e))?;
        *slots += keys.len() as u64;
        Ok(first)
    }

    /// The data key in `slot`, if it is `user_id`'s and not erased.
    pub fn get(&self, slot: u64, user_id: u128) -> Result<Option<SecretKey>, CryptoError> {
        if slot >= *self.slots.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(None);
        }
        let mut bytes = [0u8; SLOT_BYTES];
        self.file.read_exact_at(&mut bytes, Self::offset(slot)).map_err(|e| self.io(e))?;
        if bytes[..16] != user_id.to_le_bytes() {
            return Ok(None);
        }
        let plain = self.master.open(&bytes[16..16 + NONCE_BYTES + KEY_BYTES + TAG_BYTES], &slot_aad(user_id))?;
        let key: [u8; KEY_BYTES] =
            plain.try_into().map_err(|_| CryptoError::Invalid(format!("slot {slot}: bad key length")))?;
        Ok(Some(SecretKey(key)))
    }

    /// Destroys the key in `slot`: zeros written in place and synced.
    pub fn erase(&self, slot: u64) -> Result<(), CryptoError> {
        let _slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        self.file.write_all_at(&[0u8; SLOT_BYTES], Self::offset(slot)).map_err(|e| self.io(e))?;
        self.file.sync_data().map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_key_and_aad() {
        let key = SecretKey::random().expect("key");
        let sealed = key.seal(b"Ada Lovelace", b"user-1").expect("seal");
        assert!(!sealed.windows(12).any(|w| w == b"Ada Lovelace"));
        assert_eq!(key.open(&sealed, b"user-1").expect("open"), b"Ada Lovelace");
        assert!(matches!(key.open(&sealed, b"user-2"), Err(CryptoError::Open)));
        let other = SecretKey::random().expect("key");
        assert!(matches!(other.open(&sealed, b"user-1"), Err(CryptoError::Open)));
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(matches!(key.open(&flipped, b"user-1"), Err(CryptoError::Open)));
        assert!(matches!(key.open(&sealed[..10], b"user-1"), Err(CryptoError::Open)));
    }

    #[test]
    fn key_store_keeps_wrapped_keys_and_erases_them_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys").join("data-keys.bin");
        let master = SecretKey::random().expect("master");
        let (a, b) = (SecretKey::random().expect("a"), SecretKey::random().expect("b"));
        let store = KeyStore::open(&path, master.clone()).expect("open");
        let slot_a = store.add(7, &a).expect("add a");
        let slot_b = store.add(8, &b).expect("add b");
        assert_eq!((slot_a, slot_b), (0, 1));
        drop(store);
        let store = KeyStore::open(&path, master.clone()).expect("reopen");
        assert_eq!(store.get(slot_a, 7).expect("get"), Some(a.clone()));
        assert_eq!(store.get(slot_b, 8).expect("get"), Some(b.clone()));
        assert_eq!(store.get(slot_a, 8).expect("wrong user"), None);
        store.erase(slot_a).expect("erase");
        assert_eq!(store.get(slot_a, 7).expect("erased"), None);
        let bytes = std::fs::read(&path).expect("read");
        assert!(!bytes.windows(KEY_BYTES).any(|w| w == a.0 || w == b.0), "keys are never in clear");
        let zeros = &bytes[HEADER.len()..HEADER.len() + SLOT_BYTES];
        assert!(zeros.iter().all(|&z| z == 0), "the erased slot is zeros");
        assert!(KeyStore::open(&path, SecretKey::random().expect("k")).expect("open").get(slot_b, 8).is_err());
        assert_eq!(SecretKey::from_hex(&"ab".repeat(32)).expect("hex").0, [0xab; 32]);
        assert!(SecretKey::from_hex("abc").is_err());
        assert_eq!(format!("{a:?}"), "SecretKey(..)");
    }
}
