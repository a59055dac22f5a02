//! `ledgerctl`: the ledger's command-line tool. `audit verify` checks a data directory
//! from nothing; `bench` runs TigerBeetle's canonical workload in process against the
//! embedded store.

// First: its `outln!` is used by every module after it.
#[macro_use]
mod present;

mod admin_cmd;
mod bench;
mod client;
mod echo;
mod errors;
mod fx_cmd;
mod gen_cmd;
mod heads_cmd;
mod http_client;
mod load;
mod load_payments;
mod load_sign_ins;
mod payments_cmd;
mod read_models_cmd;
mod reads;
mod secret;
mod statement_cmd;
mod users_cmd;
mod wait;

/// mimalloc: the gRPC path allocates per request from several threads, where glibc's
/// allocator spends a measurable share of the CPU (see the commit that added it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ledger_core::chain::to_hex;
use ledger_core::money::format_amount;
use ledger_engine::audit;

#[derive(Parser)]
#[command(
    name = "ledgerctl",
    version,
    about = "Ledger client, auditor and benchmark",
    after_help = "Exit status: 0 done; 1 failed (refused by the server, a payment failed or was cancelled, \
                  not found); 2 usage error; 3 a payment still pending after --wait-secs; 4 a payment held \
                  for review. A closed standard output (`ledgerctl … | head`) ends the program quietly with 0."
)]
struct Cli {
    #[command(flatten)]
    connection: client::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Audit a data directory.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Durable transfers per second in process against the embedded store.
    Bench(bench::BenchArgs),
    /// Open, freeze, unfreeze, close or look up accounts.
    Accounts {
        #[command(subcommand)]
        command: client::AccountsCommand,
    },
    /// Create, post, void or look up transfers.
    Transfers {
        /// Send create, post and void through CreateTransfersPacked (binary records).
        #[arg(long, global = true)]
        packed: bool,
        #[command(subcommand)]
        command: client::TransfersCommand,
    },
    /// An account's or an owner's movements (default: your wallets'), newest first.
    History(reads::HistoryArgs),
    /// Posted totals per day over a period (table, --csv or --json; default: your wallets).
    Report(reads::ReportArgs),
    /// Rebuild, catch up or inspect the read models of a stopped server's data directory.
    Projections {
        #[command(subcommand)]
        command: read_models_cmd::ProjectionsCommand,
    },
    /// An account's balances (default: each of your wallets), now or --as-of a time.
    Balance(reads::BalanceArgs),
    /// Committed events of the log from a position.
    Events(client::EventsArgs),
    /// Drive a running server with many concurrent clients: ledger transfers, or with
    /// --payments wallet-to-wallet payments between users.
    Load(load::LoadArgs),
    /// The users API: signup, login, logout, profile, password, totp, instruments,
    /// sessions, security-events, wallets, delete-user.
    #[command(flatten)]
    Users(users_cmd::UsersCommand),
    /// Exchange rates, quotes, conversions and the platform's FX position.
    Fx {
        #[command(subcommand)]
        command: fx_cmd::FxCommand,
    },
    /// The payments API: pay, request, answer, topup, withdraw, payments, refund, review.
    #[command(flatten)]
    Payments(payments_cmd::PaymentsCommand),
    /// Admin and support views: users, one user, ledger accounts, the review queue.
    Admin {
        #[command(subcommand)]
        command: admin_cmd::AdminCommand,
    },
    /// Your monthly statement per wallet (table, csv, json or a self-contained html page).
    Statement(statement_cmd::StatementArgs),
    /// Test data for scale tests, written offline into a stopped server's data directory.
    Gen {
        #[command(subcommand)]
        command: gen_cmd::GenCommand,
    },
    /// Serve the do-nothing echo service (the transport baseline for `load --target echo`).
    EchoServer {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:50052")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Replays every stream and checks every checksum, hash link and invariant;
    /// exits 0 only if everything holds.
    Verify {
        /// The server's data directory (holding log/ and snapshots/).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Audit an EventStoreDB/KurrentDB log instead, through the same verifier:
        /// a connection string such as "kurrentdb://host:2113?tls=false".
        #[arg(long)]
        store: Option<String>,
        /// Also check the log against signed chain heads saved earlier with
        /// `audit heads` (a rewrite of history fails at the first signed head after it).
        #[arg(long)]
        heads: Option<PathBuf>,
        /// The public key (64 hex digits) the saved heads must be signed with; without
        /// it, the key of the first saved signature, which is printed.
        #[arg(long, requires = "heads")]
        public_key: Option<String>,
    },
    /// Save the server's signed chain heads to a file, appending those not yet in it:
    /// run it regularly and keep the file apart from the server.
    Heads {
        /// The file of saved heads (JSON lines).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    ledger_engine::allocator_settings();
    ledger_proto::transport::tls_provider();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let connection = cli.connection;
    let remote = match cli.command {
        Command::Audit { command: AuditCommand::Verify { data_dir, store, heads, public_key } } => {
            let heads = heads.as_deref().map(|file| (file, public_key.as_deref()));
            return audit_verify(&data_dir, store.as_deref(), heads, connection.json);
        }
        Command::Bench(args) => return bench::run(args, connection.json),
        Command::Gen { command } => {
            return match gen_cmd::run(command, connection.json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(if error.starts_with("--") { present::EXIT_USAGE } else { present::EXIT_FAILED })
                }
            }
        }
        Command::Projections { command } => {
            return match read_models_cmd::run(command, connection.json) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(2)
                }
            }
        }
        remote => remote,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    errors::set_context(&connection.url(), connection.token().ok().as_deref());
    let result: Result<u8, String> = runtime.block_on(async {
        let done = match remote {
            Command::Accounts { command } => client::accounts(&connection, command).await,
            Command::Transfers { packed, command } => client::transfers(&connection, command, packed).await,
            Command::History(args) => reads::history(&connection, args).await,
            Command::Report(args) => reads::report(&connection, args).await,
            Command::Balance(args) => reads::balance(&connection, args).await,
            Command::Events(args) => client::events(&connection, args).await,
            Command::Load(args) => load::run(&connection, args).await,
            Command::Users(command) => users_cmd::run(&connection, command).await,
            Command::Payments(command) => return payments_cmd::run(&connection, command).await,
            Command::Fx { command } => fx_cmd::run(&connection, command).await,
            Command::Admin { command } => admin_cmd::run(&connection, command).await,
            Command::Statement(args) => statement_cmd::run(&connection, args).await,
            Command::EchoServer { listen } => echo::run(listen).await.map(|()| true),
            Command::Audit { command: AuditCommand::Heads { out } } => heads_cmd::save(&connection, &out).await,
            Command::Audit { .. } | Command::Bench(_) | Command::Projections { .. } | Command::Gen { .. } => Ok(true),
        };
        done.map(|ok| if ok { 0 } else { present::EXIT_FAILED })
    });
    match result {
        Ok(status) => ExitCode::from(status),
        Err(error) => {
            eprintln!("error: {error}");
            // A message that starts with a flag is about what was typed.
            ExitCode::from(if error.starts_with("--") { present::EXIT_USAGE } else { present::EXIT_FAILED })
        }
    }
}

