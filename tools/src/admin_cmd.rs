//! `ledgerctl admin`: the admin and support views (`ledger.v1.Admin`), with an
//! `admin` or `support` token. `users` lists or finds people, `user` shows one person
//! (profile, wallets with balances, instruments with their verification state, recent
//! payments), `accounts` the ledger's accounts, `reviews` the review queue.

use clap::Subcommand;
use ledger_proto::api::v1 as wire;
use serde_json::json;

use crate::client::{status_text, Connection};
use crate::present;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Users in id order, a page at a time, or the one user an email or id names.
    Users {
        /// The one user with this email address.
        #[arg(long, conflicts_with = "id")]
        email: Option<String>,
        /// The one user with this id.
        #[arg(long)]
        id: Option<String>,
        /// Users per page (0: the server's default of 50; at most 200).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// The cursor printed at the end of the previous page.
        #[arg(long, default_value = "")]
        after: String,
    },
    /// One user: profile, wallets with balances, instruments with their verification
    /// state (micro-deposits of a bank account awaiting it), recent payments.
    User {
        /// The user's id (`ledgerctl admin users --email …` finds it).
        user_id: String,
        /// Payments shown (0: the server's default of 50; at most 200).
        #[arg(long, default_value_t = 0)]
        payments: u32,
        /// The payments cursor printed by the previous call.
        #[arg(long, default_value = "")]
        after: String,
    },
    /// Ledger accounts in id order, a page at a time.
    Accounts {
        /// Accounts per page (0: the server's default of 50; at most 1000).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// The cursor printed at the end of the previous page.
        #[arg(long, default_value = "")]
        after: String,
    },
    /// Payments waiting for a review, oldest first, with the risk reasons and their age.
    Reviews {
        /// Items shown (0: the server's default of 50; at most 200).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
}

/// An instant as RFC 3339 at `--utc-offset`; `-` for 0 (never).
fn when(ns: u64, offset: i32) -> String {
    if ns == 0 {
        return "-".into();
    }
    present::time_text(ns, offset)
}

fn age(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h {}m", secs / 3600, secs / 60 % 60),
        _ => format!("{}d {}h", secs / 86_400, secs / 3600 % 24),
    }
}

fn next_page(cursor: &str, flag: &str) {
    if !cursor.is_empty() {
        outln!("more: {flag} {cursor}");
    }
}

fn user_json(u: &wire::UserSummary) -> serde_json::Value {
    json!({"user_id": u.user_id, "name": u.name, "email": u.email, "registered_at_ns": u.registered_at_ns,
           "totp_enabled": u.totp_enabled, "erased": u.erased})
}

fn payment_json(p: &wire::Payment) -> serde_json::Value {
    json!({"payment_id": p.payment_id, "kind": p.kind, "status": p.status, "reason": p.reason,
           "amount": p.amount, "fee": p.fee, "currency": p.currency, "funding": p.funding,
           "sender_id": p.sender_id, "receiver_id": p.receiver_id, "created_at_ns": p.created_at_ns,
           "risk_score": p.risk_score, "risk_decision": p.risk_decision, "risk_reasons": p.risk_reasons})
}

fn instrument_json(i: &wire::SupportInstrument) -> serde_json::Value {
    let shown = i.instrument.clone().unwrap_or_default();
    let status = wire::InstrumentStatus::try_from(shown.status).map_or("UNKNOWN", |s| s.as_str_name());
    json!({"instrument_id": shown.instrument_id, "display": shown.display, "status": status,
           "is_default": shown.is_default, "micro_deposits": i.micro_deposits,
           "failed_attempts": i.failed_attempts, "added_at_ns": i.added_at_ns})
}

