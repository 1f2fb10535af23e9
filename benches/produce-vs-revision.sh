#!/usr/bin/env bash
# What a change costs on the produce path: the same `strata bench produce` workload against a
# one-node `strata-server` built from REV and one built from the working tree, alternating in
# the same run, same client (this tree's). Workload as benches/idempotence-cost.sh: 3
# partitions, 1 KiB records, 300 000 records per run, 5 batches in flight, idempotent; or
# another shape through PARTITIONS, COUNT, IN_FLIGHT and BATCH_BYTES (the producer's batch
# limit; unset: its default).
#
#   benches/produce-vs-revision.sh REV        (RUNS=3 by default)
#   PARTITIONS=1 COUNT=200000 IN_FLIGHT=1 BATCH_BYTES=265000 benches/produce-vs-revision.sh REV
#                                             (broker-vs-peers.sh's produce: 256 records, 1 in flight)
#
# Prints, per side: median records/s and p99 ms, the server's CPU-seconds per GB produced (utime
# + stime from /proc/PID/stat over the runs) and peak RSS; then the ratios new/old.
# REV is built in a temporary git worktree with its own target directory (a clean release
# build: a few minutes on 2 cores), unless OLD_BIN names a strata-server already built from it.
# Run on a quiet machine: no build running.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: benches/produce-vs-revision.sh REV}
RUNS=${RUNS:-3}
PARTITIONS=${PARTITIONS:-3}
COUNT=${COUNT:-300000}
IN_FLIGHT=${IN_FLIGHT:-5}
batch_bytes=()
[ -n "${BATCH_BYTES:-}" ] && batch_bytes=(--batch-bytes "$BATCH_BYTES")
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-vs-rev.XXXXXX")
echo "results in $work" >&2
cleanup() {
  for pid in ${servers:-}; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  git worktree remove --force "$work/old-tree" 2>/dev/null || true
}
trap cleanup EXIT
old_bin=${OLD_BIN:-}
if [ -z "$old_bin" ]; then
  git worktree add -q --detach "$work/old-tree" "$rev"
  (cd "$work/old-tree" && CARGO_TARGET_DIR="$work/old-target" cargo build -q --release -p strata-server)
  old_bin=$work/old-target/release/strata-server
fi
cargo build -q --release -p strata-server -p strata-tools
strata=target/release/strata
servers=""
start() { # name binary -> address
  local fifo=$work/$1.out
  mkfifo "$fifo"
  "$2" --listen 127.0.0.1:0 --data-dir "$work/$1-data" > "$fifo" 2> "$work/$1.err" &
  servers="$servers $!"
  echo $! > "$work/$1.pid"
  exec {fd}< "$fifo"
  read -r -t 60 line <&"$fd"
  echo "${line#strata-server listening on }" > "$work/$1.address"
}
start old "$old_bin"
start new target/release/strata-server
cpu() { # pid -> CPU seconds so far
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
for side in old new; do echo 0 > "$work/$side.cpu"; done
for run in $(seq "$RUNS"); do
  for side in old new; do
    pid=$(cat "$work/$side.pid")
    before=$(cpu "$pid")
    $strata --brokers "$(cat "$work/$side.address")" --format json bench produce \
        --topic "t-$run" --partitions "$PARTITIONS" --count "$COUNT" --record-size 1024 \
        --in-flight "$IN_FLIGHT" "${batch_bytes[@]}" 2>/dev/null > "$work/$side-$run.json"
    after=$(cpu "$pid")
    python3 -c "import sys; print(float(open(sys.argv[1]).read()) + $after - $before)" \
        "$work/$side.cpu" > "$work/$side.cpu.next"
    mv "$work/$side.cpu.next" "$work/$side.cpu"
  done
done
for side in old new; do
  grep VmHWM "/proc/$(cat "$work/$side.pid")/status" | awk '{print $2}' > "$work/$side.rss"
done
python3 - "$work" "$RUNS" "$rev" "$COUNT" <<'PY'
import json, statistics, sys
work, runs, rev, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
med = statistics.median
out = {}
for side in ("old", "new"):
    rows = [json.load(open(f"{work}/{side}-{r}.json")) for r in range(1, runs + 1)]
    cpu = float(open(f"{work}/{side}.cpu").read())
    gb = runs * count * 1024 / 1e9
    rss = int(open(f"{work}/{side}.rss").read()) / 1024
    out[side] = (med(r["records_per_s"] for r in rows), med(r["latency_ms"]["p99"] for r in rows), cpu / gb)
    label = rev if side == "old" else "working tree"
    print(f"{side} ({label}): {out[side][0]:,.0f} rec/s (runs {[round(r['records_per_s']) for r in rows]}), "
          f"p99 {out[side][1]:.2f} ms, server {out[side][2]:.2f} CPU-s/GB, peak RSS {rss:.1f} MiB")
print(f"new/old: throughput {out['new'][0] / out['old'][0]:.3f}x, p99 {out['new'][1] / out['old'][1]:.3f}x, "
      f"server CPU per GB {out['new'][2] / out['old'][2]:.3f}x")
PY
