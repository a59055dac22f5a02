//! Regressions of issue 19, each through the real `ledgerd`: a user without wallets,
//! risk rules that only review, risk valued in money, a reused refund id, amounts in a
//! strict grammar, failure reasons in plain words, and holds shown with how they ended.

use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;
use tonic::Code;

mod common;

use common::{authed, card, channel, fund, person, settled, Person, Server, ADMIN};

type Users = wire::users_client::UsersClient<Channel>;
type Payments = wire::payments_client::PaymentsClient<Channel>;
type Fx = wire::fx_client::FxClient<Channel>;

const SETTLED: [&str; 6] = ["requires_review", "completed", "failed", "cancelled", "refunded", "partially_refunded"];

fn code<T>(result: Result<T, tonic::Status>) -> Code {
    result.map(|_| Code::Ok).unwrap_or_else(|s| s.code())
}

fn send(key: &str, to: &Person, amount: &str, currency: &str) -> wire::SendRequest {
    wire::SendRequest {
        idempotency_key: key.into(),
        receiver_user_id: to.id.clone(),
        amount: amount.into(),
        currency: currency.into(),
        funding: "wallet".into(),
        ..Default::default()
    }
}

async fn run(payments: &mut Payments, token: &str, request: wire::SendRequest) -> wire::Payment {
    let created = payments.send(authed(request, token)).await.expect("send").into_inner();
    settled(payments, token, &created.payment_id, &SETTLED).await
}

