//! Prometheus text metrics: requests by method and code, and the ledger writer's batch
//! sizes, commit latency and queue depth; `endpoint` serves them over HTTP.
//!
//! Counting a request touches one `AtomicU64` and takes no lock: the methods the
//! services report are a fixed, sorted table found by binary search. A name outside it
//! takes one of `OTHER_METHODS_MAX` fallback slots (claimed once, then read without a
//! lock); past those, its requests count under `method="other"`, so the set of series
//! stays bounded whatever names reach `record`. Sign-ins are counted by outcome, and
//! every call answered RESOURCE_EXHAUSTED (throttled or overloaded) by service; the
//! payments platform's series are in `platform`.

pub mod endpoint;
pub mod platform;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use ledger_engine::writer::WriterMetrics;
use ledger_platform::users::sessions::SignInOutcome;

/// The gRPC methods counted, as the services name them; sorted (`binary_search`).
pub const KNOWN_METHODS: [&str; 53] = [
    "Admin/GetUser",
    "Admin/ListAccounts",
    "Admin/ListReviewQueue",
    "Admin/ListUsers",
    "CreateAccounts",
    "CreateTransfers",
    "CreateTransfersPacked",
    "Fx/ExecuteQuote",
    "Fx/GetPosition",
    "Fx/GetQuote",
    "Fx/ListRates",
    "Fx/SetRates",
    "GetBalance",
    "GetHistory",
    "GetReport",
    "ListAccountTransfers",
    "ListSignedHeads",
    "LookupAccounts",
    "LookupTransfers",
    "Payments/AnswerRequest",
    "Payments/GetPayment",
    "Payments/GetStatement",
    "Payments/ListPayments",
    "Payments/ListReviews",
    "Payments/Refund",
    "Payments/RequestMoney",
    "Payments/ReviewPayment",
    "Payments/Send",
    "Payments/TopUp",
    "Payments/Withdraw",
    "StreamEvents",
    "Users/AddBankAccount",
    "Users/AddCard",
    "Users/AddDigitalWallet",
    "Users/ChangePassword",
    "Users/ConfirmTotp",
    "Users/DeleteUser",
    "Users/DisableTotp",
    "Users/EnrollTotp",
    "Users/GetProfile",
    "Users/ListInstruments",
    "Users/ListSecurityEvents",
    "Users/ListSessions",
    "Users/ListWallets",
    "Users/Login",
    "Users/Logout",
    "Users/OpenWallet",
    "Users/Register",
    "Users/RemoveInstrument",
    "Users/RevokeSession",
    "Users/SetDefaultInstrument",
    "Users/UpdateProfile",
    "Users/VerifyInstrument",
];

/// Method names outside `KNOWN_METHODS` that get series of their own.
pub const OTHER_METHODS_MAX: usize = 32;
/// The method label of requests to names beyond `OTHER_METHODS_MAX`.
pub const OVERFLOW_METHOD: &str = "other";

/// gRPC status codes, indexed by their number (`tonic::Code as usize`).
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The services calls are throttled by: a method's prefix, `Ledger` for none.
const SERVICES: [&str; 6] = ["Admin", "Fx", "Ledger", "Payments", "Users", "other"];

/// One method's requests by status code.
type Counts = [AtomicU64; CODE_NAMES.len()];

pub struct Metrics {
    known: Box<[Counts]>,
    others: Box<[(OnceLock<&'static str>, Counts)]>,
    overflow: Counts,
    sign_ins: [AtomicU64; SignInOutcome::ALL.len()],
    throttled: [AtomicU64; SERVICES.len()],
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            known: KNOWN_METHODS.iter().map(|_| Counts::default()).collect(),
            others: (0..OTHER_METHODS_MAX).map(|_| (OnceLock::new(), Counts::default())).collect(),
            overflow: Counts::default(),
            sign_ins: Default::default(),
            throttled: Default::default(),
        }
    }
}

