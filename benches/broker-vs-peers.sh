#!/usr/bin/env bash
# End-to-end: `strata bench` against one strata-server (release build), or a cluster of NODES
# (started by `strata playground`, topics replicated on every node), then peers with
# ../shared/peerbench, in the same run, on the same machine, with the same workload: 1 KiB
# records; 200 000 produced with at most 256 records in flight; replay of the whole
# stream; latency of one record at a time at 5 000/s, measured as peerbench measures it
# (`strata bench produce --mode closed-loop`: a 200-record warm-up, then each record sent on the
# schedule and awaited; service time send→ack, and schedule-corrected time).
#
# Beside each figure: CPU-seconds per GB of record bytes, for the servers (utime + stime of
# every server process from /proc/PID/stat, sampled before and after the phase, clock ticks
# from `getconf CLK_TCK`) and for the bench client (its own getrusage, in its report).
#
#   benches/broker-vs-peers.sh            (RUNS=3; PEERS="nats-r1 redis-always")
#   NODES=3 benches/broker-vs-peers.sh    (3 nodes, replication factor 3; PEERS="nats-r3")
#   PEERS=none benches/broker-vs-peers.sh (Strata alone, no peerbench)
#   IN_FLIGHT=4 benches/broker-vs-peers.sh (the 256 records in flight as 4 pipelined batches of
#                                           64; default 1 batch of 256)
#
# Server peak RSS is the largest node's.
#
# peerbench builds and writes results inside its own folder, so it is copied to a writable
# place first. Run on a quiet machine: no build running.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
NODES=${NODES:-1}
IN_FLIGHT=${IN_FLIGHT:-1}
# The batch limit that cuts exactly 256 / IN_FLIGHT records of 1 KiB: a record takes 1033
# bytes in a batch (1034 from the 65th on: its offset delta takes two bytes), and the producer
# closes a batch when its 1064-byte bound for one more record does not fit. (266 941, used
# before, let 258 in.)
case "$IN_FLIGHT" in
  1) batch_bytes=265000 ;;
  2) batch_bytes=133000 ;;
  4) batch_bytes=66800 ;;
  *) echo "IN_FLIGHT must be 1, 2 or 4" >&2; exit 2 ;;
esac
if [ "$NODES" -gt 1 ]; then PEERS=${PEERS:-nats-r3}; else PEERS=${PEERS:-nats-r1 redis-always}; fi
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-vs-peers.XXXXXX")
echo "results in $work" >&2
cargo build -q --release -p strata-server -p strata-tools
strata=target/release/strata
clock_ticks_per_s=$(getconf CLK_TCK)

