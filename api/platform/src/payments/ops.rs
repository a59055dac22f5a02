//! What operators and support see of payments: counters of finished payments by kind
//! and status, rail calls by rail, operation and outcome with a latency histogram,
//! the review queue (each payment in review and since when), and pages of a user's
//! payments. Every label is a closed set (the enums of `kinds`), never an id, so the
//! number of series is fixed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use super::kinds::{FinishStatus, Funding, PaymentKind, Step};
use super::list::{Listing, PaymentFilter, Presented};
use super::rails::{RailError, RailStatus};
use super::saga::{Payment, PaymentView};
use super::{Payments, PaymentsError};

/// The rails calls are counted for (a wallet payment calls none).
pub const RAILS: [Funding; 3] = [Funding::BankAccount, Funding::Card, Funding::DigitalWallet];
/// The operations on a rail: each rail step, and `status` (asking what became of one).
pub const RAIL_OPERATIONS: [&str; 7] =
    ["authorize", "capture", "void_auth", "collect", "payout", "rail_refund", "status"];
/// What a rail call came to.
pub const RAIL_OUTCOMES: [&str; 6] = ["succeeded", "pending", "failed", "not_found", "error", "timeout"];
/// Upper bounds of the rail latency histogram's buckets, in seconds (then `+Inf`).
pub const RAIL_LATENCY_BUCKETS_SECS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Most payments one page of a list holds.
pub const PAGE_PAYMENTS_MAX: usize = 200;

/// A payment in the review queue.
#[derive(Clone, Debug)]
pub struct ReviewEntry {
    pub payment: PaymentView,
    pub since_ns: u64,
    pub times_out_ns: u64,
}

/// One rail operation's latency histogram: cumulative bucket counts (the last is
/// `+Inf`, equal to `count`) and the sum of latencies.
#[derive(Clone, Debug, PartialEq)]
pub struct RailLatency {
    pub rail: &'static str,
    pub operation: &'static str,
    pub cumulative: Vec<u64>,
    pub sum_secs: f64,
    pub count: u64,
}

/// Lock-free counters of payments and rail calls, and the review queue's index.
pub struct PaymentOps {
    finished: Box<[AtomicU64]>,
    rail_calls: Box<[AtomicU64]>,
    /// Per (rail, operation): the buckets then `+Inf`, then the sum in microseconds.
    rail_latency: Box<[AtomicU64]>,
    /// Payment id → when it entered review and when it was created (ns).
    reviews: DashMap<u128, (u64, u64)>,
}

impl Default for PaymentOps {
    fn default() -> PaymentOps {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        let pairs = RAILS.len() * RAIL_OPERATIONS.len();
        PaymentOps {
            finished: zeros(PaymentKind::ALL.len() * FinishStatus::ALL.len()),
            rail_calls: zeros(pairs * RAIL_OUTCOMES.len()),
            rail_latency: zeros(pairs * Self::LATENCY_SLOTS),
            reviews: DashMap::new(),
        }
    }
}

fn index_of<T: PartialEq>(all: &[T], value: &T) -> Option<usize> {
    all.iter().position(|v| v == value)
}

/// The label of a rail step (`None` for a ledger step).
fn operation_label(step: Step) -> Option<&'static str> {
    step.is_rail().then(|| step.as_str())
}

impl PaymentOps {
    /// Buckets, `+Inf`, sum.
    const LATENCY_SLOTS: usize = RAIL_LATENCY_BUCKETS_SECS.len() + 2;

