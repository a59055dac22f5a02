//! `ledgerd`: the ledger server. See `ledger_api::server`.

/// mimalloc: the gRPC path allocates per request from several threads, where glibc's
/// allocator spends a measurable share of the CPU (see the commit that added it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use ledger_api::config::{Args, Config};

fn main() -> std::process::ExitCode {
    // The server checks its read-model file in a process of its own (see the module).
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(3).collect();
    if args.len() == 3 && args[1] == ledger_api::read_models_check::CHECK_ARG {
        return ledger_api::read_models_check::run_check(std::path::Path::new(&args[2]), true);
    }
    if args.len() == 3 && args[1] == ledger_api::read_models_check::OPEN_ARG {
        return ledger_api::read_models_check::run_check(std::path::Path::new(&args[2]), false);
    }
    ledger_engine::allocator_settings();
    ledger_api::read_models_check::mark_suspect_on_panic();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => {
            let (code, closed_cleanly) = runtime.block_on(serve());
            // Every task dropped, so the read models' database is closed: its seal
            // may be written (see `read_models_check`).
            runtime.shutdown_timeout(std::time::Duration::from_secs(10));
            if let Some(path) = closed_cleanly {
                ledger_api::read_models_check::seal_after_clean_stop(&path);
            }
            code
        }
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Serves until asked to stop; with the read models' path if it stopped cleanly.
async fn serve() -> (std::process::ExitCode, Option<std::path::PathBuf>) {
    // RUST_LOG, or `info` when it is unset; a RUST_LOG that does not parse is said, not
    // silently replaced.
    let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(error) => {
            if std::env::var_os("RUST_LOG").is_some() {
                eprintln!("warning: RUST_LOG: {error}; logging at info");
            }
            tracing_subscriber::EnvFilter::new("info")
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match Config::resolve(Args::parse()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return (std::process::ExitCode::from(2), None);
        }
    };
    let models = projections::read_models::read_models_path(&config.data_dir);
    match ledger_api::server::run(config, wait_for_shutdown()).await {
        Ok(()) => (std::process::ExitCode::SUCCESS, Some(models)),
        Err(error) => {
            tracing::error!(%error, "ledgerd failed");
            // What failed may have been the read models' file: the next start checks it.
            ledger_api::read_models_check::mark_suspect();
            (std::process::ExitCode::FAILURE, None)
        }
    }
}

/// SIGINT or SIGTERM.
async fn wait_for_shutdown() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
    tracing::info!("shutdown requested: finishing calls and batches in flight");
}
