//! `ledgerctl load --sign-ins --generated N`: signs in users made by `ledgerctl gen
//! users` (`gen-{n}@users.test`, n below N, at random), `--clients` at a time, through
//! `Users.Login`, and prints the rate and the latency of each sign-in. The password is
//! the one the users were generated with, read like every secret.
//!
//! Each sign-in looks the email up in the users' index, reads the user from their
//! stream when they are not in memory (random users of a large set almost never are),
//! checks the argon2id hash and appends the new session: what a person signing in
//! waits for. The server hashes `PASSWORD_HASHES_CONCURRENT_MAX` passwords at once, so
//! more clients than that measure its queue as well.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use ledger_proto::api::v1 as wire;

use crate::client::{status_text, Connection};
use crate::load_payments::{Histogram, Random, RunShape};

#[derive(Args)]
#[command(next_help_heading = "Sign-in load (--sign-ins)")]
pub struct SignInLoadArgs {
    /// Sign in generated users (see `ledgerctl gen users`) instead of sending transfers.
    #[arg(long, conflicts_with = "payments")]
    pub sign_ins: bool,
    /// How many users were generated: emails gen-0@users.test up to gen-(N-1)@users.test.
    #[arg(long, default_value_t = 1_000_000, requires = "sign_ins")]
    pub generated: u64,
    /// The first generated user's number (`--first` of `gen users`).
    #[arg(long, default_value_t = 0, requires = "sign_ins")]
    pub generated_first: u64,
    /// Seed of the random choice of users.
    #[arg(long, default_value_t = 1, requires = "sign_ins")]
    pub sign_in_seed: u64,
}

/// Most concurrent clients.
const CLIENTS_MAX: usize = 1_024;

struct Tally {
    latencies: Histogram,
    ok: u64,
    failed: u64,
    first_failure: Option<String>,
}

pub async fn run(connection: &Connection, args: &SignInLoadArgs, shape: RunShape) -> Result<bool, String> {
    if shape.clients == 0 || shape.clients > CLIENTS_MAX || shape.connections == 0 || args.generated == 0 {
        return Err(format!("need 1 to {CLIENTS_MAX} --clients, --connections >= 1 and --generated >= 1"));
    }
    let password = Arc::new(crate::secret::Secrets::new().read("the generated users' password")?);
    let mut channels = Vec::new();
    for _ in 0..shape.connections.min(shape.clients) {
        channels.push(connection.channel().await?);
    }
    let budget = shape.budget();
    let mut tasks = Vec::new();
    for client in 0..shape.clients {
        let mut users = wire::users_client::UsersClient::new(channels[client % channels.len()].clone());
        let (password, budget) = (password.clone(), budget.clone());
        let (generated, first) = (args.generated, args.generated_first);
        let mut random = Random::new(args.sign_in_seed.wrapping_mul(1_000_003).wrapping_add(client as u64));
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally { latencies: Histogram::new(), ok: 0, failed: 0, first_failure: None };
            while budget.go_on() {
                let email = format!("gen-{}@users.test", first + random.next() % generated);
                let login = wire::LoginRequest { email, password: password.to_string(), ..Default::default() };
                let begun = Instant::now();
                match users.login(login).await {
                    Ok(_) => {
                        tally.latencies.record(begun.elapsed());
                        tally.ok += 1;
                    }
                    Err(status) => {
                        tally.failed += 1;
                        tally.first_failure.get_or_insert_with(|| status_text(status));
                    }
                }
            }
            tally
        }));
    }
    let mut all = Tally { latencies: Histogram::new(), ok: 0, failed: 0, first_failure: None };
    for task in tasks {
        let tally = task.await.map_err(|e| e.to_string())?;
        all.latencies.merge(&tally.latencies);
        all.ok += tally.ok;
        all.failed += tally.failed;
        all.first_failure = all.first_failure.or(tally.first_failure);
    }
    report(connection.json, &shape, &all, budget.started.elapsed());
    Ok(all.failed == 0)
}

fn report(json: bool, shape: &RunShape, tally: &Tally, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    let per_sec = tally.ok as f64 / seconds.max(1e-9);
    let (p50, p99, p999) = tally.latencies.p50_p99_p999_ms();
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "clients": shape.clients, "duration_s": (seconds * 1e3).round() / 1e3,
                "sign_ins_per_sec": per_sec.round(), "p50_ms": p50, "p99_ms": p99, "p999_ms": p999,
                "ok": tally.ok, "failed": tally.failed, "first_failure": tally.first_failure,
            })
        );
        return;
    }
    outln!("{} sign-ins, {} failed, in {seconds:.2} s: {} clients", tally.ok, tally.failed, shape.clients);
    outln!("throughput: {per_sec:.0} sign-ins/s");
    outln!("sign-in: p50 {p50:.2} ms, p99 {p99:.2} ms, p999 {p999:.2} ms");
    if let Some(failure) = &tally.first_failure {
        outln!("first failure: {failure}");
    }
}
