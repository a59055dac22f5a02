//! `ledgerctl history`, `report` and `balance`: movements, period totals and balances
//! of an account or of an owner's accounts. With a user's session and neither
//! `--account` nor `--owner`, the signed-in user's own wallets.

use clap::Args;
use ledger_proto::api::v1 as wire;
use serde_json::{json, Map, Value};

use crate::client::{status_text, Connection};
use crate::errors::SESSION_TOKEN_PREFIX;
use crate::present::{self, date_of, time_text};

/// Movements per page unless `--limit` says otherwise; the server takes at most 1,000
/// movements per page.
const HISTORY_PAGE_MOVEMENTS: u32 = 100;

#[derive(Args)]
pub struct HistoryArgs {
    /// One account's movements (default with a user's session: all your wallets).
    #[arg(long, default_value = "", hide_default_value = true, conflicts_with = "owner")]
    account: String,
    /// Every account of this owner (a user id).
    #[arg(long, default_value = "", hide_default_value = true)]
    owner: String,
    /// From this time: a date (midnight at --utc-offset) or an RFC 3339 time such as
    /// 2026-11-01T09:30Z.
    #[arg(long, help_heading = "Filters")]
    from: Option<String>,
    /// Until this time, exclusive (a date or an RFC 3339 time, as --from).
    #[arg(long, help_heading = "Filters")]
    to: Option<String>,
    /// Only money out (debit) or only money in (credit).
    #[arg(long, value_parser = ["debit", "credit"], help_heading = "Filters")]
    direction: Option<String>,
    /// Only movements with this status.
    #[arg(long, value_parser = ["pending", "posted", "voided", "expired"], help_heading = "Filters")]
    status: Option<String>,
    /// Only this currency (an ISO 4217 code such as USD).
    #[arg(long, default_value = "", hide_default_value = true, help_heading = "Filters")]
    currency: String,
    /// Movements per page, newest first (at most 1000).
    #[arg(long, default_value_t = HISTORY_PAGE_MOVEMENTS, help_heading = "Paging")]
    limit: u32,
    /// The next page: the cursor the previous page printed.
    #[arg(long, default_value = "", hide_default_value = true, help_heading = "Paging")]
    cursor: String,
}

#[derive(Args)]
pub struct ReportArgs {
    /// One account's report (default with a user's session: one per wallet of yours).
    #[arg(long, default_value = "", hide_default_value = true, conflicts_with = "owner")]
    account: String,
    /// One report per account of this owner (a user id).
    #[arg(long, default_value = "", hide_default_value = true)]
    owner: String,
    /// First day (a date at --utc-offset, e.g. 2026-11-01).
    #[arg(long)]
    from: String,
    /// The day after the last, exclusive (a date, e.g. 2026-12-01).
    #[arg(long)]
    to: String,
    /// Print CSV: one row per account and day.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Also total every account in this currency at the period's rates.
    #[arg(long, default_value = "", hide_default_value = true)]
    convert_to: String,
}

#[derive(Args)]
pub struct BalanceArgs {
    /// The account (default with a user's session: each of your wallets).
    #[arg(long)]
    account: Option<String>,
    /// Balances as of this time: a date (midnight at --utc-offset) or an RFC 3339 time
    /// such as 2026-11-29T12:00Z (default: now).
    #[arg(long, conflicts_with = "as_of_ns")]
    as_of: Option<String>,
    /// The same in nanoseconds since the Unix epoch (0: now).
    #[arg(long, hide = true)]
    as_of_ns: Option<u64>,
}

/// Whether the token is a user's session (`lus_…`) rather than a role token.
fn is_session(connection: &Connection) -> Result<bool, String> {
    Ok(connection.token()?.starts_with(SESSION_TOKEN_PREFIX))
}

type UsersClient = wire::users_client::UsersClient<tonic::transport::Channel>;

/// The signed-in user's id.
async fn my_id(connection: &Connection, users: &mut UsersClient) -> Result<String, String> {
    let profile = users.get_profile(connection.request(wire::UserRequest::default())?).await.map_err(status_text)?;
    Ok(profile.into_inner().user_id)
}

