//! One AFL++ harness for every target of `ledger_tests::fuzz`: the target is named by
//! the environment variable `LEDGER_FUZZ_TARGET` (read once, before the fork server).

fn main() {
    let name = std::env::var("LEDGER_FUZZ_TARGET").unwrap_or_default();
    let Some((_, target)) = ledger_tests::fuzz::TARGETS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = ledger_tests::fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("LEDGER_FUZZ_TARGET must be one of {names:?}");
        std::process::exit(2);
    };
    let target = *target;
    afl::fuzz!(|data: &[u8]| target(data));
}