/// The audit of a data directory's log, or of the log behind a `--store` connection
/// string (the same replay; the chain recomputed from what the store returns).
fn audit_run(
    data_dir: &std::path::Path,
    store: Option<&str>,
) -> Result<audit::AuditReport, Result<audit::AuditFailure, String>> {
    if let Some(spec) = store {
        #[cfg(feature = "kurrentdb")]
        if ledger_engine::store::kurrent::is_kurrent(spec) {
            let store = ledger_engine::store::kurrent::KurrentStore::connect(spec).map_err(|e| Err(e.to_string()))?;
            return audit::verify_store(&store).map_err(Ok);
        }
        return Err(Err(format!("--store {spec:?}: expected kurrentdb://… or esdb://…")));
    }
    let (log_dir, snapshot_dir) = audit::data_dir_layout(data_dir);
    if !log_dir.is_dir() {
        return Err(Err(format!("{} has no log/ directory: not a ledger data directory", data_dir.display())));
    }
    audit::verify(&log_dir, Some(&snapshot_dir)).map_err(Ok)
}

/// The saved signed heads in `file` checked against the audited log: the number of heads
/// checked and the key they verify under.
fn heads_run(
    data_dir: &std::path::Path,
    store: Option<&str>,
    file: &std::path::Path,
    pinned: Option<&str>,
) -> Result<(usize, Option<String>), Result<String, String>> {
    let saved = heads_cmd::read_file(file).map_err(Err)?;
    if let Some(spec) = store {
        #[cfg(feature = "kurrentdb")]
        if ledger_engine::store::kurrent::is_kurrent(spec) {
            let store = ledger_engine::store::kurrent::KurrentStore::connect(spec).map_err(|e| Err(e.to_string()))?;
            return ledger_engine::heads::verify_log(&store, &saved, pinned).map_err(|e| Ok(e.to_string()));
        }
        return Err(Err(format!("--store {spec:?}: expected kurrentdb://… or esdb://…")));
    }
    let (log_dir, _) = audit::data_dir_layout(data_dir);
    ledger_engine::heads::verify_files(&log_dir, &saved, pinned).map_err(|e| Ok(e.to_string()))
}

