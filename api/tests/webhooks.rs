//! Webhooks through the real `ledgerd`: a local receiver that fails (500), times out and
//! answers late at random (fixed seed); payments made over gRPC while `ledgerd` is
//! killed with SIGKILL and restarted on the same data directory. Every expected event
//! arrives at least once with a valid signature, none is lost across the kill, and the
//! events of each payment arrive in log order. Then the delivery database is deleted:
//! the events are sent again with the same ids and secrets (the registrations are in
//! the log). And registration: checks, limits, owners, the OpenAPI document.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{authed, card, person, settled, Person, Server, ADMIN};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use ledger_proto::api::v1 as wire;
use serde_json::{json, Value};
use tonic::transport::Channel;

type Payments = wire::payments_client::PaymentsClient<Channel>;

/// The delivery timeout `ledgerd` runs with here, and the retry base delay.
const TIMEOUT_MS: u64 = 400;
const RETRY_BASE_MS: &str = "20";
/// Longest the test waits for the deliveries it expects before it fails (a guard
/// against a hang, not a measurement).
const WAIT_GUARD: Duration = Duration::from_secs(180);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    event_id: String,
    signature: String,
    content_type: String,
    body: String,
    /// Whether it answered 2xx within the timeout.
    accepted: bool,
}

/// A small deterministic generator (xorshift64*), so a run is repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[derive(Clone)]
struct Receiver {
    url: String,
    log: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn received(&self) -> Vec<Received> {
        self.log.lock().expect("log").clone()
    }
}

/// Answers each request at random: 25 % 500, 15 % no answer within the timeout, 15 %
/// a late but timely 200, the rest 200 at once.
async fn receiver(seed: u64) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let log: Arc<Mutex<Vec<Received>>> = Arc::default();
    let rng = Arc::new(Mutex::new(Rng(seed)));
    let (log_, rng_) = (log.clone(), rng.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (log, rng) = (log_.clone(), rng_.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (log, rng) = (log.clone(), rng.clone());
                    async move {
                        let header = |name: &str| {
                            request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
                        };
                        let (path, event_id, signature, content_type) = (
                            request.uri().path().to_string(),
                            header("ledger-event-id"),
                            header("ledger-signature"),
                            header("content-type"),
                        );
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let roll = rng.lock().expect("rng").next() % 100;
                        let (status, delay, accepted) = match roll {
                            0..25 => (StatusCode::INTERNAL_SERVER_ERROR, 0, false),
                            25..40 => (StatusCode::OK, TIMEOUT_MS * 3, false),
                            40..55 => (StatusCode::OK, TIMEOUT_MS / 4, true),
                            _ => (StatusCode::OK, 0, true),
                        };
                        log.lock().expect("log").push(Received {
                            path,
                            event_id,
                            signature,
                            content_type,
                            body: String::from_utf8_lossy(&body).into_owned(),
                            accepted,
                        });
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Receiver { url: format!("http://{addr}"), log }
}

fn start(dir: &std::path::Path) -> Server {
    Server::start_with(
        dir,
        &["--webhook-retry-base-ms", RETRY_BASE_MS, "--webhook-timeout-ms", &TIMEOUT_MS.to_string()],
    )
}

async fn http(method: reqwest::Method, url: String, token: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("HTTP call");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("JSON answer") })
}

/// Registers an endpoint for `token`'s owner; answers (id, secret).
async fn register(server: &Server, token: &str, url: &str) -> (String, String) {
    let base = server.http_addr.clone().expect("HTTP API on");
    let body = json!({ "url": url, "enabled_events": ["*"] });
    let (status, answer) = http(reqwest::Method::POST, format!("{base}/webhook_endpoints"), token, Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["id"].as_str().expect("id").to_string();
    let secret = answer["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"), "{answer}");
    (id, secret)
}

fn verify(secret: &str, header: &str, body: &str) -> bool {
    let Some((t, v1)) = header.split_once(',') else { return false };
    let (Some(t), Some(v1)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else { return false };
    let Ok(tag) =
        (0..v1.len()).step_by(2).map(|i| u8::from_str_radix(&v1[i..i + 2], 16)).collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, format!("{t}.{body}").as_bytes(), &tag).is_ok()
}

