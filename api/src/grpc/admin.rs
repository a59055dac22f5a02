//! The `ledger.v1.Admin` gRPC service: what admins and support see of users, their
//! wallets, instruments and payments, the ledger's accounts and the review queue.
//! Only `admin` and `support` role tokens may call it; its answers carry personal data
//! and are never logged.

use std::sync::Arc;

use ledger_engine::store::EventStore;
use ledger_platform::payments::ops::{PaymentCursor, ReviewEntry, PAGE_PAYMENTS_MAX};
use ledger_platform::payments::Payments;
use ledger_platform::users::admin::{SupportInstrument, UserSummary, PAGE_USERS_MAX};
use ledger_platform::users::Users;
use ledger_proto::api::v1 as wire;
use projections::read_models::ACCOUNTS_PAGE_MAX;
use projections::worker::Projector;
use tonic::{Request, Response, Status};

use super::payments::payment_wire;
use super::status;
use super::users::{instrument_wire, profile_wire, wallet_wire, Principal};
use crate::auth::{Role, Tokens};
use crate::convert;
use crate::metrics::Metrics;
use crate::service::{model_status, READ_MODEL_WAIT};

/// The page size when a request leaves `limit` at 0.
pub const DEFAULT_PAGE: usize = 50;

pub struct AdminService {
    pub users: Arc<Users>,
    pub payments: Arc<Payments>,
    pub projector: Arc<Projector>,
    pub store: Arc<dyn EventStore>,
    pub tokens: Arc<Tokens>,
    pub metrics: Arc<Metrics>,
}

/// `limit` of a request: 0 is the default page, above `max` is refused.
fn page_limit(limit: u32, max: usize) -> Result<usize, Status> {
    match usize::try_from(limit) {
        Ok(0) => Ok(DEFAULT_PAGE.min(max)),
        Ok(limit) if limit <= max => Ok(limit),
        _ => Err(Status::invalid_argument(format!("limit: at most {max}"))),
    }
}

/// An id cursor: empty for the first page, else a decimal id.
fn id_cursor(field: &str, text: &str) -> Result<Option<u128>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    convert::parse_u128(field, text).map(Some)
}

/// A payments cursor, `{created_ns}-{payment id}`.
fn payment_cursor(text: &str) -> Result<Option<PaymentCursor>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || Status::invalid_argument("payments_after: the next_payments_cursor of an earlier answer");
    let (ns, id) = text.split_once('-').ok_or_else(bad)?;
    Ok(Some((ns.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?)))
}

fn summary_wire(u: UserSummary) -> wire::UserSummary {
    wire::UserSummary {
        user_id: u.user_id.to_string(),
        name: u.name,
        email: u.email,
        registered_at_ns: u.registered_at_ns,
        totp_enabled: u.totp_enabled,
        erased: u.erased,
    }
}

fn support_instrument_wire(i: SupportInstrument) -> wire::SupportInstrument {
    wire::SupportInstrument {
        instrument: Some(instrument_wire(i.instrument)),
        micro_deposits: i.micro_deposits,
        failed_attempts: i.failed_attempts,
        added_at_ns: i.added_ns,
    }
}

fn review_wire(entry: ReviewEntry, now_ns: u64) -> wire::ReviewItem {
    wire::ReviewItem {
        waiting_secs: now_ns.saturating_sub(entry.since_ns) / 1_000_000_000,
        in_review_since_ns: entry.since_ns,
        times_out_at_ns: entry.times_out_ns,
        payment: Some(payment_wire(entry.payment)),
    }
}

