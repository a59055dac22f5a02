//! `ledgerctl` commands that call a running `ledgerd` over gRPC.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use ledger_proto::api::v1 as wire;
use ledger_proto::packed::{TransferRecord, RECORD_BYTES, STATUS_ALREADY_EXISTS, STATUS_CREATED, STATUS_FAILED};
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Request;

use crate::errors;
use crate::present;
use ledger_core::money::Currency;
use ledger_proto::transport::{CONNECTION_WINDOW_BYTES, MESSAGE_BYTES_MAX, STREAM_WINDOW_BYTES};

/// The options every command takes: where the server is, who calls, and how output
/// looks. Flags win over the environment.
#[derive(Args, Clone)]
pub struct Connection {
    /// Server address: host:port or http(s)://host:port [env: LEDGER_ADDR].
    #[arg(long, env = "LEDGER_ADDR", default_value = "http://127.0.0.1:50051", global = true)]
    #[arg(help_heading = "Connection", hide_env = true)]
    pub addr: String,
    /// Bearer token: an admin token, or a user's session token from `ledgerctl login`
    /// [env: LEDGER_TOKEN, used only when neither --token nor --token-file is given].
    #[arg(long, global = true, conflicts_with = "token_file", help_heading = "Connection")]
    pub token: Option<String>,
    /// File holding the bearer token, e.g. data/admin.token [env: LEDGER_TOKEN_FILE].
    #[arg(long, global = true, help_heading = "Connection")]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of tables (amounts in major units; minor units in *_minor fields).
    #[arg(long, global = true, help_heading = "Output")]
    pub json: bool,
    /// Show and take amounts as integer minor units (84950 USD = 849.50 USD).
    #[arg(long, global = true, help_heading = "Output")]
    pub minor: bool,
    /// Times are shown, and dates without an offset read, at this UTC offset (+HH:MM,
    /// -HH:MM or Z); report days run midnight to midnight there.
    #[arg(long, global = true, default_value = "+00:00", allow_hyphen_values = true, help_heading = "Output")]
    pub utc_offset: String,
    /// Print only the id of what the command made (a user, an instrument, a payment, a
    /// quote), to keep it in a shell variable: PAYMENT=$(ledgerctl pay … -q).
    #[arg(short, long, global = true, help_heading = "Output")]
    pub quiet: bool,
}

