//! A seeded, deterministic simulator of the ledger engine, in the spirit of
//! TigerBeetle's VOPR: one process, a simulated clock, and the real writer (with its
//! snapshots), embedded store and read models on the simulated disk
//! (`ledger_engine::store::sim_disk`).
//! A random workload runs through several lives; each life ends in a power loss (at a
//! random mutating disk call, or at its end), in disk faults (EIO or ENOSPC on writes
//! and syncs), or in a clean stop. After every start the engine is checked against the
//! independent reference model (`crate::reference_model`):
//!
//! - every acknowledged request is in the ledger, with the results the model gives;
//! - a request whose answer was lost is either wholly in the ledger or wholly absent
//!   (the recovered ledger equals the model with it, or the model without it), and a
//!   retry never applies anything twice;
//! - every account's balances and every transfer in the ledger equal the model's;
//! - the read models, caught up, hold the model's balances;
//! - the whole log passes the auditor's independent replay (chains and double entry).
//!
//! Runs are deterministic: the seed decides every workload choice, when the power goes
//! off and what a crash keeps, and every step waits for its answer, so the threads of
//! the engine never race each other. Each run returns a digest of everything it saw;
//! the same seed gives the same digest. A failing seed is printed with the command that
//! replays it (`vopr --seed N`).

pub mod workload;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ledger_core::clock::Clock;
use ledger_core::domain::*;
use ledger_engine::store::disk::Disk;
use ledger_engine::store::embedded::{EmbeddedOptions, EmbeddedStore};
use ledger_engine::store::sim_disk::{Faults, SimDisk};
use ledger_engine::store::EventStore;
use ledger_engine::writer::{Ledger, LedgerConfig};
use projections::read_models::{open_over_log_on, ProjectionError, ReadModels};

use crate::reference_model::Model;
use workload::{Request, Step, Workload, ACCOUNT_IDS, SENT_REMEMBERED};

/// 2023-11-14, as the other clock tests start.
const START_NS: u64 = 1_700_000_000_000_000_000;
/// Read-model page cache in the simulator, in bytes.
const READ_MODEL_CACHE_BYTES: usize = 4 << 20;
/// Events per read of a catch-up.
const CATCH_UP_BATCH_EVENTS: usize = 64;

fn log_dir() -> PathBuf {
    PathBuf::from("/sim/data/log")
}

fn snapshot_dir() -> PathBuf {
    PathBuf::from("/sim/data/snapshots")
}

fn read_models_path() -> PathBuf {
    PathBuf::from("/sim/data/projections/read-models.redb")
}

/// The simulator's clock: moves only when a step moves it, and never wakes a sleeper
/// (holds expire at the next request, so runs do not depend on thread timing).
#[derive(Debug)]
pub struct SimClock(AtomicU64);

impl Clock for SimClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn real_wait_until(&self, _at_ns: u64) -> Option<Duration> {
        None
    }
}

/// The size of a run.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Starts of the engine per run.
    pub lives: usize,
    /// Steps per life, at most (a fault ends a life early).
    pub steps_per_life: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { lives: 8, steps_per_life: 60 }
    }
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub steps: u64,
    pub requests: u64,
    /// Transfers the ledger acknowledged as created.
    pub transfers_created: u64,
    pub power_losses: u64,
    pub clean_stops: u64,
    /// Requests whose answer was lost and that were found in the ledger after recovery.
    pub unanswered_landed: u64,
    /// Requests whose answer was lost and that were not.
    pub unanswered_lost: u64,
    /// Holds the model saw expire.
    pub expiries: u64,
    /// Write and sync errors the disk injected.
    pub disk_errors: u64,
    /// Starts that found a snapshot on disk (the ledger's state loads from the newest
    /// one that matches the log, then replays the rest).
    pub starts_with_snapshots: u64,
    /// Starts that found the read models' file damaged (and rebuilt them from the log).
    pub read_models_damaged: u64,
    pub events_in_log: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.steps += other.steps;
        self.requests += other.requests;
        self.transfers_created += other.transfers_created;
        self.power_losses += other.power_losses;
        self.clean_stops += other.clean_stops;
        self.unanswered_landed += other.unanswered_landed;
        self.unanswered_lost += other.unanswered_lost;
        self.expiries += other.expiries;
        self.disk_errors += other.disk_errors;
        self.read_models_damaged += other.read_models_damaged;
        self.starts_with_snapshots += other.starts_with_snapshots;
        self.events_in_log += other.events_in_log;
    }
}

