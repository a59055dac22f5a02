//! Integration tests that start the real `ledgerd` binary on a free port and drive it
//! through the generated client: every method, the error codes, authentication per
//! role, idempotent retries over a new connection, health and reflection, metrics, and
//! a graceful shutdown with calls in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ledger_core::domain::METADATA_BYTES_MAX;
use ledger_proto::api::v1 as wire;
use ledger_proto::packed::TransferRecord;
use tonic::transport::Channel;
use tonic::{Code, Request};

mod common;

use common::{authed, Server, ADMIN, AUDITOR, READ_ONLY, SERVICE};

fn open(id: &str, flags: u32) -> wire::AccountCommand {
    wire::AccountCommand {
        command: Some(wire::account_command::Command::Open(wire::NewAccount {
            id: id.into(),
            currency: "USD".into(),
            code: 1,
            flags,
            owner_id: "7".into(),
        })),
    }
}

fn posted(id: &str, debit: &str, credit: &str, amount: &str) -> wire::NewTransfer {
    wire::NewTransfer {
        id: id.into(),
        debit_account_id: debit.into(),
        credit_account_id: credit.into(),
        amount: amount.into(),
        currency: "USD".into(),
        code: 1,
        kind: wire::TransferKind::Posted as i32,
        ..Default::default()
    }
}

fn resolve(id: &str, pending_id: &str, amount: &str, kind: wire::TransferKind) -> wire::NewTransfer {
    wire::NewTransfer {
        id: id.into(),
        pending_id: pending_id.into(),
        amount: amount.into(),
        kind: kind as i32,
        ..Default::default()
    }
}

fn codes(results: &[wire::ItemResult]) -> Vec<&str> {
    results.iter().map(|r| r.code.as_str()).collect()
}

