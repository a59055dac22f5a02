//! The gRPC services: `ledger.v1.Ledger` over the partition writer and the read
//! models, and the do-nothing `ledger.v1.Echo` for transport baselines.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ledger_core::domain::{AccountId, TransferId};
use ledger_core::money::Currency;
use ledger_engine::store::{EventStore, Subscription};
use ledger_engine::writer::Ledger;
use ledger_proto::api::v1 as wire;
use projections::read_models::{
    Cursor, HistoryFilter, Movement, MovementKind, ProjectionError, Side, Status as MovementStatus,
};
use projections::worker::Projector;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::{Permission, Tokens};
use crate::convert;
use crate::metrics::Metrics;
use ledger_platform::fx::Fx;
use ledger_platform::payments::Payments;
use ledger_platform::users::Users;

/// Most movements in one page of history.
pub const PAGE_MOVEMENTS_MAX: u32 = 1_000;
const PAGE_MOVEMENTS_DEFAULT: u32 = 100;
/// How long a read waits for the history read model to reach the log's head.
pub(crate) const READ_MODEL_WAIT: Duration = Duration::from_secs(5);
/// Events per message batch of an event stream.
const STREAM_BATCH_EVENTS: usize = 1_024;
/// Most `StreamEvents` calls open at once; one more is RESOURCE_EXHAUSTED. Each holds
/// a task and up to `STREAM_BATCH_EVENTS` events queued for its client.
pub const STREAM_SUBSCRIBERS_MAX: usize = 64;

/// Permits for open `StreamEvents` calls (see [`STREAM_SUBSCRIBERS_MAX`]).
pub fn stream_subscribers() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(STREAM_SUBSCRIBERS_MAX))
}

pub struct LedgerService {
    pub ledger: Ledger,
    pub store: Arc<dyn EventStore>,
    pub tokens: Arc<Tokens>,
    /// Users' sessions may read their own accounts' history and reports.
    pub users: Arc<Users>,
    /// Rates for reports converted into one currency.
    pub fx: Arc<Fx>,
    /// A user's own history rows name the payment and the other party.
    pub payments: Arc<Payments>,
    pub projector: Arc<Projector>,
    pub metrics: Arc<Metrics>,
    /// The public key signed chain heads verify under (hex); `None`: heads are not signed.
    pub heads_public_key: Option<String>,
    /// A permit per open `StreamEvents` call: [`stream_subscribers`].
    pub stream_subscribers: Arc<tokio::sync::Semaphore>,
}

/// Signed heads per `ListSignedHeads` answer when the request names no limit.
pub const SIGNED_HEADS_PAGE_DEFAULT: usize = 100;
/// Most signed heads per `ListSignedHeads` answer.
pub const SIGNED_HEADS_PAGE_MAX: usize = 1_000;

impl LedgerService {
    fn observe<T>(&self, method: &'static str, result: Result<T, Status>) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.metrics.record(method, code);
        result
    }

    /// Waits until the read models include everything durable when the call came in,
    /// and everything before `min_position`; returns the position they reached.
    async fn read_your_writes(&self, min_position: u64) -> Result<(u64, u64), Status> {
        let head = *self.store.watch_head().borrow();
        if min_position > head {
            return Err(Status::out_of_range(format!("min_position {min_position} is beyond the log's end {head}")));
        }
        if !self.projector.wait_for(head.max(min_position), READ_MODEL_WAIT).await {
            return Err(Status::unavailable("the read models are behind the log; retry"));
        }
        let applied = self.projector.applied();
        Ok((applied, self.store.watch_head().borrow().saturating_sub(applied)))
    }

    /// A role token allowed `permission`. A user's session token is refused here: users
    /// reach the ledger only through their own history and reports.
    fn authorize<T>(&self, request: &Request<T>, permission: Permission) -> Result<(), Status> {
        match self.tokens.authorize(request, permission) {
            Ok(_) => Ok(()),
            // Only an unknown token needs the second look (off the hot path).
            Err(status)
                if status.code() == tonic::Code::Unauthenticated
                    && crate::grpc::users::session_token(request).is_some() =>
            {
                Err(Status::permission_denied(
                    "a user session may read only its own history and reports; this call needs a role token",
                ))
            }
            Err(status) => Err(status),
        }
    }