# CPU clock ticks (utime + stime) used so far by the processes given. The command name, in
# parentheses, may hold spaces: fields are counted after its closing parenthesis.
cpu_ticks() {
  local total=0 pid rest
  for pid in "$@"; do
    rest=$(sed 's/^.*) //' "/proc/$pid/stat")
    total=$((total + $(echo "$rest" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

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
  # At most 256 records in flight: IN_FLIGHT batches of 256 / IN_FLIGHT records; the
  # producer's buffer holds those and one batch more, filling while they are out (peerbench's
  # clients keep 256 unacknowledged). With the producer's default buffer (32 MiB, ~31 000
  # records) a batch waits behind 240 others and is out of the CPU's cache when it is sent:
  # the same throughput for 1.5x the client's CPU (BENCHMARKS.md).
  before=$(cpu_ticks "${pids[@]}")
  $strata --brokers "$address" --format json bench produce --topic throughput --partitions 1 \
      --replication-factor "$NODES" \
      --count 200000 --record-size 1024 --batch-bytes "$batch_bytes" --in-flight "$IN_FLIGHT" \
      --buffer-bytes $((batch_bytes * (IN_FLIGHT + 1))) 2>/dev/null > "$work/produce-$run.json"
  after=$(cpu_ticks "${pids[@]}")
  echo "$((after - before)) $clock_ticks_per_s" > "$work/produce-$run.server-ticks"
  before=$after
  $strata --brokers "$address" --format json bench consume --topic throughput --from earliest \
      2>/dev/null > "$work/replay-$run.json"
  after=$(cpu_ticks "${pids[@]}")
  echo "$((after - before)) $clock_ticks_per_s" > "$work/replay-$run.server-ticks"
  # One record at a time at 5 000/s, awaited before the next (peerbench's latency phase).
  $strata --brokers "$address" --format json bench produce --topic latency --partitions 1 \
      --replication-factor "$NODES" --mode closed-loop \
      --count 25000 --record-size 1024 --rate 5000 2>/dev/null > "$work/latency-$run.json"
  for pid in "${pids[@]}"; do grep VmHWM "/proc/$pid/status" | awk '{print $2}'; done \
      | sort -n | tail -1 > "$work/rss-$run.kib"
  kill -TERM "$server"
  wait "$server" || true
  exec 3<&-
  rm -rf "$work/data-$run"
done

# PEERBENCH_DIR: a writable copy of peerbench that is already built (saves its build).
if [ "$PEERS" != none ]; then
  peerbench=${PEERBENCH_DIR:-$work/peerbench}
  [ -d "$peerbench" ] || cp -r ../shared/peerbench "$peerbench"
  # shellcheck disable=SC2086
  OUT="$work/peers" "$peerbench/run.sh" $PEERS >&2
fi

python3 - "$work" "$RUNS" "$IN_FLIGHT" <<'PY'
import json, statistics, sys, glob, os
work, runs, in_flight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(kind):
    return [json.load(open(f"{work}/{kind}-{r}.json")) for r in range(1, runs + 1)]
def server_cpu_s_per_gb(kind, reports):
    # CPU-seconds of every server process during the phase, per GB of record bytes.
    per_gb = []
    for r, report in enumerate(reports, 1):
        ticks, ticks_per_s = map(int, open(f"{work}/{kind}-{r}.server-ticks").read().split())
        per_gb.append(ticks / ticks_per_s / (report["bytes"] / 1e9))
    return per_gb
produce, replay, latency = load("produce"), load("replay"), load("latency")
rss = [int(open(f"{work}/rss-{r}.kib").read()) for r in range(1, runs + 1)]
med = statistics.median
strata = {
    "produce": med(p["records_per_s"] for p in produce),
    "replay": med(p["records_per_s"] for p in replay),
    "p50": med(p["latency_ms"]["p50"] for p in latency) * 1000,
    "p99": med(p["latency_ms"]["p99"] for p in latency) * 1000,
    "p999": med(p["latency_ms"]["p999"] for p in latency) * 1000,
    "co_p99": med(p["schedule_corrected_latency_ms"]["p99"] for p in latency) * 1000,
    "rate": med(p["rate"]["achieved_per_s"] for p in latency),
    "produce_server": med(server_cpu_s_per_gb("produce", produce)),
    "replay_server": med(server_cpu_s_per_gb("replay", replay)),
    "produce_client": med(p["client_cpu"]["cpu_s_per_gb"] for p in produce),
    "replay_client": med(p["client_cpu"]["cpu_s_per_gb"] for p in replay),
}
print(f"strata ({in_flight} batch(es) of {256 // in_flight} records in flight): "
      f"produce {strata['produce']:,.0f} rec/s "
      f"(CPU-s/GB server {strata['produce_server']:.2f}, client {strata['produce_client']:.2f}), "
      f"replay {strata['replay']:,.0f} rec/s "
      f"(CPU-s/GB server {strata['replay_server']:.2f}, client {strata['replay_client']:.2f}),")
print(f"  latency (closed loop) p50/p99/p999 {strata['p50']:.0f}/{strata['p99']:.0f}/{strata['p999']:.0f} us, "
      f"schedule-corrected p99 {strata['co_p99']:.0f} us at {strata['rate']:,.0f}/s, "
      f"server peak RSS {med(rss)/1024:.1f} MiB")
print(f"  runs: produce {[round(p['records_per_s']) for p in produce]}, "
      f"replay {[round(p['records_per_s']) for p in replay]}, "
      f"p99 us {[round(p['latency_ms']['p99'] * 1000) for p in latency]}")
for path in sorted(glob.glob(f"{work}/peers/*.jsonl")):
    rows = [json.loads(l) for l in open(path) if l.strip() and '"summary"' not in l]
    name = os.path.basename(path).removesuffix(".jsonl")
    peer = {
        "produce": med(r["produce_msgs_s"] for r in rows),
        "replay": med(r["replay_msgs_s"] for r in rows),
        "p50": med(r["svc_p50_us"] for r in rows),
        "p99": med(r["svc_p99_us"] for r in rows),
        "p999": med(r["svc_p999_us"] for r in rows),
        "co_p99": med(r["co_p99_us"] for r in rows),
        "rate": med(r["lat_achieved_rate"] for r in rows),
    }
    print(f"{name}: produce {peer['produce']:,.0f} rec/s, replay {peer['replay']:,.0f} rec/s, "
          f"latency p50/p99/p999 {peer['p50']:.0f}/{peer['p99']:.0f}/{peer['p999']:.0f} us, "
          f"schedule-corrected p99 {peer['co_p99']:.0f} us at {peer['rate']:,.0f}/s;")
    print(f"  strata/{name}: produce {strata['produce']/peer['produce']:.2f}x, "
          f"replay {strata['replay']/peer['replay']:.2f}x, p99 {strata['p99']/peer['p99']:.2f}x "
          f"(strata CPU-s/GB produce: server {strata['produce_server']:.2f}, client {strata['produce_client']:.2f}; "
          f"replay: server {strata['replay_server']:.2f}, client {strata['replay_client']:.2f})")
PY
