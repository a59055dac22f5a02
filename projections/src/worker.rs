//! The projection worker: follows the event log from the read models' checkpoint and
//! applies what it reads, one redb transaction per batch.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_engine::store::{EventStore, Subscription};
use tokio::sync::watch;

use crate::read_models::{Decoded, ProjectionError, ReadModels};

/// Events applied per transaction at most. A redb write transaction keeps every page it
/// changes in memory until it commits, and a batch's events touch pages at random places
/// in the read models' file, so this bounds that memory too: 65,536 held some 280 MB
/// more on a 10M-payment log with the projector behind, for a rebuild 11 % faster
/// (BENCHMARKS.md, "The first minute after a start" and "The projector's batch").
pub const APPLY_BATCH_EVENTS: usize = 8_192;
/// After a batch smaller than `APPLY_BATCH_EVENTS`, wait up to this long for more
/// events before reading the next one, unless a read waits or a whole batch is there.
pub const COALESCE: Duration = Duration::from_millis(1_000);
/// How often a live batch commits durably.
pub const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// How long a read waits for the background worker before applying the log itself.
pub const HELP_AFTER: Duration = Duration::from_millis(50);

/// The live read models of a running server.
pub struct Projector {
    models: ReadModels,
    applied: watch::Sender<u64>,
    /// Wakes the worker from its coalescing pause when a read waits for it.
    reader_waits: tokio::sync::Notify,
    /// Set to stop `follow`.
    stopping: watch::Sender<bool>,
    /// The log being followed (set by `spawn`), for reads that apply it themselves.
    store: std::sync::OnceLock<Arc<dyn EventStore>>,
    /// Held by the one read at a time that applies the log itself.
    helping: tokio::sync::Mutex<()>,
    /// Why the worker stopped following the log (a failed read of the log, a batch it
    /// could not apply), once it has: the read models then fall behind for good.
    stopped: std::sync::OnceLock<String>,
}

impl Projector {
    pub fn new(models: ReadModels) -> Result<Arc<Projector>, ProjectionError> {
        let (applied, _) = watch::channel(models.next_position()?);
        let (stopping, _) = watch::channel(false);
        Ok(Arc::new(Projector {
            models,
            applied,
            reader_waits: tokio::sync::Notify::new(),
            stopping,
            store: std::sync::OnceLock::new(),
            helping: tokio::sync::Mutex::new(()),
            stopped: std::sync::OnceLock::new(),
        }))
    }

    pub fn models(&self) -> &ReadModels {
        &self.models
    }

