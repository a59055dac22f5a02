//! What depends on the time, on a manual clock: expiry of sessions and FX quotes, and
//! the window of TOTP codes; and the bound on sessions per user (the oldest ends, by
//! the time it started). Users and FX run over an embedded store in a temporary
//! directory, with time moved by the test instead of waited for. (Through `ledgerd`,
//! the gRPC layer maps these errors: an expired session or a refused second factor is
//! UNAUTHENTICATED, an expired quote FAILED_PRECONDITION.)

use std::sync::Arc;
use std::time::Duration;

use ledger_core::clock::{Clock, ManualClock};
use ledger_core::domain::{AccountCommand, AccountFlags, AccountId, NewAccount, NewTransfer, TransferId, TransferKind};
use ledger_core::money::Currency;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::EventStore;
use ledger_engine::writer::{Ledger, LedgerConfig};
use ledger_platform::chart::wallet_account_id;
use ledger_platform::fx::{Fixed, Fx, FxConfig, FxError};
use ledger_platform::users::crypto::{KeyStore, SecretKey};
use ledger_platform::users::instruments::SandboxVault;
use ledger_platform::users::{totp, Reauth, Users, UsersConfig, UsersError};
use rust_decimal::Decimal;

/// 2023-11-14: any fixed time will do; a real one keeps dates in profiles sensible.
const START_NS: u64 = 1_700_000_000_000_000_000;
const SECOND_NS: u64 = 1_000_000_000;
const PASSWORD: &str = "violet-anchor-tram-47";

struct Platform {
    clock: Arc<ManualClock>,
    store: Arc<dyn EventStore>,
    ledger: Ledger,
    users: Arc<Users>,
    master: SecretKey,
    dir: tempfile::TempDir,
}

/// Users (sessions idle out after 2 s and end 4 s after sign-in, as `ledgerd` is
/// started by the integration test) over the store, on the clock.
fn open_users(p: (Arc<dyn EventStore>, Ledger, SecretKey, std::path::PathBuf, Arc<ManualClock>)) -> Users {
    let (store, ledger, master, path, clock) = p;
    let keys = KeyStore::open(&path.join("keys").join("data-keys.bin"), master).expect("key store");
    let config = UsersConfig {
        session_idle: Duration::from_secs(2),
        session_max: Duration::from_secs(4),
        // One user in memory: every other call reads its user from the stream again.
        cached_max: 1,
        ..UsersConfig::default()
    };
    // A fresh index each time: the one of the users this replaces may still be open
    // (services hold them), so each reopening rebuilds its index from the log.
    static OPENED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let opened = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let index = ledger_platform::users::index_path(&path.join(format!("open-{opened}")));
    Users::open(store, ledger, keys, Box::new(SandboxVault), config, clock, &index).expect("open users")
}

/// A fresh store in a temporary directory, its ledger and users, on a manual clock.
async fn platform() -> Platform {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let clock = Arc::new(ManualClock::new(START_NS));
    let master = SecretKey::random().expect("key");
    let (on, key) = (clock.clone(), master.clone());
    let (store, ledger, users) = tokio::task::spawn_blocking(move || {
        let (store, _) = EmbeddedStore::open(path.join("log"), EmbeddedOptions::default()).expect("open store");
        let store: Arc<dyn EventStore> = Arc::new(store);
        let ledger =
            Ledger::open(store.clone(), LedgerConfig { clock: on.clone(), ..LedgerConfig::default() }).expect("ledger");
        let users = open_users((store.clone(), ledger.clone(), key, path, on));
        (store, ledger, Arc::new(users))
    })
    .await
    .expect("open");
    Platform { clock, store, ledger, users, master, dir }
}

impl Platform {
    /// Rebuilds the users from the log, as a restart of `ledgerd` does.
    async fn reopen_users(&mut self) {
        let opened = (self.store.clone(), self.ledger.clone(), self.master.clone(), self.dir.path().to_path_buf());
        let (store, ledger, master, path) = opened;
        let clock = self.clock.clone();
        let users = tokio::task::spawn_blocking(move || open_users((store, ledger, master, path, clock)))
            .await
            .expect("reopen");
        self.users = Arc::new(users);
    }

