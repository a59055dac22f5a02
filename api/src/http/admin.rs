//! The admin and support views over HTTP: users, one user with wallets, instruments and
//! payments, the ledger's accounts, and the review queue. Each handler calls the
//! `ledger.v1.Admin` method a gRPC client would; only `admin` and `support` role
//! tokens may (anyone else is refused exactly as over gRPC). The answers hold personal
//! data and are never logged.

use axum::extract::{Path, State as Shared};
use axum::http::StatusCode;
use axum::Json;
use ledger_platform::payments::ops::PAGE_PAYMENTS_MAX;
use ledger_proto::api::v1 as wire;
use ledger_proto::api::v1::admin_server::Admin as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, PageQuery, Params};
use super::ledger::renamed;
use super::payments::{payment_json, Payment, PaymentPage};
use super::time::rfc3339;
use super::users::{instrument_json, profile_json, Instrument, Profile};
use super::{call, State};

/// Review-queue items one call reads from `ListReviewQueue` (its largest page): the
/// HTTP pages cover this many of the oldest items; `queue_length` counts them all.
pub const REVIEW_WINDOW_ITEMS_MAX: usize = PAGE_PAYMENTS_MAX;

pub fn routes() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(get_user))
        .routes(routes!(list_accounts))
        .routes(routes!(review_queue))
}

fn none_if_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// Which users, and the page.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// Only the user with this email (compared trimmed and lower-cased).
    pub email: Option<String>,
    /// Only the user with this id.
    pub user_id: Option<String>,
    /// Items on the page, 1 to 100 (default 20).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    pub starting_after: Option<String>,
    /// The seed's name for `limit`.
    pub num_entries: Option<String>,
    /// The seed's name for `starting_after`.
    pub page: Option<String>,
}

/// A user as listed for admins and support.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AdminUserSummary {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub registered_at: String,
    pub totp_enabled: bool,
    /// An erased user keeps their id (the money trail) and nothing else.
    pub erased: bool,
}

/// A page of users, in id order.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AdminUserPage {
    pub data: Vec<AdminUserSummary>,
    pub has_more: bool,
    /// Give it as `starting_after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Users in id order, or the one an email or id names. Admin and support tokens only.
#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("bearer" = [])),
    params(UsersQuery),
    responses((status = 200, body = AdminUserPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_users(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(q): Params<UsersQuery>,
) -> Result<Json<AdminUserPage>, ApiError> {
    let page = PageQuery { limit: q.limit, starting_after: q.starting_after, num_entries: q.num_entries, page: q.page }
        .page()?;
    let request = caller.grpc(wire::ListUsersRequest {
        email: q.email.unwrap_or_default(),
        user_id: q.user_id.unwrap_or_default(),
        limit: page.limit as u32,
        after: page.after.unwrap_or_default(),
    });
    let answer = call(state.admin.list_users(request)).await.map_err(|e| renamed(e, &[("after", "starting_after")]))?;
    let data = answer
        .users
        .into_iter()
        .map(|u| AdminUserSummary {
            user_id: u.user_id,
            name: u.name,
            email: u.email,
            registered_at: rfc3339(u.registered_at_ns),
            totp_enabled: u.totp_enabled,
            erased: u.erased,
        })
        .collect();
    let next_cursor = none_if_empty(answer.next_cursor);
    Ok(Json(AdminUserPage { data, has_more: next_cursor.is_some(), next_cursor }))
}

/// A wallet with its balances in the currency's major unit.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AdminWallet {
    pub currency: String,
    pub account_id: String,
    /// Posted credits minus posted debits.
    pub balance: String,
    /// The balance minus holds.
    pub available: String,
}

/// An instrument with its verification state.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AdminInstrument {
    pub instrument: Instrument,
    /// A bank account awaiting verification: the two sandbox micro-deposits in minor
    /// units (what the user must type back).
    pub micro_deposits: Vec<u32>,
    /// Wrong answers so far.
    pub failed_attempts: u32,
    pub added_at: String,
}

/// A user as admins and support see them.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AdminUser {
    pub profile: Profile,
    pub wallets: Vec<AdminWallet>,
    pub instruments: Vec<AdminInstrument>,
    /// A page of their payments, newest first (`limit`, `starting_after`).
    pub payments: PaymentPage,
}

/// The page of a user's payments.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// Payments on the page, 1 to 100 (default 20).
    pub limit: Option<String>,
    /// The `payments.next_cursor` of the previous answer.
    pub starting_after: Option<String>,
}

