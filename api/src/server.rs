//! Starting and stopping `ledgerd`: store, ledger, read model, tokens, gRPC services,
//! health, reflection, metrics endpoint, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ledger_engine::audit::data_dir_layout;
use ledger_engine::clock::SystemClock;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::EventStore;
use ledger_engine::writer::{Ledger, LedgerConfig};
use ledger_platform::fx::Fx;
use ledger_platform::payments::rails::{Faults, PaymentRail, SandboxRails};
use ledger_platform::payments::Payments;
use ledger_platform::users::crypto::{self, KeyStore};
use ledger_platform::users::instruments::SandboxVault;
use ledger_platform::users::Users;
use ledger_proto::api::v1 as wire;
use projections::read_models::read_models_path;
use projections::worker::{Projector, APPLY_BATCH_EVENTS};
use tokio::net::TcpListener;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::{self, Role, Tokens};
use crate::config::Config;
use crate::grpc::admin::AdminService;
use crate::grpc::fx::FxService;
use crate::grpc::payments::PaymentsService;
use crate::grpc::rails::RemoteRails;
use crate::grpc::users::UsersService;
use crate::metrics::{endpoint, platform as endpoint_platform, Metrics};
use crate::service::LedgerService;
use crate::webhooks::{Owner, Webhooks};
use ledger_proto::transport::{incoming, tuned as transport_tuned, MESSAGE_BYTES_MAX};

/// Fault injection for process-level tests of a failing disk: when set, every sync of
/// the embedded log fails with EIO once a file exists at the path it names. Unset in
/// any real deployment.
pub const FAIL_SYNCS_ENV: &str = "LEDGERD_TEST_FAIL_SYNCS_ONCE_EXISTS";

/// Longest a call may run before it is cancelled with DEADLINE_EXCEEDED.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a stop spends bringing the read models to the log's end.
pub const SHUTDOWN_CATCH_UP: Duration = Duration::from_secs(10);

/// Tokens from the tokens file and `LEDGERD_ADMIN_TOKEN`; if neither gives any, the
/// admin token in `<data-dir>/admin.token` (generated on first start).
pub fn load_tokens(config: &Config) -> Result<Tokens, String> {
    let mut tokens = Tokens::default();
    if let Some(path) = &config.tokens_file {
        tokens.load_file(path).map_err(|e| e.to_string())?;
    }
    if let Ok(token) = std::env::var("LEDGERD_ADMIN_TOKEN") {
        tokens.insert(&token, Role::Admin).map_err(|e| format!("LEDGERD_ADMIN_TOKEN: {e}"))?;
    }
    if tokens.is_empty() {
        let token = auth::admin_token_file(&config.data_dir).map_err(|e| format!("admin token file: {e}"))?;
        tokens.insert(&token, Role::Admin).map_err(|e| format!("admin token file: {e}"))?;
        tracing::info!(path = %config.data_dir.join("admin.token").display(), "admin token file in use");
    }
    Ok(tokens)
}

