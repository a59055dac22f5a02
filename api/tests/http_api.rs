//! The HTTP/JSON API through the real `ledgerd`: the seed's five endpoints, the
//! error shape and statuses, idempotency, paging, and the OpenAPI document.

mod common;

use common::{fund, Http, Person, Server};
use serde_json::json;

async fn wait_status(http: &Http, token: &str, id: &str, until: &[&str]) -> serde_json::Value {
    for _ in 0..1500 {
        let payment = http.get(&format!("/payments/{id}"), Some(token)).await;
        assert_eq!(payment.status, 200, "{payment:?}");
        if until.contains(&payment.json["status"].as_str().unwrap_or("")) {
            return payment.json;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("payment {id} never reached {until:?}");
}

#[tokio::test]
async fn the_seeds_flow_over_http() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);

    // POST /user, then a session.
    let (alice_id, alice) = http.person("Alice Example", "alice@example.com").await;
    let (bob_id, bob) = http.person("Bob Example", "bob@example.com").await;
    assert_ne!(alice_id, bob_id);

    // GET /user
    let me = http.get("/user", Some(&alice)).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(
        (me.json["user_id"].as_str(), me.json["email"].as_str()),
        (Some(alice_id.as_str()), Some("alice@example.com"))
    );
    assert!(me.json["registered_at"].as_str().expect("time").ends_with('Z'));

    // POST /user/linked_accounts
    let bank = json!({"bank_name": "Bank of Examples", "routing_number": "021000021",
        "account_number": "000123456789", "holder_name": "Alice Example"});
    let linked = http.post("/user/linked_accounts", Some(&alice), bank.clone()).await;
    assert_eq!(linked.status, 201, "{linked:?}");
    assert_eq!(linked.json["instrument"]["kind"], "bank_account");
    assert_eq!(linked.json["instrument"]["status"], "pending_verification");
    assert_eq!(linked.json["instrument"]["account_number_masked"].as_str().map(|m| m.ends_with("6789")), Some(true));
    assert!(!linked.json.to_string().contains("000123456789"), "the account number is never shown in full");

    // POST /user/transaction, after funding Alice's wallet.
    fund(&server, &Person { id: alice_id.clone(), token: alice.clone() }, "USD", "10000", "1").await;
    let pay = json!({"client_transaction_id": "tx-1", "receiver_email": "bob@example.com",
        "amount": "12.50", "currency": "USD", "note": "lunch"});
    let sent = http.post("/user/transaction", Some(&alice), pay.clone()).await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let id = sent.json["id"].as_str().expect("id").to_string();
    let done = wait_status(&http, &alice, &id, &["completed"]).await;
    assert_eq!((done["amount"].as_str(), done["currency"].as_str()), (Some("12.50"), Some("USD")));
    assert_eq!(done["receiver_id"].as_str(), Some(bob_id.as_str()));
    // Bob sees it too, with the note.
    let seen = http.get(&format!("/payments/{id}"), Some(&bob)).await;
    assert_eq!((seen.status, seen.json["note"].as_str()), (200, Some("lunch")));

    // The same client transaction id and body: the same payment, paid once.
    let again = http.post("/user/transaction", Some(&alice), pay.clone()).await;
    assert_eq!((again.status, again.json["id"].as_str()), (201, Some(id.as_str())), "{again:?}");
    // The same id with another body: 409, and nothing is paid.
    let other = json!({"client_transaction_id": "tx-1", "receiver_email": "bob@example.com",
        "amount": "99.00", "currency": "USD"});
    let conflict = http.post("/user/transaction", Some(&alice), other).await;
    assert_eq!((conflict.status, conflict.code()), (409, "idempotency_key_reused"), "{conflict:?}");

    // GET /user/transactions, paged with the seed's names.
    for n in 2..=4 {
        let body = json!({"receiver_user_id": bob_id, "amount": "1.00", "currency": "USD"});
        let sent = http
            .call("POST", "/user/transaction", Some(&alice), &[("Idempotency-Key", &format!("tx-{n}"))], Some(body))
            .await;
        assert_eq!(sent.status, 201, "{sent:?}");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/user/transactions?num_entries=2".to_string(),
            Some(c) => format!("/user/transactions?num_entries=2&page={c}"),
        };
        let page = http.get(&path, Some(&alice)).await;
        assert_eq!(page.status, 200, "{page:?}");
        let data = page.json["data"].as_array().expect("data");
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|p| p["id"].as_str().expect("id").to_string()));
        match page.json["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "one page after another, each payment once: {seen:?}");
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 4);
    assert_eq!(seen.last().map(String::as_str), Some(id.as_str()), "oldest last");

    // OpenAPI lists the seed's endpoints; /docs is a page.
    let doc = http.get("/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.json["openapi"].as_str().expect("version").starts_with("3.1"));
    for (path, method) in [
        ("/user", "post"),
        ("/user/linked_accounts", "post"),
        ("/user", "get"),
        ("/user/transaction", "post"),
        ("/user/transactions", "get"),
    ] {
        assert!(doc.json["paths"][path][method].is_object(), "{method} {path} missing from the document");
    }
    let page = http.call("GET", "/docs", None, &[], None).await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].to_str().expect("type").starts_with("text/html"));
}

