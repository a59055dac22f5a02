//! Signed webhooks: endpoints registered by users or admins receive payment events as
//! signed JSON POSTs, driven from the event log.
//!
//! - `endpoints`: the registry, a fold of the `webhook-endpoints` stream (durable
//!   facts in the log; nothing is lost with the delivery database).
//! - `follower`: follows the log from the delivery database's checkpoint; for each
//!   payment event that changes what a payment's parties are told (its public status,
//!   a refund, a money request), enqueues one delivery per matching endpoint, in the
//!   same transaction as the checkpoint that covers the event.
//! - `db`: the delivery database `<data-dir>/webhooks.redb`: queue, lanes (one per
//!   endpoint and payment, for order), checkpoint and the per-endpoint delivery log.
//! - `delivery`: the dispatcher and its bounded workers: POST, retry with exponential
//!   backoff, mark delivered or failed.
//! - `signing`: derived secrets and the `Ledger-Signature` header.

pub mod db;
pub mod delivery;
pub mod endpoints;
pub mod follower;
pub mod signing;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ledger_engine::store::{EventStore, StoreError};

pub use db::{Delivery, DeliveryState, WebhookDb};
pub use endpoints::{Endpoint, Endpoints, Owner};
pub use signing::SigningKey;

/// The stream that holds every endpoint's registration and removal.
pub const ENDPOINTS_STREAM: &str = "webhook-endpoints";
/// The delivery database's file name in the data directory.
pub const DB_FILE: &str = "webhooks.redb";

/// The event types an endpoint may subscribe to, in a fixed order (an event's id
/// carries its index here, so it stays stable).
pub const EVENT_TYPES: [&str; 8] = [
    "payment.created",
    "payment.requires_review",
    "payment.completed",
    "payment.failed",
    "payment.cancelled",
    "payment.refunded",
    "payment.partially_refunded",
    "request.received",
];
/// Subscribes to every event type.
pub const ALL_EVENTS: &str = "*";

/// What a webhook call failed on. Each variant has a stable `code()`.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("webhook endpoint not found")]
    EndpointNotFound,
    #[error("delivery not found")]
    DeliveryNotFound,
    #[error("{0}")]
    LimitReached(String),
    #[error("the registry changed meanwhile; retry")]
    Conflict,
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error("corrupt webhook data: {0}")]
    Corrupt(String),
    #[error("delivery database: {0}")]
    Database(String),
    #[error("no randomness available")]
    Random,
}

impl WebhookError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> WebhookError {
        WebhookError::Invalid { field, message: message.into() }
    }

    /// The stable public error code.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::Invalid { .. } => "WEBHOOK_INVALID",
            WebhookError::EndpointNotFound => "WEBHOOK_ENDPOINT_NOT_FOUND",
            WebhookError::DeliveryNotFound => "WEBHOOK_DELIVERY_NOT_FOUND",
            WebhookError::LimitReached(_) => "WEBHOOK_LIMIT_REACHED",
            WebhookError::Conflict => "WEBHOOK_CONFLICT",
            WebhookError::Store(_) => "WEBHOOK_STORE",
            WebhookError::Corrupt(_) => "WEBHOOK_CORRUPT",
            WebhookError::Database(_) => "WEBHOOK_DATABASE",
            WebhookError::Random => "WEBHOOK_RANDOM",
        }
    }
}

/// Settings of the deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The first retry's delay; each next one doubles, up to `RETRY_DELAY_MAX`.
    pub retry_base: Duration,
    /// A delivery that got no 2xx answer by then is an attempt that failed.
    pub timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig { retry_base: Duration::from_secs(1), timeout: Duration::from_secs(10) }
    }
}

/// The webhooks of one `ledgerd`: registry, delivery database and signing key.
pub struct Webhooks {
    pub endpoints: Arc<Endpoints>,
    pub db: Arc<WebhookDb>,
    pub signing: SigningKey,
    pub config: WebhookConfig,
    /// Wakes the dispatcher when a delivery became due (enqueued, resent, finished).
    pub wake: Arc<tokio::sync::Notify>,
    pub stats: Stats,
}

