//! Monthly statements through the real `ledgerd`: a user with a top-up by card, a
//! payment in (paid by card, its fee the payer's), a payment out, a refund and an FX
//! conversion with a fee in the month. The statement adds up, its closing is the
//! wallet's balance at the month's end, and every line names the right counterparty.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ledger_core::calendar::civil_from_days;
use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;
use tonic::Code;

mod common;

use common::{authed, card, channel, person, Person, Server, ADMIN};

type Payments = wire::payments_client::PaymentsClient<Channel>;

async fn completed(payments: &mut Payments, token: &str, created: wire::Payment) -> wire::Payment {
    let started = Instant::now();
    loop {
        let request = wire::GetPaymentRequest { payment_id: created.payment_id.clone(), ..Default::default() };
        let payment = payments.get_payment(authed(request, token)).await.expect("get").into_inner();
        if payment.status == "completed" || payment.status == "partially_refunded" {
            return payment;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "payment stuck: {payment:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn send(key: &str, to: &Person, amount: &str, funding: &str, instrument: &str, note: &str) -> wire::SendRequest {
    wire::SendRequest {
        idempotency_key: key.into(),
        receiver_user_id: to.id.clone(),
        amount: amount.into(),
        currency: "USD".into(),
        funding: funding.into(),
        instrument_id: instrument.into(),
        note: note.into(),
        ..Default::default()
    }
}

fn this_month() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let (year, month, _) = civil_from_days((now / 86_400) as i64);
    format!("{year:04}-{month:02}")
}

fn n(text: &str) -> i128 {
    text.parse().unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

/// Sets up the month's activity of Ann; returns (ann, bob's payment to Ann, Ann's
/// payment to Cy, the conversion's received EUR in minor units).
async fn activity(server: &Server) -> (Person, String, String, i128) {
    let mut users = server.users().await;
    let ann = person(&mut users, "Ann Oakley", "ann.oakley@example.com").await;
    let bob = person(&mut users, "Bob Tanaka", "bob.tanaka@example.com").await;
    let cy = person(&mut users, "Cy Novak", "cy.novak@example.com").await;
    let mut payments = wire::payments_client::PaymentsClient::new(channel(server).await);
    let ann_card = card(&mut users, &ann).await;
    let top_up = wire::TopUpRequest {
        idempotency_key: "t1".into(),
        amount: "100.00".into(),
        currency: "USD".into(),
        instrument_id: ann_card,
    };
    let top_up = payments.top_up(authed(top_up, &ann.token)).await.expect("top up").into_inner();
    assert_eq!(completed(&mut payments, &ann.token, top_up).await.fee, "2.90", "the card's fee is on the card");
    let bob_card = card(&mut users, &bob).await;
    let paid_in = payments
        .send(authed(send("b1", &ann, "30.00", "card", &bob_card, "concert tickets"), &bob.token))
        .await
        .expect("bob pays")
        .into_inner();
    let paid_in = completed(&mut payments, &bob.token, paid_in).await.payment_id;
    let paid_out = payments
        .send(authed(send("a1", &cy, "40.00", "wallet", "", "rent share"), &ann.token))
        .await
        .expect("ann pays");
    let paid_out = completed(&mut payments, &ann.token, paid_out.into_inner()).await.payment_id;
    let refund = wire::RefundRequest { payment_id: paid_out.clone(), amount: "15.00".into(), refund_id: "r1".into() };
    payments.refund(authed(refund, &cy.token)).await.expect("cy refunds part");

    let mut fx = wire::fx_client::FxClient::new(channel(server).await);
    let rate = wire::Rate {
        base: "EUR".into(),
        quote: "USD".into(),
        rate: "1.085".into(),
        source: "test".into(),
        as_of_ns: 0,
    };
    fx.set_rates(authed(wire::SetRatesRequest { rates: vec![rate] }, ADMIN)).await.expect("rates");
    let quote = wire::GetQuoteRequest {
        from_currency: "USD".into(),
        to_currency: "EUR".into(),
        from_amount: "20.00".into(),
        to_amount: String::new(),
    };
    let quote = fx.get_quote(authed(quote, &ann.token)).await.expect("quote").into_inner();
    assert_eq!(quote.fee, "0.20", "1 % of 20.00");
    let execute = wire::ExecuteQuoteRequest { quote_id: quote.quote_id.clone(), ..Default::default() };
    fx.execute_quote(authed(execute, &ann.token)).await.expect("convert");
    let received = n(&quote.to_amount.replace('.', ""));
    (ann, paid_in, paid_out, received)
}

#[tokio::test]
async fn a_monthly_statement_adds_up_matches_the_ledger_and_names_every_counterparty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &["--fx-fee-bps", "100"]);
    let (ann, paid_in, paid_out, received_eur) = activity(&server).await;
    let mut payments = wire::payments_client::PaymentsClient::new(channel(&server).await);
    let month = this_month();
    let ask = |currency: &str| wire::GetStatementRequest {
        month: month.clone(),
        currency: currency.into(),
        utc_offset_minutes: 0,
        user_id: String::new(),
    };
    let answer = payments.get_statement(authed(ask("USD"), &ann.token)).await.expect("statement").into_inner();
    assert_eq!(answer.statements.len(), 1);
    let s = &answer.statements[0];
    assert_eq!((s.currency.as_str(), s.holder_name.as_str(), s.month.as_str()), ("USD", "Ann Oakley", month.as_str()));
    let (opening, money_in, money_out, fees, closing) =
        (n(&s.opening), n(&s.money_in), n(&s.money_out), n(&s.fees), n(&s.closing));
    assert_eq!(opening + money_in - money_out - fees, closing, "the statement adds up: {s:?}");
    assert_eq!((opening, money_in, money_out, fees, closing), (0, 14_500, 6_000, 20, 8_480));
    let lines: i128 = s.lines.iter().map(|l| n(&l.amount_in) - n(&l.amount_out) - n(&l.fee)).sum();
    assert_eq!(lines, closing - opening, "the lines sum to the change");

    // The closing is the wallet's balance at the month's end, as GetBalance has it.
    let mut ledger = server.client().await;
    let balance = wire::GetBalanceRequest { account_id: s.account_id.clone(), as_of_ns: s.to_ns - 1, min_position: 0 };
    let balance = ledger.get_balance(authed(balance, ADMIN)).await.expect("balance").into_inner();
    assert_eq!(n(&balance.credits_posted) - n(&balance.debits_posted), closing);

    let by_kind = |kind: &str| -> Vec<&wire::StatementLine> { s.lines.iter().filter(|l| l.kind == kind).collect() };
    let one = |kind: &str| -> &wire::StatementLine {
        let found = by_kind(kind);
        assert_eq!(found.len(), 1, "one {kind} line in {:?}", s.lines);
        found[0]
    };
    let top_up = one("top_up");
    assert_eq!((n(&top_up.amount_in), top_up.counterparty_name.as_str()), (10_000, "card"));
    let received = one("payment_received");
    assert_eq!(
        (n(&received.amount_in), received.counterparty_name.as_str(), received.note.as_str(), &received.payment_id),
        (3_000, "Bob Tanaka", "concert tickets", &paid_in)
    );
    let sent = one("payment_sent");
    assert_eq!(
        (n(&sent.amount_out), sent.counterparty_name.as_str(), sent.note.as_str(), &sent.payment_id),
        (4_000, "Cy Novak", "rent share", &paid_out)
    );
    let refund = one("refund_received");
    assert_eq!(
        (n(&refund.amount_in), refund.counterparty_name.as_str(), &refund.payment_id),
        (1_500, "Cy Novak", &paid_out)
    );
    let conversion = one("conversion");
    assert_eq!((n(&conversion.amount_out), conversion.counterparty_name.as_str()), (2_000, "currency exchange"));
    assert_eq!((conversion.fx_other_currency.as_str(), n(&conversion.fx_other_amount)), ("EUR", received_eur));
    assert!(!conversion.fx_rate.is_empty());
    let fee = one("fee");
    assert_eq!((n(&fee.fee), n(&fee.amount_out)), (20, 0));
    assert_eq!(s.lines.len(), 6, "every posted movement is a line: {:?}", s.lines);
    assert!(s.lines.windows(2).all(|w| w[0].at_ns <= w[1].at_ns), "oldest first");
    assert_eq!(n(&s.lines[5].balance), closing);

    // Every wallet without --currency: EUR too, where the conversion came in.
    let all = payments.get_statement(authed(ask(""), &ann.token)).await.expect("all").into_inner().statements;
    let currencies: Vec<&str> = all.iter().map(|s| s.currency.as_str()).collect();
    assert_eq!(currencies, ["EUR", "USD"]);
    assert_eq!(n(&all[0].closing), received_eur);
    assert_eq!(all[0].lines[0].fx_other_currency, "USD");

    // An admin reads anyone's; a user only their own; bad input is refused.
    let as_admin = wire::GetStatementRequest { user_id: ann.id.clone(), ..ask("USD") };
    let admin = payments.get_statement(authed(as_admin.clone(), ADMIN)).await.expect("admin").into_inner();
    assert_eq!(admin.statements[0].closing, s.closing);
    let mut users = server.users().await;
    let eve = person(&mut users, "Eve Ward", "eve.ward@example.com").await;
    let code = |r: Result<tonic::Response<wire::GetStatementResponse>, tonic::Status>| r.expect_err("refused").code();
    assert_eq!(code(payments.get_statement(authed(as_admin, &eve.token)).await), Code::PermissionDenied);
    let bad_month = wire::GetStatementRequest { month: "2026-13".into(), ..ask("USD") };
    assert_eq!(code(payments.get_statement(authed(bad_month, &ann.token)).await), Code::InvalidArgument);
    let bad_offset = wire::GetStatementRequest { utc_offset_minutes: 7, ..ask("USD") };
    assert_eq!(code(payments.get_statement(authed(bad_offset, &ann.token)).await), Code::InvalidArgument);
    assert_eq!(code(payments.get_statement(authed(ask("JPY"), &ann.token)).await), Code::NotFound);
    let previous = wire::GetStatementRequest { month: "2020-01".into(), ..ask("USD") };
    let quiet = payments.get_statement(authed(previous, &ann.token)).await.expect("an old month").into_inner();
    assert!(quiet.statements[0].lines.is_empty() && quiet.statements[0].closing == "0");
}
