//! `ledgerctl` commands that call a running `ledgerd` over gRPC.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use ledger_proto::api::v1 as wire;
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Request;

use ledger_api::server::{CONNECTION_WINDOW_BYTES, MESSAGE_BYTES_MAX, STREAM_WINDOW_BYTES};

#[derive(Args, Clone)]
pub struct Connection {
    /// Server address.
    #[arg(long, env = "LEDGER_ADDR", default_value = "http://127.0.0.1:50051", global = true)]
    pub addr: String,
    /// Bearer token.
    #[arg(long, env = "LEDGER_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token (for example <data-dir>/admin.token).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum AccountsCommand {
    /// Open an account.
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        currency: String,
        #[arg(long, default_value_t = 0)]
        code: u32,
        /// 1: debits must not exceed credits (no overdraft); 2: credits must not exceed debits.
        #[arg(long, default_value_t = 0)]
        flags: u32,
        #[arg(long, default_value = "")]
        owner: String,
    },
    Freeze {
        id: String,
    },
    Unfreeze {
        id: String,
    },
    Close {
        id: String,
    },
    /// Look accounts up.
    Get {
        ids: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum TransfersCommand {
    /// Create a posted (or, with --pending, a pending) transfer.
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        debit: String,
        #[arg(long)]
        credit: String,
        /// Minor units.
        #[arg(long)]
        amount: String,
        #[arg(long)]
        currency: String,
        #[arg(long, default_value_t = 0)]
        code: u32,
        #[arg(long, default_value = "")]
        metadata: String,
        #[arg(long)]
        pending: bool,
        /// Pending only: expire after this many nanoseconds (0: never).
        #[arg(long, default_value_t = 0)]
        timeout_ns: u64,
    },
    /// Post a pending transfer (all of it unless --amount).
    Post {
        #[arg(long)]
        id: String,
        #[arg(long)]
        pending_id: String,
        #[arg(long, default_value = "")]
        amount: String,
    },
    /// Void a pending transfer.
    Void {
        #[arg(long)]
        id: String,
        #[arg(long)]
        pending_id: String,
    },
    /// Look transfers up.
    Get { ids: Vec<String> },
}

#[derive(Args)]
pub struct HistoryArgs {
    #[arg(long)]
    account: String,
    #[arg(long, default_value_t = 0)]
    from_ns: u64,
    #[arg(long, default_value_t = 0)]
    to_ns: u64,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long, default_value = "")]
    cursor: String,
}

#[derive(Args)]
pub struct BalanceArgs {
    #[arg(long)]
    account: String,
    /// Nanoseconds since the Unix epoch; 0 is now.
    #[arg(long, default_value_t = 0)]
    as_of_ns: u64,
}

#[derive(Args)]
pub struct EventsArgs {
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Keep following new events.
    #[arg(long)]
    follow: bool,
}

pub type Client = wire::ledger_client::LedgerClient<Channel>;

