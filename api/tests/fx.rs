//! Exchange rates, quotes and conversions through the real `ledgerd`: quote then
//! execute, a rate change between quote and execution, a chain
//! across currencies with exponents 2, 0 and 3, a cross-currency payment to another
//! user, the platform's position, converted reports, and an audit that finds every
//! currency balanced.

use std::time::Duration;

use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;
use tonic::Code;

mod common;

use common::{audit_verify, authed, fund, person, Server, ADMIN};

type Fx = wire::fx_client::FxClient<Channel>;

fn rate(base: &str, quote: &str, rate: &str) -> wire::Rate {
    wire::Rate { base: base.into(), quote: quote.into(), rate: rate.into(), source: "test".into(), as_of_ns: 0 }
}

fn sell(from: &str, to: &str, amount: &str) -> wire::GetQuoteRequest {
    wire::GetQuoteRequest {
        from_currency: from.into(),
        to_currency: to.into(),
        from_amount: amount.into(),
        ..Default::default()
    }
}

fn execute(quote: &wire::Quote) -> wire::ExecuteQuoteRequest {
    wire::ExecuteQuoteRequest { quote_id: quote.quote_id.clone(), ..Default::default() }
}

async fn wallets(server: &Server, token: &str) -> Vec<(String, String)> {
    let mut users = server.users().await;
    let list = users.list_wallets(authed(wire::UserRequest::default(), token)).await.expect("wallets").into_inner();
    list.wallets.into_iter().map(|w| (w.currency, w.balance)).collect()
}

