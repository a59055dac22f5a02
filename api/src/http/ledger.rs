//! The ledger over HTTP, for role tokens (`admin`, `service`; reads also `auditor`,
//! `read-only`, `support`): accounts, transfers, look-ups, balances, an account's
//! movements, history and period reports. Each handler calls the `ledger.v1.Ledger`
//! method a gRPC client would, so roles, checks and per-item results are the gRPC
//! API's. Unlike the rest of the HTTP API, and as the gRPC ledger API, amounts here are
//! decimal strings of the currency's minor unit (`"1250"` is 12.50 USD), and ids are
//! decimal strings of unsigned 128-bit integers.

use axum::extract::{Path, State as Shared};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use ledger_proto::api::v1 as wire;
use ledger_proto::api::v1::ledger_server::Ledger as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, IdempotencyKey, JsonBody, Page, PageQuery, Params};
use super::idempotency::once;
use super::time::{parse_rfc3339, rfc3339, rfc3339_opt};
use super::{call, State};

pub fn routes() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(create_accounts))
        .routes(routes!(get_account))
        .routes(routes!(get_balance))
        .routes(routes!(account_transfers))
        .routes(routes!(create_transfers))
        .routes(routes!(get_transfer))
        .routes(routes!(history))
        .routes(routes!(super::ledger_reports::reports))
}

/// The error of a gRPC call whose field has another name over HTTP (a path id is
/// `ids[0]` to `LookupAccounts`, a cursor is `starting_after` here).
pub fn renamed(error: ApiError, renames: &[(&str, &str)]) -> ApiError {
    let Some(field) = error.field.as_deref() else { return error };
    for (grpc, http) in renames {
        let rest = if field == *grpc {
            Some("")
        } else {
            // A field inside a list item: `transfers[2].timeout_ns`.
            field.strip_suffix(grpc).filter(|head| head.ends_with('.'))
        };
        if let Some(head) = rest {
            let head = &field[..head.len()];
            let new_field = format!("{head}{http}");
            let message = match error.message.strip_prefix(field) {
                Some(tail) => format!("{new_field}{tail}"),
                None => error.message.clone(),
            };
            return ApiError { field: Some(new_field), message, ..error };
        }
    }
    error
}

/// A word for a gRPC result or event name: `EXCEEDS_CREDITS` → `exceeds_credits`,
/// `TransferPosted` → `transfer_posted`.
pub fn snake_word(name: &str) -> String {
    if name.bytes().all(|b| !b.is_ascii_lowercase()) {
        return name.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// An optional query value for a gRPC string field, where empty means "not given".
pub fn or_empty(value: Option<String>) -> String {
    // ok: not a swallowed error: an absent value is the wire's empty "not given".
    value.unwrap_or_default()
}

fn internal(message: &str) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message.to_string())
}

// ---- accounts ----

/// A flag of an account.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum LedgerAccountFlag {
    /// Posted plus pending debits never exceed posted credits: no overdraft.
    DebitsMustNotExceedCredits,
    /// Posted plus pending credits never exceed posted debits.
    CreditsMustNotExceedDebits,
}

const FLAGS: [LedgerAccountFlag; 2] =
    [LedgerAccountFlag::DebitsMustNotExceedCredits, LedgerAccountFlag::CreditsMustNotExceedDebits];

/// The flag's bit in gRPC's `flags`.
fn flag_bit(flag: LedgerAccountFlag) -> u32 {
    match flag {
        LedgerAccountFlag::DebitsMustNotExceedCredits => 1,
        LedgerAccountFlag::CreditsMustNotExceedDebits => 2,
    }
}

fn flag_bits(flags: &[LedgerAccountFlag]) -> u32 {
    flags.iter().fold(0, |bits, flag| bits | flag_bit(*flag))
}

fn flag_words(bits: u32) -> Result<Vec<LedgerAccountFlag>, ApiError> {
    if bits & !flag_bits(&FLAGS) != 0 {
        return Err(internal("the service answered an account flag this API does not know"));
    }
    Ok(FLAGS.into_iter().filter(|flag| bits & flag_bit(*flag) != 0).collect())
}