/// A finished run: its digest (equal for equal seeds) and what it did.
#[derive(Clone, Debug)]
pub struct Finished {
    pub digest: String,
    pub stats: Stats,
}

/// A run that found the engine and the model apart, or the engine broken.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub life: usize,
    pub step: usize,
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed in life {} at step {}: {}\nreplay: cargo run --release -p ledger-tests --bin vopr -- --seed {}",
            self.seed, self.life, self.step, self.reason, self.seed
        )
    }
}

/// How a life ends.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// The power goes off at this mutating disk call (if the life gets that far).
    PowerOffAt(u64),
    /// Writes and syncs fail now and then; the power goes off at the end.
    DiskErrors,
    /// The power goes off after the last step.
    PowerOffAtEnd,
    /// Everything is closed in order: no crash.
    CleanStop,
}

/// Every account and every transfer id used so far as the ledger has them (index = id).
type Seen = (Vec<Option<Account>>, Vec<Option<Transfer>>);

/// The engine of one life.
struct Node {
    store: Arc<EmbeddedStore>,
    ledger: Ledger,
    models: ReadModels,
}

/// A request sent without an answer: it may or may not be in the log.
struct Unanswered {
    request: Request,
    /// The model before it, with the holds due when it was sent expired.
    before: Model,
}

struct Sim {
    config: Config,
    disk: SimDisk,
    clock: Arc<SimClock>,
    workload: Workload,
    model: Model,
    sent: Vec<Request>,
    unanswered: Option<Unanswered>,
    segment_bytes_max: u64,
    /// Events between snapshots of the ledger's state (written on the committer's
    /// thread, through the simulated disk).
    snapshot_interval_events: u64,
    trace: blake3::Hasher,
    stats: Stats,
    life: usize,
    step: usize,
}

/// Runs the simulation of `seed`.
pub fn run(seed: u64, config: Config) -> Result<Finished, Failure> {
    let mut workload = Workload::new(seed);
    let segment_bytes_max = 512 + workload.rng().below(16 << 10);
    let snapshot_interval_events = 5 + workload.rng().below(60);
    let mut sim = Sim {
        config,
        disk: SimDisk::new(seed),
        clock: Arc::new(SimClock(AtomicU64::new(START_NS))),
        workload,
        model: Model::default(),
        sent: Vec::new(),
        unanswered: None,
        segment_bytes_max,
        snapshot_interval_events,
        trace: blake3::Hasher::new(),
        stats: Stats::default(),
        life: 0,
        step: 0,
    };
    let result = sim.run_lives();
    result.map_err(|reason| Failure { seed, life: sim.life, step: sim.step, reason })?;
    Ok(Finished { digest: sim.trace.finalize().to_hex().to_string(), stats: sim.stats })
}

impl Sim {
    fn record(&mut self, what: impl std::fmt::Debug) {
        self.trace.update(format!("{what:?}\n").as_bytes());
    }

    fn run_lives(&mut self) -> Result<(), String> {
        for life in 0..self.config.lives {
            self.life = life;
            self.step = 0;
            let node = self.start()?;
            self.recover(&node)?;
            let ending = self.choose_ending();
            self.record(("life", life, ending));
            match ending {
                Ending::PowerOffAt(call) => self.disk.power_off_after(call),
                Ending::DiskErrors => self.disk.set_faults(Faults {
                    write_eio_ppm: 3_000,
                    write_enospc_ppm: 2_000,
                    sync_eio_ppm: 5_000,
                    ..Faults::default()
                }),
                Ending::PowerOffAtEnd | Ending::CleanStop => {}
            }
            let failed = self.live(&node)?;
            self.stats.disk_errors = {
                let counts = self.disk.fault_counts();
                counts.write_errors + counts.sync_errors
            };
            self.disk.set_faults(Faults::default());
            if matches!(ending, Ending::CleanStop) && !failed {
                node.ledger.close();
                node.store.close();
                node.models.sync().map_err(|e| format!("read models: final sync: {e}"))?;
                drop(node);
                self.stats.clean_stops += 1;
            } else {
                self.power_loss(node);
            }
        }
        // A last start: everything the last life acknowledged must be there too.
        self.life = self.config.lives;
        let node = self.start()?;
        self.recover(&node)?;
        self.stats.events_in_log = *node.store.watch_head().borrow();
        node.ledger.close();
        node.store.close();
        Ok(())
    }

