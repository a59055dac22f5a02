//! Payment rails: the `PaymentRail` port a real provider integration implements, the
//! sandbox rails (bank transfer, card, digital wallet) that stand in for providers
//! here. The gRPC client of a sandbox served by another process is an adapter of the
//! server crate.
//!
//! Sandbox behaviour, like a provider's test mode:
//! - Every operation runs at most once per idempotency key; a repeat gets the first
//!   result (a duplicate request is harmless).
//! - Cards and digital wallets answer at once; bank collections and payouts answer
//!   `pending` and settle after `settle` (then `Status` says succeeded or failed).
//! - Magic amounts (minor units mod 100): 13 is declined; 14 fails (a bank transfer at
//!   settlement); 15 declines a card capture (the authorization passes).
//! - Faults, each with a probability: `decline_rate` (declined), `timeout_rate` (the
//!   operation runs but the reply comes after the caller's deadline: a late reply),
//!   `drop_rate` (the request is lost: nothing runs, no reply), `duplicate_rate` (the
//!   request is delivered twice), plus a fixed `latency`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::random::RandomError;

/// An operation on a rail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RailOperation {
    pub rail: String,
    pub operation: String,
    pub idempotency_key: String,
    pub amount: u64,
    pub currency: String,
    pub instrument: String,
    pub parent_key: String,
}

/// What a rail says of an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RailStatus {
    Succeeded(String),
    Pending,
    /// Terminal: the rail refused or the money did not move.
    Failed(String),
    /// The rail never received this idempotency key: running it is safe.
    NotFound,
}

/// A transport or provider error: retriable (the outcome of an operation it hit is
/// unknown and must be asked for).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rail unavailable: {0}")]
pub struct RailError(pub String);

#[async_trait::async_trait]
pub trait PaymentRail: Send + Sync {
    async fn execute(&self, operation: RailOperation) -> Result<RailStatus, RailError>;
    async fn status(&self, idempotency_key: &str) -> Result<RailStatus, RailError>;
}

#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub latency: Duration,
    pub settle: Duration,
    pub decline_rate: f64,
    pub timeout_rate: f64,
    pub drop_rate: f64,
    pub duplicate_rate: f64,
    /// How late a late reply comes.
    pub late_by: Duration,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            latency: Duration::ZERO,
            settle: Duration::from_millis(200),
            decline_rate: 0.0,
            timeout_rate: 0.0,
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            late_by: Duration::from_secs(3),
        }
    }
}

struct Recorded {
    operation: RailOperation,
    settles_at: Option<Instant>,
    outcome: Result<String, String>,
}

/// The sandbox provider: in memory, like a provider's test environment.
pub struct SandboxRails {
    faults: Faults,
    operations: Mutex<HashMap<String, Recorded>>,
    random: Mutex<u64>,
}

impl SandboxRails {
    /// Rails whose fault draws are seeded from the OS.
    pub fn new(faults: Faults) -> Result<SandboxRails, RandomError> {
        let seed: [u8; 8] = crate::random::bytes()?;
        Ok(SandboxRails::with_seed(faults, u64::from_le_bytes(seed)))
    }

    /// Rails whose fault draws follow `seed`: the same seed and the same calls in the
    /// same order draw the same faults, so a failing fault run can be replayed.
    pub fn with_seed(faults: Faults, seed: u64) -> SandboxRails {
        SandboxRails { faults, operations: Mutex::new(HashMap::new()), random: Mutex::new(seed | 1) }
    }

