//! The read-model database is checked in a process of its own before the server opens
//! it: redb panics on some damaged files instead of answering (and release builds
//! abort on a panic), so the server runs `ledgerd --check-read-models <path>` and reads
//! its exit status. A damaged file (the check says so, or the checking process dies) is
//! moved aside as `read-models.redb.damaged-<unix seconds>` and the read models are
//! rebuilt from the log; the server never opens it.
//!
//! The check reads the whole file (some 15 s for 13 GB), so it runs only when the last
//! run's end is unknown or suspect. Two markers beside the file tell how it ended, and
//! every start takes both before it opens the file:
//! - `read-models.redb.closed`, the seal: a clean stop leaves the file's length and
//!   modification time, once the database is closed (`seal_after_clean_stop`). A file
//!   still as sealed is not checked.
//! - `read-models.redb.open`: a server leaves the file's device and inode once it has
//!   it open (`mark_open`), until its clean stop replaces this with the seal. Found at
//!   a start, the last run was killed or lost power with the file open: redb's commits
//!   are copy-on-write and crash-safe, and a durable commit saves its allocator state
//!   (quick repair), so the file opens at once. It is not checked page by page, only
//!   opened once in a process of its own (`ledgerd --open-read-models <path>`), where a
//!   file damaged since that redb cannot make sense of panics instead of in the
//!   server. A panic
//!   (`mark_suspect_on_panic`) or a run that ends in an error marks it suspect: that
//!   start checks.
//!
//! The check is for damage the disk did, which a file untouched since a clean close can
//! still hold: then a read that panics marks the file suspect and stops the process,
//! and the next start checks the file. A damaged file that redb refuses to open (an
//! error, not a panic) is moved aside and rebuilt by the server without a check.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use ledger_engine::store::disk::{replace_file, RealDisk};
use ledger_engine::store::EventStore;
use projections::read_models::{
    check_file, move_aside, open_over_log, ProjectionError, ReadModels, CACHE_BYTES_DEFAULT,
};

/// The hidden first argument that makes `ledgerd` check a read-model file and exit.
pub const CHECK_ARG: &str = "--check-read-models";
/// The hidden first argument that makes `ledgerd` only open a read-model file (redb
/// repairs what a kill left, or panics on a file it cannot make sense of) and exit.
pub const OPEN_ARG: &str = "--open-read-models";
/// The checking process's exit status for a damaged file.
const DAMAGED: u8 = 3;
/// The checking process's exit status for an error that says nothing of the file
/// (it could not be read, another process holds it).
const FAILED: u8 = 1;
/// How much of the checking process's last words a WARN quotes, in bytes.
const REASON_BYTES_MAX: usize = 300;

/// `ledgerd --check-read-models <path>` (`whole`: every page) or `ledgerd
/// --open-read-models <path>`: 0 if the file is sound (or opens), `DAMAGED` if it is
/// damaged, `FAILED` otherwise; the reason on standard error.
pub fn run_check(path: &Path, whole: bool) -> ExitCode {
    let checked =
        if whole { check_file(path) } else { ReadModels::open_with_cache(path, CACHE_BYTES_DEFAULT).map(drop) };
    match checked {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ ProjectionError::Damaged { .. }) => {
            eprintln!("{error}");
            ExitCode::from(DAMAGED)
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(FAILED)
        }
    }
}

/// The seal a clean stop leaves beside the database at `path`.
fn seal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".closed");
    PathBuf::from(name)
}

/// Bytes read at each end of the file for the seal's digest.
const SEAL_SAMPLE_BYTES: u64 = 64 << 10;