    fn choose_ending(&mut self) -> Ending {
        let calls_per_life = self.config.steps_per_life as u64 * 6;
        let rng = self.workload.rng();
        match rng.below(10) {
            0..=4 => Ending::PowerOffAt(rng.below(calls_per_life.max(1))),
            5..=6 => Ending::DiskErrors,
            7 => Ending::PowerOffAtEnd,
            _ => Ending::CleanStop,
        }
    }

    /// Power loss: every later disk call fails, the engine's threads are stopped (their
    /// last calls fail too), and the disk keeps what a crash may keep.
    fn power_loss(&mut self, node: Node) {
        self.disk.power_off_after(0);
        node.ledger.close();
        node.store.close();
        drop(node);
        self.disk.crash();
        self.stats.power_losses += 1;
    }

    /// Opens the store, the writer and the read models on the disk as it is.
    fn start(&mut self) -> Result<Node, String> {
        let disk: Arc<dyn Disk> = Arc::new(self.disk.clone());
        let options = EmbeddedOptions {
            segment_bytes_max: self.segment_bytes_max,
            seal_in_background: false,
            seals_in_memory: 2,
        };
        let (store, report) =
            EmbeddedStore::open_on(disk.clone(), log_dir(), options).map_err(|e| format!("open the store: {e}"))?;
        self.record(("opened", report.records, report.segments, report.torn_tail.is_some()));
        // ok: no snapshot directory yet (a first start) holds no snapshot.
        let snapshots = disk.list_dir(&snapshot_dir()).unwrap_or_default();
        self.stats.starts_with_snapshots += u64::from(snapshots.iter().any(|name| name.ends_with(".snap")));
        let store = Arc::new(store);
        let config = LedgerConfig {
            clock: self.clock.clone(),
            disk: disk.clone(),
            snapshot_dir: Some(snapshot_dir()),
            snapshot_interval_events: self.snapshot_interval_events,
            snapshots_in_background: false,
            ..LedgerConfig::default()
        };
        let ledger = Ledger::open(store.clone(), config).map_err(|e| format!("open the ledger: {e}"))?;
        let torn_tail_cut = report.torn_tail.is_some();
        let open =
            |disk| open_over_log_on(disk, &read_models_path(), READ_MODEL_CACHE_BYTES, store.as_ref(), torn_tail_cut);
        let models = match open(disk.clone()) {
            Err(ProjectionError::Damaged { reason, .. }) => {
                // As `ledgerd` does: a damaged file is put aside and rebuilt from the log.
                self.record(("read models damaged", &reason));
                self.stats.read_models_damaged += 1;
                disk.remove_file(&read_models_path()).map_err(|e| format!("remove the damaged read models: {e}"))?;
                open(disk)
            }
            other => other,
        }
        .map_err(|e| format!("open the read models: {e}"))?;
        Ok(Node { store, ledger, models })
    }

    /// After a start: settles the unanswered request, then checks everything.
    fn recover(&mut self, node: &Node) -> Result<(), String> {
        let (accounts, transfers) = self.read_everything(node)?;
        if let Some(unanswered) = self.unanswered.take() {
            let mut landed = unanswered.before.clone();
            match &unanswered.request {
                Request::Accounts(commands) => {
                    for command in commands {
                        landed.account(command);
                    }
                }
                Request::Transfers(batch) => {
                    // Created transfers carry the ledger's timestamps (expiry needs them).
                    let stamps: Vec<Option<u64>> = batch
                        .iter()
                        .map(|t| {
                            transfers.get(t.id.0 as usize).and_then(|found| found.as_ref()).map(|f| f.timestamp_ns)
                        })
                        .collect();
                    landed.transfers(batch, &stamps);
                }
            }
            let now = self.clock.now_ns();
            landed.expire(now);
            let mut lost = unanswered.before;
            lost.expire(now);
            let as_landed = differences(&landed, &accounts, &transfers);
            let as_lost = differences(&lost, &accounts, &transfers);
            self.model = match (as_landed, as_lost) {
                (None, _) => {
                    self.stats.unanswered_landed += 1;
                    landed
                }
                (Some(_), None) => {
                    self.stats.unanswered_lost += 1;
                    lost
                }
                (Some(landed), Some(lost)) => {
                    return Err(format!(
                        "after recovery the ledger is neither the model with the unanswered request \
                         {:?} ({landed}) nor without it ({lost})",
                        unanswered.request
                    ))
                }
            };
            self.record(("unanswered", self.stats.unanswered_landed, self.stats.unanswered_lost));
        } else {
            self.model.expire(self.clock.now_ns());
            if let Some(difference) = differences(&self.model, &accounts, &transfers) {
                return Err(format!("after recovery: {difference}"));
            }
        }
        self.catch_up_and_compare(node, true)?;
        let report = ledger_engine::audit::verify_store(node.store.as_ref())
            .map_err(|e| format!("the audit of the recovered log failed: {e}"))?;
        if (report.accounts, report.transfers) != (self.model.accounts.len(), self.model.transfers.len()) {
            return Err(format!(
                "the audit counts {} accounts and {} transfers, the model {} and {}",
                report.accounts,
                report.transfers,
                self.model.accounts.len(),
                self.model.transfers.len()
            ));
        }
        self.record(("audit", report.events_checked));
        Ok(())
    }