    pub(super) fn finished(&self, kind: Option<PaymentKind>, status: FinishStatus) {
        let Some(kind) = kind.and_then(|k| index_of(PaymentKind::ALL, &k)) else { return };
        let Some(status) = index_of(FinishStatus::ALL, &status) else { return };
        self.finished[kind * FinishStatus::ALL.len() + status].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one rail call of `operation` (`None`: a status query) on `rail`.
    pub(super) fn rail_call(
        &self,
        rail: &str,
        operation: Option<Step>,
        reply: &Result<Result<RailStatus, RailError>, tokio::time::error::Elapsed>,
        took: Duration,
    ) {
        let Some(rail) = Funding::parse(rail).and_then(|f| index_of(&RAILS, &f)) else { return };
        let label = operation.map_or(Some("status"), operation_label);
        let Some(operation) = label.and_then(|o| index_of(&RAIL_OPERATIONS, &o)) else { return };
        let outcome = match reply {
            Ok(Ok(RailStatus::Succeeded(_))) => "succeeded",
            Ok(Ok(RailStatus::Pending)) => "pending",
            Ok(Ok(RailStatus::Failed(_))) => "failed",
            Ok(Ok(RailStatus::NotFound)) => "not_found",
            Ok(Err(_)) => "error",
            Err(_) => "timeout",
        };
        let Some(outcome) = index_of(&RAIL_OUTCOMES, &outcome) else { return };
        let pair = rail * RAIL_OPERATIONS.len() + operation;
        self.rail_calls[pair * RAIL_OUTCOMES.len() + outcome].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = RAIL_LATENCY_BUCKETS_SECS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(RAIL_LATENCY_BUCKETS_SECS.len());
        let slots = &self.rail_latency[pair * Self::LATENCY_SLOTS..(pair + 1) * Self::LATENCY_SLOTS];
        slots[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        slots[Self::LATENCY_SLOTS - 1].fetch_add(micros, Ordering::Relaxed);
    }

    /// Keeps the review queue's index in step with a payment just folded.
    pub(super) fn track(&self, payment: &Payment) {
        if payment.public_status().0 == "requires_review" {
            let since = payment.history.iter().rev().find(|s| s.step == "risk").map_or(payment.last_ns, |s| s.at_ns);
            self.reviews.entry(payment.id).or_insert((since, payment.created_ns));
        } else {
            self.reviews.remove(&payment.id);
        }
    }

    /// Every non-zero (kind, status, count).
    pub fn finished_counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (k, kind) in PaymentKind::ALL.iter().enumerate() {
            for (s, status) in FinishStatus::ALL.iter().enumerate() {
                let count = self.finished[k * FinishStatus::ALL.len() + s].load(Ordering::Relaxed);
                if count > 0 {
                    out.push((kind.as_str(), status.as_str(), count));
                }
            }
        }
        out
    }

    /// Every non-zero (rail, operation, outcome, count).
    pub fn rail_call_counts(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (r, rail) in RAILS.iter().enumerate() {
            for (o, operation) in RAIL_OPERATIONS.iter().enumerate() {
                for (x, outcome) in RAIL_OUTCOMES.iter().enumerate() {
                    let index = ((r * RAIL_OPERATIONS.len()) + o) * RAIL_OUTCOMES.len() + x;
                    let count = self.rail_calls[index].load(Ordering::Relaxed);
                    if count > 0 {
                        out.push((rail.as_str(), *operation, *outcome, count));
                    }
                }
            }
        }
        out
    }

    /// The histogram of every (rail, operation) called at least once.
    pub fn rail_latencies(&self) -> Vec<RailLatency> {
        let mut out = Vec::new();
        for (r, rail) in RAILS.iter().enumerate() {
            for (o, operation) in RAIL_OPERATIONS.iter().enumerate() {
                let pair = r * RAIL_OPERATIONS.len() + o;
                let slots = &self.rail_latency[pair * Self::LATENCY_SLOTS..(pair + 1) * Self::LATENCY_SLOTS];
                let mut running = 0;
                let cumulative: Vec<u64> = slots[..Self::LATENCY_SLOTS - 1]
                    .iter()
                    .map(|slot| {
                        running += slot.load(Ordering::Relaxed);
                        running
                    })
                    .collect();
                if running == 0 {
                    continue;
                }
                let sum_micros = slots[Self::LATENCY_SLOTS - 1].load(Ordering::Relaxed);
                out.push(RailLatency {
                    rail: rail.as_str(),
                    operation,
                    cumulative,
                    sum_secs: sum_micros as f64 / 1e6,
                    count: running,
                });
            }
        }
        out
    }

    /// Payments in review, and when the oldest of them entered it.
    pub fn review_queue(&self) -> (usize, Option<u64>) {
        let oldest = self.reviews.iter().map(|e| e.value().0).min();
        (self.reviews.len(), oldest)
    }

    /// (created ns, id) of every payment in review.
    pub(super) fn reviews_created(&self) -> Vec<(u64, u128)> {
        self.reviews.iter().map(|e| (e.value().1, *e.key())).collect()
    }
}

/// A position in a list of payments, newest first: (created ns, id).
pub type PaymentCursor = (u64, u128);

impl Payments {
    /// The counters and the review queue's index, for the metrics endpoint.
    pub fn ops(&self) -> &PaymentOps {
        &self.ops
    }