/// `--account`/`--owner`, or the signed-in user as the owner.
async fn subject(connection: &Connection, account: String, owner: String) -> Result<(String, String), String> {
    if !account.is_empty() || !owner.is_empty() {
        return Ok((account, owner));
    }
    if !is_session(connection)? {
        return Err("--account or --owner: give one (with a user's session, your own wallets are the default)".into());
    }
    let mut users = UsersClient::new(connection.channel().await?);
    Ok((String::new(), my_id(connection, &mut users).await?))
}

/// Adds `name` (major units) and `name_minor` (minor units) for each amount field.
fn amounts(object: &mut Map<String, Value>, currency: &str, fields: &[(&str, &str)]) -> Result<(), String> {
    let currency = present::currency("currency", currency)?;
    for (name, minor) in fields {
        object.insert((*name).into(), json!(present::major(minor, currency)?));
        object.insert(format!("{name}_minor"), json!(minor));
    }
    Ok(())
}

/// A wire enum's name in lower case without its prefix ("MOVEMENT_STATUS_POSTED" → "posted").
fn enum_name<E>(name: Result<&'static str, E>, prefix: &str) -> String {
    match name {
        Ok(name) => name.trim_start_matches(prefix).to_lowercase(),
        Err(_) => "unknown".into(),
    }
}

fn movement_json(m: &wire::AccountMovement, offset: i32) -> Result<Value, String> {
    let mut object = Map::new();
    for (key, value) in [
        ("account_id", json!(m.account_id)),
        ("transfer_id", json!(m.transfer_id)),
        ("event_type", json!(m.event_type)),
        ("direction", json!(enum_name(wire::Direction::try_from(m.direction).map(|d| d.as_str_name()), "DIRECTION_"))),
        (
            "status",
            json!(enum_name(wire::MovementStatus::try_from(m.status).map(|s| s.as_str_name()), "MOVEMENT_STATUS_")),
        ),
        ("counterparty_account_id", json!(m.counterparty_account_id)),
        ("currency", json!(m.currency)),
        ("time", json!(time_text(m.timestamp_ns, offset))),
        ("timestamp_ns", json!(m.timestamp_ns)),
        ("metadata", json!(m.metadata)),
        ("position", json!(m.position)),
        ("counterparty_name", json!(m.counterparty_name)),
        ("payment_id", json!(m.payment_id)),
        ("note", json!(m.note)),
        ("resolved_by_id", json!(m.resolved_by_id)),
    ] {
        object.insert(key.into(), value);
    }
    amounts(
        &mut object,
        &m.currency,
        &[
            ("amount", &m.amount),
            ("debits_posted", &m.debits_posted),
            ("credits_posted", &m.credits_posted),
            ("debits_pending", &m.debits_pending),
            ("credits_pending", &m.credits_pending),
        ],
    )?;
    Ok(Value::Object(object))
}

