#!/usr/bin/env bash
# Strata in one command: builds the server and the CLI, starts a server on a free loopback port
# with a fresh data directory, creates a topic, produces records from stdin lines, consumes them
# back, consumes them again as a consumer group (which commits its offsets), shows the group's
# lag, shows the cluster, and stops the server (SIGTERM: a clean shutdown).
set -euo pipefail
cd "$(dirname "$0")"
cargo build -q -p strata-server -p strata-tools
data=$(mktemp -d "${TMPDIR:-/tmp}/strata-quickstart.XXXXXX")
fifo="$data/server.out"
mkfifo "$fifo"
target/debug/strata-server --listen 127.0.0.1:0 --data-dir "$data/data" > "$fifo" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
# The server prints its address once it serves; reading the line waits for it.
exec 3< "$fifo"
read -r -t 60 line <&3
export STRATA_BROKERS="${line#strata-server listening on }"
echo "== server on $STRATA_BROKERS, data in $data/data"
echo "== strata topic create quickstart --partitions 3 --replication-factor 1"
target/debug/strata topic create quickstart --partitions 3 --replication-factor 1
echo "== strata produce quickstart --key-separator :   (stdin: alice:hello, bob:world, carol:again)"
printf 'alice:hello\nbob:world\ncarol:again\n' | target/debug/strata produce quickstart --key-separator :
echo "== strata consume quickstart --from earliest --format json"
target/debug/strata consume quickstart --from earliest --format json
echo "== strata consume quickstart --group demo --count 3   (joins group demo, commits, leaves)"
target/debug/strata consume quickstart --group demo --count 3
echo "== strata group describe demo"
target/debug/strata group describe demo
echo "== strata cluster info"
target/debug/strata cluster info
