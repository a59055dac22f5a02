//! The delivery database, `<data-dir>/webhooks.redb`: the queue of deliveries, their
//! order per endpoint and payment, the follower's checkpoint and each endpoint's
//! delivery log, in one redb database.
//!
//! Tables:
//! - `meta`: `checkpoint` (the next log position the follower reads), `next_id`.
//! - `deliveries`: id → the delivery (JSON), pending or finished.
//! - `lanes`: (endpoint/payment, id) for the pending deliveries of one payment to one
//!   endpoint; only the oldest (the lane's head) is ever due, so a later event of a
//!   payment is not sent before the earlier one is delivered or finally failed.
//! - `due`: (next attempt ms, id) for lane heads: what the dispatcher takes.
//! - `by_endpoint`: (endpoint, id) for the delivery log, pruned to
//!   `DELIVERY_LOG_MAX` rows per endpoint (oldest finished rows first).
//! - `counts`: per endpoint, rows in its log and pending deliveries.
//!
//! The follower's enqueued rows and its checkpoint commit in one transaction, so a
//! crash neither loses nor repeats an enqueue. Every commit is durable (redb's default).

use std::path::Path;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{WebhookConfig, WebhookError};

/// Finished deliveries kept per endpoint in its log (older ones are pruned).
pub const DELIVERY_LOG_MAX: u64 = 1_000;
/// Pending deliveries per endpoint; past it a new one is recorded failed ("backlog
/// full") and can be resent.
pub const PENDING_PER_ENDPOINT_MAX: u64 = 100_000;
/// Longest delay between two attempts.
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(3_600);
/// How long a delivery is retried before it is marked failed (as Stripe: 3 days).
pub const RETRY_WINDOW: Duration = Duration::from_secs(72 * 3_600);
/// Log rows looked at per enqueue when pruning an endpoint's log.
const PRUNE_SCAN_ROWS: usize = 64;
/// Most deliveries in one page of a delivery log.
pub const LIST_LIMIT_MAX: usize = 100;
/// Longest last error kept with a delivery, in bytes.
const ERROR_BYTES_MAX: usize = 200;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("deliveries");
const LANES: TableDefinition<(&str, u64), ()> = TableDefinition::new("lanes");
const DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("due");
const BY_ENDPOINT: TableDefinition<(&str, u64), ()> = TableDefinition::new("by_endpoint");
/// endpoint → (rows in its log, pending deliveries).
const COUNTS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("counts");

const CHECKPOINT: &str = "checkpoint";
const NEXT_ID: &str = "next_id";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    ledger_engine::clock::now_ns() / 1_000_000
}

/// The delay before attempt `attempts + 1`, after `attempts` (≥ 1) failed ones:
/// `base`, doubling each time, at most `RETRY_DELAY_MAX`.
pub fn retry_delay(base: Duration, attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(RETRY_DELAY_MAX).min(RETRY_DELAY_MAX)
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

/// One event to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub endpoint_id: String,
    pub payment_id: String,
    /// `evt_…`, the same for every delivery (and resend) of one event.
    pub event_id: String,
    pub event_type: String,
    /// The JSON body sent.
    pub body: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub created_ms: u64,
    pub next_attempt_ms: u64,
    pub last_attempt_ms: Option<u64>,
    /// The HTTP status of the last answer, if there was one.
    pub last_status: Option<u16>,
    pub last_error: String,
}

impl Delivery {
    /// A delivery of `new` not yet attempted, due at `now_ms`.
    fn pending(id: u64, new: NewDelivery, now_ms: u64) -> Delivery {
        Delivery {
            id,
            endpoint_id: new.endpoint_id,
            payment_id: new.payment_id,
            event_id: new.event_id,
            event_type: new.event_type,
            body: new.body,
            state: DeliveryState::Pending,
            attempts: 0,
            created_ms: now_ms,
            next_attempt_ms: now_ms,
            last_attempt_ms: None,
            last_status: None,
            last_error: String::new(),
        }
    }

    fn lane(&self) -> String {
        format!("{}/{}", self.endpoint_id, self.payment_id)
    }
}

/// A delivery to enqueue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    pub endpoint_id: String,
    pub payment_id: String,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
}

