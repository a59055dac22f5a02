//! Users, their security settings, payment methods and wallets over HTTP through the
//! real `ledgerd`: every route's answer, each error class (as the gRPC API answers the
//! same call), idempotency of the creating calls, paging, and the OpenAPI document.

mod common;

use std::collections::BTreeSet;

use common::{fund, Answer, Http, Person, Server, ADMIN, PASSWORD};
use ledger_platform::users::totp;
use serde_json::{json, Value};

const CARD: &str = "4242424242424242";
const CVV: &str = "987";

/// Every item of a cursor-paged list at `path` (with `limit` per page), in order,
/// checking each page's shape.
async fn all_pages(http: &Http, path: &str, token: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            None => format!("{path}{sep}limit={limit}"),
            Some(c) => format!("{path}{sep}limit={limit}&starting_after={c}"),
        };
        let page = http.get(&url, Some(token)).await;
        assert_eq!(page.status, 200, "{url}: {page:?}");
        let data = page.json["data"].as_array().expect("data");
        assert!(data.len() <= limit, "{page:?}");
        items.extend(data.iter().cloned());
        match (page.json["has_more"].as_bool(), page.json["next_cursor"].as_str()) {
            (Some(true), Some(next)) => cursor = Some(next.to_string()),
            (Some(false), None) => return items,
            other => panic!("has_more and next_cursor disagree: {other:?} {page:?}"),
        }
    }
    panic!("{path} never ended");
}

fn field(answer: &Answer) -> Option<&str> {
    answer.json["error"]["field"].as_str()
}

async fn delete(http: &Http, path: &str, token: &str, body: Option<Value>) -> Answer {
    http.call("DELETE", path, Some(token), &[], body).await
}