/// A new account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLedgerAccount {
    /// A new id: a decimal string of an unsigned 128-bit integer, not 0.
    pub id: String,
    /// ISO 4217, e.g. `"USD"`.
    pub currency: String,
    /// The chart-of-accounts code, 0 to 65535.
    #[serde(default)]
    pub code: u32,
    #[serde(default)]
    pub flags: Vec<LedgerAccountFlag>,
    /// Who owns it (a user id), or empty or `"0"` for none.
    #[serde(default)]
    pub owner_id: String,
}

/// One command of a batch: exactly one key.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LedgerAccountCommand {
    /// Opens an account.
    Open(NewLedgerAccount),
    /// Freezes the account with this id: no new transfers, pending ones may finish.
    Freeze(String),
    /// Unfreezes it.
    Unfreeze(String),
    /// Closes it (its balances must be zero and nothing pending).
    Close(String),
}

/// A batch of account commands, decided in order.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLedgerAccounts {
    pub commands: Vec<LedgerAccountCommand>,
}

/// The result of one item of a batch, as gRPC's `ItemResult`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerItemResult {
    /// The item's index in the request.
    pub index: u32,
    /// `created`, `already_exists` (the same item was committed before; nothing
    /// changed), or the rejection, e.g. `exceeds_credits`, `linked_event_failed`: the
    /// gRPC result code in lower case.
    pub code: String,
    pub ok: bool,
    /// When the item was committed (for `already_exists`, the first commit).
    pub committed_at: Option<String>,
    /// For people.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub message: String,
}

/// One result per item, in request order.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerBatchResults {
    pub results: Vec<LedgerItemResult>,
}

fn results_json(results: Vec<wire::ItemResult>) -> LedgerBatchResults {
    LedgerBatchResults {
        results: results
            .into_iter()
            .map(|r| LedgerItemResult {
                index: r.index,
                code: snake_word(&r.code),
                ok: r.ok,
                committed_at: rfc3339_opt(r.timestamp_ns),
                message: r.message,
            })
            .collect(),
    }
}

/// Opens, freezes, unfreezes or closes accounts: one result per command (a refused
/// command does not stop the others). Needs a role token allowed to write.
#[utoipa::path(post, path = "/ledger/accounts", operation_id = "ledger_create_accounts", tag = "ledger", security(("bearer" = [])),
    request_body = CreateLedgerAccounts,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, description = "One result per command", body = LedgerBatchResults),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn create_accounts(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<CreateLedgerAccounts>,
) -> Result<Response, ApiError> {
    use wire::account_command::Command;
    let commands = body
        .value
        .commands
        .into_iter()
        .map(|c| wire::AccountCommand {
            command: Some(match c {
                LedgerAccountCommand::Open(a) => Command::Open(wire::NewAccount {
                    id: a.id,
                    currency: a.currency,
                    code: a.code,
                    flags: flag_bits(&a.flags),
                    owner_id: a.owner_id,
                }),
                LedgerAccountCommand::Freeze(id) => Command::Freeze(id),
                LedgerAccountCommand::Unfreeze(id) => Command::Unfreeze(id),
                LedgerAccountCommand::Close(id) => Command::Close(id),
            }),
        })
        .collect();
    let request = caller.grpc(wire::CreateAccountsRequest { commands });
    once(&state.idempotency, &caller, "POST /ledger/accounts", key.as_deref(), &body.raw, StatusCode::OK, async {
        let answer = call(state.ledger.create_accounts(request)).await?;
        Ok(results_json(answer.results))
    })
    .await
}

/// `open`, `frozen` or `closed`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum LedgerAccountState {
    Open,
    Frozen,
    Closed,
}

/// An account with its balances (minor units).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerAccount {
    pub id: String,
    pub currency: String,
    pub code: u32,
    pub flags: Vec<LedgerAccountFlag>,
    /// `"0"` when nobody owns it.
    pub owner_id: String,
    pub state: LedgerAccountState,
    pub debits_pending: String,
    pub debits_posted: String,
    pub credits_pending: String,
    pub credits_posted: String,
    /// When it was opened.
    pub opened_at: String,
}

