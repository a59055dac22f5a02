//! Settings of `ledgerd`, from flags, environment variables and a config file, in that
//! order of precedence, over built-in defaults.
//!
//! Each setting is declared twice: its flag and environment variable in `Args` (clap
//! reads both, the flag first) and its type and default in `Settings`, whose field names
//! are the config file's keys. The layering is written once (`Layers::read`): the file's
//! keys, overlaid with what the flags and environment gave, deserialized into
//! `Settings` over its defaults. A numeric setting outside its range is refused with
//! its name (`Layers::in_range`), never clamped; an unknown key in the file is refused.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use ledger_core::money::Currency;
use ledger_platform::fx::FxConfig;
use ledger_platform::payments::PaymentsConfig;
use ledger_platform::users::crypto::{self, SecretKey};
use ledger_platform::users::UsersConfig;

use crate::webhooks::WebhookConfig;

#[derive(Parser, Serialize, Debug, Default)]
#[command(name = "ledgerd", version, about = "The ledger server: gRPC over the embedded event store")]
pub struct Args {
    /// Config file (TOML) with any of the settings below by their flag's name with `_`
    /// for `-` (data_dir, listen, metrics_listen, tokens_file, tls_cert, tls_key, ...).
    #[arg(long, env = "LEDGERD_CONFIG")]
    #[serde(skip)]
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
    /// HTTP/JSON API listen address, or `off` [default: 127.0.0.1:8080].
    #[arg(long, env = "LEDGERD_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Tokens file: lines `ROLE TOKEN` (roles: admin, service, auditor, read-only, support).
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
    /// Sign-ups (with valid input) one source address may make per hour; one more is
    /// RESOURCE_EXHAUSTED with a retry time [default: 100].
    #[arg(long, env = "LEDGERD_REGISTRATIONS_PER_SOURCE_HOUR")]
    pub registrations_per_source_hour: Option<u64>,
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
    /// Amount a user may move per hour before review, in minor units of the risk
    /// currency [default: 1000000, 10,000.00 USD].
    #[arg(long, env = "LEDGERD_RISK_USER_AMOUNT_PER_HOUR")]
    pub risk_user_amount_per_hour: Option<u64>,
    /// ... and per day [default: 2000000, 20,000.00 USD].
    #[arg(long, env = "LEDGERD_RISK_USER_AMOUNT_PER_DAY")]
    pub risk_user_amount_per_day: Option<u64>,
    /// Payments one instrument (card, bank account) may fund per hour before review
    /// [default: 10].
    #[arg(long, env = "LEDGERD_RISK_INSTRUMENT_PER_HOUR")]
    pub risk_instrument_per_hour: Option<usize>,
    /// ... and per day [default: 50].
    #[arg(long, env = "LEDGERD_RISK_INSTRUMENT_PER_DAY")]
    pub risk_instrument_per_day: Option<usize>,
    /// Amount one instrument may fund per day before review, in minor units of the risk
    /// currency [default: 1000000, 10,000.00 USD].
    #[arg(long, env = "LEDGERD_RISK_INSTRUMENT_AMOUNT_PER_DAY")]
    pub risk_instrument_amount_per_day: Option<u64>,
    /// The currency the fraud controls' amount limits are set in; payments in other
    /// currencies are valued in it at the FX mid rate in force [default: USD].
    #[arg(long, env = "LEDGERD_RISK_CURRENCY")]
    pub risk_currency: Option<String>,
    /// Drive only the payments whose id mod N is I ("I/N"), so N workers share the load
    /// [default: 0/1, all of them].
    #[arg(long, env = "LEDGERD_PAYMENT_PARTITION")]
    pub payment_partition: Option<String>,
    /// Finished payments kept in memory besides the open ones; any other is read from
    /// its stream when a call needs it [default: 10000].
    #[arg(long, env = "LEDGERD_PAYMENTS_FINISHED_CACHED")]
    pub payments_finished_cached: Option<usize>,
    /// Users kept in memory, at least 1; any other is read from their stream when a
    /// call needs them [default: 100000].
    #[arg(long, env = "LEDGERD_USERS_CACHED")]
    pub users_cached: Option<usize>,
    /// The FX spread below mid, in basis points [default: 50].
    #[arg(long, env = "LEDGERD_FX_SPREAD_BPS")]
    pub fx_spread_bps: Option<u32>,
    /// An FX fee in basis points of the amount sold [default: 0].
    #[arg(long, env = "LEDGERD_FX_FEE_BPS")]
    pub fx_fee_bps: Option<u32>,
    /// How long a quote can be executed, at most 3600 [default: 60].
    #[arg(long, env = "LEDGERD_FX_QUOTE_TTL_SECS")]
    pub fx_quote_ttl_secs: Option<u64>,
    /// The ledger writes a snapshot of its state after this many events [default: 4000000].
    #[arg(long, env = "LEDGERD_SNAPSHOT_INTERVAL_EVENTS")]
    pub snapshot_interval_events: Option<u64>,
    /// The Ed25519 key that signs chain heads (PKCS#8), kept apart from the data
    /// directory so that a copy of the data cannot forge signatures; generated on first
    /// start [default: <data-dir>-signing.key, beside the data directory].
    #[arg(long, env = "LEDGERD_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// Seconds between two signatures of the changed streams' heads [default: 60].
    #[arg(long, env = "LEDGERD_HEADS_INTERVAL_SECS")]
    pub heads_interval_secs: Option<u64>,
    /// The event log: an EventStoreDB/KurrentDB connection string such as
    /// "kurrentdb://host:2113?tls=false" (also esdb://…) [default: the embedded store
    /// in <data-dir>/log].
    #[arg(long, env = "LEDGERD_STORE")]
    pub store: Option<String>,
    /// Webhooks: the delay before a failed delivery's first retry, doubling for each
    /// next one up to an hour, for 72 hours [default: 1000].
    #[arg(long, env = "LEDGERD_WEBHOOK_RETRY_BASE_MS")]
    pub webhook_retry_base_ms: Option<u64>,
    /// Webhooks: a delivery with no 2xx answer by then is a failed attempt [default: 10000].
    #[arg(long, env = "LEDGERD_WEBHOOK_TIMEOUT_MS")]
    pub webhook_timeout_ms: Option<u64>,
}

