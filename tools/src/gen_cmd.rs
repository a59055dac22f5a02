//! `ledgerctl gen users`: many users for scale tests, written offline into a stopped
//! server's data directory through the platform's own code (`Users::generate`): real
//! user streams, profiles sealed under each user's data key, keys in the key store. A
//! test tool: the generated users share one password (read like every secret, from a
//! prompt or standard input, and hashed once with argon2id) and are marked as
//! generated in their sign-up event.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ledger_engine::clock::SystemClock;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::EventStore;
use ledger_engine::writer::{Ledger, LedgerConfig};
use ledger_platform::users::crypto::{self, KeyStore, SecretKey};
use ledger_platform::users::generate::GENERATE_BATCH_MAX;
use ledger_platform::users::instruments::SandboxVault;
use ledger_platform::users::{password, Users, UsersConfig};

#[derive(clap::Subcommand, Debug)]
pub enum GenCommand {
    /// Sign up generated users, offline (the server must be stopped): emails
    /// gen-{n}@users.test, names "Generated User {n}", one shared password.
    Users(GenUsersArgs),
}

#[derive(clap::Args, Debug)]
pub struct GenUsersArgs {
    /// How many users.
    #[arg(long)]
    count: u64,
    /// The server's data directory.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// The number of the first user (to add more users to a directory that has some).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// The master key file, as `ledgerd --master-key-file` [default: <data-dir>/master.key,
    /// generated if missing; LEDGERD_MASTER_KEY also works].
    #[arg(long)]
    master_key_file: Option<PathBuf>,
}

pub fn run(command: GenCommand, json: bool) -> Result<(), String> {
    let GenCommand::Users(args) = command;
    if args.count == 0 {
        return Err("--count: at least 1".into());
    }
    let password = crate::secret::Secrets::new().read("the generated users' password")?;
    password::check_policy(&password, "gen@users.test").map_err(|e| format!("password: {e}"))?;
    let hash = password::hash(&password).map_err(|e| e.to_string())?;
    let master = master_key(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let (store, ledger, users) = open(&args.data_dir, master)?;
    let opened_secs = started.elapsed().as_secs_f64();
    let mut result = runtime.block_on(generate(&users, &args, &hash));
    if result.is_ok() {
        // The users' index durable at the log's end: the server's start re-applies nothing.
        if let Err(error) = users.checkpoint() {
            result = Err(format!("users index: {error}"));
        }
    }
    ledger.close();
    store.close();
    let made = result?;
    let secs = started.elapsed().as_secs_f64() - opened_secs;
    let rate = made as f64 / secs.max(1e-9);
    if json {
        println!(
            "{{\"users\":{made},\"seconds\":{secs:.3},\"users_per_sec\":{rate:.0},\"open_seconds\":{opened_secs:.3}}}"
        );
    } else {
        println!(
            "{made} users generated in {secs:.1} s ({rate:.0}/s); opening the data directory took {opened_secs:.1} s"
        );
    }
    Ok(())
}

/// The master key as `ledgerd` finds it.
fn master_key(args: &GenUsersArgs) -> Result<SecretKey, String> {
    match crypto::configured_master_key(args.master_key_file.as_deref())? {
        Some(key) => Ok(key),
        None => crypto::master_key_file(&args.data_dir).map_err(|e| e.to_string()),
    }
}

/// The log, the ledger and the users of a data directory, laid out as `ledgerd` does.
fn open(data_dir: &Path, master: SecretKey) -> Result<(Arc<EmbeddedStore>, Ledger, Arc<Users>), String> {
    let (store, _) = EmbeddedStore::open(data_dir.join("log"), EmbeddedOptions::default())
        .map_err(|e| format!("{}: {e} (is ledgerd still running on it?)", data_dir.display()))?;
    let store = Arc::new(store);
    let log: Arc<dyn EventStore> = store.clone();
    let config = LedgerConfig {
        snapshot_dir: Some(data_dir.join("snapshots")),
        state_dir: Some(data_dir.join("state")),
        clock: Arc::new(SystemClock),
        ..LedgerConfig::default()
    };
    let ledger = Ledger::open(log.clone(), config).map_err(|e| e.to_string())?;
    let keys = KeyStore::open(&data_dir.join("keys").join("data-keys.bin"), master).map_err(|e| e.to_string())?;
    let index = ledger_platform::users::index_path(data_dir);
    let users = Users::open(
        log,
        ledger.clone(),
        keys,
        Box::new(SandboxVault),
        UsersConfig::default(),
        Arc::new(SystemClock),
        &index,
    )
    .map_err(|e| e.to_string())?;
    Ok((store, ledger, Arc::new(users)))
}

async fn generate(users: &Arc<Users>, args: &GenUsersArgs, hash: &str) -> Result<u64, String> {
    let end = args.first.checked_add(args.count).ok_or("--first + --count: too large")?;
    let mut next = args.first;
    let mut reported = Instant::now();
    while next < end {
        let batch_end = end.min(next + GENERATE_BATCH_MAX as u64);
        let people: Vec<(String, String)> =
            (next..batch_end).map(|n| (format!("Generated User {n}"), format!("gen-{n}@users.test"))).collect();
        users.generate(&people, hash).await.map_err(|e| format!("users {next}..{batch_end}: {e}"))?;
        next = batch_end;
        if reported.elapsed().as_secs() >= 5 {
            eprintln!("{} of {} users", next - args.first, args.count);
            reported = Instant::now();
        }
    }
    Ok(args.count)
}
