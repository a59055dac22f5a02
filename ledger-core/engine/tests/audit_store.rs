//! The auditor through the `EventStore` port (what `ledgerctl audit verify --store`
//! runs against EventStoreDB/KurrentDB) agrees with the file audit on a healthy log,
//! and finds a payload that no longer matches its chain hash.

use std::sync::Arc;

use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_engine::audit;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::*;
use ledger_engine::writer::{Ledger, LedgerConfig};

/// A store that hands out one payload byte flipped, as a tampered server would.
struct Tampered(Arc<dyn EventStore>, Position);

impl EventStore for Tampered {
    fn append_with(&self, stream: &str, expected: ExpectedRevision, events: EventBatch, done: AppendCallback) {
        self.0.append_with(stream, expected, events, done)
    }
    fn flush_with(&self, done: FlushCallback) {
        self.0.flush_with(done)
    }
    fn read_stream(&self, s: &str, from: Revision, d: Direction, n: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.read_stream(s, from, d, n)
    }
    fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self.0.read_all(from, max_count)?;
        for event in events.iter_mut().filter(|e| e.position == self.1) {
            event.payload[0] ^= 1;
        }
        Ok(events)
    }
    fn stream_head(&self, stream: &str) -> Result<Option<StreamHead>, StoreError> {
        self.0.stream_head(stream)
    }
    fn stream_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.0.stream_names(prefix)
    }
    fn watch_head(&self) -> tokio::sync::watch::Receiver<Position> {
        self.0.watch_head()
    }
}

#[test]
fn the_port_audit_matches_the_file_audit_and_finds_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let usd = Currency::parse("USD").expect("usd");
    {
        let (store, _) = EmbeddedStore::open(&log, EmbeddedOptions::default()).expect("open");
        let ledger = Ledger::open(Arc::new(store), LedgerConfig::default()).expect("ledger");
        let accounts = (1..=3)
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
        assert!(ledger.create_accounts_blocking(accounts).expect("accounts").iter().all(Result::is_ok));
        let transfers = (0..50u128)
            .map(|i| NewTransfer {
                id: TransferId(100 + i),
                debit_account_id: AccountId(1 + i % 3),
                credit_account_id: AccountId(1 + (i + 1) % 3),
                amount: 10 + i,
                currency: Some(usd),
                code: 1,
                metadata: String::new(),
                linked: false,
                kind: TransferKind::Posted,
            })
            .collect();
        assert!(ledger.create_transfers_blocking(transfers).expect("transfers").iter().all(Result::is_ok));
        ledger.close();
    }
    let by_files = audit::verify(&log, None).expect("file audit");
    let (store, _) = EmbeddedStore::open(&log, EmbeddedOptions::default()).expect("reopen");
    let store: Arc<dyn EventStore> = Arc::new(store);
    let by_port = audit::verify_store(store.as_ref()).expect("port audit");
    assert_eq!(by_port, by_files);
    assert_eq!(by_port.transfers, 50);
    match audit::verify_store(&Tampered(store, 20)) {
        Err(audit::AuditFailure::Store(StoreError::ChainBroken { revision, reason, .. })) => {
            assert_eq!((revision, reason.as_str()), (20, "hash does not chain"));
        }
        other => panic!("tampering must be found: {other:?}"),
    }
}
