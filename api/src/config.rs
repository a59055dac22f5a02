//! Settings of `ledgerd`, from flags, environment variables and a config file, in that
//! order of precedence, over built-in defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

use ledger_platform::fx::FxConfig;
use ledger_platform::payments::PaymentsConfig;
use ledger_platform::users::crypto::SecretKey;
use ledger_platform::users::UsersConfig;

#[derive(Parser, Debug, Default)]
#[command(name = "ledgerd", version, about = "The ledger server: gRPC over the embedded event store")]
pub struct Args {
    /// Config file (TOML) with any of: data_dir, listen, metrics_listen, tokens_file,
    /// tls_cert, tls_key.
    #[arg(long, env = "LEDGERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: the event log in log/, snapshots in snapshots/ [default: data].
    #[arg(long, env = "LEDGERD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "LEDGERD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Prometheus metrics listen address (GET /metrics) [default: 127.0.0.1:9464].
    #[arg(long, env = "LEDGERD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Tokens file: lines `ROLE TOKEN` (roles: admin, service, auditor, read-only).
    #[arg(long, env = "LEDGERD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// TLS certificate (PEM); TLS is on when both certificate and key are given.
    #[arg(long, env = "LEDGERD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "LEDGERD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// File holding the master key (64 hex digits) that wraps users' data keys. The key
    /// itself may instead come from the environment variable LEDGERD_MASTER_KEY (never a
    /// flag: flags show in process lists). With neither, <data-dir>/master.key is
    /// generated on first start.
    #[arg(long, env = "LEDGERD_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// A user session ends after this many seconds without a call [default: 1800].
    #[arg(long, env = "LEDGERD_SESSION_IDLE_SECS")]
    pub session_idle_secs: Option<u64>,
    /// A user session ends this many seconds after sign-in [default: 43200].
    #[arg(long, env = "LEDGERD_SESSION_MAX_SECS")]
    pub session_max_secs: Option<u64>,
    /// Payment rails: the gRPC address of a rails service (for example a
    /// `rails-sandbox` process); without it, the sandbox rails run inside ledgerd.
    #[arg(long, env = "LEDGERD_RAILS")]
    pub rails: Option<String>,
    /// How long a rail call may take before its outcome is unknown [default: 2000].
    #[arg(long, env = "LEDGERD_RAIL_TIMEOUT_MS")]
    pub rail_timeout_ms: Option<u64>,
    /// A payment in review not decided by then is cancelled [default: 86400].
    #[arg(long, env = "LEDGERD_REVIEW_TIMEOUT_SECS")]
    pub review_timeout_secs: Option<u64>,
    /// Payments a user may start per hour before they are blocked [default: 30].
    #[arg(long, env = "LEDGERD_RISK_USER_PER_HOUR")]
    pub risk_user_per_hour: Option<usize>,
    /// ... and per day [default: 200].
    #[arg(long, env = "LEDGERD_RISK_USER_PER_DAY")]
    pub risk_user_per_day: Option<usize>,
    /// Amount in minor units a user may move per day before review [default: 2000000].
    #[arg(long, env = "LEDGERD_RISK_USER_AMOUNT_PER_DAY")]
    pub risk_user_amount_per_day: Option<u64>,
    /// Drive only the payments whose id mod N is I ("I/N"), so N workers share the load
    /// [default: 0/1, all of them].
    #[arg(long, env = "LEDGERD_PAYMENT_PARTITION")]
    pub payment_partition: Option<String>,
    /// The FX spread below mid, in basis points [default: 50].
    #[arg(long, env = "LEDGERD_FX_SPREAD_BPS")]
    pub fx_spread_bps: Option<u32>,
    /// An FX fee in basis points of the amount sold [default: 0].
    #[arg(long, env = "LEDGERD_FX_FEE_BPS")]
    pub fx_fee_bps: Option<u32>,
    /// How long a quote can be executed [default: 60].
    #[arg(long, env = "LEDGERD_FX_QUOTE_TTL_SECS")]
    pub fx_quote_ttl_secs: Option<u64>,
    /// The ledger writes a snapshot of its state after this many events [default: 4000000].
    #[arg(long, env = "LEDGERD_SNAPSHOT_INTERVAL_EVENTS")]
    pub snapshot_interval_events: Option<u64>,
    /// The event log: an EventStoreDB/KurrentDB connection string such as
    /// "kurrentdb://host:2113?tls=false" (also esdb://…) [default: the embedded store
    /// in <data-dir>/log].
    #[arg(long, env = "LEDGERD_STORE")]
    pub store: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    tokens_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    master_key_file: Option<PathBuf>,
    session_idle_secs: Option<u64>,
    session_max_secs: Option<u64>,
    rails: Option<String>,
    rail_timeout_ms: Option<u64>,
    review_timeout_secs: Option<u64>,
    risk_user_per_hour: Option<usize>,
    risk_user_per_day: Option<usize>,
    risk_user_amount_per_day: Option<u64>,
    payment_partition: Option<String>,
    fx_spread_bps: Option<u32>,
    fx_fee_bps: Option<u32>,
    fx_quote_ttl_secs: Option<u64>,
    snapshot_interval_events: Option<u64>,
    store: Option<String>,
}

