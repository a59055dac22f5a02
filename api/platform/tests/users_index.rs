//! The users' index on disk and users on demand: a start re-applies only the log after
//! the index's checkpoint, rebuilds the index when it does not match the log, and with
//! one user in memory every call reads its user again from their stream.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger_engine::clock::SystemClock;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::EventStore;
use ledger_engine::writer::{Ledger, LedgerConfig};
use ledger_platform::users::crypto::{KeyStore, SecretKey};
use ledger_platform::users::index::{Checkpoint, UserIndex};
use ledger_platform::users::instruments::SandboxVault;
use ledger_platform::users::{index_path, ProfileChanges, Reauth, Users, UsersConfig, UsersError};

const PASSWORD: &str = "violet-anchor-tram-47";
const INDEX_KEY_CONTEXT: &str = "ledger users index: email v1";

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<dyn EventStore>,
    ledger: Ledger,
    master: SecretKey,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = EmbeddedStore::open(dir.path().join("log"), EmbeddedOptions::default()).expect("store");
        let store: Arc<dyn EventStore> = Arc::new(store);
        let ledger = Ledger::open(store.clone(), LedgerConfig::default()).expect("ledger");
        Fixture { dir, store, ledger, master: SecretKey::random().expect("key") }
    }

    fn keys(&self) -> KeyStore {
        KeyStore::open(&self.dir.path().join("keys").join("data-keys.bin"), self.master.clone()).expect("keys")
    }

    fn index(&self) -> PathBuf {
        index_path(self.dir.path())
    }

    /// Users with one of them in memory at most.
    async fn open(&self) -> Arc<Users> {
        let (store, ledger, keys, index) = (self.store.clone(), self.ledger.clone(), self.keys(), self.index());
        let config = UsersConfig { cached_max: 1, ..UsersConfig::default() };
        let users = tokio::task::spawn_blocking(move || {
            Users::open(store, ledger, keys, Box::new(SandboxVault), config, Arc::new(SystemClock), &index)
        })
        .await
        .expect("join")
        .expect("open users");
        Arc::new(users)
    }
}

async fn sign_in(users: &Users, email: &str) -> String {
    users.login(email, PASSWORD, "", "", "test").await.expect("login").session_token
}

fn reauth() -> Reauth<'static> {
    Reauth { password: PASSWORD, totp_code: "" }
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).expect("copy the index file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_re_applies_the_log_after_the_checkpoint() {
    let f = Fixture::new();
    let users = f.open().await;
    let alice = users.register("Alice", "alice@example.com", PASSWORD, "192.0.2.1").await.expect("alice");
    let carol = users.register("Carol", "carol@example.com", PASSWORD, "192.0.2.1").await.expect("carol");
    let alice_token = sign_in(&users, "alice@example.com").await;
    users.checkpoint().expect("checkpoint");
    // The index as a crash would leave it: as of this checkpoint, nothing after it.
    let at_checkpoint = f.dir.path().join("index-at-checkpoint.redb");
    copy(&f.index(), &at_checkpoint);

    let dave = users.register("Dave", "dave@example.com", PASSWORD, "192.0.2.1").await.expect("dave");
    let dave_token = sign_in(&users, "dave@example.com").await;
    let alice_caller = users.authenticate(&alice_token).await.expect("alice's session");
    users.logout(&alice_caller).await.expect("logout");
    let changes = ProfileChanges { email: Some("carol.new@example.com".into()), ..ProfileChanges::default() };
    users.update_profile(carol, changes, reauth()).await.expect("new email");
    assert!(users.users_cached() <= 1, "{} users in memory", users.users_cached());
    drop(users);
    copy(&at_checkpoint, &f.index());

    let users = f.open().await;
    assert_eq!(users.find_by_email("dave@example.com").await.expect("find"), Some(dave), "registered after it");
    assert_eq!(users.authenticate(&dave_token).await.expect("dave's session").user_id, dave);
    assert_eq!(users.find_by_email("carol.new@example.com").await.expect("find"), Some(carol));
    // Entries of what the log made untrue since are checked against the user.
    assert_eq!(users.find_by_email("carol@example.com").await.expect("find"), None, "carol's old email");
    let ended = users.authenticate(&alice_token).await;
    assert!(matches!(ended, Err(UsersError::Unauthenticated(_))), "{ended:?}");
    assert_eq!(users.find_by_email("alice@example.com").await.expect("find"), Some(alice));
    // The old email is free for someone else.
    let erin = users.register("Erin", "carol@example.com", PASSWORD, "192.0.2.1").await.expect("erin");
    assert_eq!(users.find_by_email("carol@example.com").await.expect("find"), Some(erin));
    let taken = users.register("Eve", "carol.new@example.com", PASSWORD, "192.0.2.1").await;
    assert!(matches!(taken, Err(UsersError::AlreadyExists(_))), "{taken:?}");
    let (page, next) = users.page(None, 10).await.expect("page");
    let mut ids: Vec<u128> = page.iter().map(|u| u.user_id).collect();
    ids.sort();
    let mut expected = vec![alice, carol, dave, erin];
    expected.sort();
    assert_eq!((ids, next), (expected, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_does_not_match_the_log_is_rebuilt() {
    let f = Fixture::new();
    let users = f.open().await;
    let alice = users.register("Alice", "alice@example.com", PASSWORD, "192.0.2.1").await.expect("alice");
    let token = sign_in(&users, "alice@example.com").await;
    let head = users.checkpoint().expect("checkpoint").next;
    drop(users);

    // A checkpoint whose event has another hash: an index of another log.
    let index = UserIndex::open(&f.index(), f.keys().derive_key(INDEX_KEY_CONTEXT)).expect("index");
    index.edit(true, |e| e.remove_user(alice)).expect("edit");
    index.set_checkpoint(Checkpoint { next: head, hash: Some([9; 32]) }).expect("checkpoint");
    drop(index);
    let users = f.open().await;
    assert_eq!(users.find_by_email("alice@example.com").await.expect("find"), Some(alice));
    assert_eq!(users.authenticate(&token).await.expect("session").user_id, alice);
    assert_eq!(users.page(None, 10).await.expect("page").0.len(), 1, "alice is listed again");
    drop(users);

    // No index at all.
    std::fs::remove_file(f.index()).expect("remove the index");
    let users = f.open().await;
    assert_eq!(users.authenticate(&token).await.expect("session").user_id, alice);
    assert_eq!(users.find_by_email("ALICE@example.com").await.expect("find"), Some(alice));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_of_one_email_let_exactly_one_through() {
    let f = Fixture::new();
    let users = f.open().await;
    let mut signups = tokio::task::JoinSet::new();
    for n in 0..4 {
        let users = users.clone();
        signups.spawn(async move { users.register(&format!("Twin {n}"), "twin@example.com", PASSWORD, "x").await });
    }
    let mut won = Vec::new();
    while let Some(done) = signups.join_next().await {
        match done.expect("join") {
            Ok(id) => won.push(id),
            Err(UsersError::AlreadyExists(_)) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(users.find_by_email("twin@example.com").await.expect("find"), Some(won[0]));
}
