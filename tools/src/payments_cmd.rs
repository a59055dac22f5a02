//! `ledgerctl` commands of the payments API: pay, request, answer, topup, withdraw,
//! payments, refund, review. Users call with their session token (`ledgerctl login`);
//! `review` needs an admin token. Every command that creates a payment takes
//! `--key`, the idempotency key: running it again returns the same payment.

use clap::Subcommand;
use ledger_proto::api::v1 as wire;
use serde_json::json;

use crate::client::{status_text, Connection};

#[derive(Subcommand)]
pub enum PaymentsCommand {
    /// Send money to another user (by --to-user or --to-email).
    Pay {
        #[arg(long)]
        key: String,
        #[arg(long, default_value = "")]
        to_user: String,
        #[arg(long, default_value = "")]
        to_email: String,
        /// Decimal, in the currency's major unit ("12.50").
        #[arg(long, default_value = "")]
        amount: String,
        #[arg(long, default_value = "")]
        currency: String,
        /// wallet, bank_account, card or digital_wallet.
        #[arg(long, default_value = "wallet")]
        funding: String,
        #[arg(long, default_value = "")]
        instrument: String,
        #[arg(long, default_value = "")]
        note: String,
        /// Pay in another currency: a quote from `ledgerctl fx quote` (amount and
        /// currency may then be left out: the quote's are used).
        #[arg(long, default_value = "")]
        quote: String,
    },
    /// Ask another user for money.
    Request {
        #[arg(long)]
        key: String,
        #[arg(long, default_value = "")]
        from_user: String,
        #[arg(long, default_value = "")]
        from_email: String,
        #[arg(long)]
        amount: String,
        #[arg(long)]
        currency: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Approve (paying with --funding/--instrument) or --decline a request made to you.
    Answer {
        payment_id: String,
        #[arg(long)]
        decline: bool,
        #[arg(long, default_value = "wallet")]
        funding: String,
        #[arg(long, default_value = "")]
        instrument: String,
    },
    /// Move money into your wallet from a linked bank account, card or digital wallet.
    Topup {
        #[arg(long)]
        key: String,
        #[arg(long)]
        amount: String,
        #[arg(long)]
        currency: String,
        #[arg(long)]
        instrument: String,
    },
    /// Move money from your wallet to a linked bank account.
    Withdraw {
        #[arg(long)]
        key: String,
        #[arg(long)]
        amount: String,
        #[arg(long)]
        currency: String,
        #[arg(long)]
        instrument: String,
    },
    /// Your payments (an admin: every payment), or one payment with its steps.
    Payments { payment_id: Option<String> },
    /// Refund a payment you received (or, as an admin, any), fully or by --amount.
    Refund {
        payment_id: String,
        #[arg(long)]
        refund_id: String,
        #[arg(long, default_value = "")]
        amount: String,
    },
    /// The review queue (admin): list, or --approve / --reject one payment.
    Review {
        payment_id: Option<String>,
        #[arg(long, conflicts_with = "reject")]
        approve: bool,
        #[arg(long)]
        reject: bool,
    },
}

fn payment_json(p: &wire::Payment) -> serde_json::Value {
    json!({
        "payment_id": p.payment_id, "kind": p.kind, "status": p.status, "reason": p.reason, "state": p.state,
        "funding": p.funding, "sender_id": p.sender_id, "receiver_id": p.receiver_id, "amount": p.amount,
        "fee": p.fee, "currency": p.currency, "refunded": p.refunded, "created_at_ns": p.created_at_ns,
        "risk_score": p.risk_score, "risk_decision": p.risk_decision, "risk_reasons": p.risk_reasons,
        "transfer_ids": p.transfer_ids,
        "from_name": p.from_name, "from_email": p.from_email, "to_name": p.to_name, "to_email": p.to_email,
        "note": p.note,
        "steps": p.steps.iter().map(|s| json!({"at_ns": s.at_ns, "step": s.step, "outcome": s.outcome, "detail": s.detail})).collect::<Vec<_>>(),
    })
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

fn print_payments(payments: &[wire::Payment], json: bool) {
    if json {
        println!("{}", json!({ "payments": payments.iter().map(payment_json).collect::<Vec<_>>() }));
        return;
    }
    println!(
        "{:<40} {:<10} {:<18} {:>12} {:<4} {:<14} {:<20} {:<20} {:<24} REASON",
        "PAYMENT", "KIND", "STATUS", "AMOUNT", "CUR", "FUNDING", "FROM", "TO", "NOTE"
    );
    for p in payments {
        println!(
            "{:<40} {:<10} {:<18} {:>12} {:<4} {:<14} {:<20} {:<20} {:<24} {}",
            p.payment_id,
            p.kind,
            p.status,
            p.amount,
            p.currency,
            p.funding,
            party_cell(&p.from_name, 20),
            party_cell(&p.to_name, 20),
            party_cell(&p.note, 24),
            p.reason
        );
    }
}

fn print_payment(p: &wire::Payment, json: bool) {
    if json {
        println!("{}", payment_json(p));
        return;
    }
    print_payments(std::slice::from_ref(p), false);
    println!("from {}", party_full(&p.from_name, &p.from_email));
    println!("to   {}", party_full(&p.to_name, &p.to_email));
    if !p.note.is_empty() {
        println!("note {}", p.note);
    }
    println!(
        "fee {} {}, refunded {}, risk {} ({}) {}",
        p.fee,
        p.currency,
        p.refunded,
        p.risk_decision,
        p.risk_score,
        p.risk_reasons.join(", ")
    );
    println!("state {}; ledger transfers: {}", p.state, p.transfer_ids.join(", "));
    for s in &p.steps {
        println!("  {:<22} {:<22} {:<16} {}", s.at_ns, s.step, s.outcome, s.detail);
    }
}

pub async fn run(connection: &Connection, command: PaymentsCommand) -> Result<bool, String> {
    let mut payments = wire::payments_client::PaymentsClient::new(connection.channel().await?);
    let json = connection.json;
    let payment = match command {
        PaymentsCommand::Pay { key, to_user, to_email, amount, currency, funding, instrument, note, quote } => {
            let request = wire::SendRequest {
                idempotency_key: key,
                receiver_user_id: to_user,
                receiver_email: to_email,
                amount,
                currency,
                funding,
                instrument_id: instrument,
                note,
                quote_id: quote,
            };
            payments.send(connection.request(request)?).await
        }
        PaymentsCommand::Request { key, from_user, from_email, amount, currency, note } => {
            let request = wire::RequestMoneyRequest {
                idempotency_key: key,
                payer_user_id: from_user,
                payer_email: from_email,
                amount,
                currency,
                note,
            };
            payments.request_money(connection.request(request)?).await
        }
        PaymentsCommand::Answer { payment_id, decline, funding, instrument } => {
            let request =
                wire::AnswerRequestRequest { payment_id, approve: !decline, funding, instrument_id: instrument };
            payments.answer_request(connection.request(request)?).await
        }
        PaymentsCommand::Topup { key, amount, currency, instrument } => {
            let request = wire::TopUpRequest { idempotency_key: key, amount, currency, instrument_id: instrument };
            payments.top_up(connection.request(request)?).await
        }
        PaymentsCommand::Withdraw { key, amount, currency, instrument } => {
            let request = wire::WithdrawRequest { idempotency_key: key, amount, currency, instrument_id: instrument };
            payments.withdraw(connection.request(request)?).await
        }
        PaymentsCommand::Payments { payment_id: Some(payment_id) } => {
            payments.get_payment(connection.request(wire::GetPaymentRequest { payment_id })?).await
        }
        PaymentsCommand::Payments { payment_id: None } => {
            let list = payments.list_payments(connection.request(wire::ListPaymentsRequest {})?).await;
            print_payments(&list.map_err(status_text)?.into_inner().payments, json);
            return Ok(true);
        }
        PaymentsCommand::Refund { payment_id, refund_id, amount } => {
            payments.refund(connection.request(wire::RefundRequest { payment_id, amount, refund_id })?).await
        }
        PaymentsCommand::Review { payment_id: Some(payment_id), approve, reject } => {
            if approve == reject {
                return Err("give --approve or --reject".into());
            }
            payments.review_payment(connection.request(wire::ReviewPaymentRequest { payment_id, approve })?).await
        }
        PaymentsCommand::Review { payment_id: None, .. } => {
            let list = payments.list_reviews(connection.request(wire::ListReviewsRequest {})?).await;
            print_payments(&list.map_err(status_text)?.into_inner().payments, json);
            return Ok(true);
        }
    };
    print_payment(&payment.map_err(status_text)?.into_inner(), json);
    Ok(true)
}
