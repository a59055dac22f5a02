//! `ledgerctl load`: drives a running server over gRPC with many concurrent clients and
//! prints throughput and latency; with `--payments`, wallet-to-wallet payments between
//! users instead of ledger transfers (`load_payments`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;

use ledger_proto::packed::{TransferRecord, RECORD_BYTES};
use ledger_proto::transport::MESSAGE_BYTES_MAX;

use crate::client::{progress, Connection};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The ledger: CreateTransfers, or CreateTransfersPacked with `--wire packed`.
    Ledger,
    /// A do-nothing echo service (`ledgerctl echo-server`), to measure the transport.
    Echo,
}

/// How transfers travel.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Wire {
    /// `CreateTransfers`: a message per transfer, ids and amounts as decimal strings.
    Proto,
    /// `CreateTransfersPacked`: 128-byte binary records.
    Packed,
}

/// One request, in the chosen wire form.
enum Body {
    Proto(wire::CreateTransfersRequest),
    Packed(wire::PackedTransfers),
}

#[derive(Args)]
pub struct LoadArgs {
    /// Accounts to open and pick from at random.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Transfers per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Run for this many seconds (default 10 unless --count is given).
    #[arg(long, conflicts_with = "count")]
    duration: Option<f64>,
    /// Send this many transfers in all.
    #[arg(long)]
    count: Option<u64>,
    /// The service to drive: the ledger, or the do-nothing echo service.
    #[arg(long, value_enum, default_value_t = Target::Ledger)]
    target: Target,
    /// The request form: decimal strings (the CreateTransfers call) or packed records
    /// (CreateTransfersPacked). Against the echo service, its Echo or EchoPacked call.
    #[arg(long, value_enum, default_value_t = Wire::Proto)]
    wire: Wire,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    #[command(flatten)]
    payments: crate::load_payments::PaymentsLoadArgs,
    #[command(flatten)]
    sign_ins: crate::load_sign_ins::SignInLoadArgs,
}

struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn nanos_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64) | 1
}

/// A request carrying the caller's `authorization` header, if there is one.
fn authorized<T>(
    body: T,
    authorization: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value.clone());
    }
    request
}

