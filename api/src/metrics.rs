//! Prometheus text metrics: requests by method and code, and the ledger writer's batch
//! sizes, commit latency and queue depth.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ledger_engine::writer::WriterMetrics;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    pub fn record(&self, method: &'static str, code: tonic::Code) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((method, code_name(code))).or_default() += 1;
        }
    }

    /// Counts a call's outcome and passes it on, answered.
    pub fn answer<T>(
        &self,
        method: &'static str,
        result: Result<T, tonic::Status>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        self.record(method, result.as_ref().map_or_else(|status| status.code(), |_| tonic::Code::Ok));
        result.map(tonic::Response::new)
    }

    /// The exposition text.
    pub fn render(&self, writer: &WriterMetrics) -> String {
        let mut out = String::new();
        out.push_str("# HELP ledger_requests_total gRPC requests by method and status code.\n# TYPE ledger_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((method, code), count) in requests.iter() {
                out.push_str(&format!("ledger_requests_total{{method=\"{method}\",code=\"{code}\"}} {count}\n"));
            }
        }
        out.push_str(&writer.render());
        out
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
