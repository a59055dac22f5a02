//! Operators, admins and support through the real `ledgerd`: the start-up log, the
//! platform's metrics (sign-ins, throttling, payments, rail calls, the review queue)
//! and the `ledger.v1.Admin` views, with their role checks and page limits.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;
use tonic::Code;

mod common;

use common::{authed, card, channel, fund, person, settled, Person, Server, ADMIN, PASSWORD, READ_ONLY};

const SUPPORT: &str = "support-token-0123456789abcdef";

type Users = wire::users_client::UsersClient<Channel>;
type Admin = wire::admin_client::AdminClient<Channel>;

/// `ledgerd` on free ports with admin, read-only and support tokens; every line it
/// logs is kept in the returned list.
fn start_logged(dir: &Path) -> (Server, Arc<Mutex<Vec<String>>>) {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("admin {ADMIN}\nread-only {READ_ONLY}\nsupport {SUPPORT}\n")).expect("tokens");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerd"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--tokens-file",
        ])
        .arg(&tokens)
        .env("RUST_LOG", "info")
        .env_remove("LEDGERD_ADMIN_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ledgerd");
    let stderr = child.stderr.take().expect("stderr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().expect("lines").push(line);
            }
        });
    }
    let started = Instant::now();
    let ready = loop {
        let found = lines.lock().expect("lines").iter().find(|l| l.contains(" ready in ")).cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no ready line: {:?}", lines.lock().expect("lines"));
        std::thread::sleep(Duration::from_millis(20));
    };
    let after = |marker: &str| {
        let rest = ready.split(marker).nth(1).unwrap_or_else(|| panic!("{marker} in {ready}"));
        rest.split([',', ' ', '/']).next().expect("address").to_string()
    };
    let (addr, metrics_addr) = (after("gRPC on "), after("metrics on http://"));
    (Server { child, addr: format!("http://{addr}"), metrics_addr, http_addr: None }, lines)
}

fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect metrics");
    stream.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

/// The value of the series `name{labels}` (exactly), if present.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn send(key: &str, to: &Person, amount: &str) -> wire::SendRequest {
    wire::SendRequest {
        idempotency_key: key.into(),
        receiver_user_id: to.id.clone(),
        amount: amount.into(),
        currency: "USD".into(),
        ..Default::default()
    }
}

async fn login(users: &mut Users, email: &str, password: &str) -> Result<wire::LoginResponse, tonic::Status> {
    let login = wire::LoginRequest { email: email.into(), password: password.into(), ..Default::default() };
    users.login(login).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_logs_what_it_opens_what_it_replays_and_when_it_is_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut server, _) = start_logged(dir.path());
        let mut users = wire::users_client::UsersClient::new(channel(&server).await);
        let ada = person(&mut users, "Ada Lovelace", "ada.startup@example.com").await;
        fund(&server, &ada, "USD", "5000", "1").await;
        assert!(server.terminate().success());
    }
    let (mut server, lines) = start_logged(dir.path());
    let log = lines.lock().expect("lines").clone();
    let position = |marker: &str| {
        log.iter().position(|line| line.contains(marker)).unwrap_or_else(|| panic!("no {marker:?} in {log:#?}"))
    };
    let order = [
        "ledgerd starting",
        "opening the event log",
        "event log opened",
        "replaying the ledger's events",
        "ledger state recovered",
        "opening the read models",
        "read models opened",
        "users index open",
        "exchange rates rebuilt from the log",
        "payments open",
        "ledgerd listening on",
        " ready in ",
    ];
    let positions: Vec<usize> = order.iter().map(|marker| position(marker)).collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "out of order: {order:?} at {positions:?}");
    let line = |marker: &str| &log[position(marker)];
    assert!(line("ledgerd starting").contains(&dir.path().join("data").display().to_string()));
    assert!(line("ledger state recovered").contains("events_per_sec="), "{}", line("ledger state recovered"));
    assert!(line("users index open").contains("users=1"), "{}", line("users index open"));
    let ready = line(" ready in ");
    assert!(ready.contains("startup_ms=") && ready.contains("metrics on http://"), "{ready}");
    // No personal data in the log.
    assert!(log.iter().all(|l| !l.contains("ada.startup") && !l.contains("Lovelace")), "{log:#?}");
    assert!(server.terminate().success());
}

/// Ada (funded), Bob and Carol; a failed and a throttled sign-in; three payments: one
/// completed, one held for review, one top-up by card through the rails.
struct World {
    ada: Person,
    bob: Person,
    carol: Person,
    completed: String,
    in_review: String,
    bank_deposits: Vec<u32>,
}