impl Connection {
    pub fn token(&self) -> Result<String, String> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path).map_err(|e| format!("token file {}: {e}", path.display()))?;
            return Ok(token.trim().to_string());
        }
        Err("no token: give --token, --token-file or LEDGER_TOKEN".into())
    }

    pub async fn connect(&self) -> Result<Client, String> {
        Ok(wire::ledger_client::LedgerClient::new(self.channel().await?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX))
    }

    /// A new HTTP/2 connection to `--addr`, with Nagle off and the server's window sizes.
    pub async fn channel(&self) -> Result<Channel, String> {
        Channel::from_shared(self.addr.clone())
            .map_err(|e| format!("--addr {}: {e}", self.addr))?
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))
    }

    pub fn request<T>(&self, message: T) -> Result<Request<T>, String> {
        let mut request = Request::new(message);
        let value: MetadataValue<_> =
            format!("Bearer {}", self.token()?).parse().map_err(|_| "token is not valid header text".to_string())?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

fn status_text(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn print_results(results: &[wire::ItemResult], json: bool) -> bool {
    let ok = results.iter().all(|r| r.ok);
    if json {
        let items: Vec<_> = results
            .iter()
            .map(|r| json!({"index": r.index, "code": r.code, "ok": r.ok, "timestamp_ns": r.timestamp_ns, "message": r.message}))
            .collect();
        println!("{}", json!({ "results": items }));
    } else {
        println!("{:<6} {:<40} {:<20}", "INDEX", "RESULT", "TIMESTAMP_NS");
        for r in results {
            println!("{:<6} {:<40} {:<20}", r.index, r.code, r.timestamp_ns);
        }
    }
    ok
}

fn account_json(a: &wire::Account) -> serde_json::Value {
    json!({
        "id": a.id, "currency": a.currency, "code": a.code, "flags": a.flags, "owner_id": a.owner_id,
        "state": wire::AccountState::try_from(a.state).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
        "debits_pending": a.debits_pending, "debits_posted": a.debits_posted,
        "credits_pending": a.credits_pending, "credits_posted": a.credits_posted, "timestamp_ns": a.timestamp_ns,
    })
}

fn transfer_json(t: &wire::Transfer) -> serde_json::Value {
    json!({
        "id": t.id, "debit_account_id": t.debit_account_id, "credit_account_id": t.credit_account_id,
        "amount": t.amount, "currency": t.currency, "code": t.code, "metadata": t.metadata,
        "kind": wire::TransferKind::try_from(t.kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN"),
        "pending_id": t.pending_id, "timestamp_ns": t.timestamp_ns,
        "pending_status": wire::PendingStatus::try_from(t.pending_status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
        "expires_at_ns": t.expires_at_ns,
    })
}

pub async fn accounts(connection: &Connection, command: AccountsCommand) -> Result<bool, String> {
    use wire::account_command::Command;
    let mut client = connection.connect().await?;
    let command = match command {
        AccountsCommand::Create { id, currency, code, flags, owner } => {
            Command::Open(wire::NewAccount { id, currency, code, flags, owner_id: owner })
        }
        AccountsCommand::Freeze { id } => Command::Freeze(id),
        AccountsCommand::Unfreeze { id } => Command::Unfreeze(id),
        AccountsCommand::Close { id } => Command::Close(id),
        AccountsCommand::Get { ids } => {
            let response = client
                .lookup_accounts(connection.request(wire::LookupAccountsRequest { ids })?)
                .await
                .map_err(status_text)?
                .into_inner();
            if connection.json {
                let accounts: Vec<_> = response.accounts.iter().map(account_json).collect();
                println!("{}", json!({"accounts": accounts, "not_found": response.not_found}));
            } else {
                println!(
                    "{:<40} {:<4} {:<8} {:>16} {:>16} {:>16} {:>16}",
                    "ID", "CUR", "STATE", "DEBITS_PENDING", "DEBITS_POSTED", "CREDITS_PENDING", "CREDITS_POSTED"
                );
                for a in &response.accounts {
                    let state = wire::AccountState::try_from(a.state).map(|s| s.as_str_name()).unwrap_or("?");
                    let state = state.trim_start_matches("ACCOUNT_STATE_");
                    println!(
                        "{:<40} {:<4} {:<8} {:>16} {:>16} {:>16} {:>16}",
                        a.id, a.currency, state, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted
                    );
                }
                for id in &response.not_found {
                    println!("{id:<40} not found");
                }
            }
            return Ok(response.not_found.is_empty());
        }
    };
    let request = wire::CreateAccountsRequest { commands: vec![wire::AccountCommand { command: Some(command) }] };
    let response = client.create_accounts(connection.request(request)?).await.map_err(status_text)?.into_inner();
    Ok(print_results(&response.results, connection.json))
}

pub async fn transfers(connection: &Connection, command: TransfersCommand) -> Result<bool, String> {
    let mut client = connection.connect().await?;
    let transfer = match command {
        TransfersCommand::Create { id, debit, credit, amount, currency, code, metadata, pending, timeout_ns } => {
            let kind = if pending { wire::TransferKind::Pending } else { wire::TransferKind::Posted };
            wire::NewTransfer {
                id,
                debit_account_id: debit,
                credit_account_id: credit,
                amount,
                currency,
                code,
                metadata,
                kind: kind as i32,
                timeout_ns,
                ..Default::default()
            }
        }
        TransfersCommand::Post { id, pending_id, amount } => wire::NewTransfer {
            id,
            pending_id,
            amount,
            kind: wire::TransferKind::PostPending as i32,
            ..Default::default()
        },
        TransfersCommand::Void { id, pending_id } => {
            wire::NewTransfer { id, pending_id, kind: wire::TransferKind::VoidPending as i32, ..Default::default() }
        }
        TransfersCommand::Get { ids } => {
            let response = client
                .lookup_transfers(connection.request(wire::LookupTransfersRequest { ids })?)
                .await
                .map_err(status_text)?
                .into_inner();
            if connection.json {
                let transfers: Vec<_> = response.transfers.iter().map(transfer_json).collect();
                println!("{}", json!({"transfers": transfers, "not_found": response.not_found}));
            } else {
                println!("{:<40} {:<12} {:<24} {:<24} {:>14} {:<4}", "ID", "KIND", "DEBIT", "CREDIT", "AMOUNT", "CUR");
                for t in &response.transfers {
                    let kind = wire::TransferKind::try_from(t.kind).map(|k| k.as_str_name()).unwrap_or("?");
                    let kind = kind.trim_start_matches("TRANSFER_KIND_");
                    println!(
                        "{:<40} {:<12} {:<24} {:<24} {:>14} {:<4}",
                        t.id, kind, t.debit_account_id, t.credit_account_id, t.amount, t.currency
                    );
                }
                for id in &response.not_found {
                    println!("{id:<40} not found");
                }
            }
            return Ok(response.not_found.is_empty());
        }
    };
    let request = wire::CreateTransfersRequest { transfers: vec![transfer] };
    let response = client.create_transfers(connection.request(request)?).await.map_err(status_text)?.into_inner();
    Ok(print_results(&response.results, connection.json))
}

pub async fn history(connection: &Connection, args: HistoryArgs) -> Result<bool, String> {
    let mut client = connection.connect().await?;
    let request = wire::ListAccountTransfersRequest {
        account_id: args.account,
        from_ns: args.from_ns,
        to_ns: args.to_ns,
        limit: args.limit,
        cursor: args.cursor,
    };
    let response = client.list_account_transfers(connection.request(request)?).await.map_err(status_text)?.into_inner();
    if connection.json {
        let movements: Vec<_> = response
            .movements
            .iter()
            .map(|m| {
                json!({
                    "transfer_id": m.transfer_id, "event_type": m.event_type,
                    "direction": wire::Direction::try_from(m.direction).map(|d| d.as_str_name()).unwrap_or("?"),
                    "counterparty_account_id": m.counterparty_account_id, "amount": m.amount, "currency": m.currency,
                    "timestamp_ns": m.timestamp_ns, "metadata": m.metadata, "position": m.position,
                    "debits_posted": m.debits_posted, "credits_posted": m.credits_posted,
                    "debits_pending": m.debits_pending, "credits_pending": m.credits_pending,
                })
            })
            .collect();
        println!("{}", json!({"movements": movements, "next_cursor": response.next_cursor}));
    } else {
        println!(
            "{:<20} {:<16} {:<7} {:<24} {:>14} {:<4}",
            "TIMESTAMP_NS", "EVENT", "SIDE", "COUNTERPARTY", "AMOUNT", "CUR"
        );
        for m in &response.movements {
            let side = if m.direction == wire::Direction::Debit as i32 { "debit" } else { "credit" };
            println!(
                "{:<20} {:<16} {:<7} {:<24} {:>14} {:<4}",
                m.timestamp_ns, m.event_type, side, m.counterparty_account_id, m.amount, m.currency
            );
        }
        if !response.next_cursor.is_empty() {
            println!("more: --cursor {}", response.next_cursor);
        }
    }
    Ok(true)
}

pub async fn balance(connection: &Connection, args: BalanceArgs) -> Result<bool, String> {
    let mut client = connection.connect().await?;
    let request = wire::GetBalanceRequest { account_id: args.account, as_of_ns: args.as_of_ns };
    let b = client.get_balance(connection.request(request)?).await.map_err(status_text)?.into_inner();
    if connection.json {
        println!(
            "{}",
            json!({"account_id": b.account_id, "currency": b.currency, "as_of_ns": b.as_of_ns,
                "debits_pending": b.debits_pending, "debits_posted": b.debits_posted,
                "credits_pending": b.credits_pending, "credits_posted": b.credits_posted})
        );
    } else {
        println!(
            "account {} ({}) as of {}",
            b.account_id,
            b.currency,
            if b.as_of_ns == 0 { "now".to_string() } else { b.as_of_ns.to_string() }
        );
        println!("  debits  posted {:>20}  pending {:>20}", b.debits_posted, b.debits_pending);
        println!("  credits posted {:>20}  pending {:>20}", b.credits_posted, b.credits_pending);
    }
    Ok(true)
}

pub async fn events(connection: &Connection, args: EventsArgs) -> Result<bool, String> {
    let mut client = connection.connect().await?;
    let head = if args.follow { None } else { Some(()) };
    let mut stream = client
        .stream_events(connection.request(wire::StreamEventsRequest { from_position: args.from })?)
        .await
        .map_err(status_text)?
        .into_inner();
    loop {
        // Without --follow, stop once nothing more arrives for a moment.
        let next = match head {
            Some(()) => match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                Ok(next) => next,
                Err(_) => return Ok(true),
            },
            None => stream.message().await,
        };
        let Some(event) = next.map_err(status_text)? else { return Ok(true) };
        let hash: String = event.hash.iter().map(|b| format!("{b:02x}")).collect();
        if connection.json {
            let decoded = event.event.as_ref().map(|e| format!("{e:?}")).unwrap_or_default();
            println!(
                "{}",
                json!({"position": event.position, "stream": event.stream, "revision": event.revision,
                    "event_type": event.event_type, "hash": hash, "event": decoded})
            );
        } else {
            println!(
                "{:>10} {:<12} {:>8} {:<16} {}",
                event.position,
                event.stream,
                event.revision,
                event.event_type,
                &hash[..16]
            );
        }
    }
}

/// A progress line on stderr, only when it is a terminal.
pub fn progress(done: u64, total: Option<u64>, started: Instant) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
    match total {
        Some(total) => eprint!("\r{done}/{total} transfers, {rate:.0}/s   "),
        None => eprint!("\r{done} transfers, {rate:.0}/s   "),
    }
}