pub async fn run(connection: &Connection, args: LoadArgs) -> Result<bool, String> {
    let shape = || crate::load_payments::RunShape {
        clients: args.clients,
        duration: args.duration,
        count: args.count,
        connections: args.connections,
    };
    if args.sign_ins.sign_ins {
        return crate::load_sign_ins::run(connection, &args.sign_ins, shape()).await;
    }
    if args.payments.payments {
        return crate::load_payments::run(connection, &args.payments, shape()).await;
    }
    if args.clients == 0 || args.batch == 0 || args.accounts < 2 || args.connections == 0 {
        return Err("need --clients >= 1, --batch >= 1, --accounts >= 2, --connections >= 1".into());
    }
    let mut channels = Vec::new();
    for _ in 0..args.connections.min(args.clients) {
        channels.push(connection.channel().await?);
    }
    let mut seed = Random(nanos_seed());
    let account_base = u128::from(seed.next()) << 64;
    if args.target == Target::Ledger {
        create_accounts(connection, channels[0].clone(), account_base, args.accounts).await?;
    }
    let transfer_base = (u128::from(seed.next()) << 64) | (1u128 << 63);
    let next_id = Arc::new(AtomicU64::new(1));
    // The count is of transfers, taken from the shared id counter (see `RequestMaker`).
    let run = Run { sent: Arc::new(AtomicU64::new(0)), budget: shape().budget() };
    let mut tasks = Vec::new();
    for client_index in 0..args.clients {
        let channel = channels[client_index % channels.len()].clone();
        // The echo baseline needs no token; the ledger does.
        let authorization = match (args.target, connection.token()) {
            (Target::Echo, Err(_)) => None,
            _ => connection.request(())?.metadata().get("authorization").cloned(),
        };
        let client = Client::new(channel, authorization, args.target);
        let maker = RequestMaker {
            next_id: next_id.clone(),
            batch: args.batch,
            accounts: args.accounts,
            count: args.count,
            wire_form: args.wire,
            transfer_base,
            account_base,
            random: Random(seed.next() | 1),
        };
        tasks.push(tokio::spawn(drive(client_index, client, maker, run.clone())));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    let elapsed = run.budget.started.elapsed();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    let transfers = run.sent.load(Ordering::Relaxed);
    if latencies.is_empty() {
        return Err("no request completed".into());
    }
    latencies.sort();
    report(connection.json, &args, transfers, elapsed, &latencies);
    Ok(true)
}

/// What every client of one run shares.
#[derive(Clone)]
struct Run {
    /// Transfers acknowledged so far, over all clients.
    sent: Arc<AtomicU64>,
    budget: crate::load_payments::Budget,
}

/// Makes one client's requests: the next ids from the shared counter, random accounts.
struct RequestMaker {
    next_id: Arc<AtomicU64>,
    batch: usize,
    accounts: u64,
    count: Option<u64>,
    wire_form: Wire,
    transfer_base: u128,
    account_base: u128,
    random: Random,
}

impl RequestMaker {
    /// The next request and its number of transfers, or `None` once `count` is sent.
    fn next(&mut self) -> Option<(u64, Body)> {
        let first = self.next_id.fetch_add(self.batch as u64, Ordering::Relaxed);
        if self.count.is_some_and(|c| first > c) {
            return None;
        }
        let size = self.count.map_or(self.batch as u64, |c| (c + 1 - first).min(self.batch as u64));
        let (accounts, transfer_base, account_base) = (self.accounts, self.transfer_base, self.account_base);
        let random = &mut self.random;
        let records = (0..size).map(|n| {
            let debit = random.next() % accounts;
            let credit = (debit + 1 + random.next() % (accounts - 1)) % accounts;
            TransferRecord {
                id: transfer_base + u128::from(first + n),
                debit_account_id: account_base + u128::from(debit),
                credit_account_id: account_base + u128::from(credit),
                amount: u128::from(1 + random.next() % 1000),
                currency: *b"USD",
                code: 1,
                kind: wire::TransferKind::Posted as u8,
                ..Default::default()
            }
        });
        let body = match self.wire_form {
            Wire::Proto => Body::Proto(wire::CreateTransfersRequest {
                transfers: records
                    .map(|r| wire::NewTransfer {
                        id: r.id.to_string(),
                        debit_account_id: r.debit_account_id.to_string(),
                        credit_account_id: r.credit_account_id.to_string(),
                        amount: r.amount.to_string(),
                        currency: "USD".into(),
                        code: u32::from(r.code),
                        kind: i32::from(r.kind),
                        ..Default::default()
                    })
                    .collect(),
            }),
            Wire::Packed => {
                let mut bytes = Vec::with_capacity(size as usize * RECORD_BYTES);
                for record in records {
                    record.write(&mut bytes);
                }
                Body::Packed(wire::PackedTransfers { records: bytes, metadata: Vec::new() })
            }
        };
        Some((size, body))
    }
}

/// One client's stubs.
struct Client {
    ledger: wire::ledger_client::LedgerClient<Channel>,
    echo: wire::echo_client::EchoClient<Channel>,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    target: Target,
}

impl Client {
    fn new(
        channel: Channel,
        authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
        target: Target,
    ) -> Client {
        let ledger = wire::ledger_client::LedgerClient::new(channel.clone())
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        let echo = wire::echo_client::EchoClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        Client { ledger, echo, authorization, target }
    }

    /// Sends one request; the first failed transfer, if any (ALREADY_EXISTS is not a
    /// failure), and the call's latency.
    async fn call(&mut self, body: Body) -> (Result<Option<wire::ItemResult>, tonic::Status>, Duration) {
        let begun = Instant::now();
        let failed = match body {
            Body::Proto(body) => {
                let request = authorized(body, self.authorization.as_ref());
                let response = match self.target {
                    Target::Ledger => self.ledger.create_transfers(request).await,
                    Target::Echo => self.echo.echo(request).await,
                };
                response.map(|r| r.into_inner().results.into_iter().find(|r| !r.ok))
            }
            Body::Packed(body) => {
                let request = authorized(body, self.authorization.as_ref());
                let response = match self.target {
                    Target::Ledger => self.ledger.create_transfers_packed(request).await,
                    Target::Echo => self.echo.echo_packed(request).await,
                };
                // `failures` holds exactly the transfers whose status is FAILED.
                response.map(|r| r.into_inner().failures.into_iter().next())
            }
        };
        (failed, begun.elapsed())
    }
}

/// One client's loop: one request in flight at a time, the next one built while the one
/// before is in flight, so a client waits on the server, not on making its requests.
async fn drive(
    client_index: usize,
    mut client: Client,
    mut maker: RequestMaker,
    run: Run,
) -> Result<Vec<Duration>, String> {
    let mut latencies = Vec::new();
    let mut next = maker.next();
    loop {
        if run.budget.expired() {
            break;
        }
        let Some((size, body)) = next.take() else { break };
        let ((failed, latency), following) = tokio::join!(client.call(body), async { maker.next() });
        next = following;
        let failed = failed.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        latencies.push(latency);
        if let Some(failed) = failed {
            return Err(format!("transfer rejected: {} {}", failed.code, failed.message));
        }
        let total = run.sent.fetch_add(size, Ordering::Relaxed) + size;
        if client_index == 0 && latencies.len() % 64 == 0 {
            progress(total, run.budget.count, run.budget.started);
        }
    }
    Ok(latencies)
}

/// The `p`-quantile (0 < p <= 1, nearest rank) of sorted, non-empty `latencies`, in ms.
pub fn percentile_ms(latencies: &[Duration], p: f64) -> f64 {
    let rank = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len());
    latencies[rank - 1].as_secs_f64() * 1e3
}

