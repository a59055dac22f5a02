//! The ledger and the admin views over HTTP, through the real `ledgerd`: accounts,
//! transfers (posted, pending, post, void, linked), look-ups, balances now and at a
//! time, an account's movements, history and reports with paging; the same refusals as
//! gRPC for users' sessions and roles that may not; bad input as 400 naming the field
//! with nothing changed; idempotency; and the admin views of users, accounts and the
//! review queue.

mod common;

use common::{authed, fund, Http, Person, Server, ADMIN, AUDITOR, READ_ONLY, SERVICE};
use ledger_proto::api::v1 as wire;
use serde_json::{json, Value};
use tonic::Code;

fn field(answer: &common::Answer) -> Option<&str> {
    answer.json["error"]["field"].as_str()
}

fn results(answer: &common::Answer) -> Vec<(String, bool)> {
    answer.json["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| (r["code"].as_str().expect("code").to_string(), r["ok"].as_bool().expect("ok")))
        .collect()
}

fn word(code: &str, ok: bool) -> (String, bool) {
    (code.to_string(), ok)
}

fn open(id: &str, currency: &str, flags: &[&str], owner: &str) -> Value {
    json!({"open": {"id": id, "currency": currency, "code": 10, "flags": flags, "owner_id": owner}})
}

fn posted(id: &str, debit: &str, credit: &str, amount: &str) -> Value {
    json!({"id": id, "debit_account_id": debit, "credit_account_id": credit, "amount": amount,
        "currency": "USD", "code": 1, "kind": "posted"})
}

/// Every page of `path` (which has a `?`), following `next_cursor`; the items.
async fn all_pages(http: &Http, path: &str, token: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            None => format!("{path}&limit={limit}"),
            Some(c) => format!("{path}&limit={limit}&starting_after={c}"),
        };
        let page = http.get(&url, Some(token)).await;
        assert_eq!(page.status, 200, "{url}: {page:?}");
        let data = page.json["data"].as_array().expect("data");
        assert!(data.len() <= limit, "{page:?}");
        items.extend(data.iter().cloned());
        assert_eq!(page.json["has_more"].as_bool(), Some(page.json["next_cursor"].is_string()), "{page:?}");
        match page.json["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return items,
        }
    }
    panic!("{path}: more than 100 pages");
}

/// The next day's midnight of an RFC 3339 time's date: (that midnight, the next).
fn day_of(at: &str) -> (String, String) {
    let date = &at[..10];
    let (y, m, d) = (date[..4].parse().expect("y"), date[5..7].parse().expect("m"), date[8..10].parse().expect("d"));
    let (ny, nm, nd) = ledger_core::calendar::civil_from_days(ledger_core::calendar::days_from_civil(y, m, d) + 1);
    (format!("{date}T00:00:00Z"), format!("{ny:04}-{nm:02}-{nd:02}T00:00:00Z"))
}

