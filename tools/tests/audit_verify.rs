//! `ledgerctl audit verify` on a healthy data directory and on tampered ones: an
//! altered amount, a removed event, two events swapped. Tampering rewrites the log
//! with valid checksums, as someone who knows the format would.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{records, rewrite};
use ledger_core::codec;
use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::{format, RecordedEvent};
use ledger_engine::writer::{Ledger, LedgerConfig};

fn populate(data_dir: &Path) {
    let (store, _) = EmbeddedStore::open(data_dir.join("log"), EmbeddedOptions::default()).expect("open");
    let ledger = Ledger::open(
        Arc::new(store),
        LedgerConfig { snapshot_dir: Some(data_dir.join("snapshots")), ..LedgerConfig::default() },
    )
    .expect("ledger");
    let usd = Currency::parse("USD").expect("USD");
    let accounts = (1..=3)
        .map(|id| {
            AccountCommand::Open(NewAccount {
                id: AccountId(id),
                currency: usd,
                code: 1,
                flags: AccountFlags(0),
                owner_id: 0,
            })
        })
        .collect();
    assert!(ledger.create_accounts_blocking(accounts).expect("accounts").iter().all(Result::is_ok));
    for id in 1..=10u128 {
        let transfer = NewTransfer {
            id: TransferId(id),
            debit_account_id: AccountId(1 + id % 3),
            credit_account_id: AccountId(1 + (id + 1) % 3),
            amount: 100 + id,
            currency: Some(usd),
            code: 1,
            metadata: format!("transfer {id}"),
            linked: false,
            kind: TransferKind::Posted,
        };
        assert!(ledger.create_transfers_blocking(vec![transfer]).expect("transfer")[0].is_ok());
    }
    ledger.close();
}

fn verify(data_dir: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ledgerctl"))
        .args(["audit", "verify", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run ledgerctl");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).to_string())
}

#[test]
fn a_healthy_directory_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path());
    let (code, out) = verify(dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK: 13 events checked"), "{out}");
    assert!(out.contains("USD: debits posted 10.55 = credits posted 10.55"), "{out}");
    let json = Command::new(env!("CARGO_BIN_EXE_ledgerctl"))
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON object");
    assert_eq!(value["ok"], true);
    assert_eq!(value["events_checked"], 13);
    // Rewriting the log unchanged keeps it valid: the tampering below is what fails.
    rewrite(dir.path(), &records(dir.path()));
    assert_eq!(verify(dir.path()).0, 0);
}

#[test]
fn an_altered_amount_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path());
    let mut records = records(dir.path());
    let mut event = codec::decode_event(&records[7].payload).expect("decode");
    if let EventKind::TransferPosted(movement) = &mut event.kind {
        movement.amount += 1;
    }
    records[7].payload.clear();
    codec::encode_event(&event, &mut records[7].payload);
    rewrite(dir.path(), &records);
    let (code, out) = verify(dir.path());
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("first bad stream ledger-0 revision 7"), "{out}");
}

#[test]
fn a_removed_event_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path());
    let mut records = records(dir.path());
    records.remove(5);
    for (position, record) in records.iter_mut().enumerate() {
        record.position = position as u64;
    }
    rewrite(dir.path(), &records);
    let (code, out) = verify(dir.path());
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("first bad stream ledger-0 revision 6"), "{out}");
}

#[test]
fn swapped_events_are_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path());
    let mut records = records(dir.path());
    let (a, b) = (records[8].clone(), records[9].clone());
    records[8] = RecordedEvent { position: 8, revision: 8, ..b };
    records[9] = RecordedEvent { position: 9, revision: 9, ..a };
    rewrite(dir.path(), &records);
    let (code, out) = verify(dir.path());
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("first bad stream ledger-0 revision 8"), "{out}");
}

#[test]
fn a_damaged_last_frame_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path());
    let segment = dir.path().join("log").join(format::segment_file_name(0));
    let mut bytes = std::fs::read(&segment).expect("read");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x10;
    std::fs::write(&segment, bytes).expect("write");
    let (code, out) = verify(dir.path());
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("torn or damaged"), "{out}");
}
