//! Shared by the command-line tests: `ledgerd` in process on free ports and the real
//! `ledgerctl` binary run against it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ledger_engine::store::{format, RecordedEvent};

pub const TOKEN: &str = "cli-test-admin-token-0123456789";

/// A port free now, below Linux's ephemeral range (32768 and up), which the OS hands
/// to other tests' client connections: a port from that range (port 0) was once
/// taken by one between this check and the server's bind, and a server that fails
/// after opening its log leaves it locked for the next try in the same process.
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7_919);
    for _ in 0..1_000 {
        let port = 20_000 + (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 97) % 12_000) as u16;
        if let Ok(addr) = TcpListener::bind(("127.0.0.1", port)).and_then(|l| l.local_addr()) {
            return addr;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

pub fn ledgerctl(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    ledgerctl_with(addr, TOKEN, args)
}

pub fn ledgerctl_with(addr: SocketAddr, token: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ledgerctl"))
        .args(["--addr", &format!("http://{addr}"), "--token", token])
        .args(args)
        .output()
        .expect("run ledgerctl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), format!("{text}{}", String::from_utf8_lossy(&output.stderr)))
}

/// `ledgerd` in this process on free ports, with the admin token `TOKEN`.
pub struct InProcessServer {
    pub listen: SocketAddr,
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), String>>,
}

impl InProcessServer {
    pub fn start(dir: &std::path::Path) -> InProcessServer {
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, format!("admin {TOKEN}\n")).expect("tokens");
        InProcessServer::start_with(dir, Some(tokens))
    }

    /// As the README's set-up command runs it: no tokens file, so the server generates
    /// `<dir>/data/admin.token`.
    pub fn start_like_readme(dir: &std::path::Path) -> InProcessServer {
        InProcessServer::start_with(dir, None)
    }

    fn start_with(dir: &std::path::Path, tokens_file: Option<std::path::PathBuf>) -> InProcessServer {
        InProcessServer::start_configured(dir, tokens_file, |_| {})
    }

    /// `start`, with the settings changed by `change` before the server starts.
    pub fn start_with_settings(
        dir: &std::path::Path,
        change: impl FnOnce(&mut ledger_api::config::Config),
    ) -> InProcessServer {
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, format!("admin {TOKEN}\n")).expect("tokens");
        InProcessServer::start_configured(dir, Some(tokens), change)
    }

    fn start_configured(
        dir: &std::path::Path,
        tokens_file: Option<std::path::PathBuf>,
        change: impl FnOnce(&mut ledger_api::config::Config),
    ) -> InProcessServer {
        let (listen, metrics_listen) = (free_port(), free_port());
        let mut config = ledger_api::config::Config {
            data_dir: dir.join("data"),
            listen,
            metrics_listen,
            http_listen: Some(free_port()),
            tokens_file,
            tls: None,
            master_key: None,
            users: ledger_platform::users::UsersConfig::default(),
            rails: None,
            payments: Default::default(),
            fx: Default::default(),
            snapshot_interval_events: 4_000_000,
            store: None,
            signing_key_file: dir.join("signing.key"),
            heads_interval: Duration::from_secs(1),
            webhooks: Default::default(),
        };
        change(&mut config);
        // A port found free may be taken before the server binds it (by another test's
        // client connection): a server that ends before it answers is started again on
        // other ports, and its error is in the panic if it never comes up.
        let mut ended = Vec::new();
        for _attempt in 0..3 {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = runtime.spawn(ledger_api::server::run(config.clone(), async {
                let _ = stopped.await;
            }));
            // Wait until the server answers.
            for _ in 0..100 {
                if server.is_finished() {
                    break;
                }
                let token = match std::fs::read_to_string(dir.join("data/admin.token")) {
                    Ok(generated) => generated.trim().to_string(),
                    Err(_) => TOKEN.to_string(),
                };
                if ledgerctl_with(config.listen, &token, &["accounts", "get", "1"]).1.contains("not found") {
                    return InProcessServer { listen: config.listen, runtime, stop, server };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !server.is_finished() {
                ended.push("it did not answer within 5 s".to_string());
                break;
            }
            ended.push(format!("it ended with {:?}", runtime.block_on(server)));
            // What the failed try still runs (blocking tasks holding the store, and so
            // the log's LOCK) ends with its runtime before the next try opens the log.
            runtime.shutdown_timeout(Duration::from_secs(10));
            (config.listen, config.metrics_listen, config.http_listen) = (free_port(), free_port(), Some(free_port()));
        }
        panic!("the server did not come up: {}", ended.join("; then "));
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        self.runtime.block_on(self.server).expect("join").expect("server stopped cleanly");
    }
}

/// `ledgerctl` with `stdin` on its standard input and `token` as its bearer token.
pub fn ledgerctl_as(addr: SocketAddr, token: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerctl"))
        .args(["--addr", &format!("http://{addr}"), "--token", token])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ledgerctl");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    let (out, err) =
        (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned());
    (output.status.success(), out, err)
}

/// Every record of the log in `data_dir`, in order.
pub fn records(data_dir: &Path) -> Vec<RecordedEvent> {
    let mut records = Vec::new();
    format::scan(&data_dir.join("log"), |record, _| records.push(record)).expect("scan");
    records
}

/// Writes `records` as the whole log, one frame each, with fresh checksums.
pub fn rewrite(data_dir: &Path, records: &[RecordedEvent]) {
    let log = data_dir.join("log");
    std::fs::remove_dir_all(&log).expect("remove log");
    std::fs::create_dir_all(&log).expect("create log");
    let mut bytes = format::segment_header(0).to_vec();
    for record in records {
        let start = format::begin_frame(&mut bytes);
        format::put_record(
            &mut bytes,
            record.position,
            record.revision,
            &record.hash,
            &record.stream,
            &record.event_type,
            &record.payload,
        );
        format::finish_frame(&mut bytes, start, 1);
    }
    std::fs::write(log.join(format::segment_file_name(0)), bytes).expect("write segment");
}
