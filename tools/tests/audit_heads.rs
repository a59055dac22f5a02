//! Signed chain heads: `ledgerd` signs the heads of changed streams, an auditor saves
//! them with `ledgerctl audit heads`, and `ledgerctl audit verify --heads` catches a
//! rewrite of a stream's history with every later hash recomputed, which the plain
//! audit passes (the rewritten log is consistent with itself).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ledgerctl, records, rewrite, InProcessServer};
use ledger_core::chain::chain_hash;
use ledger_core::codec;
use ledger_core::domain::EventKind;

fn verify(data_dir: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ledgerctl"))
        .args(["audit", "verify", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .output()
        .expect("run ledgerctl");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn a_full_chain_rewrite_passes_the_plain_audit_and_fails_against_signed_heads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcessServer::start(dir.path());
    for id in ["1", "2"] {
        let (ok, out) = ledgerctl(server.listen, &["accounts", "create", "--id", id, "--currency", "USD"]);
        assert!(ok, "{out}");
    }
    for n in 1..=6 {
        let id = (100 + n).to_string();
        let transfer = ["transfers", "create", "--id", &id, "--debit", "1", "--credit", "2", "--currency", "USD"];
        let (ok, out) =
            ledgerctl(server.listen, &[&transfer[..], &["--amount", "1.00", "--metadata", "rent"]].concat());
        assert!(ok, "{out}");
    }
    // The server signs every second (tests' setting); save until the last transfer's
    // head (ledger-0 revision 7: two accounts, six transfers) is among the saved heads.
    let saved = dir.path().join("saved-heads.jsonl");
    let out_arg = saved.to_str().expect("utf-8").to_string();
    let mut signed = false;
    for _ in 0..100 {
        let (ok, out) = ledgerctl(server.listen, &["audit", "heads", "--out", &out_arg]);
        assert!(ok, "{out}");
        let file = std::fs::read_to_string(&saved).unwrap_or_default();
        let heads: Vec<_> = file
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("json line");
                let payload = value["payload"].as_str().expect("hex").to_string();
                (value["revision"].as_u64().expect("revision"), payload)
            })
            .collect();
        if heads.iter().any(|(revision, payload)| {
            let bytes: Vec<u8> = (0..payload.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&payload[i..i + 2], 16).expect("hex"))
                .collect();
            let event = ledger_engine::heads::decode(*revision, &bytes).expect("signature verifies");
            event.heads.iter().any(|h| h.stream == "ledger-0" && h.revision == 7)
        }) {
            signed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(signed, "ledgerd signed the heads within 10 s");
    // Saving again appends nothing already saved.
    let before = std::fs::read_to_string(&saved).expect("saved").lines().count();
    let (ok, out) = ledgerctl(server.listen, &["--json", "audit", "heads", "--out", &out_arg]);
    assert!(ok, "{out}");
    let after = std::fs::read_to_string(&saved).expect("saved").lines().count();
    let reported: serde_json::Value = serde_json::from_str(out.lines().next().expect("line")).expect("json");
    assert_eq!(after, before + reported["saved"].as_u64().expect("saved") as usize);
    let key = reported["public_key"].as_str().expect("key").to_string();
    assert_eq!(key.len(), 64);
    server.stop();

    let data = dir.path().join("data");
    let (code, out) = verify(&data, &["--heads", &out_arg, "--public-key", &key]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed heads match the log"), "{out}");

    // Rewrite ledger-0 from its third transfer on: another metadata, and every later
    // chain hash of the stream recomputed, so the log is consistent with itself.
    let mut records = records(&data);
    let mut previous = None;
    let mut changed = false;
    for record in records.iter_mut().filter(|r| r.stream == "ledger-0") {
        if record.revision == 4 {
            let mut event = codec::decode_event(&record.payload).expect("decode");
            if let EventKind::TransferPosted(movement) = &mut event.kind {
                movement.metadata = "gift".into();
                changed = true;
            }
            record.payload.clear();
            codec::encode_event(&event, &mut record.payload);
        }
        if let Some(previous) = previous {
            record.hash = chain_hash(&previous, record.revision, &record.payload);
        }
        previous = Some(record.hash);
    }
    assert!(changed, "revision 4 of ledger-0 is a posted transfer");
    rewrite(&data, &records);
    // A rewriter with the files also removes what would show the old history: the
    // ledger writer's state store (its claimed file names the old chain hash).
    std::fs::remove_dir_all(data.join("state")).expect("remove the state store");
    let (code, out) = verify(&data, &[]);
    assert_eq!(code, 0, "the plain audit cannot see a consistent rewrite: {out}");
    let (code, out) = verify(&data, &["--heads", &out_arg, "--public-key", &key]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("stream ledger-0 revision"), "{out}");
    assert!(out.contains("differs from the signed"), "{out}");
    // Another key pinned: the saved heads are refused.
    let (code, out) = verify(&data, &["--heads", &out_arg, "--public-key", &"ab".repeat(32)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signed by key"), "{out}");
}
