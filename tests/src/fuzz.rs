//! Fuzz targets: every decoder of bytes from outside (disk or network), each a function
//! of arbitrary bytes that must answer a value or a typed error and never panic, abort
//! or run away with memory. They run three ways: as bounded property tests over
//! arbitrary and mutated-seed bytes in `cargo test` (`tests/tests/fuzz_bounded.rs`),
//! over the seed corpora in `tests/fuzz/corpus/<target>/`, and under AFL++ for as long
//! as one likes (`tests/fuzz/`, see its README).

use std::path::Path;

use ledger_core::codec;
use ledger_engine::store::format;
use ledger_proto::api::v1 as wire;
use prost::Message;

/// A fuzz target: arbitrary bytes in, a panic out only on a bug.
pub type Target = fn(&[u8]);

/// Each target by name.
pub const TARGETS: [(&str, Target); 6] = [
    ("event_codec", event_codec),
    ("segment_scan", segment_scan),
    ("snapshot", snapshot),
    ("read_model_rows", read_model_rows),
    ("packed_transfers", packed_transfers),
    ("grpc_requests", grpc_requests),
];

/// The event codec: what decodes re-encodes to bytes that decode to the same event.
pub fn event_codec(data: &[u8]) {
    if let Ok(event) = codec::decode_event(data) {
        let mut again = Vec::new();
        codec::encode_event(&event, &mut again);
        assert_eq!(codec::decode_event(&again).ok(), Some(event), "a decoded event re-encodes to itself");
    }
}

fn scratch() -> tempfile::TempDir {
    // A failing temporary directory is the test machine's fault, not the input's.
    tempfile::tempdir().expect("a temporary directory")
}

/// The recovery scan over one segment: `data` after a valid segment header (first byte
/// even) or as the whole file (odd).
pub fn segment_scan(data: &[u8]) {
    let dir = scratch();
    let mut file = Vec::with_capacity(data.len() + 16);
    match data.split_first() {
        Some((flag, rest)) if flag % 2 == 0 => {
            file.extend_from_slice(&format::segment_header(0));
            file.extend_from_slice(rest);
        }
        _ => file.extend_from_slice(data),
    }
    std::fs::write(dir.path().join(format::segment_file_name(0)), &file).expect("write the segment");
    let mut records = 0u64;
    let _ = format::scan(dir.path(), |_, _| records += 1);
}

/// A snapshot file: `data` as the body behind a header whose checksum holds (so the
/// state decoder sees it), or as the whole file; loaded as the server loads snapshots.
pub fn snapshot(data: &[u8]) {
    let dir = scratch();
    let events = 3u64;
    let last_hash = [9u8; 32];
    let mut file = Vec::new();
    match data.split_first() {
        Some((flag, body)) if flag % 2 == 0 => {
            file.extend_from_slice(b"LEDGSNP2");
            file.extend_from_slice(&events.to_le_bytes());
            file.extend_from_slice(&last_hash);
            file.extend_from_slice(blake3::hash(body).as_bytes());
            file.extend_from_slice(&(body.len() as u64).to_le_bytes());
            file.extend_from_slice(body);
        }
        _ => file.extend_from_slice(data),
    }
    let name = format!("ledger-0-{events:020}.snap");
    std::fs::write(dir.path().join(name), &file).expect("write the snapshot");
    let _ = ledger_engine::snapshot::load_newest_matching(
        &ledger_engine::store::disk::RealDisk,
        dir.path(),
        "ledger-0",
        |_| Ok(Some(last_hash)),
    );
    let _ = ledger_engine::snapshot::check_sound(&ledger_engine::store::disk::RealDisk, dir.path(), "ledger-0", |_| {
        Some(last_hash)
    });
}

/// The read models' stored rows: movements, accounts, report buckets, history blocks.
pub fn read_model_rows(data: &[u8]) {
    let _ = projections::read_models::decode_any_row(data);
}

/// `CreateTransfersPacked` records, checked as the server checks them.
pub fn packed_transfers(data: &[u8]) {
    let _ =
        ledger_api::convert::packed_transfers(wire::PackedTransfers { records: data.to_vec(), ..Default::default() });
}

/// gRPC request messages: the first byte picks the type; the rest is decoded and,
/// for the ledger's writes, checked as the service checks it.
pub fn grpc_requests(data: &[u8]) {
    let Some((pick, bytes)) = data.split_first() else { return };
    match pick % 8 {
        0 => {
            if let Ok(request) = wire::CreateTransfersRequest::decode(bytes) {
                for (index, transfer) in request.transfers.into_iter().enumerate() {
                    let _ = ledger_api::convert::new_transfer(index, transfer);
                }
            }
        }
        1 => {
            if let Ok(request) = wire::CreateAccountsRequest::decode(bytes) {
                for (index, command) in request.commands.into_iter().enumerate() {
                    let _ = ledger_api::convert::account_command(index, command);
                }
            }
        }
        2 => {
            if let Ok(request) = wire::PackedTransfers::decode(bytes) {
                let _ = ledger_api::convert::packed_transfers(request);
            }
        }
        3 => drop(wire::SendRequest::decode(bytes)),
        4 => drop(wire::RegisterRequest::decode(bytes)),
        5 => drop(wire::GetHistoryRequest::decode(bytes)),
        6 => drop(wire::AddCardRequest::decode(bytes)),
        _ => drop(wire::ListSignedHeadsRequest::decode(bytes)),
    }
}

/// Runs every file of `dir` through `target`; the number run.
pub fn run_corpus(dir: &Path, target: fn(&[u8])) -> usize {
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(_) => return 0,
    };
    entries.sort();
    for path in &entries {
        let bytes = std::fs::read(path).expect("read a corpus file");
        target(&bytes);
    }
    entries.len()
}
