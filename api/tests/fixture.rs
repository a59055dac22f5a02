//! A data directory written by an earlier build (`tests/fixtures/data-v1`, made by
//! `tools/make-fixture.sh` with the build of commit e1cbd34) opens with today's code:
//! the audit passes on it, `ledgerd` starts on it, and the money, users and read
//! models it holds read back as they were written. A change of the log, snapshot,
//! key-file or read-model format fails here.

mod common;

use std::path::Path;

use common::{authed, Server, ADMIN};
use ledger_proto::api::v1 as wire;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn fixture() -> tempfile::TempDir {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/data-v1");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&source, &dir.path().join("data"));
    dir
}

async fn sign_in(server: &Server, email: &str, password: &str) -> String {
    let mut users = server.users().await;
    let login = wire::LoginRequest { email: email.into(), password: password.into(), ..Default::default() };
    users.login(login).await.expect("the user signs in with the fixture's password").into_inner().session_token
}

async fn wallets(server: &Server, token: &str) -> Vec<(String, String)> {
    let mut users = server.users().await;
    let list =
        users.list_wallets(authed(wire::UserRequest::default(), token)).await.expect("wallets").into_inner().wallets;
    let mut found: Vec<_> = list.into_iter().map(|w| (w.currency, w.balance)).collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_data_directory_of_the_previous_build_opens_audits_and_reads_back() {
    let dir = fixture();
    let data = dir.path().join("data");
    common::audit_verify(&data);

    let server = Server::start(dir.path());
    let mut ledger = server.client().await;
    let balance = |id: &str| wire::GetBalanceRequest { account_id: id.into(), ..Default::default() };
    let two = ledger.get_balance(authed(balance("2"), ADMIN)).await.expect("balance 2").into_inner();
    assert_eq!((two.currency.as_str(), two.credits_posted.as_str(), two.credits_pending.as_str()), ("USD", "280", "0"));
    let four = ledger.get_balance(authed(balance("4"), ADMIN)).await.expect("balance 4").into_inner();
    assert_eq!((four.credits_posted.as_str(), four.credits_pending.as_str()), ("0", "0"), "the EUR hold was voided");
    let ids = (10..=14).map(|id| id.to_string()).collect();
    let found = ledger
        .lookup_transfers(authed(wire::LookupTransfersRequest { ids }, ADMIN))
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!((found.transfers.len(), found.not_found.len()), (5, 0), "{found:?}");

    // Personal data opens with the fixture's master key; the payments and the FX
    // conversion are in the wallets.
    let ada = sign_in(&server, "ada@example.com", "fixture-passphrase-ada").await;
    let bob = sign_in(&server, "bob@example.com", "fixture-passphrase-bob").await;
    let ada_wallets = vec![("EUR".to_string(), "18.34".to_string()), ("USD".to_string(), "67.50".to_string())];
    assert_eq!(wallets(&server, &ada).await, ada_wallets);
    let bob_wallets = vec![("USD".to_string(), "12.50".to_string())];
    assert_eq!(wallets(&server, &bob).await, bob_wallets);

    // The fixture's payments have random ids (today's derive theirs from the creator and
    // the idempotency key): a retry of Ada's payment to Bob is still found by its key,
    // through the index's row, and pays nothing twice.
    let mut payments = wire::payments_client::PaymentsClient::new(common::channel(&server).await);
    let list = |token: &str| authed(wire::ListPaymentsRequest::default(), token);
    let before = payments.list_payments(list(&ada)).await.expect("list").into_inner().payments;
    let paid = before
        .iter()
        .find(|p| p.kind == "send" && p.amount == "12.50")
        .expect("the fixture's payment to Bob")
        .payment_id
        .clone();
    let retry = wire::SendRequest {
        idempotency_key: "fixture-pay".into(),
        receiver_email: "bob@example.com".into(),
        amount: "12.50".into(),
        currency: "USD".into(),
        funding: "wallet".into(),
        ..Default::default()
    };
    let again = payments.send(authed(retry, &ada)).await.expect("the retry answers").into_inner();
    assert_eq!(again.payment_id, paid, "the retry returns the payment the key made");
    let after = payments.list_payments(list(&ada)).await.expect("list").into_inner().payments;
    assert_eq!(after.len(), before.len());
    assert_eq!(wallets(&server, &bob).await, bob_wallets, "nothing was paid twice");
    drop(payments);

    drop(ledger);
    // A clean stop waits for open connections to end: keep the runtime free to close them.
    let status = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.terminate()
    })
    .await
    .expect("terminate");
    assert!(status.success());
    common::audit_verify(&data);
}
