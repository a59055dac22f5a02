//! A start of the payments: the index on disk brought up to the log, then only the
//! open payments read (to drive them) and the live quotes they took marked; and the
//! index's checkpoint, every second in `ledgerd`.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::store::checkpoint_error;
use super::{load_payment, stream_name, Entry, Payments, PaymentsError};
use crate::log_checkpoint::{self, Checkpoint};

/// Events read from the log per page while the index catches up.
const CATCH_UP_PAGE: usize = 4_096;
/// Payments folded per index transaction while the index is rebuilt.
const REBUILD_PAYMENTS_PER_COMMIT: usize = 10_000;

impl Payments {
    /// Re-applies the payment events after the index's checkpoint (each payment they
    /// belong to folded again and its rows written), or rebuilds the index from every
    /// payment stream when the checkpoint does not match the log; then records a
    /// durable checkpoint.
    pub(super) fn catch_up_index(&self) -> Result<(), PaymentsError> {
        let checkpoint = log_checkpoint::bring_up(
            self.store.as_ref(),
            "payments",
            self.disk.checkpoint()?,
            |from| self.apply_log_after(from).map(|payments| payments as u64),
            || {
                self.disk.clear()?;
                let streams = self.store.stream_names("payment-")?;
                for chunk in streams.chunks(REBUILD_PAYMENTS_PER_COMMIT) {
                    self.put_folded(chunk.iter().map(String::as_str))?;
                }
                Ok(streams.len() as u64)
            },
        )?;
        self.disk.set_checkpoint(checkpoint)
    }

    /// Folds the payments of the payment events from `from` on and writes their rows;
    /// answers how many payments.
    fn apply_log_after(&self, from: u64) -> Result<usize, PaymentsError> {
        let mut streams = BTreeSet::new();
        let mut next = from;
        loop {
            let records = self.store.read_all(next, CATCH_UP_PAGE)?;
            let Some(last) = records.last() else { break };
            next = last.position + 1;
            streams.extend(records.into_iter().filter(|r| r.stream.starts_with("payment-")).map(|r| r.stream));
        }
        let streams: Vec<String> = streams.into_iter().collect();
        for chunk in streams.chunks(REBUILD_PAYMENTS_PER_COMMIT) {
            self.put_folded(chunk.iter().map(String::as_str))?;
        }
        Ok(streams.len())
    }

    /// Folds each of `streams` and writes its rows in one transaction.
    fn put_folded<'a>(&self, streams: impl Iterator<Item = &'a str>) -> Result<(), PaymentsError> {
        let mut folded = Vec::new();
        for stream in streams {
            folded.push(load_payment(self.store.as_ref(), stream)?);
        }
        self.disk.write(false, |rows| folded.iter().try_for_each(|payment| rows.put(payment)))
    }

    /// Reads the open payments into memory (their drivers start with `start`), and marks
    /// the live quotes that payments took.
    pub(super) fn load_open(&self) -> Result<(), PaymentsError> {
        let mut finished = Vec::new();
        for (created_ns, id) in self.disk.open_payments()? {
            let payment = load_payment(self.store.as_ref(), &stream_name(id))?;
            // A row left by an append that failed (perhaps of a creation a retry then made
            // at another time), or by a finish whose clean-up a crash cut off.
            if payment.revision.is_none() || payment.finished.is_some() || payment.created_ns != created_ns {
                finished.push((created_ns, id));
                continue;
            }
            self.ops.track(&payment);
            self.payments.insert(id, Arc::new(Entry::new(payment)));
        }
        if !finished.is_empty() {
            self.disk.write(false, |rows| finished.iter().try_for_each(|open| rows.closed(*open)))?;
        }
        let mut taken = 0usize;
        for quote_id in self.fx.live_quote_ids() {
            if let Some(payment) = self.disk.quote(&quote_id)? {
                if self.store.stream_head(&stream_name(payment))?.is_some() {
                    self.fx.taken_by(&quote_id, payment);
                    taken += 1;
                }
            }
        }
        let held = self.disk.payments_held()?;
        tracing::info!(payments = held, open = self.payments.len(), quotes_taken = taken, "payments open");
        Ok(())
    }

    /// Records a durable checkpoint of the index at the log's durable head (every second
    /// in `ledgerd`, and at a clean stop): the head is read first, then the rows in
    /// memory (those of every append before it among them) are written, then the
    /// position. Call it from a thread outside the async runtime.
    pub fn checkpoint(&self) -> Result<Checkpoint, PaymentsError> {
        let checkpoint = log_checkpoint::at_head(self.store.as_ref()).map_err(checkpoint_error)?;
        self.rows.flush_blocking()?;
        self.disk.set_checkpoint(checkpoint)?;
        Ok(checkpoint)
    }
}
