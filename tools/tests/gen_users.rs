//! `ledgerctl gen users` writes real users into a stopped server's data directory: the
//! server then signs them in with the shared password, a second run over the same
//! numbers is refused whole, and the log still audits.

mod common;

use common::{free_port, ledgerctl_as, InProcessServer, TOKEN};

const PASSWORD: &str = "quartz-meadow-lantern-8";

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn generated_users_sign_in_with_the_shared_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    let nowhere = free_port();
    // Two batches (10,000 users each at most).
    let args = ["--json", "gen", "users", "--count", "10500", "--data-dir", data_arg];
    let (ok, out, err) = ledgerctl_as(nowhere, TOKEN, &args, &format!("{PASSWORD}\n"));
    assert!(ok, "{out}{err}");
    assert_eq!(json(&out)["users"].as_u64(), Some(10_500), "{out}");
    // The same numbers again: the first email is taken, and nothing of the run is kept.
    let args = ["gen", "users", "--count", "20", "--first", "10490", "--data-dir", data_arg];
    let (ok, out, err) = ledgerctl_as(nowhere, TOKEN, &args, &format!("{PASSWORD}\n"));
    assert!(!ok && err.contains("already registered"), "{out}{err}");
    // A weak shared password is refused before anything is written.
    let args = ["gen", "users", "--count", "1", "--first", "20000", "--data-dir", data_arg];
    let (ok, _, err) = ledgerctl_as(nowhere, TOKEN, &args, "password\n");
    assert!(!ok && err.contains("password"), "{err}");

    let server = InProcessServer::start(dir.path());
    for n in [0, 10_499] {
        let email = format!("gen-{n}@users.test");
        let (ok, out, err) =
            ledgerctl_as(server.listen, TOKEN, &["login", "--email", &email], &format!("{PASSWORD}\n"));
        assert!(ok && out.starts_with("lus_"), "{email}: {out}{err}");
    }
    let (ok, _, err) =
        ledgerctl_as(server.listen, TOKEN, &["login", "--email", "gen-7@users.test"], "wrong-password-123\n");
    assert!(!ok, "a wrong password is refused: {err}");
    let (ok, _, err) =
        ledgerctl_as(server.listen, TOKEN, &["login", "--email", "gen-20000@users.test"], &format!("{PASSWORD}\n"));
    assert!(!ok, "the refused run made no user: {err}");
    server.stop();
    let (ok, out, err) = ledgerctl_as(nowhere, TOKEN, &["audit", "verify", "--data-dir", data_arg], "");
    assert!(ok, "{out}{err}");
}
