//! The real `ledgerctl` binary against a running server: accounts, transfers, history,
//! balance and the report in its table, CSV and JSON forms.

mod common;

use common::{ledgerctl, InProcessServer};

#[test]
fn history_balance_and_reports_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcessServer::start(dir.path());
    let listen = server.listen;

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let today = now / 86_400;
    for (id, owner) in [("1", "7"), ("2", "7")] {
        let (ok, out) = ledgerctl(listen, &["accounts", "create", "--id", id, "--currency", "EUR", "--owner", owner]);
        assert!(ok, "{out}");
    }
    // The second through the packed form (CreateTransfersPacked).
    for (id, debit, credit, amount, form) in [("10", "1", "2", "250", ""), ("11", "2", "1", "40", "--packed")] {
        let args = ["transfers", "create", "--id", id, "--debit", debit, "--credit", credit, "--amount", amount];
        let args: Vec<&str> = [&args[..], &["--currency", "EUR", form]].concat();
        let (ok, out) = ledgerctl(listen, &args.into_iter().filter(|a| !a.is_empty()).collect::<Vec<_>>());
        assert!(ok, "{out}");
    }
    let packed = ["--json", "transfers", "--packed", "create", "--debit", "2", "--amount", "40", "--currency", "EUR"];
    let (ok, out) = ledgerctl(listen, &[&packed[..], &["--id", "11", "--credit", "1"]].concat());
    assert!(ok && out.contains("\"ALREADY_EXISTS\""), "a retry changes nothing: {out}");
    let (ok, out) = ledgerctl(listen, &[&packed[..], &["--id", "12", "--credit", "404"]].concat());
    assert!(!ok && out.contains("\"CREDIT_ACCOUNT_NOT_FOUND\""), "{out}");

    let (ok, out) = ledgerctl(listen, &["--json", "history", "--account", "1"]);
    assert!(ok, "{out}");
    let history: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or("")).expect(&out);
    let ids: Vec<&str> =
        history["movements"].as_array().expect("movements").iter().filter_map(|m| m["transfer_id"].as_str()).collect();
    assert_eq!(ids, ["11", "10"], "newest first");
    let (ok, out) = ledgerctl(listen, &["history", "--owner", "7", "--direction", "credit"]);
    assert!(ok && out.lines().count() == 3, "a header and two credit movements: {out}");

    let (ok, out) = ledgerctl(listen, &["--json", "balance", "--account", "2"]);
    assert!(ok, "{out}");
    let balance: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    // --amount is in major units: 250 and 40 EUR.
    assert_eq!(
        (balance["credits_posted"].as_str(), balance["debits_posted"].as_str()),
        (Some("250.00"), Some("40.00"))
    );
    assert_eq!(balance["credits_posted_minor"].as_str(), Some("25000"), "{out}");

    // Yesterday to the day after tomorrow (UTC): the transfers' day is inside even if
    // midnight passed since they were made.
    let (from, to) = (date(today - 1), date(today + 2));
    let (ok, out) = ledgerctl(listen, &["report", "--account", "1", "--from", &from, "--to", &to, "--csv"]);
    assert!(ok, "{out}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows[0], "account_id,currency,date,opening,credits,debits,count,closing");
    assert_eq!(rows.len(), 4, "three days: {out}");
    assert_eq!(rows[1], format!("1,EUR,{from},0.00,0.00,0.00,0,0.00"));
    let active = rows.iter().filter(|row| row.ends_with(",0.00,40.00,250.00,2,-210.00")).count();
    assert_eq!(active, 1, "one day with both transfers: {out}");
    assert!(rows[3].ends_with(",-210.00"), "the last day closes at the balance: {out}");
    let (ok, out) = ledgerctl(listen, &["--minor", "report", "--account", "1", "--from", &from, "--to", &to, "--csv"]);
    assert!(ok && out.lines().any(|row| row.ends_with(",0,4000,25000,2,-21000")), "--minor: {out}");
    let (ok, out) = ledgerctl(listen, &["--json", "report", "--owner", "7", "--from", &from, "--to", &to]);
    assert!(ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(report["reports"].as_array().map(Vec::len), Some(2), "one report per account of the owner");
    let (ok, out) = ledgerctl(listen, &["report", "--account", "1", "--from", "2026-02-30", "--to", &to]);
    assert!(!ok && out.contains("expected YYYY-MM-DD"), "{out}");

    server.stop();
}

/// `YYYY-MM-DD` of a day number since 1970-01-01.
fn date(days: u64) -> String {
    let (year, month, day) = ledger_core::calendar::civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02}")
}
