//! Killing the projection process mid-batch and restarting it gives the same read
//! models as a rebuild from nothing: each batch commits with its checkpoint or not at
//! all. Uses the real `ledgerctl` binary and SIGKILL.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ledgerctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ledgerctl"))
}

fn json_of(data_dir: &Path, args: &[&str]) -> serde_json::Value {
    let output = ledgerctl()
        .arg("--json")
        .args(["projections"])
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run ledgerctl");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout} {}", String::from_utf8_lossy(&output.stderr)))
}

/// A log in `data` written by `ledgerctl bench` (accounts, transfers, batch size).
fn write_log(data: &std::path::Path, accounts: &str, transfers: &str, batch: &str) {
    let bench = ledgerctl()
        .args(["bench", "--accounts", accounts, "--transfers", transfers, "--batch", batch, "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .status()
        .expect("bench");
    assert!(bench.success(), "building the log failed");
}

#[test]
fn sigkill_mid_batch_then_restart_equals_a_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    write_log(&data, "50", "60000", "1000");

    let reference = json_of(&data, &["rebuild"]);
    let head = reference["log_head"].as_u64().expect("head");
    assert_eq!(reference["applied_position"].as_u64(), Some(head));
    std::fs::remove_dir_all(data.join("projections")).expect("drop the read models");

    let mut kills_mid_run = 0;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for attempt in 0.. {
        assert!(attempt < 200, "catch-up never finished");
        let mut child = ledgerctl()
            .args(["projections", "catch-up", "--batch", "300", "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn catch-up");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let deadline = Instant::now() + Duration::from_millis(20 + seed % 100);
        let mut finished = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait") {
                finished = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match finished {
            Some(status) => {
                assert!(status.success(), "catch-up failed: {status}");
                break;
            }
            None => {
                child.kill().expect("SIGKILL");
                child.wait().expect("reap");
                let status = json_of(&data, &["status"]);
                let applied = status["applied_position"].as_u64().expect("position");
                assert!(applied <= head);
                if applied > 0 && applied < head {
                    kills_mid_run += 1;
                }
            }
        }
    }
    eprintln!("{kills_mid_run} runs killed mid-way");
    assert!(kills_mid_run >= 2, "the test must really kill runs in the middle (got {kills_mid_run})");
    let after = json_of(&data, &["status"]);
    assert_eq!(after["applied_position"].as_u64(), Some(head));
    assert_eq!(after["digest"], reference["digest"], "killed and restarted must equal a rebuild");
    assert!(after["audit_alarm"].is_null());
}

#[test]
fn rebuild_replaces_a_damaged_database_without_opening_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    write_log(&data, "10", "2000", "100");
    let reference = json_of(&data, &["rebuild"]);
    let path = data.join("projections").join("read-models.redb");
    let mut bytes = std::fs::read(&path).expect("read models");
    // One byte in the middle of every 4 KiB page past redb's header: opening this file
    // makes redb panic.
    for at in (4096 + 2048..bytes.len()).step_by(4096) {
        bytes[at] ^= 0x5a;
    }
    std::fs::write(&path, &bytes).expect("damage");
    let rebuilt = json_of(&data, &["rebuild"]);
    assert_eq!(rebuilt["digest"], reference["digest"], "the same read models, rebuilt from the log");
    assert_eq!(rebuilt["applied_position"], reference["applied_position"]);
}
