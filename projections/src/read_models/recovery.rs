//! Opening the read models over the log they fold, at start: they are used only if
//! they are a fold of a prefix of that very log.
//!
//! The checkpoint is the next log position to apply, and the `chain` table, written in
//! the same transaction, holds every stream's head (next revision, chain hash of its
//! last record) as of that checkpoint. A chain hash covers the whole stream up to it,
//! so read models whose every stream head is in the log with the same hash, and whose
//! checkpoint is not past the log's end, folded exactly the events the log holds
//! before it. Anything else (recovery cut a torn last frame, the log was truncated or
//! replaced) would serve events the log no longer has and skip the new events written
//! at the reused positions, so the read models are rebuilt from the log instead, with
//! a WARN saying why. Databases written before this check have the same table: there is
//! nothing they lack.
//!
//! A database file that is itself damaged (redb's page checksums fail, the file is cut
//! short) is found by `check_file`, moved aside as `read-models.redb.damaged-<unix
//! seconds>` (`move_aside`), and the read models are rebuilt from the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger_engine::store::disk::Disk;
use ledger_engine::store::{Direction, EventStore};
use redb::{ReadableDatabase, ReadableTable};

use super::rows::CHAIN;
use super::{ProjectionError, ReadModels};

impl ReadModels {
    /// Why these read models are not a fold of a prefix of `store`'s log, if they are
    /// not: a checkpoint past the log's end, or a stream head the log does not have
    /// (a revision past the stream's end, or another chain hash there). Reads one
    /// record per stream.
    pub fn diverges_from(&self, store: &dyn EventStore) -> Result<Option<String>, ProjectionError> {
        let next = self.next_position()?;
        let head = *store.watch_head().borrow();
        if store.dense_positions() && next > head {
            return Ok(Some(format!("their checkpoint (position {next}) is past the log's end (position {head})")));
        }
        let txn = self.db.begin_read()?;
        let chain = txn.open_table(CHAIN)?;
        for row in chain.iter()? {
            let (stream, value) = row?;
            let (stream, (next_revision, hash)) = (stream.value(), value.value());
            let Some(revision) = next_revision.checked_sub(1) else {
                continue;
            };
            let found = store
                .read_stream(stream, revision, Direction::Forwards, 1)
                .map_err(|e| ProjectionError::Invalid(format!("reading stream {stream} of the log: {e}")))?;
            match found.first() {
                Some(record) if record.revision == revision && record.hash == hash => {}
                Some(_) => {
                    return Ok(Some(format!(
                    "stream {stream} at revision {revision} has another chain hash in the log than in the read models"
                )))
                }
                None => {
                    return Ok(Some(format!("stream {stream} ends before revision {revision}, which they applied")));
                }
            }
        }
        Ok(None)
    }

    /// `diverges_from` in one read: whether the last event these read models applied
    /// (the log's event at their checkpoint - 1) is, in the log, the head they hold for
    /// its stream, with the same chain hash. Over a log that only grew since they
    /// applied it (no tail cut at open), a prefix that differed anywhere would differ
    /// there too: the chain hash at that event covers its stream's history, and a log
    /// of other events puts another event at that position.
    pub fn tip_diverges_from(&self, store: &dyn EventStore) -> Result<Option<String>, ProjectionError> {
        let next = self.next_position()?;
        let head = *store.watch_head().borrow();
        if store.dense_positions() && next > head {
            return Ok(Some(format!("their checkpoint (position {next}) is past the log's end (position {head})")));
        }
        let Some(last) = next.checked_sub(1) else { return Ok(None) };
        let found = store
            .read_all(last, 1)
            .map_err(|e| ProjectionError::Invalid(format!("reading position {last} of the log: {e}")))?;
        let Some(record) = found.first().filter(|r| r.position == last) else {
            return Ok(Some(format!("the log has no event at position {last}, which they applied")));
        };
        let txn = self.db.begin_read()?;
        let chain = txn.open_table(CHAIN)?;
        let held = chain.get(record.stream.as_str())?.map(|v| v.value());
        match held {
            Some((next_revision, hash)) if next_revision == record.revision + 1 && hash == record.hash => Ok(None),
            _ => Ok(Some(format!(
                "the log's event at position {last} (stream {} revision {}) is not the last one they applied",
                record.stream, record.revision
            ))),
        }
    }
}