fn account_json(a: wire::Account) -> Result<LedgerAccount, ApiError> {
    let state = match wire::AccountState::try_from(a.state) {
        Ok(wire::AccountState::Open) => LedgerAccountState::Open,
        Ok(wire::AccountState::Frozen) => LedgerAccountState::Frozen,
        Ok(wire::AccountState::Closed) => LedgerAccountState::Closed,
        Ok(wire::AccountState::Unspecified) | Err(_) => {
            return Err(internal("the service answered an account without a state"))
        }
    };
    Ok(LedgerAccount {
        id: a.id,
        currency: a.currency,
        code: a.code,
        flags: flag_words(a.flags)?,
        owner_id: a.owner_id,
        state,
        debits_pending: a.debits_pending,
        debits_posted: a.debits_posted,
        credits_pending: a.credits_pending,
        credits_posted: a.credits_posted,
        opened_at: rfc3339(a.timestamp_ns),
    })
}

/// One account, as the ledger has it now. Needs a role token allowed to read.
#[utoipa::path(get, path = "/ledger/accounts/{id}", operation_id = "ledger_get_account", tag = "ledger", security(("bearer" = [])),
    params(("id" = String, Path, description = "The account id (decimal)")),
    responses((status = 200, body = LedgerAccount), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_account(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LedgerAccount>, ApiError> {
    let request = caller.grpc(wire::LookupAccountsRequest { ids: vec![id] });
    let found = call(state.ledger.lookup_accounts(request)).await.map_err(|e| renamed(e, &[("ids[0]", "id")]))?;
    match found.accounts.into_iter().next() {
        Some(account) => Ok(Json(account_json(account)?)),
        None => Err(ApiError::not_found("account")),
    }
}

/// When a balance is wanted.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BalanceQuery {
    /// RFC 3339: the balances including every movement at or before this time; absent means now.
    pub at: Option<String>,
}

/// An account's balances at a time (minor units).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerBalance {
    pub account_id: String,
    pub currency: String,
    pub debits_pending: String,
    pub debits_posted: String,
    pub credits_pending: String,
    pub credits_posted: String,
    /// The time asked for; absent for now.
    pub at: Option<String>,
}

/// An account's balances, now or at a time (from the read models, which include
/// everything committed before the call). Needs a role token allowed to read.
#[utoipa::path(get, path = "/ledger/accounts/{id}/balance", operation_id = "ledger_get_balance", tag = "ledger", security(("bearer" = [])),
    params(("id" = String, Path, description = "The account id (decimal)"), BalanceQuery),
    responses((status = 200, body = LedgerBalance), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_balance(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
    Params(query): Params<BalanceQuery>,
) -> Result<Json<LedgerBalance>, ApiError> {
    let as_of_ns = query.at.as_deref().map(|at| parse_rfc3339("at", at)).transpose()?.unwrap_or(0);
    let request = caller.grpc(wire::GetBalanceRequest { account_id: id, as_of_ns, min_position: 0 });
    let b = call(state.ledger.get_balance(request)).await.map_err(|e| renamed(e, &[("account_id", "id")]))?;
    Ok(Json(LedgerBalance {
        account_id: b.account_id,
        currency: b.currency,
        debits_pending: b.debits_pending,
        debits_posted: b.debits_posted,
        credits_pending: b.credits_pending,
        credits_posted: b.credits_posted,
        at: rfc3339_opt(b.as_of_ns),
    }))
}

// ---- movements ----

/// One movement on an account, with the account's balances after it (minor units).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerMovement {
    pub account_id: String,
    pub transfer_id: String,
    /// `transfer_posted`, `transfer_pending`, `pending_posted`, `pending_voided`, `pending_expired`.
    pub event_type: String,
    /// `debit` or `credit`.
    pub direction: String,
    pub counterparty_account_id: String,
    pub amount: String,
    pub currency: String,
    pub at: String,
    pub metadata: String,
    pub debits_pending: String,
    pub debits_posted: String,
    pub credits_pending: String,
    pub credits_posted: String,
    /// The event's position in the log.
    pub position: u64,
    /// For a hold's own movement: `pending`, `posted`, `voided` or `expired`.
    pub status: Option<String>,
    /// The transfer that posted or voided this hold.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub resolved_by_id: String,
    /// A user's own rows: the payment, the other party and the note.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub payment_id: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub counterparty_name: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub note: String,
}

