#!/usr/bin/env bash
# The Kafka listener against the gRPC API, on one strata-server (release build) serving both,
# in the same run with the same workload: COUNT records of 1 KiB on one partition, produced
# (acks all) then replayed from the start.
#   - gRPC: `strata bench produce` / `strata bench consume` (the Rust client);
#   - Kafka: kcat (librdkafka's CLI, `-P -l` from a file of 1 KiB lines, `-C -e`), and
#     confluent-kafka from Python (benches/kafka-client-bench.py; librdkafka underneath).
# Beside each: the server's CPU-seconds per GB of record bytes (utime + stime from
# /proc/PID/stat around the phase); at the end its peak RSS and its anonymous memory (the peak
# is mostly the mapped segments' pages that the replays touched). The clients differ, so the
# server's CPU per GB is the fairest comparison of the two paths; throughput is what a user of
# each client sees.
#
#   benches/kafka-vs-grpc.sh        (RUNS=3, COUNT=200000)
#
# kcat and confluent-kafka come from the system, else tests/kafka's pinned ones in
# target/kafka-python-deps (run the Kafka tests once to install them). Quiet machine only.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
COUNT=${COUNT:-200000}
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-kafka-vs-grpc.XXXXXX")
echo "results in $work" >&2
cargo build -q --release -p strata-server -p strata-tools
strata=target/release/strata
clock_ticks_per_s=$(getconf CLK_TCK)
export PYTHONPATH=${PYTHONPATH:-$PWD/target/kafka-python-deps}
command -v kcat > /dev/null || { echo "kcat not found (apt-get install kcat)" >&2; exit 2; }

cpu_ticks() {
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# COUNT lines of 1023 bytes and the newline kcat strips (1 KiB a line): values of 1023 bytes,
# as the gRPC bench and the Python client send.
python3 -c "import sys; sys.stdout.write(('y' * 1023 + '\n') * $COUNT)" > "$work/records.txt"

for run in $(seq "$RUNS"); do
  fifo=$work/server-$run.out
  mkfifo "$fifo"
  target/release/strata-server --listen 127.0.0.1:0 --kafka-listen 127.0.0.1:0 \
      --data-dir "$work/data-$run" > "$fifo" 2> "$work/server-$run.err" &
  server=$!
  exec 3< "$fifo"
  read -r -t 60 line <&3
  address=${line#strata-server listening on }
  read -r -t 60 line <&3
  kafka=${line#strata-server kafka listening on }
  phase() { # NAME COMMAND...: runs the command, records seconds and server ticks
    local name=$1; shift
    local before after started ended
    before=$(cpu_ticks "$server")
    started=$(date +%s.%N)
    "$@" > "$work/$name-$run.out"
    ended=$(date +%s.%N)
    after=$(cpu_ticks "$server")
    echo "$started $ended $((after - before)) $clock_ticks_per_s" > "$work/$name-$run.phase"
  }
  $strata --brokers "$address" topic create grpc --partitions 1 > /dev/null
  $strata --brokers "$address" topic create kcat --partitions 1 > /dev/null
  $strata --brokers "$address" topic create confluent --partitions 1 > /dev/null
  phase grpc-produce $strata --brokers "$address" --format json bench produce --topic grpc \
      --partitions 1 --count "$COUNT" --record-size 1023
  phase grpc-replay $strata --brokers "$address" --format json bench consume --topic grpc \
      --from earliest
  phase kcat-produce kcat -b "$kafka" -P -t kcat -p 0 -X linger.ms=5 -X batch.size=262144 \
      -X queue.buffering.max.kbytes=1048576 -l "$work/records.txt"
  phase kcat-replay kcat -b "$kafka" -C -t kcat -p 0 -o beginning -e -q -f '%S\n'
  phase confluent-produce python3 benches/kafka-client-bench.py produce "$kafka" confluent "$COUNT" 1023
  phase confluent-replay python3 benches/kafka-client-bench.py consume "$kafka" confluent "$COUNT" 1023
  grep VmHWM "/proc/$server/status" | awk '{print $2}' > "$work/rss-$run.kib"
  grep RssAnon "/proc/$server/status" | awk '{print $2}' > "$work/anon-$run.kib"
  kill -TERM "$server"
  wait "$server" || true
  exec 3<&-
  rm -rf "$work/data-$run"
done

python3 - "$work" "$RUNS" "$COUNT" <<'PY'
import statistics, sys
work, runs, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
gb = count * 1023 / 1e9
med = statistics.median
def phase(name):
    rows = []
    for r in range(1, runs + 1):
        started, ended, ticks, per_s = open(f"{work}/{name}-{r}.phase").read().split()
        seconds = float(ended) - float(started)
        rows.append((count / seconds, int(ticks) / int(per_s) / gb))
    return med(x for x, _ in rows), med(c for _, c in rows), [round(x) for x, _ in rows]
rss = med(int(open(f"{work}/rss-{r}.kib").read()) for r in range(1, runs + 1))
figures = {}
for path in ["grpc", "kcat", "confluent"]:
    for kind in ["produce", "replay"]:
        rate, cpu, each = phase(f"{path}-{kind}")
        figures[(path, kind)] = (rate, cpu)
        print(f"{path:9} {kind:7} {rate:>10,.0f} rec/s ({rate * 1023 / 1e6:6.1f} MB/s), "
              f"server {cpu:.2f} CPU-s/GB   runs {each}")
for kind in ["produce", "replay"]:
    grpc_rate, grpc_cpu = figures[("grpc", kind)]
    for path in ["kcat", "confluent"]:
        rate, cpu = figures[(path, kind)]
        print(f"{kind}: {path}/grpc throughput {rate / grpc_rate:.2f}x, server CPU per GB "
              f"{cpu / grpc_cpu:.2f}x")
anon = med(int(open(f"{work}/anon-{r}.kib").read()) for r in range(1, runs + 1))
print(f"server peak RSS {rss / 1024:.1f} MiB, of which anonymous at the end {anon / 1024:.1f} MiB "
      "(the rest: pages of the segments mapped for reads, page cache the kernel reclaims)")
PY
