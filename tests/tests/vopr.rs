//! The engine's simulator (`ledger_tests::vopr`) in the test suite: a bounded number of
//! seeds must pass, a seed must replay bit for bit, and each planted bug must be found
//! within the same budget. Longer runs: `cargo run --release -p ledger-tests --bin vopr
//! -- --minutes 30` (README, "Simulator").

use std::process::Command;

use ledger_tests::vopr::{self, Config, Stats};

/// Seeds per test run (about 15 s in a debug build on the 2-core machine); override
/// with `LEDGER_VOPR_SEEDS`.
const SEEDS_DEFAULT: u64 = 200;
/// Seeds the planted bugs must be found within.
const SEEDS_FOR_A_PLANTED_BUG: u64 = 50;

fn seeds() -> u64 {
    match std::env::var("LEDGER_VOPR_SEEDS") {
        Ok(text) => text.parse().expect("LEDGER_VOPR_SEEDS is a number"),
        Err(_) => SEEDS_DEFAULT,
    }
}

#[test]
fn a_bounded_number_of_seeds_pass_through_power_losses_disk_errors_and_restarts() {
    let mut totals = Stats::default();
    for seed in 0..seeds() {
        match vopr::run(seed, Config::default()) {
            Ok(finished) => totals.add(&finished.stats),
            Err(failure) => panic!("{failure}"),
        }
    }
    // The runs reach every case the checks are about.
    assert!(totals.power_losses > 0 && totals.clean_stops > 0, "{totals:?}");
    assert!(totals.unanswered_landed > 0 && totals.unanswered_lost > 0, "{totals:?}");
    assert!(totals.expiries > 0 && totals.disk_errors > 0 && totals.transfers_created > 0, "{totals:?}");
    assert!(totals.starts_with_snapshots > 0, "{totals:?}");
}

#[test]
fn a_seed_replays_bit_for_bit() {
    let first = vopr::run(11, Config::default()).expect("seed 11 passes");
    let again = vopr::run(11, Config::default()).expect("seed 11 passes again");
    assert_eq!(first.digest, again.digest, "the same seed gave another run");
    let other = vopr::run(12, Config::default()).expect("seed 12 passes");
    assert_ne!(first.digest, other.digest, "the digest tells runs apart");
}

#[test]
fn every_planted_bug_is_found_within_the_budget() {
    for bug in ledger_engine::sim_bugs::Bug::ALL {
        // In a process of its own: a planted bug is process-wide.
        let output = Command::new(env!("CARGO_BIN_EXE_vopr"))
            .args(["--inject-bug", bug.name(), "--seeds", &format!("0..{SEEDS_FOR_A_PLANTED_BUG}")])
            .output()
            .expect("run vopr");
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{} was not found:\n{said}", bug.name());
        assert!(said.contains("replay: cargo run --release -p ledger-tests --bin vopr -- --seed"), "{said}");
    }
}
