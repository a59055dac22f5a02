//! `ledgerctl load --payments`: wallet-to-wallet payments between load users, with
//! authentication, risk checks, the payment saga and the ledger all on the path.
//!
//! Set-up (not timed): `--users` users `load-<i>@load.test` are signed up, or signed in
//! again when they exist (a rerun reuses them and their money), each gets the sandbox's
//! good test card and, when its USD wallet holds less than `TOPUP_FLOOR_MINOR`, a top-up
//! of `TOPUP_MINOR` that is waited for. Timed: `--clients` tasks each send one payment
//! at a time between a random pair of users (seeded by `--seed`), with a new
//! idempotency key, and wait for it to reach a terminal status (`Send` with `wait_ms`:
//! the server answers when it gets there; `--wait get` sends, then waits with
//! `GetPayment`); the latency is the time from the send call to that answer. Over gRPC
//! (`Payments.Send`, `GetPayment`) or
//! over the HTTP/JSON API (`--transport http`; the set-up still runs over gRPC).
//!
//! The server's per-user velocity limits (`--risk-user-per-hour`, `--risk-user-per-day`,
//! `--risk-user-amount-per-hour`, `--risk-user-amount-per-day` of `ledgerd`) block a
//! load test at their defaults; the benchmark runs `ledgerd` with them raised, risk
//! checks on (see the README).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use ledger_core::money::{format_amount, parse_amount, Currency};
use ledger_proto::api::v1 as wire;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::client::{progress_of, status_text, Connection};
use crate::http_client::HttpClient;

/// The load users' password (they are test users of a load run, not people).
const LOAD_PASSWORD: &str = "load-test-only-password-7291";
/// The sandbox card vault's good test card.
const TEST_CARD_NUMBER: &str = "4242424242424242";
const TEST_CARD_CVV: &str = "123";
/// The currency every load payment moves.
const LOAD_CURRENCY: &str = "USD";
/// A wallet holding less than this (minor units of USD) is topped up before the run.
const TOPUP_FLOOR_MINOR: u128 = 20_000;
/// One top-up (minor units of USD): below the risk checks' 500.00 USD review threshold
/// for an instrument younger than a day.
const TOPUP_MINOR: u128 = 40_000;
/// The largest payment (minor units of USD); each is 0.01 USD up to this, at random.
const PAYMENT_MINOR_MAX: u64 = 100;
/// Most load users one run signs up or signs in.
const USERS_MAX: usize = 10_000;
/// Most concurrent clients.
const CLIENTS_MAX: usize = 4_096;
/// Longest run, in seconds.
const DURATION_SECS_MAX: f64 = 3_600.0;
/// Users set up at the same time (sign-up and sign-in hash passwords on the server).
const SETUP_PARALLEL: usize = 8;
/// The longest one `GetPayment` waits for a payment to settle (the server's limit).
const WAIT_MAX: Duration = Duration::from_secs(10);
/// The first pause before looking at a top-up again; it doubles up to `POLL_PAUSE_MAX`.
const POLL_PAUSE_FIRST: Duration = Duration::from_millis(1);
const POLL_PAUSE_MAX: Duration = Duration::from_millis(8);
/// A payment not terminal this long after it was sent counts as failed ("timed_out").
const PAYMENT_WAIT_MAX: Duration = Duration::from_secs(30);
/// Distinct failure reasons counted by name; any further ones count as "other".
const FAILURE_REASONS_MAX: usize = 16;
/// Where failures count once `FAILURE_REASONS_MAX` reasons are named.
const OTHER_REASON: &str = "other";
/// Characters of a failure reason kept (reasons can carry details).
const FAILURE_REASON_CHARS_MAX: usize = 80;

/// Where a client waits for its payment's outcome.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Wait {
    /// In the send call (`wait_ms`): one call a payment.
    Send,
    /// The send answers once the payment is recorded, then `GetPayment` with `wait_ms`:
    /// two calls a payment.
    Get,
}

impl Wait {
    fn word(self) -> &'static str {
        match self {
            Wait::Send => "send",
            Wait::Get => "get",
        }
    }
}

/// How the timed payments travel.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// gRPC: Payments.Send and Payments.GetPayment.
    Grpc,
    /// The HTTP/JSON API over HTTP/1.1 keep-alive, one connection per client.
    Http,
}

