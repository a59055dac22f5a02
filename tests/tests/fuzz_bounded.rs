//! The fuzz targets (`ledger_tests::fuzz`) as bounded property tests: each over its seed
//! corpus, over arbitrary bytes, and over mutations of its seeds. A panic is a failure
//! (proptest prints the shrunk input); AFL++ runs the same targets without bounds
//! (`tests/fuzz/README.md`). Write the seed corpora again with
//! `LEDGER_WRITE_CORPUS=1 cargo test -p ledger-tests --test fuzz_bounded seeds_run`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger_core::codec;
use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::format;
use ledger_engine::writer::{Ledger, LedgerConfig};
use ledger_proto::api::v1 as wire;
use ledger_tests::fuzz::{self, TARGETS};
use proptest::prelude::*;
use prost::Message;

/// Arbitrary inputs per target and run.
const CASES: u32 = 512;
/// Longest arbitrary input, in bytes.
const INPUT_BYTES_MAX: usize = 4096;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(target)
}

fn target(name: &str) -> fn(&[u8]) {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).expect("a target")
}

fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

/// A small real log with a snapshot of its first three events: (segment bytes, snapshot bytes).
fn real_log() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().expect("dir");
    let (store, _) = EmbeddedStore::open(dir.path().join("log"), EmbeddedOptions::default()).expect("open");
    let config = LedgerConfig {
        snapshot_dir: Some(dir.path().join("snapshots")),
        snapshot_interval_events: 3,
        ..LedgerConfig::default()
    };
    let ledger = Ledger::open(Arc::new(store), config).expect("ledger");
    let open = |id| {
        AccountCommand::Open(NewAccount {
            id: AccountId(id),
            currency: usd(),
            code: 1,
            flags: AccountFlags(0),
            owner_id: 0,
        })
    };
    assert!(ledger.create_accounts_blocking(vec![open(1), open(2)]).expect("accounts").iter().all(Result::is_ok));
    let transfer = NewTransfer {
        id: TransferId(1),
        debit_account_id: AccountId(1),
        credit_account_id: AccountId(2),
        amount: 250,
        currency: Some(usd()),
        code: 1,
        metadata: "rent".into(),
        linked: false,
        kind: TransferKind::Posted,
    };
    assert!(ledger.create_transfers_blocking(vec![transfer]).expect("transfer")[0].is_ok());
    ledger.close();
    let segment = std::fs::read(dir.path().join("log").join(format::segment_file_name(0))).expect("segment");
    let snapshot = std::fs::read_dir(dir.path().join("snapshots"))
        .expect("snapshots")
        .filter_map(Result::ok)
        .map(|e| std::fs::read(e.path()).expect("snapshot"))
        .find(|bytes| bytes.len() > 88)
        .expect("a snapshot of three events");
    (segment, snapshot)
}

/// Seeds per target, from the real encoders.
fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let (segment, snapshot) = real_log();
    let events: Vec<Vec<u8>> = {
        let mut out = Vec::new();
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(format::segment_file_name(0)), &segment).expect("write");
        format::scan(dir.path(), |record, _| out.push(record.payload)).expect("scan");
        out
    };
    let with_flag = |flag: u8, bytes: &[u8]| [&[flag][..], bytes].concat();
    let record = {
        let mut out = Vec::new();
        ledger_proto::packed::TransferRecord {
            id: 5,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 100,
            pending_id: 0,
            timeout_ns: 0,
            code: 1,
            kind: 0,
            linked: false,
            currency: *b"USD",
        }
        .write(&mut out);
        out
    };
    let transfers = wire::CreateTransfersRequest {
        transfers: vec![wire::NewTransfer {
            id: "9".into(),
            debit_account_id: "1".into(),
            credit_account_id: "2".into(),
            amount: "100".into(),
            currency: "USD".into(),
            code: 1,
            ..Default::default()
        }],
    };
    let send = wire::SendRequest {
        idempotency_key: "k".into(),
        receiver_email: "bob@example.com".into(),
        amount: "1.00".into(),
        currency: "USD".into(),
        ..Default::default()
    };
    vec![
        ("event_codec", events.clone()),
        ("segment_scan", vec![with_flag(0, &segment[16..]), with_flag(1, &segment)]),
        ("snapshot", vec![with_flag(0, &snapshot[88..]), with_flag(1, &snapshot)]),
        (
            "read_model_rows",
            vec![vec![0; 64], [&1u16.to_le_bytes()[..], &[0; 10][..], &[4, 0][..], &[1, 2, 3, 4][..]].concat()],
        ),
        ("packed_transfers", vec![record.clone(), [record.clone(), record].concat()]),
        ("grpc_requests", vec![with_flag(0, &transfers.encode_to_vec()), with_flag(3, &send.encode_to_vec())]),
    ]
}

#[test]
fn seeds_run_and_the_committed_corpora_run() {
    let write = std::env::var_os("LEDGER_WRITE_CORPUS").is_some();
    for (name, seeds) in seeds() {
        let run = target(name);
        assert!(!seeds.is_empty(), "{name} has seeds");
        for (n, seed) in seeds.iter().enumerate() {
            run(seed);
            if write {
                std::fs::create_dir_all(corpus_dir(name)).expect("corpus dir");
                std::fs::write(corpus_dir(name).join(format!("seed-{n}")), seed).expect("write seed");
            }
        }
        assert!(fuzz::run_corpus(&corpus_dir(name), run) > 0, "tests/fuzz/corpus/{name} holds seeds");
    }
}

/// A seed with a few bytes flipped, inserted or removed.
fn mutated(seed: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for &(at, kind, value) in edits {
        let at = if out.is_empty() { 0 } else { at % out.len() };
        match kind % 3 {
            0 if !out.is_empty() => out[at] ^= value | 1,
            1 => out.insert(at, value),
            _ if !out.is_empty() => {
                out.remove(at);
            }
            _ => out.push(value),
        }
    }
    out
}

macro_rules! bounded {
    ($name:ident) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

                #[test]
                fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..INPUT_BYTES_MAX)) {
                    fuzz::$name(&data);
                }

                #[test]
                fn mutated_seeds(
                    pick in any::<usize>(),
                    edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
                ) {
                    let dir = corpus_dir(stringify!($name));
                    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("corpus").filter_map(Result::ok).map(|e| e.path()).collect();
                    files.sort();
                    let seed = std::fs::read(&files[pick % files.len()]).expect("seed");
                    fuzz::$name(&mutated(&seed, &edits));
                }
            }
        }
    };
}

bounded!(event_codec);
bounded!(segment_scan);
bounded!(snapshot);
bounded!(read_model_rows);
bounded!(packed_transfers);
bounded!(grpc_requests);

#[test]
fn every_target_has_a_bounded_test() {
    assert_eq!(TARGETS.len(), 6, "a new target needs its bounded!(…) line above");
}

#[test]
fn a_decoded_event_is_the_encoded_one() {
    // The codec target's own assertion holds on a real event.
    for payload in seeds().into_iter().find(|(n, _)| *n == "event_codec").expect("events").1 {
        let event = codec::decode_event(&payload).expect("a real event decodes");
        let mut again = Vec::new();
        codec::encode_event(&event, &mut again);
        assert_eq!(again, payload);
    }
}
