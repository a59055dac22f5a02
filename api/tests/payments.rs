//! Payments through the real `ledgerd`: every kind with every funding method, every
//! terminal status, refunds, reviews (approved, rejected, timed out), compensation of
//! a failed second leg, and clearing accounts back at zero.

use std::time::{Duration, Instant};

use ledger_core::money::Currency;
use ledger_platform::chart::platform_account;
use ledger_platform::chart::wallet_account_id;
use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;
use tonic::Code;

mod common;

use common::{authed, bank, card, fund, person, settled, Person, Server, ADMIN};

type Users = wire::users_client::UsersClient<Channel>;
type Payments = wire::payments_client::PaymentsClient<Channel>;

/// A fresh server on `dir`, its users and payments clients, and Alice and Bob signed up.
async fn alice_and_bob(dir: &std::path::Path) -> (Server, Users, Payments, Person, Person) {
    let server = Server::start(dir);
    let mut users = server.users().await;
    let payments = wire::payments_client::PaymentsClient::new(
        Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect"),
    );
    let alice = person(&mut users, "Alice", "alice@example.com").await;
    let bob = person(&mut users, "Bob", "bob@example.com").await;
    (server, users, payments, alice, bob)
}

const TERMINAL: [&str; 5] = ["completed", "failed", "cancelled", "refunded", "partially_refunded"];

async fn digital_wallet(users: &mut Users, who: &Person) -> String {
    let wallet = wire::AddDigitalWalletRequest {
        provider: "paypal".into(),
        handle: "pay@example.com".into(),
        ..Default::default()
    };
    users
        .add_digital_wallet(authed(wallet, &who.token))
        .await
        .expect("wallet")
        .into_inner()
        .instrument
        .expect("i")
        .instrument_id
}

fn send(key: &str, to: &Person, amount: &str, funding: &str, instrument: &str) -> wire::SendRequest {
    wire::SendRequest {
        idempotency_key: key.into(),
        receiver_user_id: to.id.clone(),
        amount: amount.into(),
        currency: "USD".into(),
        funding: funding.into(),
        instrument_id: instrument.into(),
        ..Default::default()
    }
}

async fn run(payments: &mut Payments, token: &str, request: wire::SendRequest) -> wire::Payment {
    let created = payments.send(authed(request, token)).await.expect("send").into_inner();
    settled(payments, token, &created.payment_id, &TERMINAL).await
}

async fn balance(server: &Server, account: u128) -> (i128, u128) {
    let mut ledger = server.client().await;
    let lookup = wire::LookupAccountsRequest { ids: vec![account.to_string()] };
    let found = ledger.lookup_accounts(authed(lookup, ADMIN)).await.expect("lookup").into_inner();
    let account = found.accounts.into_iter().next().expect("account exists");
    let n = |s: &str| s.parse::<u128>().expect("number");
    let balance = n(&account.credits_posted) as i128 - n(&account.debits_posted) as i128;
    (balance, n(&account.debits_pending) + n(&account.credits_pending))
}

fn wallet(person: &Person) -> u128 {
    wallet_account_id(person.id.parse().expect("id"), Currency::parse("USD").expect("usd"))
}

fn usd() -> Currency {
    Currency::parse("USD").expect("usd")
}

