#!/usr/bin/env bash
# A property-based test of the HTTP/JSON API from its own OpenAPI document: schemathesis
# (from PyPI, pinned) generates requests for every documented operation, valid and not,
# against a real `ledgerd` on a fresh data directory, and checks that no answer is a
# server error (5xx) and that every answer matches its documented status, content type
# and schema. Bounded: SCHEMA_EXAMPLES requests per operation and SCHEMA_SECONDS in all.
#
#   tools/http-api-check.sh            (run by .ci/run when Python 3 is available)
#
# Replay a run with the seed it prints: SCHEMA_SEED=N tools/http-api-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
EXAMPLES=${SCHEMA_EXAMPLES:-30}
SECONDS_MAX=${SCHEMA_SECONDS:-180}
SEED=${SCHEMA_SEED:-$RANDOM}
VERSION=4.32.5

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "SKIPPED: HTTP API schema test (no $PYTHON on this machine)" >&2
    exit 0
fi
venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
    if ! "$PYTHON" -m venv "$venv" >/dev/null 2>&1; then
        echo "SKIPPED: HTTP API schema test ($PYTHON cannot create a virtual environment: install python3-venv)" >&2
        exit 0
    fi
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"; then
        echo "SKIPPED: HTTP API schema test (schemathesis $VERSION could not be installed from PyPI)" >&2
        exit 0
    fi
fi

cargo build --quiet --bin ledgerd
work=$(mktemp -d)
admin=schema-test-admin-token-0123456789
printf 'admin %s\n' "$admin" >"$work/tokens"
target/debug/ledgerd --data-dir "$work/data" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 --tokens-file "$work/tokens" 2>"$work/ledgerd.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
base=
for _ in $(seq 1 300); do
    base=$(sed -n 's/.*HTTP API on \(http:\/\/[0-9.:]*\).*/\1/p' "$work/ledgerd.log" | head -1)
    grep -q "ready in" "$work/ledgerd.log" && [ -n "$base" ] && break
    kill -0 $server 2>/dev/null || { cat "$work/ledgerd.log" >&2; echo "ledgerd did not start" >&2; exit 1; }
    sleep 0.1
done
[ -n "$base" ] || { cat "$work/ledgerd.log" >&2; echo "ledgerd did not start" >&2; exit 1; }

# A user with a session, a wallet and a card, so that generated calls reach real state.
token=$("$PYTHON" - "$base" <<'PY'
import json, sys, urllib.request
base = sys.argv[1]
def call(method, path, body=None, token=None):
    request = urllib.request.Request(base + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": "Bearer " + token} if token else {})})
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)
call("POST", "/user", {"name": "Schema Test", "email": "schema@example.com", "password": "violet-anchor-tram-47"})
session = call("POST", "/user/sessions", {"email": "schema@example.com", "password": "violet-anchor-tram-47"})
print(session["session_token"])
PY
)

echo "HTTP API schema test: schemathesis $VERSION, seed $SEED (replay: SCHEMA_SEED=$SEED $0)"
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
status=0
# Signing out (or revoking sessions) would end the session the rest of the run uses.
# Run from the scratch directory: schemathesis keeps a cache in its working directory.
(cd "$work" && "$OLDPWD/$venv/bin/schemathesis" run "$base/openapi.json" --checks "$checks" --max-examples "$EXAMPLES" \
    --max-time "$SECONDS_MAX" --seed "$SEED" --generation-database none --no-color \
    --exclude-path-regex '^/user/sessions/' --request-timeout 30 \
    -H "Authorization: Bearer $token") || status=$?
if grep -q "panicked" "$work/ledgerd.log"; then
    grep -n "panicked" "$work/ledgerd.log" >&2
    status=1
fi
exit $status
