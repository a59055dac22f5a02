//! A writer whose store panics on the writer's thread at its `PANIC_AT`th append, for
//! the test that a dying writer takes the process down. It opens a ledger over the
//! embedded store wrapped in [`PanicOnAppend`], commits one-transfer batches, prints
//! `ACK id` for each acknowledged one, and must never reach the end of `main`.
//!
//! Usage: panic-writer DATA_DIR PANIC_AT

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::*;
use ledger_engine::writer::{Ledger, LedgerConfig};

/// Delegates to the real store, but panics on the caller's thread at the
/// `panic_at`th append (counting from 1).
struct PanicOnAppend {
    inner: EmbeddedStore,
    appends: AtomicU64,
    panic_at: u64,
}

impl EventStore for PanicOnAppend {
    fn append_with(&self, stream: &str, expected: ExpectedRevision, events: EventBatch, done: AppendCallback) {
        let count = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(count != self.panic_at, "injected panic at append {count}");
        self.inner.append_with(stream, expected, events, done);
    }

    fn flush_with(&self, done: FlushCallback) {
        self.inner.flush_with(done);
    }

    fn read_stream(
        &self,
        stream: &str,
        from: Revision,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from, direction, max_count)
    }

    fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(from, max_count)
    }

    fn stream_head(&self, stream: &str) -> Result<Option<StreamHead>, StoreError> {
        self.inner.stream_head(stream)
    }

    fn stream_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.stream_names(prefix)
    }

    fn watch_head(&self) -> tokio::sync::watch::Receiver<Position> {
        self.inner.watch_head()
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, panic_at] = args.as_slice() else {
        return Err("usage: panic-writer DATA_DIR PANIC_AT".into());
    };
    let panic_at: u64 = panic_at.parse().map_err(|_| "PANIC_AT must be a number")?;
    let dir = std::path::PathBuf::from(dir);
    let (inner, _) = EmbeddedStore::open(
        dir.join("log"),
        EmbeddedOptions { segment_bytes_max: 1 << 20, ..EmbeddedOptions::default() },
    )
    .map_err(|e| e.to_string())?;
    let store = PanicOnAppend { inner, appends: AtomicU64::new(0), panic_at };
    let ledger = Ledger::open(Arc::new(store), LedgerConfig::default()).map_err(|e| e.to_string())?;
    let usd = Currency::parse("USD").map_err(|e| e.to_string())?;
    let open = |id| {
        AccountCommand::Open(NewAccount {
            id: AccountId(id),
            currency: usd,
            code: 1,
            flags: AccountFlags(0),
            owner_id: 0,
        })
    };
    let results = ledger.create_accounts_blocking(vec![open(1), open(2)]).map_err(|e| e.to_string())?;
    if let Some(error) = results.iter().find_map(|r| r.err()) {
        return Err(error.to_string());
    }
    for id in 1..=u128::from(panic_at) * 2 {
        let transfer = NewTransfer {
            id: TransferId(id),
            debit_account_id: AccountId(1),
            credit_account_id: AccountId(2),
            amount: 1,
            currency: Some(usd),
            code: 1,
            metadata: String::new(),
            linked: false,
            kind: TransferKind::Posted,
        };
        // Once the writer is gone, this call must never return an answer.
        let results = ledger.create_transfers_blocking(vec![transfer]).map_err(|e| e.to_string())?;
        if results.iter().all(|r| r.is_ok()) {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "ACK {id}");
            let _ = out.flush();
        }
    }
    Err("the writer panicked, yet the process went on".into())
}