impl Transport {
    fn word(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

#[derive(Args)]
#[command(next_help_heading = "Payments load (--payments)")]
pub struct PaymentsLoadArgs {
    /// Drive wallet-to-wallet payments between load users (sign-in, risk checks, saga and
    /// ledger on the path) instead of raw ledger transfers.
    #[arg(long)]
    pub payments: bool,
    /// Load users to sign up, or sign in again when they exist (load-<i>@load.test).
    #[arg(long, default_value_t = 100, requires = "payments")]
    pub users: usize,
    /// Seed of the random choice of payer, payee and amount.
    #[arg(long, default_value_t = 1, requires = "payments")]
    pub seed: u64,
    /// How the timed payments travel: grpc, or http (the HTTP/JSON API at --http).
    #[arg(long, value_enum, default_value_t = Transport::Grpc, requires = "payments")]
    pub transport: Transport,
    /// The HTTP/JSON API's address (host:port), for --transport http.
    #[arg(long, default_value = "127.0.0.1:8080", requires = "payments")]
    pub http: String,
    /// Where each client waits for its payment's outcome: in the send call (send), or
    /// with GetPayment after it (get).
    #[arg(long, value_enum, default_value_t = Wait::Send, requires = "payments")]
    pub wait: Wait,
}

/// What `ledgerctl load` gives every kind of run.
pub struct RunShape {
    pub clients: usize,
    pub duration: Option<f64>,
    pub count: Option<u64>,
    pub connections: usize,
}

impl RunShape {
    /// The run's budget, starting now: `--duration` seconds, or `--count` operations,
    /// or 10 s when neither is given.
    pub fn budget(&self) -> Budget {
        Budget {
            started: Instant::now(),
            duration: match (self.duration, self.count) {
                (Some(seconds), _) => Some(Duration::from_secs_f64(seconds)),
                (None, None) => Some(Duration::from_secs(10)),
                (None, Some(_)) => None,
            },
            count: self.count,
            tickets: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// How long a run goes on, shared by its clients.
#[derive(Clone)]
pub struct Budget {
    pub started: Instant,
    duration: Option<Duration>,
    pub count: Option<u64>,
    /// Operations started so far (with --count).
    tickets: Arc<AtomicU64>,
}

impl Budget {
    /// Whether the run's duration is over.
    pub fn expired(&self) -> bool {
        self.duration.is_some_and(|d| self.started.elapsed() >= d)
    }

    /// Whether another operation may start (one ticket of `--count` taken).
    pub fn go_on(&self) -> bool {
        if self.expired() {
            return false;
        }
        match self.count {
            Some(count) => self.tickets.fetch_add(1, Ordering::Relaxed) < count,
            None => true,
        }
    }
}

/// A signed-in load user.
pub struct LoadUser {
    pub user_id: String,
    /// The session token.
    pub token: String,
    /// `Bearer <token>` as gRPC metadata.
    bearer: MetadataValue<Ascii>,
}

/// Where a payment stands as the load sees it.
pub struct PaymentState {
    pub payment_id: String,
    pub status: String,
    pub reason: String,
}

impl PaymentState {
    fn of(p: &wire::Payment) -> PaymentState {
        PaymentState { payment_id: p.payment_id.clone(), status: p.status.clone(), reason: p.reason.clone() }
    }

    /// Terminal for the load: finished, or held for a review nobody makes during a run.
    fn settled(&self) -> bool {
        matches!(
            self.status.as_str(),
            "completed" | "failed" | "cancelled" | "refunded" | "partially_refunded" | "requires_review"
        )
    }
}

/// One send of the timed phase.
pub struct SendOrder<'a> {
    pub sender: &'a LoadUser,
    pub receiver: &'a LoadUser,
    /// Major units ("0.37").
    pub amount: String,
    pub idempotency_key: String,
}

/// A seeded xorshift: the same seed, the same choices.
pub(crate) struct Random(u64);

impl Random {
    pub(crate) fn new(seed: u64) -> Random {
        // splitmix64 of the seed, so that small seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Random((z ^ (z >> 31)) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Latencies in a log-linear histogram of fixed size: exact below `SUB_BUCKETS` µs,
/// then `SUB_BUCKETS` buckets per power of two (at most 1/64 relative error), up to
/// `HISTOGRAM_MICROS_MAX`; longer latencies count in the last bucket.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_micros: u64,
}

/// Buckets per power of two (a power of two itself).
const SUB_BUCKETS: u64 = 64;
const SUB_BUCKET_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// The longest latency told apart, in µs (about 19 hours).
const HISTOGRAM_MICROS_MAX: u64 = (1 << 36) - 1;
/// Buckets of a histogram: every index `bucket(HISTOGRAM_MICROS_MAX)` can give.
const HISTOGRAM_BUCKETS: usize = ((36 - SUB_BUCKET_BITS as u64 + 1) * SUB_BUCKETS) as usize;

impl Histogram {
    pub fn new() -> Histogram {
        Histogram { counts: vec![0; HISTOGRAM_BUCKETS], total: 0, max_micros: 0 }
    }

    fn bucket(micros: u64) -> usize {
        let micros = micros.min(HISTOGRAM_MICROS_MAX);
        if micros < SUB_BUCKETS {
            return micros as usize;
        }
        let exponent = 63 - micros.leading_zeros();
        let shift = exponent - SUB_BUCKET_BITS;
        let sub = (micros >> shift) - SUB_BUCKETS;
        (u64::from(shift + 1) * SUB_BUCKETS + sub) as usize
    }

    /// The largest latency (µs) that falls in bucket `index`.
    fn bucket_top(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB_BUCKETS {
            return index;
        }
        let shift = index / SUB_BUCKETS - 1;
        let sub = index % SUB_BUCKETS;
        ((SUB_BUCKETS + sub + 1) << shift) - 1
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::bucket(micros)] += 1;
        self.total += 1;
        self.max_micros = self.max_micros.max(micros);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_micros = self.max_micros.max(other.max_micros);
    }

    /// The median, 99th and 99.9th percentiles in ms, as every load run reports them.
    pub fn p50_p99_p999_ms(&self) -> (f64, f64, f64) {
        (self.percentile_ms(0.5), self.percentile_ms(0.99), self.percentile_ms(0.999))
    }

    /// The `p`-quantile (0 < p <= 1, nearest rank) in ms: the top of its bucket, at most
    /// the largest latency seen; 0 when empty.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total as f64 * p).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::bucket_top(index).min(self.max_micros) as f64 / 1e3;
            }
        }
        self.max_micros as f64 / 1e3
    }
}

/// What one client counted.
struct Tally {
    latencies: Histogram,
    completed: u64,
    failed: u64,
    reasons: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally { latencies: Histogram::new(), completed: 0, failed: 0, reasons: BTreeMap::new() }
    }

