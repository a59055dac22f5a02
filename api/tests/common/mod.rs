//! Shared by the integration tests: start the real `ledgerd` on free ports with a
//! tokens file of every role, and call it with a bearer token.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ledger_proto::api::v1 as wire;
use tonic::transport::Channel;
use tonic::Request;

pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const SERVICE: &str = "service-token-0123456789abcdef";
pub const AUDITOR: &str = "auditor-token-0123456789abcdef";
pub const READ_ONLY: &str = "read-only-token-0123456789abcdef";

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub metrics_addr: String,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
        let tokens = dir.join("tokens");
        let lines = format!("admin {ADMIN}\nservice {SERVICE}\n# comment\nauditor {AUDITOR}\nread-only {READ_ONLY}\n");
        std::fs::write(&tokens, lines).expect("write tokens");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerd"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--tokens-file"])
            .arg(&tokens)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("LEDGERD_ADMIN_TOKEN")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ledgerd");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let find = |line: &str, marker: &str| {
            line.split(marker).nth(1).map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        };
        let (mut addr, mut metrics_addr) = (None, None);
        while addr.is_none() || metrics_addr.is_none() {
            let line = receiver.recv_timeout(Duration::from_secs(30)).expect("ledgerd did not start");
            if let Some(found) = find(&line, "ledgerd listening on ") {
                addr = Some(found);
            }
            if let Some(found) = find(&line, "metrics on http://") {
                metrics_addr = Some(found.trim_end_matches("/metrics").to_string());
            }
        }
        // Keep draining the log so the server never blocks on a full pipe; a failing
        // test shows it.
        std::thread::spawn(move || {
            while let Ok(line) = receiver.recv() {
                eprintln!("ledgerd: {line}");
            }
        });
        Server { child, addr: format!("http://{}", addr.expect("addr")), metrics_addr: metrics_addr.expect("metrics") }
    }

    pub async fn client(&self) -> wire::ledger_client::LedgerClient<Channel> {
        let channel = Channel::from_shared(self.addr.clone()).expect("uri").connect().await.expect("connect");
        wire::ledger_client::LedgerClient::new(channel)
    }

    pub async fn users(&self) -> wire::users_client::UsersClient<Channel> {
        let channel = Channel::from_shared(self.addr.clone()).expect("uri").connect().await.expect("connect");
        wire::users_client::UsersClient::new(channel)
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    request
}
