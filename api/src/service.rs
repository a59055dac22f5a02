//! The gRPC services: `ledger.v1.Ledger` over the partition writer and the account
//! history read model, and the do-nothing `ledger.v1.Echo` for transport baselines.

use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ledger_core::codec;
use ledger_core::domain::{AccountId, TransferId};
use ledger_core::store::{EventStore, Subscription};
use ledger_core::writer::Ledger;
use ledger_proto::api::v1 as wire;
use projections::account_history::{AccountHistory, Side};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::{Permission, Tokens};
use crate::convert;
use crate::metrics::Metrics;

/// Most movements in one page of history.
pub const PAGE_MOVEMENTS_MAX: u32 = 1_000;
const PAGE_MOVEMENTS_DEFAULT: u32 = 100;
/// How long a read waits for the history read model to reach the log's head.
const READ_MODEL_WAIT: Duration = Duration::from_secs(5);
/// Events per message batch of an event stream.
const STREAM_BATCH_EVENTS: usize = 1_024;

/// The account history read model, fed from the log by [`HistoryView::follow`].
pub struct HistoryView {
    model: RwLock<AccountHistory>,
    applied: tokio::sync::watch::Sender<u64>,
}

impl HistoryView {
    pub fn new() -> Arc<HistoryView> {
        let (applied, _) = tokio::sync::watch::channel(0);
        Arc::new(HistoryView { model: RwLock::new(AccountHistory::new()), applied })
    }

    /// Applies the whole log, then every new event as it becomes durable.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn EventStore>) {
        let mut subscription = Subscription::new(store, 0);
        loop {
            let events = match subscription.next_batch(8_192).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::error!(%error, "history read model stopped");
                    return;
                }
            };
            let Ok(mut model) = self.model.write() else { return };
            for recorded in &events {
                match recorded.stream.starts_with("ledger-").then(|| codec::decode_event(&recorded.payload)) {
                    Some(Ok(event)) => model.apply(recorded.position, &event),
                    Some(Err(error)) => {
                        tracing::error!(%error, position = recorded.position, "undecodable ledger event");
                        model.skip(recorded.position)
                    }
                    None => model.skip(recorded.position),
                }
            }
            let next = model.next_position();
            drop(model);
            self.applied.send_replace(next);
        }
    }

    /// Waits until every event before `position` is applied.
    async fn caught_up(&self, position: u64) -> Result<(), Status> {
        let mut applied = self.applied.subscribe();
        let caught_up = tokio::time::timeout(READ_MODEL_WAIT, applied.wait_for(|next| *next >= position)).await;
        match caught_up {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Status::unavailable("the history read model is behind the log; retry")),
        }
    }
}

pub struct LedgerService {
    pub ledger: Ledger,
    pub store: Arc<dyn EventStore>,
    pub tokens: Arc<Tokens>,
    pub history: Arc<HistoryView>,
    pub metrics: Arc<Metrics>,
}

impl LedgerService {
    fn observe<T>(&self, method: &'static str, result: Result<T, Status>) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.metrics.record(method, code);
        result
    }

    /// Waits for the read model to include everything durable when the call came in.
    async fn read_your_writes(&self) -> Result<(), Status> {
        let head = *self.store.watch_head().borrow();
        self.history.caught_up(head).await
    }