/// blake3(previous || revision || payload), through the chain function whose formula
/// a unit test in ledger-core checks against plain blake3 of the concatenation.
fn chained(previous: &[u8; 32], revision: u64, payload: &[u8]) -> Vec<u8> {
    ledger_core::chain::chain_hash(previous, revision, payload).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_with_its_results_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;

    let accounts =
        wire::CreateAccountsRequest { commands: vec![open("1", 0), open("2", 1), open("3", 0), open("2", 0)] };
    let results = client.create_accounts(authed(accounts, ADMIN)).await.expect("accounts").into_inner().results;
    assert_eq!(codes(&results), ["CREATED", "CREATED", "CREATED", "EXISTS_WITH_DIFFERENT_FIELDS"]);

    // One bad unlinked transfer never hides the others' results.
    let pending =
        |id, amount| wire::NewTransfer { kind: wire::TransferKind::Pending as i32, ..posted(id, "1", "2", amount) };
    let transfers = vec![
        posted("10", "1", "2", "500"),
        posted("11", "2", "1", "501"), // account 2 may not go below zero
        posted("12", "1", "3", "7"),
        pending("13", "40"),
        pending("14", "30"),
    ];
    let request = wire::CreateTransfersRequest { transfers };
    let results = client.create_transfers(authed(request, SERVICE)).await.expect("transfers").into_inner().results;
    assert_eq!(codes(&results), ["CREATED", "EXCEEDS_CREDITS", "CREATED", "CREATED", "CREATED"]);
    let posted_at = results[0].timestamp_ns;
    let transfers = vec![
        resolve("15", "13", "25", wire::TransferKind::PostPending),
        resolve("16", "14", "", wire::TransferKind::VoidPending),
        resolve("17", "14", "", wire::TransferKind::VoidPending),
        wire::NewTransfer { linked: true, ..posted("18", "1", "2", "1") },
        posted("19", "1", "404", "1"),
    ];
    let request = wire::CreateTransfersRequest { transfers };
    let results = client.create_transfers(authed(request, ADMIN)).await.expect("resolve").into_inner().results;
    let expected =
        ["CREATED", "CREATED", "PENDING_TRANSFER_ALREADY_VOIDED", "LINKED_EVENT_FAILED", "CREDIT_ACCOUNT_NOT_FOUND"];
    assert_eq!(codes(&results), expected);

    let ids = vec!["1".into(), "9".into(), "2".into()];
    let found = client.lookup_accounts(authed(wire::LookupAccountsRequest { ids }, READ_ONLY)).await.expect("lookup");
    let found = found.into_inner();
    assert_eq!(found.not_found, ["9"]);
    let one = &found.accounts[0];
    assert_eq!((one.id.as_str(), one.debits_posted.as_str(), one.debits_pending.as_str()), ("1", "532", "0"));
    assert_eq!(found.accounts[1].credits_posted, "525");

    let ids = vec!["13".into(), "11".into()];
    let transfers =
        client.lookup_transfers(authed(wire::LookupTransfersRequest { ids }, AUDITOR)).await.expect("lookup");
    let transfers = transfers.into_inner();
    assert_eq!(transfers.not_found, ["11"]);
    assert_eq!(transfers.transfers[0].pending_status, wire::PendingStatus::Posted as i32);

    // History pages and balances as of a time.
    let mut cursor = String::new();
    let mut movements = Vec::new();
    loop {
        let request = wire::ListAccountTransfersRequest {
            account_id: "1".into(),
            limit: 2,
            cursor: cursor.clone(),
            ..Default::default()
        };
        let page = client.list_account_transfers(authed(request, READ_ONLY)).await.expect("history").into_inner();
        movements.extend(page.movements);
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let ids: Vec<&str> = movements.iter().map(|m| m.transfer_id.as_str()).collect();
    assert_eq!(ids, ["10", "12", "13", "14", "15", "16"]);
    let balance = |as_of_ns| wire::GetBalanceRequest { account_id: "2".into(), as_of_ns, ..Default::default() };
    let before = client.get_balance(authed(balance(posted_at - 1), READ_ONLY)).await.expect("balance").into_inner();
    assert_eq!(before.credits_posted, "0");
    let at = client.get_balance(authed(balance(posted_at), READ_ONLY)).await.expect("balance").into_inner();
    assert_eq!(at.credits_posted, "500");
    let now = client.get_balance(authed(balance(0), READ_ONLY)).await.expect("balance").into_inner();
    assert_eq!(now.credits_posted, "525");

    // The event stream: every event, chained.
    let request = authed(wire::StreamEventsRequest { from_position: 0 }, AUDITOR);
    let mut stream = client.stream_events(request).await.expect("stream").into_inner();
    let mut previous = [0u8; 32];
    for position in 0..9u64 {
        let event = stream.message().await.expect("message").expect("event");
        assert_eq!(event.position, position);
        assert_eq!(event.hash, chained(&previous, event.revision, &event.payload));
        assert!(event.event.is_some());
        previous.copy_from_slice(&event.hash);
    }

    // Malformed and oversized requests: INVALID_ARGUMENT, nothing changes.
    let bad =
        wire::CreateTransfersRequest { transfers: vec![posted("20", "1", "2", "5"), posted("21", "1", "2", "1.5")] };
    let status = client.create_transfers(authed(bad, ADMIN)).await.expect_err("malformed");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("transfers[1].amount"), "{}", status.message());
    let empty = client.create_transfers(authed(wire::CreateTransfersRequest::default(), ADMIN)).await;
    assert_eq!(empty.expect_err("empty").code(), Code::InvalidArgument);
    let many: Vec<_> = (0..10_001).map(|n| posted(&(1_000 + n).to_string(), "1", "2", "1")).collect();
    let status = client.create_transfers(authed(wire::CreateTransfersRequest { transfers: many }, ADMIN)).await;
    assert_eq!(status.expect_err("too many").code(), Code::InvalidArgument);
    let ids = vec!["20".into(), "-3".into()];
    let lookup = client.lookup_transfers(authed(wire::LookupTransfersRequest { ids }, ADMIN)).await;
    assert_eq!(lookup.expect_err("bad id").code(), Code::InvalidArgument);
    let ids = vec!["20".into()];
    let transfers = client.lookup_transfers(authed(wire::LookupTransfersRequest { ids }, ADMIN)).await.expect("lookup");
    assert_eq!(transfers.into_inner().not_found, ["20"], "a rejected request must not have written anything");
    let unknown = wire::ListAccountTransfersRequest { account_id: "404".into(), ..Default::default() };
    assert_eq!(
        client.list_account_transfers(authed(unknown, ADMIN)).await.expect_err("unknown").code(),
        Code::NotFound
    );
    let unknown = wire::GetBalanceRequest { account_id: "404".into(), ..Default::default() };
    assert_eq!(client.get_balance(authed(unknown, ADMIN)).await.expect_err("unknown").code(), Code::NotFound);
    let limit = wire::ListAccountTransfersRequest { account_id: "1".into(), limit: 5_000, ..Default::default() };
    assert_eq!(
        client.list_account_transfers(authed(limit, ADMIN)).await.expect_err("limit").code(),
        Code::InvalidArgument
    );
}