/// The event log (the embedded store, or EventStoreDB/KurrentDB when `--store` names
/// one), the ledger's settings for it, and whether opening it cut a torn tail.
fn open_log(
    config: &Config,
    log_dir: &std::path::Path,
    snapshot_dir: std::path::PathBuf,
) -> Result<(Arc<dyn EventStore>, LedgerConfig, bool), String> {
    let ledger_config = LedgerConfig {
        snapshot_dir: Some(snapshot_dir),
        snapshot_interval_events: config.snapshot_interval_events,
        state_dir: Some(config.data_dir.join("state")),
        clock: Arc::new(SystemClock),
        ..LedgerConfig::default()
    };
    match &config.store {
        None => {
            let (store, recovery) =
                EmbeddedStore::open(log_dir, EmbeddedOptions::default()).map_err(|e| e.to_string())?;
            if let Some(trigger) = std::env::var_os(FAIL_SYNCS_ENV) {
                tracing::warn!(trigger = ?trigger, "fault injection: syncs of the log fail once this file exists");
                store.fail_syncs_once_exists(trigger.into());
            }
            tracing::info!(
                data_dir = %config.data_dir.display(),
                segments = recovery.segments,
                sealed = recovery.sealed,
                events = recovery.records,
                events_read = recovery.scanned,
                torn_tail = recovery.torn_tail.is_some(),
                "event log opened"
            );
            let ledger_config = LedgerConfig { log_torn_tail_cut: recovery.torn_tail.is_some(), ..ledger_config };
            Ok((Arc::new(store), ledger_config, recovery.torn_tail.is_some()))
        }
        #[cfg(feature = "kurrentdb")]
        Some(spec) if ledger_engine::store::kurrent::is_kurrent(spec) => {
            let store = ledger_engine::store::kurrent::KurrentStore::connect(spec).map_err(|e| e.to_string())?;
            tracing::info!("event log: EventStoreDB/KurrentDB");
            // Its appends are limited to 1 MiB: keep requests and batches well under it.
            let ledger_config = LedgerConfig { request_items_max: 1_000, batch_items_max: 1_000, ..ledger_config };
            Ok((Arc::new(store), ledger_config, false))
        }
        Some(spec) => Err(format!("--store {spec:?}: expected kurrentdb://… or esdb://… (or no --store)")),
    }
}

/// The payments platform (users, FX, payments) opened over the log and the ledger,
/// and its gRPC services.
struct Platform {
    users: Arc<Users>,
    fx: Arc<Fx>,
    payments: Arc<Payments>,
    users_service: UsersService,
    payments_service: PaymentsService,
    fx_service: FxService,
}