    /// Why the worker stopped following the log, if it did (see `spawn`).
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.get().map(String::as_str)
    }

    /// Everything before this log position is applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Whether the chain verifier has raised its alarm, or the read models met damaged
    /// data or an event they contradict (see `ReadModels::alarmed`).
    pub fn alarmed(&self) -> watch::Receiver<bool> {
        self.models.alarmed()
    }

    /// Waits until everything before `position` is applied; false on timeout.
    ///
    /// The background worker runs only on CPU the write path leaves idle (see `spawn`).
    /// If it has not got there within `HELP_AFTER`, the read applies the log up to the
    /// head itself on a blocking thread at normal priority (one read at a time; the
    /// others wait for it), so a read is never starved by a busy machine.
    pub async fn wait_for(self: &Arc<Self>, position: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut applied = self.applied.subscribe();
        if *applied.borrow() >= position {
            return true;
        }
        self.reader_waits.notify_one();
        let soon = tokio::time::timeout(HELP_AFTER.min(timeout), applied.wait_for(|next| *next >= position));
        if matches!(soon.await, Ok(Ok(_))) {
            return true;
        }
        if let (Some(store), Ok(_helping)) = (self.store.get().cloned(), self.helping.try_lock()) {
            let this = self.clone();
            let helped = tokio::task::spawn_blocking(move || this.apply_to_head(store.as_ref())).await;
            if let Err(error) = helped.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
                tracing::warn!(%error, "a read could not bring the read models up to date");
            }
        }
        let later = tokio::time::timeout_at(deadline, applied.wait_for(|next| *next >= position));
        let reached = matches!(later.await, Ok(Ok(_)));
        reached
    }

    /// Applies everything durable in `store` after the checkpoint, publishing each step
    /// (`catch_up`: unsynced commits, then one durable commit).
    fn apply_to_head(&self, store: &dyn EventStore) -> Result<(), ProjectionError> {
        let mut published = Ok(());
        let next = catch_up(&self.models, store, APPLY_BATCH_EVENTS, false, |next, _| {
            if published.is_ok() {
                published = self.applied_up_to(next);
            }
            ControlFlow::Continue(())
        })?;
        published?;
        self.applied_up_to(next)
    }

    /// Publishes a new checkpoint (never moving it back). The read models raise their
    /// alarm themselves, when a batch records one.
    fn applied_up_to(&self, next: u64) -> Result<(), ProjectionError> {
        self.applied.send_if_modified(|applied| {
            let moved = next > *applied;
            *applied = (*applied).max(next);
            moved
        });
        Ok(())
    }

    /// Makes `follow` return after the batch it is applying, if any.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Names the log that reads apply themselves when the worker is slow (`spawn` does
    /// this; only the first call counts).
    pub fn attach(&self, store: Arc<dyn EventStore>) {
        let _ = self.store.set(store);
    }

    /// Runs `follow` on a thread of its own (named `projector`), with a runtime of its
    /// own: applying a batch blocks that thread only, never the server's workers. The
    /// thread runs under `SCHED_IDLE`: only on CPU that nothing else wants, so it never
    /// delays the write path (measured with 64 one-transfer clients: +5 % throughput,
    /// p99 5.2 -> 3.5 ms against nice 10). A read that needs newer events wakes it and,
    /// if it gets no CPU, applies them itself (`wait_for`).
    pub fn spawn(self: &Arc<Self>, store: Arc<dyn EventStore>) -> std::io::Result<std::thread::JoinHandle<()>> {
        self.attach(store.clone());
        let this = self.clone();
        std::thread::Builder::new().name("projector".into()).spawn(move || {
            if let Err(error) = lower_current_thread_priority() {
                tracing::warn!(%error, "the projector runs at normal priority");
            }
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "the projector's runtime did not start");
                    return;
                }
            };
            if let Err(error) = runtime.block_on(this.clone().follow(store)) {
                tracing::error!(%error, "the read models stopped following the log");
                let _ = this.stopped.set(error.to_string());
            }
        })
    }

    /// Applies the log from the checkpoint, then every new event as it becomes durable,
    /// until the store closes or fails, or `stop` is called. Applying blocks the
    /// calling thread: run it where that is fine (see `spawn`).
    ///
    /// Batches commit without a sync, and one commit per `DURABLE_EVERY` is durable: a
    /// crash rolls the read models and their checkpoint back together to the last
    /// durable commit and they re-apply from there, so exactly-once holds while the
    /// log's own sync stays the only one on the write path's critical resources.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn EventStore>) -> Result<(), ProjectionError> {
        let mut head = store.watch_head();
        let mut subscription = Subscription::new(store, self.applied());
        let mut last_durable = Instant::now();
        let mut stopping = self.stopping.subscribe();
        loop {
            let records = tokio::select! {
                records = subscription.next_batch(APPLY_BATCH_EVENTS) => {
                    records.map_err(|e| ProjectionError::Invalid(e.to_string()))?
                }
                _ = stopping.wait_for(|stop| *stop) => return Ok(()),
            };
            let small_batch = records.len() < APPLY_BATCH_EVENTS;
            let durable = last_durable.elapsed() >= DURABLE_EVERY;
            if durable {
                last_durable = Instant::now();
            }
            // A batch that fails on damaged rows or an event the read models contradict
            // ends following here (`spawn` logs the error, the read models raise their
            // alarm): going on past it would serve read models that differ from the log.
            let next = self.models.apply_decoded(&Decoded::new(records), durable)?;
            self.applied_up_to(next)?;
            if small_batch {
                // Let events gather: most of a transaction's cost is per account touched
                // (its last block, balances and bucket rewritten), so one transaction per
                // second of traffic costs the write path a fraction of one per handful of
                // events. A read that needs newer events wakes the worker at once, and a
                // whole batch waiting ends the pause too.
                let full_batch_at = next.saturating_add(APPLY_BATCH_EVENTS as u64);
                tokio::select! {
                    _ = tokio::time::sleep(COALESCE) => {}
                    _ = head.wait_for(|head| *head >= full_batch_at) => {}
                    _ = self.reader_waits.notified() => {}
                    _ = stopping.wait_for(|stop| *stop) => return Ok(()),
                }
            }
        }
    }
}

pub use ledger_engine::threads::lower_current_thread_priority;

