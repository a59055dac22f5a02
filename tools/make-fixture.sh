#!/usr/bin/env bash
# Writes a small data directory with every kind of stream (ledger transfers posted,
# pending, posted-pending and voided; users with a bank account and wallets; payments;
# FX rates and a conversion), using the given `ledgerd` and `ledgerctl` binaries, and
# stops the server cleanly. `tests/fixtures/data-v1` was written by this script with
# the build of commit e1cbd34; `cargo test -p api --test fixture` opens it with today's
# code, so a change of the disk format cannot slip in unnoticed.
#
# Usage: tools/make-fixture.sh LEDGERD LEDGERCTL OUT_DIR
set -euo pipefail
ledgerd=$1 ctl=$2 out=$3
rm -rf "$out"
mkdir -p "$out"
token=fixture-admin-token-0123456789
log=$(mktemp)
LEDGERD_ADMIN_TOKEN=$token "$ledgerd" --data-dir "$out" --listen 127.0.0.1:50091 \
    --metrics-listen 127.0.0.1:50093 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q 'ledgerd listening on' "$log" && break; sleep 0.1; done
admin=("$ctl" --addr http://127.0.0.1:50091 --token "$token")
"${admin[@]}" accounts create --id 1 --currency USD
"${admin[@]}" accounts create --id 2 --currency USD
"${admin[@]}" accounts create --id 3 --currency EUR
"${admin[@]}" accounts create --id 4 --currency EUR
"${admin[@]}" --minor transfers create --id 10 --debit 1 --credit 2 --amount 250 --currency USD
"${admin[@]}" --minor transfers create --id 11 --debit 1 --credit 2 --amount 40 --currency USD --pending
"${admin[@]}" --minor transfers post --id 12 --pending-id 11 --amount 30
"${admin[@]}" --minor transfers create --id 13 --debit 3 --credit 4 --amount 750 --currency EUR --pending
"${admin[@]}" transfers void --id 14 --pending-id 13
"${admin[@]}" fx set-rates --rate EUR/USD=1.085
user() { "$ctl" --addr http://127.0.0.1:50091 --token "$1" "${@:2}"; }
echo 'fixture-passphrase-ada' | "$ctl" --addr http://127.0.0.1:50091 signup --name 'Ada Lovelace' --email ada@example.com
echo 'fixture-passphrase-bob' | "$ctl" --addr http://127.0.0.1:50091 signup --name 'Bob Example' --email bob@example.com
ada=$(echo 'fixture-passphrase-ada' | "$ctl" --addr http://127.0.0.1:50091 login --email ada@example.com)
bob=$(echo 'fixture-passphrase-bob' | "$ctl" --addr http://127.0.0.1:50091 login --email bob@example.com)
user "$ada" wallets open USD
user "$ada" wallets open EUR
user "$bob" wallets open USD
bank=$(echo 000123456789 | user "$ada" instruments add-bank --bank-name 'First Example' --routing-number 021000021)
instrument=$(grep -o 'ins_[0-9a-f]*' <<<"$bank" | head -1)
deposits=$(sed -n 's/.*sandbox micro-deposits: \[\([0-9]*\), \([0-9]*\)\].*/\1 \2/p' <<<"$bank")
# shellcheck disable=SC2086
user "$ada" instruments verify "$instrument" $deposits
user "$ada" topup --key fixture-topup --amount 100 --currency USD --instrument "$instrument"
sleep 1
user "$ada" pay --key fixture-pay --to-email bob@example.com --amount 12.50 --currency USD
sleep 1
quote=$(user "$ada" fx quote USD EUR --amount 20 | grep -o 'q_[0-9a-zA-Z_]*' | head -1)
user "$ada" fx execute "$quote"
sleep 1
user "$ada" payments
kill -TERM $server
wait $server
rm -f "$out/admin.token"
echo "fixture written to $out"
