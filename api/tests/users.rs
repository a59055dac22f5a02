//! The users API through the real `ledgerd`: the whole life cycle, cross-user access,
//! throttling, session revocation, TOTP, and erasure that leaves no
//! personal data in clear anywhere in the data directory while the log still verifies.

use std::path::{Path, PathBuf};

use ledger_platform::users::totp;
use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

mod common;

use common::{audit_verify, authed, Server, ADMIN, SERVICE};

type Users = wire::users_client::UsersClient<Channel>;

const PASSWORD: &str = "violet-anchor-tram-47";

fn code(result: Result<impl Sized, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn register(users: &mut Users, name: &str, email: &str, password: &str) -> Result<String, Status> {
    let request = wire::RegisterRequest { name: name.into(), email: email.into(), password: password.into() };
    Ok(users.register(request).await?.into_inner().user_id)
}

async fn login(users: &mut Users, email: &str, password: &str) -> Result<wire::LoginResponse, Status> {
    let request = wire::LoginRequest { email: email.into(), password: password.into(), ..Default::default() };
    Ok(users.login(request).await?.into_inner())
}

async fn login_2fa(users: &mut Users, email: &str, totp_code: &str, recovery: &str) -> Result<String, Status> {
    let request = wire::LoginRequest {
        email: email.into(),
        password: PASSWORD.into(),
        totp_code: totp_code.into(),
        recovery_code: recovery.into(),
    };
    Ok(users.login(request).await?.into_inner().session_token)
}

fn me() -> wire::UserRequest {
    wire::UserRequest::default()
}

/// From a day before now to a day after, in whole quarter hours.
fn report_window() -> (u64, u64) {
    const QUARTER_NS: u64 = 900_000_000_000;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    let from = now / QUARTER_NS * QUARTER_NS - 96 * QUARTER_NS;
    (from, from + 192 * QUARTER_NS)
}

fn every_file(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry")) {
        let path = entry.path();
        if path.is_dir() {
            every_file(&path, out);
        } else {
            out.push(path);
        }
    }
}

