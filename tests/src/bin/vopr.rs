//! The engine's simulator (`ledger_tests::vopr`) from the command line.
//!
//!     vopr --seed N                 one seed (replays a failure bit for bit)
//!     vopr --seeds A..B             seeds A to B-1 (default 0..50)
//!     vopr --minutes M [--first N]  seeds N, N+1, ... until M minutes have passed
//!     vopr --inject-bug NAME ...    plants a bug; succeeds only if a seed finds it
//!     --lives L --steps S           the size of each run; --digests prints each digest
//!
//! Exit status 0: every seed passed (with --inject-bug: the bug was found); 1: a seed
//! failed (or the planted bug was not found); 2: bad arguments.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ledger_engine::sim_bugs::{self, Bug};
use ledger_tests::vopr::{self, Config, Stats};

struct Args {
    first: u64,
    /// One past the last seed, or none in long mode.
    end: Option<u64>,
    minutes: Option<f64>,
    bug: Option<Bug>,
    config: Config,
    digests: bool,
}

fn parse() -> Result<Args, String> {
    let mut args =
        Args { first: 0, end: Some(50), minutes: None, bug: None, config: Config::default(), digests: false };
    let mut words = std::env::args().skip(1);
    let number = |value: Option<String>, flag: &str| -> Result<u64, String> {
        value.ok_or(format!("{flag} needs a value"))?.parse().map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(word) = words.next() {
        match word.as_str() {
            "--seed" => {
                args.first = number(words.next(), "--seed")?;
                args.end = Some(args.first + 1);
            }
            "--seeds" => {
                let range = words.next().ok_or("--seeds needs A..B")?;
                let (a, b) = range.split_once("..").ok_or("--seeds needs A..B")?;
                args.first = a.parse().map_err(|e| format!("--seeds: {e}"))?;
                args.end = Some(b.parse().map_err(|e| format!("--seeds: {e}"))?);
            }
            "--minutes" => {
                let minutes: f64 =
                    words.next().ok_or("--minutes needs a value")?.parse().map_err(|e| format!("{e}"))?;
                if !(minutes > 0.0 && minutes <= 7.0 * 24.0 * 60.0) {
                    return Err("--minutes must be above 0 and at most a week".into());
                }
                args.minutes = Some(minutes);
                args.end = None;
            }
            "--first" => args.first = number(words.next(), "--first")?,
            "--lives" => args.config.lives = number(words.next(), "--lives")? as usize,
            "--steps" => args.config.steps_per_life = number(words.next(), "--steps")? as usize,
            "--digests" => args.digests = true,
            "--inject-bug" => {
                let name = words.next().ok_or("--inject-bug needs a name")?;
                let names: Vec<&str> = Bug::ALL.iter().map(|bug| bug.name()).collect();
                args.bug = Some(Bug::parse(&name).ok_or(format!("unknown bug {name}; known: {names:?}"))?);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("vopr: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(bug) = args.bug {
        sim_bugs::inject(bug);
    }
    let started = Instant::now();
    let deadline = args.minutes.map(|minutes| started + Duration::from_secs_f64(minutes * 60.0));
    let (mut seed, mut passed, mut totals) = (args.first, 0u64, Stats::default());
    let mut failure = None;
    while args.end.is_none_or(|end| seed < end) && deadline.is_none_or(|deadline| Instant::now() < deadline) {
        match vopr::run(seed, args.config) {
            Ok(finished) => {
                if args.digests {
                    println!("seed {seed}: digest {}", finished.digest);
                }
                totals.add(&finished.stats);
                passed += 1;
            }
            Err(failed) => {
                println!("{failed}");
                failure = Some(failed);
                break;
            }
        }
        seed += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let seed = seed + u64::from(failure.is_some());
    let per_minute = (seed - args.first) as f64 * 60.0 / secs.max(1e-9);
    println!(
        "seeds {}..{seed}: {passed} passed{} in {secs:.1} s ({per_minute:.1} seeds/min)",
        args.first,
        if failure.is_some() { ", 1 failed" } else { "" }
    );
    println!(
        "  steps {}, requests {}, transfers created {}, power losses {}, clean stops {}, unanswered requests \
         landed {} / lost {}, holds expired {}, disk errors {}, starts with snapshots {}, damaged read models rebuilt {}, \
         events in the final logs {}",
        totals.steps,
        totals.requests,
        totals.transfers_created,
        totals.power_losses,
        totals.clean_stops,
        totals.unanswered_landed,
        totals.unanswered_lost,
        totals.expiries,
        totals.disk_errors,
        totals.starts_with_snapshots,
        totals.read_models_damaged,
        totals.events_in_log
    );
    match (args.bug, failure) {
        (None, None) => ExitCode::SUCCESS,
        (None, Some(_)) => ExitCode::from(1),
        (Some(bug), Some(found)) => {
            println!("the planted bug {} was found at seed {}", bug.name(), found.seed);
            ExitCode::SUCCESS
        }
        (Some(bug), None) => {
            println!("the planted bug {} was not found", bug.name());
            ExitCode::from(1)
        }
    }
}
