//! The projection worker: follows the event log from the read models' checkpoint and
//! applies what it reads, one redb transaction per batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_core::store::{EventStore, Subscription};
use tokio::sync::watch;

use crate::read_models::{Decoded, ProjectionError, ReadModels};

/// Events applied per transaction at most.
pub const APPLY_BATCH_EVENTS: usize = 65_536;
/// After a batch smaller than `APPLY_BATCH_EVENTS`, wait up to this long for more
/// events before reading the next one, unless a read waits or a whole batch is there.
pub const COALESCE: Duration = Duration::from_millis(1_000);
/// How often a live batch commits durably.
pub const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// The live read models of a running server.
pub struct Projector {
    models: ReadModels,
    applied: watch::Sender<u64>,
    alarmed: watch::Sender<bool>,
    /// Wakes the worker from its coalescing pause when a read waits for it.
    reader_waits: tokio::sync::Notify,
    /// Set to stop `follow`.
    stopping: watch::Sender<bool>,
}

impl Projector {
    pub fn new(models: ReadModels) -> Result<Arc<Projector>, ProjectionError> {
        let (applied, _) = watch::channel(models.next_position()?);
        let (alarmed, _) = watch::channel(models.alarm()?.is_some());
        let (stopping, _) = watch::channel(false);
        Ok(Arc::new(Projector { models, applied, alarmed, reader_waits: tokio::sync::Notify::new(), stopping }))
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

    /// Makes `follow` return after the batch it is applying, if any.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Runs `follow` on a thread of its own (named `projector`), with a runtime of its
    /// own: applying a batch blocks that thread only, never the server's workers. The
    /// thread runs at nice `PROJECTOR_NICE`: under saturation the write path goes first
    /// and the read models catch up in the gaps (a read that needs them wakes them).
    pub fn spawn(self: &Arc<Self>, store: Arc<dyn EventStore>) -> std::io::Result<std::thread::JoinHandle<()>> {
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
            if let Err(error) = runtime.block_on(this.follow(store)) {
                tracing::error!(%error, "the read models stopped following the log");
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
            let next = self.models.apply_decoded(&Decoded::new(records), durable)?;
            if !*self.alarmed.borrow() && self.models.alarm()?.is_some() {
                self.alarmed.send_replace(true);
            }
            self.applied.send_replace(next);
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

/// The projector thread's nice value (Linux; 0 is normal, 19 the lowest priority).
pub const PROJECTOR_NICE: i32 = 10;

/// Lowers the calling thread to nice `PROJECTOR_NICE` (a thread's own nice value on
/// Linux). `thread-priority` maps its 0..=99 scale onto nice 19..=-20; 22 is nice 10.
pub fn lower_current_thread_priority() -> Result<(), String> {
    let value = thread_priority::ThreadPriorityValue::try_from(22u8).map_err(|e| e.to_string())?;
    thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Crossplatform(value))
        .map_err(|e| format!("{e:?}"))
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

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn the_projector_thread_runs_at_its_nice_value() {
        let nice = std::thread::spawn(|| {
            super::lower_current_thread_priority().expect("lower priority");
            // Field 19 of /proc/thread-self/stat is the nice value; the command name
            // (field 2) is in parentheses and may hold spaces, so count after it.
            let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
            let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
            after_name.split_whitespace().nth(16).and_then(|n| n.parse::<i32>().ok())
        })
        .join()
        .expect("thread");
        assert_eq!(nice, Some(super::PROJECTOR_NICE));
    }
}