fn print_users(response: &wire::ListUsersResponse, json: bool, offset: i32) {
    if json {
        let users: Vec<_> = response.users.iter().map(user_json).collect();
        outln!("{}", json!({"users": users, "next_cursor": response.next_cursor}));
        return;
    }
    outln!("{:<40} {:<24} {:<32} {:<25} FLAGS", "USER", "NAME", "EMAIL", "REGISTERED");
    for u in &response.users {
        let flags = [(u.totp_enabled, "totp"), (u.erased, "erased")];
        let flags: Vec<&str> = flags.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect();
        outln!(
            "{:<40} {:<24} {:<32} {:<25} {}",
            u.user_id,
            u.name,
            u.email,
            when(u.registered_at_ns, offset),
            flags.join(",")
        );
    }
    if response.users.is_empty() {
        outln!("(no users)");
    }
    next_page(&response.next_cursor, "--after");
}

fn print_payment_rows(payments: &[wire::Payment], offset: i32) {
    outln!(
        "  {:<40} {:<10} {:<18} {:>12} {:<4} {:<25} REASON",
        "PAYMENT",
        "KIND",
        "STATUS",
        "AMOUNT",
        "CUR",
        "CREATED"
    );
    for p in payments {
        outln!(
            "  {:<40} {:<10} {:<18} {:>12} {:<4} {:<25} {}",
            p.payment_id,
            p.kind,
            p.status,
            p.amount,
            p.currency,
            when(p.created_at_ns, offset),
            p.reason
        );
    }
}

fn print_user(user: &wire::AdminUser, json: bool, offset: i32) {
    let profile = user.profile.clone().unwrap_or_default();
    if json {
        let wallets: Vec<_> = user
            .wallets
            .iter()
            .map(|w| json!({"currency": w.currency, "account_id": w.account_id, "balance": w.balance, "available": w.available}))
            .collect();
        let out = json!({
            "profile": {"user_id": profile.user_id, "name": profile.name, "email": profile.email, "phone": profile.phone,
                        "address": profile.address, "date_of_birth": profile.date_of_birth,
                        "totp_enabled": profile.totp_enabled, "registered_at_ns": profile.registered_at_ns},
            "wallets": wallets,
            "instruments": user.instruments.iter().map(instrument_json).collect::<Vec<_>>(),
            "payments": user.payments.iter().map(payment_json).collect::<Vec<_>>(),
            "next_payments_cursor": user.next_payments_cursor,
        });
        outln!("{out}");
        return;
    }
    outln!("user       {}", profile.user_id);
    outln!("name       {}", profile.name);
    outln!("email      {}", profile.email);
    outln!("phone      {}", profile.phone);
    outln!("address    {}", profile.address);
    outln!("born       {}", profile.date_of_birth);
    outln!("totp       {}", if profile.totp_enabled { "enabled" } else { "off" });
    outln!("registered {}", when(profile.registered_at_ns, offset));
    outln!("wallets:");
    for w in &user.wallets {
        outln!("  {:<4} {:>16} available {:>16}  account {}", w.currency, w.balance, w.available, w.account_id);
    }
    outln!("instruments:");
    for i in &user.instruments {
        let shown = i.instrument.clone().unwrap_or_default();
        let status = wire::InstrumentStatus::try_from(shown.status).map_or("UNKNOWN", |s| s.as_str_name());
        let mut line = format!("  {:<22} {:<36} {status}", shown.instrument_id, shown.display);
        if shown.is_default {
            line.push_str(" (default)");
        }
        if !i.micro_deposits.is_empty() {
            let amounts: Vec<String> = i.micro_deposits.iter().map(u32::to_string).collect();
            line.push_str(&format!("; micro-deposits {} (minor units)", amounts.join(" and ")));
        }
        if i.failed_attempts > 0 {
            line.push_str(&format!("; {} wrong answers", i.failed_attempts));
        }
        outln!("{line}");
    }
    outln!("payments (newest first):");
    print_payment_rows(&user.payments, offset);
    next_page(&user.next_payments_cursor, "--after");
}

