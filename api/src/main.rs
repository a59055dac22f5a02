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
    // Before anything else: a signal from here on is never lost.
    let shutdown = shutdown_signal();
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
    match ledger_api::server::run(config, shutdown).await {
        Ok(()) => (std::process::ExitCode::SUCCESS, Some(models)),
        Err(error) => {
            tracing::error!(%error, "ledgerd failed");
            // What failed may have been the read models' file: the next start checks it.
            ledger_api::read_models_check::mark_suspect();
            (std::process::ExitCode::FAILURE, None)
        }
    }
}

/// SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// server first waits on the future: a signal during the start, or just after it,
/// would otherwise kill the process (the default action) instead of stopping it
/// cleanly. One that comes during the start stops the server as soon as it is up.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let (interrupt, terminate) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    async move {
        match (interrupt, terminate) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            (Ok(mut only), Err(error)) | (Err(error), Ok(mut only)) => {
                tracing::warn!(%error, "one of SIGINT and SIGTERM has no handler; stopping on the other only");
                only.recv().await;
            }
            (Err(error), Err(_)) => {
                tracing::error!(%error, "no SIGINT nor SIGTERM handler: stop ledgerd with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
        tracing::info!("shutdown requested: finishing calls and batches in flight");
    }
}
