#!/usr/bin/env bash
# Runs `ledgerctl load` against a release `ledgerd` (fresh data directory per row) and
# against the do-nothing tonic echo service, for each load shape, and prints one
# Markdown table. Client and server share this machine, as in the figures quoted in
# the README.
#
#   tools/load-table.sh [SECONDS]          # default 8 s per run
#
# Data goes to target/load-data (on the repository's disk: a memory-backed /tmp would
# make syncs free). Ports 50071-50073 must be free.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-8}
cargo build --release --quiet --bin ledgerd --bin ledgerctl
BIN=target/release
DATA=target/load-data
TOKEN=load-table-$(date +%s%N)
LEDGER_ADDR=127.0.0.1:50071
ECHO_ADDR=127.0.0.1:50072

field() { # field NAME JSON
    sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"
}

run_ledger() { # run_ledger CLIENTS BATCH WIRE -> JSON line
    rm -rf "$DATA"
    mkdir -p "$DATA"
    LEDGERD_ADMIN_TOKEN=$TOKEN "$BIN/ledgerd" --data-dir "$DATA" --listen "$LEDGER_ADDR" \
        --metrics-listen 127.0.0.1:50073 2>"$DATA.log" &
    local pid=$!
    for _ in $(seq 50); do
        (echo >"/dev/tcp/${LEDGER_ADDR%:*}/${LEDGER_ADDR#*:}") 2>/dev/null && break
        sleep 0.1
    done
    "$BIN/ledgerctl" --token "$TOKEN" --json --addr "http://$LEDGER_ADDR" load \
        --clients "$1" --batch "$2" --wire "$3" --duration "$SECONDS_PER_RUN"
    kill -TERM "$pid"
    wait "$pid" || true
}

run_echo() { # run_echo CLIENTS BATCH WIRE -> JSON line
    "$BIN/ledgerctl" --json --addr "http://$ECHO_ADDR" load --target echo \
        --clients "$1" --batch "$2" --wire "$3" --duration "$SECONDS_PER_RUN"
}

"$BIN/ledgerctl" echo-server --listen "$ECHO_ADDR" 2>/dev/null &
ECHO_PID=$!
trap 'kill $ECHO_PID 2>/dev/null || true' EXIT
sleep 0.5

echo "| clients × batch | wire | ledger transfers/s | p50 ms | p99 ms | p999 ms | echo transfers/s | ledger/echo |"
echo "|---|---|---|---|---|---|---|---|"
for shape in "64 1 proto" "64 10 proto" "1 10 proto" "1 1000 proto" "64 1000 proto" "1 8189 proto" \
    "1 1000 packed" "64 1000 packed" "1 8189 packed"; do
    set -- $shape
    ledger=$(run_ledger "$1" "$2" "$3")
    echo_json=$(run_echo "$1" "$2" "$3")
    tps=$(field transfers_per_sec "$ledger")
    echo_tps=$(field transfers_per_sec "$echo_json")
    ratio=$(awk -v a="$tps" -v b="$echo_tps" 'BEGIN { printf "%.2f", a / b }')
    printf '| %s × %s | %s | %.0f | %.2f | %.2f | %.2f | %.0f | %s |\n' "$1" "$2" "$3" "$tps" \
        "$(field p50_ms "$ledger")" "$(field p99_ms "$ledger")" "$(field p999_ms "$ledger")" "$echo_tps" "$ratio"
done
rm -rf "$DATA" "$DATA.log"
