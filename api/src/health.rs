//! gRPC health that tells the truth, and the exit status that goes with it.
//!
//! Every `HEALTH_EVERY` (and at once when the audit alarm changes) the process looks at
//! what can stop it from doing its job and sets each health service from it:
//!
//! - the event log failed (a failed write or sync poisons the store until a restart)
//!   or the ledger's writer stopped after a failed append: nothing can be written, so
//!   the server (`""`), `ledger.v1.Ledger`, `Users`, `Payments`, `Fx` and `Admin`
//!   are NOT_SERVING, and so is `ledger.audit`, whose verifier no longer advances;
//! - the read models stopped following the log: reads would answer "retry" for ever,
//!   so the server, `ledger.v1.Ledger`, `Admin` (which read them) and `ledger.audit`
//!   (the chain verifier is one of them) are NOT_SERVING;
//! - the audit alarm (the chain verifier found a record that does not verify, or the
//!   read models met damaged data): `ledger.audit` NOT_SERVING, as before.
//!
//! Each of these is for good until a restart, which recovers from the disk. A process
//! that got into one of the first two exits non-zero when it is stopped (SIGTERM
//! included), so a supervisor sees the failure instead of a clean stop. The audit alarm
//! alone does not change the exit status: the data on disk is what an operator looks
//! at then, not the process.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ledger_engine::store::EventStore;
use ledger_engine::writer::Ledger;
use ledger_proto::api::v1 as wire;
use projections::worker::Projector;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::grpc::admin::AdminService;
use crate::grpc::fx::FxService;
use crate::grpc::payments::PaymentsService;
use crate::grpc::users::UsersService;
use crate::server::AUDIT_HEALTH_SERVICE;
use crate::service::LedgerService;

/// How often health is re-evaluated.
pub const HEALTH_EVERY: Duration = Duration::from_millis(200);

/// What health is computed from, and the first failure seen (for the exit status).
#[derive(Clone)]
pub struct Watched {
    pub store: Arc<dyn EventStore>,
    pub ledger: Ledger,
    pub projector: Arc<Projector>,
    failure: Arc<OnceLock<String>>,
}

/// One look at the process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Verdict {
    /// The log or the writer failed: nothing can be written.
    writes: Option<String>,
    /// The read models stopped following the log.
    reads: Option<String>,
    alarm: bool,
}

impl Watched {
    pub fn new(store: Arc<dyn EventStore>, ledger: Ledger, projector: Arc<Projector>) -> Watched {
        Watched { store, ledger, projector, failure: Arc::new(OnceLock::new()) }
    }

    fn look(&self) -> Verdict {
        let writes = match (self.store.failure(), self.ledger.failure()) {
            (Some(log), _) => Some(format!("the event log failed: {log}")),
            (None, Some(writer)) => Some(format!("the ledger writer stopped: {writer}")),
            (None, None) => None,
        };
        let reads = self.projector.stopped().map(|why| format!("the read models stopped following the log: {why}"));
        if let Some(why) = writes.as_ref().or(reads.as_ref()) {
            if self.failure.set(why.clone()).is_ok() {
                tracing::error!(reason = %why, "ledgerd is in a failed state: health NOT_SERVING; restart to recover from disk");
            }
        }
        Verdict { writes, reads, alarm: *self.projector.alarmed().borrow() }
    }

    /// Why the process is in a failed state (looked at now), if it is: it then exits
    /// non-zero when stopped.
    pub fn failure(&self) -> Option<String> {
        self.look();
        self.failure.get().cloned()
    }
}

fn status(not_serving: bool) -> ServingStatus {
    if not_serving {
        ServingStatus::NotServing
    } else {
        ServingStatus::Serving
    }
}

/// The gRPC name of a generated server.
macro_rules! name {
    ($server:ty) => {
        <$server as tonic::server::NamedService>::NAME
    };
}

async fn report(reporter: &HealthReporter, verdict: &Verdict) {
    let (writes, reads) = (verdict.writes.is_some(), verdict.reads.is_some());
    let statuses = [
        ("", writes || reads),
        (name!(wire::ledger_server::LedgerServer<LedgerService>), writes || reads),
        (name!(wire::admin_server::AdminServer<AdminService>), writes || reads),
        (name!(wire::users_server::UsersServer<UsersService>), writes),
        (name!(wire::payments_server::PaymentsServer<PaymentsService>), writes),
        (name!(wire::fx_server::FxServer<FxService>), writes),
        (AUDIT_HEALTH_SERVICE, writes || reads || verdict.alarm),
    ];
    for (service, not_serving) in statuses {
        reporter.set_service_status(service, status(not_serving)).await;
    }
}

/// The health service, kept up to date from `watched` until the process ends.
pub async fn health_service(
    watched: Watched,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    let first = watched.look();
    report(&reporter, &first).await;
    let mut alarmed = watched.projector.alarmed();
    tokio::spawn(async move {
        let mut last = first;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HEALTH_EVERY) => {}
                changed = alarmed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let now = watched.look();
            if now != last {
                report(&reporter, &now).await;
                last = now;
            }
        }
    });
    service
}
