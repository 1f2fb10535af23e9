#!/usr/bin/env bash
# Scale: one strata-server (release build) under many partitions, producers and readers, with
# its CPU and memory beside every figure. Parts, in one run against one server:
#   a) aggregate produce with PRODUCERS `strata bench produce` processes into one topic of
#      PARTITIONS partitions, then one `strata bench consume` replaying all of it;
#   b) TRICKLE_PARTITIONS partitions: the server's anonymous memory and CPU with none, with
#      them idle for IDLE_S seconds, and while a producer trickles TRICKLE_RATE records/s over
#      all of them (one record per batch) for TRICKLE_S seconds: the stated per-partition cost;
#   c) READERS `strata bench consume` processes replaying the topic of a) at once (aggregate);
#   d) the server's anonymous RSS sampled while GROW_STEPS x GROW_STEP_MB of data are produced
#      into a topic of GROW_PARTITIONS partitions (1 to 10 GB by default): it must stay flat.
# Parallel load is several processes, not flags of `strata bench`.
#
#   benches/scale.sh                        (full sizes: ~12 GB of disk, tens of minutes)
#   SMALL=1 benches/scale.sh                (a few MB per part: checks the script works)
#
# Figures per part: records/s and MB/s (aggregate: all bytes over the wall time of the part,
# and the sum of the processes' own rates), the server's CPU-seconds (utime+stime from
# /proc/PID/stat) and CPU-s per GB, its peak RSS in the part (VmHWM, reset through
# /proc/PID/clear_refs before each part; it includes the logs' mapped pages) and its
# anonymous RSS (RssAnon: heap and stacks, sampled every 200 ms; peak and end); in d) also
# RssFile, the logs' pages mapped into the server (page cache the kernel can take back).
# Works in a mktemp directory and removes it (data included) at the end. Run on a quiet
# machine: no build running.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${SMALL:-}" ]; then
  PRODUCERS=${PRODUCERS:-4}; PARTITIONS=${PARTITIONS:-16}; PRODUCE_COUNT=${PRODUCE_COUNT:-5000}
  TRICKLE_PARTITIONS=${TRICKLE_PARTITIONS:-1000}; TRICKLE_RATE=${TRICKLE_RATE:-500}
  TRICKLE_S=${TRICKLE_S:-5}; IDLE_S=${IDLE_S:-5}; READERS=${READERS:-10}
  GROW_PARTITIONS=${GROW_PARTITIONS:-4}; GROW_STEP_MB=${GROW_STEP_MB:-20}; GROW_STEPS=${GROW_STEPS:-3}
else
  # PRODUCE_COUNT records of RECORD_SIZE bytes per producer: 4 x 250 000 x 1 KiB = 1 GB.
  PRODUCERS=${PRODUCERS:-4}; PARTITIONS=${PARTITIONS:-16}; PRODUCE_COUNT=${PRODUCE_COUNT:-250000}
  TRICKLE_PARTITIONS=${TRICKLE_PARTITIONS:-1000}; TRICKLE_RATE=${TRICKLE_RATE:-2000}
  TRICKLE_S=${TRICKLE_S:-30}; IDLE_S=${IDLE_S:-30}; READERS=${READERS:-10}
  GROW_PARTITIONS=${GROW_PARTITIONS:-4}; GROW_STEP_MB=${GROW_STEP_MB:-1000}; GROW_STEPS=${GROW_STEPS:-10}
fi
RECORD_SIZE=${RECORD_SIZE:-1024}

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-scale.XXXXXX")
echo "working in $work (removed at the end)" >&2
cargo build -q --release -p strata-server -p strata-tools
strata=target/release/strata
server=
sampler=
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null && wait "$sampler" 2>/dev/null
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