    /// A reader of history or reports: a role token allowed to read (`None`), or a
    /// user's live session (`Some(user)`), which may name only the user's own accounts.
    async fn authorize_reader<T>(&self, request: &Request<T>) -> Result<Option<u128>, Status> {
        crate::grpc::users::Principal::of(&self.users, &self.tokens, request).await?.reader()
    }

    /// Refuses a user's request that names someone else's account or owner id.
    fn check_own(&self, user: Option<u128>, account_id: &str, owner_id: &str) -> Result<(), Status> {
        let Some(user) = user else { return Ok(()) };
        let denied = || Status::permission_denied("a user may read only their own accounts");
        if !owner_id.is_empty() && convert::parse_u128("owner_id", owner_id)? != user {
            return Err(denied());
        }
        if !account_id.is_empty() {
            let account = convert::parse_u128("account_id", account_id)?;
            match self.projector.models().account(account).map_err(model_status)? {
                Some(view) if view.owner_id == user => {}
                _ => return Err(denied()),
            }
        }
        Ok(())
    }

    fn limit(limit: u32) -> Result<usize, Status> {
        match limit {
            0 => Ok(PAGE_MOVEMENTS_DEFAULT as usize),
            limit if limit > PAGE_MOVEMENTS_MAX => {
                Err(Status::invalid_argument(format!("limit: at most {PAGE_MOVEMENTS_MAX}")))
            }
            limit => Ok(limit as usize),
        }
    }

    /// The accounts a history or report request names: one account, or an owner's.
    fn subject(&self, account_id: &str, owner_id: &str) -> Result<Vec<u128>, Status> {
        let models = self.projector.models();
        match (account_id.is_empty(), owner_id.is_empty()) {
            (false, true) => {
                let account = convert::parse_u128("account_id", account_id)?;
                match models.account(account).map_err(model_status)? {
                    Some(_) => Ok(vec![account]),
                    None => Err(Status::not_found(format!("account {account} not found"))),
                }
            }
            (true, false) => {
                let owner = convert::parse_u128("owner_id", owner_id)?;
                models.owner_accounts(owner).map_err(model_status)
            }
            _ => Err(Status::invalid_argument("give exactly one of account_id and owner_id")),
        }
    }

    /// Fills a user's history rows with the payment each transfer belongs to, the
    /// other party's name and the note (one look-up per distinct metadata).
    async fn name_movements(&self, user: u128, movements: &mut [wire::AccountMovement]) -> Result<(), Status> {
        let mut known: std::collections::HashMap<String, Option<ledger_platform::payments::TransferContext>> =
            std::collections::HashMap::new();
        for row in movements.iter_mut() {
            if !known.contains_key(&row.metadata) {
                let found =
                    self.payments.transfer_context(user, &row.metadata).await.map_err(crate::grpc::status::payments)?;
                known.insert(row.metadata.clone(), found);
            }
            if let Some(Some(context)) = known.get(&row.metadata) {
                row.payment_id = context.payment_id.map_or(String::new(), |id| id.to_string());
                row.counterparty_name = context.counterparty.clone();
                row.note = context.note.clone();
            }
        }
        Ok(())
    }