/// What the seal records of the file: its length in bytes, its modification time in
/// nanoseconds since the Unix epoch (which the kernel moves in ticks of a few
/// milliseconds), and a blake3 digest of its first and last `SEAL_SAMPLE_BYTES` (redb's
/// header and its last commit's pages, for a write within the same tick).
fn seal_of(path: &Path) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let metadata = std::fs::metadata(path)?;
    let modified = metadata.modified()?.duration_since(std::time::UNIX_EPOCH).map_err(std::io::Error::other)?;
    let mut file = std::fs::File::open(path)?;
    let mut digest = blake3::Hasher::new();
    let mut sample = Vec::new();
    (&mut file).take(SEAL_SAMPLE_BYTES).read_to_end(&mut sample)?;
    digest.update(&sample);
    sample.clear();
    file.seek(SeekFrom::Start(metadata.len().saturating_sub(SEAL_SAMPLE_BYTES)))?;
    file.take(SEAL_SAMPLE_BYTES).read_to_end(&mut sample)?;
    digest.update(&sample);
    Ok(format!("LEDGRMC1 {} {} {}\n", metadata.len(), modified.as_nanos(), digest.finalize().to_hex()))
}

/// After a clean stop, once the database at `path` is closed: leaves its seal (written
/// whole or not at all, `replace_file`), so the next start need not check the file.
/// A failure only costs the next start the check.
pub fn seal_after_clean_stop(path: &Path) {
    let sealed = seal_of(path)
        .map_err(|e| e.to_string())
        .and_then(|seal| replace_file(&RealDisk, &seal_path(path), seal.as_bytes()).map_err(|e| e.to_string()));
    match sealed {
        // The seal says more than the open marker: it goes.
        Ok(()) => {
            OPEN_MARKER.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            let _ = std::fs::remove_file(open_marker_path(path));
        }
        // The open marker stays: the next start trusts the file as after a kill.
        Err(error) => tracing::warn!(%error, "the read models' seal was not written"),
    }
}

/// The marker a server keeps beside the database at `path` while it has it open.
fn open_marker_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".open");
    PathBuf::from(name)
}

/// What the open marker records of the file: its device and inode (a file put in its
/// place since is another one).
fn identity_of(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path)?;
    Ok(format!("LEDGRMO1 {} {}\n", metadata.dev(), metadata.ino()))
}

/// What the open marker says after a panic or a failed run: the file may be damaged.
const SUSPECT: &str = "LEDGRMO1 suspect\n";

/// The open marker while this process has the read models open, for the panic hook.
static OPEN_MARKER: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// How the last run that had the database open stopped, as its markers tell.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LastStop {
    /// Cleanly, and the file is as it sealed it.
    Clean,
    /// Killed or cut off (a power loss) with the file open, without a panic or an
    /// error, and the file is the one it had open: redb's commits are crash-safe.
    Killed,
    /// Unknown (no marker, a marker that does not match), or on a panic or an error.
    Unknown,
}

/// Removes the file at `marker`, syncing its directory; what it said, if it was there
/// (an unreadable marker says nothing).
fn take(marker: &Path) -> Result<Option<String>, String> {
    let said = match std::fs::read_to_string(marker) {
        Ok(said) => said,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => String::new(),
    };
    std::fs::remove_file(marker).map_err(|e| format!("removing {}: {e}", marker.display()))?;
    if let Some(dir) = marker.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("syncing {}: {e}", dir.display()))?;
    }
    Ok(Some(said))
}

/// Takes the seal and the open marker beside the database at `path` (so a run that
/// does not stop cleanly leaves neither) and says how the last run stopped.
fn take_markers(path: &Path) -> Result<LastStop, String> {
    let (sealed, open) = (take(&seal_path(path))?, take(&open_marker_path(path))?);
    if sealed.is_some_and(|recorded| seal_of(path).is_ok_and(|now| now == recorded)) {
        return Ok(LastStop::Clean);
    }
    if open.is_some_and(|recorded| identity_of(path).is_ok_and(|now| now == recorded)) {
        return Ok(LastStop::Killed);
    }
    Ok(LastStop::Unknown)
}

/// Once the server has the database at `path` open: leaves the open marker beside it
/// until a clean stop seals it, so that a start after a kill knows the file was open
/// and need not check it. A failure only costs the next start the check.
pub fn mark_open(path: &Path) {
    let marker = open_marker_path(path);
    let marked = identity_of(path)
        .map_err(|e| e.to_string())
        .and_then(|identity| replace_file(&RealDisk, &marker, identity.as_bytes()).map_err(|e| e.to_string()));
    match marked {
        Ok(()) => *OPEN_MARKER.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(marker),
        Err(error) => {
            tracing::warn!(%error, "the read models' open marker was not written; the next start after a kill checks the whole file")
        }
    }
}