#[derive(Subcommand)]
pub enum AccountsCommand {
    /// Open an account.
    Create {
        /// The new account's id (an unsigned 128-bit integer, decimal).
        #[arg(long)]
        id: String,
        /// Its currency, an ISO 4217 code such as USD.
        #[arg(long)]
        currency: String,
        /// A code of your chart of accounts (0 to 65535).
        #[arg(long, default_value_t = 0)]
        code: u32,
        /// 1: debits must not exceed credits (no overdraft); 2: credits must not exceed debits.
        #[arg(long, default_value_t = 0)]
        flags: u32,
        /// The owner's id (a user id), so that history and reports find it by owner.
        #[arg(long, default_value = "", hide_default_value = true)]
        owner: String,
    },
    /// Freeze an account: no transfer moves its money until it is unfrozen.
    Freeze {
        /// The account's id.
        id: String,
    },
    /// Unfreeze a frozen account.
    Unfreeze {
        /// The account's id.
        id: String,
    },
    /// Close an account for good (its balances must be zero).
    Close {
        /// The account's id.
        id: String,
    },
    /// Look accounts up: state and balances.
    Get {
        /// One or more account ids.
        ids: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum TransfersCommand {
    /// Create a posted (or, with --pending, a pending) transfer.
    Create {
        /// The transfer's id (an unsigned 128-bit integer): the same id again is a no-op.
        #[arg(long)]
        id: String,
        /// The account money leaves.
        #[arg(long)]
        debit: String,
        /// The account money goes to.
        #[arg(long)]
        credit: String,
        /// How much, in major units of --currency ("2.50"); an integer of minor units with --minor.
        #[arg(long)]
        amount: String,
        /// ISO 4217 code of both accounts' currency.
        #[arg(long)]
        currency: String,
        /// A code of your chart of transfers (0 to 65535).
        #[arg(long, default_value_t = 0)]
        code: u32,
        /// Free text kept with the transfer (at most 256 bytes).
        #[arg(long, default_value = "", hide_default_value = true)]
        metadata: String,
        /// Hold the money (a pending transfer) instead of moving it; post or void it later.
        #[arg(long)]
        pending: bool,
        /// Pending only: expire after this many nanoseconds (0: never).
        #[arg(long, default_value_t = 0)]
        timeout_ns: u64,
    },
    /// Post a pending transfer (all of it unless --amount).
    Post {
        /// The id of this posting transfer.
        #[arg(long)]
        id: String,
        /// The pending transfer to post.
        #[arg(long)]
        pending_id: String,
        /// Post only this much, in major units of the pending transfer's currency.
        #[arg(long, default_value = "", hide_default_value = true)]
        amount: String,
    },
    /// Void a pending transfer: the held money goes back.
    Void {
        /// The id of this voiding transfer.
        #[arg(long)]
        id: String,
        /// The pending transfer to void.
        #[arg(long)]
        pending_id: String,
    },
    /// Look transfers up.
    Get {
        /// One or more transfer ids.
        ids: Vec<String>,
    },
}

#[derive(Args)]
pub struct EventsArgs {
    /// The first log position to print.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Keep following new events.
    #[arg(long)]
    follow: bool,
}

pub type Client = wire::ledger_client::LedgerClient<Channel>;

/// Where the token comes from when no flag gives one.
const TOKEN_ENV: &str = "LEDGER_TOKEN";
const TOKEN_FILE_ENV: &str = "LEDGER_TOKEN_FILE";

impl Connection {
    /// The token, in this order: --token, --token-file, LEDGER_TOKEN, LEDGER_TOKEN_FILE.
    /// A flag always wins: `--token-file data/admin.token` acts as the admin even with a
    /// user's session exported in LEDGER_TOKEN.
    pub fn token(&self) -> Result<String, String> {
        let from_file = |flag: &str, path: &std::path::Path| -> Result<String, String> {
            let token = std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
            Ok(token.trim().to_string())
        };
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        if let Some(path) = &self.token_file {
            return from_file("--token-file", path);
        }
        if let Some(token) = std::env::var_os(TOKEN_ENV) {
            return token.into_string().map_err(|_| format!("{TOKEN_ENV} is not text"));
        }
        if let Some(path) = std::env::var_os(TOKEN_FILE_ENV) {
            return from_file(TOKEN_FILE_ENV, std::path::Path::new(&path));
        }
        Err("this command needs a token: --token-file data/admin.token (an admin), or a user's session \
             from `ledgerctl login` in --token or LEDGER_TOKEN"
            .into())
    }

    /// `--addr` with `http://` in front when it names no scheme (`127.0.0.1:50051`).
    pub fn url(&self) -> String {
        if self.addr.contains("://") {
            self.addr.clone()
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// `--utc-offset` in minutes east of UTC.
    pub fn offset(&self) -> Result<i32, String> {
        present::parse_offset(&self.utc_offset)
    }

    /// An amount as people read it (see `present::money`).
    pub fn money(&self, minor: &str, currency: &str) -> Result<String, String> {
        present::money(minor, currency, self.minor)
    }

    pub async fn connect(&self) -> Result<Client, String> {
        Ok(wire::ledger_client::LedgerClient::new(self.channel().await?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX))
    }

    /// A new HTTP/2 connection to `--addr`, with Nagle off and the server's window sizes.
    pub async fn channel(&self) -> Result<Channel, String> {
        let url = self.url();
        Channel::from_shared(url.clone())
            .map_err(|e| format!("--addr {}: {e} (expected host:port or http://host:port)", self.addr))?
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .connect()
            .await
            .map_err(|e| errors::unreachable(&url, &error_chain(&e)))
    }

    pub fn request<T>(&self, message: T) -> Result<Request<T>, String> {
        let mut request = Request::new(message);
        let value: MetadataValue<_> = format!("Bearer {}", self.token()?)
            .parse()
            .map_err(|_| "the token is not valid header text".to_string())?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// An error and its causes, innermost last ("transport error: tcp connect error: Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub use crate::errors::status_text;

fn print_results(connection: &Connection, results: &[wire::ItemResult]) -> Result<bool, String> {
    let ok = results.iter().all(|r| r.ok);
    let offset = connection.offset()?;
    let time = |ns: u64| if ns == 0 { String::new() } else { present::time_text(ns, offset) };
    if connection.json {
        let items: Vec<_> = results
            .iter()
            .map(|r| json!({"index": r.index, "code": r.code, "ok": r.ok, "time": time(r.timestamp_ns), "timestamp_ns": r.timestamp_ns, "message": r.message}))
            .collect();
        outln!("{}", json!({ "results": items }));
    } else {
        outln!("{:<6} {:<40} {:<25} MESSAGE", "INDEX", "RESULT", "TIME");
        for r in results {
            outln!("{:<6} {:<40} {:<25} {}", r.index, r.code, time(r.timestamp_ns), r.message);
        }
    }
    Ok(ok)
}

/// Adds `name` (major units) and `name_minor` for each amount field of an object.
fn with_amounts(
    mut value: serde_json::Value,
    currency: &str,
    fields: &[(&str, &str)],
) -> Result<serde_json::Value, String> {
    let Some(object) = value.as_object_mut() else { return Ok(value) };
    let Ok(currency) = present::currency("currency", currency) else { return Ok(value) };
    for (name, minor) in fields {
        if minor.is_empty() {
            continue;
        }
        object.insert((*name).into(), json!(present::major(minor, currency)?));
        object.insert(format!("{name}_minor"), json!(minor));
    }
    Ok(value)
}

fn account_json(a: &wire::Account, offset: i32) -> Result<serde_json::Value, String> {
    let value = json!({
        "id": a.id, "currency": a.currency, "code": a.code, "flags": a.flags, "owner_id": a.owner_id,
        "state": wire::AccountState::try_from(a.state).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
        "time": present::time_text(a.timestamp_ns, offset), "timestamp_ns": a.timestamp_ns,
    });
    let fields = [
        ("debits_pending", a.debits_pending.as_str()),
        ("debits_posted", &a.debits_posted),
        ("credits_pending", &a.credits_pending),
        ("credits_posted", &a.credits_posted),
    ];
    with_amounts(value, &a.currency, &fields)
}

fn transfer_json(t: &wire::Transfer, offset: i32) -> Result<serde_json::Value, String> {
    let value = json!({
        "id": t.id, "debit_account_id": t.debit_account_id, "credit_account_id": t.credit_account_id,
        "currency": t.currency, "code": t.code, "metadata": t.metadata,
        "kind": wire::TransferKind::try_from(t.kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN"),
        "pending_id": t.pending_id, "time": present::time_text(t.timestamp_ns, offset), "timestamp_ns": t.timestamp_ns,
        "pending_status": wire::PendingStatus::try_from(t.pending_status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
        "expires_at_ns": t.expires_at_ns, "resolved_by_id": t.resolved_by_id,
    });
    with_amounts(value, &t.currency, &[("amount", &t.amount)])
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
            print_accounts(connection, &response)?;
            return Ok(response.not_found.is_empty());
        }
    };
    let request = wire::CreateAccountsRequest { commands: vec![wire::AccountCommand { command: Some(command) }] };
    let response = client.create_accounts(connection.request(request)?).await.map_err(status_text)?.into_inner();
    print_results(connection, &response.results)
}

fn print_accounts(connection: &Connection, response: &wire::LookupAccountsResponse) -> Result<(), String> {
    if connection.json {
        let offset = connection.offset()?;
        let accounts = response.accounts.iter().map(|a| account_json(a, offset)).collect::<Result<Vec<_>, _>>()?;
        outln!("{}", json!({"accounts": accounts, "not_found": response.not_found}));
        return Ok(());
    }
    let row = |id: &str, state: &str, dpe: &str, dpo: &str, cpe: &str, cpo: &str| {
        outln!("{id:<40} {state:<7} {dpe:>20} {dpo:>20} {cpe:>20} {cpo:>20}")
    };
    row("ID", "STATE", "DEBITS_PENDING", "DEBITS_POSTED", "CREDITS_PENDING", "CREDITS_POSTED");
    for a in &response.accounts {
        let state = wire::AccountState::try_from(a.state).map(|s| s.as_str_name()).unwrap_or("?");
        let state = state.trim_start_matches("ACCOUNT_STATE_").to_lowercase();
        let money = |minor: &str| connection.money(minor, &a.currency);
        let (dpe, dpo) = (money(&a.debits_pending)?, money(&a.debits_posted)?);
        row(&a.id, &state, &dpe, &dpo, &money(&a.credits_pending)?, &money(&a.credits_posted)?);
    }
    for id in &response.not_found {
        outln!("{id:<40} not found");
    }
    Ok(())
}

fn print_transfers(connection: &Connection, response: &wire::LookupTransfersResponse) -> Result<(), String> {
    let offset = connection.offset()?;
    if connection.json {
        let transfers = response.transfers.iter().map(|t| transfer_json(t, offset)).collect::<Result<Vec<_>, _>>()?;
        outln!("{}", json!({"transfers": transfers, "not_found": response.not_found}));
        return Ok(());
    }
    let row = |id: &str, kind: &str, debit: &str, credit: &str, amount: &str, time: &str| {
        outln!("{id:<40} {kind:<12} {debit:<24} {credit:<24} {amount:>20} {time}")
    };
    row("ID", "KIND", "DEBIT", "CREDIT", "AMOUNT", "TIME");
    for t in &response.transfers {
        let kind = wire::TransferKind::try_from(t.kind).map(|k| k.as_str_name()).unwrap_or("?");
        let kind = kind.trim_start_matches("TRANSFER_KIND_").to_lowercase();
        // A hold shows how it stands or ended, and what ended it.
        let status = wire::PendingStatus::try_from(t.pending_status)
            .map(|s| s.as_str_name().trim_start_matches("PENDING_STATUS_").to_lowercase())
            .unwrap_or_else(|_| "?".into());
        let kind = match (t.kind == wire::TransferKind::Pending as i32, t.resolved_by_id.as_str()) {
            (false, _) => kind,
            (true, "") => format!("hold:{status}"),
            (true, by) => format!("hold:{status} by {by}"),
        };
        let time = present::time_text(t.timestamp_ns, offset);
        row(&t.id, &kind, &t.debit_account_id, &t.credit_account_id, &connection.money(&t.amount, &t.currency)?, &time);
    }
    for id in &response.not_found {
        outln!("{id:<40} not found");
    }
    Ok(())
}

/// The currency of a pending transfer, to read a partial --amount in its major units.
async fn pending_currency(connection: &Connection, client: &mut Client, pending_id: &str) -> Result<Currency, String> {
    let request = wire::LookupTransfersRequest { ids: vec![pending_id.to_string()] };
    let found = client.lookup_transfers(connection.request(request)?).await.map_err(status_text)?.into_inner();
    match found.transfers.first() {
        Some(t) => present::currency("currency", &t.currency),
        None => Err(format!("--pending-id {pending_id}: no such transfer")),
    }
}

pub async fn transfers(connection: &Connection, command: TransfersCommand, packed: bool) -> Result<bool, String> {
    let mut client = connection.connect().await?;
    let transfer = match command {
        TransfersCommand::Create { id, debit, credit, amount, currency, code, metadata, pending, timeout_ns } => {
            let kind = if pending { wire::TransferKind::Pending } else { wire::TransferKind::Posted };
            let amount = present::amount_flag(
                "--amount",
                &amount,
                present::currency("--currency", &currency)?,
                connection.minor,
            )?;
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
        TransfersCommand::Post { id, pending_id, amount } => {
            let amount = match amount.as_str() {
                "" => amount,
                text => {
                    let currency = pending_currency(connection, &mut client, &pending_id).await?;
                    present::amount_flag("--amount", text, currency, connection.minor)?
                }
            };
            wire::NewTransfer {
                id,
                pending_id,
                amount,
                kind: wire::TransferKind::PostPending as i32,
                ..Default::default()
            }
        }
        TransfersCommand::Void { id, pending_id } => {
            wire::NewTransfer { id, pending_id, kind: wire::TransferKind::VoidPending as i32, ..Default::default() }
        }
        TransfersCommand::Get { ids } => {
            let response = client
                .lookup_transfers(connection.request(wire::LookupTransfersRequest { ids })?)
                .await
                .map_err(status_text)?
                .into_inner();
            print_transfers(connection, &response)?;
            return Ok(response.not_found.is_empty());
        }
    };
    if packed {
        let (record, metadata) = packed_record(transfer)?;
        let mut records = Vec::with_capacity(RECORD_BYTES);
        record.write(&mut records);
        let metadata = if metadata.is_empty() { vec![] } else { vec![metadata] };
        let request = wire::PackedTransfers { records, metadata };
        let response =
            client.create_transfers_packed(connection.request(request)?).await.map_err(status_text)?.into_inner();
        return print_results(connection, &unpacked_results(response));
    }
    let request = wire::CreateTransfersRequest { transfers: vec![transfer] };
    let response = client.create_transfers(connection.request(request)?).await.map_err(status_text)?.into_inner();
    print_results(connection, &response.results)
}

/// A transfer of the string form as a packed record and its metadata.
fn packed_record(t: wire::NewTransfer) -> Result<(TransferRecord, String), String> {
    let number = |flag: &str, text: &str| match text {
        "" => Ok(0),
        text => text.parse::<u128>().map_err(|_| format!("--{flag} {text:?}: expected an unsigned integer")),
    };
    let record = TransferRecord {
        id: number("id", &t.id)?,
        debit_account_id: number("debit", &t.debit_account_id)?,
        credit_account_id: number("credit", &t.credit_account_id)?,
        amount: number("amount", &t.amount)?,
        pending_id: number("pending-id", &t.pending_id)?,
        timeout_ns: t.timeout_ns,
        code: u16::try_from(t.code).map_err(|_| format!("--code {}: at most 65535", t.code))?,
        kind: u8::try_from(t.kind).map_err(|_| format!("kind {}: not a transfer kind", t.kind))?,
        linked: t.linked,
        currency: TransferRecord::currency_bytes(&t.currency)?,
    };
    Ok((record, t.metadata))
}

/// The packed answer as one result per transfer, as CreateTransfers gives them.
fn unpacked_results(response: wire::PackedTransferResults) -> Vec<wire::ItemResult> {
    let mut failures = response.failures.into_iter().peekable();
    let timestamps = response.timestamps_ns.into_iter().chain(std::iter::repeat(0));
    response
        .status
        .into_iter()
        .zip(timestamps)
        .enumerate()
        .map(|(index, (status, timestamp_ns))| {
            let index = index as u32;
            let code = match status {
                STATUS_CREATED => "CREATED",
                STATUS_ALREADY_EXISTS => "ALREADY_EXISTS",
                _ => match failures.next_if(|f| f.index == index) {
                    Some(failure) => return failure,
                    None => "FAILED",
                },
            };
            wire::ItemResult {
                index,
                code: code.into(),
                ok: status != STATUS_FAILED,
                timestamp_ns,
                ..Default::default()
            }
        })
        .collect()
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
        let hash = ledger_core::chain::to_hex(&event.hash);
        if connection.json {
            // ok: display only (an event the server could not decode prints as empty).
            let decoded = event.event.as_ref().map(|e| format!("{e:?}")).unwrap_or_default();
            outln!(
                "{}",
                json!({"position": event.position, "stream": event.stream, "revision": event.revision,
                    "event_type": event.event_type, "hash": hash, "event": decoded})
            );
        } else {
            outln!(
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
    progress_of("transfers", done, total, started);
}

/// A progress bar of `what` on stderr, only when it is a terminal.
pub fn progress_of(what: &str, done: u64, total: Option<u64>, started: Instant) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
    match total {
        Some(total) => {
            let width = 30;
            let filled = (done.min(total) * width / total.max(1)) as usize;
            let bar = format!("{}{}", "#".repeat(filled), "-".repeat(width as usize - filled));
            eprint!("\r[{bar}] {done}/{total} {what}, {rate:.0}/s   ")
        }
        None => eprint!("\r{done} {what}, {rate:.0}/s   "),
    }
}