fn rate(base: &str, quote: &str, rate: &str) -> wire::Rate {
    wire::Rate { base: base.into(), quote: quote.into(), rate: rate.into(), source: "test".into(), as_of_ns: 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_wallets_lists_them_and_deletes_themselves_and_fx_position_answers_before_any_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut users: Users = server.users().await;
    let mut fx: Fx = wire::fx_client::FxClient::new(channel(&server).await);

    let position = wire::GetPositionRequest { value_in: String::new() };
    let position = fx.get_position(authed(position, ADMIN)).await.expect("position before any rate").into_inner();
    assert!(position.currencies.is_empty(), "{position:?}");

    let carol = person(&mut users, "Carol", "carol@example.com").await;
    let wallets = users.list_wallets(authed(wire::UserRequest::default(), &carol.token)).await;
    assert!(wallets.expect("wallets of a user without any").into_inner().wallets.is_empty());
    let reauth = wire::ReauthRequest { current_password: common::PASSWORD.into(), ..Default::default() };
    users.delete_user(authed(reauth, &carol.token)).await.expect("a user without wallets deletes themselves");
    let me = users.get_profile(authed(wire::UserRequest::default(), &carol.token)).await;
    assert_eq!(code(me), Code::Unauthenticated, "the deleted user's session ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_rules_never_add_up_to_a_block_and_limits_are_money_in_usd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut users: Users = server.users().await;
    let mut payments: Payments = wire::payments_client::PaymentsClient::new(channel(&server).await);
    let mut fx: Fx = wire::fx_client::FxClient::new(channel(&server).await);
    let alice = person(&mut users, "Alice", "alice@example.com").await;
    let bob = person(&mut users, "Bob", "bob@example.com").await;

    // A new card paying 600.00 to a new payee: two review rules, reviewed, approved.
    let card = card(&mut users, &alice).await;
    let by_card =
        wire::SendRequest { funding: "card".into(), instrument_id: card, ..send("card", &bob, "600.00", "USD") };
    let reviewed = run(&mut payments, &alice.token, by_card).await;
    assert_eq!((reviewed.status.as_str(), reviewed.risk_decision.as_str()), ("requires_review", "review"));
    assert_eq!(reviewed.risk_reasons, ["new_instrument", "new_payee"], "{reviewed:?}");
    let approve = wire::ReviewPaymentRequest { payment_id: reviewed.payment_id.clone(), approve: true };
    payments.review_payment(authed(approve, ADMIN)).await.expect("a review can be decided");
    let approved = settled(&mut payments, &alice.token, &reviewed.payment_id, &["completed", "failed"]).await;
    assert_eq!(approved.status, "completed", "{approved:?}");

    // Limits are in USD; other currencies are valued at the mid rate in force. Dan
    // pays Erin, a new payee, so the new payee rule reviews what is over 500.00 USD.
    let dan = person(&mut users, "Dan", "dan@example.com").await;
    let erin = person(&mut users, "Erin", "erin@example.com").await;
    let rates = vec![rate("BHD", "USD", "2.65"), rate("USD", "JPY", "150")];
    fx.set_rates(authed(wire::SetRatesRequest { rates }, ADMIN)).await.expect("rates");
    fund(&server, &dan, "BHD", "20000000", "101").await;
    fund(&server, &dan, "JPY", "5000000", "102").await;
    fund(&server, &dan, "EUR", "100000", "103").await;
    // 1,000.001 BHD is 2,650.01 USD, under the 10,000.00 limit: it was blocked when
    // limits counted minor units of any currency.
    let bhd = run(&mut payments, &dan.token, send("bhd", &erin, "1000.001", "BHD")).await;
    assert_eq!((bhd.status.as_str(), bhd.risk_decision.as_str()), ("requires_review", "review"), "{bhd:?}");
    assert_eq!(bhd.risk_reasons, ["new_payee"]);
    // 1,000,001 JPY is 6,666.68 USD: under the limit too, and with the BHD payment
    // under the 10,000.00 an hour.
    let jpy = run(&mut payments, &dan.token, send("jpy", &erin, "1000001", "JPY")).await;
    assert_eq!((jpy.risk_decision.as_str(), jpy.risk_reasons.as_slice()), ("review", &["new_payee".to_string()][..]));
    // 4,000.000 BHD is 10,600.00 USD: over the per-payment limit, blocked.
    let over = run(&mut payments, &dan.token, send("over", &erin, "4000.000", "BHD")).await;
    assert_eq!((over.status.as_str(), over.risk_decision.as_str()), ("failed", "block"), "{over:?}");
    assert!(over.reason.contains("10600.00 USD is over the limit of 10000.00 USD"), "{}", over.reason);
    // EUR has no rate to USD (nor through it): never unlimited, reviewed.
    let eur = run(&mut payments, &dan.token, send("eur", &erin, "5.00", "EUR")).await;
    assert_eq!((eur.status.as_str(), eur.risk_decision.as_str()), ("requires_review", "review"), "{eur:?}");
    assert_eq!(eur.risk_reasons, ["no_rate: no rate values EUR in USD"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_ids_amounts_and_failure_reasons_say_what_they_mean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut users: Users = server.users().await;
    let mut payments: Payments = wire::payments_client::PaymentsClient::new(channel(&server).await);
    let mut fx: Fx = wire::fx_client::FxClient::new(channel(&server).await);
    let alice = person(&mut users, "Alice", "alice@example.com").await;
    let bob = person(&mut users, "Bob", "bob@example.com").await;
    fund(&server, &alice, "USD", "2000", "1").await;

    // Amounts follow a strict grammar, named in the error; nothing is created.
    for bad in ["1_000", "1,000", "1e3", " 10", "10.", ".5", "+10", "10.001"] {
        let refused = payments.send(authed(send(bad, &bob, bad, "USD"), &alice.token)).await.expect_err(bad);
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}: {refused:?}");
        assert!(refused.message().starts_with("amount: "), "{bad:?}: {}", refused.message());
    }
    let listed =
        payments.list_payments(authed(wire::ListPaymentsRequest::default(), &alice.token)).await.expect("list");
    assert!(listed.into_inner().payments.is_empty(), "a refused amount created a payment");
    let quote = wire::GetQuoteRequest {
        from_currency: "USD".into(),
        to_currency: "EUR".into(),
        from_amount: "1_000".into(),
        ..Default::default()
    };
    let refused = fx.get_quote(authed(quote, &alice.token)).await.expect_err("quote");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("from_amount: "), "{}", refused.message());
    let rates = vec![rate("EUR", "USD", "1_085")];
    let refused = fx.set_rates(authed(wire::SetRatesRequest { rates }, ADMIN)).await.expect_err("rate");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("rates[0].rate: "), "{}", refused.message());
    let listed = fx.list_rates(authed(wire::ListRatesRequest {}, &alice.token)).await.expect("rates");
    assert!(listed.into_inner().rates.is_empty(), "a refused rate was set");

    // Lack of money is said in words, with a code first.
    let broke = run(&mut payments, &alice.token, send("broke", &bob, "30.00", "USD")).await;
    assert_eq!(broke.status, "failed", "{broke:?}");
    assert_eq!(broke.reason, "insufficient_funds: insufficient funds in the sender's USD wallet");

    // A refund id names one refund: the same amount again is a retry, another amount
    // is refused, and nothing is refunded twice.
    let paid = run(&mut payments, &alice.token, send("paid", &bob, "10.00", "USD")).await;
    assert_eq!(paid.status, "completed", "{paid:?}");
    let refund = |amount: &str, id: &str| wire::RefundRequest {
        payment_id: paid.payment_id.clone(),
        amount: amount.into(),
        refund_id: id.into(),
    };
    let first = payments.refund(authed(refund("2.00", "r1"), &bob.token)).await.expect("refund").into_inner();
    assert_eq!((first.status.as_str(), first.refunded.as_str()), ("partially_refunded", "2.00"));
    let other = payments.refund(authed(refund("3.00", "r1"), &bob.token)).await.expect_err("another amount");
    assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");
    let rest = payments.refund(authed(refund("", "r1"), &bob.token)).await.expect_err("the rest is another amount");
    assert_eq!(rest.code(), Code::AlreadyExists, "{rest:?}");
    let retry = payments.refund(authed(refund("2.00", "r1"), &bob.token)).await.expect("retry").into_inner();
    assert_eq!(retry.refunded, "2.00", "a retry refunds once");
    let bad = payments.refund(authed(refund("1_0", "r2"), &bob.token)).await.expect_err("bad amount");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let full = payments.refund(authed(refund("", "r3"), &bob.token)).await.expect("the rest").into_inner();
    assert_eq!((full.status.as_str(), full.refunded.as_str()), ("refunded", "10.00"));
    let again = payments.refund(authed(refund("", "r3"), &bob.token)).await.expect("retry of the rest");
    assert_eq!(again.into_inner().refunded, "10.00");
    let wallets = users.list_wallets(authed(wire::UserRequest::default(), &alice.token)).await.expect("wallets");
    let balances: Vec<_> = wallets.into_inner().wallets.into_iter().map(|w| (w.currency, w.balance)).collect();
    assert_eq!(balances, [("USD".to_string(), "20.00".to_string())], "paid 10.00, refunded 10.00 once");

    // A refund the receiver cannot pay says why in words.
    let small = run(&mut payments, &alice.token, send("small", &bob, "5.00", "USD")).await;
    assert_eq!(small.status, "completed");
    let mut ledger = server.client().await;
    let bob_wallet = ledger_platform::chart::wallet_account_id(
        bob.id.parse().expect("id"),
        ledger_core::money::Currency::parse("USD").expect("USD"),
    );
    let drain = wire::NewTransfer {
        id: "777".into(),
        debit_account_id: bob_wallet.to_string(),
        credit_account_id: format!("9{}", "085083068"),
        amount: "500".into(),
        currency: "USD".into(),
        code: 1,
        kind: wire::TransferKind::Posted as i32,
        ..Default::default()
    };
    let drained = ledger.create_transfers(authed(wire::CreateTransfersRequest { transfers: vec![drain] }, ADMIN));
    assert!(drained.await.expect("drain").into_inner().results[0].ok);
    let refund_small =
        wire::RefundRequest { payment_id: small.payment_id, amount: String::new(), refund_id: "s".into() };
    let refused = payments.refund(authed(refund_small, &bob.token)).await.expect_err("nothing to refund with");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        "the refund was refused: insufficient_funds: insufficient funds in the receiver's USD wallet"
    );
}