fn record(id: u128, debit: u128, credit: u128, amount: u128) -> TransferRecord {
    TransferRecord {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        currency: *b"USD",
        code: 1,
        kind: wire::TransferKind::Posted as u8,
        ..Default::default()
    }
}

fn packed(records: &[TransferRecord], metadata: &[&str]) -> wire::PackedTransfers {
    let mut bytes = Vec::new();
    for record in records {
        record.write(&mut bytes);
    }
    wire::PackedTransfers { records: bytes, metadata: metadata.iter().map(|m| m.to_string()).collect() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_transfers_answer_as_the_string_form_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let accounts = wire::CreateAccountsRequest { commands: vec![open("1", 0), open("2", 1), open("3", 0)] };
    client.create_accounts(authed(accounts, ADMIN)).await.expect("accounts");

    let pending = |id, amount| TransferRecord { kind: wire::TransferKind::Pending as u8, ..record(id, 1, 2, amount) };
    let resolve = |id, pending_id, kind: wire::TransferKind| TransferRecord {
        id,
        pending_id,
        kind: kind as u8,
        ..TransferRecord::default()
    };
    let records = [
        record(10, 1, 2, 500),
        record(11, 2, 1, 10_000), // account 2 may not go below zero
        pending(13, 40),
        pending(14, 30),
        TransferRecord { amount: 25, ..resolve(15, 13, wire::TransferKind::PostPending) },
        resolve(16, 14, wire::TransferKind::VoidPending),
        TransferRecord { linked: true, ..record(18, 1, 2, 1) },
        record(19, 1, 404, 1),
    ];
    let metadata = ["", "", "hold 13", "", "", "", "", ""];
    let request = || packed(&records, &metadata);
    let first = client.create_transfers_packed(authed(request(), SERVICE)).await.expect("packed").into_inner();
    assert_eq!(first.status, [0, 2, 0, 0, 0, 0, 2, 2]);
    let failures: Vec<(u32, &str)> = first.failures.iter().map(|f| (f.index, f.code.as_str())).collect();
    assert_eq!(failures, [(1, "EXCEEDS_CREDITS"), (6, "LINKED_EVENT_FAILED"), (7, "CREDIT_ACCOUNT_NOT_FOUND")]);
    assert!(first.failures.iter().all(|f| !f.ok && !f.message.is_empty()));
    assert_eq!(first.timestamps_ns.len(), records.len());
    for (status, timestamp) in first.status.iter().zip(&first.timestamps_ns) {
        assert_eq!(*status == 0, *timestamp > 0, "a timestamp for each committed transfer only");
    }

    // What was committed reads back as sent; a retry changes nothing and answers with
    // the original timestamps.
    let ids = vec!["10".into(), "13".into(), "15".into(), "11".into(), "18".into()];
    let found = client.lookup_transfers(authed(wire::LookupTransfersRequest { ids }, AUDITOR)).await.expect("lookup");
    let found = found.into_inner();
    assert_eq!(found.not_found, ["11", "18"]);
    let [ten, thirteen, fifteen] = &found.transfers[..] else { panic!("{:?}", found.transfers) };
    assert_eq!((ten.amount.as_str(), ten.currency.as_str(), ten.code), ("500", "USD", 1));
    assert_eq!((thirteen.metadata.as_str(), thirteen.pending_status), ("hold 13", wire::PendingStatus::Posted as i32));
    assert_eq!((fifteen.pending_id.as_str(), fifteen.amount.as_str()), ("13", "25"));
    let again = client.create_transfers_packed(authed(request(), SERVICE)).await.expect("retry").into_inner();
    assert_eq!(again.status, [1, 2, 1, 1, 1, 1, 2, 2]);
    for (index, status) in again.status.iter().enumerate() {
        if *status == 1 {
            assert_eq!(again.timestamps_ns[index], first.timestamps_ns[index]);
        }
    }
    let ids = vec!["1".into(), "2".into()];
    let balances = client.lookup_accounts(authed(wire::LookupAccountsRequest { ids }, ADMIN)).await.expect("lookup");
    let balances = balances.into_inner().accounts;
    assert_eq!((balances[0].debits_posted.as_str(), balances[1].credits_posted.as_str()), ("525", "525"));

    // Malformed records: INVALID_ARGUMENT naming what is wrong, and nothing is written.
    let good = record(30, 1, 2, 1);
    let mut cut = packed(&[good, good], &[]);
    cut.records.pop();
    let mut reserved = packed(&[good, record(31, 1, 2, 1)], &[]);
    reserved.records[128 + 100] = 7;
    let cases = [
        (cut, "records: 255 bytes"),
        (reserved, "transfers[1]: bytes 95..128 are reserved"),
        (packed(&[good, TransferRecord { kind: 9, ..good }], &[]), "transfers[1].kind: unknown kind 9"),
        (packed(&[TransferRecord { currency: *b"XYZ", ..good }], &[]), "transfers[0].currency: unknown currency"),
        (packed(&[TransferRecord { currency: [0xff; 3], ..good }], &[]), "transfers[0].currency: not ASCII"),
        (packed(&[good, good], &["one"]), "metadata: 1 entries for 2 records"),
        (packed(&[TransferRecord { timeout_ns: 5, ..good }], &[]), "transfers[0].timeout_ns"),
        (packed(&[TransferRecord { pending_id: 5, ..good }], &[]), "transfers[0].pending_id: only post and void"),
        (packed(&[resolve(32, 0, wire::TransferKind::VoidPending)], &[]), "transfers[0].pending_id: post and void"),
        (packed(&[good], &[&"x".repeat(METADATA_BYTES_MAX + 1)]), "transfers[0].metadata: at most"),
    ];
    for (request, expected) in cases {
        let status = client.create_transfers_packed(authed(request, ADMIN)).await.expect_err(expected);
        assert_eq!(status.code(), Code::InvalidArgument, "{expected}");
        assert!(status.message().contains(expected), "{expected}: {}", status.message());
    }
    let many: Vec<_> = (0..10_001).map(|n| record(1_000 + n, 1, 2, 1)).collect();
    let status = client.create_transfers_packed(authed(packed(&many, &[]), ADMIN)).await.expect_err("too many");
    assert_eq!(status.code(), Code::InvalidArgument);
    let empty = client.create_transfers_packed(authed(wire::PackedTransfers::default(), ADMIN)).await;
    assert_eq!(empty.expect_err("empty").code(), Code::InvalidArgument);
    let ids = vec!["30".into(), "1000".into()];
    let found = client.lookup_transfers(authed(wire::LookupTransfersRequest { ids }, ADMIN)).await.expect("lookup");
    assert_eq!(found.into_inner().not_found, ["30", "1000"], "a refused request must not have written anything");

    // The roles of CreateTransfers.
    let status = client.create_transfers_packed(Request::new(packed(&[good], &[]))).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    for token in [AUDITOR, READ_ONLY] {
        let status = client.create_transfers_packed(authed(packed(&[good], &[]), token)).await.expect_err("no writes");
        assert_eq!(status.code(), Code::PermissionDenied, "{token}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_roles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let create = || wire::CreateAccountsRequest { commands: vec![open("1", 0)] };
    let status = client.create_accounts(Request::new(create())).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client.create_accounts(authed(create(), "not-a-known-token-at-all")).await.expect_err("bad token");
    assert_eq!(status.code(), Code::Unauthenticated);
    for token in [AUDITOR, READ_ONLY] {
        let status = client.create_accounts(authed(create(), token)).await.expect_err("no writes");
        assert_eq!(status.code(), Code::PermissionDenied, "{token}");
        let transfers = wire::CreateTransfersRequest { transfers: vec![posted("1", "1", "2", "1")] };
        let status = client.create_transfers(authed(transfers, token)).await.expect_err("no writes");
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    client.create_accounts(authed(create(), SERVICE)).await.expect("service writes");
    let lookup = || wire::LookupAccountsRequest { ids: vec!["1".into()] };
    for token in [ADMIN, SERVICE, AUDITOR, READ_ONLY] {
        client.lookup_accounts(authed(lookup(), token)).await.expect("everyone reads");
    }
    let stream = || wire::StreamEventsRequest { from_position: 0 };
    let status = client.stream_events(authed(stream(), READ_ONLY)).await.expect_err("read-only does not stream");
    assert_eq!(status.code(), Code::PermissionDenied);
    client.stream_events(authed(stream(), AUDITOR)).await.expect("auditor streams");
    // With a tokens file, no admin token is generated.
    let data: Vec<_> =
        std::fs::read_dir(dir.path().join("data")).expect("data").map(|e| e.expect("entry").file_name()).collect();
    assert!(!data.iter().any(|name| name == "admin.token"), "{data:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_over_a_new_connection_returns_the_original_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let accounts = wire::CreateAccountsRequest { commands: vec![open("1", 0), open("2", 0)] };
    client.create_accounts(authed(accounts, ADMIN)).await.expect("accounts");
    let request =
        || wire::CreateTransfersRequest { transfers: vec![posted("5", "1", "2", "10"), posted("6", "1", "2", "20")] };
    let first = client.create_transfers(authed(request(), ADMIN)).await.expect("first").into_inner().results;
    drop(client); // The connection is gone; the caller does not know whether it landed.
    let mut client = server.client().await;
    let again = client.create_transfers(authed(request(), ADMIN)).await.expect("retry").into_inner().results;
    assert_eq!(codes(&again), ["ALREADY_EXISTS", "ALREADY_EXISTS"]);
    assert_eq!(again[0].timestamp_ns, first[0].timestamp_ns);
    assert_eq!(again[1].timestamp_ns, first[1].timestamp_ns);
    let changed = wire::CreateTransfersRequest { transfers: vec![posted("5", "1", "2", "11")] };
    let results = client.create_transfers(authed(changed, ADMIN)).await.expect("changed").into_inner().results;
    assert_eq!(codes(&results), ["EXISTS_WITH_DIFFERENT_FIELDS"]);
    let ids = vec!["2".into()];
    let account = client.lookup_accounts(authed(wire::LookupAccountsRequest { ids }, ADMIN)).await.expect("lookup");
    assert_eq!(account.into_inner().accounts[0].credits_posted, "30", "applied once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_event_streams_are_bounded_and_a_closed_one_frees_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let stream = || authed(wire::StreamEventsRequest { from_position: 0 }, AUDITOR);
    let mut open = Vec::new();
    for _ in 0..ledger_api::service::STREAM_SUBSCRIBERS_MAX {
        open.push(client.stream_events(stream()).await.expect("a stream within the limit").into_inner());
    }
    let refused = client.stream_events(stream()).await.expect_err("one stream past the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // A client that goes away frees its place, though the log stays quiet.
    drop(open.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.stream_events(stream()).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("the freed place was not given again: {status:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let channel = Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let check = tonic_health::pb::HealthCheckRequest { service: "ledger.v1.Ledger".into() };
    let status = health.check(check).await.expect("health").into_inner().status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(channel);
    let ask = |message| ServerReflectionRequest { host: String::new(), message_request: Some(message) };
    let requests = tokio_stream::iter(vec![ask(MessageRequest::ListServices(String::new()))]);
    let mut responses = reflection.server_reflection_info(requests).await.expect("reflection").into_inner();
    let response = responses.message().await.expect("message").expect("response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else { panic!("not a list") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"ledger.v1.Ledger".to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
    let symbol = MessageRequest::FileContainingSymbol("ledger.v1.Ledger.CreateTransfers".into());
    let requests = tokio_stream::iter(vec![ask(symbol)]);
    let mut responses = reflection.server_reflection_info(requests).await.expect("reflection").into_inner();
    let response = responses.message().await.expect("message").expect("response");
    assert!(matches!(response.message_response, Some(MessageResponse::FileDescriptorResponse(_))));

    let mut client = server.client().await;
    let accounts = wire::CreateAccountsRequest { commands: vec![open("1", 0)] };
    client.create_accounts(authed(accounts, ADMIN)).await.expect("accounts");
    let _ = client.create_accounts(Request::new(wire::CreateAccountsRequest::default())).await;
    let body = http_get(&server.metrics_addr, "/metrics");
    assert!(body.contains("ledger_requests_total{method=\"CreateAccounts\",code=\"OK\"} 1"), "{body}");
    assert!(body.contains("ledger_requests_total{method=\"CreateAccounts\",code=\"UNAUTHENTICATED\"} 1"), "{body}");
    assert!(body.contains("ledger_commit_latency_seconds_count"), "{body}");
    assert!(body.contains("ledger_queue_depth_requests 0"), "{body}");
    assert!(!body.contains(ADMIN), "metrics must not show tokens");
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect metrics");
    // Written in two pieces on purpose: the server must read the whole head.
    stream.write_all(format!("GET {path} HTTP/1.1\r\n").as_bytes()).expect("write");
    std::thread::sleep(Duration::from_millis(5));
    stream.write_all(format!("Host: {addr}\r\n\r\n").as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

/// A SIGTERM that comes while `ledgerd` starts (here as soon as it logs its first line)
/// is not lost: the server stops cleanly once it is up, where the signal's default
/// action would kill it.
#[test]
fn a_sigterm_during_the_start_stops_the_server_cleanly_once_it_is_up() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("dir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ledgerd"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("LEDGERD_ADMIN_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ledgerd");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let first = lines.next().expect("a first line").expect("read");
    assert!(!first.contains("ready in "), "the signal must come during the start: {first}");
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    let said: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    let log = said.join("\n");
    assert!(status.success(), "{status}; it said:\n{first}\n{log}");
    assert!(log.contains("ready in "), "it finished its start:\n{log}");
    assert!(said.last().is_some_and(|line| line.contains("stopped")), "and stopped cleanly:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_loses_nothing_acknowledged_and_leaves_nothing_half_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let accounts = wire::CreateAccountsRequest { commands: (1..=10).map(|n| open(&n.to_string(), 0)).collect() };
    client.create_accounts(authed(accounts, ADMIN)).await.expect("accounts");
    let mut tasks = Vec::new();
    let acknowledged_so_far = Arc::new(AtomicU64::new(0));
    for task in 0..16u64 {
        let mut client = server.client().await;
        let acknowledged_so_far = acknowledged_so_far.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for request in 0..10_000u64 {
                let first = 1_000_000 * (task + 1) + request * 5;
                let transfer = |n: u64| {
                    posted(&(first + n).to_string(), &(1 + n % 10).to_string(), &(1 + (n + 3) % 10).to_string(), "1")
                };
                let transfers = (0..5).map(transfer).collect();
                let result = client.create_transfers(authed(wire::CreateTransfersRequest { transfers }, ADMIN)).await;
                let acknowledged = result.as_ref().is_ok_and(|r| r.get_ref().results.iter().all(|i| i.ok));
                outcomes.push((first, acknowledged));
                if acknowledged {
                    acknowledged_so_far.fetch_add(1, Ordering::Relaxed);
                }
                if result.is_err() {
                    break;
                }
            }
            outcomes
        }));
    }
    // Shut down under load: once some requests are acknowledged, with more in flight.
    let started = std::time::Instant::now();
    while acknowledged_so_far.load(Ordering::Relaxed) < 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "no request was acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, server) = tokio::task::spawn_blocking(move || (server.terminate(), server)).await.expect("terminate");
    assert!(status.success(), "ledgerd exits cleanly on SIGTERM: {status:?}");
    drop(server);
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.expect("task"));
    }
    assert!(outcomes.iter().any(|(_, ok)| *ok), "some requests should have completed before the shutdown");

    let server = Server::start(dir.path());
    let mut client = server.client().await;
    for (first, ok) in &outcomes {
        let ids = (0..5).map(|n| (first + n).to_string()).collect();
        let found = client.lookup_transfers(authed(wire::LookupTransfersRequest { ids }, ADMIN)).await.expect("lookup");
        let present = found.into_inner().transfers.len();
        if *ok {
            assert_eq!(present, 5, "acknowledged request {first} lost");
        } else {
            assert!(present == 0 || present == 5, "request {first} half applied");
        }
    }
    drop(server);
    let (log, snapshots) = ledger_engine::audit::data_dir_layout(&dir.path().join("data"));
    let report = ledger_engine::audit::verify(&log, Some(&snapshots)).expect("the log verifies after the shutdown");
    // A clean stop leaves the read models durable at the log's end: nothing to re-apply.
    let models = projections::read_models::ReadModels::open(&projections::read_models::read_models_path(
        &dir.path().join("data"),
    ))
    .expect("read models");
    assert_eq!(models.next_position().expect("checkpoint"), report.events_checked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reports_and_read_models_over_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let mut eur = open("3", 0);
    if let Some(wire::account_command::Command::Open(account)) = &mut eur.command {
        account.currency = "EUR".into();
        account.owner_id = "8".into();
    }
    let accounts = wire::CreateAccountsRequest { commands: vec![open("1", 0), open("2", 0), eur, open("4", 0)] };
    client.create_accounts(authed(accounts, ADMIN)).await.expect("accounts");
    let mut hold = posted("21", "1", "2", "30");
    hold.kind = wire::TransferKind::Pending as i32;
    let transfers =
        vec![posted("20", "1", "2", "100"), hold, posted("22", "2", "4", "40"), posted("23", "4", "1", "5")];
    let created = client
        .create_transfers(authed(wire::CreateTransfersRequest { transfers }, SERVICE))
        .await
        .expect("transfers")
        .into_inner();
    assert!(created.results.iter().all(|r| r.ok), "{:?}", created.results);
    let void = resolve("24", "21", "", wire::TransferKind::VoidPending);
    client
        .create_transfers(authed(wire::CreateTransfersRequest { transfers: vec![void] }, SERVICE))
        .await
        .expect("void");

    // Newest first, read-your-writes without asking: the void is already there.
    let request = wire::GetHistoryRequest { account_id: "1".into(), ..Default::default() };
    let page = client.get_history(authed(request, READ_ONLY)).await.expect("history").into_inner();
    let ids: Vec<&str> = page.movements.iter().map(|m| m.transfer_id.as_str()).collect();
    assert_eq!(ids, ["24", "23", "21", "20"]);
    assert_eq!(page.movements[2].status, wire::MovementStatus::Voided as i32, "the hold shows how it ended");
    assert!(page.applied_position >= 9, "applied_position {}", page.applied_position);
    assert_eq!(page.lag_events, 0, "nothing else was written: the read models are at the head");
    // Filters and paging over an owner's accounts (owner 7: accounts 1, 2 and 4).
    let request = wire::GetHistoryRequest {
        owner_id: "7".into(),
        direction: wire::Direction::Credit as i32,
        status: wire::MovementStatus::Posted as i32,
        limit: 2,
        ..Default::default()
    };
    let first = client.get_history(authed(request.clone(), READ_ONLY)).await.expect("owner").into_inner();
    assert_eq!(first.movements.len(), 2);
    let next = wire::GetHistoryRequest { cursor: first.next_cursor.clone(), ..request };
    let second = client.get_history(authed(next, READ_ONLY)).await.expect("owner").into_inner();
    let all: Vec<(&str, &str)> = first
        .movements
        .iter()
        .chain(&second.movements)
        .map(|m| (m.transfer_id.as_str(), m.account_id.as_str()))
        .collect();
    assert_eq!(all, [("23", "1"), ("22", "4"), ("20", "2")]);
    assert!(second.next_cursor.is_empty());

    // A report over today: opening 0, in 5, out 100, closing -95 for account 1.
    let now_ns = page.movements[0].timestamp_ns;
    let day = 86_400 * 1_000_000_000u64;
    let from = now_ns / day * day;
    let request =
        wire::GetReportRequest { account_id: "1".into(), from_ns: from, to_ns: from + day, ..Default::default() };
    let report = client.get_report(authed(request, AUDITOR)).await.expect("report").into_inner();
    let one = &report.reports[0];
    assert_eq!((one.opening.as_str(), one.credits.as_str(), one.debits.as_str()), ("0", "5", "100"));
    assert_eq!((one.count, one.closing.as_str(), one.days.len()), (2, "-95", 1));
    // A report in two half-day offsets' days covers the same totals.
    let request = wire::GetReportRequest {
        account_id: "1".into(),
        from_ns: from - day,
        to_ns: from + 2 * day,
        utc_offset_minutes: -330,
        ..Default::default()
    };
    let report = client.get_report(authed(request, AUDITOR)).await.expect("report").into_inner();
    assert_eq!(report.reports[0].days.len(), 4, "three days at -05:30 cut into four");
    assert_eq!(report.reports[0].closing, "-95");

    // Bad input: typed errors, nothing read.
    let bad = [
        wire::GetReportRequest { account_id: "1".into(), from_ns: 1, to_ns: day, ..Default::default() },
        wire::GetReportRequest {
            account_id: "1".into(),
            from_ns: 0,
            to_ns: day,
            utc_offset_minutes: 7,
            ..Default::default()
        },
        wire::GetReportRequest { account_id: "1".into(), owner_id: "7".into(), to_ns: day, ..Default::default() },
    ];
    for request in bad {
        let status = client.get_report(authed(request, ADMIN)).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let request = wire::GetHistoryRequest { account_id: "1".into(), cursor: "x".into(), ..Default::default() };
    assert_eq!(client.get_history(authed(request, ADMIN)).await.expect_err("cursor").code(), Code::InvalidArgument);
    let request = wire::GetHistoryRequest { account_id: "99".into(), ..Default::default() };
    assert_eq!(client.get_history(authed(request, ADMIN)).await.expect_err("unknown").code(), Code::NotFound);
    let request = wire::GetHistoryRequest { account_id: "1".into(), min_position: 1 << 40, ..Default::default() };
    assert_eq!(client.get_history(authed(request, ADMIN)).await.expect_err("future").code(), Code::OutOfRange);
    assert_eq!(
        client.get_history(Request::new(wire::GetHistoryRequest::default())).await.expect_err("no token").code(),
        Code::Unauthenticated
    );

    // An owner-wide history or report covers at most OWNER_ACCOUNTS_MAX accounts.
    let max = projections::read_models::OWNER_ACCOUNTS_MAX;
    let many: Vec<wire::AccountCommand> = (0..=max)
        .map(|n| {
            let mut command = open(&(100_000 + n).to_string(), 0);
            if let Some(wire::account_command::Command::Open(account)) = &mut command.command {
                account.owner_id = "9".into();
            }
            command
        })
        .collect();
    client.create_accounts(authed(wire::CreateAccountsRequest { commands: many }, ADMIN)).await.expect("accounts");
    let request = wire::GetHistoryRequest { owner_id: "9".into(), ..Default::default() };
    let status = client.get_history(authed(request, ADMIN)).await.expect_err("too many accounts");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let request =
        wire::GetReportRequest { owner_id: "9".into(), from_ns: from, to_ns: from + day, ..Default::default() };
    let status = client.get_report(authed(request, ADMIN)).await.expect_err("too many accounts");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let request = wire::GetHistoryRequest { account_id: "100000".into(), ..Default::default() };
    client.get_history(authed(request, ADMIN)).await.expect("one of them, alone");

    // The chain verifier reports through health and metrics; the lag is exported.
    let channel = Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = tonic_health::pb::HealthCheckRequest { service: "ledger.audit".into() };
    let status = health.check(check).await.expect("health").into_inner().status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let body = http_get(&server.metrics_addr, "/metrics");
    assert!(body.contains("ledger_read_models_lag_events{model=\"history\"} 0"), "{body}");
    assert!(body.contains("ledger_audit_alarm 0"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_when_a_certificate_and_key_are_given() {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let dir = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    let cert_arg = cert.to_str().expect("utf-8 path");
    let key_arg = key.to_str().expect("utf-8 path");
    let server = Server::start_with(dir.path(), &["--tls-cert", cert_arg, "--tls-key", key_arg]);
    ledger_proto::transport::tls_provider();
    let port = server.addr.rsplit(':').next().expect("port").to_string();

    let tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(certified.cert.pem())).domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("a TLS client connects");
    let mut client = wire::ledger_client::LedgerClient::new(channel);
    let accounts = wire::CreateAccountsRequest { commands: vec![open("1", 0)] };
    let created = client.create_accounts(authed(accounts, ADMIN)).await.expect("call over TLS").into_inner();
    assert!(created.results[0].ok);

    // Plain text to a TLS port gets no answer.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri").connect().await;
    if let Ok(channel) = plain {
        let mut client = wire::ledger_client::LedgerClient::new(channel);
        let request = wire::LookupAccountsRequest { ids: vec!["1".into()] };
        assert!(client.lookup_accounts(authed(request, ADMIN)).await.is_err(), "plain text must not be served");
    }
}