async fn make_world(server: &Server) -> World {
    let mut users = wire::users_client::UsersClient::new(channel(server).await);
    let ada = person(&mut users, "Ada Lovelace", "ada@example.com").await;
    let bob = person(&mut users, "Bob Byron", "bob@example.com").await;
    let carol = person(&mut users, "Carol Babbage", "carol@example.com").await;
    fund(server, &ada, "USD", "200000", "1").await;
    let wrong = login(&mut users, "bob@example.com", "not-the-password-1").await.expect_err("wrong password");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    for _ in 0..5 {
        let _ = login(&mut users, "mallory@example.com", "guessing-passwords-1").await;
    }
    let throttled = login(&mut users, "mallory@example.com", "guessing-passwords-1").await.expect_err("throttled");
    assert_eq!(throttled.code(), Code::ResourceExhausted);
    let mut payments = wire::payments_client::PaymentsClient::new(channel(server).await);
    let created = payments.send(authed(send("p1", &bob, "12.50"), &ada.token)).await.expect("send").into_inner();
    let completed = settled(&mut payments, &ada.token, &created.payment_id, &["completed"]).await.payment_id;
    // Above 500.00 to a payee never paid before: held for review.
    let created = payments.send(authed(send("p2", &carol, "600"), &ada.token)).await.expect("send").into_inner();
    let in_review = settled(&mut payments, &ada.token, &created.payment_id, &["requires_review"]).await.payment_id;
    let card = card(&mut users, &ada).await;
    let topup = wire::TopUpRequest {
        idempotency_key: "t1".into(),
        amount: "10".into(),
        currency: "USD".into(),
        instrument_id: card,
    };
    let created = payments.top_up(authed(topup, &ada.token)).await.expect("top up").into_inner();
    settled(&mut payments, &ada.token, &created.payment_id, &["completed"]).await;
    let bank = wire::AddBankAccountRequest {
        bank_name: "Example Bank".into(),
        routing_number: "021000021".into(),
        account_number: "000123456789".into(),
        ..Default::default()
    };
    let bank = users.add_bank_account(authed(bank, &ada.token)).await.expect("bank").into_inner();
    World { ada, bob, carol, completed, in_review, bank_deposits: bank.sandbox_micro_deposits }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_sign_ins_throttling_payments_rail_calls_and_the_review_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, _) = start_logged(dir.path());
    let before = scrape(&server.metrics_addr);
    assert_eq!(series(&before, "ledger_review_queue_length"), Some(0.0), "{before}");
    assert_eq!(series(&before, "ledger_sign_ins_total{outcome=\"success\"}"), Some(0.0), "{before}");
    let world = make_world(&server).await;
    let text = scrape(&server.metrics_addr);
    let value = |name: &str| series(&text, name).unwrap_or_else(|| panic!("no {name} in {text}"));
    // Three sign-ins by `person`, one wrong password, five wrong for an unknown email.
    assert_eq!(value("ledger_sign_ins_total{outcome=\"success\"}"), 3.0);
    assert_eq!(value("ledger_sign_ins_total{outcome=\"bad_credentials\"}"), 6.0);
    assert_eq!(value("ledger_sign_ins_total{outcome=\"throttled\"}"), 1.0);
    assert_eq!(value("ledger_sign_ins_total{outcome=\"totp_required\"}"), 0.0);
    assert_eq!(value("ledger_throttled_requests_total{service=\"Users\"}"), 1.0);
    assert_eq!(value("ledger_throttled_requests_total{service=\"Ledger\"}"), 0.0);
    assert_eq!(value("ledger_payments_finished_total{kind=\"send\",status=\"completed\"}"), 1.0);
    assert_eq!(value("ledger_payments_finished_total{kind=\"top_up\",status=\"completed\"}"), 1.0);
    assert!(!text.contains("ledger_payments_finished_total{kind=\"send\",status=\"failed\"}"), "{text}");
    for operation in ["authorize", "capture"] {
        let calls = format!("ledger_rail_calls_total{{rail=\"card\",operation=\"{operation}\",outcome=\"succeeded\"}}");
        assert_eq!(value(&calls), 1.0, "{calls}");
        let labels = format!("rail=\"card\",operation=\"{operation}\"");
        assert_eq!(value(&format!("ledger_rail_call_seconds_count{{{labels}}}")), 1.0);
        assert_eq!(value(&format!("ledger_rail_call_seconds_bucket{{{labels},le=\"+Inf\"}}")), 1.0);
        assert!(value(&format!("ledger_rail_call_seconds_sum{{{labels}}}")) < 2.0);
    }
    assert!(!text.contains("rail=\"bank_account\""), "no bank rail call was made: {text}");
    assert_eq!(value("ledger_review_queue_length"), 1.0);
    assert!(value("ledger_review_queue_oldest_seconds") < 60.0);
    assert!(text.contains("# TYPE ledger_rail_call_seconds histogram\n"), "{text}");
    assert!(series(&text, "ledger_read_models_lag_events{model=\"balances\"}").is_some(), "{text}");
    for who in [&world.ada, &world.bob, &world.carol] {
        assert!(!text.contains(&who.id), "no user id in any label");
    }
    // Deciding the review empties the queue.
    let mut payments = wire::payments_client::PaymentsClient::new(channel(&server).await);
    let review = wire::ReviewPaymentRequest { payment_id: world.in_review.clone(), approve: false };
    payments.review_payment(authed(review, ADMIN)).await.expect("reject");
    settled(&mut payments, ADMIN, &world.in_review, &["failed"]).await;
    let text = scrape(&server.metrics_addr);
    assert_eq!(series(&text, "ledger_review_queue_length"), Some(0.0), "{text}");
    assert_eq!(series(&text, "ledger_payments_finished_total{kind=\"send\",status=\"failed\"}"), Some(1.0));
    assert!(server.terminate().success());
}

