//! Names and notes through the real `ledgerd`: a payment shows both parties' names and
//! emails and its note to its parties, history rows name the payment and the other
//! party, and a note is personal data: sealed in the log, unreadable everywhere once
//! its author is erased (also after a restart).

use std::path::Path;
use std::time::{Duration, Instant};

use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;

mod common;

use common::{authed, fund, person, Person, Server, PASSWORD};

type Payments = wire::payments_client::PaymentsClient<Channel>;

const NOTE: &str = "Dinner at Luigi's, from Ada Quillfeather <ada.quillfeather@example.com>";

async fn payments(server: &Server) -> Payments {
    let channel = Channel::from_shared(server.addr.clone()).expect("uri").connect().await.expect("connect");
    wire::payments_client::PaymentsClient::new(channel)
}

async fn completed(payments: &mut Payments, token: &str, id: &str) -> wire::Payment {
    let started = Instant::now();
    loop {
        let request = wire::GetPaymentRequest { payment_id: id.into(), ..Default::default() };
        let payment = payments.get_payment(authed(request, token)).await.expect("get").into_inner();
        if payment.status == "completed" {
            return payment;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "payment stuck: {payment:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if std::fs::read(&path).expect("read").windows(needle.len()).any(|w| w == needle) {
            found.push(path.display().to_string());
        }
    }
    found
}

async fn bob_history(server: &Server, bob: &Person) -> Vec<wire::AccountMovement> {
    let mut ledger = server.client().await;
    let request = wire::GetHistoryRequest { owner_id: bob.id.clone(), ..Default::default() };
    ledger.get_history(authed(request, &bob.token)).await.expect("history").into_inner().movements
}