/// A successful audit's report, as text or one JSON object.
fn print_report(report: &audit::AuditReport, signed: Option<&(usize, Option<String>)>, json: bool) {
    if json {
        let totals: serde_json::Map<String, serde_json::Value> = report
            .totals
            .iter()
            .map(|(currency, t)| {
                (
                    currency.code().to_string(),
                    serde_json::json!({
                        "debits_posted": t.debits_posted.to_string(),
                        "credits_posted": t.credits_posted.to_string(),
                        "debits_pending": t.debits_pending.to_string(),
                        "credits_pending": t.credits_pending.to_string(),
                    }),
                )
            })
            .collect();
        let heads: serde_json::Map<String, serde_json::Value> = report
            .heads
            .iter()
            .map(|(stream, (revision, hash))| {
                (stream.clone(), serde_json::json!({"revision": revision, "hash": to_hex(hash)}))
            })
            .collect();
        let out = serde_json::json!({
            "ok": true,
            "events_checked": report.events_checked,
            "streams": report.streams,
            "accounts": report.accounts,
            "transfers": report.transfers,
            "totals": totals,
            "heads": heads,
            "signed_heads_checked": signed.map(|s| s.0),
            "signed_heads_key": signed.and_then(|s| s.1.clone()),
        });
        outln!("{out}");
    } else {
        outln!(
            "OK: {} events checked in {} streams; {} accounts, {} transfers",
            report.events_checked,
            report.streams,
            report.accounts,
            report.transfers
        );
        for (currency, t) in &report.totals {
            outln!(
                "  {currency}: debits posted {} = credits posted {}; pending {} = {}",
                format_amount(t.debits_posted, *currency),
                format_amount(t.credits_posted, *currency),
                format_amount(t.debits_pending, *currency),
                format_amount(t.credits_pending, *currency)
            );
        }
        for (stream, (revision, hash)) in &report.heads {
            outln!("  head {stream} revision {revision} hash {}", to_hex(hash));
        }
        if let Some((checked, key)) = signed {
            let key = key.as_deref().unwrap_or("(no signature saved)");
            outln!("  {checked} signed heads match the log (signed by key {key})");
        }
    }
}

fn audit_verify(
    data_dir: &std::path::Path,
    store: Option<&str>,
    heads: Option<(&std::path::Path, Option<&str>)>,
    json: bool,
) -> ExitCode {
    let result = match audit_run(data_dir, store) {
        Ok(report) => Ok(report),
        Err(Ok(failure)) => Err(failure),
        Err(Err(error)) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let signed = match (&result, heads) {
        (Ok(_), Some((file, pinned))) => match heads_run(data_dir, store, file, pinned) {
            Ok(checked) => Some(checked),
            Err(Ok(failure)) => {
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({"ok": false, "error": failure, "heads": file.display().to_string()})
                    );
                } else {
                    outln!("FAILED against the signed heads in {}: {failure}", file.display());
                }
                return ExitCode::from(1);
            }
            Err(Err(error)) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    match result {
        Ok(report) => {
            print_report(&report, signed.as_ref(), json);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            let place = failure.place();
            if json {
                let out = serde_json::json!({
                    "ok": false,
                    "error": failure.to_string(),
                    "stream": place.as_ref().map(|p| p.0.clone()),
                    "revision": place.as_ref().map(|p| p.1),
                });
                outln!("{out}");
            } else {
                outln!("FAILED: {failure}");
                if let Some((stream, revision)) = place {
                    outln!("first bad stream {stream} revision {revision}");
                }
            }
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command and flag says what it is for in `--help`.
    fn undocumented(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in command.get_subcommands() {
            let here = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() && sub.get_name() != "help" {
                missing.push(here.clone());
            }
            undocumented(sub, &here, missing);
        }
    }

    #[test]
    fn every_command_and_flag_has_help() {
        let command = super::Cli::command();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        undocumented(&command, "ledgerctl", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }
}