    /// Every account and every transfer id used so far, from the writer (which expires
    /// due holds first, as for any request). Index = id.
    fn read_everything(&mut self, node: &Node) -> Result<Seen, String> {
        let account_ids = (0..=ACCOUNT_IDS).map(AccountId).collect();
        let transfer_ids = (0..self.workload.next_transfer_id).map(TransferId).collect();
        let accounts = node.ledger.lookup_accounts_blocking(account_ids).map_err(|e| format!("lookup: {e}"))?;
        let transfers = node.ledger.lookup_transfers_blocking(transfer_ids).map_err(|e| format!("lookup: {e}"))?;
        Ok((accounts, transfers))
    }

    /// One life's steps; `Ok(true)` when a fault ended it early.
    fn live(&mut self, node: &Node) -> Result<bool, String> {
        for step in 0..self.config.steps_per_life {
            self.step = step;
            self.stats.steps += 1;
            let next = self.workload.step(&self.model, self.sent.len());
            match self.take(node, next)? {
                ControlFlow::Continue(()) => {}
                ControlFlow::Break(()) => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Runs one step; `Break` when a fault stopped the engine (then the life ends).
    fn take(&mut self, node: &Node, step: Step) -> Result<ControlFlow<()>, String> {
        match step {
            Step::Send(request) => self.send(node, request),
            Step::Resend(index) => {
                let request = self.sent[index].clone();
                self.send(node, request)
            }
            Step::Lookup => {
                self.model = self.expired_model();
                match self.read_everything(node) {
                    Ok((accounts, transfers)) => match differences(&self.model, &accounts, &transfers) {
                        None => Ok(ControlFlow::Continue(())),
                        Some(difference) => Err(format!("a read differs from the model: {difference}")),
                    },
                    Err(error) => {
                        // The expiries of this read were being appended when the disk
                        // failed: they are done again by the next request after restart.
                        self.record(("lookup failed", &error));
                        Ok(ControlFlow::Break(()))
                    }
                }
            }
            Step::CatchUp { durable } => match self.catch_up_and_compare(node, durable) {
                Ok(()) => Ok(ControlFlow::Continue(())),
                Err(error) if self.disk_failing(node) => {
                    self.record(("catch-up failed", error));
                    Ok(ControlFlow::Break(()))
                }
                Err(error) => Err(error),
            },
            Step::Advance(ns) => {
                self.clock.0.fetch_add(ns, Ordering::SeqCst);
                self.record(("advance", ns));
                Ok(ControlFlow::Continue(()))
            }
        }
    }

    /// The model with the holds due now expired, as the writer does first for any
    /// request (counted in the stats).
    fn expired_model(&mut self) -> Model {
        let expired = |model: &Model| model.transfers.values().filter(|t| t.status == Some("expired")).count();
        let mut model = self.model.clone();
        model.expire(self.clock.now_ns());
        self.stats.expiries += (expired(&model) - expired(&self.model)) as u64;
        model
    }

    /// Whether the disk is failing now (power off or an injected error happened).
    fn disk_failing(&self, node: &Node) -> bool {
        let counts = self.disk.fault_counts();
        counts.write_errors + counts.sync_errors > self.stats.disk_errors
            || node.ledger.failure().is_some()
            || self.disk.powered_off()
    }

    /// Sends `request` to the writer; an answer is compared with the model, no answer
    /// leaves the request unanswered (settled after the next start).
    fn send(&mut self, node: &Node, request: Request) -> Result<ControlFlow<()>, String> {
        self.stats.requests += 1;
        let before = self.expired_model();
        if self.sent.len() == SENT_REMEMBERED {
            self.sent.remove(0);
        }
        self.sent.push(request.clone());
        let answer = match &request {
            Request::Accounts(commands) => node.ledger.create_accounts_blocking(commands.clone()).map(|results| {
                results.iter().map(|r| r.as_ref().map(|_| None).map_err(|e| format!("{e:?}"))).collect()
            }),
            Request::Transfers(batch) => node.ledger.create_transfers_blocking(batch.clone()).map(|results| {
                results
                    .iter()
                    .map(|r| match r {
                        Ok(Outcome::Created { timestamp_ns }) => Ok(Some(*timestamp_ns)),
                        Ok(Outcome::AlreadyExists { .. }) => Ok(None),
                        Err(e) => Err(format!("{e:?}")),
                    })
                    .collect::<Vec<Result<Option<u64>, String>>>()
            }),
        };
        let results = match answer {
            Ok(results) => results,
            Err(error) => {
                self.record(("unanswered", &request, error.to_string()));
                self.unanswered = Some(Unanswered { request, before });
                // After a failed append nothing more may be acknowledged.
                let probe = node.ledger.create_accounts_blocking(Vec::new());
                if probe.is_ok() && node.ledger.failure().is_none() {
                    return Err("the writer answered a request after an append failed".into());
                }
                return Ok(ControlFlow::Break(()));
            }
        };
        self.record(("answered", &request, &results));
        self.model = before;
        let expected: Vec<bool> = match &request {
            Request::Accounts(commands) => commands.iter().map(|c| self.model.account(c)).collect(),
            Request::Transfers(batch) => {
                let stamps: Vec<Option<u64>> = results.iter().map(|r| r.clone().ok().flatten()).collect();
                self.stats.transfers_created += stamps.iter().flatten().count() as u64;
                self.model.transfers(batch, &stamps)
            }
        };
        let ours: Vec<bool> = results.iter().map(Result::is_ok).collect();
        if ours != expected {
            return Err(format!("{request:?} answered {results:?}; the model expects success {expected:?}"));
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Applies the log to the read models and compares every account's balances.
    fn catch_up_and_compare(&mut self, node: &Node, durable: bool) -> Result<(), String> {
        let applied =
            projections::worker::catch_up(&node.models, node.store.as_ref(), CATCH_UP_BATCH_EVENTS, durable, |_, _| {
                ControlFlow::Continue(())
            })
            .map_err(|e| format!("read models: catch-up: {e}"))?;
        self.record(("caught up", applied));
        for id in 1..=ACCOUNT_IDS {
            let view = node.models.account(id).map_err(|e| format!("read models: account {id}: {e}"))?;
            let ours = view.map(|v| {
                let b = v.balances;
                (b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted)
            });
            let theirs = self.model.accounts.get(&AccountId(id)).map(|a| (a.dp, a.dpost, a.cp, a.cpost));
            if ours != theirs {
                return Err(format!("read models: account {id} has {ours:?}, the model {theirs:?}"));
            }
        }
        Ok(())
    }
}

/// The first difference between the model and what the ledger holds, if any.
fn differences(model: &Model, accounts: &[Option<Account>], transfers: &[Option<Transfer>]) -> Option<String> {
    for (id, account) in accounts.iter().enumerate() {
        let ours =
            account.as_ref().map(|a| (a.state, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted));
        let theirs = model.accounts.get(&AccountId(id as u128)).map(|a| (a.state, a.dp, a.dpost, a.cp, a.cpost));
        if ours != theirs {
            return Some(format!("account {id}: ledger {ours:?}, model {theirs:?}"));
        }
    }
    for (id, transfer) in transfers.iter().enumerate() {
        let ours = transfer.as_ref().map(|t| {
            let status = t.pending_status.map(|status| match status {
                PendingStatus::Pending => "pending",
                PendingStatus::Posted { .. } => "posted",
                PendingStatus::Voided { .. } => "voided",
                PendingStatus::Expired => "expired",
            });
            (t.movement.debit_account_id, t.movement.credit_account_id, t.movement.amount, status)
        });
        let theirs = model.transfers.get(&TransferId(id as u128)).map(|t| (t.debit, t.credit, t.amount, t.status));
        if ours != theirs {
            return Some(format!("transfer {id}: ledger {ours:?}, model {theirs:?}"));
        }
    }
    if model.transfers.keys().any(|id| id.0 as usize >= transfers.len()) {
        return Some("the model holds a transfer id the ledger was not asked about".into());
    }
    None
}
