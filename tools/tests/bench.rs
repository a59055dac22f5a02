//! `ledgerctl bench --json`: the figures a scale run needs besides the rate (the first
//! and last tenth's rates, peak memory, bytes on disk), and `--other-streams`.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let output =
        Command::new(env!("CARGO_BIN_EXE_ledgerctl")).arg("--json").arg("bench").args(args).output().expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{args:?}: {stdout} {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn files_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry"))
        .map(|entry| {
            if entry.file_type().expect("type").is_dir() {
                files_bytes(&entry.path())
            } else {
                entry.metadata().expect("meta").len()
            }
        })
        .sum()
}

#[test]
fn the_json_has_the_tenths_the_peak_memory_and_the_bytes_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("bench");
    let data_arg = data.to_str().expect("utf-8");
    let figures = bench(&["--accounts", "50", "--transfers", "20000", "--batch", "500", "--data-dir", data_arg]);
    let number = |key: &str| figures[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {figures}"));
    assert!(number("transfers_per_sec") > 0.0, "{figures}");
    assert!(number("first_tenth_per_sec") > 0.0 && number("last_tenth_per_sec") > 0.0, "{figures}");
    // More than the 20,000 transfers' amounts alone, and exactly what the directory holds.
    assert!(number("rss_peak_bytes") > 1_000_000.0, "{figures}");
    assert_eq!(figures["disk_bytes"].as_u64(), Some(files_bytes(&data)), "{figures}");
    assert!(number("disk_bytes") > 20_000.0 * 16.0, "{figures}");
}

#[test]
fn other_streams_are_written_before_the_run_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("bench");
    let args = ["--accounts", "10", "--transfers", "50", "--batch", "1", "--in-flight", "1", "--other-streams", "2000"];
    let data_arg = data.to_str().expect("utf-8");
    let figures = bench(&[&args[..], &["--data-dir", data_arg]].concat());
    assert_eq!(figures["other_streams"].as_u64(), Some(2_000), "{figures}");
    assert_eq!(figures["transfers"].as_u64(), Some(50), "{figures}");
    // The log holds them: an audit counts every stream.
    let audit = Command::new(env!("CARGO_BIN_EXE_ledgerctl"))
        .args(["--json", "audit", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .expect("audit");
    let report: Value = serde_json::from_slice(&audit.stdout).expect("audit JSON");
    assert!(audit.status.success(), "{report}");
    assert_eq!(report["streams"].as_u64(), Some(2_001), "{report}");
}
