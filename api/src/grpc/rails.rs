//! The payment rails over gRPC: the client of rails served by another process (a
//! `rails-sandbox`, or a provider gateway), which implements the platform's
//! [`PaymentRail`] port, and the server the `rails-sandbox` binary runs over the
//! platform's [`SandboxRails`].

use ledger_platform::payments::rails::{PaymentRail, RailError, RailOperation, RailStatus, SandboxRails};
use ledger_proto::ledger::sandbox::v1 as rails_wire;
use tonic::transport::Channel;

fn to_wire(status: &RailStatus) -> rails_wire::RailReply {
    let (status, reference, reason) = match status {
        RailStatus::Succeeded(r) => ("succeeded", r.clone(), String::new()),
        RailStatus::Pending => ("pending", String::new(), String::new()),
        RailStatus::Failed(reason) => ("failed", String::new(), reason.clone()),
        RailStatus::NotFound => ("not_found", String::new(), String::new()),
    };
    rails_wire::RailReply { status: status.into(), reference, reason }
}

fn from_wire(reply: rails_wire::RailReply) -> Result<RailStatus, RailError> {
    match reply.status.as_str() {
        "succeeded" => Ok(RailStatus::Succeeded(reply.reference)),
        "pending" => Ok(RailStatus::Pending),
        "declined" | "failed" => {
            Ok(RailStatus::Failed(if reply.reason.is_empty() { reply.status } else { reply.reason }))
        }
        "not_found" => Ok(RailStatus::NotFound),
        other => Err(RailError(format!("unknown rail status {other:?}"))),
    }
}

/// Serves [`SandboxRails`] over gRPC (the `rails-sandbox` binary).
pub struct RailsServer(pub std::sync::Arc<SandboxRails>);

#[tonic::async_trait]
impl rails_wire::rails_server::Rails for RailsServer {
    async fn execute(
        &self,
        request: tonic::Request<rails_wire::RailOperation>,
    ) -> Result<tonic::Response<rails_wire::RailReply>, tonic::Status> {
        let op = request.into_inner();
        let operation = RailOperation {
            rail: op.rail,
            operation: op.operation,
            idempotency_key: op.idempotency_key,
            amount: op.amount,
            currency: op.currency,
            instrument: op.instrument,
            parent_key: op.parent_key,
        };
        match self.0.execute(operation).await {
            Ok(status) => Ok(tonic::Response::new(to_wire(&status))),
            Err(error) => Err(tonic::Status::unavailable(error.0)),
        }
    }

    async fn status(
        &self,
        request: tonic::Request<rails_wire::StatusRequest>,
    ) -> Result<tonic::Response<rails_wire::RailReply>, tonic::Status> {
        let status =
            self.0.status(&request.into_inner().idempotency_key).await.map_err(|e| tonic::Status::unavailable(e.0))?;
        Ok(tonic::Response::new(to_wire(&status)))
    }
}

/// The rails of a sandbox (or provider gateway) in another process.
pub struct RemoteRails {
    client: rails_wire::rails_client::RailsClient<Channel>,
}

impl RemoteRails {
    /// Connects lazily: the rails may come up after `ledgerd`.
    pub fn new(addr: &str) -> Result<RemoteRails, String> {
        let channel = Channel::from_shared(addr.to_string()).map_err(|e| format!("rails {addr}: {e}"))?.connect_lazy();
        Ok(RemoteRails { client: rails_wire::rails_client::RailsClient::new(channel) })
    }
}

#[tonic::async_trait]
impl PaymentRail for RemoteRails {
    async fn execute(&self, operation: RailOperation) -> Result<RailStatus, RailError> {
        let request = rails_wire::RailOperation {
            rail: operation.rail,
            operation: operation.operation,
            idempotency_key: operation.idempotency_key,
            amount: operation.amount,
            currency: operation.currency,
            instrument: operation.instrument,
            parent_key: operation.parent_key,
        };
        let reply = self.client.clone().execute(request).await.map_err(|s| RailError(s.message().to_string()))?;
        from_wire(reply.into_inner())
    }

    async fn status(&self, idempotency_key: &str) -> Result<RailStatus, RailError> {
        let request = rails_wire::StatusRequest { idempotency_key: idempotency_key.to_string() };
        let reply = self.client.clone().status(request).await.map_err(|s| RailError(s.message().to_string()))?;
        from_wire(reply.into_inner())
    }
}
