//! `ledgerctl load --payments` against a running server: every payment between the load
//! users completes (per-user velocity limits raised, risk checks on), a rerun reuses the
//! users, the JSON report has its keys, the same payments go through the HTTP/JSON API
//! (`--transport http`), and at the default limits the risk checks block payments,
//! counted as failed with their reason.

mod common;

use std::net::SocketAddr;

use common::{ledgerctl, InProcessServer};

/// The per-user limits the benchmark runs with (README: "Payments load").
fn raised_limits(config: &mut ledger_api::config::Config) {
    let risk = &mut config.payments.risk;
    risk.user_per_hour = 10_000_000;
    risk.user_per_day = 10_000_000;
    risk.user_amount_per_day = 100_000_000_000;
}

/// `ledgerctl --json load --payments ARGS`: whether it succeeded, and its one JSON line.
fn load(addr: SocketAddr, args: &[&str]) -> (bool, serde_json::Value) {
    let mut all = vec!["--json", "load", "--payments"];
    all.extend_from_slice(args);
    let (ok, output) = ledgerctl(addr, &all);
    let line = output.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON line: {output}"));
    let value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {output}"));
    (ok, value)
}

fn assert_report_keys(report: &serde_json::Value) {
    for key in [
        "payments_per_sec",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "completed",
        "failed",
        "transport",
        "wait",
        "clients",
        "users",
        "duration_s",
    ] {
        assert!(!report[key].is_null(), "{key} missing: {report}");
    }
}

#[test]
fn every_payment_completes_over_grpc_and_a_rerun_reuses_the_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcessServer::start_with_settings(dir.path(), raised_limits);
    let args = ["--count", "200", "--clients", "4", "--users", "8", "--seed", "7"];
    let (ok, report) = load(server.listen, &args);
    assert!(ok, "{report}");
    assert_report_keys(&report);
    assert_eq!(report["completed"], 200, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!((&report["transport"], &report["wait"]), (&"grpc".into(), &"send".into()));
    assert_eq!((report["clients"].as_u64(), report["users"].as_u64()), (Some(4), Some(8)));
    let p50 = report["p50_ms"].as_f64().expect("p50");
    let p99 = report["p99_ms"].as_f64().expect("p99");
    let p999 = report["p999_ms"].as_f64().expect("p999");
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{report}");

    // The same users sign in again (their email is taken) and pay from what they hold,
    // now waiting with GetPayment after each send.
    let (ok, again) = load(server.listen, &[&args[..], &["--wait", "get"]].concat());
    assert!(ok, "{again}");
    assert_eq!(again["wait"], "get");
    assert_eq!((again["completed"].as_u64(), again["failed"].as_u64()), (Some(200), Some(0)), "{again}");
    server.stop();
}

#[test]
fn every_payment_completes_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = common::free_port();
    let server = InProcessServer::start_with_settings(dir.path(), |config| {
        raised_limits(config);
        config.http_listen = Some(http);
    });
    let http = http.to_string();
    let (ok, report) = load(
        server.listen,
        &["--count", "200", "--clients", "4", "--users", "8", "--transport", "http", "--http", &http],
    );
    assert!(ok, "{report}");
    assert_report_keys(&report);
    assert_eq!(report["transport"], "http");
    assert_eq!((report["completed"].as_u64(), report["failed"].as_u64()), (Some(200), Some(0)), "{report}");
    server.stop();
}

#[test]
fn at_the_default_limits_the_risk_checks_block_and_the_run_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcessServer::start(dir.path());
    // Two users share 100 payments: each is blocked after its 30th payment in an hour
    // (their top-up counts as one).
    let (ok, report) = load(server.listen, &["--count", "100", "--clients", "2", "--users", "2"]);
    assert!(!ok, "a run with failed payments exits non-zero: {report}");
    assert_report_keys(&report);
    let (completed, failed) = (report["completed"].as_u64().expect("completed"), report["failed"].as_u64());
    assert_eq!(completed, 2 * 29, "{report}");
    assert_eq!(failed, Some(100 - completed), "{report}");
    // Counted by kind, without the details that differ from one payment to the next.
    assert_eq!(report["failures"], serde_json::json!({"failed: blocked: velocity_user_hour": 100 - completed}));
    server.stop();
}