/// One user: profile, wallets with balances, instruments with their verification state,
/// and a page of their payments, newest first. Admin and support tokens only.
#[utoipa::path(get, path = "/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The user id"), UserQuery),
    responses((status = 200, body = AdminUser), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
    Params(q): Params<UserQuery>,
) -> Result<Json<AdminUser>, ApiError> {
    let page = PageQuery { limit: q.limit, starting_after: q.starting_after, ..PageQuery::default() }.page()?;
    let request = caller.grpc(wire::GetUserRequest {
        user_id: id,
        payments_limit: page.limit as u32,
        payments_after: page.after.unwrap_or_default(),
    });
    let u = call(state.admin.get_user(request))
        .await
        .map_err(|e| renamed(e, &[("user_id", "id"), ("payments_after", "starting_after")]))?;
    let profile = u.profile.ok_or_else(|| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the service answered no profile")
    })?;
    let instruments = u
        .instruments
        .into_iter()
        .map(|i| {
            let instrument = i.instrument.ok_or_else(|| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the service answered no instrument")
            })?;
            Ok(AdminInstrument {
                instrument: instrument_json(instrument),
                micro_deposits: i.micro_deposits,
                failed_attempts: i.failed_attempts,
                added_at: rfc3339(i.added_at_ns),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let next_cursor = none_if_empty(u.next_payments_cursor);
    Ok(Json(AdminUser {
        profile: profile_json(profile),
        wallets: u
            .wallets
            .into_iter()
            .map(|w| AdminWallet {
                currency: w.currency,
                account_id: w.account_id,
                balance: w.balance,
                available: w.available,
            })
            .collect(),
        instruments,
        payments: PaymentPage {
            data: u.payments.into_iter().map(payment_json).collect(),
            has_more: next_cursor.is_some(),
            next_cursor,
        },
    }))
}

/// A ledger account as listed for admins (minor units, as the ledger API shows them).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AdminAccount {
    pub account_id: String,
    pub currency: String,
    /// `"0"` when nobody owns it.
    pub owner_id: String,
    pub opened_at: String,
    pub debits_posted: String,
    pub credits_posted: String,
    pub debits_pending: String,
    pub credits_pending: String,
}

/// A page of ledger accounts, in id order.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AdminAccountPage {
    pub data: Vec<AdminAccount>,
    pub has_more: bool,
    /// Give it as `starting_after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Ledger accounts in id order, with posted and pending sums (from the read models,
/// including everything committed before the call). Admin and support tokens only.
#[utoipa::path(get, path = "/admin/accounts", tag = "admin", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = AdminAccountPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_accounts(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(q): Params<PageQuery>,
) -> Result<Json<AdminAccountPage>, ApiError> {
    let page = q.page()?;
    let request =
        caller.grpc(wire::ListAccountsRequest { limit: page.limit as u32, after: page.after.unwrap_or_default() });
    let answer =
        call(state.admin.list_accounts(request)).await.map_err(|e| renamed(e, &[("after", "starting_after")]))?;
    let data = answer
        .accounts
        .into_iter()
        .map(|a| AdminAccount {
            account_id: a.account_id,
            currency: a.currency,
            owner_id: a.owner_id,
            opened_at: rfc3339(a.opened_at_ns),
            debits_posted: a.debits_posted,
            credits_posted: a.credits_posted,
            debits_pending: a.debits_pending,
            credits_pending: a.credits_pending,
        })
        .collect();
    let next_cursor = none_if_empty(answer.next_cursor);
    Ok(Json(AdminAccountPage { data, has_more: next_cursor.is_some(), next_cursor }))
}

/// A payment waiting for a review.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ReviewItem {
    pub payment: Payment,
    /// Seconds since it entered review.
    pub waiting_secs: u64,
    pub in_review_since: String,
    /// When it is cancelled if nobody decides.
    pub times_out_at: String,
}

/// A page of the review queue, oldest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ReviewPage {
    pub data: Vec<ReviewItem>,
    pub has_more: bool,
    /// Give it as `starting_after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// Every payment in review, whatever the page.
    pub queue_length: u64,
}

/// An item's place in the queue: (in review since, payment id).
fn review_key(item: &wire::ReviewItem) -> Result<(u64, u128), ApiError> {
    let id = item.payment.as_ref().and_then(|p| p.payment_id.parse::<u128>().ok()).ok_or_else(|| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the service answered a review without a payment")
    })?;
    Ok((item.in_review_since_ns, id))
}

fn parse_review_cursor(text: &str) -> Result<(u64, u128), ApiError> {
    let bad = || ApiError::invalid("starting_after", "a next_cursor from a previous page");
    let (at, id) = text.split_once('_').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?))
}

/// Payments waiting for a review, oldest first, with the risk reasons and how long
/// each has waited. The pages cover the oldest `REVIEW_WINDOW_ITEMS_MAX` (200) items,
/// what one `ListReviewQueue` call answers; `queue_length` counts every item. Admin and
/// support tokens only.
#[utoipa::path(get, path = "/admin/review_queue", tag = "admin", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = ReviewPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn review_queue(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(q): Params<PageQuery>,
) -> Result<Json<ReviewPage>, ApiError> {
    let page = q.page()?;
    let after = page.after.as_deref().map(parse_review_cursor).transpose()?;
    let request = caller.grpc(wire::ListReviewQueueRequest { limit: REVIEW_WINDOW_ITEMS_MAX as u32 });
    let answer = call(state.admin.list_review_queue(request)).await?;
    let mut kept = Vec::new();
    for item in answer.items {
        let key = review_key(&item)?;
        if after.is_none_or(|a| key > a) {
            kept.push((key, item));
        }
    }
    kept.sort_by_key(|(key, _)| *key);
    let has_more = kept.len() > page.limit;
    kept.truncate(page.limit);
    let next_cursor = if has_more { kept.last().map(|((at, id), _)| format!("{at}_{id}")) } else { None };
    let data = kept
        .into_iter()
        .filter_map(|(_, item)| {
            let payment = item.payment?;
            Some(ReviewItem {
                payment: payment_json(payment),
                waiting_secs: item.waiting_secs,
                in_review_since: rfc3339(item.in_review_since_ns),
                times_out_at: rfc3339(item.times_out_at_ns),
            })
        })
        .collect();
    Ok(Json(ReviewPage { data, has_more, next_cursor, queue_length: answer.queue_length }))
}