    async fn fx(&self, quote_ttl: Duration) -> Fx {
        let (store, ledger, users, clock) =
            (self.store.clone(), self.ledger.clone(), self.users.clone(), self.clock.clone());
        let config = FxConfig { quote_ttl, ..FxConfig::default() };
        tokio::task::spawn_blocking(move || Fx::open(store, ledger, users, config, clock))
            .await
            .expect("open fx")
            .expect("open fx")
    }

    async fn sign_in(&self, email: &str) -> String {
        self.users.login(email, PASSWORD, "", "", "test").await.expect("login").session_token
    }
}

fn expired(result: Result<impl std::fmt::Debug, UsersError>) {
    let error = result.expect_err("the session should have expired");
    assert_eq!(error.code(), "USERS_UNAUTHENTICATED", "{error:?}");
    assert!(error.to_string().contains("expired"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_expires_after_its_idle_time() {
    let p = platform().await;
    p.users.register("Erin", "erin@example.com", PASSWORD, "192.0.2.1").await.expect("erin");
    let idle = p.sign_in("erin@example.com").await;
    p.users.authenticate(&idle).await.expect("fresh session");
    p.clock.advance_ns(2 * SECOND_NS);
    p.users.authenticate(&idle).await.expect("used just within the idle time");
    p.clock.advance_ns(2 * SECOND_NS + 600_000_000);
    expired(p.users.authenticate(&idle).await);
    // Once refused, it stays refused.
    assert_eq!(p.users.authenticate(&idle).await.expect_err("gone").code(), "USERS_UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_use_ends_at_its_absolute_expiry() {
    let p = platform().await;
    p.users.register("Erin", "erin@example.com", PASSWORD, "192.0.2.1").await.expect("erin");
    let busy = p.sign_in("erin@example.com").await;
    // In use every half second, never idle: live for 4 s after sign-in, then refused.
    for _ in 0..8 {
        p.users.authenticate(&busy).await.expect("within the session's 4 s");
        p.clock.advance_ns(SECOND_NS / 2);
    }
    p.users.authenticate(&busy).await.expect("exactly 4 s after sign-in");
    p.clock.advance_ns(1);
    expired(p.users.authenticate(&busy).await);
    // A new sign-in starts a new session.
    let again = p.sign_in("erin@example.com").await;
    p.users.authenticate(&again).await.expect("a new session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_beyond_the_session_limit_ends_the_oldest_session_also_after_a_restart() {
    use ledger_platform::users::SESSIONS_PER_USER_MAX;
    let mut p = platform().await;
    p.users.register("Erin", "erin@example.com", PASSWORD, "192.0.2.1").await.expect("erin");
    let mut tokens = Vec::new();
    for _ in 0..SESSIONS_PER_USER_MAX {
        tokens.push(p.sign_in("erin@example.com").await);
        p.clock.advance_ns(1_000);
    }
    let newest = p.sign_in("erin@example.com").await;
    let refused = p.users.authenticate(&tokens[0]).await.expect_err("the oldest session ended");
    assert_eq!(refused.code(), "USERS_UNAUTHENTICATED", "{refused:?}");
    for token in tokens[1..].iter().chain([&newest]) {
        p.users.authenticate(token).await.expect("the others stay");
    }
    // The same after a rebuild from the log: the limit's ending is an event.
    p.reopen_users().await;
    assert!(p.users.authenticate(&tokens[0]).await.is_err(), "still ended after a restart");
    p.users.authenticate(&tokens[1]).await.expect("kept across the restart");
    let caller = p.users.authenticate(&newest).await.expect("kept across the restart");
    let sessions = p.users.sessions(&caller).await.expect("sessions");
    assert_eq!(sessions.len(), SESSIONS_PER_USER_MAX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_quote_fails_clearly_and_moves_nothing() {
    let p = platform().await;
    let fx = p.fx(Duration::from_secs(2)).await;
    let alice = p.users.register("Alice", "alice@example.com", PASSWORD, "192.0.2.1").await.expect("alice");
    let (usd, eur) = (Currency::parse("USD").expect("USD"), Currency::parse("EUR").expect("EUR"));
    let rate: Decimal = "1.08".parse().expect("rate");
    fx.set_rates(vec![(eur, usd, rate, "test".into())]).await.expect("rates");
    let stale = fx.quote(alice, usd, eur, Fixed::Sell(100)).await.expect("quote");
    assert_eq!(stale.expires_at, p.clock.now_ns() + 2 * SECOND_NS);
    p.users.open_wallet(alice, usd).await.expect("USD wallet");
    let wallets = p.users.wallets(alice).await.expect("wallets");
    // Live up to and including its expiry time: a payment could still take it.
    p.clock.advance_ns(2 * SECOND_NS);
    fx.take_quote(alice, &stale.id, 1).await.expect("live at its expiry time");
    fx.release_quote(&stale.id, 1).await;
    p.clock.advance_ns(300_000_000);
    let error = fx.execute(alice, &stale.id, alice).await.expect_err("expired");
    assert!(matches!(error, FxError::QuoteExpired { expires_at_ns } if expires_at_ns == stale.expires_at), "{error:?}");
    assert_eq!(error.code(), "FX_QUOTE_EXPIRED");
    assert!(error.to_string().contains("expired"), "{error}");
    assert!(matches!(fx.take_quote(alice, &stale.id, 2).await, Err(FxError::QuoteExpired { .. })));
    assert_eq!(p.users.wallets(alice).await.expect("wallets"), wallets, "nothing moved");
    // A new quote at the new time is live.
    let fresh = fx.quote(alice, usd, eur, Fixed::Sell(100)).await.expect("quote");
    assert_eq!(fresh.expires_at, p.clock.now_ns() + 2 * SECOND_NS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_quote_survives_a_restart_and_converts_once() {
    let p = platform().await;
    let fx = p.fx(Duration::from_secs(60)).await;
    let alice = p.users.register("Alice", "alice@example.com", PASSWORD, "192.0.2.1").await.expect("alice");
    let (usd, eur) = (Currency::parse("USD").expect("USD"), Currency::parse("EUR").expect("EUR"));
    fx.set_rates(vec![(eur, usd, "1.08".parse().expect("rate"), "test".into())]).await.expect("rates");
    p.users.open_wallet(alice, usd).await.expect("USD wallet");
    // 10.00 USD into Alice's wallet from an operator's account.
    let operator = AccountId(9_840);
    let open = NewAccount { id: operator, currency: usd, code: 1, flags: AccountFlags(0), owner_id: 0 };
    p.ledger.create_accounts(vec![AccountCommand::Open(open)]).await.expect("operator account");
    let fund = NewTransfer {
        id: TransferId(1),
        debit_account_id: operator,
        credit_account_id: AccountId(wallet_account_id(alice, usd)),
        amount: 1_000,
        currency: Some(usd),
        code: 1,
        metadata: String::new(),
        linked: false,
        kind: TransferKind::Posted,
    };
    assert!(p.ledger.create_transfers(vec![fund]).await.expect("fund")[0].is_ok());
    let kept = fx.quote(alice, usd, eur, Fixed::Sell(500)).await.expect("quote");
    let short = fx.quote(alice, usd, eur, Fixed::Sell(100)).await.expect("quote");
    drop(fx);

    // A restart: the quotes given are read back from the log, as they were.
    p.clock.advance_ns(30 * SECOND_NS);
    let fx = p.fx(Duration::from_secs(60)).await;
    let back = fx.peek(alice, &kept.id).await.expect("the quote survived the restart");
    assert_eq!(
        (back.amounts.from, back.amounts.to, back.expires_at),
        (kept.amounts.from, kept.amounts.to, kept.expires_at)
    );
    assert!(matches!(fx.peek(alice + 1, &kept.id).await, Err(FxError::NotFound(_))), "another user's is unknown");
    let (_, booked) = fx.execute(alice, &kept.id, alice).await.expect("converts after the restart");
    let eur_wallet = wallet_account_id(alice, eur);
    drop(fx);

    // Another restart: executed stays executed; again it answers the same conversion.
    let fx = p.fx(Duration::from_secs(60)).await;
    let (_, again) = fx.execute(alice, &kept.id, alice).await.expect("the same conversion");
    assert_eq!(again.transfer_ids, booked.transfer_ids);
    let taken = fx.take_quote(alice, &kept.id, 7).await.expect_err("an executed quote is not taken by a payment");
    assert!(matches!(taken, FxError::FailedPrecondition(_)), "{taken:?}");
    let balances = p.ledger.lookup_accounts(vec![AccountId(eur_wallet)]).await.expect("lookup");
    let credited = balances[0].as_ref().expect("EUR wallet").credits_posted;
    assert_eq!(credited, u128::from(kept.amounts.to), "converted once");
    drop(fx);

    // Past its expiry, a quote is not loaded again: it is as unknown as any.
    p.clock.advance_ns(31 * SECOND_NS);
    let fx = p.fx(Duration::from_secs(60)).await;
    assert!(matches!(fx.execute(alice, &short.id, alice).await, Err(FxError::NotFound(_))));
}

fn refused(result: Result<impl std::fmt::Debug, UsersError>, why: &str) -> UsersError {
    let error = result.expect_err(why);
    assert_eq!(error.code(), "USERS_UNAUTHENTICATED", "{why}: {error:?}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_codes_are_checked_against_the_clock_and_used_once() {
    let mut p = platform().await;
    let frank = p.users.register("Frank", "frank@example.com", PASSWORD, "192.0.2.1").await.expect("frank");
    let caller = p.users.authenticate(&p.sign_in("frank@example.com").await).await.expect("session");
    let wrong = p.users.enroll_totp(frank, Reauth { password: "wrong-password-123", totp_code: "" }).await;
    refused(wrong, "wrong password");
    let (shown, uri) = p.users.enroll_totp(frank, Reauth { password: PASSWORD, totp_code: "" }).await.expect("enroll");
    assert!(uri.starts_with("otpauth://totp/Ledger:frank%40example.com?secret="), "{uri}");
    let secret = totp::base32_decode(&shown).expect("base32");
    let at = |step: u64| format!("{:06}", totp::code_at(&secret, step));
    // The middle of a step: the codes of the steps either side are accepted too.
    let step = totp::step_of(START_NS / SECOND_NS) + 1;
    p.clock.set_ns((step * totp::STEP_SECONDS + totp::STEP_SECONDS / 2) * SECOND_NS);
    let error = p.users.confirm_totp(frank, &at(step + 5)).await.expect_err("a code from the future");
    assert_eq!(error.code(), "USERS_INVALID_ARGUMENT", "{error:?}");
    // Confirm with the previous step's code, so the current and next steps are unused.
    let recovery = p.users.confirm_totp(frank, &at(step - 1)).await.expect("confirm");
    assert_eq!(recovery.len(), 10);
    assert!(p.users.profile(frank).await.expect("profile").totp_enabled);

    let login = |code: String, recovery: String| {
        let users = p.users.clone();
        async move { users.login("frank@example.com", PASSWORD, &code, &recovery, "test").await.map(|s| s.session_token) }
    };
    let missing = refused(login(String::new(), String::new()).await, "second factor required");
    assert!(missing.to_string().contains("second factor"), "{missing}");
    refused(login(at(step + 7), String::new()).await, "a code from the future");
    login(at(step), String::new()).await.expect("current code");
    refused(login(at(step), String::new()).await, "reused");
    // Still refused after a restart: the step used is in the sign-in's event.
    p.reopen_users().await;
    let login = |code: String, recovery: String| {
        let users = p.users.clone();
        async move { users.login("frank@example.com", PASSWORD, &code, &recovery, "test").await.map(|s| s.session_token) }
    };
    refused(login(at(step), String::new()).await, "reused after a restart");
    login(String::new(), recovery[0].clone()).await.expect("recovery code");
    refused(login(String::new(), recovery[0].clone()).await, "recovery code used");
    // Sensitive changes now need the second factor too.
    let change =
        p.users.change_password(&caller, Reauth { password: PASSWORD, totp_code: "" }, "a-brand-new-passphrase");
    refused(change.await, "no second factor");
    // Time moves on: three steps later the code of the step after the one used is too
    // old (though never used); the current one works.
    p.clock.advance_ns(3 * totp::STEP_SECONDS * SECOND_NS);
    let old = p.users.disable_totp(frank, Reauth { password: PASSWORD, totp_code: &at(step + 1) }).await;
    refused(old, "a code three steps old");
    p.users.disable_totp(frank, Reauth { password: PASSWORD, totp_code: &at(step + 3) }).await.expect("disable");
    login(String::new(), String::new()).await.expect("one factor again");
    let events = p.users.security_events(frank).await.expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for kind in ["second_factor_enabled", "second_factor_disabled", "recovery_code_used", "sign_in_failed"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
}
