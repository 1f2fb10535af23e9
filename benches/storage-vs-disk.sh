#!/usr/bin/env bash
# Runs the storage benchmarks and, in the same run, fio with the same write and fsync patterns
# on the same file system, then prints each append figure beside the raw disk's.
#
#   benches/storage-vs-disk.sh [DIR]     (DIR: where to write; default /tmp)
#
# fio appends to a new file with no preallocation (--fallocate=none), as a segment grows.
# Needs fio (apt-get install fio). Run it on a quiet machine: no build running.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp}
work=$(mktemp -d "$dir/strata-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
results=$work/results.txt

# Batch sizes of 1, 16 and 256 one-KiB records, as the bench builds them.
sizes=(1102 16717 266941)
names=("1x1KiB" "16x1KiB" "256x1KiB")

raw() { # bs fsync_every -> MiB/s
  local bs=$1 every=$2
  mkdir -p "$work/fio"
  fio --name=raw --directory="$work/fio" --rw=write --bs="$bs" --size=1G --runtime=8 \
      --ioengine=psync --fdatasync="$every" --end_fsync=1 --fallocate=none --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"] / 2**20))'
  rm -rf "$work/fio"
}

measure_raw() { # label
  for i in 0 1 2; do
    bs=${sizes[$i]}
    every=$(( (1048576 + bs - 1) / bs ))
    echo "raw $1 sync_each_batch/${names[$i]} $(raw "$bs" 1)" >> "$results"
    echo "raw $1 sync_each_1MiB/${names[$i]} $(raw "$bs" "$every")" >> "$results"
  done
}

measure_raw before
STRATA_BENCH_DIR=$work cargo bench -q -p strata-benches --bench storage -- --noplot 2>&1 | tee "$work/criterion.txt" >&2
measure_raw after

python3 - "$results" target/criterion <<'PY'
import json, os, statistics, sys
results, criterion = sys.argv[1], sys.argv[2]
raw = {}
for line in open(results):
    _, when, key, mib = line.split()
    raw.setdefault(key, []).append(float(mib))
def strata(key):
    mode, size = key.split("/")
    base = os.path.join(criterion, "append", mode, size, "new")
    est = json.load(open(os.path.join(base, "estimates.json")))["median"]["point_estimate"]
    bench = json.load(open(os.path.join(base, "benchmark.json")))
    nbytes = bench["throughput"]["Bytes"]
    return nbytes / (est / 1e9) / 2**20
print("| pattern | Strata MiB/s | raw disk MiB/s (fio, before / after) | Strata / raw |")
print("|---|---|---|---|")
for key in sorted(raw):
    s = strata(key)
    r = raw[key]
    m = statistics.mean(r)
    print(f"| {key} | {s:.1f} | {r[0]:.1f} / {r[1]:.1f} | {100 * s / m:.0f} % |")
for name in ["read/sequential_1MiB_fetches_with_crc", "lookup/by_offset", "lookup/by_time"]:
    base = os.path.join(criterion, *name.split("/"), "new")
    est = json.load(open(os.path.join(base, "estimates.json")))["median"]["point_estimate"]
    bench = json.load(open(os.path.join(base, "benchmark.json")))
    tp = bench.get("throughput") or {}
    if "Bytes" in tp:
        print(f"{name}: {tp['Bytes'] / (est / 1e9) / 2**20:.0f} MiB/s")
    else:
        print(f"{name}: {est / 1000:.2f} µs per lookup")
PY
