//! A writer for crash tests: opens a ledger on a data directory and commits batches of
//! transfers as fast as it can until it is killed. Before submitting a batch it prints
//! `SUBMIT first last`; after the batch is acknowledged (durable) it prints
//! `ACK first last`. The test kills it with SIGKILL and checks the log against these.
//!
//! Usage: crash-writer DATA_DIR ID_BASE

use std::io::Write;
use std::sync::mpsc;
use std::sync::Arc;

use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::writer::{Ledger, LedgerConfig};

const ACCOUNTS: u128 = 100;
const BATCH_TRANSFERS: u128 = 500;
const IN_FLIGHT_BATCHES: usize = 4;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, base] = args.as_slice() else {
        return Err("usage: crash-writer DATA_DIR ID_BASE".into());
    };
    let base: u128 = base.parse().map_err(|_| "ID_BASE must be a number")?;
    let dir = std::path::PathBuf::from(dir);
    let (store, _) = EmbeddedStore::open(
        dir.join("log"),
        EmbeddedOptions { segment_bytes_max: 1 << 20, ..EmbeddedOptions::default() },
    )
    .map_err(|e| e.to_string())?;
    let config = LedgerConfig {
        snapshot_dir: Some(dir.join("snapshots")),
        snapshot_interval_events: 3_000,
        // The transfer store takes hand-offs of a few hundred transfers, so kills land
        // while hand-offs are written, synced and confirmed.
        state_dir: Some(dir.join("state")),
        hand_off_items: 500,
        ..LedgerConfig::default()
    };
    let ledger = Ledger::open(Arc::new(store), config).map_err(|e| e.to_string())?;
    let usd = Currency::parse("USD").map_err(|e| e.to_string())?;
    let accounts = (1..=ACCOUNTS)
        .map(|id| {
            AccountCommand::Open(NewAccount {
                id: AccountId(id),
                currency: usd,
                code: 1,
                flags: AccountFlags(0),
                owner_id: 0,
            })
        })
        .collect();
    let results = ledger.create_accounts_blocking(accounts).map_err(|e| e.to_string())?;
    if let Some(error) = results.iter().find_map(|r| r.err()) {
        return Err(error.to_string());
    }
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let say = |line: String| {
        if let Ok(mut out) = stdout.lock() {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    };
    say("READY".into());
    let (done_sender, done_receiver) = mpsc::channel::<Result<(), String>>();
    let mut next = base;
    let mut in_flight = 0;
    loop {
        while in_flight < IN_FLIGHT_BATCHES {
            let (first, last) = (next, next + BATCH_TRANSFERS - 1);
            next += BATCH_TRANSFERS;
            let batch = (first..=last)
                .map(|id| NewTransfer {
                    id: TransferId(id),
                    debit_account_id: AccountId(1 + id % ACCOUNTS),
                    credit_account_id: AccountId(1 + (id * 7 + 3) % ACCOUNTS).max(AccountId(1)),
                    amount: 1 + id % 97,
                    currency: Some(usd),
                    code: 1,
                    metadata: String::new(),
                    linked: id != last && id % 5 != 4,
                    kind: if id % 3 == 0 { TransferKind::Pending { timeout_ns: 0 } } else { TransferKind::Posted },
                })
                .map(|mut t| {
                    if t.debit_account_id == t.credit_account_id {
                        t.credit_account_id = AccountId(1 + (t.credit_account_id.0 % ACCOUNTS));
                    }
                    t
                })
                .collect();
            say(format!("SUBMIT {first} {last}"));
            let sender = done_sender.clone();
            let out = stdout.clone();
            ledger.submit_transfers(batch, move |result| {
                let outcome = match result {
                    Ok(results) if results.iter().all(|r| r.is_ok()) => {
                        if let Ok(mut out) = out.lock() {
                            let _ = writeln!(out, "ACK {first} {last}");
                            let _ = out.flush();
                        }
                        Ok(())
                    }
                    Ok(results) => Err(format!("rejected: {:?}", results.iter().find(|r| r.is_err()))),
                    Err(error) => Err(error.to_string()),
                };
                let _ = sender.send(outcome);
            });
            in_flight += 1;
        }
        done_receiver.recv().map_err(|e| e.to_string())??;
        in_flight -= 1;
    }
}