/// The settings in force.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// `None`: no HTTP/JSON API.
    pub http_listen: Option<SocketAddr>,
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
    /// The chain heads signing key's file.
    pub signing_key_file: PathBuf,
    pub heads_interval: Duration,
    pub webhooks: WebhookConfig,
}

/// Longest session, review or quote lifetime a setting may ask for: a year.
const SECS_MAX: u64 = 365 * 24 * 3600;
/// Most payments per hour or day a velocity limit may allow a user.
const RISK_COUNT_MAX: usize = 10_000_000;

/// Every setting but `config`, by its config file key, over the defaults README.md lists.
#[derive(Deserialize, Debug)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    data_dir: PathBuf,
    listen: SocketAddr,
    metrics_listen: SocketAddr,
    http_listen: String,
    tokens_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    master_key_file: Option<PathBuf>,
    session_idle_secs: u64,
    session_max_secs: u64,
    registrations_per_source_hour: u64,
    rails: Option<String>,
    rail_timeout_ms: u64,
    review_timeout_secs: u64,
    risk_user_per_hour: usize,
    risk_user_per_day: usize,
    risk_user_amount_per_hour: u64,
    risk_user_amount_per_day: u64,
    risk_instrument_per_hour: usize,
    risk_instrument_per_day: usize,
    risk_instrument_amount_per_day: u64,
    risk_currency: String,
    payment_partition: String,
    payments_finished_cached: usize,
    users_cached: usize,
    fx_spread_bps: u32,
    fx_fee_bps: u32,
    fx_quote_ttl_secs: u64,
    snapshot_interval_events: u64,
    store: Option<String>,
    signing_key_file: Option<PathBuf>,
    heads_interval_secs: u64,
    webhook_retry_base_ms: u64,
    webhook_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        let (users, payments, fx) = (UsersConfig::default(), PaymentsConfig::default(), FxConfig::default());
        let webhooks = WebhookConfig::default();
        Settings {
            data_dir: PathBuf::from("data"),
            listen: ([127, 0, 0, 1], 50051).into(),
            metrics_listen: ([127, 0, 0, 1], 9464).into(),
            http_listen: "127.0.0.1:8080".into(),
            tokens_file: None,
            tls_cert: None,
            tls_key: None,
            master_key_file: None,
            session_idle_secs: users.session_idle.as_secs(),
            session_max_secs: users.session_max.as_secs(),
            registrations_per_source_hour: users.registrations_per_source_hour,
            rails: None,
            rail_timeout_ms: u64::try_from(payments.rail_timeout.as_millis()).unwrap_or(u64::MAX),
            review_timeout_secs: payments.risk.review_timeout.as_secs(),
            risk_user_per_hour: payments.risk.user_per_hour,
            risk_user_per_day: payments.risk.user_per_day,
            risk_user_amount_per_hour: payments.risk.user_amount_per_hour,
            risk_user_amount_per_day: payments.risk.user_amount_per_day,
            risk_instrument_per_hour: payments.risk.instrument_per_hour,
            risk_instrument_per_day: payments.risk.instrument_per_day,
            risk_instrument_amount_per_day: payments.risk.instrument_amount_per_day,
            risk_currency: payments.risk.currency.code().to_string(),
            payment_partition: format!("{}/{}", payments.partition.0, payments.partition.1),
            payments_finished_cached: payments.finished_cached_max,
            users_cached: users.cached_max,
            fx_spread_bps: fx.spread_bps,
            fx_fee_bps: fx.fee_bps,
            fx_quote_ttl_secs: fx.quote_ttl.as_secs(),
            snapshot_interval_events: 4_000_000,
            store: None,
            signing_key_file: None,
            heads_interval_secs: 60,
            webhook_retry_base_ms: u64::try_from(webhooks.retry_base.as_millis()).unwrap_or(u64::MAX),
            webhook_timeout_ms: u64::try_from(webhooks.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Where the settings in force came from, to name a refused one as its giver wrote it.
struct Layers {
    file: Option<PathBuf>,
    /// Keys whose value is the file's (no flag or environment variable gave one).
    from_file: BTreeSet<String>,
}

impl Layers {
    /// Flags and environment (in `args`) over the file (`args.config`) over defaults.
    fn read(args: &Args) -> Result<(Settings, Layers), String> {
        let flags = match serde_json::to_value(args) {
            Ok(Value::Object(flags)) => flags,
            Ok(other) => return Err(format!("flags and environment: not a table: {other}")),
            Err(error) => return Err(format!("flags and environment: {error}")),
        };
        let mut table = match &args.config {
            Some(path) => read_file(path)?,
            None => Map::new(),
        };
        let given: Map<String, Value> = flags.into_iter().filter(|(_, value)| !value.is_null()).collect();
        let from_file = table.keys().filter(|key| !given.contains_key(*key)).cloned().collect();
        table.extend(given);
        let settings = serde_json::from_value(Value::Object(table)).map_err(|e| format!("settings: {e}"))?;
        Ok((settings, Layers { file: args.config.clone(), from_file }))
    }

    /// How the giver of `key` names it: its file key, or its flag and environment variable.
    fn name(&self, key: &str) -> String {
        match &self.file {
            Some(path) if self.from_file.contains(key) => format!("`{key}` in config file {}", path.display()),
            _ => format!("--{} (LEDGERD_{})", key.replace('_', "-"), key.to_uppercase()),
        }
    }

    /// `value` if `range` holds it, else an error naming the setting and its range.
    fn in_range<T: PartialOrd + Display>(&self, key: &str, value: T, range: RangeInclusive<T>) -> Result<T, String> {
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(format!("{}: {value} is out of range {}..={}", self.name(key), range.start(), range.end()))
        }
    }
}

/// The config file's settings by key: unknown keys and values of the wrong type are
/// refused here, with the file's line.
fn read_file(path: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("config file {}: {e}", path.display()))?;
    toml::from_str::<Settings>(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

/// `<data-dir>-signing.key` beside the data directory (`data` → `data-signing.key`).
pub fn signing_key_beside(data_dir: &Path) -> PathBuf {
    let name = data_dir.file_name().map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    data_dir.with_file_name(format!("{name}-signing.key"))
}

/// "I/N" with 0 <= I < N.
fn partition(layers: &Layers, text: &str) -> Result<(u32, u32), String> {
    let parsed = text.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((index, count)) if index < count => Ok((index, count)),
        _ => Err(format!("{}: {text:?} is not I/N with 0 <= I < N", layers.name("payment_partition"))),
    }
}

/// `$settings.$key` if `$range` holds it, else an error naming the setting: its key is
/// the field's name, so the two cannot drift apart.
macro_rules! in_range {
    ($layers:expr, $settings:ident . $key:ident, $range:expr) => {
        $layers.in_range(stringify!($key), $settings.$key, $range)
    };
}

impl Config {
    pub fn resolve(args: Args) -> Result<Config, String> {
        let (s, layers) = Layers::read(&args)?;
        let tls = match (s.tls_cert, s.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err("TLS needs both a certificate and a key (--tls-cert and --tls-key)".into()),
        };
        let users = UsersConfig {
            session_idle: Duration::from_secs(in_range!(layers, s.session_idle_secs, 1..=SECS_MAX)?),
            session_max: Duration::from_secs(in_range!(layers, s.session_max_secs, 1..=SECS_MAX)?),
            registrations_per_source_hour: in_range!(layers, s.registrations_per_source_hour, 1..=1_000_000_000)?,
            cached_max: in_range!(layers, s.users_cached, 1..=100_000_000)?,
            ..UsersConfig::default()
        };
        let mut payments = PaymentsConfig {
            rail_timeout: Duration::from_millis(in_range!(layers, s.rail_timeout_ms, 1..=600_000)?),
            partition: partition(&layers, &s.payment_partition)?,
            finished_cached_max: in_range!(layers, s.payments_finished_cached, 0..=10_000_000)?,
            ..PaymentsConfig::default()
        };
        let review_timeout = in_range!(layers, s.review_timeout_secs, 1..=SECS_MAX)?;
        payments.risk.review_timeout = Duration::from_secs(review_timeout);
        payments.risk.user_per_hour = in_range!(layers, s.risk_user_per_hour, 1..=RISK_COUNT_MAX)?;
        payments.risk.user_per_day = in_range!(layers, s.risk_user_per_day, 1..=RISK_COUNT_MAX)?;
        payments.risk.user_amount_per_hour = in_range!(layers, s.risk_user_amount_per_hour, 1..=u64::MAX)?;
        payments.risk.user_amount_per_day = in_range!(layers, s.risk_user_amount_per_day, 1..=u64::MAX)?;
        payments.risk.instrument_per_hour = in_range!(layers, s.risk_instrument_per_hour, 1..=RISK_COUNT_MAX)?;
        payments.risk.instrument_per_day = in_range!(layers, s.risk_instrument_per_day, 1..=RISK_COUNT_MAX)?;
        payments.risk.instrument_amount_per_day = in_range!(layers, s.risk_instrument_amount_per_day, 1..=u64::MAX)?;
        payments.risk.currency =
            Currency::parse(&s.risk_currency).map_err(|e| format!("{}: {e}", layers.name("risk_currency")))?;
        let fx = FxConfig {
            spread_bps: in_range!(layers, s.fx_spread_bps, 0..=9_999)?,
            fee_bps: in_range!(layers, s.fx_fee_bps, 0..=10_000)?,
            quote_ttl: Duration::from_secs(in_range!(
                layers,
                s.fx_quote_ttl_secs,
                1..=ledger_platform::fx::quotes::QUOTE_TTL_MAX_SECS
            )?),
        };
        let http_listen = match s.http_listen.as_str() {
            "off" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|e| {
                format!(
                    "{}: {text:?} is not an address such as 127.0.0.1:8080, nor `off`: {e}",
                    layers.name("http_listen")
                )
            })?),
        };
        Ok(Config {
            listen: s.listen,
            metrics_listen: s.metrics_listen,
            http_listen,
            tokens_file: s.tokens_file,
            tls,
            master_key: crypto::configured_master_key(s.master_key_file.as_deref())?,
            users,
            rails: s.rails,
            payments,
            fx,
            snapshot_interval_events: in_range!(layers, s.snapshot_interval_events, 1..=u64::MAX)?,
            signing_key_file: s.signing_key_file.unwrap_or_else(|| signing_key_beside(&s.data_dir)),
            heads_interval: Duration::from_secs(in_range!(layers, s.heads_interval_secs, 1..=86_400)?),
            data_dir: s.data_dir,
            store: s.store,
            webhooks: WebhookConfig {
                retry_base: Duration::from_millis(in_range!(layers, s.webhook_retry_base_ms, 1..=3_600_000)?),
                timeout: Duration::from_millis(in_range!(layers, s.webhook_timeout_ms, 100..=60_000)?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("ledgerd.toml");
        std::fs::write(&path, text).expect("write");
        path
    }

    /// Held by the test that sets environment variables and by every parse of flags
    /// (clap reads the environment too): tests share the process's environment.
    static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn resolve(flags: &[&str]) -> Result<Config, String> {
        let _environment = ENVIRONMENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let args = Args::try_parse_from(std::iter::once("ledgerd").chain(flags.iter().copied())).expect("flags parse");
        Config::resolve(args)
    }

    #[test]
    fn defaults_are_the_ones_the_readme_lists() {
        let config = Config::resolve(Args::default()).expect("resolve");
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 50051)));
        assert_eq!(config.metrics_listen, SocketAddr::from(([127, 0, 0, 1], 9464)));
        assert_eq!((config.tokens_file, config.tls, config.rails, config.store), (None, None, None, None));
        assert_eq!((config.users.session_idle.as_secs(), config.users.session_max.as_secs()), (1800, 43200));
        assert_eq!(config.payments.rail_timeout, Duration::from_millis(2000));
        assert_eq!(config.payments.risk.review_timeout.as_secs(), 86400);
        let risk = &config.payments.risk;
        assert_eq!((risk.user_per_hour, risk.user_per_day, risk.user_amount_per_day), (30, 200, 2_000_000));
        assert_eq!(risk.currency.code(), "USD");
        assert_eq!(config.payments.partition, (0, 1));
        assert_eq!((config.fx.spread_bps, config.fx.fee_bps, config.fx.quote_ttl.as_secs()), (50, 0, 60));
        assert_eq!(config.snapshot_interval_events, 4_000_000);
        assert_eq!(config.webhooks, WebhookConfig::default());
        assert_eq!((config.webhooks.retry_base.as_millis(), config.webhooks.timeout.as_millis()), (1_000, 10_000));
    }

    #[test]
    fn precedence_is_flag_then_environment_then_file_then_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file(
            &dir,
            "data_dir = \"/from/file\"\nlisten = \"127.0.0.1:7000\"\nmetrics_listen = \"127.0.0.1:7001\"\n\
             fx_spread_bps = 60\nfx_quote_ttl_secs = 30\n",
        );
        let flags = ["ledgerd", "--config", path.to_str().expect("utf-8"), "--listen", "127.0.0.1:9000"];
        let flags = flags.into_iter().chain(["--fx-quote-ttl-secs", "90"]);
        let resolved = {
            let _environment = ENVIRONMENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            std::env::set_var("LEDGERD_LISTEN", "127.0.0.1:8000");
            std::env::set_var("LEDGERD_METRICS_LISTEN", "127.0.0.1:8001");
            std::env::set_var("LEDGERD_FX_QUOTE_TTL_SECS", "0");
            let args = Args::try_parse_from(flags);
            std::env::remove_var("LEDGERD_LISTEN");
            std::env::remove_var("LEDGERD_METRICS_LISTEN");
            std::env::remove_var("LEDGERD_FX_QUOTE_TTL_SECS");
            Config::resolve(args.expect("flags parse"))
        };
        let config = resolved.expect("resolve");
        assert_eq!(config.listen.port(), 9000, "flag over environment and file");
        assert_eq!(config.fx.quote_ttl.as_secs(), 90, "flag over an out-of-range environment value");
        assert_eq!(config.metrics_listen.port(), 8001, "environment over file");
        assert_eq!(config.data_dir, PathBuf::from("/from/file"), "file over default");
        assert_eq!(config.fx.spread_bps, 60, "file over default");
        assert_eq!(config.users.session_idle.as_secs(), 1800, "default");
    }

    #[test]
    fn an_out_of_range_value_is_refused_with_the_setting_named() {
        let error = resolve(&["--fx-fee-bps", "10001"]).expect_err("out of range");
        assert_eq!(error, "--fx-fee-bps (LEDGERD_FX_FEE_BPS): 10001 is out of range 0..=10000");
        let error = resolve(&["--session-idle-secs", "0"]).expect_err("zero");
        assert!(
            error.starts_with("--session-idle-secs (LEDGERD_SESSION_IDLE_SECS): 0 is out of range 1..="),
            "{error}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        for (key, value) in [
            ("session_idle_secs", "0"),
            ("session_max_secs", "0"),
            ("registrations_per_source_hour", "0"),
            ("rail_timeout_ms", "0"),
            ("rail_timeout_ms", "600001"),
            ("review_timeout_secs", "0"),
            ("payments_finished_cached", "10000001"),
            ("users_cached", "0"),
            ("fx_spread_bps", "10000"),
            ("fx_fee_bps", "10001"),
            ("fx_quote_ttl_secs", "0"),
            ("fx_quote_ttl_secs", "3601"),
            ("snapshot_interval_events", "0"),
            ("webhook_retry_base_ms", "0"),
            ("webhook_retry_base_ms", "3600001"),
            ("webhook_timeout_ms", "99"),
            ("webhook_timeout_ms", "60001"),
        ] {
            let path = file(&dir, &format!("{key} = {value}\n"));
            let error = Config::resolve(Args { config: Some(path), ..Args::default() }).expect_err(key);
            assert!(error.starts_with(&format!("`{key}` in config file ")), "{error}");
            assert!(error.contains(&format!(": {value} is out of range ")), "{error}");
        }
        let path = file(&dir, "payment_partition = \"2/2\"\n");
        let error = Config::resolve(Args { config: Some(path), ..Args::default() }).expect_err("partition");
        assert!(error.starts_with("`payment_partition` in config file "), "{error}");
        let error = resolve(&["--risk-currency", "usd"]).expect_err("currency");
        assert!(error.starts_with("--risk-currency (LEDGERD_RISK_CURRENCY): unknown currency code"), "{error}");
        assert_eq!(resolve(&["--risk-currency", "EUR"]).expect("EUR").payments.risk.currency.code(), "EUR");
        let error = resolve(&["--payment-partition", "1/0"]).expect_err("partition");
        assert!(error.starts_with("--payment-partition (LEDGERD_PAYMENT_PARTITION): \"1/0\""), "{error}");
    }

    #[test]
    fn the_file_refuses_unknown_keys_and_wrong_types() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file(&dir, "listen = \"127.0.0.1:7000\"\ncolour = \"blue\"\n");
        let error = Config::resolve(Args { config: Some(path), ..Args::default() }).expect_err("unknown key");
        assert!(error.contains("unknown field `colour`"), "{error}");
        let path = file(&dir, "fx_fee_bps = \"ten\"\n");
        let error = Config::resolve(Args { config: Some(path), ..Args::default() }).expect_err("wrong type");
        assert!(error.contains("fx_fee_bps"), "{error}");
        let missing = Args { config: Some(dir.path().join("absent.toml")), ..Args::default() };
        assert!(Config::resolve(missing).expect_err("no file").starts_with("config file "));
    }

    #[test]
    fn every_setting_is_accepted_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("master.key");
        std::fs::write(&key_file, "11".repeat(32)).expect("key");
        let text = format!(
            "data_dir = \"/srv/ledger\"\nlisten = \"127.0.0.1:7000\"\nmetrics_listen = \"127.0.0.1:7001\"\n\
             tokens_file = \"/etc/ledger/tokens\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n\
             master_key_file = {key_file:?}\nsession_idle_secs = 600\nsession_max_secs = 7200\nregistrations_per_source_hour = 5\n\
             rails = \"http://127.0.0.1:50061\"\nrail_timeout_ms = 1500\nreview_timeout_secs = 3600\n\
             risk_user_per_hour = 7\nrisk_user_per_day = 70\nrisk_user_amount_per_hour = 1234\nrisk_user_amount_per_day = 12345\n\
             risk_instrument_per_hour = 8\nrisk_instrument_per_day = 80\nrisk_instrument_amount_per_day = 23456\n\
             risk_currency = \"EUR\"\npayment_partition = \"1/3\"\npayments_finished_cached = 3\nfx_spread_bps = 25\nfx_fee_bps = 10\nfx_quote_ttl_secs = 45\n\
             snapshot_interval_events = 1000\nstore = \"kurrentdb://localhost:2113?tls=false\"\n\
             webhook_retry_base_ms = 250\nwebhook_timeout_ms = 2000\n"
        );
        // Every key of `Settings` is in the file: a key added there and not here fails.
        let keys: Vec<&str> = text.lines().filter_map(|line| line.split(" = ").next()).collect();
        assert_eq!(keys.len(), 30, "{keys:?}");
        let path = file(&dir, &text);
        let _environment = ENVIRONMENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = Config::resolve(Args { config: Some(path), ..Args::default() }).expect("every key accepted");
        assert_eq!(c.data_dir, PathBuf::from("/srv/ledger"));
        assert_eq!((c.listen.port(), c.metrics_listen.port()), (7000, 7001));
        assert_eq!(c.tokens_file, Some(PathBuf::from("/etc/ledger/tokens")));
        assert_eq!(c.tls, Some((PathBuf::from("cert.pem"), PathBuf::from("key.pem"))));
        assert!(c.master_key.is_some(), "master key read from master_key_file");
        assert_eq!((c.users.session_idle.as_secs(), c.users.session_max.as_secs()), (600, 7200));
        assert_eq!(c.users.registrations_per_source_hour, 5);
        assert_eq!(c.rails.as_deref(), Some("http://127.0.0.1:50061"));
        assert_eq!(c.payments.rail_timeout, Duration::from_millis(1500));
        assert_eq!(c.payments.risk.review_timeout.as_secs(), 3600);
        let risk = &c.payments.risk;
        assert_eq!((risk.user_per_hour, risk.user_per_day), (7, 70));
        assert_eq!((risk.user_amount_per_hour, risk.user_amount_per_day), (1234, 12345));
        assert_eq!((risk.instrument_per_hour, risk.instrument_per_day, risk.instrument_amount_per_day), (8, 80, 23456));
        assert_eq!(risk.currency.code(), "EUR");
        assert_eq!(c.payments.partition, (1, 3));
        assert_eq!(c.payments.finished_cached_max, 3);
        assert_eq!((c.fx.spread_bps, c.fx.fee_bps, c.fx.quote_ttl.as_secs()), (25, 10, 45));
        assert_eq!(c.snapshot_interval_events, 1000);
        assert_eq!(c.store.as_deref(), Some("kurrentdb://localhost:2113?tls=false"));
        assert_eq!(c.webhooks.retry_base, Duration::from_millis(250));
        assert_eq!(c.webhooks.timeout, Duration::from_millis(2000));
        let limits =
            ["risk_user_per_hour", "risk_user_per_day", "risk_user_amount_per_hour", "risk_user_amount_per_day"];
        let instrument_limits =
            ["risk_instrument_per_hour", "risk_instrument_per_day", "risk_instrument_amount_per_day"];
        for key in limits.into_iter().chain(instrument_limits) {
            let value = "0";
            let path = file(&dir, &format!("{key} = {value}\n"));
            let error = Config::resolve(Args { config: Some(path), ..Args::default() }).expect_err(key);
            assert!(error.starts_with(&format!("`{key}` in config file ")), "{error}");
        }
    }

    #[test]
    fn tls_needs_both_a_certificate_and_a_key() {
        let error = resolve(&["--tls-cert", "cert.pem"]).expect_err("half TLS");
        assert!(error.contains("--tls-key"), "{error}");
        let config = resolve(&["--tls-cert", "cert.pem", "--tls-key", "key.pem"]).expect("TLS");
        assert_eq!(config.tls, Some((PathBuf::from("cert.pem"), PathBuf::from("key.pem"))));
    }
}