/// Opens users, FX and payments over the log and their indexes (each on a blocking
/// thread), starts the drivers of open payments, the indexes' checkpoints and the
/// session sweeper, and builds their services.
async fn open_platform(
    config: &Config,
    store: &Arc<dyn EventStore>,
    ledger: &Ledger,
    tokens: &Arc<Tokens>,
    metrics: &Arc<Metrics>,
    projector: &Arc<Projector>,
) -> Result<Platform, String> {
    let users = open_users(config, store, ledger).await?;
    let users_service = UsersService { users: users.clone(), metrics: metrics.clone() };
    let rail: Arc<dyn PaymentRail> = match &config.rails {
        Some(addr) => Arc::new(RemoteRails::new(addr)?),
        None => Arc::new(SandboxRails::new(Faults::default()).map_err(|e| format!("sandbox rails: {e}"))?),
    };
    let fx = {
        let (store, ledger, users, fx_config) = (store.clone(), ledger.clone(), users.clone(), config.fx);
        tokio::task::spawn_blocking(move || Fx::open(store, ledger, users, fx_config, Arc::new(SystemClock)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let fx = Arc::new(fx);
    tracing::info!(pairs = fx.rates().len(), "exchange rates rebuilt from the log");
    let payments = {
        let (store, ledger, users, payments_config) = (store.clone(), ledger.clone(), users.clone(), config.payments);
        let (fx, data_dir) = (fx.clone(), config.data_dir.clone());
        tokio::task::spawn_blocking(move || {
            let index = ledger_platform::payments::index_path(&data_dir);
            Payments::open(store, ledger, users, rail, fx, payments_config, Arc::new(SystemClock), &index)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
    };
    let payments = Arc::new(payments);
    payments.start();
    spawn_index_checkpoints(users.clone(), payments.clone());
    let payments_service = PaymentsService {
        payments: payments.clone(),
        fx: fx.clone(),
        users: users.clone(),
        tokens: tokens.clone(),
        metrics: metrics.clone(),
        projector: projector.clone(),
        store: store.clone(),
    };
    let fx_service =
        FxService { fx: fx.clone(), users: users.clone(), tokens: tokens.clone(), metrics: metrics.clone() };
    Ok(Platform { users, fx, payments, users_service, payments_service, fx_service })
}

/// The transport, tuned, with TLS when configured.
fn server_builder(config: &Config) -> Result<Server, String> {
    let mut builder = transport_tuned(Server::builder()).timeout(REQUEST_TIMEOUT);
    if let Some((cert, key)) = &config.tls {
        let cert = std::fs::read(cert).map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
        let key = std::fs::read(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .map_err(|e| format!("TLS: {e}"))?;
    }
    Ok(builder)
}

/// Runs the server until `shutdown` completes, then finishes in-flight calls and
/// batches and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let started = Instant::now();
    ledger_proto::transport::tls_provider();
    // The store's connection string is not logged: it may carry credentials.
    let store_kind = if config.store.is_some() { "kurrentdb" } else { "embedded" };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), data_dir = %config.data_dir.display(), store = store_kind, "ledgerd starting");
    let tokens = Arc::new(load_tokens(&config)?);
    let models_path = read_models_path(&config.data_dir);
    // The read models' check (a process of its own, reading the whole file) runs while
    // the log opens: on two cores the start takes the longer of the two, not the sum.
    let checking = tokio::spawn(crate::read_models_check::check_read_models(models_path.clone()));
    let (log_dir, snapshot_dir) = data_dir_layout(&config.data_dir);
    tracing::info!(log_dir = %log_dir.display(), snapshot_dir = %snapshot_dir.display(), "opening the event log");
    let (store, ledger_config, torn_tail_cut) = open_log(&config, &log_dir, snapshot_dir)?;
    let ledger = Ledger::open(store.clone(), ledger_config).map_err(|e| e.to_string())?;
    tracing::info!(path = %models_path.display(), "opening the read models");
    checking.await.map_err(|e| format!("checking the read models: {e}"))??;
    let models = crate::read_models_check::open_read_models(&models_path, store.as_ref(), torn_tail_cut)?;
    models.set_dense_positions(store.dense_positions());
    let projector = Projector::new(models).map_err(|e| e.to_string())?;
    tracing::info!(applied = projector.applied(), head = *store.watch_head().borrow(), "read models opened");
    let follower = projector.spawn(store.clone()).map_err(|e| format!("projector thread: {e}"))?;
    report_catch_up(projector.clone(), store.clone());
    let metrics = Arc::new(Metrics::default());
    let payments_slot = Arc::new(OnceLock::new());
    let webhooks_slot = Arc::new(OnceLock::new());
    let metrics_endpoint = MetricsEndpoint::start(
        config.metrics_listen,
        metrics.clone(),
        &ledger,
        projector.clone(),
        store.clone(),
        payments_slot.clone(),
        webhooks_slot.clone(),
    )
    .await?;
    let Platform { users, fx, payments, users_service, payments_service, fx_service } =
        open_platform(&config, &store, &ledger, &tokens, &metrics, &projector).await?;
    let _ = payments_slot.set(payments.clone());
    let (users_at_stop, payments_at_stop) = (users.clone(), payments.clone());
    let webhook_tasks = WebhookTasks::start(&config, &store).await?;
    tracing::info!(endpoints = webhook_tasks.webhooks.endpoints.list(Owner::Admin).len(), "webhooks started");
    let _ = webhooks_slot.set(webhook_tasks.webhooks.clone());
    let heads = HeadsSigner::start(&config, store.clone()).await?;
    let services = Services {
        admin: Arc::new(AdminService {
            users: users.clone(),
            payments: payments.clone(),
            projector: projector.clone(),
            store: store.clone(),
            tokens: tokens.clone(),
            metrics: metrics.clone(),
        }),
        ledger: Arc::new(LedgerService {
            ledger: ledger.clone(),
            store: store.clone(),
            tokens,
            users,
            fx,
            payments,
            projector: projector.clone(),
            metrics,
            heads_public_key: Some(heads.public_key.clone()),
            stream_subscribers: crate::service::stream_subscribers(),
        }),
        users: Arc::new(users_service),
        payments: Arc::new(payments_service),
        fx: Arc::new(fx_service),
    };
    let http = HttpEndpoint::start(config.http_listen, services.http_state(webhook_tasks.webhooks.clone())).await?;
    let watched = crate::health::Watched::new(store.clone(), ledger.clone(), projector.clone());
    let health_service = crate::health::health_service(watched.clone()).await;
    let listener = TcpListener::bind(config.listen).await.map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| format!("listen on {}: {e}", config.listen))?;
    tracing::info!(%addr, tls = config.tls.is_some(), "ledgerd listening on {addr}");
    log_ready(started, addr, metrics_endpoint.addr, http.addr);
    serve_grpc(&config, services, health_service, listener, shutdown).await?;
    http.stop().await;
    webhook_tasks.stop().await;
    tracing::info!("no more calls in flight; closing the ledger");
    tokio::task::spawn_blocking(move || ledger.close()).await.map_err(|e| e.to_string())?;
    heads.stop().await;
    let checkpoints = tokio::task::spawn_blocking(move || checkpoint_indexes(&users_at_stop, &payments_at_stop));
    if let Err(error) = checkpoints.await {
        tracing::warn!(%error, "index checkpoints at stop failed; the start re-applies the log after the last ones");
    }
    catch_up_at_stop(&projector, store, follower).await;
    metrics_endpoint.stop().await;
    if let Some(failure) = watched.failure() {
        return Err(format!("stopped in a failed state: {failure}"));
    }
    tracing::info!("stopped");
    Ok(())
}

/// The gRPC services, shared with the HTTP API.
struct Services {
    ledger: Arc<LedgerService>,
    users: Arc<UsersService>,
    payments: Arc<PaymentsService>,
    fx: Arc<FxService>,
    admin: Arc<AdminService>,
}

impl Services {
    /// What the HTTP API's handlers share: these services and the webhooks.
    fn http_state(&self, webhooks: Arc<crate::webhooks::Webhooks>) -> crate::http::HttpState {
        crate::http::HttpState {
            users: self.users.clone(),
            payments: self.payments.clone(),
            fx: self.fx.clone(),
            ledger: self.ledger.clone(),
            admin: self.admin.clone(),
            idempotency: Default::default(),
            webhooks,
        }
    }
}

/// Serves the gRPC API (with health and reflection) on `listener` until `shutdown`,
/// then lets calls in flight finish.
async fn serve_grpc(
    config: &Config,
    services: Services,
    health_service: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ledger_proto::api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let ledger_server = wire::ledger_server::LedgerServer::from_arc(services.ledger)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX);
    server_builder(config)?
        .layer(crate::wire_errors::layer())
        .add_service(ledger_server)
        .add_service(wire::users_server::UsersServer::from_arc(services.users))
        .add_service(wire::payments_server::PaymentsServer::from_arc(services.payments))
        .add_service(wire::fx_server::FxServer::from_arc(services.fx))
        .add_service(wire::admin_server::AdminServer::from_arc(services.admin))
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
        .map_err(|e| format!("server: {e}"))
}

/// The one `ready` line of the start-up log, with every address a client needs.
fn log_ready(started: Instant, grpc: SocketAddr, metrics: SocketAddr, http: Option<SocketAddr>) {
    let startup_ms = started.elapsed().as_millis();
    let http_text = http.map_or_else(|| "off".to_string(), |a| format!("http://{a}"));
    tracing::info!(
        grpc = %grpc,
        metrics = %metrics,
        http = %http_text,
        startup_ms,
        "ready in {startup_ms} ms: gRPC on {grpc}, HTTP/JSON API {http_text}, metrics on http://{metrics}/metrics"
    );
}

/// The metrics endpoint, serving until `stop` (or until dropped, as on an early error
/// return from `run`).
struct MetricsEndpoint {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsEndpoint {
    async fn start(
        listen: SocketAddr,
        metrics: Arc<Metrics>,
        ledger: &Ledger,
        projector: Arc<Projector>,
        store: Arc<dyn EventStore>,
        payments: Arc<OnceLock<Arc<Payments>>>,
        webhooks: Arc<OnceLock<Arc<Webhooks>>>,
    ) -> Result<MetricsEndpoint, String> {
        let listener = TcpListener::bind(listen).await.map_err(|e| format!("metrics listen: {e}"))?;
        // The bound address is how callers find a port chosen by the system (`:0`): an
        // error, not an empty address.
        let addr = listener.local_addr().map_err(|e| format!("metrics listen: {e}"))?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        let writer_metrics = ledger.metrics();
        let render = move || {
            let mut text = metrics.render(&writer_metrics);
            text.push_str(&projection_metrics(&projector, *store.watch_head().borrow()));
            // The platform's series appear once it is open (start-up replays it first).
            if let Some(payments) = payments.get() {
                text.push_str(&endpoint_platform::render(payments.ops(), ledger_engine::clock::now_ns()));
            }
            if let Some(webhooks) = webhooks.get() {
                text.push_str(&webhooks.stats.render(*store.watch_head().borrow()));
            }
            text
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(endpoint::serve(listener, render, endpoint::Limits::default(), async {
            let _ = stopped.await;
        }));
        Ok(MetricsEndpoint { addr, stop, task })
    }

    async fn stop(self) {
        drop(self.stop);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "metrics endpoint did not stop cleanly");
        }
    }
}

/// The master key from the settings, or `<data-dir>/master.key` (generated on first start).
fn master_key(config: &Config) -> Result<crypto::SecretKey, String> {
    match &config.master_key {
        Some(key) => Ok(key.clone()),
        None => crypto::master_key_file(&config.data_dir).map_err(|e| e.to_string()),
    }
}

/// The webhooks' follower and dispatcher, running until `stop`.
struct WebhookTasks {
    webhooks: Arc<Webhooks>,
    stop: tokio::sync::watch::Sender<bool>,
    follower: tokio::task::JoinHandle<()>,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl WebhookTasks {
    /// Opens the registry and `<data-dir>/webhooks.redb` and starts following the log.
    async fn start(config: &Config, store: &Arc<dyn EventStore>) -> Result<WebhookTasks, String> {
        let key = master_key(config)?;
        let (store_, data_dir, settings) = (store.clone(), config.data_dir.clone(), config.webhooks);
        let webhooks = tokio::task::spawn_blocking(move || Webhooks::open(store_, &data_dir, &key.0, settings))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("webhooks: {e}"))?;
        let webhooks = Arc::new(webhooks);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let follower = tokio::spawn(crate::webhooks::follower::run(webhooks.clone(), store.clone(), stopped.clone()));
        let dispatcher = tokio::spawn(crate::webhooks::delivery::run(webhooks.clone(), stopped));
        Ok(WebhookTasks { webhooks, stop, follower, dispatcher })
    }

    /// Stops both; deliveries in flight are retried on the next start.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for (name, task) in [("follower", self.follower), ("dispatcher", self.dispatcher)] {
            if let Err(error) = task.await {
                tracing::warn!(%error, "webhook {name} did not stop cleanly");
            }
        }
        tracing::info!("webhooks stopped");
    }
}

