//! Recovery through the real `ledgerd`: a log shortened by recovery, a damaged
//! read-model database, undecodable messages, a poisoned log and health; each test
//! stops the server, damages files as a crash or a bad disk would, and starts it again.

use std::path::{Path, PathBuf};

use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;

mod common;

use common::{authed, Server, ADMIN, READ_ONLY};

type Client = wire::ledger_client::LedgerClient<Channel>;

fn open(id: &str) -> wire::AccountCommand {
    wire::AccountCommand {
        command: Some(wire::account_command::Command::Open(wire::NewAccount {
            id: id.into(),
            currency: "USD".into(),
            code: 1,
            flags: 0,
            owner_id: "7".into(),
        })),
    }
}

async fn transfer(client: &mut Client, id: &str, amount: &str) {
    let transfer = wire::NewTransfer {
        id: id.into(),
        debit_account_id: "1".into(),
        credit_account_id: "2".into(),
        amount: amount.into(),
        currency: "USD".into(),
        code: 1,
        kind: wire::TransferKind::Posted as i32,
        ..Default::default()
    };
    let request = wire::CreateTransfersRequest { transfers: vec![transfer] };
    let results = client.create_transfers(authed(request, ADMIN)).await.expect("transfer").into_inner().results;
    assert!(results[0].ok, "{results:?}");
}

/// Two accounts and five transfers of 100 from 1 to 2, then a clean stop.
async fn five_transfers(dir: &Path) {
    let mut server = Server::start(dir);
    let mut client = server.client().await;
    let accounts = wire::CreateAccountsRequest { commands: vec![open("1"), open("2")] };
    client.create_accounts(authed(accounts, ADMIN)).await.expect("accounts");
    for id in 10..15 {
        transfer(&mut client, &id.to_string(), "100").await;
    }
    assert_eq!(read_model_credits(&mut client).await, "500");
    assert!(server.terminate().success());
}

/// Account 2's posted credits as the writer's state has them.
async fn ledger_credits(client: &mut Client) -> String {
    let request = wire::LookupAccountsRequest { ids: vec!["2".into()] };
    let found = client.lookup_accounts(authed(request, READ_ONLY)).await.expect("lookup").into_inner();
    found.accounts[0].credits_posted.clone()
}

/// Account 2's posted credits as the read models have them.
async fn read_model_credits(client: &mut Client) -> String {
    let request = wire::GetBalanceRequest { account_id: "2".into(), ..Default::default() };
    client.get_balance(authed(request, READ_ONLY)).await.expect("balance").into_inner().credits_posted
}

