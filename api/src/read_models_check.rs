//! The read-model database is checked in a process of its own before the server opens
//! it: redb panics on some damaged files instead of answering (and release builds
//! abort on a panic), so the server runs `ledgerd --check-read-models <path>` and reads
//! its exit status. A damaged file (the check says so, or the checking process dies) is
//! moved aside as `read-models.redb.damaged-<unix seconds>` and the read models are
//! rebuilt from the log; the server never opens it.
//!
//! The check reads the whole file (some 15 s for 13 GB), so it is skipped when the last
//! run stopped cleanly and nothing wrote the file since: a clean stop leaves
//! `read-models.redb.closed` with the file's length and modification time once the
//! database is closed (`seal_after_clean_stop`), and a start removes it before it
//! opens the file, so a run that does not stop cleanly leaves none. A crash does not
//! damage redb's pages (its commits are copy-on-write, and it repairs its allocator
//! state itself after an unclean close); the check is for damage the disk did, which a
//! file untouched since a clean close can still hold: then a read that panics stops the
//! process, and the next start, finding no seal, checks the file.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use ledger_engine::store::disk::{replace_file, RealDisk};
use projections::read_models::{check_file, move_aside, ProjectionError};

/// The hidden first argument that makes `ledgerd` check a read-model file and exit.
pub const CHECK_ARG: &str = "--check-read-models";
/// The checking process's exit status for a damaged file.
const DAMAGED: u8 = 3;
/// The checking process's exit status for an error that says nothing of the file
/// (it could not be read, another process holds it).
const FAILED: u8 = 1;
/// How much of the checking process's last words a WARN quotes, in bytes.
const REASON_BYTES_MAX: usize = 300;

/// `ledgerd --check-read-models <path>`: 0 if the file is sound, `DAMAGED` if it is
/// damaged, `FAILED` otherwise; the reason on standard error.
pub fn run_check(path: &Path) -> ExitCode {
    match check_file(path) {
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
    if let Err(error) = sealed {
        tracing::warn!(%error, "the read models' seal was not written; the next start checks the whole file");
    }
}

/// Removes the seal beside the database at `path`; true if there was one and the file
/// is as it recorded (untouched since a clean stop).
fn take_seal(path: &Path) -> Result<bool, String> {
    let seal = seal_path(path);
    let recorded = match std::fs::read_to_string(&seal) {
        Ok(recorded) => recorded,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        // Unreadable: as if there were none.
        Err(_) => String::new(),
    };
    std::fs::remove_file(&seal).map_err(|e| format!("removing {}: {e}", seal.display()))?;
    if let Some(dir) = seal.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("syncing {}: {e}", dir.display()))?;
    }
    Ok(seal_of(path).is_ok_and(|now| now == recorded))
}

/// Checks the database at `path` in a process of its own (if there is one) and moves
/// it aside if it is damaged; not when it is untouched since a clean stop. An error
/// when the check could not tell.
pub async fn check_read_models(path: PathBuf) -> Result<(), String> {
    if !path.exists() {
        return Ok(());
    }
    if take_seal(&path)? {
        tracing::info!(path = %path.display(), "read models closed cleanly by the last stop: not checked again");
        return Ok(());
    }
    let checked = path.clone();
    let output = tokio::task::spawn_blocking(move || {
        let exe = std::env::current_exe().map_err(|e| format!("checking the read models: {e}"))?;
        Command::new(exe)
            .arg(CHECK_ARG)
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
    match output.status.code() {
        Some(0) => return Ok(()),
        Some(code) if code == i32::from(FAILED) => {
            return Err(format!("the read models at {} could not be checked: {reason}", path.display()))
        }
        _ => {}
    }
    let aside = move_aside(&path).map_err(|e| format!("moving the damaged read models aside: {e}"))?;
    tracing::warn!(
        path = %path.display(),
        moved_to = %aside.display(),
        check = %output.status,
        %reason,
        "the read-model database is damaged: moved aside, rebuilding the read models from the log"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_is_trusted_only_for_a_file_untouched_since() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("read-models.redb");
        std::fs::write(&path, b"pages").expect("file");
        assert!(!take_seal(&path).expect("no seal"), "no seal: checked");
        seal_after_clean_stop(&path);
        assert!(take_seal(&path).expect("seal"), "untouched since the seal");
        assert!(!seal_path(&path).exists(), "a start takes the seal");
        assert!(!take_seal(&path).expect("taken"), "a second start checks");
        seal_after_clean_stop(&path);
        std::fs::write(&path, b"pagez").expect("written since, same length");
        assert!(!take_seal(&path).expect("seal"), "written since the seal: checked");
        seal_after_clean_stop(&path);
        std::fs::write(seal_path(&path), b"LEDGRMC1 nonsense").expect("damaged seal");
        assert!(!take_seal(&path).expect("seal"), "a seal that does not match: checked");
    }
}