fn code<T>(result: Result<T, tonic::Status>) -> Code {
    result.map(|_| Code::Ok).unwrap_or_else(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_conversions_chains_positions_and_converted_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with(dir.path(), &["--fx-quote-ttl-secs", "2"]);
    let mut users = server.users().await;
    let mut fx: Fx = wire::fx_client::FxClient::new(
        Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect"),
    );
    let alice = person(&mut users, "Alice", "alice@example.com").await;
    let bob = person(&mut users, "Bob", "bob@example.com").await;
    fund(&server, &alice, "USD", "100000", "1").await;

    // Rates: only admins set them; every change is kept.
    let rates = vec![rate("EUR", "USD", "1.08"), rate("USD", "JPY", "150"), rate("BHD", "USD", "2.65")];
    let by_user = fx.set_rates(authed(wire::SetRatesRequest { rates: rates.clone() }, &alice.token)).await;
    assert_eq!(code(by_user), Code::PermissionDenied);
    assert_eq!(
        code(fx.set_rates(authed(wire::SetRatesRequest { rates: vec![rate("USD", "EUR", "-1")] }, ADMIN)).await),
        Code::InvalidArgument
    );
    fx.set_rates(authed(wire::SetRatesRequest { rates }, ADMIN)).await.expect("set rates");
    let listed = fx.list_rates(authed(wire::ListRatesRequest {}, &alice.token)).await.expect("rates").into_inner();
    assert_eq!(listed.rates.len(), 3);

    // Quote then execute: 100.00 USD at 1/1.08 less 0.5 % = 92.1296… EUR, rounded down.
    let quote = fx.get_quote(authed(sell("USD", "EUR", "100.00"), &alice.token)).await.expect("quote").into_inner();
    assert_eq!((quote.from_amount.as_str(), quote.to_amount.as_str(), quote.fee.as_str()), ("100.00", "92.12", "0.00"));
    assert_eq!(quote.spread_bps, 50);
    assert!(quote.rates_used[0].starts_with("EUR/USD 1.08"), "{:?}", quote.rates_used);
    let done = fx.execute_quote(authed(execute(&quote), &alice.token)).await.expect("execute").into_inner();
    assert_eq!(done.transfer_ids.len(), 3, "sold, paid, spread booked");
    let again = fx.execute_quote(authed(execute(&quote), &alice.token)).await.expect("again").into_inner();
    assert_eq!(again.transfer_ids, done.transfer_ids, "executing twice converts once");
    assert_eq!(code(fx.execute_quote(authed(execute(&quote), &bob.token)).await), Code::NotFound, "not Bob's quote");

    // A chain through three more currencies, exponents 2 → 0 → 3: EUR → JPY → BHD.
    // 50.00 EUR at 1.08 × 150 = 162 less 0.5 %: 8,059.5 → 8,059 JPY.
    let q = fx.get_quote(authed(sell("EUR", "JPY", "50.00"), &alice.token)).await.expect("quote").into_inner();
    assert_eq!(q.to_amount, "8059");
    fx.execute_quote(authed(execute(&q), &alice.token)).await.expect("EUR→JPY");
    // 8,059 JPY / 150 / 2.65 less 0.5 % = 20.1728… → 20.172 BHD.
    let q = fx.get_quote(authed(sell("JPY", "BHD", "8059"), &alice.token)).await.expect("quote").into_inner();
    assert_eq!(q.to_amount, "20.172");
    assert_eq!(q.rates_used.len(), 2, "through the pivot: {:?}", q.rates_used);
    fx.execute_quote(authed(execute(&q), &alice.token)).await.expect("JPY→BHD");
    // The other side fixed: receive exactly 10.000 BHD; pay ceil(10 × 2.65 / 0.995) = 26.64 USD.
    let receive = wire::GetQuoteRequest {
        from_currency: "USD".into(),
        to_currency: "BHD".into(),
        to_amount: "10.000".into(),
        ..Default::default()
    };
    let q = fx.get_quote(authed(receive, &alice.token)).await.expect("quote").into_inner();
    assert_eq!((q.from_amount.as_str(), q.to_amount.as_str()), ("26.64", "10.000"));
    fx.execute_quote(authed(execute(&q), &alice.token)).await.expect("USD→BHD");
    let mut held = wallets(&server, &alice.token).await;
    held.sort();
    let expected = [("BHD", "30.172"), ("EUR", "42.12"), ("JPY", "0"), ("USD", "873.36")];
    assert_eq!(held, expected.map(|(c, b)| (c.to_string(), b.to_string())));

    // A cross-currency payment: Alice pays Bob in yen from her dollars.
    let q = fx.get_quote(authed(sell("USD", "JPY", "10.00"), &alice.token)).await.expect("quote").into_inner();
    let to_bob = wire::ExecuteQuoteRequest {
        quote_id: q.quote_id.clone(),
        receiver_email: "bob@example.com".into(),
        ..Default::default()
    };
    let paid = fx.execute_quote(authed(to_bob, &alice.token)).await.expect("pay Bob").into_inner();
    assert_eq!(paid.receiver_id, bob.id);
    assert_eq!(wallets(&server, &bob.token).await, [("JPY".to_string(), "1492".to_string())]);

    // A cross-currency payment through the payments saga: Bob is paid in euros.
    let mut payments = wire::payments_client::PaymentsClient::new(
        Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect"),
    );
    let q = fx.get_quote(authed(sell("USD", "EUR", "20.00"), &alice.token)).await.expect("quote").into_inner();
    let send = wire::SendRequest {
        idempotency_key: "eur-for-bob".into(),
        receiver_email: "bob@example.com".into(),
        quote_id: q.quote_id.clone(),
        ..Default::default()
    };
    let created = payments.send(authed(send.clone(), &alice.token)).await.expect("send").into_inner();
    assert_eq!((created.amount.as_str(), created.currency.as_str()), ("20.00", "USD"));
    assert_eq!((created.receive_amount.as_str(), created.receive_currency.as_str()), ("18.42", "EUR"));
    let retry = payments.send(authed(send.clone(), &alice.token)).await.expect("retry").into_inner();
    assert_eq!(retry.payment_id, created.payment_id);
    let reuse = wire::SendRequest { idempotency_key: "again".into(), ..send };
    assert_eq!(code(payments.send(authed(reuse, &alice.token)).await), Code::FailedPrecondition, "a quote pays once");
    let started = std::time::Instant::now();
    loop {
        let get = wire::GetPaymentRequest { payment_id: created.payment_id.clone(), ..Default::default() };
        let p = payments.get_payment(authed(get, &alice.token)).await.expect("get").into_inner();
        if p.status == "completed" {
            assert_eq!(p.transfer_ids.len(), 3, "{p:?}");
            break;
        }
        assert!(p.status == "processing" || p.status == "created", "{p:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut bob_has = wallets(&server, &bob.token).await;
    bob_has.sort();
    assert_eq!(bob_has, [("EUR".to_string(), "18.42".to_string()), ("JPY".to_string(), "1492".to_string())]);

    // A rate change after quoting does not change a live quote; a new quote sees it.
    let live = fx.get_quote(authed(sell("USD", "EUR", "10.00"), &alice.token)).await.expect("quote").into_inner();
    fx.set_rates(authed(wire::SetRatesRequest { rates: vec![rate("EUR", "USD", "1.25")] }, ADMIN))
        .await
        .expect("new rate");
    let fresh = fx.get_quote(authed(sell("USD", "EUR", "10.00"), &alice.token)).await.expect("quote").into_inner();
    assert_eq!((live.to_amount.as_str(), fresh.to_amount.as_str()), ("9.21", "7.96"));
    fx.execute_quote(authed(execute(&live), &alice.token)).await.expect("live quote");
    // (An expired quote failing clearly and moving nothing is tested on a manual clock:
    // ledger-platform's tests/expiry.rs; its status code in api's grpc::status.)
    // More than the wallet holds: refused by the ledger, nothing moves.
    let big = fx.get_quote(authed(sell("USD", "EUR", "5000.00"), &alice.token)).await.expect("quote").into_inner();
    assert_eq!(code(fx.execute_quote(authed(execute(&big), &alice.token)).await), Code::FailedPrecondition);
    let after = wallets(&server, &alice.token).await;
    assert!(after.contains(&("USD".to_string(), "833.36".to_string())), "{after:?}");
    // Bad requests.
    assert_eq!(code(fx.get_quote(authed(sell("USD", "XXZ", "1"), &alice.token)).await), Code::InvalidArgument);
    assert_eq!(
        code(fx.get_quote(authed(sell("USD", "GBP", "1"), &alice.token)).await),
        Code::FailedPrecondition,
        "no rate"
    );
    assert_eq!(code(fx.get_quote(authed(sell("USD", "EUR", "1.001"), &alice.token)).await), Code::InvalidArgument);
    assert_eq!(code(fx.get_quote(authed(sell("USD", "USD", "1"), &alice.token)).await), Code::InvalidArgument);

    // The platform's position per currency is the sum of the conversions.
    let position =
        fx.get_position(authed(wire::GetPositionRequest::default(), ADMIN)).await.expect("position").into_inner();
    let by: std::collections::BTreeMap<String, String> =
        position.currencies.iter().map(|c| (c.currency.clone(), c.position.clone())).collect();
    // What came in, less what went out and the spread booked from it: each conversion
    // at mid (rounded down to a unit). USD: 100.00 + 26.64 + 10.00 + 10.00 in. EUR:
    // 50.00 in; 100 USD are 92.59 EUR at mid (92.12 paid + 0.47 spread), 10 USD 9.25.
    // JPY: 8,059 in; 50 EUR are 8,100 JPY at mid, 10 USD 1,500. BHD: 8,059 JPY are
    // 20.274 at mid, 26.64 USD 10.052.
    assert_eq!(by["USD"], "166.64");
    // (and 20 USD paid to Bob: 18.52 EUR at mid, 18.42 paid + 0.09 spread, rounded down)
    assert_eq!(by["EUR"], "-70.35");
    assert_eq!(by["JPY"], "-1541");
    assert_eq!(by["BHD"], "-30.326");
    let spread: std::collections::BTreeMap<String, String> =
        position.currencies.iter().map(|c| (c.currency.clone(), c.revenue.clone())).collect();
    assert_eq!((spread["EUR"].as_str(), spread["JPY"].as_str(), spread["BHD"].as_str()), ("0.60", "49", "0.154"));
    // Valued in USD at today's mid, each rounded half to even: 0.60 EUR × 1.25 → 75
    // cents; 49 JPY / 150 → 33 cents; 0.154 BHD × 2.65 → 41 cents.
    assert_eq!((position.revenue.as_str(), position.revenue_currency.as_str()), ("1.49", "USD"));

    // Alice's report over all her wallets, totalled in USD at the period's rates.
    const QUARTER: u64 = 900_000_000_000;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    let from = now / QUARTER * QUARTER - 4 * QUARTER;
    let mut ledger = server.client().await;
    let report = wire::GetReportRequest {
        owner_id: alice.id.clone(),
        from_ns: from,
        to_ns: from + 8 * QUARTER,
        convert_to: "USD".into(),
        ..Default::default()
    };
    let report = ledger.get_report(authed(report, &alice.token)).await.expect("report").into_inner();
    assert_eq!(report.reports.len(), 4);
    let converted = report.converted.expect("converted totals");
    assert_eq!(converted.currency, "USD");
    assert_eq!(converted.opening, "0");
    assert!(!converted.rates_used.is_empty());
    let closing: i128 = converted.closing.parse().expect("closing");
    // 833.36 USD + 51.33 EUR × 1.25 + 30.172 BHD × 2.65: 833.36 + 64.16 + 79.96.
    assert_eq!(closing, 83_336 + 6_416 + 7_996);

    // Every currency balances after every event, and the chain holds.
    assert!(server.terminate().success());
    let data_dir = dir.path().join("data");
    audit_verify(&data_dir);

    // After a restart the rates come back from their events and the position from the accounts.
    let server = Server::start_with(dir.path(), &["--fx-quote-ttl-secs", "2"]);
    let mut fx: Fx = wire::fx_client::FxClient::new(
        Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect"),
    );
    let again =
        fx.get_position(authed(wire::GetPositionRequest::default(), ADMIN)).await.expect("position").into_inner();
    assert_eq!(again.currencies, position.currencies);
    let rates = fx.list_rates(authed(wire::ListRatesRequest {}, ADMIN)).await.expect("rates").into_inner().rates;
    assert!(rates.iter().any(|r| r.base == "EUR" && r.quote == "USD" && r.rate == "1.25"), "{rates:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_book_holds_a_bounded_number_of_pairs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut fx: Fx = wire::fx_client::FxClient::new(
        Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect"),
    );
    let max = ledger_platform::fx::RATE_PAIRS_MAX;
    let codes: Vec<&str> = ledger_core::money::Currency::all().map(|c| c.code()).collect();
    let pairs: Vec<(&str, &str)> =
        codes.iter().flat_map(|b| codes.iter().filter(move |q| q != &b).map(move |q| (*b, *q))).take(max + 1).collect();
    let rates: Vec<wire::Rate> = pairs[..max].iter().map(|(b, q)| rate(b, q, "1.5")).collect();
    fx.set_rates(authed(wire::SetRatesRequest { rates }, ADMIN)).await.expect("up to the limit");
    let (b, q) = pairs[max];
    let one_more = fx.set_rates(authed(wire::SetRatesRequest { rates: vec![rate(b, q, "2")] }, ADMIN)).await;
    let refused = one_more.expect_err("a pair past the limit");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("rates:"), "{}", refused.message());
    let (b, q) = pairs[0];
    fx.set_rates(authed(wire::SetRatesRequest { rates: vec![rate(b, q, "2")] }, ADMIN))
        .await
        .expect("a new rate, old pair");
    let listed = fx.list_rates(authed(wire::ListRatesRequest {}, ADMIN)).await.expect("rates").into_inner();
    assert_eq!(listed.rates.len(), max);
}
