//! The read-model database is checked in a process of its own before the server opens
//! it: redb panics on some damaged files instead of answering (and release builds
//! abort on a panic), so the server runs `ledgerd --check-read-models <path>` and reads
//! its exit status. A damaged file (the check says so, or the checking process dies) is
//! moved aside as `read-models.redb.damaged-<unix seconds>` and the read models are
//! rebuilt from the log; the server never opens it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

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

/// Checks the database at `path` in a process of its own (if there is one) and moves
/// it aside if it is damaged. An error when the check could not tell.
pub async fn check_read_models(path: PathBuf) -> Result<(), String> {
    if !path.exists() {
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
