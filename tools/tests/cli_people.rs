//! `ledgerctl` as people meet it, against a running server: which token wins, a closed
//! pipe, errors with hints, amounts and dates as people write them, the signed-in user's
//! own wallets by default, and payments that wait for their outcome.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{free_port, InProcessServer, TOKEN};

/// What a run of `ledgerctl` gave: its exit status, standard output and error.
struct Run {
    status: Option<i32>,
    out: String,
    err: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.status == Some(0)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status {:?}\nstdout:\n{}\nstderr:\n{}", self.status, self.out, self.err)
    }
}

/// `ledgerctl` with only the environment given (no inherited LEDGER_* variables).
fn ledgerctl(env: &[(&str, &str)], args: &[&str], stdin: &str) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledgerctl"));
    for name in ["LEDGER_ADDR", "LEDGER_TOKEN", "LEDGER_TOKEN_FILE"] {
        command.env_remove(name);
    }
    let mut child = command
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ledgerctl");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    Run {
        status: output.status.code(),
        out: String::from_utf8_lossy(&output.stdout).into_owned(),
        err: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(run.out.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// A user with a session token and 20.00 USD in their wallet, topped up from a card.
fn user_with_money(addr: &str, email: &str) -> String {
    let password = "heliotrope-ferry-2031";
    let run = ledgerctl(&[], &["--addr", addr, "signup", "--name", "Ada", "--email", email], &format!("{password}\n"));
    assert!(run.ok(), "{run:?}");
    let run = ledgerctl(&[], &["--addr", addr, "login", "--email", email], &format!("{password}\n"));
    assert!(run.ok(), "{run:?}");
    let token = run.out.trim().to_string();
    let card = ["--addr", addr, "--json", "instruments", "add-card", "--exp-month", "8", "--exp-year", "2031"];
    let run = ledgerctl(&[("LEDGER_TOKEN", &token)], &card, "4242424242424242\n123\n");
    assert!(run.ok(), "{run:?}");
    let card_id = json(&run)["instruments"][0]["instrument_id"].as_str().expect("card id").to_string();
    let topup = ["--addr", addr, "topup", "--amount", "20", "--currency", "USD", "--instrument", &card_id];
    let run = ledgerctl(&[("LEDGER_TOKEN", &token)], &topup, "");
    assert!(run.ok() && run.out.contains("completed: 20.00 USD into your wallet"), "{run:?}");
    token
}

fn admin_token_file(dir: &Path) -> String {
    let path = dir.join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("token file");
    path.display().to_string()
}

#[test]
fn an_explicit_token_flag_wins_over_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcessServer::start(dir.path());
    let addr = server.listen.to_string();
    let admin = admin_token_file(dir.path());
    let session = user_with_money(&addr, "ada@example.com");
    let signed_in = [("LEDGER_TOKEN", session.as_str())];
    let friend = ledgerctl(
        &[],
        &["--addr", &addr, "signup", "--name", "B", "--email", "b@example.com"],
        "pw-long-enough-2031\n",
    );
    assert!(friend.ok(), "{friend:?}");

    // The README's flow: a session exported, then an admin command with --token-file.
    let pay = ["--addr", &addr, "--token-file", &admin, "pay", "--to-email", "b@example.com", "--amount", "5"];
    let run = ledgerctl(&signed_in, &[&pay[..], &["--currency", "USD"]].concat(), "");
    assert_eq!(run.status, Some(1), "the admin token is used, and an admin does not pay: {run:?}");
    assert!(run.err.contains("acts as a signed-in user") && run.err.contains("ledgerctl login"), "{run:?}");
    let run = ledgerctl(&signed_in, &["--addr", &addr, "wallets"], "");
    assert!(run.ok() && run.out.contains("20.00 USD"), "nothing left the user's wallet: {run:?}");

    let create = ["--addr", &addr, "--token-file", &admin, "accounts", "create", "--id", "1", "--currency", "USD"];
    let run = ledgerctl(&signed_in, &create, "");
    assert!(run.ok() && run.out.contains("CREATED"), "an admin call with the session exported: {run:?}");
    let run = ledgerctl(&[("LEDGER_TOKEN", TOKEN)], &["--addr", &addr, "--token", &session, "wallets"], "");
    assert!(run.ok() && run.out.contains("20.00 USD"), "--token wins over LEDGER_TOKEN too: {run:?}");
    let run = ledgerctl(&[("LEDGER_TOKEN_FILE", &admin)], &["--addr", &addr, "accounts", "get", "1"], "");
    assert!(run.ok() && run.out.contains("0.00 USD"), "LEDGER_TOKEN_FILE when no flag and no LEDGER_TOKEN: {run:?}");
    server.stop();
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcessServer::start(dir.path());
    let addr = server.listen.to_string();
    // Far more than a pipe holds: ledgerctl is still writing when the reader goes.
    let ids: Vec<String> = (1_000_000..1_004_000).map(|id| id.to_string()).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerctl"))
        .args(["--addr", &addr, "--token", TOKEN, "accounts", "get"])
        .args(&ids)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ledgerctl");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).expect("the first bytes");
    drop(stdout); // `| head -c 64`
    let output = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert_eq!(output.status.code(), Some(0), "the reader asked for no more: {err}");
    server.stop();
}