/// How an attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx answer.
    Delivered(u16),
    /// Another status, no answer in time, or no connection.
    Failed { status: Option<u16>, error: String },
    /// The endpoint was removed: the delivery finishes failed, not retried.
    EndpointGone,
}

pub struct WebhookDb {
    db: Database,
    config: WebhookConfig,
}

fn db_error(error: impl std::fmt::Display) -> WebhookError {
    WebhookError::Database(error.to_string())
}

fn decode(id: u64, bytes: &[u8]) -> Result<Delivery, WebhookError> {
    serde_json::from_slice(bytes).map_err(|e| WebhookError::Corrupt(format!("delivery {id}: {e}")))
}

fn encode(delivery: &Delivery) -> Result<Vec<u8>, WebhookError> {
    serde_json::to_vec(delivery).map_err(db_error)
}

impl WebhookDb {
    /// Opens (or creates) the database. One redb reports corrupt (or not a database:
    /// invalid data) is moved aside as
    /// `<name>.damaged-<unix seconds>` and a new one started (with a WARN): it can be
    /// lost (the endpoints are in the log; the follower starts again at the oldest
    /// endpoint, so deliveries are sent again, not lost).
    pub fn open(path: &Path, config: WebhookConfig) -> Result<WebhookDb, WebhookError> {
        let failed = |e: &dyn std::fmt::Display| WebhookError::Database(format!("{}: {e}", path.display()));
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::Storage(damaged)) if is_damage(&damaged) => {
                let reason = damaged.to_string();
                let aside = path.with_extension(format!("redb.damaged-{}", now_ms() / 1_000));
                tracing::warn!(
                    path = %path.display(),
                    aside = %aside.display(),
                    %reason,
                    "the webhook delivery database is corrupt: moved aside, starting a new one (deliveries since the oldest endpoint are sent again)"
                );
                std::fs::rename(path, &aside).map_err(|e| failed(&e))?;
                Database::create(path).map_err(|e| failed(&e))?
            }
            Err(e) => return Err(failed(&e)),
        };
        let txn = db.begin_write().map_err(db_error)?;
        {
            txn.open_table(META).map_err(db_error)?;
            txn.open_table(DELIVERIES).map_err(db_error)?;
            txn.open_table(LANES).map_err(db_error)?;
            txn.open_table(DUE).map_err(db_error)?;
            txn.open_table(BY_ENDPOINT).map_err(db_error)?;
            txn.open_table(COUNTS).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)?;
        Ok(WebhookDb { db, config })
    }

    /// The next log position to follow from; `None` for a new database.
    pub fn checkpoint(&self) -> Result<Option<u64>, WebhookError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let meta = txn.open_table(META).map_err(db_error)?;
        Ok(meta.get(CHECKPOINT).map_err(db_error)?.map(|v| v.value()))
    }

    /// Enqueues `deliveries` and moves the checkpoint to `checkpoint`, in one
    /// transaction. Answers how many were enqueued pending.
    pub fn enqueue(&self, deliveries: Vec<NewDelivery>, checkpoint: u64, now_ms: u64) -> Result<usize, WebhookError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let mut pending = 0;
        {
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let mut rows = txn.open_table(DELIVERIES).map_err(db_error)?;
            let mut lanes = txn.open_table(LANES).map_err(db_error)?;
            let mut due = txn.open_table(DUE).map_err(db_error)?;
            let mut log = txn.open_table(BY_ENDPOINT).map_err(db_error)?;
            let mut counts = txn.open_table(COUNTS).map_err(db_error)?;
            let mut next_id = meta.get(NEXT_ID).map_err(db_error)?.map_or(1, |v| v.value());
            for new in deliveries {
                let delivery = Delivery::pending(next_id, new, now_ms);
                next_id += 1;
                if insert(&mut rows, &mut lanes, &mut due, &mut log, &mut counts, delivery)? {
                    pending += 1;
                }
            }
            meta.insert(NEXT_ID, next_id).map_err(db_error)?;
            let current = meta.get(CHECKPOINT).map_err(db_error)?.map(|v| v.value());
            if current.is_some_and(|c| c > checkpoint) {
                return Err(WebhookError::Corrupt(format!(
                    "checkpoint would move back from {current:?} to {checkpoint}"
                )));
            }
            meta.insert(CHECKPOINT, checkpoint).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)?;
        Ok(pending)
    }

    /// Up to `limit` pending deliveries due at `now_ms` (lane heads only), oldest due first.
    pub fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<Delivery>, WebhookError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let due = txn.open_table(DUE).map_err(db_error)?;
        let rows = txn.open_table(DELIVERIES).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in due.range((0, 0)..=(now_ms, u64::MAX)).map_err(db_error)?.take(limit) {
            let (key, _) = entry.map_err(db_error)?;
            let (_, id) = key.value();
            let row = rows
                .get(id)
                .map_err(db_error)?
                .ok_or_else(|| WebhookError::Corrupt(format!("due delivery {id} has no row")))?;
            out.push(decode(id, row.value())?);
        }
        Ok(out)
    }

    /// When the next delivery is due (ms), if any is pending.
    pub fn next_due_ms(&self) -> Result<Option<u64>, WebhookError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let due = txn.open_table(DUE).map_err(db_error)?;
        let first = due.first().map_err(db_error)?;
        Ok(first.map(|(key, _)| key.value().0))
    }

    /// Records an attempt of delivery `id`: delivered, retried later, or finally failed
    /// (after `RETRY_WINDOW`, or its endpoint gone). A finished delivery lets the next
    /// one of its lane become due. Answers the delivery as it now is.
    pub fn record(&self, id: u64, attempt: Attempt, now_ms: u64) -> Result<Delivery, WebhookError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let delivery = {
            let mut rows = txn.open_table(DELIVERIES).map_err(db_error)?;
            let mut lanes = txn.open_table(LANES).map_err(db_error)?;
            let mut due = txn.open_table(DUE).map_err(db_error)?;
            let mut counts = txn.open_table(COUNTS).map_err(db_error)?;
            let mut delivery = match rows.get(id).map_err(db_error)? {
                Some(row) => decode(id, row.value())?,
                None => return Err(WebhookError::DeliveryNotFound),
            };
            if delivery.state != DeliveryState::Pending {
                return Ok(delivery);
            }
            due.remove((delivery.next_attempt_ms, id)).map_err(db_error)?;
            delivery.attempts = delivery.attempts.saturating_add(1);
            delivery.last_attempt_ms = Some(now_ms);
            match attempt {
                Attempt::Delivered(status) => {
                    delivery.state = DeliveryState::Delivered;
                    delivery.last_status = Some(status);
                    delivery.last_error.clear();
                }
                Attempt::EndpointGone => {
                    delivery.attempts = delivery.attempts.saturating_sub(1);
                    delivery.state = DeliveryState::Failed;
                    delivery.last_error = "endpoint removed".into();
                }
                Attempt::Failed { status, error } => {
                    delivery.last_status = status;
                    delivery.last_error = truncate(&error);
                    let next = now_ms.saturating_add(ms(retry_delay(self.config.retry_base, delivery.attempts)));
                    if next > delivery.created_ms.saturating_add(ms(RETRY_WINDOW)) {
                        delivery.state = DeliveryState::Failed;
                    } else {
                        delivery.next_attempt_ms = next;
                        due.insert((next, id), ()).map_err(db_error)?;
                    }
                }
            }
            if delivery.state != DeliveryState::Pending {
                finish_in_lane(&mut rows, &mut lanes, &mut due, &mut counts, &delivery, now_ms)?;
            }
            rows.insert(id, encode(&delivery)?.as_slice()).map_err(db_error)?;
            delivery
        };
        txn.commit().map_err(db_error)?;
        Ok(delivery)
    }

    /// The endpoint's deliveries, newest first, with ids below `starting_after`; and
    /// whether there are more.
    pub fn list(
        &self,
        endpoint_id: &str,
        limit: usize,
        starting_after: Option<u64>,
    ) -> Result<(Vec<Delivery>, bool), WebhookError> {
        let limit = limit.clamp(1, LIST_LIMIT_MAX);
        let txn = self.db.begin_read().map_err(db_error)?;
        let log = txn.open_table(BY_ENDPOINT).map_err(db_error)?;
        let rows = txn.open_table(DELIVERIES).map_err(db_error)?;
        let end = starting_after.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut more = false;
        for entry in log.range((endpoint_id, 0)..(endpoint_id, end)).map_err(db_error)?.rev() {
            let (key, _) = entry.map_err(db_error)?;
            let (_, id) = key.value();
            if out.len() == limit {
                more = true;
                break;
            }
            let row = rows
                .get(id)
                .map_err(db_error)?
                .ok_or_else(|| WebhookError::Corrupt(format!("logged delivery {id} has no row")))?;
            out.push(decode(id, row.value())?);
        }
        Ok((out, more))
    }

    /// Enqueues delivery `id` of `endpoint_id` again, as a new delivery of the same event
    /// at the end of its lane.
    pub fn resend(&self, endpoint_id: &str, id: u64, now_ms: u64) -> Result<Delivery, WebhookError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let delivery = {
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let mut rows = txn.open_table(DELIVERIES).map_err(db_error)?;
            let mut lanes = txn.open_table(LANES).map_err(db_error)?;
            let mut due = txn.open_table(DUE).map_err(db_error)?;
            let mut log = txn.open_table(BY_ENDPOINT).map_err(db_error)?;
            let mut counts = txn.open_table(COUNTS).map_err(db_error)?;
            let original = match rows.get(id).map_err(db_error)? {
                Some(row) => decode(id, row.value())?,
                None => return Err(WebhookError::DeliveryNotFound),
            };
            if original.endpoint_id != endpoint_id {
                return Err(WebhookError::DeliveryNotFound);
            }
            let new_id = meta.get(NEXT_ID).map_err(db_error)?.map_or(1, |v| v.value());
            meta.insert(NEXT_ID, new_id + 1).map_err(db_error)?;
            let again = NewDelivery {
                endpoint_id: original.endpoint_id,
                payment_id: original.payment_id,
                event_id: original.event_id,
                event_type: original.event_type,
                body: original.body,
            };
            let delivery = Delivery::pending(new_id, again, now_ms);
            insert(&mut rows, &mut lanes, &mut due, &mut log, &mut counts, delivery.clone())?;
            let row = rows.get(new_id).map_err(db_error)?.ok_or(WebhookError::DeliveryNotFound)?;
            decode(new_id, row.value())?
        };
        txn.commit().map_err(db_error)?;
        Ok(delivery)
    }
}