    fn fail(&mut self, reason: &str) {
        self.failed += 1;
        let reason: String = reason.chars().take(FAILURE_REASON_CHARS_MAX).collect();
        self.count_reason(reason, 1);
    }

    /// Counts `count` failures for `reason`, or for "other" once `FAILURE_REASONS_MAX`
    /// reasons are named.
    fn count_reason(&mut self, reason: String, count: u64) {
        let named = self.reasons.len() - usize::from(self.reasons.contains_key(OTHER_REASON));
        let reason = if reason == OTHER_REASON || self.reasons.contains_key(&reason) || named < FAILURE_REASONS_MAX {
            reason
        } else {
            OTHER_REASON.to_string()
        };
        *self.reasons.entry(reason).or_insert(0) += count;
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.merge(&other.latencies);
        self.completed += other.completed;
        self.failed += other.failed;
        for (reason, count) in other.reasons {
            self.count_reason(reason, count);
        }
    }
}

fn check_shape(args: &PaymentsLoadArgs, shape: &RunShape) -> Result<(), String> {
    if !(2..=USERS_MAX).contains(&args.users) {
        return Err(format!("--users {}: from 2 to {USERS_MAX}", args.users));
    }
    if !(1..=CLIENTS_MAX).contains(&shape.clients) {
        return Err(format!("--clients {}: from 1 to {CLIENTS_MAX}", shape.clients));
    }
    if shape.connections == 0 {
        return Err("--connections: at least 1".into());
    }
    if let Some(seconds) = shape.duration {
        if !(seconds > 0.0 && seconds <= DURATION_SECS_MAX) {
            return Err(format!("--duration {seconds}: more than 0 and at most {DURATION_SECS_MAX} seconds"));
        }
    }
    if shape.count == Some(0) {
        return Err("--count: at least 1".into());
    }
    if args.transport == Transport::Http {
        crate::http_client::authority(&args.http)?;
    }
    Ok(())
}