#[tokio::test]
async fn errors_have_one_shape_and_change_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);
    let (_, alice) = http.person("Alice Example", "alice@example.com").await;

    // No token, a bad token.
    let answer = http.get("/user", None).await;
    assert_eq!((answer.status, answer.code()), (401, "unauthenticated"), "{answer:?}");
    let answer = http.get("/user", Some("lus_0000000000000000000000000000000000000000")).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    // Unknown field, missing content type, bad JSON, too large.
    let answer =
        http.post("/user", None, json!({"name": "X", "email": "x@example.com", "password": "p", "admin": true})).await;
    assert_eq!(
        (answer.status, answer.code(), answer.json["error"]["field"].as_str()),
        (400, "invalid_request", Some("admin")),
        "{answer:?}"
    );
    let answer = http.call("POST", "/user", None, &[("content-type", "text/plain")], None).await;
    assert_eq!((answer.status, answer.code()), (415, "unsupported_media_type"), "{answer:?}");
    let answer = http.call("POST", "/user", None, &[("content-type", "application/json")], None).await;
    assert_eq!((answer.status, answer.code()), (400, "invalid_request"), "{answer:?}");
    let big = json!({"name": "x".repeat(70_000), "email": "y@example.com", "password": "violet-anchor-tram-47"});
    let answer = http.post("/user", None, big).await;
    assert_eq!((answer.status, answer.code()), (413, "body_too_large"), "{answer:?}");
    // A platform rule: an invalid email names its field; a weak password is refused.
    let answer = http
        .post("/user", None, json!({"name": "Y", "email": "not-an-email", "password": "violet-anchor-tram-47"}))
        .await;
    assert_eq!((answer.status, answer.json["error"]["field"].as_str()), (400, Some("email")), "{answer:?}");
    // Money: a bad amount names the field; an unknown receiver is 404; no funds is 422.
    let pay = |amount: &str, to: &str| json!({"client_transaction_id": format!("k-{amount}-{to}"), "receiver_email": to, "amount": amount, "currency": "USD"});
    let answer = http.post("/user/transaction", Some(&alice), pay("1.234", "alice@example.com")).await;
    assert_eq!((answer.status, answer.json["error"]["field"].as_str()), (400, Some("amount")), "{answer:?}");
    let answer = http.post("/user/transaction", Some(&alice), pay("1.00", "nobody@example.com")).await;
    assert_eq!(answer.status, 404, "{answer:?}");
    // No client transaction id: refused before anything happens.
    let answer = http
        .post(
            "/user/transaction",
            Some(&alice),
            json!({"receiver_email": "a@b.c", "amount": "1.00", "currency": "USD"}),
        )
        .await;
    assert_eq!(
        (answer.status, answer.json["error"]["field"].as_str()),
        (400, Some("client_transaction_id")),
        "{answer:?}"
    );
    let list = http.get("/user/transactions", Some(&alice)).await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(0), "nothing was created: {list:?}");
    // Paging parameters are checked.
    let answer = http.get("/user/transactions?limit=0", Some(&alice)).await;
    assert_eq!((answer.status, answer.json["error"]["field"].as_str()), (400, Some("limit")), "{answer:?}");
    let answer = http.get("/user/transactions?bogus=1", Some(&alice)).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    // Unknown route and method.
    let answer = http.get("/nothing-here", None).await;
    assert_eq!((answer.status, answer.code()), (404, "route_not_found"));
    let answer = http.call("DELETE", "/user/transactions", Some(&alice), &[], None).await;
    assert_eq!((answer.status, answer.code()), (405, "method_not_allowed"));
    // Idempotent sign-up: the same key and body answer the same user; another body is 409.
    let body = json!({"name": "Carol", "email": "carol@example.com", "password": "violet-anchor-tram-47"});
    let first = http.call("POST", "/user", None, &[("Idempotency-Key", "signup-1")], Some(body.clone())).await;
    let again = http.call("POST", "/user", None, &[("Idempotency-Key", "signup-1")], Some(body)).await;
    assert_eq!((first.status, again.status), (201, 201), "{first:?} {again:?}");
    assert_eq!(first.json["user_id"], again.json["user_id"]);
    assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.to_str().expect("text")), Some("true"));
    let other = json!({"name": "Dave", "email": "dave@example.com", "password": "violet-anchor-tram-47"});
    let conflict = http.call("POST", "/user", None, &[("Idempotency-Key", "signup-1")], Some(other)).await;
    assert_eq!((conflict.status, conflict.code()), (409, "idempotency_key_reused"), "{conflict:?}");
    let dave = http
        .post("/user/sessions", None, json!({"email": "dave@example.com", "password": "violet-anchor-tram-47"}))
        .await;
    assert_eq!(dave.status, 401, "Dave was never created: {dave:?}");
}