fn movement_json(m: wire::AccountMovement) -> Result<LedgerMovement, ApiError> {
    let direction = match wire::Direction::try_from(m.direction) {
        Ok(wire::Direction::Debit) => "debit",
        Ok(wire::Direction::Credit) => "credit",
        Ok(wire::Direction::Unspecified) | Err(_) => {
            return Err(internal("the service answered a movement without a direction"))
        }
    };
    let status = match wire::MovementStatus::try_from(m.status) {
        Ok(wire::MovementStatus::Unspecified) => None,
        Ok(wire::MovementStatus::Pending) => Some("pending"),
        Ok(wire::MovementStatus::Posted) => Some("posted"),
        Ok(wire::MovementStatus::Voided) => Some("voided"),
        Ok(wire::MovementStatus::Expired) => Some("expired"),
        Err(_) => return Err(internal("the service answered an unknown movement status")),
    };
    Ok(LedgerMovement {
        account_id: m.account_id,
        transfer_id: m.transfer_id,
        event_type: snake_word(&m.event_type),
        direction: direction.into(),
        counterparty_account_id: m.counterparty_account_id,
        amount: m.amount,
        currency: m.currency,
        at: rfc3339(m.timestamp_ns),
        metadata: m.metadata,
        debits_pending: m.debits_pending,
        debits_posted: m.debits_posted,
        credits_pending: m.credits_pending,
        credits_posted: m.credits_posted,
        position: m.position,
        status: status.map(str::to_string),
        resolved_by_id: m.resolved_by_id,
        payment_id: m.payment_id,
        counterparty_name: m.counterparty_name,
        note: m.note,
    })
}

/// A page of movements.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerMovementPage {
    pub data: Vec<LedgerMovement>,
    /// Movements remain after this page. The read models scan a bounded number of rows
    /// per call, so with filters a page may hold fewer than `limit` (even none) and
    /// still have more: follow `next_cursor` until it is absent.
    pub has_more: bool,
    /// Give it as `starting_after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn movement_page(movements: Vec<wire::AccountMovement>, next_cursor: String) -> Result<LedgerMovementPage, ApiError> {
    Ok(LedgerMovementPage {
        data: movements.into_iter().map(movement_json).collect::<Result<_, _>>()?,
        has_more: !next_cursor.is_empty(),
        next_cursor: (!next_cursor.is_empty()).then_some(next_cursor),
    })
}

/// An optional RFC 3339 bound as nanoseconds (0 when absent, as gRPC has it).
fn bound(field: &str, text: Option<&str>) -> Result<u64, ApiError> {
    text.map(|t| parse_rfc3339(field, t)).transpose().map(|ns| ns.unwrap_or(0))
}

fn page_of(
    limit: Option<String>,
    starting_after: Option<String>,
    num_entries: Option<String>,
    page: Option<String>,
) -> Result<Page, ApiError> {
    PageQuery { limit, starting_after, num_entries, page }.page()
}

/// The time range and paging of an account's movements.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccountTransfersQuery {
    /// RFC 3339: movements at or after this time.
    pub from: Option<String>,
    /// RFC 3339: movements before this time.
    pub to: Option<String>,
    /// Items on the page, 1 to 100 (default 20).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    pub starting_after: Option<String>,
    /// The seed's name for `limit`.
    pub num_entries: Option<String>,
    /// The seed's name for `starting_after`.
    pub page: Option<String>,
}

/// The gRPC names of fields that have other names here.
const RANGE_RENAMES: [(&str, &str); 4] =
    [("cursor", "starting_after"), ("to_ns", "to"), ("from_ns", "from"), ("account_id", "id")];