pub async fn run(connection: &Connection, args: &PaymentsLoadArgs, shape: RunShape) -> Result<bool, String> {
    check_shape(args, &shape)?;
    let currency = Currency::parse(LOAD_CURRENCY).map_err(|e| e.to_string())?;
    let mut channels = Vec::new();
    for _ in 0..shape.connections.min(shape.clients) {
        channels.push(connection.channel().await?);
    }
    let users = Arc::new(set_up_users(&channels, args.users, currency).await?);
    // Every run's idempotency keys are its own, even with the same --seed.
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| format!("no random bytes for the run's keys: {e}"))?;
    let run = Run {
        nonce: ledger_core::chain::to_hex(&nonce),
        budget: shape.budget(),
        finished: Arc::new(AtomicU64::new(0)),
    };
    let mut seeds = Random::new(args.seed);
    let mut tasks = Vec::new();
    for client_index in 0..shape.clients {
        let client = match args.transport {
            Transport::Grpc => PaymentsClient::Grpc(wire::payments_client::PaymentsClient::new(
                channels[client_index % channels.len()].clone(),
            )),
            Transport::Http => PaymentsClient::Http(HttpClient::connect(&args.http).await?),
        };
        let random = Random::new(seeds.next());
        let waiting = Waiting { client, wait: args.wait };
        tasks.push(tokio::spawn(drive(client_index, waiting, users.clone(), random, currency, run.clone())));
    }
    let mut tally = Tally::new();
    for task in tasks {
        tally.merge(task.await.map_err(|e| e.to_string())?);
    }
    let elapsed = run.budget.started.elapsed();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    report(connection.json, args, &shape, &tally, elapsed);
    Ok(tally.failed == 0)
}

/// What every client of one run shares.
#[derive(Clone)]
struct Run {
    nonce: String,
    budget: Budget,
    /// Payments settled so far, for the progress line.
    finished: Arc<AtomicU64>,
}

/// One client's connection in the chosen transport.
pub enum PaymentsClient {
    Grpc(wire::payments_client::PaymentsClient<Channel>),
    Http(HttpClient),
}

/// A client and where it waits.
struct Waiting {
    client: PaymentsClient,
    wait: Wait,
}

/// `wait` in whole milliseconds, 1 to `WAIT_MAX`.
fn wait_ms(wait: Duration) -> u32 {
    u32::try_from(wait.min(WAIT_MAX).as_millis()).unwrap_or(0).max(1)
}

impl PaymentsClient {
    /// Sends the order; answers once the payment is recorded (`wait_ms` 0), or once it
    /// settles or `wait_ms` passes.
    async fn send(&mut self, order: &SendOrder<'_>, wait_ms: u32) -> Result<PaymentState, String> {
        match self {
            PaymentsClient::Grpc(client) => {
                let request = wire::SendRequest {
                    idempotency_key: order.idempotency_key.clone(),
                    receiver_user_id: order.receiver.user_id.clone(),
                    amount: order.amount.clone(),
                    currency: LOAD_CURRENCY.into(),
                    funding: "wallet".into(),
                    wait_ms,
                    ..Default::default()
                };
                let payment = client.send(as_user(request, order.sender)).await.map_err(|s| call_reason(&s))?;
                Ok(PaymentState::of(payment.get_ref()))
            }
            PaymentsClient::Http(client) => client.send(order, LOAD_CURRENCY, wait_ms).await,
        }
    }

    /// The payment once it settles, or as it stands after `wait` (at most `WAIT_MAX`).
    async fn get(&mut self, user: &LoadUser, payment_id: &str, wait: Duration) -> Result<PaymentState, String> {
        let wait_ms = wait_ms(wait);
        match self {
            PaymentsClient::Grpc(client) => {
                let request = wire::GetPaymentRequest { payment_id: payment_id.into(), wait_ms };
                let payment = client.get_payment(as_user(request, user)).await.map_err(|s| call_reason(&s))?;
                Ok(PaymentState::of(payment.get_ref()))
            }
            PaymentsClient::Http(client) => client.get_payment(user, payment_id, wait_ms).await,
        }
    }
}

