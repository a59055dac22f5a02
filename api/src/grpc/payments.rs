//! The `ledger.v1.Payments` gRPC service over the platform's [`Payments`].

use std::sync::Arc;

use ledger_core::money::{format_amount, parse_amount, Currency};
use ledger_platform::fx::Fx;
use ledger_platform::payments::list::{Listing, PaymentFilter};
use ledger_platform::payments::{NewPayment, PaymentView, Payments};
use ledger_platform::users::Users;
use ledger_proto::api::v1 as wire;
use projections::worker::Projector;
use tonic::{Request, Response, Status};

use super::status;
use super::users::Principal;
use crate::auth::{Role, Tokens};
use crate::convert;
use crate::metrics::Metrics;

pub struct PaymentsService {
    pub payments: Arc<Payments>,
    pub fx: Arc<Fx>,
    pub users: Arc<Users>,
    pub tokens: Arc<Tokens>,
    pub metrics: Arc<Metrics>,
    /// Statements read the wallets' balances and movements from the read models.
    pub projector: Arc<Projector>,
    pub store: Arc<dyn ledger_engine::store::EventStore>,
}

fn amount(text: &str, currency: Currency) -> Result<u64, Status> {
    let minor = parse_amount(text, currency).map_err(|e| Status::invalid_argument(format!("amount: {e}")))?;
    u64::try_from(minor).map_err(|_| Status::invalid_argument("amount: too large"))
}

pub(crate) fn payment_wire(p: PaymentView) -> wire::Payment {
    let currency = p.currency;
    // Only a stream with no created event has no currency; its amounts show empty.
    let show = |minor: u64| currency.map_or(String::new(), |c| format_amount(u128::from(minor), c));
    let (risk_score, risk_decision, risk_reasons) = match p.risk {
        Some(risk) => (risk.score, risk.decision, risk.reasons),
        None => (0, String::new(), Vec::new()),
    };
    wire::Payment {
        payment_id: p.id.to_string(),
        kind: p.kind,
        status: p.status.into(),
        reason: p.reason,
        state: p.state,
        funding: p.funding,
        sender_id: p.sender_id.to_string(),
        receiver_id: p.receiver_id.to_string(),
        amount: show(p.amount),
        fee: show(p.fee),
        currency: currency.map_or(String::new(), |c| c.code().to_string()),
        refunded: show(p.refunded),
        created_at_ns: p.created_at_ns,
        updated_at_ns: p.updated_at_ns,
        risk_score,
        risk_decision,
        risk_reasons,
        transfer_ids: p.transfer_ids,
        steps: p
            .steps
            .into_iter()
            .map(|s| wire::PaymentStep { at_ns: s.at_ns, step: s.step, outcome: s.outcome, detail: s.detail })
            .collect(),
        receive_amount: p.receive.map_or(String::new(), |(c, minor)| format_amount(u128::from(minor), c)),
        receive_currency: p.receive.map_or(String::new(), |(c, _)| c.code().to_string()),
        from_name: p.from_name,
        from_email: p.from_email,
        to_name: p.to_name,
        to_email: p.to_email,
        note: p.note,
    }
}

fn payment_id(text: &str) -> Result<u128, Status> {
    convert::parse_u128("payment_id", text)
}