    /// A page of `user`'s payments (as sender or receiver) for support, newest first,
    /// after `after` (notes stay sealed); and the cursor of the next page if there is one.
    pub async fn page_of_user(
        &self,
        user: u128,
        after: Option<PaymentCursor>,
        limit: usize,
    ) -> Result<(Vec<PaymentView>, Option<PaymentCursor>), PaymentsError> {
        let limit = limit.clamp(1, PAGE_PAYMENTS_MAX);
        self.page(Listing::OfUser(user), &PaymentFilter::default(), after, limit, Presented::Bare).await
    }

    /// The review queue, oldest first, at most `limit` of it, and its whole length.
    pub async fn review_entries(&self, limit: usize) -> Result<(Vec<ReviewEntry>, usize), PaymentsError> {
        let limit = limit.clamp(1, PAGE_PAYMENTS_MAX);
        let mut queued: Vec<(u64, u128)> = self.ops.reviews.iter().map(|e| (e.value().0, *e.key())).collect();
        let total = queued.len();
        queued.sort_unstable();
        let now = self.clock.now_ns();
        let mut out = Vec::new();
        for (since_ns, id) in queued.into_iter().take(limit) {
            let entry = match self.entry(id) {
                Ok(entry) => entry,
                // Left the queue (decided) and its stream was never written: not listed.
                Err(PaymentsError::NotFound(_)) => continue,
                Err(error) => return Err(error),
            };
            let payment = entry.payment.lock().await;
            let times_out_ns = payment.risk.as_ref().map_or(0, |r| r.review_deadline_ns);
            out.push(ReviewEntry { payment: payment.view(now), since_ns, times_out_ns });
        }
        Ok((out, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: RailStatus) -> Result<Result<RailStatus, RailError>, tokio::time::error::Elapsed> {
        Ok(Ok(status))
    }

    #[test]
    fn finished_payments_are_counted_by_kind_and_status() {
        let ops = PaymentOps::default();
        ops.finished(Some(PaymentKind::Send), FinishStatus::Completed);
        ops.finished(Some(PaymentKind::Send), FinishStatus::Completed);
        ops.finished(Some(PaymentKind::Withdrawal), FinishStatus::Failed);
        ops.finished(None, FinishStatus::Failed);
        assert_eq!(ops.finished_counts(), [("send", "completed", 2), ("withdrawal", "failed", 1)]);
    }

    #[test]
    fn rail_calls_are_counted_by_rail_operation_and_outcome_with_a_cumulative_histogram() {
        let ops = PaymentOps::default();
        let ms = Duration::from_millis;
        ops.rail_call("card", Some(Step::Authorize), &answered(RailStatus::Succeeded("r".into())), ms(3));
        ops.rail_call("card", Some(Step::Authorize), &answered(RailStatus::Failed("declined".into())), ms(30));
        ops.rail_call("bank_account", None, &answered(RailStatus::Pending), ms(20_000));
        ops.rail_call("bank_account", Some(Step::Payout), &Ok(Err(RailError("down".into()))), ms(1));
        // Not rails, or not rail steps: not counted.
        ops.rail_call("wallet", Some(Step::Authorize), &answered(RailStatus::Pending), ms(1));
        ops.rail_call("card", Some(Step::Hold), &answered(RailStatus::Pending), ms(1));
        assert_eq!(
            ops.rail_call_counts(),
            [
                ("bank_account", "payout", "error", 1),
                ("bank_account", "status", "pending", 1),
                ("card", "authorize", "succeeded", 1),
                ("card", "authorize", "failed", 1),
            ]
        );
        let latencies = ops.rail_latencies();
        let authorize = latencies.iter().find(|l| l.rail == "card" && l.operation == "authorize").expect("card");
        // Buckets 0.005 0.01 0.025 0.05 …: one call in the first, one more by 0.05.
        assert_eq!(authorize.cumulative[..4], [1, 1, 1, 2]);
        assert_eq!((authorize.count, *authorize.cumulative.last().expect("+Inf")), (2, 2));
        assert!((authorize.sum_secs - 0.033).abs() < 1e-9, "{}", authorize.sum_secs);
        let status = latencies.iter().find(|l| l.operation == "status").expect("status");
        assert_eq!(status.cumulative[RAIL_LATENCY_BUCKETS_SECS.len() - 1], 0, "20 s is above every bound");
        assert_eq!(status.cumulative[RAIL_LATENCY_BUCKETS_SECS.len()], 1, "+Inf holds it");
    }
}
