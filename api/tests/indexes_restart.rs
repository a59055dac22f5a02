//! The users' and payments' indexes on disk through the real `ledgerd`: after a SIGKILL
//! with the indexes rolled back to an older checkpoint, a start re-applies the log after
//! it; with the indexes deleted, a start rebuilds them. Either way lists, idempotency
//! keys, sign-in and sessions answer as before.

use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;

mod common;

use common::{authed, channel, fund, person, settled, Person, Server, PASSWORD};

async fn payments_client(server: &Server) -> wire::payments_client::PaymentsClient<Channel> {
    wire::payments_client::PaymentsClient::new(channel(server).await)
}

/// Sends `amount` USD from `from`'s wallet to `to` with `key`, waits for it to complete.
async fn pay(server: &Server, from: &Person, to: &Person, key: &str) -> String {
    let mut payments = payments_client(server).await;
    let send = wire::SendRequest {
        idempotency_key: key.into(),
        receiver_user_id: to.id.clone(),
        amount: "1.00".into(),
        currency: "USD".into(),
        funding: "wallet".into(),
        ..Default::default()
    };
    let id = payments.send(authed(send, &from.token)).await.expect("send").into_inner().payment_id;
    settled(&mut payments, &from.token, &id, &["completed"]).await;
    id
}

/// Every payment of the user's list, newest first, paged two at a time.
async fn listed(server: &Server, who: &Person) -> Vec<String> {
    let mut payments = payments_client(server).await;
    let (mut ids, mut after) = (Vec::new(), String::new());
    loop {
        let request = wire::ListPaymentsRequest { limit: 2, after: after.clone(), ..Default::default() };
        let page = payments.list_payments(authed(request, &who.token)).await.expect("list").into_inner();
        ids.extend(page.payments.into_iter().map(|p| p.payment_id));
        if page.next_cursor.is_empty() {
            return ids;
        }
        after = page.next_cursor;
    }
}

fn index_files(data: &std::path::Path) -> [std::path::PathBuf; 2] {
    [data.join("users").join("index.redb"), data.join("payments").join("index.redb")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_catches_the_indexes_up_or_rebuilds_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(dir.path());
    let mut users = server.users().await;
    let alice = person(&mut users, "Alice", "alice@example.com").await;
    let bob = person(&mut users, "Bob", "bob@example.com").await;
    fund(&server, &alice, "USD", "10000", "1").await;
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push(pay(&server, &alice, &bob, &format!("before-{n}")).await);
    }
    drop(users);
    assert!(server.terminate().success());
    // The indexes as of a clean stop: their checkpoint is the log's end then.
    let saved: Vec<Vec<u8>> = index_files(&data).iter().map(|f| std::fs::read(f).expect("index file")).collect();

    let server = Server::start(dir.path());
    let mut users = server.users().await;
    let carol = person(&mut users, "Carol", "carol@example.com").await;
    for n in 0..3 {
        sent.push(pay(&server, &alice, &carol, &format!("after-{n}")).await);
    }
    drop(users);
    drop(server); // SIGKILL
                  // Back to the older indexes: the start must re-apply everything since.
    for (file, bytes) in index_files(&data).iter().zip(&saved) {
        std::fs::write(file, bytes).expect("restore the index");
    }
    let server = Server::start(dir.path());
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(listed(&server, &alice).await, newest_first, "every payment listed, the later ones too");
    assert_eq!(listed(&server, &carol).await.len(), 3);
    // Idempotency keys from after the older checkpoint still answer their payment.
    let again = pay(&server, &alice, &carol, "after-2").await;
    assert_eq!(again, sent[5]);
    // Carol, signed up after it, signs in; her session from before the kill still works.
    let mut users = server.users().await;
    let login =
        wire::LoginRequest { email: "carol@example.com".into(), password: PASSWORD.into(), ..Default::default() };
    users.login(login).await.expect("carol signs in");
    let profile = users.get_profile(authed(wire::UserRequest::default(), &carol.token)).await;
    assert_eq!(profile.expect("carol's session").into_inner().email, "carol@example.com");
    drop(users);
    drop(server);

    // No indexes at all: rebuilt from the log.
    for file in index_files(&data) {
        std::fs::remove_file(file).expect("remove the index");
    }
    let server = Server::start(dir.path());
    assert_eq!(listed(&server, &alice).await, newest_first);
    assert_eq!(listed(&server, &bob).await.len(), 3);
    assert_eq!(pay(&server, &alice, &bob, "before-0").await, sent[0]);
    let mut users = server.users().await;
    let profile = users.get_profile(authed(wire::UserRequest::default(), &bob.token)).await;
    assert_eq!(profile.expect("bob's session").into_inner().email, "bob@example.com");
}