/// An account's movements in a time range, OLDEST first (as `ListAccountTransfers`;
/// `GET /ledger/history?account_id=` gives them newest first), cursor-paged. Needs a
/// role token allowed to read.
#[utoipa::path(get, path = "/ledger/accounts/{id}/transfers", operation_id = "ledger_account_transfers", tag = "ledger", security(("bearer" = [])),
    params(("id" = String, Path, description = "The account id (decimal)"), AccountTransfersQuery),
    responses((status = 200, body = LedgerMovementPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn account_transfers(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
    Params(q): Params<AccountTransfersQuery>,
) -> Result<Json<LedgerMovementPage>, ApiError> {
    let page = page_of(q.limit, q.starting_after, q.num_entries, q.page)?;
    let request = caller.grpc(wire::ListAccountTransfersRequest {
        account_id: id,
        from_ns: bound("from", q.from.as_deref())?,
        to_ns: bound("to", q.to.as_deref())?,
        limit: page.limit as u32,
        cursor: or_empty(page.after),
        min_position: 0,
    });
    let answer = call(state.ledger.list_account_transfers(request)).await.map_err(|e| renamed(e, &RANGE_RENAMES))?;
    Ok(Json(movement_page(answer.movements, answer.next_cursor)?))
}

// ---- transfers ----

/// What a transfer does.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "snake_case")]
pub enum LedgerTransferKind {
    /// Moves money at once.
    #[default]
    Posted,
    /// Holds money until posted, voided or expired.
    Pending,
    /// Posts a pending transfer (all of it, or `amount` of it).
    PostPending,
    /// Voids a pending transfer.
    VoidPending,
}

/// A new transfer. Amounts are decimal strings of minor units.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLedgerTransfer {
    /// A new id: a decimal string of an unsigned 128-bit integer, not 0. The same id
    /// and fields again answer `already_exists` and change nothing.
    pub id: String,
    /// Post and void: empty means as in the pending transfer.
    #[serde(default)]
    pub debit_account_id: String,
    #[serde(default)]
    pub credit_account_id: String,
    /// Minor units (`"1250"` is 12.50 USD). Post: empty or `"0"` posts the whole hold.
    #[serde(default)]
    pub amount: String,
    /// ISO 4217. Post and void: empty means as in the pending transfer.
    #[serde(default)]
    pub currency: String,
    /// The transfer code, 0 to 65535.
    #[serde(default)]
    pub code: u32,
    /// At most 256 bytes.
    #[serde(default)]
    pub metadata: String,
    /// Linked to the next transfer: a chain of linked transfers commits all or nothing.
    #[serde(default)]
    pub linked: bool,
    #[serde(default)]
    pub kind: LedgerTransferKind,
    /// Pending only: seconds until the hold expires; 0 or absent never expires.
    #[serde(default)]
    pub timeout_seconds: u64,
    /// Post and void: the pending transfer's id.
    #[serde(default)]
    pub pending_id: String,
}

/// A batch of transfers, decided in order.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLedgerTransfers {
    pub transfers: Vec<NewLedgerTransfer>,
}

fn transfer_wire(index: usize, t: NewLedgerTransfer) -> Result<wire::NewTransfer, ApiError> {
    let timeout_ns = t
        .timeout_seconds
        .checked_mul(1_000_000_000)
        .ok_or_else(|| ApiError::invalid(&format!("transfers[{index}].timeout_seconds"), "too large"))?;
    let kind = match t.kind {
        LedgerTransferKind::Posted => wire::TransferKind::Posted,
        LedgerTransferKind::Pending => wire::TransferKind::Pending,
        LedgerTransferKind::PostPending => wire::TransferKind::PostPending,
        LedgerTransferKind::VoidPending => wire::TransferKind::VoidPending,
    };
    Ok(wire::NewTransfer {
        id: t.id,
        debit_account_id: t.debit_account_id,
        credit_account_id: t.credit_account_id,
        amount: t.amount,
        currency: t.currency,
        code: t.code,
        metadata: t.metadata,
        linked: t.linked,
        kind: kind as i32,
        timeout_ns,
        pending_id: t.pending_id,
    })
}

