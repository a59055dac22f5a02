#!/usr/bin/env bash
# The architecture's first boundary, checked: the pure core (`ledger-core`) depends on
# no async runtime, thread, storage or network crate. Its normal dependency tree must
# not name any of these; `.ci/run` runs this before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(tokio|mio|thread-priority|kurrentdb|redb|tonic|hyper|h2|axum|reqwest|socket2|libc|ledger-engine|projections|ledger-platform|api)$'
names=$(cargo tree -p ledger-core -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
found=$(grep -E "$forbidden" <<<"$names" || true)
if [[ -n "$found" ]]; then
    echo "ledger-core must stay pure, but its dependency tree has: $found" >&2
    exit 1
fi
echo "ledger-core dependency guard: $(wc -l <<<"$names") crates, none with I/O"
