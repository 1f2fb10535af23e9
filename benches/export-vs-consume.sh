#!/usr/bin/env bash
# `strata export --format parquet` against `strata consume --format json > /dev/null` of the
# same range, on one strata-server (release build): a topic of PARTITIONS partitions filled
# with RECORDS records of SIZE bytes (`strata bench produce`; ~1 GB by default), then each
# command run RUNS times over everything (`--to latest`). For each: the median wall time, MB/s
# of input (the records' value bytes, RECORDS x SIZE, over the median time) and the median
# peak RSS of the CLI process (`/usr/bin/time -f %M`, KiB). Export must stay in bounded
# memory whatever the range: compare its peak RSS with a run of RECORDS/10 (printed as
# "export 1/10").
#
#   benches/export-vs-consume.sh     (RUNS=3 RECORDS=1000000 SIZE=1000 PARTITIONS=4)
#   RUNS=1 RECORDS=2000 SIZE=100 PROFILE=debug benches/export-vs-consume.sh    (a smoke run)
#
# Quiet machine only; the results go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
RECORDS=${RECORDS:-1000000}
SIZE=${SIZE:-1000}
PARTITIONS=${PARTITIONS:-4}
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-export-vs-consume.XXXXXX")
echo "results in $work" >&2
[ -x /usr/bin/time ] || { echo "/usr/bin/time not found (apt-get install time)" >&2; exit 2; }
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build -q --release -p strata-server -p strata-tools
else
  cargo build -q -p strata-server -p strata-tools
fi
bin=${CARGO_TARGET_DIR:-target}/$PROFILE
strata=$bin/strata

fifo=$work/server.out
mkfifo "$fifo"
"$bin/strata-server" --listen 127.0.0.1:0 --data-dir "$work/data" \
    > "$fifo" 2> "$work/server.err" &
server=$!
trap 'kill -TERM "$server" 2> /dev/null || true; wait "$server" 2> /dev/null || true; rm -rf "$work/data"' EXIT
exec 3< "$fifo"
read -r -t 60 line <&3
address=${line#strata-server listening on }

$strata --brokers "$address" --format json bench produce --topic export --partitions "$PARTITIONS" \
    --count "$RECORDS" --record-size "$SIZE" > "$work/produce.json"
small=$((RECORDS / 10 > 0 ? RECORDS / 10 : 1))
# The offset where a tenth of each partition ends (records spread evenly over partitions; a
# leader's control batch takes an offset or two more, which does not matter for memory).
small_to=$((small / PARTITIONS + 1))

measure() { # NAME COMMAND...: wall seconds and peak RSS (KiB) of one run
  local name=$1; shift
  local started ended
  started=$(date +%s.%N)
  /usr/bin/time -f %M -o "$work/$name.rss" "$@" > /dev/null
  ended=$(date +%s.%N)
  echo "$started $ended $(cat "$work/$name.rss")" > "$work/$name.run"
}

for run in $(seq "$RUNS"); do
  measure "export-$run" $strata --brokers "$address" --quiet export export \
      --out "$work/export.parquet"
  ls -l "$work/export.parquet" | awk '{print $5}' > "$work/export-$run.bytes"
  rm -f "$work/export.parquet"
  measure "small-$run" $strata --brokers "$address" --quiet export export \
      --to "offset:$small_to" --out "$work/small.parquet"
  rm -f "$work/small.parquet"
  measure "consume-$run" $strata --brokers "$address" --quiet --format json consume export \
      --to latest
done

python3 - "$work" "$RUNS" "$RECORDS" "$SIZE" <<'PY'
import statistics, sys
work, runs, records, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def runs_of(name):
    out = []
    for run in range(1, runs + 1):
        started, ended, rss = open(f"{work}/{name}-{run}.run").read().split()
        out.append((float(ended) - float(started), int(rss)))
    return out
input_mb = records * size / 1e6
print(f"{records} records of {size} bytes ({input_mb:.0f} MB of values), median of {runs} runs")
for name, label in [("export", "export parquet"), ("consume", "consume json > /dev/null"),
                    ("small", "export 1/10")]:
    measured = runs_of(name)
    seconds = statistics.median(s for s, _ in measured)
    rss = statistics.median(r for _, r in measured)
    mb = input_mb / 10 if name == "small" else input_mb
    print(f"{label:26} {seconds:8.2f} s {mb / seconds:8.1f} MB/s  peak RSS {rss / 1024:7.1f} MiB")
sizes = [int(open(f"{work}/export-{run}.bytes").read()) for run in range(1, runs + 1)]
print(f"parquet file: {statistics.median(sizes) / 1e6:.1f} MB")
PY