    fn parse_ids(ids: &[String]) -> Result<Vec<u128>, Status> {
        ids.iter().enumerate().map(|(index, id)| convert::parse_u128(format!("ids[{index}]"), id)).collect()
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<wire::StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl wire::ledger_server::Ledger for LedgerService {
    async fn create_accounts(
        &self,
        request: Request<wire::CreateAccountsRequest>,
    ) -> Result<Response<wire::CreateAccountsResponse>, Status> {
        let result = async {
            self.authorize(&request, Permission::Write)?;
            let commands = request
                .into_inner()
                .commands
                .into_iter()
                .enumerate()
                .map(|(index, command)| convert::account_command(index, command))
                .collect::<Result<Vec<_>, _>>()?;
            let results = self.ledger.create_accounts(commands).await.map_err(convert::status)?;
            Ok(Response::new(wire::CreateAccountsResponse { results: convert::account_results(&results) }))
        }
        .await;
        self.observe("CreateAccounts", result)
    }

    async fn create_transfers(
        &self,
        request: Request<wire::CreateTransfersRequest>,
    ) -> Result<Response<wire::CreateTransfersResponse>, Status> {
        let result = async {
            self.authorize(&request, Permission::Write)?;
            let transfers = request
                .into_inner()
                .transfers
                .into_iter()
                .enumerate()
                .map(|(index, transfer)| convert::new_transfer(index, transfer))
                .collect::<Result<Vec<_>, _>>()?;
            let results = self.ledger.create_transfers(transfers).await.map_err(convert::status)?;
            Ok(Response::new(wire::CreateTransfersResponse { results: convert::transfer_results(&results) }))
        }
        .await;
        self.observe("CreateTransfers", result)
    }

    async fn create_transfers_packed(
        &self,
        request: Request<wire::PackedTransfers>,
    ) -> Result<Response<wire::PackedTransferResults>, Status> {
        let result = async {
            self.authorize(&request, Permission::Write)?;
            let transfers = convert::packed_transfers(request.into_inner())?;
            let results = self.ledger.create_transfers(transfers).await.map_err(convert::status)?;
            Ok(Response::new(convert::packed_results(&results)))
        }
        .await;
        self.observe("CreateTransfersPacked", result)
    }

    async fn lookup_accounts(
        &self,
        request: Request<wire::LookupAccountsRequest>,
    ) -> Result<Response<wire::LookupAccountsResponse>, Status> {
        let result = async {
            self.authorize(&request, Permission::Read)?;
            let request = request.into_inner();
            let ids = Self::parse_ids(&request.ids)?;
            let found =
                self.ledger.lookup_accounts(ids.into_iter().map(AccountId).collect()).await.map_err(convert::status)?;
            let mut response = wire::LookupAccountsResponse::default();
            for (id, account) in request.ids.into_iter().zip(found) {
                match account {
                    Some(account) => response.accounts.push(convert::account(&account)),
                    None => response.not_found.push(id),
                }
            }
            Ok(Response::new(response))
        }
        .await;
        self.observe("LookupAccounts", result)
    }

    async fn list_signed_heads(
        &self,
        request: Request<wire::ListSignedHeadsRequest>,
    ) -> Result<Response<wire::ListSignedHeadsResponse>, Status> {
        let result = async {
            self.authorize(&request, Permission::Stream)?;
            let r = request.into_inner();
            let limit = match r.limit as usize {
                0 => SIGNED_HEADS_PAGE_DEFAULT,
                n if n <= SIGNED_HEADS_PAGE_MAX => n,
                _ => return Err(Status::invalid_argument(format!("limit: at most {SIGNED_HEADS_PAGE_MAX}"))),
            };
            let store = self.store.clone();
            let records = tokio::task::spawn_blocking(move || {
                store.read_stream(
                    ledger_engine::heads::HEADS_STREAM,
                    r.from_revision,
                    ledger_engine::store::Direction::Forwards,
                    limit + 1,
                )
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| convert::store_status(&e))?;
            let has_more = records.len() > limit;
            let entries = records
                .into_iter()
                .take(limit)
                .map(|r| wire::StoredSignedHeads { revision: r.revision, payload: r.payload })
                .collect();
            Ok(Response::new(wire::ListSignedHeadsResponse {
                entries,
                has_more,
                public_key: self.heads_public_key.clone().unwrap_or_default(),
            }))
        }
        .await;
        self.observe("ListSignedHeads", result)
    }

    async fn lookup_transfers(
        &self,
        request: Request<wire::LookupTransfersRequest>,
    ) -> Result<Response<wire::LookupTransfersResponse>, Status> {
        let result = async {
            self.authorize(&request, Permission::Read)?;
            let request = request.into_inner();
            let ids = Self::parse_ids(&request.ids)?;
            let found = self
                .ledger
                .lookup_transfers(ids.into_iter().map(TransferId).collect())
                .await
                .map_err(convert::status)?;
            let mut response = wire::LookupTransfersResponse::default();
            for (id, transfer) in request.ids.into_iter().zip(found) {
                match transfer {
                    Some(transfer) => response.transfers.push(convert::transfer(&transfer)),
                    None => response.not_found.push(id),
                }
            }
            Ok(Response::new(response))
        }
        .await;
        self.observe("LookupTransfers", result)
    }

    async fn list_account_transfers(
        &self,
        request: Request<wire::ListAccountTransfersRequest>,
    ) -> Result<Response<wire::ListAccountTransfersResponse>, Status> {
        let result = async {
            self.authorize(&request, Permission::Read)?;
            let request = request.into_inner();
            let account = convert::parse_u128("account_id", &request.account_id)?;
            let limit = Self::limit(request.limit)?;
            if request.to_ns != 0 && request.to_ns < request.from_ns {
                return Err(Status::invalid_argument("to_ns: must not be before from_ns"));
            }
            let cursor = match request.cursor.as_str() {
                "" => None,
                text => Some(
                    text.parse::<u64>()
                        .map_err(|_| Status::invalid_argument("cursor: not one this server returned"))?,
                ),
            };
            let (applied, lag_events) = self.read_your_writes(request.min_position).await?;
            let models = self.projector.models();
            if models.account(account).map_err(model_status)?.is_none() {
                return Err(Status::not_found(format!("account {account} not found")));
            }
            let filter = HistoryFilter { from_ns: request.from_ns, to_ns: request.to_ns, ..HistoryFilter::default() };
            let page = models.movements_oldest_first(account, &filter, cursor, limit).map_err(model_status)?;
            let movements = self.movements(&page.movements).await?;
            // ok: not a swallowed error: the wire's empty cursor is "no next page".
            let next_cursor = page.next.map(|c| c.timestamp_ns.to_string()).unwrap_or_default();
            Ok(Response::new(wire::ListAccountTransfersResponse {
                movements,
                next_cursor,
                applied_position: applied,
                lag_events,
            }))
        }
        .await;
        self.observe("ListAccountTransfers", result)
    }

    async fn get_balance(
        &self,
        request: Request<wire::GetBalanceRequest>,
    ) -> Result<Response<wire::GetBalanceResponse>, Status> {
        let result = async {
            self.authorize(&request, Permission::Read)?;
            let request = request.into_inner();
            let account = convert::parse_u128("account_id", &request.account_id)?;
            let (applied, lag_events) = self.read_your_writes(request.min_position).await?;
            let models = self.projector.models();
            let as_of = (request.as_of_ns != 0).then_some(request.as_of_ns);
            let not_found = || Status::not_found(format!("account {account} not found at that time"));
            let view = models.account(account).map_err(model_status)?.ok_or_else(not_found)?;
            let balances = models.balances_as_of(account, as_of).map_err(model_status)?.ok_or_else(not_found)?;
            Ok(Response::new(wire::GetBalanceResponse {
                account_id: account.to_string(),
                currency: view.currency.code().into(),
                debits_pending: balances.debits_pending.to_string(),
                debits_posted: balances.debits_posted.to_string(),
                credits_pending: balances.credits_pending.to_string(),
                credits_posted: balances.credits_posted.to_string(),
                as_of_ns: request.as_of_ns,
                applied_position: applied,
                lag_events,
            }))
        }
        .await;
        self.observe("GetBalance", result)
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<wire::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let result = self.authorize(&request, Permission::Stream).and_then(|_| {
            let permit = Arc::clone(&self.stream_subscribers).try_acquire_owned().map_err(|_| {
                Status::resource_exhausted(format!(
                    "{STREAM_SUBSCRIBERS_MAX} event streams are open, the most at once; retry later"
                ))
            })?;
            let from = request.into_inner().from_position;
            let (sender, receiver) = tokio::sync::mpsc::channel(STREAM_BATCH_EVENTS);
            let mut subscription = Subscription::new(self.store.clone(), from);
            tokio::spawn(async move {
                // Held until the stream ends, also when the client goes away while the
                // log is quiet.
                let _permit = permit;
                loop {
                    let events = tokio::select! {
                        events = subscription.next_batch(STREAM_BATCH_EVENTS) => events,
                        () = sender.closed() => return,
                    };
                    let events = match events {
                        Ok(events) => events,
                        Err(error) => {
                            let _ = sender.send(Err(convert::store_status(&error))).await;
                            return;
                        }
                    };
                    for event in events {
                        if sender.send(Ok(convert::recorded_event(event))).await.is_err() {
                            return; // The client went away.
                        }
                    }
                }
            });
            let stream: EventStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver));
            Ok(Response::new(stream))
        });
        self.observe("StreamEvents", result)
    }

    async fn get_history(
        &self,
        request: Request<wire::GetHistoryRequest>,
    ) -> Result<Response<wire::GetHistoryResponse>, Status> {
        let result = async {
            let user = self.authorize_reader(&request).await?;
            let request = request.into_inner();
            let limit = Self::limit(request.limit)?;
            if request.to_ns != 0 && request.to_ns < request.from_ns {
                return Err(Status::invalid_argument("to_ns: must not be before from_ns"));
            }
            let side = match wire::Direction::try_from(request.direction) {
                Ok(wire::Direction::Unspecified) => None,
                Ok(wire::Direction::Debit) => Some(Side::Debit),
                Ok(wire::Direction::Credit) => Some(Side::Credit),
                Err(_) => return Err(Status::invalid_argument("direction: unknown value")),
            };
            let status = match wire::MovementStatus::try_from(request.status) {
                Ok(wire::MovementStatus::Unspecified) => None,
                Ok(wire::MovementStatus::Pending) => Some(MovementStatus::Pending),
                Ok(wire::MovementStatus::Posted) => Some(MovementStatus::Posted),
                Ok(wire::MovementStatus::Voided) => Some(MovementStatus::Voided),
                Ok(wire::MovementStatus::Expired) => Some(MovementStatus::Expired),
                Err(_) => return Err(Status::invalid_argument("status: unknown value")),
            };
            let currency: Option<Currency> = match request.currency.as_str() {
                "" => None,
                code => Some(convert::parse_currency("currency", code)?),
            };
            let cursor = match request.cursor.as_str() {
                "" => None,
                text => Some(
                    Cursor::decode(text)
                        .ok_or_else(|| Status::invalid_argument("cursor: not one this server returned"))?,
                ),
            };
            let (applied, lag_events) = self.read_your_writes(request.min_position).await?;
            self.check_own(user, &request.account_id, &request.owner_id)?;
            let accounts = self.subject(&request.account_id, &request.owner_id)?;
            let filter = HistoryFilter { from_ns: request.from_ns, to_ns: request.to_ns, side, status, currency };
            let page = self.projector.models().history(&accounts, &filter, cursor, limit).map_err(model_status)?;
            let mut movements = self.movements(&page.movements).await?;
            if let Some(user) = user {
                self.name_movements(user, &mut movements).await?;
            }
            Ok(Response::new(wire::GetHistoryResponse {
                movements,
                // ok: not a swallowed error: the wire's empty cursor is "no next page".
                next_cursor: page.next.map(Cursor::encode).unwrap_or_default(),
                applied_position: applied,
                lag_events,
            }))
        }
        .await;
        self.observe("GetHistory", result)
    }

    async fn get_report(
        &self,
        request: Request<wire::GetReportRequest>,
    ) -> Result<Response<wire::GetReportResponse>, Status> {
        let result = async {
            let user = self.authorize_reader(&request).await?;
            let request = request.into_inner();
            let (applied, lag_events) = self.read_your_writes(request.min_position).await?;
            self.check_own(user, &request.account_id, &request.owner_id)?;
            let accounts = self.subject(&request.account_id, &request.owner_id)?;
            let convert_to = match request.convert_to.as_str() {
                "" => None,
                code => Some(convert::parse_currency("convert_to", code)?),
            };
            let mut converted = convert_to.map(Converted::new);
            let mut reports = Vec::new();
            for account in accounts {
                let report = self
                    .projector
                    .models()
                    .report(account, request.from_ns, request.to_ns, request.utc_offset_minutes)
                    .map_err(model_status)?
                    .ok_or_else(|| Status::not_found(format!("account {account} not found")))?;
                if let Some(totals) = converted.as_mut() {
                    totals.add(&self.fx, &report, request.from_ns, request.to_ns)?;
                }
                reports.push(wire::AccountReport {
                    account_id: account.to_string(),
                    currency: report.currency.code().into(),
                    opening: report.opening.to_string(),
                    credits: report.totals.credits.to_string(),
                    debits: report.totals.debits.to_string(),
                    count: report.totals.count,
                    closing: report.closing.to_string(),
                    days: report
                        .days
                        .iter()
                        .map(|day| wire::ReportDay {
                            start_ns: day.start_ns,
                            opening: day.opening.to_string(),
                            credits: day.totals.credits.to_string(),
                            debits: day.totals.debits.to_string(),
                            count: day.totals.count,
                            closing: day.closing.to_string(),
                        })
                        .collect(),
                });
            }
            Ok(Response::new(wire::GetReportResponse {
                reports,
                applied_position: applied,
                lag_events,
                converted: converted.map(Converted::into_wire),
            }))
        }
        .await;
        self.observe("GetReport", result)
    }
}

/// A report's totals valued in one currency (see `ConvertedTotals` in the API).
struct Converted {
    currency: Currency,
    opening: i128,
    credits: i128,
    debits: i128,
    closing: i128,
    rates_used: std::collections::BTreeSet<String>,
}

impl Converted {
    fn new(currency: Currency) -> Converted {
        Converted { currency, opening: 0, credits: 0, debits: 0, closing: 0, rates_used: Default::default() }
    }

