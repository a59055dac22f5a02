//! `Idempotency-Key` on creating requests, as payment APIs have it: the same key with
//! the same body answers the original response again; the same key with another body,
//! or while the first request still runs, is a 409 and changes nothing.
//!
//! Payments, requests, top-ups, withdrawals and refunds are also idempotent in the
//! platform itself (their key is durable in the payment's stream), so a retry after a
//! restart still answers the same payment. For the other creating calls the answers are
//! remembered here, in memory, within `IDEMPOTENCY_ENTRIES_MAX` and
//! `IDEMPOTENCY_BYTES_MAX`, for `IDEMPOTENCY_TTL`: after a restart (or eviction) such a
//! retry runs again and answers as a second creation would (for example 409 `email
//! already registered`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::extract::Caller;

/// Most remembered answers.
pub const IDEMPOTENCY_ENTRIES_MAX: usize = 100_000;
/// Most bytes of remembered answers (bodies; keys and bookkeeping are about 100 bytes more each).
pub const IDEMPOTENCY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How long an answer is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

type Key = [u8; 32];

enum Entry {
    Running,
    Done { body: Key, status: StatusCode, answer: Bytes },
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Finished entries, oldest first, for expiry and the budget.
    order: VecDeque<(Instant, Key)>,
    bytes: usize,
}

#[derive(Default)]
pub struct Idempotency {
    inner: Mutex<Inner>,
}

/// What a request with a key may do.
enum Begin {
    Run,
    Replay(StatusCode, Bytes),
}

impl Idempotency {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it leaves only a map of answers: keep serving.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn begin(&self, key: Key, body: Key) -> Result<Begin, ApiError> {
        let mut inner = self.lock();
        inner.expire(Instant::now());
        match inner.entries.get(&key) {
            None => {
                inner.entries.insert(key, Entry::Running);
                Ok(Begin::Run)
            }
            Some(Entry::Running) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still running; retry later",
            )),
            Some(Entry::Done { body: first, status, answer }) if *first == body => {
                Ok(Begin::Replay(*status, answer.clone()))
            }
            Some(Entry::Done { .. }) => Err(reused()),
        }
    }

    fn finish(&self, key: Key, outcome: Option<(Key, StatusCode, Bytes)>) {
        let mut inner = self.lock();
        match outcome {
            Some((body, status, answer)) if answer.len() <= IDEMPOTENCY_BYTES_MAX / 1024 => {
                inner.bytes += answer.len();
                inner.entries.insert(key, Entry::Done { body, status, answer });
                inner.order.push_back((Instant::now(), key));
                inner.shrink();
            }
            // Failed (a retry may run again) or too large to keep.
            _ => {
                inner.entries.remove(&key);
            }
        }
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().copied() {
            if now.duration_since(at) < IDEMPOTENCY_TTL {
                break;
            }
            self.evict_front(key);
        }
    }

    fn shrink(&mut self) {
        while self.order.len() > IDEMPOTENCY_ENTRIES_MAX || self.bytes > IDEMPOTENCY_BYTES_MAX {
            let Some((_, key)) = self.order.front().copied() else { break };
            self.evict_front(key);
        }
    }

    fn evict_front(&mut self, key: Key) {
        self.order.pop_front();
        if let Some(Entry::Done { answer, .. }) = self.entries.remove(&key) {
            self.bytes -= answer.len();
        }
    }
}

fn reused() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request; use a new key",
    )
}

fn json_response(status: StatusCode, answer: Bytes) -> Response {
    let mut response = (status, answer).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Runs a creating request under its optional `Idempotency-Key`: the answer of `run`
/// (a 2xx with a JSON body) is remembered for the key, its caller and the route;
/// an error is not, so a retry runs again.
pub async fn once<T, F>(
    store: &Idempotency,
    caller: &Caller,
    route: &str,
    key: Option<&str>,
    body: &[u8],
    status: StatusCode,
    run: F,
) -> Result<Response, ApiError>
where
    T: Serialize,
    F: std::future::Future<Output = Result<T, ApiError>>,
{
    let encode = |value: &T| {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("encoding: {e}")))
    };
    let Some(key) = key else {
        return Ok(json_response(status, encode(&run.await?)?));
    };
    let mut hasher = blake3::Hasher::new();
    hasher.update(&caller.scope());
    hasher.update(route.as_bytes());
    hasher.update(&[0]);
    hasher.update(key.as_bytes());
    let slot = *hasher.finalize().as_bytes();
    let body_hash = *blake3::hash(body).as_bytes();
    match store.begin(slot, body_hash)? {
        Begin::Replay(status, answer) => {
            let mut response = json_response(status, answer);
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
        Begin::Run => {
            // The entry is settled whatever happens, also if this future is dropped.
            struct Settle<'a> {
                store: &'a Idempotency,
                slot: Key,
                outcome: Option<(Key, StatusCode, Bytes)>,
            }
            impl Drop for Settle<'_> {
                fn drop(&mut self) {
                    self.store.finish(self.slot, self.outcome.take());
                }
            }
            let mut settle = Settle { store, slot, outcome: None };
            let answer = encode(&run.await?)?;
            settle.outcome = Some((body_hash, status, answer.clone()));
            drop(settle);
            Ok(json_response(status, answer))
        }
    }
}

/// The platform's answer to a payment key used again with another request.
pub fn platform_reused(error: ApiError) -> ApiError {
    if error.code == "PAYMENTS_IDEMPOTENCY_KEY_REUSED" {
        ApiError { code: "idempotency_key_reused".into(), ..error }
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_body_replays_other_body_conflicts_and_failures_are_forgotten() {
        let store = Idempotency::default();
        let (key, a, b) = ([1; 32], [2; 32], [3; 32]);
        assert!(matches!(store.begin(key, a), Ok(Begin::Run)));
        assert_eq!(store.begin(key, a).err().map(|e| e.code), Some("idempotency_key_in_use".to_string()));
        store.finish(key, Some((a, StatusCode::CREATED, Bytes::from_static(b"{}"))));
        assert!(matches!(store.begin(key, a), Ok(Begin::Replay(StatusCode::CREATED, _))));
        assert_eq!(store.begin(key, b).err().map(|e| e.code), Some("idempotency_key_reused".to_string()));
        let other = [9; 32];
        assert!(matches!(store.begin(other, a), Ok(Begin::Run)));
        store.finish(other, None);
        assert!(matches!(store.begin(other, b), Ok(Begin::Run)));
    }

    #[test]
    fn the_budget_evicts_the_oldest() {
        let store = Idempotency::default();
        for i in 0..(IDEMPOTENCY_ENTRIES_MAX + 10) as u64 {
            let mut key = [0; 32];
            key[..8].copy_from_slice(&i.to_le_bytes());
            assert!(matches!(store.begin(key, [0; 32]), Ok(Begin::Run)));
            store.finish(key, Some(([0; 32], StatusCode::OK, Bytes::from_static(b"1"))));
        }
        let inner = store.lock();
        assert_eq!(inner.order.len(), IDEMPOTENCY_ENTRIES_MAX);
        assert_eq!(inner.entries.len(), IDEMPOTENCY_ENTRIES_MAX);
        assert_eq!(inner.bytes, IDEMPOTENCY_ENTRIES_MAX);
    }
}
