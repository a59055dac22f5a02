//! `ledgerctl projections`: rebuild the read models of a data directory from its log,
//! catch them up, or print their state. They work on a stopped server's data
//! directory: the log and the read models are locked by the process that has them open.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use ledger_engine::audit::data_dir_layout;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::EventStore;
use projections::read_models::{read_models_path, Cursor, HistoryFilter, ReadModels};
use projections::worker::catch_up;
use serde_json::json;

use crate::client::progress_of;

#[derive(Subcommand)]
pub enum ProjectionsCommand {
    /// Drop every read model and rebuild it from the log.
    Rebuild {
        /// The stopped server's data directory.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Events per transaction.
        #[arg(long, default_value_t = 262_144)]
        batch: usize,
        /// Page cache for the rebuild, in MiB.
        #[arg(long, default_value_t = 2048)]
        cache_mib: usize,
    },
    /// Apply the log from the read models' checkpoint to its end, each batch in one
    /// durable transaction with the checkpoint.
    CatchUp {
        /// The stopped server's data directory.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Events per transaction.
        #[arg(long, default_value_t = 16_384)]
        batch: usize,
    },
    /// Time history pages on the busiest account: the newest page and pages from random
    /// points in its history. Prints p50/p99 in milliseconds.
    HistoryBench {
        /// The stopped server's data directory.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Pages to time.
        #[arg(long, default_value_t = 1000)]
        pages: usize,
        /// Movements per page.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The checkpoint, the log's end, the chain verifier's verdict and a digest of all
    /// read models (equal digests: equal read models).
    Status {
        /// The stopped server's data directory.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
}

fn open_log(data_dir: &Path) -> Result<EmbeddedStore, String> {
    let (log_dir, _) = data_dir_layout(data_dir);
    if !log_dir.is_dir() {
        return Err(format!("{}: no event log here", log_dir.display()));
    }
    EmbeddedStore::open(&log_dir, EmbeddedOptions::default()).map(|(store, _)| store).map_err(|e| e.to_string())
}

/// An error if another process (a running server) holds the lock redb takes on the
/// database at `path`; nothing if there is no such file.
fn refuse_if_in_use(path: &Path) -> Result<(), String> {
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(format!("{}: {error}", path.display())),
    };
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(format!("{}: in use by another process (stop the server first)", path.display()))
        }
        Err(std::fs::TryLockError::Error(error)) => Err(format!("{}: {error}", path.display())),
    }
}

fn open_models(path: &Path) -> Result<ReadModels, String> {
    ReadModels::open(path).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn run(command: ProjectionsCommand, json_output: bool) -> Result<bool, String> {
    match command {
        ProjectionsCommand::Rebuild { data_dir, batch, cache_mib } => {
            let store = open_log(&data_dir)?;
            let path = read_models_path(&data_dir);
            // The old file is never opened (it may be damaged): only its lock, the one
            // redb takes, is tried, since a running server holds it.
            refuse_if_in_use(&path)?;
            let models = ReadModels::recreate(&path, cache_mib << 20).map_err(|e| e.to_string())?;
            apply_log(json_output, &models, &store, batch, false)
        }
        ProjectionsCommand::CatchUp { data_dir, batch } => {
            let store = open_log(&data_dir)?;
            let models = open_models(&read_models_path(&data_dir))?;
            apply_log(json_output, &models, &store, batch, true)
        }
        ProjectionsCommand::HistoryBench { data_dir, pages, limit } => {
            history_bench(&data_dir, pages, limit, json_output)
        }
        ProjectionsCommand::Status { data_dir } => {
            let store = open_log(&data_dir)?;
            let models = open_models(&read_models_path(&data_dir))?;
            let applied = models.next_position().map_err(|e| e.to_string())?;
            report(json_output, &models, applied, store.watch_head().borrow().to_owned(), None)
        }
    }
}

/// Applies the log from the checkpoint with a progress bar, then reports.
fn apply_log(
    json_output: bool,
    models: &ReadModels,
    store: &EmbeddedStore,
    batch: usize,
    durable: bool,
) -> Result<bool, String> {
    let started = Instant::now();
    let applied = catch_up(models, store, batch, durable, |done, head| {
        progress_of("events", done, Some(head), started);
        std::ops::ControlFlow::Continue(())
    })
    .map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    report(json_output, models, applied, store.watch_head().borrow().to_owned(), Some(seconds))
}

fn report(
    json_output: bool,
    models: &ReadModels,
    applied: u64,
    head: u64,
    seconds: Option<f64>,
) -> Result<bool, String> {
    let digest = models.digest().map_err(|e| e.to_string())?;
    let alarm = models.alarm().map_err(|e| e.to_string())?;
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) && seconds.is_some() {
        eprintln!();
    }
    let rate = seconds.map(|s| applied as f64 / s.max(1e-9));
    if json_output {
        let alarm = alarm.as_ref().map(|a| json!({"position": a.position, "reason": a.reason}));
        outln!(
            "{}",
            json!({"applied_position": applied, "log_head": head, "seconds": seconds,
                "events_per_sec": rate.map(f64::round), "digest": digest, "audit_alarm": alarm})
        );
    } else {
        outln!("read models at position {applied} of {head}");
        if let (Some(seconds), Some(rate)) = (seconds, rate) {
            outln!("took {seconds:.2} s ({rate:.0} events/s)");
        }
        outln!("digest {digest}");
        match &alarm {
            Some(alarm) => outln!("AUDIT ALARM at position {}: {}", alarm.position, alarm.reason),
            None => outln!("chain verified up to position {applied}"),
        }
    }
    Ok(alarm.is_none() && applied == head)
}

fn history_bench(data_dir: &Path, pages: usize, limit: usize, json_output: bool) -> Result<bool, String> {
    let models = open_models(&read_models_path(data_dir))?;
    let (account, movements) =
        models.busiest_account(16).map_err(|e| e.to_string())?.ok_or("no accounts in the read models")?;
    let filter = HistoryFilter::default();
    let newest = models.history(&[account], &filter, None, 1).map_err(|e| e.to_string())?;
    let oldest = models.movements_oldest_first(account, &filter, None, 1).map_err(|e| e.to_string())?;
    let (Some(last), Some(first)) = (newest.movements.first(), oldest.movements.first()) else {
        return Err("the busiest account has no movements".into());
    };
    let (first_ns, last_ns) = (first.timestamp_ns, last.timestamp_ns);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut times = Vec::with_capacity(pages);
    for page in 0..pages {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Half the pages are the newest page (what a user opens first), half start at a
        // random point in the account's history (deep paging).
        let cursor =
            (page % 2 == 1).then(|| Cursor { timestamp_ns: first_ns + seed % (last_ns - first_ns).max(1), account: 0 });
        let started = Instant::now();
        let got = models.history(&[account], &filter, cursor, limit).map_err(|e| e.to_string())?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if got.movements.is_empty() {
            return Err("an empty page".into());
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    if json_output {
        outln!(
            "{}",
            json!({"account_movements": movements, "pages": pages, "page_size": limit,
                "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)})
        );
    } else {
        outln!("account with {movements} movements, {pages} pages of {limit}");
        outln!("p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms", at(0.5), at(0.99), at(1.0));
    }
    Ok(true)
}