/// A payment's reason without its details, so that failures count by kind:
/// "blocked: velocity_user_hour: 31 payments in the last hour" → "blocked:
/// velocity_user_hour" (the leading words without spaces); a reason in words stays whole.
fn reason_code(reason: &str) -> &str {
    let mut end = 0;
    for segment in reason.split(": ") {
        if segment.is_empty() || segment.contains(char::is_whitespace) {
            break;
        }
        end += if end == 0 { segment.len() } else { 2 + segment.len() };
    }
    if end == 0 {
        reason
    } else {
        &reason[..end]
    }
}

/// A failed call as a failure reason: "call: Unavailable".
fn call_reason(status: &tonic::Status) -> String {
    format!("call: {:?}", status.code())
}

fn as_user<T>(message: T, user: &LoadUser) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", user.bearer.clone());
    request
}

/// One client's loop: a payment between a random pair, then its status polled until it
/// settles, one payment at a time.
async fn drive(
    client_index: usize,
    mut client: Waiting,
    users: Arc<Vec<LoadUser>>,
    mut random: Random,
    currency: Currency,
    run: Run,
) -> Tally {
    let mut tally = Tally::new();
    let count = users.len() as u64;
    let mut sequence = 0u64;
    while run.budget.go_on() {
        let sender = random.next() % count;
        let receiver = (sender + 1 + random.next() % (count - 1)) % count;
        let amount = format_amount(u128::from(1 + random.next() % PAYMENT_MINOR_MAX), currency);
        let order = SendOrder {
            sender: &users[sender as usize],
            receiver: &users[receiver as usize],
            amount,
            idempotency_key: format!("load-{}-{client_index}-{sequence}", run.nonce),
        };
        sequence += 1;
        let begun = Instant::now();
        match settle(&mut client, &order, begun).await {
            Ok(state) if state.status == "completed" => {
                tally.latencies.record(begun.elapsed());
                tally.completed += 1;
            }
            Ok(state) if state.reason.is_empty() => tally.fail(&state.status),
            Ok(state) => tally.fail(&format!("{}: {}", state.status, reason_code(&state.reason))),
            Err(reason) => tally.fail(&reason),
        }
        let finished = run.finished.fetch_add(1, Ordering::Relaxed) + 1;
        if client_index == 0 && finished.is_multiple_of(64) {
            progress_of("payments", finished, run.budget.count, run.budget.started);
        }
    }
    tally
}

/// Sends the order and waits for its payment to settle (`wait_ms` in the send, or in
/// `GetPayment` after it: the server answers as soon as it has), or until
/// `PAYMENT_WAIT_MAX` passes: `Err("timed_out")`.
async fn settle(waiting: &mut Waiting, order: &SendOrder<'_>, begun: Instant) -> Result<PaymentState, String> {
    let client = &mut waiting.client;
    let send_wait = match waiting.wait {
        Wait::Send => wait_ms(PAYMENT_WAIT_MAX),
        Wait::Get => 0,
    };
    let mut state = client.send(order, send_wait).await?;
    while !state.settled() {
        let Some(left) = PAYMENT_WAIT_MAX.checked_sub(begun.elapsed()).filter(|left| !left.is_zero()) else {
            return Err("timed_out".into());
        };
        state = client.get(order.sender, &state.payment_id, left).await?;
    }
    Ok(state)
}

/// Signs up (or in) `count` users, `SETUP_PARALLEL` at a time, and funds their wallets.
async fn set_up_users(channels: &[Channel], count: usize, currency: Currency) -> Result<Vec<LoadUser>, String> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..SETUP_PARALLEL.min(count) {
        let channel = channels[worker % channels.len()].clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count as u64 {
                    return Ok::<_, String>(done);
                }
                let user = set_up_user(channel.clone(), index, currency)
                    .await
                    .map_err(|e| format!("setting up load-{index}@load.test: {e}"))?;
                done.push((index, user));
            }
        }));
    }
    let mut users = Vec::with_capacity(count);
    for worker in workers {
        users.extend(worker.await.map_err(|e| e.to_string())??);
    }
    users.sort_by_key(|(index, _)| *index);
    Ok(users.into_iter().map(|(_, user)| user).collect())
}