#[test]
fn errors_say_what_to_do() {
    // No server: the hint says how to start one. host:port without a scheme is taken.
    let nobody: SocketAddr = free_port();
    let run = ledgerctl(&[], &["--addr", &nobody.to_string(), "--token", TOKEN, "accounts", "get", "1"], "");
    assert_eq!(run.status, Some(1), "{run:?}");
    let expected = format!("cannot reach ledgerd at http://{nobody}");
    assert!(run.err.contains(&expected) && run.err.contains("is it running?"), "{run:?}");
    assert!(run.err.contains("cargo run --release --bin ledgerd") && !run.err.contains("panicked"), "{run:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcessServer::start(dir.path());
    let addr = server.listen.to_string();
    let session = user_with_money(&addr, "ada@example.com");
    let run = ledgerctl(&[], &["--addr", &addr, "--token", TOKEN, "accounts", "get", "1"], "");
    assert!(run.out.contains("not found"), "host:port reaches the server: {run:?}");

    let run = ledgerctl(&[], &["--addr", &addr, "accounts", "get", "1"], "");
    assert!(run.status == Some(1) && run.err.contains("needs a token"), "no token at all: {run:?}");
    let create = ["--addr", &addr, "--token", &session, "accounts", "create", "--id", "1", "--currency", "USD"];
    let run = ledgerctl(&[], &create, "");
    assert!(run.err.contains("needs an admin token") && run.err.contains("--token-file data/admin.token"), "{run:?}");
    let run = ledgerctl(&[], &["--addr", &addr, "--token", TOKEN, "profile", "show"], "");
    assert!(run.err.contains("acts as a signed-in user") && run.err.contains("ledgerctl login"), "{run:?}");
    let run = ledgerctl(&[], &["--addr", &addr, "--token", "not-a-token-of-this-server", "accounts", "get", "1"], "");
    assert!(run.err.contains("does not know this token"), "{run:?}");

    // Usage errors name the flag and exit 2, and nothing is sent.
    let pay = ["--addr", &addr, "--token", &session, "pay", "--to-email", "x@example.com", "--currency", "USD"];
    let run = ledgerctl(&[], &[&pay[..], &["--minor", "--amount", "2.50"]].concat(), "");
    assert!(run.status == Some(2) && run.err.contains("--amount \"2.50\""), "{run:?}");
    let run = ledgerctl(&[], &["--addr", &addr, "--token", &session, "balance", "--as-of", "tomorrow"], "");
    assert!(run.status == Some(2) && run.err.contains("--as-of tomorrow: expected YYYY-MM-DD"), "{run:?}");
    let run = ledgerctl(&[], &[&pay[..], &["--amount", "2.505"]].concat(), "");
    assert!(
        run.status == Some(1) && run.err.contains("invalid input: --amount"),
        "the server's field as a flag: {run:?}"
    );

    let run = ledgerctl(&[], &["--addr", &addr, "--token", &session, "logout"], "");
    assert!(run.ok(), "{run:?}");
    let run = ledgerctl(&[], &["--addr", &addr, "--token", &session, "wallets"], "");
    assert!(run.err.contains("your session has ended: sign in again with `ledgerctl login`"), "{run:?}");
    server.stop();
}

#[test]
fn amounts_and_dates_as_people_write_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcessServer::start(dir.path());
    let addr = server.listen.to_string();
    let admin = ["--addr", &addr, "--token", TOKEN];
    for id in ["1", "2"] {
        let run = ledgerctl(&[], &[&admin[..], &["accounts", "create", "--id", id, "--currency", "USD"]].concat(), "");
        assert!(run.ok(), "{run:?}");
    }
    let transfer = ["transfers", "create", "--id", "10", "--debit", "1", "--credit", "2", "--currency", "USD"];
    let run = ledgerctl(&[], &[&admin[..], &transfer[..], &["--amount", "2.50"]].concat(), "");
    assert!(run.ok(), "{run:?}");
    let run = ledgerctl(&[], &[&admin[..], &["transfers", "get", "10"]].concat(), "");
    assert!(run.ok() && run.out.contains("2.50 USD"), "{run:?}");
    let run = ledgerctl(&[], &[&admin[..], &["--minor", "transfers", "get", "10"]].concat(), "");
    assert!(run.ok() && run.out.contains(" 250 USD"), "{run:?}");
    let run = ledgerctl(&[], &[&admin[..], &["--json", "transfers", "get", "10"]].concat(), "");
    let transfer = &json(&run)["transfers"][0];
    assert_eq!((transfer["amount"].as_str(), transfer["amount_minor"].as_str()), (Some("2.50"), Some("250")));

    // A partial post reads --amount in the pending transfer's currency.
    let hold = ["transfers", "create", "--id", "11", "--debit", "1", "--credit", "2", "--currency", "USD", "--pending"];
    let run = ledgerctl(&[], &[&admin[..], &hold[..], &["--amount", "5"]].concat(), "");
    assert!(run.ok(), "{run:?}");
    let post = ["transfers", "post", "--id", "12", "--pending-id", "11", "--amount", "1.25"];
    let run = ledgerctl(&[], &[&admin[..], &post[..]].concat(), "");
    assert!(run.ok(), "{run:?}");
    let run = ledgerctl(&[], &[&admin[..], &["accounts", "get", "2"]].concat(), "");
    assert!(run.ok() && run.out.contains("3.75 USD"), "2.50 + 1.25 posted: {run:?}");

    let run = ledgerctl(&[], &[&admin[..], &["history", "--account", "2"]].concat(), "");
    assert!(run.ok() && run.out.contains("2.50 USD") && !run.out.contains("TIMESTAMP_NS"), "{run:?}");
    // Times in RFC 3339 at the chosen offset: "…T…+05:30".
    let run = ledgerctl(&[], &[&admin[..], &["--utc-offset", "+05:30", "history", "--account", "2"]].concat(), "");
    let row = run.out.lines().nth(1).unwrap_or("");
    assert!(row.split_whitespace().next().is_some_and(|t| t.contains('T') && t.ends_with("+05:30")), "{run:?}");
    let run = ledgerctl(&[], &[&admin[..], &["history", "--account", "2", "--to", "2000-01-01"]].concat(), "");
    assert!(run.ok() && run.out.lines().count() == 1, "nothing before 2000: {run:?}");
    let run =
        ledgerctl(&[], &[&admin[..], &["balance", "--account", "2", "--as-of", "2100-01-01T00:00Z"]].concat(), "");
    assert!(run.ok() && run.out.contains("balance 3.75 USD") && run.out.contains("2100-01-01T00:00:00Z"), "{run:?}");
    server.stop();
}

