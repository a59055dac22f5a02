//! The metrics endpoint: HTTP/1.1 where `GET /metrics` answers the Prometheus text
//! format and anything else 404, served by hyper (already under tonic). Each
//! connection carries one request (no keep-alive), its head is at most
//! `REQUEST_HEAD_BYTES_MAX`, a client gets `Limits::head_timeout` to send it and
//! `Limits::connection_timeout` for the whole exchange, and at most
//! `Limits::connections_max` are served at once (the rest wait in the backlog).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The path served.
pub const PATH: &str = "/metrics";
/// The Prometheus text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4";
/// Largest request head: hyper's smallest read buffer, far above what a scraper sends.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8192;
/// Pause after a failed accept (out of file descriptors, say) before the next one.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest a client may take to send its request head.
    pub head_timeout: Duration,
    /// Longest a connection lasts, the answer included.
    pub connection_timeout: Duration,
    /// Connections served at once.
    pub connections_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            head_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(10),
            connections_max: 64,
        }
    }
}

/// Serves `render`'s text on `listener` until `shutdown` completes; then stops accepting,
/// ends the connections still open and returns.
pub async fn serve<R>(listener: TcpListener, render: R, limits: Limits, shutdown: impl Future<Output = ()>)
where
    R: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept(), if connections.len() < limits.connections_max => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, render.clone(), limits));
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

async fn connection<R>(stream: TcpStream, render: Arc<R>, limits: Limits)
where
    R: Fn() -> String + Send + Sync + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let response = answer(&request, render.as_ref());
        async move { Ok::<_, Infallible>(response) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(REQUEST_HEAD_BYTES_MAX)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(limits.connection_timeout, served).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "metrics endpoint: connection failed"),
        Err(_) => tracing::debug!("metrics endpoint: connection timed out"),
    }
}

fn answer<R: Fn() -> String>(request: &Request<Incoming>, render: &R) -> Response<Full<Bytes>> {
    if request.method() == Method::GET && request.uri().path() == PATH {
        let mut response = Response::new(Full::new(Bytes::from(render())));
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
        response
    } else {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_FOUND;
        response
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;

    const QUICK: Limits = Limits {
        head_timeout: Duration::from_millis(300),
        connection_timeout: Duration::from_secs(2),
        connections_max: 4,
    };

    async fn start(limits: Limits) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, || "ledger_up 1\n".to_string(), limits, async {
            let _ = stopped.await;
        }));
        (addr, stop, server)
    }

    /// Sends `request` and reads until the server closes the connection.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut response = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
        // A reset after an error answer is a close too.
        let _ = read.expect("the server closes the connection");
        String::from_utf8_lossy(&response).into_owned()
    }

    #[tokio::test]
    async fn get_metrics_answers_the_text_format_and_closes() {
        let (addr, _stop, _server) = start(QUICK).await;
        let response = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.to_lowercase().contains("content-type: text/plain; version=0.0.4\r\n"), "{response}");
        assert!(response.to_lowercase().contains("content-length: 12\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nledger_up 1\n"), "{response}");
    }

    #[tokio::test]
    async fn anything_else_is_not_found() {
        let (addr, _stop, _server) = start(QUICK).await;
        for request in [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /metrics/x HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ] {
            let response = exchange(addr, request.as_bytes()).await;
            assert!(response.starts_with("HTTP/1.1 404 Not Found\r\n"), "{request:?}: {response}");
            assert!(!response.contains("ledger_up"), "{response}");
        }
    }

    #[tokio::test]
    async fn a_slow_or_oversized_request_is_cut_off() {
        let (addr, _stop, _server) = start(QUICK).await;
        let started = Instant::now();
        let silent = exchange(addr, b"GET /metrics HTTP/1.1\r\n").await;
        assert!(!silent.contains("200 OK"), "{silent}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let mut huge = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 2 * REQUEST_HEAD_BYTES_MAX));
        let oversized = exchange(addr, &huge).await;
        assert!(!oversized.contains("200 OK"), "{oversized}");
    }

    #[tokio::test]
    async fn shutdown_stops_the_endpoint() {
        let (addr, stop, server) = start(QUICK).await;
        // An idle connection does not hold the stop up.
        let _idle = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(()).expect("stop");
        tokio::time::timeout(Duration::from_secs(1), server).await.expect("stopped").expect("joined");
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
    }
}
