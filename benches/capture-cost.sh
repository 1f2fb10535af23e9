#!/usr/bin/env bash
# What continuous capture (issue 15) costs the produce path: one release `strata-server`, the
# same `strata bench produce` workload into a topic without capture and into one captured to a
# directory, alternating in the same run. Windows close every second or 64 MiB (so capture runs
# while records arrive, not after), 3 partitions, 1 KiB records, COUNT records per run, 5
# batches in flight. After each captured run the script waits until every record is captured
# before it reads the server's CPU, so CPU per GB includes the Parquet files' writing.
#
#   benches/capture-cost.sh                    (RUNS=3, COUNT=300000)
#
# Prints, per side: median records/s and p99 ms, the server's CPU-seconds per GB produced
# (utime + stime from /proc/PID/stat), the captured bytes on disk; then captured/plain ratios.
# Run on a quiet machine: no build running.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
COUNT=${COUNT:-300000}
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-capture-cost.XXXXXX")
echo "results in $work" >&2
cleanup() {
  [ -n "${server:-}" ] && { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
}
trap cleanup EXIT
cargo build -q --release -p strata-server -p strata-tools
strata=target/release/strata
mkfifo "$work/server.out"
target/release/strata-server --listen 127.0.0.1:0 --data-dir "$work/data" \
    > "$work/server.out" 2> "$work/server.err" &
server=$!
exec {fd}< "$work/server.out"
read -r -t 60 line <&"$fd"
address=${line#strata-server listening on }
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$server/stat"; }
uncaptured() { # topic -> records not captured yet, summed over partitions
  $strata --brokers "$address" --format json topic describe "$1" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(p["capture_lag"] for p in d["partition_info"]))'
}
for side in plain captured; do echo 0 > "$work/$side.cpu"; done
for run in $(seq "$RUNS"); do
  for side in plain captured; do
    topic="$side-$run"
    if [ "$side" = captured ]; then
      $strata --brokers "$address" topic create "$topic" --partitions 3 \
          --capture-dir "$work/capture" --capture-interval 1000 --capture-max-bytes 64MiB > /dev/null
    else
      $strata --brokers "$address" topic create "$topic" --partitions 3 > /dev/null
    fi
    before=$(cpu)
    $strata --brokers "$address" --format json bench produce --topic "$topic" \
        --count "$COUNT" --record-size 1024 --in-flight 5 2>/dev/null > "$work/$side-$run.json"
    if [ "$side" = captured ]; then
      for _ in $(seq 600); do
        [ "$(uncaptured "$topic")" = 0 ] && break
        sleep 0.1
      done
      [ "$(uncaptured "$topic")" = 0 ] || { echo "capture of $topic did not finish within 60 s" >&2; exit 1; }
    fi
    after=$(cpu)
    python3 -c "import sys; print(float(open(sys.argv[1]).read()) + $after - $before)" \
        "$work/$side.cpu" > "$work/$side.cpu.next"
    mv "$work/$side.cpu.next" "$work/$side.cpu"
  done
done
grep VmHWM "/proc/$server/status" | awk '{print $2}' > "$work/rss"
du -sb "$work/capture" | awk '{print $1}' > "$work/captured.bytes"
python3 - "$work" "$RUNS" "$COUNT" <<'PY'
import json, statistics, sys
work, runs, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
med = statistics.median
out = {}
gb = runs * count * 1024 / 1e9
for side in ("plain", "captured"):
    rows = [json.load(open(f"{work}/{side}-{r}.json")) for r in range(1, runs + 1)]
    cpu = float(open(f"{work}/{side}.cpu").read())
    out[side] = (med(r["records_per_s"] for r in rows), med(r["latency_ms"]["p99"] for r in rows), cpu / gb)
    print(f"{side}: {out[side][0]:,.0f} rec/s (runs {[round(r['records_per_s']) for r in rows]}), "
          f"p99 {out[side][1]:.2f} ms, server {out[side][2]:.2f} CPU-s/GB")
captured = int(open(f"{work}/captured.bytes").read())
rss = int(open(f"{work}/rss").read()) / 1024
print(f"captured files: {captured / 1e6:.1f} MB for {gb * 1e3:.0f} MB produced; server peak RSS {rss:.1f} MiB")
print(f"captured/plain: throughput {out['captured'][0] / out['plain'][0]:.3f}x, "
      f"p99 {out['captured'][1] / out['plain'][1]:.3f}x, server CPU per GB {out['captured'][2] / out['plain'][2]:.3f}x")
PY