#[test]
fn a_signed_in_user_reads_their_own_wallets_and_payments_wait_for_their_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcessServer::start(dir.path());
    let addr = server.listen.to_string();
    let session = user_with_money(&addr, "ada@example.com");
    let friend = ledgerctl(
        &[],
        &["--addr", &addr, "signup", "--name", "B", "--email", "b@example.com"],
        "pw-long-enough-2031\n",
    );
    assert!(friend.ok(), "{friend:?}");
    let friend = ledgerctl(&[], &["--addr", &addr, "login", "--email", "b@example.com"], "pw-long-enough-2031\n");
    assert!(friend.ok(), "{friend:?}");
    let me = [("LEDGER_TOKEN", session.as_str())];
    let at = ["--addr", addr.as_str()];

    let run = ledgerctl(&me, &[&at[..], &["--json", "history"]].concat(), "");
    assert!(run.ok(), "{run:?}");
    let movement = &json(&run)["movements"][0];
    assert_eq!((movement["amount"].as_str(), movement["amount_minor"].as_str()), (Some("20.00"), Some("2000")));
    let run = ledgerctl(&me, &[&at[..], &["balance"]].concat(), "");
    assert!(run.ok() && run.out.contains("balance 20.00 USD"), "{run:?}");
    let run = ledgerctl(&me, &[&at[..], &["balance", "--as-of", "2020-01-01"]].concat(), "");
    assert!(run.ok() && run.out.contains("balance 0.00 USD"), "nothing then: {run:?}");
    let (from, to) = around_today();
    let run = ledgerctl(&me, &[&at[..], &["report", "--from", &from, "--to", &to]].concat(), "");
    assert!(run.ok() && run.out.contains("20.00 USD"), "{run:?}");

    // A payment waits for its outcome; the key it made up is printed for a retry.
    let pay = ["pay", "--to-email", "b@example.com", "--amount", "12.50", "--currency", "USD"];
    let run = ledgerctl(&me, &[&at[..], &pay[..]].concat(), "");
    assert!(run.ok() && run.out.contains("completed: 12.50 USD to B <b@example.com>"), "{run:?}");
    let key = run.err.split_whitespace().skip_while(|w| *w != "--key").nth(1).expect("the key on stderr").to_string();
    assert_eq!(key.len(), 32, "128 bits in hex: {run:?}");
    let first = run.out.clone();
    let run = ledgerctl(&me, &[&at[..], &pay[..], &["--key", &key]].concat(), "");
    assert!(run.ok() && run.out == first, "the same key is the same payment: {run:?}");
    let run = ledgerctl(&me, &[&at[..], &["wallets"]].concat(), "");
    assert!(run.ok() && run.out.contains("7.50 USD"), "paid once: {run:?}");

    let run = ledgerctl(
        &me,
        &[&at[..], &["pay", "--to-email", "b@example.com", "--amount", "100", "--currency", "USD"]].concat(),
        "",
    );
    assert_eq!(run.status, Some(1), "{run:?}");
    assert!(run.out.contains("failed: 100.00 USD to B <b@example.com>: insufficient funds"), "{run:?}");
    let run = ledgerctl(
        &me,
        &[
            &at[..],
            &["--json", "pay", "--no-wait", "--to-email", "b@example.com", "--amount", "1", "--currency", "USD"],
        ]
        .concat(),
        "",
    );
    assert!(run.ok() && json(&run)["outcome"].is_null() && json(&run)["payment_id"].is_string(), "{run:?}");

    // Over 500.00 from a card added today: the risk checks hold it for review (exit 4).
    let run = ledgerctl(&me, &[&at[..], &["--json", "instruments", "list"]].concat(), "");
    let card = json(&run)["instruments"][0]["instrument_id"].as_str().expect("card").to_string();
    let topup = ["topup", "--amount", "600", "--currency", "USD", "--instrument", &card];
    let run = ledgerctl(&me, &[&at[..], &topup[..]].concat(), "");
    assert_eq!(run.status, Some(4), "{run:?}");
    assert!(run.out.starts_with("in review: 600.00 USD into your wallet is held for a risk review"), "{run:?}");

    // A request waits until it is delivered; the payer declines it: what they asked for.
    let request = ["request", "--from-email", "b@example.com", "--amount", "7", "--currency", "USD"];
    let run = ledgerctl(&me, &[&at[..], &["--json"], &request[..]].concat(), "");
    assert!(run.ok() && json(&run)["outcome"] == "requested", "{run:?}");
    let id = json(&run)["payment_id"].as_str().expect("payment id").to_string();
    let run = ledgerctl(&[], &[&at[..], &["--token", friend.out.trim(), "answer", &id, "--decline"]].concat(), "");
    assert!(run.ok() && run.out.starts_with("declined: 7.00 USD"), "{run:?}");
    server.stop();
}

/// Yesterday and the day after tomorrow (UTC), as dates.
fn around_today() -> (String, String) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let date = |days: u64| {
        let (year, month, day) = ledger_core::calendar::civil_from_days(days as i64);
        format!("{year:04}-{month:02}-{day:02}")
    };
    (date(now / 86_400 - 1), date(now / 86_400 + 2))
}