/// Signs the heads of the streams that changed, every `heads_interval` and once more at
/// a clean stop (`ledger_engine::heads`).
struct HeadsSigner {
    public_key: String,
    state: Arc<tokio::sync::Mutex<(ledger_engine::heads::SigningKey, u64)>>,
    store: Arc<dyn EventStore>,
    task: tokio::task::JoinHandle<()>,
}

impl HeadsSigner {
    async fn start(config: &Config, store: Arc<dyn EventStore>) -> Result<HeadsSigner, String> {
        use ledger_engine::heads;
        let (path, log) = (config.signing_key_file.clone(), store.clone());
        let (key, from) = tokio::task::spawn_blocking(move || {
            let key = heads::SigningKey::load_or_generate(&path)?;
            let from = heads::signed_up_to(log.as_ref())?;
            Ok::<_, heads::HeadsError>((key, from))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let public_key = key.public_hex();
        tracing::info!(
            public_key = %public_key,
            path = %config.signing_key_file.display(),
            signed_up_to = from,
            "chain heads signed every {} s with this key",
            config.heads_interval.as_secs()
        );
        let state = Arc::new(tokio::sync::Mutex::new((key, from)));
        let (every, signer, log) = (config.heads_interval, state.clone(), store.clone());
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                HeadsSigner::sign(&signer, &log).await;
            }
        });
        Ok(HeadsSigner { public_key, state, store, task })
    }

    async fn sign(
        state: &Arc<tokio::sync::Mutex<(ledger_engine::heads::SigningKey, u64)>>,
        store: &Arc<dyn EventStore>,
    ) {
        let (state, store) = (state.clone(), store.clone());
        let signed = tokio::task::spawn_blocking(move || {
            let mut guard = state.blocking_lock();
            let (key, from) = &mut *guard;
            let next = ledger_engine::heads::sign_changes(store.as_ref(), key, *from, ledger_engine::clock::now_ns())?;
            *from = next;
            Ok::<u64, ledger_engine::heads::HeadsError>(next)
        })
        .await;
        match signed {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "chain heads not signed this time"),
            Err(error) => tracing::warn!(%error, "chain heads signer failed"),
        }
    }

    async fn stop(self) {
        self.task.abort();
        HeadsSigner::sign(&self.state, &self.store).await;
    }
}

