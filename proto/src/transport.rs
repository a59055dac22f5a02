//! The gRPC transport settings that server and client must agree on, and the accepted
//! sockets' options. Shared by `ledgerd` and `ledgerctl`, so the client links no server
//! code for them.

use tonic::transport::Server;

/// Largest request or response message, in bytes.
pub const MESSAGE_BYTES_MAX: usize = 8 << 20;

/// HTTP/2 flow-control windows, in bytes, large enough that a full batch (up to
/// `MESSAGE_BYTES_MAX`) is not throttled by window updates. Both sides use them.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// A server builder with the windows above.
pub fn tuned(builder: Server) -> Server {
    builder.initial_stream_window_size(STREAM_WINDOW_BYTES).initial_connection_window_size(CONNECTION_WINDOW_BYTES)
}

/// Accepted connections with Nagle's algorithm off: tonic sets `TCP_NODELAY` only
/// on listeners it binds itself, and with Nagle on, a response that spans several
/// segments waits for the peer's delayed ACK (about 40 ms on Linux).
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "could not set TCP_NODELAY");
            }
        }
        accepted
    })
}

/// Installs ring as the process's TLS crypto provider. rustls chooses one by itself only
/// when exactly one is compiled in; with the KurrentDB client (aws-lc) beside tonic
/// (ring) there are two. Call it before any TLS is used; calling again is harmless.
pub fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
