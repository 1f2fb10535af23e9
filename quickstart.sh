#!/usr/bin/env bash
# Strata in one command: builds the server and the CLI, starts a local 3-node cluster of real
# server processes on loopback (`strata playground`), creates a topic replicated on all three,
# produces records from stdin lines, consumes them back, consumes them again as a consumer
# group (which commits its offsets), shows the group's lag and the cluster, and stops the
# cluster (SIGTERM: each node hands its leaderships over and shuts down cleanly).
set -euo pipefail
cd "$(dirname "$0")"
cargo build -q -p strata-server -p strata-tools
data=$(mktemp -d "${TMPDIR:-/tmp}/strata-quickstart.XXXXXX")
fifo="$data/playground.out"
mkfifo "$fifo"
target/debug/strata playground --nodes 3 --data-dir "$data/cluster" > "$fifo" &
playground=$!
trap 'kill "$playground" 2>/dev/null; wait "$playground" 2>/dev/null; rm -rf "$data"' EXIT
# The playground prints "N nodes up: ADDRESSES" once the cluster is healthy.
exec 3< "$fifo"
while read -r -t 90 line <&3; do
  echo "$line"
  case "$line" in
    *" nodes up: "*) export STRATA_BROKERS="${line#* nodes up: }"; break ;;
  esac
done
[ -n "${STRATA_BROKERS:-}" ] || { echo "the cluster did not come up" >&2; exit 1; }
echo "(this script deletes $data, the cluster's data directory included, when it ends; the"
echo " playground on its own keeps it)"
echo "== strata topic create quickstart --partitions 3 --replication-factor 3"
target/debug/strata topic create quickstart --partitions 3 --replication-factor 3
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
