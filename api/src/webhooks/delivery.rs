//! The dispatcher: takes due deliveries (lane heads) from the database, POSTs each on a
//! bounded set of workers, records the outcome. Deliveries of different payments run
//! concurrently; one lane (an endpoint and a payment) has one delivery in flight at
//! most, since only its head is ever due. A delivery in flight when the process stops
//! is retried after the restart (at least once).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::db::{now_ms, Attempt, Delivery, DeliveryState};
use super::{signing, WebhookError, Webhooks};

/// Deliveries in flight at once.
pub const DELIVERY_WORKERS: usize = 16;
/// Due deliveries taken from the database per round.
const DUE_BATCH: usize = 64;
/// Longest the dispatcher sleeps without looking at the database.
const IDLE_WAIT_MAX: Duration = Duration::from_secs(1);

/// The headers of a delivery.
pub const SIGNATURE_HEADER: &str = "Ledger-Signature";
pub const EVENT_ID_HEADER: &str = "Ledger-Event-Id";
pub const DELIVERY_ID_HEADER: &str = "Ledger-Delivery-Id";

fn client(timeout: Duration) -> Result<reqwest::Client, WebhookError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // A redirect is an answer that is not 2xx: not followed (it could lead anywhere).
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ledgerd-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| WebhookError::Database(format!("HTTP client: {e}")))
}

/// One attempt of a delivery.
async fn attempt(client: &reqwest::Client, webhooks: &Webhooks, delivery: &Delivery) -> Attempt {
    let Some(endpoint) = webhooks.endpoints.get(&delivery.endpoint_id) else { return Attempt::EndpointGone };
    let secret = webhooks.signing.secret(&endpoint.id);
    let timestamp = now_ms() / 1_000;
    let signature = signing::header(&secret, timestamp, delivery.body.as_bytes());
    let sent = client
        .post(&endpoint.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(EVENT_ID_HEADER, &delivery.event_id)
        .header(DELIVERY_ID_HEADER, delivery.id.to_string())
        .body(delivery.body.clone())
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Attempt::Delivered(response.status().as_u16()),
        Ok(response) => Attempt::Failed {
            status: Some(response.status().as_u16()),
            error: format!("answered {}", response.status()),
        },
        Err(error) => {
            let what = if error.is_timeout() {
                "no answer in time"
            } else if error.is_connect() {
                "could not connect"
            } else {
                "the request failed"
            };
            Attempt::Failed { status: None, error: what.into() }
        }
    }
}

/// Runs deliveries until `stop` turns true; what is in flight then is retried after a
/// restart.
pub async fn run(webhooks: Arc<Webhooks>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let client = match client(webhooks.config.timeout) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhook deliveries not started");
            return;
        }
    };
    let in_flight: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let workers = Arc::new(Semaphore::new(DELIVERY_WORKERS));
    let mut tasks = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        let now = now_ms();
        let db = webhooks.db.clone();
        let due = tokio::task::spawn_blocking(move || db.due(now, DUE_BATCH).and_then(|d| Ok((d, db.next_due_ms()?))))
            .await
            .map_err(|e| WebhookError::Database(e.to_string()))
            .and_then(|r| r);
        let next_due = match due {
            Ok((due, next_due)) => {
                for delivery in due {
                    if !in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(delivery.id) {
                        continue;
                    }
                    let Ok(permit) = workers.clone().try_acquire_owned() else {
                        in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&delivery.id);
                        break;
                    };
                    let (client, webhooks, in_flight) = (client.clone(), webhooks.clone(), in_flight.clone());
                    tasks.spawn(async move {
                        let outcome = attempt(&client, &webhooks, &delivery).await;
                        let db = webhooks.db.clone();
                        let id = delivery.id;
                        let recorded = tokio::task::spawn_blocking(move || db.record(id, outcome, now_ms())).await;
                        match recorded {
                            Ok(Ok(done)) => {
                                let counter = match done.state {
                                    DeliveryState::Delivered => &webhooks.stats.delivered,
                                    DeliveryState::Pending => &webhooks.stats.retried,
                                    DeliveryState::Failed => &webhooks.stats.failed,
                                };
                                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tracing::debug!(
                                    delivery = done.id,
                                    endpoint = %done.endpoint_id,
                                    state = done.state.as_str(),
                                    attempts = done.attempts,
                                    status = done.last_status,
                                    "webhook attempt"
                                );
                            }
                            Ok(Err(error)) => {
                                tracing::error!(%error, delivery = id, "webhook attempt not recorded; it is retried")
                            }
                            Err(error) => {
                                tracing::error!(%error, delivery = id, "webhook attempt not recorded; it is retried")
                            }
                        }
                        in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                        drop(permit);
                        webhooks.wake.notify_one();
                    });
                }
                next_due
            }
            Err(error) => {
                tracing::error!(%error, "webhook queue not read; trying again");
                None
            }
        };
        let now = now_ms();
        let wait = match next_due {
            Some(at) if at > now => Duration::from_millis(at - now).min(IDLE_WAIT_MAX),
            _ => IDLE_WAIT_MAX,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = webhooks.wake.notified() => {}
            _ = stop.changed() => {}
        }
    }
    tasks.shutdown().await;
}
