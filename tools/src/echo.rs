//! `ledgerctl echo-server`: the do-nothing `ledger.v1.Echo` service, the transport's own
//! ceiling for `ledgerctl load --target echo`. It shares the server's transport settings
//! (`ledger_proto::transport`) and nothing else.

use std::net::SocketAddr;

use ledger_proto::api::v1 as wire;
use ledger_proto::packed::{RECORD_BYTES, STATUS_CREATED};
use ledger_proto::transport;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// Answers every call at once with a CREATED result per transfer.
struct EchoService;

#[tonic::async_trait]
impl wire::echo_server::Echo for EchoService {
    async fn echo(
        &self,
        request: Request<wire::CreateTransfersRequest>,
    ) -> Result<Response<wire::CreateTransfersResponse>, Status> {
        let count = request.into_inner().transfers.len();
        let results = (0..count)
            .map(|index| wire::ItemResult {
                index: index as u32,
                code: "CREATED".into(),
                ok: true,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(wire::CreateTransfersResponse { results }))
    }

    async fn echo_packed(
        &self,
        request: Request<wire::PackedTransfers>,
    ) -> Result<Response<wire::PackedTransferResults>, Status> {
        let count = request.into_inner().records.len() / RECORD_BYTES;
        Ok(Response::new(wire::PackedTransferResults {
            status: vec![STATUS_CREATED; count],
            timestamps_ns: vec![0; count],
            failures: Vec::new(),
        }))
    }
}

/// Serves the echo service on `listen` until the process ends.
pub async fn run(listen: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(listen).await.map_err(|e| format!("listen on {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("listen on {listen}: {e}"))?;
    tracing::info!(addr = %bound, "echo server listening on {bound}");
    transport::tuned(Server::builder())
        .add_service(
            wire::echo_server::EchoServer::new(EchoService)
                .max_decoding_message_size(transport::MESSAGE_BYTES_MAX)
                .max_encoding_message_size(transport::MESSAGE_BYTES_MAX),
        )
        .serve_with_incoming(transport::incoming(listener))
        .await
        .map_err(|e| format!("server: {e}"))
}
