#!/usr/bin/env bash
# Restart benchmark: how long after start `ledgerd` listens and answers a balance and a
# history read, on an existing data directory (issue 15: a 100M-transfer directory
# from `ledgerctl bench`, whose read models a first run of `ledgerd` has caught up).
#
#   tools/restart-bench.sh DATA_DIR ACCOUNT [term|kill]
#
# Each round starts `ledgerd` on DATA_DIR and prints, in milliseconds since the start:
# `ready` (its "ready" log line), `balance` and `history` (the first `ledgerctl
# balance` / `ledgerctl history --limit 10` of ACCOUNT that answers). Then it stops it:
# `term` (the default) with SIGTERM when idle; `kill` with SIGKILL after 10 s of
# `ledgerctl load` (transfers between the bench's accounts), so the next round starts
# after a kill under load. Three rounds; the first after the previous owner's stop.
# Needs release binaries (cargo build --release -p api -p tools).
set -euo pipefail
data=${1:?usage: tools/restart-bench.sh DATA_DIR ACCOUNT [term|kill]}
account=${2:?usage: tools/restart-bench.sh DATA_DIR ACCOUNT [term|kill]}
stop=${3:-term}
bin=$(cd "$(dirname "$0")/.." && pwd)/target/release
token=restart-bench-admin-token-0123456789
port=50093
export LEDGER_ADDR=http://127.0.0.1:$port LEDGER_TOKEN=$token

now_ms() { date +%s%3N; }

# Polls `ledgerctl $@` until it succeeds; prints the milliseconds since $start.
until_answers() {
    while ! "$bin/ledgerctl" "$@" >/dev/null 2>&1; do sleep 0.02; done
    echo $(($(now_ms) - start))
}

for round in 1 2 3; do
    log=$(mktemp)
    start=$(now_ms)
    LEDGERD_ADMIN_TOKEN=$token RUST_LOG=info "$bin/ledgerd" --data-dir "$data" \
        --listen 127.0.0.1:$port --metrics-listen 127.0.0.1:0 --http-listen off >"$log" 2>&1 &
    pid=$!
    until grep -q "ready in" "$log"; do
        kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
        sleep 0.01
    done
    ready=$(($(now_ms) - start))
    balance=$(until_answers balance --account "$account")
    history=$(until_answers history --account "$account" --limit 10)
    echo "round $round (after a $([ $round = 1 ] && echo previous || echo "$stop") stop): ready ${ready} ms, balance ${balance} ms, history ${history} ms"
    if [ "$stop" = kill ]; then
        "$bin/ledgerctl" load --accounts 10000 --clients 64 --duration 10 >/dev/null 2>&1 &
        load=$!
        sleep 8
        kill -KILL $pid
        wait $load 2>/dev/null || true
    else
        kill -TERM $pid
    fi
    wait $pid 2>/dev/null || true
    rm -f "$log"
done
