#!/usr/bin/env bash
# Wallet-to-wallet payments over gRPC and over the HTTP/JSON API, alternating, each
# run against a fresh release `ledgerd` (its own data directory) with the per-user
# velocity limits raised and the risk checks on; prints each run's JSON line, then
# the medians and the http/grpc ratio as a Markdown table.
#
#   tools/payments-load.sh [SECONDS] [RUNS] [CLIENTS]     # default 10 s, 3 runs, 64 clients
#
# It uses target/release/{ledgerd,ledgerctl} as built (build them first:
# `cargo build --release --bin ledgerd --bin ledgerctl`). Data goes to
# target/payments-load-data (on the repository's disk: a memory-backed /tmp would make
# syncs free). Ports 50081-50083 must be free.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
RUNS=${2:-3}
CLIENTS=${3:-64}
BIN=target/release
DATA=target/payments-load-data
GRPC_ADDR=127.0.0.1:50081
HTTP_ADDR=127.0.0.1:50082
for binary in ledgerd ledgerctl; do
    [ -x "$BIN/$binary" ] || { echo "no $BIN/$binary: cargo build --release --bin ledgerd --bin ledgerctl" >&2; exit 2; }
done

field() { # field NAME JSON
    sed -n "s/.*\"$1\":\"\{0,1\}\([0-9.a-z]*\).*/\1/p" <<<"$2"
}

run() { # run TRANSPORT -> JSON line
    rm -rf "$DATA"
    mkdir -p "$DATA"
    "$BIN/ledgerd" --data-dir "$DATA" --listen "$GRPC_ADDR" --http-listen "$HTTP_ADDR" \
        --metrics-listen 127.0.0.1:50083 --registrations-per-source-hour 1000000 \
        --risk-user-per-hour 10000000 --risk-user-per-day 10000000 \
        --risk-user-amount-per-hour 100000000000 --risk-user-amount-per-day 100000000000 \
        --risk-instrument-per-hour 10000000 --risk-instrument-per-day 10000000 \
        --risk-instrument-amount-per-day 100000000000 2>"$DATA.log" &
    local pid=$!
    for _ in $(seq 100); do
        grep -q "ready in" "$DATA.log" && break
        sleep 0.1
    done
    "$BIN/ledgerctl" --json --addr "http://$GRPC_ADDR" load --payments --transport "$1" --http "$HTTP_ADDR" \
        --clients "$CLIENTS" --duration "$SECONDS_PER_RUN" || true
    kill -TERM "$pid"
    wait "$pid" || true
}

median() { # median VALUES...
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

declare -a grpc_rate grpc_p50 grpc_p99 http_rate http_p50 http_p99
for _ in $(seq "$RUNS"); do
    for transport in grpc http; do
        line=$(run "$transport")
        echo "$line"
        rate=$(field payments_per_sec "$line")
        p50=$(field p50_ms "$line")
        p99=$(field p99_ms "$line")
        if [ "$transport" = grpc ]; then
            grpc_rate+=("$rate"); grpc_p50+=("$p50"); grpc_p99+=("$p99")
        else
            http_rate+=("$rate"); http_p50+=("$p50"); http_p99+=("$p99")
        fi
    done
done
g=$(median "${grpc_rate[@]}")
h=$(median "${http_rate[@]}")
echo
echo "| transport | payments/s (runs) | median payments/s | median p50 ms | median p99 ms |"
echo "|---|---|---|---|---|"
echo "| grpc | ${grpc_rate[*]} | $g | $(median "${grpc_p50[@]}") | $(median "${grpc_p99[@]}") |"
echo "| http | ${http_rate[*]} | $h | $(median "${http_p50[@]}") | $(median "${http_p99[@]}") |"
awk -v h="$h" -v g="$g" 'BEGIN { printf "\nhttp/grpc payments/s: %.2f\n", h / g }'
rm -rf "$DATA" "$DATA.log" "$DATA-signing.key"
