//! Shared by the integration tests: start the real `ledgerd` on free ports with a
//! tokens file of every role, and call it with a bearer token.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;
use tonic::Request;

pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const SERVICE: &str = "service-token-0123456789abcdef";
pub const AUDITOR: &str = "auditor-token-0123456789abcdef";
pub const READ_ONLY: &str = "read-only-token-0123456789abcdef";

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub metrics_addr: String,
    /// The HTTP/JSON API's base URL (`http://127.0.0.1:port`), unless started with it off.
    pub http_addr: Option<String>,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(dir, extra, &[])
    }

    /// `start_with`, with extra environment variables for the server.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Server {
        let tokens = dir.join("tokens");
        let lines = format!("admin {ADMIN}\nservice {SERVICE}\n# comment\nauditor {AUDITOR}\nread-only {READ_ONLY}\n");
        std::fs::write(&tokens, lines).expect("write tokens");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerd"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                // Two finished payments in memory at most: nearly every call on a
                // finished payment reads it again from its stream.
                "--payments-finished-cached",
                "2",
                // Two users in memory at most: nearly every call reads its user again
                // from their stream.
                "--users-cached",
                "2",
                "--tokens-file",
            ])
            .arg(&tokens)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("LEDGERD_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ledgerd");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let find = |line: &str, marker: &str| {
            line.split(marker).nth(1).map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        };
        let (mut addr, mut metrics_addr, mut http_addr) = (None, None, None);
        let mut said = Vec::new();
        loop {
            let Ok(line) = receiver.recv_timeout(Duration::from_secs(30)) else {
                panic!("ledgerd did not start; it said:\n{}", said.join("\n"));
            };
            said.push(line.clone());
            if let Some(found) = find(&line, "ledgerd listening on ") {
                addr = Some(found);
            }
            if let Some(found) = find(&line, "metrics on http://") {
                metrics_addr = Some(found.trim_end_matches("/metrics").to_string());
            }
            if let Some(found) = find(&line, "HTTP API on http://") {
                http_addr = Some(format!("http://{found}"));
            }
            if line.contains("ready in ") {
                break;
            }
        }
        // Keep draining the log so the server never blocks on a full pipe; a failing
        // test shows it.
        std::thread::spawn(move || {
            while let Ok(line) = receiver.recv() {
                eprintln!("ledgerd: {line}");
            }
        });
        Server {
            child,
            addr: format!("http://{}", addr.expect("addr")),
            metrics_addr: metrics_addr.expect("metrics"),
            http_addr,
        }
    }

    pub async fn client(&self) -> wire::ledger_client::LedgerClient<Channel> {
        let channel = Channel::from_shared(self.addr.clone()).expect("uri").connect().await.expect("connect");
        wire::ledger_client::LedgerClient::new(channel)
    }

    pub async fn users(&self) -> wire::users_client::UsersClient<Channel> {
        let channel = Channel::from_shared(self.addr.clone()).expect("uri").connect().await.expect("connect");
        wire::users_client::UsersClient::new(channel)
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new connection to the server.
pub async fn channel(server: &Server) -> Channel {
    Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect")
}

/// Links the sandbox's good test card to `who`; its instrument id.
pub async fn card(users: &mut wire::users_client::UsersClient<Channel>, who: &Person) -> String {
    let card = wire::AddCardRequest {
        number: "4242424242424242".into(),
        exp_month: 12,
        exp_year: 2035,
        cvv: "123".into(),
        ..Default::default()
    };
    users.add_card(authed(card, &who.token)).await.expect("card").into_inner().instrument.expect("i").instrument_id
}

/// A verified bank account of `who`, linked with the sandbox's micro-deposits; its instrument id.
pub async fn bank(users: &mut wire::users_client::UsersClient<Channel>, who: &Person, account_number: &str) -> String {
    let bank = wire::AddBankAccountRequest {
        bank_name: "Example Bank".into(),
        routing_number: "021000021".into(),
        account_number: account_number.into(),
        ..Default::default()
    };
    let added = users.add_bank_account(authed(bank, &who.token)).await.expect("bank").into_inner();
    let id = added.instrument.expect("instrument").instrument_id;
    let verify = wire::VerifyInstrumentRequest {
        instrument_id: id.clone(),
        amounts: added.sandbox_micro_deposits,
        ..Default::default()
    };
    users.verify_instrument(authed(verify, &who.token)).await.expect("verify");
    id
}

/// Polls a payment until its status is one of `until` (30 s at most), then returns it.
pub async fn settled(
    payments: &mut wire::payments_client::PaymentsClient<Channel>,
    token: &str,
    id: &str,
    until: &[&str],
) -> wire::Payment {
    let started = std::time::Instant::now();
    loop {
        let request = wire::GetPaymentRequest { payment_id: id.into(), ..Default::default() };
        let payment = payments.get_payment(authed(request, token)).await.expect("get").into_inner();
        if until.contains(&payment.status.as_str()) {
            return payment;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "payment stuck: {payment:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    request
}

pub const PASSWORD: &str = "violet-anchor-tram-47";

pub struct Person {
    pub id: String,
    pub token: String,
}

pub async fn person(users: &mut wire::users_client::UsersClient<Channel>, name: &str, email: &str) -> Person {
    let register = wire::RegisterRequest { name: name.into(), email: email.into(), password: PASSWORD.into() };
    let id = users.register(register).await.expect("register").into_inner().user_id;
    let login = wire::LoginRequest { email: email.into(), password: PASSWORD.into(), ..Default::default() };
    let token = users.login(login).await.expect("login").into_inner().session_token;
    Person { id, token }
}

/// Funds a wallet from an admin's account, as a bank transfer in would.
pub async fn fund(server: &Server, to: &Person, currency: &str, minor: &str, transfer_id: &str) {
    let mut users = server.users().await;
    let open = wire::OpenWalletRequest { currency: currency.into(), ..Default::default() };
    let open_wallet = users.open_wallet(authed(open, &to.token)).await.expect("open wallet").into_inner();
    let mut ledger = server.client().await;
    let open = wire::AccountCommand {
        command: Some(wire::account_command::Command::Open(wire::NewAccount {
            id: format!("9{}", currency_number(currency)),
            currency: currency.into(),
            code: 1,
            flags: 0,
            owner_id: "0".into(),
        })),
    };
    ledger.create_accounts(authed(wire::CreateAccountsRequest { commands: vec![open] }, ADMIN)).await.expect("open");
    let wallet = open_wallet.account_id;
    let transfer = wire::NewTransfer {
        id: transfer_id.into(),
        debit_account_id: format!("9{}", currency_number(currency)),
        credit_account_id: wallet,
        amount: minor.into(),
        currency: currency.into(),
        code: 1,
        kind: wire::TransferKind::Posted as i32,
        ..Default::default()
    };
    let results = ledger
        .create_transfers(authed(wire::CreateTransfersRequest { transfers: vec![transfer] }, ADMIN))
        .await
        .expect("fund")
        .into_inner()
        .results;
    assert!(results[0].ok, "{results:?}");
}

/// A platform funding account per currency: 9 followed by the currency's code bytes.
fn currency_number(code: &str) -> String {
    code.bytes().map(|b| format!("{b:03}")).collect()
}

/// Runs `ledgerctl audit verify` on a stopped server's data directory when it is built
/// next to `ledgerd` (as `cargo test --workspace` does); otherwise the same verifier in
/// process.
pub fn audit_verify(data_dir: &Path) {
    let ledgerctl = Path::new(env!("CARGO_BIN_EXE_ledgerd")).with_file_name("ledgerctl");
    if ledgerctl.exists() {
        let output =
            Command::new(&ledgerctl).args(["audit", "verify", "--data-dir"]).arg(data_dir).output().expect("run");
        assert!(output.status.success(), "ledgerctl audit verify: {}", String::from_utf8_lossy(&output.stdout));
    } else {
        let (_, snapshots) = ledger_engine::audit::data_dir_layout(data_dir);
        ledger_engine::audit::verify(data_dir, Some(&snapshots)).expect("audit verify");
    }
}

/// A JSON client of the HTTP API of `server`.
pub struct Http {
    base: String,
    client: reqwest::Client,
}

/// An HTTP answer: status and JSON body (`Null` when the body is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: serde_json::Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The error object's code, for an error answer.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

impl Http {
    pub fn of(server: &Server) -> Http {
        Http { base: server.http_addr.clone().expect("HTTP API on"), client: reqwest::Client::new() }
    }

    /// `method path` with an optional bearer token, extra headers and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("HTTP call");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Answer { status, json, headers }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call("GET", path, token, &[], None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: serde_json::Value) -> Answer {
        self.call("POST", path, token, &[], Some(body)).await
    }

    /// Signs up and signs in over HTTP: (user id, session token).
    pub async fn person(&self, name: &str, email: &str) -> (String, String) {
        let created =
            self.post("/user", None, serde_json::json!({"name": name, "email": email, "password": PASSWORD})).await;
        assert_eq!(created.status, 201, "{created:?}");
        let session =
            self.post("/user/sessions", None, serde_json::json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(session.status, 201, "{session:?}");
        let token = session.json["session_token"].as_str().expect("token").to_string();
        (created.json["user_id"].as_str().expect("id").to_string(), token)
    }
}

/// A `rails-sandbox` process on a free port, killed when dropped.
pub struct Rails {
    pub child: Child,
    /// Its gRPC address, for `ledgerd --rails`.
    pub addr: String,
}

impl Rails {
    /// Starts `rails-sandbox` with `args` (beside its listen address).
    pub fn start(args: &[&str]) -> Rails {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rails-sandbox"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rails-sandbox");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().expect("rails-sandbox output").expect("line");
            if let Some(addr) = line.strip_prefix("rails-sandbox listening on ") {
                break format!("http://{}", addr.trim());
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Rails { child, addr }
    }
}

impl Drop for Rails {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