pub async fn history(connection: &Connection, args: HistoryArgs) -> Result<bool, String> {
    let offset = connection.offset()?;
    let time =
        |flag: &str, text: &Option<String>| text.as_deref().map_or(Ok(0), |t| present::parse_time(flag, t, offset));
    let (from_ns, to_ns) = (time("--from", &args.from)?, time("--to", &args.to)?);
    let direction = match args.direction.as_deref() {
        Some("debit") => wire::Direction::Debit,
        Some("credit") => wire::Direction::Credit,
        _ => wire::Direction::Unspecified,
    };
    let status = match args.status.as_deref() {
        Some("pending") => wire::MovementStatus::Pending,
        Some("posted") => wire::MovementStatus::Posted,
        Some("voided") => wire::MovementStatus::Voided,
        Some("expired") => wire::MovementStatus::Expired,
        _ => wire::MovementStatus::Unspecified,
    };
    let (account_id, owner_id) = subject(connection, args.account, args.owner).await?;
    let mut client = connection.connect().await?;
    let request = wire::GetHistoryRequest {
        account_id,
        owner_id,
        from_ns,
        to_ns,
        direction: direction as i32,
        status: status as i32,
        currency: args.currency,
        limit: args.limit,
        cursor: args.cursor,
        min_position: 0,
    };
    let response = client.get_history(connection.request(request)?).await.map_err(status_text)?.into_inner();
    if connection.json {
        let movements = response.movements.iter().map(|m| movement_json(m, offset)).collect::<Result<Vec<_>, _>>()?;
        outln!("{}", json!({"movements": movements, "next_cursor": response.next_cursor}));
        return Ok(true);
    }
    // A person's view: the other party by name where the server knows it (a user's own
    // payments), else its account; the payment (or the bare transfer) the row belongs to.
    let row = |time: &str, side: &str, status: &str, amount: &str, other: &str, reference: &str, note: &str| {
        outln!("{time:<25} {side:<4} {status:<8} {amount:>18}  {other:<40} {reference:<48} {note}")
    };
    row("TIME", "SIDE", "STATUS", "AMOUNT", "COUNTERPARTY", "REFERENCE", "NOTE");
    for m in &response.movements {
        let side = if m.direction == wire::Direction::Debit as i32 { "out" } else { "in" };
        let status = enum_name(wire::MovementStatus::try_from(m.status).map(|s| s.as_str_name()), "MOVEMENT_STATUS_");
        let time = time_text(m.timestamp_ns, offset);
        let amount = connection.money(&m.amount, &m.currency)?;
        let other = if m.counterparty_name.is_empty() { &m.counterparty_account_id } else { &m.counterparty_name };
        let reference = if m.payment_id.is_empty() {
            format!("transfer {}", m.transfer_id)
        } else {
            format!("payment {}", m.payment_id)
        };
        row(&time, side, &status, &amount, other, &reference, &m.note);
    }
    if !response.next_cursor.is_empty() {
        outln!("more: --cursor {}", response.next_cursor);
    }
    Ok(true)
}