/// Creates transfers: posted, pending, post or void of a pending one. Linked
/// transfers (each `linked` to the next) commit all or nothing. One result per
/// transfer, exactly as gRPC's `CreateTransfers` answers, sent once every committed
/// transfer is durable. Needs a role token allowed to write.
#[utoipa::path(post, path = "/ledger/transfers", operation_id = "ledger_create_transfers", tag = "ledger", security(("bearer" = [])),
    request_body = CreateLedgerTransfers,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe (transfer ids already are)")),
    responses((status = 200, description = "One result per transfer", body = LedgerBatchResults),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_transfers(
    Shared(state): Shared<State>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<CreateLedgerTransfers>,
) -> Result<Response, ApiError> {
    let transfers = body
        .value
        .transfers
        .into_iter()
        .enumerate()
        .map(|(index, t)| transfer_wire(index, t))
        .collect::<Result<Vec<_>, _>>()?;
    let request = caller.grpc(wire::CreateTransfersRequest { transfers });
    once(&state.idempotency, &caller, "POST /ledger/transfers", key.as_deref(), &body.raw, StatusCode::OK, async {
        let answer = call(state.ledger.create_transfers(request))
            .await
            .map_err(|e| renamed(e, &[("timeout_ns", "timeout_seconds")]))?;
        Ok(results_json(answer.results))
    })
    .await
}

/// A committed transfer (minor units).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerTransfer {
    pub id: String,
    pub debit_account_id: String,
    pub credit_account_id: String,
    pub amount: String,
    pub currency: String,
    pub code: u32,
    pub metadata: String,
    pub linked: bool,
    pub kind: LedgerTransferKind,
    /// Post and void: the pending transfer.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub pending_id: String,
    pub committed_at: String,
    /// Pending transfers: `pending`, `posted`, `voided` or `expired`.
    pub pending_status: Option<String>,
    /// Pending transfers with a timeout: when the hold expires.
    pub expires_at: Option<String>,
    /// A posted or voided hold: the transfer that did it.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub resolved_by_id: String,
}

fn transfer_json(t: wire::Transfer) -> Result<LedgerTransfer, ApiError> {
    let kind = match wire::TransferKind::try_from(t.kind) {
        Ok(wire::TransferKind::Posted) => LedgerTransferKind::Posted,
        Ok(wire::TransferKind::Pending) => LedgerTransferKind::Pending,
        Ok(wire::TransferKind::PostPending) => LedgerTransferKind::PostPending,
        Ok(wire::TransferKind::VoidPending) => LedgerTransferKind::VoidPending,
        Ok(wire::TransferKind::Unspecified) | Err(_) => {
            return Err(internal("the service answered a transfer without a kind"))
        }
    };
    let pending_status = match wire::PendingStatus::try_from(t.pending_status) {
        Ok(wire::PendingStatus::Unspecified) => None,
        Ok(wire::PendingStatus::Pending) => Some("pending"),
        Ok(wire::PendingStatus::Posted) => Some("posted"),
        Ok(wire::PendingStatus::Voided) => Some("voided"),
        Ok(wire::PendingStatus::Expired) => Some("expired"),
        Err(_) => return Err(internal("the service answered an unknown pending status")),
    };
    Ok(LedgerTransfer {
        id: t.id,
        debit_account_id: t.debit_account_id,
        credit_account_id: t.credit_account_id,
        amount: t.amount,
        currency: t.currency,
        code: t.code,
        metadata: t.metadata,
        linked: t.linked,
        kind,
        pending_id: t.pending_id,
        committed_at: rfc3339(t.timestamp_ns),
        pending_status: pending_status.map(str::to_string),
        expires_at: rfc3339_opt(t.expires_at_ns),
        resolved_by_id: t.resolved_by_id,
    })
}

/// One transfer. Needs a role token allowed to read.
#[utoipa::path(get, path = "/ledger/transfers/{id}", operation_id = "ledger_get_transfer", tag = "ledger", security(("bearer" = [])),
    params(("id" = String, Path, description = "The transfer id (decimal)")),
    responses((status = 200, body = LedgerTransfer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_transfer(
    Shared(state): Shared<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LedgerTransfer>, ApiError> {
    let request = caller.grpc(wire::LookupTransfersRequest { ids: vec![id] });
    let found = call(state.ledger.lookup_transfers(request)).await.map_err(|e| renamed(e, &[("ids[0]", "id")]))?;
    match found.transfers.into_iter().next() {
        Some(transfer) => Ok(Json(transfer_json(transfer)?)),
        None => Err(ApiError::not_found("transfer")),
    }
}

// ---- history and reports ----

/// Whose movements, which, and the page.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Exactly one of `account_id` and `owner_id`.
    pub account_id: Option<String>,
    /// Every account of this owner (a user id).
    pub owner_id: Option<String>,
    /// RFC 3339: movements at or after this time.
    pub from: Option<String>,
    /// RFC 3339: movements before this time.
    pub to: Option<String>,
    /// `debit` or `credit`.
    pub direction: Option<String>,
    /// `pending`, `posted`, `voided` or `expired`.
    pub status: Option<String>,
    /// ISO 4217.
    pub currency: Option<String>,
    /// Items on the page, 1 to 100 (default 20).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    pub starting_after: Option<String>,
    /// The seed's name for `limit`.
    pub num_entries: Option<String>,
    /// The seed's name for `starting_after`.
    pub page: Option<String>,
}

/// An account's or an owner's movements, newest first, cursor-paged. A role token
/// allowed to read sees any; a user's session token only the user's own accounts
/// (with the payment, the other party and the note of each row).
#[utoipa::path(get, path = "/ledger/history", operation_id = "ledger_history", tag = "ledger", security(("bearer" = [])),
    params(HistoryQuery),
    responses((status = 200, body = LedgerMovementPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "An owner with more than 1,000 accounts: ask per account")))]