fifo=$work/server.out
mkfifo "$fifo"
target/release/strata-server --listen 127.0.0.1:0 --data-dir "$work/data" > "$fifo" 2> "$work/server.err" &
server=$!
exec 3< "$fifo"
read -r -t 60 line <&3
address=${line#strata-server listening on }
tick_hz=$(getconf CLK_TCK)

# The server's CPU-seconds so far (utime + stime; fields 14 and 15, after the command name).
cpu_s() {
  awk -v hz="$tick_hz" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$server/stat"
}
status_kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$server/status"; }
now_s() { date +%s.%N; }
# Starts a part: resets the peak RSS and starts sampling RssAnon into $work/anon-$1.
begin() {
  part=$1
  echo 5 > "/proc/$server/clear_refs"
  (while true; do status_kib RssAnon; sleep 0.2; done) > "$work/anon-$part" &
  sampler=$!
  part_cpu=$(cpu_s)
  part_start=$(now_s)
}
# Ends a part: one JSON line of its server figures into $work/parts.jsonl, with $2 the bytes
# the part moved (0 for none).
end() {
  local elapsed cpu
  elapsed=$(awk -v a="$(now_s)" -v b="$part_start" 'BEGIN { printf "%.3f", a - b }')
  cpu=$(awk -v a="$(cpu_s)" -v b="$part_cpu" 'BEGIN { printf "%.2f", a - b }')
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  sampler=
  local peak_anon end_anon end_file hwm
  peak_anon=$(sort -n "$work/anon-$part" | tail -1)
  end_anon=$(status_kib RssAnon)
  end_file=$(status_kib RssFile)
  hwm=$(status_kib VmHWM)
  echo "{\"part\": \"$part\", \"elapsed_s\": $elapsed, \"server_cpu_s\": $cpu, \"bytes\": $2, \
\"peak_rss_kib\": $hwm, \"peak_anon_kib\": ${peak_anon:-0}, \"end_anon_kib\": $end_anon, \
\"end_file_kib\": $end_file}" >> "$work/parts.jsonl"
}
bench() { $strata --brokers "$address" --format json bench "$@" 2>> "$work/bench.err"; }
topic_create() {
  $strata --brokers "$address" topic create "$1" --partitions "$2" > /dev/null
}
# Sum of the "bytes" fields of bench results.
bytes_of() { python3 -c 'import json,sys; print(sum(json.load(open(f))["bytes"] for f in sys.argv[1:]))' "$@"; }

echo "start: RssAnon $(status_kib RssAnon) KiB" >&2

# a) PRODUCERS producers into PARTITIONS partitions, then one replay of everything.
topic_create agg "$PARTITIONS"
begin produce-agg
pids=()
for p in $(seq "$PRODUCERS"); do
  bench produce --topic agg --count "$PRODUCE_COUNT" --record-size "$RECORD_SIZE" > "$work/agg-produce-$p.json" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
end produce-agg "$(bytes_of "$work"/agg-produce-*.json)"
begin replay-agg
bench consume --topic agg --from earliest > "$work/agg-replay.json"
end replay-agg "$(bytes_of "$work/agg-replay.json")"

# b) TRICKLE_PARTITIONS partitions: created, idle, then a trickle over all of them.
begin partitions-created
topic_create many "$TRICKLE_PARTITIONS"
end partitions-created 0
begin partitions-idle
sleep "$IDLE_S"
end partitions-idle 0
begin partitions-trickle
bench produce --topic many --rate "$TRICKLE_RATE" --duration "${TRICKLE_S}s" --linger-ms 0 \
    --record-size "$RECORD_SIZE" > "$work/trickle.json"
end partitions-trickle "$(bytes_of "$work/trickle.json")"

# c) READERS replays of the topic of a) at once.
begin replay-readers
pids=()
for r in $(seq "$READERS"); do
  bench consume --topic agg --from earliest > "$work/readers-$r.json" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
end replay-readers "$(bytes_of "$work"/readers-*.json)"

# d) Data growing by GROW_STEP_MB per step; RssAnon after each step.
topic_create grow "$GROW_PARTITIONS"
step_count=$((GROW_STEP_MB * 1000000 / RECORD_SIZE))
for step in $(seq "$GROW_STEPS"); do
  begin "grow-$step"
  bench produce --topic grow --count "$step_count" --record-size "$RECORD_SIZE" > "$work/grow-$step.json"
  end "grow-$step" "$(bytes_of "$work/grow-$step.json")"
done

python3 - "$work" "$PRODUCERS" "$PARTITIONS" "$TRICKLE_PARTITIONS" "$READERS" "$GROW_STEP_MB" <<'PY'
import glob, json, sys
work, producers, partitions, many, readers, step_mb = sys.argv[1], *map(int, sys.argv[2:])
parts = {p["part"]: p for p in map(json.loads, open(f"{work}/parts.jsonl"))}
def load(pattern):
    return [json.load(open(f)) for f in sorted(glob.glob(f"{work}/{pattern}"))]
def server(p):
    gb = p["bytes"] / 1e9
    per_gb = f", {p['server_cpu_s'] / gb:.2f} CPU-s/GB" if gb > 0 else ""
    return (f"server {p['server_cpu_s']:.1f} CPU-s{per_gb}; peak RSS {p['peak_rss_kib'] / 1024:.0f} MiB, "
            f"RssAnon peak {p['peak_anon_kib'] / 1024:.0f} MiB, end {p['end_anon_kib'] / 1024:.0f} MiB")
def aggregate(name, runs, p):
    records = sum(r["records"] for r in runs)
    rate_sum = sum(r["records_per_s"] for r in runs)
    mb = p["bytes"] / 1e6
    print(f"{name}: {records} records, {mb:.0f} MB in {p['elapsed_s']:.1f} s: "
          f"{records / p['elapsed_s']:,.0f} rec/s, {mb / p['elapsed_s']:,.0f} MB/s aggregate "
          f"(sum of the processes' own rates {rate_sum:,.0f} rec/s)")
    print(f"    {server(p)}")
aggregate(f"a) produce, {producers} producers, {partitions} partitions", load("agg-produce-*.json"), parts["produce-agg"])
aggregate(f"a) replay of it, one reader", load("agg-replay.json"), parts["replay-agg"])
created, idle, trickle = parts["partitions-created"], parts["partitions-idle"], parts["partitions-trickle"]
before_kib = parts["replay-agg"]["end_anon_kib"]
print(f"b) {many} partitions: RssAnon {before_kib / 1024:.0f} MiB before, {created['end_anon_kib'] / 1024:.0f} MiB "
      f"once created ({(created['end_anon_kib'] - before_kib) / many:.1f} KiB per partition); "
      f"idle for {idle['elapsed_s']:.0f} s: {idle['server_cpu_s']:.2f} CPU-s "
      f"({100 * idle['server_cpu_s'] / idle['elapsed_s']:.1f}% of a core, "
      f"{1e6 * idle['server_cpu_s'] / idle['elapsed_s'] / many:.0f} µs/s per partition), "
      f"RssAnon end {idle['end_anon_kib'] / 1024:.0f} MiB")
run = load("trickle.json")[0]
print(f"b) trickle over {many} partitions: {run['records_per_s']:,.0f} rec/s for {trickle['elapsed_s']:.0f} s, "
      f"p50 {run['latency_ms']['p50']:.2f} ms, p99 {run['latency_ms']['p99']:.2f} ms; "
      f"{100 * trickle['server_cpu_s'] / trickle['elapsed_s']:.1f}% of a core")
print(f"    {server(trickle)}")
aggregate(f"c) {readers} readers replaying the topic of a) at once", load("readers-*.json"), parts["replay-readers"])
steps = sorted((p for p in parts.values() if p["part"].startswith("grow-")), key=lambda p: int(p["part"][5:]))
print(f"d) RssAnon at the end of each {step_mb} MB step (MiB): "
      + ", ".join(f"{s['end_anon_kib'] / 1024:.0f}" for s in steps)
      + "; peak per step: " + ", ".join(f"{s['peak_anon_kib'] / 1024:.0f}" for s in steps))
print("    RssFile (the logs' pages mapped into the server) at the end of each step (MiB): "
      + ", ".join(f"{s['end_file_kib'] / 1024:.0f}" for s in steps))
for s in steps:
    gb = s["bytes"] / 1e9
    print(f"    step {s['part'][5:]}: {s['bytes'] / 1e6 / s['elapsed_s']:,.0f} MB/s, {s['server_cpu_s'] / gb:.2f} CPU-s/GB, "
          f"peak RSS {s['peak_rss_kib'] / 1024:.0f} MiB")
if len(steps) > 1:
    first, last = steps[0]["end_anon_kib"], steps[-1]["end_anon_kib"]
    print(f"    RssAnon grew {(last - first) / 1024:+.1f} MiB from the first step to the last "
          f"({(last - first) / max(1, len(steps) - 1) / 1024:+.2f} MiB per step)")
PY