/// Where a damaged database at `path` is moved aside: `<path>.damaged-<unix seconds>`.
pub fn damaged_path(path: &Path) -> PathBuf {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{seconds}"));
    PathBuf::from(name)
}

/// Checks every page of the database at `path` (redb's integrity check, which reads
/// the whole file): `ProjectionError::Damaged` if it is damaged. redb may panic on some
/// damaged files instead of answering, so a server runs this in a process of its own
/// (`ledgerd --check-read-models`) and treats that process failing as damage.
pub fn check_file(path: &Path) -> Result<(), ProjectionError> {
    ReadModels::open_db(path, super::CACHE_BYTES_DEFAULT, true).map(drop)
}

/// Moves a damaged database at `path` aside (`damaged_path`), kept for whoever wants
/// to look at it; returns where it went.
pub fn move_aside(path: &Path) -> Result<PathBuf, ProjectionError> {
    let aside = damaged_path(path);
    std::fs::rename(path, &aside).map_err(ProjectionError::Io)?;
    Ok(aside)
}

/// Opens the read models at `path` for `store`'s log: read models that are not a fold
/// of a prefix of the log (`ReadModels::diverges_from`) are dropped, logged at WARN
/// with the reason, and start empty: the worker rebuilds them from the log.
///
/// Except one case: a checkpoint past the end of a dense log when opening the log cut
/// no torn tail (`torn_tail_cut` false). Only durable events are ever applied, so the
/// log lost durable events (a truncation at a frame boundary): `LogShorter`, and the
/// server refuses to start rather than serve a ledger with fewer transfers.
pub fn open_over_log(
    path: &Path,
    cache_bytes: usize,
    store: &dyn EventStore,
    torn_tail_cut: bool,
) -> Result<ReadModels, ProjectionError> {
    let models = ReadModels::open_with_cache(path, cache_bytes)?;
    check_over_log(path, models, store, torn_tail_cut, || ReadModels::recreate(path, cache_bytes))
}

/// `open_over_log` with the database on `disk` (the engine's file layer): the
/// simulator's read models, on its simulated disk.
pub fn open_over_log_on(
    disk: Arc<dyn Disk>,
    path: &Path,
    cache_bytes: usize,
    store: &dyn EventStore,
    torn_tail_cut: bool,
) -> Result<ReadModels, ProjectionError> {
    let models = ReadModels::open_on(disk.clone(), path, cache_bytes)?;
    check_over_log(path, models, store, torn_tail_cut, || {
        disk.remove_file(path).map_err(ProjectionError::Io)?;
        ReadModels::open_on(disk.clone(), path, cache_bytes)
    })
}

fn check_over_log(
    path: &Path,
    models: ReadModels,
    store: &dyn EventStore,
    torn_tail_cut: bool,
    recreate: impl FnOnce() -> Result<ReadModels, ProjectionError>,
) -> Result<ReadModels, ProjectionError> {
    models.set_dense_positions(store.dense_positions());
    let (checkpoint, head) = (models.next_position()?, *store.watch_head().borrow());
    if store.dense_positions() && checkpoint > head && !torn_tail_cut {
        return Err(ProjectionError::LogShorter { checkpoint, head });
    }
    // After a tail cut, or over a log with sparse positions, every stream's head is
    // checked; otherwise the last event applied is enough (see `tip_diverges_from`),
    // which keeps a start's cost independent of how many streams there are.
    let diverged = if torn_tail_cut || !store.dense_positions() {
        models.diverges_from(store)?
    } else {
        models.tip_diverges_from(store)?
    };
    match diverged {
        None => Ok(models),
        Some(reason) => {
            tracing::warn!(
                path = %path.display(),
                %reason,
                "the read models do not match the event log: rebuilding them from the log"
            );
            drop(models);
            let models = recreate()?;
            models.set_dense_positions(store.dense_positions());
            Ok(models)
        }
    }
}
