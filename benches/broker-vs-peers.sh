#!/usr/bin/env bash
# End-to-end: `strata bench` against one strata-server (release build), or a cluster of NODES
# (started by `strata playground`, topics replicated on every node), then peers with
# ../shared/peerbench, in the same run, on the same machine, with the same workload: 1 KiB
# records; 200 000 produced with at most 256 records unacknowledged; replay of the whole
# stream; latency of one record at a time at 5 000/s.
#
#   benches/broker-vs-peers.sh            (RUNS=3; PEERS="nats-r1 redis-always")
#   NODES=3 benches/broker-vs-peers.sh    (3 nodes, replication factor 3; PEERS="nats-r3")
#
# Server peak RSS is the largest node's.
#
# peerbench builds and writes results inside its own folder, so it is copied to a writable
# place first. Run on a quiet machine: no build running.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
NODES=${NODES:-1}
if [ "$NODES" -gt 1 ]; then PEERS=${PEERS:-nats-r3}; else PEERS=${PEERS:-nats-r1 redis-always}; fi
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-vs-peers.XXXXXX")
echo "results in $work" >&2
cargo build -q --release -p strata-server -p strata-tools
strata=target/release/strata

for run in $(seq "$RUNS"); do
  fifo=$work/server-$run.out
  mkfifo "$fifo"
  if [ "$NODES" -gt 1 ]; then
    # The playground prints "node N: ADDRESS, pid PID" per node, then "N nodes up: LIST".
    $strata playground --nodes "$NODES" --server-bin target/release/strata-server \
        --data-dir "$work/data-$run" > "$fifo" 2> "$work/server-$run.err" &
    server=$!
    exec 3< "$fifo"
    pids=()
    while read -r -t 90 line <&3; do
      case "$line" in
        node*pid*) pids+=("${line##* }") ;;
        *" nodes up: "*) address=${line#* nodes up: }; break ;;
      esac
    done
  else
    target/release/strata-server --listen 127.0.0.1:0 --data-dir "$work/data-$run" > "$fifo" 2> "$work/server-$run.err" &
    server=$!
    pids=("$server")
    exec 3< "$fifo"
    read -r -t 60 line <&3
    address=${line#strata-server listening on }
  fi
  # At most 256 records unacknowledged: batches of up to 256 records (266 941 bytes), one in
  # flight.
  $strata --brokers "$address" --format json bench produce --topic throughput --partitions 1 \
      --replication-factor "$NODES" \
      --count 200000 --record-size 1024 --batch-bytes 266941 --in-flight 1 2>/dev/null > "$work/produce-$run.json"
  $strata --brokers "$address" --format json bench consume --topic throughput --from earliest \
      2>/dev/null > "$work/replay-$run.json"
  # One record at a time at 5 000/s: no linger, one request in flight.
  $strata --brokers "$address" --format json bench produce --topic latency --partitions 1 \
      --replication-factor "$NODES" \
      --count 25000 --record-size 1024 --rate 5000 --linger-ms 0 --in-flight 1 2>/dev/null > "$work/latency-$run.json"
  for pid in "${pids[@]}"; do grep VmHWM "/proc/$pid/status" | awk '{print $2}'; done \
      | sort -n | tail -1 > "$work/rss-$run.kib"
  kill -TERM "$server"
  wait "$server" || true
  exec 3<&-
  rm -rf "$work/data-$run"
done

# PEERBENCH_DIR: a writable copy of peerbench that is already built (saves its build).
peerbench=${PEERBENCH_DIR:-$work/peerbench}
[ -d "$peerbench" ] || cp -r ../shared/peerbench "$peerbench"
# shellcheck disable=SC2086
OUT="$work/peers" "$peerbench/run.sh" $PEERS >&2

python3 - "$work" "$RUNS" <<'PY'
import json, statistics, sys, glob, os
work, runs = sys.argv[1], int(sys.argv[2])
def load(kind):
    return [json.load(open(f"{work}/{kind}-{r}.json")) for r in range(1, runs + 1)]
produce, replay, latency = load("produce"), load("replay"), load("latency")
rss = [int(open(f"{work}/rss-{r}.kib").read()) for r in range(1, runs + 1)]
med = statistics.median
strata = {
    "produce": med(p["records_per_s"] for p in produce),
    "replay": med(p["records_per_s"] for p in replay),
    "p50": med(p["latency_ms"]["p50"] for p in latency) * 1000,
    "p99": med(p["latency_ms"]["p99"] for p in latency) * 1000,
    "p999": med(p["latency_ms"]["p999"] for p in latency) * 1000,
}
print(f"strata: produce {strata['produce']:,.0f} rec/s, replay {strata['replay']:,.0f} rec/s, "
      f"latency p50/p99/p999 {strata['p50']:.0f}/{strata['p99']:.0f}/{strata['p999']:.0f} us, "
      f"server peak RSS {med(rss)/1024:.1f} MiB (runs: {[round(p['records_per_s']) for p in produce]}, "
      f"{[round(p['records_per_s']) for p in replay]})")
for path in sorted(glob.glob(f"{work}/peers/*.jsonl")):
    rows = [json.loads(l) for l in open(path) if l.strip() and '"summary"' not in l]
    name = os.path.basename(path).removesuffix(".jsonl")
    peer = {
        "produce": med(r["produce_msgs_s"] for r in rows),
        "replay": med(r["replay_msgs_s"] for r in rows),
        "p50": med(r["svc_p50_us"] for r in rows),
        "p99": med(r["svc_p99_us"] for r in rows),
        "p999": med(r["svc_p999_us"] for r in rows),
    }
    print(f"{name}: produce {peer['produce']:,.0f} rec/s, replay {peer['replay']:,.0f} rec/s, "
          f"latency p50/p99/p999 {peer['p50']:.0f}/{peer['p99']:.0f}/{peer['p999']:.0f} us; "
          f"strata/{name}: produce {strata['produce']/peer['produce']:.2f}x, "
          f"replay {strata['replay']/peer['replay']:.2f}x, p99 {strata['p99']/peer['p99']:.2f}x")
PY
