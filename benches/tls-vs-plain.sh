#!/usr/bin/env bash
# What security costs end to end: the broker-vs-peers workload (1 KiB records; 200 000 produced
# with at most 256 records unacknowledged; replay of the whole stream; one record at a time at
# 5 000/s) against three one-node servers of the same release build, alternating in the same
# run:
#   plain     no TLS, no authentication (the default)
#   tls       TLS on the listener (certificates from `strata tls init`)
#   tls-auth  TLS, password authentication (SCRAM credential) and ACL authorization on, the
#             client a superuser sending its password on every call
#
#   benches/tls-vs-plain.sh            (RUNS=3)
#
# Prints, per side: median produce records/s, replay records/s, latency p50/p99 and the server's
# peak RSS; then the ratios against plain. Run on a quiet machine: no build running.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-tls.XXXXXX")
echo "results in $work" >&2
cargo build -q --release -p strata-server -p strata-tools
strata=target/release/strata
$strata tls init "$work/certs" --nodes 1 > /dev/null
certs=$work/certs
servers=""
cleanup() { for pid in $servers; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
start() { # side, extra server flags... -> address in $work/$side.address
  local side=$1; shift
  local fifo=$work/$side.out
  mkfifo "$fifo"
  STRATA_BOOTSTRAP_USER=bench:bench-password target/release/strata-server --listen 127.0.0.1:0 \
      --data-dir "$work/$side-data" "$@" > "$fifo" 2> "$work/$side.err" &
  servers="$servers $!"
  echo $! > "$work/$side.pid"
  exec {fd}< "$fifo"
  read -r -t 60 line <&"$fd"
  echo "${line#strata-server listening on }" > "$work/$side.address"
}
tls_server=(--tls-cert "$certs/node-1.pem" --tls-key "$certs/node-1.key")
start plain
start tls "${tls_server[@]}"
start tls-auth "${tls_server[@]}" --authentication password --authorization on --superusers User:bench
client() { # side -> the CLI's connection flags
  case $1 in
    plain) echo "--brokers $(cat "$work/plain.address")" ;;
    tls) echo "--brokers $(cat "$work/tls.address") --tls-ca $certs/ca.pem" ;;
    tls-auth) echo "--brokers $(cat "$work/tls-auth.address") --tls-ca $certs/ca.pem --user bench" ;;
  esac
}
export STRATA_PASSWORD=bench-password
for run in $(seq "$RUNS"); do
  for side in plain tls tls-auth; do
    # shellcheck disable=SC2046
    $strata $(client $side) --format json bench produce --topic "throughput-$run" --partitions 1 \
        --count 200000 --record-size 1024 --batch-bytes 266941 --in-flight 1 2>/dev/null > "$work/$side-produce-$run.json"
    # shellcheck disable=SC2046
    $strata $(client $side) --format json bench consume --topic "throughput-$run" --from earliest \
        2>/dev/null > "$work/$side-replay-$run.json"
    # shellcheck disable=SC2046
    $strata $(client $side) --format json bench produce --topic "latency-$run" --partitions 1 \
        --count 25000 --record-size 1024 --rate 5000 --linger-ms 0 --in-flight 1 2>/dev/null > "$work/$side-latency-$run.json"
  done
done
for side in plain tls tls-auth; do
  grep VmHWM "/proc/$(cat "$work/$side.pid")/status" | awk '{print $2}' > "$work/$side.rss"
done
python3 - "$work" "$RUNS" <<'PY'
import json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
med = statistics.median
def load(side, kind):
    return [json.load(open(f"{work}/{side}-{kind}-{r}.json")) for r in range(1, runs + 1)]
out = {}
for side in ("plain", "tls", "tls-auth"):
    produce, replay, latency = load(side, "produce"), load(side, "replay"), load(side, "latency")
    rss = int(open(f"{work}/{side}.rss").read()) / 1024
    out[side] = dict(
        produce=med(r["records_per_s"] for r in produce),
        replay=med(r["records_per_s"] for r in replay),
        p50=med(r["latency_ms"]["p50"] for r in latency) * 1000,
        p99=med(r["latency_ms"]["p99"] for r in latency) * 1000,
    )
    o = out[side]
    print(f"{side:9} produce {o['produce']:>9,.0f} rec/s (runs {[round(r['records_per_s']) for r in produce]}), "
          f"replay {o['replay']:>9,.0f} rec/s, latency p50/p99 {o['p50']:.0f}/{o['p99']:.0f} us, peak RSS {rss:.1f} MiB")
for side in ("tls", "tls-auth"):
    o, p = out[side], out["plain"]
    print(f"{side}/plain: produce {o['produce'] / p['produce']:.3f}x, replay {o['replay'] / p['replay']:.3f}x, "
          f"p50 {o['p50'] / p['p50']:.2f}x, p99 {o['p99'] / p['p99']:.2f}x")
PY