/// Applies everything in `store` after the checkpoint of `models` and returns the new
/// checkpoint. With `durable: false` batches commit without a sync and one durable
/// commit ends the run. `progress(applied, head)` runs after every batch; when it
/// breaks, the run ends there (what was applied is kept, durable as above).
pub fn catch_up(
    models: &ReadModels,
    store: &dyn EventStore,
    batch_events: usize,
    durable: bool,
    mut progress: impl FnMut(u64, u64) -> ControlFlow<()>,
) -> Result<u64, ProjectionError> {
    let head = *store.watch_head().borrow();
    let mut next = models.next_position()?;
    // One thread reads and decodes the log ahead while this one applies: that is a
    // quarter of the work and needs none of the read models.
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel(2);
        let start = next;
        scope.spawn(move || {
            let mut at = start;
            while at < head {
                let records = store.read_all(at, batch_events.max(1)).map(Decoded::new);
                let stop = !matches!(&records, Ok(records) if !records.is_empty());
                if let Ok(Some(last)) = records.as_ref().map(Decoded::last_position) {
                    at = last + 1;
                }
                if sender.send(records).is_err() || stop {
                    return;
                }
            }
        });
        for records in receiver {
            let records = records.map_err(|e| ProjectionError::Invalid(e.to_string()))?;
            if records.is_empty() {
                break;
            }
            next = models.apply_decoded(&records, durable)?;
            if progress(next, head).is_break() {
                break;
            }
        }
        Ok::<(), ProjectionError>(())
    })?;
    if !durable {
        models.sync()?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use ledger_core::domain::*;
    use ledger_core::money::Currency;
    use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
    use ledger_engine::store::EventStore;
    use ledger_engine::writer::{Ledger, LedgerConfig};

    use super::Projector;
    use crate::read_models::ReadModels;

    #[tokio::test]
    async fn a_read_applies_the_log_itself_when_the_worker_gets_no_cpu() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = EmbeddedStore::open(dir.path().join("log"), EmbeddedOptions::default()).expect("store");
        let store: Arc<dyn EventStore> = Arc::new(store);
        let ledger = Ledger::open(store.clone(), LedgerConfig::default()).expect("ledger");
        let usd = Currency::parse("USD").expect("USD");
        let open = |id| {
            AccountCommand::Open(NewAccount {
                id: AccountId(id),
                currency: usd,
                code: 1,
                flags: AccountFlags(0),
                owner_id: 0,
            })
        };
        ledger.create_accounts_blocking(vec![open(1), open(2)]).expect("accounts");
        let transfer = NewTransfer {
            id: TransferId(7),
            debit_account_id: AccountId(1),
            credit_account_id: AccountId(2),
            amount: 250,
            currency: Some(usd),
            code: 1,
            metadata: String::new(),
            linked: false,
            kind: TransferKind::Posted,
        };
        assert!(ledger.create_transfers_blocking(vec![transfer]).expect("transfer")[0].is_ok());
        let projector = Projector::new(ReadModels::open(&dir.path().join("models.redb")).expect("models")).expect("p");
        // No worker thread: nothing else will ever apply the log.
        projector.attach(store.clone());
        let head = *store.watch_head().borrow();
        assert_eq!((projector.applied(), head), (0, 3));
        assert!(projector.wait_for(head, Duration::from_secs(5)).await, "the read applied the log itself");
        assert_eq!(projector.applied(), head);
        let credited = projector.models().account(2).expect("read").expect("projected").balances.credits_posted;
        assert_eq!(credited, 250);
        // Without a log to apply, a read that cannot be served times out: false.
        let lonely = Projector::new(ReadModels::open(&dir.path().join("other.redb")).expect("models")).expect("p");
        assert!(!lonely.wait_for(1, Duration::from_millis(120)).await);

        // A catch-up told to stop keeps (durably) what it applied, and goes on from there.
        let bounded = ReadModels::open(&dir.path().join("bounded.redb")).expect("models");
        let mut calls = 0;
        let stopped = super::catch_up(&bounded, store.as_ref(), 1, false, |_, _| {
            calls += 1;
            std::ops::ControlFlow::Break(())
        })
        .expect("catch up");
        assert_eq!((stopped, calls, bounded.next_position().expect("checkpoint")), (1, 1, 1));
        drop(bounded);
        let reopened = ReadModels::open(&dir.path().join("bounded.redb")).expect("models");
        assert_eq!(reopened.next_position().expect("checkpoint"), 1, "the stop was durable");
        let resumed = super::catch_up(&reopened, store.as_ref(), 1, false, |_, _| std::ops::ControlFlow::Continue(()));
        assert_eq!(resumed.expect("catch up"), head);
        ledger.close();
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_projector_thread_runs_under_sched_idle() {
        let policy = std::thread::spawn(|| {
            super::lower_current_thread_priority().expect("lower priority");
            // Field 41 of /proc/thread-self/stat is the scheduling policy (5 is
            // SCHED_IDLE); the command name (field 2) is in parentheses and may hold
            // spaces, so count after it.
            let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
            let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
            after_name.split_whitespace().nth(38).and_then(|n| n.parse::<i32>().ok())
        })
        .join()
        .expect("thread");
        assert_eq!(policy, Some(5));
    }
}
