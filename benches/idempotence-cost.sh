#!/usr/bin/env bash
# What idempotent produce costs: `strata bench produce` with --idempotence off and on,
# alternating in the same run against one strata-server (release build), same workload:
# 3 partitions, 1 KiB records, 300 000 records, at most 5 batches in flight (the idempotent
# producer's per-partition limit, so both sides get the same pipelining).
#
#   benches/idempotence-cost.sh        (RUNS=3 by default)
#
# Prints the median records/s and p99 of each side, their ratio, the server's peak RSS and its
# anonymous (heap) RSS at the end.
# Run on a quiet machine: no build running.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-idempotence.XXXXXX")
echo "results in $work" >&2
cargo build -q --release -p strata-server -p strata-tools
strata=target/release/strata
fifo=$work/server.out
mkfifo "$fifo"
target/release/strata-server --listen 127.0.0.1:0 --data-dir "$work/data" > "$fifo" 2> "$work/server.err" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null' EXIT
exec 3< "$fifo"
read -r -t 60 line <&3
address=${line#strata-server listening on }
for run in $(seq "$RUNS"); do
  for mode in off on; do
    $strata --brokers "$address" --format json bench produce --topic "t-$mode-$run" --partitions 3 \
        --count 300000 --record-size 1024 --in-flight 5 --idempotence "$mode" 2>/dev/null \
        > "$work/$mode-$run.json"
  done
done
rss=$(grep VmHWM "/proc/$server/status" | awk '{print $2}')
anon=$(grep RssAnon "/proc/$server/status" | awk '{print $2}')
python3 - "$work" "$RUNS" "$rss" "$anon" <<'PY'
import json, statistics, sys
work, runs, rss, anon = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def load(mode):
    return [json.load(open(f"{work}/{mode}-{r}.json")) for r in range(1, runs + 1)]
med = statistics.median
result = {}
for mode in ("off", "on"):
    rows = load(mode)
    result[mode] = (med(r["records_per_s"] for r in rows), med(r["latency_ms"]["p99"] for r in rows))
    print(f"idempotence {mode}: {result[mode][0]:,.0f} rec/s (runs {[round(r['records_per_s']) for r in rows]}), "
          f"p99 {result[mode][1]:.2f} ms")
print(f"on/off: throughput {result['on'][0] / result['off'][0]:.3f}x, p99 {result['on'][1] / result['off'][1]:.3f}x; "
      f"server peak RSS {rss / 1024:.1f} MiB (mostly the mapped page cache of the logs), "
      f"anonymous RSS at the end {anon / 1024:.1f} MiB")
PY