async fn platform_transfer(server: &Server, id: &str, debit: &str, credit: &str, amount: &str) {
    let mut ledger = server.client().await;
    let transfer = wire::NewTransfer {
        id: id.into(),
        debit_account_id: debit.into(),
        credit_account_id: credit.into(),
        amount: amount.into(),
        currency: "USD".into(),
        code: 1,
        kind: wire::TransferKind::Posted as i32,
        ..Default::default()
    };
    let request = wire::CreateTransfersRequest { transfers: vec![transfer] };
    let results = ledger.create_transfers(authed(request, SERVICE)).await.expect("transfer").into_inner().results;
    assert_eq!(results[0].code, "CREATED", "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_life_cycle_ends_in_an_erasure_that_leaves_no_personal_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Snapshots every few events, so the data directory has them to search too.
    let mut server = Server::start_with(dir.path(), &["--snapshot-interval-events", "3"]);
    let mut users = server.users().await;

    // Sign-up checks its input and keeps emails unique whatever their case.
    for (name, email, password) in [
        ("Ada", "ada@example.com", "short"),
        ("Ada", "ada@example.com", "Password1234!"),
        ("Ada", "not-an-email", PASSWORD),
        ("", "ada@example.com", PASSWORD),
    ] {
        assert_eq!(
            code(register(&mut users, name, email, password).await),
            Code::InvalidArgument,
            "{email} {password}"
        );
    }
    let name = "Augusta Ada King-Noel";
    let email = "Augusta.Ada@Example.com";
    let user_id = register(&mut users, name, email, PASSWORD).await.expect("register");
    assert_eq!(code(register(&mut users, "Other", "augusta.ada@example.COM", PASSWORD).await), Code::AlreadyExists);

    // Sign-in: a wrong password and an unknown email get the same answer.
    let wrong = login(&mut users, email, "violet-anchor-tram-48").await.expect_err("wrong password");
    let unknown = login(&mut users, "nobody@example.com", PASSWORD).await.expect_err("unknown email");
    assert_eq!((wrong.code(), wrong.message()), (unknown.code(), unknown.message()));
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let session = login(&mut users, "augusta.ada@example.com", PASSWORD).await.expect("login");
    assert_eq!(session.user_id, user_id);
    assert!(session.session_token.starts_with("lus_") && session.session_token.len() >= 4 + 32);
    let token = session.session_token.clone();

    // Profile.
    let profile = users.get_profile(authed(me(), &token)).await.expect("profile").into_inner();
    assert_eq!((profile.name.as_str(), profile.email.as_str(), profile.totp_enabled), (name, email, false));
    let (phone, address) = ("+442079460958", "12 St James's Square, London");
    let update = wire::UpdateProfileRequest {
        phone: Some(phone.into()),
        address: Some(address.into()),
        date_of_birth: Some("1815-12-10".into()),
        ..Default::default()
    };
    assert_eq!(code(users.update_profile(authed(update, &token)).await), Code::InvalidArgument, "born > 150 years ago");
    let update = wire::UpdateProfileRequest {
        phone: Some(phone.into()),
        address: Some(address.into()),
        date_of_birth: Some("1990-12-10".into()),
        ..Default::default()
    };
    let profile = users.update_profile(authed(update, &token)).await.expect("update").into_inner();
    assert_eq!((profile.phone.as_str(), profile.address.as_str()), (phone, address));
    let new_email = "ada.lovelace@example.org";
    let change = wire::UpdateProfileRequest { email: Some(new_email.into()), ..Default::default() };
    assert_eq!(code(users.update_profile(authed(change.clone(), &token)).await), Code::Unauthenticated, "re-auth");
    let change = wire::UpdateProfileRequest { current_password: PASSWORD.into(), ..change };
    assert_eq!(users.update_profile(authed(change, &token)).await.expect("email").into_inner().email, new_email);
    assert_eq!(code(login(&mut users, email, PASSWORD).await), Code::Unauthenticated, "the old email is gone");

    // Instruments.
    let account_number = "000123456789";
    let bank = |routing: &str| wire::AddBankAccountRequest {
        bank_name: "First Example Bank".into(),
        routing_number: routing.into(),
        account_number: account_number.into(),
        holder_name: name.into(),
        ..Default::default()
    };
    assert_eq!(code(users.add_bank_account(authed(bank("021000022"), &token)).await), Code::InvalidArgument);
    let added = users.add_bank_account(authed(bank("021000021"), &token)).await.expect("bank").into_inner();
    let bank_id = added.instrument.as_ref().expect("instrument").instrument_id.clone();
    let shown = added.instrument.expect("instrument");
    assert_eq!(shown.account_number_masked, "••••6789");
    assert_eq!(shown.status, wire::InstrumentStatus::PendingVerification as i32);
    assert!(!format!("{shown:?}").contains(account_number));
    assert_eq!(code(users.add_bank_account(authed(bank("021000021"), &token)).await), Code::AlreadyExists);
    let deposits = added.sandbox_micro_deposits.clone();
    let verify = |amounts: Vec<u32>| wire::VerifyInstrumentRequest {
        instrument_id: bank_id.clone(),
        amounts,
        ..Default::default()
    };
    let wrong_amounts = vec![deposits[0] % 99 + 1, deposits[1] % 99 + 1];
    assert_eq!(code(users.verify_instrument(authed(verify(wrong_amounts), &token)).await), Code::FailedPrecondition);
    let verified = users.verify_instrument(authed(verify(vec![deposits[1], deposits[0]]), &token)).await;
    let verified = verified.expect("verify").into_inner();
    assert_eq!(verified.status, wire::InstrumentStatus::Verified as i32);
    assert!(verified.is_default, "the first verified instrument becomes the default");

    let card_number = "4242424242424242";
    let card = |number: &str| wire::AddCardRequest {
        number: number.into(),
        exp_month: 12,
        exp_year: 2035,
        cvv: "123".into(),
        holder_name: name.into(),
        ..Default::default()
    };
    assert_eq!(code(users.add_card(authed(card("4242424242424241"), &token)).await), Code::InvalidArgument);
    assert_eq!(code(users.add_card(authed(card("4000000000000002"), &token)).await), Code::FailedPrecondition);
    let card = users.add_card(authed(card("4242 4242 4242 4242"), &token)).await.expect("card").into_inner();
    let card = card.instrument.expect("instrument");
    assert_eq!((card.card_brand.as_str(), card.card_last4.as_str()), ("visa", "4242"));
    assert_eq!(card.status, wire::InstrumentStatus::Verified as i32);
    let wallet = wire::AddDigitalWalletRequest {
        provider: "paypal".into(),
        handle: "ada.pay@example.org".into(),
        ..Default::default()
    };
    let wallet = users.add_digital_wallet(authed(wallet, &token)).await.expect("wallet").into_inner();
    let wallet_id = wallet.instrument.expect("instrument").instrument_id;
    let set = wire::InstrumentRequest { instrument_id: card.instrument_id.clone(), ..Default::default() };
    assert!(users.set_default_instrument(authed(set, &token)).await.expect("default").into_inner().is_default);
    let remove = wire::InstrumentRequest { instrument_id: wallet_id.clone(), ..Default::default() };
    users.remove_instrument(authed(remove.clone(), &token)).await.expect("remove");
    assert_eq!(code(users.remove_instrument(authed(remove, &token)).await), Code::NotFound);
    let listed = users.list_instruments(authed(me(), &token)).await.expect("list").into_inner().instruments;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.iter().filter(|i| i.is_default).count(), 1);

    // Wallets: ledger accounts of the user, opened on demand.
    let open = |currency: &str| wire::OpenWalletRequest { currency: currency.into(), ..Default::default() };
    assert_eq!(code(users.open_wallet(authed(open("XYZ"), &token)).await), Code::InvalidArgument);
    let usd = users.open_wallet(authed(open("USD"), &token)).await.expect("usd").into_inner();
    assert_eq!(users.open_wallet(authed(open("USD"), &token)).await.expect("again").into_inner(), usd);
    users.open_wallet(authed(open("JPY"), &token)).await.expect("jpy");
    assert_eq!(usd.balance, "0.00");
    let platform = wire::AccountCommand {
        command: Some(wire::account_command::Command::Open(wire::NewAccount {
            id: "9000".into(),
            currency: "USD".into(),
            code: 1,
            flags: 0,
            owner_id: "0".into(),
        })),
    };
    let mut ledger = server.client().await;
    ledger
        .create_accounts(authed(wire::CreateAccountsRequest { commands: vec![platform] }, ADMIN))
        .await
        .expect("platform account");
    platform_transfer(&server, "1", "9000", &usd.account_id, "2500").await;
    let wallets = users.list_wallets(authed(me(), &token)).await.expect("wallets").into_inner().wallets;
    assert_eq!(wallets.iter().find(|w| w.currency == "USD").map(|w| w.balance.as_str()), Some("25.00"));

    // The user reads their own history and report through the ledger API, nothing else.
    let history = wire::GetHistoryRequest { account_id: usd.account_id.clone(), ..Default::default() };
    let page = ledger.get_history(authed(history.clone(), &token)).await.expect("own history").into_inner();
    assert_eq!(page.movements.len(), 1);
    let mine = wire::GetHistoryRequest { owner_id: user_id.clone(), ..Default::default() };
    assert_eq!(ledger.get_history(authed(mine, &token)).await.expect("by owner").into_inner().movements.len(), 1);
    let report = wire::GetReportRequest {
        account_id: usd.account_id.clone(),
        from_ns: report_window().0,
        to_ns: report_window().1,
        ..Default::default()
    };
    ledger.get_report(authed(report, &token)).await.expect("own report");
    let platform_history = wire::GetHistoryRequest { account_id: "9000".into(), ..Default::default() };
    assert_eq!(code(ledger.get_history(authed(platform_history, &token)).await), Code::PermissionDenied);
    let lookup = wire::LookupAccountsRequest { ids: vec![usd.account_id.clone()] };
    assert_eq!(code(ledger.lookup_accounts(authed(lookup, &token)).await), Code::PermissionDenied);

    // A second session ends when the password changes.
    let other = login(&mut users, new_email, PASSWORD).await.expect("second session").session_token;
    let new_password = "quiet-harbour-lantern-9";
    let change = wire::ChangePasswordRequest {
        current_password: "wrong-password-123".into(),
        new_password: new_password.into(),
        ..Default::default()
    };
    assert_eq!(code(users.change_password(authed(change.clone(), &token)).await), Code::Unauthenticated);
    let change = wire::ChangePasswordRequest { current_password: PASSWORD.into(), ..change };
    let ended = users.change_password(authed(change, &token)).await.expect("change password").into_inner();
    assert_eq!(ended.sessions_ended, 1);
    assert_eq!(code(users.get_profile(authed(me(), &other)).await), Code::Unauthenticated);
    assert_eq!(code(login(&mut users, new_email, PASSWORD).await), Code::Unauthenticated);
    let events = users.list_security_events(authed(me(), &token)).await.expect("events").into_inner().events;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "sign_in_failed",
        "sign_in_succeeded",
        "profile_updated",
        "instrument_added",
        "instrument_verified",
        "instrument_removed",
        "password_changed",
        "session_ended",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert!(events.windows(2).all(|w| w[0].at_ns >= w[1].at_ns), "newest first");

    // A user who holds money cannot be deleted; the error says what to do.
    let delete = |password: &str| wire::ReauthRequest { current_password: password.into(), ..Default::default() };
    let refused = users.delete_user(authed(delete(new_password), &token)).await.expect_err("balance");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("USD 25.00") && refused.message().contains("withdraw"), "{}", refused.message());
    platform_transfer(&server, "2", &usd.account_id, "9000", "2500").await;
    assert_eq!(code(users.delete_user(authed(delete(PASSWORD), &token)).await), Code::Unauthenticated);
    users.delete_user(authed(delete(new_password), &token)).await.expect("delete");
    assert_eq!(code(users.get_profile(authed(me(), &token)).await), Code::Unauthenticated);
    assert_eq!(code(login(&mut users, new_email, new_password).await), Code::Unauthenticated);
    // The erased user's wallets are closed: nothing can be paid into them any more.
    let late = wire::NewTransfer {
        id: "3".into(),
        debit_account_id: "9000".into(),
        credit_account_id: usd.account_id.clone(),
        amount: "100".into(),
        currency: "USD".into(),
        code: 1,
        kind: wire::TransferKind::Posted as i32,
        ..Default::default()
    };
    let refused = ledger
        .create_transfers(authed(wire::CreateTransfersRequest { transfers: vec![late] }, SERVICE))
        .await
        .expect("transfer call")
        .into_inner()
        .results;
    assert_eq!(refused[0].code, "CREDIT_ACCOUNT_NOT_OPEN", "{refused:?}");
    // The email is free again.
    let bob = register(&mut users, "Bob", new_email, "another-long-passphrase").await.expect("re-register");
    assert_ne!(bob, user_id);
    let bob_before = login(&mut users, new_email, "another-long-passphrase").await.expect("bob").session_token;

    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let data_dir = dir.path().join("data");
    let mut files = Vec::new();
    every_file(&data_dir, &mut files);
    assert!(files.iter().any(|f| f.starts_with(data_dir.join("log"))), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with(data_dir.join("projections"))), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with(data_dir.join("state"))), "{files:?}");
    // The scan reads what is really there: the erased user's stream name is in the log.
    let stream = format!("user-{user_id}");
    let in_log = files
        .iter()
        .filter(|f| f.starts_with(data_dir.join("log")))
        .any(|f| std::fs::read(f).expect("read").windows(stream.len()).any(|w| w == stream.as_bytes()));
    assert!(in_log, "{stream} not found in the log");
    for file in &files {
        let bytes = std::fs::read(file).expect("read");
        for needle in
            [name, email, "augusta.ada@example.com", "Augusta", phone, address, account_number, card_number, PASSWORD]
        {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} in clear in {}",
                file.display()
            );
        }
    }
    audit_verify(&data_dir);

    // After a restart the erased user stays erased and the others are intact.
    let server = Server::start(dir.path());
    let mut users = server.users().await;
    assert_eq!(code(login(&mut users, new_email, new_password).await), Code::Unauthenticated);
    let bob_session = login(&mut users, new_email, "another-long-passphrase").await.expect("bob after restart");
    assert_eq!(bob_session.user_id, bob);
    // A session from before the restart is still good (its idle time counts from sign-in).
    let profile = users.get_profile(authed(me(), &bob_before)).await.expect("session survives a restart");
    assert_eq!(profile.into_inner().user_id, bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cross_user_access_is_denied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut users = server.users().await;
    let alice = register(&mut users, "Alice", "alice@example.com", PASSWORD).await.expect("alice");
    register(&mut users, "Mallory", "mallory@example.com", PASSWORD).await.expect("mallory");
    let a = login(&mut users, "alice@example.com", PASSWORD).await.expect("login alice");
    let m = login(&mut users, "mallory@example.com", PASSWORD).await.expect("login mallory").session_token;
    let card = wire::AddCardRequest {
        number: "5555555555554444".into(),
        exp_month: 1,
        exp_year: 2034,
        cvv: "321".into(),
        ..Default::default()
    };
    let alice_card = users.add_card(authed(card, &a.session_token)).await.expect("card").into_inner();
    let alice_card = alice_card.instrument.expect("instrument").instrument_id;
    let open = wire::OpenWalletRequest { currency: "EUR".into(), ..Default::default() };
    let alice_wallet = users.open_wallet(authed(open, &a.session_token)).await.expect("wallet").into_inner();

    let alice_req = || wire::UserRequest { user_id: alice.clone() };
    assert_eq!(code(users.get_profile(authed(alice_req(), &m)).await), Code::PermissionDenied);
    assert_eq!(code(users.list_instruments(authed(alice_req(), &m)).await), Code::PermissionDenied);
    assert_eq!(code(users.list_wallets(authed(alice_req(), &m)).await), Code::PermissionDenied);
    assert_eq!(code(users.list_sessions(authed(alice_req(), &m)).await), Code::PermissionDenied);
    assert_eq!(code(users.list_security_events(authed(alice_req(), &m)).await), Code::PermissionDenied);
    let update = wire::UpdateProfileRequest { user_id: alice.clone(), name: Some("x".into()), ..Default::default() };
    assert_eq!(code(users.update_profile(authed(update, &m)).await), Code::PermissionDenied);
    let delete =
        wire::ReauthRequest { user_id: alice.clone(), current_password: PASSWORD.into(), totp_code: String::new() };
    assert_eq!(code(users.delete_user(authed(delete, &m)).await), Code::PermissionDenied);
    let open = wire::OpenWalletRequest { user_id: alice.clone(), currency: "EUR".into() };
    assert_eq!(code(users.open_wallet(authed(open, &m)).await), Code::PermissionDenied);
    // Someone else's instrument or session is as unknown as one that never existed.
    let theirs = wire::InstrumentRequest { instrument_id: alice_card.clone(), ..Default::default() };
    assert_eq!(code(users.remove_instrument(authed(theirs.clone(), &m)).await), Code::NotFound);
    assert_eq!(code(users.set_default_instrument(authed(theirs, &m)).await), Code::NotFound);
    let verify = wire::VerifyInstrumentRequest { instrument_id: alice_card, amounts: vec![1, 2], ..Default::default() };
    assert_eq!(code(users.verify_instrument(authed(verify, &m)).await), Code::NotFound);
    let revoke = wire::RevokeSessionRequest { session_id: a.session_id.clone(), ..Default::default() };
    assert_eq!(code(users.revoke_session(authed(revoke, &m)).await), Code::NotFound);
    // Alice's money through the ledger API.
    let mut ledger = server.client().await;
    let history = wire::GetHistoryRequest { account_id: alice_wallet.account_id.clone(), ..Default::default() };
    assert_eq!(code(ledger.get_history(authed(history, &m)).await), Code::PermissionDenied);
    let by_owner = wire::GetHistoryRequest { owner_id: alice.clone(), ..Default::default() };
    assert_eq!(code(ledger.get_history(authed(by_owner, &m)).await), Code::PermissionDenied);
    let report = wire::GetReportRequest {
        account_id: alice_wallet.account_id.clone(),
        from_ns: report_window().0,
        to_ns: report_window().1,
        ..Default::default()
    };
    assert_eq!(code(ledger.get_report(authed(report, &m)).await), Code::PermissionDenied);
    let transfer = wire::CreateTransfersRequest { transfers: vec![] };
    assert_eq!(code(ledger.create_transfers(authed(transfer, &m)).await), Code::PermissionDenied);
    // Nothing of Alice's changed.
    let instruments = users.list_instruments(authed(me(), &a.session_token)).await.expect("list").into_inner();
    assert_eq!(instruments.instruments.len(), 1);
    assert_eq!(
        users.list_sessions(authed(me(), &a.session_token)).await.expect("sessions").into_inner().sessions.len(),
        1
    );
    // No token, a role token, a made-up session token.
    assert_eq!(code(users.get_profile(Request::new(me())).await), Code::Unauthenticated);
    assert_eq!(code(users.get_profile(authed(me(), ADMIN)).await), Code::PermissionDenied);
    assert_eq!(
        code(users.get_profile(authed(me(), "lus_00000000000000000000000000000000")).await),
        Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_are_throttled_per_account_and_per_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut users = server.users().await;
    register(&mut users, "Carol", "carol@example.com", PASSWORD).await.expect("carol");
    register(&mut users, "Dave", "dave@example.com", PASSWORD).await.expect("dave");
    for _ in 0..5 {
        assert_eq!(code(login(&mut users, "carol@example.com", "guess-guess-guess").await), Code::Unauthenticated);
    }
    // Now even the right password waits, and an unknown email is throttled the same way.
    let throttled = login(&mut users, "carol@example.com", PASSWORD).await.expect_err("throttled");
    assert_eq!(throttled.code(), Code::ResourceExhausted);
    assert!(throttled.message().contains("try again in"), "{}", throttled.message());
    for _ in 0..5 {
        assert_eq!(code(login(&mut users, "ghost@example.com", "guess-guess-guess").await), Code::Unauthenticated);
    }
    let ghost = login(&mut users, "ghost@example.com", "guess-guess-guess").await.expect_err("throttled");
    assert_eq!(ghost.code(), Code::ResourceExhausted);
    // Another account from the same source is still open, until the source's limit.
    login(&mut users, "dave@example.com", PASSWORD).await.expect("dave is not throttled");
    for i in 0..40 {
        let email = format!("spray{i}@example.com");
        assert_eq!(code(login(&mut users, &email, "guess-guess-guess").await), Code::Unauthenticated);
    }
    let sprayed = login(&mut users, "dave@example.com", PASSWORD).await.expect_err("source throttled");
    assert_eq!(sprayed.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_per_source_address_are_limited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &["--registrations-per-source-hour", "3"]);
    let mut users = server.users().await;
    // Input that is refused anyway does not count.
    for _ in 0..5 {
        assert_eq!(code(register(&mut users, "Ed", "not-an-email", PASSWORD).await), Code::InvalidArgument);
    }
    for n in 0..3 {
        register(&mut users, "Ed", &format!("ed{n}@example.com"), PASSWORD).await.expect("within the limit");
    }
    let refused = register(&mut users, "Ed", "ed3@example.com", PASSWORD).await.expect_err("one past the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("try again in"), "{}", refused.message());
    let code_of = refused.metadata().get("ledger-error-code").and_then(|v| v.to_str().ok());
    assert_eq!(code_of, Some("USERS_THROTTLED"));
    // Nothing was created for the refused one: the email is still free to sign in as nobody.
    assert_eq!(code(login(&mut users, "ed3@example.com", PASSWORD).await), Code::Unauthenticated);
    login(&mut users, "ed2@example.com", PASSWORD).await.expect("the accepted ones exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_logged_out_sessions_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &["--session-idle-secs", "2", "--session-max-secs", "4"]);
    let mut users = server.users().await;
    register(&mut users, "Erin", "erin@example.com", PASSWORD).await.expect("erin");

    // Idle and absolute expiry are tested on a manual clock: ledger-platform's
    // tests/expiry.rs (UNAUTHENTICATED is what grpc::status maps them to).

    // Revocation and logout.
    let one = login(&mut users, "erin@example.com", PASSWORD).await.expect("one");
    let two = login(&mut users, "erin@example.com", PASSWORD).await.expect("two");
    let listed = users.list_sessions(authed(me(), &one.session_token)).await.expect("list").into_inner().sessions;
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed.iter().filter(|s| s.current).map(|s| s.session_id.as_str()).collect::<Vec<_>>(),
        [one.session_id.as_str()]
    );
    let revoke = wire::RevokeSessionRequest { session_id: two.session_id.clone(), ..Default::default() };
    users.revoke_session(authed(revoke, &one.session_token)).await.expect("revoke");
    assert_eq!(code(users.get_profile(authed(me(), &two.session_token)).await), Code::Unauthenticated);
    users.logout(authed(wire::LogoutRequest {}, &one.session_token)).await.expect("logout");
    assert_eq!(code(users.get_profile(authed(me(), &one.session_token)).await), Code::Unauthenticated);
}

/// The current TOTP step by this machine's clock. The server's step is the same or, if
/// a step ends during the test, the next one: the codes below are chosen to work either
/// way (the exact window is tested on a manual clock in ledger-platform's tests/expiry.rs).
fn current_step() -> u64 {
    totp::step_of(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_is_enforced_once_enabled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut users = server.users().await;
    register(&mut users, "Frank", "frank@example.com", PASSWORD).await.expect("frank");
    let token = login(&mut users, "frank@example.com", PASSWORD).await.expect("login").session_token;
    let reauth = |password: &str, code: &str| wire::ReauthRequest {
        current_password: password.into(),
        totp_code: code.into(),
        ..Default::default()
    };
    assert_eq!(code(users.enroll_totp(authed(reauth("wrong-password-123", ""), &token)).await), Code::Unauthenticated);
    let enrolled = users.enroll_totp(authed(reauth(PASSWORD, ""), &token)).await.expect("enroll").into_inner();
    assert!(enrolled.otpauth_uri.starts_with("otpauth://totp/Ledger:frank%40example.com?secret="));
    let secret = totp::base32_decode(&enrolled.secret).expect("base32");
    let at = |step: u64| format!("{:06}", totp::code_at(&secret, step));
    let step = current_step();
    let wrong = wire::ConfirmTotpRequest { code: at(step + 5), ..Default::default() };
    assert_eq!(code(users.confirm_totp(authed(wrong, &token)).await), Code::InvalidArgument);
    // Confirm with this step's code: inside the window whether or not the server is a
    // step further; the next step's code is then still unused and still inside it.
    let confirm = wire::ConfirmTotpRequest { code: at(step), ..Default::default() };
    let recovery = users.confirm_totp(authed(confirm, &token)).await.expect("confirm").into_inner().recovery_codes;
    assert_eq!(recovery.len(), 10);
    assert!(users.get_profile(authed(me(), &token)).await.expect("profile").into_inner().totp_enabled);

    let missing = login_2fa(&mut users, "frank@example.com", "", "").await.expect_err("second factor required");
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(missing.message().contains("second factor"), "{}", missing.message());
    assert_eq!(code(login_2fa(&mut users, "frank@example.com", &at(step + 7), "").await), Code::Unauthenticated);
    login_2fa(&mut users, "frank@example.com", &at(step + 1), "").await.expect("current code");
    assert_eq!(
        code(login_2fa(&mut users, "frank@example.com", &at(step + 1), "").await),
        Code::Unauthenticated,
        "reused"
    );
    // Still refused after a restart: the step used is in the sign-in's event.
    assert!(server.terminate().success());
    let server = Server::start(dir.path());
    let mut users = server.users().await;
    assert_eq!(
        code(login_2fa(&mut users, "frank@example.com", &at(step + 1), "").await),
        Code::Unauthenticated,
        "reused"
    );
    login_2fa(&mut users, "frank@example.com", "", &recovery[0]).await.expect("recovery code");
    assert_eq!(code(login_2fa(&mut users, "frank@example.com", "", &recovery[0]).await), Code::Unauthenticated, "used");
    // Sensitive changes now need the second factor too.
    let change = wire::ChangePasswordRequest {
        current_password: PASSWORD.into(),
        new_password: "a-brand-new-passphrase".into(),
        ..Default::default()
    };
    assert_eq!(code(users.change_password(authed(change, &token)).await), Code::Unauthenticated);
    // (Disabling it takes a code of a later step than the one used: on a manual clock in
    // ledger-platform's tests/expiry.rs, as is signing in with one factor again.)
    let events = users.list_security_events(authed(me(), &token)).await.expect("events").into_inner().events;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for kind in ["second_factor_enabled", "recovery_code_used", "sign_in_failed"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
}
