//! Seals and the streams' directory (`seal.rs`, `directory.rs`): writing a segment's
//! seal once it takes no more appends, merging the older seals into the directory, and
//! finding the directory again when the store opens.

use super::*;
use crate::store::directory::{self, Directory};
use crate::store::log_index::MergePlan;

/// Sealed segments whose seals keep their filters and fences in memory, by default;
/// past it the oldest are merged into the streams' directory, leaving half of them.
/// At most about 8 MiB of filters and fences (a segment of 256 MiB holds at most a few
/// hundred thousand streams, 2.4 bytes each), however long the log.
pub const SEALS_IN_MEMORY: usize = 16;

/// Writes the seal of `segment` (`segment_len` bytes, all its records published) from
/// its table, then puts it in the table's place; then merges the oldest seals into the
/// streams' directory if more than the store's `seals_in_memory` keep their filters.
pub(super) fn write_seal(shared: &Shared, segment: u32, segment_len: u64) -> Result<(), StoreError> {
    let table = {
        let index = shared.index.read().map_err(|_| StoreError::Closed)?;
        index.tables.iter().find(|table| table.segment == segment).cloned().ok_or(StoreError::Closed)?
    };
    let sealed = Sealed::write(&*shared.disk, &shared.dir, &table, segment_len)?;
    shared.index.write().map_err(|_| StoreError::Closed)?.seal(sealed);
    if let Err(error) = merge(shared) {
        // The seals stay whole and in memory: lookups are as right as before, only the
        // memory of their filters grows until a merge succeeds (tried at every seal).
        tracing::error!(%error, "merging seals into the streams' directory failed");
    }
    Ok(())
}

/// Merges the seals past the store's `seals_in_memory` (but the newest half of them)
/// with the directory into a new directory file, puts it in place and removes the old.
fn merge(shared: &Shared) -> Result<(), StoreError> {
    let plan = shared.index.read().map_err(|_| StoreError::Closed)?.merge_plan(shared.seals_in_memory);
    let Some(MergePlan { old, seals, digest }) = plan else { return Ok(()) };
    let Some(last) = seals.last().map(|sealed| sealed.segment) else { return Ok(()) };
    let (disk, dir) = (&*shared.disk, &shared.dir);
    let started = std::time::Instant::now();
    let written = match directory::write(disk, dir, old.as_deref(), &seals, digest) {
        Err(error @ StoreError::Corrupt { .. }) if old.is_some() => {
            tracing::warn!(%error, "the streams' directory does not check: making it again from the seals");
            let all = shared.index.read().map_err(|_| StoreError::Closed)?.detached_up_to(last);
            directory::write(disk, dir, None, &all, digest)?
        }
        written => written?,
    };
    tracing::info!(
        seals = seals.len(),
        last,
        entries = written.entries(),
        ms = started.elapsed().as_millis() as u64,
        "merged seals into the streams' directory"
    );
    shared.index.write().map_err(|_| StoreError::Closed)?.cover(written);
    if let Some(old) = old {
        disk.remove_file(old.path()).map_err(|e| io_error("remove", old.path(), e))?;
        sync_dir(disk, dir)?;
    }
    Ok(())
}

/// Removes unfinished seals, and seals of the last segment or of none: the last
/// segment takes appends, so it is always read at open.
pub(super) fn remove_stray_seals(disk: &dyn Disk, dir: &Path, segments: usize) -> Result<(), StoreError> {
    let names = disk.list_dir(dir).map_err(|e| io_error("read_dir", dir, e))?;
    remove_where(disk, dir, names, |name| match name.strip_suffix(".idx") {
        Some(stem) => stem.parse::<usize>().is_ok_and(|segment| segment + 1 >= segments),
        None => name.ends_with(".idx.tmp"),
    })
}

/// Removes the files of `names` (in `dir`) that `stray` picks, then syncs `dir` if any.
fn remove_where(
    disk: &dyn Disk,
    dir: &Path,
    names: Vec<String>,
    stray: impl Fn(&str) -> bool,
) -> Result<(), StoreError> {
    let mut removed = false;
    for name in names.iter().filter(|name| stray(name)) {
        let path = dir.join(name);
        disk.remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
        removed = true;
    }
    if removed {
        sync_dir(disk, dir)?;
    }
    Ok(())
}

/// Removes an unfinished directory and those that cover the last segment (which takes
/// appends) or are older than the newest; the last segment the newest covers.
pub(super) fn newest_directory(disk: &dyn Disk, dir: &Path, segments: usize) -> Result<Option<u32>, StoreError> {
    let names = disk.list_dir(dir).map_err(|e| io_error("read_dir", dir, e))?;
    let sealed = segments.saturating_sub(1) as u64;
    let newest =
        names.iter().filter_map(|name| directory::covered_by(name)).filter(|last| u64::from(*last) < sealed).max();
    remove_where(disk, dir, names, |name| match directory::covered_by(name) {
        Some(last) => Some(last) != newest,
        None => name == directory::TEMPORARY,
    })?;
    Ok(newest)
}

/// Once the seals up to `last` are open (without their filters): the directory that
/// covers them, if it checks; if not, their filters are read again and its file is
/// removed (the next merge writes one). The last segment covered then, if any.
pub(super) fn open_directory(
    disk: &dyn Disk,
    dir: &Path,
    index: &mut LogIndex,
    last: u32,
) -> Result<Option<u32>, StoreError> {
    if let Some(directory) = Directory::open(disk, dir, last, &index.sealed)? {
        index.directory = Some(Arc::new(directory));
        return Ok(Some(last));
    }
    tracing::warn!(last, "the streams' directory does not describe the seals: reading their filters");
    uncover(index)?;
    let path = dir.join(directory::file_name(last));
    match disk.remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io_error("remove", &path, error)),
        _ => sync_dir(disk, dir)?,
    }
    Ok(None)
}

/// Reads every covered seal's filter again, and drops the directory.
pub(super) fn uncover(index: &mut LogIndex) -> Result<(), StoreError> {
    for sealed in &mut index.sealed {
        sealed.uncover()?;
    }
    index.directory = None;
    Ok(())
}
