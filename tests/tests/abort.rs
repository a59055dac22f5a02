//! A writer that dies takes the process down: a panic on the writer's thread (here
//! injected by a store that panics inside `append_with`) aborts the process instead of
//! leaving a server that answers without a writer. What was acknowledged before it is
//! on disk, and the log opens and audits cleanly afterwards.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;

use ledger_core::domain::TransferId;
use ledger_engine::audit;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::writer::{Ledger, LedgerConfig};

/// SIGABRT, what `std::process::abort` ends a process with.
const SIGABRT: i32 = 6;

#[test]
fn a_panic_on_the_writer_thread_aborts_the_process_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Append 1 opens the accounts, appends 2..=5 are transfers 1..=4, append 6 panics.
    let mut child = Command::new(env!("CARGO_BIN_EXE_panic-writer"))
        .arg(dir.path())
        .arg("6")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start panic-writer");
    let stdout = child.stdout.take().expect("stdout");
    let acknowledged: Vec<u128> = BufReader::new(stdout)
        .lines()
        .map(|line| line.expect("line"))
        .filter_map(|line| line.strip_prefix("ACK ").map(|id| id.parse().expect("id")))
        .collect();
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    assert_eq!(status.signal(), Some(SIGABRT), "status {status:?}, stderr: {stderr}");
    assert!(stderr.contains("the ledger-writer thread panicked"), "{stderr}");
    assert_eq!(acknowledged, vec![1, 2, 3, 4]);

    let (store, _) = EmbeddedStore::open(dir.path().join("log"), EmbeddedOptions::default()).expect("reopen");
    let store = Arc::new(store);
    let report = audit::verify_store(store.as_ref()).expect("audit");
    assert_eq!(report.transfers, 4, "{report:?}");
    let ledger = Ledger::open(store, LedgerConfig::default()).expect("open");
    let found = ledger.lookup_transfers_blocking((1..=4).map(TransferId).collect()).expect("lookup");
    assert!(found.iter().all(Option::is_some), "{found:?}");
    ledger.close();
}
