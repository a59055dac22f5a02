//! The load generator's client of the HTTP/JSON API: one HTTP/1.1 keep-alive connection
//! (hyper's connection-level client), JSON in and out, a bearer token and an
//! idempotency key per creating request. A connection the server closed is opened
//! again before the next request.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use crate::load_payments::{LoadUser, PaymentState, SendOrder};

/// Largest response body read, in bytes (a payment is a few hundred).
const RESPONSE_BYTES_MAX: usize = 1 << 20;

/// `--http` as host:port: `host:port` or `http://host:port` (plain HTTP only).
pub fn authority(addr: &str) -> Result<String, String> {
    let authority = match addr.split_once("://") {
        None => addr,
        Some(("http", rest)) => rest.trim_end_matches('/'),
        Some(_) => return Err(format!("--http {addr}: expected host:port or http://host:port")),
    };
    if authority.is_empty() || authority.contains(['/', ' ']) || !authority.contains(':') {
        return Err(format!("--http {addr}: expected host:port or http://host:port"));
    }
    Ok(authority.to_string())
}

pub struct HttpClient {
    /// host:port
    authority: String,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl HttpClient {
    /// A client of the API at `addr` (`host:port` or `http://host:port`), connected.
    pub async fn connect(addr: &str) -> Result<HttpClient, String> {
        let mut client = HttpClient { authority: authority(addr)?, sender: None };
        client.sender = Some(client.open().await?);
        Ok(client)
    }

    async fn open(&self) -> Result<http1::SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot reach the HTTP API at {}: {e} (ledgerd --http-listen)", self.authority))?;
        stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake with {}: {e}", self.authority))?;
        tokio::spawn(async move {
            // The connection ends when the server closes it or the client is dropped;
            // the next request notices and opens another.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// One request; the status and the JSON body. A failed exchange drops the
    /// connection, so the next request opens a new one.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        user: &LoadUser,
        idempotency_key: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), String> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.authority.as_str())
            .header(AUTHORIZATION, format!("Bearer {}", user.token));
        if let Some(key) = idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        let body = match body {
            Some(value) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(value.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body).map_err(|e| format!("http: {e}"))?;
        let sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.open().await?,
        };
        let mut sender = sender;
        let answer = async {
            sender.ready().await?;
            sender.send_request(request).await
        }
        .await;
        let response = answer.map_err(|e| format!("http: {e}"))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| format!("http: reading the answer: {e}"))?
            .to_bytes();
        // The connection served the whole exchange: keep it for the next one.
        self.sender = Some(sender);
        let value = serde_json::from_slice(&bytes).map_err(|e| format!("http {status}: not JSON: {e}"))?;
        Ok((status, value))
    }

    /// Sends the order (`POST /user/transaction?wait_ms=`: answered once the payment is
    /// recorded for 0, or once it settles or `wait_ms` passes).
    pub async fn send(&mut self, order: &SendOrder<'_>, currency: &str, wait_ms: u32) -> Result<PaymentState, String> {
        let body = serde_json::json!({
            "receiver_user_id": order.receiver.user_id,
            "amount": order.amount,
            "currency": currency,
        });
        let path = format!("/user/transaction?wait_ms={wait_ms}");
        let answer = self.call(Method::POST, &path, order.sender, Some(&order.idempotency_key), Some(body)).await?;
        payment_state(answer)
    }

    /// The payment once it settles, or after `wait_ms` (`GET /payments/{id}?wait_ms=`).
    pub async fn get_payment(
        &mut self,
        user: &LoadUser,
        payment_id: &str,
        wait_ms: u32,
    ) -> Result<PaymentState, String> {
        let path = format!("/payments/{payment_id}?wait_ms={wait_ms}");
        let answer = self.call(Method::GET, &path, user, None, None).await?;
        payment_state(answer)
    }
}

/// A payment answer as the load sees it; an error answer as a failure reason
/// ("http 409: idempotency_key_reused").
fn payment_state((status, value): (u16, serde_json::Value)) -> Result<PaymentState, String> {
    if !(200..300).contains(&status) {
        let code = value["error"]["code"].as_str().unwrap_or("(no error code)");
        return Err(format!("http {status}: {code}"));
    }
    let text = |field: &str| -> Result<String, String> {
        value[field].as_str().map(str::to_string).ok_or_else(|| format!("http {status}: the payment has no {field}"))
    };
    Ok(PaymentState { payment_id: text("id")?, status: text("status")?, reason: text("reason")? })
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_addresses() {
        assert_eq!(super::authority("127.0.0.1:8080").as_deref(), Ok("127.0.0.1:8080"));
        assert_eq!(super::authority("http://localhost:8080/").as_deref(), Ok("localhost:8080"));
        for bad in ["https://localhost:8080", "localhost", "", "http://a:1/x", "a b:1"] {
            assert!(super::authority(bad).is_err(), "{bad}");
        }
    }
}