impl AdminService {
    /// Admins and support only.
    async fn staff<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match Principal::of(&self.users, &self.tokens, request).await? {
            Principal::Role(Role::Admin | Role::Support) => Ok(()),
            Principal::Role(role) => Err(Status::permission_denied(format!("role {role:?} may not use the admin API"))),
            Principal::User(_) => Err(Status::permission_denied("the admin API needs an admin or support token")),
        }
    }

    async fn list_users_inner(&self, r: &wire::ListUsersRequest) -> Result<wire::ListUsersResponse, Status> {
        let limit = page_limit(r.limit, PAGE_USERS_MAX)?;
        let one = match (r.email.is_empty(), r.user_id.is_empty()) {
            (true, true) => None,
            (false, true) => {
                if r.email.len() > ledger_platform::users::profile::EMAIL_BYTES_MAX {
                    return Err(Status::invalid_argument("email: too long"));
                }
                Some(self.users.find_by_email(&r.email).await.map_err(status::users)?)
            }
            (true, false) => Some(Some(convert::parse_u128("user_id", &r.user_id)?)),
            (false, false) => return Err(Status::invalid_argument("give at most one of email and user_id")),
        };
        if let Some(found) = one {
            let users = match found {
                Some(id) => match self.users.summary(id).await {
                    Ok(user) => vec![summary_wire(user)],
                    Err(ledger_platform::users::UsersError::NotFound(_)) => Vec::new(),
                    Err(error) => return Err(status::users(error)),
                },
                None => Vec::new(),
            };
            return Ok(wire::ListUsersResponse { users, next_cursor: String::new() });
        }
        let (users, next) = self.users.page(id_cursor("after", &r.after)?, limit).await.map_err(status::users)?;
        Ok(wire::ListUsersResponse {
            users: users.into_iter().map(summary_wire).collect(),
            next_cursor: next.map_or(String::new(), |id| id.to_string()),
        })
    }

    async fn get_user_inner(&self, r: &wire::GetUserRequest) -> Result<wire::AdminUser, Status> {
        let id = convert::parse_u128("user_id", &r.user_id)?;
        let limit = page_limit(r.payments_limit, PAGE_PAYMENTS_MAX)?;
        let after = payment_cursor(&r.payments_after)?;
        let profile = self.users.profile(id).await.map_err(status::users)?;
        let wallets = self.users.wallets(id).await.map_err(status::users)?;
        let instruments = self.users.instruments_for_support(id).await.map_err(status::users)?;
        let (payments, next) = self.payments.page_of_user(id, after, limit).await.map_err(status::payments)?;
        Ok(wire::AdminUser {
            profile: Some(profile_wire(profile)),
            wallets: wallets.into_iter().map(wallet_wire).collect(),
            instruments: instruments.into_iter().map(support_instrument_wire).collect(),
            payments: payments.into_iter().map(payment_wire).collect(),
            next_payments_cursor: next.map_or(String::new(), |(ns, id)| format!("{ns}-{id}")),
        })
    }

    async fn list_accounts_inner(&self, r: &wire::ListAccountsRequest) -> Result<wire::ListAccountsResponse, Status> {
        let limit = page_limit(r.limit, ACCOUNTS_PAGE_MAX)?;
        let after = id_cursor("after", &r.after)?;
        // Read-your-writes, as the ledger's reads: everything durable when the call came.
        let head = *self.store.watch_head().borrow();
        if !self.projector.wait_for(head, READ_MODEL_WAIT).await {
            return Err(Status::unavailable("the read models are behind the log; retry"));
        }
        let applied_position = self.projector.applied();
        let (accounts, more) = self.projector.models().accounts_page(after, limit).map_err(model_status)?;
        let next_cursor = match accounts.last() {
            Some(last) if more => last.id.to_string(),
            _ => String::new(),
        };
        let accounts = accounts
            .into_iter()
            .map(|a| wire::AccountSummary {
                account_id: a.id.to_string(),
                currency: a.currency.code().to_string(),
                owner_id: a.owner_id.to_string(),
                opened_at_ns: a.opened_ns,
                debits_posted: a.balances.debits_posted.to_string(),
                credits_posted: a.balances.credits_posted.to_string(),
                debits_pending: a.balances.debits_pending.to_string(),
                credits_pending: a.balances.credits_pending.to_string(),
            })
            .collect();
        Ok(wire::ListAccountsResponse { accounts, next_cursor, applied_position })
    }
}

#[tonic::async_trait]
impl wire::admin_server::Admin for AdminService {
    async fn list_users(
        &self,
        request: Request<wire::ListUsersRequest>,
    ) -> Result<Response<wire::ListUsersResponse>, Status> {
        let result = async {
            self.staff(&request).await?;
            self.list_users_inner(request.get_ref()).await
        }
        .await;
        self.metrics.answer("Admin/ListUsers", result)
    }

    async fn get_user(&self, request: Request<wire::GetUserRequest>) -> Result<Response<wire::AdminUser>, Status> {
        let result = async {
            self.staff(&request).await?;
            self.get_user_inner(request.get_ref()).await
        }
        .await;
        self.metrics.answer("Admin/GetUser", result)
    }

    async fn list_accounts(
        &self,
        request: Request<wire::ListAccountsRequest>,
    ) -> Result<Response<wire::ListAccountsResponse>, Status> {
        let result = async {
            self.staff(&request).await?;
            self.list_accounts_inner(request.get_ref()).await
        }
        .await;
        self.metrics.answer("Admin/ListAccounts", result)
    }

    async fn list_review_queue(
        &self,
        request: Request<wire::ListReviewQueueRequest>,
    ) -> Result<Response<wire::ListReviewQueueResponse>, Status> {
        let result = async {
            self.staff(&request).await?;
            let limit = page_limit(request.get_ref().limit, PAGE_PAYMENTS_MAX)?;
            let (entries, total) = self.payments.review_entries(limit).await.map_err(status::payments)?;
            let now = ledger_engine::clock::now_ns();
            Ok(wire::ListReviewQueueResponse {
                items: entries.into_iter().map(|e| review_wire(e, now)).collect(),
                queue_length: total as u64,
            })
        }
        .await;
        self.metrics.answer("Admin/ListReviewQueue", result)
    }
}