impl PaymentsService {
    async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        Principal::of(&self.users, &self.tokens, request).await
    }

    /// The user who calls (`Some`), or an admin (`None`): the callers that may look at
    /// and refund payments.
    async fn viewer<T>(&self, request: &Request<T>) -> Result<Option<u128>, Status> {
        match self.principal(request).await? {
            Principal::User(user) => Ok(Some(user)),
            Principal::Role(Role::Admin) => Ok(None),
            Principal::Role(role) => {
                Err(Status::permission_denied(format!("role {role:?} may not use the payments API")))
            }
        }
    }

    async fn user<T>(&self, request: &Request<T>) -> Result<u128, Status> {
        self.principal(request).await?.user("this call needs a user's session")
    }

    async fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.principal(request).await?.admin()
    }

    /// A page of `listing`, with the cursor of the next.
    async fn page(
        &self,
        listing: Listing,
        filter: &PaymentFilter,
        limit: u32,
        after: &str,
    ) -> Result<wire::ListPaymentsResponse, Status> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let (payments, next) =
            self.payments.list(listing, filter, list_cursor(after)?, limit).await.map_err(status::payments)?;
        Ok(wire::ListPaymentsResponse {
            payments: payments.into_iter().map(payment_wire).collect(),
            next_cursor: next.map_or(String::new(), |(ns, id)| list_cursor_text(ns, id)),
        })
    }

    /// A top-up of the user's wallet from one of their instruments, or a withdrawal
    /// from it to their bank account.
    async fn own_wallet_payment(
        &self,
        user: u128,
        kind: &'static str,
        idempotency_key: &str,
        amount_text: &str,
        currency: &str,
        instrument_id: &str,
    ) -> Result<wire::Payment, Status> {
        let currency = convert::parse_currency("currency", currency)?;
        let amount = amount(amount_text, currency)?;
        let instrument = self.users.funding_instrument(user, instrument_id).await.map_err(status::users)?;
        let funding = if kind == "withdrawal" {
            if instrument.kind != "bank_account" {
                return Err(Status::invalid_argument("instrument_id: withdrawals go to a bank account"));
            }
            "wallet".to_string()
        } else {
            instrument.kind.to_string()
        };
        let new = NewPayment {
            kind,
            sender: user,
            receiver: user,
            currency,
            amount,
            funding,
            instrument_id: instrument_id.to_string(),
            note: String::new(),
            quote_id: String::new(),
        };
        self.payments.create(user, idempotency_key, new).await.map(payment_wire).map_err(status::payments)
    }

    /// The other party, by id or by email; they must exist and not be the caller.
    async fn counterparty(&self, caller: u128, field: &str, user_id: &str, email: &str) -> Result<u128, Status> {
        let id = match (user_id.is_empty(), email.is_empty()) {
            (false, true) => convert::parse_u128(format!("{field}_user_id"), user_id)?,
            (true, false) => {
                if email.len() > ledger_platform::users::profile::EMAIL_BYTES_MAX {
                    return Err(Status::invalid_argument(format!("{field}_email: too long")));
                }
                self.users
                    .find_by_email(email)
                    .await
                    .map_err(status::users)?
                    .ok_or_else(|| Status::not_found(format!("no user with that {field}_email")))?
            }
            _ => {
                return Err(Status::invalid_argument(format!("give exactly one of {field}_user_id and {field}_email")))
            }
        };
        if id == caller {
            return Err(Status::invalid_argument(format!("the {field} is yourself")));
        }
        if !self.users.exists(id).await.map_err(status::users)? {
            return Err(Status::not_found(format!("{field} not found")));
        }
        Ok(id)
    }
}

#[tonic::async_trait]
impl wire::payments_server::Payments for PaymentsService {
    async fn send(&self, request: Request<wire::SendRequest>) -> Result<Response<wire::Payment>, Status> {
        let result = async {
            let sender = self.user(&request).await?;
            let r = request.get_ref();
            let wait = wait_of(r.wait_ms)?;
            let (currency, amount) = if r.quote_id.is_empty() {
                let currency = convert::parse_currency("currency", &r.currency)?;
                (currency, amount(&r.amount, currency)?)
            } else {
                if r.quote_id.len() > 64 {
                    return Err(Status::invalid_argument("quote_id: too long"));
                }
                if !matches!(r.funding.as_str(), "" | "wallet") || !r.instrument_id.is_empty() {
                    return Err(Status::invalid_argument("funding: a cross-currency payment is paid from the wallet"));
                }
                let quote = self.fx.peek(sender, &r.quote_id).await.map_err(status::fx)?;
                if !r.currency.is_empty() && convert::parse_currency("currency", &r.currency)? != quote.from {
                    return Err(Status::invalid_argument("currency: as in the quote, or empty"));
                }
                if !r.amount.is_empty() && amount(&r.amount, quote.from)? != quote.amounts.from {
                    return Err(Status::invalid_argument("amount: as in the quote, or empty"));
                }
                (quote.from, quote.amounts.from)
            };
            let receiver = self.counterparty(sender, "receiver", &r.receiver_user_id, &r.receiver_email).await?;
            let funding = if r.funding.is_empty() { "wallet".to_string() } else { r.funding.clone() };
            self.payments.check_funding(sender, &funding, &r.instrument_id).await.map_err(status::payments)?;
            let new = NewPayment {
                kind: "send",
                sender,
                receiver,
                currency,
                amount,
                funding,
                instrument_id: r.instrument_id.clone(),
                note: r.note.clone(),
                quote_id: r.quote_id.clone(),
            };
            let payment = match wait {
                None => self.payments.create(sender, &r.idempotency_key, new).await,
                Some(wait) => self.payments.create_settled(sender, &r.idempotency_key, new, wait).await,
            };
            payment.map(payment_wire).map_err(status::payments)
        }
        .await;
        self.metrics.answer("Payments/Send", result)
    }