/// What redb says of a damaged file, or of one that is not a database at all.
fn is_damage(error: &redb::StorageError) -> bool {
    match error {
        redb::StorageError::Corrupted(_) => true,
        redb::StorageError::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

fn truncate(error: &str) -> String {
    let mut end = error.len().min(ERROR_BYTES_MAX);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error[..end].to_string()
}

type Table<'t, K, V> = redb::Table<'t, K, V>;

/// Inserts a new delivery: into its lane (due now if it is the lane's head), the
/// endpoint's log (pruned) and the counts. A delivery past the endpoint's pending
/// limit is stored failed instead. Answers whether it is pending.
fn insert(
    rows: &mut Table<u64, &[u8]>,
    lanes: &mut Table<(&str, u64), ()>,
    due: &mut Table<(u64, u64), ()>,
    log: &mut Table<(&str, u64), ()>,
    counts: &mut Table<&str, (u64, u64)>,
    mut delivery: Delivery,
) -> Result<bool, WebhookError> {
    let endpoint = delivery.endpoint_id.clone();
    let (logged, pending) = counts.get(endpoint.as_str()).map_err(db_error)?.map_or((0, 0), |v| v.value());
    let is_pending = pending < PENDING_PER_ENDPOINT_MAX;
    if is_pending {
        let lane = delivery.lane();
        let busy = lanes.range((lane.as_str(), 0)..=(lane.as_str(), u64::MAX)).map_err(db_error)?.next().is_some();
        lanes.insert((lane.as_str(), delivery.id), ()).map_err(db_error)?;
        if !busy {
            due.insert((delivery.next_attempt_ms, delivery.id), ()).map_err(db_error)?;
        }
    } else {
        delivery.state = DeliveryState::Failed;
        delivery.last_error = format!("backlog full: {PENDING_PER_ENDPOINT_MAX} deliveries pending for this endpoint");
    }
    rows.insert(delivery.id, encode(&delivery)?.as_slice()).map_err(db_error)?;
    log.insert((endpoint.as_str(), delivery.id), ()).map_err(db_error)?;
    let mut logged = logged + 1;
    if logged > DELIVERY_LOG_MAX {
        let mut prune = Vec::new();
        for entry in
            log.range((endpoint.as_str(), 0)..=(endpoint.as_str(), u64::MAX)).map_err(db_error)?.take(PRUNE_SCAN_ROWS)
        {
            let (key, _) = entry.map_err(db_error)?;
            let id = key.value().1;
            if logged - (prune.len() as u64) <= DELIVERY_LOG_MAX {
                break;
            }
            let row = rows
                .get(id)
                .map_err(db_error)?
                .ok_or_else(|| WebhookError::Corrupt(format!("logged delivery {id} has no row")))?;
            if decode(id, row.value())?.state != DeliveryState::Pending {
                prune.push(id);
            }
        }
        for id in &prune {
            log.remove((endpoint.as_str(), *id)).map_err(db_error)?;
            rows.remove(*id).map_err(db_error)?;
        }
        logged -= prune.len() as u64;
    }
    counts.insert(endpoint.as_str(), (logged, pending + u64::from(is_pending))).map_err(db_error)?;
    Ok(is_pending)
}

/// Takes a finished delivery out of its lane and makes the lane's next one due now.
fn finish_in_lane(
    rows: &mut Table<u64, &[u8]>,
    lanes: &mut Table<(&str, u64), ()>,
    due: &mut Table<(u64, u64), ()>,
    counts: &mut Table<&str, (u64, u64)>,
    delivery: &Delivery,
    now_ms: u64,
) -> Result<(), WebhookError> {
    let lane = delivery.lane();
    lanes.remove((lane.as_str(), delivery.id)).map_err(db_error)?;
    let next = lanes.range((lane.as_str(), 0)..=(lane.as_str(), u64::MAX)).map_err(db_error)?.next();
    if let Some(entry) = next {
        let (key, _) = entry.map_err(db_error)?;
        let id = key.value().1;
        let mut following = match rows.get(id).map_err(db_error)? {
            Some(row) => decode(id, row.value())?,
            None => return Err(WebhookError::Corrupt(format!("queued delivery {id} has no row"))),
        };
        following.next_attempt_ms = now_ms;
        rows.insert(id, encode(&following)?.as_slice()).map_err(db_error)?;
        due.insert((now_ms, id), ()).map_err(db_error)?;
    }
    let endpoint = delivery.endpoint_id.as_str();
    let (logged, pending) = counts.get(endpoint).map_err(db_error)?.map_or((0, 0), |v| v.value());
    counts.insert(endpoint, (logged, pending.saturating_sub(1))).map_err(db_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, WebhookDb) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = WebhookConfig { retry_base: Duration::from_millis(1_000), timeout: Duration::from_secs(10) };
        let db = WebhookDb::open(&dir.path().join("webhooks.redb"), config).expect("open");
        (dir, db)
    }

    fn new(endpoint: &str, payment: &str, event: &str) -> NewDelivery {
        NewDelivery {
            endpoint_id: endpoint.into(),
            payment_id: payment.into(),
            event_id: event.into(),
            event_type: "payment.created".into(),
            body: format!("{{\"id\":\"{event}\"}}"),
        }
    }

    fn ids(deliveries: &[Delivery]) -> Vec<&str> {
        deliveries.iter().map(|d| d.event_id.as_str()).collect()
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_a_new_database_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("webhooks.redb");
        std::fs::write(&path, vec![0xab; 8_192]).expect("garbage");
        let db = WebhookDb::open(&path, WebhookConfig::default()).expect("a new database");
        assert_eq!(db.checkpoint().expect("checkpoint"), None, "new: the follower starts at the oldest endpoint");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.starts_with("webhooks.redb.damaged-")), "{names:?}");
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_an_hour() {
        let base = Duration::from_secs(1);
        let delays: Vec<u64> = (1..=14).map(|n| retry_delay(base, n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]);
        assert_eq!(retry_delay(base, u32::MAX), RETRY_DELAY_MAX);
        assert_eq!(retry_delay(Duration::from_millis(10), 3), Duration::from_millis(40));
        // Retried for the whole window: with a 1 s base, 72 h hold dozens of attempts.
        let (mut at, mut attempts) = (Duration::ZERO, 0u32);
        while at <= RETRY_WINDOW {
            attempts += 1;
            at += retry_delay(base, attempts);
        }
        assert!(attempts > 70, "{attempts} attempts in 72 h");
    }

    #[test]
    fn a_later_event_of_a_payment_waits_for_the_earlier_one() {
        let (_dir, db) = db();
        let batch =
            vec![new("we_a", "p1", "e1"), new("we_a", "p1", "e2"), new("we_a", "p2", "e3"), new("we_b", "p1", "e4")];
        assert_eq!(db.enqueue(batch, 10, 1_000).expect("enqueue"), 4);
        assert_eq!(db.checkpoint().expect("checkpoint"), Some(10));
        // Heads only: e2 waits behind e1 (same endpoint and payment).
        let due = db.due(1_000, 100).expect("due");
        assert_eq!(ids(&due), ["e1", "e3", "e4"]);
        // e1 fails: retried after the base delay; e2 still waits.
        let e1 = due[0].id;
        let failed = db.record(e1, Attempt::Failed { status: Some(500), error: "500".into() }, 1_000).expect("record");
        assert_eq!((failed.state, failed.attempts, failed.next_attempt_ms), (DeliveryState::Pending, 1, 2_000));
        assert_eq!(ids(&db.due(1_500, 100).expect("due")), ["e3", "e4"]);
        assert_eq!(db.next_due_ms().expect("next"), Some(1_000));
        assert_eq!(ids(&db.due(2_000, 100).expect("due")), ["e3", "e4", "e1"]);
        // e1 delivered: e2 becomes due at once.
        db.record(e1, Attempt::Delivered(200), 2_000).expect("record");
        assert_eq!(ids(&db.due(2_000, 100).expect("due")), ["e3", "e4", "e2"]);
    }

    #[test]
    fn a_delivery_fails_finally_after_the_window_and_frees_its_lane() {
        let (_dir, db) = db();
        db.enqueue(vec![new("we_a", "p1", "e1"), new("we_a", "p1", "e2")], 2, 0).expect("enqueue");
        let e1 = db.due(0, 10).expect("due")[0].id;
        let late = ms(RETRY_WINDOW);
        let failed = db.record(e1, Attempt::Failed { status: None, error: "timeout".into() }, late).expect("record");
        assert_eq!(failed.state, DeliveryState::Failed);
        assert_eq!(ids(&db.due(late, 10).expect("due")), ["e2"]);
    }

    #[test]
    fn resend_enqueues_the_same_event_again_at_the_end_of_its_lane() {
        let (_dir, db) = db();
        db.enqueue(vec![new("we_a", "p1", "e1")], 1, 0).expect("enqueue");
        let e1 = db.due(0, 10).expect("due")[0].id;
        db.record(e1, Attempt::Delivered(204), 0).expect("delivered");
        assert!(db.due(u64::MAX, 10).expect("due").is_empty());
        let again = db.resend("we_a", e1, 5).expect("resend");
        assert_ne!(again.id, e1);
        assert_eq!((again.event_id.as_str(), again.state, again.attempts), ("e1", DeliveryState::Pending, 0));
        assert_eq!(ids(&db.due(5, 10).expect("due")), ["e1"]);
        assert!(matches!(db.resend("we_b", e1, 5), Err(WebhookError::DeliveryNotFound)));
        assert!(matches!(db.resend("we_a", 999, 5), Err(WebhookError::DeliveryNotFound)));
        let (log, more) = db.list("we_a", 10, None).expect("list");
        assert_eq!(log.iter().map(|d| d.id).collect::<Vec<_>>(), [again.id, e1]);
        assert!(!more);
    }

    #[test]
    fn the_log_is_paged_newest_first_and_pruned_to_its_limit() {
        let (_dir, db) = db();
        let total = DELIVERY_LOG_MAX + 10;
        for n in 0..total {
            db.enqueue(vec![new("we_a", &format!("p{n}"), &format!("e{n}"))], n + 1, 0).expect("enqueue");
            let due = db.due(0, 1).expect("due");
            db.record(due[0].id, Attempt::Delivered(200), 0).expect("delivered");
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (page, more) = db.list("we_a", 100, cursor).expect("list");
            cursor = page.last().map(|d| d.id);
            seen.extend(page.into_iter().map(|d| d.id));
            if !more {
                break;
            }
        }
        assert_eq!(seen.len() as u64, DELIVERY_LOG_MAX);
        assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first, no duplicate");
        assert_eq!(seen[0], total, "the newest is kept");
    }
}
