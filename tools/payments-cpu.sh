#!/usr/bin/env bash
# ledgerd's CPU per payment under `ledgerctl load --payments`, beside the rate: the
# figure to compare builds by on a shared machine, where payments/s swing with the
# neighbours but a payment's CPU moves far less.
#
#   tools/payments-cpu.sh LEDGERD LEDGERCTL [RUNS] [LOAD ARGS...]
#
# Each run starts a fresh LEDGERD (data in target/payments-cpu-data, the load settings
# of the README), sends 2,000 payments to set up and warm it (not counted), then runs
# `LEDGERCTL load --payments --clients 64 --duration 10 LOAD ARGS` and prints one line:
# payments/s, p50 ms, p99 ms, failed, and ledgerd's user + system CPU time over the
# timed run divided by the payments completed (from /proc/PID/stat). Give two builds'
# binaries in turn, several runs each, and compare them run by run. Ports 50091-50093
# must be free.
set -euo pipefail
cd "$(dirname "$0")/.."
LEDGERD=$1
LEDGERCTL=$2
RUNS=${3:-3}
shift $(($# < 3 ? $# : 3))
DATA=target/payments-cpu-data
TICKS=$(getconf CLK_TCK)

field() { # field NAME JSON
    sed -n "s/.*\"$1\":\"\{0,1\}\([0-9.a-z]*\).*/\1/p" <<<"$2"
}
for _ in $(seq "$RUNS"); do
    rm -rf "$DATA"
    mkdir -p "$DATA"
    "$LEDGERD" --data-dir "$DATA" --listen 127.0.0.1:50091 --http-listen 127.0.0.1:50092 \
        --metrics-listen 127.0.0.1:50093 --registrations-per-source-hour 1000000 \
        --risk-user-per-hour 10000000 --risk-user-per-day 10000000 \
        --risk-user-amount-per-hour 100000000000 --risk-user-amount-per-day 100000000000 \
        --risk-instrument-per-hour 10000000 --risk-instrument-per-day 10000000 \
        --risk-instrument-amount-per-day 100000000000 2>"$DATA.log" &
    pid=$!
    for _ in $(seq 100); do
        grep -q "ready in" "$DATA.log" && break
        sleep 0.1
    done
    cpu() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
    "$LEDGERCTL" --json --addr http://127.0.0.1:50091 load --payments --clients 64 --count 2000 "$@" >/dev/null
    before=$(cpu)
    line=$("$LEDGERCTL" --json --addr http://127.0.0.1:50091 load --payments --clients 64 --duration 10 "$@" || true)
    after=$(cpu)
    kill -TERM "$pid"
    wait "$pid" || true
    completed=$(field completed "$line")
    awk -v r="$(field payments_per_sec "$line")" -v p50="$(field p50_ms "$line")" -v p99="$(field p99_ms "$line")" \
        -v failed="$(field failed "$line")" -v c="$completed" -v t0="$before" -v t1="$after" -v hz="$TICKS" \
        'BEGIN { printf "payments/s %.0f  p50 %s ms  p99 %s ms  failed %s  ledgerd CPU %.0f us a payment\n", r, p50, p99, failed, (t1 - t0) / hz * 1e6 / (c > 0 ? c : 1) }'
done
rm -rf "$DATA" "$DATA.log" "$DATA-signing.key"
