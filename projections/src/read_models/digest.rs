//! A digest of every table, to compare two read-model databases.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::rows::*;
use super::{ProjectionError, ReadModels};

impl ReadModels {
    /// A blake3 digest of every table's contents in key order: two databases with the
    /// same digest hold the same read models.
    pub fn digest(&self) -> Result<String, ProjectionError> {
        let txn = self.db.begin_read()?;
        let mut hasher = blake3::Hasher::new();
        macro_rules! table {
            ($def:expr, $write:expr) => {{
                let table = txn.open_table($def)?;
                hasher.update(&table.len()?.to_le_bytes());
                for row in table.iter()? {
                    let (key, value) = row?;
                    #[allow(clippy::redundant_closure_call)]
                    ($write)(&mut hasher, key.value(), value.value());
                }
            }};
        }
        table!(META, |h: &mut blake3::Hasher, k: &str, v: u64| {
            h.update(k.as_bytes());
            h.update(&v.to_le_bytes());
        });
        table!(ACCOUNTS, |h: &mut blake3::Hasher, k: u128, v: &[u8]| {
            h.update(&k.to_le_bytes());
            h.update(v);
        });
        table!(MOVEMENTS, |h: &mut blake3::Hasher, k: (u128, u64), v: &[u8]| {
            h.update(&k.0.to_le_bytes());
            h.update(&k.1.to_le_bytes());
            h.update(v);
        });
        table!(PENDINGS, |h: &mut blake3::Hasher, k: u128, v: (u128, u128, u64)| {
            h.update(&k.to_le_bytes());
            h.update(&v.0.to_le_bytes());
            h.update(&v.1.to_le_bytes());
            h.update(&v.2.to_le_bytes());
        });
        table!(BUCKETS, |h: &mut blake3::Hasher, k: (u128, u64), v: &[u8]| {
            h.update(&k.0.to_le_bytes());
            h.update(&k.1.to_le_bytes());
            h.update(v);
        });
        table!(OWNERS, |h: &mut blake3::Hasher, k: (u128, u128), _v: ()| {
            h.update(&k.0.to_le_bytes());
            h.update(&k.1.to_le_bytes());
        });
        table!(CHAIN, |h: &mut blake3::Hasher, k: &str, v: (u64, [u8; 32])| {
            h.update(k.as_bytes());
            h.update(&v.0.to_le_bytes());
            h.update(&v.1);
        });
        table!(ALARMS, |h: &mut blake3::Hasher, k: u64, v: &str| {
            h.update(&k.to_le_bytes());
            h.update(v.as_bytes());
        });
        Ok(hasher.finalize().to_hex().to_string())
    }
}