/// One load user: signed up or in, with a verified card and at least
/// `TOPUP_FLOOR_MINOR` in the USD wallet.
async fn set_up_user(channel: Channel, index: u64, currency: Currency) -> Result<LoadUser, String> {
    let mut users = wire::users_client::UsersClient::new(channel.clone());
    let email = format!("load-{index}@load.test");
    let register = wire::RegisterRequest {
        name: format!("Load User {index}"),
        email: email.clone(),
        password: LOAD_PASSWORD.into(),
    };
    match users.register(register).await {
        Ok(_) => {}
        Err(status) if status.code() == tonic::Code::AlreadyExists => {}
        Err(status) => return Err(status_text(status)),
    }
    let login = wire::LoginRequest { email, password: LOAD_PASSWORD.into(), ..Default::default() };
    let session = users.login(login).await.map_err(status_text)?.into_inner();
    let bearer: MetadataValue<Ascii> = format!("Bearer {}", session.session_token)
        .parse()
        .map_err(|_| "the server's session token is not header text".to_string())?;
    let user = LoadUser { user_id: session.user_id, token: session.session_token, bearer };

    let instruments =
        users.list_instruments(as_user(wire::UserRequest::default(), &user)).await.map_err(status_text)?.into_inner();
    let verified_card = instruments
        .instruments
        .iter()
        .find(|i| i.kind == wire::InstrumentKind::Card as i32 && i.status == wire::InstrumentStatus::Verified as i32);
    let card = match verified_card {
        Some(card) => card.instrument_id.clone(),
        None => {
            let request = wire::AddCardRequest {
                user_id: String::new(),
                number: TEST_CARD_NUMBER.into(),
                exp_month: 12,
                exp_year: 2035,
                cvv: TEST_CARD_CVV.into(),
                holder_name: String::new(),
            };
            let added = users.add_card(as_user(request, &user)).await.map_err(status_text)?.into_inner();
            let card = added.instrument.ok_or("the server answered AddCard without the instrument")?;
            if card.status != wire::InstrumentStatus::Verified as i32 {
                return Err(format!("the test card {} is not verified", card.instrument_id));
            }
            card.instrument_id
        }
    };

    let wallets =
        users.list_wallets(as_user(wire::UserRequest::default(), &user)).await.map_err(status_text)?.into_inner();
    let available = match wallets.wallets.iter().find(|w| w.currency == LOAD_CURRENCY) {
        Some(wallet) => wallet_minor(&wallet.available, currency)?,
        None => 0,
    };
    if available < TOPUP_FLOOR_MINOR {
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(|e| format!("no random bytes for a top-up key: {e}"))?;
        let request = wire::TopUpRequest {
            idempotency_key: ledger_core::chain::to_hex(&key),
            amount: format_amount(TOPUP_MINOR, currency),
            currency: LOAD_CURRENCY.into(),
            instrument_id: card,
        };
        let mut payments = wire::payments_client::PaymentsClient::new(channel);
        let mut state =
            PaymentState::of(payments.top_up(as_user(request, &user)).await.map_err(status_text)?.get_ref());
        let begun = Instant::now();
        let mut pause = POLL_PAUSE_FIRST;
        while !state.settled() && begun.elapsed() < PAYMENT_WAIT_MAX {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_PAUSE_MAX * 4);
            let request = wire::GetPaymentRequest { payment_id: state.payment_id.clone(), ..Default::default() };
            state =
                PaymentState::of(payments.get_payment(as_user(request, &user)).await.map_err(status_text)?.get_ref());
        }
        if state.status != "completed" {
            return Err(format!("top-up {} ended {} {}", state.payment_id, state.status, state.reason));
        }
    }
    Ok(user)
}

/// A wallet's balance as the server shows it (major units, "0.00" when empty) in minor units.
fn wallet_minor(text: &str, currency: Currency) -> Result<u128, String> {
    let is_zero = !text.is_empty()
        && text.bytes().all(|b| b == b'0' || b == b'.')
        && text.bytes().filter(|b| *b == b'.').count() <= 1
        && !text.starts_with('.');
    if is_zero {
        return Ok(0);
    }
    parse_amount(text, currency).map_err(|e| format!("the server sent wallet balance {text:?}: {e}"))
}