async fn list_users(admin: &mut Admin, token: &str, request: wire::ListUsersRequest) -> wire::ListUsersResponse {
    admin.list_users(authed(request, token)).await.expect("list users").into_inner()
}

async fn check_user_pages(admin: &mut Admin, world: &World) {
    let page = |limit, after: &str| wire::ListUsersRequest { limit, after: after.into(), ..Default::default() };
    let first = list_users(admin, ADMIN, page(2, "")).await;
    assert_eq!(first.users.len(), 2);
    assert!(!first.next_cursor.is_empty());
    let second = list_users(admin, SUPPORT, page(2, &first.next_cursor)).await;
    assert_eq!(second.users.len(), 1);
    assert_eq!(second.next_cursor, "");
    let mut ids: Vec<String> = first.users.iter().chain(&second.users).map(|u| u.user_id.clone()).collect();
    let in_order = ids.clone();
    ids.sort_by_key(|id| id.parse::<u128>().expect("id"));
    assert_eq!(ids, in_order, "id order");
    let mut expected = vec![world.ada.id.clone(), world.bob.id.clone(), world.carol.id.clone()];
    expected.sort_by_key(|id| id.parse::<u128>().expect("id"));
    assert_eq!(ids, expected);
    let by_email = wire::ListUsersRequest { email: " ADA@example.com ".into(), ..Default::default() };
    let found = list_users(admin, SUPPORT, by_email).await;
    assert_eq!(
        found.users.iter().map(|u| (&*u.user_id, &*u.name)).collect::<Vec<_>>(),
        [(&*world.ada.id, "Ada Lovelace")]
    );
    let nobody = wire::ListUsersRequest { email: "nobody@example.com".into(), ..Default::default() };
    assert!(list_users(admin, ADMIN, nobody).await.users.is_empty());
    let by_id = wire::ListUsersRequest { user_id: world.bob.id.clone(), ..Default::default() };
    assert_eq!(list_users(admin, ADMIN, by_id).await.users[0].email, "bob@example.com");
    let refused = [
        (wire::ListUsersRequest { limit: 201, ..Default::default() }, Code::InvalidArgument),
        (wire::ListUsersRequest { after: "x".into(), ..Default::default() }, Code::InvalidArgument),
        (
            wire::ListUsersRequest { email: "a@example.com".into(), user_id: "1".into(), ..Default::default() },
            Code::InvalidArgument,
        ),
    ];
    for (request, code) in refused {
        assert_eq!(admin.list_users(authed(request, ADMIN)).await.expect_err("refused").code(), code);
    }
    for token in [READ_ONLY, world.ada.token.as_str()] {
        let denied = admin.list_users(authed(wire::ListUsersRequest::default(), token)).await.expect_err("denied");
        assert_eq!(denied.code(), Code::PermissionDenied, "{token}");
    }
    let anonymous = admin.list_users(wire::ListUsersRequest::default()).await.expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

async fn check_user_view(admin: &mut Admin, world: &World) {
    let get = |limit, after: &str| wire::GetUserRequest {
        user_id: world.ada.id.clone(),
        payments_limit: limit,
        payments_after: after.into(),
    };
    let ada = admin.get_user(authed(get(0, ""), SUPPORT)).await.expect("user").into_inner();
    let profile = ada.profile.clone().expect("profile");
    assert_eq!((profile.name.as_str(), profile.email.as_str()), ("Ada Lovelace", "ada@example.com"));
    // 2000.00 funded, 12.50 sent, 600.00 held (pending, not posted), 10.00 topped up.
    let usd: Vec<_> = ada.wallets.iter().map(|w| (w.currency.as_str(), w.balance.as_str())).collect();
    assert_eq!(usd, [("USD", "1997.50")]);
    let kinds: Vec<_> = ada.instruments.iter().map(|i| i.instrument.clone().expect("i").display).collect();
    assert_eq!(ada.instruments.len(), 2, "{kinds:?}");
    let bank = ada.instruments.iter().find(|i| !i.micro_deposits.is_empty()).expect("bank awaiting verification");
    assert_eq!(bank.micro_deposits, world.bank_deposits, "the amounts shown at linking, again");
    assert_eq!(bank.instrument.clone().expect("i").status, wire::InstrumentStatus::PendingVerification as i32);
    let card = ada.instruments.iter().find(|i| i.micro_deposits.is_empty()).expect("card");
    assert_eq!(card.instrument.clone().expect("i").status, wire::InstrumentStatus::Verified as i32);
    assert_eq!(ada.payments.len(), 3, "{:?}", ada.payments);
    assert!(ada.payments.windows(2).all(|p| p[0].created_at_ns >= p[1].created_at_ns), "newest first");
    assert_eq!(ada.next_payments_cursor, "");
    let first = admin.get_user(authed(get(2, ""), ADMIN)).await.expect("page").into_inner();
    assert_eq!(first.payments.len(), 2);
    let rest = admin.get_user(authed(get(2, &first.next_payments_cursor), ADMIN)).await.expect("page").into_inner();
    assert_eq!(rest.payments.len(), 1);
    assert_eq!(rest.payments[0].payment_id, ada.payments[2].payment_id);
    assert!(ada.payments.iter().any(|p| p.payment_id == world.completed));
    let unknown = wire::GetUserRequest { user_id: "12345".into(), ..Default::default() };
    assert_eq!(admin.get_user(authed(unknown, ADMIN)).await.expect_err("unknown").code(), Code::NotFound);
    let too_many = get(201, "");
    assert_eq!(admin.get_user(authed(too_many, ADMIN)).await.expect_err("limit").code(), Code::InvalidArgument);
}

async fn check_accounts_and_reviews(admin: &mut Admin, world: &World) {
    let all = wire::ListAccountsRequest { limit: 1000, after: String::new() };
    let all = admin.list_accounts(authed(all, ADMIN)).await.expect("accounts").into_inner();
    assert_eq!(all.next_cursor, "");
    let ids: Vec<u128> = all.accounts.iter().map(|a| a.account_id.parse().expect("id")).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "id order");
    let ada_wallet = all.accounts.iter().find(|a| a.owner_id == world.ada.id).expect("Ada's wallet");
    assert_eq!(ada_wallet.currency, "USD");
    let one = wire::ListAccountsRequest { limit: 1, after: String::new() };
    let one = admin.list_accounts(authed(one, SUPPORT)).await.expect("page").into_inner();
    assert_eq!((one.accounts.len(), one.next_cursor.as_str()), (1, all.accounts[0].account_id.as_str()));
    let next = wire::ListAccountsRequest { limit: 1, after: one.next_cursor.clone() };
    let next = admin.list_accounts(authed(next, SUPPORT)).await.expect("page").into_inner();
    assert_eq!(next.accounts[0].account_id, all.accounts[1].account_id);
    let too_many = wire::ListAccountsRequest { limit: 1001, after: String::new() };
    assert_eq!(admin.list_accounts(authed(too_many, ADMIN)).await.expect_err("limit").code(), Code::InvalidArgument);
    let queue = admin.list_review_queue(authed(wire::ListReviewQueueRequest { limit: 0 }, SUPPORT)).await;
    let queue = queue.expect("queue").into_inner();
    assert_eq!(queue.queue_length, 1);
    let item = &queue.items[0];
    let payment = item.payment.clone().expect("payment");
    assert_eq!(payment.payment_id, world.in_review);
    assert!(!payment.risk_reasons.is_empty(), "{payment:?}");
    assert!(item.in_review_since_ns > 0 && item.times_out_at_ns > item.in_review_since_ns);
    assert!(item.waiting_secs < 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_and_support_see_users_accounts_instruments_payments_and_reviews() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, lines) = start_logged(dir.path());
    let world = make_world(&server).await;
    let mut admin = wire::admin_client::AdminClient::new(channel(&server).await);
    check_user_pages(&mut admin, &world).await;
    check_user_view(&mut admin, &world).await;
    check_accounts_and_reviews(&mut admin, &world).await;
    assert!(server.terminate().success());
    let log = lines.lock().expect("lines").clone();
    assert!(log.iter().all(|l| !l.contains("ada@example.com") && !l.contains(PASSWORD)), "{log:#?}");
}