fn report_json(r: &wire::AccountReport, offset: i32) -> Result<Value, String> {
    let days = r
        .days
        .iter()
        .map(|d| {
            let mut day = Map::new();
            day.insert("date".into(), json!(date_of(d.start_ns, offset)));
            day.insert("start_ns".into(), json!(d.start_ns));
            day.insert("count".into(), json!(d.count));
            let fields =
                [("opening", &d.opening), ("credits", &d.credits), ("debits", &d.debits), ("closing", &d.closing)];
            amounts(&mut day, &r.currency, &fields.map(|(k, v)| (k, v.as_str())))?;
            Ok(Value::Object(day))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut object = Map::new();
    object.insert("account_id".into(), json!(r.account_id));
    object.insert("currency".into(), json!(r.currency));
    object.insert("count".into(), json!(r.count));
    let fields = [("opening", &r.opening), ("credits", &r.credits), ("debits", &r.debits), ("closing", &r.closing)];
    amounts(&mut object, &r.currency, &fields.map(|(k, v)| (k, v.as_str())))?;
    object.insert("days".into(), Value::Array(days));
    Ok(Value::Object(object))
}

pub async fn report(connection: &Connection, args: ReportArgs) -> Result<bool, String> {
    let offset = connection.offset()?;
    let from_ns = present::parse_time("--from", &args.from, offset)?;
    let to_ns = present::parse_time("--to", &args.to, offset)?;
    let (account_id, owner_id) = subject(connection, args.account, args.owner).await?;
    let mut client = connection.connect().await?;
    let request = wire::GetReportRequest {
        account_id,
        owner_id,
        from_ns,
        to_ns,
        utc_offset_minutes: offset,
        min_position: 0,
        convert_to: args.convert_to.clone(),
    };
    let response = client.get_report(connection.request(request)?).await.map_err(status_text)?.into_inner();
    if connection.json {
        let reports = response.reports.iter().map(|r| report_json(r, offset)).collect::<Result<Vec<_>, _>>()?;
        let converted = match &response.converted {
            None => Value::Null,
            Some(c) => {
                let mut object = Map::new();
                object.insert("currency".into(), json!(c.currency));
                object.insert("rates_used".into(), json!(c.rates_used));
                let fields =
                    [("opening", &c.opening), ("credits", &c.credits), ("debits", &c.debits), ("closing", &c.closing)];
                amounts(&mut object, &c.currency, &fields.map(|(k, v)| (k, v.as_str())))?;
                Value::Object(object)
            }
        };
        outln!("{}", json!({"utc_offset_minutes": offset, "reports": reports, "converted": converted}));
    } else if args.csv {
        report_csv(connection, &response, offset)?;
    } else {
        report_table(connection, &response, offset)?;
    }
    Ok(true)
}

/// One row per account and day; amounts in major units (minor with `--minor`).
fn report_csv(connection: &Connection, response: &wire::GetReportResponse, offset: i32) -> Result<(), String> {
    outln!("account_id,currency,date,opening,credits,debits,count,closing");
    for r in &response.reports {
        let currency = present::currency("currency", &r.currency)?;
        let amount =
            |minor: &str| if connection.minor { Ok(minor.to_string()) } else { present::major(minor, currency) };
        for d in &r.days {
            let date = date_of(d.start_ns, offset);
            let (opening, credits, debits) = (amount(&d.opening)?, amount(&d.credits)?, amount(&d.debits)?);
            let closing = amount(&d.closing)?;
            outln!("{},{},{date},{opening},{credits},{debits},{},{closing}", r.account_id, r.currency, d.count);
        }
    }
    Ok(())
}

fn report_table(connection: &Connection, response: &wire::GetReportResponse, offset: i32) -> Result<(), String> {
    let row = |date: &str, opening: &str, credits: &str, debits: &str, count: &str, closing: &str| {
        outln!("{date:<10} {opening:>20} {credits:>20} {debits:>20} {count:>7} {closing:>20}")
    };
    for r in &response.reports {
        outln!("account {} ({}), days at UTC offset {}", r.account_id, r.currency, connection.utc_offset);
        row("DATE", "OPENING", "IN", "OUT", "COUNT", "CLOSING");
        let money = |minor: &str| connection.money(minor, &r.currency);
        for d in &r.days {
            let date = date_of(d.start_ns, offset);
            let count = d.count.to_string();
            row(&date, &money(&d.opening)?, &money(&d.credits)?, &money(&d.debits)?, &count, &money(&d.closing)?);
        }
        let count = r.count.to_string();
        row("TOTAL", &money(&r.opening)?, &money(&r.credits)?, &money(&r.debits)?, &count, &money(&r.closing)?);
    }
    if let Some(c) = &response.converted {
        outln!("all accounts in {} at the period's rates: {}", c.currency, c.rates_used.join("; "));
        let money = |minor: &str| connection.money(minor, &c.currency);
        row("TOTAL", &money(&c.opening)?, &money(&c.credits)?, &money(&c.debits)?, "", &money(&c.closing)?);
    }
    Ok(())
}

/// An account's four balances, from GetBalance or from a movement of its history.
struct Balances {
    account_id: String,
    currency: String,
    debits_posted: String,
    credits_posted: String,
    debits_pending: String,
    credits_pending: String,
}

pub async fn balance(connection: &Connection, args: BalanceArgs) -> Result<bool, String> {
    let offset = connection.offset()?;
    let as_of_ns = match (&args.as_of, args.as_of_ns) {
        (Some(text), _) => present::parse_time("--as-of", text, offset)?,
        (None, ns) => ns.unwrap_or(0),
    };
    let mut all = Vec::new();
    if !is_session(connection)? {
        let Some(account_id) = args.account else {
            return Err("--account: which account (with a user's session, your wallets are the default)".into());
        };
        let mut client = connection.connect().await?;
        let request = wire::GetBalanceRequest { account_id, as_of_ns, min_position: 0 };
        let b = client.get_balance(connection.request(request)?).await.map_err(status_text)?.into_inner();
        all.push(Balances {
            account_id: b.account_id,
            currency: b.currency,
            debits_posted: b.debits_posted,
            credits_posted: b.credits_posted,
            debits_pending: b.debits_pending,
            credits_pending: b.credits_pending,
        });
    } else {
        // A session reads its own accounts through their history: the balances after
        // the last movement at or before the time.
        let accounts = match args.account {
            Some(account) => vec![(account, String::new())],
            None => {
                let mut users = UsersClient::new(connection.channel().await?);
                let wallets = users.list_wallets(connection.request(wire::UserRequest::default())?).await;
                wallets
                    .map_err(status_text)?
                    .into_inner()
                    .wallets
                    .into_iter()
                    .map(|w| (w.account_id, w.currency))
                    .collect()
            }
        };
        let mut client = connection.connect().await?;
        for account in accounts {
            all.push(balance_from_history(connection, &mut client, account, as_of_ns).await?);
        }
    }
    print_balances(connection, &all, as_of_ns, offset)?;
    Ok(true)
}

async fn balance_from_history(
    connection: &Connection,
    client: &mut crate::client::Client,
    (account_id, currency): (String, String),
    as_of_ns: u64,
) -> Result<Balances, String> {
    let request = wire::GetHistoryRequest {
        account_id: account_id.clone(),
        to_ns: if as_of_ns == 0 { 0 } else { as_of_ns.saturating_add(1) },
        limit: 1,
        ..Default::default()
    };
    let response = client.get_history(connection.request(request)?).await.map_err(status_text)?.into_inner();
    let zero = || "0".to_string();
    Ok(match response.movements.into_iter().next() {
        Some(m) => Balances {
            account_id,
            currency: m.currency,
            debits_posted: m.debits_posted,
            credits_posted: m.credits_posted,
            debits_pending: m.debits_pending,
            credits_pending: m.credits_pending,
        },
        // Nothing moved by then: every balance is zero.
        None => Balances {
            account_id,
            currency,
            debits_posted: zero(),
            credits_posted: zero(),
            debits_pending: zero(),
            credits_pending: zero(),
        },
    })
}

fn print_balances(connection: &Connection, all: &[Balances], as_of_ns: u64, offset: i32) -> Result<(), String> {
    let when = if as_of_ns == 0 { "now".to_string() } else { time_text(as_of_ns, offset) };
    if connection.json {
        let mut items = Vec::new();
        for b in all {
            let mut object = Map::new();
            object.insert("account_id".into(), json!(b.account_id));
            object.insert("currency".into(), json!(b.currency));
            object.insert("as_of_ns".into(), json!(as_of_ns));
            object.insert("as_of".into(), json!(when));
            if !b.currency.is_empty() {
                let fields = [
                    ("debits_posted", b.debits_posted.as_str()),
                    ("credits_posted", &b.credits_posted),
                    ("debits_pending", &b.debits_pending),
                    ("credits_pending", &b.credits_pending),
                ];
                amounts(&mut object, &b.currency, &fields)?;
            }
            items.push(Value::Object(object));
        }
        match items.as_slice() {
            [one] => outln!("{one}"),
            _ => outln!("{}", json!({ "balances": items })),
        }
        return Ok(());
    }
    for b in all {
        let money = |minor: &str| connection.money(minor, &b.currency);
        let net = net_posted(b)?;
        outln!("account {} ({}) as of {when}: balance {}", b.account_id, b.currency, money(&net)?);
        outln!("  debits  posted {:>20}  pending {:>20}", money(&b.debits_posted)?, money(&b.debits_pending)?);
        outln!("  credits posted {:>20}  pending {:>20}", money(&b.credits_posted)?, money(&b.credits_pending)?);
    }
    Ok(())
}

/// Posted credits less posted debits, in minor units.
fn net_posted(b: &Balances) -> Result<String, String> {
    let number = |text: &str| text.parse::<i128>().map_err(|_| format!("the server sent balance {text:?}"));
    let net = number(&b.credits_posted)?.checked_sub(number(&b.debits_posted)?);
    net.map(|n| n.to_string()).ok_or_else(|| "balance out of range".to_string())
}