#[tokio::test]
async fn notes_are_sealed_shown_to_the_parties_and_unreadable_after_the_author_is_erased() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut users = server.users().await;
    let ada = person(&mut users, "Ada Quillfeather", "ada.quillfeather@example.com").await;
    let bob = person(&mut users, "Bob Marchetti", "bob.marchetti@example.com").await;
    fund(&server, &ada, "USD", "2000", "1").await;
    let mut pay = payments(&server).await;

    let send = wire::SendRequest {
        idempotency_key: "dinner".into(),
        receiver_user_id: bob.id.clone(),
        amount: "12.50".into(),
        currency: "USD".into(),
        note: NOTE.into(),
        ..Default::default()
    };
    let created = pay.send(authed(send.clone(), &ada.token)).await.expect("send").into_inner();
    assert_eq!(created.note, NOTE, "the author sees the note at once");
    let retried = pay.send(authed(send, &ada.token)).await.expect("a retry").into_inner();
    assert_eq!(retried.payment_id, created.payment_id, "a retry with the same note is the same payment");
    let other_note = wire::SendRequest {
        idempotency_key: "dinner".into(),
        receiver_user_id: bob.id.clone(),
        amount: "12.50".into(),
        currency: "USD".into(),
        note: "another note".into(),
        ..Default::default()
    };
    let refused = pay.send(authed(other_note, &ada.token)).await.expect_err("another request");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);

    // Both parties see names, emails and the note.
    for viewer in [&ada, &bob] {
        let shown = completed(&mut pay, &viewer.token, &created.payment_id).await;
        assert_eq!((shown.from_name.as_str(), shown.to_name.as_str()), ("Ada Quillfeather", "Bob Marchetti"));
        assert_eq!(
            (shown.from_email.as_str(), shown.to_email.as_str()),
            ("ada.quillfeather@example.com", "bob.marchetti@example.com")
        );
        assert_eq!(shown.note, NOTE);
        let list = pay.list_payments(authed(wire::ListPaymentsRequest::default(), &viewer.token)).await.expect("list");
        let listed = list.into_inner().payments;
        assert!(listed
            .iter()
            .any(|p| p.payment_id == created.payment_id && p.note == NOTE && p.from_name == "Ada Quillfeather"));
    }
    // Bob's history row of the payment names it, the payer and the note.
    let rows = bob_history(&server, &bob).await;
    let row = rows.iter().find(|m| m.payment_id == created.payment_id).expect("a row of the payment");
    assert_eq!((row.counterparty_name.as_str(), row.note.as_str()), ("Ada Quillfeather", NOTE));

    // An incoming request shows who asks, and the asker's note.
    let ask = wire::RequestMoneyRequest {
        idempotency_key: "taxi".into(),
        payer_user_id: ada.id.clone(),
        amount: "3.00".into(),
        currency: "USD".into(),
        note: "the taxi home".into(),
        ..Default::default()
    };
    let asked = pay.request_money(authed(ask, &bob.token)).await.expect("request").into_inner();
    let seen = pay.get_payment(authed(
        wire::GetPaymentRequest { payment_id: asked.payment_id.clone(), ..Default::default() },
        &ada.token,
    ));
    let seen = seen.await.expect("Ada sees the request").into_inner();
    assert_eq!(
        (seen.kind.as_str(), seen.to_name.as_str(), seen.note.as_str()),
        ("request", "Bob Marchetti", "the taxi home")
    );

    // The note never reaches the data directory in clear, even while Ada exists.
    let data = dir.path().join("data");
    assert_eq!(files_holding(&data, NOTE.as_bytes()), Vec::<String>::new());
    assert_eq!(files_holding(&data, b"Dinner at Luigi"), Vec::<String>::new());

    // Ada empties her wallet, then deletes her account.
    let rest = wire::SendRequest {
        idempotency_key: "rest".into(),
        receiver_user_id: bob.id.clone(),
        amount: "7.50".into(),
        currency: "USD".into(),
        ..Default::default()
    };
    let rest = pay.send(authed(rest, &ada.token)).await.expect("send the rest").into_inner();
    completed(&mut pay, &bob.token, &rest.payment_id).await;
    let delete = wire::ReauthRequest { current_password: PASSWORD.into(), ..Default::default() };
    users.delete_user(authed(delete, &ada.token)).await.expect("delete Ada");

    let after = |p: &wire::Payment| {
        assert_eq!(p.note, "(deleted)", "the note is unreadable: {p:?}");
        assert_eq!((p.from_name.as_str(), p.from_email.as_str()), ("(deleted user)", ""));
        assert_eq!((p.to_name.as_str(), p.to_email.as_str()), ("Bob Marchetti", "bob.marchetti@example.com"));
    };
    after(&completed(&mut pay, &bob.token, &created.payment_id).await);
    // Bob's own note on his request to Ada stays his to read.
    let request = wire::GetPaymentRequest { payment_id: asked.payment_id.clone(), ..Default::default() };
    let asked = pay.get_payment(authed(request, &bob.token)).await.expect("Bob's request").into_inner();
    assert_eq!((asked.note.as_str(), asked.from_name.as_str()), ("the taxi home", "(deleted user)"));
    let rows = bob_history(&server, &bob).await;
    let row = rows.iter().find(|m| m.payment_id == created.payment_id).expect("a row of the payment");
    assert_eq!((row.counterparty_name.as_str(), row.note.as_str()), ("(deleted user)", "(deleted)"));
    assert_eq!(files_holding(&data, NOTE.as_bytes()), Vec::<String>::new());

    // After a restart, replay finds the key gone: still unreadable.
    drop(pay);
    drop(users);
    // A clean stop waits for open connections to end: keep the runtime free to close them.
    let status = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.terminate()
    })
    .await
    .expect("join");
    assert!(status.success());
    let log_files = files_holding(&data.join("log"), b"Dinner at Luigi");
    assert!(log_files.is_empty(), "no log file holds the note: {log_files:?}");
    let server = Server::start(dir.path());
    let mut pay = payments(&server).await;
    after(&completed(&mut pay, &bob.token, &created.payment_id).await);
}