    fn parse_ids(ids: &[String]) -> Result<Vec<u128>, Status> {
        ids.iter().enumerate().map(|(index, id)| convert::parse_u128(&format!("ids[{index}]"), id)).collect()
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
            self.tokens.authorize(&request, Permission::Write)?;
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
            self.tokens.authorize(&request, Permission::Write)?;
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

    async fn lookup_accounts(
        &self,
        request: Request<wire::LookupAccountsRequest>,
    ) -> Result<Response<wire::LookupAccountsResponse>, Status> {
        let result = async {
            self.tokens.authorize(&request, Permission::Read)?;
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

    async fn lookup_transfers(
        &self,
        request: Request<wire::LookupTransfersRequest>,
    ) -> Result<Response<wire::LookupTransfersResponse>, Status> {
        let result = async {
            self.tokens.authorize(&request, Permission::Read)?;
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
            self.tokens.authorize(&request, Permission::Read)?;
            let request = request.into_inner();
            let account = AccountId(convert::parse_u128("account_id", &request.account_id)?);
            let limit = match request.limit {
                0 => PAGE_MOVEMENTS_DEFAULT,
                limit if limit > PAGE_MOVEMENTS_MAX => {
                    return Err(Status::invalid_argument(format!("limit: at most {PAGE_MOVEMENTS_MAX}")));
                }
                limit => limit,
            };
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
            self.read_your_writes().await?;
            let model = self.history.model.read().map_err(|_| Status::internal("read model lock poisoned"))?;
            let currency = model.currency(account);
            let page = model
                .list(account, request.from_ns, request.to_ns, cursor, limit as usize)
                .ok_or_else(|| Status::not_found(format!("account {} not found", account.0)))?;
            let currency = currency.map(|c| c.code().to_string()).unwrap_or_default();
            let movements = page
                .entries
                .iter()
                .map(|e| wire::AccountMovement {
                    transfer_id: e.transfer_id.0.to_string(),
                    event_type: e.event_type.into(),
                    direction: match e.side {
                        Side::Debit => wire::Direction::Debit as i32,
                        Side::Credit => wire::Direction::Credit as i32,
                    },
                    counterparty_account_id: e.counterparty.0.to_string(),
                    amount: e.amount.to_string(),
                    currency: currency.clone(),
                    timestamp_ns: e.timestamp_ns,
                    metadata: e.metadata.clone(),
                    debits_pending: e.after.debits_pending.to_string(),
                    debits_posted: e.after.debits_posted.to_string(),
                    credits_pending: e.after.credits_pending.to_string(),
                    credits_posted: e.after.credits_posted.to_string(),
                    position: e.position,
                })
                .collect();
            let next_cursor = page.next_cursor.map(|c| c.to_string()).unwrap_or_default();
            Ok(Response::new(wire::ListAccountTransfersResponse { movements, next_cursor }))
        }
        .await;
        self.observe("ListAccountTransfers", result)
    }

    async fn get_balance(
        &self,
        request: Request<wire::GetBalanceRequest>,
    ) -> Result<Response<wire::GetBalanceResponse>, Status> {
        let result = async {
            self.tokens.authorize(&request, Permission::Read)?;
            let request = request.into_inner();
            let account = AccountId(convert::parse_u128("account_id", &request.account_id)?);
            self.read_your_writes().await?;
            let model = self.history.model.read().map_err(|_| Status::internal("read model lock poisoned"))?;
            let as_of_ns = if request.as_of_ns == 0 { u64::MAX } else { request.as_of_ns };
            let not_found = || Status::not_found(format!("account {} not found at that time", account.0));
            let balances = model.balances_as_of(account, as_of_ns).ok_or_else(not_found)?;
            let currency = model.currency(account).ok_or_else(not_found)?;
            Ok(Response::new(wire::GetBalanceResponse {
                account_id: account.0.to_string(),
                currency: currency.code().into(),
                debits_pending: balances.debits_pending.to_string(),
                debits_posted: balances.debits_posted.to_string(),
                credits_pending: balances.credits_pending.to_string(),
                credits_posted: balances.credits_posted.to_string(),
                as_of_ns: request.as_of_ns,
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
        let result = self.tokens.authorize(&request, Permission::Stream).map(|_| {
            let from = request.into_inner().from_position;
            let (sender, receiver) = tokio::sync::mpsc::channel(STREAM_BATCH_EVENTS);
            let mut subscription = Subscription::new(self.store.clone(), from);
            tokio::spawn(async move {
                loop {
                    let events = match subscription.next_batch(STREAM_BATCH_EVENTS).await {
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
            Response::new(stream)
        });
        self.observe("StreamEvents", result)
    }
}

/// Answers every call at once with one CREATED result: the cost of the transport.
pub struct EchoService;

#[tonic::async_trait]
impl wire::echo_server::Echo for EchoService {
    async fn echo(
        &self,
        request: Request<wire::CreateTransfersRequest>,
    ) -> Result<Response<wire::CreateTransfersResponse>, Status> {
        let count = request.into_inner().transfers.len();
        let results = (0..count)
            .map(|index| wire::ItemResult {
                index: index as u32,
                code: "CREATED".into(),
                ok: true,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(wire::CreateTransfersResponse { results }))
    }
}