fn last_segment(data: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .expect("log dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

fn read_models_file(data: &Path) -> PathBuf {
    data.join("projections").join("read-models.redb")
}

fn damaged_copies(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("projections"))
        .expect("projections dir")
        .filter_map(|entry| entry.expect("entry").file_name().into_string().ok())
        .filter(|name| name.starts_with("read-models.redb.damaged-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_follow_a_log_that_recovery_shortened() {
    let dir = tempfile::tempdir().expect("tempdir");
    five_transfers(dir.path()).await;
    // A torn last frame: the segment ends inside the frame of the fifth transfer
    // (ledger-0 revision 6; what a clean stop appended after it goes too).
    let data = dir.path().join("data");
    let at = frame_offset(&data, frames_before_ledger_revision(&data, 6));
    let file = std::fs::OpenOptions::new().write(true).open(last_segment(&data)).expect("open segment");
    file.set_len(at as u64 + 10).expect("truncate");
    drop(file);

    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    assert_eq!(ledger_credits(&mut client).await, "400", "recovery cut the fifth transfer");
    assert_eq!(read_model_credits(&mut client).await, "400", "the read models no longer show it");
    transfer(&mut client, "16", "7").await;
    assert_eq!(ledger_credits(&mut client).await, "407");
    assert_eq!(read_model_credits(&mut client).await, "407", "the new event at the reused position is applied");
    assert!(server.terminate().success());

    // And after another restart, with nothing cut, they are used as they are.
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    assert_eq!(read_model_credits(&mut client).await, "407");
}

/// A clean stop seals the read models (beside them, their length and modification
/// time once closed); a start takes the seal (skipping the whole-file check if the file
/// is as sealed), so a run that is killed leaves none and the next start checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_seals_the_read_models_and_a_start_takes_the_seal() {
    let dir = tempfile::tempdir().expect("tempdir");
    five_transfers(dir.path()).await;
    let beside = |suffix: &str| {
        let mut name = read_models_file(&dir.path().join("data")).into_os_string();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    let (seal, open) = (beside(".closed"), beside(".open"));
    assert!(seal.exists(), "a clean stop seals the read models");
    assert!(!open.exists(), "and leaves no open marker");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    assert_eq!(read_model_credits(&mut client).await, "500");
    assert!(!seal.exists(), "a running server leaves no seal");
    assert!(open.exists(), "a running server marks the read models open");
    server.child.kill().expect("kill");
    server.child.wait().expect("wait");
    assert!(!seal.exists(), "a killed server leaves no seal");
    assert!(open.exists(), "a killed server leaves the open marker");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    assert_eq!(read_model_credits(&mut client).await, "500");
    transfer(&mut client, "20", "1").await;
    assert_eq!(read_model_credits(&mut client).await, "501");
    assert!(server.terminate().success());
    assert!(seal.exists(), "sealed again at the clean stop");
    assert!(!open.exists());
}

/// After a kill the file is not checked (the open marker says it was open), but one
/// damaged since, that redb will not open, is still moved aside and rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_file_damaged_after_a_kill_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    five_transfers(dir.path()).await;
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    assert_eq!(read_model_credits(&mut client).await, "500");
    server.child.kill().expect("kill");
    server.child.wait().expect("wait");
    cut_read_models_to_half(dir.path());
    rebuilt_after_damage(dir.path()).await;
}

/// Starts on the damaged read models, checks they were moved aside and rebuilt, and
/// that a clean restart then uses the rebuilt ones.
async fn rebuilt_after_damage(dir: &Path) {
    let data = dir.join("data");
    let mut server = Server::start(dir);
    let mut client = server.client().await;
    assert_eq!(read_model_credits(&mut client).await, "500", "rebuilt from the log");
    assert_eq!(damaged_copies(&data).len(), 1, "the damaged file is kept aside");
    transfer(&mut client, "20", "1").await;
    assert_eq!(read_model_credits(&mut client).await, "501");
    assert!(server.terminate().success());
    let server = Server::start(dir);
    let mut client = server.client().await;
    assert_eq!(read_model_credits(&mut client).await, "501");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_file_with_a_byte_flipped_in_every_page_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    five_transfers(dir.path()).await;
    let path = read_models_file(&dir.path().join("data"));
    let mut bytes = std::fs::read(&path).expect("read models");
    // One byte in the middle of every 4 KiB page, past redb's file header.
    for at in (4096 + 2048..bytes.len()).step_by(4096) {
        bytes[at] ^= 0x5a;
    }
    std::fs::write(&path, &bytes).expect("damage");
    rebuilt_after_damage(dir.path()).await;
}

fn cut_read_models_to_half(dir: &Path) {
    let path = read_models_file(&dir.join("data"));
    let length = std::fs::metadata(&path).expect("read models").len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(length / 2).expect("truncate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_file_cut_to_half_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    five_transfers(dir.path()).await;
    cut_read_models_to_half(dir.path());
    rebuilt_after_damage(dir.path()).await;
}

/// A power loss while the read models' file was being created (found by the
/// simulator, `vopr`): the file has its length but not yet redb's header. It used to
/// stop every start ("could not be checked"); it is a damaged file like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_file_whose_creation_was_cut_short_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    five_transfers(dir.path()).await;
    let path = read_models_file(&dir.path().join("data"));
    let length = std::fs::metadata(&path).expect("read models").len();
    std::fs::write(&path, vec![0u8; length as usize]).expect("zeros, as a cut-short creation leaves");
    rebuilt_after_damage(dir.path()).await;
}

/// A codec that sends the given bytes as the request message, whatever they are.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = prost::bytes::Buf::chunk(src).to_vec();
        prost::bytes::Buf::advance(src, bytes.len());
        Ok(Some(bytes))
    }
}