/// The HTTP/JSON API, serving until `stop`; nothing when it is off.
struct HttpEndpoint {
    addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl HttpEndpoint {
    async fn start(listen: Option<SocketAddr>, state: crate::http::HttpState) -> Result<HttpEndpoint, String> {
        let Some(listen) = listen else {
            tracing::info!("HTTP API off");
            return Ok(HttpEndpoint { addr: None, stop: None, task: None });
        };
        let router = crate::http::router(Arc::new(state))?;
        let listener = TcpListener::bind(listen).await.map_err(|e| format!("HTTP listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| format!("HTTP listen on {listen}: {e}"))?;
        tracing::info!(%addr, "HTTP API on http://{addr} (OpenAPI at /openapi.json, docs at /docs)");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::http::serve(listener, router, async {
            let _ = stopped.await;
        }));
        Ok(HttpEndpoint { addr: Some(addr), stop: Some(stop), task: Some(task) })
    }

    /// Stops taking connections and waits for calls in flight.
    async fn stop(self) {
        drop(self.stop);
        if let Some(task) = self.task {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "HTTP API stopped with an error"),
                Err(error) => tracing::warn!(%error, "HTTP API did not stop cleanly"),
            }
        }
    }
}

/// Users over their data keys (the master key from the settings, or
/// `<data-dir>/master.key`) and their index (`<data-dir>/users/index.redb`).
async fn open_users(config: &Config, store: &Arc<dyn EventStore>, ledger: &Ledger) -> Result<Arc<Users>, String> {
    let master_key = master_key(config)?;
    let keys =
        KeyStore::open(&config.data_dir.join("keys").join("data-keys.bin"), master_key).map_err(|e| e.to_string())?;
    let users = {
        let (store, ledger, users_config) = (store.clone(), ledger.clone(), config.users);
        let index = ledger_platform::users::index_path(&config.data_dir);
        tokio::task::spawn_blocking(move || {
            Users::open(store, ledger, keys, Box::new(SandboxVault), users_config, Arc::new(SystemClock), &index)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
    };
    Ok(Arc::new(users))
}

/// Every `INDEX_CHECKPOINT_EVERY`, a durable checkpoint of the users' and the payments'
/// indexes (a start re-applies the log after them); every `SESSION_SWEEP_EVERY`, the
/// sweep of expired sessions.
fn spawn_index_checkpoints(users: Arc<Users>, payments: Arc<Payments>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(INDEX_CHECKPOINT_EVERY);
        let mut swept = std::time::Instant::now();
        loop {
            every.tick().await;
            let sweep = swept.elapsed() >= SESSION_SWEEP_EVERY;
            if sweep {
                swept = std::time::Instant::now();
            }
            let (users, payments) = (users.clone(), payments.clone());
            let done = tokio::task::spawn_blocking(move || {
                if sweep {
                    if let Err(error) = users.sweep_sessions() {
                        tracing::warn!(%error, "expired sessions not swept; trying again in a minute");
                    }
                }
                checkpoint_indexes(&users, &payments);
            })
            .await;
            if let Err(error) = done {
                tracing::warn!(%error, "the index checkpoint task failed");
            }
        }
    });
}

