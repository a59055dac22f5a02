//! Payments, statements and exchange over HTTP through the real `ledgerd`: money
//! requests and their answers, top-ups, withdrawals, refunds, reviews, monthly
//! statements, rates, quotes, conversions and the position; each error class as the
//! gRPC API answers it; idempotency; and the transaction list paged while payments
//! keep arriving, without a gap or a duplicate.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{bank, card, fund, Answer, Http, Person, Server, ADMIN};
use ledger_core::calendar::civil_from_days;
use serde_json::{json, Value};

const TERMINAL: [&str; 5] = ["completed", "failed", "cancelled", "refunded", "partially_refunded"];

/// Polls `GET /payments/{id}` until its status is one of `until` (bounded).
async fn wait_status(http: &Http, token: &str, id: &str, until: &[&str]) -> Value {
    for _ in 0..1500 {
        let payment = http.get(&format!("/payments/{id}"), Some(token)).await;
        assert_eq!(payment.status, 200, "{payment:?}");
        if until.contains(&payment.json["status"].as_str().unwrap_or("")) {
            return payment.json;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("payment {id} never reached {until:?}");
}

/// `POST path` with an `Idempotency-Key`.
async fn post_keyed(http: &Http, path: &str, token: &str, key: &str, body: Value) -> Answer {
    http.call("POST", path, Some(token), &[("Idempotency-Key", key)], Some(body)).await
}

async fn put(http: &Http, token: &str, body: Value) -> Answer {
    http.call("PUT", "/fx/rates", Some(token), &[], Some(body)).await
}

fn field(answer: &Answer) -> Option<&str> {
    answer.json["error"]["field"].as_str()
}

fn id(answer: &Answer) -> String {
    answer.json["id"].as_str().unwrap_or_else(|| panic!("no id: {answer:?}")).to_string()
}

async fn person(http: &Http, name: &str, email: &str) -> Person {
    let (id, token) = http.person(name, email).await;
    Person { id, token }
}

fn this_month() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let (year, month, _) = civil_from_days((now / 86_400) as i64);
    format!("{year:04}-{month:02}")
}

/// A decimal string with two decimals as cents.
fn cents(text: &str) -> i64 {
    let (negative, digits) = text.strip_prefix('-').map_or((false, text), |d| (true, d));
    let (whole, fraction) = digits.split_once('.').unwrap_or_else(|| panic!("not two decimals: {text}"));
    assert_eq!(fraction.len(), 2, "{text}");
    let value = whole.parse::<i64>().expect("whole") * 100 + fraction.parse::<i64>().expect("fraction");
    if negative {
        -value
    } else {
        value
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_ups_requests_withdrawals_and_refunds() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);
    let alice = person(&http, "Alice Example", "alice@example.com").await;
    let bob = person(&http, "Bob Example", "bob@example.com").await;
    let eve = person(&http, "Eve Example", "eve@example.com").await;
    let a_card = card(&mut server.users().await, &alice).await;
    let b_bank = bank(&mut server.users().await, &bob, "4444555566").await;

    // A top-up by card: 201, the card's fee on top; the same key and body answer the
    // same top-up, another body is 409 and tops up nothing.
    let top_up = json!({"amount": "100.00", "currency": "USD", "instrument_id": a_card});
    let created = post_keyed(&http, "/user/topups", &alice.token, "t1", top_up.clone()).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!((created.json["kind"].as_str(), created.json["funding"].as_str()), (Some("top_up"), Some("card")));
    let top_up_id = id(&created);
    let done = wait_status(&http, &alice.token, &top_up_id, &TERMINAL).await;
    assert_eq!((done["status"].as_str(), done["fee"].as_str()), (Some("completed"), Some("2.90")), "{done}");
    let again = post_keyed(&http, "/user/topups", &alice.token, "t1", top_up.clone()).await;
    assert_eq!((again.status, id(&again)), (201, top_up_id.clone()));
    let other = json!({"amount": "99.00", "currency": "USD", "instrument_id": a_card});
    let reused = post_keyed(&http, "/user/topups", &alice.token, "t1", other).await;
    assert_eq!((reused.status, reused.code()), (409, "idempotency_key_reused"), "{reused:?}");
    // Without a key, without a token, with a missing field, a bad amount, a stranger's instrument.
    let no_key = http.post("/user/topups", Some(&alice.token), top_up.clone()).await;
    assert_eq!((no_key.status, field(&no_key)), (400, Some("Idempotency-Key")), "{no_key:?}");
    let no_token = http.call("POST", "/user/topups", None, &[("Idempotency-Key", "t2")], Some(top_up.clone())).await;
    assert_eq!((no_token.status, no_token.code()), (401, "unauthenticated"), "{no_token:?}");
    let missing = post_keyed(&http, "/user/topups", &alice.token, "t3", json!({"currency": "USD"})).await;
    assert_eq!((missing.status, field(&missing)), (400, Some("amount")), "{missing:?}");
    let bad = json!({"amount": "1.001", "currency": "USD", "instrument_id": a_card});
    let bad = post_keyed(&http, "/user/topups", &alice.token, "t4", bad).await;
    assert_eq!((bad.status, field(&bad)), (400, Some("amount")), "{bad:?}");
    let theirs = json!({"amount": "1.00", "currency": "USD", "instrument_id": a_card});
    let theirs = post_keyed(&http, "/user/topups", &eve.token, "t5", theirs).await;
    assert_eq!(theirs.status, 404, "another user's card is not Eve's to use: {theirs:?}");

    // A money request: Bob asks Alice; only Alice (the payer) may answer, and to Bob
    // it does not exist as a request to answer (404, as over gRPC).
    let ask = json!({"payer_email": "alice@example.com", "amount": "7.00", "currency": "USD", "note": "pizza"});
    let asked = post_keyed(&http, "/user/requests", &bob.token, "r1", ask.clone()).await;
    assert_eq!(asked.status, 201, "{asked:?}");
    assert_eq!((asked.json["kind"].as_str(), asked.json["status"].as_str()), (Some("request"), Some("created")));
    assert_eq!(asked.json["note"].as_str(), Some("pizza"));
    let request_id = id(&asked);
    let again = post_keyed(&http, "/user/requests", &bob.token, "r1", ask).await;
    assert_eq!((again.status, id(&again)), (201, request_id.clone()));
    let answer = json!({"approve": true, "funding": "wallet"});
    let wrong = http.post(&format!("/payments/{request_id}/answer"), Some(&bob.token), answer.clone()).await;
    assert_eq!(wrong.status, 404, "{wrong:?}");
    let paid = http.post(&format!("/payments/{request_id}/answer"), Some(&alice.token), answer).await;
    assert_eq!(paid.status, 200, "{paid:?}");
    let done = wait_status(&http, &bob.token, &request_id, &TERMINAL).await;
    assert_eq!((done["status"].as_str(), done["funding"].as_str()), (Some("completed"), Some("wallet")), "{done}");
    // Declined.
    let ask = json!({"payer_user_id": alice.id, "amount": "3.00", "currency": "USD"});
    let declined = post_keyed(&http, "/user/requests", &bob.token, "r2", ask).await;
    let declined_id = id(&declined);
    let no = http.post(&format!("/payments/{declined_id}/answer"), Some(&alice.token), json!({"approve": false})).await;
    assert_eq!(no.status, 200, "{no:?}");
    let done = wait_status(&http, &bob.token, &declined_id, &TERMINAL).await;
    assert_eq!(done["status"].as_str(), Some("cancelled"));
    // Bad requests: unknown payer, yourself, no approve, an unknown field.
    let nobody = json!({"payer_email": "nobody@example.com", "amount": "1.00", "currency": "USD"});
    let nobody = post_keyed(&http, "/user/requests", &bob.token, "r3", nobody).await;
    assert_eq!(nobody.status, 404, "{nobody:?}");
    let me = json!({"payer_user_id": bob.id, "amount": "1.00", "currency": "USD"});
    let me = post_keyed(&http, "/user/requests", &bob.token, "r4", me).await;
    assert_eq!(me.status, 400, "{me:?}");
    let bare = http.post(&format!("/payments/{declined_id}/answer"), Some(&alice.token), json!({})).await;
    assert_eq!((bare.status, field(&bare)), (400, Some("approve")), "{bare:?}");
    let extra = json!({"approve": true, "tip": "1.00"});
    let extra = http.post(&format!("/payments/{declined_id}/answer"), Some(&alice.token), extra).await;
    assert_eq!((extra.status, field(&extra)), (400, Some("tip")), "{extra:?}");

    // A withdrawal to Bob's verified bank account; never to a card.
    let withdraw = json!({"amount": "2.00", "currency": "USD", "instrument_id": b_bank});
    let created = post_keyed(&http, "/user/withdrawals", &bob.token, "w1", withdraw).await;
    assert_eq!((created.status, created.json["kind"].as_str()), (201, Some("withdrawal")), "{created:?}");
    let done = wait_status(&http, &bob.token, &id(&created), &TERMINAL).await;
    assert_eq!(done["status"].as_str(), Some("completed"), "{done}");
    let to_card = json!({"amount": "1.00", "currency": "USD", "instrument_id": a_card});
    let to_card = post_keyed(&http, "/user/withdrawals", &alice.token, "w2", to_card).await;
    assert_eq!((to_card.status, field(&to_card)), (400, Some("instrument_id")), "{to_card:?}");

    // Refunds of Alice's payment to Bob: by Bob (the receiver) in part, then the rest
    // by an admin; never by Alice (403, as over gRPC); a refund id refunds once.
    // Sent with a wait, it is answered completed; a wait over 10 s is refused, and sends nothing.
    let pay = json!({"client_transaction_id": "p1", "receiver_email": "bob@example.com", "amount": "10.00", "currency": "USD"});
    let too_long = http.post("/user/transaction?wait_ms=10001", Some(&alice.token), pay.clone()).await;
    assert_eq!((too_long.status, field(&too_long)), (400, Some("wait_ms")), "{too_long:?}");
    let sent = http.post("/user/transaction?wait_ms=5000", Some(&alice.token), pay).await;
    assert_eq!((sent.status, sent.json["status"].as_str()), (201, Some("completed")), "{sent:?}");
    let paid_id = id(&sent);
    let refunds = format!("/payments/{paid_id}/refunds");
    let by_sender = post_keyed(&http, &refunds, &alice.token, "x", json!({"amount": "1.00"})).await;
    assert_eq!(by_sender.status, 403, "{by_sender:?}");
    let by_stranger = post_keyed(&http, &refunds, &eve.token, "x", json!({"amount": "1.00"})).await;
    assert_eq!(by_stranger.status, 404, "{by_stranger:?}");
    let partial = post_keyed(&http, &refunds, &bob.token, "f1", json!({"amount": "4.00"})).await;
    assert_eq!(partial.status, 201, "{partial:?}");
    assert_eq!(
        (partial.json["status"].as_str(), partial.json["refunded"].as_str()),
        (Some("partially_refunded"), Some("4.00"))
    );
    let repeat = http.post(&refunds, Some(&bob.token), json!({"amount": "4.00", "refund_id": "f1"})).await;
    assert_eq!((repeat.status, repeat.json["refunded"].as_str()), (201, Some("4.00")), "refunded once: {repeat:?}");
    let reused = post_keyed(&http, &refunds, &bob.token, "f1", json!({"amount": "5.00"})).await;
    assert_eq!((reused.status, reused.code()), (409, "idempotency_key_reused"), "{reused:?}");
    let too_much = http.post(&refunds, Some(&bob.token), json!({"amount": "7.00", "refund_id": "f2"})).await;
    assert_eq!(too_much.status, 400, "{too_much:?}");
    let unkeyed = http.post(&refunds, Some(&bob.token), json!({"amount": "1.00"})).await;
    assert_eq!((unkeyed.status, field(&unkeyed)), (400, Some("refund_id")), "{unkeyed:?}");
    let differ = post_keyed(&http, &refunds, &bob.token, "f4", json!({"refund_id": "f5"})).await;
    assert_eq!((differ.status, field(&differ)), (400, Some("refund_id")), "{differ:?}");
    let rest = http.post(&refunds, Some(ADMIN), json!({"refund_id": "f3"})).await;
    assert_eq!(rest.status, 201, "{rest:?}");
    assert_eq!((rest.json["status"].as_str(), rest.json["refunded"].as_str()), (Some("refunded"), Some("10.00")));
    let bad_id = post_keyed(&http, "/payments/not-a-number/refunds", &bob.token, "f6", json!({})).await;
    assert_eq!((bad_id.status, field(&bad_id)), (400, Some("payment_id")), "{bad_id:?}");

    // The transaction list holds all of Alice's payments, filtered by kind.
    let list = http.get("/user/transactions?kind=top_up", Some(&alice.token)).await;
    let ids: Vec<&str> = list.json["data"].as_array().expect("data").iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, [top_up_id.as_str()], "{list:?}");

    // The OpenAPI document lists every route of payments and exchange.
    let doc = http.get("/openapi.json", None).await;
    for (path, method) in [
        ("/user/requests", "post"),
        ("/payments/{id}/answer", "post"),
        ("/user/topups", "post"),
        ("/user/withdrawals", "post"),
        ("/payments/{id}/refunds", "post"),
        ("/payments/{id}", "get"),
        ("/payments/{id}/review", "post"),
        ("/reviews", "get"),
        ("/user/statements/{month}", "get"),
        ("/fx/rates", "get"),
        ("/fx/rates", "put"),
        ("/fx/quotes", "post"),
        ("/fx/quotes/{id}/execute", "post"),
        ("/fx/position", "get"),
    ] {
        assert!(doc.json["paths"][path][method].is_object(), "{method} {path} missing from the document");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_are_listed_in_pages_and_decided_by_admins_only() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);
    let alice = person(&http, "Alice Example", "alice@example.com").await;
    let _bob = person(&http, "Bob Example", "bob@example.com").await;
    fund(&server, &alice, "USD", "300000", "1").await;

    // Above 500.00 to a payee never paid before: held for review.
    let mut held = Vec::new();
    for key in ["v1", "v2", "v3"] {
        let pay = json!({"client_transaction_id": key, "receiver_email": "bob@example.com", "amount": "600.00", "currency": "USD"});
        let sent = http.post("/user/transaction", Some(&alice.token), pay).await;
        assert_eq!(sent.status, 201, "{sent:?}");
        let payment = wait_status(&http, &alice.token, &id(&sent), &["requires_review"]).await;
        assert!(payment["risk_reasons"].as_array().expect("reasons").iter().any(|r| r == "new_payee"), "{payment}");
        held.push(id(&sent));
    }
    // The queue, two to a page, newest first; users may not read it.
    let by_user = http.get("/reviews", Some(&alice.token)).await;
    assert_eq!(by_user.status, 403, "{by_user:?}");
    let first = http.get("/reviews?limit=2", Some(ADMIN)).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.json["has_more"], true);
    let cursor = first.json["next_cursor"].as_str().expect("cursor").to_string();
    let second = http.get(&format!("/reviews?limit=2&starting_after={cursor}"), Some(ADMIN)).await;
    assert_eq!((second.json["has_more"].as_bool(), second.json["next_cursor"].as_str()), (Some(false), None));
    let queued: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|page| page.json["data"].as_array().expect("data").iter())
        .map(|p| p["id"].as_str().expect("id").to_string())
        .collect();
    let newest_first: Vec<String> = held.iter().rev().cloned().collect();
    assert_eq!(queued, newest_first);
    let bad_cursor = http.get("/reviews?starting_after=zzz", Some(ADMIN)).await;
    assert_eq!((bad_cursor.status, field(&bad_cursor)), (400, Some("starting_after")), "{bad_cursor:?}");

    // Decisions: a user may not decide (403); an admin approves one and rejects one.
    let review = |id: &str| format!("/payments/{id}/review");
    let by_user = http.post(&review(&held[0]), Some(&alice.token), json!({"approve": true})).await;
    assert_eq!(by_user.status, 403, "{by_user:?}");
    let approved = http.post(&review(&held[0]), Some(ADMIN), json!({"approve": true})).await;
    assert_eq!(approved.status, 200, "{approved:?}");
    let rejected = http.post(&review(&held[1]), Some(ADMIN), json!({"approve": false})).await;
    assert_eq!(rejected.status, 200, "{rejected:?}");
    let approved = wait_status(&http, &alice.token, &held[0], &TERMINAL).await;
    let rejected = wait_status(&http, &alice.token, &held[1], &TERMINAL).await;
    assert_eq!(approved["status"].as_str(), Some("completed"), "{approved}");
    assert_eq!(
        (rejected["status"].as_str(), rejected["reason"].as_str()),
        (Some("failed"), Some("rejected_in_review"))
    );
    // Deciding a decided payment is refused (422, FAILED_PRECONDITION over gRPC); an unknown one is 404.
    let late = http.post(&review(&held[1]), Some(ADMIN), json!({"approve": true})).await;
    assert_eq!(late.status, 422, "{late:?}");
    let unknown = http.post(&review("12345"), Some(ADMIN), json!({"approve": true})).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let left = http.get("/reviews", Some(ADMIN)).await;
    let left: Vec<&str> = left.json["data"].as_array().expect("data").iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(left, [held[2].as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monthly_statement_over_http() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);
    let alice = person(&http, "Alice Example", "alice@example.com").await;
    let bob = person(&http, "Bob Example", "bob@example.com").await;
    let a_card = card(&mut server.users().await, &alice).await;
    let top_up = json!({"amount": "100.00", "currency": "USD", "instrument_id": a_card});
    let created = post_keyed(&http, "/user/topups", &alice.token, "t1", top_up).await;
    wait_status(&http, &alice.token, &id(&created), &["completed"]).await;
    let pay = json!({"client_transaction_id": "p1", "receiver_email": "bob@example.com",
        "amount": "12.50", "currency": "USD", "note": "books"});
    let sent = http.post("/user/transaction", Some(&alice.token), pay).await;
    let paid_id = id(&sent);
    wait_status(&http, &alice.token, &paid_id, &["completed"]).await;

    let month = this_month();
    let path = format!("/user/statements/{month}?currency=USD");
    let answer = http.get(&path, Some(&alice.token)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let statements = answer.json["data"].as_array().expect("data");
    assert_eq!(statements.len(), 1);
    let s = &statements[0];
    assert_eq!((s["currency"].as_str(), s["month"].as_str()), (Some("USD"), Some(month.as_str())));
    assert_eq!((s["user_id"].as_str(), s["holder_name"].as_str()), (Some(alice.id.as_str()), Some("Alice Example")));
    assert!(s["from"].as_str().expect("from").ends_with("-01T00:00:00Z"), "{s}");
    let amount = |name: &str| cents(s[name].as_str().unwrap_or_else(|| panic!("{name} in {s}")));
    assert_eq!((amount("opening"), amount("closing")), (0, 8_750), "{s}");
    assert_eq!(amount("opening") + amount("money_in") - amount("money_out") - amount("fees"), amount("closing"));
    let lines = s["lines"].as_array().expect("lines");
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(kinds, ["top_up", "payment_sent"], "{s}");
    let sent_line = &lines[1];
    assert_eq!(sent_line["payment_id"].as_str(), Some(paid_id.as_str()));
    assert_eq!((sent_line["amount_out"].as_str(), sent_line["balance"].as_str()), (Some("12.50"), Some("87.50")));
    assert_eq!(
        (sent_line["counterparty_name"].as_str(), sent_line["note"].as_str()),
        (Some("Bob Example"), Some("books"))
    );
    assert!(sent_line["at"].as_str().expect("at").ends_with('Z'));
    assert!(sent_line.get("at_ns").is_none(), "times are RFC 3339 only");

    // An admin reads anyone's (naming them); a user only their own (403 as over gRPC).
    let admin = http.get(&format!("/user/statements/{month}?user_id={}", alice.id), Some(ADMIN)).await;
    assert_eq!((admin.status, admin.json["data"][0]["closing"].as_str()), (200, Some("87.50")), "{admin:?}");
    let nosy = http.get(&format!("/user/statements/{month}?user_id={}", alice.id), Some(&bob.token)).await;
    assert_eq!(nosy.status, 403, "{nosy:?}");
    // Bad input names its field; no such wallet is 404; no token is 401.
    for (query, expected) in [
        ("/user/statements/2026-13", "month"),
        ("/user/statements/november", "month"),
        (&format!("/user/statements/{month}?utc_offset_minutes=7") as &str, "utc_offset_minutes"),
        (&format!("/user/statements/{month}?utc_offset_minutes=east"), "utc_offset_minutes"),
        (&format!("/user/statements/{month}?currency=XX1"), "currency"),
        (&format!("/user/statements/{month}?colour=blue"), "colour"),
    ] {
        let answer = http.get(query, Some(&alice.token)).await;
        assert_eq!((answer.status, field(&answer)), (400, Some(expected)), "{query}: {answer:?}");
    }
    let eur = http.get(&format!("/user/statements/{month}?currency=EUR"), Some(&alice.token)).await;
    assert_eq!(eur.status, 404, "{eur:?}");
    let anonymous = http.get(&format!("/user/statements/{month}"), None).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    // At an offset the month's edges move.
    let east = http.get(&format!("/user/statements/{month}?utc_offset_minutes=60"), Some(&alice.token)).await;
    assert_eq!(east.status, 200, "{east:?}");
    assert!(east.json["data"][0]["from"].as_str().expect("from").ends_with("T23:00:00Z"), "{east:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_quotes_conversions_and_the_position() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);
    let alice = person(&http, "Alice Example", "alice@example.com").await;
    let bob = person(&http, "Bob Example", "bob@example.com").await;
    fund(&server, &alice, "USD", "100000", "1").await;

    // Rates: only admins set them; a bad rate names its item and sets nothing.
    let rates = json!({"rates": [
        {"base": "EUR", "quote": "USD", "rate": "1.08", "source": "test"},
        {"base": "USD", "quote": "JPY", "rate": "150"},
        {"base": "GBP", "quote": "USD", "rate": "1.27"}]});
    let by_user = put(&http, &alice.token, rates.clone()).await;
    assert_eq!(by_user.status, 403, "{by_user:?}");
    let bad = put(
        &http,
        ADMIN,
        json!({"rates": [{"base": "EUR", "quote": "CHF", "rate": "1"}, {"base": "USD", "quote": "CHF", "rate": "-1"}]}),
    )
    .await;
    assert_eq!((bad.status, field(&bad)), (400, Some("rates[1].rate")), "{bad:?}");
    let none = put(&http, ADMIN, json!({"rates": []})).await;
    assert_eq!((none.status, field(&none)), (400, Some("rates")), "{none:?}");
    let set = put(&http, ADMIN, rates).await;
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(set.json["data"].as_array().map(Vec::len), Some(3), "{set:?}");
    // Listed by pair, a page at a time; nothing of CHF was set.
    let mut pairs = Vec::new();
    let mut path = "/fx/rates?limit=2".to_string();
    loop {
        let page = http.get(&path, Some(&alice.token)).await;
        assert_eq!(page.status, 200, "{page:?}");
        for r in page.json["data"].as_array().expect("data") {
            assert!(r["as_of"].as_str().expect("as_of").ends_with('Z'));
            pairs.push(format!(
                "{}/{} {}",
                r["base"].as_str().expect("b"),
                r["quote"].as_str().expect("q"),
                r["rate"].as_str().expect("r")
            ));
        }
        match page.json["next_cursor"].as_str() {
            Some(cursor) => path = format!("/fx/rates?limit=2&starting_after={cursor}"),
            None => break,
        }
    }
    assert_eq!(pairs, ["EUR/USD 1.08", "GBP/USD 1.27", "USD/JPY 150"]);
    assert_eq!(http.get("/fx/rates", None).await.status, 401);

    // A quote: 100.00 USD at 1/1.08 less the 0.5 % spread is 92.12 EUR.
    let ask = json!({"from_currency": "USD", "to_currency": "EUR", "from_amount": "100.00"});
    let quote = post_keyed(&http, "/fx/quotes", &alice.token, "q1", ask.clone()).await;
    assert_eq!(quote.status, 201, "{quote:?}");
    assert_eq!((quote.json["from_amount"].as_str(), quote.json["to_amount"].as_str()), (Some("100.00"), Some("92.12")));
    assert!(quote.json["expires_at"].as_str().expect("expires").ends_with('Z'));
    let quote_id = id(&quote);
    let again = post_keyed(&http, "/fx/quotes", &alice.token, "q1", ask).await;
    assert_eq!((again.status, id(&again)), (201, quote_id.clone()), "the same key answers the same quote");
    let other = json!({"from_currency": "USD", "to_currency": "EUR", "from_amount": "50.00"});
    let reused = post_keyed(&http, "/fx/quotes", &alice.token, "q1", other).await;
    assert_eq!((reused.status, reused.code()), (409, "idempotency_key_reused"), "{reused:?}");
    for (body, status, expected) in [
        (json!({"from_currency": "USD", "to_currency": "EUR", "from_amount": "1.001"}), 400, Some("from_amount")),
        (json!({"from_currency": "USD", "to_currency": "XXZ", "from_amount": "1"}), 400, Some("to_currency")),
        (json!({"from_currency": "USD", "to_currency": "EUR"}), 400, None),
        (json!({"from_currency": "USD", "to_currency": "CHF", "from_amount": "1"}), 422, None),
    ] {
        let answer = http.post("/fx/quotes", Some(&alice.token), body.clone()).await;
        assert_eq!((answer.status, field(&answer)), (status, expected), "{body}: {answer:?}");
    }
    let by_admin = http
        .post("/fx/quotes", Some(ADMIN), json!({"from_currency": "USD", "to_currency": "EUR", "from_amount": "1"}))
        .await;
    assert_eq!(by_admin.status, 403, "a quote is a user's: {by_admin:?}");

    // Execute: not Bob's quote (404); Alice's converts once, however often it is sent.
    let execute = format!("/fx/quotes/{quote_id}/execute");
    let by_bob = http.post(&execute, Some(&bob.token), json!({})).await;
    assert_eq!(by_bob.status, 404, "{by_bob:?}");
    let done = http.post(&execute, Some(&alice.token), json!({})).await;
    assert_eq!(done.status, 200, "{done:?}");
    assert_eq!(done.json["receiver_id"].as_str(), Some(alice.id.as_str()));
    assert_eq!(done.json["transfer_ids"].as_array().map(Vec::len), Some(3), "sold, paid, spread booked");
    assert_eq!(done.json["quote"]["id"].as_str(), Some(quote_id.as_str()));
    let twice = http.post(&execute, Some(&alice.token), json!({})).await;
    assert_eq!(twice.json["transfer_ids"], done.json["transfer_ids"], "executing twice converts once");
    // To Bob, in yen.
    let yen = http
        .post(
            "/fx/quotes",
            Some(&alice.token),
            json!({"from_currency": "USD", "to_currency": "JPY", "from_amount": "10.00"}),
        )
        .await;
    let to_bob = http
        .post(
            &format!("/fx/quotes/{}/execute", id(&yen)),
            Some(&alice.token),
            json!({"receiver_email": "bob@example.com"}),
        )
        .await;
    assert_eq!((to_bob.status, to_bob.json["receiver_id"].as_str()), (200, Some(bob.id.as_str())), "{to_bob:?}");
    let both = json!({"receiver_email": "bob@example.com", "receiver_user_id": bob.id});
    let both = http.post(&format!("/fx/quotes/{}/execute", id(&yen)), Some(&alice.token), both).await;
    assert_eq!(both.status, 400, "{both:?}");
    let unknown = http.post("/fx/quotes/q_000000000000000000000000/execute", Some(&alice.token), json!({})).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    // More than the wallet holds: refused, nothing moves (422 as FAILED_PRECONDITION).
    let big = http
        .post(
            "/fx/quotes",
            Some(&alice.token),
            json!({"from_currency": "USD", "to_currency": "EUR", "from_amount": "5000.00"}),
        )
        .await;
    let big = http.post(&format!("/fx/quotes/{}/execute", id(&big)), Some(&alice.token), json!({})).await;
    assert_eq!(big.status, 422, "{big:?}");

    // The position: admins only; per currency, valued in USD (or another currency).
    let by_user = http.get("/fx/position", Some(&alice.token)).await;
    assert_eq!(by_user.status, 403, "{by_user:?}");
    let position = http.get("/fx/position", Some(ADMIN)).await;
    assert_eq!(position.status, 200, "{position:?}");
    let by: BTreeMap<&str, &str> = position.json["currencies"]
        .as_array()
        .expect("currencies")
        .iter()
        .map(|c| (c["currency"].as_str().expect("c"), c["position"].as_str().expect("p")))
        .collect();
    assert_eq!(by.get("USD"), Some(&"110.00"), "{position:?}");
    assert_eq!(position.json["revenue_currency"].as_str(), Some("USD"));
    let in_eur = http.get("/fx/position?value_in=EUR", Some(ADMIN)).await;
    assert_eq!((in_eur.status, in_eur.json["revenue_currency"].as_str()), (200, Some("EUR")), "{in_eur:?}");
    let bad = http.get("/fx/position?value_in=E", Some(ADMIN)).await;
    assert_eq!((bad.status, field(&bad)), (400, Some("value_in")), "{bad:?}");
}

/// Pages of `GET /user/transactions` (limit 7), in order, until the last.
async fn all_pages(http: &Http, token: &str, between: impl AsyncFn()) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = "/user/transactions?limit=7".to_string();
    loop {
        let page = http.get(&path, Some(token)).await;
        assert_eq!(page.status, 200, "{page:?}");
        let data = page.json["data"].as_array().expect("data");
        assert!(data.len() <= 7);
        ids.extend(data.iter().map(|p| p["id"].as_str().expect("id").to_string()));
        match page.json["next_cursor"].as_str() {
            Some(cursor) => path = format!("/user/transactions?limit=7&starting_after={cursor}"),
            None => return ids,
        }
        between().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_paged_while_payments_continue_have_no_gap_or_duplicate() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start_with(dir.path(), &["--risk-user-per-hour", "1000000", "--risk-user-per-day", "1000000"]);
    let http = Arc::new(Http::of(&server));
    let alice = person(&http, "Alice Example", "alice@example.com").await;
    let _bob = person(&http, "Bob Example", "bob@example.com").await;
    fund(&server, &alice, "USD", "10000000", "1").await;

    // Payments made one after another by a writer task, each id recorded once answered.
    let made = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (http, made, stop, token) = (http.clone(), made.clone(), stop.clone(), alice.token.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let pay = json!({"client_transaction_id": format!("w-{n}"), "receiver_email": "bob@example.com",
                    "amount": "0.01", "currency": "USD"});
                let sent = http.post("/user/transaction", Some(&token), pay).await;
                assert_eq!(sent.status, 201, "{sent:?}");
                made.lock().expect("ids").push(id(&sent));
            }
        })
    };
    let count = || made.lock().expect("ids").len();
    while count() < 30 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Everything answered before the first page is read must be paged exactly once;
    // between pages the writer makes at least one more payment.
    let before: Vec<String> = made.lock().expect("ids").clone();
    let paged = all_pages(&http, &alice.token, async || {
        let seen = count();
        while count() == seen {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    let during = count() - before.len();
    assert!(during >= paged.len() / 7, "payments were made while paging: {during}");

    let unique: BTreeSet<&String> = paged.iter().collect();
    assert_eq!(unique.len(), paged.len(), "no payment on two pages");
    for id in &before {
        assert_eq!(paged.iter().filter(|p| *p == id).count(), 1, "{id} made before paging is paged once");
    }
    // The pages follow the full list's order (newest first), now that the writer stopped.
    let full = all_pages(&http, &alice.token, async || {}).await;
    assert_eq!(full.len(), count());
    let place: BTreeMap<&String, usize> = full.iter().enumerate().map(|(i, id)| (id, i)).collect();
    let places: Vec<usize> = paged.iter().map(|id| place[id]).collect();
    assert!(places.windows(2).all(|w| w[0] < w[1]), "pages in the list's order");
    assert_eq!(full.last(), before.first(), "oldest last");
}
