//! Signed chain heads for auditors: `audit heads --out FILE` saves the server's signed
//! heads as they appear (appending those not yet saved), and `audit verify --heads FILE`
//! checks a log against them (`ledger_engine::heads`). The file has one JSON object
//! per line: `{"revision": N, "payload": "<hex of the stored ChainHeadsSigned>"}`.

use std::io::{BufRead, Write};
use std::path::Path;

use ledger_proto::api::v1 as wire;

use crate::client::Connection;

/// Signed heads asked for per call.
const PAGE: u32 = 1_000;
/// Longest line of a heads file, in bytes (an event is at most 1 MiB, hex doubles it).
const LINE_BYTES_MAX: usize = 3 << 20;

/// The saved heads in `path`, in order.
pub fn read_file(path: &Path) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("--heads {}: {e}", path.display()))?;
    let mut saved = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let at = || format!("--heads {} line {}", path.display(), number + 1);
        let line = line.map_err(|e| format!("{}: {e}", at()))?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > LINE_BYTES_MAX {
            return Err(format!("{}: longer than {LINE_BYTES_MAX} bytes", at()));
        }
        let value: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("{}: {e}", at()))?;
        let revision = value["revision"].as_u64().ok_or_else(|| format!("{}: no revision", at()))?;
        let payload = value["payload"].as_str().ok_or_else(|| format!("{}: no payload", at()))?;
        let payload = unhex(payload).ok_or_else(|| format!("{}: payload is not hex", at()))?;
        if saved.last().is_some_and(|(last, _): &(u64, Vec<u8>)| *last >= revision) {
            return Err(format!("{}: revisions must increase", at()));
        }
        saved.push((revision, payload));
    }
    Ok(saved)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() & 1 == 1 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Fetches the signed heads after those already in `out` and appends them.
pub async fn save(connection: &Connection, out: &Path) -> Result<bool, String> {
    let mut from = match out.exists() {
        true => read_file(out)?.last().map_or(0, |(revision, _)| revision + 1),
        false => 0,
    };
    let mut client = connection.connect().await?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|e| format!("--out {}: {e}", out.display()))?;
    let mut added = 0usize;
    let public_key = loop {
        let request = connection.request(wire::ListSignedHeadsRequest { from_revision: from, limit: PAGE })?;
        let page = client.list_signed_heads(request).await.map_err(crate::errors::status_text)?.into_inner();
        for entry in &page.entries {
            let line =
                serde_json::json!({"revision": entry.revision, "payload": ledger_engine::heads::hex(&entry.payload)});
            writeln!(file, "{line}").map_err(|e| format!("--out {}: {e}", out.display()))?;
            from = entry.revision + 1;
            added += 1;
        }
        if !page.has_more || page.entries.is_empty() {
            break page.public_key;
        }
    };
    file.sync_all().map_err(|e| format!("--out {}: {e}", out.display()))?;
    if connection.json {
        outln!("{}", serde_json::json!({"saved": added, "next_revision": from, "public_key": public_key}));
    } else {
        outln!("saved {added} signed heads to {} (next revision {from}); server key {public_key}", out.display());
    }
    Ok(true)
}
