//! `ledgerctl bench`: TigerBeetle's canonical workload (uniformly random accounts,
//! durable batches) in process against the embedded store.

use crate::load::percentile_ms;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::writer::{Ledger, LedgerConfig};

/// Transfers the benchmark keeps in flight (at least three batches), so the writer
/// validates one batch while the store syncs another, whatever the batch size.
const IN_FLIGHT_TRANSFERS: usize = 16_384;
const IN_FLIGHT_BATCHES_MIN: usize = 3;

#[derive(Args)]
pub struct BenchArgs {
    /// Accounts to open and pick from at random.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Transfers in all.
    #[arg(long, default_value_t = 1_000_000)]
    transfers: u64,
    /// Transfers per request.
    #[arg(long, default_value_t = 8189)]
    batch: usize,
    /// Requests kept in flight (default: enough for 16,384 transfers, at least 3).
    /// `--batch 1 --in-flight 1` makes every transfer a commit of its own.
    #[arg(long)]
    in_flight: Option<usize>,
    /// Streams of one event each written to the log before the run, as users and
    /// payments make (a stream each): with `--batch 1 --in-flight 1`, whether the
    /// cost of a commit grows with the number of streams.
    #[arg(long, default_value_t = 0)]
    other_streams: u64,
    /// Where to put the store; by default a fresh directory under `target/`,
    /// removed afterwards (not /tmp, which may be memory and make syncs free).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// xorshift64*: a fast, deterministic generator; quality is ample for picking accounts.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

pub fn run(args: BenchArgs, json: bool) -> ExitCode {
    if args.accounts < 2
        || args.batch == 0
        || args.batch > ledger_engine::writer::REQUEST_ITEMS_MAX
        || args.transfers == 0
        || args.in_flight == Some(0)
        || args.other_streams > OTHER_STREAMS_MAX
    {
        eprintln!(
            "error: need --accounts >= 2, --transfers >= 1, 1 <= --batch <= {}, --in-flight >= 1 and \
             --other-streams <= {OTHER_STREAMS_MAX}",
            ledger_engine::writer::REQUEST_ITEMS_MAX
        );
        return ExitCode::from(2);
    }
    let (dir, remove) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        // Under `target/` (ignored by git), never in the working directory itself.
        None => (PathBuf::from("target").join(format!("ledger-bench-{}", std::process::id())), true),
    };
    let result = run_in(&args, &dir, json);
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Most `--other-streams`: their heads are in the store's memory (about 150 B each).
const OTHER_STREAMS_MAX: u64 = 10_000_000;
/// Appends of `--other-streams` kept in flight while they are written.
const OTHER_STREAMS_IN_FLIGHT: u64 = 8_192;

/// Writes one event to each of `count` streams of their own, many appends in flight.
fn write_other_streams(store: &EmbeddedStore, count: u64) -> Result<(), String> {
    use ledger_engine::store::{EventBatch, EventStore, ExpectedRevision};
    let (sender, receiver) = mpsc::channel::<Result<(), String>>();
    let mut in_flight = 0u64;
    for n in 0..count {
        if in_flight == OTHER_STREAMS_IN_FLIGHT {
            receiver.recv().map_err(|e| e.to_string())??;
            in_flight -= 1;
        }
        let mut batch = EventBatch::default();
        batch.push(std::borrow::Cow::Borrowed("BenchStreamOpened"), &n.to_le_bytes());
        let sender = sender.clone();
        let stream = format!("bench-other-{n}");
        store.append_with(
            &stream,
            ExpectedRevision::NoStream,
            batch,
            Box::new(move |result| drop(sender.send(result.map(drop).map_err(|e| e.to_string())))),
        );
        in_flight += 1;
    }
    for _ in 0..in_flight {
        receiver.recv().map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// The id of the bench's `n`th account.
const ACCOUNT_BASE: u128 = 1 << 64;

fn run_in(args: &BenchArgs, dir: &std::path::Path, json: bool) -> Result<(), String> {
    let (store, _) = EmbeddedStore::open(dir.join("log"), EmbeddedOptions::default()).map_err(|e| e.to_string())?;
    if args.other_streams > 0 {
        let started = Instant::now();
        write_other_streams(&store, args.other_streams)?;
        if !json {
            outln!("{} other streams written in {:.2} s", args.other_streams, started.elapsed().as_secs_f64());
        }
    }
    let config = LedgerConfig {
        snapshot_dir: Some(dir.join("snapshots")),
        state_dir: Some(dir.join("state")),
        ..LedgerConfig::default()
    };
    let ledger = Ledger::open(Arc::new(store), config).map_err(|e| e.to_string())?;
    let usd = Currency::parse("USD").map_err(|e| e.to_string())?;
    open_accounts(&ledger, args.accounts, usd)?;
    // Batches are made as they are submitted (about 20 ns a transfer), so the bench's
    // own memory does not grow with `--transfers`.
    let batches = make_batches(args, usd);
    let start = Instant::now();
    let in_flight_max = args.in_flight.unwrap_or((IN_FLIGHT_TRANSFERS / args.batch).max(IN_FLIGHT_BATCHES_MIN));
    let submitted = submit_all(&ledger, batches, in_flight_max, start);
    let elapsed = start.elapsed();
    ledger.close();
    let Submitted { failures, mut latencies, progress } = submitted?;
    if failures > 0 {
        return Err(format!("{failures} transfers were rejected"));
    }
    latencies.sort();
    let figures = Figures {
        elapsed,
        latencies,
        tenths_per_sec: tenth_rates(&progress, args.transfers),
        rss_peak_bytes: rss_peak_bytes(),
        disk_bytes: disk_bytes(dir),
    };
    report(args, json, &figures);
    Ok(())
}

/// What a run measured.
struct Figures {
    elapsed: Duration,
    /// Each batch's, sorted.
    latencies: Vec<Duration>,
    /// The rate of each tenth of the run, in order.
    tenths_per_sec: Vec<Option<f64>>,
    rss_peak_bytes: Option<u64>,
    disk_bytes: u64,
}

/// The rate of each tenth of the run's transfers, in order, from the times batches
/// completed (`progress`: time since the start, transfers done by then); `None` for a
/// tenth that took no measurable time.
fn tenth_rates(progress: &[(Duration, u64)], total: u64) -> Vec<Option<f64>> {
    let tenth = (total / 10).max(1);
    // When the first `transfers` were done, with how many were done then.
    let done_by = |transfers: u64| {
        if transfers == 0 {
            return Some((0.0, 0));
        }
        progress.iter().find(|(_, done)| *done >= transfers).map(|(at, done)| (at.as_secs_f64(), *done))
    };
    (0..10)
        .map(|k| {
            let (from, from_done) = done_by(k * tenth)?;
            let (to, to_done) = if k == 9 { done_by(total)? } else { done_by((k + 1) * tenth)? };
            (to > from).then(|| (to_done - from_done) as f64 / (to - from))
        })
        .collect()
}

/// The process's peak resident memory (`VmHWM` of /proc/self/status), where Linux tells it.
fn rss_peak_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    // ok: an unreadable entry is left out of a figure that is only reported.
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => disk_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Opens the accounts a request at a time: the commands are made per request, so the
/// bench's own memory (its peak RSS is reported) does not grow with the accounts.
fn open_accounts(ledger: &Ledger, count: u64, currency: Currency) -> Result<(), String> {
    let per_request = ledger_engine::writer::REQUEST_ITEMS_MAX as u64;
    for first in (0..count).step_by(per_request as usize) {
        let chunk: Vec<AccountCommand> = (first..count.min(first + per_request))
            .map(|n| {
                AccountCommand::Open(NewAccount {
                    id: AccountId(ACCOUNT_BASE + u128::from(n)),
                    currency,
                    code: 1,
                    flags: AccountFlags(0),
                    owner_id: 0,
                })
            })
            .collect();
        let results = ledger.create_accounts_blocking(chunk).map_err(|e| e.to_string())?;
        if let Some(error) = results.iter().find_map(|r| r.err()) {
            return Err(format!("creating accounts: {error}"));
        }
    }
    Ok(())
}

/// Uniformly random posted transfers between distinct accounts, in batches made as
/// they are taken.
fn make_batches(args: &BenchArgs, currency: Currency) -> impl Iterator<Item = Vec<NewTransfer>> {
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    let transfer_base = u128::from(std::process::id()) << 64 | u128::from(random.next() >> 16) << 32;
    let (total, batch_max, accounts) = (args.transfers, args.batch as u64, args.accounts);
    let mut made = 0u64;
    std::iter::from_fn(move || {
        if made >= total {
            return None;
        }
        let size = (total - made).min(batch_max);
        let batch = (0..size)
            .map(|n| {
                let debit = random.next() % accounts;
                let credit = (debit + 1 + random.next() % (accounts - 1)) % accounts;
                NewTransfer {
                    id: TransferId(transfer_base + u128::from(made + n + 1)),
                    debit_account_id: AccountId(ACCOUNT_BASE + u128::from(debit)),
                    credit_account_id: AccountId(ACCOUNT_BASE + u128::from(credit)),
                    amount: u128::from(1 + random.next() % 1000),
                    currency: Some(currency),
                    code: 1,
                    metadata: String::new(),
                    linked: false,
                    kind: TransferKind::Posted,
                }
            })
            .collect();
        made += size;
        Some(batch)
    })
}

/// What submitting every batch gave.
struct Submitted {
    /// Transfers rejected.
    failures: usize,
    /// Each batch's latency from submission to durable acknowledgement.
    latencies: Vec<Duration>,
    /// When each batch completed (since the start) and the transfers done by then.
    progress: Vec<(Duration, u64)>,
}

/// Submits every batch, keeping several in flight.
fn submit_all(
    ledger: &Ledger,
    batches: impl Iterator<Item = Vec<NewTransfer>>,
    in_flight_max: usize,
    start: Instant,
) -> Result<Submitted, String> {
    let (done_sender, done_receiver) = mpsc::channel::<(Duration, u64, Result<usize, String>)>();
    let mut submitted = Submitted { failures: 0, latencies: Vec::new(), progress: Vec::new() };
    let mut in_flight = 0usize;
    let mut done = 0u64;
    let mut pending = batches;
    loop {
        while in_flight < in_flight_max {
            let Some(batch) = pending.next() else { break };
            let sender = done_sender.clone();
            let (sent, size) = (Instant::now(), batch.len() as u64);
            ledger.submit_transfers(batch, move |result| {
                let result = result.map(|r| r.iter().filter(|r| r.is_err()).count()).map_err(|e| e.to_string());
                let _ = sender.send((sent.elapsed(), size, result));
            });
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        let (latency, size, result) = done_receiver.recv().map_err(|e| e.to_string())?;
        in_flight -= 1;
        submitted.failures += result?;
        submitted.latencies.push(latency);
        done += size;
        submitted.progress.push((start.elapsed(), done));
    }
    Ok(submitted)
}

/// Prints the figures.
fn report(args: &BenchArgs, json: bool, figures: &Figures) {
    let (elapsed, latencies) = (figures.elapsed, &figures.latencies);
    let transfers_per_sec = args.transfers as f64 / elapsed.as_secs_f64();
    let (p50, p99, p100) =
        (percentile_ms(latencies, 0.50), percentile_ms(latencies, 0.99), percentile_ms(latencies, 1.0));
    let round = |rate: Option<f64>| rate.map(f64::round);
    let first_tenth = figures.tenths_per_sec.first().copied().flatten();
    let last_tenth = figures.tenths_per_sec.last().copied().flatten();
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "transfers_per_sec": transfers_per_sec.round(),
                "p50_ms": p50, "p99_ms": p99, "p100_ms": p100,
                "batch_size": args.batch, "transfers": args.transfers,
                "accounts": args.accounts, "other_streams": args.other_streams,
                "first_tenth_per_sec": round(first_tenth),
                "last_tenth_per_sec": round(last_tenth),
                "tenths_per_sec": figures.tenths_per_sec.iter().map(|rate| round(*rate)).collect::<Vec<_>>(),
                "rss_peak_bytes": figures.rss_peak_bytes,
                "disk_bytes": figures.disk_bytes,
            })
        );
    } else {
        outln!(
            "{} transfers in batches of {} over {} accounts: {:.2} s",
            args.transfers,
            args.batch,
            args.accounts,
            elapsed.as_secs_f64()
        );
        outln!("throughput: {transfers_per_sec:.0} durable transfers/s");
        let tenth = |rate: Option<f64>| rate.map_or("-".to_string(), |r| format!("{r:.0}"));
        outln!("first tenth: {} transfers/s, last tenth: {} transfers/s", tenth(first_tenth), tenth(last_tenth));
        let tenths: Vec<String> = figures.tenths_per_sec.iter().map(|rate| tenth(*rate)).collect();
        outln!("each tenth: {} transfers/s", tenths.join(", "));
        outln!("batch latency: p50 {p50:.2} ms, p99 {p99:.2} ms, max {p100:.2} ms");
        let rss = figures.rss_peak_bytes.map_or("-".to_string(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        outln!("peak RSS: {rss}, on disk: {:.1} MiB", figures.disk_bytes as f64 / 1048576.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenth_is_measured_from_the_batches_that_made_it() {
        // 100 transfers in batches of 10, one a second, then the last five tenths'
        // batches twice as slow.
        let mut progress = Vec::new();
        let mut at = 0;
        for batch in 1..=10u64 {
            at += if batch <= 5 { 1 } else { 2 };
            progress.push((Duration::from_secs(at), batch * 10));
        }
        let rates = tenth_rates(&progress, 100);
        assert_eq!(rates.len(), 10);
        assert_eq!(rates[..5], [Some(10.0); 5]);
        assert_eq!(rates[5..], [Some(5.0); 5]);
        // A tenth done within another's batch took no time of its own.
        let rates = tenth_rates(&[(Duration::from_secs(4), 100)], 100);
        assert_eq!(rates[0], Some(25.0));
        assert_eq!(rates[1..], [None; 9]);
    }
}
