//! `rails-sandbox`: the sandbox payment rails (bank transfer, card, digital wallet) as
//! a process of their own, the way a provider's test environment is reached over the
//! network, with the faults a fault test injects. `ledgerd --rails http://ADDR` uses it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ledger_api::grpc::rails::RailsServer;
use ledger_platform::payments::rails::{Faults, SandboxRails};
use ledger_proto::ledger::sandbox::v1::rails_server::RailsServer as RailsGrpc;

#[derive(Parser)]
#[command(name = "rails-sandbox", about = "Sandbox payment rails with injectable faults")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// Added to every call.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// How long a bank collection or payout stays pending.
    #[arg(long, default_value_t = 200)]
    settle_ms: u64,
    /// Probability that a collection, authorization or payout is declined.
    #[arg(long, default_value_t = 0.0)]
    decline_rate: f64,
    /// Probability that the operation runs but the reply comes late (after --late-ms).
    #[arg(long, default_value_t = 0.0)]
    timeout_rate: f64,
    /// Probability that the request is lost: nothing runs, no timely reply.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Probability that the request is delivered twice.
    #[arg(long, default_value_t = 0.0)]
    duplicate_rate: f64,
    #[arg(long, default_value_t = 3000)]
    late_ms: u64,
    /// Seed of the fault draws: the same seed draws the same faults for the same calls
    /// in the same order (default: from the OS; printed at start either way).
    #[arg(long)]
    seed: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    let faults = Faults {
        latency: Duration::from_millis(args.latency_ms),
        settle: Duration::from_millis(args.settle_ms),
        decline_rate: args.decline_rate,
        timeout_rate: args.timeout_rate,
        drop_rate: args.drop_rate,
        duplicate_rate: args.duplicate_rate,
        late_by: Duration::from_millis(args.late_ms),
    };
    let seed = match args.seed {
        Some(seed) => seed,
        None => u64::from_le_bytes(ledger_platform::random::bytes().map_err(|e| e.to_string())?),
    };
    eprintln!("rails-sandbox fault seed {seed} (replay with --seed {seed})");
    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| format!("listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("rails-sandbox listening on {addr}");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(RailsGrpc::new(RailsServer(Arc::new(SandboxRails::with_seed(faults, seed)))))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}
