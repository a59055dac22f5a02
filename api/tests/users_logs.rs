//! No secret or personal data reaches a log line at any level: the server runs in this
//! process under a subscriber that captures everything down to TRACE (ours and every
//! dependency's: tonic, h2, hyper), while a user signs up, signs in, links a bank
//! account and a card, enables TOTP, changes the password and fails sign-ins.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_api::config::Config;
use ledger_platform::users::crypto::SecretKey;
use ledger_platform::users::{totp, UsersConfig};
use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;
use tonic::Request;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> CaptureWriter {
        CaptureWriter(self.0.clone())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("capture")).into_owned()
    }
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_token_card_account_number_or_key_in_any_log_line() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .init();

    let dir = tempfile::tempdir().expect("tempdir");
    let master_hex = "5e".repeat(16) + &"c7".repeat(16);
    let admin_token = "admin-token-for-the-log-test-0123456789";
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("admin {admin_token}\n")).expect("tokens");
    let config = Config {
        data_dir: dir.path().join("data"),
        listen: ([127, 0, 0, 1], 0).into(),
        metrics_listen: ([127, 0, 0, 1], 0).into(),
        http_listen: Some(([127, 0, 0, 1], 0).into()),
        tokens_file: Some(tokens),
        tls: None,
        master_key: Some(SecretKey::from_hex(&master_hex).expect("hex")),
        users: UsersConfig::default(),
        rails: None,
        payments: Default::default(),
        fx: Default::default(),
        snapshot_interval_events: 4_000_000,
        store: None,
        signing_key_file: dir.path().join("signing.key"),
        heads_interval: std::time::Duration::from_secs(60),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ledger_api::server::run(config, async {
        let _ = stopped.await;
    }));
    let addr = loop {
        let text = capture.text();
        if let Some(rest) = text.split("ledgerd listening on ").nth(1) {
            break rest.split_whitespace().next().expect("addr").to_string();
        }
        assert!(!server.is_finished(), "server stopped: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let mut users = wire::users_client::UsersClient::new(channel.clone());
    let mut ledger = wire::ledger_client::LedgerClient::new(channel);

    let (name, email, phone) = ("Grace Brewster Hopper", "grace.hopper@example.net", "+12025550143");
    let (password, new_password) = ("cobol-compiler-1952-navy", "nanosecond-wire-11.8in");
    let (account_number, card_number, card_spaced) = ("9876543210123", "5555555555554444", "5555 5555 5555 4444");
    let register = wire::RegisterRequest { name: name.into(), email: email.into(), password: password.into() };
    users.register(register).await.expect("register");
    for wrong in ["wrong-password-one", "wrong-password-two"] {
        let login = wire::LoginRequest { email: email.into(), password: wrong.into(), ..Default::default() };
        assert!(users.login(login).await.is_err());
    }
    let login = wire::LoginRequest { email: email.into(), password: password.into(), ..Default::default() };
    let token = users.login(login).await.expect("login").into_inner().session_token;
    let update = wire::UpdateProfileRequest { phone: Some(phone.into()), ..Default::default() };
    users.update_profile(authed(update, &token)).await.expect("update");
    let bank = wire::AddBankAccountRequest {
        bank_name: "Navy Federal".into(),
        routing_number: "256074974".into(),
        account_number: account_number.into(),
        holder_name: name.into(),
        ..Default::default()
    };
    users.add_bank_account(authed(bank, &token)).await.expect("bank");
    let card = wire::AddCardRequest {
        number: card_spaced.into(),
        exp_month: 6,
        exp_year: 2033,
        cvv: "987".into(),
        holder_name: name.into(),
        ..Default::default()
    };
    users.add_card(authed(card, &token)).await.expect("card");
    let bad_card = wire::AddCardRequest { number: "5555555555554445".into(), ..Default::default() };
    assert!(users.add_card(authed(bad_card, &token)).await.is_err());
    let reauth = wire::ReauthRequest { current_password: password.into(), ..Default::default() };
    let enrolled = users.enroll_totp(authed(reauth, &token)).await.expect("enroll").into_inner();
    let secret = totp::base32_decode(&enrolled.secret).expect("secret");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let code = format!("{:06}", totp::code_at(&secret, totp::step_of(now)));
    let confirm = wire::ConfirmTotpRequest { code: code.clone(), ..Default::default() };
    let recovery = users.confirm_totp(authed(confirm, &token)).await.expect("confirm").into_inner().recovery_codes;
    let change = wire::ChangePasswordRequest {
        current_password: password.into(),
        new_password: new_password.into(),
        totp_code: format!("{:06}", totp::code_at(&secret, totp::step_of(now) + 1)),
        ..Default::default()
    };
    users.change_password(authed(change, &token)).await.expect("change password");
    let history = wire::GetHistoryRequest { owner_id: "1".into(), ..Default::default() };
    ledger.get_history(authed(history, admin_token)).await.expect("admin read");
    assert!(ledger.get_history(authed(wire::GetHistoryRequest::default(), "not-a-token-0123456789")).await.is_err());

    let _ = stop.send(());
    server.await.expect("join").expect("server");
    let logs = capture.text();
    // The capture holds every level, dependencies' included.
    assert!(logs.contains(" TRACE ") && logs.contains(" DEBUG ") && logs.contains(" INFO "), "{} bytes", logs.len());
    assert!(logs.contains("h2") || logs.contains("hyper"), "transport logs are captured too");
    let mut secrets = vec![
        ("password", password.to_string()),
        ("new password", new_password.to_string()),
        ("wrong password", "wrong-password-one".to_string()),
        ("session token", token.clone()),
        ("session token hash", blake3::hash(token.as_bytes()).to_hex().to_string()),
        ("admin token", admin_token.to_string()),
        ("card number", card_number.to_string()),
        ("card number as typed", card_spaced.to_string()),
        ("account number", account_number.to_string()),
        ("master key", master_hex.clone()),
        ("TOTP secret", enrolled.secret.clone()),
        ("email", email.to_string()),
        ("name", name.to_string()),
        ("phone", phone.to_string()),
    ];
    secrets.extend(recovery.iter().map(|c| ("recovery code", c.clone())));
    for (what, secret) in secrets {
        assert!(!logs.contains(&secret), "the {what} appears in the logs");
    }
}
