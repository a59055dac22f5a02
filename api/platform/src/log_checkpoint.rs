//! The checkpoint of an index on disk that follows the log (the users' index, the
//! payments' index): the next log position it covers and the chain hash of the event
//! before it, in the index's own `meta` table, written by a durable commit.
//!
//! Such an index writes its new entries before the append that makes them true. So a
//! log position read before a durable commit began is covered by that commit: every
//! event before it was durable before the commit, hence its entries were written
//! before it. A start trusts the checkpoint only if the log has the event before it
//! with the same chain hash; otherwise the index is rebuilt from the log.

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::engine::{EventStore, StoreError};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const CHECKPOINT: &str = "checkpoint";

/// Where an index is and what it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The next log position: every event before it is in the index.
    pub next: u64,
    /// The chain hash of the event at `next - 1`.
    pub hash: Option<[u8; 32]>,
}

/// What can go wrong reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("index database: {0}")]
    Db(String),
    #[error("a checkpoint of {0} bytes")]
    Corrupt(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn db(error: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Db(error.to_string())
}

/// The checkpoint recorded in `database` (`None`: nothing yet).
pub fn read(database: &Database) -> Result<Option<Checkpoint>, CheckpointError> {
    let txn = database.begin_read().map_err(db)?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db(e)),
    };
    let Some(row) = meta.get(CHECKPOINT).map_err(db)? else { return Ok(None) };
    let bytes = row.value();
    let next = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let next = next.ok_or(CheckpointError::Corrupt(bytes.len()))?;
    let hash = match bytes.len() {
        8 => None,
        40 => Some(bytes[8..].try_into().map_err(|_| CheckpointError::Corrupt(bytes.len()))?),
        other => return Err(CheckpointError::Corrupt(other)),
    };
    Ok(Some(Checkpoint { next, hash }))
}

/// Records `checkpoint` in a durable commit, which makes every earlier commit durable.
pub fn write(database: &Database, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
    let mut txn = database.begin_write().map_err(db)?;
    txn.set_durability(Durability::Immediate).map_err(db)?;
    // The allocator's state goes with this commit (about once a second), so opening the
    // index after a crash need not walk the whole file to rebuild it.
    txn.set_quick_repair(true);
    {
        let mut meta = txn.open_table(META).map_err(db)?;
        let mut bytes = checkpoint.next.to_le_bytes().to_vec();
        if let Some(hash) = checkpoint.hash {
            bytes.extend_from_slice(&hash);
        }
        meta.insert(CHECKPOINT, bytes.as_slice()).map_err(db)?;
    }
    txn.commit().map_err(db)
}

/// Deletes every table of `database`, its checkpoint too (before a rebuild from the
/// log); the index recreates its tables.
pub fn clear(database: &Database) -> Result<(), CheckpointError> {
    let txn = database.begin_write().map_err(db)?;
    let tables: Vec<_> = txn.list_tables().map_err(db)?.collect();
    for table in tables {
        txn.delete_table(table).map_err(db)?;
    }
    txn.commit().map_err(db)
}

/// The checkpoint at the log's durable head now: read the head before the commit.
pub fn at_head(store: &dyn EventStore) -> Result<Checkpoint, CheckpointError> {
    let next = *store.watch_head().borrow();
    Ok(Checkpoint { next, hash: hash_before(store, next)? })
}

/// Whether `checkpoint` can be trusted over `store`: the log has the event before it,
/// with its hash (a log with sparse positions never matches: rebuild).
pub fn matches(store: &dyn EventStore, checkpoint: Option<Checkpoint>) -> Result<bool, CheckpointError> {
    let head = *store.watch_head().borrow();
    Ok(match checkpoint {
        Some(checkpoint) if checkpoint.next <= head => hash_before(store, checkpoint.next)? == checkpoint.hash,
        Some(_) => false,
        None => head == 0,
    })
}

/// How an index was brought up to the log at a start.
pub enum BroughtUp {
    /// The checkpoint matched: the log from `from` was re-applied (`applied`: what the
    /// index counts, events or aggregates).
    CaughtUp { from: u64, applied: u64 },
    /// The checkpoint did not match the log: the index was rebuilt (`aggregates` read).
    Rebuilt { aggregates: u64 },
}

/// Brings an index named `what` up to the log: `apply_after(from)` when `checkpoint`
/// matches the log, else `rebuild()` (which empties the index first); answers the
/// checkpoint to record, the log's head as read before either began (both read the log
/// up to it or further).
pub fn bring_up<E: From<CheckpointError>>(
    store: &dyn EventStore,
    what: &str,
    checkpoint: Option<Checkpoint>,
    apply_after: impl FnOnce(u64) -> Result<u64, E>,
    rebuild: impl FnOnce() -> Result<u64, E>,
) -> Result<Checkpoint, E> {
    let at_start = at_head(store)?;
    let started = std::time::Instant::now();
    let outcome = if matches(store, checkpoint)? {
        let from = checkpoint.map_or(0, |c| c.next);
        BroughtUp::CaughtUp { from, applied: apply_after(from)? }
    } else {
        tracing::warn!(what, ?checkpoint, head = at_start.next, "an index does not match the log; rebuilding it");
        BroughtUp::Rebuilt { aggregates: rebuild()? }
    };
    let ms = started.elapsed().as_millis() as u64;
    match outcome {
        BroughtUp::CaughtUp { from, applied } => tracing::info!(what, from, applied, ms, "index caught up"),
        BroughtUp::Rebuilt { aggregates } => tracing::info!(what, aggregates, ms, "index rebuilt from the log"),
    }
    Ok(at_start)
}

/// The chain hash of the event at `next - 1`; `None` at 0 or when no event has that
/// position.
fn hash_before(store: &dyn EventStore, next: u64) -> Result<Option<[u8; 32]>, CheckpointError> {
    if next == 0 {
        return Ok(None);
    }
    let found = store.read_all(next - 1, 1)?;
    Ok(found.first().filter(|e| e.position == next - 1).map(|e| e.hash))
}