/// The settings in force.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub tokens_file: Option<PathBuf>,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// From LEDGERD_MASTER_KEY or the master key file; `None`: `<data-dir>/master.key`.
    pub master_key: Option<SecretKey>,
    pub users: UsersConfig,
    /// `None`: the sandbox rails in process.
    pub rails: Option<String>,
    pub payments: PaymentsConfig,
    pub fx: FxConfig,
    pub snapshot_interval_events: u64,
    /// `None`: the embedded store in `<data-dir>/log`.
    pub store: Option<String>,
}

impl Config {
    pub fn resolve(args: Args) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("config file {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| format!("config file {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let default_listen: SocketAddr = ([127, 0, 0, 1], 50051).into();
        let default_metrics: SocketAddr = ([127, 0, 0, 1], 9464).into();
        let tls = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err("TLS needs both a certificate and a key".into()),
        };
        let master_key = match (std::env::var("LEDGERD_MASTER_KEY").ok(), args.master_key_file.or(file.master_key_file))
        {
            (Some(hex), _) => Some(SecretKey::from_hex(&hex).map_err(|e| format!("LEDGERD_MASTER_KEY: {e}"))?),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(&path).map_err(|e| format!("master key file {}: {e}", path.display()))?;
                Some(SecretKey::from_hex(&text).map_err(|e| format!("master key file {}: {e}", path.display()))?)
            }
            (None, None) => None,
        };
        let mut users = UsersConfig::default();
        if let Some(secs) = args.session_idle_secs.or(file.session_idle_secs) {
            users.session_idle = std::time::Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = args.session_max_secs.or(file.session_max_secs) {
            users.session_max = std::time::Duration::from_secs(secs.max(1));
        }
        let mut payments = PaymentsConfig::default();
        if let Some(ms) = args.rail_timeout_ms.or(file.rail_timeout_ms) {
            payments.rail_timeout = std::time::Duration::from_millis(ms.max(1));
        }
        if let Some(secs) = args.review_timeout_secs.or(file.review_timeout_secs) {
            payments.risk.review_timeout = std::time::Duration::from_secs(secs);
        }
        if let Some(n) = args.risk_user_per_hour.or(file.risk_user_per_hour) {
            payments.risk.user_per_hour = n;
        }
        if let Some(n) = args.risk_user_per_day.or(file.risk_user_per_day) {
            payments.risk.user_per_day = n;
        }
        if let Some(n) = args.risk_user_amount_per_day.or(file.risk_user_amount_per_day) {
            payments.risk.user_amount_per_day = n;
        }
        if let Some(text) = args.payment_partition.or(file.payment_partition) {
            let parsed = text.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
            match parsed {
                Some((index, count)) if count >= 1 && index < count => payments.partition = (index, count),
                _ => return Err(format!("payment partition {text:?}: expected I/N with 0 <= I < N")),
            }
        }
        let mut fx = FxConfig::default();
        if let Some(bps) = args.fx_spread_bps.or(file.fx_spread_bps) {
            if bps >= 10_000 {
                return Err("fx spread: below 10000 basis points".into());
            }
            fx.spread_bps = bps;
        }
        if let Some(bps) = args.fx_fee_bps.or(file.fx_fee_bps) {
            fx.fee_bps = bps.min(10_000);
        }
        if let Some(secs) = args.fx_quote_ttl_secs.or(file.fx_quote_ttl_secs) {
            fx.quote_ttl = std::time::Duration::from_secs(secs);
        }
        Ok(Config {
            data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("data")),
            listen: args.listen.or(file.listen).unwrap_or(default_listen),
            metrics_listen: args.metrics_listen.or(file.metrics_listen).unwrap_or(default_metrics),
            tokens_file: args.tokens_file.or(file.tokens_file),
            tls,
            master_key,
            users,
            rails: args.rails.or(file.rails),
            payments,
            fx,
            snapshot_interval_events: args
                .snapshot_interval_events
                .or(file.snapshot_interval_events)
                .unwrap_or(4_000_000)
                .max(1),
            store: args.store.or(file.store),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledgerd.toml");
        std::fs::write(&path, "data_dir = \"/from/file\"\nlisten = \"127.0.0.1:7000\"\n").expect("write");
        let args = Args { config: Some(path.clone()), listen: Some(([127, 0, 0, 1], 8000).into()), ..Args::default() };
        let config = Config::resolve(args).expect("resolve");
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.listen.port(), 8000);
        assert_eq!(config.metrics_listen.port(), 9464);
        std::fs::write(&path, "colour = \"blue\"\n").expect("write");
        assert!(Config::resolve(Args { config: Some(path), ..Args::default() }).is_err());
        let half_tls = Args { tls_cert: Some("cert.pem".into()), ..Args::default() };
        assert!(Config::resolve(half_tls).is_err());
    }
}