/// Prints the run's figures; `latencies` sorted, not empty.
fn report(json: bool, args: &LoadArgs, transfers: u64, elapsed: Duration, latencies: &[Duration]) {
    let transfers_per_sec = transfers as f64 / elapsed.as_secs_f64();
    let (p50, p99, p999) =
        (percentile_ms(latencies, 0.5), percentile_ms(latencies, 0.99), percentile_ms(latencies, 0.999));
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "transfers_per_sec": transfers_per_sec.round(), "p50_ms": p50, "p99_ms": p99, "p999_ms": p999,
                "clients": args.clients, "batch_size": args.batch, "transfers": transfers, "requests": latencies.len(),
            })
        );
    } else {
        outln!(
            "{transfers} transfers in {} requests of {} from {} clients: {:.2} s",
            latencies.len(),
            args.batch,
            args.clients,
            elapsed.as_secs_f64()
        );
        outln!("throughput: {transfers_per_sec:.0} transfers/s");
        outln!("request latency: p50 {p50:.2} ms, p99 {p99:.2} ms, p999 {p999:.2} ms");
    }
}

async fn create_accounts(connection: &Connection, channel: Channel, base: u128, count: u64) -> Result<(), String> {
    let mut client = wire::ledger_client::LedgerClient::new(channel);
    let ids: Vec<u64> = (0..count).collect();
    for chunk in ids.chunks(8_000) {
        let commands = chunk
            .iter()
            .map(|n| wire::AccountCommand {
                command: Some(wire::account_command::Command::Open(wire::NewAccount {
                    id: (base + u128::from(*n)).to_string(),
                    currency: "USD".into(),
                    code: 1,
                    ..Default::default()
                })),
            })
            .collect();
        let request = connection.request(wire::CreateAccountsRequest { commands })?;
        let response = client.create_accounts(request).await.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        if let Some(failed) = response.into_inner().results.iter().find(|r| !r.ok) {
            return Err(format!("creating accounts: {} {}", failed.code, failed.message));
        }
    }
    Ok(())
}
