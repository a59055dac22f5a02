//! The users commands of the real `ledgerctl`: signup, login, profile, instruments,
//! sessions, wallets, security events, logout. Secrets go in on standard input.

mod common;

use common::{ledgerctl_as, InProcessServer, TOKEN};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_user_signs_up_links_instruments_and_manages_sessions_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcessServer::start(dir.path());
    let addr = server.listen;
    let password = "heliotrope-ferry-2031";

    let (ok, out, err) =
        ledgerctl_as(addr, "", &["signup", "--name", "Hedy Lamarr", "--email", "hedy@example.com"], "x\n");
    assert!(!ok && err.contains("InvalidArgument"), "a weak password is refused: {out}{err}");
    let (ok, out, err) = ledgerctl_as(
        addr,
        "",
        &["--json", "signup", "--name", "Hedy Lamarr", "--email", "hedy@example.com"],
        &format!("{password}\n"),
    );
    assert!(ok, "{out}{err}");
    let user_id = json(&out)["user_id"].as_str().expect("user_id").to_string();

    let (ok, token, err) = ledgerctl_as(addr, "", &["login", "--email", "hedy@example.com"], &format!("{password}\n"));
    assert!(ok, "{token}{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("lus_"), "only the token on standard output: {token}");
    let (ok, _, err) = ledgerctl_as(addr, "", &["login", "--email", "hedy@example.com"], "wrong-password-here\n");
    assert!(!ok && err.contains("invalid email or password"), "{err}");

    let (ok, out, err) = ledgerctl_as(addr, &token, &["--json", "profile", "update", "--phone", "+13105550199"], "");
    assert!(ok, "{out}{err}");
    let profile = json(&out);
    assert_eq!(
        (profile["user_id"].as_str(), profile["phone"].as_str()),
        (Some(user_id.as_str()), Some("+13105550199"))
    );

    let (ok, out, err) = ledgerctl_as(
        addr,
        &token,
        &["instruments", "add-card", "--exp-month", "8", "--exp-year", "2031"],
        "4242424242424242\n123\n",
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("visa ••••4242 08/2031") && !out.contains("4242424242424242"), "{out}");
    let (ok, out, err) = ledgerctl_as(
        addr,
        &token,
        &["--json", "instruments", "add-bank", "--bank-name", "Example Savings", "--routing-number", "011000015"],
        "55501234\n",
    );
    assert!(ok, "{out}{err}");
    let bank_id = json(&out)["instruments"][0]["instrument_id"].as_str().expect("id").to_string();
    let (ok, out, err) = ledgerctl_as(addr, &token, &["instruments", "verify", &bank_id, "1", "1"], "");
    // One in 99² chance that 1 and 1 are the real deposits; either way the answer is clear.
    assert!(ok || err.contains("do not match"), "{out}{err}");
    let (ok, out, err) = ledgerctl_as(addr, &token, &["--json", "instruments", "list"], "");
    assert!(ok, "{out}{err}");
    let instruments = json(&out)["instruments"].as_array().expect("instruments").clone();
    assert_eq!(instruments.len(), 2);
    assert!(instruments.iter().any(|i| i["display"] == "Example Savings ••••1234"), "{out}");

    let (ok, out, err) = ledgerctl_as(addr, &token, &["wallets", "open", "EUR"], "");
    assert!(ok && out.contains("EUR") && out.contains("0.00"), "{out}{err}");

    // Payments from the command line: a top-up from the card, then a payment to a friend.
    let card_id =
        instruments.iter().find(|i| i["kind"] == "CARD").and_then(|i| i["instrument_id"].as_str()).expect("card");
    let (ok, _, err) = ledgerctl_as(
        addr,
        "",
        &["signup", "--name", "Friend", "--email", "friend@example.com"],
        &format!("{password}\n"),
    );
    assert!(ok, "{err}");
    // Risk limits are in USD: a EUR payment is valued at the EUR/USD mid rate (without
    // one it would wait for a review).
    let (ok, out, err) = ledgerctl_as(addr, TOKEN, &["fx", "set-rates", "--rate", "EUR/USD=1.085"], "");
    assert!(ok, "{out}{err}");
    let topup = ["--json", "topup", "--key", "t1", "--amount", "20.00", "--currency", "EUR", "--instrument", card_id];
    let pay =
        ["--json", "pay", "--key", "p1", "--to-email", "friend@example.com", "--amount", "5.00", "--currency", "EUR"];
    for args in [&topup[..], &pay[..]] {
        let (ok, out, err) = ledgerctl_as(addr, &token, args, "");
        assert!(ok, "{out}{err}");
        let id = json(&out)["payment_id"].as_str().expect("payment_id").to_string();
        let started = std::time::Instant::now();
        loop {
            let (ok, out, err) = ledgerctl_as(addr, &token, &["--json", "payments", &id], "");
            assert!(ok, "{out}{err}");
            let status = json(&out)["status"].as_str().unwrap_or("").to_string();
            if status == "completed" {
                break;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(20) && status != "failed", "{out}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let (ok, out, err) = ledgerctl_as(addr, &token, &["wallets", "list"], "");
    assert!(ok && out.contains("15.00"), "20.00 in, 5.00 out: {out}{err}");
    let (ok, out, err) = ledgerctl_as(addr, &token, &["payments"], "");
    assert!(ok && out.contains("top_up") && out.contains("send"), "{out}{err}");
    let (ok, _, err) = ledgerctl_as(addr, &token, &["review"], "");
    assert!(!ok && err.contains("PermissionDenied"), "a user does not see the review queue: {err}");

    let (_, second, _) = ledgerctl_as(addr, "", &["login", "--email", "hedy@example.com"], &format!("{password}\n"));
    let (ok, out, err) = ledgerctl_as(addr, &token, &["--json", "sessions", "list"], "");
    assert!(ok, "{out}{err}");
    let sessions = json(&out)["sessions"].as_array().expect("sessions").clone();
    assert_eq!(sessions.len(), 2);
    let other = sessions.iter().find(|s| s["current"] == false).expect("the other session");
    let (ok, out, err) =
        ledgerctl_as(addr, &token, &["sessions", "revoke", other["session_id"].as_str().expect("id")], "");
    assert!(ok, "{out}{err}");
    let (ok, _, err) = ledgerctl_as(addr, second.trim(), &["profile", "show"], "");
    assert!(!ok && err.contains("Unauthenticated"), "the revoked session is refused: {err}");

    // Rates from the sample file (an admin), then a quote and a conversion by the user.
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/rates/sample.csv");
    let (ok, out, err) = ledgerctl_as(addr, common::TOKEN, &["--json", "fx", "set-rates", "--file", sample], "");
    assert!(ok, "{out}{err}");
    assert_eq!(json(&out)["rates"].as_array().map(Vec::len), Some(14), "{out}");
    let (ok, out, err) = ledgerctl_as(addr, &token, &["--json", "fx", "quote", "EUR", "USD", "--amount", "10.00"], "");
    assert!(ok, "{out}{err}");
    let quote = json(&out);
    // 10.00 EUR at 1.0850 less 0.5 %: 10.79575 → 10.79 USD.
    assert_eq!(quote["to_amount"], "10.79");
    let quote_id = quote["quote_id"].as_str().expect("quote id");
    let (ok, out, err) = ledgerctl_as(addr, &token, &["fx", "execute", quote_id], "");
    assert!(ok, "{out}{err}");
    let (ok, out, err) = ledgerctl_as(addr, &token, &["wallets", "list"], "");
    assert!(ok && out.contains("10.79") && out.contains("5.00"), "15.00 - 10.00 EUR, 10.79 USD: {out}{err}");

    let (ok, out, err) = ledgerctl_as(addr, &token, &["security-events"], "");
    assert!(ok && out.contains("sign_in_failed") && out.contains("instrument_added"), "{out}{err}");
    let (ok, out, err) = ledgerctl_as(addr, &token, &["logout"], "");
    assert!(ok, "{out}{err}");
    let (ok, _, _) = ledgerctl_as(addr, &token, &["profile", "show"], "");
    assert!(!ok, "signed out");
    server.stop();
}
