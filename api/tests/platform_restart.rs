//! A SIGKILL of `ledgerd` with open payments waiting on a slow rail, live quotes and
//! signed-in users: after the restart every open payment resumes and completes, every
//! live quote still converts once, and sessions are as the README says (they survive
//! a restart; idle time counts from sign-in).

use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;
use tonic::Code;

mod common;

use common::{authed, bank, fund, person, settled, Rails, Server, ADMIN};

const OPEN_PAYMENTS: usize = 4;

fn start(dir: &std::path::Path, rails: &Rails) -> Server {
    Server::start_with(dir, &["--rails", &rails.addr, "--rail-timeout-ms", "2000"])
}

async fn connect(server: &Server) -> Channel {
    Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_payments_live_quotes_and_sessions_outlive_a_sigkill() {
    // Bank collections stay pending for 3 s: the kill lands while they wait.
    let rails = Rails::start(&["--settle-ms", "3000"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &rails);
    let mut users = server.users().await;
    let alice = person(&mut users, "Alice", "alice@example.com").await;
    let bob = person(&mut users, "Bob", "bob@example.com").await;
    let alice_bank = bank(&mut users, &alice, "1111222233").await;
    fund(&server, &alice, "USD", "10000", "1").await;
    let mut fx = wire::fx_client::FxClient::new(connect(&server).await);
    let rate =
        wire::Rate { base: "EUR".into(), quote: "USD".into(), rate: "1.08".into(), source: "test".into(), as_of_ns: 0 };
    fx.set_rates(authed(wire::SetRatesRequest { rates: vec![rate] }, ADMIN)).await.expect("rates");
    let sell = wire::GetQuoteRequest {
        from_currency: "USD".into(),
        to_currency: "EUR".into(),
        from_amount: "20.00".into(),
        ..Default::default()
    };
    let quote = fx.get_quote(authed(sell, &alice.token)).await.expect("quote").into_inner();

    let mut payments = wire::payments_client::PaymentsClient::new(connect(&server).await);
    let mut open = Vec::new();
    for n in 0..OPEN_PAYMENTS {
        let send = wire::SendRequest {
            idempotency_key: format!("slow-{n}"),
            receiver_user_id: bob.id.clone(),
            amount: "5.00".into(),
            currency: "USD".into(),
            funding: "bank_account".into(),
            instrument_id: alice_bank.clone(),
            ..Default::default()
        };
        let created = payments.send(authed(send, &alice.token)).await.expect("send").into_inner();
        open.push(created.payment_id);
    }
    // Wait until each is waiting on the rail, then kill.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for id in &open {
        loop {
            let request =
                authed(wire::GetPaymentRequest { payment_id: id.clone(), ..Default::default() }, &alice.token);
            let payment = payments.get_payment(request).await.expect("get").into_inner();
            if payment.steps.iter().any(|s| s.step == "collect") {
                assert_ne!(payment.status, "completed", "the kill must land while it waits: {payment:?}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no collection started: {payment:?}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    drop(payments);
    drop(fx);
    drop(users);
    drop(server); // SIGKILL

    let server = start(dir.path(), &rails);
    // Sessions survive the restart.
    let mut users = server.users().await;
    users.get_profile(authed(wire::UserRequest::default(), &alice.token)).await.expect("alice's session still works");
    // Every open payment resumes and completes.
    let mut payments = wire::payments_client::PaymentsClient::new(connect(&server).await);
    for id in &open {
        let done = settled(&mut payments, &alice.token, id, &["completed", "failed", "cancelled"]).await;
        assert_eq!(done.status, "completed", "{done:?}");
    }
    // The live quote converts, once.
    let mut fx = wire::fx_client::FxClient::new(connect(&server).await);
    let execute = wire::ExecuteQuoteRequest { quote_id: quote.quote_id.clone(), ..Default::default() };
    let done = fx.execute_quote(authed(execute.clone(), &alice.token)).await.expect("converts after the kill");
    let again = fx.execute_quote(authed(execute.clone(), &alice.token)).await.expect("the same conversion");
    assert_eq!(again.into_inner().transfer_ids, done.into_inner().transfer_ids);
    let other = fx.execute_quote(authed(execute, &bob.token)).await.expect_err("not Bob's quote");
    assert_eq!(other.code(), Code::NotFound);
    let wallets = users.list_wallets(authed(wire::UserRequest::default(), &alice.token)).await.expect("wallets");
    let mut held: Vec<(String, String)> =
        wallets.into_inner().wallets.into_iter().map(|w| (w.currency, w.balance)).collect();
    held.sort();
    // 100.00 USD funded, 20.00 sold for 18.42 EUR (at 1/1.08 less 0.5 %, rounded down);
    // the bank-funded payments moved nothing out of the wallet.
    assert_eq!(held, [("EUR".to_string(), quote.to_amount.clone()), ("USD".to_string(), "80.00".to_string())]);
}