/// The document and the routes agree: every documented operation is routed (it never
/// answers `route_not_found` or `method_not_allowed`), and `/docs` names every path.
/// (Every route is documented by construction: one `routes!` call adds both.)
#[tokio::test]
async fn every_documented_operation_is_served_and_on_the_docs_page() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);
    let (_, token) = http.person("Doc Reader", "docs@example.com").await;
    let doc = http.get("/openapi.json", None).await;
    let paths = doc.json["paths"].as_object().expect("paths");
    assert!(paths.len() >= 40, "the whole API is documented: {} paths", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        let concrete =
            path.split('/').map(|part| if part.starts_with('{') { "1" } else { part }).collect::<Vec<_>>().join("/");
        for method in item.as_object().expect("operations").keys() {
            let body = matches!(method.as_str(), "post" | "put" | "patch").then(|| json!({}));
            let answer = http.call(&method.to_uppercase(), &concrete, Some(&token), &[], body).await;
            assert!(
                !matches!(answer.code(), "route_not_found" | "method_not_allowed"),
                "{method} {path} is documented but not routed: {answer:?}"
            );
            assert!(answer.status < 500, "{method} {path}: {answer:?}");
            operations += 1;
        }
    }
    assert!(operations >= 50, "{operations} operations");
    let html = reqwest::get(format!("{}/docs", server.http_addr.as_ref().expect("http"))).await.expect("docs");
    let html = html.text().await.expect("html");
    for path in paths.keys() {
        assert!(html.contains(&format!("<code>{path}</code>")), "/docs lacks {path}");
    }
}