/// Durable checkpoints of the users' and the payments' indexes; a failure is logged
/// (the next start re-applies more of the log, nothing is lost).
fn checkpoint_indexes(users: &Users, payments: &Payments) {
    if let Err(error) = users.checkpoint() {
        tracing::warn!(%error, "users index checkpoint not written; a start re-applies more of the log");
    }
    if let Err(error) = payments.checkpoint() {
        tracing::warn!(%error, "payments index checkpoint not written; a start re-applies more of the log");
    }
}

/// How often the users' and payments' indexes record a durable checkpoint (a start
/// re-applies the log after it).
const INDEX_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How often sessions past their absolute expiry leave the index.
const SESSION_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Brings the read models to the log's end and makes that durable, so a restart has
/// nothing to re-apply; for at most SHUTDOWN_CATCH_UP, so that a stop after heavy load
/// stays prompt (what is left re-applies on start: skipping is safe, only slower).
async fn catch_up_at_stop(
    projector: &Arc<Projector>,
    store: Arc<dyn EventStore>,
    follower: std::thread::JoinHandle<()>,
) {
    projector.stop();
    let (models, log) = (projector.clone(), store.clone());
    let deadline = std::time::Instant::now() + SHUTDOWN_CATCH_UP;
    let caught_up = tokio::task::spawn_blocking(move || {
        if follower.join().is_err() {
            tracing::warn!("the projector thread panicked; catching up from its last checkpoint");
        }
        projections::worker::catch_up(models.models(), log.as_ref(), APPLY_BATCH_EVENTS, false, |_, _| {
            if std::time::Instant::now() < deadline {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        })
    })
    .await;
    let head = *store.watch_head().borrow();
    match caught_up {
        Ok(Ok(position)) if position >= head => tracing::info!(position, "read models durable at the log's end"),
        Ok(Ok(position)) => tracing::info!(
            position,
            head,
            "read models durable up to a position short of the log's end; the rest re-applies on start"
        ),
        Ok(Err(error)) => tracing::warn!(%error, "read models not caught up at shutdown; they re-apply on start"),
        Err(error) => tracing::warn!(%error, "read models not caught up at shutdown; they re-apply on start"),
    }
}

/// Logs the read models' progress towards the log's end every `PROGRESS_EVERY` while
/// they are behind it at start-up, then once when they reach it.
fn report_catch_up(projector: Arc<Projector>, store: Arc<dyn EventStore>) {
    let (started, head) = (Instant::now(), *store.watch_head().borrow());
    let from = projector.applied();
    if from >= head {
        return;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(ledger_engine::writer::PROGRESS_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            let applied = projector.applied();
            if applied >= head {
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(applied, head, secs = format!("{secs:.3}"), "read models caught up");
                return;
            }
            let per_sec = (applied.saturating_sub(from) as f64 / started.elapsed().as_secs_f64().max(1e-9)) as u64;
            tracing::info!(
                applied,
                head,
                lag_events = head - applied,
                events_per_sec = per_sec,
                "read models catching up"
            );
        }
    });
}

/// The health service name whose status is the chain verifier's verdict.
pub const AUDIT_HEALTH_SERVICE: &str = "ledger.audit";

fn projection_metrics(projector: &Projector, head: u64) -> String {
    // One checkpoint covers every read model, so they share their position and lag.
    const MODELS: [&str; 4] = ["balances", "history", "reports", "audit"];
    let applied = projector.applied();
    let lag = head.saturating_sub(applied);
    let mut out = format!(
        "# HELP ledger_log_head_position Events in the log.\n# TYPE ledger_log_head_position gauge\n\
         ledger_log_head_position {head}\n"
    );
    for (name, help, value) in [
        ("ledger_read_models_applied_position", "Events applied to each read model.", applied),
        ("ledger_read_models_lag_events", "How far each read model is behind the log.", lag),
    ] {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for model in MODELS {
            out.push_str(&format!("{name}{{model=\"{model}\"}} {value}\n"));
        }
    }
    let alarm = u8::from(*projector.alarmed().borrow());
    out.push_str(&format!(
        "# HELP ledger_audit_alarm 1 once the chain verifier found a record that does not verify or the read models met damaged data.\n\
         # TYPE ledger_audit_alarm gauge\nledger_audit_alarm {alarm}\n"
    ));
    out
}
