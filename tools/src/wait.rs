//! Waiting for a payment to finish: `GetPayment` polled with a short backoff, a spinner
//! on standard error when it is a terminal, and the outcome in words with its exit
//! status (see `present::EXIT_*`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Args;
use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;

use crate::client::{status_text, Connection};
use crate::present::{EXIT_FAILED, EXIT_IN_REVIEW, EXIT_PENDING};

/// The first pause between two looks at a payment; it doubles up to `POLL_MAX`.
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(1);
const SPINNER: [char; 4] = ['|', '/', '-', '\\'];

#[derive(Args, Clone)]
#[command(next_help_heading = "Waiting")]
pub struct WaitArgs {
    /// Return as soon as the payment is created, without waiting for its outcome.
    #[arg(long)]
    pub no_wait: bool,
    /// Wait at most this many seconds for the outcome (then exit 3: still pending).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub wait_secs: u64,
}

/// Where a payment stands once waiting stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// A request for money, delivered: the payer has to answer it.
    Requested,
    Failed,
    InReview,
    Pending,
}

impl Outcome {
    pub fn of(p: &wire::Payment) -> Outcome {
        match p.status.as_str() {
            "completed" | "refunded" | "partially_refunded" => Outcome::Completed,
            "failed" | "cancelled" => Outcome::Failed,
            "requires_review" => Outcome::InReview,
            "created" if p.kind == "request" && p.state == "awaiting_payer" => Outcome::Requested,
            _ => Outcome::Pending,
        }
    }

    pub fn exit_status(self) -> u8 {
        match self {
            Outcome::Completed | Outcome::Requested => 0,
            Outcome::Failed => EXIT_FAILED,
            Outcome::InReview => EXIT_IN_REVIEW,
            Outcome::Pending => EXIT_PENDING,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Requested => "requested",
            Outcome::Failed => "failed",
            Outcome::InReview => "in review",
            Outcome::Pending => "pending",
        }
    }
}

/// Polls the payment until it is no longer on its way or `wait.wait_secs` have passed.
pub async fn until_settled(
    connection: &Connection,
    payments: &mut wire::payments_client::PaymentsClient<Channel>,
    mut payment: wire::Payment,
    wait: &WaitArgs,
) -> Result<wire::Payment, String> {
    let started = Instant::now();
    let bound = Duration::from_secs(wait.wait_secs);
    let spinner = std::io::stderr().is_terminal();
    let mut pause = POLL_FIRST;
    let mut turn = 0usize;
    while Outcome::of(&payment) == Outcome::Pending {
        let left = bound.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        if spinner {
            eprint!("\r{} {} ({})   ", SPINNER[turn % SPINNER.len()], payment.status, payment.state);
            turn += 1;
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(POLL_MAX);
        let request = wire::GetPaymentRequest { payment_id: payment.payment_id.clone(), ..Default::default() };
        payment = payments.get_payment(connection.request(request)?).await.map_err(status_text)?.into_inner();
    }
    if spinner && turn > 0 {
        eprint!("\r{:60}\r", "");
    }
    Ok(payment)
}

/// A reason or state in words: "insufficient_funds" → "insufficient funds"; the ledger's
/// refusal of an overdraft on the payer's wallet is said the same way.
pub fn words(reason: &str) -> String {
    let plain = reason.replace(['_', ':'], " ");
    if reason.contains("debits would exceed credits") {
        return format!("insufficient funds ({plain})");
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_exit_statuses() {
        let payment = |kind: &str, status: &str, state: &str| wire::Payment {
            kind: kind.into(),
            status: status.into(),
            state: state.into(),
            ..Default::default()
        };
        assert_eq!(Outcome::of(&payment("send", "completed", "finished")).exit_status(), 0);
        assert_eq!(Outcome::of(&payment("send", "failed", "finished")).exit_status(), EXIT_FAILED);
        assert_eq!(Outcome::of(&payment("send", "requires_review", "in_review")).exit_status(), EXIT_IN_REVIEW);
        assert_eq!(Outcome::of(&payment("send", "processing", "next:capture")).exit_status(), EXIT_PENDING);
        assert_eq!(Outcome::of(&payment("request", "created", "awaiting_payer")), Outcome::Requested);
        assert_eq!(Outcome::of(&payment("send", "created", "assessing_risk")), Outcome::Pending);
        assert_eq!(words("insufficient_funds"), "insufficient funds");
        assert!(words("debits would exceed credits on the debit account").starts_with("insufficient funds ("));
    }
}