#[tokio::test]
async fn accounts_transfers_lookups_balances_movements_history_and_reports() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);

    // Two accounts and a freeze of one that does not exist: one result each.
    let body = json!({"commands": [open("101", "USD", &[], "0"),
        open("102", "USD", &["debits_must_not_exceed_credits"], "7"), {"freeze": "999"}]});
    let created =
        http.call("POST", "/ledger/accounts", Some(SERVICE), &[("Idempotency-Key", "acc-1")], Some(body.clone())).await;
    assert_eq!(created.status, 200, "{created:?}");
    assert_eq!(results(&created), [word("created", true), word("created", true), word("not_found", false)]);
    assert!(created.json["results"][0]["committed_at"].as_str().expect("time").ends_with('Z'));
    assert_eq!(created.json["results"][2]["committed_at"], Value::Null);
    // The same key and body: the same answer again; another body: 409, nothing opened.
    let again =
        http.call("POST", "/ledger/accounts", Some(SERVICE), &[("Idempotency-Key", "acc-1")], Some(body.clone())).await;
    assert_eq!((again.status, &again.json), (200, &created.json));
    assert_eq!(again.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    let other = json!({"commands": [open("103", "USD", &[], "0")]});
    let conflict =
        http.call("POST", "/ledger/accounts", Some(SERVICE), &[("Idempotency-Key", "acc-1")], Some(other)).await;
    assert_eq!((conflict.status, conflict.code()), (409, "idempotency_key_reused"), "{conflict:?}");
    assert_eq!(http.get("/ledger/accounts/103", Some(ADMIN)).await.status, 404);
    // Without a key the ledger's own idempotency answers: the same account again exists.
    let retry = http.post("/ledger/accounts", Some(SERVICE), json!({"commands": [open("101", "USD", &[], "0")]})).await;
    assert_eq!(results(&retry), [word("already_exists", true)]);

    let account = http.get("/ledger/accounts/102", Some(READ_ONLY)).await;
    assert_eq!(account.status, 200, "{account:?}");
    assert_eq!(account.json["id"], "102");
    assert_eq!(account.json["currency"], "USD");
    assert_eq!(account.json["code"], 10);
    assert_eq!(account.json["owner_id"], "7");
    assert_eq!(account.json["state"], "open");
    assert_eq!(account.json["flags"], json!(["debits_must_not_exceed_credits"]));
    assert_eq!(account.json["credits_posted"], "0");
    assert!(account.json["opened_at"].as_str().expect("time").ends_with('Z'));

    // Posted, pending (then posted in full), pending (then voided).
    let batch = json!({"transfers": [
        posted("1", "101", "102", "1250"),
        {"id": "2", "debit_account_id": "101", "credit_account_id": "102", "amount": "500", "currency": "USD",
            "code": 1, "kind": "pending", "timeout_seconds": 3600},
        {"id": "3", "debit_account_id": "101", "credit_account_id": "102", "amount": "70", "currency": "USD",
            "code": 1, "kind": "pending"}]});
    let created =
        http.call("POST", "/ledger/transfers", Some(SERVICE), &[("Idempotency-Key", "t-1")], Some(batch.clone())).await;
    assert_eq!(created.status, 200, "{created:?}");
    assert_eq!(results(&created), [word("created", true), word("created", true), word("created", true)]);
    let replay =
        http.call("POST", "/ledger/transfers", Some(SERVICE), &[("Idempotency-Key", "t-1")], Some(batch)).await;
    assert_eq!((replay.status, &replay.json), (200, &created.json));
    let other = json!({"transfers": [posted("9", "101", "102", "1")]});
    let conflict =
        http.call("POST", "/ledger/transfers", Some(SERVICE), &[("Idempotency-Key", "t-1")], Some(other)).await;
    assert_eq!((conflict.status, conflict.code()), (409, "idempotency_key_reused"));
    assert_eq!(http.get("/ledger/transfers/9", Some(ADMIN)).await.status, 404, "the other body was not run");
    let first_at = created.json["results"][0]["committed_at"].as_str().expect("time").to_string();

    let resolve = json!({"transfers": [
        {"id": "4", "kind": "post_pending", "pending_id": "2"},
        {"id": "5", "kind": "void_pending", "pending_id": "3"}]});
    let resolved = http.post("/ledger/transfers", Some(ADMIN), resolve).await;
    assert_eq!(results(&resolved), [word("created", true), word("created", true)], "{resolved:?}");
    // A transfer again with its fields: already exists; with others: refused.
    let again = http
        .post(
            "/ledger/transfers",
            Some(SERVICE),
            json!({"transfers": [
        posted("1", "101", "102", "1250"), posted("1", "101", "102", "1251")]}),
        )
        .await;
    assert_eq!(results(&again), [word("already_exists", true), word("exists_with_different_fields", false)]);

    let hold = http.get("/ledger/transfers/2", Some(AUDITOR)).await;
    assert_eq!(hold.status, 200, "{hold:?}");
    assert_eq!(hold.json["kind"], "pending");
    assert_eq!(hold.json["amount"], "500");
    assert_eq!(hold.json["pending_status"], "posted");
    assert_eq!(hold.json["resolved_by_id"], "4");
    assert!(hold.json["expires_at"].as_str().expect("expiry").ends_with('Z'));
    let voided = http.get("/ledger/transfers/3", Some(AUDITOR)).await;
    assert_eq!((voided.json["pending_status"].as_str(), voided.json["expires_at"].as_str()), (Some("voided"), None));
    let post = http.get("/ledger/transfers/4", Some(AUDITOR)).await;
    assert_eq!((post.json["kind"].as_str(), post.json["pending_id"].as_str()), (Some("post_pending"), Some("2")));
    assert_eq!(post.json["amount"], "500", "posted in full");
    let plain = http.get("/ledger/transfers/1", Some(AUDITOR)).await;
    assert_eq!(plain.json["pending_status"], Value::Null);
    assert_eq!(plain.json["committed_at"].as_str(), Some(first_at.as_str()));

    // Balances now and as of the first transfer.
    let balance = http.get("/ledger/accounts/102/balance", Some(READ_ONLY)).await;
    assert_eq!(balance.status, 200, "{balance:?}");
    assert_eq!(
        (
            balance.json["credits_posted"].as_str(),
            balance.json["credits_pending"].as_str(),
            balance.json["at"].as_str()
        ),
        (Some("1750"), Some("0"), None)
    );
    let then = http.get(&format!("/ledger/accounts/102/balance?at={first_at}"), Some(READ_ONLY)).await;
    assert_eq!(then.status, 200, "{then:?}");
    assert_eq!(then.json["credits_posted"], "1250");
    assert_eq!(then.json["at"].as_str(), Some(first_at.as_str()));
    let source = http.get("/ledger/accounts/101/balance", Some(READ_ONLY)).await;
    assert_eq!(source.json["debits_posted"], "1750");
    assert_eq!(http.get("/ledger/accounts/4444/balance", Some(ADMIN)).await.status, 404);

    // An account's movements, oldest first, two at a time: every one once.
    let oldest = all_pages(&http, "/ledger/accounts/102/transfers?", READ_ONLY, 2).await;
    let ids: Vec<&str> = oldest.iter().map(|m| m["transfer_id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), 5, "{oldest:#?}");
    let times: Vec<&str> = oldest.iter().map(|m| m["at"].as_str().expect("at")).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");
    assert_eq!(oldest[0]["event_type"], "transfer_posted");
    assert_eq!(oldest[0]["direction"], "credit");
    assert_eq!(oldest[0]["counterparty_account_id"], "101");
    assert_eq!(oldest[0]["credits_posted"], "1250");
    // The same movements through the history, newest first.
    let newest = all_pages(&http, "/ledger/history?account_id=102", READ_ONLY, 2).await;
    let mut reversed: Vec<&str> = newest.iter().map(|m| m["at"].as_str().expect("at")).collect();
    reversed.reverse();
    assert_eq!(reversed, times, "newest first, the same movements");
    let held = newest.iter().find(|m| m["transfer_id"] == "2" && m["event_type"] == "transfer_pending").expect("hold");
    assert_eq!((held["status"].as_str(), held["resolved_by_id"].as_str()), (Some("posted"), Some("4")));
    let by_owner = all_pages(&http, "/ledger/history?owner_id=7", READ_ONLY, 100).await;
    assert_eq!(by_owner.len(), 5);
    let voids = all_pages(&http, "/ledger/history?account_id=102&status=voided", READ_ONLY, 10).await;
    assert!(voids.iter().all(|m| m["status"] == "voided") && !voids.is_empty(), "{voids:#?}");
    let debits = all_pages(&http, "/ledger/history?account_id=102&direction=debit", READ_ONLY, 10).await;
    assert!(debits.is_empty(), "{debits:#?}");
    let later = all_pages(&http, &format!("/ledger/history?account_id=102&to={first_at}"), READ_ONLY, 10).await;
    assert!(later.is_empty(), "`to` is excluded: {later:#?}");

    // The day's report.
    let (from, to) = day_of(&first_at);
    let report = http.get(&format!("/ledger/reports?account_id=102&from={from}&to={to}"), Some(READ_ONLY)).await;
    assert_eq!(report.status, 200, "{report:?}");
    let account = &report.json["reports"][0];
    assert_eq!(
        (account["opening"].as_str(), account["credits"].as_str(), account["closing"].as_str()),
        (Some("0"), Some("1750"), Some("1750")),
        "{report:?}"
    );
    assert_eq!(account["days"][0]["start"].as_str(), Some(from.as_str()));
    assert_eq!(report.json["converted"], Value::Null);
    let owners = http.get(&format!("/ledger/reports?owner_id=7&from={from}&to={to}"), Some(READ_ONLY)).await;
    assert_eq!(owners.json["reports"].as_array().map(Vec::len), Some(1), "{owners:?}");

    // The document lists every route.
    let doc = http.get("/openapi.json", None).await;
    for (path, method) in [
        ("/ledger/accounts", "post"),
        ("/ledger/accounts/{id}", "get"),
        ("/ledger/accounts/{id}/balance", "get"),
        ("/ledger/accounts/{id}/transfers", "get"),
        ("/ledger/transfers", "post"),
        ("/ledger/transfers/{id}", "get"),
        ("/ledger/history", "get"),
        ("/ledger/reports", "get"),
        ("/admin/users", "get"),
        ("/admin/users/{id}", "get"),
        ("/admin/accounts", "get"),
        ("/admin/review_queue", "get"),
    ] {
        assert!(doc.json["paths"][path][method].is_object(), "{method} {path} missing from the document");
    }
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);
    let opened = http
        .post(
            "/ledger/accounts",
            Some(ADMIN),
            json!({"commands": [open("1", "USD", &[], "0"), open("2", "USD", &[], "0")]}),
        )
        .await;
    assert_eq!(results(&opened), [word("created", true), word("created", true)]);

    let bad_transfer = |patch: Value| {
        let mut transfer = posted("50", "1", "2", "100");
        for (k, v) in patch.as_object().expect("patch") {
            transfer[k] = v.clone();
        }
        json!({"transfers": [posted("49", "1", "2", "1"), transfer]})
    };
    for (patch, expected) in [
        (json!({"id": "abc"}), "transfers[1].id"),
        (json!({"id": "340282366920938463463374607431768211456"}), "transfers[1].id"),
        (json!({"amount": "12.50"}), "transfers[1].amount"),
        (json!({"amount": "-5"}), "transfers[1].amount"),
        (json!({"debit_account_id": "x1"}), "transfers[1].debit_account_id"),
        (json!({"currency": "XYZ"}), "transfers[1].currency"),
        (json!({"code": 70000}), "transfers[1].code"),
        (json!({"timeout_seconds": 5}), "transfers[1].timeout_seconds"),
        (json!({"kind": "post_pending"}), "transfers[1].pending_id"),
        (json!({"metadata": "m".repeat(300)}), "transfers[1].metadata"),
        (json!({"surprise": 1}), "surprise"),
    ] {
        let answer = http.post("/ledger/transfers", Some(ADMIN), bad_transfer(patch.clone())).await;
        assert_eq!(
            (answer.status, answer.code(), field(&answer)),
            (400, "invalid_request", Some(expected)),
            "{patch}: {answer:?}"
        );
    }
    for patch in [json!({"kind": "sideways"}), json!({"code": -1}), json!({"amount": 5})] {
        let answer = http.post("/ledger/transfers", Some(ADMIN), bad_transfer(patch.clone())).await;
        assert_eq!((answer.status, answer.code()), (400, "invalid_request"), "{patch}: {answer:?}");
    }
    // None of those batches committed anything, not even their good first transfer.
    assert_eq!(http.get("/ledger/transfers/49", Some(ADMIN)).await.status, 404);
    let balance = http.get("/ledger/accounts/2/balance", Some(ADMIN)).await;
    assert_eq!(balance.json["credits_posted"], "0", "{balance:?}");

    let bad_accounts = [
        (json!({"commands": [open("9", "XYZ", &[], "0")]}), "commands[0].open.currency"),
        (json!({"commands": [open("", "USD", &[], "0")]}), "commands[0].open.id"),
        (json!({"commands": [open("9", "USD", &[], "me")]}), "commands[0].open.owner_id"),
        (json!({"commands": [{"open": {"id": "9", "currency": "USD", "code": 65536}}]}), "commands[0].open.code"),
        (json!({"commands": [{"close": "-1"}]}), "commands[0].close"),
    ];
    for (body, expected) in bad_accounts {
        let answer = http.post("/ledger/accounts", Some(ADMIN), body.clone()).await;
        assert_eq!((answer.status, field(&answer)), (400, Some(expected)), "{body}: {answer:?}");
    }
    let answer = http
        .post(
            "/ledger/accounts",
            Some(ADMIN),
            json!({"commands": [{"open": {"id": "9", "currency": "USD", "flags": ["no_such_flag"]}}]}),
        )
        .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(http.get("/ledger/accounts/9", Some(ADMIN)).await.status, 404, "nothing opened");

    // Ids in paths, times, filters and cursors in queries.
    for (path, expected) in [
        ("/ledger/accounts/abc", "id"),
        ("/ledger/transfers/12x", "id"),
        ("/ledger/accounts/1/balance?at=yesterday", "at"),
        ("/ledger/accounts/1/balance?at=2026-02-30T00:00:00Z", "at"),
        ("/ledger/accounts/x/balance", "id"),
        ("/ledger/accounts/1/transfers?from=soon", "from"),
        ("/ledger/accounts/1/transfers?starting_after=zz", "starting_after"),
        ("/ledger/accounts/1/transfers?limit=101", "limit"),
        ("/ledger/accounts/1/transfers?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ("/ledger/history?account_id=1&direction=up", "direction"),
        ("/ledger/history?account_id=1&status=lost", "status"),
        ("/ledger/history?account_id=1&currency=XYZ", "currency"),
        ("/ledger/history?account_id=1&starting_after=zz", "starting_after"),
        ("/ledger/history?account_id=1&limit=0", "limit"),
        ("/ledger/history?owner_id=-3", "owner_id"),
        ("/ledger/history?account_id=1&bogus=1", "bogus"),
        ("/ledger/reports?account_id=1&to=2026-01-01T00:00:00Z", "from"),
        (
            "/ledger/reports?account_id=1&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&utc_offset_minutes=x",
            "utc_offset_minutes",
        ),
        ("/ledger/reports?account_id=1&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&convert_to=XYZ", "convert_to"),
        ("/admin/users?starting_after=x", "starting_after"),
        ("/admin/users/abc", "id"),
        ("/admin/accounts?starting_after=x", "starting_after"),
        ("/admin/review_queue?starting_after=x", "starting_after"),
    ] {
        let answer = http.get(path, Some(ADMIN)).await;
        assert_eq!((answer.status, field(&answer)), (400, Some(expected)), "{path}: {answer:?}");
    }
    let answer = http.get("/ledger/history", Some(ADMIN)).await;
    assert_eq!((answer.status, answer.code()), (400, "invalid_request"), "neither account nor owner: {answer:?}");
    let answer = http.get("/ledger/accounts/5555", Some(ADMIN)).await;
    assert_eq!((answer.status, answer.code()), (404, "not_found"));
    let answer = http.get("/ledger/transfers/5555", Some(ADMIN)).await;
    assert_eq!((answer.status, answer.code()), (404, "not_found"));
    let answer = http.get("/ledger/history?account_id=5555", Some(ADMIN)).await;
    assert_eq!(answer.status, 404, "{answer:?}");

    // A linked chain with a failing member creates nothing; the rest of the batch is
    // decided on its own.
    let batch = json!({"transfers": [
        {"id": "60", "debit_account_id": "1", "credit_account_id": "2", "amount": "10", "currency": "USD", "code": 1, "linked": true},
        {"id": "61", "debit_account_id": "1", "credit_account_id": "2", "amount": "20", "currency": "USD", "code": 1, "linked": true},
        {"id": "62", "debit_account_id": "404", "credit_account_id": "2", "amount": "30", "currency": "USD", "code": 1},
        posted("63", "1", "2", "5")]});
    let answer = http.post("/ledger/transfers", Some(SERVICE), batch).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        results(&answer),
        [
            word("linked_event_failed", false),
            word("linked_event_failed", false),
            word("debit_account_not_found", false),
            word("created", true)
        ]
    );
    assert!(answer.json["results"][2]["message"].as_str().is_some_and(|m| !m.is_empty()));
    for id in ["60", "61", "62"] {
        assert_eq!(http.get(&format!("/ledger/transfers/{id}"), Some(ADMIN)).await.status, 404, "{id} was created");
    }
    let balance = http.get("/ledger/accounts/2/balance", Some(ADMIN)).await;
    assert_eq!(balance.json["credits_posted"], "5", "only the unlinked transfer: {balance:?}");
}

#[tokio::test]
async fn sessions_and_roles_are_refused_as_over_grpc() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);
    let (alice_id, alice) = http.person("Alice Example", "alice@example.com").await;
    let (bob_id, bob) = http.person("Bob Example", "bob@example.com").await;
    fund(&server, &Person { id: alice_id.clone(), token: alice.clone() }, "USD", "5000", "1").await;
    let mut grpc = server.client().await;

    // Creating transfers: a session, read-only and an auditor may not (403), no token is 401.
    let transfer = json!({"transfers": [posted("77", "9085083068", "1", "1")]});
    let wire_transfer = || wire::CreateTransfersRequest {
        transfers: vec![wire::NewTransfer {
            id: "77".into(),
            debit_account_id: "9085083068".into(),
            credit_account_id: "1".into(),
            amount: "1".into(),
            currency: "USD".into(),
            code: 1,
            ..Default::default()
        }],
    };
    for token in [alice.as_str(), READ_ONLY, AUDITOR] {
        let answer = http.post("/ledger/transfers", Some(token), transfer.clone()).await;
        assert_eq!((answer.status, answer.code()), (403, "permission_denied"), "{answer:?}");
        let status = grpc.create_transfers(authed(wire_transfer(), token)).await.expect_err("refused");
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    let answer = http.post("/ledger/transfers", None, transfer.clone()).await;
    assert_eq!((answer.status, answer.code()), (401, "unauthenticated"));
    assert_eq!(grpc.create_transfers(wire_transfer()).await.expect_err("refused").code(), Code::Unauthenticated);
    let answer = http.post("/ledger/transfers", Some("not-a-token-at-all-0000"), transfer).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    let answer =
        http.post("/ledger/accounts", Some(READ_ONLY), json!({"commands": [open("8", "USD", &[], "0")]})).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(http.get("/ledger/transfers/77", Some(ADMIN)).await.status, 404, "nothing was created");
    assert_eq!(http.get("/ledger/accounts/8", Some(ADMIN)).await.status, 404, "nothing was opened");

    // Look-ups need a role; a session is refused as over gRPC.
    let answer = http.get("/ledger/transfers/1", Some(&alice)).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let lookup = wire::LookupTransfersRequest { ids: vec!["1".into()] };
    assert_eq!(
        grpc.lookup_transfers(authed(lookup, &alice)).await.expect_err("refused").code(),
        Code::PermissionDenied
    );
    assert_eq!(http.get("/ledger/transfers/1", Some(READ_ONLY)).await.status, 200);

    // A session reads its own history, with the funding in it, and not someone else's.
    let own = http.get(&format!("/ledger/history?owner_id={alice_id}"), Some(&alice)).await;
    assert_eq!(own.status, 200, "{own:?}");
    assert_eq!(own.json["data"][0]["amount"], "5000");
    assert_eq!(own.json["data"][0]["direction"], "credit");
    let wallet = own.json["data"][0]["account_id"].as_str().expect("wallet").to_string();
    let answer = http.get(&format!("/ledger/history?account_id={wallet}"), Some(&bob)).await;
    assert_eq!((answer.status, answer.code()), (403, "permission_denied"), "{answer:?}");
    let history = wire::GetHistoryRequest { account_id: wallet.clone(), ..Default::default() };
    assert_eq!(grpc.get_history(authed(history, &bob)).await.expect_err("refused").code(), Code::PermissionDenied);
    let answer = http.get(&format!("/ledger/history?owner_id={alice_id}"), Some(&bob)).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let (from, to) = day_of(own.json["data"][0]["at"].as_str().expect("at"));
    let answer = http.get(&format!("/ledger/reports?account_id={wallet}&from={from}&to={to}"), Some(&bob)).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let answer = http.get(&format!("/ledger/reports?account_id={wallet}&from={from}&to={to}"), Some(&alice)).await;
    assert_eq!((answer.status, answer.json["reports"][0]["credits"].as_str()), (200, Some("5000")), "{answer:?}");
    // The balance route is for roles, as GetBalance.
    assert_eq!(http.get(&format!("/ledger/accounts/{wallet}/balance"), Some(&alice)).await.status, 403);

    // The admin views: admin (and support) only.
    let mut admin = wire::admin_client::AdminClient::new(common::channel(&server).await);
    for token in [alice.as_str(), READ_ONLY, AUDITOR, SERVICE] {
        for path in ["/admin/users", "/admin/accounts", "/admin/review_queue", &format!("/admin/users/{bob_id}")] {
            let answer = http.get(path, Some(token)).await;
            assert_eq!((answer.status, answer.code()), (403, "permission_denied"), "{path}: {answer:?}");
        }
        let status = admin.list_users(authed(wire::ListUsersRequest::default(), token)).await.expect_err("refused");
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    let answer = http.get("/admin/users", None).await;
    assert_eq!(answer.status, 401, "{answer:?}");
}

#[tokio::test]
async fn admin_views_of_users_accounts_and_the_review_queue_are_paged() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);
    let mut people = Vec::new();
    for name in ["ada", "bob", "carol", "dave", "erin"] {
        people.push(http.person(name, &format!("{name}@example.com")).await);
    }
    let (ada_id, ada) = people[0].clone();
    fund(&server, &Person { id: ada_id.clone(), token: ada.clone() }, "USD", "200000", "1").await;

    // Users, two at a time, in id order, each once.
    let users = all_pages(&http, "/admin/users?", ADMIN, 2).await;
    let ids: Vec<String> = users.iter().map(|u| u["user_id"].as_str().expect("id").to_string()).collect();
    let mut expected: Vec<String> = people.iter().map(|(id, _)| id.clone()).collect();
    expected.sort_by_key(|id| id.parse::<u128>().expect("id"));
    assert_eq!(ids, expected);
    assert!(users.iter().all(|u| u["registered_at"].as_str().is_some_and(|t| t.ends_with('Z'))));
    let one = http.get("/admin/users?email=Carol@Example.com", Some(ADMIN)).await;
    assert_eq!(one.json["data"][0]["user_id"].as_str(), Some(people[2].0.as_str()), "{one:?}");
    assert_eq!((one.json["data"][0]["name"].as_str(), one.json["has_more"].as_bool()), (Some("carol"), Some(false)));
    let none = http.get("/admin/users?email=nobody@example.com", Some(ADMIN)).await;
    assert_eq!(none.json["data"], json!([]));

    // Two payments above 500.00 to payees never paid before: both held for review; and
    // two ordinary ones.
    let mut held = Vec::new();
    for (n, (to, _)) in people[1..3].iter().enumerate() {
        let pay = json!({"client_transaction_id": format!("big-{n}"), "receiver_user_id": to, "amount": "600", "currency": "USD"});
        let sent = http.post("/user/transaction", Some(&ada), pay).await;
        assert_eq!(sent.status, 201, "{sent:?}");
        held.push(sent.json["id"].as_str().expect("id").to_string());
    }
    for n in 0..2 {
        let pay = json!({"client_transaction_id": format!("small-{n}"), "receiver_user_id": people[3].0, "amount": "1.00", "currency": "USD"});
        assert_eq!(http.post("/user/transaction", Some(&ada), pay).await.status, 201);
    }
    let mut queue = Vec::new();
    for _ in 0..1500 {
        queue = all_pages(&http, "/admin/review_queue?", ADMIN, 1).await;
        if queue.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let queued: Vec<&str> = queue.iter().map(|r| r["payment"]["id"].as_str().expect("id")).collect();
    assert_eq!(queued, held.iter().map(String::as_str).collect::<Vec<_>>(), "oldest first, each once");
    assert_eq!(queue[0]["payment"]["status"], "requires_review");
    assert_eq!(queue[0]["payment"]["amount"], "600.00");
    assert!(queue[0]["times_out_at"].as_str() > queue[0]["in_review_since"].as_str());
    let first = http.get("/admin/review_queue?limit=1", Some(ADMIN)).await;
    assert_eq!((first.json["queue_length"].as_u64(), first.json["has_more"].as_bool()), (Some(2), Some(true)));

    // One user: profile, wallet, payments paged newest first.
    let view = http.get(&format!("/admin/users/{ada_id}?limit=3"), Some(ADMIN)).await;
    assert_eq!(view.status, 200, "{view:?}");
    assert_eq!(view.json["profile"]["email"], "ada@example.com");
    assert_eq!(view.json["wallets"][0]["currency"], "USD");
    assert_eq!(view.json["payments"]["data"].as_array().map(Vec::len), Some(3));
    assert_eq!(view.json["payments"]["has_more"], true);
    let cursor = view.json["payments"]["next_cursor"].as_str().expect("cursor");
    let rest = http.get(&format!("/admin/users/{ada_id}?limit=3&starting_after={cursor}"), Some(ADMIN)).await;
    assert_eq!(rest.json["payments"]["data"].as_array().map(Vec::len), Some(1), "{rest:?}");
    assert_eq!(rest.json["payments"]["has_more"], false);
    let mut all: Vec<Value> = view.json["payments"]["data"].as_array().expect("data").clone();
    all.extend(rest.json["payments"]["data"].as_array().expect("data").iter().cloned());
    let created: Vec<&str> = all.iter().map(|p| p["created_at"].as_str().expect("t")).collect();
    let mut newest_first = created.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(created, newest_first);
    assert_eq!(all.last().map(|p| p["id"].as_str()), Some(Some(held[0].as_str())));
    let missing = http.get("/admin/users/123456789", Some(ADMIN)).await;
    assert_eq!(missing.status, 404, "{missing:?}");

    // Ledger accounts, in id order, each once.
    let accounts = all_pages(&http, "/admin/accounts?", ADMIN, 2).await;
    let ids: Vec<u128> = accounts.iter().map(|a| a["account_id"].as_str().expect("id").parse().expect("n")).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted);
    let wallet = view.json["wallets"][0]["account_id"].as_str().expect("wallet");
    let row = accounts.iter().find(|a| a["account_id"] == wallet).expect("the wallet is listed");
    assert_eq!((row["owner_id"].as_str(), row["currency"].as_str()), (Some(ada_id.as_str()), Some("USD")));
    assert!(row["opened_at"].as_str().is_some_and(|t| t.ends_with('Z')));
}