/// Marks the open read models suspect (after a panic, or a run that failed): the next
/// start checks the whole file. Safe in a panic hook (no lock is held across it).
pub fn mark_suspect() {
    let marker = OPEN_MARKER.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    if let Some(marker) = marker {
        // A write cut short leaves a marker that does not match: also checked.
        let _ = std::fs::write(&marker, SUSPECT);
    }
}

/// Makes every panic of this process mark the open read models suspect first: a panic
/// may come from a damaged page, and the next start must check the file rather than
/// open it and panic again.
pub fn mark_suspect_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        mark_suspect();
        previous(info);
    }));
}

/// Checks the database at `path` in a process of its own (if there is one) and moves
/// it aside if it is damaged; not when the last run stopped cleanly and left it as it
/// sealed it, nor when the last run was killed (or lost power) with it open and
/// without a panic. An error when the check could not tell.
pub async fn check_read_models(path: PathBuf) -> Result<(), String> {
    let last_stop = take_markers(&path)?;
    if !path.exists() {
        return Ok(());
    }
    match last_stop {
        LastStop::Clean => {
            tracing::info!(path = %path.display(), "read models closed cleanly by the last stop: not checked again");
            return Ok(());
        }
        LastStop::Killed => tracing::info!(
            path = %path.display(),
            "the last run stopped with the read models open, without a panic: redb's commits survive that; opened in a process of its own, not checked page by page"
        ),
        LastStop::Unknown => {}
    }
    let arg = if last_stop == LastStop::Killed { OPEN_ARG } else { CHECK_ARG };
    let checked = path.clone();
    let output = tokio::task::spawn_blocking(move || {
        let exe = std::env::current_exe().map_err(|e| format!("checking the read models: {e}"))?;
        Command::new(exe)
            .arg(arg)
            .arg(&checked)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("checking the read models: {e}"))
    })
    .await
    .map_err(|e| e.to_string())??;
    let said = String::from_utf8_lossy(&output.stderr);
    let mut reason = said.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("").trim().to_string();
    if reason.len() > REASON_BYTES_MAX {
        let mut end = REASON_BYTES_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    match verdict(output.status) {
        Verdict::Sound => Ok(()),
        Verdict::Failed => Err(format!("the read models at {} could not be checked: {reason}", path.display())),
        Verdict::Stopped(signal) => Err(format!(
            "the check of the read models at {} was stopped by signal {signal}; the next start checks them again",
            path.display()
        )),
        Verdict::Damaged => set_aside(&path, &format!("{reason} (check: {})", output.status)),
    }
}

/// What the checking process's end says of the file.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Sound,
    /// It could not tell (`FAILED`): nothing is said of the file.
    Failed,
    /// Killed from outside (SIGTERM or SIGINT to the process group, as Ctrl-C sends,
    /// SIGKILL, SIGHUP): nothing is said of the file, which must not be set aside and
    /// rebuilt for that.
    Stopped(i32),
    /// It said so (`DAMAGED`), or it died of a fault: redb panics on some damaged
    /// files, and a panic aborts (SIGABRT).
    Damaged,
}

fn verdict(status: std::process::ExitStatus) -> Verdict {
    use std::os::unix::process::ExitStatusExt;
    /// Signals a process dies of by itself: a fault or an abort.
    const FAULTS: [i32; 7] =
        [libc::SIGABRT, libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGSYS, libc::SIGTRAP];
    match (status.code(), status.signal()) {
        (Some(0), _) => Verdict::Sound,
        (Some(code), _) if code == i32::from(FAILED) => Verdict::Failed,
        (None, Some(signal)) if !FAULTS.contains(&signal) => Verdict::Stopped(signal),
        _ => Verdict::Damaged,
    }
}

/// Moves the damaged database at `path` aside, saying so: the read models start empty
/// and are rebuilt from the log.
fn set_aside(path: &Path, reason: &str) -> Result<(), String> {
    let aside = move_aside(path).map_err(|e| format!("moving the damaged read models aside: {e}"))?;
    tracing::warn!(
        path = %path.display(),
        moved_to = %aside.display(),
        %reason,
        "the read-model database is damaged: moved aside, rebuilding the read models from the log"
    );
    Ok(())
}