    async fn request_money(
        &self,
        request: Request<wire::RequestMoneyRequest>,
    ) -> Result<Response<wire::Payment>, Status> {
        let result = async {
            let requester = self.user(&request).await?;
            let r = request.get_ref();
            let currency = convert::parse_currency("currency", &r.currency)?;
            let amount = amount(&r.amount, currency)?;
            let payer = self.counterparty(requester, "payer", &r.payer_user_id, &r.payer_email).await?;
            let new = NewPayment {
                kind: "request",
                sender: payer,
                receiver: requester,
                currency,
                amount,
                funding: String::new(),
                instrument_id: String::new(),
                note: r.note.clone(),
                quote_id: String::new(),
            };
            self.payments.create(requester, &r.idempotency_key, new).await.map(payment_wire).map_err(status::payments)
        }
        .await;
        self.metrics.answer("Payments/RequestMoney", result)
    }

    async fn answer_request(
        &self,
        request: Request<wire::AnswerRequestRequest>,
    ) -> Result<Response<wire::Payment>, Status> {
        let result = async {
            let payer = self.user(&request).await?;
            let r = request.into_inner();
            let id = payment_id(&r.payment_id)?;
            let funding = if r.funding.is_empty() { "wallet".to_string() } else { r.funding };
            self.payments
                .answer_request(id, payer, r.approve, funding, r.instrument_id)
                .await
                .map(payment_wire)
                .map_err(status::payments)
        }
        .await;
        self.metrics.answer("Payments/AnswerRequest", result)
    }

    async fn top_up(&self, request: Request<wire::TopUpRequest>) -> Result<Response<wire::Payment>, Status> {
        let result = async {
            let user = self.user(&request).await?;
            let r = request.get_ref();
            self.own_wallet_payment(user, "top_up", &r.idempotency_key, &r.amount, &r.currency, &r.instrument_id).await
        }
        .await;
        self.metrics.answer("Payments/TopUp", result)
    }

    async fn withdraw(&self, request: Request<wire::WithdrawRequest>) -> Result<Response<wire::Payment>, Status> {
        let result = async {
            let user = self.user(&request).await?;
            let r = request.get_ref();
            self.own_wallet_payment(user, "withdrawal", &r.idempotency_key, &r.amount, &r.currency, &r.instrument_id)
                .await
        }
        .await;
        self.metrics.answer("Payments/Withdraw", result)
    }

    async fn get_payment(&self, request: Request<wire::GetPaymentRequest>) -> Result<Response<wire::Payment>, Status> {
        let result = async {
            let viewer = self.viewer(&request).await?;
            let r = request.get_ref();
            let id = payment_id(&r.payment_id)?;
            let payment = match wait_of(r.wait_ms)? {
                None => self.payments.get(id, viewer).await,
                Some(wait) => self.payments.get_settled(id, viewer, wait).await,
            };
            payment.map(payment_wire).map_err(status::payments)
        }
        .await;
        self.metrics.answer("Payments/GetPayment", result)
    }