/// Sends `bytes` as the message of `method` of `ledger.v1.Ledger` in gRPC framing.
async fn send_raw(server: &Server, method: &str, bytes: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let channel = Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = format!("/ledger.v1.Ledger/{method}").parse().expect("path");
    grpc.unary(authed(bytes, ADMIN), path, RawCodec).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_oversized_messages_get_typed_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    // transfers (field 1) holding a NewTransfer whose id (field 1, a string) is not UTF-8.
    let not_utf8 = vec![0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
    // transfers announcing 16 bytes and carrying 2.
    let truncated = vec![0x0a, 0x10, 0x0a, 0x00];
    let garbage = vec![0xff; 16];
    for (what, bytes) in [("not UTF-8", not_utf8), ("truncated", truncated), ("garbage", garbage)] {
        let status = send_raw(&server, "CreateTransfers", bytes).await.expect_err(what);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
    }
    let huge = vec![0u8; 20 << 20];
    let status = send_raw(&server, "CreateTransfers", huge).await.expect_err("20 MiB");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // An OUT_OF_RANGE of the service itself keeps its code.
    let mut client = server.client().await;
    let beyond = wire::GetBalanceRequest { account_id: "1".into(), min_position: 1 << 40, ..Default::default() };
    let status = client.get_balance(authed(beyond, READ_ONLY)).await.expect_err("beyond the log");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    // And the server goes on answering well-formed calls.
    let accounts = wire::CreateAccountsRequest { commands: vec![open("1")] };
    client.create_accounts(authed(accounts, ADMIN)).await.expect("accounts");
}

async fn health_of(server: &Server) -> Vec<(&'static str, i32)> {
    let channel = Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut statuses = Vec::new();
    for service in ["", "ledger.v1.Ledger", "ledger.v1.Users", "ledger.audit"] {
        let check = tonic_health::pb::HealthCheckRequest { service: service.into() };
        statuses.push((service, health.check(check).await.expect("health").into_inner().status));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_log_turns_health_not_serving_and_the_exit_status_non_zero() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let dir = tempfile::tempdir().expect("tempdir");
    let trigger = dir.path().join("disk-fails");
    let env = [("LEDGERD_TEST_FAIL_SYNCS_ONCE_EXISTS", trigger.as_os_str())];
    let mut server = Server::start_with_env(dir.path(), &[], &env);
    let mut client = server.client().await;
    let accounts = wire::CreateAccountsRequest { commands: vec![open("1"), open("2")] };
    client.create_accounts(authed(accounts, ADMIN)).await.expect("accounts");
    transfer(&mut client, "10", "100").await;
    let serving = ServingStatus::Serving as i32;
    assert!(health_of(&server).await.iter().all(|(_, status)| *status == serving));

    // The disk fails the next fdatasync (EIO).
    std::fs::write(&trigger, b"").expect("trigger");
    let failed = wire::NewTransfer {
        id: "11".into(),
        debit_account_id: "1".into(),
        credit_account_id: "2".into(),
        amount: "100".into(),
        currency: "USD".into(),
        code: 1,
        kind: wire::TransferKind::Posted as i32,
        ..Default::default()
    };
    let request = wire::CreateTransfersRequest { transfers: vec![failed] };
    assert!(client.create_transfers(authed(request, ADMIN)).await.is_err(), "the append failed");
    let not_serving = ServingStatus::NotServing as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let statuses = health_of(&server).await;
        if statuses.iter().all(|(_, status)| *status == not_serving) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "health still says {statuses:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!server.terminate().success(), "a stop in a failed state exits non-zero");

    // A restart recovers from the disk: what was acknowledged is there (the failed
    // transfer was written before its sync failed, so it may be there too: it was never
    // acknowledged either way), the read models agree, and health is back.
    std::fs::remove_file(&trigger).expect("disk replaced");
    let server = Server::start_with_env(dir.path(), &[], &env);
    let mut client = server.client().await;
    let credits = ledger_credits(&mut client).await;
    assert!(credits == "100" || credits == "200", "{credits}");
    assert_eq!(read_model_credits(&mut client).await, credits);
    assert!(health_of(&server).await.iter().all(|(_, status)| *status == serving));
}

/// Cuts the last segment after its first `keep` frames: a truncation at a frame
/// boundary, which the scan cannot tell from a shorter log.
fn keep_frames(data: &Path, keep: usize) {
    let at = frame_offset(data, keep);
    let file = std::fs::OpenOptions::new().write(true).open(last_segment(data)).expect("open segment");
    file.set_len(at as u64).expect("truncate");
}

/// The offset in the last segment of its frame number `index` (0-based), which exists.
fn frame_offset(data: &Path, index: usize) -> usize {
    let bytes = std::fs::read(last_segment(data)).expect("segment");
    let mut at = 16; // the segment header
    for _ in 0..index {
        let body = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("frame header")) as usize;
        at += 16 + body;
    }
    assert!(at < bytes.len(), "there are frames after the first {index}");
    at
}

/// Runs `ledgerd` on `dir` expecting it to refuse to start: its exit status and what it
/// said on standard error.
fn refused_start(dir: &Path, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ledgerd"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(extra)
        .env("LEDGERD_ADMIN_TOKEN", "admin-token-0123456789abcdef")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ledgerd");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ledgerd started on a log that lost durable events");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_shorter_than_the_state_store_claims_is_refused_and_fails_the_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let accounts = wire::CreateAccountsRequest { commands: vec![open("1"), open("2")] };
    client.create_accounts(authed(accounts, ADMIN)).await.expect("accounts");
    for id in 10..15 {
        transfer(&mut client, &id.to_string(), "100").await;
    }
    assert!(server.terminate().success());
    // Two account events, then one per transfer: a clean stop hands everything to the
    // state store, which claims them all. Keep the log up to one event short of it;
    // the read models are dropped, so only the state store's claim proves the log had
    // more.
    let claimed = ledger_engine::state_store::read_claimed(&data.join("state"), "ledger-0").expect("sound");
    let events = claimed.expect("the stop's hand-off claims its events").events;
    assert_eq!(events, 7, "two accounts and five transfers");
    keep_frames(&data, frames_before_ledger_revision(&data, events - 1));
    std::fs::remove_dir_all(data.join("projections")).expect("drop the read models");

    let (status, said) = refused_start(dir.path(), &[]);
    assert!(!status.success(), "{said}");
    assert!(said.contains("lost durable events"), "{said}");
    let (_, snapshot_dir) = ledger_engine::audit::data_dir_layout(&data);
    let audit = ledger_engine::audit::verify(&data.join("log"), Some(&snapshot_dir));
    assert!(
        matches!(audit, Err(ledger_engine::audit::AuditFailure::LogShorterThanSnapshot { .. })),
        "the audit fails: {audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_shorter_than_the_read_models_checkpoint_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    five_transfers(dir.path()).await;
    // The two account events and two of the five transfers remain.
    keep_frames(&data, frames_before_ledger_revision(&data, 4));
    let (status, said) = refused_start(dir.path(), &[]);
    assert!(!status.success(), "{said}");
    assert!(said.contains("lost durable events"), "{said}");
}

/// How many frames of the last segment come before the first frame holding the
/// ledger stream's revision `revision` or a later one (each transfer here is one
/// frame of its own).
fn frames_before_ledger_revision(data: &Path, revision: u64) -> usize {
    let bytes = std::fs::read(last_segment(data)).expect("segment");
    let (mut at, mut frames) = (16, 0);
    while at < bytes.len() {
        let body = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("frame header")) as usize;
        // The frame's first record: u32 length, u32 crc, u64 position, u64 revision,
        // [32] hash, u8 stream length, u8 type length, stream.
        let record = at + 16 + 8;
        let first = u64::from_le_bytes(bytes[record + 8..record + 16].try_into().expect("revision"));
        let stream_len = bytes[record + 48] as usize;
        let stream = &bytes[record + 50..record + 50 + stream_len];
        if stream.starts_with(b"ledger-") && first >= revision {
            return frames;
        }
        frames += 1;
        at += 16 + body;
    }
    panic!("no frame holds ledger revision {revision}");
}