/// Opens the read models over `store`'s log, and leaves the open marker beside them. A
/// file that was not checked page by page (the last run stopped cleanly, or was killed)
/// and that redb finds damaged at open is set aside and rebuilt, as a check would have.
pub fn open_read_models(path: &Path, store: &dyn EventStore, torn_tail_cut: bool) -> Result<ReadModels, String> {
    let models = match open_over_log(path, CACHE_BYTES_DEFAULT, store, torn_tail_cut) {
        Err(error @ ProjectionError::Damaged { .. }) => {
            set_aside(path, &error.to_string())?;
            open_over_log(path, CACHE_BYTES_DEFAULT, store, torn_tail_cut)
        }
        opened => opened,
    }
    .map_err(|e| e.to_string())?;
    mark_open(path);
    Ok(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_stopped_from_outside_says_nothing_of_the_file() {
        use std::os::unix::process::ExitStatusExt;
        use std::process::ExitStatus;
        // Raw wait statuses: an exit code in the second byte, a signal in the first.
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(verdict(exited(0)), Verdict::Sound);
        assert_eq!(verdict(exited(i32::from(FAILED))), Verdict::Failed);
        assert_eq!(verdict(exited(i32::from(DAMAGED))), Verdict::Damaged);
        assert_eq!(verdict(exited(101)), Verdict::Damaged, "an unexpected exit code");
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGKILL, libc::SIGHUP] {
            assert_eq!(verdict(ExitStatus::from_raw(signal)), Verdict::Stopped(signal));
        }
        for signal in [libc::SIGABRT, libc::SIGSEGV, libc::SIGBUS] {
            assert_eq!(verdict(ExitStatus::from_raw(signal)), Verdict::Damaged, "signal {signal}");
        }
    }

    #[test]
    fn a_seal_is_trusted_only_for_a_file_untouched_since() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("read-models.redb");
        std::fs::write(&path, b"pages").expect("file");
        assert_eq!(take_markers(&path), Ok(LastStop::Unknown), "no seal: checked");
        seal_after_clean_stop(&path);
        assert_eq!(take_markers(&path), Ok(LastStop::Clean), "untouched since the seal");
        assert!(!seal_path(&path).exists(), "a start takes the seal");
        assert_eq!(take_markers(&path), Ok(LastStop::Unknown), "a second start checks");
        seal_after_clean_stop(&path);
        std::fs::write(&path, b"pagez").expect("written since, same length");
        assert_eq!(take_markers(&path), Ok(LastStop::Unknown), "written since the seal: checked");
        seal_after_clean_stop(&path);
        std::fs::write(seal_path(&path), b"LEDGRMC1 nonsense").expect("damaged seal");
        assert_eq!(take_markers(&path), Ok(LastStop::Unknown), "a seal that does not match: checked");
    }

    /// One test for everything that uses the process's open marker.
    #[test]
    fn an_open_marker_is_trusted_after_a_kill_but_not_after_a_panic_or_a_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("read-models.redb");
        std::fs::write(&path, b"pages").expect("file");
        mark_open(&path);
        std::fs::write(&path, b"pages and more, written while open").expect("written while open");
        assert_eq!(take_markers(&path), Ok(LastStop::Killed), "killed with the file open");
        assert!(!open_marker_path(&path).exists(), "a start takes the open marker");
        assert_eq!(take_markers(&path), Ok(LastStop::Unknown), "a second start checks");

        mark_open(&path);
        mark_suspect();
        assert_eq!(take_markers(&path), Ok(LastStop::Unknown), "a panic: checked");

        mark_open(&path);
        let other = dir.path().join("other.redb");
        std::fs::write(&other, b"pages").expect("another file");
        std::fs::rename(&other, &path).expect("put in its place");
        assert_eq!(take_markers(&path), Ok(LastStop::Unknown), "another file: checked");

        mark_open(&path);
        seal_after_clean_stop(&path);
        assert!(!open_marker_path(&path).exists(), "the seal replaces the open marker");
        assert_eq!(take_markers(&path), Ok(LastStop::Clean));
    }
}
