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

use ledger_core::calendar::{civil_from_days, days_from_civil};
use ledger_proto::transport::{CONNECTION_WINDOW_BYTES, MESSAGE_BYTES_MAX, STREAM_WINDOW_BYTES};

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
    /// One account's movements ...
    #[arg(long, default_value = "", required_unless_present = "owner")]
    account: String,
    /// ... or every account of an owner.
    #[arg(long, default_value = "")]
    owner: String,
    /// From this time (nanoseconds since the epoch, or YYYY-MM-DD in --utc-offset).
    #[arg(long, default_value = "0")]
    from: String,
    /// Until this time, exclusive (as --from; 0: no bound).
    #[arg(long, default_value = "0")]
    to: String,
    #[arg(long, default_value = "+00:00", allow_hyphen_values = true)]
    utc_offset: String,
    /// debit or credit.
    #[arg(long)]
    direction: Option<String>,
    /// pending, posted, voided or expired.
    #[arg(long)]
    status: Option<String>,
    #[arg(long, default_value = "")]
    currency: String,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long, default_value = "")]
    cursor: String,
}

#[derive(Args)]
pub struct ReportArgs {
    /// One account's report ...
    #[arg(long, default_value = "", required_unless_present = "owner")]
    account: String,
    /// ... or one per account of an owner.
    #[arg(long, default_value = "")]
    owner: String,
    /// First day (YYYY-MM-DD, local to --utc-offset) or nanoseconds since the epoch.
    #[arg(long)]
    from: String,
    /// Day after the last (YYYY-MM-DD) or nanoseconds since the epoch, exclusive.
    #[arg(long)]
    to: String,
    /// Days run midnight to midnight at this offset, like +02:00 or -05:30.
    #[arg(long, default_value = "+00:00", allow_hyphen_values = true)]
    utc_offset: String,
    /// Print CSV: one row per account and day.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Also total every account in this currency at the period's rates.
    #[arg(long, default_value = "")]
    convert_to: String,
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

/// A gRPC error as the commands print it.
pub fn status_text(status: tonic::Status) -> String {
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
        "expires_at_ns": t.expires_at_ns, "resolved_by_id": t.resolved_by_id,
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

pub async fn transfers(connection: &Connection, command: TransfersCommand, packed: bool) -> Result<bool, String> {
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
                    // A hold shows how it stands or ended, and what ended it.
                    let status = wire::PendingStatus::try_from(t.pending_status)
                        .map(|s| s.as_str_name().trim_start_matches("PENDING_STATUS_"))
                        .unwrap_or("?");
                    let kind = match (t.kind == wire::TransferKind::Pending as i32, t.resolved_by_id.as_str()) {
                        (false, _) => kind.to_string(),
                        (true, "") => format!("HOLD:{status}"),
                        (true, by) => format!("HOLD:{status} by {by}"),
                    };
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
    if packed {
        let (record, metadata) = packed_record(transfer)?;
        let mut records = Vec::with_capacity(RECORD_BYTES);
        record.write(&mut records);
        let metadata = if metadata.is_empty() { vec![] } else { vec![metadata] };
        let request = wire::PackedTransfers { records, metadata };
        let response =
            client.create_transfers_packed(connection.request(request)?).await.map_err(status_text)?.into_inner();
        return Ok(print_results(&unpacked_results(response), connection.json));
    }
    let request = wire::CreateTransfersRequest { transfers: vec![transfer] };
    let response = client.create_transfers(connection.request(request)?).await.map_err(status_text)?.into_inner();
    Ok(print_results(&response.results, connection.json))
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

/// Minutes east of UTC from `+HH:MM`, `-HH:MM` or `Z`.
pub fn parse_offset(text: &str) -> Result<i32, String> {
    if text == "Z" {
        return Ok(0);
    }
    let bad = || format!("--utc-offset {text}: expected +HH:MM or -HH:MM");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (hours, minutes) = rest.split_once(':').ok_or_else(bad)?;
    let hours: i32 = hours.parse().map_err(|_| bad())?;
    let minutes: i32 = minutes.parse().map_err(|_| bad())?;
    if !(0..60).contains(&minutes) || hours > 18 {
        return Err(bad());
    }
    Ok(sign * (hours * 60 + minutes))
}

/// Nanoseconds since the epoch from a number, or from `YYYY-MM-DD` (midnight at the
/// offset).
pub fn parse_time(flag: &str, text: &str, offset_minutes: i32) -> Result<u64, String> {
    if let Ok(ns) = text.parse::<u64>() {
        return Ok(ns);
    }
    let bad = || format!("{flag} {text}: expected YYYY-MM-DD or nanoseconds since the epoch");
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts.as_slice() else { return Err(bad()) };
    let (year, month, day): (i64, i64, i64) =
        (year.parse().map_err(|_| bad())?, month.parse().map_err(|_| bad())?, day.parse().map_err(|_| bad())?);
    let days = days_from_civil(year, month, day);
    // The round trip rejects 2026-02-30 and the like.
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || civil_from_days(days) != (year, month, day) {
        return Err(bad());
    }
    let seconds = days * 86_400 - i64::from(offset_minutes) * 60;
    u64::try_from(seconds).ok().and_then(|s| s.checked_mul(1_000_000_000)).ok_or_else(bad)
}

/// `YYYY-MM-DD` of an instant, in the offset's calendar.
pub fn date_of(ns: u64, offset_minutes: i32) -> String {
    let seconds = (ns / 1_000_000_000) as i64 + i64::from(offset_minutes) * 60;
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

fn movement_json(m: &wire::AccountMovement) -> serde_json::Value {
    json!({
        "account_id": m.account_id, "transfer_id": m.transfer_id, "event_type": m.event_type,
        "direction": wire::Direction::try_from(m.direction).map(|d| d.as_str_name()).unwrap_or("?"),
        "status": wire::MovementStatus::try_from(m.status).map(|d| d.as_str_name()).unwrap_or("?"),
        "counterparty_account_id": m.counterparty_account_id, "amount": m.amount, "currency": m.currency,
        "timestamp_ns": m.timestamp_ns, "metadata": m.metadata, "position": m.position,
        "debits_posted": m.debits_posted, "credits_posted": m.credits_posted,
        "debits_pending": m.debits_pending, "credits_pending": m.credits_pending,
    })
}

pub async fn history(connection: &Connection, args: HistoryArgs) -> Result<bool, String> {
    let mut client = connection.connect().await?;
    let offset = parse_offset(&args.utc_offset)?;
    let direction = match args.direction.as_deref() {
        None => wire::Direction::Unspecified,
        Some("debit") => wire::Direction::Debit,
        Some("credit") => wire::Direction::Credit,
        Some(other) => return Err(format!("--direction {other}: expected debit or credit")),
    };
    let status = match args.status.as_deref() {
        None => wire::MovementStatus::Unspecified,
        Some("pending") => wire::MovementStatus::Pending,
        Some("posted") => wire::MovementStatus::Posted,
        Some("voided") => wire::MovementStatus::Voided,
        Some("expired") => wire::MovementStatus::Expired,
        Some(other) => return Err(format!("--status {other}: expected pending, posted, voided or expired")),
    };
    let request = wire::GetHistoryRequest {
        account_id: args.account,
        owner_id: args.owner,
        from_ns: parse_time("--from", &args.from, offset)?,
        to_ns: parse_time("--to", &args.to, offset)?,
        direction: direction as i32,
        status: status as i32,
        currency: args.currency,
        limit: args.limit,
        cursor: args.cursor,
        min_position: 0,
    };
    let response = client.get_history(connection.request(request)?).await.map_err(status_text)?.into_inner();
    if connection.json {
        let movements: Vec<_> = response.movements.iter().map(movement_json).collect();
        println!("{}", json!({"movements": movements, "next_cursor": response.next_cursor}));
    } else {
        println!(
            "{:<20} {:<20} {:<16} {:<7} {:<8} {:<20} {:>14} {:<4}",
            "TIMESTAMP_NS", "ACCOUNT", "EVENT", "SIDE", "STATUS", "COUNTERPARTY", "AMOUNT", "CUR"
        );
        for m in &response.movements {
            let side = if m.direction == wire::Direction::Debit as i32 { "debit" } else { "credit" };
            let status = wire::MovementStatus::try_from(m.status).map(|s| s.as_str_name()).unwrap_or("?");
            let status = status.trim_start_matches("MOVEMENT_STATUS_").to_lowercase();
            println!(
                "{:<20} {:<20} {:<16} {:<7} {:<8} {:<20} {:>14} {:<4}",
                m.timestamp_ns,
                m.account_id,
                m.event_type,
                side,
                status,
                m.counterparty_account_id,
                m.amount,
                m.currency
            );
        }
        if !response.next_cursor.is_empty() {
            println!("more: --cursor {}", response.next_cursor);
        }
    }
    Ok(true)
}

pub async fn report(connection: &Connection, args: ReportArgs) -> Result<bool, String> {
    let mut client = connection.connect().await?;
    let offset = parse_offset(&args.utc_offset)?;
    let request = wire::GetReportRequest {
        account_id: args.account,
        owner_id: args.owner,
        from_ns: parse_time("--from", &args.from, offset)?,
        to_ns: parse_time("--to", &args.to, offset)?,
        utc_offset_minutes: offset,
        min_position: 0,
        convert_to: args.convert_to.clone(),
    };
    let response = client.get_report(connection.request(request)?).await.map_err(status_text)?.into_inner();
    if connection.json {
        let reports: Vec<_> = response
            .reports
            .iter()
            .map(|r| {
                let days: Vec<_> = r
                    .days
                    .iter()
                    .map(|d| {
                        json!({"date": date_of(d.start_ns, offset), "start_ns": d.start_ns, "opening": d.opening,
                            "credits": d.credits, "debits": d.debits, "count": d.count, "closing": d.closing})
                    })
                    .collect();
                json!({"account_id": r.account_id, "currency": r.currency, "opening": r.opening, "credits": r.credits,
                    "debits": r.debits, "count": r.count, "closing": r.closing, "days": days})
            })
            .collect();
        let converted = response.converted.as_ref().map(|c| {
            json!({"currency": c.currency, "opening": c.opening, "credits": c.credits, "debits": c.debits,
                "closing": c.closing, "rates_used": c.rates_used})
        });
        println!("{}", json!({"utc_offset_minutes": offset, "reports": reports, "converted": converted}));
    } else if args.csv {
        println!("account_id,currency,date,opening,credits,debits,count,closing");
        for r in &response.reports {
            for d in &r.days {
                println!(
                    "{},{},{},{},{},{},{},{}",
                    r.account_id,
                    r.currency,
                    date_of(d.start_ns, offset),
                    d.opening,
                    d.credits,
                    d.debits,
                    d.count,
                    d.closing
                );
            }
        }
    } else {
        for r in &response.reports {
            println!("account {} ({}), UTC offset {}", r.account_id, r.currency, args.utc_offset);
            let row = |date: &str, opening: &str, credits: &str, debits: &str, count: &str, closing: &str| {
                println!("{date:<10} {opening:>16} {credits:>16} {debits:>16} {count:>8} {closing:>16}")
            };
            row("DATE", "OPENING", "IN", "OUT", "COUNT", "CLOSING");
            for d in &r.days {
                let date = date_of(d.start_ns, offset);
                row(&date, &d.opening, &d.credits, &d.debits, &d.count.to_string(), &d.closing);
            }
            row("TOTAL", &r.opening, &r.credits, &r.debits, &r.count.to_string(), &r.closing);
        }
        if let Some(c) = &response.converted {
            println!("all accounts in {} (minor units) at the period's rates: {}", c.currency, c.rates_used.join("; "));
            println!(
                "{:<10} {:>16} {:>16} {:>16} {:>8} {:>16}",
                "TOTAL", c.opening, c.credits, c.debits, "", c.closing
            );
        }
    }
    Ok(true)
}

pub async fn balance(connection: &Connection, args: BalanceArgs) -> Result<bool, String> {
    let mut client = connection.connect().await?;
    let request = wire::GetBalanceRequest { account_id: args.account, as_of_ns: args.as_of_ns, min_position: 0 };
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
        let hash = ledger_core::chain::to_hex(&event.hash);
        if connection.json {
            // ok: display only (an event the server could not decode prints as empty).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_offsets() {
        assert_eq!(parse_offset("+02:00"), Ok(120));
        assert_eq!(parse_offset("-05:30"), Ok(-330));
        assert!(parse_offset("02:00").is_err());
        assert_eq!(parse_time("--from", "1970-01-02", 0), Ok(86_400_000_000_000));
        assert_eq!(parse_time("--from", "2026-03-01", 60), Ok(1_772_319_600_000_000_000));
        assert!(parse_time("--from", "2026-02-30", 0).is_err());
        assert_eq!(parse_time("--from", "123", 0), Ok(123));
        assert_eq!(date_of(1_772_319_600_000_000_000, 60), "2026-03-01");
        assert_eq!(date_of(1_772_319_600_000_000_000, 0), "2026-02-28");
    }
}
