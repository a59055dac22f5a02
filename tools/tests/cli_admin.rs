//! The admin commands of the real `ledgerctl` against a real server: users (a page, by
//! email), one user with wallets, instruments and their verification state, ledger
//! accounts a page at a time, the review queue, and a refused page size.

mod common;

use common::{ledgerctl, InProcessServer};
use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    request
}

/// Registers Grace, links a bank account (left awaiting verification) and opens her
/// USD wallet, through the API; answers her id and the micro-deposits.
async fn grace(addr: std::net::SocketAddr) -> (String, Vec<u32>) {
    let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let mut users = wire::users_client::UsersClient::new(channel);
    let password = "lantern-orchard-1906";
    let register = wire::RegisterRequest {
        name: "Grace Hopper".into(),
        email: "grace@example.com".into(),
        password: password.into(),
    };
    let id = users.register(register).await.expect("register").into_inner().user_id;
    let login =
        wire::LoginRequest { email: "grace@example.com".into(), password: password.into(), ..Default::default() };
    let token = users.login(login).await.expect("login").into_inner().session_token;
    let bank = wire::AddBankAccountRequest {
        bank_name: "Example Bank".into(),
        routing_number: "021000021".into(),
        account_number: "000123456789".into(),
        ..Default::default()
    };
    let added = users.add_bank_account(authed(bank, &token)).await.expect("bank").into_inner();
    let open = wire::OpenWalletRequest { currency: "USD".into(), ..Default::default() };
    users.open_wallet(authed(open, &token)).await.expect("wallet");
    (id, added.sandbox_micro_deposits)
}

#[test]
fn admins_look_up_users_accounts_and_reviews_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcessServer::start(dir.path());
    let addr = server.listen;
    let (id, deposits) = tokio::runtime::Runtime::new().expect("runtime").block_on(grace(addr));

    let (ok, out) = ledgerctl(addr, &["--json", "admin", "users", "--email", "GRACE@example.com"]);
    assert!(ok, "{out}");
    assert_eq!(json(&out)["users"][0]["user_id"].as_str(), Some(id.as_str()), "{out}");
    let (ok, out) = ledgerctl(addr, &["admin", "users"]);
    assert!(ok && out.contains("Grace Hopper") && out.contains("grace@example.com"), "{out}");

    let (ok, out) = ledgerctl(addr, &["--json", "admin", "user", &id]);
    assert!(ok, "{out}");
    let user = json(&out);
    assert_eq!(user["profile"]["email"].as_str(), Some("grace@example.com"));
    assert_eq!(user["wallets"][0]["currency"].as_str(), Some("USD"));
    assert_eq!(user["wallets"][0]["balance"].as_str(), Some("0.00"));
    let shown: Vec<u64> = user["instruments"][0]["micro_deposits"]
        .as_array()
        .expect("micro-deposits")
        .iter()
        .map(|v| v.as_u64().expect("number"))
        .collect();
    assert_eq!(shown, deposits.iter().map(|d| u64::from(*d)).collect::<Vec<_>>());
    assert_eq!(user["instruments"][0]["status"].as_str(), Some("PENDING_VERIFICATION"));
    let (ok, out) = ledgerctl(addr, &["admin", "user", &id]);
    let amounts = format!("micro-deposits {} and {}", deposits[0], deposits[1]);
    assert!(ok && out.contains(&amounts) && out.contains("Grace Hopper"), "{out}");

    let (ok, out) = ledgerctl(addr, &["--json", "admin", "accounts", "--limit", "1"]);
    assert!(ok, "{out}");
    let page = json(&out);
    assert_eq!(page["accounts"].as_array().map(Vec::len), Some(1), "{out}");
    let cursor = page["next_cursor"].as_str().expect("cursor").to_string();
    assert!(cursor.is_empty(), "one account so far (Grace's wallet): {out}");
    assert_eq!(page["accounts"][0]["owner_id"].as_str(), Some(id.as_str()));

    let (ok, out) = ledgerctl(addr, &["admin", "reviews"]);
    assert!(ok && out.contains("0 payments in review"), "{out}");
    let (ok, out) = ledgerctl(addr, &["admin", "users", "--limit", "500"]);
    assert!(!ok && out.contains("invalid input") && out.contains("limit"), "{out}");
    server.stop();
}