/// Counters for operators (`GET /metrics`), since the start.
#[derive(Default)]
pub struct Stats {
    pub enqueued: AtomicU64,
    pub delivered: AtomicU64,
    /// Attempts that failed and will be tried again.
    pub retried: AtomicU64,
    /// Deliveries that failed for good (retry window over, or endpoint removed).
    pub failed: AtomicU64,
    /// The next log position the follower reads.
    pub position: AtomicU64,
}

impl Stats {
    /// The Prometheus text of the counters; `head` is the log's length.
    pub fn render(&self, head: u64) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let position = get(&self.position);
        format!(
            "# HELP ledger_webhook_enqueued_total Webhook deliveries enqueued.\n\
             # TYPE ledger_webhook_enqueued_total counter\nledger_webhook_enqueued_total {}\n\
             # HELP ledger_webhook_attempts_total Webhook delivery attempts by outcome (failed: for good).\n\
             # TYPE ledger_webhook_attempts_total counter\n\
             ledger_webhook_attempts_total{{outcome=\"delivered\"}} {}\n\
             ledger_webhook_attempts_total{{outcome=\"retry\"}} {}\n\
             ledger_webhook_attempts_total{{outcome=\"failed\"}} {}\n\
             # HELP ledger_webhook_follower_lag_events How far the webhook follower is behind the log.\n\
             # TYPE ledger_webhook_follower_lag_events gauge\nledger_webhook_follower_lag_events {}\n",
            get(&self.enqueued),
            get(&self.delivered),
            get(&self.retried),
            get(&self.failed),
            head.saturating_sub(position),
        )
    }
}

impl Webhooks {
    /// Opens the registry (folding its stream) and the delivery database.
    pub fn open(
        store: Arc<dyn EventStore>,
        data_dir: &std::path::Path,
        master_key: &[u8; 32],
        config: WebhookConfig,
    ) -> Result<Webhooks, WebhookError> {
        let endpoints = Arc::new(Endpoints::open(store)?);
        let db = Arc::new(WebhookDb::open(&data_dir.join(DB_FILE), config)?);
        Ok(Webhooks {
            endpoints,
            db,
            signing: SigningKey::from_master(master_key),
            config,
            wake: Arc::new(tokio::sync::Notify::new()),
            stats: Stats::default(),
        })
    }

    /// The owner's endpoints (an admin: every endpoint).
    pub fn visible(&self, viewer: Owner, endpoint_id: &str) -> Result<Endpoint, WebhookError> {
        let endpoint = self.endpoints.get(endpoint_id).ok_or(WebhookError::EndpointNotFound)?;
        if viewer != Owner::Admin && endpoint.owner != viewer {
            return Err(WebhookError::EndpointNotFound);
        }
        Ok(endpoint)
    }

    /// The endpoint's deliveries, newest first, after the cursor `starting_after`.
    pub async fn deliveries(
        &self,
        viewer: Owner,
        endpoint_id: &str,
        limit: usize,
        starting_after: Option<u64>,
    ) -> Result<(Vec<Delivery>, bool), WebhookError> {
        let endpoint = self.visible(viewer, endpoint_id)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.list(&endpoint.id, limit, starting_after))
            .await
            .map_err(|e| WebhookError::Database(e.to_string()))?
    }

    /// Enqueues a delivery of the endpoint again (at the end of its payment's lane).
    pub async fn resend(&self, viewer: Owner, endpoint_id: &str, delivery_id: u64) -> Result<Delivery, WebhookError> {
        let endpoint = self.visible(viewer, endpoint_id)?;
        let db = self.db.clone();
        let now = db::now_ms();
        let delivery = tokio::task::spawn_blocking(move || db.resend(&endpoint.id, delivery_id, now))
            .await
            .map_err(|e| WebhookError::Database(e.to_string()))??;
        self.wake.notify_one();
        Ok(delivery)
    }
}