/// The log position an event id carries (`evt_<position>_<type>`).
fn position(event_id: &str) -> u64 {
    event_id.strip_prefix("evt_").and_then(|r| r.split('_').next()).and_then(|p| p.parse().ok()).expect("event id")
}

async fn send(payments: &mut Payments, from: &Person, to: &Person, key: &str) -> String {
    let request = wire::SendRequest {
        idempotency_key: key.into(),
        receiver_user_id: to.id.clone(),
        amount: "1.00".into(),
        currency: "USD".into(),
        funding: "wallet".into(),
        ..Default::default()
    };
    payments.send(authed(request, &from.token)).await.expect("send").into_inner().payment_id
}

/// For each path, the (payment id, event type) pairs accepted so far.
fn accepted(received: &[Received]) -> HashMap<String, Vec<(String, String)>> {
    let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for r in received.iter().filter(|r| r.accepted) {
        let body: Value = serde_json::from_str(&r.body).expect("JSON body");
        let payment = body["data"]["payment"]["id"].as_str().expect("payment id").to_string();
        out.entry(r.path.clone()).or_default().push((payment, body["type"].as_str().expect("type").to_string()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_arrives_signed_in_order_across_a_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = receiver(18).await;
    let mut server = start(dir.path());
    let mut users = server.users().await;
    let alice = person(&mut users, "Alice", "alice@example.com").await;
    let bob = person(&mut users, "Bob", "bob@example.com").await;
    let carol = person(&mut users, "Carol", "carol@example.com").await;
    let (alice_endpoint, alice_secret) = register(&server, &alice.token, &format!("{}/alice", receiver.url)).await;
    let (_, admin_secret) = register(&server, ADMIN, &format!("{}/admin", receiver.url)).await;
    let (carol_endpoint, carol_secret) = register(&server, &carol.token, &format!("{}/carol", receiver.url)).await;
    let secrets: HashMap<&str, &str> =
        [("/alice", alice_secret.as_str()), ("/admin", admin_secret.as_str()), ("/carol", carol_secret.as_str())]
            .into();

    let mut payments = Payments::new(common::channel(&server).await);
    let alice_card = card(&mut users, &alice).await;
    let top_up = wire::TopUpRequest {
        idempotency_key: "t1".into(),
        amount: "100.00".into(),
        currency: "USD".into(),
        instrument_id: alice_card,
    };
    let top_up = payments.top_up(authed(top_up, &alice.token)).await.expect("top up").into_inner().payment_id;
    settled(&mut payments, &alice.token, &top_up, &["completed"]).await;
    let mut ids = vec![top_up];
    for n in 0..10 {
        let id = send(&mut payments, &alice, &bob, &format!("s{n}")).await;
        settled(&mut payments, &alice.token, &id, &["completed"]).await;
        ids.push(id);
    }
    // Three more created, then ledgerd is killed while their sagas run and deliveries
    // are pending.
    for n in 10..13 {
        ids.push(send(&mut payments, &alice, &bob, &format!("s{n}")).await);
    }
    let before_kill = receiver.received().len();
    let pending_at_kill =
        4 * ids.len() - accepted(&receiver.received()).values().map(Vec::len).sum::<usize>().min(4 * ids.len());
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("wait");
    drop(server);

    let server = start(dir.path());
    let mut payments = Payments::new(common::channel(&server).await);
    for n in 13..21 {
        ids.push(send(&mut payments, &alice, &bob, &format!("s{n}")).await);
    }
    for id in &ids {
        settled(&mut payments, &alice.token, id, &["completed"]).await;
    }

    // Every payment's created and completed events reach Alice's and the admin's
    // endpoints (accepted at least once).
    let started = Instant::now();
    loop {
        let got = accepted(&receiver.received());
        let missing: Vec<(&str, &String, &str)> = ["/alice", "/admin"]
            .into_iter()
            .flat_map(|path| {
                ids.iter().flat_map(move |id| ["payment.created", "payment.completed"].map(|t| (path, id, t)))
            })
            .filter(|(path, id, t)| !got.get(*path).is_some_and(|list| list.iter().any(|(p, ty)| p == *id && ty == t)))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(started.elapsed() < WAIT_GUARD, "not delivered: {missing:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let received = receiver.received();
    let refused = received.iter().filter(|r| !r.accepted).count();
    eprintln!(
        "webhooks: {} payments, {} requests received ({before_kill} before the SIGKILL, when about \
         {pending_at_kill} expected deliveries were not yet accepted), {refused} failed or timed out by the receiver",
        ids.len(),
        received.len()
    );
    assert!(received.len() > before_kill, "deliveries went on after the restart");
    assert!(received.iter().any(|r| !r.accepted), "the receiver failed some deliveries (the seed makes it)");
    // Every request is signed with its endpoint's secret, names its event, is JSON.
    for r in &received {
        let secret = secrets.get(r.path.as_str()).expect("known path");
        assert!(verify(secret, &r.signature, &r.body), "bad signature: {r:?}");
        assert_eq!(r.content_type, "application/json");
        let body: Value = serde_json::from_str(&r.body).expect("JSON");
        assert_eq!(body["id"].as_str(), Some(r.event_id.as_str()));
    }
    // Order per payment and endpoint: first arrivals of its events in log order.
    let mut firsts: BTreeMap<(String, String), Vec<(u64, String)>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for r in &received {
        if !seen.insert((r.path.clone(), r.event_id.clone())) {
            continue;
        }
        let body: Value = serde_json::from_str(&r.body).expect("JSON");
        let payment = body["data"]["payment"]["id"].as_str().expect("id").to_string();
        let event_type = body["type"].as_str().expect("type").to_string();
        firsts.entry((r.path.clone(), payment)).or_default().push((position(&r.event_id), event_type));
    }
    for ((path, payment), events) in &firsts {
        assert!(events.windows(2).all(|w| w[0].0 < w[1].0), "{path} {payment}: out of log order: {events:?}");
        if ids.contains(payment) && path != "/carol" {
            let types: Vec<&str> = events.iter().map(|(_, t)| t.as_str()).collect();
            assert_eq!(types, ["payment.created", "payment.completed"], "{path} {payment}");
        }
    }
    // The counters on /metrics.
    let metrics = reqwest::get(format!("http://{}/metrics", server.metrics_addr)).await.expect("metrics");
    let metrics = metrics.text().await.expect("text");
    let delivered = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ledger_webhook_attempts_total{outcome=\"delivered\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("delivered counter");
    assert!(delivered > 0, "{metrics}");
    assert!(metrics.contains("ledger_webhook_follower_lag_events "), "{metrics}");
    // The secret can be shown again to its owner, not to others.
    let url = format!("{}/webhook_endpoints/{alice_endpoint}/secret", server.http_addr.clone().expect("HTTP"));
    let (status, shown) = http(reqwest::Method::GET, url.clone(), &alice.token, None).await;
    assert_eq!((status, shown["secret"].as_str()), (200, Some(alice_secret.as_str())), "the same after the restart");
    let (status, _) = http(reqwest::Method::GET, url, &carol.token, None).await;
    assert_eq!(status, 404);

    // Carol is in none of these payments: nothing for her.
    assert!(received.iter().all(|r| r.path != "/carol"), "Carol's endpoint got another user's payment");
    let base = server.http_addr.clone().expect("HTTP API on");
    let url = format!("{base}/webhook_endpoints/{carol_endpoint}/deliveries");
    let (status, page) = http(reqwest::Method::GET, url, &carol.token, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(0), "{page}");
    // Nor may she see Alice's endpoint.
    let url = format!("{base}/webhook_endpoints/{alice_endpoint}/deliveries");
    let (status, answer) = http(reqwest::Method::GET, url, &carol.token, None).await;
    assert_eq!(status, 404, "{answer}");

    // Alice's delivery log, paged; then a resend of a delivered event.
    let mut log = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/webhook_endpoints/{alice_endpoint}/deliveries?limit=5");
        if let Some(after) = &cursor {
            url.push_str(&format!("&starting_after={after}"));
        }
        let (status, page) = http(reqwest::Method::GET, url, &alice.token, None).await;
        assert_eq!(status, 200, "{page}");
        log.extend(page["data"].as_array().expect("data").iter().cloned());
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if !page["has_more"].as_bool().expect("has_more") {
            break;
        }
    }
    assert!(log.len() >= 2 * ids.len(), "{} deliveries logged", log.len());
    let delivered = log.iter().find(|d| d["state"] == "delivered").expect("a delivered one");
    let event_id = delivered["event_id"].as_str().expect("event id").to_string();
    let arrivals = |event: &str| {
        receiver.received().iter().filter(|r| r.path == "/alice" && r.event_id == event && r.accepted).count()
    };
    let before = arrivals(&event_id);
    let delivery_id = delivered["id"].as_str().expect("id");
    let url = format!("{base}/webhook_endpoints/{alice_endpoint}/deliveries/{delivery_id}/resend");
    let resend = || {
        reqwest::Client::new().post(url.clone()).bearer_auth(&alice.token).header("Idempotency-Key", "resend-1").send()
    };
    let resent: Value = resend().await.expect("resend").json().await.expect("JSON");
    assert_eq!(resent["event_id"].as_str(), Some(event_id.as_str()), "{resent}");
    assert_ne!(resent["id"], delivered["id"], "a new delivery of the same event");
    let again: Value = resend().await.expect("resend").json().await.expect("JSON");
    assert_eq!(again["id"], resent["id"], "the same Idempotency-Key answers the same resend");
    let started = Instant::now();
    while arrivals(&event_id) <= before {
        assert!(started.elapsed() < WAIT_GUARD, "resend never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The delivery database lost: the endpoints are in the log and the secrets derive
    // from the master key, so the events are sent again, with the same ids.
    let known: std::collections::HashSet<String> = receiver.received().iter().map(|r| r.event_id.clone()).collect();
    drop(server);
    std::fs::remove_file(dir.path().join("data").join("webhooks.redb")).expect("remove webhooks.redb");
    // Counted before the start: the new server may deliver before it answers anything.
    let from = receiver.received().len();
    let server = start(dir.path());
    let base = server.http_addr.clone().expect("HTTP API on");
    let started = Instant::now();
    loop {
        let again = receiver.received().split_off(from);
        let missing = ids
            .iter()
            .flat_map(|id| ["payment.created", "payment.completed"].map(|t| (id, t)))
            .filter(|(id, t)| {
                !again.iter().any(|r| {
                    let body: Value = serde_json::from_str(&r.body).expect("JSON");
                    r.path == "/admin" && r.accepted && body["type"] == *t && body["data"]["payment"]["id"] == **id
                })
            })
            .count();
        if missing == 0 {
            assert!(again.iter().all(|r| known.contains(&r.event_id)), "the same event ids, no new ones");
            assert!(again.iter().all(|r| verify(secrets[r.path.as_str()], &r.signature, &r.body)), "the same secrets");
            break;
        }
        assert!(started.elapsed() < WAIT_GUARD, "{missing} events not sent again after the database was lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Removal: gone from the list; others may not remove it.
    let url = format!("{base}/webhook_endpoints/{alice_endpoint}");
    let (status, _) = http(reqwest::Method::DELETE, url.clone(), &carol.token, None).await;
    assert_eq!(status, 404);
    let (status, _) = http(reqwest::Method::DELETE, url, &alice.token, None).await;
    assert_eq!(status, 204);
    let (status, list) = http(reqwest::Method::GET, format!("{base}/webhook_endpoints"), &alice.token, None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(0), "{list}");
}

#[tokio::test]
async fn registrations_are_checked_limited_and_owned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    let base = server.http_addr.clone().expect("HTTP API on");
    let mut users = server.users().await;
    let dora = person(&mut users, "Dora", "dora@example.com").await;
    let url = format!("{base}/webhook_endpoints");
    let post = |token: &str, body: Value| {
        let (url, token) = (url.clone(), token.to_string());
        async move { http(reqwest::Method::POST, url, &token, Some(body)).await }
    };
    let token = dora.token.as_str();

    // Bad input: a clear error naming the field, and nothing registered.
    for (body, field) in [
        (json!({ "url": "ftp://example.com/x", "enabled_events": ["*"] }), "url"),
        (json!({ "url": "https://user:pw@example.com/x", "enabled_events": ["*"] }), "url"),
        (json!({ "url": format!("https://example.com/{}", "a".repeat(2_100)), "enabled_events": ["*"] }), "url"),
        (json!({ "url": "https://example.com/x", "enabled_events": [] }), "enabled_events"),
        (json!({ "url": "https://example.com/x", "enabled_events": ["payment.nope"] }), "enabled_events"),
        (json!({ "url": "https://example.com/x", "enabled_events": ["*"], "extra": 1 }), "extra"),
    ] {
        let (status, answer) = post(token, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request", "{answer}");
        assert_eq!(answer["error"]["field"].as_str(), Some(field), "{answer}");
    }
    let (status, list) = http(reqwest::Method::GET, url.clone(), token, None).await;
    assert_eq!((status, list["data"].as_array().map(Vec::len)), (200, Some(0)), "{list}");

    // Who may register: a user's session or an admin token; not another role, not nobody.
    let body = json!({ "url": "https://example.com/x", "enabled_events": ["payment.completed"] });
    let (status, answer) = post(common::AUDITOR, body.clone()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("permission_denied")), "{answer}");
    let (status, _) = post("lus_0000000000000000000000000000000000000000", body.clone()).await;
    assert_eq!(status, 401);

    // At most 16 per owner; the 17th is refused and nothing changes.
    for n in 0..16 {
        let body = json!({ "url": format!("https://example.com/{n}"), "enabled_events": ["payment.completed"] });
        let (status, answer) = post(token, body).await;
        assert_eq!(status, 201, "{answer}");
        assert_eq!(answer["enabled_events"], json!(["payment.completed"]));
    }
    let (status, answer) = post(token, body.clone()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("limit_reached")), "{answer}");
    let (_, list) = http(reqwest::Method::GET, url.clone(), token, None).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(16));
    assert!(list["data"].as_array().expect("data").iter().all(|e| e.get("secret").is_none()), "no secret in lists");
    // The admin sees them all; the registrations survive a restart (they are in the log).
    let (_, all) = http(reqwest::Method::GET, format!("{url}?limit=100"), ADMIN, None).await;
    assert_eq!(all["data"].as_array().map(Vec::len), Some(16));
    // Paged in id order: 5, 5, 5, 1, each once.
    let (mut paged, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let after = cursor.as_ref().map_or(String::new(), |c| format!("&starting_after={c}"));
        let (status, page) = http(reqwest::Method::GET, format!("{url}?limit=5{after}"), ADMIN, None).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(page["data"].as_array().expect("data").iter().cloned());
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(Value::Array(paged), all["data"]);
    let (status, answer) = http(reqwest::Method::GET, format!("{url}?limit=0"), ADMIN, None).await;
    assert_eq!((status, answer["error"]["field"].as_str()), (400, Some("limit")), "{answer}");
    drop(server);
    let server = start(dir.path());
    let base = server.http_addr.clone().expect("HTTP API on");
    let (_, again) = http(reqwest::Method::GET, format!("{base}/webhook_endpoints"), ADMIN, None).await;
    assert_eq!(again["data"], all["data"], "the same endpoints after a restart");

    // The OpenAPI document describes the routes.
    let (status, doc) = http(reqwest::Method::GET, format!("{base}/openapi.json"), ADMIN, None).await;
    assert_eq!(status, 200);
    for (path, method) in [
        ("/webhook_endpoints", "post"),
        ("/webhook_endpoints", "get"),
        ("/webhook_endpoints/{id}", "delete"),
        ("/webhook_endpoints/{id}/secret", "get"),
        ("/webhook_endpoints/{id}/deliveries", "get"),
        ("/webhook_endpoints/{id}/deliveries/{delivery_id}/resend", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing from the document");
    }
}