pub async fn history(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(q): Params<HistoryQuery>,
) -> Result<Json<LedgerMovementPage>, ApiError> {
    let page = page_of(q.limit, q.starting_after, q.num_entries, q.page)?;
    let direction = match q.direction.as_deref() {
        None => wire::Direction::Unspecified,
        Some("debit") => wire::Direction::Debit,
        Some("credit") => wire::Direction::Credit,
        Some(_) => return Err(ApiError::invalid("direction", "debit or credit")),
    };
    let status = match q.status.as_deref() {
        None => wire::MovementStatus::Unspecified,
        Some("pending") => wire::MovementStatus::Pending,
        Some("posted") => wire::MovementStatus::Posted,
        Some("voided") => wire::MovementStatus::Voided,
        Some("expired") => wire::MovementStatus::Expired,
        Some(_) => return Err(ApiError::invalid("status", "pending, posted, voided or expired")),
    };
    let request = caller.grpc(wire::GetHistoryRequest {
        account_id: or_empty(q.account_id),
        owner_id: or_empty(q.owner_id),
        from_ns: bound("from", q.from.as_deref())?,
        to_ns: bound("to", q.to.as_deref())?,
        direction: direction as i32,
        status: status as i32,
        currency: or_empty(q.currency),
        limit: page.limit as u32,
        cursor: or_empty(page.after),
        min_position: 0,
    });
    let answer = call(state.ledger.get_history(request))
        .await
        .map_err(|e| renamed(e, &[("cursor", "starting_after"), ("to_ns", "to"), ("from_ns", "from")]))?;
    Ok(Json(movement_page(answer.movements, answer.next_cursor)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_field_names_become_the_http_ones() {
        let error = ApiError::invalid("ids[0]", "expected an unsigned decimal integer");
        let error = renamed(error, &[("ids[0]", "id")]);
        assert_eq!(error.field.as_deref(), Some("id"));
        assert!(error.message.starts_with("id: "), "{}", error.message);
        let error = ApiError::invalid("transfers[2].timeout_ns", "only pending transfers have a timeout");
        let error = renamed(error, &[("timeout_ns", "timeout_seconds")]);
        assert_eq!(error.field.as_deref(), Some("transfers[2].timeout_seconds"));
        assert!(error.message.starts_with("transfers[2].timeout_seconds: "), "{}", error.message);
        let error = renamed(ApiError::invalid("amount", "x"), &[("ids[0]", "id")]);
        assert_eq!(error.field.as_deref(), Some("amount"));
    }

    #[test]
    fn words() {
        assert_eq!(snake_word("EXCEEDS_CREDITS"), "exceeds_credits");
        assert_eq!(snake_word("CREATED"), "created");
        assert_eq!(snake_word("TransferPosted"), "transfer_posted");
        assert_eq!(flag_bits(&[LedgerAccountFlag::CreditsMustNotExceedDebits]), 2);
        assert_eq!(
            flag_words(3).ok(),
            Some(vec![LedgerAccountFlag::DebitsMustNotExceedCredits, LedgerAccountFlag::CreditsMustNotExceedDebits])
        );
        assert!(flag_words(4).is_err());
    }
}
