//! `ledgerctl` commands of the payments API: pay, request, answer, topup, withdraw,
//! payments, refund, review. Users call with their session token (`ledgerctl login`);
//! `review` needs an admin token.
//!
//! A command that creates a payment takes `--key`, the idempotency key: running it
//! again with the same key returns the same payment. Without `--key` a random one is
//! made and printed on standard error, so a retry can reuse it. Such a command waits
//! for the outcome (`--no-wait` returns at once) and exits with its status: 0
//! completed (or created, with `--no-wait`), 1 failed or cancelled, 3 still pending
//! after `--wait-secs`, 4 held for review.

use clap::Subcommand;
use ledger_core::money::format_amount;
use ledger_proto::api::v1 as wire;
use serde_json::json;

use crate::client::{status_text, Connection};
use crate::present;
use crate::wait::{self, Outcome, WaitArgs};

#[derive(Subcommand)]
pub enum PaymentsCommand {
    /// Send money to another user (by --to-user or --to-email); waits for the outcome.
    Pay {
        /// Idempotency key: the same key again returns the same payment (default: a new random key).
        #[arg(long)]
        key: Option<String>,
        /// The receiver's user id.
        #[arg(long, default_value = "", hide_default_value = true)]
        to_user: String,
        /// The receiver's email address.
        #[arg(long, default_value = "", hide_default_value = true)]
        to_email: String,
        /// How much, in major units of --currency ("12.50").
        #[arg(long, default_value = "", hide_default_value = true)]
        amount: String,
        /// ISO 4217 code such as USD.
        #[arg(long, default_value = "", hide_default_value = true)]
        currency: String,
        /// Pay from: wallet, bank_account, card or digital_wallet.
        #[arg(long, default_value = "wallet")]
        funding: String,
        /// The linked instrument to pay from (with --funding other than wallet; default: your default one).
        #[arg(long, default_value = "", hide_default_value = true)]
        instrument: String,
        /// A note the receiver sees.
        #[arg(long, default_value = "", hide_default_value = true)]
        note: String,
        /// Pay in another currency: a quote from `ledgerctl fx quote` (amount and
        /// currency may then be left out: the quote's are used).
        #[arg(long, default_value = "", hide_default_value = true)]
        quote: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Ask another user for money; waits until the request is delivered.
    Request {
        /// Idempotency key (default: a new random key, printed on standard error).
        #[arg(long)]
        key: Option<String>,
        /// The payer's user id.
        #[arg(long, default_value = "", hide_default_value = true)]
        from_user: String,
        /// The payer's email address.
        #[arg(long, default_value = "", hide_default_value = true)]
        from_email: String,
        /// How much, in major units of --currency ("7.00").
        #[arg(long)]
        amount: String,
        /// ISO 4217 code such as USD.
        #[arg(long)]
        currency: String,
        /// A note the payer sees.
        #[arg(long, default_value = "", hide_default_value = true)]
        note: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Approve (paying with --funding/--instrument) or --decline a request made to you.
    Answer {
        /// The request's payment id.
        payment_id: String,
        /// Decline instead of paying.
        #[arg(long)]
        decline: bool,
        /// Pay from: wallet, bank_account, card or digital_wallet.
        #[arg(long, default_value = "wallet")]
        funding: String,
        /// The linked instrument to pay from.
        #[arg(long, default_value = "", hide_default_value = true)]
        instrument: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Move money into your wallet from a linked bank account, card or digital wallet.
    Topup {
        /// Idempotency key (default: a new random key, printed on standard error).
        #[arg(long)]
        key: Option<String>,
        /// How much, in major units of --currency ("100").
        #[arg(long)]
        amount: String,
        /// ISO 4217 code of the wallet to fill.
        #[arg(long)]
        currency: String,
        /// The linked instrument the money comes from (default: your default instrument).
        #[arg(long)]
        instrument: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Move money from your wallet to a linked bank account.
    Withdraw {
        /// Idempotency key (default: a new random key, printed on standard error).
        #[arg(long)]
        key: Option<String>,
        /// How much, in major units of --currency ("20").
        #[arg(long)]
        amount: String,
        /// ISO 4217 code of the wallet to take it from.
        #[arg(long)]
        currency: String,
        /// The linked bank account the money goes to (default: your verified bank account,
        /// the default one first).
        #[arg(long)]
        instrument: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Your payments (an admin: every payment), or one payment with its steps.
    Payments {
        /// One payment, shown with its steps and ledger transfers.
        payment_id: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Refund a payment you received (or, as an admin, any), fully or by --amount.
    Refund {
        /// The payment to refund.
        payment_id: String,
        /// The refund's idempotency key (default: a new random key, printed on standard error).
        #[arg(long)]
        refund_id: Option<String>,
        /// Refund only this much, in major units (default: all that is left).
        #[arg(long, default_value = "", hide_default_value = true)]
        amount: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// The review queue (admin): list, or --approve / --reject one payment.
    Review {
        /// The payment to decide on (without it: list the queue).
        payment_id: Option<String>,
        /// Let the payment go on.
        #[arg(long, conflicts_with = "reject")]
        approve: bool,
        /// Stop the payment: it is cancelled and held money goes back.
        #[arg(long)]
        reject: bool,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        page: PageArgs,
    },
}

/// Which page of a list: the server answers at most 200 payments a call.
#[derive(clap::Args, Debug)]
pub struct PageArgs {
    /// Payments on the page, 1 to 200 (default 50).
    #[arg(long, default_value_t = 0)]
    limit: u32,
    /// The cursor printed after the previous page (on standard error).
    #[arg(long, default_value = "")]
    after: String,
}

/// Prints a page, then where the next one starts (on standard error, so the page on
/// standard output stays one JSON array or table).
fn print_page(list: wire::ListPaymentsResponse, json: bool, offset: i32) {
    print_payments(&list.payments, json, offset);
    if !list.next_cursor.is_empty() {
        eprintln!("more: --after {}", list.next_cursor);
    }
}

fn payment_json(p: &wire::Payment, offset: i32) -> serde_json::Value {
    let time = |ns: u64| present::time_text(ns, offset);
    json!({
        "payment_id": p.payment_id, "kind": p.kind, "status": p.status, "reason": p.reason, "state": p.state,
        "funding": p.funding, "sender_id": p.sender_id, "receiver_id": p.receiver_id, "amount": p.amount,
        "fee": p.fee, "currency": p.currency, "refunded": p.refunded, "created_at": time(p.created_at_ns),
        "created_at_ns": p.created_at_ns,
        "risk_score": p.risk_score, "risk_decision": p.risk_decision, "risk_reasons": p.risk_reasons,
        "transfer_ids": p.transfer_ids,
        "from_name": p.from_name, "from_email": p.from_email, "to_name": p.to_name, "to_email": p.to_email,
        "note": p.note,
        "steps": p.steps.iter().map(|s| json!({"at": time(s.at_ns), "at_ns": s.at_ns, "step": s.step, "outcome": s.outcome, "detail": s.detail})).collect::<Vec<_>>(),
    })
}

fn amount_text(amount: &str, currency: &str) -> String {
    format!("{amount} {currency}").trim().to_string()
}

/// A party as a column shows it: the name, cut to `width` characters.
fn party_cell(name: &str, width: usize) -> String {
    if name.chars().count() <= width {
        return name.to_string();
    }
    let mut cut: String = name.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A party with their email when the server showed it ("Ana Silva <ana@example.com>").
fn party_full(name: &str, email: &str) -> String {
    if email.is_empty() {
        name.to_string()
    } else {
        format!("{name} <{email}>")
    }
}

fn print_payments(payments: &[wire::Payment], json: bool, offset: i32) {
    if json {
        let items: Vec<_> = payments.iter().map(|p| payment_json(p, offset)).collect();
        outln!("{}", json!({ "payments": items }));
        return;
    }
    outln!(
        "{:<40} {:<10} {:<18} {:>16} {:<14} {:<25} {:<20} {:<20} {:<24} REASON",
        "PAYMENT",
        "KIND",
        "STATUS",
        "AMOUNT",
        "FUNDING",
        "CREATED",
        "FROM",
        "TO",
        "NOTE"
    );
    for p in payments {
        outln!(
            "{:<40} {:<10} {:<18} {:>16} {:<14} {:<25} {:<20} {:<20} {:<24} {}",
            p.payment_id,
            p.kind,
            p.status,
            amount_text(&p.amount, &p.currency),
            p.funding,
            present::time_text(p.created_at_ns, offset),
            party_cell(&p.from_name, 20),
            party_cell(&p.to_name, 20),
            party_cell(&p.note, 24),
            wait::words(&p.reason)
        );
    }
}

fn print_payment(p: &wire::Payment, json: bool, offset: i32) {
    if json {
        outln!("{}", payment_json(p, offset));
        return;
    }
    print_payments(std::slice::from_ref(p), false, offset);
    outln!("from {}", party_full(&p.from_name, &p.from_email));
    outln!("to   {}", party_full(&p.to_name, &p.to_email));
    if !p.note.is_empty() {
        outln!("note {}", p.note);
    }
    outln!(
        "fee {}, refunded {}, risk {} ({}) {}",
        amount_text(&p.fee, &p.currency),
        amount_text(&p.refunded, &p.currency),
        p.risk_decision,
        p.risk_score,
        p.risk_reasons.join(", ")
    );
    outln!("state {}; ledger transfers: {}", p.state, p.transfer_ids.join(", "));
    for s in &p.steps {
        outln!("  {:<25} {:<22} {:<16} {}", present::time_text(s.at_ns, offset), s.step, s.outcome, s.detail);
    }
}

/// The key given, or a new random 128-bit one (hex) printed on standard error.
fn key_or_new(flag: &str, key: Option<String>) -> Result<String, String> {
    if let Some(key) = key {
        return Ok(key);
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random bytes for {flag}: {e}"))?;
    let key = ledger_core::chain::to_hex(&bytes);
    eprintln!("{flag} {key} (give it again to retry without paying twice)");
    Ok(key)
}

/// With `--minor`, an amount flag is an integer of minor units: the server takes major.
fn amount_flag(connection: &Connection, amount: String, currency: &str) -> Result<String, String> {
    if !connection.minor || amount.is_empty() {
        return Ok(amount);
    }
    let currency = present::currency("--currency", currency)?;
    let minor: u128 =
        amount.parse().map_err(|_| format!("--amount {amount:?}: with --minor, an integer count of minor units"))?;
    Ok(format_amount(minor, currency))
}

/// What a payment is about, in words: "12.50 USD to Bob Smith <bob@example.com>".
fn what(p: &wire::Payment, counterparty: &str) -> String {
    let amount = amount_text(&p.amount, &p.currency);
    // The other party by name where the server shows it, else as the command named them.
    let party = |name: &str, email: &str, id: &str| match (name.is_empty(), counterparty.is_empty()) {
        (false, _) => party_full(name, email),
        (true, false) => counterparty.to_string(),
        (true, true) => format!("user {id}"),
    };
    match p.kind.as_str() {
        "top_up" => format!("{amount} into your wallet"),
        "withdrawal" => format!("{amount} from your wallet to your bank account"),
        "request" => format!("{amount} from {}", party(&p.from_name, &p.from_email, &p.sender_id)),
        _ => format!("{amount} to {}", party(&p.to_name, &p.to_email, &p.receiver_id)),
    }
}

/// The signed-in user's instrument to use when `--instrument` is not given: a verified
/// one of `kind` (any kind when `None`), the default one first.
async fn default_instrument(connection: &Connection, kind: Option<wire::InstrumentKind>) -> Result<String, String> {
    let mut users = wire::users_client::UsersClient::new(connection.channel().await?);
    let list = users
        .list_instruments(connection.request(wire::UserRequest::default())?)
        .await
        .map_err(status_text)?
        .into_inner();
    let verified = |i: &&wire::PaymentInstrument| i.status == wire::InstrumentStatus::Verified as i32;
    let of_kind = |i: &&wire::PaymentInstrument| kind.is_none_or(|k| i.kind == k as i32);
    let mut usable: Vec<&wire::PaymentInstrument> = list.instruments.iter().filter(verified).filter(of_kind).collect();
    usable.sort_by_key(|i| !i.is_default);
    match (usable.first(), kind) {
        (Some(i), _) => Ok(i.instrument_id.clone()),
        (None, Some(kind)) => Err(format!(
            "--instrument: you have no verified {} (link one with `ledgerctl instruments add-…`)",
            kind.as_str_name().to_lowercase().replace('_', " ")
        )),
        (None, None) => {
            Err("--instrument: you have no verified instrument (add a card with `ledgerctl instruments add-card`)"
                .into())
        }
    }
}

/// The instrument kind a `--funding` value pays from (`None` for the wallet).
fn funding_kind(funding: &str) -> Option<wire::InstrumentKind> {
    match funding {
        "bank_account" => Some(wire::InstrumentKind::BankAccount),
        "card" => Some(wire::InstrumentKind::Card),
        "digital_wallet" => Some(wire::InstrumentKind::DigitalWallet),
        _ => None,
    }
}

/// `--instrument` as given, or the default one for `--funding` (none for the wallet).
async fn funding_instrument(connection: &Connection, funding: &str, instrument: String) -> Result<String, String> {
    match funding_kind(funding) {
        Some(kind) if instrument.is_empty() => default_instrument(connection, Some(kind)).await,
        _ => Ok(instrument),
    }
}

/// Waits (unless `--no-wait`) and prints the outcome; the exit status.
async fn settle(
    connection: &Connection,
    payments: &mut wire::payments_client::PaymentsClient<tonic::transport::Channel>,
    payment: wire::Payment,
    wait: &WaitArgs,
    counterparty: &str,
    declining: bool,
) -> Result<u8, String> {
    let offset = connection.offset()?;
    if wait.no_wait {
        if connection.quiet {
            outln!("{}", payment.payment_id);
        } else {
            print_payment(&payment, connection.json, offset);
        }
        return Ok(0);
    }
    let p = wait::until_settled(connection, payments, payment, wait).await?;
    let declined = declining && p.status == "cancelled";
    let outcome = if declined { Outcome::Completed } else { Outcome::of(&p) };
    if connection.quiet {
        outln!("{}", p.payment_id);
        return Ok(outcome.exit_status());
    }
    if connection.json {
        let mut value = payment_json(&p, offset);
        value["outcome"] = json!(outcome.word());
        outln!("{value}");
        return Ok(outcome.exit_status());
    }
    let what = what(&p, counterparty);
    let id = &p.payment_id;
    match outcome {
        Outcome::Completed if declined => outln!("declined: {what} (payment {id})"),
        Outcome::Completed => outln!("{}: {what} (payment {id})", p.status.replace('_', " ")),
        Outcome::Requested => outln!("requested: {what}; waiting for their answer (payment {id})"),
        Outcome::Failed => outln!("{}: {what}: {} (payment {id})", p.status, wait::words(&p.reason)),
        Outcome::InReview => {
            outln!("in review: {what} is held for a risk review; see `ledgerctl payments {id}`")
        }
        Outcome::Pending => outln!(
            "still {} after {} s: {what} ({}); see `ledgerctl payments {id}`",
            p.status,
            wait.wait_secs,
            wait::words(&p.state)
        ),
    }
    Ok(outcome.exit_status())
}

pub async fn run(connection: &Connection, command: PaymentsCommand) -> Result<u8, String> {
    let mut payments = wire::payments_client::PaymentsClient::new(connection.channel().await?);
    let json = connection.json;
    let offset = connection.offset()?;
    // Declining a request cancels it: the outcome asked for, not a failure.
    let mut declining = false;
    let (payment, wait, counterparty) = match command {
        PaymentsCommand::Pay { key, to_user, to_email, amount, currency, funding, instrument, note, quote, wait } => {
            let amount = amount_flag(connection, amount, &currency)?;
            let instrument_id = funding_instrument(connection, &funding, instrument).await?;
            let request = wire::SendRequest {
                idempotency_key: key_or_new("--key", key)?,
                receiver_user_id: to_user,
                receiver_email: to_email.clone(),
                amount,
                currency,
                funding,
                instrument_id,
                note,
                quote_id: quote,
                ..Default::default() // no wait_ms: --wait waits below, as for every command
            };
            (payments.send(connection.request(request)?).await, wait, to_email)
        }
        PaymentsCommand::Request { key, from_user, from_email, amount, currency, note, wait } => {
            let amount = amount_flag(connection, amount, &currency)?;
            let counterparty = from_email.clone();
            let request = wire::RequestMoneyRequest {
                idempotency_key: key_or_new("--key", key)?,
                payer_user_id: from_user,
                payer_email: from_email,
                amount,
                currency,
                note,
            };
            (payments.request_money(connection.request(request)?).await, wait, counterparty)
        }
        PaymentsCommand::Answer { payment_id, decline, funding, instrument, wait } => {
            declining = decline;
            let instrument_id = funding_instrument(connection, &funding, instrument).await?;
            let request = wire::AnswerRequestRequest { payment_id, approve: !decline, funding, instrument_id };
            (payments.answer_request(connection.request(request)?).await, wait, String::new())
        }
        PaymentsCommand::Topup { key, amount, currency, instrument, wait } => {
            let amount = amount_flag(connection, amount, &currency)?;
            let idempotency_key = key_or_new("--key", key)?;
            let instrument_id = match instrument {
                Some(id) => id,
                None => default_instrument(connection, None).await?,
            };
            let request = wire::TopUpRequest { idempotency_key, amount, currency, instrument_id };
            (payments.top_up(connection.request(request)?).await, wait, String::new())
        }
        PaymentsCommand::Withdraw { key, amount, currency, instrument, wait } => {
            let amount = amount_flag(connection, amount, &currency)?;
            let idempotency_key = key_or_new("--key", key)?;
            let instrument_id = match instrument {
                Some(id) => id,
                None => default_instrument(connection, Some(wire::InstrumentKind::BankAccount)).await?,
            };
            let request = wire::WithdrawRequest { idempotency_key, amount, currency, instrument_id };
            (payments.withdraw(connection.request(request)?).await, wait, String::new())
        }
        PaymentsCommand::Refund { payment_id, refund_id, amount, wait } => {
            let refund_id = key_or_new("--refund-id", refund_id)?;
            let request = wire::RefundRequest { payment_id, amount, refund_id };
            (payments.refund(connection.request(request)?).await, wait, String::new())
        }
        PaymentsCommand::Payments { payment_id: Some(payment_id), .. } => {
            let p = payments
                .get_payment(connection.request(wire::GetPaymentRequest { payment_id, ..Default::default() })?)
                .await;
            print_payment(&p.map_err(status_text)?.into_inner(), json, offset);
            return Ok(0);
        }
        PaymentsCommand::Payments { payment_id: None, page } => {
            let request = wire::ListPaymentsRequest { limit: page.limit, after: page.after, ..Default::default() };
            let list = payments.list_payments(connection.request(request)?).await;
            print_page(list.map_err(status_text)?.into_inner(), json, offset);
            return Ok(0);
        }
        PaymentsCommand::Review { payment_id: Some(payment_id), approve, reject, wait, .. } => {
            if approve == reject {
                return Err("--approve or --reject: give one".into());
            }
            // A rejected payment ends cancelled: the outcome asked for, not a failure.
            declining = reject;
            let request = wire::ReviewPaymentRequest { payment_id, approve };
            (payments.review_payment(connection.request(request)?).await, wait, String::new())
        }
        PaymentsCommand::Review { payment_id: None, page, .. } => {
            let request = wire::ListReviewsRequest { limit: page.limit, after: page.after };
            let list = payments.list_reviews(connection.request(request)?).await;
            print_page(list.map_err(status_text)?.into_inner(), json, offset);
            return Ok(0);
        }
    };
    let payment = payment.map_err(status_text)?.into_inner();
    settle(connection, &mut payments, payment, &wait, &counterparty, declining).await
}