    fn add(
        &mut self,
        fx: &Fx,
        report: &projections::read_models::Report,
        from_ns: u64,
        to_ns: u64,
    ) -> Result<(), Status> {
        let mut value = |minor: i128, at: u64| -> Result<i128, Status> {
            // Nothing is worth nothing, with or without a rate at that time.
            if minor == 0 {
                return Ok(0);
            }
            let (v, used) = fx
                .value_at(minor, report.currency, self.currency, at)
                .map_err(|e| Status::failed_precondition(format!("convert_to: {e} at {at} ns")))?;
            self.rates_used.extend(used);
            Ok(v)
        };
        let opening = value(report.opening, from_ns)?;
        let closing = value(report.closing, to_ns)?;
        let (mut credits, mut debits) = (0, 0);
        for (i, day) in report.days.iter().enumerate() {
            let end = report.days.get(i + 1).map_or(to_ns, |next| next.start_ns).min(to_ns);
            credits += value(day.totals.credits as i128, end)?;
            debits += value(day.totals.debits as i128, end)?;
        }
        self.opening += opening;
        self.closing += closing;
        self.credits += credits;
        self.debits += debits;
        Ok(())
    }

    fn into_wire(self) -> wire::ConvertedTotals {
        wire::ConvertedTotals {
            currency: self.currency.code().into(),
            opening: self.opening.to_string(),
            credits: self.credits.to_string(),
            debits: self.debits.to_string(),
            closing: self.closing.to_string(),
            rates_used: self.rates_used.into_iter().collect(),
        }
    }
}

pub(crate) fn model_status(error: ProjectionError) -> Status {
    match error {
        ProjectionError::Invalid(message) => Status::invalid_argument(message),
        ProjectionError::TooMany { .. } => Status::resource_exhausted(error.to_string()),
        ProjectionError::Gap { .. } | ProjectionError::Db(_) | ProjectionError::Io(_) => {
            tracing::error!(%error, "read model failure");
            Status::internal("read model failure")
        }
        // Damaged read-model data is refused, never served as a value; the read models
        // have raised the audit alarm already.
        ProjectionError::ReadModel(error) if error.is_corruption() => {
            tracing::error!(%error, "read model damaged");
            Status::data_loss("read model damaged: rebuild the read models from the log")
        }
        ProjectionError::Damaged { .. } | ProjectionError::LogShorter { .. } => {
            tracing::error!(%error, "read-model database damaged");
            Status::data_loss("read model damaged: rebuild the read models from the log")
        }
        ProjectionError::ReadModel(error) => {
            tracing::error!(%error, "read model figure out of range");
            Status::internal("read model failure")
        }
    }
}

impl LedgerService {
    /// A page of movements on the wire, each posted or voided hold with the id of the
    /// transfer that resolved it. The read model's row keeps how a hold ended; the
    /// ledger's state knows what ended it (a page is at most `Self::limit`'s maximum,
    /// so one lookup).
    async fn movements(&self, movements: &[Movement]) -> Result<Vec<wire::AccountMovement>, Status> {
        let resolved = |m: &&Movement| {
            m.kind == MovementKind::TransferPending
                && matches!(m.status, MovementStatus::Posted | MovementStatus::Voided)
        };
        let mut holds: Vec<TransferId> = movements.iter().filter(resolved).map(|m| TransferId(m.transfer_id)).collect();
        holds.sort_unstable();
        holds.dedup();
        let found = if holds.is_empty() {
            Vec::new()
        } else {
            self.ledger.lookup_transfers(holds.clone()).await.map_err(convert::status)?
        };
        // The read models follow the ledger: a hold they saw resolved is resolved there,
        // so a hold missing from the ledger, or standing there, is a broken invariant.
        let by: std::collections::HashMap<u128, u128> = holds
            .iter()
            .zip(found)
            .map(|(hold, transfer)| match transfer.and_then(|t| t.pending_status?.resolved_by()) {
                Some(by) => Ok((hold.0, by.0)),
                None => Err(Status::internal(format!(
                    "hold {} is resolved in the read models but not in the ledger",
                    hold.0
                ))),
            })
            .collect::<Result<_, Status>>()?;
        Ok(movements
            .iter()
            .map(|m| {
                let mut shown = movement(m);
                if resolved(&m) {
                    shown.resolved_by_id = by.get(&m.transfer_id).map_or(String::new(), u128::to_string);
                }
                shown
            })
            .collect())
    }
}

fn movement(m: &Movement) -> wire::AccountMovement {
    wire::AccountMovement {
        account_id: m.account.to_string(),
        transfer_id: m.transfer_id.to_string(),
        event_type: m.kind.event_type().into(),
        direction: match m.side {
            Side::Debit => wire::Direction::Debit as i32,
            Side::Credit => wire::Direction::Credit as i32,
        },
        counterparty_account_id: m.counterparty.to_string(),
        amount: m.amount.to_string(),
        currency: m.currency.code().into(),
        timestamp_ns: m.timestamp_ns,
        metadata: m.metadata.clone(),
        debits_pending: m.after.debits_pending.to_string(),
        debits_posted: m.after.debits_posted.to_string(),
        credits_pending: m.after.credits_pending.to_string(),
        credits_posted: m.after.credits_posted.to_string(),
        position: m.position,
        status: match m.status {
            MovementStatus::Pending => wire::MovementStatus::Pending as i32,
            MovementStatus::Posted => wire::MovementStatus::Posted as i32,
            MovementStatus::Voided => wire::MovementStatus::Voided as i32,
            MovementStatus::Expired => wire::MovementStatus::Expired as i32,
        },
        // Filled for a user's own rows (`name_movements`).
        counterparty_name: String::new(),
        payment_id: String::new(),
        note: String::new(),
        resolved_by_id: String::new(),
    }
}