fn transfer(id: &str, kind: wire::TransferKind, amount: &str, pending_id: &str) -> wire::NewTransfer {
    wire::NewTransfer {
        id: id.into(),
        debit_account_id: "1".into(),
        credit_account_id: "2".into(),
        amount: amount.into(),
        currency: "USD".into(),
        code: 1,
        kind: kind as i32,
        pending_id: pending_id.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_hold_shows_how_it_ended_and_is_not_posted_money_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut ledger = server.client().await;
    let open = |id: &str| wire::AccountCommand {
        command: Some(wire::account_command::Command::Open(wire::NewAccount {
            id: id.into(),
            currency: "USD".into(),
            code: 1,
            flags: 0,
            owner_id: "7".into(),
        })),
    };
    let commands = vec![open("1"), open("2")];
    ledger.create_accounts(authed(wire::CreateAccountsRequest { commands }, ADMIN)).await.expect("open");
    use wire::TransferKind::{Pending, PostPending, Posted, VoidPending};
    let transfers = vec![
        transfer("10", Posted, "100", ""),
        transfer("11", Pending, "40", ""),
        transfer("12", PostPending, "", "11"),
        transfer("13", Pending, "25", ""),
        transfer("14", VoidPending, "", "13"),
        transfer("15", Pending, "5", ""),
    ];
    let results = ledger.create_transfers(authed(wire::CreateTransfersRequest { transfers }, ADMIN)).await;
    assert!(results.expect("transfers").into_inner().results.iter().all(|r| r.ok));

    // The ledger's lookup tells how each hold ended and which transfer ended it.
    let ids = vec!["11".into(), "13".into(), "15".into()];
    let found = ledger.lookup_transfers(authed(wire::LookupTransfersRequest { ids }, ADMIN)).await.expect("lookup");
    let found: Vec<_> = found
        .into_inner()
        .transfers
        .into_iter()
        .map(|t| (t.id, wire::PendingStatus::try_from(t.pending_status).expect("status"), t.resolved_by_id))
        .collect();
    assert_eq!(
        found,
        [
            ("11".to_string(), wire::PendingStatus::Posted, "12".to_string()),
            ("13".to_string(), wire::PendingStatus::Voided, "14".to_string()),
            ("15".to_string(), wire::PendingStatus::Pending, String::new()),
        ]
    );

    // History: every movement, each hold with how it ended; a status filter matches a
    // hold once (its own row while it stands, then the movement that ended it).
    let history = |status: wire::MovementStatus| wire::GetHistoryRequest {
        account_id: "1".into(),
        status: status as i32,
        ..Default::default()
    };
    type Row = (String, String, wire::MovementStatus, String);
    let rows = |response: wire::GetHistoryResponse| -> Vec<Row> {
        let mut rows: Vec<_> = response
            .movements
            .into_iter()
            .map(|m| {
                let status = wire::MovementStatus::try_from(m.status).expect("status");
                (m.transfer_id, m.event_type, status, m.resolved_by_id)
            })
            .collect();
        rows.sort();
        rows
    };
    let all = ledger.get_history(authed(history(wire::MovementStatus::Unspecified), ADMIN)).await.expect("all");
    let row = |id: &str, event: &str, status, by: &str| (id.to_string(), event.to_string(), status, by.to_string());
    use wire::MovementStatus as S;
    assert_eq!(
        rows(all.into_inner()),
        [
            row("10", "TransferPosted", S::Posted, ""),
            row("11", "TransferPending", S::Posted, "12"),
            row("12", "PendingPosted", S::Posted, ""),
            row("13", "TransferPending", S::Voided, "14"),
            row("14", "PendingVoided", S::Voided, ""),
            row("15", "TransferPending", S::Pending, ""),
        ]
    );
    let posted = ledger.get_history(authed(history(S::Posted), ADMIN)).await.expect("posted");
    let expected = [row("10", "TransferPosted", S::Posted, ""), row("12", "PendingPosted", S::Posted, "")];
    assert_eq!(rows(posted.into_inner()), expected, "a posted hold is not posted money twice");
    let voided = ledger.get_history(authed(history(S::Voided), ADMIN)).await.expect("voided");
    assert_eq!(rows(voided.into_inner()), [row("14", "PendingVoided", S::Voided, "")]);
    let pending = ledger.get_history(authed(history(S::Pending), ADMIN)).await.expect("pending");
    assert_eq!(rows(pending.into_inner()), [row("15", "TransferPending", S::Pending, "")]);
    // The owner's history (both accounts) and an account's transfers say the same.
    let owner = wire::GetHistoryRequest { owner_id: "7".into(), ..Default::default() };
    let owner = ledger.get_history(authed(owner, ADMIN)).await.expect("owner").into_inner();
    let holds: Vec<_> = owner
        .movements
        .iter()
        .filter(|m| m.event_type == "TransferPending")
        .map(|m| (m.account_id.as_str(), m.transfer_id.as_str(), m.resolved_by_id.as_str()))
        .collect();
    assert_eq!(holds.len(), 6, "{holds:?}");
    assert!(holds.iter().all(|(_, id, by)| *by
        == if *id == "15" {
            ""
        } else if *id == "11" {
            "12"
        } else {
            "14"
        }));
    let listed = wire::ListAccountTransfersRequest { account_id: "2".into(), ..Default::default() };
    let listed = ledger.list_account_transfers(authed(listed, ADMIN)).await.expect("list").into_inner();
    let hold = listed.movements.iter().find(|m| m.transfer_id == "11").expect("the hold");
    assert_eq!(hold.resolved_by_id, "12");
}
