//! A writer for crash tests: opens a ledger on a data directory and commits batches of
//! transfers as fast as it can until it is killed. Before submitting a batch it prints
//! `SUBMIT first last`; after the batch is acknowledged (durable) it prints
//! `ACK first last`. The test kills it with SIGKILL and checks the log against these.
//!
//! Usage: crash-writer DATA_DIR ID_BASE
//!        crash-writer DATA_DIR lookup FIRST LAST
//!
//! The second form opens the ledger, looks up transfers FIRST..=LAST (reading them from
//! its state store), prints `FOUND id` for each one present and exits. With
//! `CRASH_WRITER_FAIL_STATE_WRITES_ONCE_EXISTS` set to a path, every write of the state
//! store fails once a file exists there (a disk whose fsync fails).

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
    let usage = "usage: crash-writer DATA_DIR ID_BASE | crash-writer DATA_DIR lookup FIRST LAST";
    let (dir, base) = match args.as_slice() {
        [_, dir, base] => (dir, base),
        [_, dir, lookup, first, last] if lookup == "lookup" => {
            let number = |text: &str| text.parse::<u128>().map_err(|_| format!("{text}: not a number"));
            let ledger = open(std::path::Path::new(dir))?;
            return look_up(&ledger, number(first)?..=number(last)?);
        }
        _ => return Err(usage.into()),
    };
    let base: u128 = base.parse().map_err(|_| "ID_BASE must be a number")?;
    let ledger = open(std::path::Path::new(dir))?;
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

fn open(dir: &std::path::Path) -> Result<Ledger, String> {
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
        state_fault_trigger: std::env::var_os("CRASH_WRITER_FAIL_STATE_WRITES_ONCE_EXISTS").map(Into::into),
        ..LedgerConfig::default()
    };
    Ledger::open(Arc::new(store), config).map_err(|e| e.to_string())
}

/// Prints `FOUND id` for each transfer of `ids` the ledger holds.
fn look_up(ledger: &Ledger, ids: std::ops::RangeInclusive<u128>) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let ids: Vec<u128> = ids.collect();
    for chunk in ids.chunks(1_000) {
        let found = ledger.lookup_transfers_blocking(chunk.iter().copied().map(TransferId).collect());
        for transfer in found.map_err(|e| e.to_string())?.into_iter().flatten() {
            writeln!(out, "FOUND {}", transfer.movement.id.0).map_err(|e| e.to_string())?;
        }
    }
    ledger.close();
    Ok(())
}
