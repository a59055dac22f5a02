//! Expiry of sessions and FX quotes on a manual clock: users and FX over an embedded
//! store in a temporary directory, with time moved by the test instead of waited for.
//! (The same outcomes through `ledgerd` are what the gRPC layer maps: an expired
//! session is UNAUTHENTICATED, an expired quote FAILED_PRECONDITION.)

use std::sync::Arc;
use std::time::Duration;

use ledger_core::clock::{Clock, ManualClock};
use ledger_core::money::Currency;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::EventStore;
use ledger_engine::writer::{Ledger, LedgerConfig};
use ledger_platform::fx::{Fixed, Fx, FxConfig, FxError};
use ledger_platform::users::crypto::{KeyStore, SecretKey};
use ledger_platform::users::instruments::SandboxVault;
use ledger_platform::users::{Users, UsersConfig, UsersError};
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
    _dir: tempfile::TempDir,
}

/// Users (sessions idle out after 2 s and end 4 s after sign-in, as `ledgerd` is
/// started by the integration test) over a fresh store, on a manual clock.
async fn platform() -> Platform {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let clock = Arc::new(ManualClock::new(START_NS));
    let on = clock.clone();
    let (store, ledger, users) = tokio::task::spawn_blocking(move || {
        let (store, _) = EmbeddedStore::open(path.join("log"), EmbeddedOptions::default()).expect("open store");
        let store: Arc<dyn EventStore> = Arc::new(store);
        let ledger =
            Ledger::open(store.clone(), LedgerConfig { clock: on.clone(), ..LedgerConfig::default() }).expect("ledger");
        let keys = KeyStore::open(&path.join("keys").join("data-keys.bin"), SecretKey::random().expect("key"))
            .expect("key store");
        let config = UsersConfig {
            session_idle: Duration::from_secs(2),
            session_max: Duration::from_secs(4),
            ..UsersConfig::default()
        };
        let users =
            Users::open(store.clone(), ledger.clone(), keys, Box::new(SandboxVault), config, on).expect("open users");
        (store, ledger, Arc::new(users))
    })
    .await
    .expect("open");
    Platform { clock, store, ledger, users, _dir: dir }
}

impl Platform {
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
    p.users.register("Erin", "erin@example.com", PASSWORD).await.expect("erin");
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
    p.users.register("Erin", "erin@example.com", PASSWORD).await.expect("erin");
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
async fn an_expired_quote_fails_clearly_and_moves_nothing() {
    let p = platform().await;
    let fx = p.fx(Duration::from_secs(2)).await;
    let alice = p.users.register("Alice", "alice@example.com", PASSWORD).await.expect("alice");
    let (usd, eur) = (Currency::parse("USD").expect("USD"), Currency::parse("EUR").expect("EUR"));
    let rate: Decimal = "1.08".parse().expect("rate");
    fx.set_rates(vec![(eur, usd, rate, "test".into())]).await.expect("rates");
    let stale = fx.quote(alice, usd, eur, Fixed::Sell(100)).expect("quote");
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
    let fresh = fx.quote(alice, usd, eur, Fixed::Sell(100)).expect("quote");
    assert_eq!(fresh.expires_at, p.clock.now_ns() + 2 * SECOND_NS);
}