    async fn list_payments(
        &self,
        request: Request<wire::ListPaymentsRequest>,
    ) -> Result<Response<wire::ListPaymentsResponse>, Status> {
        let result = async {
            let listing = self.viewer(&request).await?.map_or(Listing::All, Listing::OfUser);
            let r = request.get_ref();
            let word = |field: &str, text: &str| match text.len() {
                0 => Ok(None),
                1..=32 => Ok(Some(text.to_string())),
                _ => Err(Status::invalid_argument(format!("{field}: at most 32 bytes"))),
            };
            let filter = PaymentFilter {
                status: word("status", &r.status)?,
                kind: word("kind", &r.kind)?,
                currency: if r.currency.is_empty() {
                    None
                } else {
                    Some(convert::parse_currency("currency", &r.currency)?)
                },
            };
            self.page(listing, &filter, r.limit, &r.after).await
        }
        .await;
        self.metrics.answer("Payments/ListPayments", result)
    }

    async fn refund(&self, request: Request<wire::RefundRequest>) -> Result<Response<wire::Payment>, Status> {
        let result = async {
            let by = self.viewer(&request).await?;
            let r = request.into_inner();
            let id = payment_id(&r.payment_id)?;
            let amount = if r.amount.is_empty() {
                None
            } else {
                let shown = self.payments.get(id, by).await.map_err(status::payments)?;
                let currency = shown.currency.ok_or_else(|| Status::internal("payment currency"))?;
                Some(amount(&r.amount, currency)?)
            };
            self.payments.refund(id, by, &r.refund_id, amount).await.map(payment_wire).map_err(status::payments)
        }
        .await;
        self.metrics.answer("Payments/Refund", result)
    }

    async fn review_payment(
        &self,
        request: Request<wire::ReviewPaymentRequest>,
    ) -> Result<Response<wire::Payment>, Status> {
        let result = async {
            self.admin(&request).await?;
            let r = request.get_ref();
            self.payments
                .review(payment_id(&r.payment_id)?, r.approve)
                .await
                .map(payment_wire)
                .map_err(status::payments)
        }
        .await;
        self.metrics.answer("Payments/ReviewPayment", result)
    }

    async fn list_reviews(
        &self,
        request: Request<wire::ListReviewsRequest>,
    ) -> Result<Response<wire::ListPaymentsResponse>, Status> {
        let result = async {
            self.admin(&request).await?;
            let r = request.get_ref();
            self.page(Listing::InReview, &PaymentFilter::default(), r.limit, &r.after).await
        }
        .await;
        self.metrics.answer("Payments/ListReviews", result)
    }

    async fn get_statement(
        &self,
        request: Request<wire::GetStatementRequest>,
    ) -> Result<Response<wire::GetStatementResponse>, Status> {
        let result = self.statement(request).await;
        self.metrics.answer("Payments/GetStatement", result)
    }
}

/// The longest `GetPayment` and `Send` wait for a payment to settle, in milliseconds.
pub const WAIT_MS_MAX: u32 = 10_000;

/// A request's `wait_ms`: `None` for 0 (answer at once), INVALID_ARGUMENT above
/// `WAIT_MS_MAX`.
fn wait_of(wait_ms: u32) -> Result<Option<std::time::Duration>, Status> {
    match wait_ms {
        0 => Ok(None),
        1..=WAIT_MS_MAX => Ok(Some(std::time::Duration::from_millis(u64::from(wait_ms)))),
        _ => Err(Status::invalid_argument(format!("wait_ms: at most {WAIT_MS_MAX}"))),
    }
}

/// The cursor of a list of payments: `{created_ns}_{payment id}` of the last payment
/// of the previous page (the HTTP API's `next_cursor` is the same text).
fn list_cursor_text(created_ns: u64, id: u128) -> String {
    format!("{created_ns}_{id}")
}

/// The (created ns, id) a cursor of [`list_cursor_text`] names; `None` if it is not one.
pub fn parse_list_cursor(text: &str) -> Option<(u64, u128)> {
    let (ns, id) = text.split_once('_')?;
    Some((ns.parse().ok()?, id.parse().ok()?))
}

/// Reads a cursor of [`list_cursor_text`]; empty is the first page.
fn list_cursor(text: &str) -> Result<Option<(u64, u128)>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    parse_list_cursor(text)
        .map(Some)
        .ok_or_else(|| Status::invalid_argument("after: the next_cursor of an earlier page"))
}