async fn assert_clearing_is_zero(server: &Server) {
    for rail in ["bank_account", "card", "digital_wallet"] {
        let (balance, pending) = balance(server, platform_account(&format!("clearing:{rail}"), usd())).await;
        assert_eq!((balance, pending), (0, 0), "clearing:{rail}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_with_every_funding_method_and_refunds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, mut users, mut payments, alice, bob) = alice_and_bob(dir.path()).await;
    let (a_card, a_bank, a_wallet) = (
        card(&mut users, &alice).await,
        bank(&mut users, &alice, "1111222233").await,
        digital_wallet(&mut users, &alice).await,
    );
    let b_bank = bank(&mut users, &bob, "4444555566").await;

    // Top-ups from each outside method (fees: card 2.9%, digital wallet 1%, bank none).
    for (key, instrument, amount, fee) in
        [("t1", &a_card, "100.00", "2.90"), ("t2", &a_bank, "50.00", "0.00"), ("t3", &a_wallet, "20.00", "0.20")]
    {
        let request = wire::TopUpRequest {
            idempotency_key: key.into(),
            amount: amount.into(),
            currency: "USD".into(),
            instrument_id: instrument.clone(),
        };
        let created = payments.top_up(authed(request, &alice.token)).await.expect("top up").into_inner();
        let done = settled(&mut payments, &alice.token, &created.payment_id, &TERMINAL).await;
        assert_eq!((done.status.as_str(), done.fee.as_str()), ("completed", fee), "{done:?}");
        assert!(!done.transfer_ids.is_empty());
    }
    assert_eq!(balance(&server, wallet(&alice)).await.0, 17_000);

    // Sends to Bob with every funding method.
    let mut sent = Vec::new();
    for (key, funding, instrument, amount) in [
        ("s1", "wallet", "", "10.00"),
        ("s2", "card", a_card.as_str(), "6.00"),
        ("s3", "bank_account", a_bank.as_str(), "5.00"),
        ("s4", "digital_wallet", a_wallet.as_str(), "5.00"),
    ] {
        let done = run(&mut payments, &alice.token, send(key, &bob, amount, funding, instrument)).await;
        assert_eq!(done.status, "completed", "{done:?}");
        assert_eq!(done.funding, funding);
        sent.push(done);
    }
    assert_eq!(balance(&server, wallet(&bob)).await.0, 2_600);
    assert_eq!(balance(&server, wallet(&alice)).await.0, 16_000, "only the wallet-funded send left the wallet");

    // A retry with the same idempotency key returns the same payment; another request is refused.
    let again = payments.send(authed(send("s1", &bob, "10.00", "wallet", ""), &alice.token)).await.expect("retry");
    assert_eq!(again.into_inner().payment_id, sent[0].payment_id);
    let other = payments.send(authed(send("s1", &bob, "11.00", "wallet", ""), &alice.token)).await;
    assert_eq!(other.map(|_| ()).map_err(|s| s.code()), Err(Code::AlreadyExists));

    // Money requests: approved and paid with every funding method, and declined.
    for (key, approve, funding, instrument, expected) in [
        ("r1", true, "card", a_card.as_str(), "completed"),
        ("r2", false, "", "", "cancelled"),
        ("r3", true, "wallet", "", "completed"),
        ("r4", true, "bank_account", a_bank.as_str(), "completed"),
        ("r5", true, "digital_wallet", a_wallet.as_str(), "completed"),
    ] {
        let request = wire::RequestMoneyRequest {
            idempotency_key: key.into(),
            payer_email: "ALICE@example.com".into(),
            amount: "7.00".into(),
            currency: "USD".into(),
            ..Default::default()
        };
        let asked = payments.request_money(authed(request, &bob.token)).await.expect("request").into_inner();
        assert_eq!((asked.status.as_str(), asked.kind.as_str()), ("created", "request"));
        let answer = wire::AnswerRequestRequest {
            payment_id: asked.payment_id.clone(),
            approve,
            funding: funding.into(),
            instrument_id: instrument.into(),
        };
        let wrong_payer = payments.answer_request(authed(answer.clone(), &bob.token)).await;
        assert_eq!(wrong_payer.map(|_| ()).map_err(|s| s.code()), Err(Code::NotFound));
        payments.answer_request(authed(answer, &alice.token)).await.expect("answer");
        let done = settled(&mut payments, &bob.token, &asked.payment_id, &TERMINAL).await;
        assert_eq!(done.status, expected, "{done:?}");
        if approve {
            assert_eq!(done.funding, funding);
        }
    }
    assert_eq!(balance(&server, wallet(&bob)).await.0, 5_400);
    assert_eq!(balance(&server, wallet(&alice)).await.0, 15_300, "the wallet-paid request");

    // A withdrawal to Bob's bank account.
    let withdraw = wire::WithdrawRequest {
        idempotency_key: "w1".into(),
        amount: "12.00".into(),
        currency: "USD".into(),
        instrument_id: b_bank.clone(),
    };
    let created = payments.withdraw(authed(withdraw, &bob.token)).await.expect("withdraw").into_inner();
    let done = settled(&mut payments, &bob.token, &created.payment_id, &TERMINAL).await;
    assert_eq!(done.status, "completed", "{done:?}");
    assert_eq!(balance(&server, wallet(&bob)).await.0, 4_200);

    // Refunds: by the receiver, partly then the rest; never by the sender; never more.
    let first = &sent[0];
    let refund = |amount: &str, id: &str| wire::RefundRequest {
        payment_id: first.payment_id.clone(),
        amount: amount.into(),
        refund_id: id.into(),
    };
    let by_sender = payments.refund(authed(refund("1.00", "x"), &alice.token)).await;
    assert_eq!(by_sender.map(|_| ()).map_err(|s| s.code()), Err(Code::PermissionDenied));
    let partial = payments.refund(authed(refund("4.00", "f1"), &bob.token)).await.expect("partial").into_inner();
    assert_eq!((partial.status.as_str(), partial.refunded.as_str()), ("partially_refunded", "4.00"));
    let repeat = payments.refund(authed(refund("4.00", "f1"), &bob.token)).await.expect("repeat").into_inner();
    assert_eq!(repeat.refunded, "4.00", "a repeated refund id refunds once");
    let too_much = payments.refund(authed(refund("7.00", "f2"), &bob.token)).await;
    assert_eq!(too_much.map(|_| ()).map_err(|s| s.code()), Err(Code::InvalidArgument));
    let rest = payments.refund(authed(refund("", "f3"), ADMIN)).await.expect("admin refunds the rest").into_inner();
    assert_eq!((rest.status.as_str(), rest.refunded.as_str()), ("refunded", "10.00"));
    assert_eq!(balance(&server, wallet(&bob)).await.0, 3_200);

    // The books: clearing accounts are back at zero; the fee account holds every fee.
    assert_clearing_is_zero(&server).await;
    let fees = balance(&server, platform_account("fee", usd())).await.0;
    assert_eq!(fees, 290 + 20 + 18 + 5 + 21 + 7, "card and digital wallet fees");
    let mine = payments.list_payments(authed(wire::ListPaymentsRequest::default(), &bob.token)).await.expect("list");
    let mine = mine.into_inner();
    assert!(mine.payments.iter().all(|p| p.sender_id == bob.id || p.receiver_id == bob.id));
    assert!(mine.payments.len() >= 8 && mine.next_cursor.is_empty(), "one default page holds them all: {mine:?}");
    // Pages of two walk the same list, newest first, each payment once.
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let request = wire::ListPaymentsRequest { limit: 2, after, ..Default::default() };
        let page = payments.list_payments(authed(request, &bob.token)).await.expect("page").into_inner();
        assert!(page.payments.len() <= 2);
        paged.extend(page.payments.into_iter().map(|p| p.payment_id));
        if page.next_cursor.is_empty() {
            break;
        }
        after = page.next_cursor;
    }
    assert_eq!(paged, mine.payments.iter().map(|p| p.payment_id.clone()).collect::<Vec<_>>());
    let order: Vec<(u64, u128)> =
        mine.payments.iter().map(|p| (p.created_at_ns, p.payment_id.parse().expect("id"))).collect();
    assert!(order.windows(2).all(|w| w[0] > w[1]), "newest first: {order:?}");
    // Filters, and what is refused.
    let completed = wire::ListPaymentsRequest { status: "completed".into(), kind: "send".into(), ..Default::default() };
    let completed = payments.list_payments(authed(completed, &bob.token)).await.expect("filtered").into_inner();
    let expected = mine.payments.iter().filter(|p| p.status == "completed" && p.kind == "send").count();
    assert!(expected > 0 && completed.payments.len() == expected, "{completed:?}");
    for bad in [
        wire::ListPaymentsRequest { limit: 201, ..Default::default() },
        wire::ListPaymentsRequest { after: "yesterday".into(), ..Default::default() },
        wire::ListPaymentsRequest { currency: "XYZ".into(), ..Default::default() },
    ] {
        let refused = payments.list_payments(authed(bad.clone(), &bob.token)).await;
        assert_eq!(refused.map(|_| ()).map_err(|s| s.code()), Err(Code::InvalidArgument), "{bad:?}");
    }
    let strangers = person(&mut users, "Eve", "eve@example.com").await;
    let peek = payments
        .get_payment(authed(
            wire::GetPaymentRequest { payment_id: first.payment_id.clone(), ..Default::default() },
            &strangers.token,
        ))
        .await;
    assert_eq!(peek.map(|_| ()).map_err(|s| s.code()), Err(Code::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn velocity_limits_count_payments_sent_at_once_and_hold_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = ["--risk-user-per-hour", "3", "--risk-user-per-day", "4"];
    let mut server = Server::start_with(dir.path(), &flags);
    let mut users = server.users().await;
    let connect = |addr: String| async move {
        wire::payments_client::PaymentsClient::new(
            Channel::from_shared(addr).expect("uri").connect().await.expect("connect"),
        )
    };
    let payments = connect(server.addr.clone()).await;
    let alice = person(&mut users, "Alice", "alice@example.com").await;
    let bob = person(&mut users, "Bob", "bob@example.com").await;
    fund(&server, &alice, "USD", "5000", "1").await;
    let sends: Vec<_> = (0..4)
        .map(|n| {
            let (mut payments, token) = (payments.clone(), alice.token.clone());
            let request = send(&format!("v{n}"), &bob, "1.00", "wallet", "");
            tokio::spawn(async move { run(&mut payments, &token, request).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for sent in sends {
        let done = sent.await.expect("task");
        let velocity = done.reason.contains("velocity_user_hour");
        outcomes.push((done.status.clone(), if velocity { "velocity_user_hour".to_string() } else { done.reason }));
    }
    outcomes.sort();
    let expected = [("completed", ""), ("completed", ""), ("completed", ""), ("failed", "velocity_user_hour")];
    assert_eq!(outcomes, expected.map(|(s, r)| (s.to_string(), r.to_string())), "three per hour, sent at once");
    // What the rules remember is rebuilt from the log: after a restart the hour is still full.
    server.terminate();
    let server = Server::start_with(dir.path(), &flags);
    let mut payments = connect(server.addr.clone()).await;
    let after = run(&mut payments, &alice.token, send("v4", &bob, "1.00", "wallet", "")).await;
    assert!(after.status == "failed" && after.reason.contains("velocity_user_hour"), "{after:?}");
    assert_eq!(balance(&server, wallet(&alice)).await.0, 5_000 - 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_payment_waits_for_the_payment_to_settle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, mut users, mut payments, alice, bob) = alice_and_bob(dir.path()).await;
    let a_bank = bank(&mut users, &alice, "1111222233").await;
    fund(&server, &alice, "USD", "5000", "1").await;
    // A bank-funded payment waits on the rail's settlement; one call waits with it.
    let sent = payments.send(authed(send("w1", &bob, "2.00", "bank_account", &a_bank), &alice.token)).await;
    let id = sent.expect("send").into_inner().payment_id;
    let asked = std::time::Instant::now();
    let request = wire::GetPaymentRequest { payment_id: id.clone(), wait_ms: 8_000 };
    let waited = payments.get_payment(authed(request, &alice.token)).await.expect("wait").into_inner();
    assert_eq!(waited.status, "completed", "{waited:?}");
    assert!(asked.elapsed() < std::time::Duration::from_secs(6), "answered when settled: {:?}", asked.elapsed());
    // A wait is bounded, and someone else's payment is as unknown as ever.
    let request = wire::GetPaymentRequest { payment_id: id.clone(), wait_ms: 10_001 };
    let refused = payments.get_payment(authed(request, &alice.token)).await.expect_err("over the limit");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let eve = person(&mut users, "Eve", "eve@example.com").await;
    let request = wire::GetPaymentRequest { payment_id: id, wait_ms: 100 };
    let hidden = payments.get_payment(authed(request, &eve.token)).await.expect_err("not eve's");
    assert_eq!(hidden.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_with_wait_answers_once_the_payment_settles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, mut users, mut payments, alice, bob) = alice_and_bob(dir.path()).await;
    let a_bank = bank(&mut users, &alice, "1111222233").await;
    fund(&server, &alice, "USD", "5000", "1").await;
    // Over the limit: refused before anything is recorded, so the key is still free.
    let over = wire::SendRequest { wait_ms: 10_001, ..send("sw1", &bob, "2.00", "bank_account", &a_bank) };
    let refused = payments.send(authed(over, &alice.token)).await.expect_err("over the limit");
    assert_eq!(refused.code(), Code::InvalidArgument);
    // A bank-funded payment waits on the rail's settlement; the send waits with it.
    let asked = std::time::Instant::now();
    let request = wire::SendRequest { wait_ms: 8_000, ..send("sw1", &bob, "3.00", "bank_account", &a_bank) };
    let sent = payments.send(authed(request, &alice.token)).await.expect("send").into_inner();
    assert_eq!((sent.status.as_str(), sent.amount.as_str()), ("completed", "3.00"), "{sent:?}");
    assert!(asked.elapsed() < std::time::Duration::from_secs(6), "answered when settled: {:?}", asked.elapsed());
    // A retry with the same key answers the same payment, settled, without paying twice.
    let request = wire::SendRequest { wait_ms: 100, ..send("sw1", &bob, "3.00", "bank_account", &a_bank) };
    let again = payments.send(authed(request, &alice.token)).await.expect("retry").into_inner();
    assert_eq!((again.payment_id, again.status), (sent.payment_id, sent.status));
    // Without a wait the send answers as soon as the payment is recorded, as before.
    let request = send("sw2", &bob, "1.00", "bank_account", &a_bank);
    let at_once = payments.send(authed(request, &alice.token)).await.expect("send").into_inner();
    assert_ne!(at_once.status, "completed", "the rail takes longer than the answer: {at_once:?}");
    settled(&mut payments, &alice.token, &at_once.payment_id, &TERMINAL).await;
    assert_eq!(balance(&server, wallet(&bob)).await.0, 400, "3.00 and 1.00, each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_of_a_payment_reloaded_from_its_stream_never_refund_twice() {
    // The server keeps 2 finished payments in memory (see common): the first payment is
    // read again from its stream by the refunds below, at the same time.
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut users = server.users().await;
    let connect = || async {
        wire::payments_client::PaymentsClient::new(
            Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect"),
        )
    };
    let mut payments = connect().await;
    let alice = person(&mut users, "Alice", "alice@example.com").await;
    let bob = person(&mut users, "Bob", "bob@example.com").await;
    fund(&server, &alice, "USD", "5000", "1").await;
    let first = run(&mut payments, &alice.token, send("r0", &bob, "10.00", "wallet", "")).await;
    assert_eq!(first.status, "completed");
    let mut others = Vec::new();
    for n in 1..=4 {
        let later = run(&mut payments, &alice.token, send(&format!("r{n}"), &bob, "1.00", "wallet", "")).await;
        assert_eq!(later.status, "completed");
        others.push(later.payment_id);
    }
    // Reads of the other payments load them and push the first out of memory, again
    // and again, while its refunds run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (stop, mut reader, token) = (stop.clone(), connect().await, alice.token.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for id in &others {
                    let request = wire::GetPaymentRequest { payment_id: id.clone(), ..Default::default() };
                    reader.get_payment(authed(request, &token)).await.expect("get");
                }
            }
        })
    };
    for round in 0..20 {
        let refund = |id: String| wire::RefundRequest {
            payment_id: first.payment_id.clone(),
            amount: "2.00".into(),
            refund_id: id,
        };
        let (mut one, mut two) = (connect().await, connect().await);
        let (a, b) = tokio::join!(
            one.refund(authed(refund(format!("a{round}")), &bob.token)),
            two.refund(authed(refund(format!("b{round}")), &bob.token)),
        );
        // Each is decided alone: both succeed while money is left, never more than it.
        let _ = (a, b);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.await.expect("churn");
    let done = settled(&mut payments, &alice.token, &first.payment_id, &TERMINAL).await;
    assert_eq!(done.refunded, "10.00", "{done:?}");
    // 50.00 funded, 14.00 sent, 10.00 refunded: nothing refunded twice.
    assert_eq!(balance(&server, wallet(&alice)).await.0, 5_000 - 1_400 + 1_000);
    assert_eq!(balance(&server, wallet(&bob)).await.0, 1_400 - 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_failures_blocks_and_compensation_leave_nothing_half_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, mut users, mut payments, alice, bob) = alice_and_bob(dir.path()).await;
    let (a_card, a_bank) = (card(&mut users, &alice).await, bank(&mut users, &alice, "1111222233").await);
    fund(&server, &alice, "USD", "5000", "1").await;

    // Magic amounts of the sandbox (what the rail is asked to move, fees included, mod
    // 100): 13 declined, 14 fails (a bank transfer at settlement), 15 capture declined.
    // 1.09 + 0.04 card fee = 1.13; 1.11 + 0.04 = 1.15.
    let declined = run(&mut payments, &alice.token, send("d1", &bob, "1.09", "card", &a_card)).await;
    assert_eq!((declined.status.as_str(), declined.reason.as_str()), ("failed", "declined"));
    let capture = run(&mut payments, &alice.token, send("d2", &bob, "1.11", "card", &a_card)).await;
    assert_eq!(capture.status, "failed");
    assert!(capture.steps.iter().any(|s| s.step == "void_auth" && s.outcome == "succeeded"), "{capture:?}");
    let bank_failed = run(&mut payments, &alice.token, send("d3", &bob, "1.14", "bank_account", &a_bank)).await;
    assert_eq!((bank_failed.status.as_str(), bank_failed.reason.as_str()), ("failed", "failed"));
    let broke = run(&mut payments, &alice.token, send("d4", &bob, "999.00", "wallet", "")).await;
    assert_eq!(broke.status, "failed");
    assert_eq!(broke.reason, "insufficient_funds: insufficient funds in the sender's USD wallet");
    let blocked = run(&mut payments, &alice.token, send("d5", &bob, "20000.00", "wallet", "")).await;
    assert!(blocked.status == "failed" && blocked.reason.contains("amount_over_limit"), "{blocked:?}");
    assert_eq!(balance(&server, wallet(&alice)).await, (5_000, 0), "nothing moved, nothing held");

    // The second leg fails (the receiver's wallet is frozen): the collection is refunded.
    let mut ledger = server.client().await;
    let freeze =
        wire::AccountCommand { command: Some(wire::account_command::Command::Freeze(wallet(&bob).to_string())) };
    let frozen = ledger.create_accounts(authed(wire::CreateAccountsRequest { commands: vec![freeze] }, ADMIN)).await;
    assert!(frozen.expect("freeze").into_inner().results[0].ok);
    let compensated = run(&mut payments, &alice.token, send("d6", &bob, "3.00", "card", &a_card)).await;
    assert_eq!(compensated.status, "failed");
    assert!(compensated.reason.starts_with("compensated"), "{compensated:?}");
    for step in ["rail_refund", "book_reverse_collect"] {
        assert!(compensated.steps.iter().any(|s| s.step == step && s.outcome == "succeeded"), "{step}");
    }
    // A failed payout to the bank releases the withdrawal's hold.
    let b_bank = bank(&mut users, &bob, "4444555566").await;
    let unfreeze =
        wire::AccountCommand { command: Some(wire::account_command::Command::Unfreeze(wallet(&bob).to_string())) };
    ledger
        .create_accounts(authed(wire::CreateAccountsRequest { commands: vec![unfreeze] }, ADMIN))
        .await
        .expect("unfreeze");
    fund(&server, &bob, "USD", "1000", "2").await;
    let withdraw = wire::WithdrawRequest {
        idempotency_key: "w".into(),
        amount: "2.14".into(),
        currency: "USD".into(),
        instrument_id: b_bank,
    };
    let created = payments.withdraw(authed(withdraw, &bob.token)).await.expect("withdraw").into_inner();
    let failed = settled(&mut payments, &bob.token, &created.payment_id, &TERMINAL).await;
    assert_eq!(failed.status, "failed");
    assert!(failed.steps.iter().any(|s| s.step == "void_hold" && s.outcome == "succeeded"), "{failed:?}");
    assert_eq!(balance(&server, wallet(&bob)).await, (1_000, 0));
    assert_clearing_is_zero(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_are_approved_rejected_or_time_out_with_the_funds_on_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &["--review-timeout-secs", "3"]);
    let mut users = server.users().await;
    let mut payments = wire::payments_client::PaymentsClient::new(
        Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect"),
    );
    let alice = person(&mut users, "Alice", "alice@example.com").await;
    let bob = person(&mut users, "Bob", "bob@example.com").await;
    fund(&server, &alice, "USD", "300000", "1").await;

    // Above 500.00 to a payee never paid before: review, with the money held.
    let mut ids = Vec::new();
    for key in ["v1", "v2", "v3"] {
        let created = payments.send(authed(send(key, &bob, "600.00", "wallet", ""), &alice.token)).await.expect("send");
        let created = created.into_inner();
        let held = settled(&mut payments, &alice.token, &created.payment_id, &["requires_review"]).await;
        assert!(held.risk_reasons.iter().any(|r| r == "new_payee"), "{held:?}");
        ids.push(created.payment_id);
    }
    // Wait until the three holds are placed.
    let started = Instant::now();
    while balance(&server, wallet(&alice)).await.1 != 180_000 {
        assert!(started.elapsed() < Duration::from_secs(10), "holds not placed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queue =
        payments.list_reviews(authed(wire::ListReviewsRequest::default(), ADMIN)).await.expect("queue").into_inner();
    assert_eq!(queue.payments.len(), 3);
    let review = |id: &str, approve: bool| wire::ReviewPaymentRequest { payment_id: id.into(), approve };
    let by_user = payments.review_payment(authed(review(&ids[0], true), &alice.token)).await;
    assert_eq!(by_user.map(|_| ()).map_err(|s| s.code()), Err(Code::PermissionDenied));
    payments.review_payment(authed(review(&ids[0], true), ADMIN)).await.expect("approve");
    payments.review_payment(authed(review(&ids[1], false), ADMIN)).await.expect("reject");
    let approved = settled(&mut payments, &alice.token, &ids[0], &TERMINAL).await;
    let rejected = settled(&mut payments, &alice.token, &ids[1], &TERMINAL).await;
    let timed_out = settled(&mut payments, &alice.token, &ids[2], &TERMINAL).await;
    assert_eq!(approved.status, "completed");
    assert_eq!((rejected.status.as_str(), rejected.reason.as_str()), ("failed", "rejected_in_review"));
    assert_eq!((timed_out.status.as_str(), timed_out.reason.as_str()), ("cancelled", "review_timed_out"));
    assert_eq!(balance(&server, wallet(&alice)).await, (240_000, 0), "one paid, two released");
    assert_eq!(balance(&server, wallet(&bob)).await, (60_000, 0));
    let late = payments.review_payment(authed(review(&ids[2], true), ADMIN)).await;
    assert_eq!(late.map(|_| ()).map_err(|s| s.code()), Err(Code::FailedPrecondition));
}