    /// A number in [0, 1) (xorshift64*: a sandbox needs variety, not secrecy).
    fn chance(&self) -> f64 {
        let mut x = self.random.lock().unwrap_or_else(|p| p.into_inner());
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn reply(recorded: &Recorded) -> RailStatus {
        if recorded.settles_at.is_some_and(|t| Instant::now() < t) {
            return RailStatus::Pending;
        }
        match &recorded.outcome {
            Ok(reference) => RailStatus::Succeeded(reference.clone()),
            Err(reason) => RailStatus::Failed(reason.clone()),
        }
    }

    /// Runs the operation (once per key) and says what the rail answers.
    fn run(&self, operation: &RailOperation) -> RailStatus {
        let mut operations = self.operations.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(recorded) = operations.get(&operation.idempotency_key) {
            if recorded.operation != *operation {
                return RailStatus::Failed("idempotency key reused with a different operation".into());
            }
            return Self::reply(recorded);
        }
        let magic = operation.amount % 100;
        let declined = magic == 13
            || (magic == 15 && operation.operation == "capture")
            || (matches!(operation.operation.as_str(), "collect" | "authorize" | "payout")
                && self.chance() < self.faults.decline_rate);
        let parent_ok = match operation.operation.as_str() {
            "capture" | "void" => operations.get(&operation.parent_key).is_some_and(|p| p.outcome.is_ok()),
            _ => true,
        };
        let outcome = if !parent_ok {
            Err("no such authorization".to_string())
        } else if declined {
            Err("declined".to_string())
        } else if magic == 14 && operation.operation != "refund" && operation.operation != "void" {
            Err("failed".to_string())
        } else {
            Ok(format!("{}-{}", operation.rail, operations.len() + 1))
        };
        let slow = operation.rail == "bank_account" && matches!(operation.operation.as_str(), "collect" | "payout");
        let settles_at = slow.then(|| Instant::now() + self.faults.settle);
        let recorded = Recorded { operation: operation.clone(), settles_at, outcome };
        let reply = Self::reply(&recorded);
        operations.insert(operation.idempotency_key.clone(), recorded);
        reply
    }

    fn lookup(&self, key: &str) -> RailStatus {
        let operations = self.operations.lock().unwrap_or_else(|p| p.into_inner());
        operations.get(key).map_or(RailStatus::NotFound, Self::reply)
    }
}

#[async_trait::async_trait]
impl PaymentRail for SandboxRails {
    async fn execute(&self, operation: RailOperation) -> Result<RailStatus, RailError> {
        if !self.faults.latency.is_zero() {
            tokio::time::sleep(self.faults.latency).await;
        }
        if self.chance() < self.faults.drop_rate {
            tokio::time::sleep(self.faults.late_by).await;
            return Err(RailError("no reply".into()));
        }
        let mut reply = self.run(&operation);
        if self.chance() < self.faults.duplicate_rate {
            // The same request arrives again: the idempotency key makes it a repeat.
            let again = self.run(&operation);
            if again != reply && again != RailStatus::Pending {
                reply = again;
            }
        }
        if self.chance() < self.faults.timeout_rate {
            tokio::time::sleep(self.faults.late_by).await;
        }
        Ok(reply)
    }

    async fn status(&self, idempotency_key: &str) -> Result<RailStatus, RailError> {
        if !self.faults.latency.is_zero() {
            tokio::time::sleep(self.faults.latency).await;
        }
        Ok(self.lookup(idempotency_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(operation: &str, key: &str, amount: u64) -> RailOperation {
        RailOperation {
            rail: "card".into(),
            operation: operation.into(),
            idempotency_key: key.into(),
            amount,
            currency: "USD".into(),
            instrument: "tok_x".into(),
            parent_key: "a".into(),
        }
    }

    #[tokio::test]
    async fn once_per_key_magic_amounts_and_settlement() {
        let rails =
            SandboxRails::new(Faults { settle: Duration::from_millis(50), ..Faults::default() }).expect("rails");
        let first = rails.execute(op("authorize", "a", 1000)).await.expect("reply");
        assert!(matches!(first, RailStatus::Succeeded(_)));
        assert_eq!(rails.execute(op("authorize", "a", 1000)).await.expect("repeat"), first);
        assert!(
            matches!(rails.execute(op("authorize", "a", 999)).await, Ok(RailStatus::Failed(_))),
            "same key, other op"
        );
        assert_eq!(rails.execute(op("authorize", "b", 1013)).await, Ok(RailStatus::Failed("declined".into())));
        assert!(matches!(rails.execute(op("capture", "c", 1015)).await, Ok(RailStatus::Failed(_))));
        assert_eq!(rails.status("never").await, Ok(RailStatus::NotFound));
        let bank = RailOperation { rail: "bank_account".into(), ..op("collect", "d", 1014) };
        assert_eq!(rails.execute(bank).await, Ok(RailStatus::Pending));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(rails.status("d").await, Ok(RailStatus::Failed("failed".into())));
    }
}