fn print_accounts(response: &wire::ListAccountsResponse, connection: &Connection) -> Result<(), String> {
    if connection.json {
        let accounts: Vec<_> = response
            .accounts
            .iter()
            .map(|a| {
                json!({"account_id": a.account_id, "currency": a.currency, "owner_id": a.owner_id,
                       "opened_at_ns": a.opened_at_ns, "debits_posted": a.debits_posted,
                       "credits_posted": a.credits_posted, "debits_pending": a.debits_pending,
                       "credits_pending": a.credits_pending})
            })
            .collect();
        let out = json!({"accounts": accounts, "next_cursor": response.next_cursor,
                         "applied_position": response.applied_position});
        outln!("{out}");
        return Ok(());
    }
    outln!(
        "{:<40} {:<4} {:<40} {:>20} {:>20} {:>20} {:>20}",
        "ACCOUNT",
        "CUR",
        "OWNER",
        "DEBITS_POSTED",
        "CREDITS_POSTED",
        "DEBITS_PEND",
        "CREDITS_PEND"
    );
    for a in &response.accounts {
        outln!(
            "{:<40} {:<4} {:<40} {:>20} {:>20} {:>20} {:>20}",
            a.account_id,
            a.currency,
            a.owner_id,
            connection.money(&a.debits_posted, &a.currency)?,
            connection.money(&a.credits_posted, &a.currency)?,
            connection.money(&a.debits_pending, &a.currency)?,
            connection.money(&a.credits_pending, &a.currency)?
        );
    }
    next_page(&response.next_cursor, "--after");
    Ok(())
}

fn print_reviews(response: &wire::ListReviewQueueResponse, json: bool, offset: i32) {
    if json {
        let items: Vec<_> = response
            .items
            .iter()
            .map(|i| {
                json!({"payment": i.payment.as_ref().map(payment_json), "waiting_secs": i.waiting_secs,
                       "in_review_since_ns": i.in_review_since_ns, "times_out_at_ns": i.times_out_at_ns})
            })
            .collect();
        outln!("{}", json!({"items": items, "queue_length": response.queue_length}));
        return;
    }
    outln!("{} payments in review (oldest first)", response.queue_length);
    outln!("{:<40} {:>12} {:<4} {:<10} {:<25} REASONS", "PAYMENT", "AMOUNT", "CUR", "WAITING", "TIMES OUT");
    for item in &response.items {
        let p = item.payment.clone().unwrap_or_default();
        outln!(
            "{:<40} {:>12} {:<4} {:<10} {:<25} {}",
            p.payment_id,
            p.amount,
            p.currency,
            age(item.waiting_secs),
            when(item.times_out_at_ns, offset),
            p.risk_reasons.join("; ")
        );
    }
}

pub async fn run(connection: &Connection, command: AdminCommand) -> Result<bool, String> {
    let mut admin = wire::admin_client::AdminClient::new(connection.channel().await?);
    let (json, offset) = (connection.json, connection.offset()?);
    match command {
        AdminCommand::Users { email, id, limit, after } => {
            let request = wire::ListUsersRequest {
                email: email.unwrap_or_default(),
                user_id: id.unwrap_or_default(),
                limit,
                after,
            };
            let response = admin.list_users(connection.request(request)?).await.map_err(status_text)?.into_inner();
            print_users(&response, json, offset);
        }
        AdminCommand::User { user_id, payments, after } => {
            let request = wire::GetUserRequest { user_id, payments_limit: payments, payments_after: after };
            let response = admin.get_user(connection.request(request)?).await.map_err(status_text)?.into_inner();
            print_user(&response, json, offset);
        }
        AdminCommand::Accounts { limit, after } => {
            let request = wire::ListAccountsRequest { limit, after };
            let response = admin.list_accounts(connection.request(request)?).await.map_err(status_text)?.into_inner();
            print_accounts(&response, connection)?;
        }
        AdminCommand::Reviews { limit } => {
            let request = wire::ListReviewQueueRequest { limit };
            let response =
                admin.list_review_queue(connection.request(request)?).await.map_err(status_text)?.into_inner();
            print_reviews(&response, json, offset);
        }
    }
    Ok(true)
}