impl Metrics {
    pub fn record(&self, method: &'static str, code: tonic::Code) {
        // `Code` is a fieldless enum numbered 0..=16, the indices of CODE_NAMES.
        self.counts(method)[code as usize].fetch_add(1, Ordering::Relaxed);
        if code == tonic::Code::ResourceExhausted {
            let service = method.split_once('/').map_or("Ledger", |(service, _)| service);
            let index = SERVICES.iter().position(|s| *s == service).unwrap_or(SERVICES.len() - 1);
            self.throttled[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a sign-in by what it came to.
    pub fn sign_in(&self, outcome: SignInOutcome) {
        if let Some(index) = SignInOutcome::ALL.iter().position(|o| *o == outcome) {
            self.sign_ins[index].fetch_add(1, Ordering::Relaxed);
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

    /// The counters of `method`: its row of the table, a fallback slot (the one it
    /// already has, or the first free one), or the overflow row.
    fn counts(&self, method: &'static str) -> &Counts {
        if let Ok(index) = KNOWN_METHODS.binary_search(&method) {
            return &self.known[index];
        }
        for (name, counts) in self.others.iter() {
            // A free slot is claimed here; if another thread claimed it first, `get`
            // below reads the name it set.
            let _ = name.set(method);
            if name.get() == Some(&method) {
                return counts;
            }
        }
        &self.overflow
    }

    /// Every non-zero counter: (method, code, count), sorted by method and code name.
    fn requests(&self) -> Vec<(&'static str, &'static str, u64)> {
        let known = KNOWN_METHODS.iter().copied().zip(self.known.iter());
        let others = self.others.iter().filter_map(|(name, counts)| Some((*name.get()?, counts)));
        let rows = known.chain(others).chain(std::iter::once((OVERFLOW_METHOD, &self.overflow)));
        let mut requests: Vec<_> = rows
            .flat_map(|(method, counts)| {
                CODE_NAMES
                    .iter()
                    .zip(counts.iter())
                    .map(move |(code, count)| (method, *code, count.load(Ordering::Relaxed)))
            })
            .filter(|&(_, _, count)| count > 0)
            .collect();
        requests.sort_unstable();
        requests
    }

    /// The exposition text.
    pub fn render(&self, writer: &WriterMetrics) -> String {
        let mut out = String::new();
        out.push_str("# HELP ledger_requests_total gRPC requests by method and status code.\n# TYPE ledger_requests_total counter\n");
        for (method, code, count) in self.requests() {
            out.push_str(&format!("ledger_requests_total{{method=\"{method}\",code=\"{code}\"}} {count}\n"));
        }
        out.push_str("# HELP ledger_sign_ins_total Sign-ins by outcome.\n# TYPE ledger_sign_ins_total counter\n");
        for (outcome, count) in SignInOutcome::ALL.iter().zip(&self.sign_ins) {
            let count = count.load(Ordering::Relaxed);
            out.push_str(&format!("ledger_sign_ins_total{{outcome=\"{}\"}} {count}\n", outcome.as_str()));
        }
        out.push_str(
            "# HELP ledger_throttled_requests_total Calls refused with RESOURCE_EXHAUSTED (throttled or overloaded), by service.\n\
             # TYPE ledger_throttled_requests_total counter\n",
        );
        for (service, count) in SERVICES.iter().zip(&self.throttled) {
            let count = count.load(Ordering::Relaxed);
            out.push_str(&format!("ledger_throttled_requests_total{{service=\"{service}\"}} {count}\n"));
        }
        out.push_str(&writer.render());
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn the_tables_match_what_they_are_indexed_by() {
        assert!(KNOWN_METHODS.windows(2).all(|pair| pair[0] < pair[1]), "KNOWN_METHODS sorted, no repeats");
        assert!(!KNOWN_METHODS.contains(&OVERFLOW_METHOD));
        for (index, name) in CODE_NAMES.iter().enumerate() {
            let code = tonic::Code::from_i32(i32::try_from(index).expect("small"));
            assert_eq!(code as usize, index);
            assert_eq!(format!("{code:?}").to_uppercase().replace('_', ""), name.replace('_', ""));
        }
    }

    #[test]
    fn requests_are_counted_by_method_and_code_from_many_threads() {
        let metrics = Arc::new(Metrics::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        metrics.record("CreateTransfers", tonic::Code::Ok);
                        metrics.record("Unlisted/Method", tonic::Code::Unavailable);
                    }
                    metrics.record("Users/Login", tonic::Code::Unauthenticated);
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let _ = metrics.answer::<()>("GetReport", Err(tonic::Status::data_loss("damaged")));
        assert_eq!(
            metrics.requests(),
            [
                ("CreateTransfers", "OK", 4_000),
                ("GetReport", "DATA_LOSS", 1),
                ("Unlisted/Method", "UNAVAILABLE", 4_000),
                ("Users/Login", "UNAUTHENTICATED", 4),
            ]
        );
    }

    #[test]
    fn unknown_method_names_take_bounded_slots_then_count_as_other() {
        let metrics = Metrics::default();
        let names: Vec<&'static str> =
            (0..OTHER_METHODS_MAX + 10).map(|i| &*String::leak(format!("Unknown/M{i:03}"))).collect();
        for name in &names {
            metrics.record(name, tonic::Code::Ok);
            metrics.record(name, tonic::Code::Ok);
        }
        let requests = metrics.requests();
        assert_eq!(requests.len(), OTHER_METHODS_MAX + 1, "{requests:?}");
        assert!(requests.contains(&(names[0], "OK", 2)));
        assert!(requests.contains(&(names[OTHER_METHODS_MAX - 1], "OK", 2)));
        assert!(requests.contains(&(OVERFLOW_METHOD, "OK", 20)));
    }

    #[test]
    fn the_exposition_has_one_line_per_counted_series() {
        let metrics = Metrics::default();
        metrics.record("CreateAccounts", tonic::Code::Ok);
        metrics.record("CreateAccounts", tonic::Code::Unauthenticated);
        let text = metrics.render(&WriterMetrics::default());
        assert!(text.contains("# TYPE ledger_requests_total counter\n"), "{text}");
        assert!(text.contains("ledger_requests_total{method=\"CreateAccounts\",code=\"OK\"} 1\n"), "{text}");
        assert!(text.contains("ledger_requests_total{method=\"CreateAccounts\",code=\"UNAUTHENTICATED\"} 1\n"));
        assert_eq!(text.matches("ledger_requests_total{").count(), 2, "{text}");
    }
}
