//! The payments platform's series: payments finished by kind and status, rail calls by
//! rail, operation and outcome with their latency, and the review queue. Labels are
//! the platform's closed sets (`ledger_platform::payments::ops`), never ids.

use std::fmt::Write;

use ledger_platform::payments::ops::{PaymentOps, RAIL_LATENCY_BUCKETS_SECS};

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// The exposition text of the platform's series; `now_ns` dates the review queue.
pub fn render(ops: &PaymentOps, now_ns: u64) -> String {
    let mut out = String::new();
    header(&mut out, "ledger_payments_finished_total", "counter", "Payments that reached a final status, by kind.");
    for (kind, status, count) in ops.finished_counts() {
        let _ = writeln!(out, "ledger_payments_finished_total{{kind=\"{kind}\",status=\"{status}\"}} {count}");
    }
    header(
        &mut out,
        "ledger_rail_calls_total",
        "counter",
        "Calls to the payment rails by rail, operation and outcome.",
    );
    for (rail, operation, outcome, count) in ops.rail_call_counts() {
        let _ = writeln!(
            out,
            "ledger_rail_calls_total{{rail=\"{rail}\",operation=\"{operation}\",outcome=\"{outcome}\"}} {count}"
        );
    }
    header(&mut out, "ledger_rail_call_seconds", "histogram", "Latency of calls to the payment rails.");
    for latency in ops.rail_latencies() {
        let labels = format!("rail=\"{}\",operation=\"{}\"", latency.rail, latency.operation);
        for (bound, count) in RAIL_LATENCY_BUCKETS_SECS.iter().zip(&latency.cumulative) {
            let _ = writeln!(out, "ledger_rail_call_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "ledger_rail_call_seconds_bucket{{{labels},le=\"+Inf\"}} {}", latency.count);
        let _ = writeln!(out, "ledger_rail_call_seconds_sum{{{labels}}} {}", latency.sum_secs);
        let _ = writeln!(out, "ledger_rail_call_seconds_count{{{labels}}} {}", latency.count);
    }
    let (length, oldest) = ops.review_queue();
    let oldest_secs = oldest.map_or(0, |since| now_ns.saturating_sub(since) / 1_000_000_000);
    header(&mut out, "ledger_review_queue_length", "gauge", "Payments waiting for a review.");
    let _ = writeln!(out, "ledger_review_queue_length {length}");
    header(
        &mut out,
        "ledger_review_queue_oldest_seconds",
        "gauge",
        "How long the oldest payment in review has waited (0: none).",
    );
    let _ = writeln!(out, "ledger_review_queue_oldest_seconds {oldest_secs}");
    out
}
