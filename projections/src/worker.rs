//! The projection worker: follows the event log from the read models' checkpoint and
//! applies what it reads, one redb transaction per batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_core::store::{EventStore, Subscription};
use tokio::sync::watch;

use crate::read_models::{Decoded, ProjectionError, ReadModels};

/// Events applied per transaction at most.
pub const APPLY_BATCH_EVENTS: usize = 16_384;
/// After a batch smaller than this, wait `COALESCE` before reading the next one.
pub const COALESCE_BELOW_EVENTS: usize = 8_192;
pub const COALESCE: Duration = Duration::from_millis(200);
/// How often a live batch commits durably.
pub const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// The live read models of a running server.
pub struct Projector {
    models: ReadModels,
    applied: watch::Sender<u64>,
    alarmed: watch::Sender<bool>,
    /// Wakes the worker from its coalescing pause when a read waits for it.
    reader_waits: tokio::sync::Notify,
}

impl Projector {
    pub fn new(models: ReadModels) -> Result<Arc<Projector>, ProjectionError> {
        let (applied, _) = watch::channel(models.next_position()?);
        let (alarmed, _) = watch::channel(models.alarm()?.is_some());
        Ok(Arc::new(Projector { models, applied, alarmed, reader_waits: tokio::sync::Notify::new() }))
    }

    pub fn models(&self) -> &ReadModels {
        &self.models
    }

    /// Everything before this log position is applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Whether the chain verifier has raised its alarm.
    pub fn alarmed(&self) -> watch::Receiver<bool> {
        self.alarmed.subscribe()
    }

    /// Waits until everything before `position` is applied; false on timeout.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        if *applied.borrow() < position {
            self.reader_waits.notify_one();
        }
        let reached = tokio::time::timeout(timeout, applied.wait_for(|next| *next >= position)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Applies the log from the checkpoint, then every new event as it becomes durable,
    /// until the store closes or fails.
    ///
    /// Batches commit without a sync, and one commit per `DURABLE_EVERY` is durable: a
    /// crash rolls the read models and their checkpoint back together to the last
    /// durable commit and they re-apply from there, so exactly-once holds while the
    /// log's own sync stays the only one on the write path's critical resources.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn EventStore>) -> Result<(), ProjectionError> {
        let mut subscription = Subscription::new(store, self.applied());
        let mut last_durable = Instant::now();
        loop {
            let records = subscription
                .next_batch(APPLY_BATCH_EVENTS)
                .await
                .map_err(|e| ProjectionError::Invalid(e.to_string()))?;
            let small_batch = records.len() < COALESCE_BELOW_EVENTS;
            let durable = last_durable.elapsed() >= DURABLE_EVERY;
            if durable {
                last_durable = Instant::now();
            }
            let this = self.clone();
            let next = tokio::task::spawn_blocking(move || this.models.apply_decoded(&Decoded::new(records), durable))
                .await
                .map_err(|e| ProjectionError::Invalid(e.to_string()))??;
            if !*self.alarmed.borrow() && self.models.alarm()?.is_some() {
                self.alarmed.send_replace(true);
            }
            self.applied.send_replace(next);
            if small_batch {
                // Let a trickle of events gather (a transaction per handful of events
                // costs the write path CPU on a small machine), unless a read waits.
                tokio::select! {
                    _ = tokio::time::sleep(COALESCE) => {}
                    _ = self.reader_waits.notified() => {}
                }
            }
        }
    }
}

/// Applies everything in `store` after the checkpoint of `models` and returns the new
/// checkpoint. With `durable: false` batches commit without a sync and one durable
/// commit ends the run. `progress(applied, head)` runs after every batch.
pub fn catch_up(
    models: &ReadModels,
    store: &dyn EventStore,
    batch_events: usize,
    durable: bool,
    mut progress: impl FnMut(u64, u64),
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
            progress(next, head);
        }
        Ok::<(), ProjectionError>(())
    })?;
    if !durable {
        models.sync()?;
    }
    Ok(next)
}