/// The current TOTP step by this machine's clock: the server's is the same or, if a
/// step ends during the test, the next one (the codes used work either way).
fn current_step() -> u64 {
    totp::step_of(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_password_sessions_events_totp_and_deletion() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);
    let (alice_id, alice) = http.person("Alice Example", "alice@example.com").await;
    let (_, bob) = http.person("Bob Example", "bob@example.com").await;
    let second = http.post("/user/sessions", None, json!({"email": "alice@example.com", "password": PASSWORD})).await;
    assert_eq!(second.status, 201, "{second:?}");
    let alice_2 = second.json["session_token"].as_str().expect("token").to_string();
    let alice_2_id = second.json["session_id"].as_str().expect("id").to_string();

    // PATCH /user: only the fields given change.
    let patch = |body: Value| http.call("PATCH", "/user", Some(&alice), &[], Some(body));
    let updated = patch(json!({"phone": "+442079460958", "address": "12 St James Square, London"})).await;
    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(updated.json["phone"], "+442079460958");
    assert_eq!(updated.json["address"], "12 St James Square, London");
    assert_eq!(
        (updated.json["name"].as_str(), updated.json["user_id"].as_str()),
        (Some("Alice Example"), Some(alice_id.as_str()))
    );
    let bad = patch(json!({"phone": "0207"})).await;
    assert_eq!((bad.status, field(&bad)), (400, Some("phone")), "{bad:?}");
    let bad = patch(json!({"nickname": "Al"})).await;
    assert_eq!((bad.status, field(&bad)), (400, Some("nickname")), "{bad:?}");
    // The email needs the current password.
    let bad = patch(json!({"email": "alice@new.example.com", "current_password": "not-the-password-1"})).await;
    assert_eq!(bad.status, 401, "{bad:?}");
    let moved = patch(json!({"email": "alice@new.example.com", "current_password": PASSWORD})).await;
    assert_eq!((moved.status, moved.json["email"].as_str()), (200, Some("alice@new.example.com")), "{moved:?}");
    let me = http.get("/user", Some(&alice)).await;
    assert_eq!(
        (me.json["email"].as_str(), me.json["phone"].as_str()),
        (Some("alice@new.example.com"), Some("+442079460958"))
    );

    // GET /user/sessions: both sessions, one per page, the calling one marked current.
    let sessions = all_pages(&http, "/user/sessions", &alice, 1).await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let ids: BTreeSet<&str> = sessions.iter().map(|s| s["session_id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(alice_2_id.as_str()));
    let current: Vec<&str> =
        sessions.iter().filter(|s| s["current"] == true).map(|s| s["session_id"].as_str().expect("id")).collect();
    assert_eq!(current.len(), 1);
    assert_ne!(current[0], alice_2_id, "the call was made with the first session");
    assert!(sessions.iter().all(|s| s["started_at"].as_str().is_some_and(|t| t.ends_with('Z'))));
    assert!(sessions[0]["started_at"].as_str() >= sessions[1]["started_at"].as_str(), "newest first");
    let bad = http.get("/user/sessions?starting_after=nonsense", Some(&alice)).await;
    assert_eq!((bad.status, field(&bad)), (400, Some("starting_after")), "{bad:?}");

    // Revoking: another user's session is 404 (as over gRPC) and stays; one's own ends.
    let theirs = delete(&http, &format!("/user/sessions/{alice_2_id}"), &bob, None).await;
    assert_eq!(theirs.status, 404, "{theirs:?}");
    assert_eq!(http.get("/user", Some(&alice_2)).await.status, 200, "still signed in");
    let revoked = delete(&http, &format!("/user/sessions/{alice_2_id}"), &alice, None).await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    assert_eq!(revoked.json, json!({"deleted": true, "id": alice_2_id}));
    assert_eq!(http.get("/user", Some(&alice_2)).await.status, 401);
    let again = delete(&http, &format!("/user/sessions/{alice_2_id}"), &alice, None).await;
    assert_eq!(again.status, 404, "{again:?}");

    // POST /user/password: the current password is checked, the new one too; other
    // sessions end.
    let third =
        http.post("/user/sessions", None, json!({"email": "alice@new.example.com", "password": PASSWORD})).await.json
            ["session_token"]
            .as_str()
            .expect("token")
            .to_string();
    let change = |current: &str, new: &str| {
        http.post("/user/password", Some(&alice), json!({"current_password": current, "new_password": new}))
    };
    let wrong = change("not-the-password-1", "a-brand-new-passphrase").await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let weak = change(PASSWORD, "password").await;
    assert_eq!(weak.status, 400, "{weak:?}");
    assert_eq!(http.get("/user", Some(&third)).await.status, 200, "nothing changed yet");
    let changed = change(PASSWORD, "a-brand-new-passphrase").await;
    assert_eq!((changed.status, changed.json["sessions_ended"].as_u64()), (200, Some(1)), "{changed:?}");
    assert_eq!(http.get("/user", Some(&third)).await.status, 401, "the other session ended");
    assert_eq!(http.get("/user", Some(&alice)).await.status, 200, "the current one goes on");
    let old = http.post("/user/sessions", None, json!({"email": "alice@new.example.com", "password": PASSWORD})).await;
    assert_eq!(old.status, 401);
    const NEW_PASSWORD: &str = "a-brand-new-passphrase";

    // TOTP: enroll (password checked), confirm (code checked), then on; off again.
    let enroll = |password: &str| http.post("/user/totp", Some(&alice), json!({"current_password": password}));
    assert_eq!(enroll("not-the-password-1").await.status, 401);
    let enrolled = enroll(NEW_PASSWORD).await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    assert!(enrolled.json["otpauth_uri"].as_str().expect("uri").starts_with("otpauth://totp/"));
    let secret = totp::base32_decode(enrolled.json["secret"].as_str().expect("secret")).expect("base32");
    let at = |step: u64| format!("{:06}", totp::code_at(&secret, step));
    let step = current_step();
    let wrong = http.post("/user/totp/confirm", Some(&alice), json!({"code": at(step + 5)})).await;
    assert_eq!(wrong.status, 400, "{wrong:?}");
    let confirmed = http.post("/user/totp/confirm", Some(&alice), json!({"code": at(step)})).await;
    assert_eq!(confirmed.status, 200, "{confirmed:?}");
    assert_eq!(confirmed.json["recovery_codes"].as_array().map(Vec::len), Some(10));
    assert_eq!(http.get("/user", Some(&alice)).await.json["totp_enabled"], true);
    let no_code = delete(&http, "/user/totp", &alice, Some(json!({"current_password": NEW_PASSWORD}))).await;
    assert_eq!(no_code.status, 401, "{no_code:?}");
    assert_eq!(http.get("/user", Some(&alice)).await.json["totp_enabled"], true);
    let off =
        delete(&http, "/user/totp", &alice, Some(json!({"current_password": NEW_PASSWORD, "totp_code": at(step + 1)})))
            .await;
    assert_eq!((off.status, off.json["deleted"].as_bool()), (200, Some(true)), "{off:?}");
    assert_eq!(http.get("/user", Some(&alice)).await.json["totp_enabled"], false);

    // GET /user/security_events: newest first, two per page, each once.
    let events = all_pages(&http, "/user/security_events", &alice, 2).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().expect("kind")).collect();
    for kind in [
        "sign_in_succeeded",
        "sign_in_failed",
        "profile_updated",
        "password_changed",
        "session_ended",
        "second_factor_enabled",
        "second_factor_disabled",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert_eq!(kinds.first(), Some(&"second_factor_disabled"), "newest first: {kinds:?}");
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().expect("at")).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let single = all_pages(&http, "/user/security_events", &alice, 100).await;
    assert_eq!(single, events, "paging neither repeats nor skips");

    // Role tokens are not users (403, as over gRPC); no token is 401.
    for path in ["/user/sessions", "/user/security_events"] {
        let answer = http.get(path, Some(ADMIN)).await;
        assert_eq!((answer.status, answer.code()), (403, "permission_denied"), "{path}: {answer:?}");
        assert_eq!(http.get(path, None).await.status, 401, "{path}");
    }

    // DELETE /user: refused while a wallet holds money, with a wrong password; then done.
    let bob_person = Person { id: String::new(), token: bob.clone() };
    fund(&server, &bob_person, "USD", "500", "1").await;
    let holds = delete(&http, "/user", &bob, Some(json!({"current_password": PASSWORD}))).await;
    assert_eq!(holds.status, 422, "{holds:?}");
    let wrong = delete(&http, "/user", &alice, Some(json!({"current_password": PASSWORD}))).await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let missing = delete(&http, "/user", &alice, None).await;
    assert_eq!(missing.status, 415, "{missing:?}");
    let deleted = delete(&http, "/user", &alice, Some(json!({"current_password": NEW_PASSWORD}))).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(deleted.json, json!({"deleted": true, "id": alice_id}));
    assert_eq!(http.get("/user", Some(&alice)).await.status, 401);
    let sign_in =
        http.post("/user/sessions", None, json!({"email": "alice@new.example.com", "password": NEW_PASSWORD})).await;
    assert_eq!(sign_in.status, 401);

    // DELETE /user/sessions/current signs out.
    let out = delete(&http, "/user/sessions/current", &bob, None).await;
    assert_eq!((out.status, out.json["deleted"].as_bool()), (200, Some(true)), "{out:?}");
    assert_eq!(http.get("/user", Some(&bob)).await.status, 401);
    assert_eq!(delete(&http, "/user/sessions/current", &bob, None).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_methods_and_wallets() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path());
    let http = Http::of(&server);
    let (alice_id, alice) = http.person("Alice Example", "alice@example.com").await;
    let (_, bob) = http.person("Bob Example", "bob@example.com").await;

    // A bank account, linked with the seed's call, listed under /user/linked_accounts.
    let bank = json!({"bank_name": "Bank of Examples", "routing_number": "021000021",
        "account_number": "000123456789", "holder_name": "Alice Example"});
    let linked = http.post("/user/linked_accounts", Some(&alice), bank).await;
    assert_eq!(linked.status, 201, "{linked:?}");
    let bank_id = linked.json["instrument"]["instrument_id"].as_str().expect("id").to_string();
    let deposits: Vec<u64> =
        linked.json["sandbox_micro_deposits"].as_array().expect("deposits").iter().filter_map(Value::as_u64).collect();
    assert_eq!(deposits.len(), 2);
    let banks = http.get("/user/linked_accounts", Some(&alice)).await;
    assert_eq!(banks.status, 200, "{banks:?}");
    assert_eq!(banks.json["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(banks.json["data"][0]["instrument_id"].as_str(), Some(bank_id.as_str()));
    assert_eq!(banks.json["has_more"], false);

    // POST /user/cards: idempotent by key; the number and CVV are never answered.
    let card = json!({"number": CARD, "exp_month": 8, "exp_year": 2035, "cvv": CVV, "holder_name": "Alice Example"});
    let key = [("Idempotency-Key", "card-1")];
    let added = http.call("POST", "/user/cards", Some(&alice), &key, Some(card.clone())).await;
    assert_eq!(added.status, 201, "{added:?}");
    let card_id = added.json["instrument"]["instrument_id"].as_str().expect("id").to_string();
    assert_eq!(added.json["instrument"]["kind"], "card");
    assert_eq!(added.json["instrument"]["status"], "verified");
    assert_eq!(added.json["instrument"]["card_last4"], "4242");
    assert_eq!(
        (added.json["instrument"]["card_exp_month"].as_u64(), added.json["instrument"]["card_exp_year"].as_u64()),
        (Some(8), Some(2035))
    );
    let replay = http.call("POST", "/user/cards", Some(&alice), &key, Some(card.clone())).await;
    assert_eq!((replay.status, replay.json["instrument"]["instrument_id"].as_str()), (201, Some(card_id.as_str())));
    assert_eq!(replay.headers.get("idempotent-replayed").map(|v| v.to_str().expect("text")), Some("true"));
    let other = json!({"number": "5555555555554444", "exp_month": 8, "exp_year": 2035, "cvv": CVV});
    let reused = http.call("POST", "/user/cards", Some(&alice), &key, Some(other)).await;
    assert_eq!((reused.status, reused.code()), (409, "idempotency_key_reused"), "{reused:?}");
    // Bad cards: a number given as a JSON number, a Luhn failure, a declined card. No
    // answer repeats the number or the CVV.
    let mut answers = vec![added, replay, reused];
    let as_number = http
        .post(
            "/user/cards",
            Some(&alice),
            json!({"number": 4242424242424242u64, "exp_month": 8, "exp_year": 2035, "cvv": CVV}),
        )
        .await;
    assert_eq!((as_number.status, field(&as_number)), (400, Some("number")), "{as_number:?}");
    let cvv_number = http
        .post("/user/cards", Some(&alice), json!({"number": CARD, "exp_month": 8, "exp_year": 2035, "cvv": 987}))
        .await;
    assert_eq!((cvv_number.status, field(&cvv_number)), (400, Some("cvv")), "{cvv_number:?}");
    let luhn = http
        .post(
            "/user/cards",
            Some(&alice),
            json!({"number": "4242424242424241", "exp_month": 8, "exp_year": 2035, "cvv": CVV}),
        )
        .await;
    assert_eq!((luhn.status, field(&luhn)), (400, Some("number")), "{luhn:?}");
    let declined = http
        .post(
            "/user/cards",
            Some(&alice),
            json!({"number": "4000000000000002", "exp_month": 8, "exp_year": 2035, "cvv": CVV}),
        )
        .await;
    assert_eq!(declined.status, 422, "{declined:?}");
    answers.extend([as_number, cvv_number, luhn, declined]);
    for answer in &answers {
        let text = answer.json.to_string();
        for secret in [CARD, "4242424242424241", "4000000000000002", "5555555555554444", CVV] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    // POST /user/digital_wallets.
    let wallet = http
        .call(
            "POST",
            "/user/digital_wallets",
            Some(&alice),
            &[("Idempotency-Key", "dw-1")],
            Some(json!({"provider": "paypal", "handle": "alice@example.com"})),
        )
        .await;
    assert_eq!(wallet.status, 201, "{wallet:?}");
    assert_eq!(wallet.json["instrument"]["kind"], "digital_wallet");
    assert_eq!(wallet.json["instrument"]["wallet_provider"], "paypal");
    assert!(!wallet.json.to_string().contains("alice@example.com"), "the handle is masked: {wallet:?}");
    let wallet_id = wallet.json["instrument"]["instrument_id"].as_str().expect("id").to_string();
    let bad = http
        .post("/user/digital_wallets", Some(&alice), json!({"provider": "bitpouch", "handle": "alice@example.com"}))
        .await;
    assert_eq!((bad.status, field(&bad)), (400, Some("provider")), "{bad:?}");

    // Lists by kind, and all kinds paged newest first; an instrument added between two
    // pages comes before the cursor, so nothing repeats or is skipped.
    let cards = http.get("/user/cards", Some(&alice)).await;
    assert_eq!(
        cards.json["data"].as_array().map(|d| d.iter().map(|i| i["instrument_id"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(card_id)])
    );
    let wallets = http.get("/user/digital_wallets", Some(&alice)).await;
    assert_eq!(
        wallets.json["data"].as_array().map(|d| d.iter().map(|i| i["instrument_id"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(wallet_id)])
    );
    let first = http.get("/user/instruments?limit=2", Some(&alice)).await;
    assert_eq!(first.status, 200, "{first:?}");
    let ids = |page: &Answer| -> Vec<String> {
        page.json["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|i| i["instrument_id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(ids(&first), vec![wallet_id.clone(), card_id.clone()], "newest first");
    let venmo =
        http.post("/user/digital_wallets", Some(&alice), json!({"provider": "venmo", "handle": "+14155550100"})).await;
    assert_eq!(venmo.status, 201, "{venmo:?}");
    let cursor = first.json["next_cursor"].as_str().expect("cursor");
    let rest = http.get(&format!("/user/instruments?limit=2&starting_after={cursor}"), Some(&alice)).await;
    assert_eq!((ids(&rest), rest.json["has_more"].as_bool()), (vec![bank_id.clone()], Some(false)), "{rest:?}");
    assert_eq!(all_pages(&http, "/user/instruments", &alice, 1).await.len(), 4);
    let bad = http.get("/user/instruments?limit=101", Some(&alice)).await;
    assert_eq!((bad.status, field(&bad)), (400, Some("limit")), "{bad:?}");

    // Verify the bank account: a wrong pair is 422 (an attempt used), three amounts 400,
    // the right pair verifies it.
    let verify_path = format!("/user/instruments/{bank_id}/verify");
    let verify = |amounts: Value, token: &str| {
        let token = token.to_string();
        let path = &verify_path;
        let http = &http;
        async move { http.post(path, Some(&token), json!({ "amounts": amounts })).await }
    };
    let theirs = verify(json!(deposits), &bob).await;
    assert_eq!(theirs.status, 404, "another user's instrument, as over gRPC: {theirs:?}");
    let three = verify(json!([1, 2, 3]), &alice).await;
    assert_eq!((three.status, field(&three)), (400, Some("amounts")), "{three:?}");
    let negative = verify(json!([-1, 2]), &alice).await;
    assert_eq!((negative.status, field(&negative)), (400, None), "{negative:?}");
    let wrong = verify(json!([deposits[0] + 1, deposits[1]]), &alice).await;
    assert_eq!(wrong.status, 422, "{wrong:?}");
    let verified = verify(json!([deposits[1], deposits[0]]), &alice).await;
    assert_eq!((verified.status, verified.json["status"].as_str()), (200, Some("verified")), "{verified:?}");

    // The default: the first verified instrument (the card), then the bank on request.
    let all = all_pages(&http, "/user/instruments", &alice, 100).await;
    let default: Vec<&str> =
        all.iter().filter(|i| i["is_default"] == true).map(|i| i["instrument_id"].as_str().expect("id")).collect();
    assert_eq!(default, vec![card_id.as_str()]);
    let theirs = http.post(&format!("/user/instruments/{bank_id}/default"), Some(&bob), json!({})).await;
    assert_eq!(theirs.status, 404, "{theirs:?}");
    let made = http.call("POST", &format!("/user/instruments/{bank_id}/default"), Some(&alice), &[], None).await;
    assert_eq!((made.status, made.json["is_default"].as_bool()), (200, Some(true)), "{made:?}");
    let unknown = http.call("POST", "/user/instruments/ins_0000000000000000/default", Some(&alice), &[], None).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");

    // Remove: another user's is 404; one's own goes, and a cursor naming it is refused.
    let theirs = delete(&http, &format!("/user/instruments/{wallet_id}"), &bob, None).await;
    assert_eq!(theirs.status, 404, "{theirs:?}");
    let removed = delete(&http, &format!("/user/instruments/{wallet_id}"), &alice, None).await;
    assert_eq!((removed.status, removed.json.clone()), (200, json!({"deleted": true, "id": wallet_id})));
    assert_eq!(delete(&http, &format!("/user/instruments/{wallet_id}"), &alice, None).await.status, 404);
    assert_eq!(http.get("/user/digital_wallets", Some(&alice)).await.json["data"].as_array().map(Vec::len), Some(1));
    let stale = http.get(&format!("/user/instruments?starting_after={wallet_id}"), Some(&alice)).await;
    assert_eq!((stale.status, field(&stale)), (400, Some("starting_after")), "{stale:?}");

    // Wallets: open (idempotent by key), list by currency, balances after funding.
    let open = |currency: &str, key: &str| {
        let (body, key, http, alice) = (json!({ "currency": currency }), key.to_string(), &http, &alice);
        async move { http.call("POST", "/user/wallets", Some(alice), &[("Idempotency-Key", &key)], Some(body)).await }
    };
    let usd = open("USD", "w-usd").await;
    assert_eq!(usd.status, 201, "{usd:?}");
    assert_eq!(
        (usd.json["currency"].as_str(), usd.json["balance"].as_str(), usd.json["available"].as_str()),
        (Some("USD"), Some("0.00"), Some("0.00"))
    );
    let again = open("USD", "w-usd").await;
    assert_eq!((again.status, again.json["account_id"].clone()), (201, usd.json["account_id"].clone()));
    assert_eq!((open("EUR", "w-usd").await.code()), "idempotency_key_reused");
    let eur = open("EUR", "w-eur").await;
    assert_eq!(eur.status, 201, "{eur:?}");
    let bad = open("XYZ", "w-xyz").await;
    assert_eq!((bad.status, field(&bad)), (400, Some("currency")), "{bad:?}");
    let bad = http.post("/user/wallets", Some(&alice), json!({"currency": 840})).await;
    assert_eq!((bad.status, field(&bad)), (400, None), "{bad:?}");
    fund(&server, &Person { id: alice_id.clone(), token: alice.clone() }, "USD", "12345", "1").await;
    let listed = all_pages(&http, "/user/wallets", &alice, 1).await;
    let listed: Vec<(&str, &str)> =
        listed.iter().map(|w| (w["currency"].as_str().expect("c"), w["balance"].as_str().expect("b"))).collect();
    assert_eq!(listed, vec![("EUR", "0.00"), ("USD", "123.45")]);
    assert_eq!(http.get("/user/wallets", Some(&bob)).await.json["data"].as_array().map(Vec::len), Some(0));

    // Without a user token: 401 without one, 403 with a role token (as over gRPC).
    for path in ["/user/instruments", "/user/linked_accounts", "/user/cards", "/user/digital_wallets", "/user/wallets"]
    {
        assert_eq!(http.get(path, None).await.status, 401, "{path}");
        let answer = http.get(path, Some(ADMIN)).await;
        assert_eq!(answer.status, 403, "{path}: {answer:?}");
    }
    let answer = http.post("/user/wallets", Some(ADMIN), json!({"currency": "USD"})).await;
    assert_eq!(answer.status, 403, "{answer:?}");

    // The OpenAPI document lists every route of this part.
    let doc = http.get("/openapi.json", None).await;
    for (path, method) in [
        ("/user", "patch"),
        ("/user", "delete"),
        ("/user/password", "post"),
        ("/user/sessions", "get"),
        ("/user/sessions/current", "delete"),
        ("/user/sessions/{id}", "delete"),
        ("/user/security_events", "get"),
        ("/user/totp", "post"),
        ("/user/totp/confirm", "post"),
        ("/user/totp", "delete"),
        ("/user/linked_accounts", "get"),
        ("/user/cards", "post"),
        ("/user/cards", "get"),
        ("/user/digital_wallets", "post"),
        ("/user/digital_wallets", "get"),
        ("/user/instruments", "get"),
        ("/user/instruments/{id}/verify", "post"),
        ("/user/instruments/{id}/default", "post"),
        ("/user/instruments/{id}", "delete"),
        ("/user/wallets", "post"),
        ("/user/wallets", "get"),
    ] {
        let op = &doc.json["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing from the document");
        assert!(op["responses"]["200"].is_object() || op["responses"]["201"].is_object(), "{method} {path}");
    }
}
