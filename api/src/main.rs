//! `ledgerd`: the ledger server on the embedded store.
//!
//! Today it opens the data directory, recovers the ledger (newest valid snapshot plus
//! the tail of the log, every event checked), runs the partition writer, which expires
//! timed-out holds on its own, and shuts down cleanly on SIGINT or SIGTERM, finishing
//! every batch in flight. The gRPC API is built on top of this in the next step (see
//! ARCHITECTURE.md).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ledger_core::audit::data_dir_layout;
use ledger_core::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_core::writer::{Ledger, LedgerConfig};

#[derive(Parser)]
#[command(name = "ledgerd", version, about = "The ledger server")]
struct Args {
    /// Data directory: the event log in log/, snapshots in snapshots/.
    #[arg(long, env = "LEDGERD_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Address the API will listen on.
    #[arg(long, env = "LEDGERD_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let (log_dir, snapshot_dir) = data_dir_layout(&args.data_dir);
    let (store, recovery) =
        EmbeddedStore::open(&log_dir, EmbeddedOptions::default()).map_err(|e| e.to_string())?;
    tracing::info!(data_dir = %args.data_dir.display(), segments = recovery.segments, events = recovery.records, torn_tail = recovery.torn_tail.is_some(), "event log opened");
    let config = LedgerConfig {
        snapshot_dir: Some(snapshot_dir),
        ..LedgerConfig::default()
    };
    let ledger = Ledger::open(Arc::new(store), config).map_err(|e| e.to_string())?;
    let totals = ledger.totals_blocking().map_err(|e| e.to_string())?;
    tracing::info!(currencies = totals.len(), listen = %args.listen, "ledger ready");
    wait_for_shutdown().await;
    tracing::info!("shutting down: finishing batches in flight");
    tokio::task::spawn_blocking(move || ledger.close())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_shutdown() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "no SIGTERM handler; stopping on SIGINT only");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