fn report(json: bool, args: &PaymentsLoadArgs, shape: &RunShape, tally: &Tally, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    let per_sec = tally.completed as f64 / seconds.max(1e-9);
    let (p50, p99, p999) = tally.latencies.p50_p99_p999_ms();
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "transport": args.transport.word(), "wait": args.wait.word(), "clients": shape.clients, "users": args.users,
                "duration_s": (seconds * 1e3).round() / 1e3, "payments_per_sec": per_sec.round(),
                "p50_ms": p50, "p99_ms": p99, "p999_ms": p999,
                "completed": tally.completed, "failed": tally.failed, "failures": tally.reasons, "seed": args.seed,
            })
        );
        return;
    }
    outln!(
        "{} payments completed, {} failed, in {seconds:.2} s: {} clients over {} (waiting in {}), {} users",
        tally.completed,
        tally.failed,
        shape.clients,
        args.transport.word(),
        args.wait.word(),
        args.users
    );
    outln!("throughput: {per_sec:.0} payments/s (completed)");
    outln!("send to completed: p50 {p50:.2} ms, p99 {p99:.2} ms, p999 {p999:.2} ms");
    for (reason, count) in &tally.reasons {
        outln!("  failed {count}: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_ordered_and_tight() {
        let mut previous = 0;
        for micros in [0u64, 1, 63, 64, 65, 127, 128, 129, 1_000, 4_095, 4_096, 65_535, 1 << 30, HISTOGRAM_MICROS_MAX] {
            let index = Histogram::bucket(micros);
            assert!(index < HISTOGRAM_BUCKETS, "{micros}");
            assert!(index >= previous, "{micros}");
            previous = index;
            let top = Histogram::bucket_top(index);
            assert!(top >= micros, "{micros} above its bucket's top {top}");
            assert!((top - micros) as f64 <= micros as f64 / SUB_BUCKETS as f64 + 1.0, "{micros}: {top}");
            assert_eq!(Histogram::bucket(top), index, "{micros}");
            if top < HISTOGRAM_MICROS_MAX {
                assert_eq!(Histogram::bucket(top + 1), index + 1, "{micros}");
            }
        }
        assert_eq!(Histogram::bucket(u64::MAX), HISTOGRAM_BUCKETS - 1);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile_ms(0.5), 0.0);
        for ms in 1..=1_000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.percentile_ms(0.5);
        assert!((500.0..=508.0).contains(&p50), "{p50}");
        let p999 = h.percentile_ms(0.999);
        assert!((999.0..=1_000.0).contains(&p999), "{p999}");
        assert_eq!(h.percentile_ms(1.0), 1_000.0);
        let mut other = Histogram::new();
        other.record(Duration::from_secs(5));
        h.merge(&other);
        assert_eq!(h.percentile_ms(1.0), 5_000.0);
    }

    #[test]
    fn failure_reasons_are_bounded() {
        let mut tally = Tally::new();
        for n in 0..100 {
            tally.fail(&format!("reason {n}"));
        }
        tally.fail(&"x".repeat(500));
        assert_eq!(tally.failed, 101);
        assert_eq!(tally.reasons.len(), FAILURE_REASONS_MAX + 1);
        assert_eq!(tally.reasons["other"], 101 - FAILURE_REASONS_MAX as u64);
        let mut merged = Tally::new();
        merged.merge(tally);
        assert_eq!(merged.failed, 101);
        assert_eq!(merged.reasons.len(), FAILURE_REASONS_MAX + 1);
    }

    #[test]
    fn reasons_count_by_kind() {
        assert_eq!(
            reason_code("blocked: velocity_user_hour: 31 payments in the last hour"),
            "blocked: velocity_user_hour"
        );
        assert_eq!(reason_code("declined"), "declined");
        assert_eq!(reason_code("compensated: declined"), "compensated: declined");
        assert_eq!(reason_code("debits would exceed credits"), "debits would exceed credits");
        assert_eq!(reason_code(""), "");
    }

    #[test]
    fn wallet_balances_in_minor_units() {
        let usd = Currency::parse("USD").expect("usd");
        assert_eq!(wallet_minor("0.00", usd), Ok(0));
        assert_eq!(wallet_minor("0", usd), Ok(0));
        assert_eq!(wallet_minor("400.00", usd), Ok(40_000));
        assert!(wallet_minor("", usd).is_err());
        assert!(wallet_minor("-1.00", usd).is_err());
        assert!(wallet_minor("0.0.0", usd).is_err());
    }
}
